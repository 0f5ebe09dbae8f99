//! Replay of one stream's results from the broker, for subscribers that ask for
//! `?from=earliest` or `?from=CURSOR` (to resume after a disconnect or a restart).
//!
//! A replay reads the stream's partition of the results topic from the requested offset up
//! to the high watermark measured *after* the live subscription was taken. Every result below
//! that mark comes from the replay, every result at or above it from the live subscription
//! (which could not have passed it yet), and the feed drops live frames it already replayed:
//! no gap and no duplicate at the switch (see `feed.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::{delivery_of, Delivery, DeliveryError, InvalidParam};
use crate::kafka::{partition_for, Cluster, Counted};
use crate::metrics::Metrics;
use crate::wire::{Frame, Gap, Kind};

/// Replays running at once; more wait their turn (each holds a Kafka consumer).
const MAX_REPLAYS: usize = 64;

/// Where a subscriber starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only results produced from now on (the default).
    Latest,
    /// Every result the broker still holds.
    Earliest,
    /// Results with a cursor at or after this one.
    Cursor(i64),
    /// The stream's last `n` results (`from=-n`, kcat's `-o -n`), then live.
    Last(u64),
}

impl StartAt {
    /// The `from` query parameter (absent: latest).
    pub fn parse(value: Option<&str>) -> Result<Self, InvalidParam> {
        match value {
            None | Some("latest") => Ok(StartAt::Latest),
            Some("earliest") => Ok(StartAt::Earliest),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 && !v.starts_with('-') => Ok(StartAt::Cursor(n)),
                Ok(n) if n < 0 => Ok(StartAt::Last(n.unsigned_abs())),
                _ => Err(InvalidParam(format!(
                    "from: `{v}` is not earliest, latest, a cursor (a result's `cursor`, 0 or \
                     more) or -N (the last N results)"
                ))),
            },
        }
    }
}

/// A stream's past results, oldest first, ending where live delivery takes over.
pub type Replayed = BoxStream<'static, Result<Delivery, DeliveryError>>;

/// Where past results are read from: the results topic, or memory in tests.
pub trait Archive: Send + Sync + 'static {
    /// The results of `stream` from `start` up to now (empty for `StartAt::Latest`). Call it
    /// after the live subscription was taken.
    fn replay(
        &self,
        stream: Uuid,
        start: StartAt,
    ) -> BoxFuture<'_, Result<Replayed, DeliveryError>>;
}

/// Replays from the results topic, a bounded number at once.
pub struct Replays {
    cluster: Cluster,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Replays {
    pub fn new(cluster: Cluster, metrics: Arc<Metrics>) -> Self {
        Self {
            cluster,
            permits: Arc::new(Semaphore::new(MAX_REPLAYS)),
            metrics,
        }
    }

    async fn open(&self, stream: Uuid, start: StartAt) -> Result<Replayed, DeliveryError> {
        let last = match start {
            StartAt::Last(n) => Some(n),
            _ => None,
        };
        let start = match start {
            StartAt::Latest | StartAt::Last(0) => return Ok(stream::empty().boxed()),
            StartAt::Earliest | StartAt::Last(_) => None,
            StartAt::Cursor(n) => Some(n),
        };
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))?;
        let topic = self.cluster.topics.results.clone();
        let partition = partition_for(&stream.to_string(), topic.partitions);
        // No group, nothing committed: a private reader of one partition. Made (and later
        // closed, see `OffThread`) on a blocking thread: librdkafka starts and joins threads
        // there, which would hold up every other stream of the connection opening it.
        let config = self
            .cluster
            .consumer(&format!("streamgate-replay-{}", Uuid::new_v4()));
        let name = topic.name.clone();
        let requests = self.cluster.requests.clone();
        let (consumer, marks) = tokio::task::spawn_blocking(move || {
            let consumer: StreamConsumer<Counted> = requests
                .create(&config)
                .map_err(|e| DeliveryError::Internal(format!("create replay consumer: {e}")))?;
            let marks = consumer.fetch_watermarks(&name, partition, Duration::from_secs(5));
            Ok::<_, DeliveryError>((OffThread(Some(consumer)), marks))
        })
        .await
        .map_err(|e| DeliveryError::Internal(e.to_string()))??;
        let (low, high) = marks.map_err(|e| DeliveryError::Unavailable(e.to_string()))?;
        let mut first = start.map_or(low, |n| n.max(low));
        if let Some(n) = last {
            first =
                start_of_last(&consumer, &topic.name, partition, stream, n, (low, high)).await?;
        }
        tracing::debug!(%stream, partition, low, high, first, "replay");
        // A cursor the broker no longer holds is never a silent jump: the replay starts by
        // saying which offsets are gone (they may include other streams' results).
        let gone = match start {
            Some(from) if from < low => {
                self.metrics.delivery.gaps_sent.inc();
                let gap = Gap {
                    stream_id: stream,
                    from_cursor: from,
                    skipped: (low - from) as u64,
                };
                Some(Ok(Delivery {
                    kind: Kind::Gap,
                    cursor: from,
                    frame: Frame::Gap(gap).to_json().into(),
                }))
            }
            _ => None,
        };
        let gone = stream::iter(gone);
        if first >= high {
            return Ok(gone.boxed());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic.name, partition, Offset::Offset(first))
            .and_then(|()| consumer.assign(&tpl))
            .map_err(|e| DeliveryError::Internal(format!("assign replay consumer: {e}")))?;
        let reader = Reader {
            consumer,
            stream,
            end: high,
            position: first,
            _permit: permit,
        };
        let replayed = stream::unfold(reader, |mut r| async move {
            let next = r.next().await?;
            Some((next, r))
        });
        Ok(gone.chain(replayed).boxed())
    }
}

