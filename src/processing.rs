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
//! Because the group is shared by every instance, adding instances adds processing capacity;
//! Kafka moves partitions between them on rebalance.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::Message;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::frames::{self, Kind, Origin};
use crate::kafka::{now_ms, SendError, TopicProducer};
use crate::registry::Registry;

/// Processed input records whose results may await their acks at once.
const ACK_PIPELINE: usize = 4096;

type Ack = Pin<Box<dyn Future<Output = Result<i64, SendError>> + Send>>;

/// An input record whose results were produced; its offset is stored once they are acked.
struct Pending {
    partition: i32,
    offset: i64,
    acks: Vec<Ack>,
}

pub struct Processing {
    pub consumer: Arc<StreamConsumer>,
    pub input_topic: String,
    pub results: TopicProducer,
    pub registry: Arc<Registry>,
}

impl Processing {
    /// Runs until `shutdown`, then stores the offsets of everything acknowledged and commits.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.consumer.subscribe(&[&self.input_topic]) {
            tracing::error!(error = %e, "processing cannot subscribe to the input topic");
            return;
        }
        let (tx, rx) = mpsc::channel::<Pending>(ACK_PIPELINE);
        let acker = tokio::spawn(ack_in_order(
            self.consumer.clone(),
            self.input_topic.clone(),
            rx,
        ));
        loop {
            let msg = tokio::select! {
                _ = shutdown.changed() => break,
                msg = self.consumer.recv() => msg,
            };
            match msg {
                Ok(m) => {
                    let pending = self.process(&m).await;
                    if tx.send(pending).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "processing consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        drop(tx);
        let _ = acker.await;
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit of processing offsets");
        }
    }

    async fn process(&self, m: &BorrowedMessage<'_>) -> Pending {
        let mut pending = Pending {
            partition: m.partition(),
            offset: m.offset(),
            acks: Vec::new(),
        };
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            tracing::warn!(
                partition = m.partition(),
                offset = m.offset(),
                "skipping input record without a key"
            );
            return pending;
        };
        let Ok(stream_id) = Uuid::parse_str(key) else {
            tracing::warn!(
                partition = m.partition(),
                offset = m.offset(),
                "skipping input record whose key is not a stream id"
            );
            return pending;
        };
        let origin = Origin {
            stream_id,
            input_partition: m.partition(),
            input_offset: m.offset(),
            received_ms: m.timestamp().to_millis().unwrap_or_else(now_ms),
        };
        let processed_ms = now_ms();
        let outputs: Vec<(Kind, Vec<u8>)> = if is_end_marker(m) {
            vec![(
                Kind::End,
                frames::stored(Kind::End, &origin, processed_ms, None, None),
            )]
        } else {
            let entry = self.registry.find(&stream_id).await;
            let spec = entry.as_ref().map(|e| e.processor()).unwrap_or_default();
            let parsed = m
                .payload()
                .ok_or_else(|| "record has no value".to_string())
                .and_then(|p| {
                    serde_json::from_slice(p).map_err(|e| format!("record is not JSON: {e}"))
                });
            match parsed.and_then(|data| spec.apply(data)) {
                Ok(results) => results
                    .iter()
                    .map(|data| {
                        (
                            Kind::Result,
                            frames::stored(Kind::Result, &origin, processed_ms, Some(data), None),
                        )
                    })
                    .collect(),
                Err(message) => vec![(
                    Kind::Error,
                    frames::stored(Kind::Error, &origin, processed_ms, None, Some(&message)),
                )],
            }
        };
        for (kind, payload) in outputs {
            let headers = OwnedHeaders::new().insert(Header {
                key: frames::TYPE_HEADER,
                value: Some(kind.as_str()),
            });
            match self
                .results
                .enqueue_with_headers(key, &payload, processed_ms, Some(headers))
                .await
            {
                Ok(ack) => pending.acks.push(Box::pin(ack)),
                // Only non-retriable errors reach here (the producer never times out); the
                // offset is still stored so the partition is not wedged on one bad record.
                Err(e) => {
                    tracing::error!(%stream_id, offset = m.offset(), error = %e, "cannot produce result")
                }
            }
        }
        pending
    }
}

fn is_end_marker(m: &BorrowedMessage<'_>) -> bool {
    m.headers().is_some_and(|hs| {
        hs.iter().any(|h| {
            h.key == frames::CONTROL_HEADER && h.value == Some(frames::CONTROL_END.as_bytes())
        })
    })
}

/// Stores each input offset once all its results are acknowledged, in arrival order.
async fn ack_in_order(
    consumer: Arc<StreamConsumer>,
    topic: String,
    mut rx: mpsc::Receiver<Pending>,
) {
    while let Some(p) = rx.recv().await {
        for ack in p.acks {
            if let Err(e) = ack.await {
                tracing::error!(partition = p.partition, offset = p.offset, error = %e, "result not acknowledged");
            }
        }
        // Fails harmlessly when the partition moved to another instance meanwhile; that
        // instance re-processes from the last commit.
        if let Err(e) = consumer.store_offset(&topic, p.partition, p.offset) {
            tracing::debug!(partition = p.partition, offset = p.offset, error = %e, "offset not stored");
        }
    }
}
