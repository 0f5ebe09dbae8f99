//! The HTTP contract, in process and in milliseconds: every route over in-memory stand-ins
//! for the registry, the input topic and the archive (no broker). What these tests check is
//! what a client sees: statuses, JSON bodies, headers and WebSocket frames. The data path
//! through a real broker is tested by the integration tests.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::hyper::body::Bytes;

use super::{routes, AppState};
use crate::auth::KeyStore;
use crate::config::{ApiKey, Config, Limits, Rate, RateLimits};
use crate::delivery::replay::Replayed;
use crate::delivery::{Archive, Delivery, DeliveryError, Router, StartAt};
use crate::ingest::Ingest;
use crate::kafka::records::{Control, InputKind};
use crate::kafka::{BrokerHealth, MemoryLog, Probe};
use crate::metrics::Metrics;
use crate::quota::Limiter;
use crate::registry::{MemoryStore, Registry};
use crate::wire::{
    Accepted, ErrorBody, Frame, Kind, ProcessorSpec, Started, StreamList, StreamState, StreamView,
};

const ALICE: &str = "alice-key-0123456789";
const BOB: &str = "bob-key-0123456789";

/// A past result replayed to every subscriber that asks for one.
struct OneResult;

impl Archive for OneResult {
    fn replay(
        &self,
        stream: Uuid,
        start: StartAt,
    ) -> BoxFuture<'_, Result<Replayed, DeliveryError>> {
        let frame = format!(
            r#"{{"cursor":0,"type":"result","stream_id":"{stream}","input_partition":0,"input_offset":0,"received_ms":1,"processed_ms":2,"data":"past"}}"#
        );
        let replayed = match start {
            StartAt::Latest => Vec::new(),
            _ => vec![Ok(Delivery {
                kind: Kind::Result,
                cursor: 0,
                frame: frame.into(),
            })],
        };
        Box::pin(async move { Ok(stream::iter(replayed).boxed()) })
    }
}

struct Reachable(bool);

impl Probe for Reachable {
    fn reachable(&self) -> bool {
        self.0
    }
}

struct Fixture {
    state: Arc<AppState>,
    log: Arc<MemoryLog>,
    joined: watch::Sender<bool>,
}

fn fixture_with(limits: Limits, rate_limits: RateLimits, reachable: bool) -> Fixture {
    let seats = limits.delivery.max_subscribers_per_key;
    let metrics = Arc::new(Metrics::new());
    let registry = Registry::new(Box::new(MemoryStore));
    let log = Arc::new(MemoryLog::default());
    let (joined_tx, joined) = watch::channel(true);
    let key = |name: &str, key: &str| ApiKey::new(name.into(), key.into(), false);
    let mut config = Config {
        limits,
        ..Config::default()
    };
    config.http.allowed_origins = vec!["https://app.example".into()];
    let state = Arc::new(AppState {
        config: super::Reloadable::new(config),
        credentials: super::Reloadable::new(crate::auth::Credentials {
            keys: KeyStore::new(&[key("alice", ALICE), key("bob", BOB)]),
            jwt: None,
        }),
        limiter: super::Reloadable::new(Limiter::new(&rate_limits)),
        revocations: watch::Sender::new(0),
        schemas: Arc::default(),
        subscriber_seats: crate::quota::Seats::new(seats),
        registry: registry.clone(),
        ingest: Ingest::new(
            log.clone(),
            metrics.clone(),
            crate::ingest::RecordLimits {
                per_request: 10_000,
                record_bytes: 1_000_000 - crate::ingest::RECORD_FRAMING,
                order_timeout: std::time::Duration::from_secs(1),
            },
            crate::ingest::Backlog::new(1, None, metrics.clone()),
            registry.clone(),
            None,
            crate::idempotency::KeyIndex::memory(std::time::Duration::from_secs(60), 100),
        ),
        router: Router::new(
            16,
            std::time::Duration::from_secs(60),
            registry,
            metrics.clone(),
        ),
        archive: Arc::new(OneResult),
        broker: BrokerHealth::new(Arc::new(Reachable(reachable)), "127.0.0.1:9092", false),
        metrics,
        stats: Default::default(),
        phase: crate::lifecycle::PhaseWatch::running(),
        processing_joined: joined,
        started: Instant::now(),
    });
    Fixture {
        state,
        log,
        joined: joined_tx,
    }
}

fn unlimited() -> RateLimits {
    RateLimits {
        per_ip: None,
        per_key: None,
        per_ip_public: None,
    }
}

fn fixture() -> Fixture {
    fixture_with(Limits::default(), unlimited(), true)
}

