//! L4: child processes (`Process`, with the `fork` and `spawn` start methods), the `Pool`, and
//! the free functions about processes.
//!
//! Every child is watched through a pidfd and reaped: by `join`/`wait`, by a poll
//! (`is_alive`, `exitcode`, [`active_children`]), or, once its `Process` is dropped while it
//! runs, by a small reaper thread. A child never outlives its handle as a zombie.
#![allow(unsafe_code)]
//! # Safety
//! The unsafe code is the `fork` itself and changing the environment in the forked child, whose
//! only thread is ours.

mod arg;
mod boot;
mod pool;

use crate::primitive::{AtomicU64, Ordering};
use std::ffi::OsString;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::Queue;
use crate::error::OpenError;
use crate::segment::collecting;
use crate::segment::object::SharedObject;
use crate::sys::{self, Errno, Forked};

pub use arg::EncodesAs;
pub(crate) use boot::{
    BytesRx, BytesTx, Outcome, Status, Target, append, call, call_with, finish, target_for,
};
pub use boot::{init, set_child_init};
pub use pool::{
    AsyncResult, Imap, ImapUnordered, ImapUnorderedIndexed, Pool, PoolBuilder, TaskError,
};

pub use crate::error::ProcessError;

/// Bytes of the ring that carries a child's result (sparse: untouched capacity costs no
/// memory). A message can take half a ring.
const LINK_BYTES: usize = 64 << 20;
/// Largest start argument or result a child can be handed.
const MAX_TRANSFER: usize = (LINK_BYTES / 2) - (64 << 10);

/// How a child process starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMethod {
    /// Re-execute this executable (`/proc/self/exe`) and call a function by address, with its
    /// argument serialised (Python's `spawn`). The child starts clean: no threads, no locks
    /// held, nothing inherited but what the argument carries. About a millisecond to start.
    #[default]
    Spawn,
    /// `fork` this process and run a closure in the copy (Python's `fork`). Fast, and the
    /// closure sees everything the parent had. The hazards are those of `fork` in a
    /// multi-threaded program: only the forking thread exists in the child, so a lock another
    /// parent thread held at that moment (the allocator's are handled by libc; `stdout`'s,
    /// a `Mutex` of yours, a logger's) stays locked forever there. Prefer `Spawn` in programs
    /// with threads, or fork before starting them.
    Fork,
}

/// What a new child needs to know about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildSetup {
    name: String,
    parent: ProcessInfo,
    daemon: bool,
    /// Whether the parent started us from its main thread (then `PR_SET_PDEATHSIG`, which
    /// fires when that thread ends, means "when the parent process ends").
    from_main_thread: bool,
}

/// A process's pid and name, as [`current_process`], [`parent_process`] and
/// [`active_children`] report them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Name: `MainProcess` for a process not started by `multiproc`, else the name its parent
    /// gave it (by default `Process-N`).
    pub name: String,
}

/// Who this process is and who its parent is, if a `multiproc` parent started it. A forked
/// child inherits its parent's value, so readers check the pid.
static ME: Mutex<Option<(ProcessInfo, ProcessInfo)>> = Mutex::new(None);

/// Runs first in every new child, under both start methods.
pub(crate) fn become_child(setup: &ChildSetup) {
    let me = ProcessInfo {
        pid: sys::current_pid(),
        name: setup.name.clone(),
    };
    // Only `try_lock` here: in a forked child, a lock another parent thread held at the fork
    // stays held. Then the name is lost, never the process.
    if let Ok(mut slot) = ME.try_lock() {
        *slot = Some((me, setup.parent.clone()));
    }
    // The parent's children are not ours.
    if let Ok(mut list) = children().try_lock() {
        list.clear();
    }
    if setup.daemon {
        die_with_parent(setup.parent.pid, setup.from_main_thread);
    }
}

