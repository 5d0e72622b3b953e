//! `Pool`: worker processes that run tasks (functions called by address, serde arguments and
//! results), with a manager thread in the owning process that never waits on a dead worker.
//!
//! Each worker has its own task queue; the manager hands it chunks of tasks and remembers
//! which chunks each worker holds. Before a worker runs a task it writes (chunk, index) into
//! its slot of a shared array, and after it sends the result. So when a worker dies, the
//! manager knows exactly which task was running (that one fails with `WorkerDied`), which
//! tasks already reported, and which never started (those go to other workers). A dead worker
//! is replaced. Results travel back on one shared queue.

use crate::primitive::{AtomicU64, Ordering};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::boot::{Callable, Spread};
use super::{
    BytesRx, BytesTx, Process, ProcessError, StartMethod, Status, Target, append, call, call_with,
    cpu_count, target_of,
};
use crate::channel::{Plain, Queue};
use crate::error::GetError;
use crate::segment::{Handle, InheritFd, collecting};
use crate::sync::object::SharedObject;
use crate::value::RawArray;

/// Why a task gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the panic message.
    #[error("task panicked: {0}")]
    Panicked(String),
    /// The worker running the task died (killed, or exited) before the task finished.
    #[error("worker {pid} died while running the task (exit code {exitcode})")]
    WorkerDied {
        /// The worker's process id.
        pid: u32,
        /// Its exit code, or minus the signal that killed it.
        exitcode: i32,
    },
    /// The argument or result did not encode or decode, or the worker could not call the
    /// function.
    #[error("{0}")]
    Codec(String),
    /// The pool's initializer failed in a worker, so the pool runs no tasks.
    #[error("pool initializer failed: {0}")]
    InitializerFailed(String),
    /// The pool was closed before the task was submitted.
    #[error("pool is closed")]
    Closed,
    /// The pool was terminated before the task finished.
    #[error("pool was terminated")]
    Terminated,
    /// `get_timeout` ran out.
    #[error("timed out")]
    Timeout,
    /// Workers could not be started.
    #[error("could not start a worker: {0}")]
    Start(String),
}

/// Bytes of each task queue and of the report queue (sparse: untouched capacity costs no
/// memory). A message can take half a queue.
const QUEUE_BYTES: usize = 64 << 20;
/// A chunk is cut once its serialised arguments pass this many bytes...
const CHUNK_BYTES: usize = 4 << 20;
/// ...and one argument that makes it larger than this fails.
const MAX_CHUNK_BYTES: usize = 24 << 20;
/// A result larger than this fails (a report carries it whole).
const MAX_RESULT: usize = 24 << 20;
/// A worker is given more work while it holds fewer than this many chunks...
const DEPTH_CHUNKS: usize = 2;
/// ...or fewer than this many tasks.
const DEPTH_TASKS: usize = 32;
/// Slot value of a worker that runs no task.
const IDLE: u64 = u64::MAX;
/// Slot value of a worker that has not finished its initializer yet.
const INITIALIZING: u64 = u64::MAX - 1;
/// Workers in a row that die inside the initializer before the pool gives up on it.
const INIT_DEATHS: u32 = 3;

/// What the manager sends a worker.
#[derive(Serialize, Deserialize)]
enum Order<'a> {
    /// Run chunk `id`: `target` on each argument; `args` holds the serialised arguments back
    /// to back, argument `i` ending at `ends[i]`.
    Run {
        id: u64,
        target: Target,
        #[serde(borrow)]
        args: &'a [u8],
        ends: Vec<u32>,
    },
    /// Finish: the pool is closing. (A forked worker holds inherited copies of its own task
    /// queue's sender, so it would never see the queue disconnect.)
    Stop,
}

/// Why a task gave no result, as a worker reports it.
#[derive(Serialize, Deserialize)]
enum Failure {
    Panicked(String),
    Failed(String),
}

/// What workers (and submitters, to wake the manager) send to the manager.
#[derive(Serialize, Deserialize)]
enum Report<'a> {
    /// Tasks `first..first + ends.len()` of chunk `chunk` ended: task `first + k`'s result
    /// ends at `data[ends[k]]` (starting where the previous one ended), unless `failed` lists
    /// it (then its range is empty).
    Done {
        worker: u32,
        chunk: u64,
        first: u32,
        #[serde(borrow)]
        data: &'a [u8],
        ends: Vec<u32>,
        failed: Vec<(u32, Failure)>,
    },
    /// The initializer failed in a worker.
    InitFailed(String),
    /// Something changed in the inbox.
    Wake,
}

/// A worker sends a chunk's results when this many bytes are waiting...
const FLUSH_BYTES: usize = 64 << 10;
/// ...or the oldest waiting result is this old (so slow tasks report one by one).
const FLUSH_AGE: Duration = Duration::from_millis(1);

/// What a worker process gets to start.
#[derive(Serialize, Deserialize)]
struct WorkerBoot {
    index: u32,
    tasks: Handle,
    reports: Handle,
    slots: Handle,
    max_tasks: Option<u64>,
    init: Option<(Target, Vec<u8>)>,
    /// Descriptors the initializer's argument names, handed down as they are.
    init_fds: Vec<InheritFd>,
}

/// Slot value for task `index` of chunk `chunk`.
fn slot_value(chunk: u64, index: u32) -> u64 {
    (chunk << 24) | u64::from(index)
}

/// Results of a chunk that a worker has not sent yet.
struct Pending {
    chunk: u64,
    first: u32,
    data: Vec<u8>,
    ends: Vec<u32>,
    failed: Vec<(u32, Failure)>,
    since: Instant,
}

impl Pending {
    fn new(chunk: u64, first: u32) -> Self {
        Self {
            chunk,
            first,
            data: Vec::new(),
            ends: Vec::new(),
            failed: Vec::new(),
            since: Instant::now(),
        }
    }

