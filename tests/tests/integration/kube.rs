//! The pod watch against the in-repo fake API server (no BPF needed).

use std::time::{Duration, Instant};

use agent::k8s::{self, PodIndex, WatchHandle};
use tests::fake_kube::{pod, FakeKube};

const ID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ID_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const UID_A: &str = "0000000a-0000-4000-8000-000000000001";
const UID_B: &str = "0000000b-0000-4000-8000-000000000002";
const UID_OTHER: &str = "0000000c-0000-4000-8000-000000000003";

/// A runtime with the pod watch of node `n1` running against `api`, and its index.
fn watch(
    api: &FakeKube,
    dir: &std::path::Path,
) -> (tokio::runtime::Runtime, PodIndex, WatchHandle) {
    let kubeconfig = api.write_kubeconfig(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let index = PodIndex::default();
    let handle = rt.block_on(async {
        let client = k8s::client(Some(&kubeconfig)).await.unwrap();
        k8s::spawn_watch(client, "n1".into(), index.clone())
    });
    (rt, index, handle)
}

fn until(what: &str, pred: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !pred() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn the_watch_indexes_this_nodes_pods_and_follows_changes() {
    let api = FakeKube::start();
    let dir = tempfile::tempdir().unwrap();
    // Before the agent starts: one pod here, one on another node.
    api.apply(pod(
        "shop",
        "web-0",
        UID_A,
        "n1",
        &[("app", "web")],
        &[],
        &[("app", Some(&format!("containerd://{ID_A}")))],
    ));
    api.apply(pod(
        "shop",
        "elsewhere",
        UID_OTHER,
        "n2",
        &[],
        &[],
        &[("x", None)],
    ));

    let (rt, index, handle) = watch(&api, dir.path());

    until("the initial list", || handle.stats().synced);
    let found = index.by_container_id(ID_A).expect("listed container");
    assert_eq!(
        (found.pod.name.as_str(), found.container.as_str()),
        ("web-0", "app")
    );
    assert!(index.by_pod_uid(UID_OTHER).is_none(), "another node's pod");

    // A new pod whose container status is not published yet resolves by UID only.
    api.apply(pod(
        "shop",
        "api-0",
        UID_B,
        "n1",
        &[],
        &[],
        &[("api", None)],
    ));
    until("the new pod", || index.by_pod_uid(UID_B).is_some());
    assert!(index.by_container_id(ID_B).is_none());
    // ... then its status arrives, with an annotation.
    api.apply(pod(
        "shop",
        "api-0",
        UID_B,
        "n1",
        &[("app", "api")],
        &[("pyroscope.io/service_name", "checkout")],
        &[("api", Some(&format!("cri-o://{ID_B}")))],
    ));
    until("the container status", || {
        index.by_container_id(ID_B).is_some()
    });
    let b = index.by_pod_uid(UID_B).unwrap();
    assert_eq!(b.labels.get("app").map(String::as_str), Some("api"));
    let labels = k8s::series_labels(&b, Some("api"), "n1", &Default::default());
    assert_eq!(
        labels[0],
        ("service_name".to_string(), "checkout".to_string())
    );

    api.delete(UID_A);
    until("the deletion", || index.by_pod_uid(UID_A).is_none());
    assert!(index.by_container_id(ID_A).is_none());
    assert_eq!(index.len(), 1);

    // Every request asked for this node's pods only.
    let requests = api.requests();
    assert!(requests.len() >= 2, "{requests:?}");
    for r in &requests {
        assert!(r.contains("fieldSelector=spec.nodeName%3Dn1"), "{r}");
    }
    let stats = handle.stats();
    assert_eq!(stats.errors, 0, "{stats:?}");
    assert!(stats.events >= 4);
    drop(handle);
    drop(rt);
}

/// After `410 Gone` (history compacted while the agent was not looking), the watch lists again
/// and the index becomes the list: a Pod deleted unseen goes, one added unseen comes.
#[test]
fn a_compacted_history_makes_the_watch_list_again() {
    let api = FakeKube::start();
    let dir = tempfile::tempdir().unwrap();
    let container = |id: &str| format!("containerd://{id}");
    api.apply(pod(
        "shop",
        "web-0",
        UID_A,
        "n1",
        &[],
        &[],
        &[("app", Some(&container(ID_A)))],
    ));
    let (rt, index, handle) = watch(&api, dir.path());
    until("the initial list", || index.by_pod_uid(UID_A).is_some());
    let lists = || {
        api.requests()
            .iter()
            .filter(|r| !r.contains("watch=true"))
            .count()
    };
    let lists_before = lists();

    // web-0 goes and api-0 comes while every event about it is compacted away.
    api.delete_unseen(UID_A);
    api.apply(pod(
        "shop",
        "api-0",
        UID_B,
        "n1",
        &[],
        &[],
        &[("api", Some(&container(ID_B)))],
    ));
    api.compact();

    until("the re-list", || {
        index.by_pod_uid(UID_A).is_none() && index.by_pod_uid(UID_B).is_some()
    });
    assert!(index.by_container_id(ID_A).is_none());
    assert!(index.by_container_id(ID_B).is_some());
    assert_eq!(index.len(), 1);
    assert!(lists() > lists_before, "{:?}", api.requests());
    let stats = handle.stats();
    assert!(stats.errors >= 1, "the 410 is counted: {stats:?}");
    assert!(stats.synced, "{stats:?}");
    drop(handle);
    drop(rt);
}

#[test]
fn a_missing_kubeconfig_is_one_clear_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(k8s::client(Some(std::path::Path::new(
            "/nonexistent/kubeconfig",
        ))))
        .err()
        .expect("an error");
    let text = err.to_string();
    assert!(
        text.starts_with("kubeconfig /nonexistent/kubeconfig:"),
        "{text}"
    );
    assert!(!text.contains('\n'));
}
