//! [`Conn`]: what a handler sees of one connection, and the send buffer
//! its frames are encoded into.

use std::cell::RefCell;
use std::fmt;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::rc::Rc;
use std::sync::Arc;

use shardcast_proto::CloseCode;
use shardcast_proto::deflate::Deflater;
use shardcast_proto::frame::{CloseFrame, EncodeError, Encoder};
use shardcast_proto::role::Server;

use crate::config::Backpressure;
use crate::handler::ShardId;
use crate::hub::Hub;
use crate::prepared::PreparedMessage;
use crate::rooms::{Member, Position, Receipt, RoomError};
use crate::send_queue::{SendPools, SendQueue};
use crate::stats::ShardCounters;

/// A connection's identity, unique across the server for its lifetime: the
/// shard in the top 16 bits, a per-shard sequence number below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    pub(crate) fn new(shard: ShardId, sequence: u64) -> ConnId {
        ConnId(((shard.0 as u64) << 48) | (sequence & ((1 << 48) - 1)))
    }

    /// The shard the connection lives on.
    #[must_use]
    pub fn shard(self) -> ShardId {
        ShardId((self.0 >> 48) as usize)
    }

    /// The id as one number, for logs and maps.
    #[must_use]
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0 >> 48, self.0 & ((1 << 48) - 1))
    }
}

/// Where a connection is on its shard: its slot and its id, to reach it
/// from work that arrives later ([`Handler::on_notice`](crate::Handler::on_notice)),
/// on its shard or from another. Plain data: it may cross shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnAddress {
    pub(crate) key: u32,
    pub(crate) id: ConnId,
}

impl ConnAddress {
    /// The connection's id.
    #[must_use]
    pub fn id(self) -> ConnId {
        self.id
    }

