//! One hop for per-record processors (identity, uppercase, jq): the instance that accepts a
//! record runs the stream's processor and writes the results itself, right after the record
//! is stored, instead of leaving it to the processing group, which would first read it back
//! from the input topic (a second broker round trip, and on brokers that answer a waiting
//! fetch only on a timer, a second wait). Windows keep state per partition and always go
//! through the group.
//!
//! The protocol:
//! 1. The record is stored in the input topic *tagged* (`streamgate-at-ingest` header). It
//!    stays the stream's raw log.
//! 2. Once the broker acknowledged it, and it is known to come before the stream's end, the
//!    accepting instance evaluates it (the same [`Evaluator`] and [`record::step`] as the
//!    group, so the result is the same) and writes its results, carrying its input offset.
//! 3. Once the results are acknowledged, the client is answered, and the record is
//!    *confirmed*: a confirmation record (`streamgate-confirmed` header, the JSON array of
//!    confirmed offsets as payload, batched per partition) is written into the same input
//!    partition, so it always lands behind the record it confirms.
//! 4. The processing group, reading a tagged record, writes nothing for it and holds its
//!    progress there until the record's confirmation comes by. Without one within
//!    `processing.at_ingest_wait_ms` it writes the results itself ([`TakeOver`]).
//!
//! What each failure does:
//! - Input not acknowledged: 503 as before; nothing else is written.
//! - Input acknowledged, results not (their write failed or timed out, the sandbox could not
//!   run, the instance died): no confirmation, so the group writes the results after the
//!   wait. The client is answered 2xx when the instance is still there: the record is
//!   stored and its results will follow. Nothing is lost.
//! - Results acknowledged, confirmation not (the instance died in between, or the
//!   confirmation's write failed): the group writes the results again after the wait, a
//!   duplicate with the same `input_offset` (at least once, as after any crash).
//! - Results are never written before their record is stored, so every result names a
//!   stored input record.
//!
//! Order: one sender's results are written in its order (an HTTP sender waits for each
//! answer; a WebSocket session writes its frames' results in frame order). A stream's `end`
//! follows all its results: the group writes nothing of a stream behind an unconfirmed
//! tagged record of it until that record is settled. Results written by the group after the
//! wait may follow later results of their stream.
//!
//! A partition revoked while the group waits for a confirmation is *abandoned* there: its
//! progress stays before that record, and the next owner reads it, and its confirmation,
//! again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::evaluate::Evaluator;
use super::record::{self, Evaluated, Partitions};
use super::StageError;
use crate::kafka::records::{self as stored, Input};
use crate::kafka::{now_ms, Receipt, TopicProducer};
use crate::metrics::Metrics;
use crate::registry::{Registry, StreamEntry};
use crate::telemetry::{Span, SpanKind, Telemetry, TraceContext};
use crate::wire::{Kind, ProcessorSpec};

/// How long confirmations gather before they are written, one record per partition: a
/// confirmation is off the client's path, and fewer records cost the broker less.
const CONFIRM_LINGER: Duration = Duration::from_millis(10);

/// Hands a record's outputs to the producer, each with its type header (and `trace`, the
/// processing's span, for a traced record); returns their acks. `write`, the span of the
/// write, ends with the last ack.
pub(super) async fn enqueue_outputs(
    results: &TopicProducer,
    key: &str,
    outputs: Vec<(Kind, Vec<u8>)>,
    timestamp_ms: i64,
    trace: Option<&TraceContext>,
    write: Option<Span>,
) -> Result<Vec<Receipt>, crate::kafka::SendError> {
    let mut acks = Vec::with_capacity(outputs.len());
    for (kind, payload) in outputs {
        let headers = stored::result_headers(kind, trace);
        let ack = results
            .enqueue_with_headers(key, &payload, timestamp_ms, Some(headers))
            .await?;
        acks.push(Box::pin(ack) as Receipt);
    }
    if let (Some(write), Some(last)) = (write, acks.pop()) {
        write.set("records", acks.len() as i64 + 1);
        acks.push(Box::pin(async move {
            let acked = last.await;
            drop(write);
            acked
        }));
    }
    Ok(acks)
}

