//! Request handlers: each takes the caller and the shared state, asks one component to do
//! one thing, and answers with a wire body or an `ApiError` rejection. Each is described for
//! OpenAPI where it is defined (its path from the route table); the answers every operation
//! shares (401, 429, 503) are added to all of them in `openapi.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

use super::access::owned;
use super::error::{json, reject, ApiError};
use super::openapi::{StartRequest, ID};
use super::routes;
use super::subscriber::{subscriber, SubscribeArgs};
use super::upgrade::Upgrade;
use super::{connect, events, sse, ws, AppState};
use crate::auth::tokens::{Grant, MAX_STREAMS};
use crate::auth::{self, Need, Principal};
use crate::config;
use crate::processing::parse_spec;
use crate::registry::Schemas;
use crate::schema;
use crate::telemetry::TraceContext;
use crate::wire::{
    Accepted, ErrorBody, ProcessorSpec, Scope, Started, Status, StreamList, StreamView,
    TokenIssued, TokenRequest, TokensRequest,
};

/// The process is up (also while start-up waits for the broker: `starting`).
#[utoipa::path(
    get, path = routes::HEALTHZ.path, tag = "operations", operation_id = "healthz", security(()),
    responses((status = 200, description = "`ok` or `starting`, with the version.", body = Status))
)]
pub fn healthz(status: &'static str) -> Response {
    json(
        StatusCode::OK,
        &Status {
            status: status.into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        },
    )
}

/// Prometheus metrics of this instance.
#[utoipa::path(
    get, path = routes::METRICS.path, tag = "operations", operation_id = "metrics", security(()),
    responses((status = 200, description = "Prometheus text format.", content_type = "text/plain", body = String))
)]
pub async fn metrics(state: Arc<AppState>) -> Response {
    warp::reply::with_header(
        state.metrics.render(),
        "content-type",
        "text/plain; version=0.0.4",
    )
    .into_response()
}

/// Ready for traffic: the broker answers and processing joined its group.
#[utoipa::path(
    get, path = routes::READYZ.path, tag = "operations", operation_id = "readyz", security(()),
    responses(
        (status = 200, description = "`ready`.", body = Status),
        (status = 503, description = "`not_ready`, naming what is missing.", body = ErrorBody),
    )
)]
pub async fn ready(state: Arc<AppState>) -> Response {
    let missing = if !state.broker.reachable().await {
        format!(
            "the broker at {} cannot be reached",
            state.broker.bootstrap()
        )
    } else if !*state.processing_joined.borrow() {
        "the processing stage has not joined its group yet".to_string()
    } else {
        return json(
            StatusCode::OK,
            &Status {
                status: "ready".into(),
                version: None,
            },
        );
    };
    ApiError::NotReady(missing).into_response()
}

/// Open a stream.
///
/// The body is optional: without one the stream's processor is `identity`.
#[utoipa::path(
    post, path = routes::START.path, tag = "streams", operation_id = "start",
    request_body(content = Option<StartRequest>, content_type = "application/json"),
    responses(
        (status = 201, description = "The stream is open.", body = Started),
        (status = 400, description = "`invalid_input`: not JSON, unknown field or processor, a spec past its limits.", body = ErrorBody),
        (status = 403, description = "`forbidden`: a stream token cannot start streams.", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 429, description = "`rate_limited` or `too_many_streams`; see Retry-After.", body = ErrorBody),
        (status = 503, description = "`not_ready` or `broker_unavailable`.", body = ErrorBody),
    )
)]
pub async fn start(
    caller: Principal,
    state: Arc<AppState>,
    body: Bytes,
) -> Result<Response, Rejection> {
    // Compiling a filter or a schema takes a thread of its own: off the runtime.
    let config = state.config();
    let named = state.schemas.clone();
    let (spec, schemas) =
        tokio::task::spawn_blocking(move || parse_start_body(&body, &config, &named))
            .await
            .map_err(|e| reject(ApiError::Internal(e.to_string())))?
            .map_err(reject)?;
    let limit = state.config().limits.ingest.max_streams_per_key;
    if state.registry.open_streams_of(&caller.name) >= limit {
        return Err(reject(ApiError::TooManyStreams { limit }));
    }
    let entry = state
        .registry
        .create(&caller, spec, schemas)
        .await
        .map_err(reject)?;
    tracing::info!(stream_id = %entry.id, owner = %caller.name, "stream started");
    Ok(json(
        StatusCode::CREATED,
        &Started {
            stream_id: entry.id,
            processor: entry.processor(),
        },
    ))
}

