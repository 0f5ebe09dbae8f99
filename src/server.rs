//! Runs the daemon from a bound listener until a shutdown future resolves: serves at once (the
//! start-up routes, see `api::serve`), connects to the broker, starts each component (each
//! builds its own Kafka clients from the cluster), then serves the API.
//!
//! The order of a graceful stop is what makes "nothing acknowledged is lost, and every
//! connected subscriber gets what was acknowledged before the signal" true; its phases are in
//! `lifecycle`:
//! 1. stop accepting, let in-flight requests finish (`limits.shutdown_timeout_ms`);
//! 2. drain (`limits.drain_timeout_ms`): wait until the input producer has no record
//!    outstanding, processing has caught up with the input topic, and the router has read
//!    the results partitions it reads (those with subscribers here) to their end; then each
//!    subscriber is sent what was routed to it and closed with 1001;
//! 3. stop processing and commit what was acknowledged, then flush the producers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::api::{self, App, AppState, Reloadable, TlsEdge};
use crate::auth::JwtVerifier;
use crate::config::{Brokers, Config};
use crate::delivery::{Replays, Router};
use crate::error::Error;
use crate::idempotency::KeyIndex;
use crate::ingest::backlog::{Bound as BacklogBound, ProgressReader};
use crate::ingest::{Backlog, Ingest, OneHop, RecordLimits, RECORD_FRAMING};
use crate::kafka::records::Input;
use crate::kafka::{Cluster, EmbeddedBroker, TopicProducer, FLUSH_TIMEOUT};
use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::Metrics;
use crate::processing::{AtIngest, Evaluator, Stage, StageWith};
use crate::quota::{self, Limiter, Seats};
use crate::registry::{Registry, StreamEntry};
use crate::reload::{self, Edge, Reloads};
use crate::telemetry::Telemetry;
use crate::wire::ProcessorSpec;

/// How often the drain looks again.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Runs the daemon on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run_reloadable(config, listener, shutdown, None).await
}

/// Like [`run`], applying the configurations `reloads` brings as they come (see `reload`).
pub async fn run_reloadable(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloads: Option<Reloads>,
) -> Result<(), Error> {
    config.validate()?;
    let embedded = match config.brokers {
        Brokers::Embedded => Some(Arc::new(EmbeddedBroker::start(&config.topics)?)),
        Brokers::Bootstrap(_) => None,
    };
    run_with(config, listener, shutdown, embedded, reloads).await
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
    run_with(config, listener, shutdown, embedded, None).await
}

/// Checks what a start would load besides the config itself: the TLS certificates, a JWKS
/// file and the named schemas' files (`streamctl serve --check`).
pub async fn check(config: &Config) -> Result<(), Error> {
    config.validate()?;
    if let Some(tls) = &config.http.tls {
        TlsEdge::new(tls)?;
    }
    config.named_schemas()?;
    if let Some(jwt) = config.auth.jwt.as_ref().filter(|j| j.jwks_file.is_some()) {
        JwtVerifier::start(jwt).await.map_err(|e| Error::Config {
            message: format!("auth.jwt: {e}"),
        })?;
    }
    Ok(())
}

async fn run_with(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    embedded: Option<Arc<EmbeddedBroker>>,
    reloads: Option<Reloads>,
) -> Result<(), Error> {
    config.validate()?;
    let mut config = config;
    let connections = connections_allowed();
    config.limits.server = config.limits.server.fitted(connections);
    prepare_listener(&listener, &config)?;
    let tls = match &config.http.tls {
        Some(settings) => Some(Arc::new(TlsEdge::new(settings)?)),
        None => None,
    };
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("listener address", e))?;
    let metrics = Arc::new(Metrics::new());
    let lifecycle = Arc::new(Lifecycle::new());
    let signalled = lifecycle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        signalled.enter(Phase::Draining);
    });
    let app = App::default();
    let mut draining = lifecycle.watch();
    let serving = tokio::spawn(api::serve(
        config.limits.clone(),
        metrics.clone(),
        app.clone(),
        tls.clone(),
        listener,
        async move { draining.reached(Phase::Draining).await },
    ));
    tracing::info!(%addr, tls = tls.is_some(), brokers = %config.brokers, "streamgate listening; connecting to the broker");

    let mut signal = lifecycle.watch();
    let started = tokio::select! {
        started = start(&config, embedded.as_deref(), metrics, &lifecycle) => Some(started),
        _ = signal.reached(Phase::Draining) => None,
    };
    let started = match started {
        Some(Ok(started)) => started,
        stopped_or_failed => {
            lifecycle.enter(Phase::Stopping);
            let _ = serving.await;
            // A signal during start-up (`None`) is a normal stop.
            return stopped_or_failed.transpose().map(|_| ());
        }
    };
    app.set(api::routes(started.state.clone()));
    if let Some(reloads) = reloads {
        let edge = Edge {
            state: started.state.clone(),
            app: app.clone(),
            tls,
            connections,
            stopping: lifecycle.stopping(),
        };
        tokio::spawn(edge.serve(reloads));
    }
    tracing::info!(
        partitions = started.cluster.topics.input.partitions,
        "streamgate ready"
    );

    let _ = serving.await;
    drain(&started, &lifecycle, &config).await;
    lifecycle.enter(Phase::Stopping);
    let Started {
        state,
        input,
        cluster,
        tasks,
        progress,
    } = started;
    for task in tasks {
        let _ = task.await;
    }
    input.flush(FLUSH_TIMEOUT);
    // Every Kafka client goes before the embedded broker they talk to.
    drop((state, input, cluster, progress, app));
    drop(embedded);
    tracing::info!("streamgate stopped");
    Ok(())
}

