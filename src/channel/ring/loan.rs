//! Loans: a put or a get whose record stays in the ring while the caller works on it.
//!
//! A [`PutLoan`] is a put cut in two: `loan_put` takes the put lock and reserves room for one
//! record, as `put_with` does, and hands the payload bytes to the caller; `publish` writes the
//! record header and stores `tail`. Dropped unpublished, it lets the lock go: the bytes are free
//! space again and nothing was ever visible. A [`GetLoan`] is a get cut in two: `loan_get`
//! takes the get lock and validates the record at the head, as `get_with` does; dropping the
//! loan frees the record (one `head` store) and wakes a producer.
//!
//! A loan holds its side's lock for its whole life, so each side stays one writer (or one
//! reader) at a time, as the ring's protocol requires. The lock is owned by the thread that
//! took it, so loans are neither `Send` nor `Sync`. A leaked loan (`mem::forget`) holds its
//! lock for good: the other processes on that side see a peer that never finishes, and their
//! timed calls time out. A process killed holding a loan leaves its lock to be taken over as
//! owner-died, and leaves what a put or a get killed at the same point leaves: an unpublished
//! record is nothing; an unreleased message stays at the head for the next consumer.
#![allow(unsafe_code)]
//! # Safety
//! A loan's payload range is what the ring's protocol hands to the lock holder: for a put, the
//! free space `reserve` found (between `tail` and `head + capacity`); for a get, the payload of
//! the record at the head, whose offset and length `record_at` checked against the data
//! region. The loan holds the lock and borrows the `Ring`, whose mapping lives as long as it,
//! so the range stays inside the mapping for the loan's life. The payload starts 8 bytes after
//! an 8-aligned record start in a 64-aligned data region, so it is 8-aligned.
//!
//! The bytes are still shared: another process that maps the queue can write them at any
//! time. So no `&[u8]` is formed over them: the loans give copies (`segment::foreign`), atomic
//! words, or raw pointers to `unsafe` callers.

use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use super::Ring;
use super::get::{GetFail, Kind, Waiter};
use super::large::{Overrun, Resume, first_fragment};
use super::layout::RECORD_HEADER;
use super::put::{FULL_BACKOFF_STEP, PutFail, advance};
use crate::primitive::Ordering;
use crate::segment::{Foreign, ForeignMut};
use crate::sync::raw_lock::Held;
use crate::sync::wait::{Backoff, Prober};

/// Room for one record, reserved under the put lock: nothing is visible until
/// [`publish`](Self::publish).
#[derive(Debug)]
pub(crate) struct PutLoan<'a> {
    ring: &'a Ring,
    /// `None` once published.
    held: Option<Held<'a>>,
    /// The tail the record goes at, and the head `reserve` measured the room against.
    tail: u64,
    observed_head: u64,
    /// Data offset of the record (its header), and how far `tail` moves past it.
    off: u32,
    total: u32,
    len: u32,
    /// The put lock belongs to this thread.
    _not_send: PhantomData<*const ()>,
}

/// The record at the head, held under the get lock: freed when the loan is dropped.
#[derive(Debug)]
pub(crate) struct GetLoan<'a> {
    ring: &'a Ring,
    held: Option<Held<'a>>,
    payload: *const u8,
    len: u32,
    /// The head past the record, and the tail it was read under.
    next: u64,
    tail: u64,
    /// The get lock belongs to this thread.
    _not_send: PhantomData<*const ()>,
}

impl Ring {
    /// Reserves room for a record of `len` payload bytes, waiting until `deadline` (`Some(now)`
    /// for a try, `None` forever), and holds the put lock until the loan is published or
    /// dropped. Fails as `put_with` does.
    pub(crate) fn loan_put(
        &self,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<PutLoan<'_>, PutFail> {
        if len > self.max_record() {
            return Err(PutFail::TooBig);
        }
        let len = len as u32;
        let mut backoff = Backoff::starting_at(FULL_BACKOFF_STEP);
        let mut prober: Option<Prober> = None;
        loop {
            let (held, tail) = self.begin_put(deadline)?;
            let (slot, observed_head) = self.reserve_first(tail, len);
            if let Some((off, total)) = slot {
                return Ok(PutLoan {
                    ring: self,
                    held: Some(held),
                    tail,
                    observed_head,
                    off,
                    total,
                    len,
                    _not_send: PhantomData,
                });
            }
            self.put_cache.set(tail, observed_head);
            drop(held);
            self.wait_for_room(&mut backoff, &mut prober, deadline, observed_head)?;
        }
    }

