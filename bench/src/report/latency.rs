//! The latency section: percentiles of open-loop echo at offered rates
//! (shares of each server's own maximum), with the goal that shardcast's
//! p99 at half its maximum is below every peer's at half theirs.

use std::fmt::Write as _;

use super::{Better, Grid, PlotTarget, goal_line, ratio_text};
use crate::plot::{Chart, Scale};
use crate::stats::format_rate;

/// The label suffix of the goal's load.
const GOAL_LOAD: &str = "at 50% of max";

/// Renders the section.
pub(super) fn render(grid: &Grid<'_>, target: Option<&PlotTarget>) -> anyhow::Result<String> {
    let mut out = grid.header("Latency at a fixed offered load");
    let first = grid.first();
    writeln!(
        out,
        "Method: open loop. Messages leave on a fixed schedule spread over the connections, whatever the replies do; each carries its intended send time and latency counts from it, so a stall is not hidden (coordinated omission corrected). A share of max is that share of the server's own median echo messages/s at the same shape, measured in the same session. {} s warm-up, {} s measured; every echo checked. Percentiles from an HdrHistogram.\n",
        first.param("warmup_seconds").unwrap_or(f64::NAN),
        first.param("duration_seconds").unwrap_or(f64::NAN),
    )?;
    out.push_str(
        &grid.table("p50 / p99, µs (offered messages/s)", &|server, label| {
            let p50 = grid.median(server, label, "p50_us")?;
            let p99 = grid.median(server, label, "p99_us")?;
            let offered = grid.median(server, label, "offered_rate")?;
            let ratio = grid.ratio(server, label, "p99_us", Better::Lower, true);
            Some(format!(
                "{p50:.0} / {p99:.0}{} ({})",
                ratio_text(ratio),
                format_rate(offered)
            ))
        }),
    );
    out.push_str(&grid.table("p99.9 / max, µs", &|server, label| {
        let p999 = grid.median(server, label, "p999_us")?;
        let max = grid.median(server, label, "max_us")?;
        Some(format!("{p999:.0} / {max:.0}"))
    }));
    out.push_str(&grid.table(
        "Achieved share of the offered rate; generator's send lag p99 (µs); CPU used: server / load",
        &|server, label| {
            let offered = grid.median(server, label, "offered_rate")?;
            let achieved = grid.median(server, label, "achieved_rate")?;
            let lag = grid.median(server, label, "schedule_lag_p99_us")?;
            let server_share = grid.median(server, label, "server_core_share")?;
            let load_share = grid.median(server, label, "generator_core_share")?;
            Some(format!(
                "{:.0}%; {lag:.0}; {:.0}% / {:.0}%",
                achieved / offered * 100.0,
                server_share * 100.0,
                load_share * 100.0
            ))
        },
    ));
    out.push_str("This machine stalls for a millisecond or two now and then with nothing running: compare p99.9 and max only side by side and over several rounds.\n\n");
    if let Some(target) = target {
        for (shape, percentile, key) in charts_wanted(grid) {
            let chart = chart(grid, &shape, percentile, key);
            if chart.series.is_empty() {
                continue;
            }
            let file = format!(
                "latency-{}-{percentile}.svg",
                shape.replace(' ', "").replace('×', "x")
            );
            out.push_str(&target.draw(&chart, &file)?);
        }
    }
    out.push_str(&goal(grid));
    Ok(out)
}

/// The shape part of a label: `100 × 32 B` of `100 × 32 B at 50% of max`.
fn shape_of(label: &str) -> &str {
    label.split(" at ").next().unwrap_or(label)
}

/// (shape, percentile name, metric) of each chart: p50 and p99 for every
/// shape recorded.
fn charts_wanted(grid: &Grid<'_>) -> Vec<(String, &'static str, &'static str)> {
    let mut shapes: Vec<&str> = Vec::new();
    for label in &grid.labels {
        if !shapes.contains(&shape_of(label)) {
            shapes.push(shape_of(label));
        }
    }
    shapes
        .into_iter()
        .flat_map(|shape| {
            [("p50", "p50_us"), ("p99", "p99_us")]
                .map(|(percentile, key)| (shape.to_owned(), percentile, key))
        })
        .collect()
}

