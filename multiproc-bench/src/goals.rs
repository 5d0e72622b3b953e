//! `--bench goals`: the performance goals of the project's issue 13 from one run, with the
//! contenders of each case alternating round by round, and beside each goal the same ratio
//! for a floor (a minimal reference doing the same work in the same run), so a reader sees
//! what the hardware allows.
//!
//! | case | goal | floor shown |
//! |---|---|---|
//! | 16 MiB one way, copy API | >= 5x a Unix socketpair | floor-ring / socketpair (and memcpy / socketpair) |
//! | 1 MiB one way, loan API, every byte written and read in place | >= 1.0x iceoryx2 doing the same | floor-loan / iceoryx2-loan |
//! | the same | >= 0.9x a single-core memcpy | floor-loan / memcpy |
//! | 1 MiB one way, copy API | >= 0.8x a single-core memcpy | floor-ring / memcpy |
//! | 64 B one way, batches of 32 | >= 2x the same queue one at a time | floor-ring / mp-queue-plain |
//! | 64 B one way, one at a time | no regression (`--compare` two reports) | floor-ring / mp-queue-plain |
//!
//! A ratio "A / B" is how many times as fast A is as B: the median over rounds of B's time
//! divided by A's time in the same round (rounds in which either measurement stayed disturbed
//! by other load are left out while at least three remain), with the smallest and largest of
//! those per-round ratios. A goal whose mechanism is not in the build (`mp-queue-loan`;
//! `iceoryx2-loan` without the cargo feature `iceoryx2`) or cannot carry the size (a message
//! limit) says so instead of a figure.

use std::fmt::Write;

use crate::mech::{ALL, IN_PLACE, Mech};
use crate::method::{Who, median};
use crate::model::{Bench, Group, Report, Status};

/// The loan mechanism of multiproc the loan goals are about.
pub const LOAN: &str = "mp-queue-loan";
/// The iceoryx2 row (cargo feature `iceoryx2`).
pub const ICEORYX2: &str = "iceoryx2-loan";

const MIB: u64 = 1 << 20;

/// The ids measured in each case, in table order (those not in the build are left out).
const CASES: [(u64, &[&str]); 3] = [
    (
        16 * MIB,
        &[
            "mp-queue-bytes",
            "mp-pipe",
            "socketpair",
            "os-pipe",
            "os-pipe-1m",
            "floor-ring",
            "memcpy",
        ],
    ),
    (
        MIB,
        &[
            LOAN,
            "mp-queue-loan-unsafe",
            ICEORYX2,
            "floor-loan",
            "memcpy",
            "mp-queue-bytes",
            "floor-ring",
        ],
    ),
    (
        64,
        &[
            "mp-queue-plain-batch",
            "mp-queue-plain",
            "floor-ring-batch",
            "floor-ring",
        ],
    ),
];

/// One goal: `row` against `base` in the group of `size`, and the floor's ratio beside it.
struct Goal {
    case: &'static str,
    size: u64,
    row: &'static str,
    base: &'static str,
    /// The least ratio that meets the goal, or `None` for a goal one run cannot judge.
    at_least: Option<f64>,
    /// What the goal says.
    goal: &'static str,
    /// (row, base) of the floor reference's ratio.
    floor: (&'static str, &'static str),
}

const GOALS: [Goal; 7] = [
    Goal {
        case: "16 MiB one way, copy (Queue bytes)",
        size: 16 * MIB,
        row: "mp-queue-bytes",
        base: "socketpair",
        at_least: Some(5.0),
        goal: ">= 5x socketpair",
        floor: ("floor-ring", "socketpair"),
    },
    Goal {
        case: "16 MiB one way, copy (pipe())",
        size: 16 * MIB,
        row: "mp-pipe",
        base: "socketpair",
        at_least: Some(5.0),
        goal: ">= 5x socketpair",
        floor: ("floor-ring", "socketpair"),
    },
    Goal {
        case: "1 MiB one way, loan API, in place",
        size: MIB,
        row: LOAN,
        base: ICEORYX2,
        at_least: Some(1.0),
        goal: ">= 1.0x iceoryx2",
        floor: ("floor-loan", ICEORYX2),
    },
    Goal {
        case: "1 MiB one way, loan API, in place",
        size: MIB,
        row: LOAN,
        base: "memcpy",
        at_least: Some(0.9),
        goal: ">= 0.9x memcpy",
        floor: ("floor-loan", "memcpy"),
    },
    Goal {
        case: "1 MiB one way, copy (Queue bytes)",
        size: MIB,
        row: "mp-queue-bytes",
        base: "memcpy",
        at_least: Some(0.8),
        goal: ">= 0.8x memcpy",
        floor: ("floor-ring", "memcpy"),
    },
    Goal {
        case: "64 B one way, batches of 32",
        size: 64,
        row: "mp-queue-plain-batch",
        base: "mp-queue-plain",
        at_least: Some(2.0),
        goal: ">= 2x one at a time",
        // The minimal ring publishing once per 32 messages, against the queue one at a time:
        // what batching can gain at most over it.
        floor: ("floor-ring-batch", "mp-queue-plain"),
    },
    Goal {
        case: "64 B one way, one at a time",
        size: 64,
        row: "mp-queue-plain",
        base: "floor-ring",
        at_least: None,
        goal: "no regression",
        floor: ("floor-ring", "mp-queue-plain"),
    },
];

