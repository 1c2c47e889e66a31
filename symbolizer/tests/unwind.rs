//! Unwind tables against oracles.
//!
//! - Native code (C built here with gcc, C++ with exceptions, the system's `xz` and libc):
//!   `readelf --debug-dump=frames-interp` gives the CFA, rbp and return-address rules at every
//!   row boundary of every FDE; ours must agree wherever readelf's rule is one we represent.
//! - Go (`BELLOWS_FIXTURES/go/<version>/<variant>/cpuburn` and `go-real/`): Go's linker writes
//!   `.debug_frame` from the same pcsp tables we read, so readelf's CFA of those FDEs must equal
//!   ours at each of their rows. Stripped builds must give their unstripped twin's rows, every
//!   function entry has CFA = rsp+8, and the rbp rule starts right after the prologue's save
//!   that objdump shows.
//!
//! Missing tools or fixtures fail under `CI=true` and are skipped (with the reason) elsewhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use symbolizer::{
    gopclntab::GoTable,
    unwind::{Cfa, Rbp, UnwindError, UnwindLimits, UnwindRow, UnwindTable},
};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Fails in CI, prints why and returns false elsewhere.
fn skip_or_fail(why: &str) -> bool {
    assert!(!in_ci(), "required in CI: {why}");
    eprintln!("skipping: {why}");
    false
}

fn has_tool(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || skip_or_fail(&format!("{tool} is not installed"))
}

