//! `cargo xtask bench symbolize`: a whole `bellows symbolize` process against the peers on the
//! same addresses in the same run: `addr2line` from the Go toolchain that built a large stripped
//! Go binary, and `llvm-symbolizer --inlining` on a large binary with DWARF. Answers are compared
//! too: a fast wrong answer is no result.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::setup;

const ADDRESSES: usize = 20_000;
const RUNS: usize = 5;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// (start, size) of text symbols, from `nm`-style output: "addr size type name".
fn parse_sized_symbols(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || !matches!(f[2], "T" | "t") {
                return None;
            }
            let start = u64::from_str_radix(f[0], 16).ok()?;
            let size = f[1]
                .parse::<u64>()
                .ok()
                .or_else(|| u64::from_str_radix(f[1], 16).ok())?;
            (size > 0).then_some((start, size))
        })
        .collect()
}

fn random_addresses(funcs: &[(u64, u64)], seed: u64) -> Vec<u64> {
    let mut rng = Rng(seed);
    (0..ADDRESSES)
        .map(|_| {
            let (start, size) = funcs[(rng.next() % funcs.len() as u64) as usize];
            start + rng.next() % size
        })
        .collect()
}

/// Runs `cmd` with the addresses on stdin; returns (median wall time, stdout of the last run).
fn time_runs(mut make: impl FnMut() -> Command, addrs: &[u64]) -> Result<(Duration, String)> {
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut times = Vec::new();
    let mut last = String::new();
    for _ in 0..RUNS {
        let mut cmd = make();
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", crate::describe(&cmd)))?;
        let mut stdin = child.stdin.take().context("stdin")?;
        let data = input.clone();
        let writer = std::thread::spawn(move || stdin.write_all(data.as_bytes()));
        let out = child.wait_with_output()?;
        times.push(started.elapsed());
        writer.join().expect("writer thread")?;
        ensure!(out.status.success(), "{} failed", crate::describe(&cmd));
        last = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    times.sort();
    Ok((times[RUNS / 2], last))
}

/// Splits `llvm-symbolizer`-style text into per-address frame lists of (function, file:line).
fn parse_frames(text: &str) -> Vec<Vec<(String, String)>> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let lines: Vec<&str> = block.lines().collect();
            lines
                .chunks(2)
                .map(|c| {
                    let pos = c.get(1).copied().unwrap_or("");
                    // Drop the column: we do not report one.
                    let pos = match pos.rsplit_once(':') {
                        Some((head, col)) if col.parse::<u32>().is_ok() && head.contains(':') => {
                            head
                        }
                        _ => pos,
                    };
                    (strip_hash(c[0]).to_string(), pos.to_string())
                })
                .collect()
        })
        .collect()
}

/// Frames agree when every frame's position agrees and its name agrees wherever the peer could
/// demangle it. "No line" matches "no line": llvm-symbolizer names the compile unit as the file
/// of an address without a line row (`crate.cgu.0:0`), where we print `??:0`. llvm-symbolizer
/// 14 leaves Rust's legacy escapes (`$LT$`, `..`) and `(.llvm.N)` suffixes in names: those
/// names are not compared.
fn same_frames(a: &[(String, String)], b: &[(String, String)]) -> bool {
    let no_line = |pos: &str| pos.ends_with(":0");
    let name_ok = |ours: &str, peer: &str| {
        let peer = peer.split(" (.llvm.").next().unwrap_or(peer);
        let peer = strip_hash(peer);
        peer.contains('$') || ours == peer
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| name_ok(&x.0, &y.0) && (x.1 == y.1 || (no_line(&x.1) && no_line(&y.1))))
}

/// Rust legacy mangling's `::h0123456789abcdef` suffix, which we omit when demangling.
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

struct Row {
    what: String,
    ours: Duration,
    peer_name: String,
    peer: Duration,
    agree: usize,
    total: usize,
}

