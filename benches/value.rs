//! `RawValue<AtomicU64>` against a bare `AtomicU64` in a `MAP_SHARED` page, and the locked
//! read-modify-write of a `Value<u64>`.
//!
//! - `fetch_add/uncontended`: `fetch_add(1, Relaxed)` in one process, ns per op.
//! - `fetch_add/two_processes`: the same from two processes pinned to cores 0 and 1; time per
//!   op over both (criterion's throughput is the total ops/s). The final value is asserted.
//! - `value_lock/uncontended`: `*v.lock().unwrap() += 1`, ns per op.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Line, Shm, run_two_processes};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use multiproc::{RawValue, Value};

fn add_n(counter: &AtomicU64, n: u64) {
    for _ in 0..n {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn raw_value_add_n(value: &RawValue<AtomicU64>, n: u64) {
    for _ in 0..n {
        // Through the Deref each time, as callers write it.
        value.fetch_add(1, Ordering::Relaxed);
    }
}

fn fetch_add_uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_add/uncontended");
    group.throughput(Throughput::Elements(1));

    let raw = RawValue::new(AtomicU64::new(0)).expect("RawValue::new");
    group.bench_function("RawValue<AtomicU64>", |b| {
        b.iter(|| black_box(&raw).fetch_add(1, Ordering::Relaxed))
    });

    let bare = Shm::new(Line(AtomicU64::new(0)));
    group.bench_function("bare AtomicU64 (MAP_SHARED)", |b| {
        b.iter(|| black_box(&**bare).fetch_add(1, Ordering::Relaxed))
    });
    group.finish();
}

fn fetch_add_two_processes(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_add/two_processes");
    group.throughput(Throughput::Elements(1));

    let raw = RawValue::new(AtomicU64::new(0)).expect("RawValue::new");
    group.bench_function("RawValue<AtomicU64>", |b| {
        b.iter_custom(|iters| {
            raw.store(0, Ordering::Relaxed);
            let t = run_two_processes(iters, || (), |n| raw_value_add_n(&raw, n));
            assert_eq!(raw.load(Ordering::Relaxed), iters, "lost fetch_adds");
            t
        })
    });

    let bare = Shm::new(Line(AtomicU64::new(0)));
    group.bench_function("bare AtomicU64 (MAP_SHARED)", |b| {
        b.iter_custom(|iters| {
            bare.store(0, Ordering::Relaxed);
            let t = run_two_processes(iters, || (), |n| add_n(&bare, n));
            assert_eq!(bare.load(Ordering::Relaxed), iters, "lost fetch_adds");
            t
        })
    });
    group.finish();
}

fn value_lock_uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("value_lock/uncontended");
    group.throughput(Throughput::Elements(1));

    let value = Value::new(0u64).expect("Value::new");
    group.bench_function("Value<u64> lock += 1", |b| {
        b.iter(|| *black_box(&value).lock().unwrap() += 1)
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = fetch_add_uncontended, fetch_add_two_processes, value_lock_uncontended
}
criterion_main!(benches);
