//! Every shape that crosses the wire, as one set of serde types used by the daemon (which
//! serializes them) and by its clients, `streamgate-client` and `streamctl` (which
//! deserialize the same types): the frames a
//! subscriber receives, the close codes and reasons of a results socket, every JSON body of
//! the HTTP API and their error codes. What Streamgate stores in Kafka is `kafka::records`.
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

/// One frame from the daemon on a results WebSocket or `/api/connect`: what a stream
/// produced (`result`, `error`, `end`), what a slow `on_lag=skip` reader missed (`gap`), and
/// the answer to each record the client sent (`ack`, `nack`). On `/api/connect` every frame
/// names its stream, and the connection's own answers follow (`subscribed`, `refused`,
/// `unsubscribed`, `lagged`, `caught_up`, `invalid`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
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
    /// `/api/connect`: the stream's frames follow.
    Subscribed(StreamRef),
    /// `/api/connect`: the subscription was not made (not found, forbidden, a limit).
    Refused(Refusal),
    /// `/api/connect`: no frame of the stream follows. With an `error`, the daemon ended the
    /// subscription (its replay failed, say); subscribe again from the last cursor + 1.
    Unsubscribed(Refusal),
    /// `/api/connect`: the subscriber read too slowly (`on_lag: close`) and was detached;
    /// subscribe again with `from: resume_from` to get everything from there.
    Lagged(Lagged),
    /// `/api/connect` with `until: now`: every result that existed at subscribe was sent.
    CaughtUp(StreamRef),
    /// `/api/connect`: a frame the daemon could not read; the connection goes on.
    Invalid(Invalid),
    /// `/api/connect`: the token of an `auth` frame was accepted; the connection now lives
    /// until it expires.
    Authenticated(Authenticated),
}

/// The answer to an `auth` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Authenticated {
    /// When the new token expires (seconds since the Unix epoch); absent when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// A frame about one stream and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamRef {
    pub stream_id: Uuid,
}

/// Why a subscription was refused or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Refusal {
    pub stream_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

/// A subscription detached because its subscriber fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lagged {
    pub stream_id: Uuid,
    /// Every result before this cursor was delivered.
    pub resume_from: i64,
}

/// A client frame that was not understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Invalid {
    pub error: ErrorObject,
}

/// Where a subscription starts: `latest`, `earliest`, a cursor (0 or more), or `-N` for the
/// last N results, as a name or a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StartFrom {
    /// A cursor (`n >= 0`) or the last `-n` results (`n < 0`).
    Cursor(i64),
    /// `latest`, `earliest`, or a number written as text.
    Named(String),
}

impl StartFrom {
    /// The value as the `from` query parameter writes it.
    pub fn as_param(&self) -> String {
        match self {
            StartFrom::Cursor(n) => n.to_string(),
            StartFrom::Named(name) => name.clone(),
        }
    }
}

/// What happens to a subscriber that falls `limits.subscriber_queue` results behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LagPolicy {
    /// Detach it, saying where to resume (the default).
    #[default]
    Close,
    /// Drop results while its queue is full, then say what was skipped in a `gap` frame.
    Skip,
}

