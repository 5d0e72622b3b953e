//! `Queue`, `JoinableQueue` and `Pipe` between two processes pinned to cores 0 and 1, against
//! an OS pipe and a Unix socketpair between the same two processes.
//!
//! - `queue/round_trip_awake`: an 8-byte message (`u64`, `Plain` codec) to a child that echoes
//!   it back, back to back, so that the child is meant to be still spinning in its default
//!   `recv` when the next one comes; `try_recv loop` busy-polls instead, so it certainly is.
//! - `queue/round_trip_asleep`: the same after a 2 ms pause, so the child is asleep in the
//!   kernel; only the round trip is timed.
//! - `queue/one_way_8B`, `queue/one_way_64B`: a child produces, this process consumes (msgs/s).
//! - `queue/one_way_1MiB`: bytes/s of 1 MiB messages, against a Unix socket and against a
//!   `memcpy` of 1 MiB on one core.
//! - `queue/mpsc_64B`: 1, 2 and 4 producer processes (all on core 1) into one consumer.
//!
//! Every message is checked on arrival (see `benches/common/channels.rs`).
//! `benches/queue_ratios.rs` prints the same-run ratios against the goals.

#![allow(unsafe_code)] // see benches/common

mod common;

use std::time::Duration;

use common::channels::{
    BusyPoll, memcpy, one_way, one_way_bytes, os_pipe, pipe_duplex, round_trips, socket_duplex,
    socketpair,
};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use multiproc::{Connection, JoinableQueue, Plain, Queue, Receiver, Sender};

/// The pause before each round trip of the asleep group.
const PAUSE: Duration = Duration::from_millis(2);
const MIB: usize = 1 << 20;

/// One end of a pair of `Queue::<u64, Plain>`: sends on one, receives on the other.
type QueueEnd = (Sender<u64, Plain>, Receiver<u64, Plain>);

/// A `Queue::<u64, Plain>` pair as duplex ends `(parent, child)`.
fn queue_duplex() -> (QueueEnd, QueueEnd) {
    let (down_tx, down_rx) = Queue::<u64, Plain>::builder()
        .create()
        .expect("Queue")
        .split()
        .expect("split");
    let (up_tx, up_rx) = Queue::<u64, Plain>::builder()
        .create()
        .expect("Queue")
        .split()
        .expect("split");
    ((down_tx, up_rx), (up_tx, down_rx))
}

fn round_trip_group(c: &mut Criterion, name: &str, pause: Option<Duration>) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    if pause.is_some() {
        // Criterion sizes runs by the time we report (the round trips only); every one also
        // costs the pause, so keep the measured time short.
        group
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(250))
            .sample_size(10);
    }
    group.bench_function("multiproc::Connection", |b| {
        b.iter_custom(|iters| {
            let (mine, theirs) = Connection::<u64, Plain>::pair().expect("pair");
            round_trips(mine, theirs, iters, pause)
        })
    });
    if pause.is_none() {
        group.bench_function("multiproc::Connection, try_recv loop", |b| {
            b.iter_custom(|iters| {
                let (mine, theirs) = Connection::<u64, Plain>::pair().expect("pair");
                round_trips(BusyPoll(mine), BusyPoll(theirs), iters, None)
            })
        });
    }
    group.bench_function("multiproc::Queue pair", |b| {
        b.iter_custom(|iters| {
            let (mine, theirs) = queue_duplex();
            round_trips(mine, theirs, iters, pause)
        })
    });
    group.bench_function("OS pipe pair", |b| {
        b.iter_custom(|iters| {
            let (mine, theirs) = pipe_duplex();
            round_trips(mine, theirs, iters, pause)
        })
    });
    group.bench_function("Unix socketpair", |b| {
        b.iter_custom(|iters| {
            let (mine, theirs) = socket_duplex();
            round_trips(mine, theirs, iters, pause)
        })
    });
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    round_trip_group(c, "queue/round_trip_awake", None);
    round_trip_group(c, "queue/round_trip_asleep", Some(PAUSE));
}

fn one_way_small(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue/one_way_8B");
    group.throughput(Throughput::Elements(1));
    group.bench_function("multiproc::Queue<u64, Plain>", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = Queue::<u64, Plain>::builder()
                .create()
                .expect("Queue")
                .split()
                .expect("split");
            one_way(tx, &rx, 1, iters)
        })
    });
    group.bench_function("multiproc::JoinableQueue<u64, Plain>", |b| {
        b.iter_custom(|iters| {
            let q = JoinableQueue::<u64, Plain>::builder()
                .create()
                .expect("JoinableQueue");
            let t = one_way(q.clone(), &q, 1, iters);
            assert_eq!(q.unfinished_tasks(), 0, "every task marked done");
            assert!(q.join_timeout(Duration::ZERO));
            t
        })
    });
    group.bench_function("OS pipe", |b| {
        b.iter_custom(|iters| {
            let (r, w) = os_pipe();
            one_way::<u64, _, _>(w, &r, 1, iters)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("queue/one_way_64B");
    group.throughput(Throughput::Elements(1));
    group.bench_function("multiproc::Queue<[u64; 8], Plain>", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = Queue::<[u64; 8], Plain>::builder()
                .create()
                .expect("Queue")
                .split()
                .expect("split");
            one_way(tx, &rx, 1, iters)
        })
    });
    group.bench_function("OS pipe", |b| {
        b.iter_custom(|iters| {
            let (r, w) = os_pipe();
            one_way::<[u64; 8], _, _>(w, &r, 1, iters)
        })
    });
    group.finish();
}

fn one_way_big(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue/one_way_1MiB");
    group.throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("multiproc::Queue put_bytes", |b| {
        b.iter_custom(|iters| {
            // The bytes API ignores the message type.
            let (tx, rx) = Queue::<u8, Plain>::builder()
                .max_bytes(4 * MIB)
                .create()
                .expect("Queue")
                .split()
                .expect("split");
            one_way_bytes(tx, rx, MIB, iters)
        })
    });
    group.bench_function("Unix socketpair", |b| {
        b.iter_custom(|iters| {
            let (a, b) = socketpair();
            one_way_bytes(a, b, MIB, iters)
        })
    });
    group.bench_function("memcpy (one core)", |b| {
        b.iter_custom(|iters| memcpy(MIB, iters))
    });
    group.finish();
}

fn mpsc(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue/mpsc_64B");
    group.throughput(Throughput::Elements(1));
    for producers in [1, 2, 4] {
        group.bench_with_input(
            BenchmarkId::new("multiproc::Queue<[u64; 8], Plain>", producers),
            &producers,
            |b, &producers| {
                b.iter_custom(|iters| {
                    let (tx, rx) = Queue::<[u64; 8], Plain>::builder()
                        .create()
                        .expect("Queue")
                        .split()
                        .expect("split");
                    one_way(tx, &rx, producers, iters)
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = round_trip, one_way_small, one_way_big, mpsc
}
criterion_main!(benches);
