//! The SVG plot: it parses as XML, names every series in its legend, draws a line per series
//! (broken where a measurement failed) and survives reports with little or nothing in them.

use multiproc_bench::model::*;
use multiproc_bench::plot::{legend_labels, render_svg, write_svg};

const MIB: u64 = 1024 * 1024;
const SIZES: [u64; 5] = [8, 64, 4096, MIB, 16 * MIB];
const MECHANISMS: [(&str, &str); 3] = [
    ("mp-queue-bytes", "multiproc Queue (bytes)"),
    ("os-pipe", "OS pipe"),
    ("floor-ring", "shared-memory ring <floor> & reference"),
];
/// Mutexes of a lock group, which the plot ignores.
const LOCKS: [(&str, &str); 4] = [
    ("mp-lock", "multiproc Lock"),
    ("mp-lock-api", "lock_api::Mutex over RawLock"),
    ("futex-mutex", "bare futex mutex (reference)"),
    ("pthread-mutex", "pthread mutex, process-shared"),
];
/// The mechanism that fails at 4096 bytes.
const FAILING: &str = "os-pipe";

fn machine() -> Machine {
    Machine {
        cpu_model: "Example CPU 3000 @ 3.0GHz".into(),
        logical_cpus: 16,
        allowed_cpus: (0..16).collect(),
        pinned: Some([2, 3]),
        kernel: "6.8.0-test".into(),
        os: "Test Linux 1".into(),
        memory_bytes: 32 << 30,
        python: None,
    }
}

fn row(mechanism: &str, label: &str, status: Status, ns: Option<f64>, size: u64) -> Row {
    let ok = status == Status::Ok;
    let ns = if ok { ns } else { None };
    Row {
        mechanism: mechanism.into(),
        label: label.into(),
        status,
        error: (!ok).then(|| "message 17 lost".to_string()),
        samples_ns: ns.into_iter().collect(),
        disturbed: ns.map(|_| false).into_iter().collect(),
        retries: 0,
        median_ns: ns,
        min_ns: ns,
        max_ns: ns,
        per_s: ns.map(|n| 1e9 / n),
        bytes_per_s: ns.filter(|_| size > 0).map(|n| size as f64 * 1e9 / n),
        speed_vs_first: None,
        speed_vs_second: None,
        verified_messages: if ok { 1000 } else { 0 },
    }
}

fn report(groups: Vec<Group>) -> Report {
    Report {
        tool: "multiproc-bench 0.1.0".into(),
        machine: machine(),
        config: Config {
            quick: true,
            rounds: 1,
            target_ms: 10.0,
            check: "full".into(),
            command: "multiproc-bench --quick".into(),
        },
        groups,
        notes: vec![],
    }
}

fn synthetic() -> Report {
    let mut groups = Vec::new();
    for (m, mode) in [
        LatencyMode::Awake,
        LatencyMode::Asleep,
        LatencyMode::OneCore,
    ]
    .into_iter()
    .enumerate()
    {
        groups.push(Group {
            bench: Bench::Latency { mode },
            title: format!("round trip, {mode:?}"),
            unit: "round trip".into(),
            references: Reference::channel(),
            rows: MECHANISMS
                .iter()
                .enumerate()
                .map(|(i, (id, label))| {
                    let ns = 150.0 * 4f64.powi(i as i32) * (1.0 + m as f64);
                    row(id, label, Status::Ok, Some(ns), 8)
                })
                .collect(),
        });
    }
    for size in SIZES {
        groups.push(Group {
            bench: Bench::Throughput { size },
            title: format!("one way, {size} B messages"),
            unit: "message".into(),
            references: Reference::channel(),
            rows: MECHANISMS
                .iter()
                .enumerate()
                .map(|(i, (id, label))| {
                    let status = if *id == FAILING && size == 4096 {
                        Status::Failed
                    } else {
                        Status::Ok
                    };
                    let ns = 60.0 * (i + 1) as f64 + size as f64 / (2.0 + i as f64);
                    row(id, label, status, Some(ns), size)
                })
                .collect(),
        });
    }
    // Groups the plot does not draw: they must neither appear nor take a colour.
    let bench = Bench::Locks {
        case: LockCase::TwoCores,
    };
    groups.push(Group {
        bench,
        title: "lock + increment + unlock, two processes contending on two cores".into(),
        unit: "lock+unlock".into(),
        references: bench.references(),
        rows: LOCKS
            .iter()
            .map(|(id, label)| row(id, label, Status::Ok, Some(40.0), 0))
            .collect(),
    });
    groups.push(Group {
        bench: Bench::Pairs { pairs: 4 },
        title: "round trip, 8 B, 4 pair(s) at once".into(),
        unit: "round trip".into(),
        references: Reference::channel(),
        rows: MECHANISMS
            .iter()
            .map(|(id, label)| row(id, label, Status::Ok, Some(9000.0), 0))
            .collect(),
    });
    report(groups)
}

fn text_of(node: roxmltree::Node) -> String {
    node.text().unwrap_or("").trim().to_string()
}

