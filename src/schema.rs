//! A JSON Schema per stream: given at start (`schema`, checked at ingest before anything is
//! written; `result_schema`, checked on what the processor produced), stored with the stream
//! in the registry, so every instance checks the same way.
//!
//! A schema is user code, and runs bounded: at most `limits.max_schema_bytes` and
//! [`MAX_DEPTH`] levels deep; `pattern`s run on a regular-expression engine without
//! backtracking (linear in the input, so `^(a+)+$` cannot take a core; a pattern that needs
//! backtracking, a look-around or a back-reference, is refused at start); every `$ref` is
//! local (`#...`), or a schema named in the config's `schemas:` used whole, never fetched
//! from the network or a file at run time; a cycle of references that would loop without
//! consuming the record (`{"$ref": "#/$defs/a"}` where `a` refers back) is refused. Draft
//! 2020-12, and draft 7 (`"$schema": "http://json-schema.org/draft-07/schema#"`).
//!
//! Compiled once per stream per instance ([`Checker`]), then each record is checked in
//! microseconds. A violation names the record's JSON pointer, the failing keyword, and what
//! was expected; at most [`MAX_VIOLATIONS`] are reported for one request.

use std::collections::{BTreeMap, HashSet};

use jsonschema::{Draft, PatternOptions, Validator};
use serde_json::Value;

use crate::wire::Violation;

/// Deepest a schema may nest (objects and arrays).
pub const MAX_DEPTH: usize = 64;
/// Most violations reported for one request (of all its records).
pub const MAX_VIOLATIONS: usize = 10;

/// A schema that cannot be used: the problem, and where in the schema (a JSON pointer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {problem}{}", at_pointer(.pointer))]
pub struct SchemaError {
    /// `schema` or `result_schema`.
    pub what: &'static str,
    pub problem: String,
    pub pointer: String,
}

fn at_pointer(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(" (at {pointer})")
    }
}

/// The schemas the config names (`schemas:`), by name, read at start.
pub type Named = BTreeMap<String, Value>;

/// A compiled schema.
#[derive(Debug)]
pub struct Checker {
    validator: Validator,
}

/// Resolves a stream's schema as given at start: `{"$ref": NAME}` alone is the schema the
/// config names so (stored whole, so every instance has it), anything else is the schema
/// itself. Then checks it can be used (see the module's text) and compiles it.
pub fn prepare(
    what: &'static str,
    given: &Value,
    named: &Named,
    max_bytes: usize,
) -> Result<(Value, Checker), SchemaError> {
    let error = |problem: String, pointer: &str| SchemaError {
        what,
        problem,
        pointer: pointer.to_string(),
    };
    let schema = match given.as_object().and_then(|o| o.get("$ref")) {
        Some(Value::String(name)) if given.as_object().is_some_and(|o| o.len() == 1) => {
            match named.get(name) {
                Some(schema) => schema.clone(),
                None if name.starts_with('#') => given.clone(),
                None => {
                    return Err(error(
                        format!(
                            "`$ref` `{name}` is not a schema named in the daemon's config \
                             (schemas: {}); schemas are never fetched from the network",
                            if named.is_empty() {
                                "none".to_string()
                            } else {
                                named.keys().cloned().collect::<Vec<_>>().join(", ")
                            }
                        ),
                        "/$ref",
                    ))
                }
            }
        }
        _ => given.clone(),
    };
    if !schema.is_object() && !schema.is_boolean() {
        return Err(error("a schema is an object (or true / false)".into(), ""));
    }
    let size = schema.to_string().len();
    if size > max_bytes {
        return Err(error(
            format!("{size} bytes; the limit is {max_bytes} (limits.max_schema_bytes)"),
            "",
        ));
    }
    if let Some(pointer) = too_deep(&schema, "", 0) {
        return Err(error(
            format!("nests deeper than {MAX_DEPTH} levels"),
            &pointer,
        ));
    }
    let draft = draft(&schema).map_err(|p| error(p, "/$schema"))?;
    local_refs_only(&schema, "").map_err(|(p, at)| error(p, &at))?;
    if let Some(at) = ref_cycle(&schema) {
        return Err(error(
            "a cycle of `$ref`s that never reaches a keyword: checking a record would \
             never end"
                .into(),
            &at,
        ));
    }
    let validator = jsonschema::options()
        .with_draft(draft)
        .with_pattern_options(PatternOptions::regex())
        .build(&schema)
        .map_err(|e| error(e.to_string(), e.instance_path().as_str()))?;
    Ok((schema, Checker { validator }))
}

