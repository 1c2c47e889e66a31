//! `bellows record`: one-shot profiling of the machine, processes, cgroups or a command.

use std::{
    ffi::OsString,
    io::IsTerminal,
    path::PathBuf,
    process::ExitStatus,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    cgroup::{self, CgroupDir, ScratchCgroup, V1Cgroup},
    cli::RecordArgs,
    ebpf::{DropCounts, SamplerConfig, SamplerError},
    output,
    process::ProcessStats,
    profile::Recording,
    resolve::ResolveStats,
    session::{Event, Session, SessionConfig, SessionError},
    unwind::LoaderStats,
};

const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// A validated `record` configuration.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub pids: Vec<u32>,
    /// The cgroups given: v2 ids (selected in the kernel) or v1 directories (in userspace).
    pub cgroups: Vec<CgroupDir>,
    /// None: until the command exits.
    pub duration: Option<Duration>,
    pub frequency_hz: u64,
    pub output: PathBuf,
    pub flamegraph: Option<PathBuf>,
    pub folded: Option<PathBuf>,
    pub kernel_stacks: bool,
    /// Walk user stacks with unwind tables (else frame pointers only).
    pub unwind_tables: bool,
    /// Write the unwinder's steps for the first pid (or the command) here.
    pub trace_unwind: Option<PathBuf>,
    pub top: usize,
    pub command: Vec<OsString>,
}

/// A flag's value is unusable. Reported as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--frequency {0} is out of range: use 1 to {1} Hz (kernel.perf_event_max_sample_rate)"
    )]
    Frequency(u64, u64),
    #[error("--pid {0}: no such process")]
    NoSuchPid(u32),
    #[error("--cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: cgroup::CgroupError,
    },
    #[error("--output {0}: the directory does not exist")]
    OutputDir(PathBuf),
    #[error("--trace-unwind needs a process to trace: --pid PID or a command")]
    TraceWithoutProcess,
}

