//! This node's Pods, indexed by container id and by Pod UID.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use k8s_openapi::api::core::v1::Pod;

/// Containers per Pod we index at most (init, ephemeral and regular together): a bound against
/// absurd objects, far above what a kubelet runs.
const MAX_CONTAINERS: usize = 256;

/// What labelling and selection need of a Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    /// Normalized: lowercase, dashes.
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// (kind, name) of the controlling owner, e.g. ("ReplicaSet", "web-7d9f").
    pub owner: Option<(String, String)>,
    pub phase: Option<String>,
    /// (container name, container id without the runtime prefix).
    pub containers: Vec<(String, String)>,
}

impl PodMeta {
    pub fn from_pod(pod: &Pod) -> Option<PodMeta> {
        let meta = &pod.metadata;
        let uid = meta.uid.as_deref()?.to_ascii_lowercase();
        let status = pod.status.as_ref();
        let statuses = status
            .into_iter()
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
                    .chain(s.ephemeral_container_statuses.iter().flatten())
            })
            .take(MAX_CONTAINERS);
        let containers = statuses
            .filter_map(|c| Some((c.name.clone(), strip_runtime(c.container_id.as_deref()?)?)))
            .collect();
        Some(PodMeta {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid,
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            owner: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| (o.kind.clone(), o.name.clone())),
            phase: status.and_then(|s| s.phase.clone()),
            containers,
        })
    }
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>` → the 64-hex id.
pub fn strip_runtime(id: &str) -> Option<String> {
    let bare = id.split_once("://").map_or(id, |(_, rest)| rest);
    (bare.len() == 64 && bare.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| bare.to_ascii_lowercase())
}

#[derive(Debug, Default)]
struct Inner {
    by_uid: HashMap<String, Arc<PodMeta>>,
    /// container id → (pod uid, container name)
    by_container: HashMap<String, (String, String)>,
}

impl Inner {
    fn insert(&mut self, pod: PodMeta) {
        self.remove(&pod.uid);
        for (name, id) in &pod.containers {
            self.by_container
                .insert(id.clone(), (pod.uid.clone(), name.clone()));
        }
        self.by_uid.insert(pod.uid.clone(), Arc::new(pod));
    }

    fn remove(&mut self, uid: &str) {
        if let Some(old) = self.by_uid.remove(uid) {
            for (_, id) in &old.containers {
                if self.by_container.get(id).is_some_and(|(u, _)| u == uid) {
                    self.by_container.remove(id);
                }
            }
        }
    }
}

/// A container found by id.
#[derive(Debug, Clone)]
pub struct Found {
    pub pod: Arc<PodMeta>,
    pub container: String,
}

/// Shared, cheaply cloned index of this node's Pods.
#[derive(Debug, Clone, Default)]
pub struct PodIndex(Arc<RwLock<Inner>>);

impl PodIndex {
    /// Adds or replaces a Pod. Objects without a UID are ignored.
    pub fn apply(&self, pod: &Pod) {
        if let Some(meta) = PodMeta::from_pod(pod) {
            self.write().insert(meta);
        }
    }

    pub fn delete(&self, pod: &Pod) {
        if let Some(uid) = pod.metadata.uid.as_deref() {
            self.write().remove(&uid.to_ascii_lowercase());
        }
    }

    /// Replaces everything (after a full re-list: Pods not listed are gone).
    pub fn replace_all(&self, pods: Vec<PodMeta>) {
        let mut fresh = Inner::default();
        for p in pods {
            fresh.insert(p);
        }
        *self.write() = fresh;
    }

    pub fn by_container_id(&self, id: &str) -> Option<Found> {
        let inner = self.read();
        let (uid, name) = inner.by_container.get(id)?;
        Some(Found {
            pod: Arc::clone(inner.by_uid.get(uid)?),
            container: name.clone(),
        })
    }

    pub fn by_pod_uid(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.read().by_uid.get(uid).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pod_json(uid: &str, containers: &[(&str, Option<&str>)]) -> Pod {
        let statuses: Vec<serde_json::Value> = containers
            .iter()
            .map(|(name, id)| {
                let mut s = serde_json::json!({"name": name, "image": "i", "imageID": "",
                    "ready": true, "restartCount": 0});
                if let Some(id) = id {
                    s["containerID"] = serde_json::Value::String(id.to_string());
                }
                s
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": uid,
                "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": "web", "uid": "x", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "containerStatuses": statuses}
        }))
        .unwrap()
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "1234abcd-0000-1111-2222-333344445555";

    #[test]
    fn containers_resolve_by_id_and_pods_by_uid() {
        let index = PodIndex::default();
        index.apply(&pod_json(
            UID,
            &[
                ("app", Some(&format!("containerd://{ID}"))),
                ("sidecar", None),
            ],
        ));
        let found = index.by_container_id(ID).unwrap();
        assert_eq!(found.container, "app");
        assert_eq!(found.pod.name, "web-0");
        assert_eq!(found.pod.owner, Some(("StatefulSet".into(), "web".into())));
        assert_eq!(index.by_pod_uid(UID).unwrap().namespace, "shop");

        // A restart gives the container a new id: the old one no longer resolves.
        let new_id = ID.replace('0', "f");
        index.apply(&pod_json(
            UID,
            &[("app", Some(&format!("cri-o://{new_id}")))],
        ));
        assert!(index.by_container_id(ID).is_none());
        assert_eq!(index.by_container_id(&new_id).unwrap().container, "app");

        index.delete(&pod_json(UID, &[]));
        assert!(index.by_pod_uid(UID).is_none());
        assert!(index.by_container_id(&new_id).is_none());
        assert!(index.is_empty());
    }

    #[test]
    fn runtime_prefixes_are_stripped_and_junk_ignored() {
        assert_eq!(
            strip_runtime(&format!("docker://{ID}")).as_deref(),
            Some(ID)
        );
        assert_eq!(strip_runtime(ID).as_deref(), Some(ID));
        assert_eq!(strip_runtime("containerd://abc"), None);
        let index = PodIndex::default();
        let mut no_uid = pod_json(UID, &[]);
        no_uid.metadata.uid = None;
        index.apply(&no_uid);
        assert!(index.is_empty());
    }
}
