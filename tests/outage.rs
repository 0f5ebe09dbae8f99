//! A broker outage gives 503s within the send timeout and "not ready", never a hang; when the
//! broker is back the daemon recovers by itself.

use std::time::Duration;

use serde_json::json;
use streamgate::config::Brokers;
use streamgate::kafka::EmbeddedBroker;
use streamgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_gives_503_then_recovers() {
    let mut config = test_config();
    let broker = EmbeddedBroker::start(&config.topics).unwrap();
    config.brokers = Brokers::Bootstrap(broker.bootstrap_servers().to_string());
    config.limits.send_timeout_ms = 2000;
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    assert_eq!(d.send_json(ALICE, &id, &json!("before")).await.0, 202);
    assert_eq!(next_frame(&mut ws).await["data"], "before");

    broker.broker_down();
    let started = std::time::Instant::now();
    let (status, body) = d.send_json(ALICE, &id, &json!("during")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "broker_unavailable");
    assert_eq!(body["error"]["acknowledged"], 0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503 took {:?}",
        started.elapsed()
    );
    let ready = d.http.get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    broker.broker_up();
    // Recovery: sends succeed again without a restart, and results flow to the same socket.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = d.send_json(ALICE, &id, &json!("after")).await;
        if status == 202 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let f = next_frame(&mut ws).await;
        if f["data"] == "after" {
            break;
        }
    }
    assert_eq!(
        d.http.get(d.url("/readyz")).send().await.unwrap().status(),
        200
    );
    d.stop().await.unwrap();
}
