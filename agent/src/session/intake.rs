//! The intake of new processes, on a thread of its own.
//!
//! The kernel side announces a process in a ring buffer when it execs (so that a short-lived
//! process is read at once, while it lives), at its first sample, and when it runs code
//! outside its known mappings. The intake thread waits on that ring, reads
//! each announced process's mappings and opens its files at once ([`ProcessReader`]), hands the
//! code mappings to the unwind-table loader, and sends the capture to the session. Nothing it
//! does waits for symbolization, which is what keeps short-lived processes: a process must be
//! read before it exits, and a window of a large binary can take seconds to symbolize.

use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use agent_common::{announce, Announcement};
use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::{
    process::{PreExec, ProcessInfo, ProcessKey, ProcessReader, ProcessStats},
    unwind::LoaderHandle,
};

/// How often the thread looks at its stop flag while the ring is quiet.
const POLL_TIMEOUT_MS: i32 = 100;

/// How the intake kept up, for the record summary and `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IntakeStats {
    pub process: ProcessStats,
    /// Announcements read from the ring.
    pub announcements: u64,
    /// Time spent reading processes, and the longest single wake-up.
    pub busy: Duration,
    pub longest_batch: Duration,
}

/// What the intake hands the session.
pub enum Captured {
    Process(ProcessInfo),
    /// A capture to drop: it holds a later image than its samples ran.
    PreExec(PreExec),
}

/// The reader and the loader handle, shared by the thread and synchronous captures.
struct Shared {
    reader: ProcessReader,
    loader: Option<LoaderHandle>,
    stats: IntakeStats,
}

impl Shared {
    /// One announcement: an exec is read afresh, without loading tables (most exec'd
    /// processes are never sampled); a first sample or a refresh request is read again if its
    /// code changed since, or its tables were not loaded yet.
    fn announced(&mut self, record: Announcement, tx: &UnboundedSender<Captured>) {
        self.stats.announcements += 1;
        let Announcement {
            tgid, incarnation, ..
        } = record;
        // The receiver is gone only when the session is: nothing left to do then.
        if record.reason == announce::EXEC {
            // The kernel side leaves the image zeroed where it could not read it.
            let exe = (record.exe.dev != 0 || record.exe.inode != 0).then_some(record.exe);
            let (info, stale) = self.reader.at_exec(tgid, incarnation, exe);
            if let Some(stale) = stale {
                let _ = tx.send(Captured::PreExec(stale));
            }
            if let Some(info) = info {
                let _ = tx.send(Captured::Process(info));
            }
            return;
        }
        if let Some(info) = self.reader.refresh(tgid, incarnation) {
            self.load(&info);
            let _ = tx.send(Captured::Process(info));
        }
    }

    /// Hands a capture's code mappings to the table loader.
    fn load(&self, info: &ProcessInfo) {
        if let Some(loader) = &self.loader {
            loader.load(info);
        }
    }
}

