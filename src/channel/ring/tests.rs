//! A hostile peer: bytes written straight into a live queue's shared state.
#![allow(unsafe_code)]
//! # Safety
//! `word` forms a reference to an atomic inside a live ring's state, as a peer would.

use super::layout::{STATE_LEN, SideLine, pack, unpack};
use super::*;
use crate::primitive::AtomicU64;
use crate::sync::raw_lock::RawLock;
use crate::{PutTimeoutError, Queue, TryGetError, TryPutError};
use std::time::Duration;

type Pair = (crate::Sender<u64>, crate::Receiver<u64>);

fn queue(messages: usize) -> Pair {
    Queue::<u64>::builder()
        .anonymous()
        .capacity(messages)
        .max_bytes(1024)
        .create()
        .unwrap()
        .split()
        .unwrap()
}

/// The shared word at byte `offset` of the ring state, as a peer sees it.
fn word(ring: &Ring, offset: usize) -> &AtomicU64 {
    assert!(offset % 8 == 0 && offset + 8 <= STATE_LEN);
    let at = ring.state.as_ptr().cast::<u8>().wrapping_add(offset);
    // SAFETY: `offset` is an 8-aligned offset inside the RingState, which is all atomics
    // and lives as long as `ring`.
    unsafe { &*at.cast::<AtomicU64>() }
}

/// Issue 8, bug 2: an odd tail made a put store its record header through a misaligned
/// pointer, up to 3 bytes past the end of the data region.
#[test]
fn misaligned_tail_is_corrupted() {
    let (tx, _rx) = queue(8);
    let ring = tx.ring();
    let near_end = ring.cap - 3;
    // The position and the producers' copy of it (a put reads the copy).
    ring.st()
        .tail
        .pos
        .store(pack(0, near_end), Ordering::Relaxed);
    ring.st()
        .put_side
        .pos
        .store(pack(0, near_end), Ordering::Relaxed);
    ring.st()
        .head
        .pos
        .store(pack(0, near_end), Ordering::Relaxed);
    assert!(matches!(tx.try_put(7), Err(TryPutError::Corrupted(7, _))));
    assert!(matches!(
        tx.put_timeout(7, Duration::from_millis(10)),
        Err(PutTimeoutError::Corrupted(7, _))
    ));
}

/// Issue 8, bug 2: an odd head made a get read a header through a misaligned pointer
/// before it reported `Corrupted`.
#[test]
fn misaligned_head_is_corrupted() {
    let (tx, rx) = queue(8);
    tx.put(1).unwrap();
    let ring = tx.ring();
    ring.st().head.pos.store(pack(0, 4), Ordering::Relaxed);
    ring.st().tail.pos.store(pack(1, 4 + 16), Ordering::Relaxed);
    assert!(matches!(rx.try_get(), Err(TryGetError::Corrupted(_))));
}

/// Issue 8, bug 3: the cached copies of the other side's position lived in shared memory,
/// where a peer could make them lead the real position: puts then overwrote unread
/// messages and returned `Ok`. Every word of both side lines but the lock words (and the put
/// side's copy of `tail`, a position in its own right) is scribbled; the queue must still give
/// back exactly what went in.
#[test]
fn scribbled_side_lines_lose_no_message() {
    let (tx, rx) = queue(4);
    let ring = tx.ring();
    let lock_words = size_of::<RawLock>();
    let scribble = |ring: &Ring| {
        // Where the other side's position might be kept: the tail (a head that says "all
        // read") and a tail three messages ahead (stale bytes to read).
        let tail = ring.st().tail.pos.load(Ordering::Relaxed);
        let (tm, tp) = unpack(tail);
        let lead = pack(tm.wrapping_add(3), tp.wrapping_add(48));
        for side in [&ring.st().put_side, &ring.st().get_side] {
            let base = side as *const SideLine as usize - ring.state.as_ptr() as usize;
            // The put side's copy of `tail` is a position, like `tail` itself: skipped.
            let first = if std::ptr::eq(side, &ring.st().put_side) {
                lock_words + 8
            } else {
                lock_words
            };
            for off in (base + first..base + size_of::<SideLine>()).step_by(8) {
                let v = if off % 16 == 0 { tail } else { lead };
                word(ring, off).store(v, Ordering::Relaxed);
            }
        }
    };
    for round in 0..20u64 {
        scribble(ring);
        let mut put = 0;
        while tx.try_put(round * 100 + put).is_ok() {
            put += 1;
            scribble(ring);
            assert!(put <= 4, "more messages accepted than the queue holds");
        }
        assert_eq!(put, 4);
        for i in 0..4 {
            scribble(ring);
            assert_eq!(rx.try_get(), Ok(round * 100 + i));
        }
        assert_eq!(rx.try_get(), Err(TryGetError::Empty));
    }
}

