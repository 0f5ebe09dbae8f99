//! Prometheus metrics for `/metrics`, one group per component: each group declares and
//! registers its own metrics ([`Http`], [`IngestMetrics`], [`ProcessingMetrics`],
//! [`DeliveryMetrics`], [`TelemetryMetrics`]), and [`Metrics`] only puts them on one registry
//! per daemon instance (not the process-wide default), so several daemons in one process
//! (tests) keep separate counts.

use crate::latency::RecentLatency;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Registers a metric on `registry` and hands it back.
fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help).expect("valid metric"))
}

/// Seconds from 1 ms to 10 s: from a healthy local broker to a send timeout.
fn seconds(registry: &Registry, name: &str, help: &str) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]);
    registered(registry, Histogram::with_opts(opts).expect("valid metric"))
}

/// The HTTP server: requests and connections.
pub struct Http {
    pub requests: IntCounterVec,
    /// Connections open (WebSockets included), and those refused at a cap or by `accept`.
    pub connections: IntGauge,
    pub connections_refused: IntCounter,
}

impl Http {
    fn register(r: &Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by method and status"),
            &["method", "status"],
        )
        .expect("valid metric");
        Self {
            requests: registered(r, requests),
            connections: gauge(r, "connections_open", "Client connections open"),
            connections_refused: counter(
                r,
                "connections_refused_total",
                "Connections refused at limits.max_connections or max_connections_per_ip",
            ),
        }
    }
}

/// Ingest: what was accepted, how fast the broker acknowledged it, the backlog gate.
pub struct IngestMetrics {
    pub records_in: IntCounter,
    pub send_ack_seconds: Histogram,
    /// Unprocessed records per input partition, and records refused to keep it bounded.
    pub backlog_records: IntGaugeVec,
    pub backlog_refused: IntCounter,
    /// Requests sent again with their idempotency key and answered without storing them.
    pub replayed: IntCounter,
}

impl IngestMetrics {
    fn register(r: &Registry) -> Self {
        let backlog_records = IntGaugeVec::new(
            Opts::new(
                "input_backlog_records",
                "Records stored in an input partition and not yet processed",
            ),
            &["partition"],
        )
        .expect("valid metric");
        Self {
            records_in: counter(
                r,
                "records_in_total",
                "Records acknowledged by the broker on send",
            ),
            send_ack_seconds: seconds(
                r,
                "send_ack_seconds",
                "Time from a send request to the broker's acknowledgement of all its records",
            ),
            backlog_records: registered(r, backlog_records),
            backlog_refused: counter(
                r,
                "backlog_refused_records_total",
                "Records refused because their partition's unprocessed backlog was full",
            ),
            replayed: counter(
                r,
                "requests_replayed_total",
                "Requests sent again with their idempotency key, answered without storing them",
            ),
        }
    }
}

/// Processing: records processed, failed, stored after their end, and one hop.
pub struct ProcessingMetrics {
    pub processed: IntCounter,
    pub processing_errors: IntCounter,
    /// Input records stored after their stream's end marker (their senders got 409): no
    /// results.
    pub after_end: IntCounter,
    /// Records processed in one hop (`processing::at_ingest`), and those the group took over.
    pub results_at_ingest: IntCounter,
    pub results_taken_over: IntCounter,
    /// Records sent again with their idempotency key and stored, dropped at processing.
    pub repeats: IntCounter,
}

impl ProcessingMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            processed: counter(
                r,
                "records_processed_total",
                "Input records processed by this instance",
            ),
            processing_errors: counter(
                r,
                "processing_errors_total",
                "Input records whose processing produced an error result",
            ),
            after_end: counter(
                r,
                "records_after_end_total",
                "Input records stored after their stream's end marker, refused and not processed",
            ),
            results_at_ingest: counter(
                r,
                "results_at_ingest_total",
                "Input records whose results this instance wrote where it accepted them (one hop)",
            ),
            results_taken_over: counter(
                r,
                "results_taken_over_total",
                "Records accepted for one hop whose results the processing group wrote, because \
                 no confirmation came within processing.at_ingest_wait_ms",
            ),
            repeats: counter(
                r,
                "records_repeated_total",
                "Input records whose idempotency key and part were stored before: no result",
            ),
        }
    }
}

