//! The table on stdout.

use std::fmt::Write;

use crate::model::{Bench, Group, LatencyMode, LockCase, Report, Row, Status};

/// A duration in ns, readably.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A rate per second, readably.
pub fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e9 {
        format!("{:.2} G", per_s / 1e9)
    } else if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

/// The rate column's header for groups whose figures are per `unit`.
fn rate_header(unit: &str) -> &'static str {
    match unit {
        "message" => "msgs/s",
        "lock+unlock" => "ops/s",
        _ => "RTs/s",
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 10.0 => format!("{r:.1}x"),
        Some(r) => format!("{r:.2}x"),
        None => "-".into(),
    }
}

/// The whole report as text: a header with the machine, then one block per group.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let _ = writeln!(
        out,
        "{} on {} ({} logical CPUs), Linux {}, {}",
        report.tool, m.cpu_model, m.logical_cpus, m.kernel, m.os
    );
    let _ = writeln!(
        out,
        "processes pinned to CPUs {}; {} rounds per group; payload check: {}",
        m.pinned
            .map_or_else(|| "(not pinned)".into(), |[a, b]| format!("{a} and {b}")),
        report.config.rounds,
        report.config.check
    );
    let _ = writeln!(
        out,
        "time: median per unit over rounds (range min-max); \"vs X\": how many times as fast as the group's reference X\n\
         (pipe: the OS pipe, floor: the minimal shared-memory ring; for locks futex: the bare futex mutex, pthread:\n\
         the process-shared pthread mutex), median of the ratios taken within each round (> 1: faster)"
    );
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    for g in &report.groups {
        let _ = writeln!(out, "\n{}", g.title);
        let bytes = g.bench.message_bytes().is_some();
        let [first, second] = &g.references;
        let _ = writeln!(
            out,
            "  {:<34} {:>10} {:>21} {:>10}{} {:>10} {:>10}",
            "mechanism",
            "time",
            "range",
            rate_header(&g.unit),
            if bytes {
                format!(" {:>10}", "bytes/s")
            } else {
                String::new()
            },
            format!("vs {}", first.name),
            format!("vs {}", second.name),
        );
        for r in &g.rows {
            match r.status {
                Status::NotApplicable => continue,
                Status::Failed => {
                    let _ = writeln!(
                        out,
                        "  {:<34} FAILED: {}",
                        r.label,
                        r.error.as_deref().unwrap_or("?")
                    );
                }
                Status::Ok => {
                    let (Some(med), Some(lo), Some(hi)) = (r.median_ns, r.min_ns, r.max_ns) else {
                        continue;
                    };
                    let flags = {
                        let d = r.disturbed.iter().filter(|&&d| d).count();
                        if d > 0 {
                            format!("  ({d} round(s) disturbed by other load)")
                        } else {
                            String::new()
                        }
                    };
                    let _ = writeln!(
                        out,
                        "  {:<34} {:>10} {:>21} {:>10}{} {:>10} {:>10}{flags}",
                        r.label,
                        fmt_ns(med),
                        format!("{}-{}", fmt_ns(lo), fmt_ns(hi)),
                        r.per_s.map_or("-".into(), fmt_rate),
                        if bytes {
                            format!(
                                " {:>10}",
                                r.bytes_per_s
                                    .map_or("-".into(), |b| format!("{}B", fmt_rate(b)))
                            )
                        } else {
                            String::new()
                        },
                        fmt_ratio(r.speed_vs_first),
                        fmt_ratio(r.speed_vs_second),
                    );
                }
            }
        }
        let na: Vec<&str> = g
            .rows
            .iter()
            .filter(|r| r.status == Status::NotApplicable)
            .map(|r| r.label.as_str())
            .collect();
        if !na.is_empty() {
            let _ = writeln!(out, "  (does not apply: {})", na.join(", "));
        }
    }
    out
}