#[test]
fn synthetic_report_renders_parseable_svg_with_every_series() {
    let svg = render_svg(&synthetic()).expect("render");
    let doc = roxmltree::Document::parse(&svg).expect("the SVG parses as XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );

    // Every mechanism is a legend entry, in report order, as text of its own.
    let legend: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text") && n.attribute("class") == Some("legend"))
        .collect();
    let legend_texts: Vec<String> = legend.iter().map(|n| text_of(*n)).collect();
    let labels: Vec<String> = MECHANISMS.iter().map(|(_, l)| l.to_string()).collect();
    assert_eq!(legend_texts, labels);
    assert_eq!(legend_labels(&svg).expect("legend labels"), labels);

    // The title names the machine; the latency panels are there and name every mechanism.
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(text_of)
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("Example CPU 3000")
            && t.contains("16 CPUs")
            && t.contains("6.8.0-test")),
        "{texts:?}"
    );
    for title in ["receiver awake", "receiver asleep", "both on one core"] {
        assert!(texts.iter().any(|t| t == title), "no panel {title:?}");
    }
    for label in &labels {
        // One legend entry plus one axis label per latency panel.
        let count = texts.iter().filter(|t| *t == label).count();
        assert_eq!(count, 4, "{label:?} appears {count} times");
    }
    for tick in ["8 B", "4 KiB", "16 MiB"] {
        assert!(texts.iter().any(|t| t == tick), "no size tick {tick:?}");
    }
    assert!(texts.iter().any(|t| t.ends_with("B/s")), "no rate tick");
    assert!(texts.iter().any(|t| t.ends_with(" ns")), "no latency tick");

    // Lines: one per run of consecutive figures (the failing mechanism's line is broken in
    // two), plus a sample line per legend entry, all two pixels wide.
    let wide_lines = doc
        .descendants()
        .filter(|n| {
            (n.has_tag_name("polyline") || n.has_tag_name("path"))
                && n.attribute("stroke-width") == Some("2")
        })
        .count();
    assert!(wide_lines >= 4 + 3, "only {wide_lines} series lines");

    // Markers in the failing mechanism's colour (read from its legend entry): the four sizes
    // it has figures for, plus the legend's.
    let failing_label = MECHANISMS.iter().find(|(id, _)| *id == FAILING).unwrap().1;
    let entry = legend
        .iter()
        .find(|n| text_of(**n) == failing_label)
        .unwrap();
    let legend_marker = entry
        .prev_sibling_element()
        .filter(|n| n.has_tag_name("circle"))
        .expect("a legend marker before the legend text");
    let colour = legend_marker.attribute("fill").expect("marker fill");
    let markers = doc
        .descendants()
        .filter(|n| n.has_tag_name("circle") && n.attribute("fill") == Some(colour))
        .count();
    assert_eq!(markers, 4 + 1);

    // One bar per mechanism and panel, in the mechanism's colour.
    let bars = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(colour))
        .count();
    assert_eq!(bars, 3);
}

#[test]
fn empty_report_does_not_panic() {
    match render_svg(&report(vec![])) {
        Ok(svg) => {
            let doc = roxmltree::Document::parse(&svg).expect("the SVG parses as XML");
            assert_eq!(doc.root_element().tag_name().name(), "svg");
            assert!(legend_labels(&svg).expect("legend labels").is_empty());
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

#[test]
fn odd_reports_do_not_panic() {
    let mut only_failures = synthetic();
    for g in &mut only_failures.groups {
        for r in &mut g.rows {
            r.status = Status::Failed;
        }
    }
    let mut odd_figures = synthetic();
    for (i, r) in odd_figures
        .groups
        .iter_mut()
        .flat_map(|g| &mut g.rows)
        .enumerate()
    {
        let v = [f64::NAN, 0.0, -1.0, f64::INFINITY, 5.0][i % 5];
        r.median_ns = Some(v);
        r.bytes_per_s = Some(v);
    }
    let mut one_size = synthetic();
    one_size
        .groups
        .retain(|g| matches!(g.bench, Bench::Throughput { size: 64 }));
    let mut same_figures = synthetic();
    for r in same_figures.groups.iter_mut().flat_map(|g| &mut g.rows) {
        r.median_ns = Some(1000.0);
        r.bytes_per_s = Some(1e9);
    }
    let mut no_rows = synthetic();
    for g in &mut no_rows.groups {
        g.rows.clear();
    }
    let mut zero_size = synthetic();
    zero_size
        .groups
        .retain(|g| !matches!(g.bench, Bench::Latency { .. }));
    for g in &mut zero_size.groups {
        g.bench = Bench::Throughput { size: 0 };
    }
    let mut no_throughput = synthetic();
    no_throughput
        .groups
        .retain(|g| matches!(g.bench, Bench::Latency { .. }));

    for report in [
        only_failures,
        odd_figures,
        one_size,
        same_figures,
        no_rows,
        zero_size,
        no_throughput,
    ] {
        match render_svg(&report) {
            Ok(svg) => {
                roxmltree::Document::parse(&svg).expect("the SVG parses as XML");
                legend_labels(&svg).expect("legend labels");
            }
            Err(e) => assert!(!e.is_empty()),
        }
    }
}

#[test]
fn write_svg_writes_the_document() {
    let dir = std::env::temp_dir().join(format!("multiproc-bench-svg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plot.svg");
    let report = synthetic();
    write_svg(&report, &path).expect("write");
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, render_svg(&report).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(write_svg(&report, &dir.join("missing").join("plot.svg")).is_err());
}
