//! What a run produces: the figures of every group, the machine they were measured on, and
//! the settings. This is the `--json` file's schema; the table and the plot are drawn from it.

use serde::{Deserialize, Serialize};

/// One whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `multiproc-bench <version>`.
    pub tool: String,
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub config: Config,
    /// One group per measured case (a latency mode, a message size, a producer count...).
    pub groups: Vec<Group>,
    /// Warnings worth reading beside the figures (pinning skipped, Python missing...).
    pub notes: Vec<String>,
}

/// The machine description.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs online.
    pub logical_cpus: usize,
    /// CPUs this process may run on.
    pub allowed_cpus: Vec<usize>,
    /// The two CPUs the processes were pinned to (receiver/parent first), if pinned.
    pub pinned: Option<[usize; 2]>,
    /// `uname -r`.
    pub kernel: String,
    /// `PRETTY_NAME` of /etc/os-release.
    pub os: String,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// `python3 --version`, if Python was measured.
    pub python: Option<String>,
}

/// The settings of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// `--quick` was given.
    pub quick: bool,
    /// Recorded rounds per group.
    pub rounds: usize,
    /// Each measurement is sized to last about this long.
    pub target_ms: f64,
    /// How received payloads are checked: "full" (checksum of every byte) or "pages".
    pub check: String,
    /// The command line.
    pub command: String,
}

/// Which benchmark a group belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Bench {
    /// Round trip of an 8-byte message.
    Latency {
        /// Awake, asleep or one core.
        mode: LatencyMode,
    },
    /// One way, one producer, one consumer, messages of `size` bytes.
    Throughput {
        /// Message size in bytes.
        size: u64,
    },
    /// One way, 64-byte messages, `producers` producers into one consumer.
    Producers {
        /// How many producers.
        producers: u32,
    },
    /// One way, 64-byte messages, one producer into `consumers` consumers.
    Consumers {
        /// How many consumers.
        consumers: u32,
    },
    /// Lock, increment a counter in shared memory, unlock: a process-shared mutex's cost.
    Locks {
        /// Uncontended, or two processes contending on two cores or on one.
        case: LockCase,
    },
    /// Round trips of an 8-byte message, `pairs` pinger/ponger pairs at once: every pinger on
    /// the first CPU, every ponger on the second (one pair is the awake latency case).
    Pairs {
        /// How many pairs run at once.
        pairs: u32,
    },
}

impl Bench {
    /// The payload bytes of one message, where a figure is per message of a known size.
    pub fn message_bytes(self) -> Option<u64> {
        match self {
            Bench::Throughput { size } => Some(size),
            Bench::Producers { .. } | Bench::Consumers { .. } => Some(64),
            Bench::Latency { .. } | Bench::Locks { .. } | Bench::Pairs { .. } => None,
        }
    }

    /// Units of all processes together per unit of the figure: the pairs of a pairs group
    /// (its figure is the time of one pair's round trip), otherwise 1.
    pub fn units_per_figure(self) -> f64 {
        match self {
            Bench::Pairs { pairs } => f64::from(pairs.max(1)),
            _ => 1.0,
        }
    }

    /// The two mechanisms this kind of group's ratio columns compare against.
    pub fn references(self) -> [Reference; 2] {
        match self {
            Bench::Locks { .. } => [
                Reference::new(crate::locks::LockMech::Futex.id(), "futex"),
                Reference::new(crate::locks::LockMech::Pthread.id(), "pthread"),
            ],
            _ => Reference::channel(),
        }
    }
}

/// The three lock cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockCase {
    /// One process locks and unlocks alone.
    Uncontended,
    /// Two processes contend, each pinned to its own core.
    TwoCores,
    /// Two processes contend, both pinned to one core.
    OneCore,
}

/// A mechanism a group's ratios are taken against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// Its stable id, e.g. "os-pipe".
    pub mechanism: String,
    /// A short name for the column header `vs <name>`, e.g. "pipe".
    pub name: String,
}

