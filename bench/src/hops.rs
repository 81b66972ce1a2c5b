//! `shardcast-bench hops`: what a publish costs when it crosses shards,
//! against one that stays on its shard.
//!
//! Every room of a `shardcast serve` has an owner shard, which numbers its
//! messages. A publish from a connection on another shard goes to the
//! owner's inbox (one hop); the owner delivers to its own members and
//! forwards the message to every other shard with members (one hop each).
//! So, the owner being shard A and the other shard B:
//!
//! - `local`: publisher, subscriber and owner on A; no hop.
//! - `subscriber-remote`: publisher on A, subscriber on B; one hop, the
//!   owner's forward.
//! - `owner-remote`: publisher and subscriber on B; two hops, to the owner
//!   and back.
//!
//! The run asks the server where things are, with the diagnostic events of
//! `shardcast serve`: it opens shardcast.v1 connections until two are on
//! each of shards 0 and 1 (`shardcast.shard`), and picks rooms named
//! `hops-0`, `hops-1`, ... by their owner (`shardcast.owner`): one room
//! per case and owner shard. Then it publishes one message at a time: the
//! publisher (a member of the room that publishes with `exclude_self`)
//! sends it, the subscriber (another member) receives it, the latency from
//! just before the publish is written to just after the delivery is read
//! is recorded, and the generator pauses. The cases take turns publish by
//! publish, and the owner alternates between shard 0 and shard 1 every
//! round, so both shards play both parts and a drift of the machine
//! touches every case alike.
//!
//! One monoio thread runs it all. Each connection has a task that reads
//! what the server sends and hands it to the sampling task (an answer, a
//! delivery stamped with the time it was read); pongs to the server's
//! pings are queued and written between samples.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use serde_json::json;
use shardcast::CoreList;
use shardcast_proto::Client;
use shardcast_proto::deflate::Inflater;
use shardcast_proto::envelope::{self, Body, EnvelopeWriter, VerifyLimits};
use shardcast_proto::frame::{Decoder, DecoderConfig, Encoder, Message, OpCode};

use crate::client::{self, Target, XorShift};
use crate::cores;
use crate::echo::{DriverChoice, driver_name};
use crate::machine::Machine;
use crate::report_file::{self, section_header};
use crate::served::Served;
use crate::servers::shell_command_line;

/// The section of BENCHMARKS.md this command writes by default.
const SECTION: &str = "engine-hops";

/// The WebSocket subprotocol of shardcast's envelopes.
const SHARDCAST_V1: &str = "shardcast.v1";

/// The event of `shardcast serve` that answers the connection's shard.
const SHARD_EVENT: &str = "shardcast.shard";

/// The event of `shardcast serve` that answers the owner shard of a room.
const OWNER_EVENT: &str = "shardcast.owner";

/// Candidate room names tried, `hops-0` up, before giving up on finding
/// rooms owned by both shards.
const ROOM_CANDIDATES: usize = 1000;

/// The shortest payload: the sample's number in 16 hex digits.
const MIN_SIZE: usize = 16;

/// Latencies above this many nanoseconds (one minute) are recorded as it.
const MAX_LATENCY_NANOS: u64 = 60_000_000_000;

/// Command line of `shardcast-bench hops`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// The server measured: a running one, or one started for the run.
    #[command(flatten)]
    pub(crate) served: Served,
    /// Publishes measured per case.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) samples: u64,
    /// Publishes per case before the measured ones, not counted.
    #[arg(long, default_value_t = 200)]
    pub(crate) warmup: u64,
    /// Payload bytes per message, at least 16.
    #[arg(long, default_value_t = 32)]
    pub(crate) size: usize,
    /// Microseconds the generator sleeps after each delivery, before the
    /// next publish.
    #[arg(long, default_value_t = 200)]
    pub(crate) pause_us: u64,
    /// The core to pin the generator's thread to (a list of one core);
    /// unpinned when absent.
    #[arg(long)]
    pub(crate) cores: Option<CoreList>,
    /// The generator's I/O driver: io_uring when the kernel allows it
    /// (`auto`), or one forced.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub(crate) driver: DriverChoice,
    /// The most connections opened while looking for two on each of
    /// shards 0 and 1.
    #[arg(long, default_value_t = 64)]
    pub(crate) max_connections: usize,
    /// Seconds an answer or a delivery may take before the run fails.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) timeout: f64,
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

