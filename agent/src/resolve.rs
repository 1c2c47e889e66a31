//! From drained kernel samples to symbolized stacks ([`Recording`]).
//!
//! Each address is resolved once per process, by the symbolizer's process source
//! ([`symbolizer::Source::Process`]: absolute address → mapping → file offset → ELF virtual
//! address → frames, one binary at a time and within the DWARF budget), the same path
//! `bellows symbolize --pid` takes. Caller frames hold return addresses, so they are looked up
//! one byte earlier ([`symbolizer::lookup_addresses`]), and that adjusted address is what the
//! profile records, so that a server re-symbolizing it gets the same answer.

use std::{collections::HashMap, sync::Arc};

use symbolizer::{lookup_addresses, Input, Source, Symbolized};

use crate::{
    ebpf::{Drained, RawSample},
    process::{ProcessKey, ProcessTable},
    profile::{Location, Recording, Sample},
};

/// Default bound on DWARF loaded at once across binaries (see
/// [`symbolizer::Symbolizer::set_dwarf_budget`]). [`resolve`] looks addresses up one binary at
/// a time, so within one window each binary's DWARF is built at most once: for a one-shot
/// recording the budget costs no rebuilds at all.
pub const DWARF_BUDGET: u64 = 128 << 20;

/// What could not be resolved, for the end-of-run report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResolveStats {
    /// User frames looked up (distinct per process and address).
    pub user_frames: u64,
    /// ... of which an earlier window had resolved.
    pub user_frames_remembered: u64,
    /// ... of which no symbol was found.
    pub user_unsymbolized: u64,
    /// Kernel frames looked up (distinct addresses).
    pub kernel_frames: u64,
    pub kernel_unsymbolized: u64,
    /// Samples of processes whose mappings were never captured.
    pub samples_without_process: u64,
    /// Samples whose stack id was missing from the stack map (evicted or never stored).
    pub missing_stacks: u64,
}

impl std::ops::AddAssign<&ResolveStats> for ResolveStats {
    /// Totals over several windows (continuous profiling).
    fn add_assign(&mut self, o: &ResolveStats) {
        self.user_frames += o.user_frames;
        self.user_frames_remembered += o.user_frames_remembered;
        self.user_unsymbolized += o.user_unsymbolized;
        self.kernel_frames += o.kernel_frames;
        self.kernel_unsymbolized += o.kernel_unsymbolized;
        self.samples_without_process += o.samples_without_process;
        self.missing_stacks += o.missing_stacks;
    }
}

