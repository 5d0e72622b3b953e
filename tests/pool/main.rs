//! `Pool` with real worker processes, under both start methods: `map`, `map_chunked` and
//! `starmap` results in order; `imap` laziness, order and exact length, and an input that
//! panics; `imap_unordered`;
//! a worker SIGKILLed while it runs a task (from inside or outside) failing only that task and
//! being replaced; panicking tasks; `max_tasks_per_child`; initializers that work and that
//! panic; `apply_async` with `get`, `get_timeout` and `ready`, and with callbacks (once each, in
//! the order tasks end, on one thread; the error callback for panics and dead workers);
//! `map_async` and `starmap_async`; the timeout forms (`map_timeout`, `Imap::next_timeout`,
//! `join_timeout`, ...); `close` + `join`, `terminate`
//! and drop, which leave no worker process behind.
//!
//! Every scenario runs as two tests, `spawn::<name>` and `fork::<name>`, each under its own
//! watchdog. Spawned workers re-execute this test binary and are intercepted by the start-up
//! hook before the harness's `main`, so no test role is needed. Forked workers run inside the
//! threaded harness: they only run the crate's worker loop and the task functions below.
//!
//! The tests at the end are regressions for bugs found while writing these.
#![cfg(feature = "serde")]
#![allow(unsafe_code)] // kill(2) from a task and from the test: see the SAFETY comments

#[path = "../common/mod.rs"]
mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Ident, eventually, new_counter, stat, watchdog};
use multiproc::{Pool, Queue, Receiver, Sender, StartMethod, TaskError};

/// Watchdog for a whole test.
const LIMIT: Duration = Duration::from_secs(60);
/// How long a test waits for a worker to start and report.
const START: Duration = Duration::from_secs(20);
/// How long "long" tasks sleep at most: they are killed or terminated long before, and a test
/// that fails half-way leaves nothing running for longer.
const NAP: Duration = Duration::from_secs(30);
/// `terminate`, drop and the pool's reaction to a killed worker must take well under `NAP`.
const PROMPT: Duration = Duration::from_secs(5);
/// The item whose task misbehaves (dies, panics).
const DOOMED: u64 = 37;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Declares each scenario `fn name(StartMethod)` as two tests, `spawn::name` and `fork::name`,
/// each under its own watchdog.
macro_rules! both_methods {
    ($($name:ident),* $(,)?) => {
        mod spawn {
            $(
                #[test]
                fn $name() {
                    let _watchdog = crate::common::watchdog(
                        crate::LIMIT,
                        concat!("spawn::", stringify!($name)),
                    );
                    super::$name(multiproc::StartMethod::Spawn);
                }
            )*
        }
        mod fork {
            $(
                #[test]
                fn $name() {
                    let _watchdog = crate::common::watchdog(
                        crate::LIMIT,
                        concat!("fork::", stringify!($name)),
                    );
                    super::$name(multiproc::StartMethod::Fork);
                }
            )*
        }
    };
}

both_methods!(
    map_and_starmap_return_every_result_in_order,
    imap_is_lazy_ordered_and_exact_size,
    imap_unordered_yields_each_index_once_as_results_finish,
    imap_yields_the_results_before_a_panicking_input_then_its_panic,
    worker_that_kills_itself_fails_only_its_task_and_is_replaced,
    worker_killed_from_outside_fails_its_task_and_the_rest_complete,
    panicking_task_fails_only_itself,
    max_tasks_per_child_replaces_workers,
    initializer_runs_once_in_every_worker,
    initializer_hands_shared_objects_to_every_worker,
    panicking_initializer_fails_every_task_without_hanging,
    apply_async_get_get_timeout_and_ready,
    apply_async_callbacks_run_once_each_in_completion_order,
    apply_async_error_callback_gets_panics_and_dead_workers,
    map_async_and_starmap_async_with_callbacks,
    timeout_forms_time_out_while_a_task_is_held_then_succeed,
    close_and_join_finish_submitted_work_then_reap_the_workers,
    terminate_with_a_long_task_in_flight_returns_promptly,
    dropping_a_pool_with_work_in_flight_leaves_no_worker,
    each_task_of_a_healthy_pool_runs_exactly_once,
);

/// A pool of `n` workers started with `method`.
fn pool(method: StartMethod, n: usize) -> Pool {
    Pool::builder()
        .processes(n)
        .start_method(method)
        .build()
        .unwrap_or_else(|e| panic!("start a {method:?} pool: {e}"))
}

/// A queue on which tasks report their worker's pid. Named (with a random name), so that its
/// sender reaches workers started before the queue existed, under both start methods. Tests
/// pass clones of the sender and keep their own: a pool lets go of a task's argument once it
/// is serialised, before the worker has attached the sender in it, and a receiver with no
/// sender attached meanwhile would see the queue disconnected.
fn pid_channel() -> (Sender<u32>, Receiver<u32>) {
    Queue::<u32>::builder()
        .named()
        .create()
        .expect("create pid queue")
        .split()
        .expect("split pid queue")
}

/// Waits for a task to report its worker's pid; the worker, as one incarnation of its pid.
fn reported_worker(rx: &Receiver<u32>) -> Ident {
    let pid = rx
        .get_timeout(START)
        .expect("a task reports its worker's pid");
    assert_ne!(pid, std::process::id(), "the task ran in the test process");
    let ident = Ident::of(pid);
    assert_eq!(
        ident.stat().map(|s| s.ppid),
        Some(std::process::id()),
        "worker {pid} is not our child"
    );
    ident
}

/// Asserts that every worker in `workers` has exited and been reaped.
fn assert_reaped(workers: &BTreeSet<Ident>, when: &str) {
    let left: Vec<_> = workers.iter().filter(|w| !w.reaped()).collect();
    assert!(left.is_empty(), "{when}: workers still present: {left:?}");
}

