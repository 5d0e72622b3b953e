//! A four-stage pipeline of processes joined by bounded queues: a source makes access-log
//! lines, a parser turns them into records, a filter drops health checks and keeps what the
//! report needs, and a sink adds it all up.
//!
//! ```text
//! source --lines--> parse --records--> filter --hits--> sink
//! ```
//!
//! ```text
//! cargo run --release --example pipeline -- [messages] [queue capacity]
//! ```
//!
//! - **Backpressure.** Each queue holds at most `capacity` messages (default 64). A stage that
//!   outruns the next one finds the queue full and waits in `put`; each stage counts how often
//!   that happened.
//! - **Clean shutdown.** Every queue end lives in exactly one child (this process keeps none).
//!   When the source returns, its `Sender` goes away; the parser drains the queue, gets
//!   `GetError::Disconnected`, and returns, which drops *its* `Sender`; and so on to the sink.
//!   Nobody sends a sentinel and nobody is killed.
//!
//! The sink's totals are checked against the same work done in this process.

use std::process::ExitCode;
use std::time::Instant;

use multiproc::{Codec, GetError, Process, Receiver, Sender, TryPutError, channel};
use serde::{Deserialize, Serialize};

/// A parsed access-log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Request {
    method: String,
    path: String,
    status: u16,
    bytes: u32,
}

/// What the report needs of a request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Hit {
    /// 2 for 2xx, 4 for 4xx, ...
    class: u8,
    post: bool,
    bytes: u32,
}

/// The sink's result.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Totals {
    hits: u64,
    by_class: [u64; 6],
    posts: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, hit: Hit) {
        self.hits += 1;
        self.by_class[usize::from(hit.class).min(5)] += 1;
        self.posts += u64::from(hit.post);
        self.bytes += u64::from(hit.bytes);
    }
}

/// What each stage reports when its input ends.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stats {
    received: u64,
    sent: u64,
    /// Puts that found the next queue full and had to wait: the backpressure felt here.
    waited: u64,
}

// The work of each stage, as plain functions: the stages call them, and so does the check.

/// Access-log line number `i`: deterministic, varied.
fn make_line(i: u64) -> String {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29;
    let method = if h % 5 == 0 { "POST" } else { "GET" };
    let status = match h % 20 {
        0 => 500,
        1..=3 => 404,
        4 => 301,
        _ => 200,
    };
    let bytes = h % 20_000;
    if h % 9 == 0 {
        "GET /health 200 2".to_owned()
    } else {
        format!("{method} /items/{} {status} {bytes}", h % 1000)
    }
}

