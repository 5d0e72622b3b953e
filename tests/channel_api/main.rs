//! The channel API a new user meets first (issue 11): constructors that infer their message
//! type, `channel()`, typed duplex pipes, one-way pipes, and messages that do not decode.
#![cfg(feature = "serde")]

use std::time::Duration;

use multiproc::{
    Connection, GetError, GetTimeoutError, JoinableQueue, Process, PutError, Queue, Receiver,
    Sender, TryGetError, TryPutError,
};
use serde::{Deserialize, Serialize};

#[path = "../common/mod.rs"]
mod common;

const LIMIT: Duration = Duration::from_secs(60);

fn produce(tx: Sender<u64>) {
    for i in 0..100 {
        tx.put(i * i).unwrap();
    }
}

#[test]
fn queue_new_infers_its_message_type() {
    let q = Queue::new(64).unwrap();
    q.put(5u64).unwrap();
    assert_eq!(q.get().unwrap(), 5);

    let jq = JoinableQueue::new(4).unwrap();
    jq.put("task".to_string()).unwrap();
    assert_eq!(jq.get().unwrap(), "task");
    jq.task_done().unwrap();
    assert!(jq.join_timeout(Duration::from_secs(5)));
}

#[test]
fn channel_disconnects_when_the_child_holding_every_sender_exits() {
    let _watchdog = common::watchdog(LIMIT, "channel test");
    let (tx, rx) = multiproc::channel(8).unwrap();
    let child = Process::spawn(produce, tx).unwrap();
    let mut got = Vec::new();
    loop {
        match rx.get() {
            Ok(v) => got.push(v),
            Err(GetError::Disconnected) => break,
            Err(e) => panic!("get: {e}"),
        }
    }
    child.join().unwrap();
    assert_eq!(got, (0..100).map(|i| i * i).collect::<Vec<u64>>());
}

