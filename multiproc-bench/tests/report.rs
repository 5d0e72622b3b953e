//! The harness end to end: a run's JSON holds every mechanism with positive, verified figures
//! (the Python rows too when python3 is present), its SVG names every measured series, and a
//! deliberately broken transport is reported as failed instead of measured.
//!
//! CI runs `multiproc-bench --quick --json FILE --svg FILE` and points `MULTIPROC_BENCH_JSON`
//! and `MULTIPROC_BENCH_SVG` at the files; without them, this test makes a short run of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use multiproc_bench::model::{Report, Status};
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

/// The JSON and SVG of CI's quick run, or of a short run made here.
fn run_files() -> (PathBuf, PathBuf) {
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
        .args(["--bench", "latency,throughput,producers"])
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
fn a_broken_transport_fails_instead_of_looking_fast() {
    for fault in ["drop", "duplicate", "corrupt"] {
        for bench_args in [
            ["--bench", "throughput", "--sizes", "64"],
            ["--bench", "throughput", "--sizes", "8"],
            ["--bench", "latency", "--sizes", "8"],
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
                // The honest transports in the same run still measure.
                let floor = g
                    .rows
                    .iter()
                    .find(|r| r.mechanism == "floor-ring")
                    .expect("floor row");
                assert_eq!(floor.status, Status::Ok, "{}: {floor:?}", g.title);
            }
            assert!(seen > 0, "{fault}: no row for the broken transport");
            assert!(
                stdout.contains("FAILED"),
                "{fault}: the table does not say FAILED:\n{stdout}"
            );
        }
    }
}
