//! The one `/api/connect` socket of a [`Client`](crate::Client): a task that owns it,
//! opens it again when it drops (exponential back-off with jitter), subscribes every stream
//! again from its last delivered cursor + 1, and sends again, with the same idempotency key,
//! every record whose `ack` had not come. Subscriptions and sends reach it as commands.
//!
//! What each failure does: a cut connection or a daemon restart (`1001`) is reconnected and
//! resumed; a `4401` (token expired) asks the token source again first; a frame already
//! delivered (its cursor not above the last) is dropped, so nothing comes twice; a `gap` is
//! handed on, so nothing is skipped in silence; `lagged` subscribes again from where it
//! lagged; a subscriber that does not read is unsubscribed while its queue is full and
//! subscribed again from its cursor once it reads on (the others are not held up); a `nack`
//! the daemon may take back later (`shutting_down`, `broker_unavailable`, `backlog_full`,
//! `rate_limited`) is sent again after a pause.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use streamgate_wire::{Ack, ClientFrame, Close, ErrorCode, Frame, LagPolicy, StartFrom};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::error::Error;
use crate::http::Http;
use crate::retry::Backoff;

/// Frames queued for one subscription before its subscriber is paused.
pub(crate) const QUEUE: usize = 1024;
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A silent connection is dropped and opened again after this.
const IDLE: Duration = Duration::from_secs(60);

/// Where a subscription starts and what it does on lag.
#[derive(Debug, Clone, Default)]
pub struct Subscribe {
    /// `None`: latest.
    pub from: Option<StartFrom>,
    pub on_lag: LagPolicy,
    /// Only what exists now, then the subscription ends (`caught_up`).
    pub until_now: bool,
}

/// What a subscription's consumer gets.
pub(crate) type Delivered = Result<Frame, Error>;

pub(crate) enum Command {
    Subscribe {
        stream: Uuid,
        options: Subscribe,
        frames: mpsc::Sender<Delivered>,
        paused: Arc<AtomicBool>,
    },
    /// The subscriber read on after it was paused.
    Resume {
        stream: Uuid,
    },
    Unsubscribe {
        stream: Uuid,
    },
    Send {
        stream: Uuid,
        data: Box<RawValue>,
        key: String,
        reply: oneshot::Sender<Result<Ack, Error>>,
    },
}

/// One stream followed.
struct Sub {
    options: Subscribe,
    /// The last cursor handed to the consumer: resume after it.
    last: Option<i64>,
    frames: mpsc::Sender<Delivered>,
    /// Set while the consumer's queue is full: unsubscribed until it reads on (the
    /// consumer then sends `Resume`).
    paused: Arc<AtomicBool>,
    /// Unsubscribed for a pause, and the daemon's `unsubscribed` not seen yet: frames of the
    /// old subscription may still come and are dropped, and it is not subscribed again
    /// before (frames of the old one would otherwise pass for new ones).
    draining: bool,
    /// `Resume` came while draining: subscribe again once drained.
    resume: bool,
}

impl Sub {
    /// Where to subscribe from now.
    fn from(&self) -> Option<StartFrom> {
        match self.last {
            Some(last) => Some(StartFrom::Cursor(last + 1)),
            None => self.options.from.clone(),
        }
    }
}

/// A record sent and not answered yet.
struct Unanswered {
    stream: Uuid,
    data: Box<RawValue>,
    key: String,
    reply: oneshot::Sender<Result<Ack, Error>>,
}

/// The task's state across connections.
struct Manager {
    http: Http,
    subs: HashMap<Uuid, Sub>,
    /// By `seq` of the current connection.
    unanswered: HashMap<u64, Unanswered>,
    /// Sent again after a pause: answered with a `nack` the daemon may take back later.
    later: VecDeque<Unanswered>,
    seq: u64,
}

