//! The results as Server-Sent Events, through real sockets on the embedded broker: replay then
//! live with the cursor as each event's id, a `Last-Event-ID` resume with no gap and no
//! duplicate, and a reader too slow for its queue told where to resume.

use serde_json::{json, Value};
use streamgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_and_a_last_event_id_resume() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    for n in 1..=3 {
        assert_eq!(d.send_json(ALICE, &id, &json!(n)).await.0, 202);
    }
    let mut events = Events::open(&d, &id, "?from=earliest", None).await;
    let past = events.results(3).await;
    assert_eq!(past.iter().map(|r| r.1).collect::<Vec<_>>(), [1, 2, 3]);
    for n in 4..=5 {
        assert_eq!(d.send_json(ALICE, &id, &json!(n)).await.0, 202);
    }
    let live = events.results(2).await;
    assert_eq!(live.iter().map(|r| r.1).collect::<Vec<_>>(), [4, 5]);
    drop(events);

    // What EventSource does when it reconnects: the URL it was opened with, and the last id
    // it saw, which wins over `from`.
    let second = &past[1].0;
    let mut resumed = Events::open(&d, &id, "?from=earliest", Some(second)).await;
    let again = resumed.results(3).await;
    assert_eq!(again.iter().map(|r| r.1).collect::<Vec<_>>(), [3, 4, 5]);

    // The end: its frame, then the response ends.
    assert_eq!(d.end_stream(ALICE, &id).await, 200);
    assert_eq!(resumed.next().await.event, "end");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_too_slow_for_its_queue_gets_a_lagged_event_with_the_resume_cursor() {
    let mut config = test_config();
    config.limits.delivery.subscriber_queue = 4;
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    let mut events = Events::open(&d, &id, "", None).await;
    d.wait_until_ready().await;
    // 48 000 results (12 MB of events) while nothing is read: far more than the queue and
    // the socket buffers. A 429 (backlog) is waited out as it says.
    for batch in 0..6 {
        let body: String = (0..8_000)
            .map(|n| {
                format!(
                    "{{\"n\":{},\"pad\":\"{}\"}}\n",
                    batch * 8_000 + n,
                    "x".repeat(100)
                )
            })
            .collect();
        loop {
            match d.send_ndjson(ALICE, &id, body.clone()).await {
                (202, _) => break,
                (429, _) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
                other => panic!("{other:?}"),
            }
        }
    }
    let lagged = loop {
        let e = events.next().await;
        if e.event == "lagged" {
            break e;
        }
        assert_eq!(e.event, "result", "{e:?}");
    };
    let resume: Value = serde_json::from_str(&lagged.data).unwrap();
    assert!(resume["resume"].as_i64().is_some(), "{resume}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_cut_and_its_seat_freed() {
    let mut config = test_config();
    config.limits.websocket.ws_idle_timeout_ms = 1_000;
    config.limits.delivery.max_subscribers_per_key = 1;
    config.limits.server.socket_send_buffer_bytes = Some(4096);
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    d.wait_until_ready().await;
    let stalled = Events::open(&d, &id, "", None).await; // never read again
    let try_second = || async {
        d.http
            .get(d.url(&format!("/api/stream/{id}/results")))
            .header("x-api-key", ALICE)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(try_second().await, 429, "the seat is taken");
    // Results until the stalled connection is cut and its seat comes free.
    let deadline = std::time::Instant::now() + WAIT;
    let mut batch = 0;
    while try_second().await == 429 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled subscriber kept its seat"
        );
        let body: String = (0..2_000)
            .map(|n| {
                format!(
                    "{{\"n\":{},\"pad\":\"{}\"}}\n",
                    batch * 2_000 + n,
                    "x".repeat(200)
                )
            })
            .collect();
        let _ = d.send_ndjson(ALICE, &id, body).await; // a 429 (backlog) just means wait
        batch += 1;
    }
    drop(stalled);
    d.stop().await.unwrap();
}
