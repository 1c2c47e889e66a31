//! Loading, attaching and draining the kernel side (`agent-ebpf`).
//!
//! This is the only module that talks to BPF. It hands the rest of the agent plain data
//! ([`Drained`], [`DropCounts`]) so that everything downstream is testable without root.

use std::collections::HashMap;

use crate::process::ProcessKey;

use agent_common::{
    config, maps, programs,
    unwind::{PageKey, PageRows, ProcessMappings, Row},
    ErrorKind, SampleKey, Stack, COMM_LEN, NO_STACK, UNSAMPLED,
};
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        perf_event::{
            PerfEventConfig, PerfEventLinkId, PerfEventScope, SamplePolicy, SoftwareEvent,
        },
        raw_trace_point::RawTracePointLinkId,
        PerfEvent, ProgramError, RawTracePoint,
    },
    Ebpf,
};

/// The compiled kernel program, built by `build.rs` and embedded in the binary.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bellows"));

/// What to sample.
#[derive(Debug, Clone, Default)]
pub struct SamplerConfig {
    /// Samples per second per CPU.
    pub frequency_hz: u64,
    /// Record kernel stacks too.
    pub kernel_stacks: bool,
    /// Count only these cgroup v2 ids (empty: no cgroup filter).
    pub cgroups: Vec<u64>,
    /// Count only these processes (empty: no pid filter).
    pub pids: Vec<u32>,
    /// Continuous profiling: two generations of the counts and stack maps, drained in turn by
    /// [`Sampler::flip`]. Off, the second generation is shrunk to one entry each.
    pub double_buffered: bool,
    /// Entries of each counts map; 0 for the default ([`agent_common::COUNTS_ENTRIES`], or
    /// [`agent_common::RUN_COUNTS_ENTRIES`] per generation when double-buffered).
    pub counts_entries: u32,
    /// Entries of each stack map; 0 for the default ([`agent_common::STACK_MAP_ENTRIES`], or
    /// [`agent_common::RUN_STACK_MAP_ENTRIES`] per generation when double-buffered).
    pub stack_entries: u32,
    /// Walk user stacks with unwind tables where userspace loaded them ([`Sampler::take_unwind_maps`]).
    pub unwind: bool,
    /// Capacity of the unwind row array; 0 for [`agent_common::unwind::ROWS_ENTRIES`] (with
    /// `unwind` off it shrinks to one row).
    pub unwind_rows: u32,
}

