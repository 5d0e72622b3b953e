//! What the pool hands back to read results with: [`Imap`], [`ImapUnordered`] and
//! [`ImapUnorderedIndexed`], lazy
//! iterators fed by a [`Feed`] that submits items a few chunks ahead of the reader, and the
//! [`AsyncResult`] of one task.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::job::{Chunk, Job, JobState, Want};
use super::{Pool, TaskError};
use crate::process::boot::panic_message;
use crate::process::{EncodesAs, Target};

/// The submitting side of a lazy iteration: pulls items a few chunks ahead of the reader.
pub(super) struct Feed<'p, I: Iterator> {
    pool: &'p Pool,
    target: Target,
    items: I,
    /// Adds an item to a chunk (`Chunk::push` for the function's argument type).
    push: fn(&mut Chunk, usize, I::Item),
    chunksize: usize,
    pub(super) job: Arc<Job>,
    submitted: usize,
    exhausted: bool,
    /// The input iterator panicked (with this message) after `submitted` items; the reader
    /// gets it as [`TaskError::Input`] after their results.
    /// Why the feed stopped early (the input iterator panicked, or the chunk size was 0):
    /// the result after the last one submitted.
    pub(super) failed: Option<TaskError>,
    /// Made while the pool was open: its items are taken after `close` too (as if all had
    /// been submitted before it), until `join`. Counted in `Inbox::open_feeds` until done.
    admitted: bool,
}

impl<I: Iterator> Feed<'_, I> {
    /// No more items will come from this iteration.
    fn release(&mut self) {
        self.exhausted = true;
        if std::mem::take(&mut self.admitted) {
            self.pool.shared.inbox().open_feeds -= 1;
            self.pool.shared.poke();
        }
    }
}

impl<I: Iterator> Drop for Feed<'_, I> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<'p, I: Iterator> Feed<'p, I> {
    /// A feed of `items`, each an `A` or a borrowed form of it.
    pub(super) fn new<A>(pool: &'p Pool, target: Target, items: I, chunksize: usize) -> Self
    where
        A: Send + 'static,
        I::Item: EncodesAs<A>,
    {
        let admitted = {
            let mut inbox = pool.shared.inbox();
            // A chunk size of 0 takes nothing: it need not keep the pool's manager running.
            let open = !(inbox.closed || inbox.stopped || inbox.terminate) && chunksize != 0;
            inbox.open_feeds += usize::from(open);
            open
        };
        Self {
            pool,
            target,
            items,
            push: |chunk, index, arg| chunk.push::<A, I::Item>(index, arg),
            chunksize: chunksize.max(1),
            job: Job::new(0),
            submitted: 0,
            // A chunk size of 0 takes nothing and ends with the error (Python's ValueError).
            exhausted: chunksize == 0,
            failed: (chunksize == 0).then(chunksize_error),
            admitted,
        }
    }

    /// Results still to come for a reader that has read `read`: those submitted and not
    /// read, plus the items not pulled yet.
    fn remaining(&self, read: usize) -> (usize, Option<usize>) {
        let queued = self.submitted - read + usize::from(self.failed.is_some());
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
            while self.submitted - first < self.chunksize {
                // A panic in the input ends the input; the reader learns of it after the
                // results of the items taken before it. The iterator is not used again.
                let items = &mut self.items;
                let next = std::panic::catch_unwind(AssertUnwindSafe(|| items.next()));
                let a = match next {
                    Ok(Some(a)) => a,
                    Ok(None) => break,
                    Err(payload) => {
                        self.failed = Some(TaskError::Input(panic_message(payload.as_ref())));
                        break;
                    }
                };
                self.job.reserve(self.submitted + 1);
                (self.push)(&mut chunk, self.submitted, a);
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
pub struct Imap<'p, R, I: Iterator> {
    pub(super) feed: Feed<'p, I>,
    pub(super) next: usize,
    pub(super) _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned, I: Iterator> Imap<'_, R, I> {
    /// [`next`](Iterator::next) that waits at most `timeout` for the next result (Python's
    /// `next(timeout)`): `Some(Err(TaskError::Timeout))` if it has not come by then, and it
    /// is still the next one.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, TaskError>> {
        self.next_deadline(crate::sync::wait::deadline_after(timeout))
    }

    fn next_deadline(&mut self, deadline: Option<Instant>) -> Option<Result<R, TaskError>> {
        self.feed.top_up(self.next);
        if self.next >= self.feed.submitted {
            return self.feed.failed.take().map(Err);
        }
        let i = self.next;
        let Some(mut st) = self
            .feed
            .job
            .wait_until(Want::Index(i), deadline, |st| st.is_ready(i))
        else {
            return Some(Err(TaskError::Timeout));
        };
        self.next += 1;
        Some(st.take(i))
    }
}

impl<R: DeserializeOwned, I: Iterator> Iterator for Imap<'_, R, I> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_deadline(None)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.feed.remaining(self.next)
    }
}

impl<R: DeserializeOwned, I: ExactSizeIterator> ExactSizeIterator for Imap<'_, R, I> {}

/// Results of [`Pool::imap_unordered`], as they finish.
pub struct ImapUnordered<'p, R, I: Iterator> {
    pub(super) inner: ImapUnorderedIndexed<'p, R, I>,
}

