//! Everything written into the input topic: request bodies and WebSocket frames become
//! records (validated as JSON, a batch refused whole if one line is bad), records are
//! appended under their stream's key, control markers (end, window close) are written behind
//! them, and what was acknowledged is counted here and nowhere else.
//!
//! A record counts as accepted only once the broker acknowledged it; until then the client
//! is answered nothing, and a failure says how many leading records of a batch were stored.
//! Before that, the [`backlog`] gate refuses what the broker might drop before processing.

pub mod backlog;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rdkafka::message::{Header, OwnedHeaders};
use serde::de::IgnoredAny;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::ApiError;
use crate::kafka::{now_ms, SendError, TopicProducer};
use crate::metrics::Metrics;
use crate::processing::at_ingest::{self, AtIngest};
use crate::processing::record::Input;
use crate::registry::{Registry, StreamEntry};
use crate::wire::{Accepted, Control, CONTROL_HEADER};

pub use backlog::Backlog;

/// The broker's acknowledgement of one record: its offset.
pub type Ack = BoxFuture<'static, Result<i64, SendError>>;

/// What an input record is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tag {
    /// A stream's data, processed by the processing group.
    Data,
    /// A stream's data whose results the accepting instance writes (`processing::at_ingest`).
    AtIngest,
    /// A control marker (end, window close).
    Control(Control),
}

/// Where input records go: the input topic, or memory in the route tests.
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
        tag: Tag,
    ) -> BoxFuture<'a, Result<Ack, SendError>>;
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
        tag: Tag,
    ) -> BoxFuture<'a, Result<Ack, SendError>> {
        Box::pin(async move {
            let headers = match tag {
                Tag::Data => None,
                Tag::AtIngest => Some(at_ingest::tag()),
                Tag::Control(c) => Some(OwnedHeaders::new().insert(Header {
                    key: CONTROL_HEADER,
                    value: Some(c.encode().0),
                })),
            };
            let ack = self
                .enqueue_with_headers(key, payload, timestamp_ms, headers)
                .await?;
            Ok(Box::pin(ack) as Ack)
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

/// The writer of the input topic, shared by the HTTP and WebSocket send paths and by the
/// processing stage (window close markers).
#[derive(Clone)]
pub struct Ingest {
    log: Arc<dyn InputLog>,
    metrics: Arc<Metrics>,
    limits: RecordLimits,
    backlog: Arc<Backlog>,
    /// Tells, after a record is stored, whether its stream was ended before it (see
    /// `before_end`).
    registry: Arc<Registry>,
    /// Processes per-record streams' records where they are accepted (one hop); `None`
    /// leaves every record to the processing group.
    at_ingest: Option<Arc<AtIngest>>,
    turns: Arc<Turns>,
}

/// One-hop results of a stream are written, on this instance, in the order its records were
/// handed to the producer (their input order): a send takes a turn when it hands its records
/// over, and writes their results once the previous turn's are handed over too. Otherwise
/// two sends in flight at once could have their results written in the order their
/// acknowledgements happened to be processed.
#[derive(Default)]
struct Turns {
    /// Per stream, the last turn taken: its number, and what ends it.
    last: std::sync::Mutex<std::collections::HashMap<Uuid, (u64, oneshot::Receiver<()>)>>,
    taken: std::sync::atomic::AtomicU64,
}

/// A send's turn to write one-hop results.
struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    /// Dropped with the turn, once its results are handed over: the next turn goes.
    _done: oneshot::Sender<()>,
    stream: Uuid,
    number: u64,
    turns: Arc<Turns>,
}

impl Turns {
    fn take(self: &Arc<Self>, stream: Uuid) -> Turn {
        let (done, next) = oneshot::channel();
        let number = self.taken.fetch_add(1, Ordering::Relaxed);
        let previous = self
            .last
            .lock()
            .expect("turns lock")
            .insert(stream, (number, next))
            .map(|(_, previous)| previous);
        Turn {
            previous,
            _done: done,
            stream,
            number,
            turns: self.clone(),
        }
    }
}

impl Turn {
    /// Waits for the previous turn's results to be handed over.
    async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = previous.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut last = self.turns.last.lock().expect("turns lock");
        if last
            .get(&self.stream)
            .is_some_and(|(n, _)| *n == self.number)
        {
            last.remove(&self.stream); // no later turn: forget the stream
        }
    }
}

