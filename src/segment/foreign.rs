//! Bytes in shared memory that another process may write at any moment: the one place where
//! they are copied in and out.
//!
//! # Policy
//!
//! No `&[u8]` or `&mut [u8]` is ever formed over bytes that another process can write, and no
//! code that branches on bytes (a decoder, a user closure) ever reads them in place. A shared
//! reference promises that the bytes do not change while it lives, so the compiler may read a
//! byte twice, once for a bounds check and once for the index it guards, and a peer that
//! changes the byte in between would turn a checked index into an unchecked one. Instead:
//!
//! - payloads go in with [`ForeignMut::write_at`] and come out with [`Foreign::copy_to`],
//!   [`Foreign::to_vec`] or [`Foreign::read`], each a single copy between the mapping and
//!   memory this process owns; decoders and callers only ever see the private copy;
//! - the words the protocols run on (positions, lengths, lock words, counters) are atomics,
//!   read once into a local and checked before they form a pointer, an index or a size;
//! - typed values shared in place ([`Value`](crate::Value), [`Array`](crate::Array)) are copied
//!   with atomic loads and stores, or are atomics themselves.
//!   Those copies live in [`atomic_copy`](super::atomic_copy), for any `T: ShmSafe`.
//!
//! A payload copy is a plain `memcpy`. Racing with a hostile writer, it may copy torn bytes;
//! they are then untrusted input in private memory (a decoder rejects them, or the message is
//! garbage), never a pointer. The Rust memory model calls such a race undefined and offers no
//! byte-wise atomic copy yet; we rely, as seqlocks do, on a `memcpy` of racing bytes yielding
//! some bytes. See the discussion of per-byte atomic copies in
//! <https://github.com/rust-lang/rfcs/pull/3301>. Cooperating processes never race on a
//! payload: the ring hands each byte range to one writer, then to its readers, with
//! release/acquire pairs between them.
#![allow(unsafe_code)]
//! # Safety
//! A `Foreign` or `ForeignMut` is made only by `unsafe fn new`, whose caller promises that the
//! range lies inside a live mapping for the view's lifetime `'a`; every method stays inside it.

use std::marker::PhantomData;

use zerocopy::FromBytes;

/// A read-only view of `len` bytes in shared memory that a peer may be writing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Foreign<'a> {
    ptr: *const u8,
    len: usize,
    _mapping: PhantomData<&'a ()>,
}

impl<'a> Foreign<'a> {
    /// # Safety
    /// - `[ptr, ptr + len)` lies inside one mapping that stays mapped for `'a`.
    #[inline]
    pub(crate) unsafe fn new(ptr: *const u8, len: usize) -> Self {
        Self {
            ptr,
            len,
            _mapping: PhantomData,
        }
    }

    /// Number of bytes.
    #[inline]
    pub(crate) fn len(self) -> usize {
        self.len
    }

    /// Copies the bytes into `dst`, which must be exactly as long.
    ///
    /// # Panics
    /// If the lengths differ (a bug in the caller, not something a peer can cause).
    #[inline]
    pub(crate) fn copy_to(self, dst: &mut [u8]) {
        assert_eq!(dst.len(), self.len, "copy_to: length mismatch");
        // SAFETY: the source range is inside a live mapping (`new`'s contract) and the
        // destination is a private buffer of the same length; they cannot overlap, since no
        // reference into the mapping exists. A racing foreign writer can only make the copy
        // hold torn bytes (module note).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, dst.as_mut_ptr(), self.len) };
    }

    /// The bytes, copied into a new vector.
    #[inline]
    pub(crate) fn to_vec(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        // SAFETY: as in `copy_to`; the vector's spare capacity holds `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr, v.as_mut_ptr(), self.len);
        }
        // SAFETY: the first `len` bytes were just written.
        unsafe { v.set_len(self.len) };
        v
    }

    /// The bytes read as a `T`, if there are exactly `size_of::<T>()` of them. Every bit
    /// pattern is a valid `T` (`FromBytes`), so whatever a peer wrote gives some `T`.
    #[inline]
    pub(crate) fn read<T: FromBytes>(self) -> Option<T> {
        if self.len != size_of::<T>() {
            return None;
        }
        // SAFETY: `len == size_of::<T>()` bytes inside a live mapping (`new`'s contract), read
        // unaligned into a private value; any bit pattern is a valid `T` (FromBytes).
        Some(unsafe { self.ptr.cast::<T>().read_unaligned() })
    }

    /// Runs `f` on a private copy of the bytes, made in a buffer this thread reuses.
    pub(crate) fn with_copy<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        with_scratch(|buf| {
            buf.clear();
            buf.resize(self.len, 0);
            self.copy_to(buf);
            f(buf)
        })
    }
}

/// A writable view of `len` bytes in shared memory that a peer may be writing (or reading).
#[derive(Debug)]
pub(crate) struct ForeignMut<'a> {
    ptr: *mut u8,
    len: usize,
    _mapping: PhantomData<&'a mut ()>,
}

impl<'a> ForeignMut<'a> {
    /// # Safety
    /// - `[ptr, ptr + len)` lies inside one writable mapping that stays mapped for `'a`.
    #[inline]
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Self {
            ptr,
            len,
            _mapping: PhantomData,
        }
    }

    /// Number of bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `src` into the bytes from offset `at` on; `false` (and nothing written) if it
    /// does not fit.
    #[inline]
    pub(crate) fn write_at(&mut self, at: usize, src: &[u8]) -> bool {
        if at > self.len || src.len() > self.len - at {
            return false;
        }
        let dst = self.ptr.wrapping_add(at);
        // SAFETY: `[at, at + src.len())` is inside the view (checked above), which is inside a
        // live writable mapping (`new`'s contract); the source is a private slice, which cannot
        // overlap it. A racing foreign writer can only change the bytes we leave (module note).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        true
    }
}

/// Runs `f` with this thread's scratch buffer (a fresh one if it is in use further up the
/// stack). A buffer that grew past 1 MiB is given back afterwards.
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    const KEEP: usize = 1 << 20;
    std::thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let r = f(&mut buf);
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_in_and_out() {
        let mut region = vec![0u8; 16];
        let ptr = region.as_mut_ptr();
        // SAFETY: the range is `region`, alive for the whole test.
        let mut w = unsafe { ForeignMut::new(ptr, 8) };
        assert!(!w.write_at(1, &7u64.to_ne_bytes()));
        assert!(!w.write_at(9, &[]));
        assert!(w.write_at(0, &7u64.to_ne_bytes()));
        // SAFETY: as above.
        let r = unsafe { Foreign::new(ptr, 8) };
        assert_eq!(r.len(), 8);
        assert_eq!(r.read::<u64>(), Some(7));
        assert_eq!(r.read::<u32>(), None);
        assert_eq!(r.to_vec(), 7u64.to_ne_bytes());
        assert_eq!(r.with_copy(<[u8]>::to_vec), 7u64.to_ne_bytes());
        let mut out = [0u8; 8];
        r.copy_to(&mut out);
        assert_eq!(out, 7u64.to_ne_bytes());
    }
}
