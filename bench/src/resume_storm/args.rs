//! The command line of `shardcast-bench resume-storm`: its arguments,
//! the checks every run needs them to pass, and the config file they give
//! a `{config}` server.

use std::path::PathBuf;

use anyhow::{Context, bail};
use shardcast::CoreList;

use super::stamp::MIN_SIZE;
use crate::cores;
use crate::echo::DriverChoice;
use crate::served::Served;

/// The section of BENCHMARKS.md this command writes by default.
const SECTION: &str = "engine-resume-storm";

/// The messages of a room a `{config}` server keeps at least.
const MIN_HISTORY: usize = 128;

/// Command line of `shardcast-bench resume-storm`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// The server measured: a running one, or one started for the run.
    #[command(flatten)]
    pub(crate) served: Served,
    /// Clients cut and resumed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) clients: u32,
    /// Rooms the clients are spread over (client i joins room i mod R).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rooms: u32,
    /// Publisher connections, not cut; each room has one.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) publishers: u32,
    /// Messages per second published to the clients' rooms, in total, each
    /// room in turn (with 100 members a room, 200 make 20,000 deliveries a
    /// second).
    #[arg(long, default_value_t = 200.0)]
    pub(crate) rate: f64,
    /// Probe connections, not cut, each in a room of its own, whose
    /// latency is measured.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) probes: u32,
    /// Messages per second published to the probes' rooms, in total.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) probe_rate: f64,
    /// Payload bytes per message, at least 17.
    #[arg(long, default_value_t = 64)]
    pub(crate) size: usize,
    /// Each client reconnects after a uniform random delay of up to this
    /// many milliseconds after the cut; 0: all at once.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) jitter_ms: f64,
    /// The room history (messages) a `{config}` server keeps; by default
    /// twice what a room receives over --storm-timeout, at least 128.
    #[arg(long)]
    pub(crate) history: Option<usize>,
    /// Source addresses to spread the clients over, from 127.0.0.2 up; by
    /// default as many as the clients' connections need with this
    /// machine's ephemeral port range.
    #[arg(long)]
    pub(crate) sources: Option<usize>,
    /// Clients opening at once before the storm.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrency: u32,
    /// Seconds of publishing before the baseline, not measured.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup: f64,
    /// Seconds of the probes' baseline window.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) baseline: f64,
    /// Seconds of publishing after every client is back, before the
    /// publishers stop.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) settle: f64,
    /// Seconds every client, publisher and probe may take to connect and
    /// join before the storm.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) connect_timeout: f64,
    /// Seconds one reconnection may take to connect and upgrade before it
    /// counts as failed and is tried again.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) handshake_timeout: f64,
    /// Seconds from the cut until every client must be back.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) storm_timeout: f64,
    /// Seconds, once the publishers stop, for every acknowledgement and
    /// every message to arrive.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) drain_timeout: f64,
    /// Cores to pin the generator's threads to: the storm clients on the
    /// first, the publishers on the second, the probes on the third (a
    /// shorter list wraps around); unpinned when absent.
    #[arg(long)]
    pub(crate) cores: Option<CoreList>,
    /// The generator's I/O driver.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub(crate) driver: DriverChoice,
    /// Print the result as one JSON object on one line.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write the result as a section of this report (BENCHMARKS.md).
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// The name of the report's section.
    #[arg(long, default_value = SECTION)]
    pub(crate) section: String,
}

impl Args {
    /// Fails on values no run can use.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        let positive = [
            self.rate,
            self.probe_rate,
            self.baseline,
            self.connect_timeout,
            self.handshake_timeout,
            self.storm_timeout,
            self.drain_timeout,
        ];
        if positive
            .iter()
            .any(|&value| !(value > 0.0 && value.is_finite()))
            || ![self.warmup, self.settle, self.jitter_ms]
                .iter()
                .all(|&value| value >= 0.0 && value.is_finite())
        {
            bail!(
                "the rates, the baseline and the timeouts must be above 0; warm-up, settle and jitter at least 0"
            );
        }
        if self.size < MIN_SIZE {
            bail!(
                "--size must be at least {MIN_SIZE}: each payload carries its phase and its publish time"
            );
        }
        if self.jitter_ms / 1e3 >= self.storm_timeout {
            bail!("--jitter-ms must end well within --storm-timeout");
        }
        if let Some(cores) = &self.cores {
            cores::check_available(cores.as_slice())?;
        }
        Ok(())
    }

    /// The room history a `{config}` server is given.
    pub(super) fn history(&self) -> usize {
        self.history.unwrap_or_else(|| {
            let per_room = self.rate / f64::from(self.rooms);
            ((2.0 * per_room * self.storm_timeout).ceil() as usize).max(MIN_HISTORY)
        })
    }

    /// The core of generator thread `index`, if pinned.
    pub(super) fn core(&self, index: usize) -> Option<usize> {
        let cores = self.cores.as_ref()?.as_slice();
        cores.get(index % cores.len()).copied()
    }
}

/// The config file a `{config}` server reads, removed when dropped.
pub(super) struct ConfigFile {
    /// Where it is.
    pub(super) path: PathBuf,
}

impl ConfigFile {
    /// Writes a config whose room history keeps `history` messages, with
    /// no time limit.
    pub(super) fn write(history: usize) -> anyhow::Result<ConfigFile> {
        let path = std::env::temp_dir().join(format!(
            "shardcast-resume-storm-{}.toml",
            std::process::id()
        ));
        let text = format!("[rooms]\nhistory_size = {history}\nhistory_ttl = \"off\"\n");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(ConfigFile { path })
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use clap::Parser;

    /// The command's arguments as the command line gives them.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// The arguments `extra` give, with a URL unless they name a server.
    pub(crate) fn args(extra: &[&str]) -> Args {
        let mut line = vec!["resume-storm"];
        if !extra.contains(&"--server") {
            line.extend_from_slice(&["--url", "ws://127.0.0.1:1/"]);
        }
        line.extend_from_slice(extra);
        Cli::parse_from(line).args
    }

    #[test]
    fn arguments_are_checked_and_the_history_covers_the_storm() {
        let defaults = args(&[]);
        defaults.check().unwrap();
        assert_eq!(defaults.clients, 10_000);
        // 2 messages a second per room, for twice the storm timeout.
        assert_eq!(defaults.history(), 240);
        assert_eq!(args(&["--rate", "1000"]).history(), 1200);
        assert_eq!(args(&["--rate", "10"]).history(), MIN_HISTORY);
        assert_eq!(args(&["--history", "0"]).history(), 0);
        assert!(args(&["--size", "16"]).check().is_err());
        assert!(args(&["--rate", "0"]).check().is_err());
        assert!(args(&["--jitter-ms=-1"]).check().is_err());
        assert!(args(&["--jitter-ms", "60000"]).check().is_err());
        let pinned = args(&["--cores", "1,3"]);
        assert_eq!(
            (pinned.core(0), pinned.core(1), pinned.core(2)),
            (Some(1), Some(3), Some(1))
        );
        assert_eq!(defaults.core(0), None);
    }
}
