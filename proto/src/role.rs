//! Which end of the connection a codec plays: the server or the client.
//!
//! The frame codec is one piece of code with the role as a type parameter,
//! as in uWebSockets' `WebSocketProtocol<isServer>`: masking rules differ by
//! role and are decided at compile time, with no branch per frame.

/// One end of a WebSocket connection. Sealed: [`Server`] and [`Client`] are
/// the only roles.
pub trait Role: sealed::Sealed + Copy + Default + Send + Sync + 'static {
    /// Whether frames this end receives must be masked (true on a server:
    /// RFC 6455 §5.1 makes every client frame masked, every server frame not).
    const RECEIVES_MASKED: bool;
    /// Whether this end is the server; for logs and errors.
    const IS_SERVER: bool = Self::RECEIVES_MASKED;
}

/// The server end: receives masked frames, sends unmasked ones, so one
/// encoded frame can be written to any number of connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Server;

/// The client end: receives unmasked frames, masks every frame it sends
/// with a fresh key the caller supplies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Client;

impl Role for Server {
    const RECEIVES_MASKED: bool = true;
}

impl Role for Client {
    const RECEIVES_MASKED: bool = false;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Server {}
    impl Sealed for super::Client {}
}
