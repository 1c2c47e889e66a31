//! Outputs checked against independent readers: `go tool pprof` reads our pprof files, and the
//! flame graph is checked for well-formed XML.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent::output::{flamegraph_svg, folded, top, write_pprof};
use agent::profile::{Location, Mapping, Recording, Sample};
use symbolizer::Frame;

fn frame(function: &str, file: Option<&str>, line: Option<u32>, inlined: bool) -> Frame {
    Frame {
        function: function.into(),
        file: file.map(Into::into),
        line,
        inlined,
        start_line: None,
    }
}

fn user(address: u64, mapping: &Arc<Mapping>, frames: Vec<Frame>) -> Arc<Location> {
    Arc::new(Location {
        address,
        mapping: Some(Arc::clone(mapping)),
        frames,
        kernel: false,
    })
}

fn kernel(address: u64, function: &str) -> Arc<Location> {
    Arc::new(Location {
        address,
        mapping: None,
        frames: vec![frame(function, None, None, false)],
        kernel: true,
    })
}

fn sample(stack: &[&Arc<Location>], count: u64, pid: u32, comm: &str) -> Sample {
    Sample {
        stack: stack.iter().map(|l| Arc::clone(l)).collect(),
        count,
        pid,
        tid: pid,
        comm: comm.into(),
    }
}

/// 20 samples at 100 Hz:
/// - 8 in `main.compute` inlined into `main.work` (pid 4242, comm `worker`);
/// - 6 in `main.work` → `main.fib` → `main.fib` → `main.fib` (recursion);
/// - 4 in the kernel under `main.work` (`do_syscall_64` ← `entry_SYSCALL_64_after_hwframe`);
/// - 2 in an unsymbolized address of a vDSO-like mapping (pid 7, comm `helper`).
fn recording() -> Recording {
    let exe = Arc::new(Mapping {
        start: 0x40_0000,
        limit: 0x60_0000,
        offset: 0,
        file: "/app/worker".into(),
        build_id: Some("0123456789abcdef0123456789abcdef01234567".into()),
    });
    // pprof skips local symbolization of mappings named `[...]`, so this unsymbolized frame
    // does not make pprof look for a binary that does not exist on this machine.
    let vdso = Arc::new(Mapping {
        start: 0x7fff_f7fc_1000,
        limit: 0x7fff_f7fc_3000,
        offset: 0,
        file: "[vdso]".into(),
        build_id: None,
    });
    let go = |f: &str, line| frame(f, Some("/app/main.go"), Some(line), false);
    let main = user(0x40_1000, &exe, vec![go("main.main", 12)]);
    let compute = user(
        0x40_2000,
        &exe,
        vec![
            frame("main.compute", Some("/app/compute.go"), Some(7), true),
            go("main.work", 30),
        ],
    );
    let work = user(0x40_2100, &exe, vec![go("main.work", 33)]);
    let fib_a = user(0x40_3000, &exe, vec![go("main.fib", 50)]);
    let fib_b = user(0x40_3010, &exe, vec![go("main.fib", 52)]);
    let sys = kernel(0xffff_ffff_8100_1000, "do_syscall_64");
    let entry = kernel(0xffff_ffff_8100_2000, "entry_SYSCALL_64_after_hwframe");
    let unsym = user(0x7fff_f7fc_1a00, &vdso, vec![]);
    Recording {
        frequency_hz: 100,
        start: SystemTime::now(),
        duration: Duration::from_secs(10),
        samples: vec![
            sample(&[&compute, &main], 5, 4242, "worker"),
            sample(&[&fib_a, &fib_b, &fib_b, &work, &main], 6, 4242, "worker"),
            sample(&[&sys, &entry, &work, &main], 4, 4242, "worker"),
            sample(&[&compute, &main], 3, 4242, "worker"),
            sample(&[&unsym, &main], 2, 7, "helper"),
        ],
    }
}

/// Runs `go tool pprof ARGS FILE` (`$GO` overrides the `go` binary), or returns None (after
/// saying why) when Go is missing and `CI` is not `true`.
fn pprof(args: &[&str], file: &Path, home: &Path) -> Option<Output> {
    let go = std::env::var_os("GO").unwrap_or_else(|| "go".into());
    let mut cmd = Command::new(&go);
    cmd.arg("tool")
        .arg("pprof")
        .args(args)
        .arg(file)
        .env("HOME", home)
        .env("GOCACHE", home.join("gocache"))
        .env("PPROF_TMPDIR", home)
        .env_remove("PPROF_BINARY_PATH");
    match cmd.output() {
        Ok(out) => Some(out),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("go tool pprof is needed in CI: cannot run {go:?}: {e}")
        }
        Err(e) => {
            eprintln!("skipping the go tool pprof oracle: cannot run {go:?}: {e}");
            None
        }
    }
}

