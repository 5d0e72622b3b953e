//! Cross-process tests of the sync kit: every test starts real processes (this binary re-run
//! with a role) and checks exact results.

#[path = "../common/mod.rs"]
mod common;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    arg, counter, eventually, join_all, new_counter, role, spawn, unique_name, wait_for, watchdog,
};
use multiproc::{
    Barrier, BoundedSemaphore, Condition, Event, Lock, LockGuard, OverReleaseError, RLock,
    Semaphore, SharedObject, TryLockError,
};

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Owner death

/// Child: take the lock (RLock: twice), say so through `held`, then sleep until killed.
fn hold_until_killed(reentrant: bool) {
    let held = counter(&arg("HELD"));
    if reentrant {
        let rlock = RLock::open(&arg("LOCK")).unwrap();
        let a = rlock.lock().unwrap();
        let b = rlock.lock().unwrap();
        assert_eq!(rlock.depth(), 2);
        held.store(1, Ordering::SeqCst);
        std::thread::sleep(LIMIT);
        drop((b, a));
    } else {
        let lock = Lock::open(&arg("LOCK")).unwrap();
        let _g = lock.lock().unwrap();
        held.store(1, Ordering::SeqCst);
        std::thread::sleep(LIMIT);
    }
}

/// Child: 10,000 increments of a plain (non-atomic) read-modify-write under the lock.
fn increment_under(reentrant: bool, rounds: u64) {
    let total = counter(&arg("TOTAL"));
    let bump = || {
        let v = total.load(Ordering::Relaxed);
        std::hint::spin_loop();
        total.store(v + 1, Ordering::Relaxed);
    };
    if reentrant {
        let rlock = RLock::open(&arg("LOCK")).unwrap();
        for _ in 0..rounds {
            let _a = rlock
                .lock()
                .expect("recovered lock must not report owner-died again");
            let _b = rlock.lock().unwrap();
            bump();
        }
    } else {
        let lock = Lock::open(&arg("LOCK")).unwrap();
        for _ in 0..rounds {
            let _g = lock
                .lock()
                .expect("recovered lock must not report owner-died again");
            bump();
        }
    }
}

fn owner_died_scenario(test: &str, reentrant: bool) {
    const ROUNDS: u64 = 10_000;
    let _watchdog = watchdog(LIMIT, "owner-died test");
    let lock_name = unique_name("lock");
    // Keep whichever object we create alive for the whole test (the creator unlinks on drop).
    let lock = (!reentrant).then(|| Lock::builder().name(&lock_name).create().unwrap());
    let rlock = reentrant.then(|| RLock::builder().name(&lock_name).create().unwrap());
    let (held, held_name) = new_counter("held");
    let (total, total_name) = new_counter("total");

    let mut holder = spawn(
        test,
        "hold",
        &[("LOCK", lock_name.clone()), ("HELD", held_name.clone())],
    );
    assert!(
        eventually(Duration::from_secs(20), || held.load(Ordering::SeqCst) == 1),
        "holder never took the lock"
    );
    let busy = match (&lock, &rlock) {
        (Some(l), _) => matches!(l.try_lock(), Err(TryLockError::WouldBlock)),
        (_, Some(r)) => matches!(r.try_lock(), Err(TryLockError::WouldBlock)),
        _ => unreachable!(),
    };
    assert!(busy, "lock must be held by the child");

    holder.kill().expect("SIGKILL holder");
    let killed_at = Instant::now();
    // Deliberately not reaped yet: a zombie holder must count as dead too.
    match (&lock, &rlock) {
        (Some(l), _) => {
            let died = l.lock().expect_err("next locker must see owner-died");
            assert!(l.is_poisoned());
            let g = died.recover();
            assert!(!l.is_poisoned());
            drop(g);
        }
        (_, Some(r)) => {
            let died = r.lock().expect_err("next locker must see owner-died");
            assert!(r.is_poisoned());
            let g = died.recover();
            assert_eq!(r.depth(), 1, "new owner starts at depth 1");
            drop(g);
            assert!(!r.is_locked());
        }
        _ => unreachable!(),
    }
    let noticed = killed_at.elapsed();
    assert!(
        noticed < Duration::from_secs(1),
        "owner death noticed after {noticed:?}"
    );
    let _ = holder.wait();

    // The lock works normally afterwards: this process and another each do ROUNDS increments.
    let args = [("LOCK", lock_name.clone()), ("TOTAL", total_name.clone())];
    let worker = spawn(test, "work", &args);
    let bump = || {
        let v = total.load(Ordering::Relaxed);
        std::hint::spin_loop();
        total.store(v + 1, Ordering::Relaxed);
    };
    for _ in 0..ROUNDS {
        match (&lock, &rlock) {
            (Some(l), _) => {
                let _g = l.lock().expect("no owner-died after recovery");
                bump();
            }
            (_, Some(r)) => {
                let _a = r.lock().expect("no owner-died after recovery");
                let _b = r.lock().unwrap();
                bump();
            }
            _ => unreachable!(),
        }
    }
    join_all(vec![worker], LIMIT);
    assert_eq!(total.load(Ordering::SeqCst), 2 * ROUNDS);
}