fn parse_line(line: &str) -> Option<Request> {
    let mut parts = line.split(' ');
    let req = Request {
        method: parts.next()?.to_owned(),
        path: parts.next()?.to_owned(),
        status: parts.next()?.parse().ok()?,
        bytes: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(req)
}

fn to_hit(req: &Request) -> Option<Hit> {
    (req.path != "/health").then(|| Hit {
        class: (req.status / 100) as u8,
        post: req.method == "POST",
        bytes: req.bytes,
    })
}

/// Puts `value`; if the queue is full, notes it in `stats.waited` and waits for room.
fn put_waiting<T, C: Codec<T>>(tx: &Sender<T, C>, value: T, stats: &mut Stats) {
    let sent = match tx.try_put(value) {
        Err(TryPutError::Full(value)) => {
            stats.waited += 1;
            tx.put(value).map_err(TryPutError::from)
        }
        other => other,
    };
    if let Err(e) = sent {
        panic!("the next stage is gone: {e}");
    }
    stats.sent += 1;
}

/// Takes the next message, or `None` once every upstream sender is gone and the queue is
/// drained.
fn next<T, C: Codec<T>>(rx: &Receiver<T, C>, stats: &mut Stats) -> Option<T> {
    match rx.get() {
        Ok(v) => {
            stats.received += 1;
            Some(v)
        }
        Err(GetError::Disconnected) => None,
        Err(e) => panic!("bad message from upstream: {e}"),
    }
}

// The stages. Each is a `fn` item run in its own spawned process; its queue ends come in the
// argument, and go away when it returns.

fn source((tx, n): (Sender<String>, u64)) -> Stats {
    let mut stats = Stats::default();
    for i in 0..n {
        put_waiting(&tx, make_line(i), &mut stats);
    }
    stats
}

fn parse((rx, tx): (Receiver<String>, Sender<Request>)) -> Stats {
    let mut stats = Stats::default();
    while let Some(line) = next(&rx, &mut stats) {
        let req = parse_line(&line).unwrap_or_else(|| panic!("malformed line {line:?}"));
        put_waiting(&tx, req, &mut stats);
    }
    stats
}

fn filter((rx, tx): (Receiver<Request>, Sender<Hit>)) -> Stats {
    let mut stats = Stats::default();
    while let Some(req) = next(&rx, &mut stats) {
        if let Some(hit) = to_hit(&req) {
            put_waiting(&tx, hit, &mut stats);
        }
    }
    stats
}

fn sink(rx: Receiver<Hit>) -> (Stats, Totals) {
    let mut stats = Stats::default();
    let mut totals = Totals::default();
    while let Some(hit) = next(&rx, &mut stats) {
        totals.add(hit);
    }
    (stats, totals)
}

fn run(n: u64, capacity: usize) -> Result<bool, Box<dyn std::error::Error>> {
    let (lines_tx, lines_rx) = channel::<String>(capacity)?;
    let (records_tx, records_rx) = channel::<Request>(capacity)?;
    let (hits_tx, hits_rx) = channel::<Hit>(capacity)?;

    let start = Instant::now();
    // Downstream first, so that every stage is listening when the source starts.
    let sink = Process::builder().name("sink").spawn(sink, hits_rx)?;
    let filter = Process::builder()
        .name("filter")
        .spawn(filter, (records_rx, hits_tx))?;
    let parse = Process::builder()
        .name("parse")
        .spawn(parse, (lines_rx, records_tx))?;
    let source = Process::builder()
        .name("source")
        .spawn(source, (lines_tx, n))?;

    // The stages end in order as the disconnection travels down.
    let source = source.join()?;
    let parse = parse.join()?;
    let filter = filter.join()?;
    let (sink, totals) = sink.join()?;
    let took = start.elapsed();

    println!("{n} messages through 4 processes, queues of {capacity} messages");
    println!(
        "  {:<8} {:>10} {:>10} {:>16}",
        "stage", "received", "sent", "waited for room"
    );
    let dash = |v: u64, show: bool| if show { v.to_string() } else { "-".into() };
    for (name, s, has_in, has_out) in [
        ("source", &source, false, true),
        ("parse", &parse, true, true),
        ("filter", &filter, true, true),
        ("sink", &sink, true, false),
    ] {
        println!(
            "  {name:<8} {:>10} {:>10} {:>16}",
            dash(s.received, has_in),
            dash(s.sent, has_out),
            dash(s.waited, has_out),
        );
    }
    let secs = took.as_secs_f64();
    println!(
        "  {:.3} s: {:.0} messages/s into the pipeline, {:.0} queue transfers/s in all",
        secs,
        n as f64 / secs,
        (source.sent + parse.sent + filter.sent) as f64 / secs,
    );
    let [_, _, ok, redirect, client, server] = totals.by_class;
    println!(
        "  sink: {} hits ({ok} 2xx, {redirect} 3xx, {client} 4xx, {server} 5xx), {} POSTs, {:.2} GB served",
        totals.hits,
        totals.posts,
        totals.bytes as f64 / 1e9,
    );

    // The same work in this process.
    let mut expected = Totals::default();
    for i in 0..n {
        let req = parse_line(&make_line(i)).expect("well-formed line");
        if let Some(hit) = to_hit(&req) {
            expected.add(hit);
        }
    }
    let flow_ok = source.sent == n
        && parse.received == n
        && parse.sent == n
        && filter.received == n
        && filter.sent == expected.hits
        && sink.received == expected.hits;
    let ok = flow_ok && totals == expected;
    println!(
        "  {}",
        if ok {
            "every message arrived once; totals match a single-process run"
        } else {
            "MISMATCH with a single-process run"
        }
    );
    Ok(ok)
}

fn main() -> ExitCode {
    // A spawned stage never gets here: the start-up hook runs its function before `main`.
    // This call documents that, and does nothing.
    multiproc::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let capacity: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    match run(n, capacity.max(1)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
