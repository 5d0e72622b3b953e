//! The futex lock word: a process-shared, owner-tracking mutex without data.
#![allow(unsafe_code)]
//! # Safety
//! `release` is unsafe because unlocking a lock someone else holds breaks mutual exclusion; its
//! callers are guards, which exist only while their lock is held.

use std::time::Instant;

use crate::primitive::{AtomicU32, AtomicU64, Ordering};
use crate::sync::wait::{Backoff, Prober, sleep_unless};
use crate::sys::{self, ThreadId};

/// Low bits of the lock word: the owner's kernel thread id (pid_max is at most 2^22).
const TID_MASK: u32 = (1 << 30) - 1;
/// High bit of the lock word: someone may be asleep on it; unlock must wake.
const WAITERS: u32 = 1 << 31;
/// `flags` bit 0: a holder died inside its critical section and nobody has marked the
/// protected state consistent since.
const INCONSISTENT: u32 = 1;
/// `flags` bits 1..32 count the waiters asleep (or about to sleep) on the word, in steps of
/// this unit.
const SLEEPER: u32 = 2;

/// How a lock was acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Normally: the protected state is as the last holder left it.
    Clean,
    /// The previous holder died holding the lock (now, or earlier and nobody recovered).
    OwnerDied,
}

/// A mutual-exclusion lock word for memory shared between processes.
///
/// This is the data-less layer under [`Lock`](crate::Lock), [`RLock`](crate::RLock), the lock
/// inside [`Condition`](crate::Condition) and [`Value`](crate::Value). It is `#[repr(C)]`, 16
/// bytes, valid when zeroed, and may be placed anywhere in shared memory (for example inside a
/// [`SharedMemory`](crate::SharedMemory) region, or behind the `lock_api` feature as the raw
/// mutex of a `lock_api::Mutex`).
///
/// `word` state table:
///
/// | value              | meaning                                                    |
/// |--------------------|------------------------------------------------------------|
/// | `0`                | unlocked                                                   |
/// | `tid`              | held by thread `tid`, nobody asleep                        |
/// | `tid \| WAITERS`   | held by thread `tid`, waiters may be asleep: unlock wakes one |
///
/// `flags` holds the owner-died bit and the number of sleeping waiters. A thread that takes the
/// lock after waiting sets `WAITERS` only if others still sleep, so once the queue drains,
/// unlocking stops making wake calls.
///
/// The uncontended path is one compare-and-swap to lock and one swap to unlock; no system call.
/// A waiter spins briefly, then sleeps on the word with `FUTEX_WAIT` (shared, not private).
/// While asleep it wakes now and then to check that the owner still lives (thread id plus start
/// time from `/proc`, so pid reuse cannot fool it); a dead owner's lock is taken over and
/// reported as owner-died.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawLock {
    word: AtomicU32,
    flags: AtomicU32,
    /// The owner's record, written by the owner right after it takes the word: its thread id
    /// in the bits from [`START_BITS`] up, its start time below (see [`owner_record`]).
    owner_start: AtomicU64,
}

/// Bits of `owner_start` that hold the owner's start time (clock ticks since boot: 2^42 ticks
/// at 100 Hz is over a billion years); the owner's thread id sits above them.
const START_BITS: u32 = 42;
const START_MASK: u64 = (1 << START_BITS) - 1;

/// What an owner writes in `owner_start`. Tagging the start time with the thread id lets a
/// waiter tell the owner's own record from the one its predecessor left (still there between
/// the new owner's compare-and-swap of the word and its store of the record): judging the new
/// owner by the old start time would take it for a reused id, and the lock from a live owner.
fn owner_record(me: ThreadId) -> u64 {
    (u64::from(me.tid) << START_BITS) | (me.start & START_MASK)
}

#[cfg(not(multiproc_loom))]
const _: () = assert!(size_of::<RawLock>() == 16);

