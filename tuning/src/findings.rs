//! Findings: each fact judged for a server holding N connections, with a
//! severity, the reason it matters and the concrete fix.

use serde::Serialize;

use crate::cpulist;
use crate::limits::Limits;
use crate::network::Interface;
use crate::topology::Topology;
use crate::uring::UringReport;

/// File descriptors kept beyond one per connection: listeners, rings,
/// eventfds, log files, the admin endpoint.
pub const FD_MARGIN: u64 = 4096;

/// Below this, a burst of reconnecting clients overflows the accept queue.
pub const MIN_BACKLOG: u64 = 4096;

/// Smallest socket memory a busy connection holds: one page each way.
pub const MIN_SOCKET_BYTES: u64 = 8192;

/// The page size `tcp_mem` is counted in.
const PAGE: u64 = 4096;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fine for the requested connection count.
    Ok,
    /// Worth knowing; no action needed for correctness.
    Info,
    /// Will cost throughput or latency, or fail under load spikes.
    Warn,
    /// The server cannot hold the requested connections, or cannot start.
    Error,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

/// One judged fact.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was looked at: `RLIMIT_NOFILE`, `net.core.somaxconn`, `eth0`...
    pub subject: String,
    /// How much it matters.
    pub severity: Severity,
    /// The value seen.
    pub observed: String,
    /// Why it matters for a server with N connections.
    pub why: String,
    /// The command or config line that fixes it, when there is something to fix.
    pub fix: Option<String>,
}

fn finding(
    subject: &str,
    severity: Severity,
    observed: impl Into<String>,
    why: impl Into<String>,
    fix: Option<String>,
) -> Finding {
    Finding {
        subject: subject.to_owned(),
        severity,
        observed: observed.into(),
        why: why.into(),
        fix,
    }
}

fn show(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |v| v.to_string())
}

/// Judges everything inspect read, for `connections` concurrent connections.
pub fn evaluate(
    topology: &Topology,
    network: &[Interface],
    uring: &UringReport,
    limits: &Limits,
    connections: u64,
) -> Vec<Finding> {
    let mut out = Vec::new();
    topology_findings(topology, &mut out);
    for iface in network {
        out.push(interface_finding(iface, topology));
    }
    out.push(uring_setup_finding(uring));
    out.extend(uring_feature_findings(uring));
    limit_findings(limits, connections, &mut out);
    out
}

fn topology_findings(t: &Topology, out: &mut Vec<Finding>) {
    let online = t.cpus.len();
    out.push(finding(
        "topology",
        Severity::Info,
        format!(
            "{} package(s), {} NUMA node(s), {} physical cores, {} thread(s) per core, {} L3 group(s), {online} CPUs",
            t.packages,
            t.nodes.len(),
            t.physical_cores.len(),
            t.threads_per_core,
            t.l3_groups.len()
        ),
        "one shard per physical core; SMT siblings share a core's caches and ports, and crossing NUMA nodes or L3 groups costs on every cross-shard broadcast",
        None,
    ));
    if let Some(allowed) = &t.allowed {
        let severity = if allowed.cpus.len() < online {
            Severity::Info
        } else {
            Severity::Ok
        };
        out.push(finding(
            "allowed CPUs",
            severity,
            format!("{} of {online} ({})", cpulist::format(&allowed.cpus), allowed.source),
            "shards can only be pinned to CPUs this process may run on; a cgroup cpuset or taskset narrows them",
            (severity != Severity::Ok).then(|| "systemd: CPUAffinity= in the unit, or AllowedCPUs= on its slice".to_owned()),
        ));
    }
    if !t.isolated.is_empty() || !t.nohz_full.is_empty() {
        out.push(finding(
            "isolated CPUs",
            Severity::Info,
            format!("isolated {}, nohz_full {}", cpulist::format(&t.isolated), cpulist::format(&t.nohz_full)),
            "isolated CPUs get no scheduler load balancing: pin shards there explicitly or they stay idle",
            None,
        ));
    } else {
        out.push(finding(
            "isolated CPUs",
            Severity::Ok,
            "none",
            "the scheduler may put other tasks on shard cores; on a dedicated host, isolcpus=managed_irq,domain,<cpus> nohz_full=<cpus> on the kernel cmdline keeps them for shards",
            None,
        ));
    }
    if t.governors.is_empty() {
        out.push(finding(
            "cpu governor",
            Severity::Info,
            "no cpufreq (VM or firmware-managed)",
            "frequency is not controlled by this kernel; nothing to set",
            None,
        ));
    } else {
        let slow: Vec<u32> = t
            .governors
            .iter()
            .filter(|(g, _)| g.as_str() != "performance")
            .flat_map(|(_, c)| c.iter().copied())
            .collect();
        let observed = t
            .governors
            .iter()
            .map(|(g, c)| format!("{g} on {}", cpulist::format(c)))
            .collect::<Vec<_>>()
            .join("; ");
        let severity = if slow.is_empty() {
            Severity::Ok
        } else {
            Severity::Warn
        };
        out.push(finding(
            "cpu governor",
            severity,
            observed,
            "a busy-polling shard wakes from idle on each burst; a power-saving governor adds ramp-up latency to p99",
            (severity != Severity::Ok).then(|| "cpupower frequency-set -g performance".to_owned()),
        ));
    }
}

