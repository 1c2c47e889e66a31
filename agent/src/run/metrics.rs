//! `/metrics` (Prometheus text format 0.0.4, rendered through [`crate::metrics`]) and `/healthz`
//! for `bellows run`.
//!
//! The collection loop updates one [`Snapshot`] per interval; live sources (the push queue, the
//! pod watch) render themselves at scrape time through [`Metrics::add_source`].

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_common::ErrorKind;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;

use crate::metrics::{family, family_owned, gauge_f64};

/// Counters the collection loop maintains. Totals are since start.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Kernel counters by [`ErrorKind`], since start (samples counted, drops by reason).
    pub kernel: [u64; ErrorKind::COUNT as usize],
    pub collections: u64,
    pub collect_errors: u64,
    pub last_collect_seconds: f64,
    /// Series built in the last collection.
    pub series: u64,
    /// Samples that belonged to no selected target (userspace selection).
    pub samples_unselected: u64,
    /// Symbolization totals since start.
    pub resolve: crate::resolve::ResolveStats,
    pub processes_vanished: u64,
    pub processes_named_from_exec: u64,
    pub processes_from_records: u64,
    pub mmap_records_lost: u64,
    pub unreadable_files: u64,
    pub refreshes_unchanged: u64,
    pub processes_tracked: u64,
    pub processes_evicted: u64,
    pub symbolizer_files: u64,
    pub symbolizer_mapped_bytes: u64,
    pub symbolizer_heap_bytes: u64,
    /// Binaries whose DWARF exceeded `max-dwarf-bytes` (named from ELF symbols only).
    pub symbolizer_dwarf_too_large: u64,
    /// DWARF loaded now, and contexts released and built again under `dwarf-budget`.
    pub symbolizer_dwarf_bytes: u64,
    pub symbolizer_dwarf_released: u64,
    pub symbolizer_dwarf_reloads: u64,
    /// Binaries whose Go table was too damaged to use (named from ELF symbols, if at all).
    pub symbolizer_go_tables_damaged: u64,
    /// What the unwind-table loader did; None with frame pointers only.
    pub unwind: Option<crate::unwind::LoaderStats>,
    /// How the new-process intake kept up.
    pub intake: crate::session::intake::IntakeStats,
    pub cgroups_indexed: u64,
    /// Entries of the kernel cgroup filter; None when the filter is off.
    pub filter_cgroups: Option<u64>,
}

type Source = Box<dyn Fn(&mut String) + Send + Sync>;

/// Shared between the collection loop and the HTTP server.
pub struct Metrics {
    snapshot: Mutex<Snapshot>,
    sources: Mutex<Vec<Source>>,
    started: Instant,
    last_collect: Mutex<Option<Instant>>,
    /// `/healthz` fails when no collection completed for this long.
    stale_after: Duration,
}

impl Metrics {
    pub fn new(collect_interval: Duration) -> Arc<Self> {
        Arc::new(Metrics {
            snapshot: Mutex::new(Snapshot::default()),
            sources: Mutex::new(Vec::new()),
            started: Instant::now(),
            last_collect: Mutex::new(None),
            stale_after: collect_interval * 3 + Duration::from_secs(10),
        })
    }