impl RawLock {
    /// An unlocked lock word.
    #[cfg(not(multiproc_loom))]
    pub const fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            owner_start: AtomicU64::new(0),
        }
    }

    /// An unlocked lock word (loom's atomics cannot be made in a `const fn`).
    #[cfg(multiproc_loom)]
    pub fn new() -> Self {
        Self::default()
    }

    #[inline(always)]
    fn acquired(&self, me: ThreadId) -> Acquired {
        // A thread that takes the lock again finds its own record still there: leave the line
        // as it is (a store before the unlock's swap would have to drain first).
        let record = owner_record(me);
        if self.owner_start.load(Ordering::Relaxed) != record {
            self.owner_start.store(record, Ordering::Relaxed);
        }
        if self.flags.load(Ordering::Relaxed) & INCONSISTENT != 0 {
            Acquired::OwnerDied
        } else {
            Acquired::Clean
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<Acquired> {
        let me = sys::current_thread();
        self.word
            .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| self.acquired(me))
    }

    /// Takes the lock, waiting until `deadline` (forever if `None`). `None` means timed out.
    /// A holder that died is taken over (`Acquired::OwnerDied`).
    #[inline]
    pub(crate) fn acquire(&self, deadline: Option<Instant>) -> Option<Acquired> {
        self.acquire_with(deadline, true)
    }

    /// As [`acquire`](Self::acquire), with `takeover` saying whether a dead holder's lock may
    /// be taken over. It may not where a reference handed out under the lock can outlive the
    /// holder's thread (`lock_api`'s guards can be leaked and sent to other threads): taking
    /// over would then make a second `&mut` to the data.
    #[inline]
    fn acquire_with(&self, deadline: Option<Instant>, takeover: bool) -> Option<Acquired> {
        let me = sys::current_thread();
        if self
            .word
            .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Some(self.acquired(me));
        }
        self.acquire_slow(me, deadline, takeover)
    }

    #[cold]
    fn acquire_slow(
        &self,
        me: ThreadId,
        deadline: Option<Instant>,
        takeover: bool,
    ) -> Option<Acquired> {
        // Spin while the owner runs and nobody sleeps yet: short critical sections end sooner
        // than a futex round trip takes.
        let mut backoff = Backoff::new();
        while !backoff.is_completed() {
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                if self
                    .word
                    .compare_exchange_weak(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(self.acquired(me));
                }
            } else if w & WAITERS != 0 {
                break;
            }
            backoff.snooze();
        }

        let mut prober = Prober::new();
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w & TID_MASK == 0 {
                // Free. Keep WAITERS set if others sleep, so our unlock wakes the next one.
                // SeqCst pairs with the sleeper's increment below: a sleeper we miss here would
                // only sleep until its next probe, never for good.
                let sleepers = self.flags.load(Ordering::SeqCst) >= SLEEPER;
                let new = me.tid | if sleepers { WAITERS } else { 0 };
                if self
                    .word
                    .compare_exchange(w, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(self.acquired(me));
                }
                continue;
            }
            if w & WAITERS == 0
                && self
                    .word
                    .compare_exchange(w, w | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let expected = w | WAITERS;
            let tid = w & TID_MASK;
            let record = self.owner_start.load(Ordering::Relaxed);
            // Only the owner's own record says when it started; until it is written (or if it
            // was scribbled on), the probe asks only whether a thread `tid` exists, which can
            // find a dead owner but never mistakes a live one for a reused id.
            let start = if record >> START_BITS == u64::from(tid) {
                record & START_MASK
            } else {
                0
            };
            let owner = ThreadId { tid, start };
            if takeover && prober.owner_is_dead(expected, owner) {
                // Take over exactly the word we probed; if it moved meanwhile, look again.
                if self
                    .word
                    .compare_exchange(
                        expected,
                        me.tid | WAITERS,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    self.flags.fetch_or(INCONSISTENT, Ordering::Relaxed);
                    return Some(self.acquired(me));
                }
                continue;
            }
            let Some(timeout) = prober.sleep_budget(deadline) else {
                if prober.last_chance() {
                    continue; // probe the owner once before giving up
                }
                // Timed out. A wake meant for the next owner may have been ours: pass it on if
                // the lock is free and someone still sleeps.
                if self.word.load(Ordering::SeqCst) & TID_MASK == 0
                    && self.flags.load(Ordering::SeqCst) >= SLEEPER
                {
                    self.wake_one();
                }
                return None;
            };
            // Woken, the word changed, or the slice is over: back to the loop in every case. The
            // last look is the futex's own check that the word still holds `expected`.
            sleep_unless(
                &self.word,
                expected,
                &self.flags,
                SLEEPER,
                Some(timeout),
                || false,
            );
        }
    }

    /// Takes the lock as [`acquire`](Self::acquire) does, for a hold that ends when the
    /// returned [`Held`] is dropped, also when a panic unwinds past it.
    #[inline]
    pub(crate) fn hold(&self, deadline: Option<Instant>) -> Option<Held<'_>> {
        let how = self.acquire(deadline)?;
        let taken_over = how == Acquired::OwnerDied;
        if taken_over {
            // Whoever holds through `Held` repairs what the dead holder left (the ring's
            // protocol makes a half-done put or get harmless), so the lock is consistent again.
            self.mark_consistent();
        }
        Some(Held {
            lock: self,
            taken_over,
        })
    }

    /// Takes up a hold that thread `tid` of this process left (its [`Held`] forgotten with
    /// `std::mem::forget`), for the calling thread: the word is moved from `tid` to us in one
    /// compare-and-swap, so a waiter that found `tid` dead and took the lock over meanwhile
    /// keeps it (`None` then).
    ///
    /// # Safety
    /// - The calling code owns the forgotten hold of thread `tid` of this process (made by
    ///   [`hold`](Self::hold) or `adopt`, and neither released nor adopted since): the word
    ///   naming `tid` then means that hold, not one `tid` took afresh, which would lose its
    ///   mutual exclusion.
    pub(crate) unsafe fn adopt(&self, tid: u32) -> Option<Held<'_>> {
        let me = sys::current_thread();
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w & TID_MASK != tid || tid == 0 {
                return None;
            }
            if tid == me.tid {
                break;
            }
            if self
                .word
                .compare_exchange(
                    w,
                    me.tid | (w & WAITERS),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                self.owner_start.store(owner_record(me), Ordering::Relaxed);
                break;
            }
        }
        Some(Held {
            lock: self,
            taken_over: false,
        })
    }

    /// Releases a hold that thread `tid` of this process left (its [`Held`] forgotten), if the
    /// word still names `tid`; `false` if someone took the lock over meanwhile (then it is
    /// theirs, and stays so).
    ///
    /// # Safety
    /// - As for [`adopt`](Self::adopt): the calling code owns the forgotten hold of thread
    ///   `tid` of this process.
    pub(crate) unsafe fn release_from(&self, tid: u32) -> bool {
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w & TID_MASK != tid || tid == 0 {
                return false;
            }
            // AcqRel, as in `release`.
            if self
                .word
                .compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                if w & WAITERS != 0 {
                    self.wake_one();
                }
                return true;
            }
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// - The calling code holds this lock (acquired it and has not released it since). Unlocking a
    ///   lock held elsewhere breaks mutual exclusion for whoever holds it.
    #[inline(always)]
    pub(crate) unsafe fn release(&self) {
        // AcqRel, not just Release: see `handshake`.
        let w = self.word.swap(0, Ordering::AcqRel);
        if w & WAITERS != 0 {
            self.wake_one();
        }
    }

    /// A read-modify-write of the word that changes nothing, with acquire and release
    /// ordering.
    ///
    /// A thread about to sleep until the holder's side makes progress calls it after
    /// announcing itself (bumping a sleeper count) and before its last look at the state the
    /// holder publishes. The RMW and the holder's unlock (an AcqRel swap) are ordered in the
    /// word's modification order: if the handshake comes after the unlock, it sees everything
    /// the holder published before unlocking; if before, the holder's unlock sees the sleeper
    /// announcement and so wakes it. So the holder can publish with plain release stores and
    /// still never miss a sleeper, without a full fence per operation.
    pub(crate) fn handshake(&self) {
        // (A deliberately broken build for the loom models, which must then fail: `.ci/run`.)
        if !crate::primitive::mutant("no-handshake") {
            self.word.fetch_add(0, Ordering::AcqRel);
        }
    }

    #[cold]
    fn wake_one(&self) {
        sys::futex_wake(&self.word, 1);
    }

    /// Whether some thread holds the lock right now (a snapshot).
    pub(crate) fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) & TID_MASK != 0
    }

    /// Whether the calling thread holds the lock.
    pub(crate) fn is_owned_by_current_thread(&self) -> bool {
        let me = sys::current_thread();
        self.word.load(Ordering::Relaxed) & TID_MASK == me.tid
            && self.owner_start.load(Ordering::Relaxed) == owner_record(me)
    }

    /// Clears the owner-died state. Call only while holding the lock.
    pub(crate) fn mark_consistent(&self) {
        self.flags.fetch_and(!INCONSISTENT, Ordering::Relaxed);
    }

    /// Whether a holder died and nobody has marked the state consistent since.
    pub(crate) fn is_inconsistent(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & INCONSISTENT != 0
    }
}

