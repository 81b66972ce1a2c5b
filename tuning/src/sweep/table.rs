//! A summary as a table (aligned text for a terminal, Markdown for the
//! report) and as JSON: the same cells either way.

use serde_json::json;

use crate::serve_config::ServeConfig;
use crate::sweep::candidates::DEFAULT;
use crate::sweep::summary::{Row, Scenario, Summary};
use crate::sweep::target::Rank;

/// A table: a header and rows of cells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Column titles.
    pub header: Vec<String>,
    /// One line per candidate, best first.
    pub rows: Vec<Vec<String>>,
}

/// A scenario's name in column titles: its kind, or kind and label when
/// the session ran the kind at more than one shape. [`scenarios`] spells
/// out the labels.
fn column_name(summary: &Summary, scenario: &Scenario) -> String {
    let same_kind = summary
        .scenarios
        .iter()
        .filter(|s| s.kind == scenario.kind)
        .count();
    if same_kind > 1 {
        format!("{} {}", scenario.kind, scenario.label)
    } else {
        scenario.kind.clone()
    }
}

/// One line per scenario: its kind and its label (the load's shape).
pub fn scenarios(summary: &Summary) -> String {
    summary
        .scenarios
        .iter()
        .map(|s| format!("{}: {}\n", s.kind, s.label))
        .collect()
}

/// `12.3k`, `1.52M`, `950`: a rate to three significant figures.
pub fn rate(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let decimals = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.decimals$}{suffix}")
}

fn micros(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |us| format!("{us:.0}"))
}

/// What a candidate sets, as its config file's `key = value` lines joined
/// (the keys are named by [`crate::serve_config`] only).
pub fn settings(config: &ServeConfig) -> String {
    let lines: Vec<String> = config
        .to_toml("")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('['))
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        "(server defaults)".into()
    } else {
        lines.join(", ")
    }
}

impl Table {
    /// The table of `summary`: rank, candidate, for each scenario its rate
    /// (and p50/p99 where it measures latency), the score against
    /// `default`, and what the candidate sets.
    pub fn of(summary: &Summary) -> Table {
        let mut header = vec!["#".to_owned(), "candidate".to_owned()];
        for scenario in &summary.scenarios {
            let name = column_name(summary, scenario);
            header.push(format!("{name} {}", scenario.rate_unit()));
            if scenario.has_latency() {
                header.push(format!("{name} p50 µs"));
                header.push(format!("{name} p99 µs"));
            }
        }
        let ranked = summary
            .scenarios
            .iter()
            .filter(|s| s.rank != Rank::None)
            .map(|s| match s.rank {
                Rank::P99 => format!("{} p99", s.kind),
                _ => format!("{} rate", s.kind),
            })
            .collect::<Vec<_>>()
            .join(", ");
        header.push(format!("vs default ({ranked})"));
        header.push("settings".into());
        let rows = summary
            .rows
            .iter()
            .enumerate()
            .map(|(index, row)| {
                let mut cells = vec![(index + 1).to_string(), row.candidate.name.clone()];
                for (scenario, figures) in summary.scenarios.iter().zip(&row.figures) {
                    cells.push(
                        figures
                            .as_ref()
                            .and_then(|f| f.rate)
                            .map_or_else(|| "-".into(), rate),
                    );
                    if scenario.has_latency() {
                        cells.push(micros(figures.as_ref().and_then(|f| f.p50_us)));
                        cells.push(micros(figures.as_ref().and_then(|f| f.p99_us)));
                    }
                }
                cells.push(score(row.score));
                cells.push(settings(&row.candidate.config));
                cells
            })
            .collect();
        Table { header, rows }
    }

    /// Columns padded to their widest cell, two spaces apart.
    pub fn to_text(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, &width)| format!("{cell:<width$}"))
                .collect();
            padded.join("  ").trim_end().to_owned() + "\n"
        };
        let mut out = line(&self.header);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }

    /// A Markdown table.
    pub fn to_markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.header);
        out.push_str(&line(&vec!["---".to_owned(); self.header.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// The verdict: the best candidate and its margin over `default`, then,
/// per scenario, the figures of the default against the chosen plan (or,
/// when the default is best, against the runner-up): rate and p99.
pub fn verdict(summary: &Summary) -> String {
    let (best, margin) = summary.best();
    let (mut text, other) = if best.candidate.name == DEFAULT {
        match summary.rows.get(1) {
            Some(row) => (
                format!(
                    "Best plan: default (the server's defaults); the next best, {}, scores {}.",
                    row.candidate.name,
                    score(row.score)
                ),
                Some(row),
            ),
            None => (
                "Best plan: default (the server's defaults).".to_owned(),
                None,
            ),
        }
    } else {
        (
            format!(
                "Best plan: {} ({}), {margin:.3}x the default.",
                best.candidate.name, best.candidate.description
            ),
            Some(best),
        )
    };
    if let Some(noise) = summary.noise() {
        let margin = other.and_then(|row| row.score).unwrap_or(1.0);
        let within = if (margin - 1.0).abs() <= noise {
            "within"
        } else {
            "beyond"
        };
        text.push_str(&format!(
            " The margin is {within} the default's own spread between rounds ({:.0}%).",
            noise * 100.0
        ));
    }
    let (Some(default), Some(other)) = (summary.default_row(), other) else {
        return text;
    };
    for (index, scenario) in summary.scenarios.iter().enumerate() {
        let line = |row: &Row| -> String {
            let figures = row.figures[index].as_ref();
            let p99 = figures
                .and_then(|f| f.p99_us)
                .map(|p| format!(", p99 {p:.0} µs"))
                .unwrap_or_default();
            format!(
                "{} {} {}{p99}",
                row.candidate.name,
                figures
                    .and_then(|f| f.rate)
                    .map_or_else(|| "-".into(), rate),
                scenario.rate_unit()
            )
        };
        text.push_str(&format!(
            "\n{} {}: {}; {}.",
            scenario.kind,
            scenario.label,
            line(default),
            line(other)
        ));
    }
    text
}

fn score(score: Option<f64>) -> String {
    score.map_or_else(|| "-".into(), |score| format!("{score:.3}x"))
}

/// The summary as JSON: every field of [`Summary`], plus `best` (the
/// candidate's name) and `margin` (its score over `default`).
pub fn to_json(summary: &Summary) -> serde_json::Value {
    let (best, margin) = summary.best();
    json!({
        "summary": summary,
        "best": best.candidate.name,
        "margin": margin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_keep_three_figures() {
        assert_eq!(rate(950.0), "950");
        assert_eq!(rate(12_345.0), "12.3k");
        assert_eq!(rate(1_520_000.0), "1.52M");
        assert_eq!(rate(5.5), "5.50");
    }

    #[test]
    fn text_columns_line_up() {
        let table = Table {
            header: vec!["a".into(), "long header".into()],
            rows: vec![vec!["wide cell".into(), "x".into()]],
        };
        assert_eq!(table.to_text(), "a          long header\nwide cell  x\n");
        assert_eq!(
            table.to_markdown(),
            "| a | long header |\n| --- | --- |\n| wide cell | x |\n"
        );
    }
}
