//! Talking to a daemon: connection settings shared by every client command, and one HTTP
//! helper that turns the daemon's JSON errors into `ClientError` with its code and message.
//!
//! Precedence, highest first: `--url`/`--api-key` flags, then `STREAMCTL_URL` /
//! `STREAMCTL_API_KEY`, then the defaults: `http://127.0.0.1:8080` and the key file that
//! zero-config `streamctl serve` writes (see `streamgate::keyfile`).

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use streamgate::keyfile;
use streamgate::wire::{ErrorBody, ErrorObject};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;

/// Where the daemon is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Daemon URL.
    #[arg(long, env = "STREAMCTL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key [default: the key file written by `streamctl serve`].
    #[arg(long, env = "STREAMCTL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// An error answered by the daemon, or a failure to reach it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{code}: {message} (HTTP {status})")]
    Server {
        status: StatusCode,
        code: String,
        message: String,
        /// From `Retry-After` on 429.
        retry_after: Option<Duration>,
        /// On 503 from a send: how many leading records were stored.
        acknowledged: Option<usize>,
    },
    /// The request never reached the daemon (safe to retry: nothing was stored).
    #[error("cannot connect to {url} ({cause}); is `streamctl serve` running there?")]
    Connect {
        url: String,
        /// The innermost cause only (reqwest's chain repeats the URL at every level).
        cause: String,
    },
    /// The request may or may not have reached the daemon.
    #[error("request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The daemon answered success with a body this streamctl cannot read (a version skew).
    #[error("unreadable answer from {url}: {message}")]
    Unreadable { url: String, message: String },
}

/// A daemon client.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(args: &ConnectionArgs) -> anyhow::Result<Self> {
        let key = match &args.api_key {
            Some(k) => k.clone(),
            None => {
                let path = keyfile::default_path()
                    .context("no API key: pass --api-key or set STREAMCTL_API_KEY")?;
                keyfile::read(&path).with_context(|| {
                    format!(
                        "no API key: pass --api-key, set STREAMCTL_API_KEY, or start `streamctl serve` \
                         once so it creates {}",
                        path.display()
                    )
                })?
            }
        };
        let base = args.url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            anyhow::bail!("--url: `{}` must start with http:// or https://", args.url);
        }
        Ok(Self {
            base,
            key,
            http: reqwest::Client::new(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A WebSocket handshake request for `path`, authenticated.
    pub fn ws_request(&self, path: &str) -> anyhow::Result<Request> {
        let url = match self.base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}{path}"),
            None => format!("ws://{}{path}", self.base.trim_start_matches("http://")),
        };
        let mut req = url.into_client_request()?;
        req.headers_mut().insert(
            "x-api-key",
            self.key.parse().context("API key is not a valid header")?,
        );
        Ok(req)
    }

    /// Sends a request and returns the body of a success as `T` (a `wire` type), or the
    /// daemon's error. Over a rate limit (429 `rate_limited`), or while the daemon starts
    /// (503 `not_ready`), it waits as `Retry-After` says and tries again, for at most
    /// `PATIENCE` in all, saying so once on stderr.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<T, ClientError> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match self.call_once(method.clone(), path, body.clone()).await {
                Err(ClientError::Server {
                    code, retry_after, ..
                }) if (code == "rate_limited" || code == "not_ready")
                    && tokio::time::Instant::now()
                        + retry_after.unwrap_or(Duration::from_secs(1))
                        < deadline =>
                {
                    let wait = retry_after.unwrap_or(Duration::from_secs(1));
                    waiting_notice(&code, wait);
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let mut req = self
            .http
            .request(method, &url)
            .header("x-api-key", &self.key);
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req.send().await.map_err(|source| {
            if source.is_connect() {
                let mut cause: &dyn std::error::Error = &source;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                ClientError::Connect {
                    url: self.base.clone(),
                    cause: cause.to_string(),
                }
            } else {
                ClientError::Transport {
                    url: url.clone(),
                    source,
                }
            }
        })?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        if !status.is_success() {
            return Err(server_error(status, &bytes, retry_after));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unreadable {
            url,
            message: e.to_string(),
        })
    }
}

/// `Retry-After` in whole seconds, as the daemon sends it.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Longest a command waits on a rate limit or a starting daemon before giving up.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Says once per run that a command waits on the daemon (`code`: why).
pub fn waiting_notice(code: &str, wait: Duration) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let why = match code {
            "not_ready" => "the daemon is starting",
            "backlog_full" => "the daemon's processing backlog (limits.max_unprocessed_*)",
            _ => "the daemon's rate limit (rate_limits in its config)",
        };
        eprintln!(
            "streamctl: waiting on {why}; retrying in {:.1}s as it asks (Retry-After)",
            wait.as_secs_f64()
        );
    });
}

/// The daemon's error body (`wire::ErrorBody`) as a `ClientError`; a body that is not one
/// (from a proxy, say) becomes the message.
pub fn server_error(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> ClientError {
    let error = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => body.error,
        Err(_) => ErrorObject {
            code: "http_error".into(),
            message: String::from_utf8_lossy(body).into_owned(),
            acknowledged: None,
        },
    };
    ClientError::Server {
        status,
        code: error.code,
        message: error.message,
        retry_after,
        acknowledged: error.acknowledged,
    }
}
