//! `Process` with real processes, under both start methods: results, panics, exit codes and
//! signals; `join_timeout`; names, parents and environment; shared objects handed to a child;
//! daemon children dying with their parent (and others not); reaping (no zombies) and
//! `active_children`.
//!
//! A spawned child re-executes this test binary and is intercepted by the start-up hook before
//! the harness's `main`, so no test role is needed here. Forked children run inside the
//! threaded harness: they only touch what the test thread set up, and leave through the crate.
#![cfg(feature = "serde")]
#![allow(unsafe_code)] // kill, prctl, waitpid, an .init_array entry: see the SAFETY comments

#[path = "../common/mod.rs"]
mod common;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Ident, eventually, unique_name, watchdog};
use multiproc::{
    Connection, ConnectionHandle, GetTimeoutError, Handle, Lock, Process, ProcessError,
    ProcessInfo, Queue, Receiver, Sender, SharedObject, StartMethod, TryGetError, Value,
    active_children, cpu_count, current_process, parent_process, pipe,
};
use serde::{Deserialize, Serialize};

/// Watchdog for a whole test.
const LIMIT: Duration = Duration::from_secs(60);
/// How long a test waits for a child to start and report.
const START: Duration = Duration::from_secs(20);
/// A daemon child must be gone this soon after its parent was killed.
const NOTICE: Duration = Duration::from_secs(1);
/// How long sleeping children sleep at most: they are killed long before, and a test that
/// fails half-way leaves nothing running for longer.
const NAP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A sender/receiver pair on a fresh (memfd) queue.
fn channel() -> (Sender<u32>, Receiver<u32>) {
    Queue::<u32>::builder()
        .create()
        .expect("create queue")
        .split()
        .expect("split queue")
}

/// SIGKILLs every process it watches when dropped, so a failing test leaves nothing running.
/// Works through pidfds, so a pid reused meanwhile is never hit.
#[derive(Default)]
struct KillOnDrop {
    pidfds: Vec<OwnedFd>,
}

impl KillOnDrop {
    /// Watches `pid`, which must not have been reaped yet.
    fn watch(&mut self, pid: u32) {
        let raw = rustix::process::Pid::from_raw(pid as i32).expect("nonzero pid");
        let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
            .unwrap_or_else(|e| panic!("pidfd_open({pid}): {e}"));
        self.pidfds.push(fd);
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for fd in &self.pidfds {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        }
    }
}

/// Sends SIGKILL to `pid` the plain way, as a user or the OOM killer would.
fn sigkill(pid: u32) {
    // SAFETY: kill(2) has no memory preconditions; `pid` is our own unreaped child.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill({pid}): {}", std::io::Error::last_os_error());
}

/// Whether `r` is `Err(Panicked(msg))`.
fn panicked_with<R>(r: &Result<R, ProcessError>, msg: &str) -> bool {
    matches!(r, Err(ProcessError::Panicked(m)) if m == msg)
}

// ---------------------------------------------------------------------------------------------
// Child functions for `spawn` (fn items: everything they need travels in the argument)

fn square(x: u64) -> u64 {
    x * x
}

fn describe(words: Vec<String>) -> (usize, String) {
    (words.len(), words.join("+"))
}

/// Panics with `boom <n>`, quietly: the parent checks the message it gets back.
fn panic_quietly(n: u32) -> u32 {
    std::panic::set_hook(Box::new(|_| {}));
    panic!("boom {n}");
}

fn exit_with(code: i32) -> u32 {
    std::process::exit(code)
}

/// Says "ready" (with its pid) on the queue, then sleeps until killed.
fn report_then_sleep(report: Handle) {
    let tx = Sender::<u32>::from_handle(&report).expect("report queue");
    tx.put(std::process::id()).expect("report");
    std::thread::sleep(NAP);
}

/// Waits for the go on the queue, then returns it.
fn wait_for_go(go: Handle) -> u32 {
    let rx = Receiver::<u32>::from_handle(&go).expect("go queue");
    rx.get_timeout(NAP).expect("the go")
}

fn whoami(_: ()) -> (ProcessInfo, Option<ProcessInfo>) {
    (current_process(), parent_process())
}