/// How many records a request may hold, and how large one may be.
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    /// `limits.max_records_per_request`.
    pub per_request: usize,
    /// The largest record the broker accepts: the producer's `message.max.bytes` less room
    /// for the record's key, headers and batch framing.
    pub record_bytes: usize,
    /// Longest a stored record waits to learn whether its stream was ended before it
    /// (`limits.send_timeout_ms`).
    pub order_timeout: Duration,
}

/// Room left in `message.max.bytes` for what a record carries beside its value.
pub const RECORD_FRAMING: usize = 1024;

impl Ingest {
    pub fn new(
        log: Arc<dyn InputLog>,
        metrics: Arc<Metrics>,
        limits: RecordLimits,
        backlog: Arc<Backlog>,
        registry: Arc<Registry>,
        at_ingest: Option<Arc<AtIngest>>,
    ) -> Self {
        Self {
            log,
            metrics,
            limits,
            backlog,
            registry,
            at_ingest,
            turns: Arc::default(),
        }
    }

    /// The one-hop writer, if this stream's records are processed where they are accepted.
    fn one_hop(&self, entry: &StreamEntry) -> Option<&Arc<AtIngest>> {
        self.at_ingest
            .as_ref()
            .filter(|a| a.applies(&entry.processor()))
    }

    /// How many of a request's `offsets` (stored, in order) came before the stream's end
    /// marker in its partition: all of them, unless the stream was ended meanwhile, on any
    /// instance. The stream's end is where its marker landed, and an instance ending a
    /// stream writes "ended" to the registry *before* the marker. So once this instance's
    /// registry has caught up to a point after the records were stored, a stream not shown
    /// as ended has no marker before them; one shown as ended is compared by offset. Kafka's
    /// order decides, not timing.
    async fn before_end(&self, entry: &StreamEntry, offsets: &[i64]) -> Result<usize, ApiError> {
        let cannot_tell = |e: crate::registry::RegistryError| ApiError::BrokerUnavailable {
            message: format!(
                "stored, but whether the stream was ended before it cannot be told ({e}); \
                 sending it again may duplicate it"
            ),
            acknowledged: 0,
        };
        let timeout = self.limits.order_timeout;
        self.registry.fence(timeout).await.map_err(cannot_tell)?;
        if entry.is_open() {
            return Ok(offsets.len());
        }
        let end = self
            .registry
            .end_offset(entry, timeout)
            .await
            .map_err(cannot_tell)?;
        Ok(offsets.iter().take_while(|o| **o < end).count())
    }

