//! `cargo xtask bench overhead`: what profiling this machine costs, for Bellows and its peers in
//! the same run and window.
//!
//! Both cores run a workload for the window: the Go program `cpuburn` (`-mode cpu`, frame
//! pointers), or Debian's `xz -9 -T1` (with a 4 MiB dictionary, see [`XZ_ARGS`]) on random bytes
//! (native code without frame pointers, which
//! Bellows walks with its unwind tables). Each tool samples the whole system at 97 Hz meanwhile:
//! - `bellows record` (one shot: sampling, then symbolization and the pprof file);
//! - `bellows run` in steady state, pushing to a local sink: the workloads start
//!   [`RUN_LEAD_IN`] before the window, so the window sees what a long-running agent pays for
//!   processes it already knows (their tables built, their binaries parsed). The lead-in's CPU,
//!   first sight of the workloads, is reported on its own line;
//! - `perf record -F 97 -g -a` followed by `perf script` (perf's equivalent of record +
//!   symbolize), and the same with `--call-graph dwarf` (perf's way to unwind without frame
//!   pointers: it copies 8 KiB of stack per sample and unwinds in `perf script`);
//! - a `bpftrace` profile one-liner that counts kernel+user stacks per pid and prints them.
//!
//! Per tool: CPU (user+sys) in the window and over its whole life (post-processing included),
//! peak RSS (and its anonymous and file-backed parts), BPF map memory (`memlock` of its map
//! fds), BPF program time per sample (kernel BPF stats of the perf_event programs, tail calls
//! included, in the window), the tool's CPU with that BPF time added (it runs in the sampled
//! tasks' context, so the tool's own CPU misses it), and the workloads' throughput against a
//! window with no profiler. Medians over runs.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{ensure, Context, Result};

const FREQUENCY: &str = "97";
const WORKLOADS: usize = 2;
/// How long `bellows run` sees the workloads before its window opens: three collect intervals.
const RUN_LEAD_IN: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Baseline,
    Record,
    RecordFp,
    Run,
    Perf,
    PerfDwarf,
    Bpftrace,
}

impl Tool {
    const ALL: [Tool; 7] = [
        Tool::Baseline,
        Tool::Record,
        Tool::RecordFp,
        Tool::Run,
        Tool::Perf,
        Tool::PerfDwarf,
        Tool::Bpftrace,
    ];

    fn name(self) -> &'static str {
        match self {
            Tool::Baseline => "no profiler",
            Tool::Record => "bellows record",
            Tool::RecordFp => "bellows record --frame-pointers",
            Tool::Run => "bellows run (steady state)",
            Tool::Perf => "perf record -g + perf script",
            Tool::PerfDwarf => "perf record --call-graph dwarf + perf script",
            Tool::Bpftrace => "bpftrace profile:hz:97",
        }
    }
}

/// What keeps both cores busy during the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// The Go fixture `cpuburn -mode cpu` (frame pointers; Go tables).
    Go,
    /// Debian's `xz -9 -T1` compressing random bytes (native code without frame pointers).
    /// The dictionary is 4 MiB instead of -9's 64 MiB: xz slows as its dictionary fills, and
    /// the small one fills within the first two seconds, so every window (`run`'s comes after
    /// a lead-in) sees the same rate.
    Native,
}

impl Workload {
    fn describe(self) -> &'static str {
        match self {
            Workload::Go => "`cpuburn -mode cpu` (Go)",
            Workload::Native => {
                "`xz -9 -T1 --lzma2=preset=9,dict=4MiB` on random bytes (native, no frame pointers)"
            }
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Workload::Go => "rounds/s",
            Workload::Native => "KiB/s read",
        }
    }
}

/// The workload's binary (and for xz its input), prepared once.
enum Prepared {
    Go(std::path::PathBuf),
    Native(std::path::PathBuf),
}