/// Errors from loading, attaching and reading the kernel side. Each says what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error(
        "insufficient privileges to load BPF programs: needs root, or CAP_BPF and CAP_PERFMON \
         (plus CAP_SYS_RESOURCE on kernels before 5.11)"
    )]
    Privileges,
    #[error("loading the BPF programs failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("BPF program {name} is missing or of the wrong type in the embedded object")]
    MissingProgram { name: &'static str },
    #[error("BPF map {name} is missing or of the wrong type: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("loading BPF program {name} into the kernel failed (verifier rejected it?): {source}")]
    Verify {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "attaching the sampler to CPU {cpu} failed: {source}; is perf_event_open permitted \
         (kernel.perf_event_paranoid, seccomp in containers)?"
    )]
    AttachCpu {
        cpu: u32,
        #[source]
        source: ProgramError,
    },
    #[error(
        "attaching to the raw tracepoint {0} failed: {1}; the kernel needs raw tracepoints \
         (Linux 4.17+)"
    )]
    AttachTracepoint(&'static str, #[source] ProgramError),
    #[error("cannot list online CPUs ({0}): {1}")]
    Cpus(&'static str, #[source] std::io::Error),
    #[error("updating BPF map {name} failed: {source}")]
    Update {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("the sampler was loaded without a second generation of maps; it cannot flip")]
    NotDoubleBuffered,
    #[error("watching the new-process ring buffer: {0}")]
    Watch(#[source] std::io::Error),
    #[error("duplicating the unwinder's program fd for its tail-call slot: {0}")]
    UnwinderFd(#[source] std::io::Error),
}

/// One drained counts-map entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSample {
    pub tgid: u32,
    /// Which process had the tgid (see [`SampleKey::incarnation`]).
    pub incarnation: u64,
    /// Thread id.
    pub tid: u32,
    pub cgroup_id: u64,
    /// Thread name.
    pub comm: String,
    /// User stack id, if one was recorded.
    pub user_stack: Option<u64>,
    /// Kernel stack id, if one was recorded.
    pub kernel_stack: Option<u64>,
    pub count: u64,
}

impl RawSample {
    /// The process the sample was taken in.
    pub fn process(&self) -> ProcessKey {
        ProcessKey {
            pid: self.tgid,
            incarnation: self.incarnation,
        }
    }

    pub fn from_key(key: &SampleKey, count: u64) -> Self {
        let stack = |key: u64| (key != NO_STACK).then_some(key);
        RawSample {
            tgid: key.tgid,
            incarnation: key.incarnation,
            tid: key.pid,
            cgroup_id: key.cgroup_id,
            comm: comm_to_string(&key.comm),
            user_stack: stack(key.user_stack),
            kernel_stack: stack(key.kernel_stack),
            count,
        }
    }
}

fn comm_to_string(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Everything read out of the maps at the end of a window.
#[derive(Debug, Default, Clone)]
pub struct Drained {
    pub samples: Vec<RawSample>,
    /// Stack id → instruction pointers, leaf first.
    pub stacks: HashMap<u64, Vec<u64>>,
    /// Stack ids referenced by samples but missing from the stack map.
    pub missing_stacks: u64,
}

/// Per-reason sample counts, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DropCounts(pub [u64; ErrorKind::COUNT as usize]);

impl DropCounts {
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind as usize]
    }

    /// Nonzero drop and degradation reasons (everything but the totals: `counted`, `filtered`,
    /// and how user stacks were walked, kernel-only samples in exec or exit included).
    pub fn problems(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        ErrorKind::ALL
            .into_iter()
            .filter(|k| {
                !matches!(
                    k,
                    ErrorKind::Counted
                        | ErrorKind::Filtered
                        | ErrorKind::Unwound
                        | ErrorKind::FramePointerStacks
                        | ErrorKind::NoUserSpace
                )
            })
            .map(|k| (k, self.get(k)))
            .filter(|(_, n)| *n > 0)
    }
}

/// The loaded kernel side.
pub struct Sampler {
    ebpf: Ebpf,
    perf_links: Vec<PerfEventLinkId>,
    /// The exec and exit raw tracepoints' links, with their programs.
    tracepoint_links: Vec<(&'static str, RawTracePointLinkId)>,
    double_buffered: bool,
    /// The generation samples currently go to (`config::GENERATION`).
    generation: u32,
    /// The unwinder is loaded and switched on.
    unwinding: bool,
    /// Capacity of the unwind row array.
    unwind_rows: u32,
}

/// `BPF_NOEXIST`, the map update flag that refuses to replace an entry.
const BPF_NOEXIST: u64 = 1;

/// A task's kernel stack on x86_64 without KASAN (`THREAD_SIZE`). With KASAN it is twice that;
/// the kernel side then finds no user-mode registers where it looks and falls back to frame
/// pointers.
const X86_64_THREAD_SIZE: u32 = 16 * 1024;

/// How long [`Sampler::flip`] waits for programs that started before the flip. A sample runs in
/// microseconds; this is three orders of magnitude more.
const FLIP_GRACE: std::time::Duration = std::time::Duration::from_millis(5);

impl Sampler {
    /// Loads the programs and maps and writes the filters. Nothing is sampled until [`Self::start`].
    pub fn load(cfg: &SamplerConfig) -> Result<Self, SamplerError> {
        if !has_bpf_privileges() {
            return Err(SamplerError::Privileges);
        }
        bump_memlock_rlimit();
        let (default_counts, default_stacks) = if cfg.double_buffered {
            (
                agent_common::RUN_COUNTS_ENTRIES,
                agent_common::RUN_STACK_MAP_ENTRIES,
            )
        } else {
            (
                agent_common::COUNTS_ENTRIES,
                agent_common::STACK_MAP_ENTRIES,
            )
        };
        let counts = match cfg.counts_entries {
            0 => default_counts,
            n => n,
        };
        let stacks = match cfg.stack_entries {
            0 => default_stacks,
            n => n,
        };
        let (counts_b, stacks_b) = if cfg.double_buffered {
            (counts, stacks)
        } else {
            (1, 1)
        };
        let (rows, pages, procs) = if cfg.unwind {
            (
                match cfg.unwind_rows {
                    0 => agent_common::unwind::ROWS_ENTRIES,
                    n => n,
                },
                agent_common::unwind::PAGES_ENTRIES,
                agent_common::unwind::PROCESS_ENTRIES,
            )
        } else {
            (1, 1, 1)
        };
        let ebpf = aya::EbpfLoader::new()
            .map_max_entries(maps::UNWIND_ROWS, rows)
            .map_max_entries(maps::UNWIND_PAGES, pages)
            .map_max_entries(maps::PROCESS_MAPPINGS, procs)
            .map_max_entries(maps::COUNTS, counts)
            .map_max_entries(maps::STACKS, stacks)
            .map_max_entries(maps::COUNTS_B, counts_b)
            .map_max_entries(maps::STACKS_B, stacks_b)
            .load(PROGRAM)
            .map_err(|err| {
                if is_permission_error(&err) {
                    SamplerError::Privileges
                } else {
                    SamplerError::Load(err)
                }
            })?;
        let mut sampler = Sampler {
            ebpf,
            perf_links: Vec::new(),
            tracepoint_links: Vec::new(),
            double_buffered: cfg.double_buffered,
            generation: 0,
            unwinding: false,
            unwind_rows: rows,
        };
        let layout = crate::btf::TaskLayout::running_kernel();
        sampler.configure(cfg, &layout)?;
        if cfg.unwind {
            sampler.enable_unwinder(&layout)?;
        }
        Ok(sampler)
    }

    fn configure(
        &mut self,
        cfg: &SamplerConfig,
        layout: &crate::btf::TaskLayout,
    ) -> Result<(), SamplerError> {
        for &cgroup in &cfg.cgroups {
            self.filter_map::<u64>(maps::CGROUP_FILTER)?
                .insert(cgroup, 1, 0)
                .map_err(|source| SamplerError::Update {
                    name: maps::CGROUP_FILTER,
                    source,
                })?;
        }
        for &pid in &cfg.pids {
            self.filter_map::<u32>(maps::PID_FILTER)?
                .insert(pid, 1, 0)
                .map_err(|source| SamplerError::Update {
                    name: maps::PID_FILTER,
                    source,
                })?;
        }
        self.set_config(&[
            (config::FILTER_CGROUPS, u32::from(!cfg.cgroups.is_empty())),
            (config::FILTER_PIDS, u32::from(!cfg.pids.is_empty())),
            (config::NO_KERNEL, u32::from(!cfg.kernel_stacks)),
            (config::SELF_TGID, std::process::id()),
        ])?;
        // The exec hook names each new image's executable where BTF says how to find it; a
        // process that exits before its mappings are read is then still named.
        match layout.exe {
            Some(offsets) => {
                let settings: Vec<(u32, u32)> = (config::EXE_OFFSETS..).zip(offsets).collect();
                self.set_config(&settings)?;
            }
            None => tracing::info!(
                "no BTF for the executable at exec (/sys/kernel/btf/vmlinux): processes that \
                 exit before their mappings are read stay unnamed"
            ),
        }
        // Samples taken inside execve keep only their kernel stack where BTF says where the
        // flag is (without it, their old image's user frame goes unnamed).
        if let Some(bit) = layout.in_execve_bit {
            self.set_config(&[(config::IN_EXECVE_BIT, bit.saturating_add(1))])?;
        }

        for (name, verify) in [
            (programs::SAMPLE, true),
            (programs::EXEC, false),
            (programs::EXIT, false),
        ] {
            let program = self
                .ebpf
                .program_mut(name)
                .ok_or(SamplerError::MissingProgram { name })?;
            let result = if verify {
                let p: &mut PerfEvent = program
                    .try_into()
                    .map_err(|_| SamplerError::MissingProgram { name })?;
                p.load()
            } else {
                let p: &mut RawTracePoint = program
                    .try_into()
                    .map_err(|_| SamplerError::MissingProgram { name })?;
                p.load()
            };
            result.map_err(|source| SamplerError::Verify { name, source })?;
        }
        Ok(())
    }

    /// Writes `(index, value)` pairs of `CONFIG`.
    fn set_config(&mut self, settings: &[(u32, u32)]) -> Result<(), SamplerError> {
        let mut config: Array<&mut MapData, u32> = self.map_mut(maps::CONFIG)?;
        for &(index, value) in settings {
            config
                .set(index, value, 0)
                .map_err(|source| SamplerError::Update {
                    name: maps::CONFIG,
                    source,
                })?;
        }
        Ok(())
    }

    /// Loads the unwinder, puts it in the tail-call array and switches table walking on.
    fn enable_unwinder(&mut self, layout: &crate::btf::TaskLayout) -> Result<(), SamplerError> {
        let name = programs::UNWIND;
        let program: &mut PerfEvent = self
            .ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(SamplerError::MissingProgram { name })?;
        program
            .load()
            .map_err(|source| SamplerError::Verify { name, source })?;
        let fd = program
            .fd()
            .map_err(|source| SamplerError::Verify { name, source })?
            .try_clone()
            .map_err(SamplerError::UnwinderFd)?;
        let mut tail_calls: ProgramArray<&mut MapData> = self.map_mut(maps::UNWIND_PROGRAMS)?;
        tail_calls
            .set(0, &fd, 0)
            .map_err(|source| SamplerError::Update {
                name: maps::UNWIND_PROGRAMS,
                source,
            })?;
        // Kernel-mode samples find the user registers on the task's kernel stack where BTF says
        // where that is; elsewhere they keep frame-pointer stacks (counted).
        let task_stack = layout.stack.unwrap_or(0);
        if task_stack == 0 {
            tracing::info!(
                "no BTF (/sys/kernel/btf/vmlinux): samples taken in kernel mode keep \
                 frame-pointer user stacks"
            );
        }
        self.set_config(&[
            (config::TASK_STACK_OFFSET, task_stack),
            (config::THREAD_SIZE, X86_64_THREAD_SIZE),
            (config::UNWIND, 1),
        ])?;
        self.unwinding = true;
        Ok(())
    }

    /// The maps userspace fills with unwind tables and process mappings; they can be taken once,
    /// by the table loader's thread. None when the sampler was loaded without `unwind`.
    pub fn take_unwind_maps(&mut self) -> Result<Option<UnwindMaps>, SamplerError> {
        if !self.unwinding {
            return Ok(None);
        }
        let mut take =
            |name: &'static str| self.ebpf.take_map(name).ok_or_else(|| missing_map(name));
        let (rows, pages, processes) = (
            take(maps::UNWIND_ROWS)?,
            take(maps::UNWIND_PAGES)?,
            take(maps::PROCESS_MAPPINGS)?,
        );
        let map_err = |name: &'static str| move |source| SamplerError::Map { name, source };
        let rows = match rows {
            aya::maps::Map::Array(data) => data,
            _ => {
                return Err(SamplerError::Map {
                    name: maps::UNWIND_ROWS,
                    source: MapError::InvalidName {
                        name: maps::UNWIND_ROWS.to_string(),
                    },
                })
            }
        };
        let rows_mapped = map_rows(&rows, self.unwind_rows);
        Ok(Some(UnwindMaps {
            rows,
            rows_mapped,
            row_capacity: self.unwind_rows,
            pages: BpfHashMap::try_from(pages).map_err(map_err(maps::UNWIND_PAGES))?,
            processes: BpfHashMap::try_from(processes).map_err(map_err(maps::PROCESS_MAPPINGS))?,
        }))
    }

    /// A map of the loaded object, by name.
    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, SamplerError> {
        self.ebpf.map(name).ok_or_else(|| missing_map(name))
    }

    fn filter_map<K: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut MapData, K, u8>, SamplerError> {
        self.map_mut(name)
    }

    fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T, SamplerError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let map = self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))?;
        T::try_from(map).map_err(|source| SamplerError::Map { name, source })
    }

    /// Traces the unwinder's steps for process `pid` (0: none) into the ring buffer that
    /// [`Self::take_unwind_trace`] hands out.
    pub fn trace_unwind(&mut self, pid: u32) -> Result<(), SamplerError> {
        self.set_config(&[(config::TRACE_PID, pid)])
    }

    /// The ring buffer of traced unwinder steps ([`agent_common::unwind::TraceStep`] each),
    /// registered with the tokio reactor. Can be taken once.
    pub fn take_unwind_trace(
        &mut self,
    ) -> Result<tokio::io::unix::AsyncFd<RingBuf<MapData>>, SamplerError> {
        let ring = self.take_ring(maps::UNWIND_TRACE)?;
        // SAFETY: the ring buffer owns its fd and keeps it open for as long as it lives, which
        // is as long as the AsyncFd that owns it.
        unsafe { tokio::io::unix::AsyncFd::register(ring) }
            .map_err(|e| SamplerError::Watch(e.into()))
    }

    /// Adds a process to the pid filter while sampling (e.g. a command we just started).
    pub fn add_pid(&mut self, pid: u32) -> Result<(), SamplerError> {
        self.filter_map::<u32>(maps::PID_FILTER)?
            .insert(pid, 1, 0)
            .map_err(|source| SamplerError::Update {
                name: maps::PID_FILTER,
                source,
            })
    }

    /// Makes the cgroup filter exactly `wanted` and switches it on (or off with `enabled` false),
    /// while sampling. Returns how many entries were added and removed.
    pub fn sync_cgroup_filter(
        &mut self,
        enabled: bool,
        wanted: &std::collections::HashSet<u64>,
    ) -> Result<(usize, usize), SamplerError> {
        let update = |source| SamplerError::Update {
            name: maps::CGROUP_FILTER,
            source,
        };
        let (mut added, mut removed) = (0, 0);
        {
            let mut filter = self.filter_map::<u64>(maps::CGROUP_FILTER)?;
            let present = filter
                .keys()
                .collect::<Result<std::collections::HashSet<u64>, _>>()
                .map_err(update)?;
            for stale in present.difference(wanted) {
                filter.remove(stale).map_err(update)?;
                removed += 1;
            }
            for new in wanted.difference(&present) {
                filter.insert(*new, 1, 0).map_err(update)?;
                added += 1;
            }
        }
        self.set_config(&[(config::FILTER_CGROUPS, u32::from(enabled))])?;
        Ok((added, removed))
    }

    /// Forgets that these processes were announced, so that their next sample makes them a
    /// new incarnation, announced again. Call for processes released (idle, or exited: the
    /// kernel side forgets those itself, unless its exit was missed).
    pub fn forget_pids(&mut self, pids: &[u32]) -> Result<(), SamplerError> {
        let mut known: BpfHashMap<&mut MapData, u32, u64> = self.map_mut(maps::KNOWN_PIDS)?;
        for pid in pids {
            // Absent already (the LRU evicted it, or it was never sampled): nothing to forget.
            let _ = known.remove(pid);
        }
        Ok(())
    }

    /// The incarnation the kernel side holds for `pid` (see [`SampleKey::incarnation`]):
    /// None once the process exited (or was released, or never seen).
    pub fn incarnation(&mut self, pid: u32) -> Result<Option<u64>, SamplerError> {
        let known: BpfHashMap<&mut MapData, u32, u64> = self.map_mut(maps::KNOWN_PIDS)?;
        Ok(known.get(&pid, 0).ok().map(|value| value & !UNSAMPLED))
    }

    /// [`Self::incarnation`], made (now, on the same clock) for a process not known yet, so
    /// that a process read before its first sample is the one its samples name.
    pub fn incarnation_or_new(&mut self, pid: u32) -> Result<u64, SamplerError> {
        if let Some(known) = self.incarnation(pid)? {
            return Ok(known);
        }
        let mut known: BpfHashMap<&mut MapData, u32, u64> = self.map_mut(maps::KNOWN_PIDS)?;
        let now = crate::process::monotonic_ns() & !UNSAMPLED;
        // BPF_NOEXIST: a sample on another CPU may have made it meanwhile; its value wins.
        match known.insert(pid, now, BPF_NOEXIST) {
            Ok(()) => Ok(now),
            Err(_) => Ok(known.get(&pid, 0).map_or(now, |value| value & !UNSAMPLED)),
        }
    }

    /// Attaches the sampler to every online CPU, and the exec and exit raw tracepoints.
    pub fn start(&mut self, frequency_hz: u64) -> Result<(), SamplerError> {
        let cpus = aya::util::online_cpus().map_err(|(what, err)| SamplerError::Cpus(what, err))?;
        for (name, tracepoint) in [
            (programs::EXEC, "sched_process_exec"),
            (programs::EXIT, "sched_process_exit"),
        ] {
            let program: &mut RawTracePoint = self
                .ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or(SamplerError::MissingProgram { name })?;
            let link = program
                .attach(tracepoint)
                .map_err(|err| SamplerError::AttachTracepoint(tracepoint, err))?;
            self.tracepoint_links.push((name, link));
        }
        let program: &mut PerfEvent = self
            .ebpf
            .program_mut(programs::SAMPLE)
            .and_then(|p| p.try_into().ok())
            .ok_or(SamplerError::MissingProgram {
                name: programs::SAMPLE,
            })?;
        for cpu in cpus {
            let link = program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency_hz),
                    false,
                )
                .map_err(|source| SamplerError::AttachCpu { cpu, source })?;
            self.perf_links.push(link);
        }
        Ok(())
    }

    /// Detaches from every CPU: no sample is taken after this returns.
    pub fn stop(&mut self) {
        if let Some(program) = self
            .ebpf
            .program_mut(programs::SAMPLE)
            .and_then(|p| <&mut PerfEvent>::try_from(p).ok())
        {
            for link in self.perf_links.drain(..) {
                if let Err(err) = program.detach(link) {
                    tracing::warn!("detaching the sampler: {err}");
                }
            }
        }
        for (name, link) in self.tracepoint_links.drain(..) {
            let detached = match self
                .ebpf
                .program_mut(name)
                .and_then(|p| <&mut RawTracePoint>::try_from(p).ok())
            {
                Some(program) => program.detach(link),
                None => continue,
            };
            if let Err(err) = detached {
                tracing::warn!("detaching the raw tracepoint {name}: {err}");
            }
        }
    }

    /// The ring buffer announcing processes to read ([`agent_common::Announcement`]s),
    /// for a thread to wait on (see [`crate::session::intake`]). Can be taken once.
    pub fn take_new_pids(&mut self) -> Result<RingBuf<MapData>, SamplerError> {
        self.take_ring(maps::NEW_PIDS)
    }

    /// Takes ring buffer `name` out of the object.
    fn take_ring(&mut self, name: &'static str) -> Result<RingBuf<MapData>, SamplerError> {
        let map = self.ebpf.take_map(name).ok_or_else(|| missing_map(name))?;
        RingBuf::try_from(map).map_err(|source| SamplerError::Map { name, source })
    }

    /// Per-reason counters, summed over CPUs.
    pub fn drop_counts(&self) -> Result<DropCounts, SamplerError> {
        let map = self.map(maps::ERRORS)?;
        let errors: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|source| SamplerError::Map {
                name: maps::ERRORS,
                source,
            })?;
        let mut counts = DropCounts::default();
        for kind in ErrorKind::ALL {
            let values = errors
                .get(&(kind as u32), 0)
                .map_err(|source| SamplerError::Map {
                    name: maps::ERRORS,
                    source,
                })?;
            counts.0[kind as usize] = values.iter().sum();
        }
        Ok(counts)
    }

    /// Reads every counted sample of the current generation and the stacks they reference. Call
    /// after [`Self::stop`] for an exact snapshot.
    pub fn drain(&mut self) -> Result<Drained, SamplerError> {
        let (counts, stacks) = generation_maps(self.generation);
        self.read_generation(counts, stacks)
    }

    /// Continuous profiling: sends samples to the other generation of maps, waits for programs
    /// already running, then reads and empties the generation no longer written. Every sample
    /// counted before the flip is in the result exactly once; none is lost to the flip.
    pub fn flip(&mut self) -> Result<Drained, SamplerError> {
        if !self.double_buffered {
            return Err(SamplerError::NotDoubleBuffered);
        }
        let old = self.generation;
        let new = 1 - old;
        self.set_config(&[(config::GENERATION, new)])?;
        self.generation = new;
        std::thread::sleep(FLIP_GRACE);
        let (counts, stacks) = generation_maps(old);
        let drained = self.read_generation(counts, stacks)?;
        self.clear_generation(counts, stacks)?;
        Ok(drained)
    }

    fn read_generation(
        &self,
        counts_name: &'static str,
        stacks_name: &'static str,
    ) -> Result<Drained, SamplerError> {
        let map_err = |name: &'static str| move |source| SamplerError::Map { name, source };
        let counts: BpfHashMap<&MapData, SampleKey, u64> =
            BpfHashMap::try_from(self.map(counts_name)?).map_err(map_err(counts_name))?;
        let mut drained = Drained::default();
        for entry in counts.iter() {
            let (key, count) = entry.map_err(map_err(counts_name))?;
            drained.samples.push(RawSample::from_key(&key, count));
        }
        let stacks: BpfHashMap<&MapData, u64, Stack> =
            BpfHashMap::try_from(self.map(stacks_name)?).map_err(map_err(stacks_name))?;
        for sample in &drained.samples {
            for id in [sample.user_stack, sample.kernel_stack]
                .into_iter()
                .flatten()
            {
                if drained.stacks.contains_key(&id) {
                    continue;
                }
                match stacks.get(&id, 0) {
                    Ok(stack) => {
                        let len = usize::try_from(stack.len)
                            .unwrap_or(usize::MAX)
                            .min(stack.ips.len());
                        drained.stacks.insert(id, stack.ips[..len].to_vec());
                    }
                    Err(_) => drained.missing_stacks += 1,
                }
            }
        }
        Ok(drained)
    }

    /// Empties a generation that no program writes any more.
    fn clear_generation(
        &mut self,
        counts_name: &'static str,
        stacks_name: &'static str,
    ) -> Result<(), SamplerError> {
        self.clear_map::<SampleKey, u64>(counts_name)?;
        self.clear_map::<u64, Stack>(stacks_name)
    }

    /// Removes every entry of a hash map.
    fn clear_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<(), SamplerError> {
        let map_err = |source| SamplerError::Map { name, source };
        let mut map: BpfHashMap<&mut MapData, K, V> = self.map_mut(name)?;
        let keys = map.keys().collect::<Result<Vec<K>, _>>().map_err(map_err)?;
        for key in keys {
            map.remove(&key).map_err(map_err)?;
        }
        Ok(())
    }
}

