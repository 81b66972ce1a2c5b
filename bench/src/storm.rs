//! `shardcast-bench storm`: a reconnection storm, and what it does to the
//! connections that are not part of it.
//!
//! N clients open upgraded connections from source addresses 127.0.0.2,
//! 127.0.0.3, ... (as `connections` does, so that counts beyond one
//! source's ephemeral ports work) and stay idle. M probe connections, not
//! part of the storm, run the open-loop echo of [`crate::open_loop`] at a
//! low fixed rate on their own thread. After a warm-up, the probes'
//! baseline window is measured; then, in each round, every client closes
//! its connection at once (as when a network path or a proxy drops them
//! all) and reconnects, at once or after a uniform random delay within
//! `--jitter-ms` (clients that back off). A failed handshake is counted
//! and tried again until the round's timeout. The round lasts until every
//! client is upgraded again (the time to all-back); the probes' messages
//! meant to leave from the first close until this thread has seen every
//! client back make the storm window. Rounds are separated by a pause
//! that is not recorded. Each round also reports the kernel's listen
//! queue overflows (machine-wide): a SYN dropped by a full queue is
//! retried a second later, and that second shows in the time to
//! all-back.

use std::cell::Cell;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use serde_json::{Map, json};

use shardcast::CoreList;

use crate::client::{Target, XorShift};
use crate::connections::{self, SPARE_FDS};
use crate::cores;
use crate::echo::{DriverChoice, driver_name};
use crate::limits::{self, PortRange};
use crate::open_loop::{self, Control, Idle, Plan, STAMP_LEN, Tally, phase};
use crate::proc_stat::{self, CpuSpent, CpuTimes};

/// The probes' window before the first storm.
const BASELINE: u8 = 0;
/// The probes' window during the storms.
const STORM: u8 = 1;

/// Command line of `shardcast-bench storm`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// The server: ws://HOST:PORT/PATH on this machine (the clients
    /// connect from 127.0.0.x).
    #[arg(long)]
    pub(crate) url: String,
    /// Clients that drop and reconnect.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) clients: u32,
    /// Probe connections, not part of the storm, whose latency is
    /// measured.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) probes: u32,
    /// Messages per second over all probes, open loop.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) probe_rate: f64,
    /// Payload bytes per probe message (at least 32).
    #[arg(long, default_value_t = 32)]
    pub(crate) size: usize,
    /// Each client reconnects after a uniform random delay of up to this
    /// many milliseconds; 0: all at once.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) jitter_ms: f64,
    /// Storms in the run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// Source addresses to spread the clients over, from 127.0.0.2 up; by
    /// default as many as the clients' connections of all rounds need
    /// with this machine's ephemeral port range.
    #[arg(long)]
    pub(crate) sources: Option<usize>,
    /// Clients opening at once before the first storm.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrency: u32,
    /// Seconds of probe warm-up, not recorded, before the baseline.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) warmup: f64,
    /// Seconds of the probes' baseline window.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) baseline: f64,
    /// Seconds between rounds, not recorded.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) pause: f64,
    /// What the probes' loop does between sends: block (little CPU, so
    /// the storm keeps the cores) or spin.
    #[arg(long, value_enum, default_value_t = Idle::Block)]
    pub(crate) idle: Idle,
    /// Cores to pin the clients' thread and the probes' thread to (`1`:
    /// both on core 1; `1,2`: clients on 1, probes on 2); unpinned when
    /// absent.
    #[arg(long)]
    pub(crate) cores: Option<CoreList>,
    /// The server's process id, to report its CPU during the storms.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// The I/O driver the clients and probes connect on.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub(crate) driver: DriverChoice,
    /// Seconds every client and probe may take to open before the first
    /// storm.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) connect_timeout: f64,
    /// Seconds one reconnection attempt may take before it counts as
    /// failed and is tried again.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) handshake_timeout: f64,
    /// Seconds a round may take; clients not back by then are stalled.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) storm_timeout: f64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// One storm.
