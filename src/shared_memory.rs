//! `SharedMemory`: a named block of raw bytes, compatible with Python's
//! `multiprocessing.shared_memory.SharedMemory`.
#![allow(unsafe_code)]
//! # Safety
//! `SharedMemory` owns its `Mapping` of exactly `len` bytes; `read`/`write` check
//! `offset + buf.len() <= len` before copying through raw pointers, and never form a reference
//! to the shared bytes.

use crate::primitive::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::OpenError;
use crate::segment::{NameOwner, normalize_name, open_existing, random_name, tracker};
use crate::sys::{self, Mapping};

pub use crate::error::OutOfBounds;

/// A named POSIX shared-memory block of raw bytes, like Python's
/// `multiprocessing.shared_memory.SharedMemory`.
///
/// It has no header, so the same block opens in Python:
///
/// ```text
/// # Rust                                        # Python
/// let shm = SharedMemory::create(64)?;          from multiprocessing import shared_memory
/// shm.write(0, b"hello")?;                      s = shared_memory.SharedMemory(name="<shm.name()>")
///                                               bytes(s.buf[:5]) == b"hello"
/// ```
///
/// and a block Python created opens with [`open`](Self::open). Names follow Python: the leading
/// `/` is optional and [`name`](Self::name) returns the name without it.
///
/// The creating process unlinks the name when it drops the block (Python leaves that to
/// `unlink()` or its resource tracker); [`unlink`](Self::unlink) does it earlier and
/// [`persist`](Self::persist) keeps the name past the drop. If the creator dies without
/// dropping it, the name tracker removes the name (see below). Concurrent writes to the same
/// bytes must be ordered by the processes themselves, for instance with a
/// [`Lock`](crate::Lock).
/// A POSIX shm object cannot be sealed, so a process that shrinks the file under our mapping
/// makes our next access to the cut-off part raise `SIGBUS`, as with any `mmap`.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let shm = multiproc::SharedMemory::create(16)?;
/// shm.write(4, b"abc")?;
/// let other = multiproc::SharedMemory::open(shm.name())?;
/// let mut buf = [0u8; 3];
/// other.read(4, &mut buf)?;
/// assert_eq!(&buf, b"abc");
/// # Ok(()) }
/// ```
///
/// A clone is another handle on the same block that shares this handle's mapping; the
/// creating process unlinks the name when its last handle is dropped.
///
/// # Names and the tracker
///
/// Every named segment this crate creates (a `SharedMemory`, or an object built with
/// [`Builder::name`](crate::Builder::name) or [`named`](crate::Builder::named)) is *tracked*
/// unless made persistent: if its creator dies without dropping it (a crash, SIGKILL), the
/// name is removed once no process that created or opened it is left, and never while one
/// still maps it. This is done by a *tracker*, one small idle process per program, started
/// on the first tracked create or open, which outlives the program just long enough to
/// remove the names it left behind:
///
/// - Each process that creates or opens a name holds a shared `flock` on it for as long as
///   it maps it; the kernel drops it when the process dies. The tracker removes a name only
///   after an exclusive `flock` succeeds and `/proc/*/maps` shows no other process (such as a
///   Python process) mapping it.
/// - Tracked names have mode `01600` (the sticky bit marks them); a persistent name, and any
///   block Python created, has mode 0600 and is never removed by the tracker.
/// - Cost: one extra process per program that uses names (about 1.5 MiB resident), started
///   by the first tracked create or open (a `posix_spawn` of this executable, not waited
///   for); then a few system calls per create or open. If the tracker cannot start or dies,
///   everything keeps working and names go only by drop or `unlink`.
///
/// To keep a name after every process is gone, use [`persist`](Self::persist) (or
/// [`Builder::persistent`](crate::Builder::persistent) for objects).
///
/// A Python process that attaches one of our blocks should keep Python's own tracker out of
/// it, since Python before 3.13 unlinks at exit every block it merely attached: pass
/// `track=False` to `SharedMemory` (Python 3.13 and later), or call
/// `resource_tracker.unregister(shm._name, "shared_memory")` right after attaching.
#[derive(Debug, Clone)]
pub struct SharedMemory {
    inner: Arc<Block>,
}

/// What the handles of one block share.
#[derive(Debug)]
struct Block {
    map: Mapping,
    /// With the leading slash.
    name: String,
    /// Device and inode of the object we mapped.
    identity: (u64, u64),
    /// Set in the creating process: unlinks the name on drop, unless `persisted`.
    owner: Option<NameOwner>,
    persisted: AtomicBool,
    unlinked: AtomicBool,
}

impl SharedMemory {
    /// Creates a block of `size` zeroed bytes under a fresh unguessable name.
    ///
    /// # Errors
    /// [`OpenError::InvalidArgument`] if `size` is 0 (Python's `ValueError`); the system
    /// error.
    pub fn create(size: usize) -> Result<Self, OpenError> {
        Self::create_at(random_name(), size)
    }

    /// Creates a block of `size` zeroed bytes named `name`, exclusively, mode 0600.
    ///
    /// # Errors
    /// [`OpenError::AlreadyExists`], [`OpenError::InvalidName`], [`OpenError::InvalidArgument`]
    /// if `size` is 0, or the system error.
    pub fn create_named(name: &str, size: usize) -> Result<Self, OpenError> {
        Self::create_at(normalize_name(name)?, size)
    }

