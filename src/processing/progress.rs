//! Recording how far processing got, only once results are acknowledged (see the rewind-point
//! protocol in `mod.rs`): every `COMMIT_INTERVAL` the next unprocessed offset of each owned
//! partition is committed to the `<group>.progress` group, then the rewind point is stored for
//! the group's own commit. A rewind point is never committed ahead of the next offset it goes
//! with.
//!
//! The same commit is the partition's hand-over fence. Kafka's coordinator assigns a partition
//! only once its previous owner gave it up; tansu 0.6.0's assigns it at once, while the
//! previous owner still processes until its next heartbeat. So each committed value also says
//! whether an instance holds the partition: a new owner *claims* it (waits until it is
//! released, then marks it held) before processing, and an owner *releases* it (its final
//! progress, marked released) when it is revoked or the stage stops. The new owner starts
//! exactly after the previous owner's last acknowledged record, whatever the coordinator does.
//! An owner that died never releases; its partitions are taken after `CLAIM_TIMEOUT` (its
//! session is over by then), and records it processed after its last commit are processed
//! again, as after any crash.
//!
//! What such a re-processing may not do is write results twice. With the results topic
//! partitioned as the input topic (a stream's results in the partition of its records), each
//! commit also carries a *results floor* for the partition, under the results topic's name in
//! the same group: an offset of the results partition before which no result of a record from
//! the next offset on lies (the results partition's end as this owner knew it from its own
//! acknowledgements, read before processing the last recorded record; the floor it claimed
//! while results of its predecessor still lie ahead). A new owner reads the results partition
//! from that floor to its end and drops, record by record, the outputs already there
//! (`written_after`). Only results read back are dropped: if the read fails, a result comes
//! twice (same `input_offset`), never not at all.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use super::at_ingest::{Resolution, Settle};
use super::orphans::Position;
use super::StageError;
use crate::kafka::records::{decode_progress as decode, encode_progress as encode, progress_group};
use crate::kafka::{Counted, Receipt, Requests};

/// How often the acker commits progress (next offsets, then rewind points).
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// How often a claim looks again whether the previous owner released a partition.
const CLAIM_POLL: Duration = Duration::from_millis(100);
/// Longest a new owner reads its results partition back (`written_after`).
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a claim waits for a release: the processing group's session timeout, after which
/// the coordinator has dropped a previous owner that stopped heartbeating.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// What the acker is handed, in order.
pub enum Work {
    /// A processed record.
    Done(Pending),
    /// Record progress now and release these partitions (they are about to be revoked);
    /// answers when done.
    Flush(Vec<i32>, std::sync::mpsc::Sender<()>),
}

/// An input record whose results were produced; its offset is recorded once they are acked.
pub struct Pending {
    pub partition: i32,
    pub offset: i64,
    /// Where a new owner of the partition must start reading.
    pub rewind: i64,
    /// The results floor read before the record was processed (see the module's text).
    pub floor: Option<i64>,
    pub acks: Vec<Receipt>,
    /// For a record held back (`at_ingest`): settled once its results are written, or
    /// abandoned with its partition.
    pub settle: Option<Settle>,
}

/// How one record's wait for its acknowledgements ended.
enum Outcome {
    /// With the highest offset acknowledged (for its results: in its partition).
    Acknowledged(Option<i64>),
    /// Its partition was revoked while it waited: nothing from it on is recorded here.
    Abandoned,
    Failed(StageError),
}

impl Pending {
    /// Waits for the record's acknowledgements, then for its settlement.
    async fn outcome(self) -> (i32, i64, i64, Option<i64>, Outcome) {
        let (partition, offset, rewind) = (self.partition, self.offset, self.rewind);
        let done = |outcome| (partition, offset, rewind, self.floor, outcome);
        let mut highest = None;
        for ack in self.acks {
            match ack.await {
                Ok(at) => highest = highest.max(Some(at)),
                Err(e) => {
                    return done(Outcome::Failed(StageError::NotAcknowledged {
                        partition,
                        offset,
                        reason: e.to_string(),
                    }))
                }
            }
        }
        done(match self.settle {
            None => Outcome::Acknowledged(highest),
            Some(settle) => match settle.await {
                Ok(Resolution::Written) => Outcome::Acknowledged(highest),
                Ok(Resolution::Abandoned) => Outcome::Abandoned,
                Err(e) => Outcome::Failed(e),
            },
        })
    }
}