    /// Appends a request body's records in order; answers once all are acknowledged (and,
    /// for one hop, their results too, or handed to the processing group).
    pub async fn append(
        &self,
        entry: &Arc<StreamEntry>,
        body: &Bytes,
        content_type: Option<&str>,
    ) -> Result<Accepted, ApiError> {
        refuse_if_ended(entry)?;
        let records = records(body, content_type, self.limits)?;
        let key = entry.id.to_string();
        let partition = self.log.partition_for(&key);
        self.backlog.admit(partition, records.count, body.len())?;
        let started = Instant::now();
        let one_hop = self.one_hop(entry);
        let tag = if one_hop.is_some() {
            Tag::AtIngest
        } else {
            Tag::Data
        };
        let received_ms = now_ms();
        let turn = one_hop.map(|_| self.turns.take(entry.id));
        let result = append_tagged(&*self.log, &key, records.iter(), received_ms, tag).await;
        let acknowledged = match &result {
            Ok(offsets) => offsets.len(),
            Err(e) => e.acknowledged,
        };
        if let Ok(offsets) = &result {
            for (offset, record) in offsets.iter().zip(records.iter()) {
                self.backlog.stored(partition, *offset, record.len());
            }
        }
        let offsets = match result {
            Ok(offsets) => offsets,
            Err(e) => {
                self.count(entry, acknowledged);
                return Err(unavailable(&e.error, e.acknowledged));
            }
        };
        let before = self.before_end(entry, &offsets).await?;
        if let (Some(at_ingest), Some(mut turn)) = (one_hop, turn) {
            turn.wait().await;
            let mut written = Vec::with_capacity(before);
            for (offset, record) in offsets.iter().take(before).zip(records.iter()) {
                let input = Input {
                    stream: entry.id,
                    partition,
                    offset: *offset,
                    received_ms,
                    control: None,
                };
                written.push(at_ingest.write(entry, input, record).await);
            }
            drop(turn);
            futures_util::future::join_all(written).await;
        }
        self.count(entry, before);
        if before < offsets.len() {
            return Err(ApiError::StreamEnded {
                id: entry.id.to_string(),
                acknowledged: Some(before),
            });
        }
        self.metrics
            .send_ack_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Accepted {
            stream_id: entry.id,
            records: offsets.len(),
            partition: self.log.partition_for(&key),
            offsets,
        })
    }

    /// Hands one record (a WebSocket frame) to the producer and returns the future of its
    /// answer, so a session can pipeline records and answer them in order.
    pub async fn enqueue(
        &self,
        entry: &Arc<StreamEntry>,
        frame: Bytes,
    ) -> BoxFuture<'static, Result<i64, ApiError>> {
        let limit = self.limits.record_bytes;
        let record = match refuse_if_ended(entry).and_then(|()| record(&frame, limit)) {
            Ok(record) => record,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let key = entry.id.to_string();
        let partition = self.log.partition_for(&key);
        if let Err(e) = self.backlog.admit(partition, 1, record.len()) {
            return Box::pin(async move { Err(e) });
        }
        let one_hop = self.one_hop(entry).cloned();
        let (tag, turn) = match one_hop {
            Some(_) => (Tag::AtIngest, Some(self.turns.take(entry.id))),
            None => (Tag::Data, None),
        };
        let received_ms = now_ms();
        match self.log.enqueue(&key, &record, received_ms, tag).await {
            Ok(ack) => {
                let (this, entry, size) = (self.clone(), entry.clone(), record.len());
                Box::pin(async move {
                    let offset = ack.await.map_err(|e| unavailable(&e, 0))?;
                    this.backlog.stored(partition, offset, size);
                    if this.before_end(&entry, &[offset]).await? == 0 {
                        return Err(ApiError::StreamEnded {
                            id: entry.id.to_string(),
                            acknowledged: None,
                        });
                    }
                    if let (Some(at_ingest), Some(mut turn)) = (one_hop, turn) {
                        turn.wait().await;
                        let input = Input {
                            stream: entry.id,
                            partition,
                            offset,
                            received_ms,
                            control: None,
                        };
                        let written = at_ingest.write(&entry, input, &record).await;
                        drop(turn);
                        written.await;
                    }
                    this.count(&entry, 1);
                    Ok(offset)
                })
            }
            Err(e) => Box::pin(async move { Err(unavailable(&e, 0)) }),
        }
    }

    /// Writes a control marker behind the stream's records; returns the future of its ack.
    pub async fn mark(&self, stream: Uuid, control: Control) -> Result<Ack, SendError> {
        let payload = control.encode().1;
        self.log
            .enqueue(
                &stream.to_string(),
                &payload,
                now_ms(),
                Tag::Control(control),
            )
            .await
    }

    /// Ends a stream: "ended" into the registry, then the end marker into the input
    /// partition, then where the marker landed into the registry (the order `before_end`
    /// relies on). Subscribers then receive every result and an `end` frame.
    pub async fn end(&self, entry: &StreamEntry) -> Result<(), ApiError> {
        if entry.record().end_offset.is_some() {
            return Ok(()); // ended before, marker and all
        }
        let not_stored = |e: crate::registry::RegistryError| ApiError::BrokerUnavailable {
            message: e.to_string(),
            acknowledged: 0,
        };
        self.registry.end(entry).await.map_err(not_stored)?;
        let ack = self
            .mark(entry.id, Control::End)
            .await
            .map_err(|e| unavailable(&e, 0))?;
        let offset = ack.await.map_err(|e| unavailable(&e, 0))?;
        self.registry
            .ended_at(entry, offset)
            .await
            .map_err(not_stored)
    }

    /// Counts acknowledged records: the stream's counter, its activity, the daemon's metric.
    fn count(&self, entry: &StreamEntry, acknowledged: usize) {
        if acknowledged == 0 {
            return;
        }
        entry
            .stats
            .records_in
            .fetch_add(acknowledged as u64, Ordering::Relaxed);
        entry.stats.touch();
        self.metrics.records_in.inc_by(acknowledged as u64);
    }
}

