//! The Go table decoder on arbitrary bytes: locate, then look up addresses derived from the
//! input, then walk every function.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbolizer::gopclntab::GoTable;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(table)) = GoTable::from_elf(data) else {
        return;
    };
    let base = table.text_start();
    for (i, chunk) in data.chunks(8).take(256).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let offset = u64::from_le_bytes(word) % 0x10_0000;
        let _ = table.symbolize(data, base.wrapping_add(offset).wrapping_add(i as u64));
    }
    for f in table.functions(data).take(4096) {
        let _ = table.symbolize(data, f.entry);
    }
});
