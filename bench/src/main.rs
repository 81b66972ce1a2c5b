//! shardcast-bench: benchmarks of shardcast against its peers, and the
//! generator of BENCHMARKS.md.
//!
//! - `echo`: closed-loop echo load against one server (monoio, io_uring),
//!   plain WebSocket messages or Socket.IO events.
//! - `echo-compare`: servers side by side under the same echo load, each
//!   pinned and restarted per run; medians, ratios against shardcast and
//!   the `engine-echo` section of BENCHMARKS.md.
//! - `fanout`: publish/subscribe load against one server: subscribers in
//!   one room or many, publishers, deliveries per second, publish-to-
//!   delivery latency, every message checked (uWebSockets.js topics or
//!   Socket.IO rooms).
//! - `connections`: servers' memory per idle upgraded connection and their
//!   handshake rate, tens of thousands of connections from several source
//!   addresses; the `engine-connections` section of BENCHMARKS.md.
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
mod limits;
mod machine;
mod memory;
mod proc_stat;
mod report_file;
mod room_protocol;
mod servers;
mod socket_io;
mod stats;

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
    /// Publish/subscribe load against one server: M subscribers in K
    /// rooms, P publishers, closed loop (each round waits for every
    /// delivery) or a fixed publish rate; deliveries per second and
    /// publish-to-delivery latency, every message checked.
    Fanout(fanout::Args),
    /// Memory per idle connection: opens upgraded connections to each
    /// server up to each count, from several 127.0.0.x source addresses,
    /// and measures the server's RSS per connection and the handshake
    /// rate; optionally written to BENCHMARKS.md.
    Connections(connections::Args),
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
        Command::Fanout(args) => fanout::command(&args),
        Command::Connections(args) => connections::command(&args),
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
