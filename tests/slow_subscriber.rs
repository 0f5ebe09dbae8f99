//! A subscriber that stops reading is closed with a reason naming where to resume, while a
//! fast subscriber of the same stream receives everything; the router never stalls.

use streamgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_closed_and_fast_reader_gets_everything() {
    let mut config = test_config();
    config.limits.subscriber_queue = 64;
    config.limits.socket_send_buffer_bytes = Some(16 * 1024);
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
