//! Results survive disconnects: a subscriber resumes from a cursor and gets exactly what it
//! missed, then live results with no gap and no duplicate at the switch.

use serde_json::{json, Value};
use streamgate::config::Brokers;
use streamgate_testkit::*;

fn numbers(frames: &[Value]) -> Vec<i64> {
    frames.iter().map(|f| f["data"].as_i64().unwrap()).collect()
}

async fn send_range(d: &Daemon, id: &str, range: std::ops::RangeInclusive<i64>) {
    let body: String = range.map(|i| format!("{i}\n")).collect();
    let (status, body) = d.send_ndjson(ALICE, id, body).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_a_cursor_then_switch_to_live() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let mut first = d.subscribe(ALICE, &id).await;
    send_range(&d, &id, 1..=10).await;
    let seen = results(&mut first, 5).await;
    assert_eq!(numbers(&seen), vec![1, 2, 3, 4, 5]);
    let last = seen[4]["cursor"].as_i64().unwrap();
    drop(first); // the connection is cut mid-stream

    send_range(&d, &id, 11..=20).await;
    let mut again = d.subscribe_from(ALICE, &id, &(last + 1).to_string()).await;
    let replayed = results(&mut again, 15).await;
    assert_eq!(numbers(&replayed), (6..=20).collect::<Vec<_>>());
    // Live results follow the replay on the same socket, none lost or repeated.
    send_range(&d, &id, 21..=25).await;
    assert_eq!(
        numbers(&results(&mut again, 5).await),
        (21..=25).collect::<Vec<_>>()
    );

    // earliest replays everything still in the broker.
    let mut all = d.subscribe_from(ALICE, &id, "earliest").await;
    assert_eq!(
        numbers(&results(&mut all, 25).await),
        (1..=25).collect::<Vec<_>>()
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_from_is_refused_before_the_upgrade() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let resp = d
        .http
        .get(d.url(&format!("/api/stream/{id}/results?from=yesterday")))
        .header("x-api-key", ALICE)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(resp).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`yesterday`"));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_daemon_restart() {
    let tansu = Tansu::start();
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(tansu.bootstrap());
    let d = Daemon::start(config.clone()).await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    send_range(&d, &id, 1..=3).await;
    let seen = results(&mut ws, 3).await;
    let last = seen[2]["cursor"].as_i64().unwrap();
    drop(ws);
    send_range(&d, &id, 4..=6).await;
    d.stop().await.unwrap();

    let d = Daemon::start(config).await;
    let mut ws = d.subscribe_from(ALICE, &id, &(last + 1).to_string()).await;
    assert_eq!(numbers(&results(&mut ws, 3).await), vec![4, 5, 6]);
    assert_eq!(d.send_json(ALICE, &id, &json!(7)).await.0, 202);
    assert_eq!(numbers(&results(&mut ws, 1).await), vec![7]);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_the_broker_no_longer_holds_starts_with_a_gap() {
    let d = Daemon::start(test_config()).await;
    let id = stream_with_expired_results(&d).await;
    let mut ws = d.subscribe_from(ALICE, &id, "0").await;
    let gap = next_frame(&mut ws).await;
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(gap["from_cursor"], 0);
    let skipped = gap["skipped"].as_i64().unwrap();
    assert!(skipped > 0, "{gap}");
    let first = next_frame(&mut ws).await;
    assert_eq!(first["type"], "result");
    assert_eq!(
        first["cursor"].as_i64().unwrap(),
        skipped,
        "the replay goes on right after the missing range"
    );
    assert!(d.metrics().await.contains("streamgate_gaps_sent_total 1"));
    d.stop().await.unwrap();
}
