//! [`Epoll`]: the fallback driver. Level-triggered readiness, then reads
//! with `recv` into the shard's one receive buffer, so an idle connection
//! holds no buffer here either.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use tracing::error;

use super::{DriverConfig, Io, Sink, Token, wait_timeout};

/// Reads from one connection per readiness event, at most: a peer that
/// never stops sending cannot starve the others (level-triggered epoll
/// reports it again at the next wait).
const READ_BUDGET: u32 = 16;

/// Connections accepted per readiness event of a listener, at most.
const ACCEPT_BUDGET: u32 = 64;

/// How long accepting pauses after an accept failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Events taken from the kernel per wait.
const EVENTS: usize = 1024;

/// What an epoll registration is for: the top byte of its data, below it
/// a [`Token`] (or a listener's index).
const CONNECTION: u64 = 1;
const LISTENER: u64 = 2;
const CONTROL: u64 = 3;

fn data(kind: u64, token: Token) -> u64 {
    (kind << 56) | token.to_bits()
}

/// The epoll driver of one shard.
pub(crate) struct Epoll {
    epoll: OwnedFd,
    /// The one receive buffer every connection of the shard reads into.
    buffer: Box<[u8]>,
    events: Vec<libc::epoll_event>,
    listeners: Vec<OwnedFd>,
    accept_paused_until: Option<Instant>,
}

