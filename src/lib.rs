//! Streamgate: a real-time streaming gateway over Kafka.
//!
//! Clients open streams, send JSON records into them over HTTP or WebSocket, and receive the
//! processed results back over WebSocket as they are produced. Kafka is the only shared state,
//! so any number of instances behave as one service.
//!
//! # Layout
//!
//! The modules follow the path a record takes:
//!
//! ```text
//! client ─▶ api ─▶ ingest ─▶ input topic ─▶ processing ─▶ results topic ─▶ delivery ─▶ api ─▶ client
//! ```
//!
//! - [`server`]: starts each component on the broker and serves the API until shutdown.
//! - [`lifecycle`]: the daemon's phases (running, draining, drained, stopping), watched by all.
//! - [`api`]: warp routes, quotas, authentication, CORS, the WebSocket and Server-Sent Events
//!   transports (one delivery feed), stats; a thin shell.
//! - [`ingest`]: request bodies and frames become records in the input topic; end markers.
//! - [`processing`]: the consumer group that runs each stream's processor, at least once;
//!   with one hop (`processing.at_ingest`), also the accepting instance's side of it.
//! - [`delivery`]: the results router, replays, and one subscriber's feed (replay, then live).
//! - [`registry`]: the stream registry, kept in a compacted topic and followed in memory.
//! - [`kafka`]: client settings, the embedded broker, topics and partitioning, the producer.
//! - [`wire`]: every type that crosses the wire, shared with `streamctl`.
//! - [`config`]: the YAML schema, defaults and start-up validation.
//! - [`auth`]: API keys, compared in constant time; streams are owned by key name.
//! - [`tokens`]: scoped stream tokens (JWT) for web pages and pipelines, signed per key.
//! - [`limits`]: per-IP and per-key rate limits (governor).
//! - [`error`]: daemon errors, and the one mapping of API errors to HTTP.
//! - [`metrics`], [`latency`]: Prometheus metrics, and recent end-to-end latency for `top`.
//! - [`keyfile`]: the local key file behind zero-config use.
//! - [`logging`]: tracing setup (colour on a terminal only; librdkafka lines rate-limited).

pub mod api;
pub mod auth;
pub mod config;
pub mod delivery;
pub mod error;
pub mod ingest;
pub mod kafka;
pub mod keyfile;
pub mod latency;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod processing;
pub mod registry;
pub mod server;
pub mod tokens;
pub mod wire;

pub use config::Config;
pub use error::{ApiError, Error};
