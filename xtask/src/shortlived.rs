//! `cargo xtask bench short-lived`: how many samples of short-lived processes are named.
//!
//! Four shell loops exec a program as fast as they can while `bellows record` profiles the
//! whole machine; then `perf record -a -g` does, as the peer, while the same loops run (perf
//! following the loops' children instead starts each new task at a long period and samples
//! few of them). Each profiler's own CPU time is reported beside (perf's: record and script). Two programs: the Go fixture `cpuburn` for 3 ms, and a small C program
//! that spins about 1 ms.
//!
//! A sample is named when its innermost user frame has a function name, not an address alone
//! (a sample without user frames when its kernel frames have). Only the program's
//! samples count, told by thread name.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context, Result};

use crate::run;

/// The C program: spins half a millisecond in two functions, so its samples have names to find;
/// with its start and exit it lives about a millisecond.
const SPIN_C: &str = r#"#include <time.h>
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
__attribute__((noinline)) static unsigned mix(unsigned x) {
    for (int i = 0; i < 1000; i++) x = x * 2654435761u + 7;
    return x;
}
__attribute__((noinline)) static unsigned spin(double seconds) {
    double end = now() + seconds;
    unsigned x = 1;
    while (now() < end) x = mix(x);
    return x;
}
int main(void) { return spin(0.0005) == 42; }
"#;

struct Case {
    what: &'static str,
    /// The program and its arguments.
    command: Vec<String>,
    /// Its thread name (the file name, cut to 15 bytes).
    comm: String,
}

/// What one profiler made of one run.
struct Outcome {
    execs: u64,
    seconds: f64,
    samples: u64,
    named: u64,
    /// Processes that exited before they were read (bellows' summary).
    gone: Option<u64>,
    /// The profiler's CPU seconds (perf: record and script).
    cpu: f64,
}

impl Outcome {
    fn share(&self) -> f64 {
        self.named as f64 / self.samples.max(1) as f64
    }
}

pub fn short_lived(root: &Path, seconds: u64, runs: usize, bellows: Option<PathBuf>) -> Result<()> {
    let bellows = match bellows {
        Some(path) => path,
        None => crate::build_release(root)?,
    };
    let dir = root.join("target/bench/short-lived");
    std::fs::create_dir_all(&dir)?;
    let cpuburn = crate::build_fixtures(root)?
        .into_iter()
        .find(|p| p.ends_with("default/cpuburn"))
        .context("no cpuburn fixture built")?;
    let spin = dir.join("spin1ms");
    let source = dir.join("spin1ms.c");
    std::fs::write(&source, SPIN_C)?;
    run(Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&spin)
        .arg(&source))?;
    let cases = [
        Case {
            what: "Go cpuburn, 3 ms",
            command: vec![
                cpuburn.display().to_string(),
                "-mode".into(),
                "cpu".into(),
                "-duration".into(),
                "3ms".into(),
            ],
            comm: "cpuburn".into(),
        },
        Case {
            what: "C spin, 1 ms",
            command: vec![spin.display().to_string()],
            comm: "spin1ms".into(),
        },
    ];
    println!(
        "\nshort-lived processes: 4 loops exec the program as fast as they go for {seconds} s, \
         {runs} run(s) per profiler, 97 Hz; named = innermost user frame has a function name"
    );
    for case in &cases {
        for run in 0..runs {
            let ours = profile_bellows(&bellows, &dir, case, seconds)
                .with_context(|| format!("bellows on {}", case.what))?;
            let peer = profile_perf(&dir, case, seconds)
                .with_context(|| format!("perf on {}", case.what))?;
            for (who, o) in [("bellows", &ours), ("perf -g", &peer)] {
                println!(
                    "  {:<18} run {}  {:<8} {:>6.0} execs/s  {:>5} samples  {:>6.2}% named  \
                     {:>5.2} s CPU{}",
                    case.what,
                    run + 1,
                    who,
                    o.execs as f64 / o.seconds,
                    o.samples,
                    100.0 * o.share(),
                    o.cpu,
                    o.gone
                        .map(|g| format!("  ({g} processes gone before they were read)"))
                        .unwrap_or_default(),
                );
            }
        }
    }
    Ok(())
}

/// The loops, as a shell script: runs `command` in four loops for `seconds`, then prints the
/// number of execs.
fn driver(dir: &Path, command: &[String], seconds: u64) -> Result<PathBuf> {
    let script = dir.join("loops.sh");
    let quoted: Vec<String> = command.iter().map(|a| format!("'{a}'")).collect();
    std::fs::write(
        &script,
        format!(
            "end=$((SECONDS+{seconds}))\n\
             for i in 1 2 3 4; do (n=0; while [ $SECONDS -lt $end ]; do {} >/dev/null 2>&1; \
             n=$((n+1)); done; echo $n > {dir}/count.$i) & done\n\
             wait\n\
             cat {dir}/count.* | awk '{{s += $1}} END {{print s}}' > {dir}/execs\n",
            quoted.join(" "),
            dir = dir.display()
        ),
    )?;
    Ok(script)
}

fn execs(dir: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(dir.join("execs"))?;
    text.trim().parse().context("the loops' exec count")
}

