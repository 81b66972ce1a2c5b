//! shardcast-proto: the WebSocket protocol as a pure state machine.
//!
//! This crate takes bytes and gives back events and bytes. It parses and
//! answers the HTTP/1.1 upgrade (both roles), decodes and encodes RFC 6455
//! frames, negotiates and runs permessage-deflate (RFC 7692), and reads and
//! writes the `shardcast.v1` FlatBuffers envelope.
//!
//! What it does not do: any I/O. No sockets, no timers, no threads, no
//! randomness: time and masking keys are arguments, and the caller (the
//! shardcast engine, the client, the load generator) owns the sockets. That
//! is what makes every rule here unit-testable and fuzzable without a
//! network.
// `deny`, not `forbid`: the code flatc generates for the envelope uses
// `unsafe` for its unchecked accessors, and only that module may allow it.
#![deny(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]
#![doc(test(attr(deny(warnings))))]

pub mod close;
pub mod deflate;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod role;
pub mod utf8;

pub use close::CloseCode;
pub use error::ProtocolError;
pub use role::{Client, Role, Server};
