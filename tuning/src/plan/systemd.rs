//! The systemd drop-in for `shardcast.service`: the open file limit for N
//! connections, the locked memory the rings pin, the CPUs the service may
//! run on, and the config file it reads.
//!
//! A limit is never lowered below what the host grants now: the drop-in
//! would otherwise take from the service what it already had.

use std::fmt::Write as _;

use serde::Serialize;

use super::engine::{self, EnginePlan};
use super::{Choice, SERVE_CONFIG_PATH};
use crate::cpulist;
use crate::findings::FD_MARGIN;
use crate::limits::Limits;

/// The smallest `LimitMEMLOCK` a plan sets, as inspect judges it: room for
/// rings on kernels that charge them to the limit, whatever the count.
pub const MIN_MEMLOCK: u64 = 64 << 20;

/// The drop-in's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropIn {
    /// `LimitNOFILE=`: one descriptor per connection, plus margin.
    pub limit_nofile: u64,
    /// `LimitMEMLOCK=` in bytes; `None` is `infinity`.
    pub limit_memlock: Option<u64>,
    /// `CPUAffinity=`: shard CPUs and SQPOLL CPUs.
    pub cpu_affinity: Vec<u32>,
    /// One comment line per setting, written above it.
    pub reasons: [String; 3],
}

impl DropIn {
    /// The drop-in file's text.
    pub fn file_text(&self) -> String {
        let mut out = String::from(
            "# Written by shardcast-tune plan: the limits and CPUs of shardcast.service.\n[Service]\n",
        );
        let memlock = self
            .limit_memlock
            .map_or_else(|| "infinity".to_owned(), |b| b.to_string());
        let _ = writeln!(
            out,
            "# {}\nLimitNOFILE={}\n# {}\nLimitMEMLOCK={memlock}\n# {}\nCPUAffinity={}",
            self.reasons[0],
            self.limit_nofile,
            self.reasons[1],
            self.reasons[2],
            cpulist::format(&self.cpu_affinity)
        );
        let _ = writeln!(
            out,
            "# The config this plan wrote, read by shardcast serve.\nEnvironment=SHARDCAST_CONFIG={SERVE_CONFIG_PATH}"
        );
        out
    }
}

/// Rounds bytes up to whole MiB.
fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20).saturating_mul(1 << 20)
}