/// A client of the `<group>.progress` group, which holds each partition's next unprocessed
/// offset and whether it is held. It never joins the group; it only commits and reads.
pub struct Progress {
    consumer: Arc<BaseConsumer<Counted>>,
    topic: String,
    /// The results topic, when it is partitioned as the input topic (else no floors).
    results: Option<String>,
    /// Reads results partitions back for `written_after`.
    reader: Arc<BaseConsumer<Counted>>,
    /// Partitions this instance claimed and has not released, with the next offset last
    /// committed for each.
    held: Mutex<HashMap<i32, i64>>,
    /// The results floor last committed for each held partition (or claimed with it).
    floors: Mutex<HashMap<i32, i64>>,
    /// Per partition, the end of its results partition as this instance knows it (read at
    /// its claim, then past every result acknowledged here): the floor of what comes next.
    results_end: Mutex<HashMap<i32, i64>>,
}

impl Progress {
    /// `results`: the results topic, when its partitions are the input topic's.
    pub fn new(
        group_config: &ClientConfig,
        topic: &str,
        results: Option<&str>,
        requests: &Requests,
    ) -> Result<Self, KafkaError> {
        let group = group_config.get("group.id").unwrap_or("streamgate");
        let mut c = group_config.clone();
        c.set("group.id", progress_group(group))
            .set("enable.auto.commit", "false");
        let mut reader = c.clone();
        reader.set("enable.partition.eof", "false");
        Ok(Self {
            consumer: Arc::new(requests.create(&c)?),
            topic: topic.to_string(),
            results: results.map(str::to_string),
            reader: Arc::new(requests.create(&reader)?),
            held: Mutex::default(),
            floors: Mutex::default(),
            results_end: Mutex::default(),
        })
    }

    /// The results floor of `partition` now: to be read *before* processing a record.
    /// `inherited`: results of a previous owner lie ahead (`written_after` found some not
    /// passed yet), so the floor stays the one claimed, below them, for the next owner.
    pub fn floor(&self, partition: i32, inherited: bool) -> Option<i64> {
        self.results.as_ref()?;
        let floors = if inherited {
            &self.floors
        } else {
            &self.results_end
        };
        floors
            .lock()
            .expect("progress lock")
            .get(&partition)
            .copied()
    }

    /// A result of `partition` acknowledged at `offset`: later ones come after it.
    fn acknowledged(&self, partition: i32, offset: i64) {
        if let Some(end) = self
            .results_end
            .lock()
            .expect("progress lock")
            .get_mut(&partition)
        {
            *end = (*end).max(offset + 1);
        }
    }

    /// After a claim: how many outputs of each record of `partition` from `next` on are in
    /// the results partition already (written by a previous owner that did not record its
    /// progress past them), read from the floor claimed with the partition to the end. Also
    /// starts this owner's floor there. An unreadable results partition is a warning and
    /// nothing known (those results may come twice).
    pub async fn written_after(&self, partition: i32, next: i64) -> HashMap<i64, usize> {
        let Some(results) = self.results.clone() else {
            return HashMap::new();
        };
        let floor = self
            .floors
            .lock()
            .expect("progress lock")
            .get(&partition)
            .copied();
        let reader = self.reader.clone();
        let read = tokio::task::spawn_blocking(move || {
            read_written(&reader, &results, partition, floor, next)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match read {
            Ok((written, end)) => {
                self.results_end
                    .lock()
                    .expect("progress lock")
                    .insert(partition, end);
                written
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "results partition not read back; results of records processed by its previous owner may come twice");
                HashMap::new()
            }
        }
    }

    /// Takes gained partitions over: waits until their previous owner released them (at
    /// most `CLAIM_TIMEOUT`), marks them held, and returns, per partition, the offset before
    /// which records were processed already.
    pub async fn claim(&self, partitions: &[i32]) -> Result<HashMap<i32, i64>, StageError> {
        let deadline = Instant::now() + CLAIM_TIMEOUT;
        let committed = loop {
            let committed = self.committed(partitions).await?;
            let held_elsewhere: Vec<i32> = {
                let mine = self.held.lock().expect("progress lock");
                committed
                    .iter()
                    .filter(|(p, v)| decode(**v).1 && !mine.contains_key(p))
                    .map(|(p, _)| *p)
                    .collect()
            };
            if held_elsewhere.is_empty() {
                break committed;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    partitions = ?held_elsewhere,
                    "previous owner did not release these partitions; taking them over (what it processed after its last commit is processed again)"
                );
                break committed;
            }
            tokio::time::sleep(CLAIM_POLL).await;
        };
        let next: HashMap<i32, i64> = partitions
            .iter()
            .map(|p| (*p, committed.get(p).map_or(0, |v| decode(*v).0)))
            .collect();
        let floors = match &self.results {
            Some(results) => self.committed_of(results, partitions).await?,
            None => HashMap::new(),
        };
        self.commit(&next, &floors, true)
            .await
            .map_err(|e| StageError::Progress(format!("claim partitions: {e}")))?;
        self.held.lock().expect("progress lock").extend(&next);
        let mut known = self.floors.lock().expect("progress lock");
        for p in partitions {
            match floors.get(p) {
                Some(floor) => known.insert(*p, *floor),
                None => known.remove(p),
            };
        }
        Ok(next)
    }

