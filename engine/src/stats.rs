//! Per-shard counters, written by the shard's own thread and read by
//! anyone holding the [`ServerHandle`](crate::ServerHandle).
//!
//! Each counter is a relaxed atomic with a single writer: the shard adds
//! without a lock or a read-modify-write contention, and a reader sees a
//! value that may lag by a few updates, which is all monitoring needs.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Which I/O driver a shard's event loop uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoDriver {
    /// The shard has not set up its driver yet.
    Starting,
    /// io_uring: the fast path, fewer kernel crossings per loop turn.
    IoUring,
    /// epoll, used when io_uring is unavailable (old kernel, seccomp,
    /// `kernel.io_uring_disabled`) or when `force_epoll` was set.
    Epoll,
}

impl IoDriver {
    fn from_u8(value: u8) -> IoDriver {
        match value {
            1 => IoDriver::IoUring,
            2 => IoDriver::Epoll,
            _ => IoDriver::Starting,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            IoDriver::Starting => 0,
            IoDriver::IoUring => 1,
            IoDriver::Epoll => 2,
        }
    }
}

/// The live counters of one shard. Only the shard's thread writes them.
#[derive(Debug, Default)]
pub(crate) struct ShardCounters {
    driver: AtomicU8,
    open: AtomicU64,
    accepted: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    messages_dropped: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    rooms: AtomicU64,
    room_members: AtomicU64,
    owned_rooms: AtomicU64,
}

/// Adds `n` to a counter only this thread writes: a plain load and store,
/// cheaper than an atomic read-modify-write.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

impl ShardCounters {
    pub(crate) fn set_driver(&self, driver: IoDriver) {
        self.driver.store(driver.to_u8(), Ordering::Relaxed);
    }

    pub(crate) fn connection_opened(&self) {
        bump(&self.accepted, 1);
        bump(&self.open, 1);
    }

    pub(crate) fn connection_closed(&self) {
        self.open.store(
            self.open.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn received(&self, messages: u64, bytes: u64) {
        if messages != 0 {
            bump(&self.messages_in, messages);
        }
        bump(&self.bytes_in, bytes);
    }

    pub(crate) fn message_sent(&self) {
        bump(&self.messages_out, 1);
    }

    pub(crate) fn message_dropped(&self) {
        bump(&self.messages_dropped, 1);
    }

    pub(crate) fn bytes_sent(&self, bytes: u64) {
        bump(&self.bytes_out, bytes);
    }

    /// The shard's room index sizes after a turn's room work.
    pub(crate) fn set_rooms(&self, rooms: usize, members: usize, owned: usize) {
        self.rooms.store(rooms as u64, Ordering::Relaxed);
        self.room_members.store(members as u64, Ordering::Relaxed);
        self.owned_rooms.store(owned as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, shard: usize) -> ShardStats {
        ShardStats {
            shard,
            driver: IoDriver::from_u8(self.driver.load(Ordering::Relaxed)),
            connections_open: self.open.load(Ordering::Relaxed),
            connections_accepted: self.accepted.load(Ordering::Relaxed),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            messages_dropped: self.messages_dropped.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            rooms: self.rooms.load(Ordering::Relaxed),
            room_members: self.room_members.load(Ordering::Relaxed),
            owned_rooms: self.owned_rooms.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of one shard's counters, from [`ServerHandle::stats`](crate::ServerHandle::stats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    /// The shard's index, 0 to shard count - 1.
    pub shard: usize,
    /// The I/O driver the shard runs on.
    pub driver: IoDriver,
    /// Upgraded connections open now.
    pub connections_open: u64,
    /// Upgraded connections accepted since start.
    pub connections_accepted: u64,
    /// Text and binary messages received.
    pub messages_in: u64,
    /// Text and binary messages sent (control frames not counted).
    pub messages_out: u64,
    /// Droppable messages dropped because a connection's send buffer was
    /// full (see [`Backpressure`](crate::Backpressure)).
    pub messages_dropped: u64,
    /// Bytes read from WebSocket connections after their handshake.
    pub bytes_in: u64,
    /// Bytes written to upgraded connections, their 101 responses included
    /// (refusals are not counted).
    pub bytes_out: u64,
    /// Rooms with members on this shard.
    pub rooms: u64,
    /// Memberships of this shard's connections, over all their rooms.
    pub room_members: u64,
    /// Rooms this shard owns (sequences): those with members anywhere or
    /// history kept.
    pub owned_rooms: u64,
}
