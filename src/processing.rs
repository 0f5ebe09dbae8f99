//! The processing stage: a consumer group over the input topic that runs each stream's
//! processor and produces the results, at least once.
//!
//! Records are handled in order as they arrive; their results are handed to an idempotent
//! producer that never gives up (`message.timeout.ms=0`), which keeps per-partition order. An
//! acker task awaits each record's result acknowledgements in the same order and only then
//! stores the input offset, which auto-commit later commits (the `at_least_once.rs` pattern
//! of rust-rdkafka). A crash between produce and commit re-processes records; duplicates carry
//! the same `input_offset`, so readers can drop them.
//!
//! If a result is ever refused, the stage stops storing offsets at that record, commits what
//! was acknowledged, and restarts with a fresh consumer and producer session from the
//! committed offsets: crash-only recovery, so no error path can skip a record.
//!
//! Because the group is shared by every instance, adding instances adds processing capacity;
//! Kafka moves partitions between them on rebalance.
//!
//! Windows (`window.rs`) keep state across records. Their closes are events in the input
//! partition (the stage writes a close marker once a window is due), so a partition's windows
//! are a pure function of its records, and the stage rebuilds them by replaying. The offset
//! committed for a partition is therefore its *rewind point*: the first record of its oldest
//! open window (or the next record when none is open); the next unprocessed offset `C` is
//! committed under a second group, `<group>.next` (commit metadata would do, but tansu 0.6.0
//! does not return it), always before the rewind point it goes with. A new owner of the
//! partition (restart, rebalance) reads from the rewind point; records before `C` were
//! processed and their results acknowledged already, so they only feed window state: no
//! result is produced for them again. Windows whose records started
//! before the rewind point were closed before `C`, and their partial replay is dropped with
//! their close. Nothing acknowledged is lost or counted twice; a replay costs re-reading the
//! partition from its oldest open window.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::bounded::{Failure, Runner};
use crate::frames::{self, Kind, Origin};
use crate::kafka::{now_ms, SendError, TopicProducer};
use crate::metrics::Metrics;
use crate::processor::{window_input, ProcessorSpec};
use crate::registry::Registry;
use crate::window::{Added, Rule, Windows};

/// Processed input records whose results may await their acks at once.
const ACK_PIPELINE: usize = 4096;
/// Pause before restarting the stage after a failure.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// How often due windows are looked for.
const WINDOW_CHECK: Duration = Duration::from_millis(250);
/// A close marker not seen back within this is written again.
const CLOSE_RETRY: Duration = Duration::from_secs(30);
/// How often the acker commits progress (next offsets, then rewind points).
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

type Ack = Pin<Box<dyn Future<Output = Result<i64, SendError>> + Send>>;

/// An input record whose results were produced; its offset is stored once they are acked.
struct Pending {
    partition: i32,
    offset: i64,
    /// Where a new owner of the partition must start reading (see the module docs).
    rewind: i64,
    acks: Vec<Ack>,
}

/// Partitions gained or lost, reported by librdkafka during a poll.
enum Assignment {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Forwards rebalances to the stage loop, which handles them before the next record.
struct StageContext {
    rebalances: std_mpsc::Sender<Assignment>,
}

impl ClientContext for StageContext {}

impl ConsumerContext for StageContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions =
            |tpl: &TopicPartitionList| tpl.elements().iter().map(|e| e.partition()).collect();
        let _ = match rebalance {
            Rebalance::Assign(tpl) => self.rebalances.send(Assignment::Assigned(partitions(tpl))),
            Rebalance::Revoke(tpl) => self.rebalances.send(Assignment::Revoked(partitions(tpl))),
            Rebalance::Error(_) => Ok(()),
        };
    }
}

type GroupConsumer = StreamConsumer<StageContext>;

/// What one run of the stage keeps between records.
#[derive(Default)]
struct StageState {
    windows: Windows,
    /// Per partition: records before this offset were processed (and their results
    /// acknowledged) by an earlier owner; they are read again only to rebuild windows.
    replay_until: HashMap<i32, i64>,
    /// Close markers written and not yet read back, and when.
    closing: HashMap<(Uuid, i64), Instant>,
    /// Streams whose processor once ran past the time bound: it is not run again here (its
    /// thread may still be busy with that record).
    runaway: HashSet<Uuid>,
}

