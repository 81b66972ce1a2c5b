//! The `plan` subcommand's arguments and what it does with them: inspect,
//! plan, then print, write to `--out`, `--apply` or `--revert`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::apply::{self, ApplyError, Root};
use super::{PlanError, PlanOptions, Target, plan};
use crate::{Host, InspectError};

/// Propose shards, cores and engine settings, and the files that carry them.
///
/// Prints every choice with its reason, then a shardcast serve config, a
/// sysctl.d file and a systemd drop-in. Changes nothing on the host unless
/// --apply, which backs up what it replaces; --revert undoes it.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Connections the server must hold at once, over all shards.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// Most messages per second, or lowest tail latency (may spin spare
    /// CPUs for SQPOLL).
    #[arg(long, value_enum, default_value_t = Target::Throughput)]
    pub target: Target,
    /// This many shards instead of one per usable physical core.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Put shards on isolated CPUs (isolcpus) too.
    #[arg(long)]
    pub use_isolated: bool,
    /// `server.listen` address, IP:PORT; repeat for several.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Read the host under DIR instead of `/`, and apply or revert there;
    /// no command (sysctl, systemctl) runs.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print the plan as JSON instead of tables and files.
    #[arg(long)]
    pub json: bool,
    /// Also write the three files into DIR (flat), without applying.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write the printed files in place, after backing up what they replace.
    #[arg(long, conflicts_with_all = ["revert", "json"])]
    pub apply: bool,
    /// Restore the files (and live sysctls) the latest --apply replaced.
    #[arg(long, conflicts_with_all = ["json", "out"])]
    pub revert: bool,
    /// With --revert: restore even files edited since they were applied.
    #[arg(long, requires = "revert")]
    pub force: bool,
}

/// Why the plan command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Reading the host failed.
    #[error("inspecting {root}: {source}")]
    Inspect {
        /// The root read.
        root: PathBuf,
        /// What failed.
        #[source]
        source: InspectError,
    },
    /// No plan fits the host and options.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Applying or reverting failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Writing the output or an `--out` file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The plan could not be printed as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Write {
        path: path.to_owned(),
        source,
    }
}

impl Args {
    /// Runs the command, printing to `out`.
    pub fn run(&self, out: &mut dyn Write) -> Result<(), RunError> {
        let root = self.root.as_ref().map_or_else(Root::live, Root::at);
        let stdout = Path::new("stdout");
        if self.revert {
            let reverted = apply::revert(&root, self.force)?;
            return write!(out, "{reverted}").map_err(write_error(stdout));
        }
        let host = self.root.as_ref().map_or_else(Host::live, Host::at);
        let report =
            crate::inspect(&host, self.connections).map_err(|source| RunError::Inspect {
                root: host.root().to_owned(),
                source,
            })?;
        let options = PlanOptions {
            connections: self.connections,
            target: self.target,
            shards: self.shards,
            use_isolated: self.use_isolated,
            listen: self.listen.clone(),
        };
        let plan = plan(&report, &options)?;
        if self.json {
            serde_json::to_writer_pretty(&mut *out, &plan)?;
            writeln!(out).map_err(write_error(stdout))?;
        } else {
            write!(out, "{plan}").map_err(write_error(stdout))?;
        }
        if let Some(dir) = &self.out {
            std::fs::create_dir_all(dir).map_err(write_error(dir))?;
            for file in &plan.files {
                let name = Path::new(&file.path)
                    .file_name()
                    .unwrap_or(file.path.as_ref());
                let path = dir.join(name);
                std::fs::write(&path, &file.text).map_err(write_error(&path))?;
            }
        }
        if self.apply {
            let sysctls: Vec<String> = plan.sysctls.iter().map(|s| s.name.clone()).collect();
            let applied = apply::apply(&root, &plan.files, &sysctls)?;
            write!(out, "\n{applied}").map_err(write_error(stdout))?;
            if applied != apply::Applied::Unchanged {
                let root_arg = self
                    .root
                    .as_ref()
                    .map(|r| format!(" --root {}", r.display()))
                    .unwrap_or_default();
                writeln!(out, "undo with: shardcast-tune plan{root_arg} --revert")
                    .map_err(write_error(stdout))?;
            }
        }
        Ok(())
    }
}
