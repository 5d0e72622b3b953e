//! Futex wait and wake on a word that may live in memory shared with other processes.
//!
//! We never pass `FUTEX_PRIVATE_FLAG`: the kernel then keys the wait queue on the backing page
//! (inode and offset), so a waiter in one process is woken by a wake through another process's
//! mapping of the same memory, even at a different address.
//!
//! # References
//! - [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html)
//! - [futex(7)](https://man7.org/linux/man-pages/man7/futex.7.html)

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use rustix::thread::futex;

use super::Errno;

/// Sleeps while `*word == expected`, for at most `timeout` (forever when `None`).
///
/// Returns `Ok(())` when woken (or spuriously), `Err(Errno::AGAIN)` when the word no longer held
/// `expected` on entry, and `Err(Errno::TIMEDOUT)` when the timeout ran out. `EINTR` is retried
/// with the time that remains.
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<(), Errno> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut left = timeout;
    loop {
        let ts = left.map(|d| futex::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::INTR => {
                if let Some(deadline) = deadline {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Errno::TIMEDOUT);
                    }
                    left = Some(deadline - now);
                }
            }
            Err(e) => return Err(Errno::from_rustix(e)),
        }
    }
}

/// Wakes at most `n` waiters sleeping on `word`; returns how many were woken.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> usize {
    if cfg!(miri) {
        return wake_under_miri(word, n);
    }
    // FUTEX_WAKE only fails for a bad address, which a reference cannot be.
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}

/// `futex::wake` as a plain `syscall`: rustix makes a pointer of an integer (its unused `val2`
/// argument), which Miri with `-Zmiri-strict-provenance` refuses.
#[allow(unsafe_code)]
fn wake_under_miri(word: &AtomicU32, n: u32) -> usize {
    let null = std::ptr::null::<u32>();
    // SAFETY: FUTEX_WAKE only compares the address of `word`, a live reference; it ignores the
    // (null) timeout and second address.
    let woken = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            null,
            null,
            0,
        )
    };
    usize::try_from(woken).unwrap_or(0)
}