/// SIGKILLs `pid`, a worker of a pool of ours that has not been reaped yet.
fn sigkill(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions. `pid` is our unreaped child (its
    // pool reaps it only after it exits), so it names the worker and no other process.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(r, 0, "kill({pid}): {}", std::io::Error::last_os_error());
}

fn square_plus_one(x: u64) -> u64 {
    x * x + 1
}

/// `0..n` as u64s, with an exact length (`Range<u64>` is no `ExactSizeIterator`).
fn upto(n: u32) -> impl ExactSizeIterator<Item = u64> + Clone {
    (0..n).map(u64::from)
}

fn expected(items: impl IntoIterator<Item = u64>) -> Vec<u64> {
    items.into_iter().map(square_plus_one).collect()
}

/// The result and the pid of the worker that computed it.
fn with_pid(x: u64) -> (u64, u32) {
    (square_plus_one(x), std::process::id())
}

/// Sleeps `ms` milliseconds; the worker's pid.
fn nap_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Sleeps `ms` milliseconds; `x`'s result.
fn nap_then_square((ms, x): (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    square_plus_one(x)
}

/// Reports the worker's pid, then sleeps for `NAP` (until killed or terminated).
fn report_pid_then_sleep(tx: Sender<u32>) -> u32 {
    tx.put(std::process::id()).expect("report pid");
    std::thread::sleep(NAP);
    std::process::id()
}

/// SIGKILLs its own worker on `DOOMED`.
fn die_on_doomed(x: u64) -> (u64, u32) {
    if x == DOOMED {
        let me = std::process::id() as libc::pid_t;
        // SAFETY: kill(2) has no memory-safety preconditions; this process is a pool worker.
        unsafe { libc::kill(me, libc::SIGKILL) };
        unreachable!("SIGKILL cannot be caught");
    }
    with_pid(x)
}

/// Ends its own worker with exit code 3 on `DOOMED`.
fn exit_on_doomed(x: u64) -> u64 {
    if x == DOOMED {
        std::process::exit(3);
    }
    square_plus_one(x)
}

/// Panics on `DOOMED` (a formatted message: a `String` payload).
fn panic_on_doomed(x: u64) -> u64 {
    if x == DOOMED {
        panic!("task {x} refused");
    }
    square_plus_one(x)
}

/// Always panics (a literal message: a `&str` payload).
fn panic_literally(_: u64) -> u64 {
    panic!("refused, literally")
}

// ---------------------------------------------------------------------------------------------
// map, map_chunked, starmap

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn repeat_joined(word: String, times: u32, sep: char) -> String {
    vec![word; times as usize].join(&sep.to_string())
}

fn map_and_starmap_return_every_result_in_order(method: StartMethod) {
    let pool = pool(method, 2);
    assert_eq!(pool.processes(), 2);

    // Python's default chunk size: about four chunks per worker.
    let n = 100_000u64;
    assert_eq!(pool.map(square_plus_one, 0..n), Ok(expected(0..n)));
    // From a Vec, and from an iterator without an exact length (collected for the default).
    let items: Vec<u64> = (0..5_000).rev().collect();
    assert_eq!(
        pool.map(square_plus_one, items.clone()),
        Ok(expected(items))
    );
    let odd = (0..3_000u64).filter(|x| x % 2 == 1);
    assert_eq!(pool.map(square_plus_one, odd.clone()), Ok(expected(odd)));

    // One task per message, and a size that leaves a short last chunk.
    assert_eq!(
        pool.map_chunked(square_plus_one, 0..2_000, 1),
        Ok(expected(0..2_000))
    );
    assert_eq!(
        pool.map_chunked(square_plus_one, 0..1_001, 7),
        Ok(expected(0..1_001))
    );
    // Chunks larger than the input.
    assert_eq!(
        pool.map_chunked(square_plus_one, 0..10, 1_000),
        Ok(expected(0..10))
    );

    // starmap with two and with three arguments.
    let pairs: Vec<(u64, u64)> = (0..1_000).map(|i| (i, 3 * i + 1)).collect();
    let sums: Vec<u64> = pairs.iter().map(|&(a, b)| a + b).collect();
    assert_eq!(pool.starmap(add, pairs), Ok(sums));
    let triples = vec![
        ("ab".to_string(), 3, '-'),
        ("x".to_string(), 1, '+'),
        (String::new(), 2, ','),
        ("word".to_string(), 0, ' '),
    ];
    assert_eq!(
        pool.starmap3(repeat_joined, triples),
        Ok(vec![
            "ab-ab-ab".to_string(),
            "x".to_string(),
            ",".to_string(),
            String::new(),
        ])
    );

    // Empty inputs.
    assert_eq!(pool.map(square_plus_one, Vec::<u64>::new()), Ok(vec![]));
    assert_eq!(pool.map(square_plus_one, 0..0), Ok(vec![]));
    assert_eq!(pool.map_chunked(square_plus_one, 0..0, 1), Ok(vec![]));
    assert_eq!(pool.starmap(add, Vec::<(u64, u64)>::new()), Ok(vec![]));
    let mut none = pool.imap(square_plus_one, upto(0));
    assert_eq!(none.len(), 0);
    assert_eq!(none.next(), None);

    // Still in working order after all that.
    assert_eq!(pool.map(square_plus_one, [3, 4]), Ok(vec![10, 17]));
}

// ---------------------------------------------------------------------------------------------
// imap, imap_chunked

/// Items a lazy `imap` may have pulled beyond the results read: "a few chunks" (with 2
/// workers and chunk size 1 the pool pulls 8 ahead today). Far below the totals used.
const AHEAD: usize = 100;

fn imap_is_lazy_ordered_and_exact_size(method: StartMethod) {
    let pool = pool(method, 2);
    const TOTAL: usize = 10_000;

    // Count in the parent how many items `imap` has taken from the input.
    let pulled = Cell::new(0usize);
    let items = upto(TOTAL as u32).inspect(|_| pulled.set(pulled.get() + 1));
    let mut results = pool.imap(square_plus_one, items);
    assert_eq!(
        results.len(),
        TOTAL,
        "ExactSizeIterator before the first result"
    );
    assert!(
        pulled.get() <= AHEAD,
        "{} pulled before any read",
        pulled.get()
    );
    assert_eq!(results.next(), Some(Ok(1)));
    let first = pulled.get();
    assert!(
        (1..=AHEAD).contains(&first),
        "imap had pulled {first} of {TOTAL} items when the first result came"
    );
    assert_eq!(results.len(), TOTAL - 1);
    for read in 1..TOTAL {
        assert_eq!(results.next(), Some(Ok(square_plus_one(read as u64))));
        assert_eq!(results.len(), TOTAL - read - 1);
        assert!(
            pulled.get() <= read + 1 + AHEAD,
            "{} pulled after {} results read",
            pulled.get(),
            read + 1
        );
    }
    assert_eq!(results.next(), None);
    assert_eq!(results.len(), 0);
    assert_eq!(pulled.get(), TOTAL);

    // With chunks: still lazy (relative to the chunk size), ordered and exact.
    const CHUNK: usize = 16;
    let pulled = Cell::new(0usize);
    let items = upto(TOTAL as u32).inspect(|_| pulled.set(pulled.get() + 1));
    let mut results = pool.imap_chunked(square_plus_one, items, CHUNK);
    assert_eq!(results.len(), TOTAL);
    assert_eq!(results.next(), Some(Ok(1)));
    assert!(
        pulled.get() <= AHEAD * CHUNK && pulled.get() < TOTAL,
        "imap_chunked had pulled {} of {TOTAL} items when the first result came",
        pulled.get()
    );
    assert_eq!(results.len(), TOTAL - 1);
    let rest: Vec<u64> = results.map(|r| r.expect("task result")).collect();
    assert_eq!(rest, expected(1..TOTAL as u64));
    assert_eq!(pulled.get(), TOTAL);

    // A result that is not read does not block the pool: a second imap runs alongside.
    let mut a = pool.imap(square_plus_one, upto(50));
    let b: Vec<_> = pool.imap(square_plus_one, 100..150).collect();
    assert_eq!(
        b,
        expected(100..150).into_iter().map(Ok).collect::<Vec<_>>()
    );
    assert_eq!(a.next(), Some(Ok(1)));
    assert_eq!(a.len(), 49);
}

// ---------------------------------------------------------------------------------------------
// imap_unordered

/// Item 0 waits (up to `NAP`) until the counter named `gate` is nonzero; the others do not wait.
fn held_until_released((x, gate): (u64, String)) -> u64 {
    if x == 0 {
        let open = common::counter(&gate);
        let deadline = Instant::now() + NAP;
        while open.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    square_plus_one(x)
}

fn imap_unordered_yields_each_index_once_as_results_finish(method: StartMethod) {
    let pool = pool(method, 2);

    // Every index exactly once, with its own result.
    const TOTAL: usize = 3_000;
    let mut results = pool.imap_unordered_indexed(square_plus_one, upto(TOTAL as u32));
    assert_eq!(results.len(), TOTAL);
    let mut seen = vec![false; TOTAL];
    for read in 0..TOTAL {
        let (i, r) = results.next().expect("a result per item");
        assert!(i < TOTAL, "index {i} out of range");
        assert!(!seen[i], "index {i} yielded twice");
        seen[i] = true;
        assert_eq!(r, Ok(square_plus_one(i as u64)), "item {i}");
        assert_eq!(results.len(), TOTAL - read - 1);
    }
    assert!(results.next().is_none());

    // In the order results finish: item 0 cannot finish before we have read another result.
    let (gate, gate_name) = new_counter("gate");
    let items: Vec<(u64, String)> = (0..20).map(|x| (x, gate_name.clone())).collect();
    let mut results = pool.imap_unordered_indexed(held_until_released, items);
    let (first, r) = results.next().expect("a result");
    assert_ne!(
        first, 0,
        "item 0 is held until a later result has been read"
    );
    assert_eq!(r, Ok(square_plus_one(first as u64)));
    gate.store(1, Ordering::SeqCst);
    let mut got: BTreeMap<usize, u64> = BTreeMap::from([(first, r.unwrap())]);
    for (i, r) in results {
        assert!(
            got.insert(i, r.expect("task result")).is_none(),
            "index {i} twice"
        );
    }
    let want: BTreeMap<usize, u64> = (0..20).map(|i| (i, square_plus_one(i as u64))).collect();
    assert_eq!(got, want);

    // Issue 11: `imap_unordered` yields the results alone, as Python's does: every result
    // once, whatever the order.
    let unordered = pool.imap_unordered(square_plus_one, upto(500));
    assert_eq!(unordered.len(), 500);
    let mut got: Vec<u64> = unordered.map(|r| r.expect("task result")).collect();
    got.sort_unstable();
    let mut want: Vec<u64> = (0..500).map(square_plus_one).collect();
    want.sort_unstable();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------------
// Killed workers

fn worker_that_kills_itself_fails_only_its_task_and_is_replaced(method: StartMethod) {
    let pool = pool(method, 2);
    let me = std::process::id();

    // Chunks of 10: the doomed task sits in the middle of one, so tasks before it (done,
    // maybe unreported) and after it (never started) must be settled too.
    let results: Vec<Result<(u64, u32), TaskError>> =
        pool.imap_chunked(die_on_doomed, 0..200, 10).collect();
    assert_eq!(results.len(), 200);
    let mut before: BTreeSet<u32> = BTreeSet::new();
    let mut dead = None;
    for (i, r) in results.into_iter().enumerate() {
        if i as u64 == DOOMED {
            match r {
                Err(TaskError::WorkerDied { pid, exitcode }) => {
                    assert_eq!(exitcode, -libc::SIGKILL, "worker {pid}'s exit code");
                    assert_ne!(pid, me);
                    dead = Some(pid);
                }
                other => panic!("task {i}: {other:?}, expected WorkerDied"),
            }
        } else {
            let (value, pid) = r.unwrap_or_else(|e| panic!("task {i}: {e:?}"));
            assert_eq!(value, square_plus_one(i as u64), "task {i}");
            assert_ne!(pid, me, "task {i} ran in the test process");
            before.insert(pid);
        }
    }
    let dead = dead.expect("checked");
    // The dead worker is reaped (no zombie), without anyone joining the pool. (A pid reused
    // meanwhile would keep /proc/<pid>; with pid_max 32768 that needs ~32k forks first.)
    assert!(
        eventually(PROMPT, || stat(dead).is_none()),
        "dead worker {dead} not reaped"
    );

    // The pool works on with two workers, one of them a replacement: one task per message,
    // and slow enough that both workers take some.
    let after: BTreeSet<u32> = pool
        .map_chunked(nap_pid, vec![10; 20], 1)
        .expect("map after the death")
        .into_iter()
        .collect();
    assert!(!after.contains(&dead), "dead worker {dead} ran a task");
    assert_eq!(after.len(), 2, "{after:?}");
    let mut seen = before;
    seen.insert(dead);
    seen.extend(&after);
    assert!(seen.len() > 2, "no worker was replaced: {seen:?}");
    assert_eq!(pool.processes(), 2);

    // `map` reports the death as its (first) error, and the pool still works.
    match pool.map(die_on_doomed, 0..100) {
        Err(TaskError::WorkerDied { exitcode, .. }) => assert_eq!(exitcode, -libc::SIGKILL),
        other => panic!("map over a dying task: {other:?}"),
    }
    assert_eq!(pool.map(square_plus_one, 0..500), Ok(expected(0..500)));

    // A worker that exits (rather than being killed) mid-task: its exit code.
    match pool.apply_async(exit_on_doomed, DOOMED).get() {
        Err(TaskError::WorkerDied { pid, exitcode }) => {
            assert_eq!(exitcode, 3, "worker {pid}'s exit code");
            assert_ne!(pid, me);
        }
        other => panic!("task that exits: {other:?}"),
    }
    assert_eq!(pool.map(square_plus_one, 0..500), Ok(expected(0..500)));
}

fn worker_killed_from_outside_fails_its_task_and_the_rest_complete(method: StartMethod) {
    let pool = pool(method, 2);
    let (tx, rx) = pid_channel();
    let long = pool.apply_async(report_pid_then_sleep, tx.clone());
    // Quick tasks alongside; some may wait behind the long one on its worker.
    let quick: Vec<_> = (0..40)
        .map(|x| pool.apply_async(nap_then_square, (2, x)))
        .collect();
    let victim = reported_worker(&rx);
    assert!(!long.ready());
    sigkill(victim.pid);
    let killed = Instant::now();
    assert_eq!(
        long.get(),
        Err(TaskError::WorkerDied {
            pid: victim.pid,
            exitcode: -libc::SIGKILL
        })
    );
    let noticed = killed.elapsed();
    assert!(noticed < PROMPT, "death noticed after {noticed:?}");
    for (x, r) in quick.iter().enumerate() {
        assert_eq!(r.get(), Ok(square_plus_one(x as u64)), "quick task {x}");
    }
    assert!(
        eventually(PROMPT, || victim.reaped()),
        "killed worker {} not reaped",
        victim.pid
    );

    // The pool works on, and the replacement runs tasks too.
    let pids: BTreeSet<u32> = pool
        .map_chunked(nap_pid, vec![10; 20], 1)
        .expect("map after the kill")
        .into_iter()
        .collect();
    assert!(!pids.contains(&victim.pid));
    assert_eq!(pids.len(), 2, "both workers (one a replacement) ran tasks");
    // A second kill is handled the same way.
    let long = pool.apply_async(report_pid_then_sleep, tx.clone());
    let victim = reported_worker(&rx);
    sigkill(victim.pid);
    assert_eq!(
        long.get(),
        Err(TaskError::WorkerDied {
            pid: victim.pid,
            exitcode: -libc::SIGKILL
        })
    );
    assert_eq!(pool.map(square_plus_one, 0..100), Ok(expected(0..100)));

    // An idle worker killed: replaced, and no task fails.
    let idle: BTreeSet<u32> = pool
        .map_chunked(nap_pid, vec![10; 20], 1)
        .expect("map")
        .into_iter()
        .collect();
    let victim = Ident::of(*idle.first().expect("a worker"));
    sigkill(victim.pid);
    assert!(
        eventually(PROMPT, || victim.reaped()),
        "idle worker {} killed but not reaped",
        victim.pid
    );
    let pids: BTreeSet<u32> = pool
        .map_chunked(nap_pid, vec![10; 20], 1)
        .expect("map after an idle worker was killed")
        .into_iter()
        .collect();
    assert!(!pids.contains(&victim.pid));
    assert_eq!(pids.len(), 2, "{pids:?}");
}

// ---------------------------------------------------------------------------------------------
// Panics

fn panicking_task_fails_only_itself(method: StartMethod) {
    let pool = pool(method, 2);
    let refused = || TaskError::Panicked(format!("task {DOOMED} refused"));

    let results: Vec<_> = pool.imap(panic_on_doomed, 0..100).collect();
    for (i, r) in results.into_iter().enumerate() {
        if i as u64 == DOOMED {
            assert_eq!(r, Err(refused()));
        } else {
            assert_eq!(r, Ok(square_plus_one(i as u64)), "task {i}");
        }
    }
    // In the middle of a chunk, through map (its first error) and imap_chunked.
    assert_eq!(
        pool.map_chunked(panic_on_doomed, 0..100, 10),
        Err(refused())
    );
    let results: Vec<_> = pool.imap_chunked(panic_on_doomed, 0..100, 10).collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    assert_eq!(results[DOOMED as usize], Err(refused()));
    assert_eq!(
        results[DOOMED as usize + 1],
        Ok(square_plus_one(DOOMED + 1))
    );
    // Through apply_async, with a literal message.
    assert_eq!(
        pool.apply_async(panic_on_doomed, DOOMED).get(),
        Err(refused())
    );
    assert_eq!(
        pool.apply_async(panic_literally, 0).get(),
        Err(TaskError::Panicked("refused, literally".into()))
    );
    // The pool still works.
    assert_eq!(pool.map(square_plus_one, 0..1_000), Ok(expected(0..1_000)));
}

// ---------------------------------------------------------------------------------------------
// max_tasks_per_child

fn max_tasks_per_child_replaces_workers(method: StartMethod) {
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(2)
        .start_method(method)
        .build()
        .expect("start pool");
    let pids = pool
        .map_chunked(nap_pid, vec![0; 20], 1)
        .expect("map with retiring workers");
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for &p in &pids {
        assert_ne!(p, std::process::id());
        *per_pid.entry(p).or_default() += 1;
    }
    assert!(per_pid.len() > 2, "no worker was replaced: {per_pid:?}");
    assert!(
        per_pid.values().all(|&n| n <= 2),
        "a worker ran more than 2 tasks: {per_pid:?}"
    );
    // Workers that ran their 2 tasks exit and are reaped (no zombies) while the pool lives.
    let retired: Vec<u32> = per_pid
        .iter()
        .filter(|&(_, &n)| n == 2)
        .map(|(&p, _)| p)
        .collect();
    assert!(
        eventually(PROMPT, || retired.iter().all(|&p| stat(p).is_none())),
        "retired workers not reaped: {:?}",
        retired
            .iter()
            .filter(|&&p| stat(p).is_some())
            .collect::<Vec<_>>()
    );
    // And the pool goes on with fresh workers.
    let more = pool.map_chunked(nap_pid, vec![0; 4], 1).expect("map");
    assert!(more.iter().all(|p| !retired.contains(p)));
}

// ---------------------------------------------------------------------------------------------
// Initializers

/// Set by `remember_tag` in workers only, never in the test process.
static INIT_TAG: OnceLock<String> = OnceLock::new();
static INIT_RUNS: AtomicU32 = AtomicU32::new(0);

fn remember_tag(tag: String) {
    INIT_RUNS.fetch_add(1, Ordering::SeqCst);
    INIT_TAG.set(tag).expect("initializer ran twice");
}

/// What the initializer left in this worker: (tag, times it ran, pid).
fn read_tag(_: u64) -> (Option<String>, u32, u32) {
    (
        INIT_TAG.get().cloned(),
        INIT_RUNS.load(Ordering::SeqCst),
        std::process::id(),
    )
}

fn initializer_runs_once_in_every_worker(method: StartMethod) {
    let tag = format!("tag of {}", std::process::id());
    // Workers retire after 3 tasks, so replacements must run the initializer too.
    let pool = Pool::builder()
        .processes(2)
        .initializer(remember_tag, tag.clone())
        .expect("initializer argument serialises")
        .max_tasks_per_child(3)
        .start_method(method)
        .build()
        .expect("start pool");
    let seen = pool
        .map_chunked(read_tag, 0..15, 1)
        .expect("tasks after the initializer");
    let mut pids = BTreeSet::new();
    for (i, (t, runs, pid)) in seen.into_iter().enumerate() {
        assert_eq!(t.as_deref(), Some(tag.as_str()), "task {i} in worker {pid}");
        assert_eq!(runs, 1, "task {i}: initializer runs in worker {pid}");
        pids.insert(pid);
    }
    assert!(pids.len() >= 5, "15 tasks, 3 per worker: {pids:?}");
    // It ran in the workers only.
    assert_eq!(INIT_TAG.get(), None);
    assert_eq!(INIT_RUNS.load(Ordering::SeqCst), 0);
}

/// An initializer that reports its worker's pid on a queue it is given.
fn report_pid_at_start(tx: Sender<u32>) {
    tx.put(std::process::id())
        .expect("report pid from the initializer");
}

fn initializer_hands_shared_objects_to_every_worker(method: StartMethod) {
    // A memfd-backed queue (the default), which only reaches workers through the initializer.
    let (tx, rx) = Queue::<u32>::new(64)
        .expect("queue")
        .split()
        .expect("split");
    let pool = Pool::builder()
        .processes(2)
        .initializer(report_pid_at_start, tx.clone())
        .expect("initializer argument serialises")
        .max_tasks_per_child(2)
        .start_method(method)
        .build()
        .expect("start pool");
    let ran: BTreeSet<u32> = pool
        .map_chunked(nap_pid, vec![0; 6], 1)
        .expect("map")
        .into_iter()
        .collect();
    assert!(ran.len() >= 3, "workers retire after 2 tasks: {ran:?}");
    // Every worker that ran a task reported once from its initializer (replacements started
    // since may have reported too).
    let mut reported: BTreeMap<u32, usize> = BTreeMap::new();
    while !ran.iter().all(|p| reported.contains_key(p)) {
        let pid = rx.get_timeout(START).unwrap_or_else(|e| {
            panic!("initializer reports so far {reported:?}, ran {ran:?}: {e}")
        });
        *reported.entry(pid).or_default() += 1;
    }
    while let Ok(pid) = rx.try_get() {
        *reported.entry(pid).or_default() += 1;
    }
    assert!(reported.values().all(|&n| n == 1), "{reported:?}");
    drop(pool);
}

fn refuse_to_start(why: String) {
    panic!("initializer refused: {why}");
}

fn panicking_initializer_fails_every_task_without_hanging(method: StartMethod) {
    let pool = Pool::builder()
        .processes(2)
        .initializer(refuse_to_start, "no database".to_string())
        .expect("initializer argument serialises")
        .start_method(method)
        .build()
        .expect("start pool");
    let failed = TaskError::InitializerFailed("initializer refused: no database".into());
    // Submitted at once, before (or while) the workers fail.
    let early = pool.apply_async(square_plus_one, 1);
    assert_eq!(pool.map(square_plus_one, 0..1_000), Err(failed.clone()));
    assert_eq!(early.get(), Err(failed.clone()));
    // Submitted after the pool knows.
    let results: Vec<_> = pool.imap(square_plus_one, 0..10).collect();
    assert_eq!(results, vec![Err(failed.clone()); 10]);
    let unordered: BTreeSet<usize> = pool
        .imap_unordered_indexed(square_plus_one, 0..10)
        .map(|(i, r)| {
            assert_eq!(r, Err(failed.clone()));
            i
        })
        .collect();
    assert_eq!(unordered, (0..10).collect());
    assert_eq!(
        pool.apply_async(square_plus_one, 2).get(),
        Err(failed.clone())
    );
    assert_eq!(pool.map_chunked(square_plus_one, 0..10, 1), Err(failed));
    // Closing and joining a broken pool ends too.
    pool.close();
    pool.join();
}

/// `0..n`, panicking when it would yield `at`.
fn panics_at(n: u64, at: u64) -> impl Iterator<Item = u64> {
    (0..n).inspect(move |&x| {
        if x == at {
            panic!("input {x} refused");
        }
    })
}

fn imap_yields_the_results_before_a_panicking_input_then_its_panic(method: StartMethod) {
    let pool = pool(method, 2);
    let refused = |x: u64| Err(TaskError::Input(format!("input {x} refused")));

    for chunksize in [1, 16] {
        let got: Vec<_> = pool
            .imap_chunked(square_plus_one, panics_at(1_000, 300), chunksize)
            .collect();
        let mut want: Vec<_> = expected(0..300).into_iter().map(Ok).collect();
        want.push(refused(300));
        assert_eq!(got, want, "chunk size {chunksize}");
    }
    // At the first item, and with results still to come after the error was seen.
    let mut first = pool.imap(square_plus_one, panics_at(10, 0));
    assert_eq!(first.next(), Some(refused(0)));
    assert_eq!(first.next(), None);
    let mut results = pool.imap(nap_then_square, panics_at(5, 3).map(|x| (20, x)));
    assert_eq!(results.next(), Some(Ok(1)));
    let rest: Vec<_> = results.collect();
    assert_eq!(rest, [Ok(2), Ok(5), refused(3)]);

    // Unordered: every result before it, each once, then the panic with its item's index.
    let mut got: Vec<_> = pool
        .imap_unordered_indexed(square_plus_one, panics_at(1_000, 500))
        .collect();
    assert_eq!(got.pop(), Some((500, refused(500))));
    got.sort_by_key(|(i, _)| *i);
    let want: Vec<_> = (0..500)
        .map(|i| (i, Ok(square_plus_one(i as u64))))
        .collect();
    assert_eq!(got, want);
    let mut unordered: Vec<_> = pool
        .imap_unordered(square_plus_one, panics_at(10, 5))
        .collect();
    assert_eq!(unordered.pop(), Some(refused(5)));
    unordered.sort_by_key(|r| *r.as_ref().unwrap());
    assert_eq!(
        unordered,
        expected(0..5).into_iter().map(Ok).collect::<Vec<_>>()
    );

    // The pool is unharmed.
    assert_eq!(pool.map(square_plus_one, [3, 4]), Ok(vec![10, 17]));
}

// ---------------------------------------------------------------------------------------------
// apply_async

fn apply_async_get_get_timeout_and_ready(method: StartMethod) {
    let pool = pool(method, 2);

    let quick = pool.apply_async(square_plus_one, 12);
    assert_eq!(quick.get(), Ok(145));
    assert!(quick.ready());
    assert_eq!(quick.get(), Ok(145), "get again");
    assert_eq!(quick.get_timeout(Duration::ZERO), Ok(145));
    assert_eq!(
        pool.apply_async(square_plus_one, 3).get_timeout(START),
        Ok(10)
    );

    let slow_ms = 500;
    let submitted = Instant::now();
    let slow = pool.apply_async(nap_then_square, (slow_ms, 7));
    assert!(!slow.ready(), "ready before the task could have finished");
    let timeout = Duration::from_millis(50);
    let t = Instant::now();
    assert_eq!(slow.get_timeout(timeout), Err(TaskError::Timeout));
    assert!(t.elapsed() >= timeout, "timed out after {:?}", t.elapsed());
    assert_eq!(slow.get(), Ok(50));
    let took = submitted.elapsed();
    assert!(
        took >= Duration::from_millis(slow_ms),
        "result after {took:?}"
    );
    assert!(slow.ready());
    assert_eq!(slow.get_timeout(Duration::ZERO), Ok(50));

    // Many at once, read in reverse.
    let many: Vec<_> = (0..100)
        .map(|x| pool.apply_async(square_plus_one, x))
        .collect();
    for (x, r) in many.iter().enumerate().rev() {
        assert_eq!(r.get(), Ok(square_plus_one(x as u64)));
    }
}

// ---------------------------------------------------------------------------------------------
// apply_async with callbacks, map_async, starmap_async

/// Waits (up to `NAP`) until the counter named `released` reaches `rank`, naps `ms`, and
/// returns `rank`: the parent's callback for rank `k` releases rank `k + 1`.
fn ranked((rank, ms, released): (u64, u64, String)) -> u64 {
    let released = common::counter(&released);
    let deadline = Instant::now() + NAP;
    while released.load(Ordering::SeqCst) < rank && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(ms));
    rank
}

/// What the callbacks of a test saw: (which callback, task index, value), in call order, and
/// the threads they ran on.
#[derive(Default)]
struct Seen {
    calls: Vec<(&'static str, usize, String)>,
    threads: BTreeSet<String>,
}

type Log = std::sync::Arc<std::sync::Mutex<Seen>>;

fn record(log: &Log, what: &'static str, i: usize, v: String) {
    let mut seen = log.lock().unwrap();
    seen.calls.push((what, i, v));
    seen.threads
        .insert(format!("{:?}", std::thread::current().id()));
}

fn apply_async_callbacks_run_once_each_in_completion_order(method: StartMethod) {
    // As many workers as tasks: each runs at once and waits for its rank, so the tasks end in
    // rank order, which is not the order they were submitted in, and only if the callback of
    // each result runs before the next task can end.
    const RANKS: [u64; 6] = [3, 0, 5, 1, 4, 2];
    let pool = pool(method, RANKS.len());
    let (released, name) = new_counter("released");
    let released = std::sync::Arc::new(released);
    let log = Log::default();
    let results: Vec<_> = RANKS
        .iter()
        .enumerate()
        .map(|(i, &rank)| {
            let (ok_log, err_log, released) = (log.clone(), log.clone(), released.clone());
            pool.apply_async_with(
                ranked,
                (rank, 5 * (i as u64 % 3), name.clone()),
                move |v: u64| {
                    record(&ok_log, "ok", i, v.to_string());
                    released.store(v + 1, Ordering::SeqCst);
                },
                move |e| record(&err_log, "err", i, e.to_string()),
            )
        })
        .collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.get_timeout(START * 2), Ok(RANKS[i]), "task {i}");
        assert!(r.ready());
        assert_eq!(r.successful(), Some(true));
    }
    let seen = log.lock().unwrap();
    let mut by_rank: Vec<usize> = (0..RANKS.len()).collect();
    by_rank.sort_by_key(|&i| RANKS[i]);
    let want: Vec<_> = by_rank
        .iter()
        .map(|&i| ("ok", i, RANKS[i].to_string()))
        .collect();
    assert_eq!(seen.calls, want, "callbacks once each, in completion order");
    assert_eq!(seen.threads.len(), 1, "one callback thread");
    assert!(
        !seen
            .threads
            .contains(&format!("{:?}", std::thread::current().id())),
        "callbacks ran on the test's thread"
    );
    drop(seen);

    // Many tasks of varying lengths: each callback once, and before `get` returns.
    let log = Log::default();
    let many: Vec<_> = (0..200u64)
        .map(|x| {
            let (ok_log, err_log) = (log.clone(), log.clone());
            pool.apply_async_with(
                nap_then_square,
                (x % 7, x),
                move |v: u64| record(&ok_log, "ok", x as usize, v.to_string()),
                move |e| record(&err_log, "err", x as usize, e.to_string()),
            )
        })
        .collect();
    for (x, r) in many.iter().enumerate() {
        assert_eq!(r.get(), Ok(square_plus_one(x as u64)));
        let seen = log.lock().unwrap();
        assert!(
            seen.calls.iter().any(|c| c.1 == x),
            "task {x}'s result is ready before its callback ran"
        );
    }
    pool.close();
    pool.join();
    let seen = log.lock().unwrap();
    let mut calls = seen.calls.clone();
    calls.sort_by_key(|c| c.1);
    let want: Vec<_> = (0..200u64)
        .map(|x| ("ok", x as usize, square_plus_one(x).to_string()))
        .collect();
    assert_eq!(calls, want);
}

fn apply_async_error_callback_gets_panics_and_dead_workers(method: StartMethod) {
    let pool = pool(method, 2);
    let log = Log::default();
    let cb = |i: usize| {
        let (ok_log, err_log) = (log.clone(), log.clone());
        (
            move |v: u64| record(&ok_log, "ok", i, v.to_string()),
            move |e: TaskError| {
                let kind = match e {
                    TaskError::Panicked(m) => format!("panicked: {m}"),
                    TaskError::WorkerDied { .. } => "died".to_string(),
                    other => format!("other: {other}"),
                };
                record(&err_log, "err", i, kind)
            },
        )
    };
    let (ok, err) = cb(0);
    let panicked = pool.apply_async_with(panic_on_doomed, DOOMED, ok, err);
    assert!(matches!(panicked.get(), Err(TaskError::Panicked(_))));
    assert_eq!(panicked.successful(), Some(false));
    let (ok, err) = cb(1);
    let exited = pool.apply_async_with(exit_on_doomed, DOOMED, ok, err);
    assert!(matches!(exited.get(), Err(TaskError::WorkerDied { .. })));
    let (ok, err) = cb(2);
    let killed = pool.apply_async_with(die_on_doomed, DOOMED, move |(v, _)| ok(v), err);
    assert!(matches!(killed.get(), Err(TaskError::WorkerDied { .. })));
    assert_eq!(killed.successful(), Some(false));
    // The pool still works, and its callbacks too.
    let (ok, err) = cb(3);
    assert_eq!(
        pool.apply_async_with(square_plus_one, 4, ok, err).get(),
        Ok(17)
    );
    // A callback that panics is ignored; the next still runs.
    let r = pool.apply_async_with(square_plus_one, 5, |_| panic!("callback refused"), |_| {});
    assert_eq!(r.get(), Ok(26));
    let (ok, err) = cb(4);
    assert_eq!(
        pool.apply_async_with(square_plus_one, 6, ok, err).get(),
        Ok(37)
    );

    let seen = log.lock().unwrap();
    assert_eq!(
        seen.calls,
        [
            ("err", 0, format!("panicked: task {DOOMED} refused")),
            ("err", 1, "died".to_string()),
            ("err", 2, "died".to_string()),
            ("ok", 3, "17".to_string()),
            ("ok", 4, "37".to_string()),
        ]
    );
    drop(seen);

    // Terminating with a task in flight: its error callback runs before `terminate` returns.
    let (tx, rx) = pid_channel();
    let (ok, err) = cb(5);
    let _long = pool.apply_async_with(report_pid_then_sleep_u64, tx.clone(), ok, err);
    reported_worker(&rx);
    pool.terminate();
    let seen = log.lock().unwrap();
    assert_eq!(seen.calls.len(), 6);
    assert_eq!(seen.calls[5].0, "err");
    assert_eq!(seen.calls[5].1, 5);
}

/// [`report_pid_then_sleep`], with a `u64` result.
fn report_pid_then_sleep_u64(tx: Sender<u32>) -> u64 {
    u64::from(report_pid_then_sleep(tx))
}

fn map_async_and_starmap_async_with_callbacks(method: StartMethod) {
    let pool = pool(method, 2);

    let r = pool.map_async(square_plus_one, upto(1_000));
    assert_eq!(r.get(), Ok(expected(0..1_000)));
    assert_eq!(r.successful(), Some(true));
    let pairs: Vec<(u64, u64)> = (0..300).map(|i| (i, 2 * i)).collect();
    let r = pool.starmap_async(add, &pairs);
    assert_eq!(r.get(), Ok((0..300).map(|i| 3 * i).collect::<Vec<_>>()));
    assert_eq!(pool.map_async(square_plus_one, 0..0).get(), Ok(vec![]));

    // Not ready while a task is held; `wait_timeout` tells.
    let (gate, gate_name) = new_counter("gate");
    let slow = pool.map_async(
        held_until_released,
        [(0, gate_name.clone()), (1, gate_name)],
    );
    assert_eq!(slow.successful(), None);
    assert!(!slow.ready());
    let t = Instant::now();
    assert!(!slow.wait_timeout(Duration::from_millis(20)));
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(
        slow.get_timeout(Duration::from_millis(1)),
        Err(TaskError::Timeout)
    );
    gate.store(1, Ordering::SeqCst);
    slow.wait();
    assert!(slow.ready());
    assert!(slow.wait_timeout(Duration::ZERO));
    assert_eq!(slow.get(), Ok(vec![1, 2]));

    let (tx, rx) = std::sync::mpsc::channel();
    let (etx, erx) = std::sync::mpsc::channel();
    let r = pool.map_async_with(
        square_plus_one,
        upto(500),
        move |v| tx.send(v).unwrap(),
        move |e| etx.send(e).unwrap(),
    );
    assert_eq!(r.get(), Ok(expected(0..500)));
    assert_eq!(
        rx.try_recv(),
        Ok(expected(0..500)),
        "callback ran before get returned"
    );

    // The first error in item order, once, to the error callback only.
    let (tx2, rx2) = std::sync::mpsc::channel();
    let (etx2, erx2) = std::sync::mpsc::channel();
    let r = pool.map_async_with(
        panic_on_doomed,
        upto(100),
        move |v| tx2.send(v).unwrap(),
        move |e| etx2.send(e).unwrap(),
    );
    let want = Err(TaskError::Panicked(format!("task {DOOMED} refused")));
    assert_eq!(r.get(), want);
    assert_eq!(r.successful(), Some(false));
    assert_eq!(erx2.try_recv().ok(), want.err());

    let (tx3, rx3) = std::sync::mpsc::channel();
    let r = pool.starmap_async_with(add, pairs, move |v| tx3.send(v).unwrap(), |_| {});
    assert_eq!(r.get().map(|v| v.len()), Ok(300));
    assert_eq!(rx3.try_recv().map(|v| v[299]), Ok(299 * 3));

    pool.close();
    pool.join();
    assert!(
        erx.try_recv().is_err(),
        "error callback of a successful map"
    );
    assert!(rx.try_recv().is_err(), "a callback ran twice");
    assert!(rx2.try_recv().is_err(), "ok callback of a failed map");
    assert!(erx2.try_recv().is_err(), "error callback ran twice");
}

// ---------------------------------------------------------------------------------------------
// Timeout forms

/// Item 0 of each list is held until its gate opens.
fn gated(n: u64, gate: &str) -> Vec<(u64, String)> {
    (0..n).map(|x| (x, gate.to_string())).collect()
}

fn timeout_forms_time_out_while_a_task_is_held_then_succeed(method: StartMethod) {
    let pool = pool(method, 2);
    let short = Duration::from_millis(30);
    let timed_out = |t: Instant| assert!(t.elapsed() >= short, "after {:?}", t.elapsed());

    // map_timeout and its kin.
    let (gate, name) = new_counter("gate");
    let t = Instant::now();
    assert_eq!(
        pool.map_timeout(held_until_released, gated(10, &name), short),
        Err(TaskError::Timeout)
    );
    timed_out(t);
    gate.store(1, Ordering::SeqCst);
    assert_eq!(
        pool.map_timeout(held_until_released, gated(10, &name), START),
        Ok(expected(0..10))
    );
    assert_eq!(
        pool.map_chunked_timeout(square_plus_one, 0..100, 7, START),
        Ok(expected(0..100))
    );
    assert_eq!(
        pool.starmap_timeout(add, [(1, 2), (3, 4)], START),
        Ok(vec![3, 7])
    );
    assert_eq!(
        pool.starmap3_timeout(repeat_joined, [("a".to_string(), 2, '.')], START),
        Ok(vec!["a.a".to_string()])
    );

    // Imap::next_timeout: a timeout leaves the result to come next.
    let (gate, name) = new_counter("gate");
    let mut results = pool.imap(held_until_released, gated(5, &name));
    let t = Instant::now();
    assert_eq!(results.next_timeout(short), Some(Err(TaskError::Timeout)));
    timed_out(t);
    assert_eq!(results.len(), 5);
    gate.store(1, Ordering::SeqCst);
    assert_eq!(results.next_timeout(START), Some(Ok(1)));
    let rest: Vec<_> = results.map(Result::unwrap).collect();
    assert_eq!(rest, expected(1..5));

    // ImapUnordered::next_timeout.
    let (gate, name) = new_counter("gate");
    let mut results = pool.imap_unordered(held_until_released, gated(1, &name));
    assert_eq!(results.next_timeout(short), Some(Err(TaskError::Timeout)));
    gate.store(1, Ordering::SeqCst);
    assert_eq!(results.next_timeout(START), Some(Ok(1)));
    assert_eq!(results.next_timeout(START), None);

    // join_timeout: false while a task is held, true once it and its callback are done.
    let (gate, name) = new_counter("gate");
    let (tx, rx) = std::sync::mpsc::channel();
    let held = pool.apply_async_with(
        held_until_released,
        (0, name),
        move |v| tx.send(v).unwrap(),
        |e| panic!("{e}"),
    );
    pool.close();
    let t = Instant::now();
    assert!(!pool.join_timeout(short));
    timed_out(t);
    assert!(!held.ready());
    gate.store(1, Ordering::SeqCst);
    assert!(pool.join_timeout(START));
    assert_eq!(
        rx.try_recv(),
        Ok(1),
        "the callback ran before join_timeout returned"
    );
    assert_eq!(held.get_timeout(Duration::ZERO), Ok(1));
    assert!(pool.join_timeout(Duration::ZERO), "joined already");
    pool.join();
}

// ---------------------------------------------------------------------------------------------
// close, join, terminate, drop

fn close_and_join_finish_submitted_work_then_reap_the_workers(method: StartMethod) {
    let pool = pool(method, 2);
    // Learn the workers (both, as each sleeps while the other takes the next task).
    let mut workers: BTreeSet<Ident> = pool
        .map_chunked(nap_pid, vec![20; 8], 1)
        .expect("map")
        .into_iter()
        .map(Ident::of)
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");

    let pending: Vec<_> = (0..6).map(|_| pool.apply_async(nap_pid, 100)).collect();
    // imap is lazy: reading its first result submits the first few items.
    let mut results = pool.imap(square_plus_one, 0..50);
    assert_eq!(results.next(), Some(Ok(1)));
    pool.close();

    // Nothing new is taken.
    assert_eq!(
        pool.apply_async(square_plus_one, 1).get(),
        Err(TaskError::Closed)
    );
    assert_eq!(pool.map(square_plus_one, 0..10), Err(TaskError::Closed));
    assert_eq!(pool.starmap(add, [(1, 2)]), Err(TaskError::Closed));
    let late: Vec<_> = pool.imap(square_plus_one, 0..3).collect();
    assert_eq!(late, vec![Err(TaskError::Closed); 3]);

    pool.join();
    // Everything submitted before close has finished.
    for (k, r) in pending.iter().enumerate() {
        assert!(r.ready(), "task {k} not finished after join");
        let pid = r.get().expect("task submitted before close");
        assert!(
            workers.iter().any(|w| w.pid == pid),
            "task {k} ran in {pid}, not a worker"
        );
    }
    // The imap items submitted before join have their results; those it pulls once the pool
    // has stopped are refused. (Read before join, they all run: see
    // `imap_made_before_close_runs_every_item`.)
    let rest: Vec<_> = results.collect();
    assert_eq!(rest.len(), 49);
    let submitted = rest.iter().take_while(|r| r.is_ok()).count();
    assert_eq!(
        rest[..submitted],
        expected(1..=submitted as u64)
            .into_iter()
            .map(Ok)
            .collect::<Vec<_>>()[..]
    );
    assert!(
        rest[submitted..]
            .iter()
            .all(|r| *r == Err(TaskError::Terminated)),
        "imap after join: {rest:?}"
    );
    // The workers have exited and been reaped.
    assert_reaped(&workers, "after join");
    assert_eq!(
        pool.apply_async(square_plus_one, 1).get(),
        Err(TaskError::Closed)
    );
    // join and terminate again, and drop, do nothing more.
    pool.join();
    pool.terminate();
    drop(pool);
    workers.clear();

    // join without close closes first.
    let pool = self::pool(method, 1);
    let pending = pool.apply_async(nap_pid, 50);
    let worker = Ident::of(pool.apply_async(nap_pid, 0).get().expect("pid"));
    pool.join();
    assert_eq!(pending.get(), Ok(worker.pid));
    assert!(worker.reaped());
    assert_eq!(pool.map(square_plus_one, 0..1), Err(TaskError::Closed));
}

fn terminate_with_a_long_task_in_flight_returns_promptly(method: StartMethod) {
    let pool = pool(method, 2);
    let (tx, rx) = pid_channel();
    std::thread::scope(|s| {
        // Two long tasks, one each for the two workers: one from apply_async, one from a map
        // that blocks another thread. More tasks wait behind them.
        let first = pool.apply_async(report_pid_then_sleep, tx.clone());
        let mapper = s.spawn(|| pool.map(report_pid_then_sleep, [tx.clone()]));
        let workers: BTreeSet<Ident> = [reported_worker(&rx), reported_worker(&rx)].into();
        assert_eq!(workers.len(), 2);
        let queued: Vec<_> = (0..10)
            .map(|x| pool.apply_async(square_plus_one, x))
            .collect();

        let t = Instant::now();
        pool.terminate();
        let took = t.elapsed();
        assert!(took < PROMPT, "terminate took {took:?}");
        assert_eq!(first.get(), Err(TaskError::Terminated));
        assert_eq!(mapper.join().unwrap(), Err(TaskError::Terminated));
        let mapped = t.elapsed();
        assert!(mapped < PROMPT, "the blocked map returned after {mapped:?}");
        for (x, r) in queued.iter().enumerate() {
            // The long tasks held both workers: none of these could run.
            assert_eq!(r.get(), Err(TaskError::Terminated), "queued task {x}");
        }
        assert_reaped(&workers, "after terminate");
    });

    // A terminated pool takes nothing.
    assert_eq!(
        pool.apply_async(square_plus_one, 1).get(),
        Err(TaskError::Terminated)
    );
    assert_eq!(pool.map(square_plus_one, 0..5), Err(TaskError::Terminated));
    let late: Vec<_> = pool.imap(square_plus_one, 0..2).collect();
    assert_eq!(late, vec![Err(TaskError::Terminated); 2]);
    let t = Instant::now();
    pool.join();
    pool.terminate();
    drop(pool);
    assert!(t.elapsed() < PROMPT);
}

fn dropping_a_pool_with_work_in_flight_leaves_no_worker(method: StartMethod) {
    let (tx, rx) = pid_channel();
    let pool = pool(method, 2);
    let first = pool.apply_async(report_pid_then_sleep, tx.clone());
    let second = pool.apply_async(report_pid_then_sleep, tx.clone());
    let workers: BTreeSet<Ident> = [reported_worker(&rx), reported_worker(&rx)].into();
    assert_eq!(workers.len(), 2);
    let queued: Vec<_> = (0..10).map(|x| pool.apply_async(nap_pid, x)).collect();

    let t = Instant::now();
    drop(pool);
    let took = t.elapsed();
    assert!(took < PROMPT, "drop took {took:?}");
    assert_reaped(&workers, "after drop");
    // Results outlive the pool, and nobody waits for them forever.
    assert_eq!(first.get(), Err(TaskError::Terminated));
    assert_eq!(second.get(), Err(TaskError::Terminated));
    for r in &queued {
        assert_eq!(r.get(), Err(TaskError::Terminated));
    }
}

// ---------------------------------------------------------------------------------------------
// Defaults

#[test]
fn pool_new_starts_n_spawned_workers() {
    let _watchdog = watchdog(LIMIT, "Pool::new");
    let pool = Pool::new(3).expect("Pool::new");
    assert_eq!(pool.processes(), 3);
    // Long enough that each of the 3 workers takes one of the first tasks.
    let pids: BTreeSet<u32> = pool
        .map_chunked(nap_pid, vec![50; 9], 1)
        .expect("map")
        .into_iter()
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    for &p in &pids {
        assert_eq!(stat(p).map(|s| s.ppid), Some(std::process::id()));
        // Started by re-executing this binary (the default start method), not by fork.
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).expect("cmdline");
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            cmdline.contains("--multiproc-spawned=PoolWorker-"),
            "worker {p}: {cmdline:?}"
        );
    }
    assert_eq!(pool.map(with_pid, [2]).map(|v| v[0].0), Ok(5));
}

