//! One measurement of one mechanism: fork the other process(es), warm up, time exactly `n`
//! units (round trips or messages), check every message, and report nanoseconds per unit.
//!
//! Start-up protocol: a child first sends a hello on its channel (for a ring inherited across
//! `fork`, that registers the child as a sender; `attach` registers a receiver), then reports
//! ready. The parent then drops its copies of the children's ends, so a child that dies shows
//! up as EOF or `Disconnected` instead of a hang, and a child that fails says why.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::check::{Check, Maker, SEQ_MASK, Verifier};
use crate::mech::{Closed, End, Mech, Rx, Tx};
use crate::sys::{Line, Mapping, Placement, Shm, Start, Team, fail_with, pin_to, timed_out};

/// Untimed messages before the clock starts, for messages up to 64 KiB.
pub const WARM: u64 = 200;

/// Untimed messages for messages of `size` bytes. Large messages go once around every ring,
/// so the timed ones find its pages mapped and touched, in every mechanism alike; for small
/// ones the first lap's page faults are lost in a measurement of millions of messages.
pub fn warm(size: usize) -> u64 {
    if size <= 65_536 {
        WARM
    } else {
        (crate::mech::ring_bytes(size) / size) as u64 + 4
    }
}

/// The hello's sequence number.
const HELLO: u64 = SEQ_MASK;
/// The sequence number that tells a child to stop.
const STOP: u64 = SEQ_MASK - 1;

/// What one measurement found.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Nanoseconds per unit in the timed region.
    pub ns_per_unit: f64,
    /// Wall time of the whole measurement per unit, start-up and pauses included (for sizing
    /// the next one).
    pub wall_per_unit: f64,
    /// Messages received and checked.
    pub verified: u64,
    /// Time this process was ready to run but waited for its CPU during the timed part
    /// (`/proc/thread-self/schedstat`): CPU time other load took from the measurement.
    pub waited_ns: f64,
}

/// Nanoseconds this thread has spent runnable but waiting for a CPU.
pub fn run_delay_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn send(tx: &mut dyn Tx, maker: &Maker, id: u8, seq: u64) -> Result<(), String> {
    maker.stamp(tx.buf(), id, seq);
    tx.send()
}