/// The processing span of a traced record (not while replaying), which its results name:
/// `input.trace` becomes this span's context.
pub(super) fn process_span(telemetry: &Telemetry, input: &mut Input) -> Option<Span> {
    let span = telemetry.resume(input.trace.as_ref(), "process", SpanKind::Consumer)?;
    span.set("stream.id", input.stream.to_string());
    span.stored(input.partition, &[input.offset]);
    input.trace = Some(span.context());
    Some(span)
}

/// The frames of a per-record processor's evaluation (its step keeps no state), counted as
/// processed.
fn outputs_of(input: &Input, evaluated: Evaluated, metrics: &Metrics) -> Vec<(Kind, Vec<u8>)> {
    metrics.processing.processed.inc();
    if let Evaluated::Failed(_) = &evaluated {
        metrics.processing.processing_errors.inc();
    }
    let mut stateless = Partitions::default();
    record::step(&mut stateless, input, Some(evaluated), false, now_ms()).outputs
}

/// Counts a record's results on its stream (what `streamctl top` shows).
pub(super) fn count_results(entry: &StreamEntry, outputs: &[(Kind, Vec<u8>)]) {
    let results = outputs.iter().filter(|(k, _)| *k == Kind::Result).count();
    if results > 0 {
        entry
            .stats
            .records_out
            .fetch_add(results as u64, std::sync::atomic::Ordering::Relaxed);
        entry.stats.touch();
    }
}

/// The accepting side: evaluates records and writes their results and confirmations.
pub struct AtIngest {
    evaluator: Arc<Evaluator>,
    /// Gives up after `limits.send_timeout_ms`: a client waits for these acks. Shares the
    /// input producer's session.
    results: TopicProducer,
    confirmations: mpsc::UnboundedSender<(i32, i64)>,
    metrics: Arc<Metrics>,
    telemetry: Telemetry,
}

impl AtIngest {
    /// Starts the confirmation writer, which writes into `input`.
    pub fn start(
        evaluator: Arc<Evaluator>,
        results: TopicProducer,
        input: TopicProducer,
        metrics: Arc<Metrics>,
        telemetry: Telemetry,
    ) -> Arc<Self> {
        let (confirmations, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_confirmations(input, rx));
        Arc::new(Self {
            evaluator,
            results,
            confirmations,
            metrics,
            telemetry,
        })
    }

    /// Whether a stream's records are processed where they are accepted.
    pub fn applies(&self, spec: &ProcessorSpec) -> bool {
        Evaluator::is_per_record(spec)
    }

    /// Evaluates a stored record (before its stream's end) and hands its results to the
    /// producer. The returned future resolves once they are acknowledged and the record
    /// confirmed (`true`), or once they cannot be (`false`: the group writes them).
    pub async fn write(
        &self,
        entry: &Arc<StreamEntry>,
        mut input: Input,
        payload: &[u8],
    ) -> BoxFuture<'static, bool> {
        let span = process_span(&self.telemetry, &mut input);
        let failed = |why: &dyn std::fmt::Display| {
            tracing::warn!(stream = %input.stream, partition = input.partition, offset = input.offset, %why, "one-hop results not written; the processing group writes them");
            futures_util::future::ready(false).boxed()
        };
        let spec = entry.processor();
        let sandbox = span
            .as_ref()
            .filter(|_| Evaluator::runs_user_code(&spec))
            .map(|s| s.child("sandbox", SpanKind::Internal));
        let evaluated = match self.evaluator.per_record(entry, &spec, Some(payload)).await {
            Ok(evaluated) => evaluated,
            Err(e) => return failed(&e),
        };
        drop(sandbox);
        let outputs = outputs_of(&input, evaluated, &self.metrics);
        let key = input.stream.to_string();
        let counted = outputs.clone();
        let write = span
            .as_ref()
            .filter(|_| !outputs.is_empty())
            .map(|s| s.child("results write", SpanKind::Producer));
        let enqueued = enqueue_outputs(
            &self.results,
            &key,
            outputs,
            input.received_ms,
            input.trace.as_ref(),
            write,
        );
        let acks = match enqueued.await {
            Ok(acks) => acks,
            Err(e) => return failed(&e),
        };
        let (entry, confirmations, metrics) = (
            entry.clone(),
            self.confirmations.clone(),
            self.metrics.clone(),
        );
        async move {
            for ack in acks {
                if let Err(e) = ack.await {
                    tracing::warn!(stream = %input.stream, partition = input.partition, offset = input.offset, error = %e, "one-hop results not acknowledged; the processing group writes them");
                    return false;
                }
            }
            count_results(&entry, &counted);
            metrics.processing.results_at_ingest.inc();
            let _ = confirmations.send((input.partition, input.offset));
            true
        }
        .boxed()
    }
}

