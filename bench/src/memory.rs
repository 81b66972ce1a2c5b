//! Memory as the kernel accounts it: a process's resident set (VmRSS),
//! where its resident pages are and its proportional set size (smaps),
//! the slab objects sockets and event registrations take in the kernel,
//! outside any process's RSS, and what the machine has left.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Slab caches of one socket, either end of a TCP connection: the socket
/// itself, its inode, its open file and its dentry.
pub(crate) const SOCKET_CACHES: [&str; 4] = ["TCP", "sock_inode_cache", "filp", "dentry"];

/// Slab caches of a server's interest in a socket: an io_uring request
/// waiting on it, or an epoll registration.
pub(crate) const REGISTRATION_CACHES: [&str; 3] = ["io_kiocb", "eventpoll_epi", "eventpoll_pwq"];

/// The value of a `Name:   123 kB` line of a /proc file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        let kib = value
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kib * 1024)
    })
}

/// The resident set of process `pid` in bytes: VmRSS of
/// /proc/PID/status.
pub(crate) fn vm_rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    kib_field(&status, "VmRSS").with_context(|| format!("no VmRSS in {path}"))
}

/// The memory the machine can still give out without swapping, bytes:
/// MemAvailable of /proc/meminfo.
pub(crate) fn available() -> anyhow::Result<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    kib_field(&meminfo, "MemAvailable").context("no MemAvailable in /proc/meminfo")
}

/// A resident set that stopped moving, or the last reading when it did
/// not in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settled {
    /// VmRSS, bytes.
    pub(crate) rss: u64,
    /// Whether two readings `interval` apart came within the tolerance.
    pub(crate) settled: bool,
}

/// Reads the VmRSS of `pid` every `interval` until two readings in a row
/// differ by at most `tolerance` (a share of the earlier), or `timeout`
/// has passed.
pub(crate) fn settle(
    pid: u32,
    interval: Duration,
    tolerance: f64,
    timeout: Duration,
) -> anyhow::Result<Settled> {
    let deadline = Instant::now() + timeout;
    let mut previous = vm_rss(pid)?;
    loop {
        thread::sleep(interval);
        let rss = vm_rss(pid)?;
        let settled = rss.abs_diff(previous) as f64 <= tolerance * previous as f64;
        if settled || Instant::now() >= deadline {
            return Ok(Settled { rss, settled });
        }
        previous = rss;
    }
}

/// A process's resident bytes by the kind of mapping they are in, and
/// its proportional set size, from /proc/PID/smaps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mappings {
    /// Anonymous memory: the heap, the allocator's arenas, stacks.
    pub(crate) anonymous: u64,
    /// The part of `anonymous` in transparent huge pages (2 MiB each,
    /// resident whole as soon as one byte of them is touched).
    pub(crate) huge: u64,
    /// io_uring's rings and buffers mapped from the kernel.
    pub(crate) io_uring: u64,
    /// Mapped files: the executable and the libraries.
    pub(crate) files: u64,
    /// Everything else (vdso, other kernel mappings).
    pub(crate) other: u64,
    /// The proportional set size: resident bytes, each page shared with
    /// other processes counted as its share.
    pub(crate) pss: u64,
}

impl Mappings {
    /// Reads /proc/PID/smaps.
    pub(crate) fn read(pid: u32) -> anyhow::Result<Mappings> {
        let path = format!("/proc/{pid}/smaps");
        let smaps = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Ok(Mappings::parse(&smaps))
    }

    /// Sums the `Rss` of each mapping into its kind and every `Pss`.
    fn parse(smaps: &str) -> Mappings {
        let mut totals = Mappings::default();
        let mut kind = Kind::Other;
        for line in smaps.lines() {
            if let Some(name) = mapping_name(line) {
                kind = Kind::of(name);
            } else if let Some(rss) = kib_field(line, "Rss") {
                *match kind {
                    Kind::Anonymous => &mut totals.anonymous,
                    Kind::IoUring => &mut totals.io_uring,
                    Kind::File => &mut totals.files,
                    Kind::Other => &mut totals.other,
                } += rss;
            } else if let Some(pss) = kib_field(line, "Pss") {
                totals.pss += pss;
            } else if let Some(huge) = kib_field(line, "AnonHugePages") {
                totals.huge += huge;
            }
        }
        totals
    }
}

/// The kind of a mapping, by its name in smaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Anonymous,
    IoUring,
    File,
    Other,
}

