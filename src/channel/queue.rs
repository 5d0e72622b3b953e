//! `Queue`, its one-sided views `Sender` and `Receiver`, and `JoinableQueue`.

use crate::primitive::{AtomicBool, AtomicUsize};
use crate::primitive::{AtomicU32, Ordering};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::time::{Duration, Instant};

use super::codec::{Codec, DefaultCodec, EncodeError};
use super::ring::{ChildSlot, Dest, GetFail, PutFail, Resume, Ring, Role};
use crate::MAX_MESSAGE_LEN;
use crate::error::{
    GetError, GetTimeoutError, OpenError, PutError, PutTimeoutError, TaskDoneError, TryGetError,
    TryPutError,
};
use crate::segment::object::{Builder, sealed};
use crate::segment::{ForeignMut, Segment, Slot, kind};
use crate::sys;

/// Creation parameters of a queue.
#[derive(Clone, Copy, Debug)]
// `pub` only because the sealed `Object` trait's `Config` must be; no path outside the crate
// reaches it, so it is not part of the public API.
#[allow(unreachable_pub)]
pub struct QueueConfig {
    /// As the caller gave it; `check` keeps it to `1..=u32::MAX`.
    messages: usize,
    bytes: usize,
}

/// Most bytes of message data a queue can have (2 GiB).
const MAX_BYTES: usize = 1 << 31;

impl QueueConfig {
    /// Rejects a capacity no queue can have (see `Builder::capacity` and `max_bytes`).
    fn check(&self) -> Result<(), OpenError> {
        if self.messages == 0 || u32::try_from(self.messages).is_err() {
            return Err(OpenError::InvalidArgument(
                "queue capacity must be 1 to 4294967295 (u32::MAX) messages",
            ));
        }
        if self.bytes > MAX_BYTES {
            return Err(OpenError::InvalidArgument(
                "queue max_bytes must be at most 2147483648 (2 GiB)",
            ));
        }
        Ok(())
    }

    /// The message capacity, once `check` accepted it.
    fn max_messages(&self) -> u32 {
        u32::try_from(self.messages).unwrap_or(u32::MAX)
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            messages: 1024,
            bytes: 1 << 20,
        }
    }
}

/// One attached handle: the ring plus the role this handle plays, registered for the process
/// that holds it. Clones share the registration, so cloning never touches the shared peer
/// table and cannot fail. Across `fork` the child registers its inherited handles at once (see
/// [`reattach_after_fork`]), so a parent that drops its copy right after forking does not
/// disconnect the child.
#[derive(Debug)]
pub(crate) struct Endpoint {
    inner: Arc<Attached>,
}

#[derive(Debug)]
struct Attached {
    ring: Arc<Ring>,
    role: Role,
    /// The process this registration is counted for.
    pid: AtomicU32,
    /// `Endpoint`s sharing this registration; the last one to go unregisters it.
    handles: AtomicUsize,
    /// Cleared when the last `Endpoint` is dropped (it unregisters itself then).
    alive: AtomicBool,
    /// A message a timed get could not finish, with the get lock (see `Ring::get_msg`).
    resume: Resume,
}

impl Drop for Attached {
    fn drop(&mut self) {
        // The last handle is gone: the rest of a message in the middle is skipped by the next
        // consumer.
        self.ring.release_resume(&self.resume);
    }
}

/// Every live handle of this process, for the fork hooks.
static LIVE: Mutex<Vec<Weak<Attached>>> = Mutex::new(Vec::new());

/// What [`before_fork`] counted for the coming child, held strongly: a handle another thread
/// drops between that count and the fork itself still has its count given back by the child
/// (the list is inherited). Emptied again in the parent after the fork.
static PREPARED: Mutex<Prepared> = Mutex::new(Prepared::new());

/// The counts taken for a child about to be forked.
#[derive(Debug, Default)]
struct Prepared {
    /// Each registration counted for the child, with the peer slot it was counted in.
    handles: Vec<(Arc<Attached>, ChildSlot)>,
    /// The slot reserved in each ring (one per ring).
    slots: Vec<(Arc<Ring>, ChildSlot)>,
    /// The forking thread's children before the fork (`None`: unknown), so the parent can tell
    /// which process the fork made.
    children_before: Option<Vec<u32>>,
}

impl Prepared {
    const fn new() -> Self {
        Self {
            handles: Vec::new(),
            slots: Vec::new(),
            children_before: None,
        }
    }

    /// The slot reserved for the child in `ring`, reserving one on first use.
    fn slot_in(&mut self, ring: &Arc<Ring>) -> Option<ChildSlot> {
        if let Some((_, slot)) = self.slots.iter().find(|(r, _)| Arc::ptr_eq(r, ring)) {
            return Some(*slot);
        }
        let slot = ring.reserve_for_child()?;
        self.slots.push((ring.clone(), slot));
        Some(slot)
    }
}

fn remember(attached: &Arc<Attached>) {
    sys::on_fork(before_fork, after_fork_in_parent, reattach_after_fork);
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(attached));
}

/// Lets go of the messages this process's handles on `ring` (this one, its clones, and the
/// handles made from it) left half-taken, with the get lock they keep (see `Ring::get_msg`).
fn release_resumes(ring: &Arc<Ring>) {
    let mine: Vec<Arc<Attached>> = lock_live()
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|a| Arc::ptr_eq(&a.ring, ring))
        .collect();
    for a in mine {
        a.ring.release_resume(&a.resume);
    }
}

type LiveGuard = MutexGuard<'static, Vec<Weak<Attached>>>;

std::thread_local! {
    /// The registry, locked by [`before_fork`] in the forking thread and held across the
    /// fork, so that the child's copy of the lock is not left held by another thread of the
    /// parent: the parent and child hooks (same thread, same thread-local) release it.
    static HELD_ACROSS_FORK: std::cell::RefCell<Option<LiveGuard>> =
        const { std::cell::RefCell::new(None) };
}