/// Where publisher, subscriber and owner are, relative to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Case {
    /// Publisher, subscriber and owner on one shard.
    Local,
    /// Publisher and subscriber on one shard, the owner on the other.
    OwnerRemote,
    /// Publisher and owner on one shard, the subscriber on the other.
    SubscriberRemote,
}

impl Case {
    /// Every case, in the order the runs take turns and the tables list.
    pub(crate) const ALL: [Case; 3] = [Case::Local, Case::SubscriberRemote, Case::OwnerRemote];

    /// The case's name in output and results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Case::Local => "local",
            Case::OwnerRemote => "owner-remote",
            Case::SubscriberRemote => "subscriber-remote",
        }
    }

    /// Shard-to-shard messages between the publish and the delivery.
    pub(crate) fn hops(self) -> u32 {
        match self {
            Case::Local => 0,
            Case::SubscriberRemote => 1,
            Case::OwnerRemote => 2,
        }
    }

    /// Where the publisher and the subscriber are, for owner shard `owner`
    /// and the other shard `other`: (shard, nth connection on it) each.
    fn ends(self, owner: usize, other: usize) -> [(usize, usize); 2] {
        match self {
            Case::Local => [(owner, 0), (owner, 1)],
            Case::OwnerRemote => [(other, 0), (other, 1)],
            Case::SubscriberRemote => [(owner, 0), (other, 0)],
        }
    }

    /// Its index in [`Case::ALL`].
    fn index(self) -> usize {
        Case::ALL
            .iter()
            .position(|&case| case == self)
            .unwrap_or_default()
    }
}

/// The connections the run uses: the first two found on each of shards 0
/// and 1, as indices into every connection opened.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The connections found on shard 0 and on shard 1, two at most.
    on: [Vec<usize>; 2],
}

impl Placement {
    /// Takes connection `index`, served by `shard`, if the shard still
    /// needs one; connections on other shards are not used.
    pub(crate) fn offer(&mut self, index: usize, shard: usize) {
        if let Some(found) = self.on.get_mut(shard) {
            if found.len() < 2 {
                found.push(index);
            }
        }
    }

    /// Whether both shards have their two connections.
    pub(crate) fn complete(&self) -> bool {
        self.on.iter().all(|found| found.len() == 2)
    }

    /// The nth connection found on `shard`.
    fn connection(&self, (shard, nth): (usize, usize)) -> usize {
        self.on[shard][nth]
    }
}

/// A room per case and owner shard: `rooms[case][owner]`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rooms {
    /// Indexed by [`Case::index`], then by owner shard.
    rooms: [[Option<String>; 2]; 3],
}

impl Rooms {
    /// Takes `room`, owned by `owner`, for the first case that has no room
    /// of that owner yet; rooms of other shards are not used.
    pub(crate) fn offer(&mut self, room: &str, owner: usize) {
        if owner < 2 {
            if let Some(slot) = self.rooms.iter_mut().find(|slots| slots[owner].is_none()) {
                slot[owner] = Some(room.to_owned());
            }
        }
    }

    /// Whether every case has a room of each owner.
    pub(crate) fn complete(&self) -> bool {
        self.rooms.iter().flatten().all(Option::is_some)
    }

    /// The room of `case` owned by `owner`; empty until [`Rooms::offer`]
    /// gave one.
    fn of(&self, case: Case, owner: usize) -> &str {
        self.rooms[case.index()][owner]
            .as_deref()
            .unwrap_or_default()
    }
}

/// A shard index as the diagnostic events answer it: ASCII decimal.
pub(crate) fn parse_index(answer: &[u8]) -> anyhow::Result<usize> {
    std::str::from_utf8(answer)
        .ok()
        .and_then(|text| text.parse().ok())
        .with_context(|| {
            format!(
                "expected a shard index in ASCII decimal, got {:?}",
                String::from_utf8_lossy(answer)
            )
        })
}

/// The payload of sample `seq`: its number in 16 hex digits, then `.` up
/// to `size` bytes.
pub(crate) fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut payload = format!("{seq:016x}").into_bytes();
    payload.resize(size.max(MIN_SIZE), b'.');
    payload
}

/// One case's latencies, nanoseconds.
#[derive(Clone, Debug)]
pub(crate) struct CaseLatency {
    /// The case.
    pub(crate) case: Case,
    /// Its publish-to-delivery latencies.
    pub(crate) latency: Histogram<u64>,
}