/// `n` round trips of an 8-byte message between this process and a child that echoes it.
/// With `pause`, the parent sleeps that long before each round trip (the child has gone to
/// sleep waiting) and only the round trips are timed.
pub fn round_trips(
    mech: Mech,
    n: u64,
    pause: Option<Duration>,
    placement: Placement,
    check: Check,
) -> Result<Sample, String> {
    let started = Instant::now();
    let (mine, theirs) = mech.duplex()?;
    let team = Team::spawn(1, placement, |_, start| {
        drop(mine.tx.replace(Box::new(crate::mech::Closed)));
        drop(mine.rx.replace(Box::new(crate::mech::Closed)));
        let End { tx, rx } = &theirs;
        let (mut tx, mut rx) = (tx.borrow_mut(), rx.borrow_mut());
        let maker = Maker::new(tx.buf(), check);
        let verifier = Verifier::new(8, 2, check);
        let (tx, rx) = (&mut **tx, &mut **rx);
        rx.attach()?;
        tx.attach()?;
        send(tx, &maker, 1, HELLO)?;
        start.ready_and_wait()?;
        let delay0 = run_delay_ns();
        let mut expect = 0;
        let r = (|| {
            loop {
                let msg = rx.recv()?;
                let (id, seq) = verifier.inspect(msg)?;
                if id != 0 {
                    return Err(format!("echo child: message from {id}, not the parent"));
                }
                if seq == STOP {
                    return Ok(());
                }
                if seq != expect {
                    return Err(format!(
                        "echo child: message {seq} arrived where {expect} was expected"
                    ));
                }
                expect += 1;
                send(tx, &maker, 1, seq)?;
            }
        })();
        if r.is_err() {
            tx.abort();
            rx.abort();
        }
        r?;
        start.report_waited(run_delay_ns().saturating_sub(delay0));
        if expect != WARM + n {
            return Err(format!(
                "echo child: {expect} messages arrived, {} were sent",
                WARM + n
            ));
        }
        Ok(())
    });
    let mut team = team?;
    let ready = team.wait_ready();
    drop(theirs);
    if let Err(e) = ready {
        return Err(fail_with(team, e));
    }
    let End { tx, rx } = mine;
    let (mut tx, mut rx) = (tx.into_inner(), rx.into_inner());
    let maker = Maker::new(tx.buf(), check);
    let verifier = Verifier::new(8, 2, check);
    let mut parent = || -> Result<(Duration, u64), String> {
        let (id, seq) = verifier.inspect(rx.recv()?)?;
        if (id, seq) != (1, HELLO) {
            return Err("the echo child's hello did not come first".into());
        }
        team.go();
        let mut exchange = |c: u64| -> Result<(), String> {
            send(&mut *tx, &maker, 0, c)?;
            let got = verifier.inspect(rx.recv()?)?;
            if got != (1, c) {
                return Err(format!("round trip {c}: the echo was {got:?}"));
            }
            Ok(())
        };
        for c in 0..WARM {
            exchange(c)?;
        }
        let delay0 = run_delay_ns();
        let elapsed = match pause {
            None => {
                let t = Instant::now();
                for c in WARM..WARM + n {
                    exchange(c)?;
                }
                t.elapsed()
            }
            Some(pause) => {
                let mut total = Duration::ZERO;
                for c in WARM..WARM + n {
                    std::thread::sleep(pause);
                    let t = Instant::now();
                    exchange(c)?;
                    total += t.elapsed();
                }
                total
            }
        };
        let waited = run_delay_ns().saturating_sub(delay0);
        send(&mut *tx, &maker, 0, STOP)?;
        Ok((elapsed, waited))
    };
    let (elapsed, waited) = match parent() {
        Ok(e) => e,
        Err(e) => {
            tx.abort();
            rx.abort();
            return Err(fail_with(team, e));
        }
    };
    let child_waited = team.join()?;
    Ok(Sample {
        ns_per_unit: elapsed.as_nanos() as f64 / n as f64,
        wall_per_unit: started.elapsed().as_nanos() as f64 / n as f64,
        verified: 2 * (WARM + n) + 2,
        waited_ns: waited.max(child_waited) as f64,
    })
}

/// `producers` children send `total` messages of `size` bytes between them (after the
/// warm-up) on one channel; this process receives and checks them all. Returns the time to
/// receive the `total` timed messages.
pub fn one_way(
    mech: Mech,
    size: usize,
    producers: usize,
    total: u64,
    placement: Placement,
    check: Check,
) -> Result<Sample, String> {
    let started = Instant::now();
    let warm = warm(size);
    let share =
        |i: usize| total / producers as u64 + u64::from((i as u64) < total % producers as u64);
    let crate::mech::Channel { tx, rx } = mech.channel(size)?;
    let hello_count = if tx.borrow().needs_hello() {
        producers
    } else {
        0
    };
    let team = Team::spawn(producers, placement, |i, start| {
        drop(rx.replace(Box::new(crate::mech::Closed)));
        let mut tx = tx.borrow_mut();
        let tx = &mut **tx;
        let maker = Maker::new(tx.buf(), check);
        tx.attach()?;
        if tx.needs_hello() {
            send(tx, &maker, i as u8, HELLO)?;
            tx.flush()?;
        }
        start.ready_and_wait()?;
        let delay0 = run_delay_ns();
        let r = (|| {
            for seq in 0..warm + share(i) {
                send(tx, &maker, i as u8, seq)?;
            }
            tx.flush()
        })();
        // Producers sharing a CPU wait for each other by design: only a lone producer's wait
        // is time other load took.
        if producers == 1 {
            start.report_waited(run_delay_ns().saturating_sub(delay0));
        }
        if r.is_err() {
            tx.abort();
        }
        r
    });
    let mut team = team?;
    let ready = team.wait_ready();
    drop(tx);
    if let Err(e) = ready {
        return Err(fail_with(team, e));
    }
    let mut rx = rx.into_inner();
    let mut verifier = Verifier::new(size, producers, check);
    let parent = |rx: &mut dyn Rx, verifier: &mut Verifier| -> Result<(Duration, u64), String> {
        let mut hellos = vec![false; producers];
        for _ in 0..hello_count {
            let (id, seq) = verifier.inspect(rx.recv()?)?;
            if seq != HELLO || std::mem::replace(&mut hellos[id], true) {
                return Err("expected one hello from every producer first".into());
            }
        }
        team.go();
        for _ in 0..warm * producers as u64 {
            verifier.take(rx.recv()?)?;
        }
        let delay0 = run_delay_ns();
        let t = Instant::now();
        for _ in 0..total {
            verifier.take(rx.recv()?)?;
        }
        let elapsed = t.elapsed();
        let waited = run_delay_ns().saturating_sub(delay0);
        verifier.finish(|i| warm + share(i))?;
        Ok((elapsed, waited))
    };
    let (elapsed, waited) = match parent(&mut *rx, &mut verifier) {
        Ok(e) => e,
        Err(e) => {
            rx.abort();
            return Err(fail_with(team, e));
        }
    };
    let child_waited = team.join()?;
    Ok(Sample {
        ns_per_unit: elapsed.as_nanos() as f64 / total as f64,
        wall_per_unit: started.elapsed().as_nanos() as f64 / total as f64,
        verified: verifier.verified,
        waited_ns: waited.max(child_waited) as f64,
    })
}

