//! Runs user code (jq filters and window expressions) off the processing task, under a time
//! bound. jaq cannot be interrupted, so a run past the bound is abandoned: its thread is left
//! to finish on its own and later work goes to a fresh thread. One long-lived worker thread
//! keeps jq's per-thread compiled-filter cache warm and costs a channel round trip per record
//! (a `spawn_blocking` per record cost about 10× more).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Why bounded work gave no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    TimedOut,
    Panicked,
}

pub struct Runner {
    limit: Duration,
    worker: Mutex<mpsc::Sender<Job>>,
}

fn spawn_worker() -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("streamgate-processor".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a processor thread");
    }
    tx
}

impl Runner {
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            worker: Mutex::new(spawn_worker()),
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Runs `work` on the worker thread; its result, unless it ran past the limit or panicked.
    /// Callers run one piece of work at a time (the processing loop awaits each record).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Failure> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(work)));
        });
        {
            let mut worker = self.worker.lock().expect("runner lock");
            if let Err(mpsc::SendError(job)) = worker.send(job) {
                // The thread is gone (it cannot be, short of a bug): start another.
                *worker = spawn_worker();
                let _ = worker.send(job);
            }
        }
        match tokio::time::timeout(self.limit, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(_))) => Err(Failure::Panicked),
            Ok(Err(_)) => {
                *self.worker.lock().expect("runner lock") = spawn_worker();
                Err(Failure::Panicked)
            }
            Err(_) => {
                // Abandon the busy thread; it exits when its work ends and it sees the
                // channel closed.
                *self.worker.lock().expect("runner lock") = spawn_worker();
                Err(Failure::TimedOut)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_in_time_and_abandons_what_runs_long() {
        let r = Runner::new(Duration::from_millis(100));
        assert_eq!(r.run(|| 2 + 2).await, Ok(4));
        let slow = r
            .run(|| std::thread::sleep(Duration::from_millis(500)))
            .await;
        assert_eq!(slow, Err(Failure::TimedOut));
        // A fresh thread serves the next work at once.
        assert_eq!(r.run(|| "next").await, Ok("next"));
        // Printing a panic (and its backtrace) can take a while: a roomier limit.
        let r = Runner::new(Duration::from_secs(10));
        assert_eq!(
            r.run(|| panic!("boom")).await,
            Err::<(), _>(Failure::Panicked)
        );
        assert_eq!(r.run(|| 1).await, Ok(1));
    }
}
