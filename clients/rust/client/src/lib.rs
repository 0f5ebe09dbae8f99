//! A client for Streamgate: open streams, send records into them and follow their results,
//! many streams over one connection that reconnects and resumes by itself, with sends that
//! are safe to retry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), streamgate_client::Error> {
//! use futures_util::StreamExt;
//! use streamgate_client::{Client, Subscribe};
//! use streamgate_client::wire::{Frame, ProcessorSpec, StartFrom};
//!
//! let client = Client::new("http://127.0.0.1:8080", "my-key")?;
//! let id = client.start(Some(&ProcessorSpec::Uppercase)).await?.stream_id;
//! let ack = client.send(id, &serde_json::json!({"n": 1})).await?;
//! let from = Subscribe { from: Some(StartFrom::Named("earliest".into())), ..Default::default() };
//! let mut results = client.subscribe(id, from);
//! while let Some(frame) = results.next().await {
//!     match frame? {
//!         Frame::Result(r) => println!("{}", r.data.unwrap_or_default()),
//!         Frame::End(_) => break,
//!         _ => {}
//!     }
//! }
//! # let _ = ack; Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`Client`] (here): the handle, cheap to clone: the key holder's calls over HTTP, sends
//!   and subscriptions over the connection.
//! - `http`: one HTTP helper: credentials, the daemon's JSON errors, `Retry-After` patience.
//! - `connection`: the one `/api/connect` socket and what it does on each failure.
//! - `fallback`: a socket per stream and sends over HTTP, for a daemon without
//!   `/api/connect`.
//! - `subscription`: [`Subscription`], a `Stream` of one stream's frames.
//! - [`retry`]: back-off with jitter, and `Retry-After`.
//! - `error`: [`Error`], typed by the daemon's error codes.
//!
//! Every record is sent with an idempotency key of its own, and sent again with it when the
//! answer was lost (a cut connection, a daemon restart, a 503): the daemon stores and
//! processes it once either way.

