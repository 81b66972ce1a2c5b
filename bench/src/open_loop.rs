//! The open-loop echo generator under `latency` and `storm`: messages
//! leave on a fixed schedule whatever the replies, each stamped with its
//! sequence number and the time it was meant to leave, and an echo's
//! latency counts from that intended time. A stalled server (or a stalled
//! generator) makes every message scheduled meanwhile late, and all of
//! that lateness is recorded: coordinated omission is corrected.
//!
//! # Pacing
//!
//! The latencies of interest are 20-200 µs; monoio's timer wheel ticks
//! every millisecond, so a sender sleeping on it would add up to 1 ms of
//! false latency. A task that busy-polls with yields keeps monoio 0.2's
//! runtime out of `park`: between task rounds it then only calls the
//! driver's `submit`, which still reaps completions (io_uring: submit and
//! walk the completion queue; legacy: a zero-timeout poll), but its time
//! driver advances timers only in `park`, so no timer of that thread
//! fires any more; and every send would still be a task wake-up and a
//! ring operation away from the clock reading that timed it.
//!
//! So connections open and upgrade on monoio (`client::handshake`), and
//! then leave the runtime as plain non-blocking sockets, owned by one
//! loop per thread: it reads the monotonic clock, writes every message
//! now due with `write(2)` at once, and collects the echoes ready in a
//! level-triggered epoll set, timestamping each read as it returns.
//! Between sends it either spins ([`Idle::Spin`]: `epoll_pwait2` with a
//! zero timeout; one core busy, the lowest floor) or blocks in
//! `epoll_pwait2` with a nanosecond timeout that ends [`SPIN_MARGIN`]
//! before the next send, with the thread's timer slack set to 1 ns, and
//! spins the rest ([`Idle::Block`]: little CPU at low rates, an echo is
//! noticed a thread wake-up later). How late each message really left is
//! recorded too (the schedule lag), so a reader sees whether the
//! generator kept up: on a shared machine it is the first figure to look
//! at. `tests/latency.rs` checks the floor: against a thread-per-connection
//! echo at a low rate the median stays far below a millisecond.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use shardcast_proto::Client;
use shardcast_proto::deflate::Inflater;
use shardcast_proto::frame::{Decoder, DecoderConfig, Encoder, Message, OpCode};

use crate::client::{self, Target, XorShift};
use crate::echo::{DriverChoice, driver_name};

/// What a message carries at its start: 16 hex digits of its sequence
/// number, then 16 of its intended send time (nanoseconds since the
/// run's epoch, [`Control::epoch`]). Hex keeps it valid as a text message.
pub(crate) const STAMP_LEN: usize = 32;

/// How long before a send [`Idle::Block`] wakes up to spin: more than a
/// thread wake-up takes on a loaded machine.
const SPIN_MARGIN: Duration = Duration::from_micros(100);

/// The longest [`Idle::Block`] blocks at once, so the loop sees the end
/// of the run at a low rate.
const LONGEST_BLOCK: Duration = Duration::from_millis(10);

/// How long the loop waits for the echoes still in flight once the run
/// is over; those still missing then are counted as unanswered.
const DRAIN: Duration = Duration::from_secs(2);

/// The largest latency a histogram holds, nanoseconds (one minute);
/// longer ones are recorded as this.
const HIGHEST_NS: u64 = 60_000_000_000;

/// Phases of a run, set by the thread that runs the clock. Values below
/// [`WINDOWS`](phase::WINDOWS) are measured windows: a message whose
/// intended send time falls in window `w` is recorded in histogram `w`.
pub(crate) mod phase {
    /// The most measured windows a run has.
    pub(crate) const WINDOWS: u8 = 8;
    /// Connections are opening; nothing is sent yet (before the first
    /// transition).
    pub(crate) const CONNECTING: u8 = 0xfd;
    /// Messages are sent and checked but not recorded (warm-up, pauses).
    pub(crate) const UNRECORDED: u8 = 0xfe;
    /// The run is over: sending stops, the echoes in flight are awaited.
    pub(crate) const DONE: u8 = 0xff;
}

