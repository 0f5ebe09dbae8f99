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
}

/// Names accepted by `ProcessorSpec::parse`, for error messages.
const NAMES: &str = "identity, uppercase, jq";

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
                if let ProcessorSpec::Jq { filter } = &spec {
                    crate::jq::compile(filter).map_err(|e| {
                        ApiError::InvalidInput(format!(
                            "processor: jq filter does not compile: {e}"
                        ))
                    })?;
                }
                Ok(spec)
            }
            other => Err(ApiError::InvalidInput(format!(
                "processor: expected a name or an object, got `{other}`"
            ))),
        }
    }

    /// Runs the processor on one record.
    pub fn apply(&self, data: Value) -> Result<Vec<Value>, String> {
        match self {
            ProcessorSpec::Identity => Ok(vec![data]),
            ProcessorSpec::Uppercase => Ok(vec![uppercase(data)]),
            ProcessorSpec::Jq { filter } => crate::jq::run(filter, &data),
        }
    }
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
            .apply(json!({"a": "x", "b": ["y", 1], "c": {"d": "z"}}))
            .unwrap();
        assert_eq!(out, vec![json!({"a": "X", "b": ["Y", 1], "c": {"d": "Z"}})]);
    }

    #[test]
    fn identity_keeps_the_value() {
        assert_eq!(
            ProcessorSpec::Identity.apply(json!([1, "a"])).unwrap(),
            vec![json!([1, "a"])]
        );
    }
}
