//! `Queue`, `Sender`/`Receiver`, `JoinableQueue` and `Pipe`: functional tests with real
#![cfg(feature = "serde")]
//! processes (death and crash consistency live in tests/queue_death).

#[path = "../common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{arg, join_all, role, spawn, unique_name, wait_for, watchdog};
use multiproc::{
    Connection, GetError, GetTimeoutError, Plain, PutError, PutTimeoutError, Queue, RawArray,
    RawValue, Receiver, Sender, SharedObject, TryGetError, TryPutError,
};
use serde::{Deserialize, Serialize};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Tagged {
    producer: u32,
    seq: u32,
}

// ---------------------------------------------------------------------------------------------
// 4 producers x 4 consumers x 250,000 messages, each a separate process.

const PRODUCERS: u32 = 4;
const CONSUMERS: u32 = 4;
const PER_PRODUCER: u32 = 250_000;

#[test]
fn four_producers_four_consumers_exactly_once_in_order() {
    match role().as_deref() {
        Some("producer") => {
            let _watchdog = watchdog(LIMIT, "producer");
            let id: u32 = arg("ID").parse().unwrap();
            let tx = Sender::<Tagged, Plain>::open(&arg("QUEUE")).unwrap();
            RawValue::<AtomicU64>::open(&arg("READY"))
                .unwrap()
                .fetch_add(1, Ordering::SeqCst);
            for seq in 0..PER_PRODUCER {
                tx.put(Tagged { producer: id, seq }).unwrap();
            }
            return;
        }
        Some("consumer") => {
            let _watchdog = watchdog(LIMIT, "consumer");
            let rx = Receiver::<Tagged, Plain>::open(&arg("QUEUE")).unwrap();
            let seen = RawArray::<AtomicU8>::open(&arg("SEEN")).unwrap();
            RawValue::<AtomicU64>::open(&arg("READY"))
                .unwrap()
                .fetch_add(1, Ordering::SeqCst);
            let mut last = [None::<u32>; PRODUCERS as usize];
            loop {
                match rx.get() {
                    Ok(m) => {
                        assert!(m.producer < PRODUCERS && m.seq < PER_PRODUCER, "{m:?}");
                        // Per-producer order: this consumer sees each producer's seqs rising.
                        let l = &mut last[m.producer as usize];
                        assert!(
                            l.is_none_or(|l| l < m.seq),
                            "out of order: {l:?} then {m:?}"
                        );
                        *l = Some(m.seq);
                        let i = (m.producer * PER_PRODUCER + m.seq) as usize;
                        assert_eq!(seen[i].swap(1, Ordering::Relaxed), 0, "duplicate {m:?}");
                    }
                    Err(GetError::Disconnected) => return,
                    Err(e) => panic!("get: {e}"),
                }
            }
        }
        _ => {}
    }
    let _watchdog = watchdog(LIMIT, "4x4 test");
    let name = unique_name("q4x4");
    let queue = Queue::<Tagged>::builder()
        .codec::<Plain>()
        .name(&name)
        .capacity(4096)
        .max_bytes(1 << 16)
        .create()
        .unwrap();
    let seen_name = unique_name("seen");
    let seen = RawArray::<AtomicU8>::builder()
        .name(&seen_name)
        .len((PRODUCERS * PER_PRODUCER) as usize)
        .create()
        .unwrap();
    let ready_name = unique_name("ready");
    let ready = RawValue::<AtomicU64>::builder()
        .name(&ready_name)
        .create()
        .unwrap();
    let test = this_test!(four_producers_four_consumers_exactly_once_in_order);
    let mut children = Vec::new();
    for id in 0..PRODUCERS {
        children.push(spawn(
            &test,
            "producer",
            &[
                ("QUEUE", name.clone()),
                ("READY", ready_name.clone()),
                ("ID", id.to_string()),
            ],
        ));
    }
    for _ in 0..CONSUMERS {
        children.push(spawn(
            &test,
            "consumer",
            &[
                ("QUEUE", name.clone()),
                ("READY", ready_name.clone()),
                ("SEEN", seen_name.clone()),
            ],
        ));
    }
    // Everyone attached: our own handle (a sender too) may go; then only the producers keep
    // the queue connected.
    assert!(common::eventually(Duration::from_secs(60), || ready
        .load(Ordering::SeqCst)
        == u64::from(PRODUCERS + CONSUMERS)));
    let (tx, rx) = queue.split().unwrap();
    drop(tx);
    join_all(children, LIMIT);
    let missing = seen
        .iter()
        .filter(|b| b.load(Ordering::Relaxed) == 0)
        .count();
    assert_eq!(missing, 0, "{missing} messages never received");
    assert!(rx.is_empty(), "messages left over");
    assert_eq!(rx.try_get(), Err(TryGetError::Disconnected));
}

