//! The lock benchmark: lock a process-shared mutex, increment a `u64` counter it guards, unlock;
//! one process alone, or two contending. Four mutexes do exactly this work, each with the
//! counter on a cache line of its own: multiproc's `Lock` through its own API, multiproc's
//! `RawLock` as the raw mutex of a `lock_api::Mutex`, and two references: a bare futex mutex
//! (the least a process-shared futex lock does) and glibc's process-shared pthread mutex.
//!
//! A measurement forks the contending processes after the mutex is made. Each warms up, then
//! times its share of the cycles; after they exit the lock must be free and the counter must
//! hold exactly the number of increments made, or the measurement fails.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Lock, RawLock};

use crate::mech::Fault;
use crate::model::LockCase;
use crate::run::{Sample, Span, mono_ns, region, run_delay_ns};
use crate::sys::{Line, Placement, Shm, Team, fail_with, futex_wait, futex_wake_one, pin_to};

/// Untimed cycles each process makes before it reports ready (the mappings touched, the
/// code paths warm).
pub const WARM: u64 = 1000;

/// The mutexes measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMech {
    /// `multiproc::Lock`: `lock()` returns a `LockResult<LockGuard>`.
    Lock,
    /// `lock_api::Mutex<multiproc::RawLock, _>` placed in shared memory.
    LockApi,
    /// Drepper's futex mutex, written here: the reference for what a futex lock costs.
    Futex,
    /// A glibc `pthread_mutex_t` with `PTHREAD_PROCESS_SHARED`.
    Pthread,
    /// A deliberately broken mutex (the bare futex mutex, breaking one increment in each
    /// process), to prove the count check catches it. Only with `--inject-fault`.
    Broken(Fault),
}

/// Every mutex, in table order.
pub const ALL: [LockMech; 4] = [
    LockMech::Lock,
    LockMech::LockApi,
    LockMech::Futex,
    LockMech::Pthread,
];

impl LockMech {
    /// The stable id used in the JSON and on the command line.
    pub fn id(self) -> &'static str {
        match self {
            LockMech::Lock => "mp-lock",
            LockMech::LockApi => "mp-lock-api",
            LockMech::Futex => "futex-mutex",
            LockMech::Pthread => "pthread-mutex",
            LockMech::Broken(Fault::Drop) => "broken-drop",
            LockMech::Broken(Fault::Duplicate) => "broken-duplicate",
            LockMech::Broken(Fault::Corrupt) => "broken-corrupt",
        }
    }

    /// The readable name.
    pub fn label(self) -> &'static str {
        match self {
            LockMech::Lock => "multiproc Lock",
            LockMech::LockApi => "lock_api::Mutex over RawLock",
            LockMech::Futex => "bare futex mutex (reference)",
            LockMech::Pthread => "pthread mutex, process-shared",
            LockMech::Broken(_) => "broken mutex (test)",
        }
    }

    /// A fresh unlocked mutex and its zeroed counter, in shared memory.
    fn make(self) -> Result<Box<dyn Counted>, String> {
        Ok(match self {
            LockMech::Lock => Box::new(MpLock {
                lock: Lock::new().map_err(|e| format!("Lock::new: {e}"))?,
                counter: Counter::new(),
            }),
            LockMech::LockApi => Box::new(ApiLock {
                mutex: Shm::new(ApiMutex::new(Line(0))),
            }),
            LockMech::Futex => Box::new(FutexLock {
                mutex: Shm::new(FutexMutex::default()),
                counter: Counter::new(),
            }),
            LockMech::Pthread => Box::new(PthreadLock {
                mutex: PthreadMutex::new()?,
                counter: Counter::new(),
            }),
            LockMech::Broken(fault) => Box::new(BrokenLock {
                inner: FutexLock {
                    mutex: Shm::new(FutexMutex::default()),
                    counter: Counter::new(),
                },
                fault,
                done: Cell::new(0),
            }),
        })
    }
}

