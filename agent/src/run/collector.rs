//! One collection: flip the kernel maps, symbolize what the last interval counted, split it into
//! one [`Recording`] per series and hand each to the [`Sink`].

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use agent_common::ErrorKind;

use super::{
    cgroups::CgroupIndex,
    metrics::Metrics,
    targets::{SeriesLabels, Targeting},
};
use crate::{
    ebpf::{DropCounts, SamplerError},
    process::ProcessKey,
    profile::Recording,
    push::Pusher,
    session::Session,
    target::parse_proc_cgroup,
};

/// Where finished profiles go: the Pyroscope pusher, or a test's memory.
pub trait Sink {
    /// Takes one series' profile of one interval. Must not block.
    fn submit(&self, labels: &SeriesLabels, recording: &Recording);
}

/// The adapter lives beside the trait: `push/` knows nothing of series or collections.
impl Sink for Pusher {
    fn submit(&self, labels: &SeriesLabels, recording: &Recording) {
        Pusher::submit(self, labels.clone(), recording);
    }
}

/// How often at most an unknown cgroup id triggers a rescan of the hierarchy.
const RESCAN_ON_MISS: Duration = Duration::from_secs(2);
/// A live process not sampled for this many collections is released (its mappings, and its
/// binaries if no other process maps them); its next sample announces it again. Memory then
/// follows the processes that use CPU, not every process ever seen.
const IDLE_COLLECTIONS: u64 = 4;

/// What one collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    pub samples: u64,
    pub series: usize,
    pub unselected: u64,
    pub evicted: usize,
}

/// The continuously sampling side of `bellows run`.
pub struct Collector {
    /// The sampler, the processes and the symbolizer.
    pub session: Session,
    pub cgroups: CgroupIndex,
    pub metrics: Arc<Metrics>,
    pub frequency_hz: u64,
    window_start: SystemTime,
    window_instant: Instant,
    totals: Totals,
    /// The collection in which each held process was last sampled.
    last_sampled: HashMap<ProcessKey, u64>,
}

/// Userspace totals since start, for /metrics.
#[derive(Debug, Default)]
struct Totals {
    unselected: u64,
    resolve: crate::resolve::ResolveStats,
    evicted: u64,
    collections: u64,
}

impl Collector {
    pub fn new(
        session: Session,
        cgroups: CgroupIndex,
        metrics: Arc<Metrics>,
        frequency_hz: u64,
    ) -> Self {
        Collector {
            session,
            cgroups,
            metrics,
            frequency_hz,
            window_start: SystemTime::now(),
            window_instant: Instant::now(),
            totals: Totals::default(),
            last_sampled: HashMap::new(),
        }
    }

    /// Starts the first window now (call right after the sampler starts).
    pub fn begin(&mut self) {
        self.window_start = SystemTime::now();
        self.window_instant = Instant::now();
    }

    /// Makes the kernel cgroup filter match the current selection. Returns the filter size
    /// (None when off).
    pub fn sync_filter(&mut self, targeting: &Targeting) -> Result<Option<usize>, SamplerError> {
        self.cgroups.rescan_if_stale(Duration::from_millis(500));
        let wanted = targeting.kernel_filter(&self.cgroups);
        let empty = Default::default();
        let (added, removed) = self
            .session
            .sampler
            .sync_cgroup_filter(wanted.is_some(), wanted.as_ref().unwrap_or(&empty))?;
        if added + removed > 0 {
            tracing::debug!(added, removed, "kernel cgroup filter updated");
        }
        Ok(wanted.map(|w| w.len()))
    }

    /// Ends the current window: drains it from the kernel, symbolizes it, and submits one
    /// profile per series.
    pub fn collect(
        &mut self,
        targeting: &Targeting,
        sink: &dyn Sink,
    ) -> Result<Collected, SamplerError> {
        let started = Instant::now();
        let drained = self.session.sampler.flip()?;
        let window_start = std::mem::replace(&mut self.window_start, SystemTime::now());
        let duration = std::mem::replace(&mut self.window_instant, Instant::now()).elapsed();

        let (recording, stats) = self.session.resolve(
            &drained,
            Recording {
                frequency_hz: self.frequency_hz,
                start: window_start,
                duration,
                samples: Vec::new(),
            },
        );

        // `resolve` keeps the drained order: sample i is drained.samples[i].
        let mut by_series: HashMap<SeriesLabels, Recording> = HashMap::new();
        let mut exe_names: HashMap<u32, String> = HashMap::new();
        let mut proc_containers = HashMap::new();
        let mut unselected = 0u64;
        let mut rescanned = false;
        let mut total = 0u64;
        for (raw, sample) in drained.samples.iter().zip(recording.samples) {
            total += sample.count;
            if self.cgroups.get(raw.cgroup_id).is_none() && !rescanned {
                rescanned = self.cgroups.rescan_if_stale(RESCAN_ON_MISS);
            }
            let entry = self.cgroups.get(raw.cgroup_id).cloned();
            // No container in the v2 path (or no v2 id at all): a cgroup v1 host may still say.
            let proc_container = if entry.as_ref().is_none_or(|e| e.container.is_none()) {
                proc_containers
                    .entry(raw.tgid)
                    .or_insert_with(|| {
                        std::fs::read_to_string(format!("/proc/{}/cgroup", raw.tgid))
                            .ok()
                            .and_then(|text| parse_proc_cgroup(&text))
                    })
                    .clone()
            } else {
                None
            };
            let exe = exe_names
                .entry(raw.tgid)
                .or_insert_with(|| process_name(raw.tgid, &raw.comm));
            let Some(labels) = targeting.series(entry.as_deref(), proc_container.as_ref(), exe)
            else {
                unselected += sample.count;
                continue;
            };
            by_series
                .entry(labels)
                .or_insert_with(|| Recording {
                    frequency_hz: self.frequency_hz,
                    start: window_start,
                    duration,
                    samples: Vec::new(),
                })
                .samples
                .push(sample);
        }
        let series = by_series.len();
        for (labels, recording) in &by_series {
            sink.submit(labels, recording);
        }
        drop(by_series);

        let evicted = self.evict_exited(&drained.samples)?;
        let kernel = self.session.sampler.drop_counts()?;
        self.record_metrics(&stats, &kernel, unselected, evicted, series, started);
        Ok(Collected {
            samples: total,
            series,
            unselected,
            evicted,
        })
    }

