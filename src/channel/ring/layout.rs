//! The shared state of a ring, as every process maps it: `#[repr(C)]` lines of atomics, one
//! cache line each, then the peer table (with its state table, on [`Peer`]); and the record
//! format (header size, wrap marker) with the packing of positions.

use crate::primitive::{AtomicU32, AtomicU64};
use crate::sync::raw_lock::RawLock;
use crate::sync::wait::WaitWord;

/// Most processes that can hold handles of one ring at once.
/// (A loom model has one process and few threads: a short table keeps its executions short.)
pub(crate) const MAX_PEERS: usize = if cfg!(multiproc_loom) { 4 } else { 128 };
/// Marks a peer slot whose counts were taken for a child that is being forked (see [`Peer`]);
/// the low bits name the forking process. Process ids stay below 2^22.
pub(super) const PENDING: u32 = 1 << 31;
/// A peer slot being freed. It reads as pending for a process that cannot exist, so a
/// reclaimer that dies half-way leaves a slot that the next probe frees again.
pub(super) const RECLAIMING: u32 = u32::MAX;
/// Record header size; records are padded to this alignment.
pub(super) const RECORD_HEADER: u32 = 8;
/// Header length value that marks "skip to the start of the data region".
pub(super) const WRAP: u32 = u32::MAX;
/// Record header bit: the record is a fragment of a message streamed in pieces (see "Messages
/// of any size" in the ring's module note). Checked after [`WRAP`], which has it too.
pub(super) const FRAG: u32 = 1 << 31;
/// Record header bit, only with [`FRAG`]: the first fragment of a message, whose payload starts
/// with the message's total length (8 bytes, little-endian).
pub(super) const FRAG_FIRST: u32 = 1 << 30;
/// Record header bit, only with [`FRAG`]: the last fragment of a message, the one that stands
/// for its task (see "Messages of any size" in the ring's module note).
pub(super) const FRAG_LAST: u32 = 1 << 29;
/// Record header bits of a fragment's payload length (fragments are shorter than 2^29 bytes).
pub(super) const FRAG_LEN: u32 = (1 << 29) - 1;
/// Bytes of a first fragment's payload that hold the message's total length.
pub(super) const TOTAL_LEN: u32 = 8;
/// Most payload bytes of one fragment (the ring's quarter caps it too; see `Ring::frag_max`).
pub(super) const FRAG_CHUNK: u32 = 64 << 10;
/// `ConfigLine::state` bit: `close()` was called.
pub(super) const CLOSED: u32 = 1;
/// `ConfigLine::state` bit: `shutdown()` was called.
pub(super) const SHUT_DOWN: u32 = 2;
/// `ConfigLine::state` bit, only with [`SHUT_DOWN`]: the shutdown was immediate.
pub(super) const IMMEDIATE: u32 = 4;
/// Smallest data region.
pub(crate) const MIN_CAPACITY: u32 = 64;

/// What a `ConfigLine::state` word says (see the table on [`ConfigLine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Puts and gets work.
    Open,
    /// Puts fail with `Closed`; gets drain, then fail with `Disconnected`.
    Closed,
    /// Puts fail with `ShutDown`; gets drain, then fail with `ShutDown`.
    ShutDown,
    /// Puts and gets fail with `ShutDown`.
    ShutDownImmediate,
}

impl Lifecycle {
    /// Reads a state word, whoever wrote it: a value no version of this crate writes reads as
    /// shut down (not immediate), which refuses puts and still lets gets drain.
    #[inline]
    pub(super) fn of(state: u32) -> Self {
        // Whether `close()` came too does not matter once the queue is shut down.
        let shut = state & !CLOSED;
        if state == 0 {
            Self::Open
        } else if shut == 0 {
            Self::Closed
        } else if shut == SHUT_DOWN | IMMEDIATE {
            Self::ShutDownImmediate
        } else {
            // `SHUT_DOWN`, or bits nobody writes.
            Self::ShutDown
        }
    }
}

#[inline]
pub(super) fn record_len(payload: u32) -> u32 {
    RECORD_HEADER + payload.div_ceil(8) * 8
}

#[inline]
pub(super) fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

#[inline]
pub(super) fn pack(msgs: u32, pos: u32) -> u64 {
    (u64::from(msgs) << 32) | u64::from(pos)
}