impl Prepared {
    fn new(workload: Workload, root: &Path, tmp: &Path) -> Result<Self> {
        Ok(match workload {
            Workload::Go => Prepared::Go(
                crate::build_fixtures(root)?
                    .into_iter()
                    .find(|p| p.ends_with("default/cpuburn"))
                    .context("no cpuburn fixture built")?,
            ),
            Workload::Native => {
                let ok = Command::new("xz")
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success());
                ensure!(ok, "xz does not run (apt package xz-utils)");
                // More than xz gets through in a window (about 2 MB/s at -9 here).
                let input = tmp.join("random.bin");
                if std::fs::metadata(&input).map_or(true, |m| m.len() != RANDOM_BYTES) {
                    // In chunks: the tools are forked from this process, and a child's peak
                    // RSS (ru_maxrss) starts from its parent's at the fork.
                    let mut out = std::io::BufWriter::new(std::fs::File::create(&input)?);
                    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
                    let mut chunk = vec![0u8; 1 << 20];
                    for _ in 0..RANDOM_BYTES >> 20 {
                        for b in chunk.iter_mut() {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            *b = x as u8;
                        }
                        out.write_all(&chunk)?;
                    }
                    out.flush()?;
                }
                Prepared::Native(input)
            }
        })
    }

    /// Starts one copy of the workload for `secs`.
    fn start(&self, secs: f64) -> Result<Child> {
        let mut cmd = match self {
            Prepared::Go(bin) => {
                let mut c = Command::new(bin);
                c.args(["-mode", "cpu", "-report", "-duration", &format!("{secs}s")]);
                c
            }
            Prepared::Native(input) => {
                let mut c = Command::new("xz");
                c.args(XZ_ARGS).arg(input);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stderr(Stdio::null())
            .stdout(match self {
                Prepared::Go(_) => Stdio::piped(),
                Prepared::Native(_) => Stdio::null(),
            })
            .spawn()
            .context("starting the workload")
    }

    /// The work a running copy has done so far: the KiB xz read; 0 for cpuburn, which only
    /// reports at its end (its rate is steady, while xz slows as its dictionary fills).
    fn progress(&self, child: &Child) -> Result<f64> {
        match self {
            Prepared::Go(_) => Ok(0.0),
            Prepared::Native(_) => rchar_kib(child),
        }
    }

    /// Waits out the window (cpuburn ends by itself; xz is stopped) and returns the work done:
    /// cpuburn's rounds, or the KiB xz read.
    fn finish(&self, mut child: Child) -> Result<f64> {
        match self {
            Prepared::Go(_) => {
                let out = child.wait_with_output()?;
                let text = String::from_utf8_lossy(&out.stdout);
                Ok(text
                    .lines()
                    .find_map(|l| l.strip_prefix("rounds ")?.trim().parse::<u64>().ok())
                    .context("cpuburn printed no rounds")? as f64)
            }
            Prepared::Native(_) => {
                let read = rchar_kib(&child)?;
                child.kill()?;
                child.wait()?;
                Ok(read)
            }
        }
    }
}

/// KiB a process has read.
fn rchar_kib(child: &Child) -> Result<f64> {
    let io = std::fs::read_to_string(format!("/proc/{}/io", child.id()))?;
    let read = io
        .lines()
        .find_map(|l| l.strip_prefix("rchar:")?.trim().parse::<u64>().ok())
        .context("no rchar in /proc/PID/io")?;
    Ok(read as f64 / 1024.0)
}

const RANDOM_BYTES: u64 = 256 << 20;
/// `xz -9` with a dictionary that fills in about a second and a half (at about 2.6 MB/s).
const XZ_ARGS: &[&str] = &["-9", "-T1", "--lzma2=preset=9,dict=4MiB", "-k", "-c"];

/// One tool's figures in one run.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// CPU seconds (user+sys) of the tool during the window.
    window_cpu: f64,
    /// CPU seconds (user+sys and BPF) of `run` during its lead-in, first sight of the workloads.
    lead_in_cpu: f64,
    /// CPU seconds over the tool's life, post-processing included.
    total_cpu: f64,
    /// Peak resident set (ru_maxrss of the tool and its post-processing), KiB.
    peak_rss_kib: u64,
    /// Peak anonymous and file-backed resident memory, KiB (polled from /proc/PID/status): file
    /// pages are the binaries the symbolizer maps, shared with the page cache.
    peak_anon_kib: u64,
    peak_file_kib: u64,
    bpf_map_bytes: u64,
    /// BPF CPU seconds of its perf_event programs in the window.
    bpf_cpu: f64,
    /// Mean BPF program run time per invocation, ns (None: no BPF program).
    ns_per_run: Option<f64>,
    /// Workload rounds per second, summed over the workloads.
    throughput: f64,
}