/// Arms the death of this (daemon) child with its parent's, closing the race where the parent
/// died before we armed anything.
fn die_with_parent(parent: u32, from_main_thread: bool) {
    if from_main_thread && sys::kill_me_with_parent().is_ok() {
        if sys::parent_pid() != parent {
            sys::kill_self(); // the parent died before we armed the signal
        }
        return;
    }
    // Started from another thread: PR_SET_PDEATHSIG would fire when that thread ends. Watch
    // the parent process itself through a pidfd instead.
    let Ok(fd) = sys::pidfd_open(parent) else {
        sys::kill_self();
    };
    if sys::parent_pid() != parent {
        sys::kill_self(); // the parent died (and we were re-parented) before we looked
    }
    let watcher = std::thread::Builder::new()
        .name("multiproc-parent-watch".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let _ = sys::wait_readable(&fd, None);
            sys::kill_self()
        });
    if watcher.is_err() {
        sys::kill_self();
    }
}

/// Flushes Rust's stdout and stderr (a child leaves with `_exit`, which does not).
pub(crate) fn flush_stdio() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// This process: its pid and name (`MainProcess` unless a `multiproc` parent started it).
pub fn current_process() -> ProcessInfo {
    let me = ME.lock().map(|m| m.clone()).unwrap_or_default();
    match me {
        Some((me, _)) if me.pid == sys::current_pid() => me,
        _ => ProcessInfo {
            pid: sys::current_pid(),
            name: "MainProcess".into(),
        },
    }
}

/// The process that started this one with `multiproc`, or `None` in a process it did not
/// start (Python's `parent_process`).
pub fn parent_process() -> Option<ProcessInfo> {
    let me = ME.lock().map(|m| m.clone()).unwrap_or_default();
    match me {
        Some((me, parent)) if me.pid == sys::current_pid() => Some(parent),
        _ => None,
    }
}

/// The children of this process that are still running. Children that have exited are reaped
/// on the way (as in Python).
pub fn active_children() -> Vec<ProcessInfo> {
    let list: Vec<Arc<Child>> = children().lock().map(|c| c.clone()).unwrap_or_default();
    list.iter()
        .filter(|c| matches!(c.poll(), Ok(None)))
        .map(|c| ProcessInfo {
            pid: c.pid,
            name: c.name.clone(),
        })
        .collect()
}

/// The number of CPUs this process may run on (its affinity mask), at least 1.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Every child started here and not yet reaped.
fn children() -> &'static Mutex<Vec<Arc<Child>>> {
    static CHILDREN: Mutex<Vec<Arc<Child>>> = Mutex::new(Vec::new());
    &CHILDREN
}

/// A started child: the part of a [`Process`] the registry and the reaper share.
#[derive(Debug)]
pub(crate) struct Child {
    pid: u32,
    name: String,
    pidfd: OwnedFd,
    /// Our end of the child's control socket (see `boot`): targets registered here reach the
    /// child while it lives.
    _control: Arc<OwnedFd>,
    /// The exit code, once reaped.
    code: Mutex<Option<i32>>,
    /// For which exit watcher `pidfd` is registered (see `sys::watch_exit`); 0: none.
    watched: AtomicU64,
    /// `1 << 32 | e`: the child was found running after the exit word read `e` (see
    /// [`has_exited_since`](Self::has_exited_since)); 0: never.
    running_at: AtomicU64,
}

