//! What a run with many connections needs from the system, checked before
//! it starts so that a limit is reported by name rather than met half-way
//! as an obscure failure: file descriptors (per process, raised here, and
//! system-wide), ephemeral ports per source address, the listen backlog
//! and connection tracking.

use std::fs;
use std::io;

use anyhow::{Context, bail};

/// A process's RLIMIT_NOFILE: the most file descriptors it may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Nofile {
    /// The limit in force.
    pub(crate) soft: u64,
    /// The most the soft limit may be raised to without privilege.
    pub(crate) hard: u64,
}

impl Nofile {
    /// This process's limit.
    pub(crate) fn current() -> io::Result<Nofile> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit to the pointer given, which
        // points to a live, writable rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Nofile {
            soft: limit.rlim_cur,
            hard: limit.rlim_max,
        })
    }

    /// Sets this process's limit; children started afterwards inherit it.
    fn set(self) -> io::Result<()> {
        let limit = libc::rlimit {
            rlim_cur: self.soft,
            rlim_max: self.hard,
        };
        // SAFETY: setrlimit reads one rlimit from the pointer given, which
        // points to a live, initialised rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The soft limit of process `pid`, from /proc/PID/limits.
    pub(crate) fn soft_of(pid: u32) -> anyhow::Result<u64> {
        let path = format!("/proc/{pid}/limits");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.lines()
            .find_map(|line| line.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|soft| soft.parse().ok())
            .with_context(|| format!("no open file limit in {path}"))
    }
}

/// What raising RLIMIT_NOFILE came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Raised {
    /// The limit before.
    pub(crate) before: Nofile,
    /// The limit now.
    pub(crate) after: Nofile,
    /// Why `after.soft` is below what was asked for, if it is.
    pub(crate) short: Option<String>,
}

/// Raises this process's RLIMIT_NOFILE so that it, and the servers it
/// starts afterwards (they inherit it), may each hold `needed`
/// descriptors: the soft limit up to the hard one, and the hard one too
/// when it is below `needed`. Raising the hard limit takes
/// CAP_SYS_RESOURCE and is capped by `fs.nr_open`; when that fails, the
/// soft limit still goes up to the hard one, and the reason is returned.
pub(crate) fn raise_nofile(needed: u64) -> anyhow::Result<Raised> {
    let before = Nofile::current().context("reading RLIMIT_NOFILE")?;
    let wanted = Nofile {
        soft: before.hard.max(needed),
        hard: before.hard.max(needed),
    };
    if wanted == before {
        return Ok(Raised {
            before,
            after: before,
            short: None,
        });
    }
    let Err(error) = wanted.set() else {
        return Ok(Raised {
            before,
            after: wanted,
            short: None,
        });
    };
    let short = format!(
        "RLIMIT_NOFILE's hard limit is {} and this process may not raise it to {needed} ({error}: it takes CAP_SYS_RESOURCE, and at most fs.nr_open, {})",
        before.hard,
        sysctl("fs.nr_open").unwrap_or_else(|error| format!("{error:#}"))
    );
    let after = Nofile {
        soft: before.hard,
        hard: before.hard,
    };
    after
        .set()
        .context("raising RLIMIT_NOFILE's soft limit to its hard limit")?;
    Ok(Raised {
        before,
        after,
        short: Some(short),
    })
}

/// A value of /proc/sys, such as `fs.nr_open`.
pub(crate) fn sysctl(name: &str) -> anyhow::Result<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    fs::read_to_string(&path)
        .map(|value| value.trim().to_owned())
        .with_context(|| format!("reading {path} ({name})"))
}

/// A sysctl holding one number.
fn sysctl_number(name: &str) -> anyhow::Result<u64> {
    let value = sysctl(name)?;
    value
        .parse()
        .with_context(|| format!("{name} = {value:?} is not a number"))
}

/// The ephemeral ports connect() picks from
/// (`net.ipv4.ip_local_port_range`), inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortRange {
    /// The first port.
    pub(crate) first: u16,
    /// The last port.
    pub(crate) last: u16,
}

impl PortRange {
    /// This machine's range.
    pub(crate) fn read() -> anyhow::Result<PortRange> {
        let name = "net.ipv4.ip_local_port_range";
        PortRange::parse(&sysctl(name)?).with_context(|| format!("parsing {name}"))
    }

    /// Parses `32768\t60999`.
    fn parse(text: &str) -> anyhow::Result<PortRange> {
        let mut ports = text.split_whitespace().map(str::parse::<u16>);
        match (ports.next(), ports.next(), ports.next()) {
            (Some(Ok(first)), Some(Ok(last)), None) if first <= last => {
                Ok(PortRange { first, last })
            }
            _ => bail!("expected two ports, the first not above the last, got {text:?}"),
        }
    }