    /// Gives up `partitions` (all held ones if `None`), committing their last progress as
    /// released so their next owner starts at once.
    async fn release(&self, partitions: Option<&[i32]>) {
        let released: HashMap<i32, i64> = {
            let mut held = self.held.lock().expect("progress lock");
            let out: HashMap<i32, i64> = held
                .iter()
                .filter(|(p, _)| partitions.is_none_or(|ps| ps.contains(p)))
                .map(|(p, n)| (*p, *n))
                .collect();
            held.retain(|p, _| !out.contains_key(p));
            out
        };
        if released.is_empty() {
            return;
        }
        let floors: HashMap<i32, i64> = {
            let mut floors = self.floors.lock().expect("progress lock");
            let out = floors
                .iter()
                .filter(|(p, _)| released.contains_key(p))
                .map(|(p, f)| (*p, *f))
                .collect();
            floors.retain(|p, _| !released.contains_key(p));
            out
        };
        self.results_end
            .lock()
            .expect("progress lock")
            .retain(|p, _| !released.contains_key(p));
        if let Err(e) = self.commit(&released, &floors, false).await {
            tracing::warn!(error = %e, "partitions not released; their next owner waits for them");
        }
    }

    /// Every partition's committed next offset (0 where none was committed) and end, for the
    /// orphan watch (`orphans.rs`).
    pub async fn positions(&self, partitions: i32) -> Result<Vec<Position>, StageError> {
        let all: Vec<i32> = (0..partitions).collect();
        let committed = self.committed(&all).await?;
        let (c, topic) = (self.consumer.clone(), self.topic.clone());
        let ends = tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|p| {
                    c.fetch_watermarks(&topic, p, Duration::from_secs(5))
                        .map(|w| w.1)
                })
                .collect::<Result<Vec<i64>, _>>()
        })
        .await
        .map_err(|e| StageError::Progress(e.to_string()))?
        .map_err(|e| StageError::Progress(format!("read where partitions end: {e}")))?;
        Ok(all
            .into_iter()
            .zip(ends)
            .map(|(partition, end)| Position {
                partition,
                next: committed.get(&partition).map_or(0, |v| decode(*v).0),
                end,
            })
            .collect())
    }

    /// The committed values of `partitions` (those that have one).
    async fn committed(&self, partitions: &[i32]) -> Result<HashMap<i32, i64>, StageError> {
        self.committed_of(&self.topic, partitions).await
    }

    /// The values committed under `topic` for `partitions` (those that have one).
    async fn committed_of(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, StageError> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(topic, *p);
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
                Offset::Offset(value) => Some((e.partition(), value)),
                _ => None,
            })
            .collect())
    }

    /// Commits next offsets, marked held or released, and results floors, synchronously.
    async fn commit(
        &self,
        next: &HashMap<i32, i64>,
        floors: &HashMap<i32, i64>,
        held: bool,
    ) -> Result<(), String> {
        let mut tpl = TopicPartitionList::new();
        for (p, n) in next {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(encode(*n, held)))
                .map_err(|e| e.to_string())?;
        }
        if let Some(results) = &self.results {
            for (p, floor) in floors.iter().filter(|(p, _)| next.contains_key(p)) {
                tpl.add_partition_offset(results, *p, Offset::Offset(*floor))
                    .map_err(|e| e.to_string())?;
            }
        }
        let c = self.consumer.clone();
        match tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Commits the next offsets (synchronously), then stores the rewind points for the
    /// group's commit. Only partitions this instance holds (a released one may be processed
    /// elsewhere already), and rewind points only of those the group consumer still owns; if
    /// the commit fails nothing is stored (the older, safe values stay) and it is tried again
    /// next time.
    async fn record<X, C>(&self, group: &C, latest: &mut HashMap<i32, Latest>)
    where
        X: ConsumerContext,
        C: Consumer<X>,
    {
        {
            let held = self.held.lock().expect("progress lock");
            latest.retain(|p, _| held.contains_key(p));
        }
        if latest.is_empty() {
            return;
        }
        let owned: HashSet<i32> = group
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut floors: HashMap<i32, i64> = HashMap::new();
        {
            let held = self.held.lock().expect("progress lock");
            let known = self.floors.lock().expect("progress lock");
            for (p, l) in latest.iter() {
                // Records replayed after a claim (read again from the rewind point up to
                // where the claim started) never take progress back: the records between
                // were processed, and a new owner must not process them again.
                let at = held.get(p).copied().unwrap_or(0);
                let (n, floor) = if l.next > at {
                    (l.next, l.floor)
                } else {
                    (at, None)
                };
                next.insert(*p, n);
                // A record without a floor keeps the last one (lower, so still a floor).
                if let Some(floor) = floor.or_else(|| known.get(p).copied()) {
                    floors.insert(*p, floor);
                }
            }
        }
        let mut rewind = TopicPartitionList::new();
        for (p, l) in latest.iter().filter(|(p, _)| owned.contains(p)) {
            if rewind
                .add_partition_offset(&self.topic, *p, Offset::Offset(l.rewind))
                .is_err()
            {
                return;
            }
        }
        match self.commit(&next, &floors, true).await {
            Ok(()) => {
                self.floors.lock().expect("progress lock").extend(&floors);
                if rewind.count() > 0 {
                    if let Err(e) = group.store_offsets(&rewind) {
                        tracing::debug!(error = %e, "processing offsets not stored");
                    }
                }
                let mut held = self.held.lock().expect("progress lock");
                for (p, n) in next {
                    if let Some(at) = held.get_mut(&p) {
                        *at = n;
                    }
                }
                latest.clear();
            }
            Err(e) => tracing::warn!(error = %e, "processing progress not committed; retrying"),
        }
    }
}

