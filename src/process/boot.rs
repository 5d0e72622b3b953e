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
//! - `run` reads a zero-sized `Copy` value out of thin air, which copies no bytes.
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

type Entry = fn(&[u8], u64) -> Outcome;

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

/// The target that calls `F` with a deserialised `A` and serialises its `R`.
pub(crate) fn target_of<F, A, R>() -> Target
where
    F: Fn(A) -> R + Copy + 'static,
    A: DeserializeOwned,
    R: Serialize,
{
    let entry: Entry = run::<F, A, R>;
    Target {
        offset: (entry as usize).wrapping_sub(anchor_addr()) as u64,
        check: name_hash(type_name::<(F, A, R)>()),
    }
}

/// Calls `target` with the serialised argument `arg`.
pub(crate) fn call(target: Target, arg: &[u8]) -> Outcome {
    let addr = anchor_addr().wrapping_add(target.offset as usize);
    // SAFETY: `target` was made by `target_of` in a process running this executable image (see
    // the module note), so `addr` is the address of a `run::<F, A, R>` here, which has type
    // `Entry`. The entry checks `target.check` against its own type before anything else.
    let entry = unsafe { std::mem::transmute::<usize, Entry>(addr) };
    entry(arg, target.check)
}

/// The entry behind a target: checks it is the one meant, decodes the argument, calls `F`
/// (catching a panic), encodes the result.
fn run<F, A, R>(arg: &[u8], check: u64) -> Outcome
where
    F: Fn(A) -> R + Copy + 'static,
    A: DeserializeOwned,
    R: Serialize,
{
    const {
        assert!(
            size_of::<F>() == 0,
            "a function run in another process must be a fn item or a closure that captures \
             nothing: pass data through the argument"
        )
    };
    if check != name_hash(type_name::<(F, A, R)>()) {
        return Outcome::Failed(format!("entry mismatch for {}", type_name::<F>()));
    }
    let arg: A = match postcard::from_bytes(arg) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(format!("argument does not decode: {e}")),
    };
    // SAFETY: `F` is zero-sized (checked above at compile time) and `Copy`, and the process
    // that made the target held an `F`: copying a zero-sized `Copy` value reads no bytes, so
    // conjuring one is such a copy.
    let f: F = unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() };
    match catch_unwind(AssertUnwindSafe(|| f(arg))) {
        Ok(r) => match postcard::to_allocvec(&r) {
            Ok(bytes) => Outcome::Returned(bytes),
            Err(e) => Outcome::Failed(format!("result does not encode: {e}")),
        },
        Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
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
    pub(crate) me: super::ChildSetup,
}

/// The value of [`ENV`] for a child of this process.
pub(crate) fn env_value(down: &Handle, up: &Handle) -> String {
    format!("{}:{down}|{up}", sys::current_pid())
}

/// Runs in a process started with [`ENV`]: reads the start message, runs the target, sends the
/// outcome, exits. Returns (and the process goes on to `main`) only if the variable was not
/// meant for this process: it names another parent, or its queues do not open.
fn run_spawned(value: OsString) {
    let Some((down, up)) = parse_env(&value) else {
        return;
    };
    // SAFETY: the start-up hook runs before `main`, while the process has one thread, so
    // nothing reads the environment concurrently. Children of the target must not inherit it.
    unsafe { std::env::remove_var(ENV) };
    let (Ok(down), Ok(up)) = (BytesRx::from_handle(&down), BytesTx::from_handle(&up)) else {
        return;
    };
    let boot = match down
        .get_bytes()
        .map(|b| postcard::from_bytes::<Boot>(b.as_slice()))
    {
        Ok(Ok(boot)) => boot,
        _ => finish(&up, Outcome::Failed("no start message".into())),
    };
    drop(down);
    super::become_child(&boot.me);
    let outcome = call(boot.target, &boot.arg);
    finish(&up, outcome)
}

fn parse_env(value: &OsString) -> Option<(Handle, Handle)> {
    let text = value.to_str()?;
    let (ppid, rest) = text.split_once(':')?;
    if ppid.parse::<u32>().ok()? != sys::parent_pid() {
        return None; // inherited from a parent that is not the spawner
    }
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