impl Child {
    fn new(pid: u32, name: String, control: Arc<OwnedFd>) -> Result<Arc<Self>, Errno> {
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = sys::reap(pid);
                return Err(e);
            }
        };
        let child = Arc::new(Self {
            pid,
            name,
            pidfd,
            _control: control,
            code: Mutex::new(None),
            watched: AtomicU64::new(0),
            running_at: AtomicU64::new(0),
        });
        if let Ok(mut list) = children().lock() {
            list.push(child.clone());
        }
        Ok(child)
    }

    /// The exit code if the child has exited (reaping it), `None` while it runs.
    pub(crate) fn poll(&self) -> Result<Option<i32>, Errno> {
        let mut code = self.code.lock().unwrap_or_else(|p| p.into_inner());
        if code.is_none() {
            *code = sys::try_reap(self.pid)?;
            if code.is_some() {
                if let Ok(mut list) = children().lock() {
                    list.retain(|c| c.pid != self.pid);
                }
            }
        }
        Ok(*code)
    }

    /// Waits up to `timeout` (`None`: forever) for the child to exit; its exit code, or `None`
    /// if it still runs.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<Option<i32>, Errno> {
        if let Some(code) = self.poll()? {
            return Ok(Some(code));
        }
        if !sys::wait_readable(&self.pidfd, timeout)? {
            return Ok(None);
        }
        self.poll()
    }

    /// Whether the child has exited, without reaping it: for polling many at once.
    pub(crate) fn has_exited(&self) -> bool {
        sys::wait_readable(&self.pidfd, Some(Duration::ZERO)).unwrap_or(true)
    }

    /// Has this process's exit watcher advance `sys::exit_word` once the child ends; `false`
    /// if no watcher can run (then a wait must look again now and then).
    pub(crate) fn watch_exit(&self) -> bool {
        sys::watch_exit(&self.pidfd, &self.watched)
    }

    /// As [`has_exited`](Self::has_exited), for a wait whose exit watcher watches this child
    /// ([`watch_exit`](Self::watch_exit) said so) and that read the exit word as `exits` before
    /// this look: while the word still reads as when the child was last found running, the
    /// child cannot have been reported ended, and the system call is skipped. An end that the
    /// watcher has not reported yet is missed, but its report changes the word, which the
    /// wait sleeps on.
    pub(crate) fn has_exited_since(&self, exits: u32) -> bool {
        let mark = 1 << 32 | u64::from(exits);
        if self.running_at.load(Ordering::Acquire) == mark {
            return false;
        }
        let ended = self.has_exited();
        if !ended {
            self.running_at.store(mark, Ordering::Release);
        }
        ended
    }

    pub(crate) fn signal(&self, sig: i32) -> Result<(), Errno> {
        if self.poll()?.is_some() {
            return Ok(()); // already gone: nothing to signal (and its pid may be reused)
        }
        match sys::pidfd_signal(&self.pidfd, sig) {
            Err(e) if e == Errno::SRCH => Ok(()), // exited meanwhile
            r => r,
        }
    }

    /// Leaves the child to a reaper thread, if it still runs.
    fn detach(self: Arc<Self>) {
        if !matches!(self.poll(), Ok(None)) {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("multiproc-reaper".into())
            .stack_size(64 << 10)
            .spawn(move || {
                let _ = self.wait(None);
            });
        // Without a thread, the registry keeps it: `active_children` reaps it later.
        drop(spawned);
    }
}

/// A child process: Python's `multiprocessing.Process`, started.
///
/// `R` is what the child's function returns; [`join`](Self::join) hands it over. Dropping a
/// `Process` whose child still runs leaves the child running (like dropping a thread's
/// `JoinHandle`) and has it reaped when it exits. A daemon child is killed when this process
/// dies, however it dies.
///
/// ```
/// use multiproc::Process;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> Result<(), multiproc::ProcessError> {
/// let child = Process::spawn(square, 12)?;
/// assert_eq!(child.join()?, 144);
///
/// let child = Process::fork(|| std::process::id())?;
/// let pid = child.pid();
/// assert_eq!(child.join()?, pid);
/// # Ok(()) }
/// ```
pub struct Process<R = ()> {
    child: Arc<Child>,
    daemon: bool,
    /// The child's result queue (and, while a spawned child starts, its start queue).
    up: BytesRx,
    /// The outcome, if it arrived while we waited for something else.
    outcome: Option<Vec<u8>>,
    /// Whether `join_timeout` has handed over the result.
    joined: bool,
    _down: Option<BytesTx>,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.child.pid)
            .field("name", &self.child.name)
            .field("daemon", &self.daemon)
            .finish()
    }
}

