//! The JSON frames a WebSocket client receives, and the records in the results topic they are
//! made from. One place defines the wire format so the processing stage (which writes results)
//! and the WebSocket session (which delivers them) cannot drift apart.
//!
//! A results-topic record is the frame without its `cursor`; the cursor is the record's offset
//! in the results topic, known only once the broker stored it, so the router prepends it.
//! A results-topic record's Kafka timestamp is when the daemon accepted its input record, so
//! any instance's router can measure end-to-end latency without parsing the frame.
//! Every frame has a `type`: `result`, `error` (processing failed for one record), `end` (the
//! stream ended; nothing follows), `ack`/`nack` (a record sent on the socket was stored or not).

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Kafka header on input records that carry a control message instead of data.
pub const CONTROL_HEADER: &str = "streamgate-control";
/// Control value: the stream ended; the processing stage forwards it as an `end` frame.
pub const CONTROL_END: &str = "end";
/// Control value: a window of the stream is due; the value is its start (ms, decimal).
pub const CONTROL_CLOSE_WINDOW: &str = "close-window";
/// Kafka header on results records naming the frame type, so routing needs no JSON parsing.
pub const TYPE_HEADER: &str = "streamgate-type";

/// The kinds of frame a subscriber receives. All but `Gap` are stored in the results topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Result,
    Error,
    End,
    /// Results a `on_lag=skip` subscriber was too slow for (made by the router, not stored).
    Gap,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Result => "result",
            Kind::Error => "error",
            Kind::End => "end",
            Kind::Gap => "gap",
        }
    }

    pub fn from_header(v: &[u8]) -> Kind {
        match v {
            b"error" => Kind::Error,
            b"end" => Kind::End,
            _ => Kind::Result,
        }
    }
}

/// Where a result came from: the input record's coordinates and arrival time.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub stream_id: Uuid,
    pub input_partition: i32,
    pub input_offset: i64,
    /// When the daemon accepted the record (the input record's timestamp).
    pub received_ms: i64,
}

#[derive(Serialize)]
struct Stored<'a> {
    #[serde(rename = "type")]
    kind: Kind,
    stream_id: Uuid,
    input_partition: i32,
    input_offset: i64,
    received_ms: i64,
    processed_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// The results-topic record for one frame.
pub fn stored(
    kind: Kind,
    origin: &Origin,
    processed_ms: i64,
    data: Option<&Value>,
    error: Option<&str>,
) -> Vec<u8> {
    let frame = Stored {
        kind,
        stream_id: origin.stream_id,
        input_partition: origin.input_partition,
        input_offset: origin.input_offset,
        received_ms: origin.received_ms,
        processed_ms,
        data,
        error: error.map(|m| serde_json::json!({"code": "processing_failed", "message": m})),
    };
    serde_json::to_vec(&frame).expect("frames serialize")
}

/// The frame a client receives: the stored record with `cursor` first. Built once per result
/// and shared by every subscriber of the stream.
pub fn with_cursor(cursor: i64, stored: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(stored).ok()?;
    let rest = text.strip_prefix('{')?;
    Some(format!("{{\"cursor\":{cursor},{rest}"))
}

/// Tells an `on_lag=skip` subscriber that `skipped` results from `from_cursor` on were
/// dropped because it read too slowly; it may fetch them with `from=<from_cursor>`.
pub fn gap(stream_id: Uuid, from_cursor: i64, skipped: u64) -> String {
    serde_json::json!({
        "type": "gap",
        "stream_id": stream_id,
        "from_cursor": from_cursor,
        "skipped": skipped,
    })
    .to_string()
}

/// Acknowledgement of the `seq`-th record sent on a WebSocket (1-based).
pub fn ack(seq: u64, offset: i64) -> String {
    serde_json::json!({"type": "ack", "seq": seq, "offset": offset}).to_string()
}

/// Refusal of the `seq`-th record sent on a WebSocket, with the same error object as HTTP.
pub fn nack(seq: u64, error: Value) -> String {
    serde_json::json!({"type": "nack", "seq": seq, "error": error}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_is_prepended_to_stored_record() {
        let origin = Origin {
            stream_id: Uuid::nil(),
            input_partition: 2,
            input_offset: 7,
            received_ms: 1,
        };
        let data = serde_json::json!({"x": 1});
        let rec = stored(Kind::Result, &origin, 2, Some(&data), None);
        let frame: Value = serde_json::from_str(&with_cursor(42, &rec).unwrap()).unwrap();
        assert_eq!(frame["cursor"], 42);
        assert_eq!(frame["type"], "result");
        assert_eq!(frame["input_offset"], 7);
        assert_eq!(frame["data"], data);
        assert!(frame.get("error").is_none());
    }
}
