//! The stats feed behind `streamctl top`: one snapshot of this instance, its broker, totals
//! and the caller's open streams (all of them for an admin key), as JSON on request
//! (`GET /api/stats`) or pushed over a WebSocket every interval (`GET /api/stats/live`), so a
//! dashboard costs one request however long it stays open and never competes with the
//! caller's sends for rate-limit tokens. Counters are totals; clients derive rates from two
//! snapshots.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Rejection;

use super::error::{json, reject, ApiError};
use super::routes;
use super::upgrade::{Socket, Upgrade};
use super::ws::Peer;
use super::AppState;
use crate::auth::{self, Principal};
use crate::lifecycle::Phase;
use crate::wire::{BrokerView, Close, ErrorBody, Percentiles, Stats, StatsRow, Totals};

/// Push interval of the live feed unless the client asks: `?interval_ms=`.
const DEFAULT_INTERVAL_MS: u64 = 1_000;
/// Fastest push interval a client may ask for.
const MIN_INTERVAL_MS: u64 = 200;

/// The snapshot of every open stream, computed at most once per `MIN_INTERVAL_MS` however
/// many callers and live watchers ask, then cut down to what each caller may see and
/// serialized once per view: fifty dashboards cost what one does. A stream started or ended
/// makes it stale at once, so a caller always sees its own changes. It also counts each
/// key's live watchers, whose pushes share `limits.stats_live_bytes_per_s`.
#[derive(Default)]
pub struct SharedStats {
    last: tokio::sync::Mutex<Option<Arc<Snapshot>>>,
    watchers: std::sync::Mutex<HashMap<String, usize>>,
}

/// One computed snapshot and its views as sent (`None`: an admin's, everything).
struct Snapshot {
    at: Instant,
    generation: u64,
    stats: Arc<Stats>,
    rendered: std::sync::Mutex<HashMap<Option<String>, Utf8Bytes>>,
}

impl SharedStats {
    async fn full(&self, state: &AppState) -> Arc<Snapshot> {
        // Held while computing: concurrent askers wait for this one instead of computing too.
        let mut last = self.last.lock().await;
        let generation = state.registry.generation();
        if let Some(snap) = &*last {
            let fresh = snap.at.elapsed() < Duration::from_millis(MIN_INTERVAL_MS);
            if fresh && snap.generation == generation {
                return snap.clone();
            }
        }
        let snap = Arc::new(Snapshot {
            at: Instant::now(),
            generation,
            stats: Arc::new(compute(state).await),
            rendered: Default::default(),
        });
        *last = Some(snap.clone());
        snap
    }

    /// The caller's view of the current snapshot as JSON text, serialized once per view (a
    /// shared buffer: every watcher of the view is sent the same bytes).
    async fn rendered(&self, caller: &Principal, state: &AppState) -> Utf8Bytes {
        let snap = self.full(state).await;
        let view = (!caller.admin).then(|| caller.name.clone());
        let mut rendered = snap.rendered.lock().expect("stats views");
        rendered
            .entry(view)
            .or_insert_with(|| {
                let stats = view_of(&snap.stats, caller);
                Utf8Bytes::from(serde_json::to_string(&stats).expect("stats serialize"))
            })
            .clone()
    }

    /// Counts one more live watcher of `key` until the guard drops; says how many there are.
    fn watch(self: &Arc<Self>, key: &str) -> Watching {
        *self
            .watchers
            .lock()
            .expect("stats watchers")
            .entry(key.to_string())
            .or_default() += 1;
        Watching {
            stats: self.clone(),
            key: key.to_string(),
        }
    }
}

/// One live watcher, counted in [`SharedStats`] while it lives.
struct Watching {
    stats: Arc<SharedStats>,
    key: String,
}

impl Watching {
    /// The key's live watchers now, this one included.
    fn of_key(&self) -> usize {
        let watchers = self.stats.watchers.lock().expect("stats watchers");
        watchers.get(&self.key).copied().unwrap_or(1)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut watchers = self.stats.watchers.lock().expect("stats watchers");
        if let Some(n) = watchers.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                watchers.remove(&self.key);
            }
        }
    }
}

/// How long a live watcher waits before its next push: what it asked for, or longer when
/// its key's watchers would together be sent more than `budget` bytes per second.
fn next_push(asked: Duration, sent_bytes: usize, watchers: usize, budget: u64) -> Duration {
    let share = sent_bytes as f64 * watchers as f64 / budget as f64;
    asked.max(Duration::from_secs_f64(share))
}

