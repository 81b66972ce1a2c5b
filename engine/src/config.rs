//! [`ServerBuilder`]: every knob of a server, each with a documented default.

use std::net::SocketAddr;
use std::time::Duration;

use shardcast_proto::CloseCode;
use shardcast_proto::deflate::Deflater;
use shardcast_proto::frame::{DecoderConfig, Encoder};
use shardcast_proto::handshake::HeadLimits;
use shardcast_proto::role::Server as ServerRole;

use crate::driver::{DriverConfig, SqPoll};
use crate::error::Error;
use crate::rooms::RoomsConfig;

/// Everything a server runs with, shared read-only by its shards.
#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) shards: usize,
    pub(crate) cores: Option<Vec<usize>>,
    pub(crate) pin_cores: bool,
    pub(crate) force_epoll: bool,
    pub(crate) backlog: i32,
    pub(crate) decoder: DecoderConfig,
    pub(crate) head: HeadLimits,
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) max_send_buffer: usize,
    pub(crate) drain_threshold: usize,
    pub(crate) backpressure: Backpressure,
    pub(crate) compression: bool,
    pub(crate) compression_threshold: usize,
    pub(crate) compression_level: u8,
    pub(crate) subprotocols: Vec<String>,
    pub(crate) rooms: RoomsConfig,
    pub(crate) io: IoConfig,
}

/// The shape of each shard's io_uring: ring, receive buffers, SQPOLL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IoConfig {
    pub(crate) ring_entries: u32,
    pub(crate) receive_buffers: u16,
    pub(crate) receive_buffer_size: u32,
    pub(crate) sqpoll_idle: Option<Duration>,
    pub(crate) sqpoll_cores: Option<Vec<usize>>,
}

impl IoConfig {
    /// The driver settings of shard `index`: its SQPOLL thread takes the
    /// shard's place in `sqpoll_cores`, wrapping around.
    pub(crate) fn driver(&self, index: usize) -> DriverConfig {
        DriverConfig {
            ring_entries: self.ring_entries,
            receive_buffers: self.receive_buffers,
            receive_buffer_size: self.receive_buffer_size,
            sqpoll: self.sqpoll_idle.map(|idle| SqPoll {
                idle_ms: u32::try_from(idle.as_millis()).unwrap_or(u32::MAX),
                cpu: self
                    .sqpoll_cores
                    .as_ref()
                    .filter(|cores| !cores.is_empty())
                    .and_then(|cores| u32::try_from(cores[index % cores.len()]).ok()),
            }),
        }
    }

    /// Whether the kernel can set up rings and buffer rings of this shape;
    /// the setting that cannot be, and why, if not.
    pub(crate) fn check(&self, force_epoll: bool) -> Result<(), Error> {
        let refuse = |setting, reason| Err(Error::Setting { setting, reason });
        if !(1..=ServerBuilder::MAX_RING_ENTRIES).contains(&self.ring_entries) {
            return refuse("ring_entries", "must be 1 to 32768 (IORING_MAX_ENTRIES)");
        }
        if !self.receive_buffers.is_power_of_two() || self.receive_buffers > 1 << 15 {
            return refuse(
                "receive_buffers",
                "must be a power of two from 1 to 32768 (a provided-buffer ring's size)",
            );
        }
        if self.receive_buffer_size < ServerBuilder::MIN_RECEIVE_BUFFER_SIZE {
            return refuse("receive_buffer_size", "must be at least 512 bytes");
        }
        if u64::from(self.receive_buffers) * u64::from(self.receive_buffer_size) > 1 << 30 {
            return refuse(
                "receive_buffers",
                "times receive_buffer_size must be at most 1 GiB per shard",
            );
        }
        if self
            .sqpoll_idle
            .is_some_and(|idle| idle < Duration::from_millis(1))
        {
            return refuse("sqpoll", "idle time must be at least 1 ms");
        }
        if self.sqpoll_idle.is_some() && force_epoll {
            return refuse("sqpoll", "polls io_uring, but force_epoll is on");
        }
        if self.sqpoll_idle.is_some() && self.sqpoll_cores.as_ref().is_some_and(Vec::is_empty) {
            return refuse("sqpoll_cores", "is an empty list");
        }
        Ok(())
    }
}

