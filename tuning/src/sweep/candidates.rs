//! The plans a sweep measures: `default` (the server's own settings, the
//! baseline every other candidate is judged against) and variations
//! generated from the host's topology, each a [`ServeConfig`] and the
//! cores it and its load run on.

use serde::Serialize;

use crate::host::Host;
use crate::plan::{self, PlanError, PlanOptions};
use crate::report::Report;
use crate::serve_config::ServeConfig;
use crate::sweep::target::{self, Target};
use crate::topology::{Allowed, Topology};
use crate::{InspectError, cpulist};

/// The name of the baseline candidate: an empty config, so the server's
/// embedded defaults decide everything.
pub const DEFAULT: &str = "default";

/// Where a server and its load run, given to `shardcast-bench compare` as
/// `--placement NAME=SERVER/LOAD`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The server's CPUs (`taskset -c`): shards with `auto` cores take
    /// one each.
    pub server: Vec<u32>,
    /// The load generator's CPUs, one generator thread pinned to each.
    pub load: Vec<u32>,
}

impl Placement {
    /// Places server and load on `cores` (physical cores, each listed by
    /// its logical CPUs); each list comes out sorted. With four or more CPUs over at least two
    /// physical cores, the last quarter of the physical cores (at least
    /// one, with all their SMT siblings) go to the load and the rest to
    /// the server, so a candidate is not charged for the load's work and a
    /// sibling is never shared between the two. Below that there is
    /// nothing to split off without leaving the server a single CPU: both
    /// share every CPU, and [`Placement::shared`] says so.
    pub fn for_cores(cores: &[Vec<u32>]) -> Placement {
        let all: Vec<u32> = cores.iter().flatten().copied().collect();
        if all.len() < 4 || cores.len() < 2 {
            return Placement {
                server: all.clone(),
                load: all,
            };
        }
        let load_cores = (cores.len() / 4).max(1);
        let (server, load) = cores.split_at(cores.len() - load_cores);
        let sorted = |cores: &[Vec<u32>]| {
            let mut cpus: Vec<u32> = cores.iter().flatten().copied().collect();
            cpus.sort_unstable();
            cpus
        };
        Placement {
            server: sorted(server),
            load: sorted(load),
        }
    }

    /// Whether the server and its load run on a CPU in common, so every
    /// figure includes the load's own cost.
    pub fn shared(&self) -> bool {
        self.server.iter().any(|cpu| self.load.contains(cpu))
    }

    /// `SERVER/LOAD` as `--placement` takes it, e.g. `0-5/6-7`.
    pub fn to_arg(&self) -> String {
        format!(
            "{}/{}",
            cpulist::format(&self.server),
            cpulist::format(&self.load)
        )
    }
}

/// One plan to measure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Short name: the server's name in the records, the table and
    /// `--candidates`.
    pub name: String,
    /// What the plan tries, in a sentence.
    pub description: String,
    /// The settings written to its config file; the server's defaults
    /// fill every other key.
    pub config: ServeConfig,
    /// Where it and its load run.
    pub placement: Placement,
}

/// What decides the candidates besides the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// What the sweep optimizes: batched deliveries only matter to a
    /// fan-out load.
    pub target: Target,
    /// Whether this process may set up an SQPOLL ring (found by probing):
    /// without it a candidate asking for one could not start.
    pub sqpoll: bool,
}

/// The name of the candidate `shardcast-tune plan` proposes.
pub const PLAN: &str = "plan";

/// The connections the `plan` candidate is planned for: `plan`'s own
/// default, so the candidate is what `shardcast-tune plan` prints.
pub const PLAN_CONNECTIONS: u64 = 100_000;

