//! The results router: one consumer per instance over the results topic, fanning each result
//! out to this instance's subscribers of its stream.
//!
//! It reads only the results partitions this instance has subscribers for, so N instances do
//! not each read the whole topic. A partition is added when its first subscriber here
//! arrives, at the partition's end measured then (before the subscriber's replay measures
//! its own mark, so replay and live meet with no gap: see `replay.rs`), and released
//! `limits.results_partition_idle_ms` (a minute) after its last subscriber left, so a client
//! that reconnects finds it read.
//!
//! Each subscriber has a bounded queue. The router never waits on one: a subscriber whose
//! queue is full is detached and marked lagging, and its feed ends with a reason that says
//! where to resume. So a slow client only ever hurts itself, and memory per subscriber is
//! bounded by `limits.subscriber_queue` frames.
//!
//! The subscriber table needs no broker; [`Router::start`] adds the consumer that feeds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use super::{delivery_of, Delivery, DeliveryError, InvalidParam};
use crate::error::Error;
use crate::kafka::records::trace_of;
use crate::kafka::{now_ms, partition_for, Cluster, Counted};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::telemetry::{SpanKind, Telemetry};
use crate::wire::{Frame, Gap, Kind};

struct Slot {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    lagged: Arc<AtomicI64>,
    on_lag: OnLag,
    /// With `OnLag::Skip`: what was dropped and not yet reported; shared with the
    /// subscription, which reports it itself once its queue has drained.
    skipped: Arc<Mutex<Skipped>>,
}

/// Results dropped for a slow `on_lag=skip` subscriber and not yet reported.
#[derive(Debug, Default)]
struct Skipped {
    count: u64,
    /// The first dropped result's cursor.
    from: i64,
}

impl Skipped {
    /// The `gap` frame for what was skipped, if anything was; resets the count.
    fn report(&mut self, stream: Uuid) -> Option<Delivery> {
        if self.count == 0 {
            return None;
        }
        let gap = Gap {
            stream_id: stream,
            from_cursor: self.from,
            skipped: std::mem::take(&mut self.count),
        };
        Some(Delivery {
            kind: Kind::Gap,
            cursor: gap.from_cursor,
            frame: Utf8Bytes::from(Frame::Gap(gap).to_json()),
        })
    }
}

/// What happens to a subscriber whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLag {
    /// Detach it; its session closes with the cursor to resume from (the default).
    Close,
    /// Drop results until it catches up, then tell it what it missed in a `gap` frame.
    Skip,
}

impl OnLag {
    /// The `on_lag` query parameter (absent: close).
    pub fn parse(value: Option<&str>) -> Result<Self, InvalidParam> {
        match value {
            None | Some("close") => Ok(OnLag::Close),
            Some("skip") => Ok(OnLag::Skip),
            Some(other) => Err(InvalidParam(format!(
                "on_lag: `{other}` is not close or skip"
            ))),
        }
    }
}

/// `Slot::lagged` while the subscriber keeps up.
const NOT_LAGGED: i64 = -1;
/// Longest time between two looks for partitions left idle.
const RELEASE_CHECK: Duration = Duration::from_secs(5);
/// Longest wait for a partition's end when a first subscriber arrives.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

/// One results partition, as the reader sees it.
struct Partition {
    /// The next offset to read: how far routing got.
    next: AtomicI64,
    /// Whether it is read now; records of a partition no longer read are ignored.
    read: AtomicBool,
}

/// The results consumer, once started.
struct Reader {
    consumer: Arc<StreamConsumer<Counted>>,
    topic: String,
    partitions: Vec<Partition>,
    /// Traces the delivery of traced records' results.
    telemetry: Telemetry,
}

/// Why partitions are read: subscribers here per partition, and the partitions read now with
/// when their last subscriber left (`None` while they have some).
#[derive(Default)]
struct Reading {
    subscribers: HashMap<i32, usize>,
    read: HashMap<i32, Option<Instant>>,
}

