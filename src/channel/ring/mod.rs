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
//! Producers read `tail` from their own copy on the put lock's line, written after `tail`
//! (see `SideLine`); a producer that takes the lock over from a dead one reads `tail` itself.
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
//! after it loses only that message (or, for a batch taken with one `head` store, the messages of
//! that batch). A batch of puts is published with one `tail` store: a producer killed before it
//! publishes none of the batch.
//!
//! # Messages of any size
//!
//! A message longer than a record can be (half the region, see [`Ring::max_record`]) goes
//! through in fragments, records whose header word has [`FRAG`](layout::FRAG) set (bit 31),
//! [`FRAG_FIRST`](layout::FRAG_FIRST) (bit 30) on the first one,
//! [`FRAG_LAST`](layout::FRAG_LAST) (bit 29) on the last one, and the fragment's payload
//! length in the low 29 bits. The wrap marker (`u32::MAX`) has bit 31 too and is checked
//! first; fragments are at most a quarter of the region (< 2^29 bytes), and a message has at
//! least two, never both first and last, so a fragment header is never all ones. A first fragment's payload is the message's total length (8 bytes,
//! little-endian), then the first bytes; the following fragments carry the next bytes.
//!
//! The producer holds the put lock for the whole message and publishes each fragment (a
//! `tail` store and a wake) as soon as it is written, waiting for room in between, so that
//! copying in and copying out overlap. Its deadline covers the whole message: a put that has
//! to wait for room past it, or finds the receivers gone or the queue closed or shut down,
//! abandons the message (lets the lock go, waking the consumers) and fails.
//!
//! The consumer holds the get lock for the whole message and assembles it in private memory
//! (a vector grown as bytes arrive, at most 64 MiB reserved before they do; or the caller's
//! buffer, a message longer than which stays in place as `BufferTooSmall`), freeing each
//! fragment as it goes. A following fragment at the head with no message begun is an orphan
//! (its consumer died, or its producer gave up): it is skipped. A first fragment or a whole
//! record at the head while a message is in assembly means its producer gave up or died: the
//! partial message is dropped, and the get goes on with the new one. While it waits for the
//! next fragment, a consumer that finds nothing new published and the put lock free (or its
//! holder dead: it takes the lock over, repairing the producers' copy of `tail`, and lets it
//! go) knows the message will never complete, and drops it. Impossible fragments (a total
//! above [`MAX_MESSAGE_LEN`] or below the first chunk, a fragment longer than what remains)
//! are `Corrupted`, and the message is dropped.
//!
//! A timed get whose deadline passes in the middle of a message (while it waits for the next
//! fragment, or once it has gone through a ring's worth of records past the deadline without
//! completing a message, see `Overrun`) returns `Empty` but keeps the bytes so far and the get
//! lock (its hold forgotten) in the handle's [`Resume`](large::Resume); the next get on that
//! handle, from any thread of the process, resumes the message (moving the lock word to its
//! thread, see `RawLock::adopt`). Dropping the last handle, or an immediate shutdown from
//! this process, releases the lock; the rest of the message is then orphans.
//!
//! Only a message's last fragment, marked [`FRAG_LAST`](layout::FRAG_LAST) (bit 29), is a
//! task of `JoinableQueue` (see `TaskLine`): the producer counts every other fragment done as
//! soon as it has published it, so a message abandoned half-way leaves no task behind; a
//! consumer counts a last fragment done when it drops it undelivered (an orphan, a message
//! given up), and an immediate shutdown counts only whole messages and last fragments. A
//! producer killed between publishing a fragment and counting it leaves one task unfinished.
//!
//! Crash consistency: a producer killed in the middle of a message leaves published
//! fragments that no consumer ever delivers as a message (they are dropped as above, once the
//! lock is taken over, or once another producer's message follows); other producers wait only
//! for the takeover of its lock. A consumer killed in the middle of a message loses that
//! message only: the next consumer takes the lock over and skips the rest as orphans.
//!
//! # Close and shutdown
//!
//! `close` and `shutdown` set bits of the queue-wide state word (see `ConfigLine`), which only
//! producers read on every message, under the put lock: the consumers' fast path reads nothing
//! more. A get reads the state only once the ring looks empty, and then, before it reports the
//! ring drained, takes and releases the put lock, so that a put that missed the state has
//! published by then (SYNC(state-under-lock)). An immediate shutdown drops the queued messages
//! itself, under the get lock, once the puts in flight are done (`Ring::drop_queued`).
//! A process killed half-way through a shutdown leaves the state set, which is all that puts
//! and draining gets need; one killed before dropping the queued messages of an immediate
//! shutdown leaves them to the gets' fast path, until another immediate shutdown drops them.
//!
//! # Parts
//!
//! - here: [`Ring`], its constructors, and the helpers every part uses; [`LocalCache`];
//! - `layout`: the `#[repr(C)]` shared state ([`RingState`] and its lines, the peer table with
//!   its state table), record sizes and position packing;
//! - `peers`: attaching and detaching handles, reclaiming dead peers, the slots a forking
//!   process fills for its child;
//! - `put` and `get`: the two sides of the protocol above; `large`: assembling messages that
//!   come in fragments, and resuming one a timed get left;
//! - `loan`: puts and gets cut in two, the record staying in the ring while a caller works on
//!   it in place (zero-copy loans);
//! - `tasks`: the task accounting of `JoinableQueue`.
//! - `tests`: a hostile peer's writes into a live ring (unit tests); `heap`: rings in this
//!   process's heap, for the loom build.

