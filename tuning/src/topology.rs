//! CPU topology: packages, NUMA nodes, physical cores and SMT siblings,
//! shared-L3 groups, the CPUs this process may use, isolated CPUs and
//! frequency governors.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::InspectError;
use crate::cpulist;
use crate::host::Host;

const CPU_DIR: &str = "/sys/devices/system/cpu";

/// One logical CPU as sysfs describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    /// Logical CPU number.
    pub id: u32,
    /// `physical_package_id`: the socket.
    pub package: u32,
    /// `core_id` (unique within a package only).
    pub core: u32,
    /// NUMA node, when `/sys/devices/system/node` lists one.
    pub node: Option<u32>,
    /// `thread_siblings_list`: the logical CPUs sharing this physical core.
    pub siblings: Vec<u32>,
    /// `cache/index3/shared_cpu_list`: the CPUs sharing this CPU's L3.
    pub l3: Option<Vec<u32>>,
    /// `cpufreq/scaling_governor`, absent without cpufreq (common in VMs).
    pub governor: Option<String>,
}

/// A NUMA node and its CPUs.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Node number.
    pub id: u32,
    /// CPUs in the node.
    pub cpus: Vec<u32>,
}

/// Where the allowed-CPU set came from.
#[derive(Debug, Clone, Serialize)]
pub struct Allowed {
    /// CPUs this process may run on.
    pub cpus: Vec<u32>,
    /// `sched_getaffinity` or the captured `/proc/self/status`.
    pub source: String,
}

/// The host's CPU topology.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    /// Online logical CPUs.
    pub cpus: Vec<Cpu>,
    /// Number of distinct packages (sockets).
    pub packages: usize,
    /// NUMA nodes (empty when the kernel has no NUMA support).
    pub nodes: Vec<Node>,
    /// Physical cores: distinct sibling sets, each listed by its CPUs.
    pub physical_cores: Vec<Vec<u32>>,
    /// Largest number of hardware threads on one physical core.
    pub threads_per_core: usize,
    /// Distinct shared-L3 groups.
    pub l3_groups: Vec<Vec<u32>>,
    /// CPUs this process may run on, if known.
    pub allowed: Option<Allowed>,
    /// The cgroup cpuset's effective CPUs, if a cpuset is mounted.
    pub cpuset: Option<Vec<u32>>,
    /// `/sys/devices/system/cpu/isolated`.
    pub isolated: Vec<u32>,
    /// `/sys/devices/system/cpu/nohz_full`.
    pub nohz_full: Vec<u32>,
    /// `isolcpus=` and `nohz_full=` arguments of `/proc/cmdline`, verbatim.
    pub cmdline: Vec<String>,
    /// Governor name to the CPUs using it.
    pub governors: BTreeMap<String, Vec<u32>>,
}

