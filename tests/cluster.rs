//! Several daemons on one real broker (tansu) behave as one service: no sticky sessions, no
//! state outside Kafka. Restarts lose nothing; a broker outage gives 503s and recovers.

use serde_json::{json, Value};
use streamgate::config::{Brokers, Config};
use streamgate_testkit::*;

fn on(tansu: &Tansu) -> Config {
    let mut c = test_config();
    c.brokers = Brokers::Bootstrap(tansu.bootstrap());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behave_as_one() {
    let tansu = Tansu::start();
    let a = Daemon::start(on(&tansu)).await;
    let b = Daemon::start(on(&tansu)).await;
    let c = Daemon::start(on(&tansu)).await;

    // Started on A, immediately known to B and C (they catch up with the registry topic).
    let id = a.start_stream(ALICE, None).await;
    let mut tails = vec![
        a.subscribe(ALICE, &id).await,
        b.subscribe(ALICE, &id).await,
        c.subscribe(ALICE, &id).await,
    ];
    let (status, body) = b
        .send_ndjson(ALICE, &id, (1..=30).map(|i| format!("{i}\n")).collect())
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = c.send_json(ALICE, &id, &json!(31)).await;
    assert_eq!(status, 202);

    for ws in &mut tails {
        let got: Vec<i64> = results(ws, 31)
            .await
            .iter()
            .map(|f| f["data"].as_i64().unwrap())
            .collect();
        assert_eq!(got, (1..=31).collect::<Vec<_>>());
    }
    // Ownership holds on every instance.
    assert_eq!(c.send_json(BOB, &id, &json!(0)).await.0, 404);

    // The records are really in the broker: input in order under the stream's key, one
    // result per input record.
    let bootstrap = tansu.bootstrap();
    let (input, output) = tokio::task::spawn_blocking(move || {
        (
            read_topic(&bootstrap, "streamgate.input"),
            read_topic(&bootstrap, "streamgate.results"),
        )
    })
    .await
    .unwrap();
    let sent: Vec<Value> = input
        .iter()
        .filter(|r| r.key.as_deref() == Some(id.as_str()))
        .map(Record::json)
        .collect();
    assert_eq!(sent, (1..=31).map(Value::from).collect::<Vec<_>>());
    let processed: Vec<Value> = output
        .iter()
        .filter(|r| r.key.as_deref() == Some(id.as_str()))
        .map(|r| r.json()["data"].clone())
        .collect();
    assert_eq!(processed, (1..=31).map(Value::from).collect::<Vec<_>>());

    for d in [a, b, c] {
        d.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_serves_the_streams_it_had() {
    let tansu = Tansu::start();
    let a = Daemon::start(on(&tansu)).await;
    let id = a
        .start_stream(ALICE, Some(json!({"processor": "uppercase"})))
        .await;
    assert_eq!(a.send_json(ALICE, &id, &json!("before")).await.0, 202);
    a.stop().await.unwrap();

    let a = Daemon::start(on(&tansu)).await;
    let info = a.describe(ALICE, &id).await;
    assert_eq!(info["owner"], "alice");
    assert_eq!(info["processor"], json!({"type": "uppercase"}));
    let mut ws = a.subscribe(ALICE, &id).await;
    assert_eq!(a.send_json(ALICE, &id, &json!("after")).await.0, 202);
    // "before" may be processed before or after the restart; "AFTER" must come.
    loop {
        if next_frame(&mut ws).await["data"] == "AFTER" {
            break;
        }
    }
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_gives_503_and_not_ready_then_recovers() {
    let tansu = std::cell::RefCell::new(Tansu::start());
    let mut config = on(&tansu.borrow());
    config.limits.send_timeout_ms = 2000;
    let d = Daemon::start(config).await;
    check_outage(
        &d,
        || tansu.borrow_mut().stop(),
        || tansu.borrow_mut().restart(),
    )
    .await;
    d.stop().await.unwrap();
}

/// Reads a stream's frames until its `end` frame; returns the window results before it.
async fn windows_until_end(ws: &mut Ws) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let f = next_frame(ws).await;
        match f["type"].as_str() {
            Some("end") => return out,
            Some("result") => out.push(f["data"].clone()),
            _ => panic!("unexpected frame {f}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_state_survives_a_restart_without_loss_or_double_counting() {
    let tansu = Tansu::start();
    let a = Daemon::start(on(&tansu)).await;
    let spec = json!({"type": "window", "length_ms": 8000, "value": ".v", "grace_ms": 500});
    let id = a
        .start_stream(ALICE, Some(json!({"processor": spec})))
        .await;
    // An identity stream in the same input partition: its record lands inside the range the
    // next instance re-reads, and must not be processed twice.
    let partition = |id: &str| streamgate::kafka::partition_for(id, 3);
    let neighbour = loop {
        let n = a.start_stream(ALICE, None).await;
        if partition(&n) == partition(&id) {
            break n;
        }
    };
    // Send just after a window starts, so it is still open when the daemon stops.
    while streamgate::kafka::now_ms() % 8000 > 1000 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, _) = a
        .send_ndjson(ALICE, &id, "{\"v\":1}\n{\"v\":2}\n{\"v\":3}\n".into())
        .await;
    assert_eq!(status, 202);
    assert_eq!(a.send_json(ALICE, &neighbour, &json!("once")).await.0, 202);
    // Wait until the records were processed (counted in the open window), then stop.
    tokio::time::timeout(WAIT, async {
        while !a
            .metrics()
            .await
            .contains("streamgate_records_processed_total 4")
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("records processed");
    a.stop().await.unwrap();

    // A new instance rebuilds the open window from the input topic and closes it when it is
    // due, with no further record in the partition to prompt it.
    let b = Daemon::start(on(&tansu)).await;
    let mut ws = b.subscribe_from(ALICE, &id, "earliest").await;
    let first = next_frame(&mut ws).await;
    assert_eq!(first["type"], "result", "{first}");
    assert_eq!(
        (first["data"]["count"].clone(), first["data"]["sum"].clone()),
        (json!(3), json!(6.0)),
        "the first batch, counted once: {first}"
    );
    // Later records go on into new windows; ending the stream closes them.
    let (status, _) = b
        .send_ndjson(ALICE, &id, "{\"v\":10}\n{\"v\":20}\n".into())
        .await;
    assert_eq!(status, 202);
    let resp = b
        .http
        .delete(b.url(&format!("/api/stream/{id}")))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let windows = windows_until_end(&mut ws).await;
    let count: u64 = windows.iter().map(|w| w["count"].as_u64().unwrap()).sum();
    let sum: f64 = windows.iter().map(|w| w["sum"].as_f64().unwrap()).sum();
    assert_eq!((count, sum), (2, 30.0), "{windows:?}");
    let starts: Vec<&Value> = windows.iter().map(|w| &w["window_start_ms"]).collect();
    assert!(
        !starts.contains(&&first["data"]["window_start_ms"]),
        "the first window is not emitted again: {windows:?}"
    );
    // The neighbour's record, processed before the restart, has exactly one result.
    let mut ws = b.subscribe_from(ALICE, &neighbour, "earliest").await;
    let resp = b
        .http
        .delete(b.url(&format!("/api/stream/{neighbour}")))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(windows_until_end(&mut ws).await, vec![json!("once")]);
    b.stop().await.unwrap();
}
