//! The method: every group measures its contenders in rounds, the order rotating each round,
//! so ratios come from neighbouring measurements; a measurement that other load disturbed is
//! repeated (and flagged if it stays disturbed); medians, spreads and per-round ratios make
//! the report.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::check::Check;
use crate::inplace;
use crate::locks::LockMech;
use crate::mech::{self, Mech};
use crate::model::{Bench, Group, LatencyMode, LockCase, Row, Status};
use crate::python::{PyOutcome, Python};
use crate::run::{self, Sample};
use crate::sys::Placement;

/// How a run is done.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Recorded rounds per group.
    pub rounds: usize,
    /// The timed part of each measurement lasts about this long.
    pub target: Duration,
    /// How payloads are checked.
    pub check: Check,
    /// Where the processes run.
    pub placement: Placement,
    /// The pause before each round trip of the asleep case.
    pub pause: Duration,
    /// Attempts per measurement while other load disturbs it.
    pub attempts: u32,
    /// A measurement still running after this many seconds fails (its children are killed).
    pub timeout_s: u32,
}

/// Who is measured: one of ours (in Rust), one of Python's (through the companion), or a
/// mutex (in the lock groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// A mechanism measured in this process and its children.
    Rust(Mech),
    /// A Python mechanism: (id, label).
    Py(&'static str, &'static str),
    /// A process-shared mutex, measured in children of this process.
    Lock(LockMech),
}

impl Who {
    /// The stable id.
    pub fn id(self) -> &'static str {
        match self {
            Who::Rust(m) => m.id(),
            Who::Py(id, _) => id,
            Who::Lock(l) => l.id(),
        }
    }

    /// The readable name.
    pub fn label(self) -> &'static str {
        match self {
            Who::Rust(m) => m.label(),
            Who::Py(_, label) => label,
            Who::Lock(l) => l.label(),
        }
    }

    /// Whether `self` is a contender (a row) of `bench`'s groups: the mutexes in the lock
    /// groups, the channels of [`crate::mech::PAIRS`] (and a broken transport) in the pairs
    /// groups, every channel and Python mechanism in the others.
    pub fn applies(self, bench: Bench) -> bool {
        match (bench, self) {
            (Bench::Locks { .. }, w) => matches!(w, Who::Lock(_)),
            (Bench::Pairs { .. }, Who::Rust(m)) => {
                crate::mech::PAIRS.contains(&m) || matches!(m, Mech::Broken(_))
            }
            (Bench::Pairs { .. }, _) => false,
            (_, w) => !matches!(w, Who::Lock(_)),
        }
    }
}

/// The result of one attempt.
enum Outcome {
    Measured(Sample, Duration),
    NotApplicable(String),
    Failed(String),
}

/// The title and unit of a group.
pub fn describe(bench: Bench) -> (String, &'static str) {
    match bench {
        Bench::Latency { mode } => (
            format!(
                "round trip, 8 B, {}",
                match mode {
                    LatencyMode::Awake => "receiver awake (two cores)",
                    LatencyMode::Asleep => "receiver asleep (two cores, pause before each)",
                    LatencyMode::OneCore => "both processes on one core",
                }
            ),
            "round trip",
        ),
        Bench::Throughput { size } => (
            format!("one way, {} messages", crate::fmt_size(size)),
            "message",
        ),
        Bench::Producers { producers } => (
            format!("one way, 64 B, {producers} producer(s) into one consumer"),
            "message",
        ),
        Bench::Consumers { consumers } => (
            format!("one way, 64 B, one producer into {consumers} consumer(s)"),
            "message",
        ),
        Bench::Locks { case } => (
            format!(
                "lock + increment + unlock, {}",
                match case {
                    LockCase::Uncontended => "one process (uncontended)",
                    LockCase::TwoCores => "two processes contending on two cores",
                    LockCase::OneCore => "two processes contending on one core",
                }
            ),
            "lock+unlock",
        ),
        Bench::Pairs { pairs } => (
            format!(
                "round trip, 8 B, {pairs} pair(s) at once on two cores (time: one pair's round \
                 trip; rate: all pairs')"
            ),
            "round trip",
        ),
    }
}

