//! shardcast-bench: benchmarks of shardcast against its peers, and the
//! generator of BENCHMARKS.md.
//!
//! - `echo`: closed-loop echo load against one server (monoio, io_uring),
//!   plain WebSocket messages or Socket.IO events.
//! - `latency`: echo latency percentiles at a fixed offered rate, open
//!   loop (coordinated omission corrected), paced to the microsecond.
//! - `fanout`: rooms with subscribers and publishers, through each
//!   server's own room protocol (uWebSockets.js topics, Socket.IO rooms,
//!   shardcast.v1); deliveries/s and publish-to-delivery latency.
//! - `storm`: clients dropping and reconnecting at once; time until all
//!   are back, and the latency of the connections that stayed.
//! - `compare`: servers side by side under the same scenarios in one
//!   session, each pinned and restarted per run; every run a JSON record.
//! - `report`: BENCHMARKS.md's scenario sections and plots from those
//!   records.
//! - `scaling`: shardcast with 1, 2, 4, 8 shards against uWebSockets.js
//!   with as many processes, each with as many load cores.
//! - `trivial-echo`: a minimal busy-polling echo server with no engine, a
//!   reference point beside the servers under test.
//! - `connections`: servers' memory per idle upgraded connection and their
//!   handshake rate, tens of thousands of connections from several source
//!   addresses; the `engine-connections` section of BENCHMARKS.md.
//! - `hops`: the latency of a publish that crosses shards (to the room's
//!   owner, from it to the subscriber's shard) against one that stays on
//!   its shard, against `shardcast serve --shards 2`; the `engine-hops`
//!   section of BENCHMARKS.md.
//! - `resume-storm`: every shardcast.v1 client of `shardcast serve` cut
//!   at once and resuming its session with jitter: time until all are
//!   back, messages lost (none allowed), and the latency of connections
//!   not cut; the `engine-resume-storm` section of BENCHMARKS.md.
//! - `codec-report`: the protocol codec section of BENCHMARKS.md, from
//!   criterion's results.
//! - `allocations-report`: the engine's allocations per echoed message,
//!   from the counting-allocator test's results.