/// Writes confirmations, gathered for `CONFIRM_LINGER`, one record per partition. A lost
/// confirmation costs a duplicate result (the group writes it again), never a result.
async fn write_confirmations(input: TopicProducer, mut rx: mpsc::UnboundedReceiver<(i32, i64)>) {
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(CONFIRM_LINGER).await;
        let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let mut add = |(p, o): (i32, i64)| by_partition.entry(p).or_default().push(o);
        add(first);
        while let Ok(c) = rx.try_recv() {
            add(c);
        }
        for (partition, offsets) in by_partition {
            let (key, payload, headers) = stored::confirmation(&offsets);
            match input
                .enqueue_to(partition, key, &payload, now_ms(), Some(headers))
                .await
            {
                Ok(ack) => {
                    tokio::spawn(async move {
                        if let Err(e) = ack.await {
                            tracing::warn!(partition, error = %e, "one-hop confirmation not stored; the processing group writes those results again");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "one-hop confirmation not written; the processing group writes those results again")
                }
            }
        }
    }
}

/// How a record the group holds was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Its results were written (where it was accepted, or here).
    Written,
    /// Its partition was revoked first: nothing is recorded from it on.
    Abandoned,
}

/// A record's settlement, awaited by the acker and by later outputs of its stream.
pub type Settle = Shared<BoxFuture<'static, Result<Resolution, StageError>>>;

/// Tagged records the group has read and not yet seen confirmed. Shared with the rebalance
/// callback, which abandons those of revoked partitions.
#[derive(Default)]
pub struct Awaiting {
    waiting: Mutex<HashMap<(i32, i64), oneshot::Sender<()>>>,
}

impl Awaiting {
    fn add(&self, partition: i32, offset: i64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("awaiting lock")
            .insert((partition, offset), tx);
        rx
    }

    /// A confirmation record was read.
    pub fn confirm(&self, partition: i32, offsets: &[i64]) {
        let mut waiting = self.waiting.lock().expect("awaiting lock");
        for offset in offsets {
            if let Some(tx) = waiting.remove(&(partition, *offset)) {
                let _ = tx.send(());
            }
        }
    }

    /// Stops waiting on these partitions (all with `None`): their records are abandoned.
    pub fn abandon(&self, partitions: Option<&[i32]>) {
        self.waiting
            .lock()
            .expect("awaiting lock")
            .retain(|(p, _), _| partitions.is_some_and(|lost| !lost.contains(p)));
    }

    /// Forgets records settled without their confirmation (written here after the wait).
    pub fn prune(&self) {
        self.waiting
            .lock()
            .expect("awaiting lock")
            .retain(|_, tx| !tx.is_closed());
    }
}

/// The group's side: settles tagged records, writing their results when no confirmation
/// comes, and holds a stream's later outputs behind them.
pub struct TakeOver {
    pub evaluator: Arc<Evaluator>,
    /// The stage's producer (never gives up).
    pub results: TopicProducer,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// `processing.at_ingest_wait_ms`.
    pub wait: Duration,
    pub awaiting: Arc<Awaiting>,
}

