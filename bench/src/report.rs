//! `shardcast-bench report`: BENCHMARKS.md from the records `compare`
//! wrote, one section per scenario kind, with SVG plots.
//!
//! Runs group by server and scenario label; every figure in a table is
//! the median over the rounds, with its ratio against the baseline
//! (shardcast) where the baseline ran the same load: above 1, shardcast
//! is ahead, whichever way the figure points. Throughput ratios are only
//! given between servers placed alike (same cores for server and load);
//! CPU per unit of work compares across placements.

mod echo;
mod fanout;
mod latency;
mod scaling;
mod storm;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::machine::Machine;
use crate::plot::Series;
use crate::record::{self, Record};
use crate::report_file::{self, section_header};
use crate::stats::{median, ratio_higher_is_better, ratio_lower_is_better};

/// Where plots go by default, relative to the report's folder.
pub(crate) const DEFAULT_PLOTS: &str = "bench/plots";

/// Command line of `shardcast-bench report`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// A JSON-lines file of records written by `compare`. Repeat to
    /// report several sessions together (their medians mix: give
    /// sessions of the same machine and commit).
    #[arg(long = "results", required = true)]
    pub(crate) results: Vec<PathBuf>,
    /// The report to update; only the sections of the kinds recorded are
    /// replaced.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub(crate) out: PathBuf,
    /// Where the plots go (SVG), relative to the report's folder.
    #[arg(long, default_value = DEFAULT_PLOTS)]
    pub(crate) plots: PathBuf,
    /// The server the others are compared with.
    #[arg(long, default_value = "shardcast")]
    pub(crate) baseline: String,
}

/// How a report is rendered.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// The server the others are compared with.
    pub(crate) baseline: String,
    /// Where the plots go, relative to the report's folder.
    pub(crate) plots: PathBuf,
}

/// One generated section of BENCHMARKS.md.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Section {
    /// The section's marker name, e.g. `engine-echo`.
    pub(crate) name: &'static str,
    /// Its Markdown.
    pub(crate) text: String,
}

/// Where a section draws its plots, and how the report links them.
pub(super) struct PlotTarget {
    /// The folder the SVG files are written to.
    folder: PathBuf,
    /// The same folder as the report links it (relative to the report).
    link: PathBuf,
}

impl PlotTarget {
    /// Draws `chart` as `file` in the plot folder and returns the
    /// Markdown image that shows it.
    pub(super) fn draw(&self, chart: &crate::plot::Chart, file: &str) -> anyhow::Result<String> {
        chart.draw(&self.folder.join(file))?;
        Ok(format!(
            "![{}]({})\n\n",
            chart.title,
            self.link.join(file).display()
        ))
    }
}

/// Runs `shardcast-bench report`.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
    let records = record::read_all(&args.results)?;
    let options = Options {
        baseline: args.baseline.clone(),
        plots: args.plots.clone(),
    };
    write(&records, &args.out, &options)
}

/// Writes the sections of `records` into the report at `out`, plots
/// beside it.
pub(crate) fn write(records: &[Record], out: &Path, options: &Options) -> anyhow::Result<()> {
    let root = out.parent().unwrap_or(Path::new(""));
    let folder = root.join(&options.plots);
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    let target = PlotTarget {
        folder,
        link: options.plots.clone(),
    };
    let sections = render(records, options, Some(&target))?;
    if sections.is_empty() {
        anyhow::bail!("no records to report");
    }
    for section in sections {
        report_file::replace_section(out, section.name, &section.text)?;
        eprintln!("wrote the {} section of {}", section.name, out.display());
    }
    Ok(())
}

