//! The daemon's phases, from start-up to stop, as one watched value. Every part that must act
//! differently as the daemon stops (the accept loop, WebSocket and SSE sessions, the
//! components) watches the phase instead of a flag of its own, so the order of a graceful
//! stop is written once, in `server.rs`:
//!
//! 1. `Running`: serving. (Before the broker is connected, only `/healthz`, `/readyz` and
//!    `/metrics` are served; see `api::serve`.)
//! 2. `Draining`, at the signal: no new connections, in-flight requests finish, records sent
//!    on a WebSocket are refused (`nack` `shutting_down`). Processing and routing go on until
//!    everything acknowledged before the signal is processed and routed, bounded by
//!    `limits.drain_timeout_ms`.
//! 3. `Drained`: each subscriber is sent what was routed to it, then closed with 1001.
//! 4. `Stopping`: whatever is still open is closed; the components commit and stop.

use tokio::sync::watch;

/// Where the daemon is in its life; only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    Draining,
    Drained,
    Stopping,
}

/// Moves the daemon from phase to phase.
pub struct Lifecycle {
    tx: watch::Sender<Phase>,
}

/// A view of the phase that can be waited on.
#[derive(Clone)]
pub struct PhaseWatch {
    rx: watch::Receiver<Phase>,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(Phase::Running),
        }
    }

    /// Moves forward to `phase` (never back).
    pub fn enter(&self, phase: Phase) {
        self.tx.send_if_modified(|p| {
            let forward = phase > *p;
            if forward {
                tracing::debug!(?phase, "daemon phase");
                *p = phase;
            }
            forward
        });
    }

    pub fn watch(&self) -> PhaseWatch {
        PhaseWatch {
            rx: self.tx.subscribe(),
        }
    }

    /// A flag that flips to `true` at `Stopping`, for components that only need to know when
    /// to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let mut phase = self.watch();
        tokio::spawn(async move {
            phase.reached(Phase::Stopping).await;
            let _ = tx.send(true);
        });
        rx
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl PhaseWatch {
    /// A phase that stays `Running` (for route tests and stand-alone feeds).
    #[cfg(test)]
    pub fn running() -> Self {
        let (tx, rx) = watch::channel(Phase::Running);
        // The sender is gone: the phase can never change.
        drop(tx);
        Self { rx }
    }

    /// Whether the daemon is at `phase` or past it.
    pub fn at_least(&self, phase: Phase) -> bool {
        *self.rx.borrow() >= phase
    }

    /// Resolves once the daemon is at `phase` or past it (never, if it cannot get there).
    pub async fn reached(&mut self, phase: Phase) {
        loop {
            if *self.rx.borrow_and_update() >= phase {
                return;
            }
            if self.rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward_and_wake_their_watchers() {
        let life = Lifecycle::new();
        let mut drained = life.watch();
        let waiter = tokio::spawn(async move { drained.reached(Phase::Drained).await });
        let mut stopping = life.stopping();
        life.enter(Phase::Draining);
        assert!(!waiter.is_finished());
        life.enter(Phase::Stopping);
        life.enter(Phase::Running);
        waiter.await.unwrap();
        assert!(life.watch().at_least(Phase::Stopping));
        stopping.wait_for(|s| *s).await.unwrap();
    }
}