/// A compact Markdown table of the headline cases: one row per mechanism, one column per case,
/// each cell the median and, in parentheses, how many times as fast as the OS pipe. When the
/// report has lock groups, a second table follows for the mutexes, in parentheses how many times
/// as fast as the bare futex mutex.
pub fn markdown_summary(report: &Report) -> String {
    let channels = [
        (
            "round trip, awake",
            Bench::Latency {
                mode: LatencyMode::Awake,
            },
        ),
        (
            "round trip, asleep",
            Bench::Latency {
                mode: LatencyMode::Asleep,
            },
        ),
        (
            "round trip, one core",
            Bench::Latency {
                mode: LatencyMode::OneCore,
            },
        ),
        ("8 B one way", Bench::Throughput { size: 8 }),
        ("64 B one way", Bench::Throughput { size: 64 }),
        ("4 KiB one way", Bench::Throughput { size: 4096 }),
        ("64 KiB one way", Bench::Throughput { size: 65536 }),
        ("1 MiB one way", Bench::Throughput { size: 1 << 20 }),
        ("16 MiB one way", Bench::Throughput { size: 16 << 20 }),
        ("64 B, 4 producers", Bench::Producers { producers: 4 }),
        ("round trip, 16 pairs at once", Bench::Pairs { pairs: 16 }),
    ];
    let locks = [
        (
            "uncontended",
            Bench::Locks {
                case: LockCase::Uncontended,
            },
        ),
        (
            "two processes, two cores",
            Bench::Locks {
                case: LockCase::TwoCores,
            },
        ),
        (
            "two processes, one core",
            Bench::Locks {
                case: LockCase::OneCore,
            },
        ),
    ];
    let channels = present(report, &channels);
    let locks = present(report, &locks);
    let mut out = String::new();
    if !channels.is_empty() || locks.is_empty() {
        markdown_table(&mut out, "mechanism", &channels);
    }
    if !locks.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "Lock + increment + unlock of a process-shared mutex, time per cycle (in parentheses: how \
             many times as fast as the bare futex mutex)\n"
        );
        markdown_table(&mut out, "mutex", &locks);
    }
    out
}

