//! One profiling session, the part `record` and `run` share: signals, the loaded and attached
//! sampler, the intake of new processes, the unwind-table loader, the process table with its
//! symbolizer and kernel symbols, and the resolution of a drained window.
//!
//! `record` is one window and then its outputs; `run` flips a window every interval and hands
//! it to its sinks. Both are policies over a [`Session`].
//!
//! New processes are taken in on a thread of their own ([`intake`]): the kernel announces a
//! process at exec and at its first sample, and its mappings are read and its files opened
//! right then, while the caller may be busy symbolizing a window. Captures reach the process
//! table when the caller next asks ([`Session::accept`], or before every resolution).

pub mod intake;

use tokio::signal::unix::{Signal, SignalKind};

use crate::{
    ebpf::{Drained, Sampler, SamplerConfig, SamplerError},
    process::{ProcessKey, ProcessStats, ProcessTable},
    profile::Recording,
    resolve::{resolve, ResolveStats},
    unwind::{LoaderStats, TableLoader},
};

use self::intake::{Captured, Intake, IntakeStats};

/// What a session is started with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub sampler: SamplerConfig,
    /// DWARF larger than this (per file) is not used; None for the symbolizer's default.
    pub max_dwarf_bytes: Option<u64>,
    /// DWARF loaded at once across binaries.
    pub dwarf_budget: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What the session's event loop arm yields.
#[derive(Debug)]
pub enum Event {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// Processes captured by the intake, now in the table.
    Captured(Vec<ProcessKey>),
}

/// A loaded sampler and everything that turns its samples into symbolized stacks.
pub struct Session {
    pub sampler: Sampler,
    /// Processes as captured, and the symbolizer (with the kernel symbols, when read).
    pub table: ProcessTable,
    intake: Intake,
    loader: Option<TableLoader>,
    sigint: Signal,
    sigterm: Signal,
    /// Why kernel symbols could not be read, when asked for and unavailable.
    pub kernel_symbols_error: Option<String>,
}

impl Session {
    /// Installs the signal handlers (first of all, so that a signal while loading still ends
    /// the session cleanly), loads and attaches the sampler (not sampling yet: see
    /// [`Self::start_sampling`]), starts the table loader and the intake, and reads kernel
    /// symbols when kernel stacks are wanted. Call inside a tokio runtime.
    pub fn start(cfg: &SessionConfig) -> Result<Self, SessionError> {
        let io = |what: &'static str| move |source| SessionError::Io { what, source };
        let sigint = tokio::signal::unix::signal(SignalKind::interrupt())
            .map_err(io("installing the SIGINT handler"))?;
        let sigterm = tokio::signal::unix::signal(SignalKind::terminate())
            .map_err(io("installing the SIGTERM handler"))?;
        let mut sampler = Sampler::load(&cfg.sampler)?;
        let ring = sampler.take_new_pids()?;
        let loader = sampler
            .take_unwind_maps()?
            .map(|maps| TableLoader::start(maps, symbolizer::unwind::UnwindLimits::default()))
            .transpose()
            .map_err(io("starting the unwind-table loader"))?;
        let intake = Intake::start(ring, loader.as_ref().map(TableLoader::handle))
            .map_err(io("starting the process intake"))?;
        let mut table = ProcessTable::new();
        let symbolizer = table.symbolizer_mut();
        if let Some(bytes) = cfg.max_dwarf_bytes {
            symbolizer.set_max_dwarf_bytes(bytes);
        }
        symbolizer.set_dwarf_budget(cfg.dwarf_budget);
        // Read before sampling, so that reading them is not what is profiled.
        let kernel_symbols_error = if cfg.sampler.kernel_stacks {
            table.symbolizer_mut().kernel().err().map(|e| e.to_string())
        } else {
            None
        };
        Ok(Session {
            sampler,
            table,
            intake,
            loader,
            sigint,
            sigterm,
            kernel_symbols_error,
        })
    }

    /// Starts sampling on every CPU.
    pub fn start_sampling(&mut self, frequency_hz: u64) -> Result<(), SamplerError> {
        self.sampler.start(frequency_hz)
    }

    /// Captures a process now, not at its first sample (the processes and command `record` is
    /// given), and loads its tables. Returns false when it could not be read.
    pub fn observe(&mut self, pid: u32) -> Result<bool, SamplerError> {
        let incarnation = self.sampler.incarnation_or_new(pid)?;
        Ok(match self.intake.observe(ProcessKey { pid, incarnation }) {
            Some(info) => {
                self.table.insert(info);
                true
            }
            None => false,
        })
    }