/// A change of phase, and when it took effect.
#[derive(Clone, Copy, Debug)]
struct Transition {
    /// Nanoseconds since [`Control::epoch`].
    at: u64,
    /// The phase from then on.
    phase: u8,
}

/// What the generator threads share with the thread that runs the clock.
///
/// Phases change by timestamped transitions, and a message belongs to
/// the phase of its intended send time, not to the one current when it
/// actually left: a generator that was descheduled across the end of a
/// window and catches up afterwards still charges the window's late
/// messages to the window, and still sends them before it stops.
#[derive(Debug)]
pub(crate) struct Control {
    /// The origin of every thread's schedule and of the transitions.
    epoch: Instant,
    /// Every transition so far, in order.
    transitions: Mutex<Vec<Transition>>,
    /// How many transitions there are, read without the lock.
    published: AtomicUsize,
    /// Connections upgraded.
    pub(crate) upgraded: AtomicUsize,
    /// Connections that failed to connect or upgrade.
    pub(crate) failed: AtomicUsize,
}

impl Control {
    /// A run whose connections are about to open.
    pub(crate) fn new() -> Control {
        Control {
            epoch: Instant::now(),
            transitions: Mutex::new(Vec::new()),
            published: AtomicUsize::new(0),
            upgraded: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    /// Connections upgraded or failed so far.
    pub(crate) fn settled(&self) -> usize {
        self.upgraded.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// Nanoseconds since the epoch.
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Moves the run to phase `to` now; returns when, in nanoseconds
    /// since the epoch (subtract two to time a window).
    pub(crate) fn set(&self, to: u8) -> u64 {
        let mut transitions = self
            .transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let at = self.now_ns();
        transitions.push(Transition { at, phase: to });
        self.published.store(transitions.len(), Ordering::Release);
        at
    }

    /// Copies the transitions into `into` if there are new ones.
    fn refresh(&self, into: &mut Vec<Transition>) {
        if self.published.load(Ordering::Acquire) != into.len() {
            let transitions = self
                .transitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            into.clone_from(&transitions);
        }
    }
}

/// The phase at `at` (nanoseconds since the epoch) by `transitions`.
fn phase_at(transitions: &[Transition], at: u64) -> u8 {
    match transitions.partition_point(|transition| transition.at <= at) {
        0 => phase::CONNECTING,
        after => transitions[after - 1].phase,
    }
}

/// What the loop does between sends.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Polls without blocking: a core busy, echoes seen at once.
    Spin,
    /// Blocks until an echo arrives or the next send is near.
    Block,
}

/// The name of a command-line choice as the command line spells it, for
/// the JSON params and the human output.
pub(crate) fn choice_name(value: &impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default()
}

/// What one generator thread sends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Messages per second from this thread, spread round-robin over its
    /// connections.
    pub(crate) rate: f64,
    /// Payload bytes per message, at least [`STAMP_LEN`].
    pub(crate) size: usize,
    /// Text messages rather than binary.
    pub(crate) text: bool,
    /// Measured windows, at most [`phase::WINDOWS`].
    pub(crate) windows: u8,
    /// What the loop does between sends.
    pub(crate) idle: Idle,
}

/// An upgraded connection, out of the runtime that opened it.
#[derive(Debug)]
pub(crate) struct Upgraded {
    /// The socket, non-blocking.
    stream: TcpStream,
    /// Bytes read after the upgrade response: already frames.
    leftover: Vec<u8>,
}

/// The connections one thread opened.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The connections upgraded.
    pub(crate) connections: Vec<Upgraded>,
    /// How many failed.
    pub(crate) failed: u64,
    /// The first failure.
    pub(crate) first_error: Option<String>,
    /// The driver they were opened on: `io_uring` or `legacy`.
    pub(crate) driver: &'static str,
}

