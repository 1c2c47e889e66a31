//! `cargo xtask fuzz`: the symbolizer's fuzz targets (cargo-fuzz, libFuzzer, nightly), seeded
//! with inputs of a few KiB made here, so that each target runs thousands of inputs a second:
//! - Go tables written by `symbolizer::gopclntab::write`: synthetic ones of every layout and
//!   placement, and real ones cut from the Go fixtures to a few functions (each checked to
//!   answer like the binary it was cut from);
//! - ELF files built with gcc from the freestanding C fixture (symbols, DWARF 4 and 5,
//!   compressed DWARF, a build id, 32-bit, MiniDebugInfo) and unwind sections kept alone with
//!   `objcopy --only-section`;
//! - the committed seeds under `symbolizer/fuzz/seeds/`.
//!
//! `--whole-binaries` adds the fixture binaries themselves and the input sizes they need: far
//! slower (a whole Go binary runs ~100 inputs a second), for the occasional long run.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};
use symbolizer::gopclntab::{
    build_info_version,
    write::{self, GoImage, Machine, Placement, Table},
    GoTable, GoTableVersion,
};

use crate::run;

/// One fuzz target: its seeds and the largest input it is given.
struct Target {
    name: &'static str,
    /// (file name, contents).
    seeds: Vec<(String, Vec<u8>)>,
    max_len: usize,
}

/// Builds the native fixtures (the DWARF fixture in three builds).
pub fn native_fixtures(root: &Path) -> Result<Vec<PathBuf>> {
    let src = root.join("symbolizer/testdata/native/inline.c");
    let dir = root.join("target/fixtures/native");
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for (name, flags) in [
        ("dwarf", &["-O2", "-g"][..]),
        ("zdwarf", &["-O2", "-g", "-gz=zlib"]),
        ("nodwarf", &["-O2"]),
    ] {
        let bin = dir.join(name);
        if !bin.is_file() {
            run(Command::new("gcc")
                .args(flags)
                .arg("-o")
                .arg(&bin)
                .arg(&src))?;
        }
        out.push(bin);
    }
    Ok(out)
}

/// How long each target runs.
#[derive(Clone, Copy)]
pub enum Limit {
    Seconds(u64),
    /// Executions, however long they take.
    Runs(u64),
}

impl Limit {
    fn flag(self) -> String {
        match self {
            Limit::Seconds(s) => format!("-max_total_time={s}"),
            Limit::Runs(n) => format!("-runs={n}"),
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Seconds(s) => write!(f, "{s} s"),
            Limit::Runs(n) => write!(f, "{n} runs"),
        }
    }
}

pub fn fuzz(root: &Path, limit: Limit, only: &[String], whole_binaries: bool) -> Result<()> {
    native_fixtures(root)?;
    let work = root.join("target/fuzz-seeds/build");
    std::fs::create_dir_all(&work)?;
    let mut targets = targets(root, &work)?;
    if whole_binaries {
        add_whole_binaries(root, &mut targets)?;
    }
    let crate_dir = root.join("symbolizer");
    for target in targets {
        if !only.is_empty() && !only.iter().any(|t| t == target.name) {
            continue;
        }
        // Seeds are written afresh; the corpus keeps what libFuzzer found, less what no longer
        // fits (inputs grown from the whole binaries that were the seeds before).
        let seeds = root.join("target/fuzz-seeds").join(target.name);
        if seeds.exists() {
            std::fs::remove_dir_all(&seeds)?;
        }
        std::fs::create_dir_all(&seeds)?;
        for (name, bytes) in &target.seeds {
            ensure!(
                bytes.len() <= target.max_len,
                "seed {name} of {} is {} bytes, over the target's {}",
                target.name,
                bytes.len(),
                target.max_len
            );
            std::fs::write(seeds.join(name), bytes)?;
        }
        // Inputs grown from whole binaries stay in a corpus of their own.
        let corpus_name = if whole_binaries {
            format!("{}-whole", target.name)
        } else {
            target.name.to_string()
        };
        let corpus = root.join("target/fuzz-corpus").join(corpus_name);
        std::fs::create_dir_all(&corpus)?;
        let pruned = prune(&corpus, target.max_len)?;
        if pruned > 0 {
            eprintln!(
                "{}: removed {pruned} corpus inputs over {} bytes",
                target.name, target.max_len
            );
        }
        eprintln!(
            "\n=== fuzz {} for {limit} ({} seeds)",
            target.name,
            target.seeds.len()
        );
        run(Command::new("cargo")
            .current_dir(&crate_dir)
            .args(["+nightly", "fuzz", "run", target.name])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(limit.flag())
            .arg(format!("-max_len={}", target.max_len))
            .arg("-rss_limit_mb=4096")
            .arg("-print_final_stats=1"))
        .with_context(|| {
            format!(
                "fuzz target {} failed (crash input under symbolizer/fuzz/artifacts/{})",
                target.name, target.name
            )
        })?;
    }
    Ok(())
}

