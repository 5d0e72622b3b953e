//! Shared memory: memfd and POSIX shm file descriptors, and `MAP_SHARED` mappings of them; and
//! process-local heap memory standing in for a mapping where sharing is impossible.
//!
//! Under Miri, which can map only private anonymous memory and knows neither memfd nor POSIX shm,
//! [`Mapping::CAN_SHARE`] is false: every function here that would create, open or map shared memory
//! returns [`Errno::NOSYS`] (an error, never an unsupported operation), and callers fall back to
//! [`Mapping::heap`].
//!
//! # References
//! - [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html)
//! - [memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
//! - [shm_open(3)](https://man7.org/linux/man-pages/man3/shm_open.3.html)
#![allow(unsafe_code)]
//! # Safety
//! A [`Mapping`] owns its address range from `mmap` (or `alloc_zeroed`) until `Drop` unmaps (or
//! deallocates) it; nothing else in the crate unmaps or frees that memory, so pointers derived
//! from a live `Mapping` stay valid while it lives.

use std::alloc::Layout;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, Mode};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm;

use super::{Errno, retry_on_intr};

/// An owned file descriptor (memfd or POSIX shm object).
pub(crate) type Fd = OwnedFd;

/// Whether this build can create memory shared with other processes; see [`Mapping::CAN_SHARE`].
const CAN_SHARE: bool = !cfg!(miri);

/// `Err(NOSYS)` where shared memory is unavailable (see [`CAN_SHARE`]).
fn shared_memory_available() -> Result<(), Errno> {
    if CAN_SHARE { Ok(()) } else { Err(Errno::NOSYS) }
}

/// Alignment of a heap-backed [`Mapping`]: a page, as `mmap` would give, so that layouts
/// checked against page alignment hold on both kinds.
const HEAP_ALIGN: usize = 4096;

/// Creates an anonymous memory file of `len` bytes, close-on-exec, sealed against resizing.
///
/// The seals matter: a peer that shrank the file under our mapping would turn our next access
/// into `SIGBUS`. (POSIX shm objects cannot be sealed; see the docs of named segments.)
pub(crate) fn memfd_create(debug_name: &str, len: u64) -> Result<Fd, Errno> {
    shared_memory_available()?;
    let fd = rustix::fs::memfd_create(debug_name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(Errno::from_rustix)?;
    retry_on_intr(|| rustix::fs::ftruncate(&fd, len).map_err(Errno::from_rustix))?;
    rustix::fs::fcntl_add_seals(
        &fd,
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW | rustix::fs::SealFlags::SEAL,
    )
    .map_err(Errno::from_rustix)?;
    Ok(fd)
}

/// Whether `fd` is a memory file sealed against shrinking (as [`memfd_create`] makes them), so
/// that no holder of it can turn our accesses to the mapping into `SIGBUS`.
pub(crate) fn sealed_against_shrinking(fd: &Fd) -> bool {
    rustix::fs::fcntl_get_seals(fd).is_ok_and(|s| s.contains(rustix::fs::SealFlags::SHRINK))
}

/// Duplicates the raw descriptor `raw` (close-on-exec), e.g. one named by a handle that a parent
/// passed down. A number that is not an open descriptor gives `EBADF`.
pub(crate) fn dup_raw_fd(raw: i32) -> Result<Fd, Errno> {
    if raw < 0 {
        return Err(Errno::from_raw(libc::EBADF));
    }
    // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor table; an unused number fails with EBADF.
    let new = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(Errno::from_raw(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EBADF),
        ));
    }
    // SAFETY: `new` is a descriptor the kernel just allocated for us; nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
}

/// The raw number of `fd`, for a handle that names it.
pub(crate) fn raw_fd(fd: &Fd) -> i32 {
    std::os::fd::AsRawFd::as_raw_fd(fd)
}

