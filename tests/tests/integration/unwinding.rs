//! User stacks without frame pointers, checked against oracles measured in the same run:
//! `perf record --call-graph dwarf` for native code, and a Go program's own `runtime/pprof`
//! profile for Go's frameless functions.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use tests::{bellows, bpf_available, in_ci, read_pprof, require_go_fixtures, Stacks};

/// Share (0–1) of `samples` whose frames satisfy `pred`, by value.
fn share(samples: &[&tests::StackSample], pred: impl Fn(&tests::StackSample) -> bool) -> f64 {
    let total: i64 = samples.iter().map(|s| s.value).sum();
    let hit: i64 = samples.iter().filter(|s| pred(s)).map(|s| s.value).sum();
    if total == 0 {
        0.0
    } else {
        hit as f64 / total as f64
    }
}

/// `bellows record -F 499 --no-kernel -o <tmp> ARGS -- CMD`, decoded, with the summary.
fn record_command(args: &[&str], command: &[&str]) -> (Stacks, String) {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("p.pb.gz");
    let mut all = vec![
        "record",
        "-F",
        "499",
        "--no-kernel",
        "-o",
        pb.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    all.push("--");
    all.extend_from_slice(command);
    let out = bellows(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("(command exited with 0)"),
        "{command:?} failed: {stdout}{stderr}"
    );
    (Stacks::from_profile(&read_pprof(&pb)), stdout)
}

/// A Go function built without a frame keeps its caller: `main.leaf` hangs under
/// `main.outerLoop` as in the program's own profile, on every Go toolchain and build (default,
/// stripped, PIE), where frame pointers put it under `main.main`.
#[test]
fn go_frameless_leaf_keeps_its_caller_on_every_build() {
    let test = "go_frameless_leaf_keeps_its_caller_on_every_build";
    if !bpf_available(test) {
        return;
    }
    let mut fixtures = require_go_fixtures(test, "frameless");
    if tests::time_scale() > 1 {
        // Under emulation (the VM tests prove the walker on each kernel), the newest toolchain's
        // default and PIE builds: every build of every toolchain takes too long there.
        let newest = fixtures.iter().map(|f| f.go_version.clone()).max();
        fixtures.retain(|f| Some(&f.go_version) == newest.as_ref() && f.variant != "stripped");
    }
    for fx in &fixtures {
        let what = format!("{} {}", fx.go_version, fx.variant);
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own.pb.gz");
        let (stacks, summary) = record_command(
            &[],
            &[
                fx.path.to_str().unwrap(),
                "-duration",
                "4s",
                "-cpuprofile",
                own.to_str().unwrap(),
            ],
        );
        let ours: Vec<&tests::StackSample> = stacks.samples.iter().collect();
        let oracle = Stacks::from_profile(&read_pprof(&own));
        let theirs: Vec<&tests::StackSample> = oracle.samples.iter().collect();
        let under_outer = |s: &tests::StackSample| s.frames.iter().any(|f| f == "main.outerLoop");
        let (our_cum, their_cum) = (share(&ours, under_outer), share(&theirs, under_outer));
        // The oracle must see the loop at all (under emulation the runtime's own work takes a
        // larger share, so not necessarily all of it).
        assert!(
            their_cum > 0.5,
            "{what}: the oracle itself has outerLoop at {their_cum:.2}"
        );
        // Samples taken before the tables are loaded are walked by frame pointers: a few
        // percent here, more under emulation, where loading takes longer.
        let tolerance = if tests::time_scale() > 1 { 0.12 } else { 0.05 };
        assert!(
            (our_cum - their_cum).abs() <= tolerance,
            "{what}: outerLoop's cumulative share {our_cum:.3}, its own profile {their_cum:.3}\n{summary}"
        );
        // Wherever the leaf is sampled, its caller is outerLoop.
        let in_leaf: Vec<&tests::StackSample> = ours
            .iter()
            .copied()
            .filter(|s| s.frames.last().is_some_and(|f| f == "main.leaf"))
            .collect();
        let parent_is_outer = share(&in_leaf, |s| {
            s.frames.len() >= 2 && s.frames[s.frames.len() - 2] == "main.outerLoop"
        });
        let wanted = if tests::time_scale() > 1 { 0.9 } else { 0.97 };
        assert!(
            !in_leaf.is_empty() && parent_is_outer >= wanted,
            "{what}: main.leaf under main.outerLoop in {parent_is_outer:.3} of its samples"
        );
    }
}

/// The share of `comm`'s stacks in `perf record --call-graph dwarf` output that are complete
/// (see [`is_root`]): perf's own DWARF unwinding, on the same workload in the same run.
fn perf_reaching_main(command: &[&str], comm: &str) -> Option<f64> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("perf.data");
    // perf keeps a build-id cache under HOME that runs elsewhere on the machine may be
    // rewriting: this run gets none (-N) and a HOME of its own.
    let recorded = Command::new("perf")
        .args([
            "record",
            "-q",
            "-N",
            "-F",
            "499",
            "--call-graph",
            "dwarf,16384",
            "-o",
        ])
        .arg(&data)
        .env("HOME", dir.path())
        .arg("--")
        .args(command)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let recorded = match recorded {
        Ok(o) if o.status.success() => o,
        other => {
            let why = format!("perf record failed: {other:?}");
            assert!(!in_ci(), "{why}");
            eprintln!("skipping the perf comparison: {why}");
            return None;
        }
    };
    drop(recorded);
    let script = Command::new("perf")
        .args(["script", "-F", "comm,ip,sym", "-i"])
        .arg(&data)
        .env("HOME", dir.path())
        .output()
        .expect("perf script");
    let text = String::from_utf8_lossy(&script.stdout);
    // A sample is a line naming the command at the start of a line, then one indented line per
    // frame ("ip symbol"); blank lines (which may hold spaces) separate samples.
    let (mut total, mut reached) = (0u64, 0u64);
    let mut current: Option<bool> = None;
    let mut finish = |sample: Option<bool>| {
        if let Some(hit) = sample {
            total += 1;
            reached += u64::from(hit);
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            finish(current.take());
            current = (line.split_whitespace().next() == Some(comm)).then_some(false);
            continue;
        }
        if let Some(hit) = current.as_mut() {
            *hit |= is_root(line.split_whitespace().nth(1).unwrap_or(""));
        }
    }
    finish(current.take());
    if total > 0 && reached * 10 < total * 9 {
        eprintln!(
            "perf script, the start of it ({}):\n{}",
            String::from_utf8_lossy(&script.stderr),
            &text[..text.len().min(3000)]
        );
    }
    if total > 0 && reached * 10 < total * 9 {
        eprintln!(
            "perf script, the start of it ({}):\n{}",
            String::from_utf8_lossy(&script.stderr),
            &text[..text.len().min(3000)]
        );
    }
    assert!(total > 100, "perf recorded {total} samples of {comm}");
    Some(reached as f64 / total as f64)
}

