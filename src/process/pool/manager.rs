//! The manager thread, and what submitters share with it.
//!
//! Submitters put chunks into the [`Inbox`] of [`Shared`] and wake the manager through the
//! report queue. The [`Manager`] owns the workers and runs on its own thread
//! ([`Manager::run`]): it hands pending chunks to workers with room
//! ([`Manager::dispatch`]), remembers which chunks each [`Worker`] holds, matches reports to
//! them ([`Manager::handle`]), and when a worker exits settles the tasks it held by its slot
//! (see the slot table in `protocol`) and starts a replacement
//! ([`Manager::check_workers`]). Once the pool is closed and drained it lets the workers
//! exit; on terminate it kills them.

use crate::primitive::{AtomicU64, Ordering};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::job::Chunk;
use super::protocol::{
    Failure, IDLE, INITIALIZING, Order, QUEUE_BYTES, Report, WorkerBoot, slot_value,
};
use super::worker::worker_main;
use super::{PoolBuilder, TaskError};
use crate::channel::{Plain, Queue};
use crate::error::GetTimeoutError;
use crate::process::{BytesRx, BytesTx, Process, ProcessError, StartMethod};
use crate::segment::object::SharedObject;
use crate::value::RawArray;

/// A worker is given more work while it holds fewer than this many chunks...
const DEPTH_CHUNKS: usize = 2;
/// ...or fewer than this many tasks.
const DEPTH_TASKS: usize = 32;

/// Workers in a row that die inside the initializer before the pool gives up on it.
const INIT_DEATHS: u32 = 3;

/// What submitters and the manager share.
pub(super) struct Inbox {
    pub(super) pending: VecDeque<Chunk>,
    pub(super) closed: bool,
    pub(super) terminate: bool,
    /// Set when the manager has stopped (all later submissions fail).
    pub(super) stopped: bool,
    /// Why no task can run, once an initializer failed or workers cannot start.
    pub(super) broken: Option<TaskError>,
    /// Lazy iterations made before `close` that may still submit items: a closed pool waits
    /// for them before it stops, until `join` is called.
    pub(super) open_feeds: usize,
    /// `join` was called: stop once the submitted work is done.
    pub(super) joining: bool,
}

pub(super) struct Shared {
    pub(super) inbox: Mutex<Inbox>,
    /// A sender on the report queue, to wake the manager.
    pub(super) wake: BytesTx,
    pub(super) next_chunk: AtomicU64,
    pub(super) processes: usize,
}

impl Shared {
    pub(super) fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn poke(&self) {
        if let Ok(b) = postcard::to_allocvec(&Report::Wake) {
            // A full queue means the manager has plenty to read and will look at the inbox.
            let _ = self.wake.try_put_bytes(&b);
        }
    }

    /// Hands chunks to the manager; fails them at once if the pool takes no more work.
    pub(super) fn submit(&self, chunks: Vec<Chunk>) {
        self.submit_as(chunks, false);
    }

    /// As [`submit`](Self::submit); `admitted` work (of an iteration made before `close`) is
    /// taken after `close` too.
    pub(super) fn submit_as(&self, chunks: Vec<Chunk>, admitted: bool) {
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

    pub(super) fn chunk_id(&self) -> u64 {
        self.next_chunk.fetch_add(1, Ordering::Relaxed)
    }
}

pub(super) struct Worker {
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

pub(super) struct Manager {
    pub(super) shared: Arc<Shared>,
    pub(super) config: PoolBuilder,
    pub(super) reports_tx: BytesTx,
    pub(super) reports: BytesRx,
    pub(super) slots: RawArray<AtomicU64>,
    pub(super) workers: Vec<Worker>,
    pub(super) spawned: u64,
    /// Workers in a row that died inside the initializer (an initializer that exits or is
    /// killed, rather than panics).
    pub(super) init_deaths: u32,
}

impl Manager {
    pub(super) fn start_worker(&mut self, index: u32) -> Result<Worker, ProcessError> {
        let (tasks_tx, tasks_rx) = Queue::<u8>::builder()
            .codec::<Plain>()
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
            // SYNC(worker-slot): no worker runs at this index (an earlier one has exited).
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
            StartMethod::Spawn => builder.spawn(worker_main, boot)?,
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

    pub(super) fn run(mut self) {
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
                Err(GetTimeoutError::Timeout) => {}
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
            // SYNC(worker-slot): the worker has exited, so this is its last store.
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
