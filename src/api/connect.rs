//! `GET /api/connect`: one WebSocket for many streams. The client subscribes to and
//! unsubscribes from streams and sends records into them with JSON frames
//! (`wire::ClientFrame`), each naming its stream; every frame the daemon sends names its
//! stream too (`wire::Frame`).
//!
//! Each subscription is a delivery `Feed`, opened exactly as for a single-stream socket
//! (`subscriber.rs`: the stream checked against the connection's credential, a seat under
//! the key's cap, the live subscription before the replay), and the connection reads all of
//! them through one `Mux`, which takes turns between ready feeds. A subscription ends on its
//! own (`end`, `lagged`, `caught_up`, or `unsubscribed` with the reason) and the connection
//! stays open. Records sent are handed to the producer in the order they arrive, and
//! answered (`ack`/`nack`, with the client's `seq`) in that order per stream: a slow stream's
//! answers never hold up another stream's.
//!
//! The connection lives no longer than its credential (4401 when a token expires) and ends
//! with 1001 once the daemon is drained and every feed has delivered what was routed to it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

use super::access::owned;
use super::error::ApiError;
use super::subscriber::{open, Opening, SubscribeArgs};
use super::upgrade::{self, Socket};
use super::ws::{Peer, WRITE_BATCH};
use super::AppState;
use crate::auth::{Need, Principal};
use crate::delivery::{Feed, Item, Mux};
use crate::ingest::Acked;
use crate::lifecycle::Phase;
use crate::quota::Seat;
use crate::registry::StreamEntry;
use crate::telemetry::TraceContext;
use crate::wire::{
    Ack, Authenticated, ClientFrame, Close, ErrorCode, ErrorObject, Frame, Invalid, Lagged, Nack,
    Refusal, Scope, StreamRef,
};

/// A record's answer to come: its stream, the client's `seq`, and where it was stored.
type Answer = BoxFuture<'static, (Uuid, u64, Result<Acked, ApiError>)>;

/// A stream's records not answered yet, in the order they came: `seq`, and the answer once
/// it came.
type Unanswered = VecDeque<(u64, Option<Result<Acked, ApiError>>)>;

/// What one connection keeps.
struct Connection {
    state: Arc<AppState>,
    caller: Principal,
    mux: Mux,
    /// The key's seat of each open subscription, freed with it.
    seats: HashMap<Uuid, Seat>,
    /// Subscriptions asked for and not open yet; one unsubscribed meanwhile is dropped.
    opening_ids: HashSet<Uuid>,
    opening: FuturesUnordered<Opening>,
    /// Streams this connection sent to, as found once (a lookup per record would cost a
    /// registry read for an unknown id every time).
    entries: HashMap<Uuid, Arc<StreamEntry>>,
    /// Per stream, the records sent and not answered yet, in order, with their answer once
    /// it came (answers are written in this order).
    pending: HashMap<Uuid, Unanswered>,
    in_flight: usize,
    answers: FuturesUnordered<Answer>,
    /// When the caller's credential ends (its expiry, or a revocation); an `auth` frame
    /// replaces it.
    ends: BoxFuture<'static, Close>,
}

