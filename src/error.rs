//! Public error types, one small type per operation.

use crate::sys::Errno;

/// Why bytes from a queue did not decode into a `T`.
///
/// The message was taken out of the queue; its bytes travel in the error
/// ([`bytes`](Self::bytes), [`into_bytes`](Self::into_bytes)), so a message that does not
/// decode is not lost: it can be logged, decoded another way, or put back with `put_bytes`.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("message does not decode: {reason}")]
pub struct DecodeError {
    reason: String,
    bytes: Vec<u8>,
}

impl DecodeError {
    pub(crate) fn new(reason: String, bytes: Vec<u8>) -> Self {
        Self { reason, bytes }
    }

    /// What the decoder said.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The message's bytes, as they were in the queue.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The message's bytes, as they were in the queue.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl std::fmt::Debug for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeError")
            .field("reason", &self.reason)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .finish()
    }
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value does not encode: {0}")]
pub struct EncodeError(pub(crate) String);

/// Why creating or opening a shared object failed.
///
/// Everything in a segment can have been written by another process, so every check that fails
/// on its bytes gives one of these, never a panic or undefined behaviour. Errors about a named
/// object carry its name (with the leading `/`); types are spelled as in Rust (`Value<u64>`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// No segment of that name (or the handle's fd is not open in this process).
    #[error("{} not found", subject(.name))]
    NotFound {
        /// The name looked up; `None` for a descriptor.
        name: Option<String>,
    },
    /// Creating exclusively, and the name is taken.
    #[error("a shared object named {name} already exists")]
    AlreadyExists {
        /// The name asked for.
        name: String,
    },
    /// The segment exists but this process may not open it.
    #[error("permission denied opening {}", subject(.name))]
    PermissionDenied {
        /// The name, for a named object.
        name: Option<String>,
    },
    /// The name is not a valid POSIX shm name (empty, contains '/' after the first character
    /// or a NUL byte, or longer than 250 bytes).
    #[error(
        "invalid shared object name {name:?} (must be 1 to 250 bytes, no '/' or NUL after an optional leading '/')"
    )]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// The creator never finished initialising the segment within the open timeout.
    #[error("shared object was never initialised")]
    Uninitialized,
    /// The segment is shorter than its header says or than the object needs.
    #[error("segment is truncated: {found} bytes, at least {expected} needed")]
    Truncated {
        /// Bytes present.
        found: u64,
        /// Bytes required.
        expected: u64,
    },
    /// The segment holds a different kind of object.
    #[error("{} holds {}, not {}", subject(.name), article(.found), article(.expected))]
    WrongType {
        /// The name, for a named object.
        name: Option<String>,
        /// The type found in the segment ("Lock", "Event").
        found: String,
        /// The type being opened.
        expected: String,
    },
    /// The segment holds the right kind of object for another element type: a `Value<u64>`
    /// opened as a `Value<u32>`.
    #[error(
        "{} holds {} ({found_size}-byte elements, aligned to {found_align}), not {} ({expected_size}-byte elements, aligned to {expected_align})",
        subject(.name), article(.found), article(.expected)
    )]
    ElementMismatch {
        /// The name, for a named object.
        name: Option<String>,
        /// The type found, as its creator named it (`Value<u64>`), or "Value of another
        /// element type" if the creator left no readable name (the sizes still tell).
        found: String,
        /// The type being opened.
        expected: String,
        /// Element size in the segment, in bytes.
        found_size: u32,
        /// Element alignment in the segment, in bytes.
        found_align: u32,
        /// Element size of the type being opened.
        expected_size: u32,
        /// Element alignment of the type being opened.
        expected_align: u32,
    },
    /// The segment was laid out by an incompatible version of this crate.
    #[error("segment layout version {found}, this build understands {expected}")]
    VersionMismatch {
        /// Version found in the header.
        found: u32,
        /// Version of this build.
        expected: u32,
    },
    /// The segment's bytes do not describe a valid object.
    #[error("segment is corrupted: {0}")]
    Corrupted(&'static str),
    /// `open()` was called on a builder without a name.
    #[error("opening needs a name (Builder::name)")]
    NameRequired,
    /// A creation parameter is out of range (a queue capacity of 0, a barrier of 0 parties,
    /// an array whose size in bytes overflows); the message says which and what is allowed.
    /// Nothing was created.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// Every slot for attached processes is taken by live processes.
    #[error("too many processes attached (at most {max})")]
    TooManyProcesses {
        /// Processes one object can have attached at once.
        max: usize,
    },
    /// The handle cannot be used in this process (e.g. an anonymous mapping after `exec`).
    #[error("handle cannot be opened in this process: {0}")]
    NotInheritable(&'static str),
    /// Any other operating-system error.
    #[error("system error: {0}")]
    Os(#[source] Errno),
}

/// "shared object /name", or "shared object" without a name.
fn subject(name: &Option<String>) -> String {
    match name {
        Some(n) => format!("shared object {n}"),
        None => "shared object".to_owned(),
    }
}

/// "a Lock", "an Event".
fn article(what: &str) -> String {
    let an = what
        .chars()
        .next()
        .is_some_and(|c| "AEIOUaeiou".contains(c));
    format!("{} {what}", if an { "an" } else { "a" })
}

impl OpenError {
    /// The error of a call on the POSIX shm object `name`.
    pub(crate) fn shm(e: Errno, name: &str) -> Self {
        match e {
            Errno::NOENT => Self::NotFound {
                name: Some(name.to_owned()),
            },
            Errno::EXIST => Self::AlreadyExists {
                name: name.to_owned(),
            },
            Errno::ACCES => Self::PermissionDenied {
                name: Some(name.to_owned()),
            },
            // Names are checked before any call (`normalize_name`), so `EINVAL` is about
            // something else: a size `ftruncate` refuses, for one.
            Errno::NAMETOOLONG => Self::InvalidName {
                name: name.to_owned(),
            },
            other => Self::Os(other),
        }
    }

    /// The error of a system call on a segment that has no name here (a descriptor, a
    /// mapping). Crate-private on purpose: a public `From<Errno>` would let errors be made
    /// that name no object.
    pub(crate) fn os(e: Errno) -> Self {
        match e {
            Errno::NOENT => Self::NotFound { name: None },
            Errno::ACCES => Self::PermissionDenied { name: None },
            other => Self::Os(other),
        }
    }

    /// Fills in the object's name where the error has room for one and lacks it.
    pub(crate) fn with_name(mut self, object: &str) -> Self {
        match &mut self {
            Self::NotFound { name }
            | Self::PermissionDenied { name }
            | Self::WrongType { name, .. }
            | Self::ElementMismatch { name, .. } => {
                name.get_or_insert_with(|| object.to_owned());
            }
            _ => {}
        }
        self
    }
}

/// A lock could not be taken cleanly: the owned form of [`OwnerDied`](crate::OwnerDied) and
/// [`TryLockError`](crate::TryLockError), with no guard and no borrow of the lock, so it works
/// with `?` and converts into `Box<dyn Error + Send + Sync>`.
///
/// Converting an `OwnerDied` into this error drops its guard: the lock is released and stays
/// marked as owner-died, so the next locker is told too, until someone
/// [`recover`](crate::OwnerDied::recover)s it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// A holder died while holding the lock, and nobody has recovered it since.
    #[error("a holder of {object} died while holding its lock (owner died; not recovered)")]
    OwnerDied {
        /// The object, as "Lock", `Value<u64>` or "Lock /name" (named objects give their name).
        object: String,
    },
    /// The lock is held by someone else (and, for the timed forms, stayed held until the
    /// timeout).
    #[error("the lock is held elsewhere")]
    WouldBlock,
}

/// `BoundedSemaphore::release` would raise the count above its initial value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("semaphore released too many times")]
pub struct OverReleaseError;

/// A `Barrier` wait failed: the barrier was broken (aborted, reset, a waiter timed out or died).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("barrier is broken")]
pub struct BrokenBarrierError;

/// A blocking put or send that did not happen; the value comes back.
///
/// Returned by `put`, `put_bytes`, [`Connection::send`](crate::Connection::send) and
/// [`Connection::send_bytes`](crate::Connection::send_bytes). A blocking put waits for room, so
/// it never fails for being full; [`TryPutError`] and [`PutTimeoutError`] add that case.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc::PutError;
///
/// let (tx, rx) = multiproc::channel::<u32>(4)?;
/// drop(rx);
/// let err = tx.put(7).unwrap_err();
/// assert!(err.is_disconnected());
/// assert_eq!(err, PutError::Disconnected(7));
/// assert_eq!(err.into_inner(), 7);
/// # Ok(()) }
/// ```
#[derive(PartialEq, Eq, Clone, thiserror::Error)]
pub enum PutError<T> {
    /// Every receiving handle is gone (dropped, or its process died).
    #[error("every receiver is gone")]
    Disconnected(T),
    /// The queue was closed with `close()`.
    #[error("queue is closed")]
    Closed(T),
    /// The queue was shut down with `shutdown()` or `shutdown_immediate()` (Python's
    /// `queue.ShutDown`).
    #[error("queue is shut down")]
    ShutDown(T),
    /// The encoded message is longer than [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN)
    /// (4 GiB - 1 bytes); a shorter one longer than the queue's bytes is streamed through it.
    #[error("message is larger than the queue can hold")]
    TooLarge(T),
    /// The codec cannot encode the value (in debug builds, also: the value's encoding does not
    /// decode back to the same value, so the receiver could not read it).
    #[error("{1}")]
    Encode(T, EncodeError),
    /// The queue's shared state was scribbled on; nothing can be written safely.
    #[error("queue is corrupted: {1}")]
    Corrupted(T, &'static str),
}

impl<T> PutError<T> {
    /// The value that was not put.
    pub fn into_inner(self) -> T {
        match self {
            Self::Disconnected(v)
            | Self::Closed(v)
            | Self::ShutDown(v)
            | Self::TooLarge(v)
            | Self::Encode(v, _)
            | Self::Corrupted(v, _) => v,
        }
    }

    /// Whether every receiving handle is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }

    /// Whether the queue was shut down (Python's `queue.ShutDown`).
    pub fn is_shut_down(&self) -> bool {
        matches!(self, Self::ShutDown(_))
    }
}

impl<T> std::fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Disconnected(_) => "Disconnected(..)",
            Self::Closed(_) => "Closed(..)",
            Self::ShutDown(_) => "ShutDown(..)",
            Self::TooLarge(_) => "TooLarge(..)",
            Self::Encode(_, e) => return write!(f, "Encode(.., {e:?})"),
            Self::Corrupted(_, _) => "Corrupted(..)",
        })
    }
}

