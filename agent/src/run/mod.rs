//! `bellows run`: continuous profiling on a node, one profile per target per collect interval,
//! pushed to Grafana Pyroscope.
//!
//! [`collector`] drains the kernel maps by generation and splits samples into series;
//! [`targets`] decides each sample's series (Pod container, other container, process) and the
//! kernel cgroup filter; [`cgroups`] maps cgroup ids to paths and containers; [`metrics`] serves
//! `/metrics` and `/healthz`.

pub mod cgroups;
pub mod collector;
pub mod config;
pub mod metrics;
pub mod targets;

use std::{sync::Arc, time::Duration};

use self::{
    cgroups::CgroupIndex,
    collector::{describe_drops, Collector, Sink},
    config::RunConfig,
    metrics::Metrics,
    targets::{PodResolver, Targeting},
};
use crate::{
    ebpf::{SamplerConfig, SamplerError},
    k8s,
    push::{ClientError, PushStats, Pusher},
    session::{Event, Session, SessionConfig, SessionError},
};

/// How long the final push may take after SIGTERM before what is left is counted as dropped.
/// Kubernetes gives 30 s by default between SIGTERM and SIGKILL.
const SHUTDOWN_PUSH_DEADLINE: Duration = Duration::from_secs(10);
/// How often the kernel cgroup filter is re-synced without a Pod change.
const FILTER_SYNC_PERIOD: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Pyroscope client: {0}")]
    Push(#[from] ClientError),
    #[error("Kubernetes: {0}")]
    Kubernetes(#[from] k8s::K8sError),
}

/// What `run` did, for the last log line.
#[derive(Debug)]
pub struct RunSummary {
    pub collections: u64,
    pub push: PushStats,
    pub kernel_drops: String,
}

/// The Kubernetes side as the collector sees it.
struct Pods {
    index: k8s::PodIndex,
    selection: k8s::Selection,
    config: k8s::KubernetesConfig,
    node: String,
    /// Keeps the watch running (dropping it stops the watch).
    _watch: k8s::WatchHandle,
}

impl PodResolver for Pods {
    fn resolve(&self, container: &crate::target::ContainerRef) -> Option<targets::PodTarget> {
        let (pod, name) = match self.index.by_container_id(&container.container_id) {
            Some(found) => (found.pod, Some(found.container)),
            None => (self.index.by_pod_uid(container.pod_uid.as_deref()?)?, None),
        };
        let labels = k8s::series_labels(&pod, name.as_deref(), &self.node, &self.config);
        Some(targets::PodTarget {
            labels,
            selected: self.selection.selects(&pod),
        })
    }

    fn selects_everything(&self) -> bool {
        self.selection.is_everything()
    }
}

/// Runs until SIGTERM or SIGINT, then flushes the last interval.
pub async fn run(cfg: RunConfig) -> Result<RunSummary, RunError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| RunError::Io { what, source }
    };
    let metrics = Metrics::new(cfg.collect_interval);
    let _server = match cfg.metrics_address {
        Some(addr) => {
            let (bound, task) = metrics::serve(addr, Arc::clone(&metrics))
                .await
                .map_err(io(&format!("serving metrics on {addr}")))?;
            tracing::info!("serving /metrics and /healthz on http://{bound}");
            Some(AbortOnDrop(task))
        }
        None => None,
    };

    let pusher = Pusher::start(&cfg.pyroscope)?;
    {
        let stats_of = pusher.stats_handle();
        metrics.add_source(move |out| crate::push::render_metrics(&stats_of(), out));
    }

    let pods = start_kubernetes(&cfg, &metrics).await?;
    let mut pod_changes = pods.as_ref().map(|(_, rx)| rx.clone());
    let pods = pods.map(|(p, _)| p);

    let session = Session::start(&SessionConfig {
        sampler: SamplerConfig {
            frequency_hz: cfg.frequency_hz,
            kernel_stacks: cfg.kernel_stacks,
            double_buffered: true,
            counts_entries: cfg.maps.counts_entries,
            stack_entries: cfg.maps.stack_entries,
            unwind: cfg.unwind_tables,
            unwind_rows: cfg.maps.unwind_rows,
            ..SamplerConfig::default()
        },
        max_dwarf_bytes: Some(cfg.symbolizer.max_dwarf_bytes),
        dwarf_budget: cfg.symbolizer.dwarf_budget,
    })?;
    if let Some(err) = &session.kernel_symbols_error {
        tracing::warn!("kernel symbols unavailable, kernel frames stay addresses: {err}");
    }
    let mut cgroups = CgroupIndex::for_host();
    cgroups.rescan();
    let mut collector = Collector::new(session, cgroups, Arc::clone(&metrics), cfg.frequency_hz);
    let targeting = Targeting {
        node: &cfg.node_name,
        outside: cfg.outside_pods,
        pods: pods.as_ref().map(|p| p as &dyn PodResolver),
    };
    // Filter first, then sample: unselected pods never cost a stack walk.
    let size = collector.sync_filter(&targeting)?;
    metrics.update(|s| s.filter_cgroups = size.map(|n| n as u64));
    collector.session.start_sampling(cfg.frequency_hz)?;
    collector.begin();
    tracing::info!(
        node = %cfg.node_name,
        frequency_hz = cfg.frequency_hz,
        interval_s = cfg.collect_interval.as_secs_f64(),
        kubernetes = pods.is_some(),
        "sampling every CPU"
    );

    let mut collect_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.collect_interval,
        cfg.collect_interval,
    );
    collect_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut filter_tick = tokio::time::interval(FILTER_SYNC_PERIOD);
    filter_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Captures reach the table here and before every collection; the intake thread
            // read them already.
            event = collector.session.event() => if let Event::Interrupted = event {
                break;
            },
            _ = collect_tick.tick() => {
                collect_once(&mut collector, &targeting, &pusher);
            }
            _ = filter_tick.tick() => {
                sync_filter(&mut collector, &targeting);
            }
            changed = async { pod_changes.as_mut().expect("guarded").changed().await }, if pod_changes.is_some() => {
                if changed.is_err() {
                    pod_changes = None;
                }
                sync_filter(&mut collector, &targeting);
            }
        }
    }
    tracing::info!("stopping: collecting and pushing the last interval");
    collect_once(&mut collector, &targeting, &pusher);
    collector.session.stop();
    let kernel_drops = collector
        .kernel_counts()
        .map(|c| describe_drops(&c))
        .unwrap_or_else(|e| e.to_string());
    let collections = metrics.snapshot().collections;
    let push = pusher.shutdown(SHUTDOWN_PUSH_DEADLINE).await;
    Ok(RunSummary {
        collections,
        push,
        kernel_drops,
    })
}

