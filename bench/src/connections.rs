//! `shardcast-bench connections`: what an idle upgraded WebSocket
//! connection costs a server in memory, and how fast it upgrades them.
//!
//! Each server in turn is started pinned with `taskset` on a free port
//! and left until its resident set settles. One monoio thread on the load
//! core then opens upgraded connections, a bounded number of handshakes in
//! flight, spread over source addresses 127.0.0.2, 127.0.0.3, ... (one
//! source address has one ephemeral port range, about 28k connections to
//! one destination). After its handshake a connection is only its socket:
//! nothing is sent or read. At each count of `--counts` the server's RSS
//! is read until it settles, with where its pages are (smaps) and the
//! kernel's socket objects; then connections are opened on top up to the
//! next count. At the end the server is killed and every socket closed.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use monoio::net::TcpStream;
use serde_json::json;
use shardcast::CoreList;
use socket2::{Domain, Protocol, Socket, Type};

use crate::client::{self, Target, XorShift};
use crate::cores;
use crate::echo::{DriverChoice, driver_name};
use crate::limits::{self, Nofile, PortRange};
use crate::machine::Machine;
use crate::memory::{self, Mappings, REGISTRATION_CACHES, SOCKET_CACHES, Slabs};
use crate::proc_stat::{self, CpuTimes};
use crate::report_file::{self, section_header};
use crate::servers::{RunningServer, ServerSpec, Speaks, free_port, shell_command_line};
use crate::stats::{format_rate, ratio_lower_is_better, thousands};

/// The section of BENCHMARKS.md this command writes by default.
const SECTION: &str = "engine-connections";

/// shardcast's goal: server RSS per idle connection, bytes (2 KiB).
const GOAL_BYTES: f64 = 2048.0;

/// Descriptors a process needs beyond its connections: listeners, rings,
/// logs, libraries.
pub(crate) const SPARE_FDS: u64 = 256;

/// The share of a source address's ephemeral ports a run fills at most,
/// so that connect() still finds a free one quickly.
const PORT_FILL: f64 = 0.75;

/// Source addresses available: 127.0.0.2 to 127.0.0.254.
const MAX_SOURCES: usize = 253;

/// The memory the benchmark leaves the machine: opening stops when
/// MemAvailable falls below it.
const MEMORY_FLOOR: u64 = 1 << 30;

/// Connections opened between two looks at MemAvailable.
const MEMORY_CHECK_EVERY: usize = 1000;

/// Command line of `shardcast-bench connections`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// A server under test, `NAME=COMMAND`; `{port}` in COMMAND is replaced
    /// by a free port on 127.0.0.1. COMMAND is split on whitespace, without
    /// a shell. Repeat for each server.
    #[arg(long = "server", required = true)]
    pub(crate) servers: Vec<ServerSpec>,
    /// Connection counts to measure at, rising (`10000,50000`): the
    /// connections are opened up to each in turn and kept.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    pub(crate) counts: Vec<usize>,
    /// Source addresses to spread the connections over, from 127.0.0.2
    /// up; by default as many as the largest count needs with this
    /// machine's ephemeral port range.
    #[arg(long)]
    pub(crate) sources: Option<usize>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrency: u32,
    /// Cores the servers run on (`taskset -c`).
    #[arg(long, default_value = "0")]
    pub(crate) server_cores: CoreList,
    /// The core the generator's thread is pinned to.
    #[arg(long, default_value_t = 1)]
    pub(crate) load_core: usize,
    /// The generator's I/O driver.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub(crate) driver: DriverChoice,
    /// The request path of the upgrade.
    #[arg(long, default_value = "/")]
    pub(crate) path: String,
    /// Seconds between readings of the server's RSS while it settles.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) settle_interval: f64,
    /// Percent by which two readings in a row may differ for the RSS to
    /// count as settled.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) settle_tolerance: f64,
    /// Seconds the RSS may take to settle; after that the last reading
    /// counts, marked as not settled.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) settle_timeout: f64,
    /// Seconds one connection may take to connect and upgrade.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) handshake_timeout: f64,
    /// The server the others are compared with, and the one held to the
    /// goal of 2 KiB per connection.
    #[arg(long, default_value = "shardcast")]
    pub(crate) baseline: String,
    /// ANCHORS.md, to quote uWebSockets' figures from its idle memory
    /// table beside ours.
    #[arg(long)]
    pub(crate) anchors: Option<PathBuf>,
    /// Write the result as a section of this report (BENCHMARKS.md).
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// The name of the report's section.
    #[arg(long, default_value = SECTION)]
    pub(crate) section: String,
    /// Print the result as one JSON object rather than the section.
    #[arg(long)]
    pub(crate) json: bool,
}

impl Args {
    fn settle(&self, pid: u32) -> anyhow::Result<memory::Settled> {
        memory::settle(
            pid,
            Duration::from_secs_f64(self.settle_interval),
            self.settle_tolerance / 100.0,
            Duration::from_secs_f64(self.settle_timeout),
        )
    }
}

/// What every server's run shares: the counts within reach, the source
/// addresses, the port range they were sized by, and the descriptor
/// limit.
struct Plan {
    /// The counts of `--counts` this machine's limits allow, rising.
    counts: Vec<usize>,
    /// Why each of the other counts is not measured.
    out_of_reach: Vec<String>,
    sources: Vec<Ipv4Addr>,
    ports: PortRange,
    nofile: limits::Raised,
    /// Limits that slow the run down without failing it.
    notes: Vec<String>,
}

