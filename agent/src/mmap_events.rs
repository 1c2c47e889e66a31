//! The kernel's own record of every executable mapping, exec, fork and exit, as perf gets it:
//! a "dummy" software perf event on each CPU with `mmap2`, `comm_exec` and `task` records in a
//! ring buffer, stamped with `CLOCK_MONOTONIC` (the clock of the kernel side's incarnations).
//!
//! `/proc/PID/maps` can only be read while a process lives, and a program that lives a
//! millisecond maps its libraries after its exec and is often gone before the intake reads it
//! again. These records are written as each mapping is made, so a process that has exited is
//! still captured from them ([`MmapLog::mappings`]). They complete `/proc`, they do not replace
//! it: a process running since before the agent started has no records.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
};

use symbolizer::process::{MapEntry, MapPath};

/// What the log keeps of one pid's records.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The process exec'd: a new image, whose mappings follow.
    Exec,
    /// A new process took the pid (a fork, not exec'd yet: its parent's image).
    Fork,
    /// The process (its leader) exited.
    Exit,
    /// An executable mapping.
    Map(MapEntry),
}

/// One record, as the rings deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pid: u32,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub time: u64,
    kind: Kind,
}

impl Event {
    pub fn exec(pid: u32, time: u64) -> Self {
        Event {
            pid,
            time,
            kind: Kind::Exec,
        }
    }
    pub fn fork(pid: u32, time: u64) -> Self {
        Event {
            pid,
            time,
            kind: Kind::Fork,
        }
    }
    pub fn exit(pid: u32, time: u64) -> Self {
        Event {
            pid,
            time,
            kind: Kind::Exit,
        }
    }
    pub fn map(pid: u32, time: u64, entry: MapEntry) -> Self {
        Event {
            pid,
            time,
            kind: Kind::Map(entry),
        }
    }
}

/// Pids whose records the log holds at most; past it, the half least recently heard of go.
const MAX_PIDS: usize = 8 * 1024;
/// Records kept per pid at most (a process maps a few dozen libraries); past it, the oldest go.
const MAX_EVENTS_PER_PID: usize = 512;

/// Recent records by pid, in time order.
#[derive(Debug, Default)]
pub struct MmapLog {
    by_pid: HashMap<u32, Vec<(u64, Kind)>>,
    /// Records let go of to stay within the bounds.
    pub dropped: u64,
}

impl MmapLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record. The rings of different CPUs are drained one after another, so a pid's
    /// records may arrive out of order: each goes in at its time.
    pub fn push(&mut self, event: Event) {
        if self.by_pid.len() >= MAX_PIDS && !self.by_pid.contains_key(&event.pid) {
            self.evict();
        }
        let events = self.by_pid.entry(event.pid).or_default();
        let at = events
            .iter()
            .rposition(|(t, _)| *t <= event.time)
            .map_or(0, |i| i + 1);
        events.insert(at, (event.time, event.kind));
        if events.len() > MAX_EVENTS_PER_PID {
            events.remove(0);
            self.dropped += 1;
        }
    }

    /// Lets go of the half of the pids heard of least recently.
    fn evict(&mut self) {
        let mut last: Vec<(u64, u32)> = self
            .by_pid
            .iter()
            .map(|(&pid, e)| (e.last().map_or(0, |(t, _)| *t), pid))
            .collect();
        last.sort_unstable();
        for &(_, pid) in &last[..last.len() / 2] {
            if let Some(events) = self.by_pid.remove(&pid) {
                self.dropped += events.len() as u64;
            }
        }
    }

    /// The executable mappings of `pid`'s incarnation `incarnation` (the kernel side's time for
    /// it, taken at or after its exec), as the records made them: those of its last exec at or
    /// before the incarnation, when no fork or exit of the pid came between (the pid is then
    /// another process's). A later mapping over an earlier one's addresses replaces it. None
    /// when the records do not reach back to that exec.
    pub fn mappings(&self, pid: u32, incarnation: u64) -> Option<Vec<MapEntry>> {
        let events = self.by_pid.get(&pid)?;
        let start = events
            .iter()
            .rposition(|(t, k)| *t <= incarnation && !matches!(k, Kind::Map(_)))?;
        if events[start].1 != Kind::Exec {
            return None;
        }
        let mut out: Vec<MapEntry> = Vec::new();
        for (_, kind) in &events[start + 1..] {
            match kind {
                Kind::Map(entry) => {
                    out.retain(|e| e.end <= entry.start || entry.end <= e.start);
                    out.push(entry.clone());
                }
                Kind::Exit => break,
                Kind::Exec | Kind::Fork => break,
            }
        }
        out.sort_by_key(|e| e.start);
        Some(out)
    }
}