fn square(x: u64) -> u64 {
    x * x
}

/// Issue 11: tasks are function pointers; the common calls still infer their types: a `fn`
/// item, a non-capturing closure with an annotated argument, `starmap` over integer literals.
#[test]
fn issue_11_common_calls_infer_with_function_pointers() {
    let _watchdog = watchdog(LIMIT, "issue 11: inference");
    let pool = Pool::new(2).expect("Pool::new");
    let squares: Vec<u64> = (0..100).map(|x| x * x).collect();
    assert_eq!(pool.map(square, 0..100u64), Ok(squares));
    let v = vec![1u64, 2, 3];
    assert_eq!(pool.map(|x: u64| x * 2, v), Ok(vec![2, 4, 6]));
    assert_eq!(pool.starmap(add, vec![(1, 2)]), Ok(vec![3]));
    assert_eq!(pool.apply_async(square, 7).get(), Ok(49));
    let ordered: Vec<u64> = pool
        .imap(|x: u64| x + 1, [1, 2])
        .map(Result::unwrap)
        .collect();
    assert_eq!(ordered, [2, 3]);
}

fn shout(text: String) -> String {
    text.to_uppercase()
}

fn total(v: Vec<u64>) -> u64 {
    v.iter().sum()
}

/// Issue 11: items can be borrowed forms of the argument type (`&String` and `&str` for
/// `String`, `&[T]` for `Vec<T>`); each task gets the owned value.
#[test]
fn issue_11_borrowed_items_reach_the_workers_as_owned_values() {
    let _watchdog = watchdog(LIMIT, "issue 11: borrowed items");
    let pool = Pool::new(2).expect("Pool::new");
    let names: Vec<String> = vec!["ada".into(), "grace".into()];
    let want = vec!["ADA".to_string(), "GRACE".to_string()];
    assert_eq!(pool.map(shout, &names), Ok(want.clone()));
    assert_eq!(pool.map(shout, ["ada", "grace"]), Ok(want.clone()));
    assert_eq!(pool.map_chunked(shout, names.iter(), 1), Ok(want.clone()));
    let got: Vec<String> = pool.imap(shout, &names).map(Result::unwrap).collect();
    assert_eq!(got, want);
    let mut got: Vec<String> = pool
        .imap_unordered(shout, &names)
        .map(Result::unwrap)
        .collect();
    got.sort();
    assert_eq!(got, want);
    let rows: Vec<Vec<u64>> = vec![vec![1, 2], vec![3, 4, 5]];
    let slices: Vec<&[u64]> = rows.iter().map(Vec::as_slice).collect();
    assert_eq!(pool.map(total, slices), Ok(vec![3, 12]));
    assert_eq!(pool.apply_async(shout, "x").get(), Ok("X".to_string()));
    assert_eq!(pool.apply_async(total, &rows[1][1..]).get(), Ok(9));
}

