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
//! `fork` is unsafe to call (the child of a multi-threaded parent must end without returning
//! into code that expects the other threads); its callers say how their children end.
//! `close_inherited` is unsafe because it closes a bare number, which must belong to nobody.
//! The other unsafe blocks pass pointers to live, correctly typed locals or NUL-terminated
//! arrays that outlive the call, or borrowed descriptors.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal};

use super::Errno;

/// The calling thread's `errno` after a failed libc call.
pub(super) fn last_errno() -> Errno {
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
/// In the child only the calling thread exists, and locks that other threads held at the fork
/// stay held forever: taking one blocks (a hang, not undefined behaviour), so a child should
/// take none that another thread may have held (the stdout lock, a `Mutex`, ...).
///
/// # Safety
/// - In the child, the caller never returns into code that expects the parent's other
///   threads to exist (that waits for or joins them, or unwinds through frames that do): it
///   runs what it was forked for and ends the child with [`exit_now`].
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

/// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34 and later), looked up when first
/// needed rather than linked, so that executables still start with an older C library.
type AddCloseFrom =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, libc::c_int) -> libc::c_int;

fn addclosefrom() -> Option<AddCloseFrom> {
    static FOUND: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *FOUND.get_or_init(|| {
        // SAFETY: `dlsym` with `RTLD_DEFAULT` and a NUL-terminated name only looks the symbol
        // up; it returns null if there is none.
        let p = unsafe {
            libc::dlsym(
                libc::RTLD_DEFAULT,
                c"posix_spawn_file_actions_addclosefrom_np".as_ptr(),
            )
        };
        p as usize
    });
    if addr == 0 {
        return None;
    }
    // SAFETY: `addr` is the C library's `posix_spawn_file_actions_addclosefrom_np`, whose C
    // prototype is `int (posix_spawn_file_actions_t *, int)`: the type of `AddCloseFrom`.
    Some(unsafe { std::mem::transmute::<usize, AddCloseFrom>(addr) })
}

/// The descriptors this process holds now (for the fallback where the C library cannot close
/// a whole range in the child).
fn open_descriptors() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts `/proc/self/exe` (this very executable, even if its file was replaced since) with
/// `argv` and `envp`. The child holds descriptors 0, 1 and 2 and those in `keep` (under the
/// same numbers), and nothing else: every other descriptor is closed in the child before the
/// `exec`, close-on-exec or not. Returns the child's pid.
///
/// With a C library older than glibc 2.34 (no `posix_spawn_file_actions_addclosefrom_np`)
/// the descriptors to close are listed before the spawn, so a descriptor that another thread
/// opens without close-on-exec meanwhile can still reach the child.
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
        // Then close everything else above 2 (the actions run in order, in the child): the
        // gaps between kept descriptors one by one (closing a number that is not open is no
        // error for posix_spawn), and all above the highest kept one at once.
        let top = keep.iter().copied().filter(|&fd| fd > 2).max().unwrap_or(2);
        let actions_ptr = actions.as_mut_ptr();
        let close = |fd: i32| -> Result<(), Errno> {
            // SAFETY: `actions_ptr` points to `actions`, initialised above; the call only
            // records the action.
            let rc = unsafe { libc::posix_spawn_file_actions_addclose(actions_ptr, fd) };
            if rc != 0 {
                return Err(Errno::from_raw(rc));
            }
            Ok(())
        };
        for fd in (3..top).filter(|fd| !keep.contains(fd)) {
            close(fd)?;
        }
        if let Some(addclosefrom) = addclosefrom() {
            // SAFETY: `actions` is initialised; the call only records the action.
            let rc = unsafe { addclosefrom(actions_ptr, top + 1) };
            if rc != 0 {
                return Err(Errno::from_raw(rc));
            }
        } else {
            for fd in open_descriptors().into_iter().filter(|&fd| fd > top) {
                close(fd)?;
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
    rustix::process::pidfd_open(pid_of(pid)?, PidfdFlags::empty()).map_err(Errno::from_rustix)
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
    rustix::process::pidfd_send_signal(pidfd, sig).map_err(Errno::from_rustix)
}

/// SIGTERM and SIGKILL.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
pub(crate) const SIGKILL: i32 = libc::SIGKILL;

/// Asks the kernel to SIGKILL us when the thread that created us exits.
pub(crate) fn kill_me_with_parent() -> Result<(), Errno> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).map_err(Errno::from_rustix)
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

/// Whether this process has a single thread (so nothing can race with it on process-wide
/// state such as the environment). `false` when it cannot tell.
pub(crate) fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|dir| dir.count() == 1)
}

