//! What Streamgate keeps in its topics, in one place: the key and headers of every record, the
//! typed records of the input topic (data, control markers, one-hop confirmations), of the
//! results topic and of the registry, and the values committed as processing progress. Each
//! has one encode and one decode here, so a record's format is read in one file, and any
//! Kafka tool reading the topics sees exactly this.
//!
//! - Every stream record is keyed by the stream id (its text form): the key alone decides the
//!   partition, in the input and the results topic alike (see `topics.rs`).
//! - Input records: a data record's value is the JSON the client sent. A control record
//!   carries `streamgate-control: end | close-window` (the payload of a window close is the
//!   window's start in ms). A record accepted for one hop carries `streamgate-at-ingest: 1`;
//!   its confirmation is a record keyed `streamgate-confirmed` with that header and the JSON
//!   array of confirmed offsets as payload.
//! - Results records: the value is the frame a subscriber receives, without its `cursor` (the
//!   broker assigns the offset); `streamgate-type: result | error | end` names the frame, so
//!   routing needs no JSON parsing.
//! - A record sent with an idempotency key carries `streamgate-idempotency`: the key, the
//!   attempt (one per request the daemon took), the record's part of its request and how many
//!   parts it has, and the digest of the request's body ([`Keyed`]).
//! - A traced record (see `telemetry`) carries W3C `traceparent` (and `tracestate`) headers:
//!   on an input record the send's span, on a results record the processing's span.
//! - Registry records: the value is a [`StreamRecord`] as JSON; a tombstone (no value) means
//!   compaction removed the stream.
//! - Key index records (`streamgate.keys`): keyed `<stream>/<key>`, in the stream's partition,
//!   the value a [`KeyRecord`] as JSON: which parts of the request are stored, by which
//!   attempt first.
//! - Progress: `<group>.progress` commits `next * 2 + held` per input partition (see
//!   `processing::progress`).

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::telemetry::{TraceContext, TRACEPARENT, TRACESTATE};
use crate::wire::{Kind, ProcessorSpec, StreamState};

/// Header of an input record that carries a control message instead of data.
pub const CONTROL_HEADER: &str = "streamgate-control";
/// Header of a results record naming its frame type.
pub const TYPE_HEADER: &str = "streamgate-type";
/// Header of an input record whose results its accepting instance writes (one hop).
pub const AT_INGEST_HEADER: &str = "streamgate-at-ingest";
/// Header of a one-hop confirmation record.
pub const CONFIRMED_HEADER: &str = "streamgate-confirmed";
/// Key of confirmation records: they are about a partition, not a stream.
pub const CONFIRM_KEY: &str = "streamgate-confirmed";
/// Header of an input record sent with an idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "streamgate-idempotency";

/// The stream a record belongs to, from its key; `None` for a record that is not a stream's.
pub fn stream_of(key: Option<&[u8]>) -> Option<Uuid> {
    key.and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| Uuid::parse_str(k).ok())
}

/// The value of header `name` on `m`, if it has one.
fn header<'a, M: Message>(m: &'a M, name: &str) -> Option<&'a [u8]>
where
    M::Headers: 'a,
{
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

fn has_header<M: Message>(m: &M, name: &str) -> bool {
    m.headers()
        .is_some_and(|hs| hs.iter().any(|h| h.key == name))
}

fn one_header(key: &str, value: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key,
        value: Some(value),
    })
}

/// `headers` with a trace context's headers added.
fn with_trace(headers: Option<OwnedHeaders>, trace: Option<&TraceContext>) -> Option<OwnedHeaders> {
    let Some(trace) = trace else {
        return headers;
    };
    let headers = headers.unwrap_or_default().insert(Header {
        key: TRACEPARENT,
        value: Some(&trace.parent),
    });
    Some(match &trace.state {
        Some(state) => headers.insert(Header {
            key: TRACESTATE,
            value: Some(state),
        }),
        None => headers,
    })
}

/// The trace context a record was stored with, if any.
pub fn trace_of<M: Message>(m: &M) -> Option<TraceContext> {
    let text = |name| header(m, name).and_then(|v| std::str::from_utf8(v).ok());
    TraceContext::from_headers(text(TRACEPARENT), text(TRACESTATE))
}

// ---------------------------------------------------------------------------------------
// The input topic
// ---------------------------------------------------------------------------------------

/// A control record in the input topic, written behind a stream's data records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The stream ended: processing forwards it as an `end` frame.
    End,
    /// A window of the stream that started at this time (ms) is due and closes here.
    CloseWindow(i64),
}