/// Every mechanism of this build, by id.
fn mechanism(id: &str) -> Option<Mech> {
    ALL.iter().chain(IN_PLACE).copied().find(|m| m.id() == id)
}

/// The groups of a goals run: each case with its contenders of this build.
pub fn plan() -> Vec<(Bench, Vec<Who>)> {
    CASES
        .iter()
        .map(|&(size, ids)| {
            let who = ids
                .iter()
                .filter_map(|id| mechanism(id))
                .map(Who::Rust)
                .collect();
            (Bench::Throughput { size }, who)
        })
        .collect()
}

/// A per-round ratio summary: median, smallest, largest, rounds used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    /// The median of the per-round ratios.
    pub median: f64,
    /// The smallest per-round ratio.
    pub min: f64,
    /// The largest per-round ratio.
    pub max: f64,
    /// Rounds the figures come from.
    pub rounds: usize,
}

/// How many times as fast `row` is as `base` in `group`, round by round; or why there is no
/// figure.
pub fn ratio(group: &Group, row: &str, base: &str) -> Result<Ratio, String> {
    let find = |id: &str| -> Result<&crate::model::Row, String> {
        let r = group
            .rows
            .iter()
            .find(|r| r.mechanism == id)
            .ok_or_else(|| format!("{id} not in this build"))?;
        match r.status {
            Status::Ok => Ok(r),
            Status::NotApplicable => Err(format!(
                "{id}: {}",
                r.error.as_deref().unwrap_or("not applicable")
            )),
            Status::Failed => Err(format!("{id} FAILED")),
        }
    };
    let (a, b) = (find(row)?, find(base)?);
    let per_round = |clean_only: bool| -> Vec<f64> {
        a.samples_ns
            .iter()
            .zip(&b.samples_ns)
            .enumerate()
            .filter(|&(i, _)| {
                !clean_only
                    || !(a.disturbed.get(i).copied().unwrap_or(false)
                        || b.disturbed.get(i).copied().unwrap_or(false))
            })
            .map(|(_, (ta, tb))| tb / ta)
            .filter(|r| r.is_finite())
            .collect()
    };
    let clean = per_round(true);
    let v = if clean.len() >= 3 {
        clean
    } else {
        per_round(false)
    };
    let median = median(&v).ok_or("no round measured both")?;
    Ok(Ratio {
        median,
        min: v.iter().copied().fold(f64::INFINITY, f64::min),
        max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        rounds: v.len(),
    })
}

fn fmt_ratio(r: &Ratio) -> String {
    let d = |x: f64| if x >= 10.0 { 1 } else { 2 };
    format!(
        "{:.*}x ({:.*}-{:.*})",
        d(r.median),
        r.median,
        d(r.min),
        r.min,
        d(r.max),
        r.max
    )
}

/// Whether `report` has the groups of a goals run.
pub fn present(report: &Report) -> bool {
    CASES.iter().all(|&(size, _)| {
        report
            .groups
            .iter()
            .any(|g| g.bench == Bench::Throughput { size })
    })
}

