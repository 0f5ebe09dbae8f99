//! One hop (`processing::at_ingest`) on a real broker (tansu): the accepting instance writes
//! a per-record stream's results itself, once each, in order, and confirms them; and each
//! failure between the input's ack and the confirmation is recovered by the processing group.
//! The failures are staged the way a crashed instance leaves the topics: a tagged input
//! record written straight to the broker, with or without its results, never confirmed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use streamgate::config::{Brokers, Config};
use streamgate::kafka::records::{AT_INGEST_HEADER, TYPE_HEADER};
use streamgate::kafka::{now_ms, partition_for};
use streamgate_testkit::*;

const INPUT: &str = "streamgate.input";
const RESULTS: &str = "streamgate.results";

fn on(tansu: &Tansu, wait_ms: u64) -> Config {
    let mut c = test_config();
    c.brokers = Brokers::Bootstrap(tansu.bootstrap());
    c.processing.at_ingest = true;
    c.processing.at_ingest_wait_ms = wait_ms;
    c
}

/// A counter's value in a `/metrics` text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the metrics"))
}

/// Writes one record straight to the broker, into `stream`'s partition; returns its offset.
async fn produce(
    tansu: &Tansu,
    topic: &str,
    stream: &str,
    payload: &Value,
    header: (&str, &str),
) -> (i32, i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .create()
        .unwrap();
    let partition = partition_for(stream, test_config().topics.partitions);
    let payload = payload.to_string();
    let record = FutureRecord::to(topic)
        .key(stream)
        .payload(&payload)
        .partition(partition)
        .timestamp(now_ms())
        .headers(OwnedHeaders::new().insert(Header {
            key: header.0,
            value: Some(header.1),
        }));
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
    (delivery.partition, delivery.offset)
}

