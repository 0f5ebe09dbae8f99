//! How much of each input partition is stored but not yet processed, and the gate that keeps
//! it under what the broker is sure to keep: a send that would take a partition's backlog
//! past `limits.max_unprocessed_records` or `_bytes` is refused (429 `backlog_full`, with
//! Retry-After) instead of accepted and later dropped by retention before processing.
//!
//! Records: the partition's high watermark minus the processing group's progress (the next
//! unprocessed offset it committed under `<group>.progress`, or the log start when it committed
//! none). Bytes: this instance's own acknowledged writes above that progress. The progress
//! is read every `REFRESH`; between reads it can only be behind, so the backlog is over-
//! rather than under-counted: staleness refuses early, it never lets a record be lost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Refused;
use crate::error::Error;
use crate::kafka::records::{decode_progress, progress_group};
use crate::kafka::{Cluster, Counted};
use crate::metrics::Metrics;

/// How often the processing progress and the watermarks are read.
const REFRESH: Duration = Duration::from_millis(500);
/// What a stored record costs beyond its payload: its key (a stream id), record and batch
/// headers. An over-estimate, so the bound errs on the safe side.
const RECORD_OVERHEAD: u64 = 100;
/// How long a refused client is told to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Largest unprocessed backlog a partition may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub records: u64,
    pub bytes: u64,
}

/// The backlog of every input partition.
pub struct Backlog {
    bound: Option<Bound>,
    partitions: Vec<Mutex<Partition>>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Partition {
    /// The next offset not yet processed.
    processed: i64,
    /// One past the highest offset known to be stored.
    high: i64,
    /// This instance's writes at or above `processed`: offset and stored size.
    written: VecDeque<(i64, u64)>,
    /// The sum of the sizes in `written`.
    bytes: u64,
}

impl Partition {
    fn records(&self) -> u64 {
        (self.high - self.processed).max(0) as u64
    }

    fn forget_processed(&mut self) {
        while let Some(&(offset, size)) = self.written.front() {
            if offset >= self.processed {
                break;
            }
            self.written.pop_front();
            self.bytes -= size;
        }
    }
}

impl Backlog {
    /// A backlog of `partitions` partitions bounded by `bound` (`None`: never refuses).
    pub fn new(partitions: i32, bound: Option<Bound>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            bound,
            partitions: (0..partitions.max(1)).map(|_| Mutex::default()).collect(),
            metrics,
        })
    }

    fn partition(&self, p: i32) -> &Mutex<Partition> {
        &self.partitions[p as usize % self.partitions.len()]
    }

    /// Whether `records` records of `bytes` payload bytes may be appended to `partition` now.
    pub fn admit(&self, partition: i32, records: usize, bytes: usize) -> Result<(), Refused> {
        let Some(bound) = self.bound else {
            return Ok(());
        };
        let p = self.partition(partition).lock().expect("backlog lock");
        let incoming_bytes = bytes as u64 + records as u64 * RECORD_OVERHEAD;
        let over_records = p.records() + records as u64 > bound.records;
        let over_bytes = p.bytes + incoming_bytes > bound.bytes;
        // An empty partition takes any one request, however large, so nothing is refused
        // forever; the body limit bounds it.
        if (over_records || over_bytes) && p.records() > 0 {
            self.metrics.ingest.backlog_refused.inc_by(records as u64);
            return Err(Refused::BacklogFull {
                partition,
                records: p.records(),
                bytes: p.bytes,
                retry_after: RETRY_AFTER,
            });
        }
        Ok(())
    }

    /// A record of `payload` bytes was stored at `offset` of `partition`.
    pub fn stored(&self, partition: i32, offset: i64, payload: usize) {
        let mut p = self.partition(partition).lock().expect("backlog lock");
        p.high = p.high.max(offset + 1);
        let size = payload as u64 + RECORD_OVERHEAD;
        p.written.push_back((offset, size));
        p.bytes += size;
    }

    /// The processing progress and high watermark of `partition`, as last read.
    fn refreshed(&self, partition: i32, processed: i64, high: i64) {
        let mut p = self.partition(partition).lock().expect("backlog lock");
        p.processed = processed;
        p.high = p.high.max(high);
        p.forget_processed();
        self.metrics
            .ingest
            .backlog_records
            .with_label_values(&[&partition.to_string()])
            .set(p.records() as i64);
    }

    /// Reads the processing progress and watermarks of every input partition every
    /// `REFRESH`, until `shutdown`.
    pub fn follow(
        self: &Arc<Self>,
        cluster: &Cluster,
        group: &str,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>, Error> {
        let reader = ProgressReader::new(cluster, group)?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tick.tick() => {}
                }
                match reader.read().await {
                    Ok(progress) => {
                        for (p, processed, high) in progress {
                            this.refreshed(p, processed, high);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "backlog not refreshed"),
                }
            }
        }))
    }
}