/// A control record in the input topic.
enum Control {
    End,
    CloseWindow(i64),
}

pub struct Processing {
    /// Settings of the group consumer; a fresh consumer is made for every (re)start.
    pub consumer_config: ClientConfig,
    pub input_topic: String,
    pub results: TopicProducer,
    /// Writes window close markers into the input topic.
    pub input: TopicProducer,
    /// Runs user code under `processing.max_record_ms`.
    pub runner: Runner,
    /// Most results of one record.
    pub max_results: usize,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
}

/// How one run of the stage ended.
enum Outcome {
    Shutdown,
    /// A result was not acknowledged: nothing from that record on was committed.
    Failed(String),
}

impl Processing {
    /// Runs until `shutdown`, restarting after failures.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.run_once(&mut shutdown).await {
                Outcome::Shutdown => return,
                Outcome::Failed(why) => {
                    tracing::warn!(reason = %why, "processing restarts from the committed offsets");
                    self.results.replace();
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(RESTART_BACKOFF) => {}
                    }
                }
            }
        }
    }

    async fn run_once(&self, shutdown: &mut watch::Receiver<bool>) -> Outcome {
        let (rebalance_tx, rebalances) = std_mpsc::channel();
        let context = StageContext {
            rebalances: rebalance_tx,
        };
        let consumer: GroupConsumer = match self.consumer_config.create_with_context(context) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(format!("create consumer: {e}")),
        };
        let consumer = Arc::new(consumer);
        if let Err(e) = consumer.subscribe(&[&self.input_topic]) {
            return Outcome::Failed(format!("subscribe to {}: {e}", self.input_topic));
        }
        let progress = match self.progress_consumer() {
            Ok(c) => Arc::new(c),
            Err(e) => return Outcome::Failed(format!("create progress consumer: {e}")),
        };
        let (tx, rx) = mpsc::channel::<Pending>(ACK_PIPELINE);
        let (failed_tx, mut failed) = watch::channel(None::<String>);
        let acker = tokio::spawn(ack_in_order(
            consumer.clone(),
            progress.clone(),
            self.input_topic.clone(),
            rx,
            failed_tx,
        ));
        let mut state = StageState::default();
        let mut window_check = tokio::time::interval(WINDOW_CHECK);
        window_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            if *shutdown.borrow() {
                break Outcome::Shutdown;
            }
            let msg = tokio::select! {
                _ = shutdown.changed() => continue,
                _ = failed.changed() => {
                    break Outcome::Failed(failed.borrow().clone().unwrap_or_default());
                }
                _ = window_check.tick() => {
                    self.close_due_windows(&mut state).await;
                    continue;
                }
                msg = consumer.recv() => msg,
            };
            // Rebalances happen inside the poll that returned this record: apply them first.
            let mut rebalance_failed = None;
            while let Ok(assignment) = rebalances.try_recv() {
                if let Err(why) = self.rebalanced(&progress, assignment, &mut state).await {
                    rebalance_failed = Some(why);
                }
            }
            if let Some(why) = rebalance_failed {
                break Outcome::Failed(why);
            }
            match msg {
                Ok(m) => match self.process(&m, &mut state).await {
                    Ok(pending) => {
                        if tx.send(pending).await.is_err() {
                            break Outcome::Failed("the acker stopped".into());
                        }
                    }
                    Err(why) => break Outcome::Failed(why),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "processing consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        drop(tx);
        let _ = acker.await;
        // Commits the stored offsets only: everything acknowledged, nothing after a failure.
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "commit of processing offsets");
        }
        outcome
    }

    /// A client of the `<group>.next` group, which holds each partition's next unprocessed
    /// offset (see the module docs). It never joins the group; it only commits and reads.
    fn progress_consumer(&self) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
        let group = self.consumer_config.get("group.id").unwrap_or("streamgate");
        let mut c = self.consumer_config.clone();
        c.set("group.id", format!("{group}.next"))
            .set("enable.auto.commit", "false");
        c.create()
    }

    /// Keeps the stage's state to the partitions it owns. For a gained partition, reads where
    /// the previous owner stopped, to replay up to there silently.
    async fn rebalanced(
        &self,
        progress: &Arc<BaseConsumer>,
        assignment: Assignment,
        state: &mut StageState,
    ) -> Result<(), String> {
        match assignment {
            Assignment::Revoked(lost) => {
                state.windows.retain_partitions(|p| !lost.contains(&p));
                state.replay_until.retain(|p, _| !lost.contains(p));
                Ok(())
            }
            Assignment::Assigned(gained) => {
                let mut tpl = TopicPartitionList::new();
                for p in &gained {
                    tpl.add_partition(&self.input_topic, *p);
                }
                let c = progress.clone();
                let committed = tokio::task::spawn_blocking(move || {
                    c.committed_offsets(tpl, Duration::from_secs(10))
                })
                .await
                .map_err(|e| format!("read processing progress: {e}"))?
                .map_err(|e| format!("read processing progress: {e}"))?;
                for e in committed.elements() {
                    if let Offset::Offset(next) = e.offset() {
                        tracing::debug!(
                            partition = e.partition(),
                            until = next,
                            "records before this were processed"
                        );
                        state.replay_until.insert(e.partition(), next);
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes a close marker for every window that is due, into its stream's input
    /// partition: the window closes where the marker lands, the same on every replay.
    async fn close_due_windows(&self, state: &mut StageState) {
        let now = Instant::now();
        state
            .closing
            .retain(|_, written| now.duration_since(*written) < CLOSE_RETRY);
        for (partition, stream, start) in state.windows.due(now_ms()) {
            if state.closing.contains_key(&(stream, start))
                || state.replay_until.contains_key(&partition)
            {
                continue;
            }
            let headers = OwnedHeaders::new().insert(Header {
                key: frames::CONTROL_HEADER,
                value: Some(frames::CONTROL_CLOSE_WINDOW),
            });
            let marker = start.to_string();
            match self
                .input
                .enqueue_with_headers(
                    &stream.to_string(),
                    marker.as_bytes(),
                    now_ms(),
                    Some(headers),
                )
                .await
            {
                Ok(ack) => {
                    state.closing.insert((stream, start), now);
                    // Not awaited here: the stage goes on; a lost marker is written again.
                    tokio::spawn(async move {
                        if let Err(e) = ack.await {
                            tracing::warn!(%stream, error = %e, "window close marker not stored");
                        }
                    });
                }
                Err(e) => tracing::warn!(%stream, error = %e, "cannot write a window close marker"),
            }
        }
    }

    /// Processes one input record and hands its results to the producer. An error means a
    /// result could not even be queued; the stage then restarts.
    async fn process(
        &self,
        m: &BorrowedMessage<'_>,
        state: &mut StageState,
    ) -> Result<Pending, String> {
        let (partition, offset) = (m.partition(), m.offset());
        let mut pending = Pending {
            partition,
            offset,
            rewind: offset + 1,
            acks: Vec::new(),
        };
        let Some(stream_id) = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| Uuid::parse_str(k).ok())
        else {
            tracing::warn!(
                partition,
                offset,
                "skipping input record whose key is not a stream id"
            );
            pending.rewind = state.windows.rewind_point(partition, offset + 1);
            return Ok(pending);
        };
        let origin = Origin {
            stream_id,
            input_partition: partition,
            input_offset: offset,
            received_ms: m.timestamp().to_millis().unwrap_or_else(now_ms),
        };
        // Before this offset an earlier owner produced the results: only rebuild windows.
        let replaying = match state.replay_until.get(&partition).copied() {
            Some(until) if offset < until => {
                // The last replayed record ends the replay, even if nothing follows it.
                if offset + 1 >= until {
                    state.replay_until.remove(&partition);
                }
                true
            }
            Some(_) => {
                state.replay_until.remove(&partition);
                false
            }
            None => false,
        };
        let processed_ms = now_ms();
        let result = |data: &Value| {
            (
                Kind::Result,
                frames::stored(Kind::Result, &origin, processed_ms, Some(data), None),
            )
        };
        let mut outputs: Vec<(Kind, Vec<u8>)> = match control_of(m) {
            Some(Control::End) => {
                let mut out: Vec<_> = state
                    .windows
                    .close_all(&stream_id)
                    .iter()
                    .map(result)
                    .collect();
                out.push((
                    Kind::End,
                    frames::stored(Kind::End, &origin, processed_ms, None, None),
                ));
                out
            }
            Some(Control::CloseWindow(start)) => {
                state.closing.remove(&(stream_id, start));
                state
                    .windows
                    .close(&stream_id, start)
                    .iter()
                    .map(result)
                    .collect()
            }
            None => {
                // Never guess a stream's processor: a registry that cannot be read restarts
                // the stage (the record is retried); a stream the registry does not have is an
                // error.
                let spec = match self.registry.lookup(&stream_id).await {
                    Ok(Some(entry)) => Ok(entry.processor()),
                    Ok(None) => Err(format!("stream {stream_id} is not in the registry")),
                    Err(e) => return Err(format!("registry unavailable: {e}")),
                };
                let rebuilds_state = matches!(spec, Ok(ProcessorSpec::Window { .. }));
                if replaying && !rebuilds_state {
                    // Its results were produced before; nothing to rebuild.
                    pending.rewind = state.windows.rewind_point(partition, offset + 1);
                    return Ok(pending);
                }
                if !replaying {
                    self.metrics.processed.inc();
                }
                match self.apply(&origin, spec, m.payload(), state).await {
                    Ok(results) => results.iter().map(result).collect(),
                    Err(message) => {
                        if !replaying {
                            self.metrics.processing_errors.inc();
                        }
                        vec![(
                            Kind::Error,
                            frames::stored(
                                Kind::Error,
                                &origin,
                                processed_ms,
                                None,
                                Some(&message),
                            ),
                        )]
                    }
                }
            }
        };
        pending.rewind = state.windows.rewind_point(partition, offset + 1);
        if replaying {
            outputs.clear();
        }
        let key = stream_id.to_string();
        for (kind, payload) in outputs {
            let headers = OwnedHeaders::new().insert(Header {
                key: frames::TYPE_HEADER,
                value: Some(kind.as_str()),
            });
            let ack = self
                .results
                .enqueue_with_headers(&key, &payload, origin.received_ms, Some(headers))
                .await
                .map_err(|e| {
                    format!("produce a result of partition {partition} offset {offset}: {e}")
                })?;
            pending.acks.push(Box::pin(ack));
        }
        Ok(pending)
    }

    /// Runs the stream's processor on one record: its results, or why it failed. A window
    /// counts the record and yields nothing (its result comes when it closes), or an error
    /// for a record that came after its window closed.
    async fn apply(
        &self,
        origin: &Origin,
        spec: Result<ProcessorSpec, String>,
        payload: Option<&[u8]>,
        state: &mut StageState,
    ) -> Result<Vec<Value>, String> {
        let spec = spec?;
        let data = payload.ok_or_else(|| "record has no value".to_string())?;
        let data: Value =
            serde_json::from_slice(data).map_err(|e| format!("record is not JSON: {e}"))?;
        match spec {
            ProcessorSpec::Window {
                length_ms,
                value,
                group_by,
                grace_ms,
            } => {
                let (group, v) = self
                    .bounded(origin.stream_id, state, move || {
                        window_input(&value, group_by.as_deref(), &data)
                    })
                    .await?;
                let rule = Rule {
                    length_ms: length_ms as i64,
                    grace_ms: grace_ms as i64,
                };
                match state.windows.add(
                    origin.input_partition,
                    origin.stream_id,
                    rule,
                    origin.received_ms,
                    origin.input_offset,
                    group,
                    v,
                ) {
                    Added::Counted => Ok(Vec::new()),
                    Added::Late { window_start_ms } => Err(format!(
                        "arrived after its window (start {window_start_ms} ms) closed; not counted"
                    )),
                }
            }
            ProcessorSpec::Jq { .. } => {
                let max = self.max_results;
                self.bounded(origin.stream_id, state, move || spec.apply(data, max))
                    .await
            }
            ProcessorSpec::Identity | ProcessorSpec::Uppercase => {
                spec.apply(data, self.max_results)
            }
        }
    }

    /// Runs user code (jq) under the time bound (see `bounded.rs`). Past the bound the
    /// record gets an error result and the stream is marked runaway: its code is not run again
    /// here, so one bad filter cannot keep abandoning threads.
    async fn bounded<T: Send + 'static>(
        &self,
        stream: Uuid,
        state: &mut StageState,
        work: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let limit_ms = self.runner.limit().as_millis();
        if state.runaway.contains(&stream) {
            return Err(format!(
                "not processed: an earlier record of this stream ran past the {limit_ms} ms \
                 limit (processing.max_record_ms); start a new stream with a fixed processor"
            ));
        }
        match self.runner.run(work).await {
            Ok(result) => result,
            Err(Failure::Panicked) => Err("the processor failed unexpectedly".into()),
            Err(Failure::TimedOut) => {
                tracing::warn!(%stream, limit_ms = limit_ms as u64, "processor ran past its time limit; the stream's processor is disabled on this instance");
                state.runaway.insert(stream);
                Err(format!(
                    "processing took longer than {limit_ms} ms (processing.max_record_ms)"
                ))
            }
        }
    }
}

fn control_of(m: &BorrowedMessage<'_>) -> Option<Control> {
    let value = m.headers().and_then(|hs| {
        hs.iter()
            .find(|h| h.key == frames::CONTROL_HEADER)
            .and_then(|h| h.value)
    })?;
    if value == frames::CONTROL_END.as_bytes() {
        return Some(Control::End);
    }
    if value == frames::CONTROL_CLOSE_WINDOW.as_bytes() {
        let start = m
            .payload()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|p| p.parse::<i64>().ok())?;
        return Some(Control::CloseWindow(start));
    }
    None
}

/// Records progress once all results up to a record are acknowledged, in arrival order: every
/// `COMMIT_INTERVAL` it commits each partition's next offset to the `<group>.next` group and
/// then stores its rewind point for the group's commit (see the module docs). At the first
/// unacknowledged result it reports the failure and stops, so nothing from that record on
/// is recorded.
async fn ack_in_order(
    consumer: Arc<GroupConsumer>,
    progress: Arc<BaseConsumer>,
    topic: String,
    mut rx: mpsc::Receiver<Pending>,
    failed: watch::Sender<Option<String>>,
) {
    // Per partition: (rewind point, next offset) not yet recorded.
    let mut latest: HashMap<i32, (i64, i64)> = HashMap::new();
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let p = tokio::select! {
            p = rx.recv() => p,
            _ = tick.tick() => {
                record_progress(&consumer, &progress, &topic, &mut latest).await;
                continue;
            }
        };
        let Some(p) = p else { break };
        for ack in p.acks {
            if let Err(e) = ack.await {
                let why = format!(
                    "a result of partition {} offset {} was not acknowledged: {e}",
                    p.partition, p.offset
                );
                tracing::error!("{why}");
                record_progress(&consumer, &progress, &topic, &mut latest).await;
                let _ = failed.send(Some(why));
                return;
            }
        }
        let next = p.offset + 1;
        latest.insert(p.partition, (p.rewind.min(next), next));
    }
    record_progress(&consumer, &progress, &topic, &mut latest).await;
}

