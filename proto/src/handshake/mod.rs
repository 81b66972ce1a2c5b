//! The HTTP/1.1 upgrade handshake (RFC 6455 §4), server and client side,
//! with subprotocol and permessage-deflate negotiation.
//!
//! Sans-I/O like the rest of the crate: parsers take every byte received so
//! far and answer [`Progress::NeedMore`], an error, or the parsed head with
//! its length; writers append to a caller's `Vec<u8>`. Randomness (the
//! client's key) is an argument.
//!
//! # Server
//!
//! ```
//! use shardcast_proto::deflate::DeflateConfig;
//! use shardcast_proto::handshake::{HeadLimits, Progress, parse_request, write_rejection};
//!
//! let received = b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\n\
//!     Upgrade: websocket\r\nConnection: Upgrade\r\n\
//!     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
//!     Sec-WebSocket-Protocol: chat, shardcast.v1\r\n\r\n";
//! let mut out = Vec::new();
//! match parse_request(received, &HeadLimits::default()) {
//!     Ok(Progress::NeedMore) => { /* read more, call again with all bytes */ }
//!     Ok(Progress::Done { value: request, head_len }) => {
//!         assert_eq!(request.path(), "/chat");
//!         if request.origin().is_some_and(|o| o != b"https://example.com") {
//!             write_rejection(403, "Forbidden", &[], b"origin refused\n", &mut out).unwrap();
//!         } else {
//!             let accept = request.accept(&["shardcast.v1"], &DeflateConfig::default());
//!             assert_eq!(accept.negotiated().subprotocol, Some("shardcast.v1"));
//!             accept.write_response(&[], &mut out).unwrap();
//!         }
//!         // received[head_len..] is the start of the WebSocket stream.
//!         assert_eq!(head_len, received.len());
//!     }
//!     Err(error) => error.write_response(&mut out),
//! }
//! assert!(out.starts_with(b"HTTP/1.1 101 "));
//! ```
//!
//! # Client
//!
//! ```
//! use shardcast_proto::handshake::{ClientHandshake, Progress, generate_key};
//!
//! // The 16 bytes come from the caller's random source.
//! let key = generate_key([7; 16]);
//! let mut handshake = ClientHandshake::new("example.com", "/chat", key);
//! handshake.subprotocols = &["shardcast.v1"];
//! let mut request = Vec::new();
//! handshake.write_request(&mut request).unwrap();
//!
//! let response = format!(
//!     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
//!      Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: shardcast.v1\r\n\r\n",
//!     key.expected_accept().as_str(),
//! );
//! match handshake.parse_response(response.as_bytes()).unwrap() {
//!     Progress::NeedMore => unreachable!("the response is complete"),
//!     Progress::Done { value, .. } => {
//!         assert_eq!(value.subprotocol, Some("shardcast.v1"));
//!         assert_eq!(value.deflate, None);
//!     }
//! }
//! ```

mod client;
mod error;
mod extension;
mod http;
mod key;
mod request;
mod response;

use crate::deflate::DeflateParams;

pub use client::ClientHandshake;
pub use error::{ApiMisuse, RequestError, ResponseError};
pub use extension::{Extension, ExtensionParam, ExtensionSyntaxError, parse_extensions};
pub use http::{HeadLimits, Header, Progress};
pub use key::{AcceptKey, ClientKey, accept_key, generate_key};
pub use request::{UpgradeRequest, parse_request};
pub use response::{Accept, write_rejection};

/// What a completed handshake agreed on, the same for both roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Negotiated<'p> {
    /// The subprotocol in use (`shardcast.v1` selects envelopes), or `None`
    /// for raw WebSocket messages. Borrowed from the list of subprotocols
    /// the local end supplied.
    pub subprotocol: Option<&'p str>,
    /// The permessage-deflate parameters for the frame codec, or `None` for
    /// no compression.
    pub deflate: Option<DeflateParams>,
}
