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
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::Error;
use crate::kafka::{now_ms, Cluster, SendError, TopicInfo, TopicProducer};
use crate::wire::{ProcessorSpec, StreamState, StreamView};

/// How long a lookup of an unknown id may wait for the registry to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a send waits again for an ending stream's end offset (a rare, short wait).
const END_OFFSET_POLL: Duration = Duration::from_millis(20);

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
    /// Where the end marker landed in the stream's input partition: records before it are
    /// the stream's, records after it are refused. Written once the marker is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_offset: Option<i64>,
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

    /// The stream as `GET /api/stream/{id}` shows it.
    pub fn view(&self) -> StreamView {
        let r = self.record();
        let s = &self.stats;
        let last = s.last_activity_ms.load(Ordering::Relaxed);
        StreamView {
            stream_id: self.id,
            owner: r.owner,
            processor: r.processor,
            state: r.state,
            created_ms: r.created_ms,
            ended_ms: r.ended_ms,
            records_in: s.records_in.load(Ordering::Relaxed),
            records_out: s.records_out.load(Ordering::Relaxed),
            subscribers: s.subscribers.load(Ordering::Relaxed),
            last_activity_ms: if last == 0 { r.created_ms } else { last },
        }
    }
}

/// Why the registry could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A registry record was not acknowledged by the broker.
    #[error("registry record not stored: {0}")]
    NotStored(#[from] SendError),
    /// The registry topic could not be read up to its end.
    #[error("registry not caught up: {0}")]
    Behind(String),
}

/// Where registry records are kept: the compacted topic (`KafkaStore`), or memory in the
/// route tests.
pub trait Store: Send + Sync + 'static {
    /// Writes one record; resolves once it is acknowledged.
    fn write<'a>(
        &'a self,
        id: Uuid,
        record: &'a StreamRecord,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;
    /// Resolves once every record stored up to now has been applied to this instance.
    fn catch_up(&self, timeout: Duration) -> BoxFuture<'_, Result<(), RegistryError>>;
}

/// The in-memory view of the registry, and the store behind it.
pub struct Registry {
    streams: RwLock<HashMap<Uuid, Arc<StreamEntry>>>,
    store: Box<dyn Store>,
    /// Bumped by every change to a stream's record, so views of the registry (the stats
    /// snapshot) know when they are stale.
    generation: AtomicU64,
}

