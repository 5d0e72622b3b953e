//! The operating-system pieces the harness needs: CPU placement, raw `MAP_SHARED` memory,
//! forked children that report failures instead of panicking the run, and a futex.

use std::cell::UnsafeCell;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is a writable cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE; `set` is initialised.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling process to `cpu`.
pub fn pin_to(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is a plain bit array; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(format!("CPU {cpu} is out of range"));
    }
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "sched_setaffinity(CPU {cpu}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Where the processes of a measurement run.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// The parent's CPU (the receiver in one-way runs), if pinned.
    pub parent: Option<usize>,
    /// Every child's CPU, if pinned.
    pub child: Option<usize>,
}

impl Placement {
    /// The same placement with the children on the parent's CPU (the oversubscribed case).
    pub fn one_core(self) -> Self {
        Self {
            parent: self.parent,
            child: self.parent,
        }
    }
}

/// A `T` in its own `MAP_SHARED | MAP_ANONYMOUS` mapping, shared with children forked later.
pub struct Shm<T> {
    ptr: NonNull<T>,
}

impl<T> Shm<T> {
    /// Maps fresh shared pages and moves `value` into them.
    ///
    /// # Panics
    /// If the mapping fails (out of memory): the harness cannot go on.
    pub fn new(value: T) -> Self {
        assert!(align_of::<T>() <= 4096);
        let ptr = map_shared(size_of::<T>().max(1)).cast::<T>();
        // SAFETY: the mapping is page-aligned (enough for T, asserted above), writable, large
        // enough for a T, and nobody else sees it yet.
        unsafe { ptr.as_ptr().write(value) };
        Self { ptr }
    }
}

// SAFETY: the types put in `Shm` are only mutated through atomics and UnsafeCell with their own
// synchronisation; moving the owner to another thread moves nothing.
unsafe impl<T: Sync> Send for Shm<T> {}
// SAFETY: as above: shared access is what the mapping is for.
unsafe impl<T: Sync> Sync for Shm<T> {}

impl<T> Deref for Shm<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialised in `new`, mapped until `drop`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for Shm<T> {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, dropped once, here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        unmap(self.ptr.cast(), size_of::<T>().max(1));
    }
}

/// Maps `len` bytes of zeroed shared anonymous memory.
///
/// # Panics
/// If the mapping fails.
pub fn map_shared(len: usize) -> NonNull<u8> {
    // SAFETY: an anonymous mapping with no address hint touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap of {len} bytes: {}",
        std::io::Error::last_os_error()
    );
    NonNull::new(p.cast::<u8>()).expect("mmap returned null")
}

/// A zeroed shared anonymous mapping, unmapped on drop.
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes (see [`map_shared`]).
    pub fn new(len: usize) -> Self {
        Self {
            base: map_shared(len),
            len,
        }
    }

    /// The first byte (page-aligned).
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The mapped length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (it never is: `mmap` rejects a length of zero).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        unmap(self.base, self.len);
    }
}

/// Unmaps what [`map_shared`] mapped.
pub fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: callers pass exactly a mapping made by `map_shared` and keep no reference into it.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}

/// A value alone on its cache line.
#[repr(C, align(128))]
#[derive(Default)]
pub struct Line<T>(pub T);

impl<T> Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Waits until `*word != expected`, a wake, or `timeout`.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a live, aligned u32 for the duration of the call; the kernel only reads
    // it. A shared (not private) futex, since the word lives in memory other processes map.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

/// Wakes every waiter on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; a wake reads nothing.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// Wakes at most one waiter on `word`.
pub fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; a wake reads nothing. Shared, as in `futex_wait`.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

// ----------------------------------------------------------------------------------------
// Watchdog

/// Children of the measurement in progress, for the watchdog to kill.
static CHILDREN: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];
/// Set when the watchdog fired.
static TIMED_OUT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_alarm(_: libc::c_int) {
    TIMED_OUT.store(true, Ordering::SeqCst);
    for c in &CHILDREN {
        let pid = c.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe; `pid` is a child of ours not yet reaped
            // (entries are cleared before reaping).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    // Again in a second: a signal that arrived outside a blocking call interrupted nothing,
    // and a wait that no dead child ends (an eventfd read) needs an EINTR to give up.
    // SAFETY: alarm is async-signal-safe.
    unsafe { libc::alarm(1) };
}

/// Installs the watchdog's SIGALRM handler (without `SA_RESTART`, so a blocked `read` returns
/// `EINTR`). The harness runs on one thread, so the signal reaches the waiting call.
pub fn install_watchdog() {
    // SAFETY: sigaction is plain data; all zeros is a valid empty action.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
    // SAFETY: `sa.sa_mask` is a valid sigset to clear.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: the handler only touches atomics and calls kill, both async-signal-safe.
    unsafe { libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) };
}

