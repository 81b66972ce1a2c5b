//! The bound on what the application has sent but the client has not yet
//! written to a connection, and what a send does when it is reached.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::Error;

/// What a send does when the send buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// Fail at once with [`Error::BufferFull`]. The default: an application
    /// that sends while the server is away learns it at once.
    #[default]
    Fail,
    /// Wait until there is room: the send's future completes once an
    /// earlier message has been written. Backpressure for producers that
    /// can slow down.
    Wait,
}

/// The send buffer: outgoing envelopes (or raw messages) accepted from the
/// application and not yet written to a connection.
///
/// While connected, it drains as fast as the socket takes data. While
/// disconnected (reconnecting, resuming), it holds what the application
/// sends; once the session is resumed (or a fresh one started and the rooms
/// rejoined), every held message is written once, in order. A message that
/// was written to a connection that then failed is never written again: it
/// may or may not have reached the server, and sending it twice could
/// publish it twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendBuffer {
    /// The most messages held at once. Default: 1024. At least 1.
    pub capacity: usize,
    /// What a send does when `capacity` messages are held. Default:
    /// [`WhenFull::Fail`].
    pub when_full: WhenFull,
}

impl SendBuffer {
    /// The defaults: 1024 messages, fail when full.
    pub const DEFAULT: SendBuffer = SendBuffer {
        capacity: 1024,
        when_full: WhenFull::Fail,
    };
}

impl Default for SendBuffer {
    fn default() -> Self {
        SendBuffer::DEFAULT
    }
}

/// Admission to the send buffer, shared by every handle of a client.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    slots: Arc<Semaphore>,
    when_full: WhenFull,
}

/// A place in the send buffer, held by a message until it is written (or
/// dropped).
pub(crate) type Slot = OwnedSemaphorePermit;

impl Outbox {
    /// The admission of `buffer`.
    pub(crate) fn new(buffer: SendBuffer) -> Outbox {
        Outbox {
            slots: Arc::new(Semaphore::new(
                buffer.capacity.clamp(1, Semaphore::MAX_PERMITS),
            )),
            when_full: buffer.when_full,
        }
    }

    /// A slot for one message, as the policy says: at once or
    /// [`Error::BufferFull`], or once there is room.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call holds no slot.
    pub(crate) async fn reserve(&self) -> Result<Slot, Error> {
        match self.when_full {
            WhenFull::Fail => match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => Ok(slot),
                Err(TryAcquireError::NoPermits) => Err(Error::BufferFull),
                Err(TryAcquireError::Closed) => Err(Error::Closed),
            },
            WhenFull::Wait => Arc::clone(&self.slots)
                .acquire_owned()
                .await
                .map_err(|_| Error::Closed),
        }
    }

    /// Refuses every later reservation with [`Error::Closed`] and wakes the
    /// waiting ones with it.
    pub(crate) fn close(&self) {
        self.slots.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outbox(capacity: usize, when_full: WhenFull) -> Outbox {
        Outbox::new(SendBuffer {
            capacity,
            when_full,
        })
    }

    #[tokio::test]
    async fn fail_fast_refuses_past_capacity_and_takes_again_after_a_write() {
        let outbox = outbox(2, WhenFull::Fail);
        let first = outbox.reserve().await.unwrap();
        let _second = outbox.reserve().await.unwrap();
        assert!(matches!(outbox.reserve().await, Err(Error::BufferFull)));
        drop(first);
        assert!(outbox.reserve().await.is_ok());
    }

    #[tokio::test]
    async fn wait_blocks_until_a_slot_frees() {
        let outbox = outbox(1, WhenFull::Wait);
        let held = outbox.reserve().await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), outbox.reserve()).await;
        assert!(waiting.is_err(), "no room: the send waits");
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.reserve().await.map(drop) }
        });
        drop(held);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn closing_wakes_waiters_with_closed() {
        let outbox = outbox(1, WhenFull::Wait);
        let _held = outbox.reserve().await.unwrap();
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.reserve().await.map(drop) }
        });
        tokio::task::yield_now().await;
        outbox.close();
        assert!(matches!(waiter.await.unwrap(), Err(Error::Closed)));
        assert!(matches!(outbox.reserve().await, Err(Error::Closed)));
    }

    #[test]
    fn zero_capacity_holds_one() {
        let outbox = outbox(0, WhenFull::Fail);
        assert_eq!(outbox.slots.available_permits(), 1);
    }
}