impl Fixture {
    fn api(&self) -> super::Routes {
        routes(self.state.clone())
    }

    async fn call(&self, method: &str, path: &str, key: Option<&str>, body: &str) -> Response {
        let mut req = warp::test::request().method(method).path(path).body(body);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        Response(req.reply(&self.api()).await)
    }

    /// `POST /api/stream/start` with `body`, as alice.
    async fn start_with(&self, body: &str) -> Response {
        self.call("POST", "/api/stream/start", Some(ALICE), body)
            .await
    }

    async fn start(&self, key: &str) -> Uuid {
        let r = self.call("POST", "/api/stream/start", Some(key), "").await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text());
        r.json::<Started>().stream_id
    }
}

struct Response(warp::http::Response<Bytes>);

impl Response {
    fn status(&self) -> StatusCode {
        self.0.status()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.0.body()).into_owned()
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(self.0.body()).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// The error code, asserting the body is the documented error shape.
    fn code(&self) -> String {
        self.json::<ErrorBody>().error.code.to_string()
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let f = fixture();
    let r = f.call("GET", "/healthz", None, "").await;
    assert_eq!(
        (r.status(), r.text()),
        (
            StatusCode::OK,
            format!(
                "{{\"status\":\"ok\",\"version\":\"{}\"}}\n",
                env!("CARGO_PKG_VERSION")
            )
        )
    );
    assert_eq!(
        f.call("GET", "/readyz", None, "").await.status(),
        StatusCode::OK
    );
    let down = fixture_with(Limits::default(), unlimited(), false);
    let r = down.call("GET", "/readyz", None, "").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "not_ready");
    assert!(r.text().contains("cannot be reached"), "{}", r.text());

    f.joined.send(false).unwrap();
    let r = f.call("GET", "/readyz", None, "").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().contains("processing stage"), "{}", r.text());
    assert_eq!(r.0.headers()["retry-after"], "1");
}

#[tokio::test]
async fn every_api_call_needs_a_valid_key() {
    let f = fixture();
    for (method, path) in [
        ("POST", "/api/stream/start"),
        ("GET", "/api/streams"),
        ("GET", "/api/stats"),
        ("GET", "/api/stream/00000000-0000-0000-0000-000000000000"),
    ] {
        let r = f.call(method, path, None, "").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(r.code(), "missing_api_key");
        let r = f.call(method, path, Some("wrong"), "").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(r.code(), "invalid_api_key");
    }
}