impl RecordConfig {
    pub fn from_args(args: RecordArgs) -> Result<Self, ConfigError> {
        let max_rate = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100_000);
        if args.frequency == 0 || args.frequency > max_rate {
            return Err(ConfigError::Frequency(args.frequency, max_rate));
        }
        for &pid in &args.pids {
            if pid == 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Err(ConfigError::NoSuchPid(pid));
            }
        }
        let cgroups = args
            .cgroups
            .iter()
            .map(|path| {
                CgroupDir::open(path).map_err(|source| ConfigError::Cgroup {
                    path: path.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if args.trace_unwind.is_some() && args.pids.is_empty() && args.command.is_empty() {
            return Err(ConfigError::TraceWithoutProcess);
        }
        for out in [
            Some(&args.output),
            args.flamegraph.as_ref(),
            args.folded.as_ref(),
            args.trace_unwind.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
            if dir.is_some_and(|d| !d.is_dir()) {
                return Err(ConfigError::OutputDir(out.clone()));
            }
        }
        let duration = match (args.duration, args.command.is_empty()) {
            (Some(d), _) => Some(d),
            (None, true) => Some(DEFAULT_DURATION),
            (None, false) => None,
        };
        Ok(RecordConfig {
            pids: args.pids,
            cgroups,
            duration,
            frequency_hz: args.frequency,
            output: args.output,
            flamegraph: args.flamegraph,
            folded: args.folded,
            kernel_stacks: !args.no_kernel,
            unwind_tables: !args.frame_pointers,
            trace_unwind: args.trace_unwind,
            top: args.top,
            command: args.command,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("cannot start {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: output::OutputError,
    },
    #[error("--trace-unwind {path}: {source}")]
    Trace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Interrupted,
    CommandExited(Option<i32>),
}

/// Everything the end-of-run summary reports.
#[derive(Debug)]
pub struct Report {
    pub recording: Recording,
    pub stop: StopReason,
    pub drops: DropCounts,
    pub processes: ProcessStats,
    pub resolve: ResolveStats,
    pub kernel_symbols_error: Option<String>,
    /// Set when the selection was applied in userspace (cgroup v1 directories).
    pub userspace_selection: Option<SelectionStats>,
    /// What the unwind-table loader did; None with frame pointers only.
    pub unwind_tables: Option<LoaderStats>,
    /// Binaries parsed, and the memory their resolvers hold.
    pub symbol_files: usize,
    pub symbol_memory: symbolizer::MemoryUse,
    pub written: Vec<(PathBuf, &'static str)>,
    pub cpus: usize,
}

impl Report {
    pub fn total_samples(&self) -> u64 {
        self.recording.samples.iter().map(|s| s.count).sum()
    }
}

/// Runs a recording to its end and writes every output.
pub async fn record(cfg: RecordConfig) -> Result<Report, RecordError> {
    let scratch = if cfg.command.is_empty() {
        None
    } else {
        match ScratchCgroup::create() {
            Ok(cg) => Some(cg),
            Err(err) => {
                tracing::warn!(
                    "cannot create a cgroup for the command ({err}); profiling only its \
                     main process, not its children"
                );
                None
            }
        }
    };
    let mut selection = Selection {
        pids: cfg.pids.iter().copied().collect(),
        ..Selection::default()
    };
    for dir in cfg
        .cgroups
        .iter()
        .chain(scratch.as_ref().map(ScratchCgroup::dir))
    {
        match dir {
            CgroupDir::V2 { id } => selection.v2_ids.insert(*id),
            CgroupDir::V1(cg) => {
                selection.v1.push(cg.clone());
                true
            }
        };
    }
    // A v1 cgroup cannot be selected in the kernel (every task reports the v2 root's id): then
    // the kernel filters nothing, and the whole selection is applied in userspace.
    let in_userspace = !selection.v1.is_empty();
    // With a command but no cgroup, the pid filter must be on from the start (it is filled once
    // the command's pid is known): a placeholder pid 0 never matches (idle is skipped).
    let mut pids = cfg.pids.clone();
    if !cfg.command.is_empty() && scratch.is_none() {
        pids.push(0);
    }
    let (cgroups, pids) = if in_userspace {
        (Vec::new(), Vec::new())
    } else {
        (selection.v2_ids.iter().copied().collect(), pids)
    };
    let mut session = Session::start(&SessionConfig {
        sampler: SamplerConfig {
            frequency_hz: cfg.frequency_hz,
            kernel_stacks: cfg.kernel_stacks,
            cgroups,
            pids,
            unwind: cfg.unwind_tables,
            ..SamplerConfig::default()
        },
        max_dwarf_bytes: None,
        dwarf_budget: crate::resolve::DWARF_BUDGET,
    })?;
    let trace_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| RecordError::Trace { path, source }
    };
    // The trace ring and its writer, when asked for; the ring is read while recording.
    let (mut trace_ring, mut trace_out) = match (&cfg.trace_unwind, cfg.unwind_tables) {
        (Some(path), true) => (
            Some(session.sampler.take_unwind_trace()?),
            Some((
                crate::unwind::TraceWriter::create(path).map_err(trace_err(path))?,
                path.clone(),
            )),
        ),
        _ => (None, None),
    };
    if trace_ring.is_some() {
        if let Some(&pid) = cfg.pids.first() {
            session.sampler.trace_unwind(pid)?;
        }
    }
    for &pid in &cfg.pids {
        session.observe(pid)?;
    }

    let cpus = aya::util::online_cpus().map(|c| c.len()).unwrap_or(0);
    let wall_start = SystemTime::now();
    let start = Instant::now();
    session.start_sampling(cfg.frequency_hz)?;

    let mut child = match cfg.command.split_first() {
        Some((program, args)) => {
            if let Some(file) = open_program(program) {
                session.preload(file);
            }
            let procs = scratch.as_ref().map(|cg| cg.path().join("cgroup.procs"));
            let child = spawn_in_cgroup(program, args, procs.as_deref())?;
            if let Some(pid) = child.id() {
                // Read the command at once, not at its first sample: its tables are then
                // loaded before most of its samples are taken.
                session.observe(pid)?;
                if scratch.is_none() {
                    session.sampler.add_pid(pid)?;
                }
                if trace_ring.is_some() && cfg.pids.is_empty() {
                    session.sampler.trace_unwind(pid)?;
                }
            }
            Some(child)
        }
        None => None,
    };

    let deadline = cfg
        .duration
        .map(|d| tokio::time::Instant::from_std(start + d));
    let progress = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(250));

    let stop = loop {
        tokio::select! {
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                break StopReason::Duration;
            }
            event = session.event() => match event {
                Event::Interrupted => break StopReason::Interrupted,
                Event::Captured(processes) => {
                    if in_userspace {
                        selection.classify(processes.iter().map(|p| p.pid));
                    }
                }
            },
            status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                child = None;
                break StopReason::CommandExited(status.ok().and_then(|s: ExitStatus| s.code()));
            }
            guard = async { trace_ring.as_mut().expect("guarded").readable_mut().await }, if trace_ring.is_some() => {
                let mut guard = guard.map_err(|source| RecordError::Io { what: "reading the unwind trace ring buffer", source })?;
                if let Some((out, path)) = trace_out.as_mut() {
                    out.drain(guard.get_inner_mut()).map_err(trace_err(path))?;
                }
                guard.clear_ready();
            }
            _ = tick.tick(), if progress => {
                let samples = session.sampler.drop_counts().map(|d| d.get(agent_common::ErrorKind::Counted)).unwrap_or(0);
                eprint!(
                    "\rrecording {:>6.1}s{}  {samples} samples  {} processes ",
                    start.elapsed().as_secs_f64(),
                    cfg.duration.map(|d| format!(" / {:.1}s", d.as_secs_f64())).unwrap_or_default(),
                    session.table.len(),
                );
            }
        }
    };
    let unwind_tables = session.stop();
    let duration = start.elapsed();
    if progress {
        eprint!("\r\x1b[2K");
    }
    let mut trace_written = None;
    if let (Some(mut ring), Some((mut out, path))) = (trace_ring.take(), trace_out.take()) {
        out.drain(ring.get_mut()).map_err(trace_err(&path))?;
        let (steps, walks) = out.finish().map_err(trace_err(&path))?;
        trace_written = Some((path, steps, walks));
    }
    let drops = session.sampler.drop_counts()?;
    let mut drained = session.sampler.drain()?;
    let userspace_selection = in_userspace.then(|| {
        selection.classify(session.table.keys().iter().map(|p| p.pid));
        selection.apply(&mut drained)
    });

    let (recording, resolve_stats) = session.resolve(
        &drained,
        Recording {
            frequency_hz: cfg.frequency_hz,
            start: wall_start,
            duration,
            samples: Vec::new(),
        },
    );

    let mut written = Vec::new();
    let out_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| RecordError::Output { path, source }
    };
    output::write_pprof(&cfg.output, &recording).map_err(out_err(&cfg.output))?;
    written.push((cfg.output.clone(), "pprof"));
    if let Some(path) = &cfg.flamegraph {
        let title = flame_title(&cfg);
        let svg = match output::flamegraph_svg(&recording, &title) {
            Err(output::OutputError::NoSamples) => output::empty_flamegraph_svg(&title),
            other => other.map_err(out_err(path))?,
        };
        write_file(path, &svg).map_err(out_err(path))?;
        written.push((path.clone(), "flame graph"));
    }
    if let Some(path) = &cfg.folded {
        write_file(path, output::folded(&recording).as_bytes()).map_err(out_err(path))?;
        written.push((path.clone(), "folded stacks"));
    }
    if let Some((path, steps, walks)) = trace_written {
        tracing::info!(steps, walks, "unwind trace written to {}", path.display());
        written.push((path, "unwind trace"));
    }
    drop(child);
    drop(scratch);
    Ok(Report {
        recording,
        stop,
        drops,
        processes: session.process_stats(),
        symbol_files: session.table.symbolizer().len(),
        symbol_memory: session.table.symbolizer().memory(),
        resolve: resolve_stats,
        kernel_symbols_error: session.kernel_symbols_error.take(),
        userspace_selection,
        unwind_tables,
        written,
        cpus,
    })
}

/// The file `program` names, as the command would be found (through `PATH` without a slash).
fn open_program(program: &OsString) -> Option<std::fs::File> {
    let path = std::path::Path::new(program);
    if path.components().count() > 1 {
        return std::fs::File::open(path).ok();
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .find_map(|dir| std::fs::File::open(std::path::Path::new(dir).join(path)).ok())
}

/// The selection `record` applies in userspace when the kernel cannot: cgroup v1 directories,
/// matched against each process's `/proc/PID/cgroup` when it is first seen.
#[derive(Debug, Default)]
struct Selection {
    pids: std::collections::HashSet<u32>,
    v2_ids: std::collections::HashSet<u64>,
    v1: Vec<V1Cgroup>,
    /// Membership of each process seen; `None` when it was gone before it could be read.
    members: std::collections::HashMap<u32, Option<bool>>,
}

/// What selecting in userspace kept and discarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelectionStats {
    pub kept: u64,
    /// Samples of processes outside the selection.
    pub discarded: u64,
    /// Samples of processes that exited before their cgroup could be read (discarded too).
    pub unknown: u64,
}

impl Selection {
    /// Reads the membership of every process not classified yet.
    fn classify(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            if self.members.contains_key(&pid) {
                continue;
            }
            let member = if self.pids.contains(&pid) {
                Some(true)
            } else {
                std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .ok()
                    .map(|text| self.v1.iter().any(|cg| cg.contains(&text)))
            };
            self.members.insert(pid, member);
        }
    }

    /// Keeps the samples of selected processes.
    fn apply(&self, drained: &mut crate::ebpf::Drained) -> SelectionStats {
        let mut stats = SelectionStats::default();
        drained.samples.retain(|s| {
            let member = if self.v2_ids.contains(&s.cgroup_id) {
                Some(true)
            } else {
                self.members.get(&s.tgid).copied().flatten()
            };
            let counter = match member {
                Some(true) => &mut stats.kept,
                Some(false) => &mut stats.discarded,
                None => &mut stats.unknown,
            };
            *counter = counter.saturating_add(s.count);
            member == Some(true)
        });
        stats
    }
}