/// When one process's timed part started and ended, and how long it waited for its CPU
/// meanwhile; written by the process, read by the parent after it exited.
#[derive(Default)]
pub struct Span {
    start_ns: Line<AtomicU64>,
    end_ns: Line<AtomicU64>,
    waited_ns: Line<AtomicU64>,
}

impl Span {
    /// Records a timed part from `start_ns` to `end_ns` ([`mono_ns`]) and the wait for the CPU.
    pub fn record(&self, start_ns: u64, end_ns: u64, waited_ns: u64) {
        self.start_ns.store(start_ns, Ordering::Relaxed);
        self.waited_ns.store(waited_ns, Ordering::Relaxed);
        self.end_ns.store(end_ns.max(start_ns), Ordering::Release);
    }
}

/// The nanoseconds from the first start to the last end of `spans` (whose processes have all
/// exited), and the most any of them waited for its CPU.
pub fn region(spans: &[Span]) -> (u64, u64) {
    let start = spans
        .iter()
        .map(|s| s.start_ns.load(Ordering::Acquire))
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.end_ns.load(Ordering::Acquire))
        .max()
        .unwrap_or(start);
    let waited = spans
        .iter()
        .map(|s| s.waited_ns.load(Ordering::Acquire))
        .max()
        .unwrap_or(0);
    (end.saturating_sub(start), waited)
}

/// The most pairs [`pairs`] runs at once.
pub const MAX_PAIRS: usize = 16;

/// Untimed round trips per pair when `pairs` pairs run at once: as many as a lone round trip
/// has in all, shared out (pairs that take turns on a CPU warm up slowly), at least 16 each.
pub fn pair_warm(pairs: usize) -> u64 {
    (WARM / pairs.max(1) as u64).max(16)
}

/// Per pair: how many of its two processes registered their receiving ends.
#[derive(Default)]
struct Attached(Line<AtomicU32>);

impl Attached {
    /// Counts this process in and waits until both of the pair are: only then may either
    /// send, or a ring's receiver would find a message when it registers.
    fn both(&self) -> Result<(), String> {
        self.0.fetch_add(1, Ordering::AcqRel);
        let since = Instant::now();
        let mut spins = 0u32;
        while self.0.load(Ordering::Acquire) < 2 {
            // Other pairs may share this core: spin a little, then let them run.
            if spins < 1000 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
                if timed_out() || since.elapsed() > Duration::from_secs(60) {
                    return Err("the other process of the pair never attached".into());
                }
            }
        }
        Ok(())
    }
}