fn lock_live() -> LiveGuard {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs in the parent just before `fork`: counts every live handle once more, on behalf of the
/// child that will inherit a copy, so that the parent dropping its copy right after the fork
/// cannot look like the last handle going away. The counts go into a peer slot of their own,
/// which names the child once the fork is done (see [`after_fork_in_parent`]): if the child
/// dies before it could take them over, its death frees them.
fn before_fork() {
    // Other threads hold the registry only for a moment: wait for it, and keep it locked until
    // the fork is done.
    let live = lock_live();
    // Another thread forking at this very moment holds the list: its child gets the counts,
    // ours registers its handles on first use.
    let Ok(mut prepared) = PREPARED.try_lock() else {
        HELD_ACROSS_FORK.with(|h| *h.borrow_mut() = Some(live));
        return;
    };
    *prepared = Prepared::new();
    let me = sys::current_process().tid;
    for a in live.iter().filter_map(Weak::upgrade) {
        if a.pid.load(Ordering::Relaxed) != me || !a.alive.load(Ordering::Acquire) {
            continue;
        }
        // No free slot: the child registers this handle on first use instead.
        if let Some(slot) = prepared.slot_in(&a.ring) {
            a.ring.count_for_child(slot, a.role);
            prepared.handles.push((a, slot));
        }
    }
    if !prepared.slots.is_empty() {
        prepared.children_before = sys::thread_children();
    }
    drop(prepared);
    HELD_ACROSS_FORK.with(|h| *h.borrow_mut() = Some(live));
}

/// Runs in the parent right after `fork`: names the child in the slots counted for it (or
/// frees them if the fork made no child that still lives), and lets go of the handles.
fn after_fork_in_parent() {
    drop(HELD_ACROSS_FORK.with(|h| h.borrow_mut().take()));
    let Ok(mut prepared) = PREPARED.try_lock() else {
        return;
    };
    if !prepared.slots.is_empty() {
        // The fork's child is the one child of this thread that was not there before.
        let settle = match (&prepared.children_before, sys::thread_children()) {
            (Some(before), Some(after)) => {
                let mut new = after.into_iter().filter(|pid| !before.contains(pid));
                match (new.next(), new.next()) {
                    (Some(pid), None) => Some(Some(pid)),
                    (None, _) => Some(None), // no child (the fork failed), or it is gone
                    (Some(_), Some(_)) => None,
                }
            }
            _ => None,
        };
        // Unknown (no `/proc` list, or several new children): the slot stays in our name
        // until the child takes it over.
        if let Some(child) = settle {
            for (ring, slot) in &prepared.slots {
                ring.settle_child_slot(*slot, child);
            }
        }
    }
    *prepared = Prepared::new();
}

/// Runs in a child right after `fork`: takes over the slots its parent counted its inherited
/// handles in, gives back the counts of handles dropped meanwhile, and registers every other
/// inherited handle that still exists.
fn reattach_after_fork() {
    // Ours since before the fork (see `before_fork`); `None` only if the fork did not go
    // through our prepare hook.
    let held = HELD_ACROSS_FORK.with(|h| h.borrow_mut().take());
    let prepared = match PREPARED.try_lock() {
        Ok(mut p) => std::mem::take(&mut *p),
        Err(TryLockError::Poisoned(p)) => std::mem::take(&mut *p.into_inner()),
        Err(TryLockError::WouldBlock) => return,
    };
    let me = sys::current_process();
    let adopted: Vec<bool> = prepared
        .slots
        .iter()
        .map(|(ring, slot)| ring.adopt_child_slot(*slot))
        .collect();
    for (a, slot) in prepared.handles {
        let ours = prepared
            .slots
            .iter()
            .zip(&adopted)
            .any(|((ring, s), &ok)| ok && *s == slot && Arc::ptr_eq(ring, &a.ring));
        let alive = a.alive.load(Ordering::Acquire);
        if ours {
            if alive {
                a.pid.store(me.tid, Ordering::Relaxed);
            } else {
                // Dropped by another parent thread after the count: give it back.
                a.ring.detach_peer(a.role, me.tid);
            }
        } else if alive && a.ring.attach(a.role).is_ok() {
            a.pid.store(me.tid, Ordering::Relaxed);
        }
    }
    // Handles made after the count (nothing to give back) register now too.
    let Some(live) = held else {
        return;
    };
    for a in live.iter().filter_map(Weak::upgrade) {
        if a.pid.load(Ordering::Relaxed) != me.tid
            && a.alive.load(Ordering::Acquire)
            && a.ring.attach(a.role).is_ok()
        {
            a.pid.store(me.tid, Ordering::Relaxed);
        }
    }
}

pub(crate) const BOTH: Role = Role {
    send: true,
    recv: true,
};
pub(crate) const SEND: Role = Role {
    send: true,
    recv: false,
};
pub(crate) const RECV: Role = Role {
    send: false,
    recv: true,
};

/// Marker for a handle's message type and codec (`fn(T) -> T` keeps it `Send + Sync` for any
/// `T`: the handle stores no `T`).
type Types<T, C> = PhantomData<(fn(T) -> T, C)>;

/// How an endpoint call that may wait failed, before the public method names it: it ran out of
/// time (the ring stayed full or empty until the deadline), or it failed in a way every form of
/// the call shares. The try forms call running out of time `Full` or `Empty`, the timed forms
/// `Timeout`; the blocking forms, with no deadline, never run out of time.
pub(crate) enum Failed<E, V = ()> {
    /// The deadline passed (or was now) with no room or no message; the value comes back.
    OutOfTime(V),
    /// Any other failure.
    Error(E),
}

impl<T> Failed<PutError<T>, T> {
    pub(super) fn try_put(self) -> TryPutError<T> {
        match self {
            Self::OutOfTime(v) => TryPutError::Full(v),
            Self::Error(e) => e.into(),
        }
    }

    pub(super) fn put_timeout(self) -> PutTimeoutError<T> {
        match self {
            Self::OutOfTime(v) => PutTimeoutError::Timeout(v),
            Self::Error(e) => e.into(),
        }
    }
}

impl Failed<GetError> {
    pub(super) fn try_get(self) -> TryGetError {
        match self {
            Self::OutOfTime(()) => TryGetError::Empty,
            Self::Error(e) => e.into(),
        }
    }

    pub(super) fn get_timeout(self) -> GetTimeoutError {
        match self {
            Self::OutOfTime(()) => GetTimeoutError::Timeout,
            Self::Error(e) => e.into(),
        }
    }
}

/// A put with no deadline: the ring never runs out of time for it; if it ever did, waiting on is
/// what a blocking put does. `put` borrows the value, which comes back only in an error: a large
/// value is never moved through the loop (see `Endpoint::put`).
#[inline]
fn put_blocking<V>(
    value: V,
    mut put: impl FnMut(&V) -> Result<(), PutRefFail>,
) -> Result<(), PutError<V>> {
    loop {
        match put(&value) {
            Ok(()) => return Ok(()),
            Err(PutRefFail::Ring(PutFail::Full)) => {}
            Err(f) => {
                return match f.with_value(value) {
                    Failed::Error(e) => Err(e),
                    Failed::OutOfTime(_) => unreachable!("`Full` is handled above"),
                };
            }
        }
    }
}

/// A get with no deadline: as [`put_blocking`].
#[inline]
fn get_blocking<R>(mut get: impl FnMut() -> Result<R, Failed<GetError>>) -> Result<R, GetError> {
    loop {
        match get() {
            Ok(r) => return Ok(r),
            Err(Failed::Error(e)) => return Err(e),
            Err(Failed::OutOfTime(())) => {}
        }
    }
}

/// Why a put failed, before the value is handed back to the caller (`with_value`).
pub(crate) enum PutRefFail {
    /// The ring refused it.
    Ring(PutFail),
    /// The codec could not encode it.
    Encode(EncodeError),
}

impl PutRefFail {
    #[cold]
    fn with_value<T>(self, v: T) -> Failed<PutError<T>, T> {
        match self {
            Self::Ring(f) => put_failed(f, v),
            Self::Encode(e) => Failed::Error(PutError::Encode(v, e)),
        }
    }
}

pub(super) fn put_failed<T>(f: PutFail, v: T) -> Failed<PutError<T>, T> {
    Failed::Error(match f {
        PutFail::Full => return Failed::OutOfTime(v),
        PutFail::Disconnected => PutError::Disconnected(v),
        PutFail::Closed => PutError::Closed(v),
        PutFail::ShutDown => PutError::ShutDown(v),
        PutFail::TooBig | PutFail::Encode => PutError::TooLarge(v),
        PutFail::Corrupted(what) => PutError::Corrupted(v, what),
    })
}

pub(super) fn get_failed(f: GetFail) -> Failed<GetError> {
    Failed::Error(match f {
        GetFail::Empty => return Failed::OutOfTime(()),
        GetFail::Disconnected => GetError::Disconnected,
        GetFail::ShutDown => GetError::ShutDown,
        GetFail::Corrupted(what) => GetError::Corrupted(what),
        GetFail::BufferTooSmall(n) => GetError::BufferTooSmall(n),
        GetFail::Fragmented => GetError::Corrupted("fragment"),
    })
}

/// A put with no deadline ran out of time (the ring never reports that; a bug if it did).
const NO_DEADLINE: &str = "a put with no deadline ran out of time";

/// A decoder said it produced a value and did not (a bug in a codec, never a peer's doing).
const NO_VALUE: &str = "a decoder reported a value it did not produce";

pub(super) fn now() -> Option<Instant> {
    Some(Instant::now())
}

pub(super) fn after(timeout: Duration) -> Option<Instant> {
    crate::sync::wait::deadline_after(timeout)
}

impl Endpoint {
    pub(crate) fn new(ring: Arc<Ring>, role: Role) -> Result<Self, OpenError> {
        let pid = ring.attach(role)?;
        let inner = Arc::new(Attached {
            ring,
            role,
            pid: AtomicU32::new(pid),
            handles: AtomicUsize::new(1),
            alive: AtomicBool::new(true),
            resume: Resume::default(),
        });
        remember(&inner);
        Ok(Self { inner })
    }

    pub(crate) fn open(seg: Segment, role: Role) -> Result<Self, OpenError> {
        Self::new(Arc::new(Ring::from_segment(seg)?), role)
    }

    pub(crate) fn ring(&self) -> &Ring {
        &self.inner.ring
    }

    /// The message a timed get left half-taken on this handle, if any.
    pub(super) fn resume(&self) -> &Resume {
        &self.inner.resume
    }

    /// A handle inherited across `fork` that the fork hook could not register registers on
    /// first use.
    #[inline]
    pub(super) fn ensure_attached(&self) {
        let me = sys::current_process().tid;
        if self.inner.pid.load(Ordering::Relaxed) != me {
            self.attach_here(me);
        }
    }

    #[cold]
    fn attach_here(&self, me: u32) {
        if self.inner.ring.attach(self.inner.role).is_ok() {
            self.inner.pid.store(me, Ordering::Relaxed);
        }
    }

    /// Puts a copy of `*value`. The value is borrowed, not moved: a large value passed down
    /// by value would be copied between stack slots on the way, and the compiler lays those
    /// slots out at distances that can make the copies slow (see `segment::foreign`'s
    /// `copy_bytes`). The caller hands the value back in the error.
    #[inline]
    pub(crate) fn put<T, C: Codec<T>>(
        &self,
        value: &T,
        deadline: Option<Instant>,
    ) -> Result<(), PutRefFail> {
        self.ensure_attached();
        let len = C::put_len(value).map_err(PutRefFail::Encode)?;
        if self.ring().needs_fragments(len) {
            return self.put_large::<T, C>(value, len, deadline);
        }
        let mut failed = None;
        match self.ring().put_with(len, deadline, |room| {
            C::encode_foreign(value, room)
                .map_err(|e| failed = Some(e))
                .is_ok()
        }) {
            Ok(()) => Ok(()),
            Err(PutFail::Encode) => {
                Err(PutRefFail::Encode(failed.unwrap_or_else(|| {
                    EncodeError("the encoding did not fit".into())
                })))
            }
            Err(f) => Err(PutRefFail::Ring(f)),
        }
    }

    /// Puts a value whose encoding needs fragments: encodes it into a private vector, then
    /// streams that (see `Ring::put_fragments`).
    #[cold]
    fn put_large<T, C: Codec<T>>(
        &self,
        value: &T,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<(), PutRefFail> {
        if len > MAX_MESSAGE_LEN {
            return Err(PutRefFail::Ring(PutFail::TooBig));
        }
        let mut bytes = vec![0u8; len];
        C::encode_foreign(value, ForeignMut::private(&mut bytes)).map_err(PutRefFail::Encode)?;
        self.ring()
            .put_fragments(&bytes, deadline)
            .map_err(PutRefFail::Ring)
    }

    pub(crate) fn put_bytes(
        &self,
        bytes: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), PutRefFail> {
        self.ensure_attached();
        if self.ring().needs_fragments(bytes.len()) {
            return self
                .ring()
                .put_fragments(bytes, deadline)
                .map_err(PutRefFail::Ring);
        }
        self.ring()
            .put_with(bytes.len(), deadline, |mut room| room.write_at(0, bytes))
            .map_err(PutRefFail::Ring)
    }

    /// Puts the values of `values` from the first on, as many as fit (after waiting until
    /// `deadline` for room for the first), under one hold of the put lock; returns how many.
    pub(crate) fn put_batch<T, C: Codec<T>>(
        &self,
        values: &[T],
        deadline: Option<Instant>,
    ) -> Result<usize, PutRefFail> {
        self.ensure_attached();
        // A value that needs fragments goes alone (a batch ends before one anyway). Each
        // length is asked for once (see `Ring::put_batch`): the first one is passed on.
        let Some(first) = values.first() else {
            return Ok(0);
        };
        let first_len = C::put_len(first).map_err(PutRefFail::Encode)?;
        if self.ring().needs_fragments(first_len) {
            return self
                .put_large::<T, C>(first, first_len, deadline)
                .map(|()| 1);
        }
        let failed = std::cell::Cell::new(None);
        let len = |i: usize| match if i == 0 {
            Ok(first_len)
        } else {
            C::put_len(&values[i])
        } {
            Ok(len) => len,
            Err(e) => {
                failed.set(Some(e));
                usize::MAX // more than any ring takes: the batch ends before this value
            }
        };
        let r = self
            .ring()
            .put_batch(values.len(), deadline, len, |i, room| {
                C::encode_foreign(&values[i], room)
                    .map_err(|e| failed.set(Some(e)))
                    .is_ok()
            });
        match r {
            Ok(n) => Ok(n),
            Err(f @ (PutFail::Encode | PutFail::TooBig)) => match failed.take() {
                Some(e) => Err(PutRefFail::Encode(e)),
                None if f == PutFail::Encode => Err(PutRefFail::Encode(EncodeError(
                    "the encoding did not fit".into(),
                ))),
                None => Err(PutRefFail::Ring(f)),
            },
            Err(f) => Err(PutRefFail::Ring(f)),
        }
    }

    /// Takes up to `max` messages (after waiting until `deadline` for the first) under one
    /// hold of the get lock, appending them to `out`; returns how many were taken. A message
    /// that does not decode ends the batch and is the error; those before it stay in `out`.
    pub(crate) fn get_batch<T, C: Codec<T>>(
        &self,
        deadline: Option<Instant>,
        out: &mut Vec<T>,
        max: usize,
    ) -> Result<usize, Failed<GetError>> {
        self.ensure_attached();
        let mut bad = None;
        let r = self.ring().get_batch(
            deadline,
            max,
            &self.inner.resume,
            |m| match C::decode_foreign(m) {
                Ok(v) => {
                    out.push(v);
                    true
                }
                Err(e) => {
                    bad = Some(e);
                    false
                }
            },
        );
        match (r, bad) {
            (Ok(_), Some(e)) => Err(Failed::Error(GetError::Decode(e))),
            (Ok(n), None) => Ok(n),
            (Err(f), _) => Err(get_failed(f)),
        }
    }

    /// Takes a message, decoding it into `slot`. Like `put`, the value goes straight to the
    /// caller's frame instead of being returned through this one.
    #[inline]
    pub(crate) fn get<T, C: Codec<T>>(
        &self,
        deadline: Option<Instant>,
        slot: &mut Slot<T>,
    ) -> Result<(), Failed<GetError>> {
        self.ensure_attached();
        match self
            .ring()
            .get_with(deadline, &self.inner.resume, |m| C::decode_into(m, slot))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failed::Error(GetError::Decode(e))),
            Err(f) => Err(get_failed(f)),
        }
    }

    pub(crate) fn get_bytes(&self, deadline: Option<Instant>) -> Result<Vec<u8>, Failed<GetError>> {
        self.ensure_attached();
        self.ring()
            .get_msg(
                deadline,
                None,
                &self.inner.resume,
                |m, _| m.to_vec(),
                |dest| match dest {
                    Dest::Vec(v) => v,
                    Dest::Buf(b, n) => b[..n].to_vec(),
                },
            )
            .map_err(get_failed)
    }

    pub(crate) fn get_bytes_into(
        &self,
        buf: &mut [u8],
        deadline: Option<Instant>,
    ) -> Result<usize, Failed<GetError>> {
        self.ensure_attached();
        self.ring()
            .get_msg(
                deadline,
                Some(buf),
                &self.inner.resume,
                |m, buf| {
                    if let Some(buf) = buf {
                        m.copy_to(&mut buf[..m.len()]);
                    }
                    m.len()
                },
                |dest| match dest {
                    Dest::Vec(v) => v.len(),
                    Dest::Buf(_, n) => n,
                },
            )
            .map_err(get_failed)
    }
}