/// The processor and the schemas a start body asks for (each checked and compiled).
fn parse_start_body(
    body: &[u8],
    config: &config::Config,
    named: &schema::Named,
) -> Result<(ProcessorSpec, Schemas), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((ProcessorSpec::default(), Schemas::default()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidInput(format!("start body is not valid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::InvalidInput(
            "start body must be a JSON object such as {\"processor\": \"identity\"}".into(),
        ));
    };
    let spec = match fields.remove("processor") {
        Some(p) => parse_spec(&p, &config.processing)?,
        None => ProcessorSpec::default(),
    };
    let max = config.limits.ingest.max_schema_bytes;
    let mut schema = |what: &'static str| -> Result<Option<Value>, ApiError> {
        match fields.remove(what) {
            None | Some(Value::Null) => Ok(None),
            Some(given) => schema::prepare(what, &given, named, max)
                .map(|(resolved, _)| Some(resolved))
                .map_err(|e| ApiError::InvalidInput(e.to_string())),
        }
    };
    let schemas = Schemas {
        input: schema("schema")?,
        result: schema("result_schema")?,
    };
    if let Some(unknown) = fields.keys().next() {
        return Err(ApiError::InvalidInput(format!(
            "start body: unknown field `{unknown}`; expected `processor`, `schema` or \
             `result_schema`"
        )));
    }
    Ok((spec, schemas))
}

/// Send records into a stream.
///
/// One JSON value as `application/json` (also the default without a Content-Type), or many
/// as `application/x-ndjson`, one per line. Answered once the broker acknowledged every
/// record. With an `Idempotency-Key`, the request is stored and processed once however
/// often it is sent (within `limits.idempotency_window_s`), on any instance.
#[utoipa::path(
    post, path = routes::SEND.path, tag = "streams", operation_id = "send",
    params(
        ("id" = String, Path, description = ID),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters naming this request (one record or a whole batch): sent again, it is answered `replayed` and processed once."),
        ("traceparent" = Option<String>, Header, description = "W3C trace context: with `telemetry` on, a sampled context is continued through processing to the subscriber's frames (their `traceparent`). A malformed one is ignored."),
        ("tracestate" = Option<String>, Header, description = "W3C trace state, carried with `traceparent`."),
    ),
    request_body(content(
        (Value = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 202, description = "Every record is stored.", body = Accepted),
        (status = 400, description = "`invalid_input`: a record is not JSON (`line` names the NDJSON line).", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token without `send`.", body = ErrorBody),
        (status = 404, description = "`stream_not_found`: unknown, or not the caller's.", body = ErrorBody),
        (status = 408, description = "`request_timeout`.", body = ErrorBody),
        (status = 409, description = "`stream_ended`, or `idempotency_key_in_flight` (the key's first request is still being stored; see Retry-After).", body = ErrorBody),
        (status = 413, description = "`payload_too_large`, `record_too_large`, `too_many_records`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the key was sent before with another body; nothing stored.", body = ErrorBody),
        (status = 429, description = "`rate_limited` or `backlog_full`; see Retry-After.", body = ErrorBody),
        (status = 503, description = "`broker_unavailable` (with `acknowledged`) or `not_ready`.", body = ErrorBody),
    )
)]
pub async fn send(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    trace: Option<TraceContext>,
    body: Bytes,
) -> Result<Response, Rejection> {
    let entry = owned(&state, &id, &caller, Need::Scope(Scope::Send))
        .await
        .map_err(reject)?;
    let accepted = state
        .ingest
        .append(
            &entry,
            &body,
            content_type.as_deref(),
            idempotency_key.as_deref(),
            trace.as_ref(),
        )
        .await
        .map_err(reject)?;
    Ok(json(StatusCode::ACCEPTED, &accepted))
}

/// Issue a scoped stream token.
///
/// For one stream, with `subscribe`, `send` or both, until it expires. Only the key may
/// issue one.
#[utoipa::path(
    post, path = routes::TOKENS.path, tag = "streams", operation_id = "tokens",
    params(("id" = String, Path, description = ID)),
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The token.", body = TokenIssued),
        (status = 400, description = "`invalid_input`: no scope, an unknown one, or `ttl_s` out of range.", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token cannot issue tokens.", body = ErrorBody),
        (status = 404, description = "`stream_not_found`.", body = ErrorBody),
        (status = 408, description = "`request_timeout`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
    )
)]
pub async fn tokens(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
    body: Bytes,
) -> Result<Response, Rejection> {
    let entry = owned(&state, &id, &caller, Need::Key)
        .await
        .map_err(reject)?;
    let request: TokenRequest = serde_json::from_slice(&body).map_err(|e| {
        reject(ApiError::InvalidInput(format!(
            "token request: {e}; expected {{\"scope\": [\"subscribe\", \"send\"], \"ttl_s\": 3600}}"
        )))
    })?;
    let mut issued = issue(
        &state,
        &caller,
        vec![entry.id],
        &request.scope,
        request.ttl_s,
    )?;
    issued.stream_id = Some(entry.id);
    Ok(json(StatusCode::CREATED, &issued))
}