/// The sections of `records`, one per scenario kind recorded; plots are
/// drawn only with a `target`.
pub(crate) fn render(
    records: &[Record],
    options: &Options,
    target: Option<&PlotTarget>,
) -> anyhow::Result<Vec<Section>> {
    let mut sections = Vec::new();
    let kinds: [(&str, &'static str, SectionRenderer); 5] = [
        ("echo", "engine-echo", echo::render),
        ("latency", "engine-latency", latency::render),
        ("fanout", "engine-fanout", fanout::render),
        ("storm", "engine-storm", storm::render),
        ("scaling", "engine-scaling", scaling::render),
    ];
    for (kind, name, renderer) in kinds {
        let of_kind: Vec<&Record> = records.iter().filter(|r| r.scenario == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let baseline = if kind == "scaling" {
            crate::scaling::member_name(&options.baseline, 1)
        } else {
            options.baseline.clone()
        };
        let grid = Grid::new(of_kind, &baseline);
        let text = renderer(&grid, target).with_context(|| format!("the {name} section"))?;
        sections.push(Section { name, text });
    }
    Ok(sections)
}

/// Renders one section from its grid, drawing plots when given a target.
type SectionRenderer = fn(&Grid<'_>, Option<&PlotTarget>) -> anyhow::Result<String>;

/// The records of one kind, as servers (rows) by labels (columns).
pub(super) struct Grid<'a> {
    records: Vec<&'a Record>,
    /// Server names, the baseline first, then in order of appearance.
    pub(super) servers: Vec<String>,
    /// Scenario labels in order of appearance.
    pub(super) labels: Vec<String>,
    /// The baseline's name, if it ran.
    pub(super) baseline: Option<String>,
}

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Better {
    /// More is better (messages/s).
    Higher,
    /// Less is better (latency, CPU per message).
    Lower,
}

impl<'a> Grid<'a> {
    fn new(records: Vec<&'a Record>, baseline: &str) -> Grid<'a> {
        let mut servers: Vec<String> = Vec::new();
        let mut labels: Vec<String> = Vec::new();
        for record in &records {
            if !servers.contains(&record.server) {
                servers.push(record.server.clone());
            }
            if !labels.contains(&record.label) {
                labels.push(record.label.clone());
            }
        }
        servers.sort_by_key(|name| name != baseline);
        let baseline = servers.first().filter(|name| *name == baseline).cloned();
        Grid {
            records,
            servers,
            labels,
            baseline,
        }
    }

    /// The runs of `server` at `label`.
    pub(super) fn runs(&self, server: &str, label: &str) -> impl Iterator<Item = &&'a Record> {
        self.records
            .iter()
            .filter(move |r| r.server == server && r.label == label)
    }

    /// The median of metric `key` over the runs of `server` at `label`.
    pub(super) fn median(&self, server: &str, label: &str, key: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .runs(server, label)
            .filter_map(|r| r.metric(key))
            .collect();
        median(&values)
    }

    /// Input `key` of the first run at `label` (inputs are the same for
    /// every run of a label, bar the offered rate of a latency share).
    pub(super) fn param(&self, label: &str, key: &str) -> Option<f64> {
        self.records
            .iter()
            .find(|r| r.label == label)
            .and_then(|r| r.param(key))
    }

    /// The first record of the grid: its inputs describe the method.
    pub(super) fn first(&self) -> &'a Record {
        self.records[0]
    }

    /// How many times better the baseline is than `server` at `label` for
    /// metric `key`; `None` for the baseline itself, without a baseline,
    /// or, when `alike_only`, for a server placed differently.
    pub(super) fn ratio(
        &self,
        server: &str,
        label: &str,
        key: &str,
        better: Better,
        alike_only: bool,
    ) -> Option<f64> {
        let baseline = self.baseline.as_deref().filter(|b| *b != server)?;
        if alike_only && self.placement(baseline) != self.placement(server) {
            return None;
        }
        let ours = self.median(baseline, label, key)?;
        let theirs = self.median(server, label, key)?;
        match better {
            Better::Higher => ratio_higher_is_better(ours, theirs),
            Better::Lower => ratio_lower_is_better(ours, theirs),
        }
    }

    /// The server's cores and its load's, from its first run.
    fn placement(&self, server: &str) -> Option<(&str, &str)> {
        self.records
            .iter()
            .find(|r| r.server == server)
            .map(|r| (r.server_cores.as_str(), r.load_cores.as_str()))
    }

    /// One line per server through the labels `keep` picks: x from
    /// `x(server, label)`, y the median of metric `y`, points in rising x;
    /// a server with no point is left out.
    pub(super) fn series(
        &self,
        keep: &dyn Fn(&str) -> bool,
        x: &dyn Fn(&str, &str) -> Option<f64>,
        y: &str,
    ) -> Vec<Series> {
        self.servers
            .iter()
            .map(|server| {
                let mut points: Vec<(f64, f64)> = self
                    .labels
                    .iter()
                    .filter(|label| keep(label))
                    .filter_map(|label| Some((x(server, label)?, self.median(server, label, y)?)))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    name: server.clone(),
                    points,
                }
            })
            .filter(|series| !series.points.is_empty())
            .collect()
    }

    /// The most rounds any server and label ran.
    pub(super) fn rounds(&self) -> u32 {
        self.records.iter().map(|r| r.round).max().unwrap_or(0)
    }

    /// The section's opening: title, the commands and machines of the
    /// sessions it reports, and where each server and its load ran.
    pub(super) fn header(&self, title: &str) -> String {
        let mut commands: Vec<&str> = Vec::new();
        let mut machines: Vec<&Machine> = Vec::new();
        for record in &self.records {
            if !commands.contains(&record.command.as_str()) {
                commands.push(&record.command);
            }
            if !machines.contains(&&record.machine) {
                machines.push(&record.machine);
            }
        }
        let mut out = section_header(
            title,
            "Generated by `shardcast-bench report` from the records of:",
            &commands.join("\n    "),
            machines[0],
        );
        for machine in &machines[1..] {
            let _ = writeln!(out, "Also: {}.\n", machine.describe());
        }
        let _ = writeln!(out, "Cores:\n");
        for server in &self.servers {
            if let Some(record) = self.records.iter().find(|r| &r.server == server) {
                let _ = write!(
                    out,
                    "- {server}: server on {} (`taskset -c {}`), load on {}",
                    cores_text(&record.server_cores),
                    record.server_cores,
                    cores_text(&record.load_cores),
                );
                let _ = if record.shares_cores() {
                    writeln!(
                        out,
                        ". Server and load share cores: its throughput is not comparable with a server that has its cores to itself; compare its CPU per unit of work."
                    )
                } else {
                    writeln!(out, ", apart.")
                };
            }
        }
        out.push('\n');
        if let Some(baseline) = &self.baseline {
            let _ = writeln!(
                out,
                "Figures are medians over {} round(s). Ratios compare each server with {baseline} (above 1: {baseline} is ahead); throughput only between servers placed alike.\n",
                self.rounds()
            );
        } else {
            let _ = writeln!(
                out,
                "Figures are medians over {} round(s). The baseline did not run this scenario: no ratios.\n",
                self.rounds()
            );
        }
        out
    }

    /// A Markdown table: a row per server, a column per label, `cell`
    /// writing each (a dash where it has nothing).
    pub(super) fn table(&self, title: &str, cell: &dyn Fn(&str, &str) -> Option<String>) -> String {
        let mut out = format!("### {title}\n\n| server | {} |\n", self.labels.join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(self.labels.len()));
        for server in &self.servers {
            let cells: Vec<String> = self
                .labels
                .iter()
                .map(|label| cell(server, label).unwrap_or_else(|| "-".to_owned()))
                .collect();
            let _ = writeln!(out, "| {server} | {} |", cells.join(" | "));
        }
        out.push('\n');
        out
    }
}

