//! The process table: pid → mappings, captured the first time a process is sampled.
//!
//! A process is read once, at first sight (the kernel announces it), by a [`ProcessReader`]: its
//! mappings are read and its executable files opened right then through `/proc/PID/map_files`
//! (or `/proc/PID/root/...`), so that a process that exits before the end of the window, or a
//! file inside a container, is still symbolized. That is all the intake does; parsing the files
//! waits until their addresses are resolved ([`ProcessTable::prepare`]), so a large binary never
//! delays reading the next short-lived process. Parsed files are shared between processes by
//! file identity (the symbolizer's cache).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::File,
    io,
    sync::Arc,
};

use agent_common::ExecImage;

use crate::mmap_events::{MmapLog, MmapRings};
use symbolizer::{
    process::{MapEntry, MapPath},
    Process, Symbolizer,
};

use crate::profile::{Location, Mapping};

/// Resolved addresses kept across windows, over all processes; past it, every process's are
/// dropped and resolved again. A location is a few hundred bytes (names and paths), so this
/// bounds the cache to a few MiB; a node's working set in one window is usually far smaller.
const MAX_REMEMBERED_LOCATIONS: usize = 32 * 1024;

/// One process: a pid and which process had it (the kernel side's incarnation, see
/// [`agent_common::SampleKey::incarnation`]). Captures and samples meet by it, so a pid reused
/// within a window never lends one process's mappings to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub pid: u32,
    pub incarnation: u64,
}

/// A process as first seen: the symbolizer's handle (executable mappings, pinned files, vDSO)
/// and what pprof gets for each of its mappings.
pub struct ProcessInfo {
    pub pid: u32,
    pub incarnation: u64,
    /// Read because it was sampled (or asked for), not only because it exec'd.
    pub sampled: bool,
    /// Mappings and the files behind them; symbolized through
    /// [`symbolizer::Source::Process`].
    pub process: Process,
    /// The pprof mapping of each of [`Process::mappings`], in the same order (with its build
    /// id once the file is parsed).
    pub mappings: Vec<Arc<Mapping>>,
    /// Addresses already resolved, for later windows (see [`ProcessTable::remember`]); a new
    /// capture starts empty, so an exec or a reused pid never inherits them.
    locations: HashMap<u64, Arc<Location>>,
}

impl ProcessInfo {
    pub fn key(&self) -> ProcessKey {
        ProcessKey {
            pid: self.pid,
            incarnation: self.incarnation,
        }
    }

    /// The pprof mapping holding `addr`.
    pub fn mapping(&self, addr: u64) -> Option<&Arc<Mapping>> {
        self.mappings.get(self.process.find(addr)?)
    }

    /// `addr` as an earlier window resolved it.
    pub fn location(&self, addr: u64) -> Option<&Arc<Location>> {
        self.locations.get(&addr)
    }
}

/// Counters for what could not be captured; reported at the end.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStats {
    /// Processes whose mappings were captured.
    pub captured: u64,
    /// Processes that exited (or were unreadable) before their mappings could be read.
    pub vanished: u64,
    /// Captures made from the kernel's mmap records ([`crate::mmap_events`]): of processes gone
    /// before their read, or whose later read found them gone.
    pub from_records: u64,
    /// Processes gone before their read and without records, named all the same through the
    /// executable the kernel reported at their exec (its file already open for an earlier
    /// process): their code in it is named, their libraries' is not.
    pub named_from_exec: u64,
    /// mmap records the kernel could not write (its ring full) or the log let go of.
    pub records_lost: u64,
    /// Executable mappings whose file could not be opened or parsed.
    pub unreadable_files: u64,
    /// Refresh requests (a pc outside the known mappings) that found the code mappings as
    /// they were: nothing reloaded.
    pub refreshes_unchanged: u64,
}

