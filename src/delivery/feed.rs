//! One subscriber's feed: the stream's past results (a replay, when the subscriber asked for
//! `from`), then its live results, then why it ended. Every transport writes a feed out as
//! it comes, so the replay→live handover is implemented once, here.
//!
//! The live subscription is taken *before* the replay is opened: live results queue up while
//! the replay runs, and the replay stops at the high watermark it saw when it opened. Live
//! frames at or below the last replayed cursor are dropped, so the switch has no gap and no
//! duplicate. The feed ends after an `end` frame (`Close::Ended`), when the router detached a
//! subscriber that read too slowly (`Close::Lagged` with the cursor to resume from), or when
//! the replay or the router fails (`Close::Internal`).
//!
//! As the daemon stops (see `lifecycle`), a feed ends with `Close::ShuttingDown`: once the
//! daemon is drained, as soon as everything routed to the subscriber was yielded (a replay
//! still running ends at once: the subscriber resumes from its last cursor); at `Stopping`,
//! whatever is left.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use tokio::sync::mpsc;

use super::replay::Replayed;
use super::{Delivery, Subscription};
use crate::lifecycle::{Phase, PhaseWatch};
use crate::wire::{Close, Kind};

/// What a feed yields: a frame to write, then (last) why it ended.
#[derive(Debug, Clone)]
pub enum Item {
    Frame(Delivery),
    Closed(Close),
}

/// A subscriber's frames, replay then live; a `Stream` of [`Item`]s. Cancel-safe: a `next()`
/// dropped half-way loses nothing.
pub struct Feed {
    items: BoxStream<'static, Item>,
}

struct State {
    replay: Option<Replayed>,
    live: Subscription,
    /// Whether live results follow the replay (`false` with `until=now`).
    follow: bool,
    phase: PhaseWatch,
    /// Cursor of the last result frame yielded (to drop live frames the replay delivered).
    last_cursor: Option<i64>,
    /// Set after a frame that ends the feed: yielded next, then nothing.
    closing: Option<Close>,
    done: bool,
}

impl Feed {
    /// A feed over `replay` (if any) and then `live`, which must have been subscribed before
    /// the replay was opened. It ends as the daemon stops, as `phase` says.
    pub fn new(replay: Option<Replayed>, live: Subscription, phase: PhaseWatch) -> Self {
        Self::with(replay, live, phase, true)
    }

    /// A feed of the replay only: what existed when it was opened, then `Close::CaughtUp`
    /// (`until=now`, kcat's `-e`).
    pub fn until_now(replay: Option<Replayed>, live: Subscription, phase: PhaseWatch) -> Self {
        Self::with(replay, live, phase, false)
    }

    fn with(replay: Option<Replayed>, live: Subscription, phase: PhaseWatch, follow: bool) -> Self {
        let state = State {
            replay,
            live,
            follow,
            phase,
            last_cursor: None,
            closing: None,
            done: false,
        };
        let items = stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })
        .boxed();
        Self { items }
    }
}

impl Feed {
    /// This feed, ended with the close `ends` resolves to, unless it ended before: a
    /// connection lives no longer than its credential (a token's expiry, a key removed).
    /// Polled once per frame, so a plain poll of both rather than an `async` state machine.
    pub fn ending_with(self, ends: BoxFuture<'static, Close>) -> Self {
        let (mut items, mut ends, mut done) = (self.items, ends, false);
        let items = stream::poll_fn(move |cx| {
            if done {
                return Poll::Ready(None);
            }
            if let Poll::Ready(close) = ends.poll_unpin(cx) {
                done = true;
                return Poll::Ready(Some(Item::Closed(close)));
            }
            let next = items.poll_next_unpin(cx);
            done = matches!(next, Poll::Ready(None));
            next
        })
        .boxed();
        Self { items }
    }
}

impl Stream for Feed {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.items.poll_next_unpin(cx)
    }
}

