//! One results WebSocket: writes the stream's delivery feed to the client and takes records
//! the client sends on the same socket, answering each (in order) with an `ack` once the
//! broker stored it, or a `nack`. Pings keep idle connections honest. Once the daemon is
//! draining, records sent on the socket get a `nack` `shutting_down`; the feed itself says
//! when to close (see `lifecycle`).
//!
//! Close codes and reasons are `wire::Close`: 1000 the stream ended (after its `end` frame)
//! or the client said goodbye; 1001 the daemon is shutting down; 4008 the client read too
//! slowly and was detached (the reason names the cursor to resume from); 4401 the stream
//! token it was opened with expired; 1011 an internal error. A token without `send` gets a
//! `nack` `forbidden` for each record sent on the socket.
//!
//! Each message the client sends is one record; opened with `send=frames`, each is a
//! `wire::RecordFrame` instead, `{"data": RECORD, "idempotency_key": KEY}`, so a record
//! sent again with its key is stored and processed once (the `ack` says `replayed`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use super::error::ApiError;
use super::subscriber::Subscriber;
use super::upgrade::{self, Socket};
use super::AppState;
use crate::auth::Denied;
use crate::delivery::Item;
use crate::ingest::Acked;
use crate::lifecycle::Phase;
use crate::telemetry::TraceContext;
use crate::wire::{Ack, Close, Frame, Nack, RecordFrame};

/// A message of the client as a record, its idempotency key and trace context: the message
/// itself, or with `send=frames` a [`RecordFrame`] around it.
fn record(
    message: Bytes,
    framed: bool,
) -> Result<(Bytes, Option<String>, Option<TraceContext>), ApiError> {
    if !framed {
        return Ok((message, None, None));
    }
    let frame: RecordFrame = serde_json::from_slice(&message).map_err(|e| {
        ApiError::InvalidInput(format!(
            "with send=frames, each message is {{\"data\": RECORD, \"idempotency_key\": KEY}} \
             (the key optional): {e}"
        ))
    })?;
    Ok((
        Bytes::copy_from_slice(frame.data.get().as_bytes()),
        frame.idempotency_key,
        TraceContext::from_headers(frame.traceparent.as_deref(), None),
    ))
}

/// Frames written at once before the socket is flushed: one write for a burst, and a bound
/// on how long one connection's burst keeps the writer.
pub(super) const WRITE_BATCH: usize = 64;

/// A record sent on the socket, answered in order: its sequence number and the outcome.
type Answer = BoxFuture<'static, (u64, Result<Acked, ApiError>)>;

