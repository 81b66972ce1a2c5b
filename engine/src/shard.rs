//! One shard: a pinned thread running its own event loop over its I/O
//! driver, with its own listeners, handler, codec state and connections.
//!
//! The loop: wait for the driver's events and handle each at once (bytes
//! are decoded and handed to the handler while they sit in the driver's
//! buffer), expire the handshake and close timers, run the
//! once-a-second sweep (idle and heartbeat), then flush every connection
//! that queued bytes: one `sendmsg` per connection per turn, whatever it
//! queued meanwhile (corking).

mod fanout;

use std::cell::RefMut;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, mpsc};
use std::time::{Duration, Instant};

use shardcast_proto::CloseCode;
use shardcast_proto::deflate::{Deflater, Inflater};
use shardcast_proto::envelope::SUBPROTOCOL;
use shardcast_proto::frame::Encoder;
use slab::Slab;
use tracing::{debug, error, info, warn};

use crate::buffer_pool::BufferPool;
use crate::config::ServerConfig;
use crate::conn::{ConnId, SendContext};
use crate::connection::{self, Connection, Flags, Next, ShardContext};
use crate::deadlines::Deadlines;
use crate::driver::{Driver, Io, Sink, Token, socket};
use crate::error::Error;
use crate::handler::{Handler, ShardId};
use crate::hub::{Hub, HubState};
use crate::send_queue::SendPools;
use crate::server::Shared;
use crate::stats::ShardCounters;

/// The most connection slots a shard reserves address space for up
/// front (see [`reserved_slots`]).
const MAX_RESERVED_SLOTS: usize = 1 << 18;

/// Buffers a shard's pool holds from the start, and their size: enough
/// for the connections written to in one busy loop turn, each with a
/// few echoes of a kilobyte queued.
const PREPARED_BUFFERS: usize = 64;
const PREPARED_CAPACITY: usize = 4096;

/// Connections the dirty list has room for from the start.
const DIRTY_CAPACITY: usize = 1024;

/// Stale handshake deadlines tolerated beyond twice the handshakes in
/// progress before the queue is compacted.
const COMPACT_DEADLINES: usize = 1024;

/// The sweep's period: idle and heartbeat timeouts count whole seconds.
const SWEEP: Duration = Duration::from_secs(1);

/// Set once the first shard falls back to epoll, so the warning is logged
/// once per process rather than once per shard.
static EPOLL_FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// What a shard thread starts from.
pub(crate) struct ShardSetup<F> {
    pub(crate) id: ShardId,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) factory: Arc<F>,
    pub(crate) counters: Arc<ShardCounters>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) control: UnixStream,
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) core: Option<usize>,
    pub(crate) ready: mpsc::Sender<Result<Vec<SocketAddr>, Error>>,
}

/// A shard's state, owned by its thread: touched by nothing else.
struct Shard<H: Handler> {
    id: ShardId,
    counters: Arc<ShardCounters>,
    /// What connections need of the shard as they run.
    context: ShardContext<H>,
    connections: Slab<Connection<H::State>>,
    /// Keys of the connections to flush at the end of this turn.
    dirty: Vec<usize>,
    /// When each connection in its handshake times out, oldest first (one
    /// timeout for all, so the queue stays in order).
    handshake_deadlines: Deadlines,
    /// When each closing connection stops waiting for the peer's close
    /// frame, oldest first.
    close_deadlines: Deadlines,
    /// Connections still in their handshake.
    handshaking: usize,
    control: UnixStream,
    /// The listeners are closed (after shutdown began).
    listeners_closed: bool,
    /// The control socket's one-shot watch fired with nothing to read.
    rewatch_control: bool,
    /// Seconds since the shard started, advanced by the sweep.
    clock: u32,
    next_sweep: Instant,
    next_sequence: u64,
    /// Room work's working lists.
    fanout: fanout::Fanout,
}

/// Marks the shard stopped however its thread ends, panics included.
struct StoppedGuard(Arc<Shared>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        self.0.shard_stopped();
    }
}

