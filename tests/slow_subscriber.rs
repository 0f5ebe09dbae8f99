//! A subscriber that stops reading is closed with a reason naming where to resume, while a
//! fast subscriber of the same stream receives everything; the router never stalls.

use streamgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_closed_and_fast_reader_gets_everything() {
    let mut config = test_config();
    config.limits.delivery.subscriber_queue = 64;
    config.limits.server.socket_send_buffer_bytes = Some(16 * 1024);
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    let mut slow = d.subscribe_small_buffer(ALICE, &id).await; // never read until the end
    let mut fast = d.subscribe(ALICE, &id).await;

    // ~2 MiB of results: far more than a reader that does not read can buffer.
    let payload = "x".repeat(10_000);
    let per_batch = 20;
    let batches = 10;
    let total = per_batch * batches;
    // The fast reader keeps up: it reads each batch's results before the next batch is sent.
    let mut got = Vec::new();
    for b in 0..batches {
        let body: String = (0..per_batch)
            .map(|i| format!("{{\"n\":{},\"pad\":\"{payload}\"}}\n", b * per_batch + i))
            .collect();
        let (status, resp) = d.send_ndjson(ALICE, &id, body).await;
        assert_eq!(status, 202, "{resp}");
        for f in results(&mut fast, per_batch).await {
            got.push(f["data"]["n"].as_u64().unwrap());
        }
    }
    assert_eq!(got, (0..total as u64).collect::<Vec<_>>());

    // The slow reader finds what was queued for it, then a 4008 close with a resume point.
    let (code, reason) = next_close(&mut slow).await;
    assert_eq!(code, 4008, "{reason}");
    let resume: i64 = reason
        .rsplit_once("from=")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume cursor in {reason:?}"));
    // Resuming there gives exactly what the slow reader missed, in order.
    let mut slow = d.subscribe_from(ALICE, &id, &resume.to_string()).await;
    let rest = results(&mut slow, 1).await;
    assert_eq!(rest[0]["cursor"], resume);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_policy_reports_exact_gaps_and_keeps_the_socket() {
    let mut config = test_config();
    config.limits.delivery.subscriber_queue = 64;
    config.limits.server.socket_send_buffer_bytes = Some(16 * 1024);
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    let mut slow = d
        .subscribe_small_buffer_with(ALICE, &id, "on_lag=skip")
        .await;
    let mut fast = d.subscribe(ALICE, &id).await;
    let payload = "x".repeat(10_000);
    let (per_batch, batches) = (20, 10);
    for b in 0..batches {
        let body: String = (0..per_batch)
            .map(|i| format!("{{\"n\":{},\"pad\":\"{payload}\"}}\n", b * per_batch + i))
            .collect();
        assert_eq!(d.send_ndjson(ALICE, &id, body).await.0, 202);
        results(&mut fast, per_batch).await;
    }
    // Now the slow reader reads; trailing records (sent while it keeps up) flush its last gap.
    let total = (per_batch * batches) as u64;
    let (mut received, mut skipped, mut gaps, mut sent) = (0u64, 0u64, 0, total);
    let mut last_n: i64 = -1;
    while received + skipped < sent {
        let f = tokio::time::timeout(std::time::Duration::from_millis(500), next_frame(&mut slow))
            .await;
        let Ok(f) = f else {
            assert_eq!(
                d.send_json(ALICE, &id, &serde_json::json!({"n": sent}))
                    .await
                    .0,
                202
            );
            sent += 1;
            continue;
        };
        match f["type"].as_str().unwrap() {
            "result" => {
                let n = f["data"]["n"].as_i64().unwrap();
                assert!(n > last_n, "out of order: {n} after {last_n}");
                last_n = n;
                received += 1;
            }
            "gap" => {
                gaps += 1;
                skipped += f["skipped"].as_u64().unwrap();
                assert!(f["from_cursor"].is_i64());
            }
            other => panic!("unexpected {other}: {f}"),
        }
    }
    assert!(gaps > 0 && skipped > 0, "the slow reader never lagged");
    assert_eq!(
        received + skipped,
        sent,
        "every result is either delivered or counted in a gap"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_reaped_within_the_idle_timeout() {
    let mut config = test_config();
    config.limits.websocket.ws_ping_interval_ms = 100;
    config.limits.websocket.ws_idle_timeout_ms = 500;
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    // Connected, then never read again: pings go unanswered.
    let _silent = d.subscribe(ALICE, &id).await;
    let subscribers = || async {
        d.describe(ALICE, &id).await["subscribers"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(subscribers().await, 1);
    let deadline = tokio::time::Instant::now() + WAIT;
    while subscribers().await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent peer was never reaped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    d.stop().await.unwrap();
}