/// Issue 8, bug 4: cloning a handle attached a new registration, and panicked when the
/// peer table was full or overwritten.
#[test]
fn clone_with_a_scribbled_peer_table_does_not_panic() {
    let (tx, rx) = queue(4);
    let ring = tx.ring();
    for p in &ring.st().peers {
        // Process 1 (init) is always alive, so nothing can be reclaimed.
        p.pid.store(1, Ordering::Relaxed);
        p.start.store(0, Ordering::Relaxed);
    }
    let tx2 = tx.clone();
    let rx2 = rx.clone();
    tx2.put(5).unwrap();
    assert_eq!(rx2.get_timeout(Duration::from_secs(5)), Ok(5));
    drop((tx2, rx2));
    tx.put(6).unwrap();
    assert_eq!(rx.get_timeout(Duration::from_secs(5)), Ok(6));
}

/// A producer that died between publishing `tail` and updating its copy on the put line left
/// the copy behind: the next producer takes the put lock over, and must then read `tail`
/// itself, or it would write over the message just published. (Not under Miri: finding the
/// holder dead reads `/proc`.)
#[test]
#[cfg_attr(miri, ignore)]
fn a_producer_that_died_before_updating_its_copy_loses_no_message() {
    let (tx, rx) = queue(4);
    let ring = tx.ring();
    let base = &ring.st().put_side as *const SideLine as usize - ring.state.as_ptr() as usize;
    let copy = base + size_of::<RawLock>();
    let stale = word(ring, copy).load(Ordering::Relaxed);
    tx.put(1).unwrap();
    // As if the producer of message 1 had died holding the lock, before updating its copy.
    let dead = std::thread::spawn(|| crate::sys::current_thread().tid)
        .join()
        .unwrap();
    word(ring, copy).store(stale, Ordering::Relaxed);
    // SAFETY: the lock word is the first field of the `#[repr(C)]` `RawLock` at `base`, an
    // `AtomicU32` inside the ring state, which lives as long as `ring`.
    let lock_word = unsafe {
        &*ring
            .state
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(base)
            .cast::<crate::primitive::AtomicU32>()
    };
    lock_word.store(dead, Ordering::Relaxed);
    tx.put_timeout(2, Duration::from_secs(5)).unwrap();
    assert_eq!(rx.try_get(), Ok(1));
    assert_eq!(rx.try_get(), Ok(2));
    assert_eq!(rx.try_get(), Err(TryGetError::Empty));
}

/// As above, with a ring too full for the put that takes the lock over: it publishes nothing,
/// so it must repair the copy itself, or the next (clean) holder would work from the stale one.
#[test]
#[cfg_attr(miri, ignore)]
fn a_takeover_that_publishes_nothing_still_repairs_the_copy() {
    let (tx, rx) = queue(1);
    let ring = tx.ring();
    let base = &ring.st().put_side as *const SideLine as usize - ring.state.as_ptr() as usize;
    let copy = base + size_of::<RawLock>();
    let stale = word(ring, copy).load(Ordering::Relaxed);
    tx.put(1).unwrap();
    let dead = std::thread::spawn(|| crate::sys::current_thread().tid)
        .join()
        .unwrap();
    word(ring, copy).store(stale, Ordering::Relaxed);
    // SAFETY: the lock word is the first field of the `#[repr(C)]` `RawLock` at `base`, an
    // `AtomicU32` inside the ring state, which lives as long as `ring`.
    let lock_word = unsafe {
        &*ring
            .state
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(base)
            .cast::<crate::primitive::AtomicU32>()
    };
    lock_word.store(dead, Ordering::Relaxed);
    // One message fills this ring: the put that takes the lock over finds no room.
    assert!(matches!(
        tx.put_timeout(2, Duration::from_millis(300)),
        Err(PutTimeoutError::Timeout(2))
    ));
    assert_eq!(rx.try_get(), Ok(1));
    tx.put_timeout(3, Duration::from_secs(5)).unwrap();
    assert_eq!(rx.try_get(), Ok(3));
    assert_eq!(rx.try_get(), Err(TryGetError::Empty));
}

