//! `Value`, `RawValue`, `Array`, `RawArray` across real processes.

#[path = "../common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use common::{arg, join_all, role, spawn, unique_name, watchdog};
use multiproc::{Array, Lock, OpenError, RawArray, RawValue, SharedObject, Value};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const PROCS: u64 = 4;
const PER: u64 = 100_000;
const LIMIT: Duration = Duration::from_secs(120);

fn run_workers(test: &str, args: &[(&str, String)]) {
    let children = (0..PROCS).map(|_| spawn(test, "worker", args)).collect();
    join_all(children, LIMIT);
}

#[test]
fn value_u64_four_processes_under_its_lock() {
    if role().is_some() {
        let _watchdog = watchdog(LIMIT, "value worker");
        let v = Value::<u64>::open(&arg("VALUE")).unwrap();
        for _ in 0..PER {
            *v.lock().unwrap() += 1;
        }
        return;
    }
    let name = unique_name("value");
    let v = Value::<u64>::builder().name(&name).create().unwrap();
    run_workers(
        &this_test!(value_u64_four_processes_under_its_lock),
        &[("VALUE", name)],
    );
    assert_eq!(v.get(), PROCS * PER);
}

#[test]
fn raw_value_atomic_fetch_add_four_processes() {
    if role().is_some() {
        let _watchdog = watchdog(LIMIT, "raw value worker");
        let v = RawValue::<AtomicU64>::open(&arg("VALUE")).unwrap();
        for _ in 0..PER {
            v.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    let name = unique_name("rawvalue");
    let v = RawValue::<AtomicU64>::builder()
        .name(&name)
        .create()
        .unwrap();
    run_workers(
        &this_test!(raw_value_atomic_fetch_add_four_processes),
        &[("VALUE", name)],
    );
    assert_eq!(v.load(Ordering::SeqCst), PROCS * PER);
}

#[test]
fn lock_guarding_array_of_sixteen_four_processes() {
    if role().is_some() {
        let _watchdog = watchdog(LIMIT, "array worker");
        let lock = Lock::open(&arg("LOCK")).unwrap();
        let arr = Array::<u64>::open(&arg("ARRAY")).unwrap();
        assert_eq!(arr.len(), 16);
        for i in 0..PER as usize {
            let _g = lock.lock().unwrap();
            // Read-modify-write of two separate copies: only the outer Lock makes it atomic.
            let slot = i % 16;
            let v = arr.get(slot).unwrap();
            arr.set(slot, v + 1);
        }
        return;
    }
    let lock_name = unique_name("lock");
    let arr_name = unique_name("array");
    let _lock = Lock::builder().name(&lock_name).create().unwrap();
    let arr = Array::<u64>::builder()
        .name(&arr_name)
        .len(16)
        .create()
        .unwrap();
    run_workers(
        &this_test!(lock_guarding_array_of_sixteen_four_processes),
        &[("LOCK", lock_name), ("ARRAY", arr_name)],
    );
    let values = arr.to_vec();
    assert_eq!(values.iter().sum::<u64>(), PROCS * PER);
    assert!(values.iter().all(|&v| v == PROCS * PER / 16), "{values:?}");
}

#[derive(Clone, Copy, Debug, PartialEq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
    tag: u32,
    pad: u32,
}

#[test]
fn struct_values_and_arrays_round_trip_between_processes() {
    if role().is_some() {
        let p = Value::<Point>::open(&arg("POINT")).unwrap();
        assert_eq!(
            p.get(),
            Point {
                x: 1.5,
                y: -2.0,
                tag: 7,
                pad: 0
            }
        );
        p.set(Point {
            x: 3.0,
            y: 4.0,
            tag: 8,
            pad: 0,
        });
        let raw = RawArray::<u16>::open(&arg("RAW")).unwrap();
        assert_eq!(raw.to_vec(), [1, 2, 3]);
        raw.set(1, 20);
        return;
    }
    let _watchdog = watchdog(LIMIT, "struct test");
    let p_name = unique_name("point");
    let raw_name = unique_name("raw");
    let p = Value::builder()
        .name(&p_name)
        .value(Point {
            x: 1.5,
            y: -2.0,
            tag: 7,
            pad: 0,
        })
        .create()
        .unwrap();
    let raw = RawArray::<u16>::builder()
        .name(&raw_name)
        .values(&[1, 2, 3])
        .create()
        .unwrap();
    let mut child = spawn(
        &this_test!(struct_values_and_arrays_round_trip_between_processes),
        "worker",
        &[("POINT", p_name), ("RAW", raw_name)],
    );
    assert!(common::wait_for(&mut child, LIMIT).success());
    assert_eq!(
        p.get(),
        Point {
            x: 3.0,
            y: 4.0,
            tag: 8,
            pad: 0
        }
    );
    assert_eq!(raw.to_vec(), [1, 20, 3]);
    assert_eq!(raw.get(3), None);
}

#[test]
fn value_of_one_type_does_not_open_as_another() {
    let name = unique_name("typed");
    let _v = Value::<u64>::builder().name(&name).create().unwrap();
    assert!(matches!(
        Value::<u32>::open(&name),
        Err(OpenError::ElementMismatch { .. })
    ));
    assert!(matches!(
        RawValue::<u64>::open(&name),
        Err(OpenError::WrongType { .. })
    ));
    assert!(matches!(
        Array::<u64>::open(&name),
        Err(OpenError::WrongType { .. })
    ));
    let same = Value::<u64>::open(&name).unwrap();
    same.set(5);
    assert_eq!(_v.get(), 5);
}

#[test]
fn value_guard_owner_died_keeps_the_data_and_recovers() {
    if role().is_some() {
        let v = Value::<u64>::open(&arg("VALUE")).unwrap();
        *v.lock().unwrap() = 41; // published when the guard goes
        let g = v.lock().unwrap();
        std::mem::forget(g); // "dies" holding the lock: the process exits without unlocking
        return;
    }
    let _watchdog = watchdog(LIMIT, "value owner-died test");
    let name = unique_name("value");
    let v = Value::<u64>::builder().name(&name).create().unwrap();
    let mut child = spawn(
        &this_test!(value_guard_owner_died_keeps_the_data_and_recovers),
        "worker",
        &[("VALUE", name)],
    );
    assert!(common::wait_for(&mut child, LIMIT).success());
    let mut g = v
        .lock()
        .expect_err("owner exited holding the lock")
        .recover();
    assert_eq!(*g, 41);
    *g += 1;
    drop(g);
    assert_eq!(v.get(), 42);
    assert!(v.try_lock().is_ok());
}

#[test]
fn array_guard_and_atomic_raw_array() {
    let arr = Array::from_slice(&[1u32, 2, 3, 4]).unwrap();
    {
        let mut g = arr.lock().unwrap();
        g.reverse();
    }
    assert_eq!(arr.to_vec(), [4, 3, 2, 1]);
    assert_eq!(arr.get(4), None);
    let counters = RawArray::<AtomicU64>::zeroed(3).unwrap();
    counters[2].fetch_add(5, Ordering::Relaxed);
    let again = RawArray::<AtomicU64>::from_handle(&counters.handle()).unwrap();
    assert_eq!(again[2].load(Ordering::Relaxed), 5);
    assert_eq!(again.len(), 3);
    // A locked Value of an atomic is reached through its guard only.
    let v = Value::new(AtomicU64::new(3)).unwrap();
    v.lock().unwrap().fetch_add(1, Ordering::Relaxed);
    assert_eq!(v.lock().unwrap().load(Ordering::Relaxed), 4);
    assert_eq!(v.get().into_inner(), 4);
}

#[test]
fn raw_array_of_u16_atomics_copies_and_derefs_agree() {
    // Copies of a 2-byte atomic use 2-byte atomics, the same width as the references.
    let arr = RawArray::<AtomicU16>::zeroed(3).unwrap();
    arr.set(1, AtomicU16::new(0x1234));
    arr[1].fetch_add(1, Ordering::Relaxed);
    assert_eq!(arr.get(1).unwrap().into_inner(), 0x1235);
    assert_eq!(arr[0].load(Ordering::Relaxed), 0);
}

/// Byte offset of element `i` of a one-byte `Value`/`Array` in its `/dev/shm` file: a 64-byte
/// segment header, then the 64-byte lock and geometry state, then the elements.
fn element_offset(i: u64) -> u64 {
    128 + i
}

/// Writes `bytes` at `offset` of the named segment's file, as a process that ignores the lock
/// and the crate could (the shared mappings see the file's pages).
fn scribble(name: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

#[test]
fn value_and_array_of_bool_set_by_a_child_read_in_the_parent() {
    if role().is_some() {
        let v = Value::<bool>::open(&arg("VALUE")).unwrap();
        assert!(!v.get());
        *v.lock().unwrap() = true;
        let flags = Array::<bool>::open(&arg("ARRAY")).unwrap();
        flags.set(1, true);
        flags.lock().unwrap()[3] = true;
        return;
    }
    let _watchdog = watchdog(LIMIT, "bool test");
    let v_name = unique_name("bool");
    let a_name = unique_name("bools");
    let v = Value::builder()
        .name(&v_name)
        .value(false)
        .create()
        .unwrap();
    let flags = Array::<bool>::builder()
        .name(&a_name)
        .len(4)
        .create()
        .unwrap();
    let mut child = spawn(
        &this_test!(value_and_array_of_bool_set_by_a_child_read_in_the_parent),
        "worker",
        &[("VALUE", v_name), ("ARRAY", a_name)],
    );
    assert!(common::wait_for(&mut child, LIMIT).success());
    assert!(v.get());
    assert!(*v.lock().unwrap());
    v.set(false);
    assert!(!v.get());
    assert_eq!(flags.to_vec(), [false, true, false, true]);
}

#[test]
fn bool_bytes_that_a_hostile_process_wrote_read_as_true() {
    if role().is_some() {
        // The hostile peer: writes bytes that are no valid `bool` into both segments.
        scribble(&arg("VALUE"), element_offset(0), &[2]);
        scribble(&arg("ARRAY"), element_offset(0), &[0, 7, 255, 1]);
        scribble(&arg("RAW"), element_offset(0), &[0x80]);
        return;
    }
    let _watchdog = watchdog(LIMIT, "hostile bool test");
    let v_name = unique_name("bool");
    let a_name = unique_name("bools");
    let r_name = unique_name("rawbool");
    let v = Value::<bool>::builder().name(&v_name).create().unwrap();
    let flags = Array::<bool>::builder()
        .name(&a_name)
        .len(4)
        .create()
        .unwrap();
    let raw = RawValue::<bool>::builder().name(&r_name).create().unwrap();
    let mut child = spawn(
        &this_test!(bool_bytes_that_a_hostile_process_wrote_read_as_true),
        "hostile",
        &[("VALUE", v_name), ("ARRAY", a_name), ("RAW", r_name)],
    );
    assert!(common::wait_for(&mut child, LIMIT).success());
    assert!(v.get());
    {
        let mut g = v.lock().unwrap();
        assert!(*g);
        *g = !*g;
    }
    assert!(!v.get());
    assert_eq!(flags.to_vec(), [false, true, true, true]);
    assert_eq!(flags.get(2), Some(true));
    assert_eq!(*flags.lock().unwrap(), [false, true, true, true]);
    assert!(raw.get());
}

/// Issue 12: an array whose size in bytes overflows (or passes `isize::MAX`) is an error of
/// `create`, not a panic ("array too large"); an empty array is fine, as in Python.
#[test]
fn issue_12_an_array_too_large_to_map_is_an_error() {
    const TOO_LARGE: &str = "array length times element size must be at most isize::MAX bytes";
    let too_large = |r: Result<(), OpenError>| match r {
        Err(OpenError::InvalidArgument(why)) => assert_eq!(why, TOO_LARGE),
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    too_large(Array::<u64>::zeroed(usize::MAX).map(drop));
    too_large(Array::<u64>::zeroed(usize::MAX / 8 + 1).map(drop));
    // No overflow of `usize`, but more than any mapping can span.
    too_large(Array::<u64>::zeroed(isize::MAX as usize / 8 + 1).map(drop));
    too_large(RawArray::<AtomicU64>::zeroed(usize::MAX).map(drop));
    too_large(Array::<u16>::builder().len(usize::MAX).create().map(drop));
    too_large(
        RawArray::<AtomicU16>::builder()
            .len(usize::MAX / 2 + 1)
            .create()
            .map(drop),
    );

    let empty = Array::<u64>::zeroed(0).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.to_vec(), Vec::<u64>::new());
    let fixed = Array::<u64>::builder()
        .len(usize::MAX)
        .len(3)
        .create()
        .unwrap();
    assert_eq!(fixed.to_vec(), [0, 0, 0]);
}
