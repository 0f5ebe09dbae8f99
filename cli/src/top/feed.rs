//! Where `top` gets its data: `GET /api/stats` polled once per interval (one request per
//! second stays far inside the default rate limits), and a WebSocket tail of the stream shown
//! in the detail pane. Both run as tasks that turn what they see into [`Event`]s and retry on
//! their own when the daemon goes away.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::app::Event;
use crate::client::Client;

/// One answer of `GET /api/stats`.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    pub now_ms: i64,
    pub version: String,
    pub uptime_s: u64,
    pub broker: Broker,
    pub totals: Totals,
    pub streams: Vec<StreamRow>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Broker {
    pub bootstrap: String,
    pub reachable: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Totals {
    pub streams: u64,
    pub subscribers: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub latency_ms: Latency,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRow {
    pub stream_id: String,
    pub owner: String,
    pub processor: Value,
    pub records_in: u64,
    pub records_out: u64,
    pub subscribers: u64,
    pub last_activity_ms: i64,
    pub backlog: u64,
}

/// Fetches one snapshot.
pub async fn fetch(client: &Client) -> anyhow::Result<Snapshot> {
    let body = client.call(Method::GET, "/api/stats", None).await?;
    Ok(serde_json::from_value(body)?)
}

/// Polls the daemon every `interval` until `events` is closed.
pub fn poll(client: Client, interval: Duration, events: mpsc::Sender<Event>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let event = match fetch(&client).await {
                Ok(s) => Event::Snapshot(Box::new(s), Instant::now()),
                Err(e) => Event::Disconnected(format!("{e:#}")),
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    })
}

/// Follows one stream's results (from now on) for the detail pane, reconnecting after a
/// drop; abort the task to stop.
pub fn tail(client: Client, stream: String, events: mpsc::Sender<Event>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(request) = client.ws_request(&format!("/api/stream/{stream}/results")) {
                if let Ok((mut ws, _)) =
                    tokio_tungstenite::connect_async_with_config(request, None, true).await
                {
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Text(text) = msg {
                            let line = Event::TailLine(stream.clone(), text.to_string());
                            if events.send(line).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}
