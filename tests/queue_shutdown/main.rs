//! `shutdown` and `shutdown_immediate` of `Queue` and `JoinableQueue` (Python's
//! `Queue.shutdown(immediate)`), across real processes under both start methods: blocked
//! callers in other processes wake up with `ShutDown` (or, for `join`, return); queued messages
//! are still drained after a plain shutdown and dropped by an immediate one.
#![cfg(feature = "serde")]

#[path = "../common/mod.rs"]
mod common;

use std::time::Duration;

use common::{eventually, watchdog};
use multiproc::{
    GetError, GetTimeoutError, JoinableQueue, Process, PutError, PutTimeoutError, Queue, Receiver,
    Sender, StartMethod, TaskDoneError, TryGetError, TryPutError,
};
use serde::{Deserialize, Serialize};

/// Watchdog for a whole test.
const LIMIT: Duration = Duration::from_secs(120);
/// How long a test waits for a child to start, report or finish.
const START: Duration = Duration::from_secs(30);
const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

/// How a child's blocked call ended.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Outcome {
    /// A get failed with `ShutDown`.
    GetShutDown,
    /// A put failed with `ShutDown` and gave this value back.
    PutShutDown(u32),
    /// `join` returned; the unfinished tasks right after.
    Joined { unfinished: u32 },
    /// Anything else, as the child saw it.
    Unexpected(String),
}

/// Starts `f(arg)` as a daemon child (it dies with us if the watchdog fires).
fn start<A, R>(method: StartMethod, f: fn(A) -> R, arg: A) -> Process<R>
where
    A: Serialize + for<'de> Deserialize<'de> + 'static,
    R: Serialize + for<'de> Deserialize<'de> + 'static,
{
    Process::builder()
        .start_method(method)
        .daemon(true)
        .spawn(f, arg)
        .expect("start child")
}

/// The child's result; it must finish within [`START`].
fn finish<R: Serialize + for<'de> Deserialize<'de> + 'static>(mut p: Process<R>, what: &str) -> R {
    match p.join_timeout(START) {
        Ok(Some(r)) => r,
        Ok(None) => {
            let _ = p.kill();
            panic!("{what}: child {} did not finish within {START:?}", p.pid());
        }
        Err(e) => panic!("{what}: child failed: {e}"),
    }
}

/// Waits for `n` children to report their pid on `ready` and then to be asleep (in the call
/// they were about to make: nothing else makes them sleep). Whether they are asleep yet only
/// changes which path wakes them; the results must be the same.
fn wait_until_asleep(ready: &Receiver<u32>, n: usize) {
    for _ in 0..n {
        let pid = ready.get_timeout(START).expect("a child reports");
        let asleep = || common::stat(pid).is_some_and(|s| s.state == 'S');
        assert!(eventually(START, asleep), "child {pid} never went to sleep");
    }
}

fn report_ready(ready: &Sender<u32>) {
    ready.put(std::process::id()).expect("report ready");
}

fn block_in_get((q, ready): (Receiver<u32>, Sender<u32>)) -> Outcome {
    report_ready(&ready);
    match q.get() {
        Err(GetError::ShutDown) => Outcome::GetShutDown,
        other => Outcome::Unexpected(format!("get: {other:?}")),
    }
}

fn block_in_put((q, ready): (JoinableQueue<u32>, Sender<u32>)) -> Outcome {
    report_ready(&ready);
    match q.put(42) {
        Err(PutError::ShutDown(v)) => Outcome::PutShutDown(v),
        other => Outcome::Unexpected(format!("put: {other:?}")),
    }
}

fn block_in_join((q, ready): (JoinableQueue<u32>, Sender<u32>)) -> Outcome {
    report_ready(&ready);
    q.join();
    Outcome::Joined {
        unfinished: q.unfinished_tasks(),
    }
}

