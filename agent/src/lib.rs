//! Bellows: an eBPF continuous profiler.
//!
//! The pipeline, one module per step:
//! [`ebpf`] (load, attach, drain) → [`process`] (pid → mappings, pinned at first sight) →
//! [`resolve`] (addresses → frames, through `symbolizer`) → [`profile`] (pprof) → [`output`]
//! (files, flame graph, top table). [`session`] holds one profiling session: the sampler, the
//! intake of new processes (on its own thread), the unwind-table loader ([`unwind`]) and the
//! process table. [`record`] is its one-window policy for `bellows record`, [`run`] its
//! window-per-interval policy for `bellows run`, over [`k8s`] (this node's Pods) and [`push`]
//! (Pyroscope). [`cli`] holds the flags and [`cgroup`] the cgroup helpers; [`symbolize`] serves
//! `bellows symbolize`; [`target`] maps cgroup paths to containers and Pods; [`metrics`]
//! renders the Prometheus text all of them publish.

pub mod btf;
pub mod cgroup;
pub mod cli;
pub mod ebpf;
pub mod k8s;
pub mod metrics;
pub mod mmap_events;
pub mod output;
pub mod process;
pub mod profile;
pub mod push;
pub mod record;
pub mod resolve;
pub mod run;
pub mod session;
pub mod symbolize;
pub mod target;
pub mod unwind;
