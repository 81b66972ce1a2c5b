//! Which CPUs run shards, and which are left spare.
//!
//! One shard per physical core, on its lowest-numbered usable thread:
//! an SMT sibling shares the core's L1/L2 and execution ports, so two
//! shards on one core each get a fraction of it and double the inboxes a
//! broadcast crosses. Siblings become shards only when `--shards` asks for
//! more shards than physical cores; otherwise they stay spare, where
//! SQPOLL threads may run.
//!
//! Cores are taken node by node, the node that holds the NIC's IRQs first
//! (node 0 when no IRQ is seen): a shard there receives where its packets
//! land, and shards on one node share its memory, so a broadcast crosses
//! nodes only once the node is full.
//!
//! Cores that take the NIC's IRQs are kept out when they are few (at most
//! a quarter of the usable cores): then each carries a large share of all
//! softirq work and losing them costs few shards. When IRQs are spread
//! over many cores (one RX queue per core), each core's share is small
//! and keeping them out would cost more shards than it saves.
//!
//! Usable CPUs are the online ones the service may run on: the affinity
//! (`Cpus_allowed_list`) and the cgroup cpuset, minus isolated CPUs
//! (`isolcpus`), which are set aside for other work unless
//! `--use-isolated` says they are for shardcast.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Choice, PlanError};
use crate::cpulist;
use crate::network::Interface;
use crate::topology::Topology;

/// IRQ cores are kept out when at most one in this many usable cores
/// takes NIC IRQs.
pub const IRQ_CORE_SHARE: usize = 4;

/// The CPUs a plan runs shards on, and what is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorePlan {
    /// The CPU of each shard, in shard order (`server.cores`).
    pub shard_cpus: Vec<u32>,
    /// Usable CPUs that run no shard, best first for a polling thread:
    /// siblings of shard cores in shard order, then CPUs of unused cores,
    /// CPUs taking NIC IRQs last.
    pub spare_cpus: Vec<u32>,
    /// The NUMA nodes of the shards, in shard order.
    pub node_order: Vec<u32>,
    /// First CPU of each core kept out because it takes NIC IRQs.
    pub irq_cores_kept_out: Vec<u32>,
}

/// A physical core as the plan sees it.
#[derive(Debug, Clone)]
struct Core {
    /// Its usable threads, lowest first; the first runs a shard.
    cpus: Vec<u32>,
    /// Its NUMA node (0 without NUMA).
    node: u32,
    /// Whether any of its threads takes a NIC IRQ.
    irq: bool,
}

/// The CPUs shards may run on, and what narrowed them.
fn usable_cpus(t: &Topology, use_isolated: bool) -> (BTreeSet<u32>, Vec<String>) {
    let mut why = Vec::new();
    let mut usable: BTreeSet<u32> = t.cpus.iter().map(|c| c.id).collect();
    let isolated: BTreeSet<u32> = t.isolated.iter().copied().collect();
    if let Some(allowed) = &t.allowed {
        // isolcpus=domain takes isolated CPUs out of the default affinity;
        // a unit's CPUAffinity= may still name them.
        let mut allowed: BTreeSet<u32> = allowed.cpus.iter().copied().collect();
        if use_isolated {
            allowed.extend(&isolated);
        }
        if usable.iter().any(|c| !allowed.contains(c)) {
            why.push(format!("affinity {}", cpulist::format(&to_vec(&allowed))));
        }
        usable.retain(|c| allowed.contains(c));
    }
    if let Some(cpuset) = &t.cpuset {
        if usable.iter().any(|c| !cpuset.contains(c)) {
            why.push(format!("cpuset {}", cpulist::format(cpuset)));
        }
        usable.retain(|c| cpuset.contains(c));
    }
    if !use_isolated && usable.iter().any(|c| isolated.contains(c)) {
        why.push(format!("isolated {}", cpulist::format(&t.isolated)));
        usable.retain(|c| !isolated.contains(c));
    }
    (usable, why)
}

fn to_vec(set: &BTreeSet<u32>) -> Vec<u32> {
    set.iter().copied().collect()
}