/// Runs one connection until the client goes, the credential ends or the daemon stops.
pub async fn session(socket: Socket, state: Arc<AppState>, caller: Principal) {
    let (sink, mut source) = socket.split();
    let limits = state.config().limits.websocket.clone();
    let max_subscriptions = state
        .config()
        .limits
        .delivery
        .max_subscriptions_per_connection;
    let idle_timeout = limits.idle_timeout();
    let mut peer = Peer { sink, idle_timeout };
    let every = Duration::from_millis(limits.ws_ping_interval_ms);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut phase = state.phase.clone();
    let mut conn = Connection {
        state: state.clone(),
        mux: Mux::default(),
        seats: HashMap::new(),
        opening_ids: HashSet::new(),
        opening: FuturesUnordered::new(),
        entries: HashMap::new(),
        pending: HashMap::new(),
        in_flight: 0,
        answers: FuturesUnordered::new(),
        ends: state.credential_end(&caller),
        caller,
    };
    let mut last_heard = Instant::now();
    let mut drained = false;
    let (opened, mut frames_in, mut frames_out) = (Instant::now(), 0u64, 0u64);

    let close = loop {
        if drained && conn.mux.is_empty() && conn.in_flight == 0 {
            break Some(Close::ShuttingDown);
        }
        let mut out: Vec<Message> = Vec::new();
        tokio::select! {
            _ = ping.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    tracing::debug!("dropping a silent /api/connect client");
                    break None;
                }
                if peer.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
                continue;
            }
            close = &mut conn.ends => break Some(close),
            _ = phase.reached(Phase::Drained), if !drained => {
                drained = true;
                continue;
            }
            (stream, item) = conn.mux.next() => {
                // This feed's frame, then whatever else is ready, up to a batch.
                let mut next = Some((stream, item));
                let mut ended = None;
                while let Some((stream, item)) = next.take() {
                    match conn.delivered(stream, item) {
                        Ok(Some(frame)) => out.push(frame),
                        Ok(None) => {}
                        Err(close) => {
                            ended = Some(close);
                            break;
                        }
                    }
                    if out.len() < WRITE_BATCH {
                        next = conn.mux.next().now_or_never();
                    }
                }
                if let Some(close) = ended {
                    break Some(close);
                }
            }
            Some((stream, result)) = conn.opening.next(), if !conn.opening.is_empty() => {
                out.extend(conn.opened(stream, result).map(|f| Message::text(f.to_json())));
            }
            Some((stream, seq, result)) = conn.answers.next(), if !conn.answers.is_empty() => {
                out.extend(conn.answered(stream, seq, result).into_iter().map(|f| Message::text(f.to_json())));
            }
            msg = source.next(), if conn.in_flight < limits.ws_max_in_flight => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(m)) if m.is_text() || m.is_binary() => {
                        frames_in += 1;
                        let frames = conn.received(&m.into_data(), max_subscriptions).await;
                        out.extend(frames.into_iter().map(|f| Message::text(f.to_json())));
                    }
                    Some(Ok(m)) if m.is_close() => break Some(Close::Bye),
                    Some(Ok(_)) => {} // ping/pong: answered by the protocol layer
                    Some(Err(tungstenite::Error::Capacity(_))) => {
                        break Some(Close::TooBig { limit: limits.ws_max_message_bytes });
                    }
                    Some(Err(_)) | None => break None,
                }
            }
        }
        frames_out += out.len() as u64;
        if peer.write_all(out).await.is_err() {
            break None;
        }
    };
    if let Some(close) = &close {
        peer.close(close).await;
        if matches!(close, Close::TooBig { .. }) {
            upgrade::linger(peer.sink, source).await;
        }
    }
    let (code, reason) = close.map_or((1006, "connection lost".to_string()), |c| {
        (c.code(), c.reason())
    });
    tracing::info!(
        target: "streamgate::request",
        code,
        reason,
        duration_ms = opened.elapsed().as_millis() as u64,
        frames_in,
        frames_out,
        "connect socket closed"
    );
}

impl Connection {
    /// The frame to write for a feed's item (`None` for an item with nothing to say), or
    /// why the whole connection must close. A result's frame is the one the router
    /// serialized for every subscriber, not a copy.
    fn delivered(&mut self, stream: Uuid, item: Item) -> Result<Option<Message>, Close> {
        let close = match item {
            Item::Frame(d) => return Ok(Some(Message::Text(d.frame))),
            Item::Closed(close) => close,
        };
        self.seats.remove(&stream);
        let frame = match close {
            // After its `end` frame: nothing more to say.
            Close::Ended => return Ok(None),
            Close::Lagged { resume } => Frame::Lagged(Lagged {
                stream_id: stream,
                resume_from: resume,
            }),
            Close::CaughtUp => Frame::CaughtUp(StreamRef { stream_id: stream }),
            // The connection's own end, once every feed got there.
            Close::ShuttingDown => return Ok(None),
            close @ (Close::TokenExpired | Close::TokenRevoked | Close::CredentialRevoked) => {
                return Err(close)
            }
            other => Frame::Unsubscribed(Refusal {
                stream_id: stream,
                error: Some(ErrorObject::new(ErrorCode::Internal, other.reason())),
            }),
        };
        Ok(Some(Message::text(frame.to_json())))
    }