/// Where process facts come from: `/proc` in production, canned data in tests.
pub trait ProcSource {
    fn maps(&self, pid: u32) -> io::Result<Vec<MapEntry>>;
    fn open(&self, pid: u32, entry: &MapEntry) -> io::Result<(File, String)>;
    /// Whether `pid` is a child of this process that has not exec'd yet (a copy of the agent,
    /// between fork and exec: the command `record` starts).
    fn is_unexeced_child(&self, _pid: u32) -> bool {
        false
    }
    /// The parent of `pid`, while it lives.
    fn parent(&self, _pid: u32) -> Option<u32> {
        None
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the kernel side's incarnations
/// (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: one valid timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The real `/proc`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Proc;

impl ProcSource for Proc {
    fn parent(&self, pid: u32) -> Option<u32> {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command, which is in parentheses and may hold anything.
        let rest = &st[st.rfind(')')? + 1..];
        rest.split_whitespace().nth(1)?.parse::<u32>().ok()
    }

    fn is_unexeced_child(&self, pid: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.parent(pid) != Some(std::process::id()) {
            return false;
        }
        let exe = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let theirs = exe(&format!("/proc/{pid}/exe"));
        theirs.is_some() && theirs == exe("/proc/self/exe")
    }

    fn maps(&self, pid: u32) -> io::Result<Vec<MapEntry>> {
        let path = format!("/proc/{pid}/maps");
        let text = std::fs::read_to_string(&path)?;
        symbolizer::process::parse_maps(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))
    }

    fn open(&self, pid: u32, entry: &MapEntry) -> io::Result<(File, String)> {
        // map_files first (deleted files, other mount namespaces), then root/<path>; the name
        // shown stays the one the process sees.
        let MapPath::File(name) = &entry.path else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a file"));
        };
        match symbolizer::process::open_mapped_file(pid, entry) {
            Ok((file, _)) => Ok((file, name.clone())),
            // Gone (captured from the kernel's records): the same path in our own mount
            // namespace, if it is the same file.
            Err(err) => match File::open(name) {
                Ok(file) if entry.inode != 0 && same_file(&file, entry) => Ok((file, name.clone())),
                _ => Err(err),
            },
        }
    }
}

/// Whether `file` is the one `entry` maps: the same device and inode.
fn same_file(file: &File, entry: &MapEntry) -> bool {
    use std::os::unix::fs::MetadataExt;
    file.metadata().is_ok_and(|m| {
        let dev = m.dev();
        libc::major(dev) == entry.dev_major
            && libc::minor(dev) == entry.dev_minor
            && m.ino() == entry.inode
    })
}

/// Reads processes at first sight: their mappings, and the files behind their code, opened at
/// once. It holds only what it needs to tell a refresh that changes nothing and a process that
/// could not be read; the captures go to a [`ProcessTable`]. In a session it runs on the intake
/// thread ([`crate::session::intake`]), never behind symbolization.
pub struct ProcessReader<S: ProcSource = Proc> {
    source: S,
    /// Every pid captured and not forgotten.
    held: HashMap<u32, Held>,
    /// Processes that could not be read, each counted once.
    vanished: HashSet<ProcessKey>,
    /// Files opened for captures, by the identity the mappings show (device, inode): a binary
    /// that many processes map (a program exec'd a thousand times a second) is opened once and
    /// duplicated after, which costs far less than opening it through `/proc` again. An open
    /// file's inode cannot be reused by another file. Emptied by [`Self::release_files`] and
    /// past [`MAX_OPENED`].
    opened: HashMap<(u32, u32, u64), (File, String)>,
    /// The kernel's records of mappings, when they could be opened, and what they said.
    rings: Option<MmapRings>,
    records: MmapLog,
    stats: ProcessStats,
}

/// Files [`ProcessReader`] keeps open for reuse at most.
const MAX_OPENED: usize = 1024;

/// What a reader keeps of a capture.
struct Held {
    incarnation: u64,
    /// The code mappings, in address order.
    code: Vec<MapEntry>,
    /// Whether it was sampled since: a capture taken at exec is not, and its tables wait for
    /// its first sample (most exec'd processes are never sampled at all).
    sampled: bool,
    /// When its read began ([`monotonic_ns`]).
    read_at: u64,
}

/// A capture found to be of a later image than its incarnation's: the process was first
/// sampled in the middle of an exec (or just before it), and read after it. Its samples were
/// taken in the image it forked from: its parent's, which `parent` names when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreExec {
    pub key: ProcessKey,
    pub parent: Option<u32>,
}

/// Why a process is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Asked for (a sample, or a process named by the user): always captured.
    Now,
    /// At its exec, before any sample; with the executable the kernel loaded, when known.
    Exec(Option<ExecImage>),
    /// Its first sample after exec, or a pc outside its mappings.
    Again,
}

impl ProcessReader<Proc> {
    pub fn new() -> Self {
        Self::with_source(Proc)
    }
}

impl Default for ProcessReader<Proc> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: ProcSource> ProcessReader<S> {
    pub fn with_source(source: S) -> Self {
        ProcessReader {
            source,
            held: HashMap::new(),
            vanished: HashSet::new(),
            opened: HashMap::new(),
            rings: None,
            records: MmapLog::new(),
            stats: ProcessStats::default(),
        }
    }

    pub fn stats(&self) -> ProcessStats {
        ProcessStats {
            records_lost: self.records_lost(),
            ..self.stats
        }
    }

    /// Captures a process's mappings and opens its executable files (after exec the kernel
    /// side announces the process again, a new incarnation). None when the process could not
    /// be read. Files are parsed later, by [`ProcessTable::prepare`].
    pub fn observe(&mut self, pid: u32, incarnation: u64) -> Option<ProcessInfo> {
        self.capture(ProcessKey { pid, incarnation }, Read::Now)
    }