pub fn symbolize(root: &Path) -> Result<()> {
    let bellows = crate::build_release(root)?;
    let mut rows = Vec::new();

    // Go: the newest toolchain's compiler, a large stripped Go binary, against that toolchain's
    // own addr2line (run directly, not through the `go` command).
    let go = setup::go_toolchains(root)
        .pop()
        .context("no Go toolchain: run `cargo xtask setup`")?;
    let tool_dir = go
        .parent()
        .and_then(Path::parent)
        .context("go binary layout")?
        .join("pkg/tool/linux_amd64");
    let go_bin = tool_dir.join("compile");
    // Go 1.24+ builds addr2line on demand; `go tool -n` builds it and prints its path, so the
    // peer runs directly, without the `go` command's start-up in its time.
    let addr2line = {
        let out = Command::new(&go)
            .args(["tool", "-n", "addr2line"])
            .env("GOTOOLCHAIN", "local")
            .output()?;
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && path.is_file() {
            path
        } else {
            tool_dir.join("addr2line")
        }
    };
    let nm = Command::new(&go)
        .args(["tool", "nm", "-size"])
        .arg(&go_bin)
        .output()?;
    let funcs = parse_sized_symbols(&String::from_utf8_lossy(&nm.stdout));
    ensure!(
        funcs.len() > 1000,
        "too few functions in {}",
        go_bin.display()
    );
    let addrs = random_addresses(&funcs, 0x5eed);
    let (ours, ours_out) = time_runs(
        || {
            let mut c = Command::new(&bellows);
            c.args(["symbolize", "--elf"]).arg(&go_bin);
            c
        },
        &addrs,
    )?;
    let (peer, peer_out) = time_runs(
        || {
            let mut c = Command::new(&addr2line);
            c.arg(&go_bin);
            c
        },
        &addrs,
    )?;
    let ours_frames = parse_frames(&ours_out);
    let peer_lines: Vec<&str> = peer_out.lines().collect();
    ensure!(
        ours_frames.len() == addrs.len(),
        "bellows answered {} of {}",
        ours_frames.len(),
        addrs.len()
    );
    let mut agree = 0;
    for (i, frames) in ours_frames.iter().enumerate() {
        let (name, pos) = (
            peer_lines.get(2 * i).copied(),
            peer_lines.get(2 * i + 1).copied(),
        );
        let (Some(name), Some(pos)) = (name, pos) else {
            break;
        };
        let innermost = frames.first();
        let physical = frames.last();
        let name_ok =
            innermost.is_some_and(|f| f.0 == name) || physical.is_some_and(|f| f.0 == name);
        let pos_ok = innermost.is_some_and(|f| f.1 == pos)
            || (pos.ends_with(":-1") || pos.starts_with("?"))
                && innermost.is_some_and(|f| f.1.starts_with("??"));
        agree += usize::from(name_ok && pos_ok);
    }
    rows.push(Row {
        what: format!(
            "Go, stripped, {} MB ({})",
            file_mb(&go_bin),
            go_bin.display()
        ),
        ours,
        peer_name: "go tool addr2line".into(),
        peer,
        agree,
        total: addrs.len(),
    });

    // DWARF: our own release binary (line tables and inlined frames), against llvm-symbolizer.
    let nm = Command::new("nm")
        .args(["--defined-only", "-S"])
        .arg(&bellows)
        .output()
        .context("nm (binutils)")?;
    let funcs = parse_sized_symbols(&String::from_utf8_lossy(&nm.stdout));
    ensure!(
        funcs.len() > 1000,
        "too few functions in {}",
        bellows.display()
    );
    let addrs = random_addresses(&funcs, 0xd00d);
    let (ours, ours_out) = time_runs(
        || {
            let mut c = Command::new(&bellows);
            c.args(["symbolize", "--elf"]).arg(&bellows);
            c
        },
        &addrs,
    )?;
    let (peer, peer_out) = time_runs(
        || {
            let mut c = Command::new("llvm-symbolizer");
            c.arg(format!("--obj={}", bellows.display()))
                .arg("--inlining");
            c
        },
        &addrs,
    )?;
    let (a, b) = (parse_frames(&ours_out), parse_frames(&peer_out));
    if a.len() != b.len() {
        bail!(
            "answer counts differ: bellows {} llvm-symbolizer {}",
            a.len(),
            b.len()
        );
    }
    let agree = a.iter().zip(&b).filter(|(x, y)| same_frames(x, y)).count();
    rows.push(Row {
        what: format!("DWARF, {} MB (target/release/bellows)", file_mb(&bellows)),
        ours,
        peer_name: "llvm-symbolizer --inlining".into(),
        peer,
        agree,
        total: addrs.len(),
    });

    println!(
        "\n{ADDRESSES} random addresses inside functions, whole processes, median of {RUNS} runs \
         (DWARF names compared where llvm-symbolizer demangles them)\n"
    );
    println!("| binary | bellows symbolize | peer | peer time | speed-up | same answers |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} ms | {} | {:.0} ms | {:.2}x | {} of {} ({:.2}%) |",
            r.what,
            r.ours.as_secs_f64() * 1e3,
            r.peer_name,
            r.peer.as_secs_f64() * 1e3,
            r.peer.as_secs_f64() / r.ours.as_secs_f64(),
            r.agree,
            r.total,
            100.0 * r.agree as f64 / r.total as f64
        );
    }
    for r in &rows {
        ensure!(
            r.agree * 100 >= r.total * 99,
            "{}: only {} of {} answers agree with {}",
            r.what,
            r.agree,
            r.total,
            r.peer_name
        );
    }
    Ok(())
}

fn file_mb(p: &PathBuf) -> u64 {
    std::fs::metadata(p).map(|m| m.len() >> 20).unwrap_or(0)
}