impl Plan {
    /// Checks the counts and the system's limits, raises this process's
    /// descriptor limit (as far as it may), keeps the counts within it, and
    /// picks the source addresses.
    fn new(args: &Args) -> anyhow::Result<Plan> {
        let Some(&largest) = args.counts.last() else {
            bail!("no --counts to measure at");
        };
        if args.counts[0] == 0 || args.counts.windows(2).any(|pair| pair[0] >= pair[1]) {
            bail!("--counts must rise from at least 1, got {:?}", args.counts);
        }
        if !(args.settle_interval > 0.0 && args.settle_tolerance >= 0.0) {
            bail!("the settle interval must be above 0 s and the tolerance at least 0%");
        }
        // The server holds one descriptor per connection, and so does this
        // process: each needs the count and some to spare.
        let nofile = limits::raise_nofile((largest as u64).saturating_add(SPARE_FDS))?;
        let (counts, beyond): (Vec<usize>, Vec<usize>) = args
            .counts
            .iter()
            .partition(|&&count| count as u64 + SPARE_FDS <= nofile.after.soft);
        let out_of_reach: Vec<String> = beyond
            .iter()
            .map(|&count| {
                format!(
                    "{} connections: a process holding them needs {} descriptors, and may hold {} here: {}",
                    thousands(count as f64),
                    thousands((count as u64 + SPARE_FDS) as f64),
                    thousands(nofile.after.soft as f64),
                    nofile.short.as_deref().unwrap_or("RLIMIT_NOFILE")
                )
            })
            .collect();
        let Some(&reachable) = counts.last() else {
            bail!("no count is within reach: {}", out_of_reach.join("; "));
        };
        let ports = PortRange::read()?;
        let sources = sources_for(reachable, args.sources, ports)?;
        let notes = limits::check_system(reachable, args.concurrency as usize)?;
        Ok(Plan {
            counts,
            out_of_reach,
            sources: (0..sources)
                .map(|index| Ipv4Addr::new(127, 0, 0, 2 + index as u8))
                .collect(),
            ports,
            nofile,
            notes,
        })
    }

    /// What became of the descriptor limit, for the output and the report.
    fn nofile_text(&self) -> String {
        let (before, after) = (self.nofile.before, self.nofile.after);
        if before == after {
            format!(
                "File descriptors: RLIMIT_NOFILE {}/{} for the generator and the servers it starts.",
                after.soft, after.hard
            )
        } else {
            format!(
                "File descriptors: the generator raised its RLIMIT_NOFILE from {}/{} to {}/{}, and the servers inherit it.",
                before.soft, before.hard, after.soft, after.hard
            )
        }
    }

    /// `127.0.0.2` or `127.0.0.2 to 127.0.0.4`.
    fn sources_text(&self) -> String {
        match self.sources.as_slice() {
            [only] => only.to_string(),
            [first, .., last] => format!("{first} to {last}"),
            [] => String::new(),
        }
    }
}

/// How many source addresses `connections` are spread over: `asked` if
/// given, else as many as `ports` makes necessary.
pub(crate) fn sources_for(
    connections: usize,
    asked: Option<usize>,
    ports: PortRange,
) -> anyhow::Result<usize> {
    let needed = ports.sources_needed(connections, PORT_FILL);
    let sources = asked.unwrap_or(needed);
    if sources < needed {
        bail!(
            "{connections} connections need at least {needed} source addresses: net.ipv4.ip_local_port_range gives {} ports per source, of which a run fills {:.0}%",
            ports.len(),
            PORT_FILL * 100.0
        );
    }
    if sources > MAX_SOURCES {
        bail!("{sources} source addresses asked for; 127.0.0.2 to 127.0.0.254 are {MAX_SOURCES}");
    }
    Ok(sources)
}

/// The server's memory at one moment.
#[derive(Clone, Debug)]
struct Snapshot {
    /// VmRSS once settled, bytes.
    rss: u64,
    /// Whether it settled within the timeout.
    settled: bool,
    /// Its pages by kind of mapping, and its Pss.
    mappings: Mappings,
    /// The kernel's slab caches, when /proc/slabinfo is readable.
    slabs: Option<Slabs>,
}

impl Snapshot {
    fn take(args: &Args, pid: u32) -> anyhow::Result<Snapshot> {
        let settled = args.settle(pid)?;
        Ok(Snapshot {
            rss: settled.rss,
            settled: settled.settled,
            mappings: Mappings::read(pid)?,
            slabs: Slabs::read(),
        })
    }
}

/// One count reached.
#[derive(Clone, Debug)]
struct Checkpoint {
    /// Connections open.
    connections: usize,
    /// The server's memory with them.
    snapshot: Snapshot,
    /// Connections upgraded per second while opening toward this count.
    handshakes_per_second: f64,
    /// CPU the server and this process used while opening, in cores.
    server_cores_busy: f64,
    generator_cores_busy: f64,
    /// Connections the server had closed or reset when measured.
    closed: usize,
}

/// One server's run.
#[derive(Clone, Debug)]
struct ServerRun {
    name: String,
    /// The idle server before the first connection.
    before: Snapshot,
    checkpoints: Vec<Checkpoint>,
    /// Why the run ended before the last count, if it did.
    stopped: Option<String>,
}

