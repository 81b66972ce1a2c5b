//! `shardcast-bench compare`: servers side by side under the same loads,
//! in one session, the method of `shared/ANCHORS.md`.
//!
//! Every run starts one server pinned with `taskset` on a free port, waits
//! for its port, drives one scenario from the load cores, then kills the
//! server: each server is restarted for every run. The echo scenarios run
//! first, all their rounds, because the latency scenarios offer shares of
//! each server's echo maximum measured here; then the other scenarios.
//! Within a round, each scenario visits the servers in a fresh shuffled
//! order, so drift in a noisy machine spreads over all of them.
//!
//! Every run becomes a [`Record`] appended to a JSON-lines file as soon as
//! it ends; `shardcast-bench report` (called at the end when `--report` is
//! given) turns the records into BENCHMARKS.md.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use shardcast::CoreList;

use crate::client::XorShift;
use crate::echo::DriverChoice;
use crate::machine::Machine;
use crate::open_loop::choice_name;
use crate::placement::{NamedPlacement, Placement};
use crate::record::{Record, RecordWriter};
use crate::report;
use crate::scenario::{Offered, Scenario, Shape};
use crate::servers::{RunningServer, ServerSpec, Speaks, free_port, shell_command_line};
use crate::stats::{format_rate, median};

/// Command line of `shardcast-bench compare`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// A server under test, `NAME=COMMAND` for a plain WebSocket echo
    /// server, or `NAME=PROTOCOL:COMMAND` with PROTOCOL `raw`, `socket.io`,
    /// `uws-topics` or `shardcast-v1`; `{port}` in COMMAND is replaced by a
    /// free port, and COMMAND is split on whitespace, without a shell. Each
    /// scenario runs against the servers whose protocol it speaks: echo raw
    /// and socket.io, latency and storm raw, fanout socket.io, uws-topics
    /// and shardcast-v1. A name may come twice with two protocols (one
    /// server for echo, one for fanout; the two commands may be the same).
    /// Repeat for each server.
    #[arg(long = "server", required = true)]
    pub(crate) servers: Vec<ServerSpec>,
    /// A scenario: `echo:NxS` (or `NxS`), `latency:NxS@SHARE%` or
    /// `latency:NxS@RATE`, `fanout:MxS[/ROOMS][+PUBLISHERS]` (one room and
    /// one publisher by default), `storm:N` or `storm:N~JITTER_MS`. Repeat for each; without any,
    /// echo at 100 and 1000 × 32 B and 1 KiB, latency at 25, 50 and 75%
    /// of each server's maximum at 100 × 32 B, and a storm of 1000.
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
    /// The generator's I/O driver.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub(crate) driver: DriverChoice,
    /// The request path the echo servers echo on.
    #[arg(long, default_value = "/")]
    pub(crate) path: String,
    /// The server the others are compared with.
    #[arg(long, default_value = "shardcast")]
    pub(crate) baseline: String,
    /// The JSON-lines file the records are appended to; by default
    /// `target/bench/compare-<session>.jsonl`.
    #[arg(long)]
    pub(crate) results: Option<PathBuf>,
    /// Write the sections of this session to this report (BENCHMARKS.md)
    /// when the session ends, as `shardcast-bench report` would.
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// Where the report's plots go (SVG), relative to the report's folder.
    #[arg(long, default_value = report::DEFAULT_PLOTS)]
    pub(crate) plots: PathBuf,
    /// The kind the records are filed under, in place of each scenario's
    /// own: `scaling` files its echo runs apart from the echo section.
    #[arg(skip)]
    pub(crate) record_as: Option<&'static str>,
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

    fn scenarios(&self) -> Vec<Scenario> {
        if self.scenarios.is_empty() {
            Scenario::defaults()
        } else {
            self.scenarios.clone()
        }
    }

    /// Fails on a placement for no server, a latency share without the
    /// echo it is a share of, or scenarios with no server to run them.
    fn check(&self) -> anyhow::Result<()> {
        let names: Vec<&str> = self.servers.iter().map(|spec| spec.name.as_str()).collect();
        if let Some(stray) = self
            .placements
            .iter()
            .find(|named| !names.contains(&named.name.as_str()))
        {
            bail!(
                "--placement {}: there is no server of that name",
                stray.name
            );
        }
        let scenarios = self.scenarios();
        for scenario in &scenarios {
            if let Scenario::Latency(shape, Offered::Share(_)) = scenario {
                if !scenarios.contains(&Scenario::Echo(*shape)) {
                    bail!(
                        "{} needs each server's echo maximum at {shape}: add --scenario echo:{}x{}",
                        scenario.label(),
                        shape.connections,
                        shape.size
                    );
                }
            }
            if self.servers_for(scenario).is_empty() {
                bail!(
                    "no server speaks what {} {} needs ({})",
                    scenario.kind(),
                    scenario.label(),
                    speakers(scenario)
                        .iter()
                        .map(|speaks| speaks.name())
                        .collect::<Vec<_>>()
                        .join(" or ")
                );
            }
        }
        Ok(())
    }
}

