//! Every shape that crosses the wire, as one set of serde types used by the daemon (which
//! serializes them) and by `streamctl` (which deserializes the same types): the frames a
//! subscriber receives, the close codes and reasons of a results socket, every JSON body of
//! the HTTP API, and the records Streamgate keeps in its topics (which any Kafka tool reads).
//!
//! Nothing here does I/O; behaviour lives with the modules that own it (for example the
//! processor spec is parsed and run in `processing::processor`).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Frames on a results socket
// ---------------------------------------------------------------------------------------

/// One frame on a results WebSocket: what the stream produced (`result`, `error`, `end`),
/// what a slow `on_lag=skip` reader missed (`gap`), and the answer to each record the client
/// sent on the socket (`ack`, `nack`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Frame {
    /// A processed record's result (a record may have zero or many).
    Result(Outcome),
    /// Processing failed for one input record; `error` says why.
    Error(Outcome),
    /// The stream ended: nothing follows.
    End(Outcome),
    /// Results skipped because the subscriber read too slowly (made by the router, never
    /// stored).
    Gap(Gap),
    /// The `seq`-th record sent on this socket (1-based) is stored at `offset`.
    Ack(Ack),
    /// The `seq`-th record sent on this socket was not stored.
    Nack(Nack),
}

/// What the processing stage produced for one input record (a `result`, `error` or `end`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Outcome {
    /// The frame's offset in the results topic: resume after it with `from=cursor+1`. Absent
    /// in the stored record (the broker assigns it); every delivered frame has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<i64>,
    pub stream_id: Uuid,
    /// Where the input record is in the input topic: a re-processed record (after a crash)
    /// carries the same coordinates, so readers can drop duplicates.
    pub input_partition: i32,
    pub input_offset: i64,
    /// When the daemon accepted the input record (ms since the Unix epoch).
    pub received_ms: i64,
    /// When it was processed.
    pub processed_ms: i64,
    /// The result (for `result` frames); `null` is a result too.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<Value>,
    /// Why processing failed (for `error` frames); the code is `processing_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

/// A non-negative whole number, also when written `3600.0` (JSON Schema's `integer` allows
/// it, and so do JavaScript clients).
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = Option::<serde_json::Number>::deserialize(d)?;
    n.map(|n| {
        n.as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number")))
    })
    .transpose()
}

/// A required [`whole_number`].
fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    whole_number(d)?.ok_or_else(|| serde::de::Error::custom("null is not a whole number"))
}

/// A field that is present is `Some`, even when it is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Code of the error object in an `error` frame.
pub const PROCESSING_FAILED: &str = "processing_failed";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Gap {
    pub stream_id: Uuid,
    /// The first skipped result: `from=<from_cursor>` replays what was skipped.
    pub from_cursor: i64,
    pub skipped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    pub seq: u64,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Nack {
    pub seq: u64,
    /// The same object as an HTTP error body's `error`.
    pub error: ErrorObject,
}

impl Frame {
    /// The value of the frame's `type` field.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Result(_) => Kind::Result,
            Frame::Error(_) => Kind::Error,
            Frame::End(_) => Kind::End,
            Frame::Gap(_) => Kind::Gap,
            Frame::Ack(_) => Kind::Ack,
            Frame::Nack(_) => Kind::Nack,
        }
    }

    /// The result or error of a processed record, if this frame is one.
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Frame::Result(o) | Frame::Error(o) | Frame::End(o) => Some(o),
            _ => None,
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("frames serialize")
    }
}

/// A frame's `type`, also the header that names it on a results-topic record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Result,
    Error,
    End,
    Gap,
    Ack,
    Nack,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Result => "result",
            Kind::Error => "error",
            Kind::End => "end",
            Kind::Gap => "gap",
            Kind::Ack => "ack",
            Kind::Nack => "nack",
        }
    }

    /// The kind named by a results record's `streamgate-type` header (`result` when absent
    /// or unknown).
    pub fn from_header(v: &[u8]) -> Kind {
        match v {
            b"error" => Kind::Error,
            b"end" => Kind::End,
            _ => Kind::Result,
        }
    }
}

// ---------------------------------------------------------------------------------------
// How a results socket closes
// ---------------------------------------------------------------------------------------