    /// Sends what is waiting; `false` if the pool is gone.
    fn flush(&mut self, worker: u32, reports: &BytesTx) -> bool {
        if self.ends.is_empty() {
            return true;
        }
        let report = Report::Done {
            worker,
            chunk: self.chunk,
            first: self.first,
            data: &self.data,
            ends: std::mem::take(&mut self.ends),
            failed: std::mem::take(&mut self.failed),
        };
        let sent = postcard::to_allocvec(&report)
            .ok()
            .is_some_and(|b| reports.put_bytes(&b).is_ok());
        let Report::Done { ends, .. } = report else {
            unreachable!()
        };
        self.first += ends.len() as u32;
        self.ends = ends;
        self.ends.clear();
        self.data.clear();
        self.since = Instant::now();
        sent
    }
}

/// The body of a worker process.
fn worker_main(boot: WorkerBoot) {
    let open = || -> Result<(BytesRx, BytesTx, RawArray<AtomicU64>), crate::OpenError> {
        Ok((
            BytesRx::from_handle(&boot.tasks)?,
            BytesTx::from_handle(&boot.reports)?,
            RawArray::from_handle(&boot.slots)?,
        ))
    };
    let Ok((tasks, reports, slots)) = open() else {
        return;
    };
    let cells: &[AtomicU64] = &slots;
    let Some(slot) = cells.get(boot.index as usize) else {
        return;
    };
    if let Some((target, arg)) = &boot.init {
        let msg = match call(*target, arg, &mut Vec::new()) {
            Status::Returned => None,
            Status::Panicked(m) | Status::Failed(m) => Some(m),
        };
        if let Some(m) = msg {
            if let Ok(b) = postcard::to_allocvec(&Report::InitFailed(m)) {
                let _ = reports.put_bytes(&b);
            }
            return;
        }
    }
    slot.store(IDLE, Ordering::Release);
    let mut done = 0u64;
    // The last target whose entry checked its type here: later calls skip the check.
    let mut checked: Option<Target> = None;
    // How many tasks between two looks at the clock: grows while tasks are quick (the clock
    // costs more than they do), back to 1 as soon as they are not.
    let mut stride = 1u32;
    let mut since_look = 0u32;
    let mut last_look = Instant::now();
    while let Ok(bytes) = tasks.get_bytes() {
        let (id, target, args, ends) = match postcard::from_bytes::<Order<'_>>(&bytes) {
            Ok(Order::Run {
                id,
                target,
                args,
                ends,
            }) => (id, target, args, ends),
            // Stop, or not from our manager: stop rather than guess.
            _ => return,
        };
        let mut pending = Pending::new(id, 0);
        let mut start = 0usize;
        for (i, &end) in ends.iter().enumerate() {
            let Some(arg) = args.get(start..end as usize) else {
                return; // malformed order
            };
            start = end as usize;
            slot.store(slot_value(id, i as u32), Ordering::Release);
            let check = checked != Some(target);
            let before = pending.data.len();
            let status = call_with(target, arg, &mut pending.data, check, &mut || {});
            if check && !matches!(&status, Status::Failed(m) if m.starts_with("entry mismatch")) {
                checked = Some(target);
            }
            let status = match status {
                Status::Returned if pending.data.len() - before > MAX_RESULT => {
                    pending.data.truncate(before);
                    Status::Failed(format!(
                        "result larger than the {MAX_RESULT} bytes a task can return"
                    ))
                }
                s => s,
            };
            match status {
                Status::Returned => {}
                Status::Panicked(m) => pending.failed.push((i as u32, Failure::Panicked(m))),
                Status::Failed(m) => pending.failed.push((i as u32, Failure::Failed(m))),
            }
            pending.ends.push(pending.data.len() as u32);
            done += 1;
            let last = i + 1 == ends.len();
            since_look += 1;
            let mut old = false;
            if since_look >= stride {
                let now = Instant::now();
                stride = if now - last_look < FLUSH_AGE / 64 {
                    (stride * 2).min(256)
                } else {
                    1
                };
                since_look = 0;
                last_look = now;
                old = now - pending.since >= FLUSH_AGE;
            }
            if (last || old || pending.data.len() >= FLUSH_BYTES)
                && !pending.flush(boot.index, &reports)
            {
                return; // the pool is gone
            }
        }
        slot.store(IDLE, Ordering::Release);
        if boot.max_tasks.is_some_and(|m| done >= m) {
            return;
        }
    }
}

/// Results of one submission (a map, an imap, an apply_async), filled in by the manager.
struct Job {
    state: Mutex<JobState>,
    cv: Condvar,
}

/// Where a task's result is: nowhere yet, a byte range of one of the job's reports, or an
/// error in the job's error list. (Small on purpose: a map keeps one per item.)
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Slot {
    #[default]
    Empty,
    Done {
        report: u32,
        start: u32,
        end: u32,
    },
    Failed(u32),
    /// Handed to the reader already (imap).
    Taken,
}

/// A result as the manager delivers it: a range of the report being delivered, or an error.
type Delivered = Result<std::ops::Range<u32>, TaskError>;

#[derive(Default)]
struct JobState {
    slots: Vec<Slot>,
    /// Report bytes the `Done` slots point into.
    reports: Vec<Vec<u8>>,
    errors: Vec<TaskError>,
    /// Task indices in the order their results arrived, when someone iterates unordered.
    arrived: Option<VecDeque<usize>>,
    done: usize,
    /// Results handed to an iterating reader.
    taken: usize,
    /// Task arguments holding shared objects, kept attached while the job lives.
    kept: Vec<Box<dyn std::any::Any + Send>>,
    /// What a waiting consumer waits for, so the manager wakes it only then.
    want: Want,
}

impl JobState {
    /// Decodes task `i`'s result for an iterating reader, and frees the reports once every
    /// delivered result has been read.
    fn take<R: DeserializeOwned>(&mut self, i: usize) -> Result<R, TaskError> {
        let r = self.decode(i);
        self.slots[i] = Slot::Taken;
        self.taken += 1;
        if self.taken == self.done {
            self.reports.clear();
            self.errors.clear();
        }
        r
    }

    fn is_ready(&self, i: usize) -> bool {
        !matches!(self.slots.get(i), None | Some(Slot::Empty))
    }

