//! Native symbolization against `llvm-symbolizer --inlining`, on C built with gcc: DWARF with
//! inlined frames, compressed DWARF, and symbol tables alone.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use object::{Object, ObjectSymbol};
use symbolizer::{ElfResolver, Symbolized};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn tool(name: &str) -> Option<PathBuf> {
    let found = Command::new(name).arg("--version").output().is_ok();
    if !found {
        assert!(!in_ci(), "{name} is required in CI");
        eprintln!("skipping: {name} not found");
    }
    found.then(|| PathBuf::from(name))
}

fn build_c(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    build_c_from(dir, "inline.c", name, flags)
}

fn build_c_from(dir: &Path, source: &str, name: &str, flags: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/native")
        .join(source);
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(status.success(), "gcc {flags:?} failed");
    out
}

/// (function, file, line) frames per address, innermost first, from llvm-symbolizer.
fn oracle(binary: &Path, addrs: &[u64]) -> Vec<Vec<(String, String, u32)>> {
    let out = Command::new("llvm-symbolizer")
        .arg(format!("--obj={}", binary.display()))
        .args(["--inlining", "--output-style=JSON", "--functions=linkage"])
        .args(addrs.iter().map(|a| format!("{a:#x}")))
        .output()
        .expect("llvm-symbolizer");
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    json.as_array()
        .expect("array")
        .iter()
        .map(|entry| {
            entry["Symbol"]
                .as_array()
                .map(|frames| {
                    frames
                        .iter()
                        .map(|f| {
                            (
                                f["FunctionName"].as_str().unwrap_or("").to_string(),
                                f["FileName"].as_str().unwrap_or("").to_string(),
                                f["Line"].as_u64().unwrap_or(0) as u32,
                            )
                        })
                        .filter(|f| !f.0.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Every address of every function symbol of the binary.
fn function_addresses(binary: &Path) -> Vec<u64> {
    let data = std::fs::read(binary).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let mut addrs = Vec::new();
    for sym in obj.symbols() {
        if sym.kind() == object::SymbolKind::Text && sym.size() > 0 {
            addrs.extend(sym.address()..sym.address() + sym.size());
        }
    }
    addrs
}

/// (function, file, line) of every frame for `addr`, innermost first.
fn frames_of(resolver: &ElfResolver, addr: u64) -> Vec<(String, String, u32)> {
    resolver
        .symbolize(addr)
        .frames()
        .iter()
        .map(|f| {
            (
                f.function.clone(),
                f.file.clone().unwrap_or_default(),
                f.line.unwrap_or(0),
            )
        })
        .collect()
}

fn compare(binary: &Path, dwarf: bool) -> usize {
    let resolver = ElfResolver::open(binary).unwrap();
    assert_eq!(resolver.has_dwarf(), dwarf, "{}", binary.display());
    let addrs = function_addresses(binary);
    assert!(addrs.len() > 100);
    let expected = oracle(binary, &addrs);
    let mut inlined = 0;
    let mut mismatches = Vec::new();
    for (addr, want) in addrs.iter().zip(&expected) {
        let got = frames_of(&resolver, *addr);
        let same = if dwarf {
            got == *want
        } else {
            // Symbol tables give the function only.
            got.len() == 1 && want.last().is_some_and(|w| w.0 == got[0].0)
        };
        if !same {
            mismatches.push(format!("{addr:#x}: oracle {want:?}\n         ours {got:?}"));
        }
        inlined += usize::from(got.len() > 1);
    }
    assert!(
        mismatches.is_empty(),
        "{}: {} of {} differ:\n{}",
        binary.display(),
        mismatches.len(),
        addrs.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    if dwarf {
        assert!(inlined > 0, "no inlined frames seen");
    }
    addrs.len()
}

#[test]
fn c_with_dwarf_matches_llvm_symbolizer() {
    if tool("llvm-symbolizer").is_none() || tool("gcc").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = build_c(dir.path(), "dwarf", &["-O2", "-g"]);
    let compressed = build_c(dir.path(), "zdwarf", &["-O2", "-g", "-gz=zlib"]);
    let n = compare(&plain, true) + compare(&compressed, true);
    eprintln!("compared {n} addresses");
    // Plain DWARF is read in place from the map; compressed DWARF is decompressed onto the heap
    // and counted there.
    for (bin, grows) in [(&plain, false), (&compressed, true)] {
        let r = ElfResolver::open(bin).unwrap();
        let before = r.index_bytes();
        assert!(!r.symbolize(function_addresses(bin)[0]).frames().is_empty());
        assert_eq!(r.index_bytes() > before, grows, "{}", bin.display());
    }
}

#[test]
fn c_without_dwarf_names_functions_from_the_symbol_table() {
    if tool("llvm-symbolizer").is_none() || tool("gcc").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = build_c(dir.path(), "nodwarf", &["-O2"]);
    compare(&bin, false);
    // Built with -g, then stripped of its debug sections only.
    let full = build_c(dir.path(), "full", &["-O2", "-g"]);
    let stripped = dir.path().join("stripped");
    run_tool(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(&full),
    );
    compare(&stripped, false);
}

/// ELF32 (i386) and ELF64 builds of a libc-free fixture, with and without DWARF: the same
/// frames as the oracle at every address of every function.
#[test]
fn elf32_and_elf64_match_llvm_symbolizer() {
    if tool("llvm-symbolizer").is_none() || tool("gcc").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let common = ["-O2", "-ffreestanding", "-nostdlib", "-static", "-no-pie"];
    let mut compared = 0;
    for (class, dwarf) in [("-m32", true), ("-m32", false), ("-m64", true)] {
        let name = format!("free{class}{}", if dwarf { "g" } else { "" });
        let mut flags = common.to_vec();
        flags.push(class);
        if dwarf {
            flags.push("-g");
        }
        let bin = build_c_from(dir.path(), "freestanding.c", &name, &flags);
        let resolver = ElfResolver::open(&bin).unwrap();
        assert_eq!(resolver.has_dwarf(), dwarf, "{name}");
        let addrs = function_addresses(&bin);
        assert!(addrs.len() > 20, "{name}: {} addresses", addrs.len());
        let expected = oracle(&bin, &addrs);
        for (addr, want) in addrs.iter().zip(&expected) {
            let got = frames_of(&resolver, *addr);
            if dwarf {
                assert_eq!(&got, want, "{name} {addr:#x}");
            } else {
                assert_eq!(got.len(), 1, "{name} {addr:#x}");
                assert_eq!(
                    want.last().map(|w| &w.0),
                    Some(&got[0].0),
                    "{name} {addr:#x}"
                );
            }
        }
        compared += addrs.len();
    }
    eprintln!("compared {compared} addresses");
}

fn run_tool(cmd: &mut Command) {
    let status = cmd.status().expect("binutils");
    assert!(status.success(), "{cmd:?} failed");
}

/// A binary stripped of its DWARF symbolizes as well as the original through its separate debug
/// file, found by debuglink next to it, or by build id under a debug root.
#[test]
fn separate_debug_files_by_debuglink_and_build_id() {
    if tool("llvm-symbolizer").is_none() || tool("gcc").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let full = build_c(dir.path(), "full", &["-O2", "-g", "-Wl,--build-id"]);
    let debug = dir.path().join("app.debug");
    run_tool(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&full)
            .arg(&debug),
    );

    // 1. debuglink, debug file beside the binary; the binary also loses its symbol table.
    let linked = dir.path().join("app");
    run_tool(
        Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&linked)
            .arg(&full),
    );
    run_tool(
        Command::new("objcopy")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&linked),
    );
    // 2. build id, under a debug root.
    let by_id_dir = tempfile::tempdir().unwrap();
    let by_id = by_id_dir.path().join("app");
    run_tool(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&by_id)
            .arg(&full),
    );
    let id = ElfResolver::open(&full)
        .unwrap()
        .build_id_hex()
        .expect("build id");
    let root = tempfile::tempdir().unwrap();
    let id_path = root.path().join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&id_path).unwrap();
    std::fs::copy(&debug, id_path.join(format!("{}.debug", &id[2..]))).unwrap();

    let addrs = function_addresses(&full);
    let expected = oracle(&full, &addrs);
    for (what, resolver) in [
        ("debuglink", ElfResolver::open(&linked).unwrap()),
        (
            "build id",
            ElfResolver::from_file_with_debug_root(
                std::fs::File::open(&by_id).unwrap(),
                by_id.to_str().unwrap(),
                root.path(),
            )
            .unwrap(),
        ),
    ] {
        assert!(
            resolver.debug_file().is_some(),
            "{what}: no debug file found"
        );
        assert!(resolver.has_dwarf(), "{what}");
        for (addr, want) in addrs.iter().zip(&expected) {
            let got = frames_of(&resolver, *addr);
            assert_eq!(&got, want, "{what}: {addr:#x}");
        }
    }

    // A debug file with the wrong CRC is not used.
    let wrong = dir.path().join("wrong");
    run_tool(
        Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&wrong)
            .arg(&full),
    );
    let other_debug = dir.path().join("other.debug");
    std::fs::write(&other_debug, b"not the debug file").unwrap();
    run_tool(
        Command::new("objcopy")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&wrong),
    );
    std::fs::copy(&other_debug, &debug).unwrap();
    assert!(ElfResolver::open(&wrong).unwrap().debug_file().is_none());
}

