//! `bellows run` configuration: a TOML file, environment variables and flags, validated once at
//! start. Precedence: flag, then environment variable (clap reads both), then file, then default.
//! Every problem is one line naming the key; the caller exits with code 2.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::targets::OutsidePods;
use crate::{
    cli::{parse_duration, RunArgs},
    k8s::KubernetesConfigError,
    push::PushConfigError,
};

pub const DEFAULT_FREQUENCY_HZ: u64 = 97;
pub const DEFAULT_COLLECT_INTERVAL: Duration = Duration::from_secs(15);
/// Pyroscope rejects profiles whose window is absurdly long or short; these bounds keep a window
/// meaningful and within the server's one-hour acceptance range.
const MIN_COLLECT_INTERVAL: Duration = Duration::from_secs(1);
const MAX_COLLECT_INTERVAL: Duration = Duration::from_secs(600);
/// The configuration file is ours, but bound it anyway: a wrong path (a device, a huge log) must
/// not be read whole.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// Kernel map sizes (`[maps]`); 0 keeps the default.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MapSizes {
    #[serde(default)]
    pub counts_entries: u32,
    #[serde(default)]
    pub stack_entries: u32,
    /// Rows of the unwind-table array shared by every binary (8 bytes each).
    #[serde(default)]
    pub unwind_rows: u32,
}

/// Symbolization bounds (`[symbolizer]`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SymbolizerConfig {
    /// DWARF larger than this is not used for a binary (names then come from its ELF symbols):
    /// symbolizing a binary with hundreds of MB of debug information costs about as much
    /// memory, and binaries in containers are anyone's.
    #[serde(default = "default_max_dwarf_bytes")]
    pub max_dwarf_bytes: u64,
    /// DWARF loaded across all binaries: beyond it the least recently used binaries' DWARF is
    /// released (built again when one of their addresses needs it).
    #[serde(default = "default_dwarf_budget")]
    pub dwarf_budget: u64,
}

fn default_max_dwarf_bytes() -> u64 {
    64 << 20
}

fn default_dwarf_budget() -> u64 {
    crate::resolve::DWARF_BUDGET
}

impl Default for SymbolizerConfig {
    fn default() -> Self {
        SymbolizerConfig {
            max_dwarf_bytes: default_max_dwarf_bytes(),
            dwarf_budget: default_dwarf_budget(),
        }
    }
}

/// The file, as written. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    frequency: Option<u64>,
    collect_interval: Option<String>,
    node_name: Option<String>,
    metrics_address: Option<String>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    kernel_stacks: Option<bool>,
    unwind_tables: Option<bool>,
    outside_pods: Option<OutsidePods>,
    #[serde(default)]
    maps: MapSizes,
    #[serde(default)]
    symbolizer: SymbolizerConfig,
    #[serde(default)]
    pyroscope: crate::push::PushConfig,
    #[serde(default)]
    kubernetes: crate::k8s::KubernetesConfig,
}

/// A validated `run` configuration.
#[derive(Debug)]
pub struct RunConfig {
    pub frequency_hz: u64,
    pub collect_interval: Duration,
    pub node_name: String,
    /// None: no metrics endpoint.
    pub metrics_address: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// tracing filter; the `--log` flag and RUST_LOG take precedence.
    pub log_level: Option<String>,
    pub kernel_stacks: bool,
    /// Walk user stacks with unwind tables (else frame pointers only).
    pub unwind_tables: bool,
    pub outside_pods: OutsidePods,
    pub maps: MapSizes,
    pub symbolizer: SymbolizerConfig,
    pub pyroscope: crate::push::PushConfig,
    pub kubernetes: crate::k8s::KubernetesConfig,
}

