//! A short guided tour of multiproc, and the README's demo: a `Pool` map, a three-process
//! pipeline over `Queue`s, and a `Value` counter shared by several processes. Each step prints
//! one line with its timing; every result is checked, so this doubles as a smoke test (a wrong
//! result panics, and the exit status says so).
//!
//! ```text
//! cargo run --release --example tour
//! ```
//!
//! Every child here is a spawned one: this same executable started again, running one `fn`
//! with its argument. Queue ends travel inside those arguments, and the shared value as its
//! `Handle`.

use std::time::{Duration, Instant};

use multiproc::{GetError, Plain, Pool, Process, Queue, Receiver, Sender, Value};

/// Items for the pool to map over.
const MAP_ITEMS: u64 = 100_000;
/// Collatz chains each map item walks.
const CHAINS_PER_ITEM: u64 = 16;
/// Numbers sent down the pipeline.
const PIPELINE_MESSAGES: u64 = 1_000_000;
/// Processes sharing the counter...
const COUNTER_PROCS: u64 = 4;
/// ...and the locked increments each makes.
const INCREMENTS: u64 = 100_000;

/// Steps the Collatz sequence from `n` takes to reach 1.
fn collatz_steps(mut n: u64) -> u32 {
    let mut steps = 0;
    while n > 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}

/// The pool's task: the longest Collatz chain among the `CHAINS_PER_ITEM` numbers of block
/// `item`. A few microseconds of arithmetic.
fn longest_chain(item: u64) -> u32 {
    let first = item * CHAINS_PER_ITEM + 1;
    (first..first + CHAINS_PER_ITEM)
        .map(collatz_steps)
        .max()
        .unwrap_or(0)
}

type Tx = Sender<u64, Plain>;
type Rx = Receiver<u64, Plain>;

/// Stage 1: puts `0..n`. Returning drops the sender, which tells stage 2 the stream ended.
fn produce((tx, n): (Tx, u64)) -> u64 {
    for i in 0..n {
        tx.put(i).expect("stage 2 is gone");
    }
    n
}

/// Stage 2: squares every number, until every stage-1 sender is gone.
fn square((rx, tx): (Rx, Tx)) -> u64 {
    let mut seen = 0;
    loop {
        match rx.get() {
            Ok(x) => tx.put(x * x).expect("stage 3 is gone"),
            Err(GetError::Disconnected) => return seen,
            Err(e) => panic!("stage 2: {e}"),
        }
        seen += 1;
    }
}

/// Stage 3: counts and sums what arrives.
fn aggregate(rx: Rx) -> (u64, u64) {
    let (mut count, mut sum) = (0, 0u64);
    loop {
        match rx.get() {
            Ok(x) => {
                count += 1;
                sum = sum.wrapping_add(x);
            }
            Err(GetError::Disconnected) => return (count, sum),
            Err(e) => panic!("stage 3: {e}"),
        }
    }
}

/// Adds 1 to the shared counter `n` times, each time under its lock. The counter is a clone
/// of the parent's: shared objects travel in a child's argument. A child killed while it held
/// the lock would leave the next locker an owner-died lock; the count stays a valid number, so
/// recovering it needs no repair.
fn bump((counter, n): (Value<u64>, u64)) {
    for _ in 0..n {
        *counter.lock().unwrap_or_else(|died| died.recover()) += 1;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn pool_map() -> Result<(), Box<dyn std::error::Error>> {
    let workers = multiproc::cpu_count();
    let pool = Pool::new(workers)?;
    let start = Instant::now();
    let results = pool.map(longest_chain, 0..MAP_ITEMS)?;
    let took = start.elapsed();
    pool.join();

    let start = Instant::now();
    let expected: Vec<u32> = (0..MAP_ITEMS).map(longest_chain).collect();
    let serial = start.elapsed();
    assert_eq!(
        results, expected,
        "Pool::map results differ from a serial map"
    );
    let speedup = serial.as_secs_f64() / took.as_secs_f64();
    println!(
        "Pool::map     {MAP_ITEMS} items on {workers} worker processes: {} (one process: {}, {speedup:.1}x)",
        ms(took),
        ms(serial),
    );
    Ok(())
}

fn pipeline() -> Result<(), Box<dyn std::error::Error>> {
    let n = PIPELINE_MESSAGES;
    let (tx1, rx1) = Queue::<u64, Plain>::with_codec(1024)?.split()?;
    let (tx2, rx2) = Queue::<u64, Plain>::with_codec(1024)?.split()?;
    let start = Instant::now();
    // Each queue end moves into its child; this process keeps none, so the end of the stream
    // travels down by disconnection alone.
    let stage3 = Process::spawn(aggregate, rx2)?;
    let stage2 = Process::spawn(square, (rx1, tx2))?;
    let stage1 = Process::spawn(produce, (tx1, n))?;
    let produced = stage1.join()?;
    let squared = stage2.join()?;
    let (count, sum) = stage3.join()?;
    let took = start.elapsed();

    // The sum of the squares of 0..n.
    let expected = (0..n).fold(0u64, |s, x| s.wrapping_add(x * x));
    assert_eq!((produced, squared, count), (n, n, n), "messages lost");
    assert_eq!(sum, expected, "wrong sum of squares");
    let rate = n as f64 / took.as_secs_f64() / 1e6;
    println!(
        "pipeline      {n} numbers through produce -> square -> sum, 3 processes: {} ({rate:.2} M msg/s per stage)",
        ms(took),
    );
    Ok(())
}

fn shared_value() -> Result<(), Box<dyn std::error::Error>> {
    let counter = Value::new(0u64)?;
    let start = Instant::now();
    let children = (0..COUNTER_PROCS)
        .map(|_| Process::spawn(bump, (counter.clone(), INCREMENTS)))
        .collect::<Result<Vec<_>, _>>()?;
    for child in children {
        child.join()?;
    }
    let took = start.elapsed();
    let total = counter.get();
    let expected = COUNTER_PROCS * INCREMENTS;
    assert_eq!(total, expected, "lost increments");
    println!(
        "Value<u64>    {COUNTER_PROCS} processes x {INCREMENTS} locked increments = {total} (exact): {}",
        ms(took),
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Spawned children never get here: they run their function from the start-up hook. This
    // call only says so (and does nothing in the parent).
    multiproc::init();
    let start = Instant::now();
    println!("multiproc tour, {} CPUs", multiproc::cpu_count());
    pool_map()?;
    pipeline()?;
    shared_value()?;
    println!("all checks passed in {}", ms(start.elapsed()));
    Ok(())
}