/// A put or send that did not happen at once; the value comes back.
///
/// Returned by `try_put`, `try_put_bytes` and [`Connection::try_send`](crate::Connection::try_send):
/// [`Full`](Self::Full), or any [`PutError`].
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc::TryPutError;
///
/// let q = multiproc::Queue::<u32>::new(1)?;
/// q.try_put(1)?;
/// match q.try_put(2) {
///     Err(TryPutError::Full(v)) => assert_eq!(v, 2),
///     other => panic!("expected Full, got {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(PartialEq, Eq, Clone, thiserror::Error)]
pub enum TryPutError<T> {
    /// No room right now.
    #[error("queue is full")]
    Full(T),
    /// As [`PutError::Disconnected`].
    #[error("every receiver is gone")]
    Disconnected(T),
    /// As [`PutError::Closed`].
    #[error("queue is closed")]
    Closed(T),
    /// As [`PutError::ShutDown`].
    #[error("queue is shut down")]
    ShutDown(T),
    /// As [`PutError::TooLarge`].
    #[error("message is larger than the queue can hold")]
    TooLarge(T),
    /// As [`PutError::Encode`].
    #[error("{1}")]
    Encode(T, EncodeError),
    /// As [`PutError::Corrupted`].
    #[error("queue is corrupted: {1}")]
    Corrupted(T, &'static str),
}

impl<T> TryPutError<T> {
    /// The value that was not put.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(v)
            | Self::Disconnected(v)
            | Self::Closed(v)
            | Self::ShutDown(v)
            | Self::TooLarge(v)
            | Self::Encode(v, _)
            | Self::Corrupted(v, _) => v,
        }
    }

    /// Whether the queue had no room.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }

    /// Whether every receiving handle is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }

    /// Whether the queue was shut down (Python's `queue.ShutDown`).
    pub fn is_shut_down(&self) -> bool {
        matches!(self, Self::ShutDown(_))
    }
}