use crate::primitive::{AtomicBool, AtomicU64, Ordering};
use std::ptr::NonNull;

use crate::error::OpenError;
#[cfg(not(multiproc_loom))]
use crate::segment::Segment;
use crate::sync::wait::{ProbeClock, Spinner};

use layout::{
    CLOSED, FRAG_CHUNK, IMMEDIATE, Lifecycle, MIN_CAPACITY, RECORD_HEADER, RingState, SHUT_DOWN,
    STATE_LEN, unpack,
};

mod get;
mod large;
mod layout;
mod loan;
mod peers;
mod put;
mod tasks;

pub(crate) use get::GetFail;
pub(crate) use large::{Dest, Resume};
pub(crate) use loan::{GetLoan, PutLoan, read_at};
pub(crate) use peers::{ChildSlot, Role};
pub(crate) use put::PutFail;

// Ordering pairs between processes, tagged where each side stands:
// - SYNC(tail-publish): a producer's release store of `tail` after writing the record, and the
//   consumer's acquire load of `tail` before reading it.
// - SYNC(head-free): a consumer's release store of `head` after reading a record, and the
//   producer's acquire load of `head` before writing over it.
// - SYNC(lock-handshake): a publisher's unlock (an AcqRel swap) and a sleeper's no-op RMW of the
//   same lock word, after announcing itself and before its last look (`RawLock::handshake`).
// - SYNC(state): `close` and `shutdown` set bits of `state`, then wake every sleeper counted;
//   sleepers look at it after announcing themselves (`sync::wait::sleep_unless`).
// - SYNC(state-under-lock): a producer reads `state` holding the put lock; whoever set a state
//   bit and then took and released the put lock (`settle_puts`) knows that every later put
//   sees the bit, and that every put that missed it has published (the lock orders both).
// - SYNC(sleepers-rmw): see `WaitWord`.

