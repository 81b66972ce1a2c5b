//! What a sweep measures for each [`Target`] (the one `plan` optimizes
//! for): the `shardcast-bench compare` sessions and scenarios it runs, and
//! which figure of which scenario ranks the candidates.
//!
//! - Throughput: raw echo (`serve --echo`) and shardcast.v1 room fan-out
//!   (`serve`), ranked by messages and deliveries per second.
//! - Latency: raw echo for each candidate's maximum, then an open-loop
//!   load at half of it, ranked by its p99.

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

/// One `shardcast-bench compare` session of a sweep: its scenarios and
/// where their load runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The `--scenario` values.
    pub scenarios: &'static [&'static str],
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
/// every load CPU.
///
/// 100 connections of 32 B messages is the shape BENCHMARKS.md leads
/// with; fan-out to 10 rooms of 100 subscribers exercises the room index
/// and, across shards, the inboxes, where shard counts and
/// `batch_deliveries` matter. Latency runs at half of each candidate's own
/// echo maximum (compare measures it in the same session): a plan is
/// judged at the same relative load, where queues have not yet built up,
/// not at a rate some candidates cannot reach.
pub fn stages(target: Target) -> &'static [Stage] {
    match target {
        Target::Throughput => &[
            Stage {
                scenarios: &["echo:100x32"],
                one_load_cpu: false,
                rooms: false,
            },
            Stage {
                scenarios: &["fanout:1000x32/10"],
                one_load_cpu: true,
                rooms: true,
            },
        ],
        Target::Latency => &[Stage {
            scenarios: &["echo:100x32", "latency:100x32@50%"],
            one_load_cpu: false,
            rooms: false,
        }],
    }
}

/// Every `--scenario` value of `target`'s stages.
pub fn scenarios(target: Target) -> Vec<&'static str> {
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
    scenarios(target).iter().any(|s| s.starts_with("fanout:"))
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
            ["echo:100x32", "fanout:1000x32/10"]
        );
        for target in [Target::Throughput, Target::Latency] {
            for stage in stages(target) {
                let fanout = stage.scenarios.iter().any(|s| s.starts_with("fanout:"));
                assert_eq!(stage.one_load_cpu, fanout);
                assert_eq!(stage.rooms, fanout);
            }
        }
    }
}
