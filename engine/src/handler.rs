//! The application's side of a connection: the [`Handler`] trait, what it
//! receives ([`Message`]) and how it refuses an upgrade ([`Rejection`]).

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

use shardcast_proto::CloseCode;
use shardcast_proto::handshake::UpgradeRequest;

use crate::conn::Conn;
use crate::notice::{Notice, ShardConns};
use crate::rooms::{Position, Recovery};

/// The index of a shard, 0 to the shard count - 1: which thread a handler
/// or a connection lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub(crate) usize);

impl ShardId {
    /// The shard's index.
    #[must_use]
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A whole data message from the peer, handed to [`Handler::on_message`].
///
/// Control frames never reach the handler: the engine answers pings and
/// runs the close handshake itself. The message borrows the shard's receive
/// buffer (or the connection's reassembly buffer, or the shard's inflater)
/// and is valid only during the call; copy what must outlive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, already validated as UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl Message<'_> {
    /// The payload's bytes, whatever the kind.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }
}

/// An HTTP answer that refuses an upgrade: status, reason phrase and body.
///
/// Returned by [`Handler::on_upgrade`] (for example 401 or 403 after an
/// auth or origin check); the engine writes it and closes the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    status: u16,
    reason: Cow<'static, str>,
    body: Cow<'static, [u8]>,
}

impl Rejection {
    /// A rejection with an HTTP `status` (200-599; anything else is sent as
    /// 500) and a reason phrase (printable ASCII), and an empty body.
    pub fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            status,
            reason: reason.into(),
            body: Cow::Borrowed(&[]),
        }
    }

    /// Sets the response body, sent with a `Content-Length`.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Cow<'static, [u8]>>) -> Self {
        self.body = body.into();
        self
    }

    /// The HTTP status code.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The response body.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// The application's code for one shard: it decides on upgrades and reacts
/// to each connection's messages.
///
/// The server's factory creates one handler per shard, on that shard's
/// thread, so a handler need not be `Send` and may keep shard-local state
/// (caches, `Rc`s) without locks. Every method runs on the shard thread,
/// between reads: a method that blocks stalls every connection of the
/// shard.
///
/// A panic in a callback is caught: that one connection is closed with
/// 1011 (an upgrade is answered 500) and the shard goes on.
pub trait Handler: 'static {
    /// Per-connection state the handler keeps, reachable through
    /// [`Conn::state`] and [`Conn::state_mut`].
    type State: 'static;

    /// Decides whether to accept a valid upgrade request from `peer`: the
    /// connection's initial state, or the HTTP answer that refuses it.
    ///
    /// # Errors
    /// A [`Rejection`] refuses the upgrade; the engine writes it and closes.
    fn on_upgrade(
        &mut self,
        request: &UpgradeRequest<'_>,
        peer: SocketAddr,
    ) -> Result<Self::State, Rejection>;

    /// The 101 response is queued and the connection is open. Messages
    /// sent from here go out with the 101, in the same write.
    fn on_open(&mut self, conn: &mut Conn<Self::State>) {
        let _ = conn;
    }

    /// A whole text or binary message arrived.
    fn on_message(&mut self, conn: &mut Conn<Self::State>, message: Message<'_>);

    /// The send buffer has been written out after it was backpressured:
    /// it reached the [drain threshold](crate::ServerBuilder::drain_threshold)
    /// or the socket pushed back (the peer reads slower than it is written
    /// to). A producer that paused on [`Conn::is_backpressured`] resumes
    /// here. Not called for small buffers written at once.
    fn on_drain(&mut self, conn: &mut Conn<Self::State>) {
        let _ = conn;
    }

    /// A [`Conn::join`] took effect: the connection receives every message
    /// of `room` after `position`. Called once per join that was not
    /// undone (by a leave or a close) before it took effect.
    fn on_joined(&mut self, conn: &mut Conn<Self::State>, room: &str, position: Position) {
        let _ = (conn, room, position);
    }

    /// A [`Conn::rejoin`] took effect and what the connection missed in
    /// `room` is known: `recovery` says how many messages were replayed,
    /// or why they could not be. The messages are kept until
    /// [`Conn::release_recovered`]; this default releases them at once.
    /// Called instead of [`Handler::on_joined`] for a rejoin.
    fn on_recovered(&mut self, conn: &mut Conn<Self::State>, room: &str, recovery: Recovery) {
        let _ = (room, recovery);
        conn.release_recovered();
    }

    /// A [`Notice`] sent to this shard with [`Hub::notify`](crate::Hub::notify)
    /// arrived; `conns` reaches the shard's open connections. The default
    /// drops it.
    fn on_notice(&mut self, conns: &mut ShardConns<'_, Self::State>, notice: Notice) {
        let _ = (conns, notice);
    }

    /// A message published with a receipt
    /// ([`PublishOptions::receipt`](crate::PublishOptions::receipt)) got
    /// its `position` in `room` from the room's owner. Not called if the
    /// connection closed meanwhile.
    fn on_published(
        &mut self,
        conn: &mut Conn<Self::State>,
        room: &str,
        tag: u64,
        position: Position,
    ) {
        let _ = (conn, room, tag, position);
    }

    /// The connection is over; called once for every opened connection,
    /// except those still open when their shard stops at the shutdown
    /// deadline.
    ///
    /// `code` and `reason` say why: the peer's close frame (1005 when it
    /// carried no code), the close this end sent (a protocol error's code,
    /// 1001 on shutdown, idle or heartbeat timeout, the code of the
    /// [`Backpressure`](crate::Backpressure) policy past the send buffer
    /// limit, 1011 after a panic, the application's own), or 1006 when the
    /// TCP connection ended without a close frame. The socket is gone: frames
    /// queued from here are discarded. Release the connection's resources.
    fn on_close(&mut self, conn: &mut Conn<Self::State>, code: CloseCode, reason: &str) {
        let _ = (conn, code, reason);
    }
}

/// A handler that echoes every text and binary message back unchanged and
/// accepts every upgrade: for conformance tests and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _: &UpgradeRequest<'_>, _: SocketAddr) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_message(&mut self, conn: &mut Conn<()>, message: Message<'_>) {
        // A failed send has already closed the connection with the reason.
        let _ = match message {
            Message::Text(text) => conn.send_text(text),
            Message::Binary(bytes) => conn.send_binary(bytes),
        };
    }
}