/// Two children asleep in `get` on an empty queue, one asleep in `put` on a full joinable
/// queue and one in that queue's `join`: one immediate shutdown of each queue wakes all four,
/// each with exactly what Python gives (`ShutDown`; the put's value back; `join` returning,
/// the dropped message counted as done).
#[test]
fn shutdown_wakes_blocked_gets_puts_and_joins_in_other_processes() {
    let _watchdog = watchdog(LIMIT, "shutdown wakes blocked callers");
    for method in METHODS {
        let empty = Queue::<u32>::new(4).unwrap();
        let full = JoinableQueue::<u32>::new(1).unwrap();
        full.put(7).unwrap();
        let (ready_tx, ready) = Queue::<u32>::new(8).unwrap().split().unwrap();
        let getters: Vec<_> = (0..2)
            .map(|_| {
                let arg = (empty.receiver().unwrap(), ready_tx.clone());
                start(method, block_in_get, arg)
            })
            .collect();
        let putter = start(method, block_in_put, (full.clone(), ready_tx.clone()));
        let joiner = start(method, block_in_join, (full.clone(), ready_tx.clone()));
        wait_until_asleep(&ready, 4);
        assert!(!empty.is_shutdown() && !full.is_shutdown());

        empty.shutdown_immediate();
        full.shutdown_immediate();

        for (i, g) in getters.into_iter().enumerate() {
            let what = format!("{method:?} getter {i}");
            assert_eq!(finish(g, &what), Outcome::GetShutDown, "{what}");
        }
        assert_eq!(
            finish(putter, "putter"),
            Outcome::PutShutDown(42),
            "{method:?}"
        );
        assert_eq!(
            finish(joiner, "joiner"),
            Outcome::Joined { unfinished: 0 },
            "{method:?}"
        );
        assert!(empty.is_shutdown() && full.is_shutdown());
        assert_eq!(full.len(), 0, "the queued message was dropped");
        assert_eq!(full.try_get(), Err(TryGetError::ShutDown));
        assert_eq!(full.task_done(), Err(TaskDoneError));
    }
}

/// Marks that the producer has put this many messages, so the test shuts down mid-stream.
const WARM_UP: u32 = 1000;

fn produce_until_shut_down((q, ready): (Sender<u32>, Sender<u32>)) -> Outcome {
    report_ready(&ready);
    for v in 0.. {
        match q.put(v) {
            Ok(()) => {}
            Err(PutError::ShutDown(back)) if back == v => return Outcome::PutShutDown(v),
            other => return Outcome::Unexpected(format!("put {v}: {other:?}")),
        }
        if v + 1 == WARM_UP {
            report_ready(&ready);
        }
    }
    unreachable!()
}

fn drain_until_shut_down((q, ready): (Receiver<u32>, Sender<u32>)) -> (Vec<u32>, Outcome) {
    report_ready(&ready);
    let mut got = Vec::new();
    loop {
        match q.get() {
            Ok(v) => got.push(v),
            Err(GetError::ShutDown) => return (got, Outcome::GetShutDown),
            Err(e) => return (got, Outcome::Unexpected(format!("get: {e:?}"))),
        }
    }
}

