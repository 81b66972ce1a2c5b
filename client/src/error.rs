//! What can go wrong, for a call and for a connection.

use std::io;

use shardcast_proto::ProtocolError;
use shardcast_proto::envelope::{EnvelopeError, ErrorCode};
use shardcast_proto::handshake::{ApiMisuse, ResponseError};

/// Why a call failed, or why a connection attempt or a connection did.
///
/// The `Display` text is for logs and is not stable; match on the variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a `ws://` URL this client can connect to.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The upgrade request cannot be written: an extra header is invalid
    /// or is one the handshake writes itself.
    #[error("invalid upgrade request: {0}")]
    Request(#[from] ApiMisuse),
    /// [`Client::start`](crate::Client::start) was called outside a Tokio
    /// runtime.
    #[error("no Tokio runtime to run the client on")]
    NoRuntime,
    /// A socket error: the TCP connection could not be made, or failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The server's answer to the upgrade request was not a valid
    /// WebSocket upgrade (a refusal such as 401 or 503 included).
    #[error("upgrade refused: {0}")]
    Upgrade(#[from] ResponseError),
    /// The client asked for `shardcast.v1` and the server upgraded without
    /// it.
    #[error("the server does not speak shardcast.v1")]
    SubprotocolRefused,
    /// The server broke RFC 6455 (or a configured limit); the connection
    /// was closed with the matching close code.
    #[error("WebSocket protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server sent something that is not a valid `shardcast.v1`
    /// envelope, or an envelope out of place.
    #[error("invalid envelope from the server: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The server broke the `shardcast.v1` session rules (an envelope
    /// before its `Welcome`, a second fresh `Welcome`, ...).
    #[error("shardcast.v1 session error: {0}")]
    Session(&'static str),
    /// No answer in time: a request's acknowledgement, or the upgrade and
    /// `Welcome` of a connection attempt.
    #[error("timed out")]
    Timeout,
    /// The send buffer is full and its policy is to fail
    /// ([`WhenFull::Fail`](crate::WhenFull::Fail)).
    #[error("the send buffer is full")]
    BufferFull,
    /// The request was written, then the connection was lost before its
    /// answer came: the server may or may not have acted on it. It is not
    /// sent again.
    #[error("the connection was lost before the answer came")]
    Disconnected,
    /// The client was closed, or gave up reconnecting.
    #[error("the client is closed")]
    Closed,
    /// The server refused the request.
    #[error("the server refused the request: {code:?} {message}")]
    Refused {
        /// What the server said went wrong, and so what to do about it.
        code: ErrorCode,
        /// A human-readable detail, for logs.
        message: String,
    },
    /// The call needs the other protocol mode: rooms, events and requests
    /// need `shardcast.v1`, plain text and binary messages need raw mode.
    #[error("not available in this protocol mode")]
    WrongMode,
}

impl Error {
    /// The server's error code, for a refusal.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the same call may succeed if made again later: the
    /// connection was lost, the buffer was full, the answer was late, or
    /// the server asked to retry later.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout | Error::BufferFull | Error::Disconnected | Error::Io(_) => true,
            Error::Refused { code, .. } => {
                matches!(*code, ErrorCode::RateLimited | ErrorCode::Internal)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_their_code() {
        let refused = Error::Refused {
            code: ErrorCode::RateLimited,
            message: String::new(),
        };
        assert_eq!(refused.code(), Some(ErrorCode::RateLimited));
        assert!(refused.is_transient());
        let forbidden = Error::Refused {
            code: ErrorCode::Forbidden,
            message: String::new(),
        };
        assert!(!forbidden.is_transient());
        assert_eq!(Error::Timeout.code(), None);
        assert!(!Error::WrongMode.is_transient());
    }
}
