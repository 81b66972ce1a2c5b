//! Summaries of repeated runs: medians, ratios against shardcast, and
//! how the reports write figures.

/// The median of `values`, the mean of the middle two for an even count;
/// `None` for no values. NaN sorts last.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// How many times better `ours` is than `theirs` for a figure where more
/// is better (messages/s): above 1, shardcast is ahead. `None` when the
/// peer's figure is zero or not finite.
pub(crate) fn ratio_higher_is_better(ours: f64, theirs: f64) -> Option<f64> {
    finite_ratio(ours, theirs)
}

/// How many times better `ours` is than `theirs` for a figure where less
/// is better (CPU per message): above 1, shardcast is ahead. `None` when
/// ours is zero or not finite.
pub(crate) fn ratio_lower_is_better(ours: f64, theirs: f64) -> Option<f64> {
    finite_ratio(theirs, ours)
}

fn finite_ratio(numerator: f64, denominator: f64) -> Option<f64> {
    let ratio = numerator / denominator;
    (denominator != 0.0 && ratio.is_finite()).then_some(ratio)
}

/// A rate for a table: `98.6k`, `1.25M`, `512`.
pub(crate) fn format_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1}k", per_second / 1e3)
    } else {
        format!("{per_second:.0}")
    }
}

/// A whole number with thousands separators, rounded: `138,060`, `-1,024`.
pub(crate) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value.round() < 0.0 {
        grouped.push('-');
    }
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[10.0, 1.0, 1000.0]), Some(10.0));
    }

    #[test]
    fn ratios_are_above_one_when_shardcast_is_ahead() {
        assert_eq!(ratio_higher_is_better(150.0, 100.0), Some(1.5));
        assert_eq!(ratio_higher_is_better(50.0, 100.0), Some(0.5));
        assert_eq!(ratio_lower_is_better(5.0, 10.0), Some(2.0));
        assert_eq!(ratio_lower_is_better(20.0, 10.0), Some(0.5));
    }

    #[test]
    fn ratios_against_zero_are_absent() {
        assert_eq!(ratio_higher_is_better(150.0, 0.0), None);
        assert_eq!(ratio_lower_is_better(0.0, 10.0), None);
        assert_eq!(ratio_higher_is_better(f64::NAN, 1.0), None);
    }

    #[test]
    fn figures_are_written_for_tables() {
        assert_eq!(format_rate(98_600.0), "98.6k");
        assert_eq!(format_rate(1_254_000.0), "1.25M");
        assert_eq!(format_rate(512.4), "512");
        assert_eq!(thousands(138_060.0), "138,060");
        assert_eq!(thousands(2_047.6), "2,048");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(thousands(-1_024.0), "-1,024");
        assert_eq!(thousands(-0.2), "0");
        assert_eq!(thousands(0.0), "0");
    }
}
