//! One shard: a pinned thread running a monoio runtime, with its own
//! listeners, handler, receive buffer, codec state and connections.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, mpsc};
use std::task::Waker;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, CancelHandle, Canceller};
use monoio::net::{ListenerOpts, TcpListener, UnixStream};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use shardcast_proto::deflate::{Deflater, Inflater};
use shardcast_proto::frame::Encoder;
use slab::Slab;
use tracing::{debug, error, info, warn};

use crate::buffer_pool::BufferPool;
use crate::config::ServerConfig;
use crate::conn::SendContext;
use crate::connection;
use crate::error::Error;
use crate::handler::{Handler, ShardId};
use crate::server::Shared;
use crate::stats::{IoDriver, ShardCounters};

/// The size of the one receive buffer each shard reads every connection
/// into.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// io_uring submission queue entries per shard.
const RING_ENTRIES: u32 = 4096;

/// How often a shard in shutdown checks whether its connections are gone.
const DRAIN_POLL: Duration = Duration::from_millis(5);

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
    pub(crate) control: StdUnixStream,
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) core: Option<usize>,
    pub(crate) ready: mpsc::Sender<Result<Vec<SocketAddr>, Error>>,
}

/// What the shard's once-a-second sweep found for a connection to act on,
/// most urgent last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Alarm {
    /// Nothing.
    #[default]
    None,
    /// A heartbeat ping is due.
    PingDue,
    /// The last heartbeat ping went unanswered for the timeout.
    PongTimeout,
    /// Nothing was received for the idle timeout.
    Idle,
}

/// What the shard knows about one upgraded connection, beside its task:
/// how to wake it, and the times the sweep checks (seconds of the shard's
/// clock).
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) waker: Option<Waker>,
    /// When a byte was last received.
    pub(crate) last_active: u32,
    /// When the last heartbeat ping was queued, or the connection opened.
    pub(crate) last_ping: u32,
    /// A heartbeat ping is out and its pong has not come.
    pub(crate) awaiting_pong: bool,
    /// The connection queued its close frame: the sweep leaves it alone.
    pub(crate) closing: bool,
    /// For the task to act on when it next runs.
    pub(crate) alarm: Alarm,
}

impl Slot {
    /// A slot for a connection opened at `now`.
    pub(crate) fn new(now: u32) -> Slot {
        Slot {
            waker: None,
            last_active: now,
            last_ping: now,
            awaiting_pong: false,
            closing: false,
            alarm: Alarm::None,
        }
    }

    /// Raises `alarm` and wakes the task, unless something as urgent is
    /// already raised.
    fn raise(&mut self, alarm: Alarm) {
        if alarm > self.alarm {
            self.alarm = alarm;
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }
}

/// A shard's state, reached by its tasks through an `Rc`: touched by the
/// shard's thread only. Each `RefCell` is borrowed only synchronously,
/// never across an await.
pub(crate) struct Shard<H> {
    pub(crate) id: ShardId,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) counters: Arc<ShardCounters>,
    pub(crate) handler: RefCell<H>,
    /// The one receive buffer: a read lands here and is decoded before the
    /// task yields, so no connection holds a buffer while idle.
    pub(crate) receive: RefCell<Box<[u8]>>,
    pub(crate) inflater: RefCell<Inflater>,
    pub(crate) send: Rc<SendContext>,
    pub(crate) slots: RefCell<Slab<Slot>>,
    pub(crate) shutting_down: Cell<bool>,
    /// Seconds since the shard started, advanced by the sweep.
    pub(crate) clock: Cell<u32>,
    next_sequence: Cell<u64>,
}

impl<H> Shard<H> {
    /// The next connection sequence number on this shard.
    pub(crate) fn next_sequence(&self) -> u64 {
        let sequence = self.next_sequence.get();
        self.next_sequence.set(sequence + 1);
        sequence
    }

    fn wake_all(&self) {
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }
}

/// Marks the shard stopped however its thread ends, panics included.
struct StoppedGuard(Arc<Shared>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        self.0.shard_stopped();
    }
}

/// The shard thread's body: pin, build the runtime, serve until shutdown.
pub(crate) fn run<H, F>(setup: ShardSetup<F>)
where
    H: Handler,
    F: Fn(ShardId) -> H + Send + Sync + 'static,
{
    let _stopped = StoppedGuard(Arc::clone(&setup.shared));
    let shard = setup.id.index();
    if let Some(core) = setup.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            warn!(shard, core, "could not pin the shard to its core");
        }
    }
    if !setup.config.force_epoll {
        match RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .enable_timer()
            .build()
        {
            Ok(mut runtime) => {
                setup.counters.set_driver(IoDriver::IoUring);
                runtime.block_on(serve(setup));
                return;
            }
            Err(error) => {
                if !EPOLL_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
                    warn!(%error, "io_uring is unavailable; shards run on epoll");
                }
            }
        }
    }
    match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
        Ok(mut runtime) => {
            setup.counters.set_driver(IoDriver::Epoll);
            runtime.block_on(serve(setup));
        }
        Err(source) => {
            let _ = setup.ready.send(Err(Error::Runtime { shard, source }));
        }
    }
}

