//! The Pyroscope client against the in-repo fake server (no BPF needed).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use agent::{
    profile::{Location, Recording, Sample},
    push::{Api, PushConfig, PushStats, Pusher},
};
use tests::fake_pyroscope::FakePyroscope;

fn config(url: &str) -> PushConfig {
    PushConfig {
        url: Some(url.to_string()),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        ..PushConfig::default()
    }
}

fn labels(service: &str) -> Vec<(String, String)> {
    vec![
        ("__name__".into(), "process_cpu".into()),
        ("service_name".into(), service.into()),
        ("namespace".into(), "shop".into()),
        ("pod".into(), "web-0".into()),
    ]
}

/// `stacks` distinct two-frame stacks, each counted `count` times.
fn recording(stacks: usize, count: u64) -> Recording {
    let samples = (0..stacks)
        .map(|i| Sample {
            stack: (0..2)
                .map(|d| {
                    Arc::new(Location {
                        address: 0x400000 + (i * 2 + d) as u64 * 8,
                        mapping: None,
                        frames: vec![symbolizer::Frame {
                            function: format!("main.f{i}_{d}"),
                            file: Some("/src/main.go".into()),
                            line: Some(10 + d as u32),
                            inlined: false,
                            start_line: None,
                        }],
                        kernel: false,
                    })
                })
                .collect(),
            count,
            pid: 7,
            tid: 7 + i as u32,
            comm: "web".into(),
        })
        .collect();
    Recording {
        frequency_hz: 100,
        start: SystemTime::now(),
        duration: Duration::from_secs(15),
        samples,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits until `pred(stats)` or the timeout; returns the last stats.
async fn wait_stats(p: &Pusher, timeout: Duration, pred: impl Fn(&PushStats) -> bool) -> PushStats {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let s = p.stats();
        if pred(&s) || tokio::time::Instant::now() > end {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_profile_arrives_with_its_labels_headers_and_values() {
    let server = FakePyroscope::start();
    let mut cfg = config(&server.url());
    cfg.tenant_id = Some("team-a".into());
    cfg.bearer_token = Some("tok".into());
    cfg.headers.insert("X-Extra".into(), "1".into());
    let rec = recording(5, 3);
    let stats = runtime().block_on(async {
        let p = Pusher::start(&cfg).unwrap();
        p.submit(labels("ebpf/shop/web"), &rec);
        wait_stats(&p, Duration::from_secs(5), |s| s.pushed == 1).await;
        p.shutdown(Duration::from_secs(1)).await
    });
    assert_eq!(stats.pushed, 1, "{stats:?}");
    assert_eq!(stats.dropped(), 0);
    let got = server.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.api, "push");
    assert_eq!(r.labels, labels("ebpf/shop/web"));
    assert_eq!(
        r.headers.get("x-scope-orgid").map(String::as_str),
        Some("team-a")
    );
    assert_eq!(
        r.headers.get("authorization").map(String::as_str),
        Some("Bearer tok")
    );
    assert_eq!(r.headers.get("x-extra").map(String::as_str), Some("1"));
    assert!(r.headers["user-agent"].starts_with("bellows/"));
    // 5 stacks × 3 samples × 10 ms.
    assert_eq!(r.total_value(), 5 * 3 * 10_000_000);
    assert!(
        r.profile.sample.iter().all(|s| s.label.is_empty()),
        "no sample labels"
    );
    let names: Vec<&str> = r
        .profile
        .function
        .iter()
        .map(|f| r.profile.string_table[f.name as usize].as_str())
        .collect();
    assert!(names.contains(&"main.f4_1"), "{names:?}");
}

#[test]
fn throttling_and_unavailability_are_retried_until_delivered() {
    let server = FakePyroscope::start();
    server.fail_next(503, 2);
    let stats = runtime().block_on(async {
        let p = Pusher::start(&config(&server.url())).unwrap();
        p.submit(labels("a"), &recording(2, 1));
        wait_stats(&p, Duration::from_secs(5), |s| s.pushed == 1).await;
        server.fail_next(429, 1);
        p.submit(labels("b"), &recording(2, 1));
        wait_stats(&p, Duration::from_secs(5), |s| s.pushed == 2).await;
        p.shutdown(Duration::from_secs(1)).await
    });
    assert_eq!(stats.pushed, 2, "{stats:?}");
    assert_eq!(stats.retries, 3);
    assert_eq!(stats.dropped(), 0);
    assert_eq!(server.received().len(), 2);
    assert_eq!(server.requests(), 5);
}

#[test]
fn refused_profiles_are_dropped_counted_and_not_retried() {
    let server = FakePyroscope::start();
    // No __name__: the server answers 400 invalid_argument.
    let bad = vec![("service_name".to_string(), "x".to_string())];
    let stats = runtime().block_on(async {
        let p = Pusher::start(&config(&server.url())).unwrap();
        p.submit(bad, &recording(1, 1));
        p.submit(labels("good"), &recording(1, 1));
        wait_stats(&p, Duration::from_secs(5), |s| s.pushed == 1).await;
        p.shutdown(Duration::from_secs(1)).await
    });
    assert_eq!(stats.rejected, 1, "{stats:?}");
    assert_eq!(stats.retries, 0);
    assert!(stats
        .last_error
        .as_deref()
        .unwrap()
        .contains("invalid metric name"));
    assert_eq!(server.requests(), 2);
    assert_eq!(server.refused()[0].0, 400);
}

#[test]
fn backend_down_then_up_delivers_within_the_memory_cap_and_counts_what_it_dropped() {
    let server = FakePyroscope::start();
    server.set_down(true);
    let mut cfg = config(&server.url());
    cfg.queue_max_bytes = 64 << 10;
    let stats = runtime().block_on(async {
        let p = Pusher::start(&cfg).unwrap();
        // ~40 profiles of a few KiB each: more than the cap holds.
        for i in 0..40 {
            p.submit(labels(&format!("svc-{i}")), &recording(60, 1));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let during = p.stats();
        assert!(during.pushed == 0 && during.retries > 0, "{during:?}");
        assert!(
            during.queue_full > 0,
            "the cap must have dropped something: {during:?}"
        );
        server.set_down(false);
        wait_stats(&p, Duration::from_secs(10), |s| s.queue_len == 0).await;
        p.shutdown(Duration::from_secs(1)).await
    });
    assert!(stats.queue_peak_bytes <= 64 << 10, "{stats:?}");
    assert_eq!(stats.pushed + stats.queue_full, 40, "{stats:?}");
    assert_eq!(stats.dropped(), stats.queue_full);
    let got = server.received();
    assert_eq!(got.len() as u64, stats.pushed);
    // The oldest were dropped: the newest profile is among those delivered.
    assert!(got
        .iter()
        .any(|r| r.label("service_name") == Some("svc-39")));
    assert!(!got.iter().any(|r| r.label("service_name") == Some("svc-0")));
}

#[test]
fn a_recording_too_big_for_one_request_is_split_into_accepted_pieces() {
    let server = FakePyroscope::start();
    let rec = recording(40_000, 2);
    let stats = runtime().block_on(async {
        let p = Pusher::start(&config(&server.url())).unwrap();
        p.submit(labels("big"), &rec);
        wait_stats(&p, Duration::from_secs(20), |s| {
            s.queue_len == 0 && s.pushed > 0
        })
        .await;
        p.shutdown(Duration::from_secs(5)).await
    });
    assert!(stats.trimmed.splits >= 2, "{stats:?}");
    assert_eq!(stats.dropped(), 0, "{stats:?}");
    // Pieces sent back to back may exceed the tenant's ingestion rate: those are throttled
    // (429) and retried, never refused for their size or shape.
    let refused = server.refused();
    assert!(
        refused.iter().all(|(status, _)| *status == 429),
        "{refused:?}"
    );
    assert_eq!(stats.retries, refused.len() as u64);
    let got = server.received();
    assert_eq!(got.len() as u64, stats.trimmed.splits + 1);
    assert!(got.iter().all(|r| r.uncompressed_bytes <= 1_500_000));
    let total: i64 = got.iter().map(|r| r.total_value()).sum();
    assert_eq!(total, 40_000 * 2 * 10_000_000);
}

#[test]
fn shutdown_gives_up_at_its_deadline_and_counts_the_rest() {
    let server = FakePyroscope::start();
    server.set_down(true);
    let stats = runtime().block_on(async {
        let p = Pusher::start(&config(&server.url())).unwrap();
        p.submit(labels("x"), &recording(1, 1));
        p.submit(labels("y"), &recording(1, 1));
        p.shutdown(Duration::from_millis(300)).await
    });
    assert_eq!(stats.shutdown, 2, "{stats:?}");
    assert_eq!(stats.pushed, 0);
}

#[test]
fn the_ingest_api_works_for_old_servers() {
    let server = FakePyroscope::start();
    let mut cfg = config(&server.url());
    cfg.api = Api::Ingest;
    let stats = runtime().block_on(async {
        let p = Pusher::start(&cfg).unwrap();
        p.submit(labels("ebpf/shop/web"), &recording(3, 2));
        wait_stats(&p, Duration::from_secs(5), |s| s.pushed == 1).await;
        p.shutdown(Duration::from_secs(1)).await
    });
    assert_eq!(stats.pushed, 1, "{stats:?} {:?}", server.refused());
    let r = &server.received()[0];
    assert_eq!(r.api, "ingest");
    assert_eq!(r.label("service_name"), Some("ebpf/shop/web"));
    assert_eq!(r.label("pod"), Some("web-0"));
    assert_eq!(r.total_value(), 3 * 2 * 10_000_000);
}

/// Against a real Pyroscope when `PYROSCOPE_URL` is set: none can run on our machines, so this
/// one is opt-in (it prints why it skips otherwise). The series must be queryable afterwards.
#[test]
fn a_real_pyroscope_accepts_and_serves_our_profiles() {
    let Some(url) = std::env::var("PYROSCOPE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "skipping a_real_pyroscope_accepts_and_serves_our_profiles: PYROSCOPE_URL is not set"
        );
        return;
    };
    let service = format!("bellows-test-{}", std::process::id());
    let rt = runtime();
    let stats = rt.block_on(async {
        let p = Pusher::start(&config(&url)).unwrap();
        p.submit(labels(&service), &recording(5, 3));
        wait_stats(&p, Duration::from_secs(30), |s| {
            s.pushed == 1 || s.rejected > 0
        })
        .await;
        p.shutdown(Duration::from_secs(5)).await
    });
    assert_eq!(stats.pushed, 1, "{stats:?}");
    let found = rt.block_on(async {
        let client = reqwest::Client::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        for _ in 0..30 {
            let body = serde_json::json!({
                "name": "service_name",
                "start": now - 3_600_000,
                "end": now + 600_000,
            });
            let resp = client
                .post(format!(
                    "{}/querier.v1.QuerierService/LabelValues",
                    url.trim_end_matches('/')
                ))
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await;
            if let Ok(resp) = resp {
                let text = resp.text().await.unwrap_or_default();
                if text.contains(&service) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        false
    });
    assert!(found, "service_name {service} not queryable from {url}");
}
