//! `Lock` and `RLock`: cross-process mutexes that survive a dead holder.
#![allow(unsafe_code)]
//! # Safety
//! The unsafe code here is `AtomicState` impls for `#[repr(C)]` structs of atomics and calls to
//! `RawLock::release` from guards that hold the lock. A guard is made only right after its lock
//! was acquired (or, for `RLock`, found held by this thread), and [`Released`] gives a guard's
//! hold back before the guard can be used or dropped again, also when unwinding.

use crate::primitive::{AtomicU32, Ordering};
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use super::fixed::{Fixed, fixed_object, unit_constructors};
use super::raw_lock::{Acquired, RawLock};
use super::wait::deadline_after;
use crate::error::{LockError, OpenError};
use crate::segment::kind;
use crate::segment::object::{AtomicState, describe};

/// The lock was acquired, but its previous holder died while holding it.
///
/// The data the lock protects may be half-updated. Two ways to go on:
///
/// - Propagate it with `?`: it converts into an owned [`LockError::OwnerDied`] (and so into
///   `Box<dyn Error + Send + Sync>`), which names the object. The guard is dropped on the way:
///   the lock is released and stays marked owner-died, so the next locker is told too.
/// - Recover: inspect or repair the data through the guard ([`get_mut`](Self::get_mut), or
///   [`recover_with`](Self::recover_with)), then [`recover`](Self::recover) to mark it
///   consistent; or take the guard with [`into_inner`](Self::into_inner) without doing so,
///   and the next locker is told again.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let counter = multiproc::Value::new(0u64)?;
/// *counter.lock()? += 1; // a dead holder is an error naming the Value
/// // Or repair what a dead holder may have left half-done, and go on:
/// let mut guard = counter.lock().unwrap_or_else(|died| died.recover_with(|g| **g = 0));
/// *guard += 1;
/// # drop(guard);
/// # assert_eq!(counter.get(), 2);
/// # Ok(()) }
/// ```
pub struct OwnerDied<G> {
    guard: G,
    object: String,
}

impl<G> OwnerDied<G> {
    pub(crate) fn new(guard: G, object: String) -> Self {
        Self { guard, object }
    }

    /// The guard, leaving the lock marked inconsistent: the next locker gets `OwnerDied` too.
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// The guard, by reference.
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// The guard, by mutable reference.
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }

    /// The object whose holder died, as "Lock", `Value<u64>` or "Lock /name" (the name of a
    /// named object).
    pub fn object(&self) -> &str {
        &self.object
    }

    /// The owned error, without the guard: the lock is released and stays marked owner-died.
    /// This is what `?` does.
    pub fn into_error(self) -> LockError {
        LockError::OwnerDied {
            object: self.object,
        }
    }
}

impl<G: RecoverableGuard> OwnerDied<G> {
    /// Marks the protected state consistent again and returns the guard; later lockers acquire
    /// normally.
    pub fn recover(self) -> G {
        self.guard.mark_consistent();
        self.guard
    }

    /// Runs `repair` on the guard, then [`recover`](Self::recover)s. If `repair` panics, the
    /// lock is released still marked owner-died.
    pub fn recover_with(mut self, repair: impl FnOnce(&mut G)) -> G {
        repair(&mut self.guard);
        self.recover()
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerDied")
            .field("object", &self.object)
            .finish_non_exhaustive()
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a holder of {} died while holding its lock (owner died)",
            self.object
        )
    }
}

// `OwnerDied` is deliberately not `std::error::Error`: it borrows the lock through its guard,
// so it could never become a `Box<dyn Error>` in a function that owns the lock. Instead it
// converts into the owned `LockError`, also straight into a boxed error, so `?` works.

impl<G> From<OwnerDied<G>> for LockError {
    fn from(e: OwnerDied<G>) -> Self {
        e.into_error()
    }
}

impl<'a, G> From<OwnerDied<G>> for Box<dyn std::error::Error + 'a> {
    fn from(e: OwnerDied<G>) -> Self {
        Box::new(e.into_error())
    }
}

impl<'a, G> From<OwnerDied<G>> for Box<dyn std::error::Error + Send + 'a> {
    fn from(e: OwnerDied<G>) -> Self {
        Box::new(e.into_error())
    }
}

impl<'a, G> From<OwnerDied<G>> for Box<dyn std::error::Error + Send + Sync + 'a> {
    fn from(e: OwnerDied<G>) -> Self {
        Box::new(e.into_error())
    }
}

/// A guard whose lock can be marked consistent after an owner died. Sealed.
pub trait RecoverableGuard: private::Sealed {
    /// Clears the owner-died state of the lock this guard holds.
    fn mark_consistent(&self);
}

pub(crate) mod private {
    pub trait Sealed {}
}

