//! Medians, spreads and goal verdicts for the same-run ratio benches.

/// The median of `v` (the upper one for an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The smallest and largest of `v`.
pub(crate) fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// Checks the ratio `value` against a goal (`value >= target` if `at_least`, else
/// `value <= target`) and prints the verdict with the margin.
pub(crate) fn goal(what: &str, value: f64, at_least: bool, target: f64) {
    let met = if at_least {
        value >= target
    } else {
        value <= target
    };
    let verdict = if met { "MET" } else { "MISSED" };
    let cmp = if at_least { ">=" } else { "<=" };
    let margin = if at_least {
        value / target
    } else {
        target / value
    };
    println!("  {what:<58} {value:>8.3}x  (goal {cmp} {target}x: {verdict}, {margin:.2}x of goal)");
}
