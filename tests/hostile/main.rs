//! Hostile-byte tests (issue 8): another process of the same user maps a live object's named
//! segment and writes whatever it likes into it, into the 64-byte header and into every control
//! word after it (ring positions, the words next to them where cached positions once lived,
//! record lengths, the peer table, lock words, counters). The README's threat model promises
//! what may come of that: data, a typed error, or a timed call that times out; never a panic, a
//! crash, a read or write out of bounds, nor a timed call that hangs.
//!
//! The property test [`hostile_bytes`] creates each kind of object by name, maps the same
//! `/dev/shm` file itself, scribbles at random (and sometimes misaligned) offsets with random and
//! edge values, before the operations or from a second thread while they run, and then runs the
//! object's operations with short timeouts on a worker thread under a watchdog. The explicit
//! tests below it cover the cases the issue lists, and the findings this suite made (each now
//! fixed and run like any other test). One operation is left out while a second thread
//! scribbles: a timed `Condition` wait takes the lock back as `lock()` does (documented on
//! `Condition::wait_timeout`), so a scribbled lock word can hold it past its timeout.
//!
//! Knobs: `HOSTILE_CASES` (cases per object type, default below), `HOSTILE_SEED` (a u64; the
//! default seed is fixed so that a run is reproducible).
#![allow(unsafe_code)]

#[path = "../common/mod.rs"]
mod common;

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use common::unique_name;
use multiproc::{
    Array, Barrier, BoundedSemaphore, Condition, Event, GetError, GetTimeoutError, JoinableQueue,
    Lock, OpenError, PutTimeoutError, Queue, RLock, Receiver, Semaphore, Sender, SharedMemory,
    TryGetError, TryLockError, TryPutError, Value,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

// ---------------------------------------------------------------------------------------------
// Limits

/// The timeout of every timed call.
const T: Duration = Duration::from_millis(10);
/// A timed call (timeout at most 50 ms) that takes longer than this has hung. Far above any
/// scheduling delay on a loaded 2-core machine, so the verdict is never a fluke.
const HANG: Duration = Duration::from_secs(3);
/// A case whose worker has not finished after this is reported as hung.
const CASE_LIMIT: Duration = Duration::from_secs(20);
/// How long reopening a scribbled segment may wait for a creator that looks unfinished.
const OPEN_WAIT: Duration = Duration::from_millis(20);
/// Default number of random cases per object type.
const DEFAULT_CASES: u32 = 300;

// ---------------------------------------------------------------------------------------------
// Segment layout, for the explicit cases (file offsets; mirrored from src/segment/header.rs and
// src/channel/ring/layout.rs). The random cases do not depend on it: they pick offsets over whole
// regions.

/// Size of the segment header; the payload starts here.
const H: usize = 64;
const HDR_STATE: usize = 8;
const HDR_VERSION: usize = 12;
const HDR_KIND: usize = 16;
const HDR_PAYLOAD_OFFSET: usize = 20;
const HDR_TOTAL_LEN: usize = 24;
const HDR_PAYLOAD_LEN: usize = 32;
const HDR_CREATOR: usize = 40;

/// The ring's shared state: config line, put-side line (lock first), tail, get-side line, head,
/// two wait lines, task line, then 128 peer slots of 32 bytes; the data region follows.
const Q_CAPACITY: usize = H;
const Q_MAX_MESSAGES: usize = H + 4;
/// The state word: 0 open, 1 closed, 2 shut down, 6 shut down at once (see `ConfigLine`).
const Q_STATE: usize = H + 8;
const Q_SENDERS: usize = H + 12;
const Q_RECEIVERS: usize = H + 16;
const Q_PUT_LINE: usize = H + 64;
const Q_TAIL: usize = H + 128;
/// The producers' copy of the tail, on their lock's line (a put reads it instead of `Q_TAIL`).
const Q_TAIL_COPY: usize = Q_PUT_LINE + LOCK_LEN;
const Q_GET_LINE: usize = H + 192;
const Q_HEAD: usize = H + 256;
const Q_TASKS: usize = H + 448;
const Q_PEERS: usize = H + 512;
const Q_PEER_LEN: usize = 32;
const Q_MAX_PEERS: usize = 128;
const Q_STATE_END: usize = Q_PEERS + Q_PEER_LEN * Q_MAX_PEERS;
/// Data bytes of every test queue (a power of two: the ring's capacity).
const Q_CAP: usize = 256;
/// Size of a `RawLock` (word, flags, owner start time).
const LOCK_LEN: usize = 16;

fn pack(msgs: u32, pos: u32) -> u64 {
    (u64::from(msgs) << 32) | u64::from(pos)
}

// ---------------------------------------------------------------------------------------------
// Raw access to a named segment, as another process has it

/// A second, independent mapping of `/dev/shm/<name>`: the hostile peer's view.
struct Raw {
    ptr: NonNull<u8>,
    /// The file's size.
    len: usize,
    /// The mapping's size: `len` rounded up to a page. The bytes past `len` in the last page
    /// are shared with every mapping of the file (the same page-cache page) but belong to no
    /// object: a write there by the crate is a write out of bounds.
    map_len: usize,
    /// The bytes as they were before the first scribble (to undo the scribbles).
    snapshot: Mutex<Vec<u8>>,
}

// SAFETY: the mapping is shared memory that every access touches through atomics or volatile
// copies only; nothing in `Raw` is tied to a thread.
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

impl Raw {
    /// Maps the whole file of the named segment `name`, read-write and shared.
    fn map(name: &str) -> Raw {
        let path = CString::new(format!("/dev/shm/{name}")).expect("no NUL in a name");
        // SAFETY: `path` is a valid NUL-terminated string; open has no other precondition.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(
            fd >= 0,
            "open /dev/shm/{name}: {}",
            std::io::Error::last_os_error()
        );
        let len = std::fs::metadata(format!("/dev/shm/{name}"))
            .expect("stat segment")
            .len() as usize;
        assert!(len > 0, "segment {name} is empty");
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let map_len = len.div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of an open descriptor; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        // SAFETY: `fd` is ours and open; the mapping keeps its own reference to the file.
        unsafe { libc::close(fd) };
        assert!(p != libc::MAP_FAILED, "mmap {name}");
        let raw = Raw {
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
            map_len,
            snapshot: Mutex::new(Vec::new()),
        };
        let snap = raw.read_all();
        *raw.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snap;
        raw
    }

    fn at(&self, off: usize, width: usize) -> *mut u8 {
        assert!(
            off + width <= self.len,
            "scribble at {off}+{width} past {}",
            self.len
        );
        self.ptr.as_ptr().wrapping_add(off)
    }

    /// Writes the low `width` (4 or 8) bytes of `v` at `off`: an atomic store when aligned, a
    /// volatile byte copy when not (a hostile process may write anything, anywhere).
    fn write(&self, off: usize, width: usize, v: u64) {
        let p = self.at(off, width);
        match width {
            4 if off % 4 == 0 => {
                // SAFETY: `p` is 4-aligned (mapping page-aligned, `off` a multiple of 4) and
                // inside the mapping, which lives as long as `self`; shared memory is only ever
                // accessed atomically by the crate.
                unsafe { AtomicU32::from_ptr(p.cast()) }.store(v as u32, Ordering::SeqCst);
            }
            8 if off % 8 == 0 => {
                // SAFETY: as above, 8-aligned.
                unsafe { AtomicU64::from_ptr(p.cast()) }.store(v, Ordering::SeqCst);
            }
            _ => {
                let bytes = v.to_le_bytes();
                for (i, b) in bytes.iter().take(width).enumerate() {
                    // SAFETY: `p + i` is inside the mapping (checked in `at`); a volatile byte
                    // store has no alignment requirement.
                    unsafe { p.wrapping_add(i).write_volatile(*b) };
                }
            }
        }
    }

    fn write32(&self, off: usize, v: u32) {
        self.write(off, 4, u64::from(v));
    }

    fn write64(&self, off: usize, v: u64) {
        self.write(off, 8, v);
    }

    fn read32(&self, off: usize) -> u32 {
        assert!(off % 4 == 0);
        let p = self.at(off, 4);
        // SAFETY: 4-aligned and inside the mapping (as in `write`).
        unsafe { AtomicU32::from_ptr(p.cast()) }.load(Ordering::SeqCst)
    }

    fn read64(&self, off: usize) -> u64 {
        assert!(off % 8 == 0);
        let p = self.at(off, 8);
        // SAFETY: 8-aligned and inside the mapping (as in `write`).
        unsafe { AtomicU64::from_ptr(p.cast()) }.load(Ordering::SeqCst)
    }

    /// The `width`-byte little-endian word at `off`, aligned or not.
    fn read_any(&self, off: usize, width: usize) -> u64 {
        let mut b = [0u8; 8];
        for (i, x) in b.iter_mut().take(width).enumerate() {
            let p = self.at(off + i, 1);
            // SAFETY: inside the mapping; a volatile byte load has no alignment requirement.
            *x = unsafe { p.read_volatile() };
        }
        u64::from_le_bytes(b)
    }

    fn read_all(&self) -> Vec<u8> {
        (0..self.len)
            .map(|i| {
                let p = self.at(i, 1);
                // SAFETY: inside the mapping; a volatile byte load has no alignment requirement.
                unsafe { p.read_volatile() }
            })
            .collect()
    }

    /// The first nonzero byte past the end of the file in its last page, if any: something
    /// wrote out of bounds.
    fn slack_written(&self) -> Option<(usize, u8)> {
        (self.len..self.map_len).find_map(|i| {
            let p = self.ptr.as_ptr().wrapping_add(i);
            // SAFETY: inside the last page of the mapping, which the file backs (a page that
            // the file reaches into is mapped whole); volatile byte load, no alignment needed.
            let b = unsafe { p.read_volatile() };
            (b != 0).then_some((i, b))
        })
    }

    /// Takes a new snapshot (the state the scribbles are measured against).
    fn resnapshot(&self) {
        let snap = self.read_all();
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snap;
    }

    /// Puts back the snapshot's bytes at `off..off + width`.
    fn restore_at(&self, off: usize, width: usize) {
        let snap = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(&snap[off..off + width]);
        drop(snap);
        self.write(off, width, u64::from_le_bytes(b));
    }

    /// Puts back the whole snapshot, 4 bytes at a time (to free a call that a scribble blocked).
    fn restore_all(&self) {
        for off in (0..self.len / 4 * 4).step_by(4) {
            self.restore_at(off, 4);
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; no reference into it outlives us.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

/// Unlinks a name when dropped, so that a failed case leaves nothing in /dev/shm (the creator's
/// drop unlinks it too; a second unlink finds nothing and is ignored).
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let name = CString::new(format!("/{}", self.0)).expect("no NUL in a name");
        // SAFETY: a valid NUL-terminated name; failure (already unlinked) is ignored.
        unsafe { libc::shm_unlink(name.as_ptr()) };
    }
}

/// The calling thread's kernel id.
fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// A process id that is dead: a child that exited and was reaped.
fn fresh_dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn `true`");
    let pid = child.id();
    child.wait().expect("reap `true`");
    pid
}

