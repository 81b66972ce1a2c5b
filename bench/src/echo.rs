//! `shardcast-bench echo`: closed-loop echo load against one server.
//!
//! N connections spread over T threads, each thread its own monoio runtime
//! (io_uring, or the legacy epoll driver where io_uring is unavailable),
//! optionally pinned. Every connection keeps K messages in flight and
//! sends the next when an echo arrives. Once every connection is upgraded,
//! a warm-up runs, then the measured window, the only one whose echoes
//! count; every echo is checked against what was sent. The run then ends
//! by itself.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::json;

use crate::client::{
    self, Counters, EchoProtocol, Load, Shared, Target, Timing, Window, XorShift, phase,
};
use crate::socket_io;
use shardcast::CoreList;

use crate::cores;

/// Command line of `shardcast-bench echo`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// The server: ws://HOST:PORT/PATH. With `--protocol socket.io`, a
    /// URL without a path means Socket.IO's default path
    /// (`/socket.io/?EIO=4&transport=websocket`).
    #[arg(long)]
    pub(crate) url: String,
    /// What the server echoes: plain WebSocket messages (`raw`), or
    /// Socket.IO "echo" events (`socket.io`, text only).
    #[arg(long, value_enum, default_value_t = EchoProtocol::Raw)]
    pub(crate) protocol: EchoProtocol,
    /// Connections in total.
    #[arg(long, default_value_t = 100)]
    pub(crate) connections: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 32)]
    pub(crate) size: usize,
    /// Messages each connection keeps in flight (1: send the next when the
    /// echo arrives).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) in_flight: u32,
    /// Seconds of warm-up, not counted.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Generator threads, each with its own runtime and a share of the
    /// connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) threads: u32,
    /// Cores to pin the generator's threads to, round-robin (`1`, `2,3`,
    /// `0-3`); unpinned when absent.
    #[arg(long)]
    pub(crate) cores: Option<CoreList>,
    /// Send binary messages (the default).
    #[arg(long, conflicts_with = "text")]
    pub(crate) binary: bool,
    /// Send text messages.
    #[arg(long)]
    pub(crate) text: bool,
    /// The server's process id, to charge it CPU time per message.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// The generator's I/O driver: io_uring when the kernel allows it
    /// (`auto`), or one forced.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub(crate) driver: DriverChoice,
    /// Seconds every connection may take to connect and upgrade.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) connect_timeout: f64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which monoio driver the generator's threads run on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum DriverChoice {
    /// io_uring if this kernel (and its seccomp policy) allows it, the
    /// legacy epoll driver otherwise.
    #[default]
    Auto,
    /// io_uring, failing if it is unavailable.
    IoUring,
    /// The legacy epoll driver.
    Legacy,
}

/// A generator thread's runtime, whichever driver it runs on.
pub(crate) type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// The name of the driver `runtime` runs on, as results report it:
/// `io_uring` or `legacy`.
pub(crate) fn driver_name(runtime: &Runtime) -> &'static str {
    match runtime {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "legacy",
    }
}

impl DriverChoice {
    /// Builds a runtime with a timer on this driver.
    pub(crate) fn build(self) -> anyhow::Result<Runtime> {
        const ENTRIES: u32 = 4096;
        // One thread submits to its ring, and completions wait for it to
        // ask for them: no task-work interrupt per completion, which on
        // loopback is most of what a message costs besides TCP itself.
        let mut quiet = io_uring::IoUring::builder();
        quiet
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_defer_taskrun();
        let uring = |builder: io_uring::Builder| {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .enable_timer()
                .with_entries(ENTRIES)
                .uring_builder(builder)
                .build()
        };
        let runtime = match self {
            // Kernels before 6.1 refuse the flags: the plain ring then.
            DriverChoice::Auto => match uring(quiet) {
                Ok(runtime) => Ok(Runtime::from(runtime)),
                Err(_) => monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .with_entries(ENTRIES)
                    .build(),
            },
            DriverChoice::IoUring => uring(quiet)
                .or_else(|_| uring(io_uring::IoUring::builder()))
                .map(Runtime::from),
            DriverChoice::Legacy => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .map(Runtime::from),
        };
        runtime.with_context(|| format!("building a monoio runtime ({self:?} driver)"))
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// The driver the generator's runtimes used: `io_uring` or `legacy`.
    pub(crate) driver: &'static str,
    /// The clock: connecting, the measured window, CPU time in it.
    pub(crate) window: Window,
    /// Echoes received in the measured window.
    pub(crate) echoes: u64,
    /// Echoes that differed from what was sent, over the whole run.
    pub(crate) mismatches: u64,
    /// Connections that failed.
    pub(crate) failed: u64,
    /// The first failure, if any.
    pub(crate) first_error: Option<String>,
    /// Payload bytes per message.
    pub(crate) size: usize,
}

impl Outcome {
    /// Echoed messages per second.
    pub(crate) fn messages_per_second(&self) -> f64 {
        self.window.per_second(self.echoes)
    }