/// How often the server pings each connection and how long it waits for
/// the pong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// What the engine does with a message that would take a connection's
/// send buffer past [`ServerBuilder::max_send_buffer`]: the connection's
/// peer reads slower than the application writes to it.
///
/// Either way the slow connection alone pays: its queue is bounded, and
/// the shard's other connections are served as before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backpressure {
    /// Close the connection with this code, whatever the message: 1008
    /// (policy violation) or 1013 (try again later) are the usual ones.
    Close(CloseCode),
    /// Drop the new message if it is marked
    /// [droppable](crate::PreparedMessage::droppable), and count it in the
    /// shard's stats; the connection stays open and gets the messages that
    /// fit. A message not marked droppable closes with this code.
    DropNewest(CloseCode),
}

impl Backpressure {
    /// The code a connection is closed with when a message cannot be
    /// queued; a code that may not be sent becomes 1008.
    pub(crate) fn close_code(self) -> CloseCode {
        let (Backpressure::Close(code) | Backpressure::DropNewest(code)) = self;
        if code.is_allowed_on_wire() {
            code
        } else {
            CloseCode::POLICY_VIOLATION
        }
    }

    /// Whether droppable messages are dropped rather than closing.
    pub(crate) fn drops_droppable(self) -> bool {
        matches!(self, Backpressure::DropNewest(_))
    }
}

/// The cores this process may run on, in order; empty if unknown.
pub(crate) fn allowed_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|id| id.id).collect())
        .unwrap_or_default()
}

/// A backlog as `listen(2)` takes it; values past `i32::MAX` mean the
/// most the kernel allows, as they would anyway.
fn backlog_arg(connections: u32) -> i32 {
    i32::try_from(connections).unwrap_or(i32::MAX)
}

/// Builds a [`Server`](crate::Server): listen addresses, shards and cores, limits,
/// compression and subprotocols. Start from
/// [`Server::builder`](crate::Server::builder), end with
/// [`build`](ServerBuilder::build).
///
/// Every limit has a safe default; the defaults suit a server with many
/// connections of modest messages.
#[derive(Clone, Debug)]
#[must_use]
pub struct ServerBuilder {
    pub(crate) config: ServerConfig,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder::new()
    }
}

impl ServerBuilder {
    /// Default handshake timeout: 10 s from accept to a complete request.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default idle timeout: 120 s without a byte from the peer.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
    /// Default close timeout: 5 s for the peer to answer our close frame.
    pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default heartbeat interval: a ping every 30 s.
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
    /// Default heartbeat timeout: 30 s for the pong.
    pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default limit on connections, upgraded or in their handshake, over
    /// all shards: 100,000.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
    /// Default send buffer limit per connection: 64 MiB + 64 KiB, enough
    /// to echo one message of the default largest size with the frames
    /// batched beside it.
    pub const DEFAULT_MAX_SEND_BUFFER: usize = (64 << 20) + (64 << 10);
    /// Default drain threshold: 64 KiB.
    pub const DEFAULT_DRAIN_THRESHOLD: usize = 64 << 10;
    /// Default listen backlog: 1024 connections waiting to be accepted.
    pub const DEFAULT_BACKLOG: u32 = 1024;
    /// Default room history: the last 128 messages of each room, for
    /// recovery after a reconnection.
    pub const DEFAULT_ROOM_HISTORY_SIZE: usize = 128;
    /// Default age limit of a room's history: 2 minutes.
    pub const DEFAULT_ROOM_HISTORY_TTL: Duration = Duration::from_secs(120);
    /// Default limit on the rooms one connection is in at once: 1024.
    pub const DEFAULT_MAX_ROOMS_PER_CONNECTION: usize = 1024;
    /// Default longest room name: 256 bytes.
    pub const DEFAULT_MAX_ROOM_NAME: usize = 256;
    /// Default io_uring submission queue entries per shard: 4096.
    pub const DEFAULT_RING_ENTRIES: u32 = 4096;
    /// The most submission queue entries the kernel gives a ring:
    /// 32768 (`IORING_MAX_ENTRIES`).
    pub const MAX_RING_ENTRIES: u32 = 32_768;
    /// Default receive buffers per shard: 8, of
    /// [`DEFAULT_RECEIVE_BUFFER_SIZE`](Self::DEFAULT_RECEIVE_BUFFER_SIZE)
    /// each.
    pub const DEFAULT_RECEIVE_BUFFERS: u16 = 8;
    /// Default size of one receive buffer: 32 KiB, so 256 KiB per shard
    /// (uWebSockets reads into one 512 KiB buffer per loop).
    pub const DEFAULT_RECEIVE_BUFFER_SIZE: u32 = 32 * 1024;
    /// The smallest receive buffer accepted: 512 bytes.
    pub const MIN_RECEIVE_BUFFER_SIZE: u32 = 512;

