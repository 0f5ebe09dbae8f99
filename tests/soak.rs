//! A minute of mixed abuse while a normal client streams: slowloris connections, oversized
//! bodies, runaway and crashing filters and a crowd of live-stats watchers, each from its own
//! loopback address. The normal client (100 records/s, one per request) loses nothing and its
//! end-to-end p99 stays under 500 ms.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use streamgate_testkit::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SOAK: Duration = Duration::from_secs(60);
const RATE: u64 = 100;

async fn connect_from(ip: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((ip, 0)))?;
    socket.connect(to).await
}

fn http_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A WebSocket to `path` as `key`, from `ip`.
async fn ws_from(
    ip: [u8; 4],
    d: &Daemon,
    path: &str,
    key: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = connect_from(ip, d.addr).await.unwrap();
    let mut request = d.ws_url(path).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-api-key", key.parse().unwrap());
    tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap()
        .0
}

async fn start(http: &reqwest::Client, d: &Daemon, key: &str, processor: Value) -> String {
    let resp = http
        .post(d.url("/api/stream/start"))
        .header("x-api-key", key)
        .json(&json!({ "processor": processor }))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(resp).await;
    assert_eq!(status, 201, "{body}");
    body["stream_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_client_is_unharmed_by_a_minute_of_abuse() {
    let mut config = test_config();
    config.processing.max_record_ms = 200;
    config.limits.server.max_connections_per_ip = 100;
    config.limits.server.header_read_timeout_ms = 2_000;
    let d = Arc::new(Daemon::start(config).await);
    // The normal client, warmed up first: its path works end to end (the processing group
    // has joined) before the measurement starts, as `streamctl bench` does.
    let http = http_from([127, 0, 0, 1]);
    let id = start(&http, &d, ALICE, json!("identity")).await;
    let results = format!("/api/stream/{id}/results");
    let mut ws = ws_from([127, 0, 0, 1], &d, &results, ALICE).await;
    http.post(d.url(&format!("/api/stream/{id}/send")))
        .header("x-api-key", ALICE)
        .json(&json!({"warm-up": true}))
        .send()
        .await
        .unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if m.is_text() {
            break;
        }
    }

    let (stop_tx, stop) = watch::channel(false);
    let mut abusers = Vec::new();

    // Slowloris: a hundred and fifty half-sent heads, one byte every 100 ms, reopened when
    // closed; the per-IP cap refuses the rest.
    for _ in 0..150 {
        let (d, mut stop) = (d.clone(), stop.clone());
        abusers.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let Ok(mut s) = connect_from([127, 0, 0, 2], d.addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n").await;
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    if s.write_all(b"X").await.is_err() {
                        break;
                    }
                }
            }
        }));
    }
    // Oversized bodies.
    {
        let (d, stop) = (d.clone(), stop.clone());
        abusers.push(tokio::spawn(async move {
            let http = http_from([127, 0, 0, 3]);
            let big = vec![b'1'; 2 * 1024 * 1024];
            while !*stop.borrow() {
                let _ = http
                    .post(d.url("/api/stream/start"))
                    .header("x-api-key", BOB)
                    .body(big.clone())
                    .send()
                    .await;
            }
        }));
    }
    // Runaway and crashing filters, a record every 250 ms each.
    {
        let (d, stop) = (d.clone(), stop.clone());
        let http = http_from([127, 0, 0, 4]);
        let runaway = start(
            &http,
            &d,
            BOB,
            json!({"type": "jq", "filter": "last(range(1e18))"}),
        )
        .await;
        let crashing = start(
            &http,
            &d,
            BOB,
            json!({"type": "jq", "filter": "def f: [f]; f"}),
        )
        .await;
        abusers.push(tokio::spawn(async move {
            while !*stop.borrow() {
                for id in [&runaway, &crashing] {
                    let _ = http
                        .post(d.url(&format!("/api/stream/{id}/send")))
                        .header("x-api-key", BOB)
                        .json(&json!({"n": 1}))
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }
    // Live stats watchers at the fastest interval.
    for _ in 0..50 {
        let (d, mut stop) = (d.clone(), stop.clone());
        abusers.push(tokio::spawn(async move {
            let mut ws = ws_from([127, 0, 0, 5], &d, "/api/stats/live?interval_ms=200", BOB).await;
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    m = ws.next() => if m.is_none() { return },
                }
            }
        }));
    }

    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Default::default();
    let sender = {
        let (d, sent_at) = (d.clone(), sent_at.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
            let mut failed = 0;
            for seq in 0..SOAK.as_secs() * RATE {
                tick.tick().await;
                sent_at.lock().unwrap().insert(seq, Instant::now());
                let status = http
                    .post(d.url(&format!("/api/stream/{id}/send")))
                    .header("x-api-key", ALICE)
                    .json(&json!({ "seq": seq }))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                if !matches!(status, Ok(202)) {
                    failed += 1;
                }
            }
            failed
        })
    };
    let mut latencies = Vec::new();
    let expected = SOAK.as_secs() * RATE;
    let deadline = Instant::now() + SOAK + Duration::from_secs(30);
    while (latencies.len() as u64) < expected && Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await
        else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if let Some(seq) = frame["data"]["seq"].as_u64() {
            let at = sent_at.lock().unwrap()[&seq];
            latencies.push(at.elapsed());
        }
    }
    let failed = sender.await.unwrap();
    let _ = stop_tx.send(true);
    for a in abusers {
        let _ = a.await;
    }
    assert_eq!(failed, 0, "sends that were not accepted");
    assert_eq!(latencies.len() as u64, expected, "results lost");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "soak: {} results, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        p99,
        latencies.last().unwrap()
    );
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    Arc::into_inner(d).unwrap().stop().await.unwrap();
}