impl Registry {
    /// A registry over `store`, empty until records are applied.
    pub fn new(store: Box<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            streams: RwLock::new(HashMap::new()),
            store,
            generation: AtomicU64::new(0),
        })
    }

    /// The registry of `cluster`'s streams topic: follows the topic from its beginning (until
    /// `shutdown`) and answers once it has read it to its end.
    pub async fn start(
        cluster: &Cluster,
        write_timeout: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Self>, JoinHandle<()>), Error> {
        let topic = cluster.topics.streams.clone();
        let producer = cluster.producer(&topic, Some(write_timeout))?;
        let consumer: StreamConsumer = cluster
            .consumer(&format!("streamgate-registry-{}", Uuid::new_v4()))
            .create()
            .map_err(|e| Error::kafka("create registry consumer", e))?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..topic.partitions {
            tpl.add_partition_offset(&topic.name, p, Offset::Beginning)
                .map_err(|e| Error::kafka("assign registry partitions", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka("assign registry partitions", e))?;
        let (applied, _) = watch::channel(vec![0; topic.partitions as usize]);
        let watermarks: BaseConsumer = cluster
            .client()
            .create()
            .map_err(|e| Error::kafka("create registry watermark client", e))?;
        let follower = Arc::new(Follower {
            consumer,
            watermarks,
            topic,
            applied,
            rounds: Mutex::default(),
        });
        let registry = Self::new(Box::new(KafkaStore {
            producer,
            follower: follower.clone(),
        }));
        let task = tokio::spawn(follower.run(registry.clone(), shutdown));
        registry
            .store
            .catch_up(REGISTRY_LOAD_TIMEOUT)
            .await
            .map_err(|e| Error::Startup(e.to_string()))?;
        Ok((registry, task))
    }

    fn apply(&self, id: Uuid, record: Option<StreamRecord>) {
        self.generation.fetch_add(1, Ordering::Release);
        let mut streams = self.streams.write().expect("registry lock");
        let Some(record) = record else {
            streams.remove(&id);
            return;
        };
        match streams.get(&id) {
            Some(entry) => {
                // A stream only moves forward (open, ended, ended at an offset): a record
                // applied late (the follower reading what this instance applied already)
                // never undoes a later one.
                let mut current = entry.record.write().expect("registry lock");
                let mut record = record;
                if current.state == StreamState::Ended {
                    record.state = StreamState::Ended;
                    record.ended_ms = record.ended_ms.or(current.ended_ms);
                    record.end_offset = record.end_offset.or(current.end_offset);
                }
                *current = record;
            }
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

    /// Starts a stream owned by `owner`; answers once the registry record is acknowledged.
    pub async fn create(
        &self,
        owner: &Principal,
        processor: ProcessorSpec,
    ) -> Result<Arc<StreamEntry>, RegistryError> {
        let id = Uuid::new_v4();
        let record = StreamRecord {
            owner: owner.name.clone(),
            processor,
            state: StreamState::Open,
            created_ms: now_ms(),
            ended_ms: None,
            end_offset: None,
        };
        self.store.write(id, &record).await?;
        self.apply(id, Some(record));
        Ok(self.local(&id).expect("just inserted"))
    }

    /// Marks a stream ended; answers once the registry record is acknowledged.
    pub async fn end(&self, entry: &StreamEntry) -> Result<(), RegistryError> {
        let mut record = entry.record();
        if record.state == StreamState::Ended {
            return Ok(());
        }
        record.state = StreamState::Ended;
        record.ended_ms = Some(now_ms());
        self.store.write(entry.id, &record).await?;
        self.apply(entry.id, Some(record));
        Ok(())
    }

    /// Records where the stream's end marker landed (after `end` and the marker itself).
    pub async fn ended_at(&self, entry: &StreamEntry, offset: i64) -> Result<(), RegistryError> {
        let mut record = entry.record();
        if record.end_offset.is_some() {
            return Ok(());
        }
        record.state = StreamState::Ended;
        record.end_offset = Some(offset);
        self.store.write(entry.id, &record).await?;
        self.apply(entry.id, Some(record));
        Ok(())
    }

    /// Waits until everything written to the registry before this call has been applied
    /// here. After it, a stream ended anywhere before the call shows as ended.
    pub async fn fence(&self, timeout: Duration) -> Result<(), RegistryError> {
        self.store.catch_up(timeout).await
    }

    /// The offset of the stream's end marker, waiting (up to `timeout`) for the instance
    /// that ended it to record it.
    pub async fn end_offset(
        &self,
        entry: &StreamEntry,
        timeout: Duration,
    ) -> Result<i64, RegistryError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(offset) = entry.record().end_offset {
                return Ok(offset);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(RegistryError::Behind(format!(
                    "stream {} is ending; where its end marker landed was not recorded within \
                     {timeout:?}",
                    entry.id
                )));
            }
            self.store.catch_up(left).await?;
            if entry.record().end_offset.is_none() {
                tokio::time::sleep(END_OFFSET_POLL.min(left)).await;
            }
        }
    }

    /// Changes whenever a stream is created, ended or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A stream this instance already knows.
    pub fn local(&self, id: &Uuid) -> Option<Arc<StreamEntry>> {
        self.streams.read().expect("registry lock").get(id).cloned()
    }

    /// A stream by id, catching up with the registry first if it is not known yet. Tells
    /// "not in the registry" (`Ok(None)`) from "the registry could not be read to its end".
    pub async fn lookup(&self, id: &Uuid) -> Result<Option<Arc<StreamEntry>>, RegistryError> {
        if let Some(e) = self.local(id) {
            return Ok(Some(e));
        }
        self.store.catch_up(CATCH_UP_TIMEOUT).await?;
        Ok(self.local(id))
    }

    /// The stream if `caller` may use it; `None` for an unknown id and for another key's
    /// stream alike, so ids cannot be probed for existence. A registry that cannot catch up
    /// answers from what this instance knows.
    pub async fn find_owned(&self, id: &str, caller: &Principal) -> Option<Arc<StreamEntry>> {
        let uuid = Uuid::parse_str(id).ok()?;
        let entry = self.lookup(&uuid).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "registry catch-up failed");
            self.local(&uuid)
        })?;
        let mine = entry.record.read().expect("registry lock").owner == caller.name;
        mine.then_some(entry)
    }

    /// How many open streams `owner` has.
    pub fn open_streams_of(&self, owner: &str) -> usize {
        self.streams
            .read()
            .expect("registry lock")
            .values()
            .filter(|e| {
                let r = e.record.read().expect("registry lock");
                r.owner == owner && r.state == StreamState::Open
            })
            .count()
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

/// How long start-up may take to read the registry topic to its end.
const REGISTRY_LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// The registry topic: written through an acknowledged producer, read by the follower.
struct KafkaStore {
    producer: TopicProducer,
    follower: Arc<Follower>,
}

impl Store for KafkaStore {
    fn write<'a>(
        &'a self,
        id: Uuid,
        record: &'a StreamRecord,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let payload = serde_json::to_vec(record).expect("registry records serialize");
            let ack = self
                .producer
                .enqueue(&id.to_string(), &payload, now_ms())
                .await?;
            ack.await?;
            Ok(())
        })
    }

    fn catch_up(&self, timeout: Duration) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(self.follower.clone().fence(timeout))
    }
}

