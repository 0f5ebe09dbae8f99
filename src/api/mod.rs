//! The HTTP and WebSocket API as warp filters: routing, per-IP and per-key quotas,
//! authentication, body limits and CORS. A thin shell: handlers (`handlers.rs`) call into
//! `ingest`, `registry` and `delivery`, after the one access check (`access.rs`); a results
//! subscriber is opened once (`subscriber.rs`) and written out by the WebSocket session
//! (`ws.rs`) or the Server-Sent Events response (`sse.rs`); the accept loop (`serve.rs`)
//! writes the request log; the stats of `streamctl top` are in `stats.rs`; the console page
//! is `console.rs`; the API's descriptions are `openapi.rs` and `asyncapi.rs`; every rejection
//! is turned into JSON by `error::recover`.

mod access;
mod asyncapi;
mod console;
mod handlers;
pub mod openapi;
mod serve;
mod sse;
mod stalled;
mod state;
mod stats;
mod subscriber;
mod upgrade;
mod ws;

#[cfg(test)]
mod tests;

pub use serve::{serve, App, Client};
pub use state::AppState;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::TryStreamExt;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::{Need, Presented, Principal, ACCESS_TOKEN_PARAM, API_KEY_HEADER};
use crate::error::{recover, ApiError};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::wire::Status;

/// A JSON response: the body ends with a newline, so `curl` output ends its line.
pub fn json(status: warp::http::StatusCode, body: &impl serde::Serialize) -> Response {
    let mut text = serde_json::to_string(body).unwrap_or_else(|_| "null".into());
    text.push('\n');
    warp::reply::with_status(
        warp::reply::with_header(text, "content-type", "application/json"),
        status,
    )
    .into_response()
}

/// A complete set of routes, as the accept loop serves them.
pub type Routes = BoxedFilter<(Response,)>;

/// `GET /healthz`: 200 with `status` whenever the process runs; never limited.
fn healthz(status: &'static str) -> BoxedFilter<(Response,)> {
    warp::path!("healthz")
        .and(warp::get())
        .map(move || {
            json(
                warp::http::StatusCode::OK,
                &Status {
                    status: status.into(),
                    version: Some(env!("CARGO_PKG_VERSION").into()),
                },
            )
        })
        .boxed()
}

/// What is served while start-up waits for the broker: `/healthz` answers, everything else
/// is 503 `not_ready` with Retry-After.
pub fn starting() -> Routes {
    let not_ready = warp::any().map(|| {
        ApiError::NotReady("starting: waiting for the broker (see the daemon's log)".into())
            .into_response()
    });
    healthz("starting").or(not_ready).unify().boxed()
}

/// Every route of the daemon, with errors mapped and requests logged.
pub fn routes(state: Arc<AppState>) -> Routes {
    let healthz = healthz("ok");
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(public_quota(&state))
        .and(with_state(&state))
        .then(handlers::ready);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(public_quota(&state))
        .and(with_state(&state))
        .then(handlers::metrics);
    let console = console::routes().and(public_quota(&state));
    let docs = api_documents().and(public_quota(&state));
    // Tried last: a path no route knows still costs the client a token, so probing is cheap
    // for the daemon and throttled for the prober.
    let unknown = public_quota(&state)
        .and_then(|| async { Err::<warp::reply::Response, _>(warp::reject::not_found()) });

    // Path and method first, so only the one matching route charges the quotas and checks
    // the key.
    let caller = rate_limit_ip(&state).and(authenticate(&state)).boxed();
    // What only the key may do: a stream token gets 403.
    let key_holder = caller
        .clone()
        .and_then(|caller: Principal| async move {
            caller
                .may(None, Need::Key)
                .map(|_| caller)
                .map_err(warp::reject::custom)
        })
        .boxed();
    let start = warp::path!("api" / "stream" / "start")
        .and(warp::post())
        .and(key_holder.clone())
        .and(with_state(&state))
        .and(body(&state))
        .and_then(handlers::start);
    let send = warp::path!("api" / "stream" / String / "send")
        .and(warp::post())
        .and(caller.clone())
        .and(with_state(&state))
        .and(warp::header::optional::<String>("content-type"))
        .and(body(&state))
        .and_then(handlers::send);
    let tokens = warp::path!("api" / "stream" / String / "tokens")
        .and(warp::post())
        .and(caller.clone())
        .and(with_state(&state))
        .and(body(&state))
        .and_then(handlers::tokens);
    // The same path as Server-Sent Events, when the client asks for them (tried first; the
    // Accept check comes before the quotas, so a WebSocket request is charged once).
    let events = warp::path!("api" / "stream" / String / "results")
        .and(warp::get())
        .and(accepts_event_stream())
        .and(caller.clone())
        .and(with_state(&state))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("last-event-id"))
        .and_then(handlers::events);
    let results = warp::path!("api" / "stream" / String / "results")
        .and(warp::get())
        .and(caller.clone())
        .and(with_state(&state))
        .and(websocket_request())
        .and_then(handlers::subscribe);
    let list = warp::path!("api" / "streams")
        .and(warp::get())
        .and(key_holder.clone())
        .and(with_state(&state))
        .and_then(handlers::list);
    let stats = warp::path!("api" / "stats")
        .and(warp::get())
        .and(key_holder.clone())
        .and(with_state(&state))
        .and_then(stats::once);
    let stats_live = warp::path!("api" / "stats" / "live")
        .and(warp::get())
        .and(key_holder)
        .and(with_state(&state))
        .and(websocket_request())
        .and_then(stats::live);
    let describe = warp::path!("api" / "stream" / String)
        .and(warp::get())
        .and(caller.clone())
        .and(with_state(&state))
        .and_then(handlers::describe);
    let end = warp::path!("api" / "stream" / String)
        .and(warp::delete())
        .and(caller)
        .and(with_state(&state))
        .and_then(handlers::end);
    let api = start
        .or(send)
        .unify()
        .or(tokens)
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

    let api = with_cors(&state.allowed_origins, api.boxed());
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

