//! `shardcast-bench echo-compare`: echo servers side by side under the
//! same load, the method of `shared/ANCHORS.md`.
//!
//! Every run starts one server pinned with `taskset`, waits for its port,
//! drives the echo load from the load cores, then kills the server: each
//! server is restarted for every scenario. Rounds visit the scenarios, and
//! within each the servers in a fresh shuffled order, so drift in a noisy
//! machine spreads over all of them. The report gives medians per server
//! and scenario, ratios against the baseline (shardcast), server CPU per
//! message and how busy each side was.
//!
//! Each server has a placement: the cores it runs on and the cores its
//! load runs on (one generator thread per load core). A server spread over
//! every core of the machine (shardcast with 2 shards on 2 cores) shares
//! them with its load; the report says so, and its CPU per message is then
//! the figure to compare.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use shardcast::CoreList;

use crate::client::{EchoProtocol, XorShift};
use crate::echo::{self, Outcome};
use crate::machine::Machine;
use crate::report_file::{self, section_header};
use crate::servers::{RunningServer, ServerSpec, free_port, shell_command_line};
use crate::stats::{format_rate, median, ratio_higher_is_better, ratio_lower_is_better};

/// The section of BENCHMARKS.md this command writes by default.
const SECTION: &str = "engine-echo";

/// Command line of `shardcast-bench echo-compare`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// A server under test, `NAME=COMMAND`; `{port}` in COMMAND is replaced
    /// by a free port. COMMAND is split on whitespace, without a shell.
    /// Repeat for each server.
    #[arg(long = "server", required = true)]
    pub(crate) servers: Vec<ServerSpec>,
    /// A scenario, `CONNECTIONSxSIZE` (`100x32`, `1000x1KiB`). Repeat for
    /// each; the four of ANCHORS.md when absent.
    #[arg(long = "scenario")]
    pub(crate) scenarios: Vec<Scenario>,
    /// Rounds over every scenario and server.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// Seconds of warm-up per run.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) warmup: f64,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Cores every server runs on (`taskset -c`), unless its placement
    /// says otherwise.
    #[arg(long, default_value = "0")]
    pub(crate) server_cores: CoreList,
    /// Cores the load runs on, one generator thread pinned to each, unless
    /// the server's placement says otherwise.
    #[arg(long, default_value = "1")]
    pub(crate) load_cores: CoreList,
    /// The cores of one server and of its load, `NAME=SERVER_CORES/LOAD_CORES`
    /// (`shardcast-2=0,1/0,1`), in place of `--server-cores` and
    /// `--load-cores`. Repeat for each server placed apart.
    #[arg(long = "placement")]
    pub(crate) placements: Vec<NamedPlacement>,
    /// Messages each connection keeps in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) in_flight: u32,
    /// Send text messages rather than binary.
    #[arg(long)]
    pub(crate) text: bool,
    /// The generator's I/O driver.
    #[arg(long, value_enum, default_value_t = echo::DriverChoice::Auto)]
    pub(crate) driver: echo::DriverChoice,
    /// The request path the servers echo on.
    #[arg(long, default_value = "/")]
    pub(crate) path: String,
    /// The server the others are compared with.
    #[arg(long, default_value = "shardcast")]
    pub(crate) baseline: String,
    /// Write the result as a section of this report (BENCHMARKS.md).
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// The name of the report's section.
    #[arg(long, default_value = SECTION)]
    pub(crate) section: String,
}

impl Args {
    /// Where the server named `name` and its load run.
    fn placement(&self, name: &str) -> Placement {
        self.placements
            .iter()
            .find(|named| named.name == name)
            .map_or_else(
                || Placement {
                    server: self.server_cores.clone(),
                    load: self.load_cores.clone(),
                },
                |named| named.placement.clone(),
            )
    }
}

/// The cores a server runs on and the cores its load runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The server's cores (`taskset -c`).
    pub(crate) server: CoreList,
    /// The load's cores, one generator thread pinned to each.
    pub(crate) load: CoreList,
}