fn table(path: &Path, debug: Option<&Path>) -> UnwindTable {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let debug = debug.map(|d| std::fs::read(d).unwrap());
    UnwindTable::from_elf(&data, debug.as_deref(), &UnwindLimits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One FDE as readelf interprets it.
#[derive(Debug)]
struct ReadelfFde {
    section: String,
    /// The CIE's augmentation string.
    augmentation: String,
    start: u64,
    end: u64,
    /// LOC → column name → rule text (the last row of each LOC; a row holds until the next).
    rows: BTreeMap<u64, BTreeMap<String, String>>,
}

/// Every FDE of `readelf --debug-dump=frames-interp`, in both `.eh_frame` and `.debug_frame`.
fn readelf_fdes(path: &Path) -> Vec<ReadelfFde> {
    let out = Command::new("readelf")
        .args(["-W", "--debug-dump=frames-interp"])
        .arg(path)
        .output()
        .expect("readelf");
    // readelf exits with 1 after warnings (e.g. about libc's DWARF 5 line tables) and still
    // prints every frame.
    assert!(
        out.status.success() || !out.stdout.is_empty(),
        "readelf {}",
        path.display()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut cies: BTreeMap<String, String> = BTreeMap::new();
    let mut fdes = Vec::new();
    let mut section = String::new();
    let mut current: Option<ReadelfFde> = None;
    let mut columns: Vec<String> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(rest) = line.strip_prefix("Contents of the ") {
            section = rest.split(' ').next().unwrap_or_default().to_string();
            fdes.extend(current.take());
            continue;
        }
        if words.len() >= 4 && words[3] == "CIE" {
            fdes.extend(current.take());
            let aug = line.split('"').nth(1).unwrap_or_default().to_string();
            cies.insert(format!("{}/{}", section, words[0]), aug);
            columns.clear();
            continue;
        }
        if words.len() >= 6 && words[3] == "FDE" {
            fdes.extend(current.take());
            let cie = words[4].trim_start_matches("cie=");
            let (start, end) = words[5]
                .trim_start_matches("pc=")
                .split_once("..")
                .expect("pc range");
            current = Some(ReadelfFde {
                section: section.clone(),
                augmentation: cies
                    .get(&format!("{section}/{cie}"))
                    .cloned()
                    .unwrap_or_default(),
                start: u64::from_str_radix(start, 16).unwrap(),
                end: u64::from_str_radix(end, 16).unwrap(),
                rows: BTreeMap::new(),
            });
            columns.clear();
            continue;
        }
        if words.first() == Some(&"LOC") {
            columns = words[1..].iter().map(|w| w.to_string()).collect();
            continue;
        }
        let Some(fde) = current.as_mut() else {
            continue;
        };
        let Some(loc) = words.first().and_then(|w| u64::from_str_radix(w, 16).ok()) else {
            continue;
        };
        // A register rule prints as `r9 (r9)`: the parenthesised name belongs to the value.
        let mut values: Vec<String> = Vec::new();
        for w in &words[1..] {
            match values.last_mut() {
                Some(last) if w.starts_with('(') => {
                    last.push(' ');
                    last.push_str(w);
                }
                _ => values.push(w.to_string()),
            }
        }
        if values.len() != columns.len() || words[0].len() < 8 {
            continue;
        }
        let row = columns.iter().cloned().zip(values).collect();
        fde.rows.insert(loc, row);
    }
    fdes.extend(current);
    fdes
}

/// What readelf's row means in our terms; None when it is a rule we do not represent
/// (an expression other than the PLT's, a register other than rsp/rbp, ...).
fn expected(fde: &ReadelfFde, row: &BTreeMap<String, String>) -> Option<(Cfa, Rbp)> {
    if fde.augmentation.contains('S') {
        return Some((Cfa::Signal, Rbp::Unchanged));
    }
    match row.get("ra").map(String::as_str) {
        None | Some("u") => return Some((Cfa::Undefined, Rbp::Unchanged)),
        Some("c-8") => {}
        Some(_) => return Some((Cfa::Unknown, Rbp::Unchanged)),
    }
    let cfa = row.get("CFA")?;
    let cfa = if let Some(n) = cfa.strip_prefix("rsp+") {
        Cfa::Rsp(n.parse().ok()?)
    } else if let Some(n) = cfa.strip_prefix("rbp+") {
        Cfa::Rbp(n.parse().ok()?)
    } else {
        // "exp": the PLT expression or another; readelf's interpretation does not say which.
        return None;
    };
    let rbp = match row.get("rbp").map(String::as_str) {
        None | Some("u") | Some("s") => Rbp::Unchanged,
        Some(c) => match c.strip_prefix("c").and_then(|n| n.parse().ok()) {
            Some(n) => Rbp::At(n),
            None => return Some((Cfa::Unknown, Rbp::Unchanged)),
        },
    };
    Some((cfa, rbp))
}

#[derive(Debug, Default)]
struct Comparison {
    rows: usize,
    agree: usize,
    /// Rows readelf gives a rule we do not represent (expressions): ours must be Plt/Unknown.
    unsupported: usize,
    /// Of those, how many we recognised as the PLT stub.
    plt: usize,
    /// Rows whose rule, as readelf gives it, we represent as Unknown (a return address or rbp
    /// not where we can restore it from).
    unknown: usize,
    signal: usize,
    undefined: usize,
    /// Our row boundaries inside an FDE that readelf does not list.
    extra_boundaries: usize,
}

/// Compares our table with readelf's at every row readelf gives for `sections`.
fn compare(what: &str, ours: &UnwindTable, fdes: &[ReadelfFde], sections: &[&str]) -> Comparison {
    let mut c = Comparison::default();
    let mut mismatches = Vec::new();
    for fde in fdes
        .iter()
        .filter(|f| sections.contains(&f.section.as_str()))
    {
        for (&loc, row) in fde.rows.range(fde.start..fde.end) {
            c.rows += 1;
            let mine = ours
                .lookup(loc)
                .map(|r| (r.cfa, r.rbp))
                .unwrap_or((Cfa::Unknown, Rbp::Unchanged));
            match expected(fde, row) {
                None => {
                    c.unsupported += 1;
                    match mine.0 {
                        Cfa::Plt => c.plt += 1,
                        Cfa::Unknown => {}
                        _ => mismatches.push(format!("{loc:#x}: {row:?} vs {mine:?}")),
                    }
                }
                Some(want) if want == mine => {
                    c.agree += 1;
                    match want.0 {
                        Cfa::Unknown => c.unknown += 1,
                        Cfa::Signal => c.signal += 1,
                        Cfa::Undefined => c.undefined += 1,
                        _ => {}
                    }
                }
                Some(want) => mismatches.push(format!(
                    "{} {loc:#x}: readelf {row:?} = {want:?}, ours {mine:?}",
                    fde.section
                )),
            }
        }
        let start = ours.rows().partition_point(|r| r.pc < fde.start);
        for r in ours.rows()[start..].iter().take_while(|r| r.pc < fde.end) {
            if !fde.rows.contains_key(&r.pc) && r.pc != fde.start {
                c.extra_boundaries += 1;
                mismatches.push(format!("{:#x}: our row {r:?} inside {fde:?}", r.pc));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{what}: {} of {} rows disagree with readelf (or are not in it), e.g.\n{}",
        mismatches.len(),
        c.rows,
        mismatches[..mismatches.len().min(20)].join("\n")
    );
    eprintln!("{what}: {c:?}");
    c
}

/// Rows sorted, strictly increasing, no equal neighbours, ending in Unknown.
fn assert_well_formed(what: &str, t: &UnwindTable) {
    let rows = t.rows();
    for w in rows.windows(2) {
        assert!(w[0].pc < w[1].pc, "{what}: unsorted at {:#x}", w[1].pc);
        assert!(
            (w[0].cfa, w[0].rbp) != (w[1].cfa, w[1].rbp),
            "{what}: equal neighbours at {:#x}",
            w[1].pc
        );
    }
    if let Some(last) = rows.last() {
        assert_eq!(last.cfa, Cfa::Unknown, "{what}: last row");
    }
}

// ---------------------------------------------------------------------------------------------
// Native code

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/unwind")
        .join(name)
}

/// Compiles a fixture into the target temp directory.
fn compile(compiler: &str, source: &str, name: &str, flags: &[&str]) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("unwind")
        .join(name);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let status = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(testdata(source))
        .status()
        .unwrap_or_else(|e| panic!("{compiler}: {e}"));
    assert!(status.success(), "{compiler} {source} {flags:?}");
    out
}

fn native_tools() -> bool {
    has_tool("gcc") && has_tool("g++") && has_tool("readelf") && has_tool("objcopy")
}

#[test]
fn native_builds_match_readelf() {
    if !native_tools() {
        return;
    }
    let builds = [
        (
            "gcc",
            "frames.c",
            "omit-fp",
            &["-O2", "-fomit-frame-pointer"][..],
        ),
        (
            "gcc",
            "frames.c",
            "keep-fp",
            &["-O2", "-fno-omit-frame-pointer"],
        ),
        ("gcc", "frames.c", "O0", &["-O0", "-g"]),
        (
            "gcc",
            "frames.c",
            "no-pie",
            &["-O2", "-no-pie", "-fomit-frame-pointer"],
        ),
        ("g++", "throw.cpp", "cxx", &["-O2", "-fomit-frame-pointer"]),
    ];
    for (cc, src, name, flags) in builds {
        let bin = compile(cc, src, name, flags);
        let t = table(&bin, None);
        assert_well_formed(name, &t);
        let c = compare(name, &t, &readelf_fdes(&bin), &[".eh_frame"]);
        assert!(c.rows > 20, "{name}: only {} rows compared", c.rows);
        assert_eq!(
            c.unknown, 0,
            "{name}: C code has no rule we cannot represent"
        );
        assert!(
            t.rows()
                .iter()
                .any(|r| matches!(r.cfa, Cfa::Rsp(n) if n > 8)),
            "{name}: pushes and frames"
        );
        if name == "omit-fp" {
            // alloca: gcc keeps the CFA on rbp even without frame pointers.
            assert!(
                t.rows().iter().any(|r| matches!(r.cfa, Cfa::Rbp(16))),
                "{name}: alloca"
            );
        }
        if name == "keep-fp" {
            assert!(t
                .rows()
                .iter()
                .any(|r| r.rbp == Rbp::At(-16) && r.cfa == Cfa::Rbp(16)));
        }
        if name != "no-pie" {
            // The lazy PLT stub: ld writes its expression whenever .plt has entries.
            assert!(c.plt > 0 || !has_plt(&bin), "{name}: PLT expression");
        }
    }
}

fn has_plt(bin: &Path) -> bool {
    let out = Command::new("readelf")
        .args(["-SW"])
        .arg(bin)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(" .plt ")
}

/// C without `.eh_frame` (`-fno-asynchronous-unwind-tables`), where gcc writes `.debug_frame`;
/// then the same CFI from a separate debug file, as `objcopy --only-keep-debug` makes one.
#[test]
fn debug_frame_of_the_file_and_of_its_debug_file_match_readelf() {
    if !native_tools() {
        return;
    }
    let bin = compile(
        "gcc",
        "frames.c",
        "debug-frame",
        &[
            "-O2",
            "-g",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
            "-fomit-frame-pointer",
        ],
    );
    let fdes = readelf_fdes(&bin);
    assert!(
        fdes.iter().any(|f| f.section == ".debug_frame"),
        "gcc wrote no .debug_frame"
    );
    let whole = table(&bin, None);
    assert_well_formed("debug-frame", &whole);
    let c = compare("debug-frame", &whole, &fdes, &[".debug_frame"]);
    assert!(c.rows > 10);

    let debug = bin.with_extension("debug");
    let stripped = bin.with_extension("stripped");
    for args in [
        vec!["--only-keep-debug".into(), bin.clone(), debug.clone()],
        vec!["--strip-debug".into(), bin.clone(), stripped.clone()],
    ] {
        let status = Command::new("objcopy").args(&args).status().unwrap();
        assert!(status.success(), "objcopy {args:?}");
    }
    let alone = table(&stripped, None);
    let with_debug = table(&stripped, Some(&debug));
    assert!(alone.stats().fdes[2] == 0 && with_debug.stats().fdes[2] > 0);
    // The stripped file keeps only the crt objects' .eh_frame; the debug file adds the rest.
    compare(
        "debug-frame (debug file)",
        &with_debug,
        &fdes,
        &[".debug_frame"],
    );

    // Found as the loader finds it: by build id under a debug root (a -dbgsym package's
    // layout), and by `.gnu_debuglink` next to the binary.
    let data = std::fs::read(&stripped).unwrap();
    let root = tempfile::tempdir().unwrap();
    assert!(
        symbolizer::separate_debug_file(&data, None, root.path()).is_none(),
        "an empty root has none"
    );
    let id = object::read::File::parse(&data[..])
        .ok()
        .and_then(|o| {
            object::Object::build_id(&o)
                .ok()
                .flatten()
                .map(<[u8]>::to_vec)
        })
        .expect("gcc gives a build id");
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let by_id = root.path().join(".build-id").join(&hex[..2]);
    std::fs::create_dir_all(&by_id).unwrap();
    std::fs::copy(&debug, by_id.join(format!("{}.debug", &hex[2..]))).unwrap();
    let found = symbolizer::separate_debug_file(&data, None, root.path()).expect("by build id");
    let via_root =
        UnwindTable::from_elf(&data, Some(&found[..]), &UnwindLimits::default()).unwrap();
    assert_eq!(via_root.rows(), with_debug.rows());
    let linked = bin.with_extension("linked");
    let status = Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(&stripped)
        .arg(&linked)
        .status()
        .unwrap();
    assert!(status.success(), "objcopy --add-gnu-debuglink");
    let data = std::fs::read(&linked).unwrap();
    let empty = tempfile::tempdir().unwrap();
    assert!(
        symbolizer::separate_debug_file(&data, Some(&linked), empty.path()).is_some(),
        "by debuglink, next to the binary"
    );
}

#[test]
fn system_binaries_match_readelf() {
    if !native_tools() {
        return;
    }
    for path in ["/usr/bin/xz", "/lib/x86_64-linux-gnu/libc.so.6"] {
        let path = Path::new(path);
        if !path.is_file() {
            skip_or_fail(&format!("{} is missing", path.display()));
            continue;
        }
        let t = table(path, None);
        assert_well_formed(&path.display().to_string(), &t);
        let c = compare(
            &path.display().to_string(),
            &t,
            &readelf_fdes(path),
            &[".eh_frame"],
        );
        assert!(c.plt > 0 || !has_plt(path), "{}: PLT", path.display());
        if path.ends_with("libc.so.6") {
            assert!(c.signal > 0, "libc: __restore_rt is a signal frame");
            // Expressions other than the PLT's (e.g. in hand-written assembly) stay Unknown:
            // a handful, not more.
            assert!(c.unsupported - c.plt < 64, "libc: {c:?}");
        }
    }
}

#[test]
fn limits_are_clear_errors() {
    let path = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    if !path.is_file() {
        skip_or_fail("no libc to read");
        return;
    }
    let data = std::fs::read(path).unwrap();
    let rows = UnwindLimits {
        max_rows: 100,
        ..UnwindLimits::default()
    };
    assert!(matches!(
        UnwindTable::from_elf(&data, None, &rows),
        Err(UnwindError::TooManyRows { limit: 100 })
    ));
    let bytes = UnwindLimits {
        max_cfi_bytes: 1000,
        ..UnwindLimits::default()
    };
    let err = UnwindTable::from_elf(&data, None, &bytes).unwrap_err();
    assert!(
        matches!(
            err,
            UnwindError::CfiTooLarge {
                section: ".eh_frame",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_cfi_bytes"));
}

#[test]
fn truncated_and_damaged_files_never_panic() {
    let path = Path::new("/usr/bin/xz");
    if !path.is_file() {
        skip_or_fail("no xz to damage");
        return;
    }
    let data = std::fs::read(path).unwrap();
    let limits = UnwindLimits::default();
    for cut in (0..data.len()).step_by(997) {
        let _ = UnwindTable::from_elf(&data[..cut], None, &limits);
    }
    let mut seed = 0x5eed_u64;
    for _ in 0..200 {
        let mut d = data.clone();
        for _ in 0..32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % d.len();
            d[at] = (seed >> 32) as u8;
        }
        if let Ok(t) = UnwindTable::from_elf(&d, None, &limits) {
            assert_well_formed("damaged xz", &t);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Go

/// `BELLOWS_FIXTURES/<sub>`, or None (after failing in CI) when it is missing or empty.
fn fixture_dir(sub: &str) -> Option<PathBuf> {
    let Some(root) = std::env::var_os("BELLOWS_FIXTURES") else {
        skip_or_fail("BELLOWS_FIXTURES unset (run `cargo xtask test`)");
        return None;
    };
    let dir = Path::new(&root).join(sub);
    let any = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
    if !any {
        skip_or_fail(&format!("no fixtures in {}", dir.display()));
        return None;
    }
    Some(dir)
}

/// Every Go function with a pcsp table (cgo's C functions have none): (entry, end, top frame).
/// (entry, end, top frame, writes SP) of every Go function with a `pcsp` table.
fn go_functions(path: &Path) -> Vec<(u64, u64, bool, bool)> {
    let data = std::fs::read(path).unwrap();
    let t = GoTable::from_elf(&data).unwrap().expect("a Go table");
    t.sp_deltas(&data)
        .filter(|f| f.runs.clone().is_some_and(|mut r| r.next().is_some()))
        .map(|f| (f.func.entry, f.func.end, f.top_frame, f.sp_write))
        .collect()
}

/// Checks a Go binary: well formed, CFA = rsp+8 at every entry, and (when it has
/// `.debug_frame`) readelf's CFA at every row of Go's FDEs. Returns (rows compared, agreeing).
fn check_go(what: &str, path: &Path) -> (usize, usize) {
    let t = table(path, None);
    assert_well_formed(what, &t);
    let functions = go_functions(path);
    assert!(
        t.stats().go_functions * 100 >= functions.len() * 99,
        "{what}: {:?}",
        t.stats()
    );
    let mut tops = 0;
    for &(entry, _, top, _) in &functions {
        let row = t
            .lookup(entry)
            .unwrap_or_else(|| panic!("{what}: no row at entry {entry:#x}"));
        if top {
            tops += 1;
            assert_eq!(row.cfa, Cfa::Undefined, "{what}: top frame at {entry:#x}");
        } else if row.cfa != Cfa::Unknown {
            assert_eq!(
                (row.cfa, row.rbp),
                (Cfa::Rsp(8), Rbp::Unchanged),
                "{what}: entry {entry:#x}"
            );
        }
    }
    assert!(
        tops >= 2,
        "{what}: runtime.goexit and runtime.mstart are top frames"
    );
    let fdes = readelf_fdes(path);
    let (mut rows, mut agree) = (0, 0);
    for fde in fdes.iter().filter(|f| f.section.ends_with("debug_frame")) {
        let top = functions
            .iter()
            .any(|&(entry, _, top, _)| top && entry == fde.start);
        // Stack switchers take the frame-pointer rule past their entry (see unwind/go.rs);
        // the linker's `.debug_frame` repeats their `pcsp`, which is wrong there.
        let switches = functions
            .iter()
            .any(|&(entry, _, top, sp)| !top && sp && entry == fde.start);
        for (&loc, row) in fde.rows.range(fde.start..fde.end) {
            if switches && loc != fde.start {
                continue;
            }
            rows += 1;
            let want = row
                .get("CFA")
                .and_then(|c| c.strip_prefix("rsp+"))
                .and_then(|n| n.parse().ok())
                .map(Cfa::Rsp);
            let mine = t.lookup(loc).map(|r| r.cfa);
            if top {
                assert_eq!(mine, Some(Cfa::Undefined), "{what}: {loc:#x}");
            } else {
                assert_eq!(mine, want, "{what}: .debug_frame CFA at {loc:#x} ({row:?})");
            }
            agree += 1;
        }
    }
    eprintln!(
        "{what}: {} rows, {} functions ({tops} top frames), .debug_frame rows compared {rows}, agreeing {agree}, {:?}",
        t.rows().len(),
        functions.len(),
        t.stats()
    );
    (rows, agree)
}

#[test]
fn go_fixtures_match_their_debug_frame_and_stripped_twins() {
    let Some(dir) = fixture_dir("go") else {
        return;
    };
    if !has_tool("readelf") {
        return;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    let (mut rows, mut agree) = (0, 0);
    for v in &versions {
        let name = v.file_name().unwrap().to_string_lossy().to_string();
        for variant in ["default", "stripped", "pie"] {
            let path = v.join(variant).join("cpuburn");
            assert!(path.is_file(), "missing {}", path.display());
            let (r, a) = check_go(&format!("{name}/{variant}"), &path);
            if variant != "stripped" {
                assert!(r > 1000, "{name}/{variant}: only {r} .debug_frame rows");
            }
            rows += r;
            agree += a;
        }
        let default = table(&v.join("default/cpuburn"), None);
        let stripped = table(&v.join("stripped/cpuburn"), None);
        assert_eq!(
            default.rows(),
            stripped.rows(),
            "{name}: stripped twin differs"
        );
    }
    assert_eq!(rows, agree);
    eprintln!("Go fixtures: {rows} .debug_frame rows compared, {agree} agreeing");
}

#[test]
fn old_real_go_binaries_have_sane_tables() {
    let Some(dir) = fixture_dir("go-real") else {
        return;
    };
    if !has_tool("readelf") {
        return;
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut with_frames = 0;
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let (rows, _) = check_go(&name, path);
        with_frames += usize::from(rows > 0);
    }
    // esbuild 0.5.26 (Go 1.14) keeps a zlib-compressed .zdebug_frame: a Go 1.2-layout oracle.
    assert!(with_frames >= 1, "no old binary with .debug_frame");
}

#[test]
fn large_go_program_matches_its_debug_frame() {
    let Some(dir) = fixture_dir("go-large") else {
        return;
    };
    if !has_tool("readelf") {
        return;
    }
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let (rows, agree) = check_go(&e.file_name().to_string_lossy(), &e.path());
        assert!(rows > 100_000 && rows == agree);
    }
}

/// objdump's view of each function's prologue: the address right after the first
/// `push %rbp` or `mov %rbp,N(%rsp)` among its first instructions, if any.
fn objdump_bp_saves(path: &Path) -> BTreeMap<u64, Option<u64>> {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-j", ".text"])
        .arg(path)
        .output()
        .expect("objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut saves = BTreeMap::new();
    let mut current: Option<(u64, usize, bool)> = None; // (entry, instructions seen, saved)
    let mut pending_save: Option<u64> = None;
    for line in text.lines() {
        if let Some(head) = line.strip_suffix(">:") {
            let entry = u64::from_str_radix(head.split(' ').next().unwrap_or(""), 16).ok();
            current = entry.map(|e| (e, 0, false));
            if let Some(e) = entry {
                saves.insert(e, None);
            }
            pending_save = None;
            continue;
        }
        let Some((entry, seen, saved)) = current.as_mut() else {
            continue;
        };
        let Some((addr, insn)) = line.trim_start().split_once(":\t") else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        if pending_save.take().is_some() {
            saves.insert(*entry, Some(addr));
        }
        *seen += 1;
        let insn = insn.split_whitespace().collect::<Vec<_>>().join(" ");
        if !*saved
            && *seen <= 8
            && (insn == "push %rbp" || (insn.starts_with("mov %rbp,") && insn.ends_with("(%rsp)")))
        {
            *saved = true;
            pending_save = Some(addr);
        }
    }
    saves
}

#[test]
fn go_rbp_rule_starts_after_the_prologue_save() {
    let Some(dir) = fixture_dir("go") else {
        return;
    };
    if !has_tool("objdump") {
        return;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    for v in versions {
        let path = v.join("default/cpuburn");
        let what = v.file_name().unwrap().to_string_lossy().to_string();
        let t = table(&path, None);
        let saves = objdump_bp_saves(&path);
        let (mut framed, mut agree, mut frameless) = (0, 0, 0);
        for (entry, end, top, sp_write) in go_functions(&path) {
            // Stack switchers: the frame-pointer rule (see unwind/go.rs), checked by the cgo
            // integration test.
            if top || sp_write {
                continue;
            }
            let start = t.rows().partition_point(|r| r.pc < entry);
            let rows: Vec<&UnwindRow> = t.rows()[start..]
                .iter()
                .take_while(|r| r.pc < end)
                .collect();
            let first_at = rows.iter().find(|r| r.rbp == Rbp::At(-16)).map(|r| r.pc);
            match saves.get(&entry).copied().flatten() {
                Some(after) => {
                    framed += 1;
                    // The save found by objdump may belong to code we do not trust (an
                    // assembly function pushing other registers first): then we claim nothing.
                    if first_at == Some(after) {
                        agree += 1;
                    } else {
                        assert_eq!(
                            first_at, None,
                            "{what}: function at {entry:#x}: rbp saved from {after:#x}"
                        );
                    }
                }
                None => {
                    frameless += 1;
                    assert_eq!(
                        first_at, None,
                        "{what}: function at {entry:#x} saves no rbp"
                    );
                }
            }
        }
        eprintln!("{what}: {framed} functions save rbp in their prologue, {agree} rows start right after it; {frameless} frameless");
        assert_eq!(agree, framed, "{what}");
    }
}

#[test]
fn go_table_version_coverage() {
    // Every table layout the symbolizer reads has a fixture here: Go 1.2 (esbuild 0.5–0.7, Go
    // 1.14/1.15), 1.16 (esbuild 0.8–0.13), 1.18 (Go 1.19) and 1.20+ (Go 1.22+).
    let (Some(go), Some(real)) = (fixture_dir("go"), fixture_dir("go-real")) else {
        return;
    };
    let mut seen = BTreeSet::new();
    let paths = std::fs::read_dir(&go)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("stripped/cpuburn"))
        .chain(
            std::fs::read_dir(&real)
                .unwrap()
                .flatten()
                .map(|e| e.path()),
        );
    for path in paths {
        let data = std::fs::read(&path).unwrap();
        if let Ok(Some(t)) = GoTable::from_elf(&data) {
            let table = UnwindTable::from_elf(&data, None, &UnwindLimits::default()).unwrap();
            assert!(table.stats().go_functions > 1000, "{}", path.display());
            seen.insert(format!("{:?}", t.version()));
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}
