//! The name tracker, across real processes: a SIGKILLed creator's names go once no process
//! that created or opened them is left, never while one still maps them (a process of
//! another program, or a Python process), persistent names stay, a program's spawned
//! children share its one tracker, and the tracker ends with its program.
#![cfg(feature = "serde")]
#![allow(unsafe_code)] // kill(2) of a tracker and flock(2) as a hostile holder: see the SAFETY comments

#[path = "../common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ROLE_VAR, eventually, kill9, role, shm_exists, unique_name, watchdog};
use multiproc::{Lock, Process, Queue, SharedMemory, SharedObject, Value};

const LIMIT: Duration = Duration::from_secs(60);
/// How soon after the last user's death a name must be gone.
const GONE_WITHIN: Duration = Duration::from_secs(2);

/// Starts this test binary again as `role` of `test`, with `args` as environment variables,
/// its stdin and stdout piped: it says "ready" on stdout when set up.
fn start(
    test: &str,
    role: &str,
    args: &[(&str, &str)],
) -> (Child, BufReader<std::process::ChildStdout>) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_VAR, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in args {
        cmd.env(format!("MULTIPROC_TEST_{k}"), v);
    }
    let mut child = cmd.spawn().expect("spawn child test process");
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// Reads lines until "ready".
fn await_ready(out: &mut BufReader<std::process::ChildStdout>, who: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "{who} ended before it was ready");
        if line.trim() == "ready" {
            return;
        }
    }
}

/// In a child: says "ready", then waits for stdin to close (or to be killed).
fn ready_and_wait() {
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}

fn mode_of(name: &str) -> u32 {
    std::fs::metadata(format!("/dev/shm/{}", name.trim_start_matches('/')))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Waits until none of `names` is in /dev/shm, within [`GONE_WITHIN`] of `since`.
fn assert_gone_soon(names: &[&str], since: Instant, what: &str) {
    let left = GONE_WITHIN.saturating_sub(since.elapsed());
    let gone = eventually(left, || names.iter().all(|n| !shm_exists(n)));
    let still: Vec<_> = names.iter().filter(|n| shm_exists(n)).collect();
    assert!(
        gone,
        "{what}: {still:?} still in /dev/shm {:?} after",
        since.elapsed()
    );
}

/// Removes `names` if a failed test left them.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
        }
    }
}

/// The pids of tracker processes whose environment holds `MULTIPROC_TEST_TAG=<tag>` (the
/// tracker inherits the environment of the program that started it).
fn trackers_tagged(tag: &str) -> Vec<u32> {
    let needle = format!("MULTIPROC_TEST_TAG={tag}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let (Ok(cmdline), Ok(environ)) = (
            std::fs::read(entry.path().join("cmdline")),
            std::fs::read(entry.path().join("environ")),
        ) else {
            continue;
        };
        let has = |hay: &[u8], s: &[u8]| hay.split(|&b| b == 0).any(|part| part == s);
        // Not the short-lived copy that forks the tracker (a child of the tagged program).
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let ppid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        let parent_is_tagged = std::fs::read(format!("/proc/{ppid}/environ"))
            .is_ok_and(|env| has(&env, needle.as_bytes()));
        if has(&cmdline, b"--multiproc-tracker")
            && has(&environ, needle.as_bytes())
            && !parent_is_tagged
        {
            found.push(pid);
        }
    }
    found
}

/// Waits until exactly one tracker carries `tag` (the program starts it without waiting for
/// it) and stays the only one for a moment; returns its pid.
fn the_one_tracker(tag: &str) -> u32 {
    assert!(
        eventually(GONE_WITHIN, || trackers_tagged(tag).len() == 1),
        "one tracker per program: {:?}",
        trackers_tagged(tag)
    );
    std::thread::sleep(Duration::from_millis(50));
    let trackers = trackers_tagged(tag);
    assert_eq!(trackers.len(), 1, "one tracker per program: {trackers:?}");
    trackers[0]
}

// ---------------------------------------------------------------------------------------------
// A SIGKILLed creator