    /// The shard the connection lives on.
    #[must_use]
    pub fn shard(self) -> ShardId {
        self.id.shard()
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame has already been queued; nothing may follow it.
    #[error("the connection is closing")]
    Closing,
    /// The message would have taken the send buffer past its limit. It
    /// was not queued, and the connection is being closed with the code of
    /// the [`Backpressure`] policy.
    #[error("send buffer limit of {limit} bytes exceeded")]
    BufferLimit {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The message was marked droppable and would have taken the send
    /// buffer past its limit: it was dropped for this connection, which
    /// stays open.
    #[error("droppable message dropped: send buffer limit of {limit} bytes reached")]
    Dropped {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The frame breaks RFC 6455: a ping over 125 bytes, or a close code
    /// that may not be sent. A caller bug; the connection is unaffected.
    #[error(transparent)]
    Invalid(#[from] EncodeError),
}

/// How [`Conn::join_with`] joins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoinOptions {
    /// Receive the room's presence notifications (`shardcast.v1`
    /// connections only): a member arrived or left, and the room's size.
    pub presence: bool,
    /// This connection's id in presence notifications, for all its rooms
    /// (set by its first join); default: its [`ConnId`], as text.
    pub member: Option<Arc<str>>,
}

impl JoinOptions {
    /// Options with presence notifications on or off.
    #[must_use]
    pub fn presence(mut self, on: bool) -> JoinOptions {
        self.presence = on;
        self
    }

    /// Names the member in presence notifications.
    #[must_use]
    pub fn member(mut self, id: impl Into<Arc<str>>) -> JoinOptions {
        self.member = Some(id.into());
        self
    }
}

/// How [`Conn::publish_with`] publishes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// The publishing connection does not receive its own message.
    pub except_self: bool,
    /// A tag the handler gets back in
    /// [`Handler::on_published`](crate::Handler::on_published) with the
    /// message's position, once the room's owner has numbered it.
    pub receipt: Option<u64>,
    /// The publisher's member id, revealed to `shardcast.v1` members in
    /// the message's envelope.
    pub publisher: Option<Arc<str>>,
}

impl PublishOptions {
    /// Options that publish to every member with no receipt.
    #[must_use]
    pub fn new() -> PublishOptions {
        PublishOptions::default()
    }

    /// Leaves the publishing connection out.
    #[must_use]
    pub fn except_self(mut self) -> PublishOptions {
        self.except_self = true;
        self
    }

    /// Asks for a receipt carrying `tag`.
    #[must_use]
    pub fn receipt(mut self, tag: u64) -> PublishOptions {
        self.receipt = Some(tag);
        self
    }

    /// Names the publisher.
    #[must_use]
    pub fn publisher(mut self, id: impl Into<Arc<str>>) -> PublishOptions {
        self.publisher = Some(id.into());
        self
    }
}

/// What every connection of a shard shares for sending: the encoder, the
/// one compressor, the pool of send buffers, the counters, the send buffer
/// limit and its policy, and the names of the server's subprotocols.
#[derive(Debug)]
pub(crate) struct SendContext {
    pub(crate) subprotocols: Box<[String]>,
    pub(crate) encoder: Encoder<Server>,
    pub(crate) deflater: RefCell<Deflater>,
    pub(crate) pool: RefCell<SendPools>,
    pub(crate) counters: Arc<ShardCounters>,
    /// The shard's rooms and broadcast.
    pub(crate) hub: Hub,
    /// Index of `shardcast.v1` in `subprotocols`, if the server speaks it.
    pub(crate) v1: Option<u8>,
    pub(crate) send_limit: usize,
    pub(crate) drain_threshold: usize,
    pub(crate) backpressure: Backpressure,
    /// How often the shard pings each connection, if it does.
    pub(crate) heartbeat_interval: Option<std::time::Duration>,
}

/// A compression limit that limits nothing: the client allowed the full
/// 32 KiB window (a window it narrows is 2^14 bytes at most).
const NO_LIMIT: u16 = u16::MAX;

/// The compression limit of a connection that did not negotiate
/// permessage-deflate (a real limit is at least 256 bytes).
const NOT_COMPRESSED: u16 = 0;

/// The subprotocol index of a connection that negotiated none (the server
/// offers at most 255, indexed 0 to 254).
const NO_SUBPROTOCOL: u8 = u8::MAX;

/// A peer's address, compact: an IPv4 address and port inline, an IPv6
/// one boxed (its flow label and scope make it 28 bytes), so a connection
/// carries 16 bytes for it rather than a `SocketAddr`'s 32.
#[derive(Debug)]
enum PeerAddr {
    V4([u8; 4], u16),
    V6(Box<SocketAddrV6>),
}

impl PeerAddr {
    fn new(addr: SocketAddr) -> PeerAddr {
        match addr {
            SocketAddr::V4(v4) => PeerAddr::V4(v4.ip().octets(), v4.port()),
            SocketAddr::V6(v6) => PeerAddr::V6(Box::new(v6)),
        }
    }

    fn get(&self) -> SocketAddr {
        match self {
            PeerAddr::V4(ip, port) => SocketAddr::V4(SocketAddrV4::new((*ip).into(), *port)),
            PeerAddr::V6(v6) => SocketAddr::V6(**v6),
        }
    }
}

/// The close frame this end queued, remembered for [`Handler::on_close`](crate::Handler::on_close).
#[derive(Debug, Clone)]
pub(crate) struct SentClose {
    pub(crate) code: CloseCode,
    pub(crate) reason: Box<str>,
}

/// One connection as its handler sees it: identity, per-connection state
/// and the calls that queue frames.
///
/// Frames are queued in the connection's send buffer and written after
/// the handler returns, together with everything else queued while the
/// same batch of input was handled: one vectored write per connection per
/// loop turn.
pub struct Conn<S> {
    id: ConnId,
    /// The connection's key in its shard's slab: how rooms reach it.
    key: u32,
    peer: PeerAddr,
    state: S,
    pub(crate) queue: SendQueue,
    /// The longest message sent compressed (the window the client allowed
    /// bounds it, 16 KiB at most when it does; [`NO_LIMIT`] when it does
    /// not), or `None` when permessage-deflate was not negotiated.
    /// [`NOT_COMPRESSED`] when permessage-deflate was not negotiated; a
    /// sentinel rather than an `Option`, so that with `subprotocol` it
    /// packs beside `key`.
    compression_limit: u16,
    /// Index of the negotiated subprotocol in the server's list, or
    /// [`NO_SUBPROTOCOL`].
    subprotocol: u8,
    /// Boxed: only a closing connection has one, and idle connections
    /// should not carry its bytes.
    pub(crate) close_sent: Option<Box<SentClose>>,
    ctx: Rc<SendContext>,
}

impl<S> fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer_addr())
            .field("buffered", &self.queue.len())
            .field("closing", &self.close_sent.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> Conn<S> {
    #[expect(clippy::too_many_arguments, reason = "called once, by the handshake")]
    pub(crate) fn new(
        id: ConnId,
        key: u32,
        peer: SocketAddr,
        state: S,
        response: Vec<u8>,
        compression_limit: Option<usize>,
        subprotocol: Option<u8>,
        ctx: Rc<SendContext>,
    ) -> Self {
        Conn {
            id,
            key,
            peer: PeerAddr::new(peer),
            state,
            queue: SendQueue::with_bytes(response),
            compression_limit: compression_limit.map_or(NOT_COMPRESSED, |limit| {
                u16::try_from(limit).unwrap_or(NO_LIMIT).max(1)
            }),
            subprotocol: subprotocol.unwrap_or(NO_SUBPROTOCOL),
            close_sent: None,
            ctx,
        }
    }

    /// The connection's id.
    #[must_use]
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Where the connection is, to reach it later from a
    /// [notice](crate::Handler::on_notice).
    #[must_use]
    pub fn address(&self) -> ConnAddress {
        ConnAddress {
            key: self.key,
            id: self.id,
        }
    }

    /// How often the server pings the connection
    /// ([`ServerBuilder::heartbeat`](crate::ServerBuilder::heartbeat)),
    /// if it does.
    #[must_use]
    pub fn heartbeat_interval(&self) -> Option<std::time::Duration> {
        self.ctx.heartbeat_interval
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer.get()
    }

    /// The subprotocol negotiated in the handshake (one of the server's
    /// [`subprotocols`](crate::ServerBuilder::subprotocols)), or `None`
    /// for raw WebSocket messages.
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        (self.subprotocol != NO_SUBPROTOCOL)
            .then(|| self.ctx.subprotocols[usize::from(self.subprotocol)].as_str())
    }

    /// Whether permessage-deflate was negotiated: messages at or above the
    /// compression threshold are sent compressed when that saves bytes.
    #[must_use]
    pub fn is_compressed(&self) -> bool {
        self.compression_limit != NOT_COMPRESSED
    }

    /// The handler's state for this connection.
    #[must_use]
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The handler's state for this connection, mutably.
    #[must_use]
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    /// Bytes queued and not yet written to the socket.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.queue.len()
    }

