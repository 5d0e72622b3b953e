//! Calling a function in another process of the same executable, and the start-up hook that
//! turns a freshly exec'd copy of the executable into a spawned child.
//!
//! A spawned child is this executable started again (`/proc/self/exe`), so every function sits
//! at the same offset from any other as in the parent. The function a child runs is a plain
//! function pointer (`fn(A) -> R`: a `fn` item or a closure that captures nothing, coerced at
//! the caller's line, so a capturing closure is a type error there). A [`Target`] holds two
//! offsets from [`anchor`]: of that function, and of the monomorphised entry `run::<S>` for
//! its type `S`, which decodes the argument, calls the function and encodes the result; plus
//! a hash of `S`'s name. Only the argument crosses as data, serialised.
//!
//! # Which targets a process calls
//!
//! Targets reach a child through shared memory (the start message, a pool's task queues),
//! which another process may write. So bytes in a queue never choose where we jump: a process
//! calls a target only if it is in its *registry* of entry points, and looks it up there
//! before the call. The registry (a fixed table in process memory, append-only, lock-free to
//! read) gets a target only from sources that cannot be forged:
//!
//! - [`target_for`] in this process, which takes the addresses of the entry and of the
//!   function itself, from a function pointer of the entry's type;
//! - the registry of the parent, copied by `fork`;
//! - the parent, over a *control socket*: a `socketpair` the parent makes for each child
//!   (spawned or forked). The parent sends its whole registry when it starts the child, and
//!   every target it registers later, before it can hand that target to anyone. Nothing but
//!   the two processes can send on it: a socket, unlike a pipe or a memfd, cannot be opened
//!   through `/proc/<pid>/fd`, and neither side passes it on. A spawned child learns the
//!   socket's number from its environment, which only the parent's `exec` sets. The socket is
//!   a byte stream of 24-byte records; everything a parent can ever send a child
//!   ([`REGISTRY_CAP`] records, 24 KiB) fits in its buffer, so the child reads it only when a
//!   lookup misses, and needs no thread for it.
//!
//! A target that is not registered is first looked up again after reading what waits on the
//! control socket (the parent sent it before the message that carries it), then refused with
//! [`Status::Failed`] ("entry mismatch ..."): a forged offset, or a registered entry paired
//! with another function than the one it was registered with, is an error, never a jump. The
//! registry holds [`REGISTRY_CAP`] targets; a program with more distinct functions gets
//! errors for the rest, not a crash.
//!
//! A table built at compile time (every `run::<S>` placed in a linker section) would need no
//! socket, but a generic function cannot put a static per monomorphisation in a section; a
//! descriptor found by probing memory for a magic number would be likely, not certain.
//!
//! # Start-up
//!
//! The hook runs from `.init_array`, before `main` (and before a test harness's `main`), in
//! every process of an executable that links this crate. It looks for [`ENV`]; in a process
//! that is not a spawned child it costs one `getenv`.
#![allow(unsafe_code)]
//! # Safety
//! - `resolve` turns offsets into function pointers, for registered targets only (see
//!   above): each was made by `target_for::<S>` in a process running this same executable
//!   image, so anchor plus the entry's offset is `run::<S>`, with the type `Entry`, and anchor
//!   plus the function's offset a function of type `S`, which `run::<S>` (an `unsafe fn`
//!   with that contract) turns back into an `S`.
//! - The hook is registered with a link-section attribute. It removes [`ENV`] from the
//!   environment only after checking the process has a single thread.
//! - The control socket's descriptor, once in [`CONTROL`], is never closed (see there).

use std::any::type_name;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::{Plain, Receiver, Sender};
use crate::segment::Handle;
use crate::segment::object::SharedObject;
use crate::sys;

/// Environment variable that makes a process a spawned child:
/// `<parent pid>:<down>|<up>|<control>`, the handles of its start and result queues and the
/// descriptor of its control socket.
pub(crate) const ENV: &str = "MULTIPROC_SPAWN";

/// Queues that carry raw bytes between a parent and its child.
pub(crate) type BytesTx = Sender<u8, Plain>;
pub(crate) type BytesRx = Receiver<u8, Plain>;

/// Set by the start-up hook in every process of an executable that has it.
static HOOK_RAN: AtomicBool = AtomicBool::new(false);

/// The start-up hook, run by the dynamic loader (or libc, for static executables) before
/// `main`.
// SAFETY: `.init_array` holds pointers to `extern "C" fn()` that the C runtime calls once at
// start-up; this is one.
#[used]
#[unsafe(link_section = ".init_array")]
static HOOK: extern "C" fn() = on_load;

