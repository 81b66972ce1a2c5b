//! [`Inbox`]: how anything reaches a shard from another thread. One
//! lock-free queue per shard, and a doorbell that wakes the shard once per
//! batch of messages, not once per message.
//!
//! The doorbell is the write end of the shard's control socket, which its
//! I/O driver watches on either backend. A sender pushes, then rings only
//! if nobody rang since the shard last looked ([`Inbox::ring`]); the shard
//! clears that mark before it drains the queue, so a message pushed while
//! it drains is either seen by this drain or rings again.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use crossbeam_queue::SegQueue;

use crate::conn::{ConnAddress, ConnId};
use crate::handler::ShardId;
use crate::notice::Notice;
use crate::prepared::PreparedMessage;
use crate::rooms::{Loss, Position, PresenceChange, Publication, Sequenced};

/// What one shard (or a [`ServerHandle`](crate::ServerHandle)) tells
/// another.
#[derive(Debug)]
pub(crate) enum ShardMessage {
    /// To a room's owner: sequence this message and hand it on.
    Publish(Box<Publication>),
    /// From a room's owner to a shard with members: a sequenced message.
    Deliver(Arc<Sequenced>),
    /// To a room's owner: `from` now has `count` members of `room`; a
    /// count rising from 0 starts subscription number `subscription`.
    Members {
        room: Arc<str>,
        from: ShardId,
        count: u32,
        watchers: u32,
        subscription: u32,
    },
    /// To a room's owner: a member arrived or left, for the room's
    /// presence watchers.
    Presence(Box<PresenceChange>),
    /// From a room's owner to a shard with presence watchers: the
    /// `Presence` envelope to send them.
    PresenceNote {
        room: Arc<str>,
        frame: PreparedMessage,
    },
    /// From a room's owner: subscription `subscription` of `room` starts
    /// after `position`.
    Subscribed {
        room: Arc<str>,
        subscription: u32,
        position: Position,
    },
    /// From a room's owner to a publisher's shard: the publication the
    /// receipt asked about got `position`.
    Published {
        conn: ConnId,
        key: u32,
        tag: u64,
        room: Arc<str>,
        position: Position,
    },
    /// To a room's owner: the messages of `room` after `after` up to
    /// `upto`, for the rejoined member at `to`.
    History {
        room: Arc<str>,
        after: Position,
        upto: Position,
        to: ConnAddress,
    },
    /// From a room's owner to a rejoined member's shard: what the member
    /// missed before its rejoin took effect at `joined`, or why it cannot
    /// be replayed.
    Replay {
        room: Arc<str>,
        joined: Position,
        history: Result<Vec<Arc<Sequenced>>, Loss>,
        to: ConnAddress,
    },
    /// A handler's notice for this shard's handler.
    Notice(Notice),
    /// To every shard: send this to every open connection.
    Broadcast(PreparedMessage),
    /// To a room's owner: answer with the room's size over every shard.
    RoomSize {
        room: Arc<str>,
        reply: mpsc::Sender<usize>,
    },
}

/// One shard's inbox: its queue, whether a wake-up is on its way, and the
/// doorbell.
#[derive(Debug)]
pub(crate) struct Inbox {
    queue: SegQueue<ShardMessage>,
    notified: AtomicBool,
    doorbell: UnixStream,
}

impl Inbox {
    /// An empty inbox ringing `doorbell` (the write end of the shard's
    /// control socket, non-blocking).
    pub(crate) fn new(doorbell: UnixStream) -> Inbox {
        Inbox {
            queue: SegQueue::new(),
            notified: AtomicBool::new(false),
            doorbell,
        }
    }

    /// Queues a message; the shard sees it once rung.
    pub(crate) fn push(&self, message: ShardMessage) {
        self.queue.push(message);
    }

    /// Wakes the shard unless a wake-up is already on its way.
    pub(crate) fn ring(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.knock();
        }
    }

    /// Wakes the shard whatever the mark says: for shutdown.
    pub(crate) fn knock(&self) {
        // A full socket already holds a wake-up; a closed one belongs to a
        // shard that stopped.
        let _ = (&self.doorbell).write(&[1]);
    }

    /// The shard is about to drain: later pushes must ring again. A swap,
    /// not a store: reading the mark a sender set (with release) makes
    /// everything it pushed before setting it visible to this drain.
    pub(crate) fn clear_notified(&self) {
        self.notified.swap(false, Ordering::AcqRel);
    }

    /// The next message, if any.
    pub(crate) fn pop(&self) -> Option<ShardMessage> {
        self.queue.pop()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_batch_rings_the_doorbell_once() {
        let (mut bell, doorbell) = UnixStream::pair().unwrap();
        doorbell.set_nonblocking(true).unwrap();
        bell.set_nonblocking(true).unwrap();
        let inbox = Inbox::new(doorbell);
        for index in 0..10 {
            inbox.push(ShardMessage::Broadcast(PreparedMessage::text(
                &index.to_string(),
            )));
            inbox.ring();
        }
        let mut rung = [0; 16];
        assert_eq!(bell.read(&mut rung).unwrap(), 1);
        inbox.clear_notified();
        let mut drained = 0;
        while inbox.pop().is_some() {
            drained += 1;
        }
        assert_eq!(drained, 10);
        inbox.push(ShardMessage::Broadcast(PreparedMessage::text("late")));
        inbox.ring();
        assert_eq!(bell.read(&mut rung).unwrap(), 1);
    }
}