/// Records of one request handed to the producer and not yet acknowledged, at most: enough
/// to keep a batch to about one broker round trip, few enough that a request's memory does
/// not grow with its record count.
const IN_FLIGHT: usize = 512;

/// Appends records under `key` in order and returns their offsets once all are acknowledged.
/// Records are handed over ahead of their acks, up to `IN_FLIGHT` at once. Also the baseline
/// of `streamctl bench`.
pub async fn append_all<R: AsRef<[u8]>>(
    log: &dyn InputLog,
    key: &str,
    records: impl IntoIterator<Item = R>,
) -> Result<Vec<i64>, Unstored> {
    append_tagged(log, key, records, now_ms(), Tag::Data).await
}

/// `append_all` with the records' timestamp and tag.
async fn append_tagged<R: AsRef<[u8]>>(
    log: &dyn InputLog,
    key: &str,
    records: impl IntoIterator<Item = R>,
    ts: i64,
    tag: Tag,
) -> Result<Vec<i64>, Unstored> {
    let records = records.into_iter();
    let mut offsets = Vec::with_capacity(records.size_hint().0);
    let mut in_flight = std::collections::VecDeque::with_capacity(IN_FLIGHT);
    let unstored = |error, offsets: &Vec<i64>| Unstored {
        error,
        acknowledged: offsets.len(),
    };
    for r in records {
        if in_flight.len() == IN_FLIGHT {
            let ack: Ack = in_flight.pop_front().expect("a full window");
            offsets.push(ack.await.map_err(|e| unstored(e, &offsets))?);
        }
        match log.enqueue(key, r.as_ref(), ts, tag).await {
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

fn refuse_if_ended(entry: &StreamEntry) -> Result<(), ApiError> {
    if entry.is_open() {
        Ok(())
    } else {
        Err(ApiError::StreamEnded {
            id: entry.id.to_string(),
            acknowledged: None,
        })
    }
}

/// A record the broker did not take, as the client sees it: 503 with how many leading records
/// of the request were stored.
pub fn unavailable(e: &SendError, acknowledged: usize) -> ApiError {
    ApiError::BrokerUnavailable {
        message: e.to_string(),
        acknowledged,
    }
}

/// How a send body is framed, from its Content-Type.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Single,
    Lines,
}

fn framing(content_type: Option<&str>) -> Result<Framing, ApiError> {
    let Some(ct) = content_type else {
        return Ok(Framing::Single);
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Framing::Single),
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
            Ok(Framing::Lines)
        }
        _ => Err(ApiError::UnsupportedMediaType(ct.to_string())),
    }
}

/// JSON is UTF-8 (RFC 8259): a body that is not is refused at the door, not stored to fail
/// in processing later (JSON parsers skim over bytes inside strings they do not keep).
fn utf8(body: &[u8]) -> Result<(), ApiError> {
    std::str::from_utf8(body).map(|_| ()).map_err(|e| {
        ApiError::InvalidInput(format!(
            "body is not UTF-8 (invalid byte at offset {}); JSON must be UTF-8",
            e.valid_up_to()
        ))
    })
}

/// A validated send body: its records, read off the body as they are needed (a record costs
/// no allocation of its own, however many a request holds).
#[derive(Debug)]
pub struct Records {
    body: Bytes,
    framing: Framing,
    pub count: usize,
}

impl Records {
    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let lines: Box<dyn Iterator<Item = &[u8]> + Send> = match self.framing {
            Framing::Single => Box::new(std::iter::once(trim(&self.body))),
            Framing::Lines => Box::new(self.body.split(|b| *b == b'\n').map(trim)),
        };
        lines.filter(|r| !r.is_empty())
    }
}

/// Validates a send body: UTF-8, JSON (every line of NDJSON; a batch with one bad line is
/// refused whole), within the record limits.
pub fn records(
    body: &Bytes,
    content_type: Option<&str>,
    limits: RecordLimits,
) -> Result<Records, ApiError> {
    let framing = framing(content_type)?;
    utf8(body)?;
    let max = limits.per_request;
    let count = match framing {
        Framing::Single => {
            record(body, limits.record_bytes)?;
            1
        }
        Framing::Lines => {
            let mut count = 0;
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = trim(line);
                if line.is_empty() {
                    continue;
                }
                if count == max {
                    return Err(ApiError::TooManyRecords { limit: max });
                }
                fits(line, limits.record_bytes)?;
                serde_json::from_slice::<IgnoredAny>(line).map_err(|e| {
                    ApiError::InvalidInput(format!(
                        "line {}: not valid JSON: {e}; no record of this batch was stored",
                        i + 1
                    ))
                })?;
                count += 1;
            }
            if count == 0 {
                return Err(ApiError::InvalidInput("body holds no records".into()));
            }
            count
        }
    };
    Ok(Records {
        body: body.clone(),
        framing,
        count,
    })
}

