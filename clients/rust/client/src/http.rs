//! One HTTP helper for every call: the base URL, the credential on every request, the
//! daemon's JSON errors as [`Error`], and patience: over a rate limit or while the daemon
//! starts it waits as `Retry-After` says and tries again, for at most [`PATIENCE`]. A token
//! source's token is kept and shared until it is due for replacement.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// The token a token source gave last, shared by every call and the connection: asked
    /// again only when it is due (a quarter of its lifetime before `exp`, at most 30 s), or
    /// when the daemon said it expired.
    held: Arc<tokio::sync::Mutex<Option<Held>>>,
    client: reqwest::Client,
    /// For `https://` and `wss://`: the public roots, and the CAs the builder added.
    tls: Arc<rustls::ClientConfig>,
    pub(crate) notice: Option<WaitNotice>,
}

/// A token from the source, with when to replace it.
#[derive(Clone)]
struct Held {
    token: String,
    renew_at: Option<SystemTime>,
}

/// Longest lead before `exp` at which a token is replaced.
const MAX_LEAD: Duration = Duration::from_secs(30);

impl Held {
    fn new(token: String) -> Self {
        let renew_at = lifetime(&token).map(|(iat, exp)| {
            let whole = iat.map_or(MAX_LEAD * 4, |iat| exp.saturating_sub(iat));
            let lead = (whole / 4).clamp(Duration::from_millis(200), MAX_LEAD);
            SystemTime::UNIX_EPOCH + exp.saturating_sub(lead)
        });
        Self { token, renew_at }
    }

    fn due(&self) -> bool {
        self.renew_at.is_some_and(|at| SystemTime::now() >= at)
    }
}

/// A JWT's `iat` and `exp` (since the Unix epoch), read without checking its signature (the
/// daemon does that); `None` when the token does not say when it expires.
fn lifetime(token: &str) -> Option<(Option<Duration>, Duration)> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let secs = |name: &str| {
        claims
            .get(name)?
            .as_f64()
            .filter(|s| *s >= 0.0)
            .map(Duration::from_secs_f64)
    };
    Some((secs("iat"), secs("exp")?))
}

impl Http {
    /// The daemon at `url`, trusting the public roots and the CAs of the PEM `roots`.
    pub fn new(url: &str, credential: Credential, roots: &[u8]) -> Result<Self, Error> {
        let base = url.trim_end_matches('/').to_string();
        let unreadable = |message: String| Error::Unreadable {
            url: url.to_string(),
            message,
        };
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(unreadable(
                "the URL must start with http:// or https://".into(),
            ));
        }
        let tls = Arc::new(tls_config(roots).map_err(unreadable)?);
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .build()
            .map_err(|e| unreadable(format!("HTTP client: {e}")))?;
        Ok(Self {
            base,
            credential,
            held: Default::default(),
            client,
            tls,
            notice: None,
        })
    }

    /// A `GET` of `path`'s text, without a credential (as `/metrics` is read).
    pub async fn get_text(&self, path: &str) -> Result<String, Error> {
        let url = self.url(path);
        let transport = |source| Error::Transport {
            url: url.clone(),
            source,
        };
        let resp = self.client.get(&url).send().await.map_err(transport)?;
        resp.text().await.map_err(transport)
    }

    /// Opens a WebSocket for a request of [`Self::ws_request`] (over TLS for `wss://`).
    pub async fn ws_connect(
        &self,
        request: Request,
        config: Option<tokio_tungstenite::tungstenite::protocol::WebSocketConfig>,
    ) -> Result<
        (
            crate::connection::Socket,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        tokio_tungstenite::tungstenite::Error,
    > {
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        tokio_tungstenite::connect_async_tls_with_config(request, config, true, Some(connector))
            .await
    }

    /// [`Self::ws_connect`] from the local address `from` (a port of its choosing): a host
    /// with several addresses, or a load generator holding more sockets than one client
    /// address may (the daemon caps each).
    pub async fn ws_connect_from(
        &self,
        request: Request,
        config: Option<tokio_tungstenite::tungstenite::protocol::WebSocketConfig>,
        from: std::net::IpAddr,
    ) -> Result<
        (
            crate::connection::Socket,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        tokio_tungstenite::tungstenite::Error,
    > {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("wss") {
                443
            } else {
                80
            });
        let peer = tokio::net::lookup_host((host, port))
            .await?
            .find(|a| a.is_ipv4() == from.is_ipv4())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::AddrNotAvailable,
                    format!("{host} has no address of the family of {from}"),
                )
            })?;
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind((from, 0).into())?;
        let stream = socket.connect(peer).await?;
        stream.set_nodelay(true)?;
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        tokio_tungstenite::client_async_tls_with_config(request, stream, config, Some(connector))
            .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Whether the credential can be renewed (a token source).
    pub(crate) fn renewable(&self) -> bool {
        matches!(self.credential, Credential::TokenSource(_))
    }

    /// The credential's header, now: a token source is asked when its last token is due for
    /// replacement, or when `fresh` (the daemon said it expired).
    async fn auth(&self, fresh: bool) -> Result<(&'static str, String), Error> {
        Ok(match &self.credential {
            Credential::ApiKey(key) => ("x-api-key", key.clone()),
            Credential::Token(token) => ("authorization", format!("Bearer {token}")),
            Credential::TokenSource(source) => {
                let mut held = self.held.lock().await;
                let token = match held.as_ref() {
                    Some(h) if !fresh && !h.due() => h.token.clone(),
                    _ => {
                        let token = source().await?;
                        *held = Some(Held::new(token.clone()));
                        token
                    }
                };
                ("authorization", format!("Bearer {token}"))
            }
        })
    }

    /// When the token last given should be replaced (`None`: not a token source, or a token
    /// without `exp`).
    pub(crate) async fn renew_at(&self) -> Option<tokio::time::Instant> {
        let at = self.held.lock().await.as_ref()?.renew_at?;
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        Some(tokio::time::Instant::now() + left)
    }

    /// A WebSocket handshake request for `path`, authenticated.
    pub async fn ws_request(&self, path: &str) -> Result<Request, Error> {
        self.ws_request_with(path, false).await
    }

    /// [`Self::ws_request`] with a token asked anew when `fresh`.
    pub(crate) async fn ws_request_with(&self, path: &str, fresh: bool) -> Result<Request, Error> {
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
        let (name, value) = self.auth(fresh).await?;
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
        let mut fresh = false;
        loop {
            match self
                .call_once(method.clone(), path, body.clone(), headers, fresh)
                .await
            {
                // The source's token expired before it was due: once more with a new one.
                Err(Error::Server {
                    code: ErrorCode::TokenExpired,
                    ..
                }) if self.renewable() && !fresh => fresh = true,
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
        fresh: bool,
    ) -> Result<T, Error> {
        let url = self.url(path);
        let (name, value) = self.auth(fresh).await?;
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

/// TLS for the client: rustls over aws-lc-rs (as the daemon), the Mozilla roots, and the CA
/// certificates of the PEM `extra`.
fn tls_config(extra: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in CertificateDer::pem_slice_iter(extra) {
        let cert = cert.map_err(|e| format!("the CA certificates are not PEM: {e:?}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a CA certificate cannot be used: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