fn dead_pid() -> u32 {
    static DEAD: OnceLock<u32> = OnceLock::new();
    *DEAD.get_or_init(fresh_dead_pid)
}

// ---------------------------------------------------------------------------------------------
// What a case is

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Queue,
    JoinableQueue,
    Lock,
    RLock,
    Semaphore,
    BoundedSemaphore,
    Event,
    Condition,
    Barrier,
    Value,
    Array,
    SharedMemory,
}

const KINDS: [Kind; 12] = [
    Kind::Queue,
    Kind::JoinableQueue,
    Kind::Lock,
    Kind::RLock,
    Kind::Semaphore,
    Kind::BoundedSemaphore,
    Kind::Event,
    Kind::Condition,
    Kind::Barrier,
    Kind::Value,
    Kind::Array,
    Kind::SharedMemory,
];

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Queue => "queue",
            Kind::JoinableQueue => "jqueue",
            Kind::Lock => "lock",
            Kind::RLock => "rlock",
            Kind::Semaphore => "semaphore",
            Kind::BoundedSemaphore => "bsemaphore",
            Kind::Event => "event",
            Kind::Condition => "condition",
            Kind::Barrier => "barrier",
            Kind::Value => "value",
            Kind::Array => "array",
            Kind::SharedMemory => "shm",
        }
    }

    /// Queues get more cases: they have by far the most control words.
    fn weight(self) -> u32 {
        match self {
            Kind::Queue => 4,
            Kind::JoinableQueue => 2,
            Kind::SharedMemory => 1,
            _ => 1,
        }
    }
}

/// Where in the segment a scribble lands.
#[derive(Clone, Copy, Debug)]
enum Area {
    /// The first 512 bytes of the state: for a queue, every control word but the peer table
    /// (capacity, counts, both lock words, positions, wait and task words).
    Hot,
    /// The 64-byte header.
    Header,
    /// The object's control state (for a queue, the ring state before the data region).
    State,
    /// A queue's data region (record length words); the state for other objects.
    Data,
    /// Anywhere in the file.
    Any,
}

/// What a scribble writes.
#[derive(Clone, Copy, Debug)]
enum Val {
    Lit(u64),
    /// Process 1 (init): always alive.
    Pid1,
    /// Our own process id (the main thread's tid).
    MyPid,
    /// The tid of the worker thread that runs the operations.
    WorkerTid,
    /// A process that exited.
    DeadPid,
    /// A pid with the lock word's "waiters" bit.
    Waiters(u32),
    /// A ring position: (messages << 32) | byte position.
    Pos(u32, u32),
    /// The word's value at the time of the write plus this (wrapping): positions a few
    /// messages or bytes (maybe odd) off, counters one off.
    Nudge(i64),
}

#[derive(Clone, Copy, Debug)]
struct Scribble {
    area: Area,
    at: u32,
    misalign: u8,
    wide: bool,
    val: Val,
}

#[derive(Clone, Debug)]
struct Case {
    kind: Kind,
    scribbles: Vec<Scribble>,
    /// Scribble from a second thread while the operations run (else once, before them).
    during: bool,
    ops_seed: u64,
    n_ops: u8,
    /// Kind-specific size: queue capacity in messages, barrier parties, semaphore value.
    param: u32,
}

fn val_strategy() -> impl Strategy<Value = Val> {
    let edges = prop::sample::select(vec![
        0u64,
        1,
        2,
        3,
        4,
        7,
        8,
        9,
        15,
        16,
        63,
        64,
        65,
        127,
        128,
        129,
        247,
        248,
        255,
        256,
        257,
        4095,
        4096,
        4097,
        u64::from(u32::MAX),
        u64::from(u32::MAX - 1),
        u64::from(u32::MAX - 7),
        u64::from(u32::MAX >> 1),
        1 << 31,
        (1 << 31) | 1,
        1 << 32,
        (1 << 32) - 8,
        (1 << 32) + 1,
        u64::MAX,
        u64::MAX - 1,
        i64::MAX as u64,
        1 << 63,
        0x5555_5555_5555_5555,
        0xAAAA_AAAA_AAAA_AAAA,
        u64::from_le_bytes(*b"MPROCSEG"),
        u64::from(u32::from_le_bytes(*b"REDY")),
    ]);
    prop_oneof![
        5 => edges.prop_map(Val::Lit),
        3 => any::<u64>().prop_map(Val::Lit),
        2 => any::<u32>().prop_map(|v| Val::Lit(u64::from(v))),
        2 => (0u64..8192).prop_map(Val::Lit),
        1 => Just(Val::Pid1),
        1 => Just(Val::MyPid),
        1 => Just(Val::WorkerTid),
        1 => Just(Val::DeadPid),
        1 => prop::sample::select(vec![1u32, 0]).prop_map(Val::Waiters),
        3 => (
            prop_oneof![0u32..8, any::<u32>()],
            prop_oneof![0u32..1024, (0u32..1024).prop_map(|p| p | 1), any::<u32>()]
        )
            .prop_map(|(m, p)| Val::Pos(m, p)),
        4 => prop_oneof![
            (-300i64..300).prop_map(Val::Nudge),
            (-3i64..4, -300i64..300).prop_map(|(m, p)| Val::Nudge((m << 32) + p)),
            prop::sample::select(vec![1i64, -1, 1 << 31, -(1 << 32), 1 << 32])
                .prop_map(Val::Nudge),
        ],
    ]
}

fn scribble_strategy() -> impl Strategy<Value = Scribble> {
    (
        prop_oneof![
            3 => Just(Area::Header),
            6 => Just(Area::Hot),
            4 => Just(Area::State),
            3 => Just(Area::Data),
            1 => Just(Area::Any),
        ],
        any::<u32>(),
        prop_oneof![6 => Just(0u8), 1 => 1u8..8],
        any::<bool>(),
        val_strategy(),
    )
        .prop_map(|(area, at, misalign, wide, val)| Scribble {
            area,
            at,
            misalign,
            wide,
            val,
        })
}

fn case_strategy(kind: Kind) -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(scribble_strategy(), 1..6),
        prop::bool::weighted(0.3),
        any::<u64>(),
        4u8..14,
        1u32..5,
    )
        .prop_map(move |(scribbles, during, ops_seed, n_ops, param)| Case {
            kind,
            scribbles,
            during,
            ops_seed,
            n_ops,
            param,
        })
}

// ---------------------------------------------------------------------------------------------
// Running a case

/// A scribble resolved against a mapped segment.
#[derive(Clone, Copy, Debug)]
struct Write {
    off: usize,
    width: usize,
    value: u64,
    /// Add `value` to what the word holds now instead of storing it.
    nudge: bool,
}

impl Write {
    fn apply(&self, raw: &Raw) {
        let v = if self.nudge {
            raw.read_any(self.off, self.width).wrapping_add(self.value)
        } else {
            self.value
        };
        raw.write(self.off, self.width, v);
    }
}

/// Where the state of a segment ends (for a queue: where the data region starts).
fn state_end(kind: Kind, len: usize) -> usize {
    match kind {
        Kind::Queue | Kind::JoinableQueue => Q_STATE_END.min(len),
        _ => len,
    }
}

fn resolve(kind: Kind, s: &Scribble, len: usize, worker: u32) -> Write {
    let width = if s.wide { 8 } else { 4 };
    let end_state = state_end(kind, len);
    let (lo, hi) = match (kind, s.area) {
        (Kind::SharedMemory, _) | (_, Area::Any) => (0, len),
        (_, Area::Header) => (0, H.min(len)),
        (_, Area::Hot) => (H.min(len), end_state.min(H + 512)),
        (_, Area::State) => (H.min(len), end_state),
        (_, Area::Data) if end_state < len => (end_state, len),
        (_, Area::Data) => (H.min(len), len),
    };
    let (lo, hi) = if hi <= lo + width { (0, len) } else { (lo, hi) };
    let mut off = lo + s.at as usize % (hi - lo);
    off -= off % width;
    off += usize::from(s.misalign);
    off = off.min(len - width);
    let nudge = matches!(s.val, Val::Nudge(_));
    let value = match s.val {
        Val::Nudge(d) => d as u64,
        Val::Lit(v) => v,
        Val::Pid1 => 1,
        Val::MyPid => u64::from(std::process::id()),
        Val::WorkerTid => u64::from(worker),
        Val::DeadPid => u64::from(dead_pid()),
        Val::Waiters(1) => u64::from(1u32 | 1 << 31),
        Val::Waiters(_) => u64::from(std::process::id() | 1 << 31),
        Val::Pos(m, p) => pack(m, p),
    };
    Write {
        off,
        width,
        value,
        nudge,
    }
}

/// Cases run, per kind, and how many of them scribbled during the operations.
static RUN: [AtomicUsize; 12] = [const { AtomicUsize::new(0) }; 12];
static RUN_DURING: AtomicUsize = AtomicUsize::new(0);
/// Operations run over all cases.
static OPS: AtomicUsize = AtomicUsize::new(0);

/// What a worker knows about its case.
struct Cx<'a> {
    case: &'a Case,
    name: &'a str,
    /// The operation running now (for the report of a panic or hang).
    cur: &'a Mutex<String>,
    /// The raw mapping, once the object exists (the watchdog uses it to undo scribbles).
    raw_slot: &'a OnceLock<Arc<Raw>>,
    failures: RefCell<Vec<String>>,
    rng: Cell<u64>,
    worker: u32,
    /// Operations performed (for the report).
    trace: RefCell<Vec<&'static str>>,
}

