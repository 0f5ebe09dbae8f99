//! What every handler shares: handles to the components, no logic. Built by `server.rs` over
//! the broker, or over in-memory stand-ins by the route tests.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::auth::KeyStore;
use crate::config::{self, Limits};
use crate::delivery::{Archive, Router};
use crate::ingest::Ingest;
use crate::kafka::BrokerHealth;
use crate::lifecycle::PhaseWatch;
use crate::limits::{Limiter, Seats};
use crate::metrics::Metrics;

use super::stats::SharedStats;
use crate::registry::Registry;

pub struct AppState {
    /// Body, WebSocket and timeout limits (`limits:` in the config).
    pub limits: Limits,
    /// Browser origins allowed to call the API (`http.allowed_origins`); empty: no CORS.
    pub allowed_origins: Vec<String>,
    /// Processor settings; start requests are checked against their spec limits.
    pub processing: config::Processing,
    /// The broker's bootstrap address, as `/api/stats` shows it.
    pub brokers: String,
    /// Whether it is the embedded broker.
    pub embedded: bool,
    pub keys: KeyStore,
    pub limiter: Limiter,
    /// Results subscribers per key on this instance (`limits.max_subscribers_per_key`).
    pub subscriber_seats: Arc<Seats>,
    pub registry: Arc<Registry>,
    /// Writes records and markers into the input topic.
    pub ingest: Ingest,
    /// This instance's subscribers and the live results they get.
    pub router: Arc<Router>,
    /// Past results, for subscribers that resume.
    pub archive: Arc<dyn Archive>,
    pub broker: BrokerHealth,
    pub metrics: Arc<Metrics>,
    /// The stats snapshot shared by every `/api/stats` caller and live watcher.
    pub stats: SharedStats,
    /// Where the daemon is in its life: sessions watch it to refuse and close as it stops.
    pub phase: PhaseWatch,
    /// Whether this instance's processing stage is in its group (for `/readyz`).
    pub processing_joined: watch::Receiver<bool>,
    pub started: Instant,
}
