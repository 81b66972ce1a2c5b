//! The sweep as an SVG (plotters): one horizontal bar chart of each
//! candidate's rates relative to `default` (1 is the default; right is
//! better), one of its latency percentiles in µs (left is better). Bars
//! run sideways so candidate names read in full however many there are.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::sweep::candidates::DEFAULT;
use crate::sweep::summary::{Figures, Summary};

/// Why the plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct PlotError {
    /// The SVG file.
    pub path: PathBuf,
    /// What plotters reported.
    pub message: String,
}

/// Reads one figure of a candidate in a scenario.
type Read = fn(&Figures) -> Option<f64>;

/// One set of bars: a legend name and a value per row (best first).
struct Series {
    name: String,
    values: Vec<Option<f64>>,
}

/// Draws `summary` to `path`, creating its folder.
pub fn draw(summary: &Summary, path: &Path) -> Result<(), PlotError> {
    let error = |message: String| PlotError {
        path: path.to_owned(),
        message,
    };
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|e| error(e.to_string()))?;
    }
    let names: Vec<String> = summary
        .rows
        .iter()
        .map(|row| row.candidate.name.clone())
        .collect();
    let default_index = summary
        .rows
        .iter()
        .position(|row| row.candidate.name == DEFAULT);
    let mut rates = Vec::new();
    let mut latencies = Vec::new();
    for (index, scenario) in summary.scenarios.iter().enumerate() {
        let figure = |read: Read| -> Vec<Option<f64>> {
            summary
                .rows
                .iter()
                .map(|row| row.figures[index].as_ref().and_then(read))
                .collect()
        };
        let absolute = figure(|f| f.rate);
        if let Some(base) = default_index.and_then(|i| absolute[i]).filter(|b| *b > 0.0) {
            rates.push(Series {
                name: format!("{} {}", scenario.kind, scenario.label),
                values: absolute.iter().map(|v| v.map(|v| v / base)).collect(),
            });
        }
        if scenario.has_latency() {
            let quantiles: [(&str, Read); 2] = [("p50", |f| f.p50_us), ("p99", |f| f.p99_us)];
            for (quantile, read) in quantiles {
                latencies.push(Series {
                    name: format!("{} {} {quantile}", scenario.kind, scenario.label),
                    values: figure(read),
                });
            }
        }
    }
    let legend_rows = rates.len().max(latencies.len());
    let height = 110
        + 48 * u32::try_from(names.len()).unwrap_or(u32::MAX / 64)
        + LEGEND_LINE * u32::try_from(legend_rows).unwrap_or(u32::MAX / 64);
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
    let title = format!(
        "shardcast-tune sweep, target {} (commit {})",
        summary.target, summary.machine.commit
    );
    let root = root
        .titled(&title, ("sans-serif", 20))
        .map_err(|e| error(e.to_string()))?;
    let (left, right) = root.split_horizontally(560);
    panel(
        &left,
        &names,
        &rates,
        "rate / default's rate (right is better)",
        true,
    )
    .map_err(error)?;
    panel(
        &right,
        &names,
        &latencies,
        "latency, µs (left is better)",
        false,
    )
    .map_err(error)?;
    root.present().map_err(|e| error(e.to_string()))?;
    Ok(())
}

/// Pixels per legend line.
const LEGEND_LINE: u32 = 20;

/// One chart of bars, a group per candidate (the best at the top), its
/// legend below it.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    names: &[String],
    series: &[Series],
    x_label: &str,
    with_names: bool,
) -> Result<(), String> {
    let (area, legend) = area.split_vertically(
        area.dim_in_pixel().1 - LEGEND_LINE * u32::try_from(series.len()).unwrap_or(0) - 6,
    );
    let rows = names.len();
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0f64, |a, &b| a.max(b));
    let x_range: Range<f64> = 0.0..(max * 1.15).max(1.2);
    let y_range: Range<f64> = -0.5..(rows as f64 - 0.5);
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(if with_names { 150 } else { 10 })
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| e.to_string())?;
    let row_at = |y: f64| -> Option<&String> {
        let index = y.round();
        ((y - index).abs() < 0.01 && index >= 0.0)
            .then(|| names.get(rows.checked_sub(1 + index as usize)?))
            .flatten()
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|x| short_number(*x))
        .y_labels(rows.max(1))
        .y_label_formatter(&|y| {
            if with_names {
                row_at(*y).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc(x_label)
        .draw()
        .map_err(|e| e.to_string())?;
    let band = 0.8 / series.len().max(1) as f64;
    for (index, set) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let bars = set.values.iter().enumerate().filter_map(|(row, value)| {
            let center = (rows - 1 - row) as f64;
            let top = center + 0.4 - band * index as f64;
            value.map(|v| Rectangle::new([(0.0, top - band * 0.9), (v, top)], color.filled()))
        });
        chart.draw_series(bars).map_err(|e| e.to_string())?;
        let y = i32::try_from(index).unwrap_or(0) * LEGEND_LINE as i32 + 4;
        let x = if with_names { 160 } else { 20 };
        legend
            .draw(&Rectangle::new([(x, y), (x + 14, y + 12)], color.filled()))
            .map_err(|e| e.to_string())?;
        legend
            .draw(&Text::new(
                set.name.clone(),
                (x + 20, y),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(|e| e.to_string())?;
    }
    if with_names {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(1.0, -0.5), (1.0, rows as f64 - 0.5)],
                BLACK.stroke_width(1),
            )))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// An axis label: `150k`, `2.5M`, `40`, `0.5`.
fn short_number(value: f64) -> String {
    let trimmed = |v: f64| {
        let text = format!("{v:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    match value.abs() {
        m if m >= 1e6 => format!("{}M", trimmed(value / 1e6)),
        m if m >= 1e3 => format!("{}k", trimmed(value / 1e3)),
        _ => trimmed(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(short_number(150_000.0), "150k");
        assert_eq!(short_number(2_500_000.0), "2.5M");
        assert_eq!(short_number(40.0), "40");
        assert_eq!(short_number(0.5), "0.5");
    }
}