impl Clone for Endpoint {
    /// Another handle on the same registration: no shared state is touched, so a clone cannot
    /// fail, however full or scribbled the peer table.
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let a = &self.inner;
        if a.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        a.alive.store(false, Ordering::Release);
        a.ring.detach(a.role, a.pid.load(Ordering::Relaxed));
    }
}

/// Implements `sealed::Object`, `open` and `Clone` for a handle type wrapping an `Endpoint`.
macro_rules! endpoint_type {
    ($ty:ident, $kind:expr, $role:expr) => {
        // No codec bound: the builder of a queue whose message type is still to be inferred
        // (`Queue::builder()...create()?` before the first `put`) must be nameable.
        impl<T, C> sealed::Object for $ty<T, C> {
            type Config = QueueConfig;
            const KIND: u32 = $kind;

            fn check(config: &QueueConfig) -> Result<(), OpenError> {
                config.check()
            }

            fn payload_len(config: &QueueConfig) -> usize {
                Ring::payload_len(Ring::round_capacity(config.bytes))
            }

            fn init(payload: crate::segment::object::FreshPayload<'_>, config: &QueueConfig) {
                Ring::init(
                    payload,
                    Ring::round_capacity(config.bytes),
                    config.max_messages(),
                )
            }

            fn from_segment(seg: Segment) -> Result<Self, OpenError> {
                Ok(Self {
                    ep: Endpoint::open(seg, $role)?,
                    _types: PhantomData,
                })
            }

            fn segment(&self) -> &Segment {
                self.ep.ring().segment()
            }
        }

        impl<T> $ty<T> {
            /// A builder with the default codec: capacity in messages and bytes, name, backing.
            /// As with `new`, the message type can come from the first `put`;
            /// [`codec`](Builder::codec) chooses another codec.
            ///
            /// ```
            /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
            /// use multiproc::{Plain, Queue};
            /// let q = Queue::builder().capacity(64).create()?;
            /// q.put(5u64)?;
            /// assert_eq!(q.get()?, 5);
            /// let raw = Queue::builder().codec::<Plain>().capacity(8).create()?;
            /// raw.put([1u32, 2])?;
            /// assert_eq!(raw.get()?, [1, 2]);
            /// # Ok(()) }
            /// ```
            pub fn builder() -> Builder<Self> {
                Builder::with_config(QueueConfig::default())
            }
        }

        impl<T, C: Codec<T>> $ty<T, C> {
            /// Opens the existing queue named `name`.
            ///
            /// # Errors
            /// As [`Builder::open`].
            pub fn open(name: &str) -> Result<Self, OpenError> {
                Builder::<Self>::with_config(QueueConfig::default())
                    .name(name)
                    .open()
            }

            /// Most messages the queue holds at once.
            pub fn capacity(&self) -> usize {
                self.ep.ring().capacity_messages()
            }

            /// Largest message (encoded bytes) the queue carries: [`MAX_MESSAGE_LEN`]
            /// (4 GiB - 1), whatever its byte capacity. A message longer than half the
            /// capacity is streamed through in fragments, the producer copying one in while
            /// the consumer copies the one before out.
            pub fn max_message_len(&self) -> usize {
                MAX_MESSAGE_LEN
            }

            /// Longest message a zero-copy loan can hold (`loan_bytes`, `get_loan`): one
            /// record in the ring, half its byte capacity less an 8-byte header. Longer
            /// messages travel in fragments, which no loan can hold in place.
            pub fn max_loan_len(&self) -> usize {
                self.ep.ring().max_record()
            }

            /// Messages in the queue right now (Python's `qsize`). A message streamed in
            /// fragments counts once per fragment in the queue (at most a few: they are
            /// taken as they come).
            #[doc(alias = "qsize")]
            pub fn len(&self) -> usize {
                self.ep.ring().len()
            }

            /// Whether the queue is empty right now.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Whether the queue holds its maximum number of messages right now (it may also
            /// be full in bytes before that).
            pub fn is_full(&self) -> bool {
                self.len() >= self.capacity()
            }

            /// Closes the queue for every process: puts fail with `Closed`, gets drain what is
            /// left and then fail with `Disconnected`.
            pub fn close(&self) {
                self.ep.ring().close()
            }

            /// Whether the queue was closed.
            pub fn is_closed(&self) -> bool {
                self.ep.ring().is_closed()
            }

            /// Shuts the queue down for every process, as Python's `Queue.shutdown()`: puts
            /// fail with `ShutDown` (the value comes back); gets take what is queued and then
            /// fail with `ShutDown` instead of waiting. Every process blocked in a put or get
            /// wakes up to see it. Shutting down again does nothing;
            /// [`shutdown_immediate`](Self::shutdown_immediate) may follow.
            ///
            /// Returns once no put can succeed any more: a put in another process that is
            /// copying its message in at this moment finishes first (and its message is
            /// there for the gets to drain).
            ///
            /// ```
            /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
            /// use multiproc::{GetError, PutError};
            ///
            /// let q = multiproc::Queue::<u32>::new(4)?;
            /// q.put(1)?;
            /// q.shutdown();
            /// assert!(q.is_shutdown());
            /// assert_eq!(q.put(2), Err(PutError::ShutDown(2)));
            /// assert_eq!(q.get()?, 1);
            /// assert_eq!(q.get(), Err(GetError::ShutDown));
            /// # Ok(()) }
            /// ```
            pub fn shutdown(&self) {
                self.ep.ring().shutdown(false)
            }

            /// Shuts the queue down at once, as Python's `Queue.shutdown(immediate=True)`:
            /// as [`shutdown`](Self::shutdown), but gets fail with `ShutDown` at once too,
            /// in every process, and the queued messages are dropped. For a
            /// [`JoinableQueue`], each dropped message counts as a task done, so `join`
            /// returns once the tasks already taken with `get` are done. May follow a plain
            /// `shutdown`.
            ///
            /// A message that a timed get of this handle, its clones, or the handles made
            /// from it (`sender`, `receiver`, `split`) left half-taken is let go first (the
            /// get lock with it). The messages are dropped under the queue's get lock, so
            /// this waits as long as another process (or a handle opened apart) holds that
            /// lock with a half-taken message or a read loan.
            ///
            /// ```
            /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
            /// use multiproc::GetError;
            ///
            /// let q = multiproc::JoinableQueue::<u32>::new(4)?;
            /// q.put(1)?;
            /// q.shutdown_immediate();
            /// assert_eq!(q.get(), Err(GetError::ShutDown));
            /// q.join(); // the dropped message counts as done
            /// # Ok(()) }
            /// ```
            pub fn shutdown_immediate(&self) {
                // The get lock a half-taken message keeps would stall the drop for good (on
                // this thread, it is its own), and the message would never be delivered.
                release_resumes(&self.ep.inner.ring);
                self.ep.ring().shutdown(true)
            }

            /// Whether the queue was shut down (by any process), Python's `is_shutdown`.
            pub fn is_shutdown(&self) -> bool {
                self.ep.ring().is_shut_down()
            }
        }

        impl<T, C> Builder<$ty<T, C>> {
            /// The codec that turns messages into bytes (the default is
            /// [`DefaultCodec`](crate::DefaultCodec)): `.codec::<Plain>()` for plain data
            /// copied as it is.
            pub fn codec<C2: Codec<T>>(self) -> Builder<$ty<T, C2>> {
                self.retype()
            }

            /// Most messages held at once (Python's `maxsize`; default 1024): 1 to
            /// `u32::MAX`. Python's `maxsize=0` (unbounded) has no equivalent: every queue is
            /// bounded. Another value makes [`create`](Builder::create) fail with
            /// [`OpenError::InvalidArgument`].
            pub fn capacity(mut self, messages: usize) -> Self {
                self.config.messages = messages;
                self
            }

            /// Bytes for message data (default 1 MiB, rounded up to a power of two, and to
            /// at least 64). Each message takes its encoded length plus 8 to 15 bytes; the
            /// largest message is half of this minus 8. At most 2 GiB: more makes
            /// [`create`](Builder::create) fail with [`OpenError::InvalidArgument`].
            pub fn max_bytes(mut self, bytes: usize) -> Self {
                self.config.bytes = bytes;
                self
            }
        }

        impl<T, C: Codec<T>> Clone for $ty<T, C> {
            fn clone(&self) -> Self {
                Self {
                    ep: self.ep.clone(),
                    _types: PhantomData,
                }
            }
        }

        impl<T, C> std::fmt::Debug for $ty<T, C> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("len", &self.ep.ring().len())
                    .finish_non_exhaustive()
            }
        }
    };
}