/// A record the broker would refuse is refused here, naming the limit (not a 503 later).
fn fits(record: &[u8], limit: usize) -> Result<(), ApiError> {
    if record.len() > limit {
        return Err(ApiError::RecordTooLarge {
            size: record.len(),
            limit,
        });
    }
    Ok(())
}

/// One JSON value (a single-record body, or a WebSocket frame) as a record.
pub fn record(body: &Bytes, limit: usize) -> Result<Bytes, ApiError> {
    utf8(body)?;
    fits(body.trim_ascii(), limit)?;
    serde_json::from_slice::<IgnoredAny>(body)
        .map_err(|e| ApiError::InvalidInput(format!("body is not valid JSON: {e}")))?;
    Ok(body.slice_ref(trim(body)))
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Input records kept in memory, numbered from 0: for route tests, which need no broker.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryLog {
    pub records: std::sync::Mutex<Vec<(String, Bytes, Option<Control>)>>,
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
        tag: Tag,
    ) -> BoxFuture<'a, Result<Ack, SendError>> {
        let control = match tag {
            Tag::Control(c) => Some(c),
            Tag::Data | Tag::AtIngest => None,
        };
        let mut records = self.records.lock().expect("memory log lock");
        records.push((key.to_string(), Bytes::copy_from_slice(payload), control));
        let offset = records.len() as i64 - 1;
        Box::pin(async move { Ok(Box::pin(async move { Ok(offset) }) as Ack) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(per_request: usize) -> RecordLimits {
        RecordLimits {
            per_request,
            record_bytes: 1_000,
            order_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_record_larger_than_the_broker_takes_is_refused_naming_the_limit() {
        let big = Bytes::from(format!("\"{}\"", "x".repeat(1_000)));
        let err = records(&big, None, lim(10)).unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::RecordTooLarge {
                    size: 1_002,
                    limit: 1_000
                }
            ),
            "{err:?}"
        );
        let lines = Bytes::from(format!("1\n{}\n", String::from_utf8_lossy(&big)));
        assert!(records(&lines, Some("application/x-ndjson"), lim(10)).is_err());
    }

    #[test]
    fn ndjson_names_the_bad_line() {
        let body = Bytes::from_static(b"{\"a\":1}\n\n2\n{oops}\n");
        let err = records(&body, Some("application/x-ndjson"), lim(10)).unwrap_err();
        assert!(err.to_string().starts_with("line 4:"), "{err}");
    }

    #[test]
    fn ndjson_skips_blank_lines_and_crlf() {
        let body = Bytes::from_static(b"1\r\n\r\n\"two\"\r\n[3]");
        let recs = records(&body, Some("application/x-ndjson; charset=utf-8"), lim(10)).unwrap();
        assert_eq!(recs.count, 3);
        assert_eq!(
            recs.iter().collect::<Vec<_>>(),
            vec![&b"1"[..], &b"\"two\""[..], &b"[3]"[..]]
        );
    }

    #[test]
    fn json_that_is_not_utf8_is_refused_at_the_door() {
        let body = Bytes::from_static(b"{\"s\":\"\xff\xfe\"}");
        let err = records(&body, None, lim(10)).unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");
        let lines = Bytes::from_static(b"1\n\"\xc3\x28\"\n");
        assert!(records(&lines, Some("application/x-ndjson"), lim(10)).is_err());
    }

    #[test]
    fn content_types() {
        assert!(records(&Bytes::from("{}"), None, lim(10)).is_ok());
        assert!(matches!(
            records(&Bytes::from("{}"), Some("text/plain"), lim(10)),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            records(&Bytes::from("{"), Some("application/json"), lim(10)),
            Err(ApiError::InvalidInput(_))
        ));
        assert!(matches!(
            records(
                &Bytes::from("1\n2\n3\n"),
                Some("application/x-ndjson"),
                lim(2)
            ),
            Err(ApiError::TooManyRecords { limit: 2 })
        ));
    }
}
