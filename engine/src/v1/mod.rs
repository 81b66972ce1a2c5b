//! The server side of the `shardcast.v1` protocol: FlatBuffers envelopes
//! for rooms, named events with acknowledgements, and errors with codes
//! (schema and wire format: [`shardcast_proto::envelope`]).
//!
//! - [`Protocol`] is the [`Handler`](crate::Handler) that serves it: it
//!   reads each connection's envelopes, runs the middleware, works on
//!   rooms and routes events.
//! - [`Router`] maps event names to handlers, whose [`Reply`] answers the
//!   client's acknowledgement request.
//! - Middleware: upgrade layers ([`crate::middleware`]) decide on the
//!   upgrade and learn who the client is ([`Session::identity`]); a token
//!   bucket per connection ([`Protocol::rate_limit`]) and message layers
//!   ([`MessageLayer`]) decide on every request, in a defined order.
//! - [`Plugin`]s bundle routes, layers and hooks.
//! - [`emit`] sends an event to a client.
//!
//! Room messages may reach a client in `Batch`es, one per loop turn
//! ([`ServerBuilder::batch_deliveries`](crate::ServerBuilder::batch_deliveries)).
//!
//! Sessions: every connection starts with a `Welcome` naming its session
//! and a resume token (HMAC-signed, good for one resume). When the link
//! drops, the session (rooms, user, application state) waits for
//! [`Protocol::session_timeout`]; a `Resume` on a new connection, on any
//! shard, takes it over, rejoins its rooms and replays what the client
//! missed from each room's history, or says per room why it could not.

mod layer;
mod plugin;
mod protocol;
mod resume;
mod router;
mod sessions;
mod token;

use std::cell::RefCell;

use shardcast_proto::envelope::EnvelopeWriter;

pub use self::layer::{MessageLayer, Request, Verdict};
pub use self::plugin::Plugin;
pub use self::protocol::Protocol;
pub use self::resume::SESSION_RESUMED_ELSEWHERE;
pub use self::router::{EventError, Reply, Router};
pub use shardcast_proto::envelope::{ErrorCode, SUBPROTOCOL};

use self::protocol::PendingJoin;
use self::resume::Resuming;
use self::token::SessionId;
use crate::conn::{Conn, SendError};
use crate::middleware::{Identity, TokenBucket};

/// The per-connection state of a `shardcast.v1` connection: the
/// application's own state `S`, and what the protocol keeps.
#[derive(Debug, Default)]
pub struct Session<S> {
    state: S,
    identity: Identity,
    pub(crate) bucket: Option<TokenBucket>,
    /// Joins whose acknowledgement waits for the join to take effect.
    pub(crate) joins: Vec<PendingJoin>,
    /// The connection's session, while it holds one.
    pub(crate) session: Option<SessionId>,
    /// The generation of the session's last token.
    pub(crate) generation: u32,
    /// The resume in progress on this connection (boxed: a moment in a
    /// connection's life, not worth the bytes of every idle one).
    pub(crate) resuming: Option<Box<Resuming>>,
}

impl<S: Default> Session<S> {
    fn new(identity: Identity) -> Session<S> {
        Session {
            state: S::default(),
            identity,
            bucket: None,
            joins: Vec::new(),
            session: None,
            generation: 0,
            resuming: None,
        }
    }
}

impl<S> Session<S> {
    /// The application's state for this connection.
    #[must_use]
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The application's state for this connection, mutably.
    #[must_use]
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    /// Who the upgrade layers found the client to be.
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

thread_local! {
    /// The envelope buffer of [`emit`] on this shard thread.
    static EMIT: RefCell<EnvelopeWriter> = RefCell::new(EnvelopeWriter::new());
}

/// Sends the event `name` with `payload` to a `shardcast.v1` connection.
///
/// # Errors
/// As for [`Conn::send_binary`].
pub fn emit<S>(conn: &mut Conn<S>, name: &str, payload: &[u8]) -> Result<(), SendError> {
    EMIT.with(|writer| conn.send_binary(writer.borrow_mut().event(name, payload, None)))
}