#[test]
fn lock_holder_killed_is_owner_died_and_recoverable() {
    match role().as_deref() {
        Some("hold") => return hold_until_killed(false),
        Some("work") => return increment_under(false, 10_000),
        _ => {}
    }
    owner_died_scenario(
        &this_test!(lock_holder_killed_is_owner_died_and_recoverable),
        false,
    );
}

#[test]
fn rlock_holder_killed_at_depth_two_is_owner_died_and_recoverable() {
    match role().as_deref() {
        Some("hold") => return hold_until_killed(true),
        Some("work") => return increment_under(true, 10_000),
        _ => {}
    }
    owner_died_scenario(
        &this_test!(rlock_holder_killed_at_depth_two_is_owner_died_and_recoverable),
        true,
    );
}

#[test]
fn condition_lock_holder_killed_is_owner_died() {
    if role().as_deref() == Some("hold") {
        let cond = Condition::open(&arg("COND")).unwrap();
        let held = counter(&arg("HELD"));
        let _g = cond.lock().unwrap();
        held.store(1, Ordering::SeqCst);
        std::thread::sleep(LIMIT);
        return;
    }
    let _watchdog = watchdog(LIMIT, "condition owner-died test");
    let name = unique_name("cond");
    let cond = Condition::builder().name(&name).create().unwrap();
    let (held, held_name) = new_counter("held");
    let mut child = spawn(
        &this_test!(condition_lock_holder_killed_is_owner_died),
        "hold",
        &[("COND", name), ("HELD", held_name)],
    );
    assert!(eventually(Duration::from_secs(20), || held
        .load(Ordering::SeqCst)
        == 1));
    child.kill().unwrap();
    let t = Instant::now();
    let g = cond.lock().expect_err("owner-died").recover();
    assert!(t.elapsed() < Duration::from_secs(1));
    // The condition still works: a timed wait times out normally.
    let (g, notified) = cond.wait_timeout(g, Duration::from_millis(20)).unwrap();
    assert!(!notified);
    drop(g);
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Barrier, Event, Condition, Semaphore across processes

#[test]
fn barrier_four_processes_thousand_rounds() {
    const PARTIES: u32 = 4;
    const ROUNDS: u64 = 1_000;
    if role().as_deref() == Some("party") {
        let _watchdog = watchdog(LIMIT, "barrier party");
        let barrier = Barrier::open(&arg("BARRIER")).unwrap();
        let arrived = counter(&arg("ARRIVED"));
        let index_sum = counter(&arg("INDEX_SUM"));
        for round in 0..ROUNDS {
            arrived.fetch_add(1, Ordering::SeqCst);
            let index = barrier.wait().expect("barrier must not break");
            assert!(index < PARTIES);
            index_sum.fetch_add(u64::from(index), Ordering::SeqCst);
            // Nobody passes before all four arrived in this round.
            let seen = arrived.load(Ordering::SeqCst);
            assert!(
                seen >= u64::from(PARTIES) * (round + 1),
                "passed round {round} with only {seen} arrivals"
            );
        }
        return;
    }
    let _watchdog = watchdog(LIMIT, "barrier test");
    let name = unique_name("barrier");
    let barrier = Barrier::builder()
        .name(&name)
        .parties(PARTIES)
        .create()
        .unwrap();
    let (arrived, arrived_name) = new_counter("arrived");
    let (index_sum, sum_name) = new_counter("isum");
    let test = this_test!(barrier_four_processes_thousand_rounds);
    let children = (0..PARTIES)
        .map(|_| {
            spawn(
                &test,
                "party",
                &[
                    ("BARRIER", name.clone()),
                    ("ARRIVED", arrived_name.clone()),
                    ("INDEX_SUM", sum_name.clone()),
                ],
            )
        })
        .collect();
    join_all(children, LIMIT);
    assert_eq!(arrived.load(Ordering::SeqCst), u64::from(PARTIES) * ROUNDS);
    // Each round hands out the indices 0..PARTIES exactly once.
    assert_eq!(index_sum.load(Ordering::SeqCst), ROUNDS * 6);
    assert!(!barrier.is_broken());
}

#[test]
fn barrier_party_killed_breaks_barrier() {
    if role().as_deref() == Some("party") {
        let barrier = Barrier::open(&arg("BARRIER")).unwrap();
        let _ = barrier.wait();
        unreachable!("the third party never comes");
    }
    let _watchdog = watchdog(LIMIT, "barrier kill test");
    let name = unique_name("barrier");
    let barrier = Barrier::builder().name(&name).parties(3).create().unwrap();
    let mut child = spawn(
        &this_test!(barrier_party_killed_breaks_barrier),
        "party",
        &[("BARRIER", name)],
    );
    assert!(eventually(Duration::from_secs(20), || barrier.n_waiting() == 1));
    child.kill().unwrap();
    let t = Instant::now();
    // We are the second of three parties; the first is dead, the third never comes.
    assert_eq!(barrier.wait(), Err(multiproc::BrokenBarrierError));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(barrier.is_broken());
    barrier.reset();
    assert!(!barrier.is_broken());
    assert_eq!(barrier.n_waiting(), 0);
    let _ = child.wait();
}

/// The round counter that [`count_round`] bumps, opened once per party process.
static ROUNDS_RUN: std::sync::OnceLock<multiproc::RawValue<std::sync::atomic::AtomicU64>> =
    std::sync::OnceLock::new();
/// The arrivals counter that [`count_round`] checks.
static ARRIVALS: std::sync::OnceLock<multiproc::RawValue<std::sync::atomic::AtomicU64>> =
    std::sync::OnceLock::new();
const ACTION_PARTIES: u64 = 3;

/// Barrier action: all parties of this round have arrived, and it is the first run this round.
fn count_round() {
    let runs = ROUNDS_RUN.get().expect("opened before waiting");
    let arrived = ARRIVALS.get().expect("opened before waiting");
    let round = runs.load(Ordering::SeqCst);
    assert_eq!(arrived.load(Ordering::SeqCst), ACTION_PARTIES * (round + 1));
    runs.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn barrier_action_runs_once_per_round_before_any_party_passes() {
    const ROUNDS: u64 = 300;
    if role().as_deref() == Some("party") {
        let _watchdog = watchdog(LIMIT, "barrier action party");
        let barrier = Barrier::open(&arg("BARRIER")).unwrap();
        let runs = ROUNDS_RUN.get_or_init(|| counter(&arg("RUNS")));
        let arrived = ARRIVALS.get_or_init(|| counter(&arg("ARRIVED")));
        for round in 0..ROUNDS {
            arrived.fetch_add(1, Ordering::SeqCst);
            barrier
                .wait_with_action(count_round)
                .expect("barrier must not break");
            // The action of this round ran, exactly once, before we passed; the next round's
            // cannot have run yet, since it needs our arrival.
            assert_eq!(runs.load(Ordering::SeqCst), round + 1);
        }
        return;
    }
    let _watchdog = watchdog(LIMIT, "barrier action test");
    let name = unique_name("barrier");
    let barrier = Barrier::builder()
        .name(&name)
        .parties(ACTION_PARTIES as u32)
        .create()
        .unwrap();
    let (runs, runs_name) = new_counter("runs");
    let (arrived, arrived_name) = new_counter("arrived");
    let test = this_test!(barrier_action_runs_once_per_round_before_any_party_passes);
    let children = (0..ACTION_PARTIES)
        .map(|_| {
            spawn(
                &test,
                "party",
                &[
                    ("BARRIER", name.clone()),
                    ("RUNS", runs_name.clone()),
                    ("ARRIVED", arrived_name.clone()),
                ],
            )
        })
        .collect();
    join_all(children, LIMIT);
    assert_eq!(runs.load(Ordering::SeqCst), ROUNDS);
    assert_eq!(arrived.load(Ordering::SeqCst), ACTION_PARTIES * ROUNDS);
    assert!(!barrier.is_broken());
}

fn panicking_action() {
    panic!("barrier action fails on purpose");
}

#[test]
fn barrier_action_panic_breaks_barrier_for_all_parties() {
    if role().as_deref() == Some("party") {
        let _watchdog = watchdog(LIMIT, "barrier panic party");
        let barrier = Barrier::open(&arg("BARRIER")).unwrap();
        assert_eq!(barrier.wait(), Err(multiproc::BrokenBarrierError));
        counter(&arg("BROKEN")).fetch_add(1, Ordering::SeqCst);
        return;
    }
    let _watchdog = watchdog(LIMIT, "barrier panic test");
    let name = unique_name("barrier");
    let barrier = Barrier::builder().name(&name).parties(3).create().unwrap();
    let (broken, broken_name) = new_counter("broken");
    let test = this_test!(barrier_action_panic_breaks_barrier_for_all_parties);
    let children = (0..2)
        .map(|_| {
            spawn(
                &test,
                "party",
                &[("BARRIER", name.clone()), ("BROKEN", broken_name.clone())],
            )
        })
        .collect();
    // Both children wait without an action; we arrive last and run the one that panics.
    assert!(eventually(Duration::from_secs(20), || barrier.n_waiting() == 2));
    assert_eq!(
        barrier.wait_with_action(panicking_action),
        Err(multiproc::BrokenBarrierError)
    );
    assert!(barrier.is_broken());
    join_all(children, LIMIT);
    assert_eq!(broken.load(Ordering::SeqCst), 2);
    barrier.reset();
    assert!(!barrier.is_broken());
    assert_eq!(barrier.n_waiting(), 0);
}

#[test]
fn event_set_wakes_waiters_in_four_processes() {
    if role().as_deref() == Some("waiter") {
        let _watchdog = watchdog(LIMIT, "event waiter");
        let ev = Event::open(&arg("EVENT")).unwrap();
        counter(&arg("READY")).fetch_add(1, Ordering::SeqCst);
        assert!(ev.wait_timeout(Duration::from_secs(30)), "never woken");
        counter(&arg("WOKE")).fetch_add(1, Ordering::SeqCst);
        return;
    }
    let _watchdog = watchdog(LIMIT, "event test");
    let name = unique_name("event");
    let ev = Event::builder().name(&name).create().unwrap();
    let (ready, ready_name) = new_counter("ready");
    let (woke, woke_name) = new_counter("woke");
    let test = this_test!(event_set_wakes_waiters_in_four_processes);
    let children: Vec<_> = (0..4)
        .map(|_| {
            spawn(
                &test,
                "waiter",
                &[
                    ("EVENT", name.clone()),
                    ("READY", ready_name.clone()),
                    ("WOKE", woke_name.clone()),
                ],
            )
        })
        .collect();
    assert!(eventually(Duration::from_secs(20), || ready
        .load(Ordering::SeqCst)
        == 4));
    // Give them time to fall asleep on the futex, so the wake path is what we test.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(woke.load(Ordering::SeqCst), 0);
    ev.set();
    join_all(children, LIMIT);
    assert_eq!(woke.load(Ordering::SeqCst), 4);
    assert!(ev.is_set());
    ev.clear();
    assert!(!ev.is_set());
}

#[test]
fn condition_notify_one_then_all_across_processes() {
    if role().as_deref() == Some("waiter") {
        let _watchdog = watchdog(LIMIT, "condition waiter");
        let cond = Condition::open(&arg("COND")).unwrap();
        let waiting = counter(&arg("WAITING"));
        let woken = counter(&arg("WOKEN"));
        let g = cond.lock().unwrap();
        waiting.fetch_add(1, Ordering::SeqCst);
        let (g, notified) = cond.wait_timeout(g, Duration::from_secs(30)).unwrap();
        assert!(notified, "waiter timed out instead of being notified");
        woken.fetch_add(1, Ordering::SeqCst);
        drop(g);
        return;
    }
    let _watchdog = watchdog(LIMIT, "condition test");
    let name = unique_name("cond");
    let cond = Condition::builder().name(&name).create().unwrap();
    let (waiting, waiting_name) = new_counter("waiting");
    let (woken, woken_name) = new_counter("woken");
    let test = this_test!(condition_notify_one_then_all_across_processes);
    let children: Vec<_> = (0..3)
        .map(|_| {
            spawn(
                &test,
                "waiter",
                &[
                    ("COND", name.clone()),
                    ("WAITING", waiting_name.clone()),
                    ("WOKEN", woken_name.clone()),
                ],
            )
        })
        .collect();
    assert!(eventually(Duration::from_secs(20), || waiting
        .load(Ordering::SeqCst)
        == 3));
    {
        // Each waiter counted itself under the lock and then entered wait, which releases it:
        // once we hold the lock, all three are registered waiters.
        let g = cond.lock().unwrap();
        cond.notify_one(&g);
    }
    assert!(eventually(Duration::from_secs(10), || woken
        .load(Ordering::SeqCst)
        == 1));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        woken.load(Ordering::SeqCst),
        1,
        "notify_one woke more than one"
    );
    {
        let g = cond.lock().unwrap();
        cond.notify_all(&g);
    }
    join_all(children, LIMIT);
    assert_eq!(woken.load(Ordering::SeqCst), 3);
}

#[test]
fn recursive_condition_wait_releases_every_level_across_processes() {
    if role().as_deref() == Some("waiter") {
        let _watchdog = watchdog(LIMIT, "recursive condition waiter");
        let cond = Condition::open(&arg("COND")).unwrap();
        assert!(cond.is_recursive());
        let waiting = counter(&arg("WAITING"));
        let depth_after = counter(&arg("DEPTH"));
        let outer = cond.lock().unwrap();
        let middle = cond.lock().unwrap();
        let inner = cond.try_lock().unwrap();
        assert_eq!(cond.depth(), 3);
        waiting.fetch_add(1, Ordering::SeqCst);
        let (inner, notified) = cond.wait_timeout(inner, Duration::from_secs(30)).unwrap();
        assert!(notified, "waiter timed out instead of being notified");
        depth_after.store(u64::from(cond.depth()), Ordering::SeqCst);
        drop(inner);
        assert_eq!(cond.depth(), 2);
        drop(middle);
        drop(outer);
        assert_eq!(cond.depth(), 0);
        return;
    }
    let _watchdog = watchdog(LIMIT, "recursive condition test");
    let name = unique_name("rcond");
    let cond = Condition::builder()
        .name(&name)
        .recursive(true)
        .create()
        .unwrap();
    let (waiting, waiting_name) = new_counter("waiting");
    let (depth_after, depth_name) = new_counter("depth");
    let mut child = spawn(
        &this_test!(recursive_condition_wait_releases_every_level_across_processes),
        "waiter",
        &[
            ("COND", name.clone()),
            ("WAITING", waiting_name),
            ("DEPTH", depth_name),
        ],
    );
    assert!(eventually(Duration::from_secs(20), || waiting
        .load(Ordering::SeqCst)
        == 1));
    {
        // The child holds three levels and waits: the wait released them all, so we get the
        // lock, and take it twice ourselves before notifying from the inner level.
        let outer = cond
            .try_lock_for(Duration::from_secs(20))
            .expect("wait released every level");
        let inner = cond.lock().unwrap();
        assert_eq!(cond.depth(), 2);
        cond.notify_one(&inner);
        drop(inner);
        assert!(cond.try_lock().is_ok(), "still ours at depth 1");
        drop(outer);
    }
    let status = wait_for(&mut child, LIMIT);
    assert!(status.success(), "waiter failed: {status}");
    assert_eq!(depth_after.load(Ordering::SeqCst), 3);
    assert_eq!(cond.depth(), 0);
    assert!(Condition::open(&name).unwrap().try_lock().is_ok());
}

#[test]
fn plain_condition_is_not_reentrant() {
    let cond = Condition::new().unwrap();
    assert!(!cond.is_recursive());
    let g = cond.lock().unwrap();
    assert_eq!(cond.depth(), 1);
    assert!(matches!(cond.try_lock(), Err(TryLockError::WouldBlock)));
    drop(g);
    assert_eq!(cond.depth(), 0);
}

#[test]
fn semaphore_two_across_six_processes_never_more_than_two_holders() {
    const ROUNDS: u64 = 2_000;
    if role().as_deref() == Some("user") {
        let _watchdog = watchdog(LIMIT, "semaphore user");
        let sem = Semaphore::open(&arg("SEM")).unwrap();
        let inside = counter(&arg("INSIDE"));
        let max = counter(&arg("MAX"));
        let total = counter(&arg("TOTAL"));
        for _ in 0..ROUNDS {
            sem.acquire();
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            for _ in 0..50 {
                std::hint::spin_loop();
            }
            total.fetch_add(1, Ordering::SeqCst);
            inside.fetch_sub(1, Ordering::SeqCst);
            sem.release();
        }
        return;
    }
    let _watchdog = watchdog(LIMIT, "semaphore test");
    let name = unique_name("sem");
    let sem = Semaphore::builder().name(&name).value(2).create().unwrap();
    let (inside, inside_name) = new_counter("inside");
    let (max, max_name) = new_counter("max");
    let (total, total_name) = new_counter("total");
    let test = this_test!(semaphore_two_across_six_processes_never_more_than_two_holders);
    let children = (0..6)
        .map(|_| {
            spawn(
                &test,
                "user",
                &[
                    ("SEM", name.clone()),
                    ("INSIDE", inside_name.clone()),
                    ("MAX", max_name.clone()),
                    ("TOTAL", total_name.clone()),
                ],
            )
        })
        .collect();
    join_all(children, LIMIT);
    assert_eq!(total.load(Ordering::SeqCst), 6 * ROUNDS);
    assert_eq!(inside.load(Ordering::SeqCst), 0);
    let m = max.load(Ordering::SeqCst);
    assert!((1..=2).contains(&m), "saw {m} holders at once");
    assert_eq!(sem.get_value(), 2);
}

#[test]
fn bounded_semaphore_over_release_is_an_error() {
    let sem = BoundedSemaphore::new(2).unwrap();
    assert_eq!(sem.release(), Err(OverReleaseError));
    assert_eq!(sem.get_value(), 2);
    sem.acquire();
    assert!(sem.try_acquire());
    assert!(!sem.try_acquire());
    assert_eq!(sem.release(), Ok(()));
    assert_eq!(sem.release(), Ok(()));
    assert_eq!(sem.release(), Err(OverReleaseError));
    assert_eq!(sem.get_value(), 2);
    // Through a second attachment, the bound holds as well.
    let other = BoundedSemaphore::from_handle(&sem.handle()).unwrap();
    assert_eq!(other.max_value(), 2);
    assert_eq!(other.release(), Err(OverReleaseError));
}

#[test]
fn semaphore_release_wakes_a_waiter_in_another_process() {
    if role().as_deref() == Some("waiter") {
        let _watchdog = watchdog(LIMIT, "semaphore waiter");
        let sem = Semaphore::open(&arg("SEM")).unwrap();
        assert!(sem.try_acquire_for(Duration::from_secs(30)));
        return;
    }
    let _watchdog = watchdog(LIMIT, "semaphore wake test");
    let name = unique_name("sem");
    let sem = Semaphore::builder().name(&name).value(0).create().unwrap();
    let mut child = spawn(
        &this_test!(semaphore_release_wakes_a_waiter_in_another_process),
        "waiter",
        &[("SEM", name)],
    );
    std::thread::sleep(Duration::from_millis(100));
    sem.release();
    let status = wait_for(&mut child, LIMIT);
    assert!(status.success());
    assert_eq!(sem.get_value(), 0);
}

// ---------------------------------------------------------------------------------------------
// Timeouts: never early, not absurdly late.

fn check_timeout(what: &str, timeout: Duration, f: impl FnOnce() -> bool) {
    let t = Instant::now();
    let succeeded = f();
    let took = t.elapsed();
    assert!(!succeeded, "{what}: should have timed out");
    assert!(
        took >= timeout,
        "{what}: returned after {took:?}, before {timeout:?}"
    );
    assert!(
        took <= timeout + Duration::from_secs(1),
        "{what}: returned after {took:?}, far past {timeout:?}"
    );
}

#[test]
fn every_timeout_form_waits_at_least_its_timeout() {
    if role().as_deref() == Some("holder") {
        // Hold every lock until told to stop.
        let lock = Lock::open(&arg("LOCK")).unwrap();
        let rlock = RLock::open(&arg("RLOCK")).unwrap();
        let cond = Condition::open(&arg("COND")).unwrap();
        let value = multiproc::Value::<u64>::open(&arg("VALUE")).unwrap();
        let array = multiproc::Array::<u64>::open(&arg("ARRAY")).unwrap();
        let flag = counter(&arg("FLAG"));
        let guards = (
            lock.lock().unwrap(),
            rlock.lock().unwrap(),
            cond.lock().unwrap(),
            value.lock().unwrap(),
            array.lock().unwrap(),
        );
        flag.store(1, Ordering::SeqCst);
        assert!(eventually(LIMIT, || flag.load(Ordering::SeqCst) == 2));
        drop(guards);
        return;
    }
    let _watchdog = watchdog(LIMIT, "timeout test");
    let names: Vec<String> = ["lock", "rlock", "cond", "value", "array"]
        .iter()
        .map(|t| unique_name(t))
        .collect();
    let lock = Lock::builder().name(&names[0]).create().unwrap();
    let rlock = RLock::builder().name(&names[1]).create().unwrap();
    let cond = Condition::builder().name(&names[2]).create().unwrap();
    let value = multiproc::Value::<u64>::builder()
        .name(&names[3])
        .create()
        .unwrap();
    let array = multiproc::Array::<u64>::builder()
        .name(&names[4])
        .len(4)
        .create()
        .unwrap();
    let (flag, flag_name) = new_counter("flag");
    let mut holder = spawn(
        &this_test!(every_timeout_form_waits_at_least_its_timeout),
        "holder",
        &[
            ("LOCK", names[0].clone()),
            ("RLOCK", names[1].clone()),
            ("COND", names[2].clone()),
            ("VALUE", names[3].clone()),
            ("ARRAY", names[4].clone()),
            ("FLAG", flag_name),
        ],
    );
    assert!(eventually(Duration::from_secs(20), || flag
        .load(Ordering::SeqCst)
        == 1));

    let d = Duration::from_millis(150);
    check_timeout("Lock::try_lock_for", d, || lock.try_lock_for(d).is_ok());
    check_timeout("Lock::try_lock_until", d, || {
        lock.try_lock_until(Instant::now() + d).is_ok()
    });
    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    check_timeout("RLock::try_lock_for", d, || rlock.try_lock_for(d).is_ok());
    check_timeout("Condition::try_lock_for", d, || {
        cond.try_lock_for(d).is_ok()
    });
    check_timeout("Value::try_lock_for", d, || value.try_lock_for(d).is_ok());
    check_timeout("Array::try_lock_for", d, || array.try_lock_for(d).is_ok());

    let sem = Semaphore::new(0).unwrap();
    check_timeout("Semaphore::try_acquire_for", d, || sem.try_acquire_for(d));
    check_timeout("Semaphore::try_acquire_until", d, || {
        sem.try_acquire_until(Instant::now() + d)
    });
    let bsem = BoundedSemaphore::new(0).unwrap();
    check_timeout("BoundedSemaphore::try_acquire_for", d, || {
        bsem.try_acquire_for(d)
    });
    let ev = Event::new().unwrap();
    check_timeout("Event::wait_timeout", d, || ev.wait_timeout(d));
    check_timeout("Event::wait_until", d, || ev.wait_until(Instant::now() + d));
    let barrier = Barrier::new(2).unwrap();
    check_timeout("Barrier::wait_timeout", d, || {
        barrier.wait_timeout(d).is_ok()
    });
    assert!(
        barrier.is_broken(),
        "a timed-out barrier wait breaks the barrier"
    );

    flag.store(2, Ordering::SeqCst);
    assert!(wait_for(&mut holder, LIMIT).success());

    let own_cond = Condition::new().unwrap();
    let g = own_cond.lock().unwrap();
    let t = Instant::now();
    let (g, notified) = own_cond.wait_timeout(g, d).unwrap();
    assert!(!notified);
    assert!(t.elapsed() >= d && t.elapsed() <= d + Duration::from_secs(1));
    let t = Instant::now();
    let (g, ok) = own_cond.wait_for(g, || false, Some(d)).unwrap();
    assert!(!ok);
    assert!(t.elapsed() >= d && t.elapsed() <= d + Duration::from_secs(1));
    drop(g);
}

#[test]
fn lock_contended_by_threads_and_processes_counts_exactly() {
    const PER: u64 = 50_000;
    if role().as_deref() == Some("worker") {
        let _watchdog = watchdog(LIMIT, "lock worker");
        let lock = Lock::open(&arg("LOCK")).unwrap();
        let total = counter(&arg("TOTAL"));
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..PER {
                        let _g = lock.lock().unwrap();
                        let v = total.load(Ordering::Relaxed);
                        total.store(v + 1, Ordering::Relaxed);
                    }
                });
            }
        });
        return;
    }
    let _watchdog = watchdog(LIMIT, "lock contention test");
    let name = unique_name("lock");
    let _lock = Lock::builder().name(&name).create().unwrap();
    let (total, total_name) = new_counter("total");
    let test = this_test!(lock_contended_by_threads_and_processes_counts_exactly);
    let children = (0..2)
        .map(|_| {
            spawn(
                &test,
                "worker",
                &[("LOCK", name.clone()), ("TOTAL", total_name.clone())],
            )
        })
        .collect();
    join_all(children, LIMIT);
    assert_eq!(total.load(Ordering::SeqCst), 4 * PER);
}

