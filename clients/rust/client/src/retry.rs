//! When a client tries again, in one place for every call: exponential back-off with
//! jitter between attempts that failed in a way that may pass (a connection refused, a
//! broker outage, a dropped socket), capped at [`MAX_BACKOFF`] and reset by a success; and a
//! wait of exactly what the daemon asked for (`Retry-After`) when it asked.

use std::time::Duration;

/// First pause after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The pauses between attempts of one operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// The pause before the next attempt: `Retry-After` when the daemon sent one, else the
    /// next step of the back-off, with up to a fifth of it added at random so clients that
    /// failed together do not come back together.
    pub fn pause(&mut self, retry_after: Option<Duration>) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        match retry_after {
            Some(asked) => asked,
            None => step + step.mul_f64(fastrand::f64() / 5.0),
        }
    }

    /// Waits [`Self::pause`].
    pub async fn wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let pause = self.pause(retry_after);
        tokio::time::sleep(pause).await;
        pause
    }

    /// After a success: the next failure starts from the first step again.
    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_honours_retry_after() {
        let mut b = Backoff::default();
        let first = b.pause(None);
        assert!(first >= FIRST_BACKOFF && first <= FIRST_BACKOFF.mul_f64(1.2));
        for _ in 0..10 {
            b.pause(None);
        }
        let capped = b.pause(None);
        assert!(capped >= MAX_BACKOFF && capped <= MAX_BACKOFF.mul_f64(1.2));
        assert_eq!(
            b.pause(Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        b.reset();
        assert!(b.pause(None) <= FIRST_BACKOFF.mul_f64(1.2));
    }
}