    /// A subscription opened (or not): it starts delivering after its `subscribed`.
    fn opened(&mut self, stream: Uuid, result: Result<(Feed, Seat), ApiError>) -> Option<Frame> {
        if !self.opening_ids.remove(&stream) {
            return None; // unsubscribed while it opened: already answered
        }
        Some(match result {
            Ok((feed, seat)) => {
                self.mux.add(stream, feed);
                self.seats.insert(stream, seat);
                Frame::Subscribed(StreamRef { stream_id: stream })
            }
            Err(e) => refused(stream, &e),
        })
    }

    /// A record's answer came: the answers of its stream that are now in order.
    fn answered(&mut self, stream: Uuid, seq: u64, result: Result<Acked, ApiError>) -> Vec<Frame> {
        let Some(queue) = self.pending.get_mut(&stream) else {
            return Vec::new();
        };
        if let Some(slot) = queue.iter_mut().find(|(s, r)| *s == seq && r.is_none()) {
            slot.1 = Some(result);
        }
        let mut frames = Vec::new();
        while let Some((seq, Some(_))) = queue.front() {
            let seq = *seq;
            let (_, result) = queue.pop_front().expect("a front");
            self.in_flight -= 1;
            frames.push(match result.expect("answered") {
                Ok(acked) => Frame::Ack(Ack {
                    stream_id: Some(stream),
                    seq,
                    offset: acked.offset,
                    replayed: acked.replayed,
                }),
                Err(e) => Frame::Nack(Nack {
                    stream_id: Some(stream),
                    seq,
                    error: e.to_object(),
                }),
            });
        }
        if queue.is_empty() {
            self.pending.remove(&stream);
        }
        frames
    }

    /// A client frame; the frames to answer it with now.
    async fn received(&mut self, text: &[u8], max_subscriptions: usize) -> Vec<Frame> {
        let frame: ClientFrame = match serde_json::from_slice(text) {
            Ok(frame) => frame,
            Err(e) => {
                return vec![Frame::Invalid(Invalid {
                    error: ErrorObject::new(
                        ErrorCode::InvalidInput,
                        format!(
                            "not a frame this socket takes ({e}): send subscribe, unsubscribe \
                             or send, each with a stream_id"
                        ),
                    ),
                })]
            }
        };
        match frame {
            ClientFrame::Subscribe {
                stream_id,
                from,
                on_lag,
                until,
            } => {
                let args = SubscribeArgs::from_frame(from.as_ref(), on_lag, until.as_deref());
                self.subscribe(stream_id, args, max_subscriptions)
                    .map(|e| refused(stream_id, &e))
                    .into_iter()
                    .collect()
            }
            ClientFrame::Unsubscribe { stream_id } => {
                if self.mux.remove(&stream_id) {
                    self.seats.remove(&stream_id);
                }
                self.opening_ids.remove(&stream_id);
                vec![Frame::Unsubscribed(Refusal {
                    stream_id,
                    error: None,
                })]
            }
            ClientFrame::Auth { token } => self.reauthenticate(&token).await,
            ClientFrame::Send {
                stream_id,
                seq,
                data,
                idempotency_key,
                traceparent,
            } => {
                let trace = TraceContext::from_headers(traceparent.as_deref(), None);
                let answer = self
                    .send(
                        stream_id,
                        data.get().as_bytes(),
                        idempotency_key.as_deref(),
                        trace.as_ref(),
                    )
                    .await;
                self.pending
                    .entry(stream_id)
                    .or_default()
                    .push_back((seq, None));
                self.in_flight += 1;
                self.answers
                    .push(answer.map(move |r| (stream_id, seq, r)).boxed());
                Vec::new()
            }
        }
    }