impl Control {
    fn header_value(self) -> &'static str {
        match self {
            Control::End => "end",
            Control::CloseWindow(_) => "close-window",
        }
    }

    /// The record's payload.
    pub fn payload(self) -> Vec<u8> {
        match self {
            Control::End => b"null".to_vec(),
            Control::CloseWindow(start) => start.to_string().into_bytes(),
        }
    }

    fn decode(header: &[u8], payload: Option<&[u8]>) -> Option<Control> {
        match header {
            b"end" => Some(Control::End),
            b"close-window" => payload
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| p.parse::<i64>().ok())
                .map(Control::CloseWindow),
            _ => None,
        }
    }
}

/// What an input record is, as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputKind {
    /// A stream's data, processed by the processing group.
    Data,
    /// A stream's data whose results the accepting instance writes (one hop).
    AtIngest,
    /// A control marker (end, window close).
    Control(Control),
}

impl InputKind {
    /// The headers an input record of this kind is written with, `keyed` for a record sent
    /// with an idempotency key, `trace` for a traced one.
    pub fn headers(
        self,
        keyed: Option<&Keyed>,
        trace: Option<&TraceContext>,
    ) -> Option<OwnedHeaders> {
        let headers = match self {
            InputKind::Data => None,
            InputKind::AtIngest => Some(one_header(AT_INGEST_HEADER, "1")),
            InputKind::Control(c) => Some(one_header(CONTROL_HEADER, c.header_value())),
        };
        let headers = with_trace(headers, trace);
        let Some(keyed) = keyed else {
            return headers;
        };
        let value = serde_json::to_string(keyed).expect("keyed headers serialize");
        Some(headers.unwrap_or_default().insert(Header {
            key: IDEMPOTENCY_HEADER,
            value: Some(&value),
        }))
    }
}

impl Keyed {
    /// The size of its header on a record.
    pub fn header_len(&self) -> usize {
        IDEMPOTENCY_HEADER.len() + serde_json::to_string(self).map_or(0, |s| s.len())
    }
}

/// What a record sent with an idempotency key says of itself: its part of the request the
/// key names, and the attempt that stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyed {
    pub key: String,
    /// One per request the daemon stored (a retry is another attempt).
    pub attempt: Uuid,
    /// This record's place in its request (0-based), and the request's record count.
    pub part: u32,
    pub parts: u32,
    /// The request body's SHA-256, its first 16 bytes in hex: a key reused with another body
    /// is refused.
    pub digest: String,
}

/// Where a stream's input record is and what it is, as processing sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub stream: Uuid,
    pub partition: i32,
    pub offset: i64,
    /// When the daemon accepted it (the record's timestamp).
    pub received_ms: i64,
    pub control: Option<Control>,
    /// Sent with an idempotency key.
    pub keyed: Option<Keyed>,
    /// Traced: the span it goes on from (the send's, as stored; once processing has begun,
    /// the processing's, which its frames name).
    pub trace: Option<TraceContext>,
}

/// A record of the input topic, read back.
#[derive(Debug, PartialEq)]
pub enum InputRecord<'a> {
    /// A stream's record: data (`control` is `None`) or a control marker.
    Stream {
        input: Input,
        payload: Option<&'a [u8]>,
        /// Accepted for one hop: its accepting instance writes its results.
        at_ingest: bool,
    },
    /// A one-hop confirmation: the offsets of its partition whose results were written.
    Confirmation(Vec<i64>),
    /// A record without a stream id as its key (not written by Streamgate).
    Foreign,
}

/// Decodes an input record; `now_ms` stands in for a record without a timestamp.
pub fn decode_input<M: Message>(m: &M, now_ms: i64) -> InputRecord<'_> {
    if has_header(m, CONFIRMED_HEADER) {
        let offsets = m
            .payload()
            .and_then(|p| serde_json::from_slice(p).ok())
            .unwrap_or_default();
        return InputRecord::Confirmation(offsets);
    }
    let Some(stream) = stream_of(m.key()) else {
        return InputRecord::Foreign;
    };
    let control = header(m, CONTROL_HEADER).and_then(|h| Control::decode(h, m.payload()));
    let keyed = header(m, IDEMPOTENCY_HEADER).and_then(|h| serde_json::from_slice(h).ok());
    InputRecord::Stream {
        input: Input {
            stream,
            partition: m.partition(),
            offset: m.offset(),
            received_ms: m.timestamp().to_millis().unwrap_or(now_ms),
            control,
            keyed,
            trace: trace_of(m),
        },
        payload: m.payload(),
        at_ingest: control.is_none() && has_header(m, AT_INGEST_HEADER),
    }
}

