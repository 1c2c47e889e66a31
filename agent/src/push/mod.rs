//! Shipping profiles to Grafana Pyroscope.
//!
//! [`Pusher::submit`] is called by the collector for every series of every interval. It never
//! blocks and never waits for the network: it fits the profile to the server's limits
//! ([`limits`]), gzips it and queues it. A background task sends the queue in order
//! ([`client`]), retrying with exponential backoff while the server is down or throttling. The
//! queue is bounded in bytes; when full, the oldest profiles are dropped. Every profile that is
//! not delivered is counted by reason ([`PushStats`]).

pub mod client;
pub mod config;
pub mod limits;
pub mod proto;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

pub use client::{ClientError, SendError};
pub use config::{Api, PushConfig, PushConfigError};
use tokio::sync::Notify;

use self::{
    client::{Client, Outcome},
    limits::Trimmed,
};
use crate::profile::{encode_gzip, Recording};

/// One profile ready to send.
#[derive(Debug, Clone)]
pub struct Item {
    pub labels: Vec<(String, String)>,
    /// gzipped pprof.
    pub profile: Vec<u8>,
    pub id: uuid::Uuid,
    pub from: SystemTime,
    pub until: SystemTime,
    queued: Instant,
}

impl Item {
    fn bytes(&self) -> usize {
        self.profile.len()
            + self
                .labels
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
            + 64
    }
}

/// Counters since start, and the queue now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushStats {
    pub pushed: u64,
    pub pushed_bytes: u64,
    pub retries: u64,
    /// Dropped because the server refused them (4xx other than 408/429).
    pub rejected: u64,
    /// Dropped because they waited longer than `max-age`.
    pub too_old: u64,
    /// Dropped, oldest first, because the queue hit `queue-max-bytes`.
    pub queue_full: u64,
    /// Still queued when shutdown's deadline passed.
    pub shutdown: u64,
    pub queue_len: u64,
    pub queue_bytes: u64,
    /// The most the queue ever held, in bytes.
    pub queue_peak_bytes: u64,
    pub trimmed: Trimmed,
    pub last_error: Option<String>,
}

impl PushStats {
    /// Profiles that will never be delivered.
    pub fn dropped(&self) -> u64 {
        self.rejected + self.too_old + self.queue_full + self.shutdown
    }
}

struct Shared {
    queue: Mutex<Queue>,
    stats: Mutex<PushStats>,
    wake: Notify,
    cap: usize,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
    closing: bool,
}

/// The send queue and its sender task.
pub struct Pusher {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Pusher {
    /// Starts the sender task (on the current tokio runtime).
    pub fn start(cfg: &PushConfig) -> Result<Pusher, ClientError> {
        let client = Client::new(cfg)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            stats: Mutex::new(PushStats::default()),
            wake: Notify::new(),
            cap: cfg.queue_max_bytes,
        });
        let task = tokio::spawn(send_loop(
            Arc::clone(&shared),
            client,
            Backoff::new(cfg.min_backoff, cfg.max_backoff),
            cfg.max_age,
        ));
        Ok(Pusher { shared, task })
    }

    /// Queues one series' profile of one window. Never blocks on the network.
    pub fn submit(&self, labels: Vec<(String, String)>, recording: &Recording) {
        let mut trimmed = Trimmed::default();
        let labels = limits::fit_labels(&labels, &mut trimmed);
        let profiles = limits::split_profiles(recording, &mut trimmed);
        let until = recording.start + recording.duration;
        let items: Vec<Item> = profiles
            .iter()
            .map(|p| Item {
                labels: labels.clone(),
                profile: encode_gzip(p),
                id: uuid::Uuid::new_v4(),
                from: recording.start,
                until,
                queued: Instant::now(),
            })
            .collect();
        let mut dropped = 0;
        let (len, bytes) = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            for item in items {
                q.bytes += item.bytes();
                q.items.push_back(item);
            }
            while q.bytes > self.shared.cap {
                let Some(old) = q.items.pop_front() else {
                    break;
                };
                q.bytes -= old.bytes();
                dropped += 1;
            }
            (q.items.len(), q.bytes)
        };
        {
            let mut s = self.shared.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.trimmed.add(&trimmed);
            s.queue_full += dropped;
            s.queue_len = len as u64;
            s.queue_bytes = bytes as u64;
            s.queue_peak_bytes = s.queue_peak_bytes.max(bytes as u64);
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "send queue full (pyroscope.queue-max-bytes): dropped the oldest profiles"
            );
        }
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> PushStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A function returning the current stats, for the metrics endpoint.
    pub fn stats_handle(&self) -> impl Fn() -> PushStats + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || {
            shared
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }
    }

    /// Sends what is queued until `deadline`, then counts the rest as dropped.
    pub async fn shutdown(self, deadline: Duration) -> PushStats {
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.closing = true;
        }
        self.shared.wake.notify_one();
        let mut task = self.task;
        if tokio::time::timeout(deadline, &mut task).await.is_err() {
            task.abort();
        }
        let left = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = q.items.len() as u64;
            q.items.clear();
            q.bytes = 0;
            n
        };
        let mut s = self.shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.shutdown += left;
        s.queue_len = 0;
        s.queue_bytes = 0;
        if left > 0 {
            tracing::warn!(left, "profiles still queued at shutdown were dropped");
        }
        s.clone()
    }
}