// perf_event_open(2): the attribute layout (PERF_ATTR_SIZE_VER5) and record types.
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_COUNT_SW_DUMMY: u64 = 9;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const ATTR_SIZE: usize = 112;
/// `perf_event_attr`'s flag bits.
const FLAG_MMAP: u64 = 1 << 8;
const FLAG_COMM: u64 = 1 << 9;
const FLAG_TASK: u64 = 1 << 13;
const FLAG_SAMPLE_ID_ALL: u64 = 1 << 18;
const FLAG_MMAP2: u64 = 1 << 23;
const FLAG_COMM_EXEC: u64 = 1 << 24;
const FLAG_USE_CLOCKID: u64 = 1 << 25;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_EXIT: u32 = 4;
const PERF_RECORD_FORK: u32 = 7;
const PERF_RECORD_MMAP2: u32 = 10;
const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
const PERF_RECORD_MISC_MMAP_BUILD_ID: u16 = 1 << 14;
/// Data pages of each CPU's ring (a power of two): 128 KiB, about 1,000 mmap records, which the
/// intake drains at every announcement and at least every 100 ms (a thousand execs a second
/// write about 6,000 records). 4 MiB on a 32-CPU node; what does not fit is counted.
const RING_PAGES: usize = 32;
/// Where `perf_event_mmap_page` keeps `data_head` and `data_tail`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;

/// One CPU's ring.
struct Ring {
    _fd: OwnedFd,
    base: *mut u8,
    len: usize,
    page: usize,
}

// SAFETY: the mapping is owned by the ring alone and only read through `&mut self`.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base and len are the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The rings of every CPU.
pub struct MmapRings {
    rings: Vec<Ring>,
    /// Records the kernel could not write (a ring full): counted, as `PERF_RECORD_LOST` says.
    pub lost: u64,
    scratch: Vec<u8>,
}

impl MmapRings {
    /// Opens a ring on each online CPU. Needs CAP_PERFMON (or CAP_SYS_ADMIN), as system-wide
    /// sampling does.
    pub fn open() -> io::Result<Self> {
        let cpus = aya::util::online_cpus().map_err(|(what, e)| {
            io::Error::new(e.kind(), format!("reading the online CPUs ({what}): {e}"))
        })?;
        // SAFETY: sysconf takes a constant and returns a number.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("no page size"))?;
        let mut rings = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            rings.push(Ring::open(cpu, page)?);
        }
        Ok(MmapRings {
            rings,
            lost: 0,
            scratch: Vec::new(),
        })
    }

    /// Moves every record written so far into `log`.
    pub fn drain(&mut self, log: &mut MmapLog) {
        for ring in &mut self.rings {
            ring.drain(&mut self.scratch, &mut self.lost, log);
        }
    }
}

