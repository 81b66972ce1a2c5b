//! `shardcast-bench scaling`: how throughput grows with cores, shardcast
//! with 1, 2, 4, 8 shards against uWebSockets.js with as many processes.
//!
//! For a count N, the server gets cores 0..N and the load the next N
//! cores, one generator thread each, so the load grows with the server.
//! shardcast runs N shards in one process; uWebSockets.js is single
//! threaded, so it runs N processes sharing the port with SO_REUSEPORT
//! (`bench/peers/uwebsockets-js/processes.js`), the way its documentation
//! scales it. Counts that need more cores than this machine has are
//! skipped and said so; the runs are `compare` runs, filed as `scaling`
//! records, and the report gives each count's throughput as a share of
//! linear growth from one core.

use std::path::PathBuf;

use anyhow::bail;
use shardcast::CoreList;

use crate::compare;
use crate::echo::DriverChoice;
use crate::placement::{NamedPlacement, Placement};
use crate::report;
use crate::scenario::Scenario;
use crate::servers::ServerSpec;

/// Command line of `shardcast-bench scaling`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// The core counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub(crate) counts: Vec<usize>,
    /// A server family, `NAME=COMMAND`, where COMMAND takes `{port}`,
    /// `{count}` (shards or processes) and `{cores}` (the server's cores,
    /// `0,1`). Repeat for each; shardcast and uWebSockets.js by default.
    #[arg(long = "server")]
    pub(crate) servers: Vec<ServerSpec>,
    /// An echo scenario, `NxS`; repeat for each. 1000 × 32 B by default.
    #[arg(long = "scenario")]
    pub(crate) scenarios: Vec<Scenario>,
    /// Rounds over every count and server.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// Seconds of warm-up per run.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) warmup: f64,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// The generator's I/O driver.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub(crate) driver: DriverChoice,
    /// The JSON-lines file the records are appended to.
    #[arg(long)]
    pub(crate) results: Option<PathBuf>,
    /// Write the scaling section of this report (BENCHMARKS.md) at the end.
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// Where the report's plots go, relative to the report's folder.
    #[arg(long, default_value = report::DEFAULT_PLOTS)]
    pub(crate) plots: PathBuf,
}

/// The families measured when none is given.
const DEFAULT_SERVERS: [&str; 2] = [
    "shardcast=target/release/shardcast serve --echo --listen 127.0.0.1:{port} --shards {count} --cores {cores}",
    "uWebSockets.js=node bench/peers/uwebsockets-js/processes.js {count} {port}",
];

/// Runs `shardcast-bench scaling`.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
    let families: Vec<ServerSpec> = if args.servers.is_empty() {
        DEFAULT_SERVERS
            .iter()
            .map(|spec| spec.parse())
            .collect::<anyhow::Result<_>>()?
    } else {
        args.servers.clone()
    };
    if let Some(scenario) = args
        .scenarios
        .iter()
        .find(|scenario| !matches!(scenario, Scenario::Echo(_)))
    {
        bail!("scaling runs echo scenarios only, not {}", scenario.kind());
    }
    let available = std::thread::available_parallelism().map_or(1, usize::from);
    let (fit, skipped): (Vec<usize>, Vec<usize>) = args
        .counts
        .iter()
        .partition(|&&count| count > 0 && 2 * count <= available);
    for count in &skipped {
        eprintln!(
            "scaling: {count} core(s) need {} cores (as many again for the load); this machine has {available}: skipped",
            2 * count
        );
    }
    if fit.is_empty() {
        bail!("no count fits on {available} cores");
    }
    let mut servers = Vec::new();
    let mut placements = Vec::new();
    for count in &fit {
        let server = core_range(0, *count)?;
        let load = core_range(*count, *count)?;
        for family in &families {
            let name = member_name(&family.name, *count);
            let command = family
                .command
                .replace("{count}", &count.to_string())
                .replace("{cores}", &server.to_string());
            servers.push(ServerSpec {
                name: name.clone(),
                speaks: family.speaks,
                command,
            });
            placements.push(NamedPlacement {
                name,
                placement: Placement {
                    server: server.clone(),
                    load: load.clone(),
                },
            });
        }
    }
    let scenarios = if args.scenarios.is_empty() {
        vec!["echo:1000x32".parse()?]
    } else {
        args.scenarios.clone()
    };
    compare::command(&compare::Args {
        servers,
        scenarios,
        rounds: args.rounds,
        warmup: args.warmup,
        duration: args.duration,
        server_cores: core_range(0, 1)?,
        load_cores: core_range(1, 1)?,
        placements,
        driver: args.driver,
        path: "/".into(),
        baseline: member_name(&families[0].name, 1),
        results: args.results.clone(),
        report: args.report.clone(),
        plots: args.plots.clone(),
        record_as: Some("scaling"),
    })
}

/// `count` cores from `first`: `2-3`.
fn core_range(first: usize, count: usize) -> anyhow::Result<CoreList> {
    Ok(format!("{first}-{}", first + count - 1).parse()?)
}

/// The name of a family's member at `count` cores: `shardcast ×4`.
pub(crate) fn member_name(family: &str, count: usize) -> String {
    format!("{family} ×{count}")
}

/// The family and count of a member's name, if it is one.
pub(crate) fn parse_member(name: &str) -> Option<(&str, usize)> {
    let (family, count) = name.rsplit_once(" ×")?;
    Some((family, count.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_ranges_list_every_core() {
        assert_eq!(core_range(0, 1).unwrap().as_slice(), [0]);
        assert_eq!(core_range(4, 4).unwrap().as_slice(), [4, 5, 6, 7]);
    }

    #[test]
    fn member_names_round_trip() {
        assert_eq!(member_name("shardcast", 4), "shardcast ×4");
        assert_eq!(parse_member("shardcast ×4"), Some(("shardcast", 4)));
        assert_eq!(
            parse_member("uWebSockets.js ×12"),
            Some(("uWebSockets.js", 12))
        );
        assert_eq!(parse_member("shardcast"), None);
    }

    #[test]
    fn the_default_families_take_a_count_and_cores() {
        for spec in DEFAULT_SERVERS {
            let spec: ServerSpec = spec.parse().unwrap();
            assert!(spec.command.contains("{count}"), "{}", spec.command);
        }
    }
}
