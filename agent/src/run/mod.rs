//! `bellows run`: continuous profiling on a node, one profile per target per collect interval,
//! pushed to Grafana Pyroscope.
//!
//! [`collector`] drains the kernel maps by generation and splits samples into series;
//! [`targets`] decides each sample's series (Pod container, other container, process) and the
//! kernel cgroup filter; [`cgroups`] maps cgroup ids to paths and containers; [`metrics`] serves
//! `/metrics` and `/healthz`.

pub mod cgroups;
pub mod collector;
pub mod metrics;
pub mod targets;