impl Topology {
    /// Reads the topology through `host`.
    pub fn read(host: &Host) -> Result<Self, InspectError> {
        let online = match host.read(&format!("{CPU_DIR}/online"))? {
            Some(text) => cpulist::parse(&text)?,
            None => return Err(InspectError::Missing(format!("{CPU_DIR}/online"))),
        };
        let nodes = read_nodes(host)?;
        let mut cpus = Vec::with_capacity(online.len());
        for &id in &online {
            let dir = format!("{CPU_DIR}/cpu{id}");
            let number = |name: &str| -> Result<u32, InspectError> {
                let path = format!("{dir}/topology/{name}");
                let text = host
                    .read_trimmed(&path)?
                    .ok_or_else(|| InspectError::Missing(path.clone()))?;
                text.parse().map_err(|_| InspectError::Parse { path, text })
            };
            let siblings_path = format!("{dir}/topology/thread_siblings_list");
            let siblings = match host.read(&siblings_path)? {
                Some(text) => cpulist::parse(&text)?,
                None => vec![id],
            };
            let l3 = host
                .read(&format!("{dir}/cache/index3/shared_cpu_list"))?
                .map(|t| cpulist::parse(&t))
                .transpose()?;
            cpus.push(Cpu {
                id,
                package: number("physical_package_id")?,
                core: number("core_id")?,
                node: nodes.iter().find(|n| n.cpus.contains(&id)).map(|n| n.id),
                siblings,
                l3,
                governor: host.read_trimmed(&format!("{dir}/cpufreq/scaling_governor"))?,
            });
        }
        let packages = cpus
            .iter()
            .map(|c| c.package)
            .collect::<BTreeSet<_>>()
            .len();
        let physical_cores: Vec<Vec<u32>> = cpus
            .iter()
            .map(|c| c.siblings.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let threads_per_core = physical_cores.iter().map(Vec::len).max().unwrap_or(0);
        let l3_groups: Vec<Vec<u32>> = cpus
            .iter()
            .filter_map(|c| c.l3.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut governors: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for cpu in &cpus {
            if let Some(g) = &cpu.governor {
                governors.entry(g.clone()).or_default().push(cpu.id);
            }
        }
        let optional_list = |path: &str| -> Result<Vec<u32>, InspectError> {
            Ok(host
                .read(path)?
                .map(|t| cpulist::parse(&t))
                .transpose()?
                .unwrap_or_default())
        };
        let cmdline = host
            .read("/proc/cmdline")?
            .unwrap_or_default()
            .split_whitespace()
            .filter(|a| a.starts_with("isolcpus=") || a.starts_with("nohz_full="))
            .map(str::to_owned)
            .collect();
        Ok(Self {
            packages,
            nodes,
            threads_per_core,
            physical_cores,
            l3_groups,
            allowed: read_allowed(host)?,
            cpuset: read_cpuset(host)?,
            isolated: optional_list(&format!("{CPU_DIR}/isolated"))?,
            nohz_full: optional_list(&format!("{CPU_DIR}/nohz_full"))?,
            cmdline,
            governors,
            cpus,
        })
    }

    /// The NUMA node of a CPU, if known.
    pub fn node_of(&self, cpu: u32) -> Option<u32> {
        self.cpus.iter().find(|c| c.id == cpu).and_then(|c| c.node)
    }
}

fn read_nodes(host: &Host) -> Result<Vec<Node>, InspectError> {
    let mut nodes = Vec::new();
    for name in host.list("/sys/devices/system/node")? {
        let Some(id) = name.strip_prefix("node").and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(text) = host.read(&format!("/sys/devices/system/node/{name}/cpulist"))? {
            nodes.push(Node {
                id,
                cpus: cpulist::parse(&text)?,
            });
        }
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

fn read_allowed(host: &Host) -> Result<Option<Allowed>, InspectError> {
    if host.is_live() {
        if let Some(cpus) = live_affinity() {
            return Ok(Some(Allowed {
                cpus,
                source: "sched_getaffinity".into(),
            }));
        }
    }
    let Some(status) = host.read("/proc/self/status")? else {
        return Ok(None);
    };
    match allowed_list(&status) {
        Some(list) => Ok(Some(Allowed {
            cpus: cpulist::parse(list)?,
            source: "/proc/self/status".into(),
        })),
        None => Ok(None),
    }
}

fn live_affinity() -> Option<Vec<u32>> {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t and the size passed is its size.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    let max = u32::try_from(libc::CPU_SETSIZE).unwrap_or(1024);
    // SAFETY: `set` was filled by sched_getaffinity and `cpu` < CPU_SETSIZE.
    Some(
        (0..max)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu as usize, &set) })
            .collect(),
    )
}

/// The cpuset files that may apply to this process, most specific first:
/// its own cgroup's (v2 from the `0::` line, v1 from the `cpuset` line of
/// `/proc/self/cgroup`), then the roots of both hierarchies.
fn cpuset_paths(cgroup: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for line in cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            paths.push(format!("/sys/fs/cgroup{path}/cpuset.cpus.effective"));
        } else if controllers.split(',').any(|c| c == "cpuset") {
            paths.push(format!("/sys/fs/cgroup/cpuset{path}/cpuset.effective_cpus"));
        }
    }
    for root in [
        "/sys/fs/cgroup/cpuset.cpus.effective",
        "/sys/fs/cgroup/cpuset/cpuset.effective_cpus",
    ] {
        if !paths.iter().any(|p| p == root) {
            paths.push(root.to_owned());
        }
    }
    paths
}

fn read_cpuset(host: &Host) -> Result<Option<Vec<u32>>, InspectError> {
    let cgroup = host.read("/proc/self/cgroup")?.unwrap_or_default();
    for path in cpuset_paths(&cgroup) {
        if let Some(text) = host.read(&path)? {
            return Ok(Some(cpulist::parse(&text)?));
        }
    }
    Ok(None)
}

/// The `Cpus_allowed_list:` value of a `/proc/<pid>/status`.
fn allowed_list(status: &str) -> Option<&str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuset_paths_follow_the_cgroup() {
        assert_eq!(
            cpuset_paths("0::/system.slice/shardcast.service\n"),
            [
                "/sys/fs/cgroup/system.slice/shardcast.service/cpuset.cpus.effective",
                "/sys/fs/cgroup/cpuset.cpus.effective",
                "/sys/fs/cgroup/cpuset/cpuset.effective_cpus",
            ]
        );
        assert_eq!(
            cpuset_paths("4:cpuset:/batch\n1:name=systemd:/user.slice\n"),
            [
                "/sys/fs/cgroup/cpuset/batch/cpuset.effective_cpus",
                "/sys/fs/cgroup/cpuset.cpus.effective",
                "/sys/fs/cgroup/cpuset/cpuset.effective_cpus",
            ]
        );
        assert_eq!(cpuset_paths("garbage").len(), 2);
    }

    #[test]
    fn reads_the_allowed_list() {
        let status =
            "Name:\tcat\nCpus_allowed:\t0000fff0,03fff003\nCpus_allowed_list:\t0-1,12-25,36-47\n";
        assert_eq!(allowed_list(status), Some("0-1,12-25,36-47"));
        assert_eq!(allowed_list("Name:\tcat\n"), None);
    }
}
