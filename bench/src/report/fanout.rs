//! The fanout section: deliveries per second from rooms, publish-to-
//! delivery latency and server CPU per delivery.

use std::fmt::Write as _;

use super::{Better, Grid, PlotTarget, ratio_text};
use crate::plot::{Chart, Scale};
use crate::stats::format_rate;

/// Renders the section.
pub(super) fn render(grid: &Grid<'_>, target: Option<&PlotTarget>) -> anyhow::Result<String> {
    let mut out = grid.header("Fan-out: rooms and publish");
    let first = grid.first();
    let mut protocols: Vec<String> = Vec::new();
    for server in &grid.servers {
        if let Some(record) = grid
            .labels
            .iter()
            .find_map(|label| grid.runs(server, label).next())
        {
            let protocol = record.params["protocol"].as_str().unwrap_or("unknown");
            protocols.push(format!("{server} `{protocol}`"));
        }
    }
    writeln!(
        out,
        "Method: subscribers join their rooms (one room, or spread over several) and publishers on connections of their own (one unless the row says more; with fewer publishers than rooms, one per room) publish {}-byte messages through each server's own room protocol ({}); a publisher subscribes to nothing (with `shardcast-v1` it joins the rooms it publishes to, as the protocol asks, and publishes with `exclude_self`). A round waits until every subscriber has the round's messages, so the figure is the most the server delivers. Each message carries its publish time, and every subscriber checks it gets every message of its room once and in order. {} s warm-up, {} s measured. Latency is publish to delivery.\n",
        first.param("size").unwrap_or(f64::NAN),
        protocols.join(", "),
        first.param("warmup_seconds").unwrap_or(f64::NAN),
        first.param("duration_seconds").unwrap_or(f64::NAN),
    )?;
    out.push_str(&grid.table("Deliveries/s", &|server, label| {
        let rate = grid.median(server, label, "deliveries_per_second")?;
        let ratio = grid.ratio(server, label, "deliveries_per_second", Better::Higher, true);
        Some(format!("{}{}", format_rate(rate), ratio_text(ratio)))
    }));
    out.push_str(&grid.table(
        "Publish to delivery p50 / p99 / max, µs",
        &|server, label| {
            let p50 = grid.median(server, label, "p50_us")?;
            let p99 = grid.median(server, label, "p99_us")?;
            let max = grid.median(server, label, "max_us")?;
            Some(format!("{p50:.0} / {p99:.0} / {max:.0}"))
        },
    ));
    out.push_str(&grid.table(
        "Server CPU per delivery, µs; CPU used: server / load",
        &|server, label| {
            let micros = grid.median(server, label, "server_micros_per_delivery")?;
            let ratio = grid.ratio(
                server,
                label,
                "server_micros_per_delivery",
                Better::Lower,
                false,
            );
            let server_share = grid.median(server, label, "server_core_share")?;
            let load_share = grid.median(server, label, "generator_core_share")?;
            Some(format!(
                "{micros:.3}{}; {:.0}% / {:.0}%",
                ratio_text(ratio),
                server_share * 100.0,
                load_share * 100.0
            ))
        },
    ));
    if let Some(target) = target {
        let chart = chart(grid);
        if !chart.series.is_empty() {
            out.push_str(&target.draw(&chart, "fanout-deliveries.svg")?);
        }
    }
    Ok(out)
}

/// Deliveries/s against subscribers in one room with one publisher, a
/// line per server.
fn chart(grid: &Grid<'_>) -> Chart {
    let series = grid.series(
        &|label| {
            grid.param(label, "rooms") == Some(1.0)
                && grid.param(label, "publishers").unwrap_or(1.0) == 1.0
        },
        &|_, label| grid.param(label, "subscribers"),
        "deliveries_per_second",
    );
    Chart {
        title: "Fan-out to one room: deliveries/s against subscribers".into(),
        x_label: "subscribers".into(),
        y_label: "deliveries/s".into(),
        x_scale: Scale::Log,
        y_scale: Scale::Linear,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record;
    use serde_json::json;

    #[test]
    fn tables_and_chart() {
        let run = |server: &str, rate: f64| {
            let mut record = record(
                server,
                1,
                json!({"deliveries_per_second": rate, "p50_us": 100.0, "p99_us": 900.0,
                    "max_us": 3000.0, "server_micros_per_delivery": 1e6 / rate,
                    "server_core_share": 1.0, "generator_core_share": 0.5}),
            );
            record.scenario = "fanout".into();
            record.label = "100 subscribers × 32 B, 1 room".into();
            record.params = json!({"subscribers": 100, "rooms": 1, "size": 32, "protocol": "uws-topics",
                "warmup_seconds": 1.0, "duration_seconds": 5.0});
            record
        };
        let records = [
            run("shardcast", 2_000_000.0),
            run("uWebSockets.js", 400_000.0),
        ];
        let grid = Grid::new(records.iter().collect(), "shardcast");
        let text = render(&grid, None).unwrap();
        assert!(
            text.contains("| uWebSockets.js | 400.0k, 5.00x |"),
            "{text}"
        );
        assert!(text.contains("| shardcast | 100 / 900 / 3000 |"), "{text}");
        assert!(
            text.contains("| uWebSockets.js | 2.500, 5.00x; 100% / 50% |"),
            "{text}"
        );
        assert_eq!(chart(&grid).series[0].points, [(100.0, 2_000_000.0)]);
    }
}
