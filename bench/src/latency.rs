//! `shardcast-bench latency`: echo latency at a fixed offered rate, open
//! loop.
//!
//! R messages per second leave on a fixed schedule, spread round-robin
//! over N connections on T threads (each thread R/T over its share),
//! whatever the replies; an echo's latency counts from its message's
//! intended send time, so a stall is recorded in full rather than hidden
//! (coordinated omission corrected). See [`crate::open_loop`] for how the
//! sends are paced to the microsecond and why not on monoio's timer.
//! Connections open and upgrade on monoio (`--driver`); a warm-up runs,
//! then the measured window: the messages scheduled in it are the ones
//! whose echoes count. Every echo is checked against what was sent. The
//! report gives the percentiles, the achieved send rate, how late the
//! generator itself sent, and the CPU share of the server and of the
//! generator.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::{Map, json};
use shardcast::CoreList;

use crate::client::Target;
use crate::cores;
use crate::echo::DriverChoice;
use crate::open_loop::{self, Control, Idle, Plan, STAMP_LEN, Tally, phase};
use crate::proc_stat::{self, CpuSpent, CpuTimes};

/// The one measured window of a latency run.
const MEASURED: u8 = 0;

/// Command line of `shardcast-bench latency`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// The server: ws://HOST:PORT/PATH.
    #[arg(long)]
    pub(crate) url: String,
    /// Connections in total.
    #[arg(long, default_value_t = 100)]
    pub(crate) connections: usize,
    /// Payload bytes per message; the first 32 carry its sequence number
    /// and intended send time.
    #[arg(long, default_value_t = 32)]
    pub(crate) size: usize,
    /// Messages per second offered, over all connections.
    #[arg(long, default_value_t = 20_000.0)]
    pub(crate) rate: f64,
    /// Seconds of warm-up, sent and checked but not recorded.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Generator threads, each with a share of the connections and of the
    /// rate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) threads: u32,
    /// Cores to pin the generator's threads to, round-robin (`1`, `2,3`);
    /// unpinned when absent.
    #[arg(long)]
    pub(crate) cores: Option<CoreList>,
    /// Send text messages rather than binary.
    #[arg(long)]
    pub(crate) text: bool,
    /// What the generator does between sends: spin (lowest floor, a core
    /// busy) or block until the next send is near.
    #[arg(long, value_enum, default_value_t = Idle::Spin)]
    pub(crate) idle: Idle,
    /// The server's process id, to report its CPU share.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// The I/O driver the connections open and upgrade on (the open loop
    /// itself runs on epoll).
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub(crate) driver: DriverChoice,
    /// Seconds each connection may take to connect and upgrade.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) connect_timeout: f64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What one run measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The command line it ran with.
    pub(crate) args: Args,
    /// The driver the connections opened on: `io_uring` or `legacy`.
    pub(crate) driver: &'static str,
    /// Seconds until every connection was upgraded or had failed.
    pub(crate) connect_seconds: f64,
    /// Length of the measured window, seconds.
    pub(crate) seconds: f64,
    /// Connections that failed to open.
    pub(crate) connect_failed: u64,
    /// Generator threads that stopped on an error (their figures are
    /// lost).
    pub(crate) threads_failed: u64,
    /// The measured window and the loop's failures, all threads merged.
    pub(crate) tally: Tally,
    /// The server's CPU time over the window, when its pid was given.
    pub(crate) server_cpu: Option<CpuSpent>,
    /// This process's CPU time over the window.
    pub(crate) generator_cpu: CpuSpent,
}

impl Outcome {
    /// The measured window.
    fn window(&self) -> &open_loop::Window {
        &self.tally.windows[usize::from(MEASURED)]
    }

    /// Messages sent per second in the window.
    pub(crate) fn achieved_rate(&self) -> f64 {
        self.window().sent as f64 / self.seconds
    }

    /// Connections failed, at opening or during the run.
    fn failed(&self) -> u64 {
        self.connect_failed + self.tally.failed
    }

