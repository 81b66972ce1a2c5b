//! [`Connection`]: one accepted socket in its shard's slab, from the
//! upgrade request to the end of the close handshake, as a state machine
//! the shard drives with what its I/O driver reports.
//!
//! There is no task per connection: a connection is its slab entry, and
//! an idle upgraded one is that entry alone (its socket, decoder and
//! [`Conn`]); no buffer, timer or waker of its own. Bytes arrive in the
//! driver's buffer, are decoded and handled at once, and what the handler
//! queued leaves when the shard flushes at the end of its loop turn.

use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use shardcast_proto::CloseCode;
use shardcast_proto::deflate::{DeflateConfig, DeflateParams, Inflater};
use shardcast_proto::frame::{Decoder, DecoderConfig, Message as Frame};
use shardcast_proto::handshake::{Progress, UpgradeRequest, parse_request, write_rejection};
use shardcast_proto::role::Server;
use tracing::{debug, error};

use crate::admission::Ticket;
use crate::config::ServerConfig;
use crate::conn::{Conn, ConnId, SendContext};
use crate::driver::{Token, socket};
use crate::handler::{Handler, Message, Rejection};
use crate::send_queue::MAX_SLICES;
use crate::server::Shared;

/// One accepted connection: its socket, where it is in its life, and what
/// the shard's once-a-second sweep checks.
pub(crate) struct Connection<S> {
    pub(crate) stream: TcpStream,
    /// The low bits of the connection's sequence number: what tells a
    /// driver event for this connection from one for an earlier
    /// occupant of its slab key.
    pub(crate) generation: u32,
    /// When a byte was last received (seconds of the shard's clock).
    pub(crate) last_active: u32,
    /// When the last heartbeat ping was queued, or the connection opened.
    pub(crate) last_ping: u32,
    pub(crate) flags: Flags,
    /// The connection's place in the server's connection counts, given
    /// back when the connection is dropped.
    _ticket: Ticket,
    pub(crate) phase: Phase<S>,
}

/// Where a connection is in its life.
pub(crate) enum Phase<S> {
    /// Reading the upgrade request; boxed, as it lasts a moment and idle
    /// connections should not carry its bytes.
    Handshake(Box<Handshake>),
    /// Upgraded: frames both ways.
    Open(Open<S>),
}

/// The upgrade request read so far.
pub(crate) struct Handshake {
    head: Vec<u8>,
    peer: SocketAddr,
    /// A connection limit was passed: the request only gets a 503.
    refused: bool,
}

/// An upgraded connection's protocol state and handler-facing `Conn`.
pub(crate) struct Open<S> {
    pub(crate) decoder: Decoder<Server>,
    pub(crate) conn: Conn<S>,
    /// The peer's close frame, when the peer started the close handshake;
    /// boxed, as only a closing connection has one.
    peer_close: Option<Box<(CloseCode, Box<str>)>>,
}

/// A connection's flags, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags(u8);

impl Flags {
    /// A heartbeat ping is out and its pong has not come.
    pub(crate) const AWAITING_PONG: Flags = Flags(1);
    /// On the shard's list of connections to flush this turn.
    pub(crate) const DIRTY: Flags = Flags(1 << 1);
    /// The socket pushed back; a writability notification is asked for.
    pub(crate) const WAITING_WRITABLE: Flags = Flags(1 << 2);
    /// The queue reached the drain threshold or the socket pushed back
    /// since the queue was last empty: the handler hears `on_drain` when
    /// it empties.
    pub(crate) const BLOCKED: Flags = Flags(1 << 3);
    /// The decoder failed: what follows on the socket is discarded.
    pub(crate) const FAILED: Flags = Flags(1 << 4);
    /// Our side of the TCP connection is shut down (after a failure).
    pub(crate) const HALF_CLOSED: Flags = Flags(1 << 5);
    /// The close handshake is over: write what is queued, then drop.
    pub(crate) const FINISHED: Flags = Flags(1 << 6);
    /// The close timer runs (our close frame is queued).
    pub(crate) const CLOSE_TIMER: Flags = Flags(1 << 7);

