//! A results subscriber, as both transports (the WebSocket in `ws.rs`, Server-Sent Events
//! in `sse.rs`) open it: the query checked, the live subscription taken, a seat under the
//! key's cap, and the feed (replay, then live) made once the transport is ready.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::access::owned;
use super::AppState;
use crate::auth::{Need, Principal};
use crate::delivery::replay::Replayed;
use crate::delivery::{Feed, InvalidParam, OnLag, StartAt, Subscription};
use crate::error::ApiError;
use crate::lifecycle::PhaseWatch;
use crate::limits::Seat;
use crate::registry::StreamEntry;
use crate::tokens::Grant;
use crate::wire::Scope;

/// A results subscriber, as both transports open it: the stream, its place under the key's
/// cap, whether it may also send (a key, or a token with `send`), and its feed to open.
pub(super) struct Subscriber {
    pub entry: Arc<StreamEntry>,
    pub seat: Seat,
    pub may_send: bool,
    pub feed: FeedRequest,
}

/// What a subscriber's feed is made of: where to start, the live subscription (taken
/// first), whether it follows live results, and a token's remaining life.
pub(super) struct FeedRequest {
    start: StartAt,
    until_now: bool,
    live: Subscription,
    expires_in: Option<Duration>,
}

impl FeedRequest {
    /// Opens the replay, then makes the feed: replay, then live results unless `until=now`;
    /// it closes (4401) when the token expires.
    pub async fn open(self, state: &AppState, stream: uuid::Uuid) -> Result<Feed, ApiError> {
        let replay: Replayed = state
            .archive
            .replay(stream, self.start)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let phase: PhaseWatch = state.phase.clone();
        let feed = match self.until_now {
            true => Feed::until_now(Some(replay), self.live, phase),
            false => Feed::new(Some(replay), self.live, phase),
        };
        Ok(match self.expires_in {
            Some(left) => feed.expiring_in(left),
            None => feed,
        })
    }
}

/// Checks the query (`from`, `on_lag`, `until`; for SSE also `Last-Event-ID`, the last
/// cursor the client got) and subscribes.
pub(super) async fn subscriber(
    id: &str,
    caller: &Principal,
    state: &AppState,
    query: &HashMap<String, String>,
    last_event_id: Option<&str>,
) -> Result<Subscriber, ApiError> {
    let entry = owned(state, id, caller, Need::Scope(Scope::Subscribe)).await?;
    let invalid = |e: InvalidParam| ApiError::InvalidInput(e.to_string());
    // `Last-Event-ID` wins over `from`: it is what `EventSource` sends when it reconnects to
    // the URL it was opened with, so `?from=earliest` must not replay everything again.
    let start = match (query.get("from"), last_event_id) {
        (_, Some(last)) => match last.trim().parse::<i64>() {
            Ok(cursor) if cursor >= 0 => StartAt::Cursor(cursor + 1),
            _ => {
                return Err(ApiError::InvalidInput(format!(
                    "Last-Event-ID: `{last}` is not a cursor"
                )))
            }
        },
        (from, None) => StartAt::parse(from.map(String::as_str)).map_err(invalid)?,
    };
    let on_lag = OnLag::parse(query.get("on_lag").map(String::as_str)).map_err(invalid)?;
    let until_now = match query.get("until").map(String::as_str) {
        None => false,
        Some("now") => true,
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "until: `{other}` is not `now` (the only end there is)"
            )))
        }
    };
    let seat = state
        .subscriber_seats
        .take(&caller.name)
        .ok_or(ApiError::TooManySubscribers {
            limit: state.limits.max_subscribers_per_key,
        })?;
    let live = state.router.subscribe(entry.id, on_lag);
    // Before the replay measures where it ends, so live delivery covers everything after.
    state
        .router
        .read_partition_of(&entry.id)
        .await
        .map_err(|e| ApiError::BrokerUnavailable {
            message: e.to_string(),
            acknowledged: 0,
        })?;
    let grant = caller.grant.as_ref();
    Ok(Subscriber {
        entry,
        seat,
        may_send: grant.is_none_or(|g| g.allows(Scope::Send)),
        feed: FeedRequest {
            start,
            until_now,
            live,
            expires_in: grant.map(Grant::remaining),
        },
    })
}