/// A percentile against the offered rate, a line per server.
fn chart(grid: &Grid<'_>, shape: &str, percentile: &str, key: &str) -> Chart {
    let series = grid.series(
        &|label| shape_of(label) == shape,
        &|server, label| grid.median(server, label, "offered_rate"),
        key,
    );
    Chart {
        title: format!("Echo latency {percentile}, {shape}, against offered load"),
        x_label: "offered messages/s".into(),
        y_label: format!("{percentile} latency, µs"),
        x_scale: Scale::Linear,
        y_scale: Scale::Log,
        series,
    }
}

/// The goal's verdict: the baseline's p99 at half its maximum below every
/// peer's at half theirs.
fn goal(grid: &Grid<'_>) -> String {
    let Some(baseline) = &grid.baseline else {
        return String::new();
    };
    let mut out = String::new();
    for label in grid
        .labels
        .iter()
        .filter(|label| label.ends_with(GOAL_LOAD))
    {
        let Some(ours) = grid.median(baseline, label, "p99_us") else {
            continue;
        };
        let peers = grid
            .servers
            .iter()
            .filter(|server| *server != baseline && *server != super::echo::TRIVIAL_ECHO);
        for peer in peers {
            if let Some(theirs) = grid.median(peer, label, "p99_us") {
                out.push_str(&goal_line(
                    ours < theirs,
                    &format!("{label}: p99 {baseline} {ours:.0} µs, {peer} {theirs:.0} µs"),
                ));
            }
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("### Goal: p99 at half of each server's maximum below every peer's\n\n{out}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::record::tests::record;
    use serde_json::json;

    fn run(server: &str, share: u32, offered: f64, p99: f64) -> Record {
        let mut record = record(
            server,
            1,
            json!({
                "offered_rate": offered, "achieved_rate": offered * 0.99,
                "p50_us": p99 / 4.0, "p90_us": p99 / 2.0, "p99_us": p99,
                "p999_us": p99 * 3.0, "max_us": p99 * 10.0, "schedule_lag_p99_us": 5.0,
                "server_core_share": 0.5, "generator_core_share": 0.4,
            }),
        );
        record.scenario = "latency".into();
        record.label = format!("100 × 32 B at {share}% of max");
        record.params =
            json!({"connections": 100, "size": 32, "warmup_seconds": 1.0, "duration_seconds": 5.0});
        record
    }

    #[test]
    fn tables_charts_and_the_goal() {
        let records = [
            run("shardcast", 25, 40_000.0, 60.0),
            run("shardcast", 50, 80_000.0, 100.0),
            run("peer", 25, 30_000.0, 90.0),
            run("peer", 50, 60_000.0, 80.0),
        ];
        let grid = Grid::new(records.iter().collect(), "shardcast");
        let text = render(&grid, None).unwrap();
        assert!(
            text.contains("| shardcast | 15 / 60 (40.0k) | 25 / 100 (80.0k) |"),
            "{text}"
        );
        assert!(
            text.contains("| peer | 22 / 90, 1.50x (30.0k) | 20 / 80, 0.80x (60.0k) |"),
            "{text}"
        );
        assert!(text.contains("| peer | 270 / 900 | 240 / 800 |"), "{text}");
        assert!(text.contains("| peer | 99%; 5; 50% / 40% |"), "{text}");
        assert!(
            text.contains("- missed: 100 × 32 B at 50% of max: p99 shardcast 100 µs, peer 80 µs"),
            "{text}"
        );
        let wanted = charts_wanted(&grid);
        assert_eq!(wanted.len(), 2);
        let chart = chart(&grid, "100 × 32 B", "p99", "p99_us");
        assert_eq!(chart.series[1].points, [(30_000.0, 90.0), (60_000.0, 80.0)]);
    }
}
