//! Daemon configuration: the YAML schema, its defaults and the checks run at start.
//!
//! Every struct denies unknown fields, so a typo'd key stops the daemon with a message that
//! names it instead of being silently ignored. Defaults live in named functions so that
//! `config.example.yaml`, the zero-config start and the tests all agree on one set of values.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

mod edge;
mod telemetry;
pub use edge::{Auth, Jwt, Tls, JWT_ALGORITHMS};
pub use telemetry::{OtlpProtocol, Telemetry};

/// The whole daemon configuration, as read from `config.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP/WebSocket API listens on.
    pub listen: SocketAddr,
    /// `embedded` for the in-process mock cluster, or a Kafka bootstrap list.
    pub brokers: Brokers,
    pub topics: Topics,
    /// Raw librdkafka settings applied to every Kafka client (SASL, TLS, tuning).
    pub kafka: BTreeMap<String, String>,
    pub processing: Processing,
    pub api_keys: Vec<ApiKey>,
    /// Tokens from an identity provider.
    pub auth: Auth,
    /// JSON Schemas by name, for streams started with `"schema": {"$ref": NAME}`.
    pub schemas: BTreeMap<String, SchemaSource>,
    pub rate_limits: RateLimits,
    pub limits: Limits,
    pub http: Http,
    pub log: Log,
    /// Traces of records, exported over OTLP.
    pub telemetry: Telemetry,
}

/// A named schema: in a file (JSON), or written here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SchemaSource {
    File { file: PathBuf },
    Inline { schema: serde_json::Value },
}

impl Config {
    /// The named schemas (`schemas:`), files read; an unreadable or non-JSON file is an error
    /// naming it.
    pub fn named_schemas(&self) -> Result<BTreeMap<String, serde_json::Value>, Error> {
        self.schemas
            .iter()
            .map(|(name, source)| {
                let schema = match source {
                    SchemaSource::Inline { schema } => schema.clone(),
                    SchemaSource::File { file } => {
                        let bad = |why: String| Error::Config {
                            message: format!("schemas.{name}.file: {}: {why}", file.display()),
                        };
                        let text = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
                        serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?
                    }
                };
                Ok((name.clone(), schema))
            })
            .collect()
    }
}

/// Browser access.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Web origins (`https://app.example.com`) whose pages may call the API: CORS preflights
    /// are answered for them, and a request carrying any other `Origin` (a WebSocket or
    /// Server-Sent Events from a foreign page included) is refused with 403. Empty (the
    /// default): no CORS headers, and `Origin` is not checked.
    pub allowed_origins: Vec<String>,
    /// HTTPS and WSS on the listener; `null` (the default): plain HTTP.
    pub tls: Option<Tls>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            brokers: Brokers::Embedded,
            topics: Topics::default(),
            kafka: BTreeMap::new(),
            processing: Processing::default(),
            api_keys: Vec::new(),
            auth: Auth::default(),
            schemas: BTreeMap::new(),
            rate_limits: RateLimits::default(),
            limits: Limits::default(),
            http: Http::default(),
            log: Log::default(),
            telemetry: Telemetry::default(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// A setting's value that cannot be parsed; the text names the setting and what it takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

/// Where Kafka is: the embedded mock cluster or a real bootstrap list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brokers {
    Embedded,
    Bootstrap(String),
}

impl fmt::Display for Brokers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Brokers::Embedded => f.write_str("embedded"),
            Brokers::Bootstrap(list) => f.write_str(list),
        }
    }
}

impl std::str::FromStr for Brokers {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let s = s.trim();
        if s == "embedded" {
            return Ok(Brokers::Embedded);
        }
        if s.is_empty() {
            return Err(InvalidValue(
                "brokers: empty value; use `embedded` or HOST:PORT[,HOST:PORT...]".into(),
            ));
        }
        for part in s.split(',') {
            let part = part.trim();
            let valid = part
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(InvalidValue(format!(
                    "brokers: `{part}` is not HOST:PORT; use `embedded` or HOST:PORT[,HOST:PORT...]"
                )));
            }
        }
        Ok(Brokers::Bootstrap(s.to_string()))
    }
}

