//! `Barrier`: N processes wait for each other.
#![allow(unsafe_code)]
//! # Safety
//! The payload is a `BarrierState` followed by `parties` `Slot`s, all atomics. `init` reaches
//! the state and slots through `FreshPayload`, which checks bounds and alignment. `from_segment`
//! checks the payload length against the `parties` it reads (once, and caches), so every slot
//! index below `parties` is inside the mapping, which lives as long as the `Barrier`.

use crate::primitive::{AtomicU32, AtomicU64, Ordering};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wait::{Prober, Spinner, deadline_after, sleep_unless, wake_sleepers};
use crate::error::{BrokenBarrierError, OpenError};
use crate::segment::object::{AtomicState, Builder, FreshPayload, expect_payload, sealed};
use crate::segment::{Segment, kind};
use crate::sys::{self, Liveness, ThreadId};

const COUNT_BITS: u32 = 12;
const COUNT_MASK: u32 = (1 << COUNT_BITS) - 1;
const GEN_MASK: u32 = (1 << 19) - 1;
const BROKEN: u32 = 1 << 31;
/// Most parties a barrier supports (the count field is 12 bits).
pub const MAX_PARTIES: u32 = COUNT_MASK;
// The error for a bad party count names the number.
const _: () = assert!(MAX_PARTIES == 4095);

fn gen_of(w: u32) -> u32 {
    (w >> COUNT_BITS) & GEN_MASK
}

/// Shared state of a barrier, followed in the segment by `parties` [`Slot`]s.
///
/// `word` is the futex word:
///
/// | bits   | field                                                               |
/// |--------|---------------------------------------------------------------------|
/// | 31     | broken: waiters and arrivals fail until `reset`                     |
/// | 12..31 | generation: bumped when a round completes or is reset               |
/// | 0..12  | arrivals so far in this generation                                  |
///
/// `history` bit `g % 32` says whether generation `g` ended by a reset (1) or by completing (0),
/// for waiters that wake up after the generation moved on. `sleepers` counts the waiters asleep
/// (or about to sleep) on `word`, so that a round that nobody sleeps through ends without a
/// wake call (see `sync::wait::sleep_unless`).
#[repr(C)]
#[derive(Debug, Default)]
struct BarrierState {
    word: AtomicU32,
    parties: AtomicU32,
    history: AtomicU32,
    sleepers: AtomicU32,
}

// SAFETY: #[repr(C)] struct of atomics, alignment 4.
unsafe impl AtomicState for BarrierState {}

/// Who arrived at position `i` of the current generation, so that sleepers can detect a dead
/// party. `generation` is written last (Release): a slot whose generation differs from the
/// current one is stale and ignored.
#[repr(C)]
#[derive(Debug, Default)]
struct Slot {
    tid: AtomicU32,
    generation: AtomicU32,
    start: AtomicU64,
}

// SAFETY: #[repr(C)] struct of atomics, alignment 8.
unsafe impl AtomicState for Slot {}

/// `Slot::generation` of a slot nobody has arrived at yet: no generation is this large.
const NO_GENERATION: u32 = u32::MAX;
const _: () = assert!(NO_GENERATION > GEN_MASK);

const STATE_LEN: usize = size_of::<BarrierState>();
const _: () = assert!(STATE_LEN == 16 && size_of::<Slot>() == 16);

fn payload_len(parties: u32) -> usize {
    STATE_LEN + parties as usize * size_of::<Slot>()
}

/// A process-shared barrier, like Python's `multiprocessing.Barrier`: `wait` blocks until
/// `parties` processes (or threads) have called it, then releases them all and the barrier is
/// ready for the next round.
///
/// The barrier breaks (every current and later `wait` returns [`BrokenBarrierError`] until
/// [`reset`](Self::reset)) when [`abort`](Self::abort) is called, when a `wait_timeout` times out,
/// or when a sleeping waiter notices that a party which arrived in this round has died. So a
/// killed party never leaves the others waiting forever.
///
/// Python's `action` is [`wait_with_action`](Self::wait_with_action): the action is a `fn()` of
/// the calling process, run by the last party to arrive (if that party passed one) after all
/// have arrived and before any is released. An action that panics breaks the barrier.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), multiproc::OpenError> {
/// let barrier = multiproc::Barrier::new(1)?;
/// assert_eq!(barrier.wait(), Ok(0)); // one party: passes at once
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Barrier {
    /// Shared with clones: the mapping lives until the last clone goes.
    seg: Arc<Segment>,
    state: NonNull<BarrierState>,
    slots: NonNull<Slot>,
    parties: u32,
    spinner: Spinner,
}