/// Counts how often it runs, in the counter named by the argument.
fn count_run((x, counter): (u64, String)) -> u64 {
    common::counter(&counter).fetch_add(1, Ordering::SeqCst);
    x
}

fn each_task_of_a_healthy_pool_runs_exactly_once(method: StartMethod) {
    let pool = pool(method, 2);
    let (runs, name) = new_counter("runs");
    let items: Vec<(u64, String)> = (0..500).map(|x| (x, name.clone())).collect();
    let got = pool.map_chunked(count_run, items, 7).expect("map");
    assert_eq!(got, (0..500).collect::<Vec<u64>>());
    assert_eq!(runs.load(Ordering::SeqCst), 500);
}

// ---------------------------------------------------------------------------------------------
// Regressions: bugs found while writing these tests, each fixed since.

/// Puts its worker's pid on `tx`; returns it too.
fn report_pid(tx: Sender<u32>) -> u32 {
    tx.put(std::process::id()).expect("report pid");
    std::process::id()
}

/// Regression: `Chunk::push` serialises a task's argument and drops it at once. If the argument
/// held the last sender of a queue, the queue has no sender until the worker attaches its
/// copy, and a receiver waiting meanwhile gets `Disconnected` although the task puts a
/// message. (`Process::spawn` keeps such objects attached until the child has attached.)
#[test]
fn sender_moved_into_a_task_keeps_its_queue_connected_until_the_worker_attaches() {
    let _watchdog = watchdog(LIMIT, "sender moved into a task");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let pool = pool(method, 1);
        for round in 0..20 {
            let (tx, rx) = pid_channel();
            let task = pool.apply_async(report_pid, tx);
            let got = rx.get_timeout(START);
            let pid = task.get().expect("the task ran");
            assert_eq!(got, Ok(pid), "{method:?}, round {round}");
        }
    }
}