/// Rust with DWARF (v0 mangling, which llvm-symbolizer demangles fully): our own functions, with
/// forced inlining and a closure, against the oracle.
#[test]
fn rust_with_dwarf_matches_llvm_symbolizer() {
    if tool("llvm-symbolizer").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/native/inline.rs");
    let bin = dir.path().join("rustdwarf");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--crate-name",
            "rustdwarf",
            "-C",
            "opt-level=2",
            "-C",
            "debuginfo=2",
            "-C",
            "symbol-mangling-version=v0",
        ])
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("rustc");
    assert!(status.success());
    // Only the fixture's own functions: the standard library's are not built with v0 names.
    let data = std::fs::read(&bin).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let mut addrs = Vec::new();
    for sym in obj.symbols() {
        let name = sym.name().unwrap_or("");
        if sym.kind() == object::SymbolKind::Text && sym.size() > 0 && name.contains("9rustdwarf") {
            addrs.extend(sym.address()..sym.address() + sym.size());
        }
    }
    assert!(addrs.len() > 50, "fixture functions not found");
    let resolver = ElfResolver::open(&bin).unwrap();
    let expected = oracle(&bin, &addrs);
    let mut inlined = 0;
    for (addr, want) in addrs.iter().zip(&expected) {
        let got = frames_of(&resolver, *addr);
        assert_eq!(&got, want, "{addr:#x}");
        inlined += usize::from(got.len() > 1);
    }
    assert!(inlined > 0, "no inlined frames");
}