    /// Echoed payload megabytes (10^6 bytes) per second, one direction.
    pub(crate) fn megabytes_per_second(&self) -> f64 {
        self.messages_per_second() * self.size as f64 / 1e6
    }

    /// The server's CPU per echoed message, microseconds: (user + system,
    /// user).
    pub(crate) fn server_micros_per_message(&self) -> Option<(f64, f64)> {
        self.window.server_micros_per(self.echoes)
    }

    /// Share of one core the server used, when its pid was given.
    pub(crate) fn server_core_share(&self) -> Option<f64> {
        self.window.server_core_share()
    }

    /// Share of one core this generator used.
    pub(crate) fn generator_core_share(&self) -> f64 {
        self.window.generator_core_share()
    }

    /// Fails unless every connection worked and every echo was right: a
    /// benchmark of a failing path measures nothing.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if self.mismatches > 0 || self.failed > 0 || self.window.stalled > 0 || self.echoes == 0 {
            bail!(
                "invalid run: {} echoes, {} mismatched, {} connections failed, {} never upgraded{}",
                self.echoes,
                self.mismatches,
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

    /// The result as JSON: `{"scenario": "echo", "params": {..}, "metrics": {..}}`,
    /// the inputs from `args`.
    pub(crate) fn to_json(&self, args: &Args) -> serde_json::Value {
        let server = self.server_micros_per_message();
        let metrics = json!({
            "driver": self.driver,
            "seconds": self.window.seconds,
            "echoes": self.echoes,
            "mismatches": self.mismatches,
            "failed_connections": self.failed,
            "stalled_connections": self.window.stalled,
            "connect_seconds": self.window.connect_seconds,
            "first_error": self.first_error,
            "messages_per_second": self.messages_per_second(),
            "megabytes_per_second": self.megabytes_per_second(),
            "server_cpu_us_per_message": server.map(|(total, _)| total),
            "server_user_us_per_message": server.map(|(_, user)| user),
            "server_core_share": self.server_core_share(),
            "generator_core_share": self.generator_core_share(),
        });
        json!({
            "scenario": "echo",
            "params": {
                "url": args.url,
                "connections": args.connections,
                "size": args.size,
                "in_flight": args.in_flight,
                "text": args.text,
                "protocol": match args.protocol {
                    EchoProtocol::Raw => "raw",
                    EchoProtocol::SocketIo => "socket.io",
                },
                "warmup_seconds": args.warmup,
                "duration_seconds": args.duration,
                "threads": args.threads,
                "cores": args.cores.as_ref().map(ToString::to_string),
            },
            "metrics": metrics,
        })
    }
}

/// Runs `shardcast-bench echo`: prints the result, and fails on an invalid
/// run after printing it.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
    let outcome = run(args)?;
    if args.json {
        println!("{}", outcome.to_json(args));
    } else {
        println!(
            "{} connections x {} B {}, {} in flight, {} thread(s), {} driver",
            args.connections,
            args.size,
            match args.protocol {
                EchoProtocol::SocketIo => "Socket.IO events",
                EchoProtocol::Raw if args.text => "text",
                EchoProtocol::Raw => "binary",
            },
            args.in_flight,
            args.threads,
            outcome.driver
        );
        println!(
            "{:.0} messages/s, {:.2} MB/s over {:.2} s; {} mismatches, {} failed connections",
            outcome.messages_per_second(),
            outcome.megabytes_per_second(),
            outcome.window.seconds,
            outcome.mismatches,
            outcome.failed
        );
        if let (Some((total, user)), Some(share)) = (
            outcome.server_micros_per_message(),
            outcome.server_core_share(),
        ) {
            println!(
                "server CPU per message: {total:.2} µs (user {user:.2} µs), {:.0}% of a core",
                share * 100.0
            );
        }
        println!(
            "generator CPU: {:.0}% of a core",
            outcome.generator_core_share() * 100.0
        );
    }
    outcome.check()
}

/// Runs the load described by `args` and returns what it measured.
pub(crate) fn run(args: &Args) -> anyhow::Result<Outcome> {
    if !(args.warmup >= 0.0 && args.duration > 0.0) {
        bail!("warm-up must be at least 0 s and the measured window longer than 0 s");
    }
    if args.connections < args.threads as usize {
        bail!("fewer connections than threads");
    }
    if let Some(cores) = &args.cores {
        cores::check_available(cores.as_slice())?;
    }
    let mut target = Target::parse(&args.url)?;
    if args.protocol == EchoProtocol::SocketIo {
        if args.binary {
            bail!("Socket.IO events carry text here: --binary does not apply");
        }
        if target.path == "/" {
            socket_io::PATH.clone_into(&mut target.path);
        }
    }
    let target = Arc::new(target);
    let load = Load {
        size: args.size,
        in_flight: args.in_flight as usize,
        text: args.text || args.protocol == EchoProtocol::SocketIo,
        protocol: args.protocol,
    };
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);