impl Cx<'_> {
    fn rand(&self) -> u64 {
        // xorshift64*
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&self, n: usize) -> usize {
        (self.rand() % n as u64) as usize
    }

    fn chance(&self, percent: u64) -> bool {
        self.rand() % 100 < percent
    }

    /// Runs one operation: records its name, and for a timed one checks that it returned in
    /// time.
    fn op<R>(&self, name: &'static str, timed: bool, f: impl FnOnce() -> R) -> R {
        name.clone_into(&mut self.cur.lock().unwrap_or_else(PoisonError::into_inner));
        OPS.fetch_add(1, Ordering::Relaxed);
        self.trace.borrow_mut().push(name);
        let start = Instant::now();
        let r = f();
        let took = start.elapsed();
        if timed && took > HANG {
            self.failures
                .borrow_mut()
                .push(format!("timed call `{name}` hung: took {took:?}"));
        }
        r
    }

    fn fail(&self, what: String) {
        self.failures.borrow_mut().push(what);
    }

    /// Maps the object's segment and makes it available to the watchdog.
    fn map(&self) -> Arc<Raw> {
        let raw = Arc::new(Raw::map(self.name));
        let _ = self.raw_slot.set(raw.clone());
        raw
    }

    fn writes(&self, raw: &Raw) -> Vec<Write> {
        self.case
            .scribbles
            .iter()
            .map(|s| resolve(self.case.kind, s, raw.len, self.worker))
            .collect()
    }

    /// Takes a snapshot of the segment (as set up), then either scribbles once and runs `ops`,
    /// or runs `ops` while a second thread scribbles (and now and then undoes its scribbles).
    fn scribbled(&self, raw: &Raw, ops: impl FnOnce()) {
        raw.resnapshot();
        let writes = self.writes(raw);
        if !self.case.during {
            for w in &writes {
                w.apply(raw);
            }
            ops();
            self.check_slack(raw);
            return;
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                // Half of the cases undo their scribbles now and then (a word that flickers
                // between the hostile and the real value), half keep them in place.
                let flicker = self.case.ops_seed & 1 == 0;
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (i, w) in writes.iter().enumerate() {
                        if flicker && round % 2 == 1 && (round / 2 + i as u64) % 3 == 0 {
                            raw.restore_at(w.off, w.width);
                        } else {
                            w.apply(raw);
                        }
                    }
                    round += 1;
                    if round % 4 == 0 {
                        std::thread::sleep(Duration::from_micros(300));
                    } else {
                        std::thread::yield_now();
                    }
                }
            });
            /// Stops the scribbler also when `ops` panics.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(&stop);
            ops();
        });
        self.check_slack(raw);
    }

    fn check_slack(&self, raw: &Raw) {
        if let Some((off, b)) = raw.slack_written() {
            self.fail(format!(
                "write out of bounds: byte {off} of a {}-byte segment is {b:#x}",
                raw.len
            ));
        }
    }

    /// Runs `n_ops` operations picked from `table` (by index), with the ops seed.
    fn run_ops(&self, n_table: usize, mut one: impl FnMut(usize)) {
        for _ in 0..self.case.n_ops {
            one(self.below(n_table));
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_owned()
    }
}

/// Runs one case on a worker thread under a watchdog. `Err` describes the failure.
fn run_case(case: &Case) -> Result<(), String> {
    RUN[KINDS.iter().position(|k| *k == case.kind).unwrap()].fetch_add(1, Ordering::Relaxed);
    if case.during {
        RUN_DURING.fetch_add(1, Ordering::Relaxed);
    }
    let name = unique_name(case.kind.tag());
    let _unlink = Unlink(name.clone());
    let cur = Arc::new(Mutex::new(String::from("create")));
    let raw_slot: Arc<OnceLock<Arc<Raw>>> = Arc::new(OnceLock::new());
    let (tx, rx) = mpsc::channel();
    {
        let (case, name, cur, raw_slot) =
            (case.clone(), name.clone(), cur.clone(), raw_slot.clone());
        std::thread::Builder::new()
            .name(format!("hostile-{}", case.kind.tag()))
            .spawn(move || {
                let cx = Cx {
                    case: &case,
                    name: &name,
                    cur: &cur,
                    raw_slot: &raw_slot,
                    failures: RefCell::new(Vec::new()),
                    rng: Cell::new(case.ops_seed | 1),
                    worker: gettid(),
                    trace: RefCell::new(Vec::new()),
                };
                let r = catch_unwind(AssertUnwindSafe(|| run_kind(&cx)));
                let trace = cx.trace.borrow().join(",");
                let out = match r {
                    Err(p) => Err(format!(
                        "panic in `{}`: {} (ops: {trace})",
                        cur.lock().unwrap_or_else(PoisonError::into_inner),
                        panic_message(&*p)
                    )),
                    Ok(()) if !cx.failures.borrow().is_empty() => Err(format!(
                        "{} (ops: {trace})",
                        cx.failures.borrow().join("; ")
                    )),
                    Ok(()) => Ok(()),
                };
                let _ = tx.send(out);
            })
            .expect("spawn worker");
    }
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(r) => r.map_err(|e| with_writes(case, &raw_slot, e)),
        Err(_) => {
            let op = cur.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let e = with_writes(
                case,
                &raw_slot,
                format!("`{op}` still running after {CASE_LIMIT:?}"),
            );
            // Undo the scribbles (and close a queue) so the stuck call can finish and the
            // object be dropped and unlinked.
            if let Some(raw) = raw_slot.get() {
                raw.restore_all();
                if matches!(case.kind, Kind::Queue | Kind::JoinableQueue) {
                    raw.write32(Q_STATE, 1);
                }
            }
            let _ = rx.recv_timeout(Duration::from_secs(5));
            Err(e)
        }
    }
}

fn with_writes(case: &Case, raw_slot: &OnceLock<Arc<Raw>>, e: String) -> String {
    let writes: Vec<String> = match raw_slot.get() {
        Some(raw) => case
            .scribbles
            .iter()
            .map(|s| {
                let w = resolve(case.kind, s, raw.len, 0);
                let op = if w.nudge { "+=" } else { "=" };
                match s.val {
                    Val::WorkerTid => format!("{}@{}=<worker tid>", w.width, w.off),
                    _ => format!("{}@{}{op}{:#x}", w.width, w.off, w.value),
                }
            })
            .collect(),
        None => Vec::new(),
    };
    format!(
        "{:?} ({} scribble{}, writes {}): {e}",
        case.kind,
        if case.during { "during" } else { "before" },
        if case.scribbles.len() == 1 { "" } else { "s" },
        writes.join(" ")
    )
}

fn run_kind(cx: &Cx<'_>) {
    match cx.case.kind {
        Kind::Queue => queue_case(cx),
        Kind::JoinableQueue => joinable_case(cx),
        Kind::Lock => lock_case(cx),
        Kind::RLock => rlock_case(cx),
        Kind::Semaphore => semaphore_case(cx),
        Kind::BoundedSemaphore => bounded_case(cx),
        Kind::Event => event_case(cx),
        Kind::Condition => condition_case(cx),
        Kind::Barrier => barrier_case(cx),
        Kind::Value => value_case(cx),
        Kind::Array => array_case(cx),
        Kind::SharedMemory => shm_case(cx),
    }
}

/// Opens the object by name with a short wait for "still being created"; any result is fine.
macro_rules! reopen {
    ($cx:expr, $ty:ty) => {
        $cx.op(concat!("open ", stringify!($ty)), true, || {
            <$ty>::builder()
                .name($cx.name)
                .open_timeout(OPEN_WAIT)
                .open()
        })
    };
}

// ---------------------------------------------------------------------------------------------
// Queues

type Q = Queue<u64>;
type Tx = Sender<u64>;
type Rx = Receiver<u64>;

fn queue_case(cx: &Cx<'_>) {
    let q = Q::builder()
        .name(cx.name)
        .capacity(cx.case.param as usize * 3)
        .max_bytes(Q_CAP)
        .create()
        .expect("create queue");
    let mut qs = vec![q];
    let mut txs: Vec<Tx> = vec![qs[0].sender().expect("sender")];
    let mut rxs: Vec<Rx> = vec![qs[0].receiver().expect("receiver")];
    // Move the positions along (so that records wrap) and leave some messages in.
    for i in 0..cx.below(40) {
        let _ = txs[0].try_put(i as u64);
        let _ = rxs[0].try_get();
    }
    for i in 0..cx.below(4) {
        let _ = txs[0].try_put(1000 + i as u64);
    }
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(16, |k| {
            let v = cx.rand() >> cx.below(64);
            match k {
                0 => {
                    if let Some(q) = pick(cx, &qs) {
                        let _ = cx.op("Queue::try_put", true, || q.try_put(v));
                    }
                }
                1 => {
                    if let Some(t) = pick(cx, &txs) {
                        let _ = cx.op("Sender::put_timeout", true, || t.put_timeout(v, T));
                    }
                }
                2 => {
                    if let Some(t) = pick(cx, &txs) {
                        let bytes = vec![0xa5; cx.below(140)];
                        let _ = cx.op("Sender::try_put_bytes", true, || t.try_put_bytes(&bytes));
                    }
                }
                3 => {
                    if let Some(r) = pick(cx, &rxs) {
                        let _ = cx.op("Receiver::try_get", true, || r.try_get());
                    }
                }
                4 => {
                    if let Some(q) = pick(cx, &qs) {
                        let _ = cx.op("Queue::get_timeout", true, || q.get_timeout(T));
                    }
                }
                5 => {
                    if let Some(r) = pick(cx, &rxs) {
                        let _ = cx.op("Receiver::get_bytes_timeout", true, || {
                            r.get_bytes_timeout(T)
                        });
                    }
                }
                6 => {
                    // Untimed: only when it cannot wait (a message is there and the get lock
                    // is free), and never while the scribbler runs.
                    if let Some(r) = pick(cx, &rxs) {
                        if !cx.case.during && !r.is_empty() && raw.read32(Q_GET_LINE) == 0 {
                            let mut buf = vec![0u8; cx.below(12)];
                            let _ = cx.op("Receiver::get_bytes_into", true, || {
                                r.get_bytes_into(&mut buf)
                            });
                        }
                    }
                }
                7 => {
                    if let Some(q) = pick(cx, &qs) {
                        cx.op("Queue::len/is_empty/is_full/...", true, || {
                            let _ = (q.len(), q.is_empty(), q.is_full(), q.capacity());
                            let _ = (q.max_message_len(), q.is_closed(), q.is_shutdown());
                            let _ = format!("{q:?}");
                        });
                    }
                }
                8 => {
                    if let Some(t) = pick(cx, &txs) {
                        let c = cx.op("Sender::clone", true, || t.clone());
                        txs.push(c);
                    }
                    if let Some(r) = pick(cx, &rxs) {
                        let c = cx.op("Receiver::clone", true, || r.clone());
                        rxs.push(c);
                    }
                }
                9 => {
                    if let Some(q) = pick(cx, &qs) {
                        let c = cx.op("Queue::clone", true, || q.clone());
                        qs.push(c);
                    }
                }
                10 => {
                    if !txs.is_empty() && cx.chance(50) {
                        let i = cx.below(txs.len());
                        cx.op("drop Sender", true, || drop(txs.swap_remove(i)));
                    } else if !rxs.is_empty() {
                        let i = cx.below(rxs.len());
                        cx.op("drop Receiver", true, || drop(rxs.swap_remove(i)));
                    }
                }
                11 => match cx.below(3) {
                    0 => {
                        if let Ok(t) = reopen!(cx, Tx) {
                            txs.push(t);
                        }
                    }
                    1 => {
                        if let Ok(r) = reopen!(cx, Rx) {
                            rxs.push(r);
                        }
                    }
                    _ => {
                        if let Ok(q) = reopen!(cx, Q) {
                            qs.push(q);
                        }
                    }
                },
                12 => {
                    if let Some(q) = pick(cx, &qs) {
                        if let Ok(t) = cx.op("Queue::sender", true, || q.sender()) {
                            txs.push(t);
                        }
                        if let Ok(r) = cx.op("Queue::receiver", true, || q.receiver()) {
                            rxs.push(r);
                        }
                    }
                }
                13 => {
                    if cx.chance(20) {
                        if let Some(q) = pick(cx, &qs) {
                            cx.op("Queue::close", true, || q.close());
                        }
                    }
                }
                14 => {
                    if let Some(r) = pick(cx, &rxs) {
                        let _ = cx.op("Receiver::get_timeout", true, || r.get_timeout(T));
                    }
                }
                _ => {
                    if let Some(t) = pick(cx, &txs) {
                        let _ = cx.op("Sender::try_put", true, || t.try_put(v));
                    }
                }
            }
        });
    });
    cx.op("drop all handles", true, || drop((txs, rxs, qs)));
}

