//! eventfd + shared memory: the classic hand-rolled channel. Messages of one fixed size go
//! into slots of a shared mapping; two semaphore eventfds count filled and free slots, so
//! every message costs one blocking `read` and one `write` on each side.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys::Mapping;

/// What a side adds to an eventfd when it gives up, so the other side's read returns.
const WAKE_ALL: u64 = 1 << 40;

/// One end (a process uses one side of a pair).
pub struct EventShm {
    map: Rc<Mapping>,
    slots: usize,
    size: usize,
    /// Counts filled slots.
    items: Rc<File>,
    /// Counts free slots.
    spaces: Rc<File>,
    next: usize,
    buf: Vec<u8>,
}

fn eventfd(initial: u32) -> Result<File, String> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::eventfd(initial, libc::EFD_CLOEXEC | libc::EFD_SEMAPHORE) };
    if fd < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

impl EventShm {
    /// A channel of `slots` slots of `size` bytes; returns the sending and the receiving end.
    pub fn pair(slots: usize, size: usize) -> Result<(EventShm, EventShm), String> {
        let slots = slots.max(1);
        let len = (4096 + slots * size).next_multiple_of(4096);
        let map = Rc::new(Mapping::new(len));
        let items = Rc::new(eventfd(0)?);
        let spaces = Rc::new(eventfd(u32::try_from(slots).map_err(|e| e.to_string())?)?);
        let end = || EventShm {
            map: map.clone(),
            slots,
            size,
            items: items.clone(),
            spaces: spaces.clone(),
            next: 0,
            buf: vec![0; size],
        };
        Ok((end(), end()))
    }

    fn closed(&self) -> &AtomicU32 {
        // SAFETY: the first page of the mapping is zeroed shared memory, 4096-aligned; an
        // AtomicU32 there is valid, and the mapping lives as long as `self.map`.
        unsafe { self.map.base().cast::<AtomicU32>().as_ref() }
    }

    fn slot(&self, k: usize) -> *mut u8 {
        // SAFETY: slot k < slots starts 4096 + k * size bytes into a mapping of at least
        // 4096 + slots * size bytes.
        unsafe {
            self.map
                .base()
                .as_ptr()
                .add(4096 + (k % self.slots) * self.size)
        }
    }

    fn take(&self, fd: &File) -> Result<(), String> {
        let mut v = [0u8; 8];
        loop {
            match (&*fd).read(&mut v) {
                Ok(8) => break,
                Ok(n) => return Err(format!("eventfd read of {n} bytes")),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    if crate::sys::timed_out() {
                        return Err("no message before the watchdog fired".into());
                    }
                }
                Err(e) => return Err(format!("eventfd read: {e}")),
            }
        }
        if self.closed().load(Ordering::Acquire) != 0 {
            return Err("the other end gave up".into());
        }
        Ok(())
    }

    fn give(fd: &File, n: u64) -> Result<(), String> {
        (&*fd)
            .write_all(&n.to_le_bytes())
            .map_err(|e| format!("eventfd write: {e}"))
    }

    /// The buffer the next [`EventShm::send`] sends.
    pub fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Sends the buffer: waits for a free slot, fills it, counts it filled.
    pub fn send(&mut self) -> Result<(), String> {
        self.take(&self.spaces)?;
        // SAFETY: the `spaces` count gave this side the slot; `buf` has `size` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.buf.as_ptr(), self.slot(self.next), self.size)
        };
        self.next += 1;
        Self::give(&self.items, 1)
    }

    /// Receives the next message into this end's buffer.
    pub fn recv(&mut self) -> Result<&[u8], String> {
        self.take(&self.items)?;
        // SAFETY: the `items` count gave this side the slot; `buf` has `size` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.slot(self.next), self.buf.as_mut_ptr(), self.size)
        };
        self.next += 1;
        Self::give(&self.spaces, 1)?;
        Ok(&self.buf)
    }

    /// Wakes the other side for good: it fails instead of waiting.
    pub fn close(&self) {
        self.closed().store(1, Ordering::Release);
        let _ = Self::give(&self.items, WAKE_ALL);
        let _ = Self::give(&self.spaces, WAKE_ALL);
    }
}