impl Kind {
    fn of(name: &str) -> Kind {
        if name.is_empty()
            || name == "[heap]"
            || name.starts_with("[stack")
            || name.starts_with("[anon:")
        {
            Kind::Anonymous
        } else if name.contains("io_uring") {
            Kind::IoUring
        } else if name.starts_with('/') {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

/// The name of the mapping a smaps header line opens
/// (`7f..-7f.. rw-p 00000000 00:00 0   [heap]`), empty for an anonymous
/// one; `None` for the lines of fields under it.
fn mapping_name(line: &str) -> Option<&str> {
    let (range, _) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    let hex = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(start) || !hex(end) {
        return None;
    }
    // Five fields precede the name: range, permissions, offset, device, inode.
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        rest = &rest[rest.find(' ').unwrap_or(rest.len())..];
    }
    Some(rest.trim())
}

/// Kernel slab objects in use, from /proc/slabinfo (readable by root).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slabs {
    /// (cache name, bytes of its active objects).
    caches: Vec<(String, u64)>,
}

impl Slabs {
    /// Reads /proc/slabinfo; `None` when it cannot be read.
    pub(crate) fn read() -> Option<Slabs> {
        fs::read_to_string("/proc/slabinfo")
            .ok()
            .map(|text| Slabs::parse(&text))
    }

    /// Parses `name active_objs num_objs objsize ...` lines.
    pub(crate) fn parse(text: &str) -> Slabs {
        let caches = text
            .lines()
            .filter(|line| !line.starts_with("slabinfo") && !line.starts_with('#'))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next()?;
                let active: u64 = fields.next()?.parse().ok()?;
                let size: u64 = fields.nth(1)?.parse().ok()?;
                Some((name.to_owned(), active * size))
            })
            .collect();
        Slabs { caches }
    }

    /// Bytes of active objects in the caches named.
    pub(crate) fn bytes(&self, names: &[&str]) -> u64 {
        self.caches
            .iter()
            .filter(|(name, _)| names.contains(&name.as_str()))
            .map(|(_, bytes)| bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0a00000-55d0c0a80000 r-xp 00000000 fd:01 1234                       /usr/bin/server
Size:                512 kB
Rss:                 400 kB
Pss:                 300 kB
VmFlags: rd ex mr mw me
55d0c1000000-55d0c2000000 rw-p 00000000 00:00 0                          [heap]
Rss:                1000 kB
Pss:                1000 kB
AnonHugePages:       512 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
Rss:                 100 kB
Pss:                 100 kB
7f0000200000-7f0000201000 rw-s 00000000 00:0f 5678                       anon_inode:[io_uring]
Rss:                   4 kB
Pss:                   4 kB
7f0000300000-7f0000301000 rw-p 00000000 00:00 0                          [stack]
Rss:                   8 kB
Pss:                   8 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   4 kB
Pss:                   0 kB
7f0000400000-7f0000401000 r--p 00000000 fd:01 99                         /usr/lib/a library (deleted)
Rss:                  12 kB
Pss:                   6 kB
";

    #[test]
    fn smaps_sums_resident_bytes_by_kind() {
        let mappings = Mappings::parse(SMAPS);
        assert_eq!(
            mappings,
            Mappings {
                anonymous: 1108 * 1024,
                huge: 512 * 1024,
                io_uring: 4 * 1024,
                files: 412 * 1024,
                other: 4 * 1024,
                pss: 1418 * 1024,
            }
        );
    }

    #[test]
    fn mapping_names_come_after_five_fields() {
        assert_eq!(
            mapping_name("7f00-7f01 rw-p 00000000 00:00 0          [heap]"),
            Some("[heap]")
        );
        assert_eq!(mapping_name("7f00-7f01 rw-p 00000000 00:00 0 "), Some(""));
        assert_eq!(mapping_name("Rss:       4 kB"), None);
        assert_eq!(mapping_name("VmFlags: rd wr"), None);
        assert_eq!(mapping_name("THPeligible:    0"), None);
    }

    #[test]
    fn kib_fields_are_bytes() {
        assert_eq!(kib_field("VmRSS:\t  5120 kB\n", "VmRSS"), Some(5 << 20));
        assert_eq!(kib_field("VmRSSx: 1 kB", "VmRSS"), None);
        assert_eq!(kib_field("VmRSS: many", "VmRSS"), None);
    }

    #[test]
    fn slabinfo_gives_active_bytes_per_cache() {
        let slabs = Slabs::parse(
            "slabinfo - version: 2.1\n\
             # name <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables\n\
             TCP                   40    117   2368   13    8 : tunables    0    0    0 : slabdata 9 9 0\n\
             filp                 378    378    192   21    1 : tunables    0    0    0 : slabdata 18 18 0\n",
        );
        assert_eq!(slabs.bytes(&["TCP"]), 40 * 2368);
        assert_eq!(slabs.bytes(&SOCKET_CACHES), 40 * 2368 + 378 * 192);
        assert_eq!(slabs.bytes(&REGISTRATION_CACHES), 0);
    }

    #[test]
    fn this_process_can_be_measured() {
        let pid = std::process::id();
        let rss = vm_rss(pid).unwrap();
        assert!(rss > 0);
        let mappings = Mappings::read(pid).unwrap();
        assert!(mappings.anonymous > 0 && mappings.files > 0, "{mappings:?}");
        assert!(available().unwrap() > 0);
        let settled = settle(
            pid,
            Duration::from_millis(10),
            1.0,
            Duration::from_millis(100),
        )
        .unwrap();
        assert!(settled.settled && settled.rss > 0);
    }
}