/// The goal table of `report` (a goals run).
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Goals (issue 13), from this run: \"A / B\" = how many times as fast A is as B, median of \
         the per-round\nratios (range min-max); \"floor\": the same ratio for the minimal \
         reference doing the same work"
    );
    let _ = writeln!(
        out,
        "\n  {:<38} {:<36} {:>20} {:<19} {:<4} {:<28} {:>20}",
        "case", "ratio A / B", "median (range)", "goal", "met", "floor", "median (range)"
    );
    let mut why_not = Vec::new();
    let mut figure = |r: &Result<Ratio, String>| match r {
        Ok(r) => fmt_ratio(r),
        Err(why) => {
            if !why_not.contains(why) {
                why_not.push(why.clone());
            }
            "-".into()
        }
    };
    for g in &GOALS {
        let Some(group) = report
            .groups
            .iter()
            .find(|x| x.bench == Bench::Throughput { size: g.size })
        else {
            continue;
        };
        let mine = ratio(group, g.row, g.base);
        let met = match (&mine, g.at_least) {
            (Ok(r), Some(k)) if r.median >= k => "yes",
            (Ok(_), Some(_)) => "NO",
            _ => "-",
        };
        let _ = writeln!(
            out,
            "  {:<38} {:<36} {:>20} {:<19} {:<4} {:<28} {:>20}",
            g.case,
            format!("{} / {}", g.row, g.base),
            figure(&mine),
            g.goal,
            met,
            format!("{} / {}", g.floor.0, g.floor.1),
            figure(&ratio(group, g.floor.0, g.floor.1)),
        );
    }
    for why in &why_not {
        let _ = writeln!(out, "  -: {why}");
    }
    // For the socketpair goal: the kernel's other stream, and one copy on one core (the most
    // any copying channel could approach).
    if let Some(group) = report
        .groups
        .iter()
        .find(|x| x.bench == Bench::Throughput { size: 16 * MIB })
    {
        let _ = writeln!(out);
        for (a, b) in [
            ("socketpair", "os-pipe"),
            ("os-pipe-1m", "os-pipe"),
            ("memcpy", "socketpair"),
            ("floor-ring", "memcpy"),
        ] {
            let r = ratio(group, a, b).map_or_else(|e| format!("- ({e})"), |r| fmt_ratio(&r));
            let _ = writeln!(out, "  at 16 MiB, {a} / {b}: {r}");
        }
    }
    let _ = writeln!(
        out,
        "  \"no regression\" needs two runs: save this one with --json and use --compare"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Config, Machine, Row};

    fn row(id: &str, samples: &[f64], status: Status) -> Row {
        Row {
            mechanism: id.into(),
            label: id.into(),
            status,
            error: None,
            samples_ns: samples.to_vec(),
            disturbed: vec![false; samples.len()],
            retries: 0,
            median_ns: median(samples),
            min_ns: None,
            max_ns: None,
            per_s: None,
            bytes_per_s: None,
            speed_vs_first: None,
            speed_vs_second: None,
            verified_messages: 1,
        }
    }

    fn group(size: u64, rows: Vec<Row>) -> Group {
        let bench = Bench::Throughput { size };
        Group {
            bench,
            title: String::new(),
            unit: "message".into(),
            references: bench.references(),
            rows,
        }
    }

    #[test]
    fn ratios_are_per_round_medians_without_disturbed_rounds() {
        let mut a = row("a", &[10.0, 20.0, 10.0, 10.0, 1.0], Status::Ok);
        a.disturbed[4] = true;
        let b = row("b", &[50.0, 20.0, 30.0, 40.0, 100.0], Status::Ok);
        let g = group(64, vec![a, b]);
        let r = ratio(&g, "a", "b").unwrap();
        assert_eq!(r.rounds, 4);
        assert_eq!((r.min, r.max), (1.0, 5.0));
        assert!((r.median - 3.5).abs() < 1e-12, "{r:?}");
        assert!(
            ratio(&g, "a", "c")
                .unwrap_err()
                .contains("not in this build")
        );
        let g = group(
            64,
            vec![
                row("a", &[], Status::NotApplicable),
                row("b", &[1.0], Status::Ok),
            ],
        );
        assert!(ratio(&g, "a", "b").is_err());
    }

    #[test]
    fn the_table_judges_each_goal() {
        let groups = CASES
            .iter()
            .map(|&(size, ids)| {
                let rows = ids
                    .iter()
                    .map(|id| {
                        // Everyone takes 100 ns but the socketpair (1000) and the batch (40).
                        let t = match *id {
                            "socketpair" => 1000.0,
                            "mp-queue-plain-batch" => 40.0,
                            _ => 100.0,
                        };
                        row(id, &[t, t, t], Status::Ok)
                    })
                    .collect();
                group(size, rows)
            })
            .collect();
        let report = Report {
            tool: String::new(),
            machine: Machine {
                cpu_model: String::new(),
                logical_cpus: 2,
                allowed_cpus: vec![0, 1],
                pinned: None,
                kernel: String::new(),
                os: String::new(),
                memory_bytes: 0,
                python: None,
            },
            config: Config {
                quick: true,
                rounds: 3,
                target_ms: 1.0,
                check: "full".into(),
                command: String::new(),
            },
            groups,
            notes: Vec::new(),
        };
        assert!(present(&report));
        let text = render(&report);
        let line = |needle: &str| -> String {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
                .to_string()
        };
        assert!(line("mp-queue-bytes / socketpair").contains("10.0x (10.0-10.0)"));
        assert!(line("mp-queue-bytes / socketpair").contains(" yes "));
        assert!(line("mp-queue-plain-batch / mp-queue-plain").contains("2.50x"));
        assert!(line("mp-queue-bytes / memcpy").contains(" yes "));
        assert!(line("mp-queue-loan / iceoryx2-loan").contains("1.00x"));
        assert!(line("socketpair / os-pipe").contains("0.10x"));
    }
}
