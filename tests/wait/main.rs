//! `multiproc::wait` with real processes: over 64 mixed objects (connections, receivers,
//! events, process sentinels) exactly the one that another process makes ready is returned,
//! and soon; none ready gives an empty set at the timeout; a zero timeout only looks; a
//! receiver whose sender was dropped or killed is ready; a child that exits or is killed is
//! ready through its sentinel; an event set by another process is ready; and a forked child
//! waits for its own children.
//!
//! Children are spawned (re-executing this binary, intercepted before the harness's `main`)
//! when they live long, or forked (inside the threaded harness, as in the `process` tests:
//! they only touch what the test thread set up, and leave through the crate) when they end
//! within a test's first second, or by design (a forked child's own wait). Timing is asserted only as a lower
//! bound of a timeout and as a generous upper bound.
#![cfg(feature = "serde")]

#[path = "../common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::watchdog;
use multiproc::{
    Connection, Event, Process, Queue, RawValue, Receiver, Sender, Sentinel, Waitable, pipe, wait,
};

/// Watchdog for a whole test.
const LIMIT: Duration = Duration::from_secs(90);
/// The timeout of a wait that something will end: far longer than it may take.
const LONG: Duration = Duration::from_secs(30);
/// How soon after an object became ready the wait must have returned (generous: the machine
/// may be loaded; the benchmark measures the real figure).
const SOON: Duration = Duration::from_secs(2);
/// How long a child waits before it makes its object ready: long enough for the parent to be
/// asleep in `wait` by then, usually.
const DELAY: Duration = Duration::from_millis(300);
/// How long idle children live at most, should the test fail before releasing them.
const NAP: Duration = Duration::from_secs(60);

/// Nanoseconds on the monotonic clock, which every process on the machine shares.
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A shared cell where a child notes when it made its object ready.
fn stamp() -> RawValue<AtomicU64> {
    RawValue::<AtomicU64>::builder()
        .create()
        .expect("create stamp")
}

/// Asserts that `returned_at` (a [`mono_ns`] value taken right after `wait` returned) came
/// within [`SOON`] of the stamp.
fn assert_soon(stamp: &RawValue<AtomicU64>, returned_at: u64) {
    let acted = stamp.load(Ordering::SeqCst);
    assert_ne!(acted, 0, "the child never stamped");
    let late = Duration::from_nanos(returned_at.saturating_sub(acted));
    assert!(
        late < SOON,
        "wait returned {late:?} after the object became ready"
    );
}

/// A fresh channel of `u32`.
fn channel() -> (Sender<u32>, Receiver<u32>) {
    Queue::<u32>::builder()
        .create()
        .expect("create queue")
        .split()
        .expect("split queue")
}

/// Sixteen of each kind, none ready: connections (whose other ends we keep), receivers (whose
/// senders we keep), events, and children that sleep until `release` is set.
struct Mix {
    conns: Vec<(Connection<u32>, Connection<u32>)>,
    chans: Vec<(Sender<u32>, Receiver<u32>)>,
    events: Vec<Event>,
    procs: Vec<Process>,
    release: Event,
}

const EACH: usize = 16;

/// An idle child: sleeps until `release` is set.
fn idle(release: Event) {
    release.wait_timeout(NAP);
}

impl Mix {
    fn new() -> Self {
        let release = Event::new().expect("event");
        // Spawned, not forked: a forked child would count as a holder of every queue handle
        // alive in this process at the fork, those of the tests running beside this one too,
        // for as long as it lives.
        let procs = (0..EACH)
            .map(|_| Process::spawn(idle, &release).expect("spawn idle child"))
            .collect();
        Self {
            conns: (0..EACH).map(|_| pipe().expect("pipe")).collect(),
            chans: (0..EACH).map(|_| channel()).collect(),
            events: (0..EACH).map(|_| Event::new().expect("event")).collect(),
            procs,
            release,
        }
    }