fn env_of(keys: Vec<String>) -> Vec<Option<String>> {
    keys.iter().map(|k| std::env::var(k).ok()).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Results, panics, exit codes, signals

#[test]
fn spawn_returns_the_functions_result() {
    let _watchdog = watchdog(LIMIT, "spawn result");
    let p = Process::spawn(square, 12).unwrap();
    assert_ne!(p.pid(), std::process::id());
    assert!(!p.is_daemon());
    assert_eq!(p.join().unwrap(), 144);

    let words = vec!["a".to_owned(), "bc".to_owned(), String::new()];
    let p = Process::spawn(describe, words).unwrap();
    assert_eq!(p.join().unwrap(), (3, "a+bc+".to_owned()));

    // A closure that captures nothing is fine too.
    let p = Process::spawn(|v: Vec<u32>| v.iter().sum::<u32>(), vec![1, 2, 3, 4]).unwrap();
    assert_eq!(p.wait().unwrap(), 0);
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert_eq!(p.join().unwrap(), 10);
}

#[test]
fn fork_returns_the_closures_result() {
    let _watchdog = watchdog(LIMIT, "fork result");
    let base: Vec<u64> = (1..=3).map(|i| i * 10).collect();
    // Borrowed, not moved: the child has its own copy of our memory.
    let p = Process::fork(|| (base.iter().sum::<u64>(), std::process::id())).unwrap();
    let pid = p.pid();
    assert_ne!(pid, std::process::id());
    assert_eq!(p.join().unwrap(), (60, pid));

    let p = Process::builder()
        .start_method(StartMethod::Fork)
        .spawn(square, 9)
        .unwrap();
    assert_eq!(p.join().unwrap(), 81);

    let p = Process::fork(|| ()).unwrap();
    assert_eq!(p.wait().unwrap(), 0);
    assert_eq!(p.exitcode(), Some(0));
    p.join().unwrap();
}

#[test]
fn a_child_panic_reaches_the_parent_with_its_message() {
    let _watchdog = watchdog(LIMIT, "panic");
    let p = Process::spawn(panic_quietly, 7).unwrap();
    assert_eq!(p.wait().unwrap(), 1);
    assert_eq!(p.exitcode(), Some(1));
    let r = p.join();
    assert!(panicked_with(&r, "boom 7"), "{r:?}");

    let n = 8;
    // (The panic message goes to this test's captured output.)
    let p = Process::fork(move || -> u32 { panic!("boom {n}") }).unwrap();
    assert_eq!(p.wait().unwrap(), 1);
    let r = p.join();
    assert!(panicked_with(&r, "boom 8"), "{r:?}");

    let p = Process::builder()
        .start_method(StartMethod::Fork)
        .spawn(panic_quietly, 9)
        .unwrap();
    let r = p.join();
    assert!(panicked_with(&r, "boom 9"), "{r:?}");
}

#[test]
fn exit_codes_of_children_that_call_exit() {
    let _watchdog = watchdog(LIMIT, "exit codes");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        for code in [3, 0, 255] {
            let p = Process::builder()
                .start_method(method)
                .spawn(exit_with, code)
                .unwrap();
            assert_eq!(p.wait().unwrap(), code, "{method:?}");
            assert_eq!(p.exitcode(), Some(code));
            assert!(!p.is_alive());
            let r = p.join();
            assert!(
                matches!(r, Err(ProcessError::Exited(c)) if c == code),
                "{method:?} exit({code}): {r:?}"
            );
        }
    }
    let p = Process::fork(|| -> u32 { std::process::exit(42) }).unwrap();
    let r = p.join();
    assert!(matches!(r, Err(ProcessError::Exited(42))), "{r:?}");
}

/// Starts a child that reports its pid and sleeps; returns it once it has reported.
fn sleeping_child(method: StartMethod) -> Process<()> {
    let (tx, rx) = channel();
    let p = match method {
        StartMethod::Spawn => Process::spawn(report_then_sleep, tx.handle()).unwrap(),
        StartMethod::Fork => Process::fork(|| {
            tx.put(std::process::id()).unwrap();
            std::thread::sleep(NAP);
        })
        .unwrap(),
    };
    assert_eq!(
        rx.get_timeout(START),
        Ok(p.pid()),
        "{method:?} child report"
    );
    p
}

#[test]
fn kill_and_terminate_give_minus_the_signal() {
    let _watchdog = watchdog(LIMIT, "kill and terminate");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let p = sleeping_child(method);
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        p.kill().unwrap();
        assert_eq!(p.wait().unwrap(), -9, "{method:?}");
        assert_eq!(p.exitcode(), Some(-9));
        assert!(!p.is_alive());
        // Signalling a child that is gone does nothing.
        p.kill().unwrap();
        p.terminate().unwrap();
        let r = p.join();
        assert!(
            matches!(r, Err(ProcessError::Killed(9))),
            "{method:?}: {r:?}"
        );

        let p = sleeping_child(method);
        p.terminate().unwrap();
        assert_eq!(p.wait().unwrap(), -15, "{method:?}");
        assert_eq!(p.exitcode(), Some(-15));
        let r = p.join();
        assert!(
            matches!(r, Err(ProcessError::Killed(15))),
            "{method:?}: {r:?}"
        );
    }
}

fn work(x: u64) -> u64 {
    x + 1
}

/// Issue 11: the function is a function pointer; the common calls still infer their types (an
/// integer literal as the argument of a `fn` item, a non-capturing closure), under both start
/// methods and through the builder.
#[test]
fn issue_11_function_pointers_infer_and_run() {
    let _watchdog = watchdog(LIMIT, "issue 11: inference");
    assert_eq!(Process::spawn(work, 5).unwrap().join().unwrap(), 6);
    assert_eq!(
        Process::spawn(|x: u64| x * 2, 21).unwrap().join().unwrap(),
        42
    );
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let p = Process::builder()
            .start_method(method)
            .spawn(work, 41)
            .unwrap();
        assert_eq!(p.join().unwrap(), 42, "{method:?}");
    }
    // The former name still works.
    #[allow(deprecated)]
    let p = Process::builder().start(work, 1).unwrap();
    assert_eq!(p.join().unwrap(), 2);
}

fn shout(text: String) -> String {
    text.to_uppercase()
}

fn put_seven(tx: Sender<u32>) {
    tx.put(7).expect("put");
}

/// Issue 11: a borrowed form of the argument type can be passed (`&str` for `String`, `&[T]`
/// and `&Vec<T>` for `Vec<T>`, `&A` for `A`), under both start methods; the child gets the
/// owned value.
#[test]
fn issue_11_borrowed_arguments_reach_the_child_as_owned_values() {
    let _watchdog = watchdog(LIMIT, "issue 11: borrowed arguments");
    let words: Vec<String> = vec!["to".into(), "be".into(), "or".into()];
    let text = String::from("grüße");
    let (tx, rx) = channel();
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let b = || Process::builder().start_method(method);
        let want = (3, "to+be+or".to_string());
        assert_eq!(
            b().spawn(describe, &words[..]).unwrap().join().unwrap(),
            want
        );
        assert_eq!(b().spawn(describe, &words).unwrap().join().unwrap(), want);
        let upper = "GRÜSSE".to_string();
        assert_eq!(
            b().spawn(shout, text.as_str()).unwrap().join().unwrap(),
            upper
        );
        assert_eq!(b().spawn(shout, &text).unwrap().join().unwrap(), upper);
        assert_eq!(b().spawn(shout, "abc").unwrap().join().unwrap(), "ABC");
        // A shared object, lent: the child attaches its own copy.
        b().spawn(put_seven, &tx).unwrap().join().unwrap();
        assert_eq!(rx.get_timeout(START).unwrap(), 7, "{method:?}");
    }
    assert_eq!(
        Process::spawn(describe, &words[1..])
            .unwrap()
            .join()
            .unwrap(),
        (2, "be+or".to_string())
    );
}