impl std::fmt::Debug for Epoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoll")
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl Epoll {
    /// Creates the epoll instance and the receive buffer.
    ///
    /// # Errors
    /// `epoll_create1` failed.
    pub(crate) fn new(config: DriverConfig) -> io::Result<Epoll> {
        // SAFETY: a plain system call with no pointer arguments.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll {
            epoll,
            buffer: vec![0; config.receive_buffer_size.max(1) as usize].into_boxed_slice(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            listeners: Vec::new(),
            accept_paused_until: None,
        })
    }

    /// Starts accepting on `listener` (non-blocking).
    pub(crate) fn add_listener(&mut self, listener: OwnedFd) -> io::Result<()> {
        watch_listener(self.epoll.as_fd(), self.listeners.len(), &listener)?;
        self.listeners.push(listener);
        Ok(())
    }

    /// Closes every listener (which removes it from the epoll set).
    pub(crate) fn close_listeners(&mut self) {
        self.listeners.clear();
        self.accept_paused_until = None;
    }

    /// Watches the control socket for one readable event (again, after
    /// one was reported: its registration is one-shot).
    pub(crate) fn watch_control(&mut self, control: RawFd) -> io::Result<()> {
        let events = (libc::EPOLLIN | libc::EPOLLONESHOT) as u32;
        let data = data(CONTROL, Token::new(0, 0));
        match ctl(
            self.epoll.as_fd(),
            libc::EPOLL_CTL_ADD,
            control,
            events,
            data,
        ) {
            Err(error) if error.raw_os_error() == Some(libc::EEXIST) => ctl(
                self.epoll.as_fd(),
                libc::EPOLL_CTL_MOD,
                control,
                events,
                data,
            ),
            added => added,
        }
    }

    /// The registration side, for the shard.
    pub(crate) fn ops(&mut self) -> Ops<'_> {
        Ops {
            epoll: self.epoll.as_fd(),
        }
    }

    /// Waits up to `timeout` for readiness and hands what is ready to
    /// `sink`: reads for readable connections, accepted sockets,
    /// writability, the control socket.
    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        sink: &mut impl Sink,
    ) -> io::Result<()> {
        let now = Instant::now();
        if self.accept_paused_until.is_some_and(|until| until <= now) {
            self.accept_paused_until = None;
            for (index, listener) in self.listeners.iter().enumerate() {
                watch_listener(self.epoll.as_fd(), index, listener)?;
            }
        }
        let timeout = wait_timeout(timeout, self.accept_paused_until, now);
        let millis = timeout.map_or(-1, |timeout| {
            // Round up: a timer due in 0.3 ms must not spin with 0.
            i32::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
        });
        // SAFETY: `events` is a valid buffer of `events.len()` entries.
        let ready = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                millis,
            )
        };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(error)
            };
        }
        let Epoll {
            epoll,
            buffer,
            events,
            listeners,
            accept_paused_until,
        } = self;
        let mut io = Io::Epoll(Ops {
            epoll: epoll.as_fd(),
        });
        for event in &events[..ready as usize] {
            let (flags, bits) = (event.events, event.u64);
            let token = Token::from_bits(bits & ((1 << 56) - 1));
            match bits >> 56 {
                CONNECTION => {
                    let Some(socket) = sink.socket(token) else {
                        continue;
                    };
                    if flags & libc::EPOLLOUT as u32 != 0 {
                        // One notification per request, as on io_uring.
                        let _ = ctl(
                            epoll.as_fd(),
                            libc::EPOLL_CTL_MOD,
                            socket,
                            libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32,
                            data(CONNECTION, token),
                        );
                        sink.writable(&mut io, token);
                    }
                    if flags & !(libc::EPOLLOUT as u32) != 0 {
                        read(&mut io, buffer, sink, token);
                    }
                }
                LISTENER => {
                    let Some(listener) = listeners.get(token.key as usize) else {
                        continue;
                    };
                    if !accept(&mut io, listener.as_raw_fd(), sink) {
                        *accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                        for listener in listeners.iter() {
                            let _ = ctl(
                                epoll.as_fd(),
                                libc::EPOLL_CTL_DEL,
                                listener.as_raw_fd(),
                                0,
                                0,
                            );
                        }
                        break;
                    }
                }
                CONTROL => sink.control(&mut io),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads a readable connection into `buffer`, handing each read to the
/// sink, until the socket is drained, the budget is spent or the
/// connection ends.
fn read(io: &mut Io<'_>, buffer: &mut [u8], sink: &mut impl Sink, token: Token) {
    for _ in 0..READ_BUDGET {
        let Some(socket) = sink.socket(token) else {
            return;
        };
        // SAFETY: `buffer` is valid for writes of its whole length.
        let read = unsafe { libc::recv(socket, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        match read {
            0 => return sink.ended(io, token, None),
            1.. => {
                let read = read as usize;
                sink.received(io, token, &mut buffer[..read]);
                if read < buffer.len() {
                    // Most likely drained; level-triggered epoll says so
                    // at the next wait if not.
                    return;
                }
            }
            _ => {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => {}
                    _ => return sink.ended(io, token, Some(error)),
                }
            }
        }
    }
}

/// Accepts what the listener has, up to the budget; `false` when accepting
/// failed and should pause.
fn accept(io: &mut Io<'_>, listener: RawFd, sink: &mut impl Sink) -> bool {
    for _ in 0..ACCEPT_BUDGET {
        // SAFETY: null address pointers are allowed: the peer's address
        // is not asked for.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a new descriptor that nothing else owns.
            sink.accepted(io, unsafe { OwnedFd::from_raw_fd(fd) });
            continue;
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EAGAIN) => return true,
            Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => {}
            _ => {
                error!(%error, "accept failed; pausing accepts");
                return false;
            }
        }
    }
    true
}

/// Registers listener `index` for readability.
fn watch_listener(epoll: BorrowedFd<'_>, index: usize, listener: &OwnedFd) -> io::Result<()> {
    ctl(
        epoll,
        libc::EPOLL_CTL_ADD,
        listener.as_raw_fd(),
        libc::EPOLLIN as u32,
        data(LISTENER, Token::new(index, 0)),
    )
}

/// One `epoll_ctl` call.
fn ctl(epoll: BorrowedFd<'_>, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: data };
    // SAFETY: `event` is a valid epoll_event for the call's duration.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// epoll's registration side, as the shard uses it.
pub(crate) struct Ops<'a> {
    epoll: BorrowedFd<'a>,
}

impl Ops<'_> {
    /// Registers a connection's socket for readability.
    pub(crate) fn watch(&mut self, socket: RawFd, token: Token) {
        if let Err(error) = ctl(
            self.epoll,
            libc::EPOLL_CTL_ADD,
            socket,
            libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32,
            data(CONNECTION, token),
        ) {
            error!(%error, "could not watch a connection's socket");
        }
    }

    /// Adds writability to the socket's registration until it is
    /// reported once.
    pub(crate) fn want_writable(&mut self, socket: RawFd, token: Token) {
        if let Err(error) = ctl(
            self.epoll,
            libc::EPOLL_CTL_MOD,
            socket,
            (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLOUT) as u32,
            data(CONNECTION, token),
        ) {
            error!(%error, "could not watch a connection's socket for writability");
        }
    }

    /// Nothing to do: closing the socket removes it from the epoll set,
    /// and events already taken are found stale by the sink.
    pub(crate) fn forget(&mut self, _socket: RawFd) {}
}
