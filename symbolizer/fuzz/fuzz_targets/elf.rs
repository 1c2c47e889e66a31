//! The ELF resolver on arbitrary bytes (as a file, the way binaries reach it): symbol tables,
//! Go tables, DWARF through its index, build ids and offset translation; and an executable's
//! code mapping from its program headers.
#![no_main]

use std::{io::Write, os::fd::FromRawFd};

use libfuzzer_sys::fuzz_target;
use symbolizer::ElfResolver;

fuzz_target!(|data: &[u8]| {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"fuzz-elf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return;
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    if file.write_all(data).is_err() {
        return;
    }
    // An executable's code mapping from the two addresses an exec reports (any answer, or an
    // error; never a panic or an unbounded read).
    let word = |at: usize| {
        data.get(at..at + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let _ = symbolizer::process::exec_code_mapping(&file, word(24), word(24) ^ word(32));
    let Ok(resolver) =
        ElfResolver::from_file_with_debug_root(file, "fuzz", std::path::Path::new("/nonexistent"))
    else {
        return;
    };
    let _ = resolver.build_id_hex();
    // Addresses from the input: as they are, and as file offsets inside the input, which land
    // in its loaded code and data far more often.
    let len = data.len() as u64;
    for chunk in data.chunks(8).take(16) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let addr = u64::from_le_bytes(word) % 0x100_0000;
        let _ = resolver.symbolize(addr);
        if let Some(va) = resolver.file_offset_to_va(addr % len) {
            let _ = resolver.symbolize(va);
        }
    }
});
