//! The HTTP and WebSocket API, the only part of the daemon that speaks HTTP. Routes are
//! declared once in `routes.rs` and assembled here with the filters every call shares:
//! per-IP and per-key quotas, authentication, body limits and CORS. Handlers
//! (`handlers.rs`) call into `ingest`, `registry` and `delivery` after the one access check
//! (`access.rs`); a results subscriber is opened once (`subscriber.rs`) and written out by
//! the WebSocket session (`ws.rs`) or the Server-Sent Events response (`sse.rs`); the accept
//! loop (`serve.rs`) writes the request log; the stats of `streamctl top` are `stats.rs`; the
//! console page is `console.rs`; the API's descriptions are `openapi.rs` and `asyncapi.rs`;
//! every error becomes a status and a JSON body in `error.rs`.

mod access;
mod asyncapi;
mod connect;
mod console;
mod error;
mod events;
mod handlers;
mod openapi;
mod routes;
mod serve;
mod sse;
mod stalled;
mod state;
mod stats;
mod subscriber;
mod tls;
mod upgrade;
mod ws;

#[cfg(test)]
mod tests;

pub use error::{status_of, ApiError};
pub use serve::{serve, App, Client};
pub use state::{AppState, Reloadable};
pub use tls::TlsEdge;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::TryStreamExt;
use warp::filters::path::FullPath;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::{Need, Presented, Principal, ACCESS_TOKEN_PARAM, API_KEY_HEADER};
use crate::metrics::Metrics;
use crate::quota::{Limited, Limiter};
use crate::telemetry::{TraceContext, TRACEPARENT, TRACESTATE};
use error::{recover, reject};
use routes::{on, on_stream};

/// A complete set of routes, as the accept loop serves them.
pub type Routes = BoxedFilter<(Response,)>;

/// What is served while start-up waits for the broker: `/healthz` answers, everything else
/// is 503 `not_ready` with Retry-After.
pub fn starting() -> Routes {
    let not_ready = warp::any().map(|| {
        ApiError::NotReady("starting: waiting for the broker (see the daemon's log)".into())
            .into_response()
    });
    on(&routes::HEALTHZ)
        .map(|| handlers::healthz("starting"))
        .or(not_ready)
        .unify()
        .boxed()
}

/// Every route of the daemon, with errors mapped and requests logged.
pub fn routes(state: Arc<AppState>) -> Routes {
    let healthz = on(&routes::HEALTHZ).map(|| handlers::healthz("ok"));
    let readyz = on(&routes::READYZ)
        .and(public_quota(&state))
        .and(with_state(&state))
        .then(handlers::ready);
    let metrics = on(&routes::METRICS)
        .and(public_quota(&state))
        .and(with_state(&state))
        .then(handlers::metrics);
    let console = console::routes().and(public_quota(&state));
    let docs = api_documents().and(public_quota(&state));
    // Tried last: a path no route knows still costs the client a token, so probing is cheap
    // for the daemon and throttled for the prober; a known path with another method is 405.
    let unknown = public_quota(&state)
        .and(warp::method())
        .and(warp::path::full())
        .and_then(|method, path: FullPath| async move {
            let known = routes::label(&method, path.as_str()).0.is_some();
            Err::<Response, _>(match routes::allowed_methods(path.as_str()) {
                Some(_) if !known => reject(ApiError::MethodNotAllowed),
                // No such path, or a route of it refused the request and says why.
                _ => warp::reject::not_found(),
            })
        });

    // Path and method first, so only the one matching route charges the quotas and checks
    // the key.
    let caller = rate_limit_ip(&state).and(authenticate(&state)).boxed();
    // What only the key may do: a stream token gets 403.
    let key_holder = caller
        .clone()
        .and_then(|caller: Principal| async move {
            caller.may(None, Need::Key).map(|_| caller).map_err(reject)
        })
        .boxed();
    let start = on(&routes::START)
        .and(key_holder.clone())
        .and(with_state(&state))
        .and(body(&state))
        .and_then(handlers::start);
    let send = on_stream(&routes::SEND)
        .and(caller.clone())
        .and(with_state(&state))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(trace_context())
        .and(body(&state))
        .and_then(handlers::send);
    let tokens = on_stream(&routes::TOKENS)
        .and(caller.clone())
        .and(with_state(&state))
        .and(body(&state))
        .and_then(handlers::tokens);
    // The same route as Server-Sent Events, when the client asks for them (tried first; the
    // Accept check comes before the quotas, so a WebSocket request is charged once).
    let events = on_stream(&routes::RESULTS)
        .and(accepts_event_stream())
        .and(caller.clone())
        .and(with_state(&state))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("last-event-id"))
        .and_then(handlers::events);
    let results = on_stream(&routes::RESULTS)
        .and(caller.clone())
        .and(with_state(&state))
        .and(websocket_request())
        .and_then(handlers::subscribe);
    let tokens_for_streams = on(&routes::TOKENS_FOR_STREAMS)
        .and(key_holder.clone())
        .and(with_state(&state))
        .and(body(&state))
        .and_then(handlers::tokens_for_streams);
    let connect = on(&routes::CONNECT)
        .and(caller.clone())
        .and(with_state(&state))
        .and(websocket_request())
        .and_then(handlers::connect);
    let events_of_streams = on(&routes::EVENTS)
        .and(caller.clone())
        .and(with_state(&state))
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::header::optional::<String>("last-event-id"))
        .and_then(handlers::events_of_streams);
    let list = on(&routes::LIST)
        .and(key_holder.clone())
        .and(with_state(&state))
        .and_then(handlers::list);
    let stats = on(&routes::STATS)
        .and(key_holder.clone())
        .and(with_state(&state))
        .and_then(stats::once);
    let stats_live = on(&routes::STATS_LIVE)
        .and(key_holder)
        .and(with_state(&state))
        .and(websocket_request())
        .and_then(stats::live);
    let describe = on_stream(&routes::DESCRIBE)
        .and(caller.clone())
        .and(with_state(&state))
        .and_then(handlers::describe);
    let end = on_stream(&routes::END)
        .and(caller)
        .and(with_state(&state))
        .and_then(handlers::end);
    let api = start
        .or(send)
        .unify()
        .or(tokens)
        .unify()
        .or(tokens_for_streams)
        .unify()
        .or(connect)
        .unify()
        .or(events_of_streams)
        .unify()
        .or(events)
        .unify()
        .or(results)
        .unify()
        .or(list)
        .unify()
        .or(stats)
        .unify()
        .or(stats_live)
        .unify()
        .or(describe)
        .unify()
        .or(end)
        .unify();

    let api = with_cors(&state.config().http.allowed_origins, api.boxed());
    healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(console)
        .unify()
        .or(docs)
        .unify()
        .or(api)
        .unify()
        .or(unknown)
        .unify()
        .recover(recover)
        .unify()
        .boxed()
}