/// MiniDebugInfo, built the way distributions build it: a stripped binary carrying an
/// xz-compressed ELF of its function symbols in `.gnu_debugdata`.
#[test]
fn mini_debuginfo_names_functions_of_a_stripped_binary() {
    if tool("gcc").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let full = build_c(dir.path(), "full", &["-O2"]);
    // The function symbols to keep.
    let data = std::fs::read(&full).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let funcs: Vec<(String, u64, u64)> = obj
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
        .map(|s| (s.name().unwrap().to_string(), s.address(), s.size()))
        .collect();
    assert!(funcs.iter().any(|f| f.0 == "work"));
    let keep = dir.path().join("keep");
    std::fs::write(
        &keep,
        funcs
            .iter()
            .map(|f| format!("{}\n", f.0))
            .collect::<String>(),
    )
    .unwrap();
    let mini = dir.path().join("mini");
    run_tool(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&full)
            .arg(&mini),
    );
    run_tool(
        Command::new("objcopy")
            .arg("-S")
            .arg(format!("--keep-symbols={}", keep.display()))
            .arg(&mini),
    );
    run_tool(Command::new("xz").arg("-f").arg(&mini));
    let stripped = dir.path().join("stripped");
    run_tool(
        Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&stripped)
            .arg(&full),
    );
    assert!(matches!(
        ElfResolver::open(&stripped).unwrap().symbolize(funcs[0].1),
        Symbolized::Unknown(_)
    ));
    run_tool(
        Command::new("objcopy")
            .arg(format!(
                "--add-section=.gnu_debugdata={}.xz",
                mini.display()
            ))
            .arg(&stripped),
    );
    let resolver = ElfResolver::open(&stripped).unwrap();
    for (name, addr, size) in &funcs {
        for a in [*addr, addr + size / 2, addr + size - 1] {
            let frames = resolver.symbolize(a);
            assert_eq!(
                frames.frames().first().map(|f| f.function.as_str()),
                Some(name.as_str()),
                "{a:#x}"
            );
        }
    }
}

/// A function of this test binary whose runtime address is taken below.
#[inline(never)]
fn process_path_marker(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(31) ^ 7
}

/// The whole process path on this test binary: a runtime address → its mapping in
/// `/proc/self/maps` → a file offset → an ELF virtual address → the function, file and line.
#[test]
fn own_function_through_proc_self_maps() {
    assert_eq!(process_path_marker(1), 24);
    let addr = process_path_marker as fn(u64) -> u64 as usize as u64;
    let maps = symbolizer::process::ProcessMaps::read(std::process::id()).unwrap();
    let entry = maps.find(addr).expect("own code is mapped");
    assert!(entry.is_executable());
    let exe = std::env::current_exe().unwrap();
    assert_eq!(
        entry.path,
        symbolizer::process::MapPath::File(exe.display().to_string())
    );
    let resolver = ElfResolver::open(&exe).unwrap();
    let offset = entry.file_offset(addr).unwrap();
    let va = resolver
        .file_offset_to_va(offset)
        .expect("offset in a PT_LOAD");
    for probe in [va, va + 1] {
        let frames = resolver.symbolize(probe);
        let physical = frames.frames().last().expect("symbolized");
        assert!(
            physical.function.ends_with("process_path_marker"),
            "{probe:#x}: {frames:?}"
        );
        assert!(physical
            .file
            .as_deref()
            .unwrap_or("")
            .ends_with("tests/elf.rs"));
        assert!(physical.line.is_some());
    }
    // The oracle agrees on the frames (it keeps legacy Rust mangling's `::h<hash>`, we drop it).
    if tool("llvm-symbolizer").is_some() {
        let want = oracle(&exe, &[va]).remove(0);
        let got = frames_of(&resolver, va);
        assert_eq!(want.len(), got.len(), "{want:?} vs {got:?}");
        for (w, g) in want.iter().zip(&got) {
            assert!(w.0.starts_with(&g.0), "{want:?} vs {got:?}");
            assert_eq!((&w.1, w.2), (&g.1, g.2));
        }
    }
}

