//! Atomics, fences and spin hints: the standard library's, or loom's when the crate is built
//! with `--cfg multiproc_loom`. Code that the loom models run (the lock word, the wait word,
//! `Event` and `Semaphore`) takes them from here, so the models check the crate's own code,
//! not a copy of it; with the operating-system stand-in of `sys` (futexes and thread
//! identities made of loom primitives) that build is all loom needs.

#[cfg(not(multiproc_loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(multiproc_loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

/// Whether this is the loom build broken on purpose as `name` (a mutant: the environment
/// variable `MULTIPROC_LOOM_MUTANT` at build time, see `.ci/run`), which the loom models must
/// then fail. Always `false` outside the loom build, and folded away at compile time.
#[inline(always)]
pub(crate) const fn mutant(name: &str) -> bool {
    if !cfg!(multiproc_loom) {
        return false;
    }
    let Some(chosen) = option_env!("MULTIPROC_LOOM_MUTANT") else {
        return false;
    };
    let (a, b) = (chosen.as_bytes(), name.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A hint that we are spinning; under loom, a point where another thread may run.
#[inline(always)]
pub(crate) fn spin_loop() {
    #[cfg(not(multiproc_loom))]
    std::hint::spin_loop();
    #[cfg(multiproc_loom)]
    loom::hint::spin_loop();
}

/// Gives up the rest of this thread's time slice.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(multiproc_loom))]
    std::thread::yield_now();
    #[cfg(multiproc_loom)]
    loom::thread::yield_now();
}
