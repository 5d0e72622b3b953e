//! Starting, watching and reaping child processes: `fork`, `posix_spawn` of our own
//! executable, pidfds, `waitpid`, signals, and the parent-death signal.
//!
//! # References
//! - [fork(2)](https://man7.org/linux/man-pages/man2/fork.2.html)
//! - [posix_spawn(3)](https://man7.org/linux/man-pages/man3/posix_spawn.3.html)
//! - [pidfd_open(2)](https://man7.org/linux/man-pages/man2/pidfd_open.2.html)
//! - [waitpid(2)](https://man7.org/linux/man-pages/man2/waitpid.2.html)
//! - [PR_SET_PDEATHSIG](https://man7.org/linux/man-pages/man2/PR_SET_PDEATHSIG.2const.html)
#![allow(unsafe_code)]
//! # Safety
//! `fork` is unsafe to call (the child of a multi-threaded parent may only rely on what the
//! forking thread left consistent); its callers document what their children do. The other
//! unsafe blocks pass pointers to live, correctly typed locals or NUL-terminated arrays that
//! outlive the call.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal};

use super::Errno;

fn last_errno() -> Errno {
    Errno::from_raw(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

fn pid_of(pid: u32) -> Result<Pid, Errno> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(Errno::from_raw(libc::ESRCH))
}

/// Which side of a `fork` we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    /// In the new child.
    Child,
    /// In the parent, with the child's pid.
    Parent(u32),
}

/// Forks the calling process.
///
/// # Safety
/// In the child only the calling thread exists; locks that other threads held at the fork stay
/// held forever. The caller must make the child use nothing such a lock may guard (in Rust:
/// no `Mutex` another thread may hold, no stdout lock, and so on) and end it with
/// [`exit_now`].
pub(crate) unsafe fn fork() -> Result<Forked, Errno> {
    // SAFETY: the caller upholds the contract above; fork itself has no memory preconditions.
    match unsafe { libc::fork() } {
        -1 => Err(last_errno()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as u32)),
    }
}

/// Ends the calling process at once with `code`: no destructors, no `atexit` handlers, no
/// stdio flushing (flush first), as a forked child must end.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// Starts `/proc/self/exe` (this very executable, even if its file was replaced since) with
/// `argv` and `envp`, the descriptors in `keep` surviving the `exec` under the same numbers.
/// Returns the child's pid.
pub(crate) fn spawn_self(argv: &[CString], envp: &[CString], keep: &[i32]) -> Result<u32, Errno> {
    let path = c"/proc/self/exe";
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());

    let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    // SAFETY: initialises the object `actions` points to.
    let rc = unsafe { libc::posix_spawn_file_actions_init(actions.as_mut_ptr()) };
    if rc != 0 {
        return Err(Errno::from_raw(rc));
    }
    let mut attr = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    // SAFETY: initialises the object `attr` points to.
    let rc = unsafe { libc::posix_spawnattr_init(attr.as_mut_ptr()) };
    if rc != 0 {
        // SAFETY: `actions` was initialised above.
        unsafe { libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr()) };
        return Err(Errno::from_raw(rc));
    }
    let result = (|| {
        for &fd in keep {
            // dup2 onto itself clears FD_CLOEXEC in the child only (glibc 2.29 and later).
            // SAFETY: `actions` is initialised; the call only records the action.
            let rc =
                unsafe { libc::posix_spawn_file_actions_adddup2(actions.as_mut_ptr(), fd, fd) };
            if rc != 0 {
                return Err(Errno::from_raw(rc));
            }
        }
        // The child starts with no signal blocked, whatever the spawning thread blocks.
        let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: initialises the set `empty` points to.
        unsafe { libc::sigemptyset(empty.as_mut_ptr()) };
        // SAFETY: `attr` is initialised and `empty` is a valid set.
        let rc = unsafe { libc::posix_spawnattr_setsigmask(attr.as_mut_ptr(), empty.as_ptr()) };
        if rc != 0 {
            return Err(Errno::from_raw(rc));
        }
        // SAFETY: `attr` is initialised; the flag value is a valid flag set.
        let rc = unsafe {
            libc::posix_spawnattr_setflags(attr.as_mut_ptr(), libc::POSIX_SPAWN_SETSIGMASK as _)
        };
        if rc != 0 {
            return Err(Errno::from_raw(rc));
        }
        let mut pid: libc::pid_t = 0;
        // SAFETY: `path` is NUL-terminated; `argv_ptrs` and `envp_ptrs` are NULL-terminated
        // arrays of NUL-terminated strings that outlive the call; `actions` and `attr` are
        // initialised.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                actions.as_ptr(),
                attr.as_ptr(),
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(Errno::from_raw(rc));
        }
        Ok(pid as u32)
    })();
    // SAFETY: both were initialised above and are not used afterwards.
    unsafe {
        libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
    }
    // SAFETY: as above.
    unsafe {
        libc::posix_spawnattr_destroy(attr.as_mut_ptr());
    }
    result
}