    /// The 64 objects, interleaved by kind: index `4 * k + kind` (kinds: connection,
    /// receiver, event, process), with `swap` (kind, k) replaced by `other`.
    fn objects<'a>(
        &'a self,
        swap: Option<(usize, usize, &'a dyn Waitable)>,
    ) -> Vec<&'a dyn Waitable> {
        let mut v: Vec<&dyn Waitable> = Vec::with_capacity(4 * EACH);
        for k in 0..EACH {
            v.push(&self.conns[k].1);
            v.push(&self.chans[k].1);
            v.push(&self.events[k]);
            v.push(&self.procs[k]);
        }
        if let Some((kind, k, other)) = swap {
            v[4 * k + kind] = other;
        }
        v
    }

    fn finish(self) {
        self.release.set();
        for p in self.procs {
            p.join().expect("idle child");
        }
    }
}

/// Waits over the mix with one object made ready by another process, and checks that exactly
/// that one is returned, soon after it became ready.
fn one_of_64(kind: usize) {
    let _w = watchdog(LIMIT, "one_of_64");
    let mix = Mix::new();
    let at = stamp();
    let k = 11;
    // The child that makes object (kind, k) ready, after DELAY; for a process, the object is
    // that child itself.
    let (_ready_conn, far) = pipe::<u32>().expect("pipe");
    let (tx, ready_rx) = channel();
    let ready_ev = Event::new().expect("event");
    let actor = {
        let (far, ev, at) = (&far, &ready_ev, &at);
        let tx = &tx;
        Process::fork(move || {
            std::thread::sleep(DELAY);
            at.store(mono_ns(), Ordering::SeqCst);
            match kind {
                0 => far.send(7).expect("send"),
                1 => tx.put(7).expect("put"),
                2 => ev.set(),
                _ => {} // ending is the act
            }
        })
        .expect("fork actor")
    };
    let swap: &dyn Waitable = match kind {
        0 => &_ready_conn,
        1 => &ready_rx,
        2 => &ready_ev,
        _ => &actor,
    };
    let objects = mix.objects(Some((kind, k, swap)));
    assert_eq!(objects.len(), 64);
    let t0 = Instant::now();
    let ready = wait(&objects, Some(LONG)).expect("wait");
    let returned = mono_ns();
    assert!(t0.elapsed() < LONG, "wait ran into its timeout");
    assert_eq!(ready, [4 * k + kind], "kind {kind}");
    assert_soon(&at, returned);
    drop(objects);
    actor.join().expect("actor");
    mix.finish();
}

#[test]
fn one_connection_of_64_made_ready_by_another_process() {
    one_of_64(0);
}

#[test]
fn one_receiver_of_64_made_ready_by_another_process() {
    one_of_64(1);
}

#[test]
fn one_event_of_64_set_by_another_process() {
    one_of_64(2);
}

#[test]
fn one_process_of_64_ending() {
    one_of_64(3);
}

#[test]
fn none_ready_is_empty_at_the_timeout() {
    let _w = watchdog(LIMIT, "none_ready");
    let mix = Mix::new();
    let objects = mix.objects(None);
    let timeout = Duration::from_millis(400);
    let t0 = Instant::now();
    let ready = wait(&objects, Some(timeout)).expect("wait");
    let took = t0.elapsed();
    assert!(ready.is_empty(), "{ready:?}");
    assert!(
        took >= timeout,
        "returned after {took:?}, before the timeout"
    );
    drop(objects);
    mix.finish();
}

#[test]
fn zero_timeout_only_looks() {
    let _w = watchdog(LIMIT, "zero_timeout");
    let mix = Mix::new();
    let objects = mix.objects(None);
    assert!(
        wait(&objects, Some(Duration::ZERO))
            .expect("poll")
            .is_empty()
    );
    // Objects made ready in this process: a put, a send, a set.
    mix.chans[3].0.put(1).expect("put");
    mix.conns[5].0.send(2).expect("send");
    mix.events[9].set();
    let ready = wait(&objects, Some(Duration::ZERO)).expect("poll");
    assert_eq!(ready, [4 * 3 + 1, 4 * 5, 4 * 9 + 2]);
    // wait takes nothing: the messages are still there.
    assert_eq!(wait(&objects, Some(Duration::ZERO)).expect("poll"), ready);
    assert_eq!(mix.chans[3].1.try_get().expect("get"), 1);
    assert_eq!(mix.conns[5].1.try_recv().expect("recv"), 2);
    mix.events[9].clear();
    assert!(
        wait(&objects, Some(Duration::ZERO))
            .expect("poll")
            .is_empty()
    );
    drop(objects);
    mix.finish();
}