// ---------------------------------------------------------------------------------------------
// 2. join_timeout

#[test]
fn join_timeout_on_a_running_child_times_out_and_leaves_it_running() {
    let _watchdog = watchdog(LIMIT, "join_timeout");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let mut p = sleeping_child(method);
        let id = Ident::of(p.pid());
        let timeout = Duration::from_millis(150);
        let t = Instant::now();
        assert!(
            matches!(p.join_timeout(timeout), Ok(None)),
            "{method:?}: still running"
        );
        let took = t.elapsed();
        assert!(took >= timeout, "{method:?}: returned after {took:?}");
        assert!(took < timeout + Duration::from_secs(10), "took {took:?}");
        // Left alone: still running, still ours.
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        assert!(id.running());
        assert_eq!(id.stat().unwrap().ppid, std::process::id());
        p.kill().unwrap();
        let r = p.join_timeout(START);
        assert!(
            matches!(r, Err(ProcessError::Killed(9))),
            "{method:?}: {r:?}"
        );
        assert_eq!(p.exitcode(), Some(-9));
        assert!(id.reaped());
    }
    // Issue 11: on a child that ends within the timeout, the result, as `join` gives it; once
    // handed over, it is not handed over again.
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let mut p = Process::builder()
            .start_method(method)
            .spawn(square, 3)
            .unwrap();
        let r = p.join_timeout(START);
        assert!(matches!(r, Ok(Some(9))), "{method:?}: {r:?}");
        assert_eq!(p.exitcode(), Some(0));
        let again = p.join_timeout(Duration::ZERO);
        assert!(
            matches!(again, Err(ProcessError::AlreadyJoined)),
            "{method:?}: {again:?}"
        );
        assert!(matches!(p.join(), Err(ProcessError::AlreadyJoined)));
    }
    // A child that panics: its panic, as `join` gives it.
    let mut p = Process::spawn(panic_quietly, 9).unwrap();
    let r = p.join_timeout(START);
    assert!(panicked_with(&r, "boom 9"), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Names, parents, environment

#[test]
fn the_test_process_is_the_main_process_without_a_parent() {
    assert_eq!(
        current_process(),
        ProcessInfo {
            pid: std::process::id(),
            name: "MainProcess".into(),
        }
    );
    assert_eq!(parent_process(), None);
}

#[test]
fn a_child_knows_its_name_and_its_parent() {
    let _watchdog = watchdog(LIMIT, "names");
    let me = ProcessInfo {
        pid: std::process::id(),
        name: "MainProcess".into(),
    };
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let name = unique_name("worker");
        let p = Process::builder()
            .name(&name)
            .start_method(method)
            .spawn(whoami, ())
            .unwrap();
        assert_eq!(p.name(), name);
        let pid = p.pid();
        let (child, parent) = p.join().unwrap();
        assert_eq!(child, ProcessInfo { pid, name });
        assert_eq!(parent, Some(me.clone()), "{method:?}");
    }
    // Forked through `Process::fork`, with the default name `Process-N`.
    let p = Process::fork(|| (current_process(), parent_process())).unwrap();
    let (pid, name) = (p.pid(), p.name().to_owned());
    assert!(
        name.strip_prefix("Process-")
            .is_some_and(|n| n.parse::<u64>().is_ok()),
        "default name {name:?}"
    );
    assert_eq!(p.join().unwrap(), (ProcessInfo { pid, name }, Some(me)));
    // In the parent nothing changed.
    assert_eq!(current_process().name, "MainProcess");
    assert_eq!(parent_process(), None);
}

/// Child: starts a grandchild named "inner" with `method` and returns what it sees.
fn start_inner(fork: bool) -> (ProcessInfo, Option<ProcessInfo>) {
    let method = if fork {
        StartMethod::Fork
    } else {
        StartMethod::Spawn
    };
    Process::builder()
        .name("inner")
        .start_method(method)
        .spawn(whoami, ())
        .expect("start grandchild")
        .join()
        .expect("grandchild result")
}

#[test]
fn a_grandchilds_parent_is_the_child() {
    let _watchdog = watchdog(LIMIT, "grandchild names");
    for fork in [false, true] {
        let p = Process::builder()
            .name("outer")
            .spawn(start_inner, fork)
            .unwrap();
        let outer = ProcessInfo {
            pid: p.pid(),
            name: "outer".into(),
        };
        let (inner, parent) = p.join().unwrap();
        assert_eq!(inner.name, "inner");
        assert_ne!(inner.pid, outer.pid);
        assert_eq!(parent, Some(outer), "fork: {fork}");
    }
}

/// A variable this test process has (its environment is never changed here: other tests
/// read it concurrently).
fn some_inherited_variable() -> (String, String) {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .find(|(k, _)| !k.starts_with("MPT_") && k != "MULTIPROC_SPAWN")
        .expect("the test process has an environment")
}

