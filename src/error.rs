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
/// on its bytes gives one of these, never a panic or undefined behaviour.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// No segment of that name (or the handle's fd is not open in this process).
    #[error("shared object not found")]
    NotFound,
    /// Creating exclusively, and the name is taken.
    #[error("a shared object of that name already exists")]
    AlreadyExists,
    /// The segment exists but this process may not open it.
    #[error("permission denied")]
    PermissionDenied,
    /// The name is not a valid POSIX shm name (empty, contains '/', or too long).
    #[error("invalid shared object name")]
    InvalidName,
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
    #[error("segment holds another object type (tag {found:#x}, expected {expected:#x})")]
    WrongType {
        /// Tag found in the header.
        found: u32,
        /// Tag of the type being opened.
        expected: u32,
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

impl From<Errno> for OpenError {
    fn from(e: Errno) -> Self {
        match e {
            Errno::NOENT => Self::NotFound,
            Errno::EXIST => Self::AlreadyExists,
            Errno::ACCES => Self::PermissionDenied,
            Errno::INVAL | Errno::NAMETOOLONG => Self::InvalidName,
            other => Self::Os(other),
        }
    }
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
