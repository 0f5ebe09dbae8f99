//! Runs the daemon from a bound listener until a shutdown future resolves: starts the broker
//! connection and each component (each builds its own Kafka clients from the cluster), then
//! serves the API.
//!
//! Shutdown order matters for "nothing acknowledged is lost": stop accepting, let in-flight
//! sends finish (warp's graceful shutdown), close WebSockets with 1001, stop processing and
//! commit what was acknowledged, then flush the producers.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::AppState;
use crate::auth::KeyStore;
use crate::config::{Brokers, Config};
use crate::delivery::{Replays, Router};
use crate::error::Error;
use crate::ingest::backlog::Bound as BacklogBound;
use crate::ingest::{Backlog, Ingest, RecordLimits, RECORD_FRAMING};
use crate::kafka::{Cluster, EmbeddedBroker, FLUSH_TIMEOUT};
use crate::limits::{self, Limiter, Seats};
use crate::metrics::Metrics;
use crate::processing::Processing;
use crate::registry::Registry;

/// Runs the daemon on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.validate()?;
    let embedded = match config.brokers {
        Brokers::Embedded => Some(Arc::new(EmbeddedBroker::start(&config.topics)?)),
        Brokers::Bootstrap(_) => None,
    };
    run_embedded(config, listener, shutdown, embedded).await
}

/// Like [`run`], on an embedded broker the caller started and can use too (`streamctl bench
/// --embedded --baseline` produces to it directly).
pub async fn run_embedded(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    // Kept alive for the daemon's lifetime; dropping it stops the embedded cluster.
    embedded: Option<Arc<EmbeddedBroker>>,
) -> Result<(), Error> {
    config.validate()?;
    let mut config = config;
    config.limits.max_connections = connections_allowed(config.limits.max_connections);
    prepare_listener(&listener, &config)?;
    let cluster = Cluster::connect(&config, embedded.as_deref()).await?;
    if embedded.is_some() {
        tracing::info!(
            bootstrap = cluster.bootstrap(),
            "embedded broker: data in memory only, gone when the daemon stops; at most 5 MiB \
             (or 100 000 record batches) kept per partition; Kafka tools can read it at this \
             address"
        );
    }
    let (shutdown_tx, stopping) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());

    let (registry, follower) =
        Registry::start(&cluster, config.limits.send_timeout(), stopping.clone()).await?;
    let router = Router::new(
        config.limits.subscriber_queue,
        registry.clone(),
        metrics.clone(),
    );
    let routing = router.start(&cluster, stopping.clone()).await?;
    let input = cluster.producer(&cluster.topics.input, Some(config.limits.send_timeout()))?;
    let (records, bytes) = config.limits.unprocessed_bound(embedded.is_some());
    let backlog = Backlog::new(
        cluster.topics.input.partitions,
        Some(BacklogBound { records, bytes }),
        metrics.clone(),
    );
    let following = backlog.follow(&cluster, &config.processing.group_id, stopping.clone())?;
    let ingest = Ingest::new(
        Arc::new(input.clone()),
        metrics.clone(),
        RecordLimits {
            per_request: config.limits.max_records_per_request,
            record_bytes: input.max_message_bytes().saturating_sub(RECORD_FRAMING),
        },
        backlog,
    );
    let processing = Processing::start(
        &cluster,
        &config.processing,
        registry.clone(),
        ingest.clone(),
        metrics.clone(),
        stopping.clone(),
    )?;
    let state = Arc::new(AppState {
        limits: config.limits.clone(),
        processing: config.processing.clone(),
        brokers: cluster.bootstrap().to_string(),
        embedded: embedded.is_some(),
        keys: KeyStore::new(&config.api_keys),
        limiter: Limiter::new(&config.rate_limits),
        subscriber_seats: Seats::new(config.limits.max_subscribers_per_key),
        registry,
        ingest,
        router,
        archive: Arc::new(Replays::new(cluster.clone(), metrics.clone())),
        broker: cluster.health()?,
        metrics,
        stats: Default::default(),
        shutdown: stopping.clone(),
        started: Instant::now(),
    });
    let janitor = forget_idle_callers(state.clone(), stopping.clone());

    tracing::info!(
        addr = %listener.local_addr().map_err(|e| Error::io("listener address", e))?,
        brokers = %config.brokers,
        partitions = cluster.topics.input.partitions,
        "streamgate listening"
    );
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = shutdown_tx.send(true);
    };
    crate::api::serve(state.clone(), listener, signal).await;

    for task in [processing, routing, follower, janitor, following] {
        let _ = task.await;
    }
    input.flush(FLUSH_TIMEOUT);
    // Every Kafka client goes before the embedded broker they talk to.
    drop((state, input, cluster));
    drop(embedded);
    tracing::info!("streamgate stopped");
    Ok(())
}

/// File descriptors kept for everything but client connections: Kafka sockets, processor
/// worker pipes, files.
const RESERVED_FDS: u64 = 512;

/// Raises the open-files limit to its hard limit (idle connections must not be able to deny
/// service by exhausting it), and lowers `max_connections` to what the limit allows.
fn connections_allowed(configured: usize) -> usize {
    let (before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(before);
    let allowed = soft.saturating_sub(RESERVED_FDS).max(1) as usize;
    tracing::info!(soft_before = before, soft, hard, "open-files limit");
    if configured > allowed {
        tracing::warn!(
            configured,
            allowed,
            "limits.max_connections is more than the open-files limit allows; using {allowed}"
        );
        return allowed;
    }
    configured
}

/// Drops the rate-limit state of callers that have been quiet for a while.
fn forget_idle_callers(
    state: Arc<AppState>,
    mut stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(limits::FORGET_INTERVAL);
        loop {
            tokio::select! {
                _ = stopping.changed() => return,
                _ = tick.tick() => state.limiter.forget_idle(),
            }
        }
    })
}

/// Socket options every accepted connection inherits (Linux).
fn prepare_listener(listener: &TcpListener, config: &Config) -> Result<(), Error> {
    let socket = socket2::SockRef::from(listener);
    // Frames are written whole, so Nagle's algorithm would only delay results (by up to a
    // delayed-ACK timeout).
    socket
        .set_tcp_nodelay(true)
        .map_err(|e| Error::io("set TCP_NODELAY on the listener", e))?;
    if let Some(bytes) = config.limits.socket_send_buffer_bytes {
        socket
            .set_send_buffer_size(bytes)
            .map_err(|e| Error::io("set the listener's send buffer size", e))?;
    }
    Ok(())
}
