//! Inheritance across `fork`: objects created before the fork work in the child as they are,
//! including anonymous ones that no handle can reach. This binary has no test harness (so it
//! forks from a single-threaded process) and prints a summary line the CI reads.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use multiproc::{Barrier, Event, Lock, RawValue, SharedObject, Value};

fn fork_children(n: usize, body: impl Fn(usize)) -> Vec<libc::pid_t> {
    (0..n)
        .map(|i| {
            // SAFETY: this process is single-threaded (no harness), so the child may run
            // arbitrary code; it leaves with `_exit` and never returns into the caller.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(i))).is_ok();
                // SAFETY: _exit ends the child without running the parent's atexit handlers.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            pid
        })
        .collect()
}

fn reap(pids: Vec<libc::pid_t>) -> bool {
    pids.into_iter().all(|pid| {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    })
}

fn anonymous_objects_are_inherited() -> bool {
    let lock = Lock::builder().anonymous().create().unwrap();
    let value = Value::<u64>::builder().anonymous().create().unwrap();
    let hits = RawValue::<AtomicU64>::builder()
        .anonymous()
        .create()
        .unwrap();
    let barrier = Barrier::builder().anonymous().parties(3).create().unwrap();
    let pids = fork_children(2, |_| {
        for _ in 0..20_000 {
            let _g = lock.lock().unwrap();
            *value.lock().unwrap() += 1;
            hits.fetch_add(1, Ordering::Relaxed);
        }
        barrier.wait().unwrap();
    });
    barrier.wait().unwrap();
    let ok = reap(pids);
    ok && value.get() == 40_000 && hits.load(Ordering::Relaxed) == 40_000
}

fn memfd_handles_reopen_in_a_forked_child() -> bool {
    let ev = Event::new().unwrap();
    let handle = ev.handle();
    let pids = fork_children(1, |_| {
        let again = Event::from_handle(&handle).unwrap();
        again.set();
    });
    reap(pids) && ev.wait_timeout(std::time::Duration::from_secs(10))
}

fn named_object_survives_child_drop() -> bool {
    let name = format!("mpt-fork-{}", std::process::id());
    let lock = Lock::builder().name(&name).create().unwrap();
    // The child drops its inherited copy: that must not unlink the name.
    let pids = fork_children(1, |_| {
        // SAFETY: the child owns a private copy of the parent's memory; taking the inherited
        // `Lock` out by value and dropping it runs its destructor here only, once (the child
        // leaves with `_exit`, so the original is never dropped in this process).
        let inherited = unsafe { std::ptr::read(&lock) };
        drop(inherited);
    });
    let ok = reap(pids);
    ok && Lock::open(&name).is_ok()
}

/// After `fork` the child is another thread: it must not pass for the parent thread that holds
/// an `RLock` (its cached thread id is refreshed in the child).
fn child_is_not_the_owner_of_the_parents_rlock() -> bool {
    let rlock = multiproc::RLock::builder().anonymous().create().unwrap();
    let guard = rlock.lock().unwrap();
    let pids = fork_children(1, |_| {
        assert_eq!(rlock.depth(), 0);
        assert!(matches!(
            rlock.try_lock(),
            Err(multiproc::TryLockError::WouldBlock)
        ));
    });
    let ok = reap(pids);
    drop(guard);
    ok && !rlock.is_locked()
}

/// Python's pattern: make a pipe, fork, and let the parent drop the child's end at once. The
/// child's inherited end must count from the moment of the fork, or the parent's send would
/// find nobody listening.
fn pipe_end_inherited_by_a_child_counts_at_once() -> bool {
    let (parent_end, child_end) = multiproc::pipe::<u64>().unwrap();
    let pids = fork_children(1, |_| {
        let v = child_end.recv().unwrap();
        child_end.send(v + 1).unwrap();
    });
    // Our copy of the child's end goes; the child has its own.
    drop(child_end);
    let sent = parent_end.send(41).is_ok();
    let reply = parent_end.recv_timeout(std::time::Duration::from_secs(10));
    let ok = reap(pids);
    // The child exited: end of file.
    let eof = parent_end.recv_timeout(std::time::Duration::from_secs(10))
        == Err(multiproc::GetTimeoutError::Disconnected);
    sent && reply == Ok(42) && ok && eof
}

/// Issue 8, bug 1: a child killed right after `fork`, before its own fork handler ran, left the
/// counts taken for it in the parent's name, so a receiver whose only other sender went away
/// never saw `Disconnected`. 200 kills at 0-2 ms after the fork.
fn child_killed_right_after_fork_leaves_no_phantom_sender() -> bool {
    const TRIALS: u32 = 200;
    let mut phantoms = 0;
    for i in 0..TRIALS {
        let (tx, rx) = multiproc::Queue::<u64>::new(4).unwrap().split().unwrap();
        let pids = fork_children(1, |_| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        });
        let delay = std::time::Duration::from_micros(u64::from(i) * 2_000 / u64::from(TRIALS));
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        // SAFETY: `pids[0]` is our child, not yet reaped.
        unsafe { libc::kill(pids[0], libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: as above; `status` is a valid out-pointer.
        unsafe { libc::waitpid(pids[0], &mut status, 0) };
        drop(tx);
        let got = rx.get_timeout(std::time::Duration::from_secs(2));
        if got != Err(multiproc::GetTimeoutError::Disconnected) {
            phantoms += 1;
        }
    }
    if phantoms > 0 {
        println!("{phantoms} of {TRIALS} receivers never saw Disconnected");
    }
    phantoms == 0
}

fn main() {
    type Case = (&'static str, fn() -> bool);
    let tests: [Case; 6] = [
        (
            "child_killed_right_after_fork_leaves_no_phantom_sender",
            child_killed_right_after_fork_leaves_no_phantom_sender,
        ),
        (
            "pipe_end_inherited_by_a_child_counts_at_once",
            pipe_end_inherited_by_a_child_counts_at_once,
        ),
        (
            "child_is_not_the_owner_of_the_parents_rlock",
            child_is_not_the_owner_of_the_parents_rlock,
        ),
        (
            "anonymous_objects_are_inherited",
            anonymous_objects_are_inherited,
        ),
        (
            "memfd_handles_reopen_in_a_forked_child",
            memfd_handles_reopen_in_a_forked_child,
        ),
        (
            "named_object_survives_child_drop",
            named_object_survives_child_drop,
        ),
    ];
    let mut failed = 0;
    for (name, f) in tests {
        let ok = f();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    println!("{} passed, {} failed", tests.len() - failed, failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