/// The methods `path` is routed for, as a 405's `Allow` header says (the route table above,
/// by path shape).
pub(super) fn allowed_methods(path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "api", "stream", "start"] => "POST",
        ["", "api", "stream", _, "send" | "tokens"] => "POST",
        ["", "api", "stream", _] => "GET, DELETE",
        _ => "GET",
    }
}

/// The API's own descriptions, without a key: `/api/openapi.json` and `/api/asyncapi.json`
/// (built and serialized once; warp clones a route's closure for every request that reaches
/// it, so the closure holds only an `Arc`).
fn api_documents() -> BoxedFilter<(Response,)> {
    let openapi = openapi::document();
    let asyncapi = asyncapi::document(&openapi);
    let serve = |doc: serde_json::Value| {
        let text: Arc<str> = (serde_json::to_string(&doc).unwrap_or_default() + "\n").into();
        move || {
            warp::reply::with_header(text.to_string(), "content-type", "application/json")
                .into_response()
        }
    };
    let openapi = warp::path!("api" / "openapi.json").map(serve(openapi));
    let asyncapi = warp::path!("api" / "asyncapi.json").map(serve(asyncapi));
    warp::get().and(openapi.or(asyncapi).unify()).boxed()
}

/// The AsyncAPI document, as served (for the committed copy's test).
pub fn asyncapi_document() -> serde_json::Value {
    asyncapi::document(&openapi::document())
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
        ])
        .max_age(600);
    api.with(cors).map(Reply::into_response).boxed()
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
    check: fn(&Limiter, IpAddr) -> Result<(), ApiError>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let state = state.clone();
    client_ip()
        .and_then(move |ip| {
            let state = state.clone();
            async move { check(&state.limiter, ip).map_err(warp::reject::custom) }
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
                    };
                    let caller = state
                        .keys
                        .identify(presented)
                        .map_err(warp::reject::custom)?;
                    if let Some(client) = client {
                        client.authenticated_as(&caller.name);
                    }
                    state
                        .limiter
                        .check_key(&caller.name)
                        .map_err(warp::reject::custom)?;
                    Ok::<_, Rejection>(caller)
                }
            },
        )
}

/// The request body, refused with 413 past `limits.max_body_bytes` whether or not the client
/// sent a Content-Length (chunked uploads are counted as they arrive), and with 408 when it
/// takes longer than `limits.body_read_timeout_ms` to arrive.
fn body(state: &Arc<AppState>) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    let limit = state.limits.max_body_bytes;
    let timeout = std::time::Duration::from_millis(state.limits.body_read_timeout_ms);
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |length, stream| async move {
            tokio::time::timeout(timeout, collect_limited(length, stream, limit))
                .await
                .unwrap_or_else(|_| Err(warp::reject::custom(ApiError::BodyTimeout { timeout })))
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
        return Err(warp::reject::custom(ApiError::TooLarge { limit }));
    }
    let mut stream = std::pin::pin!(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.try_next().await.map_err(|e| {
        warp::reject::custom(ApiError::InvalidInput(format!("cannot read body: {e}")))
    })? {
        if buf.len() + chunk.remaining() > limit {
            return Err(warp::reject::custom(ApiError::TooLarge { limit }));
        }
        buf.put(chunk);
    }
    Ok(buf.freeze())
}

/// One line per request: method, path, status, latency and stream id. Headers (and so keys)
/// are never logged.
/// One line per request (the accept loop calls it when the response is ready): who (client
/// address, key name, never the key), what, the status and the latency in ms to 3 decimals.
/// Also counts it by method and status; a made-up method counts as `other`, so it cannot
/// become a new series.
pub(super) fn log_request(metrics: &Metrics, request: &RequestLine, status: u16, client: &Client) {
    let method = match request.method.as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m,
        _ => "other",
    };
    metrics
        .requests
        .with_label_values(&[method, &status.to_string()])
        .inc();
    let path = request.path.as_str();
    // Only on requests about a stream.
    let stream_id = path
        .strip_prefix("/api/stream/")
        .and_then(|rest| rest.split('/').next())
        .filter(|id| *id != "start");
    let ms = request.started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: "streamgate::request",
        client = %client.addr,
        key = client.key_name(),
        method,
        path,
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
