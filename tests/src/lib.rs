//! Helpers for the integration tests: locating `bellows` and the fixtures, gating on BPF, running
//! workloads in cgroups, reading back the profiles.
//!
//! Tests that need root or BPF fail under `CI=true` when it is unavailable; elsewhere they print
//! why they skip.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

pub mod fake_kube;
pub mod fake_pyroscope;

use agent::profile::pprof;
use prost::Message;

/// True when running in CI, where nothing may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// How much longer than on this machine waits may take: 5 inside the VM tests, whose guests run
/// under emulation (`BELLOWS_VM_KERNEL` is set there), else 1. Only deadlines scale, never the
/// assertions.
pub fn time_scale() -> u32 {
    if std::env::var_os("BELLOWS_VM_KERNEL").is_some() {
        5
    } else {
        1
    }
}

/// Returns false (after printing why) when this machine cannot load BPF programs and we are not
/// in CI; panics in CI.
pub fn bpf_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let perf = Path::new("/proc/sys/kernel/perf_event_paranoid").exists();
    if root && perf {
        return true;
    }
    let why = if !root {
        "not running as root"
    } else {
        "perf events are not available"
    };
    if in_ci() {
        panic!("{test}: BPF sampling is required in CI but unavailable: {why}");
    }
    eprintln!("skipping {test}: {why}");
    false
}