pub fn overhead(root: &Path, window: Duration, runs: usize, workloads: &[Workload]) -> Result<()> {
    ensure!(runs >= 1, "--runs must be at least 1");
    for (tool, hint) in [("perf", "linux-perf"), ("bpftrace", "bpftrace")] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        ensure!(
            ok,
            "{tool} does not run (apt package {hint}); run `cargo xtask setup`"
        );
    }
    let bellows = crate::build_release(root)?;
    let sink = Sink::start()?;
    let _stats = BpfStats::enable()?;
    let tmp = root.join("target/tmp/overhead");
    std::fs::create_dir_all(&tmp)?;
    for &workload in workloads {
        let prepared = Prepared::new(workload, root, &tmp)?;
        one_workload(workload, &prepared, &bellows, window, runs, &sink, &tmp)?;
    }
    Ok(())
}

fn one_workload(
    workload: Workload,
    prepared: &Prepared,
    bellows: &Path,
    window: Duration,
    runs: usize,
    sink: &Sink,
    tmp: &Path,
) -> Result<()> {
    let (pushes, pushed_bytes) = (
        sink.requests.load(Ordering::Relaxed),
        sink.bytes.load(Ordering::Relaxed),
    );

    let mut results: Vec<(Tool, Vec<Sample>)> =
        Tool::ALL.iter().map(|&t| (t, Vec::new())).collect();
    // `bellows run` may fail on its own (e.g. a build without it): the others still count.
    let mut run_error: Option<String> = None;
    for run in 0..runs {
        // Rotate the order so no tool always follows the same neighbour (or a quiet machine).
        for i in 0..results.len() {
            let (tool, samples) = &mut results[(i + run) % Tool::ALL.len()];
            if *tool == Tool::Run && run_error.is_some() {
                continue;
            }
            eprintln!("{workload:?} run {}/{runs}: {}", run + 1, tool.name());
            match measure(*tool, bellows, prepared, window, sink, tmp) {
                Ok(s) => {
                    eprintln!("  {s:?}");
                    samples.push(s);
                }
                Err(e) if *tool == Tool::Run => {
                    eprintln!("  bellows run unavailable: {e:#}");
                    run_error = Some(format!("{e:#}"));
                }
                Err(e) => return Err(e.context(format!("measuring {}", tool.name()))),
            }
        }
    }
    print_report(&Report {
        workload,
        results: &results,
        window,
        runs,
        pushes: sink.requests.load(Ordering::Relaxed) - pushes,
        pushed_bytes: sink.bytes.load(Ordering::Relaxed) - pushed_bytes,
        run_error: run_error.as_deref(),
        record_summary: std::fs::read_to_string(tmp.join("record.log")).unwrap_or_default(),
    });
    Ok(())
}

