//! Symbolized samples of one collection window, and their pprof encoding.
//!
//! The input model ([`Recording`], [`Sample`], [`Location`], [`Mapping`]) is what the collector
//! builds after symbolization; [`build_pprof`] turns it into the [`pprof::Profile`] we push to
//! Grafana Pyroscope (see `docs/pyroscope.md`, "The pprof we emit for CPU"), and
//! [`encode_gzip`] serializes that profile the way pprof readers expect it (gzipped protobuf).

mod builder;
pub mod pprof;
#[cfg(test)]
pub(crate) mod testdata;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use builder::{
    build_pprof, build_pprof_with, encode_gzip, write_gzip, BuildOptions, KERNEL_MAPPING,
};

/// A file mapped into a process's address space (one executable segment of `/proc/PID/maps`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// First address of the mapping.
    pub start: u64,
    /// First address past the end of the mapping.
    pub limit: u64,
    /// Offset in the file of the byte mapped at `start`.
    pub offset: u64,
    /// Path of the mapped file as the process sees it.
    pub file: String,
    /// Build id of the file in lowercase hex, when the file has one.
    pub build_id: Option<String>,
}

/// One sampled instruction address and what the symbolizer made of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Absolute sampled address (for kernel frames: the kernel address).
    pub address: u64,
    /// The mapping holding `address`; `None` for kernel frames or when unknown.
    pub mapping: Option<Arc<Mapping>>,
    /// Source frames for the address, innermost (inlined) first, the physical function last;
    /// empty when the address could not be symbolized.
    pub frames: Vec<symbolizer::Frame>,
    /// True for a kernel address.
    pub kernel: bool,
}

/// One stack seen `count` times in one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The stack, leaf first (kernel frames, if any, before user frames).
    pub stack: Vec<Arc<Location>>,
    /// How many times the stack was sampled.
    pub count: u64,
    /// Process id (the thread group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Command name of the process (`/proc/PID/comm`).
    pub comm: String,
}

/// Every sample of one collection window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// Sampling frequency per CPU, in Hz.
    pub frequency_hz: u64,
    /// Wall-clock time at which the window started.
    pub start: SystemTime,
    /// Length of the window.
    pub duration: Duration,
    /// The samples, in any order; identical stacks may repeat.
    pub samples: Vec<Sample>,
}

impl Recording {
    /// The number of samples in the window (the sum of every [`Sample::count`], saturating).
    pub fn total_samples(&self) -> u64 {
        self.samples
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.count))
    }

    /// The recording's window and rate, without samples.
    pub fn clone_header(&self) -> Recording {
        Recording {
            frequency_hz: self.frequency_hz,
            start: self.start,
            duration: self.duration,
            samples: Vec::new(),
        }
    }

    /// The sampling period in nanoseconds, `1e9 / frequency_hz`, truncated.
    ///
    /// A frequency of 0 is treated as 1 Hz and the period is never below 1 ns, so that values
    /// derived from it stay meaningful whatever the input.
    pub fn period_nanos(&self) -> u64 {
        (1_000_000_000 / self.frequency_hz.max(1)).max(1)
    }
}