fn interface_finding(iface: &Interface, t: &Topology) -> Finding {
    let queues = format!("{} rx / {} tx queues", iface.rx_queues, iface.tx_queues);
    if iface.loopback {
        return finding(
            &iface.name,
            Severity::Info,
            format!("loopback, {queues}, no IRQs"),
            "loopback traffic is processed on the sending CPU; there is nothing to steer",
            None,
        );
    }
    if iface.irqs.is_empty() {
        return finding(
            &iface.name,
            Severity::Info,
            format!("{queues}, no IRQs found (virtual interface)"),
            "a virtual interface's packets are processed where its lower device's IRQs land",
            None,
        );
    }
    let steering = format!(
        "IRQs on CPUs {}, RPS {}, XPS {}",
        cpulist::format(&iface.irq_cpus),
        if iface.rps_cpus.is_empty() {
            "off".to_owned()
        } else {
            cpulist::format(&iface.rps_cpus)
        },
        if iface.xps_cpus.is_empty() {
            "off".to_owned()
        } else {
            cpulist::format(&iface.xps_cpus)
        },
    );
    let irq_nodes: std::collections::BTreeSet<u32> = iface
        .irq_cpus
        .iter()
        .filter_map(|&c| t.node_of(c))
        .collect();
    if t.nodes.len() > 1 && irq_nodes.len() == 1 {
        let node = irq_nodes.iter().next().copied().unwrap_or_default();
        return finding(
            &iface.name,
            Severity::Info,
            format!("{queues}, {steering}, all on NUMA node {node}"),
            format!(
                "shards on node {node} receive where the packets land; shards elsewhere pay a cross-node hop per packet, so fill node {node} first"
            ),
            None,
        );
    }
    if iface.rx_queues < t.physical_cores.len() && iface.rps_cpus.is_empty() {
        return finding(
            &iface.name,
            Severity::Info,
            format!("{queues}, {steering}"),
            format!(
                "{} RX queue(s) for {} cores: softirq work for every connection lands on the IRQ CPUs only",
                iface.rx_queues,
                t.physical_cores.len()
            ),
            Some(rx_spread_fix(&iface.name, t)),
        );
    }
    finding(
        &iface.name,
        Severity::Ok,
        format!("{queues}, {steering}"),
        "receive work is spread over the cores",
        None,
    )
}

/// More queues if the NIC has them, else RPS over the CPUs shards may use.
fn rx_spread_fix(name: &str, t: &Topology) -> String {
    let cores = t.physical_cores.len();
    let cpus: Vec<u32> = match &t.allowed {
        Some(allowed) => allowed.cpus.clone(),
        None => t.cpus.iter().map(|c| c.id).collect(),
    };
    let mask = cpulist::format_mask(&cpus);
    format!(
        "ethtool -L {name} combined {cores} (if the NIC has that many queues), else RPS: \
         for q in /sys/class/net/{name}/queues/rx-*; do echo {mask} > $q/rps_cpus; done"
    )
}

