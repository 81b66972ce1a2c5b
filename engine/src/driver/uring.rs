//! [`Uring`]: the io_uring driver. Multishot accept on each listener,
//! one multishot receive per connection into the shard's provided-buffer
//! ring, one-shot polls for writability and for the control socket, and
//! one `io_uring_enter` per loop turn that submits everything asked for
//! and waits for the next completions.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, SubmissionQueue, Submitter, cqueue, opcode, squeue};
use tracing::error;

use super::buf_ring::BufRing;
use super::{DriverConfig, Io, Sink, SqPoll, Token, wait_timeout};

/// The buffer group of the receive ring.
const GROUP: u16 = 0;

/// How long accepting pauses after an accept failed (out of file
/// descriptors, say), instead of failing again at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The oldest kernel with everything this driver uses: multishot receive
/// (6.0); provided-buffer rings and multishot accept are older.
const MINIMUM_KERNEL: (u32, u32) = (6, 0);

/// The most completion queue entries the kernel gives a ring
/// (`IORING_MAX_CQ_ENTRIES`).
const MAX_CQ_ENTRIES: u32 = 65_536;

/// What a completion is for: the top byte of its user data, the rest a
/// [`Token`] (or a listener's index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Receive = 1,
    Writable = 2,
    Accept = 3,
    Control = 4,
    Cancel = 5,
}

impl Kind {
    fn user_data(self, token: Token) -> u64 {
        ((self as u64) << 56) | token.to_bits()
    }

    fn of(user_data: u64) -> Option<(Kind, Token)> {
        let kind = match user_data >> 56 {
            1 => Kind::Receive,
            2 => Kind::Writable,
            3 => Kind::Accept,
            4 => Kind::Control,
            5 => Kind::Cancel,
            _ => return None,
        };
        Some((kind, Token::from_bits(user_data & ((1 << 56) - 1))))
    }
}

/// The token standing for listener `index` in an accept's user data.
fn listener_token(index: usize) -> Token {
    Token::new(index, 0)
}

/// The io_uring driver of one shard.
pub(crate) struct Uring {
    /// Declared first so that it is dropped first: the kernel stops using
    /// the receive buffers before they are freed.
    ring: IoUring,
    buffers: BufRing,
    listeners: Vec<OwnedFd>,
    /// Accepting was paused after a failure, until then.
    accept_paused_until: Option<Instant>,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl Uring {
    /// Sets up a ring for one thread and registers the receive buffers.
    ///
    /// # Errors
    /// io_uring is missing, disabled or too old for multishot receive.
    pub(crate) fn new(config: DriverConfig) -> io::Result<Uring> {
        if kernel_release().is_some_and(|release| release < MINIMUM_KERNEL) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the io_uring driver needs Linux 6.0 or later (multishot receive)",
            ));
        }
        let ring = build_ring(config.ring_entries, config.sqpoll)?;
        let mut buffers = BufRing::new(config.receive_buffers, config.receive_buffer_size)?;
        if buffers.register(&ring.submitter(), GROUP, true).is_err() {
            // Before Linux 6.12: every receive takes a whole buffer, so
            // the same memory is cut into more, smaller buffers.
            let (count, size) = whole_buffer_shape(config);
            buffers = BufRing::new(count, size)?;
            buffers.register(&ring.submitter(), GROUP, false)?;
        }
        Ok(Uring {
            ring,
            buffers,
            listeners: Vec::new(),
            accept_paused_until: None,
        })
    }

    /// Starts accepting on `listener`.
    pub(crate) fn add_listener(&mut self, listener: OwnedFd) -> io::Result<()> {
        let index = self.listeners.len();
        let fd = listener.as_raw_fd();
        self.listeners.push(listener);
        self.ops().accept(fd, index);
        Ok(())
    }

    /// Cancels every accept and closes the listeners.
    pub(crate) fn close_listeners(&mut self) {
        let listeners = std::mem::take(&mut self.listeners);
        {
            let mut ops = self.ops();
            for index in 0..listeners.len() {
                ops.cancel(Kind::Accept, listener_token(index));
            }
            ops.flush();
        }
        // Each listener closes for good once its cancelled accept lets go.
        drop(listeners);
        self.accept_paused_until = None;
    }

    /// Polls the control socket once for input.
    pub(crate) fn watch_control(&mut self, control: RawFd) -> io::Result<()> {
        let entry = opcode::PollAdd::new(Fd(control), libc::POLLIN as u32)
            .build()
            .user_data(Kind::Control.user_data(Token::new(0, 0)));
        self.ops().push(&entry);
        Ok(())
    }

    /// The submission side, for the shard.
    pub(crate) fn ops(&mut self) -> Ops<'_> {
        let sqpoll = self.ring.params().is_setup_sqpoll();
        let (submitter, sq, _) = self.ring.split();
        Ops {
            submitter,
            sq,
            sqpoll,
        }
    }

    /// Submits, waits up to `timeout` for a completion, and hands every
    /// completion to `sink`.
    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        sink: &mut impl Sink,
    ) -> io::Result<()> {
        let now = Instant::now();
        if self.accept_paused_until.is_some_and(|until| until <= now) {
            self.accept_paused_until = None;
            let fds: Vec<RawFd> = self.listeners.iter().map(AsRawFd::as_raw_fd).collect();
            let mut ops = self.ops();
            for (index, fd) in fds.into_iter().enumerate() {
                ops.accept(fd, index);
            }
        }
        let timeout = wait_timeout(timeout, self.accept_paused_until, now);
        let Uring {
            ring,
            buffers,
            listeners,
            accept_paused_until,
        } = self;
        let sqpoll = ring.params().is_setup_sqpoll();
        let (submitter, mut sq, mut cq) = ring.split();
        sq.sync();
        let entered = match timeout {
            Some(timeout) => {
                let timespec = Timespec::from(timeout);
                let args = SubmitArgs::new().timespec(&timespec);
                submitter.submit_with_args(1, &args)
            }
            None => submitter.submit_and_wait(1),
        };
        match entered {
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(error) => return Err(error),
        }
        cq.sync();
        let mut io = Io::Uring(Ops {
            submitter,
            sq,
            sqpoll,
        });
        for cqe in &mut cq {
            let Some((kind, token)) = Kind::of(cqe.user_data()) else {
                continue;
            };
            let result = cqe.result();
            let flags = cqe.flags();
            match kind {
                Kind::Receive => received(&mut io, buffers, sink, token, result, flags),
                Kind::Writable => {
                    if sink.socket(token).is_some() {
                        sink.writable(&mut io, token);
                    }
                }
                Kind::Accept => {
                    let index = token.key as usize;
                    if result >= 0 {
                        // SAFETY: a successful accept's result is a new
                        // file descriptor that nothing else owns.
                        let socket = unsafe { OwnedFd::from_raw_fd(result) };
                        sink.accepted(&mut io, socket);
                    } else if result != -libc::ECANCELED {
                        let error = io::Error::from_raw_os_error(-result);
                        error!(%error, "accept failed; pausing accepts");
                        *accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    }
                    let Io::Uring(ops) = &mut io else {
                        unreachable!("the io_uring driver hands out io_uring operations")
                    };
                    if !cqueue::more(flags) && accept_paused_until.is_none() {
                        if let Some(listener) = listeners.get(index) {
                            ops.accept(listener.as_raw_fd(), index);
                        }
                    }
                }
                Kind::Control => sink.control(&mut io),
                Kind::Cancel => {}
            }
        }
        Ok(())
    }
}

