//! Clients that lie, stall or flood, over real sockets: each finding of the hardening review
//! has a test that failed before the fix. The daemon answers with a clear status or closes
//! the connection, and keeps serving everyone else.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use streamgate::config::Config;
use streamgate_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// A raw connection from `from` (a loopback address) to the daemon.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Everything the server sends until it closes the connection (or `within` passes).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&out).into_owned())
}

/// One raw request; the first response (head and body) as text, or what came before the
/// server closed the connection.
async fn raw(d: &Daemon, request: &[u8]) -> String {
    let mut s = connect_from([127, 0, 0, 1], d.addr).await;
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return text,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no whole answer within 10 s: {text:?}"),
        }
    }
}

fn config_with(tune: impl FnOnce(&mut Config)) -> Config {
    let mut c = test_config();
    tune(&mut c);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_and_idle_connections_are_closed_after_the_header_timeout() {
    let d = Daemon::start(config_with(|c| {
        c.limits.server.header_read_timeout_ms = 300
    }))
    .await;
    let started = Instant::now();
    let mut slow = connect_from([127, 0, 0, 1], d.addr).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = connect_from([127, 0, 0, 1], d.addr).await;
    assert!(read_until_closed(&mut slow, Duration::from_secs(5))
        .await
        .is_some());
    assert!(read_until_closed(&mut idle, Duration::from_secs(5))
        .await
        .is_some());
    assert!(started.elapsed() < Duration::from_secs(5));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_per_ip_cap_connections_get_503_and_others_are_served() {
    let d = Daemon::start(config_with(|c| c.limits.server.max_connections_per_ip = 5)).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from([127, 0, 0, 1], d.addr).await);
    }
    let mut refused = connect_from([127, 0, 0, 1], d.addr).await;
    let answer = read_until_closed(&mut refused, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    // Another client address is not affected.
    let mut other = connect_from([127, 0, 0, 2], d.addr).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let health = read_until_closed(&mut other, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // Places come back when connections close.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = raw(
            &d,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if r.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "places were not freed: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = d.metrics().await;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("streamgate_connections_refused_total "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(refused >= 1, "{metrics}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_h2c_is_not_spoken() {
    let d = Daemon::start(test_config()).await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let r = raw(&d, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(200)]);
    // HTTP/2 prior knowledge: refused in HTTP/1.1, never spoken.
    let r = raw(&d, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 505"), "{r:?}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408() {
    let d = Daemon::start(config_with(|c| c.limits.server.body_read_timeout_ms = 300)).await;
    let head = format!(
        "POST /api/stream/start HTTP/1.1\r\nHost: x\r\nX-API-Key: {ALICE}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    let r = raw(&d, head.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(r.contains("limits.body_read_timeout_ms"), "{r}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_within_its_bound_whatever_a_client_holds() {
    let d = Daemon::start(config_with(|c| {
        c.limits.shutdown.shutdown_timeout_ms = 500;
        c.limits.server.header_read_timeout_ms = 60_000;
        c.limits.server.body_read_timeout_ms = 60_000;
    }))
    .await;
    let mut half = connect_from([127, 0, 0, 1], d.addr).await;
    let head = format!(
        "POST /api/stream/start HTTP/1.1\r\nHost: x\r\nX-API-Key: {ALICE}\r\nContent-Length: 100\r\n\r\n{{"
    );
    half.write_all(head.as_bytes()).await.unwrap();
    let mut stalled = connect_from([127, 0, 0, 1], d.addr).await;
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    // Let the daemon read what was sent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    d.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_the_metrics() {
    let d = Daemon::start(test_config()).await;
    for i in 0..20 {
        let request = format!("FOOBAR{i} /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        raw(&d, request.as_bytes()).await;
    }
    let metrics = d.metrics().await;
    assert!(!metrics.contains("FOOBAR"), "a method became a label");
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_metrics_cost_a_public_token() {
    let d = Daemon::start(config_with(|c| {
        c.rate_limits.per_ip_public = Some(streamgate::config::Rate {
            per_second: 1,
            burst: 3,
        })
    }))
    .await;
    let statuses: Vec<u16> = futures_util::future::join_all((0..6).map(|_| async {
        d.http
            .get(d.url("/nowhere"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }))
    .await;
    assert!(
        statuses.contains(&404) && statuses.contains(&429),
        "{statuses:?}"
    );
    // Health checks are never limited.
    for _ in 0..10 {
        assert_eq!(
            d.http.get(d.url("/healthz")).send().await.unwrap().status(),
            200
        );
    }
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_websocket_message_closes_with_1009() {
    let d = Daemon::start(config_with(|c| {
        c.limits.websocket.ws_max_message_bytes = 1024
    }))
    .await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    ws.send(Message::text(format!("\"{}\"", "x".repeat(4096))))
        .await
        .unwrap();
    let (code, reason) = next_close(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("ws_max_message_bytes"), "{reason}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_never_echoed_as_the_subprotocol() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let request = format!(
        "GET /api/stream/{id}/results HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: apikey.{ALICE}\r\n\r\n"
    );
    let mut s = connect_from([127, 0, 0, 1], d.addr).await;
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(!head.contains(ALICE), "the key came back: {head}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_subscribers_per_key_are_capped() {
    let d = Daemon::start(config_with(|c| {
        c.limits.ingest.max_streams_per_key = 2;
        c.limits.delivery.max_subscribers_per_key = 1;
    }))
    .await;
    let a = d.start_stream(ALICE, None).await;
    d.start_stream(ALICE, None).await;
    let (status, body) = d.try_start(ALICE, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_streams"))
    );
    // Bob has his own allowance.
    d.start_stream(BOB, None).await;
    // Ending a stream frees its place.
    d.http
        .delete(d.url(&format!("/api/stream/{a}")))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap();
    let b = d.start_stream(ALICE, None).await;

    let first = d.subscribe(ALICE, &b).await;
    let mut request = d
        .ws_url(&format!("/api/stream/{b}/results"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-api-key", ALICE.parse().unwrap());
    let err = tokio_tungstenite::connect_async_with_config(
        request,
        Some(WebSocketConfig::default()),
        true,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    drop(first);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_many_tiny_records_is_refused_whole_naming_the_limit() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let tiny = "1\n".repeat(200_000);
    let (status, body) = d.send_ndjson(ALICE, &id, tiny).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_many_records");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limits.max_records_per_request"));
    let (status, body) = d.send_ndjson(ALICE, &id, "1\n".repeat(10_000)).await;
    assert_eq!((status, body["records"].as_u64()), (202, Some(10_000)));
    assert_eq!(d.describe(ALICE, &id).await["records_in"], 10_000);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_files_limit_is_raised_at_start() {
    // Start below the hard limit (as a login shell's 1024 would be), so the test can fail.
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, hard.min(4096) / 2, hard).unwrap();
    let d = Daemon::start(test_config()).await;
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert_eq!(soft, hard);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_far_over_the_limit_still_gets_its_1009_and_reason() {
    // The daemon stops reading at the frame header; unless it reads on (and discards) until
    // the client finished writing, the connection is reset and the client sees 1006.
    let d = Daemon::start(config_with(|c| {
        c.limits.websocket.ws_max_message_bytes = 64 * 1024
    }))
    .await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    let huge = format!("\"{}\"", "x".repeat(4 << 20));
    ws.send(Message::text(huge))
        .await
        .expect("the whole message is taken, not reset");
    let (code, reason) = next_close(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("ws_max_message_bytes"), "{reason}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_s_live_stats_watchers_share_a_byte_budget() {
    let d = Daemon::start(config_with(|c| {
        c.limits.delivery.stats_live_bytes_per_s = 1024
    }))
    .await;
    for _ in 0..3 {
        d.start_stream(ALICE, None).await;
    }
    let open = || async {
        let mut req = d
            .ws_url("/api/stats/live?interval_ms=200")
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("x-api-key", ALICE.parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap().0
    };
    let (mut a, mut b) = (open().await, open().await);
    let len = next_text(&mut a).await;
    next_text(&mut b).await;
    // a's first push was timed before b watched; from its second on, both count.
    next_text(&mut a).await;
    let second = Instant::now();
    next_text(&mut a).await;
    let between = second.elapsed();
    let budgeted = Duration::from_secs_f64(2.0 * len as f64 / 1024.0);
    assert!(
        between >= budgeted.mul_f64(0.9) && budgeted > Duration::from_millis(500),
        "{len}-byte snapshots {between:?} apart for two watchers, budget 1 KiB/s wants {budgeted:?} (asked 200 ms)"
    );
    d.stop().await.unwrap();
}

/// The length of the next text message.
async fn next_text(ws: &mut Ws) -> usize {
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.len(),
        other => panic!("expected a snapshot: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot_when_the_total_is_small() {
    // A small total, as when a low open-files limit lowers `max_connections` at start: the
    // per-address cap (2048 by default) is brought down to a quarter of it.
    let d = Daemon::start(config_with(|c| c.limits.server.max_connections = 40)).await;
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(connect_from([127, 0, 0, 2], d.addr).await);
    }
    let mut refused = connect_from([127, 0, 0, 2], d.addr).await;
    let answer = read_until_closed(&mut refused, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.contains("too_many_connections"), "{answer}");
    let health = raw(
        &d,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    drop(held);
    d.stop().await.unwrap();
}