    /// Holds the record at the head, waiting until `deadline` for one, under the get lock
    /// until the loan is dropped. Fails as `get_with` does. A message that came in fragments
    /// (longer than one record) cannot be held in place: its first fragment is reported as
    /// `BufferTooSmall(total)` and stays where it is, for a get; orphan fragments (see
    /// "Messages of any size" in the module note) are skipped, as a get skips them. A handle
    /// with a message half-taken by a timed get (`resume`) reports it the same way.
    pub(crate) fn loan_get(
        &self,
        deadline: Option<Instant>,
        resume: &Resume,
    ) -> Result<GetLoan<'_>, GetFail> {
        if let Some(total) = resume.pending_total() {
            return Err(GetFail::BufferTooSmall(total));
        }
        let st = self.st();
        let mut waiter = Waiter::new();
        let mut overrun = Overrun::new(self, deadline);
        loop {
            let observed_tail = self.tail_for_reading();
            if !self.is_empty_at(observed_tail) {
                // A dead holder never moved `head`: its message is still there for us.
                let held = st.get_side.lock.hold(deadline).ok_or(GetFail::Empty)?;
                loop {
                    let (head, tail) = self.head_and_tail();
                    let rec = match self.record_at(head, tail) {
                        Ok(Some(rec)) => rec,
                        Ok(None) => break, // another consumer took it first
                        Err(e) => return Err(e),
                    };
                    match rec.kind {
                        Kind::Plain => {
                            return Ok(GetLoan {
                                ring: self,
                                held: Some(held),
                                payload: rec.payload.as_ptr(),
                                len: rec.payload.len() as u32,
                                next: rec.next,
                                tail,
                                _not_send: PhantomData,
                            });
                        }
                        // An orphan: skipped as a get skips it.
                        Kind::Next => {
                            self.free_fragment(&rec, tail);
                            if overrun.spent() {
                                return Err(GetFail::Empty);
                            }
                        }
                        Kind::First => {
                            return Err(match first_fragment(&rec) {
                                Some((total, _)) => GetFail::BufferTooSmall(total),
                                None => GetFail::Corrupted("first fragment"),
                            });
                        }
                    }
                }
                drop(held);
                continue;
            }
            self.wait_for_data(&mut waiter, observed_tail, deadline)?;
        }
    }
}

impl<'a> PutLoan<'a> {
    /// Payload bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Where the payload starts.
    #[inline]
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.ring.at(self.off + RECORD_HEADER)
    }

    /// The payload as a writable foreign view.
    #[inline]
    pub(crate) fn room(&mut self) -> ForeignMut<'_> {
        // SAFETY: the reserved payload lies in the mapping for the loan's life (module note).
        unsafe { ForeignMut::new(self.as_mut_ptr(), self.len()) }
    }

    /// The payload as a foreign view, to read back what was written (or what a peer wrote).
    #[inline]
    pub(crate) fn view(&self) -> Foreign<'_> {
        // SAFETY: as in `room`.
        unsafe { Foreign::new(self.as_mut_ptr(), self.len()) }
    }

    /// The payload's whole 8-byte words, as atomics.
    #[inline]
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: the payload is 8-aligned and inside the mapping for the loan's life (module
        // note); `len / 8` words stay inside it. Atomics may be shared with any writer.
        unsafe { std::slice::from_raw_parts(self.as_mut_ptr().cast::<AtomicU64>(), self.len() / 8) }
    }

    /// Writes the record header and publishes the record: consumers see it from now on.
    pub(crate) fn publish(mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        // SAFETY: the header word is the start of the reserved, 8-aligned record.
        unsafe { self.ring.header(self.off) }.store(self.len, Ordering::Relaxed);
        self.ring
            .publish(held, advance(self.tail, self.total), self.observed_head, 1);
    }
}