    /// [`Self::observe`] at exec: the capture is not taken as sampled, so the process's first
    /// sample ([`Self::refresh`]) captures it again, to load its tables with what it maps by
    /// then. An earlier incarnation read after this exec began is returned as a [`PreExec`]:
    /// that capture holds the new image, not the one its samples ran.
    ///
    /// `exe` is the executable the kernel loaded (when it could tell): a process that is gone
    /// by the time its mappings are read is captured with that file's code alone, if the same
    /// file is already open for another process.
    pub fn at_exec(
        &mut self,
        pid: u32,
        incarnation: u64,
        exe: Option<ExecImage>,
    ) -> (Option<ProcessInfo>, Option<PreExec>) {
        let stale = self
            .held
            .get(&pid)
            .filter(|h| h.incarnation < incarnation && h.read_at >= incarnation)
            .map(|h| PreExec {
                key: ProcessKey {
                    pid,
                    incarnation: h.incarnation,
                },
                parent: self.source.parent(pid),
            });
        let info = self.capture(ProcessKey { pid, incarnation }, Read::Exec(exe));
        (info, stale)
    }

    /// Reads a held process's mappings again (at its first sample after an exec-time read, or
    /// because the kernel saw it run code outside them); captures only when its code mappings
    /// changed, when it is not held as this incarnation, or when it was read at exec and not
    /// sampled since. A process whose walks keep reaching
    /// addresses it does not map (a return address the tables got wrong) asks up to ten times
    /// a second, and re-opening and reloading its files each time would cost far more than the
    /// read.
    pub fn refresh(&mut self, pid: u32, incarnation: u64) -> Option<ProcessInfo> {
        self.capture(ProcessKey { pid, incarnation }, Read::Again)
    }