/// A plain shutdown in the middle of a stream: one producer child puts 0, 1, 2, ... through a
/// small queue until its put fails with `ShutDown`; two consumer children get until their get
/// fails with `ShutDown`. Every message whose put succeeded is received exactly once, each
/// consumer sees them in order, and nothing is received that was not put: the messages queued
/// at the shutdown are drained, and no put succeeds after the consumers have seen the end.
#[test]
fn a_plain_shutdown_drains_what_was_put_then_fails_in_every_process() {
    let _watchdog = watchdog(LIMIT, "plain shutdown drains");
    for method in METHODS {
        let q = Queue::<u32>::new(8).unwrap();
        let (ready_tx, ready) = Queue::<u32>::new(8).unwrap().split().unwrap();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let arg = (q.receiver().unwrap(), ready_tx.clone());
                start(method, drain_until_shut_down, arg)
            })
            .collect();
        for _ in 0..2 {
            ready.get_timeout(START).expect("a consumer reports");
        }
        let producer = start(
            method,
            produce_until_shut_down,
            (q.sender().unwrap(), ready_tx.clone()),
        );
        ready.get_timeout(START).expect("the producer starts");
        ready.get_timeout(START).expect("the producer warms up");

        q.shutdown();
        // Right away, in this process too: puts are refused with the value back.
        assert_eq!(q.try_put(7), Err(TryPutError::ShutDown(7)));
        assert_eq!(q.put(8), Err(PutError::ShutDown(8)));
        assert_eq!(
            q.put_timeout(9, Duration::from_millis(10)),
            Err(PutTimeoutError::ShutDown(9))
        );

        let put = match finish(producer, "producer") {
            Outcome::PutShutDown(n) => n,
            other => panic!("{method:?} producer: {other:?}"),
        };
        assert!(put >= WARM_UP, "{method:?}: {put} puts");
        let mut all = Vec::new();
        for (i, c) in consumers.into_iter().enumerate() {
            let (got, end) = finish(c, "consumer");
            assert_eq!(end, Outcome::GetShutDown, "{method:?} consumer {i}");
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "{method:?} consumer {i}: out of order"
            );
            all.extend(got);
        }
        all.sort_unstable();
        assert_eq!(all.len(), put as usize, "{method:?}: received vs put");
        assert!(
            all.iter().copied().eq(0..put),
            "{method:?}: not exactly 0..{put}"
        );
        assert_eq!(q.try_get(), Err(TryGetError::ShutDown));
        assert_eq!(q.get(), Err(GetError::ShutDown));
    }
}

/// Items queued before a plain shutdown are drained by a child that opens the queue only
/// afterwards, in order, and then it gets `ShutDown` from every form of get.
fn drain_after(q: Receiver<u32>) -> (Vec<u32>, Vec<Outcome>) {
    let mut got = Vec::new();
    while let Ok(v) = q.try_get() {
        got.push(v);
    }
    let ends = vec![
        match q.try_get() {
            Err(TryGetError::ShutDown) => Outcome::GetShutDown,
            other => Outcome::Unexpected(format!("try_get: {other:?}")),
        },
        match q.get_timeout(Duration::from_secs(5)) {
            Err(GetTimeoutError::ShutDown) => Outcome::GetShutDown,
            other => Outcome::Unexpected(format!("get_timeout: {other:?}")),
        },
        match q.get() {
            Err(GetError::ShutDown) => Outcome::GetShutDown,
            other => Outcome::Unexpected(format!("get: {other:?}")),
        },
    ];
    (got, ends)
}

#[test]
fn messages_queued_before_a_plain_shutdown_are_drained_in_another_process() {
    let _watchdog = watchdog(LIMIT, "drain after shutdown");
    for method in METHODS {
        let q = Queue::<u32>::new(16).unwrap();
        for v in 0..10 {
            q.put(v).unwrap();
        }
        q.shutdown();
        q.shutdown(); // idempotent
        assert!(q.is_shutdown());
        assert!(!q.is_closed());
        assert_eq!(q.len(), 10);
        let child = start(method, drain_after, q.receiver().unwrap());
        let (got, ends) = finish(child, "drainer");
        assert_eq!(got, (0..10).collect::<Vec<_>>(), "{method:?}");
        assert_eq!(ends, [const { Outcome::GetShutDown }; 3], "{method:?}");
    }
}

fn join_then_report((q, ready): (JoinableQueue<u32>, Sender<u32>)) -> Outcome {
    report_ready(&ready);
    q.join();
    Outcome::Joined {
        unfinished: q.unfinished_tasks(),
    }
}