impl<T> From<PutError<T>> for TryPutError<T> {
    fn from(e: PutError<T>) -> Self {
        match e {
            PutError::Disconnected(v) => Self::Disconnected(v),
            PutError::Closed(v) => Self::Closed(v),
            PutError::ShutDown(v) => Self::ShutDown(v),
            PutError::TooLarge(v) => Self::TooLarge(v),
            PutError::Encode(v, e) => Self::Encode(v, e),
            PutError::Corrupted(v, what) => Self::Corrupted(v, what),
        }
    }
}

impl<T> std::fmt::Debug for TryPutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "Full(..)",
            Self::Disconnected(_) => "Disconnected(..)",
            Self::Closed(_) => "Closed(..)",
            Self::ShutDown(_) => "ShutDown(..)",
            Self::TooLarge(_) => "TooLarge(..)",
            Self::Encode(_, e) => return write!(f, "Encode(.., {e:?})"),
            Self::Corrupted(_, _) => "Corrupted(..)",
        })
    }
}

/// A put that did not happen before its timeout; the value comes back.
///
/// Returned by `put_timeout`: [`Timeout`](Self::Timeout), or any [`PutError`].
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// let q = multiproc::Queue::<u32>::new(1)?;
/// q.put(1)?;
/// let err = q.put_timeout(2, Duration::from_millis(10)).unwrap_err();
/// assert!(err.is_timeout());
/// assert_eq!(err.into_inner(), 2);
/// # Ok(()) }
/// ```
#[derive(PartialEq, Eq, Clone, thiserror::Error)]
pub enum PutTimeoutError<T> {
    /// No room before the timeout.
    #[error("timed out waiting for room in the queue")]
    Timeout(T),
    /// As [`PutError::Disconnected`].
    #[error("every receiver is gone")]
    Disconnected(T),
    /// As [`PutError::Closed`].
    #[error("queue is closed")]
    Closed(T),
    /// As [`PutError::ShutDown`].
    #[error("queue is shut down")]
    ShutDown(T),
    /// As [`PutError::TooLarge`].
    #[error("message is larger than the queue can hold")]
    TooLarge(T),
    /// As [`PutError::Encode`].
    #[error("{1}")]
    Encode(T, EncodeError),
    /// As [`PutError::Corrupted`].
    #[error("queue is corrupted: {1}")]
    Corrupted(T, &'static str),
}

impl<T> PutTimeoutError<T> {
    /// The value that was not put.
    pub fn into_inner(self) -> T {
        match self {
            Self::Timeout(v)
            | Self::Disconnected(v)
            | Self::Closed(v)
            | Self::ShutDown(v)
            | Self::TooLarge(v)
            | Self::Encode(v, _)
            | Self::Corrupted(v, _) => v,
        }
    }