#[test]
fn env_and_env_remove_shape_the_childs_environment() {
    let _watchdog = watchdog(LIMIT, "environment");
    let (inherited, value) = some_inherited_variable();
    let keys: Vec<String> = [
        "MPT_PROC_SET",
        "MPT_PROC_SET_THEN_REMOVED",
        "MPT_PROC_REMOVED_THEN_SET",
        "MPT_PROC_OVERWRITTEN",
        inherited.as_str(),
    ]
    .map(String::from)
    .to_vec();
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let builder = || {
            Process::builder()
                .start_method(method)
                .env("MPT_PROC_SET", "yes")
                .env("MPT_PROC_SET_THEN_REMOVED", "1")
                .env_remove("MPT_PROC_SET_THEN_REMOVED")
                .env_remove("MPT_PROC_REMOVED_THEN_SET")
                .env("MPT_PROC_REMOVED_THEN_SET", "2")
                .env("MPT_PROC_OVERWRITTEN", "old")
                .env("MPT_PROC_OVERWRITTEN", "new =x")
        };
        let p = builder().spawn(env_of, keys.clone()).unwrap();
        assert_eq!(
            p.join().unwrap(),
            vec![
                Some("yes".into()),
                None,
                Some("2".into()),
                Some("new =x".into()),
                Some(value.clone()),
            ],
            "{method:?}"
        );
        // Removing a variable this process has.
        let p = builder()
            .env_remove(&inherited)
            .spawn(env_of, keys.clone())
            .unwrap();
        assert_eq!(
            p.join().unwrap()[4],
            None,
            "{method:?}: {inherited} removed"
        );
        // The same through `fork` with a closure.
        if method == StartMethod::Fork {
            let p = builder()
                .env_remove(&inherited)
                .fork(|| env_of(keys.clone()))
                .unwrap();
            assert_eq!(
                p.join().unwrap(),
                vec![
                    Some("yes".into()),
                    None,
                    Some("2".into()),
                    Some("new =x".into()),
                    None,
                ]
            );
        }
    }
    // Our own environment is untouched.
    assert_eq!(std::env::var("MPT_PROC_SET").ok(), None);
    assert_eq!(std::env::var(&inherited).ok(), Some(value));
}

// ---------------------------------------------------------------------------------------------
// 4. Shared objects handed to a child

#[derive(Clone, Serialize, Deserialize)]
struct SharedHandles {
    tx: Handle,
    lock: Handle,
    value: Handle,
    conn: ConnectionHandle,
}

/// The child's part with every object: checks the parent holds the lock and says so (message
/// 1 or 0), waits for the lock, adds 10 to the value the parent set meanwhile, answers the
/// number on the connection times 3, sends 100..110 on the queue. Returns the value it found.
fn use_objects(tx: &Sender<u64>, lock: &Lock, value: &Value<u64>, conn: &Connection<u64>) -> u64 {
    let held = lock.try_lock().is_err();
    tx.put(u64::from(held)).expect("put");
    let _guard = lock.lock().expect("lock");
    let found = value.get();
    value.set(found + 10);
    let n = conn.recv().expect("recv");
    conn.send(n * 3).expect("send");
    for i in 100..110 {
        tx.put(i).expect("put");
    }
    found
}

fn use_handles(h: SharedHandles) -> u64 {
    let tx = Sender::<u64>::from_handle(&h.tx).expect("sender from its handle");
    let lock = Lock::from_handle(&h.lock).expect("lock from its handle");
    let value = Value::<u64>::from_handle(&h.value).expect("value from its handle");
    let conn = Connection::<u64>::from_handle(&h.conn).expect("connection from its handle");
    use_objects(&tx, &lock, &value, &conn)
}

/// The objects themselves, which serialise as their handles.
#[derive(Serialize, Deserialize)]
struct SharedObjects {
    tx: Sender<u64>,
    lock: Lock,
    value: Value<u64>,
    conn: Connection<u64>,
}

fn use_passed(o: SharedObjects) -> u64 {
    use_objects(&o.tx, &o.lock, &o.value, &o.conn)
}

/// What the child gets, by handle or by inheritance.
struct Objects {
    handles: SharedHandles,
    tx: Sender<u64>,
    lock: Lock,
    value: Value<u64>,
    /// The child's end of the pipe.
    conn: Connection<u64>,
}

/// Runs the parent's side against a child started by `start`, which hands the child the
/// objects either as handles or by inheritance.
fn objects_scenario(what: &str, start: impl FnOnce(&Objects) -> Process<u64>) {
    let (tx, rx) = Queue::<u64>::builder().create().unwrap().split().unwrap();
    let lock = Lock::new().unwrap();
    let value = Value::new(0u64).unwrap();
    let (ours, theirs) = pipe::<u64>().unwrap();
    let handles = SharedHandles {
        tx: tx.handle(),
        lock: lock.handle(),
        value: value.handle(),
        conn: theirs.handle(),
    };
    let objects = Objects {
        handles,
        tx,
        lock,
        value,
        conn: theirs,
    };
    let guard = objects.lock.lock().unwrap();
    let p = start(&objects);
    assert_eq!(
        rx.get_timeout(START),
        Ok(1),
        "{what}: the child saw our lock held"
    );
    assert!(p.is_alive(), "{what}: the child waits for the lock");
    objects.value.set(5);
    ours.send(7).unwrap();
    drop(guard);
    assert_eq!(
        p.join().unwrap(),
        5,
        "{what}: the value we set under the lock"
    );
    assert_eq!(objects.value.get(), 15, "{what}");
    assert_eq!(ours.recv_timeout(START), Ok(21), "{what}");
    let got: Vec<u64> = (0..10).map(|_| rx.get_timeout(START).unwrap()).collect();
    assert_eq!(got, (100..110).collect::<Vec<_>>(), "{what}");
    assert!(!objects.lock.is_locked());
    assert!(
        !objects.lock.is_poisoned(),
        "{what}: the child released the lock"
    );
    // Nothing else arrived. (A `try_get` reads the queue as disconnected only once a blocking
    // call has probed the peers: the child left by `_exit`, its handles still counted.)
    assert!(rx.is_empty(), "{what}");
    let rest = rx.try_get();
    assert!(
        matches!(rest, Err(TryGetError::Empty | TryGetError::Disconnected)),
        "{what}: {rest:?}"
    );
    let rest = ours.try_recv();
    assert!(
        matches!(rest, Err(TryGetError::Empty | TryGetError::Disconnected)),
        "{what}: {rest:?}"
    );
}

