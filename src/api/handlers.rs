//! Request handlers: each takes the caller and the shared state, asks one component to do
//! one thing, and answers with a wire body or an `ApiError` rejection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

use super::access::owned;
use super::subscriber::subscriber;
use super::upgrade::Upgrade;
use super::{sse, ws, AppState};
use crate::auth::{self, Need, Principal};
use crate::config;
use crate::error::ApiError;
use crate::registry::RegistryError;
use crate::tokens::Grant;
use crate::wire::{ProcessorSpec, Scope, Started, Status, StreamList, TokenIssued, TokenRequest};

use super::json;

/// A registry record the broker did not store, as the client sees it.
fn not_stored(e: RegistryError) -> ApiError {
    ApiError::BrokerUnavailable {
        message: e.to_string(),
        acknowledged: 0,
    }
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
    let missing = if !state.broker.reachable().await {
        format!("the broker at {} cannot be reached", state.brokers)
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

/// `POST /api/stream/start`: optional body `{"processor": "<name>" | {"type": ...}}`.
pub async fn start(
    caller: Principal,
    state: Arc<AppState>,
    body: Bytes,
) -> Result<Response, Rejection> {
    // Compiling a filter takes a thread of its own (see `processing::jq`): off the runtime.
    let limits = state.processing.clone();
    let spec = tokio::task::spawn_blocking(move || parse_start_body(&body, &limits))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let limit = state.limits.max_streams_per_key;
    if state.registry.open_streams_of(&caller.name) >= limit {
        return Err(ApiError::TooManyStreams { limit }.into());
    }
    let entry = state
        .registry
        .create(&caller, spec)
        .await
        .map_err(not_stored)?;
    tracing::info!(stream_id = %entry.id, owner = %caller.name, "stream started");
    Ok(json(
        StatusCode::CREATED,
        &Started {
            stream_id: entry.id,
            processor: entry.processor(),
        },
    ))
}

fn parse_start_body(body: &[u8], limits: &config::Processing) -> Result<ProcessorSpec, ApiError> {
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
        Some(p) => {
            ProcessorSpec::parse(&p, limits).map_err(|e| ApiError::InvalidInput(e.to_string()))?
        }
        None => ProcessorSpec::default(),
    };
    if let Some(unknown) = fields.keys().next() {
        return Err(ApiError::InvalidInput(format!(
            "start body: unknown field `{unknown}`; expected `processor`"
        )));
    }
    Ok(spec)
}

/// `POST /api/stream/{id}/send`: 202 once the broker acknowledged every record.
pub async fn send(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
    content_type: Option<String>,
    body: Bytes,
) -> Result<Response, Rejection> {
    let entry = owned(&state, &id, &caller, Need::Scope(Scope::Send)).await?;
    let accepted = state
        .ingest
        .append(&entry, &body, content_type.as_deref())
        .await?;
    Ok(json(StatusCode::ACCEPTED, &accepted))
}

/// `POST /api/stream/{id}/tokens`: a scoped token for the stream, signed with the owner's
/// key (see `tokens`). Only the key may issue one.
pub async fn tokens(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
    body: Bytes,
) -> Result<Response, Rejection> {
    let entry = owned(&state, &id, &caller, Need::Key).await?;
    let request: TokenRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::InvalidInput(format!(
            "token request: {e}; expected {{\"scope\": [\"subscribe\", \"send\"], \"ttl_s\": 3600}}"
        ))
    })?;
    if request.scope.is_empty() {
        return Err(ApiError::InvalidInput(
            "token request: `scope` is empty; give `subscribe`, `send` or both".into(),
        )
        .into());
    }
    let max = state.limits.max_token_ttl_s;
    let ttl_s = request.ttl_s.unwrap_or(DEFAULT_TOKEN_TTL_S.min(max));
    if ttl_s == 0 || ttl_s > max {
        return Err(ApiError::InvalidInput(format!(
            "ttl_s: {ttl_s} is not between 1 and {max} (limits.max_token_ttl_s)"
        ))
        .into());
    }
    let grant = Grant {
        stream: entry.id,
        send: request.scope.contains(&Scope::Send),
        subscribe: request.scope.contains(&Scope::Subscribe),
        expires: SystemTime::now() + Duration::from_secs(ttl_s),
    };
    let token = state.keys.issue(&caller.name, &grant)?;
    let expires_at = grant
        .expires
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    tracing::info!(stream_id = %entry.id, scope = ?grant.scopes(), ttl_s, "stream token issued");
    Ok(json(
        StatusCode::CREATED,
        &TokenIssued {
            token,
            stream_id: entry.id,
            scope: grant.scopes(),
            expires_at,
        },
    ))
}

