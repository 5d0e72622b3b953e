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

use super::fixed::{Fixed, fixed_object};
use super::lock::{
    LockResult, NotSend, OwnerDied, RecoverableGuard, Released, TryLockResult, lock_result,
    private, try_lock_result,
};
use super::raw_lock::{Acquired, RawLock};
use super::wait::{Spinner, deadline_after, remaining};
use crate::error::OpenError;
use crate::segment::kind;
use crate::segment::object::{AtomicState, Builder, describe};
use crate::sys;

/// Shared state of a condition.
///
/// `seq` is the futex word waiters sleep on; every notify bumps it. `waiters` counts threads
/// inside `wait` that no notify has picked yet, `signals` the picks not yet consumed. Both are
/// changed only with `lock` held, so `waiters + signals` is the number of threads in `wait`.
///
/// `depth` (once reserved padding, so zero in a plain condition):
///
/// | bits  | field                                                                  |
/// |-------|------------------------------------------------------------------------|
/// | 31    | recursive: set at creation, never changed; each handle reads it once    |
/// | 0..31 | recursion depth of the holder, touched only by the holder (recursive only) |
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct CondState {
    lock: RawLock,
    seq: AtomicU32,
    waiters: AtomicU32,
    signals: AtomicU32,
    depth: AtomicU32,
}

const RECURSIVE: u32 = 1 << 31;
const DEPTH_MASK: u32 = RECURSIVE - 1;

// SAFETY: #[repr(C)] struct of atomics.
unsafe impl AtomicState for CondState {}

/// A process-shared condition variable, like Python's `multiprocessing.Condition`, with its lock
/// built in (a [`Lock`](crate::Lock)-like lock that reports a dead holder).
///
/// [`new`](Self::new) makes a condition over a plain lock; [`new_recursive`](Self::new_recursive)
/// (or [`Builder::recursive`](crate::Builder::recursive)) one over a reentrant lock, like
/// Python's default `Condition()` over an `RLock`: its holder may [`lock`](Self::lock) it again,
/// and a `wait` releases every level and restores them all before it returns. Whether a condition
/// is recursive is fixed when it is created; handles opened elsewhere read it from the segment.
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
    /// Read once from `CondState::depth` when the handle is made.
    recursive: bool,
}

fixed_object!(
    Condition,
    CondState,
    kind::CONDITION,
    bool,
    |st, recursive| {
        if *recursive {
            st.depth.store(RECURSIVE, Ordering::Relaxed);
        }
    }
);

impl Clone for Condition {
    /// Another handle on the same condition (it shares this handle's mapping).
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            spinner: Spinner::new(),
            recursive: self.recursive,
        }
    }
}

impl Builder<Condition> {
    /// Whether the condition's lock is reentrant (default `false`); see
    /// [`Condition::new_recursive`]. Only creation uses it: an opened condition is what its
    /// creator made.
    pub fn recursive(mut self, recursive: bool) -> Self {
        self.config = recursive;
        self
    }
}

impl Condition {
    /// Creates a condition over a plain (non-reentrant) lock in a new memfd segment.
    ///
    /// # Errors
    /// The system error if the segment cannot be created.
    pub fn new() -> Result<Self, OpenError> {
        Self::builder().create()
    }

    /// Creates a condition over a reentrant lock in a new memfd segment, like Python's default
    /// `Condition()` (over an `RLock`).
    ///
    /// # Errors
    /// The system error if the segment cannot be created.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new_recursive()?;
    /// let outer = cond.lock()?;
    /// let inner = cond.lock()?; // same thread: no deadlock
    /// assert_eq!(cond.depth(), 2);
    /// // Releases both levels while waiting, and restores them.
    /// let (inner, _) = cond.wait_timeout(inner, Duration::from_millis(5))?;
    /// assert_eq!(cond.depth(), 2);
    /// drop(inner);
    /// drop(outer);
    /// assert_eq!(cond.depth(), 0);
    /// # Ok(()) }
    /// ```
    pub fn new_recursive() -> Result<Self, OpenError> {
        Self::builder().recursive(true).create()
    }

    /// A builder, to name the condition, make it [`recursive`](Builder::recursive), or open an
    /// existing one.
    pub fn builder() -> Builder<Self> {
        Builder::with_config(false)
    }

    /// Opens the existing condition named `name`.
    ///
    /// # Errors
    /// As [`Builder::open`](crate::Builder::open).
    pub fn open(name: &str) -> Result<Self, OpenError> {
        Self::builder().name(name).open()
    }

