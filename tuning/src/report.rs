//! The inspect report: one serializable value, printed as JSON or as tables.

use std::fmt::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cpulist;
use crate::findings::Finding;
use crate::limits::Limits;
use crate::network::Interface;
use crate::topology::Topology;
use crate::uring::UringReport;

/// Everything inspect found, and its judgement.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The `--root` read, `None` for the live host.
    pub root: Option<PathBuf>,
    /// The connection count findings were judged for.
    pub connections: u64,
    /// CPU topology.
    pub topology: Topology,
    /// Network interfaces.
    pub network: Vec<Interface>,
    /// io_uring support.
    pub io_uring: UringReport,
    /// Limits and sysctls.
    pub limits: Limits,
    /// Judged facts, in section order.
    pub findings: Vec<Finding>,
}

/// What a report or plan was made from, for its first line: the live
/// host, or the captured tree it read.
pub(crate) fn host_label(root: Option<&Path>) -> String {
    root.map_or_else(|| "live host".to_owned(), |r| r.display().to_string())
}

pub(crate) fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) -> fmt::Result {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| -> fmt::Result {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "  {}", text.join("  ").trim_end())
    };
    line(out, &mut header.iter().copied())?;
    for row in rows {
        line(out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let t = &self.topology;
        let root = host_label(self.root.as_deref());
        writeln!(
            out,
            "shardcast-tune inspect: {root}, judged for {} connections\n",
            self.connections
        )?;
        writeln!(out, "CPU topology")?;
        let l3 = t
            .l3_groups
            .iter()
            .map(|g| cpulist::format(g))
            .collect::<Vec<_>>()
            .join(" | ");
        let nodes = t
            .nodes
            .iter()
            .map(|n| format!("node{}: {}", n.id, cpulist::format(&n.cpus)))
            .collect::<Vec<_>>()
            .join(" | ");
        let rows = vec![
            vec!["packages".into(), t.packages.to_string()],
            vec!["NUMA nodes".into(), format!("{} ({nodes})", t.nodes.len())],
            vec!["physical cores".into(), t.physical_cores.len().to_string()],
            vec!["threads per core".into(), t.threads_per_core.to_string()],
            vec!["logical CPUs".into(), t.cpus.len().to_string()],
            vec!["L3 groups".into(), format!("{} ({l3})", t.l3_groups.len())],
            vec![
                "allowed CPUs".into(),
                t.allowed.as_ref().map_or_else(
                    || "unknown".into(),
                    |a| format!("{} ({})", cpulist::format(&a.cpus), a.source),
                ),
            ],
            vec![
                "cgroup cpuset".into(),
                t.cpuset
                    .as_ref()
                    .map_or_else(|| "none".into(), |c| cpulist::format(c)),
            ],
            vec![
                "isolated / nohz_full".into(),
                format!(
                    "{} / {} {}",
                    or_none(&t.isolated),
                    or_none(&t.nohz_full),
                    t.cmdline.join(" ")
                ),
            ],
        ];
        table(&mut out, &["fact", "value"], &rows)?;
        writeln!(out, "\nNetwork")?;
        let rows: Vec<Vec<String>> = self
            .network
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    format!("{}/{}", i.rx_queues, i.tx_queues),
                    match (i.loopback, i.irqs.len()) {
                        (true, _) => "none (loopback)".into(),
                        (false, 0) => "none found".into(),
                        (false, n) => format!("{n} on CPUs {}", or_none(&i.irq_cpus)),
                    },
                    or_none(&i.rps_cpus),
                    or_none(&i.xps_cpus),
                ]
            })
            .collect();
        table(
            &mut out,
            &["interface", "rx/tx", "IRQs", "RPS", "XPS"],
            &rows,
        )?;
        let u = &self.io_uring;
        let known = |v: Option<u8>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        writeln!(
            out,
            "\nio_uring ({}; kernel.io_uring_disabled {}; seccomp {})",
            u.source,
            known(u.disabled_sysctl),
            known(u.seccomp)
        )?;
        let features: Vec<Vec<String>> = self
            .io_uring
            .features
            .iter()
            .map(|(k, v)| vec![k.clone(), if *v { "yes".into() } else { "no".into() }])
            .collect();
        if features.is_empty() {
            writeln!(out, "  no features probed")?;
        } else {
            table(&mut out, &["feature", "available"], &features)?;
        }
        writeln!(out, "\nFindings")?;
        let rows: Vec<Vec<String>> = self
            .findings
            .iter()
            .map(|f| {
                vec![
                    f.severity.to_string(),
                    f.subject.clone(),
                    f.observed.clone(),
                ]
            })
            .collect();
        table(&mut out, &["severity", "subject", "observed"], &rows)?;
        let to_fix: Vec<&Finding> = self.findings.iter().filter(|f| f.fix.is_some()).collect();
        if !to_fix.is_empty() {
            writeln!(out, "\nWhy and how to fix")?;
            for finding in to_fix {
                writeln!(
                    out,
                    "  [{}] {}: {}",
                    finding.severity, finding.subject, finding.why
                )?;
                if let Some(fix) = &finding.fix {
                    writeln!(out, "      fix: {fix}")?;
                }
            }
        }
        f.write_str(&out)
    }
}

fn or_none(cpus: &[u32]) -> String {
    if cpus.is_empty() {
        "-".into()
    } else {
        cpulist::format(cpus)
    }
}
