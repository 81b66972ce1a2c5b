//! `shardcast-tune sweep`: measures candidate plans on this host and names
//! the best.
//!
//! The sweep generates candidates from the host's topology
//! ([`candidates`]): `default` (the server's own settings), `plan` (what
//! `shardcast-tune plan` proposes) and variations of shard count,
//! pinning, SMT siblings, SQPOLL, receive buffers and batched deliveries;
//! writes each as a config file for `shardcast serve`, checks that the
//! server accepts it, and runs one `shardcast-bench compare` session over
//! all of them with the scenarios of the `--target` ([`target`], [`run`]).
//! It follows the records the session writes ([`records`]) with a progress
//! bar, then takes each candidate's median figures, scores them against
//! `default` and ranks them ([`summary`]); it prints a table or JSON
//! ([`table`]), and on request draws a plot ([`plot`]) and writes the
//! section of TUNING.md ([`report`]).
//!
//! The load comes from shardcast-bench, run as a child process: the sweep
//! generates none itself.
//!
//! The full sweeps behind TUNING.md, from the checkout's root (with
//! `CARGO_TARGET_DIR` set, the binaries are under it), about 6½ minutes
//! each on the 2-core development VM: 9 candidates there × 2 scenarios ×
//! 3 rounds of 2 s warm-up and 5 s measured, plus a fraction of a second
//! to start each server:
//!
//! ```text
//! cargo build --release -p shardcast -p shardcast-bench -p shardcast-tune
//! target/release/shardcast-tune sweep --report TUNING.md --plot tuning/plots/sweep-throughput.svg
//! target/release/shardcast-tune sweep --target latency --report TUNING.md --plot tuning/plots/sweep-latency.svg
//! ```

pub mod candidates;
pub mod plot;
pub mod records;
pub mod report;
pub mod run;
pub mod summary;
pub mod table;
pub mod target;

use std::path::{Path, PathBuf};

use crate::cpulist;
use crate::host::Host;

use candidates::{CandidatesError, UnknownCandidate};
use run::{Plan, RunError};
use summary::{Session, SummaryError};
use target::Target;

/// Command line of `shardcast-tune sweep`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// What the best plan is best at: `throughput` runs raw echo and
    /// shardcast.v1 fan-out and ranks by messages per second; `latency`
    /// runs echo for the default's maximum, then offers every candidate an
    /// open-loop load at half of it, and ranks by p99.
    #[arg(long, value_enum, default_value_t = Target::Throughput)]
    pub target: Target,
    /// Measure only these candidates (comma-separated), besides `default`;
    /// `--list` shows them.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub candidates: Vec<String>,
    /// Measure at most N candidates, `default` included, in the order
    /// `--list` shows.
    #[arg(long, value_name = "N")]
    pub max_candidates: Option<usize>,
    /// Print the candidates and what each sets, and exit without running.
    #[arg(long)]
    pub list: bool,
    /// Rounds over every scenario and candidate; each figure is the
    /// median over them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Seconds of warm-up per run.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// The `shardcast` binary; default: beside this program.
    #[arg(long, value_name = "PATH")]
    pub shardcast: Option<PathBuf>,
    /// The `shardcast-bench` binary; default: beside this program.
    #[arg(long, value_name = "PATH")]
    pub bench: Option<PathBuf>,
    /// Where the candidates' config files, the records (records.jsonl)
    /// and compare's log go.
    #[arg(long, value_name = "DIR", default_value = "target/tune-sweep")]
    pub out: PathBuf,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Draw the result as an SVG plot here.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write the result as the `tune-sweep-<target>` section of this Markdown file
    /// (TUNING.md), replacing the one there.
    #[arg(long, value_name = "FILE.md")]
    pub report: Option<PathBuf>,
}

/// Why a sweep failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SweepError {
    /// The host could not be read, or planned for.
    #[error(transparent)]
    Candidates(#[from] CandidatesError),
    /// `--candidates` names a candidate there is not.
    #[error(transparent)]
    Candidate(#[from] UnknownCandidate),
    /// A binary the sweep runs is not there.
    #[error(
        "{} not found; build it with `cargo build --release -p shardcast -p shardcast-bench` or name it with --{flag}",
        path.display()
    )]
    MissingBinary {
        /// Where it was looked for.
        path: PathBuf,
        /// The flag naming it.
        flag: &'static str,
    },
    /// The session failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The runs could not be summarized.
    #[error(transparent)]
    Summary(#[from] SummaryError),
    /// The plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// The JSON output could not be written.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The binary `name` given by `flag`, or beside this program.
fn binary(given: Option<&Path>, name: &str, flag: &'static str) -> Result<PathBuf, SweepError> {
    let path = match given {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
            .unwrap_or_else(|| PathBuf::from(name)),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(SweepError::MissingBinary { path, flag })
    }
}

/// This process's command line as a shell would take it back, the
/// program relative to the working directory when it lies under it (as
/// the report quotes it: run from the checkout's root).
fn command_line() -> String {
    let cwd = std::env::current_dir().ok();
    std::env::args()
        .enumerate()
        .map(|(index, arg)| {
            let arg = match (&cwd, index) {
                (Some(cwd), 0) => Path::new(&arg)
                    .strip_prefix(cwd)
                    .map_or(arg.clone(), |relative| relative.display().to_string()),
                _ => arg,
            };
            if !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `shardcast-tune sweep` on the live host: lists the candidates, or
/// measures them and prints the table (or JSON), drawing the plot and
/// writing the report when asked.
pub fn command(args: &Args) -> Result<(), SweepError> {
    let all = candidates::for_host(&Host::live(), args.target)?;
    let chosen = candidates::select(all, &args.candidates, args.max_candidates)?;
    if args.list {
        for candidate in &chosen {
            println!(
                "{}: {}\n    server on {}, load on {}; sets {}",
                candidate.name,
                candidate.description,
                cpulist::format(&candidate.placement.server),
                cpulist::format(&candidate.placement.load),
                table::settings(&candidate.config)
            );
        }
        return Ok(());
    }
    let plan = Plan {
        shardcast: binary(args.shardcast.as_deref(), "shardcast", "shardcast")?,
        bench: binary(args.bench.as_deref(), "shardcast-bench", "bench")?,
        out: args.out.clone(),
        target: args.target,
        rounds: args.rounds,
        warmup: args.warmup,
        duration: args.duration,
    };
    plan.write_configs(&chosen)?;
    let runs = plan.run(&chosen)?;
    eprintln!(
        "{} runs recorded in {}",
        runs.len(),
        plan.records_path().display()
    );
    let session = Session {
        target: args.target,
        command: command_line(),
        rounds: args.rounds,
    };
    let summary = summary::summarize(&session, &chosen, &runs)?;
    if let Some(path) = &args.plot {
        plot::draw(&summary, path)?;
    }
    if let Some(path) = &args.report {
        let details = report::Details {
            warmup: args.warmup,
            duration: args.duration,
            plot: args.plot.as_deref(),
        };
        let body = report::section(&summary, &details, path);
        report::write(path, &report::section_name(args.target), &body)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&table::to_json(&summary))?
        );
    } else {
        println!("{}", table::scenarios(&summary));
        print!("{}", table::Table::of(&summary).to_text());
        println!("\n{}", table::verdict(&summary));
    }
    Ok(())
}
