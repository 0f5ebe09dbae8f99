//! The live progress line on stderr while a run goes: elapsed time, records sent,
//! acknowledged and received per second over the last second, and errors. Only drawn when
//! stderr is a terminal, so redirected output stays clean.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::recorder::Recorder;

pub struct Progress {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Progress {
    /// Stops drawing and clears the line.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

pub fn spawn(rec: Arc<Recorder>, label: &'static str) -> Progress {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last = [0u64; 3];
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            let now = [
                rec.sent.load(Ordering::Relaxed),
                rec.acked.load(Ordering::Relaxed),
                rec.received.load(Ordering::Relaxed),
            ];
            let elapsed = Instant::now().saturating_duration_since(rec.start());
            eprint!(
                "\r\x1b[2K{label} {:>6.1}s  sent {:>7}/s  acked {:>7}/s  received {:>7}/s  total received {:>9}  errors {}",
                elapsed.as_secs_f64(),
                now[0] - last[0],
                now[1] - last[1],
                now[2] - last[2],
                now[2],
                rec.error_count.load(Ordering::Relaxed),
            );
            let _ = std::io::stderr().flush();
            last = now;
        }
        eprint!("\r\x1b[2K");
    });
    Progress { stop, task }
}
