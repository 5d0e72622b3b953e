//! Getting: a consumer, under the get lock, reads the record at `head` once `tail` has moved
//! past it, and frees it; a get that finds the ring empty spins, then sleeps.
#![allow(unsafe_code)]
//! # Safety
//! As in the ring's module note: a record is read only between `head` and `tail`, under the
//! get lock, after its offset and length are checked against the data region.

use crate::primitive::Ordering;
use std::time::Instant;

use super::Ring;
use super::layout::{
    FRAG, FRAG_FIRST, FRAG_LAST, FRAG_LEN, Lifecycle, RECORD_HEADER, WRAP, pack, record_len, unpack,
};
use super::{Dest, Resume};
use crate::segment::Foreign;
use crate::sync::wait::Prober;

/// Why a get returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GetFail {
    /// Nothing arrived before the deadline (or right now, for a try).
    Empty,
    /// Every sender is gone (or the queue was closed) and the ring is drained.
    Disconnected,
    /// The queue was shut down, and the ring is drained (or the shutdown was immediate).
    ShutDown,
    /// The record at the head is malformed: the segment was scribbled on.
    Corrupted(&'static str),
    /// The caller's buffer is too small; the message stays in the queue.
    BufferTooSmall(usize),
    /// Internal to the ring: a batch met a message in fragments in first place.
    Fragmented,
}

/// What a record at the head is (see "Messages of any size" in the module note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A whole message.
    Plain,
    /// The first fragment of a message: its total length, then the first bytes.
    First,
    /// A following fragment.
    Next,
}

/// A record at the head, checked to lie between `head` and `tail`.
pub(super) struct Rec<'a> {
    pub(super) kind: Kind,
    /// A fragment that ends its message ([`FRAG_LAST`]): the message's task.
    pub(super) last: bool,
    pub(super) payload: Foreign<'a>,
    /// The head past this record.
    pub(super) next: u64,
}

/// Records a batch consumed, freed (one `head` store) when it is dropped, under the get lock.
struct Taken<'a> {
    ring: &'a Ring,
    /// The head after the last record consumed.
    at: u64,
    /// The tail the batch read up to.
    tail: u64,
    count: usize,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.count > 0 {
            self.ring.free_up_to(self.at, self.tail);
        }
    }
}

/// Spin-then-sleep state of one blocking get.
pub(super) struct Waiter {
    pub(super) spun: bool,
    pub(super) prober: Option<Prober>,
}

impl Waiter {
    pub(super) fn new() -> Self {
        Self {
            spun: false,
            prober: None,
        }
    }
}

