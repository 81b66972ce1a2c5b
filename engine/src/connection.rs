//! One connection's task: handshake, then reads, handler calls and corked
//! writes until the close handshake ends.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use monoio::io::IntoPollIo;
use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf};
use monoio::net::TcpStream;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use shardcast_proto::CloseCode;
use shardcast_proto::deflate::{DeflateConfig, DeflateParams};
use shardcast_proto::frame::{Decoder, DecoderConfig, Message as Frame};
use shardcast_proto::handshake::{Progress, UpgradeRequest, parse_request, write_rejection};
use shardcast_proto::role::Server;
use tracing::{debug, error};

use crate::admission::Ticket;
use crate::conn::{Conn, ConnId};
use crate::handler::{Handler, Message, Rejection};
use crate::send_queue::MAX_SLICES;
use crate::shard::{Alarm, Shard, Slot};

/// How many bytes the handshake reads at a time into its own small buffer.
const HANDSHAKE_READ: usize = 1024;

/// Reads handled in one turn before the connection writes and yields, so a
/// peer that never stops sending cannot starve the shard's other
/// connections or delay its own replies.
const READ_BUDGET: u32 = 16;

/// How the handshake ended.
enum Handshake<S> {
    /// Upgraded: the state from `on_upgrade`, the 101 response, the
    /// permessage-deflate parameters if it was negotiated, the
    /// subprotocol's index in the server's list, and where the bytes after
    /// the head begin.
    Accepted {
        state: S,
        response: Vec<u8>,
        deflate: Option<DeflateParams>,
        subprotocol: Option<usize>,
        head_len: usize,
    },
    /// Refused with this HTTP response.
    Refused(Vec<u8>),
}

/// What a batch of reads ended with.
enum Read {
    /// Input was handled: write what it produced, then read again.
    Handled,
    /// The socket has nothing more to read for now.
    Pending,
    /// The peer closed its side of the TCP connection.
    Eof,
    /// The socket failed.
    Failed(io::Error),
}

/// How an upgraded connection's task ended.
enum End {
    /// The close handshake is over and our last frames are written.
    Closed,
    /// The peer closed its side of the TCP connection.
    Eof,
    /// The socket failed.
    Failed(io::Error),
    /// The peer did not answer our close frame within the close timeout.
    CloseTimedOut,
}

