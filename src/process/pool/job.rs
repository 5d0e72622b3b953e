//! The bookkeeping of submissions. A [`Job`] collects the results of one submission (a map,
//! an imap, an apply_async) as the manager delivers them, and wakes its reader when what it
//! waits for ([`Want`]) has come; each task's result sits in a [`Slot`] (a result slot, not
//! a worker slot). A [`Chunk`] is a run of one job's tasks with their serialised arguments,
//! the unit the manager hands a worker; a [`Chunker`] cuts a map's items into chunks.

use std::collections::VecDeque;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use serde::de::DeserializeOwned;

use super::TaskError;
use super::manager::Shared;
use crate::process::{EncodesAs, Target, append};
use crate::segment::collecting;

/// A chunk is cut once its serialised arguments pass this many bytes...
const CHUNK_BYTES: usize = 4 << 20;
/// ...and one argument that makes it larger than this fails.
const MAX_CHUNK_BYTES: usize = 24 << 20;

/// Results of one submission (a map, an imap, an apply_async), filled in by the manager.
pub(super) struct Job {
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

/// Work for the pool's callback thread.
pub(super) type Deferred = Box<dyn FnOnce() + Send>;

/// What runs on the callback thread once `after` tasks of a job have ended.
pub(super) struct Callback {
    pub(super) after: usize,
    pub(super) tx: Sender<Deferred>,
    pub(super) run: Box<dyn FnOnce(&Job) + Send>,
}

/// A result as the manager delivers it: a range of the report being delivered, or an error.
type Delivered = Result<std::ops::Range<u32>, TaskError>;

#[derive(Default)]
pub(super) struct JobState {
    slots: Vec<Slot>,
    /// Report bytes the `Done` slots point into.
    reports: Vec<Vec<u8>>,
    errors: Vec<TaskError>,
    /// Task indices in the order their results arrived, when someone iterates unordered.
    pub(super) arrived: Option<VecDeque<usize>>,
    pub(super) done: usize,
    /// Results handed to an iterating reader.
    taken: usize,
    /// Task arguments holding shared objects, kept attached while the job lives.
    kept: Vec<Box<dyn std::any::Any + Send>>,
    /// What a waiting consumer waits for, so the manager wakes it only then.
    want: Want,
    /// The job's callback, until its tasks have ended and it is handed to the callback thread.
    callback: Option<Callback>,
    /// A callback was set and has not returned yet: the job's result is not ready before.
    pub(super) callback_pending: bool,
}

impl JobState {
    /// Decodes task `i`'s result for an iterating reader, and frees the reports once every
    /// delivered result has been read.
    pub(super) fn take<R: DeserializeOwned>(&mut self, i: usize) -> Result<R, TaskError> {
        let r = self.decode(i);
        self.slots[i] = Slot::Taken;
        self.taken += 1;
        if self.taken == self.done {
            self.reports.clear();
            self.errors.clear();
        }
        r
    }

    /// Whether tasks `0..tasks` all have a result (none failed).
    pub(super) fn all_succeeded(&self, tasks: usize) -> bool {
        (0..tasks).all(|i| matches!(self.slots.get(i), Some(Slot::Done { .. })))
    }

    pub(super) fn is_ready(&self, i: usize) -> bool {
        !matches!(self.slots.get(i), None | Some(Slot::Empty))
    }

