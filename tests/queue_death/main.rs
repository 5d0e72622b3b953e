//! Death and crash consistency of `Queue`, `JoinableQueue` and `Pipe` with real processes:
//! disconnection when every peer on the other side exits or is SIGKILLed, producers and
//! consumers killed at random moments (no torn, lost or duplicated message beyond what the
//! protocol allows), task accounting across processes, and pipe EOF.
#![cfg(feature = "serde")]

#[path = "../common/mod.rs"]
mod common;

use std::cell::Cell;
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{arg, counter, eventually, join_all, new_counter, role, spawn, unique_name, watchdog};
use multiproc::{
    Connection, ConnectionHandle, GetError, GetTimeoutError, JoinableQueue, PutError, Queue,
    RawArray, Receiver, Sender, TaskDoneError, TryGetError, TryPutError, pipe,
};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(60);
/// How long a test waits for a child to start and attach.
const START: Duration = Duration::from_secs(20);
/// A killed peer must be noticed this soon (the crate promises about 0.2 s).
const NOTICE: Duration = Duration::from_secs(1);

fn new_slots(tag: &str, len: usize) -> (RawArray<AtomicU64>, String) {
    let name = unique_name(tag);
    let a = RawArray::<AtomicU64>::builder()
        .name(&name)
        .len(len)
        .create()
        .expect("create slots");
    (a, name)
}

/// Reaps a child we SIGKILLed and checks that it died of our signal, not of a panic before.
fn kill_and_reap(child: &mut Child, what: &str) {
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{what} ended on its own ({status}) before it was killed"
    );
}

/// Reaps an already-killed child (possibly a zombie until now) and checks how it died.
fn reap_killed(child: &mut Child, what: &str) {
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}: {status}");
}

// ---------------------------------------------------------------------------------------------
// 1. Disconnection

/// Child: open a sender, say so, put 1,000 numbered messages, then exit or sleep until killed.
fn put_thousand(then_sleep: bool) {
    let _watchdog = watchdog(LIMIT, "sender");
    let id: u64 = arg("ID").parse().unwrap();
    let tx = Sender::<u64>::open(&arg("QUEUE")).unwrap();
    counter(&arg("READY")).fetch_add(1, Ordering::SeqCst);
    for seq in 0..1_000u64 {
        tx.put(id << 32 | seq).unwrap();
    }
    if then_sleep {
        counter(&arg("DONE")).fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(LIMIT);
    }
}

/// Takes one message from three senders and checks per-sender order.
fn take_numbered(rx: &Receiver<u64>, next: &mut [u64; 3]) {
    let v = rx.get().expect("a message");
    let (id, seq) = ((v >> 32) as usize, v & 0xffff_ffff);
    assert!(id < 3, "bad sender id in {v:#x}");
    assert_eq!(seq, next[id], "sender {id}: out of order");
    next[id] += 1;
}

#[test]
fn receiver_sees_disconnected_after_three_sender_processes_exit() {
    if role().as_deref() == Some("sender") {
        return put_thousand(false);
    }
    let _watchdog = watchdog(LIMIT, "disconnect after exit");
    let name = unique_name("dq");
    // Small enough that the senders block on a full queue while we drain.
    let q = Queue::<u64>::builder()
        .name(&name)
        .capacity(64)
        .create()
        .unwrap();
    let rx = q.receiver().unwrap();
    drop(q);
    let (ready, ready_name) = new_counter("ready");
    let test = this_test!(receiver_sees_disconnected_after_three_sender_processes_exit);
    let children: Vec<Child> = (0..3)
        .map(|id| {
            let args = [
                ("QUEUE", name.clone()),
                ("READY", ready_name.clone()),
                ("ID", id.to_string()),
            ];
            spawn(&test, "sender", &args)
        })
        .collect();
    // Before every sender attached, an empty queue with no sender is disconnected already.
    assert!(eventually(START, || ready.load(Ordering::SeqCst) == 3));
    let mut next = [0u64; 3];
    for _ in 0..3_000 {
        take_numbered(&rx, &mut next);
    }
    assert_eq!(next, [1_000; 3]);
    assert_eq!(rx.get(), Err(GetError::Disconnected));
    assert_eq!(rx.try_get(), Err(TryGetError::Disconnected));
    assert!(rx.is_empty());
    join_all(children, LIMIT);
}

#[test]
fn receiver_sees_disconnected_within_1s_of_killing_the_sender_processes() {
    if role().as_deref() == Some("sender") {
        return put_thousand(true);
    }
    let _watchdog = watchdog(LIMIT, "disconnect after kill");
    let name = unique_name("dk");
    // Room for everything: the senders finish while we hold back.
    let q = Queue::<u64>::builder()
        .name(&name)
        .capacity(4096)
        .create()
        .unwrap();
    let rx = q.receiver().unwrap();
    drop(q);
    let (ready, ready_name) = new_counter("ready");
    let (done, done_name) = new_counter("done");
    let test = this_test!(receiver_sees_disconnected_within_1s_of_killing_the_sender_processes);
    let mut children: Vec<Child> = (0..3)
        .map(|id| {
            let args = [
                ("QUEUE", name.clone()),
                ("READY", ready_name.clone()),
                ("DONE", done_name.clone()),
                ("ID", id.to_string()),
            ];
            spawn(&test, "sender", &args)
        })
        .collect();
    assert!(eventually(START, || ready.load(Ordering::SeqCst) == 3));
    let mut next = [0u64; 3];
    for _ in 0..1_500 {
        take_numbered(&rx, &mut next);
    }
    assert!(eventually(START, || done.load(Ordering::SeqCst) == 3));
    // Killed, deliberately not reaped yet: zombies must count as gone too.
    for c in &mut children {
        c.kill().expect("SIGKILL");
    }
    let last_kill = Instant::now();
    for _ in 1_500..3_000 {
        take_numbered(&rx, &mut next);
    }
    assert_eq!(next, [1_000; 3]);
    assert_eq!(rx.get(), Err(GetError::Disconnected));
    let noticed = last_kill.elapsed();
    assert!(noticed < NOTICE, "Disconnected {noticed:?} after the kill");
    for c in &mut children {
        reap_killed(c, "sender");
    }
}

