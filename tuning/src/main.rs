//! `shardcast-tune`: inspects a Linux host, plans shards per core and
//! proves the plan with a sweep.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shardcast_tune::Host;

/// Inspect a Linux host for running shardcast, plan shards per core and
/// their settings, and measure candidate plans against the defaults.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read CPU topology, NIC queues and IRQs, io_uring support, limits and
    /// sysctls; judge each for N connections and print the fixes.
    Inspect {
        /// Connections the server must hold; findings are judged for this many.
        #[arg(long, default_value_t = 100_000)]
        connections: u64,
        /// Read /sys and /proc under DIR (a captured tree) instead of the live host.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print the report as JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    Plan(shardcast_tune::plan::Args),
    /// Run `shardcast serve` under candidate plans, measure each with
    /// shardcast-bench, and name the best and its margin over the defaults.
    Sweep(shardcast_tune::sweep::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Inspect {
            connections,
            root,
            json,
        } => {
            let host = root.map_or_else(Host::live, Host::at);
            let report = shardcast_tune::inspect(&host, connections)
                .with_context(|| format!("inspecting {}", host.root().display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Command::Plan(args) => args.run(&mut std::io::stdout().lock())?,
        Command::Sweep(args) => shardcast_tune::sweep::command(&args)?,
    }
    Ok(())
}