macro_rules! sending {
    ($ty:ident) => {
        impl<T, C: Codec<T>> $ty<T, C> {
            /// Puts `value`, waiting for room as long as it takes.
            ///
            /// # Errors
            /// [`PutError`] with the value: `Disconnected`, `Closed`, `ShutDown`, `TooLarge`,
            /// `Encode` or `Corrupted`.
            #[doc(alias = "send")]
            pub fn put(&self, value: T) -> Result<(), PutError<T>> {
                put_blocking(value, |v| self.ep.put::<T, C>(v, None))
            }

            /// Puts `value` if there is room right now (Python's `put_nowait`). A value
            /// streamed in fragments (see [`max_message_len`](Self::max_message_len)) goes
            /// only if it fits whole in the free space now, so one longer than the queue's
            /// bytes needs [`put`](Self::put) or [`put_timeout`](Self::put_timeout).
            ///
            /// # Errors
            /// [`TryPutError`] with the value: `Full`, or as [`put`](Self::put).
            #[doc(alias = "put_nowait")]
            pub fn try_put(&self, value: T) -> Result<(), TryPutError<T>> {
                self.ep
                    .put::<T, C>(&value, now())
                    .map_err(|f| f.with_value(value).try_put())
            }

            /// Puts `value`, waiting at most `timeout` for room. The timeout covers the whole
            /// message: a value streamed in fragments that has to wait for room past it is
            /// abandoned (receivers never see any of it) and comes back in `Timeout`; one
            /// that never waits that long goes through whole, however long the copy takes.
            ///
            /// # Errors
            /// [`PutTimeoutError`] with the value: `Timeout`, or as [`put`](Self::put).
            pub fn put_timeout(
                &self,
                value: T,
                timeout: Duration,
            ) -> Result<(), PutTimeoutError<T>> {
                self.ep
                    .put::<T, C>(&value, after(timeout))
                    .map_err(|f| f.with_value(value).put_timeout())
            }

            /// Puts a message of raw bytes (read back with `get_bytes`).
            ///
            /// # Errors
            /// As [`put`](Self::put).
            pub fn put_bytes(&self, bytes: &[u8]) -> Result<(), PutError<()>> {
                put_blocking((), |()| self.ep.put_bytes(bytes, None))
            }

            /// Puts raw bytes if there is room right now.
            ///
            /// # Errors
            /// As [`try_put`](Self::try_put).
            pub fn try_put_bytes(&self, bytes: &[u8]) -> Result<(), TryPutError<()>> {
                self.ep
                    .put_bytes(bytes, now())
                    .map_err(|f| f.with_value(()).try_put())
            }

            /// Puts every value of `values`, in order, waiting for room as long as it takes.
            /// Each run of values that fits goes in under one hold of the put lock and is
            /// published with one store, so a batch of small messages costs much less than
            /// as many `put`s. Other producers' messages may come between two runs.
            ///
            /// # Errors
            /// As [`put`](Self::put); the error's value ([`PutError::into_inner`]) is the
            /// number of values that went in before it.
            pub fn put_many(&self, values: &[T]) -> Result<(), PutError<usize>> {
                self.put_many_until(values, None).map_err(|f| match f {
                    Failed::Error(e) => e,
                    Failed::OutOfTime(sent) => PutError::Corrupted(sent, NO_DEADLINE),
                })
            }

            /// Puts as many values from the start of `values` as there is room for right
            /// now, under one hold of the put lock; returns how many (`Ok(0)` only for an
            /// empty slice).
            ///
            /// # Errors
            /// `Full` if not even the first fits, or as [`try_put`](Self::try_put), for the
            /// first value (a later one that cannot go in ends the batch before it).
            pub fn try_put_many(&self, values: &[T]) -> Result<usize, TryPutError<()>> {
                self.ep
                    .put_batch::<T, C>(values, now())
                    .map_err(|f| f.with_value(()).try_put())
            }

            /// Puts every value of `values`, in order, as [`put_many`](Self::put_many), waiting
            /// at most `timeout` in all.
            ///
            /// # Errors
            /// `Timeout`, or as [`put_many`](Self::put_many); the error's value is the number
            /// of values that went in before it.
            pub fn put_many_timeout(
                &self,
                values: &[T],
                timeout: Duration,
            ) -> Result<(), PutTimeoutError<usize>> {
                self.put_many_until(values, after(timeout))
                    .map_err(Failed::put_timeout)
            }

            fn put_many_until(
                &self,
                values: &[T],
                deadline: Option<Instant>,
            ) -> Result<(), Failed<PutError<usize>, usize>> {
                let mut sent = 0;
                while sent < values.len() {
                    match self.ep.put_batch::<T, C>(&values[sent..], deadline) {
                        Ok(n) => sent += n,
                        Err(PutRefFail::Ring(PutFail::Full)) if deadline.is_none() => {}
                        Err(f) => return Err(f.with_value(sent)),
                    }
                }
                Ok(())
            }
        }
    };
}