impl Placement {
    /// Whether the server and its load run on a core in common.
    fn shares_cores(&self) -> bool {
        self.server
            .as_slice()
            .iter()
            .any(|core| self.load.as_slice().contains(core))
    }
}

/// A `--placement` value: the server it is for, and its placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NamedPlacement {
    /// The server's name, as in its `--server`.
    pub(crate) name: String,
    /// Where it and its load run.
    pub(crate) placement: Placement,
}

impl FromStr for NamedPlacement {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<NamedPlacement> {
        let expected = || format!("expected NAME=SERVER_CORES/LOAD_CORES, got {text:?}");
        let (name, cores) = text.split_once('=').with_context(expected)?;
        let (server, load) = cores.split_once('/').with_context(expected)?;
        let name = name.trim();
        if name.is_empty() {
            bail!(expected());
        }
        Ok(NamedPlacement {
            name: name.to_owned(),
            placement: Placement {
                server: server.parse().with_context(expected)?,
                load: load.parse().with_context(expected)?,
            },
        })
    }
}

/// One load shape: how many connections, and the payload size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scenario {
    /// Connections in total.
    pub(crate) connections: usize,
    /// Payload bytes per message.
    pub(crate) size: usize,
}

impl Scenario {
    /// The scenarios of ANCHORS.md: 100 and 1000 connections, 32 B and
    /// 1 KiB.
    const DEFAULT: [Scenario; 4] = [
        Scenario::new(100, 32),
        Scenario::new(100, 1024),
        Scenario::new(1000, 32),
        Scenario::new(1000, 1024),
    ];

    const fn new(connections: usize, size: usize) -> Scenario {
        Scenario { connections, size }
    }

    /// The column heading: `100 × 1 KiB`.
    fn label(&self) -> String {
        let size = match self.size {
            s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
            s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
            s => format!("{s} B"),
        };
        format!("{} × {size}", self.connections)
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Scenario> {
        let Some((connections, size)) = text.split_once('x') else {
            bail!("expected CONNECTIONSxSIZE, got {text:?}");
        };
        let connections: usize = connections
            .parse()
            .with_context(|| format!("{connections:?} is not a connection count"))?;
        let (digits, unit) = match size.strip_suffix("KiB") {
            Some(digits) => (digits, 1 << 10),
            None => match size.strip_suffix("MiB") {
                Some(digits) => (digits, 1 << 20),
                None => (size.strip_suffix('B').unwrap_or(size), 1),
            },
        };
        let size = digits
            .parse::<usize>()
            .with_context(|| format!("{size:?} is not a size"))?
            * unit;
        if connections == 0 {
            bail!("a scenario needs at least one connection");
        }
        Ok(Scenario::new(connections, size))
    }
}

/// Runs `shardcast-bench echo-compare`.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
    if let Some(stray) = args
        .placements
        .iter()
        .find(|named| !args.servers.iter().any(|spec| spec.name == named.name))
    {
        bail!(
            "--placement {}: there is no server of that name",
            stray.name
        );
    }
    let scenarios = if args.scenarios.is_empty() {
        Scenario::DEFAULT.to_vec()
    } else {
        args.scenarios.clone()
    };
    let mut results: Vec<Vec<Vec<Outcome>>> =
        vec![vec![Vec::new(); scenarios.len()]; args.servers.len()];
    let mut rng = XorShift::new(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64),
    );
    for round in 1..=args.rounds {
        for (scenario_index, scenario) in scenarios.iter().enumerate() {
            for server_index in shuffled(args.servers.len(), &mut rng) {
                let spec = &args.servers[server_index];
                let outcome = run_one(args, spec, scenario)
                    .with_context(|| format!("{} at {}", spec.name, scenario.label()))?;
                eprintln!(
                    "round {round}/{}: {} at {}: {:.0} messages/s, server {:.0}% and load {:.0}% of one core",
                    args.rounds,
                    spec.name,
                    scenario.label(),
                    outcome.messages_per_second(),
                    outcome.server_core_share().unwrap_or(0.0) * 100.0,
                    outcome.generator_core_share() * 100.0,
                );
                results[server_index][scenario_index].push(outcome);
            }
        }
    }
    let mut drivers: Vec<&str> = results
        .iter()
        .flatten()
        .flatten()
        .map(|o| o.driver)
        .collect();
    drivers.sort_unstable();
    drivers.dedup();
    let summary = Summary::new(args, &scenarios, &results);
    let command_line = shell_command_line(std::env::args());
    let section = render(
        args,
        &summary,
        &command_line,
        &drivers.join(" and "),
        &Machine::read(),
    )?;
    print!("{section}");
    if let Some(report) = &args.report {
        report_file::replace_section(report, &args.section, &section)?;
        eprintln!("wrote the {} section of {}", args.section, report.display());
    }
    Ok(())
}

