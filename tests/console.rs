//! The console page in a real browser: headless Chromium driven by selenium
//! (`tests/browser/console.py`) against a daemon on the embedded broker with the default rate
//! limits. The page starts a stream, sends two records and must render their results live;
//! the daemon is then asked what it really holds. The test command installs Chromium,
//! chromedriver and selenium when missing.
//!
//! `STREAMGATE_SCREENSHOT=docs/console.png` also saves the screenshot the README shows.

use serde_json::Value;
use streamgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_page_starts_sends_and_shows_results_live_in_a_browser() {
    let mut config = test_config();
    config.rate_limits = streamgate::config::Config::default().rate_limits;
    let d = Daemon::start(config).await;

    // The page and its assets, locked down by their headers.
    let page = d.http.get(d.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(page.text().await.unwrap().contains("/console.js"));

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.py");
    let mut command = std::process::Command::new("python3");
    command.arg(script).arg(d.url("/")).arg(ALICE);
    if let Some(shot) = std::env::var_os("STREAMGATE_SCREENSHOT") {
        command.arg(shot);
    }
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 runs (the test command installs it with selenium and chromium)");
    assert!(
        out.status.success(),
        "the browser run failed ({}); stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // What the page showed is what the daemon holds (asked within the same rate limit).
    let deadline = std::time::Instant::now() + WAIT;
    let view: Value = loop {
        let resp = d
            .http
            .get(d.url(&format!("/api/stream/{id}")))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        let wait = match resp.headers().get("retry-after") {
            Some(secs) => secs.to_str().unwrap().parse().unwrap(),
            None => {
                let view: Value = resp.json().await.unwrap();
                let counts = (view["records_in"].as_u64(), view["records_out"].as_u64());
                if counts == (Some(3), Some(3)) || std::time::Instant::now() > deadline {
                    break view;
                }
                1
            }
        };
        assert!(
            std::time::Instant::now() < deadline,
            "rate limited until the deadline"
        );
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    };
    assert_eq!(view["processor"]["type"], "uppercase");
    let counts = (view["records_in"].as_u64(), view["records_out"].as_u64());
    assert_eq!(
        counts,
        (Some(3), Some(3)),
        "two sent with the key, one with a token"
    );
    d.stop().await.unwrap();
}

/// The console page follows every stream of its list over one connection: 20 streams, a
/// record sent into each, every row shows its own live, and the page opened one WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_twenty_streams_over_one_connection() {
    let d = Daemon::start(test_config()).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(d.start_stream(ALICE, None).await);
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console_many.py");
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .arg(d.url("/"))
        .arg(ALICE)
        .args(&streams);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 runs (the test command installs it with selenium and chromium)");
    assert!(
        out.status.success(),
        "the browser run failed ({}); stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Each stream had one subscriber: the page's one connection.
    for id in &streams {
        assert_eq!(d.describe(ALICE, id).await["records_out"], 1);
    }
    d.stop().await.unwrap();
}