    /// Ports in the range.
    pub(crate) fn len(self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// The source addresses needed for `connections` to one destination
    /// (each source address gives at most one connection per port), each
    /// filled to at most `fill` of the range, so that connect() still
    /// finds a free port quickly.
    pub(crate) fn sources_needed(self, connections: usize, fill: f64) -> usize {
        let per_source = ((self.len() as f64 * fill) as usize).max(1);
        connections.div_ceil(per_source).max(1)
    }
}

/// Checks the system-wide limits a run of `connections` connections
/// (client and server ends on this machine) with `concurrency` handshakes
/// in flight runs into. Fails naming the limit and how to raise it;
/// returns notes on limits that slow a run down without failing it.
pub(crate) fn check_system(connections: usize, concurrency: usize) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let file_max = sysctl_number("fs.file-max")?;
    let allocated = sysctl("fs.file-nr")?
        .split_whitespace()
        .next()
        .and_then(|allocated| allocated.parse::<u64>().ok())
        .context("parsing fs.file-nr")?;
    let both_ends = (connections as u64).saturating_mul(2);
    if allocated.saturating_add(both_ends) > file_max {
        bail!(
            "fs.file-max is {file_max} and {allocated} files are open: {both_ends} more sockets (both ends of {connections} connections) do not fit; raise it (as root: `sysctl -w fs.file-max={}`)",
            allocated.saturating_add(both_ends.saturating_mul(2))
        );
    }
    let somaxconn = sysctl_number("net.core.somaxconn")?;
    if somaxconn < concurrency as u64 {
        notes.push(format!(
            "net.core.somaxconn is {somaxconn}, below the {concurrency} handshakes in flight: listen backlogs are capped there, and connections beyond it wait for SYN retries"
        ));
    }
    // Connection tracking counts only when the module is loaded.
    let tracking = (
        sysctl_number("net.netfilter.nf_conntrack_max"),
        sysctl_number("net.netfilter.nf_conntrack_count"),
    );
    if let (Ok(max), Ok(count)) = tracking {
        if count + connections as u64 > max {
            bail!(
                "net.netfilter.nf_conntrack_max is {max} with {count} connections tracked: {connections} more do not fit, and the kernel drops new connections beyond it; raise it (as root: `sysctl -w net.netfilter.nf_conntrack_max={}`)",
                2 * (count + connections as u64)
            );
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_size_the_sources() {
        let range = PortRange::parse("32768\t60999\n").unwrap();
        assert_eq!(
            range,
            PortRange {
                first: 32768,
                last: 60999
            }
        );
        assert_eq!(range.len(), 28232);
        assert_eq!(range.sources_needed(200, 0.75), 1);
        assert_eq!(range.sources_needed(10_000, 0.75), 1);
        // 21,174 connections per source at 75%.
        assert_eq!(range.sources_needed(50_000, 0.75), 3);
        assert_eq!(range.sources_needed(42_348, 0.75), 2);
        assert_eq!(range.sources_needed(0, 0.75), 1);
        let tiny = PortRange::parse("1000 1000").unwrap();
        assert_eq!(tiny.len(), 1);
        assert_eq!(tiny.sources_needed(3, 0.5), 3);
        for bad in ["", "1", "2 1", "1 2 3", "a b", "1 70000"] {
            assert!(PortRange::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn this_machine_has_a_port_range_and_limits() {
        assert!(PortRange::read().unwrap().len() > 0);
        let limit = Nofile::current().unwrap();
        assert!(limit.soft <= limit.hard);
        assert_eq!(Nofile::soft_of(std::process::id()).unwrap(), limit.soft);
        assert!(sysctl_number("fs.nr_open").unwrap() > 0);
    }

    #[test]
    fn a_small_run_fits_and_an_impossible_one_names_the_limit() {
        assert_eq!(check_system(200, 16).unwrap(), Vec::<String>::new());
        let error = check_system(usize::MAX / 4, 16).unwrap_err().to_string();
        assert!(error.contains("fs.file-max"), "{error}");
    }

    #[test]
    fn raising_to_what_is_already_allowed_keeps_the_hard_limit() {
        let current = Nofile::current().unwrap();
        let raised = raise_nofile(current.soft.min(64)).unwrap();
        assert_eq!(raised.before, current);
        assert_eq!(raised.after.hard, current.hard);
        assert_eq!(raised.after.soft, current.hard);
        assert_eq!(raised.short, None);
    }

    #[test]
    fn beyond_any_possible_limit_the_soft_limit_still_rises_and_the_reason_is_given() {
        // Above the most fs.nr_open can be set to.
        let raised = raise_nofile(1 << 31).unwrap();
        assert_eq!(raised.after.soft, raised.before.hard);
        let short = raised.short.unwrap();
        assert!(short.contains("CAP_SYS_RESOURCE"), "{short}");
    }
}
