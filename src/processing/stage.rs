//! The processing stage's loop: one consumer in the group over the input topic. For each
//! record it evaluates the stream's code (bounded), applies the pure step (`record.rs`),
//! hands the results to the producer and passes their acknowledgements to the acker
//! (`progress.rs`). Rebalances are applied before the next record; due windows get their
//! close markers on a timer.

use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::at_ingest::{self, Awaiting, Settle, TakeOver};
use super::evaluate::Evaluator;
use super::orphans::{self, Orphans};
use super::progress::{ack_in_order, Pending, Progress, Work, CLAIM_TIMEOUT};
use super::record::{self, Evaluated, Partitions};
use super::StageError;
use crate::config;
use crate::error::Error;
use crate::idempotency::{KeyIndex, Verdict};
use crate::kafka::records::{decode_input, Control, InputKind, InputRecord};
use crate::kafka::{self, now_ms, Cluster, Counted, Requests, TopicProducer, FLUSH_TIMEOUT};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::telemetry::{SpanKind, Telemetry};

/// Longest a gained partition waits for the key index to catch up.
const KEYS_CATCH_UP: Duration = Duration::from_secs(30);
/// Processed input records whose results may await their acks at once.
const ACK_PIPELINE: usize = 4096;
/// Pause before restarting the stage after a failure.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// How often due windows are looked for.
const WINDOW_CHECK: Duration = Duration::from_millis(250);
/// Longest a rebalance waits for progress to be recorded before partitions are revoked.
const PROGRESS_BEFORE_REVOKE: Duration = Duration::from_secs(10);
/// A close marker not seen back within this is written again.
const CLOSE_RETRY: Duration = Duration::from_secs(30);
/// How often a member of the processing group tells the coordinator it is alive, and so how
/// soon it learns of a rebalance (and releases what it loses, which its next owner waits for:
/// see `progress.rs`).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Partitions gained or lost, reported by librdkafka during a poll.
enum Assignment {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Forwards rebalances to the stage loop, which handles them before the next record, and
/// says when the consumer is in its group (an assignment, even an empty one).
struct StageContext {
    rebalances: std_mpsc::Sender<Assignment>,
    joined: Arc<watch::Sender<bool>>,
    /// The acker's queue, to record progress before partitions are revoked. Weak, so that
    /// the stage dropping its sender still ends the acker.
    work: mpsc::WeakSender<Work>,
    /// One-hop records awaiting confirmation: those of revoked partitions are abandoned
    /// before progress is recorded (their confirmations will not be read here).
    awaiting: Arc<Awaiting>,
    /// Counts the group consumer's requests with the instance's.
    requests: Counted,
}

impl ClientContext for StageContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.requests.count(statistics);
    }
}

impl StageContext {
    /// Partitions are about to go to another instance, which starts from the progress
    /// recorded for them: record it now, while they are still this instance's, so the new
    /// owner processes nothing twice. Blocks the poll (the rebalance waits for it), bounded.
    fn record_progress_now(&self, revoked: Vec<i32>) {
        let Some(work) = self.work.upgrade() else {
            return; // the stage is stopping; it records progress itself
        };
        let (done, recorded) = std_mpsc::channel();
        let recorded = move || recorded.recv_timeout(PROGRESS_BEFORE_REVOKE).is_ok();
        let ok = match tokio::runtime::Handle::try_current() {
            // librdkafka's own thread: blocking is fine.
            Err(_) => work.blocking_send(Work::Flush(revoked, done)).is_ok() && recorded(),
            // The stage's task, polling: let the runtime move other tasks off this thread.
            Ok(runtime)
                if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(|| {
                    runtime
                        .block_on(work.send(Work::Flush(revoked, done)))
                        .is_ok()
                        && recorded()
                })
            }
            Ok(_) => return, // cannot block here; the stage loop does it on the revoke
        };
        if !ok {
            tracing::warn!(
                "progress not recorded before a rebalance; some records may be processed twice"
            );
        }
    }
}

impl ConsumerContext for StageContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if tpl.count() > 0 {
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                self.awaiting.abandon(Some(&revoked));
                self.record_progress_now(revoked);
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions =
            |tpl: &TopicPartitionList| tpl.elements().iter().map(|e| e.partition()).collect();
        let _ = match rebalance {
            Rebalance::Assign(tpl) => {
                self.joined.send_replace(true);
                self.rebalances.send(Assignment::Assigned(partitions(tpl)))
            }
            Rebalance::Revoke(tpl) => self.rebalances.send(Assignment::Revoked(partitions(tpl))),
            Rebalance::Error(_) => Ok(()),
        };
    }
}