extern "C" fn on_load() {
    init();
}

/// Makes this process a spawned child if it was started as one (and then never returns).
///
/// This runs by itself before `main` in every executable that links `multiproc`, including
/// test harnesses, so calling it is never required. Calling it first thing in `main` does no
/// harm, and documents where a spawned child leaves off: like Python's spawn, which re-imports
/// the main module but skips its `if __name__ == "__main__"` block, a spawned child runs the
/// executable's start-up (static constructors) but never `main`.
pub fn init() {
    if HOOK_RAN.swap(true, Ordering::AcqRel) {
        return;
    }
    // First: a tracker never returns from it, and a spawned child adopts its parent's
    // tracker socket before it runs anything.
    crate::segment::tracker::init();
    if let Some(value) = std::env::var_os(ENV) {
        run_spawned(value);
    }
}

/// Whether the start-up hook ran in this process (so a spawned copy will run it too).
pub(crate) fn hook_ran() -> bool {
    HOOK_RAN.load(Ordering::Acquire)
}

/// What a child sends back: the entry's result, a panic, or a failure to run the entry.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The function returned; its result, serialised.
    Returned(Vec<u8>),
    /// The function panicked; the panic message.
    Panicked(String),
    /// The function could not be called (bad argument bytes, entry mismatch) or its result not
    /// encoded or sent.
    Failed(String),
}

impl Outcome {
    /// The exit code a child ends with after this outcome.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Outcome::Returned(_) => 0,
            Outcome::Panicked(_) | Outcome::Failed(_) => 1,
        }
    }
}

/// A function to call in another process of this executable: the offsets (from [`anchor`])
/// of an entry `run::<S>` and of a function pointer of type `S` that the entry calls, and a
/// hash of `S`'s name. Only the three together, as [`target_for`] registered them, are ever
/// called (see the module note).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Target {
    entry: u64,
    func: u64,
    check: u64,
}

/// How a call ended (the result itself was appended to the caller's buffer).
#[derive(Debug)]
pub(crate) enum Status {
    Returned,
    Panicked(String),
    Failed(String),
}

impl Status {
    /// The outcome of a call whose result (if any) is `out`.
    pub(crate) fn into_outcome(self, out: Vec<u8>) -> Outcome {
        match self {
            Status::Returned => Outcome::Returned(out),
            Status::Panicked(m) => Outcome::Panicked(m),
            Status::Failed(m) => Outcome::Failed(m),
        }
    }
}

/// An entry: `run::<S>`, called with the address of the function (of type `S`) to run.
type Entry = unsafe fn(*const (), &[u8], Option<u64>, &mut Vec<u8>, &mut dyn FnMut()) -> Status;

/// The fixed point that targets are measured from.
#[inline(never)]
fn anchor() {
    std::hint::black_box(());
}

fn anchor_addr() -> usize {
    anchor as fn() as usize
}

/// FNV-1a of a type name: the check an entry compares before it runs.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A function pointer type that a child can call: `fn(A) -> R`, `fn(A, B) -> R`,
/// `fn(A, B, C) -> R` (the arguments travel as one value, a tuple for several) and `fn()`.
pub(crate) trait Signature: Copy + 'static {
    /// What travels to the child, serialised.
    type Args: DeserializeOwned;
    /// What the function returns.
    type Output: Serialize;
    /// The function's address.
    fn addr(self) -> usize;
    /// The function of this type at `addr`.
    ///
    /// # Safety
    /// - `addr` is the address of a function of type `Self` in this process (with its
    ///   provenance).
    unsafe fn from_addr(addr: *const ()) -> Self;
    /// Calls the function.
    fn invoke(self, args: Self::Args) -> Self::Output;
}

impl<A: DeserializeOwned + 'static, R: Serialize + 'static> Signature for fn(A) -> R {
    type Args = A;
    type Output = R;
    fn addr(self) -> usize {
        self as usize
    }
    unsafe fn from_addr(addr: *const ()) -> Self {
        // SAFETY: `addr` is a function of type `Self` (our contract); a data pointer and a
        // function pointer have the same size on every platform we build for.
        unsafe { std::mem::transmute::<*const (), Self>(addr) }
    }
    fn invoke(self, arg: A) -> R {
        self(arg)
    }
}

