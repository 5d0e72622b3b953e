//! Messages of any size through `Queue`, `JoinableQueue` and `Connection`, across real
//! processes: sizes from 1 B to 256 MiB checked by digest on the receiving side, typed values
//! larger than the ring, producers and consumers SIGKILLed in the middle of a message (no
//! partial message is ever delivered, at most the message in flight is lost), timed gets and
//! puts cut short in the middle of a message.
#![cfg(feature = "serde")]

#[path = "../common/mod.rs"]
mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{arg, counter, join_all, new_counter, role, spawn, unique_name, watchdog};
use multiproc::{
    Connection, ConnectionHandle, GetError, GetTimeoutError, JoinableQueue, MAX_MESSAGE_LEN,
    PutError, PutTimeoutError, Queue, Receiver, Sender, TryPutError, pipe,
};

const LIMIT: Duration = Duration::from_secs(120);
const MIB: usize = 1 << 20;
/// The default queue's data region, and its largest single record.
const DEFAULT_RING: usize = MIB;
const MAX_RECORD: usize = DEFAULT_RING / 2 - 8;
/// Payload bytes of a fragment in the default ring.
const FRAG: usize = 64 << 10;

/// `len` bytes from a seeded xorshift generator.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A 64-bit digest of the bytes and their length (FNV-1a over 8-byte words, then mixed).
fn digest(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ b.len() as u64;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        h ^= u64::from_le_bytes(w.try_into().unwrap());
        h = h.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    for &byte in words.remainder() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 31)
}

