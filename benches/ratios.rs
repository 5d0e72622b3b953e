//! Same-run ratios against the baselines, robust to the drift of a shared VM: each pair of
//! contenders is measured alternately, round after round, and the medians are compared.
//!
//! ```text
//! cargo bench --bench ratios            # ROUNDS=15 by default; MULTIPROC_BENCH_ROUNDS overrides
//! ```
//!
//! Criterion (`benches/lock.rs`, `benches/value.rs`) gives the detailed distributions; this
//! program answers "how many times faster than the baseline, measured side by side". Processes
//! are pinned to cores 0 and 1.

#![allow(unsafe_code)] // see benches/common

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::locks::{LockShared, PthreadShared};
use common::{Line, PARENT_CORE, Shm, pin_to, run_two_processes};
use multiproc::RawValue;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per operation of `f(n)` run in this process.
fn per_op(n: u64, f: impl FnOnce(u64)) -> f64 {
    let t = Instant::now();
    f(n);
    t.elapsed().as_nanos() as f64 / n as f64
}

fn ns(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n as f64
}

struct Pair {
    what: &'static str,
    ours: &'static str,
    base: &'static str,
    goal: f64,
    ours_ns: Vec<f64>,
    base_ns: Vec<f64>,
}

impl Pair {
    fn new(what: &'static str, ours: &'static str, base: &'static str, goal: f64) -> Self {
        Self {
            what,
            ours,
            base,
            goal,
            ours_ns: Vec::new(),
            base_ns: Vec::new(),
        }
    }

    fn report(&self) {
        let (o, b) = (median(self.ours_ns.clone()), median(self.base_ns.clone()));
        // Ratio of throughputs (ops/s): baseline time over ours.
        let ratio = b / o;
        let verdict = if ratio >= self.goal {
            "meets"
        } else {
            "misses"
        };
        println!(
            "{:<34} {:<24} {:>8.2} ns  {:<26} {:>8.2} ns  ratio {:>5.2}x  (goal >= {:.2}x: {verdict})",
            self.what, self.ours, o, self.base, b, ratio, self.goal
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks benches for their names
    }
    pin_to(PARENT_CORE);
    let rounds: usize = std::env::var("MULTIPROC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);

    let lock = LockShared::new();
    let pthread = PthreadShared::new();
    let raw = RawValue::new(AtomicU64::new(0)).expect("RawValue::new");
    let bare = Shm::new(Line(AtomicU64::new(0)));

    let mut uncontended = Pair::new(
        "lock+unlock, uncontended",
        "multiproc::Lock",
        "pthread_mutex (pshared)",
        1.1,
    );
    let mut contended = Pair::new(
        "lock, 2 processes contending",
        "multiproc::Lock",
        "pthread_mutex (pshared)",
        1.1,
    );
    let mut fetch_add = Pair::new(
        "fetch_add, 2 processes",
        "RawValue<AtomicU64>",
        "AtomicU64 (MAP_SHARED)",
        0.9,
    );

    const UNCONTENDED: u64 = 5_000_000;
    const CONTENDED: u64 = 2_000_000;
    const ADDS: u64 = 10_000_000;
    for round in 0..rounds {
        // Alternate which contender goes first, so slow drift favours neither.
        let order = [round % 2 == 0, round % 2 != 0];
        for ours_first in order {
            if ours_first {
                uncontended.ours_ns.push(per_op(UNCONTENDED, |n| {
                    for _ in 0..n {
                        drop(black_box(black_box(&lock.lock).lock()));
                    }
                }));
                lock.reset();
                let t =
                    run_two_processes(CONTENDED, || drop(lock.lock.lock()), |n| lock.increments(n));
                assert_eq!(
                    lock.count(),
                    CONTENDED,
                    "lost updates under multiproc::Lock"
                );
                contended.ours_ns.push(ns(t, CONTENDED));
                raw.store(0, Ordering::Relaxed);
                let t = run_two_processes(
                    ADDS,
                    || (),
                    |n| {
                        for _ in 0..n {
                            raw.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                );
                assert_eq!(raw.load(Ordering::Relaxed), ADDS);
                fetch_add.ours_ns.push(ns(t, ADDS));
            } else {
                uncontended.base_ns.push(per_op(UNCONTENDED, |n| {
                    for _ in 0..n {
                        let m = black_box(&*pthread);
                        m.lock();
                        m.unlock();
                    }
                }));
                pthread.reset();
                let t = run_two_processes(
                    CONTENDED,
                    || {
                        pthread.lock();
                        pthread.unlock();
                    },
                    |n| pthread.increments(n),
                );
                assert_eq!(
                    pthread.count(),
                    CONTENDED,
                    "lost updates under pthread_mutex"
                );
                contended.base_ns.push(ns(t, CONTENDED));
                bare.store(0, Ordering::Relaxed);
                let t = run_two_processes(
                    ADDS,
                    || (),
                    |n| {
                        for _ in 0..n {
                            bare.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                );
                assert_eq!(bare.load(Ordering::Relaxed), ADDS);
                fetch_add.base_ns.push(ns(t, ADDS));
            }
        }
    }
    println!("medians of {rounds} alternating rounds, ns per operation (lower is better):");
    uncontended.report();
    contended.report();
    fetch_add.report();
}
