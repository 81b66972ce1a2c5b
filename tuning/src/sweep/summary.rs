//! From runs to a verdict: each candidate's figures per scenario (the
//! median over rounds), its score against `default`, the ranking, the
//! best plan and its margin.
//!
//! The score is the geometric mean, over the scenarios the target ranks
//! by, of the candidate's ratio to `default`: messages per second over
//! the default's, or the default's p99 over the candidate's. Above 1 is
//! better than the default; `default` scores exactly 1. A geometric mean
//! weighs a 10% gain in one scenario and a 10% loss in another as even,
//! whatever the scenarios' absolute rates.
//!
//! How far apart the default's own rounds are ([`Summary::noise`]) tells
//! whether a margin means anything on this machine: a best plan 3% ahead
//! of a default whose rounds differ by 10% has not been shown better.

use serde::Serialize;

use crate::sweep::candidates::{Candidate, DEFAULT, Placement};
use crate::sweep::records::{Machine, Run};
use crate::sweep::target::{self, Rank, Target};

/// A scenario of the session, as the columns of the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// The kind: `echo`, `latency` or `fanout`.
    pub kind: String,
    /// The bench's label, e.g. `100 × 32 B`.
    pub label: String,
    /// How it ranks candidates under the sweep's target.
    pub rank: Rank,
    /// The CPUs its load ran on, as recorded by its first run.
    pub load_cores: String,
}

impl Scenario {
    /// The unit of its throughput figure.
    pub fn rate_unit(&self) -> &'static str {
        match self.kind.as_str() {
            "fanout" => "deliveries/s",
            "latency" => "achieved messages/s",
            _ => "messages/s",
        }
    }

    /// Whether its runs measure latency percentiles (echo only counts).
    pub fn has_latency(&self) -> bool {
        self.kind != "echo"
    }
}

/// A candidate's figures in one scenario: medians over its rounds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    /// Rounds measured.
    pub runs: usize,
    /// Messages (echo, latency) or deliveries (fan-out) per second.
    pub rate: Option<f64>,
    /// Median latency, µs (fan-out: publish to delivery; latency: round trip).
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    pub p99_us: Option<f64>,
    /// The server's CPU time over the run's wall time, in cores.
    pub server_core_share: Option<f64>,
    /// How far apart the rounds' rates are: (largest - smallest) / median;
    /// `None` with fewer than two rounds.
    pub rate_spread: Option<f64>,
    /// The same for the rounds' p99.
    pub p99_spread: Option<f64>,
}

/// One candidate's line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// The candidate measured.
    pub candidate: Candidate,
    /// Its figures per scenario, in the order of [`Summary::scenarios`];
    /// `None` where it has no run.
    pub figures: Vec<Option<Figures>>,
    /// Its score against `default`; `None` when a ranked figure is missing.
    pub score: Option<f64>,
}

/// A sweep's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// What the candidates were ranked for.
    pub target: Target,
    /// The sweep's command line.
    pub command: String,
    /// The machine and commit, from the records.
    pub machine: Machine,
    /// Where servers and loads ran (the same for every candidate).
    pub placement: Placement,
    /// Rounds per candidate and scenario.
    pub rounds: u32,
    /// The scenarios, in the order they first ran.
    pub scenarios: Vec<Scenario>,
    /// The candidates, best first; unscored ones last.
    pub rows: Vec<Row>,
}

/// Why runs could not be summarized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SummaryError {
    /// There are no runs at all.
    #[error("the session recorded no runs")]
    NoRuns,
    /// The baseline has no figure for a ranked scenario.
    #[error("`default` has no {figure} in {kind} {label}: nothing to compare with")]
    NoBaseline {
        /// The scenario's kind.
        kind: String,
        /// Its label.
        label: String,
        /// The missing figure.
        figure: &'static str,
    },
    /// The candidates have no `default` to rank against.
    #[error("the candidates have no `default`")]
    NoDefault,
}

/// What one run is read for.
fn rate_of(run: &Run) -> Option<f64> {
    match run.scenario.as_str() {
        "echo" => run.metric("messages_per_second"),
        "fanout" => run.metric("deliveries_per_second"),
        "latency" => run.metric("achieved_rate"),
        _ => None,
    }
}