impl<A, B, R> Signature for fn(A, B) -> R
where
    A: DeserializeOwned + 'static,
    B: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    type Args = (A, B);
    type Output = R;
    fn addr(self) -> usize {
        self as usize
    }
    unsafe fn from_addr(addr: *const ()) -> Self {
        // SAFETY: as for `fn(A) -> R`.
        unsafe { std::mem::transmute::<*const (), Self>(addr) }
    }
    fn invoke(self, (a, b): (A, B)) -> R {
        self(a, b)
    }
}

impl<A, B, C, R> Signature for fn(A, B, C) -> R
where
    A: DeserializeOwned + 'static,
    B: DeserializeOwned + 'static,
    C: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    type Args = (A, B, C);
    type Output = R;
    fn addr(self) -> usize {
        self as usize
    }
    unsafe fn from_addr(addr: *const ()) -> Self {
        // SAFETY: as for `fn(A) -> R`.
        unsafe { std::mem::transmute::<*const (), Self>(addr) }
    }
    fn invoke(self, (a, b, c): (A, B, C)) -> R {
        self(a, b, c)
    }
}

impl Signature for fn() {
    type Args = ();
    type Output = ();
    fn addr(self) -> usize {
        self as usize
    }
    unsafe fn from_addr(addr: *const ()) -> Self {
        // SAFETY: as for `fn(A) -> R`.
        unsafe { std::mem::transmute::<*const (), Self>(addr) }
    }
    fn invoke(self, (): ()) {
        self()
    }
}

/// The target that calls `f` with a deserialised argument and serialises its output,
/// registered in this process (and so sent to every child: see the module note).
pub(crate) fn target_for<S: Signature>(f: S) -> Target {
    let entry: Entry = run::<S>;
    let (entry, func) = (entry as usize, f.addr());
    let target = Target {
        entry: entry.wrapping_sub(anchor_addr()) as u64,
        func: func.wrapping_sub(anchor_addr()) as u64,
        check: name_hash(type_name::<S>()),
    };
    if !registered(target) {
        // An entry or function in another loaded object than `anchor` (a Rust dylib) is not
        // at the same offset in a spawned child: the target stays ours (and our forked
        // children's), never sent.
        let portable = sys::same_loaded_object(entry, anchor_addr())
            && sys::same_loaded_object(func, anchor_addr());
        let listeners = Listeners::lock();
        if register(target, portable) && portable {
            listeners.broadcast(&target.to_bytes());
        }
    }
    target
}

impl Target {
    const BYTES: usize = 24;

    fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut b = [0; Self::BYTES];
        b[..8].copy_from_slice(&self.entry.to_le_bytes());
        b[8..16].copy_from_slice(&self.func.to_le_bytes());
        b[16..].copy_from_slice(&self.check.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(Self {
            entry: u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
            func: u64::from_le_bytes(b.get(8..16)?.try_into().ok()?),
            check: u64::from_le_bytes(b.get(16..24)?.try_into().ok()?),
        })
    }
}

/// How many targets a process can register.
pub(crate) const REGISTRY_CAP: usize = 1024;

/// One registered target.
///
/// `ready` is `false` until `entry`, `func` and `check` hold the target, then `true` for good.
/// SYNC(registry-slot): stored with Release after the fields, loaded with Acquire before them.
struct RegistrySlot {
    ready: AtomicBool,
    entry: AtomicU64,
    func: AtomicU64,
    check: AtomicU64,
    /// Whether the entry and the function lie in the same loaded object as `anchor`, so that
    /// their offsets mean the same in a spawned child (where each object may load elsewhere); only such targets
    /// are sent to children. Forked children share our layout and inherit every slot.
    portable: AtomicBool,
}

/// The targets this process may call (see the module note). Slots are claimed with
/// `fetch_add` and filled once; a writer that dies half-way (in another thread, at a `fork`)
/// leaves a slot that is never ready, which readers skip. No lock, so nothing a `fork` copies
/// can block it.
struct Registry {
    claimed: AtomicUsize,
    slots: [RegistrySlot; REGISTRY_CAP],
}

static REGISTRY: Registry = Registry {
    claimed: AtomicUsize::new(0),
    slots: [const {
        RegistrySlot {
            ready: AtomicBool::new(false),
            entry: AtomicU64::new(0),
            func: AtomicU64::new(0),
            check: AtomicU64::new(0),
            portable: AtomicBool::new(false),
        }
    }; REGISTRY_CAP],
};