/// An immediate shutdown with messages queued: gets fail at once in every form, the queued
/// messages are gone, and a `join` asleep in another process returns once the one task taken
/// before the shutdown is done (the dropped ones count as done, the taken one does not: as
/// Python's `shutdown(immediate=True)`).
#[test]
fn an_immediate_shutdown_drops_queued_messages_and_lets_join_return() {
    let _watchdog = watchdog(LIMIT, "immediate shutdown");
    for method in METHODS {
        let q = JoinableQueue::<u32>::new(8).unwrap();
        for v in 1..=3 {
            q.put(v).unwrap();
        }
        assert_eq!(q.get().unwrap(), 1); // a task in flight
        let (ready_tx, ready) = Queue::<u32>::new(1).unwrap().split().unwrap();
        let mut joiner = start(method, join_then_report, (q.clone(), ready_tx));
        wait_until_asleep(&ready, 1);

        q.shutdown_immediate();
        assert!(q.is_shutdown());
        assert_eq!(q.len(), 0);
        assert_eq!(q.unfinished_tasks(), 1);
        assert_eq!(q.try_get(), Err(TryGetError::ShutDown));
        assert_eq!(
            q.get_timeout(Duration::from_secs(5)),
            Err(GetTimeoutError::ShutDown)
        );
        assert_eq!(q.get(), Err(GetError::ShutDown));
        assert_eq!(q.put(4), Err(PutError::ShutDown(4)));
        // The task in flight keeps the joiner waiting (a lower bound: it must not return).
        assert!(
            matches!(joiner.join_timeout(Duration::from_millis(300)), Ok(None)),
            "{method:?}: join returned with a task unfinished"
        );
        q.task_done().unwrap();
        assert_eq!(
            finish(joiner, "joiner"),
            Outcome::Joined { unfinished: 0 },
            "{method:?}"
        );
        assert_eq!(q.task_done(), Err(TaskDoneError));
        q.join();
    }
}

/// `shutdown_immediate` may follow a plain `shutdown`: what the gets had not drained yet is
/// dropped then. Both are idempotent, and `close` neither undoes nor hides a shutdown.
#[test]
fn an_immediate_shutdown_after_a_plain_one_drops_the_rest() {
    let q = JoinableQueue::<u32>::new(8).unwrap();
    for v in 1..=3 {
        q.put(v).unwrap();
    }
    q.shutdown();
    assert_eq!(q.get(), Ok(1));
    q.task_done().unwrap();
    q.close();
    assert!(q.is_closed() && q.is_shutdown());
    assert_eq!(q.put(9), Err(PutError::ShutDown(9)));
    assert_eq!(q.unfinished_tasks(), 2);
    q.shutdown_immediate();
    q.shutdown_immediate();
    q.shutdown();
    assert_eq!(q.try_get(), Err(TryGetError::ShutDown));
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.join_timeout(Duration::from_secs(5)));
}

/// The ends of a split queue shut it down for each other: a `Sender` can shut down what a
/// `Receiver` waits on, and the other way round.
#[test]
fn either_end_can_shut_the_queue_down() {
    let _watchdog = watchdog(LIMIT, "either end");
    let (tx, rx) = Queue::<u32>::new(1).unwrap().split().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| rx.get());
        std::thread::sleep(Duration::from_millis(50));
        tx.shutdown();
        assert_eq!(waiter.join().unwrap(), Err(GetError::ShutDown));
    });
    assert!(tx.is_shutdown() && rx.is_shutdown());

    let (tx, rx) = Queue::<u32>::new(1).unwrap().split().unwrap();
    tx.put(1).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| tx.put(2));
        std::thread::sleep(Duration::from_millis(50));
        rx.shutdown();
        assert_eq!(waiter.join().unwrap(), Err(PutError::ShutDown(2)));
    });
    // A plain shutdown: the message queued before it is still there.
    assert_eq!(rx.get(), Ok(1));
    assert_eq!(rx.get(), Err(GetError::ShutDown));
    // `poll` says a get would return at once.
    assert!(rx.poll(Duration::from_secs(5)));
}