impl Serialize for Brokers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Brokers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// The three shared topics. Streams are keys in them, never topics of their own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub input: String,
    pub results: String,
    /// Compacted registry of streams (owner, processor, state).
    pub streams: String,
    /// Compacted index of idempotency keys (kept a week).
    pub keys: String,
    /// Partitions of the input and results topics when the daemon creates them.
    pub partitions: i32,
    pub replication_factor: i32,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            input: "streamgate.input".into(),
            results: "streamgate.results".into(),
            streams: "streamgate.streams".into(),
            keys: "streamgate.keys".into(),
            partitions: 12,
            replication_factor: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Processing {
    /// Consumer group shared by every instance's processing stage.
    pub group_id: String,
    /// Longest a processor may run on one record; past it the worker is killed, the record
    /// gets an error result and the stream's code is not run again on this instance.
    pub max_record_ms: u64,
    /// Most results one record may produce; past it the record gets an error result.
    pub max_results: usize,
    /// Address space of one processor worker process, in MiB: a filter that needs more dies
    /// alone and its record gets an error result.
    pub max_memory_mb: u64,
    /// Processor worker processes running user code at once.
    pub workers: usize,
    /// The executable run as a processor worker (`<it> __processor-worker`); `null` finds
    /// `streamctl` (or `streamgate-worker`) beside the running executable.
    pub worker: Option<PathBuf>,
    /// Largest processor spec (a start request's `processor`), in bytes.
    pub max_spec_bytes: usize,
    /// Deepest nesting of brackets and `if … end` in a jq filter or window expression.
    pub max_filter_depth: usize,
    /// Per-record processors (identity, uppercase, jq) run on the instance that accepts a
    /// record, which writes the results itself: one read of the input topic less per result,
    /// one more write before the answer (`processing::at_ingest`). Off by default: on the
    /// brokers measured it lowers the median latency but raises the tail and lowers the
    /// highest rate (docs/benchmarks.md).
    pub at_ingest: bool,
    /// How long the processing group waits for the accepting instance to confirm the
    /// results of a record it took for one hop, before writing them itself (that instance
    /// died, or its results write failed).
    pub at_ingest_wait_ms: u64,
}

impl Default for Processing {
    fn default() -> Self {
        Self {
            group_id: "streamgate-processors".into(),
            max_record_ms: 1_000,
            max_results: 1_000,
            max_memory_mb: 512,
            workers: 2,
            worker: None,
            max_spec_bytes: 16 * 1024,
            max_filter_depth: 64,
            at_ingest: false,
            at_ingest_wait_ms: 10_000,
        }
    }
}

/// One API key. Streams are owned by the key's `name`; the key itself is never stored or logged.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: String,
    pub key: String,
    /// Admin keys see every stream in listings (for `streamctl top`).
    #[serde(default)]
    pub admin: bool,
    /// With mutual TLS (`http.tls.client_ca`): the key is accepted only on a connection
    /// whose client certificate has this subject (as `CN=alice,O=Example`).
    #[serde(default)]
    pub client_cert_subject: Option<String>,
}

impl ApiKey {
    /// A key named `name` (what owns its streams), not bound to a client certificate.
    pub fn new(name: String, key: String, admin: bool) -> Self {
        Self {
            name,
            key,
            admin,
            client_cert_subject: None,
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("admin", &self.admin)
            .field("client_cert_subject", &self.client_cert_subject)
            .finish()
    }
}

/// A token bucket: `per_second` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Per client IP, checked before the key (so key guessing is throttled too). `null` disables.
    pub per_ip: Option<Rate>,
    /// Per API key, shared by every client using the key. `null` disables.
    pub per_key: Option<Rate>,
    /// Per client IP, for what needs no key: `/metrics`, `/readyz` and unknown routes
    /// (`/healthz` is never limited). `null` disables.
    pub per_ip_public: Option<Rate>,
}