/// Removes the files of `dir` larger than `max_len`; returns how many.
fn prune(dir: &Path, max_len: usize) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.metadata()?.len() > max_len as u64 {
            std::fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// The default seeds of every target.
fn targets(root: &Path, work: &Path) -> Result<Vec<Target>> {
    let (go, tables) = go_seeds(root)?;
    let committed = |dir: &str| -> Result<Vec<(String, Vec<u8>)>> {
        let dir = root.join("symbolizer/fuzz/seeds").join(dir);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if matches!(path.extension().and_then(|e| e.to_str()), Some("md" | "c")) {
                continue;
            }
            out.push((name.to_string(), std::fs::read(&path)?));
        }
        out.sort();
        Ok(out)
    };
    let elf_native = elf_seeds(root, work)?;
    let unwind_native = unwind_seeds(root, work)?;

    // The ELF resolver reads Go tables too: the synthetic images with symbols and build info,
    // and one real excerpt per layout.
    let go_for_elf = go
        .iter()
        .filter(|(name, _)| {
            ["symbols", "external-link", "pie", "-main."]
                .iter()
                .any(|k| name.contains(k))
        })
        .cloned();
    // Unwind tables are read for x86-64 only: its Go tables, with their machine code.
    let go_for_unwind = go
        .iter()
        .filter(|(name, _)| !name.contains("s390x") && !name.contains("arm64"))
        .cloned();
    Ok(vec![
        Target {
            name: "gopclntab",
            seeds: go.clone(),
            max_len: 16 << 10,
        },
        Target {
            name: "gopclntab_table",
            seeds: tables,
            max_len: 8 << 10,
        },
        Target {
            name: "elf",
            seeds: elf_native.into_iter().chain(go_for_elf).collect(),
            max_len: 32 << 10,
        },
        Target {
            name: "unwind",
            seeds: committed("unwind")?
                .into_iter()
                .chain(unwind_native)
                .chain(go_for_unwind)
                .collect(),
            max_len: 16 << 10,
        },
        Target {
            name: "text",
            seeds: committed("text")?,
            max_len: 8 << 10,
        },
    ])
}

/// `--whole-binaries`: the fixture binaries that were once the only seeds, and room for them.
fn add_whole_binaries(root: &Path, targets: &mut [Target]) -> Result<()> {
    let fixtures = root.join("target/fixtures");
    let go = fixtures.join("go/go1.19.8/stripped/cpuburn");
    for t in targets {
        let (files, max_len) = match t.name {
            "gopclntab" => (
                vec![
                    go.clone(),
                    fixtures.join("go-real/esbuild-0.7.22"),
                    fixtures.join("go-real/esbuild-0.13.15"),
                ],
                16 << 20,
            ),
            "elf" => (
                ["dwarf", "zdwarf", "nodwarf"]
                    .map(|n| fixtures.join("native").join(n))
                    .to_vec(),
                1 << 20,
            ),
            "unwind" => (vec![fixtures.join("native/nodwarf"), go.clone()], 2 << 20),
            _ => continue,
        };
        for f in files {
            let bytes = read_fixture(&f)?;
            t.seeds.push((f.to_string_lossy().replace('/', "_"), bytes));
        }
        t.max_len = max_len;
    }
    Ok(())
}

