//! Putting: a producer, under the put lock, writes a record at `tail` and publishes it.
#![allow(unsafe_code)]
//! # Safety
//! As in the ring's module note: a record is written only into the free space `reserve`
//! found between `tail` and `head + capacity`, under the put lock.

use crate::primitive::Ordering;
use std::time::Instant;

use super::Ring;
use super::layout::{
    FRAG, FRAG_FIRST, FRAG_LAST, Lifecycle, RECORD_HEADER, TOTAL_LEN, WRAP, pack, record_len,
    unpack,
};
use crate::MAX_MESSAGE_LEN;
use crate::segment::ForeignMut;
use crate::sync::raw_lock::Held;
use crate::sync::wait::{Backoff, Prober};

/// Why a put did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutFail {
    /// No room before the deadline (or right now, for a try).
    Full,
    /// Every receiver is gone.
    Disconnected,
    /// The queue was closed.
    Closed,
    /// The queue was shut down.
    ShutDown,
    /// The message can never fit.
    TooBig,
    /// The ring's positions were scribbled on; nothing can be written safely.
    Corrupted(&'static str),
    /// The writer could not fill the record (the value encoded to another length).
    Encode,
}

/// Why the state word (see [`Lifecycle`]) refuses puts, if it does.
#[inline]
fn refusal(state: u32) -> Option<PutFail> {
    match Lifecycle::of(state) {
        Lifecycle::Open => None,
        Lifecycle::Closed => Some(PutFail::Closed),
        Lifecycle::ShutDown | Lifecycle::ShutDownImmediate => Some(PutFail::ShutDown),
    }
}

/// `tail` moved past one record of `total` bytes (record and any wrap skip before it).
#[inline]
pub(super) fn advance(tail: u64, total: u32) -> u64 {
    let (tm, tp) = unpack(tail);
    pack(tm.wrapping_add(1), tp.wrapping_add(total))
}

/// First backoff step of a put that found the ring full (2^step spins before the next look).
pub(super) const FULL_BACKOFF_STEP: u32 = 6;