/// The state word is foreign: whatever a peer writes there, puts and gets answer (no panic,
/// no hang), as the table on `ConfigLine` says. Values no version of this crate writes read
/// as shut down: puts are refused, gets drain. A peer that writes the immediate bits without
/// dropping the queued messages leaves them to the gets' fast path; a get that finds the ring
/// empty fails at once.
#[test]
fn any_state_word_is_read_safely() {
    use super::layout::{CLOSED, IMMEDIATE, Lifecycle, SHUT_DOWN};
    use crate::{GetError, GetTimeoutError};
    let values = [
        CLOSED,
        SHUT_DOWN,
        SHUT_DOWN | CLOSED,
        SHUT_DOWN | IMMEDIATE,
        SHUT_DOWN | IMMEDIATE | CLOSED,
        IMMEDIATE,
        IMMEDIATE | CLOSED,
        8,
        0x8000_0000,
        0xdead_beef,
        u32::MAX,
    ];
    let wait = Duration::from_millis(20);
    for value in values {
        let (tx, rx) = queue(4);
        tx.put(1).unwrap();
        let ring = tx.ring();
        ring.st().config.state.store(value, Ordering::Relaxed);
        let life = Lifecycle::of(value);
        assert_eq!(ring.is_closed(), value & CLOSED != 0, "{value:#x}");
        assert_eq!(tx.is_shutdown(), life != Lifecycle::Closed, "{value:#x}");
        match life {
            Lifecycle::Open => unreachable!("every value here is nonzero"),
            Lifecycle::Closed => {
                assert_eq!(tx.try_put(2), Err(TryPutError::Closed(2)));
                assert_eq!(tx.put(2), Err(crate::PutError::Closed(2)));
                assert_eq!(rx.try_get(), Ok(1));
                assert_eq!(rx.try_get(), Err(TryGetError::Disconnected));
                assert_eq!(rx.get(), Err(GetError::Disconnected));
            }
            Lifecycle::ShutDown | Lifecycle::ShutDownImmediate => {
                assert_eq!(tx.try_put(2), Err(TryPutError::ShutDown(2)), "{value:#x}");
                assert_eq!(
                    tx.put_timeout(2, wait),
                    Err(PutTimeoutError::ShutDown(2)),
                    "{value:#x}"
                );
                assert_eq!(tx.put(2), Err(crate::PutError::ShutDown(2)), "{value:#x}");
                assert_eq!(rx.try_get(), Ok(1), "{value:#x}");
                assert_eq!(rx.try_get(), Err(TryGetError::ShutDown), "{value:#x}");
                assert_eq!(rx.get_timeout(wait), Err(GetTimeoutError::ShutDown));
                assert_eq!(rx.get(), Err(GetError::ShutDown));
            }
        }
        assert!(rx.poll(wait), "{value:#x}: a get would return at once");
        // Our own shutdown on top of the scribble: idempotent, and immediate drops nothing
        // that is not there.
        tx.shutdown();
        tx.shutdown_immediate();
        assert!(rx.is_shutdown());
        assert_eq!(rx.try_get(), Err(TryGetError::ShutDown));
        assert_eq!(
            ring.unfinished(),
            1,
            "{value:#x}: the one taken is a task in flight"
        );
        // A peer that clears the word reopens the queue: denial of service, nothing worse.
        ring.st().config.state.store(0, Ordering::Relaxed);
        tx.put(3).unwrap();
        assert_eq!(rx.try_get(), Ok(3));
    }
}

