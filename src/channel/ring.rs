//! The shared-memory ring under `Queue` and `Pipe`: variable-length records in a byte ring,
//! one producer at a time and one consumer at a time.
#![allow(unsafe_code)]
//! # Safety
//! The payload of a ring segment is a `RingState` (atomics only) followed by `capacity` data
//! bytes. `Ring::from_segment` validates `capacity` (a power of two that fits the payload) and
//! caches it, so every data offset `pos & (capacity - 1)` plus a length checked against
//! `capacity - offset` stays inside the mapping, which lives as long as the `Ring`.
//!
//! No reference into the data region is ever formed: payloads are copied in and out through
//! `segment::foreign`, whose note gives the policy. Cooperating processes never race on a
//! payload: a producer writes only between `tail` and `head + capacity` while holding the put
//! lock, and a consumer reads only between `head` and `tail` while holding the get lock; both
//! regions are disjoint from each other by the protocol below.
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
//! Each side keeps its lock on a cache line of its own. Each process keeps, in its own memory,
//! a copy of the other side's position (see `LocalCache`) and re-reads the real one only when
//! the copy says full (put) or empty (get), so a message costs few cache-line transfers between
//! the cores. The copy is private because a shared one could be made to lead the real
//! position, which would let a put overwrite unread messages or a get return stale bytes.
//!
//! Every position read from the segment is checked before it forms a pointer: records start
//! 8-aligned, so a misaligned `head` or `tail` is `Corrupted`, and lengths are checked against
//! what lies between `head` and `tail` and against the end of the region.
//!
//! Crash consistency follows: a producer killed before its `tail` store leaves nothing visible
//! (the next producer takes the put lock as owner-died and overwrites the bytes); a consumer
//! killed before its `head` store leaves the message in place for the next consumer; one killed
//! after it loses only that message.

use crate::primitive::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::error::OpenError;
#[cfg(not(multiproc_loom))]
use crate::segment::Segment;
use crate::segment::{Foreign, ForeignMut};
use crate::sync::raw_lock::{Acquired, RawLock};
use crate::sync::wait::{Backoff, Prober, WaitWord, remaining, sleep_unless, wake_sleepers};
use crate::sys::{self, Liveness, ThreadId};

// Ordering pairs between processes, tagged where each side stands:
// - SYNC(tail-publish): a producer's release store of `tail` after writing the record, and the
//   consumer's acquire load of `tail` before reading it.
// - SYNC(head-free): a consumer's release store of `head` after reading a record, and the
//   producer's acquire load of `head` before writing over it.
// - SYNC(lock-handshake): a publisher's unlock (an AcqRel swap) and a sleeper's no-op RMW of the
//   same lock word, after announcing itself and before its last look (`RawLock::handshake`).
// - SYNC(closed): `close` stores `closed` then wakes every sleeper counted; sleepers look at it
//   after announcing themselves (`sync::wait::sleep_unless`).
// - SYNC(sleepers-rmw): see `WaitWord`.

/// Most processes that can hold handles of one ring at once.
/// (A loom model has one process and few threads: a short table keeps its executions short.)
pub(crate) const MAX_PEERS: usize = if cfg!(multiproc_loom) { 4 } else { 128 };
/// Marks a peer slot whose counts were taken for a child that is being forked (see [`Peer`]);
/// the low bits name the forking process. Process ids stay below 2^22.
const PENDING: u32 = 1 << 31;
/// A peer slot being freed. It reads as pending for a process that cannot exist, so a
/// reclaimer that dies half-way leaves a slot that the next probe frees again.
const RECLAIMING: u32 = u32::MAX;
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

/// One side's lock on a line of its own: the other side never touches it, so taking the lock
/// costs no miss.
#[repr(C)]
#[derive(Debug, Default)]
struct SideLine {
    lock: RawLock,
    _r: [AtomicU64; 6],
}

/// This process's copy of the other side's position, so that a put or get need not pull the
/// other side's line over for every message. It lives in process memory, where no other
/// process can write it, so it can only lag the real position, never lead it.
///
/// Taken and used under the side's lock. It goes with the position `mine` that our side had
/// when it was taken (after our own last put or get): while our side is still there, no other
/// process moved it since, so the copy lies between our side and the real position of the other
/// side. Once another process has moved our side, the copy says nothing and the real position
/// is read. (Only a run of exactly 2^32 messages by others, ending at the very same byte
/// position, could bring our side back to `mine` with a stale copy.)
#[derive(Debug, Default)]
#[repr(align(64))]
struct LocalCache {
    valid: AtomicBool,
    mine: AtomicU64,
    other: AtomicU64,
}