/// A hold on a [`RawLock`] that releases it when dropped (see [`RawLock::hold`]), so that a
/// panic in code run under the lock (a codec calling user code) never leaves it held.
#[must_use = "dropping the hold unlocks at once"]
#[derive(Debug)]
pub(crate) struct Held<'a> {
    lock: &'a RawLock,
    taken_over: bool,
}

impl Held<'_> {
    /// Whether the previous holder died holding the lock (or one before it did, and nobody
    /// has held it through a `Held` since): what it protects may be half updated.
    #[inline]
    pub(crate) fn taken_over(&self) -> bool {
        self.taken_over
    }
}

impl Drop for Held<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: a `Held` is made only by `RawLock::hold` once the lock is ours, or by
        // `RawLock::adopt` once a hold of ours moved to this thread, and exists until this
        // drop, the one place that releases it (a `Held` forgotten instead is released by
        // `release_from` or taken up again by `adopt`).
        unsafe { self.lock.release() }
    }
}

#[cfg(feature = "lock_api")]
#[allow(unsafe_code)]
mod lock_api_impl {
    //! # Safety
    //! `RawLock` provides mutual exclusion across threads and processes; see the trait impl.
    use super::RawLock;

    // SAFETY: `lock`/`try_lock` only return once the word holds our thread id, which excludes
    // every other thread and process until `unlock` swaps it back to 0.
    unsafe impl lock_api::RawMutex for RawLock {
        #[allow(clippy::declare_interior_mutable_const)]
        const INIT: Self = RawLock::new();
        type GuardMarker = lock_api::GuardNoSend;