/// Ours: the share of `comm`'s samples whose stack is complete (see [`is_root`]).
fn ours_reaching_main(stacks: &Stacks, comm: &str) -> f64 {
    let samples: Vec<&tests::StackSample> =
        stacks.samples.iter().filter(|s| s.comm == comm).collect();
    assert!(samples.len() > 10, "{comm}: {} stacks", samples.len());
    share(&samples, |s| s.frames.iter().any(|f| is_root(f)))
}

/// A frame only a complete stack has: the main thread's start (`main`, glibc's
/// `__libc_start_call_main` and `__libc_start_main*`, where perf's walk sometimes ends), or
/// another thread's (`start_thread`, `clone3`). xz, for one, compresses in a worker thread when it
/// judges the memory enough.
fn is_root(symbol: &str) -> bool {
    symbol == "main"
        || symbol.starts_with("__libc_start_")
        || symbol == "start_thread"
        || symbol.starts_with("__clone")
        || symbol == "clone3"
}

/// Native code built without frame pointers (Debian's xz and python3, and a C program built here
/// with `-fomit-frame-pointer`) has complete stacks as often as with perf's DWARF unwinding.
#[test]
fn native_stacks_without_frame_pointers_are_as_complete_as_with_perf() {
    let test = "native_stacks_without_frame_pointers_are_as_complete_as_with_perf";
    if !bpf_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("random.bin");
    std::fs::write(&input, random_bytes(8 << 20)).unwrap();
    let input = input.to_str().unwrap().to_string();
    let c_program = build_c_without_frame_pointers(dir.path());
    // Debian's python3 is built without frame pointers, and its json accelerator is a library it
    // loads after start (dlopen): the kernel has to ask for the new mapping. A short warm-up and
    // a pause keep that transient (samples before the new library's table is loaded, walked by
    // frame pointers and counted as such) out of the steady state measured here.
    let script = dir.path().join("loop.py");
    std::fs::write(
        &script,
        "import json, time\n\
         d = {'a': [1, 2, 3, {'b': 'c' * 50}] * 20}\n\
         def work(seconds):\n\
         \x20   end = time.time() + seconds\n\
         \x20   while time.time() < end:\n\
         \x20       json.loads(json.dumps(d))\n\
         work(0.2)\n\
         time.sleep(0.3)\n\
         work(6)\n",
    )
    .unwrap();
    let workloads: Vec<(&str, Vec<String>)> = vec![
        (
            "xz",
            ["xz", "-9", "-T1", "-k", "-c", &input]
                .map(String::from)
                .to_vec(),
        ),
        (
            "nofp",
            vec![c_program.to_str().unwrap().to_string(), "3000".to_string()],
        ),
        (
            "python3",
            vec![
                "/usr/bin/python3".to_string(),
                script.to_str().unwrap().to_string(),
            ],
        ),
    ];
    for (comm, command) in &workloads {
        // Output to /dev/null through a shell, so that the command's stdout is not ours.
        let line = format!("exec {} > /dev/null", command.join(" "));
        let sh = ["sh", "-c", line.as_str()];
        let (stacks, summary) = record_command(&[], &sh);
        let ours = ours_reaching_main(&stacks, comm);
        let (frame_pointers, _) = record_command(&["--frame-pointers"], &sh);
        let fp = ours_reaching_main(&frame_pointers, comm);
        let Some(perf) = perf_reaching_main(&sh, comm) else {
            continue;
        };
        eprintln!(
            "{comm}: complete stacks: bellows {:.1}%, perf --call-graph dwarf {:.1}%, frame pointers {:.1}%",
            ours * 100.0,
            perf * 100.0,
            fp * 100.0
        );
        assert!(
            perf > 0.9,
            "{comm}: perf's own DWARF unwinding completed only {:.1}% of stacks: the oracle failed",
            perf * 100.0
        );
        let incomplete: Vec<String> = stacks
            .samples
            .iter()
            .filter(|s| s.comm == *comm && !s.frames.iter().any(|f| is_root(f)))
            .take(5)
            .map(|s| s.frames.join(";"))
            .collect();
        assert!(
            ours >= perf * 0.98,
            "{comm}: {:.1}% of stacks complete, with perf's DWARF unwinding {:.1}%\n{summary}\n\
             incomplete, for example:\n{}",
            ours * 100.0,
            perf * 100.0,
            incomplete.join("\n")
        );
    }
}

