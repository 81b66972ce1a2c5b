//! The echo section: messages/s, server CPU per message and how busy
//! each side was, per server and load shape, with the project's goals
//! against uWebSockets.js and tokio-tungstenite.

use std::fmt::Write as _;

use super::{Better, Grid, PlotTarget, goal_line, ratio_text};
use crate::plot::{Chart, Scale};
use crate::stats::format_rate;

/// The name `bench/publish` runs `shardcast-bench trivial-echo` under: a
/// reference, not a peer, so no goal is held against it.
pub(crate) const TRIVIAL_ECHO: &str = "trivial-echo";

/// A server driven at this share of the generator's ceiling or above,
/// while the generator was this busy or more, was limited by the
/// generator.
const GENERATOR_BOUND: (f64, f64) = (0.9, 0.95);

/// The goals of issue 5: shardcast's echo throughput against two peers.
const GOALS: [(&str, f64); 2] = [("uWebSockets.js", 1.3), ("tokio-tungstenite", 3.0)];

/// Renders the section.
pub(super) fn render(grid: &Grid<'_>, target: Option<&PlotTarget>) -> anyhow::Result<String> {
    let mut out = grid.header("Echo throughput against peer servers");
    let first = grid.first();
    writeln!(
        out,
        "Method: each server pinned with `taskset` and restarted for every run; the load (shardcast-bench echo on monoio's {} driver, one thread pinned to each of its cores) opens N connections that each keep {} message(s) in flight and send the next when an echo arrives, every echo checked against what was sent; {} s warm-up, {} s measured; servers in a fresh shuffled order for every scenario and round. Server CPU comes from /proc/PID/stat over the measured window, every thread of the server counted.\n",
        first.metrics["driver"].as_str().unwrap_or("unknown"),
        first.param("in_flight").unwrap_or(1.0),
        first.param("warmup_seconds").unwrap_or(f64::NAN),
        first.param("duration_seconds").unwrap_or(f64::NAN),
    )?;
    out.push_str(&grid.table("Messages/s", &|server, label| {
        let rate = grid.median(server, label, "messages_per_second")?;
        let ratio = grid.ratio(server, label, "messages_per_second", Better::Higher, true);
        Some(format!("{}{}", format_rate(rate), ratio_text(ratio)))
    }));
    out.push_str(&grid.table(
        "Server CPU per echoed message, µs: user + sys (user)",
        &|server, label| {
            let total = grid.median(server, label, "server_cpu_us_per_message")?;
            let user = grid.median(server, label, "server_user_us_per_message")?;
            let ratio = grid.ratio(
                server,
                label,
                "server_cpu_us_per_message",
                Better::Lower,
                false,
            );
            Some(format!("{total:.2} ({user:.2}){}", ratio_text(ratio)))
        },
    ));
    out.push_str(&grid.table(
        "CPU used, in cores (100% is one core): server / load generator",
        &|server, label| {
            let server_share = grid.median(server, label, "server_core_share")?;
            let load_share = grid.median(server, label, "generator_core_share")?;
            Some(format!(
                "{:.0}% / {:.0}%",
                server_share * 100.0,
                load_share * 100.0
            ))
        },
    ));
    out.push_str(
        "A server using less than its cores while the generator uses nearly all of its own was limited by the generator: compare CPU per message then, not messages/s.\n\n",
    );
    out.push_str(&ceiling(grid));
    if let Some(target) = target {
        for chart in charts(grid) {
            let file = format!("echo-throughput-{}.svg", chart.0);
            out.push_str(&target.draw(&chart.1, &file)?);
        }
    }
    out.push_str(&goals(grid));
    Ok(out)
}

