//! Idempotency keys: a send retried with its key is never processed twice, whichever
//! instance receives the retry, across restarts, rebalances and crashes, with Kafka the only
//! shared state.
//!
//! The rule that makes it hold is a pure function of each input partition's log: every
//! record sent with a key carries it (and its part of the request, the attempt that stored
//! it and the request's digest, see `kafka::records::Keyed`), and a record is processed only
//! if it is the *first* record of its (stream, key, part) in the partition within the window
//! (`limits.idempotency_window_s`, from the first part's acceptance). Every reader of the
//! partition that applies the rule drops the same records.
//!
//! So that a new owner of a partition need not re-read a day of it, what the rule has seen is
//! kept in the key index: a compacted topic (`topics.keys`) with one [`KeyRecord`] per
//! (stream, key), written by the partition's owner as it processes, before it records its
//! progress past that record. A new owner catches the index up (its [`KeyIndex::fence`])
//! before it processes what it claimed, and goes on exactly where the last owner's decisions
//! left off. Every instance follows the index into memory, so the instance that receives a
//! retry can answer it (`replayed`, or 422 for another body under the same key) without
//! storing it; where it cannot know yet, the retry is stored and dropped at processing.
//!
//! Memory is bounded: a key is forgotten past the window, and a stream remembers at most
//! `limits.idempotency_keys_per_stream` keys (the oldest go first; a key forgotten is new
//! again, as one past the window is).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::Error;
use crate::kafka::records::{decode_key_record, Input, KeyRecord, Keyed};
use crate::kafka::{now_ms, partition_for, Cluster, Follower, Receipt, SendError, TopicProducer};

/// How long a key index write gathers others before it goes: records of one request come
/// together, and their key needs one write.
const WRITE_LINGER: Duration = Duration::from_millis(5);

/// What the rule says of one keyed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first record of its part: process it.
    First,
    /// Its part was stored before (by an earlier attempt): no result.
    Repeat,
}

/// One stream's remembered keys, and the order they came in (for the per-stream cap).
#[derive(Default)]
struct StreamKeys {
    keys: HashMap<String, KeyRecord>,
    order: VecDeque<String>,
}

/// The key index of this instance: every stream's keys within the window.
pub struct KeyIndex {
    streams: RwLock<HashMap<Uuid, StreamKeys>>,
    window_ms: i64,
    per_stream: usize,
    /// Writes and follows the index topic; `None` in the route tests.
    topic: Option<Topic>,
}

struct Topic {
    follower: Arc<Follower>,
    writes: mpsc::UnboundedSender<Write>,
    partitions: i32,
}

/// A key record to write, and who waits for its acknowledgement.
struct Write {
    partition: i32,
    kafka_key: String,
    record: KeyRecord,
    done: oneshot::Sender<Result<(), String>>,
}

impl KeyIndex {
    /// An index kept in memory only (route tests).
    #[cfg(test)]
    pub fn memory(window: Duration, per_stream: usize) -> Arc<Self> {
        Arc::new(Self {
            streams: RwLock::default(),
            window_ms: window.as_millis() as i64,
            per_stream: per_stream.max(1),
            topic: None,
        })
    }

    /// The index of `cluster`'s keys topic: follows it from its beginning (until `shutdown`)
    /// and answers once it has read it to its end.
    pub async fn start(
        cluster: &Cluster,
        window: Duration,
        per_stream: usize,
        write_timeout: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Self>, Vec<JoinHandle<()>>), Error> {
        let topic = cluster.topics.keys.clone();
        let producer = cluster.producer(&topic, Some(write_timeout))?;
        let follower = Arc::new(Follower::new(cluster, &topic, "idempotency key index")?);
        let (writes, rx) = mpsc::unbounded_channel();
        let index = Arc::new(Self {
            streams: RwLock::default(),
            window_ms: window.as_millis() as i64,
            per_stream: per_stream.max(1),
            topic: Some(Topic {
                follower: follower.clone(),
                writes,
                partitions: topic.partitions,
            }),
        });
        let applying = index.clone();
        let writing = tokio::spawn(write_records(producer, rx, shutdown.clone()));
        let following = tokio::spawn(follower.clone().run(
            move |m| match decode_key_record(m) {
                Some((stream, key, record)) => applying.apply(stream, key, record),
                None => tracing::warn!(offset = m.offset(), "skipping an unreadable key record"),
            },
            shutdown,
        ));
        follower
            .fence(Duration::from_secs(60))
            .await
            .map_err(Error::Startup)?;
        Ok((index, vec![following, writing]))
    }