    /// Whether the queue stayed without room until the timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether every receiving handle is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }

    /// Whether the queue was shut down (Python's `queue.ShutDown`).
    pub fn is_shut_down(&self) -> bool {
        matches!(self, Self::ShutDown(_))
    }
}

impl<T> From<PutError<T>> for PutTimeoutError<T> {
    fn from(e: PutError<T>) -> Self {
        match e {
            PutError::Disconnected(v) => Self::Disconnected(v),
            PutError::Closed(v) => Self::Closed(v),
            PutError::ShutDown(v) => Self::ShutDown(v),
            PutError::TooLarge(v) => Self::TooLarge(v),
            PutError::Encode(v, e) => Self::Encode(v, e),
            PutError::Corrupted(v, what) => Self::Corrupted(v, what),
        }
    }
}

impl<T> std::fmt::Debug for PutTimeoutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Timeout(_) => "Timeout(..)",
            Self::Disconnected(_) => "Disconnected(..)",
            Self::Closed(_) => "Closed(..)",
            Self::ShutDown(_) => "ShutDown(..)",
            Self::TooLarge(_) => "TooLarge(..)",
            Self::Encode(_, e) => return write!(f, "Encode(.., {e:?})"),
            Self::Corrupted(_, _) => "Corrupted(..)",
        })
    }
}

