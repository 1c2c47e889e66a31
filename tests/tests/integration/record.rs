//! `bellows record` against this machine's kernel, with real Go workloads.
//!
//! The workload `cpuburn` (tests/fixtures/go/cpuburn) burns CPU in `main.hotA` and `main.hotB`
//! about 3:1, inlines `main.mix` into `main.hotA`, and runs a syscall loop in `main.syscallLoop`.

use std::{path::Path, time::Duration};

use tests::{
    bellows, bpf_available, go_tool_pprof, read_pprof, require_go_fixtures, GoFixture, Stacks,
    TestCgroup, Workload,
};

/// Records `cpuburn -mode all` run as a command and checks everything a user relies on.
fn check_command_recording(fx: &GoFixture) {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("profile.pb.gz");
    let svg = dir.path().join("flame.svg");
    let folded = dir.path().join("stacks.folded");
    let out = bellows(&[
        "record",
        "-F",
        "499",
        "-o",
        pb.to_str().unwrap(),
        "--flamegraph",
        svg.to_str().unwrap(),
        "--folded",
        folded.to_str().unwrap(),
        "--",
        fx.path.to_str().unwrap(),
        "-duration",
        "3s",
        "-mode",
        "all",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!("{} {}", fx.go_version, fx.variant);
    assert!(out.status.success(), "{what}: bellows failed: {stderr}");
    assert!(stdout.contains("Recorded"), "{what}: no summary: {stdout}");
    // A small workload fits the maps: no sample may lose its stack. Walks that end early are
    // rare (the Go runtime switching stacks in assembly: at most 2%) and said.
    let total: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Recorded "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no 'Recorded N samples': {stdout}"));
    let drops = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Dropped or degraded samples: "))
        .expect("drop line");
    if drops != "none" {
        for item in drops.split(", ") {
            let (kind, n) = item.rsplit_once(' ').expect("kind count");
            let n: u64 = n.parse().expect("count");
            assert!(
                matches!(kind, "unwind_truncated" | "unwind_frame_pointer_frames")
                    && n * 50 <= total,
                "{what}: {kind} {n} of {total} samples: {stdout}"
            );
        }
    }
    // Self time lands in the inlined helper, as `go tool pprof -top` shows it too.
    assert!(
        stdout.contains("main.mix"),
        "{what}: top table lacks main.mix: {stdout}"
    );

    let stacks = Stacks::from_profile(&read_pprof(&pb));
    assert!(stacks.total() > 0, "{what}: empty profile");

    // Only the command's process: one pid, named after the binary.
    let pids = stacks.pids();
    assert_eq!(
        pids.len(),
        1,
        "{what}: samples from other processes: {pids:?}"
    );
    // The command's own name, but for a few samples of its exec, taken while the forked child
    // still bore our name: the same pid, so the same process.
    let foreign: i64 = stacks
        .samples
        .iter()
        .filter(|s| s.comm != "cpuburn")
        .inspect(|s| assert_eq!(s.comm, "bellows", "{what}: foreign comm {:?}", s.comm))
        .map(|s| s.value)
        .sum();
    assert!(
        foreign * 50 <= stacks.total(),
        "{what}: too many pre-exec samples: {foreign} of {}",
        stacks.total()
    );

    // Threads: the CPU loop and the syscall loop (locked to its own OS thread) at least.
    let tids: std::collections::BTreeSet<i64> = stacks.samples.iter().map(|s| s.tid).collect();
    assert!(
        tids.len() >= 2 && tids.iter().all(|&t| t > 0),
        "{what}: thread ids {tids:?}"
    );

    // The 3:1 split between the two hot functions.
    let a = stacks.total_value("main.hotA");
    let b = stacks.total_value("main.hotB");
    assert!(a > 0 && b > 0, "{what}: hotA {a} hotB {b}");
    let ratio = a as f64 / b as f64;
    // 3 s at 499 Hz: on an idle machine the ratio spreads 2.9–3.8 between runs (frame pointers
    // and tables alike); with the other tests' workloads on the same two cores one run in a few
    // falls to 1.9. Far from 1:1 either way, which is what a wrong attribution would give.
    assert!(
        (1.5..=4.5).contains(&ratio),
        "{what}: hotA:hotB = {ratio:.2}, expected about 3"
    );

    // The inlined helper appears as its own frame, called from hotA.
    let inlined = stacks.samples.iter().any(|s| {
        s.frames
            .windows(2)
            .any(|w| w[0] == "main.hotA" && w[1] == "main.mix")
    });
    assert!(inlined, "{what}: no inlined main.mix frame under main.hotA");

    // Kernel frames under the syscall loop.
    let kernel_under_syscalls = stacks.samples.iter().any(|s| {
        let user_loop = s.frames.iter().position(|f| f == "main.syscallLoop");
        let first_kernel = s.kernel.iter().position(|&k| k);
        matches!((user_loop, first_kernel), (Some(u), Some(k)) if k > u)
    });
    assert!(
        kernel_under_syscalls,
        "{what}: no kernel frames under main.syscallLoop"
    );

    // Independent reader: go tool pprof reads it cleanly and agrees on the hot function.
    if let Some((top, _)) = go_tool_pprof(&["-top", "-cum", "-nodecount=30"], &pb) {
        assert!(top.contains("main.hotA"), "{what}: pprof -top: {top}");
    }
    if let Some((traces, _)) = go_tool_pprof(&["-traces"], &pb) {
        assert!(
            traces.contains("main.mix"),
            "{what}: pprof -traces lacks main.mix"
        );
    }

    // Folded stacks and flame graph.
    let folded_text = std::fs::read_to_string(&folded).unwrap();
    assert!(folded_text.lines().any(|l| l.contains("main.hotA")));
    for line in folded_text.lines() {
        let (_, count) = line.rsplit_once(' ').expect("folded line: stack count");
        count.parse::<u64>().expect("folded count");
    }
    check_svg(&svg, "main.hotA");
}