fn write_file(path: &PathBuf, bytes: &[u8]) -> Result<(), output::OutputError> {
    output::write_atomic(path, bytes)
}

fn flame_title(cfg: &RecordConfig) -> String {
    if !cfg.command.is_empty() {
        let cmd: Vec<_> = cfg.command.iter().map(|s| s.to_string_lossy()).collect();
        format!("bellows record -- {}", cmd.join(" "))
    } else {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        format!("bellows record: {host}")
    }
}

/// Starts `program`. With `cgroup_procs`, the child moves itself into that cgroup before exec, so
/// the command runs not a single instruction of its own outside it.
fn spawn_in_cgroup(
    program: &OsString,
    args: &[OsString],
    cgroup_procs: Option<&std::path::Path>,
) -> Result<tokio::process::Child, RecordError> {
    let spawn_err = |source| RecordError::Spawn {
        command: program.to_string_lossy().into_owned(),
        source,
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(false);
    if let Some(procs) = cgroup_procs {
        use std::os::unix::ffi::OsStrExt;
        let procs = std::ffi::CString::new(procs.as_os_str().as_bytes())
            .map_err(|e| spawn_err(std::io::Error::other(e)))?;
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (open, write, close) on memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" moves the writing process itself.
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
                Ok(())
            });
        }
    }
    cmd.spawn().map_err(spawn_err)
}