/// A confirmation record of one-hop results: its key, payload and headers.
pub fn confirmation(offsets: &[i64]) -> (&'static str, Vec<u8>, OwnedHeaders) {
    let payload = serde_json::to_vec(offsets).expect("offsets serialize");
    (CONFIRM_KEY, payload, one_header(CONFIRMED_HEADER, "1"))
}

// ---------------------------------------------------------------------------------------
// The results topic
// ---------------------------------------------------------------------------------------

/// The headers of a results record of this kind, `trace` for a traced record's result.
pub fn result_headers(kind: Kind, trace: Option<&TraceContext>) -> OwnedHeaders {
    with_trace(Some(one_header(TYPE_HEADER, kind.as_str())), trace).unwrap_or_default()
}

/// A results record read back: a delivered frame.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    pub stream: Uuid,
    pub kind: Kind,
    /// The record's offset: the frame's `cursor`.
    pub cursor: i64,
    /// The frame as delivered: the stored frame with `cursor` first.
    pub frame: String,
    /// A traced record's result: the span that produced it.
    pub trace: Option<TraceContext>,
}

/// Decodes a results record; `None` for a record that is not one of ours.
pub fn decode_result<M: Message>(m: &M) -> Option<StoredResult> {
    let stream = stream_of(m.key())?;
    let kind = match header(m, TYPE_HEADER) {
        Some(b"error") => Kind::Error,
        Some(b"end") => Kind::End,
        _ => Kind::Result,
    };
    let frame = m.payload().and_then(|p| with_cursor(m.offset(), p))?;
    Some(StoredResult {
        stream,
        kind,
        cursor: m.offset(),
        frame,
        trace: trace_of(m),
    })
}

/// A delivered frame from its stored results record: the record with `cursor` first. Built
/// once per result and shared by every subscriber of the stream.
fn with_cursor(cursor: i64, stored: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(stored).ok()?;
    let rest = text.strip_prefix('{')?;
    Some(format!("{{\"cursor\":{cursor},{rest}"))
}

// ---------------------------------------------------------------------------------------
// The registry topic
// ---------------------------------------------------------------------------------------

/// A stream as stored in the registry topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Name of the API key that started the stream.
    pub owner: String,
    pub processor: ProcessorSpec,
    pub state: StreamState,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// Where the end marker landed in the stream's input partition: records before it are
    /// the stream's, records after it are refused. Written once the marker is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_offset: Option<i64>,
    /// The JSON Schema its records are checked against (`schema`), resolved at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// The JSON Schema its results are checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_schema: Option<serde_json::Value>,
}

impl StreamRecord {
    /// The record's value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("registry records serialize")
    }
}

/// A registry record read back.
#[derive(Debug, PartialEq)]
pub enum RegistryRecord {
    Stream(Uuid, StreamRecord),
    /// Compaction removed the stream.
    Tombstone(Uuid),
    /// A value that is not a stream record, and why.
    Unreadable(Uuid, String),
    /// A record without a stream id as its key.
    Foreign,
}

pub fn decode_registry<M: Message>(m: &M) -> RegistryRecord {
    let Some(id) = stream_of(m.key()) else {
        return RegistryRecord::Foreign;
    };
    match m.payload() {
        None => RegistryRecord::Tombstone(id),
        Some(payload) => match serde_json::from_slice(payload) {
            Ok(record) => RegistryRecord::Stream(id, record),
            Err(e) => RegistryRecord::Unreadable(id, e.to_string()),
        },
    }
}

// ---------------------------------------------------------------------------------------
// The idempotency key index
// ---------------------------------------------------------------------------------------

/// A key's request as the index keeps it: which of its parts are stored, each by the first
/// attempt that stored it. Only ever grows, so two copies merge by union.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub digest: String,
    pub parts: u32,
    /// When its first part was accepted (ms): the window runs from here.
    pub ts: i64,
    /// Where part 0 was first stored: the offset a single-record request is answered with
    /// when it is replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset0: Option<i64>,
    /// Ranges of parts `[start, end)` and the attempt that stored them first, in order.
    pub stored: Vec<(u32, u32, Uuid)>,
}

impl KeyRecord {
    /// The Kafka key of `stream`'s record for `key`.
    pub fn kafka_key(stream: &Uuid, key: &str) -> String {
        format!("{stream}/{key}")
    }

