//! Single-process tests of the ring, values and sync kit, written to run under Miri as well as
//! natively.
//!
//! Under Miri, which can map neither a memfd nor a POSIX shm object, every segment falls back to
//! process-local heap memory (`Backing::Heap`), so these tests drive the same header, ring, value
//! and lock code with threads of one process instead of processes. Natively they run over memfd
//! segments, as a quick smoke test. Loop counts are small under Miri and larger natively:
//!
//! ```text
//! MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-symbolic-alignment-check" \
//!     cargo +nightly miri test --lib --test miri -- --skip queue_bytes_wrap_around
//! MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-tree-borrows -Zmiri-disable-weak-memory-emulation" \
//!     cargo +nightly miri test --lib --test miri
//! ```
//!
//! (`.ci/run` runs both. With weak-memory emulation on, `queue_bytes_wrap_around` crashes Miri
//! itself: an atomic store to a 4-byte word that a non-atomic copy partly overwrote since its
//! last atomic store panics in Miri's `weak_memory.rs`, "cannot have empty store buffer when
//! previous write was atomic". The ring does exactly that when a payload ends inside an old
//! record header; it is not undefined behaviour.)
//!
//! Nothing here forks, spawns, reads `/proc`, or opens a segment by name or handle: Miri supports
//! none of that (a handle of a heap segment cannot be opened; see
//! `handles_of_heap_segments_cannot_be_opened`).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use multiproc::{
    Array, Barrier, BoundedSemaphore, Condition, Event, GetError, GetTimeoutError, Lock, LockGuard,
    OverReleaseError, Plain, PutTimeoutError, Queue, RLock, RawArray, RawValue, Semaphore,
    SharedObject, TryGetError, TryLockError, TryPutError, Value,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `miri` iterations under Miri, `native` otherwise.
