//! Tasks (JoinableQueue): unfinished tasks are the messages ever published minus those marked
//! done (see `TaskLine`).

use crate::primitive::Ordering;
use std::time::Instant;

use super::Ring;
use super::layout::unpack;
use crate::sync::wait::{remaining, sleep_unless, wake_sleepers};

impl Ring {
    fn published(&self) -> u32 {
        unpack(self.st().tail.pos.load(Ordering::SeqCst)).0
    }

    /// Marks one task done; `false` if there was none unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let t = &self.st().tasks;
        let mut done = t.done.load(Ordering::SeqCst);
        loop {
            let published = self.published();
            if published == done {
                return false;
            }
            match t.done.compare_exchange(
                done,
                done.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => done = now,
            }
        }
        wake_sleepers(&t.done, &t.sleepers, i32::MAX as u32);
        true
    }

    /// Marks done the tasks of `dropped` messages an immediate shutdown took out of the ring,
    /// as far as tasks are unfinished (so `done` never passes the published count, whatever
    /// `dropped` says), and wakes `join`.
    pub(super) fn finish_dropped(&self, dropped: u32) {
        let t = &self.st().tasks;
        let mut done = t.done.load(Ordering::SeqCst);
        loop {
            let unfinished = self.published().wrapping_sub(done);
            let add = dropped.min(unfinished);
            if add == 0 {
                return;
            }
            match t.done.compare_exchange(
                done,
                done.wrapping_add(add),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => done = now,
            }
        }
        wake_sleepers(&t.done, &t.sleepers, i32::MAX as u32);
    }

    /// Waits until every task is done; `false` on timeout.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let t = &self.st().tasks;
        loop {
            let done = t.done.load(Ordering::SeqCst);
            if self.published() == done {
                return true;
            }
            let Some(left) = remaining(deadline) else {
                return false;
            };
            sleep_unless(&t.done, done, &t.sleepers, 1, left, || {
                self.published() == done
            });
        }
    }

    pub(crate) fn unfinished(&self) -> u32 {
        self.published()
            .wrapping_sub(self.st().tasks.done.load(Ordering::SeqCst))
    }
}