impl Default for RateLimits {
    fn default() -> Self {
        // The original service's limits: 1 request per second per IP, burst 5.
        Self {
            per_ip: Some(Rate {
                per_second: 1,
                burst: 5,
            }),
            per_key: Some(Rate {
                per_second: 50,
                burst: 100,
            }),
            per_ip_public: Some(Rate {
                per_second: 20,
                burst: 40,
            }),
        }
    }
}

/// Sizes, counts and timeouts, in sections by what they bound. In the YAML they are one flat
/// `limits:` map (the keys are unique across sections); a key no section knows is refused
/// with the list of keys there are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    #[serde(flatten)]
    pub server: ServerLimits,
    #[serde(flatten)]
    pub websocket: WebSocketLimits,
    #[serde(flatten)]
    pub delivery: DeliveryLimits,
    #[serde(flatten)]
    pub ingest: IngestLimits,
    #[serde(flatten)]
    pub tokens: TokenLimits,
    #[serde(flatten)]
    pub shutdown: ShutdownLimits,
    /// Keys no section took: refused by `validate`.
    #[serde(flatten, skip_serializing)]
    unknown: BTreeMap<String, serde_yaml::Value>,
}

/// What the HTTP server holds a client to: connections, request heads and bodies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerLimits {
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// A connection must send a whole request head within this; it also closes keep-alive
    /// connections idle this long.
    pub header_read_timeout_ms: u64,
    /// Longest a request body may take to arrive (408 past it).
    pub body_read_timeout_ms: u64,
    /// Largest request head (request line and headers); 431 above it. At least 8192.
    pub max_header_bytes: usize,
    /// Connections open at once (WebSockets included); new ones past it get 503. Lowered at
    /// start to what the open-files limit allows.
    pub max_connections: usize,
    /// Connections open at once from one client address; never more than a quarter of the
    /// connections in all (as lowered), so one address cannot take every slot.
    pub max_connections_per_ip: usize,
    /// Kernel send buffer of every client connection (SO_SNDBUF). `null` leaves the kernel's
    /// autotuning (up to `net.ipv4.tcp_wmem` max, 4 MiB by default); a fixed size bounds the
    /// kernel memory a slow client can pin and makes it count as lagging sooner.
    pub socket_send_buffer_bytes: Option<usize>,
    /// With `http.tls`: a connection must finish its TLS handshake within this, or it is
    /// dropped (as a slow request head is).
    pub tls_handshake_timeout_ms: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 2_048,
            socket_send_buffer_bytes: None,
            tls_handshake_timeout_ms: 10_000,
        }
    }
}

/// Most of the connections one address may hold: `limits.max_connections` divided by this.
pub const PER_IP_SHARE: usize = 4;

impl ServerLimits {
    /// These limits for a process that may hold `connections` client connections (what the
    /// open-files limit allows): the caps lowered to fit, the per-address one kept to a
    /// quarter of the total.
    pub fn fitted(&self, connections: usize) -> Self {
        let max_connections = self.max_connections.min(connections).max(1);
        Self {
            max_connections,
            max_connections_per_ip: self
                .max_connections_per_ip
                .min((max_connections / PER_IP_SHARE).max(1)),
            ..self.clone()
        }
    }

    fn validate(&self) -> Result<(), Error> {
        at_least("limits.max_body_bytes", self.max_body_bytes as u64, 1)?;
        at_least(
            "limits.header_read_timeout_ms",
            self.header_read_timeout_ms,
            1,
        )?;
        at_least("limits.body_read_timeout_ms", self.body_read_timeout_ms, 1)?;
        at_least(
            "limits.tls_handshake_timeout_ms",
            self.tls_handshake_timeout_ms,
            1,
        )?;
        at_least(
            "limits.max_header_bytes",
            self.max_header_bytes as u64,
            8192,
        )?;
        at_least("limits.max_connections", self.max_connections as u64, 1)?;
        at_least(
            "limits.max_connections_per_ip",
            self.max_connections_per_ip as u64,
            1,
        )?;
        if let Some(bytes) = self.socket_send_buffer_bytes {
            at_least("limits.socket_send_buffer_bytes", bytes as u64, 4096)?;
        }
        Ok(())
    }
}

