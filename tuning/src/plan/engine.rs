//! Each shard's io_uring and listener: ring size, SQPOLL, receive
//! buffers, backlog, and the `shardcast serve` config that carries them.

use std::time::Duration;

use serde::Serialize;

use super::cores::CorePlan;
use super::{Choice, PlanOptions, Target};
use crate::cpulist;
use crate::findings::MIN_BACKLOG;
use crate::serve_config::ServeConfig;
use crate::uring::UringReport;

/// The engine's default `io.ring_entries`, and the smallest a plan sets.
pub const MIN_RING_ENTRIES: u32 = 4096;

/// The kernel's largest completion queue; the engine asks for 4x the
/// submission entries, capped at this.
pub const MAX_CQ_ENTRIES: u64 = 65536;

/// The largest `io.ring_entries` a plan sets: the first whose completion
/// queue (4x) reaches [`MAX_CQ_ENTRIES`]; a larger ring adds submission
/// entries only, which a shard flushes when full anyway.
pub const MAX_RING_ENTRIES: u32 = 16384;

/// The engine's default `io.receive_buffers` per shard.
pub const RECEIVE_BUFFERS: u32 = 8;

/// The engine's default `io.receive_buffer_size`, in bytes.
pub const RECEIVE_BUFFER_SIZE: u32 = 32 * 1024;

/// The largest listen backlog a plan asks for: kernels before 5.4 keep it
/// in 16 bits, and a larger queue only delays the clients it holds.
pub const MAX_BACKLOG: u32 = 65535;

/// How long an idle SQPOLL thread spins before it sleeps: each poll
/// thread has a spare CPU of its own, so spinning through a lull costs
/// only power, while a sleeping poller costs the next send a wakeup
/// syscall. One second, as the kernel's own default.
pub const SQPOLL_IDLE: Duration = Duration::from_secs(1);

/// The engine settings of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnginePlan {
    /// The `shardcast serve` config.
    pub serve: ServeConfig,
    /// `io.ring_entries` (also in `serve`), for the memory estimate.
    pub ring_entries: u32,
    /// `server.backlog` (also in `serve`), for the sysctls that cap it.
    pub backlog: u32,
    /// The decisions, with reasons.
    pub choices: Vec<Choice>,
}

/// Connections each shard holds when the kernel spreads them evenly.
pub fn per_shard(connections: u64, shards: usize) -> u64 {
    connections.div_ceil(u64::try_from(shards.max(1)).unwrap_or(u64::MAX))
}

/// Submission queue entries for a shard holding `per_shard` connections:
/// each may complete a receive in one loop turn, and the completion queue
/// (4x the entries) should hold them all without overflowing into the
/// kernel's slower backlog; so the next power of two of a quarter of
/// them, within [`MIN_RING_ENTRIES`]..=[`MAX_RING_ENTRIES`].
pub fn ring_entries(per_shard: u64) -> u32 {
    let wanted = per_shard
        .div_ceil(4)
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX);
    u32::try_from(wanted.clamp(u64::from(MIN_RING_ENTRIES), u64::from(MAX_RING_ENTRIES)))
        .unwrap_or(MAX_RING_ENTRIES)
}

/// Bytes a shard pins for its ring with `entries` submission entries: 64
/// per SQE plus 4 for its index, 16 per CQE at 4x the entries (at most
/// [`MAX_CQ_ENTRIES`]), a page of ring headers, and the provided-buffer
/// ring's 16-byte descriptors.
pub fn pinned_bytes_per_shard(entries: u32) -> u64 {
    let entries = u64::from(entries);
    let cq_entries = (4 * entries).min(MAX_CQ_ENTRIES);
    entries * (64 + 4) + cq_entries * 16 + 4096 + u64::from(RECEIVE_BUFFERS) * 16
}