#[test]
fn blocked_get_notices_its_only_sender_killed_within_1s() {
    if role().as_deref() == Some("idle") {
        let _tx = Sender::<u64>::open(&arg("QUEUE")).unwrap();
        counter(&arg("READY")).store(1, Ordering::SeqCst);
        std::thread::sleep(LIMIT);
        return;
    }
    let _watchdog = watchdog(LIMIT, "blocked get");
    let name = unique_name("bg");
    let q = Queue::<u64>::builder().name(&name).create().unwrap();
    let rx = q.receiver().unwrap();
    drop(q);
    let (ready, ready_name) = new_counter("ready");
    let mut child = spawn(
        &this_test!(blocked_get_notices_its_only_sender_killed_within_1s),
        "idle",
        &[("QUEUE", name), ("READY", ready_name)],
    );
    assert!(eventually(START, || ready.load(Ordering::SeqCst) == 1));
    std::thread::scope(|s| {
        let getter = s.spawn(|| (rx.get(), Instant::now()));
        // Long enough for the getter to fall asleep on the futex with a long probe interval.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!getter.is_finished(), "get returned with a live sender");
        child.kill().expect("SIGKILL");
        let killed = Instant::now();
        let (r, returned) = getter.join().unwrap();
        assert_eq!(r, Err(GetError::Disconnected));
        let noticed = returned.saturating_duration_since(killed);
        assert!(noticed < NOTICE, "noticed {noticed:?} after the kill");
    });
    reap_killed(&mut child, "idle sender");
}

#[test]
fn blocked_put_on_a_full_queue_gets_its_value_back_when_the_receiver_is_killed() {
    if role().as_deref() == Some("idle") {
        let _rx = Receiver::<u64>::open(&arg("QUEUE")).unwrap();
        counter(&arg("READY")).store(1, Ordering::SeqCst);
        std::thread::sleep(LIMIT);
        return;
    }
    let _watchdog = watchdog(LIMIT, "blocked put");
    let name = unique_name("bp");
    let q = Queue::<u64>::builder()
        .name(&name)
        .capacity(4)
        .create()
        .unwrap();
    let (ready, ready_name) = new_counter("ready");
    let mut child = spawn(
        &this_test!(blocked_put_on_a_full_queue_gets_its_value_back_when_the_receiver_is_killed),
        "idle",
        &[("QUEUE", name), ("READY", ready_name)],
    );
    assert!(eventually(START, || ready.load(Ordering::SeqCst) == 1));
    // From here on the child holds the only receiving handle.
    let tx = q.sender().unwrap();
    drop(q);
    for i in 0..4 {
        assert_eq!(tx.try_put(i), Ok(()));
    }
    assert_eq!(tx.try_put(4), Err(TryPutError::Full(4)));
    std::thread::scope(|s| {
        let putter = s.spawn(|| (tx.put(99), Instant::now()));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!putter.is_finished(), "put on a full queue returned");
        child.kill().expect("SIGKILL");
        let killed = Instant::now();
        let (r, returned) = putter.join().unwrap();
        assert_eq!(r, Err(PutError::Disconnected(99)));
        let noticed = returned.saturating_duration_since(killed);
        assert!(noticed < NOTICE, "noticed {noticed:?} after the kill");
    });
    // The dead receiver's handle is no longer counted: even a put with room fails now.
    assert_eq!(tx.try_put(5), Err(TryPutError::Disconnected(5)));
    reap_killed(&mut child, "idle receiver");
}

