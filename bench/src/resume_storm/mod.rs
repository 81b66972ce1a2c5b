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
//! token and its last position (the `Resume` and `Welcome` tables of the
//! schema `proto/schema/shardcast.fbs`; the sessions paragraph of the
//! README's "Rooms and the shardcast.v1 protocol" section), and is back
//! once the resumed `Welcome` arrives. A `RecoveryFailed`, a room
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

mod args;
mod clients;
mod link;
mod outcome;
mod phase;
mod probes;
mod publishers;
mod report;
mod shared;
mod stamp;
mod track;
mod tracker;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;

pub(crate) use self::args::Args;
use self::args::ConfigFile;
use self::clients::Storm;
use self::outcome::Outcome;
use self::probes::{MAX_LATENCY_NANOS, Probed, probe};
use self::publishers::{Published, publish};
use self::shared::Shared;
use self::tracker::Counts;
use crate::client::{Target, XorShift};
use crate::connections::{self, SPARE_FDS};
use crate::cores;
use crate::echo::driver_name;
use crate::limits::{self, PortRange};
use crate::machine::Machine;
use crate::report_file;
use crate::servers::{RunningServer, shell_command_line};

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

/// Starts the server if asked, and runs the storm against it.
pub(crate) fn run(args: &Args) -> anyhow::Result<Outcome> {
    args.check()?;
    let mut config = None;
    if let Some(command) = &args.served.server {
        if command.contains("{config}") {
            config = Some(ConfigFile::write(args.history())?);
        }
        // The server inherits the open file limit: raise it first.
        let clients = args.clients as u64 + u64::from(args.probes) + u64::from(args.publishers);
        limits::raise_nofile(clients * 2 + SPARE_FDS)?;
    }
    let (url, server) = args
        .served
        .start(config.as_ref().map(|file| file.path.as_path()))?;
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
                    let members = clients::members(&args, &storm_rooms, &sources, &mut rng);
                    let mut runtime = args.driver.build()?;
                    let driver = driver_name(&runtime);
                    let storm = Storm::new(
                        args,
                        target,
                        Arc::clone(&shared),
                        storm_rooms,
                        members,
                        server_pid,
                    );
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
