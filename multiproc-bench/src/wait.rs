//! `--bench wait`: what `multiproc::wait` over 64 objects adds to a round trip.
//!
//! Two processes pinned to different CPUs make round trips over a pipe (a `Connection<u64>`
//! each way). The echoing child receives each ping in one of two ways, alternating round by
//! round (the order flips every round): a plain blocking `recv` on the ping connection, or
//! `wait` over 64 objects (16 connections, 16 queue receivers, 16 events, 16 sentinels of
//! sleeping processes, the ping connection among them), which returns the ping connection
//! alone, then `recv`. Each ping carries the time it was sent; the child answers with how long
//! after that its `recv` (plain) or its `wait` (the other way) returned, on the monotonic
//! clock both CPUs share, which gives the acceptance figure: `wait` returns within 10 ms of the
//! object becoming ready.
//!
//! Two modes: awake (pings back to back: a plain get may still be spinning when the next one
//! comes) and asleep (a pause before every ping, so both ways sleep in the kernel first).

use std::time::{Duration, Instant};

use multiproc::{Connection, Event, Process, Queue, Receiver, Sender, Sentinel, Waitable, pipe};

use crate::sys::{Placement, pin_to};

/// Control values in a ping's top bits; the rest is the send time.
const TO_WAIT: u64 = 1 << 63;
const TO_PLAIN: u64 = 1 << 62;
const STOP: u64 = 1 << 61;
const TIME_MASK: u64 = (1 << 61) - 1;

/// Objects the waiting side waits on.
const OBJECTS: usize = 64;
/// The acceptance bound.
const BOUND: Duration = Duration::from_millis(10);

/// Nanoseconds on the monotonic clock.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How the child receives pings.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    Plain,
    Wait,
}

/// Per way: round-trip times and ready-to-return times of every ping, and per-round medians.
#[derive(Default)]
struct Samples {
    rtt_round_medians: Vec<f64>,
    ready_to_return: Vec<u64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The idle objects: none of them ever becomes ready while measured.
struct Idle {
    conns: Vec<(Connection<u64>, Connection<u64>)>,
    chans: Vec<(Sender<u64>, Receiver<u64>)>,
    events: Vec<Event>,
    procs: Vec<Process>,
    sentinels: Vec<Sentinel>,
    release: Event,
}

impl Idle {
    fn new() -> Result<Self, String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let release = Event::new().map_err(|x| e(&x))?;
        let mut procs = Vec::new();
        for _ in 0..16 {
            let r = release.clone();
            procs.push(
                Process::fork(move || {
                    r.wait_timeout(Duration::from_secs(600));
                })
                .map_err(|x| e(&x))?,
            );
        }
        let sentinels = procs.iter().map(Process::sentinel).collect();
        let mut conns = Vec::new();
        let mut chans = Vec::new();
        let mut events = Vec::new();
        for _ in 0..16 {
            conns.push(pipe::<u64>().map_err(|x| e(&x))?);
            chans.push(
                Queue::<u64>::builder()
                    .create()
                    .and_then(|q| q.split())
                    .map_err(|x| e(&x))?,
            );
            events.push(Event::new().map_err(|x| e(&x))?);
        }
        Ok(Self {
            conns,
            chans,
            events,
            procs,
            sentinels,
            release,
        })
    }

    /// The 64 objects, with `ping` at index 37 in place of one idle connection.
    fn objects<'a>(&'a self, ping: &'a Connection<u64>) -> Vec<&'a dyn Waitable> {
        let mut v: Vec<&dyn Waitable> = Vec::with_capacity(OBJECTS);
        for k in 0..16 {
            v.push(&self.conns[k].1);
            v.push(&self.chans[k].1);
            v.push(&self.events[k]);
            v.push(&self.sentinels[k]);
        }
        v[PING_INDEX] = ping;
        v
    }

    fn finish(self) {
        self.release.set();
        for p in self.procs {
            let _ = p.join();
        }
    }
}

/// Where the ping connection sits among the 64 (a connection slot, neither first nor last).
const PING_INDEX: usize = 4 * 9;

/// The echoing child: receives each ping the current way, answers with the ns from the ping's
/// send time to the return of `recv` (plain) or `wait`.
fn echo(conn: &Connection<u64>, idle: &Idle, cpu: Option<usize>) -> Result<(), String> {
    if let Some(cpu) = cpu {
        pin_to(cpu)?;
    }
    let objects = idle.objects(conn);
    let mut way = Way::Plain;
    loop {
        let (ping, returned) = match way {
            Way::Plain => {
                let p = conn.recv().map_err(|e| e.to_string())?;
                (p, mono_ns())
            }
            Way::Wait => {
                let ready = multiproc::wait(&objects, Some(Duration::from_secs(60)))
                    .map_err(|e| e.to_string())?;
                let returned = mono_ns();
                if ready != [PING_INDEX] {
                    return Err(format!("wait returned {ready:?}, not [{PING_INDEX}]"));
                }
                (conn.recv().map_err(|e| e.to_string())?, returned)
            }
        };
        if ping & STOP != 0 {
            return Ok(());
        }
        if ping & TO_WAIT != 0 {
            way = Way::Wait;
        } else if ping & TO_PLAIN != 0 {
            way = Way::Plain;
        }
        let took = returned.saturating_sub(ping & TIME_MASK);
        conn.send(took).map_err(|e| format!("{e:?}"))?;
    }
}

