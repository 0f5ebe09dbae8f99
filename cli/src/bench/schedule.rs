//! The open-loop schedule: when each record was *meant* to be sent.
//!
//! Latency is measured from this intended time, not from when the request actually went out,
//! so a daemon that stalls cannot hide the stall by slowing the load generator down
//! (coordinated omission). The schedule is arithmetic: batch `j` is due at `j * batch / rate`
//! seconds and goes to stream `j % streams`, so any receiver can compute a record's intended
//! time from its stream and sequence number without sharing state with the sender.

use std::time::{Duration, Instant};

/// What to send: `rate` records/s in total, spread round-robin over `streams`, `batch`
/// records per request, for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub streams: usize,
    pub rate: f64,
    pub batch: usize,
    pub duration: Duration,
}

impl Schedule {
    /// Batches due within the duration.
    pub fn batches(&self) -> u64 {
        (self.duration.as_secs_f64() * self.rate / self.batch as f64).floor() as u64
    }

    /// When batch `j` is due, from the start.
    pub fn due(&self, j: u64) -> Duration {
        Duration::from_secs_f64(j as f64 * self.batch as f64 / self.rate)
    }

    /// The stream batch `j` goes to and the sequence number of its first record there.
    pub fn target(&self, j: u64) -> (usize, u64) {
        let n = self.streams as u64;
        ((j % n) as usize, (j / n) * self.batch as u64)
    }

    /// When record `seq` of `stream` was due, from the start.
    pub fn due_of(&self, stream: usize, seq: u64) -> Duration {
        let j = (seq / self.batch as u64) * self.streams as u64 + stream as u64;
        self.due(j)
    }
}

/// One batch, due now: records `first..` of `stream`.
pub struct Batch {
    pub stream: usize,
    pub first: u64,
    pub records: Vec<String>,
}

/// Yields each batch when it is due. Batches that are late (the sender was busy) are yielded
/// at once; their latency still counts from when they were due.
pub struct Pacer {
    schedule: Schedule,
    start: Instant,
    payload_bytes: usize,
    next: u64,
    total: u64,
}

impl Pacer {
    pub fn new(schedule: Schedule, start: Instant, payload_bytes: usize) -> Self {
        Self {
            schedule,
            start,
            payload_bytes,
            next: 0,
            total: schedule.batches(),
        }
    }

    /// The next batch, after waiting until it is due.
    pub async fn next(&mut self) -> Option<Batch> {
        if self.next >= self.total {
            return None;
        }
        let j = self.next;
        self.next += 1;
        tokio::time::sleep_until((self.start + self.schedule.due(j)).into()).await;
        let (stream, first) = self.schedule.target(j);
        let records = (first..first + self.schedule.batch as u64)
            .map(|q| payload(stream, q, self.payload_bytes))
            .collect();
        Some(Batch {
            stream,
            first,
            records,
        })
    }
}

/// The JSON record for `seq` of `stream`, padded to `bytes` (when that is larger than the
/// record without padding). The daemon's identity processor returns it as the result's `data`.
pub fn payload(stream: usize, seq: u64, bytes: usize) -> String {
    let head = format!(r#"{{"s":{stream},"q":{seq},"pad":""#);
    let pad = bytes.saturating_sub(head.len() + 2);
    let mut out = String::with_capacity(head.len() + pad + 2);
    out.push_str(&head);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_maps_back_to_its_batch_time() {
        let s = Schedule {
            streams: 3,
            rate: 100.0,
            batch: 2,
            duration: Duration::from_secs(1),
        };
        assert_eq!(s.batches(), 50);
        for j in 0..s.batches() {
            let (stream, first) = s.target(j);
            for seq in first..first + 2 {
                assert_eq!(s.due_of(stream, seq), s.due(j), "batch {j} seq {seq}");
            }
        }
        assert_eq!(s.due(50), Duration::from_secs(1));
    }

    #[test]
    fn payload_has_the_requested_size_and_parses() {
        let p = payload(7, 42, 200);
        assert_eq!(p.len(), 200);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!((v["s"].as_u64(), v["q"].as_u64()), (Some(7), Some(42)));
        // Too small a size gives the smallest record, not a broken one.
        assert!(serde_json::from_str::<serde_json::Value>(&payload(1, 1, 0)).is_ok());
    }
}