#[test]
fn dropped_sender_makes_the_receiver_ready() {
    let _w = watchdog(LIMIT, "dropped_sender");
    let (tx, rx) = channel();
    let (a, b) = pipe::<u32>().expect("pipe");
    let idle = Event::new().expect("event");
    let objects: [&dyn Waitable; 3] = [&idle, &rx, &b];
    assert!(
        wait(&objects, Some(Duration::ZERO))
            .expect("poll")
            .is_empty()
    );
    drop(tx);
    assert_eq!(wait(&objects, Some(LONG)).expect("wait"), [1]);
    drop(a);
    assert_eq!(wait(&objects, Some(LONG)).expect("wait"), [1, 2]);
    assert!(rx.try_get().is_err());
    assert!(b.try_recv().is_err());
}

#[test]
fn killed_sender_makes_the_receiver_ready() {
    let _w = watchdog(LIMIT, "killed_sender");
    let (tx, rx) = channel();
    let attached = Event::new().expect("event");
    let child = {
        let (tx, attached) = (tx.clone(), attached.clone());
        Process::fork(move || {
            attached.set();
            std::thread::sleep(NAP);
            drop(tx);
        })
        .expect("fork sender")
    };
    assert!(attached.wait_timeout(LONG), "child never started");
    drop(tx);
    let idle = Event::new().expect("event");
    let objects: [&dyn Waitable; 2] = [&idle, &rx];
    assert!(
        wait(&objects, Some(Duration::from_millis(50)))
            .expect("wait")
            .is_empty()
    );
    let sentinel = child.sentinel();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(DELAY);
        child.kill().expect("kill");
        child
    });
    // Nobody wakes the receiver's word: the wait must find the dead sender by probing.
    let t0 = Instant::now();
    assert_eq!(wait(&objects, Some(LONG)).expect("wait"), [1]);
    assert!(t0.elapsed() < LONG);
    assert!(rx.try_get().is_err());
    let child = killer.join().expect("killer");
    assert!(child.join().is_err(), "a killed child has no result");
    assert!(sentinel.is_ready());
}

#[test]
fn ending_and_killed_children_become_ready() {
    let _w = watchdog(LIMIT, "sentinels");
    let exits = Process::fork(|| std::thread::sleep(DELAY)).expect("fork");
    let sleeps = Process::fork(|| std::thread::sleep(NAP)).expect("fork");
    let idle = Event::new().expect("event");
    let (s0, s1): (Sentinel, Sentinel) = (exits.sentinel(), sleeps.sentinel());
    let objects: [&dyn Waitable; 3] = [&s0, &idle, &s1];
    let t0 = Instant::now();
    assert_eq!(wait(&objects, Some(LONG)).expect("wait"), [0]);
    assert!(t0.elapsed() >= DELAY / 2 && t0.elapsed() < LONG);
    // Joined and dropped: the sentinel still reports the end.
    exits.join().expect("exits");
    assert_eq!(wait(&objects, Some(Duration::ZERO)).expect("poll"), [0]);
    sleeps.kill().expect("kill");
    let objects: [&dyn Waitable; 2] = [&idle, &s1];
    assert_eq!(wait(&objects, Some(LONG)).expect("wait"), [1]);
    assert!(sleeps.join().is_err());
}

fn set_after_delay(ev: Event) {
    std::thread::sleep(DELAY);
    ev.set();
}

#[test]
fn event_set_by_a_spawned_process() {
    let _w = watchdog(LIMIT, "spawned_set");
    let ev = Event::new().expect("event");
    let (_tx, rx) = channel();
    let child = Process::spawn(set_after_delay, &ev).expect("spawn");
    let objects: [&dyn Waitable; 2] = [&rx, &ev];
    let t0 = Instant::now();
    assert_eq!(wait(&objects, Some(LONG)).expect("wait"), [1]);
    assert!(t0.elapsed() < LONG);
    child.join().expect("child");
}

