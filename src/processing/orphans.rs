//! Partitions nobody processes. Kafka's coordinator notices a member that stopped
//! heartbeating and has the others take its partitions over; tansu 0.6.0 drops such a member
//! from the group without telling the others, so a SIGKILLed instance's partitions would wait,
//! records acknowledged and unprocessed, until some instance (re)joins. Every instance
//! therefore watches the whole input topic: a partition with records past its committed
//! progress whose progress has not moved for [`STALL_AFTER`] is orphaned, and an instance that
//! does not own it leaves and rejoins the group, which makes the coordinator share out every
//! partition among the members alive. On Kafka the rebalance comes first and this never fires.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::progress::CLAIM_TIMEOUT;

/// How long a partition's progress may stand still with records waiting before it counts as
/// orphaned: three session timeouts, well past when Kafka would have moved it.
pub const STALL_AFTER: Duration = Duration::from_secs(3 * CLAIM_TIMEOUT.as_secs());

/// How often an instance reads the input topic's progress and ends.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// One reading of a partition: its next unprocessed offset (committed progress) and where it
/// ends (the high watermark).
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub partition: i32,
    pub next: i64,
    pub end: i64,
}

/// Per partition, since when its progress has stood at the offset seen.
#[derive(Default)]
pub struct Orphans {
    standing: HashMap<i32, (i64, Instant)>,
}

impl Orphans {
    /// Takes a reading made at `now`; returns the partitions orphaned by then.
    pub fn observe(&mut self, reading: &[Position], now: Instant) -> Vec<i32> {
        let mut orphaned = Vec::new();
        for p in reading {
            if p.next >= p.end {
                self.standing.remove(&p.partition);
                continue;
            }
            let (at, since) = self.standing.entry(p.partition).or_insert((p.next, now));
            if *at != p.next {
                (*at, *since) = (p.next, now);
            } else if now.duration_since(*since) >= STALL_AFTER {
                orphaned.push(p.partition);
            }
        }
        orphaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, next: i64, end: i64) -> Position {
        Position {
            partition,
            next,
            end,
        }
    }

    #[test]
    fn a_partition_is_orphaned_only_after_standing_still_with_records_waiting() {
        let mut o = Orphans::default();
        let t0 = Instant::now();
        assert!(o.observe(&[at(0, 5, 9), at(1, 3, 3)], t0).is_empty());
        let later = t0 + STALL_AFTER;
        assert_eq!(o.observe(&[at(0, 5, 12), at(1, 3, 3)], later), vec![0]);
        // Progress moved: the clock starts again.
        assert!(o.observe(&[at(0, 6, 12)], later).is_empty());
        assert!(o
            .observe(&[at(0, 6, 12)], later + STALL_AFTER / 2)
            .is_empty());
        assert_eq!(o.observe(&[at(0, 6, 12)], later + STALL_AFTER), vec![0]);
        // Caught up: not orphaned however long nothing is sent.
        assert!(o
            .observe(&[at(0, 12, 12)], later + STALL_AFTER * 4)
            .is_empty());
    }
}