fn sizes() -> Vec<usize> {
    vec![
        1,
        MAX_RECORD - 1,
        MAX_RECORD,
        MAX_RECORD + 1,
        MAX_RECORD + FRAG + 1,
        MIB,
        16 * MIB,
        256 * MIB,
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. Sizes across processes

/// Child: receives messages until an empty one, answering each with its digest.
fn digest_child() {
    let _watchdog = watchdog(LIMIT, "digest child");
    let replies = Sender::<u64>::open(&arg("REPLY")).unwrap();
    match arg("KIND").as_str() {
        "queue" => {
            let rx = Receiver::<Vec<u8>>::open(&arg("QUEUE")).unwrap();
            loop {
                let m = rx.get_bytes().unwrap();
                if m.is_empty() {
                    break;
                }
                replies.put(digest(&m)).unwrap();
            }
        }
        "joinable" => {
            let q = JoinableQueue::<Vec<u8>>::open(&arg("QUEUE")).unwrap();
            loop {
                let m = q.get_bytes().unwrap();
                q.task_done().unwrap();
                if m.is_empty() {
                    break;
                }
                replies.put(digest(&m)).unwrap();
            }
        }
        "pipe" => {
            let h: ConnectionHandle = arg("CONN").parse().unwrap();
            let c = Connection::<Vec<u8>>::from_handle(&h).unwrap();
            loop {
                let m = c.recv_bytes().unwrap();
                if m.is_empty() {
                    break;
                }
                // Echo large ones back too: the other direction streams as well.
                if m.len() == 16 * MIB {
                    c.send_bytes(&m).unwrap();
                }
                replies.put(digest(&m)).unwrap();
            }
        }
        "typed" => {
            let rx = Receiver::<Vec<u64>>::open(&arg("QUEUE")).unwrap();
            let v = rx.get().unwrap();
            let ok = v.len() == 4 << 20 && v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3);
            replies.put(u64::from(ok)).unwrap();
        }
        other => panic!("unknown kind {other}"),
    }
}

fn reply_queue() -> (Queue<u64>, String) {
    let name = unique_name("reply");
    let q = Queue::<u64>::builder().name(&name).create().unwrap();
    (q, name)
}

#[test]
fn every_size_through_a_queue_across_processes() {
    if role().is_some() {
        return digest_child();
    }
    let _watchdog = watchdog(LIMIT, "sizes queue");
    let name = unique_name("large-q");
    let q = Queue::<Vec<u8>>::builder().name(&name).create().unwrap();
    assert_eq!(q.max_message_len(), MAX_MESSAGE_LEN);
    let (replies, reply) = reply_queue();
    let child = spawn(
        &this_test!(every_size_through_a_queue_across_processes),
        "child",
        &[("KIND", "queue".into()), ("QUEUE", name), ("REPLY", reply)],
    );
    for (i, &len) in sizes().iter().enumerate() {
        let m = payload(i as u64, len);
        q.put_bytes(&m).unwrap();
        assert_eq!(replies.get().unwrap(), digest(&m), "{len} bytes");
    }
    q.put_bytes(&[]).unwrap();
    join_all(vec![child], LIMIT);
}

#[test]
fn every_size_through_a_joinable_queue_across_processes() {
    if role().is_some() {
        return digest_child();
    }
    let _watchdog = watchdog(LIMIT, "sizes joinable");
    let name = unique_name("large-j");
    let q = JoinableQueue::<Vec<u8>>::builder()
        .name(&name)
        .create()
        .unwrap();
    let (replies, reply) = reply_queue();
    let child = spawn(
        &this_test!(every_size_through_a_joinable_queue_across_processes),
        "child",
        &[
            ("KIND", "joinable".into()),
            ("QUEUE", name),
            ("REPLY", reply),
        ],
    );
    // No 256 MiB here: the queue test has it.
    for (i, &len) in sizes().iter().enumerate().filter(|(_, l)| **l <= 16 * MIB) {
        let m = payload(100 + i as u64, len);
        q.put_bytes(&m).unwrap();
        assert_eq!(replies.get().unwrap(), digest(&m), "{len} bytes");
    }
    // One task per message, not per fragment.
    assert!(q.join_timeout(LIMIT));
    assert_eq!(q.unfinished_tasks(), 0);
    q.put_bytes(&[]).unwrap();
    join_all(vec![child], LIMIT);
    assert!(q.join_timeout(LIMIT));
}

/// A put of a message in fragments that times out half-way leaves no task behind (Python
/// counts no task for a failed put): only a message's last fragment is a task.
#[test]
fn an_abandoned_message_leaves_no_task() {
    let q = JoinableQueue::<Vec<u8>>::builder()
        .max_bytes(4096)
        .create()
        .unwrap();
    let big = payload(5, 100_000);
    assert!(matches!(
        q.put_timeout(big.clone(), Duration::from_millis(50)),
        Err(PutTimeoutError::Timeout(_))
    ));
    assert!(!q.is_empty(), "some fragments were published");
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.join_timeout(Duration::from_secs(1)));
    // A get skips the orphans (counting nothing), and a whole message after them is one task.
    assert!(matches!(
        q.get_timeout(Duration::from_millis(50)),
        Err(GetTimeoutError::Timeout)
    ));
    assert_eq!(q.len(), 0);
    assert_eq!(q.unfinished_tasks(), 0);
    q.put(vec![7; 10]).unwrap();
    assert_eq!(q.unfinished_tasks(), 1);
    assert_eq!(q.get().unwrap(), vec![7; 10]);
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
}

/// An immediate shutdown with a message in fragments queued counts it as one task: `join`
/// returns once the one task already taken is done, not earlier.
#[test]
fn an_immediate_shutdown_counts_a_message_in_fragments_once() {
    let q = JoinableQueue::<Vec<u8>>::builder()
        .max_bytes(64 << 10)
        .create()
        .unwrap();
    let small = vec![1u8; 100];
    q.put(small.clone()).unwrap();
    assert_eq!(q.get().unwrap(), small); // a task in flight
    let big = payload(9, 40_000); // more than a record (32 KiB - 8), less than the ring
    q.put_bytes(&big).unwrap();
    q.put(small.clone()).unwrap();
    assert_eq!(q.unfinished_tasks(), 3);
    q.shutdown_immediate();
    // The two queued messages are done; the one taken is not.
    assert_eq!(q.unfinished_tasks(), 1);
    assert!(!q.join_timeout(Duration::from_millis(20)));
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::from_secs(1)));
}