/// Per-connection figures at one checkpoint, bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct PerConnection {
    /// VmRSS growth since the idle server.
    rss: f64,
    /// VmRSS growth since the previous count, per connection added.
    marginal: Option<f64>,
    /// Growth of each kind of mapping, of anonymous memory in huge pages,
    /// and of Pss.
    anonymous: f64,
    huge: f64,
    io_uring: f64,
    files: f64,
    other: f64,
    pss: f64,
    /// Kernel slab bytes per socket (either end), and per connection of
    /// the server's registrations, when slabinfo was readable.
    kernel_socket: Option<f64>,
    kernel_registration: Option<f64>,
}

/// `(after - before) / count`, signed.
fn per(after: u64, before: u64, count: usize) -> f64 {
    (after as f64 - before as f64) / count as f64
}

impl ServerRun {
    fn per_connection(&self, index: usize) -> PerConnection {
        let at = &self.checkpoints[index];
        let (now, then, n) = (&at.snapshot, &self.before, at.connections);
        let slabs = |caches: &[&str], divisor: usize| match (&now.slabs, &then.slabs) {
            (Some(now), Some(then)) => Some(per(now.bytes(caches), then.bytes(caches), divisor)),
            _ => None,
        };
        PerConnection {
            rss: per(now.rss, then.rss, n),
            marginal: index.checked_sub(1).map(|previous| {
                let previous = &self.checkpoints[previous];
                per(now.rss, previous.snapshot.rss, n - previous.connections)
            }),
            anonymous: per(now.mappings.anonymous, then.mappings.anonymous, n),
            huge: per(now.mappings.huge, then.mappings.huge, n),
            io_uring: per(now.mappings.io_uring, then.mappings.io_uring, n),
            files: per(now.mappings.files, then.mappings.files, n),
            other: per(now.mappings.other, then.mappings.other, n),
            pss: per(now.mappings.pss, then.mappings.pss, n),
            // Both ends of every connection are sockets on this machine.
            kernel_socket: slabs(&SOCKET_CACHES, 2 * n),
            kernel_registration: slabs(&REGISTRATION_CACHES, n),
        }
    }
}

/// Runs `shardcast-bench connections`.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
    if let Some(spec) = args.servers.iter().find(|spec| spec.speaks != Speaks::Raw) {
        bail!(
            "{} speaks {}: connections measures plain WebSocket servers (give them as NAME=COMMAND)",
            spec.name,
            spec.speaks.name()
        );
    }
    let plan = Plan::new(args)?;
    eprintln!("{}", plan.nofile_text());
    for note in &plan.notes {
        eprintln!("note: {note}");
    }
    for count in &plan.out_of_reach {
        eprintln!("not measured: {count}");
    }
    let anchors = args
        .anchors
        .as_deref()
        .map(read_anchors)
        .transpose()?
        .unwrap_or_default();
    cores::check_available(&[args.load_core])?;
    let mut runs = Vec::with_capacity(args.servers.len());
    let mut driver = "io_uring";
    for spec in &args.servers {
        let run = measure(args, &plan, spec, &mut driver)
            .with_context(|| format!("measuring {}", spec.name))?;
        if let Some(stopped) = &run.stopped {
            eprintln!("{} stopped early: {stopped}", run.name);
        }
        runs.push(run);
    }
    let command_line = shell_command_line(std::env::args());
    let section = render(
        args,
        &plan,
        &runs,
        &anchors,
        &command_line,
        driver,
        &Machine::read(),
    )?;
    if args.json {
        println!("{}", to_json(&plan, &runs));
    } else {
        print!("{section}");
    }
    if let Some(report) = &args.report {
        report_file::replace_section(report, &args.section, &section)?;
        eprintln!("wrote the {} section of {}", args.section, report.display());
    }
    Ok(())
}

/// One server: start it, open the connections count by count, measure at
/// each, kill it and close the sockets.
fn measure(
    args: &Args,
    plan: &Plan,
    spec: &ServerSpec,
    driver: &mut &'static str,
) -> anyhow::Result<ServerRun> {
    let port = free_port()?;
    let mut server = RunningServer::start(spec, port, &args.server_cores)?;
    let pid = server.pid();
    let largest = plan.counts.last().copied().unwrap_or(0);
    let limit = Nofile::soft_of(pid)?;
    if limit < largest as u64 + SPARE_FDS {
        bail!(
            "{} may hold only {limit} descriptors (its RLIMIT_NOFILE), too few for {largest} connections",
            spec.name
        );
    }
    let target = Target::parse(&format!("ws://127.0.0.1:{port}{}", args.path))?;
    let before = Snapshot::take(args, pid)?;
    eprintln!(
        "{}: {} idle{}",
        spec.name,
        mib(before.rss),
        if before.settled { "" } else { " (not settled)" }
    );
    let mut run = ServerRun {
        name: spec.name.clone(),
        before,
        checkpoints: Vec::new(),
        stopped: None,
    };
    let mut held: Vec<OwnedFd> = Vec::with_capacity(largest);
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64);
    let ticks = proc_stat::ticks_per_second();
    for &count in &plan.counts {
        let from = held.len();
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let server_cpu = CpuTimes::read(Some(pid))?;
        let generator_cpu = CpuTimes::read(None)?;
        let opened = open_up_to(args, plan, &target, &mut held, count, seed);
        let (seconds, used) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                run.stopped = Some(format!(
                    "at {} of {} connections: {error:#}",
                    thousands(held.len() as f64),
                    thousands(count as f64)
                ));
                break;
            }
        };
        *driver = used;
        let server_cpu = CpuTimes::read(Some(pid))?.since(&server_cpu, ticks);
        let generator_cpu = CpuTimes::read(None)?.since(&generator_cpu, ticks);
        if let Err(error) = server.check_running() {
            run.stopped = Some(format!("at {}: {error:#}", thousands(count as f64)));
            break;
        }
        let snapshot = Snapshot::take(args, pid)?;
        let closed = closed_by_peer(&held)?;
        let checkpoint = Checkpoint {
            connections: count,
            snapshot,
            handshakes_per_second: (count - from) as f64 / seconds,
            server_cores_busy: server_cpu.total / seconds,
            generator_cores_busy: generator_cpu.total / seconds,
            closed,
        };
        eprintln!(
            "{}: {} connections, {}, {} handshakes/s (server {:.0}% and generator {:.0}% of a core), {closed} closed by the server",
            spec.name,
            thousands(count as f64),
            mib(checkpoint.snapshot.rss),
            format_rate(checkpoint.handshakes_per_second),
            checkpoint.server_cores_busy * 100.0,
            checkpoint.generator_cores_busy * 100.0,
        );
        run.checkpoints.push(checkpoint);
    }
    // The server goes first: its sockets close in the kernel at once, and
    // ours have nobody left to tell.
    drop(server);
    drop(held);
    Ok(run)
}

