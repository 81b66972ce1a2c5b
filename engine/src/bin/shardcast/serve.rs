//! `shardcast serve`: read the configuration, start the server, and run it
//! until a signal asks for a graceful shutdown.

use std::env;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use anyhow::{Context, bail};
use shardcast::Echo;
use tracing::info;

use crate::cli::ServeArgs;
use crate::settings::{DEFAULT_TOML, Settings};
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
    if !args.echo {
        bail!("no application selected: pass --echo (the only one for now)");
    }
    logging::init(settings.log.format, &settings.log.level);
    nofile::raise_and_log(settings.limits.max_connections);
    huge_pages::apply(settings.server.transparent_huge_pages);
    serve(&settings)
}

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

fn serve(settings: &Settings) -> anyhow::Result<()> {
    let handle = settings
        .builder()
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