/// `pairs` pairs of processes make `n` round trips of an 8-byte message each, all at once:
/// every pinger on the placement's first CPU, every ponger on its second (so one pair is the
/// awake latency case, with a pinging child in place of the parent). Each pair warms up before
/// it reports ready; the pingers then time their round trips. The figure is the time from the
/// first pinger's start to the last one's end divided by `n`: the mean round trip of one pair
/// while all run.
pub fn pairs(
    mech: Mech,
    pairs: usize,
    n: u64,
    placement: Placement,
    check: Check,
) -> Result<Sample, String> {
    if !(1..=MAX_PAIRS).contains(&pairs) {
        return Err(format!("from 1 to {MAX_PAIRS} pairs, not {pairs}"));
    }
    let started = Instant::now();
    let n = n.max(1);
    let warm = pair_warm(pairs);
    let spans = Shm::new(<[Span; MAX_PAIRS]>::default());
    let attached = Shm::new(<[Attached; MAX_PAIRS]>::default());
    let links = (0..pairs)
        .map(|_| mech.duplex())
        .collect::<Result<Vec<(End, End)>, String>>()?;
    // Child 2k pings and child 2k + 1 echoes, for pair k.
    let team = Team::spawn(2 * pairs, placement, |i, start| {
        let (pair, pinger) = (i / 2, i % 2 == 0);
        if pinger && let Some(cpu) = placement.parent {
            pin_to(cpu)?;
        }
        // Let go of every end but our own, so a peer that dies shows up as EOF or a disconnect.
        for (k, (a, b)) in links.iter().enumerate() {
            for (end, ping_side) in [(a, true), (b, false)] {
                if (k, ping_side) != (pair, pinger) {
                    drop(end.tx.replace(Box::new(Closed)));
                    drop(end.rx.replace(Box::new(Closed)));
                }
            }
        }
        let End { tx, rx } = if pinger {
            &links[pair].0
        } else {
            &links[pair].1
        };
        let (mut tx, mut rx) = (tx.borrow_mut(), rx.borrow_mut());
        let maker = Maker::new(tx.buf(), check);
        let verifier = Verifier::new(8, 2, check);
        let (tx, rx) = (&mut **tx, &mut **rx);
        let (me, peer): (u8, usize) = if pinger { (0, 1) } else { (1, 0) };
        let r = (|| {
            rx.attach()?;
            tx.attach()?;
            attached[pair].both()?;
            send(tx, &maker, me, HELLO)?;
            if verifier.inspect(rx.recv()?)? != (peer, HELLO) {
                return Err("the other process's hello did not come first".into());
            }
            if pinger {
                ping(
                    tx,
                    rx,
                    &maker,
                    &verifier,
                    warm..warm + n,
                    start,
                    &spans[pair],
                    pairs,
                )
            } else {
                pong(tx, rx, &maker, &verifier, warm..warm + n, start, pairs)
            }
        })();
        if r.is_err() {
            tx.abort();
            rx.abort();
        }
        r
    });
    let mut team = team?;
    let ready = team.wait_ready();
    drop(links);
    if let Err(e) = ready {
        return Err(fail_with(team, e));
    }
    team.go();
    let pair_waited = team.join()?;
    let (elapsed, _) = region(&spans[..pairs]);
    Ok(Sample {
        ns_per_unit: elapsed as f64 / n as f64,
        wall_per_unit: started.elapsed().as_nanos() as f64 / n as f64,
        // Per pair: the two hellos, the warm-up and timed messages both ways, and the stop.
        verified: pairs as u64 * (2 * (warm + n) + 3),
        // Several pairs share each CPU by design; only a lone pair's wait is other load's.
        waited_ns: if pairs == 1 { pair_waited as f64 } else { 0.0 },
    })
}

/// A pinger of [`pairs`]: round trips up to `timed.start` to warm up, report ready, time the
/// round trips of `timed`, send the stop.
#[allow(clippy::too_many_arguments)]
fn ping(
    tx: &mut dyn Tx,
    rx: &mut dyn Rx,
    maker: &Maker,
    verifier: &Verifier,
    timed: std::ops::Range<u64>,
    start: &Start<'_>,
    span: &Span,
    pairs: usize,
) -> Result<(), String> {
    let mut exchange = |c: u64| -> Result<(), String> {
        send(tx, maker, 0, c)?;
        let got = verifier.inspect(rx.recv()?)?;
        if got != (1, c) {
            return Err(format!("round trip {c}: the echo was {got:?}"));
        }
        Ok(())
    };
    for c in 0..timed.start {
        exchange(c)?;
    }
    start.ready_and_wait()?;
    let delay0 = run_delay_ns();
    let t0 = mono_ns();
    for c in timed {
        exchange(c)?;
    }
    let t1 = mono_ns();
    let waited = run_delay_ns().saturating_sub(delay0);
    span.record(t0, t1, waited);
    if pairs == 1 {
        start.report_waited(waited);
    }
    send(tx, maker, 0, STOP)
}

