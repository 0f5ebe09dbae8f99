//! Everything a client writes into the input topic, as one pipeline for every transport: a
//! send's records are validated ([`body`]), admitted by the [`backlog`] gate (which refuses
//! what the broker might drop before processing), appended under their stream's key, checked
//! against the stream's end, and counted. An HTTP body ([`Ingest::append`]) and a WebSocket
//! frame ([`Ingest::enqueue`]) differ only in how their records reach the producer: a body is
//! answered once all its records are acknowledged; a frame is handed over at once and its
//! answer awaited apart, so a session can pipeline frames and answer them in order.
//!
//! A record counts as accepted only once the broker acknowledged it; until then the client
//! is answered nothing, and a failure says how many leading records of a batch were stored.
//! End markers are written here too, behind the stream's records.

pub mod backlog;
mod body;
mod keys;
mod turns;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::idempotency::KeyIndex;
use crate::kafka::records::{Control, Input, InputKind, Keyed};
use crate::kafka::{self, now_ms, InputLog, Meta, SendError};
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryError, StreamEntry};
use crate::schema::MAX_VIOLATIONS;
use crate::telemetry::{Handle, Span, SpanKind, Telemetry, TraceContext};
use crate::wire::{Accepted, ErrorCode, ProcessorSpec, Violation};

pub use backlog::Backlog;
pub use body::{record, records, RecordLimits, RECORD_FRAMING};
pub use keys::check_key;
use keys::{Check, Pending, Recent};
use turns::{Turn, Turns};

/// Why a send was not stored, or not wholly.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// Not JSON, not UTF-8, or no record at all; `line` names the NDJSON line at fault.
    #[error("{message}")]
    Invalid {
        message: String,
        line: Option<usize>,
    },
    #[error("unsupported content type `{0}`: use application/json or application/x-ndjson{hint}", hint = form_hint(.0))]
    UnsupportedMediaType(String),
    #[error("more than {limit} records in one request (limits.max_records_per_request); split it")]
    TooManyRecords { limit: usize },
    #[error(
        "a record of {size} bytes is larger than the broker accepts: at most {limit} bytes \
         (kafka message.max.bytes less 1 KiB for its key and headers)"
    )]
    RecordTooLarge { size: usize, limit: usize },
    /// `acknowledged`: leading records of the request stored before the stream's end (they
    /// are the stream's and will be delivered); the rest came after it and are dropped.
    #[error("stream {id} has ended; start a new stream")]
    StreamEnded {
        id: Uuid,
        acknowledged: Option<usize>,
    },
    #[error(
        "partition {partition} has {records} records ({bytes} bytes) stored and not yet \
         processed (limits.max_unprocessed_records, limits.max_unprocessed_bytes); retry in {} ms",
        retry_after.as_millis()
    )]
    BacklogFull {
        partition: i32,
        records: u64,
        bytes: u64,
        retry_after: Duration,
    },
    /// The broker did not acknowledge in time. `acknowledged` leading records of the request
    /// were stored; the rest were not, so a client may retry exactly those.
    #[error("broker unavailable: {message}")]
    Unstored {
        message: String,
        acknowledged: usize,
    },
    #[error(
        "idempotency key `{key}` was sent before with another body; nothing was stored (use a \
         new key for a new request)"
    )]
    KeyReused { key: String },
    #[error(
        "idempotency key `{key}`: its first request is still being stored; retry in a moment \
         for its answer"
    )]
    KeyInFlight { key: String },
    /// Records that do not match the stream's schema: nothing of the request was stored.
    #[error("{}", schema_message(.violations, *.invalid))]
    SchemaViolation {
        /// The first violations, at most `schema::MAX_VIOLATIONS`.
        violations: Vec<Violation>,
        /// How many records of the request do not match.
        invalid: usize,
    },
}

/// "3 records do not match the stream's schema; line 7 /n: minimum: ..., ..."
fn schema_message(violations: &[Violation], invalid: usize) -> String {
    let first = violations.first().map_or_else(String::new, |v| {
        let line = v.line.map_or_else(String::new, |l| format!("line {l}, "));
        let at = if v.pointer.is_empty() {
            "the record"
        } else {
            &v.pointer
        };
        format!(": {line}{at}: {} ({})", v.message, v.keyword)
    });
    let records = if invalid == 1 {
        "record does"
    } else {
        "records do"
    };
    format!(
        "{invalid} {records} not match the stream's schema{first}; nothing of this request was \
         stored"
    )
}

