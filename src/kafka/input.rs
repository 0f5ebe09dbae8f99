//! Where input records go: the input topic through the acknowledged producer, or memory in the
//! route tests. Records of one request are handed over ahead of their acknowledgements, a
//! bounded number at once ([`append`]), which is also the raw-Kafka baseline of
//! `streamctl bench`.

use std::collections::VecDeque;

use futures_util::future::BoxFuture;

use super::records::{InputKind, Keyed};
use super::{now_ms, Receipt, SendError, TopicProducer};
use crate::telemetry::TraceContext;

/// Where input records are written.
pub trait InputLog: Send + Sync + 'static {
    /// The input partition of a stream.
    fn partition_for(&self, key: &str) -> i32;
    /// Hands one record to the producer (waiting while its queue is full) and returns the
    /// future of its acknowledgement.
    fn enqueue<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
        timestamp_ms: i64,
        meta: Meta<'a>,
    ) -> BoxFuture<'a, Result<Receipt, SendError>>;
}

/// What an input record carries beside its key and value: its kind, and the idempotency key
/// and trace context it was sent with.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub kind: InputKind,
    pub keyed: Option<&'a Keyed>,
    pub trace: Option<&'a TraceContext>,
}

impl Meta<'_> {
    /// A record of `kind`, without key or trace.
    pub fn plain(kind: InputKind) -> Self {
        Self {
            kind,
            keyed: None,
            trace: None,
        }
    }
}

impl InputLog for TopicProducer {
    fn partition_for(&self, key: &str) -> i32 {
        TopicProducer::partition_for(self, key)
    }

    fn enqueue<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
        timestamp_ms: i64,
        meta: Meta<'a>,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let headers = meta.kind.headers(meta.keyed, meta.trace);
            let ack = self
                .enqueue_with_headers(key, payload, timestamp_ms, headers)
                .await?;
            Ok(Box::pin(ack) as Receipt)
        })
    }
}

/// A batch that was not wholly stored: the first failure, and how many leading records were
/// acknowledged before it.
#[derive(Debug, thiserror::Error)]
#[error("{error} ({acknowledged} leading records stored)")]
pub struct Unstored {
    pub error: SendError,
    pub acknowledged: usize,
}

/// Records of one request handed to the producer and not yet acknowledged, at most: enough
/// to keep a batch to about one broker round trip, few enough that a request's memory does
/// not grow with its record count.
const IN_FLIGHT: usize = 512;

/// Appends data records under `key` in order and returns their offsets once all are
/// acknowledged: the raw path `streamctl bench --baseline` measures.
pub async fn append_all<R: AsRef<[u8]>>(
    log: &dyn InputLog,
    key: &str,
    records: impl IntoIterator<Item = R>,
) -> Result<Vec<i64>, Unstored> {
    append(log, key, records, now_ms(), Meta::plain(InputKind::Data)).await
}

/// Appends records with `meta` under `key` in order, stamped `ts`, and returns their offsets
/// once all are acknowledged; with `meta.keyed` the records are the parts of a request sent
/// with an idempotency key (each gets its part number). Records are handed over ahead of
/// their acks, up to `IN_FLIGHT` at once.
pub async fn append<R: AsRef<[u8]>>(
    log: &dyn InputLog,
    key: &str,
    records: impl IntoIterator<Item = R>,
    ts: i64,
    meta: Meta<'_>,
) -> Result<Vec<i64>, Unstored> {
    let records = records.into_iter();
    let mut offsets = Vec::with_capacity(records.size_hint().0);
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
    let unstored = |error, offsets: &Vec<i64>| Unstored {
        error,
        acknowledged: offsets.len(),
    };
    let mut part = meta.keyed.cloned();
    for (i, r) in records.enumerate() {
        if let Some(p) = &mut part {
            p.part = i as u32;
        }
        if in_flight.len() == IN_FLIGHT {
            let ack: Receipt = in_flight.pop_front().expect("a full window");
            offsets.push(ack.await.map_err(|e| unstored(e, &offsets))?);
        }
        let meta = Meta {
            keyed: part.as_ref(),
            ..meta
        };
        match log.enqueue(key, r.as_ref(), ts, meta).await {
            Ok(ack) => in_flight.push_back(ack),
            Err(e) => {
                // Whatever was handed over before still counts if it is acknowledged.
                for ack in in_flight {
                    match ack.await {
                        Ok(offset) => offsets.push(offset),
                        Err(_) => break,
                    }
                }
                return Err(unstored(e, &offsets));
            }
        }
    }
    for ack in in_flight {
        offsets.push(ack.await.map_err(|e| unstored(e, &offsets))?);
    }
    Ok(offsets)
}

/// Input records kept in memory, numbered from 0: for route tests, which need no broker.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryLog {
    pub records: std::sync::Mutex<Vec<(String, bytes::Bytes, InputKind)>>,
}

#[cfg(test)]
impl InputLog for MemoryLog {
    fn partition_for(&self, _: &str) -> i32 {
        0
    }

    fn enqueue<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
        _: i64,
        meta: Meta<'a>,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        let mut records = self.records.lock().expect("memory log lock");
        records.push((
            key.to_string(),
            bytes::Bytes::copy_from_slice(payload),
            meta.kind,
        ));
        let offset = records.len() as i64 - 1;
        Box::pin(async move { Ok(Box::pin(async move { Ok(offset) }) as Receipt) })
    }
}