/// Shared by the tasks opening connections on the generator's thread.
struct Opening {
    target: Target,
    sources: Vec<Ipv4Addr>,
    /// The index of the next connection to open.
    next: Cell<usize>,
    /// One past the last connection to open.
    end: usize,
    handshake_timeout: Duration,
    /// The sockets of the connections upgraded.
    opened: RefCell<Vec<OwnedFd>>,
    /// The first failure: no connection is started after it.
    failure: RefCell<Option<anyhow::Error>>,
}

impl Opening {
    fn fail(&self, error: anyhow::Error) {
        self.failure.borrow_mut().get_or_insert(error);
    }
}

/// Opens connections until `held` has `count`, `--concurrency` at a time
/// on a fresh runtime in a thread pinned to the load core; returns the
/// seconds it took and the driver used. The sockets opened are in `held`
/// even when it fails.
fn open_up_to(
    args: &Args,
    plan: &Plan,
    target: &Target,
    held: &mut Vec<OwnedFd>,
    count: usize,
    seed: u64,
) -> anyhow::Result<(f64, &'static str)> {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                cores::pin_current_thread(args.load_core)?;
                open_on_this_thread(args, plan, target, held, count, seed)
            })
            .join()
            .map_err(|_| anyhow!("the thread opening connections panicked"))?
    })
}