/// C: creates a named Value, Queue and Lock (tracked), says ready, waits to be killed.
fn create_three() {
    let v = Value::builder()
        .name(common::arg("A"))
        .value(7u64)
        .create()
        .unwrap();
    let q = Queue::<u64>::builder()
        .name(common::arg("B"))
        .create()
        .unwrap();
    q.put(5).unwrap();
    let l = Lock::builder().name(common::arg("C")).create().unwrap();
    ready_and_wait();
    drop((v, q, l));
}

#[test]
fn a_sigkilled_creators_names_go_and_its_tracker_ends() {
    if role().as_deref() == Some("creator") {
        return create_three();
    }
    let _watchdog = watchdog(LIMIT, "sigkilled creator");
    let names = [unique_name("k-a"), unique_name("k-b"), unique_name("k-c")];
    let _cleanup = Cleanup(names.to_vec());
    let tag = unique_name("tag");
    let (mut c, mut out) = start(
        &this_test!(a_sigkilled_creators_names_go_and_its_tracker_ends),
        "creator",
        &[
            ("A", &names[0]),
            ("B", &names[1]),
            ("C", &names[2]),
            ("TAG", &tag),
        ],
    );
    await_ready(&mut out, "creator");
    for n in &names {
        assert!(shm_exists(n), "{n} was not created");
        assert_eq!(mode_of(n), 0o1600, "{n} is not marked as tracked");
    }
    let trackers = the_one_tracker(&tag);

    kill9(&mut c);
    let died = Instant::now();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_gone_soon(&refs, died, "names of a SIGKILLed creator");
    // The tracker exits once it has cleaned up.
    assert!(
        eventually(GONE_WITHIN, || trackers_tagged(&tag).is_empty()),
        "the tracker {trackers:?} outlived its program"
    );
}

// ---------------------------------------------------------------------------------------------
// A process of another program still maps one of the names

/// O: opens the Value `A` and checks it, says ready, holds it until killed.
fn open_one() {
    let v = Value::<u64>::open(&common::arg("A")).unwrap();
    assert_eq!(v.get(), 7);
    v.set(8);
    ready_and_wait();
    drop(v);
}

#[test]
fn a_name_another_program_maps_stays_until_that_process_ends() {
    match role().as_deref() {
        Some("creator") => return create_three(),
        Some("opener") => return open_one(),
        _ => {}
    }
    let _watchdog = watchdog(LIMIT, "mapped by another program");
    let test = this_test!(a_name_another_program_maps_stays_until_that_process_ends);
    let names = [unique_name("m-a"), unique_name("m-b"), unique_name("m-c")];
    let _cleanup = Cleanup(names.to_vec());
    let (mut c, mut c_out) = start(
        &test,
        "creator",
        &[("A", &names[0]), ("B", &names[1]), ("C", &names[2])],
    );
    await_ready(&mut c_out, "creator");
    let (mut o, mut o_out) = start(&test, "opener", &[("A", &names[0])]);
    await_ready(&mut o_out, "opener");

    kill9(&mut c);
    let died = Instant::now();
    // The two names nobody maps go: the creator's tracker has looked at all three by then.
    assert_gone_soon(&[&names[1], &names[2]], died, "unmapped names");
    assert!(
        shm_exists(&names[0]),
        "the tracker removed a name another process maps"
    );
    std::thread::sleep(Duration::from_millis(200));
    {
        let v = Value::<u64>::open(&names[0]).expect("the mapped name still opens");
        assert_eq!(v.get(), 8, "the opener's write");
    }

    kill9(&mut o);
    let ended = Instant::now();
    assert_gone_soon(&[&names[0]], ended, "the name once its last user ended");
}

// ---------------------------------------------------------------------------------------------
// Persistent names

/// C: creates a persistent Value, a persisted SharedMemory and a tracked sentinel Lock.
fn create_persistent() {
    let v = Value::builder()
        .name(common::arg("A"))
        .persistent()
        .value(41u64)
        .create()
        .unwrap();
    let shm = SharedMemory::create_named(&common::arg("B"), 64)
        .unwrap()
        .persist();
    shm.write(0, b"kept").unwrap();
    let l = Lock::builder().name(common::arg("C")).create().unwrap();
    ready_and_wait();
    drop((v, shm, l));
}

