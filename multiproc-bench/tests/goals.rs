//! `--bench goals` end to end: one short run measures the three cases with their own
//! contenders (every message checked, the in-place floor's every byte), prints a line per goal
//! with its ratio and the floor's, and writes the report's JSON; `--from` prints the same table
//! again from that JSON.

use std::process::Command;

use multiproc_bench::goals::{self, ratio};
use multiproc_bench::model::{Bench, Report, Status};

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_multiproc-bench"))
}

#[test]
fn a_goals_run_prints_every_goal_beside_its_floor() {
    let dir = std::env::temp_dir().join(format!("multiproc-bench-goals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let json = dir.join("goals.json");
    let out = bench()
        .args(["--bench", "goals", "--rounds", "2", "--target-ms", "2"])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run multiproc-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "multiproc-bench --bench goals failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read the JSON"))
            .expect("parse the JSON");
    assert!(goals::present(&report));
    let sizes: Vec<Bench> = report.groups.iter().map(|g| g.bench).collect();
    assert_eq!(
        sizes,
        [16 << 20, 1 << 20, 64].map(|size| Bench::Throughput { size })
    );
    // Each case has its own contenders, all measured and checked (those not in this build
    // are left out).
    for g in &report.groups {
        for r in &g.rows {
            assert_eq!(r.status, Status::Ok, "{}: {r:?}", g.title);
            assert_eq!(r.samples_ns.len(), 2, "{}: {r:?}", g.title);
            if r.mechanism != "memcpy" {
                assert!(r.verified_messages >= 2, "{}: {r:?}", g.title);
            }
        }
    }
    let ids = |size: u64| -> Vec<&str> {
        let g = report
            .groups
            .iter()
            .find(|g| g.bench == Bench::Throughput { size })
            .expect("group");
        g.rows.iter().map(|r| r.mechanism.as_str()).collect()
    };
    assert!(ids(16 << 20).contains(&"socketpair") && ids(16 << 20).contains(&"floor-ring"));
    assert!(ids(16 << 20).contains(&"memcpy") && !ids(16 << 20).contains(&"floor-loan"));
    assert!(ids(16 << 20).contains(&"mp-pipe"));
    assert!(ids(1 << 20).contains(&"floor-loan") && ids(1 << 20).contains(&"memcpy"));
    assert!(
        ids(1 << 20).contains(&"mp-queue-loan") && ids(1 << 20).contains(&"mp-queue-loan-unsafe")
    );
    assert_eq!(
        ids(64),
        [
            "mp-queue-plain-batch",
            "mp-queue-plain",
            "floor-ring-batch",
            "floor-ring"
        ]
    );
    let one_mib = &report.groups[1];
    let r = ratio(one_mib, "floor-loan", "memcpy").expect("floor-loan / memcpy");
    assert!(r.median > 0.0 && r.min <= r.median && r.median <= r.max && r.rounds == 2);

    for needle in [
        "mp-queue-bytes / socketpair",
        "floor-ring / socketpair",
        "mp-queue-loan / iceoryx2-loan",
        "floor-loan / memcpy",
        "mp-queue-bytes / memcpy",
        "floor-ring / memcpy",
        "mp-queue-plain-batch / mp-queue-plain",
        "floor-ring-batch / mp-queue-plain",
        "mp-queue-loan / memcpy",
        "mp-pipe / socketpair",
        "socketpair / os-pipe",
        "memcpy / socketpair",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    let again = bench()
        .args(["--bench", "goals", "--from"])
        .arg(&json)
        .output()
        .expect("run multiproc-bench --from");
    let text = String::from_utf8_lossy(&again.stdout);
    let table = |s: &str| s[s.find("Goals (issue 13)").expect("goal table")..].to_string();
    assert_eq!(table(&text), table(&stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn goals_run_alone() {
    let out = bench()
        .args(["--bench", "goals,latency", "--quick"])
        .output()
        .expect("run multiproc-bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs alone"));
}