/// The protocols a scenario can speak to a server, in order of preference.
fn speakers(scenario: &Scenario) -> &'static [Speaks] {
    match scenario {
        Scenario::Echo(_) => &[Speaks::Raw, Speaks::SocketIo],
        Scenario::Latency(..) | Scenario::Storm { .. } => &[Speaks::Raw],
        Scenario::Fanout { .. } => &[Speaks::SocketIo, Speaks::UwsTopics, Speaks::ShardcastV1],
    }
}

impl Args {
    /// The servers `scenario` runs against: per name, the first spec whose
    /// protocol it speaks.
    fn servers_for(&self, scenario: &Scenario) -> Vec<ServerSpec> {
        let mut chosen: Vec<ServerSpec> = Vec::new();
        for speaks in speakers(scenario) {
            for spec in self.servers.iter().filter(|spec| spec.speaks == *speaks) {
                if !chosen.iter().any(|other| other.name == spec.name) {
                    chosen.push(spec.clone());
                }
            }
        }
        chosen
    }
}

/// One run of the session's plan.
struct Step {
    round: u32,
    scenario: Scenario,
    server: ServerSpec,
}

/// The session's runs in order: every round of the echo scenarios, then
/// every round of the others; servers shuffled afresh for each scenario.
fn plan(args: &Args, scenarios: &[Scenario], rng: &mut XorShift) -> Vec<Step> {
    let (echoes, others): (Vec<Scenario>, Vec<Scenario>) = scenarios
        .iter()
        .partition(|scenario| matches!(scenario, Scenario::Echo(_)));
    let mut steps = Vec::new();
    for phase in [echoes, others] {
        for round in 1..=args.rounds {
            for scenario in &phase {
                let servers = args.servers_for(scenario);
                for index in shuffled(servers.len(), rng) {
                    steps.push(Step {
                        round,
                        scenario: *scenario,
                        server: servers[index].clone(),
                    });
                }
            }
        }
    }
    steps
}

/// Runs `shardcast-bench compare`.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
    args.check()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let session = now.as_secs();
    let mut rng = XorShift::new(now.as_nanos() as u64 | 1);
    let steps = plan(args, &args.scenarios(), &mut rng);
    let results = args
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/bench/compare-{session}.jsonl")));
    let mut writer = RecordWriter::append_to(&results)?;
    let context = RunContext {
        session,
        command: shell_command_line(std::env::args()),
        machine: Machine::read(),
    };

    let bar = ProgressBar::new(steps.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} runs, about {eta} left: {msg}",
        )
        .context("the progress bar's template")?
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let mut records: Vec<Record> = Vec::with_capacity(steps.len());
    for step in &steps {
        let what = format!(
            "round {}/{}: {} {} against {}",
            step.round,
            args.rounds,
            step.scenario.kind(),
            step.scenario.label(),
            step.server.name
        );
        bar.set_message(what.clone());
        let record = run_one(args, &context, step, &records).with_context(|| what.clone())?;
        bar.suspend(|| eprintln!("{what}: {}", headline(&record)));
        writer.write(&record)?;
        records.push(record);
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!("{} runs recorded in {}", records.len(), results.display());

    let options = report::Options {
        baseline: args.baseline.clone(),
        plots: args.plots.clone(),
    };
    match &args.report {
        Some(out) => report::write(&records, out, &options),
        None => {
            for section in report::render(&records, &options, None)? {
                print!("{}", section.text);
            }
            Ok(())
        }
    }
}