/// Opens `count` upgraded connections to `target` at once on a monoio
/// runtime on `driver`, each within `timeout`, and counts each in
/// `control` as it settles. Every connection settles: one not upgraded
/// in time has failed.
pub(crate) fn open(
    driver: DriverChoice,
    target: &Target,
    count: usize,
    timeout: Duration,
    seed: u64,
    control: &Control,
) -> anyhow::Result<Opened> {
    let mut runtime = match driver.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            // These connections will never open: the clock must not wait.
            control.failed.fetch_add(count, Ordering::Relaxed);
            return Err(error);
        }
    };
    let driver = driver_name(&runtime);
    let results = runtime.block_on(async {
        let mut rng = XorShift::new(seed);
        let tasks: Vec<_> = (0..count)
            .map(|_| {
                let target = target.clone();
                let seed = rng.next();
                monoio::spawn(async move {
                    match monoio::time::timeout(timeout, upgrade(&target, seed)).await {
                        Ok(result) => result,
                        Err(_) => Err(anyhow::anyhow!("not upgraded within {timeout:?}")),
                    }
                })
            })
            .collect();
        let mut results = Vec::with_capacity(count);
        for task in tasks {
            let result = task.await;
            let counter = match result {
                Ok(_) => &control.upgraded,
                Err(_) => &control.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            results.push(result);
        }
        results
    });
    let mut opened = Opened {
        connections: Vec::with_capacity(count),
        failed: 0,
        first_error: None,
        driver,
    };
    for result in results {
        match result {
            Ok(connection) => opened.connections.push(connection),
            Err(error) => {
                opened.failed += 1;
                opened
                    .first_error
                    .get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    Ok(opened)
}

/// Connects and upgrades one connection, then takes its socket out of
/// the runtime.
async fn upgrade(target: &Target, seed: u64) -> anyhow::Result<Upgraded> {
    let mut rng = XorShift::new(seed);
    let mut stream = monoio::net::TcpStream::connect_addr(target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true)?;
    let leftover = client::handshake(&mut stream, target, None, &mut rng).await?;
    let fd = stream.into_raw_fd();
    // SAFETY: into_raw_fd hands over the stream's descriptor, open, with
    // no operation of the runtime pending on it, and nothing else owns or
    // closes it.
    let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    stream.set_nonblocking(true)?;
    Ok(Upgraded { stream, leftover })
}

/// One measured window of one thread, or of all of them merged.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    /// Latency of each echo of a message meant to leave in the window: arrival
    /// minus intended send time, nanoseconds.
    pub(crate) latency: Histogram<u64>,
    /// How late each message of the window left: actual minus intended
    /// send time, nanoseconds.
    pub(crate) lag: Histogram<u64>,
    /// Messages of the window sent (their intended send time in it).
    pub(crate) sent: u64,
    /// Nanoseconds of the window the loop spent sending or receiving
    /// rather than waiting, summed over threads.
    pub(crate) busy_ns: u64,
}

impl Window {
    /// An empty window.
    pub(crate) fn new() -> anyhow::Result<Window> {
        let histogram =
            || Histogram::new_with_bounds(1, HIGHEST_NS, 3).context("creating a latency histogram");
        Ok(Window {
            latency: histogram()?,
            lag: histogram()?,
            sent: 0,
            busy_ns: 0,
        })
    }

    /// Adds `other`'s figures to this window's.
    pub(crate) fn merge(&mut self, other: &Window) -> anyhow::Result<()> {
        self.latency
            .add(&other.latency)
            .context("merging latency histograms")?;
        self.lag.add(&other.lag).context("merging lag histograms")?;
        self.sent += other.sent;
        self.busy_ns += other.busy_ns;
        Ok(())
    }

    /// The latency summary as flat JSON metrics named `{prefix}p50_us`,
    /// `p90`, `p99`, `p999`, `max`, `mean` (microseconds) and
    /// `{prefix}count`, plus the schedule lag's `p99` and `max`.
    pub(crate) fn metrics(&self, prefix: &str, into: &mut Map<String, Value>) {
        let us = |ns: u64| ns as f64 / 1e3;
        let latency = &self.latency;
        let mut put = |name: &str, value: Value| {
            into.insert(format!("{prefix}{name}"), value);
        };
        put("count", json!(latency.len()));
        for (name, quantile) in [
            ("p50_us", 0.5),
            ("p90_us", 0.9),
            ("p99_us", 0.99),
            ("p999_us", 0.999),
        ] {
            put(name, json!(us(latency.value_at_quantile(quantile))));
        }
        put("max_us", json!(us(latency.max())));
        put("mean_us", json!(latency.mean() / 1e3));
        put(
            "schedule_lag_p99_us",
            json!(us(self.lag.value_at_quantile(0.99))),
        );
        put("schedule_lag_max_us", json!(us(self.lag.max())));
    }

    /// One line of a human table: count and latency percentiles, µs.
    pub(crate) fn human_row(&self, label: &str) -> String {
        let latency = &self.latency;
        let us = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1e3;
        format!(
            "{label:<10} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            latency.len(),
            us(0.5),
            us(0.9),
            us(0.99),
            us(0.999),
            latency.max() as f64 / 1e3,
            latency.mean() / 1e3
        )
    }

    /// The heading of [`Window::human_row`]'s table.
    pub(crate) fn human_heading() -> String {
        format!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "window", "count", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "mean µs"
        )
    }
}

/// What one thread's loop saw.
#[derive(Debug)]
pub(crate) struct Tally {
    /// The measured windows, by index.
    pub(crate) windows: Vec<Window>,
    /// Echoes that differ from the message sent, in any phase.
    pub(crate) mismatches: u64,
    /// Connections that failed during the run.
    pub(crate) failed: u64,
    /// Messages never echoed by the end of the drain.
    pub(crate) unanswered: u64,
    /// The first failure or mismatch, described.
    pub(crate) first_error: Option<String>,
}

impl Tally {
    /// A tally with `windows` empty windows.
    pub(crate) fn new(windows: u8) -> anyhow::Result<Tally> {
        Ok(Tally {
            windows: (0..windows)
                .map(|_| Window::new())
                .collect::<anyhow::Result<_>>()?,
            mismatches: 0,
            failed: 0,
            unanswered: 0,
            first_error: None,
        })
    }

    /// Adds `other`'s figures to this tally's.
    pub(crate) fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        for (window, theirs) in self.windows.iter_mut().zip(&other.windows) {
            window.merge(theirs)?;
        }
        self.mismatches += other.mismatches;
        self.failed += other.failed;
        self.unanswered += other.unanswered;
        self.first_error = self.first_error.take().or(other.first_error);
        Ok(())
    }

    /// Keeps `error` if it is the first.
    fn note(&mut self, error: String) {
        self.first_error.get_or_insert(error);
    }
}

