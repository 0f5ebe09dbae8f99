//! Delivery: how results reach subscribers. The [`router`] reads the results topic and fans
//! each result out to this instance's subscribers; [`replay`] reads a stream's past results
//! back from the broker (resume cursors); a [`feed`] is one subscriber's sequence of frames,
//! replay then live, which every transport (WebSocket, Server-Sent Events) writes out
//! unchanged; a [`mux`] puts many feeds on one connection.

pub mod feed;
pub mod mux;
pub mod replay;
pub mod router;

use rdkafka::message::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

pub use feed::{Feed, Item};
pub use mux::Mux;
pub use replay::{Archive, Replays, StartAt};
pub use router::{OnLag, Router, Subscription};

use crate::kafka::records::decode_result;
use crate::wire::Kind;

/// One frame for a subscriber, already serialized and shared by all subscribers of a stream.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub kind: Kind,
    /// The result's offset in the results topic (for a gap: the first skipped one).
    pub cursor: i64,
    /// The frame as text: built once, shared by reference count.
    pub frame: Utf8Bytes,
}

/// Why a subscriber's past or live results could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot read the results topic: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// A `from` or `on_lag` query value that means nothing; the text says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidParam(String);

/// The stream and frame of a results-topic record; `None` for a record that is not one of
/// ours. Shared by the live router and replays, so both deliver identical frames.
pub fn delivery_of(m: &impl Message) -> Option<(Uuid, Delivery)> {
    let stored = decode_result(m)?;
    Some((
        stored.stream,
        Delivery {
            kind: stored.kind,
            cursor: stored.cursor,
            frame: Utf8Bytes::from(stored.frame),
        },
    ))
}
