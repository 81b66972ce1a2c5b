//! SVG line charts for BENCHMARKS.md (plotters): one line per server, a
//! point at each measurement, so a reader sees how a figure moves with
//! the load and where servers cross.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// One server's line: (x, y) points in rising x.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Series {
    /// The legend's name.
    pub(crate) name: String,
    /// The points, sorted by x.
    pub(crate) points: Vec<(f64, f64)>,
}

/// How an axis maps its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scale {
    /// Evenly spaced values, from zero.
    Linear,
    /// Decades evenly spaced: for values spanning orders of magnitude
    /// (connection counts, latencies).
    Log,
}

/// A chart: title, axes and lines.
#[derive(Clone, Debug)]
pub(crate) struct Chart {
    /// The caption above the plot.
    pub(crate) title: String,
    /// The x axis's description, with its unit.
    pub(crate) x_label: String,
    /// The y axis's description, with its unit.
    pub(crate) y_label: String,
    /// The x axis's scale.
    pub(crate) x_scale: Scale,
    /// The y axis's scale.
    pub(crate) y_scale: Scale,
    /// One line per server.
    pub(crate) series: Vec<Series>,
}

const SIZE: (u32, u32) = (760, 440);

impl Chart {
    /// Draws the chart as an SVG file at `path`. A chart with no point
    /// is an error: there is nothing to show.
    pub(crate) fn draw(&self, path: &Path) -> anyhow::Result<()> {
        let points = self.series.iter().flat_map(|series| series.points.iter());
        let (mut x_min, mut x_max, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY, 0f64);
        let mut y_min = f64::INFINITY;
        for &(x, y) in points {
            x_min = x_min.min(x);
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
        if !x_min.is_finite() {
            return Err(anyhow!("the chart {:?} has no points", self.title));
        }
        let x_range = padded(x_min, x_max, self.x_scale);
        let y_range = padded(y_min, y_max, self.y_scale);
        let result = match (self.x_scale, self.y_scale) {
            (Scale::Linear, Scale::Linear) => self.draw_on(path, x_range, y_range),
            (Scale::Linear, Scale::Log) => self.draw_on(path, x_range, y_range.log_scale()),
            (Scale::Log, Scale::Linear) => self.draw_on(path, x_range.log_scale(), y_range),
            (Scale::Log, Scale::Log) => {
                self.draw_on(path, x_range.log_scale(), y_range.log_scale())
            }
        };
        result.with_context(|| format!("drawing {}", path.display()))
    }

    fn draw_on<X, Y>(&self, path: &Path, x: X, y: Y) -> anyhow::Result<()>
    where
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&|value| short_number(*value))
            .y_label_formatter(&|value| short_number(*value))
            .draw()
            .map_err(plot_error)?;
        for (index, series) in self.series.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    series.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(&series.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    series
                        .points
                        .iter()
                        .map(|&point| Circle::new(point, 3, color.filled())),
                )
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
        Ok(())
    }
}

/// The axis range around `[min, max]`: from zero for a linear axis, a
/// little wider on each side for a log one, never empty.
fn padded(min: f64, max: f64, scale: Scale) -> std::ops::Range<f64> {
    match scale {
        Scale::Linear => 0.0..(max * 1.1).max(1.0),
        Scale::Log => {
            let low = (min / 1.5).max(f64::MIN_POSITIVE);
            let high = (max * 1.5).max(low * 10.0);
            low..high
        }
    }
}

/// An axis label: `150k`, `2.5M`, `40`, `0.5`.
fn short_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        format!("{}M", trimmed(value / 1e6))
    } else if magnitude >= 1e3 {
        format!("{}k", trimmed(value / 1e3))
    } else {
        trimmed(value)
    }
}

/// At most two decimals, without trailing zeros.
fn trimmed(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn plot_error<E: std::error::Error + Send + Sync + 'static>(error: E) -> anyhow::Error {
    anyhow!("plotters: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_every_server_in_its_legend() {
        let path = std::env::temp_dir().join(format!("chart-{}.svg", std::process::id()));
        let chart = Chart {
            title: "Echo throughput, 32 B".into(),
            x_label: "connections".into(),
            y_label: "messages/s".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Linear,
            series: vec![
                Series {
                    name: "shardcast".into(),
                    points: vec![(100.0, 150_000.0), (1000.0, 120_000.0)],
                },
                Series {
                    name: "peer".into(),
                    points: vec![(100.0, 90_000.0), (1000.0, 60_000.0)],
                },
            ],
        };
        chart.draw(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("shardcast") && svg.contains("peer"));
        assert!(svg.contains("Echo throughput, 32 B"));
        assert!(svg.contains("<polyline"), "no line drawn");
    }

    #[test]
    fn an_empty_chart_is_an_error() {
        let chart = Chart {
            title: "nothing".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Log,
            series: Vec::new(),
        };
        assert!(chart.draw(Path::new("/nonexistent/x.svg")).is_err());
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(short_number(150_000.0), "150k");
        assert_eq!(short_number(2_500_000.0), "2.5M");
        assert_eq!(short_number(40.0), "40");
        assert_eq!(short_number(0.5), "0.5");
    }
}
