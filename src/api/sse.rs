//! The results stream as Server-Sent Events, for browsers (`EventSource`) and `curl -N`: the
//! same delivery `Feed` as the WebSocket, written as events. Each frame is one event: `event:`
//! its type, `id:` its cursor (results, errors and the end), `data:` the frame's JSON. The
//! stream opens with `retry:` and sends a keep-alive comment when idle.
//!
//! A resume (`Last-Event-ID`, which `EventSource` sends by itself when it reconnects, or
//! `?from=`) gets the same replay-then-live guarantee. How the feed ended is the last event:
//! `lagged` with `{"resume": cursor}` for a subscriber that read too slowly (`on_lag=close`),
//! `close` with `{"code", "reason"}` otherwise (1001 when the daemon stops); after an `end`
//! frame the response simply ends.

use std::convert::Infallible;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use serde_json::json;
use warp::sse::Event;

use crate::delivery::{Feed, Item};
use crate::quota::Seat;
use crate::wire::{Close, Kind};

/// What `EventSource` waits before it reconnects.
pub(super) const RETRY: Duration = Duration::from_secs(1);
/// Longest silence before a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The SSE response for `feed`; `seat` (the subscriber's place under its key's cap) is held
/// until the response ends.
pub fn respond(feed: Feed, seat: Seat) -> warp::reply::Response {
    let opening = stream::once(async { Event::default().retry(RETRY) });
    let events = feed.scan(false, |ended, item| {
        let event = match (*ended, item) {
            (true, _) => None,
            (false, Item::Frame(d)) => {
                let event = Event::default()
                    .event(d.kind.as_str())
                    .data(d.frame.as_str());
                Some(match d.kind {
                    Kind::Gap => event,
                    _ => event.id(d.cursor.to_string()),
                })
            }
            (false, Item::Closed(Close::Ended)) => None,
            (false, Item::Closed(close)) => {
                *ended = true;
                Some(closing(&close))
            }
        };
        futures_util::future::ready(event)
    });
    let events = opening.chain(events).map(move |e| {
        let _held = &seat;
        Ok::<_, Infallible>(e)
    });
    reply(events)
}

/// An SSE response of `events`, with keep-alive comments when idle.
pub(super) fn reply(
    events: impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> warp::reply::Response {
    // warp wants a `Sync` stream; ours are only `Send`, and are polled from one place.
    let events = sync_wrapper::SyncStream::new(events);
    warp::reply::Reply::into_response(warp::sse::reply(
        warp::sse::keep_alive().interval(KEEP_ALIVE).stream(events),
    ))
}

/// The last event: why the feed ended.
pub(super) fn closing(close: &Close) -> Event {
    match close {
        Close::Lagged { resume } => Event::default()
            .event("lagged")
            .data(json!({ "resume": resume, "reason": close.reason() }).to_string()),
        other => Event::default()
            .event("close")
            .data(json!({ "code": other.code(), "reason": other.reason() }).to_string()),
    }
}
