//! The two locks the lock benches compare, each guarding a plain `u64` counter on its own
//! cache line: a glibc process-shared `pthread_mutex_t` and a `multiproc::Lock`.
#![allow(unsafe_code)] // FFI to pthread, raw shared memory; see the SAFETY comments

use std::cell::UnsafeCell;

use multiproc::Lock;

use super::{Line, Shm};

/// A process-shared pthread mutex and the counter it protects, each on its own cache line
/// (as the counter of a `multiproc::Lock` or `Value` is on another line than the lock word).
#[repr(C)]
pub(crate) struct PthreadShared {
    mutex: Line<UnsafeCell<libc::pthread_mutex_t>>,
    counter: Line<UnsafeCell<u64>>,
}

impl PthreadShared {
    /// Maps one and initialises the mutex in place with `PTHREAD_PROCESS_SHARED`.
    pub(crate) fn new() -> Shm<Self> {
        let shm = Shm::new(Self {
            mutex: Line(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER)),
            counter: Line(UnsafeCell::new(0)),
        });
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is writable storage for a mutexattr.
        let rc = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: `attr` was initialised just above.
        let rc = unsafe {
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED)
        };
        assert_eq!(rc, 0);
        // SAFETY: the mutex sits in shared memory that stays mapped (and unmoved) as long as
        // `shm`; nobody uses it yet; `attr` is initialised.
        let rc = unsafe { libc::pthread_mutex_init(shm.mutex.get(), attr.as_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: `attr` is initialised and no longer needed.
        unsafe { libc::pthread_mutexattr_destroy(attr.as_mut_ptr()) };
        shm
    }

    pub(crate) fn lock(&self) {
        // SAFETY: the mutex was initialised in `new` and lives in mapped shared memory.
        let rc = unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
        debug_assert_eq!(rc, 0);
    }

    pub(crate) fn unlock(&self) {
        // SAFETY: as in `lock`; callers only unlock a mutex they locked.
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
        debug_assert_eq!(rc, 0);
    }

    /// `n` locked increments.
    pub(crate) fn increments(&self, n: u64) {
        for _ in 0..n {
            self.lock();
            // SAFETY: the mutex is held, so no other process or thread touches the counter.
            unsafe { *self.counter.get() += 1 };
            self.unlock();
        }
    }

    pub(crate) fn count(&self) -> u64 {
        // SAFETY: called only when no other process runs increments (child finished).
        unsafe { *self.counter.get() }
    }

    pub(crate) fn reset(&self) {
        // SAFETY: as in `count`.
        unsafe { *self.counter.get() = 0 };
    }
}

/// A plain counter guarded by a `multiproc::Lock` (the lock's own segment is inherited by the
/// forked child; the counter lives in a separate shared page, on its own line).
pub(crate) struct LockShared {
    pub(crate) lock: Lock,
    counter: Shm<Line<UnsafeCell<u64>>>,
}

impl LockShared {
    pub(crate) fn new() -> Self {
        Self {
            lock: Lock::new().expect("Lock::new"),
            counter: Shm::new(Line(UnsafeCell::new(0))),
        }
    }

    pub(crate) fn increments(&self, n: u64) {
        for _ in 0..n {
            let _guard = self.lock.lock().expect("no holder died");
            // SAFETY: the lock is held, so no other process or thread touches the counter.
            unsafe { *self.counter.get() += 1 };
        }
    }

    pub(crate) fn count(&self) -> u64 {
        // SAFETY: called only when no other process runs increments (child finished).
        unsafe { *self.counter.get() }
    }

    pub(crate) fn reset(&self) {
        // SAFETY: as in `count`.
        unsafe { *self.counter.get() = 0 };
    }
}
