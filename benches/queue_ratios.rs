//! Same-run ratios of `Queue`/`Pipe` against an OS pipe, a Unix socketpair, `memcpy` and
//! Python's `multiprocessing.Queue`, measured alternately round after round (robust to the
//! drift of a shared VM) and compared by their medians.
//!
//! ```text
//! cargo bench --bench queue_ratios      # 11 rounds; MULTIPROC_BENCH_ROUNDS overrides
//! ```
//!
//! Processes are pinned: this one to core 0, children to core 1 (all producers of the
//! many-producer run share core 1). Every message is checked on arrival. Python is measured
//! only if `python3` runs; its script pins itself the same way.

#![allow(unsafe_code)] // see benches/common

mod common;

#[path = "common/report.rs"]
mod report;
use report::{goal, median, spread};

use std::time::Duration;

use common::channels::{
    BusyPoll, PythonQueue, have_python, memcpy, one_way, one_way_bytes, os_pipe, pipe_duplex,
    python_queue, round_trips, socket_duplex, socketpair,
};
use common::{PARENT_CORE, pin_to};
use multiproc::{Connection, Plain, Queue};

const MIB: usize = 1 << 20;
const PAUSE: Duration = Duration::from_millis(2);

fn per(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n as f64
}

/// One contender: a measurement giving ns per unit (round trip, message, or MiB), and its
/// results over the rounds.
struct Contender {
    name: &'static str,
    run: Box<dyn Fn() -> f64>,
    ns: Vec<f64>,
}

/// Contenders measured side by side, in an order that rotates every round.
struct Group {
    what: &'static str,
    contenders: Vec<Contender>,
}

