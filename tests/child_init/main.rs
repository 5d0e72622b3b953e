//! `set_child_init`: every child started after it runs the named function first, under both
//! start methods, in a `Pool`'s workers and in a child's own children; a panicking one fails
//! the child with its message.
//!
//! The child initializer is process-wide state, so these checks live in a binary of their
//! own, in one test that sets it step by step.
#![cfg(feature = "serde")]

#[path = "../common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::watchdog;
use multiproc::{Pool, Process, ProcessError, StartMethod};

/// Watchdog for the whole test.
const LIMIT: Duration = Duration::from_secs(120);

/// How often the child initializer ran in this process.
static INIT_RAN: AtomicU32 = AtomicU32::new(0);

/// The per-process start-up a program would do in `main` (a logger, a configuration).
fn set_up() {
    INIT_RAN.fetch_add(1, Ordering::SeqCst);
}

fn refuse_to_start() {
    std::panic::set_hook(Box::new(|_| {}));
    panic!("no configuration file");
}

/// How often the child initializer ran here.
fn init_count((): ()) -> u32 {
    INIT_RAN.load(Ordering::SeqCst)
}

/// As [`init_count`], here and in a child spawned from here.
fn init_count_here_and_in_a_child((): ()) -> (u32, u32) {
    let child = Process::spawn(init_count, ()).expect("spawn a grandchild");
    (init_count(()), child.join().expect("join the grandchild"))
}

fn started_with(method: StartMethod) -> Process<u32> {
    Process::builder()
        .start_method(method)
        .spawn(init_count, ())
        .unwrap_or_else(|e| panic!("start a {method:?} child: {e}"))
}

#[test]
fn every_child_runs_the_child_init_first() {
    let _watchdog = watchdog(LIMIT, "every_child_runs_the_child_init_first");
    // Without one, children run nothing first.
    assert_eq!(Process::spawn(init_count, ()).unwrap().join().unwrap(), 0);

    multiproc::set_child_init(set_up);
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        assert_eq!(started_with(method).join().unwrap(), 1, "{method:?}");
    }
    // A forked child copies our counter (0) and then runs the initializer itself.
    let forked = Process::fork(|| INIT_RAN.load(Ordering::SeqCst)).unwrap();
    assert_eq!(forked.join().unwrap(), 1);
    // A child's children run it too (once each: a spawned child starts from nothing).
    let nested = Process::spawn(init_count_here_and_in_a_child, ()).unwrap();
    assert_eq!(nested.join().unwrap(), (1, 1));
    // Pool workers, under both start methods: once per worker, before any task.
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .build()
            .unwrap();
        assert_eq!(
            pool.map(init_count, vec![(); 20]),
            Ok(vec![1; 20]),
            "{method:?}"
        );
    }
    // The parent itself never ran it.
    assert_eq!(INIT_RAN.load(Ordering::SeqCst), 0);

    // A panicking initializer fails the child with its message; the target never runs.
    multiproc::set_child_init(refuse_to_start);
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let r = started_with(method).join();
        assert!(
            matches!(
                &r,
                Err(ProcessError::Failed(m))
                    if m == "child initializer panicked: no configuration file"
            ),
            "{method:?}: {r:?}"
        );
    }

    // Replaced again: later children run the new one.
    multiproc::set_child_init(set_up);
    assert_eq!(started_with(StartMethod::Spawn).join().unwrap(), 1);
}