    /// Releases processes that have exited, or that were not sampled for [`IDLE_COLLECTIONS`],
    /// and lets the kernel side announce their pids again (reused, or active again).
    fn evict_exited(&mut self, sampled: &[crate::ebpf::RawSample]) -> Result<usize, SamplerError> {
        let now = self.totals.collections + 1;
        for s in sampled {
            self.last_sampled.insert(s.process(), now);
        }
        let mut gone = Vec::new();
        for key in self.session.table.keys() {
            // Announced but not yet sampled in a drained window: idle from now on, not from ever.
            let idle = now - *self.last_sampled.entry(key).or_insert(now);
            // The kernel side forgets a process when it exits; another incarnation means the
            // pid was reused.
            let mut exited = || {
                self.session.sampler.incarnation(key.pid).ok().flatten() != Some(key.incarnation)
            };
            if idle >= IDLE_COLLECTIONS || (idle > 0 && exited()) {
                gone.push(key);
            }
        }
        // Binaries no remaining process maps: their mappings and indexes go too.
        self.session.forget(&gone)?;
        let table = &self.session.table;
        self.last_sampled.retain(|key, _| table.get(*key).is_some());
        Ok(gone.len())
    }

    fn record_metrics(
        &mut self,
        stats: &crate::resolve::ResolveStats,
        kernel: &DropCounts,
        unselected: u64,
        evicted: usize,
        series: usize,
        started: Instant,
    ) {
        let t = &mut self.totals;
        t.collections += 1;
        t.unselected += unselected;
        t.resolve += stats;
        t.evicted += evicted as u64;
        let processes = self.session.process_stats();
        let intake = self.session.intake_stats();
        let memory = self.session.table.symbolizer().memory();
        let files = self.session.table.symbolizer().len();
        let tracked = self.session.table.len();
        let cgroups = self.cgroups.len();
        let unwind = self.session.unwind_stats();
        let t = &self.totals;
        self.metrics.update(|s| {
            s.unwind = unwind;
            s.intake = intake;
            s.kernel = kernel.0;
            s.collections = t.collections;
            s.last_collect_seconds = started.elapsed().as_secs_f64();
            s.series = series as u64;
            s.samples_unselected = t.unselected;
            s.resolve = t.resolve;
            s.processes_vanished = processes.vanished;
            s.processes_named_from_exec = processes.named_from_exec;
            s.processes_from_records = processes.from_records;
            s.mmap_records_lost = processes.records_lost;
            s.unreadable_files = processes.unreadable_files;
            s.refreshes_unchanged = processes.refreshes_unchanged;
            s.processes_tracked = tracked as u64;
            s.processes_evicted = t.evicted;
            s.symbolizer_files = files as u64;
            s.symbolizer_mapped_bytes = memory.mapped as u64;
            s.symbolizer_heap_bytes = memory.heap as u64;
            s.symbolizer_dwarf_too_large = memory.dwarf_too_large as u64;
            s.symbolizer_dwarf_bytes = memory.dwarf as u64;
            s.symbolizer_dwarf_released = memory.dwarf_released;
            s.symbolizer_dwarf_reloads = memory.dwarf_reloads;
            s.symbolizer_go_tables_damaged = memory.go_tables_damaged;
            s.cgroups_indexed = cgroups as u64;
        });
    }

    /// Counts a collection that failed before producing anything. It does not count as a
    /// completed collection: `/healthz` must turn unhealthy when every collection fails.
    pub fn count_error(&self) {
        self.metrics.update_quiet(|s| s.collect_errors += 1);
    }

    /// Total kernel-side counters, for the final summary.
    pub fn kernel_counts(&self) -> Result<DropCounts, SamplerError> {
        self.session.sampler.drop_counts()
    }
}

/// The process's name: `/proc/PID/comm` of the thread group leader, else the sampled thread's.
fn process_name(tgid: u32, thread_comm: &str) -> String {
    std::fs::read_to_string(format!("/proc/{tgid}/comm"))
        .map(|s| s.trim_end().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| thread_comm.to_string())
}

/// Kernel counters that say samples were lost, as one line for logs.
pub fn describe_drops(counts: &DropCounts) -> String {
    let problems: Vec<String> = counts
        .problems()
        .map(|(kind, n)| format!("{} {n}", kind.name()))
        .collect();
    if problems.is_empty() {
        format!("none of {}", counts.get(ErrorKind::Counted))
    } else {
        problems.join(", ")
    }
}
