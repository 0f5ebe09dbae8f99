//! The producer every write goes through: keyed, idempotent, acks=all, and answering only
//! with the broker's acknowledgement (the record's offset) or why there is none.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::{client_config, partition_for, Counted, Requests, TopicInfo};
use crate::error::Error;

/// A keyed producer for one topic that answers only with broker acknowledgements.
///
/// A failed delivery replaces the underlying librdkafka producer, at most once per
/// `REPLACE_INTERVAL`: an idempotent session with a failed record in it (a timeout, a broker
/// that lost the session, a fatal idempotence error) is not reused, and a fresh session
/// works with every broker.
///
/// Producers for several topics may share one session (`for_topic`): their records then
/// travel in the same produce requests, which costs the broker fewer requests than two
/// sessions would.
#[derive(Clone)]
pub struct TopicProducer {
    inner: Arc<ProducerInner>,
    topic: TopicInfo,
}

struct ProducerInner {
    producer: RwLock<FutureProducer<Counted>>,
    config: ClientConfig,
    /// Where its sessions count their requests.
    requests: Requests,
    /// Bound on waiting for the local queue and for the broker's ack.
    timeout: Duration,
    replaced_at: Mutex<Instant>,
}

/// The broker's acknowledgement of one record, to come: its offset (a receipt, not yet
/// the `ack` a client is sent).
pub type Receipt = futures_util::future::BoxFuture<'static, Result<i64, SendError>>;

/// Minimum time between two replacements of a producer.
const REPLACE_INTERVAL: Duration = Duration::from_secs(2);

/// Why a record was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    #[error("no acknowledgement from the broker within {0:?}")]
    Timeout(Duration),
    /// Not the producer's own failure: what a write depended on (the key index writer).
    #[error("{0}")]
    Other(String),
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
        requests: &Requests,
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
        let producer: FutureProducer<Counted> = requests
            .create(&c)
            .map_err(|e| Error::kafka("create producer", e))?;
        Ok(Self {
            inner: Arc::new(ProducerInner {
                producer: RwLock::new(producer),
                config: c,
                requests: requests.clone(),
                timeout: timeout.unwrap_or(Duration::from_secs(3600)),
                replaced_at: Mutex::new(Instant::now()),
            }),
            topic,
        })
    }

    /// A producer for `topic` on this producer's session (settings, timeout, replacement).
    pub fn for_topic(&self, topic: &TopicInfo) -> Self {
        Self {
            inner: self.inner.clone(),
            topic: topic.clone(),
        }
    }

    /// The largest message this producer sends (`message.max.bytes`: the operator's setting,
    /// or librdkafka's default of 1 000 000).
    pub fn max_message_bytes(&self) -> usize {
        self.inner
            .config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    }

    pub fn topic(&self) -> &TopicInfo {
        &self.topic
    }

    pub fn partition_for(&self, key: &str) -> i32 {
        partition_for(key, self.topic.partitions)
    }

    fn current(&self) -> FutureProducer<Counted> {
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
        match inner
            .requests
            .create::<FutureProducer<Counted>>(&inner.config)
        {
            Ok(fresh) => {
                tracing::warn!(topic = %self.topic.name, "starting a new producer session after a failed delivery");
                let old =
                    std::mem::replace(&mut *inner.producer.write().expect("producer lock"), fresh);
                // Destroying a librdkafka client can block while it tears down connections.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(e) => {
                tracing::error!(topic = %self.topic.name, error = %e, "cannot replace the producer")
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
        self.enqueue_to(self.partition_for(key), key, payload, timestamp_ms, headers)
            .await
    }

    /// `enqueue_with_headers` into a given partition, whatever the key: for records about a
    /// partition rather than a stream (one-hop confirmations, see `records`).
    pub async fn enqueue_to(
        &self,
        partition: i32,
        key: &str,
        payload: &[u8],
        timestamp_ms: i64,
        headers: Option<OwnedHeaders>,
    ) -> Result<impl Future<Output = Result<i64, SendError>> + Send + 'static, SendError> {
        let timeout = self.inner.timeout;
        let deadline = Instant::now() + timeout;
        let producer = self.current();
        let delivery: DeliveryFuture = loop {
            let mut record = FutureRecord::to(&self.topic.name)
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

    /// Waits for queued records to be delivered, up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.current().flush(timeout) {
            tracing::warn!(error = %e, topic = %self.topic.name, "producer flush incomplete");
        }
    }
}
