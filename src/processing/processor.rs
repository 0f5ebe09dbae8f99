//! What a stream does to each record: the processor spec chosen at start (checked against the
//! spec limits and compiled once, so a bad filter is refused with 400), and the pure parts of
//! running one: the built-in processors, and how a window reads its number and group from
//! what its expressions gave.
//!
//! Kept free of Kafka and of processes so they are unit-tested directly; `stage.rs` runs jq in
//! the sandbox. The spec type itself is in `wire.rs`: clients see it too.

use serde_json::Value;

use super::jq;
use super::record::RecordError;
use crate::config;
use crate::wire::ProcessorSpec;

/// Why a processor spec was refused at start; the text names the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("processor: {0}")]
pub struct SpecError(String);

/// Longest window: a day (window state is rebuilt by re-reading the input from the oldest
/// open window, so long windows make restarts slow).
const MAX_WINDOW_MS: u64 = 86_400_000;

/// Names accepted by `parse_spec`, for error messages.
const NAMES: &str = "identity, uppercase, jq, window";

/// Parses the `processor` field of a start request: a name (`"uppercase"`) or an object
/// (`{"type": "uppercase"}`). Errors name what was wrong.
pub fn parse_spec(value: &Value, limits: &config::Processing) -> Result<ProcessorSpec, SpecError> {
    let size = value.to_string().len();
    if size > limits.max_spec_bytes {
        return Err(SpecError(format!(
            "the spec is {size} bytes; the limit is {} (processing.max_spec_bytes)",
            limits.max_spec_bytes
        )));
    }
    match value {
        Value::String(name) => {
            serde_json::from_value(serde_json::json!({ "type": name })).map_err(|_| {
                SpecError(format!(
                    "unknown processor `{name}`; expected one of: {NAMES}"
                ))
            })
        }
        Value::Object(_) => {
            let spec: ProcessorSpec =
                serde_json::from_value(value.clone()).map_err(|e| SpecError(e.to_string()))?;
            validate(&spec, limits.max_filter_depth)?;
            Ok(spec)
        }
        other => Err(SpecError(format!(
            "expected a name or an object, got `{other}`"
        ))),
    }
}

fn validate(spec: &ProcessorSpec, max_depth: usize) -> Result<(), SpecError> {
    let compiles = |what: &str, code: &str| {
        let depth = jq::nesting(code);
        if depth > max_depth {
            return Err(SpecError(format!(
                "{what} nests {depth} deep; the limit is {max_depth} \
                     (processing.max_filter_depth)"
            )));
        }
        jq::compile(code).map_err(|e| SpecError(format!("{what} does not compile: {e}")))
    };
    match spec {
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

/// What a window counts for a record: the one number its `value` expression gave.
pub fn window_number(expr: &str, outputs: Vec<Value>) -> Result<f64, RecordError> {
    let v = outputs
        .into_iter()
        .next()
        .ok_or_else(|| RecordError::Code(format!("value `{expr}` produced nothing")))?;
    v.as_f64()
        .ok_or_else(|| RecordError::Code(format!("value `{expr}` is not a number: {v}")))
}

/// The group a window counts a record in: the one value its `group_by` expression gave.
pub fn window_group(expr: &str, outputs: Vec<Value>) -> Result<String, RecordError> {
    match outputs.into_iter().next() {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Ok(other.to_string()),
        None => Err(RecordError::Code(format!(
            "group_by `{expr}` produced nothing"
        ))),
    }
}

/// Every JSON string in the record upper-cased, as the original service did.
pub fn uppercase(v: Value) -> Value {
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
        let limits = config::Processing::default();
        assert_eq!(
            parse_spec(&json!("uppercase"), &limits).unwrap(),
            ProcessorSpec::Uppercase
        );
        assert_eq!(
            parse_spec(&json!({"type": "identity"}), &limits).unwrap(),
            ProcessorSpec::Identity
        );
        let err = parse_spec(&json!("upcase"), &limits).unwrap_err();
        assert!(err.to_string().contains("`upcase`"), "{err}");
        assert!(parse_spec(&json!(3), &limits).is_err());
    }

    #[test]
    fn uppercase_walks_the_value() {
        let out = uppercase(json!({"a": "x", "b": ["y", 1], "c": {"d": "z"}}));
        assert_eq!(out, json!({"a": "X", "b": ["Y", 1], "c": {"d": "Z"}}));
    }

    #[test]
    fn specs_past_the_limits_are_refused_naming_the_limit() {
        let limits = config::Processing::default();
        let deep = format!("{}.{}", "[".repeat(1_000), "]".repeat(1_000));
        let err = parse_spec(&json!({"type": "jq", "filter": deep}), &limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("processing.max_filter_depth"), "{err}");
        let window = json!({"type": "window", "length_ms": 1000, "value": "(((((.a)))))"});
        let tight = config::Processing {
            max_filter_depth: 3,
            ..limits.clone()
        };
        assert!(parse_spec(&window, &tight).is_err());
        assert!(parse_spec(&window, &limits).is_ok());
        let big = json!({"type": "jq", "filter": format!(".a // {}", "1 + ".repeat(5_000) + "1")});
        let err = parse_spec(&big, &limits).unwrap_err().to_string();
        assert!(err.contains("processing.max_spec_bytes"), "{err}");
    }

    #[test]
    fn window_inputs() {
        assert_eq!(window_number(".t", vec![json!(2.5)]), Ok(2.5));
        assert!(window_number(".t", vec![json!("x")]).is_err());
        assert!(window_number(".t", vec![]).is_err());
        assert_eq!(window_group(".room", vec![json!("hall")]).unwrap(), "hall");
        assert_eq!(window_group(".n", vec![json!(3)]).unwrap(), "3");
    }
}