impl CaseLatency {
    /// An empty record of `case`, 1 ns to a minute at 3 significant digits.
    fn new(case: Case) -> anyhow::Result<CaseLatency> {
        Ok(CaseLatency {
            case,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3)?,
        })
    }

    /// The latency at `quantile` (0 to 1), microseconds.
    pub(crate) fn us(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1e3
    }

    /// The largest latency, microseconds.
    pub(crate) fn max_us(&self) -> f64 {
        self.latency.max() as f64 / 1e3
    }
}

/// The percentiles every output shows: (name, quantile).
const QUANTILES: [(&str, f64); 3] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)];

/// What one run measured, with the arguments it ran with.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// The arguments of the run.
    pub(crate) args: Args,
    /// The server's URL.
    pub(crate) url: String,
    /// The driver the generator's runtime used: `io_uring` or `legacy`.
    pub(crate) driver: &'static str,
    /// Connections opened to find two on each shard.
    pub(crate) connections: usize,
    /// The rooms used: (case, owner shard, room).
    pub(crate) rooms: Vec<(Case, usize, String)>,
    /// Each case's latencies, in the order of [`Case::ALL`].
    pub(crate) cases: Vec<CaseLatency>,
}

impl Outcome {
    /// The local case, the others' reference.
    fn local(&self) -> &CaseLatency {
        &self.cases[Case::Local.index()]
    }

    /// `case`'s latency at `quantile` over the local case's.
    pub(crate) fn ratio(&self, case: &CaseLatency, quantile: f64) -> f64 {
        case.us(quantile) / self.local().us(quantile)
    }

    /// The result as JSON: `scenario`, `params` (every input), `metrics`
    /// (flat, numeric, units in the names: `CASE_p50_us`, ...,
    /// `CASE_p50_ratio` against local) and `diagnostics` (the driver, the
    /// connections opened, the rooms).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let args = &self.args;
        let mut metrics = serde_json::Map::new();
        for case in &self.cases {
            let key = case.case.name().replace('-', "_");
            metrics.insert(format!("{key}_samples"), json!(case.latency.len()));
            metrics.insert(format!("{key}_hops"), json!(case.case.hops()));
            for (name, quantile) in QUANTILES {
                metrics.insert(format!("{key}_{name}_us"), json!(case.us(quantile)));
                metrics.insert(
                    format!("{key}_{name}_ratio"),
                    json!(self.ratio(case, quantile)),
                );
            }
            metrics.insert(format!("{key}_max_us"), json!(case.max_us()));
        }
        json!({
            "scenario": "hops",
            "params": {
                "url": self.url,
                "server": args.served.server,
                "server_cores": args.served.started_cores().map(ToString::to_string),
                "samples": args.samples,
                "warmup": args.warmup,
                "size": args.size,
                "pause_us": args.pause_us,
                "cores": args.cores.as_ref().map(ToString::to_string),
                "driver": args.driver.to_possible_value().map(|value| value.get_name().to_owned()),
                "max_connections": args.max_connections,
                "timeout_seconds": args.timeout,
            },
            "metrics": metrics,
            "diagnostics": {
                "driver": self.driver,
                "connections_opened": self.connections,
                "rooms": self.rooms.iter().map(|(case, owner, room)| json!({
                    "case": case.name(),
                    "owner": owner,
                    "room": room,
                })).collect::<Vec<_>>(),
            },
        })
    }

    /// The table of the cases, in Markdown.
    fn table(&self) -> String {
        let mut out = String::from(
            "| case | hops | samples | p50 µs | p90 µs | p99 µs | max µs | p50 / local | p99 / local |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for case in &self.cases {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x |",
                case.case.name(),
                case.case.hops(),
                case.latency.len(),
                case.us(0.5),
                case.us(0.9),
                case.us(0.99),
                case.max_us(),
                self.ratio(case, 0.5),
                self.ratio(case, 0.99),
            );
        }
        out
    }

    /// Prints the result for a person.
    pub(crate) fn print_human(&self) {
        let args = &self.args;
        println!(
            "hops: {}, {} samples per case ({} warm-up), {} B, {} µs pause, {} driver, {} connections opened",
            self.url,
            args.samples,
            args.warmup,
            args.size.max(MIN_SIZE),
            args.pause_us,
            self.driver,
            self.connections
        );
        print!("{}", self.table());
    }

    /// The report section: command, machine, method and the table.
    fn render(&self, command_line: &str, machine: &Machine) -> String {
        let args = &self.args;
        let mut out = section_header(
            "Cross-shard publish",
            "Generated by `shardcast-bench hops`:",
            command_line,
            machine,
        );
        let server = match args.served.started_cores() {
            Some(cores) => format!(
                "`shardcast serve` with 2 shards, started for the run with the command above on a free port, under `taskset -c {cores}`"
            ),
            None => "a running `shardcast serve` with at least 2 shards".to_owned(),
        };
        let generator = match &args.cores {
            Some(cores) => format!("pinned to core {cores}"),
            None => "unpinned".to_owned(),
        };
        let sharing = if machine.cores <= 2 {
            format!(
                " This host has {} logical cores: the two shards and the generator share them, so each hop's cost includes waking a shard thread that may have to wait for its core.",
                machine.cores
            )
        } else {
            String::new()
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "Method: {server}. The generator (one monoio thread, {} driver, {generator}) opened shardcast.v1 connections until two were on each of shards 0 and 1 ({} opened; the `shardcast.shard` event tells a connection's shard), and took rooms by their owner shard (the `shardcast.owner` event). One publish in flight at a time: the publisher, a member of the room publishing with `exclude_self`, sends {} B, and the subscriber, another member, receives the message; latency counts from just before the publish is written to just after the delivery is read; then the generator sleeps {} µs. local: publisher, subscriber and owner on one shard (no hop); subscriber-remote: publisher on the owner's shard, subscriber on the other (one hop, the owner's forward); owner-remote: publisher and subscriber on one shard, the owner on the other (two hops, to the owner's inbox and back). The cases take turns publish by publish, and the owner alternates between shard 0 and shard 1, so both shards play both parts; {} publishes per case warm up first, not counted. Percentiles from an HdrHistogram; a ratio is the case's figure over local's.{sharing}\n",
            self.driver,
            self.connections,
            args.size.max(MIN_SIZE),
            args.pause_us,
            args.warmup,
        );
        out.push_str(&self.table());
        out.push('\n');
        out
    }
}

