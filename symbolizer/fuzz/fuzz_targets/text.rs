//! The text parsers: `/proc/PID/maps` and `/proc/kallsyms`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = symbolizer::process::parse_maps(text);
    if let Ok(k) = symbolizer::KernelResolver::parse(text) {
        let _ = k.symbolize(0xffff_ffff_8100_0000);
        let _ = k.symbolize(u64::MAX);
    }
});
