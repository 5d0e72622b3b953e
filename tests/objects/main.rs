//! What every shared object has in common, across real processes: clones are handles on the
//! same object (in forked and in spawned children), a dead lock holder is an error that `?`
//! propagates and that a caller can recover from, and errors of opening name the object and
//! its type.
#![cfg(feature = "serde")]

#[path = "../common/mod.rs"]
mod common;

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{unique_name, watchdog};
use multiproc::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, LockError, OpenError, Process, RLock,
    RawArray, RawValue, Semaphore, SharedMemory, SharedObject, Value,
};
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(60);

type BoxError = Box<dyn Error + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Clones

/// A clone of every kind of shared object, to hand to a child.
#[derive(Serialize, Deserialize)]
struct Kit {
    lock: Lock,
    rlock: RLock,
    value: Value<u64>,
    array: Array<u32>,
    raw_value: RawValue<AtomicU64>,
    raw_array: RawArray<AtomicU64>,
    sem: Semaphore,
    bounded: BoundedSemaphore,
    event: Event,
    cond: Condition,
    barrier: Barrier,
    /// `SharedMemory` travels by name (it is not serialisable); a forked child gets a clone.
    shm_name: String,
}

/// The originals, kept by the parent.
struct Originals {
    kit: Kit,
    shm: SharedMemory,
}

fn originals() -> Originals {
    let shm = SharedMemory::create(16).unwrap();
    let kit = Kit {
        lock: Lock::new().unwrap(),
        rlock: RLock::new().unwrap(),
        value: Value::new(10).unwrap(),
        array: Array::zeroed(3).unwrap(),
        raw_value: RawValue::new(AtomicU64::new(0)).unwrap(),
        raw_array: RawArray::zeroed(2).unwrap(),
        sem: Semaphore::new(0).unwrap(),
        bounded: BoundedSemaphore::new(2).unwrap(),
        event: Event::new().unwrap(),
        cond: Condition::new().unwrap(),
        barrier: Barrier::new(2).unwrap(),
        shm_name: shm.name().to_owned(),
    };
    Originals { kit, shm }
}

impl Kit {
    /// Clones of every object of `o`.
    fn clone_of(o: &Originals) -> Self {
        let k = &o.kit;
        Self {
            lock: k.lock.clone(),
            rlock: k.rlock.clone(),
            value: k.value.clone(),
            array: k.array.clone(),
            raw_value: k.raw_value.clone(),
            raw_array: k.raw_array.clone(),
            sem: k.sem.clone(),
            bounded: k.bounded.clone(),
            event: k.event.clone(),
            cond: k.cond.clone(),
            barrier: k.barrier.clone(),
            shm_name: k.shm_name.clone(),
        }
    }

    /// The child's part: one change to every object, then the barrier.
    fn use_in_child(&self, shm: &SharedMemory) -> u32 {
        {
            let _l = self.lock.lock().unwrap();
            let _r = self.rlock.lock().unwrap();
            *self.value.lock().unwrap() += 5;
            self.array.lock().unwrap()[1] = 7;
        }
        self.raw_value.fetch_add(3, Ordering::SeqCst);
        self.raw_array[1].fetch_add(4, Ordering::SeqCst);
        self.sem.release_n(2);
        self.bounded.acquire();
        shm.write(2, b"kid").unwrap();
        {
            let g = self.cond.lock().unwrap();
            self.cond.notify_all(&g);
        }
        self.event.set();
        self.barrier.wait().unwrap()
    }
}

/// Checks what `use_in_child` did, through the parent's original handles; returns the
/// parent's index at the barrier.
fn check_parent_side(o: &Originals) -> u32 {
    let k = &o.kit;
    let index = k.barrier.wait().unwrap();
    assert!(k.event.is_set());
    assert_eq!(k.value.get(), 15);
    assert_eq!(k.array.to_vec(), [0, 7, 0]);
    assert_eq!(k.raw_value.load(Ordering::SeqCst), 3);
    assert_eq!(k.raw_array[1].load(Ordering::SeqCst), 4);
    assert_eq!(k.sem.get_value(), 2);
    assert_eq!(k.bounded.get_value(), 1);
    let mut buf = [0u8; 3];
    o.shm.read(2, &mut buf).unwrap();
    assert_eq!(&buf, b"kid");
    assert!(!k.lock.is_locked());
    assert!(!k.rlock.is_locked());
    index
}

fn child_uses_clones(kit: Kit) -> u32 {
    let shm = SharedMemory::open(&kit.shm_name).unwrap();
    kit.use_in_child(&shm)
}