#[test]
fn an_unsplit_queue_counts_as_a_sender_and_never_disconnects() {
    let q = Queue::<u64>::new(4).unwrap();
    drop(q.sender().unwrap());
    assert_eq!(q.try_get(), Err(TryGetError::Empty));
    let rx = q.receiver().unwrap();
    drop(q);
    // The queue handle was the last sender.
    assert_eq!(rx.try_get(), Err(TryGetError::Disconnected));
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Request {
    Add(u64, u64),
    Shout(String),
    Stop,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Response {
    Sum(u64),
    Text(String),
}

fn serve(end: Connection<Response, Request>) {
    loop {
        match end.recv().unwrap() {
            Request::Add(a, b) => end.send(Response::Sum(a + b)).unwrap(),
            Request::Shout(s) => end.send(Response::Text(s.to_uppercase())).unwrap(),
            Request::Stop => return,
        }
    }
}

#[test]
fn duplex_carries_requests_to_a_child_and_responses_back() {
    let _watchdog = common::watchdog(LIMIT, "duplex test");
    let (client, server): (Connection<Request, Response>, _) =
        multiproc::duplex::<Request, Response>().unwrap();
    let child = Process::spawn(serve, server).unwrap();
    client.send(Request::Add(40, 2)).unwrap();
    assert_eq!(client.recv().unwrap(), Response::Sum(42));
    client.send(Request::Shout("quiet".into())).unwrap();
    assert_eq!(client.recv().unwrap(), Response::Text("QUIET".into()));
    client.send(Request::Stop).unwrap();
    child.join().unwrap();
    // The server's end is gone with its process: end of file.
    assert_eq!(client.recv(), Err(GetError::Disconnected));
}

#[test]
fn a_connection_names_each_failure_after_its_call() {
    let (a, b) = multiproc::pipe::<u32>().unwrap();
    assert_eq!(b.try_recv(), Err(TryGetError::Empty));
    assert_eq!(
        b.recv_timeout(Duration::from_millis(5)),
        Err(GetTimeoutError::Timeout)
    );
    // Each direction holds 1024 messages by default.
    for i in 0..1024 {
        assert_eq!(a.try_send(i), Ok(()));
    }
    assert_eq!(a.try_send(1024), Err(TryPutError::Full(1024)));
    assert_eq!(b.recv(), Ok(0));
    assert_eq!(a.send(1024), Ok(()));
    drop(b);
    assert_eq!(a.send(1), Err(PutError::Disconnected(1)));
    assert_eq!(a.try_send(2), Err(TryPutError::Disconnected(2)));
    assert_eq!(a.recv(), Err(GetError::Disconnected));
    assert_eq!(a.try_recv(), Err(TryGetError::Disconnected));
    assert_eq!(
        a.recv_timeout(Duration::from_millis(5)),
        Err(GetTimeoutError::Disconnected)
    );
}

fn write_three(tx: Sender<String>) {
    for w in ["one", "two", "three"] {
        tx.put(w.to_string()).unwrap();
    }
}

#[test]
fn pipe_oneway_gives_the_receiving_end_first() {
    let _watchdog = common::watchdog(LIMIT, "one-way pipe test");
    let (rx, tx): (Receiver<String>, Sender<String>) = multiproc::pipe_oneway().unwrap();
    let child = Process::spawn(write_three, tx).unwrap();
    assert!(rx.poll(Duration::from_secs(30)));
    let got: Vec<String> = (0..3).map(|_| rx.get().unwrap()).collect();
    assert_eq!(got, ["one", "two", "three"]);
    child.join().unwrap();
    assert_eq!(rx.get(), Err(GetError::Disconnected));
}

fn put_text(name: String) {
    let tx = Sender::<String>::open(&name).unwrap();
    tx.put("hello".to_string()).unwrap();
}

#[test]
fn a_message_that_does_not_decode_comes_back_as_its_bytes() {
    let _watchdog = common::watchdog(LIMIT, "decode test");
    let name = common::unique_name("undecodable");
    let q = Queue::<String>::builder().name(&name).create().unwrap();
    // Another process puts a String; this one reads the queue as `bool`s.
    Process::spawn(put_text, name.clone())
        .unwrap()
        .join()
        .unwrap();
    let as_bool = Receiver::<bool>::open(&name).unwrap();
    let err = match as_bool.get() {
        Err(GetError::Decode(e)) => e,
        other => panic!("expected a decode error, got {other:?}"),
    };
    // postcard: the length, then the UTF-8 bytes.
    assert_eq!(err.bytes(), b"\x05hello");
    assert!(!err.reason().is_empty());
    // Nothing is lost: the bytes go back in and read as what they were.
    q.put_bytes(&err.into_bytes()).unwrap();
    assert_eq!(q.get().unwrap(), "hello");
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
#[serde(untagged)]
enum Field {
    Number(i64),
    Text(String),
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Sparse {
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<u32>,
    id: u32,
}

#[cfg(debug_assertions)]
#[test]
fn a_debug_put_refuses_what_postcard_cannot_read_back() {
    let q = Queue::new(4).unwrap();
    let v = Field::Text("x".into());
    match q.put(v.clone()) {
        Err(PutError::Encode(back, e)) => {
            assert_eq!(back, v);
            let msg = e.to_string();
            assert!(msg.contains("Field"), "{msg}");
            assert!(msg.contains("self-describing"), "{msg}");
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    let q = Queue::new(4).unwrap();
    let v = Sparse { note: None, id: 1 };
    match q.put(v.clone()) {
        Err(PutError::Encode(back, e)) => {
            assert_eq!(back, v);
            assert!(e.to_string().contains("Sparse"), "{e}");
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    // Nothing went in; a value postcard does carry still does.
    assert!(q.is_empty());
    q.put(Sparse {
        note: Some(3),
        id: 1,
    })
    .unwrap();
    assert_eq!(
        q.get().unwrap(),
        Sparse {
            note: Some(3),
            id: 1
        }
    );
}

#[cfg(feature = "msgpack")]
mod msgpack {
    use super::*;
    use multiproc::MessagePack;
    use serde_json::{Value, json};

    fn put_untagged(tx: Sender<(Field, Sparse, Value), MessagePack>) {
        tx.put((
            Field::Number(-7),
            Sparse { note: None, id: 1 },
            json!({"a": [1, 2.5, "three", null], "b": {"nested": true}}),
        ))
        .unwrap();
        tx.put((
            Field::Text("seven".into()),
            Sparse {
                note: Some(9),
                id: 2,
            },
            json!("just a string"),
        ))
        .unwrap();
    }

    #[test]
    fn a_self_describing_queue_carries_untagged_data_across_processes() {
        let _watchdog = common::watchdog(LIMIT, "msgpack test");
        let (tx, rx) = Queue::<(Field, Sparse, Value), MessagePack>::with_codec(4)
            .unwrap()
            .split()
            .unwrap();
        let child = Process::spawn(put_untagged, tx).unwrap();
        assert_eq!(
            rx.get().unwrap(),
            (
                Field::Number(-7),
                Sparse { note: None, id: 1 },
                json!({"a": [1, 2.5, "three", null], "b": {"nested": true}}),
            )
        );
        assert_eq!(
            rx.get().unwrap(),
            (
                Field::Text("seven".into()),
                Sparse {
                    note: Some(9),
                    id: 2
                },
                json!("just a string"),
            )
        );
        child.join().unwrap();
        assert_eq!(rx.get(), Err(GetError::Disconnected));
    }

    #[test]
    fn a_hostile_message_pack_message_is_an_error_with_its_bytes() {
        let q = Queue::<Vec<String>, MessagePack>::with_codec(4).unwrap();
        // An array header claiming 2^32-1 strings, then nothing.
        let bad = [0xdd, 0xff, 0xff, 0xff, 0xff];
        q.put_bytes(&bad).unwrap();
        match q.get() {
            Err(GetError::Decode(e)) => assert_eq!(e.bytes(), bad),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }
}

fn square_into(q: Queue<u64>) {
    let n = q.get().unwrap();
    q.put(n * n).unwrap();
}

fn sum_plain(q: Queue<[u32; 2], multiproc::Plain>) {
    let [a, b] = q.get().unwrap();
    q.put([a + b, 0]).unwrap();
}

#[test]
fn queue_builder_infers_its_message_type_and_codec_picks_another() {
    let _watchdog = common::watchdog(LIMIT, "builder test");
    // The message type comes from the `put`s, the codec is the default one.
    let q = Queue::builder().capacity(64).create().unwrap();
    q.put(12u64).unwrap();
    let child = Process::spawn(square_into, q.clone()).unwrap();
    child.join().unwrap();
    assert_eq!(q.get().unwrap(), 144);
    assert_eq!(q.capacity(), 64);

    // `.codec::<Plain>()` changes the builder's type; the other settings stay.
    let q = Queue::builder()
        .capacity(4)
        .codec::<multiproc::Plain>()
        .create()
        .unwrap();
    assert_eq!(q.capacity(), 4);
    q.put([20u32, 22]).unwrap();
    let child = Process::spawn(sum_plain, q.clone()).unwrap();
    child.join().unwrap();
    assert_eq!(q.get().unwrap(), [42, 0]);

    let jq = JoinableQueue::builder().capacity(2).create().unwrap();
    jq.put("task".to_string()).unwrap();
    assert_eq!(jq.get().unwrap(), "task");
    jq.task_done().unwrap();
}