const fn rounds(miri: usize, native: usize) -> usize {
    if cfg!(miri) { miri } else { native }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Tagged {
    producer: u32,
    seq: u32,
}

// ---------------------------------------------------------------------------------------------
// The ring: Queue, Sender/Receiver, Connection.

#[test]
fn queue_put_get_in_order_and_empty() {
    let q = Queue::<u64>::builder()
        .codec::<Plain>()
        .capacity(8)
        .max_bytes(256)
        .create()
        .unwrap();
    assert!(q.is_empty());
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
    for i in 0..5 {
        q.put(i * 7).unwrap();
    }
    assert_eq!(q.len(), 5);
    for i in 0..5 {
        assert_eq!(q.get().unwrap(), i * 7);
    }
    assert!(q.is_empty());
    assert!(matches!(
        q.get_timeout(Duration::from_millis(5)),
        Err(GetTimeoutError::Timeout)
    ));
}

#[test]
fn queue_full_hands_the_value_back() {
    let q = Queue::<u32>::builder()
        .codec::<Plain>()
        .capacity(3)
        .max_bytes(256)
        .create()
        .unwrap();
    for i in 0..3 {
        q.try_put(i).unwrap();
    }
    assert!(q.is_full());
    assert!(matches!(q.try_put(99), Err(TryPutError::Full(99))));
    assert!(matches!(
        q.put_timeout(98, Duration::from_millis(5)),
        Err(PutTimeoutError::Timeout(98))
    ));
    assert_eq!(q.get().unwrap(), 0);
    q.try_put(3).unwrap();
    assert_eq!(
        (0..3).map(|_| q.get().unwrap()).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

/// Messages of every length from 0 to the largest, many times round a small data region: the
/// ring wraps in slots and in bytes, and every byte comes back as it went in.
#[test]
fn queue_bytes_wrap_around() {
    const MAX_BYTES: usize = 256;
    let q = Queue::<u8>::builder()
        .codec::<Plain>()
        .capacity(4)
        .max_bytes(MAX_BYTES)
        .create()
        .unwrap();
    let largest = MAX_BYTES / 2 - 8;
    assert!(q.max_message_len() >= largest, "{}", q.max_message_len());
    let mut buf = vec![0u8; largest];
    for round in 0..rounds(60, 5_000) {
        // Up to three messages in flight, of lengths that walk all of 0..=largest.
        // (Lengths start at 1: see `empty_message_in_the_last_eight_bytes` for 0.)
        let lens = [
            1 + round % largest,
            1 + (round * 7 + 3) % largest,
            1 + (round * 13 + 1) % 40,
        ];
        let msgs: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(k, &len)| (0..len).map(|b| (b + round + k) as u8).collect())
            .collect();
        let mut sent = 0;
        for m in &msgs {
            match q.try_put_bytes(m) {
                Ok(()) => sent += 1,
                // Two large messages can exceed the bytes: the ring says so, it does not block.
                Err(TryPutError::Full(())) => break,
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        assert!(sent >= 1, "round {round}: an empty ring refused a message");
        for (k, m) in msgs.iter().take(sent).enumerate() {
            if k % 2 == 0 {
                assert_eq!(&q.get_bytes().unwrap(), m, "round {round}, message {k}");
            } else {
                let n = q.get_bytes_into(&mut buf).unwrap();
                assert_eq!(&buf[..n], &m[..], "round {round}, message {k}");
            }
        }
        assert!(q.is_empty());
    }
    assert_eq!(q.max_message_len(), multiproc::MAX_MESSAGE_LEN);
}

/// An empty message whose 8-byte record ends exactly at the end of the data region.
#[test]
fn empty_message_in_the_last_eight_bytes() {
    let q = Queue::<u8>::builder()
        .codec::<Plain>()
        .capacity(8)
        .max_bytes(64)
        .create()
        .unwrap();
    // Three 16-byte records move the tail to offset 48 of 64.
    for _ in 0..3 {
        q.put_bytes(&[7; 8]).unwrap();
        assert_eq!(q.get_bytes().unwrap(), [7; 8]);
    }
    q.put_bytes(&[]).unwrap(); // record at 48..56
    q.put_bytes(&[]).unwrap(); // record at 56..64: its (empty) payload starts at 64
    assert_eq!(q.get_bytes().unwrap(), []);
    assert_eq!(q.get_bytes().unwrap(), []);
    q.put_bytes(&[1]).unwrap();
    assert_eq!(q.get_bytes().unwrap(), [1]);
}

#[test]
fn queue_plain_struct_round_trip() {
    let q = Queue::<Tagged>::builder()
        .codec::<Plain>()
        .capacity(4)
        .max_bytes(128)
        .create()
        .unwrap();
    for seq in 0..rounds(40, 2_000) as u32 {
        let m = Tagged { producer: 3, seq };
        q.put(m).unwrap();
        assert_eq!(q.get().unwrap(), m);
    }
}

#[cfg(feature = "serde")]
#[test]
fn queue_serde_codec_round_trip() {
    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Job {
        Resize { path: String, width: u32 },
        Stop,
    }
    let q = Queue::<Job>::builder()
        .capacity(4)
        .max_bytes(512)
        .create()
        .unwrap();
    for i in 0..rounds(30, 2_000) {
        let job = Job::Resize {
            path: "x".repeat(i % 50),
            width: i as u32,
        };
        q.put(job.clone()).unwrap();
        q.put(Job::Stop).unwrap();
        assert_eq!(q.get().unwrap(), job);
        assert_eq!(q.get().unwrap(), Job::Stop);
    }
    q.put_bytes(&[0xff, 0xff, 0xff]).unwrap();
    assert!(matches!(q.get(), Err(GetError::Decode(_))));
}

/// Two producer threads and two consumer threads through a ring smaller than the traffic, so
/// both sides block on the futex: every message arrives exactly once, in order per producer.
#[test]
fn queue_threads_exactly_once_in_order() {
    const PRODUCERS: u32 = 2;
    let per = rounds(100, 20_000) as u32;
    let (tx, rx) = Queue::<Tagged>::builder()
        .codec::<Plain>()
        .capacity(4)
        .max_bytes(128)
        .create()
        .unwrap()
        .split()
        .unwrap();
    let seen: Vec<AtomicU32> = (0..PRODUCERS * per).map(|_| AtomicU32::new(0)).collect();
    thread::scope(|s| {
        for producer in 0..PRODUCERS {
            let tx = tx.clone();
            s.spawn(move || {
                for seq in 0..per {
                    tx.put(Tagged { producer, seq }).unwrap();
                }
            });
        }
        drop(tx);
        for _ in 0..2 {
            let rx = rx.clone();
            let seen = &seen;
            s.spawn(move || {
                let mut last = [None::<u32>; PRODUCERS as usize];
                loop {
                    match rx.get() {
                        Ok(m) => {
                            let l = &mut last[m.producer as usize];
                            assert!(l.is_none_or(|l| l < m.seq), "{l:?} then {m:?}");
                            *l = Some(m.seq);
                            let i = (m.producer * per + m.seq) as usize;
                            assert_eq!(seen[i].fetch_add(1, Ordering::Relaxed), 0, "{m:?}");
                        }
                        Err(GetError::Disconnected) => return,
                        Err(e) => panic!("get: {e}"),
                    }
                }
            });
        }
    });
    assert!(seen.iter().all(|n| n.load(Ordering::Relaxed) == 1));
    assert!(matches!(rx.try_get(), Err(TryGetError::Disconnected)));
}

#[cfg(feature = "serde")]
#[test]
fn pipe_ping_pong_between_threads() {
    let (a, b) = multiproc::pipe::<String>().unwrap();
    let n = rounds(20, 2_000);
    thread::scope(|s| {
        s.spawn(move || {
            for i in 0..n {
                let m = b.recv().unwrap();
                assert_eq!(m, format!("ping {i}"));
                b.send(format!("pong {i}")).unwrap();
            }
        });
        for i in 0..n {
            a.send(format!("ping {i}")).unwrap();
            assert_eq!(a.recv().unwrap(), format!("pong {i}"));
        }
    });
}

#[cfg(feature = "serde")]
#[test]
fn joinable_queue_join_waits_for_task_done() {
    let q = multiproc::JoinableQueue::<u32>::builder()
        .capacity(4)
        .max_bytes(256)
        .create()
        .unwrap();
    let n = rounds(10, 500) as u32;
    let done = AtomicU32::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..n {
                q.get().unwrap();
                done.fetch_add(1, Ordering::SeqCst);
                q.task_done().unwrap();
            }
        });
        for i in 0..n {
            q.put(i).unwrap();
        }
        q.join();
        assert_eq!(done.load(Ordering::SeqCst), n);
    });
    assert!(q.task_done().is_err());
}

