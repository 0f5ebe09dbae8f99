//! One input record's step, as a pure function: partition state + record + what the stream's
//! code made of it → the results-topic records to produce and the partition's rewind point.
//!
//! Running user code is the stage's job (it is bounded in time, off the async task); by the
//! time a record reaches [`step`] its evaluation is a plain value, so everything here is
//! tested without Kafka or threads.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;
use uuid::Uuid;

use super::window::{Added, Rule, Windows};
use crate::kafka::records::{Control, Input};
use crate::wire::{ErrorCode, ErrorObject, Frame, Kind, Outcome};

/// Why one record produced an error frame instead of results. The stage goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record has no value")]
    NoValue,
    #[error("record is not JSON: {0}")]
    NotJson(String),
    #[error("stream {0} is not in the registry")]
    UnknownStream(Uuid),
    /// The stream's code failed on the record (the jq error says how).
    #[error("{0}")]
    Code(String),
    #[error("processing took longer than {limit_ms} ms (processing.max_record_ms)")]
    TimedOut { limit_ms: u64 },
    #[error(
        "not processed: an earlier record of this stream ran past the {limit_ms} ms limit \
         (processing.max_record_ms); start a new stream with a fixed processor"
    )]
    Runaway { limit_ms: u64 },
    /// The worker running the stream's code died: out of memory or stack (deep recursion).
    #[error(
        "the processor stopped ({0}): it ran out of memory (processing.max_memory_mb) or \
         recursed too deeply"
    )]
    Crashed(String),
    #[error(
        "a result of {size} bytes is larger than the results topic takes ({limit} bytes: the \
         producer's message.max.bytes less 1 KiB for the frame around it)"
    )]
    ResultTooLarge { size: usize, limit: usize },
    #[error("arrived after its window (start {window_start_ms} ms) closed; not counted")]
    Late { window_start_ms: i64 },
    /// A result that does not match the stream's `result_schema` (the text says where).
    #[error("does not match the stream's result_schema: {0}")]
    ResultSchema(String),
}

/// What the stream's code made of a data record, computed by the stage before the step.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluated {
    /// A per-record processor's results (possibly none: a filter that selected nothing).
    Results(Vec<Value>),
    /// A window's input: the record counts `value` in `group`.
    Window {
        rule: Rule,
        group: Option<String>,
        value: f64,
    },
    Failed(RecordError),
    /// Processed before (replay) and feeds no window: nothing to do.
    Skipped,
}

/// How long the stage remembers an end marker it read: longer than any send can be in
/// flight (`limits.send_timeout_ms` is at most [`crate::config::MAX_SEND_TIMEOUT_MS`]).
pub const ENDED_MEMORY: Duration = Duration::from_secs(15 * 60);

/// What the stage keeps between records, for the partitions it owns.
#[derive(Default)]
pub struct Partitions {
    pub windows: Windows,
    /// Per partition: records before this offset were processed (and their results
    /// acknowledged) by an earlier owner; they are read again only to rebuild windows.
    pub replay_until: HashMap<i32, i64>,
    /// Close markers written and not yet read back, and when.
    pub closing: HashMap<(Uuid, i64), Instant>,
    /// Streams whose end marker was read here: its partition and offset. Records of the
    /// stream after it are not the stream's (their senders were refused): no results.
    pub ended: HashMap<Uuid, (i32, i64)>,
    /// When (processing time, ms) each entry of `ended` was made, oldest first, so that
    /// `forget_ended` keeps the map as small as the streams ended lately.
    ended_at: VecDeque<(i64, Uuid)>,
}

impl Partitions {
    /// Whether the record at `offset` was processed by an earlier owner; ends the partition's
    /// replay at its last replayed record.
    pub fn replaying(&mut self, partition: i32, offset: i64) -> bool {
        match self.replay_until.get(&partition).copied() {
            Some(until) if offset < until => {
                if offset + 1 >= until {
                    self.replay_until.remove(&partition);
                }
                true
            }
            Some(_) => {
                self.replay_until.remove(&partition);
                false
            }
            None => false,
        }
    }

    /// Forgets partitions this instance no longer owns.
    pub fn revoke(&mut self, lost: &[i32]) {
        self.windows.retain_partitions(|p| !lost.contains(&p));
        self.replay_until.retain(|p, _| !lost.contains(p));
        self.ended.retain(|_, (p, _)| !lost.contains(p));
        let ended = &self.ended;
        self.ended_at.retain(|(_, s)| ended.contains_key(s));
    }

    /// Forgets the end markers read before `before_ms`. A record of an ended stream can
    /// follow its marker only while a send that began before the end is still in flight,
    /// which ingest bounds by `limits.send_timeout_ms`; the stage keeps markers for longer
    /// than that ([`ENDED_MEMORY`]), so the map holds only the streams ended lately.
    pub fn forget_ended(&mut self, before_ms: i64) {
        while let Some(&(at, stream)) = self.ended_at.front() {
            if at >= before_ms {
                break;
            }
            self.ended_at.pop_front();
            self.ended.remove(&stream);
        }
    }

