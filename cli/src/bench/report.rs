//! The bench report: its JSON shape (`--json`; field names are documented in
//! docs/benchmarks.md and kept stable) and its text form.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Everything one `streamctl bench` invocation measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Through the daemon (with `--find-max`: the highest rate that held the bounds, or the
    /// first step if none did).
    pub gateway: RunReport,
    /// The same load straight through rdkafka, with `--baseline`.
    pub baseline: Option<RunReport>,
    /// Gateway divided by baseline, with `--baseline`.
    pub ratio: Option<Ratio>,
    pub find_max: Option<FindMax>,
    /// The baseline's own steps, with `--find-max` and `--baseline`.
    pub baseline_find_max: Option<FindMax>,
    /// CPU spent through the gateway (every step of `--find-max` together).
    pub cost: super::cost::Cost,
}

fn cost_text(out: &mut String, cost: &super::cost::Cost) {
    let line = |who: &str, s: Option<f64>, per: Option<f64>| match (s, per) {
        (Some(s), Some(per)) => format!("{who} {s:.2} s ({per:.1} ms per 1000 records)"),
        _ => format!("{who} unknown"),
    };
    let mut parts = vec![line(
        if cost.daemon_includes_bench {
            "daemon and bench (one process)"
        } else {
            "daemon"
        },
        cost.daemon_cpu_s,
        cost.daemon_cpu_ms_per_1000_records,
    )];
    if cost.broker_cpu_s.is_some() {
        parts.push(line(
            "broker",
            cost.broker_cpu_s,
            cost.broker_cpu_ms_per_1000_records,
        ));
    }
    let _ = writeln!(out, "  CPU: {}", parts.join("; "));
    if let (Some(n), Some(per)) = (
        cost.daemon_kafka_requests,
        cost.daemon_kafka_requests_per_record,
    ) {
        let _ = writeln!(out, "  Kafka requests: daemon {n:.0} ({per:.2} per record)");
    }
}

/// One run at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub target: Target,
    pub records: Records,
    pub rates: Rates,
    pub latency_ms: Latencies,
    /// Count by kind, e.g. `http 429 rate_limited`, `ws close 4008`, `connect`.
    pub errors: BTreeMap<String, u64>,
    /// The baseline's: requests its Kafka clients sent to the broker per acknowledged record
    /// (librdkafka's statistics; the gateway's are in `cost`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_requests_per_record: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub streams: usize,
    /// Records per second, all streams together.
    pub rate: f64,
    pub duration_s: f64,
    pub payload_bytes: usize,
    /// `http`, `ws` or `kafka` (the baseline).
    pub transport: String,
    pub batch: usize,
    /// Subscribers per stream (`--subscribers`): received, lost, duplicated and reordered
    /// then count deliveries, a record to each of them.
    pub subscribers: usize,
    /// The streams' processor (`--processor`); absent for identity and for the baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Records {
    /// Handed to the transport.
    pub sent: u64,
    /// Acknowledged as stored.
    pub acked: u64,
    /// Sent but not acknowledged (errors say why).
    pub failed: u64,
    /// Distinct records that arrived as results.
    pub received: u64,
    /// Acknowledged but never arrived: must be 0.
    pub lost: u64,
    pub duplicated: u64,
    /// Arrived after a later record of the same stream.
    pub reordered: u64,
    /// Arrived although their send was not acknowledged.
    pub received_unacked: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    /// Acknowledged records per second, from the first due time to the last acknowledgement.
    pub send_per_s: f64,
    /// Received records per second, from the first due time to the last arrival.
    pub receive_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// Intended send time → result frame received.
    pub end_to_end: Latency,
    /// Intended send time → acknowledgement received.
    pub ack: Latency,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                count: 0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Gateway ÷ baseline: how much throughput the gateway keeps (≤ 1) and how much latency it