/// Asserts exit 0 and a clean stderr, and returns stdout.
fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what}: {}\n{stderr}", out.status);
    let lower = stderr.to_lowercase();
    for bad in [
        "warn",
        "error",
        "fail",
        "invalid",
        "malformed",
        "not available",
        "unrecognized",
    ] {
        assert!(
            !lower.contains(bad),
            "{what}: stderr says {bad:?}:\n{stderr}"
        );
    }
    println!("--- {what}\n{stdout}{stderr}");
    stdout
}

/// The function of a `pprof -top` row (pprof marks inlined functions `(inline)`), and its flat%.
fn top_row(line: &str) -> Option<(String, f64)> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    let pct = cols.get(1)?.strip_suffix('%')?.parse().ok()?;
    let name = cols.get(5..)?.join(" ");
    let name = name.strip_suffix(" (inline)").unwrap_or(&name).to_owned();
    Some((name, pct))
}

/// The flat% pprof prints in the `-top` row of `function`.
fn flat_pct(top: &str, function: &str) -> f64 {
    top.lines()
        .filter_map(top_row)
        .find(|(name, _)| name == function)
        .unwrap_or_else(|| panic!("no -top row for {function}:\n{top}"))
        .1
}

#[test]
fn go_tool_pprof_reads_our_profile() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cpu.pb.gz");
    let rec = recording();
    write_pprof(&file, &rec).unwrap();

    let Some(out) = pprof(&["-top", "-nodecount=50"], &file, dir.path()) else {
        return;
    };
    let top_out = ok(out, "pprof -top");
    assert!(top_out.contains("Type: cpu"), "{top_out}");
    assert!(top_out.contains("Duration: 10s"), "{top_out}");
    // 20 samples × 10 ms.
    assert!(top_out.contains("200ms total"), "{top_out}");
    for (function, pct) in [
        ("main.compute", 40.0),
        ("main.fib", 30.0),
        ("do_syscall_64", 20.0),
        ("main.work", 0.0),
        ("main.main", 0.0),
    ] {
        let got = flat_pct(&top_out, function);
        assert!(
            (got - pct).abs() < 0.01,
            "{function}: flat {got}% want {pct}%"
        );
    }
    // Our own table agrees with pprof's flat percentages, row for row.
    let theirs: Vec<(String, f64)> = top_out.lines().filter_map(top_row).collect();
    let ours = top(&rec, 50);
    assert_eq!(theirs.len(), ours.len(), "{top_out}\n{ours:?}");
    for row in &ours {
        let name = match row.function.as_str() {
            "[vdso]+0xa00" => "[[vdso]]",
            f => f.strip_suffix("_[k]").unwrap_or(f),
        };
        let pct = flat_pct(&top_out, name);
        assert!((pct - row.self_pct).abs() < 0.01, "pprof {pct}% vs {row:?}");
    }

    let Some(out) = pprof(&["-traces"], &file, dir.path()) else {
        return;
    };
    let traces = ok(out, "pprof -traces");
    for needle in [
        "main.compute",
        "main.work",
        "main.fib",
        "entry_SYSCALL_64_after_hwframe",
        "[vdso]",
    ] {
        assert!(
            traces.contains(needle),
            "{needle} missing from -traces:\n{traces}"
        );
    }
    // Inlined frames show up as `(inline)` lines of the same location.
    assert!(traces.contains("(inline)"), "{traces}");

    let Some(out) = pprof(&["-tags"], &file, dir.path()) else {
        return;
    };
    let tags = ok(out, "pprof -tags");
    for needle in ["pid", "4242", "comm", "worker", "helper"] {
        assert!(
            tags.contains(needle),
            "{needle} missing from -tags:\n{tags}"
        );
    }
}

#[test]
fn folded_and_flamegraph() {
    let rec = recording();
    assert_eq!(
        folded(&rec),
        "\
helper;main.main;[vdso]+0xa00 2
worker;main.main;main.work;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k] 4
worker;main.main;main.work;main.compute 8
worker;main.main;main.work;main.fib;main.fib;main.fib 6
"
    );
    let svg = String::from_utf8(flamegraph_svg(&rec, "worker CPU").unwrap()).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("main.compute") && svg.contains("worker CPU"));
}
