//! The client against a real daemon in this process, on its embedded broker: connections cut
//! again and again while records flow in 20 streams, tokens of 2 s renewed under a running
//! subscription, and 429 and 503 waited out as `Retry-After` says. The same edges as the
//! Python (tests/test_cuts.py, test_tokens.py, test_retry_after.py) and TypeScript clients'
//! tests.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_until, CuttingProxy, Recorder, Starting};
use futures_util::StreamExt;
use serde_json::{json, Value};
use streamgate::config::{Brokers, Rate};
use streamgate_client::wire::{Ack, Frame, ProcessorSpec, Scope, StartFrom};
use streamgate_client::{Client, Credential, Subscribe, TokenSource};
use streamgate_testkit::{free_port, read_topic, test_config, Daemon, ALICE};
use tokio::time::Instant;
use uuid::Uuid;

const STREAMS: usize = 20;
/// Cuts the test waits for.
const CUTS: usize = 4;
/// Records each stream gets at least.
const MIN_RECORDS: usize = 20;
/// Pause between two sends of one stream.
const PACE: Duration = Duration::from_millis(50);

fn earliest() -> Subscribe {
    Subscribe {
        from: Some(StartFrom::Named("earliest".into())),
        ..Default::default()
    }
}

/// One stream's side: what was acknowledged and what came back.
#[derive(Default)]
struct Flow {
    acks: Vec<Ack>,
    /// `n` of each result, and its cursor.
    received: Vec<(i64, i64)>,
    ends: usize,
}

/// Follows `stream` until its end, checking each frame.
async fn consume(client: Client, stream: Uuid, flow: Arc<Mutex<Flow>>) {
    let mut sub = client.subscribe(stream, earliest());
    while let Some(frame) = sub.next().await {
        match frame.unwrap_or_else(|e| panic!("stream {stream}: {e}")) {
            Frame::Result(r) => {
                let data = r.data.unwrap();
                let n = data["n"].as_i64().unwrap();
                assert_eq!(data["s"], format!("V{n}"), "processed: {data}");
                flow.lock().unwrap().received.push((n, r.cursor.unwrap()));
            }
            Frame::End(_) => flow.lock().unwrap().ends += 1,
            other => panic!("stream {stream}: unexpected {other:?}"),
        }
    }
}

/// Sends `{"n": 0, "s": "v0"}`, `{"n": 1, …}`… into `stream` until `stop`, `window` at a time
/// (each window's sends at once, in order).
async fn produce(
    client: Client,
    stream: Uuid,
    window: usize,
    flow: Arc<Mutex<Flow>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let records: Vec<Value> = (n..n + window)
            .map(|n| json!({"n": n, "s": format!("v{n}")}))
            .collect();
        let sends = records.iter().map(|r| client.send(stream, r));
        for ack in futures_util::future::join_all(sends).await {
            let ack = ack.unwrap_or_else(|e| panic!("stream {stream}: {e}"));
            assert_eq!(ack.stream_id, Some(stream));
            flow.lock().unwrap().acks.push(ack);
        }
        n += window;
        tokio::time::sleep(PACE).await;
    }
}