/// The shard thread's body: pin, set up the driver and listeners, serve
/// until shutdown.
pub(crate) fn run<H, F>(setup: ShardSetup<F>)
where
    H: Handler,
    F: Fn(ShardId) -> H + Send + Sync + 'static,
{
    let _stopped = StoppedGuard(Arc::clone(&setup.shared));
    let index = setup.id.index();
    let driver_config = setup.config.io.driver(index);
    // An SQPOLL thread inherits the affinity of the thread that sets up
    // its ring: one with no core of its own is set up before the shard
    // pins itself, so it does not spin on the shard's core.
    let unpinned_poller = driver_config
        .sqpoll
        .is_some_and(|sqpoll| sqpoll.cpu.is_none());
    let driver = if unpinned_poller {
        Some(Driver::new(driver_config, setup.config.force_epoll))
    } else {
        None
    };
    if let Some(core) = setup.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            warn!(shard = index, core, "could not pin the shard to its core");
        }
    }
    let driver = driver.unwrap_or_else(|| Driver::new(driver_config, setup.config.force_epoll));
    let mut driver = match driver {
        Ok((driver, fallback)) => {
            if let Some(error) = fallback {
                if !EPOLL_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
                    warn!(%error, "io_uring is unavailable; shards run on epoll");
                }
            }
            driver
        }
        Err(source) => {
            let _ = setup.ready.send(Err(Error::Runtime {
                shard: index,
                source,
            }));
            return;
        }
    };
    setup.counters.set_driver(driver.kind());
    let Some(mut shard) = start(setup, &mut driver) else {
        return;
    };
    shard.serve(&mut driver);
}

/// Binds the listeners, watches the control socket and builds the shard;
/// reports the bound addresses (or the failure) to the starting thread.
fn start<H, F>(setup: ShardSetup<F>, driver: &mut Driver) -> Option<Shard<H>>
where
    H: Handler,
    F: Fn(ShardId) -> H + Send + Sync + 'static,
{
    let ShardSetup {
        id,
        config,
        factory,
        counters,
        shared,
        control,
        listen,
        ready,
        ..
    } = setup;
    let mut bound = Vec::with_capacity(listen.len());
    for addr in listen {
        let listening =
            socket::bind_listener(addr, config.backlog).and_then(|(listener, local)| {
                driver.add_listener(listener)?;
                Ok(local)
            });
        match listening {
            Ok(local) => bound.push(local),
            Err(source) => {
                let _ = ready.send(Err(Error::Bind {
                    shard: id.index(),
                    addr,
                    source,
                }));
                return None;
            }
        }
    }
    let watched = control
        .set_nonblocking(true)
        .and_then(|()| driver.watch_control(control.as_raw_fd()));
    if let Err(source) = watched {
        let _ = ready.send(Err(Error::Setup {
            shard: id.index(),
            source,
        }));
        return None;
    }
    let connections = Slab::with_capacity(reserved_slots(&config));
    let config_shards = config.shards;
    let shard = Shard {
        id,
        context: ShardContext {
            handler: factory(id),
            inflater: Inflater::new(),
            send: Rc::new(SendContext {
                subprotocols: config.subprotocols.clone().into_boxed_slice(),
                encoder: Encoder::with_compression_threshold(config.compression_threshold),
                deflater: std::cell::RefCell::new(Deflater::new(config.compression_level)),
                pool: std::cell::RefCell::new(SendPools::new(prepared_buffers())),
                counters: Arc::clone(&counters),
                hub: Hub::new(id, config.shards, config.rooms),
                v1: config
                    .subprotocols
                    .iter()
                    .position(|protocol| protocol == SUBPROTOCOL)
                    .and_then(|index| u8::try_from(index).ok()),
                send_limit: config.max_send_buffer,
                drain_threshold: config.drain_threshold,
                backpressure: config.backpressure,
                heartbeat_interval: config.heartbeat.map(|heartbeat| heartbeat.interval),
            }),
            config,
            shared,
            shutdown: None,
        },
        connections,
        // Room for a busy turn's dirty list, so it does not grow (and
        // allocate) in the middle of traffic.
        dirty: Vec::with_capacity(DIRTY_CAPACITY),
        handshake_deadlines: Deadlines::new(Instant::now()),
        close_deadlines: Deadlines::new(Instant::now()),
        handshaking: 0,
        control,
        listeners_closed: false,
        rewatch_control: false,
        clock: 0,
        next_sweep: Instant::now() + SWEEP,
        next_sequence: 0,
        fanout: fanout::Fanout::new(config_shards),
        counters,
    };
    info!(shard = id.index(), addrs = ?bound, "shard listening");
    let _ = ready.send(Ok(bound));
    Some(shard)
}

