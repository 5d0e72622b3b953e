//! The harness end to end: a run's JSON holds every mechanism with positive, verified figures
//! (the Python rows too when python3 is present), the lock and pairs groups among them, its SVG
//! names every measured series, and a deliberately broken transport is reported as failed
//! instead of measured.
//!
//! CI runs `multiproc-bench --quick --json FILE --svg FILE` and points `MULTIPROC_BENCH_JSON`
//! and `MULTIPROC_BENCH_SVG` at the files; without them, this test makes a short run of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use multiproc_bench::model::{Bench, LockCase, Report, Status};
use multiproc_bench::plot::legend_labels;
use multiproc_bench::validate::problems;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_multiproc-bench"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("multiproc-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

fn read_report(path: &Path) -> Report {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn python_present() -> bool {
    Command::new("python3")
        .args(["-c", "import multiprocessing"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The JSON and SVG of CI's quick run, or of a short run made here (once for every test).
fn run_files() -> (PathBuf, PathBuf) {
    static FILES: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    FILES.get_or_init(make_run_files).clone()
}

fn make_run_files() -> (PathBuf, PathBuf) {
    if let (Ok(json), Ok(svg)) = (
        std::env::var("MULTIPROC_BENCH_JSON"),
        std::env::var("MULTIPROC_BENCH_SVG"),
    ) {
        return (json.into(), svg.into());
    }
    let (json, svg) = (scratch("run.json"), scratch("run.svg"));
    let out = bench()
        .args(["--quick", "--rounds", "2", "--target-ms", "2"])
        .args(["--sizes", "8,4096,1048576"])
        .args(["--bench", "latency,throughput,producers,locks,pairs"])
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("run multiproc-bench");
    assert!(
        out.status.success(),
        "multiproc-bench failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (json, svg)
}

#[test]
fn a_run_reports_every_mechanism_verified_and_plots_it() {
    let (json, svg) = run_files();
    let report = read_report(&json);
    let python = python_present();
    let found = problems(&report, python);
    assert!(
        found.is_empty(),
        "the report is incomplete:\n{}",
        found.join("\n")
    );
    assert!(!report.machine.cpu_model.is_empty() && !report.machine.kernel.is_empty());
    if python {
        assert!(
            report.groups.iter().any(|g| g
                .rows
                .iter()
                .any(|r| r.mechanism.starts_with("py-") && r.status == Status::Ok)),
            "python3 is present but no Python row was measured"
        );
    }

    let text = std::fs::read_to_string(&svg).expect("read the SVG");
    roxmltree::Document::parse(&text).expect("the SVG parses as XML");
    let legend = legend_labels(&text).expect("legend");
    for g in &report.groups {
        if let multiproc_bench::model::Bench::Throughput { .. } = g.bench {
            for r in g.rows.iter().filter(|r| r.bytes_per_s.is_some()) {
                assert!(
                    legend.contains(&r.label),
                    "the SVG's legend lacks the series {:?} (has {legend:?})",
                    r.label
                );
            }
        }
    }
}

#[test]
fn the_lock_and_pairs_groups_are_complete() {
    let (json, _) = run_files();
    let report = read_report(&json);
    let ids = |b: &Bench| -> Vec<&str> {
        report
            .groups
            .iter()
            .filter(|g| g.bench == *b)
            .flat_map(|g| g.rows.iter().map(|r| r.mechanism.as_str()))
            .collect()
    };
    for case in [LockCase::Uncontended, LockCase::TwoCores, LockCase::OneCore] {
        let bench = Bench::Locks { case };
        let rows = ids(&bench);
        assert_eq!(
            rows,
            multiproc_bench::locks::ALL.map(|l| l.id()),
            "{case:?}: the lock group's rows"
        );
        let g = report.groups.iter().find(|g| g.bench == bench).unwrap();
        assert_eq!(g.references, bench.references());
        assert_eq!(g.references[0].mechanism, "futex-mutex");
        assert_eq!(g.references[1].mechanism, "pthread-mutex");
        for r in &g.rows {
            assert_eq!(r.status, Status::Ok, "{}: {r:?}", g.title);
            // At least the warm-up of every process and one timed cycle per round.
            assert!(
                r.verified_messages > report.config.rounds as u64 * 1000,
                "{r:?}"
            );
            let (Some(first), Some(second)) = (r.speed_vs_first, r.speed_vs_second) else {
                panic!("{}: {} lacks a ratio", g.title, r.label);
            };
            assert!(first > 0.0 && second > 0.0);
            if r.mechanism == "futex-mutex" {
                assert!(
                    (first - 1.0).abs() < 1e-9,
                    "the futex mutex against itself: {first}"
                );
            }
        }
    }
    let pairs: Vec<u32> = report
        .groups
        .iter()
        .filter_map(|g| match g.bench {
            Bench::Pairs { pairs } => Some(pairs),
            _ => None,
        })
        .collect();
    assert!(
        pairs.contains(&1) && pairs.contains(&16),
        "pairs groups: {pairs:?}"
    );
    for g in &report.groups {
        let Bench::Pairs { pairs } = g.bench else {
            continue;
        };
        assert_eq!(
            g.rows
                .iter()
                .map(|r| r.mechanism.as_str())
                .collect::<Vec<_>>(),
            multiproc_bench::mech::PAIRS.map(|m| m.id()),
            "{}: rows",
            g.title
        );
        for r in &g.rows {
            assert_eq!(r.status, Status::Ok, "{}: {r:?}", g.title);
            // The rate is that of all pairs together; the time is one pair's round trip.
            let (median, rate) = (r.median_ns.unwrap(), r.per_s.unwrap());
            let expected = f64::from(pairs) * 1e9 / median;
            assert!((rate / expected - 1.0).abs() < 1e-9, "{}: {r:?}", g.title);
            assert!(r.verified_messages >= 2 * u64::from(pairs) * report.config.rounds as u64);
            assert!(r.speed_vs_first.is_some() && r.speed_vs_second.is_some());
        }
    }
}

#[test]
fn a_broken_transport_or_mutex_fails_instead_of_looking_fast() {
    for fault in ["drop", "duplicate", "corrupt"] {
        for bench_args in [
            &["--bench", "throughput", "--sizes", "64"][..],
            &["--bench", "throughput", "--sizes", "8"],
            &["--bench", "latency"],
            // 1, 4 and 16 pairs: the fault falls in the warm-up, or (16) in the timed part.
            &["--bench", "pairs", "--quick"],
            &["--bench", "locks"],
        ] {
            let json = scratch(&format!("broken-{fault}.json"));
            let out = bench()
                .args([
                    "--inject-fault",
                    fault,
                    "--only",
                    "floor-ring",
                    "--no-python",
                ])
                .args(["--rounds", "1", "--target-ms", "1", "--timeout-s", "3"])
                .args(bench_args)
                .arg("--json")
                .arg(&json)
                .output()
                .expect("run multiproc-bench");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{fault} {bench_args:?}: a failed measurement must fail the run:\n{stdout}"
            );
            let report = read_report(&json);
            let id = format!("broken-{fault}");
            let mut seen = 0;
            for g in &report.groups {
                for r in g.rows.iter().filter(|r| r.mechanism == id) {
                    seen += 1;
                    assert_eq!(r.status, Status::Failed, "{fault} in {}: {r:?}", g.title);
                    assert!(r.median_ns.is_none() && r.samples_ns.is_empty() && r.per_s.is_none());
                    let why = r.error.as_deref().unwrap_or("");
                    if let Bench::Locks { .. } = g.bench {
                        assert!(
                            why.contains("the counter holds"),
                            "{fault} in {}: unexpected error {why:?}",
                            g.title
                        );
                        continue;
                    }
                    let expected = match fault {
                        "corrupt" => [
                            "checksum",
                            "stale",
                            "garbled",
                            "unknown producer",
                            "arrived where",
                            "echo",
                        ],
                        // A round trip whose message is lost waits until the watchdog fires.
                        _ => [
                            "arrived where",
                            "echo",
                            "timed out",
                            "arrived where",
                            "arrived where",
                            "arrived where",
                        ],
                    };
                    assert!(
                        expected.iter().any(|e| why.contains(e)),
                        "{fault} in {}: unexpected error {why:?}",
                        g.title
                    );
                }
                // The honest transports (or mutexes) in the same run still measure.
                let honest = match g.bench {
                    Bench::Locks { .. } => "futex-mutex",
                    _ => "floor-ring",
                };
                let row = g
                    .rows
                    .iter()
                    .find(|r| r.mechanism == honest)
                    .expect("honest row");
                assert_eq!(row.status, Status::Ok, "{}: {row:?}", g.title);
            }
            assert!(seen > 0, "{fault}: no row for the broken transport");
            assert!(
                stdout.contains("FAILED"),
                "{fault}: the table does not say FAILED:\n{stdout}"
            );
        }
    }
}