/// A message sent and not yet echoed.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// Its sequence number on its connection.
    seq: u64,
    /// Intended send time, nanoseconds since [`Control::epoch`].
    intended: u64,
    /// The phase it was sent in.
    phase: u8,
}

/// One connection in the loop.
struct Connection {
    /// The socket; `None` once the connection has failed (closing it
    /// also takes it out of the epoll set).
    stream: Option<TcpStream>,
    /// Frames from the server; keeps a partial frame between reads.
    decoder: Decoder<Client>,
    /// The payload's bytes after the stamp, the same for every message.
    filler: Vec<u8>,
    /// Frame bytes the socket has not taken yet.
    unsent: Vec<u8>,
    /// Messages sent and not echoed yet, oldest first: an echo must be
    /// of the oldest.
    in_flight: VecDeque<InFlight>,
    /// The sequence number of the next message.
    next_seq: u64,
}

impl Connection {
    /// Marks the connection failed, closes it, and counts it.
    fn fail(&mut self, tally: &mut Tally, error: &anyhow::Error) {
        if self.stream.take().is_some() {
            self.in_flight.clear();
            self.unsent.clear();
            tally.failed += 1;
            tally.note(format!("{error:#}"));
        }
    }
}

/// Runs the open loop over `connections` until its schedule reaches
/// [`phase::DONE`], then waits up to [`DRAIN`] for the echoes in flight.
/// Nothing is sent before the first transition; the schedule starts when
/// the loop sees it.
pub(crate) fn run(
    connections: Vec<Upgraded>,
    plan: Plan,
    control: &Control,
    seed: u64,
) -> anyhow::Result<Tally> {
    if plan.size < STAMP_LEN {
        bail!(
            "messages of {} B cannot carry their {STAMP_LEN} B stamp",
            plan.size
        );
    }
    if !(plan.rate > 0.0 && plan.rate.is_finite()) {
        bail!("the rate must be above 0");
    }
    if plan.idle == Idle::Block {
        set_timer_slack_ns(1)?;
    }
    let mut tally = Tally::new(plan.windows.min(phase::WINDOWS))?;
    let mut epoll = Epoll::new(connections.len())?;
    let mut state = Loop {
        encoder: Encoder::<Client>::new(),
        inflater: Inflater::new(),
        rng: XorShift::new(seed),
        opcode: if plan.text {
            OpCode::Text
        } else {
            OpCode::Binary
        },
        payload: Vec::with_capacity(plan.size),
        frame: Vec::with_capacity(plan.size + 14),
        input: vec![0; 64 * 1024],
        backlog: Vec::new(),
    };
    let mut leftovers = Vec::with_capacity(connections.len());
    let mut connections: Vec<Connection> = connections
        .into_iter()
        .map(|upgraded| {
            let salt = state.rng.next() % 26;
            leftovers.push(upgraded.leftover);
            Connection {
                stream: Some(upgraded.stream),
                decoder: Decoder::new(DecoderConfig::DEFAULT),
                filler: (0..(plan.size - STAMP_LEN) as u64)
                    .map(|i| b'a' + ((i * 7 + salt) % 26) as u8)
                    .collect(),
                unsent: Vec::new(),
                in_flight: VecDeque::new(),
                next_seq: 0,
            }
        })
        .collect();
    for (token, connection) in connections.iter().enumerate() {
        if let Some(stream) = &connection.stream {
            epoll.watch(stream.as_raw_fd(), token as u64)?;
        }
    }
    // Bytes that came with the upgrade response are frames already read.
    for (index, mut leftover) in leftovers.into_iter().enumerate() {
        state.received(&mut connections, index, &mut leftover, 0, &mut tally);
    }

    let mut transitions = Vec::new();
    while transitions.is_empty() {
        thread::sleep(Duration::from_millis(1));
        control.refresh(&mut transitions);
    }
    let clock = || control.now_ns();
    let origin = clock();
    let interval_ns = 1e9 / plan.rate;
    let mut scheduled = 0u64;
    let mut next_due = origin;
    loop {
        let started = clock();
        control.refresh(&mut transitions);
        // Every message meant to leave before the end has left.
        if phase_at(&transitions, next_due) == phase::DONE || connections.is_empty() {
            break;
        }
        let mut worked = false;
        while next_due <= started {
            let phase = phase_at(&transitions, next_due);
            if phase == phase::DONE {
                break;
            }
            let index = (scheduled % connections.len() as u64) as usize;
            let now = clock();
            if state.send(&mut connections, index, next_due, phase, &mut tally) {
                if let Some(window) = tally.windows.get_mut(usize::from(phase)) {
                    window.sent += 1;
                    window.lag.saturating_record(now - next_due);
                }
            }
            scheduled += 1;
            next_due = origin + (scheduled as f64 * interval_ns) as u64;
            worked = true;
        }
        worked |= state.flush_backlog(&mut connections, &mut tally);
        let wait = match plan.idle {
            Idle::Spin => Duration::ZERO,
            Idle::Block => Duration::from_nanos(next_due.saturating_sub(clock()))
                .saturating_sub(SPIN_MARGIN)
                .min(LONGEST_BLOCK),
        };
        let before_wait = clock();
        let ready = epoll.wait(wait)?;
        let after_wait = clock();
        worked |= !ready.is_empty();
        for &token in ready {
            state.read(&mut connections, token, control, &mut tally);
        }
        if worked {
            let phase = phase_at(&transitions, started);
            if let Some(window) = tally.windows.get_mut(usize::from(phase)) {
                // Time blocked in epoll is not work; a poll that does not
                // block is.
                let blocked = if wait.is_zero() {
                    0
                } else {
                    after_wait - before_wait
                };
                window.busy_ns += (clock() - started).saturating_sub(blocked);
            }
        }
    }

    let drain_until = Instant::now() + DRAIN;
    let waiting = |connections: &[Connection]| {
        connections
            .iter()
            .any(|connection| connection.stream.is_some() && !connection.in_flight.is_empty())
    };
    while Instant::now() < drain_until && waiting(&connections) {
        state.flush_backlog(&mut connections, &mut tally);
        for &token in epoll.wait(Duration::from_millis(1))? {
            state.read(&mut connections, token, control, &mut tally);
        }
    }
    tally.unanswered = connections
        .iter()
        .filter(|connection| connection.stream.is_some())
        .map(|connection| connection.in_flight.len() as u64)
        .sum();
    Ok(tally)
}

