//! The name tracker: removes the names of *tracked* named segments once no process is left
//! that created or opened them, even when their creator was SIGKILLed, and never while a
//! process still maps them.
//!
//! # Who uses a name: a shared `flock`
//!
//! Every process that creates or opens a named segment takes a shared `flock` on it before it
//! maps it. The lock belongs to the open file description, which the mapping keeps alive after
//! the descriptor is closed, so the kernel itself holds it for exactly as long as the process
//! (or a child forked from it) maps the segment, and drops it when the process dies, however
//! it dies. An exclusive `flock` that succeeds therefore proves that no process of this crate
//! maps the segment. No count lives in shared memory: nothing another process writes decides
//! whether a name goes.
//!
//! # Who notices: one tracker process per program
//!
//! The first tracked create or open in a process starts a *tracker*: this executable again
//! (started like a spawned child, caught by the start-up hook before `main`), which forks once
//! so that it is nobody's child, leaves the session, and then only reads records from a
//! `SOCK_SEQPACKET` socket: "this process uses name N (device D, inode I)", and "forget N"
//! when N was unlinked on purpose. Forked children share their parent's socket; children
//! started with [`Process::spawn`](crate::Process::spawn) inherit it. When the last process
//! holding the other end is gone (exited, crashed, SIGKILLed), the socket reports its end and
//! the tracker, for each name it was told about:
//!
//! 1. opens the name and checks it is still the same file (device and inode), still carries
//!    the tracked mark, and still has a name;
//! 2. takes an exclusive `flock` without waiting: if another process (of any program using
//!    this crate) maps the segment, that fails and the name stays; that process's own
//!    tracker (or its creator) removes it later. (A name still locked is looked at again
//!    for about a second: a client that was just killed lets go of its lock a moment after
//!    its socket, see [`clean_up`]);
//! 3. reads `/proc/*/maps` for processes that map the file without taking the lock (a Python
//!    process attached through `multiprocessing.shared_memory`): if one does, the name stays;
//! 4. unlinks the name while it still holds the exclusive lock, then exits.
//!
//! A process that opens a name takes its shared lock and then checks that the file still has
//! a name: so an opener racing with step 4 either keeps the name alive or fails with
//! `NotFound`, never maps a file whose name is then pulled from under it.
//!
//! # Which names are tracked
//!
//! A name is tracked if its file's mode carries the sticky bit (`01600`), which the creator
//! sets before anyone can open a complete segment. Objects and [`SharedMemory`] blocks created
//! by this crate are tracked by default. A name the user wants to outlive every process
//! ([`Builder::persistent`](crate::Builder::persistent),
//! [`SharedMemory::persist`](crate::SharedMemory::persist)) has plain mode 0600, as has any
//! block Python created: the tracker never removes those, and openers do not even tell it.
//!
//! # Why this design
//!
//! - A tracker per program alone (as Python has) cannot know that a process of *another*
//!   program opened a name; the `flock` lets the kernel count every user, across programs,
//!   forked children included (they share the open file description), and release a dead
//!   one's share whatever killed it. PID reuse cannot fool it: there are no PIDs in it.
//! - A table of attachers (pid and start time) in the segment header would be foreign input
//!   to validate, bounded in size, racy to update from a dying process, and impossible for a
//!   [`SharedMemory`](crate::SharedMemory) block, whose bytes are all the user's (Python reads
//!   the same block); it would still need a watcher to notice that everyone died.
//! - The watcher is a process because the last user may die by SIGKILL with nobody of its
//!   own left; one per program (not per process) because forked and spawned children share
//!   it, and not one per user because a shared daemon needs a rendezvous point that another
//!   user could squat, and outlives every program.
//!
//! # Failure and cost
//!
//! - Registration is best-effort and never blocks: if the tracker cannot start (the start-up
//!   hook did not run, no `/proc/self/exe`) or its socket is full, the segment works as
//!   before and is only removed by its creator's drop or [`SharedObject::unlink`](crate::SharedObject::unlink).
//!   If the tracker dies, the next registration starts a new one; names registered with the
//!   dead one are not cleaned after a crash.
//! - Per program: one extra process (this executable, idle in `recv`; about 1.5 MiB
//!   resident, 0.5 MiB of it its own), started on the first tracked create or open by one
//!   `posix_spawn`. The started copy forks the tracker and exits; it is reaped by a later
//!   create or open (until then it is a zombie child), not waited for.
//! - Per create: `fchmod`, `flock` and one `send`; per open: `fstat`, `flock` and one `send`
//!   (about 10 µs more per create and 5 to 10 µs more per open than untracked, measured on a
//!   busy two-core machine where the send also wakes the tracker).
//! - The `/proc` scan runs only in the tracker, when its program ends with names left.
//! - The tracker is this executable started again, so it runs the executable's static
//!   constructors (not `main`), like a spawned child.
//!
//! # What a hostile process can do
//!
//! Only processes of the same user can open a 0600 segment, and they can `shm_unlink` any of
//! our names directly; the tracker gives them nothing more. A process holding the tracker's
//! socket (a child of ours) can make it consider any name, which it removes only under the
//! rules above. A process can keep a name alive for good by holding a shared lock, or hide it
//! from the tracker by clearing the mark: denial of service, not removal of a name in use.
//! Processes of other users, privileged or in another PID namespace, are invisible to the
//! `/proc` scan, and a process that holds the descriptor open but has not mapped it yet
//! without taking the lock (a foreign program) is not seen either.
#![allow(unsafe_code)]
//! # Safety
//! - [`CONNECTION`] holds a descriptor that, once stored, is never closed (a dead tracker's
//!   socket is left open, not closed under a concurrent sender), so borrowing it is sound.
//! - The tracker and inherited-socket descriptors adopted from the environment were kept open
//!   for this by the parent's `spawn_self`, and are checked to be record sockets first.
//! - The start-up hook is registered with a link-section attribute.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::{self, Errno, Mapping, track};

