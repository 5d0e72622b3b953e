//! L2: process-shared synchronisation on futex words.
//!
//! Every primitive is a `#[repr(C)]` struct of atomics at the start of a segment's payload;
//! waiting happens on a futex word inside it (shared, never private), with a sleeper count or
//! waiters bit so that wakers only make a system call when someone sleeps.

#[cfg(not(multiproc_loom))]
pub(crate) mod barrier;
#[cfg(not(multiproc_loom))]
pub(crate) mod condition;
pub(crate) mod event;
#[cfg(not(multiproc_loom))]
pub(crate) mod fixed;
#[cfg(not(multiproc_loom))]
pub(crate) mod lock;
#[cfg(all(test, multiproc_loom))]
mod loom_tests;
pub(crate) mod raw_lock;
pub(crate) mod semaphore;
pub(crate) mod wait;
