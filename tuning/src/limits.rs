//! Resource limits (RLIMIT_NOFILE, RLIMIT_MEMLOCK) and the sysctls that bound
//! a WebSocket server's connections, backlog and socket memory.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::InspectError;
use crate::host::Host;

/// The sysctls inspect reads, by dotted name.
pub const SYSCTLS: &[&str] = &[
    "fs.nr_open",
    "fs.file-max",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.core.netdev_max_backlog",
];

/// A soft and hard resource limit; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rlimit {
    /// The limit enforced now.
    pub soft: Option<u64>,
    /// The ceiling an unprivileged process may raise `soft` to.
    pub hard: Option<u64>,
}

/// Limits and sysctls of the host.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// RLIMIT_NOFILE (file descriptors, one per connection).
    pub nofile: Option<Rlimit>,
    /// RLIMIT_MEMLOCK in bytes.
    pub memlock: Option<Rlimit>,
    /// `getrlimit` or the captured `/proc/self/limits`; `None` when unknown.
    pub rlimit_source: Option<String>,
    /// Sysctl name to its value (whitespace collapsed), `None` when absent.
    pub sysctls: BTreeMap<String, Option<String>>,
    /// The selected mode of `/sys/kernel/mm/transparent_hugepage/enabled`.
    pub transparent_hugepages: Option<String>,
}

impl Limits {
    /// Reads limits and sysctls through `host`.
    pub fn read(host: &Host) -> Result<Self, InspectError> {
        let (nofile, memlock, rlimit_source) = if host.is_live() {
            (
                live_rlimit(libc::RLIMIT_NOFILE),
                live_rlimit(libc::RLIMIT_MEMLOCK),
                Some("getrlimit".to_owned()),
            )
        } else if let Some(text) = host.read("/proc/self/limits")? {
            let parsed = parse_proc_limits(&text);
            (
                parsed.get("Max open files").copied(),
                parsed.get("Max locked memory").copied(),
                Some("/proc/self/limits".into()),
            )
        } else {
            (None, None, None)
        };
        let mut sysctls = BTreeMap::new();
        for name in SYSCTLS {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            let value = host
                .read(&path)?
                .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "));
            sysctls.insert((*name).to_owned(), value);
        }
        let transparent_hugepages = host
            .read("/sys/kernel/mm/transparent_hugepage/enabled")?
            .and_then(|t| selected_mode(&t));
        Ok(Self {
            nofile,
            memlock,
            rlimit_source,
            sysctls,
            transparent_hugepages,
        })
    }

    /// A sysctl's value as whitespace-separated numbers, if present and numeric.
    pub fn numbers(&self, name: &str) -> Option<Vec<u64>> {
        let value = self.sysctls.get(name)?.as_ref()?;
        value.split_whitespace().map(|v| v.parse().ok()).collect()
    }
}

fn live_rlimit(resource: libc::__rlimit_resource_t) -> Option<Rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return None;
    }
    let value = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Some(Rlimit {
        soft: value(limit.rlim_cur),
        hard: value(limit.rlim_max),
    })
}

/// Parses `/proc/<pid>/limits` into limit name to soft and hard values.
pub fn parse_proc_limits(text: &str) -> BTreeMap<String, Rlimit> {
    let mut limits = BTreeMap::new();
    for line in text.lines().skip(1) {
        // Names are words separated by single spaces; columns by several.
        let fields: Vec<&str> = line
            .split("  ")
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        let [name, soft, hard, ..] = fields[..] else {
            continue;
        };
        let value = |v: &str| {
            if v == "unlimited" {
                Ok(None)
            } else {
                v.parse().map(Some)
            }
        };
        if let (Ok(soft), Ok(hard)) = (value(soft), value(hard)) {
            limits.insert(name.to_owned(), Rlimit { soft, hard });
        }
    }
    limits
}

/// The bracketed choice of a sysfs mode file: `always [madvise] never`.
pub fn selected_mode(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')?;
    Some(text[start + 1..start + end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max locked memory         8388608              8388608              bytes     \n\
Max open files            1024                 524288               files     \n";

    #[test]
    fn parses_proc_limits() {
        let limits = parse_proc_limits(LIMITS);
        assert_eq!(
            limits["Max open files"],
            Rlimit {
                soft: Some(1024),
                hard: Some(524288)
            }
        );
        assert_eq!(
            limits["Max locked memory"],
            Rlimit {
                soft: Some(8388608),
                hard: Some(8388608)
            }
        );
        assert_eq!(
            limits["Max cpu time"],
            Rlimit {
                soft: None,
                hard: None
            }
        );
    }

    #[test]
    fn sysctl_values_as_numbers() {
        let mut limits = Limits {
            nofile: None,
            memlock: None,
            rlimit_source: None,
            sysctls: BTreeMap::new(),
            transparent_hugepages: None,
        };
        limits
            .sysctls
            .insert("net.ipv4.tcp_mem".into(), Some("46000 61000 92000".into()));
        limits
            .sysctls
            .insert("net.core.somaxconn".into(), Some("4096".into()));
        limits.sysctls.insert("fs.nr_open".into(), None);
        limits.sysctls.insert("odd".into(), Some("12 x".into()));
        assert_eq!(
            limits.numbers("net.ipv4.tcp_mem"),
            Some(vec![46000, 61000, 92000])
        );
        assert_eq!(limits.numbers("net.core.somaxconn"), Some(vec![4096]));
        assert_eq!(limits.numbers("fs.nr_open"), None);
        assert_eq!(limits.numbers("odd"), None);
        assert_eq!(limits.numbers("absent"), None);
    }

    #[test]
    fn reads_the_selected_mode() {
        assert_eq!(
            selected_mode("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(selected_mode("always madvise never"), None);
    }
}
