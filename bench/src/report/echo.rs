//! The echo section: messages/s, server CPU per message and how busy
//! each side was, per server and load shape, with the project's goals
//! against uWebSockets.js and tokio-tungstenite.

use std::fmt::Write as _;

use super::{Better, Grid, PlotTarget, goal_line, ratio_text};
use crate::plot::{Chart, Scale, Series};
use crate::stats::format_rate;

/// The server that measures the generator's ceiling: `compare` runs
/// `shardcast-bench trivial-echo` under this name.
pub(crate) const CEILING: &str = "trivial-echo";

/// A server driven at this share of the ceiling or above was limited by
/// the generator.
const GENERATOR_BOUND: f64 = 0.9;

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

/// The generator's ceiling: what it drove the trivial echo server at, and
/// each server's messages/s as a share of it.
fn ceiling(grid: &Grid<'_>) -> String {
    if !grid.servers.iter().any(|server| server == CEILING) {
        return String::new();
    }
    let mut out = format!(
        "### The generator's ceiling\n\n`{CEILING}` is `shardcast-bench trivial-echo`, the cheapest echo the generator accepts (no limits, no checks, one write per read), placed like the others: the generator drives nothing faster on its cores. Each server's messages/s as a share of it; at {:.0}% or more the generator, not the server, set the figure, and CPU per message is the figure to compare.\n\n",
        GENERATOR_BOUND * 100.0
    );
    out.push_str(
        &grid.table("Share of the generator's ceiling", &|server, label| {
            let ceiling = grid.median(CEILING, label, "messages_per_second")?;
            let rate = grid.median(server, label, "messages_per_second")?;
            let share = rate / ceiling;
            Some(if server == CEILING {
                format!("{} (the ceiling)", format_rate(ceiling))
            } else if share >= GENERATOR_BOUND {
                format!("{:.0}%, generator-bound", share * 100.0)
            } else {
                format!("{:.0}%", share * 100.0)
            })
        }),
    );
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
            let series = grid
                .servers
                .iter()
                .map(|server| {
                    let mut points: Vec<(f64, f64)> = grid
                        .labels
                        .iter()
                        .filter(|label| grid.param(label, "size") == Some(size))
                        .filter_map(|label| {
                            Some((
                                grid.param(label, "connections")?,
                                grid.median(server, label, "messages_per_second")?,
                            ))
                        })
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Series {
                        name: server.clone(),
                        points,
                    }
                })
                .filter(|series| !series.points.is_empty())
                .collect();
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
    #[test]
    fn servers_near_the_ceiling_are_marked_generator_bound() {
        let records = [
            run("shardcast", "100 × 32 B", 100, 150_000.0, 5.0),
            run(CEILING, "100 × 32 B", 100, 160_000.0, 3.0),
            run("ws", "100 × 32 B", 100, 40_000.0, 20.0),
        ];
        let grid = Grid::new(records.iter().collect(), "shardcast");
        let text = ceiling(&grid);
        assert!(
            text.contains("| shardcast | 94%, generator-bound |"),
            "{text}"
        );
        assert!(
            text.contains("| trivial-echo | 160.0k (the ceiling) |"),
            "{text}"
        );
        assert!(text.contains("| ws | 25% |"), "{text}");
    }

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
        assert!(!text.contains("ceiling"), "{text}");
        let charts = charts(&grid);
        assert_eq!(charts.len(), 1);
        assert_eq!(charts[0].0, "32B");
        assert_eq!(
            charts[0].1.series[0].points,
            [(100.0, 150_000.0), (1000.0, 120_000.0)]
        );
    }
}