/// A blocking get or receive that returned no message.
///
/// Returned by `get`, `get_bytes`, `get_bytes_into`, [`Connection::recv`](crate::Connection::recv)
/// and its bytes forms. A blocking get waits for a message, so it never fails for an empty queue;
/// [`TryGetError`] and [`GetTimeoutError`] add that case. Only the `*_into` forms give
/// [`BufferTooSmall`](Self::BufferTooSmall).
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc::GetError;
///
/// let (tx, rx) = multiproc::channel::<u32>(4)?;
/// drop(tx);
/// assert_eq!(rx.get(), Err(GetError::Disconnected));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// Every sending handle is gone (dropped, killed, or the queue closed) and the queue is
    /// drained.
    #[error("every sender is gone and the queue is drained")]
    Disconnected,
    /// The queue was shut down with `shutdown()` and is drained, or with
    /// `shutdown_immediate()` (Python's `queue.ShutDown`).
    #[error("queue is shut down")]
    ShutDown,
    /// The caller's buffer is smaller than the next message (which stays in the queue).
    #[error("message of {0} bytes does not fit the buffer")]
    BufferTooSmall(usize),
    /// The message's bytes do not decode as the queue's type; it was consumed, and its bytes
    /// travel in the [`DecodeError`].
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The queue's shared state was scribbled on; nothing can be read safely.
    #[error("queue is corrupted: {0}")]
    Corrupted(&'static str),
}

impl GetError {
    /// Whether every sending handle is gone and the queue is drained.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }

    /// Whether the queue was shut down (Python's `queue.ShutDown`).
    pub fn is_shut_down(&self) -> bool {
        matches!(self, Self::ShutDown)
    }
}

/// A get or receive that found no message at once.
///
/// Returned by `try_get` and [`Connection::try_recv`](crate::Connection::try_recv):
/// [`Empty`](Self::Empty), or any [`GetError`].
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc::TryGetError;
///
/// let (tx, rx) = multiproc::channel::<u32>(4)?;
/// assert_eq!(rx.try_get(), Err(TryGetError::Empty));
/// drop(tx);
/// assert_eq!(rx.try_get(), Err(TryGetError::Disconnected));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TryGetError {
    /// Nothing there right now.
    #[error("queue is empty")]
    Empty,
    /// As [`GetError::Disconnected`].
    #[error("every sender is gone and the queue is drained")]
    Disconnected,
    /// As [`GetError::ShutDown`].
    #[error("queue is shut down")]
    ShutDown,
    /// As [`GetError::BufferTooSmall`].
    #[error("message of {0} bytes does not fit the buffer")]
    BufferTooSmall(usize),
    /// As [`GetError::Decode`].
    #[error(transparent)]
    Decode(DecodeError),
    /// As [`GetError::Corrupted`].
    #[error("queue is corrupted: {0}")]
    Corrupted(&'static str),
}

impl TryGetError {
    /// Whether the queue had no message.
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    /// Whether every sending handle is gone and the queue is drained.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }

    /// Whether the queue was shut down (Python's `queue.ShutDown`).
    pub fn is_shut_down(&self) -> bool {
        matches!(self, Self::ShutDown)
    }
}

impl From<GetError> for TryGetError {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Disconnected => Self::Disconnected,
            GetError::ShutDown => Self::ShutDown,
            GetError::BufferTooSmall(n) => Self::BufferTooSmall(n),
            GetError::Decode(e) => Self::Decode(e),
            GetError::Corrupted(what) => Self::Corrupted(what),
        }
    }
}

