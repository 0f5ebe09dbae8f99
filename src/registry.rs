//! The stream registry: which streams exist, who owns them, how they are processed, whether
//! they ended. It lives in the compacted topic `streamgate.streams` (key = stream id) and every
//! instance follows that topic into memory, so any instance can serve any stream and Kafka
//! stays the only shared state.
//!
//! Writes go to the topic first and are applied locally once acknowledged, so the instance
//! that wrote sees its own write at once. An instance asked about an id it does not know
//! catches up to the topic's end before it answers "not found".

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, Error};
use crate::kafka::{now_ms, TopicInfo, TopicProducer};
use crate::processor::ProcessorSpec;

/// How long a lookup of an unknown id may wait for the registry to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Open,
    Ended,
}

/// A stream as stored in the registry topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Name of the API key that started the stream.
    pub owner: String,
    pub processor: ProcessorSpec,
    pub state: StreamState,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
}

/// Live counters of one stream on this instance. They are not shared between instances.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub subscribers: AtomicU64,
    pub last_activity_ms: AtomicI64,
}

impl StreamStats {
    pub fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// A known stream: its registry record plus this instance's counters.
#[derive(Debug)]
pub struct StreamEntry {
    pub id: Uuid,
    record: RwLock<StreamRecord>,
    pub stats: StreamStats,
}

impl StreamEntry {
    pub fn record(&self) -> StreamRecord {
        self.record.read().expect("registry lock").clone()
    }

    pub fn is_open(&self) -> bool {
        self.record.read().expect("registry lock").state == StreamState::Open
    }

    pub fn processor(&self) -> ProcessorSpec {
        self.record.read().expect("registry lock").processor.clone()
    }

    /// The JSON shape of `GET /api/stream/{id}`.
    pub fn describe(&self) -> serde_json::Value {
        let r = self.record();
        let s = &self.stats;
        let last = s.last_activity_ms.load(Ordering::Relaxed);
        serde_json::json!({
            "stream_id": self.id,
            "owner": r.owner,
            "processor": r.processor,
            "state": r.state,
            "created_ms": r.created_ms,
            "ended_ms": r.ended_ms,
            "records_in": s.records_in.load(Ordering::Relaxed),
            "records_out": s.records_out.load(Ordering::Relaxed),
            "subscribers": s.subscribers.load(Ordering::Relaxed),
            "last_activity_ms": if last == 0 { r.created_ms } else { last },
        })
    }
}

/// The in-memory view of the registry topic, plus the producer that writes to it.
pub struct Registry {
    streams: RwLock<HashMap<Uuid, Arc<StreamEntry>>>,
    producer: TopicProducer,
    consumer: Arc<StreamConsumer>,
    topic: TopicInfo,
    /// Next offset to apply, per partition; lets lookups wait for a catch-up.
    applied: watch::Sender<Vec<i64>>,
}

impl Registry {
    /// Assigns the follower to every partition of the registry topic from the beginning.
    pub fn new(
        producer: TopicProducer,
        consumer: StreamConsumer,
        topic: TopicInfo,
    ) -> Result<Arc<Self>, Error> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..topic.partitions {
            tpl.add_partition_offset(&topic.name, p, Offset::Beginning)
                .map_err(|e| Error::kafka("assign registry partitions", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka("assign registry partitions", e))?;
        let (applied, _) = watch::channel(vec![0; topic.partitions as usize]);
        Ok(Arc::new(Self {
            streams: RwLock::new(HashMap::new()),
            producer,
            consumer: Arc::new(consumer),
            topic,
            applied,
        }))
    }

    /// Follows the registry topic until `shutdown` fires.
    pub async fn follow(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                msg = self.consumer.recv() => match msg {
                    Ok(m) => {
                        let id = m.key().and_then(|k| std::str::from_utf8(k).ok())
                            .and_then(|k| Uuid::parse_str(k).ok());
                        match (id, m.payload()) {
                            (Some(id), Some(payload)) => match serde_json::from_slice::<StreamRecord>(payload) {
                                Ok(record) => self.apply(id, record),
                                Err(e) => tracing::warn!(%id, error = %e, "skipping unreadable registry record"),
                            },
                            (Some(id), None) => {
                                self.streams.write().expect("registry lock").remove(&id);
                            }
                            (None, _) => tracing::warn!(offset = m.offset(), "skipping registry record without a stream id key"),
                        }
                        let (p, next) = (m.partition() as usize, m.offset() + 1);
                        self.applied.send_modify(|v| if p < v.len() && v[p] < next { v[p] = next });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "registry follower error");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }

    fn apply(&self, id: Uuid, record: StreamRecord) {
        let mut streams = self.streams.write().expect("registry lock");
        match streams.get(&id) {
            Some(entry) => *entry.record.write().expect("registry lock") = record,
            None => {
                streams.insert(
                    id,
                    Arc::new(StreamEntry {
                        id,
                        record: RwLock::new(record),
                        stats: StreamStats::default(),
                    }),
                );
            }
        }
    }

    /// Waits until everything in the registry topic up to now has been applied.
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), Error> {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let highs = tokio::task::spawn_blocking(move || {
            (0..topic.partitions)
                .map(|p| {
                    consumer
                        .fetch_watermarks(&topic.name, p, Duration::from_secs(5))
                        .map(|(_, high)| high)
                })
                .collect::<Result<Vec<i64>, _>>()
        })
        .await
        .map_err(|e| Error::Startup(format!("registry watermark task: {e}")))?
        .map_err(|e| Error::kafka("read registry watermarks", e))?;
        let mut rx = self.applied.subscribe();
        let caught_up = async {
            rx.wait_for(|applied| applied.iter().zip(&highs).all(|(a, h)| a >= h))
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(timeout, caught_up).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Startup("registry follower stopped".into())),
            Err(_) => Err(Error::Startup(format!(
                "registry did not catch up within {timeout:?}"
            ))),
        }
    }

