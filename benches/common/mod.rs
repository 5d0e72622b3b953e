//! Helpers shared by the benches: CPU pinning, raw `MAP_SHARED` mappings, and a two-process
//! runner that forks a child pinned to the other core and times both doing the same work.
//!
//! Benches are single-threaded when they fork, and the child only runs the work closure and
//! `_exit`s, never returning into criterion.

#![allow(dead_code)] // each bench uses a different subset
#![allow(unsafe_code)] // mmap, fork, affinity: see the SAFETY comments

pub(crate) mod locks;

use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The core the benchmark process (the parent) runs on.
pub(crate) const PARENT_CORE: usize = 0;
/// The core the forked child runs on.
pub(crate) const CHILD_CORE: usize = 1;

/// Pins the calling process to `core`. Returns false (and prints why) if that fails, e.g. on a
/// one-core machine: the bench still runs, just unpinned.
pub(crate) fn pin_to(core: usize) -> bool {
    // SAFETY: cpu_set_t is a plain bit array; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` is far below CPU_SETSIZE (1024); CPU_SET bounds-checks anyway.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        eprintln!(
            "sched_setaffinity(core {core}) failed: {}",
            std::io::Error::last_os_error()
        );
    }
    rc == 0
}

/// One `T` in its own `MAP_SHARED | MAP_ANONYMOUS` mapping: shared with children forked later.
pub(crate) struct Shm<T> {
    ptr: NonNull<T>,
}

impl<T> Shm<T> {
    /// Maps a fresh shared page (or more) and moves `value` into it.
    pub(crate) fn new(value: T) -> Self {
        assert!(align_of::<T>() <= 4096);
        // SAFETY: an anonymous mapping with no address hint touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size_of::<T>().max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let ptr = NonNull::new(p.cast::<T>()).expect("mmap returned null");
        // SAFETY: the mapping is page-aligned (enough for T, asserted above), writable, large
        // enough for a T, and nobody else sees it yet.
        unsafe { ptr.as_ptr().write(value) };
        Self { ptr }
    }

    /// The address of the value, for FFI that wants `*mut T`.
    pub(crate) fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T> Deref for Shm<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialised in `new`, mapped until `drop`. Types used here only mutate through
        // atomics, UnsafeCell or FFI.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for Shm<T> {
    fn drop(&mut self) {
        // SAFETY: the value was initialised in `new` and is dropped once, here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: unmaps exactly the mapping made in `new`; no reference outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), size_of::<T>().max(1)) };
    }
}

/// A value alone on its cache line, so two hot words never share one by accident.
#[repr(C, align(64))]
#[derive(Default)]
pub(crate) struct Line<T>(pub(crate) T);

impl<T> Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Start/finish flags the parent and child meet at.
#[repr(C)]
#[derive(Default)]
struct Rendezvous {
    ready: Line<AtomicU32>,
    go: Line<AtomicU32>,
    done: Line<AtomicU32>,
}

fn spin_until_set(flag: &AtomicU32) {
    while flag.load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
}

/// Spins until the child sets `flag`, or until it exits (a panic in the child never sets it).
/// Returns whether the child was reaped meanwhile, with its wait status in `status`.
///
/// # Panics
/// If the child exited without setting `flag`.
fn spin_or_reap(flag: &AtomicU32, pid: libc::pid_t, status: &mut libc::c_int) -> bool {
    while flag.load(Ordering::Acquire) == 0 {
        // SAFETY: `pid` is our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, status, libc::WNOHANG) };
        if r == pid {
            // It may have set `flag` and exited between our load and the waitpid.
            assert_ne!(
                flag.load(Ordering::Acquire),
                0,
                "bench child exited early (status {:#x})",
                *status
            );
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

/// Runs `work(n)` in this process (on [`PARENT_CORE`]) and in a forked child (on
/// [`CHILD_CORE`]) at the same time, splitting `iters` between them, and returns the wall time
/// from the start signal until both have finished. `warm` runs in the child before it reports
/// ready (first-touch costs such as a lock's thread-id cache are kept out of the timing).
///
/// # Panics
/// If fork fails or the child does not exit cleanly (its work panicked).
pub(crate) fn run_two_processes(iters: u64, warm: impl Fn(), work: impl Fn(u64)) -> Duration {
    let child_iters = iters / 2;
    let parent_iters = iters - child_iters;
    let meet = Shm::new(Rendezvous::default());

    // SAFETY: the bench is single-threaded here; the child only runs `warm` and `work`, which
    // touch shared memory and locks, and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let ok = catch_unwind(AssertUnwindSafe(|| {
            pin_to(CHILD_CORE);
            warm();
            meet.ready.store(1, Ordering::Release);
            spin_until_set(&meet.go);
            work(child_iters);
            meet.done.store(1, Ordering::Release);
        }))
        .is_ok();
        // SAFETY: ends the child at once: no destructors, no return into criterion.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }

    let mut status = 0;
    assert!(
        !spin_or_reap(&meet.ready, pid, &mut status),
        "bench child exited before starting (status {status:#x})"
    );
    let start = Instant::now();
    meet.go.store(1, Ordering::Release);
    work(parent_iters);
    let reaped = spin_or_reap(&meet.done, pid, &mut status);
    let elapsed = start.elapsed();
    if !reaped {
        // SAFETY: as above; blocks until the (finished) child is reaped.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "bench child failed (status {status:#x})"
    );
    elapsed
}

/// The criterion settings the benches share: pinned to [`PARENT_CORE`], short warm-up and
/// measurement (the two-process benches fork per sample).
pub(crate) fn criterion_config() -> criterion::Criterion {
    pin_to(PARENT_CORE);
    criterion::Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}
