//! The shard's I/O driver: the one place that talks to the kernel about
//! readiness and completions, behind one interface for both backends.
//!
//! - [`Uring`]: io_uring, set up for one issuing thread
//!   (`SINGLE_ISSUER`, `DEFER_TASKRUN` where the kernel has them).
//!   Listeners accept with multishot accept; each connection has one
//!   multishot receive that takes its buffers from a ring of provided
//!   buffers the shard shares ([`BufRing`](buf_ring::BufRing)), so data
//!   arrives with its completion and no receive system call is made. A
//!   connection holds no buffer while it waits: the kernel picks one only
//!   when bytes arrive, and the shard gives it back as soon as the bytes
//!   are decoded.
//! - [`Epoll`]: the fallback when io_uring cannot be set up (old kernel,
//!   seccomp, `kernel.io_uring_disabled`) or is refused by configuration:
//!   level-triggered readiness, then reads into one buffer per shard.
//!
//! Either way the shard sees the same [`Sink`] calls. Sends are plain
//! non-blocking `sendmsg` calls made by the shard once per connection per
//! loop turn ([`socket::send`]); when the socket is full the shard asks
//! for one writability notification ([`Io::want_writable`]).

mod buf_ring;
mod epoll;
pub(crate) mod socket;
mod uring;

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub(crate) use epoll::Epoll;
pub(crate) use uring::Uring;

use crate::stats::IoDriver;

/// Identifies one connection to the driver: its key in the shard's slab
/// and a generation, so that a completion that arrives after its
/// connection ended, and its key was reused, is recognised as stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    /// The connection's key in the shard's slab.
    pub(crate) key: u32,
    /// The low [`Token::GENERATION_BITS`] bits of the connection's
    /// sequence number on its shard.
    pub(crate) generation: u32,
}

impl Token {
    /// Bits of the generation kept: io_uring's user data also carries the
    /// kind of operation.
    pub(crate) const GENERATION_BITS: u32 = 24;

    /// The token of the connection at `key` with sequence number
    /// `sequence`.
    pub(crate) fn new(key: usize, sequence: u64) -> Token {
        Token {
            key: u32::try_from(key).expect("a shard holds fewer than 2^32 connections"),
            generation: (sequence & ((1 << Self::GENERATION_BITS) - 1)) as u32,
        }
    }

    /// The token as 56 bits: generation above, key below.
    fn to_bits(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.key)
    }

    /// The token packed by [`Token::to_bits`] in the low 56 bits.
    fn from_bits(bits: u64) -> Token {
        Token {
            key: bits as u32,
            generation: ((bits >> 32) as u32) & ((1 << Self::GENERATION_BITS) - 1),
        }
    }
}

/// What the shard does with the driver's events. The driver calls these
/// from [`Driver::wait`], each with an [`Io`] through which the shard asks
/// for more.
pub(crate) trait Sink {
    /// The socket of a live connection, or `None` if `token` is stale.
    fn socket(&self, token: Token) -> Option<RawFd>;