impl Ring {
    /// Puts one record of `len` payload bytes, filled by `write`, waiting until `deadline`
    /// (`Some(now)` for a try, `None` forever). `write` fills the bytes through copies (see
    /// `segment::foreign`); if it fails, nothing is published.
    pub(crate) fn put_with(
        &self,
        len: usize,
        deadline: Option<Instant>,
        write: impl FnOnce(ForeignMut<'_>) -> bool,
    ) -> Result<(), PutFail> {
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
                // SAFETY: `reserve` checked that [off, off + record) is free space inside the data
                // region, which only we (holding the put lock) write until we publish it; the
                // mapping lives as long as `self`.
                let room = unsafe { ForeignMut::new(self.at(off + RECORD_HEADER), len as usize) };
                if !write(room) {
                    // Nothing was published: the bytes are free space again.
                    self.put_cache.set(tail, observed_head);
                    drop(held);
                    return Err(PutFail::Encode);
                }
                // SAFETY: the header word is inside the reserved, 8-aligned record.
                unsafe { self.header(off) }.store(len, Ordering::Relaxed);
                self.publish(held, advance(tail, total), observed_head, 1);
                return Ok(());
            }
            self.put_cache.set(tail, observed_head);
            drop(held);
            self.wait_for_room(&mut backoff, &mut prober, deadline, observed_head)?;
        }
    }

    /// Puts up to `count` records under one hold of the put lock and publishes them with one
    /// `tail` store: record `i` has `len(i)` payload bytes, written by `write(i, room)` into a
    /// room of exactly that many bytes. `len` is called once per record (it may run user code
    /// that answers differently each time).
    /// Waits until `deadline` for room for the first record only, then adds every following
    /// one that fits right now. Returns how many were published (at least one). A record that
    /// cannot be put ends the batch before it; it fails only in first place.
    pub(crate) fn put_batch(
        &self,
        count: usize,
        deadline: Option<Instant>,
        mut len: impl FnMut(usize) -> usize,
        mut write: impl FnMut(usize, ForeignMut<'_>) -> bool,
    ) -> Result<usize, PutFail> {
        if count == 0 {
            return Ok(0);
        }
        let first = len(0);
        if first > self.max_record() {
            return Err(PutFail::TooBig);
        }
        let st = self.st();
        let mut backoff = Backoff::starting_at(FULL_BACKOFF_STEP);
        let mut prober: Option<Prober> = None;
        loop {
            let (held, tail) = self.begin_put(deadline)?;
            let (mut slot, mut observed_head) = self.reserve_first(tail, first as u32);
            let mut end = tail;
            let mut done = 0;
            // Each length is asked for once: the room and the header must be the length
            // `reserve` made room for, whatever a second call would say.
            let mut rec = first as u32;
            while let Some((off, total)) = slot {
                // SAFETY: as in `put_with`: [off, off + record) is free space that `reserve`
                // found for a record of `rec` bytes, ours alone under the put lock.
                let room = unsafe { ForeignMut::new(self.at(off + RECORD_HEADER), rec as usize) };
                if !write(done, room) {
                    if done == 0 {
                        self.put_cache.set(tail, observed_head);
                        drop(held);
                        return Err(PutFail::Encode);
                    }
                    break;
                }
                // SAFETY: the header word is inside the reserved, 8-aligned record.
                unsafe { self.header(off) }.store(rec, Ordering::Relaxed);
                end = advance(end, total);
                done += 1;
                if done == count {
                    break;
                }
                let next = len(done);
                if next > self.max_record() {
                    break;
                }
                rec = next as u32;
                slot = self.reserve(end, observed_head, rec);
                if slot.is_none() {
                    // Our copy of the head may lag: look at the real one once more.
                    // SYNC(head-free)
                    observed_head = st.head.pos.load(Ordering::Acquire);
                    slot = self.reserve(end, observed_head, rec);
                }
            }
            if done > 0 {
                self.publish(held, end, observed_head, done);
                return Ok(done);
            }
            self.put_cache.set(tail, observed_head);
            drop(held);
            self.wait_for_room(&mut backoff, &mut prober, deadline, observed_head)?;
        }
    }

    /// Puts a message of any length up to [`MAX_MESSAGE_LEN`], streamed through the ring in
    /// fragments (see "Messages of any size" in the module note), holding the put lock for the
    /// whole message. Each fragment is published as soon as it is written, so the consumer
    /// copies one out while we copy the next in.
    ///
    /// `deadline` applies to the whole message: a put that cannot finish by then, or that
    /// finds the receivers gone or the queue closed or shut down while it waits for room,
    /// abandons the message (the fragments it published are an incomplete message, which
    /// consumers drop) and fails.
    pub(crate) fn put_fragments(
        &self,
        src: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), PutFail> {
        if src.len() > MAX_MESSAGE_LEN {
            return Err(PutFail::TooBig);
        }
        let st = self.st();
        let frag = self.frag_max() as usize;
        let mut backoff = Backoff::starting_at(FULL_BACKOFF_STEP);
        let mut prober: Option<Prober> = None;
        let (held, mut tail) = self.begin_put(deadline)?;
        // A try (or a put whose deadline passed already) would publish what fits and then
        // abandon the rest: it goes only if the whole message fits now.
        if deadline.is_some_and(|d| Instant::now() >= d) && !self.fits_now(tail, src.len()) {
            drop(held);
            return Err(self.full_or_disconnected());
        }
        let mut sent = 0;
        let mut first = true;
        loop {
            let (chunk, plen) = if first {
                let chunk = (frag - TOTAL_LEN as usize).min(src.len());
                (chunk, chunk + TOTAL_LEN as usize)
            } else {
                let chunk = frag.min(src.len() - sent);
                (chunk, chunk)
            };
            // `plen <= frag < 2^30`: it fits the header's length bits.
            let (slot, observed_head) = self.reserve_first(tail, plen as u32);
            if let Some((off, total)) = slot {
                // SAFETY: as in `put_with`: [off, off + record) is free space that `reserve`
                // found for a record of `plen` bytes, ours alone under the put lock.
                let mut room = unsafe { ForeignMut::new(self.at(off + RECORD_HEADER), plen) };
                let mut header = FRAG | plen as u32;
                if sent + chunk == src.len() {
                    header |= FRAG_LAST;
                }
                let body = &src[sent..sent + chunk];
                let written = if first {
                    header |= FRAG_FIRST;
                    room.write_at(0, &(src.len() as u64).to_le_bytes())
                        && room.write_at(TOTAL_LEN as usize, body)
                } else {
                    room.write_at(0, body)
                };
                debug_assert!(written, "the room is exactly as long as the fragment");
                // SAFETY: the header word is inside the reserved, 8-aligned record.
                unsafe { self.header(off) }.store(header, Ordering::Relaxed);
                tail = advance(tail, total);
                sent += chunk;
                first = false;
                if sent == src.len() {
                    self.publish(held, tail, observed_head, 1);
                    return Ok(());
                }
                self.put_cache.set(tail, observed_head);
                // SYNC(tail-publish)
                st.tail.pos.store(tail, Ordering::Release);
                st.put_side.pos.store(tail, Ordering::Relaxed);
                // Only the last fragment is the message's task: this one is done already, so
                // that a message abandoned half-way leaves no task behind.
                self.finish_dropped(1);
                // We keep the lock: no unlock for a sleeper's handshake to pair with, so the
                // wake reads the sleepers with an RMW (SYNC(sleepers-rmw)).
                st.data_wait.word.notify(1);
                backoff = Backoff::starting_at(FULL_BACKOFF_STEP);
                continue;
            }
            self.put_cache.set(tail, observed_head);
            let waited = match refusal(self.state()) {
                Some(refused) => Err(refused),
                None => self.wait_for_room(&mut backoff, &mut prober, deadline, observed_head),
            };
            if let Err(e) = waited {
                // Abandoned: what we published is an incomplete message. A consumer waiting
                // for its next fragment sees the lock free (SYNC(sleepers-rmw)).
                drop(held);
                st.data_wait.word.notify_all();
                return Err(e);
            }
        }
    }

    /// Whether every fragment of a message of `len` bytes fits in the ring now, written from
    /// `tail` (an upper bound of the bytes: each record padded, and one wrap skip).
    fn fits_now(&self, tail: u64, len: usize) -> bool {
        // SYNC(head-free)
        let head = self.st().head.pos.load(Ordering::Acquire);
        let (tm, tp) = unpack(tail);
        let (hm, hp) = unpack(head);
        let used = tp.wrapping_sub(hp);
        let queued = tm.wrapping_sub(hm);
        if used > self.cap || queued > self.max_messages {
            return false;
        }
        let frag = u64::from(self.frag_max());
        let len = len as u64;
        let first = (frag - u64::from(TOTAL_LEN)).min(len);
        let records = 1 + (len - first).div_ceil(frag);
        let record = u64::from(RECORD_HEADER);
        let bytes = len + u64::from(TOTAL_LEN) + records * (record + 7) + frag + record;
        bytes <= u64::from(self.cap - used) && records <= u64::from(self.max_messages - queued)
    }

    /// Takes the put lock (waiting until `deadline`, else `Full`) for a put: the hold and the
    /// tail to write at. Refuses, and lets the lock go, if the queue is closed or shut down
    /// (read under the lock, so that a shutdown can wait out the puts that missed it), if no
    /// receiver is left, or if the tail is not 8-aligned.
    #[inline]
    pub(super) fn begin_put(&self, deadline: Option<Instant>) -> Result<(Held<'_>, u64), PutFail> {
        let (held, tail) = self.hold_put_side(deadline).ok_or(PutFail::Full)?;
        // SYNC(state-under-lock)
        if let Some(refused) = refusal(self.state()) {
            drop(held);
            return Err(refused);
        }
        if !self.has_receivers() {
            drop(held);
            return Err(PutFail::Disconnected);
        }
        if unpack(tail).1 % RECORD_HEADER != 0 {
            // Records start 8-aligned: this tail was scribbled on, and would make us write
            // a header through a misaligned pointer.
            drop(held);
            return Err(PutFail::Corrupted("ring positions"));
        }
        Ok((held, tail))
    }

    /// Takes the put lock, waiting until `deadline`; returns the hold and the producers'
    /// `tail`. A dead holder only means its half-written record was never published: the
    /// ring is consistent, and the next put overwrites those bytes.
    #[inline]
    pub(super) fn hold_put_side(&self, deadline: Option<Instant>) -> Option<(Held<'_>, u64)> {
        let st = self.st();
        let held = st.put_side.lock.hold(deadline)?;
        // Our side's copy of `tail`, unless a holder died and may have left it behind.
        let tail = if held.taken_over() {
            // Repair the copy at once: this hold may end without publishing (a full ring, a
            // failed encode, a shutdown), and the next holder takes the lock as clean.
            let tail = st.tail.pos.load(Ordering::Relaxed);
            st.put_side.pos.store(tail, Ordering::Relaxed);
            tail
        } else {
            st.put_side.pos.load(Ordering::Relaxed)
        };
        Some((held, tail))
    }

    /// Waits (until `deadline`) until no put that missed a state bit set before this call can
    /// still publish: takes the put lock and lets it go. `false` if the deadline passed first.
    pub(super) fn settle_puts(&self, deadline: Option<Instant>) -> bool {
        // SYNC(state-under-lock): whoever held the lock before us has published, or saw the
        // state; whoever takes it after us sees the state.
        self.hold_put_side(deadline).is_some()
    }

    /// Room for a first record of `len` bytes at `tail`, and the head it was measured against.
    /// Looks at our copy of the head first: it never runs ahead of the real one, so it can
    /// only make us think the ring fuller than it is; re-reads the real head only then.
    #[inline]
    pub(super) fn reserve_first(&self, tail: u64, len: u32) -> (Option<(u32, u32)>, u64) {
        let st = self.st();
        let cached = self.put_cache.get(tail);
        // SYNC(head-free), for this load and the one below.
        let mut observed_head = cached.unwrap_or_else(|| st.head.pos.load(Ordering::Acquire));
        let mut slot = self.reserve(tail, observed_head, len);
        if slot.is_none() && cached.is_some() {
            observed_head = st.head.pos.load(Ordering::Acquire);
            slot = self.reserve(tail, observed_head, len);
        }
        (slot, observed_head)
    }

    /// Publishes every record written up to `new_tail` (`records` of them), releases the put
    /// lock and wakes up to as many sleeping consumers.
    #[inline]
    pub(super) fn publish(
        &self,
        held: Held<'_>,
        new_tail: u64,
        observed_head: u64,
        records: usize,
    ) {
        let st = self.st();
        self.put_cache.set(new_tail, observed_head);
        // SYNC(tail-publish): the records written before this store are visible to whoever
        // loads this tail.
        st.tail.pos.store(new_tail, Ordering::Release);
        st.put_side.pos.store(new_tail, Ordering::Relaxed);
        drop(held);
        // The unlock orders the tail store against a consumer's sleeper announcement
        // (see `RawLock::handshake`): it sees our tail, or we see it sleeping.
        st.data_wait
            .word
            .notify_after_handshake(u32::try_from(records).unwrap_or(u32::MAX));
    }

    /// The ring was full at `observed_head`: back off, then sleep until a consumer frees
    /// space. `Ok` means "look again".
    pub(super) fn wait_for_room(
        &self,
        backoff: &mut Backoff,
        prober: &mut Option<Prober>,
        deadline: Option<Instant>,
        observed_head: u64,
    ) -> Result<(), PutFail> {
        let st = self.st();
        if !backoff.is_completed() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(self.full_or_disconnected());
            }
            backoff.snooze();
            return Ok(());
        }
        let prober = prober.get_or_insert_with(Prober::new);
        let probe = prober.due();
        if !self.any_alive(false, probe) {
            return Err(PutFail::Disconnected);
        }
        let seen = st.space_wait.word.observe();
        let Some(timeout) = prober.sleep_budget(deadline) else {
            return Err(self.full_or_disconnected());
        };
        st.space_wait.word.wait_unless(seen, Some(timeout), || {
            // Pairs with a consumer's unlock: we see its head, or it sees us asleep.
            // SYNC(lock-handshake): with the unlock in `get_with`.
            st.get_side.lock.handshake();
            st.head.pos.load(Ordering::Acquire) != observed_head
                || refusal(self.state()).is_some()
                || !self.any_alive(false, false)
        });
        Ok(())
    }

    /// The error of a put that gives up on a full ring: `Disconnected` if no receiver is left.
    fn full_or_disconnected(&self) -> PutFail {
        if let Some(refused) = refusal(self.state()) {
            refused
        } else if self.any_alive_at_give_up(false) {
            PutFail::Full
        } else {
            PutFail::Disconnected
        }
    }

    /// With the put lock held and `tail` read under it: finds room for a record of `len`
    /// payload bytes. Writes a wrap marker if the record must start at offset 0. Returns
    /// (offset, bytes to advance); `None` if there is no room, or if `tail` is not 8-aligned
    /// (`put_with` reports that one as `Corrupted` before it gets here).
    #[inline]
    fn reserve(&self, tail: u64, head: u64, len: u32) -> Option<(u32, u32)> {
        let (tm, tp) = unpack(tail);
        if tp % RECORD_HEADER != 0 {
            return None;
        }
        let (hm, hp) = unpack(head);
        let used = tp.wrapping_sub(hp);
        if used > self.cap || tm.wrapping_sub(hm) >= self.max_messages {
            return None; // full (or a scribbled head: treat as full, never as free space)
        }
        let free = self.cap - used;
        let rec = record_len(len);
        let off = tp & (self.cap - 1);
        let to_end = self.cap - off;
        if rec <= to_end {
            return (rec <= free).then_some((off, rec));
        }
        // Skip the end of the region: the record goes to offset 0.
        if to_end + rec > free {
            return None;
        }
        // SAFETY: [off, cap) is free space (to_end <= free); `off` is 8-aligned because `tp` is
        // (checked at the top) and the capacity is a power of two of at least 64.
        unsafe { self.header(off) }.store(WRAP, Ordering::Relaxed);
        Some((0, to_end + rec))
    }
}
