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
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rdkafka::Message;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::Error;
pub use crate::kafka::records::StreamRecord;
use crate::kafka::records::{decode_registry, RegistryRecord};
use crate::kafka::{now_ms, Cluster, Follower, SendError, TopicProducer};
use crate::schema::Checker;
use crate::wire::{ProcessorSpec, StreamState, StreamView};

/// How long a lookup of an unknown id may wait for the registry to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a send waits again for an ending stream's end offset (a rare, short wait).
const END_OFFSET_POLL: Duration = Duration::from_millis(20);

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
    /// Its schemas, compiled on this instance when first needed (they never change).
    checkers: OnceLock<Result<Checkers, String>>,
}

/// A stream's compiled schemas.
#[derive(Debug, Default)]
pub struct Checkers {
    /// What its records must match (`schema`).
    pub input: Option<Checker>,
    /// What its results must match (`result_schema`).
    pub result: Option<Checker>,
}

/// The schemas a stream is started with, resolved (see `schema::prepare`).
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    pub input: Option<Value>,
    pub result: Option<Value>,
}

impl StreamEntry {
    fn new(id: Uuid, record: StreamRecord) -> Self {
        Self {
            id,
            record: RwLock::new(record),
            stats: StreamStats::default(),
            checkers: OnceLock::new(),
        }
    }

    /// The stream's compiled schemas; an error (a stored schema this instance cannot
    /// compile) refuses its records rather than letting them through unchecked.
    pub fn checkers(&self) -> Result<&Checkers, String> {
        self.checkers
            .get_or_init(|| {
                let record = self.record.read().expect("registry lock");
                let compile = |schema: &Option<Value>| {
                    schema
                        .as_ref()
                        .map(Checker::stored)
                        .transpose()
                        .map_err(|e| e.to_string())
                };
                Ok(Checkers {
                    input: compile(&record.schema)?,
                    result: compile(&record.result_schema)?,
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

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
            schema: r.schema,
            result_schema: r.result_schema,
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
        let follower = Arc::new(Follower::new(cluster, &topic, "streamgate-registry")?);
        let registry = Self::new(Box::new(KafkaStore {
            producer,
            follower: follower.clone(),
        }));
        let applying = registry.clone();
        let task = tokio::spawn(follower.clone().run(
            move |m| match decode_registry(m) {
                RegistryRecord::Stream(id, record) => applying.apply(id, Some(record)),
                RegistryRecord::Tombstone(id) => applying.apply(id, None),
                RegistryRecord::Unreadable(id, why) => {
                    tracing::warn!(%id, error = %why, "skipping unreadable registry record")
                }
                RegistryRecord::Foreign => tracing::warn!(
                    offset = m.offset(),
                    "skipping registry record without a stream id key"
                ),
            },
            shutdown,
        ));
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
                streams.insert(id, Arc::new(StreamEntry::new(id, record)));
            }
        }
    }

    /// Starts a stream owned by `owner`; answers once the registry record is acknowledged.
    pub async fn create(
        &self,
        owner: &Principal,
        processor: ProcessorSpec,
        schemas: Schemas,
    ) -> Result<Arc<StreamEntry>, RegistryError> {
        let id = Uuid::new_v4();
        let record = StreamRecord {
            owner: owner.name.clone(),
            processor,
            state: StreamState::Open,
            created_ms: now_ms(),
            ended_ms: None,
            end_offset: None,
            schema: schemas.input,
            result_schema: schemas.result,
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
        // An identity's grants reach other owners' streams (their scope is checked by the
        // caller of this).
        let shared = caller.shared.as_ref().is_some_and(|g| g.covers(&uuid));
        (mine || shared).then_some(entry)
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
        self.listed(|owner| caller.admin || owner == caller.name)
    }

    /// Every stream, newest first (what the stats snapshot is made of).
    pub fn all(&self) -> Vec<Arc<StreamEntry>> {
        self.listed(|_| true)
    }

    fn listed(&self, shown: impl Fn(&str) -> bool) -> Vec<Arc<StreamEntry>> {
        let mut list: Vec<Arc<StreamEntry>> = self
            .streams
            .read()
            .expect("registry lock")
            .values()
            .filter(|e| shown(&e.record.read().expect("registry lock").owner))
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
            let payload = record.encode();
            let ack = self
                .producer
                .enqueue(&id.to_string(), &payload, now_ms())
                .await?;
            ack.await?;
            Ok(())
        })
    }

    fn catch_up(&self, timeout: Duration) -> BoxFuture<'_, Result<(), RegistryError>> {
        let fence = self.follower.clone().fence(timeout);
        Box::pin(async move { fence.await.map_err(RegistryError::Behind) })
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