macro_rules! receiving {
    ($ty:ident) => {
        impl<T, C: Codec<T>> $ty<T, C> {
            /// Takes the next message, waiting as long as it takes.
            ///
            /// # Errors
            /// [`GetError`]: `Disconnected` once every sender is gone and the queue is drained;
            /// `ShutDown` once the queue is shut down and drained (at once after
            /// `shutdown_immediate`); `Decode` or `Corrupted` for bad bytes from another
            /// process.
            #[doc(alias = "recv")]
            pub fn get(&self) -> Result<T, GetError> {
                let mut slot = Slot::new();
                get_blocking(|| self.ep.get::<T, C>(None, &mut slot))?;
                slot.take().ok_or(GetError::Corrupted(NO_VALUE))
            }

            /// Takes the next message if there is one (Python's `get_nowait`).
            ///
            /// # Errors
            /// [`TryGetError`]: `Empty`, or as [`get`](Self::get).
            #[doc(alias = "get_nowait")]
            pub fn try_get(&self) -> Result<T, TryGetError> {
                let mut slot = Slot::new();
                self.ep
                    .get::<T, C>(now(), &mut slot)
                    .map_err(Failed::try_get)?;
                slot.take().ok_or(TryGetError::Corrupted(NO_VALUE))
            }

            /// Takes the next message, waiting at most `timeout`. If the timeout passes in the
            /// middle of a message streamed in fragments, the bytes so far stay with this
            /// handle (and its clones), which keeps the queue's get lock meanwhile: the next
            /// get on it, from any thread, resumes that message; dropping the last clone lets
            /// it go (the rest of the message is then skipped). Other receivers of the queue
            /// wait for the lock meanwhile.
            ///
            /// # Errors
            /// [`GetTimeoutError`]: `Timeout`, or as [`get`](Self::get).
            pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
                let mut slot = Slot::new();
                self.ep
                    .get::<T, C>(after(timeout), &mut slot)
                    .map_err(Failed::get_timeout)?;
                slot.take().ok_or(GetTimeoutError::Corrupted(NO_VALUE))
            }

            /// Takes the next message as raw bytes.
            ///
            /// # Errors
            /// As [`get`](Self::get).
            pub fn get_bytes(&self) -> Result<Vec<u8>, GetError> {
                get_blocking(|| self.ep.get_bytes(None))
            }

            /// Takes the next message as raw bytes, waiting at most `timeout`.
            ///
            /// # Errors
            /// As [`get_timeout`](Self::get_timeout).
            pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetTimeoutError> {
                self.ep
                    .get_bytes(after(timeout))
                    .map_err(Failed::get_timeout)
            }

            /// Takes up to `max` messages, waiting as long as it takes for the first, and
            /// appends them to `out`; returns how many (`Ok(0)` only when `max` is 0). The
            /// messages ready are taken under one hold of the get lock and freed with one
            /// store, so draining many small messages costs much less than as many `get`s.
            ///
            /// # Errors
            /// As [`get`](Self::get). A message that does not decode ends the batch and is the
            /// error (with its bytes); the messages before it are in `out`.
            pub fn get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, GetError> {
                get_blocking(|| self.ep.get_batch::<T, C>(None, out, max))
            }

            /// Takes up to `max` messages that are there right now, appending them to `out`;
            /// returns how many.
            ///
            /// # Errors
            /// `Empty` if there is none (and `max` is not 0), or as
            /// [`get_many`](Self::get_many).
            pub fn try_get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, TryGetError> {
                self.ep
                    .get_batch::<T, C>(now(), out, max)
                    .map_err(Failed::try_get)
            }

            /// Takes up to `max` messages, waiting at most `timeout` for the first, and
            /// appends them to `out`; returns how many.
            ///
            /// # Errors
            /// `Timeout`, or as [`get_many`](Self::get_many).
            pub fn get_many_timeout(
                &self,
                out: &mut Vec<T>,
                max: usize,
                timeout: Duration,
            ) -> Result<usize, GetTimeoutError> {
                self.ep
                    .get_batch::<T, C>(after(timeout), out, max)
                    .map_err(Failed::get_timeout)
            }

            /// Copies the next message into `buf` and returns its length. A message longer than
            /// `buf` stays in the queue and gives `BufferTooSmall(len)`.
            ///
            /// # Errors
            /// As [`get`](Self::get), and `BufferTooSmall`.
            pub fn get_bytes_into(&self, buf: &mut [u8]) -> Result<usize, GetError> {
                get_blocking(|| self.ep.get_bytes_into(buf, None))
            }
        }
    };
}

