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
    config.limits.ingest.send_timeout_ms = 2000;
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
    assert_eq!(b.end_stream(ALICE, &id).await, 200);
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

/// Outcomes of one sender: values acknowledged, and every refusal's error code.
#[derive(Default, Debug)]
struct Sent {
    acked: Vec<i64>,
    refused: Vec<String>,
}

/// Sends `base`, `base + 1`, … one record per request until a few sends after the first
/// refusal (so a refusal is seen to be final).
async fn send_until_refused(
    http: reqwest::Client,
    url: String,
    base: i64,
    started: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Sent {
    let mut sent = Sent::default();
    for value in base.. {
        let resp = http
            .post(&url)
            .header("x-api-key", ALICE)
            .json(&value)
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_json(resp).await;
        match status {
            202 => {
                assert!(
                    sent.refused.is_empty(),
                    "{value} acknowledged after a refusal"
                );
                sent.acked.push(value);
                started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            _ => {
                sent.refused.push(format!(
                    "{status} {}",
                    body["error"]["code"].as_str().unwrap_or("")
                ));
                if sent.refused.len() >= 20 {
                    return sent;
                }
            }
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_through_one_instance_is_final_on_every_instance() {
    use futures_util::{SinkExt, StreamExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio_tungstenite::tungstenite::Message;

    let tansu = Tansu::start();
    let a = Daemon::start(on(&tansu)).await;
    let b = Daemon::start(on(&tansu)).await;
    let c = Daemon::start(on(&tansu)).await;
    let id = a.start_stream(ALICE, None).await;
    // Every instance knows the stream.
    for d in [&a, &b, &c] {
        assert_eq!(d.send_json(ALICE, &id, &json!(0)).await.0, 202);
    }

    let started = Arc::new(AtomicUsize::new(0));
    let url = |d: &Daemon| d.url(&format!("/api/stream/{id}/send"));
    let on_a = tokio::spawn(send_until_refused(
        a.http.clone(),
        url(&a),
        1_000_000,
        started.clone(),
    ));
    let on_c = tokio::spawn(send_until_refused(
        c.http.clone(),
        url(&c),
        2_000_000,
        started.clone(),
    ));
    // And records sent on a WebSocket through C, answered by ack or nack.
    let (mut sink, mut source) = c.subscribe(ALICE, &id).await.split();
    let ws_sender = tokio::spawn(async move {
        for value in 3_000_000..3_000_400i64 {
            if sink.send(Message::text(value.to_string())).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    });
    let ws_answers = tokio::spawn(async move {
        let (mut acked, mut nacked) = (Vec::new(), Vec::new());
        while let Some(Ok(msg)) = source.next().await {
            let Message::Text(t) = msg else { continue };
            let f: Value = serde_json::from_str(&t).unwrap();
            match f["type"].as_str() {
                Some("ack") => acked.push(3_000_000 + f["seq"].as_i64().unwrap() - 1),
                Some("nack") => nacked.push(f["error"]["code"].as_str().unwrap().to_string()),
                _ => {}
            }
        }
        (acked, nacked)
    });
    let deadline = std::time::Instant::now() + WAIT;
    while started.load(Ordering::Relaxed) < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "senders did not get going"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    assert_eq!(b.end_stream(ALICE, &id).await, 200);
    let (on_a, on_c) = (on_a.await.unwrap(), on_c.await.unwrap());
    ws_sender.await.unwrap();
    let (ws_acked, ws_nacked) = ws_answers.await.unwrap();

    // What the stream holds: everything delivered before `end`, replayed from the start.
    let mut replay = b.subscribe_from(ALICE, &id, "earliest").await;
    let mut delivered = Vec::new();
    loop {
        let f = next_frame(&mut replay).await;
        match f["type"].as_str() {
            Some("result") => delivered.push(f["data"].as_i64().unwrap()),
            Some("end") => break,
            other => panic!("unexpected frame {other:?}: {f}"),
        }
    }
    let mut acked: Vec<i64> = [
        vec![0, 0, 0],
        on_a.acked.clone(),
        on_c.acked.clone(),
        ws_acked,
    ]
    .concat();
    acked.sort_unstable();
    delivered.sort_unstable();
    assert_eq!(
        delivered, acked,
        "exactly the acknowledged records are the stream's (A refused {:?}, C refused {:?})",
        on_a.refused, on_c.refused
    );
    for refusal in on_a.refused.iter().chain(&on_c.refused) {
        assert_eq!(refusal, "409 stream_ended");
    }
    assert!(
        ws_nacked.iter().all(|code| code == "stream_ended"),
        "{ws_nacked:?}"
    );
    for d in [a, b, c] {
        d.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_graceful_restart_loses_nothing_and_processes_nothing_twice() {
    rolling_restart(false).await;
}

/// The same with one hop: the instances write results where they accept records, and a
/// partition handed over while its group member waits for a confirmation is read again by
/// its next owner, confirmation and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_graceful_restart_with_one_hop_loses_nothing_and_processes_nothing_twice() {
    rolling_restart(true).await;
}

async fn rolling_restart(one_hop: bool) {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let tansu = Tansu::start();
    let mut config = on(&tansu);
    config.processing.at_ingest = one_hop;
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(Daemon::start(config.clone()).await);
    }
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(daemons[0].start_stream(ALICE, None).await);
    }
    let urls: Vec<String> = daemons.iter().map(|d| d.url("")).collect();

    // About 100 records/s, round robin over streams and instances; a send refused or cut by
    // a stopping instance goes to the next one.
    let acked: Arc<Mutex<HashSet<(String, i64)>>> = Arc::default();
    let (count, running) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(true)),
    );
    let sender = {
        let (acked, count, running) = (acked.clone(), count.clone(), running.clone());
        let http = reqwest::Client::new();
        let streams = streams.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
            for n in 0.. {
                if !running.load(Ordering::Relaxed) {
                    return;
                }
                tick.tick().await;
                let id = &streams[n % streams.len()];
                for attempt in 0..urls.len() {
                    let url = &urls[(n + attempt) % urls.len()];
                    let resp = http
                        .post(format!("{url}/api/stream/{id}/send"))
                        .header("x-api-key", ALICE)
                        .json(&n)
                        .send()
                        .await;
                    let Ok(resp) = resp else { continue };
                    let (status, body) = status_and_json(resp).await;
                    if status == 202 {
                        let offset = body["offsets"][0].as_i64().unwrap();
                        acked.lock().unwrap().insert((id.clone(), offset));
                        count.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        })
    };
    let wait_for = |n: usize| {
        let count = count.clone();
        async move {
            let deadline = std::time::Instant::now() + WAIT;
            while count.load(Ordering::Relaxed) < n {
                assert!(std::time::Instant::now() < deadline, "load stalled");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(200).await;
    for i in 0..3 {
        let d = daemons.remove(i);
        let addr = d.addr;
        d.stop().await.unwrap();
        let restarted = Daemon::start_on(config.clone(), addr).await;
        restarted.wait_until_ready().await;
        daemons.insert(i, restarted);
        wait_for(count.load(Ordering::Relaxed) + 200).await;
    }
    running.store(false, Ordering::Relaxed);
    sender.await.unwrap();

    // Every acknowledged record has exactly one result in the results topic.
    let acked = acked.lock().unwrap().clone();
    let bootstrap = tansu.bootstrap();
    let deadline = std::time::Instant::now() + WAIT;
    let results = loop {
        let b = bootstrap.clone();
        let records = tokio::task::spawn_blocking(move || read_topic(&b, "streamgate.results"))
            .await
            .unwrap();
        let mut results: HashMap<(String, i64), usize> = HashMap::new();
        for r in &records {
            let f = r.json();
            if f["type"] == "result" {
                let key = (r.key.clone().unwrap(), f["input_offset"].as_i64().unwrap());
                *results.entry(key.clone()).or_default() += 1;
            }
        }
        if acked.iter().all(|k| results.contains_key(k)) || std::time::Instant::now() > deadline {
            break results;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let lost = acked.iter().filter(|k| !results.contains_key(*k)).count();
    let duplicated: Vec<_> = results.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(lost, 0, "of {} acknowledged records", acked.len());
    assert!(
        duplicated.is_empty(),
        "{} of {} records were processed more than once: {:?}",
        duplicated.len(),
        results.len(),
        &duplicated[..duplicated.len().min(5)]
    );
    for d in daemons {
        d.stop().await.unwrap();
    }
}

/// `streamgate_results_partitions_read` of one instance.
async fn partitions_read(d: &Daemon) -> u64 {
    let metrics = d.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("streamgate_results_partitions_read "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no partitions metric in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_router_reads_only_the_partitions_its_subscribers_need() {
    let tansu = Tansu::start();
    let mut config = on(&tansu);
    config.limits.delivery.results_partition_idle_ms = 300;
    let partitions = config.topics.partitions;
    let (a, b, c) = (
        Daemon::start(config.clone()).await,
        Daemon::start(config.clone()).await,
        Daemon::start(config).await,
    );
    // Two streams whose results live in different partitions.
    let x = a.start_stream(ALICE, None).await;
    let px = streamgate::kafka::partition_for(&x, partitions);
    let y = loop {
        let y = a.start_stream(ALICE, None).await;
        if streamgate::kafka::partition_for(&y, partitions) != px {
            break y;
        }
    };
    for d in [&a, &b, &c] {
        assert_eq!(
            partitions_read(d).await,
            0,
            "nothing is read without subscribers"
        );
    }

    let mut on_a = a.subscribe(ALICE, &x).await;
    let mut on_b = b.subscribe(ALICE, &y).await;
    assert_eq!(partitions_read(&a).await, 1);
    assert_eq!(partitions_read(&b).await, 1);
    assert_eq!(partitions_read(&c).await, 0, "C has no subscriber");

    // Delivery is unaffected: sends through any instance reach the subscribers, in order.
    for i in 1..=10 {
        assert_eq!(c.send_json(ALICE, &x, &json!(i)).await.0, 202);
        assert_eq!(a.send_json(ALICE, &y, &json!(-i)).await.0, 202);
    }
    let data = |frames: Vec<Value>| -> Vec<i64> {
        frames.iter().map(|f| f["data"].as_i64().unwrap()).collect()
    };
    assert_eq!(
        data(results(&mut on_a, 10).await),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        data(results(&mut on_b, 10).await),
        (1..=10).map(|i| -i).collect::<Vec<_>>()
    );

    // A subscriber on C, which read nothing, while sends go on: replay then live, no gap,
    // no duplicate.
    let sender = {
        let (url, x) = (a.url(""), x.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 11..=60 {
                let resp = http
                    .post(format!("{url}/api/stream/{x}/send"))
                    .header("x-api-key", ALICE)
                    .json(&i)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
            }
        })
    };
    let mut on_c = c.subscribe_from(ALICE, &x, "earliest").await;
    sender.await.unwrap();
    assert_eq!(
        data(results(&mut on_c, 60).await),
        (1..=60).collect::<Vec<_>>()
    );
    assert_eq!(partitions_read(&c).await, 1);

    // B's last subscriber leaves: B stops reading its partition.
    drop(on_b);
    let deadline = std::time::Instant::now() + WAIT;
    while partitions_read(&b).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "B never released its partition"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Results written while it was not read, then a subscriber that needs it again: the
    // replay gives them, and live delivery goes on after, each once.
    for i in 11..=20 {
        assert_eq!(a.send_json(ALICE, &y, &json!(-i)).await.0, 202);
    }
    let mut again = b.subscribe_from(ALICE, &y, "earliest").await;
    assert_eq!(partitions_read(&b).await, 1);
    for i in 21..=25 {
        assert_eq!(c.send_json(ALICE, &y, &json!(-i)).await.0, 202);
    }
    assert_eq!(
        data(results(&mut again, 25).await),
        (1..=25).map(|i| -i).collect::<Vec<_>>()
    );
    for d in [a, b, c] {
        d.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_follows_streams_of_every_partition_sent_through_other_instances() {
    use std::collections::HashMap;

    let tansu = Tansu::start();
    let config = on(&tansu);
    let partitions = config.topics.partitions;
    let (a, b, c) = (
        Daemon::start(config.clone()).await,
        Daemon::start(config.clone()).await,
        Daemon::start(config).await,
    );
    for d in [&a, &b, &c] {
        d.wait_until_ready().await;
    }
    // Two streams in each results partition: each partition's records are processed by
    // whichever instance the group gave it, and A's router reads all of them for the one
    // connection.
    let mut ids: Vec<String> = Vec::new();
    let mut per_partition: HashMap<i32, usize> = HashMap::new();
    while ids.len() < 2 * partitions as usize {
        let id = a.start_stream(ALICE, None).await;
        let count = per_partition
            .entry(streamgate::kafka::partition_for(&id, partitions))
            .or_default();
        if *count < 2 {
            *count += 1;
            ids.push(id);
        }
    }
    let mut ws = a.connect(ALICE).await;
    for id in &ids {
        send_frame(
            &mut ws,
            &json!({"type": "subscribe", "stream_id": id, "from": "latest"}),
        )
        .await;
    }
    for _ in &ids {
        let f = next_frame(&mut ws).await;
        assert_eq!(f["type"], "subscribed", "{f}");
    }
    assert_eq!(partitions_read(&a).await, partitions as u64);

    // Twenty records per stream, in batches of five alternating between B and C (each
    // batch acknowledged before the next is sent, so that is the order stored), then a
    // last one through B: every stream's results, once each, in order, on A's connection.
    for (i, start) in (1..=20).step_by(5).enumerate() {
        let through = if i % 2 == 0 { &b } else { &c };
        for id in &ids {
            let body: String = (start..start + 5).map(|n| format!("{n}\n")).collect();
            let (status, resp) = through.send_ndjson(ALICE, id, body).await;
            assert_eq!(status, 202, "{resp}");
        }
    }
    for id in &ids {
        assert_eq!(b.send_json(ALICE, id, &json!(21)).await.0, 202);
    }
    let mut got: HashMap<String, Vec<i64>> = HashMap::new();
    let mut cursors: HashMap<String, i64> = HashMap::new();
    while got.len() < ids.len() || got.values().any(|v| v.last() != Some(&21)) {
        let f = next_frame(&mut ws).await;
        assert_eq!(f["type"], "result", "{f}");
        let stream = f["stream_id"].as_str().unwrap().to_string();
        let cursor = f["cursor"].as_i64().unwrap();
        if let Some(last) = cursors.insert(stream.clone(), cursor) {
            assert!(cursor > last, "{stream}: cursor {cursor} after {last}");
        }
        got.entry(stream)
            .or_default()
            .push(f["data"].as_i64().unwrap());
    }
    for id in &ids {
        assert_eq!(got[id], (1..=21).collect::<Vec<_>>(), "stream {id}");
    }
    // The partitions were processed by more than one instance (the group spread them).
    let mut processed = Vec::new();
    for d in [&a, &b, &c] {
        let metrics = d.metrics().await;
        processed.push(
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("streamgate_records_processed_total "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0),
        );
    }
    assert!(
        processed.iter().sum::<u64>() >= 21 * ids.len() as u64,
        "processed per instance: {processed:?}"
    );
    assert!(
        processed.iter().filter(|n| **n > 0).count() >= 2,
        "processed per instance: {processed:?}"
    );
    for d in [a, b, c] {
        d.stop().await.unwrap();
    }
}
