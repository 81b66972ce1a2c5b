//! What the client reports: messages from rooms and the server, and every
//! change of its connection's state.

use std::time::Duration;

use shardcast_proto::CloseCode;
use shardcast_proto::envelope::ErrorCode;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::sequence::Position;

/// One thing that happened, in the order it happened.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Connection attempt `attempt` (1 for the first after a start or a
    /// loss) is starting.
    Connecting {
        /// Attempts made in a row, this one included.
        attempt: u32,
    },
    /// A connection is up with a new session: in `shardcast.v1` mode the
    /// server's `Welcome` arrived (and, if the client had a session, it
    /// could not be resumed: the rooms are being rejoined and each one is
    /// reported with [`Event::RecoveryFailed`]); in raw mode the upgrade
    /// completed.
    Connected {
        /// The new session's id; `None` in raw mode.
        session_id: Option<String>,
    },
    /// The connection resumed the previous session: every room that follows
    /// no [`Event::RecoveryFailed`] lost no message.
    Resumed {
        /// The session's id.
        session_id: String,
    },
    /// Messages of `room` were lost across a reconnection: the
    /// application must refetch the room's state. Messages after
    /// `position` follow.
    RecoveryFailed {
        /// The room.
        room: String,
        /// Why: `GapTooLarge` (history no longer holds the gap),
        /// `EpochChanged` (the room's stream was reset), `RecoveryFailed`
        /// (the session itself was lost, the room was rejoined), ...
        code: ErrorCode,
        /// Where the room's stream continues: the next message has the
        /// next offset. `None` if the room could not be rejoined: the
        /// client is no longer in it.
        position: Option<Position>,
    },
    /// The connection (or a connection attempt) ended. The client
    /// reconnects after a backoff unless it was closed or gives up.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// The client stopped reconnecting after this many failed attempts in
    /// a row ([`Backoff::max_attempts`](crate::Backoff::max_attempts)).
    /// The last event.
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
    /// A message published to a room this client joined, in order and
    /// exactly once.
    Message(RoomMessage),
    /// Messages of a room were skipped: the server sent a message whose
    /// offset is not the next one. It should not happen (the server
    /// reports lost messages with [`Event::RecoveryFailed`]); the message
    /// at `got` is delivered after this event.
    Gap {
        /// The room.
        room: String,
        /// The last position delivered.
        last: Position,
        /// The position of the message that arrived.
        got: Position,
    },
    /// A member joined or left a room joined with presence.
    Presence(Presence),
    /// An error the server reported outside any request's answer (such as
    /// `SlowConsumer` for messages it dropped, or a refused request sent
    /// without acknowledgement).
    ServerError {
        /// What went wrong.
        code: ErrorCode,
        /// A human-readable detail, for logs.
        message: String,
        /// The room concerned, if any.
        room: Option<String>,
    },
    /// A text message, in raw mode.
    Text(String),
    /// A binary message, in raw mode.
    Binary(Vec<u8>),
}

/// A message published to a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMessage {
    /// The room.
    pub room: String,
    /// The message's place in the room's stream.
    pub position: Position,
    /// The application data, as published.
    pub payload: Vec<u8>,
    /// The publisher's member id, when the server reveals it.
    pub publisher: Option<String>,
}

/// A member arriving in or leaving a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The room.
    pub room: String,
    /// The member's id.
    pub member: String,
    /// True when the member joined, false when it left.
    pub joined: bool,
    /// Members in the room after the change.
    pub count: u32,
}

/// Why a connection, or a connection attempt, ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server closed the connection with a close frame.
    ServerClosed {
        /// Its close code (1005 when the frame carried none).
        code: CloseCode,
        /// Its reason, possibly empty.
        reason: String,
    },
    /// The TCP connection ended without a close frame.
    Eof,
    /// Nothing was heard from the server for this long (no frame of any
    /// kind): the link is taken as dead.
    Silent(Duration),
    /// The connection attempt or the connection failed.
    Failed(Error),
    /// The application closed the client.
    Closed,
}

/// The stream of [`Event`]s of one client, in order.
///
/// Events queue without bound until read: read them (or drop the stream,
/// after which they are discarded). The stream ends after the client is
/// closed (all its handles dropped, or [`Client::close`](crate::Client::close))
/// or gives up.
#[derive(Debug)]
pub struct Events {
    receiver: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    pub(crate) fn new(receiver: mpsc::UnboundedReceiver<Event>) -> Events {
        Events { receiver }
    }

    /// The next event, or `None` once the client has stopped for good.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call loses no event.
    pub async fn next(&mut self) -> Option<Event> {
        self.receiver.recv().await
    }

    /// The next event if one is already queued.
    pub fn try_next(&mut self) -> Option<Event> {
        self.receiver.try_recv().ok()
    }
}
