//! Calling a function in another process of the same executable, and the start-up hook that
//! turns a freshly exec'd copy of the executable into a spawned child.
//!
//! A spawned child is this executable started again (`/proc/self/exe`), so every function sits
//! at the same offset from any other as in the parent. A [`Target`] is such an offset (from
//! [`anchor`]) to a monomorphised entry `run::<F, A, R>`, plus a hash of its type name that the
//! entry checks before doing anything. `F` must be zero-sized and `Copy` (a `fn` item or a
//! closure that captures nothing), so the entry can make its own `F` without any bytes from the
//! parent: only the argument crosses, serialised.
//!
//! The hook runs from `.init_array`, before `main` (and before a test harness's `main`), in
//! every process of an executable that links this crate. It looks for [`ENV`]; in a process
//! that is not a spawned child it costs one `getenv`.
#![allow(unsafe_code)]
//! # Safety
//! - `call` turns an offset into a function pointer. Offsets are made by `target_of` in a
//!   process running this same executable image (the parent before `fork`, or the parent
//!   that exec'd `/proc/self/exe`), so anchor plus offset is the entry it named.
//! - `conjure` reads a zero-sized `Copy` value out of thin air, which copies no bytes.
//! - The hook is registered with a link-section attribute, and clears [`ENV`] while the process
//!   has only one thread.

use std::any::type_name;
use std::ffi::OsString;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::{Plain, Receiver, Sender};
use crate::segment::Handle;
use crate::sync::object::SharedObject;
use crate::sys;

/// Environment variable that makes a process a spawned child: `<parent pid>:<down>:<up>`, the
/// handles of its start and result queues.
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

/// A function to call in another process of this executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Target {
    offset: u64,
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

type Entry = fn(&[u8], Option<u64>, &mut Vec<u8>, &mut dyn FnMut()) -> Status;

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

/// A function a child can call: a zero-sized `Copy` value (a `fn` item or a closure that
/// captures nothing) that takes one argument. Implemented for every `Fn(A) -> R` of that kind,
/// and for [`Spread`], which spreads a tuple over a function of several arguments.
pub(crate) trait Callable<A>: Copy + 'static {
    type Output;
    fn invoke(self, arg: A) -> Self::Output;
}

impl<F, A, R> Callable<A> for F
where
    F: Fn(A) -> R + Copy + 'static,
{
    type Output = R;
    fn invoke(self, arg: A) -> R {
        self(arg)
    }
}

/// Calls `F` with the fields of a tuple as its arguments (for `starmap`).
pub(crate) struct Spread<F>(std::marker::PhantomData<F>);

impl<F> Clone for Spread<F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for Spread<F> {}

impl<F> Spread<F> {
    pub(crate) fn new(_f: F) -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<F, A, B, R> Callable<(A, B)> for Spread<F>
where
    F: Fn(A, B) -> R + Copy + 'static,
{
    type Output = R;
    fn invoke(self, (a, b): (A, B)) -> R {
        conjure::<F>()(a, b)
    }
}

impl<F, A, B, C, R> Callable<(A, B, C)> for Spread<F>
where
    F: Fn(A, B, C) -> R + Copy + 'static,
{
    type Output = R;
    fn invoke(self, (a, b, c): (A, B, C)) -> R {
        conjure::<F>()(a, b, c)
    }
}

/// A value of the zero-sized `Copy` type `T`, whose values the caller has held.
fn conjure<T: Copy + 'static>() -> T {
    const {
        assert!(
            size_of::<T>() == 0,
            "a function run in another process must be a fn item or a closure that captures \
             nothing: pass data through the argument"
        )
    };
    // SAFETY: `T` is zero-sized (checked above at compile time) and `Copy`, and whoever made a
    // target for it held a `T`: copying a zero-sized `Copy` value reads no bytes, so conjuring
    // one is such a copy.
    unsafe { std::ptr::NonNull::<T>::dangling().as_ptr().read() }
}

/// The target that calls `F` with a deserialised `A` and serialises its output.
pub(crate) fn target_of<F, A>() -> Target
where
    F: Callable<A>,
    A: DeserializeOwned,
    F::Output: Serialize,
{
    let entry: Entry = run::<F, A>;
    Target {
        offset: (entry as usize).wrapping_sub(anchor_addr()) as u64,
        check: name_hash(type_name::<(F, A)>()),
    }
}

