//! Streamgate: a real-time streaming gateway over Kafka.
//!
//! Clients open streams, send JSON records into them over HTTP or WebSocket, and receive the
//! processed results back over WebSocket or Server-Sent Events as they are produced. Kafka
//! is the only shared state, so any number of instances behave as one service.
//!
//! # Layout
//!
//! The modules follow the path a record takes:
//!
//! ```text
//! client ─▶ api ─▶ ingest ─▶ input topic ─▶ processing ─▶ results topic ─▶ delivery ─▶ api ─▶ client
//! ```
//!
//! and depend on each other in one direction:
//! `api → {ingest, processing, delivery} → registry → {auth, kafka} → wire` (the registry
//! knows who owns a stream, `auth::Principal`).
//!
//! - [`server`]: starts each component on the broker and serves the API until shutdown.
//! - [`reload`]: a running daemon's configuration replaced (SIGHUP): keys, tokens,
//!   certificates, rate limits; open connections whose credential went are closed.
//! - `lifecycle`: the daemon's phases (running, draining, drained, stopping), watched by all.
//! - `api`: the only part that speaks HTTP: the route table, TLS on the listener, quotas,
//!   authentication, CORS, the WebSocket and Server-Sent Events transports (one delivery
//!   feed), stats, the console page, the API's descriptions, and the one mapping of every
//!   error to a status.
//! - `ingest`: request bodies and frames become records in the input topic; end markers.
//! - `processing`: the consumer group that runs each stream's processor, at least once;
//!   with one hop (`processing.at_ingest`), also the accepting instance's side of it.
//! - `delivery`: the results router, replays, and one subscriber's feed (replay, then live).
//! - `registry`: the stream registry, kept in a compacted topic and followed in memory.
//! - `idempotency`: which keyed records count as repeats (a rule on each partition's log),
//!   and the key index that remembers it, kept in a compacted topic and followed in memory.
//! - [`kafka`]: client settings, the embedded broker, topics and partitioning, what is
//!   stored in them ([`kafka::records`]), the producer and the input log.
//! - [`wire`]: every type that crosses the wire to a client, shared with `streamctl`.
//! - [`config`]: the YAML schema, its sections' defaults and start-up validation.
//! - `auth`: who is calling: API keys compared in constant time, scoped stream tokens signed
//!   per key, identity-provider JWTs checked against a JWKS; streams are owned by name.
//! - `crypto`: the one TLS crypto provider (the listener, JWKS fetches).
//! - `quota`: per-IP and per-key rate limits (governor), and per-key seats.
//! - [`Error`]: the daemon's own failures, reported once at the binary's edge.
//! - `metrics`, `latency`: Prometheus metrics per component, and recent end-to-end latency.
//! - [`keyfile`]: the local key file behind zero-config use.
//! - `telemetry`: one trace per record across the Kafka hop, exported over OTLP.
//! - [`logging`]: tracing setup (colour on a terminal only; librdkafka lines rate-limited).

mod api;
mod auth;
pub mod config;
mod crypto;
mod delivery;
mod error;
mod idempotency;
mod ingest;
pub mod kafka;
pub mod keyfile;
mod latency;
mod lifecycle;
pub mod logging;
mod metrics;
mod processing;
mod quota;
mod registry;
pub mod reload;
mod schema;
pub mod server;
mod telemetry;

pub use streamgate_wire as wire;

#[cfg(test)]
mod properties;

pub use config::Config;
pub use error::Error;
pub use processing::sandbox::{worker_main, WORKER_ARG};