/// Input offsets of a stream's results in the results topic, with how often each appears.
async fn result_offsets(tansu: &Tansu, stream: &str) -> BTreeMap<i64, usize> {
    let bootstrap = tansu.bootstrap();
    let records = tokio::task::spawn_blocking(move || read_topic(&bootstrap, RESULTS))
        .await
        .unwrap();
    let mut seen = BTreeMap::new();
    for r in records.iter().filter(|r| r.key.as_deref() == Some(stream)) {
        let frame = r.json();
        if frame["type"] == "result" {
            *seen
                .entry(frame["input_offset"].as_i64().unwrap())
                .or_default() += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accepting_instance_writes_each_result_once_in_order_and_confirms_it() {
    let tansu = Tansu::start();
    // A long wait: a missing confirmation would show as a late result, not a duplicate.
    let a = Daemon::start(on(&tansu, 60_000)).await;
    let id = a
        .start_stream(
            ALICE,
            Some(json!({"processor": {"type": "jq", "filter": "{v: .}"}})),
        )
        .await;
    let mut tail = a.subscribe(ALICE, &id).await;
    let (status, body) = a
        .send_ndjson(ALICE, &id, (1..=20).map(|i| format!("{i}\n")).collect())
        .await;
    assert_eq!(status, 202, "{body}");
    // Pipelined WebSocket frames: their results follow the frames' order.
    let mut sender = a.subscribe(ALICE, &id).await;
    for i in 21..=30 {
        send_text(&mut sender, &i.to_string()).await;
    }
    let got: Vec<Value> = results(&mut tail, 30)
        .await
        .iter()
        .map(|f| f["data"]["v"].clone())
        .collect();
    assert_eq!(got, (1..=30).map(Value::from).collect::<Vec<_>>());

    let metrics = a.metrics().await;
    assert_eq!(counter(&metrics, "streamgate_results_at_ingest_total"), 30);
    assert_eq!(counter(&metrics, "streamgate_results_taken_over_total"), 0);

    // In the broker: one result per input record, and every input record confirmed.
    let once = result_offsets(&tansu, &id).await;
    assert_eq!(once.len(), 30, "{once:?}");
    assert!(once.values().all(|n| *n == 1), "{once:?}");
    let bootstrap = tansu.bootstrap();
    let input = tokio::task::spawn_blocking(move || read_topic(&bootstrap, INPUT))
        .await
        .unwrap();
    let stored: BTreeSet<i64> = input
        .iter()
        .filter(|r| r.key.as_deref() == Some(id.as_str()))
        .map(|r| r.offset)
        .collect();
    let confirmed: BTreeSet<i64> = input
        .iter()
        .filter(|r| r.key.as_deref() == Some("streamgate-confirmed"))
        .flat_map(|r| serde_json::from_value::<Vec<i64>>(r.json()).unwrap())
        .collect();
    assert_eq!(confirmed, stored);
    assert_eq!(once.keys().copied().collect::<BTreeSet<_>>(), stored);
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stored_but_never_processed_by_its_instance_is_processed_by_the_group_before_the_end(
) {
    let tansu = Tansu::start();
    let a = Daemon::start(on(&tansu, 500)).await;
    let id = a
        .start_stream(
            ALICE,
            Some(json!({"processor": {"type": "jq", "filter": ".n * 2"}})),
        )
        .await;
    let mut tail = a.subscribe(ALICE, &id).await;
    // An instance stored this record and died before writing its result.
    let (_, offset) = produce(
        &tansu,
        INPUT,
        &id,
        &json!({"n": 21}),
        (AT_INGEST_HEADER, "1"),
    )
    .await;
    // The stream ends right behind it: its end must still follow the record's result.
    assert_eq!(a.end_stream(ALICE, &id).await, 200);
    let result = next_frame(&mut tail).await;
    assert_eq!(result["type"], "result", "{result}");
    assert_eq!(result["data"], 42);
    assert_eq!(result["input_offset"], offset);
    let end = next_frame(&mut tail).await;
    assert_eq!(end["type"], "end", "{end}");

    let metrics = a.metrics().await;
    assert_eq!(counter(&metrics, "streamgate_results_taken_over_total"), 1);
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_written_but_never_confirmed_are_written_again_with_the_same_input_offset() {
    let tansu = Tansu::start();
    let a = Daemon::start(on(&tansu, 500)).await;
    let id = a.start_stream(ALICE, None).await;
    let mut tail = a.subscribe(ALICE, &id).await;
    // An instance stored this record, wrote its result, and died before confirming it.
    let (partition, offset) = produce(
        &tansu,
        INPUT,
        &id,
        &json!({"n": 1}),
        (AT_INGEST_HEADER, "1"),
    )
    .await;
    let now = now_ms();
    let frame = json!({"type": "result", "stream_id": id, "input_partition": partition,
        "input_offset": offset, "received_ms": now, "processed_ms": now, "data": {"n": 1}});
    produce(&tansu, RESULTS, &id, &frame, (TYPE_HEADER, "result")).await;
    let (status, _) = a.send_json(ALICE, &id, &json!({"n": 2})).await;
    assert_eq!(status, 202);

    // At least once: the result twice, both naming the same input offset, so a reader can
    // drop the second; the record after it once.
    let frames = results(&mut tail, 3).await;
    let by_offset = |o: i64| frames.iter().filter(|f| f["input_offset"] == o).count();
    assert_eq!(by_offset(offset), 2, "{frames:?}");
    assert_eq!(frames.len(), 3);
    let metrics = a.metrics().await;
    assert_eq!(counter(&metrics, "streamgate_results_taken_over_total"), 1);
    assert_eq!(counter(&metrics, "streamgate_results_at_ingest_total"), 1);
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_and_without_one_hop_serve_the_same_streams() {
    let tansu = Tansu::start();
    let one_hop = Daemon::start(on(&tansu, 60_000)).await;
    let mut config = on(&tansu, 60_000);
    config.processing.at_ingest = false;
    let group_only = Daemon::start(config).await;
    let id = one_hop
        .start_stream(ALICE, Some(json!({"processor": "uppercase"})))
        .await;
    let mut tail = one_hop.subscribe(ALICE, &id).await;
    for (i, d) in [&one_hop, &group_only, &one_hop, &group_only]
        .into_iter()
        .enumerate()
    {
        let (status, _) = d.send_json(ALICE, &id, &json!(format!("r{i}"))).await;
        assert_eq!(status, 202);
    }
    // Each once; their order across the two kinds of instance is not promised (a record
    // left to the group gets its result after its answer).
    let got: BTreeSet<String> = results(&mut tail, 4)
        .await
        .iter()
        .map(|f| f["data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got,
        BTreeSet::from(["R0", "R1", "R2", "R3"].map(String::from))
    );
    let at = |m: &str| counter(m, "streamgate_results_at_ingest_total");
    assert_eq!(at(&one_hop.metrics().await), 2);
    assert_eq!(at(&group_only.metrics().await), 0);
    assert!(result_offsets(&tansu, &id).await.values().all(|n| *n == 1));
    one_hop.stop().await.unwrap();
    group_only.stop().await.unwrap();
}

/// A tagged record of a window stream (only a client writing straight to the broker could
/// make one) gets an error result from the group; the stage goes on. Before, it panicked the
/// settling task and restarted the stage on that record again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagged_record_of_a_window_stream_is_an_error_not_a_stalled_stage() {
    let tansu = Tansu::start();
    let a = Daemon::start(on(&tansu, 300)).await;
    let spec = json!({"type": "window", "length_ms": 60000, "value": ".n"});
    let id = a
        .start_stream(ALICE, Some(json!({"processor": spec})))
        .await;
    let mut tail = a.subscribe(ALICE, &id).await;
    let (_, offset) = produce(
        &tansu,
        INPUT,
        &id,
        &json!({"n": 1}),
        (AT_INGEST_HEADER, "1"),
    )
    .await;
    let error = next_frame(&mut tail).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["input_offset"], offset);
    assert_eq!(a.end_stream(ALICE, &id).await, 200);
    assert_eq!(next_frame(&mut tail).await["type"], "end");
    a.stop().await.unwrap();
}