/// Runs one session: the replay (if any) is opened now, after the live subscription. The
/// subscriber's seat is held until the session ends.
pub async fn session(socket: Socket, state: Arc<AppState>, sub: Subscriber, framed: bool) {
    let Subscriber {
        entry,
        seat: _seat,
        may_send,
        feed,
        ends,
    } = sub;
    let (sink, mut source) = socket.split();
    let limits = state.config().limits.websocket.clone();
    let idle_timeout = limits.idle_timeout();
    let mut peer = Peer { sink, idle_timeout };
    let mut feed = match feed.open(&state, entry.id).await {
        Ok(feed) => feed.ending_with(ends),
        Err(e) => {
            peer.close(&Close::Internal(e.to_string())).await;
            return;
        }
    };
    let every = Duration::from_millis(limits.ws_ping_interval_ms);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut answers: FuturesOrdered<Answer> = FuturesOrdered::new();
    let max_in_flight = limits.ws_max_in_flight;
    let max_message = limits.ws_max_message_bytes;
    let opened = Instant::now();
    let mut frames_out: u64 = 0;
    let mut seq: u64 = 0;
    let mut client_closed = false;

    let close = loop {
        tokio::select! {
            _ = ping.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    tracing::debug!(stream_id = %entry.id, "dropping a silent WebSocket client");
                    break None;
                }
                if peer.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            item = feed.next() => {
                // This frame, then whatever else is queued already, up to a batch, with one
                // write: under load, a socket's frames queue up and cost one syscall together.
                let mut out = Vec::new();
                let mut next = Some(item);
                let mut ended = None;
                while let Some(item) = next.take() {
                    match item {
                        Some(Item::Frame(d)) => out.push(Message::Text(d.frame)),
                        Some(Item::Closed(close)) => ended = Some(Some(close)),
                        None => ended = Some(None),
                    }
                    if ended.is_none() && out.len() < WRITE_BATCH {
                        next = feed.next().now_or_never();
                    }
                }
                frames_out += out.len() as u64;
                if peer.write_all(out).await.is_err() {
                    break None;
                }
                if let Some(close) = ended {
                    break close;
                }
            }
            Some((n, result)) = answers.next(), if !answers.is_empty() => {
                let frame = match result {
                    Ok(acked) => Frame::Ack(Ack {
                        stream_id: None,
                        seq: n,
                        offset: acked.offset,
                        replayed: acked.replayed,
                    }),
                    Err(e) => Frame::Nack(Nack { stream_id: None, seq: n, error: e.to_object() }),
                };
                if peer.send(Message::text(frame.to_json())).await.is_err() {
                    break None;
                }
                frames_out += 1;
                if client_closed && answers.is_empty() {
                    break Some(Close::Bye);
                }
            }
            msg = source.next(), if !client_closed && answers.len() < max_in_flight => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(m)) if m.is_text() || m.is_binary() => {
                        seq += 1;
                        let n = seq;
                        let answer = if !may_send {
                            futures_util::future::ready(Err(ApiError::from(Denied::Forbidden(
                                "this token's scope does not include `send`".into(),
                            ))))
                            .boxed()
                        } else if state.phase.at_least(Phase::Draining) {
                            futures_util::future::ready(Err(ApiError::ShuttingDown)).boxed()
                        } else {
                            match record(m.into_data(), framed) {
                                Ok((data, key, trace)) => state
                                    .ingest
                                    .enqueue(&entry, data, key.as_deref(), trace.as_ref())
                                    .await
                                    .map(|r| r.map_err(ApiError::from))
                                    .boxed(),
                                Err(e) => futures_util::future::ready(Err(e)).boxed(),
                            }
                        };
                        answers.push_back(answer.map(move |r| (n, r)).boxed());
                    }
                    Some(Ok(m)) if m.is_close() => {
                        // Answer what the client already sent, then close.
                        client_closed = true;
                        if answers.is_empty() {
                            break Some(Close::Bye);
                        }
                    }
                    Some(Ok(_)) => {} // ping/pong: answered by the protocol layer
                    Some(Err(tungstenite::Error::Capacity(_))) => {
                        break Some(Close::TooBig { limit: max_message });
                    }
                    Some(Err(_)) | None => break None,
                }
            }
        }
    };
    if let Some(close) = &close {
        peer.close(close).await;
        if matches!(close, Close::TooBig { .. }) {
            upgrade::linger(peer.sink, source).await;
        }
    }
    // One line per WebSocket, at its end: how and why it closed (a 4008 says who lags).
    let (code, reason) = close.map_or((1006, "connection lost".to_string()), |c| {
        (c.code(), c.reason())
    });
    tracing::info!(
        target: "streamgate::request",
        stream_id = %entry.id,
        code,
        reason,
        duration_ms = opened.elapsed().as_millis() as u64,
        frames_in = seq,
        frames_out,
        "websocket closed"
    );
}

/// The client's side of the socket, where every write is bounded by the idle timeout: a peer
/// that stopped reading cannot hold its session (and its subscription) forever.
pub struct Peer {
    pub sink: futures_util::stream::SplitSink<Socket, Message>,
    pub idle_timeout: Duration,
}

impl Peer {
    pub async fn send(&mut self, m: Message) -> Result<(), ()> {
        match tokio::time::timeout(self.idle_timeout, self.sink.send(m)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Writes `messages` with one flush at the end (nothing for none): frames that queued
    /// up for a socket cost one write, not one each.
    pub async fn write_all(&mut self, messages: Vec<Message>) -> Result<(), ()> {
        if messages.is_empty() {
            return Ok(());
        }
        let write = async {
            for message in messages {
                self.sink.feed(message).await?;
            }
            self.sink.flush().await
        };
        match tokio::time::timeout(self.idle_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Sends the close frame and closes the socket (best effort).
    pub async fn close(&mut self, close: &Close) {
        let frame = CloseFrame {
            code: CloseCode::from(close.code()),
            reason: close.reason().into(),
        };
        if self.send(Message::Close(Some(frame))).await.is_ok() {
            let _ = tokio::time::timeout(self.idle_timeout, self.sink.close()).await;
        }
    }
}
