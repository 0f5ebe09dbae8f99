//! Recording how far processing got, only once results are acknowledged (see the rewind-point
//! protocol in `mod.rs`): every `COMMIT_INTERVAL` the next unprocessed offset of each owned
//! partition is committed to the `<group>.next` group, then the rewind point is stored for the
//! group's own commit. A rewind point is never committed ahead of the next offset it goes with.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use super::StageError;
use crate::ingest::Ack;

/// How often the acker commits progress (next offsets, then rewind points).
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// What the acker is handed, in order.
pub enum Work {
    /// A processed record.
    Done(Pending),
    /// Record progress now (partitions are about to be revoked); answers when done.
    Flush(std::sync::mpsc::Sender<()>),
}

/// An input record whose results were produced; its offset is recorded once they are acked.
pub struct Pending {
    pub partition: i32,
    pub offset: i64,
    /// Where a new owner of the partition must start reading.
    pub rewind: i64,
    pub acks: Vec<Ack>,
}

/// A client of the `<group>.next` group, which holds each partition's next unprocessed
/// offset. It never joins the group; it only commits and reads.
pub struct Progress {
    consumer: Arc<BaseConsumer>,
    topic: String,
}

impl Progress {
    pub fn new(group_config: &ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        let group = group_config.get("group.id").unwrap_or("streamgate");
        let mut c = group_config.clone();
        c.set("group.id", format!("{group}.next"))
            .set("enable.auto.commit", "false");
        Ok(Self {
            consumer: Arc::new(c.create()?),
            topic: topic.to_string(),
        })
    }

    /// Per gained partition: the offset before which records were processed already.
    pub async fn processed_until(
        &self,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, StageError> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(&self.topic, *p);
        }
        let c = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || c.committed_offsets(tpl, Duration::from_secs(10)))
                .await
                .map_err(|e| StageError::Progress(e.to_string()))?
                .map_err(|e| StageError::Progress(e.to_string()))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => Some((e.partition(), next)),
                _ => None,
            })
            .collect())
    }

    /// Commits the next offsets (synchronously), then stores the rewind points for the
    /// group's commit. Only partitions the group consumer still owns; if the commit fails
    /// nothing is stored (the older, safe values stay) and it is tried again next time.
    async fn record<X, C>(&self, group: &C, latest: &mut HashMap<i32, (i64, i64)>)
    where
        X: ConsumerContext,
        C: Consumer<X>,
    {
        if latest.is_empty() {
            return;
        }
        let owned: HashSet<i32> = match group.assignment() {
            Ok(tpl) => tpl.elements().iter().map(|e| e.partition()).collect(),
            Err(_) => return,
        };
        latest.retain(|p, _| owned.contains(p));
        if latest.is_empty() {
            return;
        }
        let mut next = TopicPartitionList::new();
        let mut rewind = TopicPartitionList::new();
        for (p, (r, n)) in latest.iter() {
            let added = next
                .add_partition_offset(&self.topic, *p, Offset::Offset(*n))
                .and_then(|_| rewind.add_partition_offset(&self.topic, *p, Offset::Offset(*r)));
            if added.is_err() {
                return;
            }
        }
        let c = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || c.commit(&next, CommitMode::Sync)).await;
        match committed {
            Ok(Ok(())) => {
                if let Err(e) = group.store_offsets(&rewind) {
                    tracing::debug!(error = %e, "processing offsets not stored");
                }
                latest.clear();
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "processing progress not committed; retrying"),
            Err(e) => tracing::warn!(error = %e, "processing progress task failed"),
        }
    }
}

/// Awaits each processed record's result acknowledgements in arrival order and records
/// progress as it goes. At the first unacknowledged result it reports the failure and
/// stops, so nothing from that record on is recorded.
pub async fn ack_in_order<X, C>(
    group: Arc<C>,
    progress: Arc<Progress>,
    mut rx: mpsc::Receiver<Work>,
    failed: watch::Sender<Option<StageError>>,
) where
    X: ConsumerContext,
    C: Consumer<X> + Send + Sync + 'static,
{
    // Per partition: (rewind point, next offset) not yet recorded.
    let mut latest: HashMap<i32, (i64, i64)> = HashMap::new();
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let p = tokio::select! {
            p = rx.recv() => p,
            _ = tick.tick() => {
                progress.record(&*group, &mut latest).await;
                continue;
            }
        };
        let p = match p {
            Some(Work::Done(p)) => p,
            Some(Work::Flush(done)) => {
                progress.record(&*group, &mut latest).await;
                let _ = done.send(());
                continue;
            }
            None => break,
        };
        for ack in p.acks {
            if let Err(e) = ack.await {
                let why = StageError::NotAcknowledged {
                    partition: p.partition,
                    offset: p.offset,
                    reason: e.to_string(),
                };
                tracing::error!("{why}");
                progress.record(&*group, &mut latest).await;
                let _ = failed.send(Some(why));
                return;
            }
        }
        let next = p.offset + 1;
        latest.insert(p.partition, (p.rewind.min(next), next));
    }
    progress.record(&*group, &mut latest).await;
}
