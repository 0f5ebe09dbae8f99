//! A results subscriber, as both transports (the WebSocket in `ws.rs`, Server-Sent Events
//! in `sse.rs`) open it: the query checked, the live subscription taken, a seat under the
//! key's cap, and the feed (replay, then live) made once the transport is ready.

use std::collections::HashMap;
use std::sync::Arc;

use super::access::owned;
use super::error::ApiError;
use super::AppState;
use crate::auth::{Need, Principal};
use crate::delivery::replay::Replayed;
use crate::delivery::{Feed, OnLag, StartAt, Subscription};
use crate::lifecycle::PhaseWatch;
use crate::quota::Seat;
use crate::registry::StreamEntry;
use crate::wire::{Close, LagPolicy, Scope, StartFrom};
use futures_util::future::BoxFuture;

/// A results subscriber, as both transports open it: the stream, its place under the key's
/// cap, whether it may also send (a key, or a token with `send`), and its feed to open.
pub(super) struct Subscriber {
    pub entry: Arc<StreamEntry>,
    pub seat: Seat,
    pub may_send: bool,
    pub feed: FeedRequest,
    /// When the caller's credential ends (a single-stream connection closes then; a
    /// many-stream one watches its credential itself).
    pub ends: BoxFuture<'static, Close>,
}

/// What a subscriber's feed is made of: where to start, the live subscription (taken
/// first), and whether it follows live results.
pub(super) struct FeedRequest {
    start: StartAt,
    until_now: bool,
    live: Subscription,
}

impl FeedRequest {
    /// Opens the replay, then makes the feed: replay, then live results unless `until=now`.
    pub async fn open(self, state: &AppState, stream: uuid::Uuid) -> Result<Feed, ApiError> {
        let replay: Replayed = state.archive.replay(stream, self.start).await?;
        let phase: PhaseWatch = state.phase.clone();
        let feed = match self.until_now {
            true => Feed::until_now(Some(replay), self.live, phase),
            false => Feed::new(Some(replay), self.live, phase),
        };
        Ok(feed)
    }
}

/// Where a subscription starts, what happens when it lags, whether it follows live results:
/// from a results request's query, or from a `subscribe` frame, with one meaning.
#[derive(Debug, Clone, Copy)]
pub(super) struct SubscribeArgs {
    pub start: StartAt,
    pub on_lag: OnLag,
    pub until_now: bool,
}

fn until_now(until: Option<&str>) -> Result<bool, ApiError> {
    match until {
        None => Ok(false),
        Some("now") => Ok(true),
        Some(other) => Err(ApiError::InvalidInput(format!(
            "until: `{other}` is not `now` (the only end there is)"
        ))),
    }
}

impl SubscribeArgs {
    /// From the query (`from`, `on_lag`, `until`) and, for SSE, `Last-Event-ID` (the last
    /// cursor the client got), which wins over `from`: it is what `EventSource` sends when it
    /// reconnects to the URL it was opened with, so `?from=earliest` must not replay
    /// everything again.
    pub fn from_query(
        query: &HashMap<String, String>,
        last_event_id: Option<&str>,
    ) -> Result<Self, ApiError> {
        let start = match (query.get("from"), last_event_id) {
            (_, Some(last)) => match last.trim().parse::<i64>() {
                Ok(cursor) if cursor >= 0 => StartAt::Cursor(cursor + 1),
                _ => {
                    return Err(ApiError::InvalidInput(format!(
                        "Last-Event-ID: `{last}` is not a cursor"
                    )))
                }
            },
            (from, None) => StartAt::parse(from.map(String::as_str)).map_err(ApiError::from)?,
        };
        Ok(Self {
            start,
            on_lag: OnLag::parse(query.get("on_lag").map(String::as_str))
                .map_err(ApiError::from)?,
            until_now: until_now(query.get("until").map(String::as_str))?,
        })
    }

    /// From a `subscribe` frame of `/api/connect`.
    pub fn from_frame(
        from: Option<&StartFrom>,
        on_lag: LagPolicy,
        until: Option<&str>,
    ) -> Result<Self, ApiError> {
        let from = from.map(StartFrom::as_param);
        Ok(Self {
            start: StartAt::parse(from.as_deref()).map_err(ApiError::from)?,
            on_lag: match on_lag {
                LagPolicy::Close => OnLag::Close,
                LagPolicy::Skip => OnLag::Skip,
            },
            until_now: until_now(until)?,
        })
    }
}

/// Subscribes `caller` to stream `id`: the stream is the caller's (and within a token's
/// scope), a seat is free under the key's cap, the live subscription is taken and the
/// stream's results partition read, all before the feed (the replay) is opened.
pub(super) async fn subscriber(
    id: &str,
    caller: &Principal,
    state: &Arc<AppState>,
    args: SubscribeArgs,
) -> Result<Subscriber, ApiError> {
    let entry = owned(state, id, caller, Need::Scope(Scope::Subscribe)).await?;
    let seat = state
        .subscriber_seats
        .take(&caller.name)
        .ok_or(ApiError::TooManySubscribers {
            limit: state.config().limits.delivery.max_subscribers_per_key,
        })?;
    let live = state.router.subscribe(entry.id, args.on_lag);
    // Before the replay measures where it ends, so live delivery covers everything after.
    state.router.read_partition_of(&entry.id).await?;
    let grant = caller.grant.as_ref();
    Ok(Subscriber {
        entry,
        seat,
        may_send: grant.is_none_or(|g| g.allows(Scope::Send)),
        feed: FeedRequest {
            start: args.start,
            until_now: args.until_now,
            live,
        },
        ends: state.credential_end(caller),
    })
}

/// A subscription of a many-stream connection being opened, and its stream.
pub(super) type Opening =
    futures_util::future::BoxFuture<'static, (uuid::Uuid, Result<(Feed, Seat), ApiError>)>;

/// A subscription of a connection that follows many streams (`/api/connect`,
/// `/api/events`), opened all the way: subscribed, then its replay opened. Owns what it
/// needs, so connections open several at once.
pub(super) async fn open(
    state: Arc<AppState>,
    caller: Principal,
    stream: uuid::Uuid,
    args: SubscribeArgs,
) -> Result<(Feed, Seat), ApiError> {
    let sub = subscriber(&stream.to_string(), &caller, &state, args).await?;
    let feed = sub.feed.open(&state, stream).await?;
    Ok((feed, sub.seat))
}