/// Configures a child before starting it: name, daemon flag, start method, environment.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    method: StartMethod,
    env: Vec<(OsString, Option<OsString>)>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Builder {
    /// The child's name (default `Process-N`, N counting the children this process started).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon child is killed (SIGKILL) as soon as this process dies, even by SIGKILL.
    /// Default `false`: the child outlives its parent.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// How [`spawn`](Self::spawn) starts the child (default [`StartMethod::Spawn`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = method;
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    fn setup(&self) -> ChildSetup {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
        ChildSetup {
            name: self.name.clone().unwrap_or_else(|| format!("Process-{n}")),
            parent: current_process(),
            daemon: self.daemon,
            from_main_thread: sys::current_tid() == sys::current_pid(),
        }
    }

    /// Starts a child that runs `f(arg)` with the configured start method, and hands back
    /// what `f` returns.
    ///
    /// `f` is a function pointer: a `fn` item, or a closure that captures nothing (a closure
    /// that captures a variable does not compile here). Everything it needs travels in `arg`,
    /// serialised. Handles of shared objects (a [`Queue`]'s, a [`Lock`](crate::Lock)'s) can
    /// be part of `arg`; memfd-backed ones are handed down with their descriptors. `arg` is
    /// a value of `f`'s argument type `A` or a borrowed form of it (see [`EncodesAs`]): a
    /// `&A`, a `&str` for a `String`, a `&[T]` for a `Vec<T>`.
    ///
    /// If [`set_child_init`] named a function, the child runs it first.
    ///
    /// # Errors
    /// A [`ProcessError`] if the child cannot be started.
    pub fn spawn<A, R, X>(self, f: fn(A) -> R, arg: X) -> Result<Process<R>, ProcessError>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        X: EncodesAs<A>,
    {
        match self.method {
            StartMethod::Spawn => self.spawn_fn(f, arg),
            StartMethod::Fork => self.fork(move || f(arg.into_arg())),
        }
    }

    /// The former name of [`spawn`](Self::spawn).
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn).
    #[deprecated(since = "0.2.0", note = "renamed to `spawn`, as in `Process::spawn`")]
    pub fn start<A, R>(self, f: fn(A) -> R, arg: A) -> Result<Process<R>, ProcessError>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.spawn(f, arg)
    }

    fn spawn_fn<A, R, X>(self, f: fn(A) -> R, arg: X) -> Result<Process<R>, ProcessError>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        X: EncodesAs<A>,
    {
        if !boot::hook_ran() {
            return Err(ProcessError::NoStartupHook);
        }
        let (encoded, collected) = collecting(|| postcard::to_allocvec(&arg));
        let encoded =
            encoded.map_err(|e| ProcessError::Codec(format!("argument does not encode: {e}")))?;
        let mut keep = collected.fds;
        if encoded.len() > MAX_TRANSFER {
            return Err(ProcessError::TooLarge {
                len: encoded.len(),
                max: MAX_TRANSFER,
            });
        }
        let setup = self.setup();
        let name = setup.name.clone();
        let boot = boot::Boot {
            target: target_for(f),
            init: boot::child_init(),
            arg: encoded,
            fds: keep.clone(),
            me: setup,
        };
        let boot = postcard::to_allocvec(&boot).map_err(|e| ProcessError::Codec(e.to_string()))?;
        let (down_tx, down_rx) = link(2 * (boot.len() + 64))?;
        let (up_tx, up_rx) = link(LINK_BYTES)?;
        down_tx
            .put_bytes(&boot)
            .map_err(|e| ProcessError::Codec(e.to_string()))?;
        let (down_h, up_h) = (down_rx.handle(), up_tx.handle());
        for h in [&down_h, &up_h] {
            if let crate::segment::Location::Fd(fd) = h.location() {
                keep.push(*fd);
            }
        }
        // The control socket gets the registry (with `boot.target`) before the child starts.
        let (control, theirs) = boot::Listeners::lock().add_child()?;
        let control_fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
        keep.push(control_fd);
        let mut envp = self.environment(Some(boot::env_value(&down_h, &up_h, control_fd)))?;
        // The child shares our name tracker (it starts none of its own).
        if let Some(fd) = crate::segment::tracker::inheritable() {
            keep.push(fd);
            envp.push(sys::cstring(format!(
                "{}={fd}",
                crate::segment::tracker::INHERIT_ENV
            ))?);
        }
        let argv0 = std::env::args_os()
            .next()
            .unwrap_or_else(|| OsString::from("multiproc-child"));
        let argv = [
            sys::cstring(std::os::unix::ffi::OsStrExt::as_bytes(argv0.as_os_str()))?,
            sys::cstring(format!("--multiproc-spawned={name}"))?,
        ];
        let pid = sys::spawn_self(&argv, &envp, &keep)?;
        drop(theirs);
        let child = Child::new(pid, name, control)?;
        // The child attaches its own ends; ours of its ends go once it has (the rings keep
        // the start message and the result whatever the order).
        drop((down_rx, up_tx));
        let mut process = Process {
            child,
            daemon: self.daemon,
            up: up_rx,
            outcome: None,
            joined: false,
            _down: Some(down_tx),
            _r: PhantomData,
        };
        if collected.objects {
            // `arg` holds live objects (a queue's sender, say). Keep ours attached until the
            // child has attached its own: otherwise a receiver here could see the queue
            // without senders in between and report it disconnected.
            process.await_attached();
        }
        drop(arg);
        Ok(process)
    }

    /// The child's environment: ours, with the builder's changes and, for a spawned child,
    /// [`boot::ENV`] set to `spawn`.
    fn environment(&self, spawn: Option<String>) -> Result<Vec<std::ffi::CString>, Errno> {
        use std::os::unix::ffi::OsStrExt;
        let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| {
                k != boot::ENV
                    && k != crate::segment::tracker::INHERIT_ENV
                    && k != crate::segment::tracker::SERVE_ENV
            })
            .collect();
        for (k, v) in &self.env {
            vars.retain(|(key, _)| key != k);
            if let Some(v) = v {
                vars.push((k.clone(), v.clone()));
            }
        }
        if let Some(spawn) = spawn {
            vars.push((boot::ENV.into(), spawn.into()));
        }
        vars.iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                sys::cstring(kv)
            })
            .collect()
    }

    /// Starts a child by `fork` that runs `body` and hands back what it returns.
    ///
    /// Handles the closure captures are inherited and ready to use in the child. If
    /// [`set_child_init`] named a function, the child runs it before `body`.
    ///
    /// # Forking a multi-threaded process
    ///
    /// The child has one thread, a copy of the one that called `fork`. A lock another thread
    /// of ours held at that moment stays held in the child for good, so `body` blocks forever
    /// if it takes it (a `Mutex` of yours, a logger's); see [`StartMethod::Fork`]. This is why
    /// `fork` is nonetheless a safe function: such a lock only ever refuses access, it never
    /// grants it to two parties, so the hazard is a hang, not undefined behaviour. The rest
    /// is taken care of here: the C library keeps its allocator usable in the child, this
    /// function holds Rust's `stdout` and `stderr` and its own locks across the `fork`,
    /// prepares the child's environment beforehand, and ends the child with `_exit` once
    /// `body` returns or panics, so the child never runs on into code of the parent's.
    ///
    /// # Errors
    /// A [`ProcessError`] if the child cannot be started.
    pub fn fork<G, R>(self, body: G) -> Result<Process<R>, ProcessError>
    where
        G: FnOnce() -> R,
        R: Serialize + DeserializeOwned,
    {
        let setup = self.setup();
        let name = setup.name.clone();
        // An anonymous shared mapping: the child inherits it, and it costs fewer system
        // calls than a memfd.
        let (up_tx, up_rx) = Queue::<u8>::builder()
            .codec::<crate::Plain>()
            .capacity(4)
            .max_bytes(LINK_BYTES)
            .anonymous()
            .create()?
            .split()?;
        // The child's environment is made here: in the child, `set_var` would take a lock
        // that another thread of ours may hold at the fork.
        let env = if self.env.is_empty() {
            None
        } else {
            Some(sys::Environment::new(self.environment(None)?))
        };
        // Hold the list of control sockets across the fork, so the child's copy is not left
        // locked by another thread of ours; the new child's socket joins it first.
        let mut listeners = boot::Listeners::lock_for_fork();
        let (control, theirs) = listeners.add_child()?;
        // Hold stdout and stderr across the fork (as fork handlers do with libc's locks), so
        // the child's copies are not left locked by another thread of ours, and flush them.
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        {
            use std::io::Write;
            let _ = out.flush();
            let _ = err.flush();
        }
        // SAFETY: `sys::fork`'s contract: the child never returns from this function, it
        // leaves through `finish`, which ends in `exit_now` (and `body` runs under
        // `catch_unwind`, so a panic does not unwind past it). What else the child may meet,
        // locks that threads which do not exist there held at the fork, can make it block
        // but not read or write anything it should not: see "Forking a multi-threaded
        // process" on `Builder::fork`.
        let forked = unsafe { sys::fork() };
        drop((out, err));
        match forked? {
            Forked::Child => {
                drop(control);
                listeners.become_forked_child(theirs);
                become_child(&setup);
                if let Some(env) = env {
                    // SAFETY: a forked child has a single thread.
                    unsafe { sys::install_environment(env) };
                }
                // Not dropped: dropping takes a process-local lock that another parent thread
                // may have held at the fork. Our `_exit` ends the handle anyway.
                std::mem::forget(up_rx);
                if let Some(init) = boot::child_init() {
                    if let Err(m) = boot::run_child_init(init) {
                        finish(&up_tx, Outcome::Failed(m))
                    }
                }
                let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                    Ok(r) => match postcard::to_allocvec(&r) {
                        Ok(bytes) => Outcome::Returned(bytes),
                        Err(e) => Outcome::Failed(format!("result does not encode: {e}")),
                    },
                    Err(p) => Outcome::Panicked(boot::panic_message(p.as_ref())),
                };
                finish(&up_tx, outcome)
            }
            Forked::Parent(pid) => {
                drop((listeners, theirs, up_tx));
                Ok(Process {
                    child: Child::new(pid, name, control)?,
                    daemon: self.daemon,
                    up: up_rx,
                    outcome: None,
                    joined: false,
                    _down: None,
                    _r: PhantomData,
                })
            }
        }
    }
}