#[test]
fn handles_passed_to_a_spawned_child_work_there() {
    let _watchdog = watchdog(LIMIT, "handles, spawn");
    objects_scenario("spawn", |o| {
        Process::spawn(use_handles, o.handles.clone()).unwrap()
    });
}

#[test]
fn handles_passed_to_a_forked_child_work_there() {
    let _watchdog = watchdog(LIMIT, "handles, fork");
    objects_scenario("fork with handles", |o| {
        Process::builder()
            .start_method(StartMethod::Fork)
            .spawn(use_handles, o.handles.clone())
            .unwrap()
    });
}

/// Second copies of the objects, attached here, to be moved into a child's argument.
fn copies(o: &Objects) -> SharedObjects {
    SharedObjects {
        tx: o.tx.clone(),
        lock: Lock::from_handle(&o.handles.lock).unwrap(),
        value: Value::from_handle(&o.handles.value).unwrap(),
        conn: Connection::from_handle(&o.handles.conn).unwrap(),
    }
}

#[test]
fn objects_passed_by_value_reach_the_child() {
    let _watchdog = watchdog(LIMIT, "objects by value");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        objects_scenario(&format!("{method:?} by value"), |o| {
            Process::builder()
                .start_method(method)
                .spawn(use_passed, copies(o))
                .unwrap()
        });
    }
}

#[test]
fn objects_captured_by_a_forked_closure_are_inherited() {
    let _watchdog = watchdog(LIMIT, "captured objects, fork");
    objects_scenario("fork capturing", |o| {
        Process::fork(|| use_objects(&o.tx, &o.lock, &o.value, &o.conn)).unwrap()
    });
}

// ---------------------------------------------------------------------------------------------
// 5. Daemon children die with their parent; others do not

#[derive(Serialize, Deserialize)]
struct Middle {
    report: Handle,
    fork: bool,
    from_thread: bool,
    daemon: bool,
}

/// The intermediate process: starts a grandchild (daemon or not; spawned or forked; from its
/// main thread or from a thread that ends right after), reports the grandchild's pid, and
/// sleeps until killed. The grandchild reports its pid too, from inside its function: then it
/// has surely started (see `an_orphaned_spawned_child_still_runs_its_function`).
fn middle(m: Middle) {
    let tx = Sender::<u32>::from_handle(&m.report).expect("report queue");
    let start = || {
        let b = Process::builder().name("grandchild").daemon(m.daemon);
        let p = if m.fork {
            b.fork(|| {
                tx.put(std::process::id()).expect("report");
                std::thread::sleep(NAP);
            })
        } else {
            b.spawn(report_then_sleep, m.report.clone())
        };
        p.expect("start grandchild")
    };
    let child = if m.from_thread {
        // The starting thread has ended by the time the pid is reported.
        std::thread::scope(|s| s.spawn(start).join()).expect("starter thread")
    } else {
        start()
    };
    assert_eq!(child.is_daemon(), m.daemon);
    tx.put(child.pid()).expect("report");
    std::thread::sleep(NAP);
}

/// Starts the intermediate process, SIGKILLs it once it reported its child, and returns
/// whether that child was running `watch` after the kill (polled until it was not).
fn kill_the_middle(fork: bool, from_thread: bool, daemon: bool, watch: Duration) -> bool {
    let what = format!("fork {fork}, from thread {from_thread}, daemon {daemon}");
    let mut guard = KillOnDrop::default();
    let (tx, rx) = channel();
    let m = Middle {
        report: tx.handle(),
        fork,
        from_thread,
        daemon,
    };
    let mut p = Process::builder().name("middle").spawn(middle, m).unwrap();
    guard.watch(p.pid());
    let d = rx.get_timeout(START).expect("the grandchild's pid");
    // Not reaped: the middle process holds its `Process`.
    guard.watch(d);
    assert_eq!(
        rx.get_timeout(START),
        Ok(d),
        "{what}: both report the grandchild's pid"
    );
    let grandchild = Ident::of(d);
    assert!(grandchild.running(), "{what}");
    assert_eq!(grandchild.stat().unwrap().ppid, p.pid(), "{what}");
    if from_thread {
        // The thread that started it has ended: that must not take a daemon down.
        assert!(
            !eventually(Duration::from_millis(200), || grandchild.exited()),
            "{what}: the grandchild died with the thread that started it"
        );
    }
    sigkill(p.pid());
    let killed = Instant::now();
    let gone = eventually(watch, || grandchild.exited());
    let noticed = killed.elapsed();
    let r = p.join_timeout(START);
    assert!(
        matches!(r, Err(ProcessError::Killed(9))),
        "{what}: the middle process: {r:?}"
    );
    if gone {
        assert!(noticed < NOTICE, "{what}: gone only after {noticed:?}");
    } else {
        // Re-parented, still running.
        let s = grandchild.stat().expect("still there");
        assert_ne!(s.ppid, p.pid(), "{what}");
    }
    drop(guard);
    // Whatever happened, the grandchild is dead now (a zombie at most, which its new parent
    // reaps).
    assert!(eventually(START, || grandchild.exited()), "{what}");
    !gone
}

#[test]
fn daemon_spawned_from_the_main_thread_dies_with_its_parent() {
    let _watchdog = watchdog(LIMIT, "daemon spawn");
    assert!(!kill_the_middle(false, false, true, NOTICE));
}

#[test]
fn daemon_forked_from_the_main_thread_dies_with_its_parent() {
    let _watchdog = watchdog(LIMIT, "daemon fork");
    assert!(!kill_the_middle(true, false, true, NOTICE));
}