/// Runs `profiler` (which profiles the whole machine for `seconds` + 2 s) with the loops
/// started a second into it; returns the profiler's CPU seconds, the loops' exec count and what
/// the profiler printed.
fn with_loops(
    dir: &Path,
    case: &Case,
    seconds: u64,
    profiler: &mut Command,
) -> Result<(f64, u64, String)> {
    let script = driver(dir, &case.command, seconds)?;
    // To a file: a pipe nobody reads until the end could fill and stall the profiler.
    let log_path = dir.join("profiler.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = profiler
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the profiler")?;
    std::thread::sleep(Duration::from_secs(1));
    run(Command::new("bash").arg(&script))?;
    let (code, (cpu, _)) = crate::overhead::wait4(&mut child)?;
    let printed = std::fs::read_to_string(&log_path)?;
    ensure!(code == 0, "the profiler failed ({code}):\n{printed}");
    Ok((cpu, execs(dir)?, printed))
}

fn profile_bellows(bellows: &Path, dir: &Path, case: &Case, seconds: u64) -> Result<Outcome> {
    let folded = dir.join("bellows.folded");
    let (cpu, execs, summary) = with_loops(
        dir,
        case,
        seconds,
        Command::new(bellows)
            .arg("record")
            .arg("-d")
            .arg(format!("{}s", seconds + 2))
            .arg("-o")
            .arg(dir.join("bellows.pb.gz"))
            .arg("--folded")
            .arg(&folded),
    )?;
    let (samples, named) = count_folded(&std::fs::read_to_string(&folded)?, &case.comm);
    let gone = summary
        .split("processes gone before their mappings were read: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.trim_end_matches(';').parse().ok());
    Ok(Outcome {
        execs,
        seconds: seconds as f64,
        samples,
        named,
        gone,
        cpu,
    })
}

fn profile_perf(dir: &Path, case: &Case, seconds: u64) -> Result<Outcome> {
    let data = dir.join("perf.data");
    let (record_cpu, execs, _) = with_loops(
        dir,
        case,
        seconds,
        Command::new("perf")
            .args(["record", "-a", "-F", "97", "-g", "-q", "-o"])
            .arg(&data)
            .args(["--", "sleep"])
            .arg((seconds + 2).to_string()),
    )?;
    let mut script = Command::new("perf")
        .args(["script", "-F", "comm,ip,sym", "-i"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut text = String::new();
    if let Some(mut pipe) = script.stdout.take() {
        pipe.read_to_string(&mut text)?;
    }
    let (code, (script_cpu, _)) = crate::overhead::wait4(&mut script)?;
    ensure!(code == 0, "perf script failed ({code})");
    let (samples, named) = count_perf_script(&text, &case.comm);
    Ok(Outcome {
        execs,
        seconds: seconds as f64,
        samples,
        named,
        gone: None,
        cpu: record_cpu + script_cpu,
    })
}

/// (samples, named) of thread `comm` in folded stacks (root first, the thread name as root,
/// kernel frames marked `_[k]`).
fn count_folded(text: &str, comm: &str) -> (u64, u64) {
    let (mut samples, mut named) = (0, 0);
    for line in text.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        let mut frames = stack.split(';');
        if frames.next() != Some(comm) {
            continue;
        }
        samples += count;
        let innermost_user = frames.rfind(|f| !f.ends_with("_[k]") && *f != "[truncated]");
        // An address without a symbol shows as `file+0xoffset`.
        if innermost_user.is_none_or(|f| f != "[unknown]" && !f.contains("+0x")) {
            named += count;
        }
    }
    (samples, named)
}

/// (samples, named) of thread `comm` in `perf script -F comm,ip,sym` output: a header line
/// with the thread name, then one `ip sym` line per frame, leaf first, then a blank line.
fn count_perf_script(text: &str, comm: &str) -> (u64, u64) {
    let (mut samples, mut named) = (0, 0);
    for block in text.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            continue;
        };
        if header.trim() != comm {
            continue;
        }
        samples += 1;
        // Kernel addresses are above the canonical hole.
        let innermost_user = lines.find_map(|l| {
            let (ip, sym) = l.trim().split_once(' ')?;
            let ip = u64::from_str_radix(ip, 16).ok()?;
            (ip < 0x8000_0000_0000_0000).then_some(sym.trim())
        });
        if innermost_user.is_none_or(|sym| sym != "[unknown]") {
            named += 1;
        }
    }
    (samples, named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_named_samples_of_one_thread() {
        let folded = "spin;main;spin_[k] 3\n\
                      spin;[unknown];do_exit_[k] 2\n\
                      spin;[unknown];main;[truncated] 1\n\
                      spin;exc_page_fault_[k] 4\n\
                      spin;main;ld.so+0x1ab70;do_exit_[k] 5\n\
                      bash;[unknown] 9\n";
        assert_eq!(count_folded(folded, "spin"), (15, 8));
        let script = "spin\n\tffffffff81000000 do_exit\n\t401000 [unknown]\n\n\
                      spin\n\t401000 main\n\n\
                      bash\n\t401000 [unknown]\n";
        assert_eq!(count_perf_script(script, "spin"), (2, 1));
    }

    #[test]
    fn the_driver_quotes_its_command() {
        let dir = std::env::temp_dir().join(format!("xtask-short-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = driver(&dir, &["/bin/true".into()], 0).unwrap();
        let out = Command::new("bash").arg(&script).output().unwrap();
        assert!(out.status.success());
        assert_eq!(execs(&dir).unwrap(), 0, "a zero-second run execs nothing");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