fn read_fixture(path: &Path) -> Result<Vec<u8>> {
    ensure!(
        path.is_file(),
        "missing fixture {}: run `cargo xtask fixtures`",
        path.display()
    );
    std::fs::read(path).with_context(|| path.display().to_string())
}

/// Go seeds: ELF images of synthetic tables of every version and placement, and of real ones
/// cut from the fixtures; and the same tables alone, for `gopclntab_table`.
#[allow(clippy::type_complexity)] // two lists of named seeds
fn go_seeds(root: &Path) -> Result<(Vec<(String, Vec<u8>)>, Vec<(String, Vec<u8>)>)> {
    use GoTableVersion::*;
    let mut out = Vec::new();
    let mut tables = Vec::new();
    let mut add = |name: String, table: &Table, opts: &GoImage| {
        out.push((format!("{name}.elf"), write::go_image(table, opts)));
    };
    for (name, v) in [
        ("go1.2", V12),
        ("go1.16", V116),
        ("go1.18", V118),
        ("go1.20", V120),
    ] {
        let table = write::synthetic(v, 1);
        add(format!("synthetic-{name}"), &table, &GoImage::new(v));
        tables.push((format!("synthetic-{name}"), write::table_input(&table)));
    }
    let t120 = write::synthetic(V120, 1);
    let mut go126 = GoImage::new(V120);
    go126.text_in_header = false;
    go126.go_version = Some("go1.26.6".into());
    add("synthetic-go1.26".into(), &t120, &go126);
    go126.gofunc_word = 43;
    go126.go_version = Some("go1.27.3".into());
    add("synthetic-go1.27".into(), &t120, &go126);
    for (name, placement) in [
        ("symbols", Placement::Section),
        ("no-section-headers", Placement::NoSectionHeaders),
        ("external-link", Placement::ExternalLink),
        ("pie", Placement::Pie),
    ] {
        let mut o = GoImage::new(V120);
        o.placement = placement;
        o.symbols = true;
        o.go_version = Some("go1.22.10".into());
        add(format!("synthetic-go1.20-{name}"), &t120, &o);
    }
    let mut old = GoImage::new(V116);
    old.symbols = true;
    old.go_version = Some("go1.16.15".into());
    add(
        "synthetic-go1.16-symbols".into(),
        &write::synthetic(V116, 1),
        &old,
    );
    let mut s390x = GoImage::new(V120);
    s390x.machine = Machine::S390x;
    add(
        "synthetic-go1.20-s390x".into(),
        &write::synthetic(V120, 2),
        &s390x,
    );
    let mut arm64 = GoImage::new(V118);
    arm64.machine = Machine::Aarch64;
    add(
        "synthetic-go1.18-arm64".into(),
        &write::synthetic(V118, 4),
        &arm64,
    );

    for fixture in [
        "go/go1.19.8/stripped/cpuburn",
        "go/go1.22.10/stripped/cpuburn",
        "go/go1.26.6/stripped/cpuburn",
        "go/go1.27.3/stripped/cpuburn",
        "go-real/esbuild-0.13.15",
        "go-real/esbuild-0.11.23",
        "go-real/esbuild-0.7.22",
    ] {
        for (name, cut, image) in excerpts(&root.join("target/fixtures").join(fixture))? {
            tables.push((name.clone(), write::table_input(&cut)));
            out.push((format!("{name}.elf"), image));
        }
    }
    Ok((out, tables))
}