/// A mutex and the counter it guards, in memory shared with children forked after it was made.
trait Counted {
    /// `n` cycles of lock, increment, unlock.
    fn increments(&self, n: u64) -> Result<(), String>;
    /// The counter, read under the lock; an error if the lock is still held. Called once every
    /// process that incremented it has exited.
    fn count(&self) -> Result<u64, String>;
}

const STILL_HELD: &str = "the lock is still held after every process finished";

/// A `u64` alone on its cache line, in its own shared mapping; only touched under a lock.
struct Counter(Shm<Line<UnsafeCell<u64>>>);

impl Counter {
    fn new() -> Self {
        Self(Shm::new(Line(UnsafeCell::new(0))))
    }

    /// Adds one.
    ///
    /// # Safety
    /// The caller holds the lock that guards this counter in every process.
    #[inline]
    unsafe fn increment(&self) {
        // SAFETY: the caller holds the guarding lock (contract above), so no other process or
        // thread reads or writes the counter; it is mapped as long as `self`.
        unsafe { *self.0.0.get() += 1 };
    }

    /// The value.
    ///
    /// # Safety
    /// As for [`Counter::increment`].
    unsafe fn get(&self) -> u64 {
        // SAFETY: as in `increment`.
        unsafe { *self.0.0.get() }
    }

    /// Sets the value.
    ///
    /// # Safety
    /// As for [`Counter::increment`].
    unsafe fn set(&self, value: u64) {
        // SAFETY: as in `increment`.
        unsafe { *self.0.0.get() = value };
    }
}

// ----------------------------------------------------------------------------------------
// multiproc

struct MpLock {
    lock: Lock,
    counter: Counter,
}

impl Counted for MpLock {
    fn increments(&self, n: u64) -> Result<(), String> {
        for _ in 0..n {
            let _guard = self
                .lock
                .lock()
                .map_err(|_| "Lock::lock: a holder died".to_string())?;
            // SAFETY: `_guard` holds the lock that guards the counter in every process.
            unsafe { self.counter.increment() };
        }
        Ok(())
    }

    fn count(&self) -> Result<u64, String> {
        let _guard = self.lock.try_lock().map_err(|_| STILL_HELD.to_string())?;
        // SAFETY: `_guard` holds the lock.
        Ok(unsafe { self.counter.get() })
    }
}

/// A `lock_api` mutex over multiproc's lock word; the counter it guards is on its own line.
type ApiMutex = lock_api::Mutex<RawLock, Line<u64>>;

struct ApiLock {
    mutex: Shm<ApiMutex>,
}

impl Counted for ApiLock {
    fn increments(&self, n: u64) -> Result<(), String> {
        for _ in 0..n {
            self.mutex.lock().0 += 1;
        }
        Ok(())
    }

    fn count(&self) -> Result<u64, String> {
        self.mutex
            .try_lock()
            .map(|g| g.0)
            .ok_or_else(|| STILL_HELD.to_string())
    }
}

// ----------------------------------------------------------------------------------------
// The bare futex mutex

/// Drepper's futex mutex ("Futexes Are Tricky", the version that sleeps after an exchange),
/// unlocking with a swap. No spinning, no owner, no poisoning: the least a lock shared between
/// processes can do.
///
/// `word` state table:
///
/// | value | meaning                                          |
/// |-------|--------------------------------------------------|
/// | `0`   | unlocked                                         |
/// | `1`   | locked, nobody waiting                           |
/// | `2`   | locked, waiters may be asleep: unlock wakes one  |
///
/// Uncontended, `lock` is one compare-and-swap and `unlock` one swap. The futex is shared (no
/// private flag), since other processes map the word.
#[derive(Default)]
struct FutexMutex {
    word: Line<AtomicU32>,
}

/// A sleeping waiter wakes after this long even without a wake (it never needs to).
const NAP: Duration = Duration::from_secs(1);

impl FutexMutex {
    #[inline]
    fn lock(&self) {
        if let Err(seen) = self
            .word
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        {
            self.lock_contended(seen);
        }
    }

    #[cold]
    fn lock_contended(&self, mut seen: u32) {
        // Whoever takes the lock from here on leaves 2, so its unlock wakes the next sleeper.
        if seen != 2 {
            seen = self.word.swap(2, Ordering::Acquire);
        }
        while seen != 0 {
            futex_wait(&self.word, 2, NAP);
            seen = self.word.swap(2, Ordering::Acquire);
        }
    }