/// Bytes that do not compress, so that xz works hard (a simple xorshift, no dependency).
fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A C program with a few levels of calls, built with `-O2 -fomit-frame-pointer` and no
/// inlining, so that its stacks can only be walked with its `.eh_frame`.
fn build_c_without_frame_pointers(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("nofp.c");
    std::fs::write(
        &src,
        r#"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
__attribute__((noinline)) static uint64_t mix(uint64_t x, int rounds) {
    volatile uint64_t pad[8];
    for (int i = 0; i < rounds; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; pad[i & 7] = x; }
    return x + pad[3];
}
__attribute__((noinline)) static uint64_t level3(uint64_t x) { return mix(x, 64) + 1; }
__attribute__((noinline)) static uint64_t level2(uint64_t x) { return level3(x) ^ level3(x + 1); }
__attribute__((noinline)) static uint64_t level1(uint64_t x) { return level2(x) + level2(x * 3); }
int main(int argc, char **argv) {
    long ms = argc > 1 ? atol(argv[1]) : 1000;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    uint64_t s = 1;
    do {
        for (int i = 0; i < 10000; i++) s = level1(s);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
    printf("%llu\n", (unsigned long long)s);
    return 0;
}
"#,
    )
    .unwrap();
    let out = dir.join("nofp");
    let status = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-fno-inline", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc is required (cargo xtask setup installs it)");
    assert!(status.success(), "gcc failed");
    out
}