    pub(crate) fn has(self, flag: Flags) -> bool {
        self.0 & flag.0 != 0
    }

    pub(crate) fn set(&mut self, flag: Flags, on: bool) {
        if on {
            self.0 |= flag.0;
        } else {
            self.0 &= !flag.0;
        }
    }
}

/// What the shard does with a connection after a step.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Keep it.
    Keep,
    /// Drop it now (its handler was told, if it had opened).
    Drop,
}

/// What a connection's steps need of their shard: the handler, the
/// inflater, the send context, the configuration and whether shutdown
/// began. The shard keeps it apart from its slab of connections, so a
/// connection and this can be borrowed at once.
pub(crate) struct ShardContext<H> {
    pub(crate) handler: H,
    pub(crate) inflater: Inflater,
    pub(crate) send: Rc<SendContext>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) shared: Arc<Shared>,
    /// The shutdown deadline, once shutdown began.
    pub(crate) shutdown: Option<Instant>,
}

impl<S> Connection<S> {
    /// A connection just accepted, in its handshake.
    pub(crate) fn accepted(
        stream: TcpStream,
        peer: SocketAddr,
        generation: u32,
        now: u32,
        (ticket, refused): (Ticket, bool),
    ) -> Self {
        Connection {
            stream,
            generation,
            last_active: now,
            last_ping: now,
            flags: Flags::default(),
            _ticket: ticket,
            phase: Phase::Handshake(Box::new(Handshake {
                head: Vec::new(),
                peer,
                refused,
            })),
        }
    }

    /// The connection's token for the driver, given its key in the slab.
    pub(crate) fn token(&self, key: usize) -> Token {
        Token {
            key: key as u32,
            generation: self.generation,
        }
    }

    /// Whether the connection was upgraded.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// The upgraded connection's state, if it was upgraded.
    pub(crate) fn open_mut(&mut self) -> Option<&mut Open<S>> {
        match &mut self.phase {
            Phase::Open(open) => Some(open),
            Phase::Handshake(_) => None,
        }
    }

    /// Handles bytes from the peer: the upgrade request, or frames.
    /// Returns how many text and binary messages they held.
    pub(crate) fn receive<H>(
        &mut self,
        shard: &mut ShardContext<H>,
        id: impl FnOnce() -> ConnId,
        key: u32,
        now: u32,
        input: &mut [u8],
    ) -> (Next, u64)
    where
        H: Handler<State = S>,
    {
        match &mut self.phase {
            Phase::Handshake(handshake) => {
                handshake.head.extend_from_slice(input);
                (self.continue_handshake(shard, id, key), 0)
            }
            Phase::Open(open) => {
                self.last_active = now;
                let mut pool = shard.send.pool.borrow_mut();
                if open.decoder.heap_bytes() == 0 {
                    // Fragmented, compressed or split messages gather in
                    // a pooled buffer rather than a new one.
                    if let Some(unused) = open.decoder.lend_buffer(pool.buffers.take()) {
                        pool.buffers.put(unused);
                    }
                }
                drop(pool);
                let (messages, pong) = open.handle_input(shard, &mut self.flags, input);
                // The decoder's buffer goes back to the pool unless it
                // holds part of a message: idle connections hold none.
                if let Some(buffer) = open.decoder.take_buffer() {
                    shard.send.pool.borrow_mut().buffers.put(buffer);
                }
                if pong {
                    self.flags.set(Flags::AWAITING_PONG, false);
                }
                (Next::Keep, messages)
            }
        }
    }