/// Whether `target` is registered here.
fn registered(target: Target) -> bool {
    let n = REGISTRY.claimed.load(Ordering::Acquire).min(REGISTRY_CAP);
    REGISTRY.slots[..n].iter().any(|slot| {
        // SYNC(registry-slot)
        slot.ready.load(Ordering::Acquire)
            && slot.entry.load(Ordering::Relaxed) == target.entry
            && slot.func.load(Ordering::Relaxed) == target.func
            && slot.check.load(Ordering::Relaxed) == target.check
    })
}

/// Every registered target, as the bytes of one control message.
fn registry_bytes() -> Vec<u8> {
    let n = REGISTRY.claimed.load(Ordering::Acquire).min(REGISTRY_CAP);
    let mut out = Vec::with_capacity(n * Target::BYTES);
    for slot in &REGISTRY.slots[..n] {
        // SYNC(registry-slot)
        if slot.ready.load(Ordering::Acquire) && slot.portable.load(Ordering::Relaxed) {
            let target = Target {
                entry: slot.entry.load(Ordering::Relaxed),
                func: slot.func.load(Ordering::Relaxed),
                check: slot.check.load(Ordering::Relaxed),
            };
            out.extend_from_slice(&target.to_bytes());
        }
    }
    out
}

/// Adds `target` from a trusted source (module note); `true` if it was not there yet and now
/// is, `false` if it was there or the registry is full.
fn register(target: Target, portable: bool) -> bool {
    if registered(target) {
        return false;
    }
    let i = REGISTRY.claimed.fetch_add(1, Ordering::AcqRel);
    let Some(slot) = REGISTRY.slots.get(i) else {
        REGISTRY.claimed.fetch_sub(1, Ordering::AcqRel);
        return false;
    };
    slot.entry.store(target.entry, Ordering::Relaxed);
    slot.func.store(target.func, Ordering::Relaxed);
    slot.check.store(target.check, Ordering::Relaxed);
    slot.portable.store(portable, Ordering::Relaxed);
    // SYNC(registry-slot)
    slot.ready.store(true, Ordering::Release);
    true
}

/// This process's end of the control socket from its parent, or -1 (not a child, or a child
/// of a parent without one).
///
/// A descriptor stored here is owned by this static and never closed: a forked child that gets
/// its own socket leaves its parent's inherited one open and unused (reading it would take
/// messages meant for the parent), so `BorrowedFd`s made from the number stay valid.
static CONTROL: AtomicI32 = AtomicI32::new(-1);

/// Makes `fd` this process's control socket (see [`CONTROL`]: it is never closed).
fn set_control(fd: OwnedFd) {
    CONTROL.store(fd.into_raw_fd(), Ordering::Release);
}

/// Held while taking records off the control socket and registering them; holds the bytes of
/// a record that has only partly arrived.
static LEARNING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The control socket, if this process has one.
fn control() -> Option<BorrowedFd<'static>> {
    let raw = CONTROL.load(Ordering::Acquire);
    // SAFETY: a descriptor stored in `CONTROL` is open and never closed (see there).
    (raw >= 0).then(|| unsafe { BorrowedFd::borrow_raw(raw) })
}

/// Registers every target the parent sent on the control socket so far.
fn learn() {
    let Some(fd) = control() else {
        return;
    };
    let mut partial = LEARNING.lock().unwrap_or_else(|p| p.into_inner());
    let mut buf = [0u8; 64 * Target::BYTES];
    // Ends when nothing more waits, the parent's end is closed, or the socket fails.
    while let Ok(Some(n @ 1..)) = sys::recv_message(fd, &mut buf) {
        partial.extend_from_slice(&buf[..n]);
        let whole = partial.len() / Target::BYTES * Target::BYTES;
        for chunk in partial[..whole].chunks_exact(Target::BYTES) {
            if let Some(target) = Target::from_bytes(chunk) {
                // Our parent sent it only if it is in the same object as `anchor`.
                register(target, true);
            }
        }
        partial.drain(..whole);
    }
}

/// The parent's ends of its children's control sockets.
static LISTENERS: Mutex<Vec<Weak<OwnedFd>>> = Mutex::new(Vec::new());

/// The list of children's control sockets, locked: registering a target in [`target_for`] and
/// adding a child both hold it, so a new child either gets a target in its first message or
/// in a later one.
pub(crate) struct Listeners {
    list: MutexGuard<'static, Vec<Weak<OwnedFd>>>,
    /// Also held across a `fork`, so that the child's copy of [`LEARNING`] is not locked.
    learning: Option<MutexGuard<'static, Vec<u8>>>,
}