#[test]
fn daemon_spawned_from_another_thread_dies_with_its_parent() {
    let _watchdog = watchdog(LIMIT, "daemon spawn from thread");
    assert!(!kill_the_middle(false, true, true, NOTICE));
}

#[test]
fn daemon_forked_from_another_thread_dies_with_its_parent() {
    let _watchdog = watchdog(LIMIT, "daemon fork from thread");
    assert!(!kill_the_middle(true, true, true, NOTICE));
}

#[test]
fn non_daemon_child_survives_its_parents_sigkill() {
    let _watchdog = watchdog(LIMIT, "non-daemon");
    // A daemon goes within milliseconds: surviving 300 ms after its parent was reaped means
    // nothing was armed.
    let watch = Duration::from_millis(300);
    assert!(kill_the_middle(false, false, false, watch), "spawned");
    assert!(kill_the_middle(true, false, false, watch), "forked");
    assert!(
        kill_the_middle(false, true, false, watch),
        "spawned from a thread"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Reaping: no zombies; active_children

/// A child that waits for the go on a queue, then exits 0.
fn waiting_child(method: StartMethod, go: &Receiver<u32>) -> Process<u32> {
    match method {
        StartMethod::Spawn => Process::spawn(wait_for_go, go.handle()).unwrap(),
        StartMethod::Fork => Process::fork(|| go.get_timeout(NAP).unwrap()).unwrap(),
    }
}

#[test]
fn a_child_dropped_while_running_is_reaped_when_it_exits() {
    let _watchdog = watchdog(LIMIT, "reaper thread");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let (tx, rx) = channel();
        let p = waiting_child(method, &rx);
        let child = Ident::of(p.pid());
        drop(p);
        assert!(
            child.running(),
            "{method:?}: dropping the handle left it running"
        );
        tx.put(1).unwrap();
        assert!(
            eventually(Duration::from_secs(5), || child.reaped()),
            "{method:?}: {:?} after it exited",
            child.stat()
        );
    }
}

#[test]
fn a_child_that_exited_is_reaped_when_its_process_is_dropped() {
    let _watchdog = watchdog(LIMIT, "reap on drop");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let (tx, rx) = channel();
        let p = waiting_child(method, &rx);
        let child = Ident::of(p.pid());
        tx.put(1).unwrap();
        // A zombie now (unless another test's `active_children` reaped it already).
        assert!(eventually(START, || child.exited()));
        drop(p);
        assert!(child.reaped(), "{method:?}: {:?} after drop", child.stat());
    }
}

#[test]
fn join_wait_is_alive_and_exitcode_leave_no_zombie() {
    let _watchdog = watchdog(LIMIT, "no zombies");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let (tx, rx) = channel();
        // Each child waits for its go, so that it is surely there to be looked at first.
        let start = |go: u32| {
            let p = waiting_child(method, &rx);
            let child = Ident::of(p.pid());
            tx.put(go).unwrap();
            (p, child)
        };
        let (p, child) = start(1);
        assert_eq!(p.join().unwrap(), 1);
        assert!(child.reaped(), "{method:?} join: {:?}", child.stat());

        let (p, child) = start(2);
        assert_eq!(p.wait().unwrap(), 0);
        assert!(child.reaped(), "{method:?} wait: {:?}", child.stat());
        assert_eq!(p.join().unwrap(), 2);

        let (p, child) = start(3);
        assert!(eventually(START, || !p.is_alive()));
        assert!(child.reaped(), "{method:?} is_alive: {:?}", child.stat());
        assert_eq!(p.exitcode(), Some(0));

        let (p, child) = start(4);
        assert!(eventually(START, || p.exitcode().is_some()));
        assert!(child.reaped(), "{method:?} exitcode: {:?}", child.stat());
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(p.join().unwrap(), 4);
    }
}

#[test]
fn active_children_lists_running_children_only() {
    let _watchdog = watchdog(LIMIT, "active_children");
    let listed = |pid: u32| active_children().into_iter().find(|c| c.pid == pid);
    let (tx, rx) = channel();
    let spawned = Process::builder()
        .name("active-spawned")
        .spawn(wait_for_go, rx.handle())
        .unwrap();
    let forked = Process::builder()
        .name("active-forked")
        .fork(|| rx.get_timeout(NAP).unwrap())
        .unwrap();
    let mut sleeper = sleeping_child(StartMethod::Spawn);
    for (p, name) in [(&spawned, "active-spawned"), (&forked, "active-forked")] {
        assert_eq!(
            listed(p.pid()),
            Some(ProcessInfo {
                pid: p.pid(),
                name: name.into(),
            })
        );
    }
    assert!(listed(sleeper.pid()).is_some());

    // Both waiting children take a go and exit; wait until both are zombies (or reaped
    // already by another test's `active_children`), without reaping them ourselves.
    let ids = [Ident::of(spawned.pid()), Ident::of(forked.pid())];
    tx.put(1).unwrap();
    tx.put(2).unwrap();
    assert!(eventually(START, || ids.iter().all(Ident::exited)));
    // Not listed, and reaped on the way.
    let now = active_children();
    for id in &ids {
        assert!(!now.iter().any(|c| c.pid == id.pid), "{now:?}");
        assert!(id.reaped(), "{:?}", id.stat());
    }
    assert!(now.iter().any(|c| c.pid == sleeper.pid()));
    // Their exit codes and results are still there.
    assert_eq!(spawned.exitcode(), Some(0));
    assert_eq!(forked.exitcode(), Some(0));
    let mut got = [spawned.join().unwrap(), forked.join().unwrap()];
    got.sort();
    assert_eq!(got, [1, 2]);

    sleeper.kill().unwrap();
    let pid = sleeper.pid();
    let r = sleeper.join_timeout(START);
    assert!(matches!(r, Err(ProcessError::Killed(9))), "{r:?}");
    assert_eq!(listed(pid), None);
}

