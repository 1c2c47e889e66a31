//! The Go table decoder against Go's own `go tool addr2line`, on the test workloads built with
//! every available Go toolchain (default, stripped and PIE builds).
//!
//! `cargo xtask test` sets `BELLOWS_FIXTURES` (built binaries) and `BELLOWS_GO_TOOLCHAINS` (the
//! `go` binaries, colon-separated). Without them the test fails in CI and skips elsewhere.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use symbolizer::{gopclntab::GoTable, ElfResolver, Symbolized};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn skip_or_fail(why: &str) {
    assert!(!in_ci(), "required in CI: {why}");
    eprintln!("skipping: {why}");
}

/// go version string → go binary.
fn toolchains() -> HashMap<String, PathBuf> {
    let list = std::env::var("BELLOWS_GO_TOOLCHAINS").unwrap_or_default();
    list.split(':')
        .filter(|s| !s.is_empty())
        .filter_map(|go| {
            let out = Command::new(go)
                .args(["env", "GOVERSION"])
                .env("GOTOOLCHAIN", "local")
                .output()
                .ok()?;
            let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Some((v, PathBuf::from(go)))
        })
        .collect()
}

/// Every built Go fixture: (go version, variant, path).
fn fixtures() -> Vec<(String, String, PathBuf)> {
    let Some(root) = std::env::var_os("BELLOWS_FIXTURES") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for v in std::fs::read_dir(Path::new(&root).join("go"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for variant in std::fs::read_dir(v.path()).into_iter().flatten().flatten() {
            for bin in std::fs::read_dir(variant.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push((
                    v.file_name().to_string_lossy().into_owned(),
                    variant.file_name().to_string_lossy().into_owned(),
                    bin.path(),
                ));
            }
        }
    }
    out.sort();
    out
}

struct Xorshift(u64);
impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `go tool addr2line`: for each address, (function, "file:line").
fn addr2line(go: &Path, binary: &Path, addrs: &[u64]) -> Vec<(String, String)> {
    let mut child = Command::new(go)
        .args(["tool", "addr2line"])
        .arg(binary)
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("go tool addr2line");
    let mut input = String::new();
    for a in addrs {
        input.push_str(&format!("0x{a:x}\n"));
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|c| {
            (
                c[0].to_string(),
                c.get(1).copied().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn matches_go_tool_addr2line_on_every_build() {
    let fixtures = fixtures();
    let toolchains = toolchains();
    if fixtures.is_empty() || toolchains.is_empty() {
        skip_or_fail("no Go fixtures or toolchains (run `cargo xtask test`)");
        return;
    }
    let mut compared = 0usize;
    let mut inlined_seen = 0usize;
    for (version, variant, path) in &fixtures {
        let what = format!("{version}/{variant}/{}", path.display());
        let go = toolchains
            .get(version)
            .unwrap_or_else(|| panic!("{what}: no toolchain for {version}"));
        let data = std::fs::read(path).unwrap();
        let table = GoTable::from_elf(&data)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .unwrap_or_else(|| panic!("{what}: no Go table found"));
        let resolver = ElfResolver::open(path).unwrap();
        assert!(resolver.is_go(), "{what}");
        assert_eq!(
            resolver.go_version(),
            Some(version.as_str()),
            "{what}: build info"
        );

        // Every function entry, plus random addresses inside functions.
        let funcs: Vec<_> = table.functions(&data).collect();
        assert!(funcs.len() > 500, "{what}: only {} functions", funcs.len());
        assert!(
            funcs.iter().any(|f| f.name == "main.hotA"),
            "{what}: no main.hotA"
        );
        let mut rng = Xorshift(0x5eed_1234_abcd_ef01);
        let mut addrs: Vec<u64> = funcs.iter().map(|f| f.entry).collect();
        for _ in 0..3000 {
            let f = &funcs[(rng.next() % funcs.len() as u64) as usize];
            if f.end > f.entry {
                addrs.push(f.entry + rng.next() % (f.end - f.entry));
            }
        }
        let oracle = addr2line(go, path, &addrs);
        assert_eq!(oracle.len(), addrs.len(), "{what}: oracle output length");
        let mut mismatches = Vec::new();
        for (addr, (o_func, o_pos)) in addrs.iter().zip(&oracle) {
            let ours = table.symbolize(&data, *addr);
            let frames = ours.frames();
            if o_func == "?" {
                // Alignment padding after a function: the oracle knows nothing either.
                continue;
            }
            let Some(physical) = frames.last() else {
                mismatches.push(format!(
                    "{addr:#x}: oracle {o_func} {o_pos}, we know nothing"
                ));
                continue;
            };
            let innermost = &frames[0];
            // Unknown positions: the oracle prints ":-1" (no file, line -1) or "?:0".
            let ours_pos = match (&innermost.file, innermost.line) {
                (None, None) => ":-1".to_string(),
                (file, line) => format!("{}:{}", file.as_deref().unwrap_or("?"), line.unwrap_or(0)),
            };
            // Negative lines (seen on Go 1.26's `go:textfipsstart` marker) are not lines: we
            // report them as unknown.
            let negative_line = o_pos
                .rsplit_once(":-")
                .is_some_and(|(_, n)| n.parse::<u32>().is_ok());
            let o_pos = if o_pos == "?:0" || negative_line {
                ":-1"
            } else {
                o_pos.as_str()
            };
            // Go 1.19's addr2line names the physical function; newer ones the innermost.
            let name_ok = *o_func == physical.function || *o_func == innermost.function;
            if !name_ok || o_pos != ours_pos {
                mismatches.push(format!(
                    "{addr:#x}: oracle {o_func} {o_pos}; ours {} / {} {ours_pos}",
                    innermost.function, physical.function
                ));
            }
            inlined_seen += usize::from(frames.len() > 1);
            compared += 1;
        }
        assert!(
            mismatches.is_empty(),
            "{what}: {} of {} addresses differ, e.g.:\n{}",
            mismatches.len(),
            addrs.len(),
            mismatches[..mismatches.len().min(15)].join("\n")
        );

        // The inlined helper shows as an inlined frame of hotA.
        let hot_a = funcs.iter().find(|f| f.name == "main.hotA").unwrap();
        let found_inline = (hot_a.entry..hot_a.end).any(|pc| {
            let s = table.symbolize(&data, pc);
            let f = s.frames();
            f.len() >= 2
                && f[0].function == "main.mix"
                && f[0].inlined
                && f[1].function == "main.hotA"
        });
        assert!(
            found_inline,
            "{what}: main.mix is not seen inlined into main.hotA"
        );
        if let Symbolized::Sym(f) = table.symbolize(&data, hot_a.entry) {
            assert_eq!(f.last().unwrap().function, "main.hotA");
            assert!(f
                .last()
                .unwrap()
                .file
                .as_deref()
                .unwrap()
                .ends_with("main.go"));
        } else {
            panic!("{what}: hotA entry unknown");
        }
    }
    assert!(inlined_seen > 0, "no inlined frames seen in any build");
    eprintln!(
        "compared {compared} addresses over {} builds",
        fixtures.len()
    );
}

/// Damaged tables never panic: random byte flips inside a real table.
#[test]
fn damaged_tables_never_panic() {
    let Some((_, _, path)) = fixtures().into_iter().find(|f| f.1 == "stripped") else {
        skip_or_fail("no Go fixtures (run `cargo xtask test`)");
        return;
    };
    let original = std::fs::read(&path).unwrap();
    let table = GoTable::from_elf(&original).unwrap().unwrap();
    let funcs: Vec<(u64, u64)> = table
        .functions(&original)
        .map(|f| (f.entry, f.end))
        .collect();
    let mut rng = Xorshift(42);
    for _ in 0..200 {
        let mut data = original.clone();
        for _ in 0..200 {
            let i = (rng.next() as usize) % data.len();
            data[i] = rng.next() as u8;
        }
        if let Ok(Some(t)) = GoTable::from_elf(&data) {
            for _ in 0..200 {
                let (s, e) = funcs[(rng.next() as usize) % funcs.len()];
                let _ = t.symbolize(&data, s + rng.next() % (e - s).max(1));
            }
            let _ = t.functions(&data).take(1000).count();
        }
    }
}

/// Real Go binaries built long ago with Go 1.14–1.17 (esbuild's npm packages, fetched by
/// `cargo xtask fixtures` into `BELLOWS_FIXTURES/go-real/`), against Go 1.19's addr2line, which
/// reads every older layout.
#[test]
fn old_tables_of_real_binaries_match_go_tool_addr2line() {
    let Some(root) = std::env::var_os("BELLOWS_FIXTURES") else {
        skip_or_fail("BELLOWS_FIXTURES unset (run `cargo xtask test`)");
        return;
    };
    let dir = Path::new(&root).join("go-real");
    let mut binaries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    binaries.sort();
    if binaries.is_empty() {
        skip_or_fail(&format!("no binaries in {}", dir.display()));
        return;
    }
    // Debian's Go 1.19 is listed first.
    let go = std::env::var("BELLOWS_GO_TOOLCHAINS")
        .ok()
        .and_then(|l| l.split(':').next().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("go"));
    let mut versions = std::collections::BTreeSet::new();
    for path in &binaries {
        let what = path.display().to_string();
        let data = std::fs::read(path).unwrap();
        let table = GoTable::from_elf(&data)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .unwrap_or_else(|| panic!("{what}: no Go table"));
        versions.insert(format!("{:?}", table.version()));
        let funcs: Vec<_> = table.functions(&data).collect();
        assert!(funcs.len() > 1000, "{what}: only {} functions", funcs.len());
        let mut rng = Xorshift(0xfeed_beef_1234_5678);
        let mut addrs: Vec<u64> = funcs.iter().step_by(7).map(|f| f.entry).collect();
        for _ in 0..3000 {
            let f = &funcs[(rng.next() % funcs.len() as u64) as usize];
            if f.end > f.entry {
                addrs.push(f.entry + rng.next() % (f.end - f.entry));
            }
        }
        let oracle = addr2line(&go, path, &addrs);
        let mut mismatches = Vec::new();
        let mut inlined = 0;
        for (addr, (o_func, o_pos)) in addrs.iter().zip(&oracle) {
            let ours = table.symbolize(&data, *addr);
            let frames = ours.frames();
            if o_func == "?" {
                continue;
            }
            let (Some(innermost), Some(physical)) = (frames.first(), frames.last()) else {
                mismatches.push(format!(
                    "{addr:#x}: oracle {o_func} {o_pos}, we know nothing"
                ));
                continue;
            };
            inlined += usize::from(frames.len() > 1);
            let ours_pos = match (&innermost.file, innermost.line) {
                (None, None) => "?:0".to_string(),
                (f, l) => format!("{}:{}", f.as_deref().unwrap_or("?"), l.unwrap_or(0)),
            };
            let o_pos = if o_pos.ends_with(":-1") {
                "?:0"
            } else {
                o_pos.as_str()
            };
            if (*o_func != physical.function && *o_func != innermost.function) || o_pos != ours_pos
            {
                mismatches.push(format!(
                    "{addr:#x}: oracle {o_func} {o_pos}; ours {} / {} {ours_pos}",
                    innermost.function, physical.function
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{what}: {} of {} differ:\n{}",
            mismatches.len(),
            addrs.len(),
            mismatches[..mismatches.len().min(12)].join("\n")
        );
        assert!(inlined > 0, "{what}: no inlined frames found");
    }
    assert!(
        versions.contains("V12") && versions.contains("V116"),
        "expected Go 1.2 and 1.16 layouts, got {versions:?}"
    );
}
