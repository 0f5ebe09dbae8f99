//! The daemon end to end on the embedded broker: start → send → results over WebSocket, the
//! bi-directional channel, ownership, and every error status with its JSON body.

use serde_json::{json, Value};
use streamgate_testkit::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_send_and_receive_result_over_websocket() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;

    let (status, body) = d.send_json(ALICE, &id, &json!({"hello": "world"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["records"], 1);
    let offset = body["offsets"][0].as_i64().unwrap();

    let frame = next_frame(&mut ws).await;
    assert_eq!(frame["type"], "result");
    assert_eq!(frame["stream_id"], id.as_str());
    assert_eq!(frame["data"], json!({"hello": "world"}));
    assert_eq!(frame["input_offset"], offset);
    assert_eq!(frame["input_partition"], body["partition"]);
    assert!(frame["cursor"].is_i64());
    assert!(frame["received_ms"].as_i64().unwrap() <= frame["processed_ms"].as_i64().unwrap());

    let metrics = d
        .http
        .get(d.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("streamgate_records_in_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("streamgate_subscribers 1\n"), "{metrics}");
    assert!(
        metrics.contains("streamgate_http_requests_total{method=\"POST\",status=\"202\"} 1"),
        "{metrics}"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_batch_keeps_order() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    let body: String = (1..=200).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let (status, resp) = d.send_ndjson(ALICE, &id, body).await;
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["records"], 200);
    let offsets: Vec<i64> = resp["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_i64().unwrap())
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets not increasing"
    );

    let got = results(&mut ws, 200).await;
    let ns: Vec<i64> = got
        .iter()
        .map(|f| f["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (1..=200).collect::<Vec<_>>());
    let cursors: Vec<i64> = got.iter().map(|f| f["cursor"].as_i64().unwrap()).collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursors not increasing"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_on_the_websocket_are_acknowledged_in_order() {
    let d = Daemon::start(test_config()).await;
    let id = d
        .start_stream(ALICE, Some(json!({"processor": "uppercase"})))
        .await;
    let mut ws = d.subscribe(ALICE, &id).await;
    send_text(&mut ws, r#"{"word":"one"}"#).await;
    send_text(&mut ws, "not json").await;
    send_text(&mut ws, r#""two""#).await;

    let mut acks = Vec::new();
    let mut data = Vec::new();
    while acks.len() < 3 || data.len() < 2 {
        let f = next_frame(&mut ws).await;
        match f["type"].as_str().unwrap() {
            "ack" | "nack" => acks.push(f),
            "result" => data.push(f["data"].clone()),
            other => panic!("unexpected frame type {other}: {f}"),
        }
    }
    assert_eq!(acks[0]["type"], "ack");
    assert_eq!(acks[0]["seq"], 1);
    assert!(acks[0]["offset"].is_i64());
    assert_eq!(acks[1]["type"], "nack");
    assert_eq!(acks[1]["seq"], 2);
    assert_eq!(acks[1]["error"]["code"], "invalid_input");
    assert_eq!(acks[2]["seq"], 3);
    assert_eq!(data, vec![json!({"word": "ONE"}), json!("TWO")]);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_cannot_see_or_use_a_stream() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let (status, body) = d.send_json(BOB, &id, &json!(1)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "stream_not_found");

    for (method, path) in [
        (reqwest::Method::GET, format!("/api/stream/{id}")),
        (reqwest::Method::DELETE, format!("/api/stream/{id}")),
    ] {
        let resp = d
            .http
            .request(method.clone(), d.url(&path))
            .header("x-api-key", BOB)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    let list: Value = d
        .http
        .get(d.url("/api/streams"))
        .header("x-api-key", BOB)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["streams"], json!([]));

    // The WebSocket handshake is refused with the same 404.
    let mut req = d
        .ws_url(&format!("/api/stream/{id}/results"))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("x-api-key", BOB.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        other => panic!("expected a 404 handshake, got {:?}", other.map(|_| ())),
    }
    // The owner still sees it, with counters.
    let info = d.describe(ALICE, &id).await;
    assert_eq!(info["owner"], "alice");
    assert_eq!(info["state"], "open");
    assert_eq!(info["processor"], json!({"type": "identity"}));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_key_in_subprotocol() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let offered = format!("streamgate.v1, apikey.{ALICE}");
    let (mut ws, answered) = d.subscribe_offering(&id, "", &offered).await.unwrap();
    assert_eq!(answered.as_deref(), Some("streamgate.v1"));
    d.send_json(ALICE, &id, &json!(42)).await;
    assert_eq!(next_frame(&mut ws).await["data"], 42);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_status_and_json_body() {
    let mut config = test_config();
    config.limits.server.max_body_bytes = 1024;
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    let send_url = d.url(&format!("/api/stream/{id}/send"));

    let check = |status: u16, body: &Value, want_status: u16, want_code: &str| {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"]["code"], want_code, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 5,
            "{body}"
        );
    };

    // 401: no key, wrong key.
    let r = d.http.post(&send_url).body("1").send().await.unwrap();
    let (s, b) = status_and_json(r).await;
    check(s, &b, 401, "missing_api_key");
    let r = d
        .http
        .post(&send_url)
        .header("x-api-key", "wrong-key-123")
        .body("1")
        .send()
        .await
        .unwrap();
    let (s, b) = status_and_json(r).await;
    check(s, &b, 401, "invalid_api_key");

    // 400: invalid JSON; NDJSON names the bad line.
    let r = d
        .http
        .post(&send_url)
        .header("x-api-key", ALICE)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    let (s, b) = status_and_json(r).await;
    check(s, &b, 400, "invalid_input");
    let (s, b) = d.send_ndjson(ALICE, &id, "1\n2\n{bad\n4\n".into()).await;
    check(s, &b, 400, "invalid_input");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("line 3"),
        "{b}"
    );
    // 400: a bad processor at start, named.
    let r = d
        .http
        .post(d.url("/api/stream/start"))
        .header("x-api-key", ALICE)
        .json(&json!({"processor": "nope"}))
        .send()
        .await
        .unwrap();
    let (s, b) = status_and_json(r).await;
    check(s, &b, 400, "invalid_input");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("`nope`"),
        "{b}"
    );

    // 404: unknown stream, malformed id, unknown route.
    let (s, b) = d
        .send_json(ALICE, "00000000-0000-4000-8000-000000000000", &json!(1))
        .await;
    check(s, &b, 404, "stream_not_found");
    let (s, b) = d.send_json(ALICE, "not-a-uuid", &json!(1)).await;
    check(s, &b, 404, "stream_not_found");
    let r = d.http.get(d.url("/nope")).send().await.unwrap();
    let (s, b) = status_and_json(r).await;
    check(s, &b, 404, "route_not_found");

    // 413: over the body limit, with and without Content-Length.
    let big = format!("\"{}\"", "x".repeat(2000));
    let r = d
        .http
        .post(&send_url)
        .header("x-api-key", ALICE)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let (s, b) = status_and_json(r).await;
    check(s, &b, 413, "payload_too_large");
    let chunks = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let r = d
        .http
        .post(&send_url)
        .header("x-api-key", ALICE)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (s, b) = status_and_json(r).await;
    check(s, &b, 413, "payload_too_large");

    // 415: a media type we do not take.
    let r = d
        .http
        .post(&send_url)
        .header("x-api-key", ALICE)
        .header("content-type", "text/plain")
        .body("1")
        .send()
        .await
        .unwrap();
    let (s, b) = status_and_json(r).await;
    check(s, &b, 415, "unsupported_media_type");

    // 409: sending to an ended stream.
    let r = d
        .http
        .delete(d.url(&format!("/api/stream/{id}")))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap();
    let (s, b) = status_and_json(r).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "ended");
    let (s, b) = d.send_json(ALICE, &id, &json!(1)).await;
    check(s, &b, 409, "stream_ended");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let mut config = test_config();
    config.rate_limits.per_ip = Some(streamgate::config::Rate {
        per_second: 1,
        burst: 2,
    });
    let d = Daemon::start(config).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..4 {
        let r = d
            .http
            .get(d.url("/api/streams"))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    let (_, b) = status_and_json(r).await;
    assert_eq!(b["error"]["code"], "rate_limited");
    // Health checks are not limited.
    assert_eq!(
        d.http.get(d.url("/healthz")).send().await.unwrap().status(),
        200
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_stream_sends_every_result_then_an_end_frame() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    let body: String = (1..=20).map(|i| format!("{i}\n")).collect();
    assert_eq!(d.send_ndjson(ALICE, &id, body).await.0, 202);
    let r = d
        .http
        .delete(d.url(&format!("/api/stream/{id}")))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut data = Vec::new();
    loop {
        let f = next_frame(&mut ws).await;
        if f["type"] == "end" {
            assert!(f["cursor"].is_i64());
            break;
        }
        data.push(f["data"].as_i64().unwrap());
    }
    assert_eq!(data, (1..=20).collect::<Vec<_>>());
    assert_eq!(next_close(&mut ws).await.0, 1000);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_shutdown_closes_websockets_with_1001() {
    let d = Daemon::start(test_config()).await;
    d.wait_until_ready().await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    let stopping = tokio::spawn(d.stop());
    assert_eq!(next_close(&mut ws).await.0, 1001);
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_gets_405_with_the_allowed_ones() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    for (method, path, allow) in [
        ("PUT", "/api/stream/start".to_string(), "POST"),
        ("POST", "/api/streams".to_string(), "GET"),
        ("PUT", format!("/api/stream/{id}"), "GET, DELETE"),
        ("DELETE", format!("/api/stream/{id}/send"), "POST"),
        ("TRACE", "/healthz".to_string(), "GET"),
    ] {
        let resp = d
            .http
            .request(method.parse().unwrap(), d.url(&path))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
    }
    d.stop().await.unwrap();
}
