//! Request handlers: each takes the caller and the shared state, does one thing, and returns
//! a reply or an `ApiError` rejection.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};
use serde::de::IgnoredAny;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

use super::ws;
use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::frames;
use crate::kafka::{self, now_ms};
use crate::processor::ProcessorSpec;
use crate::replay;
use crate::results::OnLag;
use crate::server::AppState;

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

pub async fn metrics(state: Arc<AppState>) -> Response {
    warp::reply::with_header(
        state.metrics.render(),
        "content-type",
        "text/plain; version=0.0.4",
    )
    .into_response()
}

pub async fn ready(state: Arc<AppState>) -> Response {
    if state.broker_reachable().await {
        json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
    } else {
        ApiError::BrokerUnavailable {
            message: "the broker cannot be reached".into(),
            acknowledged: 0,
        }
        .into_response()
    }
}

/// `POST /api/stream/start`: optional body `{"processor": "<name>" | {"type": ...}}`.
pub async fn start(
    caller: Principal,
    state: Arc<AppState>,
    body: Bytes,
) -> Result<Response, Rejection> {
    let spec = parse_start_body(&body)?;
    let entry = state.registry.create(&caller, spec).await?;
    tracing::info!(stream_id = %entry.id, owner = %caller.name, "stream started");
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({"stream_id": entry.id, "processor": entry.processor()}),
    ))
}

fn parse_start_body(body: &[u8]) -> Result<ProcessorSpec, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ProcessorSpec::default());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidInput(format!("start body is not valid JSON: {e}")))?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(ApiError::InvalidInput(
            "start body must be a JSON object such as {\"processor\": \"identity\"}".into(),
        ));
    };
    let spec = match fields.remove("processor") {
        Some(p) => ProcessorSpec::parse(&p)?,
        None => ProcessorSpec::default(),
    };
    if let Some(unknown) = fields.keys().next() {
        return Err(ApiError::InvalidInput(format!(
            "start body: unknown field `{unknown}`; expected `processor`"
        )));
    }
    Ok(spec)
}

/// How a send body is framed, from its Content-Type.
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

/// Splits and validates a send body into records. A batch with one bad line is refused whole.
pub(super) fn records(body: &Bytes, framing_of: Option<&str>) -> Result<Vec<Bytes>, ApiError> {
    match framing(framing_of)? {
        Framing::Single => {
            serde_json::from_slice::<IgnoredAny>(body)
                .map_err(|e| ApiError::InvalidInput(format!("body is not valid JSON: {e}")))?;
            Ok(vec![trim(body)])
        }
        Framing::Lines => {
            let mut out = Vec::new();
            let mut start = 0;
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                let end = start + line.len();
                let record = trim(&body.slice(start..end));
                start = end + 1;
                if record.is_empty() {
                    continue;
                }
                serde_json::from_slice::<IgnoredAny>(&record).map_err(|e| {
                    ApiError::InvalidInput(format!(
                        "line {}: not valid JSON: {e}; no record of this batch was stored",
                        i + 1
                    ))
                })?;
                out.push(record);
            }
            if out.is_empty() {
                return Err(ApiError::InvalidInput("body holds no records".into()));
            }
            Ok(out)
        }
    }
}

fn trim(b: &Bytes) -> Bytes {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    b.slice(start..end)
}

/// `POST /api/stream/{id}/send`: 202 once the broker acknowledged every record.
pub async fn send(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
    content_type: Option<String>,
    body: Bytes,
) -> Result<Response, Rejection> {
    let entry = state.registry.find_owned(&id, &caller).await?;
    if !entry.is_open() {
        return Err(ApiError::StreamEnded(id).into());
    }
    let records = records(&body, content_type.as_deref())?;
    let payloads: Vec<&[u8]> = records.iter().map(|r| r.as_ref()).collect();
    let key = entry.id.to_string();
    let started = std::time::Instant::now();
    let result = state.input.send_all(&key, &payloads).await;
    let acknowledged = match &result {
        Ok(offsets) => offsets.len(),
        Err(ApiError::BrokerUnavailable { acknowledged, .. }) => *acknowledged,
        Err(_) => 0,
    };
    entry
        .stats
        .records_in
        .fetch_add(acknowledged as u64, Ordering::Relaxed);
    entry.stats.touch();
    state.metrics.records_in.inc_by(acknowledged as u64);
    let offsets = result?;
    state
        .metrics
        .send_ack_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "stream_id": entry.id,
            "records": offsets.len(),
            "partition": state.input.partition_for(&key),
            "offsets": offsets,
        }),
    ))
}

