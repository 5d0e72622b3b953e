//! `Pool`: worker processes that run tasks (functions called by address, serde arguments and
//! results), with a manager thread in the owning process that never waits on a dead worker.
//!
//! Each worker has its own task queue; the manager hands it chunks of tasks and remembers
//! which chunks each worker holds. Before a worker runs a task it writes (chunk, index) into
//! its slot of a shared array, and after it sends the result. So when a worker dies, the
//! manager knows exactly which task was running (that one fails with `WorkerDied`), which
//! tasks already reported, and which never started (those go to other workers). A dead worker
//! is replaced. Results travel back on one shared queue.
//!
//! A task goes from a submitter through the inbox ([`manager::Shared`]) to the manager, which
//! sends it in a chunk to a worker's task queue; the worker's report comes back to the
//! manager, which files the result in the submission's [`job::Job`], where the reader takes it.
//! A submission with callbacks (`apply_async_with`, `map_async_with`, ...) hands them, once
//! its last task has ended, to the pool's callback thread (started with the first callback),
//! which runs them one at a time in that order and then marks the result ready.
//! The parts, one file each:
//!
//! - here: [`Pool`], [`PoolBuilder`] and [`TaskError`], the public surface;
//! - [`protocol`]: the messages between manager and workers, and the worker slots (with
//!   their state table);
//! - [`worker`]: the worker process's loop;
//! - [`job`]: a submission's results and the chunks its tasks travel in;
//! - [`manager`]: the manager thread, which feeds workers, tracks what each holds and
//!   replaces the dead;
//! - [`iterators`]: [`Imap`], [`ImapUnordered`], [`ImapUnorderedIndexed`] and
//!   [`AsyncResult`].

mod iterators;
mod job;
mod manager;
mod protocol;
mod worker;

use crate::primitive::{AtomicU64, Ordering};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::boot::Signature;
use super::{EncodesAs, Process, ProcessError, StartMethod, Target, cpu_count, target_for};
use crate::channel::{Plain, Queue};
use crate::segment::{InheritFd, collecting};
use crate::value::RawArray;
use iterators::Feed;
use job::{Callback, Chunk, Chunker, Deferred, Job, JobState, default_chunksize};
use manager::{Inbox, Manager, Shared};
use protocol::{IDLE, QUEUE_BYTES};

pub use iterators::{AsyncResult, Imap, ImapUnordered, ImapUnorderedIndexed};