#[test]
fn a_forked_child_waits_for_its_own_children() {
    let _w = watchdog(LIMIT, "fork");
    // Starts this process's exit watcher.
    let first = Process::fork(|| ()).expect("fork");
    assert_eq!(wait(&[&first], Some(LONG)).expect("wait"), [0]);
    first.join().expect("first");
    // The child inherits the watcher's state but not its thread: it must start its own.
    let child = Process::fork(|| -> bool {
        let grandchild = Process::fork(|| std::thread::sleep(DELAY)).expect("fork grandchild");
        let t0 = Instant::now();
        let ready = wait(&[&grandchild], Some(LONG)).expect("wait");
        let quick = t0.elapsed() < LONG;
        grandchild.join().expect("grandchild");
        ready == [0] && quick
    })
    .expect("fork child");
    assert!(
        child.join().expect("child"),
        "the forked child's wait failed"
    );
}

#[test]
fn an_empty_list_without_timeout_is_an_error() {
    assert!(wait(&[], None).is_err());
    let t0 = Instant::now();
    assert!(
        wait(&[], Some(Duration::from_millis(20)))
            .expect("sleep")
            .is_empty()
    );
    assert!(t0.elapsed() >= Duration::from_millis(20));
}

#[test]
fn events_alone_are_woken_not_found_by_a_timeout() {
    // No queue in the list: nothing bounds the sleep but the timeout, so only the setter's
    // wake can end it soon.
    let _w = watchdog(LIMIT, "events_alone");
    let (idle, ev) = (Event::new().expect("event"), Event::new().expect("event"));
    let at = stamp();
    let setter = {
        let (ev, at) = (&ev, &at);
        Process::fork(move || {
            std::thread::sleep(DELAY);
            at.store(mono_ns(), Ordering::SeqCst);
            ev.set();
        })
        .expect("fork setter")
    };
    let ready = wait(&[&idle, &ev], Some(LONG)).expect("wait");
    let returned = mono_ns();
    assert_eq!(ready, [1]);
    assert_soon(&at, returned);
    setter.join().expect("setter");
}

#[test]
fn the_same_object_twice_is_reported_twice() {
    let _w = watchdog(LIMIT, "twice");
    let (tx, rx) = channel();
    let q = Queue::<u32>::builder().create().expect("queue");
    let timeout = Duration::from_millis(50);
    let t0 = Instant::now();
    assert!(
        wait(&[&rx, &q, &rx], Some(timeout))
            .expect("wait")
            .is_empty()
    );
    assert!(t0.elapsed() >= timeout);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            tx.put(1).expect("put");
        });
        assert_eq!(wait(&[&rx, &q, &rx], Some(LONG)).expect("wait"), [0, 2]);
    });
    q.put(2).expect("put");
    assert_eq!(
        wait(&[&rx, &q, &rx], Some(Duration::ZERO)).expect("poll"),
        [0, 1, 2]
    );
}

/// A shut-down queue is ready (a get returns at once), even with nothing in it, and a queue
/// shut down while `wait` sleeps on it wakes it.
#[test]
fn a_shut_down_queue_is_ready() {
    let _w = watchdog(LIMIT, "a_shut_down_queue_is_ready");
    let (tx, rx) = channel();
    let (tx2, rx2) = channel();
    let idle = Event::new().expect("event");
    let objects: [&dyn Waitable; 3] = [&idle, &rx, &rx2];
    assert!(
        wait(&objects, Some(Duration::ZERO))
            .expect("poll")
            .is_empty()
    );
    tx.shutdown();
    assert_eq!(wait(&objects, Some(Duration::ZERO)).expect("poll"), [1]);
    let later: [&dyn Waitable; 2] = [&idle, &rx2];
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            tx2.shutdown_immediate();
        });
        assert_eq!(
            wait(&later, Some(Duration::from_secs(30))).expect("wait"),
            [1]
        );
    });
    assert_eq!(wait(&objects, Some(Duration::ZERO)).expect("poll"), [1, 2]);
}