/// One frame a client sends on `/api/connect`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    deny_unknown_fields,
    try_from = "RawClientFrame"
)]
pub enum ClientFrame {
    /// Follow a stream: replay from `from` (default `latest`), then live.
    Subscribe {
        stream_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<StartFrom>,
        #[serde(default)]
        on_lag: LagPolicy,
        /// `now`: only what exists at subscribe, then `caught_up`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
    },
    /// Stop following a stream: `unsubscribed`, and nothing of it after.
    Unsubscribe { stream_id: Uuid },
    /// A fresh token for the same caller, before the one the connection was opened with
    /// expires: answered `authenticated`, and the connection goes on under it (or `invalid`,
    /// and it goes on under the old one).
    Auth { token: String },
    /// A record into a stream, answered by `ack` or `nack` with this `seq`, in order per
    /// stream.
    Send {
        stream_id: Uuid,
        seq: u64,
        #[schema(value_type = Object)]
        data: Box<serde_json::value::RawValue>,
        /// Sent again with the same key (after a lost answer), the record is stored and
        /// processed once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        /// W3C trace context: the record's trace goes on from this span.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
}

/// A record sent on a results socket opened with `send=frames`: the record, and the
/// idempotency key it is sent (and sent again) with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordFrame {
    #[schema(value_type = Object)]
    pub data: Box<serde_json::value::RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// W3C trace context: the record's trace goes on from this span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
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
    /// The idempotency key the input record was sent with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A traced record's result: W3C trace context naming the span that processed it, to
    /// continue the trace in the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Gap {
    pub stream_id: Uuid,
    /// The first skipped result: `from=<from_cursor>` replays what was skipped.
    pub from_cursor: i64,
    pub skipped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    /// On `/api/connect`: the stream the record was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<Uuid>,
    pub seq: u64,
    pub offset: i64,
    /// `true`: the record's idempotency key was sent before; nothing new was stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Nack {
    /// On `/api/connect`: the stream the record was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<Uuid>,
    pub seq: u64,
    /// The same object as an HTTP error body's `error`.
    pub error: ErrorObject,
}

/// A client frame as read, before its `type` says which fields it must have: serde cannot
/// read a `RawValue` (a record's bytes, kept as the client wrote them) inside an internally
/// tagged enum, so `ClientFrame` is read through this.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientFrame {
    #[serde(rename = "type")]
    kind: String,
    stream_id: Option<Uuid>,
    from: Option<StartFrom>,
    #[serde(default)]
    on_lag: LagPolicy,
    until: Option<String>,
    seq: Option<u64>,
    data: Option<Box<serde_json::value::RawValue>>,
    idempotency_key: Option<String>,
    traceparent: Option<String>,
    token: Option<String>,
}

impl TryFrom<RawClientFrame> for ClientFrame {
    type Error = String;

    fn try_from(raw: RawClientFrame) -> Result<Self, String> {
        if raw.kind == "auth" {
            if raw.stream_id.is_some() || raw.seq.is_some() || raw.data.is_some() {
                return Err("an `auth` frame has only `token`".into());
            }
            let token = raw.token.ok_or("an `auth` frame needs `token`")?;
            return Ok(ClientFrame::Auth { token });
        }
        if raw.token.is_some() {
            return Err(format!("a `{}` frame has no `token`", raw.kind));
        }
        let stream_id = raw
            .stream_id
            .ok_or_else(|| format!("a `{}` frame needs `stream_id`", raw.kind))?;
        let only = |allowed: &[&str]| -> Result<(), String> {
            let present = [
                ("from", raw.from.is_some()),
                ("until", raw.until.is_some()),
                ("seq", raw.seq.is_some()),
                ("data", raw.data.is_some()),
                ("idempotency_key", raw.idempotency_key.is_some()),
                ("traceparent", raw.traceparent.is_some()),
            ];
            match present.iter().find(|(f, p)| *p && !allowed.contains(f)) {
                Some((field, _)) => Err(format!("a `{}` frame has no `{field}`", raw.kind)),
                None => Ok(()),
            }
        };
        match raw.kind.as_str() {
            "subscribe" => {
                only(&["from", "until"])?;
                Ok(ClientFrame::Subscribe {
                    stream_id,
                    from: raw.from,
                    on_lag: raw.on_lag,
                    until: raw.until,
                })
            }
            "unsubscribe" => {
                only(&[])?;
                Ok(ClientFrame::Unsubscribe { stream_id })
            }
            "send" => {
                only(&["seq", "data", "idempotency_key", "traceparent"])?;
                Ok(ClientFrame::Send {
                    stream_id,
                    seq: raw.seq.ok_or("a `send` frame needs `seq`")?,
                    data: raw.data.ok_or("a `send` frame needs `data`")?,
                    idempotency_key: raw.idempotency_key,
                    traceparent: raw.traceparent,
                })
            }
            other => Err(format!(
                "unknown frame type `{other}`; expected subscribe, unsubscribe, send or auth"
            )),
        }
    }
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
            Frame::Subscribed(_) => Kind::Subscribed,
            Frame::Refused(_) => Kind::Refused,
            Frame::Unsubscribed(_) => Kind::Unsubscribed,
            Frame::Lagged(_) => Kind::Lagged,
            Frame::CaughtUp(_) => Kind::CaughtUp,
            Frame::Invalid(_) => Kind::Invalid,
            Frame::Authenticated(_) => Kind::Authenticated,
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
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Result,
    Error,
    End,
    Gap,
    Ack,
    Nack,
    Subscribed,
    Refused,
    Unsubscribed,
    Lagged,
    CaughtUp,
    Invalid,
    Authenticated,
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
            Kind::Subscribed => "subscribed",
            Kind::Refused => "refused",
            Kind::Unsubscribed => "unsubscribed",
            Kind::Lagged => "lagged",
            Kind::CaughtUp => "caught_up",
            Kind::Invalid => "invalid",
            Kind::Authenticated => "authenticated",
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
    /// 4401: the token's signing key (a removed or rotated API key, or a key its identity
    /// provider no longer lists) is gone; as for an expired token, a new token resumes.
    TokenRevoked,
    /// 4403: the API key the connection was opened with was removed or rotated (a reload);
    /// it will not be accepted again.
    CredentialRevoked,
    /// 1011: something failed inside the daemon (the text says what).
    Internal(String),
    /// Any other code a client may see (from a proxy, say).
    Other(u16, String),
}

