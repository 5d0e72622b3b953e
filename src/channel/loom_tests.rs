//! loom models of the ring itself (`Ring::put_with`, `get_with`, a message in fragments, the
//! peer counts and the
//! wake-ups), on a ring in the heap; see `sync::loom_tests` for how the build works.

use loom::sync::Arc;
use loom::thread;

use super::ring::{Dest, GetFail, PutFail, Resume, Ring, Role};

const SEND: Role = Role {
    send: true,
    recv: false,
};
const RECV: Role = Role {
    send: false,
    recv: true,
};

fn put(ring: &Ring, v: u8) {
    ring.put_with(1, None, |mut room| room.write_at(0, &[v]))
        .expect("put");
}

fn get(ring: &Ring) -> Result<u8, GetFail> {
    ring.get_with(None, &Resume::default(), |m| {
        let mut b = [0u8; 1];
        m.copy_to(&mut b);
        b[0]
    })
}

/// A producer and a consumer: every message arrives once and in order, and a consumer that
/// sleeps on an empty ring is woken by the put.
#[test]
fn ring_delivers_in_order_and_wakes_the_consumer() {
    loom::model(|| {
        let ring = Arc::new(Ring::in_heap(64, 4));
        ring.attach(SEND).unwrap();
        ring.attach(RECV).unwrap();
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                put(&ring, 1);
                put(&ring, 2);
            })
        };
        assert_eq!(get(&ring), Ok(1));
        assert_eq!(get(&ring), Ok(2));
        producer.join().unwrap();
    });
}

/// A message in fragments (a first one with the total only, then two of 8 bytes, through a
/// ring that holds two at a time): the consumer assembles it whole, waiting for each
/// fragment while the producer holds the put lock, and the producer waits for room.
#[test]
fn ring_streams_a_message_in_fragments() {
    loom::model(|| {
        let ring = Arc::new(Ring::in_heap(64, 2));
        ring.attach(SEND).unwrap();
        ring.attach(RECV).unwrap();
        let msg: Vec<u8> = (1..=16).collect();
        let producer = {
            let ring = ring.clone();
            let msg = msg.clone();
            thread::spawn(move || ring.put_fragments(&msg, None).expect("put"))
        };
        let got = ring.get_msg(
            None,
            None,
            &Resume::default(),
            |m, _| m.to_vec(),
            |dest| match dest {
                Dest::Vec(v) => v,
                Dest::Buf(..) => unreachable!(),
            },
        );
        assert_eq!(got, Ok(msg));
        producer.join().unwrap();
    });
}

/// A producer that finds the ring full sleeps until the consumer frees room.
#[test]
fn ring_full_producer_is_woken_by_a_get() {
    loom::model(|| {
        let ring = Arc::new(Ring::in_heap(64, 1));
        ring.attach(SEND).unwrap();
        ring.attach(RECV).unwrap();
        put(&ring, 1);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || put(&ring, 2))
        };
        assert_eq!(get(&ring), Ok(1));
        assert_eq!(get(&ring), Ok(2));
        producer.join().unwrap();
    });
}

/// The last sender going away wakes a consumer sleeping on the empty ring: `Disconnected`.
#[test]
fn ring_detach_of_the_last_sender_wakes_the_consumer() {
    loom::model(|| {
        let ring = Arc::new(Ring::in_heap(64, 4));
        let me = ring.attach(SEND).unwrap();
        ring.attach(RECV).unwrap();
        let sender = {
            let ring = ring.clone();
            thread::spawn(move || ring.detach(SEND, me))
        };
        assert_eq!(get(&ring), Err(GetFail::Disconnected));
        sender.join().unwrap();
    });
}

/// Two producers, one consumer: both messages arrive, each once.
#[test]
fn ring_two_producers_one_consumer() {
    loom::model(|| {
        let ring = Arc::new(Ring::in_heap(64, 1));
        ring.attach(SEND).unwrap();
        ring.attach(RECV).unwrap();
        let producers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|v| {
                let ring = ring.clone();
                thread::spawn(move || put(&ring, v))
            })
            .collect();
        let mut got = [get(&ring).unwrap(), get(&ring).unwrap()];
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        for p in producers {
            p.join().unwrap();
        }
    });
}

/// One producer, two consumers: each message goes to exactly one of them. (Three threads:
/// one preemption keeps the model to seconds.)
#[test]
fn ring_one_producer_two_consumers() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(1);
    model.check(|| {
        let ring = Arc::new(Ring::in_heap(64, 4));
        ring.attach(SEND).unwrap();
        ring.attach(RECV).unwrap();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let ring = ring.clone();
                thread::spawn(move || get(&ring).unwrap())
            })
            .collect();
        put(&ring, 1);
        put(&ring, 2);
        let mut got: Vec<u8> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

/// A consumer asleep on an empty ring is woken by a shutdown from another thread: `ShutDown`.
#[test]
fn ring_shutdown_wakes_the_consumer() {
    loom::model(|| {
        let ring = Arc::new(Ring::in_heap(64, 4));
        ring.attach(SEND).unwrap();
        ring.attach(RECV).unwrap();
        let closer = {
            let ring = ring.clone();
            thread::spawn(move || ring.shutdown(false))
        };
        assert_eq!(get(&ring), Err(GetFail::ShutDown));
        closer.join().unwrap();
    });
}

/// A producer asleep on a full ring is woken by an immediate shutdown, which drops the queued
/// message: the put fails with `ShutDown`, and so does the get after it.
#[test]
fn ring_immediate_shutdown_wakes_the_producer_and_drops_the_queue() {
    loom::model(|| {
        let ring = Arc::new(Ring::in_heap(64, 1));
        ring.attach(SEND).unwrap();
        ring.attach(RECV).unwrap();
        put(&ring, 1);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || ring.put_with(1, None, |mut room| room.write_at(0, &[2])))
        };
        ring.shutdown(true);
        assert_eq!(producer.join().unwrap(), Err(PutFail::ShutDown));
        assert_eq!(get(&ring), Err(GetFail::ShutDown));
        assert_eq!(ring.unfinished(), 0);
    });
}

/// A put racing a plain shutdown (from a third thread) either fails, or its message is
/// received before the consumer's `ShutDown`: a consumer that drains until `ShutDown` never
/// misses a message whose put succeeded (a get waits out the puts in flight before it calls
/// the ring drained). (Three threads: one preemption, as in the model above; it is enough for
/// the producer to stop between its look at the state and its publish.)
#[test]
fn ring_plain_shutdown_loses_no_put_that_succeeded() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(1);
    model.check(|| {
        let ring = Arc::new(Ring::in_heap(64, 4));
        ring.attach(SEND).unwrap();
        ring.attach(RECV).unwrap();
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || ring.put_with(1, None, |mut room| room.write_at(0, &[7])))
        };
        let closer = {
            let ring = ring.clone();
            thread::spawn(move || ring.shutdown(false))
        };
        let mut got = Vec::new();
        let end = loop {
            match get(&ring) {
                Ok(v) => got.push(v),
                Err(e) => break e,
            }
        };
        assert_eq!(end, GetFail::ShutDown);
        closer.join().unwrap();
        match producer.join().unwrap() {
            Ok(()) => assert_eq!(got, [7]),
            Err(e) => {
                assert_eq!(e, PutFail::ShutDown);
                assert!(got.is_empty());
            }
        }
    });
}