/// Runs `shardcast-bench hops`: prints the result, and writes the report
/// section when asked.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
    let outcome = run(args)?;
    if args.json {
        println!("{}", outcome.to_json());
    } else {
        outcome.print_human();
    }
    if let Some(report) = &args.report {
        let section = outcome.render(&shell_command_line(std::env::args()), &Machine::read());
        report_file::replace_section(report, &args.section, &section)?;
        eprintln!("wrote the {} section of {}", args.section, report.display());
    }
    Ok(())
}

/// Starts the server if asked, and measures it.
pub(crate) fn run(args: &Args) -> anyhow::Result<Outcome> {
    if let Some(core) = args.cores.as_ref() {
        if core.as_slice().len() != 1 {
            bail!("--cores takes one core, got {core}");
        }
        cores::check_available(core.as_slice())?;
    }
    let (url, _server) = args.served.start(None)?;
    let target = Target::parse(&url)?;
    // The generator's thread: pinned if asked, then its runtime.
    let thread_args = args.clone();
    let measured = thread::spawn(move || -> anyhow::Result<_> {
        if let Some(core) = thread_args
            .cores
            .as_ref()
            .and_then(|cores| cores.as_slice().first())
        {
            cores::pin_current_thread(*core)?;
        }
        let mut runtime = thread_args.driver.build()?;
        let driver = driver_name(&runtime);
        let measured = runtime.block_on(measure(&thread_args, &target))?;
        Ok((driver, measured))
    })
    .join()
    .map_err(|_| anyhow!("the generator thread panicked"))??;
    let (driver, (connections, rooms, cases)) = measured;
    Ok(Outcome {
        args: args.clone(),
        url,
        driver,
        connections,
        rooms,
        cases,
    })
}

/// What [`measure`] found: connections opened, rooms used, latencies.
type Measured = (usize, Vec<(Case, usize, String)>, Vec<CaseLatency>);

