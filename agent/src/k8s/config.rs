//! The `[kubernetes]` table of bellows.toml.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::selection::{LabelSelector, Selection};

/// Whether to watch the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enabled {
    /// When running in a cluster (service account environment) or given a kubeconfig.
    #[default]
    Auto,
    On,
    Off,
}

impl<'de> Deserialize<'de> for Enabled {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Enabled::On),
            Raw::Bool(false) => Ok(Enabled::Off),
            Raw::Text(s) if s == "auto" => Ok(Enabled::Auto),
            Raw::Text(s) => Err(serde::de::Error::custom(format!(
                "enabled = {s:?}: use true, false or \"auto\""
            ))),
        }
    }
}

/// A `[kubernetes]` value that is wrong; each message starts with the key. (A bad
/// `label-selector` is refused as the file is read.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubernetesConfigError {
    #[error("kubernetes.namespaces: {namespace:?} is not a namespace name")]
    Namespace { namespace: String },
    #[error("kubernetes.enabled: false, but namespaces or label-selector select Pods")]
    DisabledButSelecting,
}

/// Which Pods to profile and how to label them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesConfig {
    #[serde(default)]
    pub enabled: Enabled,
    /// Else `KUBECONFIG`, else the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Profile only Pods in these namespaces (empty: every namespace).
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// Kubernetes label selector syntax: `app in (web,api),tier!=db`; parsed as the file is
    /// read, so a bad one is reported with its line.
    #[serde(default, deserialize_with = "label_selector")]
    pub label_selector: Option<LabelSelector>,
    /// Pod labels copied into series labels; `["*"]` for all.
    #[serde(default)]
    pub pod_labels: Vec<String>,
}

impl KubernetesConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), KubernetesConfigError> {
        for ns in self.namespaces.iter().chain(&self.exclude_namespaces) {
            let ok = !ns.is_empty()
                && ns.len() <= 63
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(KubernetesConfigError::Namespace {
                    namespace: ns.clone(),
                });
            }
        }
        if self.enabled == Enabled::Off
            && (!self.namespaces.is_empty() || self.label_selector.is_some())
        {
            return Err(KubernetesConfigError::DisabledButSelecting);
        }
        Ok(())
    }

    /// The configured choice of Pods.
    pub fn selection(&self) -> Selection {
        Selection::new(
            self.namespaces.clone(),
            self.exclude_namespaces.clone(),
            self.label_selector.clone().unwrap_or_default(),
        )
    }

    /// None when the API is not to be used; Some(required) otherwise (`required` false for
    /// `auto`: failing to reach it is then not an error).
    pub fn wanted(&self) -> Option<bool> {
        match self.enabled {
            Enabled::Off => None,
            Enabled::On => Some(true),
            Enabled::Auto => {
                let reachable = self.kubeconfig.is_some()
                    || std::env::var_os("KUBECONFIG").is_some()
                    || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
                reachable.then_some(false)
            }
        }
    }
}

fn label_selector<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LabelSelector>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    LabelSelector::parse(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("kubernetes.label-selector: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let cfg: KubernetesConfig = toml::from_str(
            r#"
            enabled = "auto"
            namespaces = ["shop"]
            exclude-namespaces = ["kube-system"]
            label-selector = "app in (web,api),tier!=db"
            pod-labels = ["app"]
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.enabled, Enabled::Auto);
        let on: KubernetesConfig = toml::from_str("enabled = true").unwrap();
        assert_eq!(on.enabled, Enabled::On);
        assert_eq!(on.wanted(), Some(true));
        assert!(toml::from_str::<KubernetesConfig>("enabled = \"maybe\"").is_err());
        let bad =
            toml::from_str::<KubernetesConfig>("label-selector = \"app in web\"").unwrap_err();
        assert!(
            bad.message().starts_with("kubernetes.label-selector: "),
            "{bad}"
        );
        assert!(!cfg.selection().is_everything());
        let bad: KubernetesConfig = toml::from_str("namespaces = [\"Shop\"]").unwrap();
        assert_eq!(
            bad.validate(),
            Err(KubernetesConfigError::Namespace {
                namespace: "Shop".into()
            })
        );
    }
}