/// What every record of the session shares.
struct RunContext {
    session: u64,
    command: String,
    machine: Machine,
}

/// One run: start the server, load it, kill it, record it. The load runs
/// as a child process (this binary's own subcommand, `--json`), so
/// nothing one run leaves behind (sockets still open, threads, memory)
/// can weigh on the next.
fn run_one(
    args: &Args,
    context: &RunContext,
    step: &Step,
    earlier: &[Record],
) -> anyhow::Result<Record> {
    let name = step.server.name.as_str();
    let placement = args.placement(name);
    let port = free_port()?;
    let url = match step.server.speaks {
        Speaks::Raw => format!("ws://127.0.0.1:{port}{}", args.path),
        // Each protocol's client finds its own path.
        Speaks::SocketIo | Speaks::UwsTopics | Speaks::ShardcastV1 => {
            format!("ws://127.0.0.1:{port}")
        }
    };
    let rate = match step.scenario {
        Scenario::Latency(_, Offered::Rate(rate)) => Some(rate),
        Scenario::Latency(shape, Offered::Share(share)) => {
            Some(share * echo_maximum(earlier, name, shape)?)
        }
        _ => None,
    };
    let server = RunningServer::start(&step.server, port, &placement.server)?;
    let load = load_command(args, step, &url, &placement, server.pid(), rate);
    let output = Command::new(std::env::current_exe().context("finding this program")?)
        .args(&load)
        .stdin(Stdio::null())
        .output()
        .context("running the load")?;
    drop(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "the load failed ({}): {}",
            output.status,
            stderr.trim().lines().next().unwrap_or("no message")
        );
    }
    let json: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("the load printed no JSON result: {stdout:?} {stderr:?}"))?;
    Ok(Record {
        session: context.session,
        command: context.command.clone(),
        machine: context.machine.clone(),
        server: name.to_owned(),
        server_cores: placement.server.to_string(),
        load_cores: placement.load.to_string(),
        round: step.round,
        scenario: args
            .record_as
            .unwrap_or_else(|| step.scenario.kind())
            .to_owned(),
        label: step.scenario.label(),
        params: json["params"].clone(),
        metrics: json["metrics"].clone(),
    })
}

/// The command line of the load of one run: the scenario's subcommand
/// against `url`, one thread per load core (echo, latency), pinned to the
/// load cores, charging the server its CPU time, printing JSON.
fn load_command(
    args: &Args,
    step: &Step,
    url: &str,
    placement: &Placement,
    server_pid: u32,
    rate: Option<f64>,
) -> Vec<String> {
    let threads = placement.load.as_slice().len().to_string();
    let timing = strings(&[
        "--warmup",
        &args.warmup.to_string(),
        "--duration",
        &args.duration.to_string(),
    ]);
    let mut load = match step.scenario {
        Scenario::Echo(shape) => {
            let mut load = strings(&["echo", "--url", url, "--threads", &threads]);
            load.extend(shape_flags("--connections", shape));
            if step.server.speaks == Speaks::SocketIo {
                load.extend(strings(&["--protocol", "socket.io"]));
            }
            load.extend(timing);
            load
        }
        Scenario::Latency(shape, _) => {
            let rate = rate.unwrap_or_default().to_string();
            let mut load = strings(&["latency", "--url", url, "--threads", &threads]);
            load.extend(shape_flags("--connections", shape));
            load.extend(strings(&["--rate", &rate, "--idle", "spin"]));
            load.extend(timing);
            load
        }
        Scenario::Fanout {
            shape,
            rooms,
            publishers,
        } => {
            let protocol = step.server.speaks.name();
            let mut load = strings(&["fanout", "--url", url, "--protocol", protocol]);
            load.extend(shape_flags("--subscribers", shape));
            load.extend(strings(&[
                "--rooms",
                &rooms.to_string(),
                "--publishers",
                &publishers.to_string(),
            ]));
            load.extend(timing);
            load
        }
        Scenario::Storm { clients, jitter_ms } => strings(&[
            "storm",
            "--url",
            url,
            "--clients",
            &clients.to_string(),
            "--jitter-ms",
            &jitter_ms.to_string(),
        ]),
    };
    load.extend(strings(&[
        "--cores",
        &placement.load.to_string(),
        "--server-pid",
        &server_pid.to_string(),
        "--driver",
        &choice_name(&args.driver),
        "--json",
    ]));
    load
}