mod allocations_report;
mod client;
mod codec_report;
mod compare;
mod connections;
mod cores;
mod echo;
mod fanout;
mod hops;
mod latency;
mod limits;
mod machine;
mod memory;
mod open_loop;
mod pacing;
mod placement;
mod plot;
mod proc_stat;
mod record;
mod report;
mod report_file;
mod resume_storm;
mod room_protocol;
mod scaling;
mod scenario;
mod served;
mod servers;
mod socket_io;
mod stats;
mod storm;
mod trivial_echo;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Command line of shardcast-bench.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Echo load against one WebSocket server: N connections, each sending
    /// the next message when the echo of the last arrives.
    Echo(echo::Args),
    /// Echo latency at a fixed offered rate: messages leave on a schedule
    /// whatever the replies, and latency counts from each one's intended
    /// send time; percentiles, achieved rate, schedule lag, CPU shares.
    Latency(latency::Args),
    /// Publish/subscribe load against one server: M subscribers in K
    /// rooms, P publishers, closed loop (each round waits for every
    /// delivery) or a fixed publish rate; deliveries per second and
    /// publish-to-delivery latency, every message checked.
    Fanout(fanout::Args),
    /// Reconnection storm: every client drops and reconnects at once (or
    /// within a jitter); time until all are back, handshakes/s, and the
    /// latency of probe connections before and during the storm.
    Storm(storm::Args),
    /// Servers side by side under the same scenarios (echo, latency,
    /// fanout, storm) in one session: each pinned and restarted per run,
    /// rounds in shuffled order; every run appended to a JSON-lines file
    /// of records, optionally reported to BENCHMARKS.md at the end.
    Compare(compare::Args),
    /// Writes the scenario sections of BENCHMARKS.md, with SVG plots, from
    /// the records `compare` wrote.
    Report(report::Args),
    /// Throughput against cores: shardcast with 1, 2, 4, 8 shards and
    /// uWebSockets.js with as many processes (SO_REUSEPORT), the load on
    /// as many further cores; counts that do not fit are skipped.
    Scaling(scaling::Args),
    /// A minimal echo server with no engine (127.0.0.1, one busy-polling
    /// thread, one read and one write per ready connection): a reference
    /// point beside the servers under test.
    TrivialEcho(trivial_echo::Args),
    /// Memory per idle connection: opens upgraded connections to each
    /// server up to each count, from several 127.0.0.x source addresses,
    /// and measures the server's RSS per connection and the handshake
    /// rate; optionally written to BENCHMARKS.md.
    Connections(connections::Args),
    /// Cost of a cross-shard publish: against `shardcast serve` with 2
    /// shards, publish-to-delivery latency, one message in flight, with
    /// publisher, subscriber and the room's owner on one shard (local),
    /// the subscriber on the other shard (1 hop), or the owner on the
    /// other shard (2 hops); optionally written to BENCHMARKS.md.
    Hops(hops::Args),
    /// Session resume storm: every shardcast.v1 client of `shardcast
    /// serve` is cut at once (RST) and reconnects after a random delay
    /// within a jitter, resuming its session; time until all are back,
    /// messages lost or duplicated (the run fails on any), recovery
    /// failures, and the latency of probe connections before and during
    /// the storm; optionally written to BENCHMARKS.md.
    ResumeStorm(resume_storm::Args),
    /// Writes the protocol codec section of BENCHMARKS.md from criterion's
    /// results (`cargo bench -p shardcast-proto --bench codec`).
    CodecReport {
        /// criterion's output folder.
        #[arg(long, default_value = "target/criterion")]
        criterion: PathBuf,
        /// The report to update; only the codec section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// The command that produced the results, printed above the tables.
        #[arg(long)]
        command: String,
    },
    /// Writes the engine allocations section of BENCHMARKS.md from the
    /// JSON lines `engine/tests/allocations.rs` appends to the file named
    /// by SHARDCAST_ALLOCATIONS_OUT.
    AllocationsReport {
        /// The JSON lines file.
        #[arg(long)]
        results: PathBuf,
        /// The report to update; only the allocations section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// The command that produced the results, printed above the table.
        #[arg(long)]
        command: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A load holds a socket per connection and reads /proc beside them;
    // the servers it starts inherit the limit too.
    limits::raise_nofile(0).context("raising the open file limit")?;
    match cli.command {
        Command::Echo(args) => echo::command(&args),
        Command::Latency(args) => latency::command(&args),
        Command::Fanout(args) => fanout::command(&args),
        Command::Storm(args) => storm::command(&args),
        Command::Compare(args) => compare::command(&args),
        Command::Report(args) => report::command(&args),
        Command::Scaling(args) => scaling::command(&args),
        Command::TrivialEcho(args) => trivial_echo::command(&args),
        Command::Connections(args) => connections::command(&args),
        Command::Hops(args) => hops::command(&args),
        Command::ResumeStorm(args) => resume_storm::command(&args),
        Command::CodecReport {
            criterion,
            out,
            command,
        } => {
            let section = codec_report::render(&criterion, &command, &machine::Machine::read())?;
            write_section(&out, codec_report::SECTION, &section)
        }
        Command::AllocationsReport {
            results,
            out,
            command,
        } => {
            let machine = machine::Machine::read();
            let section = allocations_report::render(&results, &command, &machine)?;
            write_section(&out, allocations_report::SECTION, &section)
        }
    }
}

/// Replaces section `name` of the report at `out` and says so.
fn write_section(out: &Path, name: &str, section: &str) -> anyhow::Result<()> {
    report_file::replace_section(out, name, section)?;
    println!("wrote the {name} section of {}", out.display());
    Ok(())
}