/// `GET /api/stream/{id}/results`: upgrade to the bi-directional WebSocket.
pub async fn subscribe(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
    upgrade: super::upgrade::Upgrade,
    protocols: Option<String>,
    query: std::collections::HashMap<String, String>,
) -> Result<Response, Rejection> {
    let entry = state.registry.find_owned(&id, &caller).await?;
    let from = replay::From::parse(query.get("from").map(String::as_str))?;
    let on_lag = OnLag::parse(query.get("on_lag").map(String::as_str))?;
    let sub = state.router.subscribe(entry.id, on_lag);
    let max_message = state.config.limits.ws_max_message_bytes;
    let protocol = auth::ws_response_protocol(protocols.as_deref());
    Ok(upgrade.respond(protocol, max_message, move |socket| {
        ws::session(socket, state, entry, sub, from)
    }))
}

/// `GET /api/streams`: the caller's streams (all of them for an admin key).
pub async fn list(caller: Principal, state: Arc<AppState>) -> Result<Response, Rejection> {
    let streams: Vec<serde_json::Value> = state
        .registry
        .list(&caller)
        .iter()
        .map(|e| e.describe())
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "streams": streams }),
    ))
}

/// `GET /api/stream/{id}`.
pub async fn describe(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let entry = state.registry.find_owned(&id, &caller).await?;
    Ok(json(StatusCode::OK, &entry.describe()))
}

/// `DELETE /api/stream/{id}`: marks the stream ended in the registry, then writes an end
/// marker into the input topic behind the stream's records, so subscribers receive every
/// result and then an `end` frame. Ending an ended stream again answers the same.
pub async fn end(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let entry = state.registry.find_owned(&id, &caller).await?;
    state.registry.end(&entry).await?;
    let key = entry.id.to_string();
    let headers = OwnedHeaders::new().insert(Header {
        key: frames::CONTROL_HEADER,
        value: Some(frames::CONTROL_END),
    });
    let marker = state
        .input
        .enqueue_with_headers(&key, b"null", now_ms(), Some(headers))
        .await
        .map_err(|e| kafka::unavailable(&e, 0))?;
    marker.await.map_err(|e| kafka::unavailable(&e, 0))?;
    tracing::info!(stream_id = %entry.id, "stream ended");
    Ok(json(StatusCode::OK, &entry.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_names_the_bad_line() {
        let body = Bytes::from_static(b"{\"a\":1}\n\n2\n{oops}\n");
        let err = records(&body, Some("application/x-ndjson")).unwrap_err();
        assert!(err.to_string().starts_with("line 4:"), "{err}");
    }

    #[test]
    fn ndjson_skips_blank_lines_and_crlf() {
        let body = Bytes::from_static(b"1\r\n\r\n\"two\"\r\n[3]");
        let recs = records(&body, Some("application/x-ndjson; charset=utf-8")).unwrap();
        assert_eq!(
            recs,
            vec![Bytes::from("1"), Bytes::from("\"two\""), Bytes::from("[3]")]
        );
    }

    #[test]
    fn content_types() {
        assert!(records(&Bytes::from("{}"), None).is_ok());
        assert!(matches!(
            records(&Bytes::from("{}"), Some("text/plain")),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            records(&Bytes::from("{"), Some("application/json")),
            Err(ApiError::InvalidInput(_))
        ));
    }

    #[test]
    fn start_body() {
        assert_eq!(parse_start_body(b"").unwrap(), ProcessorSpec::Identity);
        assert_eq!(
            parse_start_body(br#"{"processor":"uppercase"}"#).unwrap(),
            ProcessorSpec::Uppercase
        );
        assert!(parse_start_body(br#"{"procesor":"uppercase"}"#)
            .unwrap_err()
            .to_string()
            .contains("procesor"));
    }
}