    fn capture(&mut self, key: ProcessKey, why: Read) -> Option<ProcessInfo> {
        let pid = key.pid;
        let read_at = monotonic_ns();
        // Our own image in a child about to exec: its tables (the agent's, large) would be
        // built for nothing, ahead of the command's. Its exec makes the kernel announce it again.
        // (A process announced at exec has exec'd.)
        if !matches!(why, Read::Exec(_)) && self.source.is_unexeced_child(pid) {
            tracing::debug!(pid, "a child of ours before its exec: not captured");
            return None;
        }
        let (mut entries, failed) = match self.source.maps(pid) {
            Ok(entries) => (entries, false),
            Err(err) => {
                tracing::debug!(pid, "cannot read mappings: {err}");
                (Vec::new(), true)
            }
        };
        // A live image always maps code (its text, at least the vDSO). No code at all is a
        // process between exec's steps (the new mm before the binary is mapped) or one exiting
        // (mm gone, zombie). Such a process, or one already gone, is captured from the
        // kernel's records of its mappings, or from the executable its exec loaded; else not
        // at all, keeping any earlier capture.
        if !entries.iter().any(|e| e.executable) {
            let held = self
                .held
                .get(&pid)
                .is_some_and(|h| h.incarnation == key.incarnation);
            let gone = !held && (failed || matches!(why, Read::Exec(_)));
            if gone && self.vanished.insert(key) {
                self.stats.vanished += 1;
            }
            if let Some(recorded) = self.recorded(key) {
                tracing::debug!(pid, mappings = recorded.len(), "captured from mmap records");
                self.stats.from_records += 1;
                entries = recorded;
            } else if !gone {
                tracing::debug!(
                    pid,
                    "no code mapped (exiting, or in mid-exec): not captured"
                );
                return None;
            } else if let Some(entry) = match why {
                Read::Exec(Some(exe)) => self.exec_entry(&exe),
                _ => None,
            } {
                tracing::debug!(pid, file = %entry.path, "gone: named from its exec");
                self.stats.named_from_exec += 1;
                entries = vec![entry];
            } else {
                return None;
            }
        }
        if why == Read::Again {
            let held = self.held.get(&pid);
            if let Some(held) = held.filter(|h| h.incarnation == key.incarnation && h.sampled) {
                let mut code: Vec<&MapEntry> = entries.iter().filter(|e| e.executable).collect();
                code.sort_by_key(|e| e.start);
                if code.len() == held.code.len()
                    && code.iter().zip(&held.code).all(|(a, b)| **a == *b)
                {
                    self.stats.refreshes_unchanged += 1;
                    return None;
                }
            }
        }
        if self.opened.len() > MAX_OPENED {
            self.opened.clear();
        }
        let (source, stats, opened) = (&self.source, &mut self.stats, &mut self.opened);
        let process = Process::from_maps(pid, entries, |entry| {
            let identity = (entry.dev_major, entry.dev_minor, entry.inode);
            if let (MapPath::File(name), Some((file, _))) = (&entry.path, opened.get(&identity)) {
                if let Ok(file) = file.try_clone() {
                    return Ok((file, name.clone()));
                }
            }
            let result = source.open(pid, entry);
            match &result {
                Ok((file, name)) if entry.inode != 0 => {
                    if let Ok(file) = file.try_clone() {
                        opened.insert(identity, (file, name.clone()));
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(pid, file = %entry.path, "cannot open: {err}");
                    stats.unreadable_files += 1;
                }
            }
            result
        });
        let mappings = process
            .mappings()
            .iter()
            .map(|entry| {
                Arc::new(Mapping {
                    start: entry.start,
                    limit: entry.end,
                    offset: entry.offset,
                    file: entry.path.to_string(),
                    build_id: None,
                })
            })
            .collect();
        let held = Held {
            incarnation: key.incarnation,
            code: process.mappings().to_vec(),
            sampled: !matches!(why, Read::Exec(_)),
            read_at,
        };
        let replaced = self.held.insert(pid, held).is_some();
        tracing::debug!(
            pid,
            mappings = process.mappings().len(),
            replaced,
            "captured mappings"
        );
        self.vanished.remove(&key);
        self.stats.captured += 1;
        Some(ProcessInfo {
            pid,
            incarnation: key.incarnation,
            sampled: !matches!(why, Read::Exec(_)),
            process,
            mappings,
            locations: HashMap::new(),
        })
    }

    /// Takes in what the kernel recorded of mappings, execs and exits since the last call.
    pub fn drain_records(&mut self) {
        if let Some(rings) = &mut self.rings {
            rings.drain(&mut self.records);
        }
    }

    /// Records mmap records from now on (see [`crate::mmap_events`]).
    pub fn record_mappings(&mut self, rings: MmapRings) {
        self.rings = Some(rings);
    }

    /// The code mappings the kernel recorded for this incarnation (read to the last record).
    fn recorded(&mut self, key: ProcessKey) -> Option<Vec<MapEntry>> {
        self.drain_records();
        let mut entries = self.records.mappings(key.pid, key.incarnation)?;
        entries.retain(|e| e.executable);
        (!entries.is_empty()).then_some(entries)
    }

    /// Records lost by the kernel (a ring full) or let go of by the log.
    pub fn records_lost(&self) -> u64 {
        self.rings.as_ref().map_or(0, |r| r.lost) + self.records.dropped
    }

    /// The code mapping of an executable the kernel named at exec, when the same file (by
    /// device and inode, as `/proc/PID/maps` shows them) is open for an earlier process.
    fn exec_entry(&self, exe: &ExecImage) -> Option<MapEntry> {
        // The kernel's dev_t: 20 bits of minor.
        let (dev_major, dev_minor) = (exe.dev >> 20, exe.dev & 0xf_ffff);
        let (file, name) = self.opened.get(&(dev_major, dev_minor, exe.inode))?;
        let (start, end, offset) =
            symbolizer::process::exec_code_mapping(file, exe.start_code, exe.end_code)
                .map_err(|e| tracing::debug!(file = %name, "no code mapping from exec: {e}"))
                .ok()?;
        Some(MapEntry {
            start,
            end,
            offset,
            readable: true,
            writable: false,
            executable: true,
            private: true,
            dev_major,
            dev_minor,
            inode: exe.inode,
            path: MapPath::File(name.clone()),
            deleted: false,
        })
    }

    /// Forgets a released process: its next announcement captures it afresh.
    pub fn forget(&mut self, key: ProcessKey) {
        self.vanished.remove(&key);
        if self
            .held
            .get(&key.pid)
            .is_some_and(|h| h.incarnation == key.incarnation)
        {
            self.held.remove(&key.pid);
        }
    }

    /// Closes the files kept for reuse (continuous profiling does this every interval, so a
    /// replaced binary is not held open for long).
    pub fn release_files(&mut self) {
        self.opened.clear();
    }

    /// Forgets which processes could not be read, so that a later process reusing one of
    /// their pids is read again (continuous profiling clears this every interval).
    pub fn clear_vanished(&mut self) {
        self.vanished.clear();
    }

    /// Whether the process was tried and could not be read.
    pub fn vanished(&self, key: ProcessKey) -> bool {
        self.vanished.contains(&key)
    }
}

/// pid → [`ProcessInfo`] as captured, with the symbolizer that parses the opened files.
#[derive(Default)]
pub struct ProcessTable {
    /// By pid, then incarnation: a pid's incarnations are one range.
    procs: BTreeMap<ProcessKey, ProcessInfo>,
    symbolizer: Symbolizer,
    /// Files opened at capture that could not be parsed.
    unreadable_files: u64,
    /// Locations remembered over all processes.
    remembered: usize,
    /// Processes sampled before their exec and read after it, by their parent's pid: their
    /// samples ran in the image they forked from (see [`PreExec`]).
    forked_from: HashMap<ProcessKey, u32>,
}

/// Processes [`ProcessTable`] names by their parent at most; past it, the oldest half goes.
const MAX_FORKED_FROM: usize = 16 * 1024;

impl ProcessTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, key: ProcessKey) -> Option<&ProcessInfo> {
        self.procs.get(&self.held_key(key)?)
    }

    /// The capture that holds `key`'s mappings: its own, or for a process read only after its
    /// exec, its parent's (the parent's incarnation from before it was first seen: a fork
    /// copies the parent's image).
    fn held_key(&self, key: ProcessKey) -> Option<ProcessKey> {
        if self.procs.contains_key(&key) {
            return Some(key);
        }
        let pid = *self.forked_from.get(&key)?;
        let before = ProcessKey {
            pid,
            incarnation: key.incarnation,
        };
        self.procs
            .range(Self::first_of(pid)..before)
            .next_back()
            .map(|(k, _)| *k)
    }

    /// The least key of `pid`'s incarnations.
    fn first_of(pid: u32) -> ProcessKey {
        ProcessKey {
            pid,
            incarnation: 0,
        }
    }

    /// Takes a [`PreExec`] in: its capture (of the later image) is dropped, and its samples
    /// are resolved with its parent's mappings, or not at all.
    pub fn pre_exec(&mut self, stale: PreExec) {
        self.forget(stale.key);
        if let Some(parent) = stale.parent {
            if self.forked_from.len() >= MAX_FORKED_FROM {
                let mut keys: Vec<ProcessKey> = self.forked_from.keys().copied().collect();
                keys.sort_by_key(|k| k.incarnation);
                for k in &keys[..keys.len() / 2] {
                    self.forked_from.remove(k);
                }
            }
            self.forked_from.insert(stale.key, parent);
        }
    }

    /// Whether any incarnation of `pid` is held.
    pub fn holds_pid(&self, pid: u32) -> bool {
        self.procs
            .range(Self::first_of(pid)..)
            .next()
            .is_some_and(|(k, _)| k.pid == pid)
    }

    pub fn symbolizer(&self) -> &Symbolizer {
        &self.symbolizer
    }

    pub fn symbolizer_mut(&mut self) -> &mut Symbolizer {
        &mut self.symbolizer
    }

    /// Files that were opened but could not be parsed.
    pub fn unreadable_files(&self) -> u64 {
        self.unreadable_files
    }

    /// Holds a capture, replacing an earlier one of the same process (and what it
    /// remembered). Earlier incarnations of its pid stay until forgotten: their samples may
    /// wait in the same window.
    ///
    /// A sampled process's files are parsed now (once per file identity), and so let go of;
    /// one read only at its exec keeps open just the files not parsed yet, as most such
    /// processes are never sampled. Either way a program exec'd a thousand times a second does
    /// not hold a thousand copies of its files open.
    pub fn insert(&mut self, mut info: ProcessInfo) {
        let (key, sampled) = (info.key(), info.sampled);
        if !sampled {
            self.symbolizer.prepare_parsed(&mut info.process);
        }
        if let Some(old) = self.procs.insert(key, info) {
            self.remembered -= old.locations.len();
        }
        if sampled {
            self.prepare(key);
        }
    }

    /// Releases a process (its mappings and file references). Returns whether it was held.
    pub fn forget(&mut self, key: ProcessKey) -> bool {
        self.forked_from.remove(&key);
        match self.procs.remove(&key) {
            Some(old) => {
                self.remembered -= old.locations.len();
                true
            }
            None => false,
        }
    }

    /// Keeps a resolved address of a held process for later windows: the answer cannot change
    /// while the capture stands (the same files at the same places). Bounded by
    /// [`MAX_REMEMBERED_LOCATIONS`].
    pub fn remember(&mut self, key: ProcessKey, location: Arc<Location>) {
        if self.remembered >= MAX_REMEMBERED_LOCATIONS {
            for info in self.procs.values_mut() {
                info.locations.clear();
            }
            self.remembered = 0;
        }
        if let Some(info) = self.procs.get_mut(&key) {
            if info.locations.insert(location.address, location).is_none() {
                self.remembered += 1;
            }
        }
    }

    /// Locations remembered now, over all processes.
    pub fn remembered(&self) -> usize {
        self.remembered
    }

    /// Every process held.
    pub fn keys(&self) -> Vec<ProcessKey> {
        self.procs.keys().copied().collect()
    }

    /// Parses the files a process's mappings opened (once per file identity), so that its
    /// addresses can be resolved.
    pub fn prepare(&mut self, key: ProcessKey) {
        let Some(info) = self.held_key(key).and_then(|k| self.procs.get_mut(&k)) else {
            return;
        };
        let pid = key.pid;
        for (path, err) in self.symbolizer.prepare(&mut info.process) {
            if path == MapPath::Vdso {
                tracing::debug!(pid, "vDSO symbols unavailable: {err}");
            } else {
                tracing::debug!(pid, file = %path, "cannot parse: {err}");
                self.unreadable_files += 1;
            }
        }
        for (i, mapping) in info.mappings.iter_mut().enumerate() {
            if mapping.build_id.is_some() {
                continue;
            }
            if let Some(build_id) = info.process.resolver(i).and_then(|r| r.build_id_hex()) {
                *mapping = Arc::new(Mapping {
                    build_id: Some(build_id),
                    ..(**mapping).clone()
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The incarnation the tests' processes have.
    const I: u64 = 1000;

    fn key(pid: u32) -> ProcessKey {
        ProcessKey {
            pid,
            incarnation: I,
        }
    }

    /// Canned maps for one pid; files are opened from the real paths named in them.
    struct Canned(HashMap<u32, String>);

    impl ProcSource for Canned {
        fn maps(&self, pid: u32) -> io::Result<Vec<MapEntry>> {
            let text = self.0.get(&pid).ok_or(io::ErrorKind::NotFound)?;
            symbolizer::process::parse_maps(text)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
        }
        fn open(&self, _pid: u32, entry: &MapEntry) -> io::Result<(File, String)> {
            match &entry.path {
                MapPath::File(name) => Ok((File::open(name)?, name.clone())),
                _ => Err(io::ErrorKind::InvalidInput.into()),
            }
        }
    }

    #[test]
    fn captures_executable_mappings_and_counts_failures() {
        let exe = std::env::current_exe().unwrap();
        let maps = format!(
            "00400000-00500000 r-xp 00001000 08:01 1234 {exe}\n\
             00500000-00600000 rw-p 00000000 08:01 1234 {exe}\n\
             00700000-00800000 r-xp 00000000 08:01 99 /nonexistent/lib.so\n\
             7ffd0000-7ffd2000 r-xp 00000000 00:00 0 [vdso]\n",
            exe = exe.display()
        );
        let mut reader = ProcessReader::with_source(Canned(HashMap::from([(7, maps)])));
        let info = reader.observe(7, I).unwrap();
        assert!(reader.observe(8, I).is_none(), "pid 8 has no maps");
        assert!(reader.observe(8, I).is_none(), "still gone");
        assert!(reader.vanished(key(8)));
        assert!(
            info.process.resolver(0).is_none(),
            "files are parsed only when prepared"
        );
        let mut table = ProcessTable::new();
        table.insert(info);
        table.prepare(key(7));
        let stats = reader.stats();
        assert_eq!(stats.captured, 1);
        assert_eq!(stats.vanished, 1, "a process is counted once");
        assert_eq!(stats.unreadable_files, 1, "the missing library");
        assert_eq!(table.unreadable_files(), 0, "what opened parses");

        let info = table.get(key(7)).unwrap();
        assert_eq!(info.mappings.len(), 3, "only r-x mappings are kept");
        assert!(info.process.resolver(0).is_some());
        let m = info.mapping(0x0040_0010).unwrap();
        assert_eq!(m.offset, 0x1000);
        assert!(m.build_id.is_some(), "the test binary has a build id");
        assert!(
            info.mapping(0x0050_0000).is_none(),
            "rw-p mapping is not kept"
        );
        assert_eq!(info.mapping(0x7ffd_0001).unwrap().file, "[vdso]");
        assert!(info.process.resolver(2).is_some(), "the vDSO");
        assert!(info.mapping(0x10).is_none());
    }

    /// A refresh (the kernel saw a pc outside the known mappings) re-captures only when the
    /// code mappings changed; a new announcement always re-captures.
    #[test]
    fn a_refresh_recaptures_only_changed_code() {
        let exe = std::env::current_exe().unwrap();
        let one = format!(
            "00400000-00500000 r-xp 00001000 08:01 1234 {}\n",
            exe.display()
        );
        let two = format!(
            "{one}00700000-00800000 r-xp 00000000 08:01 1234 {}\n",
            exe.display()
        );
        let mut reader = ProcessReader::with_source(Canned(HashMap::from([(7, one)])));
        assert!(reader.observe(7, I).is_some());
        assert!(reader.refresh(7, I).is_none(), "unchanged");
        assert_eq!(reader.stats().refreshes_unchanged, 1);
        assert!(
            reader.observe(7, I).is_some(),
            "an announcement re-captures"
        );
        reader.source.0.insert(7, two);
        let info = reader.refresh(7, I).expect("a new mapping");
        assert_eq!(info.mappings.len(), 2);
        assert_eq!(reader.stats().refreshes_unchanged, 1);
        reader.forget(key(7));
        reader.source.0.insert(
            7,
            format!(
                "00400000-00500000 r-xp 00001000 08:01 1234 {}\n",
                exe.display()
            ),
        );
        assert!(
            reader.refresh(7, I).is_some(),
            "a forgotten pid (reused, perhaps) is captured afresh, not compared with its past"
        );
        assert!(
            reader.refresh(7, I + 2).is_some(),
            "another incarnation of the pid is captured afresh, though its code looks the same"
        );
        let (info, stale) = reader.at_exec(7, I + 4, None);
        assert!(info.is_some(), "read at exec");
        assert_eq!(
            stale,
            Some(PreExec {
                key: ProcessKey {
                    pid: 7,
                    incarnation: I + 2
                },
                parent: None
            }),
            "the earlier incarnation was read after this exec's time: it holds this image"
        );
        assert!(
            reader.refresh(7, I + 4).is_some(),
            "its first sample reads it again, for its tables"
        );
        assert!(reader.refresh(7, I + 4).is_none(), "then only changes do");
    }

    /// A process gone before its mappings are read is named through the executable the kernel
    /// loaded at its exec, when that file (by device and inode) is open for an earlier process;
    /// never through another file, nor through the pid's earlier process.
    #[test]
    fn a_process_gone_at_exec_is_named_from_its_executable() {
        let exe = std::env::current_exe().unwrap();
        // Our own start_code and end_code, as the kernel side reads them for a new image.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let image = |inode| ExecImage {
            dev: (8 << 20) | 1,
            _pad: 0,
            inode,
            start_code: fields[23].parse().unwrap(),
            end_code: fields[24].parse().unwrap(),
        };
        let maps = format!(
            "00400000-00500000 r-xp 00001000 08:01 1234 {}\n",
            exe.display()
        );
        let mut reader = ProcessReader::with_source(Canned(HashMap::from([(7, maps)])));
        assert!(
            reader.at_exec(8, I, Some(image(1234))).0.is_none(),
            "nothing of that file is open yet"
        );
        assert!(reader.observe(7, I).is_some(), "opens the file");
        let (info, _) = reader.at_exec(9, I, Some(image(1234)));
        let info = info.expect("named from its exec");
        assert_eq!(info.key(), key(9));
        let at = image(1234).start_code;
        let mapping = info.mapping(at).expect("its code");
        assert_eq!(mapping.file, exe.display().to_string());
        let (_, end, offset) = symbolizer::process::exec_code_mapping(
            &File::open(&exe).unwrap(),
            at,
            image(1234).end_code,
        )
        .unwrap();
        assert_eq!(
            (mapping.start, mapping.limit, mapping.offset),
            (at, end, offset)
        );
        assert!(
            info.mapping(0x0040_0010).is_none(),
            "nothing of pid 7's capture"
        );
        assert!(
            reader.at_exec(10, I, Some(image(1235))).0.is_none(),
            "another file (inode) is not named"
        );
        assert!(reader.at_exec(11, I, None).0.is_none(), "no image: gone");
        // Pid 7 exits and is reused by a process of another file, gone at once: not named
        // with the first process's mappings.
        reader.source.0.remove(&7);
        assert!(reader.at_exec(7, I + 2, Some(image(99))).0.is_none());
        let stats = reader.stats();
        assert_eq!(stats.vanished, 5);
        assert_eq!(stats.named_from_exec, 1);
        assert!(!reader.vanished(key(9)), "captured, so not vanished");
        let mut table = ProcessTable::new();
        table.insert(info);
        assert!(table.get(key(9)).is_some());
    }

    /// A process gone before its read is captured from the kernel's mmap records of its
    /// incarnation: its executable and the libraries mapped after its exec; a pid reused by a
    /// fork gets none of them.
    #[test]
    fn a_gone_process_is_captured_from_its_mmap_records() {
        use crate::mmap_events::Event;
        let exe = std::env::current_exe().unwrap();
        let entry = |start: u64, inode: u64| MapEntry {
            start,
            end: start + 0x1000,
            offset: 0x1000,
            readable: true,
            writable: false,
            executable: true,
            private: true,
            dev_major: 8,
            dev_minor: 1,
            inode,
            path: MapPath::File(exe.display().to_string()),
            deleted: false,
        };
        let mut reader = ProcessReader::with_source(Canned(HashMap::new()));
        reader.records.push(Event::exec(7, I - 10));
        reader
            .records
            .push(Event::map(7, I - 5, entry(0x40_0000, 1)));
        reader
            .records
            .push(Event::map(7, I + 10, entry(0x7f00_0000, 2)));
        reader.records.push(Event::exit(7, I + 20));
        reader.records.push(Event::fork(7, I + 30));
        let (info, _) = reader.at_exec(7, I, None);
        let info = info.expect("captured from the records");
        assert_eq!(
            info.mappings.len(),
            2,
            "the program and a library mapped after exec"
        );
        assert!(info.mapping(0x7f00_0010).is_some());
        assert!(
            reader.refresh(7, I + 40).is_none(),
            "the fork that reused the pid: no records of its own, nothing of the old ones"
        );
        let stats = reader.stats();
        assert_eq!(stats.from_records, 1);
        assert_eq!(stats.vanished, 2);
        assert_eq!(stats.named_from_exec, 0);
    }

    /// A pid reused within a window: each incarnation keeps its own capture, and a sample
    /// finds the capture of the process it was taken in, never the other's.
    #[test]
    fn a_reused_pid_never_lends_its_mappings() {
        let exe = std::env::current_exe().unwrap();
        let first = format!(
            "00400000-00500000 r-xp 00001000 08:01 1234 {}
",
            exe.display()
        );
        let second = format!(
            "00900000-00a00000 r-xp 00001000 08:01 1234 {}
",
            exe.display()
        );
        let mut reader = ProcessReader::with_source(Canned(HashMap::from([(7, first)])));
        let mut table = ProcessTable::new();
        table.insert(reader.observe(7, I).unwrap());
        // The first process exits; another gets pid 7 and is announced at its exec.
        reader.source.0.insert(7, second);
        let later = ProcessKey {
            pid: 7,
            incarnation: I + 2,
        };
        table.insert(reader.observe(7, later.incarnation).unwrap());
        let old = table
            .get(key(7))
            .expect("the first process stays for its samples");
        assert!(old.mapping(0x0040_0010).is_some());
        assert!(old.mapping(0x0090_0010).is_none());
        let new = table.get(later).expect("the second process");
        assert!(new.mapping(0x0090_0010).is_some());
        assert!(new.mapping(0x0040_0010).is_none());
        assert!(table
            .get(ProcessKey {
                pid: 7,
                incarnation: I + 4
            })
            .is_none());
        // A process sampled in mid-exec and read after it: its capture goes, and its samples
        // take its parent's mappings (pid 7's first process, here), from before it was seen.
        let forked = ProcessKey {
            pid: 9,
            incarnation: I + 6,
        };
        reader.source.0.insert(
            9,
            format!(
                "00b00000-00c00000 r-xp 00001000 08:01 1234 {}\n",
                exe.display()
            ),
        );
        table.insert(reader.observe(9, forked.incarnation).unwrap());
        table.pre_exec(PreExec {
            key: forked,
            parent: Some(7),
        });
        let parent = table.get(forked).expect("the parent's capture");
        assert_eq!(
            parent.key(),
            later,
            "the parent's latest incarnation before it"
        );
        assert!(parent.mapping(0x0090_0010).is_some());
        table.pre_exec(PreExec {
            key: ProcessKey {
                pid: 9,
                incarnation: I + 1,
            },
            parent: Some(7),
        });
        assert_eq!(
            table
                .get(ProcessKey {
                    pid: 9,
                    incarnation: I + 1
                })
                .map(ProcessInfo::key),
            Some(key(7)),
            "never a parent incarnation that began after it"
        );
        table.pre_exec(PreExec {
            key: ProcessKey {
                pid: 9,
                incarnation: I + 8,
            },
            parent: None,
        });
        assert!(table
            .get(ProcessKey {
                pid: 9,
                incarnation: I + 8
            })
            .is_none());
        // Releasing the first leaves the second.
        assert!(table.forget(key(7)));
        assert!(table.holds_pid(7), "the later process is still held");
        assert!(table.forget(later));
        assert!(!table.holds_pid(7));
    }

    /// A process read again while it exits (or between exec's steps) maps no code: the earlier
    /// capture stays, and a process first read in that state is not taken for one that vanished.
    #[test]
    fn a_read_without_code_keeps_the_earlier_capture() {
        let exe = std::env::current_exe().unwrap();
        let live = format!(
            "00400000-00500000 r-xp 00001000 08:01 1234 {}\n",
            exe.display()
        );
        let exiting = "7ffc0000-7ffd0000 rw-p 00000000 00:00 0 [stack]\n".to_string();
        let mut reader =
            ProcessReader::with_source(Canned(HashMap::from([(7, live), (8, exiting.clone())])));
        let mut table = ProcessTable::new();
        table.insert(reader.observe(7, I).unwrap());
        reader.source.0.insert(7, exiting);
        assert!(reader.observe(7, I).is_none(), "nothing new captured");
        assert!(
            table.get(key(7)).unwrap().mapping(0x0040_0010).is_some(),
            "the live capture is kept"
        );
        assert!(reader.refresh(7, I).is_none(), "nor by a refresh");
        assert!(reader.observe(8, I).is_none());
        assert!(
            !reader.vanished(key(8)),
            "its mappings may still come: it is not gone"
        );
        assert_eq!(reader.stats().captured, 1);
    }
}