/// Chooses the engine settings for the cores chosen.
pub fn choose(cores: &CorePlan, uring: &UringReport, options: &PlanOptions) -> EnginePlan {
    let shards = cores.shard_cpus.len();
    let per_shard = per_shard(options.connections, shards);
    let entries = ring_entries(per_shard);
    let backlog =
        u32::try_from(per_shard.clamp(MIN_BACKLOG, u64::from(MAX_BACKLOG))).unwrap_or(MAX_BACKLOG);
    let mut choices = vec![
        Choice::new(
            "limits.max_connections",
            options.connections.to_string(),
            "the connections planned for (--connections); beyond it upgrades get 503",
        ),
        Choice::new(
            "server.backlog",
            backlog.to_string(),
            format!(
                "each shard listens: after a restart ~{per_shard} clients per shard reconnect at once (at least {MIN_BACKLOG}, at most {MAX_BACKLOG})"
            ),
        ),
        Choice::new(
            "io.ring_entries",
            entries.to_string(),
            format!(
                "~{per_shard} connections per shard may each complete a receive in one turn: the CQ (4x, at most 65536) holds them; next power of two in {MIN_RING_ENTRIES}..={MAX_RING_ENTRIES}"
            ),
        ),
        Choice::new(
            "io.receive_buffers",
            format!(
                "default ({RECEIVE_BUFFERS} x {} KiB)",
                RECEIVE_BUFFER_SIZE / 1024
            ),
            "kept: buffers are shared by all of a shard's connections and hold only bytes not yet parsed",
        ),
    ];
    if unavailable(uring) {
        choices.insert(
            0,
            Choice::new(
                "io_uring",
                "unavailable",
                "no ring could be set up here: the engine falls back to epoll and the io.* settings wait for io_uring (see inspect)",
            ),
        );
    }
    let (sqpoll, reason) = sqpoll(cores, uring, options.target);
    let sqpoll_cores = sqpoll.then(|| cores.spare_cpus[..shards].to_vec());
    choices.push(Choice::new(
        "io.sqpoll",
        if sqpoll { "true" } else { "false" },
        reason,
    ));
    if let Some(poll_cpus) = &sqpoll_cores {
        choices.push(Choice::new(
            "io.sqpoll_cores",
            cpulist::format(poll_cpus),
            "one spare CPU per shard's poll thread, siblings of shard cores first, so no shard shares its core with a spinner but its own",
        ));
        choices.push(Choice::new(
            "io.sqpoll_idle",
            format!("{}ms", SQPOLL_IDLE.as_millis()),
            "the poll CPUs are the threads' own: spinning through a lull costs only power, sleeping costs the next send a syscall",
        ));
    }
    choices.push(Choice::new(
        "rooms.batch_deliveries",
        "false",
        "off: on, shardcast.v1 clients receive Batch envelopes instead of single messages; that changes what clients see, not a tuning choice",
    ));
    let serve = ServeConfig {
        listen: options.listen.clone(),
        shards: Some(shards),
        cores: Some(cores.shard_cpus.clone()),
        pin_cores: Some(true),
        backlog: Some(backlog),
        max_connections: Some(usize::try_from(options.connections).unwrap_or(usize::MAX)),
        ring_entries: Some(entries),
        receive_buffers: None,
        receive_buffer_size: None,
        sqpoll: Some(sqpoll),
        sqpoll_idle: sqpoll.then_some(SQPOLL_IDLE),
        sqpoll_cores,
        batch_deliveries: Some(false),
    };
    if !options.listen.is_empty() {
        choices.insert(
            0,
            Choice::new(
                "server.listen",
                options.listen.join(", "),
                "--listen; every shard listens on each with SO_REUSEPORT",
            ),
        );
    }
    EnginePlan {
        serve,
        ring_entries: entries,
        backlog,
        choices,
    }
}

/// Whether the probe found io_uring unusable here (setup refused, or
/// switched off by `kernel.io_uring_disabled`).
fn unavailable(uring: &UringReport) -> bool {
    uring.setup == Some(false) || uring.disabled_sysctl == Some(2)
}

