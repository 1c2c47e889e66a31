//! The Go table decoder against Go's own `go tool addr2line`.
//!
//! The program `testdata/go/pclntest` is built here, into Cargo's target temp directory, with
//! every Go toolchain available (Debian's Go 1.19, plus the `go` binaries listed in
//! `BELLOWS_GO_TOOLCHAINS`, colon-separated, which `cargo xtask test` sets), each as a default,
//! a stripped (`-ldflags=-s -w`), a PIE and a big-endian (s390x, cross-compiled) build. Without
//! Go the tests fail under `CI=true` and are skipped elsewhere.
//!
//! What the oracle prints (checked with Go 1.19, 1.22 and 1.26): for an address inside inlined
//! code, the PHYSICAL function's name, and the file:line of the INNERMOST inlined frame. Both
//! are compared exactly; the inlined frames themselves are checked against the program's known
//! shape.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use symbolizer::{
    gopclntab::{build_info_version, GoTable, GoTableVersion},
    Frame, Reason, Symbolized,
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

/// `go1.22.10` for a `go` binary, None when it does not run.
fn go_version(go: &Path) -> Option<String> {
    let out = Command::new(go)
        .args(["env", "GOVERSION"])
        .env("GOTOOLCHAIN", "local")
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && v.starts_with("go")).then_some(v)
}

/// Go version → `go` binary: `BELLOWS_GO_TOOLCHAINS`, then Debian's Go.
fn toolchains() -> BTreeMap<String, PathBuf> {
    let listed = std::env::var("BELLOWS_GO_TOOLCHAINS").unwrap_or_default();
    let candidates = listed
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .chain(["/usr/lib/go/bin/go", "/usr/bin/go"].map(PathBuf::from));
    let mut out = BTreeMap::new();
    for go in candidates {
        if let Some(v) = go_version(&go) {
            out.entry(v).or_insert(go);
        }
    }
    out
}

/// One built binary.
struct Build {
    version: String,
    variant: &'static str,
    go: PathBuf,
    path: PathBuf,
}

impl Build {
    fn what(&self) -> String {
        format!("{}/{}", self.version, self.variant)
    }

    /// Built for another architecture than the host's.
    fn cross(&self) -> bool {
        VARIANTS
            .iter()
            .any(|v| v.0 == self.variant && v.2.is_some())
    }

    /// Go minor version: 19 for go1.19.8.
    fn minor(&self) -> u32 {
        go_minor(&self.version)
    }
}

/// Go minor version of a version string: 19 for go1.19.8 (0 when it does not parse).
fn go_minor(version: &str) -> u32 {
    version
        .trim_start_matches("go1.")
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Build variants: name, `go build` flags, and a target architecture other than the host's.
/// s390x is big-endian: its table's words are too.
const VARIANTS: &[(&str, &[&str], Option<&str>)] = &[
    ("default", &[], None),
    ("stripped", &["-ldflags=-s -w"], None),
    ("pie", &["-buildmode=pie"], None),
    ("s390x", &[], Some("s390x")),
];

/// Builds the test program with every toolchain and variant, once per test process.
fn builds() -> &'static [Build] {
    static BUILDS: OnceLock<Vec<Build>> = OnceLock::new();
    BUILDS.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/go/pclntest");
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gopclntab");
        let mut out = Vec::new();
        for (version, go) in toolchains() {
            for &(variant, flags, goarch) in VARIANTS {
                let path = tmp.join(&version).join(variant).join("pclntest");
                let mut cmd = Command::new(&go);
                if let Some(arch) = goarch {
                    cmd.env("GOARCH", arch);
                }
                let status = cmd
                    .current_dir(&source)
                    .arg("build")
                    .args(flags)
                    .arg("-o")
                    .arg(&path)
                    .arg(".")
                    .env("GOFLAGS", "-buildvcs=false")
                    .env("GOTOOLCHAIN", "local")
                    .env("GOCACHE", tmp.join("cache").join(&version))
                    .env("GOPATH", tmp.join("gopath"))
                    .env("CGO_ENABLED", "0")
                    .status()
                    .unwrap_or_else(|e| panic!("running {}: {e}", go.display()));
                assert!(status.success(), "{version} {variant}: go build failed");
                out.push(Build {
                    version: version.clone(),
                    variant,
                    go: go.clone(),
                    path,
                });
            }
        }
        out
    })
}

