//! The client against a daemon on a real broker (tansu): the daemon restarted mid-stream on
//! the same address, and a daemon answering 503 until its broker comes. Skipped, saying so,
//! without `TANSU_BIN` (scripts/test sets it). The same edges as the Python
//! (tests/test_restart.py, test_retry_after.py) and TypeScript clients' tests.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{tansu_or_skip, wait_until, Recorder, Starting};
use futures_util::StreamExt;
use serde_json::json;
use streamgate::config::{Brokers, Config};
use streamgate_client::wire::{Ack, ErrorCode, Frame, ProcessorSpec, StartFrom};
use streamgate_client::{Client, Subscribe};
use streamgate_testkit::{read_topic, test_config, Daemon, Tansu, ALICE};
use tokio::time::Instant;
use uuid::Uuid;

const RECORDS: i64 = 60;
const RESTART_AT: usize = 20;
const PACE: Duration = Duration::from_millis(50);

fn on(tansu: &Tansu) -> Config {
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(tansu.bootstrap());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restarted_mid_stream_loses_and_repeats_nothing() {
    if !tansu_or_skip("a_daemon_restarted_mid_stream_loses_and_repeats_nothing") {
        return;
    }
    let tansu = Tansu::start();
    let config = on(&tansu);
    let d = Daemon::start(config.clone()).await;
    let addr = d.addr;
    let client = Client::new(&d.url(""), ALICE).unwrap();
    let stream = client
        .start(Some(&ProcessorSpec::Uppercase))
        .await
        .unwrap()
        .stream_id;

    let received: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let ends = Arc::new(Mutex::new(0));
    let consumer = tokio::spawn({
        let (client, received, ends) = (client.clone(), received.clone(), ends.clone());
        async move {
            let from = Some(StartFrom::Named("earliest".into()));
            let mut sub = client.subscribe(
                stream,
                Subscribe {
                    from,
                    ..Default::default()
                },
            );
            while let Some(frame) = sub.next().await {
                match frame.unwrap() {
                    Frame::Result(r) => {
                        let data = r.data.unwrap();
                        let n = data["n"].as_i64().unwrap();
                        assert_eq!(data["s"], format!("V{n}"));
                        received.lock().unwrap().push((n, r.cursor.unwrap()));
                    }
                    Frame::End(_) => *ends.lock().unwrap() += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    });
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let producer = tokio::spawn({
        let (client, acks) = (client.clone(), acks.clone());
        async move {
            for n in 0..RECORDS {
                let ack = client
                    .send(stream, &json!({"n": n, "s": format!("v{n}")}))
                    .await
                    .unwrap();
                acks.lock().unwrap().push(ack);
                tokio::time::sleep(PACE).await;
            }
        }
    });
    wait_until(
        &format!("{RESTART_AT} results"),
        Duration::from_secs(30),
        || received.lock().unwrap().len() >= RESTART_AT,
    )
    .await;
    assert!(
        !producer.is_finished(),
        "the restart must come while records flow"
    );
    d.stop().await.unwrap(); // 1001 to the client, then connections refused
    let d = Daemon::start_on(config, addr).await;
    tokio::time::timeout(Duration::from_secs(60), producer)
        .await
        .expect("every send answered")
        .unwrap();
    wait_until("every result", Duration::from_secs(30), || {
        received.lock().unwrap().len() >= RECORDS as usize
    })
    .await;
    client.end(stream).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), consumer)
        .await
        .expect("the subscription ends")
        .unwrap();

    let numbers: Vec<i64> = received.lock().unwrap().iter().map(|r| r.0).collect();
    assert_eq!(
        numbers,
        (0..RECORDS).collect::<Vec<_>>(),
        "lost or repeated results"
    );
    assert!(
        received.lock().unwrap().windows(2).all(|w| w[0].1 < w[1].1),
        "cursors increase"
    );
    assert_eq!(*ends.lock().unwrap(), 1);
    assert_eq!(acks.lock().unwrap().len() as i64, RECORDS);
    // Stored and processed once each, counted in the broker.
    let bootstrap = tansu.bootstrap();
    let stored: Vec<i64> =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, "streamgate.results"))
            .await
            .unwrap()
            .iter()
            .map(|r| r.json())
            .filter(|f| f["type"] == "result" && f["stream_id"] == stream.to_string())
            .map(|f| f["data"]["n"].as_i64().unwrap())
            .collect();
    assert_eq!(stored, numbers, "the results topic");
    drop(client);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_until_the_broker_comes_is_waited_out_then_calls_and_sends_go_through() {
    if !tansu_or_skip("a_503_until_the_broker_comes_is_waited_out_then_calls_and_sends_go_through")
    {
        return;
    }
    // A broker's address, with no broker there yet: the daemon answers 503 not_ready.
    let mut tansu = Tansu::start();
    tansu.stop();
    let d = Starting::start(on(&tansu)).await;
    let calls = Recorder::start(d.addr).await;
    let handshakes = Recorder::start(d.addr).await;
    let client = Client::new(&calls.url, ALICE).unwrap();
    let sender = Client::new(&handshakes.url, ALICE).unwrap();
    let started = Instant::now();
    let starting = tokio::spawn({
        let client = client.clone();
        async move { client.start(Some(&ProcessorSpec::Uppercase)).await }
    });
    // No stream can be started before: this one does not exist, which it learns once ready.
    let sending = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send(Uuid::new_v4(), &1).await }
    });
    wait_until("two 503s to each", Duration::from_secs(10), || {
        calls.answers(503) >= 2 && handshakes.answers(503) >= 2
    })
    .await;
    assert!(!starting.is_finished() && !sending.is_finished());
    let tansu = tokio::task::spawn_blocking(move || {
        tansu.restart();
        tansu
    })
    .await
    .unwrap();
    let stream = tokio::time::timeout(Duration::from_secs(60), starting)
        .await
        .expect("started once the broker came")
        .unwrap()
        .unwrap()
        .stream_id;
    let sent = tokio::time::timeout(Duration::from_secs(30), sending)
        .await
        .expect("answered")
        .unwrap();
    let e = sent.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::StreamNotFound), "{e}");
    let elapsed = started.elapsed();
    for (recorder, path) in [(&calls, "/api/stream/start"), (&handshakes, "/api/connect")] {
        let unavailable = recorder.answers(503);
        assert!(unavailable >= 2);
        assert_eq!(
            recorder.assert_waited_as_told(),
            unavailable,
            "{:#?}",
            recorder.log()
        );
        // One try per Retry-After second, and the one that worked: no spinning.
        let tries = recorder.requests(path);
        assert_eq!(tries, unavailable + 1, "{:#?}", recorder.log());
        assert!(
            tries as u64 <= 2 + elapsed.as_secs(),
            "{tries} tries of {path} in {elapsed:?}"
        );
    }
    let ack = tokio::time::timeout(
        Duration::from_secs(30),
        sender.send(stream, &json!({"ready": true})),
    )
    .await
    .expect("answered")
    .unwrap();
    assert_eq!(ack.stream_id, Some(stream));
    drop((client, sender));
    d.stop().await;
    drop(tansu);
}