/// Callers waiting for the next catch-up round.
#[derive(Default)]
struct Rounds {
    waiting: Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
    running: bool,
}

/// Reads the registry topic into the registry, and says how far it got.
struct Follower {
    consumer: StreamConsumer,
    /// Asks for the watermarks on a connection of its own: a broker may answer requests of
    /// one connection in order, and the follower's connection mostly has a fetch waiting
    /// (tansu holds it for `fetch.wait.max.ms`).
    watermarks: BaseConsumer,
    topic: TopicInfo,
    /// Next offset to apply, per partition; lets lookups wait for a catch-up.
    applied: watch::Sender<Vec<i64>>,
    rounds: Mutex<Rounds>,
}

impl Follower {
    async fn run(self: Arc<Self>, registry: Arc<Registry>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let m = tokio::select! {
                _ = shutdown.changed() => return,
                m = self.consumer.recv() => m,
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "registry follower error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let id = m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| Uuid::parse_str(k).ok());
            match (id, m.payload()) {
                (Some(id), Some(payload)) => {
                    match serde_json::from_slice::<StreamRecord>(payload) {
                        Ok(record) => registry.apply(id, Some(record)),
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "skipping unreadable registry record")
                        }
                    }
                }
                // A tombstone: the stream was deleted by compaction.
                (Some(id), None) => registry.apply(id, None),
                (None, _) => tracing::warn!(
                    offset = m.offset(),
                    "skipping registry record without a stream id key"
                ),
            }
            let (p, next) = (m.partition() as usize, m.offset() + 1);
            self.applied.send_modify(|v| {
                if p < v.len() && v[p] < next {
                    v[p] = next
                }
            });
        }
    }

    /// Waits until everything in the registry topic up to now has been applied. Callers at
    /// once share one round (one watermark request): a round serves those who were waiting
    /// when it began, so each is served by a watermark read after its call.
    async fn fence(self: Arc<Self>, timeout: Duration) -> Result<(), RegistryError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut rounds = self.rounds.lock().expect("rounds lock");
            rounds.waiting.push(tx);
            !std::mem::replace(&mut rounds.running, true)
        };
        if start {
            tokio::spawn(self.clone().run_rounds(timeout));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result.map_err(RegistryError::Behind),
            Ok(Err(_)) => Err(RegistryError::Behind("registry catch-up abandoned".into())),
            Err(_) => Err(RegistryError::Behind(format!(
                "the registry did not catch up within {timeout:?}"
            ))),
        }
    }

    /// Runs catch-up rounds while callers wait.
    async fn run_rounds(self: Arc<Self>, timeout: Duration) {
        loop {
            let waiting = {
                let mut rounds = self.rounds.lock().expect("rounds lock");
                if rounds.waiting.is_empty() {
                    rounds.running = false;
                    return;
                }
                std::mem::take(&mut rounds.waiting)
            };
            let result = self
                .clone()
                .catch_up(timeout)
                .await
                .map_err(|e| e.to_string());
            for tx in waiting {
                let _ = tx.send(result.clone());
            }
        }
    }

    /// One catch-up: reads the watermarks, then waits until they are applied.
    async fn catch_up(self: Arc<Self>, timeout: Duration) -> Result<(), RegistryError> {
        let this = self.clone();
        let highs = tokio::task::spawn_blocking(move || {
            (0..this.topic.partitions)
                .map(|p| {
                    this.watermarks
                        .fetch_watermarks(&this.topic.name, p, Duration::from_secs(5))
                        .map(|(_, high)| high)
                })
                .collect::<Result<Vec<i64>, _>>()
        })
        .await
        .map_err(|e| RegistryError::Behind(format!("registry watermark task: {e}")))?
        .map_err(|e| RegistryError::Behind(format!("read registry watermarks: {e}")))?;
        let mut rx = self.applied.subscribe();
        let caught_up = async {
            rx.wait_for(|applied| applied.iter().zip(&highs).all(|(a, h)| a >= h))
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(timeout, caught_up).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(RegistryError::Behind(
                "the registry follower stopped".into(),
            )),
            Err(_) => Err(RegistryError::Behind(format!(
                "the registry did not catch up within {timeout:?}"
            ))),
        }
    }
}

/// Registry records kept in memory: for route tests, which need no broker.
#[cfg(test)]
pub struct MemoryStore;

#[cfg(test)]
impl Store for MemoryStore {
    fn write<'a>(
        &'a self,
        _: Uuid,
        _: &'a StreamRecord,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async { Ok(()) })
    }

    fn catch_up(&self, _: Duration) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async { Ok(()) })
    }
}