    /// Whether the send buffer holds at least the server's
    /// [drain threshold](crate::ServerBuilder::drain_threshold): a
    /// producer should pause and resume in
    /// [`Handler::on_drain`](crate::Handler::on_drain), which is then sure
    /// to come.
    #[must_use]
    pub fn is_backpressured(&self) -> bool {
        self.queue.len() >= self.ctx.drain_threshold
    }

    /// Whether a close frame has been queued: later sends fail.
    #[must_use]
    pub fn is_closing(&self) -> bool {
        self.close_sent.is_some()
    }

    /// Queues a text message, compressed when permessage-deflate was
    /// negotiated, the message reaches the compression threshold and
    /// compression makes it smaller.
    ///
    /// # Errors
    /// [`SendError::Closing`] after a close was queued;
    /// [`SendError::BufferLimit`] if the send buffer would pass its limit,
    /// in which case the connection is closed as the
    /// [`Backpressure`] policy says.
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_data(text.len(), |ctx, out, deflater| {
            ctx.encoder.text(out, text, deflater, ());
        })
    }

    /// Queues a binary message, compressed under the same conditions as
    /// [`Conn::send_text`].
    ///
    /// # Errors
    /// As for [`Conn::send_text`].
    pub fn send_binary(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_data(payload.len(), |ctx, out, deflater| {
            ctx.encoder.binary(out, payload, deflater, ());
        })
    }

    /// Queues a [`PreparedMessage`] by reference: its frame (compressed
    /// once for all connections when permessage-deflate was negotiated) is
    /// shared, not copied.
    ///
    /// # Errors
    /// [`SendError::Closing`] after a close was queued;
    /// [`SendError::Dropped`] if the message is droppable, the policy is
    /// [`Backpressure::DropNewest`] and the send buffer would pass its
    /// limit; [`SendError::BufferLimit`] if it would pass it otherwise,
    /// and the connection is closed as the policy says.
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> Result<(), SendError> {
        if self.close_sent.is_some() {
            return Err(SendError::Closing);
        }
        let ctx = &*self.ctx;
        let mut frame = message.plain_frame();
        if self.compresses(message.payload().len()) {
            let mut deflater = ctx.deflater.borrow_mut();
            if let Some(compressed) = message.compressed_frame(&ctx.encoder, &mut deflater) {
                frame = compressed;
            }
        }
        let limit = ctx.send_limit;
        if self
            .queue
            .push_shared(frame, limit, &mut ctx.pool.borrow_mut())
        {
            ctx.counters.message_sent();
            return Ok(());
        }
        if message.is_droppable() && ctx.backpressure.drops_droppable() {
            ctx.counters.message_dropped();
            return Err(SendError::Dropped { limit });
        }
        self.overflowed();
        Err(SendError::BufferLimit { limit })
    }

    /// The shard's rooms and broadcast: publish to any room, broadcast to
    /// every connection, count and list this shard's members of a room.
    #[must_use]
    pub fn hub(&self) -> &Hub {
        &self.ctx.hub
    }

    /// Joins `room`: from the moment the join takes effect the connection
    /// receives every message published to the room, in the room's order,
    /// exactly once, until it leaves or closes.
    ///
    /// The join takes effect at once when this shard already receives
    /// the room (it has other members here, or owns the room); otherwise
    /// when the room's owner answers this shard's subscription, within a
    /// loop turn or two. Either way [`Handler::on_joined`](crate::Handler::on_joined)
    /// follows, with the room's position at that moment: every message
    /// after it reaches the connection. `Ok(false)`: already a member.
    ///
    /// # Errors
    /// An empty or too long room name, too many rooms for one
    /// connection, or a closing connection.
    pub fn join(&mut self, room: &str) -> Result<bool, RoomError> {
        self.join_with(room, &JoinOptions::default())
    }

    /// [`Conn::join`], as `options` say: with presence notifications (a
    /// `shardcast.v1` connection then receives a `Presence` envelope
    /// whenever a member arrives or leaves, with the room's size), and the
    /// id this connection has in others' notifications.
    ///
    /// # Errors
    /// As for [`Conn::join`].
    pub fn join_with(&mut self, room: &str, options: &JoinOptions) -> Result<bool, RoomError> {
        self.join_member(room, options, None)
    }

    /// Rejoins `room` after a reconnection, from `after`, the last
    /// position the client saw in it: the messages it missed are replayed
    /// from the room's history, before the live ones, with no gap and no
    /// duplicate at the seam.
    ///
    /// Until then the connection is a *held* member: the room's messages
    /// are kept for it. Once the missed messages are in (or known lost:
    /// the history no longer reaches back, or the room's stream started
    /// over), the handler hears
    /// [`Handler::on_recovered`](crate::Handler::on_recovered) rather than
    /// `on_joined`, and [`Conn::release_recovered`] sends everything kept
    /// and makes the membership live. `Ok(false)`: already a member.
    ///
    /// # Errors
    /// As for [`Conn::join`].
    pub fn rejoin(
        &mut self,
        room: &str,
        options: &JoinOptions,
        after: Position,
    ) -> Result<bool, RoomError> {
        self.join_member(room, options, Some(after))
    }

    fn join_member(
        &mut self,
        room: &str,
        options: &JoinOptions,
        after: Option<Position>,
    ) -> Result<bool, RoomError> {
        if self.close_sent.is_some() {
            return Err(RoomError::Closing);
        }
        self.ctx.hub.join(
            Member {
                key: self.key,
                id: self.id,
                presence: options.presence,
                held: after.is_some(),
            },
            room,
            options.member.clone(),
            after.unwrap_or_default(),
        )
    }

    /// Sends what was kept for the connection's recovered rejoins
    /// ([`Conn::rejoin`]): each room's replayed messages, then the live
    /// ones that arrived meanwhile, in order; from here on they are sent
    /// as they come. Rejoins still waiting for their missed messages stay
    /// held.
    pub fn release_recovered(&mut self) {
        let messages = self.ctx.hub.release(self.key);
        for message in &messages {
            let frame = if self.speaks_v1() {
                message.envelope()
            } else {
                &message.message
            };
            if self.send_prepared(frame).is_err() {
                // The send closed the connection, with the reason.
                return;
            }
        }
    }

    /// Leaves `room`: nothing of it is queued to the connection after
    /// this call. `false` if it was not a member.
    pub fn leave(&mut self, room: &str) -> bool {
        self.ctx.hub.leave(self.key, room)
    }

    /// Whether the connection is a member of `room`.
    #[must_use]
    pub fn is_member(&self, room: &str) -> bool {
        self.ctx.hub.is_member(self.key, room)
    }

    /// The rooms the connection is a member of, in no particular order.
    #[must_use]
    pub fn rooms(&self) -> Vec<Arc<str>> {
        self.ctx.hub.rooms_of(self.key)
    }

    /// The rooms the connection is a member of, each with the options to
    /// join it again as it was joined (presence notifications; the member
    /// id is the application's to set again).
    #[must_use]
    pub fn memberships(&self) -> Vec<(Arc<str>, JoinOptions)> {
        self.ctx
            .hub
            .memberships_of(self.key)
            .into_iter()
            .map(|(room, presence)| (room, JoinOptions::default().presence(presence)))
            .collect()
    }

    /// Publishes `message` to every member of `room`, this connection
    /// included if it is one; it need not be a member to publish. Sent
    /// once the handler's callback returns; see [`Hub`].
    ///
    /// # Errors
    /// An empty or too long room name.
    pub fn publish(&mut self, room: &str, message: &PreparedMessage) -> Result<(), RoomError> {
        self.publish_with(room, message, &PublishOptions::default())
    }

    /// Publishes `message` to `room` as `options` say: without this
    /// connection, with a receipt (the handler hears the message's
    /// position in [`Handler::on_published`](crate::Handler::on_published)),
    /// naming the publisher.
    ///
    /// # Errors
    /// An empty or too long room name.
    pub fn publish_with(
        &mut self,
        room: &str,
        message: &PreparedMessage,
        options: &PublishOptions,
    ) -> Result<(), RoomError> {
        let receipt = options.receipt.map(|tag| Receipt {
            conn: self.id,
            key: self.key,
            tag,
        });
        self.ctx.hub.publish_with(
            room,
            message,
            options.except_self.then_some(self.id),
            receipt,
            options.publisher.clone(),
        )
    }

    /// Whether the connection negotiated the `shardcast.v1` subprotocol:
    /// room messages reach it in `Message` envelopes.
    #[must_use]
    pub fn speaks_v1(&self) -> bool {
        Some(self.subprotocol) == self.ctx.v1
    }

    /// Queues a `shardcast.v1` batch of room messages built for this
    /// connection: dropped and counted like a droppable prepared message
    /// when all its messages are droppable and the buffer is full, else
    /// queued or closing the connection like [`Conn::send_binary`].
    pub(crate) fn send_batch(&mut self, batch: &[u8], droppable: bool) -> Result<(), SendError> {
        let limit = self.ctx.send_limit;
        if droppable
            && self.ctx.backpressure.drops_droppable()
            && self.queue.len() + batch.len() + 14 > limit
        {
            self.ctx.counters.message_dropped();
            return Err(SendError::Dropped { limit });
        }
        self.send_binary(batch)
    }

    /// Queues a ping; the peer answers with a pong carrying `payload`.
    ///
    /// # Errors
    /// [`SendError::Closing`] after a close was queued;
    /// [`SendError::Invalid`] for a payload over 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        if self.close_sent.is_some() {
            return Err(SendError::Closing);
        }
        let encoder = &self.ctx.encoder;
        let mut encoded = Ok(());
        // Nothing is appended when encoding fails.
        let mut pool = self.ctx.pool.borrow_mut();
        self.queue
            .encode_control(&mut pool, |out| encoded = encoder.ping(out, payload, ()));
        Ok(encoded?)
    }

    /// Starts the close handshake: queues a close frame with `code` and
    /// `reason` (cut to fit 123 bytes). The engine then waits for the
    /// peer's close frame, bounded by the close timeout, and drops the
    /// connection; messages that arrive meanwhile are discarded.
    ///
    /// # Errors
    /// [`SendError::Closing`] if a close was already queued;
    /// [`SendError::Invalid`] for a code that may not be sent (1005, 1006,
    /// 1015, outside 1000-4999).
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if self.close_sent.is_some() {
            return Err(SendError::Closing);
        }
        let encoder = &self.ctx.encoder;
        let frame = Some(CloseFrame { code, reason });
        let mut encoded = Ok(());
        // Nothing is appended when encoding fails.
        let mut pool = self.ctx.pool.borrow_mut();
        self.queue
            .encode_control(&mut pool, |out| encoded = encoder.close(out, frame, ()));
        encoded?;
        self.close_sent = Some(Box::new(SentClose {
            code,
            reason: reason.into(),
        }));
        Ok(())
    }

    /// Queues a pong; used by the engine to answer pings.
    pub(crate) fn pong(&mut self, payload: &[u8]) {
        if self.close_sent.is_none() {
            let encoder = &self.ctx.encoder;
            // The decoder refuses pings over 125 bytes, so this cannot fail.
            let mut pool = self.ctx.pool.borrow_mut();
            self.queue
                .encode_control(&mut pool, |out| drop(encoder.pong(out, payload, ())));
        }
    }

    /// Closes with an engine-chosen code that is always allowed on the
    /// wire, unless a close is already queued.
    pub(crate) fn close_with(&mut self, code: CloseCode, reason: &str) {
        if self.close_sent.is_none() {
            let code = if code.is_allowed_on_wire() {
                code
            } else {
                CloseCode::PROTOCOL_ERROR
            };
            let _ = self.close(code, reason);
        }
    }

    fn send_data(
        &mut self,
        len: usize,
        encode: impl FnOnce(&SendContext, &mut Vec<u8>, Option<&mut Deflater>),
    ) -> Result<(), SendError> {
        if self.close_sent.is_some() {
            return Err(SendError::Closing);
        }
        let ctx = &*self.ctx;
        let limit = ctx.send_limit;
        let mut pool = ctx.pool.borrow_mut();
        let queued = if self.compresses(len) {
            let mut deflater = ctx.deflater.borrow_mut();
            self.queue.encode(limit, &mut pool, |out| {
                encode(ctx, out, Some(&mut deflater))
            })
        } else {
            self.queue
                .encode(limit, &mut pool, |out| encode(ctx, out, None))
        };
        drop(pool);
        if !queued {
            self.overflowed();
            return Err(SendError::BufferLimit { limit });
        }
        ctx.counters.message_sent();
        Ok(())
    }

    /// Whether a message of `len` bytes may go compressed on this
    /// connection.
    fn compresses(&self, len: usize) -> bool {
        let limit = self.compression_limit;
        limit != NOT_COMPRESSED && (limit == NO_LIMIT || len <= usize::from(limit))
    }

    /// Queues a heartbeat ping, unless a close is queued.
    pub(crate) fn heartbeat(&mut self) {
        // An empty payload always encodes.
        let _ = self.ping(&[]);
    }

    /// A message did not fit in the send buffer: close as the policy says.
    fn overflowed(&mut self) {
        let code = self.ctx.backpressure.close_code();
        self.close_with(code, "send buffer limit exceeded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_round_trip() {
        for text in [
            "192.0.2.7:443",
            "[2001:db8::1%3]:8080",
            "[::ffff:192.0.2.7]:1",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(PeerAddr::new(addr).get(), addr);
        }
        assert_eq!(size_of::<PeerAddr>(), 16);
    }

    #[test]
    fn a_conn_id_carries_its_shard_and_sequence() {
        let id = ConnId::new(ShardId(3), 42);
        assert_eq!(id.shard(), ShardId(3));
        assert_eq!(id.as_u64() & 0xffff_ffff_ffff, 42);
        assert_eq!(id.to_string(), "3/42");
    }
}