    /// Decodes task `i`'s result (it must be ready).
    fn decode<R: DeserializeOwned>(&self, i: usize) -> Result<R, TaskError> {
        match self.slots.get(i).copied().unwrap_or_default() {
            Slot::Done { report, start, end } => {
                let bytes = self
                    .reports
                    .get(report as usize)
                    .and_then(|r| r.get(start as usize..end as usize))
                    .unwrap_or_default();
                postcard::from_bytes(bytes)
                    .map_err(|e| TaskError::Codec(format!("result does not decode: {e}")))
            }
            Slot::Failed(e) => Err(self
                .errors
                .get(e as usize)
                .cloned()
                .unwrap_or(TaskError::Terminated)),
            Slot::Empty | Slot::Taken => Err(TaskError::Terminated),
        }
    }
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Want {
    #[default]
    Nothing,
    Index(usize),
    Count(usize),
    Any,
}

impl Job {
    fn new(tasks: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(JobState {
                slots: Vec::with_capacity(tasks),
                ..JobState::default()
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for tasks `0..n`.
    fn reserve(&self, n: usize) {
        let mut st = self.lock();
        if st.slots.len() < n {
            st.slots.resize(n, Slot::Empty);
        }
    }

    /// Records the arrival order from now on (for unordered iteration).
    fn track_arrivals(&self) {
        self.lock().arrived.get_or_insert_with(VecDeque::new);
    }

    fn fail(&self, index: usize, err: TaskError) {
        self.deliver(Vec::new(), std::iter::once((index, Err(err))));
    }

    /// Stores results under one lock, their ranges pointing into `report`; wakes the reader
    /// if it waits for one of them.
    fn deliver(&self, report: Vec<u8>, results: impl IntoIterator<Item = (usize, Delivered)>) {
        let mut st = self.lock();
        let st = &mut *st;
        let r = st.reports.len() as u32;
        let mut used = false;
        let mut wake = false;
        for (index, result) in results {
            if index >= st.slots.len() {
                st.slots.resize(index + 1, Slot::Empty);
            }
            if st.slots[index] != Slot::Empty {
                continue;
            }
            st.slots[index] = match result {
                Ok(range) => {
                    used = true;
                    Slot::Done {
                        report: r,
                        start: range.start,
                        end: range.end,
                    }
                }
                Err(e) => {
                    st.errors.push(e);
                    Slot::Failed(st.errors.len() as u32 - 1)
                }
            };
            if let Some(a) = &mut st.arrived {
                a.push_back(index);
            }
            st.done += 1;
            wake |= match st.want {
                Want::Nothing => false,
                Want::Index(i) => i == index,
                Want::Count(n) => st.done >= n,
                Want::Any => true,
            };
        }
        if used {
            st.reports.push(report);
        }
        if wake {
            st.want = Want::Nothing;
            self.cv.notify_all();
        }
    }

    /// Waits until `ready` holds, up to `deadline`; the guard, or `None` on timeout.
    fn wait_until(
        &self,
        want: Want,
        deadline: Option<Instant>,
        ready: impl Fn(&JobState) -> bool,
    ) -> Option<MutexGuard<'_, JobState>> {
        let mut st = self.lock();
        loop {
            if ready(&st) {
                return Some(st);
            }
            st.want = want;
            st = match deadline {
                None => self.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.cv
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// A chunk of tasks the manager holds: pending, or handed to a worker.
struct Chunk {
    id: u64,
    target: Target,
    job: Arc<Job>,
    /// Job index of each task.
    indices: Vec<usize>,
    /// Serialised arguments back to back; argument `i` ends at `ends[i]`.
    args: Vec<u8>,
    ends: Vec<u32>,
    /// Results received so far (a worker reports a chunk's tasks in order).
    received: usize,
}

impl Chunk {
    fn new(shared: &Shared, target: Target, job: &Arc<Job>) -> Self {
        Self {
            id: shared.chunk_id(),
            target,
            job: job.clone(),
            indices: Vec::new(),
            args: Vec::new(),
            ends: Vec::new(),
            received: 0,
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Adds task `index` with argument `arg`; an argument that does not serialise fails at
    /// once.
    fn push<A: Serialize + Send + 'static>(&mut self, index: usize, arg: A) {
        let start = self.args.len();
        let (appended, collected) = collecting(|| append(&arg, &mut self.args));
        let refused = if !collected.fds.is_empty() {
            Some(
                "the argument holds the handle of a memfd-backed object, whose descriptor pool \
                 workers do not have: create the object with `.named()`, or give it to the \
                 pool's initializer",
            )
        } else {
            None
        };
        if let Some(why) = refused {
            if appended.is_ok() {
                self.args.truncate(start);
            }
            self.job.fail(index, TaskError::Codec(why.into()));
            return;
        }
        if collected.objects && appended.is_ok() {
            // Shared objects in the argument stay attached here until the job is done, so the
            // worker always finds them (a named object's name, a queue's sender count).
            self.job.lock().kept.push(Box::new(arg));
        }
        match appended {
            Ok(()) if self.args.len() <= MAX_CHUNK_BYTES => {
                self.indices.push(index);
                self.ends.push(self.args.len() as u32);
            }
            Ok(()) => {
                let start = self.ends.last().map_or(0, |&e| e as usize);
                let len = self.args.len() - start;
                self.args.truncate(start);
                self.job.fail(
                    index,
                    TaskError::Codec(format!(
                        "argument of {len} bytes is larger than a task can carry"
                    )),
                );
            }
            Err(e) => self.job.fail(index, TaskError::Codec(e)),
        }
    }

    fn fail_rest(&self, from: usize, err: &TaskError) {
        self.job.deliver(
            Vec::new(),
            self.indices[from.min(self.len())..]
                .iter()
                .map(|&i| (i, Err(err.clone()))),
        );
    }

    /// The tasks from `from` on, as a new pending chunk.
    fn rest(self, from: usize, id: u64) -> Option<Chunk> {
        if from >= self.len() {
            return None;
        }
        let base = if from == 0 { 0 } else { self.ends[from - 1] };
        Some(Chunk {
            id,
            target: self.target,
            job: self.job,
            indices: self.indices[from..].to_vec(),
            args: self.args[base as usize..].to_vec(),
            ends: self.ends[from..].iter().map(|e| e - base).collect(),
            received: 0,
        })
    }
}

/// What submitters and the manager share.
struct Inbox {
    pending: VecDeque<Chunk>,
    closed: bool,
    terminate: bool,
    /// Set when the manager has stopped (all later submissions fail).
    stopped: bool,
    /// Why no task can run, once an initializer failed or workers cannot start.
    broken: Option<TaskError>,
    /// Lazy iterations made before `close` that may still submit items: a closed pool waits
    /// for them before it stops, until `join` is called.
    open_feeds: usize,
    /// `join` was called: stop once the submitted work is done.
    joining: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    /// A sender on the report queue, to wake the manager.
    wake: BytesTx,
    next_chunk: AtomicU64,
    processes: usize,
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poke(&self) {
        if let Ok(b) = postcard::to_allocvec(&Report::Wake) {
            // A full queue means the manager has plenty to read and will look at the inbox.
            let _ = self.wake.try_put_bytes(&b);
        }
    }

    /// Hands chunks to the manager; fails them at once if the pool takes no more work.
    fn submit(&self, chunks: Vec<Chunk>) {
        self.submit_as(chunks, false);
    }

    /// As [`submit`](Self::submit); `admitted` work (of an iteration made before `close`) is
    /// taken after `close` too.
    fn submit_as(&self, chunks: Vec<Chunk>, admitted: bool) {
        let mut inbox = self.inbox();
        let refuse = if inbox.closed && !admitted {
            Some(TaskError::Closed)
        } else if inbox.stopped || inbox.terminate {
            Some(TaskError::Terminated)
        } else {
            inbox.broken.clone()
        };
        if let Some(err) = refuse {
            drop(inbox);
            for c in &chunks {
                c.fail_rest(0, &err);
            }
            return;
        }
        inbox.pending.extend(chunks);
        drop(inbox);
        self.poke();
    }

    fn chunk_id(&self) -> u64 {
        self.next_chunk.fetch_add(1, Ordering::Relaxed)
    }
}

/// Configures a [`Pool`].
#[derive(Debug, Clone, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    max_tasks_per_child: Option<u64>,
    method: StartMethod,
    init: Option<(Target, Vec<u8>)>,
    /// Descriptors the initializer's argument names (handed down to spawned workers).
    init_fds: Vec<InheritFd>,
    /// The initializer's argument itself, kept for the pool's life: the objects in it stay
    /// attached here while workers start and attach their own.
    init_keep: Option<Arc<Mutex<Box<dyn std::any::Any + Send>>>>,
}

impl PoolBuilder {
    /// Number of worker processes (default [`cpu_count`]).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n.max(1));
        self
    }

    /// A worker exits after this many tasks and a fresh one replaces it (Python's
    /// `maxtasksperchild`; by default workers live as long as the pool). A worker finishes
    /// the chunk it is on, so with a chunk size above one it may run a few more.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n.max(1));
        self
    }

    /// How workers start (default [`StartMethod::Spawn`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = method;
        self
    }

    /// Each worker calls `f(arg)` when it starts (Python's `initializer` and `initargs`).
    /// Shared objects (a queue's sender, a lock) can be part of `arg`: this is how workers
    /// get them, as in Python, where they are shared by inheritance. If the initializer
    /// panics (or keeps killing its workers), the pool runs no tasks: they fail with
    /// [`TaskError::InitializerFailed`].
    ///
    /// # Errors
    /// [`ProcessError::Codec`] if `arg` does not serialise.
    pub fn initializer<F, A>(mut self, f: F, arg: A) -> Result<Self, ProcessError>
    where
        F: Fn(A) + Copy + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let (bytes, collected) = collecting(|| postcard::to_allocvec(&arg));
        let bytes = bytes.map_err(|e| ProcessError::Codec(e.to_string()))?;
        self.init = Some((target_of::<F, A>(), bytes));
        self.init_fds = collected.fds.into_iter().map(InheritFd).collect();
        self.init_keep = Some(Arc::new(Mutex::new(Box::new(arg))));
        Ok(self)
    }

    /// Starts the workers.
    ///
    /// # Errors
    /// A [`ProcessError`] if the shared queues or a worker cannot be made.
    pub fn build(self) -> Result<Pool, ProcessError> {
        let n = self.processes.unwrap_or_else(cpu_count);
        let (reports_tx, reports_rx) = Queue::<u8, Plain>::builder()
            .capacity(8192)
            .max_bytes(QUEUE_BYTES)
            .create()?
            .split()?;
        let slots = RawArray::<AtomicU64>::builder().len(n).create()?;
        for s in slots.iter() {
            s.store(IDLE, Ordering::Relaxed);
        }
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox {
                pending: VecDeque::new(),
                closed: false,
                terminate: false,
                stopped: false,
                broken: None,
                open_feeds: 0,
                joining: false,
            }),
            wake: reports_tx.clone(),
            next_chunk: AtomicU64::new(0),
            processes: n,
        });
        let mut manager = Manager {
            shared: shared.clone(),
            config: self,
            reports_tx,
            reports: reports_rx,
            slots,
            workers: Vec::with_capacity(n),
            spawned: 0,
            init_deaths: 0,
        };
        for i in 0..n {
            let w = manager.start_worker(i as u32)?;
            manager.workers.push(w);
        }
        let thread = std::thread::Builder::new()
            .name("multiproc-pool".into())
            .spawn(move || manager.run())
            .map_err(|e| ProcessError::Os(crate::Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        Ok(Pool {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }
}

struct Worker {
    index: u32,
    process: Process<()>,
    tasks: BytesTx,
    /// Our receiving end of the worker's task queue, kept for the worker's life: until the
    /// worker has attached its own, the queue would otherwise have no receiver and refuse
    /// orders. (Death is noticed by the pidfd, not by the queue.)
    _tasks_rx: BytesRx,
    inflight: VecDeque<Chunk>,
    inflight_tasks: usize,
    /// Tasks handed to this worker in its life (for `max_tasks_per_child`).
    assigned: u64,
}

struct Manager {
    shared: Arc<Shared>,
    config: PoolBuilder,
    reports_tx: BytesTx,
    reports: BytesRx,
    slots: RawArray<AtomicU64>,
    workers: Vec<Worker>,
    spawned: u64,
    /// Workers in a row that died inside the initializer (an initializer that exits or is
    /// killed, rather than panics).
    init_deaths: u32,
}

impl Manager {
    fn start_worker(&mut self, index: u32) -> Result<Worker, ProcessError> {
        let (tasks_tx, tasks_rx) = Queue::<u8, Plain>::builder()
            .capacity(4 * DEPTH_TASKS)
            .max_bytes(QUEUE_BYTES)
            .create()?
            .split()?;
        if let Some(s) = self.slot(index) {
            let start = if self.config.init.is_some() {
                INITIALIZING
            } else {
                IDLE
            };
            s.store(start, Ordering::Release);
        }
        let boot = WorkerBoot {
            index,
            tasks: tasks_rx.handle(),
            reports: self.reports_tx.handle(),
            slots: self.slots.handle(),
            max_tasks: self.config.max_tasks_per_child,
            init: self.config.init.clone(),
            init_fds: self.config.init_fds.clone(),
        };
        self.spawned += 1;
        let builder = Process::builder()
            .name(format!("PoolWorker-{}", self.spawned))
            .daemon(true);
        let process = match self.config.method {
            StartMethod::Spawn => builder.start(worker_main, boot)?,
            StartMethod::Fork => builder.fork(move || worker_main(boot))?,
        };
        Ok(Worker {
            index,
            process,
            tasks: tasks_tx,
            _tasks_rx: tasks_rx,
            inflight: VecDeque::new(),
            inflight_tasks: 0,
            assigned: 0,
        })
    }

    fn slot(&self, index: u32) -> Option<&AtomicU64> {
        let cells: &[AtomicU64] = &self.slots;
        cells.get(index as usize)
    }

    fn run(mut self) {
        let mut last_check = Instant::now();
        loop {
            let (closed, terminate) = {
                let inbox = self.shared.inbox();
                (inbox.closed, inbox.terminate)
            };
            if terminate {
                self.terminate();
                return;
            }
            self.dispatch();
            let busy = self.workers.iter().any(|w| !w.inflight.is_empty());
            let drained = {
                let inbox = self.shared.inbox();
                inbox.pending.is_empty() && (inbox.open_feeds == 0 || inbox.joining)
            };
            if closed && !busy && drained {
                self.shut_down();
                return;
            }
            let wait = if busy {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(100)
            };
            match self.reports.get_bytes_timeout(wait) {
                Ok(bytes) => {
                    self.handle(bytes);
                    // Take what else is there before looking at the inbox again.
                    for _ in 0..4096 {
                        match self.reports.get_bytes_timeout(Duration::ZERO) {
                            Ok(bytes) => self.handle(bytes),
                            Err(_) => break,
                        }
                    }
                }
                Err(GetError::Empty) => {}
                Err(_) => {}
            }
            if last_check.elapsed() >= wait {
                self.check_workers();
                last_check = Instant::now();
            }
        }
    }

    /// Hands pending chunks to workers with room.
    fn dispatch(&mut self) {
        let max = self.config.max_tasks_per_child;
        loop {
            let Some(w) = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| {
                    (w.inflight.len() < DEPTH_CHUNKS || w.inflight_tasks < DEPTH_TASKS)
                        && max.is_none_or(|m| w.assigned < m)
                })
                .min_by_key(|(_, w)| w.inflight_tasks)
                .map(|(i, _)| i)
            else {
                return;
            };
            let Some(chunk) = self.shared.inbox().pending.pop_front() else {
                return;
            };
            let worker = &mut self.workers[w];
            let msg = Order::Run {
                id: chunk.id,
                target: chunk.target,
                args: &chunk.args,
                ends: chunk.ends.clone(),
            };
            let sent = postcard::to_allocvec(&msg)
                .map_err(|_| ())
                .and_then(|b| worker.tasks.try_put_bytes(&b).map_err(|_| ()));
            if sent.is_err() {
                // Full (or the worker is gone, which the next check sees): try again later.
                self.shared.inbox().pending.push_front(chunk);
                return;
            }
            worker.inflight_tasks += chunk.len();
            worker.assigned += chunk.len() as u64;
            worker.inflight.push_back(chunk);
        }
    }

    fn handle(&mut self, bytes: Vec<u8>) {
        let Ok(report) = postcard::from_bytes::<Report<'_>>(&bytes) else {
            return;
        };
        match report {
            Report::Wake => {}
            Report::InitFailed(msg) => self.broken(TaskError::InitializerFailed(msg)),
            Report::Done {
                worker,
                chunk,
                first,
                data,
                ends,
                failed,
            } => {
                let Some(w) = self.workers.iter_mut().find(|w| w.index == worker) else {
                    return;
                };
                let Some(c) = w.inflight.front_mut() else {
                    return;
                };
                let n = ends.len();
                if c.id != chunk || c.received != first as usize || c.received + n > c.len() {
                    return; // not what this worker holds: a stale or bogus report
                }
                // Where `data` sits in the report (it is borrowed from it).
                let base = data.as_ptr() as usize - bytes.as_ptr() as usize;
                let mut failed = failed.into_iter().peekable();
                let mut start = 0usize;
                let mut results = Vec::with_capacity(n);
                for (k, &end) in ends.iter().enumerate() {
                    let task = first as usize + k;
                    let end = (end as usize).clamp(start, data.len());
                    let result = match failed.next_if(|(i, _)| *i as usize == task) {
                        Some((_, Failure::Panicked(m))) => Err(TaskError::Panicked(m)),
                        Some((_, Failure::Failed(m))) => Err(TaskError::Codec(m)),
                        None => Ok((base + start) as u32..(base + end) as u32),
                    };
                    start = end;
                    results.push((c.indices[task], result));
                }
                c.job.deliver(bytes, results);
                c.received += n;
                w.inflight_tasks -= n;
                if c.received == c.len() {
                    w.inflight.pop_front();
                }
            }
        }
    }

    /// No task can run: fail everything held and everything that comes.
    fn broken(&mut self, err: TaskError) {
        let pending: Vec<Chunk> = {
            let mut inbox = self.shared.inbox();
            inbox.broken.get_or_insert(err.clone());
            inbox.pending.drain(..).collect()
        };
        for c in pending {
            c.fail_rest(0, &err);
        }
        for w in &mut self.workers {
            for c in w.inflight.drain(..) {
                c.fail_rest(c.received, &err);
            }
            w.inflight_tasks = 0;
        }
    }

    /// Replaces workers that have exited, settling the tasks they held.
    fn check_workers(&mut self) {
        for i in 0..self.workers.len() {
            if !self.workers[i].process.child.has_exited() {
                continue;
            }
            // Everything the worker reported before it died is in the queue: take it first.
            while let Ok(bytes) = self.reports.get_bytes_timeout(Duration::ZERO) {
                self.handle(bytes);
            }
            let index = self.workers[i].index;
            let exitcode = self.workers[i].process.wait().unwrap_or(-1);
            let pid = self.workers[i].process.pid();
            let slot = self.slot(index).map_or(IDLE, |s| s.load(Ordering::Acquire));
            if slot == INITIALIZING {
                self.init_deaths += 1;
                if self.init_deaths >= INIT_DEATHS {
                    self.broken(TaskError::InitializerFailed(format!(
                        "{INIT_DEATHS} workers in a row died in the initializer \
                         (the last with exit code {exitcode})"
                    )));
                }
            } else {
                self.init_deaths = 0;
            }
            let inflight: Vec<Chunk> = self.workers[i].inflight.drain(..).collect();
            let mut requeue = Vec::new();
            for mut c in inflight {
                // The task the slot names was running: it fails. Tasks of that chunk between
                // the last report and it had finished, but their results were not sent yet:
                // they run again, like the tasks that never started.
                let running = (c.received..c.len()).find(|&t| slot == slot_value(c.id, t as u32));
                if let Some(t) = running {
                    c.job
                        .fail(c.indices[t], TaskError::WorkerDied { pid, exitcode });
                    c.indices.remove(t);
                    let (start, end) = (if t == 0 { 0 } else { c.ends[t - 1] }, c.ends[t]);
                    c.args.drain(start as usize..end as usize);
                    c.ends.remove(t);
                    for e in &mut c.ends[t..] {
                        *e -= end - start;
                    }
                }
                let from = c.received;
                requeue.extend(c.rest(from, self.shared.chunk_id()));
            }
            {
                let mut inbox = self.shared.inbox();
                for c in requeue.into_iter().rev() {
                    inbox.pending.push_front(c);
                }
            }
            if self.shared.inbox().broken.is_some() {
                continue; // no replacement: nothing may run
            }
            match self.start_worker(index) {
                Ok(w) => self.workers[i] = w,
                Err(e) => {
                    self.broken(TaskError::Start(e.to_string()));
                }
            }
        }
        if self.shared.inbox().broken.is_some() {
            let err = self.shared.inbox().broken.clone();
            if let Some(err) = err {
                self.broken(err);
            }
        }
    }

    /// Closed and drained: let workers finish and exit.
    fn shut_down(&mut self) {
        self.shared.inbox().stopped = true;
        let stop = postcard::to_allocvec(&Order::Stop).unwrap_or_default();
        for w in &self.workers {
            // Its queue is drained (nothing is in flight), so this cannot block for long; a
            // worker that died meanwhile gives `Disconnected`.
            let _ = w.tasks.put_bytes(&stop);
        }
        for w in self.workers.drain(..) {
            let _ = w.process.wait();
        }
    }

    /// Kills the workers and fails every task not finished.
    fn terminate(&mut self) {
        let pending: Vec<Chunk> = {
            let mut inbox = self.shared.inbox();
            inbox.stopped = true;
            inbox.pending.drain(..).collect()
        };
        for c in pending {
            c.fail_rest(0, &TaskError::Terminated);
        }
        for w in &self.workers {
            let _ = w.process.kill();
        }
        for w in self.workers.drain(..) {
            let _ = w.process.wait();
            for c in &w.inflight {
                c.fail_rest(c.received, &TaskError::Terminated);
            }
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // After a normal stop nothing is left. If the manager thread panicked, this fails
        // whatever is still held, so that no reader waits for results forever.
        self.terminate();
    }
}

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// Tasks are `fn` items (or closures that capture nothing) with serde arguments and results,
/// called in the workers by address (see [`StartMethod::Spawn`]). A worker killed while it
/// runs a task fails that task with [`TaskError::WorkerDied`] and is replaced; a task that
/// panics fails with [`TaskError::Panicked`]; every other task completes. No call waits on a
/// dead worker.
///
/// Dropping the pool terminates it (as Python's context manager does); call
/// [`close`](Self::close) and [`join`](Self::join) to let submitted work finish first.
///
/// ```
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.map(square, 1..=4)?, [1, 4, 9, 16]);
/// let total: u64 = pool.imap(square, 0..100).map(Result::unwrap).sum();
/// assert_eq!(total, 328_350);
/// # Ok(()) }
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.shared.processes)
            .finish()
    }
}

