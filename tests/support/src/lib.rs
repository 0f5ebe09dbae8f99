//! Test harness shared by the daemon tests (`tests/`) and the streamctl tests (`cli/tests/`):
//! a real tansu broker per test, an in-process daemon on port 0, HTTP and WebSocket helpers,
//! and a plain Kafka reader to check what really is in the topics. Everything waits on
//! conditions with a deadline, and everything started is stopped on drop.

mod broker;
mod daemon;
mod sse;

pub use broker::*;
pub use daemon::*;
pub use sse::*;