fn uring_setup_finding(u: &UringReport) -> Finding {
    let sysctl = u
        .disabled_sysctl
        .map_or_else(|| "absent".to_owned(), |v| v.to_string());
    let fix = Some("sysctl -w kernel.io_uring_disabled=0 (sysctl.d: kernel.io_uring_disabled = 0); container: allow io_uring_* in the seccomp profile".to_owned());
    match (u.setup, u.disabled_sysctl) {
        (_, Some(2)) => finding(
            "io_uring",
            Severity::Error,
            "kernel.io_uring_disabled = 2",
            "the engine's I/O runs on io_uring; with it disabled the server cannot start",
            fix,
        ),
        (Some(false), _) => finding(
            "io_uring",
            Severity::Error,
            format!(
                "ring setup failed: {} (io_uring_disabled {sysctl})",
                u.setup_error.as_deref().unwrap_or("unknown")
            ),
            match u.seccomp {
                Some(2) => {
                    "the engine's I/O runs on io_uring; this process runs under a seccomp filter (a container runtime's?), which may refuse io_uring_setup with EPERM"
                }
                _ => {
                    "the engine's I/O runs on io_uring; EPERM means seccomp or the sysctl, ENOSYS a kernel without it"
                }
            },
            fix,
        ),
        (None, _) => finding(
            "io_uring",
            Severity::Info,
            format!("{} (io_uring_disabled {sysctl})", u.source),
            "run inspect on the host itself, or capture io_uring.json there with inspect --json",
            None,
        ),
        (Some(true), Some(1)) => finding(
            "io_uring",
            Severity::Warn,
            "ring set up; kernel.io_uring_disabled = 1",
            "only root and members of kernel.io_uring_group may create rings: the service user needs that group",
            fix,
        ),
        (Some(true), _) => finding(
            "io_uring",
            Severity::Ok,
            format!("ring set up ({})", u.source),
            "the engine's I/O path is available",
            None,
        ),
    }
}

fn uring_feature_findings(u: &UringReport) -> Vec<Finding> {
    const WANTED: &[(&str, Severity, &str)] = &[
        (
            "accept_multishot",
            Severity::Warn,
            "one multishot accept serves a connection storm; without it every accept is resubmitted",
        ),
        (
            "recv_multishot",
            Severity::Warn,
            "one multishot receive per connection keeps N connections armed without N resubmissions",
        ),
        (
            "buffer_ring",
            Severity::Warn,
            "provided buffer rings let N idle connections share a pool instead of holding one buffer each",
        ),
        (
            "registered_files",
            Severity::Info,
            "fixed files skip the fd table lookup on each operation",
        ),
        (
            "registered_buffers",
            Severity::Info,
            "fixed buffers skip page pinning per send",
        ),
        (
            "op_send_zc",
            Severity::Info,
            "zero-copy send pays off for large broadcasts",
        ),
        (
            "sqpoll",
            Severity::Info,
            "SQPOLL trades a polling kernel thread per ring for fewer syscalls; without permission the engine submits by syscall",
        ),
    ];
    if u.features.is_empty() {
        return Vec::new();
    }
    let fix = "a newer kernel (features are probed, not inferred from the version)";
    WANTED
        .iter()
        .map(|&(name, missing, why)| match u.has(name) {
            Some(true) => finding(name, Severity::Ok, "supported", why, None),
            None => finding(
                name,
                Severity::Info,
                format!(
                    "not probed: {}",
                    u.probe_errors.get(name).map_or("no result", String::as_str)
                ),
                why,
                None,
            ),
            _ if name == "sqpoll" => finding(
                name,
                missing,
                "not permitted",
                why,
                Some(
                    "kernels before 5.11 allow SQPOLL to root (CAP_SYS_ADMIN) only; later ones to anyone, so a refusal there comes from seccomp or a container policy"
                        .into(),
                ),
            ),
            _ => finding(name, missing, "not supported", why, Some(fix.into())),
        })
        .collect()
}

