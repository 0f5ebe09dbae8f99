//! Is the broker reachable? Asked by `/readyz` and every live stats push, so the answer is
//! reused for a second instead of costing a metadata request each time, and given within
//! `ANSWER_WITHIN` whatever the broker does: a probe that has not answered by then counts as
//! unreachable.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{Counted, Requests};
use crate::error::Error;

/// How long a reachability answer is reused.
const REACHABILITY_TTL: Duration = Duration::from_secs(1);
/// Longest a caller waits for a probe.
const ANSWER_WITHIN: Duration = Duration::from_millis(800);

/// Something that can tell, blocking, whether the broker answers.
pub trait Probe: Send + Sync + 'static {
    fn reachable(&self) -> bool;
}

/// Asks the broker for one topic's metadata.
pub struct MetadataProbe {
    consumer: BaseConsumer<Counted>,
    topic: String,
}

impl MetadataProbe {
    pub fn new(requests: &Requests, config: &ClientConfig, topic: &str) -> Result<Self, Error> {
        Ok(Self {
            consumer: requests
                .create(config)
                .map_err(|e| Error::kafka("create readiness probe", e))?,
            topic: topic.to_string(),
        })
    }
}

impl Probe for MetadataProbe {
    fn reachable(&self) -> bool {
        self.consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(2))
            .map(|md| md.topics().first().is_some_and(|t| t.error().is_none()))
            .unwrap_or(false)
    }
}

/// Where the broker is, and its reachability, probed at most once per `REACHABILITY_TTL`.
pub struct BrokerHealth {
    probe: Arc<dyn Probe>,
    last: Mutex<Option<(Instant, bool)>>,
    bootstrap: String,
    embedded: bool,
}

impl BrokerHealth {
    /// The health of the broker at `bootstrap` (`embedded`: the in-process one), by `probe`.
    pub fn new(probe: Arc<dyn Probe>, bootstrap: &str, embedded: bool) -> Self {
        Self {
            probe,
            last: Mutex::new(None),
            bootstrap: bootstrap.to_string(),
            embedded,
        }
    }

    /// The bootstrap address (for the embedded broker, its loopback address).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Whether it is the embedded broker.
    pub fn embedded(&self) -> bool {
        self.embedded
    }

    pub async fn reachable(&self) -> bool {
        if let Some((at, ok)) = *self.last.lock().expect("health lock") {
            if at.elapsed() < REACHABILITY_TTL {
                return ok;
            }
        }
        let probe = self.probe.clone();
        let ok = tokio::time::timeout(
            ANSWER_WITHIN,
            tokio::task::spawn_blocking(move || probe.reachable()),
        )
        .await
        .is_ok_and(|answered| answered.unwrap_or(false));
        *self.last.lock().expect("health lock") = Some((Instant::now(), ok));
        ok
    }
}
