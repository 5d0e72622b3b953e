//! Python's `multiprocessing`, for Rust, on shared memory and futexes.
//!
//! Every object here lives in an mmap'd segment that several processes map at once: locks,
//! semaphores, events, conditions and barriers are `#[repr(C)]` atomics waited on with shared
//! futexes; values and arrays are plain data next to a lock. A process gets hold of an object by
//! inheriting it across `fork`, by opening it by name, or from a [`Handle`].
//!
//! | Python                                      | multiproc                                  |
//! |---------------------------------------------|--------------------------------------------|
//! | `Lock()`, `RLock()`                         | [`Lock`], [`RLock`]                        |
//! | `Semaphore(n)`, `BoundedSemaphore(n)`       | [`Semaphore`], [`BoundedSemaphore`]        |
//! | `Event()`, `Condition()`, `Barrier(n)`      | [`Event`], [`Condition`], [`Barrier`]      |
//! | `Value('Q', 0)`, `Array('I', 16)`           | [`Value<u64>`](Value), [`Array<u32>`](Array) |
//! | `RawValue`, `RawArray`                      | [`RawValue`], [`RawArray`]                 |
//! | `shared_memory.SharedMemory(name, create, size)` | [`SharedMemory`]                      |
//! | `Queue(maxsize)`, `JoinableQueue(maxsize)`  | [`channel`] ([`Sender`], [`Receiver`]), [`Queue`], [`JoinableQueue`] |
//! | `Pipe()`, `Pipe(duplex=False)`              | [`pipe`], [`duplex`] ([`Connection`]), [`pipe_oneway`] |
//! | `Process(target=f, args=(a,))`              | [`Process::spawn`], [`Process::fork`], [`ProcessBuilder`] |
//! | `Pool(n)`, `map`, `imap`, `apply_async`     | [`Pool`]                                   |
//! | `cpu_count()`, `current_process()`, ...     | [`cpu_count`], [`current_process`], [`parent_process`], [`active_children`] |
//!
//! # Processes and pools
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use multiproc::{Pool, Process, channel};
//!
//! fn count_to(n: u64) -> u64 {
//!     (1..=n).sum()
//! }
//!
//! // A child process: this executable started again, running `count_to(100)`.
//! assert_eq!(Process::spawn(count_to, 100)?.join()?, 5050);
//!
//! // Shared objects travel in the argument.
//! fn produce(tx: multiproc::Sender<String>) {
//!     tx.put("hello from a child".into()).unwrap();
//! }
//! let (tx, rx) = channel::<String>(16)?;
//! let child = Process::spawn(produce, tx)?;
//! assert_eq!(rx.get()?, "hello from a child");
//! child.join()?;
//!
//! // Worker processes; a killed worker fails only the task it ran, and is replaced.
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.map(count_to, [1, 2, 3])?, [1, 3, 6]);
//! # Ok(()) }
//! ```
//!
//! # A queue between processes
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use multiproc::{Plain, Queue, channel};
//!
//! // Serde types by default, postcard-encoded; the message type comes from the first put.
//! let (tx, rx) = channel(64)?;
//! tx.put(7u64)?; // from any process that holds (or inherited, or opened) the queue
//! assert_eq!(rx.get()?, 7);
//! drop(tx);
//! assert!(rx.get().is_err()); // every sender gone: Disconnected
//!
//! // `Plain` copies plain data as bytes, with no encoding at all.
//! let (tx, rx) = Queue::<[f64; 4], Plain>::with_codec(64)?.split()?;
//! tx.put([1.0, 2.0, 3.0, 4.0])?;
//! assert_eq!(rx.get()?, [1.0, 2.0, 3.0, 4.0]);
//! # Ok(()) }
//! ```
//!
//! # A counter shared by processes
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use multiproc::Value;
//!
//! // A named value: any process on the host can open it by name.
//! let counter = Value::<u64>::builder().name("tour-counter").create()?;
//! // ... in another process:
//! let same = Value::<u64>::open("tour-counter")?;
//! // A holder killed while holding the lock is an error that names the value, not a panic.
//! *same.lock()? += 1;
//! assert_eq!(counter.get(), 1);
//! # Ok(()) }
//! ```
//!
//! # Dead processes
//!
//! A process killed while holding a [`Lock`], [`RLock`], [`Condition`] or a [`Value`]/[`Array`]
//! lock does not wedge the others: the next locker is handed the lock as [`OwnerDied`], can
//! repair the data, and [`OwnerDied::recover`]s (or [`OwnerDied::recover_with`] a repair
//! function), or propagates it with `?` as [`LockError::OwnerDied`], which names the object
//! and leaves the lock marked for the next locker. A [`Barrier`] with a dead party breaks instead
//! of waiting forever. Semaphore permits are not owned (as in Python) and die with their holder.
//!
//! # Platform
//!
//! Linux, kernel 5.3 or later ([`Process`] and [`Pool`] wait on pidfds); tested on 6.x. The
//! OS layer is the only code that calls the system.