    /// A builder with every default and no listen address.
    pub fn new() -> Self {
        ServerBuilder {
            config: ServerConfig {
                listen: Vec::new(),
                shards: 0,
                cores: None,
                pin_cores: true,
                force_epoll: false,
                backlog: backlog_arg(Self::DEFAULT_BACKLOG),
                decoder: DecoderConfig::DEFAULT,
                head: HeadLimits::default(),
                handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
                idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
                close_timeout: Self::DEFAULT_CLOSE_TIMEOUT,
                heartbeat: Some(Heartbeat {
                    interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
                    timeout: Self::DEFAULT_HEARTBEAT_TIMEOUT,
                }),
                max_connections: Self::DEFAULT_MAX_CONNECTIONS,
                max_connections_per_ip: None,
                max_send_buffer: Self::DEFAULT_MAX_SEND_BUFFER,
                drain_threshold: Self::DEFAULT_DRAIN_THRESHOLD,
                backpressure: Backpressure::DropNewest(CloseCode::POLICY_VIOLATION),
                compression: true,
                compression_threshold: Encoder::<ServerRole>::DEFAULT_COMPRESSION_THRESHOLD,
                compression_level: Deflater::DEFAULT_LEVEL,
                subprotocols: Vec::new(),
                rooms: RoomsConfig {
                    history_size: Self::DEFAULT_ROOM_HISTORY_SIZE,
                    history_ttl: Some(Self::DEFAULT_ROOM_HISTORY_TTL),
                    max_rooms_per_connection: Self::DEFAULT_MAX_ROOMS_PER_CONNECTION,
                    max_room_name: Self::DEFAULT_MAX_ROOM_NAME,
                    batch_deliveries: false,
                },
                io: IoConfig {
                    ring_entries: Self::DEFAULT_RING_ENTRIES,
                    receive_buffers: Self::DEFAULT_RECEIVE_BUFFERS,
                    receive_buffer_size: Self::DEFAULT_RECEIVE_BUFFER_SIZE,
                    sqpoll_idle: None,
                    sqpoll_cores: None,
                },
            },
        }
    }

