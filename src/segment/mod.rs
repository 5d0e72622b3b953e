//! L1: mapped segments with a validated header, and the handles that re-attach them.
//!
//! Every shared object lives in its own segment:
//!
//! ```text
//! offset 0   Header (64 bytes): magic, init state, layout version, type tag, sizes, creator pid
//! offset 64  payload: the object's #[repr(C)] state, then (for arrays) its elements
//! ```
//!
//! A segment is backed by a memfd (the default: inherited across `fork`, passed across `exec` as
//! an fd), a named POSIX shm object (`/dev/shm/<name>`, opened by name from any process), or an
//! anonymous shared mapping (inherited across `fork` only).
//!
//! A fourth backing, [`Backing::Heap`], puts the segment on this process's heap: the same header,
//! payload and code paths, but reachable by the threads of this process only (a child forked
//! later gets a private copy, so it is never picked for an object meant to be shared). Where
//! the build cannot share memory at all (`Mapping::CAN_SHARE` is false: under Miri), the memfd
//! and anonymous backings fall back to it, so that single-process tests of every object run
//! under Miri; named segments fail there with `NOSYS`.
#![allow(unsafe_code)]
//! # Safety
//! `Segment` keeps its `Mapping` alive for as long as it lives, and `open` checks that the
//! mapping spans `HEADER_LEN + payload_len` bytes before any pointer into it is handed out, so
//! `payload()` is valid for `payload_len()` bytes while the `Segment` lives.

pub(crate) mod atomic_copy;
mod foreign;
mod handle;
mod header;
pub(crate) mod object;
pub(crate) mod tracker;

pub(crate) use foreign::{Foreign, ForeignMut, Slot};
pub(crate) use handle::Location;
pub use handle::{Handle, ParseHandleError};
#[cfg(feature = "serde")]
pub(crate) use handle::{InheritFd, collecting, note_object};
pub(crate) use header::{HEADER_LEN, Header, kind};

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::OpenError;
use crate::sys::{self, Errno, Fd, Mapping};

/// How long `open` waits for a creator that is still initialising the segment.
pub(crate) const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a new segment goes.
#[derive(Clone, Debug, Default)]
pub(crate) enum Backing {
    /// A memfd (default).
    #[default]
    Memfd,
    /// A named POSIX shm object; `None` picks an unguessable name. A `persistent` name is
    /// not tracked and outlives its creator (see [`tracker`]).
    Named {
        name: Option<String>,
        persistent: bool,
    },
    /// An anonymous shared mapping, visible to children forked later and nobody else.
    Anonymous,
    /// Heap memory of this process: visible to its threads and nobody else (see module docs).
    #[cfg_attr(not(test), allow(dead_code))]
    Heap,
}

#[derive(Debug)]
enum Source {
    Anonymous,
    Heap,
    Memfd(Fd),
    Named {
        name: String,
        /// Device and inode of the object we mapped.
        identity: (u64, u64),
        /// Set in the creating process only (unless persistent): it unlinks the name on drop.
        owner: Option<NameOwner>,
        unlinked: AtomicBool,
    },
}

/// A mapped segment whose header has been written (create) or validated (open).
#[derive(Debug)]
pub(crate) struct Segment {
    map: Mapping,
    source: Source,
    kind: u32,
    payload_len: usize,
}

/// The creator of a named segment, who unlinks the name when done with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NameOwner {
    pid: u32,
    identity: (u64, u64),
}

impl NameOwner {
    /// Creates the POSIX shm object `name` (exclusively, mode 0600, or 01600 if `tracked`) of
    /// `len` bytes and maps it; a tracked name is registered with the [`tracker`]. On any
    /// failure after the name was taken, the name is removed again.
    pub(crate) fn create(
        name: &str,
        len: usize,
        tracked: bool,
    ) -> Result<(Mapping, Self), OpenError> {
        let fd =
            sys::shm_create_excl(name, len as u64, tracked).map_err(|e| OpenError::shm(e, name))?;
        let mapped = Mapping::map_fd(&fd, len).and_then(|map| {
            let owner = Self {
                pid: sys::current_pid(),
                identity: sys::fd_identity(&fd)?,
            };
            Ok((map, owner))
        });
        let (map, owner) = mapped.map_err(|e| {
            let _ = sys::shm_unlink(name);
            OpenError::os(e)
        })?;
        if tracked {
            tracker::register(name, owner.identity);
        }
        Ok((map, owner))
    }