/// What the loop holds beside its connections.
struct Loop {
    /// Frames messages and pongs, masked.
    encoder: Encoder<Client>,
    /// For compressed frames, which a server should not send unasked.
    inflater: Inflater,
    /// Masking keys.
    rng: XorShift,
    /// Text or binary: what is sent and what an echo must be.
    opcode: OpCode,
    /// Scratch for one payload.
    payload: Vec<u8>,
    /// Scratch for one frame.
    frame: Vec<u8>,
    /// Scratch for reads, shared by every connection.
    input: Vec<u8>,
    /// Connections with unsent bytes.
    backlog: Vec<usize>,
}

impl Loop {
    /// Frames the next message of connection `index`, meant to leave at
    /// `intended`, and writes it (or queues what the socket does not
    /// take); false if the connection has failed.
    fn send(
        &mut self,
        connections: &mut [Connection],
        index: usize,
        intended: u64,
        phase: u8,
        tally: &mut Tally,
    ) -> bool {
        let connection = &mut connections[index];
        let Some(stream) = &connection.stream else {
            return false;
        };
        let seq = connection.next_seq;
        connection.next_seq += 1;
        self.payload.clear();
        self.payload.extend_from_slice(&hex(seq));
        self.payload.extend_from_slice(&hex(intended));
        self.payload.extend_from_slice(&connection.filler);
        self.frame.clear();
        let key = (self.rng.next() as u32).to_le_bytes();
        self.encoder
            .frame(&mut self.frame, self.opcode, true, &self.payload, key);
        connection.in_flight.push_back(InFlight {
            seq,
            intended,
            phase,
        });
        if !connection.unsent.is_empty() {
            connection.unsent.extend_from_slice(&self.frame);
            return true;
        }
        match write_some(stream, &self.frame) {
            Ok(written) if written == self.frame.len() => {}
            Ok(written) => {
                connection.unsent.extend_from_slice(&self.frame[written..]);
                self.backlog.push(index);
            }
            Err(error) => connection.fail(tally, &error.context("sending")),
        }
        true
    }