/// One run: start the server, load it, kill it.
fn run_one(args: &Args, spec: &ServerSpec, scenario: &Scenario) -> anyhow::Result<Outcome> {
    let placement = args.placement(&spec.name);
    let port = free_port()?;
    let server = RunningServer::start(spec, port, &placement.server)?;
    let load = echo::Args {
        url: format!("ws://127.0.0.1:{port}{}", args.path),
        protocol: EchoProtocol::Raw,
        connections: scenario.connections,
        size: scenario.size,
        in_flight: args.in_flight,
        warmup: args.warmup,
        duration: args.duration,
        threads: u32::try_from(placement.load.as_slice().len())?,
        cores: Some(placement.load),
        binary: !args.text,
        text: args.text,
        server_pid: Some(server.pid()),
        driver: args.driver,
        connect_timeout: 30.0,
        json: false,
    };
    let outcome = echo::run(&load)?;
    drop(server);
    outcome.check()?;
    Ok(outcome)
}

/// `0..count` in a random order (Fisher-Yates).
fn shuffled(count: usize, rng: &mut XorShift) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    for i in (1..count).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    order
}

/// Medians of one server at one scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cell {
    messages_per_second: f64,
    server_micros: f64,
    server_user_micros: f64,
    server_share: f64,
    generator_share: f64,
}

impl Cell {
    fn of(outcomes: &[Outcome]) -> Option<Cell> {
        let pick =
            |f: &dyn Fn(&Outcome) -> f64| median(&outcomes.iter().map(f).collect::<Vec<_>>());
        let micros = |o: &Outcome| {
            o.server_micros_per_message()
                .unwrap_or((f64::NAN, f64::NAN))
        };
        Some(Cell {
            messages_per_second: pick(&Outcome::messages_per_second)?,
            server_micros: pick(&|o| micros(o).0)?,
            server_user_micros: pick(&|o| micros(o).1)?,
            server_share: pick(&|o| o.server_core_share().unwrap_or(f64::NAN))?,
            generator_share: pick(&Outcome::generator_core_share)?,
        })
    }
}

/// The medians of every server at every scenario.
struct Summary {
    /// Server names, the baseline first.
    names: Vec<String>,
    /// Where each server and its load ran, in the order of `names`.
    placements: Vec<Placement>,
    /// Column headings.
    scenarios: Vec<String>,
    /// `cells[server][scenario]`, in the order of `names`.
    cells: Vec<Vec<Option<Cell>>>,
    /// Index of the baseline in `names`, if it was measured.
    baseline: Option<usize>,
}

impl Summary {
    fn new(args: &Args, scenarios: &[Scenario], results: &[Vec<Vec<Outcome>>]) -> Summary {
        let mut order: Vec<usize> = (0..args.servers.len()).collect();
        order.sort_by_key(|&i| args.servers[i].name != args.baseline);
        let baseline = (args.servers[order[0]].name == args.baseline).then_some(0);
        Summary {
            names: order
                .iter()
                .map(|&i| args.servers[i].name.clone())
                .collect(),
            placements: order
                .iter()
                .map(|&i| args.placement(&args.servers[i].name))
                .collect(),
            scenarios: scenarios.iter().map(Scenario::label).collect(),
            cells: order
                .iter()
                .map(|&i| results[i].iter().map(|runs| Cell::of(runs)).collect())
                .collect(),
            baseline,
        }
    }
}

