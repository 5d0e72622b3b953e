//! L0: the only code that talks to the operating system.
//!
//! Everything above this module sees [`Errno`], plain integers and raw pointers; rustix and libc
//! types stay inside. Linux is the supported backend; other targets fail to compile for now
//! (a macOS backend on `os_sync_wait_on_address` can slot in beside `linux`).

#[cfg(not(target_os = "linux"))]
compile_error!("multiproc currently supports Linux only");

#[cfg(not(multiproc_loom))]
mod futex;
#[cfg(not(multiproc_loom))]
mod mem;
#[cfg(not(multiproc_loom))]
mod proc;
#[cfg(not(multiproc_loom))]
#[cfg_attr(not(feature = "serde"), allow(dead_code))]
mod spawn;
#[cfg(not(multiproc_loom))]
pub(crate) mod track;
#[cfg(not(multiproc_loom))]
#[cfg_attr(not(feature = "serde"), allow(dead_code))]
mod waitv;

#[cfg(not(multiproc_loom))]
pub(crate) use futex::{futex_wait, futex_wake};
#[cfg(not(multiproc_loom))]
pub(crate) use mem::{
    Fd, Mapping, dup_raw_fd, fd_identity, fd_len, memfd_create, raw_fd, sealed_against_shrinking,
    set_cloexec, shm_create_excl, shm_identity, shm_open_existing, shm_unlink,
};
#[cfg(not(multiproc_loom))]
pub(crate) use proc::{
    Liveness, ThreadId, current_pid, current_process, current_thread, on_fork, probe_thread,
    random_u64, single_cpu_machine, thread_children,
};
// Processes need serde (their arguments and results are encoded); without it, much of the
// process plumbing has no user.
#[cfg(not(multiproc_loom))]
#[cfg_attr(not(feature = "serde"), allow(unused_imports))]
pub(crate) use spawn::{
    Environment, Forked, SIGKILL, SIGTERM, close_inherited, cstring, current_tid, executable_entry,
    exit_now, fork, install_environment, keep_from_exec, kill_me_with_parent, kill_self,
    parent_pid, pidfd_open, pidfd_signal, reap, recv_message, same_loaded_object, send_message,
    single_threaded, socket_pair, spawn_self, try_reap, wait_readable,
};
#[cfg(not(multiproc_loom))]
#[cfg_attr(not(feature = "serde"), allow(unused_imports))]
pub(crate) use waitv::{
    WAITV_MAX, WaitvEntry, exit_word, fallback_sleep, futex_waitv, waitv_supported, watch_exit,
};

// The loom models' stand-in for the operating system (see `loom.rs`).
#[cfg(multiproc_loom)]
mod loom;
#[cfg(multiproc_loom)]
pub(crate) use loom::{
    Liveness, ThreadId, current_process, current_thread, futex_wait, futex_wake, probe_thread,
    single_cpu_machine,
};

use std::fmt;

/// An operating-system error number, as returned by a failed system call.
///
/// `Errno` is `Copy` and cheap; [`Errno::raw`] gives the number and `Display` the system's message.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

impl Errno {
    /// Interrupted system call.
    pub const INTR: Self = Self(libc::EINTR);
    /// Resource temporarily unavailable (also: the futex word did not hold the expected value).
    pub const AGAIN: Self = Self(libc::EAGAIN);
    /// Timer expired.
    pub const TIMEDOUT: Self = Self(libc::ETIMEDOUT);
    /// No such file or directory.
    pub const NOENT: Self = Self(libc::ENOENT);
    /// File exists.
    pub const EXIST: Self = Self(libc::EEXIST);
    /// Permission denied.
    pub const ACCES: Self = Self(libc::EACCES);
    /// Invalid argument.
    pub const INVAL: Self = Self(libc::EINVAL);
    /// No such process.
    pub const SRCH: Self = Self(libc::ESRCH);
    /// Function not implemented.
    pub const NOSYS: Self = Self(libc::ENOSYS);
    /// Name too long.
    pub const NAMETOOLONG: Self = Self(libc::ENAMETOOLONG);

    /// Wraps a raw error number.
    pub const fn from_raw(raw: i32) -> Self {
        Self(raw)
    }

    /// The raw error number.
    pub const fn raw(self) -> i32 {
        self.0
    }

    pub(crate) fn from_rustix(e: rustix::io::Errno) -> Self {
        Self(e.raw_os_error())
    }

    fn io(self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self.0)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({}: {})", self.0, self.io())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The io::Error message ends with " (os error N)"; that is what users grep for.
        write!(f, "{}", self.io())
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        e.io()
    }
}

/// Runs `f` until it does not fail with `EINTR`.
pub(crate) fn retry_on_intr<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}