/// What a WebSocket client may send and how it is kept honest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebSocketLimits {
    /// Records sent over one WebSocket that may await their broker ack at once.
    pub ws_max_in_flight: usize,
    /// Largest WebSocket message accepted from a client.
    pub ws_max_message_bytes: usize,
    /// How often the daemon pings each WebSocket client.
    pub ws_ping_interval_ms: u64,
    /// A WebSocket client silent this long (no frame, no pong), or any client that takes this
    /// long to accept what is written to it (an SSE subscriber that stopped reading), is
    /// considered dead and its connection is dropped.
    pub ws_idle_timeout_ms: u64,
}

impl Default for WebSocketLimits {
    fn default() -> Self {
        Self {
            ws_max_in_flight: 1024,
            ws_max_message_bytes: 1024 * 1024,
            ws_ping_interval_ms: 15_000,
            ws_idle_timeout_ms: 45_000,
        }
    }
}

impl WebSocketLimits {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_idle_timeout_ms)
    }

    fn validate(&self) -> Result<(), Error> {
        at_least("limits.ws_max_in_flight", self.ws_max_in_flight as u64, 1)?;
        at_least(
            "limits.ws_max_message_bytes",
            self.ws_max_message_bytes as u64,
            1,
        )?;
        at_least("limits.ws_ping_interval_ms", self.ws_ping_interval_ms, 1)?;
        at_least("limits.ws_idle_timeout_ms", self.ws_idle_timeout_ms, 1)
    }
}

/// What a results subscriber may hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryLimits {
    /// Results buffered per subscriber before it counts as lagging.
    pub subscriber_queue: usize,
    /// Results subscribers one API key may have open at once on one instance (429
    /// `too_many_subscribers` past it).
    pub max_subscribers_per_key: usize,
    /// How long an instance keeps reading a results partition after its last subscriber
    /// there left (a client that reconnects within it finds the partition read already).
    pub results_partition_idle_ms: u64,
    /// Streams one `/api/connect` socket (or one `/api/events` request) may follow at once
    /// (`refused` `too_many_subscriptions` past it). Each counts as a subscriber of its key.
    pub max_subscriptions_per_connection: usize,
    /// Bytes per second all of one key's `/api/stats/live` watchers together may be sent:
    /// each watcher's interval is stretched to `snapshot bytes × watchers of the key / this`
    /// when that is longer than the interval it asked for.
    pub stats_live_bytes_per_s: u64,
}

impl Default for DeliveryLimits {
    fn default() -> Self {
        Self {
            subscriber_queue: 1024,
            max_subscribers_per_key: 10_000,
            results_partition_idle_ms: 60_000,
            max_subscriptions_per_connection: 1_000,
            stats_live_bytes_per_s: 4 << 20,
        }
    }
}

impl DeliveryLimits {
    fn validate(&self) -> Result<(), Error> {
        at_least("limits.subscriber_queue", self.subscriber_queue as u64, 1)?;
        at_least(
            "limits.max_subscribers_per_key",
            self.max_subscribers_per_key as u64,
            1,
        )?;
        at_least(
            "limits.results_partition_idle_ms",
            self.results_partition_idle_ms,
            1,
        )?;
        at_least(
            "limits.max_subscriptions_per_connection",
            self.max_subscriptions_per_connection as u64,
            1,
        )?;
        at_least(
            "limits.stats_live_bytes_per_s",
            self.stats_live_bytes_per_s,
            1024,
        )
    }
}