fn measure(
    tool: Tool,
    bellows: &Path,
    workload: &Prepared,
    window: Duration,
    sink: &Sink,
    tmp: &Path,
) -> Result<Sample> {
    let secs = window.as_secs_f64();
    let total = format!("{}s", window.as_secs() + 3);
    let mut child = match tool {
        Tool::Baseline => None,
        Tool::Record | Tool::RecordFp => Some(spawn_logged(
            Command::new(bellows)
                .args(["record", "-F", FREQUENCY, "-d", &total, "-o"])
                .arg(tmp.join("record.pb.gz"))
                .args(if tool == Tool::RecordFp {
                    &["--frame-pointers"][..]
                } else {
                    &[]
                }),
            &tmp.join("record.log"),
        )?),
        Tool::Run => {
            let metrics = free_port()?;
            Some(spawn_logged(
                Command::new(bellows)
                    .args(["run", "-F", FREQUENCY, "--collect-interval", "5s"])
                    .args(["--node-name", "bench", "--outside-pods", "executable"])
                    .args(["--pyroscope-url", &sink.url()])
                    .args(["--metrics-address", &format!("127.0.0.1:{metrics}")])
                    .env_remove("KUBECONFIG")
                    .env("RUST_LOG", "warn"),
                &tmp.join("run.log"),
            )?)
        }
        Tool::Perf | Tool::PerfDwarf => Some(spawn(
            Command::new("perf")
                .args(["record", "-q", "-F", FREQUENCY, "-a"])
                .args(if tool == Tool::Perf {
                    &["-g"][..]
                } else {
                    &["--call-graph", "dwarf"]
                })
                .arg("-o")
                .arg(tmp.join("perf.data"))
                .args(["--", "sleep", &(window.as_secs() + 3).to_string()]),
        )?),
        Tool::Bpftrace => {
            Some(spawn(Command::new("bpftrace").args([
                "-e",
                "profile:hz:97 { @[kstack, ustack, pid] = count(); }",
            ]))?)
        }
    };
    // Attach, and for `run` one full collect interval: the window is steady state. The baseline
    // waits too, so the previous tool's teardown (maps freed, files written) is not in its window.
    std::thread::sleep(match tool {
        Tool::Baseline => Duration::from_secs(3),
        Tool::Bpftrace | Tool::Run => Duration::from_secs(3),
        _ => Duration::from_secs(1),
    });
    if let Some(c) = child.as_mut() {
        if let Some(status) = c.try_wait()? {
            let log = std::fs::read_to_string(tmp.join(format!(
                "{}.log",
                if tool == Tool::Run { "run" } else { "record" }
            )))
            .unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            anyhow::bail!("exited early ({status}): {last}");
        }
    }
    let pid = child.as_ref().map(|c| c.id());
    let watch = pid.map(MemWatch::start);
    let lead_in = if tool == Tool::Run {
        RUN_LEAD_IN
    } else {
        Duration::ZERO
    };
    let lead_in_start = pid.map(proc_cpu).transpose()?.unwrap_or(0.0);
    let lead_in_bpf = pid.map(bpf_usage).unwrap_or_default();
    let works = (0..WORKLOADS)
        .map(|_| workload.start(secs + lead_in.as_secs_f64()))
        .collect::<Result<Vec<_>>>()?;
    std::thread::sleep(lead_in);
    let cpu_before = pid.map(proc_cpu).transpose()?.unwrap_or(0.0);
    let bpf_before = pid.map(bpf_usage).unwrap_or_default();
    // Only the window's work counts where it can be read (xz); cpuburn's rounds are steady
    // over its whole run.
    let mut work = 0.0;
    for w in &works {
        work -= workload.progress(w)?;
    }
    let counted = match workload {
        Prepared::Native(_) => {
            std::thread::sleep(window);
            secs
        }
        Prepared::Go(_) => secs + lead_in.as_secs_f64(),
    };
    for w in works {
        work += workload.finish(w)?;
    }
    let mut sample = Sample {
        throughput: work / counted,
        lead_in_cpu: cpu_before - lead_in_start
            + bpf_before.run_ns.saturating_sub(lead_in_bpf.run_ns) as f64 / 1e9,
        ..Sample::default()
    };
    if let (Some(pid), Some(mut c)) = (pid, child.take()) {
        sample.window_cpu = proc_cpu(pid)? - cpu_before;
        let bpf = bpf_usage(pid);
        sample.bpf_map_bytes = bpf.map_bytes;
        let (ns, runs) = (
            bpf.run_ns.saturating_sub(bpf_before.run_ns),
            bpf.runs.saturating_sub(bpf_before.runs),
        );
        sample.bpf_cpu = ns as f64 / 1e9;
        sample.ns_per_run = (runs > 0).then(|| ns as f64 / runs as f64);
        if matches!(tool, Tool::Run | Tool::Bpftrace) {
            let sig = if tool == Tool::Run {
                libc::SIGTERM
            } else {
                libc::SIGINT
            };
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as i32, sig) };
        }
        let (status, usage) = wait4(&mut c)?;
        ensure!(status == 0, "{} exited with status {status}", tool.name());
        sample.total_cpu = usage.0;
        sample.peak_rss_kib = usage.1;
        if let Some(w) = watch {
            (sample.peak_anon_kib, sample.peak_file_kib) = w.finish();
        }
        if matches!(tool, Tool::Perf | Tool::PerfDwarf) {
            let mut script = spawn(
                Command::new("perf")
                    .args(["script", "-i"])
                    .arg(tmp.join("perf.data")),
            )?;
            let watch = MemWatch::start(script.id());
            let (status, usage) = wait4(&mut script)?;
            let (anon, file) = watch.finish();
            sample.peak_anon_kib = sample.peak_anon_kib.max(anon);
            sample.peak_file_kib = sample.peak_file_kib.max(file);
            ensure!(status == 0, "perf script exited with status {status}");
            sample.total_cpu += usage.0;
            sample.peak_rss_kib = sample.peak_rss_kib.max(usage.1);
        }
    }
    Ok(sample)
}

fn spawn(cmd: &mut Command) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", crate::describe(cmd)))
}

/// Like [`spawn`], with stdout and stderr in `log` (for the tool's summary or its last error).
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {}", crate::describe(cmd)))
}

