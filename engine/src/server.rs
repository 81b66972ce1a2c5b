//! [`Server`] and [`ServerHandle`]: starting the shards, and controlling
//! and observing them from any thread.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use crate::admission::Admission;
use crate::config::{ServerBuilder, ServerConfig, allowed_cores};
use crate::error::Error;
use crate::handler::{Handler, ShardId};
use crate::inbox::{Inbox, ShardMessage};
use crate::prepared::PreparedMessage;
use crate::rooms::{Publication, RoomError, owner_of};
use crate::shard::{self, ShardSetup};
use crate::stats::{ShardCounters, ShardStats};

/// A configured server, not yet started: [`Server::builder`] makes one,
/// [`Server::start`] runs it.
pub struct Server<H, F> {
    pub(crate) config: ServerConfig,
    pub(crate) factory: Arc<F>,
    pub(crate) handler: PhantomData<fn() -> H>,
}

impl Server<(), ()> {
    /// A builder with every default; see [`ServerBuilder`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }
}

impl ServerBuilder {
    /// Finishes the configuration with the handler factory, called once on
    /// each shard's thread to create that shard's handler.
    pub fn build<H, F>(self, factory: F) -> Server<H, F>
    where
        H: Handler,
        F: Fn(ShardId) -> H + Send + Sync + 'static,
    {
        Server {
            config: self.config,
            factory: Arc::new(factory),
            handler: PhantomData,
        }
    }
}

/// What every shard and every handle share: connection accounting and the
/// shutdown request. Touched per connection and at shutdown, never per
/// message.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Connections open over all shards and per client address.
    pub(crate) admission: Arc<Admission>,
    /// Connections that finished the close handshake after shutdown began.
    pub(crate) closed_cleanly: AtomicU64,
    /// Connections still open when their shard stopped at the deadline.
    pub(crate) dropped: AtomicU64,
    /// The shutdown deadline, once shutdown was asked for.
    pub(crate) deadline: Mutex<Option<Instant>>,
    /// Each shard's inbox, by shard index: how shards, and handles, reach
    /// a shard.
    pub(crate) inboxes: Box<[Inbox]>,
    /// Shards still running, and the condition their exit signals.
    running: Mutex<usize>,
    stopped: Condvar,
}

impl Shared {
    /// Marks one shard as stopped and wakes the waiters of the last one.
    pub(crate) fn shard_stopped(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        *running = running.saturating_sub(1);
        if *running == 0 {
            self.stopped.notify_all();
        }
    }

    fn wait_stopped(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        while *running > 0 {
            running = self
                .stopped
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl<H, F> Server<H, F>
where
    H: Handler,
    F: Fn(ShardId) -> H + Send + Sync + 'static,
{
    /// Starts the shards, one thread each, and returns once every shard
    /// listens on every address.
    ///
    /// Shards start one after another: the first binds the configured
    /// addresses (port 0 picks a port), the others bind the same resolved
    /// addresses with `SO_REUSEPORT`, so the kernel spreads connections
    /// over the shards.
    ///
    /// # Errors
    /// No address, zero shards, an io_uring setting out of range, an
    /// address that cannot be bound, an I/O driver
    /// that cannot be built on either driver, or a thread that cannot be
    /// spawned. Shards already started are stopped.
    pub fn start(self) -> Result<ServerHandle, Error> {
        let config = self.config;
        if config.listen.is_empty() {
            return Err(Error::NoListenAddress);
        }
        config.io.check(config.force_epoll)?;
        let cores = config.cores.clone().unwrap_or_else(allowed_cores);
        let shards = match config.shards {
            0 if !cores.is_empty() => cores.len(),
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        if config.cores.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::NoShards);
        }
        let config = Arc::new(ServerConfig { shards, ..config });
        let mut inboxes = Vec::with_capacity(shards);
        let mut controls = Vec::with_capacity(shards);
        for index in 0..shards {
            let (doorbell, control) = UnixStream::pair()
                .and_then(|(doorbell, control)| {
                    doorbell.set_nonblocking(true)?;
                    Ok((doorbell, control))
                })
                .map_err(|source| Error::Setup {
                    shard: index,
                    source,
                })?;
            inboxes.push(Inbox::new(doorbell));
            controls.push(control);
        }
        let shared = Arc::new(Shared {
            admission: Arc::new(Admission::new(
                config.max_connections,
                config.max_connections_per_ip,
            )),
            closed_cleanly: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            deadline: Mutex::new(None),
            inboxes: inboxes.into_boxed_slice(),
            running: Mutex::new(0),
            stopped: Condvar::new(),
        });
        let mut counters = Vec::with_capacity(shards);
        let mut addrs = config.listen.clone();
        for (index, control) in controls.into_iter().enumerate() {
            let setup_error = |source| Error::Setup {
                shard: index,
                source,
            };
            let shard_counters = Arc::new(ShardCounters::default());
            let (ready, started) = mpsc::channel();
            let setup = ShardSetup {
                id: ShardId(index),
                config: Arc::clone(&config),
                factory: Arc::clone(&self.factory),
                counters: Arc::clone(&shard_counters),
                shared: Arc::clone(&shared),
                control,
                listen: addrs.clone(),
                core: (config.pin_cores && !cores.is_empty()).then(|| cores[index % cores.len()]),
                ready,
            };
            *shared
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner) += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("shardcast-{index}"))
                .spawn(move || shard::run(setup));
            if let Err(source) = spawned {
                shared.shard_stopped();
                abort(&shared);
                return Err(setup_error(source));
            }
            counters.push(shard_counters);
            match started.recv() {
                Ok(Ok(bound)) => addrs = bound,
                Ok(Err(error)) => {
                    abort(&shared);
                    return Err(error);
                }
                Err(_) => {
                    abort(&shared);
                    return Err(Error::ShardStopped { shard: index });
                }
            }
        }
        Ok(ServerHandle {
            inner: Arc::new(Inner {
                shared,
                config,
                counters,
                local_addrs: addrs,
            }),
        })
    }
}

