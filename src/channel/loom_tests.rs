//! loom models of the ring itself (`Ring::put_with`, `get_with`, the peer counts and the
//! wake-ups), on a ring in the heap; see `sync::loom_tests` for how the build works.

use loom::sync::Arc;
use loom::thread;

use super::ring::{GetFail, Ring, Role};

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
    ring.get_with(None, None, |m| {
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