/// Drops a result on purpose: any outcome but a panic or a hang is allowed.
fn ignore<X>(_: X) {}

fn pick<'v, X>(cx: &Cx<'_>, v: &'v [X]) -> Option<&'v X> {
    if v.is_empty() {
        None
    } else {
        Some(&v[cx.below(v.len())])
    }
}

type JQ = JoinableQueue<u64>;

fn joinable_case(cx: &Cx<'_>) {
    let q = JQ::builder()
        .name(cx.name)
        .capacity(cx.case.param as usize * 3)
        .max_bytes(Q_CAP)
        .create()
        .expect("create joinable queue");
    let mut qs = vec![q];
    for i in 0..cx.below(30) {
        let _ = qs[0].try_put(i as u64);
        let _ = qs[0].try_get();
        if cx.chance(80) {
            let _ = qs[0].task_done();
        }
    }
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(10, |k| {
            let q = pick(cx, &qs).expect("the creator stays");
            match k {
                0 => ignore(cx.op("JoinableQueue::try_put", true, || q.try_put(7))),
                1 => ignore(cx.op("JoinableQueue::put_timeout", true, || q.put_timeout(8, T))),
                2 => ignore(cx.op("JoinableQueue::try_get", true, || q.try_get())),
                3 => ignore(cx.op("JoinableQueue::get_timeout", true, || q.get_timeout(T))),
                4 | 5 => ignore(cx.op("JoinableQueue::task_done", true, || q.task_done())),
                6 => ignore(cx.op("JoinableQueue::join_timeout", true, || q.join_timeout(T))),
                7 => ignore(cx.op("JoinableQueue::unfinished_tasks/len", true, || {
                    (q.unfinished_tasks(), q.len(), q.is_empty(), q.is_full())
                })),
                8 => {
                    let c = cx.op("JoinableQueue::clone", true, || q.clone());
                    qs.push(c);
                }
                _ => {
                    if let Ok(o) = reopen!(cx, JQ) {
                        qs.push(o);
                    }
                }
            }
        });
    });
    cx.op("drop all handles", true, || drop(qs));
}

// ---------------------------------------------------------------------------------------------
// Locks

fn lock_case(cx: &Cx<'_>) {
    let lock = Lock::builder().name(cx.name).create().expect("create lock");
    let mut locks = vec![lock];
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(7, |k| {
            let l = pick(cx, &locks).expect("the creator stays");
            match k {
                0 => {
                    let g = cx.op("Lock::try_lock", true, || l.try_lock());
                    cx.op("LockGuard drop", true, || drop(g));
                }
                1 | 2 => {
                    let g = cx.op("Lock::try_lock_for", true, || l.try_lock_for(T));
                    let g = match g {
                        Err(TryLockError::OwnerDied(d)) if cx.chance(50) => {
                            Some(cx.op("OwnerDied::recover", true, || d.recover()))
                        }
                        Ok(g) => Some(g),
                        Err(_) => None,
                    };
                    if g.is_some() {
                        // Held: a second try from this thread must not succeed or panic.
                        let _ = cx.op("Lock::try_lock (held)", true, || l.try_lock().is_ok());
                    }
                    cx.op("LockGuard drop", true, || drop(g));
                }
                3 => ignore(cx.op("Lock::is_locked/is_poisoned", true, || {
                    (l.is_locked(), l.is_poisoned())
                })),
                4 => {
                    if let Ok(o) = reopen!(cx, Lock) {
                        locks.push(o);
                    }
                }
                5 => {
                    if locks.len() > 1 {
                        let o = locks.pop();
                        cx.op("drop Lock", true, || drop(o));
                    }
                }
                _ => ignore(cx.op("Lock::try_lock_for(50ms)", true, || {
                    l.try_lock_for(Duration::from_millis(50)).is_ok()
                })),
            }
        });
    });
    cx.op("drop all handles", true, || drop(locks));
}

fn rlock_case(cx: &Cx<'_>) {
    let lock = RLock::builder()
        .name(cx.name)
        .create()
        .expect("create rlock");
    let mut locks = vec![lock];
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(6, |k| {
            let l = pick(cx, &locks).expect("the creator stays");
            match k {
                0 => {
                    let g = cx.op("RLock::try_lock", true, || l.try_lock());
                    cx.op("RLockGuard drop", true, || drop(g));
                }
                1 | 2 => {
                    let g = cx.op("RLock::try_lock_for", true, || l.try_lock_for(T));
                    let g = match g {
                        Err(TryLockError::OwnerDied(d)) => Some(d.into_inner()),
                        Ok(g) => Some(g),
                        Err(_) => None,
                    };
                    if g.is_some() {
                        let inner = cx.op("RLock::try_lock (reenter)", true, || l.try_lock());
                        let _ = cx.op("RLock::depth", true, || l.depth());
                        cx.op("RLockGuard drop (inner)", true, || drop(inner));
                    }
                    cx.op("RLockGuard drop", true, || drop(g));
                }
                3 => ignore(cx.op("RLock::is_locked/is_poisoned/depth", true, || {
                    (l.is_locked(), l.is_poisoned(), l.depth())
                })),
                4 => {
                    if let Ok(o) = reopen!(cx, RLock) {
                        locks.push(o);
                    }
                }
                _ => {
                    if locks.len() > 1 {
                        let o = locks.pop();
                        cx.op("drop RLock", true, || drop(o));
                    }
                }
            }
        });
    });
    cx.op("drop all handles", true, || drop(locks));
}

fn condition_case(cx: &Cx<'_>) {
    let c = Condition::builder()
        .name(cx.name)
        .create()
        .expect("create condition");
    let mut cs = vec![c];
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(5, |k| {
            let c = pick(cx, &cs).expect("the creator stays");
            match k {
                0..=2 => {
                    let g = cx.op("Condition::try_lock_for", true, || c.try_lock_for(T));
                    let g = match g {
                        Ok(g) => g,
                        Err(TryLockError::OwnerDied(d)) => d.recover(),
                        Err(TryLockError::WouldBlock) => return,
                    };
                    let g = match cx.below(5) {
                        0 => {
                            let n = [0, 1, 2, u32::MAX][cx.below(4)];
                            cx.op("Condition::notify", true, || c.notify(&g, n));
                            g
                        }
                        1 => {
                            cx.op("Condition::notify_all", true, || c.notify_all(&g));
                            g
                        }
                        // Waiting gives the lock up and takes it back as `lock()` does, without
                        // a timeout (documented on `Condition::wait_timeout`): only when no
                        // scribbler can take the lock word meanwhile.
                        2 | 3 if !cx.case.during => {
                            match cx.op("Condition::wait_timeout", true, || c.wait_timeout(g, T)) {
                                Ok((g, _)) => g,
                                Err(d) => d.into_inner().0,
                            }
                        }
                        4 if !cx.case.during => {
                            match cx.op("Condition::wait_for", true, || {
                                c.wait_for(g, || false, Some(T))
                            }) {
                                Ok((g, _)) => g,
                                Err(d) => d.into_inner().0,
                            }
                        }
                        _ => g,
                    };
                    cx.op("ConditionGuard drop", true, || drop(g));
                }
                3 => {
                    if let Ok(o) = reopen!(cx, Condition) {
                        cs.push(o);
                    }
                }
                _ => {
                    let g = cx.op("Condition::try_lock", true, || c.try_lock());
                    drop(g);
                }
            }
        });
    });
    cx.op("drop all handles", true, || drop(cs));
}

// ---------------------------------------------------------------------------------------------
// Semaphores, events, barriers