/// Why the candidates for a host could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CandidatesError {
    /// The host could not be read.
    #[error("reading the host: {0}")]
    Inspect(#[from] InspectError),
    /// `plan` has no plan for the server's CPUs.
    #[error("planning the `plan` candidate: {0}")]
    Plan(#[from] PlanError),
}

/// The candidates for `host`: [`generate`]'s, SQPOLL among them when the
/// io_uring probe found it permitted (not probed, as under a captured
/// tree without `io_uring.json`, counts as not permitted), and `plan`
/// second ([`planned`]), so that `--max-candidates 2` measures the plan
/// against the defaults.
pub fn for_host(host: &Host, target: Target) -> Result<Vec<Candidate>, CandidatesError> {
    let report = crate::inspect(host, PLAN_CONNECTIONS)?;
    let sqpoll = report.io_uring.has("sqpoll") == Some(true);
    let mut candidates = generate(&report.topology, Options { target, sqpoll });
    let plan = planned(&report, target, &candidates[0].placement)?;
    candidates.insert(1, plan);
    Ok(candidates)
}

/// `plan`: the `shardcast serve` settings `shardcast-tune plan --target
/// TARGET` proposes, planned for the server's CPUs of `placement` (the
/// host's affinity narrowed to them, so shards stay off the load's
/// CPUs), for [`PLAN_CONNECTIONS`] connections.
pub fn planned(
    report: &Report,
    target: Target,
    placement: &Placement,
) -> Result<Candidate, PlanError> {
    let mut narrowed = report.clone();
    narrowed.topology.allowed = Some(Allowed {
        cpus: placement.server.clone(),
        source: "the sweep's server CPUs".into(),
    });
    let plan = plan::plan(
        &narrowed,
        &PlanOptions {
            connections: PLAN_CONNECTIONS,
            target,
            shards: None,
            use_isolated: false,
            listen: Vec::new(),
        },
    )?;
    Ok(Candidate {
        name: PLAN.into(),
        description: format!(
            "what `shardcast-tune plan --target {target}` proposes for the server's CPUs ({})",
            cpulist::format(&placement.server)
        ),
        config: plan.serve,
        placement: placement.clone(),
    })
}

/// The physical cores this process may use, each as its allowed logical
/// CPUs (siblings outside the affinity mask or cpuset dropped), in the
/// kernel's order (first threads rising, so package by package).
pub fn usable_cores(topology: &Topology) -> Vec<Vec<u32>> {
    let allowed = |cpu: &u32| {
        topology
            .allowed
            .as_ref()
            .is_none_or(|allowed| allowed.cpus.contains(cpu))
            && topology
                .cpuset
                .as_ref()
                .is_none_or(|cpuset| cpuset.contains(cpu))
    };
    topology
        .physical_cores
        .iter()
        .map(|siblings| siblings.iter().copied().filter(allowed).collect::<Vec<_>>())
        .filter(|siblings| !siblings.is_empty())
        .collect()
}

/// Every candidate for this host, `default` first, then in the order
/// `--max-candidates` keeps them:
///
/// 1. `shards-N`: N shards pinned one per physical core (first threads),
///    N = 1, 2, 4, ... and every server core; a count that is what
///    `default` does (one shard per server CPU, pinned) is left out.
/// 2. `shards-N-unpinned`: a shard per physical core, not pinned, so the
///    scheduler moves them over the server's CPUs.
/// 3. `shards-N-siblings` (hosts with SMT): as many shards as physical
///    cores, pinned in pairs to the two threads of half as many cores:
///    against `shards-N` it shows what a sibling is worth against a core.
/// 4. With SQPOLL permitted: `sqpoll`, a shard per physical core with a
///    polling kernel thread per ring (on the shards' SMT siblings when
///    there are any, else wherever the scheduler puts them); and
///    `shards-H-sqpoll-apart`, half as many shards with their polling
///    threads pinned to the other half of the cores: SQPOLL pays only
///    when the pollers have cores of their own, and this is the plan
///    that gives them some.
/// 5. `rx-64x4KiB` and `rx-64x32KiB`: the defaults with 64 receive
///    buffers per shard, small and large, against the default's shape.
/// 6. `batch` (targets with a fan-out): the defaults with each
///    connection's deliveries of one loop turn sent as one envelope.
pub fn generate(topology: &Topology, options: Options) -> Vec<Candidate> {
    let cores = usable_cores(topology);
    let placement = Placement::for_cores(&cores);
    let server_cores: Vec<Vec<u32>> = cores
        .iter()
        .filter(|siblings| siblings.iter().all(|cpu| placement.server.contains(cpu)))
        .cloned()
        .collect();
    let firsts: Vec<u32> = server_cores.iter().map(|siblings| siblings[0]).collect();
    let count = firsts.len();
    let mut candidates = vec![Candidate {
        name: DEFAULT.into(),
        description: format!(
            "the server's defaults: one shard per CPU it may use ({}), pinned",
            cpulist::format(&placement.server)
        ),
        config: ServeConfig::default(),
        placement: placement.clone(),
    }];
    let mut push = |name: String, description: String, config: ServeConfig| {
        candidates.push(Candidate {
            name,
            description,
            config,
            placement: placement.clone(),
        });
    };
    for shards in shard_counts(count) {
        let pinned = &firsts[..shards];
        if pinned == placement.server.as_slice() {
            continue;
        }
        push(
            format!("shards-{shards}"),
            format!(
                "{shards} {} pinned, one per physical core ({})",
                plural(shards, "shard"),
                cpulist::format(pinned)
            ),
            ServeConfig {
                shards: Some(shards),
                cores: Some(pinned.to_vec()),
                pin_cores: Some(true),
                ..ServeConfig::default()
            },
        );
    }
    push(
        format!("shards-{count}-unpinned"),
        format!(
            "{count} {}, not pinned: the scheduler moves them over {}",
            plural(count, "shard"),
            cpulist::format(&placement.server)
        ),
        ServeConfig {
            shards: Some(count),
            pin_cores: Some(false),
            ..ServeConfig::default()
        },
    );
    if topology.threads_per_core > 1 && count >= 2 {
        let paired: Vec<u32> = server_cores.iter().flatten().copied().take(count).collect();
        if paired.len() == count && paired != firsts {
            push(
                format!("shards-{count}-siblings"),
                format!(
                    "{count} shards pinned to SMT siblings, two per physical core ({})",
                    cpulist::format(&paired)
                ),
                ServeConfig {
                    shards: Some(count),
                    cores: Some(paired),
                    pin_cores: Some(true),
                    ..ServeConfig::default()
                },
            );
        }
    }
    if options.sqpoll {
        let siblings: Option<Vec<u32>> = (topology.threads_per_core > 1)
            .then(|| {
                server_cores
                    .iter()
                    .map(|cpus| cpus.get(1).copied())
                    .collect()
            })
            .flatten();
        push(
            "sqpoll".into(),
            format!(
                "{count} {} pinned one per physical core ({}), each ring polled by a kernel thread ({})",
                plural(count, "shard"),
                cpulist::format(&firsts),
                siblings.as_deref().map_or_else(
                    || "unpinned".to_owned(),
                    |cpus| format!("on the siblings {}", cpulist::format(cpus))
                )
            ),
            ServeConfig {
                shards: Some(count),
                cores: Some(firsts.clone()),
                pin_cores: Some(true),
                sqpoll: Some(true),
                sqpoll_cores: siblings,
                ..ServeConfig::default()
            },
        );
        let half = count / 2;
        if half >= 1 {
            let (shards, pollers) = (&firsts[..half], &firsts[half..2 * half]);
            push(
                format!("shards-{half}-sqpoll-apart"),
                format!(
                    "{half} {} pinned to {}, each ring polled by a kernel thread, the {} pinned to {}",
                    plural(half, "shard"),
                    cpulist::format(shards),
                    plural(half, "thread"),
                    cpulist::format(pollers)
                ),
                ServeConfig {
                    shards: Some(half),
                    cores: Some(shards.to_vec()),
                    pin_cores: Some(true),
                    sqpoll: Some(true),
                    sqpoll_cores: Some(pollers.to_vec()),
                    ..ServeConfig::default()
                },
            );
        }
    }
    for (buffers, size, kib) in [(64u16, 4096u32, 4), (64, 32768, 32)] {
        push(
            format!("rx-{buffers}x{kib}KiB"),
            format!("the defaults, with {buffers} receive buffers of {kib} KiB per shard"),
            ServeConfig {
                receive_buffers: Some(buffers),
                receive_buffer_size: Some(size),
                ..ServeConfig::default()
            },
        );
    }
    if target::has_fanout(options.target) {
        push(
            "batch".into(),
            "the defaults, with each connection's deliveries of a loop turn batched into one envelope"
                .into(),
            ServeConfig {
                batch_deliveries: Some(true),
                ..ServeConfig::default()
            },
        );
    }
    candidates
}

/// 1, 2, 4, ... below `cores`, then `cores` itself.
fn shard_counts(cores: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|&n| n < cores)
        .collect();
    if cores > 0 {
        counts.push(cores);
    }
    counts
}

