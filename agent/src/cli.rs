//! Command-line flags. Scripts rely on these names: change them only with care.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bellows",
    version,
    about = "eBPF continuous profiler: samples every CPU, symbolizes Go and native stacks, writes pprof and flame graphs"
)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `debug` or `agent=debug`. Also RUST_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Profile this machine, some processes, cgroups, or a command, and write pprof (plus an
    /// optional flame graph and folded stacks).
    Record(RecordArgs),
    /// Turn addresses into functions, files and lines (Go, DWARF, ELF symbols, kernel), like
    /// llvm-symbolizer --inlining.
    Symbolize(SymbolizeArgs),
    /// Profile continuously (the DaemonSet agent): every collect interval, push one profile per
    /// Pod container or process group to Grafana Pyroscope.
    Run(RunArgs),
}

/// `bellows run` flags. Each also reads an environment variable; a flag beats its variable,
/// which beats the configuration file, which beats the default.
#[derive(Debug, Args, Default)]
#[command(after_help = "\
Examples:
  bellows run --pyroscope-url http://pyroscope:4040
  bellows run --config /etc/bellows/bellows.toml
  NODE_NAME=node-1 bellows run --kubeconfig ~/.kube/config --pyroscope-url http://localhost:4040")]
pub struct RunArgs {
    /// TOML configuration file (see deploy/configmap.yaml for every key).
    #[arg(long, value_name = "FILE", env = "BELLOWS_CONFIG")]
    pub config: Option<PathBuf>,

    /// Base URL of the Pyroscope server (push.v1.PusherService/Push is appended).
    #[arg(long, value_name = "URL", env = "BELLOWS_PYROSCOPE_URL")]
    pub pyroscope_url: Option<String>,

    /// This node's name, for the `node` label and the pod watch; default: the host name.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// kubeconfig for the pod watch; default: in-cluster configuration.
    #[arg(long, value_name = "PATH", env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// How often a profile per target is built and pushed, e.g. `15s`. Default 15 s.
    #[arg(long, value_name = "DURATION", env = "BELLOWS_COLLECT_INTERVAL", value_parser = parse_duration)]
    pub collect_interval: Option<Duration>,

    /// Samples per second on each CPU. Default 97.
    #[arg(short = 'F', long, value_name = "HZ", env = "BELLOWS_FREQUENCY")]
    pub frequency: Option<u64>,

    /// Where to serve /metrics and /healthz, e.g. `0.0.0.0:9464`; `off` disables it.
    #[arg(long, value_name = "ADDR", env = "BELLOWS_METRICS_ADDRESS")]
    pub metrics_address: Option<String>,

    /// Log format: `text` or `json`.
    #[arg(long, value_name = "FORMAT", env = "BELLOWS_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Processes outside Pods: `skip`, `systemd-unit` or `executable`.
    #[arg(long, value_name = "POLICY", env = "BELLOWS_OUTSIDE_PODS")]
    pub outside_pods: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  bellows symbolize --elf ./server 0x4a2f10 0x4a3000
  echo 0x4a2f10 | bellows symbolize --elf ./server --json
  bellows symbolize --pid 1234 0x7f3a12c0e5a0")]
#[command(group(clap::ArgGroup::new("source").required(true).args(["elf", "pid"])))]
pub struct SymbolizeArgs {
    /// ELF file whose virtual addresses are given (as `go tool addr2line` and
    /// `llvm-symbolizer --obj` take them).
    #[arg(long, value_name = "PATH")]
    pub elf: Option<PathBuf>,

    /// Live process whose absolute addresses are given.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Print one JSON array instead of text.
    #[arg(long)]
    pub json: bool,

    /// Hexadecimal addresses; read one per line from standard input when none are given.
    #[arg(value_name = "ADDR")]
    pub addresses: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  bellows record                                 whole system, 10 s, profile.pb.gz
  bellows record -d 30s --flamegraph flame.svg   30 s, also a flame graph
  bellows record -p 1234 -F 499                  one process at 499 Hz
  bellows record --cgroup /sys/fs/cgroup/unified/system.slice/nginx.service
  bellows record -- ./server --port 8080         run a command, profile it and its children")]
pub struct RecordArgs {
    /// Profile only this process (repeatable).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Profile only tasks in this cgroup v2 directory (repeatable).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,

    /// How long to record: `10`, `10s`, `500ms`, `2m`. Default 10 s, or until the command exits.
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Samples per second on each CPU.
    #[arg(short = 'F', long, value_name = "HZ", default_value_t = 97)]
    pub frequency: u64,

