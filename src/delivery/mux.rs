//! Many feeds on one connection: each subscription of a `/api/connect` socket (or of one
//! multi-stream Server-Sent Events request) is a [`Feed`], exactly as on a single-stream
//! socket, and the connection reads them all through one [`Mux`]. Every feed keeps its own
//! bounded queue in the router, so one stream's burst or lag stays its own; the mux takes the
//! next frame from whichever feeds are ready, in turn (a feed that yielded goes to the back),
//! so a flooded stream cannot starve the others of the connection's writes.

use std::collections::HashMap;

use futures_util::future::AbortHandle;
use futures_util::stream::{Abortable, BoxStream, SelectAll, StreamExt};
use uuid::Uuid;

use super::{Feed, Item};

/// The feeds of one connection, by stream.
#[derive(Default)]
pub struct Mux {
    feeds: SelectAll<BoxStream<'static, (Uuid, Item)>>,
    /// The subscriptions open now; removing one stops its feed before its next frame.
    open: HashMap<Uuid, AbortHandle>,
}

impl Mux {
    /// Adds `stream`'s feed; `false` (and the feed dropped) if the stream has one already.
    pub fn add(&mut self, stream: Uuid, feed: Feed) -> bool {
        if self.open.contains_key(&stream) {
            return false;
        }
        let (handle, registration) = AbortHandle::new_pair();
        let tagged = Abortable::new(feed, registration).map(move |item| (stream, item));
        self.feeds.push(tagged.boxed());
        self.open.insert(stream, handle);
        true
    }

    /// Stops `stream`'s feed: nothing of it is yielded after this. `false` if it had none.
    pub fn remove(&mut self, stream: &Uuid) -> bool {
        match self.open.remove(stream) {
            Some(handle) => {
                handle.abort();
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, stream: &Uuid) -> bool {
        self.open.contains_key(stream)
    }

    /// The streams subscribed now.
    pub fn streams(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.open.keys().copied()
    }

    /// Subscriptions open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The next frame of any open feed, and its stream. A feed's last item (`Item::Closed`)
    /// also closes its subscription here. Waits forever while nothing is open, so it can sit
    /// in a `select!` beside the connection's other work.
    pub async fn next(&mut self) -> (Uuid, Item) {
        loop {
            if self.open.is_empty() {
                // Every feed left is an unsubscribed or ended one; an aborted feed only ends
                // when polled, which nothing does now: drop them here, so their router
                // subscriptions go now rather than at the connection's next subscribe.
                self.feeds = SelectAll::new();
                std::future::pending::<()>().await;
            }
            match self.feeds.next().await {
                Some((stream, item)) if self.open.contains_key(&stream) => {
                    if matches!(item, Item::Closed(_)) {
                        self.open.remove(&stream);
                    }
                    return (stream, item);
                }
                // Removed meanwhile (aborted feeds end on their next poll).
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_tungstenite::tungstenite::Utf8Bytes;

    use super::*;
    use crate::delivery::{Delivery, OnLag, Router};
    use crate::lifecycle::PhaseWatch;
    use crate::metrics::Metrics;
    use crate::registry::{MemoryStore, Registry};
    use crate::wire::{Close, Kind};

    fn router() -> Arc<Router> {
        Router::new(
            64,
            std::time::Duration::from_secs(60),
            Registry::new(Box::new(MemoryStore)),
            Arc::new(Metrics::new()),
        )
    }

    fn d(cursor: i64) -> Delivery {
        Delivery {
            kind: Kind::Result,
            cursor,
            frame: Utf8Bytes::from(format!("{cursor}")),
        }
    }

    fn feed(router: &Arc<Router>, stream: Uuid) -> Feed {
        Feed::new(
            None,
            router.subscribe(stream, OnLag::Close),
            PhaseWatch::running(),
        )
    }

    #[tokio::test]
    async fn ready_feeds_take_turns_and_a_removed_one_yields_nothing_more() {
        let router = router();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut mux = Mux::default();
        assert!(mux.add(a, feed(&router, a)));
        assert!(mux.add(b, feed(&router, b)));
        assert!(!mux.add(a, feed(&router, a)), "one subscription per stream");
        for c in 0..20 {
            router.deliver(a, d(c)); // a floods
        }
        router.deliver(b, d(100));
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(mux.next().await.0);
        }
        assert!(
            order.contains(&b),
            "b is not starved behind a's burst: {order:?}"
        );
        assert!(mux.remove(&a));
        router.deliver(b, d(101));
        let (stream, _) = mux.next().await;
        assert_eq!(stream, b, "nothing of a after its removal");
        assert_eq!(mux.len(), 1);
    }

    #[tokio::test]
    async fn a_feeds_last_item_closes_its_subscription() {
        let router = router();
        let a = Uuid::new_v4();
        let mut mux = Mux::default();
        mux.add(a, feed(&router, a));
        router.deliver(
            a,
            Delivery {
                kind: Kind::End,
                cursor: 5,
                frame: Utf8Bytes::from("end"),
            },
        );
        assert!(matches!(mux.next().await, (_, Item::Frame(f)) if f.kind == Kind::End));
        assert!(matches!(mux.next().await, (_, Item::Closed(Close::Ended))));
        assert!(mux.is_empty());
    }
}
