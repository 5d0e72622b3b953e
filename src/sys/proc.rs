//! Who we are (thread id, start time) and whether another thread or process is still alive.
//!
//! A liveness probe must not be fooled by pid reuse, so identities are the pair (thread id,
//! start time in clock ticks since boot), both read from `/proc`. A reused id has a later start
//! time; a killed process that is not yet reaped is a zombie (`Z`) and counts as dead.
//!
//! # References
//! - [proc_pid_stat(5)](https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html)
//! - [pthread_atfork(3)](https://man7.org/linux/man-pages/man3/pthread_atfork.3.html)
#![allow(unsafe_code)]
//! # Safety
//! The only unsafe code registers a fork handler that resets a thread-local slot, which is
//! async-signal-safe and so allowed in a child of `fork`.

use std::cell::Cell;
use std::sync::Once;

use super::Errno;

/// A thread's identity that pid reuse cannot fake: kernel thread id plus its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadId {
    /// Kernel thread id (equal to the pid for a process's main thread).
    pub(crate) tid: u32,
    /// Start time of that thread, clock ticks after boot (`/proc/<tid>/stat` field 22).
    pub(crate) start: u64,
}

/// What a probe found out about a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// The thread exists and started at the expected time (or we cannot tell).
    Alive,
    /// No thread has that id, or it is a zombie: certainly dead.
    Gone,
    /// A thread has that id but another start time: the id was reused, or the start time we
    /// were given is stale. Callers confirm with a second probe before acting.
    Reused,
}

static ATFORK: Once = Once::new();

thread_local! {
    /// This thread's identity; tid 0 means "not filled yet". Reset in the child after `fork`
    /// (the forking thread is the only thread there, and its id and start time changed).
    static ME: Cell<ThreadId> = const { Cell::new(ThreadId { tid: 0, start: 0 }) };
    /// This process's identity (pid and the main thread's start time), cached per thread and
    /// reset after `fork` like `ME`.
    static PROCESS: Cell<ThreadId> = const { Cell::new(ThreadId { tid: 0, start: 0 }) };
}

/// Run in the parent just before `fork`, and in the child after the identity reset (see
/// [`on_fork`]).
static FORK_HOOKS: std::sync::OnceLock<ForkHooks> = std::sync::OnceLock::new();

/// (run in the parent before `fork`, in the parent after it, in the child after it).
type ForkHooks = (fn(), fn(), fn());

extern "C" fn before_fork() {
    if let Some((prepare, _, _)) = FORK_HOOKS.get() {
        prepare();
    }
}

extern "C" fn after_fork_in_parent() {
    if let Some((_, parent, _)) = FORK_HOOKS.get() {
        parent();
    }
}

extern "C" fn after_fork_in_child() {
    // A const-initialised thread-local without destructor is a plain TLS slot: no allocation,
    // no registration, so this is safe to run in the child of a fork.
    ME.with(|me| me.set(ThreadId { tid: 0, start: 0 }));
    PROCESS.with(|p| p.set(ThreadId { tid: 0, start: 0 }));
    if let Some((_, _, child)) = FORK_HOOKS.get() {
        child();
    }
}

/// Installs `prepare` to run in the parent just before every `fork`, `parent` in the parent
/// right after it, and `child` in the child right after it (once; later calls are ignored).
/// The child hook runs in the only thread of the child; glibc keeps `malloc` usable there, but
/// a lock another parent thread held at the fork stays held, so the hooks must only
/// `try_lock`.
pub(crate) fn on_fork(prepare: fn(), parent: fn(), child: fn()) {
    register_atfork();
    let _ = FORK_HOOKS.set((prepare, parent, child));
}

fn register_atfork() {
    if cfg!(miri) {
        return; // Miri has no fork and no pthread_atfork.
    }
    ATFORK.call_once(|| {
        // SAFETY: the handlers are plain `extern "C" fn`s with static lifetime; registering them
        // has no other precondition.
        let rc = unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
        assert_eq!(rc, 0, "pthread_atfork failed");
    });
}

/// Whether this machine has a single CPU online, so that a waiter's spinning only keeps
/// whoever it waits for from running. Asked once per process.
///
/// (A thread whose affinity allows one CPU is not such a case: its peer may be pinned to
/// another one. Waiters learn that spinning does not pay from its outcomes instead.)
pub(crate) fn single_cpu_machine() -> bool {
    static ONLINE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: `sysconf` reads a system constant; it has no preconditions.
    *ONLINE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } == 1)
}

/// The calling thread's identity, cached per thread and refreshed after `fork`.
#[inline(always)]
pub(crate) fn current_thread() -> ThreadId {
    let id = ME.with(Cell::get);
    if id.tid != 0 {
        return id;
    }
    current_thread_slow()
}