#[test]
fn persistent_names_outlive_a_sigkilled_creator() {
    if role().as_deref() == Some("creator") {
        return create_persistent();
    }
    let _watchdog = watchdog(LIMIT, "persistent");
    let names = [unique_name("p-a"), unique_name("p-b"), unique_name("p-c")];
    let _cleanup = Cleanup(names.to_vec());
    let (mut c, mut out) = start(
        &this_test!(persistent_names_outlive_a_sigkilled_creator),
        "creator",
        &[("A", &names[0]), ("B", &names[1]), ("C", &names[2])],
    );
    await_ready(&mut out, "creator");
    assert_eq!(mode_of(&names[0]), 0o600);
    assert_eq!(mode_of(&names[1]), 0o600);
    kill9(&mut c);
    let died = Instant::now();
    // The sentinel going shows the tracker has done its work.
    assert_gone_soon(&[&names[2]], died, "the tracked sentinel");
    let v = Value::<u64>::open(&names[0]).expect("a persistent object outlives its creator");
    assert_eq!(v.get(), 41);
    assert!(v.unlink().unwrap());
    let shm = SharedMemory::open(&names[1]).expect("a persisted block outlives its creator");
    let mut b = [0u8; 4];
    shm.read(0, &mut b).unwrap();
    assert_eq!(&b, b"kept");
    assert!(shm.unlink().unwrap());
    drop((v, shm));
    assert!(!shm_exists(&names[0]) && !shm_exists(&names[1]));
}

#[test]
fn persistent_needs_a_name() {
    let err = Value::builder()
        .persistent()
        .value(1u64)
        .create()
        .unwrap_err();
    assert!(
        matches!(err, multiproc::OpenError::InvalidArgument(_)),
        "{err:?}"
    );
}

/// The creator's own drop still removes a tracked name at once, and an explicit unlink by an
/// opener too; a persistent one only goes by `unlink`.
#[test]
fn drop_and_unlink_keep_their_meaning() {
    let name = unique_name("d-a");
    let _cleanup = Cleanup(vec![name.clone()]);
    let v = Value::builder().name(&name).value(1u64).create().unwrap();
    let other = Value::<u64>::open(&name).unwrap();
    drop(v);
    assert!(!shm_exists(&name), "the creator's drop removes the name");
    drop(other);

    let v = Value::builder()
        .name(&name)
        .persistent()
        .value(1u64)
        .create()
        .unwrap();
    drop(v);
    assert!(
        shm_exists(&name),
        "a persistent name outlives the creator's drop"
    );
    let again = Value::<u64>::open(&name).unwrap();
    assert!(again.unlink().unwrap());
    assert!(!shm_exists(&name));
}

// ---------------------------------------------------------------------------------------------
// Children share their program's tracker

fn open_and_report(name: String) -> u64 {
    Value::<u64>::open(&name).unwrap().get()
}

/// C: creates a name, has two spawned children open it, says ready.
fn create_and_spawn() {
    let name = common::arg("A");
    let v = Value::builder().name(&name).value(3u64).create().unwrap();
    for _ in 0..2 {
        let got = Process::spawn(open_and_report, name.clone())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got, 3);
    }
    let forked = Process::fork(|| Value::<u64>::open(&common::arg("A")).unwrap().get()).unwrap();
    assert_eq!(forked.join().unwrap(), 3);
    ready_and_wait();
    drop(v);
}

#[test]
fn spawned_and_forked_children_share_one_tracker() {
    if role().as_deref() == Some("creator") {
        return create_and_spawn();
    }
    let _watchdog = watchdog(LIMIT, "shared tracker");
    let name = unique_name("s-a");
    let _cleanup = Cleanup(vec![name.clone()]);
    let tag = unique_name("tag");
    let (mut c, mut out) = start(
        &this_test!(spawned_and_forked_children_share_one_tracker),
        "creator",
        &[("A", &name), ("TAG", &tag)],
    );
    await_ready(&mut out, "creator");
    the_one_tracker(&tag);
    kill9(&mut c);
    let died = Instant::now();
    assert_gone_soon(&[&name], died, "the name");
    assert!(eventually(GONE_WITHIN, || trackers_tagged(&tag).is_empty()));
}