fn semaphore_case(cx: &Cx<'_>) {
    let s = Semaphore::builder()
        .name(cx.name)
        .value(cx.case.param - 1)
        .create()
        .expect("create semaphore");
    let mut ss = vec![s];
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(6, |k| {
            let s = pick(cx, &ss).expect("the creator stays");
            match k {
                0 => ignore(cx.op("Semaphore::try_acquire", true, || s.try_acquire())),
                1 => ignore(cx.op("Semaphore::try_acquire_for", true, || s.try_acquire_for(T))),
                2 => {
                    // A count a peer set at (or near) u32::MAX must not make `release` panic
                    // (issue 8; see `semaphore_release_at_a_scribbled_max_count_does_not_panic`).
                    if cx.chance(50) {
                        cx.op("Semaphore::release", true, || s.release());
                    } else {
                        cx.op("Semaphore::release_n", true, || s.release_n(3));
                    }
                }
                3 => ignore(cx.op("Semaphore::get_value", true, || s.get_value())),
                4 => {
                    if let Ok(o) = reopen!(cx, Semaphore) {
                        ss.push(o);
                    }
                }
                _ => {
                    if ss.len() > 1 {
                        let o = ss.pop();
                        cx.op("drop Semaphore", true, || drop(o));
                    }
                }
            }
        });
    });
    cx.op("drop all handles", true, || drop(ss));
}

fn bounded_case(cx: &Cx<'_>) {
    let s = BoundedSemaphore::builder()
        .name(cx.name)
        .value(cx.case.param)
        .create()
        .expect("create bounded semaphore");
    let mut ss = vec![s];
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(5, |k| {
            let s = pick(cx, &ss).expect("the creator stays");
            match k {
                0 => ignore(cx.op("BoundedSemaphore::try_acquire", true, || s.try_acquire())),
                1 => ignore(cx.op("BoundedSemaphore::try_acquire_for", true, || {
                    s.try_acquire_for(T)
                })),
                2 => ignore(cx.op("BoundedSemaphore::release", true, || s.release())),
                3 => ignore(cx.op("BoundedSemaphore::get_value/max_value", true, || {
                    (s.get_value(), s.max_value())
                })),
                _ => {
                    if let Ok(o) = reopen!(cx, BoundedSemaphore) {
                        ss.push(o);
                    }
                }
            }
        });
    });
    cx.op("drop all handles", true, || drop(ss));
}

fn event_case(cx: &Cx<'_>) {
    let e = Event::builder()
        .name(cx.name)
        .create()
        .expect("create event");
    if cx.chance(50) {
        e.set();
    }
    let mut es = vec![e];
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(6, |k| {
            let e = pick(cx, &es).expect("the creator stays");
            match k {
                0 => ignore(cx.op("Event::is_set", true, || e.is_set())),
                1 => cx.op("Event::set", true, || e.set()),
                2 => cx.op("Event::clear", true, || e.clear()),
                3 => ignore(cx.op("Event::wait_timeout", true, || e.wait_timeout(T))),
                4 => cx.op("Event::set+clear", true, || {
                    e.set();
                    e.clear();
                }),
                _ => {
                    if let Ok(o) = reopen!(cx, Event) {
                        es.push(o);
                    }
                }
            }
        });
    });
    cx.op("drop all handles", true, || drop(es));
}

fn barrier_case(cx: &Cx<'_>) {
    let b = Barrier::builder()
        .name(cx.name)
        .parties(cx.case.param)
        .create()
        .expect("create barrier");
    let mut bs = vec![b];
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(6, |k| {
            let b = pick(cx, &bs).expect("the creator stays");
            match k {
                0 | 1 => ignore(cx.op("Barrier::wait_timeout", true, || b.wait_timeout(T))),
                2 => ignore(cx.op("Barrier::n_waiting/is_broken/parties", true, || {
                    (b.n_waiting(), b.is_broken(), b.parties())
                })),
                3 => cx.op("Barrier::abort", true, || b.abort()),
                4 => cx.op("Barrier::reset", true, || b.reset()),
                _ => {
                    if let Ok(o) = reopen!(cx, Barrier) {
                        bs.push(o);
                    }
                }
            }
        });
    });
    cx.op("drop all handles", true, || drop(bs));
}

// ---------------------------------------------------------------------------------------------
// Values, arrays, raw shared memory

fn value_case(cx: &Cx<'_>) {
    let v = Value::<u64>::builder()
        .name(cx.name)
        .value(42)
        .create()
        .expect("create value");
    let mut vs = vec![v];
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(5, |k| {
            let v = pick(cx, &vs).expect("the creator stays");
            match k {
                0..=2 => {
                    let g = cx.op("Value::try_lock_for", true, || v.try_lock_for(T));
                    let got = match g {
                        Ok(mut g) => {
                            *g = g.wrapping_add(1);
                            true
                        }
                        Err(TryLockError::OwnerDied(d)) => {
                            let mut g = d.recover();
                            *g = 7;
                            true
                        }
                        Err(TryLockError::WouldBlock) => false,
                    };
                    // `get`/`set` wait for the lock without a timeout: only when it was just
                    // free and no scribbler can take it meanwhile.
                    if got && !cx.case.during {
                        let x = cx.op("Value::get", true, || v.get());
                        cx.op("Value::set", true, || v.set(x ^ 1));
                    }
                }
                3 => ignore(cx.op("Value::try_lock", true, || v.try_lock().map(|g| *g).ok())),
                _ => {
                    if let Ok(o) = reopen!(cx, Value<u64>) {
                        vs.push(o);
                    }
                }
            }
        });
    });
    cx.op("drop all handles", true, || drop(vs));
}

fn array_case(cx: &Cx<'_>) {
    let a = Array::<u32>::builder()
        .name(cx.name)
        .len(cx.case.param as usize * 3)
        .create()
        .expect("create array");
    let mut arrs = vec![a];
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(5, |k| {
            let a = pick(cx, &arrs).expect("the creator stays");
            match k {
                0..=2 => {
                    let g = cx.op("Array::try_lock_for", true, || a.try_lock_for(T));
                    let got = match g {
                        Ok(mut g) => {
                            let n = g.len();
                            g[cx.below(n)] ^= 0xff;
                            true
                        }
                        Err(TryLockError::OwnerDied(d)) => {
                            let g = d.recover();
                            let _ = g.iter().copied().max();
                            true
                        }
                        Err(TryLockError::WouldBlock) => false,
                    };
                    if got && !cx.case.during {
                        let i = cx.below(a.len() + 2);
                        let x = cx.op("Array::get", true, || a.get(i));
                        if i < a.len() {
                            cx.op("Array::set", true, || {
                                a.set(i, x.unwrap_or(0).wrapping_add(1))
                            });
                        }
                        let _ = cx.op("Array::to_vec", true, || a.to_vec());
                    }
                }
                3 => ignore(cx.op("Array::try_lock", true, || {
                    a.try_lock().map(|g| g.len()).ok()
                })),
                _ => {
                    if let Ok(o) = reopen!(cx, Array<u32>) {
                        arrs.push(o);
                    }
                }
            }
        });
    });
    cx.op("drop all handles", true, || drop(arrs));
}

fn shm_case(cx: &Cx<'_>) {
    let size = 64 * cx.case.param as usize;
    let shm = SharedMemory::create_named(cx.name, size).expect("create shared memory");
    let raw = cx.map();
    cx.scribbled(&raw, || {
        cx.run_ops(3, |k| match k {
            0 => {
                if let Ok(o) = cx.op("SharedMemory::open", true, || SharedMemory::open(cx.name)) {
                    let _ = cx.op("SharedMemory::to_vec", true, || o.to_vec());
                }
            }
            1 => {
                let mut buf = [0u8; 16];
                let off = cx.below(size + 32);
                let _ = cx.op("SharedMemory::read", true, || shm.read(off, &mut buf));
            }
            _ => {
                let off = cx.below(size + 32);
                let _ = cx.op("SharedMemory::write", true, || shm.write(off, b"hostile"));
            }
        });
    });
    cx.op("drop SharedMemory", true, || drop(shm));
}

// ---------------------------------------------------------------------------------------------
// The property test

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

/// Random scribbles into every kind of object; prints how many cases ran per kind.
#[test]
fn hostile_bytes() {
    let _dog = common::watchdog(Duration::from_secs(600), "hostile_bytes");
    let base_cases = env_u64("HOSTILE_CASES").map_or(DEFAULT_CASES, |n| n as u32);
    let seed = env_u64("HOSTILE_SEED").unwrap_or(0x1550_e008_5eed);
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    // Most time goes to timeouts, not CPU: a few runners side by side.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&kind) = KINDS.get(i) else { break };
                    let config = Config {
                        cases: base_cases * kind.weight(),
                        failure_persistence: None,
                        max_shrink_iters: 64,
                        max_shrink_time: 30_000,
                        ..Config::default()
                    };
                    let mut key = [0u8; 32];
                    key[..8].copy_from_slice(&seed.to_le_bytes());
                    key[8] = i as u8;
                    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
                    let mut runner = TestRunner::new_with_rng(config, rng);
                    let r = runner.run(&case_strategy(kind), |case| {
                        run_case(&case).map_err(TestCaseError::fail)
                    });
                    match r {
                        Ok(()) => {}
                        Err(TestError::Fail(why, case)) => failures
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!("{kind:?}: {why}\n  minimal case: {case:?}")),
                        Err(e) => failures
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!("{kind:?}: {e}")),
                    }
                }
            });
        }
    });
    let counts: Vec<String> = KINDS
        .iter()
        .zip(&RUN)
        .map(|(k, n)| format!("{} {}", k.tag(), n.load(Ordering::Relaxed)))
        .collect();
    let total: usize = RUN.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    println!(
        "hostile: {total} cases, {} operations ({} cases scribbling during them) in {:.1?}, seed {seed:#x}: {}",
        OPS.load(Ordering::Relaxed),
        RUN_DURING.load(Ordering::Relaxed),
        started.elapsed(),
        counts.join(", ")
    );
    let failures = failures
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    assert!(
        failures.is_empty(),
        "hostile bytes broke a promise:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Explicit cases from issue 8

/// Runs `f`, a timed call (timeout at most 50 ms), and fails if it hung.
fn within<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    let took = start.elapsed();
    assert!(took < HANG, "timed call {what} hung: took {took:?}");
    r
}

