//! Against a daemon without `/api/connect` (its handshake answers 404): one WebSocket per
//! stream on `/api/stream/{id}/results`, and sends over HTTP, with the same guarantees.
//!
//! Each subscription is a task that follows its stream's socket and opens it again from the
//! last delivered cursor + 1 whenever it drops (after a back-off; at once for `4008`, from the
//! cursor its reason names; with a new token for `4401`), dropping frames already delivered
//! and handing `gap` frames on. A subscriber that does not read holds its task's next
//! delivery, so the daemon detaches that socket (`4008`) and it resumes from its cursor, the
//! others untouched. Records go one at a time per stream, in order, each a `POST` with its
//! own idempotency key, sent again with it after any failure that may pass (no answer, a
//! 429, a 503), as `Retry-After` says: stored and processed once.

use std::collections::HashMap;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::value::RawValue;
use streamgate_wire::{Accepted, Ack, Close, ErrorCode, Frame, LagPolicy, StartFrom};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::connection::{Command, Delivered, Subscribe};
use crate::error::Error;
use crate::http::Http;
use crate::retry::Backoff;

/// A subscription handed over from the connection, where it was.
pub(crate) struct Handover {
    pub id: u64,
    pub stream: Uuid,
    pub options: Subscribe,
    pub last: Option<i64>,
    pub frames: mpsc::Sender<Delivered>,
}

/// A record handed over, not answered yet.
pub(crate) struct Record {
    pub stream: Uuid,
    pub data: Box<RawValue>,
    pub key: String,
    pub reply: oneshot::Sender<Result<Ack, Error>>,
}

/// Serves every command from now on without `/api/connect`, until every handle is gone.
pub(crate) async fn run(
    http: Http,
    subs: Vec<Handover>,
    records: Vec<Record>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    tracing::info!("streamgate: the daemon has no /api/connect; one socket per stream");
    let mut following: HashMap<Uuid, (u64, JoinHandle<()>)> = HashMap::new();
    let mut senders: HashMap<Uuid, mpsc::UnboundedSender<Record>> = HashMap::new();
    for sub in subs {
        let id = sub.id;
        following.insert(sub.stream, (id, tokio::spawn(follow(http.clone(), sub))));
    }
    for record in records {
        enqueue(&http, &mut senders, record);
    }
    while let Some(command) = commands.recv().await {
        match command {
            Command::Subscribe {
                id,
                stream,
                options,
                frames,
                ..
            } => {
                let sub = Handover {
                    id,
                    stream,
                    options,
                    last: None,
                    frames,
                };
                if let Some((_, old)) =
                    following.insert(stream, (id, tokio::spawn(follow(http.clone(), sub))))
                {
                    old.abort();
                }
            }
            // A task's subscriber is never paused here: its reads pace the socket.
            Command::Resume { .. } => {}
            Command::Unsubscribe { id, stream } => {
                if following.get(&stream).is_some_and(|(i, _)| *i == id) {
                    if let Some((_, task)) = following.remove(&stream) {
                        task.abort();
                    }
                }
            }
            Command::Send {
                stream,
                data,
                key,
                reply,
            } => enqueue(
                &http,
                &mut senders,
                Record {
                    stream,
                    data,
                    key,
                    reply,
                },
            ),
        }
    }
    for (_, (_, task)) in following {
        task.abort();
    }
}

/// Hands a record to its stream's sender task (one per stream: records go in order).
fn enqueue(
    http: &Http,
    senders: &mut HashMap<Uuid, mpsc::UnboundedSender<Record>>,
    record: Record,
) {
    let stream = record.stream;
    let sender = senders.entry(stream).or_insert_with(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_in_order(http.clone(), stream, rx));
        tx
    });
    if let Err(mpsc::error::SendError(record)) = sender.send(record) {
        let _ = record.reply.send(Err(Error::Closed));
    }
}

async fn send_in_order(http: Http, stream: Uuid, mut records: mpsc::UnboundedReceiver<Record>) {
    let path = format!("/api/stream/{stream}/send");
    let mut seq = 0;
    while let Some(record) = records.recv().await {
        if record.reply.is_closed() {
            continue; // its caller gave up
        }
        seq += 1;
        let answer = send_until_answered(&http, &path, &record).await;
        let _ = record.reply.send(answer.map(|accepted| Ack {
            stream_id: Some(stream),
            seq,
            offset: accepted.offsets.first().copied().unwrap_or(-1),
            replayed: accepted.replayed,
        }));
    }
}