/// adds (≥ 1 as a factor).
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub receive_rate: f64,
    pub p50: f64,
    pub p99: f64,
    /// The gateway's highest sustainable rate over the baseline's, with `--find-max`; `null`
    /// without it, or when either had no step that held the bound.
    pub max_rate: Option<f64>,
    /// With `--subscribers` above 1: the gateway's deliveries/s within `--max-p99-ms` over
    /// the raw broadcaster's (a run that broke the bound or lost a record counts 0; with
    /// `--find-max`, each at its highest sustainable rate); `null` for one subscriber, or
    /// when the broadcaster held no rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<f64>,
    /// The daemon's Kafka requests per record over the raw-Kafka baseline's at the same rate;
    /// `null` with `--find-max` (different rates) or when either is unknown.
    pub kafka_requests_per_record: Option<f64>,
}

impl Ratio {
    pub fn of(gateway: &RunReport, baseline: &RunReport) -> Self {
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let (g, b) = (
            &gateway.latency_ms.end_to_end,
            &baseline.latency_ms.end_to_end,
        );
        Self {
            receive_rate: div(gateway.rates.receive_per_s, baseline.rates.receive_per_s),
            p50: div(g.p50, b.p50),
            p99: div(g.p99, b.p99),
            max_rate: None,
            fan_out: None,
            kafka_requests_per_record: None,
        }
    }

    /// Adds the ratio of Kafka requests per record: `gateway`'s (the daemon's, from `cost`)
    /// over the baseline's.
    pub fn with_requests(mut self, gateway: Option<f64>, baseline: &RunReport) -> Self {
        self.kafka_requests_per_record = match (gateway, baseline.kafka_requests_per_record) {
            (Some(g), Some(b)) if b > 0.0 => Some(g / b),
            _ => None,
        };
        self
    }

    /// Adds the ratio of deliveries/s within the p99 bound.
    pub fn with_fan_out(
        mut self,
        gateway: &RunReport,
        baseline: &RunReport,
        max_p99_ms: f64,
    ) -> Self {
        let within = |r: &RunReport| match r.latency_ms.end_to_end.p99 <= max_p99_ms
            && r.records.lost == 0
            && r.records.failed == 0
        {
            true => r.rates.receive_per_s,
            false => 0.0,
        };
        let raw = within(baseline);
        self.fan_out = (raw > 0.0).then(|| within(gateway) / raw);
        self
    }

