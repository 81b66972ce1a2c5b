//! `shardcast-bench fanout`: publish/subscribe load against one server.
//!
//! M subscribers join K rooms (subscriber i joins room i mod K), P
//! publishers on connections of their own publish S-byte payloads, and
//! every subscriber checks what it receives. A room protocol adapter
//! ([`RoomProtocol`]) speaks the server's pub/sub dialect.
//!
//! Publisher p publishes to the rooms r with r mod G = p mod G, where G
//! is the smaller of P and K: with one publisher, or one room, every
//! publisher publishes to every room; with fewer publishers than rooms
//! each room has one publisher (100 publishers over 1000 rooms: 10 rooms
//! each); with more publishers than rooms each publisher has one room.
//! Publishers subscribe to nothing: where the protocol makes them join
//! the rooms they publish to (shardcast-v1), they publish with
//! `exclude_self` and their joins are no subscriptions of the scenario.
//!
//! Two ways to load it:
//! - closed loop (the default): ANCHORS.md's broadcast method with
//!   separate publishers. In each round every publisher publishes one
//!   message to each of its rooms; the next round starts when every
//!   subscriber has every message of the round. This measures the most
//!   deliveries per second the server sustains.
//! - open loop (`--rate R`): publishes leave on a fixed schedule, R per
//!   second in total, spread over the publishers, each cycling over its
//!   rooms, whatever the deliveries do. Latency counts from the intended
//!   publish time, so a stall is not hidden (coordinated omission).
//!
//! Each payload carries its publisher, a sequence number per publisher
//! and room, and its publish time; subscribers record publish-to-delivery
//! latency in an HDR histogram and count lost, duplicated, late (out of
//! order) and corrupt messages. Any of those fails the run.
//!
//! The subscribers, and the closed loop's publishers, run on one
//! generator thread (one monoio runtime): the closed loop's round barrier
//! is then a plain counter and a waker, with no synchronization between
//! threads. The open loop's publishers run on a second thread, which
//! blocks until each publish is due: monoio's timer counts milliseconds,
//! too coarse for a latency measured in microseconds. Both threads go on
//! the `--cores` core. `generator_core_share` shows when the generator,
//! not the server, is the limit.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use serde_json::json;
use shardcast::CoreList;
use shardcast_proto::Client;
use shardcast_proto::deflate::Inflater;
use shardcast_proto::frame::{Decoder, DecoderConfig};

use crate::client::{self, Shared, Target, Timing, Window, XorShift, phase};
use crate::connections::SPARE_FDS;
use crate::cores;
use crate::echo::{DriverChoice, driver_name};
use crate::limits;
use crate::pacing;
use crate::room_protocol::{Inbound, Reader, RoomProtocol, Scratch};

/// Command line of `shardcast-bench fanout`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// The server: ws://HOST:PORT/PATH. A URL without a path means the
    /// protocol's default path (Socket.IO's is
    /// `/socket.io/?EIO=4&transport=websocket`).
    #[arg(long)]
    pub(crate) url: String,
    /// The server's pub/sub protocol.
    #[arg(long, value_enum)]
    pub(crate) protocol: RoomProtocol,
    /// Subscriber connections in total.
    #[arg(long, default_value_t = 100)]
    pub(crate) subscribers: usize,
    /// Rooms the subscribers are spread over (subscriber i joins room
    /// i mod K): 1 is one big room, more is "many small rooms".
    #[arg(long, default_value_t = 1)]
    pub(crate) rooms: usize,
    /// Publisher connections, subscribed to no room. Publisher p
    /// publishes to the rooms r with r mod G = p mod G, G the smaller of
    /// the publisher and room counts. With shardcast-v1 a publisher joins
    /// those rooms (the server takes publishes from members only) and
    /// publishes with `exclude_self`; with more publishers than rooms it
    /// then also receives, and ignores, the other publishers' messages.
    #[arg(long, default_value_t = 1)]
    pub(crate) publishers: usize,
    /// Payload bytes per message, at least 24 (publisher, sequence number
    /// and publish time, in ASCII).
    #[arg(long, default_value_t = 32)]
    pub(crate) size: usize,
    /// Publishes per second in total, on a fixed schedule (open loop);
    /// absent, each round of publishes waits for the last round's
    /// deliveries (closed loop).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Seconds of warm-up, not counted.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// The core to pin the generator's threads to (a list of one core);
    /// unpinned when absent.
    #[arg(long)]
    pub(crate) cores: Option<CoreList>,
    /// The generator's I/O driver: io_uring when the kernel allows it
    /// (`auto`), or one forced.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub(crate) driver: DriverChoice,
    /// The server's process id, to charge it CPU time per delivery.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Seconds every connection may take to connect, upgrade and join.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) connect_timeout: f64,
    /// Print the result as one JSON object on one line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Seconds the run waits, once publishing stops, for the deliveries still
/// on their way; what has not arrived by then is lost.
const DRAIN_SECONDS: f64 = 2.0;

/// The largest forward jump in one publisher's sequence numbers taken as
/// missing messages; a larger one is a corrupt payload.
const MAX_GAP: u64 = 1 << 20;

/// Latencies above this many nanoseconds (one minute) are recorded as it.
const MAX_LATENCY_NANOS: u64 = 60_000_000_000;

/// Runs `shardcast-bench fanout`: prints the result, and fails on an
/// invalid run after printing it.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
    let outcome = run(args)?;
    if args.json {
        println!("{}", outcome.to_json());
    } else {
        outcome.print_human();
    }
    outcome.check()
}

/// What one run measured, with the arguments it ran with.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// The arguments of the run.
    pub(crate) args: Args,
    /// The driver the generator's runtime used: `io_uring` or `legacy`.
    pub(crate) driver: &'static str,
    /// The clock: connecting, the measured window, CPU time in it.
    pub(crate) window: Window,
    /// Messages delivered to subscribers in the measured window.
    pub(crate) deliveries: u64,
    /// Messages published in the measured window.
    pub(crate) publishes: u64,
    /// Publish-to-delivery latency of the window's deliveries, nanoseconds.
    pub(crate) latency: Histogram<u64>,
    /// Deliveries due over the whole run that never arrived.
    pub(crate) lost: u64,
    /// Messages a subscriber received again.
    pub(crate) duplicates: u64,
    /// Messages that arrived after a later one of the same publisher.
    pub(crate) out_of_order: u64,
    /// Deliveries that were not a payload of this run.
    pub(crate) corrupt: u64,
    /// Connections that failed.
    pub(crate) failed: u64,
    /// The first failure, if any.
    pub(crate) first_error: Option<String>,
}