/// A named queue of `messages` messages and `Q_CAP` data bytes, with a sender, a receiver and
/// the raw mapping; checks that the layout is the one the offsets above describe.
fn queue(tag: &str, messages: usize) -> (Q, Tx, Rx, Raw, Unlink) {
    let name = unique_name(tag);
    let unlink = Unlink(name.clone());
    let q = Q::builder()
        .name(&name)
        .capacity(messages)
        .max_bytes(Q_CAP)
        .create()
        .expect("create queue");
    let tx = q.sender().expect("sender");
    let rx = q.receiver().expect("receiver");
    let raw = Raw::map(&name);
    assert_eq!(raw.len, Q_STATE_END + Q_CAP, "queue layout changed");
    assert_eq!(
        raw.read32(Q_CAPACITY) as usize,
        Q_CAP,
        "queue layout changed"
    );
    assert_eq!(
        raw.read32(Q_MAX_MESSAGES) as usize,
        messages,
        "queue layout changed"
    );
    (q, tx, rx, raw, unlink)
}

/// Every operation of a queue once, timed ones checked for hangs; results are not judged.
fn exercise_queue(q: &Q, tx: &Tx, rx: &Rx, name: &str) {
    let _ = within("try_put", || tx.try_put(1));
    let _ = within("put_timeout", || tx.put_timeout(2, T));
    let _ = within("try_put_bytes", || tx.try_put_bytes(&[1; 40]));
    let _ = within("try_get", || rx.try_get());
    let _ = within("get_timeout", || rx.get_timeout(T));
    let _ = within("get_bytes_timeout", || q.get_bytes_timeout(T));
    let _ = (
        q.len(),
        q.is_empty(),
        q.is_full(),
        q.is_closed(),
        q.is_shutdown(),
    );
    let (a, b, c) = (q.clone(), tx.clone(), rx.clone());
    let _ = within("try_put (clone)", || b.try_put(3));
    let _ = within("try_get (clone)", || c.try_get());
    drop((a, b, c));
    let _ = within("Sender::open", || {
        Tx::builder().name(name).open_timeout(OPEN_WAIT).open()
    });
    let _ = within("Receiver::open", || {
        Rx::builder().name(name).open_timeout(OPEN_WAIT).open()
    });
}

/// Issue 8, bug 2: odd `head`/`tail` positions made a put store a record header through a
/// misaligned pointer past the end of the segment, and a get read past it.
#[test]
fn queue_odd_positions_are_corrupted() {
    let _dog = common::watchdog(Duration::from_secs(60), "queue_odd_positions");
    let cap = Q_CAP as u32;
    let (q, tx, rx, raw, _u) = queue("odd", 8);
    tx.try_put(5).unwrap();
    assert_eq!(raw.read64(Q_TAIL), pack(1, 16), "queue layout changed");
    assert_eq!(rx.try_get(), Ok(5));
    assert_eq!(raw.read64(Q_HEAD), pack(1, 16), "queue layout changed");

    // The tail three bytes before the end of the data region.
    set_tail(&raw, pack(0, cap - 3));
    raw.write64(Q_HEAD, pack(0, cap - 3));
    assert!(matches!(tx.try_put(7), Err(TryPutError::Corrupted(7, _))));
    assert!(matches!(
        within("put_timeout", || tx.put_timeout(7, T)),
        Err(PutTimeoutError::Corrupted(7, _))
    ));
    // An odd head with a message after it.
    raw.write64(Q_HEAD, pack(0, 4));
    set_tail(&raw, pack(1, 4 + 16));
    assert!(matches!(rx.try_get(), Err(TryGetError::Corrupted(_))));
    assert!(matches!(
        within("get_timeout", || rx.get_timeout(T)),
        Err(GetTimeoutError::Corrupted(_))
    ));
    assert!(matches!(
        rx.get_bytes_into(&mut [0; 4]),
        Err(GetError::Corrupted(_))
    ));
    // Every combination of odd and even positions near the ends.
    let positions = [
        1,
        3,
        4,
        7,
        cap - 1,
        cap - 3,
        cap - 4,
        cap + 1,
        cap + 4,
        u32::MAX,
        u32::MAX - 3,
    ];
    for &hp in &positions {
        for &tp in &positions {
            for (hm, tm) in [(0, 0), (0, 1), (5, 9), (u32::MAX, 2)] {
                raw.write64(Q_HEAD, pack(hm, hp));
                set_tail(&raw, pack(tm, tp));
                exercise_queue(&q, &tx, &rx, q_name(&q));
            }
        }
    }
    assert_eq!(
        raw.slack_written(),
        None,
        "a put wrote past the end of the segment"
    );
}

/// Scribbles the tail where both sides read it: the position and the producers' copy.
fn set_tail(raw: &Raw, v: u64) {
    raw.write64(Q_TAIL, v);
    raw.write64(Q_TAIL_COPY, v);
}

fn q_name(q: &Q) -> &str {
    use multiproc::SharedObject;
    q.name().expect("named").trim_start_matches('/')
}

/// Issue 8, bug 3: the copies of the other side's position were kept in shared memory, next
/// to each side's lock, where a peer could make them lead the real position: puts overwrote
/// unread messages, gets returned stale bytes. Every word of both side lines but the lock
/// words, and the padding of the position lines, is scribbled before every operation; the
/// queue must still give back exactly what went in, in order.
#[test]
fn queue_cached_positions_scribbled_lose_no_message() {
    let _dog = common::watchdog(Duration::from_secs(60), "queue_cached_positions");
    let (_q, tx, rx, raw, _u) = queue("cached", 4);
    let scribble = |raw: &Raw| {
        let tail = raw.read64(Q_TAIL);
        let head = raw.read64(Q_HEAD);
        let lead = pack((tail >> 32) as u32 + 3, tail as u32 + 48);
        let behind = pack((head >> 32) as u32 + 1, head as u32 + 16);
        for line in [Q_PUT_LINE, Q_GET_LINE, Q_TAIL, Q_HEAD] {
            // Skipped: the positions, and the producers' copy of the tail (a position too).
            let first = match line {
                Q_PUT_LINE => LOCK_LEN + 8,
                Q_GET_LINE => LOCK_LEN,
                _ => 8,
            };
            for off in (line + first..line + 64).step_by(8) {
                let v = match off % 32 {
                    0 => tail,
                    8 => lead,
                    16 => behind,
                    _ => head,
                };
                raw.write64(off, v);
            }
        }
    };
    for round in 0..50u64 {
        scribble(&raw);
        let mut put = 0;
        while tx.try_put(round * 100 + put).is_ok() {
            put += 1;
            scribble(&raw);
            assert!(put <= 4, "more messages accepted than the queue holds");
        }
        assert_eq!(put, 4, "round {round}");
        for i in 0..4 {
            scribble(&raw);
            assert_eq!(rx.try_get(), Ok(round * 100 + i), "round {round}");
        }
        assert_eq!(rx.try_get(), Err(TryGetError::Empty));
    }
}

/// Record length words: a huge length, `u32::MAX` (the wrap marker), a length that crosses the
/// end of the data region, a wrap marker that skips past the tail.
#[test]
fn queue_record_lengths_scribbled() {
    let _dog = common::watchdog(Duration::from_secs(60), "queue_record_lengths");
    let cap = Q_CAP as u32;
    let lengths = [
        0,
        1,
        7,
        8,
        9,
        cap / 2 - 8,
        cap / 2 - 7,
        cap - 16,
        cap - 9,
        cap - 8,
        cap - 7,
        cap,
        cap + 1,
        1 << 31,
        u32::MAX - 1,
        u32::MAX,
    ];
    // Records at a few places, also the last slot before the end.
    for start in [0, 8, 120, cap - 24, cap - 16, cap - 8] {
        for &len in &lengths {
            let (q, tx, rx, raw, _u) = queue("len", 8);
            // Move both positions to `start`, then put one message.
            set_tail(&raw, pack(3, start));
            raw.write64(Q_HEAD, pack(3, start));
            let put = tx.try_put(0x1234_5678);
            let data = Q_STATE_END + (if put.is_ok() { start } else { 0 }) as usize;
            // If the record did not fit before the end, the put wrapped to offset 0.
            let at = if put.is_ok() && raw.read32(data) == u32::MAX {
                Q_STATE_END
            } else {
                data
            };
            raw.write32(at, len);
            let mut small = [0u8; 3];
            // A header with the fragment bit (but for the wrap marker) and no message begun
            // is skipped: the queue is then empty, and a blocking get would wait for more.
            let orphan = len & (1 << 31) != 0 && len != u32::MAX;
            let _ = within("get_bytes_into", || {
                if !q.is_empty() && !orphan {
                    Some(rx.get_bytes_into(&mut small))
                } else {
                    None
                }
            });
            let _ = within("try_get", || rx.try_get());
            let _ = within("get_timeout", || rx.get_timeout(T));
            let _ = within("get_bytes_timeout", || rx.get_bytes_timeout(T));
            exercise_queue(&q, &tx, &rx, q_name(&q));
        }
    }
    // Each on a fresh queue: a receiver's private copy of the tail, taken by an earlier get,
    // would otherwise stand in for the scribbled one.
    // A record that starts 16 bytes before the end and claims 24 bytes: crosses the end.
    let (_q, _tx, rx, raw, _u) = queue("cross", 8);
    raw.write64(Q_HEAD, pack(0, cap - 16));
    set_tail(&raw, pack(1, cap + 16));
    raw.write32(Q_STATE_END + Q_CAP - 16, 24);
    assert!(matches!(rx.try_get(), Err(TryGetError::Corrupted(_))));
    // A wrap marker that skips everything up to the tail (and the record after it).
    let (_q, _tx, rx, raw, _u) = queue("wrap", 8);
    raw.write64(Q_HEAD, pack(0, cap - 16));
    raw.write32(Q_STATE_END + Q_CAP - 16, u32::MAX);
    set_tail(&raw, pack(1, cap));
    assert!(matches!(rx.try_get(), Err(TryGetError::Corrupted(_))));
    // A wrap marker followed by another one at offset 0.
    let (_q, _tx, rx, raw, _u) = queue("wrap2", 8);
    raw.write64(Q_HEAD, pack(0, cap - 16));
    raw.write32(Q_STATE_END + Q_CAP - 16, u32::MAX);
    set_tail(&raw, pack(1, cap + 16));
    raw.write32(Q_STATE_END, u32::MAX);
    assert!(matches!(rx.try_get(), Err(TryGetError::Corrupted(_))));
}