impl Refused {
    fn invalid(message: impl Into<String>) -> Self {
        Refused::Invalid {
            message: message.into(),
            line: None,
        }
    }

    fn unstored(e: &dyn std::fmt::Display, acknowledged: usize) -> Self {
        Refused::Unstored {
            message: e.to_string(),
            acknowledged,
        }
    }
}

/// Every record matches its stream's schema (when it has one), or the request is refused
/// whole, naming the first violations with their records' lines.
fn check_schema<'r>(
    entry: &StreamEntry,
    records: impl Iterator<Item = (Option<usize>, &'r [u8])>,
) -> Result<(), Refused> {
    let checker = match entry.checkers() {
        Ok(checkers) => checkers.input.as_ref(),
        Err(e) => {
            return Err(Refused::invalid(format!(
                "the stream's schema cannot be checked on this instance ({e}); nothing stored"
            )))
        }
    };
    let Some(checker) = checker else {
        return Ok(());
    };
    let (mut violations, mut invalid) = (Vec::new(), 0);
    for (line, record) in records {
        // Every record was checked to be JSON already.
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(record) else {
            continue;
        };
        let found = checker.violations(&value, line, MAX_VIOLATIONS - violations.len());
        if !found.is_empty() || (violations.len() == MAX_VIOLATIONS && !checker.matches(&value)) {
            invalid += 1;
        }
        violations.extend(found);
    }
    match invalid {
        0 => Ok(()),
        _ => Err(Refused::SchemaViolation {
            violations,
            invalid,
        }),
    }
}

/// `curl -d` sends a form content type by default; say how to fix that.
impl Refused {
    /// The error code a client is answered with, whatever the transport.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refused::Invalid { .. } => ErrorCode::InvalidInput,
            Refused::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Refused::TooManyRecords { .. } => ErrorCode::TooManyRecords,
            Refused::RecordTooLarge { .. } => ErrorCode::RecordTooLarge,
            Refused::StreamEnded { .. } => ErrorCode::StreamEnded,
            Refused::BacklogFull { .. } => ErrorCode::BacklogFull,
            Refused::Unstored { .. } => ErrorCode::BrokerUnavailable,
            Refused::KeyReused { .. } => ErrorCode::IdempotencyKeyReused,
            Refused::KeyInFlight { .. } => ErrorCode::IdempotencyKeyInFlight,
            Refused::SchemaViolation { .. } => ErrorCode::SchemaViolation,
        }
    }
}

/// Notes on a send's span its stream and, for a refusal, its error code: never its message,
/// which can quote an idempotency key or a record.
fn note<T>(span: &Span, stream: Uuid, answer: &Result<T, Refused>) {
    span.set("stream.id", stream.to_string());
    if let Err(e) = answer {
        span.fail(e.code().as_str().to_string());
    }
}

fn form_hint(content_type: &str) -> &'static str {
    if content_type.starts_with("application/x-www-form-urlencoded") {
        " (curl -d sends a form by default: add -H 'Content-Type: application/json')"
    } else {
        ""
    }
}

/// Writes a stored record's results where it was accepted (one hop). Implemented by
/// `processing::AtIngest`, so ingest needs nothing of processing.
pub trait OneHop: Send + Sync + 'static {
    /// Whether a stream with this processor is processed where its records are accepted.
    fn applies(&self, spec: &ProcessorSpec) -> bool;
    /// Evaluates a stored record (known to come before its stream's end) and hands its
    /// results to the producer; the returned future resolves once they are acknowledged
    /// (`true`), or once they cannot be (`false`: the processing group writes them).
    fn write<'a>(
        &'a self,
        entry: &'a Arc<StreamEntry>,
        input: Input,
        payload: &'a [u8],
    ) -> BoxFuture<'a, BoxFuture<'static, bool>>;
}

/// The writer of the input topic, shared by every send path.
#[derive(Clone)]
pub struct Ingest {
    log: Arc<dyn InputLog>,
    metrics: Arc<Metrics>,
    limits: RecordLimits,
    backlog: Arc<Backlog>,
    /// Tells, after a record is stored, whether its stream was ended before it (see
    /// `before_end`).
    registry: Arc<Registry>,
    /// Processes per-record streams' records where they are accepted; `None` leaves every
    /// record to the processing group.
    one_hop: Option<Arc<dyn OneHop>>,
    turns: Arc<Turns>,
    /// What is known of idempotency keys, everywhere (followed) and here (recent).
    keys: Arc<KeyIndex>,
    recent: Arc<Recent>,
    /// Traces sends that come with a sampled context (or a sampled share of the others).
    telemetry: Telemetry,
}

