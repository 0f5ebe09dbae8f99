//! `--baseline`: the same schedule produced and consumed with rdkafka straight on the broker,
//! no gateway in between, measured by the same recorder. It uses the daemon's own producer
//! settings (`streamgate::kafka::TopicProducer`: idempotent, acks=all, keyed by stream) and a
//! plain consumer, on its own topic (`streamgate.bench`, read from its end), so gateway ÷
//! baseline is the price of the gateway on this broker and machine.
//!
//! The topic is kept between runs rather than deleted: DeleteTopics on tansu 0.6.0 (sqlite)
//! damages the watermarks of *other* topics and the broker then panics on their next fetch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Deserialize;
use streamgate::kafka::{self, append_all, Counted, Requests, TopicInfo, TopicProducer};
use tokio::sync::watch;
use uuid::Uuid;

use super::drive::{drive, InFlight};
use super::gateway::{WARM_UP, WARM_UP_TIMEOUT};
use super::recorder::Recorder;
use super::report::RunReport;
use super::schedule::Batch;
use super::Load;

/// How long a baseline send may wait for the broker, as the daemon's default send timeout.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Record {
    s: usize,
    q: u64,
}

/// Produces one warm-up record per stream and waits until the consumer has read them all, so
/// the measurement does not include connecting and the first fetches.
async fn warm_up(
    producer: &TopicProducer,
    consumer: &StreamConsumer<Counted>,
    keys: &[String],
) -> anyhow::Result<()> {
    for key in keys {
        append_all(producer, key, &[WARM_UP])
            .await
            .map_err(|e| anyhow::anyhow!("baseline warm-up send: {e}"))?;
    }
    let wait = async {
        for _ in keys {
            consumer.recv().await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(WARM_UP_TIMEOUT, wait)
        .await
        .context("baseline warm-up: records not read back in time")?
}

/// Where the baseline runs: a broker and a fresh topic on it.
pub struct Target {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    /// The embedded broker: consumers get the daemon's settings for it.
    pub embedded: bool,
    /// librdkafka settings for the producer and consumer (`--baseline-kafka`).
    pub kafka: BTreeMap<String, String>,
}

/// The baseline's topic.
pub const TOPIC: &str = "streamgate.bench";

pub async fn run(target: &Target, load: &Load, progress: bool) -> anyhow::Result<RunReport> {
    let schedule = load.schedule;
    let (bootstrap, topic, partitions) = (&target.bootstrap, &target.topic, target.partitions);
    // What the baseline's clients send the broker, counted as the daemon counts its own.
    let requests = Requests::default();
    let producer = TopicProducer::new(
        bootstrap,
        &producer_settings(&target.kafka),
        TopicInfo {
            name: topic.clone(),
            partitions,
        },
        Some(SEND_TIMEOUT),
        &requests,
    )?;
    let consumer_settings = kafka::consumer_settings(&target.kafka, target.embedded);
    let consumer: StreamConsumer<Counted> = requests
        .create(&kafka::consumer_config(
            bootstrap,
            &consumer_settings,
            &format!("{topic}-reader"),
        ))
        .context("create the baseline consumer")?;
    consumer.assign(&end_of(&consumer, topic, partitions).await?)?;
    // Keys like the daemon's: one per stream.
    let keys: Arc<Vec<String>> = Arc::new(
        (0..schedule.streams)
            .map(|_| Uuid::new_v4().to_string())
            .collect(),
    );

    warm_up(&producer, &consumer, &keys).await?;
    // Requests from here on: the warm-up's reported first.
    tokio::time::sleep(super::STATS_LAG).await;
    let requests_before = requests.total();
    let start = Instant::now() + Duration::from_millis(200);
    let rec = Arc::new(Recorder::new(schedule, start, 1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader = tokio::spawn(read(consumer, rec.clone(), stop_rx));
    let sent = drive(
        load,
        &rec,
        "baseline",
        progress,
        async |batch: Batch, in_flight: &InFlight| {
            let Batch {
                stream,
                first,
                records,
            } = batch;
            let (producer, rec, keys) = (producer.clone(), rec.clone(), keys.clone());
            in_flight
                .spawn(async move {
                    let n = records.len() as u64;
                    let result = append_all(&producer, &keys[stream], &records).await;
                    let at = Instant::now();
                    match result {
                        Ok(_) => rec.acked(stream, first, n, at),
                        Err(e) => {
                            let stored = e.acknowledged as u64;
                            let kind = "kafka produce not acknowledged";
                            rec.partly_stored(stream, first, n, stored, at, kind);
                        }
                    }
                })
                .await
        },
    )
    .await;
    tokio::time::sleep(super::STATS_LAG).await;
    let sent_requests = requests.total() - requests_before;
    let _ = stop_tx.send(true);
    let _ = reader.await;
    sent?;
    let mut report = rec.report("kafka", load.payload_bytes);
    report.kafka_requests_per_record =
        (report.records.acked > 0).then(|| sent_requests as f64 / report.records.acked as f64);
    Ok(report)
}

async fn read(
    consumer: StreamConsumer<Counted>,
    rec: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => return,
            msg = consumer.recv() => msg,
        };
        let at = Instant::now();
        match msg {
            Ok(m) => match m.payload().map(serde_json::from_slice::<Record>) {
                Some(Ok(r)) if r.s < rec.streams() => rec.received(r.s, 0, r.q, m.offset(), at),
                _ => rec.error("record the bench cannot read", 1),
            },
            Err(e) => rec.error(format!("kafka consume: {e}"), 1),
        }
    }
}

/// Creates the baseline topic on a real broker if missing and returns its partition count as
/// the broker reports it.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<i32> {
    let admin: AdminClient<DefaultClientContext> =
        kafka::client_config(bootstrap, &BTreeMap::new())
            .create()
            .context("create the baseline admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new_topic = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    // An existing topic (from an earlier run) is fine: the per-topic error is ignored.
    if let Err(e) = admin.create_topics(&new_topic, &opts).await {
        anyhow::bail!("create the baseline topic {topic}: {e}");
    }
    let metadata: BaseConsumer = kafka::client_config(bootstrap, &BTreeMap::new()).create()?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = metadata
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
                .unwrap_or(0);
            if found > 0 {
                return Ok(found);
            }
            if Instant::now() > deadline {
                anyhow::bail!("the baseline topic {topic} did not appear on the broker");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await?
}

/// The settings that apply to a producer: librdkafka warns about consumer-only ones.
fn producer_settings(kafka: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    kafka
        .iter()
        .filter(|(k, _)| !k.starts_with("fetch.") && !k.starts_with("group."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every partition of `topic` at its current end: earlier runs' records are not read.
async fn end_of(
    consumer: &StreamConsumer<Counted>,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("read the end of {topic} partition {p}"))?;
        list.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    Ok(list)
}