/// Commits the next offsets (synchronously), then stores the rewind points for the group's
/// commit: a rewind point is never committed ahead of the next offset that goes with it. Only
/// partitions this instance still owns; if the progress commit fails nothing is stored (the
/// older, safe values stay) and it is tried again next time.
async fn record_progress(
    consumer: &Arc<GroupConsumer>,
    progress: &Arc<BaseConsumer>,
    topic: &str,
    latest: &mut HashMap<i32, (i64, i64)>,
) {
    if latest.is_empty() {
        return;
    }
    let owned: HashSet<i32> = match consumer.assignment() {
        Ok(tpl) => tpl.elements().iter().map(|e| e.partition()).collect(),
        Err(_) => return,
    };
    latest.retain(|p, _| owned.contains(p));
    let mut next = TopicPartitionList::new();
    let mut rewind = TopicPartitionList::new();
    for (p, (r, n)) in latest.iter() {
        let added = next
            .add_partition_offset(topic, *p, Offset::Offset(*n))
            .and_then(|_| rewind.add_partition_offset(topic, *p, Offset::Offset(*r)));
        if added.is_err() {
            return;
        }
    }
    let c = progress.clone();
    let committed = tokio::task::spawn_blocking(move || c.commit(&next, CommitMode::Sync)).await;
    match committed {
        Ok(Ok(())) => {
            if let Err(e) = consumer.store_offsets(&rewind) {
                tracing::debug!(error = %e, "processing offsets not stored");
            }
            latest.clear();
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "processing progress not committed; retrying"),
        Err(e) => tracing::warn!(error = %e, "processing progress task failed"),
    }
}
