//! The shared-memory ring under `Queue` and `Pipe`: variable-length records in a byte ring,
//! one producer at a time and one consumer at a time.
#![allow(unsafe_code)]
//! # Safety
//! The payload of a ring segment is a `RingState` (atomics only) followed by `capacity` data
//! bytes. `Ring::from_segment` validates `capacity` (a power of two that fits the payload) and
//! caches it, so every data offset `pos & (capacity - 1)` plus a length checked against
//! `capacity - offset` stays inside the mapping, which lives as long as the `Ring`.
//!
//! References into the data region are formed only for bytes that no cooperating process
//! writes meanwhile: a producer writes only between `tail` and `head + capacity` while holding
//! the put lock, and a consumer reads only between `head` and `tail` while holding the get lock;
//! both regions are disjoint from each other by the protocol below.
//!
//! # Protocol
//!
//! `tail` and `head` are 64-bit words packing (messages << 32 | byte position); positions grow
//! without bound (wrapping at 2^32) and are reduced modulo `capacity` to address the data.
//! A producer, under the put lock, writes a record (8-byte header with the payload length, the
//! payload, padding to 8) at `tail`, then publishes it by storing the new `tail` (Release).
//! A consumer, under the get lock, reads the record at `head` once `tail` has moved past it
//! (Acquire), then frees it by storing the new `head` (Release). A record that would cross the
//! end of the data region is preceded by a wrap marker that fills the rest of the region.
//!
//! Each side keeps its lock and a cached copy of the other side's position on a cache line of
//! its own, and re-reads the other side's real position only when the copy says full (put) or
//! empty (get), so a message costs few cache-line transfers between the cores.
//!
//! Crash consistency follows: a producer killed before its `tail` store leaves nothing visible
//! (the next producer takes the put lock as owner-died and overwrites the bytes); a consumer
//! killed before its `head` store leaves the message in place for the next consumer; one killed
//! after it loses only that message.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::OpenError;
use crate::segment::Segment;
use crate::sync::raw_lock::{Acquired, RawLock};
use crate::sync::wait::{Backoff, Prober, remaining};
use crate::sys::{self, Liveness, ThreadId};

/// Most processes that can hold handles of one ring at once.
pub(crate) const MAX_PEERS: usize = 128;
/// Record header size; records are padded to this alignment.
const RECORD_HEADER: u32 = 8;
/// Header length value that marks "skip to the start of the data region".
const WRAP: u32 = u32::MAX;
/// Smallest data region.
pub(crate) const MIN_CAPACITY: u32 = 64;

fn record_len(payload: u32) -> u32 {
    RECORD_HEADER + payload.div_ceil(8) * 8
}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

fn pack(msgs: u32, pos: u32) -> u64 {
    (u64::from(msgs) << 32) | u64::from(pos)
}

#[repr(C)]
#[derive(Debug, Default)]
struct ConfigLine {
    capacity: AtomicU32,
    max_messages: AtomicU32,
    closed: AtomicU32,
    /// Sending handles over all peers (sum of `Peer::senders`).
    senders: AtomicU32,
    /// Receiving handles over all peers.
    receivers: AtomicU32,
    _r: [AtomicU32; 11],
}

/// One side's lock, and its cached copy of the other side's position (valid under the lock),
/// on a line of its own: the other side never touches it, so taking the lock costs no miss.
#[repr(C)]
#[derive(Debug, Default)]
struct SideLine {
    lock: RawLock,
    /// Put side: a copy of `head` (never ahead of it). Get side: a copy of `tail`.
    cached: AtomicU64,
    _r: [AtomicU64; 5],
}

/// A published position (`tail` or `head`) on a line of its own.
#[repr(C)]
#[derive(Debug, Default)]
struct PosLine {
    pos: AtomicU64,
    _r: [AtomicU64; 7],
}

/// A futex word that sleepers wait on and wakers bump, with a count of sleepers.
#[repr(C)]
#[derive(Debug, Default)]
struct WaitLine {
    seq: AtomicU32,
    sleepers: AtomicU32,
    _r: [AtomicU32; 14],
}

/// Task accounting for `JoinableQueue`: unfinished tasks are the messages ever published
/// (the message count in `tail`) minus `done`, so a producer killed mid-put can never leave a
/// task that nobody can finish.
#[repr(C)]
#[derive(Debug, Default)]
struct TaskLine {
    /// Tasks marked done, wrapping like the message counts (the futex word `join` waits on).
    done: AtomicU32,
    sleepers: AtomicU32,
    _r: [AtomicU32; 14],
}