/// Makes guards `!Send`: the lock word records the owning thread.
pub(crate) type NotSend = PhantomData<*const ()>;

/// Result of a blocking lock: the guard, or the guard wrapped in [`OwnerDied`].
///
/// Works with `?` in a function returning `Result<_, Box<dyn Error + Send + Sync>>` (or
/// `Result<_, LockError>`): see [`OwnerDied`].
pub type LockResult<G> = Result<G, OwnerDied<G>>;

/// Why a `try_lock*` did not return a plain guard.
///
/// Converts into the owned [`LockError`] (and a boxed error) for `?`, as [`OwnerDied`] does.
pub enum TryLockError<G> {
    /// The lock is held by someone else (and, for the timed forms, stayed held until the timeout).
    WouldBlock,
    /// Acquired, but the previous holder died; see [`OwnerDied`].
    OwnerDied(OwnerDied<G>),
}

/// Result of a `try_lock*`.
pub type TryLockResult<G> = Result<G, TryLockError<G>>;

impl<G> TryLockError<G> {
    /// The owned error, without a guard (see [`OwnerDied::into_error`]).
    pub fn into_error(self) -> LockError {
        match self {
            Self::WouldBlock => LockError::WouldBlock,
            Self::OwnerDied(e) => e.into_error(),
        }
    }
}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WouldBlock => f.write_str("WouldBlock"),
            Self::OwnerDied(e) => e.fmt(f),
        }
    }
}

impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WouldBlock => f.write_str("the lock is held elsewhere"),
            Self::OwnerDied(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> From<OwnerDied<G>> for TryLockError<G> {
    fn from(e: OwnerDied<G>) -> Self {
        Self::OwnerDied(e)
    }
}

impl<G> From<TryLockError<G>> for LockError {
    fn from(e: TryLockError<G>) -> Self {
        e.into_error()
    }
}

impl<'a, G> From<TryLockError<G>> for Box<dyn std::error::Error + 'a> {
    fn from(e: TryLockError<G>) -> Self {
        Box::new(e.into_error())
    }
}

impl<'a, G> From<TryLockError<G>> for Box<dyn std::error::Error + Send + 'a> {
    fn from(e: TryLockError<G>) -> Self {
        Box::new(e.into_error())
    }
}

impl<'a, G> From<TryLockError<G>> for Box<dyn std::error::Error + Send + Sync + 'a> {
    fn from(e: TryLockError<G>) -> Self {
        Box::new(e.into_error())
    }
}

/// Wraps a guard according to how the lock was taken; `object` names the object, and is
/// called only if the holder died.
pub(crate) fn lock_result<G>(
    how: Acquired,
    guard: G,
    object: impl FnOnce() -> String,
) -> LockResult<G> {
    match how {
        Acquired::Clean => Ok(guard),
        Acquired::OwnerDied => Err(OwnerDied::new(guard, object())),
    }
}

/// Same for the try forms; `None` is `WouldBlock`. Calls `guard` only when `how` is `Some`, that
/// is, when the lock was acquired.
pub(crate) fn try_lock_result<G>(
    how: Option<Acquired>,
    guard: impl FnOnce() -> G,
    object: impl FnOnce() -> String,
) -> TryLockResult<G> {
    match how {
        None => Err(TryLockError::WouldBlock),
        Some(how) => lock_result(how, guard(), object).map_err(TryLockError::OwnerDied),
    }
}

// SAFETY: RawLock is a #[repr(C)] struct of atomics.
unsafe impl AtomicState for RawLock {}

/// A process-shared mutual-exclusion lock, like Python's `multiprocessing.Lock`.
///
/// Lives in a shared segment. A [`clone`](Clone::clone) is another handle on the same lock
/// (sharing this handle's mapping): move it into a forked child or pass it to a spawned one.
/// Other processes can also open it by name ([`Builder::name`](crate::Builder::name) +
/// [`Builder::open`](crate::Builder::open)) or by [`Handle`](crate::Handle).
///
/// - Uncontended `lock` + unlock: one compare-and-swap and one swap, no system call.
/// - Waiters spin briefly, then sleep on a futex; unlock wakes only if someone sleeps.
/// - If the holder dies (even by `SIGKILL`), the next locker gets [`OwnerDied`] within about
///   0.2 s of the death, never a deadlock.
/// - Not reentrant: locking it twice from one thread waits for itself (use the timed forms, or
///   [`RLock`]).
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lock = multiproc::Lock::new()?;
/// {
///     let _guard = lock.lock()?; // a holder that died is an error: LockError::OwnerDied
///     // critical section, exclusive across every process holding this lock
/// }
/// {
///     // Or take over from a holder that died, after checking what it protected:
///     let _guard = lock.lock().unwrap_or_else(|died| died.recover());
/// }
/// assert!(lock.try_lock().is_ok());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Lock {
    inner: Fixed<RawLock>,
}