    #[inline]
    fn unlock(&self) {
        if self.word.swap(0, Ordering::Release) == 2 {
            futex_wake_one(&self.word);
        }
    }
}

struct FutexLock {
    mutex: Shm<FutexMutex>,
    counter: Counter,
}

impl Counted for FutexLock {
    fn increments(&self, n: u64) -> Result<(), String> {
        for _ in 0..n {
            self.mutex.lock();
            // SAFETY: `lock` returned, so this process holds the mutex until `unlock`.
            unsafe { self.counter.increment() };
            self.mutex.unlock();
        }
        Ok(())
    }

    fn count(&self) -> Result<u64, String> {
        if self
            .mutex
            .word
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(STILL_HELD.into());
        }
        // SAFETY: the compare-and-swap above took the mutex.
        let n = unsafe { self.counter.get() };
        self.mutex.unlock();
        Ok(n)
    }
}

// ----------------------------------------------------------------------------------------
// pthread

/// A glibc `pthread_mutex_t` initialised with `PTHREAD_PROCESS_SHARED`, alone on its line in
/// a shared mapping (never moved after `pthread_mutex_init`).
struct PthreadMutex {
    mutex: Shm<Line<UnsafeCell<libc::pthread_mutex_t>>>,
}

#[inline]
fn pthread_result(what: &str, rc: libc::c_int) -> Result<(), String> {
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("{what}: {}", std::io::Error::from_raw_os_error(rc)))
    }
}

impl PthreadMutex {
    fn new() -> Result<Self, String> {
        let shm = Shm::new(Line(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER)));
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is writable storage for a mutexattr.
        let rc = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
        pthread_result("pthread_mutexattr_init", rc)?;
        // SAFETY: `attr` was initialised just above.
        let rc = unsafe {
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED)
        };
        let shared = pthread_result("pthread_mutexattr_setpshared", rc);
        // SAFETY: the mutex sits in shared memory that stays mapped, and in place, as long as
        // `shm`; nobody uses it yet; `attr` is initialised.
        let rc = unsafe { libc::pthread_mutex_init(shm.0.get(), attr.as_ptr()) };
        // SAFETY: `attr` is initialised and no longer needed (init copied what it holds).
        unsafe { libc::pthread_mutexattr_destroy(attr.as_mut_ptr()) };
        shared?;
        pthread_result("pthread_mutex_init", rc)?;
        Ok(Self { mutex: shm })
    }

    #[inline]
    fn lock(&self) -> Result<(), String> {
        // SAFETY: the mutex was initialised in `new` and stays mapped, unmoved, while `self`
        // lives.
        let rc = unsafe { libc::pthread_mutex_lock(self.mutex.0.get()) };
        pthread_result("pthread_mutex_lock", rc)
    }

    fn try_lock(&self) -> bool {
        // SAFETY: as in `lock`.
        unsafe { libc::pthread_mutex_trylock(self.mutex.0.get()) == 0 }
    }

    /// # Safety
    /// This thread locked the mutex.
    #[inline]
    unsafe fn unlock(&self) {
        // SAFETY: initialised and mapped as in `lock`; the caller holds it (contract above).
        unsafe { libc::pthread_mutex_unlock(self.mutex.0.get()) };
    }
}