// ---------------------------------------------------------------------------------------------
// Message types round-trip through Queue and Pipe, across a process boundary.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Job {
    Stop,
    Text(String),
    Numbers(Vec<i64>),
    Pair { name: String, weight: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Block64 {
    words: [u64; 7],
    check: u64,
}

fn jobs() -> Vec<Job> {
    vec![
        Job::Text(String::new()),
        Job::Text("héllo, wörld".into()),
        Job::Numbers((-500..500).collect()),
        Job::Pair {
            name: "x".repeat(1000),
            weight: 0.25,
        },
        Job::Numbers(vec![i64::MIN, i64::MAX]),
    ]
}

fn byte_messages() -> Vec<Vec<u8>> {
    [1usize, 7, 8, 9, 63, 64, 65, 1000, 4096, 65_537, 1 << 20]
        .iter()
        .map(|&n| (0..n).map(|i| (i * 31 + n) as u8).collect())
        .collect()
}

fn blocks() -> Vec<Block64> {
    (0..100u64)
        .map(|i| Block64 {
            words: [i, i + 1, i + 2, u64::MAX - i, 5, 6, 7],
            check: i * 3,
        })
        .collect()
}

/// Builder for the echo queues: room for 1 MiB messages.
fn big<T, C: multiproc::Codec<T>>(name: &str) -> Queue<T, C> {
    Queue::<T>::builder()
        .codec::<C>()
        .name(name)
        .capacity(64)
        .max_bytes(4 << 20)
        .create()
        .unwrap()
}

#[test]
fn types_round_trip_through_queues_across_processes() {
    if role().as_deref() == Some("echo") {
        let _watchdog = watchdog(LIMIT, "echo");
        let jobs_in = Receiver::<Job>::open(&arg("JOBS_IN")).unwrap();
        let jobs_out = Sender::<Job>::open(&arg("JOBS_OUT")).unwrap();
        let u64_in = Receiver::<u64, Plain>::open(&arg("U64_IN")).unwrap();
        let u64_out = Sender::<u64, Plain>::open(&arg("U64_OUT")).unwrap();
        let blk_in = Receiver::<Block64, Plain>::open(&arg("BLK_IN")).unwrap();
        let blk_out = Sender::<Block64, Plain>::open(&arg("BLK_OUT")).unwrap();
        loop {
            match jobs_in.get().unwrap() {
                Job::Stop => break,
                j => jobs_out.put(j).unwrap(),
            }
        }
        for _ in 0..1000 {
            u64_out.put(u64_in.get().unwrap()).unwrap();
        }
        for _ in 0..blocks().len() {
            blk_out.put(blk_in.get().unwrap()).unwrap();
        }
        for _ in 0..byte_messages().len() {
            let b = jobs_in.get_bytes().unwrap();
            jobs_out.put_bytes(&b).unwrap();
        }
        return;
    }
    let _watchdog = watchdog(LIMIT, "round trip test");
    let names: Vec<String> = ["ji", "jo", "ui", "uo", "bi", "bo"]
        .iter()
        .map(|t| unique_name(t))
        .collect();
    let jobs_in = big::<Job, multiproc::Serde>(&names[0]);
    let jobs_out = big::<Job, multiproc::Serde>(&names[1]);
    let u64_in = big::<u64, Plain>(&names[2]);
    let u64_out = big::<u64, Plain>(&names[3]);
    let blk_in = big::<Block64, Plain>(&names[4]);
    let blk_out = big::<Block64, Plain>(&names[5]);
    let mut child = spawn(
        &this_test!(types_round_trip_through_queues_across_processes),
        "echo",
        &[
            ("JOBS_IN", names[0].clone()),
            ("JOBS_OUT", names[1].clone()),
            ("U64_IN", names[2].clone()),
            ("U64_OUT", names[3].clone()),
            ("BLK_IN", names[4].clone()),
            ("BLK_OUT", names[5].clone()),
        ],
    );
    for j in jobs() {
        jobs_in.put(j.clone()).unwrap();
        assert_eq!(jobs_out.get().unwrap(), j);
    }
    jobs_in.put(Job::Stop).unwrap();
    for i in 0..1000u64 {
        let v = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        u64_in.put(v).unwrap();
        assert_eq!(u64_out.get().unwrap(), v);
    }
    for b in blocks() {
        blk_in.put(b).unwrap();
        assert_eq!(blk_out.get().unwrap(), b);
    }
    for m in byte_messages() {
        jobs_in.put_bytes(&m).unwrap();
        assert_eq!(jobs_out.get_bytes().unwrap(), m, "{} bytes", m.len());
    }
    assert!(wait_for(&mut child, LIMIT).success());
}

#[test]
fn types_round_trip_through_a_pipe_across_processes() {
    if role().as_deref() == Some("echo") {
        let _watchdog = watchdog(LIMIT, "pipe echo");
        let conn: Connection<Job> = Connection::from_handle(&arg("CONN").parse().unwrap()).unwrap();
        loop {
            match conn.recv() {
                Ok(Job::Stop) => break,
                Ok(j) => conn.send(j).unwrap(),
                Err(e) => panic!("recv: {e}"),
            }
        }
        for _ in 0..byte_messages().len() {
            let b = conn.recv_bytes().unwrap();
            conn.send_bytes(&b).unwrap();
        }
        return;
    }
    let _watchdog = watchdog(LIMIT, "pipe round trip test");
    // Named rings so the child can open them by handle; 4 MiB of room for the 1 MiB message.
    let (a, b, creators) = named_pipe();
    let mut child = spawn(
        &this_test!(types_round_trip_through_a_pipe_across_processes),
        "echo",
        &[("CONN", b.handle().to_string())],
    );
    drop(b);
    for (i, j) in jobs().into_iter().enumerate() {
        a.send(j.clone()).unwrap();
        assert_eq!(a.recv().unwrap(), j);
        if i == 0 {
            // The child has attached: the creating handles (which unlink the names and would
            // keep both directions connected) can go.
            drop(std::mem::take(&mut *creators.borrow_mut()));
        }
    }
    a.send(Job::Stop).unwrap();
    for m in byte_messages() {
        a.send_bytes(&m).unwrap();
        let mut buf = vec![0u8; 2 << 20];
        let n = a.recv_bytes_into(&mut buf).unwrap();
        assert_eq!(&buf[..n], &m[..], "{} bytes", m.len());
    }
    assert!(wait_for(&mut child, LIMIT).success());
    // The child is gone: EOF.
    assert_eq!(
        a.recv_timeout(Duration::from_secs(10)),
        Err(GetTimeoutError::Disconnected)
    );
}

type Creators = std::cell::RefCell<Vec<Queue<Job>>>;

/// A duplex pipe over two named rings with room for 1 MiB messages, and the creating queue
/// handles (to drop once the other end is attached).
fn named_pipe() -> (Connection<Job>, Connection<Job>, Creators) {
    let ab = big::<Job, multiproc::Serde>(&unique_name("ab"));
    let ba = big::<Job, multiproc::Serde>(&unique_name("ba"));
    let conn = |tx: &Queue<Job>, rx: &Queue<Job>| {
        let h = format!("{}|{}", tx.handle(), rx.handle());
        Connection::<Job>::from_handle(&h.parse().unwrap()).unwrap()
    };
    let a = conn(&ab, &ba);
    let b = conn(&ba, &ab);
    (a, b, std::cell::RefCell::new(vec![ab, ba]))
}

// ---------------------------------------------------------------------------------------------
// Threads of one process, limits, timeouts.

#[test]
fn the_same_queue_works_between_threads() {
    let _watchdog = watchdog(LIMIT, "threads test");
    const PER: u32 = 20_000;
    let q = Queue::<Tagged>::builder()
        .codec::<Plain>()
        .capacity(256)
        .create()
        .unwrap();
    let seen: Vec<AtomicU8> = (0..4 * PER).map(|_| AtomicU8::new(0)).collect();
    std::thread::scope(|s| {
        for id in 0..4u32 {
            let tx = q.sender().unwrap();
            s.spawn(move || {
                for seq in 0..PER {
                    tx.put(Tagged { producer: id, seq }).unwrap();
                }
            });
        }
        let (tx, rx) = q.clone().split().unwrap();
        drop(tx);
        for _ in 0..4 {
            let rx = rx.clone();
            let seen = &seen;
            s.spawn(move || {
                let mut got = 0;
                while got < PER {
                    let m = rx.get().unwrap();
                    assert_eq!(
                        seen[(m.producer * PER + m.seq) as usize].swap(1, Ordering::Relaxed),
                        0
                    );
                    got += 1;
                }
            });
        }
    });
    assert!(seen.iter().all(|b| b.load(Ordering::Relaxed) == 1));
    assert!(q.is_empty());
}

#[test]
fn limits_and_timeouts() {
    let q = Queue::<u64>::builder()
        .codec::<Plain>()
        .capacity(2)
        .create()
        .unwrap();
    assert_eq!(q.capacity(), 2);
    q.put(1).unwrap();
    q.try_put(2).unwrap();
    assert!(q.is_full());
    assert_eq!(q.try_put(3), Err(TryPutError::Full(3)));
    let d = Duration::from_millis(100);
    let t = Instant::now();
    assert_eq!(q.put_timeout(4, d), Err(PutTimeoutError::Timeout(4)));
    assert!(t.elapsed() >= d && t.elapsed() < d + Duration::from_secs(1));
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 2);
    let t = Instant::now();
    assert_eq!(q.get_timeout(d), Err(GetTimeoutError::Timeout));
    assert!(t.elapsed() >= d && t.elapsed() < d + Duration::from_secs(1));
    assert_eq!(q.try_get(), Err(TryGetError::Empty));

    // Larger than the queue's bytes: streamed through in fragments (a longer one than
    // `MAX_MESSAGE_LEN` is `TooLarge`, see tests/queue_large).
    let small = Queue::<Vec<u8>>::builder()
        .max_bytes(1024)
        .create()
        .unwrap();
    assert_eq!(small.max_message_len(), multiproc::MAX_MESSAGE_LEN);
    let v = vec![7u8; 2000];
    let (tx, rx) = (small.clone(), small.clone());
    let t = std::thread::spawn(move || tx.put(v).unwrap());
    assert_eq!(rx.get().unwrap(), vec![7u8; 2000]);
    t.join().unwrap();
    small.put_bytes(&[9; 504]).unwrap();
    // A buffer too small leaves the message in place.
    let mut buf = [0u8; 10];
    assert_eq!(
        small.get_bytes_into(&mut buf),
        Err(GetError::BufferTooSmall(504))
    );
    assert_eq!(small.len(), 1);
    assert_eq!(small.get_bytes().unwrap(), vec![9; 504]);

    // Wrong type on the wire: a decode error, not garbage.
    small.put_bytes(&[0xff; 3]).unwrap();
    assert!(matches!(small.get(), Err(GetError::Decode(_))));

    // close(): puts fail, gets drain and then report Disconnected.
    q.put(5).unwrap();
    q.close();
    assert!(q.is_closed());
    assert_eq!(q.put(6), Err(PutError::Closed(6)));
    assert_eq!(q.get().unwrap(), 5);
    assert_eq!(q.get(), Err(GetError::Disconnected));
}