impl TakeOver {
    /// A tagged record read by the group (not replayed, not after its stream's end): settles
    /// once confirmed, or once the group wrote its results after the wait, and never before
    /// `before` (the stream's previous held item).
    pub fn settle(&self, input: Input, payload: Option<Vec<u8>>, before: Option<Settle>) -> Settle {
        let mut confirmed = self.awaiting.add(input.partition, input.offset);
        let wait = self.wait;
        let write = self.written_here(input, payload);
        let settle = async move {
            tokio::select! {
                r = &mut confirmed => {
                    return Ok(match r {
                        Ok(()) => Resolution::Written,
                        Err(_) => Resolution::Abandoned,
                    });
                }
                _ = tokio::time::sleep(wait) => {}
            }
            if let Some(before) = before {
                if before.await? == Resolution::Abandoned {
                    return Ok(Resolution::Abandoned);
                }
            }
            match confirmed.try_recv() {
                Ok(()) => Ok(Resolution::Written),
                Err(oneshot::error::TryRecvError::Closed) => Ok(Resolution::Abandoned),
                Err(oneshot::error::TryRecvError::Empty) => write.await,
            }
        };
        spawned(settle)
    }

    /// A stream's outputs that must follow `before` (its stream's held item): written once
    /// it is settled, not at all if it was abandoned.
    pub fn behind(
        &self,
        before: Settle,
        stream: Uuid,
        outputs: Vec<(Kind, Vec<u8>)>,
        timestamp_ms: i64,
        at: (i32, i64),
    ) -> Settle {
        let results = self.results.clone();
        spawned(async move {
            if before.await? == Resolution::Abandoned {
                return Ok(Resolution::Abandoned);
            }
            write_all(&results, stream, outputs, timestamp_ms, at).await?;
            Ok(Resolution::Written)
        })
    }

    /// Writes a tagged record's results here: what the group would have done without one hop.
    fn written_here(
        &self,
        input: Input,
        payload: Option<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<Resolution, StageError>> + Send + 'static {
        let (evaluator, results, registry, metrics) = (
            self.evaluator.clone(),
            self.results.clone(),
            self.registry.clone(),
            self.metrics.clone(),
        );
        async move {
            let evaluated = evaluator
                .stored(
                    &registry,
                    &metrics,
                    &input,
                    payload.as_deref(),
                    false,
                    false,
                )
                .await?;
            match evaluated {
                // Stored after its stream's end: not the stream's.
                Evaluated::Skipped => return Ok(Resolution::Written),
                Evaluated::Failed(_) => metrics.processing.processing_errors.inc(),
                _ => {}
            }
            let entry = registry.local(&input.stream);
            let mut stateless = Partitions::default();
            let outputs =
                record::step(&mut stateless, &input, Some(evaluated), false, now_ms()).outputs;
            if let Some(e) = &entry {
                count_results(e, &outputs);
            }
            tracing::info!(stream = %input.stream, partition = input.partition, offset = input.offset, "no confirmation of a one-hop record's results; the processing group writes them");
            metrics.processing.results_taken_over.inc();
            let at = (input.partition, input.offset);
            write_all(&results, input.stream, outputs, input.received_ms, at).await?;
            Ok(Resolution::Written)
        }
    }
}

/// Writes the outputs of the input record `at` (partition, offset) and awaits their
/// acknowledgements.
async fn write_all(
    results: &TopicProducer,
    stream: Uuid,
    outputs: Vec<(Kind, Vec<u8>)>,
    timestamp_ms: i64,
    (partition, offset): (i32, i64),
) -> Result<(), StageError> {
    let failed = |reason: String| StageError::NotAcknowledged {
        partition,
        offset,
        reason,
    };
    let acks = enqueue_outputs(
        results,
        &stream.to_string(),
        outputs,
        timestamp_ms,
        None,
        None,
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    for ack in acks {
        ack.await.map_err(|e| failed(e.to_string()))?;
    }
    Ok(())
}

/// Runs a settlement on its own task (its wait and its writes go on whoever awaits it) and
/// shares its outcome.
fn spawned(
    settle: impl std::future::Future<Output = Result<Resolution, StageError>> + Send + 'static,
) -> Settle {
    let task = tokio::spawn(settle);
    async move {
        task.await
            .unwrap_or_else(|e| Err(StageError::Consumer(format!("settlement task: {e}"))))
    }
    .boxed()
    .shared()
}