mod connection;
mod error;
mod fallback;
mod http;
pub mod retry;
mod subscription;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use reqwest::Method;
use serde::Serialize;
use streamgate_wire::{
    Accepted, Ack, ProcessorSpec, Scope, Started, Stats, StreamList, StreamView, TokenIssued,
    TokensRequest,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub use connection::Subscribe;
pub use error::{retry_after, server_error, Error};
pub use http::{Http, WaitNotice, PATIENCE};
pub use streamgate_wire as wire;
pub use subscription::Subscription;

/// Something that gives a fresh token when asked (before connecting, and again when the
/// last one expired).
pub type TokenSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, Error>> + Send>> + Send + Sync>;

/// How the client authenticates.
#[derive(Clone)]
pub enum Credential {
    /// An API key (its streams, and what only a key may do).
    ApiKey(String),
    /// A stream token, as it is.
    Token(String),
    /// Stream tokens from a source, asked again when one expires.
    TokenSource(TokenSource),
}

/// A [`Client`] being made.
pub struct Builder {
    url: String,
    credential: Credential,
    roots: Vec<u8>,
    notice: Option<WaitNotice>,
}

impl Builder {
    /// Also trusts the CA certificates of this PEM (a daemon whose certificate a private
    /// CA signed); the public roots (Mozilla's) are trusted in any case.
    pub fn root_certificates(mut self, pem: &[u8]) -> Self {
        self.roots.extend_from_slice(pem);
        self
    }

    /// Says once, the first time a call waits on the daemon, why and for how long.
    pub fn on_wait(mut self, notice: WaitNotice) -> Self {
        self.notice = Some(notice);
        self
    }

    /// The client; its connection opens with the first subscription or send (calling this
    /// needs a Tokio runtime).
    pub fn build(self) -> Result<Client, Error> {
        let mut http = Http::new(&self.url, self.credential, &self.roots)?;
        http.notice = self.notice;
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(connection::run(http.clone(), rx));
        Ok(Client { http, commands })
    }
}

/// A connection to one daemon; clones share it.
#[derive(Clone)]
pub struct Client {
    http: Http,
    commands: mpsc::UnboundedSender<connection::Command>,
}

impl Client {
    /// A client of the daemon at `url` (`http://` or `https://`) with an API key.
    pub fn new(url: &str, api_key: &str) -> Result<Self, Error> {
        Self::with_credential(url, Credential::ApiKey(api_key.to_string()))
    }

    /// A client with any credential. The connection opens with the first subscription or
    /// send; calling this needs a Tokio runtime.
    pub fn with_credential(url: &str, credential: Credential) -> Result<Self, Error> {
        Self::builder(url, credential).build()
    }

    /// A client with more settings: a CA to trust, a notice when it waits.
    pub fn builder(url: &str, credential: Credential) -> Builder {
        Builder {
            url: url.to_string(),
            credential,
            roots: Vec::new(),
            notice: None,
        }
    }

    /// The HTTP side, for any route (`call`, `url`, `ws_request`).
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// Opens a stream (`None`: identity).
    pub async fn start(&self, processor: Option<&ProcessorSpec>) -> Result<Started, Error> {
        let body = processor.map(|p| {
            let body = serde_json::json!({ "processor": p });
            ("application/json", body.to_string().into_bytes())
        });
        self.http
            .call(Method::POST, "/api/stream/start", body)
            .await
    }

    /// Ends a stream: its subscribers get every result, then `end`.
    pub async fn end(&self, stream: Uuid) -> Result<StreamView, Error> {
        let path = format!("/api/stream/{stream}");
        self.http.call(Method::DELETE, &path, None).await
    }

    pub async fn describe(&self, stream: Uuid) -> Result<StreamView, Error> {
        let path = format!("/api/stream/{stream}");
        self.http.call(Method::GET, &path, None).await
    }

    /// The key's streams (all of them for an admin key), newest first.
    pub async fn list(&self) -> Result<Vec<StreamView>, Error> {
        let list: StreamList = self.http.call(Method::GET, "/api/streams", None).await?;
        Ok(list.streams)
    }

    pub async fn stats(&self) -> Result<Stats, Error> {
        self.http.call(Method::GET, "/api/stats", None).await
    }

    /// A stream token for `streams` with `scope`, for `ttl_s` seconds (`None`: an hour).
    pub async fn token(
        &self,
        streams: &[Uuid],
        scope: &[Scope],
        ttl_s: Option<u64>,
    ) -> Result<TokenIssued, Error> {
        let request = TokensRequest {
            streams: streams.to_vec(),
            scope: scope.to_vec(),
            ttl_s,
        };
        let body = serde_json::to_vec(&request).expect("token requests serialize");
        self.http
            .call(
                Method::POST,
                "/api/tokens",
                Some(("application/json", body)),
            )
            .await
    }

    /// Sends one record over the connection; answers once the broker stored it. Sent with
    /// an idempotency key of its own, and sent again with it across reconnects, so it is
    /// processed once.
    pub async fn send(&self, stream: Uuid, data: &impl Serialize) -> Result<Ack, Error> {
        let text = serde_json::to_string(data).map_err(|e| Error::Unreadable {
            url: String::new(),
            message: format!("the record is not JSON: {e}"),
        })?;
        let data = serde_json::value::RawValue::from_string(text).expect("serialized JSON");
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(connection::Command::Send {
                stream,
                data,
                key: Uuid::new_v4().to_string(),
                reply,
            })
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Sends `records` (NDJSON, one record per line) over HTTP as one request named by
    /// `key`; answers once the broker stored every record. A failure that may pass (no
    /// answer, a 503, a connection refused) is tried again with the same key, for at most
    /// [`PATIENCE`], so the records are stored and processed once.
    pub async fn send_batch(
        &self,
        stream: Uuid,
        records: Vec<u8>,
        key: &str,
    ) -> Result<Accepted, Error> {
        self.send_batch_within(stream, records, key, PATIENCE).await
    }

    /// [`Self::send_batch`], trying again for at most `patience`.
    pub async fn send_batch_within(
        &self,
        stream: Uuid,
        records: Vec<u8>,
        key: &str,
        patience: std::time::Duration,
    ) -> Result<Accepted, Error> {
        self.send_batch_traced(stream, records, key, patience, None)
            .await
    }

    /// [`Self::send_batch_within`] as part of a trace: `traceparent` (W3C trace context) is
    /// the span the records' trace goes on from, through processing to their result frames.
    pub async fn send_batch_traced(
        &self,
        stream: Uuid,
        records: Vec<u8>,
        key: &str,
        patience: std::time::Duration,
        traceparent: Option<&str>,
    ) -> Result<Accepted, Error> {
        let path = format!("/api/stream/{stream}/send");
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = retry::Backoff::default();
        let mut headers = vec![("idempotency-key", key)];
        headers.extend(traceparent.map(|t| ("traceparent", t)));
        loop {
            let answer = self
                .http
                .call_with(
                    Method::POST,
                    &path,
                    Some(("application/x-ndjson", records.clone())),
                    &headers,
                )
                .await;
            match answer {
                Err(e) if e.is_transient() => {
                    let retry_after = match &e {
                        Error::Server { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let pause = backoff.pause(retry_after);
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    if let (Some(notice), Some(code)) = (&self.http.notice, e.code()) {
                        notice(code, pause);
                    }
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// Follows a stream over the connection: replay from `options.from`, then live. The
    /// frames come once each, in order, across reconnects; `gap` frames say what was not
    /// delivered.
    pub fn subscribe(&self, stream: Uuid, options: Subscribe) -> Subscription {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let (tx, frames) = mpsc::channel(connection::QUEUE);
        let paused = Arc::new(AtomicBool::new(false));
        let _ = self.commands.send(connection::Command::Subscribe {
            id,
            stream,
            options,
            frames: tx,
            paused: paused.clone(),
        });
        Subscription {
            id,
            stream,
            frames,
            paused,
            commands: self.commands.clone(),
        }
    }
}