/// Random damage to the DWARF (plain and zlib-compressed) and symbol tables of a real binary
/// never panics: every lookup gives frames or a reason. Deterministic xorshift, so a failure
/// replays.
#[test]
fn damaged_debug_sections_never_panic() {
    use object::ObjectSection;
    if tool("gcc").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut frames_seen = 0usize;
    for flags in [&["-O2", "-g"][..], &["-O2", "-g", "-gz=zlib"][..]] {
        let bin = build_c(dir.path(), "victim", flags);
        let original = std::fs::read(&bin).unwrap();
        let (targets, text) = {
            let obj = object::File::parse(&*original).unwrap();
            let targets: Vec<(usize, usize)> = obj
                .sections()
                .filter(|s| {
                    s.name().is_ok_and(|n| {
                        n.starts_with(".debug")
                            || n.starts_with(".zdebug")
                            || n.contains("sym")
                            || n.contains("str")
                    })
                })
                .filter_map(|s| s.file_range())
                .map(|(o, l)| (o as usize, l as usize))
                .filter(|&(_, l)| l > 0)
                .collect();
            let text = obj.section_by_name(".text").unwrap();
            (targets, (text.address(), text.size()))
        };
        assert!(targets.len() >= 5, "{targets:?}");
        let damaged = dir.path().join("damaged");
        for _ in 0..1000 {
            let mut bytes = original.clone();
            let (start, len) = targets[next() as usize % targets.len()];
            for _ in 0..1 + next() % 16 {
                let i = start + next() as usize % len;
                bytes[i] = next() as u8;
            }
            std::fs::write(&damaged, &bytes).unwrap();
            let Ok(r) = ElfResolver::open(&damaged) else {
                continue;
            };
            for _ in 0..16 {
                let va = text.0 + next() % text.1;
                match r.symbolize(va) {
                    Symbolized::Sym(f) => {
                        assert!(!f.is_empty());
                        frames_seen += f.len();
                    }
                    Symbolized::Unknown(_) => {}
                }
            }
        }
    }
    assert!(
        frames_seen > 0,
        "damage this light leaves most lookups working"
    );
}

/// Untyped labels in code (assembly entry points such as ld.so's `_start`) are named, from the
/// binary's symbol table or, for a binary left with `.dynsym` alone, from its debug file's; a
/// label inside a sized function leaves the function's name.
#[test]
fn assembly_labels_are_named_from_the_symbol_table_or_the_debug_file() {
    if tool("gcc").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // -rdynamic: the stripped binary keeps a `.dynsym` of its global functions.
    let full = build_c_from(
        dir.path(),
        "labels.c",
        "labels",
        &["-O2", "-rdynamic", "-Wl,--build-id"],
    );
    let data = std::fs::read(&full).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let at = |name: &str| {
        obj.symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("{name} in the symbol table"))
            .address()
    };
    let (entry, inside) = (at("asm_entry"), at("inside_sized"));
    let debug = dir.path().join("labels.debug");
    run_tool(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&full)
            .arg(&debug),
    );
    let stripped = dir.path().join("labels-stripped");
    run_tool(
        Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&stripped)
            .arg(&full),
    );
    run_tool(
        Command::new("objcopy")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&stripped),
    );
    let name = |r: &ElfResolver, va: u64| match r.symbolize(va) {
        Symbolized::Sym(frames) => frames.last().map(|f| f.function.clone()),
        Symbolized::Unknown(_) => None,
    };
    for (what, resolver) in [
        ("own symbol table", ElfResolver::open(&full).unwrap()),
        ("debug file", ElfResolver::open(&stripped).unwrap()),
    ] {
        assert_eq!(
            name(&resolver, entry).as_deref(),
            Some("asm_entry"),
            "{what}"
        );
        assert_eq!(
            name(&resolver, entry + 2).as_deref(),
            Some("asm_entry"),
            "{what}"
        );
        assert_eq!(name(&resolver, inside).as_deref(), Some("sized"), "{what}");
    }
}
