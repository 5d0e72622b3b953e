//! `cargo run --release -p multiproc-bench -- [--quick] [--json FILE] [--svg FILE]`
//!
//! `cargo run --release -p multiproc-bench -- --bench goals [--json FILE]`: the goal table of
//! issue 13 from one run (add `--features iceoryx2` before `--` for the iceoryx2 row).
//!
//! Measures multiproc's queues and pipes beside OS pipes, a socketpair, eventfd + shared
//! memory, a minimal shared-memory ring (the floor), memcpy (the copy ceiling) and Python's
//! multiprocessing, all the same way: between two processes pinned to different CPUs, every
//! message checked, contenders alternating round by round; and multiproc's locks beside a bare
//! futex mutex and a process-shared pthread mutex, every increment counted. See the README's
//! "Performance".

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use multiproc_bench::check::Check;
use multiproc_bench::locks::{self, LockMech};
use multiproc_bench::mech::{ALL, Fault, IN_PLACE, Mech};
use multiproc_bench::method::{Settings, Who, progress, run_groups};
use multiproc_bench::model::{Bench, Config, LatencyMode, LockCase, Report, Status};
use multiproc_bench::python::{self, Python};
use multiproc_bench::sys::{Placement, allowed_cpus, install_watchdog, pin_to};
use multiproc_bench::{machine, plot, table};