/// One process attached to the ring, with how many sending and receiving handles it holds.
#[repr(C)]
#[derive(Debug, Default)]
struct Peer {
    pid: AtomicU32,
    senders: AtomicU32,
    receivers: AtomicU32,
    _r: AtomicU32,
    start: AtomicU64,
    _r2: AtomicU64,
}

#[repr(C)]
#[derive(Debug)]
pub(crate) struct RingState {
    config: ConfigLine,
    put_side: SideLine,
    tail: PosLine,
    get_side: SideLine,
    head: PosLine,
    data_wait: WaitLine,
    space_wait: WaitLine,
    tasks: TaskLine,
    peers: [Peer; MAX_PEERS],
}

const STATE_LEN: usize = size_of::<RingState>();
const _: () = assert!(STATE_LEN % 64 == 0);
const _: () = assert!(size_of::<ConfigLine>() == 64 && size_of::<SideLine>() == 64);
const _: () = assert!(size_of::<PosLine>() == 64);
const _: () = assert!(size_of::<WaitLine>() == 64 && size_of::<Peer>() == 32);

/// Why a put did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutFail {
    /// No room before the deadline (or right now, for a try).
    Full,
    /// Every receiver is gone.
    Disconnected,
    /// The queue was closed.
    Closed,
    /// The message can never fit.
    TooBig,
}

/// Why a get returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GetFail {
    /// Nothing arrived before the deadline (or right now, for a try).
    Empty,
    /// Every sender is gone and the ring is drained.
    Disconnected,
    /// The record at the head is malformed: the segment was scribbled on.
    Corrupted(&'static str),
    /// The caller's buffer is too small; the message stays in the queue.
    BufferTooSmall(usize),
}

/// Spin-then-sleep state of one blocking get.
struct Waiter {
    spin_start: Option<Instant>,
    spun: bool,
    slept: bool,
    prober: Option<Prober>,
}

impl Waiter {
    fn new() -> Self {
        Self {
            spin_start: None,
            spun: false,
            slept: false,
            prober: None,
        }
    }
}

/// Bounds of the adaptive spin of a waiting get, in nanoseconds.
const MIN_SPIN_NS: u32 = 2_000;
const MAX_SPIN_NS: u32 = 100_000;
const INITIAL_SPIN_NS: u32 = 50_000;

/// First backoff step of a put that found the ring full (2^step spins before the next look).
const FULL_BACKOFF_STEP: u32 = 6;

/// Which kind of handle a process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Role {
    pub(crate) send: bool,
    pub(crate) recv: bool,
}

/// Validated view of a ring segment.
#[derive(Debug)]
pub(crate) struct Ring {
    seg: Segment,
    state: NonNull<RingState>,
    data: NonNull<u8>,
    cap: u32,
    max_messages: u32,
    /// This process's current spin budget for gets (see `adapt_spin`).
    spin_ns: AtomicU32,
}