/// A multi-producer, multi-consumer queue in shared memory, like Python's
/// `multiprocessing.Queue`, for any number of processes and threads.
///
/// Messages are plain data copied once ([`Plain`](crate::Plain)), serde values encoded with
/// postcard straight into the queue ([`Serde`](crate::Serde), the default), or raw bytes
/// (`put_bytes`/`get_bytes`). There is no pipe or feeder thread underneath: a put is a copy and
/// two stores, and a waiting peer that is awake sees it at once; sleepers are woken only when
/// they exist.
///
/// A `Queue` handle both sends and receives, so a queue never disconnects while one lives. For
/// disconnection to mean something, split roles with [`Sender`] and [`Receiver`] (or create
/// them split with [`channel`]): once every sending handle is gone (dropped, or its process
/// killed) receivers drain what is left and then get [`GetError::Disconnected`]; once every
/// receiving handle is gone, puts hand the value back in [`PutError::Disconnected`]. A killed
/// peer is noticed within about 0.2 s by a waiter.
///
/// Handles are inherited across `fork`: the child holds its copies from the moment of the fork
/// (a fork hook counts them), so a parent may drop its copy of the child's end right away, as
/// with Python's `Pipe`. If a parent thread is creating or dropping a handle at the very moment
/// another thread forks, the child's copies register on first use instead.
///
/// Crash consistency: a producer killed mid-put never leaves a torn message visible and never
/// wedges the queue; a consumer killed mid-get loses at most the message it was taking (if it
/// died before taking it, the message stays for the next consumer). Per-producer order is kept.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = multiproc::Queue::<String>::builder().capacity(8).create()?;
/// q.put("hello".to_string())?;
/// assert_eq!(q.len(), 1);
/// assert_eq!(q.get()?, "hello");
/// assert!(q.try_get().is_err());
/// # Ok(()) }
/// ```
pub struct Queue<T, C = DefaultCodec> {
    pub(super) ep: Endpoint,
    _types: Types<T, C>,
}