/// Regression: a memfd-backed object (the default) in a task's argument serialises as a descriptor
/// number of this process; the worker, started before the object existed, resolves that
/// number in its own descriptor table. When a memfd of the worker's has that number (one of
/// the pool's own queues, or an object inherited across fork), the task attaches that object
/// instead: here its pid goes into some other queue, and the task "succeeds". It should reach
/// our queue or fail with `Codec`; it fails now (objects go to workers through the
/// initializer, or by name).
#[test]
fn memfd_backed_sender_in_a_task_reaches_its_queue_or_fails_the_task() {
    let _watchdog = watchdog(LIMIT, "memfd sender in a task");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        for round in 0..3 {
            // A memfd queue that forked workers inherit and that is closed here afterwards,
            // so that the next memfd here may take its descriptor number.
            let inherited = Queue::<u32>::new(4).expect("queue");
            let pool = pool(method, 1);
            drop(inherited);
            let (tx, rx) = Queue::<u32>::new(4).expect("queue").split().expect("split");
            match pool.apply_async(report_pid, tx.clone()).get() {
                // Refused before it reaches a worker, whatever the worker holds at that fd.
                Err(TaskError::Codec(why)) => {
                    assert!(why.contains("memfd-backed"), "{method:?}: {why}")
                }
                Ok(pid) => panic!(
                    "{method:?}, round {round}: task ran in {pid}; ours got {:?}",
                    rx.try_get()
                ),
                Err(e) => panic!("{method:?}, round {round}: {e:?}"),
            }
        }
    }
}