/// Runs one accepted TCP connection to its end.
///
/// The opening phase (handshake, then setting up the connection) is a
/// boxed future, made here and freed once it ends: its timer (some 640
/// bytes in monoio) and buffers would otherwise stay in every connection's
/// task for the connection's whole life. An idle connection's task holds
/// its [`Connection`] and little else.
pub(crate) fn run<H: Handler>(
    shard: Rc<Shard<H>>,
    stream: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> {
    let opening = Box::pin(open(shard, stream, peer));
    async move {
        let Some(mut connection) = opening.await else {
            return;
        };
        connection.serve().await;
        connection.finish();
    }
}

/// Reads the upgrade request within the handshake timeout and answers it;
/// on an upgrade, sets the connection up and tells the handler. `None`
/// once a refusal was written or the client went away or was too slow.
async fn open<H: Handler>(
    shard: Rc<Shard<H>>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<Connection<H>> {
    let ticket = shard.shared.admission.admit(peer.ip());
    // Echo-style traffic is latency-bound; frames are corked by the engine.
    let _ = stream.set_nodelay(true);
    let mut stream = match stream.into_poll_io() {
        Ok(stream) => stream,
        Err(error) => {
            debug!(%peer, %error, "could not switch the socket to readiness mode");
            return None;
        }
    };
    let mut head = Vec::new();
    let timeout = shard.config.handshake_timeout;
    let decided = monoio::time::timeout(
        timeout,
        handshake(&shard, &mut stream, &mut head, peer, ticket.refused),
    )
    .await;
    let (state, response, deflate, subprotocol, head_len) = match decided {
        Ok(Some(Handshake::Accepted {
            state,
            response,
            deflate,
            subprotocol,
            head_len,
        })) => (state, response, deflate, subprotocol, head_len),
        Ok(Some(Handshake::Refused(response))) => {
            let _ = write_all(&mut stream, &response).await;
            return None;
        }
        Ok(None) => return None,
        Err(_) => {
            debug!(%peer, ?timeout, "handshake timed out");
            return None;
        }
    };
    let id = ConnId::new(shard.id, shard.next_sequence());
    let key = shard
        .slots
        .borrow_mut()
        .insert(Slot::new(shard.clock.get()));
    shard.counters.connection_opened();
    let mut connection = Connection {
        stream,
        decoder: Decoder::new(DecoderConfig {
            compression: deflate.is_some(),
            ..shard.config.decoder
        }),
        conn: Conn::new(
            id,
            peer,
            state,
            response,
            deflate.map(|params| params.server_compression_limit()),
            subprotocol,
            Rc::clone(&shard.send),
        ),
        shard: Rc::clone(&shard),
        key,
        _ticket: ticket,
        close_timer: None,
        peer_close: None,
        pong_received: false,
        blocked: false,
        failed: false,
        half_closed: false,
        finished: false,
    };
    if guarded(|| shard.handler.borrow_mut().on_open(&mut connection.conn)).is_err() {
        panicked(&mut connection.conn, "on_open");
    }
    // Frames the client sent right behind its request.
    if head.len() > head_len {
        let received = head.len() - head_len;
        let messages = connection.handle_input(&mut head[head_len..]);
        shard.counters.received(messages, received as u64);
    }
    Some(connection)
}

/// Reads the upgrade request and decides on it. `None` when the peer went
/// away or sent nothing parseable that deserves an answer.
async fn handshake<H: Handler>(
    shard: &Shard<H>,
    stream: &mut TcpStreamPoll,
    head: &mut Vec<u8>,
    peer: SocketAddr,
    full: bool,
) -> Option<Handshake<H::State>> {
    loop {
        let filled = head.len();
        head.resize(filled + HANDSHAKE_READ, 0);
        let read = poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut head[filled..]);
            Pin::new(&mut *stream)
                .poll_read(cx, &mut buf)
                .map_ok(|()| buf.filled().len())
        })
        .await;
        let read = match read {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {
                head.truncate(filled);
                continue;
            }
            Err(error) => {
                debug!(%peer, %error, "read failed during the handshake");
                return None;
            }
        };
        head.truncate(filled + read);
        if read == 0 {
            // End of stream before a complete request: nothing to answer.
            return None;
        }
        match parse_request(head, &shard.config.head) {
            Ok(Progress::NeedMore) => {}
            Ok(Progress::Done { value, head_len }) => {
                return Some(decide(shard, &value, peer, full, head_len));
            }
            Err(error) => {
                debug!(%peer, %error, "invalid upgrade request");
                let mut response = Vec::new();
                error.write_response(&mut response);
                return Some(Handshake::Refused(response));
            }
        }
    }
}

