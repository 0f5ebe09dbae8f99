//! A JSON Schema per stream: records checked at the edge, before anything is stored, and
//! refused whole with each violation's line, JSON pointer, keyword and expectation (HTTP,
//! NDJSON, `/api/connect`); a schema that cannot be used refused at start with its problem
//! and place; a pathological pattern answered in linear time; every instance checking alike
//! (the schema travels in the registry); results checked against a `result_schema`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use streamgate::config::{Brokers, Config, SchemaSource};
use streamgate_testkit::*;

fn on(tansu: &Tansu) -> Config {
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(tansu.bootstrap());
    config
}

/// `POST /api/stream/start` with `body` as alice.
async fn start(d: &Daemon, body: Value) -> (u16, Value) {
    d.try_start(ALICE, Some(body)).await
}

/// A reading: an object of ten typed properties, one with a pattern, one with a range.
fn reading_schema() -> Value {
    json!({
        "type": "object",
        "required": ["sensor", "celsius"],
        "properties": {
            "sensor": {"type": "string", "pattern": "^[a-z]+-[0-9]+$"},
            "celsius": {"type": "number", "minimum": -90, "maximum": 60},
            "humidity": {"type": "number"},
            "site": {"type": "string"},
            "floor": {"type": "integer"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "battery": {"type": "number"},
            "firmware": {"type": "string"},
            "seq": {"type": "integer", "minimum": 0}
        }
    })
}

fn reading(n: usize) -> Value {
    json!({"sensor": format!("roof-{n}"), "celsius": 21.5, "seq": n})
}

/// The records of `stream` in the input topic.
fn stored(tansu: &Tansu, stream: &str) -> usize {
    read_topic(&tansu.bootstrap(), "streamgate.input")
        .iter()
        .filter(|r| r.key.as_deref() == Some(stream))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_checked_at_the_edge_and_a_request_with_one_bad_record_is_refused_whole() {
    let tansu = Tansu::start();
    let d = Daemon::start(on(&tansu)).await;
    let (status, started) = start(&d, json!({"schema": reading_schema()})).await;
    assert_eq!(status, 201, "{started}");
    let id = started["stream_id"].as_str().unwrap().to_string();
    assert_eq!(d.describe(ALICE, &id).await["schema"], reading_schema());

    // 10 000 lines, one bad on line 7 321: 400 naming it; nothing of the batch stored.
    let lines: String = (1..=10_000)
        .map(|n| {
            let mut r = reading(n);
            if n == 7_321 {
                r["celsius"] = json!(99);
                r["sensor"] = json!("ROOF");
            }
            format!("{r}\n")
        })
        .collect();
    let (status, body) = d.send_ndjson(ALICE, &id, lines).await;
    assert_eq!(status, 400, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], "schema_violation");
    assert_eq!(error["line"], 7_321);
    let found: Vec<(Value, &str, &str)> = error["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["line"].clone(),
                v["pointer"].as_str().unwrap(),
                v["keyword"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        found.contains(&(json!(7_321), "/celsius", "maximum")),
        "{body}"
    );
    assert!(
        found.contains(&(json!(7_321), "/sensor", "pattern")),
        "{body}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("line 7321"),
        "{body}"
    );
    // Every violation of the batch, up to ten; the count of bad records says the rest.
    let many: String = (1..=30).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    let (status, body) = d.send_ndjson(ALICE, &id, many).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["violations"].as_array().unwrap().len(),
        10,
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("30 records"),
        "{body}"
    );

    // One record as JSON, and a send frame of /api/connect: the same detail.
    let (status, body) = d.send_json(ALICE, &id, &json!({"sensor": "roof-1"})).await;
    assert_eq!(
        (status, body["error"]["violations"][0]["keyword"].as_str()),
        (400, Some("required"))
    );
    let mut ws = d.connect(ALICE).await;
    send_frame(
        &mut ws,
        &json!({"type": "send", "stream_id": id, "seq": 1, "data": {"sensor": 7, "celsius": 1}}),
    )
    .await;
    let nack = next_of(&mut ws, "nack").await;
    assert_eq!(nack["error"]["code"], "schema_violation");
    assert_eq!(nack["error"]["violations"][0]["pointer"], "/sensor");
    assert_eq!(nack["error"]["violations"][0]["keyword"], "type");

    // Good records pass; only they are in the input topic.
    assert_eq!(d.send_json(ALICE, &id, &reading(1)).await.0, 202);
    let deadline = Instant::now() + WAIT;
    while stored(&tansu, &id) < 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored(&tansu, &id),
        1,
        "nothing of a refused request was stored"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pathological_pattern_is_answered_at_once_and_the_daemon_goes_on() {
    let d = Daemon::start(test_config()).await;
    let schema = json!({"properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}});
    let (status, started) = start(&d, json!({"schema": schema})).await;
    assert_eq!(status, 201, "{started}");
    let id = started["stream_id"].as_str().unwrap();
    let evil = json!({"s": format!("{}!", "a".repeat(100_000))});
    let asked = Instant::now();
    let (status, body) = d.send_json(ALICE, id, &evil).await;
    assert_eq!(
        (status, body["error"]["violations"][0]["keyword"].as_str()),
        (400, Some("pattern"))
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(d.send_json(ALICE, id, &json!({"s": "aaa"})).await.0, 202);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_schemas_are_refused_at_start_naming_the_problem_and_its_place() {
    let d = Daemon::start(test_config()).await;
    let deep = (0..100).fold(json!({"type": "string"}), |s, _| json!({"items": s}));
    let cycle = json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
    let huge = json!({"description": "x".repeat(70_000)});
    for (schema, says) in [
        (deep, "nests deeper than 64 levels (at /items"),
        (cycle, "cycle of `$ref`s"),
        (
            json!({"$ref": "https://example.com/schema.json"}),
            "never fetched from the network",
        ),
        (
            json!({"properties": {"a": {"$ref": "https://example.com/a.json"}}}),
            "(at /properties/a/$ref)",
        ),
        (
            json!({"properties": {"a": {"pattern": "(?<=x)y"}}}),
            "schema:",
        ),
        (json!({"type": "nope"}), "schema:"),
        (huge, "limits.max_schema_bytes"),
    ] {
        let asked = Instant::now();
        let (status, body) = start(&d, json!({"schema": schema})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_input")),
            "{body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{says}: {body}"
        );
        assert!(asked.elapsed() < Duration::from_secs(2), "no hang");
    }
    let list = d.get_json(ALICE, "/api/streams").await;
    assert_eq!(
        list["streams"].as_array().unwrap().len(),
        0,
        "none was started"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_schema_started_on_one_instance_is_checked_alike_on_another() {
    let tansu = Tansu::start();
    let mut with_names = on(&tansu);
    with_names.schemas.insert(
        "reading".into(),
        SchemaSource::Inline {
            schema: reading_schema(),
        },
    );
    let a = Daemon::start(with_names).await;
    let b = Daemon::start(on(&tansu)).await;
    let (status, started) = start(&a, json!({"schema": {"$ref": "reading"}})).await;
    assert_eq!(status, 201, "{started}");
    let id = started["stream_id"].as_str().unwrap().to_string();
    // The registry holds the schema itself, so b (which names none) has it.
    let deadline = Instant::now() + WAIT;
    while b.describe(ALICE, &id).await["schema"] != reading_schema() {
        assert!(Instant::now() < deadline, "b never saw the stream's schema");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = b
        .send_json(ALICE, &id, &json!({"sensor": "x", "celsius": 1}))
        .await;
    assert_eq!(
        (status, body["error"]["violations"][0]["pointer"].as_str()),
        (400, Some("/sensor"))
    );
    assert_eq!(b.send_json(ALICE, &id, &reading(3)).await.0, 202);
    // A name the config does not have.
    let (status, body) = start(&b, json!({"schema": {"$ref": "reading"}})).await;
    assert_eq!(status, 400, "{body}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_that_do_not_match_the_result_schema_become_error_frames() {
    let d = Daemon::start(test_config()).await;
    let (status, started) = start(
        &d,
        json!({
            "processor": {"type": "jq", "filter": "{x: .n}"},
            "result_schema": {"properties": {"x": {"type": "integer", "minimum": 0}}}
        }),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = started["stream_id"].as_str().unwrap();
    let mut ws = d.subscribe(ALICE, id).await;
    for n in [1, -1, 2] {
        assert_eq!(d.send_json(ALICE, id, &json!({"n": n})).await.0, 202);
    }
    let frames = [
        next_frame(&mut ws).await,
        next_frame(&mut ws).await,
        next_frame(&mut ws).await,
    ];
    assert_eq!(frames[0]["data"], json!({"x": 1}));
    assert_eq!(frames[1]["type"], "error");
    assert_eq!(frames[1]["error"]["code"], "schema_violation");
    let message = frames[1]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("/x") && message.contains("minimum"),
        "{message}"
    );
    assert_eq!(frames[2]["data"], json!({"x": 2}));
    d.stop().await.unwrap();
}