    let threads = args.threads as usize;
    let mut handles = Vec::with_capacity(threads);
    let driver = args.driver;
    for index in 0..threads {
        let connections =
            args.connections / threads + usize::from(index < args.connections % threads);
        let core = args
            .cores
            .as_ref()
            .map(|cores| cores.as_slice()[index % cores.as_slice().len()]);
        let target = Arc::clone(&target);
        let shared = Arc::clone(&shared);
        let seed = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let handle = thread::Builder::new()
            .name(format!("echo-load-{index}"))
            .spawn(move || generator_thread(driver, core, connections, target, load, shared, seed))
            .context("starting a generator thread")?;
        handles.push(handle);
    }

    let window = shared.run_clock(
        start,
        &Timing {
            connections: args.connections,
            connect_timeout: args.connect_timeout,
            warmup: args.warmup,
            duration: args.duration,
            server_pid: args.server_pid,
        },
    )?;

    let mut outcome = Outcome {
        driver: "io_uring",
        window,
        echoes: 0,
        mismatches: 0,
        failed: 0,
        first_error: None,
        size: args.size,
    };
    for handle in handles {
        let tally = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        outcome.echoes += tally.echoes;
        outcome.mismatches += tally.mismatches;
        outcome.failed += tally.failed;
        outcome.first_error = outcome.first_error.or(tally.first_error);
        if tally.driver == "legacy" {
            outcome.driver = "legacy";
        }
    }
    Ok(outcome)
}

/// One thread's share of the outcome.
struct Tally {
    driver: &'static str,
    echoes: u64,
    mismatches: u64,
    failed: u64,
    first_error: Option<String>,
}

fn generator_thread(
    driver: DriverChoice,
    core: Option<usize>,
    connections: usize,
    target: Arc<Target>,
    load: Load,
    shared: Arc<Shared>,
    seed: u64,
) -> anyhow::Result<Tally> {
    let runtime = core
        .map_or(Ok(()), cores::pin_current_thread)
        .and_then(|()| driver.build());
    let mut runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            // Its connections will never start: the clock must not wait for them.
            shared.failed.fetch_add(connections, Ordering::Relaxed);
            return Err(error);
        }
    };
    let counters = Rc::new(Counters::default());
    let main = {
        let counters = Rc::clone(&counters);
        async move {
            let mut rng = XorShift::new(seed);
            for _ in 0..connections {
                let target = Arc::clone(&target);
                let shared = Arc::clone(&shared);
                let counters = Rc::clone(&counters);
                let seed = rng.next();
                monoio::spawn(async move {
                    client::run(&target, load, &shared, &counters, seed).await;
                });
            }
            // The clock runs on the calling thread; a check every 10 ms
            // costs the generator next to nothing.
            while shared.phase.load(Ordering::Relaxed) != phase::DONE {
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let driver = driver_name(&runtime);
    runtime.block_on(main);
    let tally = Tally {
        driver,
        echoes: counters.echoes.get(),
        mismatches: counters.mismatches.get(),
        failed: counters.failed.get(),
        first_error: counters.first_error.take(),
    };
    // The connections still waiting for an echo are dropped with the runtime.
    drop(runtime);
    Ok(tally)
}