/// Close code for a subscriber detached because it fell behind.
pub const CLOSE_LAGGED: u16 = 4008;
/// Close code for a connection whose stream token expired (401, as a WebSocket code).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4401;
/// Close code for a connection whose API key was removed (403, as a WebSocket code).
pub const CLOSE_CREDENTIAL_REVOKED: u16 = 4403;
const REASON_ENDED: &str = "stream ended";
const REASON_BYE: &str = "bye";
const REASON_CAUGHT_UP: &str = "caught up";
const REASON_SHUTTING_DOWN: &str = "server shutting down";
const REASON_LAGGED: &str = "lagged: too slow; resume with from=";
const REASON_TOO_BIG: &str = "message too big; limits.ws_max_message_bytes=";
const REASON_TOKEN_EXPIRED: &str = "token expired";
const REASON_TOKEN_REVOKED: &str = "token revoked: its signing key is gone";
const REASON_CREDENTIAL_REVOKED: &str = "credential revoked: the API key was removed";

impl Close {
    pub fn code(&self) -> u16 {
        match self {
            Close::Ended | Close::Bye | Close::CaughtUp => 1000,
            Close::ShuttingDown => 1001,
            Close::Lagged { .. } => CLOSE_LAGGED,
            Close::TooBig { .. } => 1009,
            Close::TokenExpired | Close::TokenRevoked => CLOSE_TOKEN_EXPIRED,
            Close::CredentialRevoked => CLOSE_CREDENTIAL_REVOKED,
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
            Close::TokenRevoked => REASON_TOKEN_REVOKED.to_string(),
            Close::CredentialRevoked => REASON_CREDENTIAL_REVOKED.to_string(),
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
            (CLOSE_TOKEN_EXPIRED, REASON_TOKEN_REVOKED) => Close::TokenRevoked,
            (CLOSE_TOKEN_EXPIRED, _) => Close::TokenExpired,
            (CLOSE_CREDENTIAL_REVOKED, _) => Close::CredentialRevoked,
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
    pub code: ErrorCode,
    pub message: String,
    /// For `broker_unavailable` on a batch: how many leading records were stored, so a client
    /// retries exactly the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<usize>,
    /// For a refused NDJSON batch: the line (1-based) of the record that was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// For `schema_violation`: each violation (at most ten), with its record's line, where in
    /// the record, the keyword that failed and what was expected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

impl ErrorObject {
    /// An error object with only a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            acknowledged: None,
            line: None,
            violations: Vec::new(),
        }
    }
}

/// One way a record does not match its stream's JSON Schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Violation {
    /// The record's line in an NDJSON request (1-based); absent for one record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Where in the record, as a JSON pointer (`""`: the record itself).
    pub pointer: String,
    /// The schema keyword that failed (`type`, `required`, `minimum`, `pattern`, ...).
    pub keyword: String,
    /// What was expected, in words.
    pub message: String,
}