/// What a send may carry and how long it may wait, and how many streams a key may open.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestLimits {
    /// Most records in one send request (413 above it): bounds what one request costs in
    /// memory and in its answer, however small its lines.
    pub max_records_per_request: usize,
    /// Records stored in one input partition and not yet processed, at most: a send past it
    /// gets 429 `backlog_full`, so nothing accepted can be dropped by the broker's retention
    /// before it is processed. `null`: 50 000 on the embedded broker (which keeps 5 MiB
    /// or 100 000 record batches per partition), 1 000 000 on a real one.
    pub max_unprocessed_records: Option<u64>,
    /// The same in bytes (counted for this instance's writes). `null`: 4 MiB on the
    /// embedded broker, 1 GiB on a real one.
    pub max_unprocessed_bytes: Option<u64>,
    /// How long a send may wait for the broker's acknowledgement before answering 503.
    pub send_timeout_ms: u64,
    /// Open streams one API key may have at once (429 `too_many_streams` past it).
    pub max_streams_per_key: usize,
    /// How long an idempotency key is remembered, from its first record's acceptance: a
    /// request sent again with it within this is stored and processed once; past it, the key
    /// is new again. At most 604 800 (a week, what the key index topic keeps).
    pub idempotency_window_s: u64,
    /// Most idempotency keys one stream remembers (at most about 1.4 KiB each, on every
    /// instance); past it the stream's oldest keys are forgotten first, and are new again.
    pub idempotency_keys_per_stream: usize,
    /// Largest JSON Schema a stream may be started with (`schema`, `result_schema`), in
    /// bytes as JSON; 400 past it.
    pub max_schema_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_records_per_request: 100_000,
            max_unprocessed_records: None,
            max_unprocessed_bytes: None,
            send_timeout_ms: 10_000,
            max_streams_per_key: 10_000,
            idempotency_window_s: 86_400,
            idempotency_keys_per_stream: 10_000,
            max_schema_bytes: 64 * 1024,
        }
    }
}

/// The longest idempotency window, and how long the key index topic keeps a key.
pub const MAX_IDEMPOTENCY_WINDOW_S: u64 = 7 * 86_400;

impl IngestLimits {
    pub fn idempotency_window(&self) -> Duration {
        Duration::from_secs(self.idempotency_window_s)
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    /// The unprocessed backlog bound per input partition: the configured one, or what suits
    /// the broker (the embedded one drops data past about 5 MiB per partition).
    pub fn unprocessed_bound(&self, embedded: bool) -> (u64, u64) {
        let (records, bytes) = if embedded {
            // The estimate only ever over-counts (see `ingest::backlog`) and the broker drops
            // the oldest first, so the bound may sit close to what it keeps.
            (50_000, 4 * 1024 * 1024)
        } else {
            (1_000_000, 1 << 30)
        };
        (
            self.max_unprocessed_records.unwrap_or(records),
            self.max_unprocessed_bytes.unwrap_or(bytes),
        )
    }

    fn validate(&self) -> Result<(), Error> {
        at_least(
            "limits.max_records_per_request",
            self.max_records_per_request as u64,
            1,
        )?;
        at_least("limits.send_timeout_ms", self.send_timeout_ms, 1)?;
        if self.send_timeout_ms > MAX_SEND_TIMEOUT_MS {
            return Err(invalid(
                "limits.send_timeout_ms",
                &self.send_timeout_ms,
                &format!("must be at most {MAX_SEND_TIMEOUT_MS} (5 minutes)"),
            ));
        }
        at_least(
            "limits.max_streams_per_key",
            self.max_streams_per_key as u64,
            1,
        )?;
        at_least(
            "limits.idempotency_keys_per_stream",
            self.idempotency_keys_per_stream as u64,
            1,
        )?;
        at_least("limits.idempotency_window_s", self.idempotency_window_s, 1)?;
        at_least("limits.max_schema_bytes", self.max_schema_bytes as u64, 2)?;
        if self.idempotency_window_s > MAX_IDEMPOTENCY_WINDOW_S {
            return Err(invalid(
                "limits.idempotency_window_s",
                &self.idempotency_window_s,
                &format!("must be at most {MAX_IDEMPOTENCY_WINDOW_S} (a week)"),
            ));
        }
        if let Some(records) = self.max_unprocessed_records {
            at_least("limits.max_unprocessed_records", records, 1)?;
        }
        if let Some(bytes) = self.max_unprocessed_bytes {
            at_least("limits.max_unprocessed_bytes", bytes, 1024)?;
        }
        Ok(())
    }
}

/// Stream tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenLimits {
    /// Longest lifetime of a scoped stream token (`POST /api/stream/{id}/tokens`); a longer
    /// `ttl_s` is refused with 400.
    pub max_token_ttl_s: u64,
}