/// The node holding most of the NIC IRQs' CPUs (the lowest among equals);
/// `None` when no IRQ CPU has a known node.
fn nic_node(t: &Topology, irq_cpus: &BTreeSet<u32>) -> Option<u32> {
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for &cpu in irq_cpus {
        if let Some(node) = t.node_of(cpu) {
            *counts.entry(node).or_default() += 1;
        }
    }
    // Most IRQ CPUs first; among equals the lowest node.
    counts
        .iter()
        .max_by_key(|&(node, count)| (*count, std::cmp::Reverse(*node)))
        .map(|(node, _)| *node)
}

/// Chooses the shard CPUs: `shards` of them, or one per usable physical
/// core (IRQ cores kept out when they are few); and the decisions, with
/// reasons.
pub fn choose(
    t: &Topology,
    network: &[Interface],
    shards: Option<usize>,
    use_isolated: bool,
) -> Result<(CorePlan, Vec<Choice>), PlanError> {
    let (usable, narrowed) = usable_cpus(t, use_isolated);
    let irq_cpus: BTreeSet<u32> = network
        .iter()
        .filter(|i| !i.loopback)
        .flat_map(|i| i.irq_cpus.iter().copied())
        .collect();
    let first_node = nic_node(t, &irq_cpus);
    let mut cores: Vec<Core> = t
        .physical_cores
        .iter()
        .filter_map(|siblings| {
            let cpus: Vec<u32> = siblings
                .iter()
                .copied()
                .filter(|c| usable.contains(c))
                .collect();
            let first = *cpus.first()?;
            Some(Core {
                node: t.node_of(first).unwrap_or(0),
                irq: siblings.iter().any(|c| irq_cpus.contains(c)),
                cpus,
            })
        })
        .collect();
    if cores.is_empty() {
        return Err(PlanError::NoUsableCpus);
    }
    let lead = first_node.unwrap_or_else(|| cores.iter().map(|c| c.node).min().unwrap_or(0));
    cores.sort_by_key(|c| (c.node != lead, c.node, c.cpus[0]));
    let irq_count = cores.iter().filter(|c| c.irq).count();
    let keep_out =
        irq_count > 0 && irq_count < cores.len() && irq_count * IRQ_CORE_SHARE <= cores.len();
    // Cores in the order shards take them: IRQ cores last when kept out.
    let (preferred, last): (Vec<Core>, Vec<Core>) =
        cores.iter().cloned().partition(|c| !(keep_out && c.irq));
    let default_shards = preferred.len();
    let ordered: Vec<Core> = preferred.into_iter().chain(last).collect();
    let wanted = shards.unwrap_or(default_shards);
    if wanted == 0 {
        return Err(PlanError::ZeroShards);
    }
    if wanted > usable.len() {
        return Err(PlanError::TooManyShards {
            wanted,
            usable: usable.len(),
        });
    }
    // Whole cores first; then second threads of the same cores, and so on.
    let mut shard_cpus = Vec::with_capacity(wanted);
    let mut thread = 0;
    while shard_cpus.len() < wanted {
        for core in &ordered {
            if shard_cpus.len() == wanted {
                break;
            }
            if let Some(&cpu) = core.cpus.get(thread) {
                shard_cpus.push(cpu);
            }
        }
        thread += 1;
    }
    let mut node_order: Vec<u32> = Vec::new();
    for &cpu in &shard_cpus {
        let node = t.node_of(cpu).unwrap_or(0);
        if !node_order.contains(&node) {
            node_order.push(node);
        }
    }
    let used = |cpu: &u32| shard_cpus.contains(cpu);
    let (shard_cores, idle_cores): (Vec<&Core>, Vec<&Core>) =
        ordered.iter().partition(|c| used(&c.cpus[0]));
    let mut spare_cpus: Vec<u32> = shard_cores
        .iter()
        .flat_map(|c| c.cpus.iter().copied())
        .filter(|c| !used(c))
        .collect();
    spare_cpus.extend(idle_cores.iter().flat_map(|c| c.cpus.iter().copied()));
    let irq_cores_kept_out: Vec<u32> = if keep_out {
        cores
            .iter()
            .filter(|c| c.irq && !used(&c.cpus[0]))
            .map(|c| c.cpus[0])
            .collect()
    } else {
        Vec::new()
    };

    let mut choices = Vec::new();
    choices.push(Choice::new(
        "usable CPUs",
        cpulist::format(&to_vec(&usable)),
        if narrowed.is_empty() {
            "every online CPU: no affinity, cpuset or isolation narrows them".to_owned()
        } else {
            format!(
                "online CPUs within {}: shards run only where the service may",
                narrowed.join(", ")
            )
        },
    ));
    if !t.isolated.is_empty() {
        choices.push(Choice::new(
            "isolated CPUs",
            cpulist::format(&t.isolated),
            if use_isolated {
                "used (--use-isolated): isolcpus set them aside for shardcast, CPUAffinity= names them"
            } else {
                "left out: isolcpus sets them aside for other work; --use-isolated puts shards there"
            },
        ));
    }
    if t.nodes.len() > 1 {
        let order: Vec<String> = node_order.iter().map(|n| format!("node{n}")).collect();
        choices.push(Choice::new(
            "NUMA order",
            order.join(", "),
            match first_node {
                Some(node) if node_order.first() == Some(&node) => format!(
                    "node{node} first: it takes the NIC's IRQs, so its shards receive where packets land; a node fills before the next, so broadcasts stay on one node"
                ),
                Some(node) => format!(
                    "node{node} takes the NIC's IRQs but has no usable core free of them; a node fills before the next, so broadcasts stay on one node"
                ),
                None => "lowest node first (no NIC IRQs seen); a node fills before the next, so broadcasts stay on one node".to_owned(),
            },
        ));
    }
    let irq_firsts: Vec<u32> = cores.iter().filter(|c| c.irq).map(|c| c.cpus[0]).collect();
    choices.push(if irq_count == 0 {
        Choice::new(
            "NIC IRQ cores",
            "none",
            "no NIC IRQ lands on a usable core (virtual NIC, or IRQs elsewhere)",
        )
    } else if keep_out {
        Choice::new(
            "NIC IRQ cores",
            format!("kept out: {}", cpulist::format(&irq_firsts)),
            format!(
                "{irq_count} of {} usable cores take all NIC interrupts, so softirq work for every connection lands there; a shard on them would lose that time",
                cores.len()
            ),
        )
    } else if irq_count == cores.len() {
        Choice::new(
            "NIC IRQ cores",
            format!("shards: {}", cpulist::format(&irq_firsts)),
            format!(
                "every usable core takes NIC IRQs ({irq_count}): each does its own share of softirq work, and no core is free of them"
            ),
        )
    } else {
        Choice::new(
            "NIC IRQ cores",
            format!("shards: {}", cpulist::format(&irq_firsts)),
            format!(
                "{irq_count} of {} usable cores take NIC IRQs, more than 1 in {IRQ_CORE_SHARE}: keeping them out would cost more shards than their softirq work takes",
                cores.len()
            ),
        )
    });
    if t.threads_per_core > 1 {
        let sibling_shards = wanted.saturating_sub(cores.len());
        choices.push(if sibling_shards > 0 {
            Choice::new(
                "SMT siblings",
                format!("{sibling_shards} shards"),
                format!(
                    "--shards {wanted} exceeds the {} usable physical cores; siblings split a core's caches and ports",
                    cores.len()
                ),
            )
        } else {
            Choice::new(
                "SMT siblings",
                "not shards",
                "a sibling shares its core's L1/L2 and ports: two shards on one core each get part of it; siblings stay spare for SQPOLL",
            )
        });
    }
    choices.push(Choice::new(
        "server.shards",
        wanted.to_string(),
        match shards {
            Some(_) => "--shards".to_owned(),
            None => format!(
                "one per usable physical core{}",
                if irq_cores_kept_out.is_empty() {
                    ""
                } else {
                    " not taking NIC IRQs"
                }
            ),
        },
    ));
    choices.push(Choice::new(
        "server.cores",
        cpulist::format(&shard_cpus),
        "shard i on the i-th CPU, lowest thread of each core, in NUMA order",
    ));
    choices.push(Choice::new(
        "server.pin_cores",
        "true",
        "each shard stays on its core, so its caches stay warm",
    ));
    Ok((
        CorePlan {
            shard_cpus,
            spare_cpus,
            node_order,
            irq_cores_kept_out,
        },
        choices,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::fixture;

    fn cores(name: &str, shards: Option<usize>, use_isolated: bool) -> CorePlan {
        let report = fixture(name, 100_000);
        choose(&report.topology, &report.network, shards, use_isolated)
            .unwrap()
            .0
    }

    fn range(lo: u32, hi: u32) -> Vec<u32> {
        (lo..=hi).collect()
    }

    #[test]
    fn epyc_one_shard_per_physical_core_irq_cores_included() {
        let plan = cores("epyc-16c", None, false);
        // Queue N's IRQ is on CPU N for every core: spread, so kept in.
        assert_eq!(plan.shard_cpus, range(0, 15));
        assert!(plan.irq_cores_kept_out.is_empty());
        assert_eq!(plan.spare_cpus, range(16, 31));
        assert_eq!(plan.node_order, [0]);
    }

    #[test]
    fn xeon_leaves_isolated_cpus_and_the_two_irq_cores_out() {
        let plan = cores("xeon-2s", None, false);
        // Usable: 0-1,12-25,36-47 → cores 0,1 (node 0) and 12-23 (node 1);
        // 0 and 1 take NIC IRQs: 2 of 14 cores, kept out.
        assert_eq!(plan.shard_cpus, range(12, 23));
        assert_eq!(plan.irq_cores_kept_out, [0, 1]);
        assert_eq!(plan.node_order, [1]);
        // Siblings of the shard cores first, then the IRQ cores' CPUs.
        let mut spare = range(36, 47);
        spare.extend([0, 24, 1, 25]);
        assert_eq!(plan.spare_cpus, spare);
    }

    #[test]
    fn xeon_with_isolated_cpus_fills_the_nic_node_first() {
        let plan = cores("xeon-2s", None, true);
        // 12 of 24 cores take IRQs: spread, kept in; node 0 (the NIC's) first.
        let mut all = range(0, 11);
        all.extend(range(12, 23));
        assert_eq!(plan.shard_cpus, all);
        assert!(plan.irq_cores_kept_out.is_empty());
        assert_eq!(plan.node_order, [0, 1]);
        let plan = cores("xeon-2s", Some(8), true);
        assert_eq!(plan.shard_cpus, range(0, 7));
    }

    #[test]
    fn shards_override_uses_irq_cores_then_siblings() {
        // 13 shards on xeon: 12 IRQ-free cores, then IRQ core 0.
        let plan = cores("xeon-2s", Some(13), false);
        let mut want = range(12, 23);
        want.push(0);
        assert_eq!(plan.shard_cpus, want);
        assert_eq!(plan.irq_cores_kept_out, [1]);
        // 18 shards on epyc: 16 cores, then siblings of the first two.
        let plan = cores("epyc-16c", Some(18), false);
        let mut want = range(0, 15);
        want.extend([16, 17]);
        assert_eq!(plan.shard_cpus, want);
        assert_eq!(plan.spare_cpus, range(18, 31));
    }

    #[test]
    fn the_node_that_takes_the_nic_irqs_fills_first() {
        let mut report = fixture("xeon-2s", 100_000);
        // Move the NIC's IRQs to node 1's first four cores.
        let nic = report
            .network
            .iter_mut()
            .find(|i| i.name == "ens1f0")
            .unwrap();
        nic.irq_cpus = vec![12, 13, 14, 15];
        let (plan, _) = choose(&report.topology, &report.network, Some(14), true).unwrap();
        // 4 IRQ cores of 24 are kept out until the other 20 are taken:
        // node 1's other eight first, then node 0's twelve.
        let mut want: Vec<u32> = range(16, 23);
        want.extend(range(0, 5));
        assert_eq!(plan.shard_cpus, want);
        assert_eq!(plan.node_order, [1, 0]);
        assert_eq!(plan.irq_cores_kept_out, [12, 13, 14, 15]);
    }

    #[test]
    fn this_machine_uses_both_vcpus() {
        let plan = cores("this-machine", None, false);
        assert_eq!(plan.shard_cpus, [0, 1]);
        assert!(plan.spare_cpus.is_empty());
        assert!(plan.irq_cores_kept_out.is_empty());
    }

    #[test]
    fn impossible_shard_counts_are_errors() {
        let report = fixture("this-machine", 1000);
        let t = &report.topology;
        assert_eq!(
            choose(t, &report.network, Some(0), false),
            Err(PlanError::ZeroShards)
        );
        assert_eq!(
            choose(t, &report.network, Some(3), false),
            Err(PlanError::TooManyShards {
                wanted: 3,
                usable: 2
            })
        );
        let mut t = t.clone();
        t.isolated = vec![0, 1];
        assert_eq!(
            choose(&t, &report.network, None, false),
            Err(PlanError::NoUsableCpus)
        );
    }
}