/// Calls `target` with the serialised argument `arg`, appending its serialised result to
/// `out`.
pub(crate) fn call(target: Target, arg: &[u8], out: &mut Vec<u8>) -> Status {
    call_with(target, arg, out, true, &mut || {})
}

/// As [`call`]; with `check == false` the entry skips comparing its type-name hash, for
/// calls after the first with the same target in this process (the hash is what costs).
/// `attached` runs once the argument is decoded (and so the objects in it attached), before
/// the function runs.
pub(crate) fn call_with(
    target: Target,
    arg: &[u8],
    out: &mut Vec<u8>,
    check: bool,
    attached: &mut dyn FnMut(),
) -> Status {
    let addr = anchor_addr().wrapping_add(target.offset as usize);
    // SAFETY: `target` was made by `target_of` in a process running this executable image (see
    // the module note), so `addr` is the address of a `run::<F, A>` here, which has type
    // `Entry`. The entry checks `target.check` against its own type before anything else.
    let entry = unsafe { std::mem::transmute::<usize, Entry>(addr) };
    entry(arg, check.then_some(target.check), out, attached)
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

/// The entry behind a target: checks it is the one meant, decodes the argument, calls `F`
/// (catching a panic), encodes the result.
fn run<F, A>(
    arg: &[u8],
    check: Option<u64>,
    out: &mut Vec<u8>,
    attached: &mut dyn FnMut(),
) -> Status
where
    F: Callable<A>,
    A: DeserializeOwned,
    F::Output: Serialize,
{
    if check.is_some_and(|c| c != name_hash(type_name::<(F, A)>())) {
        return Status::Failed(format!("entry mismatch for {}", type_name::<F>()));
    }
    let arg: A = match postcard::from_bytes(arg) {
        Ok(a) => a,
        Err(e) => return Status::Failed(format!("argument does not decode: {e}")),
    };
    attached();
    let f = conjure::<F>();
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

/// What a spawned child reads first.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Boot {
    pub(crate) target: Target,
    pub(crate) arg: Vec<u8>,
    /// Descriptors the argument's handles name: inherited, to stay open but not be passed on
    /// to programs the child executes.
    pub(crate) fds: Vec<i32>,
    pub(crate) me: super::ChildSetup,
}

/// The value of [`ENV`] for a child of this process.
pub(crate) fn env_value(down: &Handle, up: &Handle) -> String {
    format!("{}:{down}|{up}", sys::current_pid())
}

/// Runs in a process started with [`ENV`]: reads the start message, runs the target, sends the
/// outcome, exits. Never returns: a process started as a child must not run `main`, even if
/// its parent is already gone (a daemon then dies at once, see `become_child`) or its start
/// failed. (Only spawned children ever see the variable: they remove it before anything
/// else, so nothing they start inherits it.)
fn run_spawned(value: OsString) -> ! {
    // SAFETY: the start-up hook runs before `main`, while the process has one thread, so
    // nothing reads the environment concurrently.
    unsafe { std::env::remove_var(ENV) };
    let fail = |what: &str| -> ! {
        eprintln!("multiproc: spawned child {}: {what}", sys::current_pid());
        sys::exit_now(1)
    };
    let Some((down, up)) = parse_env(&value) else {
        fail("malformed MULTIPROC_SPAWN")
    };
    let (Ok(down_rx), Ok(up_tx)) = (BytesRx::from_handle(&down), BytesTx::from_handle(&up)) else {
        fail("its start queues do not open")
    };
    // The queues hold their own duplicates now.
    for h in [&down, &up] {
        if let crate::segment::Location::Fd(fd) = h.location() {
            sys::close_inherited(*fd);
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
    let mut out = Vec::new();
    // An empty message tells the parent we hold the objects it passed (it keeps its own
    // attached until then, so they never look abandoned in between).
    let mut attached = || {
        let _ = up.put_bytes(&[]);
    };
    let outcome = call_with(boot.target, &boot.arg, &mut out, true, &mut attached);
    finish(&up, outcome.into_outcome(out))
}

fn parse_env(value: &OsString) -> Option<(Handle, Handle)> {
    let text = value.to_str()?;
    // `<parent pid>:` first, for people reading `/proc/<pid>/environ`.
    let (_ppid, rest) = text.split_once(':')?;
    let (down, up) = rest.split_once('|')?;
    Some((down.parse().ok()?, up.parse().ok()?))
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
