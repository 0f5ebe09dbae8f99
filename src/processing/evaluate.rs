//! Runs a stream's code on one record's data: the part of processing shared by the group
//! stage and by the accepting instance (`at_ingest`), so that a result is the same whichever
//! of them produced it. [`Evaluator::stored`] is the one evaluation of a record read back
//! from the input topic (the group's, and one hop's take-over): the stream's processor from
//! the registry, nothing for a record stored after its stream's end.
//!
//! User code runs in the sandbox, bounded. A stream whose code once ran past the time bound
//! is *runaway* on this instance: its code is not run again here (the worker that ran it was
//! killed, but one slow filter must not hold its partition up record after record), and its
//! records get an error result.

use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::Value;
use uuid::Uuid;

use super::processor::{uppercase, window_group, window_number};
use super::record::{Evaluated, RecordError};
use super::sandbox::{Sandbox, SandboxError};
use super::window::Rule;
use super::StageError;
use crate::config;
use crate::error::Error;
use crate::kafka::records::Input;
use crate::metrics::Metrics;
use crate::registry::{Registry, StreamEntry};
use crate::wire::ProcessorSpec;

/// The code runner of one instance.
pub struct Evaluator {
    /// Runs user code in worker processes, bounded in time, memory and stack.
    sandbox: Sandbox,
    /// Most results of one record.
    max_results: usize,
    /// Largest result (its data as JSON) the results topic takes with its frame around it.
    max_result_bytes: usize,
    /// Streams whose code ran past the time bound here.
    runaway: Mutex<HashSet<Uuid>>,
}

impl Evaluator {
    /// `max_result_bytes`: the results producer's `message.max.bytes` less room for the
    /// frame's other fields, key and headers.
    pub fn new(config: &config::Processing, max_result_bytes: usize) -> Result<Self, Error> {
        Ok(Self {
            sandbox: Sandbox::new(config)?,
            max_results: config.max_results,
            max_result_bytes,
            runaway: Mutex::default(),
        })
    }

    /// Whether a processor produces each record's results from that record alone (and so
    /// can run where the record is accepted): every processor but windows.
    pub fn is_per_record(spec: &ProcessorSpec) -> bool {
        !matches!(spec, ProcessorSpec::Window { .. })
    }

    /// Whether a stream's records run user code in the sandbox (what a `sandbox` span times).
    pub fn runs_user_code(spec: &ProcessorSpec) -> bool {
        matches!(
            spec,
            ProcessorSpec::Jq { .. } | ProcessorSpec::Window { .. }
        )
    }

    /// The results of one record of a per-record processor (`is_per_record`) of `entry`'s
    /// stream; each checked against the stream's `result_schema`, if it has one (a result
    /// that does not match fails the record, naming the violation). An error means the
    /// sandbox cannot start a worker: the record must be tried again, not failed.
    pub async fn per_record(
        &self,
        entry: &StreamEntry,
        spec: &ProcessorSpec,
        payload: Option<&[u8]>,
    ) -> Result<Evaluated, StageError> {
        let stream = entry.id;
        let data = match parse(payload) {
            Ok(data) => data,
            Err(e) => return Ok(Evaluated::Failed(e)),
        };
        let results = match spec {
            // No larger than its record, which the input topic took.
            ProcessorSpec::Identity => Ok(vec![data]),
            ProcessorSpec::Uppercase => Ok(vec![uppercase(data)]),
            ProcessorSpec::Jq { filter } => {
                self.user_code(stream, filter, &data, self.max_results)
                    .await?
            }
            // Only a record written straight to the broker could ask this: it gets an
            // error result rather than taking the stage down.
            ProcessorSpec::Window { .. } => Err(RecordError::Code(
                "a window stream's record cannot be processed on its own".into(),
            )),
        };
        let fits = |results: Vec<Value>| match results
            .iter()
            .map(json_len)
            .find(|n| *n > self.max_result_bytes)
        {
            Some(size) => Err(RecordError::ResultTooLarge {
                size,
                limit: self.max_result_bytes,
            }),
            None => Ok(results),
        };
        Ok(results
            .and_then(fits)
            .and_then(|results| matching(entry, results))
            .map_or_else(Evaluated::Failed, Evaluated::Results))
    }