fn limit_findings(l: &Limits, n: u64, out: &mut Vec<Finding>) {
    let need = n.saturating_add(FD_MARGIN);
    match l.nofile {
        Some(nofile) => {
            let soft_short = nofile.soft.is_some_and(|s| s < need);
            let hard_short = nofile.hard.is_some_and(|h| h < need);
            let severity = if soft_short || hard_short {
                Severity::Error
            } else {
                Severity::Ok
            };
            out.push(finding(
                "RLIMIT_NOFILE",
                severity,
                format!("soft {} hard {}", show(nofile.soft), show(nofile.hard)),
                format!("each connection is a file descriptor: {n} connections need at least {need} (with {FD_MARGIN} to spare)"),
                (severity != Severity::Ok).then(|| format!("systemd: LimitNOFILE={need}; shell: ulimit -n {need}; /etc/security/limits.conf: * - nofile {need}")),
            ));
        }
        None => out.push(finding(
            "RLIMIT_NOFILE",
            Severity::Info,
            "unknown (no /proc/self/limits under --root)",
            "each connection is a file descriptor",
            None,
        )),
    }
    if let Some(memlock) = l.memlock {
        let enough = memlock.soft.is_none_or(|s| s >= 64 << 20);
        out.push(finding(
            "RLIMIT_MEMLOCK",
            if enough { Severity::Ok } else { Severity::Info },
            format!("soft {} hard {}", show(memlock.soft), show(memlock.hard)),
            "registered buffers, and rings on kernels that account them to memlock, are pinned memory; a small limit fails ring setup with ENOMEM",
            (!enough).then(|| "systemd: LimitMEMLOCK=infinity".to_owned()),
        ));
    }
    let first = |name: &str| l.numbers(name).and_then(|v| v.first().copied());
    for (name, floor) in [("fs.nr_open", need), ("fs.file-max", need)] {
        if let Some(value) = first(name) {
            let severity = if value < floor {
                Severity::Error
            } else {
                Severity::Ok
            };
            out.push(finding(
                name,
                severity,
                value.to_string(),
                format!(
                    "caps the descriptors {} can hold; {n} connections need {floor}",
                    if name == "fs.nr_open" {
                        "one process"
                    } else {
                        "the whole system"
                    }
                ),
                (severity != Severity::Ok).then(|| sysctl_fix(name, &floor.to_string())),
            ));
        }
    }
    for (name, why) in [
        (
            "net.core.somaxconn",
            "caps every listen backlog: after a restart, N clients reconnect at once and a short accept queue drops SYNs, adding 1 s retransmit delays",
        ),
        (
            "net.ipv4.tcp_max_syn_backlog",
            "half-open connections waiting for their ACK during a reconnect storm; beyond it SYN cookies kick in and TCP options are lost",
        ),
    ] {
        if let Some(value) = first(name) {
            let severity = if value < MIN_BACKLOG {
                Severity::Warn
            } else {
                Severity::Ok
            };
            out.push(finding(
                name,
                severity,
                value.to_string(),
                why,
                (severity != Severity::Ok)
                    .then(|| sysctl_fix(name, &MIN_BACKLOG.max(n.min(65535)).to_string())),
            ));
        }
    }
    if let Some(value) = first("net.core.netdev_max_backlog") {
        let severity = if value < MIN_BACKLOG {
            Severity::Info
        } else {
            Severity::Ok
        };
        out.push(finding(
            "net.core.netdev_max_backlog",
            severity,
            value.to_string(),
            "packets queued per CPU before the stack processes them; a broadcast burst to N connections returns N ACKs at once",
            (severity != Severity::Ok).then(|| sysctl_fix("net.core.netdev_max_backlog", "16384")),
        ));
    }
    if let Some([lo, hi]) = l
        .numbers("net.ipv4.ip_local_port_range")
        .as_deref()
        .and_then(|v| <[u64; 2]>::try_from(v).ok())
    {
        let span = hi.saturating_sub(lo) + 1;
        let why = format!(
            "irrelevant for the server (accepted connections share its port); the bench load generator opens N connections to one address and port, so it needs {} source address(es) at {span} ports each",
            n.div_ceil(span)
        );
        out.push(finding(
            "net.ipv4.ip_local_port_range",
            Severity::Info,
            format!("{lo} {hi}"),
            why,
            (span < n).then(|| sysctl_fix("net.ipv4.ip_local_port_range", "1024 65535")),
        ));
    }
    if let Some(mem) = l.numbers("net.ipv4.tcp_mem").filter(|v| v.len() == 3) {
        let max_bytes = mem[2].saturating_mul(PAGE);
        let need_bytes = n.saturating_mul(MIN_SOCKET_BYTES);
        let severity = if max_bytes < need_bytes {
            Severity::Warn
        } else {
            Severity::Ok
        };
        out.push(finding(
            "net.ipv4.tcp_mem",
            severity,
            format!("{} {} {} pages (max {} MiB)", mem[0], mem[1], mem[2], max_bytes >> 20),
            format!("all TCP socket buffers together; {n} connections each holding a page each way need {} MiB, beyond the max the kernel drops data and sockets stall", need_bytes >> 20),
            (severity != Severity::Ok).then(|| {
                let pages = need_bytes.div_ceil(PAGE).saturating_mul(2);
                sysctl_fix("net.ipv4.tcp_mem", &format!("{} {} {}", pages / 2, pages / 4 * 3, pages))
            }),
        ));
    }
    for name in ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"] {
        if let Some(v) = l.numbers(name).filter(|v| v.len() == 3) {
            out.push(finding(
                name,
                Severity::Info,
                format!("{} {} {}", v[0], v[1], v[2]),
                format!("default {} B per socket: {n} connections with full buffers would take {} MiB, bounded by tcp_mem; chat-sized messages rarely fill them", v[1], n.saturating_mul(v[1]) >> 20),
                None,
            ));
        }
    }
    if let Some(mode) = &l.transparent_hugepages {
        let severity = if mode == "always" {
            Severity::Info
        } else {
            Severity::Ok
        };
        out.push(finding(
            "transparent_hugepage",
            severity,
            mode.clone(),
            "with always, khugepaged compaction can stall a shard for milliseconds; madvise leaves the choice to the allocator",
            (severity != Severity::Ok).then(|| "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (cmdline: transparent_hugepage=madvise)".to_owned()),
        ));
    }
}