/// A ponger of [`pairs`]: echo the warm-up (the messages before `timed.start`), report ready,
/// echo until the stop, which must follow the last of `timed`.
fn pong(
    tx: &mut dyn Tx,
    rx: &mut dyn Rx,
    maker: &Maker,
    verifier: &Verifier,
    timed: std::ops::Range<u64>,
    start: &Start<'_>,
    pairs: usize,
) -> Result<(), String> {
    let mut expect = 0;
    let mut delay0 = None;
    loop {
        if expect == timed.start && delay0.is_none() {
            start.ready_and_wait()?;
            delay0 = Some(run_delay_ns());
        }
        let (id, seq) = verifier.inspect(rx.recv()?)?;
        if id != 0 {
            return Err(format!("ponger: message from {id}, not its pinger"));
        }
        if seq == STOP {
            break;
        }
        if seq != expect {
            return Err(format!(
                "ponger: message {seq} arrived where {expect} was expected"
            ));
        }
        expect += 1;
        send(tx, maker, 1, seq)?;
    }
    if let (1, Some(d)) = (pairs, delay0) {
        start.report_waited(run_delay_ns().saturating_sub(d));
    }
    if expect != timed.end {
        return Err(format!(
            "ponger: {expect} messages arrived, {} were sent",
            timed.end
        ));
    }
    Ok(())
}

/// Words in shared memory, zeroed, for children to fill.
struct Words(Mapping);

impl Words {
    fn new(words: usize) -> Self {
        Self(Mapping::new((words.max(1) * 8).next_multiple_of(4096)))
    }

    fn get(&self, i: usize) -> &AtomicU64 {
        assert!(i * 8 < self.0.len());
        // SAFETY: in bounds (asserted), 8-aligned in a page-aligned zeroed shared mapping
        // that lives as long as `self`; zero is a valid AtomicU64.
        unsafe { self.0.base().add(i * 8).cast::<AtomicU64>().as_ref() }
    }
}

/// Per consumer: messages taken and the time it took the last one.
#[derive(Default)]
struct Tally {
    count: Line<AtomicU64>,
    end_ns: Line<AtomicU64>,
    waited_ns: Line<AtomicU64>,
}