/// The `bellows` binary: `BELLOWS_BIN`, else next to the test executable's target directory.
pub fn bellows_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BELLOWS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/bellows
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("bellows");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p agent` first (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// One built Go fixture.
#[derive(Debug, Clone)]
pub struct GoFixture {
    pub go_version: String,
    pub variant: String,
    pub path: PathBuf,
}

/// Every built variant of the Go workload `name` under `BELLOWS_FIXTURES/go/<ver>/<variant>/`.
pub fn go_fixtures(name: &str) -> Vec<GoFixture> {
    let root = match std::env::var_os("BELLOWS_FIXTURES") {
        Some(r) => PathBuf::from(r),
        None => {
            let here = Path::new(env!("CARGO_MANIFEST_DIR"));
            here.join("../target/fixtures")
        }
    };
    let mut out = Vec::new();
    let Ok(versions) = std::fs::read_dir(root.join("go")) else {
        return out;
    };
    for version in versions.flatten() {
        let Ok(variants) = std::fs::read_dir(version.path()) else {
            continue;
        };
        for variant in variants.flatten() {
            let path = variant.path().join(name);
            if path.is_file() {
                out.push(GoFixture {
                    go_version: version.file_name().to_string_lossy().into_owned(),
                    variant: variant.file_name().to_string_lossy().into_owned(),
                    path,
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.go_version, &a.variant).cmp(&(&b.go_version, &b.variant)));
    out
}

/// The fixtures, or a failure in CI / a printed skip elsewhere when none were built.
pub fn require_go_fixtures(test: &str, name: &str) -> Vec<GoFixture> {
    let found = go_fixtures(name);
    if found.is_empty() {
        let why = format!("no Go fixture {name:?} built (run `cargo xtask fixtures`)");
        if in_ci() {
            panic!("{test}: {why}");
        }
        eprintln!("skipping {test}: {why}");
    }
    found
}

/// The oldest and the newest of the Go toolchains `cargo xtask test` passes in
/// `BELLOWS_GO_TOOLCHAINS` (one when there is one); empty, after failing in CI, when unset.
pub fn oldest_and_newest_go(test: &str) -> Vec<PathBuf> {
    let all: Vec<PathBuf> = std::env::var("BELLOWS_GO_TOOLCHAINS")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let (Some(oldest), Some(newest)) = (all.first(), all.last()) else {
        let why = "BELLOWS_GO_TOOLCHAINS is not set (cargo xtask test sets it)";
        assert!(!in_ci(), "{test}: {why}");
        eprintln!("skipping {test}: {why}");
        return Vec::new();
    };
    let mut picked = vec![oldest.clone()];
    if newest != oldest {
        picked.push(newest.clone());
    }
    picked
}

/// Builds `tests/fixtures/cgo` (Go calling C) with toolchain `go` into `out`, with `args` added
/// to `go build`; panics with the compiler's output when it fails. `work` holds the build cache
/// and module path of this toolchain.
pub fn build_cgo(go: &Path, args: &[&str], out: &Path, work: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cgo");
    let built = Command::new(go)
        .arg("build")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(".")
        .current_dir(&source)
        .env("CGO_ENABLED", "1")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOCACHE", work.join("cache"))
        .env("GOPATH", work.join("gopath"))
        .output()
        .expect("go build");
    assert!(
        built.status.success(),
        "{} build {args:?}: {}",
        go.display(),
        String::from_utf8_lossy(&built.stderr)
    );
}

/// Runs `bellows` with arguments; returns its output.
pub fn bellows(args: &[&str]) -> Output {
    Command::new(bellows_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn bellows")
}

/// Decodes a gzipped pprof file.
pub fn read_pprof(path: &Path) -> pprof::Profile {
    let gz = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .expect("gunzip pprof");
    pprof::Profile::decode(&raw[..]).expect("decode pprof")
}

/// One decoded sample.
#[derive(Debug, Clone)]
pub struct StackSample {
    pub pid: i64,
    pub tid: i64,
    pub comm: String,
    /// Function names root → leaf, inlined frames expanded (caller before callee).
    pub frames: Vec<String>,
    /// For each entry of `frames`: whether it is a kernel frame (its mapping is the kernel's).
    pub kernel: Vec<bool>,
    /// For each entry of `frames`: the file of its mapping ("" when none).
    pub files: Vec<String>,
    pub value: i64,
}

/// A decoded profile reduced to what the tests assert on.
#[derive(Debug, Default)]
pub struct Stacks {
    pub samples: Vec<StackSample>,
}

impl Stacks {
    pub fn from_profile(p: &pprof::Profile) -> Self {
        let s = |i: i64| {
            p.string_table
                .get(usize::try_from(i).unwrap_or(usize::MAX))
                .cloned()
                .unwrap_or_default()
        };
        let functions: BTreeMap<u64, String> =
            p.function.iter().map(|f| (f.id, s(f.name))).collect();
        let mapping_files: BTreeMap<u64, String> =
            p.mapping.iter().map(|m| (m.id, s(m.filename))).collect();
        let kernel_mappings: std::collections::BTreeSet<u64> = p
            .mapping
            .iter()
            .filter(|m| s(m.filename).contains("kernel"))
            .map(|m| m.id)
            .collect();
        let locations: BTreeMap<u64, (Vec<String>, bool, String)> = p
            .location
            .iter()
            .map(|l| {
                let names = l
                    .line
                    .iter()
                    .map(|line| {
                        functions
                            .get(&line.function_id)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                let file = mapping_files
                    .get(&l.mapping_id)
                    .cloned()
                    .unwrap_or_default();
                (l.id, (names, kernel_mappings.contains(&l.mapping_id), file))
            })
            .collect();
        let mut out = Stacks::default();
        for sample in &p.sample {
            let mut frames = Vec::new();
            let mut kernel = Vec::new();
            let mut files = Vec::new();
            // location_id is leaf first; each location's lines are innermost first.
            for id in sample.location_id.iter().rev() {
                let (names, is_kernel, file) = locations.get(id).cloned().unwrap_or_default();
                if names.is_empty() {
                    frames.push(format!("location {id}"));
                    kernel.push(is_kernel);
                    files.push(file.clone());
                }
                for name in names.into_iter().rev() {
                    frames.push(name);
                    kernel.push(is_kernel);
                    files.push(file.clone());
                }
            }
            let mut pid = -1;
            let mut tid = -1;
            let mut comm = String::new();
            for label in &sample.label {
                match s(label.key).as_str() {
                    "pid" => pid = label.num,
                    "tid" => tid = label.num,
                    "comm" => comm = s(label.str),
                    _ => {}
                }
            }
            let value = sample.value.first().copied().unwrap_or(0);
            out.samples.push(StackSample {
                pid,
                tid,
                comm,
                frames,
                kernel,
                files,
                value,
            });
        }
        out
    }

    pub fn total(&self) -> i64 {
        self.samples.iter().map(|s| s.value).sum()
    }

    /// Sum of values of samples whose stack contains `function` anywhere.
    pub fn total_value(&self, function: &str) -> i64 {
        self.samples
            .iter()
            .filter(|s| s.frames.iter().any(|f| f == function))
            .map(|s| s.value)
            .sum()
    }

    /// Distinct pids.
    pub fn pids(&self) -> std::collections::BTreeSet<i64> {
        self.samples.iter().map(|s| s.pid).collect()
    }
}

/// Moves `pid` into the cgroup v2 directory `dir`.
fn move_into(dir: &Path, pid: u32) {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
}

/// Kills every process in the cgroup v2 directory `dir`.
fn kill_members(dir: &Path) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Where the tests make cgroups: the cgroup2 mount, or on a host with cgroup v1 only the `pids`
/// hierarchy (the one `bellows record -- CMD` prefers there too).
pub fn cgroup_root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    if let Some(v2) = agent::cgroup::find_v2_mount(&mountinfo) {
        return v2;
    }
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            let is_pids =
                right.next()? == "cgroup" && right.nth(1)?.split(',').any(|o| o == "pids");
            let mount_point = left.split_whitespace().nth(4)?;
            is_pids.then(|| PathBuf::from(mount_point))
        })
        .expect("a cgroup2 mount, or a cgroup v1 pids hierarchy")
}

/// The host's cgroup layout; inside the VM tests, also checked against the one the VM mounted.
pub fn cgroup_layout() -> agent::cgroup::Layout {
    agent::cgroup::Layout::of_host()
}

/// A cgroup directory for a test (cgroup v2, else v1: see [`cgroup_root`]), removed (after
/// killing what is inside) on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn create(name: &str) -> Self {
        let path = cgroup_root().join(format!("bellows-test-{name}-{}", std::process::id()));
        let _ = std::fs::create_dir(&path);
        assert!(path.is_dir(), "cannot create {}", path.display());
        TestCgroup { path }
    }

    /// Moves `pid` into the cgroup.
    pub fn add(&self, pid: u32) {
        move_into(&self.path, pid);
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        kill_members(&self.path);
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A running workload, killed on drop.
pub struct Workload(pub Child);

impl Workload {
    pub fn start(path: &Path, args: &[&str]) -> Self {
        let child = Command::new(path)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        Workload(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `go tool pprof` with `args` on `profile`; returns (stdout, stderr) after asserting a clean
/// exit with no warnings. Panics in CI when Go is missing; returns None (with a printed reason)
/// elsewhere.
pub fn go_tool_pprof(args: &[&str], profile: &Path) -> Option<(String, String)> {
    let go = std::env::var("BELLOWS_GO_TOOLCHAINS")
        .ok()
        .and_then(|l| l.split(':').find(|p| !p.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("go"));
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(&go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(profile)
        .env("HOME", home.path())
        .env("PPROF_TMPDIR", home.path())
        .env("GOCACHE", home.path().join("gocache"))
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            if in_ci() {
                panic!("go tool pprof unavailable in CI: {e}");
            }
            eprintln!("skipping the go tool pprof check: {e}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {stderr}"
    );
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("warning") && !lower.contains("error") && !lower.contains("malformed"),
        "go tool pprof {args:?} complained: {stderr}"
    );
    Some((stdout, stderr))
}

/// A container's cgroup laid out the way the kubelet (systemd driver) and containerd lay it out
/// under the cgroup v2 hierarchy (or, with cgroup v1 only, under the `pids` hierarchy):
/// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`.
/// Processes inside are killed and the directories removed on drop.
pub struct KubeletCgroup {
    pub pod_uid: String,
    pub container_id: String,
    pub scope: PathBuf,
    /// Directories we created, innermost first.
    created: Vec<PathBuf>,
}