fn sysctl_fix(name: &str, value: &str) -> String {
    format!(
        "sysctl -w {name}=\"{value}\"; persist in /etc/sysctl.d/90-shardcast.conf: {name} = {value}"
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::limits::Rlimit;

    fn limits(pairs: &[(&str, &str)], nofile: Option<u64>) -> Limits {
        Limits {
            nofile: Some(Rlimit {
                soft: nofile,
                hard: nofile,
            }),
            memlock: None,
            rlimit_source: None,
            sysctls: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
                .collect::<BTreeMap<_, _>>(),
            transparent_hugepages: Some("always".into()),
        }
    }

    fn severity_of(out: &[Finding], subject: &str) -> Severity {
        out.iter()
            .find(|f| f.subject == subject)
            .map(|f| f.severity)
            .unwrap_or_else(|| panic!("no finding for {subject}"))
    }

    #[test]
    fn nofile_below_connections_is_an_error() {
        let mut out = Vec::new();
        limit_findings(&limits(&[], Some(1024)), 100_000, &mut out);
        assert_eq!(severity_of(&out, "RLIMIT_NOFILE"), Severity::Error);
        assert!(
            out[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("LimitNOFILE=104096")
        );
        let mut out = Vec::new();
        limit_findings(&limits(&[], Some(1_048_576)), 100_000, &mut out);
        assert_eq!(severity_of(&out, "RLIMIT_NOFILE"), Severity::Ok);
        let mut out = Vec::new();
        limit_findings(&limits(&[], None), 100_000, &mut out);
        assert_eq!(severity_of(&out, "RLIMIT_NOFILE"), Severity::Ok);
    }

    #[test]
    fn backlogs_and_file_caps() {
        let l = limits(
            &[
                ("net.core.somaxconn", "4096"),
                ("net.ipv4.tcp_max_syn_backlog", "512"),
                ("fs.nr_open", "1048576"),
                ("fs.file-max", "65536"),
            ],
            None,
        );
        let mut out = Vec::new();
        limit_findings(&l, 100_000, &mut out);
        assert_eq!(severity_of(&out, "net.core.somaxconn"), Severity::Ok);
        assert_eq!(
            severity_of(&out, "net.ipv4.tcp_max_syn_backlog"),
            Severity::Warn
        );
        assert_eq!(severity_of(&out, "fs.nr_open"), Severity::Ok);
        assert_eq!(severity_of(&out, "fs.file-max"), Severity::Error);
        assert_eq!(severity_of(&out, "transparent_hugepage"), Severity::Info);
    }

    #[test]
    fn tcp_mem_scales_with_connections() {
        // 92 000 pages = 359 MiB: enough for 10 000 connections, not 100 000.
        let l = limits(
            &[
                ("net.ipv4.tcp_mem", "46000 61000 92000"),
                ("net.ipv4.ip_local_port_range", "32768 60999"),
            ],
            None,
        );
        let mut out = Vec::new();
        limit_findings(&l, 10_000, &mut out);
        assert_eq!(severity_of(&out, "net.ipv4.tcp_mem"), Severity::Ok);
        assert!(
            out.iter()
                .find(|f| f.subject == "net.ipv4.ip_local_port_range")
                .unwrap()
                .fix
                .is_none()
        );
        let mut out = Vec::new();
        limit_findings(&l, 100_000, &mut out);
        assert_eq!(severity_of(&out, "net.ipv4.tcp_mem"), Severity::Warn);
        let ports = out
            .iter()
            .find(|f| f.subject == "net.ipv4.ip_local_port_range")
            .unwrap();
        assert_eq!(ports.severity, Severity::Info);
        assert!(ports.why.contains("needs 4 source address(es)"));
    }

    #[test]
    fn io_uring_setup_severities() {
        let mut u = UringReport {
            disabled_sysctl: Some(0),
            seccomp: None,
            source: "live".into(),
            setup: Some(true),
            setup_error: None,
            features: BTreeMap::new(),
            probe_errors: BTreeMap::new(),
        };
        assert_eq!(uring_setup_finding(&u).severity, Severity::Ok);
        u.disabled_sysctl = Some(1);
        assert_eq!(uring_setup_finding(&u).severity, Severity::Warn);
        u.disabled_sysctl = Some(2);
        assert_eq!(uring_setup_finding(&u).severity, Severity::Error);
        u.disabled_sysctl = Some(0);
        u.setup = Some(false);
        assert_eq!(uring_setup_finding(&u).severity, Severity::Error);
        u.seccomp = Some(2);
        assert!(uring_setup_finding(&u).why.contains("seccomp filter"));
        u.setup = None;
        assert_eq!(uring_setup_finding(&u).severity, Severity::Info);
        assert!(uring_feature_findings(&u).is_empty());
        u.features.insert("accept_multishot".into(), false);
        u.probe_errors
            .insert("recv_multishot".into(), "Connection refused".into());
        let features = uring_feature_findings(&u);
        assert_eq!(
            features
                .iter()
                .find(|f| f.subject == "accept_multishot")
                .unwrap()
                .severity,
            Severity::Warn
        );
        let recv = features
            .iter()
            .find(|f| f.subject == "recv_multishot")
            .unwrap();
        assert_eq!(recv.severity, Severity::Info);
        assert_eq!(recv.observed, "not probed: Connection refused");
    }
}