/// The report section: command, machine, method and the three tables.
fn render(
    args: &Args,
    summary: &Summary,
    command_line: &str,
    driver: &str,
    machine: &Machine,
) -> anyhow::Result<String> {
    let mut out = section_header(
        "Echo throughput against peer servers",
        "Generated by `shardcast-bench echo-compare`:",
        command_line,
        machine,
    );
    writeln!(
        out,
        "Method: each server pinned with `taskset` and restarted for every run; the load (shardcast-bench echo on monoio's {driver} driver, one thread pinned to each of its cores) opens N connections that each keep {} message(s) in flight and send the next when an echo arrives, every echo checked against what was sent; {} s warm-up, {} s measured; {} round(s), servers in a fresh shuffled order for every scenario; figures are medians. Server CPU comes from /proc/PID/stat over the measured window, every thread of the server counted.\n",
        args.in_flight, args.warmup, args.duration, args.rounds,
    )?;
    writeln!(out, "Cores:\n")?;
    for (name, placement) in summary.names.iter().zip(&summary.placements) {
        write!(
            out,
            "- {name}: server on {} (`taskset -c {}`), load on {}",
            cores_text(&placement.server),
            placement.server,
            cores_text(&placement.load),
        )?;
        if placement.shares_cores() {
            writeln!(
                out,
                ". Server and load share cores: they compete for the same CPUs, so its messages/s is not comparable with a server that has its cores to itself; compare its CPU per message."
            )?;
        } else {
            writeln!(out, ", apart.")?;
        }
    }
    writeln!(out)?;
    if summary.baseline.is_some() {
        writeln!(
            out,
            "Ratios compare each server with {} (above 1: {} is ahead); messages/s only between servers placed alike, CPU per message between all.\n",
            args.baseline, args.baseline
        )?;
    }

    let table = |out: &mut String,
                 title: &str,
                 cell_text: &dyn Fn(&Cell, Option<&Cell>, bool) -> String|
     -> anyhow::Result<()> {
        writeln!(out, "### {title}\n")?;
        writeln!(out, "| server | {} |", summary.scenarios.join(" | "))?;
        writeln!(out, "|---|{}", "---|".repeat(summary.scenarios.len()))?;
        for (row, name) in summary.names.iter().enumerate() {
            let baseline_row = summary.baseline.filter(|&b| b != row);
            let placed_alike =
                baseline_row.is_some_and(|b| summary.placements[b] == summary.placements[row]);
            let cells: Vec<String> = summary.cells[row]
                .iter()
                .enumerate()
                .map(|(column, cell)| match cell {
                    Some(cell) => {
                        let baseline = baseline_row.and_then(|b| summary.cells[b][column].as_ref());
                        cell_text(cell, baseline, placed_alike)
                    }
                    None => "-".to_owned(),
                })
                .collect();
            writeln!(out, "| {name} | {} |", cells.join(" | "))?;
        }
        writeln!(out)?;
        Ok(())
    };
    let ratio = |ratio: Option<f64>| match ratio {
        Some(ratio) => format!(", {ratio:.2}x"),
        None => String::new(),
    };
    table(&mut out, "Messages/s", &|cell, baseline, placed_alike| {
        format!(
            "{}{}",
            format_rate(cell.messages_per_second),
            ratio(baseline.filter(|_| placed_alike).and_then(|b| {
                ratio_higher_is_better(b.messages_per_second, cell.messages_per_second)
            }))
        )
    })?;
    table(
        &mut out,
        "Server CPU per echoed message, µs: user + sys (user)",
        &|cell, baseline, _| {
            format!(
                "{:.2} ({:.2}){}",
                cell.server_micros,
                cell.server_user_micros,
                ratio(
                    baseline
                        .and_then(|b| ratio_lower_is_better(b.server_micros, cell.server_micros))
                )
            )
        },
    )?;
    table(
        &mut out,
        "CPU used, in cores (100% is one core): server / load generator",
        &|cell, _, _| {
            format!(
                "{:.0}% / {:.0}%",
                cell.server_share * 100.0,
                cell.generator_share * 100.0
            )
        },
    )?;
    writeln!(
        out,
        "A server using less than its cores while the generator uses nearly all of its own was limited by the generator: compare CPU per message then, not messages/s.\n"
    )?;
    Ok(out)
}

