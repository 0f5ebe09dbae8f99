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
    pub rate_limits: RateLimits,
    pub limits: Limits,
    pub http: Http,
    pub log: Log,
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
            rate_limits: RateLimits::default(),
            limits: Limits::default(),
            http: Http::default(),
            log: Log::default(),
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
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("admin", &self.admin)
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// Open streams one API key may have at once (429 `too_many_streams` past it).
    pub max_streams_per_key: usize,
    /// Results subscribers one API key may have open at once on one instance (429
    /// `too_many_subscribers` past it).
    pub max_subscribers_per_key: usize,
    /// Records stored in one input partition and not yet processed, at most: a send past it
    /// gets 429 `backlog_full`, so nothing accepted can be dropped by the broker's retention
    /// before it is processed. `null`: 50 000 on the embedded broker (which keeps 5 MiB
    /// or 100 000 record batches per partition), 1 000 000 on a real one.
    pub max_unprocessed_records: Option<u64>,
    /// The same in bytes (counted for this instance's writes). `null`: 4 MiB on the
    /// embedded broker, 1 GiB on a real one.
    pub max_unprocessed_bytes: Option<u64>,
    /// Most records in one send request (413 above it): bounds what one request costs in
    /// memory and in its answer, however small its lines.
    pub max_records_per_request: usize,
    /// How long a send may wait for the broker's acknowledgement before answering 503.
    pub send_timeout_ms: u64,
    /// Results buffered per WebSocket subscriber before it counts as lagging.
    pub subscriber_queue: usize,
    /// How long an instance keeps reading a results partition after its last subscriber
    /// there left (a client that reconnects within it finds the partition read already).
    pub results_partition_idle_ms: u64,
    /// Records sent over one WebSocket that may await their broker ack at once.
    pub ws_max_in_flight: usize,
    /// Largest WebSocket message accepted from a client.
    pub ws_max_message_bytes: usize,
    /// Kernel send buffer of every client connection (SO_SNDBUF). `null` leaves the kernel's
    /// autotuning (up to `net.ipv4.tcp_wmem` max, 4 MiB by default); a fixed size bounds the
    /// kernel memory a slow client can pin and makes it count as lagging sooner.
    pub socket_send_buffer_bytes: Option<usize>,
    /// How often the daemon pings each WebSocket client.
    pub ws_ping_interval_ms: u64,
    /// A WebSocket client silent this long (no frame, no pong), or any client that takes this
    /// long to accept what is written to it (an SSE subscriber that stopped reading), is
    /// considered dead and its connection is dropped.
    pub ws_idle_timeout_ms: u64,
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
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// Longest lifetime of a scoped stream token (`POST /api/stream/{id}/tokens`); a longer
    /// `ttl_s` is refused with 400.
    pub max_token_ttl_s: u64,
    /// Longest shutdown waits for in-flight requests before closing their connections.
    pub shutdown_timeout_ms: u64,
    /// After that, longest shutdown waits for everything acknowledged to be processed and
    /// delivered to connected subscribers before closing them with 1001.
    pub drain_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_records_per_request: 100_000,
            max_unprocessed_records: None,
            max_unprocessed_bytes: None,
            max_streams_per_key: 10_000,
            max_subscribers_per_key: 10_000,
            send_timeout_ms: 10_000,
            subscriber_queue: 1024,
            results_partition_idle_ms: 60_000,
            ws_max_in_flight: 1024,
            ws_max_message_bytes: 1024 * 1024,
            socket_send_buffer_bytes: None,
            ws_ping_interval_ms: 15_000,
            ws_idle_timeout_ms: 45_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 2_048,
            max_token_ttl_s: 86_400,
            shutdown_timeout_ms: 10_000,
            drain_timeout_ms: 10_000,
        }
    }
}

impl Limits {
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