/// The row array mapped into our memory (the map is created `BPF_F_MMAPABLE`); None when the
/// kernel refuses the mapping, and rows are written through the syscall.
fn map_rows(rows: &MapData, capacity: u32) -> Option<memmap2::MmapMut> {
    use std::os::fd::{AsFd, AsRawFd};
    const _: () = assert!(
        std::mem::size_of::<Row>() == 8,
        "array values are 8-byte strided"
    );
    let bytes = capacity as usize * std::mem::size_of::<Row>();
    let fd = rows.fd().as_fd().as_raw_fd();
    // SAFETY: the map's memory is plain rows; only this process writes it, and the kernel reads
    // rows only once a page entry (inserted after the copy, by syscall) points at them.
    match unsafe { memmap2::MmapOptions::new().len(bytes).map_mut(fd) } {
        Ok(mapped) => Some(mapped),
        Err(err) => {
            tracing::debug!("cannot map the unwind row array, writing it by syscall: {err}");
            None
        }
    }
}

/// The unwind maps, owned by whoever loads tables (see [`crate::unwind`]).
pub struct UnwindMaps {
    /// Written by [`Self::write_rows`]: through `rows_mapped` where the kernel maps the array,
    /// else in batches through the syscall itself (aya has no batch updates).
    rows: MapData,
    rows_mapped: Option<memmap2::MmapMut>,
    row_capacity: u32,
    pages: BpfHashMap<MapData, PageKey, PageRows>,
    processes: BpfHashMap<MapData, u32, ProcessMappings>,
}