/// A caller that polls with `try_get` (or `try_put` on a full queue) never sleeps, so it never
/// reaches a sleeping wait's liveness probe: the give-up itself must probe now and then, or a
/// SIGKILLed peer would be counted for ever.
#[test]
fn polling_with_tries_notices_a_killed_peer() {
    if let Some(side) = role() {
        let name = arg("QUEUE");
        let (_tx, _rx);
        if side == "sender" {
            _tx = Some(Sender::<u64>::open(&name).unwrap());
        } else {
            _rx = Some(Receiver::<u64>::open(&name).unwrap());
        }
        counter(&arg("READY")).store(1, Ordering::SeqCst);
        std::thread::sleep(LIMIT);
        return;
    }
    let _watchdog = watchdog(LIMIT, "polling with tries");
    for side in ["sender", "receiver"] {
        let name = unique_name("pt");
        let q = Queue::<u64>::builder()
            .name(&name)
            .capacity(4)
            .create()
            .unwrap();
        let (ready, ready_name) = new_counter("ready");
        let mut child = spawn(
            &this_test!(polling_with_tries_notices_a_killed_peer),
            side,
            &[("QUEUE", name), ("READY", ready_name)],
        );
        assert!(eventually(START, || ready.load(Ordering::SeqCst) == 1));
        // From here on the child holds the only handle of its kind.
        let tx = (side == "receiver").then(|| q.sender().unwrap());
        let rx = (side == "sender").then(|| q.receiver().unwrap());
        drop(q);
        let poll = || match (&tx, &rx) {
            (_, Some(rx)) => rx.try_get() == Err(TryGetError::Disconnected),
            (Some(tx), None) => {
                while tx.try_put(1).is_ok() {}
                tx.try_put(2) == Err(TryPutError::Disconnected(2))
            }
            (None, None) => unreachable!(),
        };
        for _ in 0..20 {
            assert!(!poll(), "{side}: disconnected while the peer lives");
            std::thread::sleep(Duration::from_millis(5));
        }
        kill_and_reap(&mut child, side);
        let killed = Instant::now();
        while !poll() {
            assert!(
                killed.elapsed() < NOTICE,
                "{side}: tries never noticed the kill"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn put_without_any_receiver_is_disconnected_at_once() {
    if role().as_deref() == Some("receiver") {
        let rx = Receiver::<u64>::open(&arg("QUEUE")).unwrap();
        counter(&arg("READY")).store(1, Ordering::SeqCst);
        assert_eq!(rx.get(), Ok(1));
        return;
    }
    let _watchdog = watchdog(LIMIT, "no receiver");
    // Never any receiver but the creating handle, which goes.
    let q = Queue::<u64>::new(8).unwrap();
    let tx = q.sender().unwrap();
    drop(q);
    let t = Instant::now();
    assert_eq!(tx.try_put(7), Err(TryPutError::Disconnected(7)));
    assert_eq!(tx.put(8), Err(PutError::Disconnected(8)));
    assert!(t.elapsed() < NOTICE);
    assert!(tx.is_empty());

    // The only receiver is another process, which takes one message and exits.
    let name = unique_name("nr");
    let q = Queue::<u64>::builder().name(&name).create().unwrap();
    let tx = q.sender().unwrap();
    drop(q);
    let (ready, ready_name) = new_counter("ready");
    let child = spawn(
        &this_test!(put_without_any_receiver_is_disconnected_at_once),
        "receiver",
        &[("QUEUE", name), ("READY", ready_name)],
    );
    assert!(eventually(START, || ready.load(Ordering::SeqCst) == 1));
    assert_eq!(tx.try_put(1), Ok(()));
    join_all(vec![child], LIMIT);
    let t = Instant::now();
    assert_eq!(tx.try_put(7), Err(TryPutError::Disconnected(7)));
    assert_eq!(tx.put(8), Err(PutError::Disconnected(8)));
    assert!(t.elapsed() < NOTICE);
    assert!(tx.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. Crash consistency
//
// A message is a byte sequence derived entirely from (producer id, sequence number): a 16-byte
// header (id, seq, body length, header check) and a body whose every byte depends on both, of a
// length (0..=700) that also depends on both. Any torn, mixed or stale message fails `parse`.
// It is encoded by serde one byte at a time, and the encoding pass runs inside `put`'s critical
// section (after the ring reserved room, holding the put lock): a producer is often killed
// right there. Likewise decoding runs inside `get`'s critical section, before `head` moves.

const MAX_BODY: u64 = 700;
const HEADER: usize = 16;

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn msg_hash(id: u32, seq: u32) -> u64 {
    mix(u64::from(id) << 32 | u64::from(seq))
}

fn body_len(id: u32, seq: u32) -> u32 {
    (msg_hash(id, seq) % (MAX_BODY + 1)) as u32
}

fn header_check(id: u32, seq: u32, len: u32) -> u32 {
    (mix(msg_hash(id, seq) ^ u64::from(len)) >> 32) as u32
}

fn body_byte(hash: u64, i: usize) -> u8 {
    (hash.rotate_right((i % 64) as u32) as u8) ^ (i as u8).wrapping_mul(31)
}

fn message_bytes(id: u32, seq: u32) -> impl Iterator<Item = u8> {
    let len = body_len(id, seq);
    let hash = msg_hash(id, seq);
    let header: Vec<u8> = [id, seq, len, header_check(id, seq, len)]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    header
        .into_iter()
        .chain((0..len as usize).map(move |i| body_byte(hash, i)))
}

/// Checks a received byte sequence and returns its (id, seq).
fn parse(b: &[u8]) -> Result<(u32, u32), String> {
    if b.len() < HEADER {
        return Err(format!("{} bytes, shorter than a header", b.len()));
    }
    let w = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
    let (id, seq, len, check) = (w(0), w(1), w(2), w(3));
    if check != header_check(id, seq, len) || len != body_len(id, seq) {
        return Err(format!("torn header: id {id} seq {seq} len {len}"));
    }
    if b.len() != HEADER + len as usize {
        return Err(format!(
            "id {id} seq {seq}: {} bytes, expected {}",
            b.len(),
            HEADER + len as usize
        ));
    }
    let hash = msg_hash(id, seq);
    if let Some(i) = (0..len as usize).find(|&i| b[HEADER + i] != body_byte(hash, i)) {
        return Err(format!("id {id} seq {seq}: torn body at byte {i}"));
    }
    Ok((id, seq))
}

/// Phases a child reports through shared memory, so that after its death we know where it was.
const IDLE: u64 = 0;
/// Producer: inside `put`, before the encoding pass (sizing, waiting for room or the lock).
/// Consumer: inside `get`, before decoding (waiting for a message or the lock).
const CALLED: u64 = 1;
/// Encoding (producer) or decoding (consumer): inside the critical section.
const CODING: u64 = 2;
/// Encoded or decoded: still inside the critical section, or just past it.
const CODED: u64 = 3;

/// How long a child's encoding or decoding pass takes at least.
const SLOW_CODEC: Duration = Duration::from_micros(30);

/// A producer child's phase word (set once per producer process).
static PRODUCER_PHASE: OnceLock<(RawArray<AtomicU64>, usize)> = OnceLock::new();
/// A consumer child's word: `taken << 2 | phase` (set once per consumer process).
static CONSUMER_WORD: OnceLock<RawArray<AtomicU64>> = OnceLock::new();

/// Set in a child that must stop for good inside its next codec pass, holding the ring's lock.
static HANG: AtomicBool = AtomicBool::new(false);

fn hang_if_asked() {
    if HANG.load(Ordering::SeqCst) {
        loop {
            std::thread::sleep(LIMIT);
        }
    }
}

/// Busy-waits `d`: a child's codec pass takes this long, to widen the windows we kill in.
fn spin_for(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn producer_phase(p: u64) {
    if let Some((slots, i)) = PRODUCER_PHASE.get() {
        slots[*i].store(p, Ordering::SeqCst);
    }
}

fn consumer_phase(p: u64) {
    if let Some(w) = CONSUMER_WORD.get() {
        let taken = w[0].load(Ordering::Relaxed) >> 2;
        w[0].store(taken << 2 | p, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Msg {
    id: u32,
    seq: u32,
    /// Serialisations so far: the codec sizes the value first (outside the lock), then
    /// encodes it into the reserved room.
    passes: Cell<u32>,
}

impl Msg {
    fn new(id: u32, seq: u32) -> Self {
        Self {
            id,
            seq,
            passes: Cell::new(0),
        }
    }
}

impl Serialize for Msg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pass = self.passes.get();
        self.passes.set(pass + 1);
        let encoding = pass == 1;
        if encoding {
            producer_phase(CODING);
            if PRODUCER_PHASE.get().is_some() {
                spin_for(SLOW_CODEC);
            }
        }
        let len = HEADER + body_len(self.id, self.seq) as usize;
        let mut seq = s.serialize_seq(Some(len))?;
        for (i, b) in message_bytes(self.id, self.seq).enumerate() {
            if encoding && i == len / 2 {
                hang_if_asked(); // half the record written, holding the put lock
            }
            seq.serialize_element(&b)?;
        }
        let r = seq.end();
        if encoding {
            producer_phase(CODED);
        }
        r
    }
}

impl<'de> Deserialize<'de> for Msg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Msg;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a message's bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Msg, A::Error> {
                let mut b = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1024));
                while let Some(x) = a.next_element::<u8>()? {
                    b.push(x);
                }
                parse(&b)
                    .map(|(id, seq)| Msg::new(id, seq))
                    .map_err(de::Error::custom)
            }
        }
        consumer_phase(CODING);
        // Only a consumer's decoding hangs or dawdles: a debug build's put also decodes (the
        // round-trip check, outside the put lock).
        if CONSUMER_WORD.get().is_some() {
            hang_if_asked(); // holding the get lock
            spin_for(SLOW_CODEC);
        }
        let m = d.deserialize_seq(V);
        consumer_phase(CODED);
        m
    }
}

/// Minimal xorshift64, seeded per trial so a failing trial can be replayed.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(mix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Crash trials use a small ring so that producers often wait for room or the lock.
fn crash_queue(name: &str) -> Queue<Msg> {
    Queue::<Msg>::builder()
        .name(name)
        .capacity(16)
        .max_bytes(4096)
        .create()
        .unwrap()
}

/// Per-producer slots in the shared state array.
const READY: usize = 0;
const DONE: usize = 1;
const PHASE: usize = 2;
const SLOTS: usize = 3;

const PRODUCER_TRIALS: u64 = 400;
/// Producer id of the survivor that puts after the kills.
const FRESH: u32 = 9;
const FRESH_COUNT: u32 = 50;

/// Child: put messages as fast as possible until killed, reporting progress: `DONE` is the
/// number of puts that returned `Ok`, `PHASE` where in `put` we are.
fn produce_until_killed() {
    let _watchdog = watchdog(LIMIT, "producer");
    let id: u32 = arg("ID").parse().unwrap();
    let tx = Sender::<Msg>::open(&arg("QUEUE")).unwrap();
    let slots = RawArray::<AtomicU64>::open(&arg("STATE")).unwrap();
    let base = id as usize * SLOTS;
    assert!(
        PRODUCER_PHASE.set((slots, base + PHASE)).is_ok(),
        "hook set twice"
    );
    let slots = &PRODUCER_PHASE.get().unwrap().0;
    slots[base + READY].store(1, Ordering::SeqCst);
    for seq in 0.. {
        producer_phase(CALLED);
        if tx.put(Msg::new(id, seq)).is_err() {
            return; // the parent is gone
        }
        slots[base + DONE].store(u64::from(seq) + 1, Ordering::SeqCst);
        producer_phase(IDLE);
    }
}

/// Takes messages until `Disconnected`, checking each and returning how many came per producer.
fn drain_checked(rx: &Receiver<Msg>, producers: usize, trial: u64) -> Vec<u32> {
    let mut next = vec![0u32; producers];
    loop {
        match rx.get() {
            Ok(m) => {
                let id = m.id as usize;
                assert!(id < producers, "trial {trial}: unknown producer in {m:?}");
                assert_eq!(
                    m.seq, next[id],
                    "trial {trial}: producer {id} out of order, duplicated or lost"
                );
                next[id] += 1;
            }
            Err(GetError::Disconnected) => return next,
            Err(e) => panic!("trial {trial}: get: {e}"),
        }
    }
}

/// One trial: 1-3 producer processes, killed at random moments while we read.
/// Returns how many producers died holding the put lock (in the encoding phase or after).
fn producer_trial(test: &str, trial: u64) -> usize {
    let mut rng = XorShift::new(trial);
    let producers = 1 + rng.below(3) as usize;
    let name = unique_name("crash");
    let q = crash_queue(&name);
    let rx = q.receiver().unwrap();
    drop(q);
    let (state, state_name) = new_slots("pstate", producers * SLOTS);
    let mut children: Vec<Child> = (0..producers)
        .map(|id| {
            let args = [
                ("QUEUE", name.clone()),
                ("STATE", state_name.clone()),
                ("ID", id.to_string()),
            ];
            spawn(test, "producer", &args)
        })
        .collect();
    assert!(
        eventually(START, || (0..producers)
            .all(|i| state[i * SLOTS + READY].load(Ordering::SeqCst) == 1)),
        "trial {trial}: producers never attached"
    );
    let mut kills: Vec<(u64, usize)> = (0..producers).map(|i| (rng.below(21), i)).collect();
    kills.sort_unstable();
    let received = std::thread::scope(|s| {
        let consumer = s.spawn(|| drain_checked(&rx, producers, trial));
        let start = Instant::now();
        for &(ms, i) in &kills {
            let at = start + Duration::from_millis(ms);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            children[i].kill().expect("SIGKILL");
        }
        // Every producer is dead now (or exited early): the consumer must see Disconnected.
        consumer.join().expect("consumer")
    });
    for c in &mut children {
        reap_killed(c, "producer");
    }
    let mut in_lock = 0;
    for (i, &got) in received.iter().enumerate() {
        let done = state[i * SLOTS + DONE].load(Ordering::SeqCst);
        let phase = state[i * SLOTS + PHASE].load(Ordering::SeqCst);
        in_lock += usize::from(phase >= CODING);
        // Every put that returned Ok was received. The one in flight may have been published
        // only if the producer died after encoding it (the record is published after that).
        let got = u64::from(got);
        let allowed: &[u64] = if phase == CODED {
            &[done, done + 1]
        } else {
            &[done]
        };
        assert!(
            allowed.contains(&got),
            "trial {trial}: producer {i} died in phase {phase} after {done} puts; \
             {got} received"
        );
    }

    // The survivors keep working: a fresh producer (taking over a put lock a dead producer may
    // hold) and the same receiver.
    let tx = Sender::<Msg>::open(&name).unwrap();
    std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut next = 0;
            loop {
                match rx.get() {
                    Ok(m) => {
                        assert_eq!((m.id, m.seq), (FRESH, next), "trial {trial}: after kills");
                        next += 1;
                    }
                    Err(GetError::Disconnected) => return next,
                    Err(e) => panic!("trial {trial}: get after kills: {e}"),
                }
            }
        });
        for seq in 0..FRESH_COUNT {
            tx.put(Msg::new(FRESH, seq)).unwrap();
        }
        drop(tx);
        assert_eq!(consumer.join().expect("consumer"), FRESH_COUNT);
    });
    assert!(rx.is_empty());
    in_lock
}

