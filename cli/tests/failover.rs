//! A processing instance that goes away mid-stream loses no acknowledged record: its
//! partitions move to the surviving instance, which resumes from the committed offsets.
//! An instance killed while it accepts records (one hop: it writes their results itself)
//! loses none either: every record it stored gets its result, from it or, unconfirmed, from
//! the processing group. Checked in the topics themselves with a plain Kafka consumer.
//!
//! SIGKILL runs on the embedded (librdkafka mock) broker, whose group coordinator evicts a
//! dead member after its session timeout and tells the others to rebalance, as Kafka and
//! Redpanda do, and on tansu 0.6.0, which evicts the member without telling the survivors:
//! there the survivor's orphan watch (`processing/orphans.rs`) sees the dead member's
//! partitions stand still with records waiting and rejoins the group to take them.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use streamgate::config::{Brokers, Topics};
use streamgate::kafka::{partition_for, EmbeddedBroker};
use streamgate_testkit::*;
use tokio::process::Command;

/// stream id -> (value sent, input offset) of every acknowledged record.
type Acked = HashMap<String, Vec<(i64, i64)>>;

fn spawn_daemon(bootstrap: &str, port: u16) -> tokio::process::Child {
    let listen = format!("127.0.0.1:{port}");
    spawn_serve(&[
        "--brokers",
        bootstrap,
        "--listen",
        &listen,
        "--api-key",
        ALICE,
        "--log-format",
        "json",
    ])
}

