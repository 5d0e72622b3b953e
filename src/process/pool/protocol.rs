//! What the manager and the workers say to each other: the [`Order`]s on a worker's task
//! queue, the [`Report`]s on the shared report queue, the [`WorkerBoot`] a worker starts
//! with, and the worker slots.
//!
//! Messages are postcard-encoded. A worker stops on an order it cannot decode; the manager
//! drops a report it cannot decode, or one that does not match what the named worker holds
//! (`Manager::handle`).
//!
//! # Worker slots
//!
//! One `AtomicU64` per worker index, in a shared array that `PoolBuilder::build` creates and
//! [`WorkerBoot::slots`] hands to each worker. Before a worker runs a task it writes which one
//! into its slot, so that when the worker dies the manager knows which task was running.
//!
//! | value | meaning | written by |
//! |---|---|---|
//! | [`INITIALIZING`] (`u64::MAX - 1`) | the worker has not finished the pool's initializer | the manager (`Manager::start_worker`), before it starts a worker of a pool with an initializer |
//! | [`IDLE`] (`u64::MAX`) | the worker runs no task | `PoolBuilder::build` (every slot, Relaxed, before any worker exists); the manager (`Manager::start_worker`) for a pool without an initializer; the worker when it is ready (its initializer, if any, has returned), and after each chunk, whose results it has sent by then |
//! | [`slot_value`]`(chunk, i)` = `chunk << 24 \| i` | task `i` of chunk `chunk` is running, or has run and the next has not started (its result may not be sent yet) | the worker, before it calls the task |
//!
//! `i < 2^24` is assumed, not checked: a larger index would spill into the chunk bits.
//!
//! Only the worker whose index it is writes a slot while that worker lives; the manager
//! writes it only to start a worker (the previous holder of the index has exited). The
//! only reader is the manager, in `Manager::check_workers`, after it has seen the worker
//! exit, so it reads the worker's last write: `INITIALIZING` counts a death in the
//! initializer (`INIT_DEATHS` in a row break the pool); a `slot_value` naming a task of a
//! chunk the worker held that has not reported yet fails that task with
//! `TaskError::WorkerDied` (the tasks of the chunk before it, finished but not reported,
//! run again); `IDLE` fails nothing. Worker stores are Release and the manager's load is
//! Acquire, tagged `SYNC(worker-slot)`.

use serde::{Deserialize, Serialize};

use crate::process::Target;
use crate::segment::{Handle, InheritFd};

/// Bytes of each task queue and of the report queue (sparse: untouched capacity costs no
/// memory). A message can take half a queue.
pub(super) const QUEUE_BYTES: usize = 64 << 20;

/// Slot value of a worker that runs no task.
pub(super) const IDLE: u64 = u64::MAX;
/// Slot value of a worker that has not finished its initializer yet.
pub(super) const INITIALIZING: u64 = u64::MAX - 1;

/// What the manager sends a worker.
#[derive(Serialize, Deserialize)]
pub(super) enum Order<'a> {
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
pub(super) enum Failure {
    Panicked(String),
    Failed(String),
}

/// What workers (and submitters, to wake the manager) send to the manager.
#[derive(Serialize, Deserialize)]
pub(super) enum Report<'a> {
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

/// What a worker process gets to start.
#[derive(Serialize, Deserialize)]
pub(super) struct WorkerBoot {
    pub(super) index: u32,
    pub(super) tasks: Handle,
    pub(super) reports: Handle,
    pub(super) slots: Handle,
    pub(super) max_tasks: Option<u64>,
    pub(super) init: Option<(Target, Vec<u8>)>,
    /// Descriptors the initializer's argument names, handed down as they are.
    pub(super) init_fds: Vec<InheritFd>,
}

/// Slot value for task `index` of chunk `chunk`.
pub(super) fn slot_value(chunk: u64, index: u32) -> u64 {
    (chunk << 24) | u64::from(index)
}