/// One producer child sends `total` 64-byte messages into one channel; `consumers` children
/// take them. Each consumer checks every message (length, checksum, increasing order) and
/// marks it in a shared bitmap, so a message lost or taken twice fails the run. Returns the
/// time from the start until the last consumer took its last message.
pub fn fan_out(
    mech: Mech,
    consumers: usize,
    total: u64,
    placement: Placement,
    check: Check,
) -> Result<Sample, String> {
    const SIZE: usize = 64;
    let started = Instant::now();
    let crate::mech::Channel { tx, rx } = mech.channel(SIZE)?;
    let bitmap = Words::new(total.div_ceil(64) as usize);
    let tallies = Shm::new(<[Tally; 8]>::default());
    if consumers > tallies.len() {
        return Err(format!("at most {} consumers", tallies.len()));
    }
    // The consumers attach first, so none can take the producer's hello for a message of
    // the run; they alternate between the two CPUs, the first beside the (idle) parent.
    let team = Team::spawn(consumers, placement, |i, start| {
        if i % 2 == 0 {
            if let Some(cpu) = placement.parent {
                crate::sys::pin_to(cpu)?;
            }
        }
        // Only the producer may hold a sending end, or a dead producer would go unnoticed.
        drop(tx.replace(Box::new(crate::mech::Closed)));
        let mut rx = rx.borrow_mut();
        let rx = &mut **rx;
        let verifier = Verifier::new(SIZE, 1, check);
        rx.attach()?;
        start.ready_and_wait()?;
        let delay0 = run_delay_ns();
        let mut last = None;
        let mut count = 0u64;
        loop {
            let (_, seq) = verifier.inspect(rx.recv()?)?;
            if seq == HELLO {
                continue;
            }
            if seq == STOP {
                break;
            }
            if seq >= total || last.is_some_and(|l| seq <= l) {
                return Err(format!("consumer {i}: message {seq} after {last:?}"));
            }
            last = Some(seq);
            let bit = 1u64 << (seq % 64);
            if bitmap
                .get((seq / 64) as usize)
                .fetch_or(bit, Ordering::Relaxed)
                & bit
                != 0
            {
                return Err(format!("message {seq} was taken twice"));
            }
            count += 1;
        }
        let tally = &tallies[i];
        tally.end_ns.store(mono_ns(), Ordering::Relaxed);
        tally
            .waited_ns
            .store(run_delay_ns().saturating_sub(delay0), Ordering::Relaxed);
        tally.count.store(count, Ordering::Release);
        Ok(())
    });
    let mut team = team?;
    if let Err(e) = team.wait_ready() {
        return Err(fail_with(team, e));
    }
    let producer = Team::spawn(1, placement, |_, start| {
        // Only the consumers may hold a receiving end, or dead consumers would go unnoticed.
        drop(rx.replace(Box::new(crate::mech::Closed)));
        let mut tx = tx.borrow_mut();
        let tx = &mut **tx;
        let maker = Maker::new(tx.buf(), check);
        tx.attach()?;
        if tx.needs_hello() {
            send(tx, &maker, 0, HELLO)?;
        }
        start.ready_and_wait()?;
        let delay0 = run_delay_ns();
        let r = (|| {
            for seq in 0..total {
                send(tx, &maker, 0, seq)?;
            }
            for _ in 0..consumers {
                send(tx, &maker, 0, STOP)?;
            }
            Ok(())
        })();
        if consumers == 1 {
            start.report_waited(run_delay_ns().saturating_sub(delay0));
        }
        if r.is_err() {
            tx.abort();
        }
        r
    });
    let mut producer = match producer {
        Ok(p) => p,
        Err(e) => return Err(fail_with(team, e)),
    };
    let ready = producer.wait_ready();
    drop(tx);
    drop(rx);
    if let Err(e) = ready {
        drop(team);
        return Err(fail_with(producer, e));
    }
    let t0 = mono_ns();
    team.go();
    producer.go();
    let produced = producer.join();
    team.join()?;
    let producer_waited = produced?;
    let taken: u64 = tallies[..consumers]
        .iter()
        .map(|t| t.count.load(Ordering::Acquire))
        .sum();
    if taken != total {
        return Err(format!("{taken} messages were taken, {total} were sent"));
    }
    let end = tallies[..consumers]
        .iter()
        .map(|t| t.end_ns.load(Ordering::Acquire))
        .max()
        .unwrap_or(t0);
    // Consumers that share a CPU wait for each other by design. With one or two consumers the
    // first has its CPU to itself, so the least any consumer waited is time other load took;
    // with more, every consumer shares, and their waits say nothing about other load.
    let waited = if consumers <= 2 {
        tallies[..consumers]
            .iter()
            .map(|t| t.waited_ns.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    } else {
        0
    }
    .max(producer_waited);
    Ok(Sample {
        ns_per_unit: end.saturating_sub(t0) as f64 / total as f64,
        wall_per_unit: started.elapsed().as_nanos() as f64 / total as f64,
        verified: total,
        waited_ns: waited as f64,
    })
}

/// `n` copies of `size` bytes between two warm buffers on this core.
pub fn memcpy(size: usize, n: u64) -> Result<Sample, String> {
    let started = Instant::now();
    let src: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut dst = vec![0u8; size];
    for _ in 0..warm(size) {
        dst.copy_from_slice(black_box(&src));
    }
    let delay0 = run_delay_ns();
    let t = Instant::now();
    for _ in 0..n {
        black_box(&mut dst).copy_from_slice(black_box(&src));
    }
    let elapsed = t.elapsed();
    let waited = run_delay_ns().saturating_sub(delay0);
    if dst != src {
        return Err("memcpy: the copy differs".into());
    }
    Ok(Sample {
        ns_per_unit: elapsed.as_nanos() as f64 / n as f64,
        wall_per_unit: started.elapsed().as_nanos() as f64 / n as f64,
        verified: n,
        waited_ns: waited as f64,
    })
}
