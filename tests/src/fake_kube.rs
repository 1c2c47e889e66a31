//! A Kubernetes API server that serves Pods the way the real one does, for tests: `GET
//! /api/v1/pods` as a list (with `resourceVersion`) and as a watch (`watch=true`: one JSON
//! `WatchEvent` per line, held open until `timeoutSeconds`), filtered by the field selector
//! `spec.nodeName=<node>`, which it requires (400 otherwise: an agent must never list the whole
//! cluster). [`FakeKube::compact`] forgets history as etcd compaction does: open watches end
//! with a `410 Gone` ERROR event, and watches from an older version get one at once, so a client
//! that does not re-list never learns what happened in between.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// Longest a watch is held open, whatever the client asks (it then watches again).
const MAX_WATCH: Duration = Duration::from_secs(20);

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Value>,
    /// (resourceVersion, type, object) of every change.
    events: Vec<(u64, &'static str, Value)>,
    rv: u64,
    /// Request targets (path and query) in order.
    requests: Vec<String>,
    /// Watches from a version older than this get `410 Gone`.
    compacted: u64,
    /// Bumped by every compaction: watches opened before it end with `410 Gone`.
    epoch: u64,
}

/// The fake server; stops on drop.
pub struct FakeKube {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::Notify>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKube {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (st, ch) = (Arc::clone(&state), Arc::clone(&changed));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let (st, ch) = (Arc::clone(&st), Arc::clone(&ch));
                            tokio::spawn(async move {
                                let service = service_fn(move |req| {
                                    let (st, ch) = (Arc::clone(&st), Arc::clone(&ch));
                                    async move { Ok::<_, Infallible>(handle(req, st, ch)) }
                                });
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        FakeKube {
            addr,
            state,
            changed,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at this server into `dir`; returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Adds or replaces a Pod (by uid): ADDED or MODIFIED.
    pub fn apply(&self, pod: Value) {
        let uid = pod["metadata"]["uid"].as_str().expect("uid").to_string();
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let mut pod = pod;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let kind = if s.pods.contains_key(&uid) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.pods.insert(uid, pod.clone());
        s.events.push((rv, kind, pod));
        drop(s);
        self.changed.notify_waiters();
    }

    pub fn delete(&self, uid: &str) {
        let mut s = self.state.lock().unwrap();
        let Some(mut pod) = s.pods.remove(uid) else {
            return;
        };
        s.rv += 1;
        let rv = s.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.events.push((rv, "DELETED", pod));
        drop(s);
        self.changed.notify_waiters();
    }

    /// Removes a Pod without any watcher seeing it happen (its DELETED event is compacted away
    /// at once), as when an agent's watch was down across a compaction: only a re-list shows
    /// the Pod is gone.
    pub fn delete_unseen(&self, uid: &str) {
        let mut s = self.state.lock().unwrap();
        if s.pods.remove(uid).is_some() {
            s.rv += 1;
        }
        drop(s);
        self.compact();
    }

    /// Forgets every event up to now: open watches end with `410 Gone`, and so does any watch
    /// from an older version.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted = s.rv;
        s.events.clear();
        s.epoch += 1;
        drop(s);
        self.changed.notify_waiters();
    }

    /// Request targets seen so far (path?query).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Pod object as the API returns it. `containers`: (name, container id with its runtime
/// prefix, or None while the status is not yet published).
pub fn pod(
    namespace: &str,
    name: &str,
    uid: &str,
    node: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    containers: &[(&str, Option<&str>)],
) -> Value {
    let map = |pairs: &[(&str, &str)]| -> Value {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let statuses: Vec<Value> = containers
        .iter()
        .filter_map(|(n, id)| {
            id.map(|id| {
                json!({"name": n, "containerID": id, "image": "img", "imageID": "",
                       "ready": true, "restartCount": 0, "state": {"running": {}}})
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid,
                     "labels": map(labels), "annotations": map(annotations)},
        "spec": {"nodeName": node,
                 "containers": containers.iter().map(|(n, _)| json!({"name": n, "image": "img"})).collect::<Vec<_>>()},
        "status": {"phase": "Running", "containerStatuses": statuses}
    })
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn status_error(code: u16, reason: &str, message: String) -> Response<Body> {
    full(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn query_params(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.replace("%3D", "=")
                    .replace("%3d", "=")
                    .replace("%2F", "/"),
            )
        })
        .collect()
}

/// The ERROR event the API server streams for a watch whose version was compacted away.
fn gone(version: u64) -> Bytes {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {version}"),
        "reason": "Expired", "code": 410,
    });
    Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": status})))
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

fn handle(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::Notify>,
) -> Response<Body> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    state.lock().unwrap().requests.push(target.clone());
    if req.uri().path() != "/api/v1/pods" || req.method() != hyper::Method::GET {
        return status_error(
            404,
            "NotFound",
            format!("{target}: not served by this fake"),
        );
    }
    let params = query_params(req.uri().query().unwrap_or(""));
    let Some(node) = params
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("spec.nodeName="))
        .map(str::to_string)
    else {
        return status_error(
            400,
            "BadRequest",
            "this fake requires fieldSelector=spec.nodeName=<node>".into(),
        );
    };
    if params.get("watch").map(String::as_str) != Some("true") {
        let s = state.lock().unwrap();
        let items: Vec<Value> = s
            .pods
            .values()
            .filter(|p| node_of(p) == node)
            .cloned()
            .collect();
        return full(
            200,
            json!({"kind": "PodList", "apiVersion": "v1",
                   "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
        );
    }
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(MAX_WATCH, |s: u64| Duration::from_secs(s).min(MAX_WATCH));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let (epoch, expired) = {
        let s = state.lock().unwrap();
        (s.epoch, from < s.compacted)
    };
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sent = from;
        if expired {
            let _ = tx.send(gone(from)).await;
            return;
        }
        loop {
            let notified = changed.notified();
            let batch: Option<Vec<(u64, &'static str, Value)>> = {
                let s = state.lock().unwrap();
                (s.epoch == epoch).then(|| {
                    s.events
                        .iter()
                        .filter(|(rv, _, _)| *rv > sent)
                        .cloned()
                        .collect()
                })
            };
            let Some(batch) = batch else {
                let _ = tx.send(gone(sent)).await;
                return;
            };
            for (rv, kind, obj) in batch {
                sent = rv;
                if node_of(&obj) != node {
                    continue;
                }
                let line = format!("{}\n", json!({"type": kind, "object": obj}));
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}