/// Python's default chunk size for `map`: the tasks split into about four chunks per worker.
fn default_chunksize(tasks: usize, workers: usize) -> usize {
    let per = workers * 4;
    (tasks / per + usize::from(tasks % per != 0)).max(1)
}

/// Cuts tasks into chunks of at most `size` tasks (and about [`CHUNK_BYTES`]) and hands them
/// to the manager in batches, the first at once, so workers start while later items are
/// still being serialised.
struct Chunker<'s> {
    shared: &'s Shared,
    target: Target,
    job: Arc<Job>,
    size: usize,
    cur: Option<Chunk>,
    ready: Vec<Chunk>,
    ready_tasks: usize,
    sent_any: bool,
}

impl<'s> Chunker<'s> {
    fn new(shared: &'s Shared, target: Target, job: &Arc<Job>, size: usize) -> Self {
        Self {
            shared,
            target,
            job: job.clone(),
            size: size.max(1),
            cur: None,
            ready: Vec::new(),
            ready_tasks: 0,
            sent_any: false,
        }
    }

    fn push<A: Serialize + Send + 'static>(&mut self, index: usize, arg: A) {
        let c = self
            .cur
            .get_or_insert_with(|| Chunk::new(self.shared, self.target, &self.job));
        c.push(index, arg);
        if c.len() >= self.size || c.args.len() >= CHUNK_BYTES {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if let Some(c) = self.cur.take().filter(|c| c.len() > 0) {
            self.ready_tasks += c.len();
            self.ready.push(c);
        }
        if !self.sent_any || self.ready_tasks >= 4096 || self.ready.len() >= 256 {
            self.send();
        }
    }

