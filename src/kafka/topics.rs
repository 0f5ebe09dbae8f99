//! Streamgate's three topics on the broker: created when missing, read back (partition counts
//! are what the broker says, not what the config asked for), and Streamgate's partitioning.
//!
//! Partitioning is Streamgate's own and documented: `murmur2(stream id) & 0x7fffffff % N`,
//! Kafka's default (Java client) partitioner, so any Kafka tool can find a stream's partition
//! and a record's key fully determines where it lives in both the input and results topics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use super::client_config;
use crate::config::{Brokers, Config};
use crate::error::Error;

/// How long the key index topic keeps a key: the longest idempotency window.
const KEYS_RETENTION_MS: &str = "604800000";

/// How long start-up waits for a real broker before giving up with an error.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one metadata request waits.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between metadata requests while waiting.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Kafka's murmur2, as in the Java client's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` in a topic of `partitions` partitions.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions.max(1)
}

/// A topic and how many partitions it has on the broker (read back, not assumed).
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: i32,
}

/// Streamgate's topics as they exist on the broker.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub input: TopicInfo,
    pub results: TopicInfo,
    pub streams: TopicInfo,
    pub keys: TopicInfo,
}

/// Creates the topics that are missing (the embedded broker has them already, and an
/// operator may have created them with tighter permissions), then reads back their partition
/// counts.
pub async fn ensure_topics(config: &Config, bootstrap: &str) -> Result<TopicLayout, Error> {
    let topics = &config.topics;
    let consumer: Arc<BaseConsumer> = Arc::new(
        client_config(bootstrap, &config.kafka)
            .create()
            .map_err(|e| Error::kafka("create metadata client", e))?,
    );
    let names = [
        topics.input.clone(),
        topics.results.clone(),
        topics.streams.clone(),
        topics.keys.clone(),
    ];
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let missing = retry(deadline, &consumer, &names, missing_topics, |e| {
        tracing::warn!(error = %e, "broker not reachable yet; retrying");
    })
    .await
    .map_err(|e| {
        Error::Startup(format!(
            "broker not reachable within {STARTUP_TIMEOUT:?}: {e}"
        ))
    })?;
    if !missing.is_empty() && config.brokers != Brokers::Embedded {
        let admin: AdminClient<DefaultClientContext> = client_config(bootstrap, &config.kafka)
            .create()
            .map_err(|e| Error::kafka("create admin client", e))?;
        let repl = || TopicReplication::Fixed(topics.replication_factor);
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|name| {
                if *name == topics.streams {
                    NewTopic::new(name, 1, repl()).set("cleanup.policy", "compact")
                } else if *name == topics.keys {
                    NewTopic::new(name, topics.partitions, repl())
                        .set("cleanup.policy", "compact,delete")
                        .set("retention.ms", KEYS_RETENTION_MS)
                } else {
                    NewTopic::new(name, topics.partitions, repl())
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&new_topics, &opts)
            .await
            .map_err(|e| Error::kafka(format!("create topics on {bootstrap}"), e))?;
        for r in results {
            match r {
                Ok(name) => tracing::info!(topic = %name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Startup(format!(
                        "cannot create topic {name}: {code}"
                    )))
                }
            }
        }
    }
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let counts = retry(deadline, &consumer, &names, partitions, |e| {
        tracing::debug!(error = %e, "waiting for topic metadata");
    })
    .await
    .map_err(Error::Startup)?;
    Ok(TopicLayout {
        input: TopicInfo {
            name: topics.input.clone(),
            partitions: counts[0],
        },
        results: TopicInfo {
            name: topics.results.clone(),
            partitions: counts[1],
        },
        streams: TopicInfo {
            name: topics.streams.clone(),
            partitions: counts[2],
        },
        keys: TopicInfo {
            name: topics.keys.clone(),
            partitions: counts[3],
        },
    })
}

/// Tries `attempt` (a blocking metadata request) until it succeeds or `deadline` passes,
/// pausing between tries. Each try runs on its own blocking thread and the pauses are async,
/// so dropping the future (a stop during start-up) leaves at most one request to finish.
async fn retry<T: Send + 'static>(
    deadline: Instant,
    consumer: &Arc<BaseConsumer>,
    names: &[String],
    attempt: fn(&BaseConsumer, &[String]) -> Result<T, String>,
    on_failure: impl Fn(&str),
) -> Result<T, String> {
    loop {
        let (c, n) = (consumer.clone(), names.to_vec());
        let result = tokio::task::spawn_blocking(move || attempt(&c, &n))
            .await
            .map_err(|e| format!("metadata task: {e}"))?;
        match result {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() < deadline => {
                on_failure(&e);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Topics of `names` the broker does not have (an error while it does not answer).
fn missing_topics(consumer: &BaseConsumer, names: &[String]) -> Result<Vec<String>, String> {
    let md = consumer
        .fetch_metadata(None, METADATA_TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok(names
        .iter()
        .filter(|n| {
            !md.topics()
                .iter()
                .any(|t| t.name() == n.as_str() && !t.partitions().is_empty())
        })
        .cloned()
        .collect())
}

/// The partition count of every topic of `names` (an error until each has partitions: new
/// topics take a moment).
fn partitions(consumer: &BaseConsumer, names: &[String]) -> Result<Vec<i32>, String> {
    names
        .iter()
        .map(|name| {
            let md = consumer
                .fetch_metadata(Some(name), METADATA_TIMEOUT)
                .map_err(|e| format!("metadata for {name}: {e}"))?;
            match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(t.partitions().len() as i32)
                }
                _ => Err(format!("topic {name} has no partitions yet")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn partition_is_in_range_and_stable() {
        for n in 1..20 {
            let p = partition_for("9b2d6a0e-0000-4000-8000-000000000000", n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition_for("9b2d6a0e-0000-4000-8000-000000000000", n));
        }
    }
}