    /// What the stream's code makes of a data record read back from the input topic. Never
    /// guesses a stream's processor: a registry that cannot be read is an error (the stage
    /// restarts and the record is retried); a stream the registry does not have gets an
    /// error frame; a record stored after its stream's end marker is not the stream's (its
    /// sender was refused) and is skipped. While `replaying`, only windows are rebuilt.
    /// `keeps_windows`: the caller keeps window state (the group); without it (one hop's
    /// take-over) a window stream's record is evaluated on its own, which is an error.
    /// Counts what it processes, and records after their end.
    pub async fn stored(
        &self,
        registry: &Registry,
        metrics: &Metrics,
        input: &Input,
        payload: Option<&[u8]>,
        replaying: bool,
        keeps_windows: bool,
    ) -> Result<Evaluated, StageError> {
        let entry = registry
            .lookup(&input.stream)
            .await
            .map_err(|e| StageError::Registry(e.to_string()))?;
        let Some(entry) = entry else {
            if !replaying {
                metrics.processing.processed.inc();
            }
            return Ok(Evaluated::Failed(RecordError::UnknownStream(input.stream)));
        };
        if entry
            .record()
            .end_offset
            .is_some_and(|end| end < input.offset)
        {
            metrics.processing.after_end.inc();
            return Ok(Evaluated::Skipped);
        }
        let spec = entry.processor();
        let (
            true,
            ProcessorSpec::Window {
                length_ms,
                value,
                group_by,
                grace_ms,
            },
        ) = (keeps_windows, &spec)
        else {
            if replaying {
                // Its results were produced before; nothing to rebuild.
                return Ok(Evaluated::Skipped);
            }
            metrics.processing.processed.inc();
            return self.per_record(&entry, &spec, payload).await;
        };
        if !replaying {
            metrics.processing.processed.inc();
        }
        let data = match parse(payload) {
            Ok(data) => data,
            Err(e) => return Ok(Evaluated::Failed(e)),
        };
        let rule = Rule {
            length_ms: *length_ms as i64,
            grace_ms: *grace_ms as i64,
        };
        let stream = input.stream;
        let number = self
            .user_code(stream, value, &data, 1)
            .await?
            .and_then(|out| window_number(value, out));
        let group = match (&number, group_by) {
            (Ok(_), Some(g)) => self
                .user_code(stream, g, &data, 1)
                .await?
                .and_then(|out| window_group(g, out))
                .map(Some),
            _ => Ok(None),
        };
        Ok(number
            .and_then(|value| group.map(|group| Evaluated::Window { rule, group, value }))
            .unwrap_or_else(Evaluated::Failed))
    }

    /// Runs user code in the sandbox. Past the time bound the record gets an error result and
    /// the stream is marked runaway here. A sandbox that cannot start a worker is an error
    /// (the record is retried), rather than a failed record.
    pub async fn user_code(
        &self,
        stream: Uuid,
        code: &str,
        data: &Value,
        max: usize,
    ) -> Result<Result<Vec<Value>, RecordError>, StageError> {
        let limit_ms = self.sandbox.limit().as_millis() as u64;
        if self.runaway.lock().expect("runaway lock").contains(&stream) {
            return Ok(Err(RecordError::Runaway { limit_ms }));
        }
        Ok(match self.sandbox.run(code, data, max).await {
            Ok(results) => Ok(results),
            Err(SandboxError::Code(message)) => Err(RecordError::Code(message)),
            Err(SandboxError::Crashed(how)) => {
                tracing::warn!(%stream, %how, "a processor worker died on a record");
                Err(RecordError::Crashed(how))
            }
            Err(SandboxError::TimedOut { limit_ms }) => {
                tracing::warn!(%stream, limit_ms, "processor ran past its time limit and was stopped; the stream's processor is disabled on this instance");
                self.runaway.lock().expect("runaway lock").insert(stream);
                Err(RecordError::TimedOut { limit_ms })
            }
            Err(e @ SandboxError::Unavailable(_)) => {
                return Err(StageError::Sandbox(e.to_string()))
            }
        })
    }
}

/// The length of a value written as JSON, without writing it anywhere.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("a JSON value serializes");
    count.0
}

/// A record's data: its value as JSON.
pub fn parse(payload: Option<&[u8]>) -> Result<Value, RecordError> {
    let data = payload.ok_or(RecordError::NoValue)?;
    serde_json::from_slice(data).map_err(|e| RecordError::NotJson(e.to_string()))
}

/// The results, when each matches the stream's `result_schema` (or it has none); else the
/// first violation, as the record's error.
fn matching(entry: &StreamEntry, results: Vec<Value>) -> Result<Vec<Value>, RecordError> {
    let checker = match entry.checkers() {
        Ok(checkers) => checkers.result.as_ref(),
        Err(e) => {
            return Err(RecordError::ResultSchema(format!(
                "cannot be checked here: {e}"
            )))
        }
    };
    let Some(checker) = checker else {
        return Ok(results);
    };
    for (i, result) in results.iter().enumerate() {
        if let Some(v) = checker.violations(result, None, 1).into_iter().next() {
            let at = if v.pointer.is_empty() {
                "the result".to_string()
            } else {
                v.pointer
            };
            return Err(RecordError::ResultSchema(format!(
                "result {} of {}: {at}: {} ({})",
                i + 1,
                results.len(),
                v.message,
                v.keyword
            )));
        }
    }
    Ok(results)
}
