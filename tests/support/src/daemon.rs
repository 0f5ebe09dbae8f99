//! A daemon in this process on 127.0.0.1:0, plus HTTP and WebSocket helpers.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use streamgate::config::{ApiKey, Brokers, Config};
use streamgate::reload::{Reloader, Reloads};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ALICE: &str = "alice-key-0123456789";
pub const BOB: &str = "bob-key-0123456789";
/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(30);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A config for tests: embedded broker, few partitions, two keys, no rate limits.
pub fn test_config() -> Config {
    let mut c = Config {
        brokers: Brokers::Embedded,
        api_keys: vec![
            ApiKey::new("alice".into(), ALICE.into(), false),
            ApiKey::new("bob".into(), BOB.into(), false),
        ],
        ..Config::default()
    };
    c.topics.partitions = 3;
    c.rate_limits.per_ip = None;
    c.rate_limits.per_key = None;
    c.rate_limits.per_ip_public = None;
    c.limits.ingest.send_timeout_ms = 3000;
    c.log.level = "warn".into();
    c
}

/// Logs through the test harness's capture: shown for a failing test, silent otherwise.
fn quiet_logs(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A running daemon; `stop` shuts it down gracefully and returns its result.
pub struct Daemon {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), streamgate::Error>>>,
}

impl Daemon {
    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::from_listener(config, listener).await
    }

    async fn from_listener(config: Config, listener: tokio::net::TcpListener) -> Self {
        Self::launch(config, listener, None).await
    }

    /// A daemon whose configuration the returned [`Reloader`] reloads (as SIGHUP does).
    /// With `http.tls` it is not waited for here (the helpers speak plain HTTP).
    pub async fn start_reloadable(config: Config) -> (Self, Reloader) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (reloader, reloads) = Reloader::new();
        (
            Self::launch(config, listener, Some(reloads)).await,
            reloader,
        )
    }

    async fn launch(
        config: Config,
        listener: tokio::net::TcpListener,
        reloads: Option<Reloads>,
    ) -> Self {
        quiet_logs(&config.log.level);
        let addr = listener.local_addr().unwrap();
        let plain = config.http.tls.is_none();
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(streamgate::server::run_reloadable(
            config, listener, shutdown, reloads,
        ));
        let daemon = Daemon {
            addr,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        };
        if plain {
            daemon.wait_ready().await;
        }
        daemon
    }

    /// `GET /api/stream/{id}` as `key`.
    pub async fn describe(&self, key: &str, id: &str) -> Value {
        self.get_json(key, &format!("/api/stream/{id}")).await
    }

    /// The JSON body of `GET path` as `key`.
    pub async fn get_json(&self, key: &str, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until start-up is done: `/healthz` says `ok` (it says `starting` while the
    /// daemon connects to the broker).
    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = self.http.get(self.url("/healthz")).send().await {
                if r.json::<Value>().await.is_ok_and(|b| b["status"] == "ok") {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "daemon did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/readyz` says ready (the processing stage is in its group).
    pub async fn wait_until_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.get_status("/readyz").await != 200 {
            assert!(tokio::time::Instant::now() < deadline, "daemon never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The status of a `GET` without a key.
    pub async fn get_status(&self, path: &str) -> u16 {
        self.http
            .get(self.url(path))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub async fn stop(mut self) -> Result<(), streamgate::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("daemon did not stop in time")
            .unwrap()
    }

    /// `DELETE /api/stream/{id}` as `key`: ends the stream; returns the status.
    pub async fn end_stream(&self, key: &str, id: &str) -> u16 {
        self.http
            .delete(self.url(&format!("/api/stream/{id}")))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Starts a stream as `key`, returns its id.
    pub async fn start_stream(&self, key: &str, body: Option<Value>) -> String {
        let (status, v) = self.try_start(key, body).await;
        assert_eq!(status, 201, "{v}");
        v["stream_id"].as_str().unwrap().to_string()
    }

    /// `POST /api/stream/start` with `body`, as `key`: status and JSON answer, whatever they are.
    pub async fn try_start(&self, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url("/api/stream/start"))
            .header("x-api-key", key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        status_and_json(req.send().await.unwrap()).await
    }

    /// POSTs a JSON value to a stream; returns status and body.
    pub async fn send_json(&self, key: &str, id: &str, value: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(&format!("/api/stream/{id}/send")))
            .header("x-api-key", key)
            .json(value)
            .send()
            .await
            .unwrap();
        status_and_json(resp).await
    }

    pub async fn send_ndjson(&self, key: &str, id: &str, body: String) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(&format!("/api/stream/{id}/send")))
            .header("x-api-key", key)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        status_and_json(resp).await
    }

    /// Opens the results WebSocket of a stream with the key in `X-API-Key`.
    pub async fn subscribe(&self, key: &str, id: &str) -> Ws {
        self.subscribe_from(key, id, "latest").await
    }

    /// Opens the results WebSocket (`query` included) offering the subprotocols `protocols`,
    /// as a browser does; returns the socket and the subprotocol the daemon answered.
    pub async fn subscribe_offering(
        &self,
        id: &str,
        query: &str,
        protocols: &str,
    ) -> Result<(Ws, Option<String>), tokio_tungstenite::tungstenite::Error> {
        let mut req = self
            .ws_url(&format!("/api/stream/{id}/results{query}"))
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
        let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
        let answered = resp
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string());
        Ok((ws, answered))
    }

    /// Opens `/api/connect`, the WebSocket for many streams, with `key` (a key or, as
    /// `Bearer <token>`, a token).
    pub async fn connect(&self, key: &str) -> Ws {
        let mut req = self.ws_url("/api/connect").into_client_request().unwrap();
        let header = match key.strip_prefix("Bearer ") {
            Some(_) => "authorization",
            None => "x-api-key",
        };
        req.headers_mut().insert(header, key.parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        ws
    }

    /// Opens the results WebSocket starting at `from` (earliest, latest or a cursor).
    pub async fn subscribe_from(&self, key: &str, id: &str, from: &str) -> Ws {
        let mut req = self
            .ws_url(&format!("/api/stream/{id}/results?from={from}"))
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("x-api-key", key.parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        ws
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn status_and_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The next text frame as JSON, failing the test after `WAIT`.
pub async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame within the deadline")
            .expect("socket ended")
            .expect("socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("socket closed: {c:?}"),
            _ => continue,
        }
    }
}

/// Reads frames until the close frame; returns its code and reason.
pub async fn next_close(ws: &mut Ws) -> (u16, String) {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no close within the deadline");
        match msg {
            Some(Ok(Message::Close(Some(c)))) => return (c.code.into(), c.reason.to_string()),
            Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before close: {e}"),
        }
    }
}

/// Collects `n` frames of type `result`, skipping others.
pub async fn results(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let f = next_frame(ws).await;
        if f["type"] == "result" {
            out.push(f);
        }
    }
    out
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string())).await.unwrap();
}