impl<R: DeserializeOwned, I: Iterator> ImapUnordered<'_, R, I> {
    /// [`next`](Iterator::next) that waits at most `timeout` for a result:
    /// `Some(Err(TaskError::Timeout))` if none has come by then.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, TaskError>> {
        self.inner
            .next_deadline(crate::sync::wait::deadline_after(timeout))
            .map(|(_, r)| r)
    }
}

impl<R: DeserializeOwned, I: Iterator> Iterator for ImapUnordered<'_, R, I> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(_, r)| r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<R: DeserializeOwned, I: ExactSizeIterator> ExactSizeIterator for ImapUnordered<'_, R, I> {}

/// Results of [`Pool::imap_unordered_indexed`] as they finish: (item index, result).
pub struct ImapUnorderedIndexed<'p, R, I: Iterator> {
    pub(super) feed: Feed<'p, I>,
    pub(super) taken: usize,
    pub(super) _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned, I: Iterator> ImapUnorderedIndexed<'_, R, I> {
    /// The next result as it comes, waiting until `deadline`: `Some((_, Err(Timeout)))`
    /// if none has come by then (for `ImapUnordered::next_timeout`, which drops the index).
    pub(super) fn next_deadline(
        &mut self,
        deadline: Option<Instant>,
    ) -> Option<(usize, Result<R, TaskError>)> {
        self.feed.top_up(self.taken);
        if self.taken >= self.feed.submitted {
            let at = self.feed.submitted;
            return self.feed.failed.take().map(|e| (at, Err(e)));
        }
        let Some(mut st) = self.feed.job.wait_until(Want::Any, deadline, |st| {
            st.arrived.as_ref().is_some_and(|a| !a.is_empty())
        }) else {
            return Some((self.feed.submitted, Err(TaskError::Timeout)));
        };
        self.taken += 1;
        let i = st
            .arrived
            .as_mut()
            .and_then(VecDeque::pop_front)
            .expect("checked");
        Some((i, st.take(i)))
    }
}

impl<R: DeserializeOwned, I: Iterator> Iterator for ImapUnorderedIndexed<'_, R, I> {
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        self.next_deadline(None)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.feed.remaining(self.taken)
    }
}

impl<R: DeserializeOwned, I: ExactSizeIterator> ExactSizeIterator
    for ImapUnorderedIndexed<'_, R, I>
{
}

/// The pending result of [`Pool::apply_async`] (an `R`), or of [`Pool::map_async`] and
/// [`Pool::starmap_async`] (a `Vec` of results).
///
/// With a callback (the `*_with` forms), the result is ready only once its callback has
/// returned, as in Python: after [`wait`](Self::wait) or [`get`](Self::get) the callback has
/// run.
pub struct AsyncResult<R> {
    pub(super) job: Arc<Job>,
    /// Tasks of the submission.
    pub(super) tasks: usize,
    /// Reads the submission's result out of its job, given `tasks`.
    pub(super) decode: fn(&JobState, usize) -> Result<R, TaskError>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("tasks", &self.tasks)
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> AsyncResult<R> {
    fn is_ready(st: &JobState, tasks: usize) -> bool {
        st.done >= tasks && !st.callback_pending
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Option<MutexGuard<'_, JobState>> {
        let tasks = self.tasks;
        self.job
            .wait_until(Want::Count(tasks), deadline, |st| Self::is_ready(st, tasks))
    }

    /// Waits for the result (and the callback, if any) and returns it (as often as asked).
    ///
    /// # Errors
    /// The task's [`TaskError`]; for a map, the first error in item order.
    pub fn get(&self) -> Result<R, TaskError> {
        let st = self.wait_deadline(None).expect("no deadline");
        (self.decode)(&st, self.tasks)
    }

    /// Waits at most `timeout` for the result.
    ///
    /// # Errors
    /// [`TaskError::Timeout`] if it is not ready by then, or the task's error (as
    /// [`get`](Self::get)).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, TaskError> {
        match self.wait_deadline(crate::sync::wait::deadline_after(timeout)) {
            Some(st) => (self.decode)(&st, self.tasks),
            None => Err(TaskError::Timeout),
        }
    }

    /// Waits until the result is ready, without taking it.
    pub fn wait(&self) {
        let _ = self.wait_deadline(None);
    }

    /// Waits at most `timeout` until the result is ready; whether it is.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_deadline(crate::sync::wait::deadline_after(timeout))
            .is_some()
    }

    /// Whether the result is ready: every task has ended (with a result or an error) and
    /// the callback, if any, has returned.
    pub fn ready(&self) -> bool {
        Self::is_ready(&self.job.lock(), self.tasks)
    }

    /// Whether every task succeeded, once the result is ready; `None` before (Python's
    /// `successful()`, which raises then).
    pub fn successful(&self) -> Option<bool> {
        let st = self.job.lock();
        Self::is_ready(&st, self.tasks).then(|| st.all_succeeded(self.tasks))
    }
}

/// The error of a chunk size of 0.
pub(super) fn chunksize_error() -> TaskError {
    TaskError::InvalidArgument("chunksize must be at least 1, not 0".into())
}