    /// Whether `stream`'s end marker was read here before `offset`.
    pub fn ended_before(&self, stream: &Uuid, offset: i64) -> bool {
        self.ended.get(stream).is_some_and(|(_, end)| *end < offset)
    }
}

/// What to produce for one record, and where a new owner must start reading.
#[derive(Debug, PartialEq)]
pub struct Step {
    /// Results-topic records (frames without a cursor), in order.
    pub outputs: Vec<(Kind, Vec<u8>)>,
    /// The partition's rewind point after this record (see `stage.rs`).
    pub rewind: i64,
}

/// Applies one record to the partition state. `evaluated` is `None` for control records.
/// While `replaying`, state is rebuilt but nothing is produced.
pub fn step(
    state: &mut Partitions,
    input: &Input,
    evaluated: Option<Evaluated>,
    replaying: bool,
    processed_ms: i64,
) -> Step {
    let frame = |kind: Kind, data: Option<Value>, error: Option<&RecordError>| -> (Kind, Vec<u8>) {
        let outcome = Outcome {
            cursor: None,
            stream_id: input.stream,
            input_partition: input.partition,
            input_offset: input.offset,
            received_ms: input.received_ms,
            processed_ms,
            data,
            error: error.map(|e| {
                let code = match e {
                    RecordError::ResultSchema(_) => ErrorCode::SchemaViolation,
                    _ => ErrorCode::ProcessingFailed,
                };
                ErrorObject::new(code, e.to_string())
            }),
            idempotency_key: input.keyed.as_ref().map(|k| k.key.clone()),
            traceparent: input.trace.as_ref().map(|t| t.parent.clone()),
        };
        let frame = match kind {
            Kind::Error => Frame::Error(outcome),
            Kind::End => Frame::End(outcome),
            _ => Frame::Result(outcome),
        };
        (kind, frame.to_json().into_bytes())
    };
    let results = |values: Vec<Value>| -> Vec<(Kind, Vec<u8>)> {
        values
            .into_iter()
            .map(|v| frame(Kind::Result, Some(v), None))
            .collect()
    };
    let stream = input.stream;
    let mut outputs = match (input.control, evaluated) {
        // A second end marker (an end retried) ends nothing more.
        (Some(Control::End), _) if state.ended_before(&stream, input.offset) => Vec::new(),
        (Some(Control::End), _) => {
            state.ended.insert(stream, (input.partition, input.offset));
            state.ended_at.push_back((processed_ms, stream));
            let mut out = results(state.windows.close_all(&stream));
            out.push(frame(Kind::End, None, None));
            out
        }
        (Some(Control::CloseWindow(start)), _) => {
            state.closing.remove(&(stream, start));
            results(state.windows.close(&stream, start))
        }
        (None, None | Some(Evaluated::Skipped)) => Vec::new(),
        (None, Some(Evaluated::Results(values))) => results(values),
        (None, Some(Evaluated::Failed(e))) => vec![frame(Kind::Error, None, Some(&e))],
        (None, Some(Evaluated::Window { rule, group, value })) => {
            let added = state.windows.add(
                input.partition,
                stream,
                rule,
                input.received_ms,
                input.offset,
                group,
                value,
            );
            match added {
                Added::Counted => Vec::new(),
                Added::Late { window_start_ms } => {
                    vec![frame(
                        Kind::Error,
                        None,
                        Some(&RecordError::Late { window_start_ms }),
                    )]
                }
            }
        }
    };
    if replaying {
        outputs.clear();
    }
    Step {
        outputs,
        rewind: state
            .windows
            .rewind_point(input.partition, input.offset + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STREAM: Uuid = Uuid::from_u128(1);

    fn input(offset: i64, received_ms: i64, control: Option<Control>) -> Input {
        Input {
            stream: STREAM,
            partition: 0,
            offset,
            received_ms,
            control,
            keyed: None,
            trace: None,
        }
    }

    fn frames(step: &Step) -> Vec<Frame> {
        step.outputs
            .iter()
            .map(|(_, bytes)| serde_json::from_slice(bytes).unwrap())
            .collect()
    }

    fn window(value: f64) -> Evaluated {
        Evaluated::Window {
            rule: Rule {
                length_ms: 1_000,
                grace_ms: 0,
            },
            group: None,
            value,
        }
    }

    #[test]
    fn results_and_errors_carry_the_input_coordinates() {
        let mut state = Partitions::default();
        let s = step(
            &mut state,
            &input(7, 100, None),
            Some(Evaluated::Results(vec![json!(1), json!(2)])),
            false,
            200,
        );
        let f = frames(&s);
        assert_eq!(f.len(), 2);
        let o = f[1].outcome().unwrap();
        assert_eq!(
            (o.input_offset, o.received_ms, o.processed_ms),
            (7, 100, 200)
        );
        assert_eq!(o.data, Some(json!(2)));
        assert_eq!(s.rewind, 8, "no open window: the next record");

        let s = step(
            &mut state,
            &input(8, 100, None),
            Some(Evaluated::Failed(RecordError::TimedOut { limit_ms: 5 })),
            false,
            200,
        );
        let Frame::Error(o) = &frames(&s)[0] else {
            panic!("expected an error frame")
        };
        let e = o.error.as_ref().unwrap();
        assert_eq!(e.code, ErrorCode::ProcessingFailed);
        assert!(e.message.contains("5 ms"), "{}", e.message);
    }

    #[test]
    fn the_end_marker_is_where_the_stream_ends_and_a_second_one_ends_nothing() {
        let mut state = Partitions::default();
        let s = step(&mut state, &input(5, 1, Some(Control::End)), None, false, 1);
        assert!(matches!(frames(&s)[..], [Frame::End(_)]));
        assert!(!state.ended_before(&STREAM, 5) && state.ended_before(&STREAM, 6));
        assert!(
            !state.ended_before(&Uuid::from_u128(2), 6),
            "other streams go on"
        );
        let again = step(&mut state, &input(9, 2, Some(Control::End)), None, false, 2);
        assert!(again.outputs.is_empty());
        state.revoke(&[0]);
        assert!(
            !state.ended_before(&STREAM, 6),
            "forgotten with its partition"
        );
    }

    #[test]
    fn end_markers_are_forgotten_once_no_send_of_their_stream_can_still_land() {
        let mut state = Partitions::default();
        for i in 0..1000u128 {
            let mut end = input(i as i64, 1, Some(Control::End));
            end.stream = Uuid::from_u128(i + 10);
            step(&mut state, &end, None, false, i as i64);
        }
        assert_eq!(state.ended.len(), 1000);
        state.forget_ended(500);
        assert_eq!(state.ended.len(), 500, "the older half is forgotten");
        assert!(state.ended_before(&Uuid::from_u128(510), 501));
        assert!(!state.ended_before(&Uuid::from_u128(10), 1));
        state.forget_ended(i64::MAX);
        assert!(state.ended.is_empty() && state.ended_at.is_empty());
    }

    #[test]
    fn end_closes_open_windows_then_ends() {
        let mut state = Partitions::default();
        step(
            &mut state,
            &input(0, 10, None),
            Some(window(2.0)),
            false,
            10,
        );
        step(
            &mut state,
            &input(1, 20, None),
            Some(window(4.0)),
            false,
            20,
        );
        let s = step(
            &mut state,
            &input(2, 30, Some(Control::End)),
            None,
            false,
            30,
        );
        let f = frames(&s);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].kind(), Kind::Result);
        assert_eq!(f[0].outcome().unwrap().data.as_ref().unwrap()["count"], 2);
        assert_eq!(f[1].kind(), Kind::End);
        assert_eq!(s.rewind, 3);
    }

    #[test]
    fn an_open_window_holds_the_rewind_point_until_it_closes() {
        let mut state = Partitions::default();
        let s = step(
            &mut state,
            &input(5, 10, None),
            Some(window(1.0)),
            false,
            10,
        );
        assert!(
            s.outputs.is_empty(),
            "a window counts; its result comes at close"
        );
        assert_eq!(
            s.rewind, 5,
            "a new owner must re-read the window's first record"
        );
        let s = step(
            &mut state,
            &input(6, 20, None),
            Some(Evaluated::Skipped),
            false,
            20,
        );
        assert_eq!(s.rewind, 5);
        let close = input(7, 1_500, Some(Control::CloseWindow(0)));
        let s = step(&mut state, &close, None, false, 1_500);
        assert_eq!(frames(&s).len(), 1);
        assert_eq!(s.rewind, 8);
        // A record of the closed window arriving late is an error, not counted.
        let s = step(
            &mut state,
            &input(8, 900, None),
            Some(window(1.0)),
            false,
            1_600,
        );
        assert_eq!(frames(&s)[0].kind(), Kind::Error);
    }

    #[test]
    fn replay_rebuilds_windows_without_producing() {
        let mut state = Partitions::default();
        state.replay_until.insert(0, 2);
        assert!(state.replaying(0, 0));
        let s = step(&mut state, &input(0, 10, None), Some(window(3.0)), true, 10);
        assert!(s.outputs.is_empty());
        assert!(state.replaying(0, 1), "the last replayed record");
        assert!(
            !state.replaying(0, 2),
            "the replay ended at its last record"
        );
        let s = step(
            &mut state,
            &input(2, 20, Some(Control::End)),
            None,
            false,
            20,
        );
        let f = frames(&s);
        assert_eq!(
            f[0].outcome().unwrap().data.as_ref().unwrap()["count"],
            1,
            "the replayed record counts in the rebuilt window"
        );
    }
}