/// Functions an excerpt keeps at most, the most machine code it copies, and the largest
/// function it starts at: every lookup walks a function's pc-value tables from their start, so
/// large functions make slow inputs.
const EXCERPT_FUNCS: usize = 6;
const EXCERPT_CODE: u64 = 2048;
const EXCERPT_FIRST: u64 = 1200;

/// Small tables cut from a Go binary: from the first small function of package main, from
/// `runtime.goexit` (a top frame, in assembly), and from the first small function with inlined
/// calls; each written in the binary's own layout and checked to answer like the binary at
/// every address it keeps.
fn excerpts(path: &Path) -> Result<Vec<(String, Table, Vec<u8>)>> {
    let data = read_fixture(path)?;
    let table = GoTable::from_elf(&data)
        .with_context(|| path.display().to_string())?
        .with_context(|| format!("{}: no Go table", path.display()))?;
    let go = build_info_version(&data);
    let minor = go
        .as_deref()
        .and_then(|v| v.strip_prefix("go1."))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    // The Go release's directory for the workloads, the file's name for the real binaries.
    let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let label = match file_name(path) {
        Some(n) if n == "cpuburn" => path.parent().and_then(Path::parent).and_then(file_name),
        n => n,
    }
    .unwrap_or_default();
    let funcs: Vec<_> = table.functions(&data).collect();
    let small = |f: &symbolizer::gopclntab::GoFunc<'_>| f.end - f.entry <= EXCERPT_FIRST;
    let main = funcs
        .iter()
        .position(|f| f.name == "main.main" && small(f))
        .or_else(|| {
            funcs
                .iter()
                .position(|f| f.name.starts_with("main.") && small(f))
        });
    let goexit = funcs.iter().position(|f| f.name == "runtime.goexit");
    let inlined = funcs.iter().take(4000).position(|f| {
        f.end - f.entry <= 512
            && (f.entry..f.end).any(|pc| table.symbolize(&data, pc).frames().len() > 1)
    });
    let mut out = Vec::new();
    for (what, first) in [("main", main), ("goexit", goexit), ("inlined", inlined)] {
        let Some(first) = first else {
            continue;
        };
        // As many functions as fit the code budget, at least one.
        let mut count = 1;
        while count < EXCERPT_FUNCS
            && funcs
                .get(first + count)
                .is_some_and(|f| f.end - funcs[first].entry <= EXCERPT_CODE)
        {
            count += 1;
        }
        let cut = table
            .excerpt(&data, first, count)
            .with_context(|| format!("{}: functions {first}+{count}", path.display()))?;
        let end = cut.entries().last().copied().unwrap_or(cut.text);
        let mut opts = GoImage::new(cut.version);
        opts.table_va = end.next_multiple_of(0x1000) + 0x1000;
        opts.text_in_header = minor.is_none_or(|m| m < 26);
        if minor.is_some_and(|m| m >= 27) {
            opts.gofunc_word = 43;
        }
        opts.go_version = go.clone();
        let image = write::go_image(&cut, &opts);
        let mine = GoTable::from_elf(&image)?.context("excerpt has no Go table")?;
        if let Some((pc, want, got)) = table.first_difference(&data, &mine, &image, cut.text, end) {
            bail!(
                "{}: the excerpt from {} answers {got:?} at {pc:#x}, the binary {want:?}",
                path.display(),
                funcs[first].name
            );
        }
        out.push((format!("real-{label}-{what}"), cut, image));
    }
    Ok(out)
}

/// Builds `src` with `compiler` (gcc or g++) and `flags` into `out`.
fn cc(compiler: &str, src: &Path, flags: &[&str], out: &Path) -> Result<()> {
    run(Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(src))
}

fn objcopy(args: &[&str], input: &Path, output: &Path) -> Result<()> {
    run(Command::new("objcopy").args(args).arg(input).arg(output))
}