/// Every IPC mechanism, measured the same way.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A short run (under a minute): fewer rounds, shorter measurements.
    #[arg(long)]
    quick: bool,
    /// Write every figure and the machine description to this JSON file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the plots (throughput vs size, latency per mechanism) to this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Write a compact Markdown table of the headline cases to this file.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Measure nothing: load this JSON report and write its table, Markdown and SVG.
    #[arg(long, value_name = "FILE", conflicts_with = "compare")]
    from: Option<PathBuf>,
    /// Measure nothing: compare every multiproc/pipe ratio of two JSON reports. Exit status
    /// 3 if one differs by more than --tolerance and beyond the noise within the runs.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<PathBuf>>,
    /// With --compare: every mechanism's ratio, not only multiproc's.
    #[arg(long, requires = "compare")]
    compare_all: bool,
    /// Largest relative difference --compare accepts, in percent.
    #[arg(long, default_value_t = 15.0)]
    tolerance: f64,
    /// Recorded rounds per group (default 15, or 3 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Length of the timed part of each measurement in ms (default 150, or 5 with --quick).
    #[arg(long)]
    target_ms: Option<f64>,
    /// Payload check: "full" (a checksum of every byte) or "pages" (header, length and a
    /// stamp per 4 KiB page; for measuring copies near memory bandwidth).
    #[arg(long, default_value = "full")]
    check: CheckArg,
    /// Only these mechanisms (comma-separated ids, e.g. os-pipe,mp-queue-bytes,py-queue,mp-lock).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Only these benchmarks: latency, throughput, producers, consumers, locks (lock + unlock
    /// of a process-shared mutex), pairs (round trips of 1 to 16 pairs at once), wait
    /// (`multiproc::wait` over 64 objects against a plain get; only when asked for, and
    /// reported after the table). Alone: goals (the goal table of issue 13 from one run: one
    /// way at 16 MiB, 1 MiB and 64 B, each goal's ratio beside the same ratio for a floor;
    /// about a minute and a half).
    #[arg(long, value_delimiter = ',')]
    bench: Option<Vec<BenchArg>>,
    /// Message sizes for the throughput benchmark (bytes, comma-separated; default 8 B to
    /// 16 MiB).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<u64>>,
    /// Skip Python even if python3 is present.
    #[arg(long)]
    no_python: bool,
    /// Add a deliberately broken transport that loses, duplicates or corrupts one message, and
    /// a broken mutex that loses, doubles or corrupts one increment (the harness must report
    /// them as failed, not measure them).
    #[arg(long)]
    inject_fault: Option<Fault>,
    /// Attempts per measurement while other load disturbs it.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// A measurement still running after this many seconds fails (a lost message cannot
    /// hang the run).
    #[arg(long, default_value_t = 60)]
    timeout_s: u32,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CheckArg {
    Full,
    Pages,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchArg {
    Latency,
    Throughput,
    Producers,
    Consumers,
    Locks,
    Pairs,
    Wait,
    Goals,
}

/// The largest message size accepted (every ring is at least twice as large).
const MAX_SIZE: u64 = 256 << 20;

/// Pairs of processes making round trips at once (fewer with --quick).
const PAIRS: [u32; 5] = [1, 2, 4, 8, 16];
const QUICK_PAIRS: [u32; 3] = [1, 4, 16];

const SIZES: [u64; 12] = [
    8,
    16,
    64,
    256,
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
];

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("multiproc-bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn load(path: &std::path::Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(args: Args) -> Result<ExitCode, String> {
    if let Some(paths) = &args.compare {
        let (a, b) = (load(&paths[0])?, load(&paths[1])?);
        let prefix = if args.compare_all { "" } else { "mp-" };
        let tolerance = args.tolerance / 100.0;
        let (text, c) = table::compare(&a, &b, prefix, tolerance);
        print!("{text}");
        println!(
            "{} ratios: largest difference {:.1}%; {} differ by more than {}%, {} of them beyond \
             the noise within the runs (quartiles of the per-round ratios do not overlap)",
            c.cells,
            c.worst * 100.0,
            c.beyond_tolerance,
            args.tolerance,
            c.beyond_noise
        );
        return Ok(if c.beyond_noise > 0 {
            ExitCode::from(3)
        } else {
            ExitCode::SUCCESS
        });
    }
    if let Some(path) = &args.from {
        let report = load(path)?;
        return output(&args, &report);
    }
    let mut notes = Vec::new();
    let allowed = allowed_cpus();
    let pinned = match allowed.as_slice() {
        [a, b, ..] => Some([*a, *b]),
        _ => {
            let msg = format!(
                "only {} CPU(s) available: processes are not pinned, and the two-core figures share one core",
                allowed.len()
            );
            eprintln!("warning: {msg}");
            notes.push(msg);
            None
        }
    };
    let placement = Placement {
        parent: pinned.map(|p| p[0]),
        child: pinned.map(|p| p[1]),
    };
    if let Some(cpu) = placement.parent {
        pin_to(cpu)?;
    }
    let goals = args
        .bench
        .as_ref()
        .is_some_and(|b| b.contains(&BenchArg::Goals));
    let settings = Settings {
        rounds: args
            .rounds
            .unwrap_or(if args.quick { 3 } else { 15 })
            .max(1),
        target: Duration::from_secs_f64(
            args.target_ms
                .unwrap_or(if args.quick { 5.0 } else { 150.0 })
                .max(0.1)
                / 1e3,
        ),
        check: match args.check {
            CheckArg::Full => Check::Full,
            CheckArg::Pages => Check::Pages,
        },
        placement,
        pause: Duration::from_millis(2),
        attempts: args.attempts.max(1),
        timeout_s: args.timeout_s.max(1),
    };
    install_watchdog();

    if let Some(only) = &args.only {
        let known: Vec<&str> = ALL
            .iter()
            .chain(IN_PLACE)
            .map(|m| m.id())
            .chain(python::MECHANISMS.iter().map(|(id, _)| *id))
            .chain(locks::ALL.iter().map(|l| l.id()))
            .collect();
        if let Some(bad) = only.iter().find(|x| !known.contains(&x.as_str())) {
            return Err(format!(
                "unknown mechanism {bad:?} in --only; known: {}",
                known.join(", ")
            ));
        }
    }
    if goals && (args.bench.as_ref().is_some_and(|b| b.len() > 1) || args.only.is_some()) {
        return Err("--bench goals runs alone, with its own mechanisms (no --only)".into());
    }
    let wanted = |id: &str| args.only.as_ref().is_none_or(|o| o.iter().any(|x| x == id));
    let mut who: Vec<Who> = ALL.iter().chain(IN_PLACE).map(|&m| Who::Rust(m)).collect();
    who.extend(locks::ALL.iter().map(|&l| Who::Lock(l)));
    if let Some(fault) = args.inject_fault {
        who.push(Who::Rust(Mech::Broken(fault)));
        who.push(Who::Lock(LockMech::Broken(fault)));
    }
    let mut py = None;
    let want_python =
        !args.no_python && !goals && python::MECHANISMS.iter().any(|(id, _)| wanted(id));
    let mut python_version = None;
    if want_python {
        match Python::start(pinned) {
            Ok(Some(p)) => {
                python_version = Some(p.version.clone());
                py = Some(p);
                who.extend(
                    python::MECHANISMS
                        .iter()
                        .map(|&(id, label)| Who::Py(id, label)),
                );
            }
            Ok(None) => {
                let msg = "python3 not found: the Python rows are skipped".to_string();
                eprintln!("note: {msg}");
                notes.push(msg);
            }
            Err(e) => return Err(format!("starting the Python companion: {e}")),
        }
    }
    who.retain(|w| {
        wanted(w.id())
            || matches!(
                w,
                Who::Rust(Mech::Broken(_)) | Who::Lock(LockMech::Broken(_))
            )
    });
    // The references every ratio needs run even when not asked for.
    for reference in [
        Who::Rust(Mech::OsPipe),
        Who::Rust(Mech::Floor),
        Who::Lock(LockMech::Futex),
        Who::Lock(LockMech::Pthread),
    ] {
        if !who.contains(&reference) {
            who.push(reference);
        }
    }

    let wait_bench = args
        .bench
        .as_ref()
        .is_some_and(|b| b.contains(&BenchArg::Wait));
    if wait_bench && args.bench.as_ref().is_some_and(|b| b.len() == 1) {
        // Only the wait benchmark: it has its own report.
        print!(
            "{}",
            multiproc_bench::wait::run(settings.rounds, args.quick, placement)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let benches = args.bench.clone().unwrap_or_else(|| {
        vec![
            BenchArg::Latency,
            BenchArg::Throughput,
            BenchArg::Producers,
            BenchArg::Consumers,
            BenchArg::Locks,
            BenchArg::Pairs,
        ]
    });
    let mut plan = Vec::new();
    if benches.contains(&BenchArg::Latency) {
        for mode in [
            LatencyMode::Awake,
            LatencyMode::Asleep,
            LatencyMode::OneCore,
        ] {
            plan.push(Bench::Latency { mode });
        }
    }
    if benches.contains(&BenchArg::Throughput) {
        for &size in args.sizes.as_deref().unwrap_or(&SIZES) {
            if !(8..=MAX_SIZE).contains(&size) {
                return Err(format!(
                    "message sizes run from 8 bytes to {}, not {size}",
                    multiproc_bench::fmt_size(MAX_SIZE)
                ));
            }
            plan.push(Bench::Throughput { size });
        }
    }
    if benches.contains(&BenchArg::Producers) {
        for producers in [1, 2, 4, 8, 16] {
            plan.push(Bench::Producers { producers });
        }
    }
    if benches.contains(&BenchArg::Consumers) {
        for consumers in [1, 2, 3, 4] {
            plan.push(Bench::Consumers { consumers });
        }
    }

    if benches.contains(&BenchArg::Locks) {
        for case in [LockCase::Uncontended, LockCase::TwoCores, LockCase::OneCore] {
            plan.push(Bench::Locks { case });
        }
    }
    if benches.contains(&BenchArg::Pairs) {
        let counts: &[u32] = if args.quick { &QUICK_PAIRS } else { &PAIRS };
        for &pairs in counts {
            plan.push(Bench::Pairs { pairs });
        }
    }

    let spec: Vec<(Bench, Vec<Who>)> = if goals {
        multiproc_bench::goals::plan()
    } else {
        plan.iter().map(|&b| (b, who.clone())).collect()
    };
    let contenders: usize = spec
        .iter()
        .map(|(b, who)| who.iter().filter(|w| w.applies(*b)).count())
        .sum();
    let measurements = (contenders * (1 + settings.rounds)) as u64;
    let bar = progress(measurements);
    let groups = run_groups(&spec, &settings, &mut py, &bar);
    bar.finish_and_clear();
    drop(py);

    let command = std::iter::once("multiproc-bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let mut machine = machine::describe(&allowed, pinned);
    machine.python = python_version;
    let report = Report {
        tool: format!("multiproc-bench {}", env!("CARGO_PKG_VERSION")),
        machine,
        config: Config {
            quick: args.quick,
            rounds: settings.rounds,
            target_ms: settings.target.as_secs_f64() * 1e3,
            check: settings.check.name().into(),
            command,
        },
        groups,
        notes,
    };
    let code = output(&args, &report)?;
    if wait_bench {
        println!();
        print!(
            "{}",
            multiproc_bench::wait::run(settings.rounds, args.quick, placement)?
        );
    }
    Ok(code)
}

/// Prints the table, writes the files asked for, and sets the exit status.
fn output(args: &Args, report: &Report) -> Result<ExitCode, String> {
    print!("{}", table::render(report));
    if args
        .bench
        .as_ref()
        .is_some_and(|b| b.contains(&BenchArg::Goals))
        && multiproc_bench::goals::present(report)
    {
        println!();
        print!("{}", multiproc_bench::goals::render(report));
    }
    if args.from.is_none()
        && let Some(path) = &args.json
    {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, table::markdown_summary(report))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        plot::write_svg(report, path)?;
    }
    let failed: Vec<String> = report
        .groups
        .iter()
        .flat_map(|g| {
            g.rows
                .iter()
                .filter(|r| r.status == Status::Failed)
                .map(move |r| format!("{}: {}", g.title, r.label))
        })
        .collect();
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("\n{} measurement(s) FAILED:", failed.len());
        for f in &failed {
            eprintln!("  {f}");
        }
        Ok(ExitCode::from(2))
    }
}
