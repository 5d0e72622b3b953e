//! `lock_api::RawMutex` for `RawLock`: a `lock_api::Mutex` placed in a shared-memory block works
//! (the lock word is the one the cross-process tests of `Lock` exercise). Built only with the
//! `lock_api` feature.
#![cfg(feature = "lock_api")]
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use multiproc::{RawLock, SharedMemory};

type Mutex<T> = lock_api::Mutex<RawLock, T>;

#[test]
fn lock_api_mutex_in_shared_memory_counts_across_threads() {
    let shm = SharedMemory::create(4096).unwrap();
    let ptr = shm.as_ptr().cast::<Mutex<AtomicU64>>();
    assert!(ptr.is_aligned());
    // SAFETY: the block is 4096 zeroed bytes, page aligned; an all-zero `Mutex<RawLock, _>` is
    // an unlocked mutex around 0, and nothing else uses the block.
    let mutex: &Mutex<AtomicU64> = unsafe { &*ptr };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    let g = mutex.lock();
                    let v = g.load(Ordering::Relaxed);
                    g.store(v + 1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(mutex.lock().load(Ordering::Relaxed), 40_000);
    assert!(mutex.try_lock().is_some());
}

/// Review of issue 8: `lock` took over a lock whose holder thread had died, although a leaked
/// guard's `&mut T` outlives that thread: two `&mut` to the same data.
#[test]
fn a_leaked_guard_of_a_dead_thread_is_never_taken_over() {
    static MUTEX: Mutex<u64> = Mutex::const_new(<RawLock as lock_api::RawMutex>::INIT, 0);
    let leaked: &'static mut u64 = std::thread::spawn(|| lock_api::MutexGuard::leak(MUTEX.lock()))
        .join()
        .unwrap();
    // The thread that locked is gone; the `&mut u64` it leaked is alive here.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let g = MUTEX.lock();
        let _ = tx.send(*g);
    });
    // Several liveness probes (10 ms, then doubling) would have passed by now.
    let got = rx.recv_timeout(std::time::Duration::from_millis(500));
    *leaked += 1;
    assert!(got.is_err(), "the lock of a leaked guard was taken over");
    assert!(MUTEX.try_lock().is_none());
}