impl Listeners {
    pub(crate) fn lock() -> Self {
        Self {
            list: LISTENERS.lock().unwrap_or_else(|p| p.into_inner()),
            learning: None,
        }
    }

    /// As [`lock`](Self::lock), for a `fork`: holds every lock of this module.
    pub(crate) fn lock_for_fork() -> Self {
        let mut this = Self::lock();
        this.learning = Some(LEARNING.lock().unwrap_or_else(|p| p.into_inner()));
        this
    }

    /// Sends `bytes` to every child still listening, forgetting the ones that are gone.
    fn broadcast(&self, bytes: &[u8]) {
        for fd in self.list.iter().filter_map(Weak::upgrade) {
            // A child that is gone (or does not read) misses it, and cannot use the target.
            let _ = sys::send_message(fd.as_fd(), bytes);
        }
    }

    /// Makes a control socket for a new child: sends it the whole registry and every target
    /// registered later (while the returned parent's end lives). Returns (parent's end,
    /// child's end).
    pub(crate) fn add_child(&mut self) -> Result<(Arc<OwnedFd>, OwnedFd), sys::Errno> {
        let (ours, theirs) = sys::socket_pair()?;
        let ours = Arc::new(ours);
        let all = registry_bytes();
        if !all.is_empty() {
            // (An empty message would read as the end of the socket.)
            sys::send_message(ours.as_fd(), &all)?;
        }
        self.list.retain(|w| w.strong_count() > 0);
        self.list.push(Arc::downgrade(&ours));
        Ok((ours, theirs))
    }

    /// In a new forked child: the parent's children are not ours, and `theirs` is our control
    /// socket from now on.
    pub(crate) fn become_forked_child(mut self, theirs: OwnedFd) {
        // Only dropping `Weak`s: the sockets stay open (inherited copies) until we exit.
        self.list.clear();
        if let Some(partial) = self.learning.as_mut() {
            // Bytes of the parent's control stream are not ours.
            partial.clear();
        }
        set_control(theirs);
    }
}

/// Calls `target` with the serialised argument `arg`, appending its serialised result to
/// `out`.
pub(crate) fn call(target: Target, arg: &[u8], out: &mut Vec<u8>) -> Status {
    call_with(target, arg, out, true, &mut || {})
}

/// The entry behind `target` and the address of its function, if the target is registered
/// here (after reading what the parent sent).
fn resolve(target: Target) -> Option<(Entry, *const ())> {
    if !registered(target) {
        learn();
        if !registered(target) {
            return None;
        }
    }
    // Addresses whose provenance `target_for` exposed when it cast the entry and the function
    // to integers (in this process, or in the same image of a parent: the same code).
    let at = |offset: u64| {
        std::ptr::with_exposed_provenance::<()>(anchor_addr().wrapping_add(offset as usize))
    };
    // SAFETY: `target` is registered here, so `target_for::<S>` made it, entry and function
    // together, from the address of `run::<S>` and of a function of type `S`, in a process
    // running this executable image: this one, or a parent we were forked from (same
    // layout), or a parent that sent it because both lie in the same loaded object as
    // `anchor` (same offsets in every process). So the entry address is `run::<S>`, which has
    // type `Entry`.
    let entry = unsafe { std::mem::transmute::<*const (), Entry>(at(target.entry)) };
    Some((entry, at(target.func)))
}

/// As [`call`]. `check == false` skips the entry's own comparison of its type-name hash
/// (what costs), for calls after the first with the same target in this process; the target
/// is looked up in the registry before the call either way, and an unregistered one fails
/// with `Failed("entry mismatch ...")` without any jump. `attached` runs once the argument is
/// decoded (and so the objects in it attached), before the function runs.
pub(crate) fn call_with(
    target: Target,
    arg: &[u8],
    out: &mut Vec<u8>,
    check: bool,
    attached: &mut dyn FnMut(),
) -> Status {
    let Some((entry, func)) = resolve(target) else {
        return Status::Failed(format!(
            "entry mismatch: no entry point registered at offset {:#x} for the function at \
             offset {:#x} with check {:#018x}",
            target.entry, target.func, target.check
        ));
    };
    // SAFETY: `resolve` found `target` registered, so `entry` is `run::<S>` and `func` a
    // function of type `S`, registered together by `target_for::<S>` (see `resolve`).
    unsafe { entry(func, arg, check.then_some(target.check), out, attached) }
}

