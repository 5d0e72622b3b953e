//! What a complete report must hold: every mechanism of every kind of group it has, every
//! figure positive, every message (or locked increment) verified, the Python rows when Python
//! ran. CI checks the `--quick --json` output with this.

use crate::mech::{ALL, Mech, PAIRS};
use crate::model::{Bench, Report, Status};

/// The mechanisms every group of `bench`'s kind must have a row for.
fn expected(bench: Bench, python: bool) -> Vec<&'static str> {
    match bench {
        Bench::Locks { .. } => crate::locks::ALL.iter().map(|l| l.id()).collect(),
        Bench::Pairs { .. } => PAIRS.iter().map(|m| m.id()).collect(),
        Bench::Latency { .. }
        | Bench::Throughput { .. }
        | Bench::Producers { .. }
        | Bench::Consumers { .. } => {
            let mut ids: Vec<&str> = ALL.iter().map(|m| m.id()).collect();
            if python {
                ids.extend(crate::python::MECHANISMS.iter().map(|(id, _)| *id));
            }
            ids
        }
    }
}

/// The problems found in `report`, empty if none. With `python`, the Python rows must be
/// present and measured.
pub fn problems(report: &Report, python: bool) -> Vec<String> {
    let mut out = Vec::new();
    if report.groups.is_empty() {
        out.push("no groups".to_string());
    }
    if python && report.machine.python.is_none() {
        out.push("python3 is present but the report names no Python version".into());
    }
    // Every mechanism of the kinds of groups present has a figure somewhere.
    let mut everyone: Vec<&str> = Vec::new();
    for g in &report.groups {
        for id in expected(g.bench, python) {
            if !everyone.contains(&id) {
                everyone.push(id);
            }
        }
    }
    for id in &everyone {
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
        for id in expected(g.bench, python) {
            if !g.rows.iter().any(|r| r.mechanism == id) {
                out.push(format!("{}: no row for {id}", g.title));
            }
        }
        if g.references != g.bench.references() {
            out.push(format!(
                "{}: ratios taken against {:?}, not {:?}",
                g.title,
                g.references,
                g.bench.references()
            ));
        }
        let has_bytes = g.bench.message_bytes().is_some();
        let reference_ok = |k: usize| {
            g.rows
                .iter()
                .any(|p| p.mechanism == g.references[k].mechanism && p.status == Status::Ok)
        };
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
            for (k, ratio) in [r.speed_vs_first, r.speed_vs_second]
                .into_iter()
                .enumerate()
            {
                let reference = &g.references[k];
                if r.mechanism != reference.mechanism && reference_ok(k) {
                    positive(&format!("speed vs {}", reference.name), ratio, &mut out);
                }
            }
        }
    }
    out
}