#[test]
fn every_size_through_a_pipe_across_processes() {
    if role().is_some() {
        return digest_child();
    }
    let _watchdog = watchdog(LIMIT, "sizes pipe");
    let (a, b) = pipe::<Vec<u8>>().unwrap();
    b.set_inheritable(true).unwrap();
    let (replies, reply) = reply_queue();
    let child = spawn(
        &this_test!(every_size_through_a_pipe_across_processes),
        "child",
        &[
            ("KIND", "pipe".into()),
            ("CONN", b.handle().to_string()),
            ("REPLY", reply),
        ],
    );
    // The child has exec'd: stop leaking these descriptors into other tests' children.
    b.set_inheritable(false).unwrap();
    for (i, &len) in sizes().iter().enumerate() {
        let m = payload(200 + i as u64, len);
        a.send_bytes(&m).unwrap();
        if len == 16 * MIB {
            let back = a.recv_bytes().unwrap();
            assert!(back == m, "the 16 MiB echo differs");
        }
        assert_eq!(replies.get().unwrap(), digest(&m), "{len} bytes");
    }
    a.send_bytes(&[]).unwrap();
    join_all(vec![child], LIMIT);
}

#[test]
fn a_typed_value_larger_than_the_ring_across_processes() {
    if role().is_some() {
        return digest_child();
    }
    let _watchdog = watchdog(LIMIT, "typed");
    let name = unique_name("large-t");
    let q = Queue::<Vec<u64>>::builder().name(&name).create().unwrap();
    let (replies, reply) = reply_queue();
    let child = spawn(
        &this_test!(a_typed_value_larger_than_the_ring_across_processes),
        "child",
        &[("KIND", "typed".into()), ("QUEUE", name), ("REPLY", reply)],
    );
    let v: Vec<u64> = (0..4u64 << 20).map(|i| i * 3).collect();
    q.put(v).unwrap();
    assert_eq!(replies.get().unwrap(), 1, "the child decoded another value");
    join_all(vec![child], LIMIT);
    // And back in this process, through a ring of 4 KiB.
    let small = Queue::<Vec<u64>>::builder()
        .max_bytes(4096)
        .create()
        .unwrap();
    let (tx, rx) = (small.clone(), small.clone());
    let t = std::thread::spawn(move || tx.put((0..100_000).collect()).unwrap());
    assert_eq!(rx.get().unwrap(), (0..100_000).collect::<Vec<u64>>());
    t.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// 2. Buffers, batches, interleaving

#[test]
fn a_buffer_too_small_leaves_a_large_message_in_place() {
    let _watchdog = watchdog(LIMIT, "buffer too small");
    let q = Queue::<Vec<u8>>::builder()
        .max_bytes(1024)
        .create()
        .unwrap();
    let m = payload(7, 5000);
    let tx = q.clone();
    let sent = m.clone();
    let t = std::thread::spawn(move || tx.put_bytes(&sent).unwrap());
    let mut small = [0u8; 100];
    assert_eq!(
        q.get_bytes_into(&mut small),
        Err(GetError::BufferTooSmall(5000))
    );
    let mut big = vec![0u8; 6000];
    assert_eq!(q.get_bytes_into(&mut big), Ok(5000));
    assert!(big[..5000] == m[..]);
    t.join().unwrap();
    // Batches: a large value goes alone, and a get batch stops before one.
    let values = [vec![1u8; 10], vec![2u8; 3000], vec![3u8; 10]];
    let tx = q.clone();
    let t = std::thread::spawn(move || tx.put_many(&values).unwrap());
    let mut out = Vec::new();
    while out.len() < 3 {
        q.get_many(&mut out, 3).unwrap();
    }
    t.join().unwrap();
    assert_eq!(out, vec![vec![1u8; 10], vec![2u8; 3000], vec![3u8; 10]]);
}

/// Above `MAX_MESSAGE_LEN`: `TooLarge` at once, nothing published. (The zeroed vector is
/// mapped lazily: its pages are never touched.)
#[test]
fn a_message_above_max_message_len_is_too_large() {
    let q = Queue::<Vec<u8>>::builder()
        .max_bytes(4096)
        .create()
        .unwrap();
    let huge = vec![0u8; MAX_MESSAGE_LEN + 1];
    assert_eq!(q.put_bytes(&huge), Err(PutError::TooLarge(())));
    assert_eq!(q.try_put_bytes(&huge), Err(TryPutError::TooLarge(())));
    assert!(q.is_empty());
}

/// Child: puts 40 messages alternating small and large, each carrying its producer id and
/// sequence number, the rest from a generator seeded with both.
fn interleaving_producer() {
    let _watchdog = watchdog(LIMIT, "interleaving producer");
    let id: u64 = arg("ID").parse().unwrap();
    let tx = Sender::<Vec<u8>>::open(&arg("QUEUE")).unwrap();
    for seq in 0..40u64 {
        let len = if seq % 2 == 0 {
            100
        } else {
            3 * MIB + seq as usize
        };
        tx.put_bytes(&numbered(id, seq, len)).unwrap();
    }
}

fn numbered(id: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut m = id.to_le_bytes().to_vec();
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&payload(id << 32 | seq, len - 16));
    m
}

