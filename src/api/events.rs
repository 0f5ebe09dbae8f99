//! `GET /api/events?stream_id=A&stream_id=B`: several streams' results as one Server-Sent
//! Events response, for a browser that would otherwise need one `EventSource` per stream
//! (HTTP/1.1 allows six connections per host). Each stream is a subscription of its own,
//! opened as on `/api/connect` and read through one `Mux`; the events are those of the
//! single-stream route, each frame naming its stream.
//!
//! Where to start: `from` applies to every stream of the request, `cursor=ID:N` starts one
//! stream at cursor N. Each event's `id:` lists the last cursor delivered of every stream,
//! in the order of the request's `stream_id`s (`-` for none yet), so the `Last-Event-ID` an
//! `EventSource` sends when it reconnects resumes every stream right after its own cursor.
//! A stream that cannot be followed gets a `refused` event and the others go on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use serde_json::json;
use uuid::Uuid;
use warp::sse::Event;

use super::error::ApiError;
use super::sse::{closing, reply, RETRY};
use super::subscriber::{open, Opening, SubscribeArgs};
use super::AppState;
use crate::auth::Principal;
use crate::delivery::StartAt;
use crate::delivery::{Item, Mux};
use crate::lifecycle::{Phase, PhaseWatch};
use crate::quota::Seat;
use crate::wire::{Close, ErrorCode, ErrorObject, Kind};

/// The streams of a request, in its order, each with where it starts.
pub(super) fn streams(
    query: &[(String, String)],
    last_event_id: Option<&str>,
    max: usize,
) -> Result<Vec<(Uuid, SubscribeArgs)>, ApiError> {
    let invalid = |m: String| ApiError::InvalidInput(m);
    let mut ids: Vec<Uuid> = Vec::new();
    let mut common = HashMap::new();
    let mut cursors = HashMap::new();
    for (key, value) in query {
        match key.as_str() {
            "stream_id" => {
                let id = Uuid::parse_str(value)
                    .map_err(|_| invalid(format!("stream_id: `{value}` is not a stream id")))?;
                if ids.contains(&id) {
                    return Err(invalid(format!("stream_id: {id} is given twice")));
                }
                ids.push(id);
            }
            "cursor" => {
                let parsed = value
                    .split_once(':')
                    .and_then(|(id, n)| Some((Uuid::parse_str(id).ok()?, n.parse::<i64>().ok()?)))
                    .filter(|(_, n)| *n >= 0);
                let (id, n) = parsed
                    .ok_or_else(|| invalid(format!("cursor: `{value}` is not STREAM_ID:CURSOR")))?;
                cursors.insert(id, n);
            }
            "from" | "on_lag" | "until" => {
                common.insert(key.clone(), value.clone());
            }
            // Credentials and anything else a URL picks up are not ours to refuse.
            _ => {}
        }
    }
    if ids.is_empty() || ids.len() > max {
        return Err(invalid(format!(
            "give 1 to {max} stream_id parameters (limits.max_subscriptions_per_connection), \
             got {}",
            ids.len()
        )));
    }
    if let Some(id) = cursors.keys().find(|id| !ids.contains(id)) {
        return Err(invalid(format!(
            "cursor: {id} is not one of the stream_ids"
        )));
    }
    let resumed = match last_event_id {
        Some(last) => {
            let parts: Vec<&str> = last.split(',').map(str::trim).collect();
            let parse = |p: &&str| match *p {
                "-" => Ok(None),
                c => c
                    .parse::<i64>()
                    .ok()
                    .filter(|c| *c >= 0)
                    .map(Some)
                    .ok_or(()),
            };
            let resumed: Result<Vec<Option<i64>>, ()> = parts.iter().map(parse).collect();
            match resumed {
                Ok(r) if r.len() == ids.len() => r,
                _ => {
                    return Err(invalid(format!(
                        "Last-Event-ID: `{last}` is not one cursor (or -) per stream_id"
                    )))
                }
            }
        }
        None => vec![None; ids.len()],
    };
    let base = SubscribeArgs::from_query(&common, None)?;
    Ok(ids
        .into_iter()
        .zip(resumed)
        .map(|(id, last)| {
            let start = match (last, cursors.get(&id)) {
                (Some(last), _) => StartAt::Cursor(last + 1),
                (None, Some(n)) => StartAt::Cursor(*n),
                (None, None) => base.start,
            };
            (id, SubscribeArgs { start, ..base })
        })
        .collect())
}

/// What the response keeps between events.
struct Many {
    order: Vec<Uuid>,
    /// The last cursor delivered of each stream, in `order`.
    cursors: Vec<Option<i64>>,
    mux: Mux,
    seats: HashMap<Uuid, Seat>,
    opening: FuturesUnordered<Opening>,
    phase: PhaseWatch,
    drained: bool,
    /// When the caller's credential ends: the response ends with a `close` event then.
    ends: BoxFuture<'static, Close>,
    done: bool,
}