/// The subscriber table and the consumer that feeds it.
pub struct Router {
    /// Per stream, its subscribers here by id (removing one is O(1), also among 10 000).
    subscribers: RwLock<HashMap<Uuid, HashMap<u64, Slot>>>,
    next_id: AtomicU64,
    /// Set by `start`.
    reader: std::sync::OnceLock<Reader>,
    reading: Mutex<Reading>,
    /// One partition is added at a time: however many first subscribers arrive at once (or
    /// keep arriving while the broker is gone), one watermark request is out, holding one
    /// blocking thread, not one each.
    adding: tokio::sync::Mutex<()>,
    /// How long a results partition is still read after its last subscriber here left.
    idle_release: Duration,
    queue: usize,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    pub rx: mpsc::Receiver<Delivery>,
    lagged: Arc<AtomicI64>,
    skipped: Arc<Mutex<Skipped>>,
    router: Arc<Router>,
    stream: Uuid,
    id: u64,
}

impl Subscription {
    /// Once the router detached this subscriber because its queue was full: the cursor of
    /// the first result it could not queue, where the subscriber should resume.
    pub fn lagged(&self) -> Option<i64> {
        let c = self.lagged.load(Ordering::Acquire);
        (c != NOT_LAGGED).then_some(c)
    }

    /// With `on_lag=skip`: the `gap` frame for results dropped while the queue was full, once
    /// the subscriber has read everything queued before them (call it when the queue is
    /// empty), so the last gap is reported whether or not another result comes.
    pub fn take_gap(&self) -> Option<Delivery> {
        let gap = self
            .skipped
            .lock()
            .expect("skipped lock")
            .report(self.stream);
        if gap.is_some() {
            self.router.metrics.delivery.gaps_sent.inc();
        }
        gap
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.router.unsubscribe(&self.stream, self.id);
    }
}