/// The builds, or None (after failing in CI) when there is no Go.
/// The 1-based line of the test program that starts with `prefix`.
fn source_line(prefix: &str) -> u32 {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/go/pclntest/main.go"),
    )
    .unwrap();
    src.lines()
        .position(|l| l.starts_with(prefix))
        .map(|i| i as u32 + 1)
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}"))
}

fn builds_or_skip() -> Option<&'static [Build]> {
    let b = builds();
    if b.is_empty()
        && !skip_or_fail("no Go toolchain (install golang-go or run `cargo xtask test`)")
    {
        return None;
    }
    Some(b)
}

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Runs an oracle with one hex address per line on its standard input; its standard output.
fn pipe_addresses(cmd: &mut Command, addrs: &[u64]) -> String {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("oracle output");
    writer.join().expect("writer").expect("write addresses");
    assert!(out.status.success(), "{what} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `go tool addr2line`: for each address, (function, "file:line").
fn addr2line(go: &Path, binary: &Path, addrs: &[u64]) -> Vec<(String, String)> {
    let text = pipe_addresses(
        Command::new(go)
            .args(["tool", "addr2line"])
            .arg(binary)
            .env("GOTOOLCHAIN", "local"),
        addrs,
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * addrs.len(), "addr2line output length");
    lines
        .chunks(2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

/// Our answer in the oracle's terms: (physical function, innermost "file:line"). Unknown
/// positions print as the oracle does: `?:0` (no file) or `file:-1`-style negatives, which we
/// report as no line.
fn as_oracle(s: &Symbolized) -> (String, String) {
    let frames = s.frames();
    let (Some(inner), Some(physical)) = (frames.first(), frames.last()) else {
        return ("?".to_string(), "?:0".to_string());
    };
    let pos = format!(
        "{}:{}",
        inner.file.as_deref().unwrap_or("?"),
        inner.line.map_or(0, i64::from)
    );
    (physical.function.clone(), pos)
}

/// The oracle's position with lines it cannot know normalised: Go prints `?:0` for no file and
/// negative lines for markers (Go 1.26's `go:textfipsstart`); we report both as unknown lines.
fn normalise(pos: &str) -> String {
    match pos.rsplit_once(':') {
        Some((file, line)) if line.starts_with('-') => {
            format!("{}:0", if file.is_empty() { "?" } else { file })
        }
        Some(("", line)) => format!("?:{line}"),
        _ => pos.to_string(),
    }
}

/// Compares `addrs` with the oracle; returns (compared, mismatches).
fn compare(
    go: &Path,
    path: &Path,
    table: &GoTable,
    data: &[u8],
    addrs: &[u64],
) -> (usize, Vec<String>) {
    let oracle = addr2line(go, path, addrs);
    let mut mismatches = Vec::new();
    for (addr, (o_func, o_pos)) in addrs.iter().zip(&oracle) {
        let ours = table.symbolize(data, *addr);
        let (func, pos) = as_oracle(&ours);
        // Go 1.26's `go:textfipsstart`/`go:textfipsend` are empty markers with no pc tables
        // (offset 0). The runtime reads offset 0 as "no table", as we do; debug/gosym decodes
        // whatever table sits at pctab offset 0 and prints another function's lines after the
        // first byte (seen on Go 1.26's own cmd/compile).
        if func.starts_with("go:textfips") && func == *o_func && pos == "?:0" {
            continue;
        }
        if func != *o_func || pos != normalise(o_pos) {
            mismatches.push(format!(
                "{addr:#x}: oracle {o_func} {o_pos}; ours {func} {pos} ({ours:?})"
            ));
        }
    }
    (addrs.len(), mismatches)
}

/// The `go` whose addr2line reads `b`: its own toolchain, else the newest one. Go 1.19's
/// addr2line answers `?` for every address of a Go 1.19 PIE (its debug/gosym trusts the
/// unrelocated text start in the table's header); Go 1.20+ read those builds correctly.
fn oracle_for<'a>(b: &'a Build, probe: &[u64]) -> Option<&'a Path> {
    let newest = builds()
        .iter()
        .max_by_key(|b| b.minor())
        .map(|n| n.go.as_path());
    [Some(b.go.as_path()), newest]
        .into_iter()
        .flatten()
        .find(|go| addr2line(go, &b.path, probe).iter().all(|(f, _)| f != "?"))
}

/// Every function entry plus `random` addresses inside random functions.
fn sample(table: &GoTable, data: &[u8], seed: u64, random: usize) -> Vec<u64> {
    let funcs: Vec<_> = table.functions(data).collect();
    let mut rng = Xorshift(seed);
    let mut addrs: Vec<u64> = funcs.iter().map(|f| f.entry).collect();
    for _ in 0..random {
        let f = &funcs[rng.below(funcs.len() as u64) as usize];
        addrs.push(f.entry + rng.below(f.end - f.entry));
    }
    addrs
}

/// The files under `BELLOWS_FIXTURES/<sub>` (built or fetched by `cargo xtask fixtures`),
/// sorted; None (after failing in CI) when there are none.
fn fixture_binaries(sub: &str) -> Option<Vec<PathBuf>> {
    let Some(root) = std::env::var_os("BELLOWS_FIXTURES") else {
        skip_or_fail("BELLOWS_FIXTURES unset (run `cargo xtask test`)");
        return None;
    };
    let dir = Path::new(&root).join(sub);
    let mut binaries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    binaries.sort();
    if binaries.is_empty() {
        skip_or_fail(&format!("no binaries in {}", dir.display()));
        return None;
    }
    Some(binaries)
}

/// A binary's bytes and Go table, which it must have.
fn open_path(path: &Path) -> (Vec<u8>, GoTable) {
    let what = path.display();
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{what}: {e}"));
    let table = GoTable::from_elf(&data)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .unwrap_or_else(|| panic!("{what}: no Go table"));
    (data, table)
}

/// A build's bytes and Go table (its path names the version and variant).
fn open(b: &Build) -> (Vec<u8>, GoTable) {
    open_path(&b.path)
}

#[test]
fn matches_go_tool_addr2line_on_every_build() {
    let Some(builds) = builds_or_skip() else {
        return;
    };
    let mut total = 0;
    let mut report = Vec::new();
    for b in builds {
        let (data, table) = open(b);
        let expected = if b.minor() >= 20 {
            GoTableVersion::V120
        } else {
            GoTableVersion::V118
        };
        assert_eq!(table.version(), expected, "{}", b.what());
        let addrs = sample(&table, &data, 0x5eed_1234_abcd_ef01, 3000);
        assert!(
            addrs.len() > 3500,
            "{}: {} addresses",
            b.what(),
            addrs.len()
        );
        let Some(go) = oracle_for(b, &addrs[..1]) else {
            skip_or_fail(&format!(
                "{}: no addr2line here reads this build (Go 1.20+ reads Go 1.19 PIEs)",
                b.what()
            ));
            continue;
        };
        let (compared, mismatches) = compare(go, &b.path, &table, &data, &addrs);
        assert!(
            mismatches.is_empty(),
            "{} (oracle {}): {} of {compared} addresses differ from go tool addr2line, e.g.:\n{}",
            b.what(),
            go.display(),
            mismatches.len(),
            mismatches[..mismatches.len().min(15)].join("\n")
        );
        total += compared;
        let by = go_version(go).unwrap_or_default();
        report.push(format!("{} {compared} (by {by})", b.what()));
    }
    eprintln!(
        "{total} addresses agree with go tool addr2line: {}",
        report.join(", ")
    );
}

/// Frames of the first address in `func` whose frames have exactly these function names.
fn find_frames(table: &GoTable, data: &[u8], func: &str, names: &[&str]) -> Option<Vec<Frame>> {
    let f = table.functions(data).find(|f| f.name == func)?;
    (f.entry..f.end).find_map(|pc| {
        let frames = table.symbolize(data, pc).frames().to_vec();
        let got: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        (got == names).then_some(frames)
    })
}

#[test]
fn inlined_frames_follow_the_program() {
    let Some(builds) = builds_or_skip() else {
        return;
    };
    for b in builds {
        let what = b.what();
        let (data, table) = open(b);
        let names: Vec<&str> = table.functions(&data).map(|f| f.name).collect();
        for name in [
            "main.hot",
            "main.(*counter).Add",
            "main.makeAdder",
            "main.makeAdder.func1",
            "main.main",
        ] {
            assert!(names.contains(&name), "{what}: no {name}");
        }
        // Generic: one shape instantiation per type set member, all named main.Sum[...].
        assert!(
            names.iter().filter(|n| n.starts_with("main.Sum[")).count() >= 2,
            "{what}: {:?}",
            names
                .iter()
                .filter(|n| n.contains("Sum"))
                .collect::<Vec<_>>()
        );
        // mix is not a function of its own anywhere: it is always inlined.
        assert!(!names.contains(&"main.mix"), "{what}");

        let line = |f: &Frame| f.line.unwrap_or(0);
        let main_go = |f: &Frame| {
            f.file
                .as_deref()
                .is_some_and(|p| p.ends_with("testdata/go/pclntest/main.go"))
        };
        // mix inlined into twice inlined into hot.
        let f = find_frames(
            &table,
            &data,
            "main.hot",
            &["main.mix", "main.twice", "main.hot"],
        )
        .unwrap_or_else(|| panic!("{what}: no mix<twice<hot frames"));
        assert!(f.iter().all(main_go), "{what}: {f:?}");
        assert!((19..=21).contains(&line(&f[0])), "{what}: {f:?}");
        assert_eq!(line(&f[1]), 26, "{what}: {f:?}");
        assert_eq!(line(&f[2]), 33, "{what}: {f:?}");
        assert_eq!(
            f.iter().map(|f| f.inlined).collect::<Vec<_>>(),
            [true, true, false]
        );
        // Start lines: the `func` keyword of each function in the source, from Go 1.20's
        // tables on (older tables do not record them).
        let want: Vec<Option<u32>> = ["func mix(", "func twice(", "func hot("]
            .iter()
            .map(|decl| (b.minor() >= 20).then(|| source_line(decl)))
            .collect();
        assert_eq!(
            f.iter().map(|f| f.start_line).collect::<Vec<_>>(),
            want,
            "{what}: {f:?}"
        );
        // The method on a pointer receiver and the closure, each with mix inlined.
        let f = find_frames(
            &table,
            &data,
            "main.(*counter).Add",
            &["main.mix", "main.(*counter).Add"],
        )
        .unwrap_or_else(|| panic!("{what}: no mix<Add frames"));
        assert_eq!(line(&f[1]), 44, "{what}: {f:?}");
        let f = find_frames(
            &table,
            &data,
            "main.makeAdder.func1",
            &["main.mix", "main.makeAdder.func1"],
        )
        .unwrap_or_else(|| panic!("{what}: no mix<closure frames"));
        assert_eq!(line(&f[1]), 64, "{what}: {f:?}");
        // The generic function's entry is on its declaration line (on amd64: s390x's prologue
        // is attributed to a later line).
        let sum = table
            .functions(&data)
            .find(|f| f.name.starts_with("main.Sum["))
            .unwrap();
        let f = table.symbolize(&data, sum.entry).frames().to_vec();
        assert_eq!(f.len(), 1, "{what}: {f:?}");
        assert!(main_go(&f[0]), "{what}: {f:?}");
        if !b.cross() {
            assert_eq!(line(&f[0]), 53, "{what}: {f:?}");
        }
    }
}

/// One frame as llvm-symbolizer reports it from DWARF: (function, file, line).
type DwarfFrame = (String, String, u32);

/// `llvm-symbolizer --inlining` on `binary`: every address's frames, innermost first.
fn llvm_frames(binary: &Path, addrs: &[u64]) -> Vec<Vec<DwarfFrame>> {
    // One JSON object per line when addresses come from standard input.
    let text = pipe_addresses(
        Command::new("llvm-symbolizer")
            .arg(format!("--obj={}", binary.display()))
            .args(["--inlining", "--output-style=JSON"]),
        addrs,
    );
    let answers: Vec<Vec<DwarfFrame>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("llvm-symbolizer JSON");
            v["Symbol"]
                .as_array()
                .expect("Symbol array")
                .iter()
                .map(|f| {
                    (
                        f["FunctionName"].as_str().unwrap_or("").to_string(),
                        f["FileName"].as_str().unwrap_or("").to_string(),
                        f["Line"].as_u64().unwrap_or(0) as u32,
                    )
                })
                .collect()
        })
        .collect();
    assert_eq!(answers.len(), addrs.len(), "llvm-symbolizer answer count");
    answers
}