/// Where the generator was the limit: its ceiling at each shape is the
/// most it drove any server at, and a server near it while the generator
/// was nearly saturated ran into the generator.
fn ceiling(grid: &Grid<'_>) -> String {
    let best = |label: &str| {
        grid.servers
            .iter()
            .filter_map(|server| Some((grid.median(server, label, "messages_per_second")?, server)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let mut out = format!(
        "### Where the generator was the limit\n\nOne load core drives one server core here, and on loopback a message costs the sender and the receiver about the same in the kernel, so the generator can saturate before the fastest servers do. Its ceiling at a shape is the most it drove any server at in this session. A server at {:.0}% of that or more while the generator used {:.0}% of its core or more met the generator's limit, not its own: its CPU per message is the figure to compare, and on a host with more cores `--load-cores` gives the load more.\n\n",
        GENERATOR_BOUND.0 * 100.0,
        GENERATOR_BOUND.1 * 100.0
    );
    for label in &grid.labels {
        if let Some((rate, server)) = best(label) {
            let _ = writeln!(out, "- {label}: ceiling {} ({server})", format_rate(rate));
        }
    }
    out.push('\n');
    out.push_str(&grid.table(
        "Share of the generator's ceiling; load generator's CPU",
        &|server, label| {
            let (ceiling, _) = best(label)?;
            let rate = grid.median(server, label, "messages_per_second")?;
            let load = grid.median(server, label, "generator_core_share")?;
            let share = rate / ceiling;
            let bound = share >= GENERATOR_BOUND.0 && load >= GENERATOR_BOUND.1;
            Some(format!(
                "{:.0}%; {:.0}%{}",
                share * 100.0,
                load * 100.0,
                if bound { ", generator-bound" } else { "" }
            ))
        },
    ));
    out
}

/// One chart per payload size: messages/s against connections, a line
/// per server; named by the size in bytes.
fn charts(grid: &Grid<'_>) -> Vec<(String, Chart)> {
    let mut sizes: Vec<f64> = grid
        .labels
        .iter()
        .filter_map(|label| grid.param(label, "size"))
        .collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    sizes
        .into_iter()
        .map(|size| {
            let series = grid.series(
                &|label| grid.param(label, "size") == Some(size),
                &|_, label| grid.param(label, "connections"),
                "messages_per_second",
            );
            let size_label = crate::scenario::size_text(size as usize);
            (
                format!("{size}B"),
                Chart {
                    title: format!("Echo throughput, {size_label} messages"),
                    x_label: "connections".into(),
                    y_label: "messages/s".into(),
                    x_scale: Scale::Log,
                    y_scale: Scale::Linear,
                    series,
                },
            )
        })
        .collect()
}

/// The goals' verdicts, for the peers that ran.
fn goals(grid: &Grid<'_>) -> String {
    let Some(baseline) = &grid.baseline else {
        return String::new();
    };
    let mut out = String::new();
    for (peer, goal) in GOALS {
        if !grid.servers.iter().any(|server| server == peer) {
            continue;
        }
        for label in &grid.labels {
            if let Some(ratio) =
                grid.ratio(peer, label, "messages_per_second", Better::Higher, true)
            {
                out.push_str(&goal_line(
                    ratio >= goal,
                    &format!("{label}: {baseline} {ratio:.2}x {peer} (goal {goal}x)"),
                ));
            }
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("### Goals\n\n{out}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::record::tests::record;
    use serde_json::json;

    fn run(server: &str, label: &str, connections: u32, rate: f64, cpu: f64) -> Record {
        let mut record = record(
            server,
            1,
            json!({
                "driver": "io_uring",
                "messages_per_second": rate,
                "server_cpu_us_per_message": cpu,
                "server_user_us_per_message": cpu / 4.0,
                "server_core_share": 1.0,
                "generator_core_share": 0.9,
            }),
        );
        record.label = label.into();
        record.params = json!({"connections": connections, "size": 32, "in_flight": 1,
            "warmup_seconds": 3.0, "duration_seconds": 10.0});
        record
    }

    #[test]
    fn servers_near_the_ceiling_with_a_saturated_generator_are_generator_bound() {
        let mut saturated = run("shardcast", "100 × 32 B", 100, 150_000.0, 5.0);
        saturated.metrics["generator_core_share"] = 0.98.into();
        let records = [
            saturated,
            run("fastwebsockets", "100 × 32 B", 100, 160_000.0, 5.5),
            run("ws", "100 × 32 B", 100, 40_000.0, 20.0),
        ];
        let grid = Grid::new(records.iter().collect(), "shardcast");
        let text = ceiling(&grid);
        assert!(
            text.contains("- 100 × 32 B: ceiling 160.0k (fastwebsockets)"),
            "{text}"
        );
        assert!(
            text.contains("| shardcast | 94%; 98%, generator-bound |"),
            "{text}"
        );
        assert!(text.contains("| fastwebsockets | 100%; 90% |"), "{text}");
        assert!(text.contains("| ws | 25%; 90% |"), "{text}");
    }

    #[test]
    fn tables_ratios_and_goals() {
        let records = [
            run("shardcast", "100 × 32 B", 100, 150_000.0, 5.0),
            run("uWebSockets.js", "100 × 32 B", 100, 100_000.0, 10.0),
            run("tokio-tungstenite", "100 × 32 B", 100, 60_000.0, 20.0),
            run("shardcast", "1000 × 32 B", 1000, 120_000.0, 6.0),
            run("uWebSockets.js", "1000 × 32 B", 1000, 100_000.0, 12.0),
        ];
        let grid = Grid::new(records.iter().collect(), "shardcast");
        let text = render(&grid, None).unwrap();
        assert!(text.contains("| shardcast | 150.0k | 120.0k |"), "{text}");
        assert!(
            text.contains("| uWebSockets.js | 100.0k, 1.50x | 100.0k, 1.20x |"),
            "{text}"
        );
        assert!(
            text.contains("| uWebSockets.js | 10.00 (2.50), 2.00x |"),
            "{text}"
        );
        assert!(
            text.contains("| tokio-tungstenite | 60.0k, 2.50x | - |"),
            "{text}"
        );
        assert!(text.contains("| shardcast | 100% / 90% |"), "{text}");
        assert!(text.contains("3 s warm-up, 10 s measured"), "{text}");
        assert!(
            text.contains("- met: 100 × 32 B: shardcast 1.50x uWebSockets.js (goal 1.3x)"),
            "{text}"
        );
        assert!(
            text.contains("- missed: 1000 × 32 B: shardcast 1.20x uWebSockets.js"),
            "{text}"
        );
        assert!(
            text.contains("- missed: 100 × 32 B: shardcast 2.50x tokio-tungstenite (goal 3x)"),
            "{text}"
        );
        assert!(
            text.contains("- 100 × 32 B: ceiling 150.0k (shardcast)"),
            "{text}"
        );
        assert!(text.contains("| shardcast | 100%; 90% |"), "{text}");
        assert!(text.contains("| uWebSockets.js | 67%; 90% |"), "{text}");
        let charts = charts(&grid);
        assert_eq!(charts.len(), 1);
        assert_eq!(charts[0].0, "32B");
        assert_eq!(
            charts[0].1.series[0].points,
            [(100.0, 150_000.0), (1000.0, 120_000.0)]
        );
    }
}