    fn send(&mut self) {
        if !self.ready.is_empty() {
            self.shared.submit(std::mem::take(&mut self.ready));
            self.ready_tasks = 0;
            self.sent_any = true;
        }
    }

    fn finish(mut self) {
        if let Some(c) = self.cur.take().filter(|c| c.len() > 0) {
            self.ready.push(c);
        }
        self.send();
    }
}

impl Pool {
    /// A pool of `processes` workers (Python's `Pool(processes)`).
    ///
    /// # Errors
    /// A [`ProcessError`] if a worker cannot be started.
    pub fn new(processes: usize) -> Result<Self, ProcessError> {
        Self::builder().processes(processes).build()
    }

    /// A builder, for the number of workers, an initializer, `max_tasks_per_child` or the
    /// start method.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.shared.processes
    }

    /// Runs `f` on every item and returns the results in order, with Python's default chunk
    /// size (about four chunks per worker).
    ///
    /// # Errors
    /// The first (in item order) task's error, after every task has ended.
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        self.map_impl::<F, A, I>(items, None)
    }

    /// [`map`](Self::map) with an explicit chunk size (tasks per message to a worker).
    ///
    /// # Errors
    /// As [`map`](Self::map).
    pub fn map_chunked<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        self.map_impl::<F, A, I>(items, Some(chunksize))
    }

    /// Like [`map`](Self::map) for a function of several arguments, each item a tuple of
    /// them (Python's `starmap`).
    ///
    /// # Errors
    /// As [`map`](Self::map).
    pub fn starmap<F, T, R, I>(&self, f: F, items: I) -> Result<Vec<R>, TaskError>
    where
        F: StarFn<T, Output = R> + Copy + 'static,
        Spread<F>: Callable<T, Output = R>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        let _ = Spread::new(f);
        self.map_impl::<Spread<F>, T, I>(items, None)
    }

    fn map_impl<F, A, I>(
        &self,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<F::Output>, TaskError>
    where
        F: Callable<A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        F::Output: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let items = items.into_iter();
        let (lo, hi) = items.size_hint();
        // Python's default needs the length: collect the items if the iterator does not know.
        let (items, n): (Box<dyn Iterator<Item = A>>, usize) = match (chunksize, hi) {
            (Some(_), _) => (Box::new(items), lo),
            (None, Some(hi)) if hi == lo => (Box::new(items), lo),
            (None, _) => {
                let v: Vec<A> = items.collect();
                let n = v.len();
                (Box::new(v.into_iter()), n)
            }
        };
        let size = chunksize.unwrap_or_else(|| default_chunksize(n, self.shared.processes));
        let job = Job::new(n);
        job.reserve(n);
        let mut chunker = Chunker::new(&self.shared, target_of::<F, A>(), &job, size);
        let mut count = 0;
        for (i, a) in items.enumerate() {
            chunker.push(i, a);
            count = i + 1;
        }
        chunker.finish();
        let n = count;
        job.reserve(n);
        let st = job
            .wait_until(Want::Count(n), None, |st| st.done >= n)
            .expect("no deadline");
        (0..n).map(|i| st.decode(i)).collect()
    }

    /// Runs `f` on the items lazily and yields the results in order, as they come (Python's
    /// `imap`, chunk size 1). Items are taken from `items` only a few chunks ahead of the
    /// results read. The iterator has an exact length when `items` does (progress bars).
    pub fn imap<F, A, R, I>(&self, f: F, items: I) -> Imap<'_, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.imap_chunked(f, items, 1)
    }

    /// [`imap`](Self::imap) with `chunksize` tasks per message to a worker.
    pub fn imap_chunked<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Imap<'_, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        Imap {
            feed: Feed::new(self, target_of::<F, A>(), items.into_iter(), chunksize),
            next: 0,
            _r: PhantomData,
        }
    }

    /// Like [`imap`](Self::imap), but yields results as they finish, in any order (Python's
    /// `imap_unordered`). Each result comes with the index of its item.
    pub fn imap_unordered<F, A, R, I>(&self, f: F, items: I) -> ImapUnordered<'_, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        let feed = Feed::new(self, target_of::<F, A>(), items.into_iter(), 1);
        feed.job.track_arrivals();
        ImapUnordered {
            feed,
            taken: 0,
            _r: PhantomData,
        }
    }

    /// Submits one task and returns at once (Python's `apply_async`).
    pub fn apply_async<F, A, R>(&self, f: F, arg: A) -> AsyncResult<R>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        let _ = f;
        let job = Job::new(1);
        job.reserve(1);
        let mut chunk = Chunk::new(&self.shared, target_of::<F, A>(), &job);
        chunk.push(0, arg);
        if chunk.len() > 0 {
            self.shared.submit(vec![chunk]);
        }
        AsyncResult {
            job,
            _r: PhantomData,
        }
    }

    /// Takes no more tasks. Those submitted still run, and so do the items of an `imap` made
    /// before, as it is read. Then [`join`](Self::join) waits for the submitted tasks and the
    /// workers (an `imap` read after that gets [`TaskError::Terminated`] for items it had not
    /// submitted yet).
    pub fn close(&self) {
        self.shared.inbox().closed = true;
        self.shared.poke();
    }

    /// Kills the workers now; unfinished tasks fail with [`TaskError::Terminated`].
    pub fn terminate(&self) {
        self.shared.inbox().terminate = true;
        self.shared.poke();
        self.join_thread();
    }

    /// Waits until the pool has stopped: after [`close`](Self::close), when every task has
    /// ended and the workers have exited; after [`terminate`](Self::terminate), at once.
    /// Joining a pool that is neither closed nor terminated closes it first.
    pub fn join(&self) {
        {
            let mut inbox = self.shared.inbox();
            inbox.closed = true;
            inbox.joining = true;
        }
        self.shared.poke();
        self.join_thread();
    }

    fn join_thread(&self) {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Functions that [`Pool::starmap`] spreads a tuple over: `Fn(A, B) -> R` and
/// `Fn(A, B, C) -> R` (a `fn` item or a closure that captures nothing).
pub trait StarFn<Args>: sealed::Sealed<Args> {
    /// What the function returns.
    type Output;
}

mod sealed {
    pub trait Sealed<Args> {}
}

impl<F: Fn(A, B) -> R, A, B, R> sealed::Sealed<(A, B)> for F {}
impl<F: Fn(A, B) -> R, A, B, R> StarFn<(A, B)> for F {
    type Output = R;
}
impl<F: Fn(A, B, C) -> R, A, B, C, R> sealed::Sealed<(A, B, C)> for F {}
impl<F: Fn(A, B, C) -> R, A, B, C, R> StarFn<(A, B, C)> for F {
    type Output = R;
}

/// The submitting side of a lazy iteration: pulls items a few chunks ahead of the reader.
struct Feed<'p, I> {
    pool: &'p Pool,
    target: Target,
    items: I,
    chunksize: usize,
    job: Arc<Job>,
    submitted: usize,
    exhausted: bool,
    /// Made while the pool was open: its items are taken after `close` too (as if all had
    /// been submitted before it), until `join`. Counted in `Inbox::open_feeds` until done.
    admitted: bool,
}

