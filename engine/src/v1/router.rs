//! [`Router`]: named events to their handlers, and what a handler answers
//! ([`Reply`], [`EventError`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use shardcast_proto::envelope::ErrorCode;

use super::Session;
use crate::conn::Conn;

/// Why a request failed: the `ErrorCode` the client acts on, and a
/// human-readable message for its logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventError {
    code: ErrorCode,
    message: Cow<'static, str>,
}

impl EventError {
    /// A failure with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> EventError {
        EventError {
            code,
            message: message.into(),
        }
    }

    /// The request was malformed or had an invalid argument: do not retry.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> EventError {
        EventError::new(ErrorCode::BadRequest, message)
    }

    /// The client may not do this: do not retry.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> EventError {
        EventError::new(ErrorCode::Forbidden, message)
    }

    /// The server failed to handle the request: retry later.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> EventError {
        EventError::new(ErrorCode::Internal, message)
    }

    /// The code the client acts on.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message for the client's logs.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for EventError {}

/// What an event handler answers: the acknowledgement's payload, or why
/// the request failed. The answer is sent only when the client asked for
/// an acknowledgement; a failure without one is sent as an `Error`.
pub type Reply = Result<Vec<u8>, EventError>;

/// An event handler: the connection the event came from, and its payload.
type Route<S> = Box<dyn FnMut(&mut Conn<Session<S>>, &[u8]) -> Reply>;

/// Routes named events to their handlers, on one shard.
///
/// Handlers run on the shard thread with the connection the event came
/// from: they may answer, join and leave rooms, publish, and emit events
/// back ([`emit`](super::emit)). Like every handler, they must not block.
///
/// ```
/// use shardcast::v1::{EventError, Router};
///
/// let router: Router<()> = Router::new()
///     .on("echo", |_conn, payload| Ok(payload.to_vec()))
///     .on("shout", |_conn, payload| match std::str::from_utf8(payload) {
///         Ok(text) => Ok(text.to_uppercase().into_bytes()),
///         Err(_) => Err(EventError::bad_request("shout takes text")),
///     });
/// assert!(router.routes("echo"));
/// assert!(!router.routes("whisper"));
/// ```
pub struct Router<S> {
    routes: HashMap<Box<str>, Route<S>>,
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.routes.keys().map(|name| &**name).collect();
        names.sort_unstable();
        f.debug_struct("Router").field("events", &names).finish()
    }
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router::new()
    }
}

impl<S> Router<S> {
    /// A router with no routes: every event is answered `UnknownEvent`.
    #[must_use]
    pub fn new() -> Router<S> {
        Router {
            routes: HashMap::new(),
        }
    }

    /// Routes the event `name` to `handler`, replacing an earlier route of
    /// the same name.
    #[must_use]
    pub fn on(
        mut self,
        name: &str,
        handler: impl FnMut(&mut Conn<Session<S>>, &[u8]) -> Reply + 'static,
    ) -> Router<S> {
        self.add(name, handler);
        self
    }

    /// [`Router::on`], by reference: for plugins that add routes to a
    /// router already built.
    pub fn add(
        &mut self,
        name: &str,
        handler: impl FnMut(&mut Conn<Session<S>>, &[u8]) -> Reply + 'static,
    ) {
        self.routes.insert(name.into(), Box::new(handler));
    }

    /// Whether an event `name` has a handler.
    #[must_use]
    pub fn routes(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }

    /// Runs the handler of `name`; `None` when there is none.
    pub(crate) fn dispatch(
        &mut self,
        name: &str,
        conn: &mut Conn<Session<S>>,
        payload: &[u8],
    ) -> Option<Reply> {
        self.routes.get_mut(name).map(|route| route(conn, payload))
    }
}