/// Reads how far processing got in every input partition, from the processing group's
/// `<group>.progress` commits (which the stage makes only once results are acknowledged).
#[derive(Clone)]
pub struct ProgressReader {
    reader: Arc<BaseConsumer<Counted>>,
    topic: String,
    partitions: i32,
}

impl ProgressReader {
    pub fn new(cluster: &Cluster, group: &str) -> Result<Self, Error> {
        let reader: BaseConsumer<Counted> = cluster
            .requests
            .create(&cluster.consumer(&progress_group(group)))
            .map_err(|e| Error::kafka("create processing progress reader", e))?;
        Ok(Self {
            reader: Arc::new(reader),
            topic: cluster.topics.input.name.clone(),
            partitions: cluster.topics.input.partitions,
        })
    }

    /// Per partition: `(partition, next unprocessed offset, high watermark)`.
    pub async fn read(&self) -> Result<Vec<(i32, i64, i64)>, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            read_progress(&this.reader, &this.topic, this.partitions)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    /// The high watermark of every input partition now: a point processing can be waited
    /// to reach (see [`Self::reached`]).
    pub async fn ends(&self) -> Result<Vec<(i32, i64)>, String> {
        Ok(self
            .read()
            .await?
            .into_iter()
            .map(|(p, _, high)| (p, high))
            .collect())
    }

    /// Whether processing got to `ends` (from [`Self::ends`]) in every partition.
    pub async fn reached(&self, ends: &[(i32, i64)]) -> Result<bool, String> {
        let now = self.read().await?;
        Ok(ends.iter().all(|(p, end)| {
            now.iter()
                .any(|(q, processed, _)| q == p && processed >= end)
        }))
    }
}

/// Per partition: the next unprocessed offset (the group's commit, or the log start when
/// there is none or it fell behind the log start) and the high watermark.
fn read_progress(
    reader: &BaseConsumer<Counted>,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(i32, i64, i64)>, rdkafka::error::KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = reader.committed_offsets(tpl, Duration::from_secs(2))?;
    let mut out = Vec::with_capacity(partitions as usize);
    for e in committed.elements() {
        let (low, high) = reader.fetch_watermarks(topic, e.partition(), Duration::from_secs(2))?;
        let processed = match e.offset() {
            Offset::Offset(committed) => decode_progress(committed).0.max(low),
            _ => low,
        };
        out.push((e.partition(), processed, high));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(records: u64, bytes: u64) -> Arc<Backlog> {
        Backlog::new(2, Some(Bound { records, bytes }), Arc::new(Metrics::new()))
    }

    #[test]
    fn refuses_past_the_bound_until_processing_catches_up() {
        let b = backlog(10, 1_000_000);
        b.admit(0, 8, 80).unwrap();
        for offset in 0..8 {
            b.stored(0, offset, 10);
        }
        assert!(matches!(
            b.admit(0, 3, 30),
            Err(Refused::BacklogFull { records: 8, .. })
        ));
        b.admit(1, 3, 30)
            .expect("another partition has its own backlog");
        b.refreshed(0, 6, 8);
        b.admit(0, 3, 30).expect("processing caught up");
    }

    #[test]
    fn bytes_count_too_and_a_lone_request_always_fits() {
        let b = backlog(1_000, 1_000);
        b.admit(0, 1, 5_000)
            .expect("an empty partition takes one request");
        b.stored(0, 0, 5_000);
        assert!(b.admit(0, 1, 10).is_err(), "over the byte bound");
        b.refreshed(0, 1, 1);
        b.admit(0, 1, 10).unwrap();
    }

    #[test]
    fn other_writers_count_through_the_watermark() {
        let b = backlog(10, 1_000_000);
        b.refreshed(0, 0, 10);
        assert!(b.admit(0, 1, 1).is_err());
    }

    #[test]
    fn unbounded_never_refuses() {
        let b = Backlog::new(1, None, Arc::new(Metrics::new()));
        b.refreshed(0, 0, 1_000_000);
        b.admit(0, 1_000_000, 1 << 30).unwrap();
    }
}