/// Set in the tracker's environment: the descriptor of its end of the socket.
pub(crate) const SERVE_ENV: &str = "MULTIPROC_TRACKER_SERVE";
/// Set in a spawned child's environment: the descriptor of its parent's tracker socket.
pub(crate) const INHERIT_ENV: &str = "MULTIPROC_TRACKER";

/// Our end of the tracker's socket, or -1 (not started, or gone).
static CONNECTION: AtomicI32 = AtomicI32::new(-1);
/// Set when starting a tracker failed: do not try again on every create.
static UNAVAILABLE: AtomicBool = AtomicBool::new(false);
/// Serialises starting a tracker.
static STARTING: Mutex<()> = Mutex::new(());
/// Set by the start-up hook.
static HOOK_RAN: AtomicBool = AtomicBool::new(false);
/// The process started to become the tracker, until it is reaped (0: none).
static INTERMEDIATE: AtomicU32 = AtomicU32::new(0);

const REGISTER: u8 = b'R';
const FORGET: u8 = b'F';
/// Largest record: kind, device, inode, and a name of at most 251 bytes.
const MAX_RECORD: usize = 1 + 16 + 256;

// SAFETY: `.init_array` holds pointers to `extern "C" fn()` that the C runtime calls once at
// start-up; this is one.
#[used]
#[unsafe(link_section = ".init_array")]
static HOOK: extern "C" fn() = on_load;

extern "C" fn on_load() {
    init();
}

/// The start-up part: runs the tracker in a process started as one (never returns), and
/// adopts the socket a spawned child inherited. Idempotent; called by the hook and, first
/// thing, by the spawned-child start-up.
pub(crate) fn init() {
    if HOOK_RAN.swap(true, Ordering::AcqRel) {
        return;
    }
    if let Some(value) = std::env::var_os(SERVE_ENV) {
        serve(value);
    }
    if let Some(value) = std::env::var_os(INHERIT_ENV) {
        if sys::single_threaded() {
            // SAFETY: this process has a single thread (checked just above), so nothing reads
            // or writes the environment concurrently.
            unsafe { std::env::remove_var(INHERIT_ENV) };
        }
        if let Some(fd) = value.to_str().and_then(|v| v.parse::<i32>().ok()) {
            if fd > 2 && track::is_record_socket(fd) {
                sys::keep_from_exec(fd);
                CONNECTION.store(fd, Ordering::Release);
            }
        }
    }
}

/// The tracker socket descriptor a spawned child should inherit, if this process has one.
#[cfg_attr(not(feature = "serde"), allow(dead_code))]
pub(crate) fn inheritable() -> Option<i32> {
    let fd = CONNECTION.load(Ordering::Acquire);
    (fd >= 0).then_some(fd)
}

/// Tells the tracker that this process uses the tracked segment `name` with `identity`,
/// starting the tracker if needed. Best-effort (see the module docs).
pub(crate) fn register(name: &str, identity: (u64, u64)) {
    send(REGISTER, name, identity);
}

/// Tells the tracker that `name` was unlinked on purpose and need not be looked at.
pub(crate) fn forget(name: &str, identity: (u64, u64)) {
    if CONNECTION.load(Ordering::Acquire) >= 0 {
        send(FORGET, name, identity);
    }
}

fn encode(kind: u8, name: &str, identity: (u64, u64)) -> Vec<u8> {
    let mut rec = Vec::with_capacity(17 + name.len());
    rec.push(kind);
    rec.extend_from_slice(&identity.0.to_le_bytes());
    rec.extend_from_slice(&identity.1.to_le_bytes());
    rec.extend_from_slice(name.as_bytes());
    rec
}

