//! Shared memory: memfd and POSIX shm file descriptors, and `MAP_SHARED` mappings of them.
//!
//! # References
//! - [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html)
//! - [memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
//! - [shm_open(3)](https://man7.org/linux/man-pages/man3/shm_open.3.html)
#![allow(unsafe_code)]
//! # Safety
//! A [`Mapping`] owns its address range from `mmap` until `Drop` unmaps it; nothing else in the
//! crate unmaps memory, so pointers derived from a live `Mapping` stay valid while it lives.

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, Mode};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm;

use super::{Errno, retry_on_intr};

/// An owned file descriptor (memfd or POSIX shm object).
pub(crate) type Fd = OwnedFd;

/// Creates an anonymous memory file of `len` bytes, close-on-exec, sealed against resizing.
///
/// The seals matter: a peer that shrank the file under our mapping would turn our next access
/// into `SIGBUS`. (POSIX shm objects cannot be sealed; see the docs of named segments.)
pub(crate) fn memfd_create(debug_name: &str, len: u64) -> Result<Fd, Errno> {
    let fd = rustix::fs::memfd_create(debug_name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    retry_on_intr(|| rustix::fs::ftruncate(&fd, len).map_err(Errno::from))?;
    rustix::fs::fcntl_add_seals(
        &fd,
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW | rustix::fs::SealFlags::SEAL,
    )?;
    Ok(fd)
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
pub(crate) fn shm_create_excl(name: &str, len: u64) -> Result<Fd, Errno> {
    let flags = shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR;
    let fd = shm::open(name, flags, Mode::from_raw_mode(0o600))?;
    if let Err(e) = retry_on_intr(|| rustix::fs::ftruncate(&fd, len).map_err(Errno::from)) {
        let _ = shm::unlink(name);
        return Err(e);
    }
    Ok(fd)
}

/// Opens the existing POSIX shm object `name` for reading and writing.
pub(crate) fn shm_open_existing(name: &str) -> Result<Fd, Errno> {
    Ok(shm::open(name, shm::OFlags::RDWR, Mode::empty())?)
}

/// Removes the name of a POSIX shm object; mappings that exist stay valid.
pub(crate) fn shm_unlink(name: &str) -> Result<(), Errno> {
    Ok(shm::unlink(name)?)
}

/// Device and inode of the file behind `fd`: which object a descriptor or name refers to.
pub(crate) fn fd_identity(fd: impl AsFd) -> Result<(u64, u64), Errno> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Device and inode of the POSIX shm object that `name` refers to right now.
pub(crate) fn shm_identity(name: &str) -> Result<(u64, u64), Errno> {
    let fd = shm::open(name, shm::OFlags::RDONLY, Mode::empty())?;
    fd_identity(fd)
}

/// The current size of the file behind `fd`.
pub(crate) fn fd_len(fd: impl AsFd) -> Result<u64, Errno> {
    let st = rustix::fs::fstat(fd)?;
    u64::try_from(st.st_size).map_err(|_| Errno::INVAL)
}

/// Sets or clears `FD_CLOEXEC`, i.e. whether `fd` survives `exec`.
pub(crate) fn set_cloexec(fd: impl AsFd, cloexec: bool) -> Result<(), Errno> {
    let flags = if cloexec {
        rustix::io::FdFlags::CLOEXEC
    } else {
        rustix::io::FdFlags::empty()
    };
    Ok(rustix::io::fcntl_setfd(fd, flags)?)
}

/// A `MAP_SHARED`, read-write mapping, unmapped on drop.
///
/// It hands out a raw pointer only: other processes may write the memory at any time, so no
/// `&[u8]` to it may exist.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is an address range; it carries no thread affinity, and all access to the
// memory goes through raw pointers or atomics whose users uphold the synchronisation rules.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes the pointer and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, shared, read-write.
    pub(crate) fn map_fd(fd: impl AsFd, len: usize) -> Result<Self, Errno> {
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
        }?;
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).ok_or(Errno::INVAL)?,
            len,
        })
    }

    /// Maps `len` zeroed bytes of anonymous memory, shared with children forked later.
    pub(crate) fn anonymous_shared(len: usize) -> Result<Self, Errno> {
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
        }?;
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).ok_or(Errno::INVAL)?,
            len,
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
        // SAFETY: `ptr`/`len` describe a range this Mapping mapped and still owns (module note).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