/// One record, sent with its key until the daemon answers for good.
async fn send_until_answered(http: &Http, path: &str, record: &Record) -> Result<Accepted, Error> {
    let body = record.data.get().as_bytes().to_vec();
    let mut backoff = Backoff::default();
    loop {
        let answer = http
            .call_with(
                Method::POST,
                path,
                Some(("application/json", body.clone())),
                &[("idempotency-key", record.key.as_str())],
            )
            .await;
        match answer {
            Err(e) if e.is_transient() && !record.reply.is_closed() => {
                let retry_after = match &e {
                    Error::Server { retry_after, .. } => *retry_after,
                    _ => None,
                };
                tracing::debug!(error = %e, "streamgate: sending the record again");
                backoff.wait(retry_after).await;
            }
            other => return other,
        }
    }
}

/// Follows one stream on its own socket until it ends, its subscriber goes, or the daemon
/// refuses it for good.
async fn follow(http: Http, mut sub: Handover) {
    let mut backoff = Backoff::default();
    let mut fresh = false;
    loop {
        let from = match sub.last {
            Some(last) => Some(StartFrom::Cursor(last + 1)),
            None => sub.options.from.clone(),
        };
        let path = results_path(sub.stream, from.as_ref(), &sub.options);
        let opened = match http.ws_request_with(&path, fresh).await {
            Ok(request) => http.ws_connect(request, None).await.map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(resp) => crate::error::server_error(
                    resp.status(),
                    resp.body().as_deref().unwrap_or_default(),
                    crate::error::retry_after(resp.headers()),
                ),
                other => Error::Connect {
                    url: path.clone(),
                    cause: other.to_string(),
                },
            }),
            Err(e) => Err(e),
        };
        fresh = false;
        let mut socket = match opened {
            Ok((socket, _)) => socket,
            Err(e) => {
                let expired = matches!(
                    e.code(),
                    Some(ErrorCode::TokenExpired | ErrorCode::InvalidToken)
                );
                if expired && http.renewable() {
                    fresh = true;
                } else if !e.is_transient() {
                    let _ = sub.frames.send(Err(e)).await;
                    return;
                }
                let retry_after = match &e {
                    Error::Server { retry_after, .. } => *retry_after,
                    _ => None,
                };
                backoff.wait(retry_after).await;
                continue;
            }
        };
        let close = loop {
            let Some(msg) = socket.next().await else {
                break None;
            };
            let text = match msg {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(close)) => {
                    break close.map(|c| Close::parse(u16::from(c.code), &c.reason));
                }
                Ok(_) => continue,
                Err(_) => break None,
            };
            let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
                continue;
            };
            let cursor = match &frame {
                Frame::Result(o) | Frame::Error(o) | Frame::End(o) => o.cursor,
                Frame::Gap(g) => Some(g.from_cursor + g.skipped as i64 - 1),
                _ => continue, // acks of a socket this client never sends on
            };
            if let (Some(c), Some(last)) = (cursor, sub.last) {
                if c <= last {
                    continue; // delivered before
                }
            }
            backoff.reset();
            let end = matches!(frame, Frame::End(_));
            if sub.frames.send(Ok(frame)).await.is_err() {
                return; // the subscriber is gone
            }
            if cursor.is_some() {
                sub.last = cursor;
            }
            if end {
                return;
            }
        };
        match close {
            // The stream ended (after its `end`), or `until_now` caught up.
            Some(Close::Ended | Close::CaughtUp) => return,
            Some(Close::Lagged { resume }) => {
                sub.last = Some(resume - 1);
                continue; // at once, from where it lagged
            }
            Some(Close::TokenExpired | Close::TokenRevoked) => fresh = true,
            _ => {
                backoff.wait(None).await;
            }
        }
    }
}

/// The results socket's path for a subscription starting at `from`.
fn results_path(stream: Uuid, from: Option<&StartFrom>, options: &Subscribe) -> String {
    let mut query = Vec::new();
    if let Some(from) = from {
        query.push(format!("from={}", from.as_param()));
    }
    if options.on_lag == LagPolicy::Skip {
        query.push("on_lag=skip".into());
    }
    if options.until_now {
        query.push("until=now".into());
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    format!("/api/stream/{stream}/results{query}")
}
