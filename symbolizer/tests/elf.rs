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
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/native/inline.c");
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

fn compare(binary: &Path, dwarf: bool) -> usize {
    let resolver = ElfResolver::open(binary).unwrap();
    assert_eq!(resolver.has_dwarf(), dwarf, "{}", binary.display());
    let addrs = function_addresses(binary);
    assert!(addrs.len() > 100);
    let expected = oracle(binary, &addrs);
    let mut inlined = 0;
    let mut mismatches = Vec::new();
    for (addr, want) in addrs.iter().zip(&expected) {
        let got: Vec<(String, String, u32)> = match resolver.symbolize(*addr) {
            Symbolized::Sym(frames) => frames
                .iter()
                .map(|f| {
                    (
                        f.function.clone(),
                        f.file.clone().unwrap_or_default(),
                        f.line.unwrap_or(0),
                    )
                })
                .collect(),
            Symbolized::Unknown(_) => Vec::new(),
        };
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
}

#[test]
fn c_without_dwarf_names_functions_from_the_symbol_table() {
    if tool("llvm-symbolizer").is_none() || tool("gcc").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = build_c(dir.path(), "nodwarf", &["-O2"]);
    compare(&bin, false);
}
