//! Where `top` gets its data: `GET /api/stats/live`, a WebSocket on which the daemon pushes a
//! snapshot every interval (one request however long top runs, so it never competes with
//! the user's sends for rate-limit tokens), and a subscription to the stream shown in the
//! detail pane on the client library's connection. Both run as tasks that turn what they see
//! into [`Event`]s and reconnect on their own, with the library's back-off, when the daemon
//! goes away. `--once` uses plain `GET /api/stats`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use streamgate::wire::{Frame, Stats};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::app::Event;
use crate::client::Client;
use streamgate_client::retry::Backoff;
use streamgate_client::Subscribe;
use uuid::Uuid;

/// Fetches one snapshot.
pub async fn fetch(client: &Client) -> anyhow::Result<Stats> {
    Ok(client.http().call(Method::GET, "/api/stats", None).await?)
}

/// Follows the daemon's live stats feed, reconnecting after a drop, until `events` is closed.
pub fn watch(client: Client, interval: Duration, events: mpsc::Sender<Event>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let path = format!(
            "/api/stats/live?interval_ms={}",
            interval.as_millis().max(200)
        );
        let mut backoff = Backoff::default();
        loop {
            let why = match client.http().ws_request(&path).await {
                Err(e) => format!("{e:#}"),
                Ok(request) => match client.http().ws_connect(request, None).await {
                    Err(e) => format!("cannot connect: {e}"),
                    Ok((mut ws, _)) => loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(text))) => {
                                match serde_json::from_str::<Stats>(&text) {
                                    Ok(s) => {
                                        backoff.reset();
                                        let event = Event::Snapshot(Box::new(s), Instant::now());
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
                },
            };
            if events.send(Event::Disconnected(why)).await.is_err() {
                return;
            }
            backoff.wait(None).await;
        }
    })
}

/// Follows one stream's results (from now on) for the detail pane, on the client's one
/// connection (which reconnects and resumes by itself); abort the task to stop.
pub fn tail(client: Client, stream: Uuid, events: mpsc::Sender<Event>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut frames = client.subscribe(stream, Subscribe::default());
        while let Some(frame) = frames.next().await {
            let line = match frame {
                Ok(frame) => detail_line(&frame),
                Err(e) => format!("({e})"),
            };
            if events
                .send(Event::TailLine(stream.to_string(), line))
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

/// One result as the detail pane shows it: its cursor, then its data, so the data is what a
/// narrow pane keeps (the whole frame would be cut before it).
pub fn detail_line(frame: &Frame) -> String {
    let cursor = |c: Option<i64>| c.map_or_else(|| "-".to_string(), |c| c.to_string());
    match frame {
        Frame::Result(o) => format!(
            "{}  {}",
            cursor(o.cursor),
            o.data
                .as_ref()
                .map_or_else(|| "null".into(), |d| d.to_string())
        ),
        Frame::Error(o) => format!(
            "{}  error: {}",
            cursor(o.cursor),
            o.error.as_ref().map_or("", |e| e.message.as_str())
        ),
        Frame::End(o) => format!("{}  (stream ended)", cursor(o.cursor)),
        Frame::Gap(g) => format!("{}  ({} results not delivered)", g.from_cursor, g.skipped),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod detail_tests {
    use super::*;

    #[test]
    fn the_detail_pane_shows_cursor_and_data() {
        let frame = r#"{"type":"result","cursor":7,"stream_id":"00000000-0000-0000-0000-000000000001","input_partition":0,"input_offset":3,"received_ms":1,"processed_ms":2,"data":{"t":1}}"#;
        let frame: Frame = serde_json::from_str(frame).unwrap();
        assert_eq!(detail_line(&frame), r#"7  {"t":1}"#);
    }
}
