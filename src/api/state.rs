//! What every handler shares: handles to the components and to the configuration, no logic
//! and no copies. Built by `server.rs` over the broker, or over in-memory stand-ins by the
//! route tests.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::stats::SharedStats;
use crate::auth::KeyStore;
use crate::config::Config;
use crate::delivery::{Archive, Router};
use crate::ingest::Ingest;
use crate::kafka::BrokerHealth;
use crate::lifecycle::PhaseWatch;
use crate::metrics::Metrics;
use crate::quota::{Limiter, Seats};
use crate::registry::Registry;

pub struct AppState {
    /// The configuration the daemon runs with (limits, processing bounds, origins).
    pub config: Arc<Config>,
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
    /// Where the broker is and whether it answers.
    pub broker: BrokerHealth,
    pub metrics: Arc<Metrics>,
    /// The stats snapshot shared by every `/api/stats` caller and live watcher.
    pub stats: Arc<SharedStats>,
    /// Where the daemon is in its life: sessions watch it to refuse and close as it stops.
    pub phase: PhaseWatch,
    /// Whether this instance's processing stage is in its group (for `/readyz`).
    pub processing_joined: watch::Receiver<bool>,
    pub started: Instant,
}