fn open_on_this_thread(
    args: &Args,
    plan: &Plan,
    target: &Target,
    held: &mut Vec<OwnedFd>,
    count: usize,
    seed: u64,
) -> anyhow::Result<(f64, &'static str)> {
    let mut runtime = args.driver.build()?;
    let driver = driver_name(&runtime);
    let opening = Rc::new(Opening {
        target: target.clone(),
        sources: plan.sources.clone(),
        next: Cell::new(held.len()),
        end: count,
        handshake_timeout: Duration::from_secs_f64(args.handshake_timeout),
        opened: RefCell::new(Vec::with_capacity(count - held.len())),
        failure: RefCell::new(None),
    });
    let workers = (args.concurrency as usize).min(count - held.len());
    let start = Instant::now();
    runtime.block_on({
        let opening = Rc::clone(&opening);
        async move {
            let mut rng = XorShift::new(seed);
            let tasks: Vec<_> = (0..workers)
                .map(|_| monoio::spawn(open_connections(Rc::clone(&opening), rng.next())))
                .collect();
            for task in tasks {
                task.await;
            }
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    held.append(&mut opening.opened.borrow_mut());
    match opening.failure.borrow_mut().take() {
        Some(error) => Err(error),
        None => Ok((seconds, driver)),
    }
}

/// One of the `--concurrency` tasks: opens the next connection until
/// there is none left or one has failed.
async fn open_connections(opening: Rc<Opening>, seed: u64) {
    let mut rng = XorShift::new(seed);
    loop {
        let index = opening.next.get();
        if index >= opening.end || opening.failure.borrow().is_some() {
            return;
        }
        opening.next.set(index + 1);
        if index % MEMORY_CHECK_EVERY == 0 {
            if let Err(error) = check_memory_left() {
                opening.fail(error);
                return;
            }
        }
        let source = opening.sources[index % opening.sources.len()];
        let upgraded = monoio::time::timeout(
            opening.handshake_timeout,
            upgrade(&opening.target, source, &mut rng),
        )
        .await;
        match upgraded {
            Ok(Ok(socket)) => opening.opened.borrow_mut().push(socket),
            Ok(Err(error)) => opening.fail(error.context(format!("connection from {source}"))),
            Err(_) => opening.fail(anyhow!(
                "a connection from {source} was not upgraded within {:?}",
                opening.handshake_timeout
            )),
        }
    }
}

/// Fails when the machine is down to its last [`MEMORY_FLOOR`].
fn check_memory_left() -> anyhow::Result<()> {
    let available = memory::available()?;
    if available < MEMORY_FLOOR {
        bail!(
            "the machine is down to {} available (MemAvailable), below the {} this benchmark leaves it",
            mib(available),
            mib(MEMORY_FLOOR)
        );
    }
    Ok(())
}

/// Connects from `source` (any port) and upgrades; returns the socket
/// alone, everything else about the connection dropped.
pub(crate) async fn upgrade(
    target: &Target,
    source: Ipv4Addr,
    rng: &mut XorShift,
) -> anyhow::Result<OwnedFd> {
    let mut stream = connect_from(target, source).await?;
    client::handshake(&mut stream, target, None, rng).await?;
    let fd = stream.into_raw_fd();
    // SAFETY: into_raw_fd hands over the stream's descriptor, open, and
    // nothing else owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a TCP connection to `target` from `source`, the port chosen at
/// connect time; returns once it is connected (or its connect failed,
/// which the first write then reports).
pub(crate) async fn connect_from(target: &Target, source: Ipv4Addr) -> anyhow::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .context("creating a socket")?;
    socket.set_nonblocking(true)?;
    set_bind_address_no_port(&socket).context("setting IP_BIND_ADDRESS_NO_PORT")?;
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .with_context(|| format!("binding to {source}"))?;
    match socket.connect(&target.addr.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error).with_context(|| format!("connecting to {}", target.addr)),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    // A failed connect wakes this too; the request's write then fails.
    stream.writable(true).await?;
    Ok(stream)
}

/// Lets connect() pick the port, rather than bind(): a port bound to a
/// source address without it is that address's for every destination,
/// and a run of tens of thousands of connections runs out of them.
fn set_bind_address_no_port(socket: &Socket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is open for the call (borrowed from
    // `socket`), and the value points to a live c_int of the length given.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How many of `sockets` the peer has closed or reset, seen without
/// reading anything: an end of stream, a hang-up or an error pending.
fn closed_by_peer(sockets: &[OwnedFd]) -> anyhow::Result<usize> {
    let mut polls: Vec<libc::pollfd> = sockets
        .iter()
        .map(|socket| libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        })
        .collect();
    // SAFETY: `polls` is a live array of exactly `polls.len()` pollfds, and
    // every descriptor in it stays open (borrowed from `sockets`) for the
    // call, which does not block (timeout 0).
    let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 0) };
    if ready < 0 {
        return Err(std::io::Error::last_os_error()).context("polling the connections");
    }
    let closed = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR;
    Ok(polls
        .iter()
        .filter(|poll| poll.revents & closed != 0)
        .count())
}

/// A row of ANCHORS.md's idle memory table: a server and its bytes per
/// connection.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Anchor {
    server: String,
    bytes: u64,
}

/// The uWebSockets rows of the idle memory table of ANCHORS.md.
fn read_anchors(path: &Path) -> anyhow::Result<Vec<Anchor>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let anchors = parse_anchors(&text);
    if anchors.is_empty() {
        bail!(
            "{} has no uWebSockets row under a `## Memory per idle` heading",
            path.display()
        );
    }
    Ok(anchors)
}

fn parse_anchors(text: &str) -> Vec<Anchor> {
    text.lines()
        .skip_while(|line| !line.starts_with("## Memory per idle"))
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().strip_prefix('|')?.split('|').collect();
            let server = cells.first()?.trim();
            let bytes = cells.get(1)?.trim().replace(',', "").parse().ok()?;
            server.starts_with("uWebSockets").then(|| Anchor {
                server: server.to_owned(),
                bytes,
            })
        })
        .collect()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The report section: command, machine, method, the tables and the