    /// Parses the request read so far and, once it is whole, answers it.
    fn continue_handshake<H>(
        &mut self,
        shard: &mut ShardContext<H>,
        id: impl FnOnce() -> ConnId,
        key: u32,
    ) -> Next
    where
        H: Handler<State = S>,
    {
        let Phase::Handshake(handshake) = &mut self.phase else {
            return Next::Keep;
        };
        let (peer, refused) = (handshake.peer, handshake.refused);
        let (request_len, decision) = match parse_request(&handshake.head, &shard.config.head) {
            Ok(Progress::NeedMore) => return Next::Keep,
            Ok(Progress::Done { value, head_len }) => {
                (head_len, decide(shard, &value, peer, refused))
            }
            Err(error) => {
                debug!(%peer, %error, "invalid upgrade request");
                let mut response = Vec::new();
                error.write_response(&mut response);
                (0, Err(response))
            }
        };
        let accepted = match decision {
            Ok(accepted) => accepted,
            Err(response) => {
                // One non-blocking write: a refusal is a few hundred bytes,
                // and a client that cannot take them is not waited for.
                let _ = socket::send(&self.stream, &response);
                return Next::Drop;
            }
        };
        let head = std::mem::take(&mut handshake.head);
        let conn = Conn::new(
            id(),
            key,
            peer,
            accepted.state,
            accepted.response,
            accepted
                .deflate
                .map(|params| params.server_compression_limit()),
            accepted.subprotocol,
            Rc::clone(&shard.send),
        );
        let decoder = Decoder::new(DecoderConfig {
            compression: accepted.deflate.is_some(),
            ..shard.config.decoder
        });
        self.phase = Phase::Open(Open {
            decoder,
            conn,
            peer_close: None,
        });
        let Phase::Open(open) = &mut self.phase else {
            unreachable!("the phase was just set");
        };
        let handler = &mut shard.handler;
        if guarded(|| handler.on_open(&mut open.conn)).is_err() {
            panicked(&mut open.conn, "on_open");
        }
        let mut rest = head;
        if rest.len() > request_len {
            // Frames the client sent right behind its request.
            open.handle_input(shard, &mut self.flags, &mut rest[request_len..]);
        }
        Next::Keep
    }