/// What a record sent with an idempotency key was answered, and whether it was the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    pub offset: i64,
    pub replayed: bool,
}

/// How a send goes on after its checks.
enum Begun {
    Store(Box<Sending>),
    /// Its idempotency key was sent before with the same body: the earlier answer.
    Replay(Accepted),
}

/// A send between the checks before anything is written and those after the broker answered.
struct Sending {
    entry: Arc<StreamEntry>,
    key: String,
    partition: i32,
    received_ms: i64,
    kind: InputKind,
    /// With one hop: the writer, and this send's turn to write results.
    one_hop: Option<(Arc<dyn OneHop>, Turn)>,
    /// Sent with an idempotency key: what its records say, and its place among this
    /// instance's recent keyed requests.
    keyed: Option<(Keyed, Pending)>,
    /// What each record carries beside its value, as the backlog counts it.
    header_bytes: usize,
    /// Traced: the send's span, as its records store it.
    trace: Option<TraceContext>,
}

impl Ingest {
    pub fn new(
        log: Arc<dyn InputLog>,
        metrics: Arc<Metrics>,
        limits: RecordLimits,
        backlog: Arc<Backlog>,
        registry: Arc<Registry>,
        one_hop: Option<Arc<dyn OneHop>>,
        keys: Arc<KeyIndex>,
    ) -> Self {
        Self {
            log,
            metrics,
            limits,
            backlog,
            registry,
            one_hop,
            turns: Arc::default(),
            keys,
            recent: Arc::default(),
            telemetry: Telemetry::off(),
        }
    }

    /// Traces sends with `telemetry`.
    pub fn traced(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The steps before anything is written: the stream takes records, a repeat of a keyed
    /// request is answered from what is known, its partition has room for `count` records of
    /// `bytes`, and a one-hop send takes its turn. A keyed send (`idempotency`: its key and
    /// its body) is never one hop: its dedupe belongs to the partition's owner.
    fn begin(
        &self,
        entry: &Arc<StreamEntry>,
        count: usize,
        bytes: usize,
        idempotency: Option<(&str, &[u8])>,
    ) -> Result<Begun, Refused> {
        if !entry.is_open() {
            return Err(Refused::StreamEnded {
                id: entry.id,
                acknowledged: None,
            });
        }
        let key = entry.id.to_string();
        let partition = self.log.partition_for(&key);
        let keyed = match idempotency {
            Some((k, body)) => {
                let digest = keys::digest(body);
                match self.recent.check(
                    &self.keys,
                    self.keys.window_ms(),
                    entry.id,
                    partition,
                    k,
                    digest,
                    count,
                )? {
                    Check::Replay(accepted) => {
                        self.metrics.ingest.replayed.inc();
                        return Ok(Begun::Replay(accepted));
                    }
                    Check::Store(keyed, pending) => Some((keyed, pending)),
                }
            }
            None => None,
        };
        // A keyed record carries its key in a header: the broker keeps that too.
        let header_bytes = keyed.as_ref().map_or(0, |(k, _)| k.header_len());
        self.backlog
            .admit(partition, count, bytes + count * header_bytes)?;
        let one_hop = self
            .one_hop
            .as_ref()
            .filter(|h| keyed.is_none() && h.applies(&entry.processor()))
            .map(|h| (h.clone(), self.turns.take(entry.id)));
        Ok(Begun::Store(Box::new(Sending {
            entry: entry.clone(),
            key,
            partition,
            received_ms: now_ms(),
            kind: match one_hop {
                Some(_) => InputKind::AtIngest,
                None => InputKind::Data,
            },
            one_hop,
            keyed,
            header_bytes,
            trace: None,
        })))
    }

    /// The steps once the broker stored a send's records at `offsets`: the backlog counts
    /// them, those after the stream's end are set apart, one-hop results are written, and
    /// what was accepted is counted. Returns how many leading records are the stream's.
    async fn settle<'r, I>(
        &self,
        mut send: Sending,
        offsets: &[i64],
        records: impl Fn() -> I,
        span: Option<&Handle>,
    ) -> Result<usize, Refused>
    where
        I: Iterator<Item = &'r [u8]>,
    {
        for (offset, record) in offsets.iter().zip(records()) {
            self.backlog
                .stored(send.partition, *offset, record.len() + send.header_bytes);
        }
        let fence = span.map(|s| s.child("end fence", SpanKind::Internal));
        let before = self.before_end(&send.entry, offsets).await?;
        drop(fence);
        if let Some((one_hop, mut turn)) = send.one_hop {
            turn.wait().await;
            let mut written = Vec::with_capacity(before);
            for (offset, record) in offsets.iter().take(before).zip(records()) {
                let input = Input {
                    stream: send.entry.id,
                    partition: send.partition,
                    offset: *offset,
                    received_ms: send.received_ms,
                    control: None,
                    keyed: None,
                    trace: send.trace.clone(),
                };
                written.push(one_hop.write(&send.entry, input, record).await);
            }
            drop(turn);
            futures_util::future::join_all(written).await;
        }
        self.count(&send.entry, before);
        if let Some((_, pending)) = send.keyed.take() {
            if before == offsets.len() {
                pending.answered(&Accepted {
                    stream_id: send.entry.id,
                    records: offsets.len(),
                    partition: send.partition,
                    offsets: offsets.to_vec(),
                    replayed: false,
                });
            }
        }
        Ok(before)
    }

