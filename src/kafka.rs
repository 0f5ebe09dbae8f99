//! Everything that talks to Kafka setup-wise: client configuration, the embedded broker,
//! topic creation, partition choice, and the producer that only reports success after the
//! broker acknowledged.
//!
//! Partitioning is Streamgate's own and documented: `murmur2(stream id) & 0x7fffffff % N`,
//! Kafka's default (Java client) partitioner, so any Kafka tool can find a stream's partition
//! and a record's key fully determines where it lives in both the input and results topics.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::config::{Brokers, Config, Topics};
use crate::error::{ApiError, Error};

/// How long start-up waits for a real broker before giving up with an error.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch, the unit Kafka timestamps use.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Kafka's murmur2, as in the Java client's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` in a topic of `partitions` partitions.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions.max(1)
}

/// Base librdkafka settings for any client: bootstrap plus the config's pass-through map,
/// which wins over everything Streamgate sets so operators can tune or secure any client.
pub fn client_config(bootstrap: &str, extra: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "streamgate");
    for (k, v) in extra {
        c.set(k, v);
    }
    c
}

/// Longest wait of a fetch on the embedded broker. librdkafka's mock broker does not answer a
/// waiting fetch when data arrives, so the default (500 ms) would be added to every record's
/// latency, twice (processing, then results). Real brokers answer as soon as data arrives.
const EMBEDDED_FETCH_WAIT_MS: &str = "10";

/// The `kafka` settings for consumers: the operator's, plus a short fetch wait on the embedded
/// broker unless the operator set one.
pub fn consumer_settings(
    extra: &BTreeMap<String, String>,
    embedded: bool,
) -> BTreeMap<String, String> {
    let mut settings = extra.clone();
    if embedded {
        settings
            .entry("fetch.wait.max.ms".into())
            .or_insert_with(|| EMBEDDED_FETCH_WAIT_MS.into());
    }
    settings
}

/// Settings for a consumer in `group` (which only matters for the processing stage: the others
/// assign partitions themselves and never commit).
pub fn consumer_config(
    bootstrap: &str,
    extra: &BTreeMap<String, String>,
    group: &str,
) -> ClientConfig {
    let mut c = client_config(bootstrap, &BTreeMap::new());
    c.set("group.id", group)
        .set("enable.partition.eof", "false")
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        c.set(k, v);
    }
    c
}

/// librdkafka's in-process mock cluster, kept on a thread of its own because the handle is
/// not `Send`. Dropping this stops the cluster.
pub struct EmbeddedBroker {
    bootstrap: String,
    control: Option<std_mpsc::Sender<Control>>,
    thread: Option<JoinHandle<()>>,
}