impl Ring {
    /// Takes the message at the head and passes its payload to `read`, waiting until
    /// `deadline`. `read` sees the payload as [`Foreign`] bytes: it copies them out, never
    /// reads them in place. A message that came in fragments is assembled first, in private
    /// memory (see [`get_msg`](Self::get_msg) for `resume`).
    pub(crate) fn get_with<R>(
        &self,
        deadline: Option<Instant>,
        resume: &Resume,
        read: impl FnOnce(Foreign<'_>) -> R,
    ) -> Result<R, GetFail> {
        let read = std::cell::Cell::new(Some(read));
        let run = |m: Foreign<'_>| (read.take().expect("read once"))(m);
        self.get_msg(
            deadline,
            None,
            resume,
            |m, _| run(m),
            |dest| match dest {
                Dest::Vec(v) => {
                    // SAFETY: the vector is private memory, alive and unchanged for the
                    // call.
                    run(unsafe { Foreign::new(v.as_ptr(), v.len()) })
                }
                Dest::Buf(..) => unreachable!("no buffer was given"),
            },
        )
    }

    /// Waits until a message is there to take; `Ok(false)` on timeout, `Ok(true)` when one is
    /// there or when a get would fail at once with `Disconnected`.
    pub(crate) fn poll(&self, deadline: Option<Instant>) -> bool {
        let mut waiter = Waiter::new();
        loop {
            let observed_tail = self.tail_for_reading();
            if !self.is_empty_at(observed_tail) {
                return true;
            }
            match self.wait_for_data(&mut waiter, observed_tail, deadline) {
                Ok(()) => {}
                Err(GetFail::Empty) => return false,
                Err(_) => return true,
            }
        }
    }

    /// For a wait over many objects (`crate::wait`): counts the caller as a sleeper on the data
    /// word, as a blocking get does while it sleeps, so that producers wake it. Undo with
    /// [`unwatch_data`](Self::unwatch_data). Each round of the wait then reads the word
    /// ([`data_seen`](Self::data_seen)), looks ([`data_ready`](Self::data_ready)), and sleeps
    /// while the word holds what it read: the order of [`wait_for_data`](Self::wait_for_data).
    #[cfg(not(multiproc_loom))]
    pub(crate) fn watch_data(&self) {
        self.st().data_wait.word.announce();
    }

    /// The data word, to sleep on (see [`watch_data`](Self::watch_data)).
    #[cfg(not(multiproc_loom))]
    pub(crate) fn data_word(&self) -> &crate::primitive::AtomicU32 {
        self.st().data_wait.word.futex_word()
    }

    /// The data word now, read before [`data_ready`](Self::data_ready).
    #[cfg(not(multiproc_loom))]
    pub(crate) fn data_seen(&self) -> u32 {
        self.st().data_wait.word.observe()
    }

    /// Whether a get would return at once: a message is there, the ring is closed or shut
    /// down, or no sender is left (after probing dead peers, with `probe`; after probing them if this
    /// process has not lately, with `give_up`, as a get that times out does). After
    /// [`watch_data`](Self::watch_data), a put this look misses wakes the data word.
    #[cfg(not(multiproc_loom))]
    pub(crate) fn data_ready(&self, probe: bool, give_up: bool) -> bool {
        let st = self.st();
        // SYNC(lock-handshake): with the unlock in `put_with`, as in `wait_for_data`.
        st.put_side.lock.handshake();
        // SYNC(tail-publish)
        let tail = st.tail.pos.load(Ordering::Acquire);
        // Closed or shut down (or a state word scribbled on): a get returns at once.
        if !self.is_empty_at(tail) || self.state() != 0 {
            return true;
        }
        let alive = if give_up {
            self.any_alive_at_give_up(true)
        } else {
            self.any_alive(true, probe)
        };
        !alive
    }

    /// Whether a message seems to be there: two loads, no handshake and no peer count, for a
    /// waiter's spinning only (a `false` proves nothing; [`data_ready`](Self::data_ready)
    /// decides before a sleep).
    #[cfg(not(multiproc_loom))]
    #[inline]
    pub(crate) fn data_hint(&self) -> bool {
        // SYNC(tail-publish)
        !self.is_empty_at(self.st().tail.pos.load(Ordering::Acquire))
    }

    /// Undoes [`watch_data`](Self::watch_data). `woken`: the caller's sleep took a wake of the
    /// data word, which a producer meant for one sleeper (a put wakes one); it is passed on to
    /// another sleeper, if one is counted, so that a blocking get in another thread or process
    /// does not sleep through the message the caller may leave to it.
    #[cfg(not(multiproc_loom))]
    pub(crate) fn unwatch_data(&self, woken: bool) {
        let w = &self.st().data_wait.word;
        w.withdraw();
        if woken {
            w.notify(1);
        }
    }

    /// The tail to test for emptiness: our copy if it shows messages (no cache miss on the
    /// producer's line), else the real tail. Read without the get lock, the copy is only a hint
    /// (`take` checks again under the lock); the real tail is read whenever it says empty.
    #[inline]
    pub(super) fn tail_for_reading(&self) -> u64 {
        let st = self.st();
        let head = st.head.pos.load(Ordering::Acquire);
        match self.get_cache.get(head) {
            Some(cached) if unpack(cached).0 != unpack(head).0 => cached,
            // SYNC(tail-publish)
            _ => st.tail.pos.load(Ordering::Acquire),
        }
    }

    #[inline]
    pub(super) fn is_empty_at(&self, tail: u64) -> bool {
        unpack(tail).0 == unpack(self.st().head.pos.load(Ordering::Acquire)).0
    }

    /// One round of waiting while the ring looked empty with `tail == observed_tail`: spin,
    /// then sleep on the data futex. `Ok` means "look again".
    pub(super) fn wait_for_data(
        &self,
        waiter: &mut Waiter,
        observed_tail: u64,
        deadline: Option<Instant>,
    ) -> Result<(), GetFail> {
        let st = self.st();
        if !waiter.spun {
            // Spin for a while (see `Spinner`): a peer that answers soon finds us awake. Once a
            // spin has run out, this get sleeps (another consumer may take what arrives).
            // SYNC(tail-publish)
            if self.get_spin.spin(deadline, || {
                st.tail.pos.load(Ordering::Acquire) != observed_tail
            }) {
                return Ok(());
            }
            waiter.spun = true;
        }
        let prober = waiter.prober.get_or_insert_with(Prober::new);
        let probe = prober.due();
        let state = self.state();
        if state != 0 {
            return self.refused(state, observed_tail, deadline);
        }
        if !self.any_alive(true, probe) {
            // Senders are gone; but one may have published just before leaving.
            if st.tail.pos.load(Ordering::SeqCst) == observed_tail {
                return Err(GetFail::Disconnected);
            }
            return Ok(());
        }
        let seen = st.data_wait.word.observe();
        // Pairs with a producer's unlock: we see its tail, or it sees us asleep.
        let moved = || {
            // SYNC(lock-handshake): with the unlock in `put_with`.
            st.put_side.lock.handshake();
            st.tail.pos.load(Ordering::Acquire) != observed_tail
                || self.state() != 0
                || !self.any_alive(true, false)
        };
        match prober.sleep_budget(deadline) {
            Some(timeout) => {
                st.data_wait.word.wait_unless(seen, Some(timeout), moved);
                Ok(())
            }
            None if moved() => Ok(()),
            None => Err(self.empty_or_disconnected(observed_tail)),
        }
    }

    /// For a get that found the ring empty at `observed_tail` in state `state` (not open):
    /// `Ok` to look again, or why it fails. A closed or shut-down ring is drained once no put
    /// that missed the state can still publish: this waits out such puts (until `deadline`;
    /// then the ring is still `Empty`) and looks at `tail` once more.
    #[cold]
    fn refused(
        &self,
        state: u32,
        observed_tail: u64,
        deadline: Option<Instant>,
    ) -> Result<(), GetFail> {
        let drained = match Lifecycle::of(state) {
            Lifecycle::Open => return Ok(()),
            // Whatever is still queued is dropped (see `Ring::shutdown`).
            Lifecycle::ShutDownImmediate => return Err(GetFail::ShutDown),
            Lifecycle::Closed => GetFail::Disconnected,
            Lifecycle::ShutDown => GetFail::ShutDown,
        };
        if !self.settle_puts(deadline) {
            return Err(GetFail::Empty);
        }
        // SYNC(tail-publish): the puts waited out published before they let the lock go.
        if self.st().tail.pos.load(Ordering::Acquire) == observed_tail {
            Err(drained)
        } else {
            Ok(())
        }
    }

    /// The error of a get that gives up on an empty ring: `Disconnected` if no sender is left
    /// (as far as the counts say) and nothing arrived meanwhile. (A closed or shut-down ring
    /// is the business of [`refused`](Self::refused): the last look before giving up saw it
    /// open.)
    fn empty_or_disconnected(&self, observed_tail: u64) -> GetFail {
        let gone = !self.any_alive_at_give_up(true);
        if gone && self.st().tail.pos.load(Ordering::SeqCst) == observed_tail {
            GetFail::Disconnected
        } else {
            GetFail::Empty
        }
    }

    /// For an immediate shutdown, once no put can publish any more: drops every queued
    /// message, under the get lock (a get that took one before stays a task in flight), and
    /// counts the dropped ones as done tasks.
    ///
    /// Crash consistency: the tasks are counted before `head` moves. A caller killed between
    /// the two leaves the messages queued but counted done; gets fail at once anyway, and a
    /// later immediate shutdown finds them again and counts them only as far as tasks are
    /// unfinished ([`finish_dropped`](Self::finish_dropped)), so `join` can return early in
    /// that case, never wait for good.
    pub(super) fn drop_queued(&self) {
        let st = self.st();
        // A dead holder never moved `head` half-way: nothing to repair.
        let held = st.get_side.lock.hold(None);
        let head = st.head.pos.load(Ordering::Relaxed);
        // SYNC(tail-publish): the messages we drop are published.
        let tail = st.tail.pos.load(Ordering::Acquire);
        let queued = unpack(tail).0.wrapping_sub(unpack(head).0);
        if queued != 0 {
            self.finish_dropped(self.tasks_between(head, tail, queued));
            // Any position is safe to store: every reader checks it before it forms a
            // pointer (a scribbled `tail` copied here gives `Corrupted`, as it would anyway).
            // SYNC(head-free)
            st.head.pos.store(tail, Ordering::Release);
        }
        drop(held);
    }

    /// With the get lock held: how many of the `queued` records between `head` and `tail` are
    /// tasks: whole messages and last fragments (a message's other fragments were counted done
    /// by their producer). Records past a malformed one are counted as tasks, as if whole.
    fn tasks_between(&self, head: u64, tail: u64, queued: u32) -> u32 {
        let mut at = head;
        let mut tasks = 0;
        for walked in 0..queued {
            match self.record_at(at, tail) {
                Ok(Some(rec)) => {
                    if rec.kind == Kind::Plain || rec.last {
                        tasks += 1;
                    }
                    at = rec.next;
                }
                Ok(None) => break,
                Err(_) => return tasks + (queued - walked),
            }
        }
        tasks
    }

    /// Takes up to `max` records, passing each payload to `read`, and frees them with one
    /// `head` store; waits until `deadline` for the first only. `read` returns `false` to end
    /// the batch after the record it was given (which is consumed). Returns how many were
    /// taken (at least one). A malformed record ends the batch before it; it fails only in
    /// first place.
    ///
    /// A message in fragments ends the batch before it; in first place it is taken alone
    /// (assembled as by [`get_with`](Self::get_with), which also resumes a message `resume`
    /// holds).
    pub(crate) fn get_batch(
        &self,
        deadline: Option<Instant>,
        max: usize,
        resume: &Resume,
        mut read: impl FnMut(Foreign<'_>) -> bool,
    ) -> Result<usize, GetFail> {
        if max == 0 {
            return Ok(0);
        }
        if resume.is_pending() {
            return self.get_with(deadline, resume, &mut read).map(|_| 1);
        }
        let st = self.st();
        let mut waiter = Waiter::new();
        loop {
            let observed_tail = self.tail_for_reading();
            if !self.is_empty_at(observed_tail) {
                let held = st.get_side.lock.hold(deadline).ok_or(GetFail::Empty)?;
                let r = self.take_batch(max, &mut read);
                drop(held);
                match r {
                    Ok(0) => continue, // another consumer took them first
                    Ok(n) => {
                        st.space_wait
                            .word
                            .notify_after_handshake(u32::try_from(n).unwrap_or(u32::MAX));
                        return Ok(n);
                    }
                    Err(GetFail::Fragmented) => {
                        return self.get_with(deadline, resume, &mut read).map(|_| 1);
                    }
                    Err(e) => return Err(e),
                }
            }
            self.wait_for_data(&mut waiter, observed_tail, deadline)?;
        }
    }

    /// With the get lock held: consumes up to `max` records from the head (see `get_batch`).
    fn take_batch(
        &self,
        max: usize,
        read: &mut impl FnMut(Foreign<'_>) -> bool,
    ) -> Result<usize, GetFail> {
        let (head, tail) = self.head_and_tail();
        // Frees what `read` was given when it ends, also when `read` panics (a user's
        // `Deserialize`): the values it returned are the caller's already, and must not be
        // taken again. The record `read` panicked on stays, as with a single get.
        let mut batch = Taken {
            ring: self,
            at: head,
            tail,
            count: 0,
        };
        while batch.count < max {
            let rec = match self.record_at(batch.at, tail) {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) if batch.count == 0 => return Err(e),
                Err(_) => break,
            };
            if rec.kind != Kind::Plain {
                // A fragment ends the batch before it; in first place the caller takes the
                // message alone.
                if batch.count == 0 {
                    return Err(GetFail::Fragmented);
                }
                break;
            }
            let more = read(rec.payload);
            batch.at = rec.next;
            batch.count += 1;
            if !more {
                break;
            }
        }
        Ok(batch.count)
    }

    /// With the get lock held: the head, and the tail to read up to (our copy while it shows
    /// messages, else the real one).
    #[inline]
    pub(super) fn head_and_tail(&self) -> (u64, u64) {
        let st = self.st();
        let head = st.head.pos.load(Ordering::Relaxed);
        let tail = match self.get_cache.get(head) {
            Some(cached) if unpack(cached).0 != unpack(head).0 => cached,
            _ => {
                // SYNC(tail-publish)
                let tail = st.tail.pos.load(Ordering::Acquire);
                self.get_cache.set(head, tail);
                tail
            }
        };
        (head, tail)
    }

    /// With the get lock held: the record at `head` (read before `tail`), with its payload
    /// and the head past it; `None` if `head` has reached `tail`. Every position and length
    /// read from the segment is checked before it forms a pointer.
    #[inline]
    pub(super) fn record_at(&self, head: u64, tail: u64) -> Result<Option<Rec<'_>>, GetFail> {
        let (hm, mut hp) = unpack(head);
        let (tm, tp) = unpack(tail);
        if hm == tm {
            return Ok(None);
        }
        if hp % RECORD_HEADER != 0 || tp % RECORD_HEADER != 0 {
            // Records start 8-aligned: a scribbled position, which would make us read a header
            // through a misaligned pointer.
            return Err(GetFail::Corrupted("ring positions"));
        }
        let mut avail = tp.wrapping_sub(hp);
        if avail > self.cap {
            return Err(GetFail::Corrupted("ring positions"));
        }
        let mut off = hp & (self.cap - 1);
        // SAFETY: `off` is in the region and 8-aligned (records are 8-aligned).
        let mut word = unsafe { self.header(off) }.load(Ordering::Relaxed);
        if word == WRAP {
            let skip = self.cap - off;
            if skip >= avail {
                return Err(GetFail::Corrupted("wrap marker"));
            }
            hp = hp.wrapping_add(skip);
            avail -= skip;
            off = 0;
            // SAFETY: offset 0 is in the region and aligned.
            word = unsafe { self.header(0) }.load(Ordering::Relaxed);
        }
        // WRAP first: it has the FRAG bit too (and a second one in a row is corrupt).
        let (kind, len) = if word == WRAP {
            return Err(GetFail::Corrupted("record length"));
        } else if word & FRAG == 0 {
            (Kind::Plain, word)
        } else if word & FRAG_FIRST != 0 {
            (Kind::First, word & FRAG_LEN)
        } else {
            (Kind::Next, word & FRAG_LEN)
        };
        if len > self.cap - RECORD_HEADER
            || record_len(len) > avail
            || record_len(len) > self.cap - off
        {
            return Err(GetFail::Corrupted("record length"));
        }
        // SAFETY: [off + 8, off + 8 + len) lies inside the region (checked), in the mapping that
        // lives as long as `self`.
        let payload = unsafe { Foreign::new(self.at(off + RECORD_HEADER), len as usize) };
        let next = pack(hm.wrapping_add(1), hp.wrapping_add(record_len(len)));
        Ok(Some(Rec {
            kind,
            last: kind == Kind::Next && word & FRAG_LAST != 0,
            payload,
            next,
        }))
    }

    /// With the get lock held: frees every record before `next`.
    #[inline]
    pub(super) fn free_up_to(&self, next: u64, tail: u64) {
        self.get_cache.set(next, tail);
        // SYNC(head-free): the records are read; a producer that loads this head may write
        // over them.
        self.st().head.pos.store(next, Ordering::Release);
    }
}
