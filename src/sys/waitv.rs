//! Waiting on many futex words at once (`futex_waitv`, Linux 5.16+), and the exit watcher: one
//! thread per process that turns the exit of any watched child (its pidfd becoming readable)
//! into a wake of one private futex word, so that a `futex_waitv` can wait for processes too.
//!
//! # References
//! - [futex2](https://docs.kernel.org/userspace-api/futex2.html)
//! - [epoll(7)](https://man7.org/linux/man-pages/man7/epoll.7.html)
//! - [pidfd_open(2)](https://man7.org/linux/man-pages/man2/pidfd_open.2.html)
#![allow(unsafe_code)]
//! # Safety
//! Two blocks borrow the exit watcher's epoll descriptor by number: the process that created
//! it never closes it (it is leaked on purpose, for the watcher thread), and a forked child,
//! which inherits the number, never uses it (see [`watcher`]). One block takes back ownership
//! of a descriptor this module just released with `into_raw_fd`, to close it.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::thread::futex;

use super::Errno;

/// Most words one `futex_waitv` call takes (`FUTEX_WAITV_MAX`).
pub(crate) const WAITV_MAX: usize = 128;

/// One word of a [`futex_waitv`]: sleep while `*word == expected`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitvEntry<'a> {
    pub(crate) word: &'a AtomicU32,
    pub(crate) expected: u32,
    /// A word in this process's private memory (the exit watcher's), waited on with
    /// `FUTEX2_PRIVATE`; every other word lives in shared memory and is waited on without it,
    /// so that a wake through another process's mapping reaches us.
    pub(crate) private: bool,
}

/// Whether this kernel has `futex_waitv`: asked once per process by calling it with no words
/// (EINVAL where it exists, ENOSYS where it does not or a seccomp filter forbids it).
pub(crate) fn waitv_supported() -> bool {
    if cfg!(miri) {
        // Miri emulates `futex` but not `futex_waitv`: the bounded fallback runs there.
        return false;
    }
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        !matches!(
            futex::waitv(
                &[],
                futex::WaitvFlags::empty(),
                None,
                futex::ClockId::Monotonic
            ),
            Err(e) if e == rustix::io::Errno::NOSYS
        )
    })
}

/// Sleeps until one of `entries` is woken, one no longer holds its expected value, or
/// `deadline` passes (forever when `None`). Returns the index of the woken word, `None` for
/// every other return (a word that differed on entry, the deadline, a signal): the caller looks
/// at its state again in every case.
///
/// At most [`WAITV_MAX`] entries, and [`waitv_supported`] must hold.
pub(crate) fn futex_waitv(
    entries: &[WaitvEntry<'_>],
    deadline: Option<Instant>,
) -> Result<Option<usize>, Errno> {
    debug_assert!(!entries.is_empty() && entries.len() <= WAITV_MAX);
    let waits: Vec<futex::Wait> = entries
        .iter()
        .map(|e| {
            let mut w = futex::Wait::new();
            w.val = u64::from(e.expected);
            w.uaddr = futex::WaitPtr::new(e.word.as_ptr().cast());
            w.flags = if e.private {
                futex::WaitFlags::SIZE_U32 | futex::WaitFlags::PRIVATE
            } else {
                futex::WaitFlags::SIZE_U32
            };
            w
        })
        .collect();
    // The timeout is absolute, on the monotonic clock (which `Instant` reads as well).
    let ts = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let nanos = i128::from(now.tv_sec) * 1_000_000_000
            + i128::from(now.tv_nsec)
            + i128::try_from(left.as_nanos()).unwrap_or(i128::MAX / 2);
        futex::Timespec {
            tv_sec: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
            tv_nsec: (nanos % 1_000_000_000) as i64,
        }
    });
    match futex::waitv(
        &waits,
        futex::WaitvFlags::empty(),
        ts.as_ref(),
        futex::ClockId::Monotonic,
    ) {
        Ok(i) => Ok(Some(i)),
        Err(e)
            if e == rustix::io::Errno::AGAIN
                || e == rustix::io::Errno::TIMEDOUT
                || e == rustix::io::Errno::INTR =>
        {
            Ok(None)
        }
        Err(e) => Err(Errno::from_rustix(e)),
    }
}