/// The median of `values` (the mean of the middle two for an even
/// count); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// (largest - smallest) / median of `values`; `None` below two values or
/// with a median of zero.
fn spread(values: &mut [f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let middle = median(values).filter(|m| *m > 0.0)?;
    let (low, high) = (values[0], values[values.len() - 1]);
    Some((high - low) / middle)
}

fn figures(runs: &[&Run]) -> Option<Figures> {
    if runs.is_empty() {
        return None;
    }
    let values = |read: &dyn Fn(&Run) -> Option<f64>| -> Vec<f64> {
        runs.iter().filter_map(|run| read(run)).collect()
    };
    let mid = |read: &dyn Fn(&Run) -> Option<f64>| median(&mut values(read));
    let p99 = |run: &Run| run.metric("p99_us");
    Some(Figures {
        runs: runs.len(),
        rate: mid(&rate_of),
        p50_us: mid(&|run| run.metric("p50_us")),
        p99_us: mid(&p99),
        server_core_share: mid(&|run| run.metric("server_core_share")),
        rate_spread: spread(&mut values(&rate_of)),
        p99_spread: spread(&mut values(&p99)),
    })
}

/// What a sweep's header says besides its runs.
#[derive(Clone, Debug)]
pub struct Session {
    /// What the candidates are ranked for.
    pub target: Target,
    /// The sweep's command line.
    pub command: String,
    /// Rounds per candidate and scenario.
    pub rounds: u32,
}

/// Aggregates `runs` of `candidates` and ranks them against `default`.
/// Runs of servers that are not candidates are ignored.
pub fn summarize(
    session: &Session,
    candidates: &[Candidate],
    runs: &[Run],
) -> Result<Summary, SummaryError> {
    let machine = runs.first().ok_or(SummaryError::NoRuns)?.machine.clone();
    let default = candidates
        .iter()
        .find(|c| c.name == DEFAULT)
        .ok_or(SummaryError::NoDefault)?;
    let mut scenarios: Vec<Scenario> = Vec::new();
    for run in runs {
        if !scenarios
            .iter()
            .any(|s| s.kind == run.scenario && s.label == run.label)
        {
            scenarios.push(Scenario {
                kind: run.scenario.clone(),
                label: run.label.clone(),
                rank: target::rank(session.target, &run.scenario),
                load_cores: run.load_cores.clone(),
            });
        }
    }
    let figures_of = |name: &str| -> Vec<Option<Figures>> {
        scenarios
            .iter()
            .map(|scenario| {
                let mine: Vec<&Run> = runs
                    .iter()
                    .filter(|run| {
                        run.server == name
                            && run.scenario == scenario.kind
                            && run.label == scenario.label
                    })
                    .collect();
                figures(&mine)
            })
            .collect()
    };
    let baseline = figures_of(&default.name);
    let mut references: Vec<(usize, f64)> = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let (figure, value) = match scenario.rank {
            Rank::None => continue,
            Rank::Throughput => ("rate", baseline[index].as_ref().and_then(|f| f.rate)),
            Rank::P99 => ("p99", baseline[index].as_ref().and_then(|f| f.p99_us)),
        };
        match value.filter(|v| *v > 0.0) {
            Some(value) => references.push((index, value)),
            None => {
                return Err(SummaryError::NoBaseline {
                    kind: scenario.kind.clone(),
                    label: scenario.label.clone(),
                    figure,
                });
            }
        }
    }
    let mut rows: Vec<Row> = candidates
        .iter()
        .map(|candidate| {
            let figures = figures_of(&candidate.name);
            let ratios: Option<Vec<f64>> = references
                .iter()
                .map(|&(index, reference)| {
                    let mine = figures[index].as_ref()?;
                    match scenarios[index].rank {
                        Rank::P99 => mine.p99_us.filter(|v| *v > 0.0).map(|v| reference / v),
                        _ => mine.rate.map(|v| v / reference),
                    }
                })
                .collect();
            let score = ratios.filter(|r| !r.is_empty()).map(|ratios| {
                (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp()
            });
            Row {
                candidate: candidate.clone(),
                figures,
                score,
            }
        })
        .collect();
    rows.sort_by(|a, b| match (a.score, b.score) {
        (Some(a), Some(b)) => b.total_cmp(&a),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(Summary {
        target: session.target,
        command: session.command.clone(),
        machine,
        placement: default.placement.clone(),
        rounds: session.rounds,
        scenarios,
        rows,
    })
}

impl Summary {
    /// The best candidate and its score over `default` (1 when the
    /// default is best or nothing beat it).
    pub fn best(&self) -> (&Row, f64) {
        let best = &self.rows[0];
        (best, best.score.unwrap_or(1.0))
    }

    /// The row of `default`.
    pub fn default_row(&self) -> Option<&Row> {
        self.rows.iter().find(|row| row.candidate.name == DEFAULT)
    }

    /// The largest spread between the default's rounds in a figure that
    /// ranks: a margin smaller than this is within the machine's noise.
    /// `None` with a single round.
    pub fn noise(&self) -> Option<f64> {
        let default = self.default_row()?;
        self.scenarios
            .iter()
            .zip(&default.figures)
            .filter_map(|(scenario, figures)| {
                let figures = figures.as_ref()?;
                match scenario.rank {
                    Rank::Throughput => figures.rate_spread,
                    Rank::P99 => figures.p99_spread,
                    Rank::None => None,
                }
            })
            .reduce(f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn spreads_need_two_rounds() {
        assert_eq!(spread(&mut [5.0]), None);
        assert_eq!(spread(&mut [120.0, 80.0, 100.0]), Some(0.4));
        assert_eq!(spread(&mut [0.0, 0.0]), None);
    }
}
