//! [`Hub`]: a shard's rooms and broadcast, as its handler reaches them.

use std::cell::RefCell;
use std::sync::Arc;

use crate::conn::ConnId;
use crate::handler::ShardId;
use crate::notice::Notice;
use crate::prepared::PreparedMessage;
use crate::rooms::{
    LocalRooms, Member, OwnedRooms, Position, Publication, Receipt, RoomError, RoomsConfig,
    Sequenced, owner_of,
};

/// A shard's handle on rooms and broadcast, reached from any connection
/// of the shard with [`Conn::hub`](crate::Conn::hub).
///
/// Publishing queues the message; the shard sends it once the handler's
/// callback returns, with everything else published in the same loop
/// turn: members on this shard are written to directly, and every other
/// shard with members of the room gets one message on its inbox. A
/// message reaches every member of the room, on every shard, in the
/// room's order; see [`Conn::join`](crate::Conn::join).
///
/// Connections that speak raw WebSocket receive a published message as
/// it was prepared; connections that speak `shardcast.v1` receive it in a
/// `Message` envelope with the room and its position.
#[derive(Debug)]
pub struct Hub {
    shard: ShardId,
    shards: usize,
    pub(crate) config: RoomsConfig,
    pub(crate) state: RefCell<HubState>,
}

/// What the hub holds between the handler's calls and the shard's turn.
#[derive(Debug)]
pub(crate) struct HubState {
    pub(crate) local: LocalRooms,
    pub(crate) owned: OwnedRooms,
    /// Publications and broadcasts queued by the handler, sent at the end
    /// of its callback.
    pub(crate) pending: Vec<Pending>,
}

/// Something the handler asked to send to more than one connection.
#[derive(Debug)]
pub(crate) enum Pending {
    Publish(Publication),
    Broadcast(PreparedMessage),
    Notice(ShardId, Notice),
}

impl Hub {
    /// The hub of shard `shard` of `shards`.
    pub(crate) fn new(shard: ShardId, shards: usize, config: RoomsConfig) -> Hub {
        Hub {
            shard,
            shards,
            config,
            state: RefCell::new(HubState {
                local: LocalRooms::default(),
                owned: OwnedRooms::new(shards),
                pending: Vec::new(),
            }),
        }
    }

    /// The shard this hub belongs to.
    #[must_use]
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// How many shards the server runs.
    #[must_use]
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard that owns (sequences) `room`.
    #[must_use]
    pub fn owner_of(&self, room: &str) -> ShardId {
        owner_of(room, self.shards)
    }

    /// Publishes `message` to every member of `room`, on every shard.
    ///
    /// # Errors
    /// An empty or too long room name.
    pub fn publish(&self, room: &str, message: &PreparedMessage) -> Result<(), RoomError> {
        self.publish_with(room, message, None, None, None)
    }

    /// Publishes `message` to every member of `room` but `except`.
    ///
    /// # Errors
    /// As for [`Hub::publish`].
    pub fn publish_except(
        &self,
        room: &str,
        message: &PreparedMessage,
        except: ConnId,
    ) -> Result<(), RoomError> {
        self.publish_with(room, message, Some(except), None, None)
    }

    /// Publishes `message` to each room of `rooms`. Each room's stream
    /// numbers it on its own, so a connection in two of the rooms receives
    /// it twice, once in each room's order.
    ///
    /// # Errors
    /// An empty or too long room name; then nothing is published.
    pub fn publish_many(&self, rooms: &[&str], message: &PreparedMessage) -> Result<(), RoomError> {
        for room in rooms {
            self.config.check_name(room)?;
        }
        for room in rooms {
            self.publish_with(room, message, None, None, None)?;
        }
        Ok(())
    }

    /// Sends `message` to every open connection of the server, as it was
    /// prepared, whatever protocol the connection speaks.
    pub fn broadcast(&self, message: &PreparedMessage) {
        self.state
            .borrow_mut()
            .pending
            .push(Pending::Broadcast(message.clone()));
    }

    /// The members of `room` on this shard.
    #[must_use]
    pub fn local_size(&self, room: &str) -> usize {
        self.state.borrow().local.members(room).len()
    }

    /// The ids of the members of `room` on this shard.
    #[must_use]
    pub fn local_members(&self, room: &str) -> Vec<ConnId> {
        self.state
            .borrow()
            .local
            .members(room)
            .iter()
            .map(|member| member.id)
            .collect()
    }

    /// Queues a publication for the end of the handler's callback.
    pub(crate) fn publish_with(
        &self,
        room: &str,
        message: &PreparedMessage,
        except: Option<ConnId>,
        receipt: Option<Receipt>,
        publisher: Option<Arc<str>>,
    ) -> Result<(), RoomError> {
        self.config.check_name(room)?;
        let mut state = self.state.borrow_mut();
        // The name this shard interned, if its connections are in the
        // room (a member publishing), rather than a new allocation.
        let room = state.local.name(room).unwrap_or_else(|| room.into());
        state.pending.push(Pending::Publish(Publication {
            room,
            message: message.clone(),
            except,
            receipt,
            publisher,
        }));
        Ok(())
    }

    /// Adds the connection `member` to `room`; see
    /// [`Conn::join`](crate::Conn::join).
    pub(crate) fn join(
        &self,
        member: Member,
        room: &str,
        name: Option<Arc<str>>,
        after: Position,
    ) -> Result<bool, RoomError> {
        let owned_here = owner_of(room, self.shards) == self.shard;
        let mut state = self.state.borrow_mut();
        let HubState { local, owned, .. } = &mut *state;
        local.join(member, room, name, &self.config, after, |name| {
            owned_here.then(|| owned.position(name))
        })
    }

    /// Makes the recovered held memberships of the connection at `key`
    /// live; the messages kept for them, in order.
    pub(crate) fn release(&self, key: u32) -> Vec<Arc<Sequenced>> {
        self.state.borrow_mut().local.release(key)
    }

    /// The rooms the connection at `key` is in, with its presence flag.
    pub(crate) fn memberships_of(&self, key: u32) -> Vec<(Arc<str>, bool)> {
        self.state.borrow().local.memberships_of(key)
    }

    /// Sends `notice` to the handler of `shard` (this one included): it
    /// arrives in [`Handler::on_notice`](crate::Handler::on_notice), after
    /// the current callback returns, in the order notices were sent from
    /// this shard.
    pub fn notify(&self, shard: ShardId, notice: Notice) {
        self.state
            .borrow_mut()
            .pending
            .push(Pending::Notice(shard, notice));
    }

    /// Removes the connection at `key` from `room`.
    pub(crate) fn leave(&self, key: u32, room: &str) -> bool {
        self.state.borrow_mut().local.leave(key, room)
    }

    /// The rooms the connection at `key` is in.
    pub(crate) fn rooms_of(&self, key: u32) -> Vec<Arc<str>> {
        self.state.borrow().local.rooms_of(key)
    }

    /// Whether the connection at `key` is in `room`.
    pub(crate) fn is_member(&self, key: u32, room: &str) -> bool {
        self.state.borrow().local.is_member(key, room)
    }
}