#[tokio::test]
async fn start_send_describe_end() {
    let f = fixture();
    let r = f.start_with(r#"{"processor":"uppercase"}"#).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let started: Started = r.json();
    assert_eq!(started.processor, ProcessorSpec::Uppercase);
    let id = started.stream_id;

    let r = f
        .call(
            "POST",
            &format!("/api/stream/{id}/send"),
            Some(ALICE),
            r#"{"n":1}"#,
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text());
    let accepted: Accepted = r.json();
    assert_eq!((accepted.records, accepted.offsets), (1, vec![0]));

    let req = warp::test::request()
        .method("POST")
        .path(&format!("/api/stream/{id}/send"))
        .header("x-api-key", ALICE)
        .header("content-type", "application/x-ndjson")
        .body("2\n\n\"three\"\n");
    let r = Response(req.reply(&f.api()).await);
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.json::<Accepted>().offsets, vec![1, 2]);

    let view: StreamView = f
        .call("GET", &format!("/api/stream/{id}"), Some(ALICE), "")
        .await
        .json();
    assert_eq!((view.owner.as_str(), view.records_in), ("alice", 3));
    let list: StreamList = f.call("GET", "/api/streams", Some(ALICE), "").await.json();
    assert_eq!(list.streams.len(), 1);

    let r = f
        .call("DELETE", &format!("/api/stream/{id}"), Some(ALICE), "")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<StreamView>().state, StreamState::Ended);
    let records = f.log.records.lock().unwrap().clone();
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[3].2,
        InputKind::Control(Control::End),
        "the end marker follows the records"
    );
    assert!(records.iter().all(|(key, _, _)| *key == id.to_string()));

    let r = f
        .call("POST", &format!("/api/stream/{id}/send"), Some(ALICE), "1")
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.code(), "stream_ended");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_reason_and_nothing_is_stored() {
    let mut limits = Limits::default();
    limits.server.max_body_bytes = 64;
    let f = fixture_with(limits, unlimited(), true);
    let id = f.start(ALICE).await;
    let send = format!("/api/stream/{id}/send");

    let r = f.call("POST", &send, Some(ALICE), "{oops").await;
    assert_eq!(
        (r.status(), r.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );

    let req = warp::test::request()
        .method("POST")
        .path(&send)
        .header("x-api-key", ALICE)
        .header("content-type", "application/x-ndjson")
        .body("1\n{bad}\n3");
    let r = Response(req.reply(&f.api()).await);
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().contains("line 2"), "{}", r.text());

    let req = warp::test::request()
        .method("POST")
        .path(&send)
        .header("x-api-key", ALICE)
        .header("content-type", "text/plain")
        .body("1");
    let r = Response(req.reply(&f.api()).await);
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.code(), "unsupported_media_type");

    let r = f
        .call(
            "POST",
            &send,
            Some(ALICE),
            &format!("\"{}\"", "x".repeat(100)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "payload_too_large");

    let r = f.start_with(r#"{"processor":"upcase"}"#).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().contains("upcase"), "{}", r.text());
    let r = f
        .start_with(r#"{"processor":{"type":"jq","filter":".a |"}}"#)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().contains("does not compile"), "{}", r.text());

    assert!(
        f.log.records.lock().unwrap().is_empty(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn another_keys_stream_is_not_found_on_every_route() {
    let f = fixture();
    let id = f.start(ALICE).await;
    for (method, path) in [
        ("GET", format!("/api/stream/{id}")),
        ("POST", format!("/api/stream/{id}/send")),
        ("DELETE", format!("/api/stream/{id}")),
    ] {
        let r = f.call(method, &path, Some(BOB), "1").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(r.code(), "stream_not_found");
        // An id that does not exist answers the same.
        let path = path.replace(&id.to_string(), &Uuid::new_v4().to_string());
        assert_eq!(
            f.call(method, &path, Some(BOB), "1").await.code(),
            "stream_not_found"
        );
    }
    let list: StreamList = f.call("GET", "/api/streams", Some(BOB), "").await.json();
    assert!(list.streams.is_empty());
    let err = warp::test::ws()
        .path(&format!("/api/stream/{id}/results"))
        .header("x-api-key", BOB)
        .handshake(f.api())
        .await;
    assert!(err.is_err(), "no WebSocket to another key's stream");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let f = fixture();
    let r = f.call("GET", "/api/nope", Some(ALICE), "").await;
    assert_eq!(
        (r.status(), r.code().as_str()),
        (StatusCode::NOT_FOUND, "route_not_found")
    );
    let r = f.call("PUT", "/api/stream/start", Some(ALICE), "").await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "method_not_allowed");
    let id = f.start(ALICE).await;
    let r = f
        .call("GET", &format!("/api/stream/{id}/results"), Some(ALICE), "")
        .await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "a plain GET is not an upgrade"
    );
    assert!(r.text().contains("WebSocket"), "{}", r.text());
}

#[tokio::test]
async fn past_the_rate_limit_a_429_says_when_to_retry() {
    let f = fixture_with(
        Limits::default(),
        RateLimits {
            per_ip: Some(Rate {
                per_second: 1,
                burst: 2,
            }),
            per_key: None,
            per_ip_public: None,
        },
        true,
    );
    for _ in 0..2 {
        assert_eq!(
            f.call("GET", "/api/streams", Some(ALICE), "")
                .await
                .status(),
            StatusCode::OK
        );
    }
    let r = f.call("GET", "/api/streams", Some(ALICE), "").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "rate_limited");
    let retry: u64 = r.0.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(
        f.call("GET", "/healthz", None, "").await.status(),
        StatusCode::OK,
        "health is never rate limited"
    );
}

#[tokio::test]
async fn websocket_replays_acks_and_refuses_bad_frames() {
    let f = fixture();
    let id = f.start(ALICE).await;
    let mut ws = warp::test::ws()
        .path(&format!("/api/stream/{id}/results?from=earliest"))
        .header("x-api-key", ALICE)
        .handshake(f.api())
        .await
        .expect("handshake");
    async fn next(ws: &mut warp::test::WsClient) -> Frame {
        loop {
            let m = ws.recv().await.expect("a frame");
            if let Ok(text) = m.to_str() {
                return serde_json::from_str(text).expect("a wire frame");
            }
        }
    }
    let Frame::Result(past) = next(&mut ws).await else {
        panic!("the replayed result first")
    };
    assert_eq!(past.data, Some(serde_json::json!("past")));

    ws.send_text(r#"{"n":1}"#).await;
    ws.send_text("{not json").await;
    let Frame::Ack(ack) = next(&mut ws).await else {
        panic!("an ack")
    };
    assert_eq!((ack.seq, ack.offset), (1, 0));
    let Frame::Nack(nack) = next(&mut ws).await else {
        panic!("a nack")
    };
    assert_eq!((nack.seq, nack.error.code.as_str()), (2, "invalid_input"));
    assert_eq!(f.log.records.lock().unwrap().len(), 1);

    let r = f
        .call("GET", &format!("/api/stream/{id}"), Some(ALICE), "")
        .await;
    assert_eq!(r.json::<StreamView>().records_in, 1);
}

#[tokio::test]
async fn a_record_larger_than_the_broker_takes_gets_413_not_503() {
    let f = fixture();
    let id = f.start(ALICE).await;
    let record = format!("\"{}\"", "x".repeat(1_000_048));
    assert_eq!(record.len(), 1_000_050);
    let r = f
        .call(
            "POST",
            &format!("/api/stream/{id}/send"),
            Some(ALICE),
            &record,
        )
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(r.code(), "record_too_large");
    assert!(r.text().contains("at most 998976 bytes"), "{}", r.text());
    let mut ws = warp::test::ws()
        .path(&format!("/api/stream/{id}/results"))
        .header("x-api-key", ALICE)
        .handshake(f.api())
        .await
        .expect("handshake");
    ws.send_text(record).await;
    loop {
        let m = ws.recv().await.expect("a frame");
        if let Ok(text) = m.to_str() {
            let Frame::Nack(nack) = serde_json::from_str(text).unwrap() else {
                panic!("a nack: {text}")
            };
            assert_eq!(nack.error.code, "record_too_large");
            break;
        }
    }
    assert!(f.log.records.lock().unwrap().is_empty());
}

#[tokio::test]
async fn json_that_is_not_utf8_is_refused_at_the_door() {
    let f = fixture();
    let id = f.start(ALICE).await;
    let req = warp::test::request()
        .method("POST")
        .path(&format!("/api/stream/{id}/send"))
        .header("x-api-key", ALICE)
        .body(&b"{\"s\":\"\xff\"}"[..]);
    let r = Response(req.reply(&f.api()).await);
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().contains("not UTF-8"), "{}", r.text());
    assert!(f.log.records.lock().unwrap().is_empty());
}

#[tokio::test]
async fn stats_are_computed_once_per_interval_for_every_caller() {
    let f = fixture();
    f.start(ALICE).await;
    f.start(BOB).await;
    let alice: crate::wire::Stats = f.call("GET", "/api/stats", Some(ALICE), "").await.json();
    let bob: crate::wire::Stats = f.call("GET", "/api/stats", Some(BOB), "").await.json();
    assert_eq!(alice.now_ms, bob.now_ms, "one snapshot served both");
    assert_eq!(alice.streams.len(), 1, "each caller sees its own streams");
    assert_eq!(alice.streams[0].stream.owner, "alice");
    assert_eq!(bob.streams[0].stream.owner, "bob");
    assert_eq!(alice.totals.streams, 1);
    // A change is seen at once, not after the interval.
    let id = f.start(ALICE).await;
    let after: crate::wire::Stats = f.call("GET", "/api/stats", Some(ALICE), "").await.json();
    assert!(after.streams.iter().any(|r| r.stream.stream_id == id));
}

#[tokio::test]
async fn unknown_paths_get_a_json_error() {
    let f = fixture();
    let r = f.call("GET", "/nope", None, "").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "route_not_found");
}

#[tokio::test]
async fn the_console_page_needs_no_key() {
    let f = fixture();
    for (path, kind) in [("/", "text/html"), ("/console.js", "text/javascript")] {
        let r = f.call("GET", path, None, "").await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.0.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
    }
}

#[tokio::test]
async fn cors_answers_allowed_origins_and_refuses_others() {
    let f = fixture(); // http.allowed_origins: https://app.example
    let preflight = |origin: &'static str| {
        warp::test::request()
            .method("OPTIONS")
            .path("/api/streams")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-api-key")
    };
    let ok = preflight("https://app.example").reply(&f.api()).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let refused = Response(preflight("https://evil.example").reply(&f.api()).await);
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(refused.code(), "origin_not_allowed");

    // A request from a foreign page (a results stream included) is refused; one without
    // Origin (curl, streamctl) is served as before.
    let from = |origin: Option<&'static str>| {
        let mut req = warp::test::request()
            .path(&format!("/api/stream/{}/results", uuid::Uuid::new_v4()))
            .header("x-api-key", ALICE)
            .header("accept", "text/event-stream");
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req
    };
    let foreign = Response(from(Some("https://evil.example")).reply(&f.api()).await);
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let plain = Response(from(None).reply(&f.api()).await);
    assert_eq!(plain.code(), "stream_not_found", "served as before");
}