pub use crate::error::TaskError;

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
    /// Number of worker processes (default [`cpu_count`]); 0 makes [`build`](Self::build)
    /// fail with [`ProcessError::InvalidArgument`] (Python's `ValueError`).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A worker exits after this many tasks and a fresh one replaces it (Python's
    /// `maxtasksperchild`; by default workers live as long as the pool). A worker finishes
    /// the chunk it is on, so with a chunk size above one it may run a few more. 0 makes
    /// [`build`](Self::build) fail with [`ProcessError::InvalidArgument`] (Python's
    /// `ValueError`).
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n);
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
    /// `f` is a `fn` item or a closure that captures nothing. A child initializer named
    /// with [`set_child_init`](crate::set_child_init) runs before it.
    ///
    /// # Errors
    /// [`ProcessError::Codec`] if `arg` does not serialise.
    pub fn initializer<A>(mut self, f: fn(A), arg: A) -> Result<Self, ProcessError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let (bytes, collected) = collecting(|| postcard::to_allocvec(&arg));
        let bytes = bytes.map_err(|e| ProcessError::Codec(e.to_string()))?;
        self.init = Some((target_for(f), bytes));
        self.init_fds = collected.fds.into_iter().map(InheritFd).collect();
        self.init_keep = Some(Arc::new(Mutex::new(Box::new(arg))));
        Ok(self)
    }

    /// Starts the workers.
    ///
    /// # Errors
    /// [`ProcessError::InvalidArgument`] for 0 processes or `max_tasks_per_child(0)`; another
    /// [`ProcessError`] if the shared queues or a worker cannot be made.
    pub fn build(self) -> Result<Pool, ProcessError> {
        let n = self.processes.unwrap_or_else(cpu_count);
        if n == 0 {
            return Err(ProcessError::InvalidArgument(
                "a pool needs at least 1 process",
            ));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(ProcessError::InvalidArgument(
                "max_tasks_per_child must be at least 1",
            ));
        }
        let (reports_tx, reports_rx) = Queue::<u8>::builder()
            .codec::<Plain>()
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
        let stopped = Arc::new(Finished::default());
        let guard = stopped.guard();
        let thread = std::thread::Builder::new()
            .name("multiproc-pool".into())
            .spawn(move || {
                let _stopped = guard;
                manager.run();
            })
            .map_err(|e| ProcessError::Os(crate::Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        Ok(Pool {
            shared,
            thread: Mutex::new(Some(thread)),
            stopped,
            callbacks: Mutex::new(None),
        })
    }
}

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// Tasks are function pointers (`fn` items, or closures that capture nothing) with owned serde
/// arguments and results, called in the workers by address (see [`StartMethod::Spawn`]).
/// Items can also be borrowed forms of the argument type ([`EncodesAs`]): for a task
/// `fn(String)`, `&names` where `names` is a `Vec<String>`, or a `Vec<&str>`. A worker killed while it
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
    /// Set when the manager thread has ended.
    stopped: Arc<Finished>,
    /// The thread that runs callbacks, one after the other, started with the first one.
    callbacks: Mutex<Option<CallbackThread>>,
}

/// The callback thread: our sender (dropped when the pool stops, so the thread ends once
/// the last pending callback has run), its handle, and the flag it sets when it ends.
struct CallbackThread {
    tx: Option<std::sync::mpsc::Sender<Deferred>>,
    handle: JoinHandle<()>,
    finished: Arc<Finished>,
}

/// A flag a thread sets when it ends (also by unwinding), that others can wait on.
#[derive(Default)]
struct Finished {
    done: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Finished {
    /// Sets the flag when dropped.
    fn guard(self: &Arc<Self>) -> impl Drop + Send + 'static {
        struct SetOnDrop(Arc<Finished>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                *self.0.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
                self.0.cv.notify_all();
            }
        }
        SetOnDrop(self.clone())
    }

    /// Waits until the flag is set or `deadline` passes (`None`: no deadline); whether set.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = match deadline {
                None => self.cv.wait(done).unwrap_or_else(|p| p.into_inner()),
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => {
                        self.cv
                            .wait_timeout(done, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => return false,
                },
            };
        }
        true
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.shared.processes)
            .finish()
    }
}

impl Pool {
    /// A pool of `processes` workers (Python's `Pool(processes)`).
    ///
    /// # Errors
    /// [`ProcessError::InvalidArgument`] if `processes` is 0; another [`ProcessError`] if a
    /// worker cannot be started.
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
    /// `f` is a `fn` item or a closure that captures nothing; everything a task needs travels
    /// in its item.
    ///
    /// # Errors
    /// The first (in item order) task's error, after every task has ended.
    pub fn map<A, R, I>(&self, f: fn(A) -> R, items: I) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<A>,
    {
        self.map_impl(f, items, None)
    }

