//! `streamctl top` and the stats feed behind it, against a live daemon: `--once` (and any
//! non-terminal stdout) prints a snapshot listing the caller's streams with their counters;
//! an admin key sees every stream, other keys only their own.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use streamgate::config::ApiKey;
use streamgate_testkit::*;
use tokio::process::Command;

const ADMIN: &str = "admin-key-0123456789";

async fn top_once(d: &Daemon, key: &str, extra: &[&str]) -> String {
    let out = tokio::time::timeout(
        WAIT,
        Command::new(env!("CARGO_BIN_EXE_streamctl"))
            .args(["top", "--interval", "200ms"])
            .args(extra)
            .env("STREAMCTL_URL", d.url(""))
            .env("STREAMCTL_API_KEY", key)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("top did not finish")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn stats(d: &Daemon, key: &str) -> Value {
    let resp = d
        .http
        .get(d.url("/api/stats"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(resp).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls the stats until `check` holds (counters move as results are routed).
async fn stats_until(d: &Daemon, key: &str, check: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let s = stats(d, key).await;
            if check(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("stats never showed the expected counters")
}

fn config_with_admin() -> streamgate::config::Config {
    let mut c = test_config();
    c.api_keys
        .push(ApiKey::new("ops".into(), ADMIN.into(), true));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_lists_the_callers_stream_with_its_counters() {
    let d = Daemon::start(config_with_admin()).await;
    let id = d
        .start_stream(ALICE, Some(json!({"processor": "uppercase"})))
        .await;
    let _bob = d.start_stream(BOB, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    d.send_ndjson(ALICE, &id, "\"a\"\n\"b\"\n\"c\"\n".into())
        .await;
    results(&mut ws, 3).await;
    stats_until(&d, ALICE, |s| s["streams"][0]["records_out"] == 3).await;

    // stdout is a pipe here: top prints one snapshot without --once too.
    let text = top_once(&d, ALICE, &[]).await;
    let line = text
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("stream {id} not listed:\n{text}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    // STREAM OWNER PROCESSOR IN/S OUT/S SUBS LAST BACKLOG RECORDS RESULTS
    assert_eq!(cols[1], "alice", "{line}");
    assert_eq!(cols[2], "uppercase", "{line}");
    assert_eq!(cols[5], "1", "one subscriber: {line}");
    assert_eq!(cols[8..], ["3", "3"], "records in and results out: {line}");
    assert!(
        text.contains("streams 1 "),
        "bob's stream is not alice's: {text}"
    );
    assert!(
        text.contains("(embedded) ok"),
        "the address and the kind: {text}"
    );

    let admin = top_once(&d, ADMIN, &["--once"]).await;
    assert!(
        admin.contains("streams 2 "),
        "an admin sees every stream: {admin}"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_feed_shows_own_streams_totals_and_latency() {
    let d = Daemon::start(config_with_admin()).await;
    let a = d.start_stream(ALICE, None).await;
    let b = d.start_stream(BOB, None).await;
    let mut ws = d.subscribe(ALICE, &a).await;
    d.send_ndjson(ALICE, &a, "1\n2\n".into()).await;
    results(&mut ws, 2).await;

    let s = stats_until(&d, ALICE, |s| s["totals"]["records_out"] == 2).await;
    assert_eq!(s["streams"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["streams"][0]["stream_id"], a.as_str());
    assert_eq!(s["streams"][0]["records_in"], 2);
    assert_eq!(s["streams"][0]["subscribers"], 1);
    assert_eq!(s["streams"][0]["backlog"], 0);
    assert_eq!(s["totals"]["streams"], 1);
    assert_eq!(s["broker"]["reachable"], true);
    assert!(
        s["totals"]["latency_ms"]["count"].as_u64().unwrap() >= 2,
        "{s}"
    );
    assert!(
        s["totals"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{s}"
    );

    let all = stats(&d, ADMIN).await;
    let ids: Vec<&str> = all["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stream_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&a.as_str()) && ids.contains(&b.as_str()),
        "{all}"
    );

    // Ended streams leave the feed.
    let resp = d
        .http
        .delete(d.url(&format!("/api/stream/{b}")))
        .header("x-api-key", BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let s = stats(&d, BOB).await;
    assert_eq!(s["streams"], json!([]), "{s}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_pushes_snapshots_on_one_request() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let d = Daemon::start(config_with_admin()).await;
    let id = d.start_stream(ALICE, None).await;
    let connect = |query: &str| {
        let mut req = d
            .ws_url(&format!("/api/stats/live{query}"))
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("x-api-key", ALICE.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    let (mut ws, _) = connect("?interval_ms=200").await.unwrap();
    async fn snapshot(ws: &mut Ws) -> Value {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        serde_json::from_str::<Value>(msg.to_text().unwrap()).unwrap()
    }
    let first = snapshot(&mut ws).await;
    assert_eq!(first["streams"][0]["stream_id"], id.as_str(), "{first}");
    d.send_ndjson(ALICE, &id, "1\n2\n".into()).await;
    // Later snapshots follow the counters without another request.
    loop {
        let s = snapshot(&mut ws).await;
        if s["streams"][0]["records_in"] == 2 {
            break;
        }
    }
    match connect("?interval_ms=5").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("a too short interval must be refused: {other:?}"),
    }
    d.stop().await.unwrap();
}
