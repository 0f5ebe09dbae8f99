//! The one `/api/connect` socket of a [`Client`](crate::Client): a task that owns it, opens
//! it again when it drops (exponential back-off with jitter), subscribes every stream again
//! from its last delivered cursor + 1, and sends again, with the same idempotency key, every
//! record whose `ack` had not come. Subscriptions and sends reach it as commands.
//!
//! What each failure does (the same in the TypeScript and Python clients):
//! - a cut connection or a daemon restart (`1001`): reconnect, records first in the order
//!   they were sent, then every subscription from its cursor; a frame already delivered (its
//!   cursor not above the last) is dropped, so nothing comes twice;
//! - a token about to expire (a token source): a new token, a new connection, then the old
//!   one closed; `4401` (it expired anyway): a new token and a reconnect at once;
//! - a handshake refused for good (401, 403, any 4xx but 408 and 429): every subscription and
//!   send fails with it; 429, 503 and the rest are waited out as `Retry-After` says;
//! - `1009`: the limit is read from the close reason, and a record that does not fit is
//!   refused `record_too_large` instead of being sent again forever;
//! - `gap`: handed on, so nothing is skipped in silence; `lagged`: subscribed again from
//!   `resume_from`; `unsubscribed` with an error: subscribed again after a back-off;
//! - `refused`: the subscription's error, unless the daemon cannot serve *now* (`not_ready`,
//!   `shutting_down`, `broker_unavailable`): then again after a back-off;
//! - a `nack` the daemon may take back later (`shutting_down`, `broker_unavailable`,
//!   `backlog_full`, `rate_limited`, `not_ready`, `idempotency_key_in_flight`): sent again
//!   with the same key after a back-off that grows while nacks come, in the original order;
//! - a consumer that does not read: its subscription is unsubscribed while its queue is full
//!   and subscribed again from its cursor once it has read half of it (the others go on).
//!
//! Each subscription is in one state on the current connection (idle, opening, open,
//! closing), and frames are believed only of an open one: a `caught_up`, `lagged` or result
//! of a subscription being unsubscribed is a leftover of it, never of the next.
//!
//! A daemon without `/api/connect` (404) is served by `fallback` from then on.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use streamgate_wire::{Ack, ClientFrame, Close, ErrorCode, Frame, LagPolicy, StartFrom};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::error::Error;
use crate::http::Http;
use crate::retry::Backoff;

/// Frames queued for one subscription before its subscriber is paused.
pub(crate) const QUEUE: usize = 1024;
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A silent connection is dropped and opened again after this (the daemon pings every
/// `limits.ws_ping_interval_ms`, 30 s by default).
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
        /// Tells this subscription from a later one of the same stream.
        id: u64,
        stream: Uuid,
        options: Subscribe,
        frames: mpsc::Sender<Delivered>,
        paused: Arc<AtomicBool>,
    },
    /// The subscriber read on after it was paused.
    Resume { id: u64, stream: Uuid },
    /// The subscriber is gone.
    Unsubscribe { id: u64, stream: Uuid },
    Send {
        stream: Uuid,
        data: Box<RawValue>,
        key: String,
        reply: oneshot::Sender<Result<Ack, Error>>,
    },
}

/// Where a subscription is on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not subscribed (no connection, paused, or waiting to try again).
    Idle,
    /// `subscribe` written, its answer not come yet.
    Opening,
    /// Delivering.
    Open,
    /// `unsubscribe` written for a pause, its answer not come yet.
    Closing,
}

/// One stream followed.
struct Sub {
    id: u64,
    options: Subscribe,
    /// The last cursor handed to the consumer: resume after it.
    last: Option<i64>,
    frames: mpsc::Sender<Delivered>,
    /// Set while the consumer's queue is full: not subscribed until it reads on (the
    /// consumer then sends `Resume`).
    paused: Arc<AtomicBool>,
    state: State,
    /// Pauses between subscribing again after the daemon ended or refused it for now.
    backoff: Backoff,
    /// When to subscribe again (idle, after such an end).
    retry_at: Option<Instant>,
}

impl Sub {
    /// Where to subscribe from now.
    fn from(&self) -> Option<StartFrom> {
        match self.last {
            Some(last) => Some(StartFrom::Cursor(last + 1)),
            None => self.options.from.clone(),
        }
    }

    fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }
}