/// A partition's progress not yet recorded: its rewind point, next offset and results floor.
struct Latest {
    rewind: i64,
    next: i64,
    floor: Option<i64>,
}

/// Reads results partition `partition` of `topic` from `floor` to its end: how many frames
/// each record of input partition `partition` from offset `next` on has there, and the end.
/// Without a floor, only the end.
fn read_written(
    reader: &BaseConsumer<Counted>,
    topic: &str,
    partition: i32,
    floor: Option<i64>,
    next: i64,
) -> Result<(HashMap<i64, usize>, i64), String> {
    #[derive(serde::Deserialize)]
    struct Origin {
        input_partition: i32,
        input_offset: i64,
    }
    let (low, end) = reader
        .fetch_watermarks(topic, partition, READ_BACK_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let mut written = HashMap::new();
    let Some(from) = floor.map(|f| f.max(low)).filter(|f| *f < end) else {
        return Ok((written, end));
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|e| e.to_string())?;
    reader.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    let mut at = from;
    let read = loop {
        if at >= end {
            break Ok((written, end));
        }
        if Instant::now() >= deadline {
            break Err(format!("read {at} of {from}..{end} in time"));
        }
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at = m.offset() + 1;
                let origin = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Origin>(p).ok());
                if let Some(o) = origin {
                    if o.input_partition == partition && o.input_offset >= next {
                        *written.entry(o.input_offset).or_insert(0) += 1;
                    }
                }
            }
            Some(Err(e)) => break Err(e.to_string()),
            None => {}
        }
    };
    let _ = reader.unassign();
    read
}