    /// Device and inode of the object created.
    pub(crate) fn identity(&self) -> (u64, u64) {
        self.identity
    }

    /// Unlinks `name`, but only from the creating process (a forked child dropping its
    /// inherited copy must not take the name from everyone else) and only while the name still
    /// refers to the object we created (someone may have unlinked it and reused the name).
    pub(crate) fn release(&self, name: &str) {
        if self.pid == sys::current_pid() && sys::shm_identity(name) == Ok(self.identity) {
            let _ = sys::shm_unlink(name);
            tracker::forget(name, self.identity);
        }
    }
}

/// Normalises a user-supplied POSIX shm name to the `/name` form (as Python does) and checks it.
pub(crate) fn normalize_name(name: &str) -> Result<String, OpenError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.contains('/') || bare.contains('\0') || bare.len() > 250 {
        return Err(OpenError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(format!("/{bare}"))
}

/// Opens the existing POSIX shm object `name` for an attach: takes a shared `flock` on it
/// (waiting up to `deadline` while the [`tracker`] of another program holds it exclusively to
/// remove the name), checks that the name was not removed meanwhile, and returns the
/// descriptor with the file's state.
pub(crate) fn open_existing(
    name: &str,
    deadline: Option<Instant>,
) -> Result<(Fd, sys::track::FileState), OpenError> {
    let fd = sys::shm_open_existing(name).map_err(|e| OpenError::shm(e, name))?;
    while !sys::track::lock_shared(&fd).map_err(OpenError::os)? {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // Still locked for removal: as good as gone.
            return Err(OpenError::shm(Errno::from_raw(libc::ENOENT), name));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let state = sys::track::file_state(&fd).map_err(OpenError::os)?;
    if !state.linked {
        // A tracker removed the name between our open and our lock.
        return Err(OpenError::shm(Errno::from_raw(libc::ENOENT), name));
    }
    Ok((fd, state))
}

/// A fresh unguessable name such as `/mp-3f9a0c2e4b1d7a65`.
pub(crate) fn random_name() -> String {
    format!("/mp-{:016x}", sys::random_u64())
}

impl Segment {
    /// Creates a segment for an object of type tag `kind` with `payload_len` payload bytes.
    ///
    /// `init` fills the (zeroed) payload; only after it returns is the header's init state
    /// published, so no opener ever sees a half-built object.
    pub(crate) fn create(
        backing: &Backing,
        kind: u32,
        payload_len: usize,
        init: impl FnOnce(NonNull<u8>),
    ) -> Result<Self, OpenError> {
        let total = HEADER_LEN
            .checked_add(payload_len)
            .ok_or(OpenError::Os(Errno::INVAL))?;
        let (map, source) = match backing {
            Backing::Heap => (Mapping::heap(total).map_err(OpenError::os)?, Source::Heap),
            Backing::Memfd | Backing::Anonymous if !Mapping::CAN_SHARE => {
                (Mapping::heap(total).map_err(OpenError::os)?, Source::Heap)
            }
            Backing::Memfd => {
                let fd = sys::memfd_create("multiproc", total as u64).map_err(OpenError::os)?;
                (
                    Mapping::map_fd(&fd, total).map_err(OpenError::os)?,
                    Source::Memfd(fd),
                )
            }
            Backing::Anonymous => (
                Mapping::anonymous_shared(total).map_err(OpenError::os)?,
                Source::Anonymous,
            ),
            Backing::Named { name, persistent } => {
                let name = match name {
                    Some(n) => normalize_name(n)?,
                    None => random_name(),
                };
                let (map, owner) = NameOwner::create(&name, total, !persistent)?;
                let source = Source::Named {
                    name,
                    identity: owner.identity(),
                    // A persistent name outlives its creator.
                    owner: (!persistent).then_some(owner),
                    unlinked: AtomicBool::new(false),
                };
                (map, source)
            }
        };
        let header = map.ptr().cast::<Header>();
        // SAFETY: the mapping (or heap block) is at least HEADER_LEN bytes, page aligned, and zero
        // filled; nobody else can have a reference to the header of a segment being created.
        let header = unsafe { header.as_ref() };
        header.write_fields(kind, total as u64, payload_len as u64);
        // SAFETY: HEADER_LEN < total, so the payload pointer stays inside the mapping.
        let payload = unsafe { map.ptr().add(HEADER_LEN) };
        init(payload);
        header.publish();
        Ok(Self {
            map,
            source,
            kind,
            payload_len,
        })
    }

    /// Attaches the segment `location` names and validates its header against `kind`.
    pub(crate) fn open(
        location: &Location,
        kind: u32,
        timeout: Duration,
    ) -> Result<Self, OpenError> {
        // A timeout too long to add to `Instant` waits for good.
        let deadline = Instant::now().checked_add(timeout);
        let (fd, name) = match location {
            Location::Named(name) => {
                let name = normalize_name(name)?;
                let (fd, state) = open_existing(&name, deadline)?;
                (fd, Some((name, state)))
            }
            Location::Fd(raw) => match sys::dup_raw_fd(*raw) {
                // Only our own sealed memory files: another kind of descriptor (a shm object a
                // peer passed, a number reused for a plain file) could shrink under the mapping.
                Ok(fd) if !sys::sealed_against_shrinking(&fd) => {
                    return Err(OpenError::Corrupted(
                        "descriptor is not a memory file sealed against shrinking",
                    ));
                }
                Ok(fd) => (fd, None),
                Err(e) if e.raw() == libc::EBADF => return Err(OpenError::NotFound { name: None }),
                Err(e) => return Err(OpenError::Os(e)),
            },
            Location::Anonymous => {
                return Err(OpenError::NotInheritable(
                    "an anonymous segment is reachable only through inheritance across fork",
                ));
            }
        };
        let expired = || deadline.is_some_and(|d| Instant::now() >= d);
        loop {
            let len = sys::fd_len(&fd).map_err(OpenError::os)?;
            if len == 0 {
                // The creator has not sized it yet (shm_open and ftruncate are two steps).
                if expired() {
                    return Err(OpenError::Uninitialized);
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if len < HEADER_LEN as u64 {
                return Err(OpenError::Truncated {
                    found: len,
                    expected: HEADER_LEN as u64,
                });
            }
            let len_usize = usize::try_from(len).map_err(|_| OpenError::Corrupted("size"))?;
            let map = Mapping::map_fd(&fd, len_usize).map_err(OpenError::os)?;
            // SAFETY: the mapping spans at least HEADER_LEN bytes (checked above) and is page
            // aligned; Header is all atomics, so concurrent writers cause no UB.
            let header = unsafe { map.ptr().cast::<Header>().as_ref() };
            let valid = header.validate(kind, len);
            match valid.map_err(|e| match &name {
                Some((name, _)) => e.with_name(name),
                None => e,
            })? {
                None => {
                    if expired() {
                        return Err(OpenError::Uninitialized);
                    }
                    drop(map);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Some(payload_len) => {
                    let source = match name {
                        Some((name, state)) => {
                            if state.tracked {
                                tracker::register(&name, state.identity);
                            }
                            Source::Named {
                                name,
                                identity: state.identity,
                                owner: None,
                                unlinked: AtomicBool::new(false),
                            }
                        }
                        None => Source::Memfd(fd),
                    };
                    return Ok(Self {
                        map,
                        source,
                        kind,
                        payload_len,
                    });
                }
            }
        }
    }

    /// Start of the payload; valid for [`payload_len`](Self::payload_len) bytes while `self` lives.
    pub(crate) fn payload(&self) -> NonNull<u8> {
        // SAFETY: the mapping spans HEADER_LEN + payload_len bytes (module note).
        unsafe { self.map.ptr().add(HEADER_LEN) }
    }

    /// Payload size in bytes, as validated at open.
    pub(crate) fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The handle another process uses to attach this segment.
    pub(crate) fn handle(&self) -> Handle {
        let location = match &self.source {
            // Nobody else can attach a heap segment either; opening this handle explains why.
            Source::Anonymous | Source::Heap => Location::Anonymous,
            Source::Memfd(fd) => Location::Fd(sys::raw_fd(fd)),
            Source::Named { name, .. } => Location::Named(name.clone()),
        };
        Handle::new(self.kind, location)
    }

    /// The POSIX shm name, for named segments.
    pub(crate) fn name(&self) -> Option<&str> {
        match &self.source {
            Source::Named { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Lets the memfd behind this segment survive `exec`, so an exec'd child can open
    /// [`handle`](Self::handle). No effect on named, anonymous or heap segments.
    pub(crate) fn set_inheritable(&self, inheritable: bool) -> Result<(), Errno> {
        match &self.source {
            Source::Memfd(fd) => sys::set_cloexec(fd, !inheritable),
            _ => Ok(()),
        }
    }

    /// Removes the segment's name now; mappings stay valid. Returns whether this call removed it.
    pub(crate) fn unlink(&self) -> Result<bool, OpenError> {
        match &self.source {
            Source::Named {
                name,
                identity,
                unlinked,
                ..
            } => {
                if unlinked.swap(true, Ordering::AcqRel) {
                    return Ok(false);
                }
                sys::shm_unlink(name).map_err(|e| OpenError::shm(e, name))?;
                tracker::forget(name, *identity);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Source::Named {
            name,
            owner: Some(owner),
            unlinked,
            ..
        } = &self.source
        {
            if !unlinked.swap(true, Ordering::AcqRel) {
                owner.release(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates a segment, fills its payload through `init`, and checks what every backing
    /// promises: a published header that validates, a zeroed and 64-byte aligned payload.
    fn create_and_check(backing: &Backing) -> Segment {
        let payload_len = 100;
        let seg = Segment::create(backing, kind::VALUE, payload_len, |payload| {
            assert_eq!(payload.as_ptr().addr() % 64, 0);
            for i in 0..payload_len {
                // SAFETY: `i < payload_len`; `create` lends us the fresh payload until we return.
                let byte = unsafe { payload.add(i) };
                // SAFETY: as above.
                assert_eq!(unsafe { byte.read() }, 0);
                // SAFETY: as above.
                unsafe { byte.write(i as u8) };
            }
        })
        .unwrap();
        assert_eq!(seg.payload_len(), payload_len);
        // SAFETY: a live segment spans HEADER_LEN + payload_len bytes (module note); the header
        // is all atomics.
        let header = unsafe { seg.map.ptr().cast::<Header>().as_ref() };
        let total = (HEADER_LEN + payload_len) as u64;
        assert_eq!(
            header.validate(kind::VALUE, total).unwrap(),
            Some(payload_len)
        );
        // SAFETY: 99 < payload_len.
        let last = unsafe { seg.payload().add(99) };
        // SAFETY: as above; `init` wrote the byte.
        assert_eq!(unsafe { last.read() }, 99);
        seg
    }

    #[test]
    fn heap_segment_works_in_process_and_cannot_be_opened_elsewhere() {
        let seg = create_and_check(&Backing::Heap);
        assert!(matches!(seg.source, Source::Heap));
        assert_eq!(seg.name(), None);
        assert!(!seg.unlink().unwrap());
        seg.set_inheritable(true).unwrap();
        let handle = seg.handle();
        assert!(matches!(handle.location(), Location::Anonymous));
        let err = Segment::open(handle.location(), kind::VALUE, Duration::ZERO).unwrap_err();
        assert!(matches!(err, OpenError::NotInheritable(_)), "{err:?}");
    }

    #[test]
    fn default_backings_fall_back_to_the_heap_only_where_memory_cannot_be_shared() {
        for backing in [Backing::Memfd, Backing::Anonymous] {
            let seg = create_and_check(&backing);
            assert_eq!(matches!(seg.source, Source::Heap), !Mapping::CAN_SHARE);
        }
        if !Mapping::CAN_SHARE {
            let err = Segment::create(
                &Backing::Named {
                    name: None,
                    persistent: false,
                },
                kind::VALUE,
                8,
                |_| (),
            )
            .unwrap_err();
            assert!(matches!(err, OpenError::Os(Errno::NOSYS)), "{err:?}");
            let err = Segment::open(
                &Location::Named("/mp-x".into()),
                kind::VALUE,
                Duration::ZERO,
            )
            .unwrap_err();
            assert!(matches!(err, OpenError::Os(Errno::NOSYS)), "{err:?}");
        }
    }
}
