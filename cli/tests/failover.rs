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
//!
//! Retry-safe sends across such a kill: records sent with idempotency keys, retried on any of
//! three `streamctl serve` processes, get exactly one result each, counted in the results
//! topic (a new owner does not write again the results its killed predecessor wrote).

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

// ---------------------------------------------------------------------------------------
// Retry-safe sends (issue 28): every record sent with its own idempotency key, 1 to 3 times,
// sequentially or concurrently, to three `streamctl serve` processes on one tansu chosen at
// random per attempt, one of them SIGKILLed mid-run and restarted on its port. Counted in
// the topics: exactly one result per key, each carrying its key.
// ---------------------------------------------------------------------------------------

/// Records sent, each with its own key.
const KEYED_RECORDS: u64 = 1_000;
/// Streams they are spread over.
const KEYED_STREAMS: usize = 4;
/// Records being sent at once (each with its 1 to 3 sends).
const KEYED_SENDERS: usize = 24;
/// Longest one send may take to be acknowledged, retries included.
const SEND_DEADLINE: Duration = Duration::from_secs(60);

/// A small deterministic generator (splitmix64), so a failing run can be repeated with its
/// seed (`IDEMPOTENCY_SEED`).
struct Rng(u64);

impl Rng {
    fn new(seed: u64, salt: u64) -> Self {
        Rng(seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// `streamctl serve` processes sharing one broker, each on a port of its own for its whole
/// life: SIGKILLed and started again there. Their logs (warnings and up, or `SERVE_LOG`'s
/// filter) go to files in a temporary directory, shown only when the test fails. Killed on
/// drop.
struct Fleet {
    dir: tempfile::TempDir,
    bootstrap: String,
    at_ingest: bool,
    ports: Vec<u16>,
    children: Vec<Option<tokio::process::Child>>,
    http: reqwest::Client,
}

impl Fleet {
    async fn start(bootstrap: &str, n: usize, at_ingest: bool) -> Self {
        let mut fleet = Fleet {
            dir: tempfile::tempdir().unwrap(),
            bootstrap: bootstrap.to_string(),
            at_ingest,
            ports: (0..n).map(|_| free_port()).collect(),
            children: (0..n).map(|_| None).collect(),
            http: reqwest::Client::new(),
        };
        for i in 0..n {
            fleet.spawn(i);
        }
        for i in 0..n {
            fleet.wait_ready(i).await;
        }
        fleet
    }

    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    fn log(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("serve-{i}.log"))
    }

    fn spawn(&mut self, i: usize) {
        let config = self.dir.path().join(format!("serve-{i}.yaml"));
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nbrokers: {bootstrap}\n\
                 api_keys: [{{name: alice, key: {ALICE}}}]\n\
                 rate_limits: {{per_ip: null, per_key: null, per_ip_public: null}}\n\
                 topics: {{partitions: 3}}\nprocessing: {{at_ingest: {at_ingest}}}\n\
                 log: {{level: warn, format: json}}\n",
                port = self.ports[i],
                bootstrap = self.bootstrap,
                at_ingest = self.at_ingest,
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_streamctl"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env(
                "RUST_LOG",
                std::env::var("SERVE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
    }

    /// Waits until instance `i` answers `/readyz` with 200 (its stage is in the group).
    async fn wait_ready(&self, i: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self
                .http
                .get(format!("{}/readyz", self.url(i)))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance {i} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }

    async fn stop_all(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.ports.len() {
                let log = std::fs::read_to_string(self.log(i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- last lines of instance {i}'s log ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// What the clients did, counted as they went.
#[derive(Default)]
struct Tally {
    sends: std::sync::atomic::AtomicU64,
    attempts: std::sync::atomic::AtomicU64,
    acknowledged: std::sync::atomic::AtomicU64,
    replayed: std::sync::atomic::AtomicU64,
    connection_errors: std::sync::atomic::AtomicU64,
    unavailable: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicU64,
}

impl Tally {
    fn add(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One send of a keyed request: attempts on instances chosen at random until one
/// acknowledges it (2xx). A connection error, a timeout or a 503 is retried at once
/// elsewhere; a 409 `idempotency_key_in_flight` (or a 429) after its Retry-After.
async fn send_keyed_until_acked(
    http: &reqwest::Client,
    urls: &[String],
    stream: &str,
    key: &str,
    body: &str,
    rng: &mut Rng,
    tally: &Tally,
) {
    Tally::add(&tally.sends);
    let deadline = tokio::time::Instant::now() + SEND_DEADLINE;
    loop {
        let url = &urls[rng.below(urls.len() as u64) as usize];
        Tally::add(&tally.attempts);
        let sent = http
            .post(format!("{url}/api/stream/{stream}/send"))
            .header("x-api-key", ALICE)
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let pause = match sent {
            Err(_) => {
                Tally::add(&tally.connection_errors);
                Duration::from_millis(20)
            }
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map_or(Duration::from_millis(200), Duration::from_secs)
                    .min(Duration::from_secs(1));
                match status_and_json(resp).await {
                    (200..=299, answer) => {
                        Tally::add(&tally.acknowledged);
                        if answer["replayed"] == true {
                            Tally::add(&tally.replayed);
                        }
                        return;
                    }
                    (503, _) => {
                        Tally::add(&tally.unavailable);
                        Duration::from_millis(20)
                    }
                    (409, answer) if answer["error"]["code"] == "idempotency_key_in_flight" => {
                        Tally::add(&tally.in_flight);
                        retry_after
                    }
                    (429, _) => retry_after,
                    (status, answer) => panic!("{key}: {status} {answer}"),
                }
            }
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} not acknowledged within {SEND_DEADLINE:?}"
        );
        tokio::time::sleep(pause).await;
    }
}

/// Sends record `n`: 1 to 3 sends under its key, all at once or one after the other.
async fn send_record(
    http: reqwest::Client,
    urls: Vec<String>,
    stream: String,
    n: u64,
    seed: u64,
    tally: std::sync::Arc<Tally>,
) {
    let mut rng = Rng::new(seed, n);
    let key = format!("rec-{n}");
    let body = serde_json::json!({ "n": n }).to_string();
    let sends = 1 + rng.below(3);
    if sends > 1 && rng.below(2) == 0 {
        let mut rngs: Vec<Rng> = (0..sends)
            .map(|s| Rng::new(seed ^ s.wrapping_add(1), n))
            .collect();
        futures_util::future::join_all(
            rngs.iter_mut()
                .map(|rng| send_keyed_until_acked(&http, &urls, &stream, &key, &body, rng, &tally)),
        )
        .await;
    } else {
        for _ in 0..sends {
            send_keyed_until_acked(&http, &urls, &stream, &key, &body, &mut rng, &tally).await;
        }
    }
}

/// `streamgate.results` and `streamgate.input`, read with a plain consumer.
async fn read_topic_async(bootstrap: &str, topic: &'static str) -> Vec<Record> {
    let b = bootstrap.to_string();
    tokio::task::spawn_blocking(move || read_topic(&b, topic))
        .await
        .unwrap()
}

/// The frames of `streams` in the results topic.
async fn result_frames(bootstrap: &str, streams: &[String]) -> Vec<Value> {
    read_topic_async(bootstrap, "streamgate.results")
        .await
        .iter()
        .map(Record::json)
        .filter(|f| {
            f["stream_id"]
                .as_str()
                .is_some_and(|id| streams.iter().any(|s| s == id))
        })
        .collect()
}

async fn keyed_sends_across_a_sigkill(at_ingest: bool) {
    let started = std::time::Instant::now();
    let seed = std::env::var("IDEMPOTENCY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let tansu = Tansu::start();
    let bootstrap = tansu.bootstrap();
    let mut fleet = Fleet::start(&bootstrap, 3, at_ingest).await;
    let urls: Vec<String> = (0..3).map(|i| fleet.url(i)).collect();
    let http = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..KEYED_STREAMS {
        let resp = http
            .post(format!("{}/api/stream/start", urls[0]))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        let (status, answer) = status_and_json(resp).await;
        assert_eq!(status, 201, "{answer}");
        streams.push(answer["stream_id"].as_str().unwrap().to_string());
    }

    // Senders take records in turn. The victim is killed once a third of them are done;
    // the last third waits until it is back, so that it receives attempts again.
    let tally = std::sync::Arc::new(Tally::default());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (back_tx, back) = tokio::sync::watch::channel(false);
    let senders: Vec<_> = (0..KEYED_SENDERS)
        .map(|_| {
            let (http, urls, streams) = (http.clone(), urls.clone(), streams.clone());
            let (tally, next, done) = (tally.clone(), next.clone(), done.clone());
            let mut back = back.clone();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= KEYED_RECORDS {
                        return;
                    }
                    if n >= KEYED_RECORDS * 2 / 3 {
                        back.wait_for(|b| *b).await.unwrap();
                    }
                    let stream =
                        streams[Rng::new(seed, n).below(KEYED_STREAMS as u64) as usize].clone();
                    send_record(http.clone(), urls.clone(), stream, n, seed, tally.clone()).await;
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let victim = Rng::new(seed, u64::MAX).below(3) as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done.load(std::sync::atomic::Ordering::Relaxed) < KEYED_RECORDS / 3 {
        assert!(tokio::time::Instant::now() < deadline, "sends too slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fleet.kill(victim).await;
    let killed_at = started.elapsed();
    fleet.spawn(victim);
    fleet.wait_ready(victim).await;
    let back_at = started.elapsed();
    back_tx.send_replace(true);
    for sender in senders {
        sender.await.unwrap();
    }
    let sent_at = started.elapsed();

    // A last keyed record per stream: keyed records always go through the processing
    // group, in order per partition, so once its result is in the results topic every
    // record stored before it in its stream has been decided.
    let mut rng = Rng::new(seed, u64::MAX - 1);
    for id in &streams {
        let body = serde_json::json!({ "last": true }).to_string();
        let marker = Tally::default();
        send_keyed_until_acked(&http, &urls, id, "last", &body, &mut rng, &marker).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let frames = loop {
        let frames = result_frames(&bootstrap, &streams).await;
        let last = frames
            .iter()
            .filter(|f| f["idempotency_key"] == "last")
            .count();
        if last >= streams.len() {
            break frames;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{last} of {} last records processed",
            streams.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Counted in the topics.
    let mut per_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let (mut unkeyed, mut errors) = (0, 0);
    for f in frames {
        match (f["type"].as_str(), f["idempotency_key"].as_str()) {
            (Some("result"), Some("last")) => {}
            (Some("result"), Some(key)) => per_key.entry(key.to_string()).or_default().push(f),
            (Some("result"), None) => unkeyed += 1,
            (Some("error"), _) => errors += 1,
            _ => {}
        }
    }
    let results: usize = per_key.values().map(Vec::len).sum();
    let duplicated: Vec<String> = per_key
        .iter()
        .filter(|(_, fs)| fs.len() > 1)
        .map(|(k, fs)| {
            let offsets: Vec<String> = fs
                .iter()
                .map(|f| format!("{}@{}", f["input_partition"], f["input_offset"]))
                .collect();
            format!("{k}: {}", offsets.join(", "))
        })
        .collect();
    let lost: Vec<u64> = (0..KEYED_RECORDS)
        .filter(|n| !per_key.contains_key(&format!("rec-{n}")))
        .collect();
    let wrong: Vec<&String> = per_key
        .iter()
        .filter(|(k, fs)| fs.iter().any(|f| format!("rec-{}", f["data"]["n"]) != **k))
        .map(|(k, _)| k)
        .collect();
    let stored: Vec<Value> = read_topic_async(&bootstrap, "streamgate.input")
        .await
        .iter()
        .filter(|r| r.key.as_ref().is_some_and(|k| streams.contains(k)))
        .map(Record::json)
        .filter(|v| v.get("n").is_some())
        .collect();
    let stored_distinct: std::collections::HashSet<u64> =
        stored.iter().filter_map(|v| v["n"].as_u64()).collect();
    let hop = if at_ingest { "on" } else { "off" };
    eprintln!(
        "idempotency keys, one hop {hop} (seed {seed}): {KEYED_RECORDS} keys over {KEYED_STREAMS} \
         streams, {} sends, {} attempts ({} connection errors, {} 503, {} 409 in flight), {} \
         acknowledged ({} replayed); {} records stored in the input topic ({} distinct); {} \
         results for {} distinct keys: {} duplicated, {} lost, {unkeyed} without a key, \
         {errors} errors. Instance {victim} SIGKILLed at {killed_at:.1?}, ready again at \
         {back_at:.1?}, all sends acknowledged at {sent_at:.1?}, counted at {:.1?}",
        Tally::get(&tally.sends),
        Tally::get(&tally.attempts),
        Tally::get(&tally.connection_errors),
        Tally::get(&tally.unavailable),
        Tally::get(&tally.in_flight),
        Tally::get(&tally.acknowledged),
        Tally::get(&tally.replayed),
        stored.len(),
        stored_distinct.len(),
        results,
        per_key.len(),
        duplicated.len(),
        lost.len(),
        started.elapsed(),
    );
    assert_eq!(Tally::get(&tally.acknowledged), Tally::get(&tally.sends));
    assert_eq!(
        stored_distinct.len() as u64,
        KEYED_RECORDS,
        "every key stored"
    );
    assert!(
        duplicated.is_empty(),
        "more than one result: {duplicated:?}"
    );
    assert!(lost.is_empty(), "no result: {lost:?}");
    assert!(wrong.is_empty(), "results under another key: {wrong:?}");
    assert_eq!((unkeyed, errors), (0, 0), "results without a key, errors");
    assert_eq!(results, per_key.len(), "results = distinct keys");
    fleet.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_across_three_daemons_and_a_sigkill_on_tansu() {
    keyed_sends_across_a_sigkill(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_across_three_daemons_and_a_sigkill_with_one_hop_on_tansu() {
    keyed_sends_across_a_sigkill(true).await;
}
