//! Streamgate: a real-time streaming gateway over Kafka.
//!
//! Clients open streams, send JSON records into them over HTTP or WebSocket, and receive the
//! processed results back over WebSocket as they are produced. Kafka is the only shared state,
//! so any number of instances behave as one service.
//!
//! # Layout
//!
//! - [`server`]: wires everything together and runs the daemon from a bound listener.
//! - [`config`]: the YAML schema, defaults and start-up validation.
//! - [`api`]: warp routes, quotas, authentication and the WebSocket session.
//! - [`auth`]: API keys, compared in constant time; streams are owned by key name.
//! - [`limits`]: per-IP and per-key rate limits (governor).
//! - [`kafka`]: client config, embedded broker, topics, partitioning, acknowledged producing.
//! - [`registry`]: the stream registry, kept in a compacted topic and followed in memory.
//! - [`processor`]: what a stream does to each record (pure functions).
//! - [`jq`]: jq filters (the jaq crates), compiled once per thread.
//! - [`bounded`]: runs user code under a time bound, off the processing task.
//! - [`window`]: tumbling-window aggregates (pure state, rebuilt by replaying the input).
//! - [`latency`]: end-to-end latency over the last seconds, for `GET /api/stats`.
//! - [`processing`]: the consumer group that runs processors, at least once.
//! - [`results`]: the router fanning results out to WebSocket subscribers.
//! - [`replay`]: reading a stream's past results back from the broker (resume cursors).
//! - [`frames`]: the JSON wire format of everything a WebSocket client receives.
//! - [`error`]: daemon errors, and the one mapping of API errors to HTTP.
//! - [`keyfile`]: the local key file behind zero-config use.
//! - [`metrics`]: Prometheus metrics behind `/metrics`.
//! - [`logging`]: tracing setup.

pub mod api;
pub mod auth;
pub mod bounded;
pub mod config;
pub mod error;
pub mod frames;
pub mod jq;
pub mod kafka;
pub mod keyfile;
pub mod latency;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod processing;
pub mod processor;
pub mod registry;
pub mod replay;
pub mod results;
pub mod server;
pub mod window;

pub use config::Config;
pub use error::{ApiError, Error};