/// Why the daemon closed a results (or live stats) WebSocket: each has one close code and
/// reason text, so clients match on this type, never on literal strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// 1000: the stream ended, after its `end` frame.
    Ended,
    /// 1000: the client closed and every record it sent was answered.
    Bye,
    /// 1000: with `until=now`, every result that existed when the client connected was sent.
    CaughtUp,
    /// 1001: the daemon is shutting down; reconnect (to any instance) and resume.
    ShuttingDown,
    /// 4008: the client read too slowly and was detached; resume with `from=resume`.
    Lagged { resume: i64 },
    /// 1009: the client sent a message larger than `limits.ws_max_message_bytes`.
    TooBig { limit: usize },
    /// 4401: the stream token the connection was opened with expired; open it again with a
    /// new token, resuming from the last cursor.
    TokenExpired,
    /// 1011: something failed inside the daemon (the text says what).
    Internal(String),
    /// Any other code a client may see (from a proxy, say).
    Other(u16, String),
}

/// Close code for a subscriber detached because it fell behind.
pub const CLOSE_LAGGED: u16 = 4008;
/// Close code for a connection whose stream token expired (401, as a WebSocket code).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4401;
const REASON_ENDED: &str = "stream ended";
const REASON_BYE: &str = "bye";
const REASON_CAUGHT_UP: &str = "caught up";
const REASON_SHUTTING_DOWN: &str = "server shutting down";
const REASON_LAGGED: &str = "lagged: too slow; resume with from=";
const REASON_TOO_BIG: &str = "message too big; limits.ws_max_message_bytes=";
const REASON_TOKEN_EXPIRED: &str = "token expired";

impl Close {
    pub fn code(&self) -> u16 {
        match self {
            Close::Ended | Close::Bye | Close::CaughtUp => 1000,
            Close::ShuttingDown => 1001,
            Close::Lagged { .. } => CLOSE_LAGGED,
            Close::TooBig { .. } => 1009,
            Close::TokenExpired => CLOSE_TOKEN_EXPIRED,
            Close::Internal(_) => 1011,
            Close::Other(code, _) => *code,
        }
    }

    /// The reason text, at most 123 bytes as the protocol requires.
    pub fn reason(&self) -> String {
        let text = match self {
            Close::Ended => REASON_ENDED.to_string(),
            Close::Bye => REASON_BYE.to_string(),
            Close::CaughtUp => REASON_CAUGHT_UP.to_string(),
            Close::ShuttingDown => REASON_SHUTTING_DOWN.to_string(),
            Close::Lagged { resume } => format!("{REASON_LAGGED}{resume}"),
            Close::TooBig { limit } => format!("{REASON_TOO_BIG}{limit}"),
            Close::TokenExpired => REASON_TOKEN_EXPIRED.to_string(),
            Close::Internal(why) | Close::Other(_, why) => why.clone(),
        };
        truncate(text, 123)
    }

    /// What a received close code and reason mean.
    pub fn parse(code: u16, reason: &str) -> Close {
        match (code, reason) {
            (1000, REASON_ENDED) => Close::Ended,
            (1000, REASON_BYE) => Close::Bye,
            (1000, REASON_CAUGHT_UP) => Close::CaughtUp,
            (1001, _) => Close::ShuttingDown,
            (CLOSE_LAGGED, r) => match r
                .strip_prefix(REASON_LAGGED)
                .and_then(|c| c.parse::<i64>().ok())
            {
                Some(resume) => Close::Lagged { resume },
                None => Close::Other(code, r.to_string()),
            },
            (1009, r) => match r
                .strip_prefix(REASON_TOO_BIG)
                .and_then(|l| l.parse::<usize>().ok())
            {
                Some(limit) => Close::TooBig { limit },
                None => Close::Other(code, r.to_string()),
            },
            (CLOSE_TOKEN_EXPIRED, _) => Close::TokenExpired,
            (1011, r) => Close::Internal(r.to_string()),
            (code, r) => Close::Other(code, r.to_string()),
        }
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

// ---------------------------------------------------------------------------------------
// HTTP bodies
// ---------------------------------------------------------------------------------------

/// Every error answer: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// What went wrong, in a stable `code` and a message for people. Also inside `nack` and
/// `error` frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorObject {
    pub code: String,
    pub message: String,
    /// For `broker_unavailable` on a batch: how many leading records were stored, so a client
    /// retries exactly the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<usize>,
}

/// `GET /healthz` and `GET /readyz` when all is well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub status: String,
    /// The daemon's version (on `/healthz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `201` answer of `POST /api/stream/start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Started {
    pub stream_id: Uuid,
    pub processor: ProcessorSpec,
}

