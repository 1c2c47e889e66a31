//! The `[pyroscope]` table of bellows.toml.

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

/// Which endpoint profiles go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// `push.v1.PusherService/Push` (Connect, protobuf): Pyroscope 1.0 and later.
    #[default]
    Push,
    /// `/ingest?format=pprof`: older servers.
    Ingest,
}

/// HTTP basic authentication; the password inline or read from a file (re-read at every
/// request, so a rotated secret is picked up).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// Where and how profiles are pushed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PushConfig {
    /// Base URL of the server, e.g. `http://pyroscope.monitoring.svc:4040`.
    pub url: Option<String>,
    #[serde(default)]
    pub api: Api,
    /// Sent as `X-Scope-OrgID`.
    pub tenant_id: Option<String>,
    pub basic_auth: Option<BasicAuth>,
    pub bearer_token: Option<String>,
    /// Read when it changes (e.g. a projected service account token).
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per request.
    #[serde(default = "defaults::timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "defaults::min_backoff", deserialize_with = "duration")]
    pub min_backoff: Duration,
    #[serde(default = "defaults::max_backoff", deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// A profile older than this is dropped (and counted) instead of sent: the server rejects
    /// profiles more than an hour old.
    #[serde(default = "defaults::max_age", deserialize_with = "duration")]
    pub max_age: Duration,
    /// Memory cap of the send queue (gzipped profiles); the oldest go first when it is full.
    #[serde(default = "defaults::queue_max_bytes")]
    pub queue_max_bytes: usize,
}

mod defaults {
    use std::time::Duration;
    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn min_backoff() -> Duration {
        Duration::from_millis(500)
    }
    pub fn max_backoff() -> Duration {
        Duration::from_secs(300)
    }
    pub fn max_age() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn queue_max_bytes() -> usize {
        8 << 20
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            url: None,
            api: Api::default(),
            tenant_id: None,
            basic_auth: None,
            bearer_token: None,
            bearer_token_file: None,
            headers: BTreeMap::new(),
            timeout: defaults::timeout(),
            min_backoff: defaults::min_backoff(),
            max_backoff: defaults::max_backoff(),
            max_age: defaults::max_age(),
            queue_max_bytes: defaults::queue_max_bytes(),
        }
    }
}

impl fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConfig")
            .field("url", &self.url)
            .field("api", &self.api)
            .field("tenant_id", &self.tenant_id)
            .field("basic_auth", &self.basic_auth)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("bearer_token_file", &self.bearer_token_file)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_age", &self.max_age)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .finish()
    }
}

/// What `reqwest::Url::parse` fails with (the `url` crate's `ParseError`).
pub type UrlError = <reqwest::Url as std::str::FromStr>::Err;

/// A `[pyroscope]` value that is wrong; each message starts with the key.
#[derive(Debug, thiserror::Error)]
pub enum PushConfigError {
    #[error("pyroscope.url: required")]
    MissingUrl,
    #[error("pyroscope.url: {url:?} is not a URL ({source})")]
    NotAUrl {
        url: String,
        #[source]
        source: UrlError,
    },
    #[error("pyroscope.url: {url:?} must be http:// or https:// with a host")]
    NotHttp { url: String },
    #[error("pyroscope.basic-auth: set exactly one of password and password-file")]
    BasicAuthPassword,
    #[error("pyroscope: set at most one of bearer-token and bearer-token-file")]
    TwoBearerTokens,
    #[error("pyroscope: basic-auth and a bearer token exclude each other")]
    BasicAuthAndBearer,
    #[error("pyroscope.headers: {name:?} is not a header name")]
    HeaderName { name: String },
    #[error("pyroscope.headers.{name}: not a valid header value")]
    HeaderValue { name: String },
    #[error("pyroscope.min-backoff: larger than max-backoff")]
    Backoff,
    #[error("pyroscope.queue-max-bytes: {bytes} is too small: use at least {MIN_QUEUE_BYTES}")]
    QueueTooSmall { bytes: usize },
}

/// The smallest `queue-max-bytes`: a few profiles.
const MIN_QUEUE_BYTES: usize = 64 << 10;

impl PushConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), PushConfigError> {
        use PushConfigError as E;
        let url = self.url.as_deref().ok_or(E::MissingUrl)?;
        let parsed = reqwest::Url::parse(url).map_err(|source| E::NotAUrl {
            url: url.to_string(),
            source,
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(E::NotHttp {
                url: url.to_string(),
            });
        }
        if let Some(auth) = &self.basic_auth {
            if auth.password.is_some() == auth.password_file.is_some() {
                return Err(E::BasicAuthPassword);
            }
        }
        let bearer = self.bearer_token.is_some() || self.bearer_token_file.is_some();
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            return Err(E::TwoBearerTokens);
        }
        if bearer && self.basic_auth.is_some() {
            return Err(E::BasicAuthAndBearer);
        }
        for (name, value) in &self.headers {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| E::HeaderName { name: name.clone() })?;
            reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| E::HeaderValue { name: name.clone() })?;
        }
        if self.min_backoff > self.max_backoff {
            return Err(E::Backoff);
        }
        if self.queue_max_bytes < MIN_QUEUE_BYTES {
            return Err(E::QueueTooSmall {
                bytes: self.queue_max_bytes,
            });
        }
        Ok(())
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::cli::parse_duration(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PushConfig, String> {
        let cfg: PushConfig = toml::from_str(text).map_err(|e| e.message().to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn full_table_parses() {
        let cfg = parse(
            r#"
            url = "https://p.example:4040"
            api = "ingest"
            tenant-id = "team-a"
            basic-auth = { username = "u", password-file = "/run/secret" }
            headers = { "X-Extra" = "1" }
            timeout = "3s"
            min-backoff = "100ms"
            max-backoff = "30s"
            max-age = "10m"
            queue-max-bytes = 1048576
            "#,
        )
        .unwrap();
        assert_eq!(cfg.api, Api::Ingest);
        assert_eq!(cfg.timeout, Duration::from_secs(3));
        assert_eq!(cfg.max_age, Duration::from_secs(600));
        assert_eq!(cfg.queue_max_bytes, 1 << 20);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, want) in [
            ("url = \"ftp://x\"", "pyroscope.url"),
            ("url = \"not a url\"", "pyroscope.url"),
            (
                "url = \"http://x\"\nbasic-auth = { username = \"u\" }",
                "pyroscope.basic-auth",
            ),
            (
                "url = \"http://x\"\nbearer-token = \"t\"\nbearer-token-file = \"/t\"",
                "bearer-token",
            ),
            (
                "url = \"http://x\"\nheaders = { \"a b\" = \"1\" }",
                "pyroscope.headers",
            ),
            (
                "url = \"http://x\"\nqueue-max-bytes = 10",
                "queue-max-bytes",
            ),
            ("url = \"http://x\"\ntimeout = \"soon\"", "invalid duration"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let cfg =
            parse("url = \"http://x\"\nbasic-auth = { username = \"u\", password = \"hunter2\" }")
                .unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let cfg = parse("url = \"http://x\"\nbearer-token = \"sekrit\"").unwrap();
        assert!(!format!("{cfg:?}").contains("sekrit"));
    }
}