/// Why writing an unwind map failed.
#[derive(Debug, thiserror::Error)]
#[error("updating BPF map {name} failed: {source}")]
pub struct UnwindMapError {
    name: &'static str,
    #[source]
    source: MapError,
}

impl UnwindMaps {
    /// Capacity of the row array.
    pub fn row_capacity(&self) -> u32 {
        self.row_capacity
    }

    /// Writes `rows` at `first..first + rows.len()`: one copy into the mapped array; without
    /// it, in batches of up to 64 Ki rows (`BPF_MAP_UPDATE_BATCH`, Linux 5.6+), row by row
    /// where the kernel has no batches. One syscall per row costs about 90 ms for a Go binary's
    /// 17,000 rows.
    pub fn write_rows(&mut self, first: u32, rows: &[Row]) -> Result<(), UnwindMapError> {
        use std::os::fd::{AsFd, AsRawFd};
        let err = |e: std::io::Error| UnwindMapError {
            name: maps::UNWIND_ROWS,
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "BPF_MAP_UPDATE_BATCH",
                io_error: e,
            }),
        };
        let end = u32::try_from(rows.len())
            .ok()
            .and_then(|n| first.checked_add(n))
            .filter(|&end| end <= self.row_capacity);
        if end.is_none() {
            return Err(err(std::io::Error::from_raw_os_error(libc::E2BIG)));
        }
        if let Some(mapped) = &mut self.rows_mapped {
            // SAFETY: `Row` is plain `repr(C)` data without padding.
            let bytes = unsafe {
                std::slice::from_raw_parts(rows.as_ptr().cast::<u8>(), std::mem::size_of_val(rows))
            };
            let at = first as usize * std::mem::size_of::<Row>();
            mapped[at..at + bytes.len()].copy_from_slice(bytes);
            return Ok(());
        }
        let fd = self.rows.fd().as_fd().as_raw_fd();
        for (chunk_index, chunk) in rows.chunks(1 << 16).enumerate() {
            let base = first + (chunk_index as u32) * (1 << 16);
            let keys: Vec<u32> = (base..base + chunk.len() as u32).collect();
            match bpf_sys::update_batch(fd, &keys, chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    for (key, row) in keys.iter().zip(chunk) {
                        bpf_sys::update_elem(fd, key, row).map_err(err)?;
                    }
                }
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    pub fn insert_page(&mut self, key: PageKey, rows: PageRows) -> Result<(), UnwindMapError> {
        self.pages
            .insert(key, rows, 0)
            .map_err(|source| UnwindMapError {
                name: maps::UNWIND_PAGES,
                source,
            })
    }

    pub fn remove_page(&mut self, key: &PageKey) {
        // Absent already: nothing to remove.
        let _ = self.pages.remove(key);
    }

    pub fn set_process(
        &mut self,
        pid: u32,
        mappings: &ProcessMappings,
    ) -> Result<(), UnwindMapError> {
        self.processes
            .insert(pid, mappings, 0)
            .map_err(|source| UnwindMapError {
                name: maps::PROCESS_MAPPINGS,
                source,
            })
    }

    /// Removes a process's mappings, unless a later incarnation's replaced them.
    pub fn remove_process(&mut self, key: ProcessKey) {
        // Absent already (never loaded, or removed): nothing to remove. Another incarnation's
        // could replace them between the two calls; the kernel then walks with frame pointers
        // until that incarnation's next capture.
        let ours = self
            .processes
            .get(&key.pid, 0)
            .is_ok_and(|m| m.incarnation == key.incarnation);
        if ours {
            let _ = self.processes.remove(&key.pid);
        }
    }
}