    /// Writes what is queued, in as few `sendmsg` calls as the socket
    /// allows; when the socket is full, `Ok(false)` (ask the driver for
    /// writability). Tells the handler when a queue that had pushed back
    /// empties.
    ///
    /// # Errors
    /// The socket failed.
    pub(crate) fn flush<H>(&mut self, shard: &mut ShardContext<H>) -> io::Result<bool>
    where
        H: Handler<State = S>,
    {
        let Phase::Open(open) = &mut self.phase else {
            return Ok(true);
        };
        loop {
            if open.conn.is_backpressured() {
                self.flags.set(Flags::BLOCKED, true);
            }
            let queue = &mut open.conn.queue;
            while !queue.is_empty() {
                let result = match queue.contiguous() {
                    Some(bytes) => socket::send(&self.stream, bytes),
                    None => {
                        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                        let count = queue.io_slices(&mut slices);
                        socket::send_vectored(&self.stream, &slices[..count])
                    }
                };
                match result {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(written) => {
                        queue.advance(written, &mut shard.send.pool.borrow_mut());
                        shard.send.counters.bytes_sent(written as u64);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        self.flags.set(Flags::BLOCKED, true);
                        return Ok(false);
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            if !self.flags.has(Flags::BLOCKED) || open.conn.is_closing() {
                return Ok(true);
            }
            self.flags.set(Flags::BLOCKED, false);
            // The queue emptied after the socket had pushed back: the
            // handler may queue more, which is written in this same flush.
            let handler = &mut shard.handler;
            let conn = &mut open.conn;
            if guarded(|| handler.on_drain(conn)).is_err() {
                panicked(conn, "on_drain");
            }
        }
    }

    /// After a flush that emptied the queue: whether the connection is
    /// done (its close handshake over), and the half-close a failed
    /// connection makes so the peer sees our close and its end of stream.
    pub(crate) fn after_flush(&mut self) -> Next {
        let Phase::Open(open) = &mut self.phase else {
            return Next::Keep;
        };
        if !open.conn.queue.is_empty() {
            return Next::Keep;
        }
        if self.flags.has(Flags::FINISHED) {
            return Next::Drop;
        }
        if self.flags.has(Flags::FAILED) && !self.flags.has(Flags::HALF_CLOSED) {
            self.flags.set(Flags::HALF_CLOSED, true);
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Next::Keep
    }

    /// Tells the handler the connection is over, and why: the peer's close
    /// frame, else ours, else 1006.
    pub(crate) fn finish<H>(&mut self, handler: &mut H)
    where
        H: Handler<State = S>,
    {
        let Phase::Open(open) = &mut self.phase else {
            return;
        };
        let (code, reason) = match (open.peer_close.take(), &open.conn.close_sent) {
            (Some(peer), _) => *peer,
            (None, Some(sent)) => (sent.code, sent.reason.clone()),
            (None, None) => (CloseCode::ABNORMAL, "".into()),
        };
        let conn = &mut open.conn;
        if guarded(|| handler.on_close(conn, code, &reason)).is_err() {
            error!(conn = %conn.id(), "handler panicked in on_close");
        }
    }
}

impl<S> Open<S> {
    /// Decodes `input` and acts on every message in it; returns how many
    /// text and binary messages it held and whether a pong came.
    fn handle_input<H>(
        &mut self,
        shard: &mut ShardContext<H>,
        flags: &mut Flags,
        input: &mut [u8],
    ) -> (u64, bool)
    where
        H: Handler<State = S>,
    {
        let mut messages = 0;
        let mut pong = false;
        let mut pos = 0;
        while pos < input.len() && !self.decoder.is_closed() && !flags.has(Flags::FAILED) {
            let (used, message) = match self.decoder.decode(&mut input[pos..], &mut shard.inflater)
            {
                Ok(decoded) => decoded,
                Err(error) => {
                    debug!(peer = %self.conn.peer_addr(), %error, "protocol error; closing");
                    flags.set(Flags::FAILED, true);
                    self.conn.close_with(error.close_code(), &error.to_string());
                    break;
                }
            };
            match message {
                None => {}
                Some(Frame::Text(text)) => {
                    messages += 1;
                    deliver(&mut shard.handler, &mut self.conn, Message::Text(text));
                }
                Some(Frame::Binary(bytes)) => {
                    messages += 1;
                    deliver(&mut shard.handler, &mut self.conn, Message::Binary(bytes));
                }
                Some(Frame::Ping(payload)) => self.conn.pong(payload),
                Some(Frame::Pong(_)) => pong = true,
                Some(Frame::Close(frame)) => {
                    if self.conn.close_sent.is_none() {
                        let (code, reason) =
                            frame.map_or((CloseCode::NO_STATUS, ""), |f| (f.code, f.reason));
                        let reply = frame.map_or(CloseCode::NORMAL, |f| f.code);
                        self.conn.close_with(reply, "");
                        self.peer_close = Some(Box::new((code, reason.into())));
                    }
                    if shard.shutdown.is_some() {
                        shard.shared.closed_cleanly.fetch_add(1, Ordering::Relaxed);
                    }
                    flags.set(Flags::FINISHED, true);
                    break;
                }
            }
            pos += used;
        }
        (messages, pong)
    }
}

/// How an upgrade request was accepted.
struct Accepted<S> {
    state: S,
    response: Vec<u8>,
    deflate: Option<DeflateParams>,
    subprotocol: Option<u8>,
}

/// Answers a valid upgrade request: 503 when the server (or this client
/// address) is at its connection limit or the server is stopping, the
/// handler's rejection, or the 101. `Err` carries a refusal's response.
fn decide<H: Handler>(
    shard: &mut ShardContext<H>,
    request: &UpgradeRequest<'_>,
    peer: SocketAddr,
    full: bool,
) -> Result<Accepted<H::State>, Vec<u8>> {
    if full || shard.shutdown.is_some() {
        debug!(%peer, full, "upgrade refused: the server is full or stopping");
        return Err(rejection(&Rejection::new(503, "Service Unavailable")));
    }
    let handler = &mut shard.handler;
    let state = match guarded(|| handler.on_upgrade(request, peer)) {
        Ok(Ok(state)) => state,
        Ok(Err(refusal)) => return Err(rejection(&refusal)),
        Err(()) => {
            error!(%peer, "handler panicked in on_upgrade; answering 500");
            return Err(rejection(&Rejection::new(500, "Internal Server Error")));
        }
    };
    // A connection stores its subprotocol's index in a byte.
    let protocols: Vec<&str> = shard
        .config
        .subprotocols
        .iter()
        .take(usize::from(u8::MAX))
        .map(String::as_str)
        .collect();
    let mut deflate = DeflateConfig::default();
    deflate.enabled = shard.config.compression;
    let accept = request.accept(&protocols, &deflate);
    let mut response = Vec::with_capacity(256);
    // No extra headers, so nothing can be refused.
    let _ = accept.write_response(&[], &mut response);
    let negotiated = accept.negotiated();
    Ok(Accepted {
        state,
        response,
        deflate: negotiated.deflate,
        subprotocol: negotiated
            .subprotocol
            .and_then(|chosen| protocols.iter().position(|p| *p == chosen))
            .and_then(|index| u8::try_from(index).ok()),
    })
}

/// The HTTP response for a rejection; a status or reason the proto crate
/// refuses becomes a plain 500.
fn rejection(refusal: &Rejection) -> Vec<u8> {
    let mut response = Vec::new();
    let written = write_rejection(
        refusal.status(),
        refusal.reason(),
        &[],
        refusal.body(),
        &mut response,
    );
    if written.is_err() {
        response.clear();
        // 500 and its reason are valid, so this cannot fail.
        let _ = write_rejection(500, "Internal Server Error", &[], b"", &mut response);
    }
    response
}

/// Runs a handler callback, turning a panic into `Err(())`.
pub(crate) fn guarded<T>(callback: impl FnOnce() -> T) -> Result<T, ()> {
    catch_unwind(AssertUnwindSafe(callback)).map_err(|_| ())
}

/// Hands a message to the handler unless this end is closing; a panic
/// closes this connection only, with 1011.
fn deliver<H: Handler>(handler: &mut H, conn: &mut Conn<H::State>, message: Message<'_>) {
    if conn.close_sent.is_some() {
        return;
    }
    if guarded(|| handler.on_message(conn, message)).is_err() {
        panicked(conn, "on_message");
    }
}

/// Logs a handler panic and closes the connection with 1011.
pub(crate) fn panicked<S>(conn: &mut Conn<S>, callback: &str) {
    error!(
        conn = %conn.id(),
        peer = %conn.peer_addr(),
        callback,
        "handler panicked; closing the connection with 1011"
    );
    conn.close_with(CloseCode::INTERNAL_ERROR, "internal error");
}

/// Puts `connection` (at `key`) on the shard's list to flush at the end of
/// the turn, once.
pub(crate) fn mark_dirty<S>(dirty: &mut Vec<usize>, key: usize, connection: &mut Connection<S>) {
    if !connection.flags.has(Flags::DIRTY) {
        connection.flags.set(Flags::DIRTY, true);
        dirty.push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection is its slab entry: this size is most of the
    /// memory per idle connection that BENCHMARKS.md reports, so it may
    /// only grow on purpose.
    #[test]
    fn an_idle_connection_stays_small() {
        assert!(
            size_of::<Connection<()>>() <= 200,
            "Connection<()> is {} bytes (Decoder {}, Conn {})",
            size_of::<Connection<()>>(),
            size_of::<Decoder<Server>>(),
            size_of::<Conn<()>>(),
        );
    }
}