fn exit_at_start(code: i32) {
    std::process::exit(code);
}

/// Regression: a worker that dies inside the initializer (exits, or is killed) is taken for a
/// worker that died between tasks and replaced, and the replacement dies the same way: the
/// pool forked about 180 workers a second forever and no task ever ended. Now a few deaths in
/// a row in the initializer break the pool with `InitializerFailed`, as a panic does.
#[test]
fn initializer_that_exits_fails_the_tasks_instead_of_respawning_forever() {
    let _watchdog = watchdog(LIMIT, "initializer exits");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let pool = Pool::builder()
            .processes(2)
            .initializer(exit_at_start, 1)
            .expect("initializer argument serialises")
            .start_method(method)
            .build()
            .expect("start pool");
        let r = pool.apply_async(square_plus_one, 1).get_timeout(PROMPT);
        match r {
            Err(TaskError::InitializerFailed(why)) => assert!(
                why.contains("died in the initializer") && why.contains("exit code 1"),
                "{method:?}: {why}"
            ),
            other => panic!("{method:?}: {other:?}"),
        }
    }
}

/// Regression: `imap` pulls items only as results are read, and the items not pulled yet when
/// the pool was closed were refused with `Closed`. In Python,
/// `it = pool.imap(f, xs); pool.close(); list(it)` runs every item, and so does this now.
#[test]
fn imap_made_before_close_runs_every_item() {
    let _watchdog = watchdog(LIMIT, "imap across close");
    let pool = pool(StartMethod::Spawn, 2);
    let results = pool.imap(square_plus_one, upto(100));
    pool.close();
    let results: Vec<_> = results.collect();
    assert_eq!(
        results,
        expected(0..100).into_iter().map(Ok).collect::<Vec<_>>()
    );
    pool.join();
}