async fn compute(state: &AppState) -> Stats {
    let streams: Vec<StatsRow> = state
        .registry
        .all()
        .iter()
        .filter(|e| e.is_open())
        .map(|e| StatsRow {
            stream: e.view(),
            backlog: state.router.backlog(&e.id),
        })
        .collect();
    Stats {
        now_ms: crate::kafka::now_ms(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: state.started.elapsed().as_secs(),
        broker: BrokerView {
            bootstrap: state.broker.bootstrap().to_string(),
            embedded: state.broker.embedded(),
            reachable: state.broker.reachable().await,
        },
        totals: totals(
            &streams,
            state.metrics.delivery.recent_end_to_end.snapshot(),
        ),
        streams,
    }
}

fn totals(streams: &[StatsRow], latency_ms: Percentiles) -> Totals {
    let sum = |field: fn(&StatsRow) -> u64| -> u64 { streams.iter().map(field).sum() };
    Totals {
        streams: streams.len() as u64,
        subscribers: sum(|r| r.stream.subscribers),
        records_in: sum(|r| r.stream.records_in),
        records_out: sum(|r| r.stream.records_out),
        latency_ms,
    }
}

/// One snapshot as the caller may see it: all streams for an admin key, else its own.
pub async fn snapshot(caller: &Principal, state: &AppState) -> Stats {
    view_of(&state.stats.full(state).await.stats, caller)
}

fn view_of(full: &Stats, caller: &Principal) -> Stats {
    if caller.admin {
        return full.clone();
    }
    let streams: Vec<StatsRow> = full
        .streams
        .iter()
        .filter(|r| r.stream.owner == caller.name)
        .cloned()
        .collect();
    Stats {
        totals: totals(&streams, full.totals.latency_ms),
        streams,
        broker: full.broker.clone(),
        version: full.version.clone(),
        ..*full
    }
}

/// What `streamctl top` shows, once.
#[utoipa::path(
    get, path = routes::STATS.path, tag = "operations", operation_id = "stats",
    responses(
        (status = 200, description = "A snapshot.", body = Stats),
        (status = 403, description = "`forbidden`: a token cannot read stats.", body = ErrorBody),
    )
)]
pub async fn once(caller: Principal, state: Arc<AppState>) -> Result<Response, Rejection> {
    let body = snapshot(&caller, &state).await;
    Ok(json(StatusCode::OK, &body))
}

/// The stats pushed over a WebSocket every `interval_ms`.
///
/// A snapshot now and every interval after, until the client closes or the daemon shuts
/// down (1001).
#[utoipa::path(
    get, path = routes::STATS_LIVE.path, tag = "operations", operation_id = "stats_live",
    params(("interval_ms" = Option<u64>, Query, description = "At least 200 (default 1000).")),
    responses(
        (status = 101, description = "WebSocket: one `Stats` text frame per interval."),
        (status = 400, description = "`invalid_input`: not a WebSocket upgrade, or a bad interval.", body = ErrorBody),
        (status = 403, description = "`forbidden`.", body = ErrorBody),
    )
)]
pub async fn live(
    caller: Principal,
    state: Arc<AppState>,
    upgrade: Upgrade,
    protocols: Option<String>,
    query: HashMap<String, String>,
) -> Result<Response, Rejection> {
    let interval_ms = match query.get("interval_ms") {
        None => DEFAULT_INTERVAL_MS,
        Some(v) => v.parse::<u64>().ok().filter(|ms| *ms >= MIN_INTERVAL_MS).ok_or_else(|| {
            reject(ApiError::InvalidInput(format!(
                "interval_ms: `{v}` must be a whole number of milliseconds, at least {MIN_INTERVAL_MS}"
            )))
        })?,
    };
    let protocol = auth::ws_response_protocol(protocols.as_deref());
    let max_message = state.config().limits.websocket.ws_max_message_bytes;
    Ok(upgrade.respond(protocol, max_message, move |socket| {
        push(socket, state, caller, Duration::from_millis(interval_ms))
    }))
}

async fn push(socket: Socket, state: Arc<AppState>, caller: Principal, interval: Duration) {
    let (sink, mut source) = socket.split();
    let idle_timeout = state.config().limits.websocket.idle_timeout();
    let mut peer = Peer { sink, idle_timeout };
    let budget = state.config().limits.delivery.stats_live_bytes_per_s;
    let watching = state.stats.watch(&caller.name);
    let mut due = tokio::time::Instant::now();
    let mut phase = state.phase.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {
                let text = state.stats.rendered(&caller, &state).await;
                let wait = next_push(interval, text.len(), watching.of_key(), budget);
                if peer.send(Message::Text(text)).await.is_err() {
                    return;
                }
                due = tokio::time::Instant::now() + wait;
            }
            msg = source.next() => match msg {
                // Pings are answered by tungstenite; anything else from the client is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = phase.reached(Phase::Drained) => {
                peer.close(&Close::ShuttingDown).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_s_watchers_share_the_byte_budget() {
        let asked = Duration::from_millis(200);
        assert_eq!(
            next_push(asked, 10_000, 50, 4 << 20),
            asked,
            "small: as asked"
        );
        // The abuse case: 50 watchers of a 1.26 MB snapshot.
        let stretched = next_push(asked, 1_260_000, 50, 4 << 20);
        assert!(stretched > Duration::from_secs(15), "{stretched:?}");
        let total = 50.0 * 1_260_000.0 / stretched.as_secs_f64();
        assert!(total <= (4 << 20) as f64 + 1.0, "{total} bytes/s");
    }
}