/// Hands one receive completion to the sink and puts its buffer back;
/// re-arms the receive when the kernel ended it for lack of buffers or
/// without an error.
fn received(
    io: &mut Io<'_>,
    buffers: &mut BufRing,
    sink: &mut impl Sink,
    token: Token,
    result: i32,
    flags: u32,
) {
    let live = sink.socket(token);
    if let Some(id) = cqueue::buffer_select(flags) {
        let kept = cqueue::buffer_more(flags);
        if result > 0 {
            let data = buffers.filled(id, result as usize, kept);
            if live.is_some() {
                sink.received(io, token, data);
            }
        }
        buffers.release(id, kept);
    }
    let more = cqueue::more(flags);
    match result {
        0 => {
            if live.is_some() {
                sink.ended(io, token, None);
            }
        }
        1.. if !more => {
            if let Some(socket) = sink.socket(token) {
                io.watch(socket, token);
            }
        }
        1.. => {}
        error if error == -libc::ENOBUFS => {
            if let Some(socket) = live {
                io.watch(socket, token);
            }
        }
        error if error == -libc::ECANCELED => {}
        error => {
            if live.is_some() {
                sink.ended(io, token, Some(io::Error::from_raw_os_error(-error)));
            }
        }
    }
}

/// The receive ring's shape where buffers cannot be consumed
/// incrementally: the same memory in buffers of 4 KiB (a receive of a few
/// bytes takes a whole buffer, so more of them are needed).
fn whole_buffer_shape(config: DriverConfig) -> (u16, u32) {
    const SIZE: u32 = 4096;
    let bytes = u64::from(config.receive_buffers) * u64::from(config.receive_buffer_size);
    let count = (bytes / u64::from(SIZE)).clamp(1, 32_768) as u16;
    (count, SIZE.min(config.receive_buffer_size))
}