/// The cases of `cases` that `report` has a group for.
fn present<'a>(report: &'a Report, cases: &[(&'a str, Bench)]) -> Vec<(&'a str, &'a Group)> {
    cases
        .iter()
        .filter_map(|&(name, b)| {
            report
                .groups
                .iter()
                .find(|g| g.bench == b)
                .map(|g| (name, g))
        })
        .collect()
}

/// One Markdown table: a row per mechanism of `cases`, a column per case.
fn markdown_table(out: &mut String, what: &str, cases: &[(&str, &Group)]) {
    let _ = write!(out, "| {what} |");
    for (name, _) in cases {
        let _ = write!(out, " {name} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in cases {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    let mut labels: Vec<&str> = Vec::new();
    for (_, g) in cases {
        for r in &g.rows {
            if !labels.contains(&r.label.as_str()) {
                labels.push(&r.label);
            }
        }
    }
    for label in labels {
        let _ = write!(out, "| {label} |");
        for (_, g) in cases {
            let cell = match g.rows.iter().find(|r| r.label == label) {
                Some(r) if r.status == Status::Ok => markdown_cell(g, r),
                Some(r) if r.status == Status::Failed => "failed".into(),
                _ => "n/a".into(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
}

/// A measured row's cell: its figure and, beside any row but the reference's own, how many
/// times as fast as the group's first reference.
fn markdown_cell(g: &Group, r: &Row) -> String {
    let value = match g.bench {
        Bench::Latency { .. } | Bench::Pairs { .. } | Bench::Locks { .. } => {
            r.median_ns.map(fmt_ns)
        }
        Bench::Throughput { size } if size <= 64 => {
            r.per_s.map(|p| format!("{} msg/s", fmt_rate(p)))
        }
        Bench::Producers { .. } | Bench::Consumers { .. } => {
            r.per_s.map(|p| format!("{} msg/s", fmt_rate(p)))
        }
        Bench::Throughput { .. } => r.bytes_per_s.map(|b| format!("{}B/s", fmt_rate(b))),
    };
    match (value, r.speed_vs_first) {
        (Some(v), Some(x)) if r.mechanism != g.references[0].mechanism => {
            format!("{v} ({})", fmt_ratio(Some(x)))
        }
        (Some(v), _) => v,
        (None, _) => "-".into(),
    }
}

/// The per-round ratios of the first reference's time to `row`'s in `group` (> 1: `row` is
/// faster).
fn round_ratios(group: &Group, row: &Row) -> Vec<f64> {
    let Some(pipe) = group
        .rows
        .iter()
        .find(|r| r.mechanism == group.references[0].mechanism && r.status == Status::Ok)
    else {
        return Vec::new();
    };
    if pipe.samples_ns.len() != row.samples_ns.len() {
        return Vec::new();
    }
    pipe.samples_ns
        .iter()
        .zip(&row.samples_ns)
        .map(|(p, r)| p / r)
        .collect()
}

/// The lower and upper quartiles of `v`.
fn quartiles(v: &[f64]) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    // Linear interpolation between the closest ranks.
    let at = |q: f64| {
        let x = (v.len() - 1) as f64 * q;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
    };
    Some((at(0.25), at(0.75)))
}

/// What [`compare`] found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Comparison {
    /// Ratios compared.
    pub cells: usize,
    /// Ratios whose medians differ by more than the tolerance.
    pub beyond_tolerance: usize,
    /// Of those, the ones whose interquartile ranges of per-round ratios do not overlap:
    /// a difference the noise within each run does not explain.
    pub beyond_noise: usize,
    /// The largest relative difference (0.1 = 10%).
    pub worst: f64,
}

/// Every ratio to the group's first reference (the OS pipe; for locks the bare futex mutex) of
/// the rows whose id starts with `prefix` ("mp-" for multiproc's, "" for all) in two reports,
/// side by side, with the relative difference of the medians and whether the runs'
/// interquartile ranges overlap.
pub fn compare(a: &Report, b: &Report, prefix: &str, tolerance: f64) -> (String, Comparison) {
    let mut out = String::new();
    let mut c = Comparison::default();
    let _ = writeln!(
        out,
        "{:<72} {:>19} {:>19} {:>7}",
        "group / mechanism: speed vs pipe (locks: vs futex), median [quartiles]", "A", "B", "diff"
    );
    for ga in &a.groups {
        let Some(gb) = b.groups.iter().find(|g| g.bench == ga.bench) else {
            continue;
        };
        let reference = &ga.references[0].mechanism;
        if gb.references[0].mechanism != *reference {
            continue;
        }
        for ra in ga
            .rows
            .iter()
            .filter(|r| r.mechanism.starts_with(prefix) && r.mechanism != *reference)
        {
            let Some(rb) = gb.rows.iter().find(|r| r.mechanism == ra.mechanism) else {
                continue;
            };
            let (Some(x), Some(y)) = (ra.speed_vs_first, rb.speed_vs_first) else {
                continue;
            };
            let (qa, qb) = (
                quartiles(&round_ratios(ga, ra)),
                quartiles(&round_ratios(gb, rb)),
            );
            let overlap = match (qa, qb) {
                (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 && b0 <= a1,
                _ => true,
            };
            let diff = (x - y).abs() / x.min(y);
            c.cells += 1;
            c.worst = c.worst.max(diff);
            let mark = if diff > tolerance {
                c.beyond_tolerance += 1;
                if overlap {
                    "  (within the runs' noise)"
                } else {
                    c.beyond_noise += 1;
                    "  <-- beyond the runs' noise"
                }
            } else {
                ""
            };
            let q = |q: Option<(f64, f64)>, m: f64| match q {
                Some((lo, hi)) => format!("{m:.2} [{lo:.2}-{hi:.2}]"),
                None => format!("{m:.2}"),
            };
            let _ = writeln!(
                out,
                "{:<72} {:>19} {:>19} {:>6.1}%{mark}",
                format!("{} / {}", ga.title, ra.label),
                q(qa, x),
                q(qb, y),
                diff * 100.0,
            );
        }
    }
    (out, c)
}