/// Declares [`ErrorCode`] from one list: variant, wire name, meaning.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// The stable, machine-readable `code` of every error the daemon answers (in HTTP
        /// bodies, `nack` frames and `error` frames). Clients match on this type, never on
        /// message text. A code this version does not know reads as [`ErrorCode::Other`].
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
            /// A code from a newer daemon, or from something between (a proxy).
            Other(String),
        }

        impl ErrorCode {
            /// Every code this version knows, in the order of its documentation.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it is written on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                    ErrorCode::Other(code) => code,
                }
            }

            /// The code written `name` on the wire.
            pub fn parse(name: &str) -> ErrorCode {
                match name {
                    $($name => ErrorCode::$variant,)*
                    other => ErrorCode::Other(other.to_string()),
                }
            }
        }
    };
}

error_codes! {
    /// A body, frame, query or header that means nothing (the message says what).
    InvalidInput = "invalid_input",
    MissingApiKey = "missing_api_key",
    InvalidApiKey = "invalid_api_key",
    InvalidToken = "invalid_token",
    TokenExpired = "token_expired",
    /// A stream token used beyond its scope, or for what only a key may do.
    Forbidden = "forbidden",
    /// Unknown, or another key's (the same answer, so ids cannot be probed).
    StreamNotFound = "stream_not_found",
    RouteNotFound = "route_not_found",
    MethodNotAllowed = "method_not_allowed",
    OriginNotAllowed = "origin_not_allowed",
    StreamEnded = "stream_ended",
    RequestTimeout = "request_timeout",
    PayloadTooLarge = "payload_too_large",
    RecordTooLarge = "record_too_large",
    TooManyRecords = "too_many_records",
    UnsupportedMediaType = "unsupported_media_type",
    RateLimited = "rate_limited",
    BacklogFull = "backlog_full",
    TooManyStreams = "too_many_streams",
    TooManySubscribers = "too_many_subscribers",
    /// `/api/connect`: a subscribe past `limits.max_subscriptions_per_connection`.
    TooManySubscriptions = "too_many_subscriptions",
    /// An idempotency key sent again with another body (nothing stored).
    IdempotencyKeyReused = "idempotency_key_reused",
    /// A record that does not match its stream's JSON Schema (nothing of the request
    /// stored; `violations` says where); in an `error` frame, a result that does not match
    /// the stream's `result_schema`.
    SchemaViolation = "schema_violation",
    /// An idempotency key sent again while its first request is still being stored.
    IdempotencyKeyInFlight = "idempotency_key_in_flight",
    /// Answered by the accept loop, before any route: over a connection cap.
    TooManyConnections = "too_many_connections",
    /// Answered by the accept loop: HTTP/2 without TLS.
    HttpVersionNotSupported = "http_version_not_supported",
    NotReady = "not_ready",
    ShuttingDown = "shutting_down",
    /// The broker did not acknowledge (`acknowledged` says how much of a batch it did).
    BrokerUnavailable = "broker_unavailable",
    Internal = "internal",
    /// In an `error` frame: processing failed for one record; the stream goes on.
    ProcessingFailed = "processing_failed",
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(ErrorCode::parse(&name))
    }
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(
                ErrorCode::KNOWN.iter().map(|c| c.as_str().to_string()),
            ))
            .description(Some(
                "Stable machine-readable code; clients should accept codes they do not know.",
            ))
            .into()
    }
}

impl ToSchema for ErrorCode {}

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

/// Body of `POST /api/tokens`: one token for several streams (each must be the key's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokensRequest {
    /// 1 to 100 streams.
    #[schema(min_items = 1, max_items = 100)]
    pub streams: Vec<Uuid>,
    #[schema(min_items = 1)]
    pub scope: Vec<Scope>,
    /// As for one stream's token.
    #[serde(
        default,
        deserialize_with = "whole_number",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 86_400)]
    pub ttl_s: Option<u64>,
}

