//! What every run shares, whatever carries its records: pace the schedule, hand each batch to
//! the transport, bound the sends awaiting an answer, then wait for what is still on its way,
//! with the progress line meanwhile.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::recorder::Recorder;
use super::schedule::{Batch, Pacer};
use super::{progress, Load};

/// Sends awaiting their answer, at most `max` at once.
pub struct InFlight {
    permits: Arc<Semaphore>,
    max: u32,
}

impl InFlight {
    /// Runs `send` as a task of its own once fewer than the maximum are awaiting an answer:
    /// the schedule goes on without waiting for it (open loop).
    pub async fn spawn(
        &self,
        send: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let permit = self.permits.clone().acquire_owned().await?;
        tokio::spawn(async move {
            send.await;
            drop(permit);
        });
        Ok(())
    }
}

/// Hands every batch of the schedule to `send` when it is due, then waits until every send
/// was answered and every acknowledged record arrived, or `load.drain_timeout` passes.
pub async fn drive(
    load: &Load,
    rec: &Arc<Recorder>,
    label: &'static str,
    show_progress: bool,
    mut send: impl AsyncFnMut(Batch, &InFlight) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let progress = show_progress.then(|| progress::spawn(rec.clone(), label));
    let in_flight = InFlight {
        permits: Arc::new(Semaphore::new(load.max_in_flight)),
        max: load.max_in_flight as u32,
    };
    let mut pacer = Pacer::new(load.schedule, rec.start(), load.payload_bytes);
    while let Some(batch) = pacer.next().await {
        rec.sent(batch.records.len() as u64);
        send(batch, &in_flight).await?;
    }
    let _ = in_flight.permits.acquire_many(in_flight.max).await?;
    drain(rec, load.drain_timeout).await;
    if let Some(p) = progress {
        p.finish().await;
    }
    Ok(())
}

/// Waits until every record sent was acknowledged or refused and every acknowledged record
/// arrived, or `timeout` passes (what has not arrived by then is lost).
async fn drain(rec: &Recorder, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let settled = rec.acked.load(Ordering::Relaxed) + rec.refused.load(Ordering::Relaxed)
            >= rec.sent.load(Ordering::Relaxed);
        if settled && rec.waiting() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
