//! A Pyroscope write endpoint that behaves like the real one on the wire, for tests.
//!
//! It serves `POST /push.v1.PusherService/Push` (Connect unary, `application/proto`) and
//! `POST /ingest?format=pprof`, decodes every profile, and enforces the server's default limits
//! with its error format (`{"code","message"}` and the matching HTTP status): mandatory
//! `__name__`, ≤ 30 labels, label name/value sizes and charset, ≤ 4 MiB uncompressed, ≤ 16,000
//! samples, `time_nanos` within [now − 1 h, now + 10 min], UUID sample ids, and an ingestion rate
//! of 4 MB/s with a 2 MB burst per tenant. It can answer 429 or 503 for a while, or be down
//! (connections refused), and records what it accepted.

use std::{
    collections::{BTreeMap, HashMap},
    io::Read,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use agent::{profile::pprof, push::proto::PushRequest};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use prost::Message;

const MAX_LABELS: usize = 30;
const MAX_NAME: usize = 1024;
const MAX_VALUE: usize = 2048;
const MAX_PROFILE_BYTES: usize = 4 << 20;
const MAX_SAMPLES: usize = 16_000;
const RATE_BYTES_PER_SEC: f64 = 4e6;
const BURST_BYTES: f64 = 2e6;
const MAX_BODY: usize = 32 << 20;

/// One accepted profile.
#[derive(Debug, Clone)]
pub struct Received {
    /// `push` or `ingest`.
    pub api: &'static str,
    pub labels: Vec<(String, String)>,
    pub profile: pprof::Profile,
    pub id: String,
    pub headers: BTreeMap<String, String>,
    pub uncompressed_bytes: usize,
}

impl Received {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sum of the profile's first sample value.
    pub fn total_value(&self) -> i64 {
        self.profile.sample.iter().map(|s| s.value[0]).sum()
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// (status, message) of every refused request.
    refused: Vec<(u16, String)>,
    requests: u64,
    /// Answer this status to the next N requests.
    fail_next: Option<(u16, usize)>,
    buckets: HashMap<String, (f64, Instant)>,
}

/// The fake server; stops on drop.
pub struct FakePyroscope {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    down: tokio::sync::watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakePyroscope {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (down_tx, down_rx) = tokio::sync::watch::channel(false);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let st = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(st, down_rx, stop_rx, addr_tx));
        });
        let addr = addr_rx.recv().expect("fake Pyroscope bound");
        FakePyroscope {
            addr,
            state,
            down: down_tx,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Down: the port refuses connections until [`Self::set_down`] false.
    pub fn set_down(&self, down: bool) {
        let _ = self.down.send(down);
        // Let the server close or reopen its socket.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Answer `status` (e.g. 429, 503) to the next `n` requests.
    pub fn fail_next(&self, status: u16, n: usize) {
        self.state.lock().unwrap().fail_next = Some((status, n));
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn refused(&self) -> Vec<(u16, String)> {
        self.state.lock().unwrap().refused.clone()
    }

    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }

    /// Waits until `pred` holds for the received profiles, up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Received]) -> bool) -> bool {
        let end = Instant::now() + timeout * crate::time_scale();
        while Instant::now() < end {
            if pred(&self.state.lock().unwrap().received) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pred(&self.state.lock().unwrap().received)
    }
}

impl Drop for FakePyroscope {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    state: Arc<Mutex<State>>,
    mut down: tokio::sync::watch::Receiver<bool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
) {
    let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    loop {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        if addr.port() == 0 {
            addr = listener.local_addr().unwrap();
            let _ = addr_tx.send(addr);
        }
        // Accept until told to go down or stop.
        loop {
            tokio::select! {
                _ = &mut stop => return,
                changed = down.changed() => {
                    if changed.is_err() { return; }
                    if *down.borrow() { break; }
                }
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let state = Arc::clone(&state);
                            async move { Ok::<_, std::convert::Infallible>(handle(req, &state).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
        drop(listener);
        // Down: wait to come back up.
        loop {
            tokio::select! {
                _ = &mut stop => return,
                changed = down.changed() => {
                    if changed.is_err() { return; }
                    if !*down.borrow() { break; }
                }
            }
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

/// A Connect error: JSON body and the HTTP status its code maps to.
fn connect_error(state: &Mutex<State>, code: &str, message: String) -> Reply {
    let status = match code {
        "invalid_argument" => 400,
        "unauthenticated" => 401,
        "permission_denied" => 403,
        "resource_exhausted" => 429,
        "unavailable" => 503,
        "deadline_exceeded" => 504,
        "unimplemented" => 404,
        _ => 500,
    };
    state
        .lock()
        .unwrap()
        .refused
        .push((status, message.clone()));
    reply(
        status,
        serde_json::json!({ "code": code, "message": message }).to_string(),
    )
}

async fn handle(req: Request<Incoming>, state: &Mutex<State>) -> Reply {
    let injected = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        match &mut s.fail_next {
            Some((status, n)) if *n > 0 => {
                *n -= 1;
                Some(*status)
            }
            _ => None,
        }
    };
    if let Some(status) = injected {
        let code = if status == 429 {
            "resource_exhausted"
        } else {
            "unavailable"
        };
        return connect_error(state, code, format!("injected failure {status}"));
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if req.method() != hyper::Method::POST {
        return connect_error(state, "unimplemented", "POST only".into());
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return connect_error(state, "invalid_argument", format!("body: {e}")),
    };
    let tenant = headers.get("x-scope-orgid").cloned().unwrap_or_default();
    let accepted = match path.as_str() {
        "/push.v1.PusherService/Push" => push(&headers, &body),
        "/ingest" => ingest(&query, &body),
        other => Err(("unimplemented", format!("no route {other}"))),
    };
    let accepted = match accepted {
        Ok(list) => list,
        Err((code, msg)) => return connect_error(state, code, msg),
    };
    // Rate limit per tenant on uncompressed size, as the distributor does.
    let cost: usize = accepted.iter().map(|r| r.uncompressed_bytes).sum();
    {
        let mut s = state.lock().unwrap();
        let (tokens, at) = s
            .buckets
            .entry(tenant.clone())
            .or_insert((BURST_BYTES, Instant::now()));
        *tokens = (*tokens + at.elapsed().as_secs_f64() * RATE_BYTES_PER_SEC).min(BURST_BYTES);
        *at = Instant::now();
        if cost as f64 > *tokens {
            drop(s);
            return connect_error(
                state,
                "resource_exhausted",
                format!("tenant {tenant:?}: ingestion rate limit ({cost} bytes)"),
            );
        }
        *tokens -= cost as f64;
    }
    let mut s = state.lock().unwrap();
    for mut r in accepted {
        r.headers = headers.clone();
        s.received.push(r);
    }
    reply(200, Bytes::new())
}

type Refusal = (&'static str, String);

fn push(headers: &BTreeMap<String, String>, body: &[u8]) -> Result<Vec<Received>, Refusal> {
    let ct = headers.get("content-type").map(String::as_str);
    if ct != Some("application/proto") {
        return Err((
            "invalid_argument",
            format!("content-type {ct:?}: want application/proto"),
        ));
    }
    if headers.get("connect-protocol-version").map(String::as_str) != Some("1") {
        return Err((
            "invalid_argument",
            "missing Connect-Protocol-Version: 1".into(),
        ));
    }
    let req = PushRequest::decode(body)
        .map_err(|e| ("invalid_argument", format!("decoding PushRequest: {e}")))?;
    let mut out = Vec::new();
    for series in req.series {
        let labels: Vec<(String, String)> = series
            .labels
            .into_iter()
            .map(|l| (l.name, l.value))
            .collect();
        check_labels(&labels)?;
        for sample in series.samples {
            if !is_uuid(&sample.id) {
                return Err((
                    "invalid_argument",
                    format!("sample ID {:?} is not a UUID", sample.id),
                ));
            }
            let (profile, size) = decode_profile(&sample.raw_profile)?;
            out.push(Received {
                api: "push",
                labels: labels.clone(),
                profile,
                id: sample.id,
                headers: BTreeMap::new(),
                uncompressed_bytes: size,
            });
        }
    }
    Ok(out)
}

fn ingest(query: &str, body: &[u8]) -> Result<Vec<Received>, Refusal> {
    let params: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    if params.get("format").map(String::as_str) != Some("pprof") {
        return Err(("invalid_argument", "format must be pprof".into()));
    }
    for key in ["from", "until"] {
        params
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(("invalid_argument", format!("{key} missing or not a number")))?;
    }
    let name = params
        .get("name")
        .ok_or(("invalid_argument", "name missing".to_string()))?;
    let (service, rest) = name.split_once('{').ok_or((
        "invalid_argument",
        format!("name {name:?} lacks {{labels}}"),
    ))?;
    let rest = rest.strip_suffix('}').ok_or((
        "invalid_argument",
        format!("name {name:?} lacks the closing brace"),
    ))?;
    let mut labels = vec![
        ("__name__".to_string(), "process_cpu".to_string()),
        ("service_name".to_string(), service.to_string()),
    ];
    for kv in rest.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or(("invalid_argument", format!("label {kv:?} lacks '='")))?;
        labels.push((k.to_string(), v.to_string()));
    }
    check_labels(&labels)?;
    let (profile, size) = decode_profile(body)?;
    Ok(vec![Received {
        api: "ingest",
        labels,
        profile,
        id: String::new(),
        headers: BTreeMap::new(),
        uncompressed_bytes: size,
    }])
}

fn check_labels(labels: &[(String, String)]) -> Result<(), Refusal> {
    let name = labels.iter().find(|(n, _)| n == "__name__").map(|(_, v)| v);
    match name {
        Some(v) if is_metric_name(v) => {}
        _ => return Err(("invalid_argument", "invalid metric name".into())),
    }
    if labels.len() > MAX_LABELS {
        return Err((
            "invalid_argument",
            format!(
                "profile series has {} labels, limit {MAX_LABELS}",
                labels.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (n, v) in labels {
        if n.len() > MAX_NAME {
            return Err((
                "invalid_argument",
                format!("label name too long: {} bytes", n.len()),
            ));
        }
        if v.len() > MAX_VALUE {
            return Err((
                "invalid_argument",
                format!("label value too long: {} bytes", v.len()),
            ));
        }
        if !is_label_name(n) {
            return Err(("invalid_argument", format!("invalid label name {n:?}")));
        }
        if !seen.insert(n) {
            return Err(("invalid_argument", format!("duplicate label name {n:?}")));
        }
    }
    Ok(())
}

fn is_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// gunzips (bounded) and decodes a pprof, then checks the profile limits.
fn decode_profile(raw: &[u8]) -> Result<(pprof::Profile, usize), Refusal> {
    let mut bytes = Vec::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(raw)
            .take(MAX_PROFILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ("invalid_argument", format!("gunzip: {e}")))?;
    } else {
        bytes = raw.to_vec();
    }
    if bytes.len() > MAX_PROFILE_BYTES {
        return Err((
            "invalid_argument",
            format!("uncompressed profile payload size exceeds limit of {MAX_PROFILE_BYTES}"),
        ));
    }
    let profile = pprof::Profile::decode(&bytes[..])
        .map_err(|e| ("invalid_argument", format!("decoding pprof: {e}")))?;
    if profile.sample.len() > MAX_SAMPLES {
        return Err((
            "invalid_argument",
            format!(
                "profile has {} samples, limit {MAX_SAMPLES}",
                profile.sample.len()
            ),
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let hour = 3_600_000_000_000i64;
    if profile.time_nanos < now - hour || profile.time_nanos > now + hour / 6 {
        return Err((
            "invalid_argument",
            format!(
                "profile time {} outside the accepted window",
                profile.time_nanos
            ),
        ));
    }
    Ok((profile, bytes.len()))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(extra: usize) -> Vec<(String, String)> {
        let mut l = vec![("__name__".to_string(), "process_cpu".to_string())];
        for i in 0..extra {
            l.push((format!("l{i}"), "v".into()));
        }
        l
    }

    #[test]
    fn label_rules_match_the_server() {
        assert!(check_labels(&labels(29)).is_ok());
        assert!(check_labels(&labels(30)).is_err(), "31 labels");
        assert!(
            check_labels(&[("service_name".into(), "x".into())]).is_err(),
            "no __name__"
        );
        let mut l = labels(1);
        l.push(("bad-name".into(), "v".into()));
        assert!(check_labels(&l).is_err());
        let mut l = labels(1);
        l.push(("v".into(), "x".repeat(2049)));
        assert!(check_labels(&l).is_err());
        assert!(is_uuid("6f1c1a52-9a3b-4c8e-8f00-0123456789ab"));
        assert!(!is_uuid("not-a-uuid"));
        assert_eq!(percent_decode("a%7Bb%3Dc%7D+d"), "a{b=c} d");
    }

    #[test]
    fn profiles_outside_the_time_window_or_too_big_are_refused() {
        let old = pprof::Profile {
            time_nanos: 1,
            ..Default::default()
        };
        assert!(decode_profile(&old.encode_to_vec()).is_err());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let ok = pprof::Profile {
            time_nanos: now,
            ..Default::default()
        };
        assert!(decode_profile(&ok.encode_to_vec()).is_ok());
        let huge = pprof::Profile {
            time_nanos: now,
            string_table: vec!["x".repeat(5 << 20)],
            ..Default::default()
        };
        let err = decode_profile(&huge.encode_to_vec()).unwrap_err();
        assert!(err.1.contains("exceeds"), "{err:?}");
    }
}