impl<H: Handler> Shard<H> {
    /// The event loop, until shutdown is over.
    fn serve(&mut self, driver: &mut Driver) {
        let sweeping = self.context.config.idle_timeout.is_some()
            || self.context.config.heartbeat.is_some()
            || self.context.config.rooms.history_ttl.is_some();
        loop {
            let now = Instant::now();
            let timeout = self
                .next_deadline(sweeping)
                .map(|deadline| deadline.saturating_duration_since(now));
            if let Err(error) = driver.wait(timeout, self) {
                error!(shard = self.id.index(), %error, "the I/O driver failed; the shard stops");
                break;
            }
            if std::mem::take(&mut self.rewatch_control) {
                if let Err(error) = driver.watch_control(self.control.as_raw_fd()) {
                    error!(shard = self.id.index(), %error, "could not watch the control socket");
                }
            }
            if self.context.shutdown.is_some() && !self.listeners_closed {
                // New connections are refused by the kernel from here on.
                self.listeners_closed = true;
                driver.close_listeners();
            }
            let now = Instant::now();
            self.exchange(now);
            let mut io = driver.io();
            self.expire(now, &mut io);
            if sweeping && now >= self.next_sweep {
                while self.next_sweep <= now {
                    self.next_sweep += SWEEP;
                    self.clock = self.clock.wrapping_add(1);
                }
                self.sweep();
                let send = &self.context.send;
                send.hub
                    .state
                    .borrow_mut()
                    .owned
                    .expire(now, &send.hub.config);
            }
            self.flush_dirty(&mut io, now);
            if let Some(deadline) = self.context.shutdown {
                if self.connections.is_empty() || now >= deadline {
                    break;
                }
            }
        }
        self.stop(driver);
    }