/// Delivery: subscribers, what they got and missed, and end-to-end latency.
pub struct DeliveryMetrics {
    pub results_out: IntCounter,
    pub subscribers: IntGauge,
    /// Results partitions this instance's router reads (those with subscribers here).
    pub results_partitions_read: IntGauge,
    pub lagged_closes: IntCounter,
    /// `gap` frames sent (results skipped for a subscriber, or no longer held by the broker).
    pub gaps_sent: IntCounter,
    /// Accepted → result at the router, since start (Prometheus).
    end_to_end_seconds: Histogram,
    /// The same over the last seconds, for `GET /api/stats`.
    pub recent_end_to_end: RecentLatency,
}

impl DeliveryMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            results_out: counter(
                r,
                "results_delivered_total",
                "Result frames queued to subscribers of this instance",
            ),
            subscribers: gauge(r, "subscribers", "Open results subscribers"),
            results_partitions_read: gauge(
                r,
                "results_partitions_read",
                "Results partitions this instance reads: those with subscribers here, and those \
                 left idle for less than limits.results_partition_idle_ms",
            ),
            lagged_closes: counter(
                r,
                "subscriber_lag_closes_total",
                "Subscribers closed for reading too slowly",
            ),
            gaps_sent: counter(
                r,
                "gaps_sent_total",
                "gap frames sent: results a subscriber did not get, reported instead",
            ),
            end_to_end_seconds: seconds(
                r,
                "end_to_end_seconds",
                "Time from the daemon accepting a record to its result reaching the results router",
            ),
            recent_end_to_end: RecentLatency::new(),
        }
    }

    /// One result reached the router `latency` after its input was accepted.
    pub fn observe_end_to_end(&self, latency: std::time::Duration) {
        self.end_to_end_seconds.observe(latency.as_secs_f64());
        self.recent_end_to_end.record(latency);
    }
}

/// Trace export: spans sent to the collector, and those dropped (queue full, collector
/// refused or silent).
pub struct TelemetryMetrics {
    pub spans_exported: IntCounter,
    pub spans_dropped: IntCounter,
}

impl TelemetryMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            spans_exported: counter(
                r,
                "spans_exported_total",
                "Trace spans the OTLP collector accepted",
            ),
            spans_dropped: counter(
                r,
                "spans_dropped_total",
                "Trace spans dropped: telemetry.max_queue full, or the collector refused or did \
                 not answer their export",
            ),
        }
    }
}

/// Every metric of one daemon instance.
pub struct Metrics {
    registry: Registry,
    pub http: Http,
    pub ingest: IngestMetrics,
    pub processing: ProcessingMetrics,
    pub delivery: DeliveryMetrics,
    pub telemetry: TelemetryMetrics,
    /// CPU seconds of the process to 10 ms, read when rendered (the process collector's
    /// counter has whole seconds only): `streamctl bench` gives the cost of a run with it.
    cpu_seconds: prometheus::Gauge,
    /// Requests the instance's Kafka clients sent (`streamgate_kafka_requests_total`): the
    /// cluster's clients count here.
    pub kafka_requests: crate::kafka::Requests,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("streamgate".into()), None).expect("valid metrics prefix");
        let cpu_seconds = prometheus::Gauge::new(
            "cpu_seconds",
            "User and system CPU seconds of the process, to 10 ms",
        )
        .expect("valid metric");
        #[cfg(target_os = "linux")]
        {
            let _ = registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        Self {
            http: Http::register(&registry),
            ingest: IngestMetrics::register(&registry),
            processing: ProcessingMetrics::register(&registry),
            delivery: DeliveryMetrics::register(&registry),
            telemetry: TelemetryMetrics::register(&registry),
            cpu_seconds: registered(&registry, cpu_seconds),
            kafka_requests: {
                let requests = crate::kafka::Requests::default();
                registered(&registry, requests.counter());
                requests
            },
            registry,
        }
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