// SAFETY: the pointers target atomics inside the segment the Barrier owns (module note).
unsafe impl Send for Barrier {}
// SAFETY: as above; all access is through shared references to atomics.
unsafe impl Sync for Barrier {}

impl Clone for Barrier {
    /// Another handle on the same barrier (it shares this handle's mapping).
    fn clone(&self) -> Self {
        Self {
            seg: Arc::clone(&self.seg),
            state: self.state,
            slots: self.slots,
            parties: self.parties,
            spinner: Spinner::new(),
        }
    }
}

impl sealed::Object for Barrier {
    type Config = u32;
    const KIND: u32 = kind::BARRIER;

    fn check(parties: &u32) -> Result<(), OpenError> {
        if (1..=MAX_PARTIES).contains(parties) {
            Ok(())
        } else {
            Err(OpenError::InvalidArgument(
                "barrier parties must be 1 to MAX_PARTIES (4095)",
            ))
        }
    }

    fn payload_len(parties: &u32) -> usize {
        payload_len(*parties)
    }

    fn init(payload: FreshPayload<'_>, parties: &u32) {
        let st = payload.state::<BarrierState>();
        st.parties.store(*parties, Ordering::Relaxed);
        // A zeroed slot would claim "thread 0 arrived in generation 0" to a waiter that probes
        // between a party's arrival and its slot write in the first round.
        for i in 0..*parties as usize {
            payload
                .at::<Slot>(STATE_LEN + i * size_of::<Slot>())
                .generation
                .store(NO_GENERATION, Ordering::Relaxed);
        }
    }

    fn from_segment(seg: Segment) -> Result<Self, OpenError> {
        if seg.payload_len() < STATE_LEN {
            return Err(OpenError::Truncated {
                found: seg.payload_len() as u64,
                expected: STATE_LEN as u64,
            });
        }
        let state = seg.payload().cast::<BarrierState>();
        // SAFETY: the payload holds at least a BarrierState (checked above), all atomics.
        let parties = unsafe { state.as_ref() }.parties.load(Ordering::Relaxed);
        if parties == 0 || parties > MAX_PARTIES {
            return Err(OpenError::Corrupted("barrier parties out of range"));
        }
        expect_payload(&seg, payload_len(parties))?;
        // SAFETY: STATE_LEN is inside the payload (checked above) and 16-byte aligned.
        let slots = unsafe { seg.payload().add(STATE_LEN) }.cast::<Slot>();
        Ok(Self {
            seg: Arc::new(seg),
            state,
            slots,
            parties,
            spinner: Spinner::new(),
        })
    }

    fn segment(&self) -> &Segment {
        &self.seg
    }
}

impl Builder<Barrier> {
    /// Number of parties (1 to [`MAX_PARTIES`]). Another value makes
    /// [`create`](Builder::create) fail with [`OpenError::InvalidArgument`].
    pub fn parties(mut self, parties: u32) -> Self {
        self.config = parties;
        self
    }
}

impl Barrier {
    /// Creates a barrier for `parties` parties in a new memfd segment.
    ///
    /// # Errors
    /// [`OpenError::InvalidArgument`] if `parties` is 0 or above [`MAX_PARTIES`] (Python's
    /// `ValueError`); the system error if the segment cannot be created.
    pub fn new(parties: u32) -> Result<Self, OpenError> {
        Self::builder().parties(parties).create()
    }

    /// A builder (set [`parties`](Builder::parties); default 1).
    pub fn builder() -> Builder<Self> {
        Builder::with_config(1)
    }

    /// Opens the existing barrier named `name`.
    ///
    /// # Errors
    /// As [`Builder::open`].
    pub fn open(name: &str) -> Result<Self, OpenError> {
        Self::builder().name(name).open()
    }

    fn st(&self) -> &BarrierState {
        // SAFETY: validated in from_segment; the segment lives as long as self (module note).
        unsafe { self.state.as_ref() }
    }

    fn slot(&self, i: u32) -> &Slot {
        assert!(i < self.parties);
        let slot = self.slots.as_ptr().wrapping_add(i as usize);
        // SAFETY: i < parties, and the payload holds `parties` slots of atomics (module note).
        unsafe { &*slot }
    }