/// A get or receive that returned no message before its timeout.
///
/// Returned by `get_timeout`, `get_bytes_timeout` and
/// [`Connection::recv_timeout`](crate::Connection::recv_timeout): [`Timeout`](Self::Timeout), or
/// any [`GetError`].
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// let (_tx, rx) = multiproc::channel::<u32>(4)?;
/// let err = rx.get_timeout(Duration::from_millis(10)).unwrap_err();
/// assert!(err.is_timeout());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetTimeoutError {
    /// Nothing arrived before the timeout.
    #[error("timed out waiting for a message")]
    Timeout,
    /// As [`GetError::Disconnected`].
    #[error("every sender is gone and the queue is drained")]
    Disconnected,
    /// As [`GetError::ShutDown`].
    #[error("queue is shut down")]
    ShutDown,
    /// As [`GetError::BufferTooSmall`].
    #[error("message of {0} bytes does not fit the buffer")]
    BufferTooSmall(usize),
    /// As [`GetError::Decode`].
    #[error(transparent)]
    Decode(DecodeError),
    /// As [`GetError::Corrupted`].
    #[error("queue is corrupted: {0}")]
    Corrupted(&'static str),
}

impl GetTimeoutError {
    /// Whether nothing arrived before the timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Whether every sending handle is gone and the queue is drained.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }

    /// Whether the queue was shut down (Python's `queue.ShutDown`).
    pub fn is_shut_down(&self) -> bool {
        matches!(self, Self::ShutDown)
    }
}

impl From<GetError> for GetTimeoutError {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Disconnected => Self::Disconnected,
            GetError::ShutDown => Self::ShutDown,
            GetError::BufferTooSmall(n) => Self::BufferTooSmall(n),
            GetError::Decode(e) => Self::Decode(e),
            GetError::Corrupted(what) => Self::Corrupted(what),
        }
    }
}

/// `task_done` was called more times than there were messages put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called too many times")]
pub struct TaskDoneError;

/// An access outside the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("range {offset}..{end} is outside the {len}-byte segment")]
pub struct OutOfBounds {
    /// Start of the requested range.
    pub offset: usize,
    /// End of the requested range.
    pub end: usize,
    /// Size of the segment.
    pub len: usize,
}

/// A string that is not a handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed handle string")]
pub struct ParseHandleError;