/// Places connections and rooms, then takes the samples.
async fn measure(args: &Args, target: &Target) -> anyhow::Result<Measured> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut rng = XorShift::new(0x686f_7073);
    let mut connections = Vec::new();
    let mut placement = Placement::default();
    while !placement.complete() {
        if connections.len() == args.max_connections {
            bail!(
                "{} connections opened, and not two on each of shards 0 and 1: {placement:?} (is the server running 2 shards?)",
                connections.len()
            );
        }
        let mut connection = Connection::open(target, rng.next()).await?;
        let shard = parse_index(&connection.ask(SHARD_EVENT, b"", timeout).await?)?;
        placement.offer(connections.len(), shard);
        connections.push(connection);
    }
    let mut rooms = Rooms::default();
    let asker = &mut connections[placement.connection((0, 0))];
    for index in 0..ROOM_CANDIDATES {
        if rooms.complete() {
            break;
        }
        let room = format!("hops-{index}");
        let owner = parse_index(&asker.ask(OWNER_EVENT, room.as_bytes(), timeout).await?)?;
        rooms.offer(&room, owner);
    }
    if !rooms.complete() {
        bail!("no rooms owned by both shards 0 and 1 among {ROOM_CANDIDATES} candidates");
    }
    let mut used = Vec::new();
    for case in Case::ALL {
        for owner in 0..2 {
            let room = rooms.of(case, owner);
            for end in case.ends(owner, 1 - owner) {
                connections[placement.connection(end)]
                    .join(room, timeout)
                    .await?;
            }
            used.push((case, owner, room.to_owned()));
        }
    }

    let mut cases = Case::ALL
        .iter()
        .map(|&case| CaseLatency::new(case))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pause = Duration::from_micros(args.pause_us);
    let rounds = args.warmup + args.samples;
    let mut seq = 0;
    for round in 0..rounds {
        let owner = round as usize % 2;
        for case in Case::ALL {
            let room = rooms.of(case, owner);
            let [publisher, subscriber] = case
                .ends(owner, 1 - owner)
                .map(|end| placement.connection(end));
            let message = payload(seq, args.size);
            seq += 1;
            let sent = connections[publisher].publish(room, &message).await?;
            let delivery = connections[subscriber]
                .delivery(timeout)
                .await
                .with_context(|| format!("{} sample {seq}", case.name()))?;
            if delivery.room != room || delivery.payload != message {
                bail!(
                    "{}: expected {:?} in room {room}, the subscriber got {:?} in room {}",
                    case.name(),
                    String::from_utf8_lossy(&message),
                    String::from_utf8_lossy(&delivery.payload),
                    delivery.room
                );
            }
            if round >= args.warmup {
                let nanos = delivery.at.saturating_duration_since(sent).as_nanos();
                cases[case.index()]
                    .latency
                    .saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX));
            }
            for connection in &mut connections {
                connection.flush_control().await?;
            }
            // monoio's timer counts milliseconds: the pause blocks the
            // thread instead, while nothing is in flight.
            thread::sleep(pause);
        }
    }
    Ok((connections.len(), used, cases))
}

/// A message of a room, as the subscriber read it.
#[derive(Debug)]
struct Delivery {
    /// The room it was published to.
    room: String,
    /// What was published.
    payload: Vec<u8>,
    /// When the read that brought it completed.
    at: Instant,
}

/// What a connection's reading task hands the sampling task.
#[derive(Debug)]
enum Received {
    /// The answer to request `id`: its payload, or why it failed.
    Answer {
        /// The request's acknowledgement id.
        id: u64,
        /// The acknowledgement's payload, or its error code and message.
        answer: Result<Vec<u8>, String>,
    },
    /// A message of a room the connection joined.
    Delivery(Delivery),
}

/// Between a connection's reading task and the sampling task: what was
/// received, pongs to write, and how the reading ended.
#[derive(Default)]
struct Inbox {
    /// Received and not taken yet, oldest first.
    received: RefCell<VecDeque<Received>>,
    /// The sampling task, waiting for something to be received.
    waker: Cell<Option<Waker>>,
    /// Pongs to the server's pings, written between samples.
    control: RefCell<Vec<u8>>,
    /// Why the reading task stopped, once it has.
    failure: RefCell<Option<String>>,
}

