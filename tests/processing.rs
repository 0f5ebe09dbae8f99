//! Processors end to end through the broker: jq transforms, selects (no output, no result),
//! fans out (several results per record), and a failing record gives an error result while
//! the stream keeps going.

use serde_json::{json, Value};
use streamgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jq_filters_select_transform_and_fan_out() {
    let d = Daemon::start(test_config()).await;
    let spec = json!({"type": "jq", "filter": "select(.t > 20) | {hot: .t}"});
    let id = d
        .start_stream(ALICE, Some(json!({"processor": spec})))
        .await;
    assert_eq!(d.describe(ALICE, &id).await["processor"], spec);
    let mut ws = d.subscribe(ALICE, &id).await;
    let (status, _) = d
        .send_ndjson(ALICE, &id, "{\"t\":10}\n{\"t\":25}\n{\"t\":30}\n".into())
        .await;
    assert_eq!(status, 202);
    let got: Vec<Value> = results(&mut ws, 2)
        .await
        .iter()
        .map(|f| f["data"].clone())
        .collect();
    assert_eq!(got, vec![json!({"hot": 25}), json!({"hot": 30})]);

    // Two results per record, both from the same input offset.
    let fan = d
        .start_stream(
            ALICE,
            Some(json!({"processor": {"type": "jq", "filter": ".[]"}})),
        )
        .await;
    let mut ws = d.subscribe(ALICE, &fan).await;
    let (_, body) = d.send_json(ALICE, &fan, &json!(["a", "b"])).await;
    let frames = results(&mut ws, 2).await;
    assert_eq!(frames[0]["data"], "a");
    assert_eq!(frames[1]["data"], "b");
    assert_eq!(frames[0]["input_offset"], body["offsets"][0]);
    assert_eq!(frames[1]["input_offset"], body["offsets"][0]);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_record_gives_an_error_result_and_the_stream_goes_on() {
    let d = Daemon::start(test_config()).await;
    let id = d
        .start_stream(
            ALICE,
            Some(json!({"processor": {"type": "jq", "filter": ".a + 1"}})),
        )
        .await;
    let mut ws = d.subscribe(ALICE, &id).await;
    let (_, body) = d
        .send_ndjson(ALICE, &id, "{\"a\":\"text\"}\n{\"a\":1}\n".into())
        .await;
    let error = next_frame(&mut ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["input_offset"], body["offsets"][0]);
    assert_eq!(error["error"]["code"], "processing_failed");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("jq:"));
    let next = next_frame(&mut ws).await;
    assert_eq!(next["type"], "result");
    assert_eq!(next["data"], 2);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_does_not_compile_is_refused_with_the_reason() {
    let d = Daemon::start(test_config()).await;
    for (filter, expect) in [(".a |", "expected"), ("nosuch(1)", "nosuch")] {
        let resp = d
            .http
            .post(d.url("/api/stream/start"))
            .header("x-api-key", ALICE)
            .json(&json!({"processor": {"type": "jq", "filter": filter}}))
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_json(resp).await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("does not compile") && message.contains(expect),
            "{message}"
        );
    }
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_an_unknown_stream_is_an_error_not_a_guess() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let mut config = test_config();
    let broker = streamgate::kafka::EmbeddedBroker::start(&config.topics).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    config.brokers = streamgate::config::Brokers::Bootstrap(bootstrap.clone());
    let d = Daemon::start(config).await;

    // Written straight into the input topic by something other than the daemon.
    let stranger = uuid::Uuid::new_v4().to_string();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::to("streamgate.input")
                .key(&stranger)
                .payload("{\"x\":1}"),
        )
        .unwrap();
    producer.flush(std::time::Duration::from_secs(10)).unwrap();

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let b = bootstrap.clone();
        let records = tokio::task::spawn_blocking(move || read_topic(&b, "streamgate.results"))
            .await
            .unwrap();
        if let Some(r) = records
            .iter()
            .find(|r| r.key.as_deref() == Some(stranger.as_str()))
        {
            let f = r.json();
            assert_eq!(f["type"], "error", "{f}");
            assert!(f["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not in the registry"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no result for the unknown stream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    d.stop().await.unwrap();
}

/// Waits for `n` window results (skipping anything else) and returns their data.
async fn window_results(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = next_frame(ws).await;
        assert_ne!(f["type"], "error", "{f}");
        if f["type"] == "result" {
            out.push(f["data"].clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_emits_exact_aggregates_per_group_when_it_closes() {
    let d = Daemon::start(test_config()).await;
    let spec = json!({"type": "window", "length_ms": 1000, "value": ".t",
                      "group_by": ".room", "grace_ms": 100});
    let id = d
        .start_stream(ALICE, Some(json!({"processor": spec})))
        .await;
    assert_eq!(d.describe(ALICE, &id).await["processor"], spec);
    let mut ws = d.subscribe(ALICE, &id).await;
    // One request: one arrival time, so one window.
    let body = "{\"t\":20,\"room\":\"kitchen\"}\n{\"t\":10,\"room\":\"hall\"}\n{\"t\":23,\"room\":\"kitchen\"}\n";
    let (status, _) = d.send_ndjson(ALICE, &id, body.into()).await;
    assert_eq!(status, 202);
    let got = window_results(&mut ws, 1).await.remove(0);
    let start = got["window_start_ms"].as_i64().unwrap();
    assert_eq!(start % 1000, 0, "{got}");
    assert_eq!(got["window_end_ms"], start + 1000);
    assert_eq!(
        got["groups"],
        json!({
            "hall": {"count": 1, "sum": 10.0, "min": 10.0, "max": 10.0, "avg": 10.0},
            "kitchen": {"count": 2, "sum": 43.0, "min": 20.0, "max": 23.0, "avg": 21.5}
        })
    );

    // A record whose value is not a number is an error result; the window goes on.
    let plain = d
        .start_stream(
            ALICE,
            Some(json!({"processor": {"type": "window", "length_ms": 500, "value": ".v", "grace_ms": 0}})),
        )
        .await;
    let mut ws = d.subscribe(ALICE, &plain).await;
    d.send_ndjson(
        ALICE,
        &plain,
        "{\"v\":\"x\"}\n{\"v\":4}\n{\"v\":6}\n".into(),
    )
    .await;
    let error = next_frame(&mut ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a number"),
        "{error}"
    );
    let got = window_results(&mut ws, 1).await.remove(0);
    assert_eq!(
        (got["count"].clone(), got["sum"].clone(), got["avg"].clone()),
        (json!(2), json!(10.0), json!(5.0))
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_window_spec_is_refused_with_the_reason() {
    let d = Daemon::start(test_config()).await;
    for (spec, expect) in [
        (
            json!({"type": "window", "length_ms": 0, "value": ".t"}),
            "length_ms",
        ),
        (
            json!({"type": "window", "length_ms": 1000, "value": ".t |"}),
            "value does not compile",
        ),
        (
            json!({"type": "window", "length_ms": 1000, "value": ".t", "group_by": "]"}),
            "group_by does not compile",
        ),
        (json!({"type": "window", "value": ".t"}), "length_ms"),
    ] {
        let (status, body) = d.try_start(ALICE, Some(json!({"processor": spec}))).await;
        assert_eq!(status, 400, "{spec} -> {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expect), "{spec} -> {message}");
    }
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_filter_gets_an_error_result_and_does_not_stall_others() {
    let mut config = test_config();
    config.processing.max_record_ms = 200;
    let d = Daemon::start(config).await;
    let spec = json!({"processor": {"type": "jq", "filter": ".n as $n | last(range($n))"}});
    let slow = d.start_stream(ALICE, Some(spec.clone())).await;
    let other = d.start_stream(ALICE, Some(spec)).await;
    let mut ws = d.subscribe(ALICE, &slow).await;
    let mut other_ws = d.subscribe(ALICE, &other).await;
    d.send_ndjson(
        ALICE,
        &slow,
        "{\"n\":3}\n{\"n\":20000000}\n{\"n\":3}\n".into(),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["data"], 2);
    let timed_out = next_frame(&mut ws).await;
    assert_eq!(timed_out["type"], "error", "{timed_out}");
    let message = timed_out["error"]["message"].as_str().unwrap();
    assert!(message.contains("longer than 200 ms"), "{message}");
    // The stream's filter is not run again; the record still gets its (error) result.
    let after = next_frame(&mut ws).await;
    assert!(
        after["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not processed"),
        "{after}"
    );
    // Other streams go on, unstalled.
    d.send_json(ALICE, &other, &json!({"n": 5})).await;
    assert_eq!(next_frame(&mut other_ws).await["data"], 4);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_slow_to_start_does_not_use_up_the_record_s_time() {
    // A worker that takes longer to start than a record may run, as a new process can on a
    // busy machine: the record's clock starts once the worker is ready.
    let dir = tempfile::tempdir().unwrap();
    let worker = dir.path().join("slow-worker");
    std::fs::write(
        &worker,
        format!(
            "#!/bin/sh\nsleep 1\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_streamgate-worker")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&worker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut config = test_config();
    config.processing.max_record_ms = 300;
    config.processing.worker = Some(worker);
    let d = Daemon::start(config).await;
    let spec = json!({"processor": {"type": "jq", "filter": ".n + 1"}});
    let id = d.start_stream(ALICE, Some(spec)).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    d.send_json(ALICE, &id, &json!({"n": 1})).await;
    let frame = next_frame(&mut ws).await;
    assert_eq!(frame["data"], 2, "{frame}");
    d.stop().await.unwrap();
}