    /// Loads a binary's table before any process of it runs (the command `record` starts).
    pub fn preload(&self, file: std::fs::File) {
        if let Some(loader) = &self.loader {
            loader.preload(file);
        }
    }

    /// Waits for a signal or for captured processes (which it puts in the table). Cancel-safe:
    /// meant for an arm of the caller's `select!`.
    pub async fn event(&mut self) -> Event {
        tokio::select! {
            _ = self.sigint.recv() => Event::Interrupted,
            _ = self.sigterm.recv() => Event::Interrupted,
            Some(first) = self.intake.captured() => {
                let mut pids: Vec<ProcessKey> = self.take(first).into_iter().collect();
                pids.extend(self.accept());
                Event::Captured(pids)
            }
        }
    }

    /// Puts every capture the intake made since the last call into the table; returns their
    /// pids.
    pub fn accept(&mut self) -> Vec<ProcessKey> {
        let mut pids = Vec::new();
        while let Some(captured) = self.intake.try_captured() {
            pids.extend(self.take(captured));
        }
        pids
    }

    /// Puts one of the intake's captures in the table; returns its process.
    fn take(&mut self, captured: Captured) -> Option<ProcessKey> {
        match captured {
            Captured::Process(info) => {
                let key = info.key();
                self.table.insert(info);
                Some(key)
            }
            Captured::PreExec(stale) => {
                self.table.pre_exec(stale);
                None
            }
        }
    }

    /// Symbolizes a drained window: exactly one sample per drained sample, in the same order
    /// (see [`resolve`]). Takes in what the intake captured first; a process sampled but never
    /// read (its announcement lost, or read too late) is read now if it is still alive as the
    /// same incarnation.
    pub fn resolve(
        &mut self,
        drained: &Drained,
        recording: Recording,
    ) -> (Recording, ResolveStats) {
        self.accept();
        let processes: std::collections::BTreeSet<ProcessKey> = drained
            .samples
            .iter()
            .map(crate::ebpf::RawSample::process)
            .collect();
        for &key in &processes {
            if self.table.get(key).is_some() || self.intake.vanished(key) {
                continue;
            }
            // Another process has the pid now (or none): reading it would name this one's
            // samples with another's mappings.
            if self.sampler.incarnation(key.pid).ok().flatten() != Some(key.incarnation) {
                continue;
            }
            if let Some(info) = self.intake.observe(key) {
                self.table.insert(info);
            }
        }
        resolve(drained, &mut self.table, recording)
    }

    /// Releases processes (exited, or idle): their mappings, their tables, and the binaries no
    /// remaining process maps; lets the kernel announce their pids again (reused, or active
    /// again). Forgets which processes could not be read, so that a later process reusing
    /// such a pid is read.
    pub fn forget(&mut self, processes: &[ProcessKey]) -> Result<(), SamplerError> {
        for &key in processes {
            self.table.forget(key);
            self.intake.forget(key);
        }
        // A pid whose later incarnation is still held keeps its kernel-side state: that is the
        // later process's.
        let released: Vec<ProcessKey> = processes
            .iter()
            .copied()
            .filter(|k| !self.table.holds_pid(k.pid))
            .collect();
        if let Some(loader) = &self.loader {
            for &key in &released {
                loader.exited(key);
            }
        }
        let mut pids: Vec<u32> = released.iter().map(|k| k.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        self.table.symbolizer_mut().evict_unused();
        self.intake.clear_vanished();
        self.sampler.forget_pids(&pids)
    }

    /// What capturing processes met: captured, vanished, unreadable files, idle refreshes.
    pub fn process_stats(&self) -> ProcessStats {
        let intake = self.intake.stats();
        ProcessStats {
            unreadable_files: intake.process.unreadable_files + self.table.unreadable_files(),
            ..intake.process
        }
    }

    /// How the intake thread kept up.
    pub fn intake_stats(&self) -> IntakeStats {
        self.intake.stats()
    }

    /// What the unwind-table loader did so far; None with frame pointers only.
    pub fn unwind_stats(&self) -> Option<LoaderStats> {
        self.loader.as_ref().map(TableLoader::stats)
    }

    /// Stops sampling and the intake (taking in its last captures), and waits for the table
    /// loader to finish what it was given.
    pub fn stop(&mut self) -> Option<LoaderStats> {
        self.sampler.stop();
        self.intake.stop();
        self.accept();
        self.loader.take().map(TableLoader::finish)
    }
}
