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

/// Bytes per block of [`Foreign::read_blocks`] and [`ForeignMut::write_blocks`]: a cache line.
const BLOCK: usize = 64;

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

    /// Where the bytes start, for views made over a part of them (a loan's `read_at`).
    #[inline]
    pub(crate) fn as_ptr(self) -> *const u8 {
        self.ptr
    }

    /// Reads the bytes a 64-byte block at a time, in order: `f(offset, block)` gets a copy of
    /// each block (one load of its value, no buffer in between: the fast way to look at every
    /// byte). A last partial block comes zero-padded.
    #[inline]
    pub(crate) fn read_blocks(self, mut f: impl FnMut(usize, [u64; 8])) {
        let whole = self.len / BLOCK;
        for i in 0..whole {
            // SAFETY: `[i * 64, i * 64 + 64)` lies inside the view (`i < len / 64`), inside a
            // live mapping (`new`'s contract); the block is copied out by value (an unaligned
            // read needs no alignment). A racing foreign writer can only make it torn (module
            // note).
            let block = unsafe {
                self.ptr
                    .wrapping_add(i * BLOCK)
                    .cast::<[u64; 8]>()
                    .read_unaligned()
            };
            f(i * BLOCK, block);
        }
        let rest = self.len % BLOCK;
        if rest > 0 {
            let mut block = [0u64; 8];
            // SAFETY: the last `rest` bytes of the view, copied into the private block, which
            // holds 64 >= rest bytes.
            unsafe {
                copy_bytes(
                    self.ptr.wrapping_add(whole * BLOCK),
                    block.as_mut_ptr().cast::<u8>(),
                    rest,
                );
            }
            f(whole * BLOCK, block);
        }
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
        unsafe { copy_bytes(self.ptr, dst.as_mut_ptr(), self.len) };
    }

    /// The `len` bytes from offset `at` on, if they lie inside the view.
    #[inline]
    pub(crate) fn slice(self, at: usize, len: usize) -> Option<Self> {
        (at <= self.len && len <= self.len - at).then(|| Self {
            ptr: self.ptr.wrapping_add(at),
            len,
            _mapping: PhantomData,
        })
    }

    /// Appends the bytes to `v`, copied straight into its spare capacity (no zero-fill).
    #[inline]
    pub(crate) fn append_to(self, v: &mut Vec<u8>) {
        v.reserve(self.len);
        let dst = v.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        // SAFETY: as in `copy_to`; after `reserve`, the spare capacity at `dst` holds `len`
        // bytes.
        unsafe { copy_bytes(self.ptr, dst, self.len) };
        // SAFETY: the `len` bytes after the old length were just written.
        unsafe { v.set_len(v.len() + self.len) };
    }

    /// The bytes, copied into a new vector.
    #[inline]
    pub(crate) fn to_vec(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        // SAFETY: as in `copy_to`; the vector's spare capacity holds `len` bytes.
        unsafe { copy_bytes(self.ptr, v.as_mut_ptr(), self.len) };
        // SAFETY: the first `len` bytes were just written.
        unsafe { v.set_len(self.len) };
        v
    }

    /// The bytes read as a `T`, if there are exactly `size_of::<T>()` of them. Every bit
    /// pattern is a valid `T` (`FromBytes`), so whatever a peer wrote gives some `T`.
    #[cfg(test)]
    pub(crate) fn read<T: FromBytes>(self) -> Option<T> {
        let mut slot = Slot::new();
        self.read_into(&mut slot);
        slot.take()
    }

    /// Copies the bytes into `slot` as a `T` if there are exactly `size_of::<T>()` of them;
    /// `true` if it did (every bit pattern is a valid `T`, `FromBytes`).
    ///
    /// Writing into the caller's slot, instead of returning a `T`, spares large values the
    /// moves between stack slots of a returned value (see `copy_bytes` for why those can be
    /// slow).
    #[inline]
    pub(crate) fn read_into<T: FromBytes>(self, slot: &mut Slot<T>) -> bool {
        if self.len != size_of::<T>() {
            return false;
        }
        slot.clear();
        // SAFETY: `len == size_of::<T>()` bytes inside a live mapping (`new`'s contract),
        // copied into the slot's private storage of that size, which cannot overlap the
        // mapping.
        unsafe { copy_bytes(self.ptr, slot.value.as_mut_ptr().cast::<u8>(), self.len) };
        // Every byte is written, and any bit pattern is a valid `T`.
        slot.full = true;
        true
    }

    /// Runs `f` on a private copy of the bytes, made in a buffer this thread reuses.
    #[cfg(feature = "serde")]
    pub(crate) fn with_copy<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        with_scratch(|buf| {
            buf.clear();
            buf.resize(self.len, 0);
            self.copy_to(buf);
            f(buf)
        })
    }
}

