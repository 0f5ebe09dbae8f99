//! jq filters on records, with the jaq crates: compile once (errors name what is wrong and
//! where), run per record, every output a result.
//!
//! jaq's values are reference-counted without atomics, so compiled filters cannot move
//! between threads: each worker thread keeps its own cache of compiled filters by source.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;
use serde_json::Value;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// Why a filter does not compile or failed on a record; the text says what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JqError(String);

impl JqError {
    pub fn new(message: String) -> Self {
        Self(message)
    }
}

/// Compiles `code`, or says why it does not compile.
pub fn compile(code: &str) -> Result<(), JqError> {
    build(code).map(|_| ())
}

fn build(code: &str) -> Result<Filter, JqError> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let offset = |s: &str| (s.as_ptr() as usize).saturating_sub(code.as_ptr() as usize);
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errors| {
            let mut msgs = Vec::new();
            for (_, e) in errors {
                match e {
                    jaq_core::load::Error::Io(v) => {
                        msgs.extend(v.into_iter().map(|(p, m)| format!("cannot load {p}: {m}")))
                    }
                    jaq_core::load::Error::Lex(v) => msgs.extend(v.into_iter().map(|(exp, at)| {
                        format!("expected {} at offset {}", exp.as_str(), offset(at))
                    })),
                    jaq_core::load::Error::Parse(v) => {
                        msgs.extend(v.into_iter().map(|(exp, at)| {
                            format!("expected {} at offset {}", exp.as_str(), offset(at))
                        }))
                    }
                }
            }
            JqError(msgs.join("; "))
        })?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errors| {
            errors
                .into_iter()
                .flat_map(|(_, v)| v)
                .map(|(name, undefined)| {
                    format!(
                        "undefined {} `{name}` at offset {}",
                        undefined.as_str(),
                        offset(name)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .map_err(JqError)
}

thread_local! {
    static CACHE: RefCell<HashMap<String, Rc<Filter>>> = RefCell::new(HashMap::new());
}

/// Runs the filter `code` on `input`: its outputs (at most `max_outputs`), or the first error.
pub fn run(code: &str, input: &Value, max_outputs: usize) -> Result<Vec<Value>, JqError> {
    let filter = CACHE.with(|cache| -> Result<Rc<Filter>, JqError> {
        if let Some(f) = cache.borrow().get(code) {
            return Ok(f.clone());
        }
        let f = Rc::new(build(code)?);
        cache.borrow_mut().insert(code.to_string(), f.clone());
        Ok(f)
    })?;
    let input = jaq_json::read::parse_single(input.to_string().as_bytes())
        .map_err(|e| JqError(format!("jq input: {e:?}")))?;
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
    let mut out = Vec::new();
    for v in filter.id.run((ctx, input)).map(unwrap_valr) {
        let v = v.map_err(|e| JqError(format!("jq: {e}")))?;
        if out.len() == max_outputs {
            return Err(JqError(format!(
                "jq: more than {max_outputs} results for one record"
            )));
        }
        out.push(
            serde_json::from_str(&v.to_string()).map_err(|e| JqError(format!("jq output: {e}")))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_OUTPUTS: usize = 1000;
    use serde_json::json;

    #[test]
    fn transforms_selects_and_fans_out() {
        assert_eq!(
            run(".t * 2", &json!({"t": 21}), MAX_OUTPUTS).unwrap(),
            vec![json!(42)]
        );
        assert_eq!(
            run("select(.t > 5)", &json!({"t": 1}), MAX_OUTPUTS).unwrap(),
            Vec::<Value>::new()
        );
        assert_eq!(
            run(".[]", &json!([1, 2]), MAX_OUTPUTS).unwrap(),
            vec![json!(1), json!(2)]
        );
        assert_eq!(
            run("{a: .x | ascii_upcase}", &json!({"x": "hi"}), MAX_OUTPUTS).unwrap(),
            vec![json!({"a": "HI"})]
        );
    }

    #[test]
    fn errors_are_reported() {
        let e = compile(".a |").unwrap_err().to_string();
        assert!(e.contains("expected") && e.contains("offset"), "{e}");
        let e = compile("nosuchfn(1)").unwrap_err().to_string();
        assert!(e.contains("nosuchfn"), "{e}");
        assert!(run(".a + 1", &json!({"a": "x"}), MAX_OUTPUTS)
            .unwrap_err()
            .to_string()
            .starts_with("jq:"));
        assert!(run("range(5000)", &json!(null), MAX_OUTPUTS)
            .unwrap_err()
            .to_string()
            .contains("more than"));
    }
}