/// Lifetime of a token whose request names none.
const DEFAULT_TOKEN_TTL_S: u64 = 3600;

/// `GET /api/stream/{id}/results`: upgrade to the bi-directional WebSocket. The live
/// subscription is taken before `101` is answered, so every result produced after the
/// client saw the upgrade reaches it.
pub async fn subscribe(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
    upgrade: Upgrade,
    protocols: Option<String>,
    query: HashMap<String, String>,
) -> Result<Response, Rejection> {
    let sub = subscriber(&id, &caller, &state, &query, None).await?;
    let max_message = state.limits.ws_max_message_bytes;
    let protocol = auth::ws_response_protocol(protocols.as_deref());
    Ok(upgrade.respond(protocol, max_message, move |socket| {
        ws::session(socket, state, sub)
    }))
}

/// `GET /api/stream/{id}/results` with `Accept: text/event-stream`: the same feed as
/// Server-Sent Events (see `sse.rs`).
pub async fn events(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
    query: HashMap<String, String>,
    last_event_id: Option<String>,
) -> Result<Response, Rejection> {
    // Answered here, not rejected: a rejection would fall through to the WebSocket route,
    // whose missing-upgrade error would hide this one.
    let sub = match subscriber(&id, &caller, &state, &query, last_event_id.as_deref()).await {
        Ok(sub) => sub,
        Err(e) => return Ok(e.into_response()),
    };
    match sub.feed.open(&state, sub.entry.id).await {
        Ok(feed) => Ok(sse::respond(feed, sub.seat)),
        Err(e) => Ok(e.into_response()),
    }
}

/// `GET /api/streams`: the caller's streams (all of them for an admin key).
pub async fn list(caller: Principal, state: Arc<AppState>) -> Result<Response, Rejection> {
    let streams = state
        .registry
        .list(&caller)
        .iter()
        .map(|e| e.view())
        .collect();
    Ok(json(StatusCode::OK, &StreamList { streams }))
}

/// `GET /api/stream/{id}`.
pub async fn describe(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let entry = owned(&state, &id, &caller, Need::Any).await?;
    Ok(json(StatusCode::OK, &entry.view()))
}

/// `DELETE /api/stream/{id}`: marks the stream ended in the registry, then writes an end
/// marker into the input topic behind the stream's records, so subscribers receive every
/// result and then an `end` frame. Ending an ended stream again answers the same.
pub async fn end(
    id: String,
    caller: Principal,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let entry = owned(&state, &id, &caller, Need::Key).await?;
    state.ingest.end(&entry).await?;
    tracing::info!(stream_id = %entry.id, "stream ended");
    Ok(json(StatusCode::OK, &entry.view()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_body() {
        let limits = config::Processing::default();
        let parse = |body: &[u8]| parse_start_body(body, &limits);
        assert_eq!(parse(b"").unwrap(), ProcessorSpec::Identity);
        assert_eq!(
            parse(br#"{"processor":"uppercase"}"#).unwrap(),
            ProcessorSpec::Uppercase
        );
        assert!(parse(br#"{"procesor":"uppercase"}"#)
            .unwrap_err()
            .to_string()
            .contains("procesor"));
    }
}
