//! Prometheus metrics for `/metrics`: requests, records in and out, subscribers, lag closes
//! and broker acknowledgement and end-to-end latency. One registry per daemon instance (not the process-wide
//! default), so several daemons in one process (tests) keep separate counts.

use crate::latency::RecentLatency;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub records_in: IntCounter,
    pub results_out: IntCounter,
    pub processed: IntCounter,
    pub processing_errors: IntCounter,
    pub subscribers: IntGauge,
    /// Results partitions this instance's router reads (those with subscribers here).
    pub results_partitions_read: IntGauge,
    pub lagged_closes: IntCounter,
    pub send_ack_seconds: Histogram,
    /// Connections open (WebSockets included), and those refused at a cap or by `accept`.
    pub connections: IntGauge,
    pub connections_refused: IntCounter,
    /// Unprocessed records per input partition, and records refused to keep it bounded.
    pub backlog_records: IntGaugeVec,
    pub backlog_refused: IntCounter,
    /// `gap` frames sent (results skipped for a subscriber, or no longer held by the broker).
    pub gaps_sent: IntCounter,
    /// Input records stored after their stream's end marker (their senders got 409): no
    /// results.
    pub after_end: IntCounter,
    /// Records processed in one hop (`processing::at_ingest`), and those the group took over.
    pub results_at_ingest: IntCounter,
    pub results_taken_over: IntCounter,
    /// Accepted → result at the router, since start (Prometheus).
    pub end_to_end_seconds: Histogram,
    /// The same over the last seconds, for `GET /api/stats`.
    pub recent_end_to_end: RecentLatency,
    /// CPU seconds of the process to 10 ms, read when rendered (the process collector's
    /// counter has whole seconds only): `streamctl bench` gives the cost of a run with it.
    cpu_seconds: prometheus::Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("streamgate".into()), None).expect("valid metrics prefix");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by method and status"),
            &["method", "status"],
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let records_in = counter(
            "records_in_total",
            "Records acknowledged by the broker on send",
        );
        let results_out = counter(
            "results_delivered_total",
            "Result frames queued to WebSocket subscribers of this instance",
        );
        let processed = counter(
            "records_processed_total",
            "Input records processed by this instance",
        );
        let processing_errors = counter(
            "processing_errors_total",
            "Input records whose processing produced an error result",
        );
        let lagged_closes = counter(
            "subscriber_lag_closes_total",
            "WebSocket subscribers closed for reading too slowly",
        );
        let subscribers =
            IntGauge::new("subscribers", "Open WebSocket subscribers").expect("valid metric");
        let results_partitions_read = IntGauge::new(
            "results_partitions_read",
            "Results partitions this instance reads: those with subscribers here, and those \
             left idle for less than a minute",
        )
        .expect("valid metric");
        let connections =
            IntGauge::new("connections_open", "Client connections open").expect("valid metric");
        let backlog_records = IntGaugeVec::new(
            Opts::new(
                "input_backlog_records",
                "Records stored in an input partition and not yet processed",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let backlog_refused = counter(
            "backlog_refused_records_total",
            "Records refused because their partition's unprocessed backlog was full",
        );
        let gaps_sent = counter(
            "gaps_sent_total",
            "gap frames sent: results a subscriber did not get, reported instead",
        );
        let after_end = counter(
            "records_after_end_total",
            "Input records stored after their stream's end marker, refused and not processed",
        );
        let results_at_ingest = counter(
            "results_at_ingest_total",
            "Input records whose results this instance wrote where it accepted them (one hop)",
        );
        let results_taken_over = counter(
            "results_taken_over_total",
            "Records accepted for one hop whose results the processing group wrote, because \
             no confirmation came within processing.at_ingest_wait_ms",
        );
        let cpu_seconds = prometheus::Gauge::new(
            "cpu_seconds",
            "User and system CPU seconds of the process, to 10 ms",
        )
        .expect("valid metric");
        let connections_refused = counter(
            "connections_refused_total",
            "Connections refused at limits.max_connections or max_connections_per_ip",
        );
        // 1 ms to 10 s: from a healthy local broker to a send timeout.
        let seconds = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]))
            .expect("valid metric")
        };
        let send_ack_seconds = seconds(
            "send_ack_seconds",
            "Time from a send request to the broker's acknowledgement of all its records",
        );
        let end_to_end_seconds = seconds(
            "end_to_end_seconds",
            "Time from the daemon accepting a record to its result reaching the results router",
        );
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(records_in.clone()),
            Box::new(results_out.clone()),
            Box::new(processed.clone()),
            Box::new(processing_errors.clone()),
            Box::new(subscribers.clone()),
            Box::new(results_partitions_read.clone()),
            Box::new(lagged_closes.clone()),
            Box::new(send_ack_seconds.clone()),
            Box::new(end_to_end_seconds.clone()),
            Box::new(connections.clone()),
            Box::new(connections_refused.clone()),
            Box::new(backlog_records.clone()),
            Box::new(backlog_refused.clone()),
            Box::new(gaps_sent.clone()),
            Box::new(after_end.clone()),
            Box::new(results_at_ingest.clone()),
            Box::new(results_taken_over.clone()),
            Box::new(cpu_seconds.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        #[cfg(target_os = "linux")]
        {
            let _ = registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        Self {
            registry,
            requests,
            records_in,
            results_out,
            processed,
            processing_errors,
            subscribers,
            results_partitions_read,
            lagged_closes,
            send_ack_seconds,
            connections,
            connections_refused,
            backlog_records,
            after_end,
            results_at_ingest,
            results_taken_over,
            backlog_refused,
            gaps_sent,
            end_to_end_seconds,
            recent_end_to_end: RecentLatency::new(),
            cpu_seconds,
        }
    }

    /// One result reached the router `latency` after its input was accepted.
    pub fn observe_end_to_end(&self, latency: std::time::Duration) {
        self.end_to_end_seconds.observe(latency.as_secs_f64());
        self.recent_end_to_end.record(latency);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(cpu) = process_cpu_seconds() {
            self.cpu_seconds.set(cpu);
        }
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// User plus system CPU seconds of this process, from `/proc/self/stat` (Linux).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are 12th and
    // 13th, in clock ticks of 10 ms (USER_HZ).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