/// `201` answer of `POST /api/stream/{id}/tokens` and `POST /api/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenIssued {
    /// Present it as `Authorization: Bearer <token>`, `?access_token=<token>` or the
    /// WebSocket subprotocol `token.<token>`.
    pub token: String,
    /// The stream, for a token of `POST /api/stream/{id}/tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<Uuid>,
    /// Every stream the token is for.
    #[serde(default)]
    pub streams: Vec<Uuid>,
    pub scope: Vec<Scope>,
    /// Unix time (seconds) at which it stops working, open connections included.
    pub expires_at: u64,
}

/// `202` answer of `POST /api/stream/{id}/send`: every record is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub stream_id: Uuid,
    pub records: usize,
    /// The stream's partition of the input topic, and each record's offset in it. For a
    /// replayed request, the first attempt's offsets where this instance knows them (else
    /// empty).
    pub partition: i32,
    pub offsets: Vec<i64>,
    /// `true`: this `Idempotency-Key` was sent before with the same body; nothing new was
    /// stored, and no result will come of it twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
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
    /// The JSON Schema its records are checked against, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<serde_json::Value>,
    /// The JSON Schema its results are checked against, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result_schema: Option<serde_json::Value>,
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
            idempotency_key: None,
            traceparent: None,
        }
    }

    fn error_object() -> ErrorObject {
        ErrorObject {
            code: ErrorCode::BrokerUnavailable,
            message: "no ack".into(),
            acknowledged: Some(3),
            line: None,
            violations: Vec::new(),
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
            Frame::Ack(Ack {
                stream_id: None,
                seq: 1,
                offset: 10,
                replayed: false,
            }),
            Frame::Nack(Nack {
                stream_id: Some(Uuid::from_u128(1)),
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
        let v: Value = serde_json::from_str(
            &Frame::Ack(Ack {
                stream_id: None,
                seq: 1,
                offset: 3,
                replayed: false,
            })
            .to_json(),
        )
        .unwrap();
        assert_eq!(v, json!({"type": "ack", "seq": 1, "offset": 3}));
    }

    #[test]
    fn bodies_round_trip() {
        let view = StreamView {
            stream_id: Uuid::from_u128(3),
            owner: "alice".into(),
            processor: ProcessorSpec::Jq {
                filter: ".a".into(),
            },
            schema: None,
            result_schema: None,
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
            replayed: false,
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
    fn client_frames_keep_a_records_bytes_and_name_what_is_wrong() {
        let id = Uuid::from_u128(5);
        let send: ClientFrame = serde_json::from_str(&format!(
            r#"{{"type":"send","stream_id":"{id}","seq":3,"data":{{"b":1.50,"a":2}}}}"#
        ))
        .unwrap();
        let ClientFrame::Send { seq, data, .. } = send else {
            panic!("a send frame")
        };
        assert_eq!((seq, data.get()), (3, r#"{"b":1.50,"a":2}"#));
        let subscribe: ClientFrame = serde_json::from_str(&format!(
            r#"{{"type":"subscribe","stream_id":"{id}","from":-5,"on_lag":"skip"}}"#
        ))
        .unwrap();
        assert!(matches!(
            subscribe,
            ClientFrame::Subscribe {
                from: Some(StartFrom::Cursor(-5)),
                on_lag: LagPolicy::Skip,
                ..
            }
        ));
        for (bad, says) in [
            (
                r#"{"type":"subscrib","stream_id":"00000000-0000-0000-0000-000000000005"}"#,
                "subscrib",
            ),
            (
                r#"{"type":"send","stream_id":"00000000-0000-0000-0000-000000000005","data":1}"#,
                "seq",
            ),
            (r#"{"type":"unsubscribe"}"#, "stream_id"),
            (
                r#"{"type":"unsubscribe","stream_id":"00000000-0000-0000-0000-000000000005","seq":1}"#,
                "seq",
            ),
            (
                r#"{"type":"send","stream_id":"00000000-0000-0000-0000-000000000005","seq":1,"data":1,"x":1}"#,
                "x",
            ),
        ] {
            let e = serde_json::from_str::<ClientFrame>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
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
}
