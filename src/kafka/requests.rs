//! How many requests this process's Kafka clients sent to the brokers. On a broker like tansu
//! a request costs about 2 ms of CPU whatever it carries, so requests per record, not bytes,
//! is what a record costs the broker; the daemon exports the count
//! (`streamgate_kafka_requests_total`) and `streamctl bench` reports it per record, for the
//! gateway and for its raw-Kafka baseline alike.
//!
//! The count comes from librdkafka's statistics: every client made with [`Requests::create`]
//! reports, each [`STATS_INTERVAL_MS`], how many requests it has sent to each broker, and its
//! context adds what is new. So the count is at most one interval behind, and a client dropped
//! between two reports leaves its last interval uncounted.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::IntCounter;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaResult;
use serde::Deserialize;

/// How often each client reports its statistics.
pub const STATS_INTERVAL_MS: u64 = 1000;

/// Requests sent by every client made here, as a Prometheus counter (registered by whoever
/// exports it). Cheap to clone: clones count together.
#[derive(Clone)]
pub struct Requests(IntCounter);

impl Default for Requests {
    fn default() -> Self {
        Self(
            IntCounter::new(
                "kafka_requests_total",
                "Requests this instance's Kafka clients sent to the brokers (librdkafka \
                 statistics, up to a second behind)",
            )
            .expect("valid metric"),
        )
    }
}

impl Requests {
    pub fn total(&self) -> u64 {
        self.0.get()
    }

    /// The counter, to register on a metrics registry.
    pub fn counter(&self) -> IntCounter {
        self.0.clone()
    }

    /// A client of `config` whose requests count here.
    pub fn create<T: FromClientConfigAndContext<Counted>>(
        &self,
        config: &ClientConfig,
    ) -> KafkaResult<T> {
        reporting(config).create_with_context(self.context())
    }

    /// A context for one client, for a client that needs a context of its own (it forwards
    /// its statistics to this one's [`Counted::count`]).
    pub fn context(&self) -> Counted {
        Counted {
            requests: self.clone(),
            seen: Mutex::default(),
        }
    }
}

/// `config` with statistics reported every [`STATS_INTERVAL_MS`], for a client whose context
/// hands them to a [`Counted`].
pub fn reporting(config: &ClientConfig) -> ClientConfig {
    let mut config = config.clone();
    config.set("statistics.interval.ms", STATS_INTERVAL_MS.to_string());
    config
}

/// The part of librdkafka's statistics read here.
#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: HashMap<String, Broker>,
}

#[derive(Deserialize)]
struct Broker {
    /// Requests sent to this broker since the client started.
    #[serde(default)]
    tx: u64,
}

/// One client's context: counts the requests its statistics report since their last report.
pub struct Counted {
    requests: Requests,
    /// Per broker (as librdkafka names it), the requests counted so far.
    seen: Mutex<HashMap<String, u64>>,
}

impl Counted {
    /// Counts what a statistics report (librdkafka's JSON) says is new.
    pub fn count(&self, statistics: &[u8]) {
        let Ok(statistics) = serde_json::from_slice::<Statistics>(statistics) else {
            return;
        };
        let mut seen = self.seen.lock().expect("requests lock");
        let mut new = 0;
        for (name, broker) in statistics.brokers {
            let before = seen.insert(name, broker.tx).unwrap_or(0);
            new += broker.tx.saturating_sub(before);
        }
        self.requests.0.inc_by(new);
    }
}

impl ClientContext for Counted {
    fn stats_raw(&self, statistics: &[u8]) {
        self.count(statistics);
    }
}

impl ConsumerContext for Counted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_report_adds_what_is_new_per_broker() {
        let requests = Requests::default();
        let client = requests.context();
        client.count(br#"{"brokers": {"b/bootstrap": {"tx": 2}, "b/1": {"tx": 10}}}"#);
        assert_eq!(requests.total(), 12);
        client.count(br#"{"brokers": {"b/1": {"tx": 15}}}"#);
        assert_eq!(requests.total(), 17);
        // Another client counts into the same total; a report that cannot be read counts
        // nothing.
        let other = requests.context();
        other.count(br#"{"brokers": {"b/1": {"tx": 3}}}"#);
        other.count(b"not json");
        assert_eq!(requests.total(), 20);
    }
}