/// comparison with the goal and with uWebSockets.
fn render(
    args: &Args,
    plan: &Plan,
    runs: &[ServerRun],
    anchors: &[Anchor],
    command_line: &str,
    driver: &str,
    machine: &Machine,
) -> anyhow::Result<String> {
    let mut out = section_header(
        "Memory per idle connection",
        "Generated by `shardcast-bench connections`:",
        command_line,
        machine,
    );
    writeln!(
        out,
        "Method: each server in turn started on a free port, pinned with `taskset -c {}`; once its RSS settled, the generator (one monoio thread on core {}, {driver} driver) opened upgraded WebSocket connections, {} handshakes in flight at most, spread over {} source address(es), {} (each socket bound to its source before connecting; the ephemeral ports {}-{} give {} connections per source to one server). After its handshake a connection is only its socket: nothing is sent or read. The counts are reached in turn, each on top of the last. At each count the server's VmRSS was read every {} s until two readings in a row were within {}% ({} s at most), then its /proc/PID/smaps and /proc/slabinfo, and every connection was checked still open. Bytes per connection: (VmRSS at the count - VmRSS before the first connection) / count; marginal: the growth since the previous count / the connections added. Handshakes/s: connections connected and upgraded per second while opening toward the count; CPU while opening: the server's and the generator's CPU time over that time (/proc/PID/stat), 100% being one core (on loopback the sender's CPU also runs the kernel's TCP work for the receiving end). At the end the server was killed, then every socket closed.\n",
        args.server_cores,
        args.load_core,
        args.concurrency,
        plan.sources.len(),
        plan.sources_text(),
        plan.ports.first,
        plan.ports.last,
        thousands(plan.ports.len() as f64),
        args.settle_interval,
        args.settle_tolerance,
        args.settle_timeout,
    )?;
    writeln!(out, "{}\n", plan.nofile_text())?;
    for note in &plan.notes {
        writeln!(out, "Note: {note}.\n")?;
    }

    let baseline = runs.iter().find(|run| run.name == args.baseline);
    writeln!(out, "### Server RSS per idle connection\n")?;
    writeln!(
        out,
        "| server | connections | RSS before | RSS at the count | bytes per connection | marginal | handshakes/s | CPU while opening: server / generator |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for run in runs {
        for (index, checkpoint) in run.checkpoints.iter().enumerate() {
            let figures = run.per_connection(index);
            let ratio = baseline
                .filter(|baseline| baseline.name != run.name)
                .and_then(|baseline| {
                    let at = baseline
                        .checkpoints
                        .iter()
                        .position(|c| c.connections == checkpoint.connections)?;
                    ratio_lower_is_better(baseline.per_connection(at).rss, figures.rss)
                })
                .map_or_else(String::new, |ratio| format!(", {ratio:.2}x"));
            let mut connections = thousands(checkpoint.connections as f64);
            if checkpoint.closed > 0 {
                write!(
                    connections,
                    " ({} closed by the server)",
                    thousands(checkpoint.closed as f64)
                )?;
            }
            writeln!(
                out,
                "| {} | {connections} | {} | {}{} | {}{ratio} | {} | {} | {:.0}% / {:.0}% |",
                run.name,
                mib(run.before.rss),
                mib(checkpoint.snapshot.rss),
                if checkpoint.snapshot.settled {
                    ""
                } else {
                    " (not settled)"
                },
                thousands(figures.rss),
                figures.marginal.map_or_else(|| "-".to_owned(), thousands),
                format_rate(checkpoint.handshakes_per_second),
                checkpoint.server_cores_busy * 100.0,
                checkpoint.generator_cores_busy * 100.0,
            )?;
        }
    }
    writeln!(out)?;
    if baseline.is_some() && runs.len() > 1 {
        writeln!(
            out,
            "Ratios: a server's bytes per connection against {}'s at the same count (above 1: {} uses less).\n",
            args.baseline, args.baseline
        )?;
    }
    for run in runs {
        if let Some(stopped) = &run.stopped {
            writeln!(out, "{} stopped {stopped}.\n", run.name)?;
        }
    }
    for count in &plan.out_of_reach {
        writeln!(out, "Not measured, out of this machine's reach: {count}.\n")?;
    }

    writeln!(
        out,
        "### Where it goes, bytes per connection at the largest count\n"
    )?;
    writeln!(
        out,
        "Growth since the idle server, per connection: resident bytes by kind of mapping in /proc/PID/smaps (anonymous: heap, allocator arenas, stacks; in parentheses the part in transparent huge pages, resident 2 MiB at a time), and Pss, the proportional set size. The kernel's objects are outside every RSS: a socket (slab caches {}; both ends of every connection are on this machine, so their growth is divided by twice the count) and the server's interest in it ({}: an io_uring request waiting on it, or an epoll registration). Slab caches are system-wide, so other work on the machine adds noise to those two.\n",
        SOCKET_CACHES.join(", "),
        REGISTRATION_CACHES.join(", "),
    )?;
    writeln!(
        out,
        "| server | connections | anonymous | io_uring mappings | files | other | Pss | kernel, per socket | kernel, registrations |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for run in runs {
        let Some(last) = run.checkpoints.len().checked_sub(1) else {
            continue;
        };
        let figures = run.per_connection(last);
        let kernel = |bytes: Option<f64>| bytes.map_or_else(|| "-".to_owned(), thousands);
        writeln!(
            out,
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} |",
            run.name,
            thousands(run.checkpoints[last].connections as f64),
            thousands(figures.anonymous),
            thousands(figures.huge),
            thousands(figures.io_uring),
            thousands(figures.files),
            thousands(figures.other),
            thousands(figures.pss),
            kernel(figures.kernel_socket),
            kernel(figures.kernel_registration),
        )?;
    }
    writeln!(out)?;

    if let Some(baseline) = baseline.filter(|run| !run.checkpoints.is_empty()) {
        writeln!(out, "### Against the goal and uWebSockets\n")?;
        for (index, checkpoint) in baseline.checkpoints.iter().enumerate() {
            let figures = baseline.per_connection(index);
            let bytes = figures.rss;
            let verdict = if bytes <= GOAL_BYTES {
                format!("{} under the goal", thousands(GOAL_BYTES - bytes))
            } else {
                format!("{} over the goal", thousands(bytes - GOAL_BYTES))
            };
            writeln!(
                out,
                "- {} at {} connections: {} bytes per connection, goal at most {} (2 KiB): {verdict}{}.",
                baseline.name,
                thousands(checkpoint.connections as f64),
                thousands(bytes),
                thousands(GOAL_BYTES),
                figures
                    .marginal
                    .map_or_else(String::new, |marginal| format!(
                        "; the connections added since {} cost {} each",
                        thousands(baseline.checkpoints[index - 1].connections as f64),
                        thousands(marginal)
                    )),
            )?;
        }
        if let Some(path) = &args.anchors {
            let first = &baseline.checkpoints[0];
            let bytes = baseline.per_connection(0).rss;
            writeln!(
                out,
                "- From {} (measured on another machine of the same kind, not side by side with these), against {} at {} connections:",
                path.display(),
                baseline.name,
                thousands(first.connections as f64)
            )?;
            for anchor in anchors {
                writeln!(
                    out,
                    "  - {}: {} bytes per connection; {} uses {:.2}x that.",
                    anchor.server,
                    thousands(anchor.bytes as f64),
                    baseline.name,
                    bytes / anchor.bytes as f64
                )?;
            }
        }
        writeln!(out)?;
    }
    Ok(out)
}

