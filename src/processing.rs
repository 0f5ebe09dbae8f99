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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::{ClientConfig, Message};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::frames::{self, Kind, Origin};
use crate::kafka::{now_ms, SendError, TopicProducer};
use crate::metrics::Metrics;
use crate::processor::ProcessorSpec;
use crate::registry::Registry;

/// Processed input records whose results may await their acks at once.
const ACK_PIPELINE: usize = 4096;
/// Pause before restarting the stage after a failure.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

type Ack = Pin<Box<dyn Future<Output = Result<i64, SendError>> + Send>>;

/// An input record whose results were produced; its offset is stored once they are acked.
struct Pending {
    partition: i32,
    offset: i64,
    acks: Vec<Ack>,
}

pub struct Processing {
    /// Settings of the group consumer; a fresh consumer is made for every (re)start.
    pub consumer_config: ClientConfig,
    pub input_topic: String,
    pub results: TopicProducer,
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
        let consumer: StreamConsumer = match self.consumer_config.create() {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(format!("create consumer: {e}")),
        };
        let consumer = Arc::new(consumer);
        if let Err(e) = consumer.subscribe(&[&self.input_topic]) {
            return Outcome::Failed(format!("subscribe to {}: {e}", self.input_topic));
        }
        let (tx, rx) = mpsc::channel::<Pending>(ACK_PIPELINE);
        let (failed_tx, mut failed) = watch::channel(None::<String>);
        let acker = tokio::spawn(ack_in_order(
            consumer.clone(),
            self.input_topic.clone(),
            rx,
            failed_tx,
        ));
        let outcome = loop {
            if *shutdown.borrow() {
                break Outcome::Shutdown;
            }
            let msg = tokio::select! {
                _ = shutdown.changed() => continue,
                _ = failed.changed() => {
                    break Outcome::Failed(failed.borrow().clone().unwrap_or_default());
                }
                msg = consumer.recv() => msg,
            };
            match msg {
                Ok(m) => match self.process(&m).await {
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

    /// Processes one input record and hands its results to the producer. An error means a
    /// result could not even be queued; the stage then restarts.
    async fn process(&self, m: &BorrowedMessage<'_>) -> Result<Pending, String> {
        let mut pending = Pending {
            partition: m.partition(),
            offset: m.offset(),
            acks: Vec::new(),
        };
        let Some(stream_id) = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| Uuid::parse_str(k).ok())
        else {
            tracing::warn!(
                partition = m.partition(),
                offset = m.offset(),
                "skipping input record whose key is not a stream id"
            );
            return Ok(pending);
        };
        let origin = Origin {
            stream_id,
            input_partition: m.partition(),
            input_offset: m.offset(),
            received_ms: m.timestamp().to_millis().unwrap_or_else(now_ms),
        };
        let processed_ms = now_ms();
        let outputs = if is_end_marker(m) {
            vec![(
                Kind::End,
                frames::stored(Kind::End, &origin, processed_ms, None, None),
            )]
        } else {
            // Never guess a stream's processor: a registry that cannot be read restarts the
            // stage (the record is retried); a stream the registry does not have is an error.
            let spec = match self.registry.lookup(&stream_id).await {
                Ok(Some(entry)) => Ok(entry.processor()),
                Ok(None) => Err(format!("stream {stream_id} is not in the registry")),
                Err(e) => return Err(format!("registry unavailable: {e}")),
            };
            self.metrics.processed.inc();
            self.apply(&origin, spec, m.payload(), processed_ms)
        };
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
                    format!(
                        "produce a result of partition {} offset {}: {e}",
                        m.partition(),
                        m.offset()
                    )
                })?;
            pending.acks.push(Box::pin(ack));
        }
        Ok(pending)
    }

    /// Runs the stream's processor on one record: its results, or one error result.
    fn apply(
        &self,
        origin: &Origin,
        spec: Result<ProcessorSpec, String>,
        payload: Option<&[u8]>,
        processed_ms: i64,
    ) -> Vec<(Kind, Vec<u8>)> {
        let outcome = spec.and_then(|spec| {
            let data = payload.ok_or_else(|| "record has no value".to_string())?;
            let data =
                serde_json::from_slice(data).map_err(|e| format!("record is not JSON: {e}"))?;
            spec.apply(data)
        });
        match outcome {
            Ok(results) => results
                .iter()
                .map(|data| {
                    (
                        Kind::Result,
                        frames::stored(Kind::Result, origin, processed_ms, Some(data), None),
                    )
                })
                .collect(),
            Err(message) => {
                self.metrics.processing_errors.inc();
                vec![(
                    Kind::Error,
                    frames::stored(Kind::Error, origin, processed_ms, None, Some(&message)),
                )]
            }
        }
    }
}

fn is_end_marker(m: &BorrowedMessage<'_>) -> bool {
    m.headers().is_some_and(|hs| {
        hs.iter().any(|h| {
            h.key == frames::CONTROL_HEADER && h.value == Some(frames::CONTROL_END.as_bytes())
        })
    })
}

/// Stores each input offset once all its results are acknowledged, in arrival order. At the
/// first unacknowledged result it reports the failure and stops, so neither that offset nor
/// any later one is stored.
async fn ack_in_order(
    consumer: Arc<StreamConsumer>,
    topic: String,
    mut rx: mpsc::Receiver<Pending>,
    failed: watch::Sender<Option<String>>,
) {
    while let Some(p) = rx.recv().await {
        for ack in p.acks {
            if let Err(e) = ack.await {
                let why = format!(
                    "a result of partition {} offset {} was not acknowledged: {e}",
                    p.partition, p.offset
                );
                tracing::error!("{why}");
                let _ = failed.send(Some(why));
                return;
            }
        }
        // Fails harmlessly when the partition moved to another instance meanwhile; that
        // instance re-processes from the last commit.
        if let Err(e) = consumer.store_offset(&topic, p.partition, p.offset) {
            tracing::debug!(partition = p.partition, offset = p.offset, error = %e, "offset not stored");
        }
    }
}
