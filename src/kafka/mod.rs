//! Everything that talks to Kafka as such: how clients are configured, the embedded broker,
//! Streamgate's topics and partitioning, what is stored in them (`records`), the acknowledged
//! producer and the input log over it, and the broker's health.
//!
//! [`Cluster`] is what the components build their own clients from, so wiring the daemon
//! (`server.rs`) is handing each component the cluster, not configuring its clients for it.

mod embedded;
mod follow;
mod health;
mod input;
mod producer;
pub mod records;
mod requests;
mod topics;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

// What streamctl and the tests use; the rest is the daemon's own.
pub use embedded::EmbeddedBroker;
pub use input::append_all;
pub use producer::TopicProducer;
pub use requests::{reporting, Counted, Requests, STATS_INTERVAL_MS};
pub use topics::{partition_for, TopicInfo};

pub(crate) use follow::Follower;
#[cfg(test)]
pub(crate) use health::Probe;
pub(crate) use health::{BrokerHealth, MetadataProbe};
#[cfg(test)]
pub(crate) use input::MemoryLog;
pub(crate) use input::{append, InputLog, Meta};
pub(crate) use producer::{Receipt, SendError};
pub(crate) use topics::{ensure_topics, TopicLayout};

use crate::config::{Brokers, Config};
use crate::error::Error;

/// How long shutdown waits for queued records to reach the broker.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Milliseconds since the Unix epoch, the unit Kafka timestamps use.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Base librdkafka settings for any client: bootstrap plus the config's pass-through map,
/// which wins over everything Streamgate sets so operators can tune or secure any client.
pub fn client_config(bootstrap: &str, extra: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "streamgate");
    for (k, v) in extra {
        c.set(k, v);
    }
    c
}

/// Longest wait of a fetch on the embedded broker. librdkafka's mock broker does not answer a
/// waiting fetch when data arrives, so the default (500 ms) would be added to every record's
/// latency, twice (processing, then results). Real brokers answer as soon as data arrives.
const EMBEDDED_FETCH_WAIT_MS: &str = "10";

/// The `kafka` settings for consumers: the operator's, plus a short fetch wait on the embedded
/// broker unless the operator set one.
pub fn consumer_settings(
    extra: &BTreeMap<String, String>,
    embedded: bool,
) -> BTreeMap<String, String> {
    let mut settings = extra.clone();
    if embedded {
        settings
            .entry("fetch.wait.max.ms".into())
            .or_insert_with(|| EMBEDDED_FETCH_WAIT_MS.into());
    }
    settings
}

/// Settings for a consumer in `group` (which only matters for the processing stage: the others
/// assign partitions themselves and never commit).
pub fn consumer_config(
    bootstrap: &str,
    extra: &BTreeMap<String, String>,
    group: &str,
) -> ClientConfig {
    let mut c = client_config(bootstrap, &BTreeMap::new());
    c.set("group.id", group)
        .set("enable.partition.eof", "false")
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        c.set(k, v);
    }
    c
}

/// The broker as the daemon uses it: where it is, the operator's client settings, and
/// Streamgate's topics as they exist there. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    bootstrap: String,
    /// The config's `kafka:` map, for every client.
    settings: BTreeMap<String, String>,
    /// The same for consumers, plus the embedded broker's short fetch wait.
    consumer_settings: BTreeMap<String, String>,
    pub topics: TopicLayout,
    /// What every client made from this cluster sent to the brokers.
    pub requests: Requests,
}

impl Cluster {
    /// Reaches the broker (the embedded one when given), creates the topics it lacks and
    /// reads back their layout.
    pub async fn connect(
        config: &Config,
        embedded: Option<&EmbeddedBroker>,
    ) -> Result<Self, Error> {
        let bootstrap = match (embedded, &config.brokers) {
            (Some(e), _) => e.bootstrap_servers().to_string(),
            (None, Brokers::Embedded) => {
                return Err(Error::Startup(
                    "brokers: embedded, but no embedded broker".into(),
                ))
            }
            (None, b) => b.to_string(),
        };
        let topics = ensure_topics(config, &bootstrap).await?;
        Ok(Self {
            consumer_settings: consumer_settings(&config.kafka, embedded.is_some()),
            settings: config.kafka.clone(),
            bootstrap,
            topics,
            requests: Requests::default(),
        })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// An acknowledged producer for `topic`; `timeout = None` retries forever.
    pub fn producer(
        &self,
        topic: &TopicInfo,
        timeout: Option<Duration>,
    ) -> Result<TopicProducer, Error> {
        TopicProducer::new(
            &self.bootstrap,
            &self.settings,
            topic.clone(),
            timeout,
            &self.requests,
        )
    }

    /// Settings for a consumer in `group`.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        consumer_config(&self.bootstrap, &self.consumer_settings, group)
    }

    /// Settings for a consumer in `group` with Streamgate's `defaults`, which the operator's
    /// settings still override.
    pub fn consumer_with(&self, group: &str, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = self.consumer(group);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.consumer_settings {
            c.set(k, v);
        }
        c
    }

    /// Settings for a client that only asks for metadata.
    pub fn client(&self) -> ClientConfig {
        client_config(&self.bootstrap, &self.settings)
    }

    /// The high watermark of every partition of `topic`, in partition order.
    pub async fn high_watermarks(&self, topic: &TopicInfo) -> Result<Vec<i64>, Error> {
        let client: BaseConsumer<Counted> = self
            .requests
            .create(&self.client())
            .map_err(|e| Error::kafka("create watermark client", e))?;
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || {
            (0..topic.partitions)
                .map(|p| {
                    client
                        .fetch_watermarks(&topic.name, p, Duration::from_secs(10))
                        .map(|(_, high)| high)
                        .map_err(|e| Error::kafka(format!("read {} watermarks", topic.name), e))
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Startup(format!("watermark task: {e}")))?
    }

    /// The health of this broker, probed through the input topic's metadata.
    pub fn health(&self, embedded: bool) -> Result<BrokerHealth, Error> {
        let probe = MetadataProbe::new(&self.requests, &self.client(), &self.topics.input.name)?;
        Ok(BrokerHealth::new(
            Arc::new(probe),
            &self.bootstrap,
            embedded,
        ))
    }
}