/// An immediate shutdown drops the queued messages and counts them as done tasks, but not the
/// ones a get took before (those stay unfinished until `task_done`); a scribbled tail far ahead
/// makes it count no more than the unfinished tasks, and a scribbled done count makes it
/// neither panic nor count more than what it dropped.
#[test]
fn an_immediate_shutdown_counts_only_the_dropped_tasks() {
    let (tx, rx) = queue(8);
    for v in 0..5 {
        tx.put(v).unwrap();
    }
    assert_eq!(rx.try_get(), Ok(0));
    assert_eq!(rx.try_get(), Ok(1));
    let ring = tx.ring();
    assert_eq!(ring.unfinished(), 5);
    tx.shutdown_immediate();
    assert_eq!(rx.try_get(), Err(TryGetError::ShutDown));
    assert_eq!(ring.len(), 0);
    assert_eq!(ring.unfinished(), 2, "the two taken are still in flight");
    assert!(ring.task_done() && ring.task_done() && !ring.task_done());
    assert!(ring.join(Some(std::time::Instant::now())));

    // Scribbled: a tail far ahead of the head (a huge "queued" count), then a done count past
    // the published one.
    let (tx, rx) = queue(8);
    tx.put(1).unwrap();
    let ring = tx.ring();
    let (tm, tp) = unpack(ring.st().tail.pos.load(Ordering::Relaxed));
    ring.st()
        .tail
        .pos
        .store(pack(tm.wrapping_add(0x7fff_0000), tp), Ordering::Relaxed);
    tx.shutdown_immediate();
    assert_eq!(ring.unfinished(), 0);
    assert_eq!(rx.try_get(), Err(TryGetError::ShutDown));
    let (tx, _rx) = queue(8);
    tx.put(1).unwrap();
    let ring = tx.ring();
    ring.st().tasks.done.store(1000, Ordering::Relaxed);
    let before = ring.unfinished();
    tx.shutdown_immediate();
    // (Counts wrap: a done count past the published one reads as very many unfinished tasks,
    // of which the dropped message is one.)
    assert_eq!(before.wrapping_sub(ring.unfinished()), 1);
}

/// Batches read hostile records as a single get does: a record length past what was
/// published, a forged wrap marker, and a tail far ahead of the head are `Corrupted` for the
/// first record of a batch, and end a batch before them otherwise; nothing panics or reads
/// outside the ring, however large `max`.
#[test]
fn batches_stop_at_hostile_records() {
    let (tx, rx) = queue(64);
    let ring = tx.ring();
    tx.put_many(&[1, 2, 3]).unwrap();
    // The third record's header claims more than the ring holds (each of 1, 2, 3 is one
    // postcard byte).
    let third = 2 * super::layout::record_len(1);
    // SAFETY: `third` is the 8-aligned offset of a published record inside the region.
    unsafe { ring.header(third) }.store(u32::MAX - 1, Ordering::Relaxed);
    let mut out = Vec::new();
    assert_eq!(rx.try_get_many(&mut out, usize::MAX), Ok(2));
    assert_eq!(out, [1, 2]);
    assert!(matches!(
        rx.try_get_many(&mut out, usize::MAX),
        Err(TryGetError::Corrupted(_))
    ));
    // A tail far beyond the head, over records of zeros (empty messages, which do not decode):
    // every length is checked against what lies between head and tail and the end of the
    // region.
    let (tx, rx) = queue(64);
    let ring = tx.ring();
    let head = ring.st().head.pos.load(Ordering::Relaxed);
    let (hm, hp) = unpack(head);
    ring.st().tail.pos.store(
        pack(hm.wrapping_add(1000), hp.wrapping_add(ring.cap)),
        Ordering::Relaxed,
    );
    let mut out = Vec::new();
    match rx.try_get_many(&mut out, usize::MAX) {
        Ok(n) => assert!(n <= (ring.cap / 8) as usize, "{n} records from one ring"),
        Err(e) => assert!(
            matches!(e, TryGetError::Corrupted(_) | TryGetError::Decode(_)),
            "{e:?}"
        ),
    }
}

/// Publishes a record as a hostile producer would: `header` as its header word, whatever it
/// claims, and `payload` (which must fit before the end of the region) as its bytes.
fn inject(ring: &Ring, header: u32, payload: &[u8]) {
    use super::layout::record_len;
    let tail = ring.st().tail.pos.load(Ordering::Relaxed);
    let (tm, tp) = unpack(tail);
    let off = tp & (ring.cap - 1);
    let rec = record_len(payload.len() as u32);
    assert!(off + rec <= ring.cap, "the test's record crosses the end");
    // SAFETY: `off` is the 8-aligned offset of free space inside the region (asserted above);
    // nobody else writes the ring while the test runs.
    unsafe { ring.header(off) }.store(header, Ordering::Relaxed);
    // SAFETY: as above: [off + 8, off + rec) lies inside the region.
    let mut room = unsafe { crate::segment::ForeignMut::new(ring.at(off + 8), payload.len()) };
    assert!(room.write_at(0, payload));
    let new = pack(tm.wrapping_add(1), tp.wrapping_add(rec));
    ring.st().tail.pos.store(new, Ordering::Release);
    ring.st().put_side.pos.store(new, Ordering::Relaxed);
}