#[test]
fn many_wraps_of_a_small_ring_keep_messages_intact() {
    let q = Queue::<Vec<u8>>::builder()
        .capacity(1000)
        .max_bytes(512)
        .create()
        .unwrap();
    for round in 0..5_000usize {
        let m: Vec<u8> = (0..(round * 7) % 200).map(|i| (i + round) as u8).collect();
        q.put(m.clone()).unwrap();
        if round % 3 == 0 {
            q.put(vec![]).unwrap();
            assert_eq!(q.get().unwrap(), m);
            assert_eq!(q.get().unwrap(), Vec::<u8>::new());
        } else {
            assert_eq!(q.get().unwrap(), m);
        }
    }
    assert!(q.is_empty());
}

#[test]
fn disconnect_within_one_process() {
    let q = Queue::<u32>::new(8).unwrap();
    let (tx, rx) = q.split().unwrap();
    tx.put(1).unwrap();
    drop(tx);
    assert_eq!(rx.get().unwrap(), 1);
    assert_eq!(rx.get(), Err(GetError::Disconnected));
    let q = Queue::<u32>::new(8).unwrap();
    let (tx, rx) = q.split().unwrap();
    drop(rx);
    assert_eq!(tx.put(2), Err(PutError::Disconnected(2)));
}

/// Stress for lost wake-ups: two processes bounce messages through two one-slot queues, so
/// every get finds the queue empty and every put finds it full, and both sides keep going to
/// sleep and waking each other. A lost wake-up would stall a round trip until the next
/// liveness probe; the watchdog and the round count make that visible as a failure.
#[test]
fn ping_pong_through_one_slot_queues_never_loses_a_wakeup() {
    ping_pong(
        &this_test!(ping_pong_through_one_slot_queues_never_loses_a_wakeup),
        1,
    );
}