/// Every result frame in the daemon's results topic: `n` of each, per stream, in order.
async fn results_in_topic(bootstrap: String) -> HashMap<Uuid, Vec<i64>> {
    let records = tokio::task::spawn_blocking(move || read_topic(&bootstrap, "streamgate.results"))
        .await
        .unwrap();
    let mut out: HashMap<Uuid, Vec<i64>> = HashMap::new();
    for r in records {
        let f = r.json();
        if f["type"] == "result" {
            let stream: Uuid = f["stream_id"].as_str().unwrap().parse().unwrap();
            out.entry(stream)
                .or_default()
                .push(f["data"]["n"].as_i64().unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_once_in_order_and_every_send_acked_once_through_cuts() {
    let d = Daemon::start(test_config()).await;
    let direct = Client::new(&d.url(""), ALICE).unwrap();
    let proxy = CuttingProxy::start(
        d.addr,
        Duration::from_millis(1500),
        Duration::from_millis(200),
    )
    .await;
    let client = Client::new(&proxy.url, ALICE).unwrap();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(
            direct
                .start(Some(&ProcessorSpec::Uppercase))
                .await
                .unwrap()
                .stream_id,
        );
    }
    let flows: Vec<Arc<Mutex<Flow>>> = streams.iter().map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    let mut producers = Vec::new();
    for (i, (stream, flow)) in streams.iter().zip(&flows).enumerate() {
        consumers.push(tokio::spawn(consume(client.clone(), *stream, flow.clone())));
        // Half the streams one record at a time, half three at once.
        let window = if i % 2 == 0 { 1 } else { 3 };
        producers.push(tokio::spawn(produce(
            client.clone(),
            *stream,
            window,
            flow.clone(),
            stop.clone(),
        )));
    }
    wait_until(
        &format!("{CUTS} cuts and {MIN_RECORDS} records acknowledged in each stream"),
        Duration::from_secs(60),
        || {
            proxy.cuts.load(Ordering::Relaxed) >= CUTS
                && flows
                    .iter()
                    .all(|f| f.lock().unwrap().acks.len() >= MIN_RECORDS)
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        tokio::time::timeout(Duration::from_secs(30), producer)
            .await
            .expect("sends finish")
            .unwrap();
    }
    wait_until("every result", Duration::from_secs(30), || {
        flows.iter().all(|f| {
            let f = f.lock().unwrap();
            f.received.len() >= f.acks.len()
        })
    })
    .await;
    // Ending each stream ends its subscription, after exactly one `end`.
    for stream in &streams {
        direct.end(*stream).await.unwrap();
    }
    for consumer in consumers {
        tokio::time::timeout(Duration::from_secs(30), consumer)
            .await
            .expect("subscriptions end")
            .unwrap();
    }

    let bootstrap = direct.stats().await.unwrap().broker.bootstrap;
    let stored = results_in_topic(bootstrap).await;
    let mut replayed = 0;
    for (stream, flow) in streams.iter().zip(&flows) {
        let f = flow.lock().unwrap();
        let sent = f.acks.len() as i64;
        let numbers: Vec<i64> = f.received.iter().map(|r| r.0).collect();
        assert_eq!(
            numbers,
            (0..sent).collect::<Vec<_>>(),
            "stream {stream}: each result once, in order"
        );
        assert!(
            f.received.windows(2).all(|w| w[0].1 < w[1].1),
            "cursors increase"
        );
        assert_eq!(f.ends, 1);
        // Each record acknowledged once, at an offset of its own.
        let mut offsets: Vec<i64> = f.acks.iter().map(|a| a.offset).collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len() as i64, sent, "stream {stream}: {:?}", f.acks);
        replayed += f.acks.iter().filter(|a| a.replayed).count();
        // Stored and processed once each, counted in the broker.
        assert_eq!(
            stored.get(stream).cloned().unwrap_or_default(),
            numbers,
            "stream {stream} in the results topic"
        );
    }
    let cuts = proxy.cuts.load(Ordering::Relaxed);
    assert!(
        proxy.accepted.load(Ordering::Relaxed) > cuts,
        "the client reconnected after each cut"
    );
    // The daemon's answers were held back before each cut: records stored meanwhile lost
    // their acks, were sent again with their keys, and were answered as replays.
    assert!(replayed > 0, "no record was sent again with its key");
    drop(proxy);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_second_tokens_from_a_source_keep_a_subscription_running_for_ten_seconds() {
    const RUN_FOR: Duration = Duration::from_secs(10);
    let d = Daemon::start(test_config()).await;
    let keyed = Client::new(&d.url(""), ALICE).unwrap();
    let stream = keyed
        .start(Some(&ProcessorSpec::Uppercase))
        .await
        .unwrap()
        .stream_id;
    let asked = Arc::new(AtomicUsize::new(0));
    let source: TokenSource = Arc::new({
        let (keyed, asked) = (keyed.clone(), asked.clone());
        move || {
            let keyed = keyed.clone();
            asked.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let issued = keyed.token(&[stream], &[Scope::Subscribe], Some(2)).await?;
                Ok(issued.token)
            })
        }
    });
    let reader = Client::with_credential(&d.url(""), Credential::TokenSource(source)).unwrap();
    let flow: Arc<Mutex<Flow>> = Arc::default();
    let consumer = tokio::spawn(consume(reader.clone(), stream, flow.clone()));
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < RUN_FOR {
        keyed
            .send(stream, &json!({"n": sent, "s": format!("v{sent}")}))
            .await
            .unwrap();
        sent += 1;
        tokio::time::sleep(PACE).await;
    }
    wait_until("every result", Duration::from_secs(30), || {
        flow.lock().unwrap().received.len() >= sent as usize
    })
    .await;
    keyed.end(stream).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), consumer)
        .await
        .expect("the subscription ends")
        .unwrap();
    let (numbers, ends): (Vec<i64>, usize) = {
        let f = flow.lock().unwrap();
        (f.received.iter().map(|r| r.0).collect(), f.ends)
    };
    assert_eq!(
        numbers,
        (0..sent).collect::<Vec<_>>(),
        "a result missed or repeated"
    );
    assert_eq!(ends, 1);
    assert!(
        sent as u128 >= RUN_FOR.as_millis() / PACE.as_millis() / 2,
        "{sent} records in 10 s"
    );
    // Each token lived 2 s at most, so the subscription ran on five or more of them.
    let asked = asked.load(Ordering::SeqCst);
    assert!(
        asked >= 5,
        "the token source was asked {asked} times in 10 s"
    );
    drop(reader);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_as_retry_after_says_on_calls_and_the_handshake() {
    let mut config = test_config();
    config.rate_limits.per_key = Some(Rate {
        per_second: 1,
        burst: 2,
    });
    let d = Daemon::start(config).await;

    let calls = Recorder::start(d.addr).await;
    let client = Client::new(&calls.url, ALICE).unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        client.list().await.unwrap();
    }
    let elapsed = started.elapsed();
    let limited = calls.answers(429);
    assert!(limited >= 2, "the limit was never hit: {:#?}", calls.log());
    assert_eq!(calls.assert_waited_as_told(), limited);
    // One request per call, and one more per 429: each wait was long enough.
    assert_eq!(
        calls.requests("/api/streams"),
        5 + limited,
        "{:#?}",
        calls.log()
    );
    assert!(elapsed >= Duration::from_secs(limited as u64));

    // The handshake is a request too: with the key's burst spent, it is refused and waited out.
    let stream = Client::new(&d.url(""), ALICE)
        .unwrap()
        .start(None)
        .await
        .unwrap()
        .stream_id;
    let handshakes = Recorder::start(d.addr).await;
    let sender = Client::new(&handshakes.url, ALICE).unwrap();
    let raw = reqwest::Client::new();
    let mut last = 0;
    while last != 429 {
        let answer = raw
            .get(d.url("/api/streams"))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        last = answer.status().as_u16();
    }
    let started = Instant::now();
    let ack = tokio::time::timeout(
        Duration::from_secs(30),
        sender.send(stream, &json!({"x": 1})),
    )
    .await
    .expect("the send went through")
    .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(ack.stream_id, Some(stream));
    let refused = handshakes.answers(429);
    assert!(
        refused >= 1,
        "the handshake was never refused: {:#?}",
        handshakes.log()
    );
    assert_eq!(handshakes.assert_waited_as_told(), refused);
    let tries = handshakes.requests("/api/connect");
    assert!(
        tries == refused + 1 && tries as u64 <= 2 + elapsed.as_secs(),
        "{tries} handshakes in {elapsed:?}"
    );
    drop((client, sender));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_waiting_for_its_broker_is_waited_out_without_spinning() {
    // Nothing listens where its broker should be: the daemon answers 503 not_ready,
    // Retry-After: 1, to calls and handshakes alike.
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(format!("127.0.0.1:{}", free_port()));
    let d = Starting::start(config).await;
    let calls = Recorder::start(d.addr).await;
    let handshakes = Recorder::start(d.addr).await;
    let client = Client::new(&calls.url, ALICE).unwrap();
    let sender = Client::new(&handshakes.url, ALICE).unwrap();
    let started = Instant::now();
    let listing = tokio::spawn({
        let client = client.clone();
        async move { client.list().await }
    });
    let sending = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send(Uuid::new_v4(), &1).await }
    });
    wait_until("three 503s to each", Duration::from_secs(10), || {
        calls.answers(503) >= 3 && handshakes.answers(503) >= 3
    })
    .await;
    assert!(
        !listing.is_finished() && !sending.is_finished(),
        "gave up while waiting was asked"
    );
    listing.abort();
    sending.abort();
    drop((client, sender));
    let elapsed = started.elapsed();
    for (recorder, path) in [(&calls, "/api/streams"), (&handshakes, "/api/connect")] {
        let unavailable = recorder.answers(503);
        assert!(recorder.assert_waited_as_told() >= unavailable - 1);
        // One try per Retry-After second: no spinning.
        let tries = recorder.requests(path);
        assert!(
            tries as u64 <= 1 + elapsed.as_secs(),
            "{tries} tries of {path} in {elapsed:?}"
        );
    }
    d.stop().await;
}