/// Builds symbolized samples: exactly one [`Sample`] per drained sample, in the same order (the
/// continuous collector relies on it to attribute samples to cgroups). Kernel frames are named
/// from the kernel symbols the table's symbolizer read ([`symbolizer::Symbolizer::kernel`]);
/// without them they keep only their addresses. Processes are taken as the table holds them
/// (see [`crate::session::Session::resolve`], which first reads those it lacks).
pub fn resolve(
    drained: &Drained,
    table: &mut ProcessTable,
    mut recording: Recording,
) -> (Recording, ResolveStats) {
    let mut stats = ResolveStats {
        missing_stacks: drained.missing_stacks,
        ..ResolveStats::default()
    };
    let processes: std::collections::BTreeSet<ProcessKey> =
        drained.samples.iter().map(RawSample::process).collect();
    for &process in &processes {
        table.prepare(process);
    }

    // Distinct addresses per process, then every process's at once: the symbolizer looks them
    // up grouped by binary (see commit 2f3927f: one binary at a time bounds DWARF rebuilds
    // under the budget).
    // Addresses an earlier window resolved are taken as they were.
    let mut user_addrs: HashMap<ProcessKey, Vec<u64>> = HashMap::new();
    let mut user_cache: HashMap<(ProcessKey, u64), Arc<Location>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for raw in &drained.samples {
        let Some(ips) = raw.user_stack.and_then(|id| drained.stacks.get(&id)) else {
            continue;
        };
        let info = table.get(raw.process());
        for addr in lookup_addresses(walked(ips)) {
            if !seen.insert((raw.process(), addr)) {
                continue;
            }
            match info.and_then(|i| i.location(addr)) {
                Some(location) => {
                    stats.user_frames += 1;
                    stats.user_frames_remembered += 1;
                    if location.frames.is_empty() {
                        stats.user_unsymbolized += 1;
                    }
                    user_cache.insert((raw.process(), addr), Arc::clone(location));
                }
                None => user_addrs.entry(raw.process()).or_default().push(addr),
            }
        }
    }
    drop(seen);
    let requests: Vec<_> = user_addrs
        .iter()
        .map(|(&pid, addrs)| (pid, addrs.as_slice(), table.get(pid)))
        .collect();
    let sources: Vec<_> = requests
        .iter()
        .filter_map(|&(_, addrs, info)| {
            Some((Source::Process(&info?.process), Input::AbsAddr(addrs)))
        })
        .collect();
    let mut answers = table.symbolizer().symbolize_many(&sources).into_iter();
    let mut resolved = Vec::new();
    for &(pid, addrs, info) in &requests {
        // Processes never captured have no answers: their addresses stay addresses.
        let found = info.and_then(|_| answers.next()).unwrap_or_default();
        let mut found = found.into_iter();
        for &addr in addrs {
            stats.user_frames += 1;
            let frames = match found.next() {
                Some(Symbolized::Sym(frames)) => frames,
                _ => Vec::new(),
            };
            if frames.is_empty() {
                stats.user_unsymbolized += 1;
            }
            let location = Arc::new(Location {
                address: addr,
                mapping: info.and_then(|i| i.mapping(addr)).map(Arc::clone),
                frames,
                kernel: false,
            });
            if info.is_some() {
                resolved.push((pid, Arc::clone(&location)));
            }
            user_cache.insert((pid, addr), location);
        }
    }
    drop(answers);
    drop(requests);
    for (pid, location) in resolved {
        table.remember(pid, location);
    }

    // Kernel frames: distinct addresses, through the same shape.
    let mut kernel_addrs = Vec::new();
    let mut kernel_seen = std::collections::HashSet::new();
    for raw in &drained.samples {
        if let Some(ips) = raw.kernel_stack.and_then(|id| drained.stacks.get(&id)) {
            kernel_addrs.extend(lookup_addresses(ips).filter(|&a| kernel_seen.insert(a)));
        }
    }
    drop(kernel_seen);
    let kernel_answers = table
        .symbolizer()
        .symbolize(&Source::Kernel, Input::AbsAddr(&kernel_addrs));
    let mut kernel_cache: HashMap<u64, Arc<Location>> = HashMap::new();
    for (addr, answer) in kernel_addrs.into_iter().zip(kernel_answers) {
        stats.kernel_frames += 1;
        let frames = match answer {
            Symbolized::Sym(frames) => frames,
            Symbolized::Unknown(_) => Vec::new(),
        };
        if frames.is_empty() {
            stats.kernel_unsymbolized += 1;
        }
        let location = Location {
            address: addr,
            mapping: None,
            frames,
            kernel: true,
        };
        kernel_cache.insert(addr, Arc::new(location));
    }

    // The outermost frame of a stack whose walk stopped early (agent_common::TRUNCATED_FRAME).
    let truncated = Arc::new(Location {
        address: agent_common::TRUNCATED_FRAME,
        mapping: None,
        frames: vec![symbolizer::Frame {
            function: "[truncated]".to_string(),
            file: None,
            line: None,
            inlined: false,
            start_line: None,
        }],
        kernel: false,
    });
    for raw in &drained.samples {
        let mut stack: Vec<Arc<Location>> = Vec::new();
        if let Some(ips) = raw.kernel_stack.and_then(|id| drained.stacks.get(&id)) {
            stack.extend(lookup_addresses(ips).filter_map(|a| kernel_cache.get(&a).cloned()));
        }
        if raw.user_stack.is_some() && table.get(raw.process()).is_none() {
            stats.samples_without_process += 1;
        }
        if let Some(ips) = raw.user_stack.and_then(|id| drained.stacks.get(&id)) {
            let user = lookup_addresses(walked(ips))
                .filter_map(|a| user_cache.get(&(raw.process(), a)).cloned());
            stack.extend(user);
            if walked(ips).len() < ips.len() {
                stack.push(Arc::clone(&truncated));
            }
        }
        recording.samples.push(Sample {
            stack,
            count: raw.count,
            pid: raw.tgid,
            tid: raw.tid,
            comm: raw.comm.clone(),
        });
    }
    (recording, stats)
}

/// A user stack without its end marker: the frames that were walked.
fn walked(ips: &[u64]) -> &[u64] {
    match ips.split_last() {
        Some((&agent_common::TRUNCATED_FRAME, rest)) => rest,
        _ => ips,
    }
}