    /// Applies `f` to the snapshot and marks a completed collection.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.snapshot.lock().unwrap_or_else(|e| e.into_inner()));
        *self.last_collect.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Applies `f` to the snapshot without marking a collection (e.g. a filter update).
    pub fn update_quiet(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.snapshot.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds a renderer called at every scrape (it appends complete metric families).
    pub fn add_source(&self, source: impl Fn(&mut String) + Send + Sync + 'static) {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(source));
    }

    /// Healthy while collections keep completing (or shortly after start).
    pub fn healthy(&self) -> bool {
        let last = *self.last_collect.lock().unwrap_or_else(|e| e.into_inner());
        let since = last.unwrap_or(self.started).elapsed();
        since < self.stale_after
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let s = self.snapshot();
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "bellows_samples_total",
            "counter",
            "Samples counted by the kernel side.",
            &[("", s.kernel[ErrorKind::Counted as usize])],
        );
        let drops: Vec<(String, u64)> = ErrorKind::ALL
            .iter()
            .filter(|k| !matches!(k, ErrorKind::Counted | ErrorKind::Filtered))
            .map(|k| (format!("reason=\"{}\"", k.name()), s.kernel[*k as usize]))
            .collect();
        family_owned(
            &mut out,
            "bellows_samples_dropped_total",
            "counter",
            "Samples lost or degraded in the kernel side, by reason.",
            &drops,
        );
        family(
            &mut out,
            "bellows_samples_filtered_total",
            "counter",
            "Samples not taken because the kernel cgroup filter excluded them.",
            &[("", s.kernel[ErrorKind::Filtered as usize])],
        );
        family(
            &mut out,
            "bellows_samples_unselected_total",
            "counter",
            "Samples discarded in userspace because they belonged to no selected target.",
            &[("", s.samples_unselected)],
        );
        family(
            &mut out,
            "bellows_collections_total",
            "counter",
            "Collection intervals completed.",
            &[("", s.collections)],
        );
        family(
            &mut out,
            "bellows_collection_errors_total",
            "counter",
            "Collection intervals that failed to read the kernel maps.",
            &[("", s.collect_errors)],
        );
        gauge_f64(
            &mut out,
            "bellows_collection_duration_seconds",
            "Time the last collection took (drain, symbolize, build profiles).",
            s.last_collect_seconds,
        );
        family(
            &mut out,
            "bellows_series",
            "gauge",
            "Series (targets) in the last collection.",
            &[("", s.series)],
        );
        family(
            &mut out,
            "bellows_frames_total",
            "counter",
            "Distinct frames looked up, by kind.",
            &[
                ("kind=\"user\"", s.resolve.user_frames),
                ("kind=\"kernel\"", s.resolve.kernel_frames),
            ],
        );
        family(
            &mut out,
            "bellows_frames_remembered_total",
            "counter",
            "User frames taken as an earlier collection resolved them (same process capture).",
            &[("", s.resolve.user_frames_remembered)],
        );
        family(
            &mut out,
            "bellows_symbolization_misses_total",
            "counter",
            "Frames no symbol was found for, by kind.",
            &[
                ("kind=\"user\"", s.resolve.user_unsymbolized),
                ("kind=\"kernel\"", s.resolve.kernel_unsymbolized),
            ],
        );
        family(
            &mut out,
            "bellows_samples_without_process_total",
            "counter",
            "Samples of processes whose mappings were never captured.",
            &[("", s.resolve.samples_without_process)],
        );
        family(
            &mut out,
            "bellows_missing_stacks_total",
            "counter",
            "Stack ids missing from the stack map at drain time.",
            &[("", s.resolve.missing_stacks)],
        );
        family(
            &mut out,
            "bellows_processes_vanished_total",
            "counter",
            "Processes gone before their mappings could be read.",
            &[("", s.processes_vanished)],
        );
        family(
            &mut out,
            "bellows_processes_named_from_exec_total",
            "counter",
            "Processes gone before their mappings were read, without mmap records, named by the \
             executable their exec loaded.",
            &[("", s.processes_named_from_exec)],
        );
        family(
            &mut out,
            "bellows_processes_from_mmap_records_total",
            "counter",
            "Captures made from the kernel's mmap records, of processes gone before their \
             mappings could be read.",
            &[("", s.processes_from_records)],
        );
        family(
            &mut out,
            "bellows_mmap_records_lost_total",
            "counter",
            "mmap records the kernel could not write (ring full) or the agent let go of.",
            &[("", s.mmap_records_lost)],
        );
        family(
            &mut out,
            "bellows_unreadable_files_total",
            "counter",
            "Mapped files that could not be opened.",
            &[("", s.unreadable_files)],
        );
        family(
            &mut out,
            "bellows_mapping_refreshes_unchanged_total",
            "counter",
            "Re-reads of a process's mappings, asked for by the kernel (a pc outside them), that \
             found them unchanged.",
            &[("", s.refreshes_unchanged)],
        );
        family(
            &mut out,
            "bellows_process_announcements_total",
            "counter",
            "Announcements of new processes (and mapping refreshes) read from the kernel.",
            &[("", s.intake.announcements)],
        );
        gauge_f64(
            &mut out,
            "bellows_process_intake_busy_seconds",
            "Time the intake thread spent reading announced processes, since start.",
            s.intake.busy.as_secs_f64(),
        );
        gauge_f64(
            &mut out,
            "bellows_process_intake_longest_batch_seconds",
            "The longest the intake thread took over one batch of announcements.",
            s.intake.longest_batch.as_secs_f64(),
        );
        family(
            &mut out,
            "bellows_processes",
            "gauge",
            "Processes whose mappings are held.",
            &[("", s.processes_tracked)],
        );
        family(
            &mut out,
            "bellows_processes_evicted_total",
            "counter",
            "Processes released because they exited or were not sampled for 4 collections.",
            &[("", s.processes_evicted)],
        );
        family(
            &mut out,
            "bellows_symbolizer_files",
            "gauge",
            "Binaries held open by the symbolizer.",
            &[("", s.symbolizer_files)],
        );
        family(
            &mut out,
            "bellows_symbolizer_bytes",
            "gauge",
            "Memory the symbolizer holds: mapped files and heap indexes.",
            &[
                ("kind=\"mapped\"", s.symbolizer_mapped_bytes),
                ("kind=\"heap\"", s.symbolizer_heap_bytes),
            ],
        );
        family(
            &mut out,
            "bellows_symbolizer_dwarf_too_large",
            "gauge",
            "Binaries whose DWARF exceeds max-dwarf-bytes: named without lines or inlined frames.",
            &[("", s.symbolizer_dwarf_too_large)],
        );
        family(
            &mut out,
            "bellows_symbolizer_dwarf_bytes",
            "gauge",
            "DWARF sections behind the loaded DWARF contexts, bounded by dwarf-budget.",
            &[("", s.symbolizer_dwarf_bytes)],
        );
        family(
            &mut out,
            "bellows_symbolizer_dwarf_released_total",
            "counter",
            "DWARF contexts released, least recently used first, to stay within dwarf-budget.",
            &[("", s.symbolizer_dwarf_released)],
        );
        family(
            &mut out,
            "bellows_symbolizer_dwarf_reloads_total",
            "counter",
            "DWARF contexts built again after a release: a budget too small for the binaries in use.",
            &[("", s.symbolizer_dwarf_reloads)],
        );
        family(
            &mut out,
            "bellows_symbolizer_go_tables_damaged_total",
            "counter",
            "Binaries whose Go table was too damaged to use: named from ELF symbols, if at all.",
            &[("", s.symbolizer_go_tables_damaged)],
        );
        if let Some(u) = &s.unwind {
            family(
                &mut out,
                "bellows_unwind_tables",
                "gauge",
                "Binaries whose unwind tables are loaded in the kernel.",
                &[("", u.tables_loaded)],
            );
            family(
                &mut out,
                "bellows_unwind_rows",
                "gauge",
                "Unwind rows loaded in the kernel (8 bytes each).",
                &[("", u.rows_loaded)],
            );
            family(
                &mut out,
                "bellows_unwind_tables_missing_total",
                "counter",
                "Binaries walked by frame pointers: no usable table, or it did not fit.",
                &[
                    ("reason=\"no_table\"", u.tables_unavailable),
                    ("reason=\"did_not_fit\"", u.tables_not_fitting),
                    ("reason=\"map_error\"", u.map_errors),
                ],
            );
            family(
                &mut out,
                "bellows_unwind_build_milliseconds_total",
                "counter",
                "Time spent building and loading unwind tables.",
                &[("", u.build_time.as_millis() as u64)],
            );
        }
        family(
            &mut out,
            "bellows_cgroups",
            "gauge",
            "cgroups indexed.",
            &[("", s.cgroups_indexed)],
        );
        if let Some(n) = s.filter_cgroups {
            family(
                &mut out,
                "bellows_kernel_filter_cgroups",
                "gauge",
                "cgroups the kernel filter lets through.",
                &[("", n)],
            );
        }
        if let Some(rss) = own_rss_bytes() {
            family(
                &mut out,
                "bellows_resident_memory_bytes",
                "gauge",
                "Resident set size of the agent.",
                &[("", rss)],
            );
        }
        for source in self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            source(&mut out);
        }
        out
    }
}