    /// Adds the ratio of the two highest sustainable rates.
    pub fn with_max_rates(mut self, gateway: Option<&FindMax>, baseline: Option<&FindMax>) -> Self {
        let max = |f: Option<&FindMax>| f.and_then(|f| f.max_sustainable_rate);
        self.max_rate = match (max(gateway), max(baseline)) {
            (Some(g), Some(b)) if b > 0.0 => Some(g / b),
            _ => None,
        };
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FindMax {
    /// The bound a step must keep: end-to-end p99 at most this, no loss, no failed sends, and
    /// at least 95% of the target rate received.
    pub max_p99_ms: f64,
    pub steps: Vec<Step>,
    /// The highest rate that held the bound; `null` if even the first did not.
    pub max_sustainable_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: f64,
    pub passed: bool,
    pub receive_per_s: f64,
    pub p99_ms: f64,
    pub acked: u64,
    pub lost: u64,
    pub failed: u64,
}

impl Report {
    /// The human-readable form.
    pub fn text(&self) -> String {
        let mut out = String::new();
        run_text(&mut out, "Through the gateway", &self.gateway);
        cost_text(&mut out, &self.cost);
        if let Some(b) = &self.baseline {
            out.push('\n');
            let title = match b.target.subscribers {
                1 => "Baseline: rdkafka straight to the broker",
                _ => "Baseline: a raw WebSocket broadcaster (no Kafka)",
            };
            run_text(&mut out, title, b);
        }
        if let Some(r) = &self.ratio {
            let _ = writeln!(
                out,
                "\nGateway vs baseline: {:.2}x the receive rate, {:.2}x p50, {:.2}x p99 latency{}",
                r.receive_rate,
                r.p50,
                r.p99,
                if self.baseline_find_max.is_some() {
                    " (each at its own highest sustainable rate)"
                } else {
                    ""
                }
            );
            if let (Some(r), Some(g), Some(b)) = (
                r.kafka_requests_per_record,
                self.cost.daemon_kafka_requests_per_record,
                self.baseline
                    .as_ref()
                    .and_then(|b| b.kafka_requests_per_record),
            ) {
                let _ = writeln!(
                    out,
                    "Kafka requests per record: gateway {g:.2}, baseline {b:.2}: {r:.2}x"
                );
            }
        }
        if let Some(f) = &self.find_max {
            find_max_text(&mut out, "Find max", f);
        }
        if let Some(f) = &self.baseline_find_max {
            find_max_text(&mut out, "Find max, baseline", f);
        }
        if let Some(r) = self.ratio.as_ref().and_then(|r| r.fan_out) {
            let _ = writeln!(
                out,
                "\nFan-out, deliveries/s within the p99 bound, gateway vs raw broadcaster: {r:.2}x"
            );
        }
        if let Some(r) = self.ratio.as_ref().and_then(|r| r.max_rate) {
            let _ = writeln!(
                out,
                "\nHighest sustainable rate, gateway vs baseline: {r:.2}x"
            );
        }
        out
    }
}

fn find_max_text(out: &mut String, title: &str, f: &FindMax) {
    let _ = writeln!(
        out,
        "\n{title} (bound: p99 <= {} ms, no loss, no failed sends, >= 95% of the rate received)",
        f.max_p99_ms
    );
    for s in &f.steps {
        let _ = writeln!(
            out,
            "  {:>10.0}/s  {}  received {:>10.1}/s  p99 {:>9.2} ms  lost {}  failed {}",
            s.rate,
            if s.passed { "ok  " } else { "FAIL" },
            s.receive_per_s,
            s.p99_ms,
            s.lost,
            s.failed
        );
    }
    let _ = match f.max_sustainable_rate {
        Some(r) => writeln!(out, "Highest sustainable rate: {r:.0} records/s"),
        None => writeln!(out, "No step held the bound."),
    };
}

fn run_text(out: &mut String, title: &str, r: &RunReport) {
    let t = &r.target;
    let _ = writeln!(
        out,
        "{title}: {} streams, {} records/s for {} s, {} B records, {} batch {}{}{}",
        t.streams,
        t.rate,
        t.duration_s,
        t.payload_bytes,
        t.transport,
        t.batch,
        match &t.processor {
            Some(p) => format!(", processor {p}"),
            None => String::new(),
        },
        match t.subscribers {
            1 => String::new(),
            n => format!(", {n} subscribers per stream (received counts deliveries)"),
        }
    );
    let c = &r.records;
    let _ = writeln!(
        out,
        "  records   sent {}  acked {}  failed {}  received {}  lost {}  duplicated {}  reordered {}",
        c.sent, c.acked, c.failed, c.received, c.lost, c.duplicated, c.reordered
    );
    if c.received_unacked > 0 {
        let _ = writeln!(
            out,
            "            received although not acknowledged: {}",
            c.received_unacked
        );
    }
    let _ = writeln!(
        out,
        "  rates     sent {:.1}/s  received {:.1}/s",
        r.rates.send_per_s, r.rates.receive_per_s
    );
    let _ = writeln!(
        out,
        "  latency (ms)       p50       p90       p99     p99.9       max      mean"
    );
    for (name, l) in [
        ("end to end", &r.latency_ms.end_to_end),
        ("ack", &r.latency_ms.ack),
    ] {
        let _ = writeln!(
            out,
            "  {name:<12}{:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
    }
    if r.errors.is_empty() {
        let _ = writeln!(out, "  errors    none");
    } else {
        for (kind, n) in &r.errors {
            let _ = writeln!(out, "  errors    {n} × {kind}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn climbed(max: Option<f64>) -> FindMax {
        FindMax {
            max_p99_ms: 100.0,
            steps: Vec::new(),
            max_sustainable_rate: max,
        }
    }

    #[test]
    fn the_ratio_of_maxima_needs_both() {
        let ratio = || Ratio {
            receive_rate: 1.0,
            p50: 1.0,
            p99: 1.0,
            max_rate: None,
            fan_out: None,
            kafka_requests_per_record: None,
        };
        let (g, b) = (climbed(Some(450.0)), climbed(Some(900.0)));
        assert_eq!(
            ratio().with_max_rates(Some(&g), Some(&b)).max_rate,
            Some(0.5)
        );
        assert_eq!(ratio().with_max_rates(Some(&g), None).max_rate, None);
        let none = climbed(None);
        assert_eq!(ratio().with_max_rates(Some(&g), Some(&none)).max_rate, None);
    }
}