/// `, 1.30x` for a ratio, nothing without one.
pub(super) fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or_else(String::new, |ratio| format!(", {ratio:.2}x"))
}

/// `core 0` or `cores 0,1`.
fn cores_text(cores: &str) -> String {
    if cores.contains(',') || cores.contains('-') {
        format!("cores {cores}")
    } else {
        format!("core {cores}")
    }
}

/// A goal's verdict line: `- met: ...` or `- missed: ...`.
pub(super) fn goal_line(met: bool, text: &str) -> String {
    format!("- {}: {text}\n", if met { "met" } else { "missed" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record;
    use serde_json::json;

    fn echo(server: &str, round: u32, rate: f64, cores: (&str, &str)) -> Record {
        let mut record = record(server, round, json!({"messages_per_second": rate}));
        record.server_cores = cores.0.into();
        record.load_cores = cores.1.into();
        record
    }

    #[test]
    fn the_grid_puts_the_baseline_first_and_takes_medians() {
        let records = [
            echo("peer", 1, 50.0, ("0", "1")),
            echo("shardcast", 1, 100.0, ("0", "1")),
            echo("shardcast", 2, 300.0, ("0", "1")),
            echo("shardcast", 3, 200.0, ("0", "1")),
            echo("spread", 1, 80.0, ("0,1", "0,1")),
        ];
        let grid = Grid::new(records.iter().collect(), "shardcast");
        assert_eq!(grid.servers, ["shardcast", "peer", "spread"]);
        assert_eq!(grid.baseline.as_deref(), Some("shardcast"));
        let label = "100 × 32 B";
        assert_eq!(
            grid.median("shardcast", label, "messages_per_second"),
            Some(200.0)
        );
        assert_eq!(
            grid.ratio("peer", label, "messages_per_second", Better::Higher, true),
            Some(4.0)
        );
        assert_eq!(
            grid.ratio("spread", label, "messages_per_second", Better::Higher, true),
            None
        );
        assert_eq!(
            grid.ratio("spread", label, "messages_per_second", Better::Lower, false),
            Some(0.4)
        );
        assert_eq!(
            grid.ratio(
                "shardcast",
                label,
                "messages_per_second",
                Better::Higher,
                false
            ),
            None
        );
        assert_eq!(grid.rounds(), 3);
        let header = grid.header("Echo");
        assert!(
            header.contains("- peer: server on core 0 (`taskset -c 0`), load on core 1, apart.")
        );
        assert!(header.contains("- spread: server on cores 0,1"));
        assert!(header.contains("Server and load share cores"));
        assert!(header.contains("medians over 3 round(s)"));
    }

    #[test]
    fn without_the_baseline_there_are_no_ratios() {
        let records = [echo("peer", 1, 50.0, ("0", "1"))];
        let grid = Grid::new(records.iter().collect(), "shardcast");
        assert_eq!(grid.baseline, None);
        assert_eq!(
            grid.ratio(
                "peer",
                "100 × 32 B",
                "messages_per_second",
                Better::Higher,
                false
            ),
            None
        );
        assert!(grid.header("Echo").contains("no ratios"));
    }

    #[test]
    fn sections_come_only_for_the_kinds_recorded() {
        let records = [echo("shardcast", 1, 100.0, ("0", "1"))];
        let options = Options {
            baseline: "shardcast".into(),
            plots: DEFAULT_PLOTS.into(),
        };
        let sections = render(&records, &options, None).unwrap();
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].name, "engine-echo");
    }
}