/// Appends `value`, serialised, to `out`; on failure `out` is left as it was.
pub(crate) fn append<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
    struct Appender<'a>(&'a mut Vec<u8>);
    impl Extend<u8> for Appender<'_> {
        fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
            self.0.extend(iter);
        }
    }
    let len = out.len();
    match postcard::to_extend(value, Appender(out)) {
        Ok(_) => Ok(()),
        Err(e) => {
            out.truncate(len);
            Err(e.to_string())
        }
    }
}

/// The entry behind a target: checks it is the one meant, decodes the argument, calls the
/// function at `func` (catching a panic), encodes the result.
///
/// # Safety
/// - `func` is the address of a function of type `S` in this process, with its provenance.
unsafe fn run<S: Signature>(
    func: *const (),
    arg: &[u8],
    check: Option<u64>,
    out: &mut Vec<u8>,
    attached: &mut dyn FnMut(),
) -> Status {
    if check.is_some_and(|c| c != name_hash(type_name::<S>())) {
        return Status::Failed(format!("entry mismatch for {}", type_name::<S>()));
    }
    let arg: S::Args = match postcard::from_bytes(arg) {
        Ok(a) => a,
        Err(e) => return Status::Failed(format!("argument does not decode: {e}")),
    };
    attached();
    // SAFETY: contract forwarded to our caller.
    let f = unsafe { S::from_addr(func) };
    match catch_unwind(AssertUnwindSafe(|| f.invoke(arg))) {
        Ok(r) => match append(&r, out) {
            Ok(()) => Status::Returned,
            Err(e) => Status::Failed(format!("result does not encode: {e}")),
        },
        Err(payload) => Status::Panicked(panic_message(payload.as_ref())),
    }
}

/// The message of a panic payload (`&str` or `String`, as `panic!` makes them).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// The target every child of this process runs first (see [`set_child_init`]), null if
/// none. What it points to is leaked (a few bytes per call of `set_child_init`), never freed,
/// so a reference to it stays valid; only [`store_child_init`] stores here.
static CHILD_INIT: AtomicPtr<Target> = AtomicPtr::new(std::ptr::null_mut());

fn store_child_init(target: Target) {
    CHILD_INIT.store(Box::into_raw(Box::new(target)), Ordering::Release);
}

/// Names a function that every child started from now on runs first, before its target: the
/// place for start-up code that `main` does in the parent (a logger, configuration, a signal
/// handler), since a spawned child never runs `main`.
///
/// Call it in `main` before starting children. It applies to children of both start methods
/// (a forked child runs it too, although it inherited the parent's state), to a [`Pool`]'s
/// workers (before the pool's own initializer), and on down: a child's own children run it
/// as well. A later call replaces the function for children started after it.
///
/// If `f` panics, the child runs nothing else and its `join` gives
/// [`ProcessError::Failed`](crate::ProcessError::Failed) with the panic message.
///
/// [`Pool`]: crate::Pool
///
/// # Examples
///
/// ```
/// use multiproc::Process;
/// use std::sync::OnceLock;
///
/// static GREETING: OnceLock<String> = OnceLock::new();
///
/// /// What `main` would do for itself; children run it through `set_child_init`.
/// fn set_up() {
///     let _ = GREETING.set("hello".to_owned());
/// }
///
/// fn greet(name: String) -> String {
///     format!("{}, {name}", GREETING.get().map_or("(no greeting)", String::as_str))
/// }
///
/// # fn main() -> Result<(), multiproc::ProcessError> {
/// multiproc::set_child_init(set_up);
/// let child = Process::spawn(greet, "Ada".to_owned())?;
/// assert_eq!(child.join()?, "hello, Ada");
/// # Ok(()) }
/// ```
pub fn set_child_init(f: fn()) {
    store_child_init(target_for(f));
}

/// The child initializer named in this process by [`set_child_init`] (or in the parent it was
/// forked from, or, in a spawned child, in its parent).
pub(crate) fn child_init() -> Option<Target> {
    let p = CHILD_INIT.load(Ordering::Acquire);
    // SAFETY: a non-null pointer here comes from `Box::into_raw` in `store_child_init`, and
    // is never freed; the Acquire load pairs with its Release store, so the target is
    // initialised.
    (!p.is_null()).then(|| unsafe { *p })
}

/// Runs a child initializer: `Err` with a message if it panicked or could not be called.
pub(crate) fn run_child_init(init: Target) -> Result<(), String> {
    match call(init, &[], &mut Vec::new()) {
        Status::Returned => Ok(()),
        Status::Panicked(m) => Err(format!("child initializer panicked: {m}")),
        Status::Failed(m) => Err(format!("child initializer failed: {m}")),
    }
}