/// The result as JSON.
fn to_json(plan: &Plan, runs: &[ServerRun]) -> serde_json::Value {
    let servers: Vec<_> = runs
        .iter()
        .map(|run| {
            let checkpoints: Vec<_> = run
                .checkpoints
                .iter()
                .enumerate()
                .map(|(index, checkpoint)| {
                    let figures = run.per_connection(index);
                    json!({
                        "connections": checkpoint.connections,
                        "rss": checkpoint.snapshot.rss,
                        "settled": checkpoint.snapshot.settled,
                        "closed_by_server": checkpoint.closed,
                        "handshakes_per_second": checkpoint.handshakes_per_second,
                        "server_cores_busy_opening": checkpoint.server_cores_busy,
                        "generator_cores_busy_opening": checkpoint.generator_cores_busy,
                        "bytes_per_connection": figures.rss,
                        "marginal_bytes_per_connection": figures.marginal,
                        "pss_bytes_per_connection": figures.pss,
                        "anonymous_bytes_per_connection": figures.anonymous,
                        "huge_page_bytes_per_connection": figures.huge,
                        "io_uring_bytes_per_connection": figures.io_uring,
                        "kernel_bytes_per_socket": figures.kernel_socket,
                        "kernel_registration_bytes_per_connection": figures.kernel_registration,
                    })
                })
                .collect();
            json!({
                "name": run.name,
                "rss_before": run.before.rss,
                "settled_before": run.before.settled,
                "stopped": run.stopped,
                "checkpoints": checkpoints,
            })
        })
        .collect();
    json!({
        "sources": plan.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "nofile": plan.nofile.after.soft,
        "out_of_reach": plan.out_of_reach,
        "servers": servers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHORS: &str = "\
# The peers' figures

## Echo throughput, messages/s (median of 3)

| server | 100 × 32 B |
|---|---|
| uWebSockets C++, io_uring | 153.0k |

## Memory per idle upgraded connection (RSS delta / connections)

| server | bytes per connection |
|---|---|
| uWebSockets C++, epoll | 272 |
| uWebSockets.js | 675 |
| Node ws | 6,332 |
| uWebSockets C++, io_uring (1,000 connections; a fixed table) | 6,647 |

uWebSockets holds an idle connection in a few hundred bytes.

## Fan-out

| uWebSockets C++ pub/sub, epoll | 450k |
";

    #[test]
    fn anchors_are_the_uwebsockets_rows_of_the_idle_memory_table() {
        assert_eq!(
            parse_anchors(ANCHORS),
            [
                Anchor {
                    server: "uWebSockets C++, epoll".into(),
                    bytes: 272
                },
                Anchor {
                    server: "uWebSockets.js".into(),
                    bytes: 675
                },
                Anchor {
                    server: "uWebSockets C++, io_uring (1,000 connections; a fixed table)".into(),
                    bytes: 6647
                },
            ]
        );
        assert!(parse_anchors("# nothing here\n| uWebSockets | 1 |\n").is_empty());
    }

    fn snapshot(rss_kib: u64, socket_objects: u64) -> Snapshot {
        let slabs = format!(
            "TCP {socket_objects} {socket_objects} 2048 1 1 : tunables 0 0 0 : slabdata 0 0 0\n\
             io_kiocb {socket_objects} {socket_objects} 128 1 1 : tunables 0 0 0 : slabdata 0 0 0\n"
        );
        Snapshot {
            rss: rss_kib * 1024,
            settled: true,
            mappings: Mappings {
                anonymous: rss_kib * 1024,
                pss: rss_kib * 1024,
                ..Mappings::default()
            },
            slabs: Some(Slabs::parse(&slabs)),
        }
    }

    fn run(name: &str, before_kib: u64, at: &[(usize, u64)]) -> ServerRun {
        ServerRun {
            name: name.into(),
            before: snapshot(before_kib, 0),
            checkpoints: at
                .iter()
                .map(|&(connections, rss_kib)| Checkpoint {
                    connections,
                    // Two sockets per connection; the server's half of the
                    // io_kiocb objects are the other end's, in this toy.
                    snapshot: snapshot(rss_kib, 2 * connections as u64),
                    handshakes_per_second: 20_000.0,
                    server_cores_busy: 0.95,
                    generator_cores_busy: 0.5,
                    closed: 0,
                })
                .collect(),
            stopped: None,
        }
    }

    fn args() -> Args {
        Args {
            servers: vec![
                "shardcast=bin/shardcast {port}".parse().unwrap(),
                "peer=bin/peer {port}".parse().unwrap(),
            ],
            counts: vec![1000, 5000],
            sources: None,
            concurrency: 256,
            server_cores: "0".parse().unwrap(),
            load_core: 1,
            driver: DriverChoice::Auto,
            path: "/".into(),
            settle_interval: 1.0,
            settle_tolerance: 1.0,
            settle_timeout: 30.0,
            handshake_timeout: 10.0,
            baseline: "shardcast".into(),
            anchors: Some("ANCHORS.md".into()),
            report: None,
            section: SECTION.into(),
            json: false,
        }
    }

    fn plan() -> Plan {
        Plan {
            counts: vec![1000, 5000],
            out_of_reach: vec!["50,000 connections: too many".into()],
            sources: vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
            ports: PortRange {
                first: 32768,
                last: 60999,
            },
            nofile: limits::Raised {
                before: Nofile {
                    soft: 1024,
                    hard: 4096,
                },
                after: Nofile {
                    soft: 6024,
                    hard: 6024,
                },
                short: None,
            },
            notes: Vec::new(),
        }
    }

    #[test]
    fn figures_per_connection_are_deltas_over_the_count() {
        // 1,000 connections add 2,000 KiB; 4,000 more add 6,000 KiB.
        let run = run("shardcast", 1000, &[(1000, 3000), (5000, 9000)]);
        let first = run.per_connection(0);
        assert_eq!(first.rss, 2048.0);
        assert_eq!(first.marginal, None);
        assert_eq!(first.anonymous, 2048.0);
        assert_eq!(first.pss, 2048.0);
        // 2,000 TCP objects of 2,048 bytes over 2,000 sockets.
        assert_eq!(first.kernel_socket, Some(2048.0));
        assert_eq!(first.kernel_registration, Some(256.0));
        let second = run.per_connection(1);
        assert_eq!(second.rss, 8000.0 * 1024.0 / 5000.0);
        assert_eq!(second.marginal, Some(1536.0));
    }

    #[test]
    fn the_section_has_the_tables_the_goal_and_the_anchors() {
        let runs = [
            run("shardcast", 1000, &[(1000, 3000), (5000, 9000)]),
            run("peer", 2000, &[(1000, 12000)]),
        ];
        let anchors = parse_anchors(ANCHORS);
        let machine = Machine {
            cpu: "Test CPU".into(),
            cores: 2,
            kernel: "6.0".into(),
            commit: "abc".into(),
            rustc: "rustc".into(),
        };
        let mut runs = runs.to_vec();
        runs[1].stopped = Some("at 1,200 of 5,000 connections: refused".into());
        let text = render(
            &args(),
            &plan(),
            &runs,
            &anchors,
            "shardcast-bench connections",
            "io_uring",
            &machine,
        )
        .unwrap();
        assert!(text.contains("    shardcast-bench connections\n"), "{text}");
        assert!(text.contains("Test CPU, 2 logical cores"), "{text}");
        assert!(
            text.contains("2 source address(es), 127.0.0.2 to 127.0.0.3"),
            "{text}"
        );
        assert!(
            text.contains("from 1024/4096 to 6024/6024, and the servers inherit it"),
            "{text}"
        );
        assert!(
            text.contains(
                "| shardcast | 1,000 | 1.0 MiB | 2.9 MiB | 2,048 | - | 20.0k | 95% / 50% |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| shardcast | 5,000 | 1.0 MiB | 8.8 MiB | 1,638 | 1,536 | 20.0k | 95% / 50% |"
            ),
            "{text}"
        );
        // 10,000 KiB over 1,000 connections, five times shardcast's.
        assert!(
            text.contains(
                "| peer | 1,000 | 2.0 MiB | 11.7 MiB | 10,240, 5.00x | - | 20.0k | 95% / 50% |"
            ),
            "{text}"
        );
        assert!(
            text.contains("peer stopped at 1,200 of 5,000 connections: refused."),
            "{text}"
        );
        assert!(
            text.contains("| shardcast | 5,000 | 1,638 (0) | 0 | 0 | 0 | 1,638 | 2,048 | 256 |"),
            "{text}"
        );
        assert!(
            text.contains("- shardcast at 1,000 connections: 2,048 bytes per connection, goal at most 2,048 (2 KiB): 0 under the goal."),
            "{text}"
        );
        assert!(
            text.contains("- shardcast at 5,000 connections: 1,638 bytes per connection, goal at most 2,048 (2 KiB): 410 under the goal; the connections added since 1,000 cost 1,536 each."),
            "{text}"
        );
        assert!(
            text.contains(
                "  - uWebSockets C++, epoll: 272 bytes per connection; shardcast uses 7.53x that."
            ),
            "{text}"
        );
        assert!(!text.contains("Node ws"), "{text}");
        assert!(
            text.contains(
                "Not measured, out of this machine's reach: 50,000 connections: too many."
            ),
            "{text}"
        );
    }

    #[test]
    fn counts_must_rise() {
        let mut args = args();
        args.counts = vec![5000, 1000];
        assert!(Plan::new(&args).is_err());
        args.counts = vec![0, 10];
        assert!(Plan::new(&args).is_err());
        args.counts = Vec::new();
        assert!(Plan::new(&args).is_err());
    }

    #[test]
    fn sources_are_as_many_as_the_ports_need_or_as_asked() {
        let ports = PortRange {
            first: 1000,
            last: 1999,
        };
        assert_eq!(sources_for(700, None, ports).unwrap(), 1);
        assert_eq!(sources_for(800, None, ports).unwrap(), 2);
        assert_eq!(sources_for(800, Some(3), ports).unwrap(), 3);
        let error = sources_for(2000, Some(2), ports).unwrap_err().to_string();
        assert!(
            error.contains("2000 connections need at least 3 source addresses"),
            "{error}"
        );
        assert!(sources_for(10, Some(254), ports).is_err());
    }
}
