//! One HTTP request per profile, to the push API or the legacy ingest endpoint, and what the
//! answer means for retrying.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use prost::Message;
use reqwest::{header, StatusCode};

use super::{
    config::{Api, PushConfig, UrlError},
    proto, Item,
};

/// Error bodies are read up to this many bytes: a misbehaving server cannot make us buffer more.
const MAX_ERROR_BODY: usize = 16 << 10;

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    Delivered,
    /// Worth retrying: 5xx, 408, 429, connection errors, timeouts, a secret file not readable
    /// (yet).
    Retry(SendError),
    /// The server refused the profile itself; sending it again cannot help.
    Rejected(SendError),
}

/// Why one profile was not delivered (this time).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A secret file named by the configuration (`key`) cannot be read; a mounted secret may
    /// still appear.
    #[error("{key} {}: {source}", path.display())]
    Secret {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No answer: connection refused, timeout, TLS... (reqwest's message names the URL).
    #[error("{}", describe(.0))]
    Transport(#[source] reqwest::Error),
    /// The server answered with an error status; `message` is its explanation, bounded.
    #[error("HTTP {} from {url}: {message}", status.as_u16())]
    Status {
        url: reqwest::Url,
        status: StatusCode,
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("building the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("pyroscope.url: required")]
    MissingUrl,
    #[error("pyroscope.url: {url:?}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: UrlError,
    },
}

pub struct Client {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    api: Api,
    cfg: PushConfig,
    /// The bearer token file's last contents and modification time.
    token_cache: Mutex<Option<(SystemTime, String)>>,
}

impl Client {
    pub fn new(cfg: &PushConfig) -> Result<Self, ClientError> {
        // reqwest is built without a default crypto provider; install ring's once. A provider
        // already installed (by us or another library) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout.min(std::time::Duration::from_secs(10)))
                .user_agent(concat!("bellows/", env!("CARGO_PKG_VERSION")))
        };
        let plain_http = cfg
            .url
            .as_deref()
            .is_some_and(|u| u.trim_start().starts_with("http://"));
        let http = match builder().build() {
            Ok(http) => http,
            // A host or image without CA certificates (a bare node, a scratch container): the
            // TLS verifier cannot be built, yet a plain-HTTP server needs none.
            Err(err) if plain_http => {
                tracing::warn!(
                    "no usable system CA certificates ({err}); fine for this http:// URL, an \
                     https:// one would need /etc/ssl/certs"
                );
                builder()
                    .tls_certs_only([])
                    .build()
                    .map_err(ClientError::Build)?
            }
            Err(err) => return Err(ClientError::Build(err)),
        };
        let base = cfg.url.as_deref().ok_or(ClientError::MissingUrl)?;
        let base = base.trim_end_matches('/');
        let path = match cfg.api {
            Api::Push => "/push.v1.PusherService/Push",
            Api::Ingest => "/ingest",
        };
        let endpoint = reqwest::Url::parse(&format!("{base}{path}")).map_err(|source| {
            ClientError::BadUrl {
                url: base.to_string(),
                source,
            }
        })?;
        Ok(Client {
            http,
            endpoint,
            api: cfg.api,
            cfg: cfg.clone(),
            token_cache: Mutex::new(None),
        })
    }

    /// Sends one profile.
    pub async fn send(&self, item: &Item) -> Outcome {
        let request = match self.api {
            Api::Push => self.push_request(item),
            Api::Ingest => self.ingest_request(item),
        };
        let request = match self.authorize(request) {
            Ok(r) => r,
            // A secret file that cannot be read may appear later (a mounted secret).
            Err(err) => return Outcome::Retry(err),
        };
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(err) => return Outcome::Retry(SendError::Transport(err)),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - body.len())]);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
        let err = SendError::Status {
            url: self.endpoint.clone(),
            status,
            message: error_message(&body),
        };
        if retryable(status) {
            Outcome::Retry(err)
        } else {
            Outcome::Rejected(err)
        }
    }

    fn push_request(&self, item: &Item) -> reqwest::RequestBuilder {
        let body = proto::PushRequest {
            series: vec![proto::RawProfileSeries {
                labels: item
                    .labels
                    .iter()
                    .map(|(name, value)| proto::LabelPair {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: vec![proto::RawSample {
                    raw_profile: item.profile.clone(),
                    id: item.id.to_string(),
                }],
            }],
        }
        .encode_to_vec();
        self.http
            .post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/proto")
            .header("Connect-Protocol-Version", "1")
            .body(body)
    }

    fn ingest_request(&self, item: &Item) -> reqwest::RequestBuilder {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("name", &ingest_name(&item.labels))
            .append_pair("from", &secs(item.from).to_string())
            .append_pair(
                "until",
                &secs(item.until).max(secs(item.from) + 1).to_string(),
            )
            .append_pair("format", "pprof")
            .append_pair("spyName", "bellows");
        self.http
            .post(url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(item.profile.clone())
    }

    fn authorize(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        if let Some(tenant) = &self.cfg.tenant_id {
            req = req.header("X-Scope-OrgID", tenant);
        }
        for (name, value) in &self.cfg.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if let Some(auth) = &self.cfg.basic_auth {
            let password = match (&auth.password, &auth.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(path)) => read_secret("password-file", path)?,
                (None, None) => String::new(),
            };
            req = req.basic_auth(&auth.username, Some(password));
        }
        if let Some(token) = &self.cfg.bearer_token {
            req = req.bearer_auth(token);
        } else if let Some(path) = &self.cfg.bearer_token_file {
            req = req.bearer_auth(self.token_from_file(path)?);
        }
        Ok(req)
    }

    /// The token file's contents, re-read only when its modification time changes.
    fn token_from_file(&self, path: &Path) -> Result<String, SendError> {
        const KEY: &str = "bearer-token-file";
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|source| SendError::Secret {
                key: KEY,
                path: path.to_path_buf(),
                source,
            })?;
        let mut cache = self.token_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, token)) = cache.as_ref() {
            if *seen == mtime {
                return Ok(token.clone());
            }
        }
        let token = read_secret(KEY, path)?;
        *cache = Some((mtime, token.clone()));
        Ok(token)
    }
}

