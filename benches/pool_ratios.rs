//! Same-run ratios of `Pool::map` against Python's `multiprocessing.Pool.map`, both with two
//! workers mapping a trivial function (`x -> x * x` over integers), measured alternately round
//! after round (robust to the drift of a shared VM) and compared by their medians.
//!
//! ```text
//! cargo bench --bench pool_ratios       # 11 rounds; MULTIPROC_BENCH_ROUNDS overrides
//! ```
//!
//! Contenders, each timed over one whole `map` call (items in, results out, in order):
//! - chunk size 1 over [`N_CS1`] items: `Pool::map_chunked(square, 0..n, 1)` against
//!   `Pool(2).map(square, range(n), chunksize=1)`;
//! - the default chunk size (about four chunks per worker, in both) over [`N_DEFAULT`] items:
//!   `Pool::map(square, 0..n)` against `Pool(2).map(square, range(n))`.
//!
//! Ours is `Pool::new(2)` (the default `Spawn` start method); the same map on a pool with the
//! `Fork` start method is reported too, but is not a goal. Python's pool uses the `fork`
//! context. All pools are started once, warmed up with small maps of both kinds, and kept for
//! the whole run: one long-lived `python3` process (a script passed with `-c`) runs one timed
//! map per request read on its stdin and answers with a `PYRESULT` line, so Python's maps
//! interleave with ours. The order of the contenders rotates every round; one untimed round
//! runs first. Every result list is checked, outside the timing.
//!
//! Nothing is pinned: a pool's workers inherit their parent's affinity, and a two-worker pool
//! (plus the thread that feeds it) needs two cores. Idle pools sleep while another one runs.
//!
//! Python is measured only if `python3` (with `multiprocessing`) runs; otherwise the Python
//! contenders and the goals are skipped with a note, unless `MULTIPROC_REQUIRE_PYTHON` is set,
//! in which case the bench fails.

#[path = "common/report.rs"]
mod report;
use report::{goal, median, spread};

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use multiproc::{Pool, StartMethod};

/// Items mapped with chunk size 1.
const N_CS1: u64 = 20_000;
/// Items mapped with the default chunk size.
const N_DEFAULT: u64 = 1_000_000;
/// Workers in every pool.
const WORKERS: usize = 2;
/// Rounds when `MULTIPROC_BENCH_ROUNDS` is not set.
const DEFAULT_ROUNDS: usize = 11;

/// The mapped function.
fn square(x: u64) -> u64 {
    x * x
}

/// Checks that `r` is `square` over `0..n`, in order.
fn check(r: &[u64], n: u64, what: &str) {
    assert_eq!(r.len() as u64, n, "{what}: wrong number of results");
    for (i, &v) in r.iter().enumerate() {
        assert_eq!(v, square(i as u64), "{what}: wrong result for item {i}");
    }
}

/// Tasks per second of one map of `square` over `0..n` on `pool`: with chunk size `chunksize`,
/// or the default one.
fn ours(pool: &Pool, n: u64, chunksize: Option<usize>) -> f64 {
    let t = Instant::now();
    let r = match chunksize {
        Some(c) => pool.map_chunked(square, 0..n, c),
        None => pool.map(square, 0..n),
    }
    .expect("Pool::map");
    let elapsed = t.elapsed();
    check(&r, n, "Pool::map");
    n as f64 / elapsed.as_secs_f64()
}

// ----------------------------------------------------------------------------------------
// Python

/// A long-lived Python `multiprocessing.Pool(2)` (fork context). After warm-up maps of both
/// kinds it prints `PYREADY`; then for each request line `cs1 <n>` or `default <n>` on stdin it
/// runs one timed `map` of `square` over `range(n)` (chunk size 1, or the default), checks the
/// result (untimed) and prints `PYRESULT kind=<kind> n=<n> ns=<ns> tasks_per_s=<rate>`. It
/// ends, closing the pool, when stdin closes.
const PYTHON: &str = r#"
import multiprocessing as mp, sys, time
def square(x): return x * x
def timed(pool, kind, n):
    expect = [x * x for x in range(n)]
    t = time.perf_counter_ns()
    if kind == 'cs1':
        r = pool.map(square, range(n), chunksize=1)
    elif kind == 'default':
        r = pool.map(square, range(n))
    else:
        raise SystemExit(f'unknown request {kind!r}')
    ns = time.perf_counter_ns() - t
    assert r == expect, f'{kind}: wrong results'
    return ns