    /// [`map`](Self::map) with an explicit chunk size (tasks per message to a worker).
    ///
    /// # Errors
    /// As [`map`](Self::map); [`TaskError::InvalidArgument`] for a chunk size of 0 (Python's
    /// `ValueError`), before any task is sent.
    pub fn map_chunked<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: usize,
    ) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<A>,
    {
        self.map_impl(f, items, Some(chunksize))
    }

    /// Like [`map`](Self::map) for a function of two arguments, each item a pair of them
    /// (Python's `starmap`); [`starmap3`](Self::starmap3) takes three.
    ///
    /// # Errors
    /// As [`map`](Self::map).
    pub fn starmap<A, B, R, I>(&self, f: fn(A, B) -> R, items: I) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        B: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<(A, B)>,
    {
        self.map_impl(f, items, None)
    }

    /// [`starmap`](Self::starmap) for a function of three arguments, each item a triple.
    ///
    /// # Errors
    /// As [`map`](Self::map).
    pub fn starmap3<A, B, C, R, I>(
        &self,
        f: fn(A, B, C) -> R,
        items: I,
    ) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        B: Serialize + DeserializeOwned + Send + 'static,
        C: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<(A, B, C)>,
    {
        self.map_impl(f, items, None)
    }

    /// [`map`](Self::map) that waits at most `timeout` (from the call, item serialisation
    /// included) for the results.
    ///
    /// # Errors
    /// [`TaskError::Timeout`] if not every task has ended by then (those not ended keep
    /// running; their results are dropped), or as [`map`](Self::map).
    pub fn map_timeout<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        timeout: Duration,
    ) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<A>,
    {
        self.map_impl_timeout(f, items, None, timeout)
    }

    /// [`map_chunked`](Self::map_chunked) that waits at most `timeout`, as
    /// [`map_timeout`](Self::map_timeout).
    ///
    /// # Errors
    /// As [`map_timeout`](Self::map_timeout), and [`TaskError::InvalidArgument`] for a chunk
    /// size of 0.
    pub fn map_chunked_timeout<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: usize,
        timeout: Duration,
    ) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<A>,
    {
        self.map_impl_timeout(f, items, Some(chunksize), timeout)
    }

    /// [`starmap`](Self::starmap) that waits at most `timeout`, as
    /// [`map_timeout`](Self::map_timeout).
    ///
    /// # Errors
    /// As [`map_timeout`](Self::map_timeout).
    pub fn starmap_timeout<A, B, R, I>(
        &self,
        f: fn(A, B) -> R,
        items: I,
        timeout: Duration,
    ) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        B: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<(A, B)>,
    {
        self.map_impl_timeout(f, items, None, timeout)
    }

    /// [`starmap3`](Self::starmap3) that waits at most `timeout`, as
    /// [`map_timeout`](Self::map_timeout).
    ///
    /// # Errors
    /// As [`map_timeout`](Self::map_timeout).
    pub fn starmap3_timeout<A, B, C, R, I>(
        &self,
        f: fn(A, B, C) -> R,
        items: I,
        timeout: Duration,
    ) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        B: Serialize + DeserializeOwned + Send + 'static,
        C: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<(A, B, C)>,
    {
        self.map_impl_timeout(f, items, None, timeout)
    }

    fn map_impl_timeout<S, I>(
        &self,
        f: S,
        items: I,
        chunksize: Option<usize>,
        timeout: Duration,
    ) -> Result<Vec<S::Output>, TaskError>
    where
        S: Signature,
        S::Args: Send + 'static,
        S::Output: DeserializeOwned,
        I: IntoIterator,
        I::Item: EncodesAs<S::Args>,
    {
        if chunksize == Some(0) {
            return Err(iterators::chunksize_error());
        }
        let deadline = crate::sync::wait::deadline_after(timeout);
        let r = self.submit_map(f, items, chunksize);
        match deadline {
            None => r.get(),
            Some(d) => r.get_timeout(d.saturating_duration_since(Instant::now())),
        }
    }

    fn map_impl<S, I>(
        &self,
        f: S,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<S::Output>, TaskError>
    where
        S: Signature,
        S::Args: Send + 'static,
        S::Output: DeserializeOwned,
        I: IntoIterator,
        I::Item: EncodesAs<S::Args>,
    {
        if chunksize == Some(0) {
            return Err(iterators::chunksize_error());
        }
        self.submit_map(f, items, chunksize).get()
    }

    /// Submits a map's tasks (in the calling thread) and returns its pending result.
    fn submit_map<'i, S, I>(
        &self,
        f: S,
        items: I,
        chunksize: Option<usize>,
    ) -> AsyncResult<Vec<S::Output>>
    where
        S: Signature,
        S::Args: Send + 'static,
        S::Output: DeserializeOwned,
        I: IntoIterator,
        I::IntoIter: 'i,
        I::Item: EncodesAs<S::Args> + 'i,
    {
        let items = items.into_iter();
        let (lo, hi) = items.size_hint();
        // Python's default needs the length: collect the items if the iterator does not know.
        let (items, n): (Box<dyn Iterator<Item = I::Item> + 'i>, usize) = match (chunksize, hi) {
            (Some(_), _) => (Box::new(items), lo),
            (None, Some(hi)) if hi == lo => (Box::new(items), lo),
            (None, _) => {
                let v: Vec<I::Item> = items.collect();
                let n = v.len();
                (Box::new(v.into_iter()), n)
            }
        };
        let size = chunksize.unwrap_or_else(|| default_chunksize(n, self.shared.processes));
        let job = Job::new(n);
        job.reserve(n);
        let target = target_for(f);
        let mut chunker = Chunker::new(&self.shared, target, &job, size);
        let mut count = 0;
        for (i, a) in items.enumerate() {
            chunker.push::<S::Args, I::Item>(i, a);
            count = i + 1;
        }
        chunker.finish();
        let n = count;
        job.reserve(n);
        AsyncResult {
            job,
            tasks: n,
            decode: decode_all,
        }
    }

    /// Runs `f` on the items lazily and yields the results in order, as they come (Python's
    /// `imap`, chunk size 1). Items are taken from `items` only a few chunks ahead of the
    /// results read. The iterator has an exact length when `items` does (progress bars).
    ///
    /// If `items` panics, the panic is caught where the item is taken: the iterator yields
    /// the results of every item before it, then [`TaskError::Input`] with the panic
    /// message, then ends. (An input whose items can fail without panicking is an iterator
    /// of `Result`s mapped by the task, or cut short by the caller with `map_while`.) The
    /// same holds for [`imap_unordered`](Self::imap_unordered) and
    /// [`imap_unordered_indexed`](Self::imap_unordered_indexed), where the error comes last,
    /// with the index of the item that was not taken.
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, items: I) -> Imap<'_, R, I::IntoIter>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<A>,
    {
        self.imap_chunked(f, items, 1)
    }

    /// [`imap`](Self::imap) with `chunksize` tasks per message to a worker. A chunk size of 0
    /// takes no item: the iterator yields [`TaskError::InvalidArgument`] once, then ends.
    pub fn imap_chunked<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: usize,
    ) -> Imap<'_, R, I::IntoIter>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<A>,
    {
        Imap {
            feed: Feed::new::<A>(self, target_for(f), items.into_iter(), chunksize),
            next: 0,
            _r: PhantomData,
        }
    }

    /// Like [`imap`](Self::imap), but yields results as they finish, in any order (Python's
    /// `imap_unordered`). [`imap_unordered_indexed`](Self::imap_unordered_indexed) also tells
    /// which item each result belongs to.
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
    ) -> ImapUnordered<'_, R, I::IntoIter>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<A>,
    {
        ImapUnordered {
            inner: self.imap_unordered_indexed(f, items),
        }
    }

    /// Like [`imap_unordered`](Self::imap_unordered), with the index of its item (counted
    /// from 0 in the order of `items`) next to each result.
    pub fn imap_unordered_indexed<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
    ) -> ImapUnorderedIndexed<'_, R, I::IntoIter>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<A>,
    {
        let feed = Feed::new::<A>(self, target_for(f), items.into_iter(), 1);
        feed.job.track_arrivals();
        ImapUnorderedIndexed {
            feed,
            taken: 0,
            _r: PhantomData,
        }
    }

    /// Submits one task and returns at once (Python's `apply_async`).
    pub fn apply_async<A, R, X>(&self, f: fn(A) -> R, arg: X) -> AsyncResult<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        X: EncodesAs<A>,
    {
        let job = Job::new(1);
        job.reserve(1);
        let mut chunk = Chunk::new(&self.shared, target_for(f), &job);
        chunk.push::<A, X>(0, arg);
        if chunk.len() > 0 {
            self.shared.submit(vec![chunk]);
        }
        AsyncResult {
            job,
            tasks: 1,
            decode: |st, _| st.decode(0),
        }
    }

    /// [`apply_async`](Self::apply_async) with Python's `callback` and `error_callback`:
    /// when the task ends, `on_ok` gets its result or `on_err` its error, exactly one of
    /// them, once.
    ///
    /// Callbacks run in this process on one thread of the pool, one at a time, in the
    /// order the pool's tasks end (a slow callback holds up the others, as in Python). The
    /// [`AsyncResult`] is ready once the callback has returned; a callback that panics is
    /// ignored. [`join`](Self::join) and [`terminate`](Self::terminate) wait for the
    /// callbacks of the tasks they end.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use multiproc::Pool;
    ///
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// let r = pool.apply_async_with(square, 7, move |v| tx.send(v).unwrap(), |e| panic!("{e}"));
    /// assert_eq!(rx.recv()?, 49);
    /// assert_eq!(r.get()?, 49);
    /// # Ok(()) }
    /// ```
    pub fn apply_async_with<A, R, X>(
        &self,
        f: fn(A) -> R,
        arg: X,
        on_ok: impl FnOnce(R) + Send + 'static,
        on_err: impl FnOnce(TaskError) + Send + 'static,
    ) -> AsyncResult<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        X: EncodesAs<A>,
    {
        let r = self.apply_async(f, arg);
        self.set_callbacks(&r, on_ok, on_err);
        r
    }

    /// Like [`map`](Self::map), but returns at once (once the items are submitted) with
    /// the pending list of results (Python's `map_async`).
    pub fn map_async<A, R, I>(&self, f: fn(A) -> R, items: I) -> AsyncResult<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<A>,
    {
        self.submit_map(f, items, None)
    }

    /// [`map_async`](Self::map_async) with callbacks, as
    /// [`apply_async_with`](Self::apply_async_with): `on_ok` gets every result in item
    /// order, or `on_err` the first error in item order, once every task has ended.
    pub fn map_async_with<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        on_ok: impl FnOnce(Vec<R>) + Send + 'static,
        on_err: impl FnOnce(TaskError) + Send + 'static,
    ) -> AsyncResult<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<A>,
    {
        let r = self.submit_map(f, items, None);
        self.set_callbacks(&r, on_ok, on_err);
        r
    }

    /// [`starmap`](Self::starmap) that returns at once, as [`map_async`](Self::map_async)
    /// (Python's `starmap_async`).
    pub fn starmap_async<A, B, R, I>(&self, f: fn(A, B) -> R, items: I) -> AsyncResult<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        B: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<(A, B)>,
    {
        self.submit_map(f, items, None)
    }

    /// [`starmap_async`](Self::starmap_async) with callbacks, as
    /// [`map_async_with`](Self::map_async_with).
    pub fn starmap_async_with<A, B, R, I>(
        &self,
        f: fn(A, B) -> R,
        items: I,
        on_ok: impl FnOnce(Vec<R>) + Send + 'static,
        on_err: impl FnOnce(TaskError) + Send + 'static,
    ) -> AsyncResult<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        B: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator,
        I::Item: EncodesAs<(A, B)>,
    {
        let r = self.submit_map(f, items, None);
        self.set_callbacks(&r, on_ok, on_err);
        r
    }

    /// Has `on_ok` or `on_err` called on the callback thread once `r` has its result.
    fn set_callbacks<R: 'static>(
        &self,
        r: &AsyncResult<R>,
        on_ok: impl FnOnce(R) + Send + 'static,
        on_err: impl FnOnce(TaskError) + Send + 'static,
    ) {
        let (tasks, decode) = (r.tasks, r.decode);
        r.job.on_complete(Callback {
            after: tasks,
            tx: self.callback_sender(),
            run: Box::new(move |job: &Job| {
                let result = decode(&job.lock(), tasks);
                match result {
                    Ok(v) => on_ok(v),
                    Err(e) => on_err(e),
                }
            }),
        });
    }

    /// A sender to the callback thread, which starts here the first time.
    fn callback_sender(&self) -> std::sync::mpsc::Sender<Deferred> {
        let mut cb = self.callbacks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = cb.as_ref().and_then(|c| c.tx.as_ref()) {
            return tx.clone();
        }
        // (After a stop, a new thread runs the callbacks of tasks the stopped pool refuses.)
        let (tx, rx) = std::sync::mpsc::channel::<Deferred>();
        let finished = Arc::new(Finished::default());
        let guard = finished.guard();
        let spawned = std::thread::Builder::new()
            .name("multiproc-pool-callbacks".into())
            .spawn(move || {
                let _finished = guard;
                // Ends once the pool and every job waiting for its callback have let go.
                for d in rx {
                    d();
                }
            });
        match spawned {
            Ok(handle) => {
                *cb = Some(CallbackThread {
                    tx: Some(tx.clone()),
                    handle,
                    finished,
                });
                tx
            }
            // No thread: the sender's receiver is gone, so callbacks run where results are filed.
            Err(_) => tx,
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
    /// ended, the workers have exited and the callbacks have run; after
    /// [`terminate`](Self::terminate), at once. Joining a pool that is neither closed nor
    /// terminated closes it first.
    pub fn join(&self) {
        self.start_join();
        self.join_deadline(None);
    }

    /// [`join`](Self::join) for at most `timeout`; whether the pool has stopped. If not, it
    /// is closed and keeps going, and can be joined again.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.start_join();
        self.join_deadline(crate::sync::wait::deadline_after(timeout))
    }

    fn start_join(&self) {
        {
            let mut inbox = self.shared.inbox();
            inbox.closed = true;
            inbox.joining = true;
        }
        self.shared.poke();
    }

    fn join_thread(&self) {
        self.join_deadline(None);
    }

    /// Waits for the manager thread, then for the callbacks, until `deadline`; whether both
    /// are done.
    fn join_deadline(&self, deadline: Option<Instant>) -> bool {
        if !self.stopped.wait_until(deadline) {
            return false;
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        // Every task has ended, so every callback has been handed over: let the callback
        // thread end once it has run them, and wait for that (unless this is a callback,
        // dropping the last handle on the pool).
        let finished = {
            let mut cb = self.callbacks.lock().unwrap_or_else(|p| p.into_inner());
            match cb.as_mut() {
                None => return true,
                Some(c) if c.handle.thread().id() == std::thread::current().id() => {
                    c.tx = None;
                    return true;
                }
                Some(c) => {
                    c.tx = None;
                    c.finished.clone()
                }
            }
        };
        if !finished.wait_until(deadline) {
            return false;
        }
        let mut cb = self.callbacks.lock().unwrap_or_else(|p| p.into_inner());
        if cb.as_ref().is_some_and(|c| c.tx.is_none()) {
            if let Some(c) = cb.take() {
                let _ = c.handle.join();
            }
        }
        true
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Tasks `0..n`'s results, or the first error among them.
fn decode_all<R: DeserializeOwned>(st: &JobState, n: usize) -> Result<Vec<R>, TaskError> {
    (0..n).map(|i| st.decode(i)).collect()
}

#[allow(dead_code)]
fn assert_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Pool>();
    send_sync::<AsyncResult<u64>>();
    send_sync::<Process<u64>>();
}
