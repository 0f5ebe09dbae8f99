//! Where `top` gets its data: `GET /api/stats/live`, a WebSocket on which the daemon pushes a
//! snapshot every interval (one request however long top runs, so it never competes with
//! the user's sends for rate-limit tokens), and a WebSocket tail of the stream shown in the
//! detail pane. Both run as tasks that turn what they see into [`Event`]s and reconnect on
//! their own when the daemon goes away. `--once` uses plain `GET /api/stats`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use streamgate::wire::Stats;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::app::Event;
use crate::client::Client;

/// Fetches one snapshot.
pub async fn fetch(client: &Client) -> anyhow::Result<Stats> {
    Ok(client.call(Method::GET, "/api/stats", None).await?)
}

/// Pause before reconnecting.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the daemon's live stats feed, reconnecting after a drop, until `events` is closed.
pub fn watch(client: Client, interval: Duration, events: mpsc::Sender<Event>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let path = format!(
            "/api/stats/live?interval_ms={}",
            interval.as_millis().max(200)
        );
        loop {
            let why = match client.ws_request(&path) {
                Err(e) => format!("{e:#}"),
                Ok(request) => {
                    match tokio_tungstenite::connect_async_with_config(request, None, true).await {
                        Err(e) => format!("cannot connect: {e}"),
                        Ok((mut ws, _)) => loop {
                            match ws.next().await {
                                Some(Ok(Message::Text(text))) => {
                                    match serde_json::from_str::<Stats>(&text) {
                                        Ok(s) => {
                                            let event =
                                                Event::Snapshot(Box::new(s), Instant::now());
                                            if events.send(event).await.is_err() {
                                                return;
                                            }
                                        }
                                        Err(e) => break format!("unreadable snapshot: {e}"),
                                    }
                                }
                                Some(Ok(Message::Close(frame))) => {
                                    break frame.map_or("closed".into(), |f| {
                                        format!("closed: {} {}", u16::from(f.code), f.reason)
                                    })
                                }
                                Some(Ok(_)) => {}
                                Some(Err(e)) => break e.to_string(),
                                None => break "connection closed".into(),
                            }
                        },
                    }
                }
            };
            if events.send(Event::Disconnected(why)).await.is_err() {
                return;
            }
            tokio::time::sleep(RETRY).await;
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