/// The response for `streams`, each opened as a subscription of `caller`.
pub(super) fn respond(
    state: Arc<AppState>,
    caller: Principal,
    streams: Vec<(Uuid, SubscribeArgs)>,
) -> warp::reply::Response {
    let opening = FuturesUnordered::new();
    for (id, args) in &streams {
        let id = *id;
        opening.push(
            open(state.clone(), caller.clone(), id, *args)
                .map(move |opened| (id, opened))
                .boxed(),
        );
    }
    let many = Many {
        order: streams.iter().map(|(id, _)| *id).collect(),
        cursors: vec![None; streams.len()],
        mux: Mux::default(),
        seats: HashMap::new(),
        opening,
        phase: state.phase.clone(),
        drained: false,
        ends: state.credential_end(&caller),
        done: false,
    };
    let first = stream::once(async { Event::default().retry(RETRY) });
    let events = stream::unfold(many, |mut m| async move {
        let event = m.next().await?;
        Some((event, m))
    });
    reply(first.chain(events).map(Ok::<_, Infallible>))
}

impl Many {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            if self.mux.is_empty() && self.opening.is_empty() {
                self.done = true;
                // Every subscription ended on its own (its `end`, a lag, a refusal), or the
                // daemon is stopping.
                return self.drained.then(|| closing(&Close::ShuttingDown));
            }
            tokio::select! {
                Some((stream, opened)) = self.opening.next(), if !self.opening.is_empty() => {
                    match opened {
                        Ok((feed, seat)) => {
                            self.mux.add(stream, feed);
                            self.seats.insert(stream, seat);
                        }
                        Err(e) => return Some(event("refused", json!({"stream_id": stream, "error": e.to_object()}))),
                    }
                }
                (stream, item) = self.mux.next() => {
                    if let Some(event) = self.delivered(stream, item) {
                        return Some(event);
                    }
                }
                close = &mut self.ends => {
                    self.done = true;
                    return Some(closing(&close));
                }
                _ = self.phase.reached(Phase::Drained), if !self.drained => self.drained = true,
            }
        }
    }

    fn delivered(&mut self, stream: Uuid, item: Item) -> Option<Event> {
        let close = match item {
            Item::Frame(d) => {
                let event = Event::default()
                    .event(d.kind.as_str())
                    .data(d.frame.as_str());
                if d.kind == Kind::Gap {
                    return Some(event);
                }
                if let Some(i) = self.order.iter().position(|s| *s == stream) {
                    self.cursors[i] = Some(d.cursor);
                }
                return Some(event.id(self.last_event_id()));
            }
            Item::Closed(close) => close,
        };
        self.seats.remove(&stream);
        match close {
            Close::Ended | Close::ShuttingDown => None,
            Close::Lagged { resume } => Some(event(
                "lagged",
                json!({"stream_id": stream, "resume_from": resume}),
            )),
            Close::CaughtUp => Some(event("caught_up", json!({"stream_id": stream}))),
            close @ (Close::TokenExpired | Close::TokenRevoked | Close::CredentialRevoked) => {
                self.done = true;
                Some(closing(&close))
            }
            other => Some(event(
                "unsubscribed",
                json!({"stream_id": stream, "error": ErrorObject::new(ErrorCode::Internal, other.reason())}),
            )),
        }
    }

    /// Every stream's last cursor, in the request's order.
    fn last_event_id(&self) -> String {
        let parts: Vec<String> = self
            .cursors
            .iter()
            .map(|c| c.map_or_else(|| "-".to_string(), |c| c.to_string()))
            .collect();
        parts.join(",")
    }
}

fn event(kind: &str, data: serde_json::Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, String)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn streams_start_from_the_request_then_from_last_event_id() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let query = q(&[
            ("stream_id", a.to_string()),
            ("stream_id", b.to_string()),
            ("from", "earliest".into()),
            ("cursor", format!("{b}:7")),
        ]);
        let s = streams(&query, None, 10).unwrap();
        assert_eq!(s[0].1.start, StartAt::Earliest);
        assert_eq!(s[1].1.start, StartAt::Cursor(7));
        let s = streams(&query, Some("12,-"), 10).unwrap();
        assert_eq!(s[0].1.start, StartAt::Cursor(13));
        assert_eq!(
            s[1].1.start,
            StartAt::Cursor(7),
            "no cursor yet: as first asked"
        );
        assert!(streams(&query, Some("12"), 10).is_err(), "one per stream");
        assert!(streams(&query, None, 1).is_err(), "over the limit");
        let twice = q(&[("stream_id", a.to_string()), ("stream_id", a.to_string())]);
        assert!(streams(&twice, None, 10).is_err());
        assert!(streams(&q(&[("stream_id", "x".into())]), None, 10).is_err());
    }
}
