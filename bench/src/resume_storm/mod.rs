//! `shardcast-bench resume-storm`: every shardcast.v1 client of a server
//! loses its connection at once, reconnects and resumes its session; how
//! long until all are back, whether any message was lost, and what it
//! does to the connections that were not cut.
//!
//! N storm clients connect from source addresses 127.0.0.2, 127.0.0.3, ...
//! (as `storm` does), each joins one of R rooms (client i joins room i mod
//! R) and keeps the session of the server's `Welcome` and the last
//! position it received. P publishers, not cut, publish timestamped
//! payloads to the rooms at a fixed total rate, from the warm-up until the
//! end; M probes, not cut either, each in a room of its own that the
//! publishers also publish to at a fixed rate, measure publish-to-delivery
//! latency (from each publish's intended time, so a late publish counts):
//! before the storm (the baseline) and during it (from the cut until the
//! last client is back).
//!
//! The cut: every storm client's connection is shut at once, abortively
//! (SO_LINGER 0: an RST, as when a network path fails). Each client then
//! waits a uniform random delay within `--jitter-ms` (full jitter),
//! connects again, upgrades, and sends `Resume` with its session, its
//! token and its last position, as `spec/sessions.md` describes, and is
//! back once the resumed `Welcome` arrives. A `RecoveryFailed`, a room
//! missing from the `Welcome`, or a room recovered with an error
//! (`GapTooLarge`, `EpochChanged`) count as recovery failures, and the
//! messages missed then as lost; the client joins its room again and
//! goes on.
//!
//! Once every client is back, the publishers go on for `--settle`
//! seconds, then stop and learn each room's last position from their
//! publishes' acknowledgements. Every storm client and probe must then
//! have received every offset of its room exactly once and in order, from
//! its join's position to the room's last: a gap, a duplicate, a message
//! out of order, an epoch change or an end never reached fails the run.
//!
//! Three generator threads: the storm clients (one monoio runtime), the
//! publishers (paced by blocking until each publish is due, as `fanout`'s
//! open loop does) and the probes, each optionally pinned.

mod link;
mod tracker;

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde_json::{Map, json};
use shardcast::CoreList;
use shardcast_proto::deflate::Inflater;
use shardcast_proto::envelope::{self, Body, Envelope, EnvelopeWriter, Position, ResumePoint};

use self::link::{Ended, Flow, Link, Outbox};
use self::tracker::{Counts, Reconnect, Recovery, Step, Tracker};
use crate::client::{Target, XorShift};
use crate::connections::{self, SPARE_FDS};
use crate::cores;
use crate::echo::{DriverChoice, driver_name};
use crate::hops::parse_index;
use crate::limits::{self, PortRange};
use crate::machine::Machine;
use crate::proc_stat::{self, CpuSpent, CpuTimes};
use crate::report_file::{self, section_header};
use crate::servers::{RunningServer, ServerSpec, Speaks, free_port, shell_command_line};
use crate::storm::listen_overflows;

/// The section of BENCHMARKS.md this command writes by default.
const SECTION: &str = "engine-resume-storm";

/// The acknowledgement id of every join: a member has one join in flight
/// at most.
const JOIN_ACK: u64 = 0;

/// The acknowledgement id of a storm client's question to the server
/// about its shard.
const SHARD_ACK: u64 = 1;

/// The event of `shardcast serve` that answers the connection's shard.
const SHARD_EVENT: &str = "shardcast.shard";

/// A publish's acknowledgement id holds its room's index above these
/// bits, and its sequence number below.
const ROOM_SHIFT: u32 = 40;

/// The shortest payload: the phase it was published in (one digit), then
/// its intended publish time in 16 hex digits.
const MIN_SIZE: usize = 17;

/// Latencies above this many nanoseconds (one minute) are recorded as it.
const MAX_LATENCY_NANOS: u64 = 60_000_000_000;

/// How close to a publish's time the publishers' thread stops sleeping
/// and spins.
const SPIN_NANOS: u64 = 100_000;

/// How long a client waits after a failed reconnection before the next
/// attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How often the controlling tasks look at what the others did.
const POLL: Duration = Duration::from_millis(2);

/// The messages of a room a `{config}` server keeps at least.
const MIN_HISTORY: usize = 128;

/// Phases of a run, which the publishers stamp on each payload.
mod phase {
    /// Connecting and joining.
    pub(super) const SETUP: u8 = 0;
    /// Publishing, not measured.
    pub(super) const WARMUP: u8 = 1;
    /// The probes' baseline window.
    pub(super) const BASELINE: u8 = 2;
    /// From the cut until every client is back.
    pub(super) const STORM: u8 = 3;
    /// Every client back; publishing goes on.
    pub(super) const SETTLE: u8 = 4;
    /// Publishing stops; the streams drain.
    pub(super) const STOP: u8 = 5;
}

/// Command line of `shardcast-bench resume-storm`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// A running `shardcast serve`: ws://HOST:PORT/PATH on this machine
    /// (the clients connect from 127.0.0.x). Its room history must hold
    /// what a client misses during the storm. Give this or --server.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    pub(crate) url: Option<String>,
    /// The server's command line, `{port}` where its port goes and
    /// optionally `{config}` where a config file goes (such as `shardcast
    /// serve --listen 127.0.0.1:{port} --shards 2 --config {config}`): the
    /// run writes there a `[rooms]` table whose history holds what the
    /// storm makes clients miss. Started for the run on a free port,
    /// pinned with `taskset` to --server-cores, and killed at the end.
    /// Split on whitespace, without a shell.
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// The cores a --server runs on (`taskset -c`).
    #[arg(long, default_value = "0,1")]
    pub(crate) server_cores: CoreList,
    /// Clients cut and resumed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) clients: u32,
    /// Rooms the clients are spread over (client i joins room i mod R).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rooms: u32,
    /// Publisher connections, not cut; each room has one.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) publishers: u32,
    /// Messages per second published to the clients' rooms, in total, each
    /// room in turn (with 100 members a room, 200 make 20,000 deliveries a
    /// second).
    #[arg(long, default_value_t = 200.0)]
    pub(crate) rate: f64,
    /// Probe connections, not cut, each in a room of its own, whose
    /// latency is measured.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) probes: u32,
    /// Messages per second published to the probes' rooms, in total.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) probe_rate: f64,
    /// Payload bytes per message, at least 17.
    #[arg(long, default_value_t = 64)]
    pub(crate) size: usize,
    /// Each client reconnects after a uniform random delay of up to this
    /// many milliseconds after the cut; 0: all at once.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) jitter_ms: f64,
    /// The room history (messages) a `{config}` server keeps; by default
    /// twice what a room receives over --storm-timeout, at least 128.
    #[arg(long)]
    pub(crate) history: Option<usize>,
    /// Source addresses to spread the clients over, from 127.0.0.2 up; by
    /// default as many as the clients' connections need with this
    /// machine's ephemeral port range.
    #[arg(long)]
    pub(crate) sources: Option<usize>,
    /// Clients opening at once before the storm.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrency: u32,
    /// Seconds of publishing before the baseline, not measured.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup: f64,
    /// Seconds of the probes' baseline window.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) baseline: f64,
    /// Seconds of publishing after every client is back, before the
    /// publishers stop.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) settle: f64,
    /// Seconds every client, publisher and probe may take to connect and
    /// join before the storm.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) connect_timeout: f64,
    /// Seconds one reconnection may take to connect and upgrade before it
    /// counts as failed and is tried again.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) handshake_timeout: f64,
    /// Seconds from the cut until every client must be back.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) storm_timeout: f64,
    /// Seconds, once the publishers stop, for every acknowledgement and
    /// every message to arrive.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) drain_timeout: f64,
    /// Cores to pin the generator's threads to: the storm clients on the
    /// first, the publishers on the second, the probes on the third (a
    /// shorter list wraps around); unpinned when absent.
    #[arg(long)]
    pub(crate) cores: Option<CoreList>,
    /// The generator's I/O driver.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub(crate) driver: DriverChoice,
    /// Print the result as one JSON object on one line.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write the result as a section of this report (BENCHMARKS.md).
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// The name of the report's section.
    #[arg(long, default_value = SECTION)]
    pub(crate) section: String,
}

impl Args {
    /// Fails on values no run can use.
    fn check(&self) -> anyhow::Result<()> {
        let positive = [
            self.rate,
            self.probe_rate,
            self.baseline,
            self.connect_timeout,
            self.handshake_timeout,
            self.storm_timeout,
            self.drain_timeout,
        ];
        if positive
            .iter()
            .any(|&value| !(value > 0.0 && value.is_finite()))
            || ![self.warmup, self.settle, self.jitter_ms]
                .iter()
                .all(|&value| value >= 0.0 && value.is_finite())
        {
            bail!(
                "the rates, the baseline and the timeouts must be above 0; warm-up, settle and jitter at least 0"
            );
        }
        if self.size < MIN_SIZE {
            bail!(
                "--size must be at least {MIN_SIZE}: each payload carries its phase and its publish time"
            );
        }
        if self.jitter_ms / 1e3 >= self.storm_timeout {
            bail!("--jitter-ms must end well within --storm-timeout");
        }
        if let Some(cores) = &self.cores {
            cores::check_available(cores.as_slice())?;
        }
        Ok(())
    }

    /// The room history a `{config}` server is given.
    fn history(&self) -> usize {
        self.history.unwrap_or_else(|| {
            let per_room = self.rate / f64::from(self.rooms);
            ((2.0 * per_room * self.storm_timeout).ceil() as usize).max(MIN_HISTORY)
        })
    }