/// The intake thread and its outputs.
pub struct Intake {
    shared: Arc<Mutex<Shared>>,
    rx: UnboundedReceiver<Captured>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Intake {
    /// Starts the thread on the new-process ring. Captured processes' code mappings go to
    /// `loader`.
    pub fn start(ring: RingBuf<MapData>, loader: Option<LoaderHandle>) -> std::io::Result<Self> {
        let mut reader = ProcessReader::new();
        match crate::mmap_events::MmapRings::open() {
            Ok(rings) => reader.record_mappings(rings),
            Err(e) => tracing::info!(
                "no mmap records ({e}): processes gone before their mappings are read lose \
                 their libraries' frames"
            ),
        }
        let shared = Arc::new(Mutex::new(Shared {
            reader,
            loader,
            stats: IntakeStats::default(),
        }));
        let (tx, rx) = unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("bellows-intake".into())
            .spawn({
                let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
                move || intake_loop(ring, &shared, &tx, &stop)
            })?;
        Ok(Intake {
            shared,
            rx,
            stop,
            thread: Some(thread),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads a process now, on the caller's thread (and loads its tables).
    pub fn observe(&self, key: ProcessKey) -> Option<ProcessInfo> {
        let mut shared = self.lock();
        let info = shared.reader.observe(key.pid, key.incarnation)?;
        shared.load(&info);
        Some(info)
    }

    /// The next capture of the thread; None once the thread has ended.
    pub async fn captured(&mut self) -> Option<Captured> {
        self.rx.recv().await
    }

    /// A capture of the thread that is ready, if any.
    pub fn try_captured(&mut self) -> Option<Captured> {
        self.rx.try_recv().ok()
    }

    /// Whether the process was tried and could not be read.
    pub fn vanished(&self, key: ProcessKey) -> bool {
        self.lock().reader.vanished(key)
    }

    /// Forgets a released process, so that its next announcement reads it afresh.
    pub fn forget(&self, key: ProcessKey) {
        self.lock().reader.forget(key);
    }

    /// Forgets which processes could not be read (a reused pid is then read again), and
    /// closes the files kept for reuse.
    pub fn clear_vanished(&self) {
        let mut shared = self.lock();
        shared.reader.clear_vanished();
        shared.reader.release_files();
    }

    pub fn stats(&self) -> IntakeStats {
        let shared = self.lock();
        IntakeStats {
            process: shared.reader.stats(),
            ..shared.stats
        }
    }

    /// Stops the thread after it has read the ring one last time, and lets go of the table
    /// loader (whose thread ends when every handle to it is gone).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.lock().loader = None;
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Nice value of the intake thread. A process that lives a millisecond must be read within it,
/// while the workloads keep every core busy: at the default weight the woken thread often
/// waits out a time slice. The thread sleeps between announcements and does bounded work for
/// each, so its weight costs the workloads little.
const INTAKE_NICE: i32 = -10;

/// Gives this thread [`INTAKE_NICE`]; a failure (no CAP_SYS_NICE) leaves the default.
fn raise_priority() {
    // SAFETY: gettid and setpriority take plain integers; on Linux a thread id as the "process"
    // of PRIO_PROCESS sets that thread alone.
    let done = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, INTAKE_NICE)
    };
    if done != 0 {
        tracing::debug!(
            "the intake thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn intake_loop(
    mut ring: RingBuf<MapData>,
    shared: &Mutex<Shared>,
    tx: &UnboundedSender<Captured>,
    stop: &AtomicBool,
) {
    let fd = ring.as_raw_fd();
    raise_priority();
    loop {
        // Read the stop flag before the last drain, so that nothing announced before the stop
        // is left in the ring.
        let stopping = stop.load(Ordering::Relaxed);
        let mut announced = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() == std::mem::size_of::<Announcement>() {
                // SAFETY: the kernel side writes exactly one `Announcement` (plain integers,
                // any bit pattern valid) per record; read unaligned.
                announced.push(unsafe { item.as_ptr().cast::<Announcement>().read_unaligned() });
            }
        }
        let quiet = announced.is_empty();
        if !quiet {
            let started = Instant::now();
            let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
            shared.reader.drain_records();
            for record in announced {
                shared.announced(record, tx);
            }
            let took = started.elapsed();
            let stats = &mut shared.stats;
            stats.busy += took;
            stats.longest_batch = stats.longest_batch.max(took);
        }
        if stopping {
            return;
        }
        if quiet {
            // Quiet: keep the mmap rings from filling all the same.
            shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reader
                .drain_records();
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call; the ring keeps its fd open.
        let ready = unsafe { libc::poll(&mut pfd, 1, POLL_TIMEOUT_MS) };
        if ready < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            tracing::error!(
                "waiting on the new-process ring buffer: {}",
                std::io::Error::last_os_error()
            );
            std::thread::sleep(Duration::from_millis(POLL_TIMEOUT_MS as u64));
        }
    }
}