    /// Writes what the backlogged connections can take; whether any
    /// wrote.
    fn flush_backlog(&mut self, connections: &mut [Connection], tally: &mut Tally) -> bool {
        let mut wrote = false;
        self.backlog.retain(|&index| {
            let connection = &mut connections[index];
            let Some(stream) = &connection.stream else {
                return false;
            };
            match write_some(stream, &connection.unsent) {
                Ok(written) => {
                    wrote |= written > 0;
                    connection.unsent.drain(..written);
                    !connection.unsent.is_empty()
                }
                Err(error) => {
                    connection.fail(tally, &error.context("sending"));
                    false
                }
            }
        });
        wrote
    }

    /// Reads what connection `token` has and handles its messages.
    fn read(
        &mut self,
        connections: &mut [Connection],
        token: u64,
        control: &Control,
        tally: &mut Tally,
    ) {
        let index = token as usize;
        let Some(Some(stream)) = connections.get(index).map(|c| c.stream.as_ref()) else {
            return;
        };
        let mut input = std::mem::take(&mut self.input);
        let result = (&*stream).read(&mut input);
        let arrived = control.now_ns();
        match result {
            Ok(0) => connections[index].fail(
                tally,
                &anyhow::anyhow!("the server closed the TCP connection"),
            ),
            Ok(read) => self.received(connections, index, &mut input[..read], arrived, tally),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => {
                connections[index].fail(tally, &anyhow::Error::from(error).context("receiving"))
            }
        }
        self.input = input;
    }