    /// Decodes task `i`'s result (it must be ready).
    pub(super) fn decode<R: DeserializeOwned>(&self, i: usize) -> Result<R, TaskError> {
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
pub(super) enum Want {
    #[default]
    Nothing,
    Index(usize),
    Count(usize),
    Any,
}

impl Job {
    pub(super) fn new(tasks: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(JobState {
                slots: Vec::with_capacity(tasks),
                ..JobState::default()
            }),
            cv: Condvar::new(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for tasks `0..n`.
    pub(super) fn reserve(&self, n: usize) {
        let mut st = self.lock();
        if st.slots.len() < n {
            st.slots.resize(n, Slot::Empty);
        }
    }

    /// Records the arrival order from now on (for unordered iteration).
    pub(super) fn track_arrivals(&self) {
        self.lock().arrived.get_or_insert_with(VecDeque::new);
    }

    pub(super) fn fail(self: &Arc<Self>, index: usize, err: TaskError) {
        self.deliver(Vec::new(), std::iter::once((index, Err(err))));
    }

    /// Stores results under one lock, their ranges pointing into `report`; wakes the reader
    /// if it waits for one of them.
    pub(super) fn deliver(
        self: &Arc<Self>,
        report: Vec<u8>,
        results: impl IntoIterator<Item = (usize, Delivered)>,
    ) {
        let mut guard = self.lock();
        let st = &mut *guard;
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
        let done = st.done;
        let callback = st.callback.take_if(|c| done >= c.after);
        drop(guard);
        if let Some(c) = callback {
            self.fire(c);
        }
    }

    /// Sets the job's callback, to run on the callback thread once `callback.after` tasks
    /// have ended (at once if they have).
    pub(super) fn on_complete(self: &Arc<Self>, callback: Callback) {
        let mut st = self.lock();
        st.callback_pending = true;
        if st.done >= callback.after {
            drop(st);
            self.fire(callback);
        } else {
            st.callback = Some(callback);
        }
    }

    /// Hands the callback to the callback thread, which runs it and then marks the job
    /// ready. (If that thread is gone, it runs here.)
    fn fire(self: &Arc<Self>, callback: Callback) {
        let job = self.clone();
        let run = callback.run;
        let deferred: Deferred = Box::new(move || {
            // A panicking callback must not take the thread, or the readiness of its job, along.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&job)));
            job.lock().callback_pending = false;
            job.cv.notify_all();
        });
        if let Err(e) = callback.tx.send(deferred) {
            (e.0)();
        }
    }

    /// Waits until `ready` holds, up to `deadline`; the guard, or `None` on timeout.
    pub(super) fn wait_until(
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
pub(super) struct Chunk {
    pub(super) id: u64,
    pub(super) target: Target,
    pub(super) job: Arc<Job>,
    /// Job index of each task.
    pub(super) indices: Vec<usize>,
    /// Serialised arguments back to back; argument `i` ends at `ends[i]`.
    pub(super) args: Vec<u8>,
    pub(super) ends: Vec<u32>,
    /// Results received so far (a worker reports a chunk's tasks in order).
    pub(super) received: usize,
}

impl Chunk {
    pub(super) fn new(shared: &Shared, target: Target, job: &Arc<Job>) -> Self {
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

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Adds task `index` with argument `arg` (an `A` or a borrowed form of it); an argument
    /// that does not serialise fails at once.
    pub(super) fn push<A, X>(&mut self, index: usize, arg: X)
    where
        A: Send + 'static,
        X: EncodesAs<A>,
    {
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
            // (A borrowed argument is cloned for this: the clone attaches its own copies.)
            self.job.lock().kept.push(Box::new(arg.into_arg()));
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

    pub(super) fn fail_rest(&self, from: usize, err: &TaskError) {
        self.job.deliver(
            Vec::new(),
            self.indices[from.min(self.len())..]
                .iter()
                .map(|&i| (i, Err(err.clone()))),
        );
    }

    /// The tasks from `from` on, as a new pending chunk.
    pub(super) fn rest(self, from: usize, id: u64) -> Option<Chunk> {
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

/// Python's default chunk size for `map`: the tasks split into about four chunks per worker.
pub(super) fn default_chunksize(tasks: usize, workers: usize) -> usize {
    let per = workers * 4;
    (tasks / per + usize::from(tasks % per != 0)).max(1)
}

/// Cuts tasks into chunks of at most `size` tasks (and about [`CHUNK_BYTES`]) and hands them
/// to the manager in batches, the first at once, so workers start while later items are
/// still being serialised.
pub(super) struct Chunker<'s> {
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
    pub(super) fn new(shared: &'s Shared, target: Target, job: &Arc<Job>, size: usize) -> Self {
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

    pub(super) fn push<A, X>(&mut self, index: usize, arg: X)
    where
        A: Send + 'static,
        X: EncodesAs<A>,
    {
        let c = self
            .cur
            .get_or_insert_with(|| Chunk::new(self.shared, self.target, &self.job));
        c.push::<A, X>(index, arg);
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

    pub(super) fn finish(mut self) {
        if let Some(c) = self.cur.take().filter(|c| c.len() > 0) {
            self.ready.push(c);
        }
        self.send();
    }
}