/// A byte queue of `bytes` (rounded up to a power of two) between a parent and a child, for a
/// few messages of up to half that.
fn link(bytes: usize) -> Result<(BytesTx, BytesRx), OpenError> {
    Queue::<u8>::builder()
        .codec::<crate::Plain>()
        .capacity(4)
        .max_bytes(bytes)
        .create()?
        .split()
}

impl Process<()> {
    /// A builder for a child with a name, daemon flag, start method or environment.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<R: Serialize + DeserializeOwned> Process<R> {
    /// Starts a child that runs `f(arg)` by re-executing this executable
    /// ([`StartMethod::Spawn`]); see [`Builder::spawn`].
    ///
    /// `f` is a `fn` item or a closure that captures nothing; `arg` is a value of its
    /// argument type or a borrowed form of it ([`EncodesAs`]: `&A`, a `&str` for a `String`,
    /// a `&[T]` for a `Vec<T>`).
    ///
    /// # Errors
    /// A [`ProcessError`] if the child cannot be started.
    pub fn spawn<A, X>(f: fn(A) -> R, arg: X) -> Result<Self, ProcessError>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: 'static,
        X: EncodesAs<A>,
    {
        Builder::default().spawn(f, arg)
    }

    /// Starts a child by `fork` that runs `body` ([`StartMethod::Fork`]); see
    /// [`Builder::fork`].
    ///
    /// # Errors
    /// A [`ProcessError`] if the child cannot be started.
    pub fn fork<G: FnOnce() -> R>(body: G) -> Result<Self, ProcessError> {
        Builder::default().fork(body)
    }