/// Binds the shard's listeners, then accepts and serves until shutdown.
async fn serve<H, F>(setup: ShardSetup<F>)
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
    let mut listeners = Vec::with_capacity(listen.len());
    let mut bound = Vec::with_capacity(listen.len());
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(config.backlog);
    for addr in listen {
        let listener = TcpListener::bind_with_config(addr, &opts)
            .and_then(|listener| Ok((listener.local_addr()?, listener)));
        match listener {
            Ok((local, listener)) => {
                bound.push(local);
                listeners.push(listener);
            }
            Err(source) => {
                let _ = ready.send(Err(Error::Bind {
                    shard: id.index(),
                    addr,
                    source,
                }));
                return;
            }
        }
    }
    let control = match UnixStream::from_std(control) {
        Ok(control) => control,
        Err(source) => {
            let _ = ready.send(Err(Error::Setup {
                shard: id.index(),
                source,
            }));
            return;
        }
    };
    let shard = Rc::new(Shard {
        id,
        handler: RefCell::new(factory(id)),
        receive: RefCell::new(vec![0; RECEIVE_BUFFER].into_boxed_slice()),
        inflater: RefCell::new(Inflater::new()),
        send: Rc::new(SendContext {
            subprotocols: config.subprotocols.clone().into_boxed_slice(),
            encoder: Encoder::with_compression_threshold(config.compression_threshold),
            deflater: RefCell::new(Deflater::new(config.compression_level)),
            pool: RefCell::new(BufferPool::new(
                BufferPool::DEFAULT_BUFFERS,
                BufferPool::DEFAULT_MAX_CAPACITY,
            )),
            counters: Arc::clone(&counters),
            send_limit: config.max_send_buffer,
            drain_threshold: config.drain_threshold,
            backpressure: config.backpressure,
        }),
        slots: RefCell::new(Slab::new()),
        shutting_down: Cell::new(false),
        clock: Cell::new(0),
        next_sequence: Cell::new(0),
        config,
        shared,
        counters,
    });
    info!(shard = id.index(), addrs = ?bound, "shard listening");
    let _ = ready.send(Ok(bound));
    let canceller = Canceller::new();
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|listener| monoio::spawn(accept_loop(Rc::clone(&shard), listener, canceller.handle())))
        .collect();
    if shard.config.idle_timeout.is_some() || shard.config.heartbeat.is_some() {
        monoio::spawn(sweep(Rc::clone(&shard)));
    }
    wait_for_shutdown(control).await;
    let deadline = *shard
        .shared
        .deadline
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let deadline = deadline.unwrap_or_else(Instant::now);
    shard.shutting_down.set(true);
    shard.wake_all();
    // Ends the accept loops, which drop their listeners: new connections
    // are refused by the kernel from here on. Waiting for them matters:
    // a task still pending when the runtime is dropped would never close
    // its listener.
    let _ = canceller.cancel();
    let until = monoio::time::Instant::from_std(deadline);
    for task in accepting {
        let _ = monoio::time::timeout_at(until, task).await;
    }
    // Sleep before each check, at least once: on io_uring a dropped
    // listener's close is an operation that the next turn of the ring
    // submits.
    loop {
        monoio::time::sleep(DRAIN_POLL.min(deadline.saturating_duration_since(Instant::now())))
            .await;
        if shard.slots.borrow().is_empty() || Instant::now() >= deadline {
            break;
        }
    }
    let dropped = shard.slots.borrow().len() as u64;
    if dropped > 0 {
        shard.shared.dropped.fetch_add(dropped, Ordering::Relaxed);
    }
    info!(shard = id.index(), dropped, "shard stopped");
}

/// Waits for the handle's byte on the control socket. If every handle is
/// gone (end of stream), the server runs until the process ends.
async fn wait_for_shutdown(mut control: UnixStream) {
    let (result, _) = control.read(vec![0; 1]).await;
    match result {
        Ok(1..) => {}
        Ok(0) | Err(_) => std::future::pending::<()>().await,
    }
}

/// Accepts connections and spawns a task for each, until `cancel` fires
/// at shutdown; then the listener is dropped, which closes it.
async fn accept_loop<H: Handler>(shard: Rc<Shard<H>>, listener: TcpListener, cancel: CancelHandle) {
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, peer)) => {
                if shard.shutting_down.get() {
                    // Dropped unanswered: the server no longer accepts.
                    continue;
                }
                monoio::spawn(connection::run(Rc::clone(&shard), stream, peer));
            }
            Err(_) if shard.shutting_down.get() => return,
            Err(error) => {
                // EMFILE, ENFILE, ENOBUFS: back off briefly instead of spinning.
                error!(shard = shard.id.index(), %error, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Whole seconds of a timeout, at least one: the sweep's granularity.
fn seconds(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX)
}

/// Advances the shard's clock once a second and raises the alarms of
/// connections whose idle timeout passed, whose heartbeat ping is due, or
/// whose ping went unanswered; each such connection is woken to act.
///
/// One pass over the slots a second costs a few nanoseconds per
/// connection and needs no timer per connection (monoio's timer future is
/// some 640 bytes, more than an idle connection's whole budget).
async fn sweep<H: Handler>(shard: Rc<Shard<H>>) {
    let idle = shard.config.idle_timeout.map(seconds);
    let heartbeat = shard
        .config
        .heartbeat
        .map(|beat| (seconds(beat.interval), seconds(beat.timeout)));
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        let now = shard.clock.get().wrapping_add(1);
        shard.clock.set(now);
        for (key, slot) in shard.slots.borrow_mut().iter_mut() {
            if slot.closing {
                continue;
            }
            if idle.is_some_and(|limit| now.wrapping_sub(slot.last_active) >= limit) {
                debug!(shard = shard.id.index(), key, "connection idle too long");
                slot.raise(Alarm::Idle);
            }
            if let Some((interval, timeout)) = heartbeat {
                let since_ping = now.wrapping_sub(slot.last_ping);
                if slot.awaiting_pong && since_ping >= timeout {
                    debug!(shard = shard.id.index(), key, "heartbeat ping unanswered");
                    slot.raise(Alarm::PongTimeout);
                } else if !slot.awaiting_pong && since_ping >= interval {
                    slot.raise(Alarm::PingDue);
                }
            }
        }
    }
}
