//! Structured logs via tracing: human-readable or one JSON object per line, colour only on a
//! terminal. librdkafka's own log lines are rate-limited: while a broker is down it logs
//! every reconnect attempt of every broker thread, which would bury everything else.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Log, LogFormat};

/// At most this many librdkafka lines per target and level in each `WINDOW`.
const LIBRDKAFKA_LINES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(10);

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`. Logs go to
/// stderr so stdout stays free for output a script may read.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(ansi);
    let fmt = match log.format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    // Global filters (not per-layer ones: those keep per-event state that events bridged
    // from the `log` crate, as librdkafka's are, can leave stale and drop the next event).
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(LibrdkafkaLimiter::default())
        .with(fmt)
        .try_init();
    // Already installed (tests, or a second daemon in one process): keep the first.
    let _ = result;
}

impl<S: tracing::Subscriber> Layer<S> for LibrdkafkaLimiter {
    fn event_enabled(&self, event: &tracing::Event<'_>, _: Context<'_, S>) -> bool {
        self.allow(event.metadata().target(), *event.metadata().level())
    }
}

/// Counts librdkafka lines per target and level in the current window.
#[derive(Default)]
struct LibrdkafkaLimiter {
    windows: Mutex<HashMap<(String, tracing::Level), (Instant, u32)>>,
}

impl LibrdkafkaLimiter {
    fn allow(&self, target: &str, level: tracing::Level) -> bool {
        if !(target.starts_with("librdkafka") || target.starts_with("rdkafka")) {
            return true;
        }
        let mut windows = self.windows.lock().expect("log limiter lock");
        let now = Instant::now();
        let (start, count) = windows
            .entry((target.to_string(), level))
            .or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            (*start, *count) = (now, 0);
        }
        *count += 1;
        *count <= LIBRDKAFKA_LINES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_lines_are_limited_and_others_never() {
        let limiter = LibrdkafkaLimiter::default();
        let allowed = (0..50)
            .filter(|_| limiter.allow("librdkafka", tracing::Level::ERROR))
            .count();
        assert_eq!(allowed, LIBRDKAFKA_LINES as usize);
        assert!((0..50).all(|_| limiter.allow("streamgate::server", tracing::Level::ERROR)));
        assert!(
            limiter.allow("rdkafka::client", tracing::Level::WARN),
            "per target"
        );
    }
}