#[derive(Clone, Debug, Default)]
pub(crate) struct Round {
    /// Seconds from the first close until the last client was upgraded
    /// again (or the round timed out).
    pub(crate) all_back_seconds: f64,
    /// Clients upgraded again.
    pub(crate) back: u64,
    /// Handshakes that failed and were tried again.
    pub(crate) failed: u64,
    /// Clients not back when the round timed out.
    pub(crate) stalled: u64,
    /// The server's CPU time during the round, when its pid was given;
    /// counted in clock ticks (10 ms at 100 Hz), so coarse for a short
    /// round.
    pub(crate) server_cpu: Option<CpuSpent>,
    /// Connections the kernel's listen queues dropped during the round,
    /// machine-wide, when /proc/net/netstat is readable: each is a SYN
    /// retried a second later (or more), which shows in the time to
    /// all-back.
    pub(crate) listen_overflows: Option<u64>,
}

/// What one run measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The command line it ran with.
    pub(crate) args: Args,
    /// Source addresses the clients used.
    pub(crate) sources: usize,
    /// The driver clients and probes opened on.
    pub(crate) driver: &'static str,
    /// Seconds until every client was first upgraded.
    pub(crate) connect_seconds: f64,
    /// Clients and probes that failed to open before the first storm.
    pub(crate) connect_failed: u64,
    /// The storms, in order.
    pub(crate) rounds: Vec<Round>,
    /// Length of the probes' baseline window, seconds.
    pub(crate) baseline_seconds: f64,
    /// The probes' windows (baseline, storm) and failures.
    pub(crate) probes: Tally,
    /// The first failure of a client, if any.
    pub(crate) first_error: Option<String>,
}

impl Outcome {
    /// The longest time to all-back of any round, seconds.
    pub(crate) fn all_back_seconds(&self) -> f64 {
        self.rounds
            .iter()
            .map(|round| round.all_back_seconds)
            .fold(0.0, f64::max)
    }

    /// Total seconds of storm over all rounds.
    fn storm_seconds(&self) -> f64 {
        self.rounds.iter().map(|round| round.all_back_seconds).sum()
    }

    /// Reconnections completed per second of storm, over all rounds.
    pub(crate) fn handshakes_per_second(&self) -> f64 {
        self.handshakes() as f64 / self.storm_seconds()
    }

    /// Reconnections completed over all rounds.
    fn handshakes(&self) -> u64 {
        self.rounds.iter().map(|round| round.back).sum()
    }

    /// Handshakes that failed (and were tried again) over all rounds.
    fn failed(&self) -> u64 {
        self.rounds.iter().map(|round| round.failed).sum()
    }

    /// Clients not back when their round timed out.
    fn stalled(&self) -> u64 {
        self.rounds.iter().map(|round| round.stalled).sum()
    }

    /// The server's CPU over all rounds, when its pid was given.
    fn server_cpu(&self) -> Option<f64> {
        self.rounds
            .iter()
            .map(|round| round.server_cpu.map(|cpu| cpu.total))
            .sum()
    }

    /// Listen queue overflows over all rounds, when they were readable.
    fn listen_overflows(&self) -> Option<u64> {
        self.rounds.iter().map(|round| round.listen_overflows).sum()
    }

    /// The probes' window `index` ([`BASELINE`] or [`STORM`]).
    fn window(&self, index: u8) -> &open_loop::Window {
        &self.probes.windows[usize::from(index)]
    }

