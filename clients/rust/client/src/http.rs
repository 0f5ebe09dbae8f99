//! One HTTP helper for every call: the base URL, the credential on every request, the
//! daemon's JSON errors as [`Error`], and patience: over a rate limit or while the daemon
//! starts it waits as `Retry-After` says and tries again, for at most [`PATIENCE`].

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use streamgate_wire::ErrorCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;

use crate::error::{retry_after, server_error, Error};
use crate::retry::Backoff;
use crate::Credential;

/// Longest a call waits on a rate limit or a starting daemon before it gives up.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Called once, the first time a call waits on the daemon, with why and for how long.
pub type WaitNotice = Arc<dyn Fn(&ErrorCode, Duration) + Send + Sync>;

/// The daemon's address and how to authenticate to it.
#[derive(Clone)]
pub struct Http {
    base: String,
    credential: Credential,
    client: reqwest::Client,
    pub(crate) notice: Option<WaitNotice>,
}

impl Http {
    pub fn new(url: &str, credential: Credential) -> Result<Self, Error> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(Error::Unreadable {
                url: url.to_string(),
                message: "the URL must start with http:// or https://".into(),
            });
        }
        Ok(Self {
            base,
            credential,
            client: reqwest::Client::new(),
            notice: None,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The credential's header, now (a token source is asked for a token).
    async fn auth(&self) -> Result<(&'static str, String), Error> {
        Ok(match &self.credential {
            Credential::ApiKey(key) => ("x-api-key", key.clone()),
            Credential::Token(token) => ("authorization", format!("Bearer {token}")),
            Credential::TokenSource(source) => {
                ("authorization", format!("Bearer {}", source().await?))
            }
        })
    }

    /// A WebSocket handshake request for `path`, authenticated.
    pub async fn ws_request(&self, path: &str) -> Result<Request, Error> {
        let url = match self.base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}{path}"),
            None => format!("ws://{}{path}", self.base.trim_start_matches("http://")),
        };
        let unreadable = |message: String| Error::Unreadable {
            url: url.clone(),
            message,
        };
        let mut req = url
            .clone()
            .into_client_request()
            .map_err(|e| unreadable(e.to_string()))?;
        let (name, value) = self.auth().await?;
        req.headers_mut().insert(
            name,
            value
                .parse()
                .map_err(|_| unreadable("the credential is not a valid header".into()))?,
        );
        Ok(req)
    }

    /// Sends a request and returns the body of a success as `T` (a `wire` type), or the
    /// daemon's error, waiting out a rate limit or a starting daemon.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<T, Error> {
        self.call_with(method, path, body, &[]).await
    }

    /// [`Self::call`] with extra headers (an `Idempotency-Key`).
    pub async fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Result<T, Error> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut backoff = Backoff::default();
        loop {
            match self
                .call_once(method.clone(), path, body.clone(), headers)
                .await
            {
                Err(Error::Server {
                    code: code @ (ErrorCode::RateLimited | ErrorCode::NotReady),
                    retry_after,
                    ..
                }) if tokio::time::Instant::now() + backoff.clone().pause(retry_after)
                    < deadline =>
                {
                    let wait = backoff.pause(retry_after);
                    if let Some(notice) = &self.notice {
                        notice(&code, wait);
                    }
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
        headers: &[(&str, &str)],
    ) -> Result<T, Error> {
        let url = self.url(path);
        let (name, value) = self.auth().await?;
        let mut req = self.client.request(method, &url).header(name, value);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req.send().await.map_err(|source| {
            if source.is_connect() {
                let mut cause: &dyn std::error::Error = &source;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                Error::Connect {
                    url: self.base.clone(),
                    cause: cause.to_string(),
                }
            } else {
                Error::Transport {
                    url: url.clone(),
                    source,
                }
            }
        })?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|source| Error::Transport {
            url: url.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(server_error(status, &bytes, retry_after));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Unreadable {
            url,
            message: e.to_string(),
        })
    }
}