fixed_object!(Lock, RawLock, kind::LOCK, (), |_state, _cfg| ());
unit_constructors!(Lock, "an unlocked lock");

impl Lock {
    fn validate(inner: Fixed<RawLock>) -> Result<Self, OpenError> {
        Ok(Self { inner })
    }

    #[inline]
    pub(crate) fn raw(&self) -> &RawLock {
        self.inner.state()
    }

    /// Acquires the lock, waiting as long as it takes (a dead holder ends the wait).
    #[doc(alias = "acquire")]
    #[inline]
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        let raw = self.raw();
        let how = raw.acquire(None).expect("no deadline");
        lock_result(
            how,
            LockGuard {
                lock: raw,
                _not_send: PhantomData,
            },
            || describe(self),
        )
    }

    /// Acquires the lock if it is free right now.
    #[doc(alias = "acquire")]
    #[inline]
    pub fn try_lock(&self) -> TryLockResult<LockGuard<'_>> {
        let raw = self.raw();
        try_lock_result(
            raw.try_acquire(),
            || LockGuard {
                lock: raw,
                _not_send: PhantomData,
            },
            || describe(self),
        )
    }

    /// Acquires the lock, waiting at most `timeout`.
    #[doc(alias = "acquire")]
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
        self.try_lock_until_opt(deadline_after(timeout))
    }

    /// Acquires the lock, waiting until `deadline` at the latest.
    pub fn try_lock_until(&self, deadline: Instant) -> TryLockResult<LockGuard<'_>> {
        self.try_lock_until_opt(Some(deadline))
    }

    fn try_lock_until_opt(&self, deadline: Option<Instant>) -> TryLockResult<LockGuard<'_>> {
        try_lock_result(
            self.raw().acquire(deadline),
            || LockGuard {
                lock: self.raw(),
                _not_send: PhantomData,
            },
            || describe(self),
        )
    }

    /// Whether the lock is held right now (by anyone; a snapshot).
    pub fn is_locked(&self) -> bool {
        self.raw().is_locked()
    }

    /// Whether a holder died and nobody has recovered the lock since.
    pub fn is_poisoned(&self) -> bool {
        self.raw().is_inconsistent()
    }
}

/// Holds a [`Lock`]; unlocks when dropped.
#[must_use = "dropping the guard unlocks at once"]
pub struct LockGuard<'a> {
    lock: &'a RawLock,
    _not_send: NotSend,
}

/// A lock that code holding it through a guard has released for a while. It locks again when
/// [`relock`](Self::relock)ed or dropped, so also when a panic unwinds past it: the guard that
/// lent its hold owns the lock again before it can be used or dropped.
#[must_use = "dropping it locks again at once"]
pub(crate) struct Released<'a> {
    lock: &'a RawLock,
}

impl<'a> Released<'a> {
    /// Releases `lock`.
    ///
    /// # Safety
    /// - The calling thread holds `lock` through a guard, and keeps that guard from being used
    ///   or dropped while the result lives (for instance by borrowing it mutably).
    pub(crate) unsafe fn release(lock: &'a RawLock) -> Self {
        // SAFETY: the calling thread holds the lock (contract forwarded to our caller).
        unsafe { lock.release() };
        Self { lock }
    }

    /// Locks again, waiting as long as it takes; says whether a holder died meanwhile.
    pub(crate) fn relock(self) -> Acquired {
        let this = std::mem::ManuallyDrop::new(self);
        this.lock.acquire(None).expect("no deadline")
    }
}

impl Drop for Released<'_> {
    /// Reached only when unwinding (`relock` forgets `self`). A holder that died meanwhile stays
    /// recorded in the lock, so the next locker is told.
    fn drop(&mut self) {
        let _ = self.lock.acquire(None);
    }
}

impl LockGuard<'_> {
    /// Unlocks, runs `f`, and locks again (reporting a holder that died meanwhile).
    ///
    /// If `f` panics, the lock is taken again while unwinding, so the guard holds it when it
    /// drops and never releases a lock that someone else took meanwhile.
    pub fn unlocked<R>(guard: &mut Self, f: impl FnOnce() -> R) -> (R, Result<(), OwnerDied<()>>) {
        // SAFETY: the guard proves this thread holds the lock, and `&mut guard` keeps it unused
        // until `released` locks again (on return or on unwind).
        let released = unsafe { Released::release(guard.lock) };
        let r = f();
        let how = released.relock();
        (r, lock_result(how, (), || "Lock".to_owned()))
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: a LockGuard exists only while its lock is held by this code.
        unsafe { self.lock.release() }
    }
}

