//! The worker process: [`worker_main`] attaches the pool's queues and slots, runs the
//! initializer, then takes [`Order`]s from its task queue. It names each task in its slot
//! before running it (see the slot table in `protocol`) and sends the results back in
//! batches ([`Pending`]): when a chunk ends, enough bytes wait, or the oldest result has
//! waited long enough.

use crate::primitive::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::protocol::{Failure, IDLE, Order, Report, WorkerBoot, slot_value};
use crate::process::{BytesRx, BytesTx, Status, Target, call, call_with};
use crate::segment::object::SharedObject;
use crate::value::RawArray;

/// A result larger than this fails (a report carries it whole).
const MAX_RESULT: usize = 24 << 20;

/// A worker sends a chunk's results when this many bytes are waiting...
const FLUSH_BYTES: usize = 64 << 10;
/// ...or the oldest waiting result is this old (so slow tasks report one by one).
const FLUSH_AGE: Duration = Duration::from_millis(1);

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
pub(super) fn worker_main(boot: WorkerBoot) {
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
    // SYNC(worker-slot): the manager reads our slot once we have exited.
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
            // SYNC(worker-slot)
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
        // SYNC(worker-slot)
        slot.store(IDLE, Ordering::Release);
        if boot.max_tasks.is_some_and(|m| done >= m) {
            return;
        }
    }
}
