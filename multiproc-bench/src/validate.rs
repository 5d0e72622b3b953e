//! What a complete report must hold: every mechanism, every figure positive, every message
//! verified, the Python rows when Python ran. CI checks the `--quick --json` output with this.

use crate::mech::{ALL, Mech};
use crate::model::{Bench, Report, Status};

/// The problems found in `report`, empty if none. With `python`, the Python rows must be
/// present and measured.
pub fn problems(report: &Report, python: bool) -> Vec<String> {
    let mut out = Vec::new();
    if report.groups.is_empty() {
        out.push("no groups".to_string());
    }
    let mut expected: Vec<&str> = ALL.iter().map(|m| m.id()).collect();
    if python {
        expected.extend(crate::python::MECHANISMS.iter().map(|(id, _)| *id));
        if report.machine.python.is_none() {
            out.push("python3 is present but the report names no Python version".into());
        }
    }
    for id in &expected {
        let measured = report.groups.iter().any(|g| {
            g.rows
                .iter()
                .any(|r| r.mechanism == *id && r.status == Status::Ok)
        });
        if !measured {
            out.push(format!("{id}: no figure in any group"));
        }
    }
    for g in &report.groups {
        for id in &expected {
            if !g.rows.iter().any(|r| r.mechanism == *id) {
                out.push(format!("{}: no row for {id}", g.title));
            }
        }
        let has_bytes = !matches!(g.bench, Bench::Latency { .. });
        for r in &g.rows {
            let at = format!("{}: {}", g.title, r.label);
            match r.status {
                Status::NotApplicable => continue,
                Status::Failed => {
                    out.push(format!(
                        "{at}: FAILED: {}",
                        r.error.as_deref().unwrap_or("?")
                    ));
                    continue;
                }
                Status::Ok => {}
            }
            let positive = |what: &str, v: Option<f64>, out: &mut Vec<String>| {
                if !v.is_some_and(|v| v.is_finite() && v > 0.0) {
                    out.push(format!("{at}: {what} is {v:?}"));
                }
            };
            positive("median", r.median_ns, &mut out);
            positive("min", r.min_ns, &mut out);
            positive("max", r.max_ns, &mut out);
            positive("rate", r.per_s, &mut out);
            if has_bytes {
                positive("bytes/s", r.bytes_per_s, &mut out);
            }
            if r.samples_ns.len() != report.config.rounds
                || r.samples_ns.iter().any(|s| !(s.is_finite() && *s > 0.0))
            {
                out.push(format!(
                    "{at}: {} samples for {} rounds, or one not positive",
                    r.samples_ns.len(),
                    report.config.rounds
                ));
            }
            if r.verified_messages == 0 && r.mechanism != Mech::Memcpy.id() {
                out.push(format!("{at}: no message verified"));
            }
            if r.mechanism != Mech::OsPipe.id()
                && g.rows
                    .iter()
                    .any(|p| p.mechanism == Mech::OsPipe.id() && p.status == Status::Ok)
            {
                positive("speed vs pipe", r.speed_vs_pipe, &mut out);
            }
        }
    }
    out
}