    /// Decodes `bytes` of connection `index`, which arrived at `arrived`,
    /// and checks and records each echo.
    fn received(
        &mut self,
        connections: &mut [Connection],
        index: usize,
        bytes: &mut [u8],
        arrived: u64,
        tally: &mut Tally,
    ) {
        let connection = &mut connections[index];
        let mut offset = 0;
        while offset < bytes.len() {
            let decoded = connection
                .decoder
                .decode(&mut bytes[offset..], &mut self.inflater);
            let (used, message) = match decoded {
                Ok(decoded) => decoded,
                Err(error) => {
                    let error = anyhow::Error::from(error).context("decoding");
                    return connection.fail(tally, &error);
                }
            };
            offset += used;
            let (echoed, right_kind) = match message {
                None => continue,
                Some(Message::Binary(bytes)) => (bytes, self.opcode == OpCode::Binary),
                Some(Message::Text(text)) => (text.as_bytes(), self.opcode == OpCode::Text),
                Some(Message::Ping(payload)) => {
                    let key = (self.rng.next() as u32).to_le_bytes();
                    let was_empty = connection.unsent.is_empty();
                    if self
                        .encoder
                        .pong(&mut connection.unsent, payload, key)
                        .is_err()
                    {
                        let error = anyhow::anyhow!("a ping too long to answer");
                        return connection.fail(tally, &error);
                    }
                    if was_empty {
                        self.backlog.push(index);
                    }
                    continue;
                }
                Some(Message::Pong(_)) => continue,
                Some(Message::Close(frame)) => {
                    let error = anyhow::anyhow!("the server closed the connection: {frame:?}");
                    return connection.fail(tally, &error);
                }
            };
            let Some(sent) = connection.in_flight.pop_front() else {
                tally.mismatches += 1;
                tally.note("an echo of a message never sent".to_owned());
                continue;
            };
            let right = right_kind
                && echoed.len() == STAMP_LEN + connection.filler.len()
                && echoed[..16] == hex(sent.seq)
                && echoed[16..STAMP_LEN] == hex(sent.intended)
                && echoed[STAMP_LEN..] == connection.filler[..];
            if !right {
                tally.mismatches += 1;
                tally.note(format!(
                    "the echo of message {} differs from what was sent",
                    sent.seq
                ));
                continue;
            }
            if let Some(window) = tally.windows.get_mut(usize::from(sent.phase)) {
                // The intended time is the one the echo carries (checked
                // equal above).
                window
                    .latency
                    .saturating_record(arrived.saturating_sub(sent.intended).max(1));
            }
        }
    }
}

/// Writes what the socket takes of `bytes` now: 0 when its buffer is full.
fn write_some(stream: &TcpStream, bytes: &[u8]) -> anyhow::Result<usize> {
    let mut stream = stream;
    match stream.write(bytes) {
        Ok(written) => Ok(written),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(error) => Err(error.into()),
    }
}

/// `value` as 16 lowercase hex digits.
fn hex(value: u64) -> [u8; 16] {
    let mut digits = [0; 16];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
    digits
}

/// Sets this thread's timer slack, so that a timed wait ends when asked
/// rather than up to 50 µs (the default slack) later.
fn set_timer_slack_ns(slack: libc::c_ulong) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and no pointer.
    let result = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, slack, 0, 0, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An epoll set of sockets watched for input, level-triggered, each