/// Renders the end-of-run summary: samples, processes, drops by reason, what was written, and
/// the top functions.
pub fn render_summary(report: &Report, top: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let total = report.total_samples();
    let pids: std::collections::HashSet<u32> =
        report.recording.samples.iter().map(|s| s.pid).collect();
    let _ = writeln!(
        s,
        "Recorded {total} samples from {} processes in {:.1} s at {} Hz on {} CPUs{}.",
        pids.len(),
        report.recording.duration.as_secs_f64(),
        report.recording.frequency_hz,
        report.cpus,
        match report.stop {
            StopReason::Duration => String::new(),
            StopReason::Interrupted => " (interrupted)".to_string(),
            StopReason::CommandExited(Some(code)) => format!(" (command exited with {code})"),
            StopReason::CommandExited(None) => " (command killed by a signal)".to_string(),
        }
    );
    let problems: Vec<String> = report
        .drops
        .problems()
        .map(|(kind, n)| format!("{} {n}", kind.name()))
        .collect();
    let _ = writeln!(
        s,
        "Dropped or degraded samples: {}",
        if problems.is_empty() {
            "none".to_string()
        } else {
            problems.join(", ")
        }
    );
    let r = &report.resolve;
    let p = &report.processes;
    let _ = writeln!(
        s,
        "Unsymbolized frames: {} of {} user, {} of {} kernel; processes gone before their \
         mappings were read: {} (captures from mmap records: {}; named by their executable \
         alone: {}; mmap records lost: {}); unreadable binaries: {}; missing stacks: {}; \
         mapping re-reads that found no change: {}",
        r.user_unsymbolized,
        r.user_frames,
        r.kernel_unsymbolized,
        r.kernel_frames,
        p.vanished,
        p.from_records,
        p.named_from_exec,
        p.records_lost,
        p.unreadable_files,
        r.missing_stacks,
        p.refreshes_unchanged,
    );
    let m = &report.symbol_memory;
    let _ = write!(
        s,
        "Symbolized with {} binaries: {:.1} MiB mapped, {:.1} MiB of indexes",
        report.symbol_files,
        m.mapped as f64 / (1 << 20) as f64,
        m.heap as f64 / (1 << 20) as f64,
    );
    if m.dwarf_released > 0 {
        let _ = write!(
            s,
            "; {} binaries' DWARF released to stay within {} MiB",
            m.dwarf_released,
            crate::resolve::DWARF_BUDGET >> 20
        );
    }
    if m.go_tables_damaged > 0 {
        let _ = write!(
            s,
            "; {} damaged Go tables (named from ELF symbols)",
            m.go_tables_damaged
        );
    }
    let _ = writeln!(s);
    if let Some(err) = &report.kernel_symbols_error {
        let _ = writeln!(s, "Kernel symbols unavailable: {err}");
    }
    if let Some(u) = &report.unwind_tables {
        let walked = report.drops.get(agent_common::ErrorKind::Unwound);
        let fp = report
            .drops
            .get(agent_common::ErrorKind::FramePointerStacks);
        let none = report.drops.get(agent_common::ErrorKind::NoUserSpace);
        let _ = writeln!(
            s,
            "User stacks: {walked} walked with unwind tables, {fp} by frame pointers (kernel-mode \
             samples, processes not loaded yet), {none} without a user address space (kernel \
             threads, tasks in execve or past exit); tables of {} binaries ({} rows) \
             loaded in {:.2} s, {} without a table, {} did not fit",
            u.tables_loaded,
            u.rows_loaded,
            u.build_time.as_secs_f64(),
            u.tables_unavailable,
            u.tables_not_fitting,
        );
    }
    if let Some(sel) = &report.userspace_selection {
        let _ = writeln!(
            s,
            "Selected in userspace (cgroup v1: the kernel cannot filter by a v1 cgroup): kept {} \
             samples, discarded {} of other processes and {} of processes gone before their \
             cgroup was read",
            sel.kept, sel.discarded, sel.unknown
        );
    }
    for (path, what) in &report.written {
        let _ = writeln!(s, "Wrote {} ({what})", path.display());
    }
    if total > 0 && top > 0 {
        let rows = output::top(&report.recording, top);
        let _ = writeln!(s);
        s.push_str(&output::render_top(&rows, total));
    }
    s
}
