//! Wires the daemon together and runs it: broker (embedded or real), topics, registry
//! follower, processing stage, results router and the HTTP API, from a bound listener until a
//! shutdown future resolves.
//!
//! Shutdown order matters for "nothing acknowledged is lost": stop accepting, let in-flight
//! sends finish (warp's graceful shutdown), close WebSockets with 1001, stop processing and
//! commit what was acknowledged, then flush the producers.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, StreamConsumer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::KeyStore;
use crate::config::{Brokers, Config};
use crate::error::Error;
use crate::kafka::{self, EmbeddedBroker, TopicProducer};
use crate::limits::{self, Limiter};
use crate::metrics::Metrics;
use crate::processing::Processing;
use crate::registry::Registry;
use crate::results::Router;

/// How long start-up may take to read the registry topic to its end.
const REGISTRY_LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Replays (subscribers starting from a cursor) running at once; more wait their turn.
const MAX_REPLAYS: usize = 64;
/// How long a broker reachability answer is reused.
const REACHABILITY_TTL: Duration = Duration::from_secs(1);
/// How long shutdown waits for queued records to reach the broker.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    pub keys: KeyStore,
    pub limiter: Limiter,
    pub registry: Arc<Registry>,
    pub router: Arc<Router>,
    /// Producer of client records into the input topic (bounded by `send_timeout_ms`).
    pub input: TopicProducer,
    /// Flips to `true` when the daemon shuts down; WebSocket sessions watch it.
    pub shutdown: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    /// Bootstrap servers, for clients made per request (replays).
    pub bootstrap: String,
    /// `kafka` settings for consumers (see `kafka::consumer_settings`).
    pub consumer_kafka: BTreeMap<String, String>,
    /// The results topic as it exists on the broker.
    pub results_topic: kafka::TopicInfo,
    /// Bounds concurrent replays: each holds a Kafka consumer while it runs.
    pub replays: Arc<tokio::sync::Semaphore>,
    /// Metadata client behind `/readyz`.
    probe: Arc<BaseConsumer>,
    /// The last reachability answer and when it was taken.
    reachable: std::sync::Mutex<Option<(Instant, bool)>>,
    pub started: Instant,
}

impl AppState {
    /// Consumer settings for a replay: no group, nothing committed.
    pub fn replay_config(&self) -> rdkafka::ClientConfig {
        kafka::consumer_config(
            &self.bootstrap,
            &self.consumer_kafka,
            &format!("streamgate-replay-{}", uuid::Uuid::new_v4()),
        )
    }

    /// Whether the broker answers a metadata request; the answer is reused for
    /// `REACHABILITY_TTL`, so every `/readyz` probe and live stats push does not each cost one.
    pub async fn broker_reachable(&self) -> bool {
        if let Some((at, ok)) = *self.reachable.lock().expect("reachability lock") {
            if at.elapsed() < REACHABILITY_TTL {
                return ok;
            }
        }
        let probe = self.probe.clone();
        let topic = self.input.topic().name.clone();
        let ok = tokio::task::spawn_blocking(move || kafka::broker_reachable(&probe, &topic))
            .await
            .unwrap_or(false);
        *self.reachable.lock().expect("reachability lock") = Some((Instant::now(), ok));
        ok
    }
}

/// Runs the daemon on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run_with(config, listener, shutdown, None).await
}

/// Like [`run`] with `brokers: embedded`, on an embedded broker the caller started and can use
/// too (`streamctl bench --embedded --baseline` produces to it directly).
pub async fn run_embedded(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    broker: Arc<EmbeddedBroker>,
) -> Result<(), Error> {
    run_with(config, listener, shutdown, Some(broker)).await
}