/// Resident set size from `/proc/self/statm` (pages → bytes).
pub fn own_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096))
}

/// Binds `addr` (errors are reported before sampling starts) and serves until the task is
/// dropped. Returns the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let metrics = Arc::clone(&metrics);
                    async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
                });
                let conn = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(err) = conn.await {
                    tracing::debug!("metrics connection: {err}");
                }
            });
        }
    });
    Ok((local, task))
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/healthz") if metrics.healthy() => (200, "text/plain", "ok\n".to_string()),
        ("GET", "/healthz") => (
            503,
            "text/plain",
            "no collection completed recently\n".to_string(),
        ),
        ("GET", _) => (404, "text/plain", "not found: try /metrics\n".to_string()),
        _ => (405, "text/plain", "method not allowed\n".to_string()),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_drop_reason_and_sources() {
        let m = Metrics::new(Duration::from_secs(15));
        m.update(|s| {
            s.kernel[ErrorKind::Counted as usize] = 42;
            s.kernel[ErrorKind::CountsFull as usize] = 3;
            s.resolve.user_unsymbolized = 5;
        });
        m.add_source(|out| {
            family(
                out,
                "bellows_push_total",
                "counter",
                "x",
                &[("result=\"ok\"", 7)],
            )
        });
        let text = m.render();
        assert!(text.contains("bellows_samples_total 42\n"), "{text}");
        assert!(text.contains("bellows_samples_dropped_total{reason=\"counts_map_full\"} 3\n"));
        assert!(
            text.contains("bellows_samples_dropped_total{reason=\"new_pid_event_dropped\"} 0\n")
        );
        assert!(text.contains("bellows_symbolization_misses_total{kind=\"user\"} 5\n"));
        assert!(text.contains("bellows_push_total{result=\"ok\"} 7\n"));
        assert!(text.contains("bellows_resident_memory_bytes "));
        // Every sample line belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "undeclared {name}");
            }
        }
        assert!(m.healthy());
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let m = Metrics::new(Duration::from_secs(15));
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&m))
            .await
            .unwrap();
        for (path, want) in [
            ("/healthz", "200 OK"),
            ("/metrics", "200 OK"),
            ("/nope", "404"),
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).await.unwrap();
            assert!(
                resp.starts_with(&format!("HTTP/1.1 {want}")),
                "{path}: {resp}"
            );
        }
        task.abort();
    }
}
