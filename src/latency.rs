//! End-to-end latency over the last seconds, for `GET /api/stats` (what `streamctl top`
//! shows): from the daemon accepting a record to its result reaching the results router.
//!
//! Prometheus histograms answer "since start"; an operator watching live wants "now". Two
//! HdrHistograms rotate every `WINDOW`, so percentiles cover the last 10–20 s.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::wire::Percentiles;

const WINDOW: Duration = Duration::from_secs(10);

pub struct RecentLatency {
    inner: Mutex<Windows>,
}

struct Windows {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated: Instant,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 h, 2 significant digits: small, and plenty for p50/p99 on a dashboard.
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

impl RecentLatency {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Windows {
                current: histogram(),
                previous: histogram(),
                rotated: Instant::now(),
            }),
        }
    }

    fn rotate(w: &mut Windows, now: Instant) {
        let elapsed = now.saturating_duration_since(w.rotated);
        if elapsed >= WINDOW {
            w.previous = std::mem::replace(&mut w.current, histogram());
            if elapsed >= 2 * WINDOW {
                w.previous.reset();
            }
            w.rotated = now;
        }
    }

    pub fn record(&self, latency: Duration) {
        self.record_at(latency, Instant::now());
    }

    fn record_at(&self, latency: Duration, now: Instant) {
        let mut w = self.inner.lock().expect("latency lock");
        Self::rotate(&mut w, now);
        w.current
            .saturating_record((latency.as_micros() as u64).max(1));
    }

    pub fn snapshot(&self) -> Percentiles {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> Percentiles {
        let mut w = self.inner.lock().expect("latency lock");
        Self::rotate(&mut w, now);
        let mut both = w.previous.clone();
        both.add(&w.current).expect("same bounds");
        let ms = |q: f64| both.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: both.len(),
            p50: if both.is_empty() { 0.0 } else { ms(0.5) },
            p99: if both.is_empty() { 0.0 } else { ms(0.99) },
        }
    }
}

impl Default for RecentLatency {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_the_last_window_and_then_forget() {
        let l = RecentLatency::new();
        let t0 = Instant::now();
        for ms in 1..=100 {
            l.record_at(Duration::from_millis(ms), t0);
        }
        let p = l.snapshot_at(t0);
        assert_eq!(p.count, 100);
        assert!((49.0..=51.0).contains(&p.p50), "{p:?}");
        assert!((98.0..=100.0).contains(&p.p99), "{p:?}");
        // One window later the old values still count; two windows later they are gone.
        assert_eq!(l.snapshot_at(t0 + WINDOW).count, 100);
        assert_eq!(l.snapshot_at(t0 + 3 * WINDOW).count, 0);
    }
}