/// Issue 8, bug 4: cloning a handle with a full (or scribbled) peer table panicked. Filled
/// with pid 1 (always alive), nothing can be reclaimed: clones must work, new registrations
/// fail with an error.
#[test]
fn queue_peer_table_full_then_clone() {
    let _dog = common::watchdog(Duration::from_secs(60), "queue_peer_table");
    let (q, tx, rx, raw, _u) = queue("peers", 8);
    let name = q_name(&q).to_owned();
    for i in 0..Q_MAX_PEERS {
        raw.write32(Q_PEERS + i * Q_PEER_LEN, 1);
        raw.write64(Q_PEERS + i * Q_PEER_LEN + 16, 0);
    }
    let (tx2, rx2, q2) = (tx.clone(), rx.clone(), q.clone());
    tx2.put(5).unwrap();
    assert_eq!(rx2.get_timeout(Duration::from_secs(5)), Ok(5));
    assert!(matches!(
        q2.sender(),
        Err(OpenError::TooManyProcesses { .. })
    ));
    assert!(matches!(
        q.receiver(),
        Err(OpenError::TooManyProcesses { .. })
    ));
    assert!(
        Tx::builder()
            .name(&name)
            .open_timeout(OPEN_WAIT)
            .open()
            .is_err()
    );
    assert!(Rx::open(&name).is_err());
    drop((tx2, rx2, q2));
    tx.put(6).unwrap();
    assert_eq!(rx.get_timeout(Duration::from_secs(5)), Ok(6));

    // A table full of dead processes, of pending and half-reclaimed slots, of junk: every
    // operation must give a result; dead slots are reclaimed.
    let dead = fresh_dead_pid();
    let fills: [&dyn Fn(usize) -> (u32, u32, u32, u64); 5] = [
        &|_| (dead, 3, 1, 0),
        &|_| (dead | 1 << 31, 1, 1, 0),
        &|_| (u32::MAX, 7, 7, 12345),
        &|i| {
            (
                (i as u32).wrapping_mul(2_654_435_761),
                u32::MAX,
                u32::MAX,
                u64::MAX,
            )
        },
        &|i| (if i % 2 == 0 { 1 } else { dead }, u32::MAX, 0, 1),
    ];
    for fill in fills {
        for i in 0..Q_MAX_PEERS {
            let (pid, s, r, start) = fill(i);
            let p = Q_PEERS + i * Q_PEER_LEN;
            raw.write32(p, pid);
            raw.write32(p + 4, s);
            raw.write32(p + 8, r);
            raw.write64(p + 16, start);
        }
        raw.write32(Q_SENDERS, u32::MAX);
        raw.write32(Q_RECEIVERS, u32::MAX);
        exercise_queue(&q, &tx, &rx, &name);
        if let Ok(t) = within("Queue::sender", || q.sender()) {
            let _ = t.clone();
        }
        let _ = within("Queue::receiver", || q.receiver());
    }
    // Dead pids only: a new sender finds a slot.
    for i in 0..Q_MAX_PEERS {
        raw.write32(Q_PEERS + i * Q_PEER_LEN, dead);
        raw.write64(Q_PEERS + i * Q_PEER_LEN + 16, 0);
    }
    assert!(q.sender().is_ok(), "dead peers are reclaimed");
}

/// Lock words of a queue's two sides naming pid 1 (alive: timed calls time out), a dead
/// process (taken over), our own process, or junk with the waiters bit.
#[test]
fn queue_lock_words_scribbled() {
    let _dog = common::watchdog(Duration::from_secs(60), "queue_lock_words");
    let dead = fresh_dead_pid();
    for word in [
        1,
        1 | 1 << 31,
        dead,
        std::process::id(),
        gettid(),
        u32::MAX,
        1 << 30,
    ] {
        for flags in [0, 1, 2, u32::MAX] {
            for line in [Q_PUT_LINE, Q_GET_LINE] {
                let (q, tx, rx, raw, _u) = queue("qlock", 4);
                tx.try_put(1).unwrap();
                raw.write32(line, word);
                raw.write32(line + 4, flags);
                raw.write64(line + 8, u64::from(flags));
                exercise_queue(&q, &tx, &rx, q_name(&q));
                let _ = within("put_timeout(50ms)", || {
                    tx.put_timeout(9, Duration::from_millis(50))
                });
                let _ = within("get_timeout(50ms)", || {
                    rx.get_timeout(Duration::from_millis(50))
                });
            }
        }
    }
}

/// A segment whose put lock is held by process 1 (alive): puts time out as `Full`, in time.
#[test]
fn queue_put_lock_held_by_a_live_stranger_times_out() {
    let _dog = common::watchdog(Duration::from_secs(60), "queue_put_lock_live");
    let (_q, tx, rx, raw, _u) = queue("qlive", 4);
    raw.write32(Q_PUT_LINE, 1);
    raw.write64(Q_PUT_LINE + 8, 0);
    assert!(matches!(tx.try_put(1), Err(TryPutError::Full(1))));
    let start = Instant::now();
    assert!(matches!(
        tx.put_timeout(1, Duration::from_millis(50)),
        Err(PutTimeoutError::Timeout(1))
    ));
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(start.elapsed() < HANG);
    // A dead holder is taken over: the put goes through.
    raw.write32(Q_PUT_LINE, fresh_dead_pid());
    raw.write64(Q_PUT_LINE + 8, 0);
    within("put_timeout after takeover", || {
        tx.put_timeout(2, Duration::from_secs(2))
    })
    .unwrap();
    assert_eq!(rx.try_get(), Ok(2));
}

/// Task counters of a `JoinableQueue`: `done` ahead of, behind, or far from the published
/// count.
#[test]
fn joinable_queue_task_counters_scribbled() {
    let _dog = common::watchdog(Duration::from_secs(60), "joinable_tasks");
    for done in [0, 1, 2, u32::MAX, 1 << 31] {
        for sleepers in [0, 1, u32::MAX] {
            let name = unique_name("jtasks");
            let _u = Unlink(name.clone());
            let q = JQ::builder()
                .name(&name)
                .capacity(4)
                .max_bytes(Q_CAP)
                .create()
                .unwrap();
            q.try_put(1).unwrap();
            let raw = Raw::map(&name);
            raw.write32(Q_TASKS, done);
            raw.write32(Q_TASKS + 4, sleepers);
            let _ = within("task_done", || q.task_done());
            let _ = within("join_timeout", || q.join_timeout(T));
            let _ = q.unfinished_tasks();
            let _ = within("try_get", || q.try_get());
            let _ = within("task_done", || q.task_done());
            let _ = within("join_timeout", || q.join_timeout(T));
        }
    }
}

fn named(tag: &str) -> (String, Unlink) {
    let name = unique_name(tag);
    (name.clone(), Unlink(name))
}

/// Lock words naming pid 1 (alive), a dead process, ourselves, junk: `try_lock_for` returns in
/// time, a dead owner's lock is taken over.
#[test]
fn lock_words_naming_live_and_dead_pids() {
    let _dog = common::watchdog(Duration::from_secs(120), "lock_words");
    let me = gettid();
    let live = [1, 1 | 1 << 31, std::process::id(), me];
    // Lock: a live owner (also ourselves: a timed self-deadlock) makes `try_lock_for` time out.
    for &word in &live {
        let (name, _u) = named("lw");
        let l = Lock::builder().name(&name).create().unwrap();
        let raw = Raw::map(&name);
        raw.write32(H, word);
        raw.write32(H + 4, u32::MAX);
        let r = within("Lock::try_lock_for", || l.try_lock_for(T));
        assert!(
            matches!(r, Err(TryLockError::WouldBlock)),
            "word {word:#x}: got {r:?}"
        );
        let _ = (l.is_locked(), l.is_poisoned());
    }
    // A dead owner (or a tid that cannot exist) is taken over.
    for word in [fresh_dead_pid(), (1 << 30) - 1, u32::MAX] {
        let (name, _u) = named("ld");
        let l = Lock::builder().name(&name).create().unwrap();
        let raw = Raw::map(&name);
        raw.write32(H, word);
        let r = within("Lock::try_lock_for (dead owner)", || {
            l.try_lock_for(Duration::from_secs(2))
        });
        assert!(
            matches!(r, Err(TryLockError::OwnerDied(_))),
            "word {word:#x}: got {r:?}"
        );
    }
    // RLock: a word naming this thread is a hold by this thread (depth scribbled too).
    for word in live.into_iter().chain([(1 << 30) - 1, u32::MAX]) {
        for depth in [0, 1, u32::MAX] {
            let (name, _u) = named("rw");
            let l = RLock::builder().name(&name).create().unwrap();
            let raw = Raw::map(&name);
            raw.write32(H, word);
            raw.write32(H + LOCK_LEN, depth);
            let g = within("RLock::try_lock_for", || l.try_lock_for(T));
            if let Ok(g) = g {
                // A dead or impossible owner was taken over: re-entering works.
                let g2 = l.try_lock().expect("reenter");
                drop((g2, g));
            } else if live.contains(&word) && word != me {
                assert!(matches!(g, Err(TryLockError::WouldBlock)), "word {word:#x}");
            }
            let _ = (l.is_locked(), l.is_poisoned(), l.depth());
        }
    }
    // Condition, Value, Array: the lock word is the first word of the payload.
    for &word in &[1, fresh_dead_pid(), u32::MAX] {
        let (name, _u) = named("cw");
        let c = Condition::builder().name(&name).create().unwrap();
        Raw::map(&name).write32(H, word);
        if let Ok(g) = within("Condition::try_lock_for", || c.try_lock_for(T)) {
            c.notify_all(&g);
        }
        let (name, _u) = named("vw");
        let v = Value::<u64>::builder().name(&name).create().unwrap();
        Raw::map(&name).write32(H, word);
        let _ = within("Value::try_lock_for", || v.try_lock_for(T).map(|g| *g));
        let (name, _u) = named("aw");
        let a = Array::<u32>::builder().name(&name).len(4).create().unwrap();
        Raw::map(&name).write32(H, word);
        let _ = within("Array::try_lock_for", || a.try_lock_for(T).map(|g| g.len()));
    }
}