impl Router {
    /// An empty subscriber table; `limits.subscriber_queue` frames per subscriber, partitions
    /// released `limits.results_partition_idle_ms` after their last subscriber left.
    pub fn new(
        queue: usize,
        idle_release: Duration,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            subscribers: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            reader: std::sync::OnceLock::new(),
            reading: Mutex::default(),
            adding: tokio::sync::Mutex::new(()),
            idle_release,
            queue,
            registry,
            metrics,
        })
    }

    /// Starts the results consumer, reading nothing until a subscriber needs a partition
    /// ([`Self::read_partition_of`]). Reads until `shutdown`.
    pub async fn start(
        self: &Arc<Self>,
        cluster: &Cluster,
        telemetry: Telemetry,
        shutdown: watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>, Error> {
        // Past the broker's retention, go on from the oldest result it keeps (not the newest):
        // `run` sees the jump and tells the subscribers concerned.
        let consumer: StreamConsumer<Counted> = cluster
            .requests
            .create(&cluster.consumer_with(
                &format!("streamgate-router-{}", Uuid::new_v4()),
                &[("auto.offset.reset", "earliest")],
            ))
            .map_err(|e| Error::kafka("create results consumer", e))?;
        let topic = &cluster.topics.results;
        let _ = self.reader.set(Reader {
            consumer: Arc::new(consumer),
            topic: topic.name.clone(),
            partitions: (0..topic.partitions)
                .map(|_| Partition {
                    next: AtomicI64::new(0),
                    read: AtomicBool::new(false),
                })
                .collect(),
            telemetry,
        });
        Ok(tokio::spawn(self.clone().run(shutdown)))
    }

    /// The results partition of `stream`, once started.
    fn partition_of(&self, stream: &Uuid) -> Option<i32> {
        let reader = self.reader.get()?;
        Some(partition_for(
            &stream.to_string(),
            reader.partitions.len() as i32,
        ))
    }

    /// Whether this instance reads results partition `p` now.
    fn is_read(&self, p: i32) -> bool {
        self.reading
            .lock()
            .expect("reading lock")
            .read
            .contains_key(&p)
    }

    /// Makes sure the partition holding `stream`'s results is read, from its current end if
    /// it was not (read explicitly, not `Offset::End`, which librdkafka resolves only at the
    /// first fetch and would skip results produced in between). Call after [`Self::subscribe`]
    /// and before measuring a replay's mark: every result from then on reaches the
    /// subscriber live.
    pub async fn read_partition_of(&self, stream: &Uuid) -> Result<(), DeliveryError> {
        let (Some(reader), Some(p)) = (self.reader.get(), self.partition_of(stream)) else {
            return Ok(()); // not started: nothing to read (route tests)
        };
        if self.is_read(p) {
            return Ok(());
        }
        let _adding = tokio::time::timeout(WATERMARK_TIMEOUT, self.adding.lock())
            .await
            .map_err(|_| {
                DeliveryError::Unavailable(format!(
                    "results partition {p} not read yet, and the broker was not reached within \
                     {WATERMARK_TIMEOUT:?}"
                ))
            })?;
        if self.is_read(p) {
            return Ok(()); // added while this one waited
        }
        let (consumer, topic) = (reader.consumer.clone(), reader.topic.clone());
        let high = tokio::task::spawn_blocking(move || {
            consumer.fetch_watermarks(&topic, p, WATERMARK_TIMEOUT)
        })
        .await
        .map_err(|e| DeliveryError::Internal(format!("watermark task: {e}")))?
        .map_err(|e| DeliveryError::Unavailable(format!("read {} watermarks: {e}", reader.topic)))?
        .1;
        let mut reading = self.reading.lock().expect("reading lock");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&reader.topic, p, Offset::Offset(high))
            .map_err(|e| DeliveryError::Internal(format!("assign a results partition: {e}")))?;
        let partition = &reader.partitions[p as usize];
        partition.next.store(high, Ordering::Release);
        partition.read.store(true, Ordering::Release);
        if let Err(e) = reader.consumer.incremental_assign(&tpl) {
            partition.read.store(false, Ordering::Release);
            return Err(DeliveryError::Internal(format!(
                "assign a results partition: {e}"
            )));
        }
        let idle = (reading.subscribers.get(&p).copied().unwrap_or(0) == 0).then(Instant::now);
        reading.read.insert(p, idle);
        self.metrics
            .delivery
            .results_partitions_read
            .set(reading.read.len() as i64);
        Ok(())
    }

    /// Stops reading partitions whose last subscriber left more than `idle_release` ago.
    fn release_idle(&self) {
        let Some(reader) = self.reader.get() else {
            return;
        };
        let mut reading = self.reading.lock().expect("reading lock");
        let idle: Vec<i32> = reading
            .read
            .iter()
            .filter(|(_, since)| since.is_some_and(|t| t.elapsed() >= self.idle_release))
            .map(|(p, _)| *p)
            .collect();
        if idle.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in &idle {
            tpl.add_partition(&reader.topic, *p);
        }
        // Under the lock, so a subscriber cannot add one back in between.
        if let Err(e) = reader.consumer.incremental_unassign(&tpl) {
            tracing::warn!(error = %e, "idle results partitions not released");
            return;
        }
        for p in idle {
            reading.read.remove(&p);
            reader.partitions[p as usize]
                .read
                .store(false, Ordering::Release);
        }
        self.metrics
            .delivery
            .results_partitions_read
            .set(reading.read.len() as i64);
    }

    /// Counts a subscriber of `stream`'s partition (`+1`) or one gone (`-1`).
    fn count_subscriber(&self, stream: &Uuid, delta: isize) {
        let Some(p) = self.partition_of(stream) else {
            return;
        };
        let mut reading = self.reading.lock().expect("reading lock");
        let n = reading.subscribers.entry(p).or_default();
        *n = n.saturating_add_signed(delta);
        let now_idle = *n == 0;
        if now_idle {
            reading.subscribers.remove(&p);
        }
        if let Some(since) = reading.read.get_mut(&p) {
            *since = now_idle.then(Instant::now);
        }
    }

    pub fn subscribe(self: &Arc<Self>, stream: Uuid, on_lag: OnLag) -> Subscription {
        let (tx, rx) = mpsc::channel(self.queue);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lagged = Arc::new(AtomicI64::new(NOT_LAGGED));
        let skipped = Arc::new(Mutex::new(Skipped::default()));
        self.subscribers
            .write()
            .expect("router lock")
            .entry(stream)
            .or_default()
            .insert(
                id,
                Slot {
                    id,
                    tx,
                    lagged: lagged.clone(),
                    on_lag,
                    skipped: skipped.clone(),
                },
            );
        if let Some(e) = self.registry.local(&stream) {
            e.stats.subscribers.fetch_add(1, Ordering::Relaxed);
        }
        self.count_subscriber(&stream, 1);
        self.metrics.delivery.subscribers.inc();
        Subscription {
            rx,
            lagged,
            skipped,
            router: self.clone(),
            stream,
            id,
        }
    }

    fn unsubscribe(&self, stream: &Uuid, id: u64) {
        let mut subs = self.subscribers.write().expect("router lock");
        if let Some(slots) = subs.get_mut(stream) {
            if slots.remove(&id).is_some() {
                if let Some(e) = self.registry.local(stream) {
                    e.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
                }
                self.count_subscriber(stream, -1);
                self.metrics.delivery.subscribers.dec();
            }
            if slots.is_empty() {
                subs.remove(stream);
            }
        }
    }

    /// Reads the results partitions in use until `shutdown`. Results offsets are contiguous,
    /// so one past the position expected next means the broker dropped results before this
    /// reader got to them.
    async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(reader) = self.reader.get() else {
            return;
        };
        let partitions = reader.partitions.len() as i32;
        let check = (self.idle_release / 2).clamp(Duration::from_millis(50), RELEASE_CHECK);
        let mut release = tokio::time::interval(check);
        release.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                _ = shutdown.changed() => return,
                _ = release.tick() => {
                    self.release_idle();
                    continue;
                }
                msg = reader.consumer.recv() => msg,
            };
            let m = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "results router consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Some(partition) = reader.partitions.get(m.partition() as usize) else {
                continue;
            };
            let expected = partition.next.load(Ordering::Acquire);
            // Fetched before the partition was released, or before it was added again at a
            // later end: not routed (again).
            if !partition.read.load(Ordering::Acquire) || m.offset() < expected {
                continue;
            }
            if m.offset() > expected {
                self.missed(m.partition(), partitions, expected, m.offset());
            }
            partition.next.store(m.offset() + 1, Ordering::Release);
            let Some((stream, delivery)) = delivery_of(&m) else {
                continue;
            };
            let span = match reader.telemetry.enabled() {
                true => {
                    reader
                        .telemetry
                        .resume(trace_of(&m).as_ref(), "deliver", SpanKind::Consumer)
                }
                false => None,
            };
            if let Some(span) = &span {
                span.set("stream.id", stream.to_string());
                span.set("messaging.kafka.partition", i64::from(m.partition()));
                span.set("cursor", delivery.cursor);
            }
            // A results record's timestamp is when its input was accepted.
            if let (Kind::Result | Kind::Error, Some(accepted)) =
                (delivery.kind, m.timestamp().to_millis())
            {
                let latency = (now_ms() - accepted).max(0) as u64;
                self.metrics
                    .delivery
                    .observe_end_to_end(Duration::from_millis(latency));
            }
            let queued = self.deliver(stream, delivery);
            if let Some(span) = span {
                span.set("subscribers", queued as i64);
            }
        }
    }

    /// The broker dropped results `from..to` of `partition` before this reader got to them
    /// (it keeps little, as the embedded broker does, and this reader fell behind). Nothing
    /// is skipped in silence: subscribers of the streams in that partition are detached as
    /// lagging at `from`, so they resume there and the replay reports what is gone as a
    /// `gap`; `on_lag=skip` subscribers get the range in their next `gap` frame.
    fn missed(&self, partition: i32, partitions: i32, from: i64, to: i64) {
        tracing::warn!(
            partition,
            from,
            to,
            "results router fell behind the broker's retention; subscribers in the partition \
             are told of the missing range"
        );
        let mut dropped = Vec::new();
        {
            let subs = self.subscribers.read().expect("router lock");
            for (stream, slots) in subs.iter() {
                if partition_for(&stream.to_string(), partitions) != partition {
                    continue;
                }
                for slot in slots.values() {
                    match slot.on_lag {
                        OnLag::Close => {
                            slot.lagged.store(from, Ordering::Release);
                            self.metrics.delivery.lagged_closes.inc();
                            dropped.push((*stream, slot.id));
                        }
                        OnLag::Skip => {
                            let mut skipped = slot.skipped.lock().expect("skipped lock");
                            if skipped.count == 0 {
                                skipped.from = from;
                            }
                            skipped.count += (to - from) as u64;
                        }
                    }
                }
            }
        }
        for (stream, id) in dropped {
            self.unsubscribe(&stream, id);
        }
    }

    /// Whether every partition read now was read up to `ends` (per results partition, e.g.
    /// the high watermarks at a point in time). Partitions not read have no subscriber here.
    pub fn reached(&self, ends: &[i64]) -> bool {
        let Some(reader) = self.reader.get() else {
            return true;
        };
        reader.partitions.iter().zip(ends).all(|(p, end)| {
            !p.read.load(Ordering::Acquire) || p.next.load(Ordering::Acquire) >= *end
        })
    }

    /// Subscribers on this instance, of every stream.
    pub fn subscriber_count(&self) -> usize {
        let subs = self.subscribers.read().expect("router lock");
        subs.values().map(HashMap::len).sum()
    }

    /// Frames queued for this stream's subscribers on this instance, not yet written.
    pub fn backlog(&self, stream: &Uuid) -> u64 {
        let subs = self.subscribers.read().expect("router lock");
        subs.get(stream).map_or(0, |slots| {
            slots
                .values()
                .map(|s| (s.tx.max_capacity() - s.tx.capacity()) as u64)
                .sum()
        })
    }

    /// Queues a frame for every subscriber of `stream` here, never waiting on one; returns
    /// how many it was queued for.
    pub fn deliver(&self, stream: Uuid, delivery: Delivery) -> usize {
        let mut dropped = Vec::new();
        let mut queued = 0;
        {
            let subs = self.subscribers.read().expect("router lock");
            let Some(slots) = subs.get(&stream) else {
                return 0;
            };
            for slot in slots.values() {
                if slot.on_lag == OnLag::Skip {
                    queued += usize::from(self.deliver_or_skip(stream, slot, &delivery));
                    continue;
                }
                match slot.tx.try_send(delivery.clone()) {
                    Ok(()) => queued += 1,
                    Err(e) => {
                        if matches!(e, mpsc::error::TrySendError::Full(_)) {
                            slot.lagged.store(delivery.cursor, Ordering::Release);
                            self.metrics.delivery.lagged_closes.inc();
                        }
                        dropped.push(slot.id);
                    }
                }
            }
        }
        self.metrics.delivery.results_out.inc_by(queued as u64);
        // Detaching closes the queue: the session drains what was queued, then sees the end.
        for id in dropped {
            self.unsubscribe(&stream, id);
        }
        queued
    }

    /// For an `on_lag=skip` subscriber: queues the gap for earlier skipped results first, then
    /// the frame; what finds the queue full is counted as skipped. Whether it was queued.
    fn deliver_or_skip(&self, stream: Uuid, slot: &Slot, delivery: &Delivery) -> bool {
        let mut skipped = slot.skipped.lock().expect("skipped lock");
        if skipped.count > 0 {
            let (count, from) = (skipped.count, skipped.from);
            match skipped.report(stream).map(|gap| slot.tx.try_send(gap)) {
                Some(Ok(())) => self.metrics.delivery.gaps_sent.inc(),
                _ => {
                    // Still no room: this result is skipped too.
                    skipped.count = count + 1;
                    skipped.from = from;
                    return false;
                }
            }
        }
        match slot.tx.try_send(delivery.clone()) {
            Ok(()) => true,
            Err(_) => {
                skipped.count = 1;
                skipped.from = delivery.cursor;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::registry::{MemoryStore, Registry};

    /// A stream whose results live in `partition` of `partitions`.
    fn stream_in(partition: i32, partitions: i32) -> Uuid {
        std::iter::repeat_with(Uuid::new_v4)
            .find(|s| partition_for(&s.to_string(), partitions) == partition)
            .expect("some stream lands in every partition")
    }

    #[test]
    fn results_the_broker_dropped_are_reported_to_their_partitions_subscribers() {
        let router = Router::new(
            16,
            Duration::from_secs(60),
            Registry::new(Box::new(MemoryStore)),
            Arc::new(Metrics::new()),
        );
        let (here, elsewhere) = (stream_in(1, 3), stream_in(2, 3));
        let closing = router.subscribe(here, OnLag::Close);
        let skipping = router.subscribe(here, OnLag::Skip);
        let other = router.subscribe(elsewhere, OnLag::Close);

        router.missed(1, 3, 40, 95);

        assert_eq!(closing.lagged(), Some(40), "resumes where the loss began");
        assert!(router.backlog(&here) == 0 && skipping.lagged().is_none());
        let gap = skipping
            .take_gap()
            .expect("the skipping subscriber gets a gap");
        assert_eq!(gap.kind, Kind::Gap);
        let frame: serde_json::Value = serde_json::from_str(gap.frame.as_str()).unwrap();
        assert_eq!(
            (frame["from_cursor"].as_i64(), frame["skipped"].as_u64()),
            (Some(40), Some(55))
        );
        assert_eq!(other.lagged(), None, "another partition lost nothing");
    }
}
