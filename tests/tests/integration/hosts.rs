//! What a bare host gives us: no tracefs or debugfs, and any of the three cgroup layouts.
//!
//! `cargo xtask vm-test` boots Debian kernels with a userspace that mounts only proc, sys, dev
//! and the cgroup layout it names in `BELLOWS_VM_LAYOUT` (`v2`, `hybrid`, `v1`), and runs these
//! tests there; they run on this host too, where the README's record command runs in a mount
//! namespace without tracefs and debugfs.

use std::{
    collections::BTreeSet,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use agent::cgroup::Layout;
use tests::{
    bellows_bin, bpf_available, cgroup_layout, read_pprof, require_go_fixtures, GoFixture, Stacks,
    TestCgroup, Workload,
};

fn fixture(test: &str) -> Option<GoFixture> {
    if !bpf_available(test) {
        return None;
    }
    require_go_fixtures(test, "cpuburn")
        .into_iter()
        .find(|f| f.variant == "default")
}

/// Filesystem types mounted here, from `/proc/mounts` (a file the agent does not read).
fn mounted_types() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

#[test]
fn the_cgroup_layout_is_read_as_mounted() {
    let types = mounted_types();
    let expected = match (types.contains("cgroup2"), types.contains("cgroup")) {
        (true, false) => Layout::V2,
        (true, true) => Layout::Hybrid,
        (false, true) => Layout::V1,
        (false, false) => Layout::None,
    };
    assert_eq!(cgroup_layout(), expected, "mounted: {types:?}");
    if let Ok(vm) = std::env::var("BELLOWS_VM_LAYOUT") {
        // Inside the VM tests: the layout the guest mounted, and a bare host otherwise.
        let wanted = match vm.as_str() {
            "v2" => Layout::V2,
            "hybrid" => Layout::Hybrid,
            "v1" => Layout::V1,
            other => panic!("unknown BELLOWS_VM_LAYOUT {other:?}"),
        };
        assert_eq!(cgroup_layout(), wanted);
        for bare in ["tracefs", "debugfs"] {
            assert!(!types.contains(bare), "{bare} is mounted in the VM");
        }
    }
}

/// `bellows ARGS` in a private mount namespace in which tracefs and debugfs are unmounted, as on
/// a fresh host; fails (status 97) if either is still mounted there.
fn bellows_without_tracefs(args: &[&str], cwd: &Path) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(
            "if grep -qE ' - (tracefs|debugfs) ' /proc/self/mountinfo; then \
             echo 'tracefs or debugfs still mounted' >&2; exit 97; fi; exec \"$0\" \"$@\"",
        )
        .arg(bellows_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null());
    // SAFETY: runs in the forked child before exec; unshare, mount and umount2 are plain
    // syscalls on static strings.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Unmounts below must not reach the host's namespace.
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for path in [
                c"/sys/kernel/debug/tracing",
                c"/sys/kernel/tracing",
                c"/sys/kernel/debug",
            ] {
                // Not mounted (EINVAL) or absent (ENOENT) is what we want anyway.
                libc::umount2(path.as_ptr(), libc::MNT_DETACH);
            }
            Ok(())
        });
    }
    cmd.output().expect("spawn bellows")
}