// ---------------------------------------------------------------------------------------------
// Regressions (issue 8)

/// How many threads of process `pid` whose name starts with `prefix` are blocked in `futex`
/// right now, from `/proc/<pid>/task/*/{comm,syscall}`. Where `syscall` cannot be read, a
/// sleeping thread (state `S`) counts.
fn threads_blocked_in_futex(pid: u32, prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let futex = libc::SYS_futex.to_string();
    tasks
        .flatten()
        .filter(|task| {
            let dir = task.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                return false;
            }
            match std::fs::read_to_string(dir.join("syscall")) {
                Ok(s) => s.split_whitespace().next() == Some(futex.as_str()),
                Err(_) => std::fs::read_to_string(dir.join("stat")).is_ok_and(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
                }),
            }
        })
        .count()
}

/// How long the set-then-clear waiters wait: a waiter that was not released returns `false`
/// after this.
const SET_CLEAR_WAIT: Duration = Duration::from_secs(3);
/// Rounds of set-then-clear: before the fix, one round released every waiter about half the
/// time (whoever woke before `clear` saw the flag), so a test of one round could pass.
const SET_CLEAR_ROUNDS: u64 = 10;

/// Issue 8, bug 5: five threads blocked in `wait_timeout(3 s)`, then `set(); clear();` at once.
/// Every waiter was blocked when `set` happened, so every one must return `true`, right away
/// rather than at its timeout.
#[test]
fn event_set_then_clear_releases_waiters() {
    const WAITERS: usize = 5;
    let _watchdog = watchdog(LIMIT, "event set-then-clear test");
    let ev = Event::new().unwrap();
    for round in 0..SET_CLEAR_ROUNDS {
        let results = std::thread::scope(|s| {
            let waiters: Vec<_> = (0..WAITERS)
                .map(|i| {
                    std::thread::Builder::new()
                        .name(format!("evwait-{i}"))
                        .spawn_scoped(s, || {
                            let released = ev.wait_timeout(SET_CLEAR_WAIT);
                            (released, Instant::now())
                        })
                        .unwrap()
                })
                .collect();
            assert!(
                eventually(Duration::from_secs(20), || threads_blocked_in_futex(
                    std::process::id(),
                    "evwait-"
                ) == WAITERS),
                "round {round}: waiters never all blocked"
            );
            let set_at = Instant::now();
            ev.set();
            ev.clear();
            waiters
                .into_iter()
                .map(|w| {
                    let (released, at) = w.join().unwrap();
                    (released, at.saturating_duration_since(set_at))
                })
                .collect::<Vec<_>>()
        });
        for (i, &(released, after)) in results.iter().enumerate() {
            assert!(
                released,
                "round {round}: waiter {i} slept through set(); clear(): {results:?}"
            );
            assert!(
                after < Duration::from_secs(2),
                "round {round}: waiter {i} returned {after:?} after set: {results:?}"
            );
        }
        assert!(!ev.is_set());
    }
}