fn plural(count: usize, word: &str) -> String {
    if count == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// A `--candidates` name that is not among the host's candidates.
#[derive(Debug, thiserror::Error)]
#[error("no candidate named {name:?} on this host; the candidates are: {known}")]
pub struct UnknownCandidate {
    /// The name asked for.
    pub name: String,
    /// The names there are, comma-separated.
    pub known: String,
}

/// Keeps `default` and the candidates named in `names` (all when empty),
/// in generation order, then the first `max` of them (`default` counts as
/// one; at least `default` stays).
pub fn select(
    candidates: Vec<Candidate>,
    names: &[String],
    max: Option<usize>,
) -> Result<Vec<Candidate>, UnknownCandidate> {
    if let Some(name) = names
        .iter()
        .find(|name| !candidates.iter().any(|c| &c.name == *name))
    {
        return Err(UnknownCandidate {
            name: name.clone(),
            known: candidates
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut chosen: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| c.name == DEFAULT || names.is_empty() || names.contains(&c.name))
        .collect();
    chosen.truncate(max.unwrap_or(usize::MAX).max(1));
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_hosts_share_every_cpu_and_larger_ones_give_the_load_a_quarter() {
        let two = Placement::for_cores(&[vec![0], vec![1]]);
        assert_eq!(
            (two.server.clone(), two.load.clone()),
            (vec![0, 1], vec![0, 1])
        );
        assert!(two.shared());
        let smt = Placement::for_cores(&[vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]]);
        assert_eq!(smt.server, [0, 1, 2, 4, 5, 6]);
        assert_eq!(smt.load, [3, 7]);
        assert!(!smt.shared());
        assert_eq!(smt.to_arg(), "0-2,4-6/3,7");
        let eight: Vec<Vec<u32>> = (0..8).map(|cpu| vec![cpu]).collect();
        assert_eq!(Placement::for_cores(&eight).load, [6, 7]);
    }

    #[test]
    fn shard_counts_double_up_to_the_core_count() {
        assert_eq!(shard_counts(1), [1]);
        assert_eq!(shard_counts(2), [1, 2]);
        assert_eq!(shard_counts(12), [1, 2, 4, 8, 12]);
        assert_eq!(shard_counts(16), [1, 2, 4, 8, 16]);
    }

    fn named(names: &[&str]) -> Vec<Candidate> {
        names
            .iter()
            .map(|name| Candidate {
                name: (*name).into(),
                description: String::new(),
                config: ServeConfig::default(),
                placement: Placement::for_cores(&[vec![0]]),
            })
            .collect()
    }

    fn names(candidates: &[Candidate]) -> Vec<&str> {
        candidates.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn selection_keeps_the_default_and_the_order() {
        let all = || named(&["default", "a", "b", "c"]);
        assert_eq!(
            names(&select(all(), &[], Some(2)).unwrap()),
            ["default", "a"]
        );
        assert_eq!(
            names(&select(all(), &["c".into(), "a".into()], None).unwrap()),
            ["default", "a", "c"]
        );
        assert_eq!(names(&select(all(), &[], Some(0)).unwrap()), ["default"]);
        let error = select(all(), &["z".into()], None).unwrap_err();
        assert_eq!(error.known, "default, a, b, c");
    }
}
