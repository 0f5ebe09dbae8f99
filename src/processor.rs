//! What a stream does to each record: the processor spec chosen at start, and the pure
//! function that turns one input value into zero or more results.
//!
//! Kept free of Kafka so processors are unit-tested directly; `processing.rs` runs them
//! inside the consumer group.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// The processor of a stream, as given at start and stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProcessorSpec {
    /// A jq filter: transform, select (no output: no result), or several results per record.
    Jq { filter: String },
    /// The result is the record's data unchanged (plus the frame's metadata).
    #[default]
    Identity,
    /// Every JSON string in the record upper-cased, as the original service did.
    Uppercase,
    /// Tumbling-window aggregates of a number (see `window.rs`): one result per window.
    Window {
        /// Window length in milliseconds.
        length_ms: u64,
        /// jq expression giving the number to aggregate, e.g. `.temperature`.
        value: String,
        /// jq expression giving the group, e.g. `.room` (one aggregate per group).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_by: Option<String>,
        /// How long after a window ends it closes, for records still on their way.
        #[serde(default = "default_grace_ms")]
        grace_ms: u64,
    },
}

fn default_grace_ms() -> u64 {
    2_000
}

/// Longest window: a day (window state is rebuilt by re-reading the input from the oldest
/// open window, so long windows make restarts slow).
const MAX_WINDOW_MS: u64 = 86_400_000;

/// Names accepted by `ProcessorSpec::parse`, for error messages.
const NAMES: &str = "identity, uppercase, jq, window";

impl ProcessorSpec {
    /// Parses the `processor` field of a start request: a name (`"uppercase"`) or an object
    /// (`{"type": "uppercase"}`). Errors name what was wrong.
    pub fn parse(value: &Value) -> Result<Self, ApiError> {
        match value {
            Value::String(name) => serde_json::from_value(serde_json::json!({ "type": name }))
                .map_err(|_| {
                    ApiError::InvalidInput(format!(
                        "processor: unknown processor `{name}`; expected one of: {NAMES}"
                    ))
                }),
            Value::Object(_) => {
                let spec: Self = serde_json::from_value(value.clone())
                    .map_err(|e| ApiError::InvalidInput(format!("processor: {e}")))?;
                spec.validate().map_err(ApiError::InvalidInput)?;
                Ok(spec)
            }
            other => Err(ApiError::InvalidInput(format!(
                "processor: expected a name or an object, got `{other}`"
            ))),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let compiles = |what: &str, code: &str| {
            crate::jq::compile(code).map_err(|e| format!("processor: {what} does not compile: {e}"))
        };
        match self {
            ProcessorSpec::Jq { filter } => compiles("jq filter", filter),
            ProcessorSpec::Window {
                length_ms,
                value,
                group_by,
                grace_ms,
            } => {
                if *length_ms == 0 || *length_ms > MAX_WINDOW_MS {
                    return Err(format!(
                        "processor: length_ms must be between 1 and {MAX_WINDOW_MS}, got {length_ms}"
                    ));
                }
                if *grace_ms > MAX_WINDOW_MS {
                    return Err(format!(
                        "processor: grace_ms must be at most {MAX_WINDOW_MS}, got {grace_ms}"
                    ));
                }
                compiles("value", value)?;
                match group_by {
                    Some(g) => compiles("group_by", g),
                    None => Ok(()),
                }
            }
            ProcessorSpec::Identity | ProcessorSpec::Uppercase => Ok(()),
        }
    }

    /// Runs a per-record processor on one record, with at most `max_results` results (a
    /// window is run by `processing.rs`).
    pub fn apply(&self, data: Value, max_results: usize) -> Result<Vec<Value>, String> {
        match self {
            ProcessorSpec::Identity => Ok(vec![data]),
            ProcessorSpec::Uppercase => Ok(vec![uppercase(data)]),
            ProcessorSpec::Jq { filter } => crate::jq::run(filter, &data, max_results),
            ProcessorSpec::Window { .. } => {
                Err("a window aggregates records in the processing stage, not per record".into())
            }
        }
    }
}

/// A record's group and number for a window: each expression must give one output.
pub fn window_input(
    value: &str,
    group_by: Option<&str>,
    data: &Value,
) -> Result<(Option<String>, f64), String> {
    let v = crate::jq::run(value, data, 1)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("value `{value}` produced nothing"))?;
    let number = v
        .as_f64()
        .ok_or_else(|| format!("value `{value}` is not a number: {v}"))?;
    let group = match group_by {
        None => None,
        Some(g) => {
            let key = crate::jq::run(g, data, 1)?
                .into_iter()
                .next()
                .ok_or_else(|| format!("group_by `{g}` produced nothing"))?;
            Some(match key {
                Value::String(s) => s,
                other => other.to_string(),
            })
        }
    };
    Ok((group, number))
}

fn uppercase(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.to_uppercase()),
        Value::Array(items) => Value::Array(items.into_iter().map(uppercase).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, uppercase(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_names_and_objects() {
        assert_eq!(
            ProcessorSpec::parse(&json!("uppercase")).unwrap(),
            ProcessorSpec::Uppercase
        );
        assert_eq!(
            ProcessorSpec::parse(&json!({"type": "identity"})).unwrap(),
            ProcessorSpec::Identity
        );
        let err = ProcessorSpec::parse(&json!("upcase")).unwrap_err();
        assert!(err.to_string().contains("`upcase`"), "{err}");
        assert!(ProcessorSpec::parse(&json!(3)).is_err());
    }

    #[test]
    fn uppercase_walks_the_value() {
        let out = ProcessorSpec::Uppercase
            .apply(json!({"a": "x", "b": ["y", 1], "c": {"d": "z"}}), 10)
            .unwrap();
        assert_eq!(out, vec![json!({"a": "X", "b": ["Y", 1], "c": {"d": "Z"}})]);
    }

    #[test]
    fn identity_keeps_the_value() {
        assert_eq!(
            ProcessorSpec::Identity.apply(json!([1, "a"]), 10).unwrap(),
            vec![json!([1, "a"])]
        );
    }
}