    /// Fails unless every client opened and came back from every storm,
    /// and the probes worked, were echoed right and measured both
    /// windows. Handshakes that failed and succeeded on a later try are
    /// what a storm may do to a server: reported, not invalid.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let probes = &self.probes;
        let (baseline, storm) = (
            self.window(BASELINE).latency.len(),
            self.window(STORM).latency.len(),
        );
        let complete = self.rounds.len() == self.args.rounds as usize;
        if self.connect_failed > 0
            || !complete
            || self.stalled() > 0
            || probes.mismatches > 0
            || probes.failed > 0
            || probes.unanswered > 0
            || baseline == 0
            || storm == 0
        {
            bail!(
                "invalid run: {} of {} storms run, {} failed to open, {} clients not back, probes: {} mismatched, {} failed, {} unanswered, {baseline} baseline and {storm} storm echoes (a storm shorter than a probe interval measures nothing: raise --probe-rate){}",
                self.rounds.len(),
                self.args.rounds,
                self.connect_failed,
                self.stalled(),
                probes.mismatches,
                probes.failed,
                probes.unanswered,
                self.first_error
                    .as_ref()
                    .or(probes.first_error.as_ref())
                    .map(|error| format!("; first failure: {error}"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The result: `{"scenario": "storm", "params": {..}, "metrics":
    /// {..}, "rounds": [..]}`, metrics flat and named with their unit.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let args = &self.args;
        let mut metrics = Map::new();
        self.window(BASELINE).metrics("baseline_", &mut metrics);
        self.window(STORM).metrics("storm_", &mut metrics);
        let mut put = |name: &str, value: serde_json::Value| {
            metrics.insert(name.to_owned(), value);
        };
        put("all_back_seconds", json!(self.all_back_seconds()));
        put(
            "all_back_seconds_mean",
            json!(self.storm_seconds() / self.rounds.len() as f64),
        );
        put("handshakes_per_second", json!(self.handshakes_per_second()));
        put("handshakes", json!(self.handshakes()));
        put("failed", json!(self.failed()));
        put("stalled", json!(self.stalled()));
        put("connect_failed", json!(self.connect_failed));
        put("connect_seconds", json!(self.connect_seconds));
        put("baseline_seconds", json!(self.baseline_seconds));
        put("storm_seconds", json!(self.storm_seconds()));
        put("probe_mismatches", json!(self.probes.mismatches));
        put("probe_failed", json!(self.probes.failed));
        put("probe_unanswered", json!(self.probes.unanswered));
        if let Some(overflows) = self.listen_overflows() {
            put("listen_overflows", json!(overflows));
        }
        if let Some(cpu) = self.server_cpu() {
            put("server_core_share", json!(cpu / self.storm_seconds()));
            put(
                "server_cpu_us_per_handshake",
                json!(cpu * 1e6 / self.handshakes().max(1) as f64),
            );
        }
        let rounds: Vec<_> = self
            .rounds
            .iter()
            .map(|round| {
                json!({
                    "all_back_seconds": round.all_back_seconds,
                    "handshakes_per_second": round.back as f64 / round.all_back_seconds,
                    "failed": round.failed,
                    "stalled": round.stalled,
                    "listen_overflows": round.listen_overflows,
                })
            })
            .collect();
        json!({
            "scenario": "storm",
            "params": {
                "url": args.url,
                "clients": args.clients,
                "probes": args.probes,
                "probe_rate": args.probe_rate,
                "size": args.size,
                "jitter_ms": args.jitter_ms,
                "rounds": args.rounds,
                "sources": self.sources,
                "concurrency": args.concurrency,
                "warmup_seconds": args.warmup,
                "baseline": args.baseline,
                "pause": args.pause,
                "idle": open_loop::choice_name(&args.idle),
                "cores": args.cores.as_ref().map(ToString::to_string),
                "server_pid": args.server_pid,
                "driver": open_loop::choice_name(&args.driver),
                "connect_timeout": args.connect_timeout,
                "handshake_timeout": args.handshake_timeout,
                "storm_timeout": args.storm_timeout,
            },
            "metrics": metrics,
            "rounds": rounds,
            "driver": self.driver,
            "first_error": self.first_error.as_ref().or(self.probes.first_error.as_ref()),
        })
    }

    /// A small table for people.
    pub(crate) fn print_human(&self) {
        let args = &self.args;
        println!(
            "{} clients from {} source address(es), jitter {} ms, {} round(s); {} probes at {:.0} msg/s; {} driver",
            args.clients,
            self.sources,
            args.jitter_ms,
            args.rounds,
            args.probes,
            args.probe_rate,
            self.driver
        );
        for (index, round) in self.rounds.iter().enumerate() {
            println!(
                "round {}: all back in {:.1} ms, {:.0} handshakes/s, {} failed and retried, {} not back, {} listen queue overflows{}",
                index + 1,
                round.all_back_seconds * 1e3,
                round.back as f64 / round.all_back_seconds,
                round.failed,
                round.stalled,
                round
                    .listen_overflows
                    .map_or_else(|| "?".to_owned(), |count| count.to_string()),
                round
                    .server_cpu
                    .map(|cpu| format!(
                        ", server {:.0}% of a core",
                        cpu.total / round.all_back_seconds * 100.0
                    ))
                    .unwrap_or_default()
            );
        }
        println!("probe latency:");
        println!("{}", open_loop::Window::human_heading());
        println!("{}", self.window(BASELINE).human_row("baseline"));
        println!("{}", self.window(STORM).human_row("storm"));
        println!(
            "probes: {} mismatched, {} failed, {} unanswered",
            self.probes.mismatches, self.probes.failed, self.probes.unanswered
        );
    }
}

/// Runs `shardcast-bench storm`: prints the result, and fails on an
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

/// Runs the storms described by `args` and returns what they measured.
pub(crate) fn run(args: &Args) -> anyhow::Result<Outcome> {
    let positive = [
        args.probe_rate,
        args.baseline,
        args.connect_timeout,
        args.handshake_timeout,
        args.storm_timeout,
    ];
    if positive
        .iter()
        .any(|&value| !(value > 0.0 && value.is_finite()))
        || !(args.warmup >= 0.0 && args.pause >= 0.0 && args.jitter_ms >= 0.0)
    {
        bail!(
            "the probe rate, baseline and timeouts must be above 0; warm-up, pause and jitter at least 0"
        );
    }
    if args.size < STAMP_LEN {
        bail!(
            "--size must be at least {STAMP_LEN}: each probe message carries its sequence number and intended send time"
        );
    }
    let target = Target::parse(&args.url)?;
    let clients = args.clients as usize;
    // A client's closed connection waits in TIME_WAIT on its port: every
    // round takes new ones.
    let sources = connections::sources_for(
        clients * (args.rounds as usize + 1),
        args.sources,
        PortRange::read()?,
    )?;
    let sources: Vec<Ipv4Addr> = (0..sources)
        .map(|index| Ipv4Addr::new(127, 0, 0, 2 + index as u8))
        .collect();
    limits::raise_nofile((clients + args.probes as usize) as u64 * 2 + SPARE_FDS)?;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64);

    if let Some(cores) = &args.cores {
        cores::check_available(cores.as_slice())?;
    }
    let core = |index: usize| {
        args.cores
            .as_ref()
            .map(|cores| cores.as_slice()[index % cores.as_slice().len()])
    };
    let (clients_core, probes_core) = (core(0), core(1));
    let control = Arc::new(Control::new());
    let probes = {
        let (target, control) = (target.clone(), Arc::clone(&control));
        let (driver, count) = (args.driver, args.probes as usize);
        let timeout = Duration::from_secs_f64(args.connect_timeout);
        let plan = Plan {
            rate: args.probe_rate,
            size: args.size,
            text: false,
            windows: 2,
            idle: args.idle,
        };
        thread::Builder::new()
            .name("storm-probes".to_owned())
            .spawn(move || -> anyhow::Result<(open_loop::Opened, Tally)> {
                if let Some(core) = probes_core {
                    cores::pin_current_thread(core)?;
                }
                let mut opened = open_loop::open(driver, &target, count, timeout, seed, &control)?;
                let connections = std::mem::take(&mut opened.connections);
                let tally = open_loop::run(connections, plan, &control, seed.rotate_left(29))?;
                Ok((opened, tally))
            })
            .context("starting the probes' thread")?
    };

    let storms = Storms {
        args,
        target,
        sources: sources.clone(),
        control: Arc::clone(&control),
    };
    // The clients run on a thread of their own, to be pinned apart from
    // whatever called.
    let clients = thread::scope(|scope| {
        thread::Builder::new()
            .name("storm-clients".to_owned())
            .spawn_scoped(scope, || -> anyhow::Result<_> {
                if let Some(core) = clients_core {
                    cores::pin_current_thread(core)?;
                }
                let mut runtime = args.driver.build()?;
                let driver = driver_name(&runtime);
                Ok((driver, runtime.block_on(storms.run(seed))))
            })
            .context("starting the clients' thread")?
            .join()
            .map_err(|_| anyhow!("the clients' thread panicked"))
    });
    let (driver, timeline) = match clients.and_then(|started| started) {
        Ok(ran) => ran,
        Err(error) => {
            control.set(phase::DONE);
            let _ = probes.join();
            return Err(error);
        }
    };
    // Whatever happened, the probes stop.
    control.set(phase::DONE);
    let joined = probes
        .join()
        .map_err(|_| anyhow!("the probes' thread panicked"))?;
    let timeline = timeline?;
    let (probe_failed, probes, probe_error) = match joined {
        Ok((opened, tally)) => (opened.failed, tally, opened.first_error),
        Err(error) => (
            args.probes.into(),
            Tally::new(2)?,
            Some(format!("{error:#}")),
        ),
    };
    Ok(Outcome {
        args: args.clone(),
        sources: sources.len(),
        driver,
        connect_seconds: timeline.connect_seconds,
        connect_failed: timeline.connect_failed + probe_failed,
        rounds: timeline.rounds,
        baseline_seconds: timeline.baseline_seconds,
        probes,
        first_error: timeline.first_error.or(probe_error),
    })
}

/// The clients' side of a run, on the calling thread's monoio runtime.
struct Storms<'a> {
    /// The command line.
    args: &'a Args,
    /// The server.
    target: Target,
    /// The clients' source addresses, used round-robin.
    sources: Vec<Ipv4Addr>,
    /// Shared with the probes: the storm thread runs their clock.
    control: Arc<Control>,
}

/// What the clients' side measured.
struct Timeline {
    /// Seconds to open every client before the first storm.
    connect_seconds: f64,
    /// Clients that failed to open then.
    connect_failed: u64,
    /// Length of the probes' baseline window.
    baseline_seconds: f64,
    /// The storms run.
    rounds: Vec<Round>,
    /// The first failure of a client.
    first_error: Option<String>,
}

impl Storms<'_> {
    /// Opens the clients, waits for the probes, runs the warm-up, the
    /// baseline and the rounds, setting the probes' phase as it goes.
    async fn run(&self, seed: u64) -> anyhow::Result<Timeline> {
        let args = self.args;
        let mut rng = XorShift::new(seed);
        let start = Instant::now();
        let (mut held, connect_failed, first_error) = self.open_clients(rng.next()).await;
        let connect_seconds = start.elapsed().as_secs_f64();
        let mut timeline = Timeline {
            connect_seconds,
            connect_failed,
            baseline_seconds: 0.0,
            rounds: Vec::new(),
            first_error,
        };
        while self.control.settled() < args.probes as usize {
            monoio::time::sleep(Duration::from_millis(2)).await;
        }
        let probes_failed = self.control.failed.load(Ordering::Relaxed);
        if connect_failed > 0 || probes_failed > 0 {
            return Ok(timeline);
        }
        self.control.set(phase::UNRECORDED);
        monoio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let baseline_start = self.control.set(BASELINE);
        monoio::time::sleep(Duration::from_secs_f64(args.baseline)).await;
        let baseline_end = self.control.set(phase::UNRECORDED);
        timeline.baseline_seconds = (baseline_end - baseline_start) as f64 / 1e9;
        let ticks = proc_stat::ticks_per_second();
        for index in 0..args.rounds {
            if index > 0 {
                monoio::time::sleep(Duration::from_secs_f64(args.pause)).await;
            }
            let server_before = args
                .server_pid
                .map(|pid| CpuTimes::read(Some(pid)))
                .transpose()?;
            let overflows_before = listen_overflows();
            self.control.set(STORM);
            let (round, error) = self.storm(&mut held, rng.next()).await;
            self.control.set(phase::UNRECORDED);
            let server_cpu = match (args.server_pid, server_before) {
                (Some(pid), Some(before)) => Some(CpuTimes::read(Some(pid))?.since(&before, ticks)),
                _ => None,
            };
            let listen_overflows = listen_overflows()
                .zip(overflows_before)
                .map(|(after, before)| after.saturating_sub(before));
            timeline.first_error = timeline.first_error.or(error);
            let stalled = round.stalled;
            timeline.rounds.push(Round {
                server_cpu,
                listen_overflows,
                ..round
            });
            if stalled > 0 {
                break;
            }
        }
        Ok(timeline)
    }