/// Issue one token for several streams.
///
/// Each stream must be the key's (another key's, or a missing one, is 404 naming it). The
/// token may subscribe to and send into each of them, as its scope says, on their own
/// routes or over one `/api/connect` socket. Only the key may issue one.
#[utoipa::path(
    post, path = routes::TOKENS_FOR_STREAMS.path, tag = "streams", operation_id = "tokens_for_streams",
    request_body(content = TokensRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The token.", body = TokenIssued),
        (status = 400, description = "`invalid_input`: no stream, more than 100, no scope, or `ttl_s` out of range.", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token cannot issue tokens.", body = ErrorBody),
        (status = 404, description = "`stream_not_found`: a stream that is not the key's.", body = ErrorBody),
        (status = 408, description = "`request_timeout`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
    )
)]
pub async fn tokens_for_streams(
    caller: Principal,
    state: Arc<AppState>,
    body: Bytes,
) -> Result<Response, Rejection> {
    let request: TokensRequest = serde_json::from_slice(&body).map_err(|e| {
        reject(ApiError::InvalidInput(format!(
            "token request: {e}; expected {{\"streams\": [ID, ...], \"scope\": [\"subscribe\"], \"ttl_s\": 3600}}"
        )))
    })?;
    if request.streams.is_empty() || request.streams.len() > MAX_STREAMS {
        return Err(reject(ApiError::InvalidInput(format!(
            "token request: `streams` holds {}; give 1 to {MAX_STREAMS}",
            request.streams.len()
        ))));
    }
    let mut streams = Vec::with_capacity(request.streams.len());
    for id in &request.streams {
        let entry = owned(&state, &id.to_string(), &caller, Need::Key)
            .await
            .map_err(reject)?;
        if !streams.contains(&entry.id) {
            streams.push(entry.id);
        }
    }
    let issued = issue(&state, &caller, streams, &request.scope, request.ttl_s)?;
    Ok(json(StatusCode::CREATED, &issued))
}

/// Signs a token for `streams` (the caller's) with `scope`, for `ttl_s` or the default.
fn issue(
    state: &AppState,
    caller: &Principal,
    streams: Vec<uuid::Uuid>,
    scope: &[Scope],
    ttl_s: Option<u64>,
) -> Result<TokenIssued, Rejection> {
    if scope.is_empty() {
        return Err(reject(ApiError::InvalidInput(
            "token request: `scope` is empty; give `subscribe`, `send` or both".into(),
        )));
    }
    let max = state.config().limits.tokens.max_token_ttl_s;
    let ttl_s = ttl_s.unwrap_or(DEFAULT_TOKEN_TTL_S.min(max));
    if ttl_s == 0 || ttl_s > max {
        return Err(reject(ApiError::InvalidInput(format!(
            "ttl_s: {ttl_s} is not between 1 and {max} (limits.max_token_ttl_s)"
        ))));
    }
    let grant = Grant {
        streams,
        send: scope.contains(&Scope::Send),
        subscribe: scope.contains(&Scope::Subscribe),
        expires: SystemTime::now() + Duration::from_secs(ttl_s),
    };
    let token = state
        .credentials()
        .issue(&caller.name, &grant)
        .map_err(reject)?;
    let expires_at = grant
        .expires
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    tracing::info!(streams = grant.streams.len(), scope = ?grant.scopes(), ttl_s, "stream token issued");
    Ok(TokenIssued {
        token,
        stream_id: None,
        scope: grant.scopes(),
        streams: grant.streams,
        expires_at,
    })
}

/// Lifetime of a token whose request names none.
const DEFAULT_TOKEN_TTL_S: u64 = 3600;