#![deny(unsafe_code)]
#![warn(missing_docs)]
// `SharedObject` is sealed: its supertrait mentions crate-private types (Segment, Backing) on
// purpose, so nobody outside can implement it.
#![allow(private_interfaces, private_bounds)]
// The loom build compiles only the waiting code its models run; the rest of what that code
// offers stays unused there.
#![cfg_attr(multiproc_loom, allow(dead_code, unused_imports, unreachable_pub))]

#[cfg(not(multiproc_loom))]
mod channel;
mod error;
mod primitive;
#[cfg(all(feature = "serde", not(multiproc_loom)))]
mod process;
#[cfg(not(multiproc_loom))]
mod segment;
// The loom build: the ring and the byte copies it needs, on its own heap memory.
#[cfg(multiproc_loom)]
mod channel {
    #[cfg(test)]
    mod loom_tests;
    pub(crate) mod ring;
}
#[cfg(multiproc_loom)]
mod segment {
    mod foreign;
    pub(crate) use foreign::{Foreign, ForeignMut};
}
#[cfg(not(multiproc_loom))]
mod shared_memory;
mod sync;
mod sys;
#[cfg(not(multiproc_loom))]
mod value;
#[cfg(not(multiproc_loom))]
mod wait;

#[cfg(all(feature = "msgpack", not(multiproc_loom)))]
pub use channel::MessagePack;
pub use channel::ring::MAX_MESSAGE_LEN;
#[cfg(not(multiproc_loom))]
pub use channel::{
    Codec, Connection, ConnectionHandle, DecodeError, DefaultCodec, EncodeError, JoinableQueue,
    Plain, Queue, ReadLoan, Receiver, Sender, Serde, WriteLoan, channel, duplex, pipe, pipe_oneway,
};
#[cfg(not(multiproc_loom))]
pub use error::{
    BrokenBarrierError, GetError, GetTimeoutError, LockError, OpenError, OverReleaseError,
    PutError, PutTimeoutError, TaskDoneError, TryGetError, TryPutError,
};
#[cfg(all(feature = "serde", not(multiproc_loom)))]
pub use process::{
    AsyncResult, Builder as ProcessBuilder, EncodesAs, Imap, ImapUnordered, ImapUnorderedIndexed,
    Pool, PoolBuilder, Process, ProcessError, ProcessInfo, Sentinel, StartMethod, TaskError,
    active_children, cpu_count, current_process, init, parent_process, set_child_init,
};
#[cfg(not(multiproc_loom))]
pub use segment::atomic_copy::ShmSafe;
#[cfg(not(multiproc_loom))]
pub use segment::object::{Builder, SharedObject};
#[cfg(not(multiproc_loom))]
pub use segment::{Handle, ParseHandleError};
#[cfg(not(multiproc_loom))]
pub use shared_memory::{OutOfBounds, SharedMemory};
#[cfg(not(multiproc_loom))]
pub use sync::barrier::{Barrier, MAX_PARTIES};
#[cfg(not(multiproc_loom))]
pub use sync::condition::{Condition, ConditionGuard};
#[cfg(not(multiproc_loom))]
pub use sync::event::Event;
#[cfg(not(multiproc_loom))]
pub use sync::lock::{
    Lock, LockGuard, LockResult, OwnerDied, RLock, RLockGuard, RecoverableGuard, TryLockError,
    TryLockResult,
};
#[cfg(not(multiproc_loom))]
pub use sync::raw_lock::RawLock;
#[cfg(not(multiproc_loom))]
pub use sync::semaphore::{BoundedSemaphore, Semaphore};
#[cfg(not(multiproc_loom))]
pub use sys::Errno;
#[cfg(not(multiproc_loom))]
pub use value::{Array, ArrayGuard, RawArray, RawValue, ShmAtomic, Value, ValueGuard};
#[cfg(not(multiproc_loom))]
pub use wait::{Waitable, wait};
/// The `zerocopy` this crate builds on, so a type of your own can derive what [`ShmSafe`] needs
/// without a `zerocopy` dependency of its own (see [`ShmSafe`]).
#[cfg(not(multiproc_loom))]
pub use zerocopy;