/// A record from the socket: kind, name, identity. `None` for anything malformed.
fn decode(rec: &[u8]) -> Option<(u8, String, (u64, u64))> {
    let (&kind, rest) = rec.split_first()?;
    if rest.len() < 17 || !matches!(kind, REGISTER | FORGET) {
        return None;
    }
    let dev = u64::from_le_bytes(rest[..8].try_into().ok()?);
    let ino = u64::from_le_bytes(rest[8..16].try_into().ok()?);
    let name = std::str::from_utf8(&rest[16..]).ok()?;
    // Only names this crate could have made or opened.
    if super::normalize_name(name).ok()? != name {
        return None;
    }
    Some((kind, name.to_owned(), (dev, ino)))
}

/// Reaps the process started to become the tracker once it has exited; if it failed, the
/// tracker never started, and this process goes without one from now on.
fn reap_intermediate() {
    let pid = INTERMEDIATE.load(Ordering::Acquire);
    if pid == 0 {
        return;
    }
    match sys::try_reap(pid) {
        Ok(None) => {}
        Ok(Some(code)) => {
            if INTERMEDIATE
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                && code != 0
            {
                UNAVAILABLE.store(true, Ordering::Relaxed);
            }
        }
        // Reaped by someone else (another thread here, or a `wait` for any child), or not
        // our child at all (in a child forked since).
        Err(_) => {
            let _ = INTERMEDIATE.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

fn send(kind: u8, name: &str, identity: (u64, u64)) {
    if !Mapping::CAN_SHARE {
        return;
    }
    reap_intermediate();
    let rec = encode(kind, name, identity);
    for _ in 0..2 {
        let Some(fd) = connection() else { return };
        // SAFETY: descriptors stored in CONNECTION are never closed (module note).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        match track::send_record(borrowed, &rec) {
            Ok(()) => return,
            // The tracker is gone: start another (for registrations), once.
            Err(e)
                if kind == REGISTER && (e.raw() == libc::EPIPE || e.raw() == libc::ECONNRESET) =>
            {
                let _ = CONNECTION.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Acquire);
            }
            // Full (the tracker is stopped or slow), or anything else: best-effort.
            Err(_) => return,
        }
    }
}

/// Our tracker socket, starting the tracker if there is none yet.
fn connection() -> Option<i32> {
    let fd = CONNECTION.load(Ordering::Acquire);
    if fd >= 0 {
        return Some(fd);
    }
    if UNAVAILABLE.load(Ordering::Relaxed) {
        return None;
    }
    // Only `try_lock`: in a child forked while another thread of its parent was starting a
    // tracker, the lock stays held for good; then this process goes without tracking rather
    // than hang.
    let started = std::time::Instant::now();
    let _starting = loop {
        match STARTING.try_lock() {
            Ok(guard) => break guard,
            Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                let fd = CONNECTION.load(Ordering::Acquire);
                if fd >= 0 {
                    return Some(fd);
                }
                if started.elapsed() > Duration::from_secs(2) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    let fd = CONNECTION.load(Ordering::Acquire);
    if fd >= 0 {
        return Some(fd);
    }
    match start() {
        Ok(ours) => {
            let fd = ours.as_raw_fd();
            // Never closed from now on (module note).
            std::mem::forget(ours);
            CONNECTION.store(fd, Ordering::Release);
            Some(fd)
        }
        Err(_) => {
            UNAVAILABLE.store(true, Ordering::Relaxed);
            None
        }
    }
}

/// Starts a tracker; returns our end of its socket.
fn start() -> Result<OwnedFd, Errno> {
    // Without the hook in the executable itself (not in a library some other program
    // loaded), a copy of `/proc/self/exe` would run its `main`.
    let entry = sys::executable_entry();
    if !HOOK_RAN.load(Ordering::Acquire)
        || entry == 0
        || !sys::same_loaded_object(on_load as *const () as usize, entry)
    {
        return Err(Errno::NOSYS);
    }
    let (ours, theirs) = track::record_socket_pair()?;
    let theirs_raw = theirs.as_raw_fd();
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("multiproc-tracker"));
    let argv = [
        sys::cstring(std::os::unix::ffi::OsStrExt::as_bytes(argv0.as_os_str()))?,
        sys::cstring("--multiproc-tracker")?,
    ];
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        // Neither a spawned child's start variable nor ours: the tracker is neither.
        if k == SERVE_ENV || k == INHERIT_ENV || k == "MULTIPROC_SPAWN" {
            continue;
        }
        let mut kv = std::os::unix::ffi::OsStrExt::as_bytes(k.as_os_str()).to_vec();
        kv.push(b'=');
        kv.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
        envp.push(sys::cstring(kv)?);
    }
    envp.push(sys::cstring(format!("{SERVE_ENV}={theirs_raw}"))?);
    let pid = sys::spawn_self(&argv, &envp, &[theirs_raw])?;
    drop(theirs);
    // It forks the tracker and exits at once with 0; it is reaped by a later send rather than
    // waited for here.
    INTERMEDIATE.store(pid, Ordering::Release);
    Ok(ours)
}

/// The tracker: collects names until every client is gone, then cleans up and exits.
fn serve(value: OsString) -> ! {
    let Some(fd) = value.to_str().and_then(|v| v.parse::<i32>().ok()) else {
        sys::exit_now(2)
    };
    if fd <= 2 || !track::is_record_socket(fd) {
        sys::exit_now(2);
    }
    // Fork once, so that the tracker is nobody's child: the starting process reaps this
    // one at once and never sees a tracker among its children.
    // SAFETY: this runs from the start-up hook, before `main`, in a process that exists only
    // to become the tracker: the parent side exits at once with `exit_now`, and the child runs
    // the tracker loop below and ends with `exit_now`, never returning into `main`.
    match unsafe { sys::fork() } {
        Ok(sys::Forked::Child) => {}
        Ok(sys::Forked::Parent(_)) => sys::exit_now(0),
        Err(_) => sys::exit_now(1),
    }
    track::detach();
    // SAFETY: the starting process kept `fd` open for us (module note) and nothing else in
    // this process knows of it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut names: HashSet<(String, (u64, u64))> = HashSet::new();
    let mut prune_at = 1024;
    let mut buf = [0u8; MAX_RECORD];
    loop {
        match track::recv_record(&sock, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => match decode(&buf[..n]) {
                Some((REGISTER, name, id)) => {
                    names.insert((name, id));
                    if names.len() >= prune_at {
                        // Forget names that went meanwhile (a long-lived program that opens
                        // many names another process creates and removes).
                        names.retain(|(name, id)| sys::shm_identity(name) == Ok(*id));
                        prune_at = (names.len() * 2).max(1024);
                    }
                }
                Some((_, name, id)) => {
                    names.remove(&(name, id));
                }
                None => {}
            },
        }
    }
    drop(sock);
    clean_up(names);
    sys::exit_now(0)
}

/// Removes each name that no process maps any more (steps 1 to 4 of the module docs).
///
/// A client that dies closes its socket before the kernel lets go of the files it mapped
/// (both are released at the very end of its exit, the socket first), so the end of the
/// socket can arrive while a dead client still holds its shared lock for a moment. Names
/// still locked are therefore looked at again a few times, for about a second in all.
pub(crate) fn clean_up(names: HashSet<(String, (u64, u64))>) {
    let mut pending: Vec<_> = names.into_iter().collect();
    for delay_ms in [0, 5, 10, 20, 40, 80, 160, 320, 640] {
        std::thread::sleep(Duration::from_millis(delay_ms));
        let mut candidates = Vec::new();
        pending.retain(|(name, id)| {
            let Ok(fd) = sys::shm_open_existing(name) else {
                return false;
            };
            let Ok(state) = track::file_state(&fd) else {
                return false;
            };
            if state.identity != *id || !state.tracked || !state.linked {
                return false;
            }
            match track::lock_exclusive(&fd) {
                Ok(true) => {
                    candidates.push((name.clone(), *id, fd));
                    false
                }
                Ok(false) => true,
                Err(_) => false,
            }
        });
        if !candidates.is_empty() {
            let ids = candidates.iter().map(|(_, id, _)| *id).collect();
            let mapped = track::mapped_files(&ids);
            for (name, id, fd) in candidates {
                if !mapped.contains(&id) && sys::shm_identity(&name) == Ok(id) {
                    let _ = sys::shm_unlink(&name);
                }
                drop(fd);
            }
        }
        if pending.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let rec = encode(REGISTER, "/mp-abc", (3, 77));
        assert_eq!(
            decode(&rec),
            Some((REGISTER, "/mp-abc".to_owned(), (3, 77)))
        );
        let rec = encode(FORGET, "/x", (0, 1));
        assert_eq!(decode(&rec), Some((FORGET, "/x".to_owned(), (0, 1))));
        assert_eq!(decode(&encode(b'Z', "/x", (0, 1))), None);
        assert_eq!(decode(&encode(REGISTER, "x", (0, 1))), None);
        assert_eq!(decode(&encode(REGISTER, "/a/b", (0, 1))), None);
        assert_eq!(decode(&encode(REGISTER, "/", (0, 1))), None);
        assert_eq!(decode(&[REGISTER, 1, 2]), None);
        assert_eq!(decode(&[]), None);
    }
}
