//! One stream followed over the client's connection: a `Stream` of its frames (`result`,
//! `error`, `gap`, `end`), each handed on once and in order, that ends after `end` (or
//! `caught_up` with `until_now`) and yields an error when the daemon refuses it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use streamgate_wire::Frame;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::connection::{Command, Delivered};
use crate::error::Error;

/// A stream's frames; dropping it unsubscribes.
pub struct Subscription {
    pub(crate) id: u64,
    pub(crate) stream: Uuid,
    pub(crate) frames: mpsc::Receiver<Delivered>,
    pub(crate) paused: Arc<AtomicBool>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    /// The stream followed.
    pub fn stream_id(&self) -> Uuid {
        self.stream
    }
}

impl Stream for Subscription {
    type Item = Result<Frame, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.frames.poll_recv(cx);
        // Paused because this consumer fell behind, and now it has room again: resume.
        if matches!(next, Poll::Ready(Some(_)))
            && self.paused.load(Ordering::Acquire)
            && self.frames.len() < crate::connection::QUEUE / 2
        {
            let _ = self.commands.send(Command::Resume {
                id: self.id,
                stream: self.stream,
            });
        }
        next
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unsubscribe {
            id: self.id,
            stream: self.stream,
        });
    }
}