// ---------------------------------------------------------------------------------------------
// Values and arrays.

#[test]
fn value_get_set_and_locked_increments_from_threads() {
    let v = Value::<u64>::new(5).unwrap();
    assert_eq!(v.get(), 5);
    v.set(0);
    let per = rounds(50, 25_000) as u64;
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..per {
                    *v.lock().unwrap() += 1;
                }
            });
        }
    });
    assert_eq!(v.get(), 3 * per);
    let g = v.lock().unwrap();
    let refused = thread::scope(|s| s.spawn(|| v.try_lock().is_err()).join().unwrap());
    assert!(
        refused,
        "try_lock succeeded while another thread held the value's lock"
    );
    drop(g);
    assert!(v.try_lock().is_ok());
}

#[test]
fn array_get_set_to_vec_and_guard() {
    let a = Array::<u32>::from_slice(&[1, 2, 3, 4]).unwrap();
    assert_eq!(a.len(), 4);
    assert_eq!(a.get(2), Some(3));
    assert_eq!(a.get(4), None);
    a.set(0, 10);
    assert_eq!(a.to_vec(), [10, 2, 3, 4]);
    let per = rounds(20, 10_000);
    thread::scope(|s| {
        for t in 0..2 {
            let a = &a;
            s.spawn(move || {
                for i in 0..per {
                    let mut g = a.lock().unwrap();
                    g[(i + t) % 4] += 1;
                }
            });
        }
    });
    assert_eq!(a.to_vec().iter().sum::<u32>(), 19 + 2 * per as u32);
    let z = Array::<u64>::zeroed(3).unwrap();
    assert_eq!(z.to_vec(), [0, 0, 0]);
}

#[test]
fn struct_value_round_trip() {
    let v = Value::<Tagged>::new(Tagged {
        producer: 1,
        seq: 2,
    })
    .unwrap();
    assert_eq!(
        v.get(),
        Tagged {
            producer: 1,
            seq: 2
        }
    );
    v.lock().unwrap().seq = 9;
    assert_eq!(v.get().seq, 9);
}