async fn run_with(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    broker: Option<Arc<EmbeddedBroker>>,
) -> Result<(), Error> {
    config.validate()?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| Error::io("listener address", e))?;
    // Accepted sockets inherit the listening socket's options (Linux): frames are written
    // whole, so Nagle's algorithm would only delay results (by up to a delayed-ACK timeout).
    socket2::SockRef::from(&listener)
        .set_tcp_nodelay(true)
        .map_err(|e| Error::io("set TCP_NODELAY on the listener", e))?;
    if let Some(bytes) = config.limits.socket_send_buffer_bytes {
        // Accepted sockets inherit the listening socket's buffer size.
        socket2::SockRef::from(&listener)
            .set_send_buffer_size(bytes)
            .map_err(|e| Error::io("set the listener's send buffer size", e))?;
    }
    // Kept alive for the daemon's lifetime; dropping it stops the embedded cluster.
    let embedded = match (broker, &config.brokers) {
        (Some(b), _) => Some(b),
        (None, Brokers::Embedded) => Some(Arc::new(EmbeddedBroker::start(&config.topics)?)),
        (None, Brokers::Bootstrap(_)) => None,
    };
    let consumer_kafka = kafka::consumer_settings(&config.kafka, embedded.is_some());
    let bootstrap = match (&embedded, &config.brokers) {
        (Some(e), _) => e.bootstrap_servers().to_string(),
        (None, b) => b.to_string(),
    };
    let layout = kafka::ensure_topics(&config, &bootstrap).await?;
    let send_timeout = Some(config.limits.send_timeout());
    let input = TopicProducer::new(
        &bootstrap,
        &config.kafka,
        layout.input.clone(),
        send_timeout,
    )?;
    let registry_producer = TopicProducer::new(
        &bootstrap,
        &config.kafka,
        layout.streams.clone(),
        send_timeout,
    )?;
    // The processing stage must never drop a result, so its producer retries forever.
    let results_producer =
        TopicProducer::new(&bootstrap, &config.kafka, layout.results.clone(), None)?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let instance = uuid::Uuid::new_v4();

    let registry_consumer: StreamConsumer = kafka::consumer_config(
        &bootstrap,
        &consumer_kafka,
        &format!("streamgate-registry-{instance}"),
    )
    .create()
    .map_err(|e| Error::kafka("create registry consumer", e))?;
    let registry = Registry::new(registry_producer, registry_consumer, layout.streams.clone())?;
    let follower = tokio::spawn(registry.clone().follow(shutdown_rx.clone()));
    registry.catch_up(REGISTRY_LOAD_TIMEOUT).await?;

    let router_consumer: StreamConsumer = kafka::consumer_config(
        &bootstrap,
        &consumer_kafka,
        &format!("streamgate-router-{instance}"),
    )
    .create()
    .map_err(|e| Error::kafka("create results consumer", e))?;
    let router = Router::new(
        router_consumer,
        &layout.results,
        config.limits.subscriber_queue,
        registry.clone(),
        metrics.clone(),
    )
    .await?;
    let router_task = tokio::spawn(router.clone().run(shutdown_rx.clone()));

    let mut processing_config =
        kafka::consumer_config(&bootstrap, &consumer_kafka, &config.processing.group_id);
    processing_config
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000");
    for (k, v) in &consumer_kafka {
        processing_config.set(k, v);
    }
    let processing = tokio::spawn(
        Processing {
            consumer_config: processing_config,
            input_topic: layout.input.name.clone(),
            results: results_producer.clone(),
            input: input.clone(),
            runner: crate::bounded::Runner::new(Duration::from_millis(
                config.processing.max_record_ms,
            )),
            max_results: config.processing.max_results,
            registry: registry.clone(),
            metrics: metrics.clone(),
        }
        .run(shutdown_rx.clone()),
    );

    let probe: BaseConsumer = kafka::client_config(&bootstrap, &config.kafka)
        .create()
        .map_err(|e| Error::kafka("create readiness probe", e))?;
    let limiter = Limiter::new(&config.rate_limits);
    let keys = KeyStore::new(&config.api_keys);
    let state = Arc::new(AppState {
        config,
        keys,
        limiter,
        registry,
        router,
        input: input.clone(),
        shutdown: shutdown_rx.clone(),
        metrics,
        bootstrap: bootstrap.clone(),
        consumer_kafka,
        results_topic: layout.results.clone(),
        replays: Arc::new(tokio::sync::Semaphore::new(MAX_REPLAYS)),
        probe: Arc::new(probe),
        reachable: std::sync::Mutex::new(None),
        started: Instant::now(),
    });

    let janitor = {
        let state = state.clone();
        let mut shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(limits::FORGET_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tick.tick() => state.limiter.forget_idle(),
                }
            }
        })
    };

    tracing::info!(
        %addr,
        brokers = %state.config.brokers,
        partitions = layout.input.partitions,
        "streamgate listening"
    );
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = shutdown_tx.send(true);
    };
    warp::serve(crate::api::routes(state.clone()))
        .incoming(listener)
        .graceful(signal)
        .run()
        .await;

    let _ = processing.await;
    let _ = router_task.await;
    let _ = follower.await;
    let _ = janitor.await;
    input.flush(FLUSH_TIMEOUT);
    results_producer.flush(FLUSH_TIMEOUT);
    // Every Kafka client goes before the embedded broker they talk to.
    drop((state, input, results_producer));
    drop(embedded);
    tracing::info!("streamgate stopped");
    Ok(())
}