/// `streamctl serve ARGS` as a process of its own, quiet, killed with the test.
fn spawn_serve(args: &[&str]) -> tokio::process::Child {
    Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// `streamgate_records_processed_total` of the daemon at `url`.
async fn processed(http: &reqwest::Client, url: &str) -> u64 {
    let Ok(resp) = http.get(format!("{url}/metrics")).send().await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("streamgate_records_processed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Sends `value` to every stream through `d`, recording the acknowledged offsets.
async fn send_round(d: &Daemon, streams: &[String], value: i64, acked: &mut Acked) {
    for id in streams {
        let (status, body) = d.send_json(ALICE, id, &Value::from(value)).await;
        assert_eq!(status, 202, "{body}");
        let offset = body["offsets"][0].as_i64().unwrap();
        acked.entry(id.clone()).or_default().push((value, offset));
    }
}

/// Waits until every acknowledged record has its result, in order per stream (a redelivered
/// duplicate carries the same input offset and is allowed).
async fn wait_for_all_results(bootstrap: &str, acked: &Acked) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let b = bootstrap.to_string();
        let results = tokio::task::spawn_blocking(move || read_topic(&b, "streamgate.results"))
            .await
            .unwrap();
        let mut seen: HashMap<String, BTreeMap<i64, i64>> = HashMap::new();
        let mut last: HashMap<String, i64> = HashMap::new();
        for r in &results {
            let f = r.json();
            let (Some(id), Some(offset)) = (f["stream_id"].as_str(), f["input_offset"].as_i64())
            else {
                continue;
            };
            let prev = last.entry(id.to_string()).or_insert(-1);
            let redelivery = seen.get(id).is_some_and(|m| m.contains_key(&offset));
            assert!(
                offset > *prev || redelivery,
                "stream {id}: input offset {offset} after {prev}"
            );
            *prev = (*prev).max(offset);
            seen.entry(id.to_string())
                .or_default()
                .insert(offset, f["data"].as_i64().unwrap_or(-1));
        }
        let lost: Vec<String> = acked
            .iter()
            .flat_map(|(id, recs)| {
                let seen = &seen;
                recs.iter()
                    .filter(move |(v, o)| seen.get(id).and_then(|m| m.get(o)) != Some(v))
                    .map(move |(_, o)| format!("{id}@{o} (partition {})", partition_for(id, 3)))
            })
            .collect();
        if lost.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} acknowledged records have no result: {lost:?}",
            lost.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How the second instance goes away.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Stop {
    /// No goodbye: the coordinator notices after the session timeout.
    Kill,
    /// Graceful shutdown, which leaves the group.
    Term,
}

/// Daemon A (in this process) and daemon B (a process) share the processing group. B stops
/// mid-stream while A keeps acknowledging records; every one of them must reach the results.
async fn failover(bootstrap: String, stop: Stop) {
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(bootstrap.clone());
    // Every record through the processing group, which is what fails over here.
    config.processing.at_ingest = false;
    let a = Daemon::start(config).await;
    let b_port = free_port();
    let b_url = format!("http://127.0.0.1:{b_port}");
    let mut b = spawn_daemon(&bootstrap, b_port);

    // One stream per partition, so B owns some of them whatever the assignment.
    let mut streams: Vec<String> = Vec::new();
    let mut covered = [false; 3];
    while covered.iter().any(|c| !c) {
        let id = a.start_stream(ALICE, None).await;
        let p = partition_for(&id, 3) as usize;
        if !covered[p] {
            covered[p] = true;
            streams.push(id);
        }
    }

    let mut acked = Acked::new();
    let mut value = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Until B has processed records of its own (so it owns partitions), and a few rounds more.
    loop {
        value += 1;
        send_round(&a, &streams, value, &mut acked).await;
        if value >= 10 && processed(&a.http, &b_url).await > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never processed a record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match stop {
        Stop::Kill => b.start_kill().unwrap(),
        Stop::Term => {
            let pid = b.id().unwrap().to_string();
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .await
                .unwrap();
        }
    }
    b.wait().await.unwrap();
    for _ in 0..10 {
        value += 1;
        send_round(&a, &streams, value, &mut acked).await;
    }
    wait_for_all_results(&bootstrap, &acked).await;
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_processing_daemon_loses_no_acknowledged_record() {
    let topics = Topics {
        partitions: 3,
        ..Topics::default()
    };
    let broker = EmbeddedBroker::start(&topics).unwrap();
    failover(broker.bootstrap_servers().to_string(), Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_processing_daemon_loses_no_acknowledged_record_on_tansu() {
    let tansu = Tansu::start();
    let started = std::time::Instant::now();
    failover(tansu.bootstrap(), Stop::Kill).await;
    eprintln!(
        "tansu SIGKILL failover: every result in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_processing_daemon_hands_over_its_partitions_on_tansu() {
    let tansu = Tansu::start();
    failover(tansu.bootstrap(), Stop::Term).await;
}

/// Sends rounds of records through the daemon at `url` (another process) until it stops
/// answering; returns what it acknowledged and counts it in `answered` as it goes.
async fn send_until_gone(
    url: String,
    streams: Vec<String>,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Acked {
    let http = reqwest::Client::new();
    let mut acked = Acked::new();
    for value in 1_000.. {
        for id in &streams {
            let sent = http
                .post(format!("{url}/api/stream/{id}/send"))
                .header("x-api-key", ALICE)
                .json(&Value::from(value))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            let Ok(resp) = sent else { return acked };
            let (status, body) = status_and_json(resp).await;
            if status != 202 {
                return acked;
            }
            let offset = body["offsets"][0].as_i64().unwrap();
            acked.entry(id.clone()).or_default().push((value, offset));
            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_accepting_daemon_loses_no_stored_record() {
    let topics = Topics {
        partitions: 3,
        ..Topics::default()
    };
    let broker = EmbeddedBroker::start(&topics).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(bootstrap.clone());
    config.processing.at_ingest = true;
    config.processing.at_ingest_wait_ms = 1_000;
    let a = Daemon::start(config).await;
    let b_port = free_port();
    // B with A's settings: the same key, no rate limits.
    let dir = tempfile::tempdir().unwrap();
    let b_config = dir.path().join("b.yaml");
    std::fs::write(
        &b_config,
        format!(
            "listen: 127.0.0.1:{b_port}\nbrokers: {bootstrap}\n\
             api_keys: [{{name: alice, key: {ALICE}}}]\n\
             rate_limits: {{per_ip: null, per_key: null, per_ip_public: null}}\n\
             topics: {{partitions: 3}}\nprocessing: {{at_ingest: true, at_ingest_wait_ms: 1000}}\n"
        ),
    )
    .unwrap();
    let mut b = spawn_serve(&["--config", b_config.to_str().unwrap()]);
    let b_url = format!("http://127.0.0.1:{b_port}");
    let http = reqwest::Client::new();
    let ready = tokio::time::Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{b_url}/readyz"))
        .send()
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(tokio::time::Instant::now() < ready, "B never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(a.start_stream(ALICE, None).await);
    }

    // B accepts records (and writes their results) until it is killed mid-stream.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = tokio::spawn(send_until_gone(
        b_url.clone(),
        streams.clone(),
        answered.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 60 {
        assert!(tokio::time::Instant::now() < deadline, "B answered too few");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.start_kill().unwrap();
    b.wait().await.unwrap();
    let acked_by_b = sender.await.unwrap();

    // Every record stored in the input topic has its result: those B acknowledged, and those
    // it stored without answering or without writing their results (A's processing group
    // takes B's partitions over and writes what B did not confirm).
    let b2 = bootstrap.clone();
    let input = tokio::task::spawn_blocking(move || read_topic(&b2, "streamgate.input"))
        .await
        .unwrap();
    let mut stored = Acked::new();
    for r in input {
        if let Some(id) = r.key.as_ref().filter(|k| streams.contains(k)) {
            let value = r.json().as_i64().unwrap();
            stored
                .entry(id.clone())
                .or_default()
                .push((value, r.offset));
        }
    }
    for (id, recs) in &acked_by_b {
        for rec in recs {
            assert!(
                stored[id].contains(rec),
                "{id}: {rec:?} acknowledged, not stored"
            );
        }
    }
    wait_for_all_results(&bootstrap, &stored).await;
    a.stop().await.unwrap();
}