/// The API's own descriptions, without a key: `/api/openapi.json` and `/api/asyncapi.json`
/// (built and serialized once; warp clones a route's closure for every request that reaches
/// it, so the closure holds only an `Arc`).
fn api_documents() -> BoxedFilter<(Response,)> {
    let openapi = openapi::document();
    let text = |doc: &serde_json::Value| -> Arc<str> {
        (serde_json::to_string(doc).unwrap_or_default() + "\n").into()
    };
    let (asyncapi, openapi) = (text(&asyncapi::document(&openapi)), text(&openapi));
    let openapi = on(&routes::OPENAPI).map(move || openapi_json(&openapi));
    let asyncapi = on(&routes::ASYNCAPI).map(move || asyncapi_json(&asyncapi));
    openapi.or(asyncapi).unify().boxed()
}

/// This document.
#[utoipa::path(
    get, path = routes::OPENAPI.path, tag = "operations", operation_id = "openapi", security(()),
    responses((status = 200, description = "OpenAPI 3.1.", content_type = "application/json", body = Object))
)]
fn openapi_json(text: &str) -> Response {
    warp::reply::with_header(text.to_string(), "content-type", "application/json").into_response()
}

/// The results channel (WebSocket and Server-Sent Events) as AsyncAPI 3.
#[utoipa::path(
    get, path = routes::ASYNCAPI.path, tag = "operations", operation_id = "asyncapi", security(()),
    responses((status = 200, description = "AsyncAPI 3.0.", content_type = "application/json", body = Object))
)]
fn asyncapi_json(text: &str) -> Response {
    openapi_json(text)
}

/// A WebSocket handshake: the upgrade, the offered subprotocols (to answer the one we
/// speak) and the query parameters.
fn websocket_request() -> impl Filter<
    Extract = (upgrade::Upgrade, Option<String>, HashMap<String, String>),
    Error = Rejection,
> + Clone {
    upgrade::websocket()
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and(warp::query::<HashMap<String, String>>())
}

/// The API routes with CORS for `origins` (`http.allowed_origins`): preflights answered, and
/// a request from any other origin refused (403 `origin_not_allowed`, mapped in `error.rs`).
/// No origins: the routes as they are.
fn with_cors(origins: &[String], api: BoxedFilter<(Response,)>) -> BoxedFilter<(Response,)> {
    if origins.is_empty() {
        return api;
    }
    let cors = warp::cors()
        .allow_origins(origins.iter().map(String::as_str))
        .allow_methods(["GET", "POST", "DELETE"])
        .allow_headers([
            API_KEY_HEADER,
            "content-type",
            "last-event-id",
            "authorization",
            "idempotency-key",
            TRACEPARENT,
            TRACESTATE,
        ])
        .max_age(600);
    api.with(cors).map(Reply::into_response).boxed()
}

/// The W3C trace context a request came with, if any (see `telemetry`). A header that is
/// not even text is ignored like any other malformed context, never refused.
fn trace_context(
) -> impl Filter<Extract = (Option<TraceContext>,), Error = std::convert::Infallible> + Clone {
    let header = |name: &'static str| {
        warp::header::value(name)
            .map(|v: warp::http::HeaderValue| v.to_str().ok().map(str::to_string))
            .or(warp::any().map(|| None))
            .unify()
    };
    header(TRACEPARENT).and(header(TRACESTATE)).map(
        |parent: Option<String>, state: Option<String>| {
            TraceContext::from_headers(parent.as_deref(), state.as_deref())
        },
    )
}