fn check_svg(path: &Path, must_name: &str) {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(svg.trim_start().starts_with("<?xml") || svg.trim_start().starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"), "truncated SVG");
    assert_eq!(
        svg.matches("<svg").count(),
        svg.matches("</svg>").count(),
        "unbalanced <svg> elements"
    );
    assert!(
        svg.contains(must_name),
        "flame graph does not name {must_name}"
    );
}

#[test]
fn record_command_every_go_build() {
    if !bpf_available("record_command_every_go_build") {
        return;
    }
    let fixtures = require_go_fixtures("record_command_every_go_build", "cpuburn");
    // Each Go version in each variant: default, stripped and PIE.
    for fx in &fixtures {
        check_command_recording(fx);
    }
}

fn one_fixture(test: &str) -> Option<GoFixture> {
    if !bpf_available(test) {
        return None;
    }
    let fixtures = require_go_fixtures(test, "cpuburn");
    fixtures
        .iter()
        .find(|f| f.variant == "stripped")
        .or(fixtures.first())
        .cloned()
}

/// Runs `bellows record ARGS -o <temporary file>`, asserts success, and decodes the profile.
fn record_stacks(args: &[&str]) -> Stacks {
    record_with_summary(args).0
}

/// As [`record_stacks`], with the summary `bellows` printed.
fn record_with_summary(args: &[&str]) -> (Stacks, String) {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("p.pb.gz");
    let mut all = vec!["record"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", pb.to_str().unwrap()]);
    let out = bellows(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        Stacks::from_profile(&read_pprof(&pb)),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn cgroup_filter_counts_only_the_selected_cgroup() {
    let Some(fx) = one_fixture("cgroup_filter_counts_only_the_selected_cgroup") else {
        return;
    };
    let cg = TestCgroup::create("filter");
    let inside = Workload::start(&fx.path, &["-duration", "60s", "-mode", "cpu"]);
    cg.add(inside.pid());
    let outside = Workload::start(&fx.path, &["-duration", "60s", "-mode", "cpu"]);
    std::thread::sleep(Duration::from_millis(200));

    // A cgroup v2 directory is selected in the kernel; on a v1-only host, a v1 one in userspace.
    let (stacks, summary) =
        record_with_summary(&["--cgroup", cg.path.to_str().unwrap(), "-d", "2s"]);
    crate::hosts::check_selection_summary(&summary);
    let pids = stacks.pids();
    assert!(
        pids.contains(&i64::from(inside.pid())),
        "selected workload missing: {pids:?}"
    );
    assert_eq!(
        pids.len(),
        1,
        "samples outside the cgroup (outside pid {}): {pids:?}",
        outside.pid()
    );
    assert!(stacks.total_value("main.hotA") > 0);
}

#[test]
fn pid_filter_counts_only_the_selected_process() {
    let Some(fx) = one_fixture("pid_filter_counts_only_the_selected_process") else {
        return;
    };
    let chosen = Workload::start(&fx.path, &["-duration", "60s", "-mode", "cpu"]);
    let other = Workload::start(&fx.path, &["-duration", "60s", "-mode", "cpu"]);
    std::thread::sleep(Duration::from_millis(200));
    let pid = chosen.pid().to_string();
    let stacks = record_stacks(&["-p", &pid, "-d", "2"]);
    let pids = stacks.pids();
    assert_eq!(
        pids.into_iter().collect::<Vec<_>>(),
        vec![i64::from(chosen.pid())],
        "other pid {} leaked in",
        other.pid()
    );
    assert!(stacks.total_value("main.hotB") > 0);
}

#[test]
fn whole_system_sees_a_running_workload_and_the_kernel() {
    let Some(fx) = one_fixture("whole_system_sees_a_running_workload_and_the_kernel") else {
        return;
    };
    let w = Workload::start(&fx.path, &["-duration", "60s", "-mode", "all"]);
    std::thread::sleep(Duration::from_millis(200));
    let stacks = record_stacks(&["-d", "2s"]);
    assert!(stacks.pids().contains(&i64::from(w.pid())));
    assert!(stacks.total_value("main.hotA") > 0, "hotA not sampled");
    drop(w);
}

#[test]
fn unprivileged_user_gets_one_clear_line() {
    if !bpf_available("unprivileged_user_gets_one_clear_line") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("p.pb.gz");
    let out = std::process::Command::new(tests::bellows_bin())
        .args(["record", "-d", "1", "-o", pb.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded without privileges");
    assert!(stderr.contains("needs root"), "unclear error: {stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "more than one line: {stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

/// Interrupted before the first sample: still exit 0 with every output written.
#[test]
fn interrupt_before_any_sample_still_writes_every_output() {
    if !bpf_available("interrupt_before_any_sample_still_writes_every_output") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("p.pb.gz");
    let svg = dir.path().join("f.svg");
    // A pid filter on ourselves (the test binary sleeps): nothing is sampled.
    let me = std::process::id().to_string();
    let child = std::process::Command::new(tests::bellows_bin())
        .args(["record", "-p", &me, "-d", "60s", "-o"])
        .arg(&pb)
        .arg("--flamegraph")
        .arg(&svg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It installs its handlers first thing: wait for SIGINT to be caught, not for a time.
    let catches_sigint = || {
        std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            })
            .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !catches_sigint() {
        assert!(std::time::Instant::now() < deadline, "SIGINT never caught");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(Stacks::from_profile(&read_pprof(&pb)).total(), 0);
    check_svg(&svg, "No samples");
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        &["record", "-F", "0"][..],
        &["record", "-p", "4194305"],
        &["record", "--cgroup", "/tmp"],
        &["record", "-d", "ten"],
        &["record", "-o", "/nonexistent-dir/x.pb.gz"],
        &["record", "--trace-unwind", "/tmp/t.txt"],
        &[
            "record",
            "--trace-unwind",
            "/tmp/t.txt",
            "--frame-pointers",
            "-p",
            "1",
        ],
    ] {
        let out = bellows(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("bellows") || stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn interrupt_ends_early_and_still_writes_every_output() {
    let Some(fx) = one_fixture("interrupt_ends_early_and_still_writes_every_output") else {
        return;
    };
    let w = Workload::start(&fx.path, &["-duration", "20s", "-mode", "cpu"]);
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("p.pb.gz");
    let svg = dir.path().join("f.svg");
    let folded = dir.path().join("f.folded");
    let pid = w.pid().to_string();
    let child = std::process::Command::new(tests::bellows_bin())
        .args(["record", "-p", &pid, "-d", "60s", "-o"])
        .arg(&pb)
        .arg("--flamegraph")
        .arg(&svg)
        .arg("--folded")
        .arg(&folded)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it samples (a BPF link per CPU, plus the exec tracepoint's), then let it sample
    // a while.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bpf_links = || {
        std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .map(|fds| {
                fds.flatten()
                    .filter(|fd| {
                        std::fs::read_link(fd.path())
                            .is_ok_and(|l| l.to_string_lossy().contains("bpf_link"))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while bpf_links() < cpus + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "bellows never started sampling"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "did not stop promptly on SIGINT"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(interrupted)"), "{stdout}");
    let stacks = Stacks::from_profile(&read_pprof(&pb));
    assert!(stacks.total_value("main.hotA") > 0);
    check_svg(&svg, "main.hotA");
    assert!(std::fs::read_to_string(&folded)
        .unwrap()
        .contains("main.hotA"));
}

/// A C program spending its time in clock_gettime: the vDSO frame is named.
#[test]
fn vdso_frames_are_symbolized() {
    if !bpf_available("vdso_frames_are_symbolized") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("clock.c");
    std::fs::write(
        &src,
        "#include <time.h>\n#include <stdio.h>\nint main(void) { struct timespec ts; long n = 0; \
         for (long i = 0; i < 40000000; i++) { clock_gettime(CLOCK_MONOTONIC, &ts); \
         n += ts.tv_nsec & 1; } printf(\"%ld\\n\", n); return 0; }\n",
    )
    .unwrap();
    let bin = dir.path().join("clock");
    let built = std::process::Command::new("gcc")
        .args(["-O2", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .status();
    match built {
        Ok(s) if s.success() => {}
        other => {
            assert!(!tests::in_ci(), "gcc is required in CI: {other:?}");
            eprintln!("skipping: gcc unavailable");
            return;
        }
    }
    let pb = dir.path().join("p.pb.gz");
    let out = bellows(&[
        "record",
        "-F",
        "499",
        "-o",
        pb.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stacks = Stacks::from_profile(&read_pprof(&pb));
    let in_vdso: i64 = stacks
        .samples
        .iter()
        .filter(|s| {
            s.frames
                .iter()
                .zip(&s.files)
                .any(|(f, file)| file == "[vdso]" && f.contains("clock_gettime"))
        })
        .map(|s| s.value)
        .sum();
    assert!(
        in_vdso * 4 > stacks.total(),
        "named vDSO frames in {in_vdso} of {}",
        stacks.total()
    );
}

/// Runs `first`, then `second` under the pid `first` had (through `ns_last_pid`), a few times;
/// prints the pids that were reused.
const REUSE_PID: &str = r#"
import subprocess, sys
first, second, out = sys.argv[1], sys.argv[2], sys.argv[3]
reused = []
for _ in range(10):
    a = subprocess.Popen([first, "-mode", "cpu", "-duration", "400ms"])
    a.wait()
    # The next pid handed out is a's, unless something else forks meanwhile.
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(a.pid - 1))
    b = subprocess.Popen([second, "-duration", "400ms"])
    b.wait()
    if b.pid == a.pid:
        reused.append(a.pid)
    if len(reused) == 2:
        break
open(out, "w").write(" ".join(map(str, reused)))
"#;

/// Two Go programs run one after the other under the same pid, within one recording. Both are
/// static and load at the same addresses, so a sample resolved with the other's mappings would
/// get the other's function names. Each program's samples must have its own functions only.
#[test]
fn a_reused_pid_keeps_each_process_its_own_functions() {
    let test = "a_reused_pid_keeps_each_process_its_own_functions";
    if !bpf_available(test) {
        return;
    }
    let find = |name: &str| {
        require_go_fixtures(test, name)
            .into_iter()
            .filter(|f| f.variant == "default")
            .max_by(|a, b| a.go_version.cmp(&b.go_version))
    };
    let (Some(cpuburn), Some(frameless)) = (find("cpuburn"), find("frameless")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("reuse.py");
    std::fs::write(&script, REUSE_PID).unwrap();
    let reused = dir.path().join("reused");
    let pb = dir.path().join("profile.pb.gz");
    let out = bellows(&[
        "record",
        "-F",
        "499",
        "-o",
        pb.to_str().unwrap(),
        "--",
        "python3",
        script.to_str().unwrap(),
        cpuburn.path.to_str().unwrap(),
        frameless.path.to_str().unwrap(),
        reused.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "record failed:\n{log}");
    let pids: Vec<i64> = std::fs::read_to_string(&reused)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(!pids.is_empty(), "no pid was reused in 10 tries");
    let stacks = Stacks::from_profile(&read_pprof(&pb));
    let own: [(&str, &[&str], &[&str]); 2] = [
        (
            "cpuburn",
            &["main.mix", "main.hotA", "main.hotB", "main.cpuLoop"],
            &["main.leaf", "main.outerLoop"],
        ),
        (
            "frameless",
            &["main.leaf", "main.outerLoop"],
            &["main.mix", "main.hotA", "main.hotB", "main.cpuLoop"],
        ),
    ];
    for &pid in &pids {
        for (comm, mine, theirs) in own {
            let samples: Vec<_> = stacks
                .samples
                .iter()
                .filter(|s| s.pid == pid && s.comm == comm)
                .collect();
            let named: i64 = samples
                .iter()
                .filter(|s| s.frames.iter().any(|f| mine.contains(&f.as_str())))
                .map(|s| s.value)
                .sum();
            let wrong: Vec<_> = samples
                .iter()
                .filter(|s| s.frames.iter().any(|f| theirs.contains(&f.as_str())))
                .collect();
            assert!(
                named >= 20,
                "pid {pid}: only {named} samples of {comm} name its own functions:\n{log}"
            );
            assert!(
                wrong.is_empty(),
                "pid {pid}: {comm}'s samples name the other program's functions: {:?}",
                wrong.first().map(|s| &s.frames)
            );
        }
    }
}
