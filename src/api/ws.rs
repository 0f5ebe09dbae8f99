//! One WebSocket session: pushes the stream's results to the client and takes records the
//! client sends on the same socket, acknowledging each (in order) once the broker stored it.
//!
//! Close codes: 1000 the stream ended (after its `end` frame); 1001 the daemon is shutting
//! down; 4008 the client read too slowly and was detached (the reason names the last cursor it
//! received, to resume after); 1011 an internal error.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::upgrade::Socket;

use super::handlers::records;
use crate::error::ApiError;
use crate::frames::{self, Kind};
use crate::kafka::{self, now_ms};
use crate::registry::StreamEntry;
use crate::replay::{From, Replay};
use crate::results::{Delivery, Subscription};
use crate::server::AppState;

/// Close code for a subscriber detached because it fell behind.
pub const CLOSE_LAGGED: u16 = 4008;

type AckFuture = Pin<Box<dyn Future<Output = (u64, Result<i64, ApiError>)> + Send>>;

/// Runs one session. `sub` was taken before the upgrade was answered, so every result
/// produced after the client saw `101 Switching Protocols` reaches it.
pub async fn session(
    socket: Socket,
    state: Arc<AppState>,
    entry: Arc<StreamEntry>,
    mut sub: Subscription,
    from: From,
) {
    let (sink, mut source) = socket.split();
    let idle_timeout = Duration::from_millis(state.config.limits.ws_idle_timeout_ms);
    let mut sink = Peer { sink, idle_timeout };
    let mut ping = tokio::time::interval(Duration::from_millis(
        state.config.limits.ws_ping_interval_ms,
    ));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut acks: FuturesOrdered<AckFuture> = FuturesOrdered::new();
    let mut shutdown = state.shutdown.clone();
    let max_in_flight = state.config.limits.ws_max_in_flight;
    let key = entry.id.to_string();
    let mut seq: u64 = 0;
    let mut last_cursor: Option<i64> = None;
    let mut client_closed = false;
    // A replay runs first; live results wait in the subscription queue meanwhile.
    let mut _permit = None;
    let mut replay = None;
    if from != From::Latest {
        _permit = state.replays.clone().acquire_owned().await.ok();
        match Replay::start(state.replay_config(), &state.results_topic, entry.id, from).await {
            Ok(r) => replay = r,
            Err(e) => {
                let _ = sink.send(close_frame(1011, truncate(&e.to_string()))).await;
                return;
            }
        }
    }

    let close = loop {
        if *shutdown.borrow() {
            break Some((1001, "server shutting down".to_string()));
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = ping.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    tracing::debug!(stream_id = %entry.id, "dropping a silent WebSocket client");
                    break None;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            replayed = next_replayed(&mut replay), if replay.is_some() => match replayed {
                Some(Ok(d)) => {
                    if sink.send(Message::Text(d.frame.clone())).await.is_err() {
                        break None;
                    }
                    last_cursor = Some(d.cursor);
                    if d.kind == Kind::End {
                        break Some((1000, "stream ended".to_string()));
                    }
                }
                Some(Err(e)) => break Some((1011, truncate(&e.to_string()))),
                None => {
                    replay = None;
                    _permit = None;
                }
            },
            delivery = sub.rx.recv(), if replay.is_none() => match delivery {
                // Already delivered by the replay.
                Some(d) if last_cursor.is_some_and(|c| d.cursor <= c) => {}
                Some(d) => {
                    if sink.send(Message::Text(d.frame.clone())).await.is_err() {
                        break None;
                    }
                    if d.kind != Kind::Gap {
                        last_cursor = Some(d.cursor);
                    }
                    if d.kind == Kind::End {
                        break Some((1000, "stream ended".to_string()));
                    }
                }
                None => match sub.lagged() {
                    Some(resume) => {
                        break Some((CLOSE_LAGGED, format!("lagged: too slow; resume with from={resume}")));
                    }
                    None => break Some((1011, "results router stopped".to_string())),
                },
            },
            Some((n, result)) = acks.next(), if !acks.is_empty() => {
                let frame = match result {
                    Ok(offset) => {
                        entry.stats.records_in.fetch_add(1, Ordering::Relaxed);
                        state.metrics.records_in.inc();
                        entry.stats.touch();
                        frames::ack(n, offset)
                    }
                    Err(e) => frames::nack(n, e.to_json()),
                };
                if sink.send(Message::text(frame)).await.is_err() {
                    break None;
                }
                if client_closed && acks.is_empty() {
                    break Some((1000, "bye".to_string()));
                }
            }
            msg = source.next(), if !client_closed && acks.len() < max_in_flight => {
                last_heard = Instant::now();
                match msg {
                Some(Ok(m)) if m.is_text() || m.is_binary() => {
                    seq += 1;
                    acks.push_back(enqueue(&state, &entry, &key, seq, m).await);
                }
                Some(Ok(m)) if m.is_close() => {
                    // Answer what the client already sent, then close.
                    client_closed = true;
                    if acks.is_empty() {
                        break Some((1000, "bye".to_string()));
                    }
                }
                Some(Ok(_)) => {} // ping/pong: answered by the protocol layer
                Some(Err(_)) | None => break None,
            }},
        }
    };
    if let Some((code, reason)) = close {
        let _ = sink.send(close_frame(code, reason)).await;
        let _ = sink.close().await;
    }
}

/// The client's side of the socket, where every write is bounded by the idle timeout: a peer
/// that stopped reading cannot hold its session (and its subscription) forever.
struct Peer {
    sink: futures_util::stream::SplitSink<Socket, Message>,
    idle_timeout: Duration,
}

impl Peer {
    async fn send(&mut self, m: Message) -> Result<(), ()> {
        match tokio::time::timeout(self.idle_timeout, self.sink.send(m)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn close(&mut self) -> Result<(), ()> {
        match tokio::time::timeout(self.idle_timeout, self.sink.close()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

/// Validates one client frame and hands it to the producer; the returned future resolves to
/// the frame's ack (its offset) or its error.
async fn enqueue(
    state: &AppState,
    entry: &StreamEntry,
    key: &str,
    seq: u64,
    m: Message,
) -> AckFuture {
    let refused = |e: ApiError| -> AckFuture { Box::pin(async move { (seq, Err(e)) }) };
    if !entry.is_open() {
        return refused(ApiError::StreamEnded(key.to_string()));
    }
    let body = m.into_data();
    let record = match records(&body, None) {
        Ok(mut r) => r.remove(0),
        Err(e) => return refused(e),
    };
    match state.input.enqueue(key, &record, now_ms()).await {
        Ok(ack) => Box::pin(async move { (seq, ack.await.map_err(|e| kafka::unavailable(&e, 0))) }),
        Err(e) => refused(kafka::unavailable(&e, 0)),
    }
}

async fn next_replayed(replay: &mut Option<Replay>) -> Option<Result<Delivery, ApiError>> {
    match replay {
        Some(r) => r.next().await,
        None => None,
    }
}

/// Close reasons are limited to 123 bytes.
fn truncate(reason: &str) -> String {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

fn close_frame(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}