/// The bounded sleep of a wait that cannot use `futex_waitv` (an old kernel, or more words
/// than one call takes): sleeps on the first shared word for [`FALLBACK_SLICE`] at most, so
/// that the caller looks at every object again at least that often.
pub(crate) fn fallback_sleep(entries: &[WaitvEntry<'_>], deadline: Option<Instant>) {
    let slice = match deadline {
        Some(d) => d
            .saturating_duration_since(Instant::now())
            .min(FALLBACK_SLICE),
        None => FALLBACK_SLICE,
    };
    match entries.iter().find(|e| !e.private) {
        Some(e) => {
            let _ = super::futex_wait(e.word, e.expected, Some(slice));
        }
        None => std::thread::sleep(slice),
    }
}

/// The longest sleep of [`fallback_sleep`].
pub(crate) const FALLBACK_SLICE: Duration = Duration::from_millis(1);

/// Advanced (wrapping) by the exit watcher whenever a watched pidfd becomes readable; a private
/// futex word, woken then.
static EXITS: AtomicU32 = AtomicU32::new(0);

/// The exit watcher of this process: `owner pid << 32 | epoll fd`; 0 before one was started.
/// An `owner` that is not this process is a watcher inherited across `fork`, whose thread did
/// not come along: the child starts its own. The fd part [`NO_WATCHER`] means starting one
/// failed in `owner`.
static WATCHER: AtomicU64 = AtomicU64::new(0);
const NO_WATCHER: u64 = u32::MAX as u64;

/// The exit watcher's word: read it before looking at the processes, then sleep on it.
pub(crate) fn exit_word() -> &'static AtomicU32 {
    &EXITS
}

/// This process's exit watcher (its `WATCHER` value), started on first use; `None` if no
/// thread or epoll instance could be had.
fn watcher() -> Option<u64> {
    let me = u64::from(super::current_pid());
    let now = WATCHER.load(Ordering::Acquire);
    if now >> 32 == me {
        return (now & NO_WATCHER != NO_WATCHER).then_some(now);
    }
    // None yet, or the parent's (inherited across fork, without its thread; its descriptor
    // stays open here, unused, as closing a number we did not open could close someone else's).
    let Ok(ep) = epoll::create(epoll::CreateFlags::CLOEXEC) else {
        let failed = me << 32 | NO_WATCHER;
        let _ = WATCHER.compare_exchange(now, failed, Ordering::AcqRel, Ordering::Acquire);
        return None;
    };
    let raw = ep.into_raw_fd();
    let ours = me << 32 | u64::from(raw as u32);
    match WATCHER.compare_exchange(now, ours, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {}
        Err(other) => {
            // Another thread started one first.
            // SAFETY: `raw` came from `into_raw_fd` just above and nobody else knows it.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
            return (other >> 32 == me && other & NO_WATCHER != NO_WATCHER).then_some(other);
        }
    }
    let spawned = std::thread::Builder::new()
        .name("multiproc-exits".into())
        .stack_size(64 << 10)
        .spawn(move || watch_loop(raw));
    if spawned.is_err() {
        WATCHER.store(me << 32 | NO_WATCHER, Ordering::Release);
        return None;
    }
    Some(ours)
}

/// The exit watcher thread: every readable pidfd advances [`EXITS`] and wakes its sleepers.
/// Each pidfd is registered one-shot, so it reports once: a process ends only once.
fn watch_loop(raw: i32) {
    // SAFETY: `raw` is this process's watcher epoll descriptor, never closed here (module note).
    let ep = unsafe { BorrowedFd::borrow_raw(raw) };
    let mut events: Vec<epoll::Event> = Vec::with_capacity(16);
    loop {
        events.clear();
        match epoll::wait(ep, rustix::buffer::spare_capacity(&mut events), None) {
            Ok(n) if n > 0 => {
                EXITS.fetch_add(1, Ordering::SeqCst);
                let _ = futex::wake(&EXITS, futex::Flags::PRIVATE, i32::MAX as u32);
            }
            Ok(_) => {}
            Err(e) if e == rustix::io::Errno::INTR => {}
            // An epoll descriptor that stays open does not fail; should it, stop rather than
            // spin. Waits then see no new exits, and their processes time out.
            Err(_) => return,
        }
    }
}

/// Has this process's exit watcher report when `pidfd` becomes readable (its process ended),
/// by advancing [`exit_word`]. `registered` remembers for which watcher it was done (pass the
/// same one for the same pidfd each time; start it at 0). Returns `false` if no watcher runs:
/// the caller must then not rely on a wake for this process.
pub(crate) fn watch_exit(pidfd: impl AsFd, registered: &AtomicU64) -> bool {
    let Some(w) = watcher() else {
        return false;
    };
    if registered.load(Ordering::Acquire) == w {
        return true;
    }
    // SAFETY: `w` names this process's watcher (checked by `watcher`), whose descriptor this
    // process never closes.
    let ep = unsafe { BorrowedFd::borrow_raw((w & NO_WATCHER) as u32 as i32) };
    match epoll::add(
        ep,
        pidfd.as_fd(),
        epoll::EventData::new_u64(0),
        epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
    ) {
        Ok(()) => {}
        // Another thread registered it first.
        Err(e) if e == rustix::io::Errno::EXIST => {}
        Err(_) => return false,
    }
    registered.store(w, Ordering::Release);
    true
}