fn measure(who: Who, bench: Bench, n: u64, s: &Settings, python: &mut Option<Python>) -> Outcome {
    let check = s.check;
    let result = match who {
        Who::Py(..) if matches!(bench, Bench::Locks { .. } | Bench::Pairs { .. }) => {
            return Outcome::NotApplicable("not measured for Python".into());
        }
        Who::Py(id, _) => {
            let Some(py) = python.as_mut() else {
                return Outcome::NotApplicable("python3 is not available".into());
            };
            return match py.measure(id, &bench, n, s.pause.as_micros() as u64, check.name()) {
                PyOutcome::Measured(m) => Outcome::Measured(
                    Sample {
                        ns_per_unit: m.ns_per_unit,
                        wall_per_unit: m.ns_per_unit,
                        verified: m.verified,
                        waited_ns: 0.0,
                    },
                    Duration::from_secs_f64(m.cpu_s.max(0.0)),
                ),
                PyOutcome::NotApplicable(why) => Outcome::NotApplicable(why),
                PyOutcome::Failed(why) => Outcome::Failed(why),
            };
        }
        Who::Rust(mech) => watched(s, || measure_rust(mech, bench, n, s)),
        Who::Lock(mech) => watched(s, || measure_lock(mech, bench, n, s)),
    };
    match result {
        Ok(sample) => Outcome::Measured(sample, Duration::ZERO),
        Err(e) => match e.strip_prefix(NA) {
            Some(why) => Outcome::NotApplicable(why.into()),
            None => Outcome::Failed(e),
        },
    }
}

/// Runs `f` under the watchdog: after `s.timeout_s` its children are killed and it fails.
fn watched(s: &Settings, f: impl FnOnce() -> Result<Sample, String>) -> Result<Sample, String> {
    crate::sys::arm_watchdog(s.timeout_s);
    let result = f();
    crate::sys::arm_watchdog(0);
    match result {
        Err(e) if crate::sys::timed_out() => Err(format!(
            "timed out after {} s (a message lost, or a lock never released?): {e}",
            s.timeout_s
        )),
        r => r,
    }
}

/// Marks an error that means "does not apply" rather than "failed".
const NA: &str = "not applicable: ";
const NA_CHANNEL: &str = "not applicable: not a channel";
const NA_BATCH: &str = "not applicable: batches messages one way";
const NA_IN_PLACE: &str = "not applicable: written in place, measured one way";
const NA_SPSC: &str = "not applicable: one producer and one consumer only";
const NA_LOCK: &str = "not applicable: a mutex, not a channel";
const NA_NOT_LOCK: &str = "not applicable: a channel, not a mutex";

fn measure_lock(mech: LockMech, bench: Bench, n: u64, s: &Settings) -> Result<Sample, String> {
    match bench {
        Bench::Locks { case } => crate::locks::measure(mech, case, n, s.placement),
        _ => Err(NA_LOCK.into()),
    }
}

fn measure_rust(mech: Mech, bench: Bench, n: u64, s: &Settings) -> Result<Sample, String> {
    let check = s.check;
    match bench {
        Bench::Latency { .. } if mech == Mech::Memcpy => Err(NA_CHANNEL.into()),
        Bench::Latency { .. } if matches!(mech, Mech::QueuePlainBatch | Mech::FloorBatch) => {
            Err(NA_BATCH.into())
        }
        Bench::Latency { .. } if mech::IN_PLACE.contains(&mech) => Err(NA_IN_PLACE.into()),
        Bench::Latency { mode } => {
            let (pause, placement) = match mode {
                LatencyMode::Awake => (None, s.placement),
                LatencyMode::Asleep => (Some(s.pause), s.placement),
                LatencyMode::OneCore => (None, s.placement.one_core()),
            };
            run::round_trips(mech, n, pause, placement, check)
        }
        Bench::Throughput { size } => {
            if mech == Mech::Memcpy {
                run::memcpy(size as usize, n)
            } else if let Some(why) = mech.unsupported(size as usize) {
                Err(format!("{NA}{why}"))
            } else if let Some(r) = inplace::one_way(mech, size as usize, n, s.placement) {
                r
            } else {
                run::one_way(mech, size as usize, 1, n, s.placement, check)
            }
        }
        Bench::Producers { producers } => {
            if !mech.many_to_many() {
                return Err(NA_SPSC.into());
            }
            run::one_way(mech, 64, producers as usize, n, s.placement, check)
        }
        Bench::Consumers { consumers } => {
            if !mech.many_to_many() {
                return Err(NA_SPSC.into());
            }
            run::fan_out(mech, consumers as usize, n, s.placement, check)
        }
        Bench::Locks { .. } => Err(NA_NOT_LOCK.into()),
        Bench::Pairs { pairs } => {
            if mech == Mech::Memcpy {
                return Err(NA_CHANNEL.into());
            }
            run::pairs(mech, pairs as usize, n, s.placement, check)
        }
    }
}

