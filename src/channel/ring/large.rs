//! Messages of any size on the get side: a message that came in fragments is assembled in
//! private memory under the get lock (see "Messages of any size" in the ring's module note);
//! one a timed get could not finish waits in the handle's [`Resume`] for the next get.
#![allow(unsafe_code)]
//! # Safety
//! A [`Partial`] owns the get-lock hold it records: it is made only where a `Held` of the get
//! lock is forgotten, and taken out of its `Resume` once (under the mutex) to be adopted or
//! released, by the process that made it (checked by its `pid`).

use crate::primitive::Ordering;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::Ring;
use super::get::{GetFail, Kind, Rec, Waiter};
use super::layout::TOTAL_LEN;
use crate::MAX_MESSAGE_LEN;
use crate::segment::Foreign;
use crate::sync::raw_lock::Held;
use crate::sys;

/// Most bytes a get reserves for a message before its bytes arrive: a hostile first fragment
/// may claim [`MAX_MESSAGE_LEN`] bytes and send none.
const RESERVE_UP_FRONT: usize = 64 << 20;

/// Where a message in fragments is assembled.
#[derive(Debug)]
pub(crate) enum Dest<'b> {
    /// A vector of its own, grown as the bytes arrive.
    Vec(Vec<u8>),
    /// The caller's buffer, with how many bytes are in it so far.
    Buf(&'b mut [u8], usize),
}

impl<'b> Dest<'b> {
    fn got(&self) -> usize {
        match self {
            Self::Vec(v) => v.len(),
            Self::Buf(_, n) => *n,
        }
    }

    /// Adds a fragment's bytes; the caller checked that they fit the message's total, which
    /// fits a buffer.
    fn append(&mut self, bytes: Foreign<'_>) {
        match self {
            Self::Vec(v) => bytes.append_to(v),
            Self::Buf(b, n) => {
                bytes.copy_to(&mut b[*n..*n + bytes.len()]);
                *n += bytes.len();
            }
        }
    }

    /// The bytes so far, in a vector (for a [`Partial`]).
    fn into_vec(self) -> Vec<u8> {
        match self {
            Self::Vec(v) => v,
            Self::Buf(b, n) => b[..n].to_vec(),
        }
    }

    /// The caller's buffer back, if it was one (for the next message).
    fn into_buf(self) -> Option<&'b mut [u8]> {
        match self {
            Self::Vec(_) => None,
            Self::Buf(b, _) => Some(b),
        }
    }
}

/// A message a timed get began and could not finish by its deadline: its bytes so far, and the
/// get lock, still held (its [`Held`] forgotten) by thread `tid` of process `pid`.
#[derive(Debug)]
struct Partial {
    bytes: Vec<u8>,
    total: usize,
    pid: u32,
    tid: u32,
}

/// A receiving handle's message in the middle of assembly (see [`Partial`]), which the next
/// get on the handle resumes, from any thread of the process. `pending` is read on every get:
/// one relaxed load of a word no other process touches.
#[derive(Debug, Default)]
pub(crate) struct Resume {
    pending: AtomicBool,
    partial: Mutex<Option<Partial>>,
}

impl Resume {
    /// Whether a message is in the middle of assembly.
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn stash(&self, p: Partial) {
        let mut slot = self
            .partial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(p);
        self.pending
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The total length of the message in assembly, if there is one (a loan cannot hold it).
    pub(crate) fn pending_total(&self) -> Option<usize> {
        if !self.is_pending() {
            return None;
        }
        let slot = self
            .partial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.as_ref().map(|p| p.total)
    }

    fn take(&self) -> Option<Partial> {
        if !self.is_pending() {
            return None;
        }
        let mut slot = self
            .partial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.pending
            .store(false, std::sync::atomic::Ordering::Relaxed);
        slot.take()
    }
}

/// How far past its deadline a get may go on through records that deliver nothing (orphans,
/// fragments of a message not yet complete, messages dropped): once the deadline has passed,
/// a ring's worth of records (as many as can be queued at once), so that a peer streaming
/// fragments that never make a message cannot keep a timed get past its deadline for good,
/// while a try still takes a message whose fragments are there.
pub(super) struct Overrun {
    deadline: Option<Instant>,
    /// Records left once the deadline has passed; `None` until then.
    left: Option<u32>,
    allowance: u32,
}

impl Overrun {
    pub(super) fn new(ring: &Ring, deadline: Option<Instant>) -> Self {
        Self {
            deadline,
            left: None,
            allowance: ring.max_messages,
        }
    }

