//! `cargo xtask vm-test`: the real-kernel integration tests inside Debian kernels booted in QEMU
//! with a bare userspace.
//!
//! A fresh host mounts neither tracefs nor debugfs and may lay its cgroups out as v2, hybrid or
//! v1; the host we develop on is one kernel and one layout. Each VM here boots a Debian kernel
//! package (cached under `target/vm/kernels/<series>/vmlinuz`) with one initramfs built per run:
//! busybox, the `integration` test binary, `bellows`, their shared libraries and the Go fixtures,
//! nothing else. Its `/init` mounts proc, sysfs, devtmpfs, two tmpfs and the cgroup layout named
//! on the kernel command line, runs the tests listed in [`GUEST_TESTS`] (or the filters given)
//! and powers off. QEMU runs under TCG: KVM guests hang on machines of this kind.

use std::{
    collections::BTreeSet,
    fmt,
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use clap::ValueEnum;

use crate::{cargo, describe, run};

/// The libtest filters run in every guest: module paths in the `integration` test binary
/// (tests/tests/integration/). Each must match at least one test, and every matched test must
/// pass: a renamed test fails the run instead of silently dropping out.
pub const GUEST_TESTS: &[&str] = &[
    "sampler::",
    "record::cgroup_filter_counts_only_the_selected_cgroup",
    "record::pid_filter_counts_only_the_selected_process",
    "record::whole_system_sees_a_running_workload_and_the_kernel",
    "run::run_pushes_pod_labelled_profiles_of_selected_pods_only",
    "hosts::",
    // The unwinder loads on every kernel (sampler::the_unwinder_loads_and_hands_out_its_maps)
    // and walks Go's frameless leaf as the program's own profile has it. The native and cgo
    // comparisons build their programs with gcc and rustc, which guests do not have.
    "unwinding::go_frameless_leaf_keeps_its_caller_on_every_build",
];

/// The matrix `cargo xtask vm-test` (and `cargo xtask test`) runs without `--kernel`/`--layout`:
/// every kernel with cgroup v2, and the legacy layouts on one kernel each.
pub const DEFAULT_MATRIX: &[(&str, Layout)] = &[
    ("5.10", Layout::V2),
    ("6.1", Layout::V2),
    ("6.12", Layout::V2),
    ("6.18", Layout::V2),
    ("6.1", Layout::Hybrid),
    ("5.10", Layout::V1),
];

/// Which Debian archive a kernel series comes from: the URIs are read from the machine's
/// `/etc/apt/sources.list.d/debian.sources`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Archive {
    /// The main archive (`…/debian`).
    Main,
    /// The security archive (`…/debian-security`).
    Security,
}

/// A kernel series and the suite whose newest plain amd64 image is used for it.
struct Series {
    name: &'static str,
    archive: Archive,
    suite: &'static str,
}

/// Every kernel series a guest can boot.
const SERIES: &[Series] = &[
    Series {
        name: "5.10",
        archive: Archive::Security,
        suite: "bullseye-security",
    },
    Series {
        name: "6.1",
        archive: Archive::Main,
        suite: "bookworm",
    },
    Series {
        name: "6.12",
        archive: Archive::Main,
        suite: "trixie",
    },
    Series {
        name: "6.18",
        archive: Archive::Main,
        suite: "trixie-backports",
    },
];

/// Where the machine's apt finds Debian; the archive URIs are reused from it.
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const BUSYBOX: &str = "/bin/busybox";
const QEMU: &str = "qemu-system-x86_64";

/// Printed by `/init` as its first line: boot time is measured up to here.
const INIT_MARKER: &str = "@@BELLOWS-VM init started@@";
/// Printed by `/init` right before the test binary starts.
const TESTS_MARKER: &str = "@@BELLOWS-VM tests starting@@";
/// Printed by `/init` after the test binary, followed by `<status>@@`.
const RESULT_MARKER: &str = "@@BELLOWS-VM result: exit status ";

/// Where things live inside the guest.
const GUEST_BIN_DIR: &str = "usr/local/bin";
const GUEST_FIXTURES: &str = "opt/bellows/fixtures";

/// A guest's cgroup layout, passed to `/init` as `bellows.layout=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Layout {
    /// cgroup2 at /sys/fs/cgroup.
    V2,
    /// v1 controllers under a tmpfs at /sys/fs/cgroup, cgroup2 at /sys/fs/cgroup/unified (what
    /// systemd's hybrid mode and this machine have).
    Hybrid,
    /// v1 controllers only, no cgroup2 anywhere.
    V1,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::V2 => "v2",
            Layout::Hybrid => "hybrid",
            Layout::V1 => "v1",
        })
    }
}

/// What `cargo xtask vm-test` was asked for.
pub struct Options {
    /// Kernel series (empty: those of the default matrix).
    pub kernels: Vec<String>,
    /// Layouts (empty: v2 when kernels are given, else the default matrix).
    pub layouts: Vec<Layout>,
    /// libtest filters (empty: [`GUEST_TESTS`]).
    pub filters: Vec<String>,
    /// Longest a VM may run, boot to power-off.
    pub timeout: Duration,
}

