//! The operating system as the loom models see it (`--cfg multiproc_loom`): futexes and thread
//! identities made of loom primitives, so that the crate's own lock, wait word, event and
//! semaphore run under loom unchanged.
//!
//! The futex checks the word and sleeps under one lock, which every wake also takes, as the
//! kernel does under its hash-bucket lock. Its waits ignore their timeout: a model then never
//! wakes up by the clock, so a lost wake-up shows up as a deadlock. Every thread is alive.

use std::cell::Cell;
use std::time::Duration;

use loom::sync::{Condvar, Mutex};

use super::Errno;
use crate::primitive::{AtomicU32, Ordering};

/// A thread's identity: an id unique in the model, and a start time that never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadId {
    pub(crate) tid: u32,
    pub(crate) start: u64,
}

/// What a probe found out about a thread (in a model: always alive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) enum Liveness {
    Alive,
    Gone,
    Reused,
}

/// Ids for the model's threads. A plain (not loom) atomic: ids only need to differ, across
/// every execution of a model, and stay below the lock word's thread-id mask.
static NEXT_TID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

loom::thread_local! {
    static ME: Cell<u32> = Cell::new(0);
}

/// The calling model thread's identity.
pub(crate) fn current_thread() -> ThreadId {
    let tid = ME.with(|me| {
        if me.get() == 0 {
            let n = NEXT_TID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            me.set(n % (1 << 22) + 1);
        }
        me.get()
    });
    ThreadId { tid, start: 1 }
}

/// Under loom nothing spins (see `sync::wait::Spinner`; `Backoff` then only yields).
pub(crate) fn single_cpu_machine() -> bool {
    true
}

/// The model's one process.
pub(crate) fn current_process() -> ThreadId {
    ThreadId { tid: 1, start: 1 }
}

/// Every thread of a model is alive.
pub(crate) fn probe_thread(_who: ThreadId) -> Liveness {
    Liveness::Alive
}

struct Futex {
    wakes: Mutex<u64>,
    cv: Condvar,
}

loom::lazy_static! {
    static ref FUTEX: Futex = Futex {
        wakes: Mutex::new(0),
        cv: Condvar::new(),
    };
}

/// Sleeps while `*word == expected`, until a wake (any wake: callers look again).
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    _timeout: Option<Duration>,
) -> Result<(), Errno> {
    let mut wakes = FUTEX.wakes.lock().unwrap();
    if word.load(Ordering::SeqCst) != expected {
        return Err(Errno::AGAIN);
    }
    let seen = *wakes;
    while *wakes == seen {
        wakes = FUTEX.cv.wait(wakes).unwrap();
    }
    Ok(())
}

/// Wakes the sleepers (all of them: a futex may wake more than asked, callers look again).
pub(crate) fn futex_wake(_word: &AtomicU32, _n: u32) -> usize {
    *FUTEX.wakes.lock().unwrap() += 1;
    FUTEX.cv.notify_all();
    0
}