/// The two `bpf(2)` commands aya 0.14 lacks in the form we need.
mod bpf_sys {
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

    /// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }

    /// `union bpf_attr` for the `BPF_MAP_*_BATCH` commands.
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }

    fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<()> {
        // SAFETY: `attr` is a properly laid out `bpf_attr` prefix for `cmd` whose pointers
        // reference memory that outlives the call; the kernel reads `size_of::<T>()` bytes.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *const T,
                std::mem::size_of::<T>() as libc::c_uint,
            )
        };
        if ret < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sets `values[i]` at `keys[i]` of an array map, in one call.
    pub fn update_batch<V>(fd: i32, keys: &[u32], values: &[V]) -> std::io::Result<()> {
        assert_eq!(keys.len(), values.len());
        let attr = BatchAttr {
            in_batch: 0,
            out_batch: 0,
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: u32::try_from(keys.len())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?,
            map_fd: fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        bpf(BPF_MAP_UPDATE_BATCH, &attr)
    }

    pub fn update_elem<V>(fd: i32, key: &u32, value: &V) -> std::io::Result<()> {
        let attr = ElemAttr {
            map_fd: fd as u32,
            _pad: 0,
            key: key as *const u32 as u64,
            value: value as *const V as u64,
            flags: 0,
        };
        bpf(BPF_MAP_UPDATE_ELEM, &attr)
    }
}