impl Checker {
    /// Compiles a schema stored in the registry (it passed [`prepare`] when its stream was
    /// started).
    pub fn stored(schema: &Value) -> Result<Self, SchemaError> {
        let draft = draft(schema).map_err(|problem| SchemaError {
            what: "schema",
            problem,
            pointer: "/$schema".into(),
        })?;
        jsonschema::options()
            .with_draft(draft)
            .with_pattern_options(PatternOptions::regex())
            .build(schema)
            .map(|validator| Checker { validator })
            .map_err(|e| SchemaError {
                what: "schema",
                problem: e.to_string(),
                pointer: e.instance_path().as_str().to_string(),
            })
    }

    /// Whether the record matches.
    pub fn matches(&self, record: &Value) -> bool {
        self.validator.is_valid(record)
    }

    /// The record's violations, at most `room` of them; `line` names the record (its NDJSON
    /// line).
    pub fn violations(&self, record: &Value, line: Option<usize>, room: usize) -> Vec<Violation> {
        if room == 0 || self.validator.is_valid(record) {
            return Vec::new();
        }
        self.validator
            .iter_errors(record)
            .take(room)
            .map(|e| {
                let schema_path = e.schema_path().as_str().to_string();
                Violation {
                    line,
                    pointer: e.instance_path().as_str().to_string(),
                    keyword: schema_path
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    message: e.to_string(),
                }
            })
            .collect()
    }
}

/// The draft a schema says it is (2020-12 when it does not say).
fn draft(schema: &Value) -> Result<Draft, String> {
    match schema.get("$schema").and_then(Value::as_str) {
        None => Ok(Draft::Draft202012),
        Some(uri) => match uri.trim_end_matches('#') {
            "https://json-schema.org/draft/2020-12/schema" => Ok(Draft::Draft202012),
            "http://json-schema.org/draft-07/schema" => Ok(Draft::Draft7),
            other => Err(format!(
                "`{other}` is not a draft this daemon checks: draft 2020-12 \
                 (https://json-schema.org/draft/2020-12/schema) or draft 7 \
                 (http://json-schema.org/draft-07/schema#)"
            )),
        },
    }
}

/// The pointer of the first place nested deeper than [`MAX_DEPTH`].
fn too_deep(value: &Value, at: &str, depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return Some(at.to_string());
    }
    match value {
        Value::Object(o) => o
            .iter()
            .find_map(|(k, v)| too_deep(v, &format!("{at}/{}", escape(k)), depth + 1)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| too_deep(v, &format!("{at}/{i}"), depth + 1)),
        _ => None,
    }
}