impl Group {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            contenders: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, run: impl Fn() -> f64 + 'static) -> Self {
        self.contenders.push(Contender {
            name,
            run: Box::new(run),
            ns: Vec::new(),
        });
        self
    }

    fn run_round(&mut self, round: usize) {
        let n = self.contenders.len();
        for k in 0..n {
            let c = &mut self.contenders[(k + round) % n];
            let ns = (c.run)();
            c.ns.push(ns);
        }
    }

    fn median(&self, name: &str) -> f64 {
        let c = self
            .contenders
            .iter()
            .find(|c| c.name == name)
            .expect("contender");
        median(c.ns.clone())
    }

    /// Prints each contender's median as time and rate; `unit` names what one ns-value is
    /// per ("round trip", "msg", "MiB").
    fn print(&self, unit: &str) {
        println!("{}:", self.what);
        for c in &self.contenders {
            let m = median(c.ns.clone());
            let (lo, hi) = spread(&c.ns);
            let rate = match unit {
                "MiB" => format!("{:>8.2} GiB/s", 1e9 / m / 1024.0),
                _ => format!("{:>8.3} M{unit}/s", 1e3 / m),
            };
            println!(
                "  {:<34} {:>12.1} ns/{unit}  {rate}   (min {lo:.1}, max {hi:.1})",
                c.name, m
            );
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks benches for their names
    }
    pin_to(PARENT_CORE);
    let rounds: usize = std::env::var("MULTIPROC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11)
        .max(1);

    const RT_OURS: u64 = 200_000;
    const RT_OS: u64 = 20_000;
    const RT_ASLEEP: u64 = 200;
    const SMALL_OURS: u64 = 2_000_000;
    const SMALL_OS: u64 = 200_000;
    const BIG_OURS: u64 = 400;
    const BIG_OS: u64 = 200;
    const BIG_MEMCPY: u64 = 1000;
    const MPSC: u64 = 1_000_000;
    const PY_RT: u64 = 2000;
    const PY_MSGS: u64 = 50_000;

    let mut awake = Group::new("round trip of 8 B, receiver awake (back to back)")
        .with("multiproc::Connection<u64, Plain>", || {
            let (a, b) = Connection::<u64, Plain>::pair().expect("pair");
            per(round_trips(a, b, RT_OURS, None), RT_OURS)
        })
        .with("multiproc::Connection, try_recv loop", || {
            let (a, b) = Connection::<u64, Plain>::pair().expect("pair");
            per(
                round_trips(BusyPoll(a), BusyPoll(b), RT_OURS, None),
                RT_OURS,
            )
        })
        .with("OS pipe pair", || {
            let (a, b) = pipe_duplex();
            per(round_trips(a, b, RT_OS, None), RT_OS)
        })
        .with("Unix socketpair", || {
            let (a, b) = socket_duplex();
            per(round_trips(a, b, RT_OS, None), RT_OS)
        });
    let mut asleep = Group::new("round trip of 8 B, receiver asleep (2 ms pause before each)")
        .with("multiproc::Connection<u64, Plain>", || {
            let (a, b) = Connection::<u64, Plain>::pair().expect("pair");
            per(round_trips(a, b, RT_ASLEEP, Some(PAUSE)), RT_ASLEEP)
        })
        .with("OS pipe pair", || {
            let (a, b) = pipe_duplex();
            per(round_trips(a, b, RT_ASLEEP, Some(PAUSE)), RT_ASLEEP)
        })
        .with("Unix socketpair", || {
            let (a, b) = socket_duplex();
            per(round_trips(a, b, RT_ASLEEP, Some(PAUSE)), RT_ASLEEP)
        });
    let mut small8 = Group::new("one way, 8 B messages, 1 producer")
        .with("multiproc::Queue<u64, Plain>", || {
            let (tx, rx) = Queue::<u64, Plain>::builder()
                .create()
                .expect("Queue")
                .split()
                .expect("split");
            per(one_way(tx, &rx, 1, SMALL_OURS), SMALL_OURS)
        })
        .with("OS pipe", || {
            let (r, w) = os_pipe();
            per(one_way::<u64, _, _>(w, &r, 1, SMALL_OS), SMALL_OS)
        });
    let mut small64 = Group::new("one way, 64 B messages, 1 producer")
        .with("multiproc::Queue<[u64; 8], Plain>", || {
            let (tx, rx) = Queue::<[u64; 8], Plain>::builder()
                .create()
                .expect("Queue")
                .split()
                .expect("split");
            per(one_way(tx, &rx, 1, SMALL_OURS), SMALL_OURS)
        })
        .with("OS pipe", || {
            let (r, w) = os_pipe();
            per(one_way::<[u64; 8], _, _>(w, &r, 1, SMALL_OS), SMALL_OS)
        });
    let mut big = Group::new("one way, 1 MiB messages")
        .with("multiproc::Queue put_bytes (4 MiB)", || {
            let (tx, rx) = Queue::<u8, Plain>::builder()
                .max_bytes(4 * MIB)
                .create()
                .expect("Queue")
                .split()
                .expect("split");
            per(one_way_bytes(tx, rx, MIB, BIG_OURS), BIG_OURS)
        })
        .with("Unix socketpair", || {
            let (a, b) = socketpair();
            per(one_way_bytes(a, b, MIB, BIG_OS), BIG_OS)
        })
        .with("memcpy 1 MiB (one core)", || {
            per(memcpy(MIB, BIG_MEMCPY), BIG_MEMCPY)
        });
    let mpsc_run = |producers: usize| {
        move || {
            let (tx, rx) = Queue::<[u64; 8], Plain>::builder()
                .create()
                .expect("Queue")
                .split()
                .expect("split");
            per(one_way(tx, &rx, producers, MPSC), MPSC)
        }
    };
    let mut mpsc = Group::new("N producers -> 1 consumer, 64 B messages (producers share core 1)")
        .with("multiproc::Queue, 1 producer", mpsc_run(1))
        .with("multiproc::Queue, 2 producers", mpsc_run(2))
        .with("multiproc::Queue, 4 producers", mpsc_run(4));

    let python = have_python();
    if !python {
        println!("python3 (with multiprocessing) not found: skipping multiprocessing.Queue");
    }
    let mut py: Vec<PythonQueue> = Vec::new();

    for round in 0..rounds {
        for g in [
            &mut awake,
            &mut asleep,
            &mut small8,
            &mut small64,
            &mut big,
            &mut mpsc,
        ] {
            g.run_round(round);
        }
        if python {
            py.push(python_queue(PY_RT, PY_MSGS));
        }
        eprint!("\rround {}/{rounds}", round + 1);
    }
    eprintln!();

    println!("medians of {rounds} alternating rounds (min, max over rounds in ns):");
    awake.print("round trip");
    asleep.print("round trip");
    small8.print("msg");
    small64.print("msg");
    big.print("MiB");
    mpsc.print("msg");
    let (py_rt, py_msg) = if python {
        let rt = median(py.iter().map(|p| p.round_trip_ns).collect());
        let msg = median(py.iter().map(|p| p.one_way_ns).collect());
        println!("Python {PY_RT} round trips / {PY_MSGS} msgs, multiprocessing.Queue, 8 B bytes:");
        println!(
            "  {:<34} {rt:>12.1} ns/round trip {:>8.3} Mround trip/s",
            "round trip (echo child)",
            1e3 / rt
        );
        println!(
            "  {:<34} {msg:>12.1} ns/msg  {:>8.3} Mmsg/s",
            "one way, 1 producer",
            1e3 / msg
        );
        (Some(rt), Some(msg))
    } else {
        (None, None)
    };

    println!("goals (ratios of medians):");
    const OURS_RT: &str = "multiproc::Connection<u64, Plain>";
    let rt = awake.median(OURS_RT);
    goal(
        "round trip awake: pipe time / ours",
        awake.median("OS pipe pair") / rt,
        true,
        60.0,
    );
    println!(
        "  {:<58} {:>8.2}x",
        "round trip awake: socketpair time / ours",
        awake.median("Unix socketpair") / rt
    );
    println!(
        "  {:<58} {:>8.2}x  (receiver busy-polls try_recv; not a goal)",
        "round trip awake: pipe time / ours with try_recv loop",
        awake.median("OS pipe pair") / awake.median("multiproc::Connection, try_recv loop")
    );
    let rt_sleep = asleep.median(OURS_RT);
    goal(
        "round trip asleep: ours / pipe time",
        rt_sleep / asleep.median("OS pipe pair"),
        false,
        1.05,
    );
    println!(
        "  {:<58} {:>8.2}x",
        "round trip asleep: ours / socketpair time",
        rt_sleep / asleep.median("Unix socketpair")
    );
    goal(
        "one way 8 B: ours msgs/s / pipe msgs/s",
        small8.median("OS pipe") / small8.median("multiproc::Queue<u64, Plain>"),
        true,
        10.0,
    );
    goal(
        "one way 64 B: ours msgs/s / pipe msgs/s",
        small64.median("OS pipe") / small64.median("multiproc::Queue<[u64; 8], Plain>"),
        true,
        10.0,
    );
    let ours_big = big.median("multiproc::Queue put_bytes (4 MiB)");
    goal(
        "one way 1 MiB: ours bytes/s / socketpair bytes/s",
        big.median("Unix socketpair") / ours_big,
        true,
        5.0,
    );
    goal(
        "one way 1 MiB: ours bytes/s / memcpy bytes/s",
        big.median("memcpy 1 MiB (one core)") / ours_big,
        true,
        0.6,
    );
    let one = mpsc.median("multiproc::Queue, 1 producer");
    for name in [
        "multiproc::Queue, 2 producers",
        "multiproc::Queue, 4 producers",
    ] {
        println!(
            "  {:<58} {:>8.2}x",
            format!("{name}: msgs/s vs 1 producer"),
            one / mpsc.median(name)
        );
    }
    if let (Some(py_rt), Some(py_msg)) = (py_rt, py_msg) {
        println!(
            "  {:<58} {:>8.2}x",
            "round trip: Python multiprocessing.Queue time / ours",
            py_rt / rt
        );
        println!(
            "  {:<58} {:>8.2}x",
            "one way 8 B: ours msgs/s / Python multiprocessing.Queue",
            py_msg / small8.median("multiproc::Queue<u64, Plain>")
        );
    }
}
