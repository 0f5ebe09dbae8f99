//! `streamctl serve`'s log, redirected as an operator would: no colour codes in a file, a
//! request line without an empty stream id and with latency to 3 decimals, one line when
//! a WebSocket closes, with its code and frame counts, and never a key or a token.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use streamgate_testkit::*;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// `streamctl serve` on `port` with `args` and `home` as HOME, its log (stderr) read by line.
fn serve(
    port: u16,
    args: &[&str],
    home: &std::path::Path,
) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = BufReader::new(serve.stderr.take().unwrap()).lines();
    (serve, log)
}

/// Reads log lines into `lines` until one matches `wanted`, failing the test at `deadline`.
async fn read_until(
    log: &mut Lines<BufReader<ChildStderr>>,
    lines: &mut Vec<String>,
    deadline: Instant,
    wanted: impl Fn(&str) -> bool,
) {
    while !lines.iter().any(|l| wanted(l)) {
        let line = tokio::time::timeout(deadline - Instant::now(), log.next_line())
            .await
            .unwrap_or_else(|_| panic!("the line looked for, within the deadline; got {lines:#?}"))
            .unwrap()
            .expect("log open");
        lines.push(line);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_has_no_colour_in_a_pipe_and_a_line_per_websocket_close() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let home = tempfile::tempdir().unwrap();
    let args = ["--api-key", ALICE, "--log-format", "pretty"];
    let (mut serve, mut log) = serve(port, &args, home.path());
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = http.get(format!("{url}/readyz")).send().await;
        if ok.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not get ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start: serde_json::Value = http
        .post(format!("{url}/api/stream/start"))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = start["stream_id"].as_str().unwrap().to_string();
    let mut req = format!("ws://127.0.0.1:{port}/api/stream/{id}/results")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-api-key", ALICE.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text("1")).await.unwrap();
    ws.close(None).await.unwrap();

    let mut lines = Vec::new();
    let deadline = Instant::now() + WAIT;
    read_until(&mut log, &mut lines, deadline, |l| {
        l.contains("websocket closed")
    })
    .await;
    // A stream token, used where it may appear: a bearer header and an EventSource query.
    let token: serde_json::Value = http
        .post(format!("{url}/api/stream/{id}/tokens"))
        .header("x-api-key", ALICE)
        .json(&serde_json::json!({"scope": ["send", "subscribe"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let sent = http
        .post(format!("{url}/api/stream/{id}/send"))
        .bearer_auth(&token)
        .json(&2)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let events = http
        .get(format!(
            "{url}/api/stream/{id}/results?access_token={token}"
        ))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    drop(events);
    let results_path = format!("path=\"/api/stream/{id}/results\"");
    read_until(&mut log, &mut lines, deadline, |l| {
        l.contains(&results_path) && l.contains("status=200")
    })
    .await;
    let all = lines.join("\n");
    assert!(!all.contains(&token), "never a token:\n{all}");
    assert!(!all.contains('\u{1b}'), "no ANSI codes in a pipe:\n{all}");
    let closed = lines
        .iter()
        .find(|l| l.contains("websocket closed"))
        .unwrap();
    for field in [
        "code=1000",
        "frames_in=1",
        "frames_out=1",
        "duration_ms=",
        &id,
    ] {
        assert!(closed.contains(field), "{field} in {closed}");
    }
    let start = lines
        .iter()
        .find(|l| l.contains("path=\"/api/stream/start\""))
        .expect("the start request's line");
    assert!(start.contains("client=127.0.0.1:"), "{start}");
    assert!(start.contains("key=\"cli-1\""), "the key's name: {start}");
    assert!(!all.contains(ALICE), "never the key itself");
    let readyz = lines
        .iter()
        .find(|l| l.contains("path=\"/readyz\""))
        .expect("a request line");
    assert!(!readyz.contains("stream_id"), "{readyz}");
    let latency = readyz.split("latency_ms=").nth(1).unwrap();
    let decimals = latency.split_whitespace().next().unwrap().split('.').nth(1);
    assert!(decimals.is_none_or(|d| d.len() <= 3), "{readyz}");
    let _ = serve.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_is_json_from_the_first_line() {
    let port = free_port();
    let home = tempfile::tempdir().unwrap();
    // Zero config: the local key notice is the first thing said.
    let (mut serve, mut log) = serve(port, &["--log-format", "json"], home.path());
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(deadline - Instant::now(), log.next_line())
            .await
            .expect("serve logs until ready")
            .unwrap()
            .expect("log open");
        let parsed: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nafter {seen:?}"));
        seen.push(line);
        if parsed["message"] == "streamgate ready" {
            break;
        }
    }
    assert!(seen[0].contains("API key file"), "{}", seen[0]);
    let _ = serve.kill().await;
}

/// SIGHUP reads the config file again: a key removed is refused and a key added accepted at
/// once, the log says what changed; a file that cannot apply (a restart-only setting) is
/// refused whole, in the log, naming it, and the running config stays. `serve --check` names
/// a certificate file that cannot be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file_and_a_bad_one_is_refused_in_the_log() {
    const CAROL: &str = "carol-key-0123456789";
    let port = free_port();
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("config.yaml");
    let keys = |names: &[(&str, &str)]| {
        let entries: Vec<String> = names
            .iter()
            .map(|(n, k)| format!("  - {{name: {n}, key: {k}}}\n"))
            .collect();
        format!("brokers: embedded\napi_keys:\n{}", entries.concat())
    };
    std::fs::write(&file, keys(&[("alice", ALICE), ("bob", BOB)])).unwrap();
    let (mut serve, mut log) = serve(port, &["--config", file.to_str().unwrap()], home.path());
    let mut lines = Vec::new();
    let deadline = Instant::now() + WAIT;
    read_until(&mut log, &mut lines, deadline, |l| {
        l.contains("streamgate ready")
    })
    .await;
    let http = reqwest::Client::new();
    let status = |key: &'static str| {
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{port}/api/streams"))
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(BOB).await, 200);
    let hangup = || {
        let pid = serve.id().unwrap().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };

    std::fs::write(&file, keys(&[("alice", ALICE), ("carol", CAROL)])).unwrap();
    hangup();
    read_until(&mut log, &mut lines, deadline, |l| {
        l.contains("config reloaded")
    })
    .await;
    assert!(lines
        .iter()
        .any(|l| l.contains("config reloaded") && l.contains("api_keys")));
    assert_eq!(status(BOB).await, 401);
    assert_eq!(status(CAROL).await, 200);

    // (`--listen` on the command line wins over the file, as at start: the topics, then.)
    let moved = format!("topics: {{partitions: 3}}\n{}", keys(&[("alice", ALICE)]));
    std::fs::write(&file, moved).unwrap();
    hangup();
    read_until(&mut log, &mut lines, deadline, |l| {
        l.contains("reload refused")
    })
    .await;
    let refused = lines.iter().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        refused.contains("topics.partitions") && refused.contains("restart"),
        "{refused}"
    );
    assert_eq!(status(CAROL).await, 200, "the running config stays");
    assert!(
        !lines.iter().any(|l| l.contains(CAROL) || l.contains(ALICE)),
        "never a key in the log"
    );
    let _ = serve.kill().await;

    let bad = home.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!(
            "{}http:\n  tls: {{cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}}\n",
            keys(&[("alice", ALICE)])
        ),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .args(["serve", "--check", "--config", bad.to_str().unwrap()])
        .env("HOME", home.path())
        .output()
        .await
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("http.tls.cert") && said.contains("/nonexistent/cert.pem"),
        "{said}"
    );
}
