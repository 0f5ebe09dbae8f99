//! The processing stage: a consumer group over the input topic that runs each stream's
//! processor and produces the results, at least once.
//!
//! - [`stage`]: the group loop (records, rebalances, window close markers).
//! - [`at_ingest`]: one hop: per-record processors run where a record is accepted; the
//!   group only settles those records (their protocol and failures are described there).
//! - [`evaluate`]: runs a stream's code on a record, for the group and for `at_ingest`.
//! - [`record`]: one record's step, pure: state + record + evaluation → results.
//! - [`progress`]: what is committed, and when (below).
//! - [`processor`], [`jq`], [`window`]: what a stream does to its records.
//! - [`sandbox`]: runs user code (jq) in worker processes bounded in time, memory and stack.
//!
//! Records are handled in order as they arrive; their results are handed to an idempotent
//! producer that never gives up (`message.timeout.ms=0`), which keeps per-partition order. An
//! acker task awaits each record's result acknowledgements in the same order and only then
//! records the input offset (the `at_least_once.rs` pattern of rust-rdkafka). A crash between
//! produce and commit re-processes records; the new owner reads back the results its
//! predecessor wrote from the results floor committed with the offset and does not write them
//! again (`progress.rs`). Where that cannot be done (results partitioned unlike the input, or
//! the read fails), duplicates carry the same `input_offset`, so readers can drop them.
//!
//! If a result is ever refused, the stage stops recording offsets at that record, commits
//! what was acknowledged, and restarts with a fresh consumer and producer session from the
//! committed offsets: crash-only recovery, so no error path can skip a record.
//!
//! Because the group is shared by every instance, adding instances adds processing capacity;
//! Kafka moves partitions between them on rebalance.
//!
//! Windows keep state across records. Their closes are events in the input partition (the
//! stage writes a close marker once a window is due), so a partition's windows are a pure
//! function of its records, and the stage rebuilds them by replaying. The offset committed
//! for a partition is therefore its *rewind point*: the first record of its oldest open
//! window (or the next record when none is open); the next unprocessed offset `C` is
//! committed under a second group, `<group>.progress` (commit metadata would do, but tansu
//! 0.6.0 does not return it), always before the rewind point it goes with. A new owner of the
//! partition (restart, rebalance) reads from the rewind point; records before `C` were
//! processed and their results acknowledged already, so they only feed window state: no
//! result is produced for them again. Windows whose records started before the rewind point
//! were closed before `C`, and their partial replay is dropped with their close. Nothing
//! acknowledged is lost or counted twice; a replay costs re-reading the partition from its
//! oldest open window.

pub mod at_ingest;
pub mod evaluate;
pub mod jq;
pub mod orphans;
pub mod processor;
pub mod progress;
pub mod record;
pub mod sandbox;
pub mod stage;
pub mod window;

pub use at_ingest::AtIngest;
pub use evaluate::Evaluator;
pub use processor::{parse_spec, SpecError};
pub use stage::{Stage, StageWith};

/// Why a run of the stage ended early; it restarts from the committed offsets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StageError {
    #[error("processing consumer: {0}")]
    Consumer(String),
    #[error("processing progress: {0}")]
    Progress(String),
    #[error("registry unavailable: {0}")]
    Registry(String),
    #[error("produce a result of partition {partition} offset {offset}: {reason}")]
    Produce {
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("a result of partition {partition} offset {offset} was not acknowledged: {reason}")]
    NotAcknowledged {
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("partitions {0:?} have records waiting and nobody processes them; rejoining the group so that they are shared out again")]
    Orphaned(Vec<i32>),
    #[error("the acker stopped")]
    AckerStopped,
    #[error("{0}")]
    Sandbox(String),
}
