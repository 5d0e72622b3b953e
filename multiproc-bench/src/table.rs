//! The table on stdout.

use std::fmt::Write;

use crate::model::{Bench, Report, Status};

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
        "time: median per unit over rounds (range min-max); \"vs pipe\" and \"vs floor\": how many times as fast as\n\
         the OS pipe and the minimal shared-memory ring, median of the ratios taken within each round (> 1: faster)"
    );
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    for g in &report.groups {
        let _ = writeln!(out, "\n{}", g.title);
        let bytes = !matches!(g.bench, Bench::Latency { .. });
        let _ = writeln!(
            out,
            "  {:<34} {:>10} {:>21} {:>10}{} {:>8} {:>8}",
            "mechanism",
            "time",
            "range",
            format!("{}/s", if g.unit == "message" { "msgs" } else { "RTs" }),
            if bytes {
                format!(" {:>10}", "bytes/s")
            } else {
                String::new()
            },
            "vs pipe",
            "vs floor"
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
                        "  {:<34} {:>10} {:>21} {:>10}{} {:>8} {:>8}{flags}",
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
                        fmt_ratio(r.speed_vs_pipe),
                        fmt_ratio(r.speed_vs_floor),
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