    /// Counts one record gone through without delivering a message: `true` once the
    /// deadline has passed and the allowance is spent (time to give up).
    pub(super) fn spent(&mut self) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        match &mut self.left {
            Some(0) => true,
            Some(left) => {
                *left -= 1;
                false
            }
            None => {
                if Instant::now() >= deadline {
                    self.left = Some(self.allowance);
                }
                false
            }
        }
    }
}

/// How the assembly of a message ended.
enum Step<'b> {
    /// Complete; the get lock is released.
    Done(Dest<'b>),
    /// The message will never complete (its producer gave up or died): dropped, the get lock
    /// released; the caller's buffer back, for the next message.
    Dropped(Option<&'b mut [u8]>),
    /// Failed: the get lock is released, or, for `Empty`, kept with the bytes in `Resume`.
    Fail(GetFail),
}

/// Why a wait for the next fragment ended.
enum Wait {
    /// Look again.
    Again,
    /// The producer let the put lock go (or died) without publishing more.
    Abandoned,
    /// The deadline passed.
    Timeout,
}

impl Ring {
    /// Takes the message at the head, waiting until `deadline`: a whole record goes to
    /// `small`, with the caller's buffer `buf`; a message in fragments is assembled into
    /// `buf` (or a vector of its own) and goes to `large`. With `buf`, a message longer than
    /// it is `BufferTooSmall(len)` and stays in the queue.
    ///
    /// A message whose assembly the deadline cut short waits in `resume`, with the get lock,
    /// for the next call, which finishes it before anything else. Fragments with no message
    /// begun (their consumer died, or their producer gave up) are skipped; a message whose
    /// producer gave up or died is dropped, and the get goes on to the next message.
    pub(crate) fn get_msg<'b, R>(
        &self,
        deadline: Option<Instant>,
        mut buf: Option<&'b mut [u8]>,
        resume: &Resume,
        small: impl FnOnce(Foreign<'_>, Option<&'b mut [u8]>) -> R,
        large: impl FnOnce(Dest<'b>) -> R,
    ) -> Result<R, GetFail> {
        let st = self.st();
        let mut small = Some(small);
        let mut large = Some(large);
        let mut waiter = Waiter::new();
        let mut overrun = Overrun::new(self, deadline);
        loop {
            if resume.is_pending() {
                if let Some(step) = self.resume_partial(resume, &mut buf, &mut overrun) {
                    match step {
                        Step::Done(dest) => return Ok((large.take().expect("once"))(dest)),
                        Step::Dropped(b) => {
                            if overrun.spent() {
                                return Err(GetFail::Empty);
                            }
                            buf = b;
                        }
                        Step::Fail(e) => return Err(e),
                    }
                }
            }
            let observed_tail = self.tail_for_reading();
            if !self.is_empty_at(observed_tail) {
                // A dead holder never moved `head` past what it did not read.
                let held = st.get_side.lock.hold(deadline).ok_or(GetFail::Empty)?;
                match self.take_msg(held, buf, resume, &mut overrun, &mut small) {
                    Took::Small(r) => return r,
                    Took::Step(Step::Done(dest)) => {
                        return Ok((large.take().expect("once"))(dest));
                    }
                    Took::Step(Step::Dropped(b)) => {
                        if overrun.spent() {
                            return Err(GetFail::Empty);
                        }
                        buf = b;
                        continue;
                    }
                    Took::Nothing(b) => {
                        buf = b;
                        continue;
                    }
                    Took::Step(Step::Fail(e)) => return Err(e),
                }
            }
            self.wait_for_data(&mut waiter, observed_tail, deadline)?;
        }
    }

    /// Picks up the message `resume` holds, if it is ours: `None` if there was none (or it
    /// belonged to the process we were forked from, or someone took the get lock over from
    /// the thread that held it: then its bytes are gone, and the rest of it is skipped).
    fn resume_partial<'b>(
        &self,
        resume: &Resume,
        buf: &mut Option<&'b mut [u8]>,
        overrun: &mut Overrun,
    ) -> Option<Step<'b>> {
        let p = resume.take()?;
        if p.pid != sys::current_process().tid {
            // Inherited across `fork`: the lock is the parent's, not ours to touch.
            return None;
        }
        // SAFETY: `p` owns the forgotten hold of thread `p.tid` of this process (module
        // note; the pid is checked above), and was taken out of `resume`, so no one else
        // adopts or releases it.
        let held = unsafe { self.st().get_side.lock.adopt(p.tid) }?;
        let dest = match buf.take() {
            Some(b) if p.total > b.len() => {
                // Stays ours, for a get with a buffer large enough (or without one).
                std::mem::forget(held);
                let total = p.total;
                resume.stash(Partial {
                    tid: sys::current_thread().tid,
                    ..p
                });
                return Some(Step::Fail(GetFail::BufferTooSmall(total)));
            }
            Some(b) => {
                let n = p.bytes.len();
                b[..n].copy_from_slice(&p.bytes);
                Dest::Buf(b, n)
            }
            None => Dest::Vec(p.bytes),
        };
        Some(self.assemble(held, dest, p.total, overrun, resume))
    }

    /// With the get lock held: takes the message at the head. Skips fragments with no message
    /// begun; a first fragment begins an assembly.
    fn take_msg<'b, R>(
        &self,
        held: Held<'_>,
        buf: Option<&'b mut [u8]>,
        resume: &Resume,
        overrun: &mut Overrun,
        small: &mut Option<impl FnOnce(Foreign<'_>, Option<&'b mut [u8]>) -> R>,
    ) -> Took<'b, R> {
        let st = self.st();
        loop {
            let (head, tail) = self.head_and_tail();
            let rec = match self.record_at(head, tail) {
                Ok(Some(rec)) => rec,
                Ok(None) => return Took::Nothing(buf), // another consumer took it first
                Err(e) => return Took::Small(Err(e)),
            };
            match rec.kind {
                Kind::Plain => {
                    let len = rec.payload.len();
                    if buf.as_ref().is_some_and(|b| len > b.len()) {
                        return Took::Small(Err(GetFail::BufferTooSmall(len)));
                    }
                    let r = (small.take().expect("once"))(rec.payload, buf);
                    self.free_up_to(rec.next, tail);
                    drop(held);
                    // As in a put: the unlock pairs with a producer's handshake.
                    st.space_wait.word.notify_after_handshake(1);
                    return Took::Small(Ok(r));
                }
                Kind::Next => {
                    // An orphan: its message was begun by a consumer that died, or given up
                    // by its producer. Not a task (see `free_fragment`).
                    self.free_fragment(&rec, tail);
                    if overrun.spent() {
                        return Took::Small(Err(GetFail::Empty));
                    }
                }
                Kind::First => {
                    let Some((total, chunk)) = first_fragment(&rec) else {
                        self.free_fragment(&rec, tail);
                        return Took::Small(Err(GetFail::Corrupted("first fragment")));
                    };
                    if let Some(b) = &buf {
                        if total > b.len() {
                            return Took::Small(Err(GetFail::BufferTooSmall(total)));
                        }
                    }
                    let mut dest = match buf {
                        Some(b) => Dest::Buf(b, 0),
                        None => Dest::Vec(Vec::with_capacity(total.min(RESERVE_UP_FRONT))),
                    };
                    dest.append(chunk);
                    if dest.got() == total {
                        self.free_up_to(rec.next, tail);
                        drop(held);
                        st.space_wait.word.notify_after_handshake(1);
                        return Took::Step(Step::Done(dest));
                    }
                    self.free_fragment(&rec, tail);
                    return Took::Step(self.assemble(held, dest, total, overrun, resume));
                }
            }
        }
    }

    /// With the get lock held: consumes a fragment that does not end a message delivered.
    /// Only a message's last fragment stands for a task (see `TaskLine`; its producer counted
    /// the others done as it published them): a last fragment dropped undelivered is counted
    /// done before `head` moves past it (as `drop_queued` does).
    pub(super) fn free_fragment(&self, rec: &Rec<'_>, tail: u64) {
        if rec.last {
            self.finish_dropped(1);
        }
        self.free_up_to(rec.next, tail);
        // We may keep the get lock: no unlock for a producer's handshake to pair with.
        // SYNC(sleepers-rmw)
        self.st().space_wait.word.notify(1);
    }

    /// With the get lock held: adds the following fragments to `dest` until it holds `total`
    /// bytes.
    fn assemble<'b>(
        &self,
        held: Held<'_>,
        mut dest: Dest<'b>,
        total: usize,
        overrun: &mut Overrun,
        resume: &Resume,
    ) -> Step<'b> {
        let st = self.st();
        let deadline = overrun.deadline;
        let mut waiter = Waiter::new();
        // Keeps the lock and the bytes for the next get on this handle.
        let keep = |held: Held<'_>, dest: Dest<'b>| {
            std::mem::forget(held);
            resume.stash(Partial {
                bytes: dest.into_vec(),
                total,
                pid: sys::current_process().tid,
                tid: sys::current_thread().tid,
            });
            Step::Fail(GetFail::Empty)
        };
        loop {
            let (head, tail) = self.head_and_tail();
            let rec = match self.record_at(head, tail) {
                Ok(Some(rec)) => rec,
                Ok(None) => match self.wait_fragment(&mut waiter, tail, deadline) {
                    Wait::Again => continue,
                    Wait::Abandoned => {
                        drop(held);
                        return Step::Dropped(dest.into_buf());
                    }
                    Wait::Timeout => return keep(held, dest),
                },
                Err(e) => {
                    drop(held);
                    return Step::Fail(e);
                }
            };
            if rec.kind != Kind::Next {
                // A new message at the head: ours was given up (or its producer died).
                drop(held);
                return Step::Dropped(dest.into_buf());
            }
            if rec.payload.len() > total - dest.got() {
                self.free_fragment(&rec, tail);
                drop(held);
                return Step::Fail(GetFail::Corrupted("fragment length"));
            }
            dest.append(rec.payload);
            if dest.got() == total {
                self.free_up_to(rec.next, tail);
                drop(held);
                st.space_wait.word.notify_after_handshake(1);
                return Step::Done(dest);
            }
            self.free_fragment(&rec, tail);
            if overrun.spent() {
                return keep(held, dest);
            }
        }
    }

    /// With the get lock held, in the middle of a message, nothing published past
    /// `observed_tail`: spins, then checks that the producer still holds the put lock (else
    /// it let the message go, or died: `Abandoned`), then sleeps until the next fragment, a
    /// probe of the producer, or `deadline`.
    fn wait_fragment(
        &self,
        waiter: &mut Waiter,
        observed_tail: u64,
        deadline: Option<Instant>,
    ) -> Wait {
        let st = self.st();
        // SYNC(tail-publish), for every load of `tail` here.
        let moved = || st.tail.pos.load(Ordering::Acquire) != observed_tail;
        if !waiter.spun {
            if self.get_spin.spin(deadline, moved) {
                return Wait::Again;
            }
            waiter.spun = true;
        }
        let lock = &st.put_side.lock;
        let prober = waiter
            .prober
            .get_or_insert_with(crate::sync::wait::Prober::new);
        // A free lock is checked at once; a held one when a probe of its owner is due (taking
        // it with a deadline of now probes the owner once, and takes over a dead one's).
        if !lock.is_locked() || prober.due() {
            if let Some((held, _)) = self.hold_put_side(Some(Instant::now())) {
                let again = moved();
                drop(held);
                return if again { Wait::Again } else { Wait::Abandoned };
            }
        }
        let seen = st.data_wait.word.observe();
        match prober.sleep_budget(deadline) {
            Some(timeout) => {
                // A producer publishes a following fragment, or abandons, then wakes with an
                // RMW of the sleepers (SYNC(sleepers-rmw)); it publishes the last one, then
                // unlocks and wakes after a plain look at the sleepers, which our handshake
                // on its lock word orders (SYNC(lock-handshake)).
                st.data_wait.word.wait_unless(seen, Some(timeout), || {
                    lock.handshake();
                    moved() || !lock.is_locked()
                });
                Wait::Again
            }
            None if moved() => Wait::Again,
            None => Wait::Timeout,
        }
    }

    /// Lets go of the message `resume` holds, if this process holds one: releases the get
    /// lock its thread kept (unless someone took it over meanwhile). The rest of the message
    /// is then skipped by the next consumer.
    pub(crate) fn release_resume(&self, resume: &Resume) {
        if let Some(p) = resume.take() {
            if p.pid == sys::current_process().tid {
                // SAFETY: as in `resume_partial`: `p` owns the forgotten hold of thread
                // `p.tid` of this process, and was taken out of `resume`.
                unsafe { self.st().get_side.lock.release_from(p.tid) };
                self.st().space_wait.word.notify_all();
            }
        }
    }
}

/// What `take_msg` did.
enum Took<'b, R> {
    /// A whole record went to `small` (or the get failed before any assembly).
    Small(Result<R, GetFail>),
    /// A message in fragments was assembled, or not.
    Step(Step<'b>),
    /// Nothing at the head any more; the get lock is released.
    Nothing(Option<&'b mut [u8]>),
}

/// The total length and the first bytes of a first fragment, if they make sense: the total
/// at most [`MAX_MESSAGE_LEN`], and no fewer bytes than the fragment carries.
pub(super) fn first_fragment<'a>(rec: &Rec<'a>) -> Option<(usize, Foreign<'a>)> {
    let n = TOTAL_LEN as usize;
    let mut total = [0u8; 8];
    rec.payload.slice(0, n)?.copy_to(&mut total);
    let total = usize::try_from(u64::from_le_bytes(total)).ok()?;
    let chunk = rec.payload.slice(n, rec.payload.len() - n)?;
    (total <= MAX_MESSAGE_LEN && chunk.len() <= total).then_some((total, chunk))
}