    /// Waits until every key record stored up to now is applied here.
    pub async fn fence(&self, timeout: Duration) -> Result<(), String> {
        match &self.topic {
            Some(t) => t.follower.clone().fence(timeout).await,
            None => Ok(()),
        }
    }

    /// What this instance knows of `key` on `stream` now (for answering a retry).
    pub fn get(&self, stream: &Uuid, key: &str) -> Option<KeyRecord> {
        let streams = self.streams.read().expect("key index lock");
        let record = streams.get(stream)?.keys.get(key)?;
        (now_ms() - record.ts < self.window_ms).then(|| record.clone())
    }

    /// The rule, for the owner of `input`'s partition: whether the keyed record is its
    /// part's first, and (when the index changed) the acknowledgement of the index write
    /// that says so, which must come before progress is recorded past the record.
    pub fn decide(&self, input: &Input, keyed: &Keyed) -> (Verdict, Option<Receipt>) {
        let mut streams = self.streams.write().expect("key index lock");
        let keys = streams.entry(input.stream).or_default();
        let fresh = || KeyRecord {
            digest: keyed.digest.clone(),
            parts: keyed.parts,
            ts: input.received_ms,
            offset0: None,
            stored: Vec::new(),
        };
        match keys
            .keys
            .get(&keyed.key)
            .map(|r| input.received_ms - r.ts < self.window_ms)
        {
            Some(true) => {}
            // Past the window: new again.
            Some(false) => {
                keys.keys.insert(keyed.key.clone(), fresh());
            }
            None => {
                keys.order.push_back(keyed.key.clone());
                keys.keys.insert(keyed.key.clone(), fresh());
            }
        }
        let record = keys.keys.get_mut(&keyed.key).expect("just made");
        let verdict = match record.first_attempt(keyed.part) {
            Some(attempt) if attempt == keyed.attempt => return (Verdict::First, None),
            Some(_) => return (Verdict::Repeat, None),
            None if keyed.part >= record.parts => return (Verdict::Repeat, None),
            None => {
                record.store(keyed.part, keyed.attempt);
                if keyed.part == 0 {
                    record.offset0 = Some(input.offset);
                }
                Verdict::First
            }
        };
        let snapshot = record.clone();
        evict(keys, self.per_stream);
        drop(streams);
        (verdict, self.write(input.stream, &keyed.key, snapshot))
    }

    /// Writes `record` for (`stream`, `key`) to the index topic (gathered with others).
    fn write(&self, stream: Uuid, key: &str, record: KeyRecord) -> Option<Receipt> {
        let topic = self.topic.as_ref()?;
        let (done, acked) = oneshot::channel();
        let write = Write {
            partition: partition_for(&stream.to_string(), topic.partitions),
            kafka_key: KeyRecord::kafka_key(&stream, key),
            record,
            done,
        };
        if topic.writes.send(write).is_err() {
            return Some(futures_util::future::ready(Err(stopped())).boxed());
        }
        Some(
            async move {
                match acked.await {
                    Ok(Ok(())) => Ok(0),
                    Ok(Err(why)) => Err(SendError::Other(why)),
                    Err(_) => Err(stopped()),
                }
            }
            .boxed(),
        )
    }

    /// A record of the index topic (this instance's own included): merged into what is
    /// known, never undoing a part already stored.
    fn apply(&self, stream: Uuid, key: String, record: Option<KeyRecord>) {
        let mut streams = self.streams.write().expect("key index lock");
        let Some(record) = record else {
            if let Some(keys) = streams.get_mut(&stream) {
                keys.keys.remove(&key);
            }
            return;
        };
        let keys = streams.entry(stream).or_default();
        match keys.keys.get_mut(&key) {
            Some(known) if known.ts == record.ts => known.merge(&record),
            // A newer window's record replaces an older one, never the other way.
            Some(known) if known.ts > record.ts => {}
            Some(known) => *known = record,
            None => {
                keys.order.push_back(key.clone());
                keys.keys.insert(key, record);
                evict(keys, self.per_stream);
            }
        }
    }

    /// Forgets keys past the window.
    pub fn sweep(&self) {
        let now = now_ms();
        let mut streams = self.streams.write().expect("key index lock");
        streams.retain(|_, keys| {
            keys.keys.retain(|_, r| now - r.ts < self.window_ms);
            keys.order.retain(|k| keys.keys.contains_key(k));
            !keys.keys.is_empty()
        });
    }

    /// How long a key is remembered, in ms.
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }
}

fn stopped() -> SendError {
    SendError::Other("the key index writer stopped".into())
}