/// A pidfd for our child `pid` (not yet reaped, so the pid cannot have been reused).
pub(crate) fn pidfd_open(pid: u32) -> Result<OwnedFd, Errno> {
    Ok(rustix::process::pidfd_open(
        pid_of(pid)?,
        PidfdFlags::empty(),
    )?)
}

/// Waits until `fd` is readable (a pidfd: its process has exited) or `timeout` runs out;
/// returns whether it is readable. `None` waits forever.
pub(crate) fn wait_readable(fd: impl AsFd, timeout: Option<Duration>) -> Result<bool, Errno> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let ms = match (timeout, deadline) {
            (None, _) | (Some(_), None) => -1,
            (Some(_), Some(d)) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up, so that a wait never ends before its timeout.
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that lives across the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        match rc {
            -1 => {
                let e = last_errno();
                if e != Errno::INTR {
                    return Err(e);
                }
            }
            0 => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
            }
            _ => return Ok(true),
        }
    }
}

/// Python's `exitcode` for a `waitpid` status: the exit code, or minus the signal number.
fn exitcode(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Reaps our child `pid` if it has exited; `Ok(None)` while it runs.
pub(crate) fn try_reap(pid: u32) -> Result<Option<i32>, Errno> {
    reap_with(pid, libc::WNOHANG)
}

/// Waits for our child `pid` to exit and reaps it.
pub(crate) fn reap(pid: u32) -> Result<i32, Errno> {
    reap_with(pid, 0).map(|c| c.unwrap_or(0))
}

fn reap_with(pid: u32, flags: libc::c_int) -> Result<Option<i32>, Errno> {
    let raw = pid_of(pid)?.as_raw_nonzero().get();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out-pointer for the call.
        let rc = unsafe { libc::waitpid(raw, &mut status, flags) };
        match rc {
            -1 => {
                let e = last_errno();
                if e != Errno::INTR {
                    return Err(e);
                }
            }
            0 => return Ok(None),
            _ => return Ok(Some(exitcode(status))),
        }
    }
}

/// Sends signal number `sig` to the process behind `pidfd` (no pid-reuse race).
pub(crate) fn pidfd_signal(pidfd: impl AsFd, sig: i32) -> Result<(), Errno> {
    let sig = Signal::from_named_raw(sig).ok_or(Errno::INVAL)?;
    Ok(rustix::process::pidfd_send_signal(pidfd, sig)?)
}

/// SIGTERM and SIGKILL.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
pub(crate) const SIGKILL: i32 = libc::SIGKILL;

/// Asks the kernel to SIGKILL us when the thread that created us exits.
pub(crate) fn kill_me_with_parent() -> Result<(), Errno> {
    Ok(rustix::process::set_parent_process_death_signal(Some(
        Signal::KILL,
    ))?)
}

/// Our parent's pid (0 if we have none, i.e. we are init).
pub(crate) fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}

/// The calling thread's kernel id.
pub(crate) fn current_tid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// SIGKILLs the calling process.
pub(crate) fn kill_self() -> ! {
    let me = rustix::process::getpid();
    let _ = rustix::process::kill_process(me, Signal::KILL);
    exit_now(137)
}

/// Turns a Rust string into a `CString`, refusing interior NULs.
pub(crate) fn cstring(s: impl Into<Vec<u8>>) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno::INVAL)
}

unsafe extern "C" {
    /// The C library's environment: a NULL-terminated array of `KEY=value` strings.
    static mut environ: *const *const libc::c_char;
}

/// A whole environment, prepared before a `fork` so that the child can install it without
/// taking any lock (`std::env::set_var` takes one that another parent thread may have held at
/// the fork).
pub(crate) struct Environment {
    _vars: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

impl Environment {
    pub(crate) fn new(vars: Vec<CString>) -> Self {
        let mut ptrs: Vec<*const libc::c_char> = vars.iter().map(|v| v.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Self { _vars: vars, ptrs }
    }
}

/// Makes `env` the process's environment for good (it is leaked).
///
/// # Safety
/// No other thread may read or change the environment meanwhile: call it in the child of a
/// `fork`, which has a single thread.
pub(crate) unsafe fn install_environment(env: Environment) {
    let env: &'static Environment = Box::leak(Box::new(env));
    // SAFETY: the caller guarantees no concurrent access; the array and its strings live
    // forever (leaked) and the array is NULL-terminated.
    unsafe { environ = env.ptrs.as_ptr() };
}

/// Marks the inherited descriptor `fd` close-on-exec (a spawned child keeps what its parent
/// handed down to itself). Errors (a number that is not open) are ignored.
pub(crate) fn keep_from_exec(fd: i32) {
    // SAFETY: F_SETFD only changes a flag in the descriptor table; a number that is not open
    // fails with EBADF.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// Closes the inherited descriptor `fd`, which nothing in this process owns (its objects use
/// their own duplicates). Errors are ignored.
pub(crate) fn close_inherited(fd: i32) {
    // SAFETY: the caller names a descriptor that no `OwnedFd` here owns; closing a number
    // that is not open fails with EBADF.
    unsafe { libc::close(fd) };
}
