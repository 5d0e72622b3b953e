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

/// A put that did not happen; the value comes back.
///
/// `put` returns only `Disconnected`, `Closed`, `TooLarge`, `Encode` and `Corrupted`; the try
/// and timed forms also `Full`.
#[derive(PartialEq, Eq, Clone, thiserror::Error)]
pub enum PutError<T> {
    /// No room (right now, or before the timeout).
    #[error("queue is full")]
    Full(T),
    /// Every receiving handle is gone (dropped, or its process died).
    #[error("every receiver is gone")]
    Disconnected(T),
    /// The queue was closed with `close()`.
    #[error("queue is closed")]
    Closed(T),
    /// The encoded message is larger than the queue can ever hold.
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
            Self::Full(v)
            | Self::Disconnected(v)
            | Self::Closed(v)
            | Self::TooLarge(v)
            | Self::Encode(v, _)
            | Self::Corrupted(v, _) => v,
        }
    }
}

impl<T> std::fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "Full(..)",
            Self::Disconnected(_) => "Disconnected(..)",
            Self::Closed(_) => "Closed(..)",
            Self::TooLarge(_) => "TooLarge(..)",
            Self::Encode(_, e) => return write!(f, "Encode(.., {e:?})"),
            Self::Corrupted(_, _) => "Corrupted(..)",
        })
    }
}

/// A get that returned no message.
///
/// `get` returns only `Disconnected`, `Corrupted` and `Decode`; the try and timed forms also
/// `Empty`; `get_bytes_into` also `BufferTooSmall`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// Nothing arrived (right now, or before the timeout).
    #[error("queue is empty")]
    Empty,
    /// Every sending handle is gone (dropped, killed, or the queue closed) and the queue is
    /// drained.
    #[error("every sender is gone and the queue is drained")]
    Disconnected,
    /// The caller's buffer is smaller than the next message (which stays in the queue).
    #[error("message of {0} bytes does not fit the buffer")]
    BufferTooSmall(usize),
    /// The message's bytes do not decode as the queue's type; it was consumed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The queue's shared state was scribbled on; nothing can be read safely.
    #[error("queue is corrupted: {0}")]
    Corrupted(&'static str),
}

/// `task_done` was called more times than there were messages put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called too many times")]
pub struct TaskDoneError;
