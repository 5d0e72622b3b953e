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
