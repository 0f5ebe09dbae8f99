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

use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use warp::ws::{Message, WebSocket};

use super::handlers::records;
use crate::error::ApiError;
use crate::frames::{self, Kind};
use crate::kafka::{self, now_ms};
use crate::registry::StreamEntry;
use crate::results::Subscription;
use crate::server::AppState;

/// Close code for a subscriber detached because it fell behind.
pub const CLOSE_LAGGED: u16 = 4008;

type AckFuture = Pin<Box<dyn Future<Output = (u64, Result<i64, ApiError>)> + Send>>;

/// Runs one session. `sub` was taken before the upgrade was answered, so every result
/// produced after the client saw `101 Switching Protocols` reaches it.
pub async fn session(
    socket: WebSocket,
    state: Arc<AppState>,
    entry: Arc<StreamEntry>,
    mut sub: Subscription,
) {
    let (mut sink, mut source) = socket.split();
    let mut acks: FuturesOrdered<AckFuture> = FuturesOrdered::new();
    let mut shutdown = state.shutdown.clone();
    let max_in_flight = state.config.limits.ws_max_in_flight;
    let key = entry.id.to_string();
    let mut seq: u64 = 0;
    let mut last_cursor: Option<i64> = None;
    let mut client_closed = false;

    let close = loop {
        if *shutdown.borrow() {
            break Some((1001, "server shutting down".to_string()));
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            delivery = sub.rx.recv() => match delivery {
                Some(d) => {
                    if sink.send(Message::text(d.frame.as_ref())).await.is_err() {
                        break None;
                    }
                    last_cursor = Some(d.cursor);
                    if d.kind == Kind::End {
                        break Some((1000, "stream ended".to_string()));
                    }
                }
                None if sub.lagged() => {
                    let reason = match last_cursor {
                        Some(c) => format!("lagged: too slow; resume after cursor {c}"),
                        None => "lagged: too slow; no result was delivered".to_string(),
                    };
                    break Some((CLOSE_LAGGED, reason));
                }
                None => break Some((1011, "results router stopped".to_string())),
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
            msg = source.next(), if !client_closed && acks.len() < max_in_flight => match msg {
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
            },
        }
    };
    if let Some((code, reason)) = close {
        let _ = sink.send(Message::close_with(code, reason)).await;
        let _ = sink.close().await;
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
    let body = m.into_bytes();
    let record = match records(&body, None) {
        Ok(mut r) => r.remove(0),
        Err(e) => return refused(e),
    };
    match state.input.enqueue(key, &record, now_ms()).await {
        Ok(ack) => Box::pin(async move { (seq, ack.await.map_err(|e| kafka::unavailable(&e, 0))) }),
        Err(e) => refused(kafka::unavailable(&e, 0)),
    }
}