/// `COUNT_FLAG N --size S`.
fn shape_flags(count_flag: &str, shape: Shape) -> Vec<String> {
    strings(&[
        count_flag,
        &shape.connections.to_string(),
        "--size",
        &shape.size.to_string(),
    ])
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|&part| part.to_owned()).collect()
}

/// The median echo messages/s of server `name` at `shape` over the runs
/// of this session so far.
fn echo_maximum(earlier: &[Record], name: &str, shape: Shape) -> anyhow::Result<f64> {
    let label = Scenario::Echo(shape).label();
    let rates: Vec<f64> = earlier
        .iter()
        .filter(|record| {
            record.scenario == "echo" && record.server == name && record.label == label
        })
        .filter_map(|record| record.metric("messages_per_second"))
        .collect();
    median(&rates).with_context(|| format!("no echo run of {name} at {label} in this session"))
}

/// One line on a finished run, for the log.
fn headline(record: &Record) -> String {
    let metric = |key: &str| record.metric(key).unwrap_or(f64::NAN);
    let cores = format!(
        "server {:.0}% and load {:.0}% of one core",
        metric("server_core_share") * 100.0,
        metric("generator_core_share") * 100.0
    );
    match record.scenario.as_str() {
        "echo" | "scaling" => format!(
            "{} messages/s, {cores}",
            format_rate(metric("messages_per_second"))
        ),
        "latency" => format!(
            "offered {}/s: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; {cores}",
            format_rate(metric("offered_rate")),
            metric("p50_us"),
            metric("p99_us"),
            metric("max_us"),
        ),
        "fanout" => format!(
            "{} deliveries/s, p99 {:.0} µs; {cores}",
            format_rate(metric("deliveries_per_second")),
            metric("p99_us"),
        ),
        _ => format!(
            "all back in {:.2} s, probe p99 {:.0} µs before and {:.0} µs during",
            metric("all_back_seconds"),
            metric("baseline_p99_us"),
            metric("storm_p99_us"),
        ),
    }
}

