//! Waiting helpers shared by the primitives: the sleeper-counted futex wait, spin backoff,
//! deadlines, and the owner prober.

use std::time::{Duration, Instant};

use crate::primitive::{self, AtomicU32, Ordering};
use crate::sys::{self, Liveness, ThreadId};

/// A futex word that sleepers wait on and wakers advance, with a count of the sleepers, so that
/// a wake makes a system call only when someone sleeps. `#[repr(C)]`, 8 bytes, valid zeroed.
///
/// | field      | meaning                                                                 |
/// |------------|-------------------------------------------------------------------------|
/// | `seq`      | the futex word; a wake advances it (wrapping), so a sleeper that read it before the wake does not sleep |
/// | `sleepers` | waiters between announcing themselves and withdrawing in [`sleep_unless`] |
///
/// No wake-up is lost. A waiter reads `seq` ([`observe`](Self::observe)), announces itself
/// with a read-modify-write of `sleepers`, takes its last look at the state it waits for, and
/// sleeps only while `seq` still holds what it read. A waker changes that state first, then
/// looks at `sleepers` with a read-modify-write too ([`notify`](Self::notify)) and, if anyone
/// is counted, advances `seq` and wakes. The two RMWs of `sleepers` are ordered: if the waker's
/// comes second it sees the sleeper; if first, the waiter's RMW reads from it (both are
/// acquire-release), so the waiter's last look sees the change. This needs no sequentially
/// consistent loads, which loom cannot model (it treats them as acquire-release).
///
/// SYNC(sleepers-rmw): the announce in `sleep_unless` pairs with the RMW in `notify` and
/// [`wake_sleepers`].
///
/// The ring publishes with release stores and pairs each sleeper with the publisher through the
/// publisher's lock word instead (`RawLock::handshake`), so its hot path needs only a plain load
/// of `sleepers` ([`notify_after_handshake`](Self::notify_after_handshake)).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct WaitWord {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

#[cfg(not(multiproc_loom))]
const _: () = assert!(size_of::<WaitWord>() == 8);