impl Drop for PutLoan<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            // Nothing was published: the bytes (and any wrap marker) are free space again.
            self.ring.put_cache.set(self.tail, self.observed_head);
            drop(held);
        }
    }
}

impl<'a> GetLoan<'a> {
    /// Payload bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Where the payload starts.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.payload
    }

    /// The payload as a foreign view.
    #[inline]
    pub(crate) fn view(&self) -> Foreign<'_> {
        // SAFETY: `record_at` checked the payload against the region; it stays in the mapping
        // for the loan's life (module note).
        unsafe { Foreign::new(self.payload, self.len()) }
    }

    /// The payload's whole 8-byte words, as atomics.
    #[inline]
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: as in `PutLoan::words`: 8-aligned, inside the mapping, atomics.
        unsafe { std::slice::from_raw_parts(self.payload.cast::<AtomicU64>(), self.len() / 8) }
    }

    /// Frees the record (the same as dropping the loan).
    pub(crate) fn release(self) {}
}

impl Drop for GetLoan<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            self.ring.free_up_to(self.next, self.tail);
            drop(held);
            // As in a get: the unlock pairs with a producer's handshake.
            self.ring.st().space_wait.word.notify_after_handshake(1);
        }
    }
}

/// Copies `dst.len()` bytes of `view` from offset `at` into `dst`; `false` if out of range.
pub(crate) fn read_at(view: Foreign<'_>, at: usize, dst: &mut [u8]) -> bool {
    if at > view.len() || dst.len() > view.len() - at {
        return false;
    }
    // SAFETY: `[at, at + dst.len())` lies inside `view` (checked above), which lies inside a
    // live mapping for its lifetime.
    let part = unsafe { Foreign::new(view.as_ptr().wrapping_add(at), dst.len()) };
    part.copy_to(dst);
    true
}

/// A hostile peer's writes into a live ring while a loan is held.
#[cfg(all(test, not(multiproc_loom)))]
mod tests {
    use super::super::layout::{FRAG, FRAG_FIRST, WRAP, pack, record_len};
    use super::*;
    use crate::{Plain, Queue, Receiver, Sender, TryGetError};

    fn queue(messages: usize) -> (Sender<u8, Plain>, Receiver<u8, Plain>) {
        Queue::<u8>::builder()
            .codec::<Plain>()
            .anonymous()
            .capacity(messages)
            .max_bytes(1024)
            .create()
            .unwrap()
            .split()
            .unwrap()
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
    }

    /// A peer that rewrites the header and the payload of a loaned record changes what the
    /// loan reads, never its length, its bounds or where the head goes when it is released.
    #[test]
    fn a_header_rewritten_under_a_read_loan_moves_nothing() {
        let (tx, rx) = queue(8);
        let ring = tx.ring();
        tx.put_bytes(&pattern(1, 100)).unwrap();
        tx.put_bytes(&pattern(2, 30)).unwrap();
        let loan = rx.try_get_loan().unwrap();
        assert_eq!(loan.len(), 100);
        // The record is at offset 0: its header claims the whole ring, its payload is 0xff.
        // SAFETY: offset 0 is in the region and aligned.
        unsafe { ring.header(0) }.store(ring.cap, Ordering::Relaxed);
        // SAFETY: the payload of the record at offset 0 is inside the region.
        let mut payload = unsafe { ForeignMut::new(ring.at(RECORD_HEADER), 100) };
        assert!(payload.write_at(0, &[0xff; 100]));
        assert_eq!(loan.len(), 100);
        assert_eq!(loan.to_vec(), [0xff; 100]);
        assert_eq!(loan.as_words().len(), 12);
        let mut b = [0u8; 8];
        assert!(loan.read_at(92, &mut b).is_ok());
        assert!(loan.read_at(93, &mut b).is_err());
        loan.release();
        // The head moved past the record as validated: the next message is intact.
        let next = rx.try_get_loan().unwrap();
        assert_eq!(next.to_vec(), pattern(2, 30));
        next.release();
        assert!(matches!(rx.try_get_loan(), Err(TryGetError::Empty)));
    }