#[cfg(feature = "serde")]
/// Why a child could not be started, or did not hand back a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// A system call failed (`fork`, `posix_spawn`, `waitpid`, ...).
    #[error("system error: {0}")]
    Os(#[from] Errno),
    /// A shared segment for the child's start message or result could not be made.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The argument or the result did not encode or decode.
    #[error("{0}")]
    Codec(String),
    /// A parameter is out of range (a pool of 0 processes, `max_tasks_per_child(0)`); the
    /// message says which and what is allowed. Nothing was started.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The argument is too large to hand to a child.
    #[error("argument of {len} bytes is larger than the {max} bytes a child can be handed")]
    TooLarge {
        /// Encoded size of the argument.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// This executable does not run `multiproc`'s start-up hook, so a spawned copy would run
    /// `main` instead of the function. Call [`init`](crate::init) first thing in `main`.
    #[error("the start-up hook did not run: call multiproc::init() first thing in main")]
    NoStartupHook,
    /// The child panicked; the panic message.
    #[error("child panicked: {0}")]
    Panicked(String),
    /// The child could not run the function (see the message).
    #[error("child failed: {0}")]
    Failed(String),
    /// The child was killed by this signal before it handed back a result (`exitcode` is
    /// minus the signal number).
    #[error("child was killed by signal {0}")]
    Killed(i32),
    /// The child exited with this code without handing back a result (it called
    /// `std::process::exit`, for instance).
    #[error("child exited with code {0} without a result")]
    Exited(i32),
    /// [`Process::join_timeout`](crate::Process::join_timeout) already handed over the child's result.
    #[error("the child's result was already taken")]
    AlreadyJoined,
}

#[cfg(feature = "serde")]
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
    /// The input iterator of an `imap` panicked while the pool took an item from it; the
    /// panic message. It comes after the results of every item taken before.
    #[error("input iterator panicked: {0}")]
    Input(String),
    /// An argument Python would reject with `ValueError` (a chunk size of 0), with what was
    /// wrong.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_error() -> EncodeError {
        EncodeError("no".into())
    }

    #[test]
    fn put_errors_widen_variant_for_variant() {
        let all = || {
            [
                PutError::Disconnected(1),
                PutError::Closed(2),
                PutError::TooLarge(3),
                PutError::Encode(4, encode_error()),
                PutError::Corrupted(5, "ring positions"),
                PutError::ShutDown(6),
            ]
        };
        let tried: Vec<TryPutError<u32>> = all().into_iter().map(Into::into).collect();
        assert_eq!(
            tried,
            [
                TryPutError::Disconnected(1),
                TryPutError::Closed(2),
                TryPutError::TooLarge(3),
                TryPutError::Encode(4, encode_error()),
                TryPutError::Corrupted(5, "ring positions"),
                TryPutError::ShutDown(6),
            ]
        );
        let timed: Vec<PutTimeoutError<u32>> = all().into_iter().map(Into::into).collect();
        assert_eq!(
            timed,
            [
                PutTimeoutError::Disconnected(1),
                PutTimeoutError::Closed(2),
                PutTimeoutError::TooLarge(3),
                PutTimeoutError::Encode(4, encode_error()),
                PutTimeoutError::Corrupted(5, "ring positions"),
                PutTimeoutError::ShutDown(6),
            ]
        );
        // Each form says the same thing about the same failure.
        for ((p, t), w) in all().iter().zip(&tried).zip(&timed) {
            assert_eq!(p.to_string(), t.to_string());
            assert_eq!(p.to_string(), w.to_string());
            assert_eq!(format!("{p:?}"), format!("{t:?}"));
            assert_eq!(format!("{p:?}"), format!("{w:?}"));
        }
        let values: Vec<u32> = all().into_iter().map(PutError::into_inner).collect();
        assert_eq!(values, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn put_error_predicates_and_messages() {
        assert!(PutError::Disconnected(()).is_disconnected());
        assert!(!PutError::Closed(()).is_disconnected());

        assert!(TryPutError::Full(()).is_full());
        assert!(!TryPutError::Full(()).is_disconnected());
        assert!(TryPutError::Disconnected(()).is_disconnected());
        assert!(!TryPutError::Closed(()).is_full());
        assert_eq!(TryPutError::Full(7).into_inner(), 7);
        assert_eq!(TryPutError::Full(7).to_string(), "queue is full");
        assert_eq!(format!("{:?}", TryPutError::Full(7)), "Full(..)");

        assert!(PutTimeoutError::Timeout(()).is_timeout());
        assert!(!PutTimeoutError::Timeout(()).is_disconnected());
        assert!(PutTimeoutError::Disconnected(()).is_disconnected());
        assert!(!PutTimeoutError::TooLarge(()).is_timeout());
        assert_eq!(PutTimeoutError::Timeout(8).into_inner(), 8);
        assert_eq!(
            PutTimeoutError::Timeout(8).to_string(),
            "timed out waiting for room in the queue"
        );
        assert_eq!(format!("{:?}", PutTimeoutError::Timeout(8)), "Timeout(..)");

        let e = PutError::Encode((), encode_error());
        assert_eq!(e.to_string(), "value does not encode: no");
        assert_eq!(format!("{e:?}"), r#"Encode(.., EncodeError("no"))"#);
        assert_eq!(
            PutError::Corrupted((), "ring positions").to_string(),
            "queue is corrupted: ring positions"
        );
    }

    #[test]
    fn get_errors_widen_variant_for_variant() {
        let decode = || DecodeError::new("bad tag".into(), vec![9, 9]);
        let all = || {
            [
                GetError::Disconnected,
                GetError::BufferTooSmall(12),
                GetError::Decode(decode()),
                GetError::Corrupted("record length"),
                GetError::ShutDown,
            ]
        };
        let tried: Vec<TryGetError> = all().into_iter().map(Into::into).collect();
        assert_eq!(
            tried,
            [
                TryGetError::Disconnected,
                TryGetError::BufferTooSmall(12),
                TryGetError::Decode(decode()),
                TryGetError::Corrupted("record length"),
                TryGetError::ShutDown,
            ]
        );
        let timed: Vec<GetTimeoutError> = all().into_iter().map(Into::into).collect();
        assert_eq!(
            timed,
            [
                GetTimeoutError::Disconnected,
                GetTimeoutError::BufferTooSmall(12),
                GetTimeoutError::Decode(decode()),
                GetTimeoutError::Corrupted("record length"),
                GetTimeoutError::ShutDown,
            ]
        );
        for ((g, t), w) in all().iter().zip(&tried).zip(&timed) {
            assert_eq!(g.to_string(), t.to_string());
            assert_eq!(g.to_string(), w.to_string());
        }
        assert_eq!(
            GetError::Decode(decode()).to_string(),
            "message does not decode: bad tag"
        );
    }

    #[test]
    fn get_error_predicates_and_messages() {
        assert!(GetError::Disconnected.is_disconnected());
        assert!(!GetError::Corrupted("x").is_disconnected());

        assert!(TryGetError::Empty.is_empty());
        assert!(!TryGetError::Empty.is_disconnected());
        assert!(TryGetError::Disconnected.is_disconnected());
        assert!(!TryGetError::Disconnected.is_empty());
        assert_eq!(TryGetError::Empty.to_string(), "queue is empty");

        assert!(GetTimeoutError::Timeout.is_timeout());
        assert!(!GetTimeoutError::Timeout.is_disconnected());
        assert!(GetTimeoutError::Disconnected.is_disconnected());
        assert!(!GetTimeoutError::Disconnected.is_timeout());
        assert_eq!(
            GetTimeoutError::Timeout.to_string(),
            "timed out waiting for a message"
        );
    }

    #[test]
    fn shut_down_predicates_and_messages() {
        assert!(PutError::ShutDown(()).is_shut_down());
        assert!(!PutError::ShutDown(()).is_disconnected());
        assert!(!PutError::Closed(()).is_shut_down());
        assert!(TryPutError::ShutDown(()).is_shut_down());
        assert!(!TryPutError::ShutDown(()).is_full());
        assert!(!TryPutError::Full(()).is_shut_down());
        assert!(PutTimeoutError::ShutDown(()).is_shut_down());
        assert!(!PutTimeoutError::ShutDown(()).is_timeout());
        assert!(!PutTimeoutError::Timeout(()).is_shut_down());
        assert_eq!(PutError::ShutDown(9).into_inner(), 9);
        assert_eq!(TryPutError::ShutDown(9).into_inner(), 9);
        assert_eq!(PutTimeoutError::ShutDown(9).into_inner(), 9);
        assert_eq!(PutError::ShutDown(9).to_string(), "queue is shut down");
        assert_eq!(format!("{:?}", PutError::ShutDown(9)), "ShutDown(..)");

        assert!(GetError::ShutDown.is_shut_down());
        assert!(!GetError::ShutDown.is_disconnected());
        assert!(!GetError::Disconnected.is_shut_down());
        assert!(TryGetError::ShutDown.is_shut_down());
        assert!(!TryGetError::ShutDown.is_empty());
        assert!(!TryGetError::Empty.is_shut_down());
        assert!(GetTimeoutError::ShutDown.is_shut_down());
        assert!(!GetTimeoutError::ShutDown.is_timeout());
        assert!(!GetTimeoutError::Timeout.is_shut_down());
        assert_eq!(GetError::ShutDown.to_string(), "queue is shut down");
        assert_eq!(TryGetError::ShutDown.to_string(), "queue is shut down");
        assert_eq!(GetTimeoutError::ShutDown.to_string(), "queue is shut down");
    }

    #[test]
    fn errors_box_into_dyn_error() {
        fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> String {
            let b: Box<dyn std::error::Error + Send + Sync> = e.into();
            b.to_string()
        }
        assert_eq!(boxed(PutError::Closed(1)), "queue is closed");
        assert_eq!(boxed(TryPutError::Full(1)), "queue is full");
        assert_eq!(
            boxed(PutTimeoutError::Disconnected(1)),
            "every receiver is gone"
        );
        assert_eq!(
            boxed(GetError::Disconnected),
            "every sender is gone and the queue is drained"
        );
        assert_eq!(boxed(TryGetError::Empty), "queue is empty");
        assert_eq!(
            boxed(GetTimeoutError::BufferTooSmall(3)),
            "message of 3 bytes does not fit the buffer"
        );
    }
}
