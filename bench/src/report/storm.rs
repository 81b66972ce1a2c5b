//! The storm section: how long a server takes to take back every client
//! that dropped at once, and what that does to the latency of the
//! connections that stayed.

use std::fmt::Write as _;

use super::{Better, Grid, PlotTarget, ratio_text};
use crate::stats::format_rate;

/// Renders the section; it has no plot.
pub(super) fn render(grid: &Grid<'_>, _target: Option<&PlotTarget>) -> anyhow::Result<String> {
    let mut out = grid.header("Reconnection storm");
    let first = grid.first();
    writeln!(
        out,
        "Method: N clients connected; at once they all drop their TCP connections and reconnect (all together, or spread uniformly over the jitter), and the time runs until every one is upgraded again. Meanwhile {} probe connections outside the storm run an open-loop echo at {} messages/s; their latency before the storm and during it is compared.\n",
        first.param("probes").unwrap_or(f64::NAN),
        first.param("probe_rate").unwrap_or(f64::NAN),
    )?;
    out.push_str(&grid.table(
        "Seconds until all are back; handshakes/s",
        &|server, label| {
            let seconds = grid.median(server, label, "all_back_seconds")?;
            let ratio = grid.ratio(server, label, "all_back_seconds", Better::Lower, true);
            let rate = grid.median(server, label, "handshakes_per_second")?;
            Some(format!(
                "{seconds:.3}{}; {}",
                ratio_text(ratio),
                format_rate(rate)
            ))
        },
    ));
    out.push_str(&grid.table(
        "Probe latency p99, µs: before the storm / during it",
        &|server, label| {
            let before = grid.median(server, label, "baseline_p99_us")?;
            let during = grid.median(server, label, "storm_p99_us")?;
            let ratio = grid.ratio(server, label, "storm_p99_us", Better::Lower, true);
            Some(format!("{before:.0} / {during:.0}{}", ratio_text(ratio)))
        },
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record;
    use serde_json::json;

    #[test]
    fn tables() {
        let run = |server: &str, seconds: f64, during: f64| {
            let mut record = record(
                server,
                1,
                json!({"all_back_seconds": seconds, "handshakes_per_second": 1000.0 / seconds,
                    "baseline_p99_us": 50.0, "storm_p99_us": during}),
            );
            record.scenario = "storm".into();
            record.label = "1000 clients at once".into();
            record.params = json!({"clients": 1000, "probes": 10, "probe_rate": 1000});
            record
        };
        let records = [run("shardcast", 0.1, 500.0), run("peer", 0.4, 2000.0)];
        let grid = Grid::new(records.iter().collect(), "shardcast");
        let text = render(&grid, None).unwrap();
        assert!(text.contains("| peer | 0.400, 4.00x; 2.5k |"), "{text}");
        assert!(text.contains("| shardcast | 50 / 500 |"), "{text}");
        assert!(text.contains("| peer | 50 / 2000, 4.00x |"), "{text}");
        assert!(text.contains("10 probe connections"), "{text}");
    }
}
