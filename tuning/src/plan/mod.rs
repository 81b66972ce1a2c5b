//! `shardcast-tune plan`: from an inspect [`Report`], the shard count and
//! cores, the engine's io_uring settings, and the three files that carry
//! them to a host: a `shardcast serve` config, a sysctl.d file and a
//! systemd drop-in.
//!
//! [`plan`] is pure: it reads only the report and the options, so every
//! choice is unit-tested on captured topologies. Each choice comes with a
//! one-line reason ([`Choice`]), printed beside it. Writing the files,
//! backing up what they replace and reverting is [`apply`]'s job; the
//! command line is [`cli`].
//!
//! One concept per module: [`cores`] picks the CPUs, [`engine`] shapes each
//! shard's ring, [`sysctl`] raises kernel limits, [`systemd`] writes the
//! service's limits and affinity.

pub mod apply;
pub mod cli;
pub mod cores;
pub mod engine;
pub mod sysctl;
pub mod systemd;

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use serde::Serialize;

use crate::Report;
use crate::report::{host_label, table};
use crate::serve_config::ServeConfig;

pub use cli::Args;

/// Where the serve config is written, under the root.
pub const SERVE_CONFIG_PATH: &str = "/etc/shardcast/shardcast.toml";
/// Where the sysctl.d file is written, under the root.
pub const SYSCTL_PATH: &str = "/etc/sysctl.d/90-shardcast.conf";
/// Where the systemd drop-in for `shardcast.service` is written, under the root.
pub const DROP_IN_PATH: &str = "/etc/systemd/system/shardcast.service.d/50-shardcast-tune.conf";

/// What the plan optimises for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Most messages per second: every core works, no core spins idle.
    Throughput,
    /// Lowest tail latency: spare CPUs may spin (SQPOLL) to save syscalls.
    Latency,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Throughput => "throughput",
            Self::Latency => "latency",
        })
    }
}

/// What the operator asks of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanOptions {
    /// Connections the server must hold at once, over all shards.
    pub connections: u64,
    /// Throughput or latency.
    pub target: Target,
    /// A shard count instead of one per usable physical core.
    pub shards: Option<usize>,
    /// Put shards on isolated CPUs (`isolcpus`) too; by default they are
    /// left to whatever they were set aside for.
    pub use_isolated: bool,
    /// `server.listen` addresses; empty keeps the server's default.
    pub listen: Vec<String>,
}

/// Why no plan can be made for this host and these options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Allowed CPUs, cpuset and isolation leave no CPU to run a shard on.
    #[error(
        "no CPU left for shards: the allowed CPUs and cpuset, minus isolated CPUs, are empty (--use-isolated?)"
    )]
    NoUsableCpus,
    /// `--shards 0`.
    #[error("--shards must be at least 1")]
    ZeroShards,
    /// More shards than usable CPUs: two shards would share a CPU.
    #[error("--shards {wanted}: only {usable} usable CPUs, one shard per CPU at most")]
    TooManyShards {
        /// The shard count asked for.
        wanted: usize,
        /// Usable logical CPUs.
        usable: usize,
    },
}

/// One decision, its value and why: a row of the printed plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// What was decided: `shards`, `io.sqpoll`, `fs.nr_open`...
    pub setting: String,
    /// The value chosen, as printed.
    pub value: String,
    /// Why, in one line.
    pub reason: String,
}

impl Choice {
    /// A choice from anything printable.
    pub fn new(
        setting: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            setting: setting.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// A file the plan writes: its absolute path on the host (joined under the
/// root when applied) and its full text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanFile {
    /// Absolute path on the target host, such as [`SERVE_CONFIG_PATH`].
    pub path: String,
    /// The whole file.
    pub text: String,
}

/// A plan: every choice with its reason, and the files that carry them.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The `--root` planned for, `None` for the live host.
    pub root: Option<PathBuf>,
    /// What was asked.
    pub options: PlanOptions,
    /// The CPUs chosen for shards and spare for polling threads.
    pub cores: cores::CorePlan,
    /// The `shardcast serve` settings.
    pub serve: ServeConfig,
    /// The sysctls raised (never lowered).
    pub sysctls: Vec<sysctl::Sysctl>,
    /// The systemd drop-in's settings.
    pub drop_in: systemd::DropIn,
    /// Every decision in print order, with its reason.
    pub choices: Vec<Choice>,
    /// The serve config, sysctl.d file and drop-in, in that order.
    pub files: Vec<PlanFile>,
}

