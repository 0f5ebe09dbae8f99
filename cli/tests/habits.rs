//! streamctl as people use it (kcat, rpk, ripgrep habits): usage errors exit 2 before any
//! request, scripts get ids and JSON, a daemon that is not running is named as such, and a
//! pasted id is quoted back as typed.

use std::process::{Output, Stdio};
use std::time::Duration;

use streamgate_testkit::*;
use tokio::process::Command;

async fn streamctl(url: &str, args: &[&str]) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .args(args)
        .env("STREAMCTL_URL", url)
        .env("STREAMCTL_API_KEY", ALICE)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("streamctl finished")
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_before_any_request() {
    // Nothing listens here: a request would fail differently (exit 1).
    let url = format!("http://127.0.0.1:{}", free_port());
    let bad_json = streamctl(&url, &["start", "--processor", "{\"type\":"]).await;
    assert_eq!(bad_json.status.code(), Some(2), "{}", stderr(&bad_json));
    assert!(
        stderr(&bad_json).contains("not valid JSON"),
        "{}",
        stderr(&bad_json)
    );
    let typo = streamctl(&url, &["tail", "some-id", "--format", "{dta}"]).await;
    assert_eq!(typo.status.code(), Some(2), "{}", stderr(&typo));
    assert!(
        stderr(&typo).contains("unknown placeholder {dta}"),
        "{}",
        stderr(&typo)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_is_not_running_is_named_once() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = streamctl(&url, &["streams"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is `streamctl serve` running"), "{err}");
    assert_eq!(err.matches(&url).count(), 1, "{err}");

    let mut send = Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .args([
            "send",
            "6f1c0000-0000-4000-8000-000000000000",
            "--connect-timeout",
            "1s",
        ])
        .env("STREAMCTL_URL", &url)
        .env("STREAMCTL_API_KEY", ALICE)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = send.stdin.take().unwrap();
        stdin.write_all(b"1\n").await.unwrap();
    }
    let send = tokio::time::timeout(Duration::from_secs(30), send.wait_with_output())
        .await
        .expect("send gave up within its --connect-timeout")
        .unwrap();
    assert_eq!(send.status.code(), Some(1));
    assert!(
        stderr(&send).contains("--connect-timeout"),
        "{}",
        stderr(&send)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_get_ids_json_versions_and_ids_quoted_as_typed() {
    let d = Daemon::start(test_config()).await;
    let url = d.url("");
    let id = d.start_stream(ALICE, None).await;

    let quiet = streamctl(&url, &["streams", "-q"]).await;
    assert_eq!(stdout(&quiet), format!("{id}\n"));

    let top = streamctl(&url, &["top", "--once", "--json"]).await;
    let stats: serde_json::Value = serde_json::from_str(&stdout(&top)).expect("JSON");
    assert!(stats["totals"]["streams"].as_u64() >= Some(1), "{stats}");

    let version = streamctl(&url, &["version"]).await;
    let text = stdout(&version);
    let v = env!("CARGO_PKG_VERSION");
    assert!(text.contains(&format!("streamctl {v}")), "{text}");
    assert!(text.contains(&format!("daemon    {v}")), "{text}");

    // A README placeholder pasted as is (`…` is percent-encoded on the wire).
    let pasted = streamctl(&url, &["streams", "info", "6f1c…"]).await;
    assert_eq!(pasted.status.code(), Some(1));
    assert!(
        stderr(&pasted).contains("stream 6f1c… not found"),
        "{}",
        stderr(&pasted)
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_check_validates_the_config_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "listen: 127.0.0.1:0\napi_keys:\n  - name: a\n    key: a-long-enough-key-1234\n",
    )
    .unwrap();
    let out = streamctl(
        "http://127.0.0.1:1",
        &["serve", "--check", "--config", good.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("config OK"), "{}", stdout(&out));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "limits:\n  max_body_bytez: 1\n").unwrap();
    let out = streamctl(
        "http://127.0.0.1:1",
        &["serve", "--check", "--config", bad.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("max_body_bytez"), "{}", stderr(&out));
}
