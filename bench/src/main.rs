//! shardcast-bench: benchmarks of shardcast against its peers, and the
//! generator of BENCHMARKS.md.
//!
//! - `echo`: closed-loop echo load against one server (monoio, io_uring).
//! - `echo-compare`: servers side by side under the same echo load, each
//!   pinned and restarted per run; medians, ratios against shardcast and
//!   the `engine-echo` section of BENCHMARKS.md.
//! - `connections`: servers' memory per idle upgraded connection and their
//!   handshake rate, tens of thousands of connections from several source
//!   addresses; the `engine-connections` section of BENCHMARKS.md.
//! - `codec-report`: the protocol codec section of BENCHMARKS.md, from
//!   criterion's results.
//! - `allocations-report`: the engine's allocations per echoed message,
//!   from the counting-allocator test's results.
//! - `latency`: echo latency percentiles at a fixed offered rate, open
//!   loop (coordinated omission corrected), paced to the microsecond.
//! - `storm`: every client drops and reconnects at once (or within a
//!   jitter); the time until all are back, the handshake rate, and the
//!   latency of other connections before and during the storm.

mod allocations_report;
mod client;
mod codec_report;
mod compare;
mod connections;
mod cores;
mod echo;
mod latency;
mod limits;
mod machine;
mod memory;
mod open_loop;
mod proc_stat;
mod report_file;
mod servers;
mod stats;
mod storm;

use std::path::{Path, PathBuf};

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
    /// Echo servers side by side: each pinned and restarted per run, the
    /// same echo load against each, rounds in shuffled order; medians and
    /// ratios, optionally written to BENCHMARKS.md.
    EchoCompare(compare::Args),
    /// Memory per idle connection: opens upgraded connections to each
    /// server up to each count, from several 127.0.0.x source addresses,
    /// and measures the server's RSS per connection and the handshake
    /// rate; optionally written to BENCHMARKS.md.
    Connections(connections::Args),
    /// Echo latency at a fixed offered rate: messages leave on a schedule
    /// whatever the replies, and latency counts from each one's intended
    /// send time; percentiles, achieved rate, schedule lag, CPU shares.
    Latency(latency::Args),
    /// Reconnection storm: every client drops and reconnects at once (or
    /// within a jitter); time until all are back, handshakes/s, and the
    /// latency of probe connections before and during the storm.
    Storm(storm::Args),
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
    match Cli::parse().command {
        Command::Echo(args) => echo::command(&args),
        Command::EchoCompare(args) => compare::command(&args),
        Command::Connections(args) => connections::command(&args),
        Command::Latency(args) => latency::command(&args),
        Command::Storm(args) => storm::command(&args),
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
