//! How a run's outcome is shown: one JSON object, the tables for a
//! person, and the section of the report (BENCHMARKS.md) it writes.

use std::fmt::Write as _;

use clap::ValueEnum;
use serde_json::{Map, json};

use super::outcome::Outcome;
use crate::machine::Machine;
use crate::report_file::section_header;

/// The percentiles the results give: (name, quantile).
const QUANTILES: [(&str, f64); 2] = [("p50", 0.5), ("p99", 0.99)];

impl Outcome {
    /// The result as JSON: `scenario`, `params` (every input), `metrics`
    /// (flat, numeric, units in the names) and `diagnostics`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let args = &self.args;
        let timeline = &self.timeline;
        let counts = self.counts();
        let mut metrics = Map::new();
        let mut put = |name: &str, value: serde_json::Value| {
            metrics.insert(name.to_owned(), value);
        };
        put("clients", json!(args.clients));
        put("back", json!(self.back()));
        put("failed", json!(self.failed()));
        put(
            "retries",
            json!(timeline.members.iter().map(|m| m.retries).sum::<u64>()),
        );
        put("connect_seconds", json!(timeline.connect_seconds));
        put("cut_ms", json!(timeline.cut_seconds * 1e3));
        put("all_back_seconds", json!(timeline.all_back_seconds));
        for (name, spread) in self.spreads() {
            put(&format!("{name}_p50_ms"), json!(spread.p50));
            put(&format!("{name}_p99_ms"), json!(spread.p99));
            put(&format!("{name}_max_ms"), json!(spread.max));
        }
        put(
            "expected",
            json!(timeline.members.iter().map(|m| m.expected).sum::<u64>()),
        );
        put("received", json!(counts.received));
        put("recovered", json!(counts.recovered));
        put("lost", json!(counts.lost));
        put("duplicated", json!(counts.duplicated));
        put("epoch_changes", json!(counts.epoch_changes));
        put("recovery_failures", json!(counts.recovery_failures()));
        put("recovery_failed", json!(counts.recovery_failed));
        put("no_session", json!(counts.no_session));
        put("missing_room", json!(counts.missing_room));
        put("room_errors", json!(counts.room_errors));
        put("delivered_during_storm", json!(timeline.during_storm));
        let (placed, moved) = self.placement();
        put("placed", json!(placed));
        put("moved_shard", json!(moved));
        put("published", json!(self.published.storm));
        put("probe_published", json!(self.published.probes));
        put(
            "publish_max_lag_ms",
            json!(self.published.max_lag_nanos as f64 / 1e6),
        );
        put("baseline_seconds", json!(timeline.baseline_seconds));
        for (index, window) in ["baseline", "storm"].into_iter().enumerate() {
            let histogram = self.window(index);
            put(&format!("{window}_count"), json!(histogram.len()));
            for (name, quantile) in QUANTILES {
                let micros = histogram.value_at_quantile(quantile) as f64 / 1e3;
                put(&format!("{window}_{name}_us"), json!(micros));
            }
            put(
                &format!("{window}_max_us"),
                json!(histogram.max() as f64 / 1e3),
            );
        }
        let probes = self.probed.counts;
        put("probe_lost", json!(probes.lost + probes.epoch_changes));
        put("probe_duplicated", json!(probes.duplicated));
        if let Some(cpu) = timeline.server_cpu {
            put("server_cpu_seconds", json!(cpu.total));
            put(
                "server_core_share",
                json!(cpu.total / timeline.all_back_seconds.max(1e-9)),
            );
        }
        if let Some(cpu) = timeline.generator_cpu {
            put(
                "generator_core_share",
                json!(cpu.total / timeline.all_back_seconds.max(1e-9)),
            );
        }
        if let Some(overflows) = timeline.listen_overflows {
            put("listen_overflows", json!(overflows));
        }
        json!({
            "scenario": "resume-storm",
            "params": {
                "url": self.url,
                "server": args.served.server,
                "server_cores": args.served.started_cores().map(ToString::to_string),
                "history": self.history,
                "clients": args.clients,
                "rooms": args.rooms,
                "publishers": args.publishers,
                "rate": args.rate,
                "probes": args.probes,
                "probe_rate": args.probe_rate,
                "size": args.size,
                "jitter_ms": args.jitter_ms,
                "sources": self.sources,
                "concurrency": args.concurrency,
                "warmup_seconds": args.warmup,
                "baseline_seconds": args.baseline,
                "settle_seconds": args.settle,
                "connect_timeout": args.connect_timeout,
                "handshake_timeout": args.handshake_timeout,
                "storm_timeout": args.storm_timeout,
                "drain_timeout": args.drain_timeout,
                "cores": args.cores.as_ref().map(ToString::to_string),
                "driver": args.driver.to_possible_value().map(|value| value.get_name().to_owned()),
            },
            "metrics": metrics,
            "diagnostics": {
                "driver": timeline.driver,
                "first_failure": self.first_failure(),
                "thread_error": self.thread_error,
                "probe_failure": self.probed.failure,
            },
        })
    }

    /// The clients' table, in Markdown.
    fn storm_table(&self) -> String {
        let args = &self.args;
        let counts = self.counts();
        let [(_, resume), _, (_, upgrade), (_, answer)] = self.spreads();
        let mut out = String::from(
            "| clients | rooms | publishes/s | jitter | all back | back after the cut p50 / p99 / max | connect + upgrade p50 / p99 | Resume to Welcome p50 / p99 | delivered during the storm | recovered from history | lost | duplicated | recovery failures |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} ms | {:.2} s | {:.0} / {:.0} / {:.0} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {} | {} | {} | {} | {} |",
            args.clients,
            args.rooms,
            args.rate,
            args.jitter_ms,
            self.timeline.all_back_seconds,
            resume.p50,
            resume.p99,
            resume.max,
            upgrade.p50,
            upgrade.p99,
            answer.p50,
            answer.p99,
            self.timeline.during_storm,
            counts.recovered,
            counts.lost + counts.epoch_changes,
            counts.duplicated,
            counts.recovery_failures(),
        );
        out
    }

    /// The probes' table, in Markdown.
    fn probe_table(&self) -> String {
        let mut out = String::from(
            "| probe window | samples | p50 µs | p99 µs | max µs |\n|---|---|---|---|---|\n",
        );
        for (index, window) in ["before the storm", "during the storm"]
            .into_iter()
            .enumerate()
        {
            let histogram = self.window(index);
            let us = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1e3;
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "| {window} | {} | {:.0} | {:.0} | {:.0} |",
                histogram.len(),
                us(0.5),
                us(0.99),
                histogram.max() as f64 / 1e3,
            );
        }
        out
    }

    /// Prints the result for a person.
    pub(crate) fn print_human(&self) {
        let args = &self.args;
        println!(
            "resume-storm: {}, {} clients from {} source address(es) in {} rooms, {} publishers at {:.0} msg/s, {} probes at {:.0} msg/s, jitter {} ms, {} driver",
            self.url,
            args.clients,
            self.sources,
            args.rooms,
            args.publishers,
            args.rate,
            args.probes,
            args.probe_rate,
            args.jitter_ms,
            self.timeline.driver
        );
        print!("{}", self.storm_table());
        print!("{}", self.probe_table());
        let (placed, moved) = self.placement();
        println!("{moved} of {placed} clients back on another shard than before the cut");
        if let Some(failure) = self.first_failure() {
            println!("first client failure: {failure}");
        }
    }

    /// The report section: command, machine, method and the tables.
    pub(super) fn render(&self, command_line: &str, machine: &Machine) -> String {
        let args = &self.args;
        let mut out = section_header(
            "Session resume storm",
            "Generated by `shardcast-bench resume-storm`:",
            command_line,
            machine,
        );
        let server = match &args.served.server {
            Some(command) => {
                let shards = command
                    .split_whitespace()
                    .skip_while(|word| *word != "--shards")
                    .nth(1)
                    .map_or_else(String::new, |shards| format!(" with {shards} shards"));
                format!(
                    "`shardcast serve`{shards}, started for the run with the command above on a free port, under `taskset -c {}`{}",
                    args.served.server_cores,
                    self.history
                        .map(|history| format!(", its room history {history} messages"))
                        .unwrap_or_default()
                )
            }
            None => "a running `shardcast serve`".to_owned(),
        };
        let placement = match self.placement() {
            (0, _) => String::new(),
            (placed, moved) => format!(
                " The shards share one port (SO_REUSEPORT): the kernel places each connection on a shard by its source port, so a resume lands on its session's shard or another; asked with the `shardcast.shard` event, {moved} of {placed} clients were back on another shard than before the cut."
            ),
        };
        let cores = match &args.cores {
            Some(cores) => format!("pinned to cores {cores}"),
            None => "unpinned".to_owned(),
        };
        let sharing = if machine.cores <= 2 {
            format!(
                " This host has {} logical cores: the server and the generator's threads share them.",
                machine.cores
            )
        } else {
            String::new()
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "Method: {server}.{placement} {} shardcast.v1 clients, from {} source address(es) (127.0.0.2 up), join one of {} rooms each; {} publishers publish {} B payloads to the rooms at {:.0} messages/s in total, and {} probes, each in a room of its own, receive {:.0} messages/s in total; neither publishers nor probes are cut. After {} s of warm-up and a {} s baseline, every client's connection is cut at once with an RST (SO_LINGER 0); each reconnects after a uniform random delay of up to {} ms, sends `Resume` with its session, token and last position, and is back when the resumed `Welcome` arrives (\"back after the cut\"; its reconnection splits into \"connect + upgrade\", from its delay's end until its `Resume` is written, and \"Resume to Welcome\", until the resumed `Welcome` is read). Publishing goes on throughout, and for {} s after the last client is back; then every client and probe must have received every offset of its room exactly once, in order, from its join to the room's last message: \"lost\" counts the gaps, \"duplicated\" the repeats, and a `RecoveryFailed`, a room missing from the `Welcome` or recovered with an error counts as a recovery failure. \"Recovered from history\" counts the messages replayed after the resumed `Welcome`s. Probe latency counts from each publish's intended time to its delivery: before the storm (the baseline) and from the cut until the last client was back. The generator's three threads (clients, publishers, probes; {} driver) are {cores}.{sharing}\n",
            args.clients,
            self.sources,
            args.rooms,
            args.publishers,
            args.size,
            args.rate,
            args.probes,
            args.probe_rate,
            args.warmup,
            args.baseline,
            args.jitter_ms,
            args.settle,
            self.timeline.driver,
        );
        out.push_str(&self.storm_table());
        out.push('\n');
        out.push_str(&self.probe_table());
        out.push('\n');
        let retries: u64 = self.timeline.members.iter().map(|m| m.retries).sum();
        let _ = writeln!(
            out,
            "Reconnections that failed and were retried: {retries}; listen queue overflows during the storm (machine-wide): {}{}.\n",
            self.timeline
                .listen_overflows
                .map_or_else(|| "unknown".to_owned(), |count| count.to_string()),
            [
                ("server", self.timeline.server_cpu),
                ("generator", self.timeline.generator_cpu)
            ]
            .into_iter()
            .filter_map(|(whose, cpu)| Some(format!(
                "; {whose} CPU from the cut until the last client was back: {:.2} s ({:.0}% of a core)",
                cpu?.total,
                cpu?.total / self.timeline.all_back_seconds.max(1e-9) * 100.0
            )))
            .collect::<String>()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::machine::Machine;
    use crate::resume_storm::outcome::tests::{member, outcome};
    use crate::resume_storm::tracker::Counts;

    #[test]
    fn a_clean_storm_passes_and_is_reported() {
        let clean = Counts {
            received: 10,
            recovered: 3,
            ..Counts::default()
        };
        let outcome = outcome(vec![
            member(100, 300, 1, clean),
            member(200, 900, 0, clean),
            member(0, 50, 1, clean),
        ]);
        outcome.check().unwrap();
        assert_eq!(outcome.placement(), (3, 2));
        let json = outcome.to_json();
        assert_eq!(json["scenario"], "resume-storm");
        let metrics = &json["metrics"];
        assert_eq!(metrics["back"], 3);
        assert_eq!(metrics["received"], 30);
        assert_eq!(metrics["recovered"], 9);
        assert_eq!(metrics["lost"], 0);
        assert_eq!(metrics["resume_max_ms"], 900.0);
        assert_eq!(metrics["reconnection_max_ms"], 700.0);
        assert_eq!(metrics["upgrade_p99_ms"], 10.0);
        assert_eq!(metrics["resume_answer_max_ms"], 690.0);
        assert_eq!(metrics["moved_shard"], 2);
        assert!((metrics["storm_p50_us"].as_f64().unwrap() - 100.0).abs() < 0.5);
        let machine = Machine {
            cpu: "test CPU".to_owned(),
            cores: 2,
            kernel: "6.1".to_owned(),
            commit: "abc".to_owned(),
            rustc: "rustc".to_owned(),
        };
        let section = outcome.render("shardcast-bench resume-storm --clients 3", &machine);
        assert!(
            section.starts_with("## Session resume storm\n"),
            "{section}"
        );
        assert!(section.contains("    shardcast-bench resume-storm --clients 3\n"));
        assert!(section.contains("commit `abc`"), "{section}");
        assert!(section.contains("with 2 shards"), "{section}");
        assert!(
            section.contains("its room history 1200 messages"),
            "{section}"
        );
        assert!(section.contains("2 of 3 clients were back on another shard"));
        assert!(
            section.contains(
                "| 3 | 2 | 200 | 1000 ms | 0.90 s | 300 / 900 / 900 ms | 10.0 / 10.0 ms | 190.0 / 690.0 ms |"
            ),
            "{section}"
        );
        assert!(section.contains("| 42 | 9 | 0 | 0 | 0 |"), "{section}");
        assert!(section.contains("| before the storm | 100 | 50 | 99 | 100 |"));
        assert!(section.contains("share them"), "{section}");
        assert!(
            section.contains("; generator CPU from the cut until the last client was back: 0.45 s (50% of a core).\n"),
            "{section}"
        );
        assert!(!section.contains("server CPU"), "{section}");
        assert!((metrics["generator_core_share"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    }
}