impl Default for TokenLimits {
    fn default() -> Self {
        Self {
            max_token_ttl_s: 86_400,
        }
    }
}

impl TokenLimits {
    fn validate(&self) -> Result<(), Error> {
        at_least("limits.max_token_ttl_s", self.max_token_ttl_s, 1)
    }
}

/// How long a graceful stop may take.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ShutdownLimits {
    /// Longest shutdown waits for in-flight requests before closing their connections.
    pub shutdown_timeout_ms: u64,
    /// After that, longest shutdown waits for everything acknowledged to be processed and
    /// delivered to connected subscribers before closing them with 1001.
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownLimits {
    fn default() -> Self {
        Self {
            shutdown_timeout_ms: 10_000,
            drain_timeout_ms: 10_000,
        }
    }
}

impl ShutdownLimits {
    fn validate(&self) -> Result<(), Error> {
        at_least("limits.shutdown_timeout_ms", self.shutdown_timeout_ms, 1)?;
        at_least("limits.drain_timeout_ms", self.drain_timeout_ms, 1)
    }
}

impl Limits {
    fn validate(&self) -> Result<(), Error> {
        if let Some(key) = self.unknown.keys().next() {
            let known = serde_yaml::to_value(Limits::default())
                .ok()
                .and_then(|v| match v {
                    serde_yaml::Value::Mapping(m) => Some(
                        m.keys()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    _ => None,
                })
                .unwrap_or_default();
            return Err(Error::Config {
                message: format!("limits: unknown field `{key}`, expected one of {known}"),
            });
        }
        self.server.validate()?;
        self.websocket.validate()?;
        self.delivery.validate()?;
        self.ingest.validate()?;
        self.tokens.validate()?;
        self.shutdown.validate()
    }
}

/// The longest `limits.send_timeout_ms`: the processing stage remembers ended streams for
/// longer than a send can be in flight (`processing::record::ENDED_MEMORY`).
pub const MAX_SEND_TIMEOUT_MS: u64 = 300_000;

/// `key: `value` must be at least least`, the shape of every range error.
pub(crate) fn at_least(key: &str, value: u64, least: u64) -> Result<(), Error> {
    if value < least {
        return Err(invalid(key, &value, &format!("must be at least {least}")));
    }
    Ok(())
}

/// The error for `key` holding `value`, and why that is wrong.
pub(crate) fn invalid(key: &str, value: &dyn fmt::Display, why: &str) -> Error {
    Error::Config {
        message: format!("{key}: `{value}` {why}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(InvalidValue(format!(
                "log format `{other}` is not one of: pretty, json"
            ))),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing filter directive such as `info` or `streamgate=debug,info`.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads and validates a YAML config file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            Error::Config { message } => Error::Config {
                message: format!("{}: {message}", path.display()),
            },
            other => other,
        })
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        let config: Config = serde_yaml::from_str(text).map_err(|e| Error::Config {
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: ranges, duplicates, empty strings. Each section checks
    /// its own keys.
    pub fn validate(&self) -> Result<(), Error> {
        self.topics.validate()?;
        self.processing.validate()?;
        validate_keys(&self.api_keys)?;
        let mutual = self
            .http
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        if let Some((i, k)) = self
            .api_keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.client_cert_subject.is_some())
            .filter(|_| !mutual)
        {
            return Err(Error::Config {
                message: format!(
                    "api_keys[{i}].client_cert_subject (name `{}`): needs mutual TLS \
                     (http.tls.client_ca), or no client ever presents a certificate",
                    k.name
                ),
            });
        }
        self.rate_limits.validate()?;
        self.limits.validate()?;
        self.http.validate()?;
        if let Some(jwt) = &self.auth.jwt {
            jwt.validate()?;
        }
        self.telemetry.validate()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid(
                "log.level",
                &self.log.level,
                &format!("is not a valid filter: {e}"),
            ));
        }
        Ok(())
    }
}