/// Commands to the thread that owns the mock cluster.
enum Control {
    BrokerDown,
    BrokerUp,
    CreateTopic {
        name: String,
        partitions: i32,
        done: std_mpsc::Sender<Result<(), String>>,
    },
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with Streamgate's topics already created (the mock
    /// broker does not implement CreateTopics).
    pub fn start(topics: &Topics) -> Result<Self, Error> {
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<String, String>>();
        let (control_tx, control_rx) = std_mpsc::channel::<Control>();
        let topics = topics.clone();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for (name, partitions) in [
                    (&topics.input, topics.partitions),
                    (&topics.results, topics.partitions),
                    (&topics.streams, 1),
                ] {
                    if let Err(e) = cluster.create_topic(name, partitions, 1) {
                        let _ = ready_tx.send(Err(format!("create topic {name}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Serve commands until the owner drops its handle.
                while let Ok(cmd) = control_rx.recv() {
                    let result = match cmd {
                        Control::BrokerDown => cluster.broker_down(1),
                        Control::BrokerUp => cluster.broker_up(1),
                        Control::CreateTopic {
                            name,
                            partitions,
                            done,
                        } => {
                            let created = cluster.create_topic(&name, partitions, 1);
                            let _ = done.send(created.map_err(|e| e.to_string()));
                            continue;
                        }
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "embedded broker control failed");
                    }
                }
                drop(cluster);
            })
            .map_err(|e| Error::io("spawn embedded broker thread", e))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| Error::Startup("embedded broker thread died".into()))?
            .map_err(|e| Error::Startup(format!("embedded broker: {e}")))?;
        Ok(Self {
            bootstrap,
            control: Some(control_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Simulates an outage: the broker stops answering until `broker_up`.
    pub fn broker_down(&self) {
        if let Some(c) = &self.control {
            let _ = c.send(Control::BrokerDown);
        }
    }

    pub fn broker_up(&self) {
        if let Some(c) = &self.control {
            let _ = c.send(Control::BrokerUp);
        }
    }

    /// Creates a topic (the mock broker does not implement CreateTopics).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), Error> {
        let (done, result) = std_mpsc::channel();
        let control = self
            .control
            .as_ref()
            .expect("control channel lives until drop");
        control
            .send(Control::CreateTopic {
                name: name.to_string(),
                partitions,
                done,
            })
            .map_err(|_| Error::Startup("embedded broker thread died".into()))?;
        result
            .recv()
            .map_err(|_| Error::Startup("embedded broker thread died".into()))?
            .map_err(|e| Error::Startup(format!("create topic {name}: {e}")))
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.control.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A topic and how many partitions it has on the broker (read back, not assumed).
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: i32,
}

/// The three topics as they exist on the broker.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub input: TopicInfo,
    pub results: TopicInfo,
    pub streams: TopicInfo,
}

/// Creates the topics that are missing (the embedded broker has them already, and an
/// operator may have created them with tighter permissions), then reads back their partition
/// counts.
pub async fn ensure_topics(config: &Config, bootstrap: &str) -> Result<TopicLayout, Error> {
    let topics = &config.topics;
    let consumer: Arc<BaseConsumer> = Arc::new(
        client_config(bootstrap, &config.kafka)
            .create()
            .map_err(|e| Error::kafka("create metadata client", e))?,
    );
    let names = [
        topics.input.clone(),
        topics.results.clone(),
        topics.streams.clone(),
    ];
    let missing = {
        let consumer = consumer.clone();
        let names = names.clone();
        tokio::task::spawn_blocking(move || missing_topics(&consumer, &names))
            .await
            .map_err(|e| Error::Startup(format!("metadata task: {e}")))??
    };
    if !missing.is_empty() && config.brokers != Brokers::Embedded {
        let admin: AdminClient<DefaultClientContext> = client_config(bootstrap, &config.kafka)
            .create()
            .map_err(|e| Error::kafka("create admin client", e))?;
        let repl = || TopicReplication::Fixed(topics.replication_factor);
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|name| {
                if *name == topics.streams {
                    NewTopic::new(name, 1, repl()).set("cleanup.policy", "compact")
                } else {
                    NewTopic::new(name, topics.partitions, repl())
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&new_topics, &opts)
            .await
            .map_err(|e| Error::kafka(format!("create topics on {bootstrap}"), e))?;
        for r in results {
            match r {
                Ok(name) => tracing::info!(topic = %name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Startup(format!(
                        "cannot create topic {name}: {code}"
                    )))
                }
            }
        }
    }
    let counts = tokio::task::spawn_blocking(move || wait_for_partitions(&consumer, &names))
        .await
        .map_err(|e| Error::Startup(format!("metadata task: {e}")))??;
    Ok(TopicLayout {
        input: TopicInfo {
            name: topics.input.clone(),
            partitions: counts[0],
        },
        results: TopicInfo {
            name: topics.results.clone(),
            partitions: counts[1],
        },
        streams: TopicInfo {
            name: topics.streams.clone(),
            partitions: counts[2],
        },
    })
}

/// Topics of `names` the broker does not have. Waits for the broker to answer at all, so a
/// daemon started before its broker comes up by itself.
fn missing_topics(consumer: &BaseConsumer, names: &[String]) -> Result<Vec<String>, Error> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match consumer.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(md) => {
                return Ok(names
                    .iter()
                    .filter(|n| {
                        !md.topics()
                            .iter()
                            .any(|t| t.name() == n.as_str() && !t.partitions().is_empty())
                    })
                    .cloned()
                    .collect())
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "broker not reachable yet; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(Error::kafka(
                    format!("broker not reachable within {STARTUP_TIMEOUT:?}"),
                    e,
                ))
            }
        }
    }
}