/// Sends one JSON frame on a socket.
pub async fn send_frame(ws: &mut Ws, frame: &Value) {
    send_text(ws, &frame.to_string()).await;
}

/// The next frame of `type` on a socket, skipping others.
pub async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let f = next_frame(ws).await;
        if f["type"] == kind {
            return f;
        }
    }
}

impl Daemon {
    /// Like `subscribe`, over a socket with a tiny receive buffer, so a client that does not
    /// read backs up the daemon after a few KiB rather than after the kernel's megabytes.
    pub async fn subscribe_small_buffer(&self, key: &str, id: &str) -> Ws {
        self.subscribe_small_buffer_with(key, id, "from=latest")
            .await
    }

    /// `subscribe_small_buffer` with a query string (`on_lag=skip`, `from=...`).
    pub async fn subscribe_small_buffer_with(&self, key: &str, id: &str, query: &str) -> Ws {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.addr).await.unwrap();
        let mut req = self
            .ws_url(&format!("/api/stream/{id}/results?{query}"))
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("x-api-key", key.parse().unwrap());
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        ws
    }
}

impl Daemon {
    /// Starts a daemon on a given address (to restart one where its clients expect it).
    pub async fn start_on(config: Config, addr: SocketAddr) -> Self {
        let deadline = tokio::time::Instant::now() + WAIT;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "cannot bind {addr}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        Self::from_listener(config, listener).await
    }
}

/// A broker outage as a client sees it: with the broker down (`down`), a send answers 503
/// within the send timeout and `/readyz` is not ready; after `up`, sends succeed again
/// without a restart and results reach the same, still-open WebSocket.
pub async fn check_outage(d: &Daemon, down: impl FnOnce(), up: impl FnOnce()) {
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    assert_eq!(d.send_json(ALICE, &id, &json!("before")).await.0, 202);
    assert_eq!(next_frame(&mut ws).await["data"], "before");

    down();
    let started = std::time::Instant::now();
    let (status, body) = d.send_json(ALICE, &id, &json!("during")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "broker_unavailable");
    assert_eq!(body["error"]["acknowledged"], 0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503 took {:?}",
        started.elapsed()
    );
    for path in ["/healthz", "/readyz"] {
        let r = d
            .http
            .get(d.url(path))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} did not answer within 1 s: {e}"));
        let expected = if path == "/healthz" { 200 } else { 503 };
        assert_eq!(r.status(), expected, "{path}");
    }

    up();
    let deadline = tokio::time::Instant::now() + WAIT;
    while d.send_json(ALICE, &id, &json!("after")).await.0 != 202 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    while next_frame(&mut ws).await["data"] != "after" {}
    // Ready again once the processing stage is back in its group (one-hop results may come
    // before that), and it stays so (no flapping) for two seconds.
    while d.get_status("/readyz").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready again after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        assert_eq!(d.get_status("/readyz").await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stream whose first results the broker has already dropped (the embedded broker keeps
/// 5 MiB per partition; one record fans out into about 6 MB of results). Returns its id.
pub async fn stream_with_expired_results(d: &Daemon) -> String {
    let filter = "range(1000) as $i | {i: $i, pad: .pad}";
    let spec = serde_json::json!({"processor": {"type": "jq", "filter": filter}});
    let id = d.start_stream(ALICE, Some(spec)).await;
    let record = serde_json::json!({"pad": "x".repeat(6_000)});
    assert_eq!(d.send_json(ALICE, &id, &record).await.0, 202);
    // Asked of the broker, not the daemon: its router may itself fall behind what is kept.
    let stats = d.get_json(ALICE, "/api/stats").await;
    let bootstrap = stats["broker"]["bootstrap"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let b = bootstrap.clone();
        let marks = tokio::task::spawn_blocking(move || {
            crate::broker::watermarks(&b, "streamgate.results")
        })
        .await
        .unwrap();
        // The stream's 1 000 results (6 MiB) are all stored and the oldest already dropped.
        if marks.iter().any(|(low, high)| *low > 0 && *high >= 1_000) {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "results did not arrive: {marks:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
