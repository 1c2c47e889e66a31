//! The Pod watch: list, then watch, Pods of this node, restarting with backoff.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};

use super::pods::{PodIndex, PodMeta};

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The kubeconfig given (`--kubeconfig`, `[kubernetes] kubeconfig`) cannot be read or used.
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes configuration: tried KUBECONFIG and the in-cluster service account ({0})"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("creating the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig` if given, else `KUBECONFIG`, else the in-cluster service account.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, K8sError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| K8sError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => kube::Config::infer().await.map_err(K8sError::Infer)?,
    };
    Client::try_from(config).map_err(K8sError::Client)
}

/// Watch counters, for /metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WatchStats {
    pub events: u64,
    pub errors: u64,
    pub pods: u64,
    /// The first full list has been applied.
    pub synced: bool,
    pub last_error: Option<String>,
}

/// The running watch.
pub struct WatchHandle {
    changes: tokio::sync::watch::Receiver<u64>,
    stats: Arc<Mutex<WatchStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl WatchHandle {
    /// Changes (to a new generation number) after every applied event.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.clone()
    }

    pub fn stats(&self) -> WatchStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn stats_handle(&self) -> impl Fn() -> WatchStats + Send + Sync + 'static {
        let stats = Arc::clone(&self.stats);
        move || stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching this node's Pods into `index`.
pub fn spawn_watch(client: Client, node: String, index: PodIndex) -> WatchHandle {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let stats = Arc::new(Mutex::new(WatchStats::default()));
    let task = tokio::spawn(run_watch(client, node, index, tx, Arc::clone(&stats)));
    WatchHandle {
        changes: rx,
        stats,
        task,
    }
}

async fn run_watch(
    client: Client,
    node: String,
    index: PodIndex,
    tx: tokio::sync::watch::Sender<u64>,
    stats: Arc<Mutex<WatchStats>>,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    // Errors (API server down, RBAC) are retried with exponential backoff by the stream itself.
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listing: Vec<PodMeta> = Vec::new();
    let mut generation = 0u64;
    let mut last_warning: Option<Instant> = None;
    while let Some(event) = events.next().await {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Ok(watcher::Event::Apply(pod)) => index.apply(&pod),
            Ok(watcher::Event::Delete(pod)) => index.delete(&pod),
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(pod)) => listing.extend(PodMeta::from_pod(&pod)),
            Ok(watcher::Event::InitDone) => {
                index.replace_all(std::mem::take(&mut listing));
                s.synced = true;
            }
            Err(err) => {
                s.errors += 1;
                s.last_error = Some(err.to_string());
                // One line per minute at most while the API is unreachable.
                if last_warning.is_none_or(|t| t.elapsed().as_secs() >= 60) {
                    tracing::warn!("Kubernetes pod watch: {err} (retrying)");
                    last_warning = Some(Instant::now());
                }
                continue;
            }
        }
        s.events += 1;
        s.pods = index.len() as u64;
        drop(s);
        generation += 1;
        let _ = tx.send(generation);
    }
}

/// Appends the watch's metric families.
pub fn render_metrics(s: &WatchStats, out: &mut String) {
    use crate::metrics::family;
    family(
        out,
        "bellows_kubernetes_pods",
        "gauge",
        "Pods of this node known from the API.",
        &[("", s.pods)],
    );
    family(
        out,
        "bellows_kubernetes_watch_events_total",
        "counter",
        "Pod watch events applied.",
        &[("", s.events)],
    );
    family(
        out,
        "bellows_kubernetes_watch_errors_total",
        "counter",
        "Pod watch errors (each retried with backoff).",
        &[("", s.errors)],
    );
    family(
        out,
        "bellows_kubernetes_synced",
        "gauge",
        "1 once the first full list of Pods is applied.",
        &[("", u64::from(s.synced))],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreadable_kubeconfig_names_its_path() {
        let path = Path::new("/nonexistent/kubeconfig");
        let err = client(Some(path)).await.err().expect("an error");
        assert!(
            matches!(&err, K8sError::Kubeconfig { path: p, .. } if p == path),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("kubeconfig /nonexistent/kubeconfig: "),
            "{err}"
        );
    }
}