fn collect_once(collector: &mut Collector, targeting: &Targeting, sink: &dyn Sink) {
    match collector.collect(targeting, sink) {
        Ok(c) => tracing::debug!(
            samples = c.samples,
            series = c.series,
            unselected = c.unselected,
            evicted = c.evicted,
            "collected"
        ),
        Err(err) => {
            collector.count_error();
            tracing::error!("collection failed: {err}");
        }
    }
}

fn sync_filter(collector: &mut Collector, targeting: &Targeting) {
    match collector.sync_filter(targeting) {
        Ok(size) => collector
            .metrics
            .update_quiet(|s| s.filter_cgroups = size.map(|n| n as u64)),
        Err(err) => tracing::warn!("updating the kernel cgroup filter: {err}"),
    }
}

/// Starts the pod watch when configured (or, with `enabled = "auto"`, when a cluster is
/// reachable). Returns the resolver and a receiver that changes with every Pod change.
async fn start_kubernetes(
    cfg: &RunConfig,
    metrics: &Arc<Metrics>,
) -> Result<Option<(Pods, tokio::sync::watch::Receiver<u64>)>, RunError> {
    let k = &cfg.kubernetes;
    let Some(required) = k.wanted() else {
        return Ok(None);
    };
    let client = match k8s::client(k.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(err) if !required => {
            tracing::info!("no Kubernetes API ({err}); labelling containers by id only");
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    let index = k8s::PodIndex::default();
    let watch = k8s::spawn_watch(client, cfg.node_name.clone(), index.clone());
    let changes = watch.changes();

    {
        let stats = watch.stats_handle();
        metrics.add_source(move |out| k8s::render_metrics(&stats(), out));
    }
    Ok(Some((
        Pods {
            index,
            selection: k.selection(),
            config: k.clone(),
            node: cfg.node_name.clone(),
            _watch: watch,
        },
        changes,
    )))
}

/// Aborts a task when dropped (the metrics server outlives nothing).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
