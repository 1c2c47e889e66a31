//! This node's Pods from the Kubernetes API: a watch with a `spec.nodeName` field selector
//! ([`watch`]), an index by container id and Pod UID ([`pods`]), the series labels of a container
//! ([`labels`]) and the configured selection ([`selection`]).

pub mod config;
pub mod labels;
pub mod pods;
pub mod selection;
pub mod watch;

pub use config::{Enabled, KubernetesConfig, KubernetesConfigError};
pub use labels::series_labels;
pub use pods::{Found, PodIndex, PodMeta};
pub use selection::{LabelSelector, Selection, SelectorError};
pub use watch::{client, render_metrics, spawn_watch, K8sError, WatchHandle, WatchStats};