type GroupConsumer = StreamConsumer<StageContext>;

/// What one run of the stage keeps between records.
#[derive(Default)]
struct StageState {
    partitions: Partitions,
    /// Partitions assigned to this consumer and claimed: a record of any other partition
    /// (fetched before it was revoked) is not processed here.
    owned: std::collections::HashSet<i32>,
    /// Per stream, its last item held back (a one-hop record awaiting confirmation, or
    /// outputs behind one) and its partition: the stream's next outputs follow it.
    held: std::collections::HashMap<Uuid, (i32, Settle)>,
    /// Per claimed partition, per input offset: how many of the record's outputs a previous
    /// owner wrote already (it died before recording its progress past them): not written
    /// again (`Progress::written_after`).
    written: std::collections::HashMap<i32, std::collections::HashMap<i64, usize>>,
}

impl StageState {
    /// The stream's last held item, if it is not settled yet.
    fn held(&self, stream: &Uuid) -> Option<Settle> {
        self.held
            .get(stream)
            .filter(|(_, s)| s.peek().is_none())
            .map(|(_, s)| s.clone())
    }

    /// Partitions lost: their held items are abandoned, and nothing gained later may wait
    /// behind them.
    fn revoke(&mut self, lost: &[i32]) {
        self.partitions.revoke(lost);
        self.owned.retain(|p| !lost.contains(p));
        self.held.retain(|_, (p, _)| !lost.contains(p));
        self.written.retain(|p, _| !lost.contains(p));
    }

    /// How many leading outputs of the record at (`partition`, `offset`) are written already.
    fn written(&mut self, partition: i32, offset: i64) -> usize {
        let Some(written) = self.written.get_mut(&partition) else {
            return 0;
        };
        let n = written.remove(&offset).unwrap_or(0);
        written.retain(|o, _| *o > offset);
        if written.is_empty() {
            self.written.remove(&partition);
        }
        n
    }
}

/// What the stage works with, from the rest of the daemon.
pub struct StageWith {
    pub registry: Arc<Registry>,
    /// The input topic's producer: window close markers are written through it.
    pub input: TopicProducer,
    pub evaluator: Arc<Evaluator>,
    pub keys: Arc<KeyIndex>,
    pub metrics: Arc<Metrics>,
    pub telemetry: Telemetry,
}

/// The processing stage of one instance.
pub struct Stage {
    /// Settings of the group consumer; a fresh consumer is made for every (re)start.
    consumer_config: ClientConfig,
    /// Where its consumers count their requests.
    requests: Requests,
    input_topic: String,
    input_partitions: i32,
    /// The results topic, when it is partitioned as the input topic: then a new owner of a
    /// partition does not write again what its previous owner wrote (`progress.rs`).
    results_topic: Option<String>,
    /// Never gives up on a result (`message.timeout.ms=0`), so nothing is skipped.
    results: TopicProducer,
    /// Writes window close markers into the input topic.
    input: TopicProducer,
    /// Runs streams' code (shared with one-hop processing at ingest).
    evaluator: Arc<Evaluator>,
    /// Settles one-hop records: waits for their confirmations, or writes their results.
    take_over: TakeOver,
    /// The idempotency rule's memory, shared with ingest.
    keys: Arc<KeyIndex>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// Continues the traces of traced records.
    telemetry: Telemetry,
    /// `true` while the current consumer is in the group (`/readyz`).
    joined: Arc<watch::Sender<bool>>,
}

