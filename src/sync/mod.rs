//! L2: process-shared synchronisation on futex words.
//!
//! Every primitive is a `#[repr(C)]` struct of atomics at the start of a segment's payload;
//! waiting happens on a futex word inside it (shared, never private), with a sleeper count or
//! waiters bit so that wakers only make a system call when someone sleeps.

pub(crate) mod barrier;
pub(crate) mod condition;
pub(crate) mod event;
pub(crate) mod fixed;
pub(crate) mod lock;
pub(crate) mod object;
pub(crate) mod raw_lock;
pub(crate) mod semaphore;
pub(crate) mod wait;