impl Outcome {
    /// Deliveries per second over the window.
    pub(crate) fn deliveries_per_second(&self) -> f64 {
        self.window.per_second(self.deliveries)
    }

    /// Publishes per second over the window.
    pub(crate) fn publishes_per_second(&self) -> f64 {
        self.window.per_second(self.publishes)
    }

    /// The latency at `quantile` (0 to 1), microseconds.
    pub(crate) fn latency_us(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1e3
    }

    /// The server's CPU per delivery, microseconds: (user + system, user).
    pub(crate) fn server_micros_per_delivery(&self) -> Option<(f64, f64)> {
        self.window.server_micros_per(self.deliveries)
    }

    /// Share of one core the server used, when its pid was given.
    pub(crate) fn server_core_share(&self) -> Option<f64> {
        self.window.server_core_share()
    }

    /// Share of one core this generator used.
    pub(crate) fn generator_core_share(&self) -> f64 {
        self.window.generator_core_share()
    }

    /// Fails unless every connection worked and every subscriber got every
    /// message once, in order and intact: a benchmark of a server that
    /// drops messages measures nothing.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let broken = self.lost
            + self.duplicates
            + self.out_of_order
            + self.corrupt
            + self.failed
            + self.window.stalled;
        if broken > 0 || self.deliveries == 0 {
            bail!(
                "invalid run: {} deliveries, {} lost, {} duplicated, {} out of order, {} corrupt, \
                 {} connections failed, {} never joined{}",
                self.deliveries,
                self.lost,
                self.duplicates,
                self.out_of_order,
                self.corrupt,
                self.failed,
                self.window.stalled,
                self.first_error
                    .as_ref()
                    .map(|error| format!("; first failure: {error}"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The result as JSON: `scenario`, `params` (every input), `metrics`
    /// (flat, numeric, units in the names; null when not measured) and
    /// `diagnostics` (the driver used, the first failure).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let args = &self.args;
        let server = self.server_micros_per_delivery();
        json!({
            "scenario": "fanout",
            "params": {
                "url": args.url,
                "protocol": args.protocol.name(),
                "subscribers": args.subscribers,
                "rooms": args.rooms,
                "publishers": args.publishers,
                "size": args.size,
                "mode": if args.rate.is_some() { "open-loop" } else { "closed-loop" },
                "rate_per_second": args.rate,
                "warmup_seconds": args.warmup,
                "duration_seconds": args.duration,
                "cores": args.cores.as_ref().map(ToString::to_string),
                "driver": args.driver.to_possible_value().map(|value| value.get_name().to_owned()),
                "server_pid": args.server_pid,
                "connect_timeout_seconds": args.connect_timeout,
            },
            "metrics": {
                "deliveries_per_second": self.deliveries_per_second(),
                "publishes_per_second": self.publishes_per_second(),
                "deliveries": self.deliveries,
                "publishes": self.publishes,
                "seconds": self.window.seconds,
                "connect_seconds": self.window.connect_seconds,
                "min_us": self.latency.min() as f64 / 1e3,
                "mean_us": self.latency.mean() / 1e3,
                "p50_us": self.latency_us(0.5),
                "p90_us": self.latency_us(0.9),
                "p99_us": self.latency_us(0.99),
                "p999_us": self.latency_us(0.999),
                "max_us": self.latency.max() as f64 / 1e3,
                "server_micros_per_delivery": server.map(|(total, _)| total),
                "server_user_micros_per_delivery": server.map(|(_, user)| user),
                "server_core_share": self.server_core_share(),
                "generator_core_share": self.generator_core_share(),
                "lost": self.lost,
                "duplicates": self.duplicates,
                "out_of_order": self.out_of_order,
                "corrupt": self.corrupt,
                "failed_connections": self.failed,
                "stalled_connections": self.window.stalled,
            },
            "diagnostics": {
                "driver": self.driver,
                "first_error": self.first_error,
            },
        })
    }

    /// Prints the result for a person.
    pub(crate) fn print_human(&self) {
        let args = &self.args;
        let mode = match args.rate {
            Some(rate) => format!("open loop at {rate:.0} publishes/s"),
            None => "closed loop".to_owned(),
        };
        println!(
            "{}: {} subscribers in {} room(s), {} publisher(s), {} B, {mode}, {} driver",
            args.protocol.name(),
            args.subscribers,
            args.rooms,
            args.publishers,
            args.size,
            self.driver
        );
        println!(
            "{:.0} deliveries/s, {:.0} publishes/s over {:.2} s",
            self.deliveries_per_second(),
            self.publishes_per_second(),
            self.window.seconds
        );
        println!(
            "latency µs: p50 {:.0}, p90 {:.0}, p99 {:.0}, p99.9 {:.0}, max {:.0}",
            self.latency_us(0.5),
            self.latency_us(0.9),
            self.latency_us(0.99),
            self.latency_us(0.999),
            self.latency.max() as f64 / 1e3
        );
        println!(
            "{} lost, {} duplicated, {} out of order, {} corrupt, {} failed connections",
            self.lost, self.duplicates, self.out_of_order, self.corrupt, self.failed
        );
        if let (Some((total, user)), Some(share)) =
            (self.server_micros_per_delivery(), self.server_core_share())
        {
            println!(
                "server CPU per delivery: {total:.2} µs (user {user:.2} µs), {:.0}% of a core",
                share * 100.0
            );
        }
        println!(
            "generator CPU: {:.0}% of a core",
            self.generator_core_share() * 100.0
        );
    }
}

/// Runs the load described by `args` and returns what it measured.
pub(crate) fn run(args: &Args) -> anyhow::Result<Outcome> {
    check_args(args)?;
    let core = match &args.cores {
        Some(cores) => {
            cores::check_available(cores.as_slice())?;
            match cores.as_slice() {
                [core] => Some(*core),
                _ => bail!("fanout pins its generator threads to one core: give --cores one core"),
            }
        }
        None => None,
    };
    let mut target = Target::parse(&args.url)?;
    if target.path == "/" {
        args.protocol.default_path().clone_into(&mut target.path);
    }
    let connections = args.subscribers + args.publishers;
    // A socket per connection, and a few descriptors more for the runtimes
    // and /proc: refused up front rather than met as failed connections.
    let needed = connections as u64 + SPARE_FDS;
    let nofile = limits::raise_nofile(needed)?;
    if nofile.after.soft < needed {
        bail!(
            "{connections} connections need {needed} file descriptors and RLIMIT_NOFILE allows {}: {}",
            nofile.after.soft,
            nofile.short.unwrap_or_default()
        );
    }
    let shared = Arc::new(Shared::default());
    let ledger = Arc::new(Ledger::new(args, Arc::clone(&shared)));
    let start = Instant::now();
    let mut rng = XorShift::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64),
    );

    let subscribers = {
        let (ledger, target, seed) = (Arc::clone(&ledger), target.clone(), rng.next());
        let (driver, closed_loop) = (args.driver, args.rate.is_none());
        thread::Builder::new()
            .name("fanout-subscribers".to_owned())
            .spawn(move || subscribers_thread(ledger, driver, core, target, closed_loop, seed))
            .context("starting the subscribers' thread")?
    };
    let publishers = match args.rate {
        Some(rate) => {
            ledger.publishing.store(true, Ordering::Release);
            let (ledger, seed, driver) = (Arc::clone(&ledger), rng.next(), args.driver);
            let thread = thread::Builder::new()
                .name("fanout-publishers".to_owned())
                .spawn(move || publishers_thread(ledger, driver, core, target, rate, seed))
                .context("starting the publishers' thread")?;
            Some(thread)
        }
        None => None,
    };

    let window = shared.run_clock(
        start,
        &Timing {
            connections,
            connect_timeout: args.connect_timeout,
            warmup: args.warmup,
            duration: args.duration,
            server_pid: args.server_pid,
        },
    )?;
    if let Some(publishers) = publishers {
        publishers
            .join()
            .map_err(|_| anyhow::anyhow!("the publishers' thread panicked"))??;
    }
    let tally = subscribers
        .join()
        .map_err(|_| anyhow::anyhow!("the subscribers' thread panicked"))??;
    let first_error = ledger
        .first_error
        .lock()
        .ok()
        .and_then(|mut first| first.take());
    Ok(Outcome {
        args: args.clone(),
        driver: tally.driver,
        window,
        deliveries: tally.deliveries,
        publishes: ledger.publishes.load(Ordering::Relaxed),
        latency: tally.latency,
        lost: ledger.expected().saturating_sub(tally.received),
        duplicates: tally.duplicates,
        out_of_order: tally.out_of_order,
        corrupt: tally.corrupt,
        failed: ledger.failed.load(Ordering::Relaxed),
        first_error,
    })
}

/// Refuses arguments the scenario cannot run with.
fn check_args(args: &Args) -> anyhow::Result<()> {
    if !(args.warmup >= 0.0 && args.duration > 0.0) {
        bail!("warm-up must be at least 0 s and the measured window longer than 0 s");
    }
    if args.subscribers == 0 || args.rooms == 0 || args.rooms > args.subscribers {
        bail!("give at least one subscriber, and from 1 room to one room per subscriber");
    }
    if args.publishers == 0 || args.publishers > 1 << (4 * PUBLISHER_DIGITS) {
        bail!("give from 1 to 65536 publishers");
    }
    if args.size < HEADER {
        bail!("payloads carry a {HEADER}-byte header: --size must be at least {HEADER}");
    }
    if args
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
    {
        bail!("--rate must be a positive number of publishes per second");
    }
    Ok(())
}

/// What the subscribers' thread measured.
struct Tally {
    /// The driver the runtime used: `io_uring` or `legacy`.
    driver: &'static str,
    /// Deliveries in the measured window.
    deliveries: u64,
    /// Latency of the window's deliveries, nanoseconds.
    latency: Histogram<u64>,
    /// Messages received once, over the whole run.
    received: u64,
    /// Messages received again.
    duplicates: u64,
    /// Messages that arrived after a later one of the same publisher.
    out_of_order: u64,
    /// Deliveries that were not a payload of this run.
    corrupt: u64,
}

/// The subscribers' thread: every subscriber, and the publishers of the
/// closed loop, on one monoio runtime until the run is over and the
/// deliveries still due have arrived or the drain time ran out.
fn subscribers_thread(
    ledger: Arc<Ledger>,
    driver: DriverChoice,
    core: Option<usize>,
    target: Target,
    closed_loop: bool,
    seed: u64,
) -> anyhow::Result<Tally> {
    let runtime = core
        .map_or(Ok(()), cores::pin_current_thread)
        .and_then(|()| driver.build());
    let mut runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            // No connection will start: the clock must not wait for them.
            let connections = ledger.subscribers + ledger.publishers;
            ledger
                .shared
                .failed
                .fetch_add(connections, Ordering::Relaxed);
            return Err(error);
        }
    };
    let state = Rc::new(Fanout::new(ledger, closed_loop)?);
    let target = Rc::new(target);
    let main = {
        let state = Rc::clone(&state);
        async move {
            let ledger = &state.ledger;
            let mut rng = XorShift::new(seed);
            for index in 0..ledger.subscribers {
                let (state, target, seed) = (Rc::clone(&state), Rc::clone(&target), rng.next());
                monoio::spawn(async move {
                    let result = subscriber(&state, index, &target, seed).await;
                    state.ledger.settle(result);
                });
            }
            if closed_loop {
                for index in 0..ledger.publishers {
                    let (state, target, seed) = (Rc::clone(&state), Rc::clone(&target), rng.next());
                    monoio::spawn(async move {
                        let result = closed_loop_publisher(&state, index, &target, seed).await;
                        state.ledger.settle(result);
                    });
                }
            }
            // The clock runs on the calling thread; a check every 10 ms
            // costs the generator next to nothing.
            while ledger.phase() != phase::DONE {
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
            let drained = Instant::now() + Duration::from_secs_f64(DRAIN_SECONDS);
            while (ledger.publishing.load(Ordering::Acquire)
                || state.received.get() < ledger.expected())
                && Instant::now() < drained
            {
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let driver = driver_name(&runtime);
    runtime.block_on(main);
    let tally = Tally {
        driver,
        deliveries: state.deliveries.get(),
        latency: state.latency.borrow().clone(),
        received: state.received.get(),
        duplicates: state.duplicates.get(),
        out_of_order: state.out_of_order.get(),
        corrupt: state.corrupt.get(),
    };
    // The connections still open are dropped with the runtime.
    drop(runtime);
    Ok(tally)
}

/// The open loop's publisher thread: every publisher on a monoio runtime
/// of its own, so that the schedule can be kept to the microsecond by
/// blocking the thread (monoio's timer counts milliseconds).
fn publishers_thread(
    ledger: Arc<Ledger>,
    driver: DriverChoice,
    core: Option<usize>,
    target: Target,
    rate: f64,
    seed: u64,
) -> anyhow::Result<()> {
    let runtime = core
        .map_or(Ok(()), cores::pin_current_thread)
        .and_then(|()| driver.build());
    let mut runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            ledger.publishing.store(false, Ordering::Release);
            ledger
                .shared
                .failed
                .fetch_add(ledger.publishers, Ordering::Relaxed);
            return Err(error);
        }
    };
    let clock = Arc::clone(&ledger);
    runtime.block_on(async move {
        monoio::spawn(open_loop_publishers(
            Arc::clone(&clock),
            Rc::new(target),
            rate,
            seed,
        ));
        // A publisher stuck connecting must not keep the run from ending.
        while clock.phase() != phase::DONE {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // The publishing task never runs again.
    drop(runtime);
    ledger.publishing.store(false, Ordering::Release);
    Ok(())
}
/// Hex digits of the publisher's index at the start of a payload.
const PUBLISHER_DIGITS: usize = 4;
/// Hex digits of the sequence number, after the publisher's.
const SEQ_DIGITS: usize = 8;
/// Hex digits of the publish time, nanoseconds since the run's epoch
/// (78 hours before they wrap), after the sequence number.
const STAMP_DIGITS: usize = 12;
/// The header of every payload: publisher, sequence number (per publisher
/// and room; 2^32 of them), publish time, in lowercase hex. The rest of
/// the payload is a fixed lowercase pattern, so payloads are ASCII and
/// travel as text too.
const HEADER: usize = PUBLISHER_DIGITS + SEQ_DIGITS + STAMP_DIGITS;

/// What a payload's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    /// The publisher's index.
    publisher: usize,
    /// The message's number among the publisher's to its room.
    seq: u64,
    /// When it was published (open loop: due), nanoseconds since the epoch.
    nanos: u64,
}

/// The filler byte at `index` of every payload.
fn filler(index: usize) -> u8 {
    b'a' + (index * 7 % 26) as u8
}

/// A payload of `size` bytes with an empty header, for [`write_stamp`].
fn payload_template(size: usize) -> Vec<u8> {
    (0..size).map(filler).collect()
}

/// Writes `stamp` into the header of `payload`.
fn write_stamp(payload: &mut [u8], stamp: Stamp) {
    let (publisher, rest) = payload[..HEADER].split_at_mut(PUBLISHER_DIGITS);
    let (seq, nanos) = rest.split_at_mut(SEQ_DIGITS);
    put_hex(publisher, stamp.publisher as u64);
    put_hex(seq, stamp.seq);
    put_hex(nanos, stamp.nanos);
}

/// Reads the stamp of `payload`; `None` unless it has the run's size,
/// a well-formed header and the filler intact.
fn read_stamp(payload: &[u8], size: usize) -> Option<Stamp> {
    if payload.len() != size
        || payload
            .iter()
            .enumerate()
            .skip(HEADER)
            .any(|(index, &byte)| byte != filler(index))
    {
        return None;
    }
    let (publisher, rest) = payload[..HEADER].split_at(PUBLISHER_DIGITS);
    let (seq, nanos) = rest.split_at(SEQ_DIGITS);
    Some(Stamp {
        publisher: usize::try_from(hex_value(publisher)?).ok()?,
        seq: hex_value(seq)?,
        nanos: hex_value(nanos)?,
    })
}

/// Writes the low digits of `value` in lowercase hex over all of `digits`.
fn put_hex(digits: &mut [u8], value: u64) {
    for (shift, digit) in digits.iter_mut().rev().enumerate() {
        let nibble = (value >> (4 * shift)) & 0xf;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
}

/// The value of lowercase hex `digits`; `None` for any other byte.
fn hex_value(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u64::from(nibble))
    })
}

/// What a subscriber has received from each publisher.
#[derive(Debug)]
struct Track {
    /// The sequence number expected next, per publisher.
    next: Vec<u64>,
    /// (publisher, sequence number) skipped and not yet received.
    gaps: Vec<(usize, u64)>,
}

/// How a delivery fits what a subscriber had received.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The next message, or one after a gap.
    InOrder,
    /// A message that had been skipped, arriving after a later one.
    Late,
    /// A message received before.
    Duplicate,
    /// A header naming no publisher of the run, or too far a jump.
    Corrupt,
}

