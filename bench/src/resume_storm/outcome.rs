//! What one run measured, and its verdict: whether every client came
//! back and every member received its room's whole stream exactly once.

use std::time::Duration;

use anyhow::bail;
use hdrhistogram::Histogram;

use super::args::Args;
use super::clients::{MemberResult, Timeline};
use super::probes::Probed;
use super::publishers::Published;
use super::tracker::Counts;

/// What one run measured, with the arguments it ran with.
pub(crate) struct Outcome {
    /// The arguments of the run.
    pub(super) args: Args,
    /// The server's URL.
    pub(super) url: String,
    /// The room history a `{config}` server was given.
    pub(super) history: Option<usize>,
    /// Source addresses the clients used.
    pub(super) sources: usize,
    /// What the storm clients' thread measured.
    pub(super) timeline: Timeline,
    /// What the publishers did.
    pub(super) published: Published,
    /// What the probes measured.
    pub(super) probed: Probed,
    /// Why the publishers' or the probes' thread failed, if one did.
    pub(super) thread_error: Option<String>,
}

/// A quantity over the clients, milliseconds: p50, p99, max.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Spread {
    /// The median.
    pub(super) p50: f64,
    /// The 99th percentile.
    pub(super) p99: f64,
    /// The largest.
    pub(super) max: f64,
}