/// Polls a live process's resident memory (anonymous, file-backed) until it exits; keeps the
/// peaks. ru_maxrss gives the total peak but not what it is made of.
pub(crate) struct MemWatch(std::thread::JoinHandle<(u64, u64)>);

impl MemWatch {
    pub(crate) fn start(pid: u32) -> Self {
        MemWatch(std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            let (mut anon, mut file) = (0, 0);
            // A zombie's status has no memory lines: the loop ends when the tool exits.
            while let Ok(text) = std::fs::read_to_string(&path) {
                let field = |name: &str| {
                    text.lines().find_map(|l| {
                        l.strip_prefix(name)?
                            .trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<u64>()
                            .ok()
                    })
                };
                let Some(a) = field("RssAnon:") else { break };
                anon = anon.max(a);
                file = file.max(field("RssFile:").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            (anon, file)
        }))
    }

    /// Peak (anonymous, file-backed) KiB; call after the process exited.
    pub(crate) fn finish(self) -> (u64, u64) {
        self.0.join().unwrap_or((0, 0))
    }
}

/// CPU seconds a live process has run so far, all threads (scheduler nanoseconds, not
/// clock ticks: an idle agent uses less than a tick per second).
fn proc_cpu(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(ns as f64 / 1e9)
}

/// Waits for a child; (exit status, (CPU seconds, peak RSS KiB)).
pub(crate) fn wait4(child: &mut Child) -> Result<(i32, (f64, u64))> {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to our locals.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    ensure!(r > 0, "wait4: {}", std::io::Error::last_os_error());
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((
        code,
        (
            secs(usage.ru_utime) + secs(usage.ru_stime),
            usage.ru_maxrss as u64,
        ),
    ))
}

/// A process's BPF maps and the run statistics of its perf_event programs, from fdinfo.
#[derive(Debug, Clone, Copy, Default)]
struct BpfUsage {
    map_bytes: u64,
    run_ns: u64,
    runs: u64,
}

/// `BPF_PROG_TYPE_PERF_EVENT`: the sampling programs. A tail-called program's time counts in
/// its caller's run; other programs (the exec hook) run per event, not per sample.
const PERF_EVENT_PROG: u64 = 7;

fn bpf_usage(pid: u32) -> BpfUsage {
    let mut usage = BpfUsage::default();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return usage;
    };
    let (mut seen_maps, mut seen_progs) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    for fd in fds.flatten() {
        let Ok(text) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        if let (Some(_), Some(id)) = (field("map_type:"), field("map_id:")) {
            if seen_maps.insert(id) {
                usage.map_bytes += field("memlock:").unwrap_or(0);
            }
        } else if field("prog_type:") == Some(PERF_EVENT_PROG) {
            if let (Some(ns), Some(cnt), Some(id)) =
                (field("run_time_ns:"), field("run_cnt:"), field("prog_id:"))
            {
                if seen_progs.insert(id) {
                    usage.run_ns += ns;
                    usage.runs += cnt;
                }
            }
        }
    }
    usage
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `kernel.bpf_stats_enabled` on for the benchmark, restored after.
struct BpfStats(Option<String>);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> Result<Self> {
        let before = std::fs::read_to_string(Self::PATH).ok();
        std::fs::write(Self::PATH, "1").with_context(|| format!("enabling {}", Self::PATH))?;
        Ok(BpfStats(before))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = std::fs::write(Self::PATH, v.trim());
        }
    }
}