/// What a stream token allows on its one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send records (`POST …/send`, and records on the results WebSocket).
    Send,
    /// Read results (`GET …/results` as WebSocket or Server-Sent Events).
    Subscribe,
}

/// Body of `POST /api/stream/{id}/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// One or both scopes.
    #[schema(min_items = 1)]
    pub scope: Vec<Scope>,
    /// Lifetime in seconds (default 3600; at most `limits.max_token_ttl_s`, 86 400 by
    /// default: more is refused with 400).
    #[serde(
        default,
        deserialize_with = "whole_number",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 86_400)]
    pub ttl_s: Option<u64>,
}

/// `201` answer of `POST /api/stream/{id}/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenIssued {
    /// Present it as `Authorization: Bearer <token>`, `?access_token=<token>` or the
    /// WebSocket subprotocol `token.<token>`.
    pub token: String,
    pub stream_id: Uuid,
    pub scope: Vec<Scope>,
    /// Unix time (seconds) at which it stops working, open connections included.
    pub expires_at: u64,
}

/// `202` answer of `POST /api/stream/{id}/send`: every record is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub stream_id: Uuid,
    pub records: usize,
    /// The stream's partition of the input topic, and each record's offset in it.
    pub partition: i32,
    pub offsets: Vec<i64>,
}

/// Whether a stream takes records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Open,
    Ended,
}

impl StreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Open => "open",
            StreamState::Ended => "ended",
        }
    }
}

/// One stream as `GET /api/stream/{id}` (and each row of `GET /api/streams`) shows it. The
/// counters are this instance's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamView {
    pub stream_id: Uuid,
    /// Name of the key that started it.
    pub owner: String,
    pub processor: ProcessorSpec,
    pub state: StreamState,
    pub created_ms: i64,
    pub ended_ms: Option<i64>,
    pub records_in: u64,
    pub records_out: u64,
    pub subscribers: u64,
    pub last_activity_ms: i64,
}

/// `GET /api/streams`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamList {
    pub streams: Vec<StreamView>,
}

/// `GET /api/stats` and each push of `GET /api/stats/live`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub now_ms: i64,
    pub version: String,
    pub uptime_s: u64,
    pub broker: BrokerView,
    pub totals: Totals,
    /// Open streams the caller may see (all of them for an admin key).
    pub streams: Vec<StatsRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BrokerView {
    /// Where the broker is; for the embedded one its loopback address, so Kafka tools (kcat)
    /// can read the topics.
    pub bootstrap: String,
    /// The embedded broker: data in memory only, 5 MiB per partition kept.
    #[serde(default)]
    pub embedded: bool,
    pub reachable: bool,
}

impl BrokerView {
    /// The address, marked `(embedded)` for the embedded broker: what dashboards show.
    pub fn name(&self) -> String {
        match self.embedded {
            true => format!("{} (embedded)", self.bootstrap),
            false => self.bootstrap.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    pub streams: u64,
    pub subscribers: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub latency_ms: Percentiles,
}

/// End-to-end latency in milliseconds over the last 10–20 s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
}

/// A stream in the stats: its view plus the frames queued for its subscribers here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsRow {
    #[serde(flatten)]
    pub stream: StreamView,
    pub backlog: u64,
}

// ---------------------------------------------------------------------------------------
// Processors
// ---------------------------------------------------------------------------------------

/// The processor of a stream, as given at start and stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProcessorSpec {
    /// A jq filter: transform, select (no output: no result), or several results per record.
    Jq { filter: String },
    /// The result is the record's data unchanged (plus the frame's metadata).
    #[default]
    Identity,
    /// Every JSON string in the record upper-cased, as the original service did.
    Uppercase,
    /// Tumbling-window aggregates of a number: one result per window (and group).
    Window {
        /// Window length in milliseconds (at most a day).
        #[serde(deserialize_with = "whole")]
        #[schema(minimum = 1, maximum = 86_400_000)]
        length_ms: u64,
        /// jq expression giving the number to aggregate, e.g. `.temperature`.
        value: String,
        /// jq expression giving the group, e.g. `.room` (one aggregate per group).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_by: Option<String>,
        /// How long after a window ends it closes, for records still on their way.
        #[serde(default = "default_grace_ms", deserialize_with = "whole")]
        #[schema(maximum = 86_400_000)]
        grace_ms: u64,
    },
}

