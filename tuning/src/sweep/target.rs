//! What a sweep measures for each [`Target`] (the one `plan` optimizes
//! for): the `shardcast-bench compare` sessions and scenarios it runs, and
//! which figure of which scenario ranks the candidates.
//!
//! - Throughput: raw echo (`serve --echo`) and shardcast.v1 room fan-out
//!   (`serve`), ranked by messages and deliveries per second.
//! - Latency: raw echo for the default's maximum, then an open-loop load
//!   at half of it offered to every candidate, ranked by its p99.

use serde::Serialize;

pub use crate::plan::Target;

/// How a scenario's figures rank candidates under a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    /// More messages per second is better.
    Throughput,
    /// A lower p99 is better.
    P99,
    /// Shown, not ranked (the echo maximum a latency load is a share of).
    None,
}

/// A `--scenario` of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageScenario {
    /// Passed to compare as it is, e.g. `echo:100x32`.
    Fixed(&'static str),
    /// An open-loop `latency:SHAPE@RATE`, the rate `percent` of the
    /// default's median echo rate in the stages before: every candidate
    /// gets the same offered load, so their p99s compare like for like.
    LatencyAtDefaultShare {
        /// `NxS`, the shape of the echo it is a share of.
        shape: &'static str,
        /// The share, in percent.
        percent: u32,
    },
}

impl StageScenario {
    /// The `--scenario` value, given the default's median echo rate
    /// where the scenario needs one.
    pub fn arg(self, default_echo_rate: Option<f64>) -> Option<String> {
        match self {
            StageScenario::Fixed(text) => Some(text.to_owned()),
            StageScenario::LatencyAtDefaultShare { shape, percent } => {
                let rate = default_echo_rate? * f64::from(percent) / 100.0;
                Some(format!("latency:{shape}@{}", rate.round().max(1.0)))
            }
        }
    }

    /// Whether this is a room fan-out.
    pub fn is_fanout(self) -> bool {
        matches!(self, StageScenario::Fixed(text) if text.starts_with("fanout:"))
    }
}

/// One `shardcast-bench compare` session of a sweep: its scenarios and
/// where their load runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The `--scenario` values.
    pub scenarios: &'static [StageScenario],
    /// Whether the load runs on one CPU (the last of the placement's load
    /// CPUs) instead of all of them: `shardcast-bench fanout` pins its
    /// generator threads to a single core and refuses a longer list.
    pub one_load_cpu: bool,
    /// Whether the servers speak shardcast.v1 (`serve`, its rooms
    /// application) rather than raw echo (`serve --echo`).
    pub rooms: bool,
}

/// The compare sessions of `target`, run one after the other: a load that
/// must run on one CPU gets a session of its own, so the others keep
/// every load CPU, and a load offered at a share of the default's echo
/// maximum runs after the session that measured it.
///
/// 100 connections of 32 B messages is the shape BENCHMARKS.md leads
/// with; fan-out to 10 rooms of 100 subscribers exercises the room index
/// and, across shards, the inboxes, where shard counts and
/// `batch_deliveries` matter. Latency is offered at half of the default's
/// echo maximum to every candidate: plans are judged at the same load,
/// one the default serves before its queues build up, and a plan that
/// cannot keep up with it shows in its p99.
pub fn stages(target: Target) -> &'static [Stage] {
    match target {
        Target::Throughput => &[
            Stage {
                scenarios: &[StageScenario::Fixed("echo:100x32")],
                one_load_cpu: false,
                rooms: false,
            },
            Stage {
                scenarios: &[StageScenario::Fixed("fanout:1000x32/10")],
                one_load_cpu: true,
                rooms: true,
            },
        ],
        Target::Latency => &[
            Stage {
                scenarios: &[StageScenario::Fixed("echo:100x32")],
                one_load_cpu: false,
                rooms: false,
            },
            Stage {
                scenarios: &[StageScenario::LatencyAtDefaultShare {
                    shape: "100x32",
                    percent: 50,
                }],
                one_load_cpu: false,
                rooms: false,
            },
        ],
    }
}

/// Every scenario of `target`'s stages.
pub fn scenarios(target: Target) -> Vec<StageScenario> {
    stages(target)
        .iter()
        .flat_map(|stage| stage.scenarios.iter().copied())
        .collect()
}

/// How runs of the scenario kind `kind` (`echo`, `latency`, `fanout`, as
/// recorded) rank candidates under `target`.
pub fn rank(target: Target, kind: &str) -> Rank {
    match (target, kind) {
        (Target::Throughput, "echo" | "fanout") => Rank::Throughput,
        (Target::Latency, "latency") => Rank::P99,
        _ => Rank::None,
    }
}

/// Whether `target` runs a room fan-out, the only load where
/// `rooms.batch_deliveries` changes anything.
pub fn has_fanout(target: Target) -> bool {
    scenarios(target).into_iter().any(StageScenario::is_fanout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_ranks_by_its_own_figure() {
        assert_eq!(rank(Target::Throughput, "echo"), Rank::Throughput);
        assert_eq!(rank(Target::Throughput, "fanout"), Rank::Throughput);
        assert_eq!(rank(Target::Latency, "echo"), Rank::None);
        assert_eq!(rank(Target::Latency, "latency"), Rank::P99);
        assert!(has_fanout(Target::Throughput));
        assert!(!has_fanout(Target::Latency));
        assert_eq!(
            scenarios(Target::Throughput),
            [
                StageScenario::Fixed("echo:100x32"),
                StageScenario::Fixed("fanout:1000x32/10")
            ]
        );
        for target in [Target::Throughput, Target::Latency] {
            for stage in stages(target) {
                let fanout = stage.scenarios.iter().any(|s| s.is_fanout());
                assert_eq!(stage.one_load_cpu, fanout);
                assert_eq!(stage.rooms, fanout);
            }
        }
    }

    #[test]
    fn the_latency_load_is_a_share_of_the_default_echo_rate() {
        let latency = stages(Target::Latency)[1].scenarios[0];
        assert_eq!(
            latency.arg(Some(191_234.4)).as_deref(),
            Some("latency:100x32@95617")
        );
        assert_eq!(latency.arg(None), None);
        let echo = stages(Target::Latency)[0].scenarios[0];
        assert_eq!(echo.arg(None).as_deref(), Some("echo:100x32"));
    }
}