impl Spread {
    /// The spread of `values`; zeros when empty.
    fn of(mut values: Vec<Duration>) -> Spread {
        values.sort_unstable();
        let at = |quantile: f64| {
            let index = ((values.len() as f64 * quantile).ceil() as usize).saturating_sub(1);
            values
                .get(index)
                .map_or(0.0, |value| value.as_secs_f64() * 1e3)
        };
        Spread {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl Outcome {
    /// The clients' counts summed.
    pub(super) fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for member in &self.timeline.members {
            counts.add(&member.counts);
        }
        counts
    }

    /// Clients back after the cut.
    pub(super) fn back(&self) -> usize {
        self.timeline
            .members
            .iter()
            .filter(|member| member.back_at.is_some())
            .count()
    }

    /// Clients that failed.
    pub(super) fn failed(&self) -> usize {
        self.timeline
            .members
            .iter()
            .filter(|member| member.failure.is_some())
            .count()
    }

    /// The first client failure, if any.
    pub(super) fn first_failure(&self) -> Option<&str> {
        self.timeline
            .members
            .iter()
            .find_map(|member| member.failure.as_deref())
    }

    /// Clients whose shard is known before the cut and once back, and
    /// those of them back on another shard.
    pub(super) fn placement(&self) -> (usize, usize) {
        let known: Vec<(usize, usize)> = self
            .timeline
            .members
            .iter()
            .filter_map(|member| Some((member.shards[0]?, member.shards[1]?)))
            .collect();
        let moved = known
            .iter()
            .filter(|(before, after)| before != after)
            .count();
        (known.len(), moved)
    }

    /// The spread of `span` over the clients that have one.
    fn spread(&self, span: impl Fn(&MemberResult) -> Option<Duration>) -> Spread {
        Spread::of(self.timeline.members.iter().filter_map(span).collect())
    }

    /// The spreads of the storm's parts, each client's from the cut to its
    /// being back, and its reconnection's (connect, upgrade and resume),
    /// and this split in two: connect and upgrade, then the `Resume`
    /// until the resumed `Welcome`. By name, in the order the results
    /// give them.
    pub(super) fn spreads(&self) -> [(&'static str, Spread); 4] {
        let between = |from: fn(&MemberResult) -> Option<Duration>,
                       to: fn(&MemberResult) -> Option<Duration>| {
            self.spread(move |member| Some(to(member)?.saturating_sub(from(member)?)))
        };
        [
            ("resume", self.spread(|member| member.back_at)),
            (
                "reconnection",
                between(|member| member.reconnect_at, |member| member.back_at),
            ),
            (
                "upgrade",
                between(|member| member.reconnect_at, |member| member.upgraded_at),
            ),
            (
                "resume_answer",
                between(|member| member.upgraded_at, |member| member.back_at),
            ),
        ]
    }

    /// The probes' window `index` (0: baseline, 1: storm).
    pub(super) fn window(&self, index: usize) -> &Histogram<u64> {
        &self.probed.windows[index]
    }

    /// Fails unless every client connected, came back and received its
    /// room's whole stream exactly once, with no recovery failure, and the
    /// probes did the same and measured both windows.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let counts = self.counts();
        let probes = self.probed.counts;
        let clients = self.args.clients as usize;
        let mut problems = Vec::new();
        if let Some(error) = &self.thread_error {
            problems.push(format!("a generator thread failed: {error}"));
        }
        if self.failed() > 0 {
            problems.push(format!(
                "{} clients failed (first: {})",
                self.failed(),
                self.first_failure().unwrap_or_default()
            ));
        }
        if self.back() < clients && self.failed() == 0 {
            problems.push(format!(
                "{} of {clients} clients back within --storm-timeout",
                self.back()
            ));
        }
        if counts.lost > 0 || counts.duplicated > 0 || counts.epoch_changes > 0 {
            problems.push(format!(
                "clients lost {} messages and received {} twice or out of order; {} epoch changes",
                counts.lost, counts.duplicated, counts.epoch_changes
            ));
        }
        if counts.recovery_failures() > 0 {
            problems.push(format!(
                "{} recovery failures: {} RecoveryFailed, {} without a session (no Welcome), {} rooms missing from the Welcome, {} rooms recovered with an error",
                counts.recovery_failures(),
                counts.recovery_failed,
                counts.no_session,
                counts.missing_room,
                counts.room_errors
            ));
        }
        if probes.lossy() || probes.duplicated > 0 || self.probed.unstamped > 0 {
            problems.push(format!(
                "probes lost {} messages, received {} twice or out of order, {} unstamped",
                probes.lost, probes.duplicated, self.probed.unstamped
            ));
        }
        if let Some(failure) = &self.probed.failure {
            problems.push(format!("a probe failed: {failure}"));
        }
        if problems.is_empty() && (self.window(0).is_empty() || self.window(1).is_empty()) {
            problems.push(
                "the probes measured no baseline or no storm (a storm shorter than a probe interval measures nothing: raise --probe-rate)"
                    .to_owned(),
            );
        }
        if !problems.is_empty() {
            bail!("invalid run: {}", problems.join("; "));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::proc_stat::CpuSpent;
    use crate::resume_storm::args::tests::args;
    use crate::resume_storm::probes::MAX_LATENCY_NANOS;

    #[test]
    fn spreads_are_nearest_rank_percentiles() {
        let millis = |values: std::ops::RangeInclusive<u64>| {
            values.map(Duration::from_millis).collect::<Vec<_>>()
        };
        let spread = Spread::of(millis(1..=100).into_iter().rev().collect());
        assert_eq!((spread.p50, spread.p99, spread.max), (50.0, 99.0, 100.0));
        assert_eq!(Spread::of(Vec::new()), Spread::default());
        assert_eq!(Spread::of(millis(7..=7)).p50, 7.0);
    }

    /// A client that came back `back_ms` after the cut, having begun to
    /// reconnect at `reconnect_ms`, from shard 0 to `shard`.
    pub(crate) fn member(
        reconnect_ms: u64,
        back_ms: u64,
        shard: usize,
        counts: Counts,
    ) -> MemberResult {
        MemberResult {
            counts,
            expected: counts.received + counts.lost,
            reconnect_at: Some(Duration::from_millis(reconnect_ms)),
            upgraded_at: Some(Duration::from_millis(reconnect_ms + 10)),
            back_at: Some(Duration::from_millis(back_ms)),
            retries: 0,
            shards: [Some(0), Some(shard)],
            failure: None,
        }
    }

    /// A run of `members`, its probes' windows full.
    pub(crate) fn outcome(members: Vec<MemberResult>) -> Outcome {
        let mut windows = [
            Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3).unwrap(),
            Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3).unwrap(),
        ];
        for micros in 1..=100 {
            windows[0].record(micros * 1000).unwrap();
            windows[1].record(micros * 2000).unwrap();
        }
        Outcome {
            args: args(&[
                "--clients",
                "3",
                "--rooms",
                "2",
                "--server",
                "shardcast serve --listen 127.0.0.1:{port} --shards 2 --config {config}",
            ]),
            url: "ws://127.0.0.1:1/".to_owned(),
            history: Some(1200),
            sources: 1,
            timeline: Timeline {
                driver: "io_uring",
                connect_seconds: 0.5,
                cut_seconds: 0.001,
                all_back_seconds: 0.9,
                baseline_seconds: 2.0,
                during_storm: 42,
                server_cpu: None,
                generator_cpu: Some(CpuSpent {
                    total: 0.45,
                    user: 0.3,
                }),
                listen_overflows: Some(0),
                members,
            },
            published: Published::default(),
            probed: Probed {
                windows,
                counts: Counts::default(),
                unstamped: 0,
                failure: None,
            },
            thread_error: None,
        }
    }

    #[test]
    fn losses_duplicates_failures_and_stragglers_fail_the_run() {
        let clean = Counts {
            received: 10,
            ..Counts::default()
        };
        let lossy = Counts {
            lost: 2,
            recovery_failed: 1,
            ..clean
        };
        let text = |outcome: &Outcome| format!("{:#}", outcome.check().unwrap_err());
        let failed = outcome(vec![member(0, 1, 0, clean), member(0, 1, 0, lossy)]);
        let message = text(&failed);
        assert!(message.contains("lost 2 messages"), "{message}");
        assert!(message.contains("1 RecoveryFailed"), "{message}");
        let duplicated = Counts {
            duplicated: 1,
            ..clean
        };
        assert!(text(&outcome(vec![member(0, 1, 0, duplicated)])).contains("1 twice"));
        let mut straggler = outcome(vec![member(0, 1, 0, clean)]);
        straggler.timeline.members[0].back_at = None;
        assert!(text(&straggler).contains("0 of 3 clients back"));
        let mut broken = outcome(vec![member(0, 1, 0, clean)]);
        broken.timeline.members[0].failure = Some("reset".to_owned());
        assert!(text(&broken).contains("first: reset"));
        let mut quiet = outcome(vec![member(0, 1, 0, clean); 3]);
        quiet.probed.windows[1].reset();
        assert!(text(&quiet).contains("no storm"));
    }
}