/// Runs the benchmark; returns the report text.
pub fn run(rounds: usize, quick: bool, placement: Placement) -> Result<String, String> {
    let idle = Idle::new()?;
    let (near, far) = pipe::<u64>().map_err(|e| e.to_string())?;
    let cpu = placement.child;
    let child = {
        let (far, idle) = (&far, &idle);
        Process::fork(move || echo(far, idle, cpu).is_ok()).map_err(|e| e.to_string())?
    };
    let mut out = String::new();
    let per_round = |asleep: bool| match (asleep, quick) {
        (false, false) => 2000,
        (false, true) => 300,
        (true, false) => 200,
        (true, true) => 40,
    };
    let result = (|| -> Result<(), String> {
        for asleep in [false, true] {
            let mut plain = Samples::default();
            let mut waited = Samples::default();
            for round in 0..rounds + 1 {
                let order = if round % 2 == 0 {
                    [Way::Plain, Way::Wait]
                } else {
                    [Way::Wait, Way::Plain]
                };
                for way in order {
                    // Switch the child's way (the switch ping is received the old way).
                    let switch = if way == Way::Wait { TO_WAIT } else { TO_PLAIN };
                    near.send(switch | mono_ns())
                        .map_err(|e| format!("{e:?}"))?;
                    near.recv().map_err(|e| e.to_string())?;
                    let mut rtts = Vec::with_capacity(per_round(asleep));
                    let mut ready = Vec::with_capacity(per_round(asleep));
                    for _ in 0..per_round(asleep) {
                        if asleep {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        let t0 = Instant::now();
                        near.send(mono_ns() & TIME_MASK)
                            .map_err(|e| format!("{e:?}"))?;
                        let took = near.recv().map_err(|e| e.to_string())?;
                        rtts.push(t0.elapsed().as_nanos() as f64);
                        ready.push(took);
                    }
                    if round == 0 {
                        continue; // warm-up
                    }
                    let s = if way == Way::Plain {
                        &mut plain
                    } else {
                        &mut waited
                    };
                    s.rtt_round_medians.push(median(&mut rtts));
                    s.ready_to_return.extend(ready);
                }
            }
            out += &report(asleep, &mut plain, &mut waited);
        }
        Ok(())
    })();
    let _ = near.send(STOP);
    let echoed = child.join().map_err(|e| e.to_string())?;
    idle.finish();
    result?;
    if !echoed {
        return Err("the echoing child failed".into());
    }
    Ok(out)
}

fn report(asleep: bool, plain: &mut Samples, waited: &mut Samples) -> String {
    let ratios: Vec<f64> = plain
        .rtt_round_medians
        .iter()
        .zip(&waited.rtt_round_medians)
        .map(|(p, w)| w / p)
        .collect();
    let added: Vec<f64> = plain
        .rtt_round_medians
        .iter()
        .zip(&waited.rtt_round_medians)
        .map(|(p, w)| w - p)
        .collect();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let us = |ns: f64| ns / 1e3;
    let (pl, ph) = range(&plain.rtt_round_medians);
    let (wl, wh) = range(&waited.rtt_round_medians);
    let (al, ah) = range(&added);
    let (rl, rh) = range(&ratios);
    let mut ready: Vec<f64> = waited.ready_to_return.iter().map(|&n| n as f64).collect();
    let worst = ready.iter().copied().fold(0.0, f64::max);
    let over = waited
        .ready_to_return
        .iter()
        .filter(|&&n| n > BOUND.as_nanos() as u64)
        .count();
    let mut plain_ready: Vec<f64> = plain.ready_to_return.iter().map(|&n| n as f64).collect();
    let plain_worst = plain_ready.iter().copied().fold(0.0, f64::max);
    let plain_median = median(&mut plain_ready);
    let ready_median = median(&mut ready);
    // Both sorted by `median`.
    let pct = |v: &[f64], p: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() - 1) as f64 * p).round() as usize]
        }
    };
    let plain_over = plain
        .ready_to_return
        .iter()
        .filter(|&&n| n > BOUND.as_nanos() as u64)
        .count();
    format!(
        "wait over {OBJECTS} objects, 1 ready, then recv; vs a plain recv ({})\n\
         \x20 round trip, median of {} round medians [range]:\n\
         \x20   plain recv      {:>9.1} us  [{:.1} .. {:.1}]\n\
         \x20   wait + recv     {:>9.1} us  [{:.1} .. {:.1}]\n\
         \x20   added by wait   {:>9.1} us  [{:.1} .. {:.1}]\n\
         \x20   ratio           {:>9.2}     [{:.2} .. {:.2}]\n\
         \x20 send to return (one way) over {} pings: median / 99% / 99.9% / max; count over {} ms:\n\
         \x20   plain recv      {:>9.1} us / {:.1} / {:.1} / {:.1} us; {}\n\
         \x20   wait            {:>9.1} us / {:.1} / {:.1} / {:.1} us; {}\n\n",
        if asleep {
            "receiver asleep: 2 ms pause before each ping"
        } else {
            "receiver awake: pings back to back"
        },
        plain.rtt_round_medians.len(),
        us(median(&mut plain.rtt_round_medians.clone())),
        us(pl),
        us(ph),
        us(median(&mut waited.rtt_round_medians.clone())),
        us(wl),
        us(wh),
        us(median(&mut added.clone())),
        us(al),
        us(ah),
        median(&mut ratios.clone()),
        rl,
        rh,
        ready.len(),
        BOUND.as_millis(),
        us(plain_median),
        us(pct(&plain_ready, 0.99)),
        us(pct(&plain_ready, 0.999)),
        us(plain_worst),
        plain_over,
        us(ready_median),
        us(pct(&ready, 0.99)),
        us(pct(&ready, 0.999)),
        us(worst),
        over,
    )
}