fn default_grace_ms() -> u64 {
    2_000
}

impl ProcessorSpec {
    /// The processor's name: `identity`, `uppercase`, `jq` or `window`.
    pub fn name(&self) -> &'static str {
        match self {
            ProcessorSpec::Jq { .. } => "jq",
            ProcessorSpec::Identity => "identity",
            ProcessorSpec::Uppercase => "uppercase",
            ProcessorSpec::Window { .. } => "window",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Records in Streamgate's topics
// ---------------------------------------------------------------------------------------

/// Kafka header on input records that carry a control message instead of data.
pub const CONTROL_HEADER: &str = "streamgate-control";
/// Kafka header on results records naming the frame type, so routing needs no JSON parsing.
pub const TYPE_HEADER: &str = "streamgate-type";

/// A control record in the input topic, written behind a stream's data records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The stream ended: the processing stage forwards it as an `end` frame.
    End,
    /// A window of the stream that started at this time (ms) is due and closes here.
    CloseWindow(i64),
}

impl Control {
    /// The `streamgate-control` header value and the record's payload.
    pub fn encode(self) -> (&'static str, Vec<u8>) {
        match self {
            Control::End => ("end", b"null".to_vec()),
            Control::CloseWindow(start) => ("close-window", start.to_string().into_bytes()),
        }
    }