/// Small ELF files from the freestanding C fixture: symbols only, DWARF 5 and 4, zlib- and
/// zstd-compressed DWARF, a build id, a 32-bit build, and MiniDebugInfo.
fn elf_seeds(root: &Path, work: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let src = root.join("symbolizer/testdata/native/freestanding.c");
    let base = [
        "-Os",
        "-nostdlib",
        "-static",
        "-Wl,-n",
        "-Wl,--no-warn-rwx-segments",
    ];
    let no_id = "-Wl,--build-id=none";
    let p = |name: &str| work.join(name);
    let builds: [(&str, &[&str]); 5] = [
        ("symbols.elf", &[no_id]),
        ("dwarf5.elf", &[no_id, "-g"]),
        ("dwarf4.elf", &[no_id, "-g", "-gdwarf-4"]),
        ("build-id.elf", &["-Wl,--build-id=sha1", "-g"]),
        ("m32.elf", &[no_id, "-g", "-m32"]),
    ];
    let mut names = Vec::new();
    for (name, flags) in builds {
        let raw = p(&format!("{name}.raw"));
        let flags: Vec<&str> = base.iter().chain(flags).copied().collect();
        cc("gcc", &src, &flags, &raw)?;
        objcopy(&["--remove-section=.comment"], &raw, &p(name))?;
        names.push(name.to_string());
    }
    for (name, how) in [("zlib.elf", "zlib"), ("zstd.elf", "zstd")] {
        objcopy(
            &[&format!("--compress-debug-sections={how}")],
            &p("dwarf5.elf"),
            &p(name),
        )?;
        names.push(name.to_string());
    }
    // MiniDebugInfo: the symbols, xz-compressed, in `.gnu_debugdata` of a stripped file.
    objcopy(&["--only-keep-debug"], &p("symbols.elf"), &p("mini.debug"))?;
    let xz = std::fs::File::create(p("mini.debug.xz"))?;
    run(Command::new("xz")
        .args(["-c", "--check=crc64"])
        .arg(p("mini.debug"))
        .stdout(xz))?;
    objcopy(&["--strip-all"], &p("symbols.elf"), &p("stripped.elf"))?;
    let section = format!(".gnu_debugdata={}", p("mini.debug.xz").display());
    objcopy(
        &["--add-section", &section],
        &p("stripped.elf"),
        &p("minidebuginfo.elf"),
    )?;
    names.push("minidebuginfo.elf".into());
    names
        .into_iter()
        .map(|n| Ok((n.clone(), std::fs::read(p(&n))?)))
        .collect()
}

/// Unwind sections alone, from real builds: `.eh_frame` of the libc-linked native fixture and
/// of a C++ program with exceptions (personality routines, LSDAs), `.debug_frame` of a C build
/// without unwind tables.
fn unwind_seeds(root: &Path, work: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let testdata = root.join("symbolizer/testdata/unwind");
    let p = |name: &str| work.join(name);
    cc("g++", &testdata.join("throw.cpp"), &["-O2"], &p("throw"))?;
    cc(
        "gcc",
        &testdata.join("frames.c"),
        &["-O2", "-g", "-fno-asynchronous-unwind-tables"],
        &p("frames"),
    )?;
    let nodwarf = root.join("target/fixtures/native/nodwarf");
    let mut out = Vec::new();
    for (name, input, section) in [
        ("libc-eh_frame.elf", nodwarf.as_path(), ".eh_frame"),
        ("cxx-eh_frame.elf", &p("throw"), ".eh_frame"),
        ("c-debug_frame.elf", &p("frames"), ".debug_frame"),
    ] {
        // objcopy warns about the segments it empties; that is the point.
        let status = Command::new("objcopy")
            .arg(format!("--only-section={section}"))
            .arg(input)
            .arg(p(name))
            .stderr(std::process::Stdio::null())
            .status()?;
        ensure!(
            status.success(),
            "objcopy --only-section={section} {}",
            input.display()
        );
        out.push((name.to_string(), std::fs::read(p(name))?));
    }
    Ok(out)
}