/// Chooses the drop-in for `connections` connections on `shards` shards
/// shaped as `engine` says.
pub fn choose(
    limits: &Limits,
    connections: u64,
    shards: usize,
    engine: &EnginePlan,
) -> (DropIn, Vec<Choice>) {
    let need_files = connections.saturating_add(FD_MARGIN);
    let hard_files = limits.nofile.and_then(|l| l.hard);
    let (limit_nofile, nofile_reason) = match hard_files {
        Some(hard) if hard > need_files => (
            hard,
            format!(
                "{connections} connections + {FD_MARGIN} spare need {need_files}; the hard limit here is already {hard}, kept"
            ),
        ),
        _ => (
            need_files,
            format!("one descriptor per connection: {connections} + {FD_MARGIN} spare"),
        ),
    };
    let pinned = engine::pinned_bytes_per_shard(engine.ring_entries)
        .saturating_mul(u64::try_from(shards).unwrap_or(u64::MAX));
    let want = MIN_MEMLOCK.max(round_up_mib(pinned.saturating_mul(2)));
    let current = limits.memlock.map(|l| l.soft);
    let (limit_memlock, memlock_reason) = match current {
        Some(None) => (
            None,
            format!(
                "rings pin ~{} KiB; the limit here is already unlimited, kept",
                pinned.div_ceil(1024)
            ),
        ),
        Some(Some(soft)) if soft > want => (
            Some(soft),
            format!(
                "rings pin ~{} KiB; the limit here is already {} MiB, kept",
                pinned.div_ceil(1024),
                soft >> 20
            ),
        ),
        _ => (
            Some(want),
            format!(
                "{shards} rings of {} entries pin ~{} KiB (charged to memlock before 5.12): twice that, at least {} MiB",
                engine.ring_entries,
                pinned.div_ceil(1024),
                MIN_MEMLOCK >> 20
            ),
        ),
    };
    let mut cpu_affinity = engine.serve.cores.clone().unwrap_or_default();
    cpu_affinity.extend(engine.serve.sqpoll_cores.iter().flatten());
    cpu_affinity.sort_unstable();
    cpu_affinity.dedup();
    let affinity_reason = if engine.serve.sqpoll_cores.is_some() {
        "the shard CPUs and the SQPOLL threads' CPUs (a poll thread must be allowed where it is pinned)"
    } else {
        "the shard CPUs: other threads of the service stay off the rest of the host"
    };
    let choices = vec![
        Choice::new(
            "LimitNOFILE",
            limit_nofile.to_string(),
            nofile_reason.clone(),
        ),
        Choice::new(
            "LimitMEMLOCK",
            limit_memlock.map_or_else(|| "infinity".to_owned(), |b| format!("{} MiB", b >> 20)),
            memlock_reason.clone(),
        ),
        Choice::new(
            "CPUAffinity",
            cpulist::format(&cpu_affinity),
            affinity_reason,
        ),
        Choice::new(
            "SHARDCAST_CONFIG",
            SERVE_CONFIG_PATH,
            "the drop-in points the service at the planned config",
        ),
    ];
    (
        DropIn {
            limit_nofile,
            limit_memlock,
            cpu_affinity,
            reasons: [nofile_reason, memlock_reason, affinity_reason.to_owned()],
        },
        choices,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{fixture, options};
    use crate::plan::{Target, plan};

    #[test]
    fn epyc_raises_nofile_and_memlock() {
        let plan = plan(
            &fixture("epyc-16c", 600_000),
            &options(600_000, Target::Throughput),
        )
        .unwrap();
        // systemd defaults: NOFILE 1024 / 524288, MEMLOCK 8 MiB; 16 rings of
        // 16384 entries pin ~33 MiB, twice that is beyond the 64 MiB floor.
        assert_eq!(plan.drop_in.limit_nofile, 604_096);
        let pinned = 16 * engine::pinned_bytes_per_shard(16384);
        assert_eq!(plan.drop_in.limit_memlock, Some(round_up_mib(2 * pinned)));
        assert!(plan.drop_in.limit_memlock > Some(MIN_MEMLOCK));
        assert_eq!(plan.drop_in.cpu_affinity, (0..=15).collect::<Vec<_>>());
        let text = plan.drop_in.file_text();
        assert!(text.contains("\nLimitNOFILE=604096\n"), "{text}");
        assert!(text.contains("\nCPUAffinity=0-15\n"), "{text}");
        assert!(text.contains("\nEnvironment=SHARDCAST_CONFIG=/etc/shardcast/shardcast.toml\n"));
        // 100 000 connections: the hard limit of 524288 is kept, and the
        // rings need less than the floor.
        let plan = plan_for("epyc-16c", 100_000);
        assert_eq!(plan.drop_in.limit_nofile, 524_288);
        assert_eq!(plan.drop_in.limit_memlock, Some(MIN_MEMLOCK));
        assert!(
            plan.drop_in
                .file_text()
                .contains("\nLimitMEMLOCK=67108864\n")
        );
    }

    fn plan_for(name: &str, connections: u64) -> crate::plan::Plan {
        plan(
            &fixture(name, connections),
            &options(connections, Target::Throughput),
        )
        .unwrap()
    }

    #[test]
    fn xeon_keeps_larger_limits_and_allows_poll_cpus() {
        let plan = plan(
            &fixture("xeon-2s", 100_000),
            &options(100_000, Target::Latency),
        )
        .unwrap();
        // NOFILE 1048576 and MEMLOCK unlimited are kept, not lowered.
        assert_eq!(plan.drop_in.limit_nofile, 1_048_576);
        assert_eq!(plan.drop_in.limit_memlock, None);
        assert!(
            plan.drop_in
                .file_text()
                .contains("\nLimitMEMLOCK=infinity\n")
        );
        let mut affinity: Vec<u32> = (12..=23).collect();
        affinity.extend(36..=47);
        assert_eq!(plan.drop_in.cpu_affinity, affinity);
    }

    #[test]
    fn memlock_grows_with_rings() {
        assert_eq!(round_up_mib(1), 1 << 20);
        assert_eq!(round_up_mib(1 << 20), 1 << 20);
        // 16384 entries: 68 B SQ + 64 B CQ per entry = ~2.1 MiB per shard;
        // at 32768 the CQ stops at 65536 entries: 68 B + 32 B per entry.
        assert!(engine::pinned_bytes_per_shard(16384) > 2 << 20);
        assert_eq!(
            engine::pinned_bytes_per_shard(32768),
            32768 * 68 + 65536 * 16 + 4096 + 8 * 16
        );
    }
}