/// Answers a valid upgrade request: 503 when the server (or this client
/// address) is at its connection limit or the server is stopping, the
/// handler's rejection, or the 101.
fn decide<H: Handler>(
    shard: &Shard<H>,
    request: &UpgradeRequest<'_>,
    peer: SocketAddr,
    full: bool,
    head_len: usize,
) -> Handshake<H::State> {
    if full || shard.shutting_down.get() {
        debug!(%peer, full, "upgrade refused: the server is full or stopping");
        return Handshake::Refused(rejection(&Rejection::new(503, "Service Unavailable")));
    }
    let state = match guarded(|| shard.handler.borrow_mut().on_upgrade(request, peer)) {
        Ok(Ok(state)) => state,
        Ok(Err(refusal)) => return Handshake::Refused(rejection(&refusal)),
        Err(()) => {
            error!(%peer, "handler panicked in on_upgrade; answering 500");
            return Handshake::Refused(rejection(&Rejection::new(500, "Internal Server Error")));
        }
    };
    let protocols: Vec<&str> = shard
        .config
        .subprotocols
        .iter()
        .map(String::as_str)
        .collect();
    let mut deflate = DeflateConfig::default();
    deflate.enabled = shard.config.compression;
    let accept = request.accept(&protocols, &deflate);
    let mut response = Vec::with_capacity(256);
    // No extra headers, so nothing can be refused.
    let _ = accept.write_response(&[], &mut response);
    let negotiated = accept.negotiated();
    Handshake::Accepted {
        state,
        response,
        deflate: negotiated.deflate,
        subprotocol: negotiated
            .subprotocol
            .and_then(|chosen| protocols.iter().position(|p| *p == chosen)),
        head_len,
    }
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
fn guarded<T>(callback: impl FnOnce() -> T) -> Result<T, ()> {
    catch_unwind(AssertUnwindSafe(callback)).map_err(|_| ())
}

/// Hands a message to the handler unless this end is closing; a panic
/// closes this connection only, with 1011.
fn deliver<H: Handler>(handler: &RefCell<H>, conn: &mut Conn<H::State>, message: Message<'_>) {
    if conn.close_sent.is_some() {
        return;
    }
    if guarded(|| handler.borrow_mut().on_message(conn, message)).is_err() {
        panicked(conn, "on_message");
    }
}

/// Logs a handler panic and closes the connection with 1011.
fn panicked<S>(conn: &mut Conn<S>, callback: &str) {
    error!(
        conn = %conn.id(),
        peer = %conn.peer_addr(),
        callback,
        "handler panicked; closing the connection with 1011"
    );
    conn.close_with(CloseCode::INTERNAL_ERROR, "internal error");
}

/// Writes all of `bytes`; `false` if the socket failed first.
async fn write_all(stream: &mut TcpStreamPoll, bytes: &[u8]) -> bool {
    let mut written = 0;
    while written < bytes.len() {
        let result = poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, &bytes[written..])).await;
        match result {
            Ok(0) => return false,
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// An upgraded connection: its socket, decoder and handler-facing `Conn`.
struct Connection<H: Handler> {
    shard: Rc<Shard<H>>,
    stream: TcpStreamPoll,
    decoder: Decoder<Server>,
    conn: Conn<H::State>,
    key: usize,
    /// The connection's place in the server's connection counts.
    _ticket: Ticket,
    /// Runs from the moment our close frame is queued. Boxed: only a
    /// closing connection needs a timer, so idle connections do not carry
    /// its 640 bytes.
    close_timer: Option<Pin<Box<monoio::time::Sleep>>>,
    /// The peer's close frame, when the peer started the close handshake;
    /// boxed, as only a closing connection has one.
    peer_close: Option<Box<(CloseCode, Box<str>)>>,
    /// A pong arrived in the last batch of input.
    pong_received: bool,
    /// The send queue reached the drain threshold or the socket pushed
    /// back since the queue was last empty: the handler hears `on_drain`
    /// when it empties.
    blocked: bool,
    /// The decoder failed: what follows on the socket is discarded.
    failed: bool,
    /// Our side of the TCP connection is shut down (after a failure).
    half_closed: bool,
    /// The close handshake is over: write what is queued, then drop.
    finished: bool,
}

/// Removes the connection's slot from its shard, however the task ends.
impl<H: Handler> Drop for Connection<H> {
    fn drop(&mut self) {
        self.shard.slots.borrow_mut().remove(self.key);
        self.shard.counters.connection_closed();
    }
}

impl<H: Handler> Connection<H> {
    /// Serves the connection until it is over.
    async fn serve(&mut self) {
        let end = poll_fn(|cx| self.poll_serve(cx)).await;
        let peer = self.conn.peer_addr();
        match end {
            End::Closed | End::Eof => {}
            End::Failed(error) => debug!(%peer, %error, "socket failed"),
            End::CloseTimedOut => debug!(%peer, "close handshake timed out"),
        }
    }

    /// Serves the connection until it is over: acts on the shard's alarms,
    /// writes what is queued, reads and handles input, in a loop, as one
    /// future woken by socket readiness in either direction, by the
    /// shard's sweep and by shutdown.
    ///
    /// Everything queued while one batch of input was handled leaves in
    /// one vectored write before the next read (corking). A connection
    /// whose peer does not read keeps its queue (bounded by the send
    /// buffer limit) and goes on reading, so a close frame or a heartbeat
    /// timeout still reaches it; the shard's other connections never wait
    /// for it.
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let mut reads = 0;
        loop {
            self.act_on_alarms(cx);
            if self.conn.is_backpressured() {
                self.blocked = true;
            }
            match self.poll_write(cx) {
                Poll::Ready(Err(error)) => return Poll::Ready(End::Failed(error)),
                Poll::Ready(Ok(())) if self.blocked => {
                    self.blocked = false;
                    self.drained();
                    continue;
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
            let written = self.conn.queue.is_empty();
            if self.finished {
                return if written {
                    Poll::Ready(End::Closed)
                } else {
                    Poll::Pending
                };
            }
            if self.conn.is_closing() {
                if self.failed && written && !self.half_closed {
                    // The decoder cannot find the peer's close frame any
                    // more: half-close so the peer sees our close and its
                    // end of stream, then wait for its end of stream.
                    self.half_closed = true;
                    let _ = Pin::new(&mut self.stream).poll_shutdown(cx);
                }
                let timeout = self.shard.config.close_timeout;
                let timer = self
                    .close_timer
                    .get_or_insert_with(|| Box::pin(monoio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(End::CloseTimedOut);
                }
            }
            if reads >= READ_BUDGET {
                // Let the shard's other connections run; come back soon.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match self.poll_read(cx, &mut reads) {
                Read::Handled => {}
                Read::Pending => return Poll::Pending,
                Read::Eof => return Poll::Ready(End::Eof),
                Read::Failed(error) => return Poll::Ready(End::Failed(error)),
            }
        }
    }

    /// Registers the task's waker in its slot and acts on what the shard
    /// asks: close on shutdown, idle or heartbeat timeout; ping when a
    /// heartbeat is due.
    fn act_on_alarms(&mut self, cx: &mut Context<'_>) {
        let shard = Rc::clone(&self.shard);
        let mut slots = shard.slots.borrow_mut();
        let slot = &mut slots[self.key];
        if !slot
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            slot.waker = Some(cx.waker().clone());
        }
        let alarm = std::mem::take(&mut slot.alarm);
        if !self.conn.is_closing() {
            if shard.shutting_down.get() {
                self.conn
                    .close_with(CloseCode::GOING_AWAY, "server shutting down");
            } else {
                match alarm {
                    Alarm::None => {}
                    Alarm::PingDue => {
                        self.conn.heartbeat();
                        slot.last_ping = shard.clock.get();
                        slot.awaiting_pong = true;
                    }
                    Alarm::PongTimeout => {
                        self.conn
                            .close_with(CloseCode::GOING_AWAY, "heartbeat timeout");
                    }
                    Alarm::Idle => self.conn.close_with(CloseCode::GOING_AWAY, "idle timeout"),
                }
            }
        }
        slot.closing = self.conn.is_closing();
    }

    /// Writes what is queued, in vectored writes, until the queue is empty
    /// (`Ready(Ok)`) or the socket is full (`Pending`).
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.conn.queue.is_empty() {
            let stream = Pin::new(&mut self.stream);
            let result = match self.conn.queue.contiguous() {
                Some(bytes) => stream.poll_write(cx, bytes),
                None => {
                    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                    let count = self.conn.queue.io_slices(&mut slices);
                    stream.poll_write_vectored(cx, &slices[..count])
                }
            };
            match result {
                Poll::Pending => {
                    self.blocked = true;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => {
                    let mut pool = self.shard.send.pool.borrow_mut();
                    self.conn.queue.advance(written, &mut pool);
                    self.shard.counters.bytes_sent(written as u64);
                }
                Poll::Ready(Err(error)) if error.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The queue emptied after the socket had pushed back: tell the
    /// handler, which may queue more.
    fn drained(&mut self) {
        if self.conn.is_closing() {
            return;
        }
        let shard = Rc::clone(&self.shard);
        let handler = &shard.handler;
        let conn = &mut self.conn;
        if guarded(|| handler.borrow_mut().on_drain(conn)).is_err() {
            panicked(conn, "on_drain");
        }
    }

    /// Reads into the shard's receive buffer until the socket has no more
    /// (or the read budget is spent), feeding each read to the decoder and
    /// the handler.
    ///
    /// Why readiness and one shared buffer: an idle connection must hold no
    /// receive buffer (uWebSockets keeps one per event loop; the engine's
    /// goal is 2 KiB or less per idle connection). A completion-based read
    /// (io_uring `recv` with a buffer per connection) pins that buffer for
    /// as long as the connection waits. io_uring provided-buffer rings
    /// would solve this in the kernel, but monoio does not expose them, so
    /// the shard uses monoio's poll-io mode: it waits for readiness (an
    /// epoll registration; on the io_uring driver, epoll driven through the
    /// ring), then reads with a plain `recv` into the shard's one 64 KiB
    /// buffer, borrowed only inside this synchronous step, never across an
    /// await.
    fn poll_read(&mut self, cx: &mut Context<'_>, reads: &mut u32) -> Read {
        let shard = Rc::clone(&self.shard);
        let mut handled = false;
        let outcome = loop {
            let mut receive = shard.receive.borrow_mut();
            let mut buf = ReadBuf::new(&mut receive[..]);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    break if handled {
                        Read::Handled
                    } else {
                        Read::Pending
                    };
                }
                Poll::Ready(Err(error)) if error.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(error)) => break Read::Failed(error),
                Poll::Ready(Ok(())) => {
                    let received = buf.filled().len();
                    if received == 0 {
                        break Read::Eof;
                    }
                    handled = true;
                    if self.decoder.heap_bytes() == 0 {
                        // Fragmented, compressed or split messages gather
                        // in a pooled buffer rather than a new one.
                        let mut pool = shard.send.pool.borrow_mut();
                        if let Some(unused) = self.decoder.lend_buffer(pool.take()) {
                            pool.put(unused);
                        }
                    }
                    *reads += 1;
                    let messages = self.handle_input(&mut receive[..received]);
                    shard.counters.received(messages, received as u64);
                    // The decoder's buffer goes back to the pool unless it
                    // holds part of a message: idle connections hold none,
                    // and the next read borrows it again.
                    if let Some(buffer) = self.decoder.take_buffer() {
                        shard.send.pool.borrow_mut().put(buffer);
                    }
                    if self.finished
                        || self.conn.is_closing()
                        || received < receive.len()
                        || *reads >= READ_BUDGET
                    {
                        break Read::Handled;
                    }
                }
            }
        };
        if handled {
            let mut slots = shard.slots.borrow_mut();
            let slot = &mut slots[self.key];
            slot.last_active = shard.clock.get();
            if std::mem::take(&mut self.pong_received) {
                slot.awaiting_pong = false;
            }
        }
        outcome
    }
    /// Decodes `input` and acts on every message in it; returns how many
    /// text and binary messages it held.
    fn handle_input(&mut self, input: &mut [u8]) -> u64 {
        let shard = Rc::clone(&self.shard);
        let mut inflater = shard.inflater.borrow_mut();
        let mut messages = 0;
        let mut pos = 0;
        while pos < input.len() && !self.decoder.is_closed() {
            let (used, message) = match self.decoder.decode(&mut input[pos..], &mut inflater) {
                Ok(decoded) => decoded,
                Err(error) => {
                    debug!(peer = %self.conn.peer_addr(), %error, "protocol error; closing");
                    self.failed = true;
                    self.conn.close_with(error.close_code(), &error.to_string());
                    break;
                }
            };
            match message {
                None => {}
                Some(Frame::Text(text)) => {
                    messages += 1;
                    deliver(&shard.handler, &mut self.conn, Message::Text(text));
                }
                Some(Frame::Binary(bytes)) => {
                    messages += 1;
                    deliver(&shard.handler, &mut self.conn, Message::Binary(bytes));
                }
                Some(Frame::Ping(payload)) => self.conn.pong(payload),
                Some(Frame::Pong(_)) => self.pong_received = true,
                Some(Frame::Close(frame)) => {
                    if self.conn.close_sent.is_none() {
                        let (code, reason) =
                            frame.map_or((CloseCode::NO_STATUS, ""), |f| (f.code, f.reason));
                        let reply = frame.map_or(CloseCode::NORMAL, |f| f.code);
                        self.conn.close_with(reply, "");
                        self.peer_close = Some(Box::new((code, reason.into())));
                    }
                    if shard.shutting_down.get() {
                        shard.shared.closed_cleanly.fetch_add(1, Ordering::Relaxed);
                    }
                    self.finished = true;
                    break;
                }
            }
            pos += used;
        }
        messages
    }

    /// Tells the handler the connection is over, and why.
    fn finish(&mut self) {
        let (code, reason) = match (self.peer_close.take(), &self.conn.close_sent) {
            (Some(peer), _) => *peer,
            (None, Some(sent)) => (sent.code, sent.reason.clone()),
            (None, None) => (CloseCode::ABNORMAL, "".into()),
        };
        let shard = Rc::clone(&self.shard);
        let handler = &shard.handler;
        let conn = &mut self.conn;
        if guarded(|| handler.borrow_mut().on_close(conn, code, &reason)).is_err() {
            error!(conn = %self.conn.id(), "handler panicked in on_close");
        }
    }
}