/// A place for one `T`, filled by a decoder and emptied by the caller that made it: a get
/// decodes straight into its caller's frame instead of returning the value through the ring's.
pub(crate) struct Slot<T> {
    value: std::mem::MaybeUninit<T>,
    /// `value` is initialised.
    full: bool,
}

impl<T> Slot<T> {
    #[inline]
    pub(crate) fn new() -> Self {
        Self {
            value: std::mem::MaybeUninit::uninit(),
            full: false,
        }
    }

    /// Stores `value`, dropping the one held before, if any.
    #[inline]
    pub(crate) fn put(&mut self, value: T) {
        self.clear();
        self.value.write(value);
        self.full = true;
    }

    /// The value, if one was stored.
    #[inline]
    pub(crate) fn take(mut self) -> Option<T> {
        let full = std::mem::replace(&mut self.full, false);
        // SAFETY: `full` says `value` is initialised; clearing it first means neither `Drop`
        // nor a second take reads it again.
        full.then(|| unsafe { self.value.assume_init_read() })
    }

    #[inline]
    fn clear(&mut self) {
        if std::mem::replace(&mut self.full, false) {
            // SAFETY: `full` said `value` is initialised; it is marked empty before the drop.
            unsafe { self.value.assume_init_drop() };
        }
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        self.clear();
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

    /// A view of private memory (a value encoded before it is streamed in fragments).
    #[inline]
    pub(crate) fn private(buf: &'a mut [u8]) -> Self {
        // SAFETY: the slice is valid and writable for `'a`, and ours alone.
        unsafe { Self::new(buf.as_mut_ptr(), buf.len()) }
    }

    /// Number of bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes one byte at offset `at`; `false` (and nothing written) if `at` is outside.
    /// (Serialisers write a byte at a time; this keeps that path small enough to inline.)
    #[inline]
    #[cfg(feature = "serde")]
    pub(crate) fn write_byte(&mut self, at: usize, byte: u8) -> bool {
        if at >= self.len {
            return false;
        }
        // SAFETY: `at` is inside the view (checked above), which is inside a live writable
        // mapping (`new`'s contract).
        unsafe { self.ptr.wrapping_add(at).write(byte) };
        true
    }

    /// Writes the bytes a 64-byte block at a time, in order, each from `f(offset)`: one store of
    /// the block's value, no buffer in between (the fast way to produce every byte). A last
    /// partial block gets the first bytes of its value.
    #[inline]
    pub(crate) fn write_blocks(&mut self, mut f: impl FnMut(usize) -> [u64; 8]) {
        let whole = self.len / BLOCK;
        for i in 0..whole {
            let block = f(i * BLOCK);
            // SAFETY: `[i * 64, i * 64 + 64)` lies inside the view (`i < len / 64`), inside a
            // live writable mapping (`new`'s contract); an unaligned write needs no alignment.
            // A racing foreign writer can only change the bytes we leave (module note).
            unsafe {
                self.ptr
                    .wrapping_add(i * BLOCK)
                    .cast::<[u64; 8]>()
                    .write_unaligned(block)
            };
        }
        let rest = self.len % BLOCK;
        if rest > 0 {
            let block = f(whole * BLOCK);
            // SAFETY: the first `rest` bytes of the private block into the last `rest` bytes
            // of the view (inside the mapping, as above).
            unsafe {
                copy_bytes(
                    block.as_ptr().cast::<u8>(),
                    self.ptr.wrapping_add(whole * BLOCK),
                    rest,
                );
            }
        }
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
        unsafe { copy_bytes(src.as_ptr(), dst, src.len()) };
        true
    }
}

/// Copies `len` bytes from `src` to `dst`, ranges that do not overlap: `memcpy`, except for
/// the one layout where `memcpy` is slow.
///
/// glibc copies a few KiB and more with `rep movsb`, and on some x86 CPUs (measured here on
/// AMD EPYC: 4 KiB and 64 KiB copies took 20-30x as long) `rep movsb` crawls when the
/// destination lies 1 to 63 bytes after the source modulo 4 KiB. Records in a ring advance by
/// their length plus an 8-byte header, so a run of same-size messages can meet that layout on
/// every copy; those copies go 64 bytes at a time instead.
///
/// # Safety
/// `[src, src + len)` is readable, `[dst, dst + len)` writable, and the two do not overlap.
#[inline]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    /// The smallest size at which glibc may use `rep movsb` (its tunable's minimum).
    const REP_MIN: usize = 256;
    let distance = (dst as usize).wrapping_sub(src as usize) % 4096;
    if len >= REP_MIN && (1..64).contains(&distance) {
        // SAFETY: the caller's contract, passed on.
        unsafe { copy_by_blocks(src, dst, len) }
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    }
}

