//! Filters written to hurt: unbounded recursion, runaway loops, huge allocations and deep
//! nesting. Each gets a clear answer (a 400 at start, or an error frame for the record), and
//! the daemon keeps serving everyone else. Before the sandbox, each of these aborted the whole
//! daemon or kept a core busy forever.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use streamgate_testkit::*;

async fn start_jq(d: &Daemon, filter: &str) -> (u16, Value) {
    let spec = json!({"processor": {"type": "jq", "filter": filter}});
    d.try_start(ALICE, Some(spec)).await
}

/// The daemon still answers, and a plain stream still works end to end.
async fn still_serving(d: &Daemon) {
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    d.send_json(ALICE, &id, &json!({"alive": true})).await;
    assert_eq!(next_frame(&mut ws).await["data"], json!({"alive": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursion_and_huge_allocations_cost_one_error_frame_not_the_daemon() {
    let mut config = test_config();
    config.processing.max_record_ms = 2_000;
    let d = Daemon::start(config).await;
    for (filter, why) in [
        ("def f: [f]; f", "recursion that builds values"),
        ("def f: 1 + f; f", "recursion without tail calls"),
        (
            r#""x" * 1000000000000"#,
            "one allocation past the memory limit",
        ),
        ("[range(1e12)] | length", "an array past the memory limit"),
    ] {
        let (status, body) = start_jq(&d, filter).await;
        assert_eq!(status, 201, "{why}: {body}");
        let id = body["stream_id"].as_str().unwrap().to_string();
        let mut ws = d.subscribe(ALICE, &id).await;
        d.send_json(ALICE, &id, &json!({"n": 1})).await;
        let frame = next_frame(&mut ws).await;
        assert_eq!(frame["type"], "error", "{why}: {frame}");
        assert_eq!(frame["error"]["code"], "processing_failed", "{why}");
        still_serving(&d).await;
    }
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_loop_is_stopped_not_left_burning_a_core() {
    let mut config = test_config();
    config.processing.max_record_ms = 300;
    let d = Daemon::start(config).await;
    let (_, body) = start_jq(&d, "last(range(1e18))").await;
    let id = body["stream_id"].as_str().unwrap().to_string();
    let mut ws = d.subscribe(ALICE, &id).await;
    d.send_json(ALICE, &id, &json!(null)).await;
    let frame = next_frame(&mut ws).await;
    assert!(
        frame["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than 300 ms"),
        "{frame}"
    );
    // The worker that ran it was killed: no worker of ours is left running.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let busy = running_workers();
        if busy.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "workers still running: {busy:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_serving(&d).await;
    d.stop().await.unwrap();
}

/// Child processes of this test process that are processor workers in state R (running).
fn running_workers() -> Vec<String> {
    let me = std::process::id();
    let mut busy = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{me}/task"))
        .unwrap()
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) S ...": the state follows the closing parenthesis.
            let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
            if stat.contains("(streamgate-work") && state == Some("R") {
                busy.push(stat);
            }
        }
    }
    busy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_past_the_limits_are_refused_at_start_naming_the_limit() {
    let d = Daemon::start(test_config()).await;
    let deep = format!("{}.{}", "[".repeat(1_000), "]".repeat(1_000));
    let parens = format!("{}.{}", "(".repeat(1_000), ")".repeat(1_000));
    for filter in [&deep, &parens] {
        let (status, body) = start_jq(&d, filter).await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("processing.max_filter_depth"), "{message}");
    }
    let window = json!({"processor": {"type": "window", "length_ms": 1000, "value": deep}});
    let (status, body) = d.try_start(ALICE, Some(window)).await;
    assert_eq!(status, 400, "{body}");
    let huge = format!(".a{}", " | .a".repeat(100_000));
    let (status, body) = start_jq(&d, &huge).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("processing.max_spec_bytes"));
    still_serving(&d).await;
    d.stop().await.unwrap();
}

/// A result the results topic would refuse (past `message.max.bytes`) is an error frame
/// naming the sizes, and the stream's next record is processed. Before, the producer's
/// refusal restarted the processing stage on that record, again and again: its partition
/// stalled for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_larger_than_the_broker_takes_is_an_error_frame_and_the_stream_goes_on() {
    for one_hop in [true, false] {
        let mut config = test_config();
        config.processing.at_ingest = one_hop;
        let d = Daemon::start(config).await;
        let (status, body) = start_jq(&d, "if .big then [range(300000)] else .n end").await;
        assert_eq!(status, 201, "{body}");
        let id = body["stream_id"].as_str().unwrap().to_string();
        let mut ws = d.subscribe(ALICE, &id).await;
        let (status, _) = d
            .send_ndjson(ALICE, &id, "{\"big\":true}\n{\"n\":7}\n".into())
            .await;
        assert_eq!(status, 202);
        let frame = next_frame(&mut ws).await;
        assert_eq!(frame["type"], "error", "one hop {one_hop}: {frame}");
        let message = frame["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("larger than the results topic takes"),
            "{message}"
        );
        let next = next_frame(&mut ws).await;
        assert_eq!(next["data"], 7, "one hop {one_hop}: {next}");
        d.stop().await.unwrap();
    }
}