/// Polls metadata until every topic reports its partitions (new topics take a moment).
fn wait_for_partitions(consumer: &BaseConsumer, names: &[String]) -> Result<Vec<i32>, Error> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let attempt = names
            .iter()
            .map(|name| {
                let md = consumer
                    .fetch_metadata(Some(name), Duration::from_secs(5))
                    .map_err(|e| format!("metadata for {name}: {e}"))?;
                match md.topics().first() {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        Ok(t.partitions().len() as i32)
                    }
                    _ => Err(format!("topic {name} has no partitions yet")),
                }
            })
            .collect::<Result<Vec<i32>, String>>();
        match attempt {
            Ok(counts) => return Ok(counts),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "waiting for topic metadata");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(Error::Startup(e)),
        }
    }
}

/// Is the broker reachable right now? Used by `/readyz`.
pub fn broker_reachable(consumer: &BaseConsumer, topic: &str) -> bool {
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(2))
        .map(|md| md.topics().first().is_some_and(|t| t.error().is_none()))
        .unwrap_or(false)
}

/// A keyed producer for one topic that answers only with broker acknowledgements.
///
/// A failed delivery replaces the underlying librdkafka producer, at most once per
/// `REPLACE_INTERVAL`: an idempotent session with a failed record in it (a timeout, a broker
/// that lost the session, a fatal idempotence error) is not reused, and a fresh session
/// works with every broker.
#[derive(Clone)]
pub struct TopicProducer {
    inner: Arc<ProducerInner>,
}

struct ProducerInner {
    producer: RwLock<FutureProducer>,
    config: ClientConfig,
    topic: TopicInfo,
    /// Bound on waiting for the local queue and for the broker's ack.
    timeout: Duration,
    replaced_at: Mutex<Instant>,
}

/// Minimum time between two replacements of a producer.
const REPLACE_INTERVAL: Duration = Duration::from_secs(2);

/// Why a record was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    #[error("no acknowledgement from the broker within {0:?}")]
    Timeout(Duration),
}

impl SendError {
    /// A failure after which the idempotent session must not be reused. A timed-out record
    /// leaves a gap in the session's sequence numbers, which librdkafka repairs with an epoch
    /// bump (KIP-360) that not every Kafka-protocol broker implements (tansu 0.6.0 does not):
    /// a fresh session works everywhere.
    fn breaks_session(&self) -> bool {
        match self {
            SendError::Kafka(KafkaError::MessageProduction(code)) => !matches!(
                code,
                RDKafkaErrorCode::QueueFull
                    | RDKafkaErrorCode::PurgeQueue
                    | RDKafkaErrorCode::PurgeInflight
            ),
            SendError::Timeout(_) => true,
            _ => false,
        }
    }
}

