//! The sysctl.d file: kernel limits raised to what N connections need.
//!
//! A value is written only when it must rise: a plan never lowers a
//! sysctl (someone set it higher for a reason), and never writes one it
//! could not read (it cannot know it would not lower it). Each line is
//! commented with the value it replaces and why.
//!
//! Only the limits that scale with the connection count are planned:
//! descriptors (`fs.nr_open`, `fs.file-max`), accept queues
//! (`net.core.somaxconn`, `net.ipv4.tcp_max_syn_backlog`) and socket
//! memory (`net.ipv4.tcp_mem`). `netdev_max_backlog`, `tcp_rmem`/`tcp_wmem`
//! and `ip_local_port_range` do not bound how many connections a server
//! holds; inspect reports them.
//!
//! Only the limits that scale with the connection count are planned:
//! descriptors (`fs.nr_open`, `fs.file-max`), accept queues
//! (`net.core.somaxconn`, `net.ipv4.tcp_max_syn_backlog`) and socket
//! memory (`net.ipv4.tcp_mem`). `netdev_max_backlog`, `tcp_rmem`/`tcp_wmem`
//! and `ip_local_port_range` do not bound how many connections a server
//! holds; inspect reports them.

use std::fmt::Write as _;

use serde::Serialize;

use super::Choice;
use crate::findings::MIN_SOCKET_BYTES;
use crate::limits::Limits;

/// The page size `net.ipv4.tcp_mem` counts in.
const PAGE: u64 = 4096;

/// One sysctl the plan raises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sysctl {
    /// Dotted name, as in `sysctl -w`.
    pub name: String,
    /// The host's value now.
    pub current: String,
    /// The value written.
    pub value: String,
    /// Why it must be at least that.
    pub reason: String,
}

/// What a sysctl must be at least, component by component, and why.
struct Need {
    name: &'static str,
    floor: Vec<u64>,
    reason: String,
}

/// The sysctls below the floors that `connections` connections,
/// `nofile` descriptors per process and a listen backlog of `backlog`
/// need, raised; and a choice for each looked at, raised or not.
pub fn raise(
    limits: &Limits,
    connections: u64,
    nofile: u64,
    backlog: u32,
) -> (Vec<Sysctl>, Vec<Choice>) {
    // tcp_mem: every connection holding a page each way, as inspect judges
    // it, doubled; pressure at half of that, as the kernel's own defaults.
    let pages = connections
        .saturating_mul(MIN_SOCKET_BYTES)
        .div_ceil(PAGE)
        .saturating_mul(2);
    let needs = [
        Need {
            name: "fs.nr_open",
            floor: vec![nofile],
            reason: format!("caps LimitNOFILE: one process must hold {nofile} descriptors"),
        },
        Need {
            name: "fs.file-max",
            floor: vec![nofile],
            reason: format!("descriptors of the whole system; the server alone holds {nofile}"),
        },
        Need {
            name: "net.core.somaxconn",
            floor: vec![u64::from(backlog)],
            reason: format!("caps every listen backlog; server.backlog is {backlog}"),
        },
        Need {
            name: "net.ipv4.tcp_max_syn_backlog",
            floor: vec![u64::from(backlog)],
            reason: format!(
                "half-open connections per listener in a reconnect storm; server.backlog is {backlog}"
            ),
        },
        Need {
            name: "net.ipv4.tcp_mem",
            floor: vec![pages / 2, pages / 4 * 3, pages],
            reason: format!(
                "pages for all TCP buffers: {connections} connections at a page each way, doubled"
            ),
        },
    ];
    let mut raised = Vec::new();
    let mut choices = Vec::new();
    for need in needs {
        let Some(current) = limits.numbers(need.name) else {
            choices.push(Choice::new(
                need.name,
                "not written",
                "its value could not be read here, so raising it might lower it",
            ));
            continue;
        };
        let current_text = join(&current);
        if current.len() != need.floor.len() || current.iter().zip(&need.floor).all(|(c, f)| c >= f)
        {
            choices.push(Choice::new(
                need.name,
                format!("{current_text} (kept)"),
                format!("already enough: {}", need.reason),
            ));
            continue;
        }
        let value: Vec<u64> = current
            .iter()
            .zip(&need.floor)
            .map(|(&c, &f)| c.max(f))
            .collect();
        let value = join(&value);
        choices.push(Choice::new(
            need.name,
            format!("{value} (was {current_text})"),
            need.reason.clone(),
        ));
        raised.push(Sysctl {
            name: need.name.to_owned(),
            current: current_text,
            value,
            reason: need.reason,
        });
    }
    (raised, choices)
}

