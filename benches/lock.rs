//! `multiproc::Lock` against a glibc process-shared `pthread_mutex_t` in a `MAP_SHARED` page.
//!
//! - `lock/uncontended`: lock + unlock in one process, ns per pair.
//! - `lock/contended`: two processes pinned to cores 0 and 1 each increment a plain `u64` under
//!   the lock; time per increment over both (criterion's throughput is the total ops/s). The
//!   final count is asserted, so the bench also checks mutual exclusion.

#![allow(unsafe_code)] // FFI to pthread, raw shared memory; see the SAFETY comments

mod common;

use std::hint::black_box;

use common::locks::{LockShared, PthreadShared};
use common::run_two_processes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use multiproc::{Lock, Value};

fn value_increments(value: &Value<u64>, n: u64) {
    for _ in 0..n {
        *value.lock().expect("no holder died") += 1;
    }
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock/uncontended");
    group.throughput(Throughput::Elements(1));

    let lock = Lock::new().expect("Lock::new");
    group.bench_function("multiproc::Lock", |b| {
        b.iter(|| {
            let guard = black_box(&lock).lock();
            drop(black_box(guard));
        })
    });

    let pthread = PthreadShared::new();
    group.bench_function("pthread_mutex (pshared)", |b| {
        b.iter(|| {
            let m = black_box(&*pthread);
            m.lock();
            m.unlock();
        })
    });
    group.finish();
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock/contended");
    group.throughput(Throughput::Elements(1));

    let shared = LockShared::new();
    group.bench_function("multiproc::Lock", |b| {
        b.iter_custom(|iters| {
            shared.reset();
            let t = run_two_processes(
                iters,
                || drop(shared.lock.lock().expect("no holder died")),
                |n| shared.increments(n),
            );
            assert_eq!(shared.count(), iters, "lost updates under multiproc::Lock");
            t
        })
    });

    let value = Value::new(0u64).expect("Value::new");
    group.bench_function("multiproc::Value<u64>", |b| {
        b.iter_custom(|iters| {
            value.set(0);
            let t = run_two_processes(
                iters,
                || drop(value.lock().expect("no holder died")),
                |n| value_increments(&value, n),
            );
            assert_eq!(value.get(), iters, "lost updates under Value<u64>");
            t
        })
    });

    let pthread = PthreadShared::new();
    group.bench_function("pthread_mutex (pshared)", |b| {
        b.iter_custom(|iters| {
            pthread.reset();
            let t = run_two_processes(
                iters,
                || {
                    pthread.lock();
                    pthread.unlock();
                },
                |n| pthread.increments(n),
            );
            assert_eq!(pthread.count(), iters, "lost updates under pthread_mutex");
            t
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = uncontended, contended
}
criterion_main!(benches);