    /// Adds an address to listen on; call it once per address. Port 0
    /// picks a free port (the same one on every shard); read it back with
    /// [`ServerHandle::local_addrs`](crate::ServerHandle::local_addrs).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen.push(addr);
        self
    }

    /// The number of shards, one thread each. Default: the number of cores
    /// this process may run on (its affinity mask), or
    /// [`std::thread::available_parallelism`] if that is unknown.
    pub fn shards(mut self, shards: usize) -> Self {
        self.config.shards = shards;
        self
    }

    /// Pins each shard to a core, in order (shard `i` on `cores[i %
    /// len]`), instead of the cores of the affinity mask. Implies pinning.
    pub fn cores(mut self, cores: Vec<usize>) -> Self {
        self.config.cores = Some(cores);
        self.config.pin_cores = true;
        self
    }

    /// Whether shards are pinned to cores. Default: on, so a shard's
    /// caches stay warm; turn it off when several servers share a host.
    pub fn pin_cores(mut self, pin: bool) -> Self {
        self.config.pin_cores = pin;
        self
    }

    /// Runs every shard on epoll even if io_uring is available. Default:
    /// off. For comparisons and for hosts where io_uring misbehaves.
    pub fn force_epoll(mut self, force: bool) -> Self {
        self.config.force_epoll = force;
        self
    }

    /// How many connections each listening socket queues before a shard
    /// accepts them (the `listen(2)` backlog). Default 1024. The kernel
    /// caps it at `net.core.somaxconn`; raise both for bursts of
    /// connections, such as every client reconnecting after a restart.
    pub fn backlog(mut self, connections: u32) -> Self {
        self.config.backlog = backlog_arg(connections);
        self
    }

    /// The largest frame payload accepted, in bytes; larger closes with
    /// 1009. Default 16 MiB.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.config.decoder.max_frame_size = bytes;
        self
    }

    /// The largest message accepted, summed over fragments (compressed size
    /// when compressed), in bytes; larger closes with 1009. Default 64 MiB.
    /// The worst-case memory is this times the connections receiving one.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.decoder.max_message_size = bytes;
        self
    }

    /// The largest size a compressed message may inflate to, in bytes;
    /// larger closes with 1009. Default 64 MiB.
    pub fn max_decompressed_size(mut self, bytes: usize) -> Self {
        self.config.decoder.max_decompressed_size = bytes;
        self
    }

    /// Limits on the HTTP upgrade request: head size and header count.
    /// Default 8 KiB and 64 headers; past them the answer is 431.
    pub fn head_limits(mut self, limits: HeadLimits) -> Self {
        self.config.head = limits;
        self
    }

    /// How long a client has, from accept, to send a complete upgrade
    /// request; then the connection is dropped. Default 10 s. Bounds what
    /// slow or silent clients (slowloris) hold.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// How long an upgraded connection may go without receiving a byte
    /// before the server closes it with 1001; `None` never. Default 120 s.
    /// Checked once a second, so it fires up to a second late.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// How long the server waits for the peer's answer to a close frame it
    /// sent before dropping the connection. Default 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// The most connections open at once over all shards, counted from
    /// accept; the next upgrade request is answered 503. Default 100,000.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// The most connections open at once from one client address, over
    /// all shards; the next upgrade request from it is answered 503.
    /// IPv6 clients are counted per /64 prefix, the block one host is
    /// usually given. Default: no limit (`None`), since many users behind
    /// one NAT or proxy share an address.
    pub fn max_connections_per_ip(mut self, max: Option<usize>) -> Self {
        self.config.max_connections_per_ip = max;
        self
    }

    /// The server pings every upgraded connection each `interval` and
    /// closes it with 1001 ("heartbeat timeout") when no pong arrives
    /// within `timeout`; `None` turns heartbeats off. Default 30 s and
    /// 30 s. Catches peers that vanished without closing (a dead NAT
    /// mapping, a suspended laptop) long before TCP would. Checked once a
    /// second, so either may fire up to a second late.
    pub fn heartbeat(mut self, heartbeat: Option<(Duration, Duration)>) -> Self {
        self.config.heartbeat =
            heartbeat.map(|(interval, timeout)| Heartbeat { interval, timeout });
        self
    }

    /// The most bytes one connection's send buffer may hold; a message
    /// that would pass it is handled by the [`Backpressure`] policy.
    /// Default 64 MiB + 64 KiB. It must exceed the largest message the
    /// application sends, plus its 14-byte header.
    pub fn max_send_buffer(mut self, bytes: usize) -> Self {
        self.config.max_send_buffer = bytes;
        self
    }

    /// The send buffer size from which a connection counts as
    /// backpressured ([`Conn::is_backpressured`](crate::Conn::is_backpressured)):
    /// once its buffer reaches it, or the socket pushes back,
    /// [`Handler::on_drain`](crate::Handler::on_drain) is called when the
    /// buffer has been written out. Default 64 KiB.
    pub fn drain_threshold(mut self, bytes: usize) -> Self {
        self.config.drain_threshold = bytes;
        self
    }

    /// What happens to a message that would take a send buffer past its
    /// limit. Default: [`Backpressure::DropNewest`] with 1008, so messages
    /// marked droppable are dropped and any other closes the connection
    /// with 1008.
    pub fn backpressure(mut self, policy: Backpressure) -> Self {
        self.config.backpressure = policy;
        self
    }

    /// Whether permessage-deflate is negotiated with clients that offer it.
    /// Default: on. A message is sent compressed only when it reaches the
    /// threshold and compression makes it smaller.
    pub fn compression(mut self, enabled: bool) -> Self {
        self.config.compression = enabled;
        self
    }

    /// The smallest message, in bytes, worth trying to compress. Default
    /// 128: below it the CPU costs more than the bytes saved.
    pub fn compression_threshold(mut self, bytes: usize) -> Self {
        self.config.compression_threshold = bytes;
        self
    }

    /// The libdeflate level, 1 (fastest) to 12 (smallest). Default 6.
    pub fn compression_level(mut self, level: u8) -> Self {
        self.config.compression_level = level;
        self
    }

    /// The subprotocols the server speaks, in order of preference: the
    /// first one the client offers is chosen. Default: none (raw mode).
    pub fn subprotocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// How much of each room's stream its owner keeps, for clients that
    /// reconnect and recover what they missed: the last `size` messages
    /// (0 keeps none), each for at most `ttl` (`None`: until pushed out).
    /// Default 128 messages for 2 minutes. Memory is at most `size` times
    /// the rooms written to in the last `ttl`, times their message size.
    pub fn room_history(mut self, size: usize, ttl: Option<Duration>) -> Self {
        self.config.rooms.history_size = size;
        self.config.rooms.history_ttl = ttl;
        self
    }

    /// The most rooms one connection may be in at once; a join past it is
    /// refused ([`RoomError::TooManyRooms`](crate::RoomError::TooManyRooms)).
    /// Default 1024.
    pub fn max_rooms_per_connection(mut self, rooms: usize) -> Self {
        self.config.rooms.max_rooms_per_connection = rooms;
        self
    }

    /// The longest room name, in bytes; longer names are refused
    /// ([`RoomError::NameTooLong`](crate::RoomError::NameTooLong)).
    /// Default 256.
    pub fn max_room_name(mut self, bytes: usize) -> Self {
        self.config.rooms.max_room_name = bytes;
        self
    }

    /// Whether the room messages one `shardcast.v1` connection receives in
    /// one loop turn go out in one `Batch` envelope rather than one
    /// WebSocket message each. Default: off. A client then handles one
    /// message event for many room messages (fewer wake-ups in a
    /// browser), at the price of one envelope built per connection
    /// instead of one frame shared by every member, and of backpressure
    /// that drops a batch whole (when all its messages are droppable) or
    /// closes. Raw connections are not affected.
    pub fn batch_deliveries(mut self, batch: bool) -> Self {
        self.config.rooms.batch_deliveries = batch;
        self
    }

    /// Submission queue entries of each shard's io_uring ring, 1 to
    /// [`MAX_RING_ENTRIES`](Self::MAX_RING_ENTRIES); the kernel rounds up
    /// to a power of two, and the completion queue gets four times as
    /// many (at most 65536). Default 4096. A shard queues one entry per
    /// connection it starts watching and per socket that pushes back, and
    /// submits them once per loop turn, so a burst of accepts or of
    /// backpressured connections past the queue costs an extra system
    /// call per full queue, not a failure. Not used on epoll.
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.config.io.ring_entries = entries;
        self
    }

    /// The receive buffers of each shard: `count` (a power of two, at most
    /// 32768) buffers of `size` bytes (at least 512), registered with
    /// io_uring as a provided-buffer ring that every connection of the
    /// shard receives into; at most 1 GiB in all. Default 8 × 32 KiB. On kernels before 6.12,
    /// where a receive takes a whole buffer, the same memory is cut into
    /// 4 KiB buffers. The bytes that arrive between two loop turns must
    /// fit, or connections wait a turn for a buffer; the epoll driver
    /// reads into one buffer of `size`.
    pub fn receive_buffers(mut self, count: u16, size: u32) -> Self {
        self.config.io.receive_buffers = count;
        self.config.io.receive_buffer_size = size;
        self
    }

    /// Gives each shard's ring a kernel thread that polls its submission
    /// queue (`IORING_SETUP_SQPOLL`), spinning for `idle` (whole
    /// milliseconds, at least one) without work before it sleeps; `None` turns it off (the default). Submissions
    /// then cost no system call while the thread spins, at the price of a
    /// core's worth of spinning per shard: it pays only when the threads
    /// have cores of their own ([`sqpoll_cores`](Self::sqpoll_cores)).
    /// Needs io_uring: with SQPOLL on, a shard that cannot set up such a
    /// ring (a seccomp policy, `kernel.io_uring_disabled`) fails to start
    /// rather than falling back to epoll, and `force_epoll` is refused.
    pub fn sqpoll(mut self, idle: Option<Duration>) -> Self {
        self.config.io.sqpoll_idle = idle;
        self
    }

    /// Pins the SQPOLL threads to cores, in shard order (shard `i`'s on
    /// `cores[i % len]`): spare cores or the SMT siblings of the shards'
    /// cores. Default: none, and each thread runs on the cores of the
    /// process's affinity mask.
    pub fn sqpoll_cores(mut self, cores: Vec<usize>) -> Self {
        self.config.io.sqpoll_cores = Some(cores);
        self
    }
}