    /// Waits for the child to exit and hands back what its function returned.
    ///
    /// # Errors
    /// [`ProcessError::Panicked`] with the panic message, [`ProcessError::Killed`] if a signal
    /// ended it first, [`ProcessError::Exited`] if it exited without a result.
    pub fn join(mut self) -> Result<R, ProcessError> {
        if self.joined {
            return Err(ProcessError::AlreadyJoined);
        }
        let code = self.wait()?;
        self.joined = true;
        self.result(code)
    }

    /// Waits at most `timeout` for the child to exit, and then hands back what its function
    /// returned, as [`join`](Self::join) does; `Ok(None)` if it still runs (it is left
    /// alone, and can be joined later). Once this has handed over the result (or the error
    /// that ended the child), later joins give [`ProcessError::AlreadyJoined`];
    /// [`exitcode`](Self::exitcode) still tells how it ended.
    ///
    /// # Errors
    /// As [`join`](Self::join), and [`ProcessError::Os`] if waiting fails.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<R>, ProcessError> {
        if self.joined {
            return Err(ProcessError::AlreadyJoined);
        }
        let Some(code) = self.child.wait(Some(timeout))? else {
            return Ok(None);
        };
        self.joined = true;
        self.result(code).map(Some)
    }

    /// The child's result, once it has exited with `code`.
    fn result(&mut self, code: i32) -> Result<R, ProcessError> {
        let bytes = match self.outcome.take() {
            Some(b) => Some(b),
            None => self.next_message(Duration::ZERO),
        };
        let outcome = match bytes {
            Some(bytes) => postcard::from_bytes::<Outcome>(&bytes)
                .map_err(|e| ProcessError::Codec(format!("bad result message: {e}")))?,
            None if code < 0 => return Err(ProcessError::Killed(-code)),
            None => return Err(ProcessError::Exited(code)),
        };
        match outcome {
            Outcome::Returned(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| ProcessError::Codec(format!("result does not decode: {e}"))),
            Outcome::Panicked(msg) => Err(ProcessError::Panicked(msg)),
            Outcome::Failed(msg) => Err(ProcessError::Failed(msg)),
        }
    }
}

