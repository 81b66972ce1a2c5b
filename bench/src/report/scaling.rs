//! The scaling section: echo throughput against cores, each server family
//! at every count that ran, as a share of linear growth from one core.

use std::fmt::Write as _;

use super::{Grid, PlotTarget, goal_line};
use crate::plot::{Chart, Scale, Series};
use crate::scaling::parse_member;
use crate::stats::format_rate;

/// The goal of issue 5: shardcast at 8 shards keeps this share of linear.
const GOAL_EFFICIENCY: f64 = 0.85;

/// The family held to the goal.
const GOAL_FAMILY: &str = "shardcast";

/// Renders the section.
pub(super) fn render(grid: &Grid<'_>, target: Option<&PlotTarget>) -> anyhow::Result<String> {
    let mut out = grid.header("Scaling with cores");
    let members: Vec<(&str, usize, &str)> = grid
        .servers
        .iter()
        .filter_map(|name| parse_member(name).map(|(family, count)| (family, count, name.as_str())))
        .collect();
    let mut families: Vec<&str> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for &(family, count, _) in &members {
        if !families.contains(&family) {
            families.push(family);
        }
        if !counts.contains(&count) {
            counts.push(count);
        }
    }
    counts.sort_unstable();
    writeln!(
        out,
        "Method: at N cores the server runs on cores 0 to N-1 (shardcast with N shards in one process; uWebSockets.js, single-threaded, as N processes sharing the port with SO_REUSEPORT) and the load on the next N cores, one generator thread each. Efficiency is messages/s at N over N times messages/s at 1. Counts run here: {}; a count needs twice its cores, so the others were skipped on this {}-core machine: run the command above on a bigger host.\n",
        counts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        grid.first().machine.cores,
    )?;
    let figure = |family: &str, count: usize, label: &str| {
        let member = members.iter().find(|m| m.0 == family && m.1 == count)?.2;
        grid.median(member, label, "messages_per_second")
    };
    for label in &grid.labels {
        writeln!(
            out,
            "### Messages/s at {label} (efficiency against linear)\n"
        )?;
        let heads: Vec<String> = counts.iter().map(|c| format!("{c} core(s)")).collect();
        writeln!(out, "| server | {} |", heads.join(" | "))?;
        writeln!(out, "|---|{}", "---|".repeat(counts.len()))?;
        for family in &families {
            let one = figure(family, 1, label);
            let cells: Vec<String> = counts
                .iter()
                .map(|&count| match figure(family, count, label) {
                    Some(rate) => match one {
                        Some(one) if count > 1 => format!(
                            "{} ({:.0}%)",
                            format_rate(rate),
                            rate / (one * count as f64) * 100.0
                        ),
                        _ => format_rate(rate),
                    },
                    None => "-".to_owned(),
                })
                .collect();
            writeln!(out, "| {family} | {} |", cells.join(" | "))?;
        }
        out.push('\n');
        if let Some(target) = target {
            let series: Vec<Series> = families
                .iter()
                .map(|family| Series {
                    name: (*family).to_owned(),
                    points: counts
                        .iter()
                        .filter_map(|&count| Some((count as f64, figure(family, count, label)?)))
                        .collect(),
                })
                .filter(|series| !series.points.is_empty())
                .collect();
            let chart = Chart {
                title: format!("Echo throughput against cores, {label}"),
                x_label: "cores (shards or processes)".into(),
                y_label: "messages/s".into(),
                x_scale: Scale::Log,
                y_scale: Scale::Linear,
                series,
            };
            let file = format!("scaling-{}.svg", label.replace(' ', "").replace('×', "x"));
            out.push_str(&target.draw(&chart, &file)?);
        }
        let top = counts.last().copied().unwrap_or(1);
        if let (Some(one), Some(rate), true) = (
            figure(GOAL_FAMILY, 1, label),
            figure(GOAL_FAMILY, top, label),
            top > 1,
        ) {
            let efficiency = rate / (one * top as f64);
            out.push_str(&goal_line(
                efficiency >= GOAL_EFFICIENCY,
                &format!(
                    "{label}: {GOAL_FAMILY} at {top} cores runs at {:.0}% of linear (goal {:.0}% at 8)\n",
                    efficiency * 100.0,
                    GOAL_EFFICIENCY * 100.0
                ),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record;
    use serde_json::json;

    #[test]
    fn efficiency_is_against_n_times_one_core() {
        let run = |server: &str, rate: f64| {
            let mut record = record(server, 1, json!({"messages_per_second": rate}));
            record.scenario = "scaling".into();
            record.label = "1000 × 32 B".into();
            record
        };
        let records = [
            run("shardcast ×1", 100_000.0),
            run("shardcast ×2", 180_000.0),
            run("uWebSockets.js ×1", 80_000.0),
            run("uWebSockets.js ×2", 120_000.0),
        ];
        let grid = Grid::new(records.iter().collect(), "shardcast ×1");
        let text = render(&grid, None).unwrap();
        assert!(
            text.contains("| server | 1 core(s) | 2 core(s) |"),
            "{text}"
        );
        assert!(
            text.contains("| shardcast | 100.0k | 180.0k (90%) |"),
            "{text}"
        );
        assert!(
            text.contains("| uWebSockets.js | 80.0k | 120.0k (75%) |"),
            "{text}"
        );
        assert!(
            text.contains("- met: 1000 × 32 B: shardcast at 2 cores runs at 90% of linear"),
            "{text}"
        );
        assert!(text.contains("Counts run here: 1, 2"), "{text}");
    }
}