    /// The core of generator thread `index`, if pinned.
    fn core(&self, index: usize) -> Option<usize> {
        let cores = self.cores.as_ref()?.as_slice();
        cores.get(index % cores.len()).copied()
    }
}

/// What the generator's threads share.
struct Shared {
    /// The run's clock: publish times are nanoseconds since.
    start: Instant,
    /// The current phase (see [`phase`]).
    phase: AtomicU8,
    /// Publishers and probes connected and joined.
    ready: AtomicUsize,
    /// A thread failed: the others stop waiting.
    failed: AtomicBool,
    /// Each room's last position once the publishers stopped, the
    /// clients' rooms first, then the probes'.
    finals: Mutex<Option<Vec<Position>>>,
}

impl Shared {
    /// Nanoseconds since the run's start.
    fn nanos(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The current phase.
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    /// Moves to `phase`.
    fn set(&self, phase: u8) {
        self.phase.store(phase, Ordering::Release);
    }

    /// Whether a thread failed.
    fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The rooms' last positions, once known.
    fn finals(&self) -> Option<Vec<Position>> {
        self.finals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Waits until `done` holds, polling; false if `timeout` passed first or
/// a thread failed.
async fn wait_for(shared: &Shared, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if shared.failed() || Instant::now() >= deadline {
            return false;
        }
        monoio::time::sleep(POLL).await;
    }
}

/// Writes `phase` and `due` (nanoseconds since the run's start) over the
/// start of `payload`, which is at least [`MIN_SIZE`] bytes.
fn write_stamp(payload: &mut [u8], phase: u8, due: u64) {
    payload[0] = b'0' + phase;
    for (index, digit) in payload[1..MIN_SIZE].iter_mut().enumerate() {
        let nibble = (due >> (60 - 4 * index)) & 0xf;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
}

/// The phase and publish time a payload carries.
fn read_stamp(payload: &[u8]) -> Option<(u8, u64)> {
    let phase = payload.first()?.checked_sub(b'0')?;
    let digits = std::str::from_utf8(payload.get(1..MIN_SIZE)?).ok()?;
    Some((phase, u64::from_str_radix(digits, 16).ok()?))
}

/// What `item` means to `tracker`: what the member must do next, and the
/// payload when it was a message.
fn track<'a>(
    tracker: &mut Tracker,
    item: Envelope<'a>,
) -> anyhow::Result<(Step, Option<&'a [u8]>)> {
    match item.body_type() {
        Body::Message => {
            let message = item
                .body_as_message()
                .context("a Message without its body")?;
            tracker.message(message.room(), *message.position())?;
            Ok((Step::Nothing, Some(envelope::bytes(message.payload()))))
        }
        Body::Ack => {
            let ack = item.body_as_ack().context("an Ack without its body")?;
            let error = ack
                .error()
                .map(|code| (code, ack.message().unwrap_or_default()));
            Ok((tracker.ack(ack.position().copied(), error)?, None))
        }
        Body::Welcome => {
            let welcome = item
                .body_as_welcome()
                .context("a Welcome without its body")?;
            let rooms = welcome.rooms().into_iter().flatten().map(|room| Recovery {
                room: room.room(),
                error: room.error(),
                position: *room.position(),
            });
            let step = tracker.welcome(
                welcome.session_id(),
                envelope::bytes(welcome.resume_token()),
                welcome.resumed(),
                rooms,
            )?;
            Ok((step, None))
        }
        Body::Error => {
            let error = item.body_as_error().context("an Error without its body")?;
            let step = tracker.error(error.code(), error.message().unwrap_or_default())?;
            Ok((step, None))
        }
        Body::Join
        | Body::Leave
        | Body::Publish
        | Body::Event
        | Body::Resume
        | Body::Presence
        | Body::Batch => bail!(
            "unexpected shardcast.v1 {:?} from the server",
            item.body_type()
        ),
        // A body newer than the schema: skipped, as clients must.
        _ => Ok((Step::Nothing, None)),
    }
}

/// Makes an abortive close of `fd`: SO_LINGER 0, so closing it sends an
/// RST, then shuts its reading side, which ends the read its task awaits.
fn abort(fd: RawFd) -> std::io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is an open socket (its task closes it only after this
    // thread's controller returns to the runtime), and the value points to
    // a live linger of the length given.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    // SAFETY: as above; shutdown takes no pointers.
    if set != 0 || unsafe { libc::shutdown(fd, libc::SHUT_RD) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One storm client.
struct Member {
    /// Its room's index.
    room: usize,
    /// The address it connects from.
    source: Ipv4Addr,
    /// How long after the cut it reconnects.
    delay: Duration,
    /// Its socket while connected.
    fd: Cell<Option<RawFd>>,
    /// Whether its connection was cut.
    cut: Cell<bool>,
    /// Its session and its room's stream.
    tracker: RefCell<Tracker>,
    /// Since the cut, when its reconnection began.
    reconnect_at: Cell<Option<Duration>>,
    /// Since the cut, when its new connection was upgraded and its
    /// `Resume` written.
    upgraded_at: Cell<Option<Duration>>,
    /// Since the cut, when it was back.
    back_at: Cell<Option<Duration>>,
    /// Reconnections that failed and were tried again.
    retries: Cell<u64>,
    /// The shard serving its connection, before the cut and once back,
    /// as the server answered (`shardcast.shard`).
    shards: Cell<[Option<usize>; 2]>,
    /// Why it failed, if it did.
    failure: RefCell<Option<String>>,
}

/// What one storm client ended with.
#[derive(Clone, Debug)]
struct MemberResult {
    /// Its counts, its room's end included.
    counts: Counts,
    /// Offsets from its join to its room's end.
    expected: u64,
    /// Since the cut, when its reconnection began.
    reconnect_at: Option<Duration>,
    /// Since the cut, when its new connection was upgraded and its
    /// `Resume` written.
    upgraded_at: Option<Duration>,
    /// Since the cut, when it was back.
    back_at: Option<Duration>,
    /// Reconnections that failed and were tried again.
    retries: u64,
    /// The shard serving its connection, before the cut and once back.
    shards: [Option<usize>; 2],
    /// Why it failed, if it did.
    failure: Option<String>,
}

/// The storm clients' side of a run, on its own thread's runtime.
struct Storm {
    /// The command line.
    args: Args,
    /// The server.
    target: Target,
    /// What the threads share.
    shared: Arc<Shared>,
    /// Room names: the clients' rooms.
    rooms: Vec<String>,
    /// The clients.
    members: Vec<Member>,
    /// Shared by every connection of the thread.
    inflater: Rc<RefCell<Inflater>>,
    /// Builds the envelopes of every connection of the thread.
    envelopes: RefCell<EnvelopeWriter>,
    /// When the cut began.
    cut_at: Cell<Option<Instant>>,
    /// Clients back since the cut.
    back: Cell<usize>,
    /// Clients failed.
    failed: Cell<usize>,
    /// Messages the clients received during the storm phase.
    during_storm: Cell<u64>,
    /// The server's process, for its CPU time.
    server_pid: Option<u32>,
}

/// What the storm clients' thread measured.
struct Timeline {
    /// The runtime's driver.
    driver: &'static str,
    /// Seconds to connect and join every client.
    connect_seconds: f64,
    /// Seconds the cut took to issue.
    cut_seconds: f64,
    /// Seconds from the cut until the last client was back (or the storm
    /// timed out).
    all_back_seconds: f64,
    /// Seconds of the baseline window.
    baseline_seconds: f64,
    /// Messages the clients received during the storm phase.
    during_storm: u64,
    /// The server's CPU time during the storm, when known.
    server_cpu: Option<CpuSpent>,
    /// This process's CPU time during the storm (all three threads).
    generator_cpu: Option<CpuSpent>,
    /// Listen queue overflows during the storm, machine-wide, when known.
    listen_overflows: Option<u64>,
    /// Each client's result.
    members: Vec<MemberResult>,
}

impl Storm {
    /// What `item` does to `member`: the answer to its question about its
    /// shard is kept; anything else goes to its tracker. A client back is
    /// timed and asks its new shard; one to join again sends its `Join`.
    fn handle(
        &self,
        member: &Member,
        item: Envelope<'_>,
        outbox: &mut Outbox<'_>,
    ) -> anyhow::Result<Flow> {
        if let Some(ack) = item.body_as_ack().filter(|ack| ack.id() == SHARD_ACK) {
            // A server without the event answers with an error: the
            // placement stays unknown.
            let shard = ack
                .error()
                .is_none()
                .then(|| parse_index(envelope::bytes(ack.payload())).ok())
                .flatten();
            let mut shards = member.shards.get();
            shards[usize::from(member.back_at.get().is_some())] = shard;
            member.shards.set(shards);
            return Ok(Flow::Continue);
        }
        let mut tracker = member.tracker.borrow_mut();
        let (step, message) = track(&mut tracker, item)?;
        if message.is_some() && self.shared.phase() == phase::STORM {
            self.during_storm.set(self.during_storm.get() + 1);
        }
        match step {
            Step::Nothing => {}
            Step::Joined => return Ok(Flow::Stop),
            Step::Back => {
                let since = self.cut_at.get().map(|at| at.elapsed());
                member.back_at.set(since);
                self.back.set(self.back.get() + 1);
                outbox.send(
                    self.envelopes
                        .borrow_mut()
                        .event(SHARD_EVENT, b"", Some(SHARD_ACK)),
                );
            }
            Step::Rejoin => {
                outbox.send(self.envelopes.borrow_mut().join(
                    tracker.room(),
                    Some(JOIN_ACK),
                    false,
                ));
            }
        }
        Ok(Flow::Continue)
    }

    /// Connects client `index`, joins its room and waits for the `Ack`.
    async fn open(&self, index: usize, seed: u64) -> anyhow::Result<Link> {
        let member = &self.members[index];
        let stream = connections::connect_from(&self.target, member.source).await?;
        let inflater = Rc::clone(&self.inflater);
        let mut link = Link::upgrade(stream, &self.target, inflater, XorShift::new(seed)).await?;
        link.send(self.envelopes.borrow_mut().join(
            &self.rooms[member.room],
            Some(JOIN_ACK),
            false,
        ));
        link.flush().await?;
        match link
            .pump(|item, outbox| self.handle(member, item, outbox))
            .await?
        {
            Ended::Stopped => {
                member.fd.set(Some(link.fd()));
                link.send(
                    self.envelopes
                        .borrow_mut()
                        .event(SHARD_EVENT, b"", Some(SHARD_ACK)),
                );
                link.flush().await?;
                Ok(link)
            }
            Ended::Closed => bail!("the server closed the connection before the join's Ack"),
        }
    }

    /// Client `index` from its join on: reads until its connection is
    /// cut, reconnects after its delay, resumes, and reads until the run
    /// is over; a failure is recorded.
    async fn live(self: Rc<Self>, index: usize, link: Link, seed: u64) {
        if let Err(error) = self.through_the_storm(index, link, seed).await {
            let member = &self.members[index];
            // Its connection is closed: the cut must not touch the
            // descriptor, which another socket may have taken.
            member.fd.set(None);
            *member.failure.borrow_mut() = Some(format!("{error:#}"));
            self.failed.set(self.failed.get() + 1);
        }
    }

    /// The body of [`Storm::live`].
    async fn through_the_storm(
        &self,
        index: usize,
        mut link: Link,
        seed: u64,
    ) -> anyhow::Result<()> {
        let member = &self.members[index];
        let ended = link
            .pump(|item, outbox| self.handle(member, item, outbox))
            .await?;
        if ended != Ended::Closed || !member.cut.get() {
            bail!("the server closed the connection before the cut");
        }
        member.fd.set(None);
        // The cut set SO_LINGER to 0: this close sends the RST.
        drop(link);
        member.tracker.borrow_mut().cut()?;
        let cut_at = self.cut_at.get().context("a cut without its time")?;
        let due = cut_at + member.delay;
        monoio::time::sleep(due.saturating_duration_since(Instant::now())).await;
        member.reconnect_at.set(Some(cut_at.elapsed()));
        let mut link = self.reconnect(member, cut_at, seed).await?;
        member.upgraded_at.set(Some(cut_at.elapsed()));
        loop {
            let ended = link
                .pump(|item, outbox| self.handle(member, item, outbox))
                .await?;
            if ended == Ended::Closed {
                bail!("the server closed the connection after the reconnection");
            }
        }
    }

    /// Connects `member` again, retrying until the storm times out, and
    /// sends its `Resume` (or its `Join`, without a session).
    async fn reconnect(&self, member: &Member, cut_at: Instant, seed: u64) -> anyhow::Result<Link> {
        let mut rng = XorShift::new(seed);
        let attempt_timeout = Duration::from_secs_f64(self.args.handshake_timeout);
        let deadline = cut_at + Duration::from_secs_f64(self.args.storm_timeout);
        let mut link = loop {
            let inflater = Rc::clone(&self.inflater);
            let link_rng = XorShift::new(rng.next());
            let attempt = monoio::time::timeout(attempt_timeout, async {
                let stream = connections::connect_from(&self.target, member.source).await?;
                Link::upgrade(stream, &self.target, inflater, link_rng).await
            })
            .await;
            let error = match attempt {
                Ok(Ok(link)) => break link,
                Ok(Err(error)) => error,
                Err(_) => anyhow!("not upgraded within {attempt_timeout:?}"),
            };
            member.retries.set(member.retries.get() + 1);
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(error.context("reconnecting, until the storm timed out"));
            }
            monoio::time::sleep(RETRY_PAUSE).await;
        };
        let first = member.tracker.borrow_mut().reconnected()?;
        {
            let mut envelopes = self.envelopes.borrow_mut();
            let room = &self.rooms[member.room];
            link.send(match &first {
                Reconnect::Resume {
                    session_id,
                    token,
                    position,
                } => envelopes.resume(
                    session_id,
                    token,
                    &[ResumePoint {
                        room,
                        offset: position.offset(),
                        epoch: position.epoch(),
                    }],
                ),
                Reconnect::Join => envelopes.join(room, Some(JOIN_ACK), false),
            });
        }
        link.flush().await?;
        member.fd.set(Some(link.fd()));
        Ok(link)
    }

    /// Connects and joins every client, `--concurrency` at a time, each
    /// going on in a task of its own; returns how many failed.
    async fn open_all(self: &Rc<Self>, seed: u64) -> usize {
        let timeout = Duration::from_secs_f64(self.args.connect_timeout);
        let next = Rc::new(Cell::new(0));
        let mut rng = XorShift::new(seed);
        let workers: Vec<_> = (0..(self.args.concurrency as usize).min(self.members.len()))
            .map(|_| {
                let (storm, next) = (Rc::clone(self), Rc::clone(&next));
                let mut rng = XorShift::new(rng.next());
                monoio::spawn(async move {
                    let mut failed = 0;
                    loop {
                        let index = next.get();
                        if index >= storm.members.len() {
                            return failed;
                        }
                        next.set(index + 1);
                        let opened =
                            monoio::time::timeout(timeout, storm.open(index, rng.next())).await;
                        let error = match opened {
                            Ok(Ok(link)) => {
                                let seed = rng.next();
                                monoio::spawn(Rc::clone(&storm).live(index, link, seed));
                                continue;
                            }
                            Ok(Err(error)) => error,
                            Err(_) => anyhow!("not connected and joined within {timeout:?}"),
                        };
                        *storm.members[index].failure.borrow_mut() = Some(format!("{error:#}"));
                        failed += 1;
                    }
                })
            })
            .collect();
        let mut failed = 0;
        for worker in workers {
            failed += worker.await;
        }
        self.failed.set(self.failed.get() + failed);
        failed
    }

    /// Cuts every client's connection; returns when the cut began.
    fn cut_all(&self) -> anyhow::Result<Instant> {
        let at = Instant::now();
        self.cut_at.set(Some(at));
        for member in &self.members {
            if let Some(fd) = member.fd.get() {
                member.cut.set(true);
                abort(fd).context("cutting a connection")?;
            }
        }
        Ok(at)
    }

    /// Runs the clients' side: connects them, waits for the publishers
    /// and probes, moves through warm-up and baseline, cuts, waits until
    /// every client is back, lets the publishers settle and stop, and
    /// waits until every client has its room's whole stream.
    async fn run(self: Rc<Self>, driver: &'static str, seed: u64) -> anyhow::Result<Timeline> {
        let args = &self.args;
        let shared = &self.shared;
        let start = Instant::now();
        let failed = self.open_all(seed).await;
        let connect_seconds = start.elapsed().as_secs_f64();
        let mut timeline = Timeline {
            driver,
            connect_seconds,
            cut_seconds: 0.0,
            all_back_seconds: 0.0,
            baseline_seconds: 0.0,
            during_storm: 0,
            server_cpu: None,
            generator_cpu: None,
            listen_overflows: None,
            members: Vec::new(),
        };
        let others = (args.publishers.min(args.rooms + args.probes) + args.probes) as usize;
        let timeout = Duration::from_secs_f64(args.connect_timeout);
        let ready = wait_for(shared, timeout, || {
            shared.ready.load(Ordering::Acquire) >= others
        })
        .await;
        if failed > 0 || !ready {
            timeline.members = self.results(None);
            return Ok(timeline);
        }
        shared.set(phase::WARMUP);
        monoio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let baseline_start = Instant::now();
        shared.set(phase::BASELINE);
        monoio::time::sleep(Duration::from_secs_f64(args.baseline)).await;
        timeline.baseline_seconds = baseline_start.elapsed().as_secs_f64();

        let ticks = proc_stat::ticks_per_second();
        let server_before = self
            .server_pid
            .map(|pid| CpuTimes::read(Some(pid)))
            .transpose()?;
        let generator_before = CpuTimes::read(None)?;
        let overflows_before = listen_overflows();
        shared.set(phase::STORM);
        let cut_at = self.cut_all()?;
        timeline.cut_seconds = cut_at.elapsed().as_secs_f64();
        let clients = self.members.len();
        let storm_timeout = Duration::from_secs_f64(args.storm_timeout);
        wait_for(shared, storm_timeout, || {
            self.back.get() + self.failed.get() >= clients
        })
        .await;
        shared.set(phase::SETTLE);
        timeline.all_back_seconds = if self.back.get() == clients {
            self.members
                .iter()
                .filter_map(|member| member.back_at.get())
                .max()
                .unwrap_or_default()
                .as_secs_f64()
        } else {
            cut_at.elapsed().as_secs_f64()
        };
        timeline.during_storm = self.during_storm.get();
        timeline.server_cpu = match (self.server_pid, server_before) {
            (Some(pid), Some(before)) => Some(CpuTimes::read(Some(pid))?.since(&before, ticks)),
            _ => None,
        };
        timeline.generator_cpu = Some(CpuTimes::read(None)?.since(&generator_before, ticks));
        timeline.listen_overflows = listen_overflows()
            .zip(overflows_before)
            .map(|(after, before)| after.saturating_sub(before));
        monoio::time::sleep(Duration::from_secs_f64(args.settle)).await;
        shared.set(phase::STOP);

        let drain = Duration::from_secs_f64(args.drain_timeout);
        let mut finals = None;
        wait_for(shared, drain, || {
            finals = shared.finals();
            finals.is_some()
        })
        .await;
        if let Some(finals) = &finals {
            wait_for(shared, drain, || {
                self.members.iter().all(|member| {
                    member.failure.borrow().is_some()
                        || member.tracker.borrow().caught_up(finals[member.room])
                })
            })
            .await;
        }
        timeline.members = self.results(finals.as_deref());
        Ok(timeline)
    }

    /// Every client's result, its room's end counted when known.
    fn results(&self, finals: Option<&[Position]>) -> Vec<MemberResult> {
        self.members
            .iter()
            .map(|member| {
                let tracker = member.tracker.borrow();
                let last = finals.map(|finals| finals[member.room]);
                let counts = match last {
                    Some(last) => tracker.finish(last),
                    None => tracker.counts(),
                };
                let expected = match (last, tracker.joined_at()) {
                    (Some(last), Some(joined)) => last.offset().saturating_sub(joined.offset()),
                    _ => 0,
                };
                MemberResult {
                    counts,
                    expected,
                    reconnect_at: member.reconnect_at.get(),
                    upgraded_at: member.upgraded_at.get(),
                    back_at: member.back_at.get(),
                    retries: member.retries.get(),
                    shards: member.shards.get(),
                    failure: member.failure.borrow().clone(),
                }
            })
            .collect()
    }
}

/// What the publishers did.
#[derive(Clone, Copy, Debug, Default)]
struct Published {
    /// Messages published to the clients' rooms.
    storm: u64,
    /// Messages published to the probes' rooms.
    probes: u64,
    /// The latest any publish left after its intended time, nanoseconds.
    max_lag_nanos: u64,
}

/// The publishers' acknowledgements, shared by their reading tasks.
#[derive(Default)]
struct Acks {
    /// Each room's last position acknowledged (its join's at first).
    last: RefCell<Vec<Option<Position>>>,
    /// Publishes acknowledged.
    acked: Cell<u64>,
    /// Why a publisher's connection failed, if one did.
    failure: RefCell<Option<String>>,
}

impl Acks {
    /// Takes an envelope a publisher received: an `Ack` of a join (id: the
    /// room) or of a publish (id: the room and a sequence number), with
    /// the room's position. Messages of other publishers' rooms do not
    /// come (each room has one publisher, publishing with `exclude_self`),
    /// nor anything else but the `Welcome`.
    fn take(&self, item: Envelope<'_>) -> anyhow::Result<()> {
        match item.body_type() {
            Body::Ack => {
                let ack = item.body_as_ack().context("an Ack without its body")?;
                if let Some(code) = ack.error() {
                    bail!(
                        "the server refused a publisher's request: {code:?}: {}",
                        ack.message().unwrap_or_default()
                    );
                }
                let position = *ack.position().context("an Ack without a position")?;
                let room = usize::try_from(ack.id() >> ROOM_SHIFT)?;
                let mut last = self.last.borrow_mut();
                let slot = last
                    .get_mut(room)
                    .with_context(|| format!("an Ack of unknown id {}", ack.id()))?;
                if slot.is_none_or(|seen| seen.offset() < position.offset()) {
                    *slot = Some(position);
                }
                self.acked.set(self.acked.get() + 1);
                Ok(())
            }
            Body::Welcome => Ok(()),
            Body::Error => {
                let error = item.body_as_error().context("an Error without its body")?;
                bail!(
                    "the server sent a publisher an error: {:?}: {}",
                    error.code(),
                    error.message().unwrap_or_default()
                )
            }
            other => bail!("unexpected {other:?} for a publisher"),
        }
    }
}

/// Blocks the thread until `due` (nanoseconds since the run's start):
/// sleeps to within [`SPIN_NANOS`] of it, then spins.
fn wait_until(shared: &Shared, due: u64) {
    loop {
        let left = due.saturating_sub(shared.nanos());
        if left == 0 {
            return;
        }
        if left > SPIN_NANOS {
            thread::sleep(Duration::from_nanos(left - SPIN_NANOS));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The publishers: connect, join each room (room j on publisher j mod P),
/// publish from the warm-up until the stop, the clients' rooms at
/// `--rate` and the probes' at `--probe-rate`, each publish with an
/// acknowledgement; then wait for every acknowledgement and hand the
/// rooms' last positions to the other threads.
async fn publish(
    args: &Args,
    target: &Target,
    shared: &Shared,
    rooms: &[String],
    seed: u64,
) -> anyhow::Result<Published> {
    let storm_rooms = args.rooms as usize;
    let count = (args.publishers as usize).min(rooms.len());
    let inflater = Rc::new(RefCell::new(Inflater::new()));
    let mut envelopes = EnvelopeWriter::new();
    let mut rng = XorShift::new(seed);
    let acks = Rc::new(Acks {
        last: RefCell::new(vec![None; rooms.len()]),
        ..Acks::default()
    });
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    let write_timeout = Duration::from_secs_f64(args.drain_timeout);
    let mut writers = Vec::with_capacity(count);
    for publisher in 0..count {
        let own: Vec<usize> = (publisher..rooms.len()).step_by(count).collect();
        let joining = async {
            let mut link =
                Link::open(target, Rc::clone(&inflater), XorShift::new(rng.next())).await?;
            for &room in &own {
                let id = (room as u64) << ROOM_SHIFT;
                link.send(envelopes.join(&rooms[room], Some(id), false));
            }
            link.flush().await?;
            let acked = Cell::new(0);
            let ended = link
                .pump(|item, _| {
                    let before = acks.acked.get();
                    acks.take(item)?;
                    acked.set(acked.get() + acks.acked.get() - before);
                    Ok(if acked.get() == own.len() as u64 {
                        Flow::Stop
                    } else {
                        Flow::Continue
                    })
                })
                .await?;
            if ended == Ended::Closed {
                bail!("the server closed a publisher's connection before its joins' Acks");
            }
            Ok(link)
        };
        let link = monoio::time::timeout(connect_timeout, joining)
            .await
            .map_err(|_| anyhow!("a publisher not joined within {connect_timeout:?}"))??;
        let (reader, writer) = link.split();
        let acks = Rc::clone(&acks);
        monoio::spawn(async move {
            let error = reader
                .run(|item, _| acks.take(item).map(|()| Flow::Continue))
                .await;
            *acks.failure.borrow_mut() = Some(format!("{error:#}"));
        });
        writers.push(writer);
        shared.ready.fetch_add(1, Ordering::AcqRel);
    }
    // Joins were acknowledged too: only publishes count from here.
    acks.acked.set(0);
    while shared.phase() == phase::SETUP {
        if shared.failed() {
            return Ok(Published::default());
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    let probe_rooms = rooms.len() - storm_rooms;
    let (storm_period, probe_period) = (1e9 / args.rate, 1e9 / args.probe_rate);
    let begin = shared.nanos();
    let mut payload = vec![b'.'; args.size];
    let mut published = Published::default();
    loop {
        let storm_due = begin + (published.storm as f64 * storm_period) as u64;
        let probe_due = begin + (published.probes as f64 * probe_period) as u64;
        let (due, room) = if storm_due <= probe_due {
            (storm_due, (published.storm % storm_rooms as u64) as usize)
        } else {
            let nth = (published.probes % probe_rooms as u64) as usize;
            (probe_due, storm_rooms + nth)
        };
        wait_until(shared, due);
        let phase = shared.phase();
        if phase >= phase::STOP || shared.failed() {
            break;
        }
        if let Some(failure) = acks.failure.borrow().as_ref() {
            bail!("a publisher's connection failed: {failure}");
        }
        published.max_lag_nanos = published
            .max_lag_nanos
            .max(shared.nanos().saturating_sub(due));
        if room < storm_rooms {
            published.storm += 1;
        } else {
            published.probes += 1;
        }
        write_stamp(&mut payload, phase, due);
        let sequence = published.storm + published.probes;
        let id = ((room as u64) << ROOM_SHIFT) | sequence;
        let writer = &mut writers[room % count];
        writer.send(envelopes.publish(&rooms[room], &payload, true, Some(id)));
        monoio::time::timeout(write_timeout, writer.flush())
            .await
            .map_err(|_| anyhow!("a publish not written within {write_timeout:?}"))?
            .context("publishing")?;
    }
    let sent = published.storm + published.probes;
    let drained = wait_for(shared, Duration::from_secs_f64(args.drain_timeout), || {
        acks.acked.get() >= sent || acks.failure.borrow().is_some()
    })
    .await;
    if let Some(failure) = acks.failure.borrow().as_ref() {
        bail!("a publisher's connection failed: {failure}");
    }
    if !drained {
        bail!(
            "{} of {sent} publishes not acknowledged within --drain-timeout",
            sent.saturating_sub(acks.acked.get())
        );
    }
    let finals = acks
        .last
        .borrow()
        .iter()
        .map(|last| last.unwrap_or(Position::new(0, 0)))
        .collect();
    *shared
        .finals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(finals);
    Ok(published)
}

/// The probes' latencies and counts.
struct Probed {
    /// Publish-to-delivery latency, nanoseconds: baseline, storm.
    windows: [Histogram<u64>; 2],
    /// What the probes' trackers counted, their rooms' ends included.
    counts: Counts,
    /// Payloads without a readable stamp.
    unstamped: u64,
    /// Why a probe failed, if one did.
    failure: Option<String>,
}

/// What the probes' reading tasks share.
struct Probing {
    /// Each probe's room stream.
    trackers: Vec<RefCell<Tracker>>,
    /// Latencies: baseline, storm.
    windows: RefCell<[Histogram<u64>; 2]>,
    /// Payloads without a readable stamp.
    unstamped: Cell<u64>,
    /// Why a probe failed, if one did.
    failure: RefCell<Option<String>>,
}

impl Probing {
    /// Takes what probe `index` received; a message's latency goes to the
    /// window it was published in.
    fn take(&self, index: usize, item: Envelope<'_>, shared: &Shared) -> anyhow::Result<Flow> {
        let (step, payload) = track(&mut self.trackers[index].borrow_mut(), item)?;
        if let Some(payload) = payload {
            let now = shared.nanos();
            match read_stamp(payload) {
                Some((phase, due)) => {
                    let window = match phase {
                        phase::BASELINE => Some(0),
                        phase::STORM => Some(1),
                        _ => None,
                    };
                    if let Some(window) = window {
                        let latency = now.saturating_sub(due).min(MAX_LATENCY_NANOS);
                        self.windows.borrow_mut()[window].saturating_record(latency);
                    }
                }
                None => self.unstamped.set(self.unstamped.get() + 1),
            }
        }
        Ok(if step == Step::Joined {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }
}

/// The probes: connect, join their rooms, and record latency until every
/// probe has its room's whole stream.
async fn probe(
    args: &Args,
    target: &Target,
    shared: &Arc<Shared>,
    rooms: &[String],
    seed: u64,
) -> anyhow::Result<Probed> {
    let inflater = Rc::new(RefCell::new(Inflater::new()));
    let mut envelopes = EnvelopeWriter::new();
    let mut rng = XorShift::new(seed);
    let histogram = || Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3);
    let probing = Rc::new(Probing {
        trackers: rooms
            .iter()
            .map(|room| RefCell::new(Tracker::new(room)))
            .collect(),
        windows: RefCell::new([histogram()?, histogram()?]),
        unstamped: Cell::new(0),
        failure: RefCell::new(None),
    });
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    for (index, room) in rooms.iter().enumerate() {
        let joining = async {
            let mut link =
                Link::open(target, Rc::clone(&inflater), XorShift::new(rng.next())).await?;
            link.send(envelopes.join(room, Some(JOIN_ACK), false));
            link.flush().await?;
            let ended = link
                .pump(|item, _| probing.take(index, item, shared))
                .await?;
            if ended == Ended::Closed {
                bail!("the server closed a probe's connection before its join's Ack");
            }
            Ok(link)
        };
        let mut link = monoio::time::timeout(connect_timeout, joining)
            .await
            .map_err(|_| anyhow!("a probe not joined within {connect_timeout:?}"))??;
        let (probing, reading) = (Rc::clone(&probing), Arc::clone(shared));
        monoio::spawn(async move {
            loop {
                let ended = link
                    .pump(|item, _| probing.take(index, item, &reading))
                    .await;
                let error = match ended {
                    Ok(Ended::Stopped) => continue,
                    Ok(Ended::Closed) => anyhow!("the server closed a probe's connection"),
                    Err(error) => error,
                };
                *probing.failure.borrow_mut() = Some(format!("{error:#}"));
                return;
            }
        });
        shared.ready.fetch_add(1, Ordering::AcqRel);
    }
    let drain = Duration::from_secs_f64(args.drain_timeout);
    let mut finals = None;
    while finals.is_none() {
        if shared.failed() || probing.failure.borrow().is_some() {
            break;
        }
        finals = shared.finals();
        monoio::time::sleep(POLL).await;
    }
    let storm_rooms = args.rooms as usize;
    if let Some(finals) = &finals {
        wait_for(shared, drain, || {
            probing.failure.borrow().is_some()
                || probing
                    .trackers
                    .iter()
                    .enumerate()
                    .all(|(index, tracker)| tracker.borrow().caught_up(finals[storm_rooms + index]))
        })
        .await;
    }
    let mut counts = Counts::default();
    for (index, tracker) in probing.trackers.iter().enumerate() {
        let tracker = tracker.borrow();
        counts.add(&match &finals {
            Some(finals) => tracker.finish(finals[storm_rooms + index]),
            None => tracker.counts(),
        });
    }
    let windows = probing.windows.borrow().clone();
    let failure = probing.failure.borrow().clone();
    Ok(Probed {
        windows,
        counts,
        unstamped: probing.unstamped.get(),
        failure,
    })
}

/// The percentiles the results give: (name, quantile).
const QUANTILES: [(&str, f64); 2] = [("p50", 0.5), ("p99", 0.99)];

/// What one run measured, with the arguments it ran with.
pub(crate) struct Outcome {
    /// The arguments of the run.
    args: Args,
    /// The server's URL.
    url: String,
    /// The room history a `{config}` server was given.
    history: Option<usize>,
    /// Source addresses the clients used.
    sources: usize,
    /// What the storm clients' thread measured.
    timeline: Timeline,
    /// What the publishers did.
    published: Published,
    /// What the probes measured.
    probed: Probed,
    /// Why the publishers' or the probes' thread failed, if one did.
    thread_error: Option<String>,
}

/// A quantity over the clients, milliseconds: p50, p99, max.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Spread {
    /// The median.
    p50: f64,
    /// The 99th percentile.
    p99: f64,
    /// The largest.
    max: f64,
}

impl Spread {
    /// The spread of `values`; zeros when empty.
    fn of(mut values: Vec<Duration>) -> Spread {
        values.sort_unstable();
        let at = |quantile: f64| {
            let index = ((values.len() as f64 * quantile).ceil() as usize).saturating_sub(1);
            values
                .get(index)
                .map_or(0.0, |value| value.as_secs_f64() * 1e3)
        };
        Spread {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl Outcome {
    /// The clients' counts summed.
    fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for member in &self.timeline.members {
            counts.add(&member.counts);
        }
        counts
    }

    /// Clients back after the cut.
    fn back(&self) -> usize {
        self.timeline
            .members
            .iter()
            .filter(|member| member.back_at.is_some())
            .count()
    }

    /// Clients that failed.
    fn failed(&self) -> usize {
        self.timeline
            .members
            .iter()
            .filter(|member| member.failure.is_some())
            .count()
    }

    /// The first client failure, if any.
    fn first_failure(&self) -> Option<&str> {
        self.timeline
            .members
            .iter()
            .find_map(|member| member.failure.as_deref())
    }

    /// Clients whose shard is known before the cut and once back, and
    /// those of them back on another shard.
    fn placement(&self) -> (usize, usize) {
        let known: Vec<(usize, usize)> = self
            .timeline
            .members
            .iter()
            .filter_map(|member| Some((member.shards[0]?, member.shards[1]?)))
            .collect();
        let moved = known
            .iter()
            .filter(|(before, after)| before != after)
            .count();
        (known.len(), moved)
    }

    /// The spread of `span` over the clients that have one.
    fn spread(&self, span: impl Fn(&MemberResult) -> Option<Duration>) -> Spread {
        Spread::of(self.timeline.members.iter().filter_map(span).collect())
    }

    /// The spreads of the storm's parts, each client's from the cut to its
    /// being back, and its reconnection's (connect, upgrade and resume),
    /// and this split in two: connect and upgrade, then the `Resume`
    /// until the resumed `Welcome`. By name, in the order the results
    /// give them.
    fn spreads(&self) -> [(&'static str, Spread); 4] {
        let between = |from: fn(&MemberResult) -> Option<Duration>,
                       to: fn(&MemberResult) -> Option<Duration>| {
            self.spread(move |member| Some(to(member)?.saturating_sub(from(member)?)))
        };
        [
            ("resume", self.spread(|member| member.back_at)),
            (
                "reconnection",
                between(|member| member.reconnect_at, |member| member.back_at),
            ),
            (
                "upgrade",
                between(|member| member.reconnect_at, |member| member.upgraded_at),
            ),
            (
                "resume_answer",
                between(|member| member.upgraded_at, |member| member.back_at),
            ),
        ]
    }

    /// The probes' window `index` (0: baseline, 1: storm).
    fn window(&self, index: usize) -> &Histogram<u64> {
        &self.probed.windows[index]
    }

    /// Fails unless every client connected, came back and received its
    /// room's whole stream exactly once, with no recovery failure, and the
    /// probes did the same and measured both windows.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let counts = self.counts();
        let probes = self.probed.counts;
        let clients = self.args.clients as usize;
        let mut problems = Vec::new();
        if let Some(error) = &self.thread_error {
            problems.push(format!("a generator thread failed: {error}"));
        }
        if self.failed() > 0 {
            problems.push(format!(
                "{} clients failed (first: {})",
                self.failed(),
                self.first_failure().unwrap_or_default()
            ));
        }
        if self.back() < clients && self.failed() == 0 {
            problems.push(format!(
                "{} of {clients} clients back within --storm-timeout",
                self.back()
            ));
        }
        if counts.lost > 0 || counts.duplicated > 0 || counts.epoch_changes > 0 {
            problems.push(format!(
                "clients lost {} messages and received {} twice or out of order; {} epoch changes",
                counts.lost, counts.duplicated, counts.epoch_changes
            ));
        }
        if counts.recovery_failures() > 0 {
            problems.push(format!(
                "{} recovery failures: {} RecoveryFailed, {} without a session (no Welcome), {} rooms missing from the Welcome, {} rooms recovered with an error",
                counts.recovery_failures(),
                counts.recovery_failed,
                counts.no_session,
                counts.missing_room,
                counts.room_errors
            ));
        }
        if probes.lossy() || probes.duplicated > 0 || self.probed.unstamped > 0 {
            problems.push(format!(
                "probes lost {} messages, received {} twice or out of order, {} unstamped",
                probes.lost, probes.duplicated, self.probed.unstamped
            ));
        }
        if let Some(failure) = &self.probed.failure {
            problems.push(format!("a probe failed: {failure}"));
        }
        if problems.is_empty() && (self.window(0).is_empty() || self.window(1).is_empty()) {
            problems.push(
                "the probes measured no baseline or no storm (a storm shorter than a probe interval measures nothing: raise --probe-rate)"
                    .to_owned(),
            );
        }
        if !problems.is_empty() {
            bail!("invalid run: {}", problems.join("; "));
        }
        Ok(())
    }

    /// The result as JSON: `scenario`, `params` (every input), `metrics`
    /// (flat, numeric, units in the names) and `diagnostics`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let args = &self.args;
        let timeline = &self.timeline;
        let counts = self.counts();
        let mut metrics = Map::new();
        let mut put = |name: &str, value: serde_json::Value| {
            metrics.insert(name.to_owned(), value);
        };
        put("clients", json!(args.clients));
        put("back", json!(self.back()));
        put("failed", json!(self.failed()));
        put(
            "retries",
            json!(timeline.members.iter().map(|m| m.retries).sum::<u64>()),
        );
        put("connect_seconds", json!(timeline.connect_seconds));
        put("cut_ms", json!(timeline.cut_seconds * 1e3));
        put("all_back_seconds", json!(timeline.all_back_seconds));
        for (name, spread) in self.spreads() {
            put(&format!("{name}_p50_ms"), json!(spread.p50));
            put(&format!("{name}_p99_ms"), json!(spread.p99));
            put(&format!("{name}_max_ms"), json!(spread.max));
        }
        put(
            "expected",
            json!(timeline.members.iter().map(|m| m.expected).sum::<u64>()),
        );
        put("received", json!(counts.received));
        put("recovered", json!(counts.recovered));
        put("lost", json!(counts.lost));
        put("duplicated", json!(counts.duplicated));
        put("epoch_changes", json!(counts.epoch_changes));
        put("recovery_failures", json!(counts.recovery_failures()));
        put("recovery_failed", json!(counts.recovery_failed));
        put("no_session", json!(counts.no_session));
        put("missing_room", json!(counts.missing_room));
        put("room_errors", json!(counts.room_errors));
        put("delivered_during_storm", json!(timeline.during_storm));
        let (placed, moved) = self.placement();
        put("placed", json!(placed));
        put("moved_shard", json!(moved));
        put("published", json!(self.published.storm));
        put("probe_published", json!(self.published.probes));
        put(
            "publish_max_lag_ms",
            json!(self.published.max_lag_nanos as f64 / 1e6),
        );
        put("baseline_seconds", json!(timeline.baseline_seconds));
        for (index, window) in ["baseline", "storm"].into_iter().enumerate() {
            let histogram = self.window(index);
            put(&format!("{window}_count"), json!(histogram.len()));
            for (name, quantile) in QUANTILES {
                let micros = histogram.value_at_quantile(quantile) as f64 / 1e3;
                put(&format!("{window}_{name}_us"), json!(micros));
            }
            put(
                &format!("{window}_max_us"),
                json!(histogram.max() as f64 / 1e3),
            );
        }
        let probes = self.probed.counts;
        put("probe_lost", json!(probes.lost + probes.epoch_changes));
        put("probe_duplicated", json!(probes.duplicated));
        if let Some(cpu) = timeline.server_cpu {
            put("server_cpu_seconds", json!(cpu.total));
            put(
                "server_core_share",
                json!(cpu.total / timeline.all_back_seconds.max(1e-9)),
            );
        }
        if let Some(cpu) = timeline.generator_cpu {
            put(
                "generator_core_share",
                json!(cpu.total / timeline.all_back_seconds.max(1e-9)),
            );
        }
        if let Some(overflows) = timeline.listen_overflows {
            put("listen_overflows", json!(overflows));
        }
        json!({
            "scenario": "resume-storm",
            "params": {
                "url": self.url,
                "server": args.server,
                "server_cores": args.server.as_ref().map(|_| args.server_cores.to_string()),
                "history": self.history,
                "clients": args.clients,
                "rooms": args.rooms,
                "publishers": args.publishers,
                "rate": args.rate,
                "probes": args.probes,
                "probe_rate": args.probe_rate,
                "size": args.size,
                "jitter_ms": args.jitter_ms,
                "sources": self.sources,
                "concurrency": args.concurrency,
                "warmup_seconds": args.warmup,
                "baseline_seconds": args.baseline,
                "settle_seconds": args.settle,
                "connect_timeout": args.connect_timeout,
                "handshake_timeout": args.handshake_timeout,
                "storm_timeout": args.storm_timeout,
                "drain_timeout": args.drain_timeout,
                "cores": args.cores.as_ref().map(ToString::to_string),
                "driver": args.driver.to_possible_value().map(|value| value.get_name().to_owned()),
            },
            "metrics": metrics,
            "diagnostics": {
                "driver": timeline.driver,
                "first_failure": self.first_failure(),
                "thread_error": self.thread_error,
                "probe_failure": self.probed.failure,
            },
        })
    }

    /// The clients' table, in Markdown.
    fn storm_table(&self) -> String {
        let args = &self.args;
        let counts = self.counts();
        let [(_, resume), _, (_, upgrade), (_, answer)] = self.spreads();
        let mut out = String::from(
            "| clients | rooms | publishes/s | jitter | all back | back after the cut p50 / p99 / max | connect + upgrade p50 / p99 | Resume to Welcome p50 / p99 | delivered during the storm | recovered from history | lost | duplicated | recovery failures |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} ms | {:.2} s | {:.0} / {:.0} / {:.0} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {} | {} | {} | {} | {} |",
            args.clients,
            args.rooms,
            args.rate,
            args.jitter_ms,
            self.timeline.all_back_seconds,
            resume.p50,
            resume.p99,
            resume.max,
            upgrade.p50,
            upgrade.p99,
            answer.p50,
            answer.p99,
            self.timeline.during_storm,
            counts.recovered,
            counts.lost + counts.epoch_changes,
            counts.duplicated,
            counts.recovery_failures(),
        );
        out
    }

    /// The probes' table, in Markdown.
    fn probe_table(&self) -> String {
        let mut out = String::from(
            "| probe window | samples | p50 µs | p99 µs | max µs |\n|---|---|---|---|---|\n",
        );
        for (index, window) in ["before the storm", "during the storm"]
            .into_iter()
            .enumerate()
        {
            let histogram = self.window(index);
            let us = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1e3;
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "| {window} | {} | {:.0} | {:.0} | {:.0} |",
                histogram.len(),
                us(0.5),
                us(0.99),
                histogram.max() as f64 / 1e3,
            );
        }
        out
    }

    /// Prints the result for a person.
    pub(crate) fn print_human(&self) {
        let args = &self.args;
        println!(
            "resume-storm: {}, {} clients from {} source address(es) in {} rooms, {} publishers at {:.0} msg/s, {} probes at {:.0} msg/s, jitter {} ms, {} driver",
            self.url,
            args.clients,
            self.sources,
            args.rooms,
            args.publishers,
            args.rate,
            args.probes,
            args.probe_rate,
            args.jitter_ms,
            self.timeline.driver
        );
        print!("{}", self.storm_table());
        print!("{}", self.probe_table());
        let (placed, moved) = self.placement();
        println!("{moved} of {placed} clients back on another shard than before the cut");
        if let Some(failure) = self.first_failure() {
            println!("first client failure: {failure}");
        }
    }

    /// The report section: command, machine, method and the tables.
    fn render(&self, command_line: &str, machine: &Machine) -> String {
        let args = &self.args;
        let mut out = section_header(
            "Session resume storm",
            "Generated by `shardcast-bench resume-storm`:",
            command_line,
            machine,
        );
        let server = match &args.server {
            Some(command) => {
                let shards = command
                    .split_whitespace()
                    .skip_while(|word| *word != "--shards")
                    .nth(1)
                    .map_or_else(String::new, |shards| format!(" with {shards} shards"));
                format!(
                    "`shardcast serve`{shards}, started for the run with the command above on a free port, under `taskset -c {}`{}",
                    args.server_cores,
                    self.history
                        .map(|history| format!(", its room history {history} messages"))
                        .unwrap_or_default()
                )
            }
            None => "a running `shardcast serve`".to_owned(),
        };
        let placement = match self.placement() {
            (0, _) => String::new(),
            (placed, moved) => format!(
                " The shards share one port (SO_REUSEPORT): the kernel places each connection on a shard by its source port, so a resume lands on its session's shard or another; asked with the `shardcast.shard` event, {moved} of {placed} clients were back on another shard than before the cut."
            ),
        };
        let cores = match &args.cores {
            Some(cores) => format!("pinned to cores {cores}"),
            None => "unpinned".to_owned(),
        };
        let sharing = if machine.cores <= 2 {
            format!(
                " This host has {} logical cores: the server and the generator's threads share them.",
                machine.cores
            )
        } else {
            String::new()
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "Method: {server}.{placement} {} shardcast.v1 clients, from {} source address(es) (127.0.0.2 up), join one of {} rooms each; {} publishers publish {} B payloads to the rooms at {:.0} messages/s in total, and {} probes, each in a room of its own, receive {:.0} messages/s in total; neither publishers nor probes are cut. After {} s of warm-up and a {} s baseline, every client's connection is cut at once with an RST (SO_LINGER 0); each reconnects after a uniform random delay of up to {} ms, sends `Resume` with its session, token and last position, and is back when the resumed `Welcome` arrives (\"back after the cut\"; its reconnection splits into \"connect + upgrade\", from its delay's end until its `Resume` is written, and \"Resume to Welcome\", until the resumed `Welcome` is read). Publishing goes on throughout, and for {} s after the last client is back; then every client and probe must have received every offset of its room exactly once, in order, from its join to the room's last message: \"lost\" counts the gaps, \"duplicated\" the repeats, and a `RecoveryFailed`, a room missing from the `Welcome` or recovered with an error counts as a recovery failure. \"Recovered from history\" counts the messages replayed after the resumed `Welcome`s. Probe latency counts from each publish's intended time to its delivery: before the storm (the baseline) and from the cut until the last client was back. The generator's three threads (clients, publishers, probes; {} driver) are {cores}.{sharing}\n",
            args.clients,
            self.sources,
            args.rooms,
            args.publishers,
            args.size,
            args.rate,
            args.probes,
            args.probe_rate,
            args.warmup,
            args.baseline,
            args.jitter_ms,
            args.settle,
            self.timeline.driver,
        );
        out.push_str(&self.storm_table());
        out.push('\n');
        out.push_str(&self.probe_table());
        out.push('\n');
        let retries: u64 = self.timeline.members.iter().map(|m| m.retries).sum();
        let _ = writeln!(
            out,
            "Reconnections that failed and were retried: {retries}; listen queue overflows during the storm (machine-wide): {}{}.\n",
            self.timeline
                .listen_overflows
                .map_or_else(|| "unknown".to_owned(), |count| count.to_string()),
            [
                ("server", self.timeline.server_cpu),
                ("generator", self.timeline.generator_cpu)
            ]
            .into_iter()
            .filter_map(|(whose, cpu)| Some(format!(
                "; {whose} CPU from the cut until the last client was back: {:.2} s ({:.0}% of a core)",
                cpu?.total,
                cpu?.total / self.timeline.all_back_seconds.max(1e-9) * 100.0
            )))
            .collect::<String>()
        );
        out
    }
}

/// Runs `shardcast-bench resume-storm`: prints the result, fails unless
/// the run was valid and lost nothing, and writes the report section when
/// asked.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
    let outcome = run(args)?;
    if args.json {
        println!("{}", outcome.to_json());
    } else {
        outcome.print_human();
    }
    outcome.check()?;
    if let Some(report) = &args.report {
        let section = outcome.render(&shell_command_line(std::env::args()), &Machine::read());
        report_file::replace_section(report, &args.section, &section)?;
        eprintln!("wrote the {} section of {}", args.section, report.display());
    }
    Ok(())
}

/// The config file a `{config}` server reads, removed when dropped.
struct ConfigFile {
    /// Where it is.
    path: PathBuf,
}

impl ConfigFile {
    /// Writes a config whose room history keeps `history` messages, with
    /// no time limit.
    fn write(history: usize) -> anyhow::Result<ConfigFile> {
        let path = std::env::temp_dir().join(format!(
            "shardcast-resume-storm-{}.toml",
            std::process::id()
        ));
        let text = format!("[rooms]\nhistory_size = {history}\nhistory_ttl = \"off\"\n");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(ConfigFile { path })
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts the server if asked, and runs the storm against it.
pub(crate) fn run(args: &Args) -> anyhow::Result<Outcome> {
    args.check()?;
    let mut config = None;
    let (url, server) = match (&args.url, &args.server) {
        (Some(url), _) => (url.clone(), None),
        (None, Some(command)) => {
            if !command.contains("{port}") {
                bail!("the --server command has no {{port}} to listen on");
            }
            let mut command = command.clone();
            if command.contains("{config}") {
                let file = ConfigFile::write(args.history())?;
                command = command.replace("{config}", &file.path.to_string_lossy());
                config = Some(file);
            }
            let spec = ServerSpec {
                name: "shardcast".to_owned(),
                speaks: Speaks::ShardcastV1,
                command,
            };
            let port = free_port()?;
            // The server inherits the open file limit: raise it first.
            let clients = args.clients as u64 + u64::from(args.probes) + u64::from(args.publishers);
            limits::raise_nofile(clients * 2 + SPARE_FDS)?;
            let server = RunningServer::start(&spec, port, &args.server_cores)?;
            (format!("ws://127.0.0.1:{port}/"), Some(server))
        }
        (None, None) => bail!("give --url or --server"),
    };
    let target = Target::parse(&url)?;
    let clients = args.clients as usize;
    // Each client connects twice at least; an abortive close leaves no
    // TIME_WAIT behind, but retries take ports too.
    let sources = connections::sources_for(clients * 2, args.sources, PortRange::read()?)?;
    let sources: Vec<Ipv4Addr> = (0..sources)
        .map(|index| Ipv4Addr::new(127, 0, 0, 2 + index as u8))
        .collect();
    let source_count = sources.len();
    let connections = clients + (args.probes + args.publishers) as usize;
    limits::raise_nofile(connections as u64 * 2 + SPARE_FDS)?;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64);
    let shared = Arc::new(Shared {
        start: Instant::now(),
        phase: AtomicU8::new(phase::SETUP),
        ready: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        finals: Mutex::new(None),
    });
    let storm_rooms: Vec<String> = (0..args.rooms)
        .map(|room| format!("storm-{room}"))
        .collect();
    let probe_rooms: Vec<String> = (0..args.probes)
        .map(|probe| format!("probe-{probe}"))
        .collect();
    let all_rooms: Vec<String> = storm_rooms.iter().chain(&probe_rooms).cloned().collect();

    let publishers = {
        let (args, target, shared) = (args.clone(), target.clone(), Arc::clone(&shared));
        thread::Builder::new()
            .name("resume-storm-publishers".to_owned())
            .spawn(move || {
                let published = (|| {
                    if let Some(core) = args.core(1) {
                        cores::pin_current_thread(core)?;
                    }
                    let mut runtime = args.driver.build()?;
                    runtime.block_on(publish(&args, &target, &shared, &all_rooms, seed ^ 0x5055))
                })();
                if published.is_err() {
                    shared.failed.store(true, Ordering::Release);
                }
                published
            })
            .context("starting the publishers' thread")?
    };
    let probes = {
        let (args, target, shared) = (args.clone(), target.clone(), Arc::clone(&shared));
        thread::Builder::new()
            .name("resume-storm-probes".to_owned())
            .spawn(move || {
                let probed = (|| {
                    if let Some(core) = args.core(2) {
                        cores::pin_current_thread(core)?;
                    }
                    let mut runtime = args.driver.build()?;
                    runtime.block_on(probe(&args, &target, &shared, &probe_rooms, seed ^ 0x5052))
                })();
                if probed.is_err() {
                    shared.failed.store(true, Ordering::Release);
                }
                probed
            })
            .context("starting the probes' thread")?
    };
    let storm = {
        let (args, target, shared) = (args.clone(), target.clone(), Arc::clone(&shared));
        let server_pid = server.as_ref().map(RunningServer::pid);
        thread::Builder::new()
            .name("resume-storm-clients".to_owned())
            .spawn(move || {
                let timeline = (|| {
                    if let Some(core) = args.core(0) {
                        cores::pin_current_thread(core)?;
                    }
                    let mut rng = XorShift::new(seed);
                    let members = (0..args.clients as usize)
                        .map(|index| {
                            // Uniform in [0, jitter): 53 random bits as a
                            // fraction.
                            let fraction = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                            Member {
                                room: index % storm_rooms.len(),
                                source: sources[index % sources.len()],
                                delay: Duration::from_secs_f64(args.jitter_ms * fraction / 1e3),
                                fd: Cell::new(None),
                                cut: Cell::new(false),
                                tracker: RefCell::new(Tracker::new(
                                    &storm_rooms[index % storm_rooms.len()],
                                )),
                                reconnect_at: Cell::new(None),
                                upgraded_at: Cell::new(None),
                                back_at: Cell::new(None),
                                retries: Cell::new(0),
                                shards: Cell::new([None; 2]),
                                failure: RefCell::new(None),
                            }
                        })
                        .collect();
                    let mut runtime = args.driver.build()?;
                    let driver = driver_name(&runtime);
                    let storm = Rc::new(Storm {
                        args,
                        target,
                        shared: Arc::clone(&shared),
                        rooms: storm_rooms,
                        members,
                        inflater: Rc::new(RefCell::new(Inflater::new())),
                        envelopes: RefCell::new(EnvelopeWriter::new()),
                        cut_at: Cell::new(None),
                        back: Cell::new(0),
                        failed: Cell::new(0),
                        during_storm: Cell::new(0),
                        server_pid,
                    });
                    runtime.block_on(storm.run(driver, rng.next()))
                })();
                // Whatever happened, the publishers stop, and the probes
                // with them.
                shared.set(phase::STOP);
                if timeline.is_err() {
                    shared.failed.store(true, Ordering::Release);
                }
                timeline
            })
            .context("starting the clients' thread")?
    };
    let timeline = storm
        .join()
        .map_err(|_| anyhow!("the clients' thread panicked"))??;
    let published = publishers
        .join()
        .map_err(|_| anyhow!("the publishers' thread panicked"))?;
    let probed = probes
        .join()
        .map_err(|_| anyhow!("the probes' thread panicked"))?;
    drop(server);
    let history = config.take().map(|_| args.history());
    let mut thread_error = None;
    let published = published.unwrap_or_else(|error| {
        thread_error = Some(format!("publishers: {error:#}"));
        Published::default()
    });
    let probed = match probed {
        Ok(probed) => probed,
        Err(error) => {
            thread_error.get_or_insert_with(|| format!("probes: {error:#}"));
            let empty = Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3)?;
            Probed {
                windows: [empty.clone(), empty],
                counts: Counts::default(),
                unstamped: 0,
                failure: None,
            }
        }
    };
    Ok(Outcome {
        args: args.clone(),
        url,
        history,
        sources: source_count,
        timeline,
        published,
        probed,
        thread_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The command's arguments as the command line gives them.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// The arguments `extra` give, with a URL unless they name a server.
    fn args(extra: &[&str]) -> Args {
        let mut line = vec!["resume-storm"];
        if !extra.contains(&"--server") {
            line.extend_from_slice(&["--url", "ws://127.0.0.1:1/"]);
        }
        line.extend_from_slice(extra);
        Cli::parse_from(line).args
    }

    #[test]
    fn stamps_carry_phase_and_time_through_payloads() {
        let mut payload = vec![b'.'; 24];
        write_stamp(&mut payload, phase::STORM, 0x0123_4567_89ab_cdef);
        assert_eq!(&payload[..MIN_SIZE], b"30123456789abcdef");
        assert_eq!(read_stamp(&payload), Some((3, 0x0123_4567_89ab_cdef)));
        assert_eq!(read_stamp(b"2000000000000000f"), Some((2, 15)));
        assert_eq!(read_stamp(b"3short"), None);
        assert_eq!(read_stamp(b"30123456789abcdeX"), None);
        assert_eq!(read_stamp(b""), None);
    }

    #[test]
    fn spreads_are_nearest_rank_percentiles() {
        let millis = |values: std::ops::RangeInclusive<u64>| {
            values.map(Duration::from_millis).collect::<Vec<_>>()
        };
        let spread = Spread::of(millis(1..=100).into_iter().rev().collect());
        assert_eq!((spread.p50, spread.p99, spread.max), (50.0, 99.0, 100.0));
        assert_eq!(Spread::of(Vec::new()), Spread::default());
        assert_eq!(Spread::of(millis(7..=7)).p50, 7.0);
    }

    #[test]
    fn arguments_are_checked_and_the_history_covers_the_storm() {
        let defaults = args(&[]);
        defaults.check().unwrap();
        assert_eq!(defaults.clients, 10_000);
        // 2 messages a second per room, for twice the storm timeout.
        assert_eq!(defaults.history(), 240);
        assert_eq!(args(&["--rate", "1000"]).history(), 1200);
        assert_eq!(args(&["--rate", "10"]).history(), MIN_HISTORY);
        assert_eq!(args(&["--history", "0"]).history(), 0);
        assert!(args(&["--size", "16"]).check().is_err());
        assert!(args(&["--rate", "0"]).check().is_err());
        assert!(args(&["--jitter-ms=-1"]).check().is_err());
        assert!(args(&["--jitter-ms", "60000"]).check().is_err());
        let pinned = args(&["--cores", "1,3"]);
        assert_eq!(
            (pinned.core(0), pinned.core(1), pinned.core(2)),
            (Some(1), Some(3), Some(1))
        );
        assert_eq!(defaults.core(0), None);
    }

    /// A client that came back `back_ms` after the cut, having begun to
    /// reconnect at `reconnect_ms`, from shard 0 to `shard`.
    fn member(reconnect_ms: u64, back_ms: u64, shard: usize, counts: Counts) -> MemberResult {
        MemberResult {
            counts,
            expected: counts.received + counts.lost,
            reconnect_at: Some(Duration::from_millis(reconnect_ms)),
            upgraded_at: Some(Duration::from_millis(reconnect_ms + 10)),
            back_at: Some(Duration::from_millis(back_ms)),
            retries: 0,
            shards: [Some(0), Some(shard)],
            failure: None,
        }
    }

    fn outcome(members: Vec<MemberResult>) -> Outcome {
        let mut windows = [
            Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3).unwrap(),
            Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3).unwrap(),
        ];
        for micros in 1..=100 {
            windows[0].record(micros * 1000).unwrap();
            windows[1].record(micros * 2000).unwrap();
        }
        Outcome {
            args: args(&[
                "--clients",
                "3",
                "--rooms",
                "2",
                "--server",
                "shardcast serve --listen 127.0.0.1:{port} --shards 2 --config {config}",
            ]),
            url: "ws://127.0.0.1:1/".to_owned(),
            history: Some(1200),
            sources: 1,
            timeline: Timeline {
                driver: "io_uring",
                connect_seconds: 0.5,
                cut_seconds: 0.001,
                all_back_seconds: 0.9,
                baseline_seconds: 2.0,
                during_storm: 42,
                server_cpu: None,
                generator_cpu: Some(CpuSpent {
                    total: 0.45,
                    user: 0.3,
                }),
                listen_overflows: Some(0),
                members,
            },
            published: Published::default(),
            probed: Probed {
                windows,
                counts: Counts::default(),
                unstamped: 0,
                failure: None,
            },
            thread_error: None,
        }
    }

    #[test]
    fn a_clean_storm_passes_and_is_reported() {
        let clean = Counts {
            received: 10,
            recovered: 3,
            ..Counts::default()
        };
        let outcome = outcome(vec![
            member(100, 300, 1, clean),
            member(200, 900, 0, clean),
            member(0, 50, 1, clean),
        ]);
        outcome.check().unwrap();
        assert_eq!(outcome.placement(), (3, 2));
        let json = outcome.to_json();
        assert_eq!(json["scenario"], "resume-storm");
        let metrics = &json["metrics"];
        assert_eq!(metrics["back"], 3);
        assert_eq!(metrics["received"], 30);
        assert_eq!(metrics["recovered"], 9);
        assert_eq!(metrics["lost"], 0);
        assert_eq!(metrics["resume_max_ms"], 900.0);
        assert_eq!(metrics["reconnection_max_ms"], 700.0);
        assert_eq!(metrics["upgrade_p99_ms"], 10.0);
        assert_eq!(metrics["resume_answer_max_ms"], 690.0);
        assert_eq!(metrics["moved_shard"], 2);
        assert!((metrics["storm_p50_us"].as_f64().unwrap() - 100.0).abs() < 0.5);
        let machine = Machine {
            cpu: "test CPU".to_owned(),
            cores: 2,
            kernel: "6.1".to_owned(),
            commit: "abc".to_owned(),
            rustc: "rustc".to_owned(),
        };
        let section = outcome.render("shardcast-bench resume-storm --clients 3", &machine);
        assert!(
            section.starts_with("## Session resume storm\n"),
            "{section}"
        );
        assert!(section.contains("    shardcast-bench resume-storm --clients 3\n"));
        assert!(section.contains("commit `abc`"), "{section}");
        assert!(section.contains("with 2 shards"), "{section}");
        assert!(
            section.contains("its room history 1200 messages"),
            "{section}"
        );
        assert!(section.contains("2 of 3 clients were back on another shard"));
        assert!(
            section.contains(
                "| 3 | 2 | 200 | 1000 ms | 0.90 s | 300 / 900 / 900 ms | 10.0 / 10.0 ms | 190.0 / 690.0 ms |"
            ),
            "{section}"
        );
        assert!(section.contains("| 42 | 9 | 0 | 0 | 0 |"), "{section}");
        assert!(section.contains("| before the storm | 100 | 50 | 99 | 100 |"));
        assert!(section.contains("share them"), "{section}");
        assert!(
            section.contains("; generator CPU from the cut until the last client was back: 0.45 s (50% of a core).\n"),
            "{section}"
        );
        assert!(!section.contains("server CPU"), "{section}");
        assert!((metrics["generator_core_share"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn losses_duplicates_failures_and_stragglers_fail_the_run() {
        let clean = Counts {
            received: 10,
            ..Counts::default()
        };
        let lossy = Counts {
            lost: 2,
            recovery_failed: 1,
            ..clean
        };
        let text = |outcome: &Outcome| format!("{:#}", outcome.check().unwrap_err());
        let failed = outcome(vec![member(0, 1, 0, clean), member(0, 1, 0, lossy)]);
        let message = text(&failed);
        assert!(message.contains("lost 2 messages"), "{message}");
        assert!(message.contains("1 RecoveryFailed"), "{message}");
        let duplicated = Counts {
            duplicated: 1,
            ..clean
        };
        assert!(text(&outcome(vec![member(0, 1, 0, duplicated)])).contains("1 twice"));
        let mut straggler = outcome(vec![member(0, 1, 0, clean)]);
        straggler.timeline.members[0].back_at = None;
        assert!(text(&straggler).contains("0 of 3 clients back"));
        let mut broken = outcome(vec![member(0, 1, 0, clean)]);
        broken.timeline.members[0].failure = Some("reset".to_owned());
        assert!(text(&broken).contains("first: reset"));
        let mut quiet = outcome(vec![member(0, 1, 0, clean); 3]);
        quiet.probed.windows[1].reset();
        assert!(text(&quiet).contains("no storm"));
    }
}