    /// The record's value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("key records serialize")
    }

    /// The attempt that stored `part` first, if any did.
    pub fn first_attempt(&self, part: u32) -> Option<Uuid> {
        self.stored
            .iter()
            .find(|(start, end, _)| (*start..*end).contains(&part))
            .map(|(_, _, attempt)| *attempt)
    }

    /// Notes `part` as stored by `attempt` (if no attempt stored it before); `true` if it
    /// was new.
    pub fn store(&mut self, part: u32, attempt: Uuid) -> bool {
        if part >= self.parts || self.first_attempt(part).is_some() {
            return false;
        }
        let at = self.stored.partition_point(|(start, _, _)| *start < part);
        let joins_before = at > 0 && {
            let (_, end, a) = self.stored[at - 1];
            end == part && a == attempt
        };
        if joins_before {
            self.stored[at - 1].1 = part + 1;
        } else {
            self.stored.insert(at, (part, part + 1, attempt));
        }
        // Merge with the next range when they now touch.
        let i = if joins_before { at - 1 } else { at };
        if i + 1 < self.stored.len() {
            let (_, end, a) = self.stored[i];
            let (next_start, next_end, b) = self.stored[i + 1];
            if end == next_start && a == b {
                self.stored[i].1 = next_end;
                self.stored.remove(i + 1);
            }
        }
        true
    }

    /// Whether every part is stored.
    pub fn complete(&self) -> bool {
        self.stored.iter().map(|(s, e, _)| e - s).sum::<u32>() == self.parts
    }

    /// This record and `other` (another copy of the same key's): every part each says is
    /// stored, the earlier first.
    pub fn merge(&mut self, other: &KeyRecord) {
        for (start, end, attempt) in &other.stored {
            for part in *start..*end {
                self.store(part, *attempt);
            }
        }
        self.ts = self.ts.min(other.ts);
        self.offset0 = self.offset0.or(other.offset0);
    }
}

/// A key index record read back: the stream, the key and what it says (`None`: a
/// tombstone).
pub fn decode_key_record<M: Message>(m: &M) -> Option<(Uuid, String, Option<KeyRecord>)> {
    let key = std::str::from_utf8(m.key()?).ok()?;
    let (stream, key) = key.split_once('/')?;
    let stream = Uuid::parse_str(stream).ok()?;
    let record = match m.payload() {
        None => None,
        Some(p) => Some(serde_json::from_slice(p).ok()?),
    };
    Some((stream, key.to_string(), record))
}

// ---------------------------------------------------------------------------------------
// Processing progress
// ---------------------------------------------------------------------------------------

/// The group whose commits hold the processing group's progress.
pub fn progress_group(group: &str) -> String {
    format!("{group}.progress")
}

/// One committed progress value: the next unprocessed offset and whether an instance holds
/// the partition (commit metadata would carry the flag, but tansu 0.6.0 does not return it).
pub fn encode_progress(next: i64, held: bool) -> i64 {
    next * 2 + i64::from(held)
}