    /// The control message of an input record with this header value and payload.
    pub fn decode(header: &[u8], payload: Option<&[u8]>) -> Option<Control> {
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

/// A delivered frame from its stored results record: the record with `cursor` first. Built
/// once per result by the router and shared by every subscriber of the stream.
pub fn with_cursor(cursor: i64, stored: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(stored).ok()?;
    let rest = text.strip_prefix('{')?;
    Some(format!("{{\"cursor\":{cursor},{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip<T>(value: &T) -> T
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
    }

    #[test]
    fn window_lengths_are_whole_numbers_however_written() {
        let spec = |v: Value| serde_json::from_value::<ProcessorSpec>(v);
        let parsed = spec(json!({"type": "window", "length_ms": 1000.0, "value": ".x",
                                 "grace_ms": 0.0}))
        .unwrap();
        assert_eq!(
            parsed,
            ProcessorSpec::Window {
                length_ms: 1000,
                value: ".x".into(),
                group_by: None,
                grace_ms: 0
            }
        );
        let default_grace = spec(json!({"type": "window", "length_ms": 5, "value": ".x"}));
        assert!(matches!(
            default_grace,
            Ok(ProcessorSpec::Window {
                grace_ms: 2_000,
                ..
            })
        ));
        for bad in [json!(1000.5), json!(-1), json!("1000"), Value::Null] {
            let e = spec(json!({"type": "window", "length_ms": bad, "value": ".x"}));
            assert!(e.is_err(), "{bad} accepted");
        }
    }

    fn outcome(data: Option<Value>, error: Option<ErrorObject>) -> Outcome {
        Outcome {
            cursor: Some(42),
            stream_id: Uuid::from_u128(7),
            input_partition: 2,
            input_offset: 7,
            received_ms: 1,
            processed_ms: 2,
            data,
            error,
        }
    }

    fn error_object() -> ErrorObject {
        ErrorObject {
            code: "broker_unavailable".into(),
            message: "no ack".into(),
            acknowledged: Some(3),
        }
    }

    #[test]
    fn every_frame_round_trips() {
        let frames = [
            Frame::Result(outcome(Some(json!({"x": 1})), None)),
            Frame::Result(outcome(Some(Value::Null), None)),
            Frame::Error(outcome(None, Some(error_object()))),
            Frame::End(outcome(None, None)),
            Frame::Gap(Gap {
                stream_id: Uuid::from_u128(1),
                from_cursor: 5,
                skipped: 9,
            }),
            Frame::Ack(Ack { seq: 1, offset: 10 }),
            Frame::Nack(Nack {
                seq: 2,
                error: error_object(),
            }),
        ];
        for frame in frames {
            assert_eq!(round_trip(&frame), frame);
        }
    }

    #[test]
    fn frames_keep_their_field_names() {
        let v: Value =
            serde_json::from_str(&Frame::Result(outcome(Some(json!({"x": 1})), None)).to_json())
                .unwrap();
        assert_eq!(
            v,
            json!({"cursor": 42, "type": "result", "stream_id": Uuid::from_u128(7),
                   "input_partition": 2, "input_offset": 7, "received_ms": 1,
                   "processed_ms": 2, "data": {"x": 1}})
        );
        let v: Value =
            serde_json::from_str(&Frame::Ack(Ack { seq: 1, offset: 3 }).to_json()).unwrap();
        assert_eq!(v, json!({"type": "ack", "seq": 1, "offset": 3}));
    }

    #[test]
    fn cursor_is_prepended_to_a_stored_record() {
        let mut stored = outcome(Some(json!(1)), None);
        stored.cursor = None;
        let text = Frame::Result(stored).to_json();
        let delivered: Frame =
            serde_json::from_str(&with_cursor(9, text.as_bytes()).unwrap()).unwrap();
        assert_eq!(delivered.outcome().unwrap().cursor, Some(9));
    }

    #[test]
    fn bodies_round_trip() {
        let view = StreamView {
            stream_id: Uuid::from_u128(3),
            owner: "alice".into(),
            processor: ProcessorSpec::Jq {
                filter: ".a".into(),
            },
            state: StreamState::Ended,
            created_ms: 1,
            ended_ms: Some(2),
            records_in: 3,
            records_out: 4,
            subscribers: 5,
            last_activity_ms: 6,
        };
        assert_eq!(round_trip(&view), view);
        let list = StreamList {
            streams: vec![view.clone()],
        };
        assert_eq!(round_trip(&list), list);
        let stats = Stats {
            now_ms: 1,
            version: "0.1.0".into(),
            uptime_s: 2,
            broker: BrokerView {
                bootstrap: "127.0.0.1:9092".into(),
                embedded: true,
                reachable: true,
            },
            totals: Totals {
                streams: 1,
                subscribers: 0,
                records_in: 3,
                records_out: 4,
                latency_ms: Percentiles {
                    count: 1,
                    p50: 1.5,
                    p99: 2.5,
                },
            },
            streams: vec![StatsRow {
                stream: view,
                backlog: 7,
            }],
        };
        assert_eq!(round_trip(&stats), stats);
        let row: Value = serde_json::to_value(&stats.streams[0]).unwrap();
        assert_eq!(row["backlog"], 7, "backlog sits beside the view's fields");
        assert_eq!(row["owner"], "alice");
        let accepted = Accepted {
            stream_id: Uuid::from_u128(1),
            records: 2,
            partition: 3,
            offsets: vec![4, 5],
        };
        assert_eq!(round_trip(&accepted), accepted);
        let started = Started {
            stream_id: Uuid::from_u128(1),
            processor: ProcessorSpec::Uppercase,
        };
        assert_eq!(round_trip(&started), started);
        let body = ErrorBody {
            error: error_object(),
        };
        assert_eq!(round_trip(&body), body);
        let status = Status {
            status: "ok".into(),
            version: Some("0.1.0".into()),
        };
        assert_eq!(round_trip(&status), status);
    }

    #[test]
    fn close_reasons_parse_back() {
        for close in [
            Close::Ended,
            Close::Bye,
            Close::CaughtUp,
            Close::ShuttingDown,
            Close::Lagged { resume: 17 },
            Close::TooBig { limit: 1024 },
            Close::Internal("boom".into()),
            Close::Other(4000, "x".into()),
        ] {
            assert_eq!(Close::parse(close.code(), &close.reason()), close);
        }
        assert!(Close::Internal("é".repeat(100)).reason().len() <= 123);
    }

    #[test]
    fn control_records_round_trip() {
        for c in [Control::End, Control::CloseWindow(1_700_000_000_000)] {
            let (header, payload) = c.encode();
            assert_eq!(Control::decode(header.as_bytes(), Some(&payload)), Some(c));
        }
        assert_eq!(Control::decode(b"close-window", Some(b"x")), None);
        assert_eq!(Control::decode(b"other", None), None);
    }
}