/// Every `$ref` (and `$dynamicRef`) is local: `#` or `#/...`.
fn local_refs_only(value: &Value, at: &str) -> Result<(), (String, String)> {
    match value {
        Value::Object(o) => {
            for (k, v) in o {
                let here = format!("{at}/{}", escape(k));
                if matches!(k.as_str(), "$ref" | "$dynamicRef" | "$recursiveRef") {
                    if let Value::String(target) = v {
                        if !target.starts_with('#') {
                            return Err((
                                format!(
                                    "`{k}` `{target}` is not local: within a schema only `#...` \
                                     references are resolved (a named schema is used whole, as \
                                     the stream's schema); nothing is fetched from the network \
                                     or a file"
                                ),
                                here,
                            ));
                        }
                    }
                }
                local_refs_only(v, &here)?;
            }
            Ok(())
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                local_refs_only(v, &format!("{at}/{i}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Where a cycle of references starts that applies schemas to the same value over and over
/// (`$ref`s reached through `allOf`, `anyOf`, `oneOf`, `not`, `if`, `then`, `else` and
/// `$ref` itself, none of which move into the record), if there is one.
fn ref_cycle(schema: &Value) -> Option<String> {
    /// The schemas applied to the same value as the one at `pointer`.
    fn same_value(schema: &Value, pointer: &str) -> Vec<String> {
        let Some(node) = schema.pointer(pointer) else {
            return Vec::new();
        };
        let mut next = Vec::new();
        if let Some(Value::String(target)) = node.get("$ref") {
            if let Some(local) = target.strip_prefix('#') {
                next.push(local.to_string());
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(items)) = node.get(key) {
                next.extend((0..items.len()).map(|i| format!("{pointer}/{key}/{i}")));
            }
        }
        for key in ["not", "if", "then", "else"] {
            if node.get(key).is_some() {
                next.push(format!("{pointer}/{key}"));
            }
        }
        next
    }
    /// Depth-first from `at`; `path`: the pointers on the way.
    fn visit(
        schema: &Value,
        at: String,
        path: &mut Vec<String>,
        done: &mut HashSet<String>,
    ) -> Option<String> {
        if path.contains(&at) {
            return Some(at);
        }
        if !done.insert(at.clone()) || path.len() > 10_000 {
            return None;
        }
        path.push(at.clone());
        for next in same_value(schema, &at) {
            if let Some(cycle) = visit(schema, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    // Every subschema is a start: the root, and each place a keyword holds a schema.
    let mut starts = Vec::new();
    collect_objects(schema, "", &mut starts);
    let mut done = HashSet::new();
    starts
        .into_iter()
        .find_map(|start| visit(schema, start, &mut Vec::new(), &mut done))
}

fn collect_objects(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(o) => {
            out.push(at.to_string());
            for (k, v) in o {
                collect_objects(v, &format!("{at}/{}", escape(k)), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect_objects(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A key as a JSON pointer segment.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn prepared(schema: Value) -> Result<Checker, SchemaError> {
        prepare("schema", &schema, &Named::new(), 64 * 1024).map(|(_, c)| c)
    }

    #[test]
    fn a_record_is_checked_and_each_violation_named() {
        let c = prepared(json!({
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 0}, "id": {"pattern": "^[a-z]+$"}},
            "required": ["n"]
        }))
        .unwrap();
        assert!(c
            .violations(&json!({"n": 3, "id": "abc"}), None, 10)
            .is_empty());
        let v = c.violations(&json!({"n": -1, "id": "A1"}), Some(7), 10);
        let found: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.pointer.as_str(), v.keyword.as_str()))
            .collect();
        assert!(found.contains(&("/n", "minimum")), "{v:?}");
        assert!(found.contains(&("/id", "pattern")), "{v:?}");
        assert!(v.iter().all(|v| v.line == Some(7)));
        assert_eq!(
            c.violations(&json!({"id": "x"}), None, 10)[0].keyword,
            "required"
        );
        assert_eq!(
            c.violations(&json!({"n": -1, "id": "A"}), None, 1).len(),
            1,
            "capped"
        );
    }

    #[test]
    fn a_pathological_pattern_runs_in_linear_time() {
        let c = prepared(json!({"type": "string", "pattern": "^(a+)+$"})).unwrap();
        let long = format!("{}b", "a".repeat(100_000));
        let started = std::time::Instant::now();
        assert_eq!(c.violations(&json!(long), None, 10).len(), 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn unusable_schemas_are_refused_with_their_place() {
        let deep = (0..100).fold(json!({"type": "string"}), |s, _| json!({"items": s}));
        for (schema, named, at) in [
            (
                json!({"$ref": "https://example.com/s.json"}),
                "not a schema named",
                "/$ref",
            ),
            (
                json!({"properties": {"a": {"$ref": "other.json#/x"}}}),
                "not local",
                "/properties/a/$ref",
            ),
            (deep, "nests deeper", ""),
            (
                json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}),
                "cycle",
                "",
            ),
            (json!({"type": "nope"}), "", ""),
            (json!({"pattern": "(?<=a)b"}), "", ""),
            (
                json!({"$schema": "http://json-schema.org/draft-04/schema#"}),
                "not a draft",
                "/$schema",
            ),
        ] {
            let e = prepared(schema.clone()).unwrap_err();
            assert!(e.to_string().contains(named), "{schema}: {e}");
            assert!(e.pointer.starts_with(at), "{schema}: {e:?}");
        }
        let big = json!({"description": "x".repeat(70_000)});
        assert!(prepared(big)
            .unwrap_err()
            .to_string()
            .contains("limits.max_schema_bytes"));
        // A recursive data type is no cycle: each step moves into the record.
        prepared(json!({"$defs": {"tree": {"properties": {"kids": {"items": {"$ref": "#/$defs/tree"}}}}}, "$ref": "#/$defs/tree"})).unwrap();
    }

    #[test]
    fn a_named_schema_is_used_whole() {
        let named = Named::from([("reading".to_string(), json!({"type": "number"}))]);
        let (schema, c) = prepare("schema", &json!({"$ref": "reading"}), &named, 1024).unwrap();
        assert_eq!(schema, json!({"type": "number"}));
        assert!(c.violations(&json!(1.5), None, 10).is_empty());
        assert_eq!(c.violations(&json!("x"), None, 10)[0].keyword, "type");
        let e = prepare("schema", &json!({"$ref": "nope"}), &named, 1024).unwrap_err();
        assert!(e.to_string().contains("reading"), "{e}");
    }
}