/// The README's first command ends in `bellows record -d 10 -o profile.pb.gz --flamegraph
/// flame.svg` (shortened here to 3 s): on a host without tracefs it profiles the machine.
#[test]
fn readme_record_command_profiles_a_host_without_tracefs() {
    let Some(fx) = fixture("readme_record_command_profiles_a_host_without_tracefs") else {
        return;
    };
    // Long enough to outlast bellows' start however slow the machine (killed on drop).
    let work = Workload::start(&fx.path, &["-duration", "60s", "-mode", "all"]);
    std::thread::sleep(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let out = bellows_without_tracefs(
        &[
            "record",
            "-d",
            "3",
            "-o",
            "profile.pb.gz",
            "--flamegraph",
            "flame.svg",
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bellows record failed: {stderr}");
    let stacks = Stacks::from_profile(&read_pprof(&dir.path().join("profile.pb.gz")));
    assert!(
        stacks.pids().contains(&i64::from(work.pid())),
        "the running workload is missing: {stdout}"
    );
    assert!(stacks.total_value("main.hotA") > 0, "{stdout}");
    let svg = std::fs::read_to_string(dir.path().join("flame.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("main.hotA"));
    assert!(stdout.contains("self%"), "no top table: {stdout}");
}

/// A process that execs while recorded is read again as its new image: the exec hook (a raw
/// tracepoint, no tracefs needed) forgets it, so its next sample announces it anew.
#[test]
fn a_process_that_execs_is_symbolized_as_its_new_image() {
    let Some(fx) = fixture("a_process_that_execs_is_symbolized_as_its_new_image") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Busy in sh first, so that it is sampled (and its mappings read) before the exec.
    let script = format!(
        "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec {} -duration 2s -mode cpu",
        fx.path.display()
    );
    let out = bellows_without_tracefs(
        &[
            "record", "-F", "499", "-o", "p.pb.gz", "--", "sh", "-c", &script,
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bellows record failed: {stderr}");
    let stacks = Stacks::from_profile(&read_pprof(&dir.path().join("p.pb.gz")));
    let comms: BTreeSet<&str> = stacks.samples.iter().map(|s| s.comm.as_str()).collect();
    assert!(
        comms.contains("sh") && comms.contains("cpuburn"),
        "the same process before and after exec: {comms:?}"
    );
    assert_eq!(stacks.pids().len(), 1, "{:?}", stacks.pids());
    // After the exec, the workload's own functions are named: with the old image's mappings
    // its addresses would name nothing.
    let after_exec = stacks.samples.iter().filter(|s| s.comm == "cpuburn");
    let total: i64 = after_exec.clone().map(|s| s.value).sum();
    let named: i64 = after_exec
        .filter(|s| s.frames.iter().any(|f| f.starts_with("main.")))
        .map(|s| s.value)
        .sum();
    assert!(stacks.total_value("main.hotA") > 0);
    // Half at least: under emulation the Go runtime's start takes a larger share.
    assert!(
        named * 2 >= total,
        "after exec, main.* named in {named} of {total} ns sampled: the old image's mappings \
         were used"
    );
}

/// `record -- CMD` follows the command's children and nothing else, on every layout: through a
/// cgroup v2 scratch directory in the kernel, or a v1 one in userspace (said in the summary).
#[test]
fn record_command_follows_its_children_on_every_layout() {
    let Some(fx) = fixture("record_command_follows_its_children_on_every_layout") else {
        return;
    };
    let outside = Workload::start(&fx.path, &["-duration", "60s", "-mode", "cpu"]);
    let dir = tempfile::tempdir().unwrap();
    let bin = fx.path.display();
    let script = format!("{bin} -duration 2s -mode cpu & {bin} -duration 2s -mode cpu & wait");
    let out = bellows_without_tracefs(
        &["record", "-o", "p.pb.gz", "--", "sh", "-c", &script],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bellows record failed: {stderr}");
    let stacks = Stacks::from_profile(&read_pprof(&dir.path().join("p.pb.gz")));
    let children: BTreeSet<i64> = stacks
        .samples
        .iter()
        .filter(|s| s.comm == "cpuburn")
        .map(|s| s.pid)
        .collect();
    assert_eq!(children.len(), 2, "both children: {stdout}");
    assert!(
        !stacks.pids().contains(&i64::from(outside.pid())),
        "a process outside the command was recorded: {stdout}"
    );
    check_selection_summary(&stdout);
}

/// On cgroup v1 only, the summary says that samples were selected in userspace; elsewhere the
/// kernel selects and the summary does not say so.
pub fn check_selection_summary(stdout: &str) {
    let in_userspace = stdout.contains("Selected in userspace (cgroup v1");
    assert_eq!(
        in_userspace,
        cgroup_layout() == Layout::V1,
        "layout {:?}: {stdout}",
        cgroup_layout()
    );
}

/// On a v1-only host every task reports the id of the v2 root, so the kernel cannot tell cgroups
/// apart: the reason selection moves to userspace there. Elsewhere, tasks in two cgroups report
/// two ids.
#[test]
fn cgroup_ids_tell_cgroups_apart_except_on_v1() {
    let Some(fx) = fixture("cgroup_ids_tell_cgroups_apart_except_on_v1") else {
        return;
    };
    let (cg_a, cg_b) = (TestCgroup::create("ids-a"), TestCgroup::create("ids-b"));
    let a = Workload::start(&fx.path, &["-duration", "10s", "-mode", "cpu"]);
    cg_a.add(a.pid());
    let b = Workload::start(&fx.path, &["-duration", "10s", "-mode", "cpu"]);
    cg_b.add(b.pid());
    let mut sampler = agent::ebpf::Sampler::load(&agent::ebpf::SamplerConfig {
        frequency_hz: 499,
        pids: vec![a.pid(), b.pid()],
        ..Default::default()
    })
    .unwrap();
    sampler.start(499).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    sampler.stop();
    let drained = sampler.drain().unwrap();
    let ids = |pid: u32| -> BTreeSet<u64> {
        drained
            .samples
            .iter()
            .filter(|s| s.tgid == pid)
            .map(|s| s.cgroup_id)
            .collect()
    };
    let (ids_a, ids_b) = (ids(a.pid()), ids(b.pid()));
    assert!(!ids_a.is_empty() && !ids_b.is_empty(), "both sampled");
    if cgroup_layout() == Layout::V1 {
        assert_eq!(ids_a, ids_b, "v1 only: one id for every task");
    } else {
        let id = |cg: &TestCgroup| agent::cgroup::cgroup_id(&cg.path).unwrap();
        assert_eq!(ids_a, BTreeSet::from([id(&cg_a)]));
        assert_eq!(ids_b, BTreeSet::from([id(&cg_b)]));
    }
}