/// Regression: a forked worker opens its queues through a process-wide registry whose lock
/// it took with a blocking `lock()` (`channel::queue::remember`, called from
/// `BytesRx::from_handle` at the top of `worker_main`). A worker forked while another thread of
/// the parent held that lock (making or dropping any queue handle) blocked there forever; the
/// pool saw a live worker, and the tasks handed to it never ended. About half the pools here
/// got such a worker. The test stops at the first.
#[test]
fn fork_pool_workers_start_while_another_thread_opens_and_drops_queues() {
    let _watchdog = watchdog(LIMIT, "fork beside queue churn");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let q = Queue::<u32>::new(4).expect("queue");
            while !stop.load(Ordering::Relaxed) {
                drop(q.sender().expect("sender"));
            }
        });
        let mut hung = Vec::new();
        for round in 0..20 {
            let pool = pool(StartMethod::Fork, 2);
            let tasks: Vec<_> = (0..4)
                .map(|x| pool.apply_async(square_plus_one, x))
                .collect();
            let deadline = Instant::now() + PROMPT;
            let results: Vec<_> = tasks
                .iter()
                .map(|t| t.get_timeout(deadline.saturating_duration_since(Instant::now())))
                .collect();
            if results != expected(0..4).into_iter().map(Ok).collect::<Vec<_>>() {
                hung.push((round, results));
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(hung.is_empty(), "pools with a stuck worker: {hung:?}");
    });
}

