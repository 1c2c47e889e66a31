//! Kernel symbols from the real `/proc/kallsyms`: addresses of well-known functions, and of a
//! sample of every text symbol, resolve back to their names. Reading real addresses needs root
//! (or `kernel.kptr_restrict=0`): without it the test fails in CI and is skipped elsewhere.

use std::collections::BTreeMap;

use symbolizer::{Error, KernelResolver, Symbolized};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The resolver, or None (after saying why) when this machine hides kernel addresses from us.
fn resolver() -> Option<KernelResolver> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    match KernelResolver::from_proc() {
        Ok(k) => Some(k),
        Err(Error::BadKallsyms(msg)) if !root => {
            assert!(!in_ci(), "CI runs as root, yet: {msg}");
            eprintln!("skipping: not root and kallsyms addresses are hidden ({msg})");
            None
        }
        Err(e) => panic!(
            "reading /proc/kallsyms as {}: {e}",
            if root { "root" } else { "non-root" }
        ),
    }
}

/// Text symbols of kallsyms, parsed independently: address → every name at that address.
fn text_symbols() -> BTreeMap<u64, Vec<(String, Option<String>)>> {
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let mut map: BTreeMap<u64, Vec<(String, Option<String>)>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !matches!(f[1], "t" | "T" | "w" | "W") {
            continue;
        }
        let addr = u64::from_str_radix(f[0], 16).unwrap();
        let module = f.get(3).map(|m| m.to_string());
        map.entry(addr)
            .or_default()
            .push((f[2].to_string(), module));
    }
    map
}

fn function(s: &Symbolized) -> &str {
    &s.frames()[0].function
}

#[test]
fn well_known_functions_resolve_to_their_names() {
    let Some(k) = resolver() else { return };
    assert!(k.len() > 10_000, "only {} kernel text symbols", k.len());
    let all = text_symbols();
    let mut checked = 0;
    for name in [
        "vfs_read",
        "schedule",
        "ksys_read",
        "do_sys_open",
        "__x64_sys_getpid",
    ] {
        let Some(addr) = k.address_of(name) else {
            eprintln!("{name}: not in this kernel");
            continue;
        };
        let names_here: Vec<&str> = all[&addr].iter().map(|(n, _)| n.as_str()).collect();
        // At the start, and a few bytes in (every function is longer than that).
        for a in [addr, addr + 1, addr + 4] {
            let got = k.symbolize(a);
            assert!(
                names_here.contains(&function(&got)),
                "{name} at {a:#x}: got {got:?}"
            );
            assert_eq!(got.frames()[0].file, None, "core kernel, not a module");
        }
        checked += 1;
    }
    assert!(checked >= 2, "too few well-known functions found");
}

/// Every 50th text address, and every module symbol: its start and its last byte before the
/// next symbol resolve to a name at that address, with the module (if any) as the file.
#[test]
fn a_sample_of_all_text_symbols_resolves() {
    let Some(k) = resolver() else { return };
    let all = text_symbols();
    let addrs: Vec<u64> = all.keys().copied().collect();
    let (mut checked, mut modules) = (0, 0);
    for (i, &addr) in addrs.iter().enumerate() {
        let here = &all[&addr];
        if i % 50 != 0 && here.iter().all(|(_, m)| m.is_none()) {
            continue;
        }
        // The last symbol has no known end: only its start is probed.
        let last_byte = addrs.get(i + 1).map(|next| next - 1);
        for a in std::iter::once(addr).chain(last_byte) {
            checked += 1;
            let got = k.symbolize(a);
            let frame = &got.frames()[0];
            let matching = here
                .iter()
                .find(|(n, _)| *n == frame.function)
                .unwrap_or_else(|| panic!("#{i} {a:#x}: got {got:?}, kallsyms has {here:?}"));
            let want_file = matching.1.clone();
            assert_eq!(frame.file, want_file, "{a:#x}");
            modules += usize::from(want_file.is_some());
        }
    }
    let module_symbols = all.values().flatten().filter(|(_, m)| m.is_some()).count();
    assert!(
        module_symbols == 0 || modules > 0,
        "no module symbol checked"
    );
    eprintln!("checked {checked} addresses, {modules} in modules");
}