    /// How many of a request's `offsets` (stored, in order) came before the stream's end
    /// marker in its partition: all of them, unless the stream was ended meanwhile, on any
    /// instance. The stream's end is where its marker landed, and an instance ending a
    /// stream writes "ended" to the registry *before* the marker. So once this instance's
    /// registry has caught up to a point after the records were stored, a stream not shown
    /// as ended has no marker before them; one shown as ended is compared by offset. Kafka's
    /// order decides, not timing.
    async fn before_end(&self, entry: &StreamEntry, offsets: &[i64]) -> Result<usize, Refused> {
        let cannot_tell = |e: RegistryError| {
            Refused::unstored(
                &format!(
                    "stored, but whether the stream was ended before it cannot be told ({e}); \
                     sending it again may duplicate it"
                ),
                0,
            )
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
    /// for one hop, their results too, or handed to the processing group). `trace`: the
    /// context the request came with.
    pub async fn append(
        &self,
        entry: &Arc<StreamEntry>,
        body: &Bytes,
        content_type: Option<&str>,
        idempotency_key: Option<&str>,
        trace: Option<&TraceContext>,
    ) -> Result<Accepted, Refused> {
        let span = self.telemetry.send(trace);
        let answer = self
            .append_traced(entry, body, content_type, idempotency_key, span.as_ref())
            .await;
        if let Some(span) = &span {
            note(span, entry.id, &answer);
        }
        answer
    }

    async fn append_traced(
        &self,
        entry: &Arc<StreamEntry>,
        body: &Bytes,
        content_type: Option<&str>,
        idempotency_key: Option<&str>,
        span: Option<&Span>,
    ) -> Result<Accepted, Refused> {
        let idempotency = idempotency_key.map(check_key).transpose()?;
        let records = records(body, content_type, self.limits)?;
        check_schema(entry, records.numbered())?;
        let mut send = match self.begin(
            entry,
            records.count,
            body.len(),
            idempotency.map(|k| (k, &body[..])),
        )? {
            Begun::Store(send) => *send,
            Begun::Replay(accepted) => return Ok(accepted),
        };
        send.trace = span.map(|s| s.context());
        let started = Instant::now();
        let ack_span = span.map(|s| s.child("broker ack", SpanKind::Producer));
        let stored = kafka::append(
            &*self.log,
            &send.key,
            records.iter(),
            send.received_ms,
            Meta {
                kind: send.kind,
                keyed: send.keyed.as_ref().map(|(k, _)| k),
                trace: send.trace.as_ref(),
            },
        )
        .await;
        drop(ack_span);
        let offsets = match stored {
            Ok(offsets) => offsets,
            Err(e) => {
                self.count(entry, e.acknowledged);
                return Err(Refused::unstored(&e.error, e.acknowledged));
            }
        };
        let partition = send.partition;
        if let Some(span) = span {
            span.stored(partition, &offsets);
        }
        let before = self
            .settle(send, &offsets, || records.iter(), span.map(|s| &**s))
            .await?;
        if before < offsets.len() {
            return Err(Refused::StreamEnded {
                id: entry.id,
                acknowledged: Some(before),
            });
        }
        self.metrics
            .ingest
            .send_ack_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Accepted {
            stream_id: entry.id,
            records: offsets.len(),
            partition,
            offsets,
            replayed: false,
        })
    }

    /// Hands one record (a WebSocket frame) to the producer and returns the future of its
    /// answer, so a session can pipeline records and answer them in order. `trace`: the
    /// context the frame came with.
    pub async fn enqueue(
        &self,
        entry: &Arc<StreamEntry>,
        frame: Bytes,
        idempotency_key: Option<&str>,
        trace: Option<&TraceContext>,
    ) -> BoxFuture<'static, Result<Acked, Refused>> {
        let span = self.telemetry.send(trace);
        let answer = self
            .enqueue_traced(entry, frame, idempotency_key, span.as_ref())
            .await;
        match span {
            None => answer,
            Some(span) => {
                let id = entry.id;
                Box::pin(async move {
                    let answer = answer.await;
                    note(&span, id, &answer);
                    answer
                })
            }
        }
    }