// ----------------------------------------------------------------------------------------
// Disturbance

/// CPU accounting at one instant.
struct Snap {
    wall: Instant,
    /// Busy and steal clock ticks of the CPUs in use, from /proc/stat.
    busy_ticks: u64,
    steal_ticks: u64,
    /// CPU time of this process and its reaped children.
    own: Duration,
}

fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: rusage is plain data; all zeros is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn snap(cpus: &[usize]) -> Snap {
    let mut busy_ticks = 0;
    let mut steal_ticks = 0;
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        for line in stat.lines() {
            let mut f = line.split_whitespace();
            let Some(name) = f.next() else { continue };
            let Some(cpu) = name
                .strip_prefix("cpu")
                .and_then(|c| c.parse::<usize>().ok())
            else {
                continue;
            };
            if !cpus.contains(&cpu) {
                continue;
            }
            let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal
            if v.len() >= 8 {
                busy_ticks += v[0] + v[1] + v[2] + v[5] + v[6];
                steal_ticks += v[7];
            }
        }
    }
    Snap {
        wall: Instant::now(),
        busy_ticks,
        steal_ticks,
        own: cpu_time(libc::RUSAGE_SELF) + cpu_time(libc::RUSAGE_CHILDREN),
    }
}

/// How much other load took from a measurement, and whether that is too much.
fn disturbed(
    before: &Snap,
    after: &Snap,
    sample: &Sample,
    extra_own: Duration,
    one_core: bool,
) -> bool {
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let tick = 1.0 / hz;
    let wall = (after.wall - before.wall).as_secs_f64();
    let busy = (after.busy_ticks.saturating_sub(before.busy_ticks)) as f64 * tick;
    let steal = (after.steal_ticks.saturating_sub(before.steal_ticks)) as f64 * tick;
    let own = (after.own.saturating_sub(before.own) + extra_own).as_secs_f64();
    let other = (busy - own).max(0.0);
    // Precise: time the receiver waited for its CPU during the timed part (meaningless when
    // our own two processes share one core by design).
    let waited = if one_core {
        0.0
    } else {
        sample.waited_ns / 1e9
    };
    let timed = sample.ns_per_unit / 1e9 * (wall * 1e9 / sample.wall_per_unit.max(1.0));
    // Coarse (/proc/stat counts in ticks): other processes' CPU time on our CPUs, and time
    // the hypervisor gave our virtual CPUs to someone else.
    waited > (0.05 * timed).max(0.0005)
        || steal > (0.05 * wall).max(2.0 * tick)
        || other > 0.25 * wall + 3.0 * tick
}

// ----------------------------------------------------------------------------------------
// Rounds

struct Contender {
    who: Who,
    n: u64,
    samples: Vec<Option<Sample>>,
    disturbed: Vec<bool>,
    retries: u32,
    status: Status,
    error: Option<String>,
}

/// The first measurement's count of units for `bench`: small, to estimate the cost per unit.
fn first_n(bench: Bench) -> u64 {
    match bench {
        Bench::Latency {
            mode: LatencyMode::Asleep,
        } => 3,
        Bench::Latency {
            mode: LatencyMode::OneCore,
        } => 200,
        Bench::Latency { .. } => 1000,
        Bench::Throughput { size } => (4_000_000 / size.max(1)).clamp(4, 20_000),
        Bench::Producers { .. } | Bench::Consumers { .. } => 20_000,
        Bench::Locks { .. } => 20_000,
        Bench::Pairs { .. } => 100,
    }
}