/// Creates the POSIX shm object `name` exclusively (`O_EXCL`), mode 0600, and sizes it to `len`.
///
/// On a sizing failure the name is unlinked again, so a failed create leaves nothing behind.
///
/// Before sizing it (so before anyone can open a complete object), it takes a shared `flock`
/// on it and, if `tracked`, gives it the tracked mark (see `segment::tracker`).
pub(crate) fn shm_create_excl(name: &str, len: u64, tracked: bool) -> Result<Fd, Errno> {
    shared_memory_available()?;
    let flags = shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR;
    let fd = shm::open(name, flags, Mode::from_raw_mode(0o600)).map_err(Errno::from_rustix)?;
    let prepared = (|| {
        if tracked {
            super::track::set_tracked(&fd, true)?;
        }
        // Nobody holds an exclusive lock on a file this new but a hostile process.
        if !super::track::lock_shared(&fd)? {
            return Err(Errno::AGAIN);
        }
        retry_on_intr(|| rustix::fs::ftruncate(&fd, len).map_err(Errno::from_rustix))
    })();
    if let Err(e) = prepared {
        let _ = shm::unlink(name);
        return Err(e);
    }
    Ok(fd)
}

/// Opens the existing POSIX shm object `name` for reading and writing.
pub(crate) fn shm_open_existing(name: &str) -> Result<Fd, Errno> {
    shared_memory_available()?;
    shm::open(name, shm::OFlags::RDWR, Mode::empty()).map_err(Errno::from_rustix)
}

/// Removes the name of a POSIX shm object; mappings that exist stay valid.
pub(crate) fn shm_unlink(name: &str) -> Result<(), Errno> {
    shared_memory_available()?;
    shm::unlink(name).map_err(Errno::from_rustix)
}

/// Device and inode of the file behind `fd`: which object a descriptor or name refers to.
pub(crate) fn fd_identity(fd: impl AsFd) -> Result<(u64, u64), Errno> {
    let st = rustix::fs::fstat(fd).map_err(Errno::from_rustix)?;
    Ok((st.st_dev, st.st_ino))
}

/// Device and inode of the POSIX shm object that `name` refers to right now.
pub(crate) fn shm_identity(name: &str) -> Result<(u64, u64), Errno> {
    shared_memory_available()?;
    let fd = shm::open(name, shm::OFlags::RDONLY, Mode::empty()).map_err(Errno::from_rustix)?;
    fd_identity(fd)
}

/// The current size of the file behind `fd`.
pub(crate) fn fd_len(fd: impl AsFd) -> Result<u64, Errno> {
    let st = rustix::fs::fstat(fd).map_err(Errno::from_rustix)?;
    u64::try_from(st.st_size).map_err(|_| Errno::INVAL)
}

/// Sets or clears `FD_CLOEXEC`, i.e. whether `fd` survives `exec`.
pub(crate) fn set_cloexec(fd: impl AsFd, cloexec: bool) -> Result<(), Errno> {
    let flags = if cloexec {
        rustix::io::FdFlags::CLOEXEC
    } else {
        rustix::io::FdFlags::empty()
    };
    rustix::io::fcntl_setfd(fd, flags).map_err(Errno::from_rustix)
}

/// A `MAP_SHARED`, read-write mapping, unmapped on drop; or (see [`Mapping::heap`]) zeroed
/// heap memory of this process, freed on drop.
///
/// It hands out a raw pointer only: other processes may write the memory at any time, so no
/// `&[u8]` to it may exist.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// `Some(layout)` when `ptr` came from `alloc_zeroed(layout)` rather than `mmap`.
    heap: Option<Layout>,
}

