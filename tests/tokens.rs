//! Scoped stream tokens through real sockets on the embedded broker: each place a token may
//! be presented, each scope refused where it does not reach (403), another stream answered
//! as unknown (404), expiry refused (401) and enforced on open SSE and WebSocket
//! connections (4401), and what only the key may do.

use serde_json::{json, Value};
use streamgate_testkit::*;

/// Asks for a token on `id` as `key`: the status and body.
async fn issue(d: &Daemon, key: &str, id: &str, body: Value) -> (u16, Value) {
    let resp = d
        .http
        .post(d.url(&format!("/api/stream/{id}/tokens")))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    status_and_json(resp).await
}

async fn token(d: &Daemon, id: &str, scope: &[&str], ttl_s: u64) -> String {
    let (status, body) = issue(d, ALICE, id, json!({"scope": scope, "ttl_s": ttl_s})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stream_id"], id);
    body["token"].as_str().unwrap().to_string()
}

/// A send with the token as a bearer: status and body.
async fn send_with(d: &Daemon, id: &str, token: &str, value: Value) -> (u16, Value) {
    let resp = d
        .http
        .post(d.url(&format!("/api/stream/{id}/send")))
        .bearer_auth(token)
        .json(&value)
        .send()
        .await
        .unwrap();
    status_and_json(resp).await
}

/// A request with no credentials but `?access_token=`.
async fn get_with_query_token(d: &Daemon, path: &str, token: &str) -> (u16, Value) {
    let resp = d
        .http
        .get(d.url(&format!("{path}?access_token={token}")))
        .send()
        .await
        .unwrap();
    status_and_json(resp).await
}

/// Opens the results WebSocket offering the token as a subprotocol, as a browser does.
async fn ws_with_token(d: &Daemon, id: &str, token: &str) -> Ws {
    let offered = format!("streamgate.v1, token.{token}");
    let (ws, answered) = d
        .subscribe_offering(id, "?from=earliest", &offered)
        .await
        .unwrap();
    assert_eq!(
        answered.as_deref(),
        Some("streamgate.v1"),
        "the token is never echoed"
    );
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_does_what_its_scope_says_on_its_stream_and_nothing_else() {
    let d = Daemon::start(test_config()).await;
    let id = d
        .start_stream(ALICE, Some(json!({"processor": "uppercase"})))
        .await;
    let other = d.start_stream(ALICE, None).await;
    let reader = token(&d, &id, &["subscribe"], 600).await;
    let writer = token(&d, &id, &["send"], 600).await;

    // Sending: the send token may (bearer), the subscribe token may not.
    assert_eq!(send_with(&d, &id, &writer, json!("hello")).await.0, 202);
    let (status, body) = send_with(&d, &id, &reader, json!("nope")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`send`"));

    // Subscribing with `?access_token=` (EventSource): the result of what the writer sent.
    let req = d.http.get(d.url(&format!(
        "/api/stream/{id}/results?from=earliest&access_token={reader}"
    )));
    let mut events = Events::request(req).await;
    let first = events.next().await;
    assert_eq!(first.event, "result");
    assert_eq!(
        serde_json::from_str::<Value>(&first.data).unwrap()["data"],
        "HELLO"
    );
    // ... and a send token cannot subscribe.
    let resp = d
        .http
        .get(d.url(&format!("/api/stream/{id}/results?access_token={writer}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Another stream of the same owner is unknown to the token, whatever the route.
    assert_eq!(send_with(&d, &other, &writer, json!(1)).await.0, 404);
    let (status, _) = get_with_query_token(&d, &format!("/api/stream/{other}"), &reader).await;
    assert_eq!(status, 404);
    // Its own stream's description is readable.
    let (status, view) = get_with_query_token(&d, &format!("/api/stream/{id}"), &reader).await;
    assert_eq!(
        (status, view["stream_id"].as_str()),
        (200, Some(id.as_str()))
    );

    // What only the key may do.
    let both = token(&d, &id, &["send", "subscribe"], 600).await;
    for (method, path) in [
        ("POST", "/api/stream/start".to_string()),
        ("GET", "/api/streams".to_string()),
        ("GET", "/api/stats".to_string()),
        ("DELETE", format!("/api/stream/{id}")),
        ("POST", format!("/api/stream/{id}/tokens")),
    ] {
        let resp = d
            .http
            .request(method.parse().unwrap(), d.url(&path))
            .bearer_auth(&both)
            .json(&json!({"scope": ["send"]}))
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_json(resp).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }

    // On the WebSocket: a subscribe-only token reads, and each record it sends gets a nack.
    let mut ws = ws_with_token(&d, &id, &reader).await;
    assert_eq!(next_frame(&mut ws).await["data"], "HELLO");
    send_text(&mut ws, "\"sneaky\"").await;
    let nack = next_frame(&mut ws).await;
    assert_eq!(
        (nack["type"].as_str(), nack["error"]["code"].as_str()),
        (Some("nack"), Some("forbidden"))
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_when_forged_malformed_or_asked_for_wrongly() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;

    // Asking: bob does not own the stream; the scope and ttl are checked.
    assert_eq!(issue(&d, BOB, &id, json!({"scope": ["send"]})).await.0, 404);
    for bad in [
        json!({"scope": []}),
        json!({"scope": ["admin"]}),
        json!({"scope": ["send"], "ttl_s": 0}),
        json!({"scope": ["send"], "ttl_s": 86_401}),
        json!({"scope": ["send"], "tll_s": 60}),
        json!({"scope": ["send"], "ttl_s": 60.5}),
    ] {
        let (status, body) = issue(&d, ALICE, &id, bad.clone()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_input")),
            "{bad}"
        );
    }
    // A whole number written as JavaScript may write it (schemathesis found this one).
    let (status, _) = issue(&d, ALICE, &id, json!({"scope": ["send"], "ttl_s": 60.0})).await;
    assert_eq!(status, 201);
    let (status, body) = issue(&d, ALICE, &id, json!({"scope": ["send"]})).await;
    assert_eq!(status, 201);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires_at = body["expires_at"].as_u64().unwrap();
    assert!(
        (now + 3590..=now + 3610).contains(&expires_at),
        "one hour by default"
    );

    // Presenting: garbage, a bad scheme, and a token signed by another daemon's alice.
    let elsewhere = {
        let mut c = test_config();
        c.api_keys[0].key = "a-different-alice-key".into();
        Daemon::start(c).await
    };
    let foreign_id = elsewhere.start_stream("a-different-alice-key", None).await;
    let (_, foreign) = {
        let resp = elsewhere
            .http
            .post(elsewhere.url(&format!("/api/stream/{foreign_id}/tokens")))
            .header("x-api-key", "a-different-alice-key")
            .json(&json!({"scope": ["send"]}))
            .send()
            .await
            .unwrap();
        status_and_json(resp).await
    };
    let forged = foreign["token"].as_str().unwrap();
    for token in ["garbage", "a.b.c", forged] {
        let (status, body) = send_with(&d, &id, token, json!(1)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("invalid_token"))
        );
    }
    let resp = d
        .http
        .post(d.url(&format!("/api/stream/{id}/send")))
        .header("authorization", "Basic YWxpY2U6eA==")
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    elsewhere.stop().await.unwrap();
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_and_closes_open_connections() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    assert_eq!(d.send_json(ALICE, &id, &json!(1)).await.0, 202);
    // Processed before the short token is issued, so its life is not spent waiting.
    let mut owner = d.subscribe_from(ALICE, &id, "earliest").await;
    assert_eq!(next_frame(&mut owner).await["data"], 1);
    let short = token(&d, &id, &["send", "subscribe"], 2).await;

    // Open both transports while the token is good; both get the result, then close.
    let req = d.http.get(d.url(&format!(
        "/api/stream/{id}/results?from=earliest&access_token={short}"
    )));
    let mut events = Events::request(req).await;
    let first = events.next().await;
    assert_eq!(first.event, "result", "{first:?}");
    let mut ws = ws_with_token(&d, &id, &short).await;
    assert_eq!(next_frame(&mut ws).await["data"], 1);

    let closing = events.next().await;
    assert_eq!(closing.event, "close");
    let close: Value = serde_json::from_str(&closing.data).unwrap();
    assert_eq!(
        (close["code"].as_u64(), close["reason"].as_str()),
        (Some(4401), Some("token expired"))
    );
    assert_eq!(
        next_close(&mut ws).await,
        (4401, "token expired".to_string())
    );

    // Once expired, every use is 401 `token_expired`.
    let (status, body) = send_with(&d, &id, &short, json!(2)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
    let offered = format!("streamgate.v1, token.{short}");
    let refused = d.subscribe_offering(&id, "", &offered).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    d.stop().await.unwrap();
}