    /// Number of parties needed to pass.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// Number of parties waiting right now.
    pub fn n_waiting(&self) -> u32 {
        let w = self.st().word.load(Ordering::Relaxed);
        if w & BROKEN != 0 { 0 } else { w & COUNT_MASK }
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.st().word.load(Ordering::Relaxed) & BROKEN != 0
    }

    /// Waits for all parties. Returns this party's arrival index, `0..parties` (the last to
    /// arrive gets `parties - 1`).
    ///
    /// # Errors
    /// [`BrokenBarrierError`] if the barrier is or becomes broken.
    pub fn wait(&self) -> Result<u32, BrokenBarrierError> {
        self.wait_deadline(None, None)
    }

    /// As [`wait`](Self::wait), and if this party arrives last in its round, it runs `action`
    /// after all parties have arrived and before any is released (Python's `Barrier(parties,
    /// action)`). The action is a plain `fn()` because it runs in whichever process arrives
    /// last: each party passes the action of its own process, and the one that arrives last
    /// runs its own. A round whose last party called plain [`wait`](Self::wait) runs no action,
    /// so every party should call this method with the same action.
    ///
    /// While the action runs the round is full: other callers get [`BrokenBarrierError`], as
    /// for a party too many. A waiter that times out meanwhile, or an [`abort`](Self::abort) or
    /// [`reset`](Self::reset), breaks the round as usual; a party that dies in the action is
    /// noticed by the waiters like any dead party.
    ///
    /// # Errors
    /// [`BrokenBarrierError`] if the barrier is or becomes broken, and if `action` panics: the
    /// panic is caught (after the panic hook has reported it), the barrier breaks, and every
    /// party of the round, this one included, gets the error.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), multiproc::OpenError> {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// fn action() {
    ///     RUNS.fetch_add(1, Ordering::Relaxed);
    /// }
    /// let barrier = multiproc::Barrier::new(1)?;
    /// assert_eq!(barrier.wait_with_action(action), Ok(0));
    /// assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    /// # Ok(()) }
    /// ```
    #[doc(alias = "action")]
    pub fn wait_with_action(&self, action: fn()) -> Result<u32, BrokenBarrierError> {
        self.wait_deadline(None, Some(action))
    }

    /// As [`wait_with_action`](Self::wait_with_action), with the timeout of
    /// [`wait_timeout`](Self::wait_timeout) (the action itself is not timed).
    ///
    /// # Errors
    /// As [`wait_with_action`](Self::wait_with_action), and [`BrokenBarrierError`] on timeout.
    pub fn wait_with_action_timeout(
        &self,
        action: fn(),
        timeout: Duration,
    ) -> Result<u32, BrokenBarrierError> {
        self.wait_deadline(deadline_after(timeout), Some(action))
    }