/// In a spawned child: makes the parent's child initializer `init` ours (so our own children
/// run it too) and runs it.
fn adopt_child_init(init: Target) -> Result<(), String> {
    store_child_init(init);
    run_child_init(init)
}

/// What a spawned child reads first.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Boot {
    pub(crate) target: Target,
    /// The parent's child initializer (see [`set_child_init`]), a target of type `fn()`.
    pub(crate) init: Option<Target>,
    pub(crate) arg: Vec<u8>,
    /// Descriptors the argument's handles name: inherited, to stay open but not be passed on
    /// to programs the child executes.
    pub(crate) fds: Vec<i32>,
    pub(crate) me: super::ChildSetup,
}

/// The value of [`ENV`] for a child of this process whose control socket is descriptor
/// `control` (kept across the spawn).
pub(crate) fn env_value(down: &Handle, up: &Handle, control: i32) -> String {
    format!("{}:{down}|{up}|{control}", sys::current_pid())
}

/// Runs in a process started with [`ENV`]: reads the start message, runs the target, sends the
/// outcome, exits. Never returns: a process started as a child must not run `main`, even if
/// its parent is already gone (a daemon then dies at once, see `become_child`) or its start
/// failed. (Only spawned children ever see the variable: they remove it before anything
/// else, so nothing they start inherits it.)
fn run_spawned(value: OsString) -> ! {
    // Our children never inherit the variable (`Builder::environment` leaves it out); this
    // keeps it from programs we `exec`. Only while we are sure no other thread exists (the
    // start-up hook runs before `main`, but a constructor of another library may have started
    // one): otherwise it stays, which costs nothing but tidiness.
    if sys::single_threaded() {
        // SAFETY: this process has a single thread (checked just above; only this thread
        // could start another), so nothing reads or writes the environment concurrently.
        unsafe { std::env::remove_var(ENV) };
    }
    let fail = |what: &str| -> ! {
        eprintln!("multiproc: spawned child {}: {what}", sys::current_pid());
        sys::exit_now(1)
    };
    let Some((down, up, control)) = parse_env(&value) else {
        fail("malformed MULTIPROC_SPAWN")
    };
    if control >= 0 {
        // SAFETY: the parent handed us `control` for this (the variable is set by its `exec`,
        // and `spawn_self` kept that number open): an inherited descriptor that nothing else
        // in this process knows of, so nothing else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(control) };
        sys::keep_from_exec(control);
        set_control(fd);
    }
    let (Ok(down_rx), Ok(up_tx)) = (BytesRx::from_handle(&down), BytesTx::from_handle(&up)) else {
        fail("its start queues do not open")
    };
    // The queues hold their own duplicates now.
    for h in [&down, &up] {
        if let crate::segment::Location::Fd(fd) = h.location() {
            if *fd != control && *fd > 2 {
                // SAFETY: the parent named `fd` in our start variable as the descriptor of a
                // start queue, inherited for this: nothing here owns or borrows it
                // (`from_handle` made its own duplicate, and the handles are dropped unused).
                unsafe { sys::close_inherited(*fd) };
            }
        }
    }
    let (down, up) = (down_rx, up_tx);
    let boot = match down
        .get_bytes()
        .map(|b| postcard::from_bytes::<Boot>(b.as_slice()))
    {
        Ok(Ok(boot)) => boot,
        _ => finish(&up, Outcome::Failed("no start message".into())),
    };
    drop(down);
    for &fd in &boot.fds {
        sys::keep_from_exec(fd);
    }
    super::become_child(&boot.me);
    if let Some(init) = boot.init {
        if let Err(m) = adopt_child_init(init) {
            finish(&up, Outcome::Failed(m))
        }
    }
    let mut out = Vec::new();
    // An empty message tells the parent we hold the objects it passed (it keeps its own
    // attached until then, so they never look abandoned in between).
    let mut attached = || {
        let _ = up.put_bytes(&[]);
    };
    let outcome = call_with(boot.target, &boot.arg, &mut out, true, &mut attached);
    finish(&up, outcome.into_outcome(out))
}

fn parse_env(value: &OsString) -> Option<(Handle, Handle, i32)> {
    let text = value.to_str()?;
    // `<parent pid>:` first, for people reading `/proc/<pid>/environ`.
    let (_ppid, rest) = text.split_once(':')?;
    let (down, rest) = rest.split_once('|')?;
    let (up, control) = rest.split_once('|')?;
    Some((down.parse().ok()?, up.parse().ok()?, control.parse().ok()?))
}