/// Arms the watchdog: after `secs`, the children of the measurement are killed and waits in
/// this process fail with [`timed_out`] set. `secs == 0` disarms it.
pub fn arm_watchdog(secs: u32) {
    if secs > 0 {
        TIMED_OUT.store(false, Ordering::SeqCst);
    }
    // SAFETY: alarm only schedules a signal.
    unsafe { libc::alarm(secs) };
}

/// Whether the watchdog fired during the current measurement.
pub fn timed_out() -> bool {
    TIMED_OUT.load(Ordering::SeqCst)
}

fn register_child(pid: libc::pid_t) {
    for c in &CHILDREN {
        if c.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

fn unregister_child(pid: libc::pid_t) {
    for c in &CHILDREN {
        let _ = c.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// `waitpid(pid, 0)`, retried when a signal interrupts it. The child stays known to the
/// watchdog until it has exited (a parent waiting for a child that hangs must not make it
/// unkillable), and is forgotten before it is reaped (its pid cannot be reused before that).
fn reap(pid: libc::pid_t, status: &mut libc::c_int) -> libc::pid_t {
    loop {
        // SAFETY: siginfo_t is plain data; all zeros is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our unreaped child; `info` is a valid out-pointer. WNOWAIT leaves the
        // child a zombie, to be reaped below.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    unregister_child(pid);
    loop {
        // SAFETY: `pid` is our unreaped child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, status, 0) };
        if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return r;
        }
    }
}

// ----------------------------------------------------------------------------------------
// Children

const ERROR_LEN: usize = 1024;

/// Where the parent and its children meet: ready count, start flag, and the first failure.
#[repr(C)]
struct Meet {
    ready: Line<AtomicU32>,
    go: Line<AtomicU32>,
    failed: Line<AtomicU32>,
    /// The most any child reported waiting for its CPU while timed.
    waited_ns: Line<std::sync::atomic::AtomicU64>,
    error_len: AtomicU32,
    error: UnsafeCell<[u8; ERROR_LEN]>,
}

// SAFETY: `error` is written once, only by the child that won the `failed` flag, before it
// publishes `error_len` (Release); readers load `error_len` (Acquire) and read no further.
unsafe impl Sync for Meet {}

impl Meet {
    fn report(&self, message: &str) {
        if self
            .failed
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let bytes = message.as_bytes();
        let n = bytes.len().min(ERROR_LEN);
        // SAFETY: only the winner of `failed` (this caller) writes `error`; see `Sync` above.
        unsafe { (&mut *self.error.get())[..n].copy_from_slice(&bytes[..n]) };
        self.error_len.store(n as u32, Ordering::Release);
    }

    fn message(&self) -> Option<String> {
        if self.failed.load(Ordering::Acquire) == 0 {
            return None;
        }
        let n = (self.error_len.load(Ordering::Acquire) as usize).min(ERROR_LEN);
        if n == 0 {
            // The winner has not written its message (or was killed before it could).
            return Some("a child failed without saying why".into());
        }
        // SAFETY: `error_len` is stored (Release) after the bytes are written and loaded
        // (Acquire) before they are read, and only the one winner of `failed` writes them.
        let bytes = unsafe { &(&*self.error.get())[..n] };
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// What a child's body uses to report ready and wait for the start.
pub struct Start<'a>(&'a Meet);

impl Start<'_> {
    /// Reports that this child waited `ns` for its CPU during the timed part.
    pub fn report_waited(&self, ns: u64) {
        self.0.waited_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Reports this child ready and waits until the parent says go (or 60 s pass).
    pub fn ready_and_wait(&self) -> Result<(), String> {
        self.0.ready.fetch_add(1, Ordering::Release);
        let since = Instant::now();
        let mut spins = 0u32;
        while self.0.go.load(Ordering::Acquire) == 0 {
            // Siblings may share this core: spin a little, then let them run.
            if spins < 1000 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
                if since.elapsed() > Duration::from_secs(60) {
                    return Err("no start signal for 60 s".into());
                }
            }
        }
        Ok(())
    }
}

/// Threads of this process (`num_threads` in `/proc/self/stat`); `None` if unreadable.
fn thread_count() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: skip past its closing one.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split(' ').nth(17)?.parse().ok()
}

/// Forked children. Dropping a team that was not joined kills and reaps its children.
pub struct Team {
    pids: Vec<libc::pid_t>,
    meet: Shm<Meet>,
}

/// What a child's body returns: `Err` with what went wrong.
pub type Outcome = Result<(), String>;

impl Team {
    /// Forks `n` children, each pinned per `placement`; child `i` runs `body(i, start)` and
    /// leaves with `_exit` (status 1 with its error recorded if the body failed or panicked).
    /// An error if this process has more than one thread (forking it would not be sound) or
    /// a fork fails.
    pub fn spawn(
        n: usize,
        placement: Placement,
        body: impl Fn(usize, &Start<'_>) -> Outcome,
    ) -> Result<Self, String> {
        let mut team = Self {
            pids: Vec::with_capacity(n),
            meet: Shm::new(Meet {
                ready: Line::default(),
                go: Line::default(),
                failed: Line::default(),
                waited_ns: Line::default(),
                error_len: AtomicU32::new(0),
                error: UnsafeCell::new([0; ERROR_LEN]),
            }),
        };
        // A child allocates and runs `body` between `fork` and `_exit`, which is sound only if
        // this process has no other thread (one could hold the allocator's lock at the fork).
        // Checked here: with one thread, none can start before the fork, as that one is us.
        if thread_count() != Some(1) {
            return Err("forking children needs a single-threaded process".into());
        }
        for i in 0..n {
            // SAFETY: this process has one thread (checked above), so the child may allocate;
            // it only runs `body` on memory it inherited and leaves with `_exit`, never
            // returning into the caller.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(format!("fork: {}", std::io::Error::last_os_error()));
            }
            if pid == 0 {
                // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; it only sets a flag.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                let meet: &Meet = &team.meet;
                let result = catch_unwind(AssertUnwindSafe(|| {
                    if let Some(cpu) = placement.child {
                        pin_to(cpu)?;
                    }
                    body(i, &Start(meet))
                }));
                let code = match result {
                    Ok(Ok(())) => 0,
                    Ok(Err(e)) => {
                        meet.report(&format!("child {i}: {e}"));
                        1
                    }
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("panic");
                        meet.report(&format!("child {i} panicked: {what}"));
                        1
                    }
                };
                // SAFETY: ends the child at once: no destructors, no return into the harness.
                unsafe { libc::_exit(code) };
            }
            register_child(pid);
            team.pids.push(pid);
        }
        Ok(team)
    }

    /// Waits until every child reported ready.
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let since = Instant::now();
        while (self.meet.ready.load(Ordering::Acquire) as usize) < self.pids.len() {
            for k in 0..self.pids.len() {
                let pid = self.pids[k];
                let mut status = 0;
                // SAFETY: `pid` is our unreaped child; `status` is a valid out-pointer.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    unregister_child(pid);
                    self.pids.remove(k);
                    return Err(self.meet.message().unwrap_or_else(|| {
                        format!("child exited before it was ready (status {status:#x})")
                    }));
                }
            }
            if since.elapsed() > Duration::from_secs(60) {
                return Err("children not ready after 60 s".into());
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    /// The most any child reported with [`Start::report_waited`] (read after `join`).
    pub fn waited_ns(&self) -> u64 {
        self.meet.waited_ns.load(Ordering::Relaxed)
    }

    /// Lets every child past [`Start::ready_and_wait`].
    pub fn go(&self) {
        self.meet.go.store(1, Ordering::Release);
    }

    /// Kills and reaps every child, then returns the first failure a child recorded.
    pub fn stop(mut self) -> Option<String> {
        self.kill_all();
        self.meet.message()
    }

    fn kill_all(&mut self) {
        for &pid in &self.pids {
            // SAFETY: `pid` is our own unreaped child, so the id cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for pid in std::mem::take(&mut self.pids) {
            let mut status = 0;
            reap(pid, &mut status);
        }
    }

    /// Waits for every child to exit; the most a child waited for its CPU, or the first
    /// child's failure.
    pub fn join(mut self) -> Result<u64, String> {
        let mut bad = None;
        while let Some(pid) = self.pids.pop() {
            let mut status = 0;
            let r = reap(pid, &mut status);
            if r != pid {
                bad.get_or_insert(format!("waitpid: {}", std::io::Error::last_os_error()));
            } else if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                bad.get_or_insert(format!("child {pid} failed (status {status:#x})"));
            }
        }
        match (self.meet.message(), bad) {
            (Some(e), _) => Err(e),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(self.waited_ns()),
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A parent-side failure, preferring the children's own account of what went wrong (a child
/// that failed first usually explains the parent's symptom, e.g. a disconnect).
pub fn fail_with(team: Team, parent_error: String) -> String {
    match team.stop() {
        Some(c) if c != parent_error => format!("{parent_error} ({c})"),
        _ => parent_error,
    }
}
