//! The results router: one consumer per instance over the results topic, fanning each result
//! out to this instance's subscribers of its stream.
//!
//! Each subscriber has a bounded queue. The router never waits on one: a subscriber whose
//! queue is full is detached and marked lagging, and its feed ends with a reason that says
//! where to resume. So a slow client only ever hurts itself, and memory per subscriber is
//! bounded by `limits.subscriber_queue` frames.
//!
//! The subscriber table needs no broker; [`Router::start`] adds the consumer that feeds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use super::{delivery_of, Delivery, InvalidParam};
use crate::error::Error;
use crate::kafka::{now_ms, partition_for, Cluster};
use crate::metrics::Metrics;
use crate::registry::Registry;
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

/// The subscriber table and the consumer that feeds it.
pub struct Router {
    subscribers: RwLock<HashMap<Uuid, Vec<Slot>>>,
    next_id: AtomicU64,
    /// Per results partition, the next offset to read (set by `start`): how far routing got.
    position: std::sync::OnceLock<Vec<AtomicI64>>,
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
            self.router.metrics.gaps_sent.inc();
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
    /// An empty subscriber table; `limits.subscriber_queue` frames per subscriber.
    pub fn new(queue: usize, registry: Arc<Registry>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            subscribers: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            position: std::sync::OnceLock::new(),
            queue,
            registry,
            metrics,
        })
    }

    /// Starts reading every results partition at its current end, read explicitly (not
    /// `Offset::End`, which librdkafka resolves only at the first fetch and would skip results
    /// produced in between): nothing produced after start-up is ever skipped, which the
    /// replay hand-over relies on. Reads until `shutdown`.
    pub async fn start(
        self: &Arc<Self>,
        cluster: &Cluster,
        shutdown: watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>, Error> {
        // Past the broker's retention, go on from the oldest result it keeps (not the newest):
        // `run` sees the jump and tells the subscribers concerned.
        let consumer: StreamConsumer = cluster
            .consumer_with(
                &format!("streamgate-router-{}", Uuid::new_v4()),
                &[("auto.offset.reset", "earliest")],
            )
            .create()
            .map_err(|e| Error::kafka("create results consumer", e))?;
        let ends = cluster.high_watermarks(&cluster.topics.results).await?;
        let mut tpl = TopicPartitionList::new();
        let _ = self
            .position
            .set(ends.iter().map(|e| AtomicI64::new(*e)).collect());
        for (p, end) in ends.into_iter().enumerate() {
            tpl.add_partition_offset(&cluster.topics.results.name, p as i32, Offset::Offset(end))
                .map_err(|e| Error::kafka("assign results partitions", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka("assign results partitions", e))?;
        Ok(tokio::spawn(self.clone().run(consumer, shutdown)))
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
            .push(Slot {
                id,
                tx,
                lagged: lagged.clone(),
                on_lag,
                skipped: skipped.clone(),
            });
        if let Some(e) = self.registry.local(&stream) {
            e.stats.subscribers.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.subscribers.inc();
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
            let before = slots.len();
            slots.retain(|s| s.id != id);
            if slots.len() < before {
                if let Some(e) = self.registry.local(stream) {
                    e.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
                }
                self.metrics.subscribers.dec();
            }
            if slots.is_empty() {
                subs.remove(stream);
            }
        }
    }

    /// Reads the results topic until `shutdown`. Results offsets are contiguous, so one past
    /// the position expected next means the broker dropped results before this reader got
    /// to them.
    async fn run(self: Arc<Self>, consumer: StreamConsumer, mut shutdown: watch::Receiver<bool>) {
        let position = self.position.get().map_or(&[][..], Vec::as_slice);
        let partitions = position.len() as i32;
        loop {
            let msg = tokio::select! {
                _ = shutdown.changed() => return,
                msg = consumer.recv() => msg,
            };
            let m = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "results router consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if let Some(next) = position.get(m.partition() as usize) {
                let expected = next.load(Ordering::Acquire);
                if m.offset() > expected {
                    self.missed(m.partition(), partitions, expected, m.offset());
                }
                next.store(m.offset() + 1, Ordering::Release);
            }
            let Some((stream, delivery)) = delivery_of(&m) else {
                continue;
            };
            // A results record's timestamp is when its input was accepted.
            if let (Kind::Result | Kind::Error, Some(accepted)) =
                (delivery.kind, m.timestamp().to_millis())
            {
                let latency = (now_ms() - accepted).max(0) as u64;
                self.metrics
                    .observe_end_to_end(Duration::from_millis(latency));
            }
            if delivery.kind == Kind::Result {
                if let Some(e) = self.registry.local(&stream) {
                    e.stats.records_out.fetch_add(1, Ordering::Relaxed);
                    e.stats.touch();
                }
            }
            self.deliver(stream, delivery);
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
                for slot in slots {
                    match slot.on_lag {
                        OnLag::Close => {
                            slot.lagged.store(from, Ordering::Release);
                            self.metrics.lagged_closes.inc();
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

    /// Per results partition, the next offset this router will read (empty before `start`).
    pub fn positions(&self) -> Vec<i64> {
        self.position.get().map_or_else(Vec::new, |p| {
            p.iter().map(|o| o.load(Ordering::Acquire)).collect()
        })
    }

    /// Subscribers on this instance, of every stream.
    pub fn subscriber_count(&self) -> usize {
        let subs = self.subscribers.read().expect("router lock");
        subs.values().map(Vec::len).sum()
    }

    /// Frames queued for this stream's subscribers on this instance, not yet written.
    pub fn backlog(&self, stream: &Uuid) -> u64 {
        let subs = self.subscribers.read().expect("router lock");
        subs.get(stream).map_or(0, |slots| {
            slots
                .iter()
                .map(|s| (s.tx.max_capacity() - s.tx.capacity()) as u64)
                .sum()
        })
    }

    /// Queues a frame for every subscriber of `stream` here, never waiting on one.
    pub fn deliver(&self, stream: Uuid, delivery: Delivery) {
        let mut dropped = Vec::new();
        {
            let subs = self.subscribers.read().expect("router lock");
            let Some(slots) = subs.get(&stream) else {
                return;
            };
            for slot in slots {
                if slot.on_lag == OnLag::Skip {
                    self.deliver_or_skip(stream, slot, &delivery);
                    continue;
                }
                match slot.tx.try_send(delivery.clone()) {
                    Ok(()) => self.metrics.results_out.inc(),
                    Err(e) => {
                        if matches!(e, mpsc::error::TrySendError::Full(_)) {
                            slot.lagged.store(delivery.cursor, Ordering::Release);
                            self.metrics.lagged_closes.inc();
                        }
                        dropped.push(slot.id);
                    }
                }
            }
        }
        // Detaching closes the queue: the session drains what was queued, then sees the end.
        for id in dropped {
            self.unsubscribe(&stream, id);
        }
    }

    /// For an `on_lag=skip` subscriber: queues the gap for earlier skipped results first, then
    /// the frame; what finds the queue full is counted as skipped.
    fn deliver_or_skip(&self, stream: Uuid, slot: &Slot, delivery: &Delivery) {
        let mut skipped = slot.skipped.lock().expect("skipped lock");
        if skipped.count > 0 {
            let (count, from) = (skipped.count, skipped.from);
            match skipped.report(stream).map(|gap| slot.tx.try_send(gap)) {
                Some(Ok(())) => self.metrics.gaps_sent.inc(),
                _ => {
                    // Still no room: this result is skipped too.
                    skipped.count = count + 1;
                    skipped.from = from;
                    return;
                }
            }
        }
        match slot.tx.try_send(delivery.clone()) {
            Ok(()) => self.metrics.results_out.inc(),
            Err(_) => {
                skipped.count = 1;
                skipped.from = delivery.cursor;
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