// ---------------------------------------------------------------------------------------------
// 7. cpu_count

#[test]
fn cpu_count_is_the_available_parallelism() {
    let n = cpu_count();
    assert!(n >= 1);
    assert_eq!(n, std::thread::available_parallelism().unwrap().get());
}

// ---------------------------------------------------------------------------------------------
// 8. Regressions: bugs these tests found, each fixed since.

/// Makes a process of this test binary sleep `MPT_DELAY_START_MS` milliseconds at start-up,
/// before `multiproc`'s own start-up hook (prioritised `.init_array` entries run before the
/// plain ones): a spawned child that starts late, deterministically.
// SAFETY: `.init_array.*` holds `extern "C" fn()` pointers the C runtime calls once at start-up;
// this is one, and it only reads the environment and sleeps.
#[used]
#[unsafe(link_section = ".init_array.00100")]
static DELAY_START: extern "C" fn() = delay_start;

extern "C" fn delay_start() {
    if let Some(ms) = std::env::var_os("MPT_DELAY_START_MS") {
        let ms: u64 = ms.to_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// P: starts a child (daemon or not) that runs `square(2)` but starts 300 ms late, and exits at
/// once, long before that child's start-up hook runs.
fn start_and_leave(daemon: bool) {
    let p = Process::builder()
        .daemon(daemon)
        .env("MPT_DELAY_START_MS", "300")
        .spawn(square, 2)
        .expect("start the child");
    std::mem::forget(p);
    std::process::exit(0);
}

/// H: becomes a child subreaper, runs `start_and_leave` in a child P, and returns how the
/// orphan P left behind ended (Python's exitcode), as its new parent sees it.
fn orphan_exitcode(daemon: bool) -> i32 {
    // SAFETY: PR_SET_CHILD_SUBREAPER only sets a flag of this (single-threaded) process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl: {}", std::io::Error::last_os_error());
    let p = Process::spawn(start_and_leave, daemon).expect("start P");
    assert!(matches!(p.join(), Err(ProcessError::Exited(0))));
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; the only child left is the orphan.
    let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
    assert!(pid > 0, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Regression: a spawned child whose parent is gone before its start-up hook looks at the
/// parent pid (which `parse_env` compares with the pid in `MULTIPROC_SPAWN`) ignores its start
/// message and runs `main`: here the test harness, which rejects `--multiproc-spawned=...` and
/// exits with 101. It should run its function (exit 0) or, as a daemon, die (-9).
#[test]
fn an_orphaned_spawned_child_still_runs_its_function() {
    let _watchdog = watchdog(LIMIT, "orphan");
    let code = Process::spawn(orphan_exitcode, false)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(code, 0, "non-daemon orphan (101: it ran main)");
    let code = Process::spawn(orphan_exitcode, true)
        .unwrap()
        .join()
        .unwrap();
    assert!(
        matches!(code, 0 | -9),
        "daemon orphan: {code} (101: it ran main)"
    );
}

/// Sets its flag when dropped: stops a background thread even when the test fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `busy` in a loop on another thread while this one forks children that run nothing
/// (with `env` set, if given), for at most `limit`; panics if a child does not finish within
/// 2 s (it is killed first).
fn fork_next_to(busy: fn(), env: bool, limit: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let flag = stop.clone();
    let background = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            busy();
        }
    });
    let t = Instant::now();
    let mut forks = 0;
    while t.elapsed() < limit {
        let mut b = Process::builder();
        if env {
            b = b.env("MPT_FORK_ENV", "1");
        }
        let p = b.fork(|| ()).unwrap();
        forks += 1;
        let mut p = p;
        match p.join_timeout(Duration::from_secs(2)) {
            Ok(Some(())) => {}
            Ok(None) => {
                let pid = p.pid();
                p.kill().unwrap();
                panic!("fork #{forks}: child {pid} still runs after 2 s (killed)");
            }
            Err(e) => panic!("fork #{forks}: {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    background.join().unwrap();
}

/// Regression: `Builder::fork` applies `.env(..)` in the child with `std::env::set_var`, which
/// takes std's process-wide environment lock for writing. If another thread of the parent held
/// it (any `std::env::var`) at the fork, the child blocks forever in `set_var`.
#[test]
fn a_fork_with_env_does_not_hang_while_another_thread_reads_the_environment() {
    let _watchdog = watchdog(LIMIT, "fork with env");
    fork_next_to(
        || {
            std::hint::black_box(std::env::var_os("PATH"));
        },
        true,
        Duration::from_secs(5),
    );
}

/// Regression: a forked child flushes Rust's stdout before `_exit` (`flush_stdio` in `finish`),
/// which takes stdout's lock. If another thread of the parent held it at the fork (the test
/// harness prints results from its main thread), the child blocks forever.
#[test]
fn a_forked_child_does_not_hang_while_another_thread_holds_stdout() {
    let _watchdog = watchdog(LIMIT, "fork next to stdout");
    fork_next_to(
        || {
            let _held = std::io::stdout().lock();
            std::hint::black_box(());
        },
        false,
        Duration::from_secs(5),
    );
}

/// Regression (in the queue's fork hooks): before a fork, `before_fork` counts every live queue
/// handle once more in the parent's peer slot, for the child to take over; the child gives
/// those counts back only for the handles it still finds alive (`Weak::upgrade`), and only if
/// it can `try_lock` the handle list. A sender another thread drops between the parent's count
/// and the fork stays counted in the (live) parent's slot for good: its receiver never sees
/// `Disconnected`.
#[test]
fn a_fork_in_one_thread_does_not_keep_senders_dropped_in_another_counted() {
    let _watchdog = watchdog(LIMIT, "fork and drop");
    let pairs: Vec<(Sender<u32>, Receiver<u32>)> = (0..1000).map(|_| channel()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let flag = stop.clone();
    let forker = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            Process::fork(|| ()).unwrap().join().unwrap();
        }
    });
    let mut receivers = Vec::new();
    for (tx, rx) in pairs {
        drop(tx);
        std::thread::sleep(Duration::from_micros(200));
        receivers.push(rx);
    }
    stop.store(true, Ordering::Relaxed);
    forker.join().unwrap();
    let leaked: Vec<usize> = receivers
        .iter()
        .enumerate()
        .filter(|(_, rx)| {
            rx.get_timeout(Duration::from_millis(20)) != Err(GetTimeoutError::Disconnected)
        })
        .map(|(i, _)| i)
        .collect();
    assert!(
        leaked.is_empty(),
        "{} of 1000 queues without any sender still count one (first: {:?})",
        leaked.len(),
        &leaked[..leaked.len().min(10)]
    );
}

/// What a spawned child holds: each open descriptor with what it names (`readlink` of
/// `/proc/self/fd/N`), except the directory being listed; and the descriptors of the queue
/// it was handed, as its handle names them.
fn my_descriptors(handed: Handle) -> (Vec<(i32, String)>, Vec<i32>) {
    let dir = std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd");
    let mut fds: Vec<(i32, String)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .filter(|(_, target)| !target.starts_with("/proc/"))
        .collect();
    fds.sort();
    // The handle's text names its descriptor as `...:fd:<n>` (memfd-backed objects).
    let text = handed.to_string();
    let named = text
        .split_once(":fd:")
        .and_then(|(_, n)| n.parse().ok())
        .into_iter()
        .collect();
    (fds, named)
}

/// Opens `path` WITHOUT close-on-exec at descriptor `at` or above; the descriptor's number.
fn open_inheritable(path: &std::path::Path, at: i32) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
    // SAFETY: F_DUPFD (without CLOEXEC) duplicates our own open `fd`.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD, at) };
    assert!(high >= at, "F_DUPFD: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is ours and open; nothing else uses it.
    unsafe { libc::close(fd) };
    high
}

/// Regression (issue 8, bug 6): a spawned child inherited every descriptor of its parent
/// that lacks close-on-exec, though `StartMethod::Spawn` says nothing is inherited but what
/// the argument carries. The child must hold 0, 1, 2, the descriptors its argument names and
/// what multiproc made for it (its own queues' memfds, its control socket), nothing of ours.
#[test]
fn issue_8_a_spawned_child_inherits_only_what_its_argument_carries() {
    let _watchdog = watchdog(LIMIT, "descriptors of a spawned child");
    let path = std::env::temp_dir().join(unique_name("leak"));
    std::fs::write(&path, b"not for the child").unwrap();
    struct Unlink(std::path::PathBuf);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _unlink = Unlink(path.clone());
    let leaked = open_inheritable(&path, 700);
    let (tx, _rx) = channel();
    let handed = tx.handle();
    let p = Process::spawn(my_descriptors, handed).unwrap();
    let (fds, named) = p.join().unwrap();
    // SAFETY: `leaked` is our own descriptor, opened above and used by nothing else.
    unsafe { libc::close(leaked) };
    let path = path.to_string_lossy().into_owned();
    assert!(
        !fds.iter()
            .any(|(fd, target)| *fd == leaked || *target == path),
        "the child holds our descriptor {leaked} ({path}): {fds:?}"
    );
    assert!(!named.is_empty(), "the queue's handle names a descriptor");
    let numbers: Vec<i32> = fds.iter().map(|(fd, _)| *fd).collect();
    for fd in [0, 1, 2].iter().chain(&named) {
        assert!(numbers.contains(fd), "descriptor {fd} is gone: {fds:?}");
    }
    // Besides: its own queue's memfds, and the one control socket multiproc gives a child.
    for (fd, target) in &fds {
        assert!(
            *fd <= 2
                || named.contains(fd)
                || target.starts_with("/memfd:multiproc")
                || target.starts_with("socket:"),
            "the child holds descriptor {fd} ({target}), which nobody handed it: {fds:?}"
        );
    }
    let sockets = fds.iter().filter(|(_, t)| t.starts_with("socket:")).count();
    assert!(sockets <= 1, "more than the control socket: {fds:?}");
}

/// Issue 12 (item 7): as above for a pipe made without close-on-exec (what `libc::pipe` or
/// an fd handed out by another library gives), at the lowest free numbers: usually below the
/// queue's descriptors, where the spawn closes descriptors one by one, not as one range.
#[test]
fn issue_12_a_spawned_child_gets_no_inheritable_pipe_of_ours() {
    let _watchdog = watchdog(LIMIT, "a pipe of ours in a spawned child");
    let mut ends = [0; 2];
    // SAFETY: `ends` has room for the two descriptors `pipe` writes.
    let rc = unsafe { libc::pipe(ends.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    let target = |fd: i32| {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let ours = target(ends[0]);
    assert!(ours.starts_with("pipe:"), "{ours}");
    let (tx, _rx) = channel();
    let handed = tx.handle();
    let (fds, named) = Process::spawn(my_descriptors, handed)
        .unwrap()
        .join()
        .unwrap();
    for fd in ends {
        // SAFETY: both ends are our own descriptors, made above and used by nothing else.
        unsafe { libc::close(fd) };
    }
    assert!(!named.is_empty(), "the queue's handle names a descriptor");
    assert!(
        !fds.iter().any(|(_, t)| *t == ours),
        "the child holds our pipe {ours}: {fds:?}"
    );
    assert!(
        !fds.iter().any(|(fd, t)| *fd > 2 && t.starts_with("pipe:")),
        "the child holds a pipe nobody handed it (beside 0 to 2, which may be the harness's): {fds:?}"
    );
}
