//! Zero-copy loans across real processes: messages written and read in place arrive exactly
//! once, in order and intact, mixed with ordinary puts and gets; a write loan dropped, leaked or
//! abandoned by a killed process leaves nothing; a read loan leaked or abandoned by a killed
//! process leaves its message for the next consumer; a leaked loan stalls only its own side,
//! and timed calls still time out.

#[path = "../common/mod.rs"]
mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{arg, counter, eventually, join_all, new_counter, role, spawn, unique_name, watchdog};
use multiproc::{
    Connection, GetError, GetTimeoutError, JoinableQueue, OutOfBounds, Plain, PutError,
    PutTimeoutError, Queue, RawArray, Receiver, Sender, TryGetError, TryPutError,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const LIMIT: Duration = Duration::from_secs(60);
/// How long a test waits for a child to start and attach.
const START: Duration = Duration::from_secs(20);
/// How long a timed call that must time out is given.
const SHORT: Duration = Duration::from_millis(100);

type Bytes = Queue<u8, Plain>;

fn bytes_queue(name: &str, messages: usize, bytes: usize) -> Bytes {
    Queue::<u8>::builder()
        .codec::<Plain>()
        .name(name)
        .capacity(messages)
        .max_bytes(bytes)
        .create()
        .expect("create queue")
}

/// Byte `i` of message `seq` of producer `id`. The first 8 bytes (when there are 8) carry
/// `id << 32 | seq`, so a consumer can tell any message from its bytes.
fn byte(id: u32, seq: u32, i: usize) -> u8 {
    if i < 8 {
        return ((u64::from(id) << 32 | u64::from(seq)) >> (8 * i)) as u8;
    }
    let h = (u64::from(id) * 0x9e37_79b9 + u64::from(seq) * 0x85eb_ca6b + i as u64)
        .wrapping_mul(0x2545_f491_4f6c_dd1d);
    (h >> 56) as u8
}

/// The length of message `seq` of producer `id`: from 8 to a few KiB, most not a multiple of 8.
fn msg_len(id: u32, seq: u32) -> usize {
    8 + ((seq as usize * 977 + id as usize * 131) % 5000)
}

fn message(id: u32, seq: u32) -> Vec<u8> {
    (0..msg_len(id, seq)).map(|i| byte(id, seq, i)).collect()
}

/// Writes message `seq` of producer `id` in place, through one of the loan's ways of writing
/// (chosen by `seq`), and publishes it.
fn put_by_loan(tx: &Sender<u8, Plain>, id: u32, seq: u32) {
    let len = msg_len(id, seq);
    let mut loan = tx.loan_bytes(len).expect("loan");
    assert_eq!(loan.len(), len);
    match seq % 3 {
        0 => loan.fill_with(|at, chunk| {
            for (k, b) in chunk.iter_mut().enumerate() {
                *b = byte(id, seq, at + k);
            }
        }),
        1 => {
            let words = loan.as_words();
            assert_eq!(words.len(), len / 8);
            for (w, word) in words.iter().enumerate() {
                let mut b = [0u8; 8];
                for (k, x) in b.iter_mut().enumerate() {
                    *x = byte(id, seq, w * 8 + k);
                }
                word.store(u64::from_ne_bytes(b), Ordering::Relaxed);
            }
            let tail: Vec<u8> = (len / 8 * 8..len).map(|i| byte(id, seq, i)).collect();
            loan.write_at(len / 8 * 8, &tail).unwrap();
        }
        _ => loan.write_at(0, &message(id, seq)).unwrap(),
    }
    loan.publish();
}

/// Reads a message in place through one of the loan's ways of reading (chosen by `how`), and
/// returns its bytes (the loan is released).
fn get_by_loan(rx: &Receiver<u8, Plain>, how: u32) -> Result<Vec<u8>, GetError> {
    let loan = rx.get_loan()?;
    let len = loan.len();
    let bytes = match how % 4 {
        0 => {
            let mut v = vec![0u8; len];
            loan.for_each_chunk(|at, chunk| v[at..at + chunk.len()].copy_from_slice(chunk));
            v
        }
        1 => {
            let mut v: Vec<u8> = loan
                .as_words()
                .iter()
                .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
                .collect();
            let mut tail = vec![0u8; len % 8];
            loan.read_at(len / 8 * 8, &mut tail).unwrap();
            v.extend_from_slice(&tail);
            v
        }
        2 => {
            let mut v = vec![0u8; len];
            loan.read_at(0, &mut v).unwrap();
            v
        }
        _ => loan.to_vec(),
    };
    loan.release();
    Ok(bytes)
}

/// `(id, seq)` of a message, checked byte for byte.
fn parse(b: &[u8]) -> (u32, u32) {
    assert!(b.len() >= 8, "a {}-byte message", b.len());
    let head = u64::from_le_bytes(b[..8].try_into().unwrap());
    let (id, seq) = ((head >> 32) as u32, head as u32);
    assert_eq!(b.len(), msg_len(id, seq), "length of message {id}/{seq}");
    assert!(
        b == message(id, seq).as_slice(),
        "bytes of message {id}/{seq}"
    );
    (id, seq)
}

fn ready() {
    counter(&arg("READY")).fetch_add(1, Ordering::SeqCst);
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

// ---------------------------------------------------------------------------------------------
// Messages across processes

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
struct Point {
    seq: u64,
    xy: [u32; 2],
    tag: [u8; 16],
}

fn point(seq: u64) -> Point {
    Point {
        seq,
        xy: [seq as u32 * 3, !(seq as u32)],
        tag: [seq as u8; 16],
    }
}

/// Child: `COUNT` byte messages by loans, then `COUNT` typed ones, alternating `write` and
/// word stores.
fn loan_producer() {
    let _watchdog = watchdog(LIMIT, "loan producer");
    let tx = Sender::<u8, Plain>::open(&arg("QUEUE")).unwrap();
    let typed = Sender::<Point, Plain>::open(&arg("TYPED")).unwrap();
    let count: u32 = arg("COUNT").parse().unwrap();
    ready();
    for seq in 0..count {
        put_by_loan(&tx, 0, seq);
    }
    for seq in 0..u64::from(count) {
        let mut loan = typed.loan().unwrap();
        assert_eq!(loan.len(), size_of::<Point>());
        if seq % 2 == 0 {
            loan.write(&point(seq));
        } else {
            let bytes = point(seq);
            for (w, word) in bytes.as_bytes().chunks(8).zip(loan.as_words()) {
                word.store(u64::from_ne_bytes(w.try_into().unwrap()), Ordering::Relaxed);
            }
        }
        loan.publish();
    }
}

#[test]
fn byte_and_plain_loans_cross_processes_intact_and_in_order() {
    if role().as_deref() == Some("producer") {
        return loan_producer();
    }
    let _watchdog = watchdog(LIMIT, "loans across processes");
    let (name, typed_name) = (unique_name("lq"), unique_name("lt"));
    // A small ring, so that records wrap around the end many times.
    let q = bytes_queue(&name, 16, 16 << 10);
    let rx = q.receiver().unwrap();
    drop(q);
    let typed = Queue::<Point>::builder()
        .codec::<Plain>()
        .name(&typed_name)
        .capacity(4)
        .create()
        .unwrap();
    let trx = typed.receiver().unwrap();
    drop(typed);
    let (ready_count, ready_name) = new_counter("ready");
    let count = 600u32;
    let child = spawn(
        &this_test!(byte_and_plain_loans_cross_processes_intact_and_in_order),
        "producer",
        &[
            ("QUEUE", name),
            ("TYPED", typed_name),
            ("READY", ready_name),
            ("COUNT", count.to_string()),
        ],
    );
    assert!(eventually(START, || ready_count.load(Ordering::SeqCst) == 1));
    for seq in 0..count {
        let b = get_by_loan(&rx, seq).unwrap();
        assert_eq!(parse(&b), (0, seq));
    }
    for seq in 0..u64::from(count) {
        let loan = trx.get_loan().unwrap();
        assert_eq!(loan.len(), size_of::<Point>());
        assert_eq!(loan.read().unwrap(), point(seq));
        drop(loan);
    }
    assert_eq!(rx.get_loan().map(|l| l.len()), Err(GetError::Disconnected));
    assert_eq!(trx.get_loan().map(|l| l.len()), Err(GetError::Disconnected));
    join_all(vec![child], LIMIT);
}

/// Child: produce `COUNT` messages as producer `ID`, by loans or by `put_bytes`.
fn mixed_producer(by_loan: bool) {
    let _watchdog = watchdog(LIMIT, "mixed producer");
    let tx = Sender::<u8, Plain>::open(&arg("QUEUE")).unwrap();
    let id: u32 = arg("ID").parse().unwrap();
    let count: u32 = arg("COUNT").parse().unwrap();
    ready();
    for seq in 0..count {
        if by_loan {
            put_by_loan(&tx, id, seq);
        } else {
            tx.put_bytes(&message(id, seq)).unwrap();
        }
    }
}

/// Child: take messages until every producer is gone, by loans or by `get_bytes`; check each
/// and the order per producer; count each message seen in `SEEN[id * COUNT + seq]`.
fn mixed_consumer(by_loan: bool) {
    let _watchdog = watchdog(LIMIT, "mixed consumer");
    let rx = Receiver::<u8, Plain>::open(&arg("QUEUE")).unwrap();
    let seen = RawArray::<AtomicU64>::open(&arg("SEEN")).unwrap();
    let count: u32 = arg("COUNT").parse().unwrap();
    ready();
    let mut next = [0u32; 2];
    for k in 0.. {
        let got = if by_loan {
            get_by_loan(&rx, k)
        } else {
            rx.get_bytes()
        };
        let bytes = match got {
            Ok(b) => b,
            Err(GetError::Disconnected) => return,
            Err(e) => panic!("get: {e}"),
        };
        let (id, seq) = parse(&bytes);
        assert!(id < 2 && seq < count, "message {id}/{seq}");
        assert!(
            seq >= next[id as usize],
            "message {id}/{seq} after a later one"
        );
        next[id as usize] = seq + 1;
        seen[(id * count + seq) as usize].fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn loans_mixed_with_puts_and_gets_of_other_processes_deliver_each_message_once_in_order() {
    match role().as_deref() {
        Some("loan_producer") => return mixed_producer(true),
        Some("put_producer") => return mixed_producer(false),
        Some("loan_consumer") => return mixed_consumer(true),
        Some("get_consumer") => return mixed_consumer(false),
        _ => {}
    }
    let _watchdog = watchdog(LIMIT, "mixed loans");
    let name = unique_name("lm");
    let count = 400u32;
    let q = bytes_queue(&name, 32, 32 << 10);
    let (ready_count, ready_name) = new_counter("ready");
    let seen_name = unique_name("seen");
    let seen = RawArray::<AtomicU64>::builder()
        .name(&seen_name)
        .len(2 * count as usize)
        .create()
        .unwrap();
    let test = this_test!(
        loans_mixed_with_puts_and_gets_of_other_processes_deliver_each_message_once_in_order
    );
    let args = |id: u32| {
        [
            ("QUEUE", name.clone()),
            ("READY", ready_name.clone()),
            ("SEEN", seen_name.clone()),
            ("COUNT", count.to_string()),
            ("ID", id.to_string()),
        ]
    };
    // Consumers first: the producers must not see a queue without receivers.
    let mut children = vec![
        spawn(&test, "loan_consumer", &args(0)),
        spawn(&test, "get_consumer", &args(0)),
    ];
    assert!(eventually(START, || ready_count.load(Ordering::SeqCst) == 2));
    children.push(spawn(&test, "loan_producer", &args(0)));
    children.push(spawn(&test, "put_producer", &args(1)));
    assert!(eventually(START, || ready_count.load(Ordering::SeqCst) == 4));
    // Our handle counts as a sender: without it, the consumers see the producers' end.
    drop(q);
    join_all(children, LIMIT);
    for i in 0..2 * count as usize {
        assert_eq!(seen[i].load(Ordering::SeqCst), 1, "message {i} seen");
    }
}

// ---------------------------------------------------------------------------------------------
// Write loans dropped, leaked, killed

/// Child: a loan dropped, a loan whose filling panics, then one real message.
fn drop_write_loans() {
    let _watchdog = watchdog(LIMIT, "dropping producer");
    let tx = Sender::<u8, Plain>::open(&arg("QUEUE")).unwrap();
    let mut loan = tx.loan_bytes(100).unwrap();
    loan.write_at(0, &message(9, 9)[..100]).unwrap();
    drop(loan);
    let panicked = std::panic::catch_unwind(|| {
        let mut loan = tx.loan_bytes(50_000).unwrap();
        let mut chunks = 0;
        loan.fill_with(|_, chunk| {
            chunk.fill(1);
            chunks += 1;
            assert!(chunks < 2, "a panic half-way through");
        });
        loan.publish();
    });
    assert!(panicked.is_err());
    tx.put_bytes(&message(1, 1)).unwrap();
}

#[test]
fn a_write_loan_dropped_unpublished_leaves_nothing() {
    if role().as_deref() == Some("dropper") {
        return drop_write_loans();
    }
    let _watchdog = watchdog(LIMIT, "dropped write loan");
    let name = unique_name("ld");
    let q = bytes_queue(&name, 8, 64 << 10);
    let mut child = spawn(
        &this_test!(a_write_loan_dropped_unpublished_leaves_nothing),
        "dropper",
        &[("QUEUE", name)],
    );
    let b = q.get_bytes().unwrap();
    assert_eq!(parse(&b), (1, 1));
    let status = common::wait_for(&mut child, LIMIT);
    assert!(status.success(), "{status}");
    assert_eq!(q.try_get_loan().map(|l| l.len()), Err(TryGetError::Empty));
}

/// Child: take a write loan (publishing messages 0 and 1 by loans first), write half of it,
/// then either forget it or keep holding it, and wait to be killed.
fn hold_write_loan(leak: bool) {
    let _watchdog = watchdog(LIMIT, "loan holder");
    let tx = Sender::<u8, Plain>::open(&arg("QUEUE")).unwrap();
    put_by_loan(&tx, 0, 0);
    put_by_loan(&tx, 0, 1);
    let mut loan = tx.loan_bytes(msg_len(0, 2)).unwrap();
    loan.write_at(0, &message(0, 2)[..msg_len(0, 2) / 2])
        .unwrap();
    if leak {
        std::mem::forget(loan);
        ready();
        std::thread::sleep(LIMIT);
    } else {
        ready();
        std::thread::sleep(LIMIT);
        drop(loan);
    }
}

/// A queue (our sender and receiver) into which a child published messages 0 and 1 by loans
/// and then took a loan for message 2 that it leaked (`leak`) or still holds: returns the child.
fn write_loan_held_by_a_child(
    test: &str,
    leak: bool,
) -> (Sender<u8, Plain>, Receiver<u8, Plain>, Child) {
    let name = unique_name("lh");
    let q = bytes_queue(&name, 8, 64 << 10);
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    drop(q);
    let (ready_count, ready_name) = new_counter("ready");
    let child = spawn(
        test,
        if leak { "leak" } else { "hold" },
        &[("QUEUE", name), ("READY", ready_name)],
    );
    assert!(eventually(START, || ready_count.load(Ordering::SeqCst) == 1));
    (tx, rx, child)
}

#[test]
fn a_leaked_write_loan_stalls_producers_whose_timed_puts_time_out() {
    match role().as_deref() {
        Some("leak") => return hold_write_loan(true),
        Some("hold") => return hold_write_loan(false),
        _ => {}
    }
    let _watchdog = watchdog(LIMIT, "leaked write loan");
    let test = this_test!(a_leaked_write_loan_stalls_producers_whose_timed_puts_time_out);
    let (tx, rx, mut child) = write_loan_held_by_a_child(&test, true);
    // The producers' side is stalled: timed puts and loans time out, tries fail at once.
    let started = Instant::now();
    assert_eq!(tx.put_timeout(7, SHORT), Err(PutTimeoutError::Timeout(7)));
    assert!(started.elapsed() >= SHORT);
    let started = Instant::now();
    assert_eq!(
        tx.loan_bytes_timeout(8, SHORT).map(|l| l.len()),
        Err(PutTimeoutError::Timeout(()))
    );
    assert!(started.elapsed() >= SHORT);
    assert_eq!(
        tx.try_loan_bytes(8).map(|l| l.len()),
        Err(TryPutError::Full(()))
    );
    // The consumers' side is not: the published messages come out, then timed gets time out.
    assert_eq!(parse(&rx.get_bytes().unwrap()), (0, 0));
    assert_eq!(parse(&get_by_loan(&rx, 1).unwrap()), (0, 1));
    let started = Instant::now();
    assert_eq!(rx.get_bytes_timeout(SHORT), Err(GetTimeoutError::Timeout));
    assert!(started.elapsed() >= SHORT);
    assert_eq!(
        rx.get_loan_timeout(SHORT).map(|l| l.len()),
        Err(GetTimeoutError::Timeout)
    );
    assert_eq!(rx.try_get_loan().map(|l| l.len()), Err(TryGetError::Empty));
    // Once the holder is gone, its lock is taken over and the half-written loan left nothing.
    kill_and_reap(&mut child, "leaking producer");
    put_by_loan(&tx, 5, 5);
    assert_eq!(parse(&rx.get_bytes().unwrap()), (5, 5));
    assert_eq!(rx.try_get_loan().map(|l| l.len()), Err(TryGetError::Empty));
}

#[test]
fn a_producer_killed_holding_a_write_loan_leaves_only_complete_messages() {
    match role().as_deref() {
        Some("leak") => return hold_write_loan(true),
        Some("hold") => return hold_write_loan(false),
        _ => {}
    }
    let _watchdog = watchdog(LIMIT, "killed write loan");
    let test = this_test!(a_producer_killed_holding_a_write_loan_leaves_only_complete_messages);
    let (tx, rx, mut child) = write_loan_held_by_a_child(&test, false);
    kill_and_reap(&mut child, "producer holding a loan");
    // The next producer takes the lock over, by loan and by put.
    put_by_loan(&tx, 1, 7);
    tx.put_bytes(&message(1, 8)).unwrap();
    let got: Vec<(u32, u32)> = (0..4)
        .map(|k| parse(&get_by_loan(&rx, k).unwrap()))
        .collect();
    assert_eq!(got, [(0, 0), (0, 1), (1, 7), (1, 8)]);
    assert_eq!(rx.try_get_loan().map(|l| l.len()), Err(TryGetError::Empty));
}

// ---------------------------------------------------------------------------------------------
// Read loans leaked, killed

/// Child: take a read loan of the first message, forget it or hold it, and wait to be killed.
fn hold_read_loan(leak: bool) {
    let _watchdog = watchdog(LIMIT, "read loan holder");
    let rx = Receiver::<u8, Plain>::open(&arg("QUEUE")).unwrap();
    let loan = rx.get_loan().unwrap();
    assert_eq!(parse(&loan.to_vec()), (0, 0));
    if leak {
        std::mem::forget(loan);
        ready();
        std::thread::sleep(LIMIT);
    } else {
        ready();
        std::thread::sleep(LIMIT);
        drop(loan);
    }
}

/// A queue holding messages 0..3, whose first a child holds by a read loan (leaked with
/// `leak`): our sender and receiver, and the child.
fn read_loan_held_by_a_child(
    test: &str,
    leak: bool,
) -> (Sender<u8, Plain>, Receiver<u8, Plain>, Child) {
    let name = unique_name("lr");
    let q = bytes_queue(&name, 8, 64 << 10);
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    drop(q);
    for seq in 0..3 {
        tx.put_bytes(&message(0, seq)).unwrap();
    }
    let (ready_count, ready_name) = new_counter("ready");
    let child = spawn(
        test,
        if leak { "leak" } else { "hold" },
        &[("QUEUE", name), ("READY", ready_name)],
    );
    assert!(eventually(START, || ready_count.load(Ordering::SeqCst) == 1));
    (tx, rx, child)
}

#[test]
fn a_leaked_read_loan_stalls_consumers_whose_timed_gets_time_out() {
    match role().as_deref() {
        Some("leak") => return hold_read_loan(true),
        Some("hold") => return hold_read_loan(false),
        _ => {}
    }
    let _watchdog = watchdog(LIMIT, "leaked read loan");
    let test = this_test!(a_leaked_read_loan_stalls_consumers_whose_timed_gets_time_out);
    let (tx, rx, mut child) = read_loan_held_by_a_child(&test, true);
    let started = Instant::now();
    assert_eq!(rx.get_bytes_timeout(SHORT), Err(GetTimeoutError::Timeout));
    assert!(started.elapsed() >= SHORT);
    let started = Instant::now();
    assert_eq!(
        rx.get_loan_timeout(SHORT).map(|l| l.len()),
        Err(GetTimeoutError::Timeout)
    );
    assert!(started.elapsed() >= SHORT);
    assert_eq!(rx.try_get_loan().map(|l| l.len()), Err(TryGetError::Empty));
    // Producers are not stalled.
    tx.put_bytes(&message(0, 3)).unwrap();
    put_by_loan(&tx, 0, 4);
    // The leaked loan never freed its message: once the holder is gone, it is delivered.
    kill_and_reap(&mut child, "leaking consumer");
    for seq in 0..5 {
        assert_eq!(parse(&get_by_loan(&rx, seq).unwrap()), (0, seq));
    }
}

#[test]
fn a_consumer_killed_holding_a_read_loan_leaves_its_message_to_the_next() {
    match role().as_deref() {
        Some("leak") => return hold_read_loan(true),
        Some("hold") => return hold_read_loan(false),
        _ => {}
    }
    let _watchdog = watchdog(LIMIT, "killed read loan");
    let test = this_test!(a_consumer_killed_holding_a_read_loan_leaves_its_message_to_the_next);
    let (_tx, rx, mut child) = read_loan_held_by_a_child(&test, false);
    assert_eq!(rx.len(), 3);
    kill_and_reap(&mut child, "consumer holding a loan");
    assert_eq!(parse(&get_by_loan(&rx, 0).unwrap()), (0, 0));
    assert_eq!(parse(&rx.get_bytes().unwrap()), (0, 1));
    assert_eq!(parse(&get_by_loan(&rx, 3).unwrap()), (0, 2));
    assert!(rx.is_empty());
}

// ---------------------------------------------------------------------------------------------
// One process

#[test]
fn write_at_and_read_at_out_of_bounds_are_errors() {
    let _watchdog = watchdog(LIMIT, "bounds");
    let q = Queue::<u8, Plain>::with_codec(4).unwrap();
    let mut loan = q.loan_bytes(20).unwrap();
    let oob = |offset, end| OutOfBounds {
        offset,
        end,
        len: 20,
    };
    assert_eq!(loan.write_at(15, &[1; 6]), Err(oob(15, 21)));
    assert_eq!(loan.write_at(21, &[]), Err(oob(21, 21)));
    assert_eq!(
        loan.write_at(usize::MAX, &[1]),
        Err(oob(usize::MAX, usize::MAX))
    );
    loan.write_at(0, &[7; 20]).unwrap();
    loan.write_at(20, &[]).unwrap();
    let mut b = [0u8; 4];
    assert_eq!(loan.read_at(17, &mut b), Err(oob(17, 21)));
    loan.read_at(16, &mut b).unwrap();
    assert_eq!(b, [7; 4]);
    assert_eq!(loan.as_words().len(), 2);
    loan.publish();
    let loan = q.get_loan().unwrap();
    assert_eq!(loan.read_at(17, &mut b), Err(oob(17, 21)));
    assert_eq!(
        loan.read_at(usize::MAX, &mut b),
        Err(oob(usize::MAX, usize::MAX))
    );
    loan.read_at(16, &mut b).unwrap();
    assert_eq!(b, [7; 4]);
    assert_eq!(loan.to_vec(), [7; 20]);
    loan.release();
    assert!(q.is_empty());
    // Too long for the ring: refused before anything is reserved.
    let too_long = q.max_loan_len() + 1;
    assert_eq!(
        q.loan_bytes(too_long).map(|l| l.len()),
        Err(PutError::TooLarge(()))
    );
    assert_eq!(
        q.try_loan_bytes(too_long).map(|l| l.len()),
        Err(TryPutError::TooLarge(()))
    );
    // The longest message fits, and an empty one too.
    let max = q.max_loan_len();
    q.loan_bytes(max).unwrap().publish();
    q.loan_bytes(0).unwrap().publish();
    assert_eq!(q.get_loan().unwrap().len(), max);
    let empty = q.get_loan().unwrap();
    assert!(empty.is_empty() && empty.as_words().is_empty() && empty.to_vec().is_empty());
}

#[test]
fn a_plain_read_loan_of_the_wrong_length_is_a_decode_error_and_is_consumed_on_release() {
    let q = Queue::<u64, Plain>::with_codec(4).unwrap();
    q.put_bytes(&[1, 2, 3]).unwrap();
    let mut loan = q.loan().unwrap();
    loan.write(&77);
    loan.publish();
    let bad = q.get_loan().unwrap();
    let e = bad.read().unwrap_err();
    assert_eq!(e.bytes(), [1, 2, 3]);
    // Reading does not consume; releasing does.
    assert_eq!(q.len(), 2);
    bad.release();
    assert_eq!(q.get_loan().unwrap().read().unwrap(), 77);
    assert!(q.is_empty());
}

#[test]
fn a_published_loan_is_a_task_of_a_joinable_queue() {
    let q = JoinableQueue::<u32, Plain>::with_codec(4).unwrap();
    let mut loan = q.loan().unwrap();
    loan.write(&5);
    loan.publish();
    drop(q.loan().unwrap()); // unpublished: no task
    assert_eq!(q.unfinished_tasks(), 1);
    assert_eq!(q.get_loan().unwrap().read().unwrap(), 5);
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::from_secs(5)));
}

#[test]
fn connections_lend_both_ways() {
    let (a, b) = Connection::<u64, [u8; 4], Plain>::pair().unwrap();
    let mut loan = a.loan_bytes(3).unwrap();
    loan.write_at(0, b"abc").unwrap();
    loan.publish();
    assert_eq!(b.recv_bytes().unwrap(), b"abc");
    let mut typed = a.try_loan().unwrap();
    typed.write(&0x0102_0304_0506_0708);
    typed.publish();
    assert_eq!(b.recv().unwrap(), 0x0102_0304_0506_0708);
    a.loan_timeout(Duration::from_secs(5)).unwrap().publish();
    assert_eq!(b.recv_loan().unwrap().len(), 8);
    b.send([1, 2, 3, 4]).unwrap();
    let got = a.recv_loan().unwrap();
    assert_eq!(got.read().unwrap(), [1, 2, 3, 4]);
    drop(got);
    assert_eq!(a.try_recv_loan().map(|l| l.len()), Err(TryGetError::Empty));
    assert_eq!(
        b.recv_loan_timeout(Duration::from_millis(1))
            .map(|l| l.len()),
        Err(GetTimeoutError::Timeout)
    );
}
