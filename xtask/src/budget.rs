//! `cargo xtask bench dwarf-budget`: what `[symbolizer] dwarf-budget` does to `bellows run`'s
//! memory and CPU when more DWARF is in use than the budget holds.
//!
//! Four copies of the release `bellows` (each with its DWARF, appended to so that none shares
//! another's build id and size) symbolize in a loop, so that every collection needs all four
//! binaries' DWARF. `bellows run` samples the machine with `max-dwarf-bytes` raised to let
//! that DWARF be used, once without a budget and once with the default budget; peak RSS (and its
//! anonymous and file-backed parts), CPU, collection time and the symbolizer's own counters
//! from `/metrics` are compared.

use std::{
    io::{Read, Write},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use anyhow::{ensure, Context, Result};

use crate::overhead::{free_port, spawn_logged, wait4, MemWatch, Sink};

const COPIES: usize = 4;

/// (label, dwarf-budget bytes).
const CASES: &[(&str, u64)] = &[
    ("no budget (4 GiB)", 4 << 30),
    ("128 MiB (default)", 128 << 20),
];

pub fn dwarf_budget(root: &Path, seconds: u64) -> Result<()> {
    let bellows = crate::build_release(root)?;
    let dir = root.join("target/bench-dwarf-budget");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    // Workload input: addresses inside the functions of `bellows` itself, through DWARF.
    let funcs =
        crate::bench::sized_functions(Command::new("nm").args(["--defined-only", "-S"]), &bellows)?;
    let addrs: String = crate::bench::random_addresses(&funcs, 0xb0d9e7)
        .iter()
        .map(|a| format!("{a:#x}\n"))
        .collect();
    let input = dir.join("addresses");
    std::fs::write(&input, addrs)?;

    let bytes = std::fs::read(&bellows)?;
    let mut workloads = Vec::new();
    for i in 1..=COPIES {
        let copy = dir.join(format!("bellows-{i}"));
        let mut b = bytes.clone();
        b.resize(bytes.len() + 4096 * i, 0);
        std::fs::write(&copy, b)?;
        crate::setup::make_executable(&copy)?;
        let script = format!(
            "while :; do {} symbolize --elf {} < {} > /dev/null; done",
            copy.display(),
            bellows.display(),
            input.display()
        );
        workloads.push(Group(
            Command::new("sh")
                .args(["-c", &script])
                .process_group(0)
                .spawn()
                .context("starting a workload")?,
        ));
    }
    std::thread::sleep(Duration::from_secs(2));

    let sink = Sink::start()?;
    let mut rows = Vec::new();
    for &(label, budget) in CASES {
        let metrics = free_port()?;
        let config = dir.join("bellows.toml");
        std::fs::write(
            &config,
            format!(
                "frequency = 97\ncollect-interval = \"5s\"\n\
                 metrics-address = \"127.0.0.1:{metrics}\"\noutside-pods = \"executable\"\n\
                 [symbolizer]\nmax-dwarf-bytes = {}\ndwarf-budget = {budget}\n\
                 [pyroscope]\nurl = \"{}\"\n[kubernetes]\nenabled = false\n",
                128u64 << 20,
                sink.url()
            ),
        )?;
        let mut run = spawn_logged(
            Command::new(&bellows)
                .args(["run", "--config"])
                .arg(&config)
                .env_remove("KUBECONFIG")
                .env("RUST_LOG", "warn"),
            &dir.join("run.log"),
        )?;
        let watch = MemWatch::start(run.id());
        std::thread::sleep(Duration::from_secs(seconds));
        let text = scrape(metrics).unwrap_or_default();
        // SAFETY: plain signal to our own child.
        unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
        let (status, (cpu, peak)) = wait4(&mut run)?;
        let (anon, file) = watch.finish();
        ensure!(
            status == 0,
            "bellows run exited with {status}: see {}",
            dir.join("run.log").display()
        );
        let metric = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(f64::NAN)
        };
        rows.push(format!(
            "| {label} | {:.0} | {:.2} s | {:.0} MiB | {:.0} / {:.0} MiB | {:.1} s | {:.0} MB | {:.0} / {:.0} |",
            metric("bellows_collections_total"),
            metric("bellows_collection_duration_seconds"),
            peak as f64 / 1024.0,
            anon as f64 / 1024.0,
            file as f64 / 1024.0,
            cpu,
            metric("bellows_symbolizer_dwarf_bytes") / 1e6,
            metric("bellows_symbolizer_dwarf_released_total"),
            metric("bellows_symbolizer_dwarf_reloads_total"),
        ));
    }
    drop(workloads);

    println!(
        "\n`bellows run`, {seconds} s per case, {COPIES} busy copies of the release bellows \
         ({} MiB each) whose DWARF every collection needs\n",
        bytes.len() >> 20
    );
    println!(
        "| dwarf-budget | collections | last collection | peak RSS | anonymous / file-backed \
         | CPU | DWARF loaded | contexts released / rebuilt |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    Ok(())
}

/// A workload's process group, killed on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: signals our own child's process group.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// `GET /metrics` from a local port.
fn scrape(port: u16) -> Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}