#[test]
fn producers_killed_at_random_moments_leave_no_torn_lost_or_duplicate_message() {
    if role().as_deref() == Some("producer") {
        return produce_until_killed();
    }
    let _watchdog = watchdog(Duration::from_secs(150), "producer crash trials");
    let test =
        this_test!(producers_killed_at_random_moments_leave_no_torn_lost_or_duplicate_message);
    let t = Instant::now();
    let in_lock: usize = (0..PRODUCER_TRIALS)
        .map(|trial| producer_trial(&test, trial))
        .sum();
    eprintln!(
        "{PRODUCER_TRIALS} producer crash trials in {:?}; {in_lock} producers died holding the put lock",
        t.elapsed()
    );
    // The interesting kills happen: inside put's critical section.
    assert!(
        in_lock > 0,
        "no producer was ever killed holding the put lock"
    );
}

const CONSUMER_TRIALS: u64 = 200;
/// Consumer word slots.
const WORD: usize = 0;
const BAD: usize = 1;

/// Child: take messages until killed, checking each; record `taken << 2 | phase` in `WORD`.
fn consume_until_killed() {
    let _watchdog = watchdog(LIMIT, "consumer");
    let rx = Receiver::<Msg>::open(&arg("QUEUE")).unwrap();
    let w = RawArray::<AtomicU64>::open(&arg("WORD")).unwrap();
    assert!(CONSUMER_WORD.set(w).is_ok(), "hook set twice");
    let w = CONSUMER_WORD.get().unwrap();
    let mut taken = 0u64;
    loop {
        w[WORD].store(taken << 2 | CALLED, Ordering::SeqCst);
        match rx.get() {
            Ok(m) if m.id == 0 && u64::from(m.seq) == taken => {
                // Taken from the queue but not yet recorded: a death here loses the message.
                spin_for(SLOW_CODEC);
                taken += 1;
                w[WORD].store(taken << 2 | IDLE, Ordering::SeqCst);
            }
            other => {
                eprintln!("consumer: expected seq {taken}, got {other:?}");
                w[BAD].store(1, Ordering::SeqCst);
                std::thread::sleep(LIMIT);
            }
        }
    }
}

