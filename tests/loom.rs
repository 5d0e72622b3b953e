//! A loom model of the ring protocol in `src/channel/ring.rs`: publish and free positions, the
//! sleeper counts and sequence words, and the futex wait/wake pairs, with every atomic at the
//! ordering the ring uses. loom explores the interleavings; a lost wake-up shows up as a
//! deadlock (every thread asleep), a torn or misordered message as a failed assertion.
//!
//! The ring's spinning phase and its timed sleeps are left out on purpose: a model that only
//! ever sleeps without timeout is the strictest test of the wake-up protocol.
//!
//! The publishing stores (`tail` by a producer, `head` by a consumer) are plain release stores.
//! What makes a sleeper and a publisher see each other is the lock word of the publisher's side:
//! the publisher unlocks with an acquire-release swap after its store, and the sleeper, after
//! bumping the sleeper count, does an acquire-release no-op RMW on that word (`handshake`)
//! before its last look at the position. The two RMWs are ordered in the word's modification
//! order, so one of them synchronises with the other. The model's locks are atomic words with
//! exactly those operations (loom models RMW ordering exactly; its `SeqCst` is only `AcqRel`,
//! which the protocol no longer relies on).
//!
//! ```text
//! RUSTFLAGS="--cfg multiproc_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --test loom --target-dir target/loom
//! ```
#![cfg(multiproc_loom)]

use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// Stand-in for a shared futex word: `wait` sleeps while the word holds `expected`, checked
/// under the same lock that `wake` takes, as the kernel checks under its hash-bucket lock.
struct Futex {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Futex {
    fn new() -> Self {
        Self {
            generation: Mutex::new(0),
            cv: Condvar::new(),
        }
    }

    fn wait(&self, word: &AtomicU32, expected: u32) {
        let mut g = self.generation.lock().unwrap();
        if word.load(Ordering::SeqCst) != expected {
            return;
        }
        let start = *g;
        while *g == start {
            g = self.cv.wait(g).unwrap();
        }
    }

    fn wake(&self) {
        *self.generation.lock().unwrap() += 1;
        self.cv.notify_all();
    }
}

/// A futex word with its sleeper count, as `WaitLine` in the ring.
struct WaitLine {
    seq: AtomicU32,
    sleepers: AtomicU32,
    futex: Futex,
}

impl WaitLine {
    fn new() -> Self {
        Self {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            futex: Futex::new(),
        }
    }

    /// The waker's side, after its publishing store and its unlock: wake only if someone
    /// sleeps.
    fn notify(&self) {
        if self.sleepers.load(Ordering::Acquire) > 0 {
            self.seq.fetch_add(1, Ordering::SeqCst);
            self.futex.wake();
        }
    }

    /// The sleeper's side: sleep unless `changed()` says the awaited position already moved,
    /// looking after a handshake on the publishers' lock.
    fn sleep_unless(&self, publishers: &SpinLock, changed: impl Fn() -> bool) {
        let seq = self.seq.load(Ordering::SeqCst);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        publishers.handshake();
        if !changed() {
            self.futex.wait(&self.seq, seq);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The ring's lock word, reduced to what the protocol uses: acquire by compare-and-swap,
/// release by an acquire-release swap, and the no-op RMW of `RawLock::handshake`.
struct SpinLock {
    word: AtomicU32,
}

impl SpinLock {
    fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
        }
    }

    fn lock(&self) {
        while self
            .word
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            thread::yield_now();
        }
    }

    fn unlock(&self) {
        self.word.swap(0, Ordering::AcqRel);
    }

    fn handshake(&self) {
        self.word.fetch_add(0, Ordering::AcqRel);
    }
}

const CAP: u64 = 1;

struct Ring {
    tail: AtomicU64,
    head: AtomicU64,
    slots: [AtomicU64; CAP as usize],
    put_lock: SpinLock,
    get_lock: SpinLock,
    data: WaitLine,
    space: WaitLine,
}

impl Ring {
    fn new() -> Self {
        Self {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            slots: [AtomicU64::new(0)],
            put_lock: SpinLock::new(),
            get_lock: SpinLock::new(),
            data: WaitLine::new(),
            space: WaitLine::new(),
        }
    }

    fn put(&self, value: u64) {
        loop {
            self.put_lock.lock();
            let observed_head = self.head.load(Ordering::Acquire);
            let tail = self.tail.load(Ordering::Relaxed);
            if tail - observed_head < CAP {
                self.slots[(tail % CAP) as usize].store(value, Ordering::Relaxed);
                self.tail.store(tail + 1, Ordering::Release);
                self.put_lock.unlock();
                self.data.notify();
                return;
            }
            self.put_lock.unlock();
            self.space.sleep_unless(&self.get_lock, || {
                self.head.load(Ordering::Acquire) != observed_head
            });
        }
    }

    fn get(&self) -> u64 {
        loop {
            let observed_tail = self.tail.load(Ordering::Acquire);
            if observed_tail != self.head.load(Ordering::Acquire) {
                self.get_lock.lock();
                let head = self.head.load(Ordering::Relaxed);
                let tail = self.tail.load(Ordering::Acquire);
                if head != tail {
                    let v = self.slots[(head % CAP) as usize].load(Ordering::Relaxed);
                    self.head.store(head + 1, Ordering::Release);
                    self.get_lock.unlock();
                    self.space.notify();
                    return v;
                }
                self.get_lock.unlock();
                continue;
            }
            self.data.sleep_unless(&self.put_lock, || {
                self.tail.load(Ordering::Acquire) != observed_tail
            });
        }
    }
}

#[test]
fn one_producer_one_consumer_no_lost_wakeup() {
    loom::model(|| {
        let ring = Arc::new(Ring::new());
        let r = ring.clone();
        let producer = thread::spawn(move || {
            for v in 1..=3 {
                r.put(v);
            }
        });
        for v in 1..=3 {
            assert_eq!(ring.get(), v);
        }
        producer.join().unwrap();
    });
}

#[test]
fn two_producers_one_consumer_per_producer_order() {
    loom::model(|| {
        let ring = Arc::new(Ring::new());
        let producers: Vec<_> = [10u64, 20]
            .into_iter()
            .map(|base| {
                let r = ring.clone();
                thread::spawn(move || {
                    r.put(base + 1);
                    r.put(base + 2);
                })
            })
            .collect();
        let mut last = [10u64, 20];
        for _ in 0..4 {
            let v = ring.get();
            let i = usize::from(v > 20);
            assert_eq!(v, last[i] + 1, "per-producer order broken");
            last[i] = v;
        }
        for p in producers {
            p.join().unwrap();
        }
    });
}

#[test]
fn one_producer_two_consumers_each_message_once() {
    loom::model(|| {
        let ring = Arc::new(Ring::new());
        let r = ring.clone();
        let producer = thread::spawn(move || {
            r.put(1);
            r.put(2);
        });
        let r = ring.clone();
        let other = thread::spawn(move || r.get());
        let mine = ring.get();
        let theirs = other.join().unwrap();
        producer.join().unwrap();
        let mut got = [mine, theirs];
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}