#[cfg(test)]
mod tests {
    use std::{fs::File, io, time::Duration};

    use symbolizer::process::{MapEntry, MapPath};

    use super::*;
    use crate::{
        ebpf::RawSample,
        process::{ProcSource, ProcessReader},
    };

    /// The test binary mapped at its link addresses, as a non-PIE process would be.
    struct SelfOnly;

    impl ProcSource for SelfOnly {
        fn maps(&self, pid: u32) -> io::Result<Vec<MapEntry>> {
            if pid != 1 {
                return Err(io::ErrorKind::NotFound.into());
            }
            // Our own mappings, as the kernel lists them: real addresses and offsets.
            let text = std::fs::read_to_string("/proc/self/maps")?;
            symbolizer::process::parse_maps(&text)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
        }
        fn open(&self, _pid: u32, entry: &MapEntry) -> io::Result<(File, String)> {
            match &entry.path {
                MapPath::File(name) => Ok((File::open(name)?, name.clone())),
                _ => Err(io::ErrorKind::InvalidInput.into()),
            }
        }
    }

    #[inline(never)]
    fn resolve_test_marker() -> u64 {
        std::hint::black_box(0x5eed)
    }

    fn empty_recording() -> Recording {
        Recording {
            frequency_hz: 99,
            start: std::time::SystemTime::UNIX_EPOCH,
            duration: Duration::from_secs(1),
            samples: Vec::new(),
        }
    }

    #[test]
    fn symbolizes_own_function_through_the_process_path() {
        resolve_test_marker();
        let leaf = resolve_test_marker as fn() -> u64 as usize as u64;
        let mut drained = Drained::default();
        drained.stacks.insert(5, vec![leaf, 0x10]);
        drained.samples.push(RawSample {
            tgid: 1,
            incarnation: 5,
            tid: 1,
            cgroup_id: 0,
            comm: "t".into(),
            user_stack: Some(5),
            kernel_stack: None,
            count: 3,
        });
        drained.samples.push(RawSample {
            tgid: 2,
            incarnation: 5,
            tid: 3,
            cgroup_id: 0,
            comm: "gone".into(),
            user_stack: Some(5),
            kernel_stack: None,
            count: 1,
        });
        let mut reader = ProcessReader::with_source(SelfOnly);
        let mut table = ProcessTable::new();
        table.insert(reader.observe(1, 5).expect("our own mappings"));
        assert!(reader.observe(2, 5).is_none(), "pid 2 is gone");
        let (rec, stats) = resolve(&drained, &mut table, empty_recording());
        assert_eq!(rec.samples.len(), 2);
        let leaf_loc = &rec.samples[0].stack[0];
        let name = &leaf_loc.frames.last().expect("symbolized").function;
        assert!(name.contains("resolve_test_marker"), "got {name}");
        assert!(leaf_loc.mapping.is_some());
        // 0x10 is not mapped: kept as an address, counted as unsymbolized.
        assert!(rec.samples[0].stack[1].frames.is_empty());
        assert_eq!(
            rec.samples[0].stack[1].address, 0xf,
            "callers are looked up at ip - 1"
        );
        assert_eq!(stats.samples_without_process, 1);
        assert_eq!(stats.user_frames, 4);
        assert_eq!(stats.user_unsymbolized, 3);
        assert_eq!(stats.user_frames_remembered, 0);

        // A later window takes the held process's addresses as resolved, with the same
        // answers; the process never captured is looked up again.
        let (again, stats) = resolve(&drained, &mut table, empty_recording());
        assert_eq!(again.samples, rec.samples);
        assert_eq!(stats.user_frames, 4);
        assert_eq!(stats.user_frames_remembered, 2);
        assert_eq!(stats.user_unsymbolized, 3);
        assert_eq!(table.remembered(), 2);

        // A new capture (exec, or a reused pid) starts with nothing remembered.
        table.insert(reader.observe(1, 5).expect("our own mappings"));
        assert_eq!(table.remembered(), 0);
        let (_, stats) = resolve(&drained, &mut table, empty_recording());
        assert_eq!(stats.user_frames_remembered, 0);
        table.forget(ProcessKey {
            pid: 1,
            incarnation: 5,
        });
        assert_eq!(table.remembered(), 0);
    }
}
