//! Rooms: named groups of connections that a message is published to,
//! spread over every shard, with one order per room.
//!
//! # Who knows what
//!
//! - Every shard keeps a [`LocalRooms`] index of the rooms its own
//!   connections joined: room names interned once, members as slab keys,
//!   and for each connection the rooms it is in, so leaving and closing
//!   clean both sides.
//! - Every room has an **owner** shard, chosen by a hash of its name
//!   ([`owner_of`]). The owner sequences the room's messages: each gets
//!   the next offset of the room's stream, in the room's epoch
//!   ([`Position`]), and the owner keeps a bounded history of them (by
//!   count and age) for recovery after a reconnection. The owner also
//!   keeps the room's directory: how many members each shard has, so a
//!   message reaches only the shards with members, and the room's size
//!   over the server is known in one place.
//! - A shard with members of a room it does not own subscribes to it at
//!   the owner when its first member joins, and reports its member count
//!   whenever it changes (once per loop turn at most); the owner answers a
//!   new subscription with the room's position, from which the shard's
//!   members receive every message.
//!
//! # Order and exactly-once
//!
//! Messages travel from the owner to each subscribed shard through that
//! shard's inbox, in the order the owner sequenced them, and each shard
//! hands them to its members in that order, skipping nothing and
//! repeating nothing: a member receives every message of a room whose
//! offset is past the position its join was acknowledged with
//! ([`Handler::on_joined`](crate::Handler::on_joined)), until it leaves.
//!
//! # Recovery
//!
//! A connection that comes back after a reconnection rejoins its rooms
//! from the last position its client saw; what it missed is replayed from
//! the owner's history before the live messages, or reported lost
//! ([`Recovery`], and the module `recovery` for how the seam is kept).
//!
//! # One frame per message
//!
//! A message is framed once by whoever publishes it, and, for connections
//! that speak `shardcast.v1`, wrapped once in its `Message` envelope with
//! its position; every shard and every member shares those frames by
//! reference (and the compressed frame, made once by the first shard that
//! needs it).

mod local;
mod owned;
mod recovery;
mod sequenced;

use std::time::Duration;

pub(crate) use local::{Joined, LocalRooms, Member, MemberCount, PresenceChange};
pub(crate) use owned::OwnedRooms;
pub(crate) use recovery::Step;
pub use recovery::{Loss, Recovery};
pub(crate) use sequenced::{Publication, Receipt, Sequenced};

use crate::handler::ShardId;

/// A place in a room's message stream: the offset of a message within the
/// room's epoch.
///
/// The owner numbers a room's messages 1, 2, 3... within an epoch; the
/// epoch is drawn anew whenever the room's stream starts over (the room
/// was forgotten after its last member left and its history expired, or
/// the server restarted), so positions of different epochs cannot be
/// compared. Offset 0 means "before any message".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Position {
    /// The offset of the last message sequenced (or delivered), 0 before
    /// the first.
    pub offset: u64,
    /// The room stream's generation; never 0 for a real stream.
    pub epoch: u64,
}

/// Why a room operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// Room names are at least one byte long.
    #[error("the room name is empty")]
    EmptyName,
    /// The room name is longer than
    /// [`ServerBuilder::max_room_name`](crate::ServerBuilder::max_room_name).
    #[error("the room name is {len} bytes long, over the limit of {limit}")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The connection is already in as many rooms as
    /// [`ServerBuilder::max_rooms_per_connection`](crate::ServerBuilder::max_rooms_per_connection)
    /// allows.
    #[error("the connection is in {limit} rooms, the most allowed")]
    TooManyRooms {
        /// The configured limit.
        limit: usize,
    },
    /// The connection is closing; it joins nothing more.
    #[error("the connection is closing")]
    Closing,
    /// The server has stopped: there is no shard left to take the request.
    #[error("the server has stopped")]
    Stopped,
}

/// The rooms' limits and history, shared read-only by the shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RoomsConfig {
    /// Messages kept per room for recovery; 0 keeps none.
    pub(crate) history_size: usize,
    /// How long a message stays in a room's history; `None`: until pushed
    /// out by newer ones.
    pub(crate) history_ttl: Option<Duration>,
    /// Rooms one connection may be in at once.
    pub(crate) max_rooms_per_connection: usize,
    /// The longest room name, in bytes.
    pub(crate) max_room_name: usize,
    /// Room messages for one `shardcast.v1` connection in one loop turn
    /// go out in one `Batch` envelope.
    pub(crate) batch_deliveries: bool,
}

impl RoomsConfig {
    /// Checks a room name against the limits.
    pub(crate) fn check_name(&self, room: &str) -> Result<(), RoomError> {
        if room.is_empty() {
            return Err(RoomError::EmptyName);
        }
        if room.len() > self.max_room_name {
            return Err(RoomError::NameTooLong {
                len: room.len(),
                limit: self.max_room_name,
            });
        }
        Ok(())
    }
}

/// The shard that owns `room` among `shards`: FNV-1a of the name, so every
/// shard (and every handle) agrees without asking.
pub(crate) fn owner_of(room: &str, shards: usize) -> ShardId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The modulo of a u64 by a usize shard count fits a usize.
    ShardId((hash % shards.max(1) as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_has_one_owner_in_range() {
        for shards in 1..9 {
            for room in ["", "a", "lobby", "room-17", "ünïcode"] {
                let owner = owner_of(room, shards);
                assert!(owner.index() < shards);
                assert_eq!(owner, owner_of(room, shards));
            }
        }
    }

    #[test]
    fn owners_spread_over_the_shards() {
        let mut counts = [0usize; 4];
        for index in 0..4000 {
            counts[owner_of(&format!("room-{index}"), 4).index()] += 1;
        }
        assert!(counts.iter().all(|&count| count > 800), "{counts:?}");
    }

    #[test]
    fn names_are_checked_against_the_limits() {
        let config = RoomsConfig {
            history_size: 0,
            history_ttl: None,
            max_rooms_per_connection: 4,
            max_room_name: 5,
            batch_deliveries: false,
        };
        assert_eq!(config.check_name(""), Err(RoomError::EmptyName));
        assert_eq!(config.check_name("lobby"), Ok(()));
        assert_eq!(
            config.check_name("lobbys"),
            Err(RoomError::NameTooLong { len: 6, limit: 5 })
        );
    }
}