/// 20,000 checked round trips between this process and a child, through two queues of
/// `capacity` messages. Generous bound: a lost wake-up costs at least one 10 ms probe slice;
/// thousands would show.
fn ping_pong(test: &str, capacity: usize) {
    const ROUNDS: u64 = 20_000;
    if role().as_deref() == Some("pong") {
        let _watchdog = watchdog(LIMIT, "pong");
        let ping = Receiver::<u64, Plain>::open(&arg("PING")).unwrap();
        let pong = Sender::<u64, Plain>::open(&arg("PONG")).unwrap();
        for _ in 0..ROUNDS {
            let v = ping.get().unwrap();
            pong.put(v + 1).unwrap();
        }
        return;
    }
    let _watchdog = watchdog(LIMIT, "ping-pong test");
    let queue = |tag: &str| {
        let name = unique_name(tag);
        let q = Queue::<u64>::builder()
            .codec::<Plain>()
            .name(&name)
            .capacity(capacity)
            .create()
            .unwrap();
        (q, name)
    };
    let (ping, ping_name) = queue("ping");
    let (pong, pong_name) = queue("pong");
    let mut child = spawn(test, "pong", &[("PING", ping_name), ("PONG", pong_name)]);
    let t = Instant::now();
    for i in 0..ROUNDS {
        ping.put(i * 2).unwrap();
        assert_eq!(pong.get().unwrap(), i * 2 + 1);
    }
    let took = t.elapsed();
    assert!(wait_for(&mut child, LIMIT).success());
    assert!(
        took < Duration::from_secs(60),
        "{ROUNDS} round trips took {took:?}"
    );
}