/// A first fragment's payload: the total, then `chunk`.
fn first(total: u64, chunk: &[u8]) -> Vec<u8> {
    let mut p = total.to_le_bytes().to_vec();
    p.extend_from_slice(chunk);
    p
}

const F: u32 = super::layout::FRAG;
const FF: u32 = super::layout::FRAG | super::layout::FRAG_FIRST;

/// Hostile fragment headers: impossible totals and lengths are `Corrupted` (and the message
/// is dropped), orphans are skipped, a message whose producer moved on is dropped, and
/// zero-length fragments never hang a timed get; the queue then carries on.
#[test]
fn hostile_fragments() {
    let t = Duration::from_millis(20);
    let bound = Duration::from_secs(5);
    // A total above MAX_MESSAGE_LEN.
    let (tx, rx) = queue(64);
    let ring = tx.ring();
    inject(ring, FF | 16, &first(1 << 33, &[0; 8]));
    assert!(matches!(rx.try_get(), Err(TryGetError::Corrupted(_))));
    tx.put(7).unwrap();
    assert_eq!(rx.try_get(), Ok(7));
    // A total below the first chunk, and a first fragment too short to hold a total.
    inject(ring, FF | 16, &first(4, &[0; 8]));
    inject(ring, FF | 4, &[1, 2, 3, 4]);
    assert!(matches!(rx.try_get(), Err(TryGetError::Corrupted(_))));
    assert!(matches!(rx.try_get(), Err(TryGetError::Corrupted(_))));
    tx.put(8).unwrap();
    assert_eq!(rx.try_get(), Ok(8));
    // A total above the caller's buffer: the message stays.
    inject(ring, FF | 8, &first(5000, &[]));
    let mut small = [0u8; 16];
    assert_eq!(
        rx.get_bytes_into(&mut small),
        Err(crate::GetError::BufferTooSmall(5000))
    );
    assert_eq!(rx.len(), 1);
    // The rest of it never comes (nobody holds the put lock): a timed get drops it.
    let started = std::time::Instant::now();
    assert!(matches!(
        rx.get_timeout(t),
        Err(crate::GetTimeoutError::Timeout)
    ));
    assert!(started.elapsed() < bound);
    assert_eq!(rx.len(), 0);
    // A following fragment longer than what remains of the total.
    inject(ring, FF | 12, &first(6, &[1, 2, 3, 4]));
    inject(ring, F | 8, &[0; 8]);
    assert!(matches!(rx.try_get(), Err(TryGetError::Corrupted(_))));
    tx.put(9).unwrap();
    assert_eq!(rx.try_get(), Ok(9));
    // A length field past what was published.
    inject(ring, F | 800, &[0; 8]);
    assert!(matches!(rx.try_get(), Err(TryGetError::Corrupted(_))));
    let (tx, rx) = queue(64);
    let ring = tx.ring();
    // Orphans are skipped; a first fragment followed by a whole message is dropped; a
    // message in two fragments comes through (postcard's encoding of 300 is [172, 2]).
    inject(ring, F | 8, &[0; 8]);
    inject(ring, F, &[]);
    inject(ring, FF | 9, &first(4, &[1]));
    tx.put(10).unwrap();
    inject(ring, FF | 9, &first(2, &[172]));
    inject(ring, F | 1, &[2]);
    assert_eq!(rx.try_get(), Ok(10));
    assert_eq!(rx.try_get(), Ok(300));
    assert_eq!(rx.try_get(), Err(TryGetError::Empty));
    // Zero-length fragments that never complete the total: consumed, then the message is
    // dropped; a timed get returns in time.
    inject(ring, FF | 8, &first(8, &[]));
    for _ in 0..20 {
        inject(ring, F, &[]);
    }
    let started = std::time::Instant::now();
    assert!(matches!(
        rx.get_timeout(t),
        Err(crate::GetTimeoutError::Timeout)
    ));
    assert!(started.elapsed() < bound);
    tx.put(11).unwrap();
    assert_eq!(rx.try_get(), Ok(11));
}