endpoint_type!(Queue, kind::QUEUE, BOTH);
sending!(Queue);
receiving!(Queue);

impl<T> Queue<T>
where
    DefaultCodec: Codec<T>,
{
    /// Creates a queue for `capacity` messages (and 1 MiB of message bytes) in a new memfd
    /// segment, with the default codec; the message type can come from the first `put`.
    /// [`with_codec`](Self::with_codec) chooses another codec.
    ///
    /// # Errors
    /// [`OpenError::InvalidArgument`] if `capacity` is 0 or above `u32::MAX`; the system
    /// error if the segment cannot be created.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let q = multiproc::Queue::new(64)?;
    /// q.put(5u64)?;
    /// assert_eq!(q.get()?, 5);
    /// # Ok(()) }
    /// ```
    pub fn new(capacity: usize) -> Result<Self, OpenError> {
        Self::with_codec(capacity)
    }
}

impl<T, C: Codec<T>> Queue<T, C> {
    /// Creates a queue for `capacity` messages with codec `C`, e.g.
    /// `Queue::<u64, Plain>::with_codec(64)`.
    ///
    /// # Errors
    /// [`OpenError::InvalidArgument`] if `capacity` is 0 or above `u32::MAX`; the system
    /// error if the segment cannot be created.
    pub fn with_codec(capacity: usize) -> Result<Self, OpenError> {
        Builder::<Self>::with_config(QueueConfig::default())
            .capacity(capacity)
            .create()
    }

    /// A sending handle on the same queue.
    ///
    /// # Errors
    /// [`OpenError::TooManyProcesses`] if every peer slot is taken by live processes.
    pub fn sender(&self) -> Result<Sender<T, C>, OpenError> {
        Ok(Sender {
            ep: Endpoint::new(self.ep.inner.ring.clone(), SEND)?,
            _types: PhantomData,
        })
    }

    /// A receiving handle on the same queue.
    ///
    /// # Errors
    /// As [`sender`](Self::sender).
    pub fn receiver(&self) -> Result<Receiver<T, C>, OpenError> {
        Ok(Receiver {
            ep: Endpoint::new(self.ep.inner.ring.clone(), RECV)?,
            _types: PhantomData,
        })
    }

    /// Splits this handle into a sender and a receiver.
    ///
    /// # Errors
    /// As [`sender`](Self::sender).
    #[allow(clippy::type_complexity)]
    pub fn split(self) -> Result<(Sender<T, C>, Receiver<T, C>), OpenError> {
        Ok((self.sender()?, self.receiver()?))
    }
}