impl Stage {
    /// Joins the processing group and runs until `shutdown`, restarting after failures.
    /// Also returns whether it is in the group now.
    pub fn start(
        cluster: &Cluster,
        config: &config::Processing,
        with: StageWith,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(JoinHandle<()>, watch::Receiver<bool>), Error> {
        let StageWith {
            registry,
            input,
            evaluator,
            keys,
            metrics,
            telemetry,
        } = with;
        let (joined, in_group) = watch::channel(false);
        let consumer_config = cluster.consumer_with(
            &config.group_id,
            &[
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "1000"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", &CLAIM_TIMEOUT.as_millis().to_string()),
                ("heartbeat.interval.ms", &HEARTBEAT.as_millis().to_string()),
            ],
        );
        let results = cluster.producer(&cluster.topics.results, None)?;
        let take_over = TakeOver {
            evaluator: evaluator.clone(),
            results: results.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            wait: Duration::from_millis(config.at_ingest_wait_ms),
            awaiting: Arc::default(),
        };
        let stage = Stage {
            consumer_config,
            requests: cluster.requests.clone(),
            input_topic: cluster.topics.input.name.clone(),
            input_partitions: cluster.topics.input.partitions,
            results_topic: (cluster.topics.results.partitions == cluster.topics.input.partitions)
                .then(|| cluster.topics.results.name.clone()),
            results,
            input,
            evaluator,
            take_over,
            keys,
            registry,
            metrics,
            telemetry,
            joined: Arc::new(joined),
        };
        Ok((tokio::spawn(stage.run(shutdown)), in_group))
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let failure = match self.run_once(&mut shutdown).await {
                Ok(()) => break,
                Err(e) => e,
            };
            tracing::warn!(reason = %failure, "processing restarts from the committed offsets");
            self.results.replace();
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(RESTART_BACKOFF) => {}
            }
        }
        self.results.flush(FLUSH_TIMEOUT);
    }

    /// One run, from the committed offsets until shutdown (`Ok`) or a failure.
    async fn run_once(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), StageError> {
        let (rebalance_tx, rebalances) = std_mpsc::channel();
        self.joined.send_replace(false);
        let (tx, rx) = mpsc::channel::<Work>(ACK_PIPELINE);
        let context = StageContext {
            rebalances: rebalance_tx,
            joined: self.joined.clone(),
            work: tx.downgrade(),
            awaiting: self.take_over.awaiting.clone(),
            requests: self.requests.context(),
        };
        let consumer: GroupConsumer = kafka::reporting(&self.consumer_config)
            .create_with_context(context)
            .map_err(|e| StageError::Consumer(format!("create: {e}")))?;
        let consumer = Arc::new(consumer);
        consumer
            .subscribe(&[&self.input_topic])
            .map_err(|e| StageError::Consumer(format!("subscribe to {}: {e}", self.input_topic)))?;
        let progress = Progress::new(
            &self.consumer_config,
            &self.input_topic,
            self.results_topic.as_deref(),
            &self.requests,
        )
        .map_err(|e| StageError::Progress(format!("create consumer: {e}")))?;
        let progress = Arc::new(progress);
        let (failed_tx, mut failed) = watch::channel(None::<StageError>);
        let acker = tokio::spawn(ack_in_order(
            consumer.clone(),
            progress.clone(),
            rx,
            failed_tx,
        ));
        let (orphaned_tx, mut orphaned) = watch::channel(Vec::new());
        let watch = tokio::spawn(watch_orphans(
            progress.clone(),
            self.input_partitions,
            orphaned_tx,
        ));
        let _watch = AbortOnDrop(watch);
        let mut state = StageState::default();
        let mut window_check = tokio::time::interval(WINDOW_CHECK);
        window_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            if *shutdown.borrow() {
                break Ok(());
            }
            let msg = tokio::select! {
                _ = shutdown.changed() => continue,
                _ = failed.changed() => {
                    break Err(failed.borrow().clone().unwrap_or(StageError::AckerStopped));
                }
                _ = orphaned.changed() => {
                    let stalled = orphaned.borrow_and_update().clone();
                    if stalled.iter().any(|p| !state.owned.contains(p)) {
                        break Err(StageError::Orphaned(stalled));
                    }
                    continue;
                }
                _ = window_check.tick() => {
                    self.close_due_windows(&mut state.partitions).await;
                    let memory = record::ENDED_MEMORY.as_millis() as i64;
                    state.partitions.forget_ended(now_ms() - memory);
                    self.take_over.awaiting.prune();
                    state.held.retain(|_, (_, s)| s.peek().is_none());
                    continue;
                }
                msg = consumer.recv() => msg,
            };
            // Rebalances happen inside the poll that returned this record: apply them first.
            let mut rebalanced = Ok(());
            while let Ok(assignment) = rebalances.try_recv() {
                if let Err(e) = self
                    .rebalanced(&progress, &tx, assignment, &mut state)
                    .await
                {
                    rebalanced = Err(e);
                }
            }
            if let Err(e) = rebalanced {
                break Err(e);
            }
            // Read before the record is processed: its results come after it.
            let floor = msg.as_ref().ok().and_then(|m| {
                let p = m.partition();
                progress.floor(p, state.written.contains_key(&p))
            });
            match msg {
                Ok(m) if !state.owned.contains(&m.partition()) => {
                    tracing::debug!(partition = m.partition(), "record of a revoked partition");
                }
                Ok(m) => match self.process(&m, &mut state).await {
                    Ok(mut pending) => {
                        pending.floor = floor;
                        if tx.send(Work::Done(pending)).await.is_err() {
                            break Err(StageError::AckerStopped);
                        }
                    }
                    Err(e) => break Err(e),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "processing consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        // Confirmations are no longer read: what waits for one is abandoned, not taken over.
        self.take_over.awaiting.abandon(None);
        drop(tx);
        let _ = acker.await;
        // Commits the stored offsets only: everything acknowledged, nothing after a failure.
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "commit of processing offsets");
        }
        outcome
    }

    /// Keeps the stage's state to the partitions it owns. Claims a gained partition (waits
    /// for its previous owner to release it) and reads where that owner stopped, to replay
    /// up to there silently.
    async fn rebalanced(
        &self,
        progress: &Progress,
        work: &mpsc::Sender<Work>,
        assignment: Assignment,
        state: &mut StageState,
    ) -> Result<(), StageError> {
        match assignment {
            Assignment::Revoked(lost) => {
                state.revoke(&lost);
                self.take_over.awaiting.abandon(Some(&lost));
                // Usually done already, before the revoke (`StageContext::pre_rebalance`);
                // then this finds nothing held.
                let (done, recorded) = std_mpsc::channel();
                if work.send(Work::Flush(lost, done)).await.is_err() {
                    return Err(StageError::AckerStopped);
                }
                let _ = tokio::task::spawn_blocking(move || {
                    recorded.recv_timeout(PROGRESS_BEFORE_REVOKE)
                })
                .await;
            }
            Assignment::Assigned(gained) => {
                if gained.is_empty() {
                    return Ok(());
                }
                for (partition, until) in progress.claim(&gained).await? {
                    tracing::debug!(partition, until, "records before this were processed");
                    state.partitions.replay_until.insert(partition, until);
                    let written = progress.written_after(partition, until).await;
                    if !written.is_empty() {
                        tracing::info!(
                            partition,
                            records = written.len(),
                            "results of records processed by the previous owner are written already"
                        );
                        state.written.insert(partition, written);
                    }
                }
                // What the previous owners decided of idempotency keys, before deciding on.
                self.keys
                    .fence(KEYS_CATCH_UP)
                    .await
                    .map_err(StageError::Registry)?;
                state.owned.extend(gained);
            }
        }
        Ok(())
    }

    /// Writes a close marker for every window that is due, into its stream's input
    /// partition: the window closes where the marker lands, the same on every replay.
    async fn close_due_windows(&self, state: &mut Partitions) {
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
            let control = Control::CloseWindow(start);
            let marker = self
                .input
                .enqueue_with_headers(
                    &stream.to_string(),
                    &control.payload(),
                    now_ms(),
                    InputKind::Control(control).headers(None, None),
                )
                .await;
            match marker {
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
    /// result could not even be queued, or the registry could not be read; the stage then
    /// restarts. A one-hop record is held until it is settled (`at_ingest`), and so is
    /// every later output of its stream.
    async fn process(
        &self,
        m: &BorrowedMessage<'_>,
        state: &mut StageState,
    ) -> Result<Pending, StageError> {
        let (partition, offset) = (m.partition(), m.offset());
        let nothing = |rewind| Pending {
            partition,
            offset,
            rewind,
            floor: None,
            acks: Vec::new(),
            settle: None,
        };
        let (mut input, payload, tagged) = match decode_input(m, now_ms()) {
            InputRecord::Confirmation(offsets) => {
                self.take_over.awaiting.confirm(partition, &offsets);
                return Ok(nothing(
                    state.partitions.windows.rewind_point(partition, offset + 1),
                ));
            }
            InputRecord::Foreign => {
                tracing::warn!(
                    partition,
                    offset,
                    "skipping input record whose key is not a stream id"
                );
                return Ok(nothing(
                    state.partitions.windows.rewind_point(partition, offset + 1),
                ));
            }
            InputRecord::Stream {
                input,
                payload,
                at_ingest,
            } => (input, payload, at_ingest),
        };
        let stream = input.stream;
        let replaying = state.partitions.replaying(partition, offset);
        if tagged && !replaying && !state.partitions.ended_before(&stream, offset) {
            let before = state.held(&stream);
            let settle = self
                .take_over
                .settle(input, payload.map(<[u8]>::to_vec), before);
            state.held.insert(stream, (partition, settle.clone()));
            return Ok(Pending {
                settle: Some(settle),
                ..nothing(state.partitions.windows.rewind_point(partition, offset + 1))
            });
        }
        let span = match replaying {
            true => None,
            false => at_ingest::process_span(&self.telemetry, &mut input),
        };
        // The idempotency rule, on every read of the record (a replay decides the same).
        let (verdict, index_ack) = match (&input.keyed, input.control) {
            (Some(keyed), None) => self.keys.decide(&input, keyed),
            _ => (Verdict::First, None),
        };
        let evaluated = match input.control {
            Some(_) => None,
            None if state.partitions.ended_before(&stream, offset) => {
                self.metrics.processing.after_end.inc();
                Some(Evaluated::Skipped)
            }
            None if verdict == Verdict::Repeat => {
                if !replaying {
                    self.metrics.processing.repeats.inc();
                }
                Some(Evaluated::Skipped)
            }
            None => {
                let _sandbox = span
                    .as_ref()
                    .filter(|_| {
                        let entry = self.registry.local(&stream);
                        entry.is_some_and(|e| Evaluator::runs_user_code(&e.processor()))
                    })
                    .map(|s| s.child("sandbox", SpanKind::Internal));
                Some(
                    self.evaluator
                        .stored(
                            &self.registry,
                            &self.metrics,
                            &input,
                            payload,
                            replaying,
                            true,
                        )
                        .await?,
                )
            }
        };
        if let Some(Evaluated::Failed(_)) = &evaluated {
            if !replaying {
                self.metrics.processing.processing_errors.inc();
            }
        }
        let mut step = record::step(
            &mut state.partitions,
            &input,
            evaluated,
            replaying,
            now_ms(),
        );
        // What a previous owner wrote of this record's results before it died.
        let written = state.written(partition, offset).min(step.outputs.len());
        if written > 0 {
            step.outputs.drain(..written);
        }
        let counted = (!step.outputs.is_empty())
            .then(|| self.registry.local(&stream))
            .flatten();
        if let Some(e) = counted {
            at_ingest::count_results(&e, &step.outputs);
        }
        if !step.outputs.is_empty() {
            if let Some(before) = state.held(&stream) {
                let settle = self.take_over.behind(
                    before,
                    stream,
                    step.outputs,
                    input.received_ms,
                    (partition, offset),
                );
                state.held.insert(stream, (partition, settle.clone()));
                return Ok(Pending {
                    settle: Some(settle),
                    acks: index_ack.into_iter().collect(),
                    ..nothing(step.rewind)
                });
            }
        }
        let key = stream.to_string();
        let write = span
            .as_ref()
            .filter(|_| !step.outputs.is_empty())
            .map(|s| s.child("results write", SpanKind::Producer));
        let mut acks = at_ingest::enqueue_outputs(
            &self.results,
            &key,
            step.outputs,
            input.received_ms,
            input.trace.as_ref(),
            write,
        )
        .await
        .map_err(|e| StageError::Produce {
            partition,
            offset,
            reason: e.to_string(),
        })?;
        // Progress goes past a keyed record only once the index says what it decided.
        acks.extend(index_ack);
        Ok(Pending {
            acks,
            ..nothing(step.rewind)
        })
    }
}

/// Reads every partition's progress each `orphans::CHECK_EVERY` and publishes the orphaned
/// ones (see `orphans.rs`); a failed reading is skipped (the broker may be away).
async fn watch_orphans(progress: Arc<Progress>, partitions: i32, out: watch::Sender<Vec<i32>>) {
    let mut orphans = Orphans::default();
    let mut tick = tokio::time::interval(orphans::CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match progress.positions(partitions).await {
            Ok(reading) => {
                let stalled = orphans.observe(&reading, Instant::now());
                if !stalled.is_empty() {
                    out.send_replace(stalled);
                }
            }
            Err(e) => tracing::debug!(error = %e, "orphan watch: no reading"),
        }
    }
}

/// Aborts a task when the run that started it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
