//! What the name tracker needs from the system: `flock` on shm objects, the "tracked" mark
//! (the sticky bit of the file's mode), a record socket to the tracker, and a look through
//! `/proc` for processes that map a file.
//!
//! # References
//! - [flock(2)](https://man7.org/linux/man-pages/man2/flock.2.html): a lock belongs to the open
//!   file description, which a mapping keeps alive after the descriptor is closed, so a lock
//!   taken before `mmap` lasts exactly as long as some process maps (or holds open) the file.
//! - [proc_pid_maps(5)](https://man7.org/linux/man-pages/man5/proc_pid_maps.5.html)
//! - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html): `SOCK_SEQPACKET` keeps
//!   record boundaries and reports the end once every peer descriptor is closed.
#![allow(unsafe_code)]
//! # Safety
//! The unsafe blocks pass live, correctly sized buffers and borrowed descriptors to `send`,
//! `recv`, `socketpair` and `sigaction`-like calls, and adopt descriptors the kernel just
//! returned.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::fs::{FlockOperation, Mode};

use super::spawn::last_errno;
use super::{Errno, retry_on_intr};

/// Mode of a tracked named segment: 0600 plus the sticky bit, which Linux ignores on regular
/// files and nothing else sets on a shm object (Python creates 0600).
pub(crate) const TRACKED_MODE: u32 = 0o1600;

/// Takes a shared `flock` on `fd` without blocking; `Ok(false)` if an exclusive one is held.
pub(crate) fn lock_shared(fd: impl AsFd) -> Result<bool, Errno> {
    try_lock(fd, FlockOperation::NonBlockingLockShared)
}

/// Takes an exclusive `flock` on `fd` without blocking; `Ok(false)` if any other is held.
pub(crate) fn lock_exclusive(fd: impl AsFd) -> Result<bool, Errno> {
    try_lock(fd, FlockOperation::NonBlockingLockExclusive)
}

fn try_lock(fd: impl AsFd, op: FlockOperation) -> Result<bool, Errno> {
    match retry_on_intr(|| rustix::fs::flock(&fd, op).map_err(Errno::from_rustix)) {
        Ok(()) => Ok(true),
        Err(e) if e == Errno::AGAIN => Ok(false),
        Err(e) => Err(e),
    }
}

/// Marks the file behind `fd` as tracked (mode [`TRACKED_MODE`]) or not (mode 0600).
pub(crate) fn set_tracked(fd: impl AsFd, tracked: bool) -> Result<(), Errno> {
    let mode = if tracked { TRACKED_MODE } else { 0o600 };
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(Errno::from_rustix)
}

/// What the tracker needs to know of an open shm object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileState {
    /// Device and inode.
    pub(crate) identity: (u64, u64),
    /// Whether the mode carries the tracked mark.
    pub(crate) tracked: bool,
    /// Whether some name still refers to the file.
    pub(crate) linked: bool,
}

/// [`FileState`] of the file behind `fd`.
pub(crate) fn file_state(fd: impl AsFd) -> Result<FileState, Errno> {
    let st = rustix::fs::fstat(fd).map_err(Errno::from_rustix)?;
    Ok(FileState {
        identity: (st.st_dev, st.st_ino),
        tracked: st.st_mode & 0o7777 == TRACKED_MODE,
        linked: st.st_nlink > 0,
    })
}

/// A connected pair of `SOCK_SEQPACKET` sockets, close-on-exec.
pub(crate) fn record_socket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    super::spawn::local_socket_pair(libc::SOCK_SEQPACKET)
}

/// Whether the open descriptor number `fd` is a `SOCK_SEQPACKET` socket.
pub(crate) fn is_record_socket(fd: i32) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are valid out-pointers of the sizes given; a number that is not
    // an open socket fails with EBADF or ENOTSOCK.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut ty).cast(),
            &mut len,
        )
    };
    rc == 0 && ty == libc::SOCK_SEQPACKET
}

/// Sends one record without blocking and without `SIGPIPE`.
pub(crate) fn send_record(fd: impl AsFd, bytes: &[u8]) -> Result<(), Errno> {
    loop {
        // SAFETY: `bytes` is a live buffer of `bytes.len()` bytes for the duration of the call;
        // `fd` is borrowed, so open.
        let rc = unsafe {
            libc::send(
                fd.as_fd().as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        let e = last_errno();
        if e != Errno::INTR {
            return Err(e);
        }
    }
}

/// Waits for one record; `Ok(0)` once every peer is gone. A record longer than `buf` is cut.
pub(crate) fn recv_record(fd: impl AsFd, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes for the duration of
        // the call; `fd` is borrowed, so open.
        let rc = unsafe {
            libc::recv(
                fd.as_fd().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        };
        if rc >= 0 {
            return Ok((rc as usize).min(buf.len()));
        }
        let e = last_errno();
        if e != Errno::INTR {
            return Err(e);
        }
    }
}

/// Detaches the calling process from its parent's session and terminal (so a terminal's
/// Ctrl-C or hang-up does not reach it), points descriptors 0 to 2 at `/dev/null`, and ignores
/// `SIGPIPE`.
pub(crate) fn detach() {
    let _ = rustix::process::setsid();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for target in 0..3 {
            // SAFETY: `dup2` onto 0..=2 replaces the standard descriptors, which this process
            // owns and uses only through the C library and std, both of which keep working
            // with /dev/null there.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Of the files `wanted` (device and inode), those that some process this one may inspect
/// maps now, as `/proc/*/maps` tells. Processes whose maps cannot be read (another user's)
/// are skipped: they could not open a mode 0600 object of ours either, unless privileged.
pub(crate) fn mapped_files(wanted: &HashSet<(u64, u64)>) -> HashSet<(u64, u64)> {
    let mut found = HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    let wanted_inodes: HashSet<u64> = wanted.iter().map(|&(_, ino)| ino).collect();
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(maps) = std::fs::read(entry.path().join("maps")) else {
            continue;
        };
        for line in maps.split(|&b| b == b'\n') {
            if let Some(id) = parse_maps_line(line) {
                if wanted_inodes.contains(&id.1) && wanted.contains(&id) {
                    found.insert(id);
                }
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    found
}

/// The device and inode a `/proc/PID/maps` line names: `addr perms offset MAJ:MIN inode path`.
fn parse_maps_line(line: &[u8]) -> Option<(u64, u64)> {
    let mut fields = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let dev = std::str::from_utf8(fields.nth(3)?).ok()?;
    let inode: u64 = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    let major = u32::from_str_radix(major, 16).ok()?;
    let minor = u32::from_str_radix(minor, 16).ok()?;
    Some((libc::makedev(major, minor), inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let line = b"7f1c2a400000-7f1c2a401000 rw-s 00000000 00:1a 123456 /dev/shm/mp-1 (deleted)";
        assert_eq!(
            parse_maps_line(line),
            Some((libc::makedev(0, 0x1a), 123456))
        );
        assert_eq!(parse_maps_line(b"7f-80 rw-p 00000000 00:00 0"), None);
        assert_eq!(parse_maps_line(b"garbage"), None);
    }
}
