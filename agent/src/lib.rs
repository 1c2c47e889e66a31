//! Bellows: an eBPF continuous profiler.
//!
//! The pipeline, one module per step:
//! [`ebpf`] (load, attach, drain) → [`process`] (pid → mappings, pinned at first sight) →
//! [`resolve`] (addresses → frames, through `symbolizer`) → [`profile`] (pprof) → [`output`]
//! (files, flame graph, top table). [`record`] drives it for `bellows record`; [`cli`] holds the
//! flags and [`cgroup`] the cgroup v2 helpers. [`symbolize`] serves `bellows symbolize`; [`target`] maps cgroup paths to
//! containers and Pods. [`run`] drives the pipeline continuously for `bellows run`, over [`k8s`]
//! (this node's Pods) and [`push`] (Pyroscope); [`metrics`] renders the Prometheus text all of
//! them publish.

pub mod btf;
pub mod cgroup;
pub mod cli;
pub mod ebpf;
pub mod k8s;
pub mod metrics;
pub mod output;
pub mod process;
pub mod profile;
pub mod push;
pub mod record;
pub mod resolve;
pub mod run;
pub mod symbolize;
pub mod target;
pub mod unwind;