impl Ring {
    fn open(cpu: u32, page: usize) -> io::Result<Self> {
        let mut attr = [0u8; ATTR_SIZE];
        let mut put = |at: usize, bytes: &[u8]| attr[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &PERF_TYPE_SOFTWARE.to_ne_bytes());
        put(4, &(ATTR_SIZE as u32).to_ne_bytes());
        put(8, &PERF_COUNT_SW_DUMMY.to_ne_bytes());
        put(24, &PERF_SAMPLE_TIME.to_ne_bytes());
        let flags = FLAG_MMAP
            | FLAG_COMM
            | FLAG_TASK
            | FLAG_SAMPLE_ID_ALL
            | FLAG_MMAP2
            | FLAG_COMM_EXEC
            | FLAG_USE_CLOCKID;
        put(40, &flags.to_ne_bytes());
        put(92, &libc::CLOCK_MONOTONIC.to_ne_bytes());
        // SAFETY: perf_event_open reads `size` bytes of the attribute, which lives for the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                -1 as libc::pid_t,
                cpu as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let len = page * (1 + RING_PAGES);
        // SAFETY: a shared mapping of the event's ring, of the size the kernel expects (one
        // metadata page and a power of two of data pages); unmapped on drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Ring {
            _fd: fd,
            base: base.cast(),
            len,
            page,
        })
    }

    fn drain(&mut self, scratch: &mut Vec<u8>, lost: &mut u64, log: &mut MmapLog) {
        // SAFETY: data_head and data_tail are aligned u64s in the metadata page; the kernel
        // writes data_head, we write data_tail (the protocol of perf_event_open(2)).
        let (head_ptr, tail_ptr) = unsafe {
            (
                &*self.base.add(DATA_HEAD).cast::<AtomicU64>(),
                &*self.base.add(DATA_TAIL).cast::<AtomicU64>(),
            )
        };
        let head = head_ptr.load(Ordering::Acquire);
        let mut tail = tail_ptr.load(Ordering::Relaxed);
        let size = (self.len - self.page) as u64;
        // SAFETY: the data area follows the metadata page, for `size` bytes.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(self.page), size as usize) };
        while head.wrapping_sub(tail) >= 8 {
            let at = |offset: u64| ((tail + offset) % size) as usize;
            let byte = |offset: u64| data[at(offset)];
            let header: Vec<u8> = (0..8).map(byte).collect();
            let len = u64::from(u16::from_ne_bytes([header[6], header[7]]));
            if len < 8 || head.wrapping_sub(tail) < len {
                break;
            }
            scratch.clear();
            scratch.extend((0..len).map(byte));
            if let Some(event) = parse_record(scratch, lost) {
                log.push(event);
            }
            tail = tail.wrapping_add(len);
        }
        tail_ptr.store(tail, Ordering::Release);
    }
}