/// Exponential backoff with jitter between `min` and `max`.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            min,
            max,
            next: min,
            seed,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next wait: the current step with ±25% jitter; the step doubles up to `max`.
    fn step(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.75 + (self.seed % 1000) as f64 / 2000.0;
        let wait = self.next.mul_f64(jitter).min(self.max);
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

async fn send_loop(shared: Arc<Shared>, client: Client, mut backoff: Backoff, max_age: Duration) {
    loop {
        let (item, closing) = {
            let q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            (q.items.front().cloned(), q.closing)
        };
        let Some(item) = item else {
            if closing {
                return;
            }
            shared.wake.notified().await;
            continue;
        };
        if item.queued.elapsed() > max_age {
            finish(&shared, &item, |s| s.too_old += 1);
            continue;
        }
        match client.send(&item).await {
            Outcome::Delivered => {
                backoff.reset();
                finish(&shared, &item, |s| {
                    s.pushed += 1;
                    s.pushed_bytes += item.profile.len() as u64;
                });
            }
            Outcome::Rejected(err) => {
                tracing::warn!("Pyroscope rejected a profile, dropping it: {err}");
                finish(&shared, &item, |s| {
                    s.rejected += 1;
                    s.last_error = Some(err.to_string());
                });
            }
            Outcome::Retry(err) => {
                let wait = backoff.step();
                tracing::debug!("push failed, retrying in {wait:?}: {err}");
                {
                    let mut s = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
                    s.retries += 1;
                    s.last_error = Some(err.to_string());
                }
                // While closing, retrying continues until shutdown's deadline aborts us.
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Removes `item` (still at the front, unless the queue dropped it meanwhile) and counts it.
fn finish(shared: &Shared, item: &Item, count: impl FnOnce(&mut PushStats)) {
    let (len, bytes) = {
        let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.items.front().is_some_and(|f| f.id == item.id) {
            q.items.pop_front();
            q.bytes -= item.bytes();
        }
        (q.items.len(), q.bytes)
    };
    let mut s = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    count(&mut s);
    s.queue_len = len as u64;
    s.queue_bytes = bytes as u64;
}

/// Appends the push metric families.
pub fn render_metrics(s: &PushStats, out: &mut String) {
    use crate::metrics::family;
    family(
        out,
        "bellows_push_total",
        "counter",
        "Profiles pushed, by result (dropped ones by reason).",
        &[
            ("result=\"ok\"", s.pushed),
            ("result=\"rejected\"", s.rejected),
            ("result=\"too_old\"", s.too_old),
            ("result=\"queue_full\"", s.queue_full),
            ("result=\"shutdown\"", s.shutdown),
        ],
    );
    family(
        out,
        "bellows_push_retries_total",
        "counter",
        "Push attempts that failed and were retried (server down, 5xx, 408, 429).",
        &[("", s.retries)],
    );
    family(
        out,
        "bellows_push_bytes_total",
        "counter",
        "Compressed profile bytes delivered.",
        &[("", s.pushed_bytes)],
    );
    family(
        out,
        "bellows_push_queue_profiles",
        "gauge",
        "Profiles waiting to be sent.",
        &[("", s.queue_len)],
    );
    family(
        out,
        "bellows_push_queue_bytes",
        "gauge",
        "Bytes waiting to be sent.",
        &[("", s.queue_bytes)],
    );
    family(
        out,
        "bellows_push_trimmed_total",
        "counter",
        "Changes made to fit the server's limits.",
        &[
            ("what=\"label_dropped\"", s.trimmed.labels_dropped),
            ("what=\"label_name_sanitized\"", s.trimmed.names_sanitized),
            ("what=\"label_value_truncated\"", s.trimmed.values_truncated),
            ("what=\"profile_split\"", s.trimmed.splits),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..8).map(|_| b.step()).collect();
        assert!(waits[0] >= Duration::from_millis(75) && waits[0] <= Duration::from_millis(125));
        assert!(waits[3] >= Duration::from_millis(600), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(1)));
        b.reset();
        assert!(b.step() <= Duration::from_millis(125));
    }
}
