//! Property tests (proptest) on every parser that takes a user's bytes: send bodies (JSON and
//! NDJSON framing), the `from` / `on_lag` query parameters, close frames, processor specs,
//! stream tokens and the config file. None may panic on any input; valid inputs round-trip.

use std::time::Duration;

use crate::config::{self, Config};
use crate::delivery::{OnLag, StartAt};
use crate::ingest::{records, RecordLimits};
use crate::wire::Close;
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{json, Value};

fn limits() -> RecordLimits {
    RecordLimits {
        per_request: 1000,
        record_bytes: 64 * 1024,
        order_timeout: Duration::from_secs(1),
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[^\u{0}]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn send_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512),
                               ndjson in any::<bool>()) {
        let kind = if ndjson { "application/x-ndjson" } else { "application/json" };
        let _ = records(&Bytes::from(body), Some(kind), limits());
    }

    #[test]
    fn ndjson_of_valid_values_is_accepted_record_for_record(values in prop::collection::vec(json_value(), 1..20)) {
        let lines: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let body = Bytes::from(lines.join("\n"));
        let parsed = records(&body, Some("application/x-ndjson"), limits()).unwrap();
        prop_assert_eq!(parsed.count, values.len());
        let back: Vec<Value> = parsed.iter().map(|r| serde_json::from_slice(r).unwrap()).collect();
        prop_assert_eq!(back, values);
    }

    #[test]
    fn one_json_value_is_one_record(value in json_value()) {
        let body = Bytes::from(value.to_string());
        let parsed = records(&body, None, limits()).unwrap();
        prop_assert_eq!(parsed.count, 1);
    }

    #[test]
    fn query_parameters_never_panic(text in "\\PC{0,24}") {
        let _ = StartAt::parse(Some(&text));
        let _ = OnLag::parse(Some(&text));
    }

    #[test]
    fn cursors_and_last_n_round_trip(n in 0i64..i64::MAX) {
        prop_assert_eq!(StartAt::parse(Some(&n.to_string())).unwrap(), StartAt::Cursor(n));
        if n > 0 {
            prop_assert_eq!(StartAt::parse(Some(&format!("-{n}"))).unwrap(), StartAt::Last(n as u64));
        }
    }

    #[test]
    fn close_frames_round_trip(resume in 0i64..i64::MAX, limit in 1usize..usize::MAX,
                               code in any::<u16>(), reason in "\\PC{0,40}") {
        for close in [Close::Lagged { resume }, Close::TooBig { limit }, Close::TokenExpired,
                      Close::Ended, Close::CaughtUp, Close::ShuttingDown] {
            prop_assert_eq!(Close::parse(close.code(), &close.reason()), close);
        }
        let _ = Close::parse(code, &reason);
    }

    #[test]
    fn processor_specs_never_panic(value in json_value()) {
        let _ = crate::processing::parse_spec(&value, &config::Processing::default());
        let _ = crate::processing::parse_spec(&json!({"type": "jq", "filter": value.to_string()}),
                                     &config::Processing::default());
    }

    #[test]
    fn jq_specs_round_trip(path in "[a-z]{1,8}") {
        let spec = json!({"type": "jq", "filter": format!(".{path}")});
        let parsed = crate::processing::parse_spec(&spec, &config::Processing::default()).unwrap();
        prop_assert_eq!(serde_json::to_value(&parsed).unwrap(), spec);
    }

    #[test]
    fn config_files_never_panic(text in "\\PC{0,200}") {
        let _ = Config::from_yaml(&text);
    }

    #[test]
    fn config_values_round_trip(max_body in 1024usize..100_000_000, ttl in 1u64..10_000_000) {
        let text = format!("limits:\n  max_body_bytes: {max_body}\n  max_token_ttl_s: {ttl}\n");
        let c = Config::from_yaml(&text).unwrap();
        prop_assert_eq!((c.limits.server.max_body_bytes, c.limits.tokens.max_token_ttl_s), (max_body, ttl));
    }

    #[test]
    fn tokens_never_panic(text in "\\PC{0,120}") {
        let keys = crate::auth::KeyStore::new(&[config::ApiKey::new("alice".into(), "alice-key-0123456789".into(), false)]);
        let _ = keys.authenticate_token(&text);
        let _ = keys.authenticate_token(&format!("eyJhbGciOiJIUzI1NiJ9.{text}.x"));
    }
}
