//! Measures the daemon's memory per idle WebSocket subscriber: opens N streams with one
//! subscriber each against a running daemon, and reads the daemon's resident set size (Linux
//! /proc) before and after. The daemon needs a rate limit that allows N starts (see the docs).
//!
//! cargo run --release -p streamctl --example idle_subscribers -- URL KEY DAEMON_PID N

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon pid");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key, pid, n] = &args[..] else {
        anyhow::bail!("usage: idle_subscribers URL KEY DAEMON_PID N");
    };
    let n: usize = n.parse()?;
    let http = reqwest::Client::new();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let v: serde_json::Value = http
            .post(format!("{url}/api/stream/start"))
            .header("x-api-key", key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ids.push(v["stream_id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);
    let ws_base = url.replacen("http://", "ws://", 1);
    let mut sockets = Vec::with_capacity(n);
    for id in &ids {
        let mut req = format!("{ws_base}/api/stream/{id}/results").into_client_request()?;
        req.headers_mut().insert("x-api-key", key.parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        sockets.push(ws);
    }
    // Idle: let the sessions settle, answer pings in the background.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { while ws.next().await.is_some() {} }))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    println!(
        "{n} idle subscribers: daemon RSS {before} KiB -> {after} KiB: {:.1} KiB per subscriber ({} KiB per 1000)",
        (after.saturating_sub(before)) as f64 / n as f64,
        (after.saturating_sub(before)) * 1000 / n as u64
    );
    drop(readers);
    Ok(())
}
