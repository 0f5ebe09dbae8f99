//! One-hop results of a stream are written, on this instance, in the order its records were
//! handed to the producer (their input order): a send takes a turn when it hands its records
//! over, and writes their results once the previous turn's are handed over too. Otherwise two
//! sends in flight at once could have their results written in the order their
//! acknowledgements happened to be processed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use uuid::Uuid;

/// The turns of every stream with a send in flight here.
#[derive(Default)]
pub(super) struct Turns {
    /// Per stream, the last turn taken: its number, and what ends it.
    last: Mutex<HashMap<Uuid, (u64, oneshot::Receiver<()>)>>,
    taken: AtomicU64,
}

/// A send's turn to write one-hop results.
pub(super) struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    /// Dropped with the turn, once its results are handed over: the next turn goes.
    _done: oneshot::Sender<()>,
    stream: Uuid,
    number: u64,
    turns: Arc<Turns>,
}

impl Turns {
    pub(super) fn take(self: &Arc<Self>, stream: Uuid) -> Turn {
        let (done, next) = oneshot::channel();
        let number = self.taken.fetch_add(1, Ordering::Relaxed);
        let previous = self
            .last
            .lock()
            .expect("turns lock")
            .insert(stream, (number, next))
            .map(|(_, previous)| previous);
        Turn {
            previous,
            _done: done,
            stream,
            number,
            turns: self.clone(),
        }
    }
}

impl Turn {
    /// Waits for the previous turn's results to be handed over.
    pub(super) async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = previous.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut last = self.turns.last.lock().expect("turns lock");
        if last
            .get(&self.stream)
            .is_some_and(|(n, _)| *n == self.number)
        {
            last.remove(&self.stream); // no later turn: forget the stream
        }
    }
}