/// Whether each shard gets a kernel thread polling its submission queue,
/// and why: only for latency, only where the probe saw SQPOLL permitted,
/// and only with a spare CPU per shard to spin on.
fn sqpoll(cores: &CorePlan, uring: &UringReport, target: Target) -> (bool, String) {
    let shards = cores.shard_cpus.len();
    if target == Target::Throughput {
        return (
            false,
            "throughput target: a submit syscall per loop turn costs less than a CPU spinning per shard".into(),
        );
    }
    if unavailable(uring) {
        return (false, "io_uring is unavailable here, so is SQPOLL".into());
    }
    match uring.has("sqpoll") {
        Some(true) => {}
        Some(false) => {
            return (
                false,
                "the io_uring probe was refused SQPOLL here (seccomp, container policy or pre-5.11 without root)".into(),
            );
        }
        None => {
            return (
                false,
                format!(
                    "SQPOLL is not known to be permitted: io_uring {} (run plan on the host)",
                    uring.source
                ),
            );
        }
    }
    if cores.spare_cpus.len() < shards {
        return (
            false,
            format!(
                "{shards} shards need {shards} spare CPUs for poll threads, only {} left",
                cores.spare_cpus.len()
            ),
        );
    }
    (
        true,
        "latency target, SQPOLL permitted and a spare CPU per shard: sends leave without a syscall"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::cores;
    use crate::plan::tests::{fixture, options};

    fn engine(name: &str, connections: u64, target: Target) -> EnginePlan {
        let report = fixture(name, connections);
        let cores = cores::choose(&report.topology, &report.network, None, false)
            .unwrap()
            .0;
        choose(&cores, &report.io_uring, &options(connections, target))
    }

    #[test]
    fn ring_entries_follow_connections_per_shard() {
        assert_eq!(ring_entries(0), 4096);
        assert_eq!(ring_entries(16_384), 4096);
        assert_eq!(ring_entries(16_385), 8192);
        assert_eq!(ring_entries(32_768), 8192);
        assert_eq!(ring_entries(50_000), 16384);
        assert_eq!(ring_entries(1_000_000), 16384);
        assert_eq!(per_shard(100_000, 12), 8334);
    }

    #[test]
    fn epyc_sizes_rings_and_keeps_sqpoll_off_when_not_probed() {
        let plan = engine("epyc-16c", 100_000, Target::Latency);
        // 100 000 / 16 = 6250 per shard: a CQ of 16384 holds them.
        assert_eq!(plan.ring_entries, 4096);
        assert_eq!(plan.backlog, 6250);
        assert_eq!(plan.serve.sqpoll, Some(false));
        assert_eq!(plan.serve.sqpoll_cores, None);
        let reason = &plan
            .choices
            .iter()
            .find(|c| c.setting == "io.sqpoll")
            .unwrap()
            .reason;
        assert!(reason.contains("not probed"), "{reason}");
    }

    #[test]
    fn xeon_latency_polls_on_the_shard_cores_siblings() {
        let plan = engine("xeon-2s", 100_000, Target::Latency);
        assert_eq!(plan.serve.sqpoll, Some(true));
        assert_eq!(plan.serve.sqpoll_cores, Some((36..=47).collect()));
        assert_eq!(plan.serve.sqpoll_idle, Some(SQPOLL_IDLE));
        // 12 shards: 8334 per shard.
        assert_eq!(plan.ring_entries, 4096);
        // 50 000 per shard: the largest CQ the kernel gives.
        let plan = engine("xeon-2s", 600_000, Target::Latency);
        assert_eq!(plan.ring_entries, 16384);
        let plan = engine("xeon-2s", 100_000, Target::Throughput);
        assert_eq!(plan.serve.sqpoll, Some(false));
        assert_eq!(plan.serve.sqpoll_cores, None);
    }

    #[test]
    fn this_machine_has_no_spare_cpu_to_poll_on() {
        let plan = engine("this-machine", 40_000, Target::Latency);
        assert_eq!(plan.serve.sqpoll, Some(false));
        assert_eq!(plan.ring_entries, 8192);
        assert_eq!(plan.backlog, 20_000);
        assert_eq!(plan.serve.batch_deliveries, Some(false));
    }

    #[test]
    fn says_when_io_uring_is_unavailable() {
        let report = fixture("xeon-2s", 1000);
        let cores = cores::choose(&report.topology, &report.network, None, false)
            .unwrap()
            .0;
        let mut uring = report.io_uring.clone();
        let said = |plan: &EnginePlan| plan.choices.iter().any(|c| c.setting == "io_uring");
        let plan = choose(&cores, &uring, &options(1000, Target::Latency));
        assert!(!said(&plan));
        assert_eq!(plan.serve.sqpoll, Some(true));
        uring.disabled_sysctl = Some(2);
        let plan = choose(&cores, &uring, &options(1000, Target::Latency));
        assert!(said(&plan));
        assert_eq!(plan.serve.sqpoll, Some(false));
    }

    #[test]
    fn small_servers_keep_the_floor() {
        let plan = engine("epyc-16c", 1000, Target::Throughput);
        assert_eq!(plan.ring_entries, MIN_RING_ENTRIES);
        assert_eq!(plan.backlog, 4096);
    }
}