/// Marks the inherited descriptor `fd` close-on-exec (a spawned child keeps what its parent
/// handed down to itself). Errors (a number that is not open) are ignored.
pub(crate) fn keep_from_exec(fd: i32) {
    // SAFETY: F_SETFD only changes a flag in the descriptor table; a number that is not open
    // fails with EBADF.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// Closes the inherited descriptor `fd`. Errors (a number that is not open) are ignored.
///
/// # Safety
/// - Nothing in this process owns `fd` or borrows it (no `OwnedFd`, `File` or `BorrowedFd`
///   of it lives, and none will be made from the number afterwards): it was inherited, and
///   whatever uses the object behind it holds its own duplicate.
pub(crate) unsafe fn close_inherited(fd: i32) {
    // SAFETY: nobody owns or borrows `fd` (contract above), so closing it cannot pull a
    // descriptor from under its owner; a number that is not open fails with EBADF.
    unsafe { libc::close(fd) };
}

/// A connected pair of local stream sockets, close-on-exec. Only holders of an end can send
/// on it: unlike a pipe or a memfd, a socket cannot be opened again through `/proc/<pid>/fd` by
/// another process.
///
/// # References
/// - [socketpair(2)](https://man7.org/linux/man-pages/man2/socketpair.2.html)
pub(crate) fn socket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    local_socket_pair(libc::SOCK_STREAM)
}

/// A connected pair of local sockets of `kind` (`SOCK_STREAM`, `SOCK_SEQPACKET`),
/// close-on-exec.
pub(crate) fn local_socket_pair(kind: libc::c_int) -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(last_errno());
    }
    // SAFETY: `socketpair` succeeded, so `fds[0]` is a fresh descriptor nothing else owns.
    let a = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above, for `fds[1]`.
    let b = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((a, b))
}

/// Sends all of `bytes` on the stream socket `fd`, without blocking and without SIGPIPE. If
/// they do not all fit, the socket is shut down for writing and the call fails: the receiver
/// then sees a cut-off tail followed by the end of the stream, never a cut record followed by
/// more bytes.
pub(crate) fn send_message(fd: impl AsFd, bytes: &[u8]) -> Result<(), Errno> {
    let raw = fd.as_fd().as_raw_fd();
    loop {
        // SAFETY: `bytes` is a live buffer of `bytes.len()` bytes for the duration of the
        // call; `fd` is borrowed, so open.
        let rc = unsafe {
            libc::send(
                raw,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if rc >= 0 && rc as usize == bytes.len() {
            return Ok(());
        }
        let e = if rc >= 0 { Errno::AGAIN } else { last_errno() };
        if e != Errno::INTR || rc > 0 {
            // SAFETY: `fd` is borrowed, so open; shutdown changes only the socket's state.
            unsafe { libc::shutdown(raw, libc::SHUT_WR) };
            return Err(e);
        }
    }
}

/// Receives what waits on the socket `fd` into `buf` without blocking: how many bytes (0 once
/// the other end is closed), or `None` if nothing is waiting.
pub(crate) fn recv_message(fd: impl AsFd, buf: &mut [u8]) -> Result<Option<usize>, Errno> {
    loop {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes for the duration of
        // the call; `fd` is borrowed, so open.
        let rc = unsafe {
            libc::recv(
                fd.as_fd().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match rc {
            n if n >= 0 => return Ok(Some((n as usize).min(buf.len()))),
            _ => {
                let e = last_errno();
                if e == Errno::AGAIN {
                    return Ok(None);
                }
                if e != Errno::INTR {
                    return Err(e);
                }
            }
        }
    }
}

/// The entry point of the executable (`AT_ENTRY`): an address inside it. 0 if unknown.
pub(crate) fn executable_entry() -> usize {
    // SAFETY: `getauxval` only reads the auxiliary vector; it returns 0 for a missing entry.
    unsafe { libc::getauxval(libc::AT_ENTRY) as usize }
}

/// Whether the code addresses `a` and `b` lie in the same loaded object (the executable or one
/// shared library), as `dladdr` tells. `true` when it can tell for neither (a static
/// executable is a single object), `false` when it can tell for only one.
///
/// # References
/// - [dladdr(3)](https://man7.org/linux/man-pages/man3/dladdr.3.html)
pub(crate) fn same_loaded_object(a: usize, b: usize) -> bool {
    if cfg!(miri) {
        return true;
    }
    let base = |addr: usize| {
        let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
        // SAFETY: `dladdr` only looks the address up and fills `info`, a valid out-pointer;
        // it returns 0 (leaving `info` unused) when the address is in no loaded object.
        let rc = unsafe { libc::dladdr(addr as *const libc::c_void, info.as_mut_ptr()) };
        // SAFETY: a non-zero return means `info` was filled (and it was zeroed before).
        (rc != 0).then(|| unsafe { info.assume_init() }.dli_fbase as usize)
    };
    match (base(a), base(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => true,
        _ => false,
    }
}
