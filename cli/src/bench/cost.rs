//! What a run cost: the daemon's CPU, from its own `/metrics` (`streamgate_cpu_seconds`, to
//! 10 ms, read before and after the run, so it works for a daemon anywhere), the broker's when
//! it runs on this machine (`--broker-pid`, from `/proc`), and the requests the daemon sent
//! the broker (`streamgate_kafka_requests_total`). Given per 1 000 acknowledged records (the
//! requests per record), so every rate carries its price.

use serde::Serialize;

use crate::client::Client;

/// The CPU counters at one moment, and the daemon's Kafka requests.
pub struct Sample {
    daemon_s: Option<f64>,
    broker_s: Option<f64>,
    daemon_requests: Option<f64>,
}

/// CPU spent during a run.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Seconds of CPU the daemon's process used during the run.
    pub daemon_cpu_s: Option<f64>,
    /// The same per 1 000 acknowledged records, in ms.
    pub daemon_cpu_ms_per_1000_records: Option<f64>,
    /// With `--embedded` the daemon runs in the bench's own process, so its figure includes
    /// the load generator's CPU.
    pub daemon_includes_bench: bool,
    /// The broker's (with `--broker-pid`).
    pub broker_cpu_s: Option<f64>,
    pub broker_cpu_ms_per_1000_records: Option<f64>,
    /// Requests the daemon's Kafka clients sent to the brokers during the run
    /// (`streamgate_kafka_requests_total`, from librdkafka's statistics), opening the
    /// streams and the idle polling included.
    pub daemon_kafka_requests: Option<f64>,
    /// The same per acknowledged record.
    pub daemon_kafka_requests_per_record: Option<f64>,
}

impl Sample {
    pub async fn take(client: &Client, broker_pid: Option<u32>) -> Self {
        let metrics = client.http().get_text("/metrics").await.ok();
        let metric = |name| metrics.as_deref().and_then(|m| metric(m, name));
        Self {
            daemon_s: metric("streamgate_cpu_seconds"),
            broker_s: broker_pid.and_then(process_cpu),
            daemon_requests: metric("streamgate_kafka_requests_total"),
        }
    }

    /// This sample with the Kafka requests of a later one.
    pub fn with_requests_of(mut self, later: Sample) -> Self {
        self.daemon_requests = later.daemon_requests;
        self
    }

    /// The cost from this sample to `after`, for `records` acknowledged records.
    pub fn until(&self, after: &Sample, records: u64, embedded: bool) -> Cost {
        let spent = |a: Option<f64>, b: Option<f64>| Some(b? - a?).filter(|s| *s >= 0.0);
        let per_1000 = |s: Option<f64>| s.filter(|_| records > 0).map(|s| s * 1e6 / records as f64);
        let daemon = spent(self.daemon_s, after.daemon_s);
        let broker = spent(self.broker_s, after.broker_s);
        let requests = spent(self.daemon_requests, after.daemon_requests);
        Cost {
            daemon_kafka_requests: requests,
            daemon_kafka_requests_per_record: requests
                .filter(|_| records > 0)
                .map(|r| r / records as f64),
            daemon_cpu_s: daemon,
            daemon_cpu_ms_per_1000_records: per_1000(daemon),
            daemon_includes_bench: embedded,
            broker_cpu_s: broker,
            broker_cpu_ms_per_1000_records: per_1000(broker),
        }
    }
}

/// The value of the metric `name` (no labels) in a `/metrics` text.
fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// User plus system CPU seconds of a local process, from `/proc/<pid>/stat`.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / USER_HZ)
}

/// Clock ticks per second in `/proc` (USER_HZ): 100 on every Linux the daemon runs on.
const USER_HZ: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_counter_and_this_process() {
        let text = "# HELP x\nstreamgate_cpu_seconds 12.5\nstreamgate_cpu_seconds_x 1\n\
                    streamgate_kafka_requests_total 7\n";
        assert_eq!(metric(text, "streamgate_cpu_seconds"), Some(12.5));
        assert_eq!(metric(text, "streamgate_kafka_requests_total"), Some(7.0));
        assert_eq!(metric(text, "streamgate_kafka"), None);
        assert!(process_cpu(std::process::id()).is_some());
        let before = Sample {
            daemon_s: Some(1.0),
            broker_s: None,
            daemon_requests: Some(100.0),
        };
        let after = Sample {
            daemon_s: Some(3.0),
            broker_s: None,
            daemon_requests: Some(6100.0),
        };
        let cost = before.until(&after, 4000, false);
        assert_eq!(cost.daemon_cpu_ms_per_1000_records, Some(500.0));
        assert_eq!(cost.broker_cpu_s, None);
        assert_eq!(cost.daemon_kafka_requests_per_record, Some(1.5));
    }
}