impl Drop for PthreadMutex {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`; the processes that used it have exited (children leave
        // with `_exit`, which runs no destructor, so only the parent gets here).
        unsafe { libc::pthread_mutex_destroy(self.mutex.0.get()) };
    }
}

struct PthreadLock {
    mutex: PthreadMutex,
    counter: Counter,
}

impl Counted for PthreadLock {
    fn increments(&self, n: u64) -> Result<(), String> {
        for _ in 0..n {
            self.mutex.lock()?;
            // SAFETY: `lock` succeeded, so this process holds the mutex until `unlock`.
            unsafe {
                self.counter.increment();
            }
            // SAFETY: this thread locked the mutex just above.
            unsafe { self.mutex.unlock() };
        }
        Ok(())
    }

    fn count(&self) -> Result<u64, String> {
        if !self.mutex.try_lock() {
            return Err(STILL_HELD.into());
        }
        // SAFETY: `try_lock` took the mutex.
        let n = unsafe { self.counter.get() };
        // SAFETY: this thread locked the mutex just above.
        unsafe { self.mutex.unlock() };
        Ok(n)
    }
}

/// Which of its increments each process's broken mutex breaks (one of the warm-up).
const BREAK_AT: u64 = 50;

/// The bare futex mutex, breaking its [`BREAK_AT`]th increment in each process.
struct BrokenLock {
    inner: FutexLock,
    fault: Fault,
    /// Increments this process made (each process has its own copy after `fork`).
    done: Cell<u64>,
}

impl Counted for BrokenLock {
    fn increments(&self, n: u64) -> Result<(), String> {
        for _ in 0..n {
            self.done.set(self.done.get() + 1);
            self.inner.mutex.lock();
            let counter = &self.inner.counter;
            if self.done.get() != BREAK_AT {
                // SAFETY: `lock` returned, so this process holds the mutex until `unlock`.
                unsafe { counter.increment() };
            } else {
                // SAFETY: as above.
                let value = unsafe { counter.get() };
                let broken = match self.fault {
                    Fault::Drop => value,
                    Fault::Duplicate => value + 2,
                    // A bit no count reaches (set twice, it still shows).
                    Fault::Corrupt => (value + 1) | 1 << 40,
                };
                // SAFETY: as above.
                unsafe { counter.set(broken) };
            }
            self.inner.mutex.unlock();
        }
        Ok(())
    }

    fn count(&self) -> Result<u64, String> {
        self.inner.count()
    }
}

// ----------------------------------------------------------------------------------------
// The measurement

/// `total` cycles of lock, increment, unlock on a fresh `mech`, split between the processes of
/// `case` (one on the placement's child CPU, or two contending on its two CPUs or both on its
/// parent's CPU, the parent waiting asleep meanwhile). Each
/// process times its share after the others are ready; the figure is the time from the first
/// start to the last end divided by `total`.
pub fn measure(
    mech: LockMech,
    case: LockCase,
    total: u64,
    placement: Placement,
) -> Result<Sample, String> {
    let started = Instant::now();
    let total = total.max(1);
    let shared = mech.make()?;
    let (procs, placement) = match case {
        LockCase::Uncontended => (1, placement),
        LockCase::TwoCores => (2, placement),
        LockCase::OneCore => (2, placement.one_core()),
    };
    let share = |i: usize| total / procs as u64 + u64::from((i as u64) < total % procs as u64);
    let spans = Shm::new(<[Span; 2]>::default());
    let team = Team::spawn(procs, placement, |i, start| {
        // On two cores, the first process joins the (idle) parent's CPU.
        if case == LockCase::TwoCores
            && i == 0
            && let Some(cpu) = placement.parent
        {
            pin_to(cpu)?;
        }
        shared.increments(WARM)?;
        start.ready_and_wait()?;
        let delay0 = run_delay_ns();
        let t0 = mono_ns();
        shared.increments(share(i))?;
        let t1 = mono_ns();
        spans[i].record(t0, t1, run_delay_ns().saturating_sub(delay0));
        Ok(())
    });
    let mut team = team?;
    if let Err(e) = team.wait_ready() {
        return Err(fail_with(team, e));
    }
    team.go();
    team.join()?;
    let expected = procs as u64 * WARM + total;
    let count = shared.count()?;
    if count != expected {
        return Err(format!(
            "the counter holds {count} after {expected} locked increments"
        ));
    }
    let (elapsed, waited) = region(&spans[..procs]);
    Ok(Sample {
        ns_per_unit: elapsed as f64 / total as f64,
        wall_per_unit: started.elapsed().as_nanos() as f64 / total as f64,
        verified: count,
        // Two processes on one core wait for each other by design.
        waited_ns: if case == LockCase::OneCore {
            0.0
        } else {
            waited as f64
        },
    })
}