impl Track {
    /// Nothing received yet from any of `publishers`.
    fn new(publishers: usize) -> Track {
        Track {
            next: vec![0; publishers],
            gaps: Vec::new(),
        }
    }

    /// Takes message `seq` of `publisher` into account.
    fn accept(&mut self, publisher: usize, seq: u64) -> Verdict {
        let Some(next) = self.next.get_mut(publisher) else {
            return Verdict::Corrupt;
        };
        if seq == *next {
            *next += 1;
            Verdict::InOrder
        } else if seq > *next {
            if seq - *next > MAX_GAP {
                return Verdict::Corrupt;
            }
            self.gaps
                .extend((*next..seq).map(|skipped| (publisher, skipped)));
            *next = seq + 1;
            Verdict::InOrder
        } else if let Some(at) = self.gaps.iter().position(|&gap| gap == (publisher, seq)) {
            self.gaps.swap_remove(at);
            Verdict::Late
        } else {
            Verdict::Duplicate
        }
    }
}

/// What every thread of the generator shares: the run's shape, what was
/// published, the connections ready and the failures.
struct Ledger {
    /// The server's pub/sub protocol.
    protocol: RoomProtocol,
    /// Payload bytes per message.
    size: usize,
    /// Subscriber connections.
    subscribers: usize,
    /// Publisher connections.
    publishers: usize,
    /// Room names, `r0`, `r1`, ...
    rooms: Vec<String>,
    /// Subscribers per room.
    room_sizes: Vec<u64>,
    /// How the rooms are shared out among the publishers: publisher p
    /// publishes to the rooms r with r mod `groups` = p mod `groups`.
    /// The smaller of the publisher and room counts.
    groups: usize,
    /// Deliveries of one closed-loop round: one message of each
    /// publisher to each of its rooms, to every subscriber there.
    round_deliveries: u64,
    /// Where publish times count from.
    epoch: Instant,
    /// The run's phase and connection counts, shared with the clock.
    shared: Arc<Shared>,
    /// Connections ready: subscribers joined, publishers connected.
    ready: AtomicUsize,
    /// When every connection was ready, nanoseconds since the epoch plus
    /// one; 0 before.
    started: AtomicU64,
    /// Whether the open loop's publishers' thread may still publish: the
    /// subscribers' thread waits for it before it counts what is due.
    publishing: AtomicBool,
    /// Messages published, per publisher and room (`publisher * rooms +
    /// room`): the next sequence number of each.
    published: Vec<AtomicU64>,
    /// Publishes in the measured window.
    publishes: AtomicU64,
    /// Connections that failed before the run was over.
    failed: AtomicU64,
    /// The first failure's description.
    first_error: Mutex<Option<String>>,
}

