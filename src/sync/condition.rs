//! `Condition`: a condition variable with its own process-shared lock.
#![allow(unsafe_code)]
//! # Safety
//! The unsafe code here is the `AtomicState` impl for `CondState`, a `#[repr(C)]` struct of
//! atomics, and releases of the lock by code that holds it through a `ConditionGuard`: the
//! guard's drop, and `wait_raw`, which lends the guard's hold to a `Released` that takes it
//! back before the guard can be used again, also when unwinding.

use crate::primitive::{AtomicU32, Ordering};
use std::fmt;
use std::time::{Duration, Instant};

use super::fixed::{Fixed, fixed_object, unit_constructors};
use super::lock::{
    LockResult, NotSend, OwnerDied, RecoverableGuard, Released, TryLockResult, lock_result,
    private, try_lock_result,
};
use super::raw_lock::{Acquired, RawLock};
use super::wait::{Spinner, deadline_after, remaining};
use crate::error::OpenError;
use crate::segment::kind;
use crate::segment::object::{AtomicState, describe};
use crate::sys;

/// Shared state of a condition.
///
/// `seq` is the futex word waiters sleep on; every notify bumps it. `waiters` counts threads
/// inside `wait` that no notify has picked yet, `signals` the picks not yet consumed. Both are
/// changed only with `lock` held, so `waiters + signals` is the number of threads in `wait`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct CondState {
    lock: RawLock,
    seq: AtomicU32,
    waiters: AtomicU32,
    signals: AtomicU32,
    _pad: AtomicU32,
}

// SAFETY: #[repr(C)] struct of atomics.
unsafe impl AtomicState for CondState {}

/// A process-shared condition variable, like Python's `multiprocessing.Condition`, with its lock
/// built in (a [`Lock`](crate::Lock)-like lock that reports a dead holder).
///
/// `notify` and `notify_all` take the guard, so the lock must be held, as Python requires.
/// `notify(n)` wakes at most `n` waiters.
///
/// A waiter killed inside `wait` stays counted: a later `notify` may pick it, which wakes
/// nobody, or `notify_all` may leave one spare wake-up that makes a later `wait` return early.
/// As with every condition variable, wait in a loop on a predicate ([`wait_for`](Self::wait_for)).
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// let cond = multiproc::Condition::new()?;
/// let guard = cond.lock()?;
/// cond.notify_all(&guard); // nobody waits: a no-op
/// let (guard, notified) = cond.wait_timeout(guard, Duration::from_millis(5))?;
/// assert!(!notified);
/// drop(guard);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Condition {
    inner: Fixed<CondState>,
    spinner: Spinner,
}

fixed_object!(Condition, CondState, kind::CONDITION, (), |_st, _cfg| ());

impl Clone for Condition {
    /// Another handle on the same condition (it shares this handle's mapping).
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            spinner: Spinner::new(),
        }
    }
}
unit_constructors!(Condition, "a condition");

impl Condition {
    fn validate(inner: Fixed<CondState>) -> Result<Self, OpenError> {
        Ok(Self {
            inner,
            spinner: Spinner::new(),
        })
    }

    fn state(&self) -> &CondState {
        self.inner.state()
    }

