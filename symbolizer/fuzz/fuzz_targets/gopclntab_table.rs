//! The Go table decoder on table bytes alone: the input (a text start, a `gofunc` offset, then
//! a `.gopclntab` section) is wrapped in a minimal ELF file with a `moduledata` pointing into
//! it, so that mutations go to the table rather than to the ELF structure around it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbolizer::gopclntab::{
    write::{table_image, TABLE_INPUT_PREFIX},
    GoTable,
};

fuzz_target!(|data: &[u8]| {
    let Some(image) = table_image(data) else {
        return;
    };
    let Ok(Some(table)) = GoTable::from_elf(&image) else {
        return;
    };
    // A bounded number of lookups (each walks pc-value tables from their start): addresses
    // from the input, inside the functions' span, then each function's first and last byte.
    let base = table.text_start();
    let funcs: Vec<(u64, u64)> = table
        .functions(&image)
        .take(8)
        .map(|f| (f.entry, f.end))
        .collect();
    let span = funcs
        .last()
        .map_or(0x1000, |&(_, end)| end.wrapping_sub(base))
        .clamp(1, 1 << 20);
    for chunk in data[TABLE_INPUT_PREFIX..].rchunks(4).take(8) {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        let offset = u64::from(u32::from_le_bytes(word)) % (span + 16);
        let _ = table.symbolize(&image, base.wrapping_add(offset));
    }
    for &(entry, end) in &funcs {
        let _ = table.symbolize(&image, entry);
        let _ = table.symbolize(&image, end.wrapping_sub(1));
    }
    for f in table.sp_deltas(&image).take(64) {
        if let Some(runs) = f.runs {
            runs.take(256).for_each(drop);
        }
    }
});
