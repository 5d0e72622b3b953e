//! loom models of the crate's own waiting code: `sleep_unless`/`WaitWord`, `RawLock`, the
//! `Event` and `Semaphore` states, with `sys`'s loom stand-in for futexes and thread ids.
//!
//! ```text
//! RUSTFLAGS="--cfg multiproc_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release --lib --target-dir target/loom
//! ```
//!
//! The stand-in futex never times out, so a lost wake-up is a deadlock, which loom reports.
//! Mutants (`MULTIPROC_LOOM_MUTANT=...` at build time, see `.ci/run` and `primitive::mutant`)
//! break the protocol on purpose;
//! these models must then fail.

#![allow(unsafe_code)]

use loom::sync::Arc;
use loom::thread;

use super::event::EventState;
use super::raw_lock::RawLock;
use super::semaphore::SemState;
use super::wait::{Spinner, WaitWord};
use crate::primitive::{AtomicBool, AtomicU32, Ordering};

/// One thread waits on a wait word for a flag, another sets the flag and notifies.
#[test]
fn wait_word_loses_no_wake_up() {
    loom::model(|| {
        let shared = Arc::new((WaitWord::default(), AtomicBool::new(false)));
        let waker = {
            let shared = shared.clone();
            thread::spawn(move || {
                shared.1.store(true, Ordering::Release);
                shared.0.notify(1);
            })
        };
        let (word, flag) = &*shared;
        loop {
            let seen = word.observe();
            if flag.load(Ordering::Acquire) {
                break;
            }
            if word.wait_unless(seen, None, || flag.load(Ordering::Acquire)) {
                break;
            }
        }
        waker.join().unwrap();
    });
}

/// Two threads increment a plain counter under the lock; one of them may have to sleep.
#[test]
fn raw_lock_excludes_and_wakes() {
    loom::model(|| {
        let shared = Arc::new((RawLock::new(), AtomicU32::new(0)));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let shared = shared.clone();
                thread::spawn(move || {
                    let (lock, count) = &*shared;
                    lock.acquire(None).unwrap();
                    // Not an atomic increment: only mutual exclusion keeps it exact.
                    let n = count.load(Ordering::Relaxed);
                    count.store(n + 1, Ordering::Relaxed);
                    // SAFETY: this thread holds the lock (acquired just above).
                    unsafe { lock.release() };
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(shared.1.load(Ordering::Relaxed), 2);
        assert!(!shared.0.is_locked());
    });
}

/// A waiter never sleeps through a set.
#[test]
fn event_set_wakes_the_waiter() {
    loom::model(|| {
        let ev = Arc::new(EventState::default());
        let setter = {
            let ev = ev.clone();
            thread::spawn(move || ev.set())
        };
        assert!(ev.wait_deadline(None, &Spinner::new()));
        setter.join().unwrap();
    });
}

/// `set` then `clear` at once releases a waiter that was already waiting (issue 8, bug 5).
#[test]
fn event_set_then_clear_releases_the_waiter() {
    loom::model(|| {
        let ev = Arc::new(EventState::default());
        let waiter = {
            let ev = ev.clone();
            thread::spawn(move || assert!(ev.wait_deadline(None, &Spinner::new())))
        };
        // Once the waiter is counted it has read the word it waits to see change.
        while ev.sleepers() == 0 {
            thread::yield_now();
        }
        ev.set();
        ev.clear();
        waiter.join().unwrap();
    });
}

/// Two takers, one giver of two permits: both takers get one, nobody sleeps for good.
#[test]
fn semaphore_gives_every_permit_to_a_sleeper() {
    loom::model(|| {
        let sem = Arc::new(SemState::default());
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let sem = sem.clone();
                thread::spawn(move || assert!(sem.take(None, &Spinner::new())))
            })
            .collect();
        assert!(sem.give(2, None));
        for t in takers {
            t.join().unwrap();
        }
        assert!(!sem.try_take());
    });
}