/// Passes requests whose `Accept` asks for `text/event-stream`.
fn accepts_event_stream() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("accept")
        .and_then(|accept: Option<String>| async move {
            match accept {
                Some(a) if a.contains("text/event-stream") => Ok(()),
                _ => Err(warp::reject::not_found()),
            }
        })
        .untuple_one()
}

fn with_state(
    state: &Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = std::convert::Infallible> + Clone {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// The client's IP address (`0.0.0.0` for requests that came on no connection, in tests).
fn client_ip() -> impl Filter<Extract = (IpAddr,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<Client>()
        .map(|c: Option<Client>| c.map_or(IpAddr::from([0, 0, 0, 0]), |c| c.addr.ip()))
}

/// `rate_limits.per_ip`: every `/api` call.
fn rate_limit_ip(state: &Arc<AppState>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    ip_quota(state, Limiter::check_ip)
}

/// `rate_limits.per_ip_public`: for what needs no key.
fn public_quota(state: &Arc<AppState>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    ip_quota(state, Limiter::check_public)
}

fn ip_quota(
    state: &Arc<AppState>,
    check: fn(&Limiter, IpAddr) -> Result<(), Limited>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let state = state.clone();
    client_ip()
        .and_then(move |ip| {
            let state = state.clone();
            async move { check(&state.limiter(), ip).map_err(reject) }
        })
        .untuple_one()
}

/// The caller, from a key or a stream token wherever the request carries it (see `auth`);
/// then the key's quota (a token counts against its key's).
fn authenticate(
    state: &Arc<AppState>,
) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    let state = state.clone();
    warp::header::optional::<String>(API_KEY_HEADER)
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<Client>())
        .and_then(
            move |key: Option<String>,
                  authorization: Option<String>,
                  protocols: Option<String>,
                  query: HashMap<String, String>,
                  client: Option<Client>| {
                let state = state.clone();
                async move {
                    let presented = Presented {
                        api_key: key.as_deref(),
                        authorization: authorization.as_deref(),
                        ws_protocols: protocols.as_deref(),
                        access_token: query.get(ACCESS_TOKEN_PARAM).map(String::as_str),
                        cert_subject: client.as_ref().and_then(Client::cert_subject),
                    };
                    let credentials = state.credentials();
                    let caller = credentials.identify(presented).await.map_err(reject)?;
                    if let Some(client) = client {
                        client.authenticated_as(&caller.name);
                    }
                    state.limiter().check_key(&caller.name).map_err(reject)?;
                    Ok::<_, Rejection>(caller)
                }
            },
        )
}

/// The request body, refused with 413 past `limits.max_body_bytes` whether or not the client
/// sent a Content-Length (chunked uploads are counted as they arrive), and with 408 when it
/// takes longer than `limits.body_read_timeout_ms` to arrive.
fn body(state: &Arc<AppState>) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    let limits = state.config().limits.server.clone();
    let limit = limits.max_body_bytes;
    let timeout = std::time::Duration::from_millis(limits.body_read_timeout_ms);
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |length, stream| async move {
            tokio::time::timeout(timeout, collect_limited(length, stream, limit))
                .await
                .unwrap_or_else(|_| Err(reject(ApiError::BodyTimeout { timeout })))
        })
}

async fn collect_limited<S, B>(
    length: Option<u64>,
    stream: S,
    limit: usize,
) -> Result<Bytes, Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if length.is_some_and(|l| l > limit as u64) {
        return Err(reject(ApiError::TooLarge { limit }));
    }
    let mut stream = std::pin::pin!(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| reject(ApiError::InvalidInput(format!("cannot read body: {e}"))))?
    {
        if buf.len() + chunk.remaining() > limit {
            return Err(reject(ApiError::TooLarge { limit }));
        }
        buf.put(chunk);
    }
    Ok(buf.freeze())
}

/// One line per request, written by the accept loop when the response is ready: who (client
/// address, key name, never the key), what (method, path without its query, the route it
/// matched and the stream id in it), the status and the latency in ms to 3 decimals. Also
/// counts it by method and status; a made-up method counts as `other`, so it cannot become a
/// new series.
pub(super) fn log_request(metrics: &Metrics, request: &RequestLine, status: u16, client: &Client) {
    let method = match request.method.as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m,
        _ => "other",
    };
    metrics
        .http
        .requests
        .with_label_values(&[method, &status.to_string()])
        .inc();
    let path = request.path.as_str();
    let (route, stream_id) = routes::label(&request.method, path);
    let ms = request.started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: "streamgate::request",
        client = %client.addr,
        key = client.key_name(),
        method,
        path,
        route,
        status,
        latency_ms = (ms * 1000.0).round() / 1000.0,
        stream_id,
        "request"
    );
}

/// What the request log needs of a request, taken before it is handled.
pub(super) struct RequestLine {
    pub method: warp::http::Method,
    pub path: String,
    pub started: std::time::Instant,
}