impl Http {
    /// Each origin as a browser sends it: `scheme://host[:port]`, no path, no trailing slash
    /// (an origin written otherwise would never match and refuse every page).
    fn validate(&self) -> Result<(), Error> {
        for origin in &self.allowed_origins {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let well_formed = rest.is_some_and(|host| {
                !host.is_empty() && !host.contains(['/', '?', '#', ' ']) && !host.ends_with(':')
            });
            if !well_formed {
                return Err(invalid(
                    "http.allowed_origins",
                    origin,
                    "is not an origin: write it as scheme://host[:port] (for example \
                     https://app.example.com), without a path or trailing slash",
                ));
            }
        }
        Ok(())
    }
}

impl Topics {
    fn validate(&self) -> Result<(), Error> {
        for (key, value) in [
            ("topics.partitions", self.partitions),
            ("topics.replication_factor", self.replication_factor),
        ] {
            if value < 1 {
                return Err(invalid(key, &value, "must be at least 1"));
            }
        }
        for (key, name) in [
            ("topics.input", &self.input),
            ("topics.results", &self.results),
            ("topics.streams", &self.streams),
            ("topics.keys", &self.keys),
        ] {
            let valid = !name.is_empty()
                && name.len() <= 249
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !valid {
                return Err(invalid(key, name, "is not a valid Kafka topic name"));
            }
        }
        Ok(())
    }
}

impl Processing {
    fn validate(&self) -> Result<(), Error> {
        if self.group_id.is_empty() {
            return Err(invalid("processing.group_id", &"", "must not be empty"));
        }
        at_least("processing.max_record_ms", self.max_record_ms, 1)?;
        at_least("processing.max_results", self.max_results as u64, 1)?;
        at_least("processing.max_memory_mb", self.max_memory_mb, 64)?;
        at_least("processing.workers", self.workers as u64, 1)?;
        at_least("processing.max_spec_bytes", self.max_spec_bytes as u64, 64)?;
        at_least(
            "processing.max_filter_depth",
            self.max_filter_depth as u64,
            1,
        )?;
        at_least("processing.at_ingest_wait_ms", self.at_ingest_wait_ms, 1)
    }
}

/// Names and keys are each unique; keys long enough to be worth guessing.
fn validate_keys(keys: &[ApiKey]) -> Result<(), Error> {
    let mut names = std::collections::HashSet::new();
    let mut secrets = std::collections::HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        if k.name.is_empty() {
            return Err(invalid(
                &format!("api_keys[{i}].name"),
                &"",
                "must not be empty",
            ));
        }
        // The key itself is never quoted, only the entry's name.
        let about_key = |why: &str| Error::Config {
            message: format!("api_keys[{i}].key (name `{}`): {why}", k.name),
        };
        if k.key.len() < 8 {
            return Err(about_key("must be at least 8 characters"));
        }
        if !names.insert(k.name.as_str()) {
            return Err(invalid(
                &format!("api_keys[{i}].name"),
                &k.name,
                "is used twice",
            ));
        }
        if !secrets.insert(k.key.as_str()) {
            return Err(about_key("same key as another entry"));
        }
    }
    Ok(())
}