/// Barrier counts: arrivals at `parties - 1` (the next arrival completes), at or above
/// `parties`, the broken bit, a dead party in a slot, `parties` itself scribbled.
#[test]
fn barrier_counts_scribbled() {
    let _dog = common::watchdog(Duration::from_secs(60), "barrier_counts");
    let dead = fresh_dead_pid();
    for parties in [1u32, 2, 3] {
        let words = [
            parties - 1,
            parties,
            parties + 1,
            4095,
            4096,
            1 << 31,
            (1 << 31) | (parties - 1),
            u32::MAX,
            u32::MAX - 4095 + parties - 1,
        ];
        for &word in &words {
            let (name, _u) = named("bar");
            let b = Barrier::builder()
                .name(&name)
                .parties(parties)
                .create()
                .unwrap();
            let raw = Raw::map(&name);
            raw.write32(H, word);
            let r = within("Barrier::wait_timeout", || b.wait_timeout(T));
            if word == parties - 1 {
                assert_eq!(r, Ok(parties - 1), "the last arrival passes");
            }
            let _ = (b.n_waiting(), b.is_broken());
            b.reset();
            let _ = within("Barrier::wait_timeout", || b.wait_timeout(T));
            b.abort();
            let _ = within("Barrier::wait_timeout", || b.wait_timeout(T));
            b.reset();
            // `parties` (and history) scribbled: ours is cached; a reopen checks it.
            raw.write32(H + 4, u32::MAX);
            raw.write32(H + 8, u32::MAX);
            let _ = within("Barrier::wait_timeout", || b.wait_timeout(T));
            assert!(
                Barrier::builder()
                    .name(&name)
                    .open_timeout(OPEN_WAIT)
                    .open()
                    .is_err()
            );
        }
        // A dead party sits in slot 0 of the current generation: a waiter breaks the barrier
        // instead of waiting for it.
        if parties >= 3 {
            let (name, _u) = named("bslot");
            let b = Barrier::builder()
                .name(&name)
                .parties(parties)
                .create()
                .unwrap();
            let raw = Raw::map(&name);
            raw.write32(H, 1); // one arrival in generation 0
            raw.write32(H + 16, dead);
            raw.write32(H + 20, 0);
            raw.write64(H + 24, 0);
            let r = within("Barrier::wait_timeout(2s)", || {
                b.wait_timeout(Duration::from_secs(2))
            });
            assert!(r.is_err());
            // Slots naming impossible generations and live or dead pids.
            for i in 0..parties as usize {
                raw.write32(H + 16 + 16 * i, if i % 2 == 0 { 1 } else { dead });
                raw.write32(H + 20 + 16 * i, u32::MAX - i as u32);
            }
            b.reset();
            let _ = within("Barrier::wait_timeout", || b.wait_timeout(T));
        }
    }
}

/// Semaphore counts at the edge: a bounded semaphore at `u32::MAX` refuses a release; the
/// sleeper count and the bound scribbled change nothing for us.
#[test]
fn semaphore_counts_scribbled() {
    let _dog = common::watchdog(Duration::from_secs(60), "semaphore_counts");
    let (name, _u) = named("bsem");
    let s = BoundedSemaphore::builder()
        .name(&name)
        .value(2)
        .create()
        .unwrap();
    let raw = Raw::map(&name);
    raw.write32(H, u32::MAX);
    assert!(s.release().is_err());
    assert!(s.try_acquire());
    raw.write32(H + 8, u32::MAX); // the bound, as other processes see it
    raw.write32(H, 2);
    assert!(s.release().is_err(), "our bound is the one we opened with");
    raw.write32(H + 4, u32::MAX); // sleepers
    assert!(s.try_acquire());
    assert!(s.release().is_ok());
    assert!(within("try_acquire_for", || s.try_acquire_for(T)));

    let (name, _u) = named("sem");
    let s = Semaphore::builder().name(&name).value(0).create().unwrap();
    let raw = Raw::map(&name);
    raw.write32(H, u32::MAX - 1);
    s.release();
    assert_eq!(s.get_value(), u32::MAX);
    assert!(s.try_acquire());
    raw.write32(H + 4, u32::MAX);
    raw.write32(H, 0);
    assert!(!within("try_acquire_for", || s.try_acquire_for(T)));
    s.release();
    assert!(s.try_acquire());
}

/// Issue 8 (found by this suite): a peer that set a semaphore's count to `u32::MAX` made our
/// next `Semaphore::release` panic ("semaphore count overflow"); the threat model says no safe
/// function panics because of what another process wrote.
#[test]
fn semaphore_release_at_a_scribbled_max_count_does_not_panic() {
    let (name, _u) = named("semmax");
    let s = Semaphore::builder().name(&name).value(0).create().unwrap();
    Raw::map(&name).write32(H, u32::MAX);
    let r = catch_unwind(AssertUnwindSafe(|| s.release()));
    assert!(
        r.is_ok(),
        "Semaphore::release panicked on a scribbled count"
    );
}

/// Header scribbles: every field of the 64-byte header with edge values. Opening by name must
/// give an `OpenError` for every field that the open checks (never a panic); the live object
/// keeps working, it validated its header once.
#[test]
fn header_scribbles_give_open_errors() {
    let _dog = common::watchdog(Duration::from_secs(120), "header_scribbles");
    let values: [u64; 9] = [
        0,
        1,
        63,
        65,
        u64::from(u32::MAX),
        1 << 32,
        u64::MAX,
        u64::from_le_bytes(*b"MPROCSEG"),
        0x4c4b_0002,
    ];
    // (offset, width, whether a change must make the open fail)
    let fields: [(usize, usize, bool); 9] = [
        (0, 8, true),
        (HDR_STATE, 4, true),
        (HDR_VERSION, 4, true),
        (HDR_KIND, 4, true),
        (HDR_PAYLOAD_OFFSET, 4, true),
        (HDR_TOTAL_LEN, 8, true),
        (HDR_PAYLOAD_LEN, 8, true),
        (HDR_CREATOR, 4, false),
        (48, 8, false),
    ];
    macro_rules! check {
        ($ty:ty, $make:expr, $use:expr) => {{
            for &(off, width, must_fail) in &fields {
                for &v in &values {
                    let (name, _u) = named("hdr");
                    let obj: $ty = $make(&name);
                    let raw = Raw::map(&name);
                    let before = if width == 8 {
                        raw.read64(off)
                    } else {
                        u64::from(raw.read32(off))
                    };
                    raw.write(off, width, v);
                    let changed = if width == 8 {
                        before != v
                    } else {
                        before != v & 0xffff_ffff
                    };
                    let r = within("open", || {
                        <$ty>::builder().name(&name).open_timeout(OPEN_WAIT).open()
                    });
                    if must_fail && changed {
                        assert!(
                            r.is_err(),
                            "{}: header field at {off} = {v:#x} still opens",
                            stringify!($ty)
                        );
                    }
                    drop(r);
                    #[allow(clippy::redundant_closure_call)]
                    within("use", || $use(&obj));
                }
            }
        }};
    }
    check!(
        Q,
        |n: &str| Q::builder()
            .name(n)
            .capacity(4)
            .max_bytes(Q_CAP)
            .create()
            .unwrap(),
        |q: &Q| {
            let _ = q.try_put(1);
            let _ = q.get_timeout(T);
        }
    );
    check!(
        Tx,
        |n: &str| Tx::builder()
            .name(n)
            .capacity(4)
            .max_bytes(Q_CAP)
            .create()
            .unwrap(),
        |t: &Tx| ignore(t.try_put(1))
    );
    check!(
        JQ,
        |n: &str| JQ::builder()
            .name(n)
            .capacity(4)
            .max_bytes(Q_CAP)
            .create()
            .unwrap(),
        |q: &JQ| ignore(q.join_timeout(T))
    );
    check!(
        Lock,
        |n: &str| Lock::builder().name(n).create().unwrap(),
        |l: &Lock| ignore(l.try_lock_for(T))
    );
    check!(
        RLock,
        |n: &str| RLock::builder().name(n).create().unwrap(),
        |l: &RLock| ignore(l.try_lock_for(T))
    );
    check!(
        Semaphore,
        |n: &str| Semaphore::builder().name(n).value(1).create().unwrap(),
        |s: &Semaphore| ignore(s.try_acquire_for(T))
    );
    check!(
        BoundedSemaphore,
        |n: &str| BoundedSemaphore::builder()
            .name(n)
            .value(1)
            .create()
            .unwrap(),
        |s: &BoundedSemaphore| ignore(s.release())
    );
    check!(
        Event,
        |n: &str| Event::builder().name(n).create().unwrap(),
        |e: &Event| ignore(e.wait_timeout(T))
    );
    check!(
        Condition,
        |n: &str| Condition::builder().name(n).create().unwrap(),
        |c: &Condition| ignore(c.try_lock_for(T))
    );
    check!(
        Barrier,
        |n: &str| Barrier::builder().name(n).parties(2).create().unwrap(),
        |b: &Barrier| ignore(b.wait_timeout(T))
    );
    check!(
        Value<u64>,
        |n: &str| Value::<u64>::builder().name(n).create().unwrap(),
        |v: &Value<u64>| ignore(v.try_lock_for(T).map(|g| *g))
    );
    check!(
        Array<u32>,
        |n: &str| Array::<u32>::builder().name(n).len(4).create().unwrap(),
        |a: &Array<u32>| ignore(a.try_lock_for(T).map(|g| g.len()))
    );
    // The plain `open` (default wait for an unfinished creator) on a header that reads "being
    // created": an error after that wait, not a hang.
    let (name, _u) = named("hdr0");
    let _l = Lock::builder().name(&name).create().unwrap();
    let raw = Raw::map(&name);
    raw.write32(HDR_STATE, 0);
    let start = Instant::now();
    assert!(matches!(Lock::open(&name), Err(OpenError::Uninitialized)));
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// Raw shared memory has no header: whatever a peer writes, opening and reading it works.
#[test]
fn shared_memory_open_after_scribbles() {
    let (name, _u) = named("shmx");
    let shm = SharedMemory::create_named(&name, 100).unwrap();
    let raw = Raw::map(&name);
    for off in (0..raw.len - 3).step_by(3) {
        raw.write(off, 4, u64::MAX);
    }
    raw.write(raw.len - 4, 4, u64::MAX);
    let o = SharedMemory::open(&name).unwrap();
    assert_eq!(o.len(), shm.len());
    assert!(o.to_vec().iter().all(|&b| b == 0xff));
    assert!(o.write(o.len() - 1, b"xy").is_err());
}