        /// Acquires the lock, waiting as long as it takes. A holder that died is *not* taken
        /// over: a `lock_api` guard can be leaked (`MutexGuard::leak`) and its `&mut T` sent to
        /// another thread, so the holder's death does not end the borrow. Use
        /// [`Lock`](crate::Lock) (or [`Value`](crate::Value)) where a dead holder must be
        /// detected and recovered from.
        #[inline]
        fn lock(&self) {
            let _ = self.acquire_with(None, false);
        }

        #[inline]
        fn try_lock(&self) -> bool {
            self.try_acquire().is_some()
        }

        #[inline]
        unsafe fn unlock(&self) {
            // SAFETY: lock_api's contract: the caller holds the lock.
            unsafe { self.release() }
        }

        #[inline]
        fn is_locked(&self) -> bool {
            RawLock::is_locked(self)
        }
    }
}

#[cfg(all(test, not(multiproc_loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc::channel;
    use std::time::{Duration, Instant};

    use super::*;

    /// Review of issue 8: a new owner writes its record just after taking the word; a waiter
    /// that judged it by the record still there (its predecessor's start time) took it for a
    /// reused thread id and, two probes later, took the lock from a live owner.
    #[test]
    fn a_predecessors_record_does_not_make_a_live_owner_look_dead() {
        let lock = Arc::new(RawLock::new());
        let (held_tx, held_rx) = channel();
        let (done_tx, done_rx) = channel::<()>();
        let owner = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                lock.acquire(None).unwrap();
                held_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                // SAFETY: this thread took the lock above and still holds it.
                unsafe { lock.release() };
            })
        };
        held_rx.recv().unwrap();
        // As if the owner had not written its record yet: a start time that is not its own.
        lock.owner_start.store(12_345, Ordering::Relaxed);
        let got = lock.acquire(Some(Instant::now() + Duration::from_millis(300)));
        let took_over = got.is_some();
        if took_over {
            // SAFETY: `acquire` just gave us the lock.
            unsafe { lock.release() };
        }
        done_tx.send(()).unwrap();
        owner.join().unwrap();
        assert!(!took_over, "a waiter took the lock from its live owner");
    }
}