impl<R> Process<R> {
    /// The next message from the child other than its "attached" note, waiting up to
    /// `timeout`.
    fn next_message(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = crate::sync::wait::deadline_after(timeout);
        loop {
            let left = match crate::sync::wait::remaining(deadline) {
                Some(left) => left.unwrap_or(Duration::MAX),
                None => Duration::ZERO, // one last look
            };
            match self.up.get_bytes_timeout(left) {
                Ok(b) if b.is_empty() => {}
                Ok(b) => return Some(b),
                Err(_) => return None,
            }
        }
    }

    /// Waits until the child has decoded its argument (attaching the objects in it), has
    /// exited, or a generous time has passed.
    fn await_attached(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match self.up.get_bytes_timeout(Duration::from_millis(20)) {
                Ok(b) if b.is_empty() => return,
                Ok(b) => {
                    self.outcome = Some(b);
                    return;
                }
                Err(_) => {
                    if self.child.has_exited() {
                        return;
                    }
                }
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.child.name
    }

    /// Python's `sentinel`: a handle that [`wait`](crate::wait()) reports as ready once the
    /// child has ended (exited, or been killed), alongside queues, connections and events. It
    /// keeps the child's pidfd open, not the child: it stays valid after this `Process` is
    /// dropped or joined, and stays ready once the child has ended.
    ///
    /// A `&Process` can be passed to `wait` directly as well; the sentinel is for when the
    /// `Process` itself must go elsewhere (be joined, moved into another thread).
    pub fn sentinel(&self) -> Sentinel {
        Sentinel {
            child: self.child.clone(),
        }
    }

    /// Whether the child dies with this process.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Whether the child is still running (reaping it if it has exited).
    pub fn is_alive(&self) -> bool {
        matches!(self.child.poll(), Ok(None))
    }

    /// Python's `exitcode`: `None` while the child runs, then its exit code, or minus the
    /// number of the signal that killed it.
    pub fn exitcode(&self) -> Option<i32> {
        self.child.poll().ok().flatten()
    }

    /// Waits for the child to exit; its exit code (Python's `join()` then `exitcode`).
    ///
    /// # Errors
    /// The `waitpid` error, if any.
    pub fn wait(&self) -> Result<i32, ProcessError> {
        Ok(self.child.wait(None)?.unwrap_or(0))
    }

    /// Sends SIGTERM (Python's `terminate`). Nothing happens if the child has exited.
    ///
    /// # Errors
    /// The system error, if the signal could not be sent.
    pub fn terminate(&self) -> Result<(), Errno> {
        self.child.signal(sys::SIGTERM)
    }

    /// Sends SIGKILL. Nothing happens if the child has exited.
    ///
    /// # Errors
    /// The system error, if the signal could not be sent.
    pub fn kill(&self) -> Result<(), Errno> {
        self.child.signal(sys::SIGKILL)
    }
}

/// A child's end, to wait for with [`wait`](crate::wait()) among other objects: see
/// [`Process::sentinel`].
#[derive(Clone)]
pub struct Sentinel {
    child: Arc<Child>,
}

impl Sentinel {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid
    }

    /// Whether the child has ended (without waiting and without reaping it).
    pub fn is_ready(&self) -> bool {
        self.child.has_exited()
    }

    pub(crate) fn child(&self) -> &Child {
        &self.child
    }
}

impl std::fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("pid", &self.child.pid)
            .finish()
    }
}

impl<R> Process<R> {
    pub(crate) fn child(&self) -> &Child {
        &self.child
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        self.child.clone().detach();
    }
}