    /// Starts a stream owned by `owner`; answers once the registry record is acknowledged.
    pub async fn create(
        &self,
        owner: &Principal,
        processor: ProcessorSpec,
    ) -> Result<Arc<StreamEntry>, ApiError> {
        let id = Uuid::new_v4();
        let record = StreamRecord {
            owner: owner.name.clone(),
            processor,
            state: StreamState::Open,
            created_ms: now_ms(),
            ended_ms: None,
        };
        self.write(id, &record).await?;
        self.apply(id, record);
        Ok(self.local(&id).expect("just inserted"))
    }

    /// Marks a stream ended; answers once the registry record is acknowledged.
    pub async fn end(&self, entry: &StreamEntry) -> Result<(), ApiError> {
        let mut record = entry.record();
        if record.state == StreamState::Ended {
            return Ok(());
        }
        record.state = StreamState::Ended;
        record.ended_ms = Some(now_ms());
        self.write(entry.id, &record).await?;
        self.apply(entry.id, record);
        Ok(())
    }

    async fn write(&self, id: Uuid, record: &StreamRecord) -> Result<(), ApiError> {
        let payload = serde_json::to_vec(record).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.producer
            .send_all(&id.to_string(), &[&payload])
            .await
            .map(|_| ())
    }

    /// A stream this instance already knows.
    pub fn local(&self, id: &Uuid) -> Option<Arc<StreamEntry>> {
        self.streams.read().expect("registry lock").get(id).cloned()
    }

    /// A stream by id, catching up with the registry topic first if it is not known yet.
    pub async fn find(&self, id: &Uuid) -> Option<Arc<StreamEntry>> {
        self.lookup(id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "registry catch-up failed");
            self.local(id)
        })
    }

    /// Like `find`, but tells "not in the registry" (`Ok(None)`) from "the registry could not
    /// be read to its end" (`Err`), for callers that must not guess.
    pub async fn lookup(&self, id: &Uuid) -> Result<Option<Arc<StreamEntry>>, Error> {
        if let Some(e) = self.local(id) {
            return Ok(Some(e));
        }
        self.catch_up(CATCH_UP_TIMEOUT).await?;
        Ok(self.local(id))
    }

    /// The stream if `caller` may use it. Another key's stream is reported as not found, so
    /// ids cannot be probed for existence.
    pub async fn find_owned(
        &self,
        id: &str,
        caller: &Principal,
    ) -> Result<Arc<StreamEntry>, ApiError> {
        let not_found = || ApiError::StreamNotFound(id.to_string());
        let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
        let entry = self.find(&uuid).await.ok_or_else(not_found)?;
        if entry.record.read().expect("registry lock").owner != caller.name {
            return Err(not_found());
        }
        Ok(entry)
    }

    /// Streams `caller` may see: its own, or all for an admin key. Newest first.
    pub fn list(&self, caller: &Principal) -> Vec<Arc<StreamEntry>> {
        let mut list: Vec<Arc<StreamEntry>> = self
            .streams
            .read()
            .expect("registry lock")
            .values()
            .filter(|e| {
                caller.admin || e.record.read().expect("registry lock").owner == caller.name
            })
            .cloned()
            .collect();
        list.sort_by_key(|e| std::cmp::Reverse(e.record().created_ms));
        list
    }
}