/// Units for a measurement whose timed part should last `target`, given `sample`.
fn size_n(bench: Bench, sample: &Sample, s: &Settings) -> u64 {
    let per_unit = match bench {
        Bench::Latency {
            mode: LatencyMode::Asleep,
        } => sample.ns_per_unit + s.pause.as_nanos() as f64,
        _ => sample.ns_per_unit,
    };
    let n = s.target.as_nanos() as f64 / per_unit.max(1.0);
    let min = match bench {
        Bench::Latency {
            mode: LatencyMode::Asleep,
        } => 3.0,
        Bench::Producers { producers: p } => 64.0 * f64::from(p),
        _ => 4.0,
    };
    n.clamp(min, 50_000_000.0) as u64
}

/// One group being measured.
struct GroupRun {
    bench: Bench,
    contenders: Vec<Contender>,
}

impl GroupRun {
    /// A calibration measurement per contender (not recorded) sizes the later ones.
    fn calibrate(
        bench: Bench,
        who: &[Who],
        s: &Settings,
        python: &mut Option<Python>,
        bar: &ProgressBar,
    ) -> Self {
        let mut contenders: Vec<Contender> = who
            .iter()
            .filter(|w| w.applies(bench))
            .map(|&w| Contender {
                who: w,
                n: first_n(bench),
                samples: Vec::new(),
                disturbed: Vec::new(),
                retries: 0,
                status: Status::Ok,
                error: None,
            })
            .collect();
        for c in &mut contenders {
            match measure(c.who, bench, c.n, s, python) {
                Outcome::Measured(sample, _) => c.n = size_n(bench, &sample, s),
                Outcome::NotApplicable(why) => {
                    c.status = Status::NotApplicable;
                    c.error = Some(why);
                }
                Outcome::Failed(why) => {
                    c.status = Status::Failed;
                    c.error = Some(why);
                }
            }
            bar.inc(1);
        }
        Self { bench, contenders }
    }

    /// One recorded round: every contender once, starting at a different one each round.
    fn round(
        &mut self,
        round: usize,
        s: &Settings,
        python: &mut Option<Python>,
        bar: &ProgressBar,
    ) {
        let bench = self.bench;
        let cpus: Vec<usize> = [s.placement.parent, s.placement.child]
            .into_iter()
            .flatten()
            .collect();
        let one_core = matches!(
            bench,
            Bench::Latency {
                mode: LatencyMode::OneCore
            } | Bench::Locks {
                case: LockCase::OneCore
            }
        );
        let k = self.contenders.len();
        for j in 0..k {
            let c = &mut self.contenders[(j + round) % k];
            if c.status != Status::Ok {
                c.samples.push(None);
                c.disturbed.push(false);
                bar.inc(1);
                continue;
            }
            let mut attempt = 0;
            loop {
                attempt += 1;
                let before = snap(&cpus);
                let outcome = measure(c.who, bench, c.n, s, python);
                let after = snap(&cpus);
                match outcome {
                    Outcome::Measured(sample, extra) => {
                        let bad = disturbed(&before, &after, &sample, extra, one_core);
                        if bad && attempt < s.attempts {
                            c.retries += 1;
                            continue;
                        }
                        c.samples.push(Some(sample));
                        c.disturbed.push(bad);
                    }
                    Outcome::NotApplicable(why) => {
                        c.status = Status::NotApplicable;
                        c.error = Some(why);
                        c.samples.push(None);
                        c.disturbed.push(false);
                    }
                    Outcome::Failed(why) => {
                        c.status = Status::Failed;
                        c.error = Some(why);
                        c.samples.push(None);
                        c.disturbed.push(false);
                    }
                }
                break;
            }
            bar.inc(1);
        }
    }

    fn finish(self) -> Group {
        let (title, unit) = describe(self.bench);
        Group {
            bench: self.bench,
            title,
            unit: unit.into(),
            references: self.bench.references(),
            rows: rows(self.bench, &self.contenders),
        }
    }
}

