//! What every example shares: where it listens, and how it runs until
//! Ctrl-C.
//!
//! Each example is a binary of this crate (`cargo run -p
//! shardcast-examples --bin rooms`); `--listen ADDR` picks the address
//! (default 127.0.0.1:9000, port 0 for any free port). Once listening, an
//! example prints `listening on ADDR` on its standard output, which its
//! tests read to find the port.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shardcast::ServerHandle;

/// The address to listen on: the value of `--listen`, or 127.0.0.1:9000.
///
/// # Errors
/// An unknown argument, or an address that does not parse.
pub fn listen_addr() -> anyhow::Result<SocketAddr> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:9000".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => addr = args.next().context("--listen needs an address")?,
            other => bail!("unknown argument {other}; the only one is --listen ADDR"),
        }
    }
    addr.parse()
        .with_context(|| format!("--listen {addr} is not an IP:PORT address"))
}

/// Prints where the server listens, then serves until SIGINT or SIGTERM,
/// and shuts down gracefully (5 seconds for clients to close).
///
/// # Errors
/// The signal handler could not be installed.
pub fn run_until_signal(handle: &ServerHandle) -> anyhow::Result<()> {
    println!("listening on {}", handle.local_addrs()[0]);
    let (signal, signalled) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = signal.send(());
    })
    .context("installing the signal handler")?;
    let _ = signalled.recv();
    let report = handle.shutdown(Instant::now() + Duration::from_secs(5));
    println!(
        "stopped: {} connections closed cleanly, {} dropped",
        report.closed_cleanly, report.dropped
    );
    Ok(())
}