/// A queue already split into its sending and receiving halves, with the default codec, like
/// crossbeam's `bounded(capacity)`.
///
/// Once every [`Sender`] is gone (dropped, or its process killed), the receivers drain what is
/// left and then get [`GetError::Disconnected`]; once every [`Receiver`] is gone, puts hand
/// the value back. An unsplit [`Queue`] handle counts as both a sender and a receiver, so a
/// queue never disconnects while one lives: split it, or use this function.
///
/// # Errors
/// [`OpenError::InvalidArgument`] if `capacity` is 0 or above `u32::MAX`; the system error if
/// the segment cannot be created.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (tx, rx) = multiproc::channel(16)?;
/// tx.put("job".to_string())?;
/// drop(tx);
/// assert_eq!(rx.get()?, "job");
/// assert_eq!(rx.get(), Err(multiproc::GetError::Disconnected));
/// # Ok(()) }
/// ```
#[allow(clippy::type_complexity)]
pub fn channel<T>(capacity: usize) -> Result<(Sender<T>, Receiver<T>), OpenError>
where
    DefaultCodec: Codec<T>,
{
    Queue::new(capacity)?.split()
}

/// The sending side of a [`Queue`]. Receivers see `Disconnected` once every `Sender` and
/// `Queue` handle is gone.
pub struct Sender<T, C = DefaultCodec> {
    pub(super) ep: Endpoint,
    _types: Types<T, C>,
}

endpoint_type!(Sender, kind::QUEUE, SEND);
sending!(Sender);

#[cfg(test)]
impl<T, C> Sender<T, C> {
    /// The ring under this handle, for tests that play a hostile peer.
    pub(crate) fn ring(&self) -> &Ring {
        self.ep.ring()
    }
}

/// The receiving side of a [`Queue`]. Senders see `Disconnected` once every `Receiver` and
/// `Queue` handle is gone.
pub struct Receiver<T, C = DefaultCodec> {
    pub(super) ep: Endpoint,
    _types: Types<T, C>,
}

endpoint_type!(Receiver, kind::QUEUE, RECV);
receiving!(Receiver);

impl<T, C: Codec<T>> Receiver<T, C> {
    pub(crate) fn ring_poll(&self, deadline: Option<Instant>) -> bool {
        self.ep.ensure_attached();
        self.ep.ring().poll(deadline)
    }

    /// Waits at most `timeout` for something to take; `true` if a `get` would return at once
    /// (with a message, or with `Disconnected` or `ShutDown`). A message streamed in
    /// fragments is ready as soon as its first fragment is there: the `get` then waits for the
    /// rest, as Python's `recv` does for a long message (and for nothing at all if the
    /// fragments are what a dead or timed-out producer left, which the get skips).
    pub fn poll(&self, timeout: Duration) -> bool {
        self.ring_poll(after(timeout))
    }
}

/// `wait` waits for what a receiving handle would get.
macro_rules! waitable {
    ($ty:ident) => {
        impl<T, C> crate::wait::Sealed for $ty<T, C> {
            fn target(&self) -> crate::wait::Target<'_> {
                self.ep.ensure_attached();
                crate::wait::Target::Ring(self.ep.ring())
            }
        }
    };
}
waitable!(Receiver);
waitable!(Queue);
waitable!(JoinableQueue);

/// A [`Queue`] that counts unfinished tasks, like Python's `multiprocessing.JoinableQueue`:
/// every put adds one, every [`task_done`](Self::task_done) removes one, and
/// [`join`](Self::join) waits until none is left.
///
/// A consumer that dies between `get` and `task_done` leaves its task unfinished for good, as
/// in Python; use [`join_timeout`](Self::join_timeout) where that matters.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = multiproc::JoinableQueue::<u32>::builder().create()?;
/// q.put(7)?;
/// assert_eq!(q.get()?, 7);
/// q.task_done()?;
/// q.join();
/// assert!(q.task_done().is_err());
/// # Ok(()) }
/// ```
pub struct JoinableQueue<T, C = DefaultCodec> {
    pub(super) ep: Endpoint,
    _types: Types<T, C>,
}

endpoint_type!(JoinableQueue, kind::JOINABLE_QUEUE, BOTH);
sending!(JoinableQueue);
receiving!(JoinableQueue);

impl<T> JoinableQueue<T>
where
    DefaultCodec: Codec<T>,
{
    /// Creates a joinable queue for `capacity` messages (and 1 MiB of message bytes) in a new
    /// memfd segment, with the default codec.
    ///
    /// # Errors
    /// [`OpenError::InvalidArgument`] if `capacity` is 0 or above `u32::MAX`; the system
    /// error if the segment cannot be created.
    pub fn new(capacity: usize) -> Result<Self, OpenError> {
        Self::with_codec(capacity)
    }
}

// Every published message is a task: the ring counts them (see `Ring::task_done`).
impl<T, C: Codec<T>> JoinableQueue<T, C> {
    /// Creates a joinable queue for `capacity` messages with codec `C`.
    ///
    /// # Errors
    /// [`OpenError::InvalidArgument`] if `capacity` is 0 or above `u32::MAX`; the system
    /// error if the segment cannot be created.
    pub fn with_codec(capacity: usize) -> Result<Self, OpenError> {
        Builder::<Self>::with_config(QueueConfig::default())
            .capacity(capacity)
            .create()
    }

    /// Marks one task taken with `get` as done.
    ///
    /// # Errors
    /// [`TaskDoneError`] if called more times than messages were put (Python's `ValueError`).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        if self.ep.ring().task_done() {
            Ok(())
        } else {
            Err(TaskDoneError)
        }
    }

    /// Waits until every message put has been marked done (or dropped by
    /// [`shutdown_immediate`](Self::shutdown_immediate)). A plain
    /// [`shutdown`](Self::shutdown) does not end the wait: the queued messages are still to
    /// be taken and marked done, as in Python.
    pub fn join(&self) {
        self.ep.ring().join(None);
    }

    /// Waits at most `timeout`; returns whether every task is done.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.ep.ring().join(after(timeout))
    }

    /// Tasks put and not yet marked done. One task per message; while a message streamed in
    /// fragments is still being taken, its fragments in the queue count one each.
    pub fn unfinished_tasks(&self) -> u32 {
        self.ep.ring().unfinished()
    }
}

crate::segment::object::serde_via_handle!([T, C: Codec<T>] Queue<T, C>);
crate::segment::object::serde_via_handle!([T, C: Codec<T>] Sender<T, C>);
crate::segment::object::serde_via_handle!([T, C: Codec<T>] Receiver<T, C>);
crate::segment::object::serde_via_handle!([T, C: Codec<T>] JoinableQueue<T, C>);