/// Measures every group of `plan`: first a calibration measurement per contender and group,
/// then `rounds` rounds, each of which visits every group once. A group's samples are thus
/// spread over the whole run, not bunched in one stretch of it, so a slow drift of the machine
/// (a virtual CPU moved to another core, another tenant waking up) touches every group alike.
pub fn run_all(
    plan: &[Bench],
    who: &[Who],
    s: &Settings,
    python: &mut Option<Python>,
    bar: &ProgressBar,
) -> Vec<Group> {
    let groups: Vec<(Bench, Vec<Who>)> = plan.iter().map(|&b| (b, who.to_vec())).collect();
    run_groups(&groups, s, python, bar)
}

/// [`run_all`] with contenders of its own for each group: (the group's case, who is measured
/// in it, of those it [applies](Who::applies) to).
pub fn run_groups(
    groups: &[(Bench, Vec<Who>)],
    s: &Settings,
    python: &mut Option<Python>,
    bar: &ProgressBar,
) -> Vec<Group> {
    let mut runs = Vec::with_capacity(groups.len());
    for (bench, who) in groups {
        bar.set_message(format!("calibrating: {}", describe(*bench).0));
        runs.push(GroupRun::calibrate(*bench, who, s, python, bar));
    }
    for round in 0..s.rounds {
        for g in &mut runs {
            bar.set_message(format!(
                "round {}/{}: {}",
                round + 1,
                s.rounds,
                describe(g.bench).0
            ));
            g.round(round, s, python, bar);
        }
    }
    runs.into_iter().map(GroupRun::finish).collect()
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The median over rounds of `reference / row` for rounds where both were measured, leaving
/// out rounds in which either measurement stayed disturbed (unless fewer than three remain).
fn ratio(reference: Option<&Contender>, row: &Contender) -> Option<f64> {
    let reference = reference?;
    if reference.status != Status::Ok {
        return None;
    }
    let pairs = |clean_only: bool| -> Vec<f64> {
        reference
            .samples
            .iter()
            .zip(&row.samples)
            .zip(reference.disturbed.iter().zip(&row.disturbed))
            .filter(|(_, (da, db))| !clean_only || !(**da || **db))
            .filter_map(|((a, b), _)| Some(a.as_ref()?.ns_per_unit / b.as_ref()?.ns_per_unit))
            .collect()
    };
    let clean = pairs(true);
    median(&if clean.len() >= 3 {
        clean
    } else {
        pairs(false)
    })
}

fn rows(bench: Bench, cs: &[Contender]) -> Vec<Row> {
    let bytes = bench.message_bytes().map(|b| b as f64);
    let units = bench.units_per_figure();
    let find = |id: &str| cs.iter().find(|c| c.who.id() == id);
    let [first, second] = bench.references().map(|r| find(&r.mechanism));
    cs.iter()
        .map(|c| {
            let ok = c.status == Status::Ok;
            let ns: Vec<f64> = c.samples.iter().flatten().map(|s| s.ns_per_unit).collect();
            let med = if ok { median(&ns) } else { None };
            Row {
                mechanism: c.who.id().into(),
                label: c.who.label().into(),
                status: c.status,
                error: c.error.clone(),
                samples_ns: if ok { ns.clone() } else { Vec::new() },
                disturbed: if ok { c.disturbed.clone() } else { Vec::new() },
                retries: c.retries,
                median_ns: med,
                min_ns: ok.then(|| ns.iter().copied().fold(f64::INFINITY, f64::min)),
                max_ns: ok.then(|| ns.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                per_s: med.map(|m| units * 1e9 / m),
                bytes_per_s: med.zip(bytes).map(|(m, b)| b * 1e9 / m),
                speed_vs_first: if ok { ratio(first, c) } else { None },
                speed_vs_second: if ok { ratio(second, c) } else { None },
                verified_messages: c.samples.iter().flatten().map(|s| s.verified).sum(),
            }
        })
        .collect()
}

/// A progress bar for `total` measurements (hidden when stderr is not a terminal).
pub fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}