/// A timed get cut short in the middle of a message keeps the get lock for its handle (see
/// `Resume`); an immediate shutdown through that handle or another one made from the same
/// queue, on the same thread, waited for that lock for good (its holder is alive: itself).
/// It lets the half-taken message go first.
#[test]
fn shutdown_immediate_after_a_get_cut_short() {
    for via_sender in [false, true] {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (tx, rx) = queue(64);
            let ring = tx.ring();
            // A producer in the middle of a message: it holds the put lock, one fragment is
            // out.
            let put = ring.st().put_side.lock.hold(None).unwrap();
            inject(ring, FF | 12, &first(100, &[1, 2, 3, 4]));
            assert!(matches!(
                rx.get_timeout(Duration::from_millis(20)),
                Err(crate::GetTimeoutError::Timeout)
            ));
            drop(put);
            if via_sender {
                tx.shutdown_immediate();
            } else {
                rx.shutdown_immediate();
            }
            assert!(matches!(rx.try_get(), Err(TryGetError::ShutDown)));
            assert_eq!(rx.len(), 0);
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("the get and the shutdown returned");
    }
}

/// Fills the whole region with fragment records, as a hostile producer would: zero-length
/// following fragments, after a first fragment of a long message at offset 0 if `message`.
/// Then, until `stop` (or 20 s), keeps `tail` a whole region ahead of `head`, so that a
/// consumer always finds records to go through and never one that ends a message.
fn endless_fragments(ring: &Ring, message: bool, stop: &std::sync::atomic::AtomicBool) {
    let mut at = 0;
    if message {
        // SAFETY: offset 0 is in the region and aligned; nobody else writes the region.
        unsafe { ring.header(0) }.store(FF | 16, Ordering::Relaxed);
        // SAFETY: [8, 24) lies inside the region (it has at least 64 bytes).
        let mut room = unsafe { crate::segment::ForeignMut::new(ring.at(8), 16) };
        assert!(room.write_at(0, &first(1 << 20, &[0; 8])));
        at = 24;
    }
    while at < ring.cap {
        // SAFETY: `at` is an 8-aligned offset inside the region.
        unsafe { ring.header(at) }.store(F, Ordering::Relaxed);
        at += 8;
    }
    let records = if message {
        ring.cap / 8 - 2
    } else {
        ring.cap / 8
    };
    let started = std::time::Instant::now();
    let mut rewritten = !message;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) {
        let (hm, hp) = unpack(ring.st().head.pos.load(Ordering::Acquire));
        if !rewritten && hp != 0 {
            // Past the first fragment: from now on it is a following one.
            // SAFETY: as above.
            unsafe { ring.header(0) }.store(F | 16, Ordering::Relaxed);
            rewritten = true;
        }
        let tail = pack(hm.wrapping_add(records), hp.wrapping_add(ring.cap));
        ring.st().tail.pos.store(tail, Ordering::Release);
        ring.st().put_side.pos.store(tail, Ordering::Relaxed);
        std::hint::spin_loop();
    }
}

/// A peer streaming fragments that never make a message (orphans, or a message that never
/// completes) used to keep a timed get going through them past its deadline for as long as
/// it streamed: the get looked at its deadline only when it found nothing published.
#[test]
// A thread streams into a 16 MiB region against wall-clock bounds: real time and memory that
// Miri's interpreter does not have (the fragment parsing it covers runs under Miri in
// `hostile_fragments`).
#[cfg(not(miri))]
fn endless_fragments_never_hold_a_timed_get() {
    use std::sync::atomic::AtomicBool;
    let bound = Duration::from_secs(5);
    for message in [false, true] {
        for timed in [false, true] {
            let (tx, rx) = Queue::<u64>::builder()
                .anonymous()
                .capacity(64)
                .max_bytes(1 << 24)
                .create()
                .unwrap()
                .split()
                .unwrap();
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                let injector = s.spawn(|| endless_fragments(tx.ring(), message, &stop));
                // Wait until the region is full of fragments.
                while tx.ring().st().tail.pos.load(Ordering::Acquire) == 0 {
                    std::thread::yield_now();
                }
                let started = std::time::Instant::now();
                if timed {
                    let t = Duration::from_millis(20);
                    assert!(matches!(
                        rx.get_timeout(t),
                        Err(crate::GetTimeoutError::Timeout)
                    ));
                    assert!(started.elapsed() >= t);
                } else {
                    assert_eq!(rx.try_get(), Err(TryGetError::Empty));
                    if !message {
                        // A read loan skips orphans as a get does.
                        assert!(matches!(rx.try_get_loan(), Err(TryGetError::Empty)));
                    }
                }
                let took = started.elapsed();
                stop.store(true, Ordering::Relaxed);
                injector.join().unwrap();
                assert!(took < bound, "message {message}, timed {timed}: {took:?}");
            });
        }
    }
}
