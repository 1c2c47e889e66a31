//! The Go table decoder on arbitrary bytes: locate, then look up addresses derived from the
//! input, then walk every function and its stack-pointer deltas.
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
        let _ = table.symbolize(data, f.end.wrapping_sub(1));
    }
    for f in table.sp_deltas(data).take(4096) {
        if let Some(runs) = f.runs {
            runs.take(1024).for_each(drop);
        }
    }
});