#[test]
fn raw_value_and_raw_array_atomics_from_threads() {
    let v = RawValue::<AtomicU64>::new(AtomicU64::new(0)).unwrap();
    let arr = RawArray::<AtomicU32>::zeroed(8).unwrap();
    let per = rounds(50, 50_000);
    thread::scope(|s| {
        for t in 0..3 {
            let (v, arr) = (&v, &arr);
            s.spawn(move || {
                for i in 0..per {
                    v.fetch_add(1, Ordering::Relaxed);
                    arr[(i + t) % 8].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(v.load(Ordering::SeqCst), 3 * per as u64);
    let total: u32 = arr.iter().map(|a| a.load(Ordering::SeqCst)).sum();
    assert_eq!(total, 3 * per as u32);
}

// ---------------------------------------------------------------------------------------------
// The sync kit.

#[test]
fn lock_excludes_threads_and_try_lock_fails_while_held() {
    let lock = Lock::new().unwrap();
    let inside = AtomicUsize::new(0);
    let count = AtomicU64::new(0);
    let per = rounds(50, 20_000);
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..per {
                    let _g = lock.lock().unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0);
                    // A non-atomic read-modify-write: only the lock makes it exact.
                    let c = count.load(Ordering::Relaxed);
                    count.store(c + 1, Ordering::Relaxed);
                    inside.fetch_sub(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(count.load(Ordering::Relaxed), 3 * per as u64);
    let g = lock.lock().unwrap();
    assert!(lock.is_locked());
    thread::scope(|s| {
        s.spawn(|| {
            assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
            assert!(matches!(
                lock.try_lock_for(Duration::from_millis(5)),
                Err(TryLockError::WouldBlock)
            ));
        });
    });
    drop(g);
    assert!(!lock.is_locked());
    assert!(lock.try_lock().is_ok());
}

#[test]
fn lock_guard_unlocked_lets_another_thread_in() {
    let lock = Lock::new().unwrap();
    let mut g = lock.lock().unwrap();
    let (r, relocked) = LockGuard::unlocked(&mut g, || {
        thread::scope(|s| s.spawn(|| lock.try_lock().is_ok()).join().unwrap())
    });
    assert!(r);
    assert!(relocked.is_ok());
    assert!(lock.is_locked());
    drop(g);
    assert!(!lock.is_locked());
}

#[test]
fn rlock_reenters_and_excludes_other_threads() {
    let rl = RLock::new().unwrap();
    let per = rounds(10, 5_000);
    let count = AtomicU64::new(0);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..per {
                    let _a = rl.lock().unwrap();
                    let _b = rl.lock().unwrap();
                    assert_eq!(rl.depth(), 2);
                    let c = count.load(Ordering::Relaxed);
                    count.store(c + 1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(count.load(Ordering::Relaxed), 2 * per as u64);
    let g = rl.lock().unwrap();
    thread::scope(|s| {
        s.spawn(|| assert!(matches!(rl.try_lock(), Err(TryLockError::WouldBlock))));
    });
    drop(g);
    assert!(!rl.is_locked());
}

#[test]
fn semaphore_admits_at_most_its_value() {
    let sem = Semaphore::new(2).unwrap();
    let inside = AtomicUsize::new(0);
    let max = AtomicUsize::new(0);
    let per = rounds(30, 5_000);
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..per {
                    sem.acquire();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    sem.release();
                }
            });
        }
    });
    let m = max.load(Ordering::SeqCst);
    assert!((1..=2).contains(&m), "saw {m} holders");
    assert_eq!(sem.get_value(), 2);
    assert!(sem.try_acquire() && sem.try_acquire());
    assert!(!sem.try_acquire_for(Duration::from_millis(5)));
    sem.release_n(2);
    assert_eq!(sem.get_value(), 2);
}

#[test]
fn bounded_semaphore_over_release_is_an_error() {
    let sem = BoundedSemaphore::new(2).unwrap();
    assert_eq!(sem.release(), Err(OverReleaseError));
    sem.acquire();
    assert!(sem.try_acquire());
    assert!(!sem.try_acquire());
    assert_eq!(sem.release(), Ok(()));
    assert_eq!(sem.release(), Ok(()));
    assert_eq!(sem.release(), Err(OverReleaseError));
    assert_eq!(sem.get_value(), 2);
}

#[test]
fn semaphore_release_wakes_a_blocked_thread() {
    let sem = Semaphore::new(0).unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| sem.acquire());
        thread::sleep(Duration::from_millis(10));
        sem.release();
        waiter.join().unwrap();
    });
    assert_eq!(sem.get_value(), 0);
}

#[test]
fn event_set_releases_waiters_and_timeouts_expire() {
    let ev = Event::new().unwrap();
    assert!(!ev.is_set());
    let t0 = Instant::now();
    assert!(!ev.wait_timeout(Duration::from_millis(10)));
    assert!(t0.elapsed() >= Duration::from_millis(10));
    thread::scope(|s| {
        let waiters: Vec<_> = (0..3).map(|_| s.spawn(|| ev.wait())).collect();
        thread::sleep(Duration::from_millis(10));
        ev.set();
        for w in waiters {
            w.join().unwrap();
        }
    });
    assert!(ev.is_set());
    assert!(ev.wait_timeout(Duration::ZERO));
    ev.clear();
    assert!(!ev.is_set());
}

/// Issue 8, bug 5: `set(); clear();` must release every waiter that was blocked when `set`
/// happened. (Without `/proc` we cannot see that the waiters sleep in the futex; we wait until
/// each has announced itself and then give them time to block.)
#[test]
fn event_set_then_clear_releases_blocked_waiters() {
    const WAITERS: usize = 3;
    let ev = Event::new().unwrap();
    for round in 0..rounds(3, 5) {
        let ready = AtomicUsize::new(0);
        let released: Vec<bool> = thread::scope(|s| {
            let waiters: Vec<_> = (0..WAITERS)
                .map(|_| {
                    s.spawn(|| {
                        ready.fetch_add(1, Ordering::SeqCst);
                        ev.wait_timeout(Duration::from_secs(30))
                    })
                })
                .collect();
            while ready.load(Ordering::SeqCst) < WAITERS {
                thread::yield_now();
            }
            thread::sleep(Duration::from_millis(if cfg!(miri) { 10 } else { 200 }));
            ev.set();
            ev.clear();
            waiters.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert!(
            released.iter().all(|&r| r),
            "round {round}: a waiter slept through set(); clear(): {released:?}"
        );
    }
}

#[test]
fn condition_hands_items_from_producer_to_consumers() {
    let cond = Condition::new().unwrap();
    let items = AtomicU32::new(0);
    let consumed = AtomicU32::new(0);
    let n = rounds(12, 3_000) as u32;
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let g = cond.lock().unwrap();
                    let (g, ok) = cond
                        .wait_for(
                            g,
                            || {
                                items.load(Ordering::Relaxed) > 0
                                    || consumed.load(Ordering::Relaxed) >= n
                            },
                            None,
                        )
                        .unwrap();
                    assert!(ok);
                    let have = items.load(Ordering::Relaxed);
                    if have == 0 {
                        drop(g);
                        return; // everything was consumed
                    }
                    items.store(have - 1, Ordering::Relaxed);
                    consumed.fetch_add(1, Ordering::Relaxed);
                    cond.notify_all(&g);
                }
            });
        }
        for _ in 0..n {
            let g = cond.lock().unwrap();
            items.fetch_add(1, Ordering::Relaxed);
            cond.notify_one(&g);
        }
        // Wait for the consumers to finish, then wake them to see it.
        let mut g = cond.lock().unwrap();
        while consumed.load(Ordering::Relaxed) < n {
            g = cond.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
        }
        cond.notify_all(&g);
    });
    assert_eq!(consumed.load(Ordering::Relaxed), n);
    assert_eq!(items.load(Ordering::Relaxed), 0);
    let g = cond.lock().unwrap();
    let (_g, notified) = cond.wait_timeout(g, Duration::from_millis(5)).unwrap();
    assert!(!notified);
}

