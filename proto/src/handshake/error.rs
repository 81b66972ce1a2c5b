//! Why a handshake failed: the server's view of a bad request, the client's
//! view of a bad response, and caller bugs.

use crate::deflate::DeflateResponseError;

use super::http::write_header;
use super::response::write_plain_response;

/// Why a server refuses an upgrade request.
///
/// Each variant maps to the HTTP status to answer with
/// ([`RequestError::status`]); [`RequestError::write_response`] writes the
/// whole error response. The `Display` text is for logs and the response
/// body; it is not stable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The bytes are not an HTTP/1.x request head.
    #[error("malformed HTTP request: {0}")]
    Malformed(httparse::Error),
    /// The head is, or already was before its end, larger than
    /// [`HeadLimits::max_head_bytes`](super::HeadLimits::max_head_bytes).
    #[error("request head exceeds {max} bytes")]
    HeadTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// The head has more header lines than
    /// [`HeadLimits::max_headers`](super::HeadLimits::max_headers).
    #[error("request has more than {max} headers")]
    TooManyHeaders {
        /// The configured limit.
        max: usize,
    },
    /// The method is not GET (RFC 6455 §4.1). Answered with 405 and
    /// `Allow: GET` rather than 400, so that a client can tell it reached a
    /// WebSocket endpoint with the wrong method.
    #[error("method not allowed, use GET")]
    MethodNotAllowed,
    /// The request is HTTP/1.0; the upgrade needs HTTP/1.1 (RFC 6455 §4.1).
    #[error("HTTP/1.1 required")]
    Http10,
    /// No `Host` header (RFC 9112 §3.2).
    #[error("missing Host header")]
    MissingHost,
    /// The `Host` header value is not valid text.
    #[error("invalid Host header")]
    InvalidHost,
    /// A header that must appear once appears on several lines.
    #[error("repeated {0} header")]
    DuplicateHeader(&'static str),
    /// `Upgrade` does not list `websocket`.
    #[error("Upgrade header does not name websocket")]
    NotWebSocketUpgrade,
    /// `Connection` does not list `upgrade`.
    #[error("Connection header does not include upgrade")]
    NotConnectionUpgrade,
    /// No `Sec-WebSocket-Version`; answered with 426 and the version we
    /// speak, like any other version.
    #[error("missing Sec-WebSocket-Version, 13 required")]
    MissingVersion,
    /// `Sec-WebSocket-Version` is not 13 (RFC 6455 §4.2.2, item 4).
    #[error("unsupported Sec-WebSocket-Version, 13 required")]
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key`.
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    /// `Sec-WebSocket-Key` is not the base64 of 16 bytes.
    #[error("Sec-WebSocket-Key is not base64 of 16 bytes")]
    InvalidKey,
}

impl RequestError {
    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::HeadTooLarge { .. } | RequestError::TooManyHeaders { .. } => 431,
            RequestError::MethodNotAllowed => 405,
            RequestError::MissingVersion | RequestError::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// Appends the complete HTTP error response to `out`: status line,
    /// `Content-Type`, `Content-Length`, `Connection: close`, the headers
    /// the status calls for (`Allow: GET` with 405,
    /// `Sec-WebSocket-Version: 13` with 426) and a short text body.
    ///
    /// The caller writes it and then closes the connection.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let status = self.status();
        let body = format!("{self}\n");
        write_plain_response(out, status, reason_phrase(status), body.as_bytes(), |out| {
            write_header(out, "Content-Type", b"text/plain; charset=utf-8");
            match self {
                RequestError::MethodNotAllowed => write_header(out, "Allow", b"GET"),
                RequestError::MissingVersion | RequestError::UnsupportedVersion => {
                    write_header(out, "Sec-WebSocket-Version", b"13");
                }
                _ => {}
            }
        });
    }
}

/// The reason phrase for the statuses this module sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    }
}

/// Why a client fails the handshake on the server's response
/// (RFC 6455 §4.1, "the client MUST _Fail the WebSocket Connection_").
///
/// The `Display` text is for logs; it is not stable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The bytes are not an HTTP/1.x response head.
    #[error("malformed HTTP response: {0}")]
    Malformed(httparse::Error),
    /// The head is larger than the configured limit.
    #[error("response head exceeds {max} bytes")]
    HeadTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// The head has more header lines than the configured limit.
    #[error("response has more than {max} headers")]
    TooManyHeaders {
        /// The configured limit.
        max: usize,
    },
    /// The response is HTTP/1.0.
    #[error("HTTP/1.1 required")]
    Http10,
    /// The status is not 101: the server refused the upgrade (or redirects;
    /// following redirects is the caller's choice).
    #[error("server answered {0} instead of 101")]
    UnexpectedStatus(u16),
    /// `Upgrade` does not name `websocket`.
    #[error("Upgrade header does not name websocket")]
    NotWebSocketUpgrade,
    /// `Connection` does not list `upgrade`.
    #[error("Connection header does not include upgrade")]
    NotConnectionUpgrade,
    /// A header that must appear once appears on several lines.
    #[error("repeated {0} header")]
    DuplicateHeader(&'static str),
    /// No `Sec-WebSocket-Accept`.
    #[error("missing Sec-WebSocket-Accept")]
    MissingAccept,
    /// `Sec-WebSocket-Accept` does not match the key we sent.
    #[error("Sec-WebSocket-Accept does not match the key sent")]
    AcceptMismatch,
    /// The server chose a subprotocol we did not offer.
    #[error("server chose a subprotocol that was not offered")]
    UnofferedSubprotocol,
    /// The server named more than one subprotocol.
    #[error("server chose more than one subprotocol")]
    MultipleSubprotocols,
    /// The server's `Sec-WebSocket-Extensions` is malformed, names an
    /// extension we did not offer, or sets permessage-deflate parameters we
    /// cannot honour.
    #[error(transparent)]
    Extension(#[from] DeflateResponseError),
}

/// A caller bug: an argument this crate refuses to put on the wire, such as
/// a header value with a line break that would split the HTTP head.
///
/// Nothing is written to the output buffer when this is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// A status code outside 200-999 (1xx statuses are not final responses,
    /// and 101 is written by accepting).
    #[error("status {0} is not a final response status")]
    InvalidStatus(u16),
    /// A reason phrase with control characters.
    #[error("reason phrase contains control characters")]
    InvalidReason,
    /// Extra header number `index` has a name that is not an HTTP token.
    #[error("extra header {index} has an invalid name")]
    InvalidHeaderName {
        /// Position in the caller's list.
        index: usize,
    },
    /// Extra header number `index` has a value with control characters or
    /// surrounding whitespace.
    #[error("extra header {index} has an invalid value")]
    InvalidHeaderValue {
        /// Position in the caller's list.
        index: usize,
    },
    /// Extra header number `index` is one this crate writes itself.
    #[error("extra header {index} is written by the handshake itself")]
    ReservedHeader {
        /// Position in the caller's list.
        index: usize,
    },
    /// The client's host is empty or not visible ASCII.
    #[error("invalid host")]
    InvalidHost,
    /// The client's request target does not start with `/` or is not
    /// visible ASCII.
    #[error("invalid request target")]
    InvalidTarget,
    /// Offered subprotocol number `index` is not an HTTP token.
    #[error("subprotocol {index} is not a token")]
    InvalidSubprotocol {
        /// Position in the caller's list.
        index: usize,
    },
}
