//! A Server-Sent Events reader for the results endpoint, as `EventSource` reads it.

use futures_util::StreamExt;
use serde_json::Value;

use crate::{Daemon, ALICE, WAIT};

/// One parsed event.
#[derive(Debug, Default)]
pub struct Event {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Reads events from an SSE response.
pub struct Events {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    /// Opens `id`'s results as ALICE, with `query` (`?from=…`) and `Last-Event-ID`.
    pub async fn open(d: &Daemon, id: &str, query: &str, last_event_id: Option<&str>) -> Self {
        let mut req = d
            .http
            .get(d.url(&format!("/api/stream/{id}/results{query}")))
            .header("x-api-key", ALICE);
        if let Some(last) = last_event_id {
            req = req.header("last-event-id", last);
        }
        Self::request(req).await
    }

    /// Sends `req` (any credentials) asking for events; the response must be a stream.
    pub async fn request(req: reqwest::RequestBuilder) -> Self {
        let resp = req
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self {
            body: resp.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event with data (comments and the opening `retry:` are skipped).
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                    }
                }
                if !event.data.is_empty() {
                    return event;
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event within the deadline")
                .expect("the stream goes on")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The data of the next `n` result events, with their ids.
    pub async fn results(&mut self, n: usize) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        while out.len() < n {
            let e = self.next().await;
            if e.event == "result" {
                let frame: Value = serde_json::from_str(&e.data).unwrap();
                let id = e.id.expect("a result has an id");
                assert_eq!(id, frame["cursor"].to_string(), "id is the cursor");
                out.push((id, frame["data"].as_i64().unwrap()));
            }
        }
        out
    }
}