impl WaitWord {
    /// The sequence now: read it before looking at the state, then pass it to
    /// [`wait_unless`](Self::wait_unless).
    #[inline]
    pub(crate) fn observe(&self) -> u32 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Sleeps until woken, until the sequence moves from `seen`, or for `timeout` at most (for
    /// ever when `None`), unless `ready` (the last look, taken after announcing) holds already.
    /// Returns what `ready` said.
    pub(crate) fn wait_unless(
        &self,
        seen: u32,
        timeout: Option<Duration>,
        ready: impl FnOnce() -> bool,
    ) -> bool {
        sleep_unless(&self.seq, seen, &self.sleepers, 1, timeout, ready)
    }

    /// The futex word itself, for a wait over many objects at once (`crate::wait`), which
    /// sleeps on it with `futex_waitv` between [`announce`](Self::announce) and
    /// [`withdraw`](Self::withdraw) instead of calling [`wait_unless`](Self::wait_unless).
    #[cfg(not(multiproc_loom))]
    pub(crate) fn futex_word(&self) -> &AtomicU32 {
        &self.seq
    }

    /// Counts the caller as a sleeper, as [`wait_unless`](Self::wait_unless) does around its
    /// sleep: wakers call the wake system call only while someone is counted. Each call is
    /// undone by one [`withdraw`](Self::withdraw). Between the two the caller follows the same
    /// order as `wait_unless`: [`observe`](Self::observe), then its last look, then sleep.
    #[cfg(not(multiproc_loom))]
    pub(crate) fn announce(&self) {
        // SYNC(sleepers-rmw)
        self.sleepers.fetch_add(1, Ordering::AcqRel);
    }

    /// Undoes one [`announce`](Self::announce). (A scribbled count only wraps: wakers then
    /// wake in vain, or not at all, until the sleepers' probes; nothing worse.)
    #[cfg(not(multiproc_loom))]
    pub(crate) fn withdraw(&self) {
        self.sleepers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Wakes up to `n` sleepers, if any are counted; otherwise does nothing at all (no write,
    /// no system call). Call it after changing the state sleepers look at.
    #[inline]
    pub(crate) fn notify(&self, n: u32) {
        // SYNC(sleepers-rmw)
        let counted = if primitive::mutant("plain-load") {
            self.sleepers.load(Ordering::Relaxed)
        } else {
            self.sleepers.fetch_add(0, Ordering::AcqRel)
        };
        if counted > 0 {
            self.wake(n);
        }
    }

    /// As [`notify`](Self::notify), for a waker whose change a waiter's handshake on the
    /// waker's lock word orders (see `RawLock::handshake`): a plain load of `sleepers`
    /// suffices there, and keeps the put and get paths of the ring free of another RMW.
    #[inline]
    pub(crate) fn notify_after_handshake(&self, n: u32) {
        if self.sleepers.load(Ordering::Acquire) > 0 {
            self.wake(n);
        }
    }

    /// Wakes every sleeper, if any are counted.
    #[inline]
    pub(crate) fn notify_all(&self) {
        self.notify(i32::MAX as u32);
    }

    #[cold]
    fn wake(&self, n: u32) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(&self.seq, n);
    }
}

/// The sleeper-counted futex wait, the one place it is written: announces the caller in
/// `sleepers` (in steps of `unit`), takes the last look (`ready`), sleeps while `word` holds
/// `expected` (for `timeout` at most; for ever when `None`), and withdraws. Returns what `ready`
/// said. Wakers read `sleepers` after changing what `ready` looks at, and wake only if it is
/// not zero; see [`WaitWord`] for why no wake-up is lost.
pub(crate) fn sleep_unless(
    word: &AtomicU32,
    expected: u32,
    sleepers: &AtomicU32,
    unit: u32,
    timeout: Option<Duration>,
    ready: impl FnOnce() -> bool,
) -> bool {
    // SYNC(sleepers-rmw)
    sleepers.fetch_add(unit, Ordering::AcqRel);
    let ready = ready();
    // A deliberately broken build for the loom models, which must then fail (`.ci/run`).
    let ready = ready && !primitive::mutant("skip-last-look");
    if !ready {
        // Woken, AGAIN (the word moved), TIMEDOUT: the caller looks again in every case.
        let _ = sys::futex_wait(word, expected, timeout);
    }
    sleepers.fetch_sub(unit, Ordering::AcqRel);
    ready
}

/// Wakes up to `n` sleepers of `word` if `sleepers` counts any; for primitives whose futex word
/// is their state itself (the waker changed it before calling this).
#[inline]
pub(crate) fn wake_sleepers(word: &AtomicU32, sleepers: &AtomicU32, n: u32) {
    // SYNC(sleepers-rmw): an RMW, so that a sleeper's announce either comes first or reads
    // from it (see `WaitWord`).
    // (A deliberately broken build for the loom models, which must then fail: `.ci/run`.)
    let counted = if primitive::mutant("plain-load") {
        sleepers.load(Ordering::Relaxed)
    } else {
        sleepers.fetch_add(0, Ordering::AcqRel)
    };
    if counted > 0 {
        sys::futex_wake(word, n);
    }
}

/// The deadline `timeout` from now; `None` (wait forever) if that overflows `Instant`.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Time left until `deadline`, `None` once it has passed; `Some(None)` means no deadline.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Option<Duration>> {
    match deadline {
        None => Some(None),
        Some(d) => {
            let now = Instant::now();
            if now >= d { None } else { Some(Some(d - now)) }
        }
    }
}

// Under loom every spin is a point where the model may switch threads: spin once, then sleep.
const SPIN_LIMIT: u32 = if cfg!(multiproc_loom) { 0 } else { 6 };
const YIELD_LIMIT: u32 = if cfg!(multiproc_loom) { 0 } else { 9 };

/// Exponential spin-then-yield backoff before sleeping, after crossbeam's `Backoff`. On a
/// machine with one CPU it skips the spinning and only yields: whoever it waits for needs that
/// CPU.
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self::starting_at(0)
    }

    /// A backoff whose first snooze already spins `2^step` times.
    pub(crate) fn starting_at(step: u32) -> Self {
        let step = if sys::single_cpu_machine() {
            SPIN_LIMIT + 1
        } else {
            step.min(SPIN_LIMIT)
        };
        Self { step }
    }

    /// Spins `2^step` times while `step <= SPIN_LIMIT`, then yields the CPU.
    pub(crate) fn snooze(&mut self) {
        if self.step <= SPIN_LIMIT {
            for _ in 0..(1u32 << self.step) {
                primitive::spin_loop();
            }
        } else {
            primitive::yield_now();
        }
        if self.step <= YIELD_LIMIT {
            self.step += 1;
        }
    }

    /// Whether spinning has stopped paying and it is time to sleep.
    pub(crate) fn is_completed(&self) -> bool {
        self.step > YIELD_LIMIT
    }
}

/// Bounds of a [`Spinner`]'s budgets, in nanoseconds. A budget that halves below the minimum
/// drops to zero.
const MIN_SPIN_NS: u32 = 500;
const MAX_SPIN_NS: u32 = 100_000;
const INITIAL_SPIN_NS: u32 = 20_000;
const MAX_YIELD_NS: u32 = 50_000;
const INITIAL_YIELD_NS: u32 = 10_000;
/// With a zero budget, one wait in this many still tries that phase for [`PROBE_NS`], to find
/// out whether it pays again.
const PROBE_EVERY: u32 = 16;
const PROBE_NS: u32 = 2_000;
/// Looks at the clock once per this many looks at the state while spinning.
const LOOKS_PER_CLOCK: u32 = 16;