    /// Fails unless every connection worked, every message was echoed
    /// right, and some were: a benchmark of a failing path measures
    /// nothing.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let tally = &self.tally;
        let count = self.window().latency.len();
        if tally.mismatches > 0
            || self.failed() > 0
            || self.threads_failed > 0
            || tally.unanswered > 0
            || count == 0
        {
            bail!(
                "invalid run: {count} echoes recorded, {} mismatched, {} unanswered, {} connections and {} generator threads failed{}",
                tally.mismatches,
                tally.unanswered,
                self.failed(),
                self.threads_failed,
                tally
                    .first_error
                    .as_ref()
                    .map(|error| format!("; first failure: {error}"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The result: `{"scenario": "latency", "params": {..}, "metrics":
    /// {..}}`, metrics flat and named with their unit.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let args = &self.args;
        let mut metrics = Map::new();
        self.window().metrics("", &mut metrics);
        let mut put = |name: &str, value: serde_json::Value| {
            metrics.insert(name.to_owned(), value);
        };
        put("offered_rate", json!(args.rate));
        put("achieved_rate", json!(self.achieved_rate()));
        put("sent", json!(self.window().sent));
        put("seconds", json!(self.seconds));
        put("connect_seconds", json!(self.connect_seconds));
        put("mismatches", json!(self.tally.mismatches));
        put("unanswered", json!(self.tally.unanswered));
        put("failed", json!(self.failed()));
        put("threads_failed", json!(self.threads_failed));
        if let Some(cpu) = self.server_cpu {
            put("server_core_share", json!(cpu.total / self.seconds));
        }
        put(
            "generator_core_share",
            json!(self.generator_cpu.total / self.seconds),
        );
        put(
            "generator_busy_share",
            json!(self.window().busy_ns as f64 / 1e9 / self.seconds),
        );
        json!({
            "scenario": "latency",
            "params": {
                "url": args.url,
                "connections": args.connections,
                "size": args.size,
                "rate": args.rate,
                "warmup_seconds": args.warmup,
                "duration_seconds": args.duration,
                "threads": args.threads,
                "cores": args.cores.as_ref().map(|cores| cores.as_slice().to_vec()),
                "text": args.text,
                "idle": open_loop::choice_name(&args.idle),
                "server_pid": args.server_pid,
                "driver": open_loop::choice_name(&args.driver),
                "connect_timeout": args.connect_timeout,
            },
            "metrics": metrics,
            "driver": self.driver,
            "first_error": self.tally.first_error,
        })
    }

    /// A small table for people.
    pub(crate) fn print_human(&self) {
        let args = &self.args;
        let window = self.window();
        println!(
            "{} connections x {} B {}, {} thread(s), {} idle, opened on {}",
            args.connections,
            args.size,
            if args.text { "text" } else { "binary" },
            args.threads,
            open_loop::choice_name(&args.idle),
            self.driver
        );
        println!(
            "offered {:.0} msg/s, sent {:.0} msg/s over {:.2} s; schedule lag p99 {:.1} µs, max {:.1} µs",
            args.rate,
            self.achieved_rate(),
            self.seconds,
            window.lag.value_at_quantile(0.99) as f64 / 1e3,
            window.lag.max() as f64 / 1e3
        );
        println!("{}", open_loop::Window::human_heading());
        println!("{}", window.human_row("measured"));
        println!(
            "{} mismatched, {} unanswered, {} connections failed",
            self.tally.mismatches,
            self.tally.unanswered,
            self.failed()
        );
        if let Some(cpu) = self.server_cpu {
            println!(
                "server CPU: {:.0}% of a core",
                cpu.total / self.seconds * 100.0
            );
        }
        println!(
            "generator CPU: {:.0}% of a core ({:.0}% busy sending or receiving)",
            self.generator_cpu.total / self.seconds * 100.0,
            window.busy_ns as f64 / 1e9 / self.seconds * 100.0
        );
    }
}

/// Runs `shardcast-bench latency`: prints the result, and fails on an
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

/// Runs the load described by `args` and returns what it measured.
pub(crate) fn run(args: &Args) -> anyhow::Result<Outcome> {
    if !(args.warmup >= 0.0 && args.duration > 0.0 && args.connect_timeout > 0.0) {
        bail!("the warm-up must be at least 0 s, the window and the connect timeout above 0 s");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("the rate must be above 0 messages/s");
    }
    if args.size < STAMP_LEN {
        bail!(
            "--size must be at least {STAMP_LEN}: each message carries its sequence number and intended send time"
        );
    }
    if args.connections < args.threads as usize {
        bail!("fewer connections than threads");
    }
    if let Some(cores) = &args.cores {
        cores::check_available(cores.as_slice())?;
    }
    let target = Target::parse(&args.url)?;
    let control = Arc::new(Control::new());
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64);
    let threads = args.threads as usize;
    let timeout = Duration::from_secs_f64(args.connect_timeout);
    let start = Instant::now();
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let count = args.connections / threads + usize::from(index < args.connections % threads);
        let core = args
            .cores
            .as_ref()
            .map(|cores| cores.as_slice()[index % cores.as_slice().len()]);
        let plan = Plan {
            rate: args.rate / threads as f64,
            size: args.size,
            text: args.text,
            windows: 1,
            idle: args.idle,
        };
        let (target, control, driver) = (target.clone(), Arc::clone(&control), args.driver);
        let seed = seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let handle = thread::Builder::new()
            .name(format!("latency-{index}"))
            .spawn(move || -> anyhow::Result<(open_loop::Opened, Tally)> {
                if let Some(core) = core {
                    if let Err(error) = cores::pin_current_thread(core) {
                        control.failed.fetch_add(count, Ordering::Relaxed);
                        return Err(error);
                    }
                }
                let mut opened = open_loop::open(driver, &target, count, timeout, seed, &control)?;
                let connections = std::mem::take(&mut opened.connections);
                let tally = open_loop::run(connections, plan, &control, seed.rotate_left(17))?;
                Ok((opened, tally))
            })
            .context("starting a generator thread")?;
        handles.push(handle);
    }

    // Every connection settles within the connect timeout (a thread that
    // cannot start counts its connections failed at once; one that
    // panicked is over).
    while control.settled() < args.connections && !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(2));
    }
    let connect_seconds = start.elapsed().as_secs_f64();
    let connected = control.failed.load(Ordering::Relaxed) == 0;
    let ticks = proc_stat::ticks_per_second();
    let mut measured = None;
    if connected {
        control.set(phase::UNRECORDED);
        thread::sleep(Duration::from_secs_f64(args.warmup));
        let server_before = args
            .server_pid
            .map(|pid| CpuTimes::read(Some(pid)))
            .transpose()?;
        let generator_before = CpuTimes::read(None)?;
        let window_start = control.set(MEASURED);
        thread::sleep(Duration::from_secs_f64(args.duration));
        let seconds = (control.set(phase::UNRECORDED) - window_start) as f64 / 1e9;
        let generator_cpu = CpuTimes::read(None)?.since(&generator_before, ticks);
        let server_cpu = match (args.server_pid, server_before) {
            (Some(pid), Some(before)) => Some(CpuTimes::read(Some(pid))?.since(&before, ticks)),
            _ => None,
        };
        measured = Some((seconds, server_cpu, generator_cpu));
    }
    control.set(phase::DONE);

    let mut tally = Tally::new(1)?;
    let mut driver = "io_uring";
    let mut connect_failed = 0;
    let mut threads_failed = 0;
    let mut first_error = None;
    for handle in handles {
        let joined = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a generator thread panicked"))?;
        match joined {
            Ok((opened, thread_tally)) => {
                connect_failed += opened.failed;
                first_error = first_error.or(opened.first_error);
                if opened.driver == "legacy" {
                    driver = "legacy";
                }
                tally.merge(thread_tally)?;
            }
            Err(error) => {
                threads_failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    // Failures to open come first: they are why nothing was measured.
    tally.first_error = first_error.or(tally.first_error);
    connect_failed = connect_failed.max(control.failed.load(Ordering::Relaxed) as u64);
    let (seconds, server_cpu, generator_cpu) = measured.unwrap_or((
        0.0,
        None,
        CpuSpent {
            total: 0.0,
            user: 0.0,
        },
    ));
    Ok(Outcome {
        args: args.clone(),
        driver,
        connect_seconds,
        seconds,
        connect_failed,
        threads_failed,
        tally,
        server_cpu,
        generator_cpu,
    })
}