/// A record sent and not answered yet.
struct Unanswered {
    stream: Uuid,
    data: Box<RawValue>,
    key: String,
    reply: oneshot::Sender<Result<Ack, Error>>,
    /// The order it was first sent in: resent in this order.
    order: u64,
}

/// The task's state across connections.
struct Manager {
    http: Http,
    subs: HashMap<Uuid, Sub>,
    /// Streams the subscriber left whose `unsubscribed` has not come yet: a new subscription
    /// of one waits for it (frames of the old one would otherwise pass for the new one's).
    leaving: HashSet<Uuid>,
    /// Sent on the current connection, by `seq`.
    unanswered: HashMap<u64, Unanswered>,
    /// For the next connection.
    outbox: Vec<Unanswered>,
    /// Nacked with a code that passes: sent again at `later_at`.
    later: Vec<Unanswered>,
    later_at: Option<Instant>,
    /// Grows while nacks come, starts over after an `ack`.
    later_backoff: Backoff,
    seq: u64,
    order: u64,
    /// `limits.ws_max_message_bytes`, once a 1009 close told it.
    max_message: Option<usize>,
    /// The next handshake asks the token source anew (the last token expired).
    fresh: bool,
}

/// Runs the connection until every handle to it is gone.
pub(crate) async fn run(http: Http, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut m = Manager {
        http,
        subs: HashMap::new(),
        leaving: HashSet::new(),
        unanswered: HashMap::new(),
        outbox: Vec::new(),
        later: Vec::new(),
        later_at: None,
        later_backoff: Backoff::default(),
        seq: 0,
        order: 0,
        max_message: None,
        fresh: false,
    };
    let mut backoff = Backoff::default();
    let mut successor: Option<Socket> = None;
    loop {
        // Nothing to do without a subscription or a record: wait for one.
        if !m.needed() {
            match commands.recv().await {
                Some(command) => m.command(command, None),
                None => return,
            }
            continue;
        }
        let socket = match successor.take() {
            Some(socket) => socket,
            None => match m.connect().await {
                Ok(socket) => socket,
                // A daemon without `/api/connect`: a socket per stream from now on.
                Err(Error::Server {
                    status: Some(status),
                    ..
                }) if status == reqwest::StatusCode::NOT_FOUND => {
                    let (subs, records) = m.hand_over();
                    crate::fallback::run(m.http, subs, records, commands).await;
                    return;
                }
                Err(e) => {
                    if let Some(pause) = m.pause_after_refusal(&e, &mut backoff) {
                        tracing::debug!(error = %e, ?pause, "streamgate: cannot connect");
                        if !m.wait(pause, &mut commands).await {
                            return;
                        }
                    }
                    continue;
                }
            },
        };
        m.fresh = false;
        let ended = m.serve(socket, &mut commands, &mut backoff).await;
        m.dropped();
        match ended {
            Ended::Gone => return,
            Ended::Renewed(new) => successor = Some(*new),
            Ended::Dropped {
                why,
                expired,
                heard,
            } => {
                tracing::debug!(%why, "streamgate: connection dropped; resuming");
                if expired {
                    m.fresh = true;
                    if heard {
                        continue; // a new token, at once
                    }
                }
                if !m.wait(backoff.pause(None), &mut commands).await {
                    return;
                }
            }
        }
    }
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How one connection ended.
enum Ended {
    /// Every handle is gone.
    Gone,
    /// Its token was renewed: serve this connection next.
    Renewed(Box<Socket>),
    /// Open it again and resume.
    Dropped {
        why: String,
        /// Closed with 4401: the token expired.
        expired: bool,
        /// Whether anything was heard on it (a connection that closes at once is not
        /// opened again at once).
        heard: bool,
    },
}

impl Manager {
    fn needed(&self) -> bool {
        !(self.subs.is_empty()
            && self.unanswered.is_empty()
            && self.outbox.is_empty()
            && self.later.is_empty())
    }

    /// Waits `pause` while taking commands (for the next connection); `false` once every
    /// handle is gone.
    async fn wait(
        &mut self,
        pause: Duration,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        let until = Instant::now() + pause;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                command = commands.recv() => match command {
                    Some(command) => self.command(command, None),
                    None => return false,
                },
            }
        }
    }

    async fn connect(&self) -> Result<Socket, Error> {
        let request = self
            .http
            .ws_request_with("/api/connect", self.fresh)
            .await?;
        let url = request.uri().to_string();
        let connecting = self.http.ws_connect(request, None);
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

    /// How long to wait after a connection attempt failed; `None` when it will not pass by
    /// itself, and every subscription and send was failed with it.
    fn pause_after_refusal(&mut self, e: &Error, backoff: &mut Backoff) -> Option<Duration> {
        let retry_after = match e {
            Error::Server { retry_after, .. } => *retry_after,
            _ => None,
        };
        let expired = matches!(
            e.code(),
            Some(ErrorCode::TokenExpired | ErrorCode::InvalidToken)
        );
        if expired && self.http.renewable() {
            self.fresh = true;
        } else if refused_for_good(e) {
            tracing::warn!(error = %e, "streamgate: the daemon refused the connection");
            self.fail_all(e);
            return None;
        }
        Some(backoff.pause(retry_after))
    }

    /// Every subscription where it is and every record not answered, in the order sent, for
    /// the fallback.
    fn hand_over(&mut self) -> (Vec<crate::fallback::Handover>, Vec<crate::fallback::Record>) {
        let subs = self
            .subs
            .drain()
            .map(|(stream, sub)| crate::fallback::Handover {
                id: sub.id,
                stream,
                options: sub.options,
                last: sub.last,
                frames: sub.frames,
            })
            .collect();
        let mut waiting: Vec<Unanswered> = self
            .unanswered
            .drain()
            .map(|(_, u)| u)
            .chain(self.outbox.drain(..))
            .chain(self.later.drain(..))
            .collect();
        waiting.sort_by_key(|u| u.order);
        let records = waiting
            .into_iter()
            .map(|u| crate::fallback::Record {
                stream: u.stream,
                data: u.data,
                key: u.key,
                reply: u.reply,
            })
            .collect();
        (subs, records)
    }

    /// Everyone waiting is told `e` (the subscriptions end).
    fn fail_all(&mut self, e: &Error) {
        for (_, sub) in self.subs.drain() {
            let _ = sub.frames.try_send(Err(e.duplicate()));
        }
        let waiting = self
            .unanswered
            .drain()
            .map(|(_, u)| u)
            .chain(self.outbox.drain(..))
            .chain(self.later.drain(..));
        for u in waiting {
            let _ = u.reply.send(Err(e.duplicate()));
        }
        self.later_at = None;
    }

    /// The connection is gone: what was sent on it waits for the next, and no subscription
    /// is subscribed.
    fn dropped(&mut self) {
        self.outbox.extend(self.unanswered.drain().map(|(_, u)| u));
        for sub in self.subs.values_mut() {
            sub.state = State::Idle;
        }
        self.leaving.clear();
    }

    /// Serves one open connection: sends again what was not answered, subscribes
    /// everything again, then relays commands and frames until it drops.
    async fn serve(
        &mut self,
        mut socket: Socket,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        backoff: &mut Backoff,
    ) -> Ended {
        let mut out: Vec<ClientFrame> = Vec::new();
        // Records first, in the order they were sent (their answers then do not wait
        // behind the subscriptions' replays), then every subscription from its cursor.
        let mut resend = std::mem::take(&mut self.outbox);
        resend.sort_by_key(|u| u.order);
        for u in resend {
            self.dispatch(u, &mut out);
        }
        for (stream, sub) in &mut self.subs {
            sub.state = State::Idle;
            sub.retry_at = None;
            if !sub.paused() {
                subscribe(*stream, sub, &mut out);
            }
        }
        if send_all(&mut socket, &out).await.is_err() {
            return dropped("writing the subscriptions failed", false, false);
        }
        let mut renew_at = self.http.renew_at().await;
        let mut heard = false;
        loop {
            let mut out: Vec<ClientFrame> = Vec::new();
            let timer = self.next_timer();
            tokio::select! {
                command = commands.recv() => match command {
                    None => {
                        let _ = socket.close(None).await;
                        return Ended::Gone;
                    }
                    Some(command) => self.command(command, Some(&mut out)),
                },
                msg = tokio::time::timeout(IDLE, socket.next()) => {
                    if !heard && matches!(msg, Ok(Some(Ok(_)))) {
                        heard = true;
                        backoff.reset();
                    }
                    match msg {
                        Ok(Some(Ok(Message::Text(text)))) => {
                            match serde_json::from_str::<Frame>(&text) {
                                Ok(frame) => self.frame(frame, &mut out),
                                Err(e) => tracing::debug!(error = %e, "streamgate: unreadable frame"),
                            }
                        }
                        Ok(Some(Ok(Message::Close(close)))) => {
                            let (code, reason) = close
                                .map(|c| (u16::from(c.code), c.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            let close = Close::parse(code, &reason);
                            if let Close::TooBig { limit } = close {
                                self.max_message = Some(limit);
                            }
                            let expired = matches!(close, Close::TokenExpired);
                            let why = format!("closed {code}: {}", close.reason());
                            return dropped(&why, expired, heard);
                        }
                        Ok(Some(Ok(_))) => {}
                        Ok(Some(Err(e))) => return dropped(&e.to_string(), false, heard),
                        Ok(None) => return dropped("connection lost", false, heard),
                        Err(_) => return dropped("silent for a minute", false, heard),
                    }
                }
                _ = sleep_until(timer) => self.timers(&mut out),
                _ = sleep_until(renew_at) => {
                    renew_at = None;
                    // A new token, a new connection, then the old one closed: every stream
                    // is subscribed again on the new one from its cursor, so nothing is
                    // missed. Without one, this connection runs until its 4401.
                    match self.connect_renewed().await {
                        Ok(new) => {
                            let _ = socket
                                .close(Some(CloseFrame {
                                    code: CloseCode::Normal,
                                    reason: "token renewed".into(),
                                }))
                                .await;
                            return Ended::Renewed(Box::new(new));
                        }
                        Err(e) => tracing::warn!(
                            error = %e,
                            "streamgate: renewing the token failed; trying again when it expires"
                        ),
                    }
                }
            }
            if send_all(&mut socket, &out).await.is_err() {
                return dropped("write failed", false, heard);
            }
        }
    }

    async fn connect_renewed(&mut self) -> Result<Socket, Error> {
        self.fresh = true;
        let new = self.connect().await;
        self.fresh = false;
        new
    }

    /// The next moment something waits for: records to send again, or a subscription to
    /// try again.
    fn next_timer(&self) -> Option<Instant> {
        self.subs
            .values()
            .filter_map(|s| s.retry_at)
            .chain(self.later_at)
            .min()
    }

    /// What is due at the timer.
    fn timers(&mut self, out: &mut Vec<ClientFrame>) {
        let now = Instant::now();
        if self.later_at.is_some_and(|at| at <= now) {
            self.later_at = None;
            let mut later = std::mem::take(&mut self.later);
            later.sort_by_key(|u| u.order);
            for u in later {
                self.dispatch(u, out);
            }
        }
        for (stream, sub) in &mut self.subs {
            if sub.retry_at.is_some_and(|at| at <= now) {
                sub.retry_at = None;
                if sub.state == State::Idle && !sub.paused() && !self.leaving.contains(stream) {
                    subscribe(*stream, sub, out);
                }
            }
        }
    }

    /// Numbers a record for this connection and remembers it until it is answered; one
    /// that cannot fit in a message is refused here.
    fn dispatch(&mut self, u: Unanswered, out: &mut Vec<ClientFrame>) {
        if u.reply.is_closed() {
            return; // its caller gave up
        }
        self.seq += 1;
        let frame = ClientFrame::Send {
            stream_id: u.stream,
            seq: self.seq,
            data: u.data.clone(),
            idempotency_key: Some(u.key.clone()),
            traceparent: None,
        };
        if let Some(limit) = self.max_message {
            // The frame's size, give or take the seq's digits.
            let size = u.data.get().len() + u.key.len() + 120;
            if size > limit {
                let _ = u.reply.send(Err(Error::Server {
                    status: None,
                    code: ErrorCode::RecordTooLarge,
                    message: format!(
                        "the record does not fit in one message \
                         (limits.ws_max_message_bytes={limit}); send it with send_batch"
                    ),
                    retry_after: None,
                    acknowledged: None,
                    line: None,
                    violations: Vec::new(),
                }));
                return;
            }
        }
        self.unanswered.insert(self.seq, u);
        out.push(frame);
    }

    /// A command of the client's handles; `out` is the open connection, if any.
    fn command(&mut self, command: Command, out: Option<&mut Vec<ClientFrame>>) {
        match command {
            Command::Subscribe {
                id,
                stream,
                options,
                frames,
                paused,
            } => {
                if self.subs.contains_key(&stream) {
                    let _ = frames.try_send(Err(Error::Unreadable {
                        url: String::new(),
                        message: format!("stream {stream} is already subscribed on this client"),
                    }));
                    return;
                }
                let mut sub = Sub {
                    id,
                    options,
                    last: None,
                    frames,
                    paused,
                    state: State::Idle,
                    backoff: Backoff::default(),
                    retry_at: None,
                };
                if let Some(out) = out {
                    if !self.leaving.contains(&stream) {
                        subscribe(stream, &mut sub, out);
                    }
                }
                self.subs.insert(stream, sub);
            }
            Command::Resume { id, stream } => {
                let Some(sub) = self.subs.get_mut(&stream).filter(|s| s.id == id) else {
                    return;
                };
                if sub.paused.swap(false, Ordering::AcqRel) && sub.state == State::Idle {
                    if let Some(out) = out {
                        subscribe(stream, sub, out);
                    }
                }
            }
            Command::Unsubscribe { id, stream } => {
                if self.subs.get(&stream).is_none_or(|s| s.id != id) {
                    return;
                }
                let sub = self.subs.remove(&stream).expect("present");
                if let Some(out) = out {
                    if sub.state != State::Idle {
                        out.push(ClientFrame::Unsubscribe { stream_id: stream });
                        self.leaving.insert(stream);
                    }
                }
            }
            Command::Send {
                stream,
                data,
                key,
                reply,
            } => {
                self.order += 1;
                let u = Unanswered {
                    stream,
                    data,
                    key,
                    reply,
                    order: self.order,
                };
                match out {
                    Some(out) => self.dispatch(u, out),
                    None => self.outbox.push(u),
                }
            }
        }
    }

    /// A frame from the daemon.
    fn frame(&mut self, frame: Frame, out: &mut Vec<ClientFrame>) {
        match frame {
            Frame::Result(ref o) | Frame::Error(ref o) | Frame::End(ref o) => {
                let (stream, cursor) = (o.stream_id, o.cursor);
                self.deliver(stream, cursor, frame, out);
            }
            Frame::Gap(ref g) => {
                let (stream, last) = (g.stream_id, g.from_cursor + g.skipped as i64 - 1);
                self.deliver(stream, Some(last), frame, out);
            }
            Frame::Subscribed(s) => {
                if let Some(sub) = self.open(s.stream_id, State::Opening) {
                    sub.state = State::Open;
                }
            }
            Frame::Refused(r) => {
                let stream = r.stream_id;
                let Some(sub) = self.open(stream, State::Opening) else {
                    return;
                };
                sub.state = State::Idle;
                let error = r.error.map(Error::from_object).unwrap_or(Error::Closed);
                let for_now = matches!(
                    error.code(),
                    Some(
                        ErrorCode::NotReady
                            | ErrorCode::ShuttingDown
                            | ErrorCode::BrokerUnavailable
                    )
                );
                if for_now {
                    tracing::debug!(%error, "streamgate: subscription refused; again later");
                    sub.retry_at = Some(Instant::now() + sub.backoff.pause(None));
                } else {
                    let sub = self.subs.remove(&stream).expect("present");
                    let _ = sub.frames.try_send(Err(error));
                }
            }
            Frame::Unsubscribed(u) => {
                let stream = u.stream_id;
                if self.leaving.remove(&stream) {
                    // The answer to the subscriber's unsubscribe: a new subscription of the
                    // stream may have waited for it.
                    if let Some(sub) = self.subs.get_mut(&stream) {
                        if sub.state == State::Idle && !sub.paused() {
                            subscribe(stream, sub, out);
                        }
                    }
                    return;
                }
                let Some(sub) = self.subs.get_mut(&stream) else {
                    return;
                };
                if u.error.is_some() {
                    // Ended by the daemon (not asked for): again from the cursor, later.
                    sub.state = State::Idle;
                    sub.retry_at = Some(Instant::now() + sub.backoff.pause(None));
                } else if sub.state == State::Closing {
                    // The pause's unsubscribe is done: nothing of the old subscription
                    // follows.
                    sub.state = State::Idle;
                    if !sub.paused() {
                        subscribe(stream, sub, out);
                    }
                }
            }
            Frame::Lagged(l) => {
                let Some(sub) = self.open(l.stream_id, State::Open) else {
                    return;
                };
                let resume = l.resume_from - 1;
                sub.last = Some(sub.last.map_or(resume, |last| last.max(resume)));
                sub.state = State::Idle;
                subscribe(l.stream_id, sub, out);
            }
            Frame::CaughtUp(s) => {
                // Believed of an open subscription only: one being unsubscribed (paused)
                // dropped frames before it, and is subscribed again from its cursor.
                if self.open(s.stream_id, State::Open).is_some() {
                    self.subs.remove(&s.stream_id); // its queue closes: the stream ends
                }
            }
            Frame::Ack(ack) => {
                if let Some(u) = self.unanswered.remove(&ack.seq) {
                    self.later_backoff.reset();
                    let _ = u.reply.send(Ok(ack));
                }
            }
            Frame::Nack(nack) => {
                let Some(u) = self.unanswered.remove(&nack.seq) else {
                    return;
                };
                let later = matches!(
                    nack.error.code,
                    ErrorCode::ShuttingDown
                        | ErrorCode::BrokerUnavailable
                        | ErrorCode::BacklogFull
                        | ErrorCode::RateLimited
                        | ErrorCode::NotReady
                        | ErrorCode::IdempotencyKeyInFlight
                );
                if later {
                    self.later.push(u);
                    if self.later_at.is_none() {
                        self.later_at = Some(Instant::now() + self.later_backoff.pause(None));
                    }
                } else {
                    let _ = u.reply.send(Err(Error::from_object(nack.error)));
                }
            }
            // This client renews a token with a new connection, never with `auth`.
            Frame::Authenticated(_) => {}
            Frame::Invalid(i) => {
                tracing::warn!(error = %i.error.message, "streamgate: the daemon could not read a frame");
            }
        }
    }

    /// The stream's subscription, when it is in `state` and not being left.
    fn open(&mut self, stream: Uuid, state: State) -> Option<&mut Sub> {
        if self.leaving.contains(&stream) {
            return None;
        }
        self.subs.get_mut(&stream).filter(|s| s.state == state)
    }

    /// Hands a stream's frame at `cursor` to its consumer, unless it was handed on before.
    /// A consumer whose queue is full is paused: unsubscribed, and subscribed again from
    /// its cursor once it reads on.
    fn deliver(
        &mut self,
        stream: Uuid,
        cursor: Option<i64>,
        frame: Frame,
        out: &mut Vec<ClientFrame>,
    ) {
        let Some(sub) = self.open(stream, State::Open) else {
            return; // not subscribed, or frames still on their way after an unsubscribe
        };
        if let (Some(c), Some(last)) = (cursor, sub.last) {
            if c <= last {
                return;
            }
        }
        let end = matches!(frame, Frame::End(_));
        match sub.frames.try_send(Ok(frame)) {
            Ok(()) => {
                if let Some(c) = cursor {
                    sub.last = Some(c);
                }
                sub.backoff.reset();
                if end {
                    self.subs.remove(&stream); // its queue closes after the end frame
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                sub.paused.store(true, Ordering::Release);
                sub.state = State::Closing;
                out.push(ClientFrame::Unsubscribe { stream_id: stream });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.subs.remove(&stream);
                out.push(ClientFrame::Unsubscribe { stream_id: stream });
                self.leaving.insert(stream);
            }
        }
    }
}

fn dropped(why: &str, expired: bool, heard: bool) -> Ended {
    Ended::Dropped {
        why: why.to_string(),
        expired,
        heard,
    }
}

/// Whether a refused handshake will be refused again: a 4xx but a timeout or a 429.
fn refused_for_good(e: &Error) -> bool {
    match e {
        Error::Server {
            status: Some(status),
            ..
        } => status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429,
        Error::Server { code, .. } => !e.is_transient() && *code != ErrorCode::Internal,
        Error::Unreadable { .. } | Error::Closed => true,
        Error::Token(_) => true,
        Error::Connect { .. } | Error::Transport { .. } => false,
    }
}

/// Writes the subscription's `subscribe` frame; it is opening.
fn subscribe(stream: Uuid, sub: &mut Sub, out: &mut Vec<ClientFrame>) {
    sub.state = State::Opening;
    out.push(ClientFrame::Subscribe {
        stream_id: stream,
        from: sub.from(),
        on_lag: sub.options.on_lag,
        until: sub.options.until_now.then(|| "now".to_string()),
    });
}

/// Resolves at `at`, or never without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