impl LocalCache {
    /// The copy, if our side is still at `mine`.
    fn get(&self, mine: u64) -> Option<u64> {
        (self.valid.load(Ordering::Relaxed) && self.mine.load(Ordering::Relaxed) == mine)
            .then(|| self.other.load(Ordering::Relaxed))
    }

    fn set(&self, mine: u64, other: u64) {
        self.mine.store(mine, Ordering::Relaxed);
        self.other.store(other, Ordering::Relaxed);
        self.valid.store(true, Ordering::Relaxed);
    }
}

/// A published position (`tail` or `head`) on a line of its own.
#[repr(C)]
#[derive(Debug, Default)]
struct PosLine {
    pos: AtomicU64,
    _r: [AtomicU64; 7],
}

/// A wait word on a line of its own.
#[repr(C)]
#[derive(Debug, Default)]
struct WaitLine {
    word: WaitWord,
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
///
/// `pid` state table:
///
/// | `pid`                  | `start`                          | meaning                            |
/// |------------------------|----------------------------------|------------------------------------|
/// | `0`                    | `0`                              | free                               |
/// | `tid`                  | its start time (0 while written) | attached process `tid`             |
/// | `PENDING \| parent`    | the parent's start time          | counts that `parent` took for a child it is forking; the child or the parent puts the child's pid here right after the fork |
/// | `RECLAIMING`           | any                              | being freed by a process that found its owner dead |
///
/// A slot is freed (counts taken out of the totals, then `pid` back to 0) only when the process
/// it names is dead; for a pending slot, when the parent is dead, or when the parent saw that
/// its fork made no child that lives.
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
#[cfg(not(multiproc_loom))]
const _: () = {
    assert!(STATE_LEN % 64 == 0);
    assert!(size_of::<ConfigLine>() == 64 && size_of::<SideLine>() == 64);
    assert!(size_of::<PosLine>() == 64);
    assert!(size_of::<WaitLine>() == 64 && size_of::<Peer>() == 32);
};

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
    /// The ring's positions were scribbled on; nothing can be written safely.
    Corrupted(&'static str),
    /// The writer could not fill the record (the value encoded to another length).
    Encode,
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
/// (No spinning in a loom model: a spin measured by the clock would make its executions differ.)
const MIN_SPIN_NS: u32 = if cfg!(multiproc_loom) { 0 } else { 2_000 };
const MAX_SPIN_NS: u32 = if cfg!(multiproc_loom) { 0 } else { 100_000 };
const INITIAL_SPIN_NS: u32 = if cfg!(multiproc_loom) { 0 } else { 50_000 };

/// First backoff step of a put that found the ring full (2^step spins before the next look).
const FULL_BACKOFF_STEP: u32 = 6;

/// Which kind of handle a process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Role {
    pub(crate) send: bool,
    pub(crate) recv: bool,
}

/// A peer slot that a forking process filled for its coming child (see [`Peer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildSlot {
    index: usize,
    parent: ThreadId,
}

/// Validated view of a ring segment.
#[derive(Debug)]
pub(crate) struct Ring {
    #[cfg(not(multiproc_loom))]
    seg: Segment,
    /// The loom build keeps its rings in this process's heap, made of loom's atomics.
    #[cfg(multiproc_loom)]
    _heap: heap::HeapRing,
    state: NonNull<RingState>,
    data: NonNull<u8>,
    cap: u32,
    max_messages: u32,
    /// This process's current spin budget for gets (see `adapt_spin`).
    spin_ns: AtomicU32,
    /// Our copy of `head`, for puts.
    put_cache: LocalCache,
    /// Our copy of `tail`, for gets.
    get_cache: LocalCache,
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

    /// Initialises the zeroed payload of a new segment.
    #[cfg(not(multiproc_loom))]
    ///
    /// # Panics
    /// If the payload is shorter than a `RingState`.
    pub(crate) fn init(
        payload: crate::sync::object::FreshPayload<'_>,
        capacity: u32,
        max_messages: u32,
    ) {
        const { assert!(align_of::<RingState>() <= 64) };
        assert!(payload.len() >= STATE_LEN, "payload too short for a ring");
        // SAFETY: `FreshPayload` stands for `payload.len()` zero-filled bytes at a 64-byte
        // aligned address, valid while it lives; they span a RingState (asserted above), whose
        // alignment is at most 64 (const assert) and which is all atomics, so zero is a valid
        // value and a shared reference is sound.
        let st = unsafe { payload.as_ptr().cast::<RingState>().as_ref() };
        st.config.capacity.store(capacity, Ordering::Relaxed);
        st.config
            .max_messages
            .store(max_messages, Ordering::Relaxed);
    }

