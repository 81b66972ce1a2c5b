//! `shardcast`: the server binary.
//!
//! `shardcast serve` reads its configuration in layers (embedded
//! defaults, a TOML file, environment variables, flags; see `default.toml`)
//! and serves WebSocket connections with the `shardcast` library.

mod backpressure;
mod cli;
mod duration;
mod layers;
mod logging;
mod nofile;
mod placement;
mod serve;
mod settings;
mod size;

use clap::Parser;

use crate::cli::{Cli, Command};

// The library leaves the allocator to the application; the server uses
// mimalloc, which is faster than glibc malloc for many small, short-lived
// allocations across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
    }
}
