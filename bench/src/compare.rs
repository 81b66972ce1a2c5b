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

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use shardcast::CoreList;

use crate::client::XorShift;
use crate::echo::{self, Outcome};
use crate::machine::Machine;
use crate::report_file;
use crate::stats::{median, ratio_higher_is_better, ratio_lower_is_better};

/// The section of BENCHMARKS.md this command writes by default.
const SECTION: &str = "engine-echo";

/// How long a server may take to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Cores the server runs on (`taskset -c`).
    #[arg(long, default_value = "0")]
    pub(crate) server_cores: String,
    /// Cores the load generator's threads are pinned to.
    #[arg(long, default_value = "1")]
    pub(crate) load_cores: CoreList,
    /// Load generator threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) threads: u32,
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

/// A server under test: its name in the report and how to start it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerSpec {
    /// Name in the report.
    pub(crate) name: String,
    /// Command line, with `{port}` where its port goes.
    pub(crate) command: String,
}

impl FromStr for ServerSpec {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<ServerSpec> {
        let Some((name, command)) = text.split_once('=') else {
            bail!("expected NAME=COMMAND, got {text:?}");
        };
        let (name, command) = (name.trim(), command.trim());
        if name.is_empty() || command.is_empty() {
            bail!("expected NAME=COMMAND, got {text:?}");
        }
        if !command.contains("{port}") {
            bail!("the command of {name} has no {{port}} to listen on");
        }
        Ok(ServerSpec {
            name: name.to_owned(),
            command: command.to_owned(),
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

/// A started server, killed when dropped.
struct RunningServer {
    child: Child,
}

impl RunningServer {
    /// Starts `spec` on `port`, pinned to `cores`, and waits until the
    /// port accepts connections.
    fn start(spec: &ServerSpec, port: u16, cores: &str) -> anyhow::Result<RunningServer> {
        let command = spec.command.replace("{port}", &port.to_string());
        let child = Command::new("taskset")
            .args(["-c", cores])
            .args(command.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}: taskset -c {cores} {command}", spec.name))?;
        let mut server = RunningServer { child };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("{} exited before opening its port: {status}", spec.name);
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not open port {port} within {START_TIMEOUT:?}",
                    spec.name
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // It may have exited already; either way it must not outlive the run.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now, for the next server.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Runs `shardcast-bench echo-compare`.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
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
                    "round {round}/{}: {} at {}: {:.0} messages/s, server {:.0}% and load {:.0}% of a core",
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
    let port = free_port()?;
    let server = RunningServer::start(spec, port, &args.server_cores)?;
    let load = echo::Args {
        url: format!("ws://127.0.0.1:{port}{}", args.path),
        connections: scenario.connections,
        size: scenario.size,
        in_flight: args.in_flight,
        warmup: args.warmup,
        duration: args.duration,
        threads: args.threads,
        cores: Some(args.load_cores.clone()),
        binary: !args.text,
        text: args.text,
        server_pid: Some(server.child.id()),
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
    let mut out = String::new();
    writeln!(out, "## Echo throughput against peer servers\n")?;
    writeln!(out, "Generated by `shardcast-bench echo-compare`:\n")?;
    writeln!(out, "    {command_line}\n")?;
    writeln!(out, "Machine: {}.\n", machine.describe())?;
    writeln!(
        out,
        "Method: each server pinned with `taskset -c {}` and restarted for every run; the load (shardcast-bench echo, {} thread(s) on monoio's {driver} driver), pinned to core(s) {}, opens N connections that each keep {} message(s) in flight and send the next when an echo arrives, every echo checked against what was sent; {} s warm-up, {} s measured; {} round(s), servers in a fresh shuffled order for every scenario; figures are medians. Server CPU comes from /proc/PID/stat over the measured window.{}\n",
        args.server_cores,
        args.threads,
        args.load_cores,
        args.in_flight,
        args.warmup,
        args.duration,
        args.rounds,
        match summary.baseline {
            Some(_) => format!(
                " Ratios compare each peer with {} (above 1: {} is ahead).",
                args.baseline, args.baseline
            ),
            None => String::new(),
        }
    )?;

    let table = |out: &mut String,
                 title: &str,
                 cell_text: &dyn Fn(&Cell, Option<&Cell>) -> String|
     -> anyhow::Result<()> {
        writeln!(out, "### {title}\n")?;
        writeln!(out, "| server | {} |", summary.scenarios.join(" | "))?;
        writeln!(out, "|---|{}", "---|".repeat(summary.scenarios.len()))?;
        for (row, name) in summary.names.iter().enumerate() {
            let cells: Vec<String> = summary.cells[row]
                .iter()
                .enumerate()
                .map(|(column, cell)| match cell {
                    Some(cell) => {
                        let baseline = summary
                            .baseline
                            .filter(|&b| b != row)
                            .and_then(|b| summary.cells[b][column].as_ref());
                        cell_text(cell, baseline)
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
    table(&mut out, "Messages/s", &|cell, baseline| {
        format!(
            "{}{}",
            format_rate(cell.messages_per_second),
            ratio(baseline.and_then(|b| ratio_higher_is_better(
                b.messages_per_second,
                cell.messages_per_second
            )))
        )
    })?;
    table(
        &mut out,
        "Server CPU per echoed message, µs: user + sys (user)",
        &|cell, baseline| {
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
        "Share of a core used: server / load generator",
        &|cell, _| {
            format!(
                "{:.0}% / {:.0}%",
                cell.server_share * 100.0,
                cell.generator_share * 100.0
            )
        },
    )?;
    writeln!(
        out,
        "A server below 100% of its core while the generator is near 100% of its own was limited by the generator: compare CPU per message then, not messages/s.\n"
    )?;
    Ok(out)
}

fn format_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1}k", per_second / 1e3)
    } else {
        format!("{per_second:.0}")
    }
}

/// The command line as a shell would take it back: arguments holding
/// anything but plain characters are single-quoted.
fn shell_command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+".contains(&b));
            if plain {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
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
    fn servers_need_a_name_and_a_port_placeholder() {
        let spec: ServerSpec = "peer=bin/echo --listen 127.0.0.1:{port}".parse().unwrap();
        assert_eq!(spec.name, "peer");
        assert_eq!(spec.command, "bin/echo --listen 127.0.0.1:{port}");
        assert!("peer".parse::<ServerSpec>().is_err());
        assert!("=bin/echo {port}".parse::<ServerSpec>().is_err());
        assert!(
            "peer=bin/echo --listen 127.0.0.1:9000"
                .parse::<ServerSpec>()
                .is_err()
        );
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
            server_cores: "0".into(),
            load_cores: "1".parse().expect("a core list"),
            threads: 1,
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
        assert!(
            text.contains("1 thread(s) on monoio's io_uring driver"),
            "{text}"
        );
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

    #[test]
    fn command_lines_are_quoted_only_where_needed() {
        let args = [
            "shardcast-bench",
            "echo-compare",
            "--server",
            "peer=bin/echo --listen 127.0.0.1:{port}",
            "--scenario",
            "100x32",
            "it's",
        ]
        .map(str::to_owned);
        assert_eq!(
            shell_command_line(args),
            r"shardcast-bench echo-compare --server 'peer=bin/echo --listen 127.0.0.1:{port}' --scenario 100x32 'it'\''s'"
        );
    }
}