    /// Where to write the gzipped pprof profile.
    #[arg(
        short = 'o',
        long,
        value_name = "FILE",
        default_value = "profile.pb.gz"
    )]
    pub output: PathBuf,

    /// Also write an interactive flame graph (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<PathBuf>,

    /// Also write folded stacks (`frame;frame;... count`).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// Do not record kernel stacks.
    #[arg(long)]
    pub no_kernel: bool,

    /// Walk user stacks by frame pointers only, without unwind tables (as before tables
    /// existed; for comparison).
    #[arg(long)]
    pub frame_pointers: bool,

    /// Write every step of the unwinder's walks of one process to FILE, a line each: the
    /// process given with --pid (the first), or the command. For debugging stacks that end
    /// early; off, the unwinder still stores each step in its per-CPU state (32 bytes) and
    /// compares once per run.
    #[arg(long, value_name = "FILE", conflicts_with = "frame_pointers")]
    pub trace_unwind: Option<PathBuf>,

    /// How many functions the summary's top table lists.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// Command to run and profile, with its children, until it exits.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Parses `10`, `10s`, `1.5s`, `500ms`, `2m`, `1h`. A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10, 10s, 500ms, 2m"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?}: use ms, s, m or h"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 366.0 * 86400.0 {
        return Err(format!(
            "duration {s:?} out of range: must be positive and at most a year"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn record_flags_parse() {
        let cli = Cli::try_parse_from([
            "bellows",
            "record",
            "-p",
            "1",
            "--pid",
            "2",
            "--cgroup",
            "/x",
            "-d",
            "3s",
            "-F",
            "49",
            "-o",
            "o.pb.gz",
            "--flamegraph",
            "f.svg",
            "--folded",
            "f.txt",
            "--no-kernel",
            "--",
            "cmd",
            "--flag",
        ])
        .unwrap();
        let Command::Record(r) = cli.command else {
            panic!("not record")
        };
        assert_eq!(r.pids, vec![1, 2]);
        assert_eq!(r.cgroups, vec![PathBuf::from("/x")]);
        assert_eq!(r.duration, Some(Duration::from_secs(3)));
        assert_eq!(r.frequency, 49);
        assert_eq!(r.output, PathBuf::from("o.pb.gz"));
        assert!(r.no_kernel);
        assert_eq!(
            r.command,
            vec![OsString::from("cmd"), OsString::from("--flag")]
        );
    }

    #[test]
    fn record_defaults() {
        let cli = Cli::try_parse_from(["bellows", "record"]).unwrap();
        let Command::Record(r) = cli.command else {
            panic!("not record")
        };
        assert_eq!(r.frequency, 97);
        assert_eq!(r.output, PathBuf::from("profile.pb.gz"));
        assert_eq!(r.duration, None);
        assert!(r.command.is_empty());
    }

    #[test]
    fn bad_pid_is_a_usage_error() {
        let err = Cli::try_parse_from(["bellows", "record", "-p", "abc"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn symbolize_needs_exactly_one_source() {
        assert!(Cli::try_parse_from(["bellows", "symbolize", "0x1"]).is_err());
        assert!(Cli::try_parse_from(["bellows", "symbolize", "--elf", "x", "--pid", "1"]).is_err());
        let cli =
            Cli::try_parse_from(["bellows", "symbolize", "--elf", "x", "--json", "0x1"]).unwrap();
        let Command::Symbolize(s) = cli.command else {
            panic!("not symbolize")
        };
        assert!(s.json);
        assert_eq!(s.addresses, vec!["0x1".to_string()]);
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "bellows",
            "run",
            "--config",
            "c.toml",
            "--pyroscope-url",
            "http://p:4040",
            "--node-name",
            "n1",
            "--kubeconfig",
            "k",
            "--collect-interval",
            "10s",
            "-F",
            "49",
            "--metrics-address",
            "127.0.0.1:9464",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.config, Some(PathBuf::from("c.toml")));
        assert_eq!(r.pyroscope_url.as_deref(), Some("http://p:4040"));
        assert_eq!(r.node_name.as_deref(), Some("n1"));
        assert_eq!(r.collect_interval, Some(Duration::from_secs(10)));
        assert_eq!(r.frequency, Some(49));
        assert_eq!(r.metrics_address.as_deref(), Some("127.0.0.1:9464"));
    }

    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