impl Ledger {
    /// The ledger of a run of `args`, nothing published yet.
    fn new(args: &Args, shared: Arc<Shared>) -> Ledger {
        let rooms = args.rooms;
        let room_size =
            |room: usize| args.subscribers / rooms + usize::from(room < args.subscribers % rooms);
        let groups = args.publishers.min(rooms);
        // Room r has the publishers p < P with p mod G = r mod G.
        let round_deliveries = (0..rooms)
            .map(|room| {
                let publishers = (args.publishers - room % groups).div_ceil(groups);
                (publishers * room_size(room)) as u64
            })
            .sum();
        Ledger {
            protocol: args.protocol,
            size: args.size,
            subscribers: args.subscribers,
            publishers: args.publishers,
            rooms: (0..rooms).map(|room| format!("r{room}")).collect(),
            room_sizes: (0..rooms).map(|room| room_size(room) as u64).collect(),
            groups,
            round_deliveries,
            epoch: Instant::now(),
            shared,
            ready: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            publishing: AtomicBool::new(false),
            published: (0..args.publishers * rooms)
                .map(|_| AtomicU64::new(0))
                .collect(),
            publishes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// The run's current phase (see [`phase`]).
    fn phase(&self) -> u8 {
        self.shared.phase.load(Ordering::Relaxed)
    }

    /// Nanoseconds since the epoch.
    fn nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Deliveries due for everything published so far.
    fn expected(&self) -> u64 {
        self.published
            .iter()
            .enumerate()
            .map(|(index, count)| {
                count.load(Ordering::Acquire) * self.room_sizes[index % self.rooms.len()]
            })
            .sum()
    }

    /// Counts a connection ready; returns whether it was the last, which
    /// starts the run.
    fn connection_ready(&self) -> bool {
        self.shared.upgraded.fetch_add(1, Ordering::Relaxed);
        let ready = self.ready.fetch_add(1, Ordering::AcqRel) + 1;
        let last = ready == self.subscribers + self.publishers;
        if last {
            self.started.store(self.nanos() + 1, Ordering::Release);
        }
        last
    }

    /// The rooms publisher `publisher` publishes to, in order.
    fn rooms_of(&self, publisher: usize) -> std::iter::StepBy<std::ops::Range<usize>> {
        (publisher % self.groups..self.rooms.len()).step_by(self.groups)
    }

    /// The room of publisher `publisher`'s publish number `nth`: its
    /// rooms in turn.
    fn publisher_room(&self, publisher: usize, nth: u64) -> usize {
        let first = publisher % self.groups;
        let count = (self.rooms.len() - first).div_ceil(self.groups);
        first + (nth % count as u64) as usize * self.groups
    }

    /// When every connection was ready, nanoseconds since the epoch.
    fn started(&self) -> Option<u64> {
        self.started.load(Ordering::Acquire).checked_sub(1)
    }

    /// Records a connection's end: a failure, unless the run was over.
    fn settle(&self, result: anyhow::Result<()>) {
        if let Err(error) = result {
            if self.phase() != phase::DONE {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| format!("{error:#}"));
                }
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Appends a publish of the next message of `publisher` to `room`,
    /// stamped `nanos`, to the publisher's buffers.
    fn push_publish(
        &self,
        publisher: usize,
        room: usize,
        nanos: u64,
        buffers: &mut PublishBuffers,
        rng: &mut XorShift,
    ) {
        let count = &self.published[publisher * self.rooms.len() + room];
        // Only this publisher's task counts its messages.
        let seq = count.load(Ordering::Relaxed);
        write_stamp(
            &mut buffers.payload,
            Stamp {
                publisher,
                seq,
                nanos,
            },
        );
        self.protocol.publish(
            &mut buffers.out,
            &mut buffers.scratch,
            &self.rooms[room],
            &buffers.payload,
            rng,
        );
        count.store(seq + 1, Ordering::Release);
        if self.phase() == phase::MEASURING {
            self.publishes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the subscribers' thread keeps: the closed loop's round barrier
/// and what arrived.
struct Fanout {
    /// What every thread shares.
    ledger: Arc<Ledger>,
    /// Whether rounds pace the publishers (no `--rate`).
    closed_loop: bool,
    /// The closed loop's round; 0 until every connection is ready, which
    /// starts round 1.
    round: Cell<u64>,
    /// Deliveries the current round still waits for.
    remaining: Cell<u64>,
    /// Each publisher's waker while it waits for the next round.
    wakers: RefCell<Vec<Option<Waker>>>,
    /// Deliveries in the measured window.
    deliveries: Cell<u64>,
    /// Messages received once, over the whole run.
    received: Cell<u64>,
    /// Messages received again.
    duplicates: Cell<u64>,
    /// Messages that arrived after a later one of the same publisher.
    out_of_order: Cell<u64>,
    /// Deliveries that were not a payload of this run.
    corrupt: Cell<u64>,
    /// Latency of the window's deliveries, nanoseconds.
    latency: RefCell<Histogram<u64>>,
}

impl Fanout {
    /// The subscribers' state of a run, before any connection.
    fn new(ledger: Arc<Ledger>, closed_loop: bool) -> anyhow::Result<Fanout> {
        let publishers = ledger.publishers;
        Ok(Fanout {
            ledger,
            closed_loop,
            round: Cell::new(0),
            remaining: Cell::new(0),
            wakers: RefCell::new(vec![None; publishers]),
            deliveries: Cell::new(0),
            received: Cell::new(0),
            duplicates: Cell::new(0),
            out_of_order: Cell::new(0),
            corrupt: Cell::new(0),
            latency: RefCell::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3)
                    .context("creating the latency histogram")?,
            ),
        })
    }

    /// Counts a connection of this thread ready; in the closed loop, the
    /// last one starts the first round.
    fn connection_ready(&self) {
        if self.ledger.connection_ready() && self.closed_loop {
            self.next_round();
        }
    }

    /// Starts the next round, waiting for one message of each publisher
    /// per subscriber, and wakes every publisher.
    fn next_round(&self) {
        self.round.set(self.round.get() + 1);
        self.remaining.set(self.ledger.round_deliveries);
        for waker in self.wakers.borrow_mut().iter_mut() {
            if let Some(waker) = waker.take() {
                waker.wake();
            }
        }
    }

    /// Waits until a round later than `after` has started; returns it.
    fn wait_round(&self, publisher: usize, after: u64) -> RoundWait<'_> {
        RoundWait {
            fanout: self,
            publisher,
            after,
        }
    }

    /// Takes a delivery to a subscriber, received at `now`, into account.
    fn deliver(&self, track: &mut Track, payload: &[u8], now: u64) {
        let Some(stamp) = read_stamp(payload, self.ledger.size) else {
            self.corrupt.set(self.corrupt.get() + 1);
            return;
        };
        match track.accept(stamp.publisher, stamp.seq) {
            Verdict::InOrder => {}
            Verdict::Late => self.out_of_order.set(self.out_of_order.get() + 1),
            Verdict::Duplicate => {
                self.duplicates.set(self.duplicates.get() + 1);
                return;
            }
            Verdict::Corrupt => {
                self.corrupt.set(self.corrupt.get() + 1);
                return;
            }
        }
        self.received.set(self.received.get() + 1);
        if self.ledger.phase() == phase::MEASURING {
            self.deliveries.set(self.deliveries.get() + 1);
            let latency = now.saturating_sub(stamp.nanos).max(1);
            self.latency.borrow_mut().saturating_record(latency);
        }
        if self.closed_loop {
            let remaining = self.remaining.get().saturating_sub(1);
            self.remaining.set(remaining);
            if remaining == 0 {
                self.next_round();
            }
        }
    }
}

/// A publisher waiting for the next closed-loop round (see
/// [`Fanout::wait_round`]).
struct RoundWait<'a> {
    /// Whose round it is.
    fanout: &'a Fanout,
    /// The waiting publisher's index, where its waker goes.
    publisher: usize,
    /// The round the publisher has published in.
    after: u64,
}

impl Future for RoundWait<'_> {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<u64> {
        let round = self.fanout.round.get();
        if round > self.after {
            Poll::Ready(round)
        } else {
            self.fanout.wakers.borrow_mut()[self.publisher] = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// A publisher's buffers, reused for every publish.
struct PublishBuffers {
    /// The payload, its header rewritten for each message.
    payload: Vec<u8>,
    /// The protocol's working space.
    scratch: Scratch,
    /// Frames waiting to be written.
    out: Vec<u8>,
}

impl PublishBuffers {
    /// Buffers for payloads of `size` bytes.
    fn new(size: usize) -> PublishBuffers {
        PublishBuffers {
            payload: payload_template(size),
            scratch: Scratch::default(),
            out: Vec::with_capacity(64 * 1024),
        }
    }
}

/// Connects, upgrades and opens the protocol's session; returns the
/// stream and the bytes read after the opening.
async fn open(
    ledger: &Ledger,
    target: &Target,
    rng: &mut XorShift,
) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect_addr(target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true)?;
    let leftover =
        client::handshake(&mut stream, target, ledger.protocol.subprotocol(), rng).await?;
    let leftover = ledger.protocol.open(&mut stream, leftover, rng).await?;
    Ok((stream, leftover))
}

/// Subscriber `index`: joins its room, then takes in deliveries until the
/// runtime is dropped.
async fn subscriber(
    state: &Fanout,
    index: usize,
    target: &Target,
    seed: u64,
) -> anyhow::Result<()> {
    let ledger = &state.ledger;
    let mut rng = XorShift::new(seed);
    let (mut stream, leftover) = open(ledger, target, &mut rng).await?;
    let mut outgoing = Vec::with_capacity(4096);
    let room = &ledger.rooms[index % ledger.rooms.len()];
    // The working space is needed for the join alone.
    ledger
        .protocol
        .join(&mut outgoing, &mut Scratch::default(), room, 0, &mut rng);
    let mut reader = Reader::subscriber(ledger.protocol, room);
    let mut track = Track::new(ledger.publishers);
    let mut decoder = Decoder::<Client>::new(DecoderConfig::DEFAULT);
    let mut inflater = Inflater::new();
    let mut incoming = leftover;
    incoming.reserve(64 * 1024);
    let mut joined = false;
    loop {
        let now = ledger.nanos();
        let filled = incoming.len();
        let mut offset = 0;
        while offset < filled {
            let (used, message) = decoder.decode(&mut incoming[offset..filled], &mut inflater)?;
            offset += used;
            let Some(message) = message else {
                continue;
            };
            reader.read(message, &mut outgoing, &mut rng, |inbound| {
                match inbound {
                    Inbound::Joined if !joined => {
                        joined = true;
                        state.connection_ready();
                    }
                    Inbound::Joined => bail!("the server confirmed a join twice"),
                    Inbound::Delivery(_) if !joined => bail!("a delivery came before the join"),
                    Inbound::Delivery(payload) => state.deliver(&mut track, payload, now),
                }
                Ok(())
            })?;
        }
        if !outgoing.is_empty() {
            let (result, buf) = stream.write_all(outgoing).await;
            result.context("sending")?;
            outgoing = buf;
            outgoing.clear();
        }
        incoming.clear();
        let (result, buf) = stream.read(incoming).await;
        incoming = buf;
        if result.context("receiving")? == 0 {
            bail!("the server closed the TCP connection");
        }
    }
}

/// A publisher's connection, its writing half: what the server sends it
/// is read by a task of its own ([`publisher_reads`]), which queues any
/// answer (pongs) in `control`, written with the next publishes.
struct PublisherConnection {
    /// Where the publishes go.
    writer: OwnedWriteHalf<TcpStream>,
    /// Answers queued by the reading task, sent with the next write.
    control: Rc<RefCell<Vec<u8>>>,
    /// The publisher's buffers.
    buffers: PublishBuffers,
    /// Masking keys for its frames.
    rng: XorShift,
}

impl PublisherConnection {
    /// Connects publisher `index`'s connection, with masking keys from
    /// `seed`, joins its rooms if the protocol wants that of publishers,
    /// and starts its reading task, whose failure counts as a failed
    /// connection.
    async fn open(
        ledger: &Arc<Ledger>,
        target: &Target,
        index: usize,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let mut rng = XorShift::new(seed);
        let (mut stream, mut leftover) = open(ledger, target, &mut rng).await?;
        let mut buffers = PublishBuffers::new(ledger.size);
        if ledger.protocol.publishers_join() {
            leftover =
                join_rooms(ledger, index, &mut stream, leftover, &mut buffers, &mut rng).await?;
        }
        let (reader, writer) = stream.into_split();
        let control = Rc::new(RefCell::new(Vec::new()));
        {
            let (ledger, control) = (Arc::clone(ledger), Rc::clone(&control));
            let rng = XorShift::new(rng.next());
            monoio::spawn(async move {
                let result =
                    publisher_reads(ledger.protocol, reader, leftover, &control, rng).await;
                ledger.settle(result);
            });
        }
        Ok(PublisherConnection {
            writer,
            control,
            buffers,
            rng,
        })
    }

    /// Writes the publishes queued in the buffers, and the answers the
    /// reading task queued.
    async fn flush(&mut self) -> anyhow::Result<()> {
        let out = &mut self.buffers.out;
        out.extend_from_slice(&self.control.borrow());
        self.control.borrow_mut().clear();
        if !out.is_empty() {
            let (result, buf) = self.writer.write_all(std::mem::take(out)).await;
            result.context("publishing")?;
            *out = buf;
            out.clear();
        }
        Ok(())
    }
}

/// Joins publisher `index` to the rooms it publishes to, on `stream`
/// before it is split, and waits until the server has confirmed every
/// join; returns the bytes read after the message that confirmed the
/// last, for the reading task. `leftover` holds the bytes read after the
/// session's opening.
async fn join_rooms(
    ledger: &Ledger,
    index: usize,
    stream: &mut TcpStream,
    leftover: Vec<u8>,
    buffers: &mut PublishBuffers,
    rng: &mut XorShift,
) -> anyhow::Result<Vec<u8>> {
    let mut outgoing = std::mem::take(&mut buffers.out);
    let mut wanted = 0;
    for room in ledger.rooms_of(index) {
        let name = &ledger.rooms[room];
        // A room's index is unique among this connection's joins.
        ledger
            .protocol
            .join(&mut outgoing, &mut buffers.scratch, name, room as u64, rng);
        wanted += 1;
    }
    let mut reader = Reader::publisher(ledger.protocol);
    let mut decoder = Decoder::<Client>::new(DecoderConfig::DEFAULT);
    let mut inflater = Inflater::new();
    let mut incoming = leftover;
    incoming.reserve(4096);
    let mut joined = 0;
    loop {
        if !outgoing.is_empty() {
            let (result, buf) = stream.write_all(outgoing).await;
            result.context("joining the publisher's rooms")?;
            outgoing = buf;
            outgoing.clear();
        }
        let filled = incoming.len();
        let mut offset = 0;
        while offset < filled && joined < wanted {
            let (used, message) = decoder.decode(&mut incoming[offset..filled], &mut inflater)?;
            offset += used;
            let Some(message) = message else {
                continue;
            };
            // Other publishers' messages to these rooms are ignored.
            reader.read(message, &mut outgoing, rng, |inbound| {
                joined += usize::from(inbound == Inbound::Joined);
                Ok(())
            })?;
        }
        if joined == wanted {
            // The decoder stopped at a message's end: the rest is whole
            // frames or the start of one, for the reading task's decoder.
            let rest = incoming[offset..filled].to_vec();
            // Pongs still to send go out with the first publishes.
            buffers.out = outgoing;
            return Ok(rest);
        }
        incoming.clear();
        let (result, buf) = stream.read(incoming).await;
        incoming = buf;
        if result.context("receiving the publisher's joins")? == 0 {
            bail!("the server closed the TCP connection");
        }
    }
}

/// Closed-loop publisher `index`: in each round, one message to each of
/// its rooms, then it waits for the next round, until the run is over.
async fn closed_loop_publisher(
    state: &Fanout,
    index: usize,
    target: &Target,
    seed: u64,
) -> anyhow::Result<()> {
    let ledger = &state.ledger;
    let mut connection = PublisherConnection::open(ledger, target, index, seed).await?;
    state.connection_ready();
    let mut round = state.wait_round(index, 0).await;
    while ledger.phase() != phase::DONE {
        let now = ledger.nanos();
        for room in ledger.rooms_of(index) {
            let PublisherConnection { buffers, rng, .. } = &mut connection;
            ledger.push_publish(index, room, now, buffers, rng);
        }
        connection.flush().await?;
        round = state.wait_round(index, round).await;
    }
    Ok(())
}

/// The open loop's publishers: publish i is due at start + i / rate, from
/// publisher i mod P, each publisher taking its rooms in turn; each is
/// stamped with its due time, so a late publish counts in the latency.
async fn open_loop_publishers(ledger: Arc<Ledger>, target: Rc<Target>, rate: f64, seed: u64) {
    let mut rng = XorShift::new(seed);
    let mut connections = Vec::with_capacity(ledger.publishers);
    for index in 0..ledger.publishers {
        match PublisherConnection::open(&ledger, &target, index, rng.next()).await {
            Ok(connection) => {
                ledger.connection_ready();
                connections.push(connection);
            }
            Err(error) => ledger.settle(Err(error)),
        }
    }
    let start = loop {
        if let Some(start) = ledger.started() {
            break start;
        }
        if ledger.phase() == phase::DONE {
            return;
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    };
    let publishers = ledger.publishers as u64;
    let period = 1e9 / rate;
    let mut sent = 0u64;
    while ledger.phase() != phase::DONE {
        let due = start + (sent as f64 * period) as u64;
        // Blocking is right on the publishers' thread: until then it has
        // nothing to do but read pings, whose answers wait for the next
        // write anyway.
        pacing::wait_until(due, || ledger.nanos());
        if ledger.phase() == phase::DONE {
            return;
        }
        let publisher = (sent % publishers) as usize;
        let room = ledger.publisher_room(publisher, sent / publishers);
        let connection = &mut connections[publisher];
        let PublisherConnection { buffers, rng, .. } = connection;
        ledger.push_publish(publisher, room, due, buffers, rng);
        if let Err(error) = connection.flush().await {
            ledger.settle(Err(error));
            return;
        }
        sent += 1;
    }
}

/// Reads what the server sends a publisher, which subscribed to no room:
/// only pings (answered through `control`) are expected, and, with a
/// protocol whose publishers join their rooms, the other publishers'
/// messages to those rooms, ignored.
async fn publisher_reads(
    protocol: RoomProtocol,
    mut reader: OwnedReadHalf<TcpStream>,
    leftover: Vec<u8>,
    control: &RefCell<Vec<u8>>,
    mut rng: XorShift,
) -> anyhow::Result<()> {
    let mut room_reader = Reader::publisher(protocol);
    let mut decoder = Decoder::<Client>::new(DecoderConfig::DEFAULT);
    let mut inflater = Inflater::new();
    let mut incoming = leftover;
    incoming.reserve(4096);
    loop {
        let filled = incoming.len();
        let mut offset = 0;
        while offset < filled {
            let (used, message) = decoder.decode(&mut incoming[offset..filled], &mut inflater)?;
            offset += used;
            let Some(message) = message else {
                continue;
            };
            room_reader.read(
                message,
                &mut control.borrow_mut(),
                &mut rng,
                |inbound| match inbound {
                    Inbound::Delivery(_) if protocol.publishers_join() => Ok(()),
                    other => bail!("a publisher received {other:?}"),
                },
            )?;
        }
        incoming.clear();
        let (result, buf) = reader.read(incoming).await;
        incoming = buf;
        if result.context("receiving")? == 0 {
            bail!("the server closed the TCP connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_through_payloads() {
        for size in [HEADER, 32, 1000] {
            let mut payload = payload_template(size);
            let stamp = Stamp {
                publisher: 0xbeef,
                seq: 0x1234_5678,
                nanos: 0xabc_def0_1234,
            };
            write_stamp(&mut payload, stamp);
            assert!(payload.is_ascii());
            assert_eq!(read_stamp(&payload, size), Some(stamp));
            assert_eq!(read_stamp(&payload, size + 1), None);
            let mut altered = payload.clone();
            if size > HEADER {
                *altered.last_mut().unwrap() ^= 1;
                assert_eq!(read_stamp(&altered, size), None);
                altered = payload.clone();
            }
            altered[0] = b'G';
            assert_eq!(read_stamp(&altered, size), None);
        }
    }

    /// The arguments of a run of `subscribers` over `rooms` rooms with
    /// `publishers` publishers.
    fn args(subscribers: usize, rooms: usize, publishers: usize) -> Args {
        Args {
            url: "ws://127.0.0.1:9000".to_owned(),
            protocol: RoomProtocol::ShardcastV1,
            subscribers,
            rooms,
            publishers,
            size: 32,
            rate: None,
            warmup: 0.0,
            duration: 1.0,
            cores: None,
            driver: DriverChoice::Auto,
            server_pid: None,
            connect_timeout: 1.0,
            json: false,
        }
    }

    #[test]
    fn publishers_share_out_the_rooms() {
        let ledger = |subscribers, rooms, publishers| {
            Ledger::new(
                &args(subscribers, rooms, publishers),
                Arc::new(Shared::default()),
            )
        };
        let rooms_of = |ledger: &Ledger, publisher| ledger.rooms_of(publisher).collect::<Vec<_>>();
        // One publisher, or one room: everyone publishes everywhere.
        let one = ledger(10, 4, 1);
        assert_eq!(rooms_of(&one, 0), [0, 1, 2, 3]);
        assert_eq!(one.round_deliveries, 10);
        let crowd = ledger(10, 1, 3);
        assert!((0..3).all(|publisher| rooms_of(&crowd, publisher) == [0]));
        assert_eq!(crowd.round_deliveries, 30);
        // Fewer publishers than rooms: one publisher per room.
        let many = ledger(10_000, 1000, 100);
        assert_eq!(rooms_of(&many, 7).len(), 10);
        assert_eq!(rooms_of(&many, 7)[..3], [7, 107, 207]);
        assert_eq!(many.round_deliveries, 10_000);
        let uneven = ledger(7, 7, 3);
        assert_eq!(rooms_of(&uneven, 0), [0, 3, 6]);
        assert_eq!(rooms_of(&uneven, 2), [2, 5]);
        assert_eq!(uneven.round_deliveries, 7);
        assert_eq!(
            (0..4)
                .map(|nth| uneven.publisher_room(2, nth))
                .collect::<Vec<_>>(),
            [2, 5, 2, 5]
        );
        // More publishers than rooms: one room per publisher; room 0 has
        // publishers 0, 2 and 4, room 1 publishers 1 and 3.
        let crowded = ledger(4, 2, 5);
        assert_eq!(rooms_of(&crowded, 4), [0]);
        assert_eq!(rooms_of(&crowded, 3), [1]);
        assert_eq!(crowded.publisher_room(3, 9), 1);
        assert_eq!(crowded.round_deliveries, 3 * 2 + 2 * 2);
    }

    #[test]
    fn subscribers_tell_gaps_late_messages_and_duplicates_apart() {
        let mut track = Track::new(2);
        assert_eq!(track.accept(0, 0), Verdict::InOrder);
        assert_eq!(track.accept(1, 0), Verdict::InOrder);
        assert_eq!(track.accept(0, 3), Verdict::InOrder);
        assert_eq!(track.gaps.len(), 2);
        assert_eq!(track.accept(0, 1), Verdict::Late);
        assert_eq!(track.accept(0, 1), Verdict::Duplicate);
        assert_eq!(track.accept(0, 3), Verdict::Duplicate);
        assert_eq!(track.accept(1, 0), Verdict::Duplicate);
        assert_eq!(track.accept(2, 0), Verdict::Corrupt);
        assert_eq!(track.accept(1, MAX_GAP + 2), Verdict::Corrupt);
        assert_eq!(track.gaps, vec![(0, 2)]);
    }
}
