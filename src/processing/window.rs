//! Tumbling-window aggregates: count, sum, min, max and mean of a numeric value per window
//! (optionally per group), one result per window when it closes. Pure state, no Kafka and no
//! clock: times are the records' arrival times and the `now` a caller passes in, so tests
//! drive the clock.
//!
//! A window is `[start, start + length)` in arrival time (when the daemon accepted the record,
//! the input record's timestamp), aligned to multiples of its length since the epoch. It
//! closes when its close marker (written into the input partition by the processing stage
//! once the window is over plus a grace period) is processed, or when the stream ends. A
//! record processed after its window closed is late: not counted, reported as an error result.
//! Because every close is an event in the input partition, the windows are a pure function of
//! the partition's records: replaying them rebuilds the same state (see `stage.rs` for how
//! that makes window state survive restarts).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
struct Aggregate {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Aggregate {
    fn new(v: f64) -> Self {
        Self {
            count: 1,
            sum: v,
            min: v,
            max: v,
        }
    }

    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn to_json(self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("count".into(), self.count.into());
        m.insert("sum".into(), json!(self.sum));
        m.insert("min".into(), json!(self.min));
        m.insert("max".into(), json!(self.max));
        m.insert("avg".into(), json!(self.sum / self.count as f64));
        m
    }
}

/// One open window of a stream.
#[derive(Debug)]
struct Open {
    length_ms: i64,
    /// When it falls due: its end plus the grace period.
    due_ms: i64,
    /// Input offset of its first record: replay must start at or before it to rebuild it.
    first_offset: i64,
    /// `None` key when the spec has no `group_by`.
    groups: BTreeMap<Option<String>, Aggregate>,
}

fn result(start_ms: i64, open: &Open) -> Value {
    let mut out = Map::new();
    out.insert("window_start_ms".into(), start_ms.into());
    out.insert("window_end_ms".into(), (start_ms + open.length_ms).into());
    match open.groups.get(&None) {
        Some(total) if open.groups.len() == 1 => out.extend(total.to_json()),
        _ => {
            let groups: Map<String, Value> = open
                .groups
                .iter()
                .map(|(k, a)| (k.clone().unwrap_or_default(), Value::Object(a.to_json())))
                .collect();
            out.insert("groups".into(), Value::Object(groups));
        }
    }
    Value::Object(out)
}

/// A stream's windows: open ones by start, and where closed ones end.
#[derive(Debug, Default)]
struct StreamWindows {
    partition: i32,
    open: BTreeMap<i64, Open>,
    /// End of the latest closed window: a record before it is late.
    closed_until: i64,
}

/// A stream's window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub length_ms: i64,
    /// How long after its end a window falls due (records still on their way).
    pub grace_ms: i64,
}

/// What adding a record did.
#[derive(Debug, PartialEq)]
pub enum Added {
    Counted,
    /// The record belongs to a window that already closed: not counted.
    Late {
        window_start_ms: i64,
    },
}

/// The open windows of every stream in the partitions this instance processes.
#[derive(Debug, Default)]
pub struct Windows {
    streams: HashMap<Uuid, StreamWindows>,
    /// Per partition: first offsets of its open windows (with how many windows share each),
    /// so the rewind point asked for on every record is a lookup, not a scan.
    firsts: HashMap<i32, BTreeMap<i64, usize>>,
}

/// The window `at` falls into.
pub fn window_start(at_ms: i64, length_ms: i64) -> i64 {
    at_ms.div_euclid(length_ms) * length_ms
}