/// The counts and stack maps of a generation.
fn generation_maps(generation: u32) -> (&'static str, &'static str) {
    if generation == 0 {
        (maps::COUNTS, maps::STACKS)
    } else {
        (maps::COUNTS_B, maps::STACKS_B)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

fn missing_map(name: &'static str) -> SamplerError {
    SamplerError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_string(),
        },
    }
}

/// Root, CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON, from `/proc/self/status`.
fn has_bpf_privileges() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true; // cannot tell: let the kernel decide.
    };
    let Some(cap_eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return true;
    };
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

fn is_permission_error(err: &aya::EbpfError) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::EPERM) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; raise it where we may.
fn bump_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass; failure is harmless on 5.11+ (memcg accounting).
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        tracing::debug!("raising RLIMIT_MEMLOCK failed; fine on kernels ≥ 5.11");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_sample_maps_negative_stack_ids_to_none() {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"main");
        let key = SampleKey {
            tgid: 42,
            pid: 43,
            cgroup_id: 7,
            user_stack: 3,
            kernel_stack: NO_STACK,
            comm,
            incarnation: 99,
        };
        let s = RawSample::from_key(&key, 5);
        assert_eq!(
            s.process(),
            ProcessKey {
                pid: 42,
                incarnation: 99
            }
        );
        assert_eq!(s.comm, "main");
        assert_eq!(s.user_stack, Some(3));
        assert_eq!(s.kernel_stack, None);
        assert_eq!(s.count, 5);
    }

    #[test]
    fn comm_without_nul_uses_all_bytes() {
        assert_eq!(comm_to_string(b"0123456789abcdef"), "0123456789abcdef");
    }

    #[test]
    fn problems_skip_counted_and_filtered() {
        let mut d = DropCounts::default();
        d.0[ErrorKind::Counted as usize] = 10;
        d.0[ErrorKind::Filtered as usize] = 3;
        d.0[ErrorKind::CountsFull as usize] = 2;
        let p: Vec<_> = d.problems().collect();
        assert_eq!(p, vec![(ErrorKind::CountsFull, 2)]);
    }
}