/// Sends `outcome` to the parent, flushes stdio and exits with the outcome's code.
pub(crate) fn finish(up: &BytesTx, outcome: Outcome) -> ! {
    let code = outcome.exit_code();
    let bytes = postcard::to_allocvec(&outcome).unwrap_or_default();
    if up.put_bytes(&bytes).is_err() {
        let fallback = Outcome::Failed(format!(
            "result of {} bytes could not be sent to the parent",
            bytes.len()
        ));
        let _ = up.put_bytes(&postcard::to_allocvec(&fallback).unwrap_or_default());
    }
    super::flush_stdio();
    sys::exit_now(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    fn shout(s: String) -> String {
        s.to_uppercase()
    }

    fn never_registered(x: u64) -> u64 {
        x + 1
    }

    fn never_registered_u32(x: u32) -> u32 {
        x + 1
    }

    fn triple_it(x: u32) -> u32 {
        x * 3
    }

    /// The target of `f`, as `Process::spawn` and `Pool::map` make it.
    fn target<A, R>(f: fn(A) -> R) -> Target
    where
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        target_for(f)
    }

    /// The entry for functions like `f`, without making (and so registering) a target.
    fn entry_of<A, R>(_f: fn(A) -> R) -> Entry
    where
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        run::<fn(A) -> R>
    }

    fn offset_of(addr: usize) -> u64 {
        addr.wrapping_sub(anchor_addr()) as u64
    }

    fn status_of(target: Target, arg: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        match call(target, arg, &mut out) {
            Status::Returned => Ok(out),
            Status::Panicked(m) => Err(format!("panicked: {m}")),
            Status::Failed(m) => Err(m),
        }
    }

    /// Regression (issue 8): `call_with` turned the offset of a target (bytes that arrive
    /// through a shared queue) into a function pointer and jumped; only the callee compared
    /// the type hash. A forged offset must give `Failed`, never a jump.
    /// Review of issue 8: an entry in another loaded object than `anchor` (a Rust dylib) has
    /// another offset in a spawned child; such targets are never sent to children.
    #[test]
    #[cfg_attr(miri, ignore = "dladdr is not available under Miri")]
    fn only_entries_in_anchors_object_are_portable() {
        assert!(sys::same_loaded_object(
            anchor_addr(),
            entry_of(double) as usize
        ));
        assert!(!sys::same_loaded_object(
            anchor_addr(),
            libc::malloc as *const () as usize
        ));
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "resolve uses exposed provenance, which -Zmiri-strict-provenance refuses"
    )]
    fn issue_8_a_forged_target_fails_before_any_jump() {
        let real = target(double);
        let arg = postcard::to_allocvec(&21u32).unwrap();
        let out = status_of(real, &arg).expect("a registered target runs");
        assert_eq!(postcard::from_bytes::<u32>(&out).unwrap(), 42);

        let other = target(shout);
        let unregistered = entry_of(never_registered);
        let triple = target(triple_it);
        let forged = [
            // Garbage: far outside the executable.
            Target {
                entry: 0x5a5a_5a5a_5a5a_5a5a,
                ..real
            },
            // Inside the executable, but not a function start.
            Target {
                entry: real.entry.wrapping_add(1),
                ..real
            },
            // A real function that is not an entry: `anchor` itself.
            Target { entry: 0, ..real },
            // A real entry with the check of another.
            Target {
                check: other.check,
                ..real
            },
            // An entry of this image that no target was ever made for.
            Target {
                entry: offset_of(unregistered as usize),
                ..real
            },
            // A registered entry with a function of the same type that was never registered.
            Target {
                func: offset_of(never_registered_u32 as fn(u32) -> u32 as usize),
                ..real
            },
            // A registered entry and check with a function registered with another entry.
            Target {
                func: other.func,
                ..real
            },
            // A registered entry with a function registered for the same entry but shifted.
            Target {
                func: triple.func.wrapping_add(1),
                ..triple
            },
            // Garbage function offset.
            Target {
                func: 0x5a5a_5a5a_5a5a_5a5a,
                ..real
            },
        ];
        for target in forged {
            let r = status_of(target, &arg);
            assert!(
                matches!(&r, Err(m) if m.starts_with("entry mismatch")),
                "{target:?}: {r:?}"
            );
        }
    }
}