#[test]
fn clones_of_every_object_work_in_a_spawned_child() {
    let _watchdog = watchdog(LIMIT, "spawned clones");
    let o = originals();
    let child = Process::spawn(child_uses_clones, Kit::clone_of(&o)).unwrap();
    let ours = check_parent_side(&o);
    let theirs = child.join().unwrap();
    // One party of the two gets index 0 and the other index 1, whichever came last.
    assert_eq!(
        (ours.min(theirs), ours.max(theirs)),
        (0, 1),
        "both parties passed"
    );
}

#[test]
fn clones_of_every_object_work_in_a_forked_child() {
    let _watchdog = watchdog(LIMIT, "forked clones");
    let o = originals();
    let kit = Kit::clone_of(&o);
    let shm = o.shm.clone();
    let child = Process::fork(move || kit.use_in_child(&shm)).unwrap();
    let ours = check_parent_side(&o);
    let theirs = child.join().unwrap();
    // One party of the two gets index 0 and the other index 1, whichever came last.
    assert_eq!(
        (ours.min(theirs), ours.max(theirs)),
        (0, 1),
        "both parties passed"
    );
}

#[test]
fn a_clone_outlives_its_original_and_keeps_the_name() {
    let name = unique_name("clone");
    let v = Value::<u64>::builder().name(&name).create().unwrap();
    let c = v.clone();
    drop(v);
    // The creator unlinks the name when its last handle goes, not the first.
    assert_eq!(Value::<u64>::open(&name).unwrap().get(), 0);
    c.set(9);
    assert_eq!(Value::<u64>::open(&name).unwrap().get(), 9);
    drop(c);
    assert!(matches!(
        Value::<u64>::open(&name),
        Err(OpenError::NotFound { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// A dead holder: `?` and recovery

/// Every object with a lock, named, for a child that takes them all and is killed.
#[derive(Serialize, Deserialize)]
struct Locks {
    lock: Lock,
    rlock: RLock,
    value: Value<u64>,
    array: Array<u32>,
    cond: Condition,
    held: Event,
}

/// Takes every lock, half-updates the data, says so, and sleeps until killed.
fn hold_everything(l: Locks) {
    let _a = l.lock.lock().unwrap();
    let _b = l.rlock.lock().unwrap();
    let mut v = l.value.lock().unwrap();
    *v = 999; // never published: the guard never drops
    let _d = l.array.lock().unwrap();
    let _e = l.cond.lock().unwrap();
    l.held.set();
    std::thread::sleep(LIMIT);
}

fn bump_value(v: &Value<u64>) -> Result<u64, BoxError> {
    let mut g = v.lock()?;
    *g += 1;
    Ok(*g)
}

fn lock_lock(l: &Lock) -> Result<(), BoxError> {
    let _g = l.lock()?;
    Ok(())
}

fn lock_rlock(l: &RLock) -> Result<(), BoxError> {
    let _g = l.lock()?;
    Ok(())
}

fn set_array(a: &Array<u32>) -> Result<(), LockError> {
    a.lock()?[0] = 1;
    Ok(())
}

fn lock_cond(c: &Condition) -> Result<(), Box<dyn Error>> {
    let _g = c.lock()?;
    Ok(())
}

/// The owned error behind a boxed one.
fn owner_died_object(e: &(dyn Error + 'static)) -> String {
    match e.downcast_ref::<LockError>() {
        Some(LockError::OwnerDied { object }) => object.clone(),
        other => panic!("not an owner-died LockError: {other:?} ({e})"),
    }
}

#[test]
fn a_killed_holder_is_an_error_for_question_mark_until_recovered() {
    let _watchdog = watchdog(LIMIT, "owner died");
    let names: Vec<String> = (0..5).map(|i| unique_name(&format!("od{i}"))).collect();
    let locks = Locks {
        lock: Lock::builder().name(&names[0]).create().unwrap(),
        rlock: RLock::builder().name(&names[1]).create().unwrap(),
        value: Value::builder().name(&names[2]).value(41).create().unwrap(),
        array: Array::builder().name(&names[3]).len(2).create().unwrap(),
        cond: Condition::builder().name(&names[4]).create().unwrap(),
        held: Event::new().unwrap(),
    };
    let child = Process::spawn(
        hold_everything,
        Locks {
            lock: locks.lock.clone(),
            rlock: locks.rlock.clone(),
            value: locks.value.clone(),
            array: locks.array.clone(),
            cond: locks.cond.clone(),
            held: locks.held.clone(),
        },
    )
    .unwrap();
    assert!(
        locks.held.wait_timeout(Duration::from_secs(20)),
        "child never held the locks"
    );
    child.kill().unwrap();
    let _ = child.join();

    // `?` turns the dead holder into an error naming the object, and leaves it unrecovered:
    // asking again gives the same error.
    for _ in 0..2 {
        let e = bump_value(&locks.value).unwrap_err();
        let slash = |n: &str| format!("/{n}");
        assert_eq!(
            owner_died_object(&*e),
            format!("Value<u64> {}", slash(&names[2]))
        );
        assert_eq!(
            e.to_string(),
            format!(
                "a holder of Value<u64> /{} died while holding its lock (owner died; not recovered)",
                names[2]
            )
        );
        assert_eq!(
            owner_died_object(&*lock_lock(&locks.lock).unwrap_err()),
            format!("Lock /{}", names[0])
        );
        assert_eq!(
            owner_died_object(&*lock_rlock(&locks.rlock).unwrap_err()),
            format!("RLock /{}", names[1])
        );
        assert_eq!(
            set_array(&locks.array).unwrap_err(),
            LockError::OwnerDied {
                object: format!("Array<u32> /{}", names[3])
            }
        );
        assert_eq!(
            owner_died_object(&*lock_cond(&locks.cond).unwrap_err()),
            format!("Condition /{}", names[4])
        );
        assert!(locks.value.try_lock().is_err(), "still marked owner-died");
    }
    assert_eq!(
        locks.value.get(),
        41,
        "the dead holder's write was never published"
    );

    // Recovery: repair, mark consistent; the next lock is clean.
    let g = locks
        .value
        .lock()
        .unwrap_or_else(|died| died.recover_with(|g| **g = 100));
    drop(g);
    assert_eq!(bump_value(&locks.value).unwrap(), 101);
    drop(locks.lock.lock().unwrap_or_else(|died| died.recover()));
    drop(
        locks
            .rlock
            .lock()
            .or_else(|died| Ok::<_, LockError>(died.recover()))
            .unwrap(),
    );
    drop(
        locks
            .array
            .lock()
            .unwrap_or_else(|died| died.recover_with(|a| a.fill(3))),
    );
    drop(locks.cond.lock().unwrap_or_else(|died| died.recover()));
    lock_lock(&locks.lock).unwrap();
    lock_rlock(&locks.rlock).unwrap();
    set_array(&locks.array).unwrap();
    assert_eq!(locks.array.to_vec(), [1, 3]);
    lock_cond(&locks.cond).unwrap();
    assert!(locks.value.try_lock().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Errors of opening name what they are about

#[test]
fn open_errors_name_the_object_and_its_types() {
    let name = unique_name("named");
    let missing = Lock::open(&name).unwrap_err();
    assert!(matches!(&missing, OpenError::NotFound { name: Some(n) } if *n == format!("/{name}")));
    assert_eq!(
        missing.to_string(),
        format!("shared object /{name} not found")
    );

    let _v = Value::<u64>::builder().name(&name).create().unwrap();
    let taken = Value::<u64>::builder().name(&name).create().unwrap_err();
    assert!(matches!(&taken, OpenError::AlreadyExists { .. }));
    assert_eq!(
        taken.to_string(),
        format!("a shared object named /{name} already exists")
    );

    let wrong = Event::open(&name).unwrap_err();
    assert!(
        matches!(&wrong, OpenError::WrongType { found, expected, .. }
        if found == "Value" && expected == "Event")
    );
    assert_eq!(
        wrong.to_string(),
        format!("shared object /{name} holds a Value, not an Event")
    );
    let wrong = RawValue::<u64>::open(&name).unwrap_err();
    assert_eq!(
        wrong.to_string(),
        format!("shared object /{name} holds a Value, not a RawValue<u64>")
    );

    let narrow = Value::<u32>::open(&name).unwrap_err();
    assert!(matches!(
        &narrow,
        OpenError::ElementMismatch {
            found_size: 8,
            expected_size: 4,
            ..
        }
    ));
    assert_eq!(
        narrow.to_string(),
        format!(
            "shared object /{name} holds a Value<u64> (8-byte elements, aligned to 8), \
             not a Value<u32> (4-byte elements, aligned to 4)"
        )
    );

    let bad = Lock::open("a/b").unwrap_err();
    assert!(matches!(&bad, OpenError::InvalidName { name } if name == "a/b"));
    assert_eq!(
        bad.to_string(),
        "invalid shared object name \"a/b\" (must be 1 to 250 bytes, no '/' or NUL after an \
         optional leading '/')"
    );

    // A handle for another kind of object.
    let ev = Event::new().unwrap();
    let wrong = Lock::from_handle(&ev.handle()).unwrap_err();
    assert_eq!(
        wrong.to_string(),
        "shared object holds an Event, not a Lock"
    );
}

#[test]
fn a_size_the_system_refuses_is_not_an_invalid_name() {
    let name = unique_name("huge");
    let e = SharedMemory::create_named(&name, usize::MAX / 2 + 1).unwrap_err();
    assert!(matches!(e, OpenError::Os(_)), "{e:?}");
    assert!(!common::shm_exists(&name), "the name is removed again");
}