impl private::Sealed for LockGuard<'_> {}
impl RecoverableGuard for LockGuard<'_> {
    fn mark_consistent(&self) {
        self.lock.mark_consistent();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

/// State of an [`RLock`]: the lock word plus the recursion depth (touched only by the owner).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct RLockState {
    lock: RawLock,
    depth: AtomicU32,
    _pad: AtomicU32,
}

// SAFETY: #[repr(C)] struct of atomics.
unsafe impl AtomicState for RLockState {}

/// A reentrant process-shared lock, like Python's `multiprocessing.RLock`: the thread that holds
/// it may lock it again; it is released when every guard is dropped.
///
/// Owner death is handled as for [`Lock`], whatever depth the dead owner had reached: the new
/// owner starts at depth 1.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rlock = multiproc::RLock::new()?;
/// let outer = rlock.lock()?;
/// let inner = rlock.lock()?; // same thread: no deadlock
/// assert_eq!(rlock.depth(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!rlock.is_locked());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RLock {
    inner: Fixed<RLockState>,
}

fixed_object!(RLock, RLockState, kind::RLOCK, (), |_state, _cfg| ());
unit_constructors!(RLock, "an unlocked reentrant lock");

impl RLock {
    fn validate(inner: Fixed<RLockState>) -> Result<Self, OpenError> {
        Ok(Self { inner })
    }

    fn state(&self) -> &RLockState {
        self.inner.state()
    }

    fn reenter(&self) -> Option<RLockGuard<'_>> {
        let st = self.state();
        if st.lock.is_owned_by_current_thread() {
            let d = st.depth.load(Ordering::Relaxed);
            st.depth.store(d.saturating_add(1), Ordering::Relaxed);
            return Some(RLockGuard {
                state: st,
                _not_send: PhantomData,
            });
        }
        None
    }

    /// The first guard of a hold this thread has just acquired.
    ///
    /// # Safety
    /// - The calling thread acquired the lock and does not hold it through any guard yet.
    unsafe fn entered(&self, how: Acquired) -> LockResult<RLockGuard<'_>> {
        let st = self.state();
        st.depth.store(1, Ordering::Relaxed);
        lock_result(
            how,
            RLockGuard {
                state: st,
                _not_send: PhantomData,
            },
            || describe(self),
        )
    }

    /// Acquires the lock (again, if this thread holds it already).
    #[doc(alias = "acquire")]
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(g);
        }
        let how = self.state().lock.acquire(None).expect("no deadline");
        // SAFETY: acquired just above; not held before (`reenter` found it not ours).
        unsafe { self.entered(how) }
    }

    /// Acquires the lock if it is free or already ours.
    #[doc(alias = "acquire")]
    pub fn try_lock(&self) -> TryLockResult<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(g);
        }
        match self.state().lock.try_acquire() {
            None => Err(TryLockError::WouldBlock),
            // SAFETY: acquired just now; not held before (`reenter` found it not ours).
            Some(how) => unsafe { self.entered(how) }.map_err(TryLockError::OwnerDied),
        }
    }

    /// Acquires the lock, waiting at most `timeout`.
    #[doc(alias = "acquire")]
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(g);
        }
        match self.state().lock.acquire(deadline_after(timeout)) {
            None => Err(TryLockError::WouldBlock),
            // SAFETY: acquired just now; not held before (`reenter` found it not ours).
            Some(how) => unsafe { self.entered(how) }.map_err(TryLockError::OwnerDied),
        }
    }

    /// Whether anyone holds the lock right now.
    pub fn is_locked(&self) -> bool {
        self.state().lock.is_locked()
    }

    /// The recursion depth if the calling thread holds the lock, else 0.
    pub fn depth(&self) -> u32 {
        let st = self.state();
        if st.lock.is_owned_by_current_thread() {
            st.depth.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Whether a holder died and nobody has recovered the lock since.
    pub fn is_poisoned(&self) -> bool {
        self.state().lock.is_inconsistent()
    }
}

/// Holds one level of an [`RLock`]; the lock is released when the outermost guard drops.
#[must_use = "dropping the guard unlocks at once"]
pub struct RLockGuard<'a> {
    state: &'a RLockState,
    _not_send: NotSend,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let d = self.state.depth.load(Ordering::Relaxed);
        if d > 1 {
            self.state.depth.store(d - 1, Ordering::Relaxed);
        } else {
            self.state.depth.store(0, Ordering::Relaxed);
            // SAFETY: the guard proves this thread holds the lock; depth reached zero.
            unsafe { self.state.lock.release() }
        }
    }
}

impl private::Sealed for RLockGuard<'_> {}
impl RecoverableGuard for RLockGuard<'_> {
    fn mark_consistent(&self) {
        self.state.lock.mark_consistent();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard")
            .field("depth", &self.state.depth.load(Ordering::Relaxed))
            .finish()
    }
}

crate::segment::object::serde_via_handle!([] Lock);
crate::segment::object::serde_via_handle!([] RLock);