    async fn enqueue_traced(
        &self,
        entry: &Arc<StreamEntry>,
        frame: Bytes,
        idempotency_key: Option<&str>,
        span: Option<&Span>,
    ) -> BoxFuture<'static, Result<Acked, Refused>> {
        let ready = |r| -> BoxFuture<'static, Result<Acked, Refused>> {
            Box::pin(futures_util::future::ready(r))
        };
        let begun = idempotency_key.map(check_key).transpose().and_then(|key| {
            let r = record(&frame, self.limits.record_bytes)?;
            check_schema(entry, std::iter::once((None, &r[..])))?;
            let begun = self.begin(entry, 1, r.len(), key.map(|k| (k, &r[..])))?;
            Ok((r, begun))
        });
        let (record, send) = match begun {
            Ok((_, Begun::Replay(accepted))) => {
                return ready(Ok(Acked {
                    offset: accepted.offsets.first().copied().unwrap_or(-1),
                    replayed: true,
                }))
            }
            Ok((r, Begun::Store(send))) => (r, *send),
            Err(e) => return ready(Err(e)),
        };
        let mut send = send;
        send.trace = span.map(|s| s.context());
        let refused = |e| ready(Err(e));
        let meta = Meta {
            kind: send.kind,
            keyed: send.keyed.as_ref().map(|(k, _)| k),
            trace: send.trace.as_ref(),
        };
        let ack_span = span.map(|s| s.child("broker ack", SpanKind::Producer));
        let ack = match self
            .log
            .enqueue(&send.key, &record, send.received_ms, meta)
            .await
        {
            Ok(ack) => ack,
            Err(e) => return refused(Refused::unstored(&e, 0)),
        };
        let this = self.clone();
        let span = span.map(Span::handle);
        Box::pin(async move {
            let offset = ack.await.map_err(|e| Refused::unstored(&e, 0));
            drop(ack_span);
            let offset = offset?;
            if let Some(span) = &span {
                span.stored(send.partition, &[offset]);
            }
            let id = send.entry.id;
            if this
                .settle(
                    send,
                    &[offset],
                    || std::iter::once(&record[..]),
                    span.as_ref(),
                )
                .await?
                == 0
            {
                return Err(Refused::StreamEnded {
                    id,
                    acknowledged: None,
                });
            }
            Ok(Acked {
                offset,
                replayed: false,
            })
        })
    }

    /// Ends a stream: "ended" into the registry, then the end marker into the input
    /// partition, then where the marker landed into the registry (the order `before_end`
    /// relies on). Subscribers then receive every result and an `end` frame.
    pub async fn end(&self, entry: &StreamEntry) -> Result<(), Refused> {
        if entry.record().end_offset.is_some() {
            return Ok(()); // ended before, marker and all
        }
        let not_stored = |e: RegistryError| Refused::unstored(&e, 0);
        self.registry.end(entry).await.map_err(not_stored)?;
        let offset = self
            .mark(entry.id, Control::End)
            .await
            .map_err(|e| Refused::unstored(&e, 0))?;
        self.registry
            .ended_at(entry, offset)
            .await
            .map_err(not_stored)
    }

    /// Writes a control marker behind the stream's records; answers with its offset.
    async fn mark(&self, stream: Uuid, control: Control) -> Result<i64, SendError> {
        let payload = control.payload();
        let ack = self
            .log
            .enqueue(
                &stream.to_string(),
                &payload,
                now_ms(),
                Meta::plain(InputKind::Control(control)),
            )
            .await?;
        ack.await
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
        self.metrics.ingest.records_in.inc_by(acknowledged as u64);
    }
}
