//! Retry-safe sends: a request sent again with its `Idempotency-Key` (HTTP) or
//! `idempotency_key` (`/api/connect`) gets exactly one result, whichever instance receives
//! the retry; the same key with another body is refused and stores nothing. Results are
//! counted in the results topic itself, not in the client.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use streamgate::config::{Brokers, Config};
use streamgate_testkit::*;

async fn send_keyed(d: &Daemon, id: &str, key: &str, body: &Value) -> (u16, Value) {
    let resp = d
        .http
        .post(d.url(&format!("/api/stream/{id}/send")))
        .header("x-api-key", ALICE)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    status_and_json(resp).await
}

async fn send_keyed_ndjson(d: &Daemon, id: &str, key: &str, body: String) -> (u16, Value) {
    let resp = d
        .http
        .post(d.url(&format!("/api/stream/{id}/send")))
        .header("x-api-key", ALICE)
        .header("idempotency-key", key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    status_and_json(resp).await
}

/// Every result and error frame in the results topic, per stream: (key, data).
fn results_in_topic(bootstrap: &str) -> HashMap<String, Vec<(Option<String>, Value)>> {
    let mut out: HashMap<String, Vec<(Option<String>, Value)>> = HashMap::new();
    for r in read_topic(bootstrap, "streamgate.results") {
        let f = r.json();
        if f["type"] != "result" {
            continue;
        }
        let key = f["idempotency_key"].as_str().map(str::to_string);
        out.entry(f["stream_id"].as_str().unwrap().to_string())
            .or_default()
            .push((key, f["data"].clone()));
    }
    out
}

/// Waits until the results topic holds `n` results of `stream`, then a moment more for any
/// that should not be there, and returns them.
async fn settled_results(bootstrap: &str, stream: &str, n: usize) -> Vec<(Option<String>, Value)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let b = bootstrap.to_string();
        let all = tokio::task::spawn_blocking(move || results_in_topic(&b))
            .await
            .unwrap();
        let mine = all.get(stream).cloned().unwrap_or_default();
        if mine.len() >= n {
            // Processing is done with everything stored before these: nothing more comes.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let b = bootstrap.to_string();
            let all = tokio::task::spawn_blocking(move || results_in_topic(&b))
                .await
                .unwrap();
            return all.get(stream).cloned().unwrap_or_default();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} results",
            mine.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn on(tansu: &Tansu) -> Config {
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(tansu.bootstrap());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_again_with_its_key_is_stored_and_processed_once() {
    let tansu = Tansu::start();
    let d = Daemon::start(on(&tansu)).await;
    let id = d.start_stream(ALICE, None).await;
    let other = d.start_stream(ALICE, None).await;

    let (status, first) = send_keyed(&d, &id, "order-1", &json!({"n": 1})).await;
    assert_eq!(status, 202, "{first}");
    assert!(first.get("replayed").is_none());
    let (status, again) = send_keyed(&d, &id, "order-1", &json!({"n": 1})).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(
        again["offsets"], first["offsets"],
        "the first attempt's offsets"
    );

    // Another body under the same key: refused, nothing stored.
    let records_in = d.describe(ALICE, &id).await["records_in"].clone();
    let (status, reused) = send_keyed(&d, &id, "order-1", &json!({"n": 2})).await;
    assert_eq!(status, 422, "{reused}");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    assert_eq!(d.describe(ALICE, &id).await["records_in"], records_in);
    // The same key in another stream is another request.
    let (status, elsewhere) = send_keyed(&d, &other, "order-1", &json!({"n": 2})).await;
    assert_eq!(status, 202, "{elsewhere}");
    assert!(elsewhere.get("replayed").is_none());

    let results = settled_results(&tansu.bootstrap(), &id, 1).await;
    assert_eq!(results, vec![(Some("order-1".into()), json!({"n": 1}))]);
    let results = settled_results(&tansu.bootstrap(), &other, 1).await;
    assert_eq!(results, vec![(Some("order-1".into()), json!({"n": 2}))]);
    // A bad key is refused naming the header.
    let (status, bad) = send_keyed(&d, &id, "has space", &json!(1)).await;
    assert_eq!(status, 400);
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_instance_is_never_processed_twice() {
    let tansu = Tansu::start();
    let a = Daemon::start(on(&tansu)).await;
    let b = Daemon::start(on(&tansu)).await;
    let id = a.start_stream(ALICE, None).await;
    let body: String = (1..=5).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let (status, first) = send_keyed_ndjson(&a, &id, "batch-1", body.clone()).await;
    assert_eq!(status, 202, "{first}");
    // At once on the other instance (it may not know yet: then it stores the retry, and
    // processing drops it), and again once the key index reached it (then it answers
    // `replayed` and stores nothing).
    let (status, _) = send_keyed_ndjson(&b, &id, "batch-1", body.clone()).await;
    assert_eq!(status, 202);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, again) = send_keyed_ndjson(&b, &id, "batch-1", body.clone()).await;
        assert_eq!(status, 202, "{again}");
        if again["replayed"] == true {
            assert_eq!(again["records"], 5);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never learnt of the key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, reused) = send_keyed_ndjson(&b, &id, "batch-1", "1\n".into()).await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let results = settled_results(&tansu.bootstrap(), &id, 5).await;
    let numbers: Vec<i64> = results
        .iter()
        .map(|(_, d)| d["n"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5], "each record once");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_partly_stored_then_sent_again_gets_each_record_once() {
    // The first attempt's first two records go through the socket on their own (as a
    // partial store would leave them); the whole request then comes again.
    let tansu = Tansu::start();
    let d = Daemon::start(on(&tansu)).await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.connect(ALICE).await;
    for seq in 1..=2 {
        let frame = json!({"type": "send", "stream_id": id, "seq": seq, "data": {"n": seq},
                           "idempotency_key": format!("rec-{seq}")});
        send_frame(&mut ws, &frame).await;
        let ack = next_of(&mut ws, "ack").await;
        assert_eq!(ack["seq"], seq);
    }
    // Each sent again on the socket: answered `replayed`, with the same offset.
    let frame = json!({"type": "send", "stream_id": id, "seq": 3, "data": {"n": 1},
                       "idempotency_key": "rec-1"});
    send_frame(&mut ws, &frame).await;
    let ack = next_of(&mut ws, "ack").await;
    assert_eq!(
        (ack["seq"].as_u64(), ack["replayed"].as_bool()),
        (Some(3), Some(true))
    );
    let frame = json!({"type": "send", "stream_id": id, "seq": 4, "data": {"n": 99},
                       "idempotency_key": "rec-2"});
    send_frame(&mut ws, &frame).await;
    let nack = next_of(&mut ws, "nack").await;
    assert_eq!(nack["error"]["code"], "idempotency_key_reused");
    let results = settled_results(&tansu.bootstrap(), &id, 2).await;
    assert_eq!(
        results,
        vec![
            (Some("rec-1".into()), json!({"n": 1})),
            (Some("rec-2".into()), json!({"n": 2}))
        ]
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_window_a_key_is_new_again() {
    let tansu = Tansu::start();
    let mut config = on(&tansu);
    config.limits.ingest.idempotency_window_s = 1;
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    assert_eq!(send_keyed(&d, &id, "k", &json!({"n": 1})).await.0, 202);
    settled_results(&tansu.bootstrap(), &id, 1).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, again) = send_keyed(&d, &id, "k", &json!({"n": 1})).await;
    assert_eq!(status, 202);
    assert!(again.get("replayed").is_none(), "{again}");
    let results = settled_results(&tansu.bootstrap(), &id, 2).await;
    assert_eq!(results.len(), 2, "processed again, as documented");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_hop_on_a_retry_is_processed_once_too() {
    let tansu = Tansu::start();
    let mut config = on(&tansu);
    config.processing.at_ingest = true;
    let a = Daemon::start(config.clone()).await;
    let b = Daemon::start(config).await;
    let id = a.start_stream(ALICE, None).await;
    for d in [&a, &b, &a] {
        assert_eq!(send_keyed(d, &id, "hop", &json!({"n": 7})).await.0, 202);
    }
    assert_eq!(d_plain(&a, &id).await, 202);
    let results = settled_results(&tansu.bootstrap(), &id, 2).await;
    let keyed = results
        .iter()
        .filter(|(k, _)| k.as_deref() == Some("hop"))
        .count();
    assert_eq!((keyed, results.len()), (1, 2));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// A record without a key beside the keyed ones, processed as always.
async fn d_plain(d: &Daemon, id: &str) -> u16 {
    d.send_json(ALICE, id, &json!({"n": 0})).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_an_outage_is_processed_once() {
    let mut tansu = Tansu::start();
    let mut config = on(&tansu);
    config.limits.ingest.send_timeout_ms = 2_000;
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    tansu.stop();
    let (status, unknown) = send_keyed(&d, &id, "outage", &json!({"n": 1})).await;
    assert_eq!(status, 503, "{unknown}");
    tansu.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = send_keyed(&d, &id, "outage", &json!({"n": 1})).await;
        if status == 202 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let results = settled_results(&tansu.bootstrap(), &id, 1).await;
    assert_eq!(results, vec![(Some("outage".into()), json!({"n": 1}))]);
    d.stop().await.unwrap();
}

/// The single-stream results socket opened with `send=frames`: records in frames with their
/// key, answered `replayed` when sent again, refused when the key comes with another body;
/// a message that is not a frame is refused; without `send=frames` messages are records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_socket_with_send_frames_takes_idempotency_keys() {
    let tansu = Tansu::start();
    let d = Daemon::start(on(&tansu)).await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe_from(ALICE, &id, "earliest&send=frames").await;
    send_frame(
        &mut ws,
        &json!({"data": {"n": 1}, "idempotency_key": "k-1"}),
    )
    .await;
    let first = next_of(&mut ws, "ack").await;
    assert_eq!(first["replayed"], Value::Null, "{first}");
    send_frame(
        &mut ws,
        &json!({"data": {"n": 1}, "idempotency_key": "k-1"}),
    )
    .await;
    let again = next_of(&mut ws, "ack").await;
    assert_eq!(
        (again["seq"].as_u64(), again["replayed"].as_bool()),
        (Some(2), Some(true))
    );
    send_frame(
        &mut ws,
        &json!({"data": {"n": 2}, "idempotency_key": "k-1"}),
    )
    .await;
    assert_eq!(
        next_of(&mut ws, "nack").await["error"]["code"],
        "idempotency_key_reused"
    );
    send_frame(&mut ws, &json!({"n": 3})).await;
    let nack = next_of(&mut ws, "nack").await;
    assert_eq!(nack["error"]["code"], "invalid_input");
    assert!(
        nack["error"]["message"]
            .as_str()
            .unwrap()
            .contains("send=frames"),
        "{nack}"
    );
    send_frame(&mut ws, &json!({"data": {"n": 4}})).await;
    next_of(&mut ws, "ack").await;
    let results = settled_results(&tansu.bootstrap(), &id, 2).await;
    assert_eq!(
        results,
        vec![
            (Some("k-1".into()), json!({"n": 1})),
            (None, json!({"n": 4}))
        ]
    );
    // An unknown `send` mode is refused at the handshake, naming it.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        d.ws_url(&format!("/api/stream/{id}/results?send=keys")),
    )
    .unwrap();
    req.headers_mut()
        .insert("x-api-key", ALICE.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("send: `keys`"), "{body}");
        }
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
    d.stop().await.unwrap();
}