/// The running daemon: what serving and the graceful stop need.
struct Started {
    state: Arc<AppState>,
    cluster: Cluster,
    input: TopicProducer,
    progress: ProgressReader,
    /// Tasks that end at `Phase::Stopping`.
    tasks: Vec<JoinHandle<()>>,
}

/// Connects to the broker and starts every component.
async fn start(
    config: &Config,
    embedded: Option<&EmbeddedBroker>,
    metrics: Arc<Metrics>,
    lifecycle: &Lifecycle,
) -> Result<Started, Error> {
    let mut cluster = Cluster::connect(config, embedded).await?;
    cluster.requests = metrics.kafka_requests.clone();
    if embedded.is_some() {
        tracing::info!(
            bootstrap = cluster.bootstrap(),
            "embedded broker: data in memory only, gone when the daemon stops; at most 5 MiB \
             (or 100 000 record batches) kept per partition; Kafka tools can read it at this \
             address"
        );
    }
    let stopping = lifecycle.stopping();
    let limits = &config.limits;
    let send_timeout = limits.ingest.send_timeout();
    let (registry, follower) = Registry::start(&cluster, send_timeout, stopping.clone()).await?;
    let (keys, mut keys_tasks) = KeyIndex::start(
        &cluster,
        limits.ingest.idempotency_window(),
        limits.ingest.idempotency_keys_per_stream,
        send_timeout,
        stopping.clone(),
    )
    .await?;
    let router = Router::new(
        limits.delivery.subscriber_queue,
        Duration::from_millis(limits.delivery.results_partition_idle_ms),
        registry.clone(),
        metrics.clone(),
    );
    let telemetry = Telemetry::start(&config.telemetry, &Uuid::new_v4().to_string(), &metrics)?;
    let routing = router
        .start(&cluster, telemetry.clone(), stopping.clone())
        .await?;
    let input = cluster.producer(&cluster.topics.input, Some(send_timeout))?;
    let (records, bytes) = limits.ingest.unprocessed_bound(embedded.is_some());
    let backlog = Backlog::new(
        cluster.topics.input.partitions,
        Some(BacklogBound { records, bytes }),
        metrics.clone(),
    );
    let following = backlog.follow(&cluster, &config.processing.group_id, stopping.clone())?;
    // One-hop results share the input's producer session: a result and the next sends'
    // records travel in one produce request.
    let results = input.for_topic(&cluster.topics.results);
    let evaluator = Arc::new(Evaluator::new(
        &config.processing,
        results.max_message_bytes().saturating_sub(RECORD_FRAMING),
    )?);
    let one_hop = match config.processing.at_ingest {
        true => Some(Arc::new(OneHopAtIngest(AtIngest::start(
            evaluator.clone(),
            results,
            input.clone(),
            metrics.clone(),
            telemetry.clone(),
        ))) as Arc<dyn OneHop>),
        false => None,
    };
    let ingest = Ingest::new(
        Arc::new(input.clone()),
        metrics.clone(),
        RecordLimits {
            per_request: limits.ingest.max_records_per_request,
            record_bytes: input.max_message_bytes().saturating_sub(RECORD_FRAMING),
            order_timeout: send_timeout,
        },
        backlog,
        registry.clone(),
        one_hop,
        keys.clone(),
    )
    .traced(telemetry.clone());
    let stage_with = StageWith {
        registry: registry.clone(),
        input: input.clone(),
        evaluator,
        keys: keys.clone(),
        metrics: metrics.clone(),
        telemetry,
    };
    let (processing, processing_joined) =
        Stage::start(&cluster, &config.processing, stage_with, stopping.clone())?;
    let revocations = tokio::sync::watch::Sender::new(0);
    let credentials = reload::credentials(config, None, &revocations, stopping.clone()).await?;
    let state = Arc::new(AppState {
        config: Reloadable::new(config.clone()),
        credentials: Reloadable::new(credentials),
        limiter: Reloadable::new(Limiter::new(&config.rate_limits)),
        revocations,
        schemas: Arc::new(config.named_schemas()?),
        subscriber_seats: Seats::new(limits.delivery.max_subscribers_per_key),
        registry,
        ingest,
        router,
        archive: Arc::new(Replays::new(cluster.clone(), metrics.clone())),
        broker: cluster.health(embedded.is_some())?,
        metrics,
        stats: Default::default(),
        phase: lifecycle.watch(),
        processing_joined,
        started: Instant::now(),
    });
    let janitor = forget_idle(state.clone(), keys, stopping);
    keys_tasks.extend([processing, routing, follower, janitor, following]);
    Ok(Started {
        progress: ProgressReader::new(&cluster, &config.processing.group_id)?,
        state,
        cluster,
        input,
        tasks: keys_tasks,
    })
}

