//! `shardcast serve`: read the configuration, start the server, and run it
//! until a signal asks for a graceful shutdown.
//!
//! The default application serves `shardcast.v1` rooms with three events:
//! `echo` answers its payload; `shardcast.shard` answers the index of the
//! shard serving the connection, and `shardcast.owner` the index of the
//! shard that owns (sequences) the room named by its payload, both in
//! ASCII decimal. The last two are diagnostics: they let a client, such as
//! `shardcast-bench hops`, place its connections and rooms on chosen shards
//! to measure what crossing shards costs.

use std::env;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shardcast::middleware::RateLimit;
use shardcast::v1::{EventError, Protocol, Router, SUBPROTOCOL};
use shardcast::{Echo, Message, ServerHandle};
use tracing::info;

use crate::cli::ServeArgs;
use crate::settings::{CountLimit, DEFAULT_TOML, Settings};
use crate::{huge_pages, layers, logging, nofile};

/// Runs `shardcast serve` with `args`.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.print_default_config {
        print!("{DEFAULT_TOML}");
        return Ok(());
    }
    let loaded = layers::load(args.config.as_deref(), env::vars_os())?;
    let mut settings = loaded.settings;
    let flags = args.apply(&mut settings);
    if args.print_config {
        let mut sources = loaded.sources;
        if !flags.is_empty() {
            sources.push(format!("flags {}", flags.join(" ")));
        }
        print!("{}", print_config(&settings, &sources)?);
        return Ok(());
    }
    logging::init(settings.log.format, &settings.log.level);
    nofile::raise_and_log(settings.limits.max_connections);
    huge_pages::apply(settings.server.transparent_huge_pages);
    if args.echo {
        let handle = settings
            .builder()
            .build(|_shard| Echo)
            .start()
            .context("starting the server")?;
        info!("application: echo");
        return run_until_signal(&settings, &handle);
    }
    let rate = match settings.rooms.request_rate {
        CountLimit::Off => None,
        CountLimit::Max(per_second) => Some(
            RateLimit::new(
                u32::try_from(per_second.get()).unwrap_or(u32::MAX),
                settings.rooms.request_burst,
            )
            .context("rooms.request_rate and rooms.request_burst")?,
        ),
    };
    let sessions = settings.sessions.timeout.get();
    let mut subprotocols = settings.server.subprotocols.clone();
    if !subprotocols.iter().any(|protocol| protocol == SUBPROTOCOL) {
        subprotocols.push(SUBPROTOCOL.to_owned());
    }
    let handle = settings
        .builder()
        .subprotocols(subprotocols)
        .build(move |_shard| rooms(rate, sessions))
        .start()
        .context("starting the server")?;
    info!("application: shardcast.v1 rooms, echo for raw WebSocket clients");
    run_until_signal(&settings, &handle)
}

/// The default application: `shardcast.v1` rooms (join, leave, publish
/// with acknowledgements) and sessions that resume for `sessions`, an
/// `echo` event that answers with its payload,
/// the diagnostic events `shardcast.shard` and `shardcast.owner` (see the
/// module's documentation), and echo for clients that speak raw WebSocket.
fn rooms(rate: Option<RateLimit>, sessions: Option<Duration>) -> Protocol<()> {
    let router = Router::new()
        .on("echo", |_conn, payload| Ok(payload.to_vec()))
        .on(SHARD_EVENT, |conn, _payload| {
            Ok(conn.id().shard().index().to_string().into_bytes())
        })
        .on(OWNER_EVENT, |conn, payload| {
            let room = std::str::from_utf8(payload)
                .map_err(|_| EventError::bad_request("shardcast.owner takes a UTF-8 room name"))?;
            Ok(conn.hub().owner_of(room).index().to_string().into_bytes())
        });
    let protocol = Protocol::new(router)
        .session_timeout(sessions)
        .raw(|conn, message| {
            // A failed send has already closed the connection with the reason.
            let _ = match message {
                Message::Text(text) => conn.send_text(text),
                Message::Binary(bytes) => conn.send_binary(bytes),
            };
        });
    match rate {
        Some(rate) => protocol.rate_limit(rate),
        None => protocol,
    }
}

/// The event that answers the index of the shard serving the connection.
const SHARD_EVENT: &str = "shardcast.shard";

/// The event that answers the index of the shard owning the room named by
/// its payload.
const OWNER_EVENT: &str = "shardcast.owner";

/// The settings as a config file, under a comment naming the layers that
/// produced them.
fn print_config(settings: &Settings, sources: &[String]) -> anyhow::Result<String> {
    let toml = toml::to_string(settings).context("writing the configuration as TOML")?;
    Ok(format!(
        "# The configuration of shardcast serve, from: {}.\n\
         # `shardcast serve --print-default-config` explains every key.\n\n{toml}",
        sources.join(", ")
    ))
}

/// Logs the running server, then waits for SIGINT or SIGTERM and shuts
/// it down gracefully.
fn run_until_signal(settings: &Settings, handle: &ServerHandle) -> anyhow::Result<()> {
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
            let grace = settings.timeouts.shutdown.get();
            let report = handle.shutdown(Instant::now() + grace);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_config_names_its_sources_and_reads_back() {
        let settings = Settings::defaults();
        let sources = ["embedded defaults".to_owned(), "flags --listen".to_owned()];
        let printed = print_config(&settings, &sources).unwrap();
        assert!(printed.starts_with(
            "# The configuration of shardcast serve, from: embedded defaults, flags --listen.\n"
        ));
        assert_eq!(toml::from_str::<Settings>(&printed).unwrap(), settings);
    }
}
