//! `shardcast`: the server binary.
//!
//! `shardcast serve` reads its configuration in layers (embedded
//! defaults, a TOML file, environment variables, flags; see `default.toml`)
//! and serves WebSocket connections with the `shardcast` library.

mod backpressure;
mod cli;
mod duration;
mod huge_pages;
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
    // Before the heap grows: memory faulted in before this call may sit
    // in huge pages for good. `serve` turns them back on if configured.
    let _ = huge_pages::set_enabled(false);
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
    }
}