/// One trial: we produce, a consumer process takes and is killed at a random moment, then a
/// fresh receiver takes the rest. Returns the phase the consumer died in and whether the
/// message it was taking is gone.
fn consumer_trial(test: &str, trial: u64) -> (u64, bool) {
    let mut rng = XorShift::new(1_000_000 + trial);
    let name = unique_name("ccrash");
    let q = crash_queue(&name);
    let tx = q.sender().unwrap();
    // Our receiver keeps the queue connected for the producer while the consumer is dead.
    let _anchor = q.receiver().unwrap();
    drop(q);
    let (word, word_name) = new_slots("cword", 2);
    let mut child = spawn(
        test,
        "consumer",
        &[("QUEUE", name.clone()), ("WORD", word_name)],
    );
    let stop = AtomicBool::new(false);
    let (produced, taken, phase, rest) = std::thread::scope(|s| {
        let stop = &stop;
        let producer = s.spawn(move || {
            let mut seq = 0u32;
            while !stop.load(Ordering::SeqCst) {
                tx.put(Msg::new(0, seq)).unwrap();
                seq += 1;
            }
            seq // dropping tx disconnects the receivers once they drained
        });
        assert!(
            eventually(START, || word[WORD].load(Ordering::SeqCst) >> 2 > 0),
            "trial {trial}: consumer never took a message"
        );
        std::thread::sleep(Duration::from_millis(rng.below(21)));
        kill_and_reap(&mut child, "consumer");
        let w = word[WORD].load(Ordering::SeqCst);
        assert_eq!(
            word[BAD].load(Ordering::SeqCst),
            0,
            "trial {trial}: consumer saw a bad message"
        );
        // A little more traffic after the death, then the producer stops.
        std::thread::sleep(Duration::from_millis(rng.below(3)));
        stop.store(true, Ordering::SeqCst);
        let rx = Receiver::<Msg>::open(&name).unwrap();
        let mut rest = Vec::new();
        loop {
            match rx.get() {
                Ok(m) => {
                    assert_eq!(m.id, 0, "trial {trial}");
                    rest.push(m.seq);
                }
                Err(GetError::Disconnected) => break,
                Err(e) => panic!("trial {trial}: get after the kill: {e}"),
            }
        }
        (producer.join().unwrap(), w >> 2, w & 3, rest)
    });
    // The dead consumer took 0..taken (it checked the order itself); we took the rest, in order
    // and complete to the end. Between them at most the one message the consumer was taking is
    // gone, and only if it died after decoding it.
    let first = u64::from(rest.first().copied().unwrap_or(produced));
    let expected_first: &[u64] = if phase == CODED {
        &[taken, taken + 1]
    } else {
        &[taken]
    };
    assert!(
        expected_first.contains(&first),
        "trial {trial}: consumer died in phase {phase} having taken {taken}; \
         the next consumer starts at {first}"
    );
    let expect: Vec<u32> = (first as u32..produced).collect();
    assert!(
        rest == expect,
        "trial {trial}: after seq {first}, {} messages, expected {}..{produced}",
        rest.len(),
        first
    );
    (phase, first > taken)
}

