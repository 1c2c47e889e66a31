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

/// The five heaviest of `samples` that satisfy `pred`, a line each (root → leaf), so that a
/// failed share shows what the stacks were instead.
fn heaviest(samples: &[&tests::StackSample], pred: impl Fn(&tests::StackSample) -> bool) -> String {
    let mut by_stack: std::collections::HashMap<&[String], i64> = Default::default();
    for s in samples.iter().filter(|s| pred(s)) {
        *by_stack.entry(&s.frames).or_default() += s.value;
    }
    let mut v: Vec<_> = by_stack.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.iter()
        .take(5)
        .map(|(frames, n)| format!("  {n} {}\n", frames.join(";")))
        .collect()
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
        agrees_with_own_profile(&what, &fx.path, "main.outerLoop", "main.leaf", 1);
    }
}

/// Go calling C through cgo, the C code built without frame pointers: the walk goes from the C
/// leaf through glibc-free C frames, `runtime.asmcgocall`'s switch from the thread's stack back
/// to the goroutine's, and on to `main.main`, as the program's own profile has it. Built here
/// by the oldest and the newest Go toolchain (cgo needs gcc, so the fixtures' builds have none).
#[test]
fn go_calling_c_through_cgo_keeps_the_go_callers() {
    let test = "go_calling_c_through_cgo_keeps_the_go_callers";
    if !bpf_available(test) {
        return;
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cgo-cache");
    let dir = tempfile::tempdir().unwrap();
    for (i, go) in tests::oldest_and_newest_go(test).iter().enumerate() {
        let out = dir.path().join(format!("cgo{i}"));
        tests::build_cgo(go, &[], &out, &cache.join(i.to_string()));
        let what = format!("cgo built by {}", go.display());
        agrees_with_own_profile(&what, &out, "main.goCaller", "c_mix", usize::MAX);
    }
}

/// Records `binary -duration 4s -cpuprofile F` (12 s under emulation) and compares with its own profile:
/// - among the goroutine's stacks (through `main.main`), `caller`'s cumulative share is the
///   profile's within a few points;
/// - where `leaf` is sampled, `caller` is on the stack at most `depth` frames above it (1: its
///   direct caller).
fn agrees_with_own_profile(what: &str, binary: &Path, caller: &str, leaf: &str, depth: usize) {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("own.pb.gz");
    // Samples taken before the tables are loaded are walked by frame pointers: under emulation
    // loading takes long enough (0.5 s) that a longer run keeps that share small.
    let duration = if tests::time_scale() > 1 { "12s" } else { "4s" };
    let (stacks, summary) = record_command(
        &[],
        &[
            binary.to_str().unwrap(),
            "-duration",
            duration,
            "-cpuprofile",
            own.to_str().unwrap(),
        ],
    );
    // The goroutine's stacks: those through main.main. The program's own profile does not see
    // its profiler's signal handling, its runtime threads take a share that varies (several
    // points under emulation), and neither is what the comparison is about.
    let in_main = |s: &&tests::StackSample| s.frames.iter().any(|f| f == "main.main");
    let ours: Vec<&tests::StackSample> = stacks.samples.iter().filter(in_main).collect();
    let oracle = Stacks::from_profile(&read_pprof(&own));
    let theirs: Vec<&tests::StackSample> = oracle.samples.iter().filter(in_main).collect();
    let under = |s: &tests::StackSample| s.frames.iter().any(|f| f == caller);
    let (our_cum, their_cum) = (share(&ours, under), share(&theirs, under));
    // The oracle must see the loop.
    assert!(
        their_cum > 0.9,
        "{what}: the oracle itself has {caller} at {their_cum:.2}"
    );
    // Samples taken before the tables are loaded are walked by frame pointers: a few percent
    // here, more under emulation, where loading takes longer.
    let tolerance = if tests::time_scale() > 1 { 0.12 } else { 0.05 };
    assert!(
        (our_cum - their_cum).abs() <= tolerance,
        "{what}: {caller}'s cumulative share {our_cum:.3}, its own profile {their_cum:.3}\n\
         {summary}the heaviest others:\n{}",
        heaviest(&ours, |s| !under(s))
    );
    // Wherever the leaf is sampled, the caller is above it (all stacks: one that stops short of
    // main.main counts against it).
    let in_leaf: Vec<&tests::StackSample> = stacks
        .samples
        .iter()
        .filter(|s| s.frames.last().is_some_and(|f| f == leaf))
        .collect();
    let has_caller = |s: &tests::StackSample| {
        let above = &s.frames[..s.frames.len() - 1];
        above.iter().rev().take(depth).any(|f| f == caller)
    };
    let kept = share(&in_leaf, has_caller);
    // Samples the kernel walked by frame pointers, because the process's tables were not
    // loaded yet (or the sample was taken in kernel mode), are not the unwinder's to answer
    // for: its record summary counts them, and the leaf's share of them is excused. Under
    // emulation loading can take seconds of a 12 s run; it must not take most of it.
    let fp = frame_pointer_share(&summary);
    assert!(
        fp <= 0.35,
        "{what}: {fp:.3} of the stacks walked by frame pointers\n{summary}"
    );
    let wanted = if tests::time_scale() > 1 { 0.9 } else { 0.97 } - fp;
    assert!(
        !in_leaf.is_empty() && kept >= wanted,
        "{what}: {leaf} under {caller} in {kept:.3} of its samples (wanted {wanted:.3}, \
         {fp:.3} of all stacks walked by frame pointers); the heaviest others:\n{}",
        heaviest(&in_leaf, |s| !has_caller(s))
    );
}

/// The share of user stacks walked by frame pointers, from a record summary's line "User
/// stacks: N walked with unwind tables, M by frame pointers ...".
fn frame_pointer_share(summary: &str) -> f64 {
    let line = summary
        .lines()
        .find_map(|l| l.strip_prefix("User stacks: "))
        .unwrap_or_else(|| panic!("no unwinding line in the summary:\n{summary}"));
    let number = |after: &str| -> f64 {
        line.split(after)
            .next()
            .and_then(|s| s.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read {after:?} in {line:?}"))
    };
    let (tables, fp) = (
        number(" walked with unwind tables"),
        number(" by frame pointers"),
    );
    if tables + fp > 0.0 {
        fp / (tables + fp)
    } else {
        1.0
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

/// Native code built without frame pointers has complete stacks as often as with perf's DWARF
/// unwinding: Debian's xz and python3, and programs built here without frame pointers in C (plain
/// calls; callbacks from glibc's `twalk`; a signal handler), C++ (with libstdc++) and Rust.
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
    let built = |name, lang, source| build_without_frame_pointers(dir.path(), name, lang, source);
    let programs = [
        ("nofp", built("nofp", Lang::C, C_LEVELS)),
        ("nofp_twalk", built("nofp_twalk", Lang::C, C_TWALK)),
        ("nofp_signal", built("nofp_signal", Lang::C, C_SIGNAL)),
        ("nofp_cpp", built("nofp_cpp", Lang::Cpp, CPP_MAP)),
        ("nofp_rust", built("nofp_rust", Lang::Rust, RUST_LEVELS)),
    ];
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
    let mut workloads: Vec<(&str, Vec<String>)> = vec![(
        "xz",
        ["xz", "-9", "-T1", "-k", "-c", &input]
            .map(String::from)
            .to_vec(),
    )];
    for (comm, path) in &programs {
        workloads.push((comm, vec![path.clone(), "3000".to_string()]));
    }
    workloads.push((
        "python3",
        vec![
            "/usr/bin/python3".to_string(),
            script.to_str().unwrap().to_string(),
        ],
    ));
    for (comm, command) in &workloads {
        // Through a shell that first waits a moment and then execs the program, output to
        // /dev/null: every program here starts by an exec in mid-recording, of a process whose
        // tables (the shell's) are already loaded.
        let line = format!("sleep 0.2; exec {} > /dev/null", command.join(" "));
        let sh = ["sh", "-c", line.as_str()];
        let (stacks, summary) = record_command(&[], &sh);
        let ours = ours_reaching_main(&stacks, comm);
        let (frame_pointers, _) = record_command(&["--frame-pointers"], &sh);
        let fp = ours_reaching_main(&frame_pointers, comm);
        // perf's DWARF unwinding on this machine loses glibc's frames in some runs and not in
        // others, by where the libraries are loaded (twalk: 99.9% complete or 0.0%, about half
        // the runs each; always 0.0% with address randomisation off). The oracle is its best of
        // three runs; when all three fail, our share must reach what perf's good runs reach.
        let mut perf = None;
        for _ in 0..3 {
            let Some(run) = perf_reaching_main(&sh, comm) else {
                break;
            };
            perf = Some(perf.map_or(run, |p: f64| p.max(run)));
            if run > 0.5 {
                break;
            }
        }
        let Some(perf) = perf else {
            continue;
        };
        eprintln!(
            "{comm}: complete stacks: bellows {:.1}%, perf --call-graph dwarf {:.1}% (best of its runs), frame pointers {:.1}%",
            ours * 100.0,
            perf * 100.0,
            fp * 100.0
        );
        let perf = if perf > 0.5 {
            perf
        } else {
            eprintln!("{comm}: perf's unwinding failed in each run; comparing with its good runs");
            0.99
        };
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

/// `record --trace-unwind FILE` writes the walks of the traced process step by step: each walk
/// counts up from its leaf at depth 0, and a complete stack's last step is its outermost frame.
#[test]
fn the_unwind_trace_shows_each_step_of_the_traced_walks() {
    let test = "the_unwind_trace_shows_each_step_of_the_traced_walks";
    if !bpf_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let program = build_without_frame_pointers(dir.path(), "nofp", Lang::C, C_LEVELS);
    let trace = dir.path().join("trace.txt");
    let (stacks, summary) = record_command(
        &["--trace-unwind", trace.to_str().unwrap()],
        &[program.as_str(), "1500"],
    );
    assert!(summary.contains("(unwind trace)"), "{summary}");
    let text = std::fs::read_to_string(&trace).unwrap();
    let steps: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(' ').collect())
        .collect();
    assert!(
        steps.iter().all(|s| s.len() == 7),
        "malformed: {text:.2000}"
    );
    // Walks, split where an outcome other than "next" ends one.
    let mut walks: Vec<Vec<&Vec<&str>>> = vec![vec![]];
    for s in &steps {
        walks.last_mut().unwrap().push(s);
        if s[6] != "next" {
            walks.push(vec![]);
        }
    }
    walks.retain(|w| w.last().is_some_and(|s| s[6] != "next"));
    assert!(
        stacks.samples.iter().any(|s| s.comm == "nofp") && walks.len() > 100,
        "{} walks traced",
        walks.len()
    );
    for w in &walks {
        let depths: Vec<usize> = w.iter().map(|s| s[1].parse().unwrap()).collect();
        assert!(
            depths.iter().enumerate().all(|(i, &d)| i == d),
            "a walk's depths count up from 0: {w:?}"
        );
    }
    let complete = walks
        .iter()
        .filter(|w| w.last().unwrap()[6] == "complete")
        .count();
    assert!(
        complete * 100 >= walks.len() * 95,
        "{complete} of {} traced walks complete",
        walks.len()
    );
    // `_start`'s CFI says its return address is undefined: that row ends the walk.
    let at_start = walks
        .iter()
        .filter(|w| w.last().unwrap()[6] == "complete" && w.last().unwrap()[5] == "outermost")
        .count();
    assert!(
        at_start * 100 >= complete * 95,
        "{at_start} of {complete} complete walks end at the outermost frame's row"
    );
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

/// The languages the native comparison builds its programs in, each without frame pointers.
#[derive(Clone, Copy)]
enum Lang {
    C,
    Cpp,
    Rust,
}

/// Builds `source` as `dir/name`, optimised, without frame pointers and without inlining of the
/// functions marked so, so that its stacks can only be walked with its `.eh_frame`.
fn build_without_frame_pointers(dir: &Path, name: &str, lang: Lang, source: &str) -> String {
    let (ext, compiler, flags): (&str, &str, &[&str]) = match lang {
        Lang::C => ("c", "gcc", &["-O2", "-fomit-frame-pointer", "-o"]),
        Lang::Cpp => ("cc", "g++", &["-O2", "-fomit-frame-pointer", "-o"]),
        Lang::Rust => (
            "rs",
            "rustc",
            &[
                "-Copt-level=2",
                "-Cforce-frame-pointers=no",
                "--edition=2021",
                "-o",
            ],
        ),
    };
    let src = dir.join(format!("{name}.{ext}"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let built = Command::new(compiler)
        .args(flags)
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("{compiler} is required (cargo xtask setup installs it): {e}"));
    assert!(
        built.status.success(),
        "{compiler} failed on {name}: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out.to_str().unwrap().to_string()
}

/// C: a few levels of calls that never inline.
const C_LEVELS: &str = r#"
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
"#;

/// C calling into a library without frame pointers: glibc's `twalk` walks a tree by recursion
/// and calls back into the program, so a walk from the callback crosses libc's frames on its way
/// to `main`. (glibc's `qsort` would do too, but perf's DWARF unwinding, the oracle, completes
/// its stacks in some runs and almost none in others, by where the libraries are loaded.)
const C_TWALK: &str = r#"
#define _GNU_SOURCE
#include <search.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static uint64_t sum;
__attribute__((noinline)) static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}
__attribute__((noinline)) static void visit(const void *node, VISIT which, int depth) {
    uint64_t x = **(uint64_t *const *)node;
    for (int i = 0; i < 64; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
    sum += x + depth + which;
}
int main(int argc, char **argv) {
    long ms = argc > 1 ? atol(argv[1]) : 1000;
    static uint64_t keys[4096];
    void *root = NULL;
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < 4096; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        keys[i] = s;
        tsearch(&keys[i], &root, compare);
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        twalk(root, visit);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
    printf("%llu\n", (unsigned long long)sum);
    return 0;
}
"#;

/// A program that spends its time in a signal handler: each `raise` delivers SIGUSR1, and the
/// handler's work sits above the kernel's signal frame (glibc's `__restore_rt`) and `raise`.
const C_SIGNAL: &str = r#"
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static volatile uint64_t sink;
__attribute__((noinline)) static uint64_t handler_work(uint64_t x) {
    for (int i = 0; i < 20000; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
    return x;
}
__attribute__((noinline)) static void on_signal(int sig) { sink = handler_work(sink + sig); }
__attribute__((noinline)) static void signal_round(void) { for (int i = 0; i < 100; i++) raise(SIGUSR1); }
int main(int argc, char **argv) {
    long ms = argc > 1 ? atol(argv[1]) : 1000;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        signal_round();
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
    printf("%llu\n", (unsigned long long)sink);
    return 0;
}
"#;

/// C++: the program's own templates and libstdc++'s tree code (`std::map`), which Debian builds
/// without frame pointers.
const CPP_MAP: &str = r#"
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>
#include <algorithm>
__attribute__((noinline)) static uint64_t build(uint64_t seed) {
    std::map<uint64_t, std::string> m;
    for (int i = 0; i < 2000; i++) {
        seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
        m.emplace(seed, std::to_string(seed));
    }
    std::vector<uint64_t> keys;
    for (auto &kv : m) keys.push_back(kv.first ^ kv.second.size());
    std::sort(keys.begin(), keys.end(), [](uint64_t a, uint64_t b) { return (a >> 3) < (b >> 3); });
    return keys[keys.size() / 2];
}
__attribute__((noinline)) static uint64_t round_of(uint64_t seed) { return build(seed) + build(seed + 1); }
int main(int argc, char **argv) {
    long ms = argc > 1 ? std::atol(argv[1]) : 1000;
    auto start = std::chrono::steady_clock::now();
    uint64_t s = 1;
    while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(ms)) s = round_of(s);
    std::printf("%llu\n", (unsigned long long)s);
}
"#;

/// Rust: the program's functions and the standard library's collections and formatting.
const RUST_LEVELS: &str = r#"
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};
#[inline(never)]
fn fill(seed: u64) -> BTreeMap<u64, String> {
    let mut m = BTreeMap::new();
    let mut x = seed;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.insert(x, format!("{x:x}"));
    }
    m
}
#[inline(never)]
fn digest(m: &BTreeMap<u64, String>) -> u64 {
    m.iter().map(|(k, v)| k.wrapping_mul(v.len() as u64)).fold(0, u64::wrapping_add)
}
#[inline(never)]
fn round_of(seed: u64) -> u64 {
    digest(&black_box(fill(seed))) ^ digest(&black_box(fill(seed + 1)))
}
fn main() {
    let ms: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let start = Instant::now();
    let mut s = 1u64;
    while start.elapsed() < Duration::from_millis(ms) {
        s = round_of(black_box(s));
    }
    println!("{s}");
}
"#;