// SAFETY: all shared state is atomics; data bytes are accessed under the protocol (module note).
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Payload bytes for a ring of `capacity` data bytes.
    pub(crate) fn payload_len(capacity: u32) -> usize {
        STATE_LEN + capacity as usize
    }

    /// Rounds a requested byte capacity to what a ring can have.
    pub(crate) fn round_capacity(bytes: usize) -> u32 {
        let b = bytes.clamp(MIN_CAPACITY as usize, 1 << 31);
        b.next_power_of_two() as u32
    }

    /// Initialises a zeroed payload.
    pub(crate) fn init(payload: NonNull<u8>, capacity: u32, max_messages: u32) {
        // SAFETY: the zeroed payload starts with a RingState (payload_len >= STATE_LEN).
        let st = unsafe { payload.cast::<RingState>().as_ref() };
        st.config.capacity.store(capacity, Ordering::Relaxed);
        st.config
            .max_messages
            .store(max_messages, Ordering::Relaxed);
    }

    pub(crate) fn from_segment(seg: Segment) -> Result<Self, OpenError> {
        if seg.payload_len() < STATE_LEN {
            return Err(OpenError::Truncated {
                found: seg.payload_len() as u64,
                expected: STATE_LEN as u64,
            });
        }
        let state = seg.payload().cast::<RingState>();
        // SAFETY: the payload holds a RingState (checked above), all atomics.
        let st = unsafe { state.as_ref() };
        let cap = st.config.capacity.load(Ordering::Relaxed);
        let max_messages = st.config.max_messages.load(Ordering::Relaxed);
        if !cap.is_power_of_two() || !(MIN_CAPACITY..=1 << 31).contains(&cap) || max_messages == 0 {
            return Err(OpenError::Corrupted("ring capacity"));
        }
        crate::sync::object::expect_payload(&seg, Self::payload_len(cap))?;
        // SAFETY: STATE_LEN < payload_len (checked), so the data start is inside the mapping.
        let data = unsafe { seg.payload().add(STATE_LEN) };
        Ok(Self {
            seg,
            state,
            data,
            cap,
            max_messages,
            spin_ns: AtomicU32::new(INITIAL_SPIN_NS),
        })
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    fn st(&self) -> &RingState {
        // SAFETY: validated in from_segment; lives as long as self (module note).
        unsafe { self.state.as_ref() }
    }

    /// Most messages at once.
    pub(crate) fn capacity_messages(&self) -> usize {
        self.max_messages as usize
    }

    /// Largest payload that can ever fit: records are at most half the region, which is what
    /// guarantees progress across the wrap. A record that does not fit before the end needs
    /// `to_end + record <= free`; in an empty ring that holds whenever `record <= cap / 2`
    /// (then `to_end < record` means the offset is past the middle, so `record <= offset`).
    pub(crate) fn max_message(&self) -> usize {
        (self.cap / 2 - RECORD_HEADER) as usize
    }

    /// Messages in the ring now (a snapshot).
    pub(crate) fn len(&self) -> usize {
        let (tm, _) = unpack(self.st().tail.pos.load(Ordering::Acquire));
        let (hm, _) = unpack(self.st().head.pos.load(Ordering::Acquire));
        tm.wrapping_sub(hm).min(self.max_messages) as usize
    }

    /// Marks the ring closed for putting; gets drain what is left. Wakes everyone.
    pub(crate) fn close(&self) {
        self.st().config.closed.store(1, Ordering::SeqCst);
        self.wake_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        // SeqCst: a sleeper's last look pairs with `close` (see `wake_all`).
        self.st().config.closed.load(Ordering::SeqCst) != 0
    }

    /// Wakes every sleeper, after a change they re-check once they have announced
    /// themselves (the peer totals, `closed`): the change is a SeqCst write, the sleeper
    /// count a SeqCst read, and a sleeper bumps its count (SeqCst) before its last look, so
    /// either we see it or it sees the change. Nobody asleep: no system call.
    fn wake_all(&self) {
        let st = self.st();
        for w in [&st.data_wait, &st.space_wait] {
            if w.sleepers.load(Ordering::SeqCst) > 0 {
                w.seq.fetch_add(1, Ordering::SeqCst);
                sys::futex_wake_all(&w.seq);
            }
        }
    }

    /// Pointer to data offset `off` (already reduced modulo capacity).
    fn at(&self, off: u32) -> *mut u8 {
        debug_assert!(off < self.cap);
        self.data.as_ptr().wrapping_add(off as usize)
    }

    // ------------------------------------------------------------------------------------
    // Peers

    /// Registers one handle of `role` for the calling process.
    pub(crate) fn attach(&self, role: Role) -> Result<u32, OpenError> {
        let me = sys::current_process();
        let st = self.st();
        let slot = st
            .peers
            .iter()
            .find(|p| {
                p.pid.load(Ordering::Acquire) == me.tid
                    && p.start.load(Ordering::Relaxed) == me.start
            })
            .or_else(|| {
                st.peers.iter().find(|p| {
                    p.pid
                        .compare_exchange(0, me.tid, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                        && {
                            p.start.store(me.start, Ordering::Release);
                            true
                        }
                })
            });
        let Some(peer) = slot else {
            // Maybe dead processes still hold slots: reclaim and try once more.
            if self.reclaim_dead_peers() {
                return self.attach(role);
            }
            return Err(OpenError::TooManyProcesses { max: MAX_PEERS });
        };
        if role.send {
            peer.senders.fetch_add(1, Ordering::SeqCst);
            st.config.senders.fetch_add(1, Ordering::SeqCst);
        }
        if role.recv {
            peer.receivers.fetch_add(1, Ordering::SeqCst);
            st.config.receivers.fetch_add(1, Ordering::SeqCst);
        }
        Ok(me.tid)
    }

    /// Unregisters one handle of `role` that process `pid` registered; wakes the other side if
    /// it was the last of its kind.
    pub(crate) fn detach(&self, role: Role, pid: u32) {
        if sys::current_process().tid != pid {
            return; // inherited across fork and never used here: nothing registered
        }
        self.detach_peer(role, pid);
    }

    /// Unregisters one handle of `role` counted for process `pid` (ourselves, or our parent
    /// when a forked child takes over the count its parent made for it).
    pub(crate) fn detach_peer(&self, role: Role, pid: u32) {
        let st = self.st();
        // Two threads attaching at once may have claimed two slots for this process: take the
        // handle out of one that counts it.
        let ours = |p: &&Peer| p.pid.load(Ordering::Acquire) == pid;
        let dec = |c: &AtomicU32| {
            c.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        };
        if role.send && st.peers.iter().filter(ours).any(|p| dec(&p.senders)) {
            dec(&st.config.senders);
        }
        if role.recv && st.peers.iter().filter(ours).any(|p| dec(&p.receivers)) {
            dec(&st.config.receivers);
        }
        // The slot stays ours (empty) until this process dies: freeing it here could race
        // with another thread of this process attaching to it. Dead processes' slots are
        // reclaimed by `reclaim_dead_peers`.
        // Someone may be waiting for exactly this: let them look.
        self.wake_all();
    }

    /// Frees the slot of a peer whose process died, taking its handles out of the totals.
    fn reclaim(&self, p: &Peer, pid: u32) -> bool {
        let st = self.st();
        let senders = p.senders.swap(0, Ordering::SeqCst);
        let receivers = p.receivers.swap(0, Ordering::SeqCst);
        let sub = |total: &AtomicU32, n: u32| {
            let _ = total.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(n))
            });
        };
        sub(&st.config.senders, senders);
        sub(&st.config.receivers, receivers);
        p.start.store(0, Ordering::Relaxed);
        p.pid
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Probes every attached process (but us) and reclaims the dead; returns whether any was.
    fn reclaim_dead_peers(&self) -> bool {
        let me = sys::current_process();
        let mut freed = false;
        for p in &self.st().peers {
            let pid = p.pid.load(Ordering::Acquire);
            if pid == 0 || pid == me.tid {
                continue;
            }
            let who = ThreadId {
                tid: pid,
                start: p.start.load(Ordering::Relaxed),
            };
            // `start` is either 0 (then the probe checks existence only) or the peer's real
            // start time, so `Reused` reliably means the peer died and its pid was reused.
            if sys::probe_thread(who) != Liveness::Alive {
                freed |= self.reclaim(p, pid);
            }
        }
        if freed {
            self.wake_all();
        }
        freed
    }

    /// Whether some handle that can send (or receive, for `send == false`) is attached. With
    /// `probe`, dead processes are reclaimed first, so their handles stop counting.
    fn any_alive(&self, send: bool, probe: bool) -> bool {
        if probe {
            self.reclaim_dead_peers();
        }
        let c = &self.st().config;
        let total = if send { &c.senders } else { &c.receivers };
        total.load(Ordering::SeqCst) > 0
    }

    /// Whether any handle that can receive is attached (dead ones count until probed).
    pub(crate) fn has_receivers(&self) -> bool {
        self.any_alive(false, false)
    }

    // ------------------------------------------------------------------------------------
    // Putting

    /// Puts one record of `len` payload bytes, filled by `write`, waiting until `deadline`
    /// (`Some(now)` for a try, `None` forever).
    pub(crate) fn put_with(
        &self,
        len: usize,
        deadline: Option<Instant>,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<(), PutFail> {
        if len > self.max_message() {
            return Err(PutFail::TooBig);
        }
        let len = len as u32;
        let st = self.st();
        let mut backoff = Backoff::starting_at(FULL_BACKOFF_STEP);
        let mut prober: Option<Prober> = None;
        loop {
            if self.is_closed() {
                return Err(PutFail::Closed);
            }
            if !self.has_receivers() {
                return Err(PutFail::Disconnected);
            }
            // A dead holder only means its half-written record was never published: the ring
            // is consistent, and we overwrite those bytes.
            let how = st.put_side.lock.acquire(deadline).ok_or(PutFail::Full)?;
            if how == Acquired::OwnerDied {
                st.put_side.lock.mark_consistent();
            }
            // Look at the cached head first: it never runs ahead of the real one, so it can only
            // make us think the ring fuller than it is; re-read the real head only then.
            let mut observed_head = st.put_side.cached.load(Ordering::Relaxed);
            let mut slot = self.reserve(observed_head, len);
            if slot.is_none() {
                observed_head = st.head.pos.load(Ordering::Acquire);
                st.put_side.cached.store(observed_head, Ordering::Relaxed);
                slot = self.reserve(observed_head, len);
            }
            if let Some(slot) = slot {
                let (tail, off, total) = slot;
                // SAFETY: `reserve` checked that [off, off + record) is free space inside the data
                // region, which only we (holding the put lock) write until we publish it.
                let buf = unsafe {
                    std::slice::from_raw_parts_mut(self.at(off + RECORD_HEADER), len as usize)
                };
                write(buf);
                // SAFETY: the header word is inside the reserved, 8-aligned record.
                unsafe { AtomicU32::from_ptr(self.at(off).cast()) }.store(len, Ordering::Relaxed);
                let (tm, tp) = unpack(tail);
                st.tail.pos.store(
                    pack(tm.wrapping_add(1), tp.wrapping_add(total)),
                    Ordering::Release,
                );
                // SAFETY: we hold the put lock.
                unsafe { st.put_side.lock.release() };
                // The unlock orders the tail store against a consumer's sleeper announcement
                // (see `RawLock::handshake`): it sees our tail, or we see it sleeping.
                if st.data_wait.sleepers.load(Ordering::Acquire) > 0 {
                    st.data_wait.seq.fetch_add(1, Ordering::SeqCst);
                    sys::futex_wake(&st.data_wait.seq, 1);
                }
                return Ok(());
            }
            // SAFETY: we hold the put lock.
            unsafe { st.put_side.lock.release() };
            // Full: wait for a consumer to free space.
            if !backoff.is_completed() {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(PutFail::Full);
                }
                backoff.snooze();
                continue;
            }
            let prober = prober.get_or_insert_with(Prober::new);
            let probe = prober.due();
            if !self.any_alive(false, probe) {
                return Err(PutFail::Disconnected);
            }
            let seq = st.space_wait.seq.load(Ordering::SeqCst);
            st.space_wait.sleepers.fetch_add(1, Ordering::SeqCst);
            st.get_side.lock.handshake();
            let unchanged = st.head.pos.load(Ordering::Acquire) == observed_head
                && !self.is_closed()
                && self.any_alive(false, false);
            let timeout = prober.sleep_budget(deadline);
            if unchanged {
                if let Some(t) = timeout {
                    let _ = sys::futex_wait(&st.space_wait.seq, seq, Some(t));
                }
            }
            st.space_wait.sleepers.fetch_sub(1, Ordering::SeqCst);
            if timeout.is_none() {
                return Err(PutFail::Full);
            }
        }
    }

    /// With the put lock held: finds room for a record of `len` payload bytes. Writes a wrap
    /// marker if the record must start at offset 0. Returns (tail, offset, bytes to advance).
    fn reserve(&self, head: u64, len: u32) -> Option<(u64, u32, u32)> {
        let st = self.st();
        let tail = st.tail.pos.load(Ordering::Relaxed);
        let (tm, tp) = unpack(tail);
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
            return (rec <= free).then_some((tail, off, rec));
        }
        // Skip the end of the region: the record goes to offset 0.
        if to_end + rec > free {
            return None;
        }
        // SAFETY: [off, cap) is free space (to_end <= free); the header word is 8-aligned.
        unsafe { AtomicU32::from_ptr(self.at(off).cast()) }.store(WRAP, Ordering::Relaxed);
        Some((tail, 0, to_end + rec))
    }

    // ------------------------------------------------------------------------------------
    // Getting

    /// Takes the record at the head and passes its payload to `read`, waiting until `deadline`.
    /// With `max`, a payload longer than `max` is left in place and reported.
    pub(crate) fn get_with<R>(
        &self,
        deadline: Option<Instant>,
        max: Option<usize>,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, GetFail> {
        let st = self.st();
        let mut read = Some(read);
        let mut waiter = Waiter::new();
        loop {
            let observed_tail = self.tail_for_reading();
            if !self.is_empty_at(observed_tail) {
                // A dead holder never moved `head`: its message is still there for us.
                let how = st.get_side.lock.acquire(deadline).ok_or(GetFail::Empty)?;
                if how == Acquired::OwnerDied {
                    st.get_side.lock.mark_consistent();
                }
                let r = self.take(max, &mut read);
                // SAFETY: we hold the get lock.
                unsafe { st.get_side.lock.release() };
                match r {
                    Some(r) => {
                        self.adapt_spin(&waiter);
                        // As in a put: the unlock pairs with a producer's handshake.
                        if r.is_ok() && st.space_wait.sleepers.load(Ordering::Acquire) > 0 {
                            st.space_wait.seq.fetch_add(1, Ordering::SeqCst);
                            sys::futex_wake(&st.space_wait.seq, 1);
                        }
                        return r;
                    }
                    None => continue, // another consumer took it first
                }
            }
            self.wait_for_data(&mut waiter, observed_tail, deadline)?;
        }
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

    /// The tail to test for emptiness: the get side's cached copy if it shows messages (no
    /// cache miss on the producer's line), else the real tail.
    fn tail_for_reading(&self) -> u64 {
        let st = self.st();
        let cached = st.get_side.cached.load(Ordering::Acquire);
        if !self.is_empty_at(cached) {
            return cached;
        }
        st.tail.pos.load(Ordering::Acquire)
    }

    /// After a successful get: spin longer next time if spinning paid off, shorter if we
    /// had to sleep anyway (adaptive, bounded).
    fn adapt_spin(&self, waiter: &Waiter) {
        if waiter.spin_start.is_none() {
            return; // data was there at once
        }
        let ns = self.spin_ns.load(Ordering::Relaxed);
        let next = if waiter.slept {
            (ns / 2).max(MIN_SPIN_NS)
        } else {
            ns.saturating_mul(2).min(MAX_SPIN_NS)
        };
        self.spin_ns.store(next, Ordering::Relaxed);
    }

    fn is_empty_at(&self, tail: u64) -> bool {
        unpack(tail).0 == unpack(self.st().head.pos.load(Ordering::Acquire)).0
    }

    /// One round of waiting while the ring looked empty with `tail == observed_tail`: spin,
    /// then sleep on the data futex. `Ok` means "look again".
    fn wait_for_data(
        &self,
        waiter: &mut Waiter,
        observed_tail: u64,
        deadline: Option<Instant>,
    ) -> Result<(), GetFail> {
        let st = self.st();
        if !waiter.spun {
            // Spin for a while: waking a sleeper costs tens of microseconds on a busy host,
            // so a peer that answers sooner than that should find us awake.
            let start = *waiter.spin_start.get_or_insert_with(Instant::now);
            let budget = Duration::from_nanos(u64::from(self.spin_ns.load(Ordering::Relaxed)));
            if start.elapsed() < budget {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(self.empty_or_disconnected(observed_tail));
                }
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
                return Ok(());
            }
            waiter.spun = true;
        }
        let prober = waiter.prober.get_or_insert_with(Prober::new);
        let probe = prober.due();
        if self.is_closed() || !self.any_alive(true, probe) {
            // Senders are gone; but one may have published just before leaving.
            if st.tail.pos.load(Ordering::SeqCst) == observed_tail {
                return Err(GetFail::Disconnected);
            }
            return Ok(());
        }
        let seq = st.data_wait.seq.load(Ordering::SeqCst);
        st.data_wait.sleepers.fetch_add(1, Ordering::SeqCst);
        waiter.slept = true;
        st.put_side.lock.handshake();
        let unchanged = st.tail.pos.load(Ordering::Acquire) == observed_tail
            && !self.is_closed()
            && self.any_alive(true, false);
        let timeout = prober.sleep_budget(deadline);
        if unchanged {
            if let Some(t) = timeout {
                let _ = sys::futex_wait(&st.data_wait.seq, seq, Some(t));
            }
        }
        st.data_wait.sleepers.fetch_sub(1, Ordering::SeqCst);
        match timeout {
            None if unchanged => Err(self.empty_or_disconnected(observed_tail)),
            _ => Ok(()),
        }
    }

    /// The error of a get that gives up on an empty ring: `Disconnected` if no sender is left
    /// (as far as the counts say) and nothing arrived meanwhile.
    fn empty_or_disconnected(&self, observed_tail: u64) -> GetFail {
        let gone = self.is_closed() || !self.any_alive(true, false);
        if gone && self.st().tail.pos.load(Ordering::SeqCst) == observed_tail {
            GetFail::Disconnected
        } else {
            GetFail::Empty
        }
    }

    /// With the get lock held: consumes the record at the head, if there is one.
    fn take<R>(
        &self,
        max: Option<usize>,
        read: &mut Option<impl FnOnce(&[u8]) -> R>,
    ) -> Option<Result<R, GetFail>> {
        let st = self.st();
        let head = st.head.pos.load(Ordering::Relaxed);
        let mut tail = st.get_side.cached.load(Ordering::Relaxed);
        if unpack(head).0 == unpack(tail).0 {
            tail = st.tail.pos.load(Ordering::Acquire);
            st.get_side.cached.store(tail, Ordering::Relaxed);
        }
        let (hm, mut hp) = unpack(head);
        let (tm, tp) = unpack(tail);
        if hm == tm {
            return None;
        }
        let mut avail = tp.wrapping_sub(hp);
        if avail > self.cap {
            return Some(Err(GetFail::Corrupted("ring positions")));
        }
        let mut off = hp & (self.cap - 1);
        // SAFETY: `off` is in the region and 8-aligned (records are 8-aligned).
        let mut len = unsafe { AtomicU32::from_ptr(self.at(off).cast()) }.load(Ordering::Relaxed);
        if len == WRAP {
            let skip = self.cap - off;
            if skip >= avail {
                return Some(Err(GetFail::Corrupted("wrap marker")));
            }
            hp = hp.wrapping_add(skip);
            avail -= skip;
            off = 0;
            // SAFETY: offset 0 is in the region and aligned.
            len = unsafe { AtomicU32::from_ptr(self.at(0).cast()) }.load(Ordering::Relaxed);
        }
        if len > self.cap - RECORD_HEADER
            || record_len(len) > avail
            || record_len(len) > self.cap - off
        {
            return Some(Err(GetFail::Corrupted("record length")));
        }
        if let Some(max) = max {
            if len as usize > max {
                return Some(Err(GetFail::BufferTooSmall(len as usize)));
            }
        }
        // SAFETY: [off + 8, off + 8 + len) lies inside the region (checked) and inside the
        // published part [head, tail), which no cooperating process writes until we move head.
        let payload =
            unsafe { std::slice::from_raw_parts(self.at(off + RECORD_HEADER), len as usize) };
        let r = (read.take().expect("read once"))(payload);
        let next = hp.wrapping_add(record_len(len));
        st.head
            .pos
            .store(pack(hm.wrapping_add(1), next), Ordering::Release);
        Some(Ok(r))
    }

    // ------------------------------------------------------------------------------------
    // Tasks (JoinableQueue)

    fn published(&self) -> u32 {
        unpack(self.st().tail.pos.load(Ordering::SeqCst)).0
    }

    /// Marks one task done; `false` if there was none unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let t = &self.st().tasks;
        let mut done = t.done.load(Ordering::SeqCst);
        loop {
            let published = self.published();
            if published == done {
                return false;
            }
            match t.done.compare_exchange(
                done,
                done.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => done = now,
            }
        }
        if t.sleepers.load(Ordering::SeqCst) > 0 {
            sys::futex_wake_all(&t.done);
        }
        true
    }

    /// Waits until every task is done; `false` on timeout.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let t = &self.st().tasks;
        t.sleepers.fetch_add(1, Ordering::SeqCst);
        let finished = loop {
            let done = t.done.load(Ordering::SeqCst);
            if self.published() == done {
                break true;
            }
            let Some(left) = remaining(deadline) else {
                break false;
            };
            let _ = sys::futex_wait(&t.done, done, left);
        };
        t.sleepers.fetch_sub(1, Ordering::SeqCst);
        finished
    }

    pub(crate) fn unfinished(&self) -> u32 {
        self.published()
            .wrapping_sub(self.st().tasks.done.load(Ordering::SeqCst))
    }
}