#[test]
fn two_producers_interleave_large_and_small_messages() {
    if role().is_some() {
        return interleaving_producer();
    }
    let _watchdog = watchdog(LIMIT, "interleave");
    let name = unique_name("large-i");
    let q = Queue::<Vec<u8>>::builder()
        .name(&name)
        .max_bytes(256 << 10)
        .create()
        .unwrap();
    let children: Vec<Child> = (0..2)
        .map(|id| {
            spawn(
                &this_test!(two_producers_interleave_large_and_small_messages),
                "producer",
                &[("ID", id.to_string()), ("QUEUE", name.clone())],
            )
        })
        .collect();
    let mut next = [0u64; 2];
    for _ in 0..80 {
        let m = q.get_bytes().unwrap();
        let id = u64::from_le_bytes(m[..8].try_into().unwrap());
        let seq = u64::from_le_bytes(m[8..16].try_into().unwrap());
        assert!(id < 2, "producer id {id}");
        assert_eq!(seq, next[id as usize], "out of order from producer {id}");
        next[id as usize] += 1;
        let len = if seq % 2 == 0 {
            100
        } else {
            3 * MIB + seq as usize
        };
        assert!(m == numbered(id, seq, len), "message {seq} of {id} differs");
    }
    join_all(children, LIMIT);
    assert!(q.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 3. Deadlines in the middle of a message

/// Child: says so, then puts one message of 8 MiB (the parent stops and resumes us midway).
fn slow_producer() {
    let _watchdog = watchdog(LIMIT, "slow producer");
    let tx = Sender::<Vec<u8>>::open(&arg("QUEUE")).unwrap();
    counter(&arg("READY")).fetch_add(1, Ordering::SeqCst);
    tx.put_bytes(&payload(42, 8 * MIB)).unwrap();
}

/// Sends `sig` to our (unreaped) child `pid` with kill(1).
fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_timed_get_cut_short_midway_resumes_the_same_message() {
    if role().is_some() {
        return slow_producer();
    }
    let _watchdog = watchdog(LIMIT, "timed get midway");
    let name = unique_name("large-g");
    let q = Queue::<Vec<u8>>::builder()
        .name(&name)
        .max_bytes(64 << 10)
        .create()
        .unwrap();
    let (ready, ready_name) = new_counter("ready");
    let mut child = spawn(
        &this_test!(a_timed_get_cut_short_midway_resumes_the_same_message),
        "producer",
        &[("QUEUE", name), ("READY", ready_name)],
    );
    while ready.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Wait for the ring to fill: the producer is then in the middle of the message.
    assert!(common::eventually(LIMIT, || q.len() >= 3));
    let pid = child.id();
    signal(pid, "-STOP");
    let d = Duration::from_millis(100);
    let t = Instant::now();
    assert_eq!(q.get_timeout(d), Err(GetTimeoutError::Timeout));
    let took = t.elapsed();
    assert!(took >= d && took < d + Duration::from_secs(2), "{took:?}");
    signal(pid, "-CONT");
    // Resumed from another thread of this process.
    let rx = q.clone();
    let m = std::thread::spawn(move || rx.get_bytes().unwrap())
        .join()
        .unwrap();
    assert!(m == payload(42, 8 * MIB), "the resumed message differs");
    let status = common::wait_for(&mut child, LIMIT);
    assert!(status.success(), "{status}");
}

#[test]
fn a_timed_put_cut_short_midway_is_never_delivered() {
    let _watchdog = watchdog(LIMIT, "timed put midway");
    let q = Queue::<Vec<u8>>::builder()
        .max_bytes(4096)
        .create()
        .unwrap();
    let big = payload(5, 100_000);
    // A try puts a message in fragments only if it fits whole: nothing is published.
    assert_eq!(q.try_put_bytes(&big), Err(TryPutError::Full(())));
    assert!(q.is_empty());
    let two = payload(6, 3000);
    let tx = q.clone();
    let sent = two.clone();
    let th = std::thread::spawn(move || while tx.try_put_bytes(&sent).is_err() {});
    assert!(q.get_bytes().unwrap() == two);
    th.join().unwrap();
    let d = Duration::from_millis(50);
    let t = Instant::now();
    match q.put_timeout(big.clone(), d) {
        Err(PutTimeoutError::Timeout(v)) => assert!(v == big),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() >= d);
    assert!(!q.is_empty(), "the first fragments are published");
    // The ring is full of the abandoned fragments: the next put waits for the get that
    // skips them.
    let tx = q.clone();
    let th = std::thread::spawn(move || tx.put_bytes(b"next").unwrap());
    assert_eq!(q.get_bytes().unwrap(), b"next");
    th.join().unwrap();
    // A blocking put of the same value then goes through whole.
    let tx = q.clone();
    let sent = big.clone();
    let th = std::thread::spawn(move || tx.put_bytes(&sent).unwrap());
    assert!(q.get_bytes().unwrap() == big);
    th.join().unwrap();
    assert!(q.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. Kills in the middle of a message

const TRIALS: u64 = 200;
/// Messages of the kill tests: 100 KiB through a 64 KiB ring (fragments of 16 KiB).
const KILL_LEN: usize = 100 << 10;
const KILL_RING: usize = 64 << 10;

/// A message that says who sent it: (sender, sequence), then bytes from both.
fn tagged(sender: u64, seq: u64) -> Vec<u8> {
    numbered(sender, seq, KILL_LEN)
}

fn check_tagged(m: &[u8]) -> (u64, u64) {
    assert_eq!(
        m.len(),
        KILL_LEN,
        "a message of another length was delivered"
    );
    let sender = u64::from_le_bytes(m[..8].try_into().unwrap());
    let seq = u64::from_le_bytes(m[8..16].try_into().unwrap());
    assert!(
        m == tagged(sender, seq),
        "message ({sender}, {seq}) is torn"
    );
    (sender, seq)
}

/// Child: says so, then puts tagged messages for ever (until killed).
fn endless_producer() {
    let _watchdog = watchdog(LIMIT, "endless producer");
    let id: u64 = arg("ID").parse().unwrap();
    let tx = Sender::<Vec<u8>>::open(&arg("QUEUE")).unwrap();
    counter(&arg("READY")).fetch_add(1, Ordering::SeqCst);
    for seq in 0.. {
        tx.put_bytes(&tagged(id, seq)).unwrap();
    }
}

fn kill_and_reap(child: &mut Child) {
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "ended before the kill"
    );
}

/// A small pseudo-random delay, different for each trial.
fn jitter(trial: u64) -> Duration {
    Duration::from_micros(digest(&trial.to_le_bytes()) % 3000)
}

#[test]
fn producers_killed_midway_never_deliver_a_partial_message() {
    if role().is_some() {
        return endless_producer();
    }
    let _watchdog = watchdog(LIMIT, "producer kills");
    let name = unique_name("large-pk");
    let q = Queue::<Vec<u8>>::builder()
        .name(&name)
        .max_bytes(KILL_RING)
        .create()
        .unwrap();
    // Consumer: checks every message and reports who sent it.
    let rx = q.clone();
    let (seen_tx, seen) = mpsc::channel();
    let consumer = std::thread::spawn(move || {
        loop {
            let m = rx.get_bytes().unwrap();
            if m.is_empty() {
                break;
            }
            seen_tx.send(check_tagged(&m)).unwrap();
        }
    });
    const SURVIVOR: u64 = 1 << 40;
    for trial in 0..TRIALS {
        let (ready, ready_name) = new_counter("ready");
        let mut child = spawn(
            &this_test!(producers_killed_midway_never_deliver_a_partial_message),
            "producer",
            &[
                ("ID", trial.to_string()),
                ("QUEUE", name.clone()),
                ("READY", ready_name),
            ],
        );
        while ready.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(jitter(trial));
        kill_and_reap(&mut child);
        // The survivor's put waits at most for the lock takeover.
        let t = Instant::now();
        q.put_bytes(&tagged(SURVIVOR, trial)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // Complete messages of the dead producer, in order, then the survivor's.
        let mut next = 0;
        loop {
            let (sender, seq) = seen.recv_timeout(LIMIT).expect("the survivor's message");
            if sender == SURVIVOR {
                assert_eq!(seq, trial);
                break;
            }
            assert_eq!((sender, seq), (trial, next), "trial {trial}");
            next += 1;
        }
    }
    q.put_bytes(&[]).unwrap();
    consumer.join().unwrap();
}

/// Child: says so, then takes tagged messages for ever, counting each one it got whole.
fn endless_consumer() {
    let _watchdog = watchdog(LIMIT, "endless consumer");
    let rx = Receiver::<Vec<u8>>::open(&arg("QUEUE")).unwrap();
    let got = counter(&arg("GOT"));
    counter(&arg("READY")).fetch_add(1, Ordering::SeqCst);
    loop {
        let m = rx.get_bytes().unwrap();
        let (_, seq) = check_tagged(&m);
        got.store(seq + 1, Ordering::SeqCst);
    }
}

#[test]
fn consumers_killed_midway_lose_at_most_that_message() {
    if role().is_some() {
        return endless_consumer();
    }
    let _watchdog = watchdog(LIMIT, "consumer kills");
    const PER_TRIAL: u64 = 6;
    const MARK: u64 = 1 << 40;
    for trial in 0..TRIALS {
        let name = unique_name("large-ck");
        let q = Queue::<Vec<u8>>::builder()
            .name(&name)
            .max_bytes(KILL_RING)
            .create()
            .unwrap();
        let (ready, ready_name) = new_counter("ready");
        let (got, got_name) = new_counter("got");
        let mut child = spawn(
            &this_test!(consumers_killed_midway_lose_at_most_that_message),
            "consumer",
            &[
                ("QUEUE", name.clone()),
                ("READY", ready_name),
                ("GOT", got_name),
            ],
        );
        // The producer ends with a marker, put only once the child is dead (so that the
        // child can never take it).
        let tx = q.clone();
        let (killed_tx, killed) = mpsc::channel::<()>();
        let producer = std::thread::spawn(move || {
            for seq in 0..PER_TRIAL {
                tx.put_bytes(&tagged(trial, seq)).unwrap();
            }
            killed.recv().unwrap();
            tx.put_bytes(&tagged(MARK, trial)).unwrap();
        });
        while ready.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(jitter(trial) / 4);
        kill_and_reap(&mut child);
        killed_tx.send(()).unwrap();
        let reported = got.load(Ordering::SeqCst);
        // The child may also have got one whole without reporting it, and been in the middle
        // of the next: we see everything after those, whole and in order.
        let mut seqs = Vec::new();
        loop {
            let (sender, seq) = check_tagged(&q.get_bytes().unwrap());
            if sender == MARK {
                assert_eq!(seq, trial);
                break;
            }
            assert_eq!(sender, trial);
            seqs.push(seq);
        }
        producer.join().unwrap();
        let first = seqs.first().copied().unwrap_or(PER_TRIAL);
        assert!(
            (reported..=reported + 2).contains(&first),
            "trial {trial}: first message {first}, the child had {reported}"
        );
        let expected: Vec<u64> = (first..PER_TRIAL).collect();
        assert_eq!(seqs, expected, "trial {trial}");
    }
}