#[test]
fn consumer_killed_at_a_random_moment_loses_at_most_the_message_it_was_taking() {
    if role().as_deref() == Some("consumer") {
        return consume_until_killed();
    }
    let _watchdog = watchdog(Duration::from_secs(150), "consumer crash trials");
    let test =
        this_test!(consumer_killed_at_a_random_moment_loses_at_most_the_message_it_was_taking);
    let t = Instant::now();
    let mut phases = [0usize; 4];
    let mut lost = 0;
    for trial in 0..CONSUMER_TRIALS {
        let (phase, gap) = consumer_trial(&test, trial);
        phases[phase as usize] += 1;
        lost += usize::from(gap);
    }
    eprintln!(
        "{CONSUMER_TRIALS} consumer crash trials in {:?}; died idle/in get/decoding/decoded: \
         {phases:?}; {lost} took a message with them",
        t.elapsed()
    );
    // Both interesting windows were hit: inside get's critical section (nothing lost) and
    // after decoding (the message may be gone).
    assert!(
        phases[CODING as usize] > 0,
        "no consumer killed while decoding"
    );
    assert!(
        phases[CODED as usize] > 0,
        "no consumer killed after decoding"
    );
}

// Deterministic versions: a child stops for good inside the critical section and is killed
// there.

/// Child: put message 0, then stop for good halfway through writing message 1 (holding the
/// put lock), reporting the phase in `STATE[PHASE]`.
fn hang_inside_put(joinable: bool) {
    let _watchdog = watchdog(LIMIT, "hanging producer");
    let slots = RawArray::<AtomicU64>::open(&arg("STATE")).unwrap();
    assert!(PRODUCER_PHASE.set((slots, PHASE)).is_ok());
    let put = |m: Msg| {
        if joinable {
            JoinableQueue::<Msg>::open(&arg("QUEUE")).unwrap().put(m)
        } else {
            Sender::<Msg>::open(&arg("QUEUE")).unwrap().put(m)
        }
        .map_err(|e| format!("{e:?}"))
    };
    put(Msg::new(0, 0)).unwrap();
    HANG.store(true, Ordering::SeqCst);
    put(Msg::new(0, 1)).unwrap();
    unreachable!("message 1 never finishes");
}

/// Child: stop for good while decoding the first message (holding the get lock).
fn hang_inside_get() {
    let _watchdog = watchdog(LIMIT, "hanging consumer");
    let rx = Receiver::<Msg>::open(&arg("QUEUE")).unwrap();
    let w = RawArray::<AtomicU64>::open(&arg("WORD")).unwrap();
    assert!(CONSUMER_WORD.set(w).is_ok());
    HANG.store(true, Ordering::SeqCst);
    let _ = rx.get();
    unreachable!("the first message never decodes");
}

/// A queue of messages 0..5 whose get lock a killed consumer process held while decoding
/// message 0. Returns our sender and receiver. (The child runs as a role of a test that is
/// never ignored, so that ignored tests can use this too.)
fn get_lock_of_a_dead_consumer() -> (Sender<Msg>, Receiver<Msg>) {
    let test = this_test!(consumer_killed_inside_get_leaves_the_message_for_the_next_consumer);
    let name = unique_name("deadget");
    let q = crash_queue(&name);
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    drop(q);
    for seq in 0..5 {
        tx.put(Msg::new(0, seq)).unwrap();
    }
    let (word, word_name) = new_slots("cword", 2);
    let mut child = spawn(&test, "hang", &[("QUEUE", name), ("WORD", word_name)]);
    assert!(eventually(START, || word[WORD].load(Ordering::SeqCst) & 3 == CODING));
    kill_and_reap(&mut child, "hanging consumer");
    (tx, rx)
}

/// A queue holding message 0 whose put lock a killed producer process held, halfway through
/// writing message 1. Returns our sender and receiver.
fn put_lock_of_a_dead_producer() -> (Sender<Msg>, Receiver<Msg>) {
    let test =
        this_test!(producer_killed_inside_put_leaves_nothing_visible_and_its_lock_is_taken_over);
    let name = unique_name("deadput");
    let q = crash_queue(&name);
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    drop(q);
    let (state, state_name) = new_slots("pstate", SLOTS);
    let mut child = spawn(&test, "hang", &[("QUEUE", name), ("STATE", state_name)]);
    assert!(eventually(START, || state[PHASE].load(Ordering::SeqCst) == CODING));
    kill_and_reap(&mut child, "hanging producer");
    (tx, rx)
}

#[test]
fn consumer_killed_inside_get_leaves_the_message_for_the_next_consumer() {
    if role().as_deref() == Some("hang") {
        return hang_inside_get();
    }
    let _watchdog = watchdog(LIMIT, "dead get lock");
    let (_tx, rx) = get_lock_of_a_dead_consumer();
    assert_eq!(rx.len(), 5);
    let killed = Instant::now();
    let m = rx.get().expect("the dead consumer's message");
    assert_eq!((m.id, m.seq), (0, 0));
    let noticed = killed.elapsed();
    assert!(noticed < NOTICE, "get lock taken over after {noticed:?}");
    for seq in 1..5 {
        let m = rx.get().unwrap();
        assert_eq!((m.id, m.seq), (0, seq));
    }
    assert_eq!(rx.try_get().map(|m| m.seq), Err(TryGetError::Empty));
}