fn join(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sysctl.d file for `sysctls`, each line under a comment with the
/// value it replaces and why.
pub fn file_text(sysctls: &[Sysctl], connections: u64) -> String {
    let mut out = format!(
        "# Written by shardcast-tune plan for {connections} connections.\n\
         # Only values that had to rise are set; none is lowered.\n"
    );
    if sysctls.is_empty() {
        out.push_str("# Nothing to raise: every limit read is already enough.\n");
    }
    for sysctl in sysctls {
        let _ = write!(
            out,
            "\n# was {}: {}\n{} = {}\n",
            sysctl.current, sysctl.reason, sysctl.name, sysctl.value
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{fixture, options};
    use crate::plan::{Target, plan};

    fn names(sysctls: &[Sysctl]) -> Vec<&str> {
        sysctls.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn xeon_raises_somaxconn_only() {
        // somaxconn 128 (pre-5.4 default) under a backlog of 8334; the
        // rest is large already.
        let plan = plan(
            &fixture("xeon-2s", 100_000),
            &options(100_000, Target::Throughput),
        )
        .unwrap();
        assert_eq!(
            names(&plan.sysctls),
            ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"]
        );
        assert_eq!(plan.sysctls[0].current, "128");
        assert_eq!(plan.sysctls[0].value, "8334");
        assert_eq!(plan.sysctls[1].current, "4096");
        let text = &plan.files[1].text;
        assert!(
            text.contains("\n# was 128: caps every listen backlog; server.backlog is 8334\nnet.core.somaxconn = 8334\n"),
            "{text}"
        );
    }

    #[test]
    fn never_lowers_and_raises_only_what_falls_short() {
        let report = fixture("this-machine", 2_000_000);
        // NOFILE 2 004 096 > nr_open 1 048 576; tcp_mem max 575778 pages
        // < 8 000 000; file-max 2 466 097 is enough; backlog 65535 >
        // somaxconn 4096 and tcp_max_syn_backlog 2048.
        let (raised, choices) = raise(&report.limits, 2_000_000, 2_004_096, 65535);
        assert_eq!(
            names(&raised),
            [
                "fs.nr_open",
                "net.core.somaxconn",
                "net.ipv4.tcp_max_syn_backlog",
                "net.ipv4.tcp_mem"
            ]
        );
        assert_eq!(raised[0].value, "2004096");
        assert_eq!(raised[3].value, "4000000 6000000 8000000");
        let file_max = choices.iter().find(|c| c.setting == "fs.file-max").unwrap();
        assert_eq!(file_max.value, "2466097 (kept)");
        // A small server raises nothing; the file says so.
        let (raised, _) = raise(&report.limits, 5904, 10_000, 4096);
        assert_eq!(names(&raised), ["net.ipv4.tcp_max_syn_backlog"]);
        let (raised, _) = raise(&report.limits, 5904, 10_000, 2048);
        assert!(raised.is_empty());
        assert!(file_text(&raised, 10).contains("Nothing to raise"));
    }

    #[test]
    fn tcp_mem_rises_component_by_component() {
        let mut limits = fixture("epyc-16c", 1).limits;
        limits
            .sysctls
            .insert("net.ipv4.tcp_mem".into(), Some("100 9000000 300".into()));
        let (raised, _) = raise(&limits, 1000, 5096, 4096);
        let tcp_mem = raised
            .iter()
            .find(|s| s.name == "net.ipv4.tcp_mem")
            .unwrap();
        // 1000 connections: 4000 pages max; the middle value stays higher.
        assert_eq!(tcp_mem.value, "2000 9000000 4000");
    }

    #[test]
    fn unreadable_values_are_not_written() {
        let mut limits = fixture("epyc-16c", 1).limits;
        limits.sysctls.insert("net.core.somaxconn".into(), None);
        let (raised, choices) = raise(&limits, 5904, 10_000, 65535);
        assert!(!names(&raised).contains(&"net.core.somaxconn"));
        let choice = choices
            .iter()
            .find(|c| c.setting == "net.core.somaxconn")
            .unwrap();
        assert_eq!(choice.value, "not written");
    }
}