/// Awaits each processed record's result acknowledgements, in order per partition, and
/// records progress as it goes. Partitions are awaited independently, so a record held back
/// in one (`at_ingest`) does not hold the others' progress, nor a revoked partition's flush.
/// At the first unacknowledged result it reports the failure and stops, so nothing from that
/// record on is recorded.
pub async fn ack_in_order<X, C>(
    group: Arc<C>,
    progress: Arc<Progress>,
    mut rx: mpsc::Receiver<Work>,
    failed: watch::Sender<Option<StageError>>,
) where
    X: ConsumerContext,
    C: Consumer<X> + Send + Sync + 'static,
{
    // Per partition: what is not yet recorded.
    let mut latest: HashMap<i32, Latest> = HashMap::new();
    // Per partition: records waiting behind the one being awaited (in `heads`).
    let mut queues: HashMap<i32, VecDeque<Pending>> = HashMap::new();
    let mut heads = FuturesUnordered::new();
    // Partitions revoked while a record waited: nothing more is recorded for them.
    let mut abandoned: HashSet<i32> = HashSet::new();
    let mut flushes: Vec<(Vec<i32>, std::sync::mpsc::Sender<()>)> = Vec::new();
    let mut open = true;
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A flush answers once its partitions have nothing left to await.
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut flushes)
            .into_iter()
            .partition(|(ps, _)| ps.iter().all(|p| !queues.contains_key(p)));
        flushes = waiting;
        if !ready.is_empty() {
            progress.record(&*group, &mut latest).await;
            for (revoked, done) in ready {
                progress.release(Some(&revoked)).await;
                abandoned.retain(|p| !revoked.contains(p));
                let _ = done.send(());
            }
        }
        if !open && queues.is_empty() {
            break;
        }
        tokio::select! {
            // Always read: a record held for its one-hop confirmation is settled only once the
            // stage reads further in its partition, which it cannot while its hand-offs here
            // wait. The queues stay within what the backlog gate lets into the input topic.
            work = rx.recv(), if open => match work {
                Some(Work::Done(p)) if abandoned.contains(&p.partition) => {}
                Some(Work::Done(p)) => match queues.get_mut(&p.partition) {
                    Some(queue) => queue.push_back(p),
                    None => {
                        queues.insert(p.partition, VecDeque::new());
                        heads.push(p.outcome());
                    }
                },
                Some(Work::Flush(revoked, done)) => flushes.push((revoked, done)),
                None => open = false,
            },
            Some((partition, offset, rewind, floor, outcome)) = heads.next() => {
                match outcome {
                    Outcome::Acknowledged(highest) => {
                        let next = offset + 1;
                        if let Some(at) = highest {
                            progress.acknowledged(partition, at);
                        }
                        latest.insert(partition, Latest { rewind: rewind.min(next), next, floor });
                    }
                    Outcome::Abandoned => {
                        abandoned.insert(partition);
                        if let Some(queue) = queues.get_mut(&partition) {
                            queue.clear();
                        }
                    }
                    Outcome::Failed(why) => {
                        tracing::error!("{why}");
                        progress.record(&*group, &mut latest).await;
                        progress.release(None).await;
                        let _ = failed.send(Some(why));
                        return;
                    }
                }
                match queues.get_mut(&partition).and_then(VecDeque::pop_front) {
                    Some(p) => heads.push(p.outcome()),
                    None => {
                        queues.remove(&partition);
                    }
                }
            }
            _ = tick.tick() => progress.record(&*group, &mut latest).await,
        }
    }
    progress.record(&*group, &mut latest).await;
    progress.release(None).await;
    for (_, done) in flushes {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Topics;
    use crate::kafka::{client_config, EmbeddedBroker};

    /// The hand-over fence on a real (embedded) broker: a claim waits for the holder's
    /// release, then starts exactly where the holder's last commit says.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_waits_for_the_release_and_starts_after_the_last_commit() {
        let topics = Topics::default();
        let broker = EmbeddedBroker::start(&topics).unwrap();
        let mut config = client_config(broker.bootstrap_servers(), &Default::default());
        config.set("group.id", "fence");
        let requests = Requests::default();
        let holder = Progress::new(&config, &topics.input, None, &requests).unwrap();
        let next = Arc::new(Progress::new(&config, &topics.input, None, &requests).unwrap());

        assert_eq!(holder.claim(&[0]).await.unwrap(), HashMap::from([(0, 0)]));
        let claim = tokio::spawn({
            let next = next.clone();
            async move { next.claim(&[0]).await.unwrap() }
        });
        tokio::time::sleep(CLAIM_POLL * 5).await;
        assert!(!claim.is_finished(), "a held partition was claimed");

        holder
            .commit(&HashMap::from([(0, 7)]), &HashMap::new(), true)
            .await
            .unwrap();
        holder.held.lock().unwrap().insert(0, 7);
        holder.release(None).await;
        assert_eq!(claim.await.unwrap(), HashMap::from([(0, 7)]));
        assert!(holder.held.lock().unwrap().is_empty());
        // Released and claimed again by the same instance: no wait on itself.
        next.release(Some(&[0])).await;
        assert_eq!(next.claim(&[0]).await.unwrap(), HashMap::from([(0, 7)]));
    }
}
