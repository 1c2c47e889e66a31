//! `bellows`: parse flags, validate, hand over to the library, map errors to exit codes.

use std::{error::Error, io::Write, process::ExitCode};

use agent::{
    cli::{Cli, Command},
    record::{self, RecordConfig},
};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = cli.log.as_deref();
    let result = match cli.command {
        Command::Record(args) => record(args, log),
        Command::Run(args) => run(args, log),
        Command::Symbolize(args) => symbolize(args, log),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// Why a command failed. Its exit code and how it is shown are decided here, for every command.
#[derive(Debug)]
enum Failure {
    /// The flags, the configuration or the input are wrong, so nothing was started: exit 2, one
    /// line.
    Usage(Box<dyn Error>),
    /// The work itself failed (the agent could not start, or failed while running): exit 1, the
    /// message with its causes.
    Failed(Box<dyn Error>),
}

impl Failure {
    fn report(self) -> ExitCode {
        match self {
            Failure::Usage(err) => {
                eprintln!("bellows: {err}");
                ExitCode::from(2)
            }
            Failure::Failed(err) => {
                eprintln!("bellows: {}", error_chain(err.as_ref()));
                ExitCode::FAILURE
            }
        }
    }
}

impl From<record::ConfigError> for Failure {
    fn from(err: record::ConfigError) -> Self {
        Failure::Usage(err.into())
    }
}

impl From<agent::run::config::ConfigError> for Failure {
    fn from(err: agent::run::config::ConfigError) -> Self {
        Failure::Usage(err.into())
    }
}

impl From<record::RecordError> for Failure {
    fn from(err: record::RecordError) -> Self {
        Failure::Failed(err.into())
    }
}

impl From<agent::run::RunError> for Failure {
    fn from(err: agent::run::RunError) -> Self {
        Failure::Failed(err.into())
    }
}

impl From<agent::symbolize::SymbolizeError> for Failure {
    fn from(err: agent::symbolize::SymbolizeError) -> Self {
        use agent::symbolize::SymbolizeError;
        match err {
            SymbolizeError::BadAddress(_) => Failure::Usage(err.into()),
            _ => Failure::Failed(err.into()),
        }
    }
}

/// The async runtime could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime: {0}")]
struct RuntimeError(#[source] std::io::Error);

impl From<RuntimeError> for Failure {
    fn from(err: RuntimeError) -> Self {
        Failure::Failed(err.into())
    }
}

fn record(args: agent::cli::RecordArgs, log: Option<&str>) -> Result<(), Failure> {
    init_logging(log, "warn", false);
    let top = args.top;
    let cfg = RecordConfig::from_args(args)?;
    let runtime = runtime(&mut tokio::runtime::Builder::new_current_thread())?;
    let report = runtime.block_on(record::record(cfg))?;
    let summary = record::render_summary(&report, top);
    // A closed pipe (e.g. `| head`) is not an error.
    let _ = std::io::stdout().write_all(summary.as_bytes());
    Ok(())
}

/// `bellows run`: exit 2 for a bad configuration, 1 when the agent cannot start or fails, 0
/// after a clean shutdown (SIGTERM/SIGINT).
fn run(args: agent::cli::RunArgs, log: Option<&str>) -> Result<(), Failure> {
    use agent::run::config::{LogFormat, RunConfig};
    let cfg = RunConfig::from_args(args)?;
    let filter = log.map(str::to_string).or_else(|| cfg.log_level.clone());
    init_logging(filter.as_deref(), "info", cfg.log_format == LogFormat::Json);
    let runtime = runtime(tokio::runtime::Builder::new_multi_thread().worker_threads(2))?;
    let summary = runtime.block_on(agent::run::run(cfg))?;
    tracing::info!(
        collections = summary.collections,
        pushed = summary.push.pushed,
        dropped = summary.push.dropped(),
        kernel_drops = %summary.kernel_drops,
        "stopped"
    );
    Ok(())
}

fn symbolize(args: agent::cli::SymbolizeArgs, log: Option<&str>) -> Result<(), Failure> {
    use agent::symbolize::{self as sym, SymbolizeError, Target};
    init_logging(log, "warn", false);
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
        // A reader that stopped early (`| head`) is not an error, as in other Unix filters.
        Err(SymbolizeError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

/// "outer: inner: innermost", skipping repeats (thiserror messages often embed their source).
fn error_chain(err: &dyn Error) -> String {
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

fn runtime(builder: &mut tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, RuntimeError> {
    builder.enable_all().build().map_err(RuntimeError)
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
