//! Helpers for cross-process tests.
//!
//! A cross-process test re-runs its own test binary with `--exact <test name>` and the
//! environment variable `MULTIPROC_TEST_ROLE` set; the test function checks [`role`] first and,
//! in a child, plays its part and returns. No `fork` inside the threaded test harness.
#![allow(dead_code)]

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub(crate) const ROLE_VAR: &str = "MULTIPROC_TEST_ROLE";

/// The role this process plays, if it is a child started by [`spawn`].
pub(crate) fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// An environment variable the parent passed to the child.
pub(crate) fn arg(key: &str) -> String {
    std::env::var(format!("MULTIPROC_TEST_{key}")).unwrap_or_else(|_| panic!("missing {key}"))
}

/// A segment name unique to this process and call: `mpt-<pid>-<n>-<tag>`.
pub(crate) fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mpt-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

/// Aborts the whole process if the returned guard is still alive after `limit`: a deadlocked
/// test must fail, not hang the run. Dropping the guard (at the end of the test) disarms it.
#[must_use = "the watchdog is disarmed when the guard drops"]
pub(crate) fn watchdog(limit: Duration, what: &'static str) -> Watchdog {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("watchdog: {what} still running after {limit:?}; aborting");
            std::process::abort();
        }
    });
    Watchdog { _tx: tx }
}

/// Disarms its watchdog when dropped.
pub(crate) struct Watchdog {
    _tx: std::sync::mpsc::Sender<()>,
}

/// Full test path (`module::name`) from `module_path!()` and the function name.
pub(crate) fn test_path(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, rest)) => format!("{rest}::{name}"),
        None => name.to_owned(),
    }
}

/// Starts this test binary again, running only `test` with `role` and the given arguments.
pub(crate) fn spawn(test: &str, role: &str, args: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_VAR, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, v) in args {
        cmd.env(format!("MULTIPROC_TEST_{k}"), v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Waits for `child` for at most `limit`; kills it and panics on timeout.
pub(crate) fn wait_for(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for every child and asserts each exited successfully.
pub(crate) fn join_all(children: Vec<Child>, limit: Duration) {
    for mut c in children {
        let status = wait_for(&mut c, limit);
        assert!(status.success(), "child {} failed: {status}", c.id());
    }
}

/// Kills `child` with SIGKILL and reaps it.
pub(crate) fn kill9(child: &mut Child) {
    child.kill().expect("kill");
    let _ = child.wait();
}

/// Whether a `/dev/shm` entry with this name (with or without leading slash) exists.
pub(crate) fn shm_exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm")
        .join(name.trim_start_matches('/'))
        .exists()
}

/// Polls `cond` until true or `limit` passes.
pub(crate) fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Declares a test that can also run as a child. Inside, `role()` tells which side we are.
#[macro_export]
macro_rules! this_test {
    ($name:ident) => {
        $crate::common::test_path(module_path!(), stringify!($name))
    };
}

/// Opens the shared counter `name` (a named `RawValue<AtomicU64>`).
pub(crate) fn counter(name: &str) -> multiproc::RawValue<std::sync::atomic::AtomicU64> {
    multiproc::RawValue::open(name).expect("open counter")
}

/// Creates a named shared counter; returns it and its name for the children.
pub(crate) fn new_counter(
    tag: &str,
) -> (multiproc::RawValue<std::sync::atomic::AtomicU64>, String) {
    let name = unique_name(tag);
    let c = multiproc::RawValue::<std::sync::atomic::AtomicU64>::builder()
        .name(&name)
        .create()
        .expect("create counter");
    (c, name)
}

/// What the tests read from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) state: char,
    pub(crate) ppid: u32,
    /// Start time in clock ticks since boot: tells a reused pid from the process we meant.
    pub(crate) start: u64,
}

/// The stat of `pid`, if it has a `/proc` entry (running, or a zombie).
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain anything, spaces and parentheses included: skip past it.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(Stat {
        state: fields[0].chars().next()?,
        ppid: fields[1].parse().ok()?,
        start: fields[19].parse().ok()?,
    })
}

/// A process, as one incarnation of its pid (pids are reused: `pid_max` may be small).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ident {
    pub(crate) pid: u32,
    pub(crate) start: u64,
}

impl Ident {
    /// `pid`, which must not have been reaped yet.
    pub(crate) fn of(pid: u32) -> Self {
        let s = stat(pid).unwrap_or_else(|| panic!("no /proc/{pid}/stat: already gone"));
        Self {
            pid,
            start: s.start,
        }
    }

    /// Our incarnation's stat, if it still has a `/proc` entry (running, or a zombie).
    pub(crate) fn stat(&self) -> Option<Stat> {
        stat(self.pid).filter(|s| s.start == self.start)
    }

    /// Exists and has not exited (not a zombie).
    pub(crate) fn running(&self) -> bool {
        self.stat().is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
    }

    /// Has exited (zombie) or is gone.
    pub(crate) fn exited(&self) -> bool {
        !self.running()
    }

    /// Exited and reaped: no `/proc` entry any more, not even a zombie's.
    pub(crate) fn reaped(&self) -> bool {
        self.stat().is_none()
    }
}