    /// As [`wait`](Self::wait), but a wait longer than `timeout` breaks the barrier (as in
    /// Python) and returns [`BrokenBarrierError`].
    ///
    /// # Errors
    /// [`BrokenBarrierError`] on timeout or if the barrier is or becomes broken.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BrokenBarrierError> {
        self.wait_deadline(deadline_after(timeout), None)
    }

    fn wait_deadline(
        &self,
        deadline: Option<Instant>,
        action: Option<fn()>,
    ) -> Result<u32, BrokenBarrierError> {
        let st = self.st();
        let (generation, index) = loop {
            let w = st.word.load(Ordering::Acquire);
            let count = w & COUNT_MASK;
            if w & BROKEN != 0 || count >= self.parties {
                return Err(BrokenBarrierError);
            }
            let generation = gen_of(w);
            if let (true, Some(action)) = (count + 1 == self.parties, action) {
                // Last arrival with an action: fill the round (later callers fail as a party
                // too many), record ourselves for the waiters' liveness probe, run the action,
                // then open the gate unless the round broke meanwhile.
                if st
                    .word
                    .compare_exchange(w, w + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                self.record_arrival(count, generation);
                return self.run_action_and_release(w + 1, action).map(|()| count);
            }
            if count + 1 == self.parties {
                // Last arrival: record "completed" for this generation, then open the gate.
                st.history
                    .fetch_and(!(1 << (generation % 32)), Ordering::Relaxed);
                let next = ((generation + 1) & GEN_MASK) << COUNT_BITS;
                if st
                    .word
                    .compare_exchange(w, next, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    wake_sleepers(&st.word, &st.sleepers, i32::MAX as u32);
                    return Ok(count);
                }
                continue;
            }
            if st
                .word
                .compare_exchange(w, w + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.record_arrival(count, generation);
                break (generation, count);
            }
        };

        let mut spun = false;
        let mut prober = Prober::new();
        loop {
            let w = st.word.load(Ordering::Acquire);
            if gen_of(w) != generation {
                return if st.history.load(Ordering::Acquire) & (1 << (generation % 32)) != 0 {
                    Err(BrokenBarrierError)
                } else {
                    Ok(index)
                };
            }
            if w & BROKEN != 0 {
                return Err(BrokenBarrierError);
            }
            if !spun {
                spun = true;
                let moved = || st.word.load(Ordering::Acquire) != w;
                if self.spinner.spin(deadline, moved) {
                    continue;
                }
            }
            if prober.due() && self.a_party_died(generation, w & COUNT_MASK) {
                self.abort();
                return Err(BrokenBarrierError);
            }
            let Some(left) = prober.sleep_budget(deadline) else {
                self.abort();
                return Err(BrokenBarrierError);
            };
            sleep_unless(&st.word, w, &st.sleepers, 1, Some(left), || {
                st.word.load(Ordering::Acquire) != w
            });
        }
    }

    /// Records the calling thread in slot `index` of `generation`, for the liveness probe.
    fn record_arrival(&self, index: u32, generation: u32) {
        let me = sys::current_thread();
        let slot = self.slot(index);
        slot.tid.store(me.tid, Ordering::Relaxed);
        slot.start.store(me.start, Ordering::Relaxed);
        slot.generation.store(generation, Ordering::Release);
    }

    /// Runs `action` for the full round `full` (all parties arrived, the gate still closed),
    /// then opens the gate, unless the action panicked (the barrier breaks) or the round broke
    /// or was reset while it ran.
    #[cold]
    fn run_action_and_release(&self, full: u32, action: fn()) -> Result<(), BrokenBarrierError> {
        let st = self.st();
        if std::panic::catch_unwind(action).is_err() {
            self.abort();
            return Err(BrokenBarrierError);
        }
        let generation = gen_of(full);
        st.history
            .fetch_and(!(1 << (generation % 32)), Ordering::Relaxed);
        let next = ((generation + 1) & GEN_MASK) << COUNT_BITS;
        // Only an abort (BROKEN) or a reset (a new generation) changes a full round's word.
        if let Err(now) = st
            .word
            .compare_exchange(full, next, Ordering::AcqRel, Ordering::Acquire)
        {
            if gen_of(now) != generation {
                // A reset ended the round and marked it so; our clear above may have come
                // after its mark: mark it again, so that the waiters see a reset.
                st.history
                    .fetch_or(1 << (generation % 32), Ordering::Release);
            }
            return Err(BrokenBarrierError);
        }
        wake_sleepers(&st.word, &st.sleepers, i32::MAX as u32);
        Ok(())
    }

    /// Whether any party that arrived in `generation` (slots `0..count`) is dead.
    fn a_party_died(&self, generation: u32, count: u32) -> bool {
        (0..count.min(self.parties)).any(|i| {
            let slot = self.slot(i);
            if slot.generation.load(Ordering::Acquire) != generation {
                return false;
            }
            let who = ThreadId {
                tid: slot.tid.load(Ordering::Relaxed),
                start: slot.start.load(Ordering::Relaxed),
            };
            sys::probe_thread(who) != Liveness::Alive
        })
    }

    /// Breaks the barrier: current and future waiters get [`BrokenBarrierError`] until
    /// [`reset`](Self::reset).
    pub fn abort(&self) {
        let st = self.st();
        st.word.fetch_or(BROKEN, Ordering::AcqRel);
        wake_sleepers(&st.word, &st.sleepers, i32::MAX as u32);
    }

    /// Returns the barrier to its initial, unbroken state; parties waiting right now get
    /// [`BrokenBarrierError`].
    pub fn reset(&self) {
        let st = self.st();
        let mut w = st.word.load(Ordering::Acquire);
        loop {
            if w & (BROKEN | COUNT_MASK) == 0 {
                return;
            }
            let generation = gen_of(w);
            st.history
                .fetch_or(1 << (generation % 32), Ordering::Release);
            let next = ((generation + 1) & GEN_MASK) << COUNT_BITS;
            match st
                .word
                .compare_exchange(w, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        wake_sleepers(&st.word, &st.sleepers, i32::MAX as u32);
    }
}

crate::segment::object::serde_via_handle!([] Barrier);