#[test]
fn producer_killed_inside_put_leaves_nothing_visible_and_its_lock_is_taken_over() {
    match role().as_deref() {
        Some("hang") => return hang_inside_put(false),
        // For the ignored JoinableQueue test (an ignored test does not run as a child).
        Some("hang_joinable") => return hang_inside_put(true),
        _ => {}
    }
    let _watchdog = watchdog(LIMIT, "dead put lock");
    let (tx, rx) = put_lock_of_a_dead_producer();
    let killed = Instant::now();
    let m = rx.get().unwrap();
    assert_eq!((m.id, m.seq), (0, 0));
    // Part of message 1 is in the ring, unpublished.
    assert_eq!(rx.len(), 0);
    assert_eq!(rx.try_get().map(|m| m.seq), Err(TryGetError::Empty));
    tx.put(Msg::new(FRESH, 0)).unwrap();
    let noticed = killed.elapsed();
    assert!(noticed < NOTICE, "put lock taken over after {noticed:?}");
    for seq in 1..40 {
        tx.put(Msg::new(FRESH, seq)).unwrap();
        let m = rx.get().unwrap();
        assert_eq!((m.id, m.seq), (FRESH, seq - 1));
    }
    let m = rx.get().unwrap();
    assert_eq!((m.id, m.seq), (FRESH, 39));
    assert!(rx.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 3. JoinableQueue across processes

const TASKS: u64 = 100;

#[test]
fn joinable_queue_two_worker_processes_finish_every_task() {
    if role().as_deref() == Some("worker") {
        let _watchdog = watchdog(LIMIT, "worker");
        let q = JoinableQueue::<u64>::open(&arg("QUEUE")).unwrap();
        let hits = RawArray::<AtomicU64>::open(&arg("HITS")).unwrap();
        let done = counter(&arg("DONE"));
        while done.load(Ordering::SeqCst) < TASKS {
            match q.get_timeout(Duration::from_millis(20)) {
                Ok(t) => {
                    assert!(t < TASKS, "task {t}");
                    hits[t as usize].fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(300)); // the work
                    done.fetch_add(1, Ordering::SeqCst);
                    q.task_done().unwrap();
                }
                Err(GetTimeoutError::Timeout) => {}
                Err(e) => panic!("worker get: {e}"),
            }
        }
        return;
    }
    let _watchdog = watchdog(LIMIT, "joinable queue");
    let name = unique_name("jq");
    let q = JoinableQueue::<u64>::builder()
        .name(&name)
        .create()
        .unwrap();
    let (hits, hits_name) = new_slots("hits", TASKS as usize);
    let (done, done_name) = new_counter("done");
    for t in 0..TASKS {
        q.put(t).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), 100);
    // Nobody works yet: join times out, after at least its timeout.
    let t = Instant::now();
    assert!(!q.join_timeout(Duration::from_millis(50)));
    assert!(t.elapsed() >= Duration::from_millis(50));
    let test = this_test!(joinable_queue_two_worker_processes_finish_every_task);
    let workers: Vec<Child> = (0..2)
        .map(|_| {
            let args = [
                ("QUEUE", name.clone()),
                ("HITS", hits_name.clone()),
                ("DONE", done_name.clone()),
            ];
            spawn(&test, "worker", &args)
        })
        .collect();
    assert!(q.join_timeout(Duration::from_secs(30)), "join timed out");
    // join returned only after the last task_done, which follows that task's work.
    assert_eq!(q.unfinished_tasks(), 0);
    assert_eq!(done.load(Ordering::SeqCst), TASKS);
    let per_task: Vec<u64> = hits.iter().map(|h| h.load(Ordering::SeqCst)).collect();
    assert_eq!(per_task, vec![1; TASKS as usize], "each task exactly once");
    assert!(q.is_empty());
    join_all(workers, LIMIT);
    assert_eq!(q.task_done(), Err(TaskDoneError));
    assert_eq!(q.unfinished_tasks(), 0);
    q.join();
}

#[test]
fn joinable_queue_task_of_a_killed_worker_stays_unfinished() {
    if role().as_deref() == Some("worker") {
        let q = JoinableQueue::<u64>::open(&arg("QUEUE")).unwrap();
        let t = q.get().unwrap();
        counter(&arg("TAKEN")).store(t + 1, Ordering::SeqCst);
        std::thread::sleep(LIMIT);
        return;
    }
    let _watchdog = watchdog(LIMIT, "joinable queue kill");
    let name = unique_name("jk");
    let q = JoinableQueue::<u64>::builder()
        .name(&name)
        .create()
        .unwrap();
    for t in 0..3 {
        q.put(t).unwrap();
    }
    let (taken, taken_name) = new_counter("taken");
    let mut child = spawn(
        &this_test!(joinable_queue_task_of_a_killed_worker_stays_unfinished),
        "worker",
        &[("QUEUE", name), ("TAKEN", taken_name)],
    );
    assert!(eventually(START, || taken.load(Ordering::SeqCst) == 1));
    kill_and_reap(&mut child, "worker");
    for t in 1..3 {
        assert_eq!(q.get(), Ok(t));
        q.task_done().unwrap();
    }
    // As in Python: the dead worker's task is never done by itself.
    assert_eq!(q.unfinished_tasks(), 1);
    let t = Instant::now();
    assert!(!q.join_timeout(Duration::from_millis(100)));
    assert!(t.elapsed() >= Duration::from_millis(100));
    // A supervisor that knows settles it.
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::from_secs(10)));
    assert_eq!(q.task_done(), Err(TaskDoneError));
}

// ---------------------------------------------------------------------------------------------
// 4. Pipe EOF across processes

/// Child: attach the inherited end, wait for the go (which says whether to exit afterwards),
/// send ten messages.
fn pipe_child() {
    let _watchdog = watchdog(LIMIT, "pipe child");
    let h: ConnectionHandle = arg("CONN").parse().expect("connection handle parses");
    let conn = Connection::<u64>::from_handle(&h).expect("exec'd child opens inherited memfds");
    let stay = conn.recv().unwrap() == 1;
    for i in 0..10 {
        conn.send(i * 7).unwrap();
    }
    if stay {
        std::thread::sleep(LIMIT);
    }
}