def main():
    ctx = mp.get_context('fork')
    with ctx.Pool(2) as pool:
        timed(pool, 'cs1', 1000)
        timed(pool, 'default', 10000)
        print('PYREADY', flush=True)
        for line in sys.stdin:
            kind, n = line.split()
            n = int(n)
            ns = timed(pool, kind, n)
            print(f'PYRESULT kind={kind} n={n} ns={ns} tasks_per_s={n * 1e9 / ns:.1f}', flush=True)
main()
"#;

/// Whether `python3` with `multiprocessing` runs here. If not and `MULTIPROC_REQUIRE_PYTHON`
/// is set (as CI does), panics instead of skipping.
fn have_python() -> bool {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import multiprocessing")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("MULTIPROC_REQUIRE_PYTHON").is_none(),
            "python3 (with multiprocessing) not found, and MULTIPROC_REQUIRE_PYTHON is set"
        );
        println!("python3 (with multiprocessing) not found: skipping Python's Pool and the goals");
    }
    ok
}

/// The running Python script: requests go to its stdin, results come from its stdout (its
/// stderr is ours, so a traceback shows).
struct PythonPool {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl PythonPool {
    /// Starts the script and waits until its pool is warm.
    fn start() -> Self {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(PYTHON)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut py = Self {
            child,
            stdin,
            stdout,
        };
        let line = py.line();
        assert_eq!(line.trim_end(), "PYREADY", "python3 did not start its pool");
        py
    }

    /// The next line of the script's output.
    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .expect("read python3 output");
        assert!(n > 0, "python3 exited early (see its stderr above)");
        line
    }

    /// Tasks per second of one map over `range(n)`; `kind` is `cs1` or `default`.
    fn map(&mut self, kind: &str, n: u64) -> f64 {
        let stdin = self.stdin.as_mut().expect("python3 stdin open");
        writeln!(stdin, "{kind} {n}")
            .and_then(|()| stdin.flush())
            .expect("write to python3 (did it exit?)");
        let line = self.line();
        let result = line
            .trim_end()
            .strip_prefix("PYRESULT ")
            .unwrap_or_else(|| panic!("expected a PYRESULT line from python3, got {line:?}"));
        let field = |key: &str| -> &str {
            result
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {key} in {result:?}"))
        };
        assert_eq!(field("kind"), kind, "python3 answered another request");
        assert_eq!(
            field("n"),
            n.to_string(),
            "python3 answered another request"
        );
        let ns: f64 = field("ns").parse().expect("ns is a number");
        n as f64 * 1e9 / ns
    }

    /// Closes the script's stdin and waits for it to exit cleanly.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for python3");
        assert!(status.success(), "python3 failed: {status}");
    }
}

// ----------------------------------------------------------------------------------------
// Rounds

/// One contender: a measurement giving tasks/s, and its results over the rounds.
struct Contender<'a> {
    name: &'static str,
    run: Box<dyn Fn() -> f64 + 'a>,
    rates: Vec<f64>,
}

/// Contenders measured side by side, in an order that rotates every round.
struct Group<'a> {
    what: String,
    contenders: Vec<Contender<'a>>,
}