    /// An `auth` frame: a fresh token for the same caller. The connection goes on under it
    /// (until it expires), and subscriptions it does not cover end; a token that does not
    /// pass, or names another caller, changes nothing.
    async fn reauthenticate(&mut self, token: &str) -> Vec<Frame> {
        let invalid = |error: ErrorObject| vec![Frame::Invalid(Invalid { error })];
        let fresh = match self.state.credentials().token(token).await {
            Ok(fresh) => fresh,
            Err(e) => return invalid(ApiError::from(e).to_object()),
        };
        if fresh.name != self.caller.name {
            return invalid(ErrorObject::new(
                ErrorCode::Forbidden,
                "an `auth` token must be for the caller the connection was opened as",
            ));
        }
        let expires_at = fresh.expires.map(|at| {
            at.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        });
        self.ends = self.state.credential_end(&fresh);
        self.caller = fresh;
        // Sends are checked again against the new credential.
        self.entries.clear();
        let mut frames = vec![Frame::Authenticated(Authenticated { expires_at })];
        let uncovered: Vec<Uuid> = self
            .mux
            .streams()
            .filter(|s| {
                !matches!(
                    self.caller.may(Some(*s), Need::Scope(Scope::Subscribe)),
                    Ok(true)
                )
            })
            .collect();
        for stream in uncovered {
            self.mux.remove(&stream);
            self.seats.remove(&stream);
            frames.push(Frame::Unsubscribed(Refusal {
                stream_id: stream,
                error: Some(ErrorObject::new(
                    ErrorCode::Forbidden,
                    "the new token does not cover this stream",
                )),
            }));
        }
        frames
    }

    /// Starts opening a subscription; an error is its refusal.
    fn subscribe(
        &mut self,
        stream: Uuid,
        args: Result<SubscribeArgs, ApiError>,
        max: usize,
    ) -> Option<ApiError> {
        if self.mux.contains(&stream) || self.opening_ids.contains(&stream) {
            return Some(ApiError::InvalidInput(
                "already subscribed to this stream on this connection".into(),
            ));
        }
        if self.mux.len() + self.opening_ids.len() >= max {
            return Some(ApiError::TooManySubscriptions { limit: max });
        }
        let args = match args {
            Ok(args) => args,
            Err(e) => return Some(e),
        };
        let opening = open(self.state.clone(), self.caller.clone(), stream, args);
        self.opening_ids.insert(stream);
        self.opening
            .push(opening.map(move |opened| (stream, opened)).boxed());
        None
    }

    /// Hands one record to the producer, now (so records of a stream are stored in the
    /// order they came), and returns its answer to come.
    async fn send(
        &mut self,
        stream: Uuid,
        data: &[u8],
        idempotency_key: Option<&str>,
        trace: Option<&TraceContext>,
    ) -> BoxFuture<'static, Result<Acked, ApiError>> {
        let refused = |e: ApiError| futures_util::future::ready(Err(e)).boxed();
        if self.state.phase.at_least(Phase::Draining) {
            return refused(ApiError::ShuttingDown);
        }
        let entry = match self.entries.get(&stream) {
            Some(entry) => entry.clone(),
            None => {
                let found = owned(
                    &self.state,
                    &stream.to_string(),
                    &self.caller,
                    Need::Scope(Scope::Send),
                )
                .await;
                match found {
                    Ok(entry) => {
                        self.entries.insert(stream, entry.clone());
                        entry
                    }
                    Err(e) => return refused(e),
                }
            }
        };
        // A token's scope is checked on every record, not only on the first lookup.
        if let Err(e) = self.caller.may(Some(stream), Need::Scope(Scope::Send)) {
            return refused(e.into());
        }
        self.state
            .ingest
            .enqueue(&entry, Bytes::copy_from_slice(data), idempotency_key, trace)
            .await
            .map(|r| r.map_err(ApiError::from))
            .boxed()
    }
}

fn refused(stream: Uuid, e: &ApiError) -> Frame {
    Frame::Refused(Refusal {
        stream_id: stream,
        error: Some(e.to_object()),
    })
}