impl State {
    async fn next(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        if let Some(close) = self.closing.take() {
            self.done = true;
            return Some(Item::Closed(close));
        }
        if self.phase.at_least(Phase::Stopping) {
            return Some(self.shut());
        }
        if let Some(replay) = &mut self.replay {
            let next = tokio::select! {
                next = replay.next() => next,
                _ = self.phase.reached(Phase::Drained) => return Some(self.shut()),
            };
            match next {
                Some(Ok(d)) => return Some(self.frame(d)),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Item::Closed(Close::Internal(e.to_string())));
                }
                None => self.replay = None,
            }
        }
        if !self.follow {
            self.done = true;
            return Some(Item::Closed(Close::CaughtUp));
        }
        loop {
            let next = match self.live.rx.try_recv() {
                Ok(d) => Some(d),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Everything queued was read: report what was skipped since, now.
                    if let Some(gap) = self.live.take_gap() {
                        return Some(self.frame(gap));
                    }
                    tokio::select! {
                        next = self.live.rx.recv() => next,
                        // Drained and nothing more queued: done.
                        _ = self.phase.reached(Phase::Drained) => return Some(self.shut()),
                    }
                }
            };
            match next {
                // Already delivered by the replay.
                Some(d)
                    if d.kind != Kind::Gap && self.last_cursor.is_some_and(|c| d.cursor <= c) => {}
                Some(d) => return Some(self.frame(d)),
                None => {
                    self.done = true;
                    let close = match self.live.lagged() {
                        Some(resume) => Close::Lagged { resume },
                        None => Close::Internal("results router stopped".into()),
                    };
                    return Some(Item::Closed(close));
                }
            }
        }
    }

    fn shut(&mut self) -> Item {
        self.done = true;
        Item::Closed(Close::ShuttingDown)
    }

    fn frame(&mut self, d: Delivery) -> Item {
        if d.kind != Kind::Gap {
            self.last_cursor = Some(d.cursor);
        }
        if d.kind == Kind::End {
            self.closing = Some(Close::Ended);
            self.replay = None;
        }
        Item::Frame(d)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_tungstenite::tungstenite::Utf8Bytes;
    use uuid::Uuid;

    use super::*;
    use crate::delivery::{DeliveryError, OnLag, Router};
    use crate::metrics::Metrics;
    use crate::registry::{MemoryStore, Registry};

    fn router(queue: usize) -> Arc<Router> {
        Router::new(
            queue,
            std::time::Duration::from_secs(60),
            Registry::new(Box::new(MemoryStore)),
            Arc::new(Metrics::new()),
        )
    }

    fn d(kind: Kind, cursor: i64) -> Delivery {
        Delivery {
            kind,
            cursor,
            frame: Utf8Bytes::from(format!("{}:{cursor}", kind.as_str())),
        }
    }

    fn replay(items: Vec<Result<Delivery, DeliveryError>>) -> Option<Replayed> {
        Some(stream::iter(items).boxed())
    }

    /// Frames as `kind:cursor`, and the close.
    async fn collect(feed: Feed, frames: usize) -> (Vec<String>, Option<Close>) {
        let items: Vec<Item> = feed.take(frames + 1).collect().await;
        let mut out = Vec::new();
        let mut close = None;
        for item in items {
            match item {
                Item::Frame(d) => out.push(d.frame.to_string()),
                Item::Closed(c) => close = Some(c),
            }
        }
        (out, close)
    }

    #[tokio::test]
    async fn replay_then_live_without_gap_or_duplicate() {
        let router = router(16);
        let stream = Uuid::new_v4();
        let live = router.subscribe(stream, OnLag::Close);
        // Results 3 and 4 were produced after the subscription and before the replay's mark:
        // both the replay and the live queue have them.
        for c in [3, 4, 5] {
            router.deliver(stream, d(Kind::Result, c));
        }
        router.deliver(stream, d(Kind::End, 6));
        let past = (1..=4).map(|c| Ok(d(Kind::Result, c))).collect();
        let (frames, close) =
            collect(Feed::new(replay(past), live, PhaseWatch::running()), 6).await;
        assert_eq!(
            frames,
            ["result:1", "result:2", "result:3", "result:4", "result:5", "end:6"]
        );
        assert_eq!(close, Some(Close::Ended));
    }

    #[tokio::test]
    async fn an_end_in_the_replay_ends_the_feed() {
        let router = router(16);
        let stream = Uuid::new_v4();
        let live = router.subscribe(stream, OnLag::Close);
        let past = vec![Ok(d(Kind::Result, 1)), Ok(d(Kind::End, 2))];
        let mut feed = Feed::new(replay(past), live, PhaseWatch::running());
        assert!(matches!(feed.next().await, Some(Item::Frame(_))));
        assert!(matches!(feed.next().await, Some(Item::Frame(f)) if f.kind == Kind::End));
        assert!(matches!(
            feed.next().await,
            Some(Item::Closed(Close::Ended))
        ));
        assert!(feed.next().await.is_none());
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_what_was_queued_then_its_resume_cursor() {
        let router = router(2);
        let stream = Uuid::new_v4();
        let live = router.subscribe(stream, OnLag::Close);
        for c in 10..14 {
            router.deliver(stream, d(Kind::Result, c));
        }
        let (frames, close) = collect(Feed::new(None, live, PhaseWatch::running()), 2).await;
        assert_eq!(frames, ["result:10", "result:11"]);
        assert_eq!(close, Some(Close::Lagged { resume: 12 }));
    }

    #[tokio::test]
    async fn a_failed_replay_closes_with_the_reason() {
        let router = router(2);
        let live = router.subscribe(Uuid::new_v4(), OnLag::Close);
        let past = vec![Err(DeliveryError::Unavailable("gone".into()))];
        let (frames, close) =
            collect(Feed::new(replay(past), live, PhaseWatch::running()), 0).await;
        assert!(frames.is_empty());
        assert!(matches!(close, Some(Close::Internal(why)) if why.contains("gone")));
    }

    #[tokio::test]
    async fn skip_mode_reports_the_last_gap_without_waiting_for_another_result() {
        let router = router(1);
        let stream = Uuid::new_v4();
        let live = router.subscribe(stream, OnLag::Skip);
        router.deliver(stream, d(Kind::Result, 1));
        for c in 2..=5 {
            router.deliver(stream, d(Kind::Result, c)); // queue full: skipped
        }
        let mut feed = Feed::new(None, live, PhaseWatch::running());
        assert!(matches!(feed.next().await, Some(Item::Frame(f)) if f.cursor == 1));
        // Nothing else arrives: the gap comes anyway.
        let Some(Item::Frame(gap)) = feed.next().await else {
            panic!("expected a gap frame")
        };
        let gap: crate::wire::Frame = serde_json::from_str(&gap.frame).unwrap();
        assert!(
            matches!(gap, crate::wire::Frame::Gap(g) if g.from_cursor == 2 && g.skipped == 4),
            "{gap:?}"
        );
        // And results after it flow again.
        router.deliver(stream, d(Kind::Result, 6));
        assert!(matches!(feed.next().await, Some(Item::Frame(f)) if f.cursor == 6));
    }

    #[tokio::test]
    async fn skip_mode_reports_a_gap_before_the_next_result() {
        let router = router(1);
        let stream = Uuid::new_v4();
        let live = router.subscribe(stream, OnLag::Skip);
        router.deliver(stream, d(Kind::Result, 1));
        router.deliver(stream, d(Kind::Result, 2)); // queue full: skipped
        let mut feed = Feed::new(None, live, PhaseWatch::running());
        assert!(matches!(feed.next().await, Some(Item::Frame(f)) if f.cursor == 1));
        router.deliver(stream, d(Kind::Result, 3));
        let Some(Item::Frame(gap)) = feed.next().await else {
            panic!("expected a gap frame")
        };
        assert_eq!(gap.kind, Kind::Gap);
        let gap: crate::wire::Frame = serde_json::from_str(&gap.frame).unwrap();
        assert!(matches!(gap, crate::wire::Frame::Gap(g) if g.from_cursor == 2 && g.skipped == 1));
    }

    #[tokio::test]
    async fn drained_daemon_sends_what_was_routed_then_closes() {
        let router = router(16);
        let stream = Uuid::new_v4();
        let live = router.subscribe(stream, OnLag::Close);
        let life = crate::lifecycle::Lifecycle::new();
        let feed = Feed::new(None, live, life.watch());
        router.deliver(stream, d(Kind::Result, 1));
        router.deliver(stream, d(Kind::Result, 2));
        life.enter(Phase::Drained);
        let (frames, close) = collect(feed, 2).await;
        assert_eq!(frames, ["result:1", "result:2"]);
        assert_eq!(close, Some(Close::ShuttingDown));

        // At `Stopping`, nothing more is sent.
        let live = router.subscribe(stream, OnLag::Close);
        router.deliver(stream, d(Kind::Result, 3));
        life.enter(Phase::Stopping);
        let (frames, close) = collect(Feed::new(None, live, life.watch()), 0).await;
        assert!(frames.is_empty());
        assert_eq!(close, Some(Close::ShuttingDown));
    }

    #[tokio::test]
    async fn until_now_sends_the_past_then_says_caught_up() {
        let router = router(16);
        let stream = Uuid::new_v4();
        let live = router.subscribe(stream, OnLag::Close);
        router.deliver(stream, d(Kind::Result, 9)); // live: not part of "now"
        let past = (1..=2).map(|c| Ok(d(Kind::Result, c))).collect();
        let feed = Feed::until_now(replay(past), live, PhaseWatch::running());
        let (frames, close) = collect(feed, 2).await;
        assert_eq!(frames, ["result:1", "result:2"]);
        assert_eq!(close, Some(Close::CaughtUp));
    }
}