/// Results, pushed as they are produced.
///
/// A WebSocket (upgrade) or, with `Accept: text/event-stream`, Server-Sent Events. The
/// frames, close codes and events are described in `/api/asyncapi.json`. The live
/// subscription is taken before `101` is answered, so every result produced after the
/// client saw the upgrade reaches it.
#[utoipa::path(
    get, path = routes::RESULTS.path, tag = "streams", operation_id = "results",
    params(
        ("id" = String, Path, description = ID),
        ("from" = Option<String>, Query, description = "`latest` (default), `earliest`, a cursor, or `-N` for the last N results."),
        ("on_lag" = Option<String>, Query, description = "`close` (default) or `skip`."),
        ("until" = Option<String>, Query, description = "`now`: only what exists at connect, then close."),
        ("send" = Option<String>, Query, description = "WebSocket: `frames`: each message sent is `{\"data\": RECORD, \"idempotency_key\": KEY}` (the key optional), so a record sent again with its key is stored once; otherwise each message is a record."),
        ("Last-Event-ID" = Option<String>, Header, description = "SSE: resume after this cursor (wins over `from`)."),
    ),
    responses(
        (status = 101, description = "WebSocket: the results socket."),
        (status = 200, description = "Server-Sent Events: one event per frame.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_input`: a bad parameter, or neither a WebSocket upgrade nor `Accept: text/event-stream`.", body = ErrorBody),
        (status = 403, description = "`forbidden` (a token without `subscribe`) or `origin_not_allowed`.", body = ErrorBody),
        (status = 404, description = "`stream_not_found`.", body = ErrorBody),
        (status = 429, description = "`rate_limited` or `too_many_subscribers`.", body = ErrorBody),
        (status = 503, description = "`not_ready`, or `broker_unavailable` when the stream's results partition cannot be read.", body = ErrorBody),
    )
)]
pub async fn subscribe(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
    upgrade: Upgrade,
    protocols: Option<String>,
    query: HashMap<String, String>,
) -> Result<Response, Rejection> {
    let args = SubscribeArgs::from_query(&query, None).map_err(reject)?;
    let framed = match query.get("send").map(String::as_str) {
        None => false,
        Some("frames") => true,
        Some(other) => {
            return Err(reject(ApiError::InvalidInput(format!(
                "send: `{other}` is not `frames` (records in frames with an idempotency key)"
            ))))
        }
    };
    let sub = subscriber(&id, &caller, &state, args)
        .await
        .map_err(reject)?;
    let max_message = state.config().limits.websocket.ws_max_message_bytes;
    let protocol = auth::ws_response_protocol(protocols.as_deref());
    Ok(upgrade.respond(protocol, max_message, move |socket| {
        ws::session(socket, state, sub, framed)
    }))
}

/// One WebSocket for many streams.
///
/// After the upgrade the client sends `subscribe`, `unsubscribe` and `send` frames, each
/// naming a `stream_id`; every frame the daemon sends names its stream. The frames are
/// described in `/api/asyncapi.json`. Opened with a key (its streams) or a token (the
/// streams it names, within its scope).
#[utoipa::path(
    get, path = routes::CONNECT.path, tag = "streams", operation_id = "connect",
    responses(
        (status = 101, description = "WebSocket: the multiplexed socket."),
        (status = 400, description = "`invalid_input`: not a WebSocket upgrade.", body = ErrorBody),
        (status = 403, description = "`origin_not_allowed`.", body = ErrorBody),
    )
)]
pub async fn connect(
    caller: Principal,
    state: Arc<AppState>,
    upgrade: Upgrade,
    protocols: Option<String>,
    _query: HashMap<String, String>,
) -> Result<Response, Rejection> {
    let max_message = state.config().limits.websocket.ws_max_message_bytes;
    let protocol = auth::ws_response_protocol(protocols.as_deref());
    Ok(upgrade.respond(protocol, max_message, move |socket| {
        connect::session(socket, state, caller)
    }))
}

/// Several streams' results as one Server-Sent Events response.
///
/// Each event is a frame of one stream (as on `/api/stream/{id}/results`), naming it. `id:`
/// lists every stream's last cursor in the order of the `stream_id` parameters (`-` for none
/// yet), so the `Last-Event-ID` an `EventSource` sends when it reconnects resumes each
/// stream right after its own. A stream that cannot be followed gets a `refused` event.
#[utoipa::path(
    get, path = routes::EVENTS.path, tag = "streams", operation_id = "events",
    params(
        ("stream_id" = Vec<uuid::Uuid>, Query, description = "A stream to follow; repeat it for each (up to `limits.max_subscriptions_per_connection`)."),
        ("from" = Option<String>, Query, description = "Where every stream starts: `latest` (default), `earliest`, a cursor, or `-N`."),
        ("cursor" = Option<Vec<String>>, Query, description = "`STREAM_ID:CURSOR`: where that stream starts instead."),
        ("on_lag" = Option<String>, Query, description = "`close` (default) or `skip`."),
        ("Last-Event-ID" = Option<String>, Header, description = "The last `id:` received: resume every stream after its cursor."),
    ),
    responses(
        (status = 200, description = "Server-Sent Events.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_input`: no stream_id, too many, a bad cursor or Last-Event-ID.", body = ErrorBody),
        (status = 403, description = "`origin_not_allowed`.", body = ErrorBody),
    )
)]
pub async fn events_of_streams(
    caller: Principal,
    state: Arc<AppState>,
    query: Vec<(String, String)>,
    last_event_id: Option<String>,
) -> Result<Response, Rejection> {
    let max = state
        .config()
        .limits
        .delivery
        .max_subscriptions_per_connection;
    let streams = events::streams(&query, last_event_id.as_deref(), max).map_err(reject)?;
    Ok(events::respond(state, caller, streams))
}