/// Starts the child on the other end, checks `poll` on an empty live pipe, lets the child send
/// ten messages and receives them. Returns our end and the child.
fn pipe_scenario(test: &str, stay: bool) -> (Connection<u64>, Child) {
    let (a, b) = pipe::<u64>().unwrap();
    b.set_inheritable(true).unwrap();
    let child = spawn(test, "child", &[("CONN", b.handle().to_string())]);
    // The child has exec'd: stop leaking these descriptors into other tests' children.
    b.set_inheritable(false).unwrap();
    // Nothing sent and a sender alive (b, still ours): poll waits its full timeout.
    let timeout = Duration::from_millis(150);
    let t = Instant::now();
    assert!(!a.poll(timeout), "poll on an empty live pipe");
    assert!(
        t.elapsed() >= timeout,
        "poll returned after {:?}",
        t.elapsed()
    );
    a.send(u64::from(stay)).unwrap();
    assert!(a.poll(LIMIT), "poll with data on the way");
    assert_eq!(a.recv(), Ok(0));
    // The child is attached (it sent): from now on only it holds the other end.
    drop(b);
    for i in 1..10 {
        assert!(a.poll(LIMIT));
        assert_eq!(a.recv(), Ok(i * 7));
    }
    (a, child)
}

#[test]
fn pipe_eof_after_the_child_exits() {
    if role().as_deref() == Some("child") {
        return pipe_child();
    }
    let _watchdog = watchdog(LIMIT, "pipe eof");
    let (a, child) = pipe_scenario(&this_test!(pipe_eof_after_the_child_exits), false);
    join_all(vec![child], LIMIT);
    // EOF counts as readable.
    assert!(a.poll(Duration::from_secs(10)));
    assert_eq!(a.recv(), Err(GetError::Disconnected));
    assert_eq!(a.try_recv(), Err(TryGetError::Disconnected));
    assert!(a.poll(Duration::ZERO));
    // Nobody receives on the other side either.
    assert_eq!(a.send(5), Err(PutError::Disconnected(5)));
}

#[test]
fn pipe_eof_within_1s_of_killing_the_child() {
    if role().as_deref() == Some("child") {
        return pipe_child();
    }
    let _watchdog = watchdog(LIMIT, "pipe eof kill");
    let (a, mut child) = pipe_scenario(&this_test!(pipe_eof_within_1s_of_killing_the_child), true);
    // The child sleeps: the pipe is empty and alive.
    assert_eq!(a.try_recv(), Err(TryGetError::Empty));
    child.kill().expect("SIGKILL");
    let killed = Instant::now();
    assert_eq!(a.recv(), Err(GetError::Disconnected));
    let noticed = killed.elapsed();
    assert!(noticed < NOTICE, "EOF {noticed:?} after the kill");
    reap_killed(&mut child, "pipe child");
}

// ---------------------------------------------------------------------------------------------
// Bugs found while writing these tests. The ignored ones document what is still open.

/// Fixed in 152139a (`wait_for_data` returned `Empty` on a passed deadline before it looked for
/// disconnection).
#[test]
fn try_get_on_a_drained_queue_without_senders_is_disconnected() {
    let q = Queue::<u64>::new(8).unwrap();
    let (tx, rx) = q.split().unwrap();
    tx.put(1).unwrap();
    drop(tx);
    assert_eq!(rx.try_get(), Ok(1));
    assert_eq!(rx.get(), Err(GetError::Disconnected));
    assert_eq!(rx.try_get(), Err(TryGetError::Disconnected));
    assert_eq!(
        rx.get_timeout(Duration::from_millis(1)),
        Err(GetTimeoutError::Disconnected)
    );
    let (a, b) = pipe::<u64>().unwrap();
    drop(b);
    assert_eq!(a.try_recv(), Err(TryGetError::Disconnected));
    // Python: `poll(0)` is true at EOF (a recv would not block).
    assert!(a.poll(Duration::ZERO));
}

#[test]
fn try_get_and_try_put_take_over_a_lock_whose_holder_died() {
    let _watchdog = watchdog(LIMIT, "try after a dead holder");
    let (_tx, rx) = get_lock_of_a_dead_consumer();
    assert_eq!(rx.len(), 5);
    // A consumer that only polls (Python's get_nowait loop) must get the messages too.
    assert!(
        eventually(NOTICE, || rx.try_get().is_ok()),
        "try_get: Empty for 1 s with 5 messages queued behind a dead get-lock holder"
    );
    let (tx, _rx) = put_lock_of_a_dead_producer();
    assert!(
        eventually(NOTICE, || tx.try_put(Msg::new(FRESH, 0)).is_ok()),
        "try_put: Full for 1 s into a queue with room, behind a dead put-lock holder"
    );
}

#[test]
fn joinable_queue_producer_killed_inside_put_leaves_no_phantom_task() {
    let _watchdog = watchdog(LIMIT, "joinable queue dead producer");
    let name = unique_name("jqp");
    let q = JoinableQueue::<Msg>::builder()
        .name(&name)
        .create()
        .unwrap();
    let (state, state_name) = new_slots("pstate", SLOTS);
    let mut child = spawn(
        &this_test!(producer_killed_inside_put_leaves_nothing_visible_and_its_lock_is_taken_over),
        "hang_joinable",
        &[("QUEUE", name), ("STATE", state_name)],
    );
    assert!(eventually(START, || state[PHASE].load(Ordering::SeqCst) == CODING));
    kill_and_reap(&mut child, "hanging producer");
    let m = q.get().unwrap();
    assert_eq!((m.id, m.seq), (0, 0));
    q.task_done().unwrap();
    assert!(q.is_empty());
    // Message 1 was never published, so it is no task.
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.join_timeout(NOTICE));
}

/// Issue 8, bug 1, through `Process::fork` from a threaded process: a child killed right after
/// the fork, before its own fork handler could run, left the counts taken for it in the
/// parent's name, and the receiver never saw `Disconnected`.
#[test]
fn child_forked_and_killed_at_once_leaves_no_phantom_sender() {
    let _w = watchdog(
        LIMIT,
        "child_forked_and_killed_at_once_leaves_no_phantom_sender",
    );
    for i in 0..100u64 {
        let (tx, rx) = Queue::<u64>::new(4).unwrap().split().unwrap();
        let child = multiproc::Process::<()>::fork(|| {
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .unwrap();
        let delay = Duration::from_micros(i * 20);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        child.kill().unwrap();
        let _ = child.wait();
        drop(tx);
        assert_eq!(
            rx.get_timeout(Duration::from_secs(5)),
            Err(GetTimeoutError::Disconnected),
            "trial {i}: the killed child still counts as a sender"
        );
    }
}