// ---------------------------------------------------------------------------------------------
// Python

fn have_python3() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        // `.ci/run` installs python3 and sets this, so CI never skips silently.
        assert!(
            std::env::var_os("MULTIPROC_REQUIRE_PYTHON").is_none(),
            "python3 not found, and MULTIPROC_REQUIRE_PYTHON is set"
        );
        eprintln!("python3 not found: skipping interop");
    }
    ok
}

/// Attaches the block `argv[1]` the way the docs tell users to (keeping Python's resource
/// tracker out of it), checks and answers, then, with `argv[2] == "hold"`, says ready and
/// holds the mapping until stdin closes.
const PY_ATTACH: &str = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
name = sys.argv[1]
if sys.version_info >= (3, 13):
    s = shared_memory.SharedMemory(name=name, track=False)
else:
    s = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(s._name, "shared_memory")
if bytes(s.buf[0:8]) != b"from-rs!":
    print("bad data", bytes(s.buf[0:8]), file=sys.stderr)
    sys.exit(3)
s.buf[8:12] = b"+py!"
if sys.argv[2] == "hold":
    print("ready", flush=True)
    sys.stdin.readline()
s.close()
"#;

#[test]
fn a_python_process_that_attached_and_exited_leaves_our_block() {
    if !have_python3() {
        return;
    }
    let _watchdog = watchdog(LIMIT, "python attach");
    let shm = SharedMemory::create_named(&unique_name("py-a"), 4096).unwrap();
    shm.write(0, b"from-rs!").unwrap();
    let mut py = Command::new("python3")
        .args(["-c", PY_ATTACH, shm.name(), "exit"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start python3");
    let status = common::wait_for(&mut py, LIMIT);
    assert!(status.success(), "python failed: {status}");
    // Python's tracker process may still be finishing: give it time to do damage.
    std::thread::sleep(Duration::from_millis(300));
    assert!(shm_exists(shm.name()), "python removed our block");
    let again = SharedMemory::open(shm.name()).expect("our block still opens");
    let mut b = [0u8; 12];
    again.read(0, &mut b).unwrap();
    assert_eq!(&b, b"from-rs!+py!");
    let name = shm.name().to_owned();
    drop((shm, again));
    assert!(!shm_exists(&name));
}

/// C: creates a block with the given bytes and a tracked sentinel, says ready.
fn create_block_for_python() {
    let shm = SharedMemory::create_named(&common::arg("A"), 4096).unwrap();
    shm.write(0, b"from-rs!").unwrap();
    let l = Lock::builder().name(common::arg("B")).create().unwrap();
    ready_and_wait();
    drop((shm, l));
}

/// A Python process maps our block without our lock: the `/proc` look keeps the tracker off
/// it. (The name then stays for good, since no tracker of ours knows it any more: a leak,
/// never a block pulled from under a live user.)
#[test]
fn a_name_a_python_process_maps_stays() {
    if role().as_deref() == Some("creator") {
        return create_block_for_python();
    }
    if !have_python3() {
        return;
    }
    let _watchdog = watchdog(LIMIT, "python maps");
    let names = [unique_name("pm-a"), unique_name("pm-b")];
    let _cleanup = Cleanup(names.to_vec());
    let (mut c, mut out) = start(
        &this_test!(a_name_a_python_process_maps_stays),
        "creator",
        &[("A", &names[0]), ("B", &names[1])],
    );
    await_ready(&mut out, "creator");
    let mut py = Command::new("python3")
        .args(["-c", PY_ATTACH, &names[0], "hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut py_out = BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    py_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "python did not get ready");

    kill9(&mut c);
    let died = Instant::now();
    assert_gone_soon(&[&names[1]], died, "the sentinel");
    assert!(
        shm_exists(&names[0]),
        "the tracker removed a block python maps"
    );

    drop(py.stdin.take());
    let status = common::wait_for(&mut py, LIMIT);
    assert!(status.success(), "python failed: {status}");
    let shm = SharedMemory::open(&names[0]).unwrap();
    let mut b = [0u8; 12];
    shm.read(0, &mut b).unwrap();
    assert_eq!(&b, b"from-rs!+py!");
    assert!(shm.unlink().unwrap());
}

// ---------------------------------------------------------------------------------------------
// A dead tracker, a hostile lock holder

/// C: creates `A`, says ready; on a line from stdin creates `B` and says ready again.
fn create_around_a_dead_tracker() {
    let a = Value::builder()
        .name(common::arg("A"))
        .value(1u64)
        .create()
        .unwrap();
    ready_and_wait();
    let b = Value::builder()
        .name(common::arg("B"))
        .value(2u64)
        .create()
        .unwrap();
    assert_eq!(b.get(), 2);
    ready_and_wait();
    drop((a, b));
}

/// Killing the tracker hangs nothing: the program goes on creating names, the next one
/// starts a new tracker, which cleans up what it was told about. (Names registered only with
/// the dead tracker are left behind: the documented cost of losing it.)
#[test]
fn a_killed_tracker_is_replaced_and_nothing_hangs() {
    if role().as_deref() == Some("creator") {
        return create_around_a_dead_tracker();
    }
    let _watchdog = watchdog(LIMIT, "dead tracker");
    let names = [unique_name("t-a"), unique_name("t-b")];
    let _cleanup = Cleanup(names.to_vec());
    let tag = unique_name("tag");
    let (mut c, mut out) = start(
        &this_test!(a_killed_tracker_is_replaced_and_nothing_hangs),
        "creator",
        &[("A", &names[0]), ("B", &names[1]), ("TAG", &tag)],
    );
    await_ready(&mut out, "creator");
    let first = the_one_tracker(&tag);
    // SAFETY: plain kill(2) of a process we found by its command line and environment; it
    // touches no memory of ours.
    let rc = unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0);
    assert!(eventually(GONE_WITHIN, || trackers_tagged(&tag).is_empty()));

    c.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    await_ready(&mut out, "creator (second name)");
    let second = the_one_tracker(&tag);
    assert_ne!(second, first);

    kill9(&mut c);
    let died = Instant::now();
    assert_gone_soon(&[&names[1]], died, "the name the new tracker knows");
    assert!(eventually(GONE_WITHIN, || trackers_tagged(&tag).is_empty()));
    assert!(shm_exists(&names[0]), "only the dead tracker knew this one");
}

/// A process holding an exclusive `flock` on a name (as a tracker does while it removes
/// it, or a hostile process for good) makes opening it fail once the open timeout passes,
/// as if the name were gone: an error, not a hang.
#[test]
fn an_exclusive_lock_holder_cannot_hang_an_open() {
    let _watchdog = watchdog(LIMIT, "exclusive holder");
    let name = unique_name("x-a");
    let v = Value::builder().name(&name).value(5u64).create().unwrap();
    let file = std::fs::File::open(format!("/dev/shm/{name}")).unwrap();
    // While we (the creator) map it, nobody gets an exclusive lock...
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(rc, -1, "the creator's mapping holds a shared lock");
    drop(v);
    // ...and once it is unmapped, a hostile holder can deny opens.
    let name2 = unique_name("x-b");
    let v2 = Value::builder()
        .name(&name2)
        .persistent()
        .value(6u64)
        .create()
        .unwrap();
    drop(v2);
    let file2 = std::fs::File::open(format!("/dev/shm/{name2}")).unwrap();
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file2),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(rc, 0, "nobody maps it any more");
    let t = Instant::now();
    let err = Value::<u64>::builder()
        .name(&name2)
        .open_timeout(Duration::from_millis(100))
        .open()
        .unwrap_err();
    assert!(
        matches!(err, multiproc::OpenError::NotFound { .. }),
        "{err:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    drop(file2);
    let again = Value::<u64>::open(&name2).expect("opens once the lock is gone");
    assert_eq!(again.get(), 6);
    assert!(again.unlink().unwrap());
    drop(file);
}
