//! The command line: subcommands, their flags, and the flags as the
//! highest layer of the configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;
use crate::placement::{Cores, Shards};
use crate::settings::{Listen, Settings};

/// The `shardcast` command line.
#[derive(Parser, Debug)]
#[command(
    name = "shardcast",
    version,
    about = "A thread-per-core WebSocket server"
)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Serve WebSocket connections until SIGINT or SIGTERM, then shut down
    /// gracefully (every client gets a 1001 close).
    ///
    /// Settings come from, lowest first: the embedded defaults, a TOML
    /// config file (--config), environment variables named after the keys
    /// (SHARDCAST_LIMITS_MAX_CONNECTIONS for limits.max_connections),
    /// then these flags. --print-default-config explains every key;
    /// --print-config shows the result.
    Serve(ServeArgs),
}

/// The flags of `shardcast serve`. Those that set a key say which.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// Read settings from this TOML config file, over the embedded
    /// defaults; default: the path in $SHARDCAST_CONFIG, if set. It may set
    /// any subset of the keys that --print-config lists.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Print the configuration the defaults, config file, environment and
    /// flags produce, as TOML, and exit without serving.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// Print the embedded default config file, which lists every key with
    /// its default and what it does, and exit: a starting point for a
    /// config file.
    #[arg(long)]
    pub(crate) print_default_config: bool,
    /// Address to listen on, IP:PORT; repeat the flag for several. Every
    /// shard listens on each with SO_REUSEPORT. Replaces server.listen
    /// (default 127.0.0.1:8080).
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Number of shards (threads), or auto for one per core this process
    /// may run on (server.shards).
    #[arg(long, value_name = "N")]
    shards: Option<Shards>,
    /// Cores to pin shards to, in order, as a list of numbers and ranges
    /// such as 0,1 or 0-3 or 0,2-3, or auto for the cores of the affinity
    /// mask (server.cores).
    #[arg(long, value_name = "LIST")]
    cores: Option<Cores>,
    /// Connections each listening socket queues before a shard accepts
    /// them, the listen(2) backlog, capped by net.core.somaxconn
    /// (server.backlog).
    #[arg(long, value_name = "N")]
    backlog: Option<u32>,
    /// Negotiate permessage-deflate with clients that offer it; messages
    /// are sent compressed only when that makes them smaller
    /// (compression.enabled).
    #[arg(long, value_enum, value_name = "SWITCH")]
    compression: Option<Switch>,
    /// Run every shard on epoll even when io_uring is available; takes an
    /// optional true or false (server.force_epoll).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    force_epoll: Option<bool>,
    /// Echo every text and binary message back unchanged, for conformance
    /// tests and benchmarks, instead of the default application: rooms for
    /// clients that speak shardcast.v1 (with an "echo" event, and the
    /// diagnostic events "shardcast.shard", the connection's shard, and
    /// "shardcast.owner", the owner shard of the room named by the
    /// payload), echo for raw WebSocket clients.
    #[arg(long)]
    pub(crate) echo: bool,
    /// Log format: human-readable lines or one JSON object per line
    /// (log.format). Which events are logged is log.level, or RUST_LOG.
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

/// An on/off flag value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

impl ServeArgs {
    /// Applies the flags that were given over `settings`; returns their
    /// names, for people to read.
    pub(crate) fn apply(&self, settings: &mut Settings) -> Vec<&'static str> {
        let mut applied = Vec::new();
        if let Ok(listen) = Listen::try_from(self.listen.clone()) {
            settings.server.listen = listen;
            applied.push("--listen");
        }
        if let Some(shards) = self.shards {
            settings.server.shards = shards;
            applied.push("--shards");
        }
        if let Some(cores) = &self.cores {
            settings.server.cores = cores.clone();
            applied.push("--cores");
        }
        if let Some(backlog) = self.backlog {
            settings.server.backlog = backlog;
            applied.push("--backlog");
        }
        if let Some(compression) = self.compression {
            settings.compression.enabled = compression == Switch::On;
            applied.push("--compression");
        }
        if let Some(force_epoll) = self.force_epoll {
            settings.server.force_epoll = force_epoll;
            applied.push("--force-epoll");
        }
        if let Some(format) = self.log_format {
            settings.log.format = format;
            applied.push("--log-format");
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::duration::Timeout;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let args = ["shardcast", "serve"].iter().chain(flags);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Serve(args) => args,
        }
    }

    #[test]
    fn flags_override_the_layers_below_and_only_when_given() {
        let mut settings = Settings::defaults();
        settings.server.backlog = 10;
        settings.server.force_epoll = true;
        settings.timeouts.idle = Timeout::Off;
        let untouched = settings.clone();
        assert!(serve_args(&["--echo"]).apply(&mut settings).is_empty());
        assert_eq!(settings, untouched);

        let applied = serve_args(&[
            "--listen=127.0.0.1:1",
            "--listen=127.0.0.1:2",
            "--shards=2",
            "--cores=0-1",
            "--backlog=20",
            "--compression=off",
            "--force-epoll=false",
            "--log-format=json",
        ])
        .apply(&mut settings);
        assert_eq!(applied.len(), 7);
        let printed = toml::to_string(&settings).unwrap();
        for line in [
            "listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]",
            "shards = 2",
            "cores = \"0,1\"",
            "backlog = 20",
            "enabled = false",
            "force_epoll = false",
            "format = \"json\"",
            "idle = \"off\"",
        ] {
            assert!(printed.contains(line), "{line} not in\n{printed}");
        }
    }

    #[test]
    fn the_existing_flag_spellings_still_parse() {
        let mut settings = Settings::defaults();
        serve_args(&[
            "--echo",
            "--compression",
            "on",
            "--force-epoll",
            "--shards",
            "1",
            "--cores",
            "0",
            "--log-format",
            "human",
        ])
        .apply(&mut settings);
        assert!(settings.server.force_epoll);
        assert!(settings.compression.enabled);
    }
}