/// `0..count` in a random order (Fisher-Yates).
fn shuffled(count: usize, rng: &mut XorShift) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    for i in (1..count).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(servers: &[&str], scenarios: &[&str]) -> Args {
        Args {
            servers: servers
                .iter()
                .map(|name| format!("{name}=bin/{name} {{port}}").parse().unwrap())
                .collect(),
            scenarios: scenarios.iter().map(|s| s.parse().unwrap()).collect(),
            rounds: 2,
            warmup: 3.0,
            duration: 10.0,
            server_cores: "0".parse().unwrap(),
            load_cores: "1".parse().unwrap(),
            placements: Vec::new(),
            driver: DriverChoice::Auto,
            path: "/".into(),
            baseline: "shardcast".into(),
            results: None,
            report: None,
            plots: report::DEFAULT_PLOTS.into(),
            record_as: None,
        }
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

    #[test]
    fn echo_rounds_run_before_the_scenarios_that_need_their_maxima() {
        let args = args(
            &["shardcast", "peer"],
            &["latency:100x32@50%", "echo:100x32", "storm:10"],
        );
        args.check().unwrap();
        let steps = plan(&args, &args.scenarios(), &mut XorShift::new(7));
        // 2 servers × 2 rounds × 3 scenarios.
        assert_eq!(steps.len(), 12);
        assert!(steps[..4].iter().all(|step| step.scenario.kind() == "echo"));
        assert!(steps[4..].iter().all(|step| step.scenario.kind() != "echo"));
        assert_eq!(
            steps.iter().map(|step| step.round).collect::<Vec<_>>(),
            [1, 1, 2, 2, 1, 1, 1, 1, 2, 2, 2, 2]
        );
    }

    #[test]
    fn a_latency_share_needs_its_echo_and_fanout_needs_a_room_server() {
        let error = args(&["shardcast"], &["latency:100x32@50%"])
            .check()
            .unwrap_err();
        assert!(
            error.to_string().contains("add --scenario echo:100x32"),
            "{error}"
        );
        let error = args(&["shardcast"], &["fanout:100x32"])
            .check()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("socket.io or uws-topics or shardcast-v1"),
            "{error}"
        );
        let mut stray = args(&["shardcast"], &["echo:100x32"]);
        stray.placements.push("other=0/1".parse().unwrap());
        assert!(stray.check().is_err());
    }

    #[test]
    fn each_scenario_runs_against_the_servers_that_speak_its_protocol() {
        let mut args = args(&["shardcast", "ws"], &[]);
        for spec in [
            "socket.io=socket.io:node io.js {port}",
            "uWebSockets.js=node uws.js {port}",
            "uWebSockets.js=uws-topics:node fanout.js {port}",
            "shardcast=shardcast-v1:bin/shardcast {port}",
        ] {
            args.servers.push(spec.parse().unwrap());
        }
        let names = |scenario: &str| -> Vec<(String, &'static str)> {
            args.servers_for(&scenario.parse().unwrap())
                .into_iter()
                .map(|spec| (spec.name, spec.speaks.name()))
                .collect()
        };
        let raw = |name: &str| (name.to_owned(), "raw");
        assert_eq!(
            names("echo:10x32"),
            [
                raw("shardcast"),
                raw("ws"),
                raw("uWebSockets.js"),
                ("socket.io".into(), "socket.io")
            ]
        );
        assert_eq!(
            names("storm:10"),
            [raw("shardcast"), raw("ws"), raw("uWebSockets.js")]
        );
        assert_eq!(
            names("fanout:10x32"),
            [
                ("socket.io".into(), "socket.io"),
                ("uWebSockets.js".into(), "uws-topics"),
                ("shardcast".into(), "shardcast-v1")
            ]
        );
    }

    #[test]
    fn fanout_loads_name_the_protocol_rooms_and_publishers() {
        let args = args(&["shardcast"], &[]);
        let step = Step {
            round: 1,
            scenario: "fanout:10000x32/1000+100".parse().unwrap(),
            server: "shardcast=shardcast-v1:bin/shardcast {port}"
                .parse()
                .unwrap(),
        };
        let load = load_command(
            &args,
            &step,
            "ws://127.0.0.1:9000",
            &args.placement("shardcast"),
            42,
            None,
        )
        .join(" ");
        for part in [
            "fanout --url ws://127.0.0.1:9000 --protocol shardcast-v1",
            "--subscribers 10000 --size 32 --rooms 1000 --publishers 100",
            "--server-pid 42",
        ] {
            assert!(load.contains(part), "{part:?} not in {load:?}");
        }
    }

    #[test]
    fn a_placement_overrides_the_default_cores() {
        let mut args = args(&["shardcast", "shardcast-2"], &[]);
        args.placements.push("shardcast-2=0,1/0,1".parse().unwrap());
        assert_eq!(args.placement("shardcast-2").server.as_slice(), [0, 1]);
        assert_eq!(args.placement("shardcast").load.as_slice(), [1]);
    }

    #[test]
    fn the_echo_maximum_is_the_median_of_this_servers_runs_at_that_shape() {
        let record = |server: &str, label: &str, rate: f64| {
            let mut record = crate::record::tests::record(
                server,
                1,
                serde_json::json!({"messages_per_second": rate}),
            );
            record.label = label.into();
            record
        };
        let earlier = [
            record("shardcast", "100 × 32 B", 100.0),
            record("shardcast", "100 × 32 B", 300.0),
            record("shardcast", "100 × 32 B", 200.0),
            record("shardcast", "1000 × 32 B", 1.0),
            record("peer", "100 × 32 B", 5.0),
        ];
        let shape = Shape::new(100, 32);
        assert_eq!(echo_maximum(&earlier, "shardcast", shape).unwrap(), 200.0);
        assert_eq!(echo_maximum(&earlier, "peer", shape).unwrap(), 5.0);
        assert!(echo_maximum(&earlier, "other", shape).is_err());
    }
}