impl KubeletCgroup {
    /// `seed` makes the ids distinct between the cgroups of one test.
    pub fn create(seed: u32) -> Self {
        let mount = cgroup_root();
        let tag = format!("{:08x}{:04x}", std::process::id(), seed & 0xffff);
        let pod_uid = format!(
            "{}-{}-4{}-8{}-{}",
            &tag[..8],
            &tag[8..12],
            &tag[9..12],
            &tag[9..12],
            &format!("{tag}{tag}")[..12]
        );
        let container_id = tag.repeat(6)[..64].to_string();
        let pod_slice = format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_"));
        let levels = [
            "kubepods.slice".to_string(),
            "kubepods-burstable.slice".to_string(),
            pod_slice,
            format!("cri-containerd-{container_id}.scope"),
        ];
        let mut created = Vec::new();
        let mut dir = mount;
        for level in levels {
            dir = dir.join(level);
            if std::fs::create_dir(&dir).is_ok() {
                created.push(dir.clone());
            }
        }
        assert!(dir.is_dir(), "cannot create {}", dir.display());
        created.reverse();
        KubeletCgroup {
            pod_uid,
            container_id,
            scope: dir,
            created,
        }
    }

    /// Moves `pid` into the container's cgroup.
    pub fn add(&self, pid: u32) {
        move_into(&self.scope, pid);
    }
}

impl Drop for KubeletCgroup {
    fn drop(&mut self) {
        kill_members(&self.scope);
        for dir in &self.created {
            for _ in 0..50 {
                // Shared parents (another test's pod) stay: removing a non-empty one fails.
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