/// What the creator fixed, and the queue-wide state.
///
/// `capacity` and `max_messages` are written once by the creator and read once by each opener,
/// which validates and keeps its own copy: a peer that changes them later changes nothing.
///
/// `state` is a set of bits that only ever grows (`fetch_or`), read as [`Lifecycle`]:
///
/// | value                        | meaning                                              | written by |
/// |------------------------------|------------------------------------------------------|------------|
/// | `0`                          | open                                                 | the creator (zeroed) |
/// | `CLOSED`                     | closed: puts fail, gets drain then `Disconnected`    | `close()` |
/// | `SHUT_DOWN` (`\| CLOSED`)    | shut down: puts fail, gets drain then `ShutDown`     | `shutdown(false)` |
/// | `SHUT_DOWN \| IMMEDIATE` (`\| CLOSED`) | shut down at once: gets fail at once too; the queued messages are dropped and count as done tasks | `shutdown(true)` |
/// | anything else                | written by no version of this crate: read as shut down (not immediate) | a hostile peer |
///
/// Each writer sets its bits (SeqCst), then wakes every sleeper. Producers read the word with
/// the put lock held, so once a writer has taken and released the put lock after setting it,
/// no put that missed it can still publish (see `Ring::settle_puts`). A queue never reopens
/// (but for a peer that scribbles on the word: denial of service, nothing more).
///
/// `senders` and `receivers` are sums over the peer table (see [`Peer`]), changed only
/// together with a peer's own counts; a scribbled total can make a side look gone or present
/// (denial of service), nothing more.
#[repr(C)]
#[derive(Debug, Default)]
pub(super) struct ConfigLine {
    pub(super) capacity: AtomicU32,
    pub(super) max_messages: AtomicU32,
    /// Open, closed or shut down (see the table above).
    pub(super) state: AtomicU32,
    /// Sending handles over all peers (sum of `Peer::senders`).
    pub(super) senders: AtomicU32,
    /// Receiving handles over all peers.
    pub(super) receivers: AtomicU32,
    _r: [AtomicU32; 11],
}

/// One side's lock on a line of its own: the other side never touches it (but for a sleeper's
/// handshake), so taking the lock costs no miss.
///
/// On the put side, `pos` is the producers' own copy of `tail`, written after `tail` under the
/// lock: a put reads it instead of the `tail` line, which waiting consumers keep reading (on
/// some CPUs such reads take the line over, and loading it back would cost a miss on every
/// message). A producer that died between the two stores leaves the copy behind; the next
/// one, which takes the lock as owner-died, reads `tail` itself. A peer that scribbles on the
/// copy can do what scribbling on `tail` does: corrupt messages, never make a put write
/// outside the data region (`reserve` checks the offset it forms). Unused on the get side.
#[repr(C)]
#[derive(Debug, Default)]
pub(super) struct SideLine {
    pub(super) lock: RawLock,
    pub(super) pos: AtomicU64,
    _r: [AtomicU64; 5],
}

/// A published position (`tail` or `head`) on a line of its own.
#[repr(C)]
#[derive(Debug, Default)]
pub(super) struct PosLine {
    pub(super) pos: AtomicU64,
    _r: [AtomicU64; 7],
}

/// A wait word on a line of its own.
#[repr(C)]
#[derive(Debug, Default)]
pub(super) struct WaitLine {
    pub(super) word: WaitWord,
    _r: [AtomicU32; 14],
}

/// Task accounting for `JoinableQueue`: unfinished tasks are the records ever published
/// (the message count in `tail`) minus `done`, so a producer killed mid-put can never leave a
/// task that nobody can finish. A message in fragments is one task: the consumer counts every
/// fragment but the one that completes a message done as it frees it (see "Messages of any
/// size" in the ring's module note).
#[repr(C)]
#[derive(Debug, Default)]
pub(super) struct TaskLine {
    /// Tasks marked done, wrapping like the message counts (the futex word `join` waits on).
    pub(super) done: AtomicU32,
    pub(super) sleepers: AtomicU32,
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
pub(super) struct Peer {
    pub(super) pid: AtomicU32,
    pub(super) senders: AtomicU32,
    pub(super) receivers: AtomicU32,
    _r: AtomicU32,
    pub(super) start: AtomicU64,
    _r2: AtomicU64,
}

#[repr(C)]
#[derive(Debug)]
pub(crate) struct RingState {
    pub(super) config: ConfigLine,
    pub(super) put_side: SideLine,
    pub(super) tail: PosLine,
    pub(super) get_side: SideLine,
    pub(super) head: PosLine,
    pub(super) data_wait: WaitLine,
    pub(super) space_wait: WaitLine,
    pub(super) tasks: TaskLine,
    pub(super) peers: [Peer; MAX_PEERS],
}

pub(super) const STATE_LEN: usize = size_of::<RingState>();
#[cfg(not(multiproc_loom))]
const _: () = {
    assert!(STATE_LEN % 64 == 0);
    assert!(size_of::<ConfigLine>() == 64 && size_of::<SideLine>() == 64);
    assert!(size_of::<PosLine>() == 64);
    assert!(size_of::<WaitLine>() == 64 && size_of::<Peer>() == 32);
};