impl Windows {
    /// Counts `value` (in `group`) for `stream`: it arrived at `at_ms` and is stored at
    /// `offset` of `partition`.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        partition: i32,
        stream: Uuid,
        rule: Rule,
        at_ms: i64,
        offset: i64,
        group: Option<String>,
        value: f64,
    ) -> Added {
        let start = window_start(at_ms, rule.length_ms);
        let s = self.streams.entry(stream).or_insert_with(|| StreamWindows {
            partition,
            closed_until: i64::MIN,
            ..StreamWindows::default()
        });
        if start < s.closed_until {
            return Added::Late {
                window_start_ms: start,
            };
        }
        let open = s.open.entry(start).or_insert_with(|| {
            *self
                .firsts
                .entry(partition)
                .or_default()
                .entry(offset)
                .or_default() += 1;
            Open {
                length_ms: rule.length_ms,
                due_ms: start + rule.length_ms + rule.grace_ms,
                first_offset: offset,
                groups: BTreeMap::new(),
            }
        });
        open.groups
            .entry(group)
            .and_modify(|a| a.add(value))
            .or_insert_with(|| Aggregate::new(value));
        Added::Counted
    }

    /// Closes `stream`'s window starting at `start_ms` and every earlier one still open;
    /// their results, oldest first. A marker for a window already closed yields nothing.
    pub fn close(&mut self, stream: &Uuid, start_ms: i64) -> Vec<Value> {
        let Some(s) = self.streams.get_mut(stream) else {
            return Vec::new();
        };
        let later = s.open.split_off(&(start_ms + 1));
        let closed = std::mem::replace(&mut s.open, later);
        if let Some((start, o)) = closed.iter().next_back() {
            s.closed_until = s.closed_until.max(start + o.length_ms);
        }
        let partition = s.partition;
        self.forget(partition, &closed)
    }

    /// Closes every window of `stream` (it ended) and forgets it.
    pub fn close_all(&mut self, stream: &Uuid) -> Vec<Value> {
        match self.streams.remove(stream) {
            Some(s) => self.forget(s.partition, &s.open),
            None => Vec::new(),
        }
    }

    /// Takes closed windows out of the rewind index; their results, oldest first.
    fn forget(&mut self, partition: i32, closed: &BTreeMap<i64, Open>) -> Vec<Value> {
        if let Some(firsts) = self.firsts.get_mut(&partition) {
            for o in closed.values() {
                if let Some(n) = firsts.get_mut(&o.first_offset) {
                    *n -= 1;
                    if *n == 0 {
                        firsts.remove(&o.first_offset);
                    }
                }
            }
        }
        closed.iter().map(|(start, o)| result(*start, o)).collect()
    }

    /// Windows due by `now_ms` (over, plus their grace): (partition, stream, window start).
    pub fn due(&self, now_ms: i64) -> Vec<(i32, Uuid, i64)> {
        let mut due: Vec<(i32, Uuid, i64)> = self
            .streams
            .iter()
            .flat_map(|(id, s)| {
                s.open
                    .iter()
                    .filter(move |(_, o)| o.due_ms <= now_ms)
                    .map(move |(start, _)| (s.partition, *id, *start))
            })
            .collect();
        due.sort_by_key(|(_, _, start)| *start);
        due
    }

    /// Where a replay of `partition` must start to rebuild its open windows: the first offset
    /// of its oldest open window, or `next_offset` when none is open.
    pub fn rewind_point(&self, partition: i32, next_offset: i64) -> i64 {
        self.firsts
            .get(&partition)
            .and_then(|firsts| firsts.keys().next())
            .map_or(next_offset, |first| (*first).min(next_offset))
    }

    /// Drops the state of partitions this instance no longer processes.
    pub fn retain_partitions(&mut self, keep: impl Fn(i32) -> bool) {
        self.streams.retain(|_, s| keep(s.partition));
        self.firsts.retain(|p, _| keep(*p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One-second windows, no grace.
    const S: Rule = Rule {
        length_ms: 1_000,
        grace_ms: 0,
    };

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn aggregates_are_exact_and_emitted_when_the_window_closes() {
        let mut w = Windows::default();
        let a = id(1);
        // Window [10 000, 11 000): 20, 22.5, 17.5; one record of the next window meanwhile.
        assert_eq!(w.add(0, a, S, 10_000, 0, None, 20.0), Added::Counted);
        assert_eq!(w.add(0, a, S, 10_500, 1, None, 22.5), Added::Counted);
        assert_eq!(w.add(0, a, S, 11_000, 2, None, 1.0), Added::Counted);
        assert_eq!(w.add(0, a, S, 10_999, 3, None, 17.5), Added::Counted);
        assert_eq!(
            w.close(&a, 10_000),
            [json!({"window_start_ms": 10_000, "window_end_ms": 11_000,
                    "count": 3, "sum": 60.0, "min": 17.5, "max": 22.5, "avg": 20.0})]
        );
        // A record of the closed window is late, not counted; a second marker does nothing.
        assert_eq!(
            w.add(0, a, S, 10_800, 4, None, 99.0),
            Added::Late {
                window_start_ms: 10_000
            }
        );
        assert!(w.close(&a, 10_000).is_empty());
        assert_eq!(
            w.close_all(&a),
            [json!({"window_start_ms": 11_000, "window_end_ms": 12_000,
                    "count": 1, "sum": 1.0, "min": 1.0, "max": 1.0, "avg": 1.0})]
        );
    }

    #[test]
    fn groups_are_aggregated_separately() {
        let mut w = Windows::default();
        let a = id(1);
        w.add(0, a, S, 0, 0, Some("kitchen".into()), 20.0);
        w.add(0, a, S, 10, 1, Some("hall".into()), 10.0);
        w.add(0, a, S, 20, 2, Some("kitchen".into()), 22.0);
        assert_eq!(
            w.close(&a, 0),
            [
                json!({"window_start_ms": 0, "window_end_ms": 1000, "groups": {
                    "hall": {"count": 1, "sum": 10.0, "min": 10.0, "max": 10.0, "avg": 10.0},
                    "kitchen": {"count": 2, "sum": 42.0, "min": 20.0, "max": 22.0, "avg": 21.0}
                }})
            ]
        );
    }

    #[test]
    fn windows_fall_due_by_the_clock_after_the_grace() {
        let mut w = Windows::default();
        let (a, b) = (id(1), id(2));
        w.add(0, a, S, 1_000, 0, None, 1.0);
        w.add(0, a, S, 2_000, 1, None, 1.0);
        let ten_seconds_with_grace = Rule {
            length_ms: 10_000,
            grace_ms: 500,
        };
        w.add(1, b, ten_seconds_with_grace, 1_000, 0, None, 1.0);
        assert!(w.due(1_999).is_empty());
        assert_eq!(w.due(2_000), vec![(0, a, 1_000)]);
        assert_eq!(w.due(3_000), vec![(0, a, 1_000), (0, a, 2_000)]);
        // A marker closes its window and any older one.
        assert_eq!(w.close(&a, 2_000).len(), 2);
        assert!(w.due(10_499).is_empty(), "grace delays it");
        assert_eq!(w.due(10_500), vec![(1, b, 0)]);
    }

    #[test]
    fn rewind_point_is_the_oldest_open_windows_first_record() {
        let mut w = Windows::default();
        w.add(0, id(1), S, 5_000, 40, None, 1.0);
        w.add(0, id(2), S, 5_100, 42, None, 1.0);
        w.add(1, id(3), S, 5_100, 7, None, 1.0);
        assert_eq!(w.rewind_point(0, 50), 40);
        assert_eq!(w.rewind_point(1, 9), 7);
        assert_eq!(w.rewind_point(2, 3), 3, "nothing open: the next offset");
        w.close(&id(1), 5_000);
        assert_eq!(w.rewind_point(0, 50), 42);
        // Two windows opened by records at the same offset: both must close to forget it.
        w.add(0, id(4), S, 5_000, 42, None, 1.0);
        w.close_all(&id(2));
        assert_eq!(w.rewind_point(0, 50), 42);
        w.close_all(&id(4));
        assert_eq!(w.rewind_point(0, 50), 50);
        w.add(0, id(5), S, 9_000, 45, None, 1.0);
        w.retain_partitions(|p| p != 0);
        assert_eq!(w.rewind_point(0, 50), 50);
        assert_eq!(w.rewind_point(1, 9), 7);
    }

    #[test]
    fn windows_align_to_their_length() {
        assert_eq!(window_start(12_345, 1_000), 12_000);
        assert_eq!(window_start(-1, 1_000), -1_000);
        assert_eq!(window_start(60_000, 60_000), 60_000);
    }
}