impl Reference {
    fn new(mechanism: &str, name: &str) -> Self {
        Self {
            mechanism: mechanism.into(),
            name: name.into(),
        }
    }

    /// The references of the channel groups: the OS pipe and the minimal ring (also what a
    /// report written before groups named their references compared against).
    pub fn channel() -> [Reference; 2] {
        [
            Reference::new(crate::mech::Mech::OsPipe.id(), "pipe"),
            Reference::new(crate::mech::Mech::Floor.id(), "floor"),
        ]
    }
}

/// The three round-trip cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatencyMode {
    /// Two cores, the receiver waiting back to back.
    Awake,
    /// Two cores, a pause before each round trip so the receiver has gone to sleep.
    Asleep,
    /// Both processes pinned to one core.
    OneCore,
}

/// One case measured for every mechanism that supports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    /// Which case.
    pub bench: Bench,
    /// A readable title, e.g. "one way, 4 KiB messages".
    pub title: String,
    /// What one figure is per: "round trip", "message" or "lock+unlock".
    pub unit: String,
    /// The two mechanisms the ratios of this group are taken against, first and second.
    #[serde(default = "Reference::channel")]
    pub references: [Reference; 2],
    /// One row per mechanism, in a fixed order.
    pub rows: Vec<Row>,
}

/// Whether a row has figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Measured, every message verified.
    Ok,
    /// A measurement failed: a message was lost, duplicated or corrupted, or a process died.
    /// No figure is reported.
    Failed,
    /// The mechanism cannot carry this case (e.g. a message above its size limit).
    NotApplicable,
}

/// One mechanism in one group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Stable id, e.g. "mp-queue-bytes", "os-pipe", "floor-ring", "py-queue".
    pub mechanism: String,
    /// Readable name, e.g. "multiproc Queue (bytes)".
    pub label: String,
    /// Whether it was measured.
    pub status: Status,
    /// Why it failed or does not apply.
    pub error: Option<String>,
    /// Nanoseconds per unit, one per recorded round, in round order.
    pub samples_ns: Vec<f64>,
    /// Whether the measurement of that round was still disturbed by other load after retries.
    pub disturbed: Vec<bool>,
    /// Measurements repeated because other load disturbed them.
    pub retries: u32,
    /// Median of `samples_ns`.
    pub median_ns: Option<f64>,
    /// Smallest of `samples_ns`.
    pub min_ns: Option<f64>,
    /// Largest of `samples_ns`.
    pub max_ns: Option<f64>,
    /// Units per second at the median: messages, round trips (of all pairs together in a
    /// pairs group), or lock+unlock cycles (of all processes together).
    pub per_s: Option<f64>,
    /// Payload bytes per second at the median (throughput groups only).
    pub bytes_per_s: Option<f64>,
    /// How many times as fast as the group's first reference (the OS pipe; for locks the
    /// bare futex mutex): the median over rounds of the reference's time in that round divided
    /// by this row's time in the same round (> 1: faster than the reference).
    #[serde(alias = "speed_vs_pipe")]
    pub speed_vs_first: Option<f64>,
    /// The same against the group's second reference (the minimal shared-memory ring; for
    /// locks the process-shared pthread mutex).
    #[serde(alias = "speed_vs_floor")]
    pub speed_vs_second: Option<f64>,
    /// Messages received and checked (sequence, length, checksum) over all recorded rounds;
    /// for locks, the increments the counter was checked to hold.
    pub verified_messages: u64,
}

impl Report {
    /// The rows of every throughput group for `mechanism`, as (size, bytes/s), by size.
    pub fn throughput_series(&self, mechanism: &str) -> Vec<(u64, f64)> {
        let mut points: Vec<(u64, f64)> = self
            .groups
            .iter()
            .filter_map(|g| match g.bench {
                Bench::Throughput { size } => g
                    .rows
                    .iter()
                    .find(|r| r.mechanism == mechanism)
                    .and_then(|r| r.bytes_per_s)
                    .map(|b| (size, b)),
                _ => None,
            })
            .collect();
        points.sort_by_key(|p| p.0);
        points
    }
}
