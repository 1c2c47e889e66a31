//! `bellows run` end to end on this machine's kernel: Go workloads in cgroups laid out the way a
//! kubelet lays them out, Pods served by the fake Kubernetes API, profiles pushed to the fake
//! Pyroscope.

use std::{
    io::{Read, Write},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tests::{
    bellows, bellows_bin, bpf_available,
    fake_kube::{pod, FakeKube},
    fake_pyroscope::{FakePyroscope, Received},
    require_go_fixtures, GoFixture, KubeletCgroup, Workload,
};

fn fixture(test: &str) -> Option<GoFixture> {
    if !bpf_available(test) {
        return None;
    }
    require_go_fixtures(test, "cpuburn")
        .into_iter()
        .find(|f| f.variant == "stripped")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `bellows run`, killed on drop. Its log goes to a file, never a pipe nobody reads:
/// a full pipe would stall the agent at its next log line.
struct Agent {
    child: Child,
    metrics: String,
    log: tempfile::NamedTempFile,
}

impl Agent {
    fn start(config: &Path, metrics_port: u16) -> Agent {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(bellows_bin())
            .args(["run", "--config"])
            .arg(config)
            .env_remove("KUBECONFIG")
            .env_remove("NODE_NAME")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("spawn bellows run");
        Agent {
            child,
            metrics: format!("127.0.0.1:{metrics_port}"),
            log,
        }
    }

    /// What the agent logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// GET a path of the metrics endpoint; (status line, body).
    fn get(&self, path: &str) -> Option<(String, String)> {
        let mut s = std::net::TcpStream::connect(&self.metrics).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_string(), body.to_string()))
    }

    /// The value of a metric line (name with labels, exactly as exposed).
    fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Sends SIGTERM; returns (exit code, stderr) once it exits.
    fn terminate(mut self, within: Duration) -> (Option<i32>, String) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + within * tests::time_scale();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < end,
                "bellows run did not stop within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        (status.code(), self.log())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn function_names(r: &Received) -> Vec<String> {
    r.profile
        .function
        .iter()
        .map(|f| r.profile.string_table[f.name as usize].clone())
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let end = Instant::now() + timeout * tests::time_scale();
    while !pred() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_pushes_pod_labelled_profiles_of_selected_pods_only() {
    let Some(fx) = fixture("run_pushes_pod_labelled_profiles_of_selected_pods_only") else {
        return;
    };
    let pyroscope = FakePyroscope::start();
    let api = FakeKube::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());

    // Two Pods on this node: shop/web-0 (selected) and batch/job-0 (not), plus a host process.
    let web = KubeletCgroup::create(1);
    let job = KubeletCgroup::create(2);
    let web_work = Workload::start(&fx.path, &["-duration", "60s", "-mode", "cpu"]);
    web.add(web_work.pid());
    let job_work = Workload::start(&fx.path, &["-duration", "60s", "-mode", "cpu"]);
    job.add(job_work.pid());
    let _host_work = Workload::start(&fx.path, &["-duration", "60s", "-mode", "cpu"]);
    let id = |cg: &KubeletCgroup| format!("containerd://{}", cg.container_id);
    api.apply(pod(
        "shop",
        "web-0",
        &web.pod_uid,
        "test-node",
        &[("app", "web"), ("team", "payments")],
        &[],
        &[("app", Some(&id(&web)))],
    ));
    api.apply(pod(
        "batch",
        "job-0",
        &job.pod_uid,
        "test-node",
        &[("app", "job")],
        &[],
        &[("worker", Some(&id(&job)))],
    ));

    let port = free_port();
    let config = dir.path().join("bellows.toml");
    std::fs::write(
        &config,
        format!(
            r#"
frequency = 199
collect-interval = "2s"
node-name = "test-node"
metrics-address = "127.0.0.1:{port}"
outside-pods = "skip"

[pyroscope]
url = "{url}"
min-backoff = "100ms"

[kubernetes]
enabled = true
kubeconfig = "{kubeconfig}"
namespaces = ["shop"]
pod-labels = ["team"]
"#,
            url = pyroscope.url(),
            kubeconfig = kubeconfig.display(),
        ),
    )
    .unwrap();
    let agent = Agent::start(&config, port);

    let is_web = |r: &Received| r.label("service_name") == Some("ebpf/shop/app");
    assert!(
        pyroscope.wait_for(Duration::from_secs(30), |got| got
            .iter()
            .filter(|r| is_web(r))
            .count()
            >= 2),
        "no profile of shop/web-0 pushed; refused: {:?}\nreceived: {:?}\nagent log:\n{}",
        pyroscope.refused(),
        pyroscope
            .received()
            .iter()
            .map(|r| r.labels.clone())
            .collect::<Vec<_>>(),
        agent.log()
    );
    let got = pyroscope.received();
    let web_profile = got.iter().find(|r| is_web(r)).unwrap();
    let mut labels = web_profile.labels.clone();
    labels.sort();
    let want: Vec<(String, String)> = [
        ("__name__", "process_cpu"),
        ("container", "app"),
        ("namespace", "shop"),
        ("node", "test-node"),
        ("pod", "web-0"),
        ("service_name", "ebpf/shop/app"),
        ("team", "payments"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(labels, want);
    let names = function_names(web_profile);
    assert!(names.iter().any(|n| n == "main.hotA"), "{names:?}");
    assert!(web_profile.total_value() > 0);
    // Only the selected Pod: no other namespace, no host process.
    for r in &got {
        assert_eq!(
            r.label("namespace"),
            Some("shop"),
            "unexpected series {:?}",
            r.labels
        );
    }

    // The kernel filter holds the selected container only, and drops the rest before any
    // stack walk.
    wait_until("metrics", Duration::from_secs(10), || {
        agent
            .metric("bellows_push_total{result=\"ok\"}")
            .unwrap_or(0.0)
            >= 2.0
    });
    if tests::cgroup_layout() == agent::cgroup::Layout::V1 {
        // cgroup v1 only: no cgroup ids to give the kernel (the filter is off), so the other
        // pods' samples are dropped in userspace instead.
        assert_eq!(agent.metric("bellows_kernel_filter_cgroups"), None);
        assert!(agent.metric("bellows_samples_unselected_total").unwrap() > 0.0);
    } else {
        assert_eq!(agent.metric("bellows_kernel_filter_cgroups"), Some(1.0));
        assert!(agent.metric("bellows_samples_filtered_total").unwrap() > 0.0);
    }
    assert_eq!(agent.metric("bellows_kubernetes_synced"), Some(1.0));
    assert_eq!(
        agent.metric("bellows_push_total{result=\"rejected\"}"),
        Some(0.0)
    );
    let (status, _) = agent.get("/healthz").unwrap();
    assert!(status.contains("200"), "{status}");

    // Stop a second into an interval: that partial window holds samples and must be pushed.
    let seen = pyroscope.received().len();
    assert!(
        pyroscope.wait_for(Duration::from_secs(10), |got| got.len() > seen),
        "no push after the first {seen}; agent log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let before = pyroscope.received().len();
    let (code, stderr) = agent.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        pyroscope.received().len() > before,
        "the last interval was not flushed at SIGTERM: {stderr}"
    );
    assert!(stderr.contains("stopped"), "{stderr}");
    assert!(stderr.contains("dropped=0"), "{stderr}");
}

#[test]
fn run_keeps_sampling_through_a_backend_outage_and_delivers_after() {
    let Some(fx) = fixture("run_keeps_sampling_through_a_backend_outage_and_delivers_after") else {
        return;
    };
    let pyroscope = FakePyroscope::start();
    pyroscope.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let web = KubeletCgroup::create(3);
    let work = Workload::start(&fx.path, &["-duration", "60s", "-mode", "cpu"]);
    web.add(work.pid());

    let port = free_port();
    let config = dir.path().join("bellows.toml");
    std::fs::write(
        &config,
        format!(
            r#"
collect-interval = "1s"
node-name = "test-node"
log-format = "json"
metrics-address = "127.0.0.1:{port}"
outside-pods = "skip"
[pyroscope]
url = "{url}"
min-backoff = "100ms"
max-backoff = "500ms"
[kubernetes]
enabled = false
"#,
            url = pyroscope.url(),
        ),
    )
    .unwrap();
    let agent = Agent::start(&config, port);
    // Without the API, the container is labelled by its id.
    wait_until(
        "retries while the backend is down",
        Duration::from_secs(20),
        || {
            agent.metric("bellows_push_retries_total").unwrap_or(0.0) >= 3.0
                && agent.metric("bellows_push_queue_profiles").unwrap_or(0.0) >= 2.0
        },
    );
    // Busy for a moment while sampled, then idle but alive: released after 4 collections
    // without samples. (Started after the agent, so that its busy part is sampled.)
    let idle = Workload(
        Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); done; exec sleep 60",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    web.add(idle.pid());
    let rss = agent.metric("bellows_resident_memory_bytes").unwrap();
    assert!(rss < 200.0 * 1024.0 * 1024.0, "RSS {rss}");
    assert_eq!(agent.metric("bellows_push_total{result=\"ok\"}"), Some(0.0));
    std::thread::sleep(Duration::from_secs(2));
    pyroscope.set_down(false);

    let short = &web.container_id[..12];
    let service = format!("ebpf/container/{short}");
    assert!(
        pyroscope.wait_for(Duration::from_secs(20), |got| {
            got.iter()
                .filter(|r| r.label("service_name") == Some(service.as_str()))
                .count()
                >= 4
        }),
        "profiles from the outage were not delivered: {:?}",
        pyroscope
            .received()
            .iter()
            .map(|r| r.labels.clone())
            .collect::<Vec<_>>()
    );
    let got = pyroscope.received();
    let r = got
        .iter()
        .find(|r| r.label("service_name") == Some(service.as_str()))
        .unwrap();
    assert_eq!(r.label("container_id"), Some(web.container_id.as_str()));
    assert_eq!(r.label("pod_uid"), Some(web.pod_uid.as_str()));
    // Windows are distinct and consecutive: several profiles from the outage, none lost.
    let mut starts: Vec<i64> = got.iter().map(|r| r.profile.time_nanos).collect();
    starts.sort();
    starts.dedup();
    assert!(starts.len() >= 4, "{starts:?}");
    assert_eq!(
        agent.metric("bellows_push_total{result=\"queue_full\"}"),
        Some(0.0)
    );
    // The shell went idle seconds ago and is still alive: its process entry was released.
    assert!(idle.0.id() > 0 && Path::new(&format!("/proc/{}", idle.pid())).exists());
    wait_until(
        "the idle process to be released",
        Duration::from_secs(15),
        || {
            agent
                .metric("bellows_processes_evicted_total")
                .unwrap_or(0.0)
                >= 1.0
        },
    );
    let (code, stderr) = agent.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}");
    // JSON logs: one object per line.
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}

#[test]
fn run_rejects_bad_configuration_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["run".into()], "pyroscope.url: required"),
        (
            vec!["run".into(), "--pyroscope-url".into(), "ftp://x".into()],
            "pyroscope.url",
        ),
        (
            vec![
                "run".into(),
                "--pyroscope-url".into(),
                "http://x".into(),
                "--collect-interval".into(),
                "20m".into(),
            ],
            "collect-interval",
        ),
        (
            vec!["run".into(), "--config".into(), "/nonexistent.toml".into()],
            "/nonexistent.toml",
        ),
    ];
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(
        &bad_toml,
        "frequency = 97\n[pyroscope]\nurl = \"http://x\"\nretries = 3\n",
    )
    .unwrap();
    let mut cases = cases;
    cases.push((
        vec![
            "run".into(),
            "--config".into(),
            bad_toml.display().to_string(),
        ],
        "line 4",
    ));
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bellows(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