/// Issue 8, bug 5, across processes: three children, each with a thread blocked in
/// `wait_timeout(3 s)`, are all released by `set(); clear();`, round after round.
#[test]
fn event_set_then_clear_releases_waiters_in_other_processes() {
    const CHILDREN: u64 = 3;
    if role().as_deref() == Some("waiter") {
        let _watchdog = watchdog(LIMIT, "event set-then-clear waiter");
        let ev = Event::open(&arg("EVENT")).unwrap();
        let (round, released, done) = (
            counter(&arg("ROUND")),
            counter(&arg("RELEASED")),
            counter(&arg("DONE")),
        );
        std::thread::Builder::new()
            .name("evwait".into())
            .spawn(move || {
                for r in 0..SET_CLEAR_ROUNDS {
                    // Polls with sleeps: while here, this thread is not blocked in a futex.
                    if !eventually(LIMIT, || round.load(Ordering::SeqCst) == r) {
                        return;
                    }
                    if ev.wait_timeout(SET_CLEAR_WAIT) {
                        released.fetch_add(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
            .unwrap()
            .join()
            .unwrap();
        return;
    }
    let _watchdog = watchdog(LIMIT, "event set-then-clear test");
    let name = unique_name("event");
    let ev = Event::builder().name(&name).create().unwrap();
    let (round, round_name) = new_counter("round");
    let (released, released_name) = new_counter("released");
    let (done, done_name) = new_counter("done");
    let test = this_test!(event_set_then_clear_releases_waiters_in_other_processes);
    let mut children: Vec<_> = (0..CHILDREN)
        .map(|_| {
            spawn(
                &test,
                "waiter",
                &[
                    ("EVENT", name.clone()),
                    ("ROUND", round_name.clone()),
                    ("RELEASED", released_name.clone()),
                    ("DONE", done_name.clone()),
                ],
            )
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(std::process::Child::id).collect();
    let mut failure = None;
    for r in 0..SET_CLEAR_ROUNDS {
        round.store(r, Ordering::SeqCst);
        if !eventually(Duration::from_secs(20), || {
            pids.iter()
                .all(|&pid| threads_blocked_in_futex(pid, "evwait") == 1)
        }) {
            failure = Some(format!("round {r}: waiters never all blocked"));
            break;
        }
        ev.set();
        ev.clear();
        let expected = CHILDREN * (r + 1);
        assert!(eventually(Duration::from_secs(20), || done
            .load(Ordering::SeqCst)
            == expected));
        let got = released.load(Ordering::SeqCst);
        if got != expected {
            failure = Some(format!(
                "round {r}: {} of {CHILDREN} waiters slept through set(); clear()",
                expected - got
            ));
            break;
        }
    }
    if let Some(failure) = failure {
        children.iter_mut().for_each(common::kill9);
        panic!("{failure}");
    }
    join_all(children, LIMIT);
}

/// Issue 8: when `f` panics, `LockGuard::unlocked` must lock again while unwinding, so that the
/// guard's drop releases our own hold, not the hold another thread took while `f` ran.
#[test]
fn lock_guard_unlocked_relocks_when_f_panics() {
    let _watchdog = watchdog(LIMIT, "unlocked-panic test");
    let lock = Lock::new().unwrap();
    let other_let_go = AtomicBool::new(false);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (took_tx, took_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let other_let_go = &other_let_go;
        let lock = &lock;
        let other = s.spawn(move || {
            go_rx.recv().unwrap();
            let g = lock.lock().unwrap();
            took_tx.send(()).unwrap();
            // Long enough that, without the re-lock, our side is done before we let go.
            std::thread::sleep(Duration::from_millis(300));
            other_let_go.store(true, Ordering::SeqCst);
            drop(g);
        });
        let mut g = lock.lock().unwrap();
        let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| {
            LockGuard::unlocked(&mut g, || {
                go_tx.send(()).unwrap();
                took_rx.recv().unwrap();
                panic!("f panics while another thread holds the lock (expected by this test)");
            })
        }));
        assert!(unwound.is_err());
        assert!(
            other_let_go.load(Ordering::SeqCst),
            "unwinding out of `unlocked` returned while another thread held the lock"
        );
        assert!(lock.is_locked(), "the guard must hold the lock again");
        drop(g);
        other.join().unwrap();
        assert!(!lock.is_locked());
    });
}

/// Issue 12: a barrier of 0 parties, or of more than `MAX_PARTIES`, is an error of `create`
/// (Python's `ValueError`), not a panic; the bounds themselves are accepted.
#[test]
fn issue_12_barrier_parties_out_of_range_are_an_error() {
    use multiproc::{MAX_PARTIES, OpenError};
    let parties = |r: Result<Barrier, OpenError>| match r {
        Err(OpenError::InvalidArgument(why)) => {
            assert_eq!(why, "barrier parties must be 1 to MAX_PARTIES (4095)")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    parties(Barrier::new(0));
    parties(Barrier::new(MAX_PARTIES + 1));
    parties(Barrier::new(u32::MAX));
    parties(Barrier::builder().parties(0).create());
    let name = unique_name("barrier0");
    parties(Barrier::builder().name(&name).parties(0).open_or_create());
    assert!(matches!(
        Barrier::open(&name),
        Err(OpenError::NotFound { .. })
    ));

    assert_eq!(Barrier::new(MAX_PARTIES).unwrap().parties(), MAX_PARTIES);
    let one = Barrier::builder().parties(0).parties(1).create().unwrap();
    assert_eq!(one.parties(), 1);
    assert_eq!(one.wait(), Ok(0));
}