/// Plans shards, engine settings and host files for `report`'s host.
pub fn plan(report: &Report, options: &PlanOptions) -> Result<Plan, PlanError> {
    let (cores, mut choices) = cores::choose(
        &report.topology,
        &report.network,
        options.shards,
        options.use_isolated,
    )?;
    let engine = engine::choose(&cores, &report.io_uring, options);
    let (drop_in, systemd_choices) = systemd::choose(
        &report.limits,
        options.connections,
        cores.shard_cpus.len(),
        &engine,
    );
    let (sysctls, sysctl_choices) = sysctl::raise(
        &report.limits,
        options.connections,
        drop_in.limit_nofile,
        engine.backlog,
    );
    choices.extend(engine.choices);
    choices.extend(systemd_choices);
    choices.extend(sysctl_choices);
    let header = format!(
        "Written by shardcast-tune plan for {} connections, target {}.\n\
         `shardcast-tune plan` prints why each value was chosen; keys not\n\
         set here keep the server's defaults (shardcast serve --print-default-config).",
        options.connections, options.target
    );
    let files = vec![
        PlanFile {
            path: SERVE_CONFIG_PATH.into(),
            text: engine.serve.to_toml(&header),
        },
        PlanFile {
            path: SYSCTL_PATH.into(),
            text: sysctl::file_text(&sysctls, options.connections),
        },
        PlanFile {
            path: DROP_IN_PATH.into(),
            text: drop_in.file_text(),
        },
    ];
    Ok(Plan {
        root: report.root.clone(),
        options: options.clone(),
        cores,
        serve: engine.serve,
        sysctls,
        drop_in,
        choices,
        files,
    })
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let root = host_label(self.root.as_deref());
        writeln!(
            out,
            "shardcast-tune plan: {root}, {} connections, target {}\n",
            self.options.connections, self.options.target
        )?;
        let rows: Vec<Vec<String>> = self
            .choices
            .iter()
            .map(|c| vec![c.setting.clone(), c.value.clone(), c.reason.clone()])
            .collect();
        table(&mut out, &["setting", "value", "why"], &rows)?;
        for file in &self.files {
            writeln!(out, "\n--- {} ---", file.path)?;
            out.push_str(&file.text);
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Host;

    /// The inspect report of a fixture under `tests/fixtures`.
    pub(crate) fn fixture(name: &str, connections: u64) -> Report {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        crate::inspect(&Host::at(root), connections).expect("fixture inspects")
    }

    /// Options for `connections` with everything else at its default.
    pub(crate) fn options(connections: u64, target: Target) -> PlanOptions {
        PlanOptions {
            connections,
            target,
            shards: None,
            use_isolated: false,
            listen: Vec::new(),
        }
    }

    #[test]
    fn files_are_the_three_in_order_and_printed() {
        let plan = plan(
            &fixture("epyc-16c", 100_000),
            &options(100_000, Target::Throughput),
        )
        .unwrap();
        let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [SERVE_CONFIG_PATH, SYSCTL_PATH, DROP_IN_PATH]);
        let printed = plan.to_string();
        for file in &plan.files {
            assert!(printed.contains(&format!("--- {} ---\n{}", file.path, file.text)));
        }
        for choice in &plan.choices {
            assert!(
                !choice.reason.is_empty(),
                "{} has no reason",
                choice.setting
            );
            assert!(printed.contains(&choice.reason));
        }
    }

    #[test]
    fn the_same_host_gives_the_same_files() {
        let report = fixture("xeon-2s", 200_000);
        let a = plan(&report, &options(200_000, Target::Latency)).unwrap();
        let b = plan(&report, &options(200_000, Target::Latency)).unwrap();
        assert_eq!(a.files, b.files);
    }
}