    /// A record whose header does not fit what lies between head and tail is refused, and
    /// stays: once repaired, it is delivered.
    #[test]
    fn a_scribbled_record_is_refused_and_left_in_place() {
        let (tx, rx) = queue(8);
        let ring = tx.ring();
        tx.put_bytes(&pattern(3, 40)).unwrap();
        for bad in [48, ring.cap - RECORD_HEADER, ring.cap, u32::MAX - 1] {
            // SAFETY: offset 0 is in the region and aligned.
            unsafe { ring.header(0) }.store(bad, Ordering::Relaxed);
            assert!(
                matches!(rx.try_get_loan(), Err(TryGetError::Corrupted(_))),
                "header {bad:#x}"
            );
            assert_eq!(ring.len(), 1);
        }
        // SAFETY: as above.
        unsafe { ring.header(0) }.store(40, Ordering::Relaxed);
        assert_eq!(rx.try_get_loan().unwrap().to_vec(), pattern(3, 40));
        assert_eq!(ring.len(), 0);
    }

    /// Positions a peer made misaligned or impossible are `Corrupted`, before any header is read
    /// through them.
    #[test]
    fn scribbled_positions_are_refused_by_a_read_loan() {
        let (tx, rx) = queue(8);
        let ring = tx.ring();
        tx.put_bytes(&pattern(4, 8)).unwrap();
        let st = ring.st();
        for (head, tail) in [
            (pack(0, 4), pack(1, 4 + 16)),
            (pack(0, 0), pack(1, 2 * ring.cap)),
            (pack(0, 0), pack(1, 12)),
        ] {
            st.head.pos.store(head, Ordering::Relaxed);
            st.tail.pos.store(tail, Ordering::Relaxed);
            assert!(matches!(rx.try_get_loan(), Err(TryGetError::Corrupted(_))));
            assert_eq!(st.head.pos.load(Ordering::Relaxed), head);
        }
    }