    fn validate(inner: Fixed<CondState>) -> Result<Self, OpenError> {
        let recursive = inner.state().depth.load(Ordering::Relaxed) & RECURSIVE != 0;
        Ok(Self {
            inner,
            spinner: Spinner::new(),
            recursive,
        })
    }

    /// Whether the lock is reentrant (see [`new_recursive`](Self::new_recursive)).
    pub fn is_recursive(&self) -> bool {
        self.recursive
    }

    /// The recursion depth if the calling thread holds the lock: for a recursive condition the
    /// number of guards it holds, for a plain one 1; else 0.
    pub fn depth(&self) -> u32 {
        let st = self.state();
        if !st.lock.is_owned_by_current_thread() {
            0
        } else if self.recursive {
            st.depth.load(Ordering::Relaxed) & DEPTH_MASK
        } else {
            1
        }
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
        if self.recursive {
            set_depth(self.state(), 1);
        }
        ConditionGuard {
            state: self.state(),
            recursive: self.recursive,
            _not_send: NotSend::default(),
        }
    }

    /// Another level of the hold, if the condition is recursive and this thread holds it.
    fn reenter(&self) -> Option<ConditionGuard<'_>> {
        let st = self.state();
        if !self.recursive || !st.lock.is_owned_by_current_thread() {
            return None;
        }
        let depth = st.depth.load(Ordering::Relaxed) & DEPTH_MASK;
        set_depth(st, depth.saturating_add(1).min(DEPTH_MASK));
        Some(ConditionGuard {
            state: st,
            recursive: true,
            _not_send: NotSend::default(),
        })
    }

    /// Acquires the condition's lock (again, if it is recursive and this thread holds it).
    #[doc(alias = "acquire")]
    pub fn lock(&self) -> LockResult<ConditionGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(g);
        }
        let how = self.state().lock.acquire(None).expect("no deadline");
        // SAFETY: this thread acquired the lock just above.
        lock_result(how, unsafe { self.guard() }, || describe(self))
    }

    /// Acquires the condition's lock if it is free (or, if it is recursive, already ours).
    pub fn try_lock(&self) -> TryLockResult<ConditionGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(g);
        }
        try_lock_result(
            self.state().lock.try_acquire(),
            // SAFETY: `try_lock_result` makes the guard only when the acquire succeeded.
            || unsafe { self.guard() },
            || describe(self),
        )
    }

    /// Acquires the condition's lock, waiting at most `timeout`.
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<ConditionGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(g);
        }
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

    /// Releases the lock `guard` holds (every level of a recursive one), sleeps until notified
    /// or `deadline`, and re-acquires the lock at the depth it had (also if this panics).
    /// Returns (notified, whether a holder died while we were away).
    ///
    /// # Panics
    /// If `guard` belongs to another condition.
    fn wait_raw(&self, guard: &mut ConditionGuard<'_>, deadline: Option<Instant>) -> (bool, bool) {
        self.check_guard(guard);
        let st = self.state();
        // Declared before any `Released`, so it drops after the lock is ours again, also when
        // unwinding: the depth the next holder set is replaced by ours.
        let _depth = self.recursive.then(|| RestoreDepth {
            st,
            depth: st.depth.load(Ordering::Relaxed) & DEPTH_MASK,
        });
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

/// Sets the holder's recursion depth, keeping the recursive bit. Only the holder calls it.
fn set_depth(st: &CondState, depth: u32) {
    st.depth.store(RECURSIVE | depth, Ordering::Relaxed);
}

/// Puts back the recursion depth a waiter had, once it holds the lock again.
struct RestoreDepth<'a> {
    st: &'a CondState,
    depth: u32,
}

impl Drop for RestoreDepth<'_> {
    fn drop(&mut self) {
        set_depth(self.st, self.depth);
    }
}

/// Holds a [`Condition`]'s lock (one level of it, if the condition is recursive); unlocks when
/// dropped (for a recursive condition, when the outermost guard drops).
#[must_use = "dropping the guard unlocks at once"]
pub struct ConditionGuard<'a> {
    state: &'a CondState,
    recursive: bool,
    _not_send: NotSend,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        if self.recursive {
            // As for `RLock`, the depth lives in the segment: a foreign scribble on it can make
            // us release early (denial of service), never touch memory outside the segment.
            let depth = self.state.depth.load(Ordering::Relaxed) & DEPTH_MASK;
            if depth > 1 {
                set_depth(self.state, depth - 1);
                return;
            }
            set_depth(self.state, 0);
        }
        // SAFETY: a ConditionGuard exists only while this code holds the lock, and this is its
        // last level.
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
