//! Same-run ratios of starting and joining a child with `Process` against the raw system
//! calls underneath: `Process::fork(|| ())` + `join` against `fork` + `_exit(0)` + `waitpid`,
//! and `Process::spawn(noop, ())` + `join` against `posix_spawn` of this same executable
//! (`/proc/self/exe`) with the same argument vector + `waitpid`. Contenders alternate round after
//! round (robust to the drift of a shared VM) and are compared by their medians.
//!
//! ```text
//! cargo bench --bench process      # 11 rounds; MULTIPROC_BENCH_ROUNDS overrides
//! ```
//!
//! A spawned `Process` never reaches `main`: the start-up hook runs the function and exits. The
//! `posix_spawn` baseline does reach `main`, which exits at once when it sees the argument a
//! spawned child gets (`--multiproc-spawned=...`). Nothing is pinned: processes come and go.

#![allow(unsafe_code)] // fork, posix_spawn, waitpid: see the SAFETY comments

#[path = "common/report.rs"]
mod report;
use report::{goal, median, spread};

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use multiproc::Process;

/// The argument a spawned child's argument vector carries after `argv[0]`.
const MARKER: &str = "--multiproc-spawned=";

/// Forks per round, per contender, in `CHUNKS` interleaved chunks.
const FORKS: u32 = 1000;
/// Spawns per round, per contender, in `CHUNKS` interleaved chunks.
const SPAWNS: u32 = 200;
/// Each round interleaves the contenders in this many chunks, so that drift within a round
/// (a neighbour on the host, frequency changes) falls on all of them alike.
const CHUNKS: u32 = 5;

/// Runs `once` `n` times; the time it took.
fn timed(n: u32, mut once: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        once();
    }
    t.elapsed()
}

/// One contender: starts and joins `n` processes and says how long that took; its µs per
/// process over the rounds.
struct Contender {
    name: &'static str,
    run: Box<dyn Fn(u32) -> Duration>,
    us: Vec<f64>,
}

/// Contenders measured side by side, in an order that rotates every chunk and round.
struct Group {
    what: &'static str,
    /// Processes per round, per contender.
    per_round: u32,
    contenders: Vec<Contender>,
}

impl Group {
    fn new(what: &'static str, per_round: u32) -> Self {
        Self {
            what,
            per_round,
            contenders: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, run: impl Fn(u32) -> Duration + 'static) -> Self {
        self.contenders.push(Contender {
            name,
            run: Box::new(run),
            us: Vec::new(),
        });
        self
    }

    /// One unrecorded run of each contender: page cache, allocator and lazy set-up warm.
    fn warm_up(&self) {
        for c in &self.contenders {
            (c.run)(self.per_round / CHUNKS);
        }
    }

    fn run_round(&mut self, round: usize) {
        let n = self.contenders.len();
        let chunk = self.per_round / CHUNKS;
        let mut took = vec![Duration::ZERO; n];
        for j in 0..CHUNKS as usize {
            for k in 0..n {
                let i = (k + round + j) % n;
                took[i] += (self.contenders[i].run)(chunk);
            }
        }
        for (c, t) in self.contenders.iter_mut().zip(took) {
            c.us.push(t.as_secs_f64() * 1e6 / f64::from(chunk * CHUNKS));
        }
    }

    fn median(&self, name: &str) -> f64 {
        let c = self
            .contenders
            .iter()
            .find(|c| c.name == name)
            .expect("contender");
        median(c.us.clone())
    }

    fn print(&self) {
        println!("{}:", self.what);
        for c in &self.contenders {
            let m = median(c.us.clone());
            let (lo, hi) = spread(&c.us);
            println!(
                "  {:<44} {m:>10.1} µs/process  {:>8.0} processes/s   (min {lo:.1}, max {hi:.1})",
                c.name,
                1e6 / m
            );
        }
    }
}

/// Waits for `pid` and checks that it exited with code 0.
fn reap_ok(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: `pid` is our own unreaped child; `status` is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed (status {status:#x})"
    );
}

/// `fork`, `_exit(0)` in the child, `waitpid` in the parent.
fn raw_fork() {
    // SAFETY: the bench is single-threaded; the child only calls `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: ends the child at once, touching nothing of the parent's state.
        unsafe { libc::_exit(0) };
    }
    reap_ok(pid);
}

/// NULL-terminated pointer array over `strings` (which must outlive its use).
fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// `posix_spawn` of `/proc/self/exe` with `argv` and `envp`, then `waitpid`.
fn raw_spawn(argv: &[*mut libc::c_char], envp: &[*mut libc::c_char]) {
    let mut pid: libc::pid_t = 0;
    // SAFETY: the path is NUL-terminated; `argv` and `envp` are NULL-terminated arrays of
    // NUL-terminated strings that outlive the call; no file actions or attributes.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            c"/proc/self/exe".as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    assert_eq!(
        rc,
        0,
        "posix_spawn: {}",
        std::io::Error::from_raw_os_error(rc)
    );
    reap_ok(pid);
}

fn noop(_: ()) {}

fn main() {
    // A `posix_spawn` baseline child: leave before anything else.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a.as_bytes().starts_with(MARKER.as_bytes()))
    {
        std::process::exit(0);
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks benches for their names
    }
    let rounds: usize = std::env::var("MULTIPROC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11)
        .max(1);

    let mut fork = Group::new("start + join, fork", FORKS)
        .with("Process::fork(|| ()) + join", |n| {
            timed(n, || {
                Process::fork(|| ()).expect("fork").join().expect("join");
            })
        })
        .with("libc::fork + _exit(0) + waitpid", |n| timed(n, raw_fork));

    // The baseline gets what a spawned `Process` gets: this executable's `argv[0]`, the
    // marker argument (with the name of a first child), and this environment.
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("process-bench"));
    let argv = vec![
        CString::new(argv0.as_bytes()).expect("argv[0]"),
        CString::new(format!("{MARKER}Process-1")).expect("marker"),
    ];
    let envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).expect("environment entry")
        })
        .collect();
    let mut spawn = Group::new("start + join, spawn (re-executing this binary)", SPAWNS)
        .with("Process::spawn(noop, ()) + join", |n| {
            timed(n, || {
                Process::spawn(noop, ())
                    .expect("spawn")
                    .join()
                    .expect("join");
            })
        })
        .with("posix_spawn(/proc/self/exe) + waitpid", move |n| {
            let (argv, envp) = (pointers(&argv), pointers(&envp));
            timed(n, || raw_spawn(&argv, &envp))
        });

    fork.warm_up();
    spawn.warm_up();
    let t = Instant::now();
    for round in 0..rounds {
        fork.run_round(round);
        spawn.run_round(round);
        eprint!("\rround {}/{rounds}", round + 1);
    }
    eprintln!();
    let took = t.elapsed();

    println!(
        "medians of {rounds} alternating rounds of {FORKS} forks and {SPAWNS} spawns per \
         contender in {CHUNKS} interleaved chunks ({:.1} s; min, max over rounds in µs):",
        took.as_secs_f64()
    );
    fork.print();
    spawn.print();
    println!("goals (ratios of medians):");
    goal(
        "fork + join: ours / raw fork + waitpid",
        fork.median("Process::fork(|| ()) + join") / fork.median("libc::fork + _exit(0) + waitpid"),
        false,
        1.5,
    );
    goal(
        "spawn + join: ours / posix_spawn + waitpid",
        spawn.median("Process::spawn(noop, ()) + join")
            / spawn.median("posix_spawn(/proc/self/exe) + waitpid"),
        false,
        1.3,
    );
}
