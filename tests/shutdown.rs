//! Start-up and shutdown as a client sees them, on the embedded broker through real sockets:
//! every record acknowledged before SIGTERM reaches the connected subscribers before their
//! 1001 close, and a daemon whose broker cannot be reached still answers `/healthz` and
//! `/readyz` at once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use streamgate::config::Brokers;
use streamgate_testkit::*;
use tokio_tungstenite::tungstenite::Message;

/// Numbers whose acknowledgement arrived, with when it arrived.
type Acked = Arc<Mutex<Vec<(i64, Instant)>>>;

/// Numbers sent on a WebSocket, in order (an ack's `seq` is its position, from 1).
type Sent = Arc<Mutex<Vec<i64>>>;

/// What a subscriber got: the `n` of every result, and the close code. Acks (when the
/// subscriber also sends) are recorded in `acked`.
async fn read_until_close<S>(mut ws: S, acked: Option<(Acked, Sent)>) -> (BTreeSet<i64>, u16)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut got = BTreeSet::new();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no close within the deadline");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let f: Value = serde_json::from_str(&t).unwrap();
                match f["type"].as_str() {
                    Some("result") => {
                        got.insert(f["data"]["n"].as_i64().unwrap());
                    }
                    Some("ack") => {
                        let (acked, sent) = acked.as_ref().expect("acks only on the sender");
                        let seq = f["seq"].as_u64().unwrap() as usize;
                        let n = sent.lock().unwrap()[seq - 1];
                        acked.lock().unwrap().push((n, Instant::now()));
                    }
                    _ => {}
                }
            }
            Some(Ok(Message::Close(Some(c)))) => return (got, c.code.into()),
            Some(Ok(Message::Close(None))) | None => return (got, 1005),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket error before close: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_everything_acknowledged_before_it_then_closes_with_1001() {
    let d = Daemon::start(test_config()).await;
    // jq is slower than the senders, so processing has a backlog when the signal comes.
    let spec = json!({"processor": {"type": "jq", "filter": "{n: .n}"}});
    let id = d.start_stream(ALICE, Some(spec)).await;
    let reader = tokio::spawn(read_until_close(d.subscribe(ALICE, &id).await, None));

    // A WebSocket client that sends on its socket (and is a subscriber too).
    let acked: Acked = Arc::default();
    let sent: Sent = Arc::default();
    let (mut sink, source) = d.subscribe(ALICE, &id).await.split();
    let ws_reader = tokio::spawn(read_until_close(
        source,
        Some((acked.clone(), sent.clone())),
    ));
    let ws_sender = tokio::spawn(async move {
        for n in 1_000_000..1_020_000i64 {
            sent.lock().unwrap().push(n);
            let frame = Message::text(json!({ "n": n }).to_string());
            if sink.send(frame).await.is_err() {
                return;
            }
        }
    });

    // An HTTP sender, 200 records a request.
    let http_acked = acked.clone();
    let (http, url) = (d.http.clone(), d.url(&format!("/api/stream/{id}/send")));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    let http_sender = tokio::spawn(async move {
        for batch in 0..500i64 {
            let body: String = (0..200)
                .map(|i| format!("{{\"n\":{}}}\n", batch * 200 + i))
                .collect();
            let resp = http
                .post(&url)
                .header("x-api-key", ALICE)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await;
            match resp {
                Ok(r) if r.status() == 202 => {
                    let at = Instant::now();
                    let mut acked = http_acked.lock().unwrap();
                    acked.extend((0..200).map(|i| (batch * 200 + i, at)));
                    counted.fetch_add(200, Ordering::Relaxed);
                }
                // 429 backlog_full: wait as told.
                Ok(r) if r.status() == 429 => tokio::time::sleep(Duration::from_millis(200)).await,
                _ => return,
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    while accepted.load(Ordering::Relaxed) < 10_000 {
        assert!(Instant::now() < deadline, "the senders did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let signal = Instant::now();
    d.stop().await.unwrap();
    let _ = http_sender.await;
    ws_sender.abort();
    let before: Vec<i64> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < signal)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        before.iter().any(|n| *n >= 1_000_000),
        "the WebSocket sender got acks"
    );
    for (who, subscriber) in [("reader", reader), ("WebSocket sender", ws_reader)] {
        let (got, code) = subscriber.await.unwrap();
        assert_eq!(code, 1001, "{who}: closed with 1001 after the drain");
        let missing: Vec<&i64> = before.iter().filter(|n| !got.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "{who}: {} of {} records acknowledged before the signal never arrived: {:?}",
            missing.len(),
            before.len(),
            &missing[..missing.len().min(10)]
        );
    }
}

/// A daemon whose broker is an address where nothing listens.
fn unreachable_broker() -> streamgate::config::Config {
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(format!("127.0.0.1:{}", free_port()));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_health_answers_at_once_and_the_api_says_why_it_waits() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(streamgate::server::run(
        unreachable_broker(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let get = |path: &str| http.get(format!("http://{addr}{path}")).send();

    let health = get("/healthz").await.expect("/healthz within 1 s");
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "starting");
    let ready = get("/readyz").await.expect("/readyz within 1 s");
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers()["retry-after"], "1");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    let start = http
        .post(format!("http://{addr}/api/stream/start"))
        .header("x-api-key", ALICE)
        .send()
        .await
        .expect("the API answers within 1 s");
    assert_eq!(start.status(), 503);
    let body: Value = start.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broker"),
        "{body}"
    );

    // A stop during start-up is prompt and clean (it used to wait out the 30 s broker wait;
    // the bound leaves room for a loaded CI machine).
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), daemon)
        .await
        .expect("stopped promptly")
        .unwrap()
        .unwrap();
}