    /// Checks values serde cannot: ranges, duplicates, empty strings.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, value: &dyn fmt::Display, why: &str| {
            Err(Error::Config {
                message: format!("{key}: `{value}` {why}"),
            })
        };
        if self.topics.partitions < 1 {
            return bad(
                "topics.partitions",
                &self.topics.partitions,
                "must be at least 1",
            );
        }
        let p = &self.processing;
        for (key, value, least) in [
            ("processing.max_record_ms", p.max_record_ms, 1),
            ("processing.max_results", p.max_results as u64, 1),
            ("processing.max_memory_mb", p.max_memory_mb, 64),
            ("processing.workers", p.workers as u64, 1),
            ("processing.max_spec_bytes", p.max_spec_bytes as u64, 64),
            ("processing.max_filter_depth", p.max_filter_depth as u64, 1),
            ("processing.at_ingest_wait_ms", p.at_ingest_wait_ms, 1),
            (
                "limits.header_read_timeout_ms",
                self.limits.header_read_timeout_ms,
                1,
            ),
            (
                "limits.max_records_per_request",
                self.limits.max_records_per_request as u64,
                1,
            ),
            (
                "limits.body_read_timeout_ms",
                self.limits.body_read_timeout_ms,
                1,
            ),
            (
                "limits.max_header_bytes",
                self.limits.max_header_bytes as u64,
                8192,
            ),
            (
                "limits.max_connections",
                self.limits.max_connections as u64,
                1,
            ),
            (
                "limits.max_connections_per_ip",
                self.limits.max_connections_per_ip as u64,
                1,
            ),
        ] {
            if value < least {
                return bad(key, &value, &format!("must be at least {least}"));
            }
        }
        if self.topics.replication_factor < 1 {
            return bad(
                "topics.replication_factor",
                &self.topics.replication_factor,
                "must be at least 1",
            );
        }
        for (key, name) in [
            ("topics.input", &self.topics.input),
            ("topics.results", &self.topics.results),
            ("topics.streams", &self.topics.streams),
        ] {
            let valid = !name.is_empty()
                && name.len() <= 249
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !valid {
                return bad(key, name, "is not a valid Kafka topic name");
            }
        }
        if self.processing.group_id.is_empty() {
            return bad("processing.group_id", &"", "must not be empty");
        }
        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            if k.name.is_empty() {
                return bad(&format!("api_keys[{i}].name"), &"", "must not be empty");
            }
            if k.key.len() < 8 {
                return Err(Error::Config {
                    message: format!(
                        "api_keys[{i}].key (name `{}`): must be at least 8 characters",
                        k.name
                    ),
                });
            }
            if !names.insert(k.name.as_str()) {
                return bad(&format!("api_keys[{i}].name"), &k.name, "is used twice");
            }
            if !keys.insert(k.key.as_str()) {
                return Err(Error::Config {
                    message: format!(
                        "api_keys[{i}].key (name `{}`): same key as another entry",
                        k.name
                    ),
                });
            }
        }
        for (key, rate) in [
            ("rate_limits.per_ip", self.rate_limits.per_ip),
            ("rate_limits.per_key", self.rate_limits.per_key),
        ] {
            if let Some(rate) = rate {
                if rate.per_second == 0 {
                    return bad(
                        &format!("{key}.per_second"),
                        &0,
                        "must be at least 1 (use null to disable the limit)",
                    );
                }
                if rate.burst == 0 {
                    return bad(&format!("{key}.burst"), &0, "must be at least 1");
                }
            }
        }
        let limits = [
            ("limits.max_body_bytes", self.limits.max_body_bytes),
            ("limits.subscriber_queue", self.limits.subscriber_queue),
            ("limits.ws_max_in_flight", self.limits.ws_max_in_flight),
            (
                "limits.ws_max_message_bytes",
                self.limits.ws_max_message_bytes,
            ),
            (
                "limits.send_timeout_ms",
                self.limits.send_timeout_ms as usize,
            ),
            (
                "limits.ws_ping_interval_ms",
                self.limits.ws_ping_interval_ms as usize,
            ),
            (
                "limits.ws_idle_timeout_ms",
                self.limits.ws_idle_timeout_ms as usize,
            ),
        ];
        for (key, value) in limits {
            if value == 0 {
                return bad(key, &value, "must be greater than 0");
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad(
                "log.level",
                &self.log.level,
                &format!("is not a valid filter: {e}"),
            );
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
        let k = ApiKey {
            name: "n".into(),
            key: "supersecretvalue".into(),
            admin: false,
        };
        assert!(!format!("{k:?}").contains("supersecret"));
    }
}