/// Longest message a [`Queue`](crate::Queue), [`JoinableQueue`](crate::JoinableQueue),
/// [`Sender`](crate::Sender) or [`Connection`](crate::Connection) carries: 4 GiB - 1 bytes
/// (`u32::MAX`), encoded. Messages longer than half the queue's byte capacity are streamed
/// through it in fragments; a longer one is refused with `TooLarge`.
pub const MAX_MESSAGE_LEN: usize = u32::MAX as usize;

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
    #[inline]
    fn get(&self, mine: u64) -> Option<u64> {
        (self.valid.load(Ordering::Relaxed) && self.mine.load(Ordering::Relaxed) == mine)
            .then(|| self.other.load(Ordering::Relaxed))
    }

    #[inline]
    fn set(&self, mine: u64, other: u64) {
        self.mine.store(mine, Ordering::Relaxed);
        self.other.store(other, Ordering::Relaxed);
        self.valid.store(true, Ordering::Relaxed);
    }
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
    /// How long a get in this process spins on an empty ring before it sleeps.
    get_spin: Spinner,
    /// When this process last probed the peers (see [`ProbeClock`]).
    probe_clock: ProbeClock,
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
        payload: crate::segment::object::FreshPayload<'_>,
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
        crate::segment::object::expect_payload(&seg, Self::payload_len(cap))?;
        // SAFETY: STATE_LEN < payload_len (checked), so the data start is inside the mapping.
        let data = unsafe { seg.payload().add(STATE_LEN) };
        Ok(Self {
            seg,
            state,
            data,
            cap,
            max_messages,
            get_spin: Spinner::new(),
            probe_clock: ProbeClock::new(),
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
            get_spin: Spinner::new(),
            probe_clock: ProbeClock::new(),
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
    #[inline]
    unsafe fn header(&self, off: u32) -> &std::sync::atomic::AtomicU32 {
        debug_assert!(off < self.cap && off % RECORD_HEADER == 0);
        // SAFETY: `off` is inside the data region and 8-aligned (contract); the region lives as
        // long as `self`, and is only ever accessed through atomics or raw copies.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.at(off).cast()) }
    }

    #[inline]
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
    #[inline]
    pub(crate) fn max_record(&self) -> usize {
        (self.cap / 2 - RECORD_HEADER) as usize
    }

    /// Whether a message of `len` bytes goes through the ring in fragments
    /// ([`put_fragments`](Self::put_fragments)) rather than as one record.
    #[inline]
    pub(crate) fn needs_fragments(&self, len: usize) -> bool {
        len > self.max_record()
    }

    /// Most payload bytes of one fragment: a record of at most a quarter of the region, so
    /// that two are in flight at once (one copied in while the other is copied out), and at
    /// most [`FRAG_CHUNK`] bytes, so that both copies stay in the cache. At least 8, the
    /// message length a first fragment carries (the region has at least 64 bytes).
    #[inline]
    pub(super) fn frag_max(&self) -> u32 {
        (self.cap / 4 - RECORD_HEADER).min(FRAG_CHUNK)
    }

    /// Messages in the ring now (a snapshot).
    pub(crate) fn len(&self) -> usize {
        let (tm, _) = unpack(self.st().tail.pos.load(Ordering::Acquire));
        let (hm, _) = unpack(self.st().head.pos.load(Ordering::Acquire));
        tm.wrapping_sub(hm).min(self.max_messages) as usize
    }

    /// Marks the ring closed for putting; gets drain what is left. Wakes everyone.
    pub(crate) fn close(&self) {
        self.set_state(CLOSED);
    }

    /// Whether `close` was called (by any process).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.state() & CLOSED != 0
    }

    /// Shuts the ring down for every process (Python's `Queue.shutdown`): puts fail from now
    /// on; gets drain what is queued and then fail, or with `immediate` fail at once, the
    /// queued messages dropped and counted as done tasks. Wakes every sleeper. Idempotent; an
    /// immediate shutdown may follow a plain one.
    ///
    /// Returns once no put that missed the shutdown can still publish (it waits for the put
    /// lock, as long as it takes: its holders hold it only while copying a message in, and
    /// a dead holder's lock is taken over).
    pub(crate) fn shutdown(&self, immediate: bool) {
        self.set_state(if immediate {
            SHUT_DOWN | IMMEDIATE
        } else {
            SHUT_DOWN
        });
        self.settle_puts(None);
        if immediate {
            self.drop_queued();
        }
    }

    /// Whether the ring was shut down (by any process, or a peer scribbled on the state).
    #[inline]
    pub(crate) fn is_shut_down(&self) -> bool {
        matches!(
            Lifecycle::of(self.state()),
            Lifecycle::ShutDown | Lifecycle::ShutDownImmediate
        )
    }

    /// The state word (see [`ConfigLine`](layout::ConfigLine)).
    #[inline]
    fn state(&self) -> u32 {
        // SeqCst: a sleeper's last look pairs with `set_state` (see `wake_all`).
        // SYNC(state)
        self.st().config.state.load(Ordering::SeqCst)
    }

    /// Adds `bits` to the state word, then wakes every sleeper to look at it.
    fn set_state(&self, bits: u32) {
        // SYNC(state): sleepers look at the state after announcing; `wake_all` then sees them.
        self.st().config.state.fetch_or(bits, Ordering::SeqCst);
        self.wake_all();
    }

    /// Wakes every sleeper, after a change they re-check once they have announced
    /// themselves (the peer totals, `state`): the change is a SeqCst write, the sleeper
    /// count a SeqCst read, and a sleeper bumps its count (SeqCst) before its last look, so
    /// either we see it or it sees the change. Nobody asleep: no system call.
    fn wake_all(&self) {
        let st = self.st();
        st.data_wait.word.notify_all();
        st.space_wait.word.notify_all();
    }

    /// Pointer to data offset `off` (already reduced modulo capacity; `cap` itself for the
    /// empty payload of a record that ends the region).
    #[inline]
    fn at(&self, off: u32) -> *mut u8 {
        debug_assert!(off <= self.cap);
        self.data.as_ptr().wrapping_add(off as usize)
    }
}

#[cfg(all(test, not(multiproc_loom)))]
mod tests;

/// Rings in this process's heap, for the loom build (`--cfg multiproc_loom`).
#[cfg(multiproc_loom)]
mod heap;