    /// A guard for the lock this thread holds.
    ///
    /// # Safety
    /// - The calling thread holds the condition's lock, and the guard takes over that hold: its
    ///   drop releases it.
    unsafe fn guard(&self) -> ConditionGuard<'_> {
        ConditionGuard {
            state: self.state(),
            _not_send: NotSend::default(),
        }
    }

    /// Acquires the condition's lock.
    #[doc(alias = "acquire")]
    pub fn lock(&self) -> LockResult<ConditionGuard<'_>> {
        let how = self.state().lock.acquire(None).expect("no deadline");
        // SAFETY: this thread acquired the lock just above.
        lock_result(how, unsafe { self.guard() }, || describe(self))
    }

    /// Acquires the condition's lock if it is free.
    pub fn try_lock(&self) -> TryLockResult<ConditionGuard<'_>> {
        try_lock_result(
            self.state().lock.try_acquire(),
            // SAFETY: `try_lock_result` makes the guard only when the acquire succeeded.
            || unsafe { self.guard() },
            || describe(self),
        )
    }

    /// Acquires the condition's lock, waiting at most `timeout`.
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<ConditionGuard<'_>> {
        let how = self.state().lock.acquire(deadline_after(timeout));
        // SAFETY: `try_lock_result` makes the guard only when the acquire succeeded.
        try_lock_result(how, || unsafe { self.guard() }, || describe(self))
    }

    fn check_guard(&self, guard: &ConditionGuard<'_>) {
        assert!(
            std::ptr::eq(guard.state, self.state()),
            "guard belongs to another Condition"
        );
    }

    /// Releases the lock `guard` holds, sleeps until notified or `deadline`, and re-acquires
    /// the lock (also if this panics). Returns (notified, whether a holder died while we were
    /// away).
    ///
    /// # Panics
    /// If `guard` belongs to another condition.
    fn wait_raw(&self, guard: &mut ConditionGuard<'_>, deadline: Option<Instant>) -> (bool, bool) {
        self.check_guard(guard);
        let st = self.state();
        let w = st.waiters.load(Ordering::Relaxed);
        st.waiters.store(w.saturating_add(1), Ordering::Relaxed);
        let mut owner_died = false;
        loop {
            let seq = st.seq.load(Ordering::Relaxed);
            // SAFETY: `guard` holds this condition's lock (checked above) in this thread, and
            // `&mut guard` keeps it unused until `released` locks again.
            let released = unsafe { Released::release(&st.lock) };
            // A notify soon after finds us spinning (see `Spinner`); else sleep on `seq`.
            let notified = || st.seq.load(Ordering::Relaxed) != seq;
            if !self.spinner.spin(deadline, notified) {
                if let Some(left) = remaining(deadline) {
                    let _ = sys::futex_wait(&st.seq, seq, left);
                }
            }
            owner_died |= released.relock() == Acquired::OwnerDied;
            let signals = st.signals.load(Ordering::Relaxed);
            if signals > 0 {
                st.signals.store(signals - 1, Ordering::Relaxed);
                return (true, owner_died);
            }
            if remaining(deadline).is_none() {
                let w = st.waiters.load(Ordering::Relaxed);
                st.waiters.store(w.saturating_sub(1), Ordering::Relaxed);
                return (false, owner_died);
            }
        }
    }

    /// Waits until notified. The lock is released while waiting and held again on return.
    ///
    /// # Panics
    /// If `guard` belongs to another condition.
    pub fn wait<'a>(&'a self, mut guard: ConditionGuard<'a>) -> LockResult<ConditionGuard<'a>> {
        let (_, died) = self.wait_raw(&mut guard, None);
        if died {
            Err(OwnerDied::new(guard, describe(self)))
        } else {
            Ok(guard)
        }
    }

    /// Waits until notified or `timeout` passes; the `bool` says whether it was notified
    /// (`false`: timed out, as Python's `wait` returning `False`).
    ///
    /// The timeout bounds the wait for a notification. Taking the lock back afterwards is a
    /// [`lock`](Self::lock), as in Python, `std` and parking_lot: it waits for a holder that
    /// lives (a holder that died is detected and reported as [`OwnerDied`]).
    ///
    /// # Panics
    /// If `guard` belongs to another condition.
    pub fn wait_timeout<'a>(
        &'a self,
        mut guard: ConditionGuard<'a>,
        timeout: Duration,
    ) -> LockResult<(ConditionGuard<'a>, bool)> {
        let (notified, died) = self.wait_raw(&mut guard, deadline_after(timeout));
        let out = (guard, notified);
        if died {
            Err(OwnerDied::new(out, describe(self)))
        } else {
            Ok(out)
        }
    }

    /// Waits until `predicate()` is true, re-checking after each wake-up, for at most `timeout`
    /// (forever if `None`). Returns the last value of the predicate, like Python's `wait_for`.
    ///
    /// # Panics
    /// If `guard` belongs to another condition.
    pub fn wait_for<'a>(
        &'a self,
        mut guard: ConditionGuard<'a>,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> LockResult<(ConditionGuard<'a>, bool)> {
        self.check_guard(&guard);
        let deadline = timeout.and_then(deadline_after);
        let mut died = false;
        let ok = loop {
            if predicate() {
                break true;
            }
            if remaining(deadline).is_none() {
                break false;
            }
            died |= self.wait_raw(&mut guard, deadline).1;
        };
        let out = (guard, ok);
        if died {
            Err(OwnerDied::new(out, describe(self)))
        } else {
            Ok(out)
        }
    }

    /// Wakes at most `n` waiting threads (in any process).
    ///
    /// # Panics
    /// If `guard` belongs to another condition.
    pub fn notify(&self, guard: &ConditionGuard<'_>, n: u32) {
        self.check_guard(guard);
        let st = self.state();
        let waiters = st.waiters.load(Ordering::Relaxed);
        let k = waiters.min(n);
        if k == 0 {
            return;
        }
        st.waiters.store(waiters - k, Ordering::Relaxed);
        let signals = st.signals.load(Ordering::Relaxed);
        st.signals
            .store(signals.saturating_add(k), Ordering::Relaxed);
        st.seq.fetch_add(1, Ordering::Release);
        sys::futex_wake(&st.seq, k);
    }

    /// Wakes one waiting thread.
    pub fn notify_one(&self, guard: &ConditionGuard<'_>) {
        self.notify(guard, 1);
    }

    /// Wakes every waiting thread.
    pub fn notify_all(&self, guard: &ConditionGuard<'_>) {
        self.notify(guard, u32::MAX);
    }
}

/// Holds a [`Condition`]'s lock; unlocks when dropped.
#[must_use = "dropping the guard unlocks at once"]
pub struct ConditionGuard<'a> {
    state: &'a CondState,
    _not_send: NotSend,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a ConditionGuard exists only while this code holds the lock.
        unsafe { self.state.lock.release() }
    }
}

impl private::Sealed for ConditionGuard<'_> {}
impl RecoverableGuard for ConditionGuard<'_> {
    fn mark_consistent(&self) {
        self.state.lock.mark_consistent();
    }
}

impl private::Sealed for (ConditionGuard<'_>, bool) {}
impl RecoverableGuard for (ConditionGuard<'_>, bool) {
    fn mark_consistent(&self) {
        self.0.mark_consistent();
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").finish_non_exhaustive()
    }
}

crate::segment::object::serde_via_handle!([] Condition);
