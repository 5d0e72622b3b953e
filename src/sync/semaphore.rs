//! `Semaphore` and `BoundedSemaphore`.
#![allow(unsafe_code)]
//! # Safety
//! The only unsafe code here is the `AtomicState` impl for `SemState`, a `#[repr(C)]` struct of
//! atomics.

use std::time::Instant;

#[cfg(not(multiproc_loom))]
pub use public::{BoundedSemaphore, Semaphore};

use super::wait::{Spinner, remaining, sleep_unless, wake_sleepers};
use crate::primitive::{AtomicU32, Ordering};

/// Shared state of a semaphore.
///
/// `count` is the futex word: the number of permits available. `sleepers` counts processes
/// asleep (or about to sleep) on it, so `release` calls `FUTEX_WAKE` only when someone sleeps.
/// `max` is the bound of a `BoundedSemaphore` (0 for an unbounded one).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct SemState {
    count: AtomicU32,
    sleepers: AtomicU32,
    max: AtomicU32,
    _pad: AtomicU32,
}

impl SemState {
    pub(crate) fn try_take(&self) -> bool {
        let mut c = self.count.load(Ordering::Relaxed);
        while c > 0 {
            match self
                .count
                .compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
        false
    }

    /// Takes a permit, waiting until `deadline`, spinning first as `spinner` says.
    pub(crate) fn take(&self, deadline: Option<Instant>, spinner: &Spinner) -> bool {
        if self.try_take() {
            return true;
        }
        if spinner.spin(deadline, || {
            self.count.load(Ordering::Relaxed) > 0 && self.try_take()
        }) {
            return true;
        }
        // SeqCst on both sides (here and in `give`, through `sleep_unless`) so that either we
        // see the new count or the releaser sees us counted as a sleeper: no lost wake-up.
        loop {
            let Some(left) = remaining(deadline) else {
                // A wake meant for a permit we leave behind may have been ours: pass it on.
                wake_sleepers(&self.count, &self.sleepers, 1);
                return false;
            };
            let took = || self.count.load(Ordering::SeqCst) > 0 && self.try_take();
            if sleep_unless(&self.count, 0, &self.sleepers, 1, left, took) {
                return true;
            }
        }
    }

    /// Adds `n` permits and wakes up to `n` sleepers; `false` (and nothing changes) if the
    /// count would pass `bound`. Without a bound the count stops at `u32::MAX` (which only a
    /// scribbled count or four billion releases reach).
    pub(crate) fn give(&self, n: u32, bound: Option<u32>) -> bool {
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            let new = match bound {
                Some(max) => match c.checked_add(n) {
                    Some(new) if new <= max => new,
                    _ => return false,
                },
                None => c.saturating_add(n),
            };
            match self
                .count
                .compare_exchange_weak(c, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        wake_sleepers(&self.count, &self.sleepers, n);
        true
    }
}

/// The public types over a segment (not in the loom build, which runs `SemState` itself).
#[cfg(not(multiproc_loom))]
mod public {
    use std::time::{Duration, Instant};

    use super::SemState;
    use crate::error::{OpenError, OverReleaseError};
    use crate::primitive::Ordering;
    use crate::segment::kind;
    use crate::segment::object::AtomicState;
    use crate::segment::object::Builder;
    use crate::sync::fixed::{Fixed, fixed_object};
    use crate::sync::wait::{Spinner, deadline_after};

    // SAFETY: #[repr(C)] struct of atomics.
    unsafe impl AtomicState for SemState {}

    macro_rules! semaphore_common {
        ($ty:ident) => {
            impl $ty {
                /// Creates a semaphore with `value` permits in a new memfd segment.
                ///
                /// # Errors
                /// The system error if the segment cannot be created.
                pub fn new(value: u32) -> Result<Self, OpenError> {
                    Self::builder().value(value).create()
                }

                /// A builder (initial value 1, like Python).
                pub fn builder() -> Builder<Self> {
                    Builder::with_config(1)
                }

                /// Opens the existing semaphore named `name`.
                ///
                /// # Errors
                /// As [`Builder::open`].
                pub fn open(name: &str) -> Result<Self, OpenError> {
                    Self::builder().name(name).open()
                }

                /// Takes a permit, waiting as long as it takes.
                pub fn acquire(&self) {
                    self.inner.state().take(None, &self.spinner);
                }

                /// Takes a permit if one is available right now.
                #[doc(alias = "acquire")]
                pub fn try_acquire(&self) -> bool {
                    self.inner.state().try_take()
                }

                /// Takes a permit, waiting at most `timeout`; `false` if none came.
                #[doc(alias = "acquire")]
                pub fn try_acquire_for(&self, timeout: Duration) -> bool {
                    self.inner
                        .state()
                        .take(deadline_after(timeout), &self.spinner)
                }

                /// Takes a permit, waiting until `deadline` at the latest.
                pub fn try_acquire_until(&self, deadline: Instant) -> bool {
                    self.inner.state().take(Some(deadline), &self.spinner)
                }

                /// Permits available right now (Python's `get_value`).
                pub fn get_value(&self) -> u32 {
                    self.inner.state().count.load(Ordering::Relaxed)
                }
            }

            impl Builder<$ty> {
                /// Initial number of permits.
                pub fn value(mut self, value: u32) -> Self {
                    self.config = value;
                    self
                }
            }
        };
    }

    /// A process-shared counting semaphore, like Python's `multiprocessing.Semaphore`.
    ///
    /// Permits are not owned: any process may release, and a process that dies holding permits
    /// does not give them back (as in Python). Use a [`Lock`](crate::Lock) where death of a holder
    /// must be detected.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), multiproc::OpenError> {
    /// let sem = multiproc::Semaphore::new(2)?;
    /// assert!(sem.try_acquire());
    /// assert!(sem.try_acquire());
    /// assert!(!sem.try_acquire());
    /// sem.release();
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok(()) }
    /// ```
    #[derive(Debug)]
    pub struct Semaphore {
        inner: Fixed<SemState>,
        spinner: Spinner,
    }

    fixed_object!(Semaphore, SemState, kind::SEMAPHORE, u32, |st, value| st
        .count
        .store(*value, Ordering::Relaxed));

    semaphore_common!(Semaphore);

    impl Clone for Semaphore {
        /// Another handle on the same semaphore (it shares this handle's mapping).
        fn clone(&self) -> Self {
            Self {
                inner: self.inner.clone(),
                spinner: Spinner::new(),
            }
        }
    }

    impl Semaphore {
        fn validate(inner: Fixed<SemState>) -> Result<Self, OpenError> {
            Ok(Self {
                inner,
                spinner: Spinner::new(),
            })
        }

        /// Returns a permit, waking one waiter. The count stops at `u32::MAX`.
        pub fn release(&self) {
            self.release_n(1);
        }

        /// Returns `n` permits, waking up to `n` waiters. The count stops at `u32::MAX`.
        pub fn release_n(&self, n: u32) {
            self.inner.state().give(n, None);
        }
    }

    /// A semaphore that refuses to be released above its initial value, like Python's
    /// `multiprocessing.BoundedSemaphore`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), multiproc::OpenError> {
    /// let sem = multiproc::BoundedSemaphore::new(1)?;
    /// assert!(sem.release().is_err()); // already at its bound
    /// sem.acquire();
    /// assert!(sem.release().is_ok());
    /// # Ok(()) }
    /// ```
    #[derive(Debug)]
    pub struct BoundedSemaphore {
        inner: Fixed<SemState>,
        spinner: Spinner,
        max: u32,
    }

    fixed_object!(
        BoundedSemaphore,
        SemState,
        kind::BOUNDED_SEMAPHORE,
        u32,
        |st, value| {
            st.count.store(*value, Ordering::Relaxed);
            st.max.store(*value, Ordering::Relaxed);
        }
    );

    semaphore_common!(BoundedSemaphore);

    impl Clone for BoundedSemaphore {
        /// Another handle on the same semaphore (it shares this handle's mapping).
        fn clone(&self) -> Self {
            Self {
                inner: self.inner.clone(),
                spinner: Spinner::new(),
                max: self.max,
            }
        }
    }

    impl BoundedSemaphore {
        fn validate(inner: Fixed<SemState>) -> Result<Self, OpenError> {
            // The bound is read once, here; a peer scribbling on it later cannot change ours.
            let max = inner.state().max.load(Ordering::Relaxed);
            Ok(Self {
                inner,
                max,
                spinner: Spinner::new(),
            })
        }

        /// Returns a permit.
        ///
        /// # Errors
        /// [`OverReleaseError`] if that would exceed the initial value; nothing changes then.
        pub fn release(&self) -> Result<(), OverReleaseError> {
            if self.inner.state().give(1, Some(self.max)) {
                Ok(())
            } else {
                Err(OverReleaseError)
            }
        }

        /// The bound: the initial value.
        pub fn max_value(&self) -> u32 {
            self.max
        }
    }

    crate::segment::object::serde_via_handle!([] Semaphore);
    crate::segment::object::serde_via_handle!([] BoundedSemaphore);
}