/// Controls and observes a running server from any thread: addresses,
/// stats, shutdown. Cheap to clone.
///
/// Dropping every handle without calling [`shutdown`](Self::shutdown)
/// leaves the server running until the process exits.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    config: Arc<ServerConfig>,
    counters: Vec<Arc<ShardCounters>>,
    local_addrs: Vec<SocketAddr>,
}

/// The outcome of [`ServerHandle::shutdown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections that answered the server's 1001 close frame (or closed
    /// themselves) before the deadline.
    pub closed_cleanly: u64,
    /// Connections still open at the deadline, dropped without a finished
    /// close handshake.
    pub dropped: u64,
}

impl ServerHandle {
    /// The addresses the server listens on, ports resolved: the port the
    /// kernel picked where the builder said 0.
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.inner.local_addrs
    }

    /// A snapshot of every shard's counters, in shard order.
    #[must_use]
    pub fn stats(&self) -> Vec<ShardStats> {
        self.inner
            .counters
            .iter()
            .enumerate()
            .map(|(index, counters)| counters.snapshot(index))
            .collect()
    }

    /// Stops the server gracefully and blocks until every shard stopped.
    ///
    /// Each shard stops accepting, sends a 1001 close frame to every open
    /// connection, and waits for the close handshakes until `deadline`;
    /// connections still open then are dropped. Connections in their
    /// handshake are refused with 503. Calling it again, from any handle,
    /// waits for the same shutdown.
    ///
    /// It blocks the calling thread: call it from outside the shards (a
    /// signal handler thread, `main`), never from a [`Handler`], whose shard
    /// could then never stop.
    pub fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        {
            let mut slot = self
                .inner
                .shared
                .deadline
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(deadline);
                drop(slot);
                wake_shards(&self.inner.shared);
            }
        }
        self.wait();
        ShutdownReport {
            closed_cleanly: self.inner.shared.closed_cleanly.load(Ordering::Relaxed),
            dropped: self.inner.shared.dropped.load(Ordering::Relaxed),
        }
    }

    /// Publishes `message` to every member of `room`, on every shard, from
    /// any thread: the room's owner shard sequences it like a message
    /// published by a connection. Returns once the message is queued.
    ///
    /// # Errors
    /// An empty or too long room name.
    pub fn publish(&self, room: &str, message: &PreparedMessage) -> Result<(), RoomError> {
        self.publish_many(&[room], message)
    }

    /// Publishes `message` to each room of `rooms`, each in its own order
    /// (see [`Hub::publish_many`](crate::Hub::publish_many)).
    ///
    /// # Errors
    /// An empty or too long room name; then nothing is published.
    pub fn publish_many(&self, rooms: &[&str], message: &PreparedMessage) -> Result<(), RoomError> {
        for room in rooms {
            self.inner.config.rooms.check_name(room)?;
        }
        for room in rooms {
            let inbox = self.owner_inbox(room);
            inbox.push(ShardMessage::Publish(Box::new(Publication {
                room: (*room).into(),
                message: message.clone(),
                except: None,
                receipt: None,
                publisher: None,
            })));
            inbox.ring();
        }
        Ok(())
    }

    /// Sends `message` to every open connection of every shard, as it was
    /// prepared.
    pub fn broadcast(&self, message: &PreparedMessage) {
        for inbox in &self.inner.shared.inboxes {
            inbox.push(ShardMessage::Broadcast(message.clone()));
            inbox.ring();
        }
    }

    /// The number of members of `room` over every shard, as its owner
    /// knows it: joins and leaves reach the owner within a loop turn of
    /// the shard they happen on. Blocks until the owner answers.
    ///
    /// # Errors
    /// An empty or too long room name; [`RoomError::Stopped`] if the owner
    /// shard did not answer within 5 seconds (the server stopped).
    pub fn room_size(&self, room: &str) -> Result<usize, RoomError> {
        self.inner.config.rooms.check_name(room)?;
        let (reply, answer) = mpsc::channel();
        let inbox = self.owner_inbox(room);
        inbox.push(ShardMessage::RoomSize {
            room: room.into(),
            reply,
        });
        inbox.ring();
        answer
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| RoomError::Stopped)
    }

    fn owner_inbox(&self, room: &str) -> &Inbox {
        let owner = owner_of(room, self.inner.shared.inboxes.len());
        &self.inner.shared.inboxes[owner.index()]
    }

    /// Blocks until every shard has stopped: after a shutdown, or if every
    /// shard thread ended on its own.
    pub fn wait(&self) {
        self.inner.shared.wait_stopped();
    }
}

/// Wakes every shard: each reads the deadline and begins shutdown.
fn wake_shards(shared: &Shared) {
    for inbox in &shared.inboxes {
        inbox.knock();
    }
}

/// Stops the shards started before a later one failed to start.
fn abort(shared: &Shared) {
    *shared
        .deadline
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    wake_shards(shared);
    shared.wait_stopped();
}