/// A secret file's first line; bounded, since the path is configuration, not ours. `key` is the
/// setting that names the file.
fn read_secret(key: &'static str, path: &Path) -> Result<String, SendError> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 << 10).read_to_string(&mut text))
        .map_err(|source| SendError::Secret {
            key,
            path: path.to_path_buf(),
            source,
        })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The `message` of a Connect error body, else the body as text (one line, bounded).
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ConnectError {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<ConnectError>(body) {
        if let Some(m) = e.message {
            return match e.code {
                Some(c) => format!("{c}: {m}"),
                None => m,
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(300).collect()
}

fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// `service{k=v,...}` as `/ingest` takes it: the service name, then the other labels; characters
/// that would end a value (`,` `}` `=` `{`) are replaced.
pub fn ingest_name(labels: &[(String, String)]) -> String {
    let clean = |s: &str| s.replace([',', '}', '{', '='], "_");
    let service = labels
        .iter()
        .find(|(n, _)| n == "service_name")
        .map_or("unknown_service", |(_, v)| v.as_str());
    let rest: Vec<String> = labels
        .iter()
        .filter(|(n, _)| n != "service_name" && n != "__name__")
        .map(|(n, v)| format!("{}={}", clean(n), clean(v)))
        .collect();
    format!("{}{{{}}}", clean(service), rest.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_names_escape_value_terminators() {
        let labels = vec![
            ("__name__".to_string(), "process_cpu".to_string()),
            ("service_name".to_string(), "ebpf/shop/web".to_string()),
            ("pod".to_string(), "web-1,x}".to_string()),
        ];
        assert_eq!(ingest_name(&labels), "ebpf/shop/web{pod=web-1_x_}");
    }

    #[test]
    fn errors_name_the_setting_the_file_and_the_url() {
        let err = read_secret("password-file", Path::new("/nonexistent/secret")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("password-file /nonexistent/secret: "),
            "{err}"
        );
        let no_url = Client::new(&PushConfig::default()).err().unwrap();
        assert!(matches!(no_url, ClientError::MissingUrl));
        assert_eq!(no_url.to_string(), "pyroscope.url: required");
        let status = SendError::Status {
            url: reqwest::Url::parse("http://p:4040/ingest").unwrap(),
            status: StatusCode::UNAUTHORIZED,
            message: "no tenant".into(),
        };
        assert_eq!(
            status.to_string(),
            "HTTP 401 from http://p:4040/ingest: no tenant"
        );
    }

    #[test]
    fn connect_errors_are_summarized() {
        assert_eq!(
            error_message(br#"{"code":"invalid_argument","message":"invalid metric name"}"#),
            "invalid_argument: invalid metric name"
        );
        assert_eq!(error_message(b"upstream\n  down"), "upstream down");
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retryable(StatusCode::BAD_REQUEST));
        assert!(!retryable(StatusCode::UNAUTHORIZED));
    }
}