    #[cfg(not(multiproc_loom))]
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
            put_cache: LocalCache::default(),
            get_cache: LocalCache::default(),
        })
    }

    #[cfg(not(multiproc_loom))]
    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    /// A ring in this process's heap, for the loom models.
    #[cfg(multiproc_loom)]
    pub(crate) fn in_heap(capacity: u32, max_messages: u32) -> Self {
        assert!(capacity.is_power_of_two() && capacity >= MIN_CAPACITY && max_messages > 0);
        let heap = heap::HeapRing::new(capacity, max_messages);
        Self {
            state: heap.state,
            data: heap.data,
            _heap: heap,
            cap: capacity,
            max_messages,
            spin_ns: AtomicU32::new(INITIAL_SPIN_NS),
            put_cache: LocalCache::default(),
            get_cache: LocalCache::default(),
        }
    }

    /// The record header (or wrap marker) word at data offset `off`.
    ///
    /// # Safety
    /// - `off < capacity` and `off % 8 == 0`.
    ///
    /// Data words are the standard library's atomics in every build (the loom models do not
    /// track them; they track the positions and locks that order them).
    unsafe fn header(&self, off: u32) -> &std::sync::atomic::AtomicU32 {
        debug_assert!(off < self.cap && off % RECORD_HEADER == 0);
        // SAFETY: `off` is inside the data region and 8-aligned (contract); the region lives as
        // long as `self`, and is only ever accessed through atomics or raw copies.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.at(off).cast()) }
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
        // SYNC(closed): sleepers look at `closed` after announcing; `wake_all` then sees them.
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
        st.data_wait.word.notify_all();
        st.space_wait.word.notify_all();
    }

    /// Pointer to data offset `off` (already reduced modulo capacity; `cap` itself for the
    /// empty payload of a record that ends the region).
    fn at(&self, off: u32) -> *mut u8 {
        debug_assert!(off <= self.cap);
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

    /// Frees the slot of a peer whose process died (`pid` as read from the slot), taking its
    /// handles out of the totals. The slot is first marked [`RECLAIMING`], so a process that
    /// takes the slot meanwhile (a child adopting its pending slot) keeps it and its counts.
    fn reclaim(&self, p: &Peer, pid: u32) -> bool {
        if p.pid
            .compare_exchange(pid, RECLAIMING, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
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
        // Another reclaimer may have finished the same slot and someone taken it since.
        let _ = p
            .pid
            .compare_exchange(RECLAIMING, 0, Ordering::AcqRel, Ordering::Relaxed);
        true
    }

    /// Probes every attached process (but us) and reclaims the dead; returns whether any was.
    fn reclaim_dead_peers(&self) -> bool {
        let me = sys::current_process();
        let mut freed = false;
        for p in &self.st().peers {
            let pid = p.pid.load(Ordering::Acquire);
            if pid == 0 || pid == me.tid || pid == PENDING | me.tid {
                continue;
            }
            // A pending slot lives as long as the process that is forking.
            let who = ThreadId {
                tid: pid & !PENDING,
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

    /// Just before a `fork`: takes a free peer slot for the coming child, in the name of this
    /// process (see [`Peer`]). Counts go in with [`count_for_child`](Self::count_for_child).
    /// `None` if every slot is taken by a live process.
    pub(crate) fn reserve_for_child(&self) -> Option<ChildSlot> {
        let me = sys::current_process();
        for _ in 0..2 {
            for (i, p) in self.st().peers.iter().enumerate() {
                if p.pid
                    .compare_exchange(0, PENDING | me.tid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    p.start.store(me.start, Ordering::Release);
                    return Some(ChildSlot {
                        index: i,
                        parent: me,
                    });
                }
            }
            if !self.reclaim_dead_peers() {
                break;
            }
        }
        None
    }

    /// Counts one handle of `role` in the child's slot.
    pub(crate) fn count_for_child(&self, slot: ChildSlot, role: Role) {
        let st = self.st();
        let peer = &st.peers[slot.index];
        if role.send {
            peer.senders.fetch_add(1, Ordering::SeqCst);
            st.config.senders.fetch_add(1, Ordering::SeqCst);
        }
        if role.recv {
            peer.receivers.fetch_add(1, Ordering::SeqCst);
            st.config.receivers.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// In the parent right after the `fork`: names the child in its slot, so that its death
    /// frees the counts (`Some(pid)`), or frees them now when the fork made no child or the
    /// child is gone already (`None`).
    pub(crate) fn settle_child_slot(&self, slot: ChildSlot, child: Option<u32>) {
        let peer = &self.st().peers[slot.index];
        let pending = PENDING | slot.parent.tid;
        match child {
            Some(pid) => {
                // The child may have claimed the slot already, with its own start time; if
                // not, the slot holds our start time, which must not be taken for the child's.
                let _ = peer.start.compare_exchange(
                    slot.parent.start,
                    0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                let _ =
                    peer.pid
                        .compare_exchange(pending, pid, Ordering::AcqRel, Ordering::Relaxed);
            }
            None => {
                if peer.pid.load(Ordering::Acquire) == pending && self.reclaim(peer, pending) {
                    self.wake_all();
                }
            }
        }
    }

    /// In the child right after the `fork`: takes over the slot its parent filled for it.
    /// `false` if the slot is no longer ours (the parent died and someone reclaimed it): then
    /// the inherited handles must attach anew.
    pub(crate) fn adopt_child_slot(&self, slot: ChildSlot) -> bool {
        let me = sys::current_process();
        let peer = &self.st().peers[slot.index];
        let pending = PENDING | slot.parent.tid;
        // While the slot names us, its start time must be 0 or ours, never the parent's: a
        // prober would take that for a reused pid and free our counts.
        let _ =
            peer.start
                .compare_exchange(slot.parent.start, 0, Ordering::AcqRel, Ordering::Relaxed);
        let ours = peer
            .pid
            .compare_exchange(pending, me.tid, Ordering::AcqRel, Ordering::Acquire)
            .map_or_else(|now| now == me.tid, |_| true);
        if ours {
            peer.start.store(me.start, Ordering::Release);
        }
        ours
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
    /// (`Some(now)` for a try, `None` forever). `write` fills the bytes through copies (see
    /// `segment::foreign`); if it fails, nothing is published.
    pub(crate) fn put_with(
        &self,
        len: usize,
        deadline: Option<Instant>,
        write: impl FnOnce(ForeignMut<'_>) -> bool,
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
            let tail = st.tail.pos.load(Ordering::Relaxed);
            if unpack(tail).1 % RECORD_HEADER != 0 {
                // Records start 8-aligned: this tail was scribbled on, and would make us write
                // a header through a misaligned pointer.
                // SAFETY: we hold the put lock.
                unsafe { st.put_side.lock.release() };
                return Err(PutFail::Corrupted("ring positions"));
            }
            // Look at our copy of the head first: it never runs ahead of the real one, so it
            // can only make us think the ring fuller than it is; re-read the real head only then.
            let cached = self.put_cache.get(tail);
            // SYNC(head-free), for this load and the one below.
            let mut observed_head = cached.unwrap_or_else(|| st.head.pos.load(Ordering::Acquire));
            let mut slot = self.reserve(tail, observed_head, len);
            if slot.is_none() && cached.is_some() {
                observed_head = st.head.pos.load(Ordering::Acquire);
                slot = self.reserve(tail, observed_head, len);
            }
            if let Some(slot) = slot {
                let (off, total) = slot;
                // SAFETY: `reserve` checked that [off, off + record) is free space inside the data
                // region, which only we (holding the put lock) write until we publish it; the
                // mapping lives as long as `self`.
                let room = unsafe { ForeignMut::new(self.at(off + RECORD_HEADER), len as usize) };
                if !write(room) {
                    // Nothing was published: the bytes are free space again.
                    self.put_cache.set(tail, observed_head);
                    // SAFETY: we hold the put lock.
                    unsafe { st.put_side.lock.release() };
                    return Err(PutFail::Encode);
                }
                // SAFETY: the header word is inside the reserved, 8-aligned record.
                unsafe { self.header(off) }.store(len, Ordering::Relaxed);
                let (tm, tp) = unpack(tail);
                let new_tail = pack(tm.wrapping_add(1), tp.wrapping_add(total));
                self.put_cache.set(new_tail, observed_head);
                // SYNC(tail-publish): the record written above is visible to whoever loads this
                // tail.
                st.tail.pos.store(new_tail, Ordering::Release);
                // SAFETY: we hold the put lock.
                unsafe { st.put_side.lock.release() };
                // The unlock orders the tail store against a consumer's sleeper announcement
                // (see `RawLock::handshake`): it sees our tail, or we see it sleeping.
                st.data_wait.word.notify_after_handshake(1);
                return Ok(());
            }
            self.put_cache.set(tail, observed_head);
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
            let seen = st.space_wait.word.observe();
            let Some(timeout) = prober.sleep_budget(deadline) else {
                return Err(PutFail::Full);
            };
            st.space_wait.word.wait_unless(seen, Some(timeout), || {
                // Pairs with a consumer's unlock: we see its head, or it sees us asleep.
                // SYNC(lock-handshake): with the unlock in `get_with`.
                st.get_side.lock.handshake();
                st.head.pos.load(Ordering::Acquire) != observed_head
                    || self.is_closed()
                    || !self.any_alive(false, false)
            });
        }
    }

    /// With the put lock held, `tail` read under it and 8-aligned: finds room for a record of
    /// `len` payload bytes. Writes a wrap marker if the record must start at offset 0. Returns
    /// (offset, bytes to advance).
    fn reserve(&self, tail: u64, head: u64, len: u32) -> Option<(u32, u32)> {
        let (tm, tp) = unpack(tail);
        debug_assert_eq!(tp % RECORD_HEADER, 0);
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
        // SAFETY: [off, cap) is free space (to_end <= free); the header word is 8-aligned.
        unsafe { self.header(off) }.store(WRAP, Ordering::Relaxed);
        Some((0, to_end + rec))
    }

    // ------------------------------------------------------------------------------------
    // Getting

    /// Takes the record at the head and passes its payload to `read`, waiting until `deadline`.
    /// With `max`, a payload longer than `max` is left in place and reported. `read` sees the
    /// payload as [`Foreign`] bytes: it copies them out, never reads them in place.
    pub(crate) fn get_with<R>(
        &self,
        deadline: Option<Instant>,
        max: Option<usize>,
        read: impl FnOnce(Foreign<'_>) -> R,
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
                        if r.is_ok() {
                            st.space_wait.word.notify_after_handshake(1);
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

    /// The tail to test for emptiness: our copy if it shows messages (no cache miss on the
    /// producer's line), else the real tail. Read without the get lock, the copy is only a hint
    /// (`take` checks again under the lock); the real tail is read whenever it says empty.
    fn tail_for_reading(&self) -> u64 {
        let st = self.st();
        let head = st.head.pos.load(Ordering::Acquire);
        match self.get_cache.get(head) {
            Some(cached) if unpack(cached).0 != unpack(head).0 => cached,
            // SYNC(tail-publish)
            _ => st.tail.pos.load(Ordering::Acquire),
        }
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
                    crate::primitive::spin_loop();
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
        let seen = st.data_wait.word.observe();
        waiter.slept = true;
        // Pairs with a producer's unlock: we see its tail, or it sees us asleep.
        let moved = || {
            // SYNC(lock-handshake): with the unlock in `put_with`.
            st.put_side.lock.handshake();
            st.tail.pos.load(Ordering::Acquire) != observed_tail
                || self.is_closed()
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
        read: &mut Option<impl FnOnce(Foreign<'_>) -> R>,
    ) -> Option<Result<R, GetFail>> {
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
        let (hm, mut hp) = unpack(head);
        let (tm, tp) = unpack(tail);
        if hm == tm {
            return None;
        }
        if hp % RECORD_HEADER != 0 || tp % RECORD_HEADER != 0 {
            // Records start 8-aligned: a scribbled position, which would make us read a header
            // through a misaligned pointer.
            return Some(Err(GetFail::Corrupted("ring positions")));
        }
        let mut avail = tp.wrapping_sub(hp);
        if avail > self.cap {
            return Some(Err(GetFail::Corrupted("ring positions")));
        }
        let mut off = hp & (self.cap - 1);
        // SAFETY: `off` is in the region and 8-aligned (records are 8-aligned).
        let mut len = unsafe { self.header(off) }.load(Ordering::Relaxed);
        if len == WRAP {
            let skip = self.cap - off;
            if skip >= avail {
                return Some(Err(GetFail::Corrupted("wrap marker")));
            }
            hp = hp.wrapping_add(skip);
            avail -= skip;
            off = 0;
            // SAFETY: offset 0 is in the region and aligned.
            len = unsafe { self.header(0) }.load(Ordering::Relaxed);
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
        // SAFETY: [off + 8, off + 8 + len) lies inside the region (checked), in the mapping that
        // lives as long as `self`.
        let payload = unsafe { Foreign::new(self.at(off + RECORD_HEADER), len as usize) };
        let r = (read.take().expect("read once"))(payload);
        let next = pack(hm.wrapping_add(1), hp.wrapping_add(record_len(len)));
        self.get_cache.set(next, tail);
        // SYNC(head-free): the record is read; a producer that loads this head may write over
        // it.
        st.head.pos.store(next, Ordering::Release);
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
        wake_sleepers(&t.done, &t.sleepers, i32::MAX as u32);
        true
    }

    /// Waits until every task is done; `false` on timeout.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let t = &self.st().tasks;
        loop {
            let done = t.done.load(Ordering::SeqCst);
            if self.published() == done {
                return true;
            }
            let Some(left) = remaining(deadline) else {
                return false;
            };
            sleep_unless(&t.done, done, &t.sleepers, 1, left, || {
                self.published() == done
            });
        }
    }

    pub(crate) fn unfinished(&self) -> u32 {
        self.published()
            .wrapping_sub(self.st().tasks.done.load(Ordering::SeqCst))
    }
}

#[cfg(all(test, not(multiproc_loom)))]
mod tests {
    //! A hostile peer: bytes written straight into a live queue's shared state.
    use super::*;
    use crate::{GetError, PutError, Queue};

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
        ring.st()
            .tail
            .pos
            .store(pack(0, near_end), Ordering::Relaxed);
        ring.st()
            .head
            .pos
            .store(pack(0, near_end), Ordering::Relaxed);
        assert!(matches!(tx.try_put(7), Err(PutError::Corrupted(7, _))));
        assert!(matches!(
            tx.put_timeout(7, Duration::from_millis(10)),
            Err(PutError::Corrupted(7, _))
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
        assert!(matches!(rx.try_get(), Err(GetError::Corrupted(_))));
    }

    /// Issue 8, bug 3: the cached copies of the other side's position lived in shared memory,
    /// where a peer could make them lead the real position: puts then overwrote unread
    /// messages and returned `Ok`. Every word of both side lines but the lock words is
    /// scribbled; the queue must still give back exactly what went in.
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
                for off in (base + lock_words..base + size_of::<SideLine>()).step_by(8) {
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
            assert_eq!(rx.try_get(), Err(GetError::Empty));
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
}

/// Rings in this process's heap, for the loom build (`--cfg multiproc_loom`).
#[cfg(multiproc_loom)]
mod heap {
    use std::ptr::NonNull;

    use super::{ConfigLine, PosLine, RingState, SideLine, TaskLine, WaitLine};
    use crate::primitive::Ordering;

    /// Owns a `RingState` made with loom's atomics and `capacity` data bytes (8-aligned).
    #[derive(Debug)]
    pub(super) struct HeapRing {
        pub(super) state: NonNull<RingState>,
        pub(super) data: NonNull<u8>,
        words: usize,
    }

    impl HeapRing {
        pub(super) fn new(capacity: u32, max_messages: u32) -> Self {
            let state = RingState {
                config: ConfigLine::default(),
                put_side: SideLine::default(),
                tail: PosLine::default(),
                get_side: SideLine::default(),
                head: PosLine::default(),
                data_wait: WaitLine::default(),
                space_wait: WaitLine::default(),
                tasks: TaskLine::default(),
                peers: std::array::from_fn(|_| Default::default()),
            };
            state.config.capacity.store(capacity, Ordering::Relaxed);
            state
                .config
                .max_messages
                .store(max_messages, Ordering::Relaxed);
            let words = capacity as usize / 8;
            let data = Box::into_raw(vec![0u64; words].into_boxed_slice());
            Self {
                state: NonNull::from(Box::leak(Box::new(state))),
                // SAFETY: `Box::into_raw` never returns null.
                data: unsafe { NonNull::new_unchecked(data.cast::<u8>()) },
                words,
            }
        }
    }

    impl Drop for HeapRing {
        fn drop(&mut self) {
            // SAFETY: `state` came from `Box::leak` in `new` and is freed once, here.
            drop(unsafe { Box::from_raw(self.state.as_ptr()) });
            let data =
                std::ptr::slice_from_raw_parts_mut(self.data.as_ptr().cast::<u64>(), self.words);
            // SAFETY: `data` is the boxed slice of `words` words made in `new`, freed once, here.
            drop(unsafe { Box::from_raw(data) });
        }
    }
}
