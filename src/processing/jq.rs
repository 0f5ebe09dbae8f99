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

/// Stack of the thread that compiles a filter: jaq's parser and compiler recurse once per
/// nesting level, and a spec is at most `processing.max_spec_bytes` long, so this is room for
/// any spec (it is reserved, not touched, until used).
const COMPILE_STACK: usize = 256 * 1024 * 1024;

/// Compiles `code`, or says why it does not compile. Runs on a thread of its own with a
/// large stack, so no nesting the depth check lets through can overflow it.
pub fn compile(code: &str) -> Result<(), JqError> {
    let code = code.to_string();
    std::thread::Builder::new()
        .name("streamgate-jq-compile".into())
        .stack_size(COMPILE_STACK)
        .spawn(move || build(&code).map(|_| ()))
        .map_err(|e| JqError(format!("cannot start the compiler thread: {e}")))?
        .join()
        .unwrap_or_else(|_| Err(JqError("the jq compiler failed".into())))
}

/// How deeply `code` nests: brackets, `if … end` and string interpolations, outside string
/// literals and comments. A cheap bound checked before compiling.
pub fn nesting(code: &str) -> usize {
    #[derive(PartialEq)]
    enum Open {
        Bracket,
        If,
        Interpolation,
        Str,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut deepest = 0;
    let bytes = code.as_bytes();
    let mut i = 0;
    let word_at = |i: usize, w: &[u8]| {
        let boundary = |c: Option<&u8>| {
            !c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$')
        };
        bytes[i..].starts_with(w)
            && boundary(i.checked_sub(1).and_then(|j| bytes.get(j)))
            && boundary(bytes.get(i + w.len()))
    };
    while i < bytes.len() {
        let c = bytes[i];
        if stack.last() == Some(&Open::Str) {
            match c {
                b'\\' if bytes.get(i + 1) == Some(&b'(') => {
                    stack.push(Open::Interpolation);
                    i += 1;
                }
                b'\\' => i += 1,
                b'"' => {
                    stack.pop();
                }
                _ => {}
            }
        } else {
            match c {
                b'"' => stack.push(Open::Str),
                b'#' => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b'(' | b'[' | b'{' => stack.push(Open::Bracket),
                b')' | b']' | b'}' => {
                    stack.pop();
                }
                b'i' if word_at(i, b"if") => stack.push(Open::If),
                b'e' if word_at(i, b"end") && stack.last() == Some(&Open::If) => {
                    stack.pop();
                }
                _ => {}
            }
        }
        deepest = deepest.max(stack.iter().filter(|o| **o != Open::Str).count());
        i += 1;
    }
    deepest
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

/// Compiled filters kept per thread; past this the least recently used is dropped.
const CACHE_SIZE: usize = 64;

thread_local! {
    /// Compiled filters by source, with when each was last used.
    static CACHE: RefCell<HashMap<String, (Rc<Filter>, u64)>> = RefCell::new(HashMap::new());
    static CLOCK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The compiled filter for `code`, from the cache or compiled now.
fn cached(code: &str) -> Result<Rc<Filter>, JqError> {
    let now = CLOCK.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((f, used)) = cache.get_mut(code) {
            *used = now;
            return Ok(f.clone());
        }
        let f = Rc::new(build(code)?);
        if cache.len() >= CACHE_SIZE {
            let oldest = cache
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                cache.remove(&k);
            }
        }
        cache.insert(code.to_string(), (f.clone(), now));
        Ok(f)
    })
}

/// Runs the filter `code` on `input`: its outputs (at most `max_outputs`), or the first error.
pub fn run(code: &str, input: &Value, max_outputs: usize) -> Result<Vec<Value>, JqError> {
    let filter = cached(code)?;
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
    fn nesting_counts_brackets_ifs_and_interpolations_not_strings() {
        assert_eq!(nesting(".a"), 0);
        assert_eq!(nesting("[.a, {b: (.c)}]"), 3);
        assert_eq!(nesting("if .a then if .b then 1 else 2 end else 3 end"), 2);
        assert_eq!(
            nesting(r#""(((" | ."#),
            0,
            "brackets in a string do not count"
        );
        assert_eq!(nesting(r#""x\(.a | [.b])""#), 2, "an interpolation is code");
        assert_eq!(nesting("# ((((\n.a"), 0, "comments do not count");
        assert_eq!(nesting(&"(".repeat(1000)), 1000);
    }

    #[test]
    fn the_cache_keeps_a_bounded_number_of_filters() {
        for i in 0..CACHE_SIZE + 10 {
            run(&format!(". + {i}"), &json!(1), 1).unwrap();
        }
        assert_eq!(CACHE.with(|c| c.borrow().len()), CACHE_SIZE);
        assert_eq!(run(". + 1", &json!(1), 1).unwrap(), vec![json!(2)]);
    }

    #[test]
    fn deep_filters_compile_without_overflowing_the_callers_stack() {
        let deep = format!("{}1{}", "[".repeat(2_000), "]".repeat(2_000));
        assert!(compile(&deep).is_ok());
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
