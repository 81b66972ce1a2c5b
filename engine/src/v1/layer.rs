//! [`MessageLayer`]: middleware that sees every request of a
//! `shardcast.v1` connection before it is acted on.

use std::borrow::Cow;

use super::{EventError, Session};
use crate::CloseCode;
use crate::conn::Conn;

/// One request from a client, as message layers see it. Layers may
/// rewrite a payload (validation that normalizes, redaction, enrichment)
/// by replacing it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Request<'a> {
    /// Join a room.
    Join {
        /// The room.
        room: &'a str,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: &'a str,
    },
    /// Publish to a room.
    Publish {
        /// The room.
        room: &'a str,
        /// The message, as the members will receive it.
        payload: Cow<'a, [u8]>,
    },
    /// A named event for the router.
    Event {
        /// The event's name.
        name: &'a str,
        /// The event's payload, as its handler will receive it.
        payload: Cow<'a, [u8]>,
    },
}

impl Request<'_> {
    /// The room a join, leave or publish is about.
    #[must_use]
    pub fn room(&self) -> Option<&str> {
        match self {
            Request::Join { room } | Request::Leave { room } | Request::Publish { room, .. } => {
                Some(room)
            }
            Request::Event { .. } => None,
        }
    }
}

/// What a layer decides about a request.
#[derive(Debug)]
pub enum Verdict {
    /// Hand the request to the next layer, then act on it.
    Pass,
    /// Ignore the request without an answer, not even to an
    /// acknowledgement request: for traffic the application chose not to
    /// serve (a muted user). The layer is responsible for logging it.
    Drop,
    /// Refuse the request: the client gets the error, in the
    /// acknowledgement it asked for or in an `Error` envelope.
    Refuse(EventError),
    /// Close the connection with this code and reason.
    Close(CloseCode, Cow<'static, str>),
}

/// Middleware for the requests of `shardcast.v1` connections: validation,
/// authorization, transformation, filtering.
///
/// A [`Protocol`](super::Protocol) runs its layers in the order they were
/// added, after its per-connection rate limit and before it acts on the
/// request; the first verdict other than [`Verdict::Pass`] decides. Layers
/// run on the shard thread and must not block.
pub trait MessageLayer<S>: 'static {
    /// Decides about `request` from `conn`.
    fn check(&mut self, conn: &mut Conn<Session<S>>, request: &mut Request<'_>) -> Verdict;
}

impl<S, F> MessageLayer<S> for F
where
    F: FnMut(&mut Conn<Session<S>>, &mut Request<'_>) -> Verdict + 'static,
{
    fn check(&mut self, conn: &mut Conn<Session<S>>, request: &mut Request<'_>) -> Verdict {
        self(conn, request)
    }
}