/// A committed progress value read back: the next unprocessed offset, and whether it is held.
pub fn decode_progress(value: i64) -> (i64, bool) {
    (value / 2, value % 2 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;

    fn message(
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        offset: i64,
    ) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            Some(key.as_bytes().to_vec()),
            "t".into(),
            Timestamp::CreateTime(5),
            2,
            offset,
            headers,
        )
    }

    #[test]
    fn input_records_round_trip() {
        let id = Uuid::from_u128(9);
        for kind in [
            InputKind::Data,
            InputKind::AtIngest,
            InputKind::Control(Control::End),
            InputKind::Control(Control::CloseWindow(1_700_000_000_000)),
        ] {
            let payload = match kind {
                InputKind::Control(c) => c.payload(),
                _ => b"{\"a\":1}".to_vec(),
            };
            let m = message(&id.to_string(), &payload, kind.headers(None, None), 7);
            let InputRecord::Stream {
                input,
                payload: read,
                at_ingest,
            } = decode_input(&m, 0)
            else {
                panic!("a stream record")
            };
            assert_eq!(
                (
                    input.stream,
                    input.partition,
                    input.offset,
                    input.received_ms
                ),
                (id, 2, 7, 5)
            );
            assert_eq!(read, Some(&payload[..]));
            assert_eq!(at_ingest, kind == InputKind::AtIngest);
            let control = match kind {
                InputKind::Control(c) => Some(c),
                _ => None,
            };
            assert_eq!(input.control, control);
        }
        let (key, payload, headers) = confirmation(&[3, 4]);
        let m = message(key, &payload, Some(headers), 8);
        assert_eq!(decode_input(&m, 0), InputRecord::Confirmation(vec![3, 4]));
        assert_eq!(
            decode_input(&message("x", b"1", None, 0), 0),
            InputRecord::Foreign
        );
        let bad = message(
            &id.to_string(),
            b"x",
            Some(one_header(CONTROL_HEADER, "close-window")),
            0,
        );
        assert!(matches!(
            decode_input(&bad, 0),
            InputRecord::Stream {
                input: Input { control: None, .. },
                ..
            }
        ));
    }

    #[test]
    fn results_records_get_their_cursor() {
        let id = Uuid::from_u128(3);
        let m = message(
            &id.to_string(),
            b"{\"type\":\"end\"}",
            Some(result_headers(Kind::End, None)),
            42,
        );
        let r = decode_result(&m).unwrap();
        assert_eq!((r.stream, r.kind, r.cursor), (id, Kind::End, 42));
        assert_eq!(r.frame, "{\"cursor\":42,\"type\":\"end\"}");
        assert!(decode_result(&message("x", b"{}", None, 0)).is_none());
    }

    #[test]
    fn registry_records_round_trip() {
        let id = Uuid::from_u128(4);
        let record = StreamRecord {
            owner: "alice".into(),
            processor: ProcessorSpec::Uppercase,
            state: StreamState::Open,
            created_ms: 1,
            ended_ms: None,
            end_offset: None,
            schema: Some(serde_json::json!({"type": "object"})),
            result_schema: None,
        };
        let m = message(&id.to_string(), &record.encode(), None, 0);
        assert_eq!(decode_registry(&m), RegistryRecord::Stream(id, record));
        assert!(matches!(
            decode_registry(&message(&id.to_string(), b"{", None, 0)),
            RegistryRecord::Unreadable(..)
        ));
    }

    #[test]
    fn a_key_record_keeps_each_parts_first_attempt_in_few_ranges() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut r = KeyRecord {
            digest: "d".into(),
            parts: 6,
            ts: 10,
            offset0: None,
            stored: Vec::new(),
        };
        for part in [0, 1, 2] {
            assert!(r.store(part, a));
        }
        assert!(!r.store(1, b), "a part is stored once");
        assert!(!r.store(6, b), "past the request");
        for part in [5, 3, 4] {
            r.store(part, b);
        }
        assert_eq!(r.stored, vec![(0, 3, a), (3, 6, b)]);
        assert!(r.complete());
        assert_eq!((r.first_attempt(2), r.first_attempt(4)), (Some(a), Some(b)));
        let mut other = KeyRecord {
            stored: vec![(0, 1, b)],
            ts: 5,
            ..r.clone()
        };
        other.merge(&r);
        assert_eq!(other.stored, vec![(0, 1, b), (1, 3, a), (3, 6, b)]);
        assert_eq!(other.ts, 5);
        let m = message(&KeyRecord::kafka_key(&a, "k/1"), &r.encode(), None, 0);
        assert_eq!(decode_key_record(&m), Some((a, "k/1".into(), Some(r))));
    }

    #[test]
    fn a_keyed_or_traced_record_says_so() {
        let id = Uuid::from_u128(9);
        let keyed = Keyed {
            key: "order-7".into(),
            attempt: Uuid::from_u128(3),
            part: 1,
            parts: 2,
            digest: "ab".into(),
        };
        let trace = TraceContext {
            parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            state: Some("vendor=1".into()),
        };
        let m = message(
            &id.to_string(),
            b"1",
            InputKind::AtIngest.headers(Some(&keyed), Some(&trace)),
            4,
        );
        let InputRecord::Stream {
            input, at_ingest, ..
        } = decode_input(&m, 0)
        else {
            panic!("a stream record")
        };
        assert_eq!(input.keyed, Some(keyed));
        assert_eq!(input.trace, Some(trace.clone()));
        assert!(at_ingest);
        let m = message(
            &id.to_string(),
            b"{}",
            Some(result_headers(Kind::Error, Some(&trace))),
            5,
        );
        let r = decode_result(&m).unwrap();
        assert_eq!((r.kind, r.trace), (Kind::Error, Some(trace)));
    }

    #[test]
    fn a_committed_value_carries_the_offset_and_the_hold() {
        for next in [0, 1, 7, 1 << 40] {
            assert_eq!(decode_progress(encode_progress(next, true)), (next, true));
            assert_eq!(decode_progress(encode_progress(next, false)), (next, false));
        }
    }
}