// SAFETY: a Mapping is an address range; it carries no thread affinity, and all access to the
// memory goes through raw pointers or atomics whose users uphold the synchronisation rules.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes the pointer and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Whether this build can create memory shared with other processes (memfd, POSIX shm,
    /// `MAP_SHARED`). False under Miri: there every segment lives on the heap of the one
    /// process ([`heap`](Self::heap)), and the functions that would share memory return
    /// `NOSYS`.
    pub(crate) const CAN_SHARE: bool = CAN_SHARE;

    /// Maps `len` bytes of `fd` from offset 0, shared, read-write.
    pub(crate) fn map_fd(fd: impl AsFd, len: usize) -> Result<Self, Errno> {
        shared_memory_available()?;
        if len == 0 {
            return Err(Errno::INVAL);
        }
        // SAFETY: a fresh mapping at an address the kernel picks (null hint) cannot alias any
        // existing Rust object; we own it until Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(Errno::from_rustix)?;
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).ok_or(Errno::INVAL)?,
            len,
            heap: None,
        })
    }

    /// Maps `len` zeroed bytes of anonymous memory, shared with children forked later.
    pub(crate) fn anonymous_shared(len: usize) -> Result<Self, Errno> {
        shared_memory_available()?;
        if len == 0 {
            return Err(Errno::INVAL);
        }
        // SAFETY: as in `map_fd`: a fresh kernel-chosen range that nothing else refers to.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
            )
        }
        .map_err(Errno::from_rustix)?;
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).ok_or(Errno::INVAL)?,
            len,
            heap: None,
        })
    }

    /// Allocates `len` zeroed, page-aligned bytes on this process's heap.
    ///
    /// The memory behaves like a fresh mapping for every thread of this process, but no other
    /// process can reach it, and a child forked later gets a private copy. It exists for tests
    /// (Miri, which cannot map shared memory, and loom) and for builds without shared memory.
    pub(crate) fn heap(len: usize) -> Result<Self, Errno> {
        if len == 0 {
            return Err(Errno::INVAL);
        }
        let layout = Layout::from_size_align(len, HEAP_ALIGN).map_err(|_| Errno::INVAL)?;
        // SAFETY: `layout` has a non-zero size (checked above), the only precondition.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(Errno::from_raw(libc::ENOMEM))?,
            len,
            heap: Some(layout),
        })
    }

    /// Start of the mapping; valid for `len()` bytes while `self` lives.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        match self.heap {
            // SAFETY: `ptr` came from `alloc_zeroed(layout)` in `heap` and is freed only here.
            Some(layout) => unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) },
            None => {
                // SAFETY: `ptr`/`len` describe a range this Mapping mapped and still owns
                // (module note).
                let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_mapping_is_zeroed_aligned_and_writable() {
        let map = Mapping::heap(HEAP_ALIGN + 100).unwrap();
        assert!(map.heap.is_some());
        assert_eq!(map.len(), HEAP_ALIGN + 100);
        assert_eq!(map.ptr().as_ptr().addr() % HEAP_ALIGN, 0);
        for i in [0, 1, HEAP_ALIGN, HEAP_ALIGN + 99] {
            // SAFETY: `i < len`; the mapping lives until the end of the test and nothing else
            // refers to it.
            let byte = unsafe { map.ptr().add(i) };
            // SAFETY: as above.
            assert_eq!(unsafe { byte.read() }, 0);
            // SAFETY: as above.
            unsafe { byte.write(0xA5) };
            // SAFETY: as above.
            assert_eq!(unsafe { byte.read() }, 0xA5);
        }
        assert_eq!(Mapping::heap(0).unwrap_err(), Errno::INVAL);
    }

    #[test]
    fn sharing_is_refused_with_an_error_where_unavailable() {
        if CAN_SHARE {
            let fd = memfd_create("multiproc-test", 4096).unwrap();
            let map = Mapping::map_fd(&fd, 4096).unwrap();
            assert!(map.heap.is_none());
        } else {
            assert_eq!(memfd_create("x", 4096).unwrap_err(), Errno::NOSYS);
            assert_eq!(Mapping::anonymous_shared(4096).unwrap_err(), Errno::NOSYS);
            assert_eq!(shm_open_existing("/x").unwrap_err(), Errno::NOSYS);
            assert_eq!(shm_create_excl("/x", 4096, true).unwrap_err(), Errno::NOSYS);
        }
    }
}
