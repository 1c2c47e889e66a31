//! Unwind tables on arbitrary bytes: the Go table's pcsp runs, `.eh_frame` and `.debug_frame`
//! through gimli, the same bytes as a separate debug file, under small limits; then lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbolizer::unwind::{UnwindLimits, UnwindTable};

fuzz_target!(|data: &[u8]| {
    let limits = UnwindLimits {
        max_rows: 1 << 16,
        max_cfi_bytes: 4 << 20,
    };
    let Ok(table) = UnwindTable::from_elf(data, Some(data), &limits) else {
        return;
    };
    let rows = table.rows();
    assert!(rows.len() <= limits.max_rows);
    assert!(rows.windows(2).all(|w| w[0].pc < w[1].pc));
    for row in rows.iter().take(256) {
        assert_eq!(table.lookup(row.pc), Some(row));
    }
});