/// Builds a ring for one issuing thread: `SINGLE_ISSUER` with
/// `DEFER_TASKRUN` (completions are processed when the shard waits, not
/// by interrupting it) on 6.1+, `COOP_TASKRUN` on older kernels, a plain
/// ring on the oldest. With SQPOLL, whose kernel thread runs the task
/// work itself (the kernel refuses the two task-run flags beside it):
/// `SINGLE_ISSUER` where the kernel has it, else a plain SQPOLL ring.
///
/// The completion queue has four entries per submission entry, up to
/// the kernel's limit, so multishot receives that complete many times per
/// submission do not overflow it.
fn build_ring(entries: u32, sqpoll: Option<SqPoll>) -> io::Result<IoUring> {
    let cq_entries = entries.saturating_mul(4).min(MAX_CQ_ENTRIES);
    let attempts: &[fn(&mut io_uring::Builder)] = if sqpoll.is_some() {
        &[
            |builder| {
                builder.setup_single_issuer();
            },
            |_| {},
        ]
    } else {
        &[
            |builder| {
                builder.setup_single_issuer().setup_defer_taskrun();
            },
            |builder| {
                builder.setup_coop_taskrun();
            },
            |_| {},
        ]
    };
    let mut last = None;
    for attempt in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries).setup_submit_all();
        if let Some(sqpoll) = sqpoll {
            builder.setup_sqpoll(sqpoll.idle_ms);
            if let Some(cpu) = sqpoll.cpu {
                builder.setup_sqpoll_cpu(cpu);
            }
        }
        attempt(&mut builder);
        match builder.build(entries) {
            Ok(ring) => return Ok(ring),
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
}

/// The running kernel's major and minor version, from
/// /proc/sys/kernel/osrelease.
fn kernel_release() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// io_uring's submission side, as the shard uses it.
pub(crate) struct Ops<'a> {
    submitter: Submitter<'a>,
    sq: SubmissionQueue<'a>,
    /// The ring's kernel thread consumes the submission queue, so a full
    /// queue is waited on rather than submitted.
    sqpoll: bool,
}

impl Ops<'_> {
    /// Arms a multishot receive on `socket`.
    pub(crate) fn watch(&mut self, socket: RawFd, token: Token) {
        let entry = opcode::RecvMulti::new(Fd(socket), GROUP)
            .build()
            .user_data(Kind::Receive.user_data(token));
        self.push(&entry);
    }

    /// Polls `socket` once for writability.
    pub(crate) fn want_writable(&mut self, socket: RawFd, token: Token) {
        let entry = opcode::PollAdd::new(Fd(socket), libc::POLLOUT as u32)
            .build()
            .user_data(Kind::Writable.user_data(token));
        self.push(&entry);
    }

    /// Cancels the connection's receive and writability poll. The socket
    /// closes for good once they let go of it.
    pub(crate) fn forget(&mut self, token: Token) {
        self.cancel(Kind::Receive, token);
        self.cancel(Kind::Writable, token);
    }

    /// Arms a multishot accept on listener `index`.
    fn accept(&mut self, listener: RawFd, index: usize) {
        let entry = opcode::AcceptMulti::new(Fd(listener))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(Kind::Accept.user_data(listener_token(index)));
        self.push(&entry);
    }

    fn cancel(&mut self, kind: Kind, token: Token) {
        let entry = opcode::AsyncCancel::new(kind.user_data(token))
            .build()
            .user_data(Kind::Cancel.user_data(token));
        self.push(&entry);
    }

    /// Submits what is queued now.
    fn flush(&mut self) {
        self.sq.sync();
        if let Err(error) = self.submitter.submit() {
            error!(%error, "io_uring submit failed");
        }
        self.sq.sync();
    }

    /// Queues `entry`, submitting first if the queue is full (or, with
    /// SQPOLL, waiting for the kernel thread to take some entries).
    fn push(&mut self, entry: &squeue::Entry) {
        for _ in 0..3 {
            // SAFETY: no entry this driver makes points to memory of the
            // caller's: receives use the registered buffer ring, which
            // outlives the ring's use of it, and polls, accepts and
            // cancels carry no buffer.
            if unsafe { self.sq.push(entry) }.is_ok() {
                return;
            }
            self.flush();
            if self.sqpoll {
                if let Err(error) = self.submitter.squeue_wait() {
                    error!(%error, "waiting for io_uring submission queue space failed");
                }
                self.sq.sync();
            }
        }
        error!("io_uring submission queue stays full; an operation was lost");
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // The kernel must stop filling the buffers before they are freed.
        let _ = self.ring.submitter().unregister_buf_ring(GROUP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        let token = Token::new(123_456, (1 << 30) + 77);
        for kind in [
            Kind::Receive,
            Kind::Writable,
            Kind::Accept,
            Kind::Control,
            Kind::Cancel,
        ] {
            assert_eq!(Kind::of(kind.user_data(token)), Some((kind, token)));
        }
        assert_eq!(token.generation, 77, "the generation keeps its low bits");
        assert_eq!(Kind::of(0), None);
    }

    #[test]
    fn the_kernel_release_parses() {
        assert!(kernel_release().is_some_and(|release| release >= (3, 0)));
    }
}
