//! `bellows`: parse flags, validate, hand over to the library, map errors to exit codes.

use std::{io::Write, process::ExitCode};

use agent::{
    cli::{Cli, Command},
    record::{self, RecordConfig},
};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run(args) = cli.command {
        return run(args, cli.log.as_deref());
    }
    init_logging(cli.log.as_deref(), "warn", false);
    match cli.command {
        Command::Record(args) => {
            let top = args.top;
            let cfg = match RecordConfig::from_args(args) {
                Ok(cfg) => cfg,
                Err(err) => {
                    eprintln!("bellows: {err}");
                    return ExitCode::from(2);
                }
            };
            let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_current_thread()) else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(record::record(cfg)) {
                Ok(report) => {
                    let summary = record::render_summary(&report, top);
                    // A closed pipe (e.g. `| head`) is not an error.
                    let _ = std::io::stdout().write_all(summary.as_bytes());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("bellows: {}", error_chain(&err));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Symbolize(args) => symbolize(args),
        Command::Run(_) => unreachable!("handled above"),
    }
}

/// `bellows run`: exit 2 for a bad configuration, 1 when the agent cannot start or fails, 0
/// after a clean shutdown (SIGTERM/SIGINT).
fn run(args: agent::cli::RunArgs, log: Option<&str>) -> ExitCode {
    use agent::run::config::{LogFormat, RunConfig};
    let cfg = match RunConfig::from_args(args) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("bellows: {err}");
            return ExitCode::from(2);
        }
    };
    let filter = log.map(str::to_string).or_else(|| cfg.log_level.clone());
    init_logging(filter.as_deref(), "info", cfg.log_format == LogFormat::Json);
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread().worker_threads(2))
    else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(agent::run::run(cfg)) {
        Ok(summary) => {
            tracing::info!(
                collections = summary.collections,
                pushed = summary.push.pushed,
                dropped = summary.push.dropped(),
                kernel_drops = %summary.kernel_drops,
                "stopped"
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bellows: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

fn symbolize(args: agent::cli::SymbolizeArgs) -> ExitCode {
    use agent::symbolize::{self as sym, SymbolizeError, Target};
    let target = match (args.elf, args.pid) {
        (Some(path), None) => Target::Elf(path),
        (None, Some(pid)) => Target::Pid(pid),
        _ => unreachable!("clap requires exactly one of --elf and --pid"),
    };
    let format = if args.json {
        sym::Format::Json
    } else {
        sym::Format::Text
    };
    let mut out = sym::AnswerWriter::new(std::io::BufWriter::new(std::io::stdout().lock()), format);
    let result = sym::read_addresses(&args.addresses)
        .and_then(|a| sym::symbolize_each(&target, &a, |addr, s| out.write(addr, &s)))
        .and_then(|()| out.finish().map(drop).map_err(SymbolizeError::Output));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped early (`| head`) is not an error, as in other Unix filters.
        Err(SymbolizeError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err @ SymbolizeError::BadAddress(_)) => {
            eprintln!("bellows: {err}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("bellows: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// "outer: inner: innermost", skipping repeats (thiserror messages often embed their source).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let msg = e.to_string();
        if !text.contains(&msg) {
            text.push_str(": ");
            text.push_str(&msg);
        }
        source = e.source();
    }
    text
}

/// Builds the async runtime, or says why it cannot in one line.
fn runtime(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(err) => {
            eprintln!("bellows: cannot start the async runtime: {err}");
            None
        }
    }
}

/// Logs to stderr. The filter comes from `--log`, else RUST_LOG, else `default`.
fn init_logging(filter: Option<&str>, default: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    use std::io::IsTerminal;
    // Colours only on a terminal: a DaemonSet's logs are files.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