/// The adaptive wait of a waiter before it sleeps, kept per object and per process.
///
/// Waking a sleeper costs a system call on the waker's side and, on a busy or virtual host,
/// tens of microseconds before the sleeper runs. A waiter that spins instead answers in the
/// time a cache line takes to move, but only while whoever it waits for runs on another CPU;
/// when that one waits for our CPU, yielding it lets it run at the cost of one system call,
/// with no wake call on its side. So a waiter spins, then yields, then sleeps, and each phase
/// has a budget that learns from outcomes: a phase that ends with the state ready doubles its
/// budget, one that runs out halves it, down to zero, after which only one wait in
/// [`PROBE_EVERY`] tries it briefly, to find out whether it pays again. Nothing spins on a
/// machine with one CPU.
///
/// The state lives in process memory (no other process can touch it) and is only a
/// statistic, so relaxed atomics of the standard library suffice, also in the loom build,
/// where nothing spins or yields.
#[derive(Debug)]
pub(crate) struct Spinner {
    spin: Budget,
    yield_: Budget,
}

impl Default for Spinner {
    fn default() -> Self {
        Self::new()
    }
}

/// One phase's adaptive budget (see [`Spinner`]).
#[derive(Debug)]
struct Budget {
    ns: std::sync::atomic::AtomicU32,
    waits: std::sync::atomic::AtomicU32,
    max: u32,
}

impl Budget {
    const fn new(initial: u32, max: u32) -> Self {
        Self {
            ns: std::sync::atomic::AtomicU32::new(initial),
            waits: std::sync::atomic::AtomicU32::new(0),
            max,
        }
    }

    /// The budget for this wait, `None` to skip the phase; and whether it is a probe.
    #[inline]
    fn take(&self) -> Option<(u32, bool)> {
        use std::sync::atomic::Ordering::Relaxed;
        match self.ns.load(Relaxed) {
            0 => {
                let n = self.waits.load(Relaxed).wrapping_add(1);
                self.waits.store(n, Relaxed);
                (n % PROBE_EVERY == 0).then_some((PROBE_NS, true))
            }
            ns => Some((ns, false)),
        }
    }

    /// The phase ended with the state ready.
    #[inline]
    fn paid(&self, budget: u32) {
        let grown = budget.saturating_mul(2).clamp(MIN_SPIN_NS, self.max);
        self.ns.store(grown, std::sync::atomic::Ordering::Relaxed);
    }