/// known by a token.
struct Epoll {
    /// The epoll instance.
    fd: OwnedFd,
    /// Filled by the kernel on each wait.
    events: Vec<libc::epoll_event>,
    /// The tokens of the last wait's ready sockets.
    ready: Vec<u64>,
}

impl Epoll {
    /// An empty set that reports up to `capacity` ready sockets a wait.
    fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes flags only.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by
        // nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let capacity = capacity.clamp(1, 1024);
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity],
            ready: Vec::with_capacity(capacity),
        })
    }

    /// Watches `socket` for input under `token`.
    fn watch(&mut self, socket: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open for the call (the set is ours,
        // the socket borrowed from its connection), and `event` is a live
        // epoll_event.
        let result = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket,
                &raw mut event,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits up to `timeout` (zero: not at all) for input, and returns
    /// the tokens of the sockets that have some.
    fn wait(&mut self, timeout: Duration) -> io::Result<&[u64]> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: the set is open; `events` is a live array of the length
        // given; `timeout` is a live timespec; no signal mask is passed.
        let ready = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                &raw const timeout,
                std::ptr::null(),
            )
        };
        self.ready.clear();
        if ready < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(&self.ready),
                _ => Err(error),
            };
        }
        self.ready
            .extend(self.events[..ready as usize].iter().map(|event| event.u64));
        Ok(&self.ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_stamps_are_fixed_width_and_ordered() {
        assert_eq!(&hex(0), b"0000000000000000");
        assert_eq!(&hex(0xabc), b"0000000000000abc");
        assert_eq!(&hex(u64::MAX), b"ffffffffffffffff");
        assert!(hex(9) < hex(10));
    }

    #[test]
    fn a_message_belongs_to_the_phase_of_its_intended_time() {
        let control = Control::new();
        let mut transitions = Vec::new();
        control.refresh(&mut transitions);
        assert_eq!(phase_at(&transitions, u64::MAX), phase::CONNECTING);
        let warmup = control.set(phase::UNRECORDED);
        let window = control.set(0);
        let done = control.set(phase::DONE);
        assert!(warmup <= window && window <= done);
        control.refresh(&mut transitions);
        assert_eq!(transitions.len(), 3);
        if warmup > 0 {
            assert_eq!(phase_at(&transitions, warmup - 1), phase::CONNECTING);
        }
        assert_eq!(phase_at(&transitions, done), phase::DONE);
        assert_eq!(phase_at(&transitions, u64::MAX), phase::DONE);
        // Transitions at the same instant: the last one counts.
        let same = [
            Transition { at: 5, phase: 0 },
            Transition { at: 5, phase: 1 },
            Transition {
                at: 9,
                phase: phase::DONE,
            },
        ];
        assert_eq!(phase_at(&same, 4), phase::CONNECTING);
        assert_eq!(phase_at(&same, 5), 1);
        assert_eq!(phase_at(&same, 8), 1);
        assert_eq!(phase_at(&same, 9), phase::DONE);
    }

    #[test]
    fn windows_merge_and_report_in_microseconds() {
        let mut one = Window::new().unwrap();
        let mut two = Window::new().unwrap();
        one.latency.saturating_record(10_000);
        two.latency.saturating_record(30_000);
        two.latency.saturating_record(u64::MAX);
        one.sent = 2;
        two.sent = 3;
        one.merge(&two).unwrap();
        assert_eq!(one.sent, 5);
        let mut metrics = Map::new();
        one.metrics("x_", &mut metrics);
        assert_eq!(metrics["x_count"], 3);
        let p50 = metrics["x_p50_us"].as_f64().unwrap();
        assert!((29.9..30.1).contains(&p50), "{p50}");
        let max = metrics["x_max_us"].as_f64().unwrap();
        assert!(max >= HIGHEST_NS as f64 / 1e3 * 0.999, "{max}");
    }
}
