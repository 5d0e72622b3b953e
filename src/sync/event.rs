//! `Event`: a flag that processes wait for.
#![allow(unsafe_code)]
//! # Safety
//! The unsafe code here is `AtomicState` impls for `#[repr(C)]` structs of atomics and calls to
//! `RawLock::release` from guards (or code) that hold the lock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::fixed::{AtomicState, Fixed, fixed_object, unit_constructors};
use super::wait::{deadline_after, remaining};
use crate::error::OpenError;
use crate::segment::kind;
use crate::sys;

/// Shared state of an event: `flag` (0 clear, 1 set) is the futex word; `sleepers` counts
/// waiters so that `set` makes a wake call only when someone sleeps.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct EventState {
    flag: AtomicU32,
    sleepers: AtomicU32,
}

// SAFETY: #[repr(C)] struct of atomics.
unsafe impl AtomicState for EventState {}

/// A process-shared event, like Python's `multiprocessing.Event`: `set` wakes every waiter,
/// `clear` resets the flag.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), multiproc::OpenError> {
/// let ev = multiproc::Event::new()?;
/// assert!(!ev.wait_timeout(std::time::Duration::from_millis(1)));
/// ev.set();
/// ev.wait(); // returns at once
/// assert!(ev.is_set());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Event {
    inner: Fixed<EventState>,
}

fixed_object!(Event, EventState, kind::EVENT, (), |_st, _cfg| ());
unit_constructors!(Event, "a cleared event");

impl Event {
    fn validate(inner: Fixed<EventState>) -> Result<Self, OpenError> {
        Ok(Self { inner })
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.inner.state().flag.load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter, in every process.
    pub fn set(&self) {
        let st = self.inner.state();
        st.flag.store(1, Ordering::SeqCst);
        if st.sleepers.load(Ordering::SeqCst) > 0 {
            sys::futex_wake_all(&st.flag);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.inner.state().flag.store(0, Ordering::SeqCst);
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_deadline(None);
    }

    /// Waits at most `timeout`; returns whether the flag is set.
    #[doc(alias = "wait")]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_deadline(deadline_after(timeout))
    }

    /// Waits until `deadline` at the latest; returns whether the flag is set.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        self.wait_deadline(Some(deadline))
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> bool {
        if self.is_set() {
            return true;
        }
        let st = self.inner.state();
        st.sleepers.fetch_add(1, Ordering::SeqCst);
        let set = loop {
            if st.flag.load(Ordering::SeqCst) != 0 {
                break true;
            }
            let Some(left) = remaining(deadline) else {
                break false;
            };
            let _ = sys::futex_wait(&st.flag, 0, left);
        };
        st.sleepers.fetch_sub(1, Ordering::SeqCst);
        set
    }
}

crate::sync::object::serde_via_handle!([] Event);