impl Archive for Replays {
    fn replay(
        &self,
        stream: Uuid,
        start: StartAt,
    ) -> BoxFuture<'_, Result<Replayed, DeliveryError>> {
        Box::pin(self.open(stream, start))
    }
}

/// Most records read back to find a stream's last N results: past it, the replay starts
/// at the oldest record scanned (fewer than N results of the stream lie in that range).
const MAX_LAST_SCAN: i64 = 1_000_000;

/// The cursor of the oldest of `stream`'s last `n` results in `partition` (`low..high`),
/// scanning back in growing windows (the partition holds other streams' results too).
async fn start_of_last(
    consumer: &StreamConsumer<Counted>,
    topic: &str,
    partition: i32,
    stream: Uuid,
    n: u64,
    (low, high): (i64, i64),
) -> Result<i64, DeliveryError> {
    let mut window = (n as i64).saturating_mul(4).max(256);
    loop {
        let from = (high - window).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .and_then(|()| consumer.assign(&tpl))
            .map_err(|e| DeliveryError::Internal(format!("assign replay consumer: {e}")))?;
        let mut cursors = Vec::new();
        let mut position = from;
        while position < high {
            let m = consumer
                .recv()
                .await
                .map_err(|e| DeliveryError::Unavailable(format!("replay interrupted: {e}")))?;
            position = rdkafka::Message::offset(&m) + 1;
            if let Some((s, d)) = delivery_of(&m) {
                if s == stream && matches!(d.kind, Kind::Result | Kind::Error) {
                    cursors.push(d.cursor);
                }
            }
        }
        if cursors.len() as u64 >= n {
            return Ok(cursors[cursors.len() - n as usize]);
        }
        if from == low || window >= MAX_LAST_SCAN {
            return Ok(from);
        }
        window = window.saturating_mul(4);
    }
}

/// A replay consumer that is closed on a blocking thread when dropped: closing waits for
/// librdkafka's threads, and a connection that ends twenty replays must not stall on them.
struct OffThread(Option<StreamConsumer<Counted>>);

impl std::ops::Deref for OffThread {
    type Target = StreamConsumer<Counted>;
    fn deref(&self) -> &StreamConsumer<Counted> {
        self.0.as_ref().expect("replay consumer")
    }
}

impl Drop for OffThread {
    fn drop(&mut self) {
        if let (Some(consumer), Ok(runtime)) =
            (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn_blocking(move || drop(consumer));
        }
    }
}

/// An ongoing replay of one stream's partition.
struct Reader {
    consumer: OffThread,
    stream: Uuid,
    /// Offset at which the replay is complete.
    end: i64,
    /// Next offset expected (to know when `end` is reached even if records were filtered).
    position: i64,
    /// Held while the replay runs.
    _permit: OwnedSemaphorePermit,
}

impl Reader {
    /// The next replayed result of the stream, or `None` once the replay is complete.
    async fn next(&mut self) -> Option<Result<Delivery, DeliveryError>> {
        while self.position < self.end {
            let m = match self.consumer.recv().await {
                Ok(m) => m,
                Err(e) => {
                    self.position = self.end;
                    return Some(Err(DeliveryError::Unavailable(format!(
                        "replay interrupted: {e}"
                    ))));
                }
            };
            self.position = rdkafka::Message::offset(&m) + 1;
            if let Some((stream, delivery)) = delivery_of(&m) {
                if stream == self.stream {
                    return Some(Ok(delivery));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_takes_names_cursors_and_a_last_count() {
        assert_eq!(StartAt::parse(None).unwrap(), StartAt::Latest);
        assert_eq!(StartAt::parse(Some("earliest")).unwrap(), StartAt::Earliest);
        assert_eq!(StartAt::parse(Some("42")).unwrap(), StartAt::Cursor(42));
        assert_eq!(StartAt::parse(Some("-3")).unwrap(), StartAt::Last(3));
        let err = StartAt::parse(Some("soon")).unwrap_err().to_string();
        assert!(err.contains("-N"), "{err}");
    }
}
