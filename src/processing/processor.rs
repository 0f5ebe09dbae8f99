//! What a stream does to each record: the processor spec chosen at start, and the pure
//! function that turns one input value into zero or more results.
//!
//! Kept free of Kafka so processors are unit-tested directly; `stage.rs` runs them inside
//! the consumer group. The spec type itself is in `wire.rs`: clients see it too.

use serde_json::Value;

use super::jq::{self, JqError};
use crate::wire::ProcessorSpec;

/// Why a processor spec was refused at start; the text names the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("processor: {0}")]
pub struct SpecError(String);

/// Longest window: a day (window state is rebuilt by re-reading the input from the oldest
/// open window, so long windows make restarts slow).
const MAX_WINDOW_MS: u64 = 86_400_000;

/// Names accepted by `ProcessorSpec::parse`, for error messages.
const NAMES: &str = "identity, uppercase, jq, window";

impl ProcessorSpec {
    /// Parses the `processor` field of a start request: a name (`"uppercase"`) or an object
    /// (`{"type": "uppercase"}`). Errors name what was wrong.
    pub fn parse(value: &Value) -> Result<Self, SpecError> {
        match value {
            Value::String(name) => serde_json::from_value(serde_json::json!({ "type": name }))
                .map_err(|_| {
                    SpecError(format!(
                        "unknown processor `{name}`; expected one of: {NAMES}"
                    ))
                }),
            Value::Object(_) => {
                let spec: Self =
                    serde_json::from_value(value.clone()).map_err(|e| SpecError(e.to_string()))?;
                spec.validate()?;
                Ok(spec)
            }
            other => Err(SpecError(format!(
                "expected a name or an object, got `{other}`"
            ))),
        }
    }

    fn validate(&self) -> Result<(), SpecError> {
        let compiles = |what: &str, code: &str| {
            jq::compile(code).map_err(|e| SpecError(format!("{what} does not compile: {e}")))
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
                    return Err(SpecError(format!(
                        "length_ms must be between 1 and {MAX_WINDOW_MS}, got {length_ms}"
                    )));
                }
                if *grace_ms > MAX_WINDOW_MS {
                    return Err(SpecError(format!(
                        "grace_ms must be at most {MAX_WINDOW_MS}, got {grace_ms}"
                    )));
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
    /// window is run by the stage).
    pub fn apply(&self, data: Value, max_results: usize) -> Result<Vec<Value>, JqError> {
        match self {
            ProcessorSpec::Identity => Ok(vec![data]),
            ProcessorSpec::Uppercase => Ok(vec![uppercase(data)]),
            ProcessorSpec::Jq { filter } => jq::run(filter, &data, max_results),
            // A window aggregates records in the processing stage, not per record.
            ProcessorSpec::Window { .. } => Ok(Vec::new()),
        }
    }
}

/// A record's group and number for a window: each expression must give one output.
pub fn window_input(
    value: &str,
    group_by: Option<&str>,
    data: &Value,
) -> Result<(Option<String>, f64), JqError> {
    let v = jq::run(value, data, 1)?
        .into_iter()
        .next()
        .ok_or_else(|| JqError::new(format!("value `{value}` produced nothing")))?;
    let number = v
        .as_f64()
        .ok_or_else(|| JqError::new(format!("value `{value}` is not a number: {v}")))?;
    let group = match group_by {
        None => None,
        Some(g) => {
            let key = jq::run(g, data, 1)?
                .into_iter()
                .next()
                .ok_or_else(|| JqError::new(format!("group_by `{g}` produced nothing")))?;
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