    /// Opens every client, `--concurrency` at a time; returns the
    /// sockets, the count that failed, and the first failure.
    async fn open_clients(&self, seed: u64) -> (Vec<OwnedFd>, u64, Option<String>) {
        let args = self.args;
        let clients = args.clients as usize;
        let next = Rc::new(Cell::new(0));
        let timeout = Duration::from_secs_f64(args.connect_timeout);
        let mut rng = XorShift::new(seed);
        let workers: Vec<_> = (0..(args.concurrency as usize).min(clients))
            .map(|_| {
                let (next, target, sources) =
                    (Rc::clone(&next), self.target.clone(), self.sources.clone());
                let mut rng = XorShift::new(rng.next());
                monoio::spawn(async move {
                    let mut results = Vec::new();
                    loop {
                        let index = next.get();
                        if index >= clients {
                            return results;
                        }
                        next.set(index + 1);
                        let source = sources[index % sources.len()];
                        let upgraded = monoio::time::timeout(
                            timeout,
                            connections::upgrade(&target, source, &mut rng),
                        )
                        .await;
                        results.push(match upgraded {
                            Ok(result) => result,
                            Err(_) => Err(anyhow!("not upgraded within {timeout:?}")),
                        });
                    }
                })
            })
            .collect();
        let mut held = Vec::with_capacity(clients);
        let (mut failed, mut first_error) = (0, None);
        for worker in workers {
            for result in worker.await {
                match result {
                    Ok(socket) => held.push(socket),
                    Err(error) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
        }
        (held, failed, first_error)
    }

    /// One storm: closes every client's connection at once, reconnects
    /// each after its jitter, retrying failed handshakes until the round
    /// times out; `held` then holds the new sockets.
    async fn storm(&self, held: &mut Vec<OwnedFd>, seed: u64) -> (Round, Option<String>) {
        let args = self.args;
        let clients = held.len();
        let round_timeout = Duration::from_secs_f64(args.storm_timeout);
        let attempt_timeout = Duration::from_secs_f64(args.handshake_timeout);
        let mut rng = XorShift::new(seed);
        let start = Instant::now();
        held.clear();
        let tasks: Vec<_> = (0..clients)
            .map(|index| {
                let (target, source) = (
                    self.target.clone(),
                    self.sources[index % self.sources.len()],
                );
                // Uniform in [0, jitter): 53 random bits as a fraction.
                let fraction = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                let delay = Duration::from_secs_f64(args.jitter_ms * fraction / 1e3);
                let mut rng = XorShift::new(rng.next());
                monoio::spawn(async move {
                    if !delay.is_zero() {
                        monoio::time::sleep(delay).await;
                    }
                    let mut failures = Vec::new();
                    loop {
                        let attempt = monoio::time::timeout(
                            attempt_timeout,
                            connections::upgrade(&target, source, &mut rng),
                        )
                        .await;
                        match attempt {
                            Ok(Ok(socket)) => return (Some((socket, start.elapsed())), failures),
                            Ok(Err(error)) => failures.push(error),
                            Err(_) => failures.push(anyhow!(
                                "a reconnection was not upgraded within {attempt_timeout:?}"
                            )),
                        }
                        if start.elapsed() >= round_timeout {
                            return (None, failures);
                        }
                    }
                })
            })
            .collect();
        let mut round = Round::default();
        let mut first_error = None;
        let mut last_back = Duration::ZERO;
        for task in tasks {
            let (back, failures) = task.await;
            round.failed += failures.len() as u64;
            if let Some(error) = failures.first() {
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
            match back {
                Some((socket, at)) => {
                    held.push(socket);
                    round.back += 1;
                    last_back = last_back.max(at);
                }
                None => round.stalled += 1,
            }
        }
        round.all_back_seconds = if round.stalled > 0 {
            start.elapsed().as_secs_f64()
        } else {
            last_back.as_secs_f64()
        };
        (round, first_error)
    }
}

/// The kernel's count of connections dropped because a listen queue was
/// full (`TcpExt: ListenOverflows` in /proc/net/netstat), machine-wide;
/// `None` when it cannot be read.
pub(crate) fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    tcp_ext(&netstat, "ListenOverflows")
}

/// Counter `name` of the `TcpExt:` lines of /proc/net/netstat: a line of
/// names, then a line of values in the same order.
fn tcp_ext(netstat: &str, name: &str) -> Option<u64> {
    let mut lines = netstat
        .lines()
        .filter_map(|line| line.strip_prefix("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names.split_whitespace().position(|field| field == name)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_ext_counters_are_read_by_name() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
            TcpExt: 613 3883 3890\n\
            IpExt: InNoRoutes ListenOverflows\n\
            IpExt: 0 7\n";
        assert_eq!(tcp_ext(netstat, "ListenOverflows"), Some(3883));
        assert_eq!(tcp_ext(netstat, "SyncookiesSent"), Some(613));
        assert_eq!(tcp_ext(netstat, "Missing"), None);
        assert_eq!(
            tcp_ext("TcpExt: ListenOverflows\n", "ListenOverflows"),
            None
        );
        assert!(listen_overflows().is_some());
    }
}
