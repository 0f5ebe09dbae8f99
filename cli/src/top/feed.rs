//! Where `top` gets its data: `GET /api/stats/live`, a WebSocket on which the daemon pushes a
//! snapshot every interval (one request however long top runs, so it never competes with
//! the user's sends for rate-limit tokens), and a WebSocket tail of the stream shown in the
//! detail pane. Both run as tasks that turn what they see into [`Event`]s and reconnect on
//! their own when the daemon goes away. `--once` uses plain `GET /api/stats`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use streamgate::wire::{Frame, Stats};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::app::Event;
use crate::client::Client;

/// Fetches one snapshot.
pub async fn fetch(client: &Client) -> anyhow::Result<Stats> {
    Ok(client.http().call(Method::GET, "/api/stats", None).await?)
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
            let why = match client.http().ws_request(&path).await {
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
            if let Ok(request) = client
                .http()
                .ws_request(&format!("/api/stream/{stream}/results"))
                .await
            {
                if let Ok((mut ws, _)) =
                    tokio_tungstenite::connect_async_with_config(request, None, true).await
                {
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Text(text) = msg {
                            let line = Event::TailLine(stream.clone(), detail_line(&text));
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

/// One result as the detail pane shows it: its cursor, then its data, so the data is what a
/// narrow pane keeps (the whole frame would be cut before it).
pub fn detail_line(text: &str) -> String {
    let cursor = |c: Option<i64>| c.map_or_else(|| "-".to_string(), |c| c.to_string());
    match serde_json::from_str::<Frame>(text) {
        Ok(Frame::Result(o)) => format!(
            "{}  {}",
            cursor(o.cursor),
            o.data.map_or_else(|| "null".into(), |d| d.to_string())
        ),
        Ok(Frame::Error(o)) => format!(
            "{}  error: {}",
            cursor(o.cursor),
            o.error.map_or_else(String::new, |e| e.message)
        ),
        Ok(Frame::End(o)) => format!("{}  (stream ended)", cursor(o.cursor)),
        Ok(Frame::Gap(g)) => format!("{}  ({} results not delivered)", g.from_cursor, g.skipped),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod detail_tests {
    use super::*;

    #[test]
    fn the_detail_pane_shows_cursor_and_data() {
        let frame = r#"{"type":"result","cursor":7,"stream_id":"00000000-0000-0000-0000-000000000001","input_partition":0,"input_offset":3,"received_ms":1,"processed_ms":2,"data":{"t":1}}"#;
        assert_eq!(detail_line(frame), r#"7  {"t":1}"#);
        assert_eq!(detail_line("not json"), "not json");
    }
}