/// A value whose serde encoding panics on its second pass (the one that writes into the queue,
/// under its put lock), and whose decoding panics when `explode` is set.
#[derive(Debug)]
struct Fragile {
    explode: bool,
    passes: std::cell::Cell<u32>,
}

impl Fragile {
    fn new(explode: bool) -> Self {
        Self {
            explode,
            passes: std::cell::Cell::new(0),
        }
    }
}

impl Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pass = self.passes.get();
        self.passes.set(pass + 1);
        if self.explode && pass == 1 {
            panic!("encoding panics inside the put");
        }
        // The sizing pass (in debug builds also decoded, outside the put lock) says `false`, so
        // the panic comes where it is meant to: in the encoding under the put lock.
        s.serialize_bool(self.explode && pass > 0)
    }
}

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let explode = bool::deserialize(d)?;
        if explode {
            panic!("decoding panics inside the get");
        }
        Ok(Self::new(false))
    }
}

/// Issue 8 review: a panic in user code run under a queue's put or get lock (a `Serialize` or
/// `Deserialize` impl) left that lock held by a live thread, and every later put or get
/// waited for good.
#[test]
fn a_codec_panic_inside_put_or_get_leaves_the_queue_usable() {
    let _w = watchdog(Duration::from_secs(60), "codec panic test");
    let (tx, rx) = Queue::<Fragile>::new(4).unwrap().split().unwrap();
    let put = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tx.put(Fragile::new(true))));
    assert!(put.is_err(), "the encoding was meant to panic");
    tx.put_timeout(Fragile::new(false), Duration::from_secs(5))
        .expect("the put lock was left held");
    assert!(!rx.get_timeout(Duration::from_secs(5)).unwrap().explode);
    // A message whose decoding panics: the get lock must be free afterwards, and the message
    // is still there as bytes.
    tx.put_bytes(&[1]).unwrap();
    let get = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rx.try_get()));
    assert!(get.is_err(), "the decoding was meant to panic");
    assert_eq!(
        rx.get_bytes_timeout(Duration::from_secs(5))
            .expect("the get lock was left held"),
        vec![1]
    );
}

/// Pins the calling thread (and the children it starts afterwards) to the first CPU it may run
/// on, so that a test's processes share one CPU.
#[allow(unsafe_code)] // sched_{get,set}affinity: see the SAFETY comments
fn pin_to_one_cpu() {
    // SAFETY: `cpu_set_t` is plain data; zeroed is an empty set, filled in by the call.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity");
    let first = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .expect("no CPU allowed");
    // SAFETY: as above.
    unsafe { libc::CPU_ZERO(&mut set) };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(first, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "sched_setaffinity");
}

/// Both processes on one CPU: a waiter that spun or yielded where it should sleep (or slept
/// where it had to yield) would lose nothing but time; a lost wake-up would show as a probe
/// slice per message. Every answer is checked.
#[test]
fn ping_pong_on_one_cpu_never_loses_a_wakeup() {
    let test = this_test!(ping_pong_on_one_cpu_never_loses_a_wakeup);
    if role().is_some() {
        return ping_pong(&test, 4);
    }
    // The test thread and the child it spawns (which inherits the mask) share one CPU.
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_one_cpu();
            ping_pong(&test, 4);
        });
    });
}

