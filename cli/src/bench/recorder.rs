//! What a run observed, shared by the tasks that send and receive: per-stream ledgers,
//! latency histograms (HdrHistogram, microseconds), errors by kind, and counters for the
//! progress line. Locks are held for one update each; contention is negligible next to a
//! network round trip.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::ledger::{StreamLedger, Totals};
use super::report::{Latency, Rates, Records, RunReport, Target};
use super::schedule::Schedule;

pub struct Recorder {
    schedule: Schedule,
    /// When batch 0 was due.
    start: Instant,
    /// Subscribers per stream; every record is expected once on each.
    subscribers: usize,
    /// One per subscriber: stream `s`, subscriber `k` is `s * subscribers + k`.
    ledgers: Vec<Mutex<StreamLedger>>,
    /// Intended send → result received.
    end_to_end: Mutex<Histogram<u64>>,
    /// Intended send → acknowledgement received.
    ack: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    last_ack: Mutex<Option<Instant>>,
    last_receive: Mutex<Option<Instant>>,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub received: AtomicU64,
    /// Sent and refused (error answer, nack): settled without an acknowledgement.
    pub refused: AtomicU64,
    pub error_count: AtomicU64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Recorder {
    pub fn new(schedule: Schedule, start: Instant, subscribers: usize) -> Self {
        let subscribers = subscribers.max(1);
        Self {
            schedule,
            start,
            subscribers,
            ledgers: (0..schedule.streams * subscribers)
                .map(|_| Mutex::default())
                .collect(),
            end_to_end: Mutex::new(histogram()),
            ack: Mutex::new(histogram()),
            errors: Mutex::default(),
            last_ack: Mutex::default(),
            last_receive: Mutex::default(),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            received: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
        }
    }

    pub fn streams(&self) -> usize {
        self.schedule.streams
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    fn since_due(&self, stream: usize, seq: u64, at: Instant) -> u64 {
        let due = self.start + self.schedule.due_of(stream, seq);
        at.saturating_duration_since(due).as_micros() as u64
    }

    /// `n` records were handed to the transport.
    pub fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Records `seq..seq + n` of `stream` were acknowledged at `at`.
    pub fn acked(&self, stream: usize, seq: u64, n: u64, at: Instant) {
        if n == 0 {
            return;
        }
        for ledger in self.of_stream(stream) {
            let mut ledger = ledger.lock().unwrap();
            for s in seq..seq + n {
                ledger.ack(s);
            }
        }
        let latency = self.since_due(stream, seq, at);
        self.ack
            .lock()
            .unwrap()
            .saturating_record_n(latency.max(1), n);
        self.acked.fetch_add(n, Ordering::Relaxed);
        *self.last_ack.lock().unwrap() = Some(at);
    }

    /// Record `seq` of `stream`, stored at input `offset`, arrived as a result at `at`.
    /// The ledgers of one stream's subscribers.
    fn of_stream(&self, stream: usize) -> &[Mutex<StreamLedger>] {
        &self.ledgers[stream * self.subscribers..(stream + 1) * self.subscribers]
    }

    /// A result arrived on subscriber `subscriber` (0-based) of `stream`.
    pub fn received(&self, stream: usize, subscriber: usize, seq: u64, offset: i64, at: Instant) {
        let first = self.of_stream(stream)[subscriber]
            .lock()
            .unwrap()
            .receive(seq, offset);
        if first {
            let latency = self.since_due(stream, seq, at);
            self.end_to_end
                .lock()
                .unwrap()
                .saturating_record(latency.max(1));
            self.received.fetch_add(1, Ordering::Relaxed);
            *self.last_receive.lock().unwrap() = Some(at);
        }
    }

    /// A send of `n` records from `seq` failed after its first `stored` were stored (a 503
    /// says how many); the rest are refused, counted under `kind`.
    pub fn partly_stored(
        &self,
        stream: usize,
        seq: u64,
        n: u64,
        stored: u64,
        at: Instant,
        kind: impl Into<String>,
    ) {
        self.acked(stream, seq, stored, at);
        self.refused(n - stored);
        self.error(kind, n - stored);
    }

    /// `n` sent records were refused; they will not be acknowledged.
    pub fn refused(&self, n: u64) {
        self.refused.fetch_add(n, Ordering::Relaxed);
    }

    /// Something went wrong `n` times; `kind` names it (HTTP status and code, close reason).
    pub fn error(&self, kind: impl Into<String>, n: u64) {
        *self.errors.lock().unwrap().entry(kind.into()).or_default() += n;
        self.error_count.fetch_add(n, Ordering::Relaxed);
    }

    /// Acknowledged records that have not arrived yet.
    pub fn waiting(&self) -> u64 {
        self.ledgers
            .iter()
            .map(|l| l.lock().unwrap().waiting())
            .sum()
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for l in &self.ledgers {
            t += l.lock().unwrap().totals();
        }
        t
    }

    /// The run's report; call once sending and draining are over.
    pub fn report(&self, transport: &str, payload_bytes: usize) -> RunReport {
        let t = self.totals();
        let sent = self.sent.load(Ordering::Relaxed);
        // Every subscriber's ledger holds the stream's acks.
        let acked = t.acked / self.subscribers as u64;
        let rate = |n: u64, last: &Mutex<Option<Instant>>| {
            let elapsed = last
                .lock()
                .unwrap()
                .map(|at| at.saturating_duration_since(self.start))
                .unwrap_or(Duration::ZERO)
                .as_secs_f64();
            if elapsed > 0.0 {
                n as f64 / elapsed
            } else {
                0.0
            }
        };
        RunReport {
            target: Target {
                streams: self.schedule.streams,
                rate: self.schedule.rate,
                duration_s: self.schedule.duration.as_secs_f64(),
                payload_bytes,
                transport: transport.to_string(),
                batch: self.schedule.batch,
                subscribers: self.subscribers,
                processor: None,
            },
            records: Records {
                sent,
                acked,
                failed: sent.saturating_sub(acked),
                received: t.received,
                lost: t.lost,
                duplicated: t.duplicated,
                reordered: t.reordered,
                received_unacked: t.received_unacked,
            },
            rates: Rates {
                send_per_s: rate(acked, &self.last_ack),
                receive_per_s: rate(t.received, &self.last_receive),
            },
            latency_ms: super::report::Latencies {
                end_to_end: Latency::of(&self.end_to_end.lock().unwrap()),
                ack: Latency::of(&self.ack.lock().unwrap()),
            },
            errors: self.errors.lock().unwrap().clone(),
            kafka_requests_per_record: None,
        }
    }
}