/// Runs the connection until every handle to it is gone.
pub(crate) async fn run(http: Http, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut m = Manager {
        http,
        subs: HashMap::new(),
        unanswered: HashMap::new(),
        later: VecDeque::new(),
        seq: 0,
    };
    let mut backoff = Backoff::default();
    loop {
        // Nothing to do without a subscription or a record: wait for one.
        if m.subs.is_empty() && m.unanswered.is_empty() && m.later.is_empty() {
            match commands.recv().await {
                Some(command) => m.queue(command),
                None => return,
            }
            continue;
        }
        let socket = match m.connect().await {
            Ok(socket) => socket,
            // A token may have expired between the source's answer and the handshake: the
            // next attempt asks the source again.
            Err(e) if e.is_transient() || e.code() == Some(&ErrorCode::TokenExpired) => {
                let pause = backoff.pause(None);
                tracing::debug!(error = %e, ?pause, "streamgate: reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    command = commands.recv() => match command {
                        Some(command) => m.queue(command),
                        None => return,
                    },
                }
                continue;
            }
            Err(e) => {
                // A refusal that will not pass (a bad key): every waiter is told.
                m.fail_all(&e);
                continue;
            }
        };
        backoff.reset();
        match m.serve(socket, &mut commands).await {
            Ended::Gone => return,
            Ended::Dropped(why) => {
                tracing::debug!(%why, "streamgate: connection dropped; resuming");
                tokio::time::sleep(backoff.pause(None)).await;
            }
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How one connection ended.
enum Ended {
    /// Every handle is gone.
    Gone,
    /// Open it again and resume.
    Dropped(String),
}

impl Manager {
    /// A command while no connection is open: remembered for the next one.
    fn queue(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                stream,
                options,
                frames,
                paused,
            } => {
                self.subs.insert(
                    stream,
                    Sub {
                        options,
                        last: None,
                        frames,
                        paused,
                        draining: false,
                        resume: false,
                    },
                );
            }
            Command::Resume { .. } => {}
            Command::Unsubscribe { stream } => {
                self.subs.remove(&stream);
            }
            Command::Send {
                stream,
                data,
                key,
                reply,
            } => self.later.push_back(Unanswered {
                stream,
                data,
                key,
                reply,
            }),
        }
    }

    async fn connect(&self) -> Result<Socket, Error> {
        let request = self.http.ws_request("/api/connect").await?;
        let url = request.uri().to_string();
        let connecting = tokio_tungstenite::connect_async_with_config(request, None, true);
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let body = resp.body().as_deref().unwrap_or_default();
                Err(crate::error::server_error(
                    resp.status(),
                    body,
                    crate::error::retry_after(resp.headers()),
                ))
            }
            Ok(Err(e)) => Err(Error::Connect {
                url,
                cause: e.to_string(),
            }),
            Err(_) => Err(Error::Connect {
                url,
                cause: "timed out".into(),
            }),
        }
    }

    /// Everyone waiting is told `e` (the subscriptions end).
    fn fail_all(&mut self, e: &Error) {
        let copy = |e: &Error| match e {
            Error::Server {
                status,
                code,
                message,
                retry_after,
                ..
            } => Error::Server {
                status: *status,
                code: code.clone(),
                message: message.clone(),
                retry_after: *retry_after,
                acknowledged: None,
                line: None,
            },
            other => Error::Token(other.to_string()),
        };
        for (_, sub) in self.subs.drain() {
            let _ = sub.frames.try_send(Err(copy(e)));
        }
        for (_, u) in self.unanswered.drain() {
            let _ = u.reply.send(Err(copy(e)));
        }
        for u in self.later.drain(..) {
            let _ = u.reply.send(Err(copy(e)));
        }
    }

    /// Serves one open connection: subscribes everything again, sends again what was not
    /// answered, then relays commands and frames until it drops.
    async fn serve(
        &mut self,
        mut socket: Socket,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Ended {
        let mut out: Vec<ClientFrame> = Vec::new();
        for (stream, sub) in &mut self.subs {
            // A new connection has no old subscription to drain.
            sub.draining = false;
            if std::mem::take(&mut sub.resume) || !sub.paused.load(Ordering::Acquire) {
                sub.paused.store(false, Ordering::Release);
                out.push(subscribe_frame(*stream, sub));
            }
        }
        // Records of the last connection first, in their order, then those that waited.
        let mut resend: Vec<(u64, Unanswered)> = self.unanswered.drain().collect();
        resend.sort_by_key(|(seq, _)| *seq);
        let resend: Vec<Unanswered> = resend
            .into_iter()
            .map(|(_, u)| u)
            .chain(self.later.drain(..))
            .collect();
        for u in resend {
            out.push(self.numbered(u));
        }
        if send_all(&mut socket, &out).await.is_err() {
            return Ended::Dropped("writing the subscriptions failed".into());
        }
        let mut retry_later = tokio::time::interval(Duration::from_millis(500));
        retry_later.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut out: Vec<ClientFrame> = Vec::new();
            tokio::select! {
                command = commands.recv() => match command {
                    None => {
                        let _ = socket.close(None).await;
                        return Ended::Gone;
                    }
                    Some(command) => self.command(command, &mut out),
                },
                msg = tokio::time::timeout(IDLE, socket.next()) => match msg {
                    Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<Frame>(&text) {
                        Ok(frame) => self.frame(frame, &mut out),
                        Err(e) => tracing::debug!(error = %e, "streamgate: unreadable frame"),
                    },
                    Ok(Some(Ok(Message::Close(close)))) => {
                        let (code, reason) = close
                            .map(|c| (u16::from(c.code), c.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        return Ended::Dropped(format!("closed {code}: {}", Close::parse(code, &reason).reason()));
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(e))) => return Ended::Dropped(e.to_string()),
                    Ok(None) => return Ended::Dropped("connection lost".into()),
                    Err(_) => return Ended::Dropped("silent for a minute".into()),
                },
                _ = retry_later.tick(), if !self.later.is_empty() => {
                    while let Some(u) = self.later.pop_front() {
                        out.push(self.numbered(u));
                    }
                }
            }
            if send_all(&mut socket, &out).await.is_err() {
                return Ended::Dropped("write failed".into());
            }
        }
    }

    /// Numbers a record for this connection and remembers it until it is answered.
    fn numbered(&mut self, u: Unanswered) -> ClientFrame {
        self.seq += 1;
        let frame = ClientFrame::Send {
            stream_id: u.stream,
            seq: self.seq,
            data: u.data.clone(),
            idempotency_key: Some(u.key.clone()),
        };
        self.unanswered.insert(self.seq, u);
        frame
    }

    fn command(&mut self, command: Command, out: &mut Vec<ClientFrame>) {
        match command {
            Command::Subscribe {
                stream,
                options,
                frames,
                paused,
            } => {
                let sub = Sub {
                    options,
                    last: None,
                    frames,
                    paused,
                    draining: false,
                    resume: false,
                };
                out.push(subscribe_frame(stream, &sub));
                self.subs.insert(stream, sub);
            }
            Command::Resume { stream } => {
                if let Some(sub) = self.subs.get_mut(&stream) {
                    if sub.draining {
                        sub.resume = true;
                    } else if sub.paused.swap(false, Ordering::AcqRel) {
                        out.push(subscribe_frame(stream, sub));
                    }
                }
            }
            Command::Unsubscribe { stream } => {
                if self.subs.remove(&stream).is_some() {
                    out.push(ClientFrame::Unsubscribe { stream_id: stream });
                }
            }
            Command::Send {
                stream,
                data,
                key,
                reply,
            } => {
                let frame = self.numbered(Unanswered {
                    stream,
                    data,
                    key,
                    reply,
                });
                out.push(frame);
            }
        }
    }

    /// A frame from the daemon.
    fn frame(&mut self, frame: Frame, out: &mut Vec<ClientFrame>) {
        match frame {
            Frame::Result(ref o) | Frame::Error(ref o) => {
                let (stream, cursor) = (o.stream_id, o.cursor);
                self.deliver(stream, cursor, frame, out);
            }
            Frame::Gap(g) => {
                let last = g.from_cursor + g.skipped as i64 - 1;
                self.deliver(g.stream_id, Some(last), Frame::Gap(g), out);
            }
            Frame::End(ref o) => {
                let stream = o.stream_id;
                let cursor = o.cursor;
                self.deliver(stream, cursor, frame, out);
                self.subs.remove(&stream); // its queue closes after the end frame
            }
            Frame::CaughtUp(s) => {
                self.subs.remove(&s.stream_id);
            }
            Frame::Lagged(l) => {
                if let Some(sub) = self.subs.get_mut(&l.stream_id) {
                    sub.last = Some(l.resume_from - 1);
                    out.push(subscribe_frame(l.stream_id, sub));
                }
            }
            Frame::Refused(r) => {
                if let Some(sub) = self.subs.remove(&r.stream_id) {
                    let error = r.error.map(Error::from_object).unwrap_or(Error::Closed);
                    let _ = sub.frames.try_send(Err(error));
                }
            }
            Frame::Unsubscribed(u) => {
                let Some(sub) = self.subs.get_mut(&u.stream_id) else {
                    return;
                };
                if u.error.is_some() {
                    // Ended by the daemon (not asked for): subscribe again from the cursor.
                    out.push(subscribe_frame(u.stream_id, sub));
                } else if sub.draining {
                    // The pause's unsubscribe is done: nothing of the old subscription
                    // follows.
                    sub.draining = false;
                    if std::mem::take(&mut sub.resume) {
                        sub.paused.store(false, Ordering::Release);
                        out.push(subscribe_frame(u.stream_id, sub));
                    }
                }
            }
            Frame::Ack(ack) => {
                if let Some(u) = self.unanswered.remove(&ack.seq) {
                    let _ = u.reply.send(Ok(ack));
                }
            }
            Frame::Nack(nack) => {
                if let Some(u) = self.unanswered.remove(&nack.seq) {
                    let later = matches!(
                        nack.error.code,
                        ErrorCode::ShuttingDown
                            | ErrorCode::BrokerUnavailable
                            | ErrorCode::BacklogFull
                            | ErrorCode::RateLimited
                            | ErrorCode::IdempotencyKeyInFlight
                    );
                    if later {
                        self.later.push_back(u);
                    } else {
                        let _ = u.reply.send(Err(Error::from_object(nack.error)));
                    }
                }
            }
            Frame::Subscribed(_) | Frame::Invalid(_) => {}
        }
    }

    /// Hands a stream's frame at `cursor` to its consumer, unless it was handed on before.
    /// A consumer whose queue is full is paused: unsubscribed, and subscribed again from
    /// this cursor once it reads on.
    fn deliver(
        &mut self,
        stream: Uuid,
        cursor: Option<i64>,
        frame: Frame,
        out: &mut Vec<ClientFrame>,
    ) {
        let Some(sub) = self.subs.get_mut(&stream) else {
            return;
        };
        if sub.draining || sub.paused.load(Ordering::Acquire) {
            return; // unsubscribed: frames still on their way
        }
        if let (Some(c), Some(last)) = (cursor, sub.last) {
            if c <= last {
                return;
            }
        }
        match sub.frames.try_send(Ok(frame)) {
            Ok(()) => {
                if let Some(c) = cursor {
                    sub.last = Some(c);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                sub.paused.store(true, Ordering::Release);
                sub.draining = true;
                out.push(ClientFrame::Unsubscribe { stream_id: stream });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.subs.remove(&stream);
                out.push(ClientFrame::Unsubscribe { stream_id: stream });
            }
        }
    }
}

fn subscribe_frame(stream: Uuid, sub: &Sub) -> ClientFrame {
    ClientFrame::Subscribe {
        stream_id: stream,
        from: sub.from(),
        on_lag: sub.options.on_lag,
        until: sub.options.until_now.then(|| "now".to_string()),
    }
}

async fn send_all(socket: &mut Socket, frames: &[ClientFrame]) -> Result<(), ()> {
    if frames.is_empty() {
        return Ok(());
    }
    for frame in frames {
        let text = serde_json::to_string(frame).expect("client frames serialize");
        socket.feed(Message::text(text)).await.map_err(|_| ())?;
    }
    socket.flush().await.map_err(|_| ())
}