#[cold]
fn current_thread_slow() -> ThreadId {
    register_atfork();
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    if tid == current_pid() {
        // The main thread: its identity is the process's (one `/proc` read for both).
        let id = current_process();
        ME.with(|c| c.set(id));
        return id;
    }
    let start = read_stat(tid).map(|s| s.start).unwrap_or(0);
    let id = ThreadId { tid, start };
    ME.with(|c| c.set(id));
    id
}

/// The calling process's identity: pid and process start time (that of its main thread).
#[inline]
pub(crate) fn current_process() -> ThreadId {
    let id = PROCESS.with(Cell::get);
    if id.tid != 0 {
        return id;
    }
    current_process_slow()
}

#[cold]
fn current_process_slow() -> ThreadId {
    register_atfork();
    let pid = current_pid();
    let me = ME.with(Cell::get);
    let start = if me.tid == pid {
        me.start // the main thread already read it
    } else {
        read_stat(pid).map(|s| s.start).unwrap_or(0)
    };
    let id = ThreadId { tid: pid, start };
    PROCESS.with(|c| c.set(id));
    id
}

/// The calling process's id.
pub(crate) fn current_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

struct Stat {
    state: u8,
    start: u64,
}

fn read_stat(tid: u32) -> Result<Stat, Errno> {
    use std::io::Read;
    if cfg!(miri) {
        return Err(Errno::NOSYS); // Miri's isolation forbids /proc: start time 0, probes "Alive".
    }
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let mut file = std::fs::File::open(format!("/proc/{tid}/stat")).map_err(errno)?;
    // The line is a few hundred bytes: one read into a stack buffer usually gets all of it.
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(errno(e)),
        }
    }
    parse_stat(&buf[..len]).ok_or(Errno::INVAL)
}

/// Parses the state (field 3) and start time (field 22) out of a `/proc/<pid>/stat` line.
/// The command name (field 2) may contain spaces and parentheses, so we split after the last `)`.
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    // Fields 4..=21 sit between state (3) and starttime (22).
    let start = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start })
}

/// Finds out whether the thread `who` still exists.
///
/// Errors other than "no such thread" (e.g. a `/proc` mounted with `hidepid`) report `Alive`:
/// a probe may only ever declare a thread dead when it knows.
pub(crate) fn probe_thread(who: ThreadId) -> Liveness {
    if who.tid == 0 || who.tid > (1 << 22) {
        // Not a thread id the kernel hands out (pid_max is at most 2^22): a scribbled word.
        return Liveness::Gone;
    }
    match read_stat(who.tid) {
        Ok(st) if st.state == b'Z' || st.state == b'X' || st.state == b'x' => Liveness::Gone,
        Ok(st) if who.start != 0 && st.start != who.start => Liveness::Reused,
        Ok(_) => Liveness::Alive,
        Err(Errno::NOENT) | Err(Errno::SRCH) => Liveness::Gone,
        Err(_) => Liveness::Alive,
    }
}

/// 64 random bits from the kernel, for unguessable segment names.
pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(e) if e == rustix::io::Errno::INTR => {}
            Err(_) => {
                // No getrandom: fall back to time and pid, still unique per process and call.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                return t ^ (u64::from(current_pid()) << 32);
            }
        }
    }
    u64::from_ne_bytes(buf)
}

/// The children of the calling thread, from `/proc/thread-self/children`; `None` if the kernel
/// does not offer that file (it needs `CONFIG_PROC_CHILDREN`).
///
/// # References
/// - [proc_pid_task(5)](https://man7.org/linux/man-pages/man5/proc_pid_task.5.html)
pub(crate) fn thread_children() -> Option<Vec<u32>> {
    if cfg!(miri) {
        return None; // Miri's isolation forbids /proc.
    }
    let text = std::fs::read_to_string("/proc/thread-self/children").ok()?;
    text.split_ascii_whitespace()
        .map(|pid| pid.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_parens_in_name() {
        let line =
            b"1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, b'S');
        assert_eq!(st.start, 987654);
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc, which Miri's isolation forbids")]
    fn me_is_alive_and_a_made_up_thread_is_not() {
        let me = current_thread();
        assert_ne!(me.start, 0);
        assert_eq!(probe_thread(me), Liveness::Alive);
        let older = ThreadId {
            start: me.start + 1,
            ..me
        };
        assert_eq!(probe_thread(older), Liveness::Reused);
        assert_eq!(probe_thread(ThreadId { tid: 0, start: 0 }), Liveness::Gone);
    }
}