impl Inbox {
    /// Queues `received` and wakes the sampling task.
    fn push(&self, received: Received) {
        self.received.borrow_mut().push_back(received);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Records why the reading task stopped, and wakes the sampling task.
    fn fail(&self, error: &anyhow::Error) {
        *self.failure.borrow_mut() = Some(format!("{error:#}"));
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Waits for the next thing the connection received.
struct Next<'a>(&'a Inbox);

impl Future for Next<'_> {
    type Output = anyhow::Result<Received>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let inbox = self.0;
        if let Some(received) = inbox.received.borrow_mut().pop_front() {
            return Poll::Ready(Ok(received));
        }
        if let Some(failure) = inbox.failure.borrow().as_ref() {
            return Poll::Ready(Err(anyhow!("the connection failed: {failure}")));
        }
        inbox.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// One shardcast.v1 connection: its writing half, and the inbox its
/// reading task fills.
struct Connection {
    /// Where requests and publishes go.
    writer: OwnedWriteHalf<TcpStream>,
    /// What the reading task received.
    inbox: Rc<Inbox>,
    /// Builds the envelopes.
    envelopes: EnvelopeWriter,
    /// The frame being written, reused.
    out: Vec<u8>,
    /// Masking keys for the frames.
    rng: XorShift,
    /// The id of the next request's acknowledgement.
    next_id: u64,
}

impl Connection {
    /// Connects, upgrades with shardcast.v1, and starts the reading task.
    async fn open(target: &Target, seed: u64) -> anyhow::Result<Connection> {
        let mut rng = XorShift::new(seed);
        let mut stream = TcpStream::connect_addr(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
        let leftover = client::handshake(&mut stream, target, Some(SHARDCAST_V1), &mut rng).await?;
        let (reader, writer) = stream.into_split();
        let inbox = Rc::new(Inbox::default());
        {
            let inbox = Rc::clone(&inbox);
            let rng = XorShift::new(rng.next());
            monoio::spawn(async move {
                if let Err(error) = read_loop(reader, leftover, &inbox, rng).await {
                    inbox.fail(&error);
                }
            });
        }
        Ok(Connection {
            writer,
            inbox,
            envelopes: EnvelopeWriter::new(),
            out: Vec::with_capacity(256),
            rng,
            next_id: 1,
        })
    }

    /// Writes what `envelope` made of the envelope builder, framed, with
    /// the next request id; returns that id and the time just before the
    /// write.
    async fn send(
        &mut self,
        envelope: impl FnOnce(&mut EnvelopeWriter, u64) -> &[u8],
    ) -> anyhow::Result<(u64, Instant)> {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = envelope(&mut self.envelopes, id);
        self.out.clear();
        Encoder::<Client>::new().frame(
            &mut self.out,
            OpCode::Binary,
            true,
            bytes,
            self.rng.mask_key(),
        );
        let sent = Instant::now();
        let (result, out) = self.writer.write_all(std::mem::take(&mut self.out)).await;
        self.out = out;
        result.context("sending")?;
        Ok((id, sent))
    }

    /// Waits for the answer to request `id`; nothing else may come first.
    async fn answer(&mut self, id: u64, timeout: Duration) -> anyhow::Result<Vec<u8>> {
        match self.next(timeout).await? {
            Received::Answer { id: got, answer } if got == id => {
                answer.map_err(|error| anyhow!("request {id} failed: {error}"))
            }
            other => bail!("expected the answer to request {id}, got {other:?}"),
        }
    }

    /// Asks the server `event` with `payload`, and returns the answer.
    async fn ask(
        &mut self,
        event: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        let (id, _) = self
            .send(|envelopes, id| envelopes.event(event, payload, Some(id)))
            .await?;
        self.answer(id, timeout)
            .await
            .with_context(|| format!("asking {event}"))
    }

    /// Joins `room` and waits for the server's acknowledgement.
    async fn join(&mut self, room: &str, timeout: Duration) -> anyhow::Result<()> {
        let (id, _) = self
            .send(|envelopes, id| envelopes.join(room, Some(id), false))
            .await?;
        self.answer(id, timeout)
            .await
            .with_context(|| format!("joining {room}"))?;
        Ok(())
    }

    /// Publishes `payload` to `room` with `exclude_self` and no
    /// acknowledgement; returns the time just before it was written.
    async fn publish(&mut self, room: &str, payload: &[u8]) -> anyhow::Result<Instant> {
        let (_, sent) = self
            .send(|envelopes, _| envelopes.publish(room, payload, true, None))
            .await?;
        Ok(sent)
    }

    /// Waits for the next delivery; nothing else may come first.
    async fn delivery(&mut self, timeout: Duration) -> anyhow::Result<Delivery> {
        match self.next(timeout).await? {
            Received::Delivery(delivery) => Ok(delivery),
            other => bail!("expected a delivery, got {other:?}"),
        }
    }

    /// The next thing received, within `timeout`.
    async fn next(&mut self, timeout: Duration) -> anyhow::Result<Received> {
        monoio::time::timeout(timeout, Next(&self.inbox))
            .await
            .map_err(|_| anyhow!("nothing received within {timeout:?}"))?
    }

    /// Writes the pongs the reading task queued.
    async fn flush_control(&mut self) -> anyhow::Result<()> {
        let control = std::mem::take(&mut *self.inbox.control.borrow_mut());
        if !control.is_empty() {
            let (result, _) = self.writer.write_all(control).await;
            result.context("answering pings")?;
        }
        Ok(())
    }
}

/// The reading task of a connection: decodes what the server sends into
/// `inbox`, until the connection fails or the runtime is dropped.
async fn read_loop(
    mut reader: OwnedReadHalf<TcpStream>,
    leftover: Vec<u8>,
    inbox: &Inbox,
    mut rng: XorShift,
) -> anyhow::Result<()> {
    let mut decoder = Decoder::<Client>::new(DecoderConfig::DEFAULT);
    let mut inflater = Inflater::new();
    let mut incoming = leftover;
    incoming.reserve(4096);
    let mut at = Instant::now();
    loop {
        let filled = incoming.len();
        let mut offset = 0;
        while offset < filled {
            let (used, message) = decoder.decode(&mut incoming[offset..filled], &mut inflater)?;
            offset += used;
            match message {
                None | Some(Message::Pong(_)) => {}
                Some(Message::Ping(payload)) => {
                    Encoder::<Client>::new().pong(
                        &mut inbox.control.borrow_mut(),
                        payload,
                        rng.mask_key(),
                    )?;
                }
                Some(Message::Binary(bytes)) => take_envelope(bytes, at, inbox)?,
                Some(other) => bail!("unexpected {other:?} from the server"),
            }
        }
        incoming.clear();
        let (result, buf) = reader.read(incoming).await;
        at = Instant::now();
        incoming = buf;
        if result.context("receiving")? == 0 {
            bail!("the server closed the TCP connection");
        }
    }
}

/// Hands what one shardcast.v1 message (an envelope or a batch of them)
/// carries to `inbox`, deliveries stamped `at`; an error from the server
/// fails the connection.
fn take_envelope(bytes: &[u8], at: Instant, inbox: &Inbox) -> anyhow::Result<()> {
    let envelope =
        envelope::read(bytes, &VerifyLimits::DEFAULT).context("reading a shardcast.v1 envelope")?;
    for item in envelope::items(envelope) {
        match item.body_type() {
            Body::Message => {
                let message = item
                    .body_as_message()
                    .context("a Message without its body")?;
                inbox.push(Received::Delivery(Delivery {
                    room: message.room().to_owned(),
                    payload: envelope::bytes(message.payload()).to_vec(),
                    at,
                }));
            }
            Body::Ack => {
                let ack = item.body_as_ack().context("an Ack without its body")?;
                let answer = match ack.error() {
                    None => Ok(envelope::bytes(ack.payload()).to_vec()),
                    Some(code) => Err(format!("{code:?}: {}", ack.message().unwrap_or_default())),
                };
                inbox.push(Received::Answer {
                    id: ack.id(),
                    answer,
                });
            }
            Body::Error => {
                let error = item.body_as_error().context("an Error without its body")?;
                bail!(
                    "the server sent an error: {:?}: {}",
                    error.code(),
                    error.message().unwrap_or_default()
                );
            }
            // A Welcome, or a body newer than the schema.
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_indices_are_ascii_decimal() {
        assert_eq!(parse_index(b"0").unwrap(), 0);
        assert_eq!(parse_index(b"17").unwrap(), 17);
        assert!(parse_index(b"").is_err());
        assert!(parse_index(b"-1").is_err());
        assert!(parse_index(b"one").is_err());
        assert!(parse_index(&[0xff]).is_err());
    }

    #[test]
    fn the_first_two_connections_of_each_shard_are_used() {
        let mut placement = Placement::default();
        for (index, shard) in [1, 1, 2, 1, 0].into_iter().enumerate() {
            placement.offer(index, shard);
        }
        assert!(!placement.complete());
        placement.offer(5, 0);
        assert!(placement.complete());
        assert_eq!(placement.connection((0, 0)), 4);
        assert_eq!(placement.connection((0, 1)), 5);
        assert_eq!(placement.connection((1, 0)), 0);
        assert_eq!(placement.connection((1, 1)), 1);
    }

    #[test]
    fn each_case_gets_a_room_of_each_owner() {
        let mut rooms = Rooms::default();
        for (index, owner) in [0, 0, 3, 1, 0, 0, 1].into_iter().enumerate() {
            rooms.offer(&format!("r{index}"), owner);
        }
        assert!(!rooms.complete(), "only two rooms of shard 1 yet");
        rooms.offer("r7", 1);
        assert!(rooms.complete());
        assert_eq!(rooms.of(Case::Local, 0), "r0");
        assert_eq!(rooms.of(Case::SubscriberRemote, 0), "r1");
        assert_eq!(rooms.of(Case::OwnerRemote, 0), "r4");
        assert_eq!(rooms.of(Case::Local, 1), "r3");
        assert_eq!(rooms.of(Case::OwnerRemote, 1), "r7");
    }

    #[test]
    fn cases_put_publisher_and_subscriber_where_their_hops_say() {
        for case in Case::ALL {
            for owner in 0..2 {
                let [(publisher, p), (subscriber, s)] = case.ends(owner, 1 - owner);
                assert_ne!((publisher, p), (subscriber, s), "{case:?}");
                let hops = u32::from(publisher != owner) + u32::from(subscriber != owner);
                assert_eq!(hops, case.hops(), "{case:?}");
            }
        }
    }

    #[test]
    fn payloads_carry_their_number_and_their_size() {
        assert_eq!(payload(255, 20), b"00000000000000ff....");
        assert_eq!(payload(1, 4).len(), MIN_SIZE);
        assert_ne!(payload(1, 32), payload(2, 32));
    }

    #[test]
    fn ratios_and_the_table_compare_each_case_with_local() {
        let mut cases: Vec<CaseLatency> = Case::ALL
            .iter()
            .map(|&case| CaseLatency::new(case).unwrap())
            .collect();
        for (index, case) in cases.iter_mut().enumerate() {
            for micros in 1..=100_u64 {
                case.latency
                    .record(micros * 1000 * (index as u64 + 1))
                    .unwrap();
            }
        }
        let outcome = Outcome {
            args: Args {
                served: Served {
                    url: Some("ws://127.0.0.1:1/".to_owned()),
                    server: None,
                    server_cores: "0,1".parse().unwrap(),
                },
                samples: 100,
                warmup: 0,
                size: 32,
                pause_us: 0,
                cores: None,
                driver: DriverChoice::Auto,
                max_connections: 64,
                timeout: 1.0,
                json: false,
                report: None,
                section: SECTION.to_owned(),
            },
            url: "ws://127.0.0.1:1/".to_owned(),
            driver: "io_uring",
            connections: 4,
            rooms: vec![(Case::Local, 0, "hops-0".to_owned())],
            cases,
        };
        let local = &outcome.cases[0];
        let remote = &outcome.cases[2];
        assert!((outcome.ratio(local, 0.5) - 1.0).abs() < 1e-9);
        assert!((outcome.ratio(remote, 0.5) - 3.0).abs() < 0.01);
        let json = outcome.to_json();
        assert_eq!(json["scenario"], "hops");
        let metrics = &json["metrics"];
        assert_eq!(metrics["local_samples"], 100);
        assert_eq!(metrics["owner_remote_hops"], 2);
        assert!((metrics["local_p50_us"].as_f64().unwrap() - 50.0).abs() < 0.1);
        assert!((metrics["owner_remote_p99_ratio"].as_f64().unwrap() - 3.0).abs() < 0.01);
        let table = outcome.table();
        assert!(table.contains("| local | 0 | 100 | 50.0 |"), "{table}");
        assert!(table.contains("| owner-remote | 2 | 100 |"), "{table}");
        assert!(table.contains("| 3.00x | 3.00x |"), "{table}");
        let machine = Machine {
            cpu: "test CPU".to_owned(),
            cores: 2,
            kernel: "6.1".to_owned(),
            commit: "abc".to_owned(),
            rustc: "rustc".to_owned(),
        };
        let section = outcome.render("shardcast-bench hops --url ws://127.0.0.1:1/", &machine);
        assert!(section.starts_with("## Cross-shard publish\n"));
        assert!(section.contains("the two shards and the generator share them"));
        assert!(section.ends_with("|\n\n"));
    }
}