#[test]
fn barrier_rounds_with_threads() {
    const PARTIES: u32 = 3;
    let barrier = Barrier::new(PARTIES).unwrap();
    let arrived = AtomicU32::new(0);
    let rounds = rounds(20, 2_000) as u32;
    thread::scope(|s| {
        for _ in 0..PARTIES {
            s.spawn(|| {
                let mut leaders = 0;
                for r in 0..rounds {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    let idx = barrier.wait().unwrap();
                    assert!(idx < PARTIES);
                    leaders += u32::from(idx == 0);
                    // Everyone of this round arrived before anyone left.
                    assert!(arrived.load(Ordering::SeqCst) >= (r + 1) * PARTIES);
                }
                leaders
            });
        }
    });
    assert_eq!(arrived.load(Ordering::SeqCst), rounds * PARTIES);
    assert!(!barrier.is_broken());
    assert!(barrier.wait_timeout(Duration::from_millis(5)).is_err());
    assert!(barrier.is_broken());
    barrier.reset();
    assert!(!barrier.is_broken());
}

// ---------------------------------------------------------------------------------------------
// Handles.

/// Under Miri a segment lives on the heap, where no other attachment can reach it: opening its
/// handle is an error, never undefined behaviour. Natively the same handle opens the memfd.
#[test]
fn handles_of_heap_segments_cannot_be_opened() {
    let v = RawValue::<AtomicU64>::new(AtomicU64::new(7)).unwrap();
    let other = RawValue::<AtomicU64>::from_handle(&v.handle());
    if cfg!(miri) {
        assert!(matches!(
            other,
            Err(multiproc::OpenError::NotInheritable(_))
        ));
        assert!(matches!(
            Lock::builder().named().create(),
            Err(multiproc::OpenError::Os(_))
        ));
    } else {
        let other = other.unwrap();
        other.fetch_add(1, Ordering::SeqCst);
        assert_eq!(v.load(Ordering::SeqCst), 8);
    }
}