/// `core 0` or `cores 0,1`.
fn cores_text(cores: &CoreList) -> String {
    match cores.as_slice() {
        [core] => format!("core {core}"),
        _ => format!("cores {cores}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc_stat::CpuSpent;

    #[test]
    fn scenarios_parse_counts_and_sizes() {
        assert_eq!(
            "100x32".parse::<Scenario>().unwrap(),
            Scenario::new(100, 32)
        );
        assert_eq!(
            "1000x1KiB".parse::<Scenario>().unwrap(),
            Scenario::new(1000, 1024)
        );
        assert_eq!("10x64B".parse::<Scenario>().unwrap(), Scenario::new(10, 64));
        assert_eq!(
            "1x2MiB".parse::<Scenario>().unwrap(),
            Scenario::new(1, 2 << 20)
        );
        for bad in ["100", "x32", "0x32", "100x", "100xKiB", "ax32"] {
            assert!(bad.parse::<Scenario>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Scenario::new(1000, 1024).label(), "1000 × 1 KiB");
        assert_eq!(Scenario::new(100, 32).label(), "100 × 32 B");
    }

    #[test]
    fn shuffles_are_permutations() {
        let mut rng = XorShift::new(42);
        for count in 0..6 {
            let mut order = shuffled(count, &mut rng);
            order.sort_unstable();
            assert_eq!(order, (0..count).collect::<Vec<_>>());
        }
    }

    fn outcome(echoes: u64, server_ticks: f64) -> Outcome {
        Outcome {
            driver: "io_uring",
            connect_seconds: 0.1,
            seconds: 1.0,
            echoes,
            mismatches: 0,
            failed: 0,
            stalled: 0,
            first_error: None,
            server_cpu: Some(CpuSpent {
                total: server_ticks,
                user: server_ticks / 4.0,
            }),
            generator_cpu: CpuSpent {
                total: 0.9,
                user: 0.3,
            },
            size: 32,
        }
    }

    fn args(servers: &[&str]) -> Args {
        Args {
            servers: servers
                .iter()
                .map(|name| format!("{name}=bin/{name} {{port}}").parse().unwrap())
                .collect(),
            scenarios: Vec::new(),
            rounds: 3,
            warmup: 3.0,
            duration: 10.0,
            server_cores: "0".parse().expect("a core list"),
            load_cores: "1".parse().expect("a core list"),
            placements: Vec::new(),
            in_flight: 1,
            text: false,
            driver: echo::DriverChoice::Auto,
            path: "/".into(),
            baseline: "shardcast".into(),
            report: None,
            section: SECTION.into(),
        }
    }

    #[test]
    fn medians_and_ratios_against_the_baseline_fill_the_tables() {
        let args = args(&["peer", "shardcast"]);
        let scenarios = [Scenario::new(100, 32)];
        // Three rounds each; the medians are 50k for the peer and 100k for
        // shardcast, at 1 s and 0.5 s of server CPU.
        let results = vec![
            vec![vec![
                outcome(50_000, 1.0),
                outcome(10_000, 1.0),
                outcome(60_000, 1.0),
            ]],
            vec![vec![
                outcome(100_000, 0.5),
                outcome(120_000, 0.5),
                outcome(90_000, 0.5),
            ]],
        ];
        let summary = Summary::new(&args, &scenarios, &results);
        assert_eq!(summary.names, ["shardcast", "peer"]);
        let machine = Machine {
            cpu: "Test CPU".into(),
            cores: 2,
            kernel: "6.0".into(),
            commit: "abc".into(),
            rustc: "rustc".into(),
        };
        let text = render(
            &args,
            &summary,
            "shardcast-bench echo-compare",
            "io_uring",
            &machine,
        )
        .unwrap();
        assert!(text.contains("| shardcast | 100.0k |"), "{text}");
        assert!(text.contains("| peer | 50.0k, 2.00x |"), "{text}");
        // 0.5 s / 100k = 5 µs; 1 s / 50k = 20 µs, four times ours.
        assert!(text.contains("| shardcast | 5.00 (1.25) |"), "{text}");
        assert!(text.contains("| peer | 20.00 (5.00), 4.00x |"), "{text}");
        assert!(text.contains("| peer | 100% / 90% |"), "{text}");
        assert!(text.contains("Test CPU, 2 logical cores"), "{text}");
        assert!(text.contains("on monoio's io_uring driver"), "{text}");
        assert!(
            text.contains("- peer: server on core 0 (`taskset -c 0`), load on core 1, apart."),
            "{text}"
        );
        assert!(!text.contains("share cores"), "{text}");
    }

    #[test]
    fn placements_parse_and_override_the_default_cores() {
        let named: NamedPlacement = "shardcast-2=0-1/0,1".parse().unwrap();
        assert_eq!(named.name, "shardcast-2");
        assert_eq!(named.placement.server.as_slice(), [0, 1]);
        assert_eq!(named.placement.load.as_slice(), [0, 1]);
        assert!(named.placement.shares_cores());
        for bad in ["shardcast-2", "x=0", "=0/1", "x=0/", "x=a/1"] {
            assert!(bad.parse::<NamedPlacement>().is_err(), "{bad:?}");
        }
        let mut args = args(&["shardcast", "shardcast-2"]);
        args.placements.push(named.clone());
        assert_eq!(args.placement("shardcast-2"), named.placement);
        let default = args.placement("shardcast");
        assert_eq!(default.server.as_slice(), [0]);
        assert_eq!(default.load.as_slice(), [1]);
        assert!(!default.shares_cores());
    }

    #[test]
    fn a_server_sharing_cores_with_its_load_is_flagged_and_gets_no_throughput_ratio() {
        let mut args = args(&["shardcast", "shardcast-2"]);
        args.placements
            .push("shardcast-2=0,1/0,1".parse().expect("a placement"));
        let results = vec![
            vec![vec![outcome(100_000, 0.5)]],
            vec![vec![outcome(80_000, 1.6)]],
        ];
        let summary = Summary::new(&args, &[Scenario::new(100, 32)], &results);
        let text = render(&args, &summary, "cmd", "io_uring", &Machine::read()).unwrap();
        assert!(
            text.contains("- shardcast-2: server on cores 0,1 (`taskset -c 0,1`), load on cores 0,1. Server and load share cores"),
            "{text}"
        );
        // Throughput is not compared across placements, CPU per message is:
        // 1.6 s / 80k = 20 µs against 5 µs.
        assert!(text.contains("| shardcast-2 | 80.0k |"), "{text}");
        assert!(
            text.contains("| shardcast-2 | 20.00 (5.00), 4.00x |"),
            "{text}"
        );
        assert!(text.contains("| shardcast-2 | 160% / 90% |"), "{text}");
    }

    #[test]
    fn without_the_baseline_there_are_no_ratios() {
        let args = args(&["peer"]);
        let results = vec![vec![vec![outcome(50_000, 1.0)]]];
        let summary = Summary::new(&args, &[Scenario::new(100, 32)], &results);
        assert_eq!(summary.baseline, None);
        let machine = Machine::read();
        let text = render(&args, &summary, "cmd", "legacy", &machine).unwrap();
        assert!(text.contains("| peer | 50.0k |"), "{text}");
        assert!(!text.contains("Ratios"), "{text}");
    }
}