    fn create_at(name: String, size: usize) -> Result<Self, OpenError> {
        if size == 0 {
            return Err(OpenError::InvalidArgument(
                "shared memory size must be at least 1 byte",
            ));
        }
        let (map, owner) = NameOwner::create(&name, size, true)?;
        Ok(Self::from_block(Block {
            map,
            name,
            identity: owner.identity(),
            owner: Some(owner),
            persisted: AtomicBool::new(false),
            unlinked: AtomicBool::new(false),
        }))
    }

    /// Opens the existing block `name`, whatever created it; its size is the file's size.
    ///
    /// # Errors
    /// [`OpenError::NotFound`], [`OpenError::PermissionDenied`], or the system error; an empty
    /// object gives [`OpenError::Truncated`]. A block that another program's tracker is
    /// removing right now (it holds an exclusive `flock`, for a few milliseconds) is waited
    /// for, up to one second, and then gives [`OpenError::NotFound`].
    pub fn open(name: &str) -> Result<Self, OpenError> {
        let name = normalize_name(name)?;
        let deadline = std::time::Instant::now().checked_add(crate::segment::DEFAULT_OPEN_TIMEOUT);
        let (fd, state) = open_existing(&name, deadline)?;
        let len = sys::fd_len(&fd).map_err(OpenError::os)?;
        if len == 0 {
            return Err(OpenError::Truncated {
                found: 0,
                expected: 1,
            });
        }
        let len = usize::try_from(len).map_err(|_| OpenError::Corrupted("size"))?;
        let map = Mapping::map_fd(&fd, len).map_err(OpenError::os)?;
        if state.tracked {
            tracker::register(&name, state.identity);
        }
        Ok(Self::from_block(Block {
            map,
            name,
            identity: state.identity,
            owner: None,
            persisted: AtomicBool::new(false),
            unlinked: AtomicBool::new(false),
        }))
    }

    fn from_block(block: Block) -> Self {
        Self {
            inner: Arc::new(block),
        }
    }

    /// The name, without the leading `/` (what Python's `SharedMemory(name=...)` expects).
    pub fn name(&self) -> &str {
        &self.inner.name[1..]
    }

    /// Size in bytes.
    #[doc(alias = "size")]
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// Whether the block is empty (never, for a block that opened).
    pub fn is_empty(&self) -> bool {
        self.inner.map.len() == 0
    }

    /// Start of the mapping, valid for [`len`](Self::len) bytes while `self` lives. Other
    /// processes may write these bytes at any time: access them through raw pointers or
    /// atomics, never as `&[u8]`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.map.ptr().as_ptr()
    }

    fn check(&self, offset: usize, n: usize) -> Result<(), OutOfBounds> {
        let len = self.len();
        match offset.checked_add(n) {
            Some(end) if end <= len => Ok(()),
            end => Err(OutOfBounds {
                offset,
                end: end.unwrap_or(usize::MAX),
                len,
            }),
        }
    }

    /// Copies `buf.len()` bytes starting at `offset` out of the block.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the range does not fit; nothing is copied then.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(offset, buf.len())?;
        let src = self.as_ptr().wrapping_add(offset);
        // SAFETY: offset + len is within the mapping (checked); `buf` is a distinct local buffer.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the block at `offset`.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the range does not fit; nothing is copied then.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.check(offset, data.len())?;
        let dst = self.as_ptr().wrapping_add(offset);
        // SAFETY: offset + len is within the mapping (checked). `data` is a `&[u8]`, so it cannot
        // point into the mapping (we never hand out references to it), and the ranges are
        // disjoint.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// A copy of the whole block.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        self.read(0, &mut v).expect("whole block is in bounds");
        v
    }

    /// Removes the name now; existing mappings stay valid. `Ok(false)` if already removed by us.
    ///
    /// # Errors
    /// [`OpenError::NotFound`] if someone else removed it.
    pub fn unlink(&self) -> Result<bool, OpenError> {
        if self.inner.unlinked.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        sys::shm_unlink(&self.inner.name).map_err(|e| OpenError::shm(e, &self.inner.name))?;
        tracker::forget(&self.inner.name, self.inner.identity);
        Ok(true)
    }

    /// Keeps the name after the creating process's handles (this one and its clones) are
    /// dropped, and after every process is gone, as Python does by default: the block is no
    /// longer tracked (see [Names and the tracker](Self#names-and-the-tracker)), and only
    /// [`unlink`](Self::unlink), from any process, removes the name.
    pub fn persist(self) -> Self {
        self.inner.persisted.store(true, Ordering::Relaxed);
        let name = &self.inner.name;
        if let Ok(fd) = sys::shm_open_existing(name) {
            if sys::fd_identity(&fd) == Ok(self.inner.identity) {
                let _ = sys::track::set_tracked(&fd, false);
                tracker::forget(name, self.inner.identity);
            }
        }
        self
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(owner) = &self.owner {
            if !self.persisted.load(Ordering::Relaxed)
                && !self.unlinked.swap(true, Ordering::AcqRel)
            {
                owner.release(&self.name);
            }
        }
    }
}