/// `name` with every outermost `[…]` written `[...]`, as Go 1.18 and 1.19 tables name generic
/// instantiations and array types (`main.Sum[...]`) where DWARF spells them out.
fn elide_brackets(name: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '[' => {
                if depth == 0 {
                    out.push_str("[...]");
                }
                depth += 1;
            }
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whether our frames for one address agree with DWARF's, every frame: function, file and line.
/// Allowed, because the two encodings differ there rather than because either is wrong:
/// - DWARF names assembly functions with their ABI (`.abi0`) and writes `·` as `.`; Go 1.18
///   and 1.19 tables elide type arguments (`[...]`);
/// - where neither has a line, DWARF may still name a file (`go.go` for linker markers);
/// - llvm-symbolizer prefixes `./` to `<autogenerated>`, and where DWARF has no line for a
///   compiler-generated wrapper the Go table says `<autogenerated>:1`;
/// - a compiler-generated wrapper with a method inlined into it is one DWARF frame at the
///   method's line, and two Go table frames (the method, inlined into the wrapper);
/// - bytes after a function's last instruction (alignment padding) belong to it in the Go
///   table, without a line, and to no DWARF function;
/// - call sites in package initialisers: DWARF keeps the source line of the variable being
///   initialised, the Go table says `<autogenerated>:1`.
fn agrees_with_dwarf(ours: &[Frame], dwarf: &[DwarfFrame]) -> bool {
    let autogenerated = |f: &Frame| f.file.as_deref() == Some("<autogenerated>");
    let same_name = |ours: &str, dwarf: &str| {
        let dwarf = dwarf.strip_suffix(".abi0").unwrap_or(dwarf);
        let ours = ours.replace('·', ".");
        ours == dwarf || ours.contains("[...]") && ours == elide_brackets(dwarf)
    };
    let same_place = |f: &Frame, file: &str, line: u32| {
        if line == 0 {
            return f.line.is_none();
        }
        f.file.as_deref() == Some(file.trim_start_matches("./")) && f.line == Some(line)
    };
    if dwarf.iter().all(|d| d.0.is_empty() || d.0 == "??") {
        return ours.first().is_some_and(|f| f.line.is_none());
    }
    if let ([inner, wrapper], [(name, file, line)]) = (ours, dwarf) {
        if autogenerated(wrapper) && same_name(&wrapper.function, name) {
            return same_place(inner, file, *line);
        }
    }
    ours.len() == dwarf.len()
        && ours.iter().zip(dwarf).all(|(f, (name, file, line))| {
            same_name(&f.function, name)
                && (same_place(f, file, *line)
                    || autogenerated(f) && (*line == 0 || f.function.ends_with(".init")))
        })
}

/// Frames of `addrs` compared with llvm-symbolizer's: (mismatch descriptions, addresses with
/// inlined frames).
fn compare_with_dwarf(
    path: &Path,
    table: &GoTable,
    data: &[u8],
    addrs: &[u64],
) -> (Vec<String>, usize) {
    let dwarf = llvm_frames(path, addrs);
    let mut mismatches = Vec::new();
    let mut inlined = 0;
    for (addr, d) in addrs.iter().zip(&dwarf) {
        let ours = table.symbolize(data, *addr);
        let frames = ours.frames();
        inlined += usize::from(frames.len() > 1);
        if !agrees_with_dwarf(frames, d) {
            mismatches.push(format!("{addr:#x}: DWARF {d:?}\n    ours {frames:?}"));
        }
    }
    (mismatches, inlined)
}

fn llvm_symbolizer_or_skip() -> bool {
    Command::new("llvm-symbolizer")
        .arg("--version")
        .output()
        .is_ok()
        || skip_or_fail("no llvm-symbolizer (package llvm)")
}

/// Asserts that DWARF and the Go table agree on at least 999 of 1000 addresses (a handful
/// would be encoding noise not yet understood; anything systematic, such as lost inlined
/// frames or wrong lines, is far above it) and that inlined code was sampled.
fn assert_agrees(what: &str, addrs: usize, mismatches: &[String], inlined: usize) -> String {
    assert!(
        mismatches.len() * 1000 <= addrs,
        "{what}: {} of {addrs} addresses differ from llvm-symbolizer, e.g.:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    assert!(
        inlined * 20 >= addrs,
        "{what}: only {inlined} of {addrs} addresses in inlined code"
    );
    format!(
        "{what} {}/{addrs} ({inlined} inlined)",
        addrs - mismatches.len()
    )
}

/// Inlined frames, checked frame by frame against a second, independent encoding of them: the
/// default builds keep the Go linker's DWARF, which `llvm-symbolizer --inlining` reads.
#[test]
fn inline_chains_match_llvm_symbolizer_on_dwarf() {
    let Some(builds) = builds_or_skip() else {
        return;
    };
    if !llvm_symbolizer_or_skip() {
        return;
    }
    let mut report = Vec::new();
    for b in builds.iter().filter(|b| b.variant == "default") {
        let (data, table) = open(b);
        let addrs = sample(&table, &data, 0xd3a7_f00d_0bad_cafe, 3000);
        let (mismatches, inlined) = compare_with_dwarf(&b.path, &table, &data, &addrs);
        report.push(assert_agrees(&b.what(), addrs.len(), &mismatches, inlined));
    }
    eprintln!(
        "frames agree with llvm-symbolizer's DWARF: {}",
        report.join(", ")
    );
}

/// The same on a large real program: the newest Go's own compiler, built with DWARF by `cargo
/// xtask fixtures` into `BELLOWS_FIXTURES/go-large/`. Its inline trees name generic shapes
/// (`go.shape.struct { … }`), which a small program's sampled trees may not.
#[test]
fn inline_chains_of_a_large_program_match_llvm_symbolizer() {
    let Some(binaries) = fixture_binaries("go-large") else {
        return;
    };
    if !llvm_symbolizer_or_skip() {
        return;
    }
    for path in &binaries {
        let what = path.display().to_string();
        let (data, table) = open_path(path);
        let mut addrs = sample(&table, &data, 0x1a26_e000_5eed_0001, 6000);
        // The random addresses, and every 50th entry.
        let n = table.functions(&data).count();
        let random = addrs.split_off(n);
        addrs = addrs.into_iter().step_by(50).chain(random).collect();
        let (mismatches, inlined) = compare_with_dwarf(path, &table, &data, &addrs);
        let shapes = addrs
            .iter()
            .filter(|&&a| {
                table
                    .symbolize(&data, a)
                    .frames()
                    .iter()
                    .any(|f| f.inlined && f.function.contains("go.shape.struct {"))
            })
            .count();
        assert!(shapes > 0, "{what}: no inlined generic shape frames");
        eprintln!(
            "frames agree with llvm-symbolizer's DWARF: {}; {shapes} in inlined generic shapes",
            assert_agrees(&what, addrs.len(), &mismatches, inlined)
        );
    }
}

#[test]
fn misses_outside_functions() {
    let Some(builds) = builds_or_skip() else {
        return;
    };
    for b in builds {
        let (data, table) = open(b);
        let funcs: Vec<_> = table.functions(&data).collect();
        let (first, last) = (funcs[0].entry, funcs[funcs.len() - 1].end);
        for va in [0, first - 1, last, last + 0x1000, u64::MAX] {
            assert_eq!(
                table.symbolize(&data, va),
                Symbolized::Unknown(Reason::NoFunction),
                "{} {va:#x}",
                b.what()
            );
        }
    }
}

#[test]
fn build_info_names_the_toolchain() {
    let Some(builds) = builds_or_skip() else {
        return;
    };
    for b in builds {
        let data = std::fs::read(&b.path).unwrap();
        assert_eq!(
            build_info_version(&data).as_deref(),
            Some(b.version.as_str()),
            "{}",
            b.what()
        );
    }
    assert_eq!(build_info_version(b"not an elf"), None);
}

/// The same binary with its section headers removed (as packers do): the table is found by
/// scanning the loadable segments and answers exactly as before.
#[test]
fn tables_without_section_headers() {
    let Some(builds) = builds_or_skip() else {
        return;
    };
    for b in builds.iter().filter(|b| b.variant != "default") {
        let (data, table) = open(b);
        let mut bare = data.clone();
        // e_shoff, e_shnum, e_shstrndx of an ELF64 header.
        bare[40..48].fill(0);
        bare[60..64].fill(0);
        let found = GoTable::from_elf(&bare)
            .unwrap_or_else(|e| panic!("{}: {e}", b.what()))
            .unwrap_or_else(|| panic!("{}: not found without section headers", b.what()));
        assert_eq!(found.version(), table.version());
        assert_eq!(found.text_start(), table.text_start(), "{}", b.what());
        for va in sample(&table, &data, 7, 2000) {
            assert_eq!(
                found.symbolize(&bare, va),
                table.symbolize(&data, va),
                "{} {va:#x}",
                b.what()
            );
        }
    }
}

/// Damaged tables never panic: random byte flips inside a real file.
#[test]
fn damaged_tables_never_panic() {
    let Some(builds) = builds_or_skip() else {
        return;
    };
    for b in builds.iter().filter(|b| b.variant != "default") {
        let (original, table) = open(b);
        let funcs: Vec<(u64, u64)> = table
            .functions(&original)
            .map(|f| (f.entry, f.end))
            .collect();
        let mut rng = Xorshift(42);
        for _ in 0..60 {
            let mut data = original.clone();
            for _ in 0..200 {
                let i = rng.below(data.len() as u64) as usize;
                data[i] = rng.next() as u8;
            }
            if let Ok(Some(t)) = GoTable::from_elf(&data) {
                for _ in 0..200 {
                    let (s, e) = funcs[rng.below(funcs.len() as u64) as usize];
                    let _ = t.symbolize(&data, s + rng.below(e - s));
                }
                let _ = t.functions(&data).take(1000).count();
            }
        }
    }
}

/// Real Go binaries built long ago with Go 1.14–1.17 (esbuild's npm packages, and a PIE from
/// Debian 11's archive, fetched by `cargo xtask fixtures` into `BELLOWS_FIXTURES/go-real/`),
/// against Go 1.19's addr2line, which reads every older layout; for the PIE, whose text Go
/// 1.19's debug/gosym misplaces, the newest toolchain's.
#[test]
fn old_tables_of_real_binaries_match_go_tool_addr2line() {
    let Some(binaries) = fixture_binaries("go-real") else {
        return;
    };
    let tc = toolchains();
    let Some(go) = tc.get("go1.19.8").or_else(|| tc.values().next()) else {
        skip_or_fail("no Go toolchain");
        return;
    };
    let newest = tc
        .iter()
        .max_by_key(|(v, _)| go_minor(v))
        .map(|(_, go)| go.as_path())
        .unwrap_or(go);
    let mut pies = 0;
    let mut versions = std::collections::BTreeSet::new();
    let mut total = 0;
    for path in &binaries {
        let what = path.display().to_string();
        let (data, table) = open_path(path);
        versions.insert(format!("{:?}", table.version()));
        let mut addrs = sample(&table, &data, 0xfeed_beef_1234_5678, 3000);
        // Every seventh entry is plenty next to the random addresses.
        let n = table.functions(&data).count();
        let random = addrs.split_off(n);
        addrs = addrs.into_iter().step_by(7).chain(random).collect();
        let pie = data.get(16..18) == Some(&[3, 0][..]); // e_type ET_DYN
        pies += usize::from(pie);
        let oracle = if pie { newest } else { go };
        let (compared, mismatches) = compare(oracle, path, &table, &data, &addrs);
        assert!(
            mismatches.is_empty(),
            "{what}: {} of {compared} differ:\n{}",
            mismatches.len(),
            mismatches[..mismatches.len().min(12)].join("\n")
        );
        let inlined = addrs
            .iter()
            .filter(|&&a| table.symbolize(&data, a).frames().len() > 1)
            .count();
        assert!(inlined > 0, "{what}: no inlined frames found");
        total += compared;
    }
    assert!(
        versions.contains("V12") && versions.contains("V116"),
        "expected Go 1.2 and 1.16 layouts, got {versions:?}"
    );
    assert!(pies > 0, "no PIE among {binaries:?}");
    eprintln!(
        "{total} addresses of {} old binaries agree with go tool addr2line",
        binaries.len()
    );
}