impl Options {
    /// The default matrix with [`GUEST_TESTS`].
    pub fn default_matrix() -> Self {
        Options {
            kernels: Vec::new(),
            layouts: Vec::new(),
            filters: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Per-VM limit unless `--timeout` says otherwise: about three times the slowest VM measured
/// (200 s for boot and tests, 6.1 hybrid, TCG on 2 cores).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A kernel ready to boot.
struct KernelImage {
    series: String,
    /// `name version` of the Debian package it came from.
    package: String,
    vmlinuz: PathBuf,
}

/// The two Rust binaries the guest runs.
struct Binaries {
    integration: PathBuf,
    bellows: PathBuf,
}

/// Runs the matrix; fails naming every VM that failed.
pub fn vm_test(root: &Path, options: &Options) -> Result<()> {
    let matrix = matrix(options)?;
    check_tools()?;
    let mut series: Vec<&str> = Vec::new();
    for (s, _) in &matrix {
        if !series.contains(&s.as_str()) {
            series.push(s);
        }
    }
    let kernels = fetch_kernels(root, &series)?;
    let binaries = build_binaries(root)?;
    let filters: Vec<String> = if options.filters.is_empty() {
        GUEST_TESTS.iter().map(|s| s.to_string()).collect()
    } else {
        options.filters.clone()
    };
    let expected = listed_tests(&binaries.integration, &filters)?;
    eprintln!(
        "vm-test: {} tests per VM ({}), {} VMs",
        expected.len(),
        filters.join(" "),
        matrix.len()
    );
    let initramfs = build_initramfs(root, &binaries, &filters)?;
    let logs = root.join("target/vm/logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let started = Instant::now();
    let mut reports = Vec::new();
    for (series, layout) in &matrix {
        let kernel = kernels
            .iter()
            .find(|k| &k.series == series)
            .expect("every series of the matrix was fetched");
        let log = logs.join(format!("{series}-{layout}.log"));
        let report = run_vm(kernel, *layout, &initramfs, expected.len(), options, &log);
        eprintln!("\nvm-test: {}", report.one_line());
        reports.push(report);
    }
    print_summary(&reports, started.elapsed());
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{} {} (log {})", r.series, r.layout, r.log.display()))
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} VMs failed: {}",
            failed.len(),
            reports.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The (series, layout) pairs to run: the default matrix, or the product of the kernels and
/// layouts asked for (all series when only layouts are given, v2 when only kernels are).
fn matrix(options: &Options) -> Result<Vec<(String, Layout)>> {
    for k in &options.kernels {
        ensure!(
            SERIES.iter().any(|s| s.name == k),
            "unknown kernel series {k:?}: choose from {}",
            SERIES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
    }
    if options.kernels.is_empty() && options.layouts.is_empty() {
        return Ok(DEFAULT_MATRIX
            .iter()
            .map(|(s, l)| (s.to_string(), *l))
            .collect());
    }
    let kernels: Vec<String> = if options.kernels.is_empty() {
        SERIES.iter().map(|s| s.name.to_string()).collect()
    } else {
        options.kernels.clone()
    };
    let layouts = if options.layouts.is_empty() {
        vec![Layout::V2]
    } else {
        options.layouts.clone()
    };
    let mut out = Vec::new();
    for k in &kernels {
        for l in &layouts {
            if !out.contains(&(k.clone(), *l)) {
                out.push((k.clone(), *l));
            }
        }
    }
    Ok(out)
}

/// Fails with one line when QEMU or busybox is missing.
fn check_tools() -> Result<()> {
    let qemu = Command::new(QEMU).arg("--version").output();
    ensure!(
        qemu.is_ok_and(|o| o.status.success()),
        "{QEMU} does not run: install qemu-system-x86 (`cargo xtask setup`)"
    );
    ensure!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: install busybox-static (`cargo xtask setup`)"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// Every kernel of `series`, from the cache or downloaded; prints the package chosen for each.
fn fetch_kernels(root: &Path, series: &[&str]) -> Result<Vec<KernelImage>> {
    let mut out = Vec::new();
    for name in series {
        let s = SERIES
            .iter()
            .find(|s| s.name == *name)
            .expect("series validated by matrix()");
        let kernel = fetch_kernel(root, s)
            .with_context(|| format!("cannot get a {} kernel (suite {})", s.name, s.suite))?;
        eprintln!(
            "vm-test: kernel {}: {} ({})",
            kernel.series,
            kernel.package,
            kernel.vmlinuz.display()
        );
        out.push(kernel);
    }
    Ok(out)
}

/// One series' kernel under `target/vm/kernels/<series>/`: `vmlinuz` and `package` (name and
/// version). Cached: nothing is fetched when both exist.
fn fetch_kernel(root: &Path, series: &Series) -> Result<KernelImage> {
    let dir = root.join("target/vm/kernels").join(series.name);
    let vmlinuz = dir.join("vmlinuz");
    let package_file = dir.join("package");
    if vmlinuz.is_file() {
        if let Ok(package) = std::fs::read_to_string(&package_file) {
            return Ok(KernelImage {
                series: series.name.to_string(),
                package: package.trim().to_string(),
                vmlinuz,
            });
        }
    }
    let apt = PrivateApt::new(root, series)?;
    apt.update()?;
    let package = apt.newest_kernel(series.name)?;
    let work = dir.join("download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    run(apt
        .command("apt-get")
        .arg("download")
        .arg(&package)
        .current_dir(&work))?;
    let deb = only_file(&work, ".deb")?;
    let version = deb_field(&deb, "Version")?;
    let unpacked = work.join("unpacked");
    extract_boot(&deb, &unpacked)?;
    let image = only_file(&unpacked.join("boot"), "")
        .with_context(|| format!("no boot/vmlinuz-* in {}", deb.display()))?;
    std::fs::rename(&image, &vmlinuz)
        .with_context(|| format!("moving {} to {}", image.display(), vmlinuz.display()))?;
    let described = format!("{package} {version}");
    std::fs::write(&package_file, format!("{described}\n"))
        .with_context(|| format!("writing {}", package_file.display()))?;
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(KernelImage {
        series: series.name.to_string(),
        package: described,
        vmlinuz,
    })
}

/// An apt configuration of its own for one suite under `target/vm/apt/<suite>/`: the host's
/// apt state is neither read nor changed.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    /// Writes the sources list: the series' suite on the archive URI the machine's
    /// [`DEBIAN_SOURCES`] names for it.
    fn new(root: &Path, series: &Series) -> Result<Self> {
        let dir = root.join("target/vm/apt").join(series.suite);
        for sub in ["lists/partial", "cache/archives/partial"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let text = std::fs::read_to_string(DEBIAN_SOURCES)
            .with_context(|| format!("reading {DEBIAN_SOURCES} (the Debian archive URIs)"))?;
        let uri = archive_uri(&text, series.archive).with_context(|| {
            format!(
                "{DEBIAN_SOURCES} names no {} archive",
                match series.archive {
                    Archive::Main => "main (non-security)",
                    Archive::Security => "security",
                }
            )
        })?;
        let list = format!(
            "deb [signed-by={DEBIAN_KEYRING}] {uri} {} main\n",
            series.suite
        );
        let path = dir.join("sources.list");
        std::fs::write(&path, list).with_context(|| format!("writing {}", path.display()))?;
        Ok(PrivateApt { dir })
    }

    /// `program` (apt-get, apt-cache) on this configuration only.
    fn command(&self, program: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut cmd = Command::new(program);
        cmd.arg("-q")
            .arg("-o")
            .arg(format!("Dir::Etc::SourceList={}", d("sources.list")))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .args(["-o", "Dir::Etc::Preferences=/dev/null"])
            .args(["-o", "Dir::Etc::PreferencesParts=/dev/null"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", d("lists")))
            .arg("-o")
            .arg(format!("Dir::Cache={}", d("cache")))
            .args(["-o", "Acquire::Languages=none"])
            // Files under target/ are root's; apt's `_apt` sandbox user cannot write there.
            .args(["-o", "APT::Sandbox::User=root"]);
        cmd
    }

    fn update(&self) -> Result<()> {
        run(self.command("apt-get").arg("update"))
    }

    /// The highest-versioned plain `linux-image-<series>.*-amd64` package of the suite (the
    /// `-unsigned` one when no signed one exists; never -rt, -cloud or -dbg).
    fn newest_kernel(&self, series: &str) -> Result<String> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["search", "--names-only", "^linux-image-"]);
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", describe(&cmd)))?;
        ensure!(
            out.status.success(),
            "{} failed: {}",
            describe(&cmd),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        choose_kernel(&names, series).with_context(|| {
            format!(
                "no plain linux-image-{series}.*-amd64 package among {} linux-image packages",
                names.len()
            )
        })
    }
}

/// The first URI of the first `deb` stanza of a deb822 sources file serving `archive`: the
/// security archive is the stanza whose suites all end in `-security`.
fn archive_uri(sources: &str, archive: Archive) -> Option<String> {
    for stanza in sources.split("\n\n") {
        let mut uris = None;
        let mut suites = None;
        let mut types = None;
        for line in stanza.lines() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                match key.trim() {
                    "URIs" => uris = Some(value.trim().to_string()),
                    "Suites" => suites = Some(value.trim().to_string()),
                    "Types" => types = Some(value.trim().to_string()),
                    _ => {}
                }
            }
        }
        let (Some(uris), Some(suites)) = (uris, suites) else {
            continue;
        };
        if !types.is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        let security = suites.split_whitespace().all(|s| s.ends_with("-security"));
        if security == (archive == Archive::Security) {
            if let Some(uri) = uris.split_whitespace().next() {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// Picks the kernel of `series` among package names: `linux-image-<abi>-amd64` (or
/// `…-amd64-unsigned` when no signed build of that ABI is listed) where `<abi>` is
/// `<series>.<…>` and every `-`-separated part after the first starts with a digit (which
/// excludes the `-rt-` and `-cloud-` flavours); the highest ABI in version order wins.
fn choose_kernel(names: &[String], series: &str) -> Option<String> {
    let mut best: Option<(&str, &String)> = None;
    for name in names {
        let Some(rest) = name.strip_prefix("linux-image-") else {
            continue;
        };
        let (abi, unsigned) = match rest.strip_suffix("-amd64-unsigned") {
            Some(abi) => (abi, true),
            None => match rest.strip_suffix("-amd64") {
                Some(abi) => (abi, false),
                None => continue,
            },
        };
        if !abi
            .strip_prefix(series)
            .is_some_and(|tail| tail.starts_with('.'))
        {
            continue;
        }
        if !abi
            .split('-')
            .skip(1)
            .all(|part| part.starts_with(|c: char| c.is_ascii_digit()))
        {
            continue;
        }
        if unsigned
            && names
                .iter()
                .any(|n| *n == format!("linux-image-{abi}-amd64"))
        {
            continue;
        }
        if best.is_none_or(|(b, _)| version_key(abi) > version_key(b)) {
            best = Some((abi, name));
        }
    }
    best.map(|(_, name)| name.clone())
}

/// Orders version strings the way their numbers read: digit runs compare as numbers, other
/// runs as text (`6.1.0-37` after `6.1.0-9`).
fn version_key(v: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut chars = v.chars().peekable();
    while chars.peek().is_some() {
        let mut text = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_ascii_digit()) {
            text.push(c);
        }
        let mut digits = String::new();
        while let Some(c) = chars.next_if(|c| c.is_ascii_digit()) {
            digits.push(c);
        }
        key.push((0, text));
        key.push((digits.parse().unwrap_or(u64::MAX), String::new()));
    }
    key
}

/// The only file in `dir` whose name ends with `suffix`.
fn only_file(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => bail!(
            "expected one *{suffix} file in {}, found {n}",
            dir.display()
        ),
    }
}

/// One control field of a .deb.
fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-f").arg(deb).arg(field);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", describe(&cmd)))?;
    ensure!(out.status.success(), "{} failed", describe(&cmd));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Unpacks only `boot/` of a kernel package into `dest` (`dpkg-deb --fsys-tarfile | tar`): its
/// hundreds of MB of modules are of no use to an initramfs-only guest.
fn extract_boot(deb: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut dpkg = Command::new("dpkg-deb");
    dpkg.arg("--fsys-tarfile").arg(deb).stdout(Stdio::piped());
    eprintln!("+ {} | tar -x ./boot", describe(&dpkg));
    let mut producer = dpkg
        .spawn()
        .with_context(|| format!("cannot run {}", describe(&dpkg)))?;
    let mut tar = Command::new("tar");
    tar.arg("-x")
        .arg("-C")
        .arg(dest)
        .args(["--wildcards", "./boot/vmlinuz-*"])
        .stdin(producer.stdout.take().expect("piped"));
    let tar_status = tar
        .status()
        .with_context(|| format!("cannot run {}", describe(&tar)))?;
    let dpkg_status = producer.wait()?;
    ensure!(dpkg_status.success(), "{} failed", describe(&dpkg));
    ensure!(tar_status.success(), "{} failed", describe(&tar));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The guest's userspace
// ---------------------------------------------------------------------------------------------

/// Builds `bellows` and the `integration` test binary; returns their paths.
fn build_binaries(root: &Path) -> Result<Binaries> {
    run(cargo()
        .current_dir(root)
        .args(["build", "--package", "agent", "--bin", "bellows"]))?;
    let mut cmd = cargo();
    cmd.current_dir(root).args([
        "test",
        "--package",
        "tests",
        "--no-run",
        "--message-format=json",
    ]);
    eprintln!("+ {}", describe(&cmd));
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", describe(&cmd)))?;
    ensure!(out.status.success(), "{} failed", describe(&cmd));
    let integration = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .filter(|l| artifact_target_name(l).as_deref() == Some("integration"))
        .find_map(|l| json_string_field(l, "executable"))
        .map(PathBuf::from)
        .context("cargo built no `integration` test executable in package tests")?;
    Ok(Binaries {
        integration,
        bellows: root.join("target/debug/bellows"),
    })
}

/// The target name of one `compiler-artifact` message: the first `"name"` inside `"target"`
/// (cargo writes `kind` and `crate_types`, both arrays of strings, before it).
fn artifact_target_name(line: &str) -> Option<String> {
    let target = &line[line.find("\"target\":{")?..];
    json_string_field(target, "name")
}

/// The string value of the first `"key":"…"` in a line of JSON, unescaped. Enough for cargo's
/// messages, which xtask reads without a JSON dependency.
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let mut out = String::new();
    let mut chars = json[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
}

/// The tests the filters select (`--list` on this machine); fails naming a filter that selects
/// none.
fn listed_tests(integration: &Path, filters: &[String]) -> Result<BTreeSet<String>> {
    let mut all = BTreeSet::new();
    for filter in filters {
        let mut cmd = Command::new(integration);
        cmd.args(["--list", filter]);
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", describe(&cmd)))?;
        ensure!(out.status.success(), "{} failed", describe(&cmd));
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_string)
            .collect();
        ensure!(
            !names.is_empty(),
            "test filter {filter:?} selects no test in {}: a test was renamed or removed \
             (update GUEST_TESTS in xtask/src/vm.rs)",
            integration.display()
        );
        all.extend(names);
    }
    Ok(all)
}

/// Writes the initramfs of this run to `target/vm/initramfs.cpio` (uncompressed: the guest
/// unpacks it faster than it would inflate it under TCG).
fn build_initramfs(root: &Path, binaries: &Binaries, filters: &[String]) -> Result<PathBuf> {
    let tree = root.join("target/vm/rootfs");
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "root",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        GUEST_BIN_DIR,
    ] {
        let d = tree.join(dir);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    install_busybox(&tree)?;
    for (binary, name) in [
        (&binaries.integration, "integration"),
        (&binaries.bellows, "bellows"),
    ] {
        let dest = tree.join(GUEST_BIN_DIR).join(name);
        run(Command::new("objcopy")
            .arg("--strip-debug")
            .arg(binary)
            .arg(&dest))?;
        copy_shared_libraries(binary, &tree)?;
    }
    let fixtures = root.join("target/fixtures/go");
    ensure!(
        fixtures.is_dir(),
        "{} is missing: run `cargo xtask fixtures`",
        fixtures.display()
    );
    copy_tree(&fixtures, &tree.join(GUEST_FIXTURES).join("go"))?;
    // What every host has: a root user and localhost.
    write_file(
        &tree.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    write_file(&tree.join("etc/group"), "root:x:0:\n", 0o644)?;
    write_file(
        &tree.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
        0o644,
    )?;
    // And CA certificates (any node, and the distroless image, has them): the Kubernetes
    // client refuses to start without a root store even for a plain-HTTP API.
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.is_file() {
        std::fs::create_dir_all(tree.join("etc/ssl/certs"))?;
        std::fs::copy(ca, tree.join("etc/ssl/certs/ca-certificates.crt"))
            .with_context(|| format!("copying {}", ca.display()))?;
    }
    write_file(&tree.join("init"), &init_script(filters), 0o755)?;
    let image = root.join("target/vm/initramfs.cpio");
    write_cpio(&tree, &image)?;
    let size = std::fs::metadata(&image)?.len();
    eprintln!(
        "vm-test: initramfs {} ({} MiB)",
        image.display(),
        size >> 20
    );
    Ok(image)
}

/// `/bin/busybox` and a link for each of its applets.
fn install_busybox(tree: &Path) -> Result<()> {
    std::fs::copy(BUSYBOX, tree.join("bin/busybox")).context("copying /bin/busybox")?;
    let mut cmd = Command::new(BUSYBOX);
    cmd.arg("--list-full");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", describe(&cmd)))?;
    ensure!(out.status.success(), "{} failed", describe(&cmd));
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let link = tree.join(applet.trim_start_matches('/'));
        if applet.is_empty() || link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}

/// Copies the shared libraries and the dynamic loader `ldd` lists for `binary` to the same
/// paths under `tree`.
fn copy_shared_libraries(binary: &Path, tree: &Path) -> Result<()> {
    let mut cmd = Command::new("ldd");
    cmd.arg(binary);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", describe(&cmd)))?;
    ensure!(out.status.success(), "{} failed", describe(&cmd));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux… (0x…)`.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let dest = tree.join(path.trim_start_matches('/'));
        if dest.exists() {
            continue;
        }
        std::fs::create_dir_all(dest.parent().expect("absolute path has a parent"))?;
        std::fs::copy(path, &dest)
            .with_context(|| format!("copying {path} to {}", dest.display()))?;
    }
    Ok(())
}

/// Copies a directory tree (files keep their mode; symlinks are followed).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let dest = to.join(path.file_name().expect("directory entry has a name"));
        if path.is_dir() {
            copy_tree(&path, &dest)?;
        } else {
            std::fs::copy(&path, &dest)
                .with_context(|| format!("copying {} to {}", path.display(), dest.display()))?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Archives `tree` as a newc cpio with busybox (there is no `cpio` binary), parents first.
fn write_cpio(tree: &Path, image: &Path) -> Result<()> {
    let mut names = Vec::new();
    list_tree(tree, Path::new(""), &mut names)?;
    let output = File::create(image).with_context(|| format!("creating {}", image.display()))?;
    let mut cmd = Command::new(BUSYBOX);
    cmd.args(["cpio", "-o", "-H", "newc"])
        .current_dir(tree)
        .stdin(Stdio::piped())
        .stdout(output);
    eprintln!("+ {}", describe(&cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", describe(&cmd)))?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        for name in &names {
            writeln!(stdin, "{}", name.display())?;
        }
    }
    let status = child.wait()?;
    ensure!(status.success(), "{} failed: {status}", describe(&cmd));
    Ok(())
}

/// Every path under `dir` relative to the tree, each directory before what it holds.
fn list_tree(base: &Path, relative: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = base.join(relative);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| relative.join(e.file_name())))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for entry in entries {
        out.push(entry.clone());
        let meta = std::fs::symlink_metadata(base.join(&entry))?;
        if meta.is_dir() {
            list_tree(base, &entry, out)?;
        }
    }
    Ok(())
}

/// Quotes one word for `sh`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The guest's `/init`: mounts what a bare host has plus the layout from `bellows.layout=`, runs
/// the test binary with `filters`, prints the result marker and powers off.
fn init_script(filters: &[String]) -> String {
    let filters: Vec<String> = filters.iter().map(|f| shell_quote(f)).collect();
    format!(
        r#"#!/bin/sh
# Generated by `cargo xtask vm-test` (xtask/src/vm.rs).
export PATH=/{bin}:/usr/sbin:/usr/bin:/sbin:/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "{init_marker}"

result() {{
    echo "{result_marker}$1@@"
    sync
    poweroff -f
    sleep 60
}}
must() {{
    "$@" || {{ echo "init: FAILED: $*"; result 125; }}
}}

must mount -t proc proc /proc
must mount -t sysfs sysfs /sys
must mount -t tmpfs tmpfs /tmp
must mount -t tmpfs tmpfs /run
must ip link set lo up

layout=
kernel=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        bellows.layout=*) layout="${{arg#bellows.layout=}}" ;;
        bellows.kernel=*) kernel="${{arg#bellows.kernel=}}" ;;
    esac
done

v1_hierarchies() {{
    must mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
    for controllers in cpu,cpuacct memory pids; do
        must mkdir /sys/fs/cgroup/$controllers
        must mount -t cgroup -o $controllers cgroup /sys/fs/cgroup/$controllers
    done
    must ln -s cpu,cpuacct /sys/fs/cgroup/cpu
    must ln -s cpu,cpuacct /sys/fs/cgroup/cpuacct
    must mkdir /sys/fs/cgroup/systemd
    must mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
}}
case "$layout" in
    v2)
        must mount -t cgroup2 cgroup2 /sys/fs/cgroup
        ;;
    hybrid)
        v1_hierarchies
        must mkdir /sys/fs/cgroup/unified
        must mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
        ;;
    v1)
        v1_hierarchies
        ;;
    *)
        echo "init: unknown bellows.layout=$layout"
        result 125
        ;;
esac
echo "init: kernel $(uname -r), layout $layout, mounts:"
cat /proc/mounts

# Kernel warnings (hrtimer, perf throttling) would split the tests' lines: during the tests only
# errors reach the console, and the whole kernel log follows them.
dmesg -n 4
cd /tmp
echo "{tests_marker}"
env -i \
    CI=true \
    BELLOWS_BIN=/{bin}/bellows \
    BELLOWS_FIXTURES=/{fixtures} \
    BELLOWS_VM_LAYOUT="$layout" \
    BELLOWS_VM_KERNEL="$kernel" \
    HOME=/root \
    PATH="$PATH" \
    RUST_BACKTRACE=1 \
    /{bin}/integration --test-threads=1 {filters}
status=$?
echo "init: kernel log:"
dmesg
result $status
"#,
        bin = GUEST_BIN_DIR,
        fixtures = GUEST_FIXTURES,
        init_marker = INIT_MARKER,
        tests_marker = TESTS_MARKER,
        result_marker = RESULT_MARKER,
        filters = filters.join(" "),
    )
}

// ---------------------------------------------------------------------------------------------
// Running a VM
// ---------------------------------------------------------------------------------------------

/// What the serial console told us so far.
#[derive(Default)]
struct Console {
    init: Option<Instant>,
    tests_started: Option<Instant>,
    finished: Option<Instant>,
    status: Option<i32>,
    passed: usize,
    failed: usize,
    failed_tests: Vec<String>,
    /// Inside libtest's closing `failures:` list of names.
    in_failure_list: bool,
    /// The previous line was `failures:`.
    after_failures_header: bool,
    panic: Option<String>,
}

impl Console {
    /// Notes what one console line says.
    fn line(&mut self, line: &str) {
        let now = Instant::now();
        // libtest prints `failures:` twice: before the failed tests' output (then an empty line
        // follows) and before the list of their names, one per line indented by four spaces.
        // The list is read rather than the `test NAME ... FAILED` lines, which a kernel message
        // can split.
        if std::mem::take(&mut self.after_failures_header) {
            self.in_failure_list = line.starts_with("    ");
        }
        if self.in_failure_list {
            match line.strip_prefix("    ") {
                Some(name) if !name.trim().is_empty() => {
                    self.failed_tests.push(name.trim().to_string());
                    return;
                }
                _ => self.in_failure_list = false,
            }
        }
        if line == "failures:" {
            self.after_failures_header = true;
            return;
        }
        if line.contains(INIT_MARKER) && self.init.is_none() {
            self.init = Some(now);
        } else if line.contains(TESTS_MARKER) {
            self.tests_started = Some(now);
        } else if let Some(at) = line.find(RESULT_MARKER) {
            let rest = &line[at + RESULT_MARKER.len()..];
            self.status = rest.split("@@").next().and_then(|s| s.trim().parse().ok());
            self.finished = Some(now);
        } else if let Some((passed, failed)) = libtest_counts(line) {
            self.passed += passed;
            self.failed += failed;
        } else if line.contains("Kernel panic - not syncing") {
            self.panic = Some(line.trim().to_string());
        }
    }
}

/// `(passed, failed)` of a libtest summary line:
/// `test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 12 filtered out; finished in …`.
fn libtest_counts(line: &str) -> Option<(usize, usize)> {
    let rest = &line[line.find("test result: ")?..];
    let count = |what: &str| -> Option<usize> {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(what))
            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

/// The outcome of one VM.
struct VmReport {
    series: String,
    package: String,
    layout: Layout,
    log: PathBuf,
    boot: Option<Duration>,
    tests: Option<Duration>,
    total: Duration,
    status: Option<i32>,
    passed: usize,
    expected: usize,
    /// Why the VM failed, when it did.
    error: Option<String>,
}

impl VmReport {
    fn passed(&self) -> bool {
        self.error.is_none()
    }

    fn one_line(&self) -> String {
        format!(
            "{} {} ({}): boot {}, tests {}, exit status {}, {} passed of {}: {}",
            self.series,
            self.layout,
            self.package,
            seconds(self.boot),
            seconds(self.tests),
            self.status.map_or("-".to_string(), |s| s.to_string()),
            self.passed,
            self.expected,
            self.error.as_deref().unwrap_or("ok"),
        )
    }
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()))
}

/// Boots one VM, streams its console to `log` and stdout, and judges the run.
fn run_vm(
    kernel: &KernelImage,
    layout: Layout,
    initramfs: &Path,
    expected: usize,
    options: &Options,
    log: &Path,
) -> VmReport {
    let started = Instant::now();
    let mut report = VmReport {
        series: kernel.series.clone(),
        package: kernel.package.clone(),
        layout,
        log: log.to_path_buf(),
        boot: None,
        tests: None,
        total: Duration::ZERO,
        status: None,
        passed: 0,
        expected,
        error: None,
    };
    eprintln!(
        "\n=== vm {} {} ({}), log {}",
        kernel.series,
        layout,
        kernel.package,
        log.display()
    );
    match boot(kernel, layout, initramfs, options.timeout, log, started) {
        Ok((console, outcome)) => {
            report.boot = console.init.map(|t| t - started);
            report.tests = console
                .tests_started
                .zip(console.finished)
                .map(|(a, b)| b - a);
            report.status = console.status;
            report.passed = console.passed;
            report.error = judge(&console, &outcome, expected, options.timeout);
        }
        Err(e) => report.error = Some(format!("{e:#}")),
    }
    report.total = started.elapsed();
    report
}

/// How QEMU ended.
enum Outcome {
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// Why a VM failed, or None when every expected test passed.
fn judge(
    console: &Console,
    outcome: &Outcome,
    expected: usize,
    timeout: Duration,
) -> Option<String> {
    if let Some(panic) = &console.panic {
        return Some(format!("guest kernel panic: {panic}"));
    }
    if let Outcome::TimedOut = outcome {
        return Some(format!(
            "timed out after {}s ({}); QEMU killed",
            timeout.as_secs(),
            if console.init.is_none() {
                "init never started"
            } else if console.finished.is_none() {
                "tests did not finish"
            } else {
                "the guest did not power off"
            }
        ));
    }
    if console.init.is_none() {
        return Some("init never started (no init marker on the console)".to_string());
    }
    let Some(status) = console.status else {
        return Some(format!(
            "no result marker: the guest stopped before the tests finished ({})",
            match outcome {
                Outcome::Exited(s) => format!("QEMU {s}"),
                Outcome::TimedOut => "timeout".to_string(),
            }
        ));
    };
    if status == 125 && console.tests_started.is_none() {
        return Some("init failed to set up the guest (see the log)".to_string());
    }
    if status != 0 || console.failed > 0 {
        let names = if console.failed_tests.is_empty() {
            String::new()
        } else {
            format!(":\n    {}", console.failed_tests.join("\n    "))
        };
        return Some(format!(
            "tests exited with status {status}, {} failed{names}",
            console.failed
        ));
    }
    if console.passed != expected {
        return Some(format!(
            "{} of {expected} selected tests passed (the rest were ignored or did not run)",
            console.passed
        ));
    }
    None
}

/// Runs QEMU until it exits or `timeout` passes, copying each console line to `log` and to
/// stdout (prefixed with the kernel and layout).
fn boot(
    kernel: &KernelImage,
    layout: Layout,
    initramfs: &Path,
    timeout: Duration,
    log: &Path,
    started: Instant,
) -> Result<(Console, Outcome)> {
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "3G"])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 bellows.layout={layout} bellows.kernel={}",
            kernel.series
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    writeln!(log_file, "+ {}", describe(&cmd))?;
    eprintln!("+ {}", describe(&cmd));
    let log_file = Arc::new(Mutex::new(log_file));
    let console = Arc::new(Mutex::new(Console::default()));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", describe(&cmd)))?;
    let prefix = format!("[{} {}]", kernel.series, layout);
    let readers = [
        stream(
            child.stdout.take().expect("piped"),
            format!("{prefix} "),
            Arc::clone(&log_file),
            Some(Arc::clone(&console)),
        ),
        stream(
            child.stderr.take().expect("piped"),
            format!("{prefix} qemu: "),
            Arc::clone(&log_file),
            None,
        ),
    ];
    let outcome = loop {
        if let Some(status) = child.try_wait()? {
            break Outcome::Exited(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break Outcome::TimedOut;
        }
        thread::sleep(Duration::from_millis(100));
    };
    for reader in readers {
        let _ = reader.join();
    }
    let console = std::mem::take(&mut *console.lock().expect("console lock"));
    Ok((console, outcome))
}

/// Copies lines from `from` to the log and stdout on a thread, feeding `console` if given.
fn stream(
    from: impl Read + Send + 'static,
    prefix: String,
    log: Arc<Mutex<File>>,
    console: Option<Arc<Mutex<Console>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&raw);
            let line = text.trim_end_matches(['\n', '\r']);
            if let Some(console) = &console {
                console.lock().expect("console lock").line(line);
            }
            let _ = writeln!(log.lock().expect("log lock"), "{line}");
            println!("{prefix}{line}");
        }
    })
}

/// The table printed after the matrix, then why each failed VM failed.
fn print_summary(reports: &[VmReport], total: Duration) {
    println!("\nvm-test summary ({:.0}s in all)", total.as_secs_f64());
    println!(
        "{:<6} {:<7} {:<52} {:>7} {:>8} {:>8} {:>7}  result",
        "kernel", "layout", "package", "boot", "tests", "vm", "passed"
    );
    for r in reports {
        println!(
            "{:<6} {:<7} {:<52} {:>7} {:>8} {:>8} {:>7}  {}",
            r.series,
            r.layout.to_string(),
            r.package,
            seconds(r.boot),
            seconds(r.tests),
            seconds(Some(r.total)),
            format!("{}/{}", r.passed, r.expected),
            if r.passed() { "ok" } else { "FAILED" }
        );
    }
    for r in reports.iter().filter(|r| !r.passed()) {
        println!(
            "\n{} {} FAILED: {}\n  log: {}",
            r.series,
            r.layout,
            r.error.as_deref().unwrap_or(""),
            r.log.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_newest_plain_image_of_the_series_is_chosen() {
        let list = names(&[
            "linux-image-5.10.0-9-amd64",
            "linux-image-5.10.0-46-amd64",
            "linux-image-5.10.0-46-amd64-unsigned",
            "linux-image-5.10.0-46-rt-amd64",
            "linux-image-5.10.0-46-cloud-amd64",
            "linux-image-5.10.0-46-amd64-dbg",
            "linux-image-5.10.0-45-amd64",
            "linux-image-6.1.0-0.deb11.31-amd64",
            "linux-image-amd64",
        ]);
        assert_eq!(
            choose_kernel(&list, "5.10").as_deref(),
            Some("linux-image-5.10.0-46-amd64")
        );
        assert_eq!(choose_kernel(&list, "5.1"), None);
        let trixie = names(&[
            "linux-image-6.12.48+deb13-amd64-unsigned",
            "linux-image-6.12.117+deb13-amd64-unsigned",
            "linux-image-6.12.117+deb13-cloud-amd64-unsigned",
            "linux-image-6.18.15+deb13-amd64",
        ]);
        assert_eq!(
            choose_kernel(&trixie, "6.12").as_deref(),
            Some("linux-image-6.12.117+deb13-amd64-unsigned")
        );
        assert_eq!(
            choose_kernel(&trixie, "6.1"),
            None,
            "6.12 is not series 6.1"
        );
    }

    #[test]
    fn archive_uris_come_from_the_deb822_stanzas() {
        let sources = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian/\n\
                       Suites: bookworm bookworm-updates\nComponents: main\n\n\
                       Types: deb\nURIs: http://deb.debian.org/debian-security\n\
                       Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            archive_uri(sources, Archive::Main).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        assert_eq!(
            archive_uri(sources, Archive::Security).as_deref(),
            Some("http://deb.debian.org/debian-security")
        );
    }

    #[test]
    fn cargo_messages_name_the_test_executable() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"integration","src_path":"/w/tests/tests/integration/main.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{},"features":[],"filenames":["/w/target/debug/deps/integration-1"],"executable":"/w/target/debug/deps/integration-1","fresh":true}"#;
        assert_eq!(artifact_target_name(line).as_deref(), Some("integration"));
        assert_eq!(
            json_string_field(line, "executable").as_deref(),
            Some("/w/target/debug/deps/integration-1")
        );
        assert_eq!(
            json_string_field(r#"{"a":"x\"y\\z\u00e9"}"#, "a").as_deref(),
            Some("x\"y\\zé")
        );
    }

    #[test]
    fn console_lines_are_understood() {
        let mut c = Console::default();
        c.line("[    2.1] random kernel line");
        assert!(c.init.is_none());
        c.line(INIT_MARKER);
        c.line(TESTS_MARKER);
        c.line("test sampler::a ... ok");
        c.line("test sampler::b ... [   78.071467] hrtimer: interrupt took 8715480 ns");
        c.line("FAILED");
        c.line("");
        c.line("failures:");
        c.line("");
        c.line("---- sampler::b stdout ----");
        c.line("    indented output of the test");
        c.line("");
        c.line("failures:");
        c.line("    sampler::b");
        c.line("");
        c.line("test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 9 filtered out; finished in 3.2s");
        c.line(&format!("{RESULT_MARKER}101@@"));
        assert!(c.init.is_some() && c.tests_started.is_some() && c.finished.is_some());
        assert_eq!((c.passed, c.failed, c.status), (1, 1, Some(101)));
        assert_eq!(c.failed_tests, vec!["sampler::b".to_string()]);
    }

    #[test]
    fn filters_are_quoted_for_the_init_shell() {
        let script = init_script(&names(&["sampler::", "it's"]));
        assert!(script.contains(r"--test-threads=1 'sampler::' 'it'\''s'"));
    }

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("6.1.0-37") > version_key("6.1.0-9"));
        assert!(version_key("6.12.117+deb13") > version_key("6.12.48+deb13"));
    }
}