/// Step 2 of the stop (see the module doc), bounded by `limits.drain_timeout_ms`; says in
/// the log which step it did not finish.
async fn drain(started: &Started, lifecycle: &Lifecycle, config: &Config) {
    let began = Instant::now();
    let deadline = began + Duration::from_millis(config.limits.shutdown.drain_timeout_ms);
    let input = started.input.clone();
    let left = deadline.saturating_duration_since(Instant::now());
    let _ = tokio::task::spawn_blocking(move || input.flush(left)).await;
    // Everything stored before now (records sent later, through other instances, are not
    // waited for).
    let processed = match started.progress.ends().await {
        Ok(ends) => {
            until(deadline, || async {
                started.progress.reached(&ends).await.unwrap_or(false)
            })
            .await
        }
        Err(_) => false,
    };
    let routed = processed
        && match started
            .cluster
            .high_watermarks(&started.cluster.topics.results)
            .await
        {
            Ok(ends) => {
                let router = &started.state.router;
                until(deadline, || async { router.reached(&ends) }).await
            }
            Err(_) => false,
        };
    lifecycle.enter(Phase::Drained);
    let delivered = until(deadline, || async {
        started.state.router.subscriber_count() == 0
    })
    .await;
    let ms = began.elapsed().as_millis() as u64;
    if processed && routed && delivered {
        tracing::info!(
            ms,
            "drained: everything acknowledged was processed and delivered"
        );
    } else {
        tracing::warn!(
            ms,
            processed,
            routed,
            delivered,
            "drain incomplete within limits.drain_timeout_ms; subscribers resume from their \
             cursors"
        );
    }
}

/// Waits until `done` says so (`true`) or `deadline` passes (`false`).
async fn until<F, Fut>(deadline: Instant, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if done().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// File descriptors kept for everything but client connections: Kafka sockets, processor
/// worker pipes, files.
const RESERVED_FDS: u64 = 512;

/// Raises the open-files limit to its hard limit (idle connections must not be able to deny
/// service by exhausting it), and says how many client connections it leaves room for.
fn connections_allowed() -> usize {
    let (before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(before);
    let allowed = soft.saturating_sub(RESERVED_FDS).max(1) as usize;
    tracing::info!(
        soft_before = before,
        soft,
        hard,
        connections = allowed,
        "open-files limit"
    );
    allowed
}

/// One hop, as ingest sees it: the processing stage's accepting side.
struct OneHopAtIngest(Arc<AtIngest>);

impl OneHop for OneHopAtIngest {
    fn applies(&self, spec: &ProcessorSpec) -> bool {
        self.0.applies(spec)
    }

    fn write<'a>(
        &'a self,
        entry: &'a Arc<StreamEntry>,
        input: Input,
        payload: &'a [u8],
    ) -> BoxFuture<'a, BoxFuture<'static, bool>> {
        Box::pin(self.0.write(entry, input, payload))
    }
}

/// Drops the rate-limit state of callers that have been quiet for a while, and idempotency
/// keys past their window.
fn forget_idle(
    state: Arc<AppState>,
    keys: Arc<KeyIndex>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(quota::FORGET_INTERVAL);
        loop {
            tokio::select! {
                _ = stopping.changed() => return,
                _ = tick.tick() => {
                    state.limiter().forget_idle();
                    keys.sweep();
                }
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
    if let Some(bytes) = config.limits.server.socket_send_buffer_bytes {
        socket
            .set_send_buffer_size(bytes)
            .map_err(|e| Error::io("set the listener's send buffer size", e))?;
    }
    Ok(())
}