/// `copy_bytes` without `memcpy`: 64-byte blocks through registers, then the tail.
///
/// # Safety
/// As `copy_bytes`.
#[inline(never)]
unsafe fn copy_by_blocks(src: *const u8, dst: *mut u8, len: usize) {
    type Block = [u128; 4];
    const BLOCK: usize = size_of::<Block>();
    let mut at = 0;
    while len - at >= BLOCK {
        // SAFETY: `[at, at + BLOCK)` is inside the source range (loop condition), read
        // unaligned.
        let block = unsafe { src.wrapping_add(at).cast::<Block>().read_unaligned() };
        // SAFETY: and inside the destination range, which does not overlap the source (the
        // caller's contract), written unaligned.
        unsafe { dst.wrapping_add(at).cast::<Block>().write_unaligned(block) };
        at += BLOCK;
        // Keeps the compiler from turning this loop back into a `memcpy` call.
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
    // SAFETY: the last `len - at` bytes, inside both ranges.
    unsafe { std::ptr::copy_nonoverlapping(src.wrapping_add(at), dst.wrapping_add(at), len - at) };
}

/// Runs `f` with this thread's scratch buffer (a fresh one if it is in use further up the
/// stack). A buffer that grew past 1 MiB is given back afterwards.
#[cfg(feature = "serde")]
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

    #[test]
    fn copies_every_length_at_every_distance_that_changes_the_path() {
        // Destinations 0..80 bytes after the source modulo 4 KiB: 1..64 take `copy_by_blocks`
        // from 256 bytes on, the rest `memcpy`.
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        // A margin of 64 bytes on each side of every target range is checked untouched.
        let mut dst = vec![0u8; 64 + 4096 + 5000 + 64];
        let base = dst.as_ptr() as usize + 64;
        for distance in [0usize, 1, 8, 31, 63, 64, 80] {
            // (Fewer and shorter copies under Miri, which runs them a byte at a time.)
            let lens: &[usize] = if cfg!(miri) {
                &[0, 1, 63, 64, 255, 256, 257, 320]
            } else {
                &[0, 1, 63, 64, 255, 256, 257, 4096, 4104, 4999]
            };
            for &len in lens {
                let want = (src.as_ptr() as usize + distance) % 4096;
                let start = 64 + (want + 4096 - base % 4096) % 4096;
                dst[start - 64..start + len + 64].fill(0);
                let target = &mut dst[start..start + len];
                // SAFETY: both ranges are `len` bytes of distinct live vectors.
                unsafe { copy_bytes(src.as_ptr(), target.as_mut_ptr(), len) };
                assert_eq!(
                    &dst[start..start + len],
                    &src[..len],
                    "distance {distance}, {len} bytes"
                );
                assert!(
                    dst[start - 64..start].iter().all(|&b| b == 0),
                    "wrote before the range"
                );
                assert!(
                    dst[start + len..start + len + 64].iter().all(|&b| b == 0),
                    "wrote after the range"
                );
            }
        }
    }

    #[test]
    fn a_slot_drops_what_it_holds_once() {
        let counted = std::rc::Rc::new(());
        let mut slot = Slot::new();
        slot.put(counted.clone());
        slot.put(counted.clone());
        assert_eq!(std::rc::Rc::strong_count(&counted), 2);
        drop(slot);
        assert_eq!(std::rc::Rc::strong_count(&counted), 1);
        let mut slot = Slot::new();
        slot.put(counted.clone());
        let back = slot.take();
        assert_eq!(std::rc::Rc::strong_count(&counted), 2);
        drop(back);
        assert!(Slot::<u8>::new().take().is_none());
    }
}