/// `GET /api/stream/{id}/results` with `Accept: text/event-stream`: the same feed as
/// Server-Sent Events (see `sse.rs`; described with [`subscribe`]).
pub async fn events(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
    query: HashMap<String, String>,
    last_event_id: Option<String>,
) -> Result<Response, Rejection> {
    // Answered here, not rejected: a rejection would fall through to the WebSocket route,
    // whose missing-upgrade error would hide this one.
    let args = match SubscribeArgs::from_query(&query, last_event_id.as_deref()) {
        Ok(args) => args,
        Err(e) => return Ok(e.into_response()),
    };
    let sub = match subscriber(&id, &caller, &state, args).await {
        Ok(sub) => sub,
        Err(e) => return Ok(e.into_response()),
    };
    match sub.feed.open(&state, sub.entry.id).await {
        Ok(feed) => Ok(sse::respond(feed.ending_with(sub.ends), sub.seat)),
        Err(e) => Ok(e.into_response()),
    }
}

/// The caller's streams (all streams for an admin key), newest first.
#[utoipa::path(
    get, path = routes::LIST.path, tag = "streams", operation_id = "list",
    responses(
        (status = 200, description = "The streams.", body = StreamList),
        (status = 403, description = "`forbidden`: a token cannot list.", body = ErrorBody),
    )
)]
pub async fn list(caller: Principal, state: Arc<AppState>) -> Result<Response, Rejection> {
    let streams = state
        .registry
        .list(&caller)
        .iter()
        .map(|e| e.view())
        .collect();
    Ok(json(StatusCode::OK, &StreamList { streams }))
}

/// One stream: owner, processor, state and counters.
#[utoipa::path(
    get, path = routes::DESCRIBE.path, tag = "streams", operation_id = "describe",
    params(("id" = String, Path, description = ID)),
    responses(
        (status = 200, description = "The stream.", body = StreamView),
        (status = 404, description = "`stream_not_found`.", body = ErrorBody),
    )
)]
pub async fn describe(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let entry = owned(&state, &id, &caller, Need::Any)
        .await
        .map_err(reject)?;
    Ok(json(StatusCode::OK, &entry.view()))
}

/// End a stream: later sends get 409; subscribers get every result, then `end`.
///
/// Marks the stream ended in the registry, then writes an end marker into the input topic
/// behind the stream's records. Ending an ended stream again answers the same.
#[utoipa::path(
    delete, path = routes::END.path, tag = "streams", operation_id = "end",
    params(("id" = String, Path, description = ID)),
    responses(
        (status = 200, description = "The stream, ended (also when it already was).", body = StreamView),
        (status = 403, description = "`forbidden`: a token cannot end a stream.", body = ErrorBody),
        (status = 404, description = "`stream_not_found`.", body = ErrorBody),
        (status = 503, description = "`broker_unavailable` or `not_ready`.", body = ErrorBody),
    )
)]
pub async fn end(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let entry = owned(&state, &id, &caller, Need::Key)
        .await
        .map_err(reject)?;
    state.ingest.end(&entry).await.map_err(reject)?;
    tracing::info!(stream_id = %entry.id, "stream ended");
    Ok(json(StatusCode::OK, &entry.view()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_body() {
        let config = config::Config::default();
        let named = schema::Named::new();
        let parse = |body: &[u8]| parse_start_body(body, &config, &named);
        assert_eq!(parse(b"").unwrap().0, ProcessorSpec::Identity);
        assert_eq!(
            parse(br#"{"processor":"uppercase"}"#).unwrap().0,
            ProcessorSpec::Uppercase
        );
        let (_, schemas) = parse(br#"{"schema":{"type":"number"}}"#).unwrap();
        assert_eq!(schemas.input, Some(serde_json::json!({"type": "number"})));
        assert!(parse(br#"{"schema":{"type":"nope"}}"#)
            .unwrap_err()
            .to_string()
            .starts_with("schema:"));
        assert!(parse(br#"{"procesor":"uppercase"}"#)
            .unwrap_err()
            .to_string()
            .contains("procesor"));
    }
}