/// Drops a stream's oldest keys past its cap.
fn evict(keys: &mut StreamKeys, cap: usize) {
    while keys.keys.len() > cap {
        match keys.order.pop_front() {
            Some(oldest) => {
                keys.keys.remove(&oldest);
            }
            None => break,
        }
    }
}

/// A key's latest record gathered for one write: its partition, the record, who waits.
type Gathered = (i32, KeyRecord, Vec<oneshot::Sender<Result<(), String>>>);

/// Writes key records, gathering those that come within `WRITE_LINGER` and writing each key
/// once (its latest record: records only grow, so the latest says everything).
async fn write_records(
    producer: TopicProducer,
    mut rx: mpsc::UnboundedReceiver<Write>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => return,
            first = rx.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        tokio::time::sleep(WRITE_LINGER).await;
        let mut batch: HashMap<String, Gathered> = HashMap::new();
        let mut add = |w: Write| {
            let entry = batch
                .entry(w.kafka_key)
                .or_insert_with(|| (w.partition, w.record.clone(), Vec::new()));
            entry.1.merge(&w.record);
            entry.2.push(w.done);
        };
        add(first);
        while let Ok(w) = rx.try_recv() {
            add(w);
        }
        for (kafka_key, (partition, record, waiting)) in batch {
            let written = producer
                .enqueue_to(partition, &kafka_key, &record.encode(), now_ms(), None)
                .await;
            tokio::spawn(async move {
                let result = match written {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                for done in waiting {
                    let _ = done.send(result.clone());
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(offset: i64, received_ms: i64) -> Input {
        Input {
            stream: Uuid::from_u128(1),
            partition: 0,
            offset,
            received_ms,
            control: None,
            keyed: None,
            trace: None,
        }
    }

    fn keyed(attempt: u128, part: u32, parts: u32) -> Keyed {
        Keyed {
            key: "k".into(),
            attempt: Uuid::from_u128(attempt),
            part,
            parts,
            digest: "d".into(),
        }
    }

    #[test]
    fn each_part_is_processed_once_whatever_the_attempts() {
        let index = KeyIndex::memory(Duration::from_secs(60), 10);
        let now = now_ms();
        let decide = |offset, attempt, part| {
            index
                .decide(&input(offset, now), &keyed(attempt, part, 3))
                .0
        };
        // The first attempt stored parts 0 and 1 (a 503 after two records).
        assert_eq!(decide(0, 1, 0), Verdict::First);
        assert_eq!(decide(1, 1, 1), Verdict::First);
        // The retry stores all three: only its part 2 is new.
        assert_eq!(decide(5, 2, 0), Verdict::Repeat);
        assert_eq!(decide(6, 2, 1), Verdict::Repeat);
        assert_eq!(decide(7, 2, 2), Verdict::First);
        // Read again by a new owner (the same records): the same verdicts.
        assert_eq!(decide(0, 1, 0), Verdict::First);
        assert_eq!(decide(7, 2, 2), Verdict::First);
        assert_eq!(decide(5, 2, 0), Verdict::Repeat);
        assert!(index.get(&Uuid::from_u128(1), "k").unwrap().complete());
    }

    #[test]
    fn past_the_window_a_key_is_new_again_and_a_stream_remembers_at_most_its_cap() {
        let index = KeyIndex::memory(Duration::from_millis(100), 2);
        assert_eq!(
            index.decide(&input(0, 1_000), &keyed(1, 0, 1)).0,
            Verdict::First
        );
        assert_eq!(
            index.decide(&input(1, 1_050), &keyed(2, 0, 1)).0,
            Verdict::Repeat
        );
        assert_eq!(
            index.decide(&input(2, 1_200), &keyed(3, 0, 1)).0,
            Verdict::First
        );
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            let k = Keyed {
                key: key.into(),
                ..keyed(9, 0, 1)
            };
            index.decide(&input(10 + i as i64, 1_200), &k);
        }
        let streams = index.streams.read().unwrap();
        let keys = &streams[&Uuid::from_u128(1)].keys;
        assert_eq!(keys.len(), 2);
        assert!(
            keys.contains_key("b") && keys.contains_key("c"),
            "the oldest went"
        );
    }

    #[test]
    fn records_read_back_merge_and_never_undo_a_part() {
        let index = KeyIndex::memory(Duration::from_secs(60), 10);
        let stream = Uuid::from_u128(1);
        index.decide(&input(0, now_ms()), &keyed(1, 0, 2));
        let mut elsewhere = index.get(&stream, "k").unwrap();
        elsewhere.stored.clear();
        elsewhere.store(1, Uuid::from_u128(1));
        index.apply(stream, "k".into(), Some(elsewhere));
        assert!(index.get(&stream, "k").unwrap().complete());
    }
}