    /// The first fragment of a message longer than a record is refused as too large for a loan
    /// and stays at the head, also behind a wrap marker; an orphan fragment is skipped; a whole
    /// record behind a wrap marker is loaned.
    #[test]
    fn a_fragmented_message_is_refused_and_stays() {
        let (tx, rx) = queue(8);
        let ring = tx.ring();
        let st = ring.st();
        // A record of 16 bytes at offset 0, reached through a wrap marker at the end.
        let start = ring.cap - RECORD_HEADER;
        let head = pack(0, start);
        let tail = pack(1, start + RECORD_HEADER + record_len(16));
        st.head.pos.store(head, Ordering::Relaxed);
        st.tail.pos.store(tail, Ordering::Relaxed);
        // SAFETY: both offsets are in the region and aligned.
        unsafe { ring.header(start) }.store(WRAP, Ordering::Relaxed);
        // A first fragment: a total of 1000 bytes, then 8 of them.
        // SAFETY: as above.
        unsafe { ring.header(0) }.store(FRAG | FRAG_FIRST | 16, Ordering::Relaxed);
        // SAFETY: the 16 payload bytes of the record at offset 0 are inside the region.
        let mut payload = unsafe { ForeignMut::new(ring.at(RECORD_HEADER), 16) };
        assert!(payload.write_at(0, &1000u64.to_le_bytes()));
        assert_eq!(
            rx.try_get_loan().map(|l| l.len()),
            Err(TryGetError::BufferTooSmall(1000))
        );
        assert_eq!(st.head.pos.load(Ordering::Relaxed), head);
        // Also without the wrap marker.
        st.head.pos.store(pack(0, 0), Ordering::Relaxed);
        st.tail
            .pos
            .store(pack(1, record_len(16)), Ordering::Relaxed);
        assert_eq!(
            rx.try_get_loan().map(|l| l.len()),
            Err(TryGetError::BufferTooSmall(1000))
        );
        assert_eq!(st.head.pos.load(Ordering::Relaxed), pack(0, 0));
        // An orphan (a following fragment with no message begun) is skipped: the ring is
        // then empty.
        // SAFETY: as above.
        unsafe { ring.header(0) }.store(FRAG | 16, Ordering::Relaxed);
        assert_eq!(rx.try_get_loan().map(|l| l.len()), Err(TryGetError::Empty));
        assert_eq!(st.head.pos.load(Ordering::Relaxed), pack(1, record_len(16)));
        st.head.pos.store(head, Ordering::Relaxed);
        st.tail.pos.store(tail, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { ring.header(0) }.store(16, Ordering::Relaxed);
        // SAFETY: the 16 payload bytes of the record at offset 0 are inside the region.
        let mut payload = unsafe { ForeignMut::new(ring.at(RECORD_HEADER), 16) };
        assert!(payload.write_at(0, &pattern(5, 16)));
        let loan = rx.try_get_loan().unwrap();
        assert_eq!(loan.to_vec(), pattern(5, 16));
        loan.release();
        assert_eq!(st.head.pos.load(Ordering::Relaxed), tail);
        assert!(matches!(rx.try_get_loan(), Err(TryGetError::Empty)));
    }

    /// The chunked copies and the words of the public loans cover every byte, once.
    #[test]
    fn chunks_blocks_and_words_cover_every_byte() {
        let q = Queue::<u8>::builder()
            .codec::<Plain>()
            .anonymous()
            .capacity(4)
            .max_bytes(64 << 10)
            .create()
            .unwrap();
        for len in [0, 5, 256, 257, 20_003] {
            let mut loan = q.try_loan_bytes(len).unwrap();
            let mut seen = 0;
            loan.fill_with(|at, chunk| {
                assert_eq!(at, seen);
                seen += chunk.len();
                chunk.copy_from_slice(&pattern(at as u8, chunk.len()));
            });
            assert_eq!(seen, len);
            let mut back = vec![0u8; len];
            loan.read_at(0, &mut back).unwrap();
            loan.publish();
            let got = q.try_get_loan().unwrap();
            let mut out = Vec::new();
            got.for_each_chunk(|at, chunk| {
                assert_eq!(at, out.len());
                out.extend_from_slice(chunk);
            });
            assert_eq!(out, back);
            assert_eq!(got.to_vec(), back);
            let words: Vec<u8> = got
                .as_words()
                .iter()
                .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
                .collect();
            assert_eq!(words, back[..len / 8 * 8]);
            got.release();

            // A cache line at a time, by value: the same bytes, and a partial last block.
            let mut loan = q.try_loan_bytes(len).unwrap();
            let mut next = 0u64;
            loan.fill_blocks(|at| {
                assert_eq!(at as u64, next * 64);
                next += 1;
                std::array::from_fn(|k| (at as u64 + 8 * k as u64) ^ 0x5a5a)
            });
            assert_eq!(next as usize, len.div_ceil(64));
            loan.publish();
            let got = q.try_get_loan().unwrap();
            let mut out = Vec::new();
            got.for_each_block(|at, block| {
                assert_eq!(at, out.len());
                out.extend(block.iter().flat_map(|w| w.to_ne_bytes()));
            });
            assert_eq!(out.len(), len.div_ceil(64) * 64);
            // Past the message, the last block is zero-padded.
            assert!(out[len..].iter().all(|&b| b == 0));
            out.truncate(len);
            assert_eq!(out, got.to_vec());
            let want: Vec<u8> = (0..len.div_ceil(8) as u64)
                .flat_map(|w| ((8 * w) ^ 0x5a5a).to_ne_bytes())
                .take(len)
                .collect();
            assert_eq!(out, want);
            got.release();
        }
    }

    /// Payloads of every length start 8-aligned, and a write loan dropped unpublished (having
    /// written a wrap marker) leaves the ring as it was.
    #[test]
    fn write_loans_are_aligned_and_leave_nothing_when_dropped() {
        let (tx, rx) = queue(64);
        let ring = tx.ring();
        for len in 0..200 {
            let mut loan = tx.try_loan_bytes(len).unwrap();
            let fits = loan.write_at(0, &pattern(len as u8, len));
            assert!(fits.is_ok());
            if len % 3 == 0 {
                drop(loan);
                assert_eq!(ring.len(), 0);
                continue;
            }
            loan.publish();
            let got = rx.try_get_loan().unwrap();
            assert_eq!(got.as_words().as_ptr() as usize % 8, 0);
            assert_eq!(got.as_words().len(), len / 8);
            assert_eq!(got.to_vec(), pattern(len as u8, len));
        }
        assert!(matches!(rx.try_get_loan(), Err(TryGetError::Empty)));
    }
}