    /// The earliest time the loop must wake without an event: now, if the
    /// last turn left room work undone.
    fn next_deadline(&self, sweeping: bool) -> Option<Instant> {
        if self.fanout.more {
            return Some(Instant::now());
        }
        [
            self.handshake_deadlines.next(),
            self.close_deadlines.next(),
            sweeping.then_some(self.next_sweep),
            self.context.shutdown,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Drops the connections still open at the end (they hear `on_close`
    /// with 1006) and counts them.
    fn stop(&mut self, driver: &mut Driver) {
        let dropped = self.connections.len() as u64;
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        let mut io = driver.io();
        for key in keys {
            self.close(key, &mut io);
        }
        if dropped > 0 {
            self.context
                .shared
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        info!(shard = self.id.index(), dropped, "shard stopped");
    }

    /// The live connection `token` names.
    fn live(&mut self, token: Token) -> Option<&mut Connection<H::State>> {
        live(&mut self.connections, token)
    }

    /// The shard's rooms, borrowed for one step.
    fn hub_state(&self) -> RefMut<'_, HubState> {
        self.context.send.hub.state.borrow_mut()
    }

    /// Puts a connection on the list to flush at the end of the turn.
    fn mark_dirty(dirty: &mut Vec<usize>, key: usize, connection: &mut Connection<H::State>) {
        connection::mark_dirty(dirty, key, connection);
    }

    /// Tells the handler an open connection is over, stops the driver's
    /// work for it and closes its socket.
    fn close(&mut self, key: usize, io: &mut Io<'_>) {
        let Some(mut connection) = self.connections.try_remove(key) else {
            return;
        };
        let token = connection.token(key);
        io.forget(connection.stream.as_raw_fd(), token);
        if connection.is_open() {
            connection.finish(&mut self.context.handler);
            let left = self.hub_state().local.leave_all(key as u32);
            // The rooms' owners hear of it in a turn that comes at once.
            self.fanout.more |= left;
            self.counters.connection_closed();
        } else {
            self.handshaking -= 1;
        }
    }

    /// Closes connections whose handshake or close handshake took too
    /// long.
    fn expire(&mut self, now: Instant, io: &mut Io<'_>) {
        while let Some(token) = self.handshake_deadlines.pop_due(now) {
            if self
                .live(token)
                .is_some_and(|connection| !connection.is_open())
            {
                debug!(shard = self.id.index(), "handshake timed out");
                self.close(token.key as usize, io);
            }
        }
        if self.handshake_deadlines.len() > 2 * self.handshaking + COMPACT_DEADLINES {
            // Most queued handshakes ended long before their timeout.
            let connections = &self.connections;
            self.handshake_deadlines
                .retain(|token| named(connections, token).is_some_and(|c| !c.is_open()));
        }
        while let Some(token) = self.close_deadlines.pop_due(now) {
            if self.live(token).is_some() {
                debug!(shard = self.id.index(), "close handshake timed out");
                self.close(token.key as usize, io);
            }
        }
    }

    /// Writes what every dirty connection queued; asks for writability
    /// where the socket is full, starts close timers, and drops the
    /// connections whose close handshake is over or whose socket failed.
    fn flush_dirty(&mut self, io: &mut Io<'_>, now: Instant) {
        while let Some(key) = self.dirty.pop() {
            let Shard {
                connections,
                context,
                close_deadlines,
                ..
            } = self;
            let Some(connection) = connections.get_mut(key) else {
                continue;
            };
            connection.flags.set(Flags::DIRTY, false);
            let token = connection.token(key);
            let next = match connection.flush(context) {
                Ok(true) => connection.after_flush(),
                Ok(false) => {
                    if !connection.flags.has(Flags::WAITING_WRITABLE) {
                        connection.flags.set(Flags::WAITING_WRITABLE, true);
                        io.want_writable(connection.stream.as_raw_fd(), token);
                    }
                    Next::Keep
                }
                Err(error) => {
                    debug!(shard = self.id.index(), %error, "socket failed");
                    Next::Drop
                }
            };
            if next == Next::Drop {
                self.close(key, io);
                continue;
            }
            let closing = connection
                .open_mut()
                .is_some_and(|open| open.conn.is_closing());
            if closing && !connection.flags.has(Flags::CLOSE_TIMER) {
                connection.flags.set(Flags::CLOSE_TIMER, true);
                close_deadlines.push(now, context.config.close_timeout, token);
            }
        }
    }

    /// Once a second: closes connections idle for the idle timeout or
    /// silent after a heartbeat ping for the heartbeat timeout, and pings
    /// those whose heartbeat is due. One pass over the slab costs a few
    /// nanoseconds per connection and needs no timer per connection.
    fn sweep(&mut self) {
        let now = self.clock;
        let idle = self.context.config.idle_timeout.map(seconds);
        let heartbeat = self
            .context
            .config
            .heartbeat
            .map(|beat| (seconds(beat.interval), seconds(beat.timeout)));
        for (key, connection) in &mut self.connections {
            let awaiting_pong = connection.flags.has(Flags::AWAITING_PONG);
            let (last_active, last_ping) = (connection.last_active, connection.last_ping);
            let Some(open) = connection.open_mut() else {
                continue;
            };
            if open.conn.is_closing() {
                continue;
            }
            let mut acted = false;
            if idle.is_some_and(|limit| now.wrapping_sub(last_active) >= limit) {
                debug!(shard = self.id.index(), key, "connection idle too long");
                open.conn.close_with(CloseCode::GOING_AWAY, "idle timeout");
                acted = true;
            } else if let Some((interval, timeout)) = heartbeat {
                let since_ping = now.wrapping_sub(last_ping);
                if awaiting_pong && since_ping >= timeout {
                    debug!(shard = self.id.index(), key, "heartbeat ping unanswered");
                    open.conn
                        .close_with(CloseCode::GOING_AWAY, "heartbeat timeout");
                    acted = true;
                } else if !awaiting_pong && since_ping >= interval {
                    open.conn.heartbeat();
                    connection.last_ping = now;
                    connection.flags.set(Flags::AWAITING_PONG, true);
                    acted = true;
                }
            }
            if acted {
                Self::mark_dirty(&mut self.dirty, key, connection);
            }
        }
    }

    /// Shutdown begins: stop accepting (at the end of this turn), and send
    /// 1001 to every open connection.
    fn begin_shutdown(&mut self) {
        let deadline = *self
            .context
            .shared
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.context.shutdown = Some(deadline.unwrap_or_else(Instant::now));
        for (key, connection) in &mut self.connections {
            if let Some(open) = connection.open_mut() {
                open.conn
                    .close_with(CloseCode::GOING_AWAY, "server shutting down");
                Self::mark_dirty(&mut self.dirty, key, connection);
            }
        }
    }
}

impl<H: Handler> Sink for Shard<H> {
    fn socket(&self, token: Token) -> Option<RawFd> {
        named(&self.connections, token).map(|connection| connection.stream.as_raw_fd())
    }

    fn accepted(&mut self, io: &mut Io<'_>, socket: OwnedFd) {
        let stream = TcpStream::from(socket);
        if self.context.shutdown.is_some() {
            // Dropped unanswered: the server no longer accepts.
            return;
        }
        let Ok(peer) = stream.peer_addr() else {
            // The peer is already gone.
            return;
        };
        // Echo-style traffic is latency-bound; frames are corked by the
        // engine.
        let _ = stream.set_nodelay(true);
        let ticket = self.context.shared.admission.admit(peer.ip());
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let entry = self.connections.vacant_entry();
        let token = Token::new(entry.key(), sequence);
        let fd = stream.as_raw_fd();
        entry.insert(Connection::accepted(
            stream,
            peer,
            token.generation,
            self.clock,
            ticket,
        ));
        io.watch(fd, token);
        self.handshaking += 1;
        self.handshake_deadlines
            .push(Instant::now(), self.context.config.handshake_timeout, token);
    }

    fn received(&mut self, io: &mut Io<'_>, token: Token, data: &mut [u8]) {
        let key = token.key as usize;
        let Shard {
            id,
            connections,
            context,
            counters,
            dirty,
            clock,
            next_sequence,
            ..
        } = self;
        let Some(connection) = live(connections, token) else {
            return;
        };
        let was_open = connection.is_open();
        let new_id = || {
            let sequence = *next_sequence;
            *next_sequence += 1;
            ConnId::new(*id, sequence)
        };
        let received = data.len() as u64;
        let (next, messages) = connection.receive(context, new_id, token.key, *clock, data);
        if next == Next::Drop {
            self.close(key, io);
            return;
        }
        if connection.is_open() {
            if was_open {
                counters.received(messages, received);
            } else {
                counters.connection_opened();
                self.handshaking -= 1;
            }
            Self::mark_dirty(dirty, key, connection);
        }
    }

    fn ended(&mut self, io: &mut Io<'_>, token: Token, error: Option<std::io::Error>) {
        let key = token.key as usize;
        let Shard {
            connections,
            context,
            ..
        } = self;
        let Some(connection) = live(connections, token) else {
            return;
        };
        if let Some(error) = error {
            debug!(shard = self.id.index(), %error, "socket failed");
        } else if connection.is_open() {
            // The peer may have sent its close frame and its end of stream
            // at once: our queued reply still goes out, if it can.
            let _ = connection.flush(context);
        }
        self.close(key, io);
    }

    fn writable(&mut self, _io: &mut Io<'_>, token: Token) {
        let key = token.key as usize;
        let Shard {
            connections, dirty, ..
        } = self;
        if let Some(connection) = live(connections, token) {
            connection.flags.set(Flags::WAITING_WRITABLE, false);
            Self::mark_dirty(dirty, key, connection);
        }
    }

    fn control(&mut self, _io: &mut Io<'_>) {
        // Each byte is a wake-up: for the inbox, which the turn drains, or
        // for shutdown, which the deadline tells.
        let mut bytes = [0; 64];
        loop {
            match self.control.read(&mut bytes) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    error!(shard = self.id.index(), %error, "the control socket failed; shutdown and other shards cannot reach this shard");
                    return;
                }
            }
        }
        self.rewatch_control = true;
        let stopping = self
            .context
            .shared
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if stopping && self.context.shutdown.is_none() {
            self.begin_shutdown();
        }
    }
}

/// The shard's send and message buffers: a pool with
/// [`PREPARED_BUFFERS`] of [`PREPARED_CAPACITY`] bytes ready.
fn prepared_buffers() -> BufferPool {
    let mut buffers = BufferPool::new(
        BufferPool::DEFAULT_BUFFERS,
        BufferPool::DEFAULT_MAX_CAPACITY,
    );
    buffers.prepare(PREPARED_BUFFERS, PREPARED_CAPACITY);
    buffers
}

/// How many connection slots a shard reserves when it starts: its share
/// of the connection limit, up to [`MAX_RESERVED_SLOTS`].
///
/// The slab then never moves while the server stays within its limit: a
/// growing vector would copy every connection at each doubling and leave
/// the old copies to the allocator, resident for a while. The reserved
/// space is address space only; a page becomes resident when the first
/// connection stored in it does.
fn reserved_slots(config: &ServerConfig) -> usize {
    config
        .max_connections
        .div_ceil(config.shards.max(1))
        .min(MAX_RESERVED_SLOTS)
}

/// The connection `token` names, unless it ended (and its key may have
/// gone to another).
fn live<S>(connections: &mut Slab<Connection<S>>, token: Token) -> Option<&mut Connection<S>> {
    connections
        .get_mut(token.key as usize)
        .filter(|connection| connection.token(token.key as usize) == token)
}

/// [`live`], to read.
fn named<S>(connections: &Slab<Connection<S>>, token: Token) -> Option<&Connection<S>> {
    connections
        .get(token.key as usize)
        .filter(|connection| connection.token(token.key as usize) == token)
}

/// Whole seconds of a timeout, at least one: the sweep's granularity.
fn seconds(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX)
}