/// What is wrong with the configuration, in one line naming the key or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: larger than {MAX_CONFIG_BYTES} bytes; is this the configuration file?", path.display())]
    TooLarge { path: PathBuf },
    /// Not TOML, an unknown key, a wrong type, or a value refused as it was read.
    #[error("{}: {source}", path.display())]
    Syntax {
        path: PathBuf,
        #[source]
        source: SyntaxError,
    },
    #[error(
        "frequency: {hz} is out of range: use 1 to {max} Hz (kernel.perf_event_max_sample_rate)"
    )]
    Frequency { hz: u64, max: u64 },
    #[error("collect-interval: {0:?} is out of range: use 1s to 10m")]
    CollectInterval(Duration),
    #[error("node-name: must not be empty")]
    EmptyNodeName,
    #[error(
        "metrics-address: {value:?} is not an address:port ({source}); use e.g. 0.0.0.0:9464 or off"
    )]
    MetricsAddress {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error(
        "pyroscope.url: required: set --pyroscope-url, BELLOWS_PYROSCOPE_URL or [pyroscope] url"
    )]
    NoPyroscopeUrl,
    /// A value its parser refused (a duration, a log format, an outside-pods policy); the
    /// parser's message says why.
    #[error("{key}: {reason}")]
    Value { key: &'static str, reason: String },
    #[error(transparent)]
    Pyroscope(#[from] PushConfigError),
    #[error(transparent)]
    Kubernetes(#[from] KubernetesConfigError),
}

/// A TOML error as one line: the line it is on (when known) and the parser's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

impl RunConfig {
    /// Reads the file named by `--config`/`BELLOWS_CONFIG` (if any) and merges the flags.
    pub fn from_args(args: RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    fn merge(args: RunArgs, file: FileConfig) -> Result<Self, ConfigError> {
        let value = |key: &'static str| move |reason: String| ConfigError::Value { key, reason };
        let max_rate = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100_000);
        let frequency_hz = args
            .frequency
            .or(file.frequency)
            .unwrap_or(DEFAULT_FREQUENCY_HZ);
        if frequency_hz == 0 || frequency_hz > max_rate {
            return Err(ConfigError::Frequency {
                hz: frequency_hz,
                max: max_rate,
            });
        }
        let collect_interval = match (args.collect_interval, &file.collect_interval) {
            (Some(d), _) => d,
            (None, Some(s)) => parse_duration(s).map_err(value("collect-interval"))?,
            (None, None) => DEFAULT_COLLECT_INTERVAL,
        };
        if !(MIN_COLLECT_INTERVAL..=MAX_COLLECT_INTERVAL).contains(&collect_interval) {
            return Err(ConfigError::CollectInterval(collect_interval));
        }
        let node_name = match args.node_name.or(file.node_name) {
            Some(n) if n.trim().is_empty() => return Err(ConfigError::EmptyNodeName),
            Some(n) => n,
            None => hostname(),
        };
        let metrics_address = match args.metrics_address.or(file.metrics_address) {
            None => Some(SocketAddr::from(([0, 0, 0, 0], 9464))),
            Some(a) if a == "off" => None,
            Some(a) => {
                Some(
                    a.parse::<SocketAddr>()
                        .map_err(|source| ConfigError::MetricsAddress {
                            value: a.clone(),
                            source,
                        })?,
                )
            }
        };
        let log_format = match args.log_format {
            Some(s) => s.parse().map_err(value("log-format"))?,
            None => file.log_format.unwrap_or_default(),
        };
        let outside_pods = match args.outside_pods {
            Some(s) => s.parse().map_err(value("outside-pods"))?,
            None => file.outside_pods.unwrap_or_default(),
        };
        let mut pyroscope = file.pyroscope;
        if let Some(url) = args.pyroscope_url {
            pyroscope.url = Some(url);
        }
        if pyroscope.url.is_none() {
            return Err(ConfigError::NoPyroscopeUrl);
        }
        pyroscope.validate()?;
        let mut kubernetes = file.kubernetes;
        if let Some(path) = args.kubeconfig {
            kubernetes.kubeconfig = Some(path);
        }
        kubernetes.validate()?;
        Ok(RunConfig {
            frequency_hz,
            collect_interval,
            node_name,
            metrics_address,
            log_format,
            log_level: file.log_level,
            kernel_stacks: file.kernel_stacks.unwrap_or(true),
            unwind_tables: file.unwind_tables.unwrap_or(true),
            outside_pods,
            maps: file.maps,
            symbolizer: file.symbolizer,
            pyroscope,
            kubernetes,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    use std::io::Read;
    let read = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    parse_file(&text).map_err(|source| ConfigError::Syntax {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses the TOML text; errors are one line with the line number.
fn parse_file(text: &str) -> Result<FileConfig, SyntaxError> {
    toml::from_str(text).map_err(|e: toml::de::Error| SyntaxError {
        line: e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
        message: e.message().trim().replace('\n', " "),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs {
            pyroscope_url: Some("http://127.0.0.1:4040".into()),
            ..RunArgs::default()
        }
    }

    #[test]
    fn defaults_need_only_a_url() {
        let cfg = RunConfig::merge(args(), FileConfig::default()).unwrap();
        assert_eq!(cfg.frequency_hz, 97);
        assert_eq!(cfg.collect_interval, Duration::from_secs(15));
        assert_eq!(cfg.metrics_address, Some("0.0.0.0:9464".parse().unwrap()));
        assert!(cfg.kernel_stacks);
        assert!(!cfg.node_name.is_empty());
        let err = RunConfig::merge(RunArgs::default(), FileConfig::default()).unwrap_err();
        assert!(matches!(err, ConfigError::NoPyroscopeUrl), "{err}");
        assert!(
            err.to_string().starts_with("pyroscope.url: required"),
            "{err}"
        );
    }

    #[test]
    fn flags_beat_the_file() {
        let file = parse_file(
            r#"
            frequency = 49
            collect-interval = "30s"
            node-name = "from-file"
            metrics-address = "off"
            log-format = "json"
            outside-pods = "skip"
            [pyroscope]
            url = "http://file:4040"
            "#,
        )
        .unwrap();
        let mut a = args();
        a.frequency = Some(19);
        a.node_name = Some("from-flag".into());
        let cfg = RunConfig::merge(a, file).unwrap();
        assert_eq!(cfg.frequency_hz, 19);
        assert_eq!(cfg.collect_interval, Duration::from_secs(30));
        assert_eq!(cfg.node_name, "from-flag");
        assert_eq!(cfg.metrics_address, None);
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.outside_pods, OutsidePods::Skip);
        assert_eq!(
            cfg.pyroscope.url.as_deref(),
            Some("http://127.0.0.1:4040"),
            "the flag's URL wins"
        );
    }

    #[test]
    fn bad_values_are_one_line_naming_the_key() {
        let cases: &[(&str, &str)] = &[
            ("frequency = 0", "frequency: 0 is out of range"),
            ("collect-interval = \"0.5s\"", "collect-interval:"),
            (
                "collect-interval = \"soon\"",
                "collect-interval: invalid duration",
            ),
            ("metrics-address = \"nowhere\"", "metrics-address:"),
            ("node-name = \" \"", "node-name: must not be empty"),
        ];
        for (text, want) in cases {
            let file = parse_file(text).unwrap();
            let err = RunConfig::merge(args(), file).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn errors_carry_the_file_and_the_table_they_come_from() {
        let err = read_file(Path::new("/nonexistent.toml")).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Read { path, .. } if path == Path::new("/nonexistent.toml")),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("/nonexistent.toml: "), "{err}");
        let mut a = args();
        a.pyroscope_url = Some("ftp://x".into());
        let err = RunConfig::merge(a, FileConfig::default()).unwrap_err();
        assert!(
            matches!(err, ConfigError::Pyroscope(PushConfigError::NotHttp { .. })),
            "{err:?}"
        );
        let file =
            parse_file("[pyroscope]\nurl = \"http://x\"\n[kubernetes]\nnamespaces = [\"A\"]\n")
                .unwrap();
        let err = RunConfig::merge(RunArgs::default(), file).unwrap_err();
        assert!(matches!(err, ConfigError::Kubernetes(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("kubernetes.namespaces: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_line() {
        let err = |text: &str| parse_file(text).unwrap_err();
        let e = err("frequency = 97\nfrequncy = 3\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = e.to_string();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(e.contains("frequncy"), "{e}");
        assert!(!e.contains('\n'));
        let e = err("frequency = \"fast\"").to_string();
        assert!(e.starts_with("line 1:"), "{e}");
        // The label selector is parsed once, as the file is read.
        let e = err("[kubernetes]\nlabel-selector = \"app in web\"\n").to_string();
        assert!(e.starts_with("line 2: kubernetes.label-selector: "), "{e}");
        let e = err("outside-pods = \"sometimes\"").to_string();
        assert!(e.contains("sometimes") || e.contains("variant"), "{e}");
    }

    #[test]
    fn the_shipped_configmap_parses() {
        let yaml = include_str!("../../../deploy/configmap.yaml");
        // The TOML is the block scalar under `bellows.toml: |`.
        let start = yaml.find("bellows.toml: |").expect("bellows.toml key") + 15;
        let body: String = yaml[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        let file = parse_file(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        RunConfig::merge(RunArgs::default(), file).unwrap();
    }
}