/// CPU time the calling thread has used.
#[allow(unsafe_code)] // getrusage: see the SAFETY comments
fn thread_cpu_time() -> Duration {
    // SAFETY: `rusage` is plain data, filled in by the call.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A get that waits on an idle queue spins or yields only briefly, then sleeps: over 2 s it
/// uses a small fraction of a core (the measured figure is about 0.1%; the bound is generous).
#[test]
fn a_get_blocked_on_an_idle_queue_sleeps() {
    let _watchdog = watchdog(LIMIT, "idle get");
    let (tx, rx) = Queue::<u64, Plain>::with_codec(4).unwrap().split().unwrap();
    let wait = Duration::from_secs(2);
    let cpu = thread_cpu_time();
    let t = Instant::now();
    assert_eq!(rx.get_timeout(wait), Err(GetTimeoutError::Timeout));
    let (took, used) = (t.elapsed(), thread_cpu_time() - cpu);
    assert!(took >= wait, "returned after {took:?}");
    assert!(
        used < Duration::from_millis(100),
        "a get blocked for {took:?} used {used:?} of CPU"
    );
    drop(tx);
}

/// Issue 12: a capacity no queue can have is an error of `create`, not a panic, whichever
/// way it is given; nothing is created then, and the setter only stores the value.
#[test]
fn issue_12_a_queue_capacity_out_of_range_is_an_error() {
    use multiproc::{JoinableQueue, OpenError, channel};
    const CAPACITY: &str = "queue capacity must be 1 to 4294967295 (u32::MAX) messages";
    let capacity = |r: Result<(), OpenError>| match r {
        Err(OpenError::InvalidArgument(why)) => assert_eq!(why, CAPACITY),
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    capacity(Queue::<u64>::new(0).map(drop));
    capacity(Queue::<u64, Plain>::with_codec(0).map(drop));
    capacity(channel::<u64>(0).map(drop));
    capacity(JoinableQueue::<u64>::new(0).map(drop));
    capacity(Queue::<u64>::builder().capacity(0).create().map(drop));
    capacity(Sender::<u64>::builder().capacity(0).create().map(drop));
    capacity(Receiver::<u64>::builder().capacity(0).create().map(drop));
    capacity(
        JoinableQueue::<u64>::builder()
            .capacity(0)
            .create()
            .map(drop),
    );
    let above = usize::try_from(u64::from(u32::MAX) + 1).unwrap();
    capacity(Queue::<u64>::new(above).map(drop));

    // A named queue that fails this way leaves no name behind, even through open_or_create.
    let name = unique_name("cap0");
    let named = || Queue::<u64>::builder().name(&name).capacity(0);
    capacity(named().create().map(drop));
    capacity(named().open_or_create().map(drop));
    assert!(matches!(
        Queue::<u64>::open(&name),
        Err(OpenError::NotFound { .. })
    ));

    match Queue::<u64>::builder().max_bytes((1 << 31) + 1).create() {
        Err(OpenError::InvalidArgument(why)) => {
            assert_eq!(why, "queue max_bytes must be at most 2147483648 (2 GiB)")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    // The bounds themselves are accepted, and a later setter call replaces a bad value.
    let q = Queue::<u64>::builder()
        .capacity(u32::MAX as usize)
        .max_bytes(64)
        .create()
        .unwrap();
    assert_eq!(q.capacity(), u32::MAX as usize);
    let q = Queue::<u64>::builder()
        .capacity(0)
        .capacity(1)
        .create()
        .unwrap();
    assert_eq!(q.capacity(), 1);
    q.try_put(7).unwrap();
    assert!(matches!(q.try_put(8), Err(TryPutError::Full(8))));
    assert_eq!(q.get().unwrap(), 7);
}

// ---------------------------------------------------------------------------------------------
// Batches: put_many / get_many mixed with single puts and gets, each side in its own processes.

const BATCH_PER_PRODUCER: u32 = 60_000;

#[test]
fn batches_mix_with_single_puts_and_gets_exactly_once_in_order() {
    match role().as_deref() {
        Some("producer") => {
            let _watchdog = watchdog(LIMIT, "batch producer");
            let id: u32 = arg("ID").parse().unwrap();
            let tx = Sender::<Tagged, Plain>::open(&arg("QUEUE")).unwrap();
            common::counter(&arg("READY")).fetch_add(1, Ordering::SeqCst);
            if id == 0 {
                // Batches of 1 to 37 values, so runs split at the ring's end and at full.
                let mut seq = 0;
                let mut size = 1;
                while seq < BATCH_PER_PRODUCER {
                    let n = size.min(BATCH_PER_PRODUCER - seq);
                    let batch: Vec<Tagged> = (seq..seq + n)
                        .map(|seq| Tagged { producer: id, seq })
                        .collect();
                    tx.put_many(&batch).unwrap();
                    seq += n;
                    size = size % 37 + 1;
                }
            } else {
                for seq in 0..BATCH_PER_PRODUCER {
                    tx.put(Tagged { producer: id, seq }).unwrap();
                }
            }
            return;
        }
        Some("consumer") => {
            let _watchdog = watchdog(LIMIT, "batch consumer");
            let batched = arg("ID") == "0";
            let rx = Receiver::<Tagged, Plain>::open(&arg("QUEUE")).unwrap();
            let seen = RawArray::<AtomicU8>::open(&arg("SEEN")).unwrap();
            common::counter(&arg("READY")).fetch_add(1, Ordering::SeqCst);
            let mut last = [None::<u32>; 2];
            let mut out = Vec::new();
            loop {
                out.clear();
                let got = if batched {
                    rx.get_many(&mut out, 32).map(|n| assert_eq!(n, out.len()))
                } else {
                    rx.get().map(|m| out.push(m))
                };
                match got {
                    Ok(()) => {}
                    Err(GetError::Disconnected) => return,
                    Err(e) => panic!("get: {e}"),
                }
                assert!(!out.is_empty() && out.len() <= 32, "{} messages", out.len());
                for m in &out {
                    assert!(m.producer < 2 && m.seq < BATCH_PER_PRODUCER, "{m:?}");
                    let l = &mut last[m.producer as usize];
                    assert!(
                        l.is_none_or(|l| l < m.seq),
                        "out of order: {l:?} then {m:?}"
                    );
                    *l = Some(m.seq);
                    let i = (m.producer * BATCH_PER_PRODUCER + m.seq) as usize;
                    assert_eq!(seen[i].swap(1, Ordering::Relaxed), 0, "duplicate {m:?}");
                }
            }
        }
        _ => {}
    }
    let _watchdog = watchdog(LIMIT, "batch test");
    let name = unique_name("qbatch");
    let (tx, rx) = Queue::<Tagged>::builder()
        .codec::<Plain>()
        .name(&name)
        .max_bytes(4096)
        .create()
        .and_then(Queue::split)
        .unwrap();
    let seen_name = unique_name("bseen");
    let seen = RawArray::<AtomicU8>::builder()
        .name(&seen_name)
        .len(2 * BATCH_PER_PRODUCER as usize)
        .create()
        .unwrap();
    let ready_name = unique_name("bready");
    let ready = RawValue::<AtomicU64>::builder()
        .name(&ready_name)
        .create()
        .unwrap();
    let test = this_test!(batches_mix_with_single_puts_and_gets_exactly_once_in_order);
    let mut children = Vec::new();
    for id in 0..2 {
        children.push(spawn(
            &test,
            "consumer",
            &[
                ("QUEUE", name.clone()),
                ("SEEN", seen_name.clone()),
                ("READY", ready_name.clone()),
                ("ID", id.to_string()),
            ],
        ));
    }
    for id in 0..2 {
        children.push(spawn(
            &test,
            "producer",
            &[
                ("QUEUE", name.clone()),
                ("READY", ready_name.clone()),
                ("ID", id.to_string()),
            ],
        ));
    }
    // The producers hold the queue open now that they have attached; then ours may go.
    assert!(common::eventually(Duration::from_secs(60), || ready
        .load(Ordering::SeqCst)
        == 4));
    drop(tx);
    drop(rx);
    join_all(children, LIMIT);
    let missing = seen
        .iter()
        .filter(|b| b.load(Ordering::Relaxed) == 0)
        .count();
    assert_eq!(missing, 0, "{missing} messages never received");
}

#[test]
fn batch_edges_partial_puts_empty_gets_errors_and_a_bad_message() {
    // A ring with room for 8 messages: a try takes what fits, in order.
    let (tx, rx) = multiproc::channel::<u64>(8).unwrap();
    let values: Vec<u64> = (0..20).collect();
    assert_eq!(tx.try_put_many(&values), Ok(8));
    assert!(matches!(
        tx.try_put_many(&values[8..]),
        Err(TryPutError::Full(()))
    ));
    assert_eq!(tx.try_put_many(&[]), Ok(0));
    let mut out = Vec::new();
    assert_eq!(rx.get_many(&mut out, 0), Ok(0));
    assert_eq!(rx.get_many(&mut out, 5), Ok(5));
    assert_eq!(rx.try_get_many(&mut out, 100), Ok(3));
    assert_eq!(out, (0..8).collect::<Vec<_>>());
    assert_eq!(rx.try_get_many(&mut out, 100), Err(TryGetError::Empty));
    let started = Instant::now();
    assert_eq!(
        rx.get_many_timeout(&mut out, 4, Duration::from_millis(50)),
        Err(GetTimeoutError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    // A timed put_many that cannot finish says how many went in.
    match tx.put_many_timeout(&values, Duration::from_millis(50)) {
        Err(PutTimeoutError::Timeout(8)) => {}
        other => panic!("expected Timeout(8), got {other:?}"),
    }
    out.clear();
    assert_eq!(rx.get_many(&mut out, 100), Ok(8));
    drop(rx);
    match tx.put_many(&values) {
        Err(PutError::Disconnected(0)) => {}
        other => panic!("expected Disconnected(0), got {other:?}"),
    }

    // A message that does not decode ends a batch: those before it are kept, its bytes are
    // in the error, and the next batch goes on after it.
    let (tx, rx) = multiproc::channel::<String>(16).unwrap();
    tx.put_many(&["a".to_string(), "b".to_string()]).unwrap();
    tx.put_bytes(&[1, 0xff]).unwrap(); // length 1, then a byte that is not UTF-8
    tx.put("c".to_string()).unwrap();
    let mut out = Vec::new();
    match rx.get_many(&mut out, 10) {
        Err(GetError::Decode(e)) => assert_eq!(e.bytes(), &[1, 0xff]),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(out, ["a", "b"]);
    out.clear();
    assert_eq!(rx.get_many(&mut out, 10), Ok(1));
    assert_eq!(out, ["c"]);
}

/// A value whose encoding changes length from one call to the next (a `Cell` counter stands in
/// for a `Mutex` another thread writes, or a map whose order changes). The room of a record in
/// a batch is the length asked for once: the longer second encoding must fail with `Encode`,
/// never write past the room (here, past the end of a 4 KiB ring).
struct Grows {
    /// Encodes to nothing the first time, to `later` bytes after that.
    grows: bool,
    calls: std::cell::Cell<u32>,
    later: usize,
}

impl Serialize for Grows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.calls.get();
        self.calls.set(n + 1);
        let len = if self.grows && n == 0 { 0 } else { self.later };
        vec![7u8; len].serialize(s)
    }
}

impl<'de> Deserialize<'de> for Grows {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<u8>::deserialize(d)?;
        Ok(Self {
            grows: false,
            calls: std::cell::Cell::new(0),
            later: v.len(),
        })
    }
}

#[test]
fn a_batch_value_that_encodes_longer_the_second_time_stays_inside_its_room() {
    for later in [40, 1 << 20] {
        let (tx, rx) = Queue::<Grows>::builder()
            .max_bytes(4096)
            .create()
            .and_then(Queue::split)
            .unwrap();
        let grows = || Grows {
            grows: true,
            calls: std::cell::Cell::new(0),
            later,
        };
        // Behind a well-behaved first value, and in first place.
        let batch = [
            Grows {
                grows: false,
                calls: std::cell::Cell::new(0),
                later: 3,
            },
            grows(),
        ];
        match tx.try_put_many(&batch) {
            Ok(1) => {}
            other => panic!("expected the first value alone to go in, got {other:?}"),
        }
        match tx.try_put_many(&[grows(), grows()]) {
            Err(TryPutError::Encode(..)) => {}
            other => panic!("expected an encode error, got {other:?}"),
        }
        match tx.put_many(&[grows()]) {
            Err(PutError::Encode(0, _)) => {}
            other => panic!("expected an encode error with 0 sent, got {other:?}"),
        }
        let mut out = Vec::new();
        assert_eq!(rx.try_get_many(&mut out, 10), Ok(1));
        assert_eq!(out[0].later, 3);
        assert_eq!(rx.try_get_many(&mut out, 10), Err(TryGetError::Empty));
    }
}

/// A `Deserialize` that panics on 13.
#[derive(Debug, PartialEq, Serialize)]
struct NotThirteen(u64);

impl<'de> Deserialize<'de> for NotThirteen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        assert_ne!(v, 13, "thirteen");
        Ok(Self(v))
    }
}

#[test]
fn a_decoder_that_panics_mid_batch_neither_loses_nor_repeats_a_message() {
    let (tx, rx) = multiproc::channel::<NotThirteen>(16).unwrap();
    tx.put_many(&[NotThirteen(1), NotThirteen(2)]).unwrap();
    tx.put_bytes(&[13]).unwrap(); // postcard's 13
    tx.put(NotThirteen(4)).unwrap();
    let mut out = Vec::new();
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rx.get_many(&mut out, 10)));
    assert!(panicked.is_err(), "the decoder must have panicked");
    assert_eq!(out, [NotThirteen(1), NotThirteen(2)]);
    // The two taken are gone; the message the decoder panicked on is still first.
    assert_eq!(rx.get_bytes().unwrap(), [13]);
    out.clear();
    assert_eq!(rx.try_get_many(&mut out, 10), Ok(1));
    assert_eq!(out, [NotThirteen(4)]);
}