impl<I> Feed<'_, I> {
    /// No more items will come from this iteration.
    fn release(&mut self) {
        self.exhausted = true;
        if std::mem::take(&mut self.admitted) {
            self.pool.shared.inbox().open_feeds -= 1;
            self.pool.shared.poke();
        }
    }
}

impl<I> Drop for Feed<'_, I> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<'p, I: Iterator> Feed<'p, I>
where
    I::Item: Serialize + Send + 'static,
{
    fn new(pool: &'p Pool, target: Target, items: I, chunksize: usize) -> Self {
        let admitted = {
            let mut inbox = pool.shared.inbox();
            let open = !(inbox.closed || inbox.stopped || inbox.terminate);
            inbox.open_feeds += usize::from(open);
            open
        };
        Self {
            pool,
            target,
            items,
            chunksize: chunksize.max(1),
            job: Job::new(0),
            submitted: 0,
            exhausted: false,
            admitted,
        }
    }

    /// Results still to come for a reader that has read `read`: those submitted and not
    /// read, plus the items not pulled yet.
    fn remaining(&self, read: usize) -> (usize, Option<usize>) {
        let queued = self.submitted - read;
        let (lo, hi) = if self.exhausted {
            (0, Some(0))
        } else {
            self.items.size_hint()
        };
        (queued + lo, hi.map(|h| h + queued))
    }

    /// Submits items until a window of tasks beyond `read` is out (or the items end).
    fn top_up(&mut self, read: usize) {
        let window = (self.pool.shared.processes * 4 * self.chunksize).max(self.chunksize * 2);
        if self.exhausted || self.submitted >= read + window {
            return;
        }
        let mut chunks = Vec::new();
        while !self.exhausted && self.submitted < read + window {
            let mut chunk = Chunk::new(&self.pool.shared, self.target, &self.job);
            let first = self.submitted;
            for a in self.items.by_ref().take(self.chunksize) {
                self.job.reserve(self.submitted + 1);
                chunk.push(self.submitted, a);
                self.submitted += 1;
            }
            if chunk.len() > 0 {
                chunks.push(chunk);
            }
            if self.submitted - first < self.chunksize {
                self.exhausted = true;
            }
        }
        self.pool.shared.submit_as(chunks, self.admitted);
        if self.exhausted {
            self.release();
        }
    }
}