impl<'a> Group<'a> {
    fn new(what: String) -> Self {
        Self {
            what,
            contenders: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, run: impl Fn() -> f64 + 'a) -> Self {
        self.contenders.push(Contender {
            name,
            run: Box::new(run),
            rates: Vec::new(),
        });
        self
    }

    /// Runs every contender once; the results count unless `warm_up`.
    fn run_round(&mut self, round: usize, warm_up: bool) {
        let n = self.contenders.len();
        for k in 0..n {
            let c = &mut self.contenders[(k + round) % n];
            let rate = (c.run)();
            if !warm_up {
                c.rates.push(rate);
            }
        }
    }

    /// The median tasks/s of contender `name`, if there is one.
    fn median(&self, name: &str) -> Option<f64> {
        self.contenders
            .iter()
            .find(|c| c.name == name)
            .map(|c| median(c.rates.clone()))
    }

    fn print(&self) {
        println!("{}:", self.what);
        for c in &self.contenders {
            let m = median(c.rates.clone());
            let (lo, hi) = spread(&c.rates);
            println!(
                "  {:<44} {:>8.3} Mtasks/s  {:>10.1} ns/task   (min {:.3}, max {:.3} Mtasks/s)",
                c.name,
                m / 1e6,
                1e9 / m,
                lo / 1e6,
                hi / 1e6
            );
        }
    }
}

const OURS_CS1: &str = "multiproc Pool::map_chunked(.., 1), Spawn";
const FORK_CS1: &str = "multiproc Pool::map_chunked(.., 1), Fork";
const PY_CS1: &str = "Python Pool.map(.., chunksize=1), fork";
const OURS_DEFAULT: &str = "multiproc Pool::map, Spawn";
const FORK_DEFAULT: &str = "multiproc Pool::map, Fork";
const PY_DEFAULT: &str = "Python Pool.map, fork";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks benches for their names
    }
    let rounds: usize = std::env::var("MULTIPROC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
        .max(1);

    // Before anything starts: without python3, note it (or fail, if it is required).
    let python = have_python();

    // The Fork pool first, while this process has no other thread (its workers are forked
    // from here; the other pools' threads come later).
    let forked = Pool::builder()
        .processes(WORKERS)
        .start_method(StartMethod::Fork)
        .build()
        .expect("Pool with Fork");
    let spawned = Pool::new(WORKERS).expect("Pool::new");
    for pool in [&forked, &spawned] {
        // The workers are up and have run both kinds of map.
        check(
            &pool.map_chunked(square, 0..1000, 1).expect("warm-up map"),
            1000,
            "warm-up",
        );
        check(
            &pool.map(square, 0..10_000).expect("warm-up map"),
            10_000,
            "warm-up",
        );
    }
    let python = python.then(|| RefCell::new(PythonPool::start()));

    let mut cs1 = Group::new(format!(
        "chunk size 1, {N_CS1} items, {WORKERS} workers (median tasks/s over rounds)"
    ))
    .with(OURS_CS1, || ours(&spawned, N_CS1, Some(1)))
    .with(FORK_CS1, || ours(&forked, N_CS1, Some(1)));
    let mut default = Group::new(format!(
        "default chunk size, {N_DEFAULT} items, {WORKERS} workers (median tasks/s over rounds)"
    ))
    .with(OURS_DEFAULT, || ours(&spawned, N_DEFAULT, None))
    .with(FORK_DEFAULT, || ours(&forked, N_DEFAULT, None));
    if let Some(py) = &python {
        cs1 = cs1.with(PY_CS1, || py.borrow_mut().map("cs1", N_CS1));
        default = default.with(PY_DEFAULT, || py.borrow_mut().map("default", N_DEFAULT));
    }

    let started = Instant::now();
    for round in 0..=rounds {
        // Round 0 is a warm-up for everyone (first full-size maps: page faults, allocator).
        let warm_up = round == 0;
        cs1.run_round(round, warm_up);
        default.run_round(round, warm_up);
        if warm_up {
            eprint!("\rwarm-up round   ");
        } else {
            eprint!("\rround {round}/{rounds}      ");
        }
    }
    eprintln!(" ({:.1} s)", started.elapsed().as_secs_f64());

    println!("medians of {rounds} alternating rounds (min, max over rounds):");
    cs1.print();
    default.print();

    println!("goals (ratios of medians):");
    let ratio = |g: &Group<'_>, ours: &str, theirs: &str| -> Option<f64> {
        Some(g.median(ours)? / g.median(theirs)?)
    };
    match (
        ratio(&cs1, OURS_CS1, PY_CS1),
        ratio(&default, OURS_DEFAULT, PY_DEFAULT),
    ) {
        (Some(r1), Some(rd)) => {
            goal(
                "chunk size 1: ours tasks/s / Python Pool.map",
                r1,
                true,
                10.0,
            );
            goal(
                "default chunk size: ours tasks/s / Python Pool.map",
                rd,
                true,
                2.0,
            );
            for (what, r) in [
                (
                    "chunk size 1: ours (Fork) tasks/s / Python Pool.map",
                    ratio(&cs1, FORK_CS1, PY_CS1),
                ),
                (
                    "default chunk size: ours (Fork) tasks/s / Python Pool.map",
                    ratio(&default, FORK_DEFAULT, PY_DEFAULT),
                ),
            ] {
                if let Some(r) = r {
                    println!("  {what:<58} {r:>8.2}x  (Fork start method; not a goal)");
                }
            }
        }
        _ => println!("  (no Python numbers: goals not checked)"),
    }

    drop(cs1);
    drop(default);
    if let Some(py) = python {
        py.into_inner().finish();
    }
}