impl TopicProducer {
    /// An idempotent, acks=all producer. `timeout = None` retries forever (the processing
    /// stage must never drop a result); otherwise librdkafka gives up after `timeout`.
    pub fn new(
        bootstrap: &str,
        extra: &BTreeMap<String, String>,
        topic: TopicInfo,
        timeout: Option<Duration>,
    ) -> Result<Self, Error> {
        let mut c = client_config(bootstrap, &BTreeMap::new());
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                timeout.map_or(0, |t| t.as_millis() as u64).to_string(),
            );
        for (k, v) in extra {
            c.set(k, v);
        }
        let producer: FutureProducer =
            c.create().map_err(|e| Error::kafka("create producer", e))?;
        Ok(Self {
            inner: Arc::new(ProducerInner {
                producer: RwLock::new(producer),
                config: c,
                topic,
                timeout: timeout.unwrap_or(Duration::from_secs(3600)),
                replaced_at: Mutex::new(Instant::now()),
            }),
        })
    }

    pub fn topic(&self) -> &TopicInfo {
        &self.inner.topic
    }

    pub fn partition_for(&self, key: &str) -> i32 {
        partition_for(key, self.inner.topic.partitions)
    }

    fn current(&self) -> FutureProducer {
        self.inner.producer.read().expect("producer lock").clone()
    }

    /// Starts a new producer session if the last replacement is old enough.
    pub fn replace(&self) {
        let inner = &self.inner;
        {
            let mut at = inner.replaced_at.lock().expect("producer lock");
            if at.elapsed() < REPLACE_INTERVAL {
                return;
            }
            *at = Instant::now();
        }
        match inner.config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!(topic = %inner.topic.name, "starting a new producer session after a failed delivery");
                let old =
                    std::mem::replace(&mut *inner.producer.write().expect("producer lock"), fresh);
                // Destroying a librdkafka client can block while it tears down connections.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(e) => {
                tracing::error!(topic = %inner.topic.name, error = %e, "cannot replace the producer")
            }
        }
    }

    /// Hands one record to librdkafka (waiting while its queue is full, up to the timeout)
    /// and returns a future for the broker's acknowledgement: the record's offset.
    pub async fn enqueue(
        &self,
        key: &str,
        payload: &[u8],
        timestamp_ms: i64,
    ) -> Result<impl Future<Output = Result<i64, SendError>> + Send + 'static, SendError> {
        self.enqueue_with_headers(key, payload, timestamp_ms, None)
            .await
    }

    /// `enqueue` with Kafka headers on the record.
    pub async fn enqueue_with_headers(
        &self,
        key: &str,
        payload: &[u8],
        timestamp_ms: i64,
        headers: Option<OwnedHeaders>,
    ) -> Result<impl Future<Output = Result<i64, SendError>> + Send + 'static, SendError> {
        let partition = self.partition_for(key);
        let timeout = self.inner.timeout;
        let deadline = Instant::now() + timeout;
        let producer = self.current();
        let delivery: DeliveryFuture = loop {
            let mut record = FutureRecord::to(&self.inner.topic.name)
                .key(key)
                .payload(payload)
                .partition(partition)
                .timestamp(timestamp_ms);
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            match producer.send_result(record) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(SendError::Timeout(timeout))
                }
                Err((e, _)) => {
                    let e = SendError::from(e);
                    if e.breaks_session() {
                        self.replace();
                    }
                    return Err(e);
                }
            }
        };
        // Guard a little beyond librdkafka's own message timeout so a wedged client can
        // never hang a request.
        let guard = timeout + Duration::from_secs(2);
        let this = self.clone();
        Ok(async move {
            let result = match tokio::time::timeout(guard, delivery).await {
                Ok(Ok(Ok(delivery))) => Ok(delivery.offset),
                Ok(Ok(Err((e, _)))) => Err(SendError::Kafka(e)),
                Ok(Err(_canceled)) => Err(SendError::Kafka(KafkaError::Canceled)),
                Err(_) => Err(SendError::Timeout(guard)),
            };
            if result.as_ref().is_err_and(SendError::breaks_session) {
                this.replace();
            }
            result
        })
    }

    /// Sends records in order and returns their offsets once all are acknowledged. On failure
    /// the error says how many leading records were acknowledged (and so are stored).
    pub async fn send_all(&self, key: &str, payloads: &[&[u8]]) -> Result<Vec<i64>, ApiError> {
        let ts = now_ms();
        let mut pending = Vec::with_capacity(payloads.len());
        let mut enqueue_error = None;
        for p in payloads {
            match self.enqueue(key, p, ts).await {
                Ok(f) => pending.push(f),
                Err(e) => {
                    enqueue_error = Some(e);
                    break;
                }
            }
        }
        let mut offsets = Vec::with_capacity(pending.len());
        for f in pending {
            match f.await {
                Ok(offset) => offsets.push(offset),
                Err(e) => return Err(unavailable(&e, offsets.len())),
            }
        }
        match enqueue_error {
            Some(e) => Err(unavailable(&e, offsets.len())),
            None => Ok(offsets),
        }
    }

    /// Waits for queued records to be delivered, up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.current().flush(timeout) {
            tracing::warn!(error = %e, topic = %self.inner.topic.name, "producer flush incomplete");
        }
    }
}

/// A send failure as the client sees it: 503 with how many leading records were stored.
pub fn unavailable(e: &SendError, acknowledged: usize) -> ApiError {
    ApiError::BrokerUnavailable {
        message: e.to_string(),
        acknowledged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn partition_is_in_range_and_stable() {
        for n in 1..20 {
            let p = partition_for("9b2d6a0e-0000-4000-8000-000000000000", n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition_for("9b2d6a0e-0000-4000-8000-000000000000", n));
        }
    }
}