/// One record (its header included) as an [`Event`]; None for records the log has no use for.
/// The records carry `sample_id_all` with `PERF_SAMPLE_TIME`: their time is their last 8 bytes.
fn parse_record(record: &[u8], lost: &mut u64) -> Option<Event> {
    let u16_at = |at: usize| Some(u16::from_ne_bytes(record.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(record.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_ne_bytes(record.get(at..at + 8)?.try_into().ok()?));
    let kind = u32_at(0)?;
    let misc = u16_at(4)?;
    let time = u64_at(record.len().checked_sub(8)?)?;
    // First in every record this reads: pid, then tid (mmap2, comm) or ppid (fork, exit).
    let pid = u32_at(8)?;
    match kind {
        PERF_RECORD_LOST => {
            *lost += u64_at(16)?;
            None
        }
        PERF_RECORD_COMM if misc & PERF_RECORD_MISC_COMM_EXEC != 0 => Some(Event::exec(pid, time)),
        // A new process, or a leader's exit (pid, ppid, tid: a thread's have tid != pid).
        PERF_RECORD_FORK if pid == u32_at(16)? => Some(Event::fork(pid, time)),
        PERF_RECORD_EXIT if pid == u32_at(16)? => Some(Event::exit(pid, time)),
        PERF_RECORD_MMAP2 if misc & PERF_RECORD_MISC_MMAP_BUILD_ID == 0 => {
            let (addr, len, pgoff) = (u64_at(16)?, u64_at(24)?, u64_at(32)?);
            let (maj, min, ino) = (u32_at(40)?, u32_at(44)?, u64_at(48)?);
            let (prot, flags) = (u32_at(64)?, u32_at(68)?);
            let name = record.get(72..record.len() - 8)?;
            let name = &name[..name.iter().position(|&b| b == 0)?];
            let name = std::str::from_utf8(name).ok()?;
            let (path, deleted) = match name {
                // Anonymous code (a JIT) is named so.
                "//anon" => (MapPath::Anonymous, false),
                name => symbolizer::process::map_path(name),
            };
            let prot = prot as i32;
            Some(Event::map(
                pid,
                time,
                MapEntry {
                    start: addr,
                    end: addr.checked_add(len)?,
                    offset: pgoff,
                    readable: prot & libc::PROT_READ != 0,
                    writable: prot & libc::PROT_WRITE != 0,
                    executable: prot & libc::PROT_EXEC != 0,
                    private: flags as i32 & libc::MAP_PRIVATE != 0,
                    dev_major: maj,
                    dev_minor: min,
                    inode: ino,
                    path,
                    deleted,
                },
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: u64, end: u64, name: &str) -> MapEntry {
        MapEntry {
            start,
            end,
            offset: 0,
            readable: true,
            writable: false,
            executable: true,
            private: true,
            dev_major: 8,
            dev_minor: 1,
            inode: 7,
            path: MapPath::File(name.into()),
            deleted: false,
        }
    }

    #[test]
    fn an_incarnation_gets_its_own_exec_s_mappings_only() {
        let mut log = MmapLog::new();
        // pid 5: a fork (bash's child), its exec, the program and ld.so mapped during the exec,
        // the kernel side's incarnation at 30, libc mapped by ld.so at 40, exit at 50; then the
        // pid reused by a fork at 60 that execs at 70 another program.
        log.push(Event::fork(5, 10));
        log.push(Event::exec(5, 20));
        log.push(Event::map(5, 21, entry(0x1000, 0x2000, "/bin/prog")));
        log.push(Event::map(5, 40, entry(0x9000, 0xa000, "/lib/libc.so.6")));
        // Drained from another CPU's ring after later records:
        log.push(Event::map(5, 22, entry(0x5000, 0x6000, "/lib/ld.so")));
        log.push(Event::exit(5, 50));
        log.push(Event::fork(5, 60));
        log.push(Event::exec(5, 70));
        log.push(Event::map(5, 71, entry(0x1000, 0x3000, "/bin/other")));
        let names = |v: Vec<MapEntry>| -> Vec<String> {
            v.into_iter().map(|e| e.path.to_string()).collect()
        };
        assert_eq!(
            names(log.mappings(5, 30).unwrap()),
            ["/bin/prog", "/lib/ld.so", "/lib/libc.so.6"],
            "everything it mapped until it exited, in address order"
        );
        assert_eq!(
            log.mappings(5, 65),
            None,
            "the fork that reused the pid has no exec of its own yet"
        );
        assert_eq!(
            log.mappings(5, 55),
            None,
            "after the exit the pid is nobody's"
        );
        assert_eq!(names(log.mappings(5, 80).unwrap()), ["/bin/other"]);
        assert_eq!(
            log.mappings(5, 15),
            None,
            "before its exec: its parent's image"
        );
        assert_eq!(log.mappings(6, 30), None, "no records at all");
    }

    #[test]
    fn a_later_mapping_replaces_what_it_covers() {
        let mut log = MmapLog::new();
        log.push(Event::exec(5, 1));
        log.push(Event::map(5, 2, entry(0x1000, 0x3000, "/a")));
        log.push(Event::map(5, 3, entry(0x2000, 0x4000, "/b")));
        log.push(Event::map(5, 4, entry(0x8000, 0x9000, "/c")));
        let got = log.mappings(5, 10).unwrap();
        let names: Vec<String> = got.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(names, ["/b", "/c"]);
    }

    #[test]
    fn the_log_stays_bounded() {
        let mut log = MmapLog::new();
        for pid in 0..(MAX_PIDS as u32 + 10) {
            log.push(Event::exec(pid, u64::from(pid)));
        }
        assert!(log.by_pid.len() <= MAX_PIDS);
        assert!(log.dropped >= MAX_PIDS as u64 / 2);
        assert!(
            log.mappings(MAX_PIDS as u32 + 9, u64::MAX).is_some(),
            "the newest stay"
        );
        for t in 0..(MAX_EVENTS_PER_PID as u64 + 5) {
            log.push(Event::map(
                1,
                1_000_000 + t,
                entry(t * 0x1000, t * 0x1000 + 1, "/x"),
            ));
        }
        assert_eq!(log.by_pid[&1].len(), MAX_EVENTS_PER_PID);
    }

    #[test]
    fn records_parse_and_damage_does_not_panic() {
        let mut rec = Vec::new();
        rec.extend_from_slice(&PERF_RECORD_MMAP2.to_ne_bytes());
        rec.extend_from_slice(&0u16.to_ne_bytes());
        rec.extend_from_slice(&0u16.to_ne_bytes()); // size, unused by the parser
        for v in [7u32, 7] {
            rec.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [0x7f00_0000_0000u64, 0x2000, 0x1000] {
            rec.extend_from_slice(&v.to_ne_bytes());
        }
        rec.extend_from_slice(&8u32.to_ne_bytes());
        rec.extend_from_slice(&1u32.to_ne_bytes());
        rec.extend_from_slice(&42u64.to_ne_bytes());
        rec.extend_from_slice(&0u64.to_ne_bytes());
        rec.extend_from_slice(&(libc::PROT_READ | libc::PROT_EXEC).to_ne_bytes());
        rec.extend_from_slice(&libc::MAP_PRIVATE.to_ne_bytes());
        rec.extend_from_slice(b"/usr/lib/libc.so.6\0\0\0\0\0\0");
        rec.extend_from_slice(&123u64.to_ne_bytes());
        let mut lost = 0;
        let event = parse_record(&rec, &mut lost).unwrap();
        assert_eq!(event.pid, 7);
        assert_eq!(event.time, 123);
        let Kind::Map(e) = event.kind else {
            panic!("a mapping")
        };
        assert_eq!(
            (e.start, e.end, e.offset),
            (0x7f00_0000_0000, 0x7f00_0000_2000, 0x1000)
        );
        assert_eq!((e.dev_major, e.dev_minor, e.inode), (8, 1, 42));
        assert!(e.executable && e.readable && !e.writable && e.private);
        assert_eq!(e.path, MapPath::File("/usr/lib/libc.so.6".into()));
        for cut in 0..rec.len() {
            let _ = parse_record(&rec[..cut], &mut lost);
        }
    }

    /// The real rings: a program this test starts is seen exec'ing and mapping its code, and
    /// the log gives its mappings after it has exited.
    #[test]
    fn the_kernel_records_a_short_process() {
        let rings = match MmapRings::open() {
            Ok(rings) => rings,
            Err(e) => {
                assert!(
                    std::env::var("CI").is_err(),
                    "CI runs as root, where perf events open: {e}"
                );
                eprintln!("skipping: cannot open perf events ({e})");
                return;
            }
        };
        let mut rings = rings;
        let mut log = MmapLog::new();
        let before = crate::process::monotonic_ns();
        let child = std::process::Command::new("/bin/true").status().unwrap();
        assert!(child.success());
        rings.drain(&mut log);
        // Its pid is gone; find it as the pid exec'd after `before` that mapped /bin/true.
        let found = log.by_pid.iter().find_map(|(&pid, events)| {
            let exec = events
                .iter()
                .find(|(t, k)| *t >= before && *k == Kind::Exec)?;
            let maps = log.mappings(pid, exec.0 + 1)?;
            maps.iter()
                .any(|e| e.path.to_string().ends_with("/true"))
                .then_some(maps)
        });
        let maps = found.expect("the exec of /bin/true and its mappings");
        assert!(
            maps.iter().any(|e| e.path.to_string().contains("ld-linux")),
            "its interpreter, mapped during the exec: {maps:?}"
        );
        assert!(
            maps.iter().any(|e| e.path.to_string().contains("libc")),
            "libc, mapped by the interpreter after the exec: {maps:?}"
        );
        assert_eq!(rings.lost, 0);
    }
}
