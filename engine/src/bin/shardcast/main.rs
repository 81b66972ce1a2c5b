//! `shardcast`: the server binary.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use shardcast::{CoreList, Echo, Server};
use tracing::info;
use tracing_subscriber::EnvFilter;

// The library leaves the allocator to the application; the server uses
// mimalloc, which is faster than glibc malloc for many small, short-lived
// allocations across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a graceful shutdown waits for clients to answer the 1001 close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "shardcast",
    version,
    about = "A thread-per-core WebSocket server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve WebSocket connections until SIGINT or SIGTERM, then shut down
    /// gracefully (every client gets a 1001 close).
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on, IP:PORT; repeat the flag for several. Every
    /// shard listens on each with SO_REUSEPORT.
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: Vec<SocketAddr>,
    /// Number of shards (threads). Default: one per core this process may
    /// run on.
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Cores to pin shards to, in order, as a list of numbers and ranges
    /// such as 0,1 or 0-3 or 0,2-3. Default: the cores of the affinity mask.
    #[arg(long, value_name = "LIST", value_parser = str::parse::<CoreList>)]
    cores: Option<CoreList>,
    /// Negotiate permessage-deflate with clients that offer it; messages
    /// are sent compressed only when that makes them smaller.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    compression: Switch,
    /// Run every shard on epoll even when io_uring is available.
    #[arg(long)]
    force_epoll: bool,
    /// Echo every text and binary message back unchanged, for conformance
    /// tests and benchmarks. Required for now: it is the only application
    /// the binary has.
    #[arg(long)]
    echo: bool,
    /// Log format: human-readable lines or one JSON object per line. The
    /// level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

/// An on/off flag value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    if !args.echo {
        bail!("no application selected: pass --echo (the only one for now)");
    }
    let mut builder = Server::builder()
        .compression(args.compression == Switch::On)
        .force_epoll(args.force_epoll);
    for addr in &args.listen {
        builder = builder.listen(*addr);
    }
    if let Some(shards) = args.shards {
        builder = builder.shards(shards);
    }
    if let Some(cores) = args.cores {
        builder = builder.cores(cores.into_vec());
    }
    let handle = builder
        .build(|_shard| Echo)
        .start()
        .context("starting the server")?;
    for stats in handle.stats() {
        info!(shard = stats.shard, driver = ?stats.driver, "shard ready");
    }
    info!(addrs = ?handle.local_addrs(), "shardcast serving");
    // The signal handler and a watcher of the shards both report here, so
    // the main thread runs the shutdown and logs its outcome before exit.
    let (events, event) = mpsc::channel();
    let on_signal = events.clone();
    ctrlc::set_handler(move || {
        let _ = on_signal.send(Event::Signal);
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    let watched = handle.clone();
    thread::spawn(move || {
        watched.wait();
        let _ = events.send(Event::ShardsStopped);
    });
    match event.recv() {
        Ok(Event::Signal) => {
            info!("signal received; shutting down");
            let report = handle.shutdown(Instant::now() + SHUTDOWN_GRACE);
            info!(
                closed_cleanly = report.closed_cleanly,
                dropped = report.dropped,
                "shutdown complete"
            );
            Ok(())
        }
        Ok(Event::ShardsStopped) | Err(_) => bail!("every shard stopped without a shutdown"),
    }
}

/// What the main thread waits for.
enum Event {
    /// SIGINT or SIGTERM arrived.
    Signal,
    /// Every shard thread ended on its own.
    ShardsStopped,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