    /// A listener accepted a connection: a non-blocking, close-on-exec
    /// socket.
    fn accepted(&mut self, io: &mut Io<'_>, socket: OwnedFd);

    /// Bytes arrived for a connection. `data` is the driver's buffer,
    /// lent for this call only: whatever must outlive it is copied.
    fn received(&mut self, io: &mut Io<'_>, token: Token, data: &mut [u8]);

    /// The peer closed its side (`None`) or the socket failed: nothing
    /// more will be received for `token`.
    fn ended(&mut self, io: &mut Io<'_>, token: Token, error: Option<io::Error>);

    /// The socket of a connection that asked for it can take more bytes.
    fn writable(&mut self, io: &mut Io<'_>, token: Token);

    /// The control socket is readable (a shutdown request, or its end of
    /// stream).
    fn control(&mut self, io: &mut Io<'_>);
}

/// A shard's driver, whichever backend it runs.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one driver per shard, on the shard thread's stack"
)]
pub(crate) enum Driver {
    /// io_uring.
    Uring(Uring),
    /// epoll.
    Epoll(Epoll),
}

/// Sizes of the driver's buffers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DriverConfig {
    /// io_uring submission queue entries.
    pub(crate) ring_entries: u32,
    /// Provided buffers in the io_uring receive ring (a power of two).
    pub(crate) receive_buffers: u16,
    /// Bytes of each receive buffer; the epoll driver's one buffer is
    /// this size too.
    pub(crate) receive_buffer_size: u32,
    /// A kernel thread polls the io_uring submission queue; `None` off.
    pub(crate) sqpoll: Option<SqPoll>,
}

/// How the kernel thread of an `IORING_SETUP_SQPOLL` ring polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SqPoll {
    /// Milliseconds the thread spins without work before it sleeps (the
    /// next submission then wakes it with a system call).
    pub(crate) idle_ms: u32,
    /// The core the thread is pinned to; `None` lets it run wherever the
    /// thread that set up the ring may.
    pub(crate) cpu: Option<u32>,
}

impl Driver {
    /// An io_uring driver, or, if `force_epoll` is set or io_uring cannot
    /// be set up with what the shard needs, an epoll driver; the error
    /// that caused a fallback comes back beside it, for the log.
    ///
    /// # Errors
    /// Neither backend could be set up, or io_uring could not be set up
    /// with the SQPOLL the configuration asks for.
    pub(crate) fn new(
        config: DriverConfig,
        force_epoll: bool,
    ) -> io::Result<(Driver, Option<io::Error>)> {
        let mut fallback = None;
        if !force_epoll {
            match Uring::new(config) {
                Ok(uring) => return Ok((Driver::Uring(uring), None)),
                // SQPOLL was asked for: running on epoll instead would
                // hide that the setting has no effect.
                Err(error) if config.sqpoll.is_some() => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!("io_uring with SQPOLL could not be set up: {error}"),
                    ));
                }
                Err(error) => fallback = Some(error),
            }
        }
        Ok((Driver::Epoll(Epoll::new(config)?), fallback))
    }

    /// Which backend this is, for the stats.
    pub(crate) fn kind(&self) -> IoDriver {
        match self {
            Driver::Uring(_) => IoDriver::IoUring,
            Driver::Epoll(_) => IoDriver::Epoll,
        }
    }

    /// Starts accepting on `listener`, which the driver keeps until
    /// [`Driver::close_listeners`].
    pub(crate) fn add_listener(&mut self, listener: OwnedFd) -> io::Result<()> {
        match self {
            Driver::Uring(uring) => uring.add_listener(listener),
            Driver::Epoll(epoll) => epoll.add_listener(listener),
        }
    }

    /// Stops accepting and closes every listener: the kernel refuses new
    /// connections from then on (once every shard closed its own).
    pub(crate) fn close_listeners(&mut self) {
        match self {
            Driver::Uring(uring) => uring.close_listeners(),
            Driver::Epoll(epoll) => epoll.close_listeners(),
        }
    }

    /// Watches the control socket for one readable event, reported by
    /// [`Sink::control`].
    pub(crate) fn watch_control(&mut self, control: RawFd) -> io::Result<()> {
        match self {
            Driver::Uring(uring) => uring.watch_control(control),
            Driver::Epoll(epoll) => epoll.watch_control(control),
        }
    }

    /// Submits what was asked for, waits up to `timeout` (forever if
    /// `None`) for at least one event, and hands every event ready to
    /// `sink`.
    ///
    /// # Errors
    /// The wait itself failed (not a socket's failure, which goes to
    /// [`Sink::ended`]).
    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        sink: &mut impl Sink,
    ) -> io::Result<()> {
        match self {
            Driver::Uring(uring) => uring.wait(timeout, sink),
            Driver::Epoll(epoll) => epoll.wait(timeout, sink),
        }
    }

    /// The handle [`Sink`] calls get, for use outside them (a connection
    /// set up or closed by a timer).
    pub(crate) fn io(&mut self) -> Io<'_> {
        match self {
            Driver::Uring(uring) => Io::Uring(uring.ops()),
            Driver::Epoll(epoll) => Io::Epoll(epoll.ops()),
        }
    }
}

/// How long a driver waits: the shard's `timeout` (`None`: until an
/// event), cut short to resume accepting at `accept_paused_until`.
fn wait_timeout(
    timeout: Option<Duration>,
    accept_paused_until: Option<Instant>,
    now: Instant,
) -> Option<Duration> {
    let resume = accept_paused_until.map(|until| until.saturating_duration_since(now));
    match (timeout, resume) {
        (Some(timeout), Some(resume)) => Some(timeout.min(resume)),
        (timeout, resume) => timeout.or(resume),
    }
}

/// What the shard may ask of the driver while it handles events.
pub(crate) enum Io<'a> {
    /// io_uring's submission side.
    Uring(uring::Ops<'a>),
    /// epoll's registration side.
    Epoll(epoll::Ops<'a>),
}

impl Io<'_> {
    /// Starts receiving on a connection's socket: [`Sink::received`]
    /// until [`Sink::ended`] or [`Io::forget`].
    pub(crate) fn watch(&mut self, socket: RawFd, token: Token) {
        match self {
            Io::Uring(ops) => ops.watch(socket, token),
            Io::Epoll(ops) => ops.watch(socket, token),
        }
    }

    /// Asks for one [`Sink::writable`] call once the socket can take more
    /// bytes.
    pub(crate) fn want_writable(&mut self, socket: RawFd, token: Token) {
        match self {
            Io::Uring(ops) => ops.want_writable(socket, token),
            Io::Epoll(ops) => ops.want_writable(socket, token),
        }
    }

    /// Stops everything the driver does for a connection, before its
    /// socket is closed. Events already on their way for `token` may still
    /// come; the sink finds them stale.
    pub(crate) fn forget(&mut self, socket: RawFd, token: Token) {
        match self {
            Io::Uring(ops) => ops.forget(token),
            Io::Epoll(ops) => ops.forget(socket),
        }
    }
}