impl RateLimits {
    fn validate(&self) -> Result<(), Error> {
        for (key, rate) in [
            ("rate_limits.per_ip", self.per_ip),
            ("rate_limits.per_key", self.per_key),
            ("rate_limits.per_ip_public", self.per_ip_public),
        ] {
            if let Some(rate) = rate {
                if rate.per_second == 0 {
                    return Err(invalid(
                        &format!("{key}.per_second"),
                        &0,
                        "must be at least 1 (use null to disable the limit)",
                    ));
                }
                at_least(&format!("{key}.burst"), rate.burst as u64, 1)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_yaml("topics:\n  partitons: 3\n").unwrap_err();
        assert!(err.to_string().contains("partitons"), "{err}");
    }

    #[test]
    fn bad_value_quotes_key_and_value() {
        let err = Config::from_yaml("topics:\n  partitions: 0\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("topics.partitions") && msg.contains("`0`"),
            "{msg}"
        );
        let err = Config::from_yaml("brokers: 'localhost'\n").unwrap_err();
        assert!(err.to_string().contains("`localhost`"), "{err}");
    }

    #[test]
    fn allowed_origins_are_origins() {
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://a.b/path",
            "",
        ] {
            let yaml = format!("http:\n  allowed_origins: ['{bad}']\n");
            let err = Config::from_yaml(&yaml).unwrap_err().to_string();
            assert!(
                err.contains("http.allowed_origins") && err.contains(bad),
                "{err}"
            );
        }
        let yaml =
            "http:\n  allowed_origins: ['https://app.example.com', 'http://127.0.0.1:3000']\n";
        Config::from_yaml(yaml).unwrap();
    }

    #[test]
    fn limits_keep_their_flat_keys_in_sections() {
        let c = Config::from_yaml(
            "limits:\n  ws_max_message_bytes: 2048\n  drain_timeout_ms: 5\n  \
             max_unprocessed_records: null\n  max_streams_per_key: 3\n",
        )
        .unwrap();
        assert_eq!(c.limits.websocket.ws_max_message_bytes, 2048);
        assert_eq!(c.limits.shutdown.drain_timeout_ms, 5);
        assert_eq!(c.limits.ingest.max_streams_per_key, 3);
        assert_eq!(
            c.limits.server.max_body_bytes,
            1024 * 1024,
            "the rest default"
        );
        let err = Config::from_yaml("limits:\n  ws_max_mesage_bytes: 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`ws_max_mesage_bytes`") && err.contains("ws_max_message_bytes"),
            "{err}"
        );
        for key in ["drain_timeout_ms", "max_streams_per_key", "max_token_ttl_s"] {
            let err = Config::from_yaml(&format!("limits:\n  {key}: 0\n")).unwrap_err();
            assert!(err.to_string().contains(&format!("limits.{key}")), "{err}");
        }
    }

    #[test]
    fn one_address_never_gets_more_than_a_quarter_of_the_connections() {
        let fitted = ServerLimits::default().fitted(512);
        assert_eq!(fitted.max_connections, 512);
        assert_eq!(fitted.max_connections_per_ip, 128);
        let roomy = ServerLimits::default().fitted(1 << 20);
        assert_eq!(
            (roomy.max_connections, roomy.max_connections_per_ip),
            (10_000, 2_048),
            "the configured caps when they fit"
        );
        assert_eq!(ServerLimits::default().fitted(1).max_connections_per_ip, 1);
    }

    #[test]
    fn brokers_parse() {
        assert_eq!("embedded".parse::<Brokers>().unwrap(), Brokers::Embedded);
        assert_eq!(
            "a:1,b:2".parse::<Brokers>().unwrap(),
            Brokers::Bootstrap("a:1,b:2".into())
        );
        assert!("a:x".parse::<Brokers>().is_err());
    }

    #[test]
    fn api_key_debug_is_redacted() {
        let k = ApiKey::new("n".into(), "supersecretvalue".into(), false);
        assert!(!format!("{k:?}").contains("supersecret"));
    }
}
