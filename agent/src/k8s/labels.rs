//! Series labels of a Pod's container.

use super::{config::KubernetesConfig, pods::PodMeta};
use crate::push::limits::sanitize_name;

/// The annotation that overrides `service_name`.
pub const SERVICE_NAME_ANNOTATION: &str = "pyroscope.io/service_name";
/// Labels per series at most, counting `__name__` (the server's default limit).
const MAX_SERIES_LABELS: usize = 30;

/// Labels for samples of `container` (None: not yet known) in `pod`, in priority order, without
/// `__name__`: `service_name`, `namespace`, `pod`, `container`, `node`, then the configured pod
/// labels (names sanitized), at most 29 in all.
pub fn series_labels(
    pod: &PodMeta,
    container: Option<&str>,
    node: &str,
    cfg: &KubernetesConfig,
) -> Vec<(String, String)> {
    let service = pod
        .annotations
        .get(SERVICE_NAME_ANNOTATION)
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("ebpf/{}/{}", pod.namespace, container.unwrap_or(&pod.name)));
    let mut out = vec![
        ("service_name".to_string(), service),
        ("namespace".to_string(), pod.namespace.clone()),
        ("pod".to_string(), pod.name.clone()),
    ];
    if let Some(c) = container {
        out.push(("container".to_string(), c.to_string()));
    }
    out.push(("node".to_string(), node.to_string()));
    let all = cfg.pod_labels.iter().any(|k| k == "*");
    for (key, value) in &pod.labels {
        if out.len() >= MAX_SERIES_LABELS - 1 {
            break;
        }
        if !all && !cfg.pod_labels.contains(key) {
            continue;
        }
        let name = sanitize_name(key);
        if value.is_empty() || out.iter().any(|(n, _)| *n == name) || name == "__name__" {
            continue;
        }
        out.push((name, value.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodMeta {
        PodMeta {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "u".into(),
            labels: [
                ("app.kubernetes.io/name", "web"),
                ("team", "a"),
                ("pod", "clash"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..PodMeta::default()
        }
    }

    #[test]
    fn default_service_name_and_fixed_labels() {
        let l = series_labels(&pod(), Some("app"), "n1", &KubernetesConfig::default());
        assert_eq!(
            l,
            [
                ("service_name", "ebpf/shop/app"),
                ("namespace", "shop"),
                ("pod", "web-0"),
                ("container", "app"),
                ("node", "n1"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // Unknown container: named after the pod, no container label.
        let l = series_labels(&pod(), None, "n1", &KubernetesConfig::default());
        assert_eq!(l[0].1, "ebpf/shop/web-0");
        assert!(!l.iter().any(|(n, _)| n == "container"));
    }

    #[test]
    fn annotation_overrides_and_pod_labels_are_sanitized_without_clobbering() {
        let mut p = pod();
        p.annotations
            .insert(SERVICE_NAME_ANNOTATION.into(), "checkout".into());
        let cfg = KubernetesConfig {
            pod_labels: vec!["*".into()],
            ..KubernetesConfig::default()
        };
        let l = series_labels(&p, Some("app"), "n1", &cfg);
        assert_eq!(l[0], ("service_name".into(), "checkout".into()));
        assert!(l.contains(&("app_kubernetes_io_name".into(), "web".into())));
        assert!(l.contains(&("team".into(), "a".into())));
        assert_eq!(l.iter().filter(|(n, _)| n == "pod").count(), 1);
        assert!(l.contains(&("pod".into(), "web-0".into())));
        let only_team = KubernetesConfig {
            pod_labels: vec!["team".into()],
            ..KubernetesConfig::default()
        };
        let l = series_labels(&p, Some("app"), "n1", &only_team);
        assert_eq!(l.len(), 6);
    }

    #[test]
    fn many_pod_labels_are_capped_to_the_series_limit() {
        let mut p = pod();
        for i in 0..100 {
            p.labels.insert(format!("l{i:03}"), "v".into());
        }
        let cfg = KubernetesConfig {
            pod_labels: vec!["*".into()],
            ..KubernetesConfig::default()
        };
        let l = series_labels(&p, Some("app"), "n1", &cfg);
        assert_eq!(l.len(), 29, "29 plus __name__ is the server's 30");
        assert_eq!(sanitize_name("9a-b.c"), "_a_b_c");
    }
}