    /// The phase spent its budget in vain (a probe that fails leaves the budget at zero).
    fn wasted(&self, budget: u32, probe: bool) {
        if !probe {
            let shrunk = budget / 2;
            let next = if shrunk < MIN_SPIN_NS { 0 } else { shrunk };
            self.ns.store(next, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Spinner {
    pub(crate) const fn new() -> Self {
        Self {
            spin: Budget::new(INITIAL_SPIN_NS, MAX_SPIN_NS),
            yield_: Budget::new(INITIAL_YIELD_NS, MAX_YIELD_NS),
        }
    }

    /// Spins, then yields, until `ready` holds, the budgets are spent or `deadline` passes,
    /// looking at `ready` after every spin hint and every yield. Returns whether `ready` held;
    /// the caller sleeps if not.
    #[inline]
    pub(crate) fn spin(&self, deadline: Option<Instant>, mut ready: impl FnMut() -> bool) -> bool {
        if cfg!(multiproc_loom) {
            return false; // a wait measured by the clock would make a model's executions differ
        }
        if !sys::single_cpu_machine() {
            if let Some((budget, probe)) = self.spin.take() {
                match phase(budget, deadline, &mut ready, LOOKS_PER_CLOCK, || {
                    primitive::spin_loop()
                }) {
                    Phase::Ready => {
                        self.spin.paid(budget);
                        return true;
                    }
                    Phase::Spent => self.spin.wasted(budget, probe),
                    Phase::Deadline => return false,
                }
            }
        }
        if let Some((budget, probe)) = self.yield_.take() {
            match phase(budget, deadline, &mut ready, 1, primitive::yield_now) {
                Phase::Ready => {
                    self.yield_.paid(budget);
                    return true;
                }
                Phase::Spent => self.yield_.wasted(budget, probe),
                Phase::Deadline => {}
            }
        }
        false
    }
}

enum Phase {
    Ready,
    Spent,
    Deadline,
}

/// Runs `step` and looks at `ready` until it holds or `budget` ns (or the deadline) pass,
/// reading the clock once per `looks` steps. The first `looks` steps come before the first
/// clock read: a state that becomes ready that soon costs no clock read at all.
#[inline]
fn phase(
    budget: u32,
    deadline: Option<Instant>,
    ready: &mut impl FnMut() -> bool,
    looks: u32,
    mut step: impl FnMut(),
) -> Phase {
    let mut until: Option<(Instant, Instant)> = None;
    loop {
        for _ in 0..looks {
            step();
            if ready() {
                return Phase::Ready;
            }
        }
        let now = Instant::now();
        let (spent, until) = *until.get_or_insert_with(|| {
            let spent = now + Duration::from_nanos(u64::from(budget));
            (spent, deadline.map_or(spent, |d| d.min(spent)))
        });
        if now >= until {
            return if until == spent {
                Phase::Spent
            } else {
                Phase::Deadline
            };
        }
    }
}

/// First liveness probe after this long asleep; the interval then doubles up to the maximum.
/// (Never, within a loom model: the models have no dead threads, and a probe due by the clock
/// would make their executions differ.)
const FIRST_PROBE: Duration = if cfg!(multiproc_loom) {
    Duration::from_secs(3600)
} else {
    Duration::from_millis(10)
};
const MAX_PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// When this process last probed the peers of one object. A wait that gives up before its
/// first scheduled probe (a try, or a short timeout) probes once if this clock says the last
/// probe is older than [`FIRST_PROBE`]: a caller that polls with tries notices a dead peer,
/// and pays for at most one `/proc` read per peer and interval.
#[derive(Debug, Default)]
pub(crate) struct ProbeClock {
    /// Milliseconds since [`probe_epoch`], plus one; 0 for never.
    last: std::sync::atomic::AtomicU64,
}

fn probe_epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
}

impl ProbeClock {
    pub(crate) const fn new() -> Self {
        Self {
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Records a probe made now.
    pub(crate) fn mark(&self) {
        self.last
            .store(probe_epoch_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a give-up should probe: true (and the probe recorded) if none was made in the
    /// last [`FIRST_PROBE`]. Never within a loom model (see [`FIRST_PROBE`]).
    pub(crate) fn stale(&self) -> bool {
        if cfg!(multiproc_loom) {
            return false;
        }
        use std::sync::atomic::Ordering as O;
        let now = probe_epoch_ms();
        let last = self.last.load(O::Relaxed);
        let interval = FIRST_PROBE.as_millis() as u64;
        (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last
                .compare_exchange(last, now, O::Relaxed, O::Relaxed)
                .is_ok()
    }
}

/// Decides when a sleeping waiter checks whether the thread it waits for still lives, so that a
/// dead owner is noticed within [`MAX_PROBE_INTERVAL`] plus a little, while a long legitimate
/// wait costs a `/proc` read only five times a second.
pub(crate) struct Prober {
    next: Instant,
    interval: Duration,
    suspect: Option<(u32, ThreadId)>,
    probed: bool,
}

impl Prober {
    pub(crate) fn new() -> Self {
        Self {
            next: Instant::now() + FIRST_PROBE,
            interval: FIRST_PROBE,
            suspect: None,
            probed: false,
        }
    }

    /// For a wait that is about to time out without having probed at all (a try, or a timeout
    /// shorter than the first probe): makes one probe due now and returns true, once. Without
    /// it, a dead holder would make every short wait fail forever.
    pub(crate) fn last_chance(&mut self) -> bool {
        if self.probed {
            return false;
        }
        self.probed = true;
        self.next = Instant::now();
        true
    }

    /// Whether it is time to probe; advances the schedule when it is.
    pub(crate) fn due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next {
            return false;
        }
        self.interval = (self.interval * 2).min(MAX_PROBE_INTERVAL);
        self.next = now + self.interval;
        self.probed = true;
        true
    }

    /// Probes `owner` (seen in word value `word`) if one is due, and says whether it is dead.
    ///
    /// A thread that is gone or a zombie is dead at once. A thread id that now has another start
    /// time is dead only if a second probe, one interval later, sees the same word and the same
    /// owner: the first sighting may just be a new owner that has not written its start time yet.
    pub(crate) fn owner_is_dead(&mut self, word: u32, owner: ThreadId) -> bool {
        if !self.due() {
            return false;
        }
        match sys::probe_thread(owner) {
            Liveness::Alive => {
                self.suspect = None;
                false
            }
            Liveness::Gone => true,
            Liveness::Reused => {
                if self.suspect == Some((word, owner)) {
                    true
                } else {
                    self.suspect = Some((word, owner));
                    false
                }
            }
        }
    }

    /// How long to sleep before the next probe or the deadline; `None` if the deadline passed.
    pub(crate) fn sleep_budget(&self, deadline: Option<Instant>) -> Option<Duration> {
        let now = Instant::now();
        let until = match deadline {
            Some(d) if now >= d => return None,
            Some(d) => d.min(self.next),
            None => self.next,
        };
        Some(
            until
                .saturating_duration_since(now)
                .max(Duration::from_micros(20)),
        )
    }
}
