//! Reloading a running daemon (what SIGHUP does, through `streamgate::reload::Reloader`):
//! a key removed closes every connection opened with it (4403) and with the tokens it signed
//! (4401) within a second, other keys' connections untouched; new keys and limits apply to
//! the next request; a config that cannot be applied is refused whole, naming why, and the
//! running one stays. An `auth` frame extends a `/api/connect` connection past its first
//! token's expiry.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use streamgate::config::{ApiKey, Config};
use streamgate_testkit::*;

const CAROL: &str = "carol-key-0123456789";

/// A token for `streams` as `key`.
async fn token(d: &Daemon, key: &str, streams: &[&str], ttl_s: u64) -> String {
    let resp = d
        .http
        .post(d.url("/api/tokens"))
        .header("x-api-key", key)
        .json(&json!({"streams": streams, "scope": ["send", "subscribe"], "ttl_s": ttl_s}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(resp).await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// `GET /api/streams` as `key`: the status.
async fn list_status(d: &Daemon, key: &str) -> u16 {
    d.http
        .get(d.url("/api/streams"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_by_a_reload_closes_its_connections_and_its_tokens_within_a_second() {
    let config = test_config();
    let (d, reloader) = Daemon::start_reloadable(config.clone()).await;
    let bobs = d.start_stream(BOB, None).await;
    let alices = d.start_stream(ALICE, None).await;

    // 100 of bob's connections: results sockets, /api/connect sockets and sockets opened with
    // tokens bob signed; and alice's, which must stay.
    let bob_token = token(&d, BOB, &[&bobs], 600).await;
    let mut by_key = Vec::new();
    let mut by_token = Vec::new();
    for i in 0..100 {
        match i % 3 {
            0 => by_key.push(d.subscribe(BOB, &bobs).await),
            1 => {
                let mut ws = d.connect(BOB).await;
                send_frame(&mut ws, &json!({"type": "subscribe", "stream_id": bobs})).await;
                assert_eq!(next_of(&mut ws, "subscribed").await["stream_id"], bobs);
                by_key.push(ws);
            }
            _ => {
                let mut ws = d.connect(&format!("Bearer {bob_token}")).await;
                send_frame(&mut ws, &json!({"type": "subscribe", "stream_id": bobs})).await;
                assert_eq!(next_of(&mut ws, "subscribed").await["stream_id"], bobs);
                by_token.push(ws);
            }
        }
    }
    let mut alice_socket = d.subscribe(ALICE, &alices).await;
    let mut alice_connect = d.connect(ALICE).await;
    send_frame(
        &mut alice_connect,
        &json!({"type": "subscribe", "stream_id": alices}),
    )
    .await;
    next_of(&mut alice_connect, "subscribed").await;

    // Bob's key removed; carol's added.
    let mut without_bob = config.clone();
    without_bob.api_keys.retain(|k| k.name != "bob");
    without_bob
        .api_keys
        .push(ApiKey::new("carol".into(), CAROL.into(), false));
    let asked = Instant::now();
    let changed = reloader.reload(without_bob).await.unwrap();
    assert!(changed.contains("api_keys"), "{changed}");
    for ws in &mut by_key {
        let (code, reason) = next_close(ws).await;
        assert_eq!(
            (code, reason.as_str()),
            (4403, "credential revoked: the API key was removed")
        );
    }
    for ws in &mut by_token {
        let (code, reason) = next_close(ws).await;
        assert_eq!(code, 4401, "{reason}");
    }
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(1), "closed after {took:?}");

    // The next requests see the new keys at once.
    assert_eq!(list_status(&d, BOB).await, 401);
    assert_eq!(list_status(&d, CAROL).await, 200);
    // Alice's connections were untouched: both still deliver.
    assert_eq!(d.send_json(ALICE, &alices, &json!("after")).await.0, 202);
    assert_eq!(next_of(&mut alice_socket, "result").await["data"], "after");
    assert_eq!(next_of(&mut alice_connect, "result").await["data"], "after");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_apply_is_refused_whole_and_the_running_config_stays() {
    let config = test_config();
    let (d, reloader) = Daemon::start_reloadable(config.clone()).await;

    // A restart-only setting beside a reloadable one: neither applies.
    let mut moved = config.clone();
    moved.listen = "127.0.0.1:1".parse().unwrap();
    moved.topics.partitions += 1;
    moved.api_keys.retain(|k| k.name != "bob");
    let err = reloader.reload(moved).await.unwrap_err().to_string();
    assert!(
        err.contains("listen") && err.contains("topics.partitions") && err.contains("restart"),
        "{err}"
    );
    assert_eq!(list_status(&d, BOB).await, 200, "nothing of it was applied");

    // A config that does not validate, and TLS files that do not exist.
    let mut invalid = config.clone();
    invalid.api_keys[0].key = "short".into();
    let err = reloader.reload(invalid).await.unwrap_err().to_string();
    assert!(err.contains("api_keys[0]"), "{err}");
    let mut no_files: Config = config.clone();
    no_files.http.tls = Some(streamgate::config::Tls {
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
        client_ca: None,
    });
    let err = reloader.reload(no_files).await.unwrap_err().to_string();
    assert!(err.contains("http.tls"), "{err}");

    // A limit read per request applies to the next one.
    let mut smaller = config.clone();
    smaller.limits.server.max_body_bytes = 64;
    reloader.reload(smaller).await.unwrap();
    let id = d.start_stream(ALICE, None).await;
    let (status, body) = d
        .send_json(ALICE, &id, &json!({"pad": "x".repeat(100)}))
        .await;
    assert_eq!(status, 413, "{body}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_frame_extends_a_connection_past_its_first_token() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let first = token(&d, ALICE, &[&id], 2).await;
    let mut ws = d.connect(&format!("Bearer {first}")).await;
    send_frame(&mut ws, &json!({"type": "subscribe", "stream_id": id})).await;
    next_of(&mut ws, "subscribed").await;

    // A token of another caller, or a bad one, changes nothing.
    let bobs = d.start_stream(BOB, None).await;
    let bob_token = token(&d, BOB, &[&bobs], 60).await;
    send_frame(&mut ws, &json!({"type": "auth", "token": bob_token})).await;
    assert_eq!(
        next_of(&mut ws, "invalid").await["error"]["code"],
        "forbidden"
    );
    send_frame(&mut ws, &json!({"type": "auth", "token": "not-a-token"})).await;
    assert_eq!(
        next_of(&mut ws, "invalid").await["error"]["code"],
        "invalid_token"
    );

    let second = token(&d, ALICE, &[&id], 60).await;
    send_frame(&mut ws, &json!({"type": "auth", "token": second})).await;
    let ok: Value = next_of(&mut ws, "authenticated").await;
    assert!(ok["expires_at"].as_u64().unwrap() > 0);
    // Past the first token's expiry, the connection still delivers.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(d.send_json(ALICE, &id, &json!("later")).await.0, 202);
    assert_eq!(next_of(&mut ws, "result").await["data"], "later");
    d.stop().await.unwrap();
}