// ---------------------------------------------------------------------------------------------
// Arguments Python rejects (issue 12)

/// Issue 12: a chunk size of 0 is an error (Python's `ValueError`), not silently raised to 1:
/// `map_chunked` fails before sending a task, `imap_chunked` yields the error once and ends,
/// and the pool still works afterwards.
#[test]
fn issue_12_chunksize_zero_is_an_error() {
    let _watchdog = watchdog(LIMIT, "issue_12_chunksize_zero_is_an_error");
    let pool = Pool::new(1).unwrap();
    const WHY: &str = "chunksize must be at least 1, not 0";
    let invalid = |r: Result<Vec<u64>, TaskError>| match r {
        Err(TaskError::InvalidArgument(why)) => assert_eq!(why, WHY),
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    invalid(pool.map_chunked(square, 0..5u64, 0));
    invalid(pool.map_chunked_timeout(square, 0..5u64, 0, Duration::from_secs(30)));
    let mut taken = 0;
    let mut it = pool.imap_chunked(square, (0..5u64).inspect(|_| taken += 1), 0);
    invalid(it.next().unwrap().map(|v| vec![v]));
    assert!(it.next().is_none());
    drop(it);
    assert_eq!(taken, 0, "no item may be taken");
    assert_eq!(
        pool.map_chunked(square, 0..5u64, 2).unwrap(),
        [0, 1, 4, 9, 16]
    );
}

/// Issue 12: a pool of 0 processes and `max_tasks_per_child(0)` are errors of `build` (both
/// `ValueError` in Python), not silently raised to 1; nothing is started, and a later setter
/// call replaces the bad value.
#[test]
fn issue_12_zero_processes_or_max_tasks_are_an_error() {
    use multiproc::ProcessError;
    let _watchdog = watchdog(LIMIT, "issue_12_zero_processes_or_max_tasks_are_an_error");
    let invalid = |r: Result<Pool, ProcessError>, expected: &str| match r {
        Err(ProcessError::InvalidArgument(why)) => assert_eq!(why, expected),
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    const PROCESSES: &str = "a pool needs at least 1 process";
    const MAX_TASKS: &str = "max_tasks_per_child must be at least 1";
    invalid(Pool::new(0), PROCESSES);
    invalid(Pool::builder().processes(0).build(), PROCESSES);
    invalid(
        Pool::builder().processes(1).max_tasks_per_child(0).build(),
        MAX_TASKS,
    );
    invalid(
        Pool::builder()
            .processes(0)
            .max_tasks_per_child(0)
            .start_method(StartMethod::Fork)
            .build(),
        PROCESSES,
    );

    let pool = Pool::builder()
        .processes(0)
        .processes(1)
        .max_tasks_per_child(0)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    assert_eq!(pool.processes(), 1);
    assert_eq!(pool.map(square_plus_one, [1, 2, 3]).unwrap(), [2, 5, 10]);
}