/// A write endpoint that accepts everything: `bellows run`'s Pyroscope for the benchmark.
pub(crate) struct Sink {
    port: u16,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    pub(crate) fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (count, size) = (Arc::clone(&requests), Arc::clone(&bytes));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (count, size) = (Arc::clone(&count), Arc::clone(&size));
                std::thread::spawn(move || {
                    let _ = serve(stream, &count, &size);
                });
            }
        });
        Ok(Sink {
            port,
            requests,
            bytes,
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Answers 200 to every request of a keep-alive connection; counts requests and body bytes.
fn serve(stream: std::net::TcpStream, count: &AtomicU64, size: &AtomicU64) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        count.fetch_add(1, Ordering::Relaxed);
        size.fetch_add(length as u64, Ordering::Relaxed);
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Report<'a> {
    workload: Workload,
    results: &'a [(Tool, Vec<Sample>)],
    window: Duration,
    runs: usize,
    pushes: u64,
    pushed_bytes: u64,
    run_error: Option<&'a str>,
    /// `bellows record`'s summary of its last run (samples, symbolizer memory).
    record_summary: String,
}

/// This machine in one line: CPU model, CPUs, memory, kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim())
        })
        .unwrap_or("unknown CPU");
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .split(' ')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(0.0, |kib| kib / (1 << 20) as f64);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {} CPUs, {mem_gib:.0} GiB, Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    )
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Prints the results as a markdown section (for BENCHMARKS.md).
fn print_report(r: &Report) {
    let secs = r.window.as_secs_f64();
    let samples = |tool: Tool| {
        r.results
            .iter()
            .find(|(t, _)| *t == tool)
            .map_or(&[][..], |(_, s)| s.as_slice())
    };
    let m = |tool: Tool, f: &dyn Fn(&Sample) -> f64| median(samples(tool).iter().map(f).collect());
    let mib = |kib: f64| kib / 1024.0;
    let base = m(Tool::Baseline, &|s| s.throughput);
    let spread = {
        let v: Vec<f64> = samples(Tool::Baseline)
            .iter()
            .map(|s| s.throughput)
            .collect();
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        if base > 0.0 && v.len() > 1 {
            format!(
                "{:+.1}% to {:+.1}%",
                (lo / base - 1.0) * 100.0,
                (hi / base - 1.0) * 100.0
            )
        } else {
            "–".to_string()
        }
    };
    let unit = r.workload.unit();
    println!(
        "\n### Overhead run of {}: {}\n",
        today(),
        r.workload.describe()
    );
    println!(
        "`cargo xtask bench overhead --workload {} --seconds {secs:.0} --runs {}`; {}. Medians of {} runs, {secs:.0} s windows, whole system at {FREQUENCY} Hz, {WORKLOADS} copies of {} keeping the CPUs busy. `bellows run` pushed {} profiles ({:.1} KiB) to the local sink. \"With BPF\" adds the tool's BPF program time in the window, which the kernel spends in the sampled tasks.\n",
        format!("{:?}", r.workload).to_lowercase(),
        r.runs,
        machine(),
        r.runs,
        r.workload.describe(),
        r.pushes,
        r.pushed_bytes as f64 / 1024.0
    );
    println!("| tool | CPU in window (% of one core) | with BPF (%) | CPU total (s) | peak RSS (MiB) | of which anon / file (MiB) | BPF maps (MiB) | BPF ns/sample | workload throughput |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &tool in &Tool::ALL {
        if tool == Tool::Baseline {
            println!(
                "| {} | – | – | – | – | – | – | – | {base:.0} {unit} (runs spread {spread}) |",
                tool.name()
            );
            continue;
        }
        if samples(tool).is_empty() {
            println!(
                "| {} | unavailable ({}) | | | | | | | |",
                tool.name(),
                r.run_error.unwrap_or("no runs")
            );
            continue;
        }
        let tp = m(tool, &|s| s.throughput);
        let change = if base > 0.0 {
            (tp / base - 1.0) * 100.0
        } else {
            0.0
        };
        let ns = m(tool, &|s| s.ns_per_run.unwrap_or(f64::NAN));
        println!(
            "| {} | {:.2}% | {:.2}% | {:.2} | {:.1} | {:.1} / {:.1} | {:.1} | {} | {change:+.1}% |",
            tool.name(),
            m(tool, &|s| s.window_cpu) / secs * 100.0,
            m(tool, &|s| s.window_cpu + s.bpf_cpu) / secs * 100.0,
            m(tool, &|s| s.total_cpu),
            mib(m(tool, &|s| s.peak_rss_kib as f64)),
            mib(m(tool, &|s| s.peak_anon_kib as f64)),
            mib(m(tool, &|s| s.peak_file_kib as f64)),
            m(tool, &|s| s.bpf_map_bytes as f64) / (1 << 20) as f64,
            if ns.is_nan() {
                "–".to_string()
            } else {
                format!("{ns:.0}")
            },
        );
    }
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "–".to_string()
        }
    };
    let rec = m(Tool::Record, &|s| s.total_cpu);
    let perf = m(Tool::Perf, &|s| s.total_cpu);
    let perf_dwarf = m(Tool::PerfDwarf, &|s| s.total_cpu);
    let bpft = m(Tool::Bpftrace, &|s| s.total_cpu);
    let rss = |t: Tool| mib(m(t, &|s| s.peak_rss_kib as f64));
    let maps = |t: Tool| m(t, &|s| s.bpf_map_bytes as f64) / (1 << 20) as f64;
    let ns = |t: Tool| m(t, &|s| s.ns_per_run.unwrap_or(f64::NAN));
    println!("\nRatios to the peers (bellows record / peer): CPU total {} of perf record -g + perf script, {} of perf with DWARF, {} of bpftrace; peak RSS {} of perf, {} of bpftrace; BPF maps {} of bpftrace; BPF ns/sample {} of the frame-pointer path, {} of bpftrace.",
        ratio(rec, perf), ratio(rec, perf_dwarf), ratio(rec, bpft), ratio(rss(Tool::Record), rss(Tool::Perf)),
        ratio(rss(Tool::Record), rss(Tool::Bpftrace)), ratio(maps(Tool::Record), maps(Tool::Bpftrace)),
        ratio(ns(Tool::Record), ns(Tool::RecordFp)), ratio(ns(Tool::Record), ns(Tool::Bpftrace)));
    let summary: Vec<&str> = r
        .record_summary
        .lines()
        .filter(|l| l.starts_with("Recorded") || l.starts_with("Symbolized"))
        .collect();
    if !summary.is_empty() {
        println!(
            "`bellows record`'s own summary (last run): {}",
            summary.join(" ")
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    println!("\nTargets:\n");
    if samples(Tool::Run).is_empty() {
        println!(
            "- steady-state agent CPU ≤ 0.5% of one core: run unavailable ({})",
            r.run_error.unwrap_or("no runs")
        );
    } else {
        let run_cpu = m(Tool::Run, &|s| s.window_cpu) / secs * 100.0;
        let with_bpf = m(Tool::Run, &|s| s.window_cpu + s.bpf_cpu) / secs * 100.0;
        println!(
            "- steady-state agent CPU ≤ 0.5% of one core: {run_cpu:.2}%: {}",
            verdict(run_cpu <= 0.5)
        );
        println!(
            "- steady-state agent CPU with its BPF time ≤ 1% of one core: {with_bpf:.2}%: {}",
            verdict(with_bpf <= 1.0)
        );
        println!(
            "- (no target) `bellows run` during its {} s lead-in, first sight of the workloads \
             (tables built, binaries parsed, DWARF loaded), BPF included: {:.2}% of one core",
            RUN_LEAD_IN.as_secs(),
            m(Tool::Run, &|s| s.lead_in_cpu) / RUN_LEAD_IN.as_secs_f64() * 100.0
        );
    }
    println!(
        "- one-shot `record` CPU ≤ perf record + perf script: {rec:.2} s vs {perf:.2} s ({}): {}",
        ratio(rec, perf),
        verdict(rec <= perf)
    );
    for t in [Tool::Record, Tool::Run] {
        if !samples(t).is_empty() {
            println!(
                "- peak RSS ≤ 40 MiB, {}: {:.1} MiB ({:.1} MiB anonymous): {}",
                t.name(),
                rss(t),
                mib(m(t, &|s| s.peak_anon_kib as f64)),
                verdict(rss(t) <= 40.0)
            );
        }
    }
    for t in [Tool::Record, Tool::Run] {
        if !samples(t).is_empty() {
            println!(
                "- BPF map memory ≤ 64 MiB (unwind tables included), {}: {:.1} MiB: {}",
                t.name(),
                maps(t),
                verdict(maps(t) <= 64.0)
            );
        }
    }
    for t in [Tool::Record, Tool::Run] {
        if !samples(t).is_empty() {
            let change = (m(t, &|s| s.throughput) / base - 1.0) * 100.0;
            println!(
                "- workload slowdown within noise, {}: {change:+.1}% (baseline runs spread {spread}): {}",
                t.name(),
                verdict(within_noise(change, samples(Tool::Baseline), base))
            );
        }
    }
}

/// A throughput change is within noise when it lies inside the baseline's own spread (or
/// within 1% when there is a single baseline run).
fn within_noise(change_pct: f64, baseline: &[Sample], base: f64) -> bool {
    if change_pct >= 0.0 {
        return true;
    }
    let lowest = baseline
        .iter()
        .map(|s| s.throughput)
        .fold(f64::MAX, f64::min);
    if baseline.len() < 2 || base <= 0.0 {
        return change_pct >= -1.0;
    }
    change_pct >= (lowest / base - 1.0) * 100.0
}