/// Results of [`Pool::imap`], in item order.
pub struct Imap<'p, R, I> {
    feed: Feed<'p, I>,
    next: usize,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned, I: Iterator> Iterator for Imap<'_, R, I>
where
    I::Item: Serialize + Send + 'static,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.feed.top_up(self.next);
        if self.next >= self.feed.submitted {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let mut st = self
            .feed
            .job
            .wait_until(Want::Index(i), None, |st| st.is_ready(i))
            .expect("no deadline");
        Some(st.take(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.feed.remaining(self.next)
    }
}

impl<R: DeserializeOwned, I: ExactSizeIterator> ExactSizeIterator for Imap<'_, R, I> where
    I::Item: Serialize + Send + 'static
{
}

/// Results of [`Pool::imap_unordered`] as they finish: (item index, result).
pub struct ImapUnordered<'p, R, I> {
    feed: Feed<'p, I>,
    taken: usize,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned, I: Iterator> Iterator for ImapUnordered<'_, R, I>
where
    I::Item: Serialize + Send + 'static,
{
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        self.feed.top_up(self.taken);
        if self.taken >= self.feed.submitted {
            return None;
        }
        self.taken += 1;
        let mut st = self
            .feed
            .job
            .wait_until(Want::Any, None, |st| {
                st.arrived.as_ref().is_some_and(|a| !a.is_empty())
            })
            .expect("no deadline");
        let i = st
            .arrived
            .as_mut()
            .and_then(VecDeque::pop_front)
            .expect("checked");
        Some((i, st.take(i)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.feed.remaining(self.taken)
    }
}

impl<R: DeserializeOwned, I: ExactSizeIterator> ExactSizeIterator for ImapUnordered<'_, R, I> where
    I::Item: Serialize + Send + 'static
{
}

/// The pending result of [`Pool::apply_async`].
pub struct AsyncResult<R> {
    job: Arc<Job>,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits for the task and returns its result (as often as asked).
    ///
    /// # Errors
    /// The task's [`TaskError`].
    pub fn get(&self) -> Result<R, TaskError> {
        let st = self
            .job
            .wait_until(Want::Index(0), None, |st| st.is_ready(0))
            .expect("no deadline");
        st.decode(0)
    }

    /// Waits at most `timeout` for the task.
    ///
    /// # Errors
    /// [`TaskError::Timeout`] if it has not finished by then, or the task's error.
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, TaskError> {
        let deadline = crate::sync::wait::deadline_after(timeout);
        match self
            .job
            .wait_until(Want::Index(0), deadline, |st| st.is_ready(0))
        {
            Some(st) => st.decode(0),
            None => Err(TaskError::Timeout),
        }
    }
}

impl<R> AsyncResult<R> {
    /// Whether the task has finished (with a result or an error).
    pub fn ready(&self) -> bool {
        self.job.lock().is_ready(0)
    }
}

#[allow(dead_code)]
fn assert_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Pool>();
    send_sync::<AsyncResult<u64>>();
    send_sync::<Process<u64>>();
}
