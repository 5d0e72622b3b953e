//! Typed values in shared memory that another process may write at any moment: a whole `T`
//! copied in or out with atomic loads and stores of the widest unit its size and alignment
//! allow. (Untyped payload bytes go through `foreign`, whose note gives the policy.)
#![allow(unsafe_code)]
//! # Safety
//! `T: ShmSafe` (zerocopy's `FromZeros + IntoBytes`) means all zeros is a valid `T` and a `T` has
//! no padding, so storing a `T` never reads uninitialised memory. Not every bit pattern need be a
//! valid `T` (`bool`, `char`), so a load copies the bytes into a buffer of its own and only then
//! makes a `T` of them, through zerocopy's validating `try_read_from_bytes`, repairing an invalid
//! image as [`ShmSafe`] documents: foreign bytes never become an invalid value. Each unit is copied with an atomic access of its own width at an
//! address aligned to it, so a racing writer makes the result a mix of old and new bytes, never
//! undefined behaviour. The callers (`atomic_load`, `atomic_store`) vouch for the range.

use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{self, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use zerocopy::{FromZeros, IntoBytes};

#[cfg(doc)]
use zerocopy::FromBytes;

/// Plain data that can live in shared memory: all zeros valid, no padding, no pointers.
///
/// Implemented for every type that implements zerocopy's [`FromZeros`] and [`IntoBytes`]: the
/// integers and floats, `bool` and `char`, arrays of them, the `core::sync::atomic` integers,
/// and your own `#[repr(C)]` structs with `#[derive(FromBytes, IntoBytes, KnownLayout,
/// Immutable)]`. Do not put file descriptors or addresses in them: they mean nothing in another
/// process.
///
/// # Bytes that are not a valid value
/// Another process can write any bytes into a segment, also ones that are no valid `T` for a
/// type such as `bool` (only 0 and 1 are) or `char`. Every read checks the bytes it copied
/// and never makes an invalid value of them. An invalid image is read as if each nonzero byte
/// were 1, or, if that is no valid `T` either, as all zeros. So a `bool` reads any nonzero byte
/// as `true`, as C and Python's `ctypes.c_bool` do. Processes that use this crate only ever
/// write valid values; for types with [`FromBytes`], every image is valid and nothing changes.
///
/// The derives come re-exported as [`multiproc::zerocopy`](crate::zerocopy), so no `zerocopy`
/// line is needed in your `Cargo.toml`; `#[zerocopy(crate = ...)]` tells them where to look:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq)]
/// #[zerocopy(crate = "multiproc::zerocopy")]
/// #[repr(C)]
/// struct Point {
///     x: i32,
///     y: i32,
/// }
///
/// let p = multiproc::Value::new(Point { x: 1, y: 2 })?;
/// p.lock()?.x += 10;
/// assert_eq!(p.get(), Point { x: 11, y: 2 });
/// # Ok(()) }
/// ```
pub trait ShmSafe: FromZeros + IntoBytes + Sized {}
impl<T: FromZeros + IntoBytes> ShmSafe for T {}

/// The widest atomic unit (8, 4, 2 or 1 bytes) that divides `T`'s size and alignment. For a
/// `ShmAtomic` type that is the width of its atomics, so a copy never mixes sizes with them.
#[inline]
const fn unit_of<T>() -> usize {
    if align_of::<T>() >= 8 && size_of::<T>() % 8 == 0 {
        8
    } else if align_of::<T>() >= 4 && size_of::<T>() % 4 == 0 {
        4
    } else if align_of::<T>() >= 2 && size_of::<T>() % 2 == 0 {
        2
    } else {
        1
    }
}

/// Loads `unit` bytes at `src` atomically into `dst`.
///
/// # Safety
/// - `src` is valid for `unit` bytes and aligned to `unit`; `dst` is valid for `unit` bytes.
#[inline]
unsafe fn load_unit(src: *const u8, dst: *mut u8, unit: usize, for_update: bool) {
    match unit {
        8 => {
            // SAFETY: valid and 8-aligned (contract); an atomic may alias racing writers.
            let a = unsafe { AtomicU64::from_ptr(src.cast_mut().cast()) };
            // A copy that will be written back takes its cache line for writing at once: a
            // no-op RMW instead of a load saves the upgrade from shared to exclusive later,
            // which costs a second transfer when other processes contend for the line.
            let v = if for_update {
                a.fetch_add(0, Ordering::Relaxed)
            } else {
                a.load(Ordering::Relaxed)
            };
            // SAFETY: `dst` is valid for 8 bytes (contract); unaligned write.
            unsafe { dst.cast::<u64>().write_unaligned(v) };
        }
        4 => {
            // SAFETY: valid and 4-aligned (contract).
            let v = unsafe { AtomicU32::from_ptr(src.cast_mut().cast()) }.load(Ordering::Relaxed);
            // SAFETY: `dst` is valid for 4 bytes (contract).
            unsafe { dst.cast::<u32>().write_unaligned(v) };
        }
        2 => {
            // SAFETY: valid and 2-aligned (contract).
            let v = unsafe { AtomicU16::from_ptr(src.cast_mut().cast()) }.load(Ordering::Relaxed);
            // SAFETY: `dst` is valid for 2 bytes (contract).
            unsafe { dst.cast::<u16>().write_unaligned(v) };
        }
        _ => {
            // SAFETY: valid for 1 byte (contract); any address is aligned for AtomicU8.
            let v = unsafe { AtomicU8::from_ptr(src.cast_mut()) }.load(Ordering::Relaxed);
            // SAFETY: `dst` is valid for 1 byte (contract).
            unsafe { dst.write(v) };
        }
    }
}

/// Stores `unit` bytes from `src` atomically at `dst`.
///
/// # Safety
/// - `dst` is valid for `unit` bytes and aligned to `unit`; `src` is valid for `unit` bytes.
#[inline]
unsafe fn store_unit(src: *const u8, dst: *mut u8, unit: usize) {
    match unit {
        8 => {
            // SAFETY: `src` is valid for 8 bytes (contract).
            let v = unsafe { src.cast::<u64>().read_unaligned() };
            // SAFETY: valid and 8-aligned (contract).
            unsafe { AtomicU64::from_ptr(dst.cast()) }.store(v, Ordering::Relaxed);
        }
        4 => {
            // SAFETY: `src` is valid for 4 bytes (contract).
            let v = unsafe { src.cast::<u32>().read_unaligned() };
            // SAFETY: valid and 4-aligned (contract).
            unsafe { AtomicU32::from_ptr(dst.cast()) }.store(v, Ordering::Relaxed);
        }
        2 => {
            // SAFETY: `src` is valid for 2 bytes (contract).
            let v = unsafe { src.cast::<u16>().read_unaligned() };
            // SAFETY: valid and 2-aligned (contract).
            unsafe { AtomicU16::from_ptr(dst.cast()) }.store(v, Ordering::Relaxed);
        }
        _ => {
            // SAFETY: `src` is valid for 1 byte (contract).
            let v = unsafe { src.read() };
            // SAFETY: valid for 1 byte (contract).
            unsafe { AtomicU8::from_ptr(dst) }.store(v, Ordering::Relaxed);
        }
    }
}

/// Copies a `T` out of shared memory with atomic loads.
///
/// # Safety
/// - `src` is valid for reads of `size_of::<T>()` bytes and aligned for `T`.
#[inline]
pub(crate) unsafe fn atomic_load<T: ShmSafe>(src: NonNull<T>) -> T {
    // SAFETY: contract forwarded to our caller.
    unsafe { load(src, false) }
}

/// As [`atomic_load`], for a copy that will be stored back soon (under a lock): the cache
/// lines are taken for writing at once.
///
/// # Safety
/// - `src` is valid for reads and writes of `size_of::<T>()` bytes and aligned for `T`.
#[inline]
pub(crate) unsafe fn atomic_load_for_update<T: ShmSafe>(src: NonNull<T>) -> T {
    // SAFETY: contract forwarded to our caller.
    unsafe { load(src, true) }
}

/// # Safety
/// - As [`atomic_load_for_update`] with `for_update`, else as [`atomic_load`].
#[inline]
unsafe fn load<T: ShmSafe>(src: NonNull<T>, for_update: bool) -> T {
    let mut out = MaybeUninit::<T>::uninit();
    let dst = out.as_mut_ptr().cast::<u8>();
    let s = src.as_ptr().cast::<u8>();
    let unit = unit_of::<T>();
    for i in (0..size_of::<T>()).step_by(unit) {
        // SAFETY: i + unit <= size_of::<T>(), so both ranges are in bounds; `s + i` is aligned to
        // `unit` because `unit` divides T's alignment and size.
        unsafe { load_unit(s.wrapping_add(i), dst.wrapping_add(i), unit, for_update) };
    }
    atomic::fence(Ordering::Acquire);
    // SAFETY: every byte of `out` was written by the loop above, so the `size_of::<T>()` bytes
    // are initialised; `out` is a local that nothing else writes while the slice lives.
    let bytes = unsafe { std::slice::from_raw_parts(dst.cast_const(), size_of::<T>()) };
    from_foreign_bytes(bytes)
}

/// The `T` that `bytes` (copied out of a segment) stand for, as [`ShmSafe`] documents: the
/// bytes themselves if they are a valid `T`, else the bytes with every nonzero byte set to 1,
/// else all zeros. For `T: FromBytes` the first step always succeeds.
fn from_foreign_bytes<T: ShmSafe>(bytes: &[u8]) -> T {
    if let Ok(v) = T::try_read_from_bytes(bytes) {
        return v;
    }
    let ones: Vec<u8> = bytes.iter().map(|&b| u8::from(b != 0)).collect();
    T::try_read_from_bytes(&ones).unwrap_or_else(|_| T::new_zeroed())
}

/// Copies `value` into shared memory with atomic stores.
///
/// # Safety
/// - `dst` is valid for writes of `size_of::<T>()` bytes and aligned for `T`.
#[inline]
pub(crate) unsafe fn atomic_store<T: ShmSafe>(dst: NonNull<T>, value: T) {
    // `value` is owned by this frame, so nothing else writes it during the copy; its bytes are
    // read through a pointer (no allocation), and it is not dropped (plain data: nothing to do).
    let value = std::mem::ManuallyDrop::new(value);
    let src = (&raw const *value).cast::<u8>();
    let d = dst.as_ptr().cast::<u8>();
    let unit = unit_of::<T>();
    atomic::fence(Ordering::Release);
    for i in (0..size_of::<T>()).step_by(unit) {
        // SAFETY: as in `atomic_load`; `src` points to the size_of::<T>() bytes of `value`,
        // initialised (T: IntoBytes has no padding) and aligned for `unit` like `dst`.
        unsafe { store_unit(src.wrapping_add(i), d.wrapping_add(i), unit) };
    }
}

/// The bytes of a value. zerocopy's `as_bytes` also wants `Immutable`, which atomics are not;
/// taking `value` by value makes this frame its only owner, so nothing writes it during the copy.
pub(crate) fn bytes_of<T: ShmSafe>(value: T) -> Vec<u8> {
    let mut out = vec![0u8; size_of::<T>()];
    // SAFETY: `value` is a live T owned by this frame, so no other thread or process can write
    // it meanwhile; T: IntoBytes has no padding, so every byte is initialised; `out` has exactly
    // size_of::<T>() bytes; the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping((&raw const value).cast::<u8>(), out.as_mut_ptr(), out.len())
    };
    out
}

#[cfg(test)]
mod tests {
    use super::from_foreign_bytes;

    #[test]
    fn foreign_bytes_never_make_an_invalid_value() {
        assert!(!from_foreign_bytes::<bool>(&[0]));
        assert!(from_foreign_bytes::<bool>(&[1]));
        assert!(from_foreign_bytes::<bool>(&[2]));
        assert!(from_foreign_bytes::<bool>(&[255]));
        assert_eq!(
            from_foreign_bytes::<[bool; 3]>(&[0, 9, 1]),
            [false, true, true]
        );
        // A surrogate is no `char`: read as if each nonzero byte were 1 (0x0100).
        assert_eq!(
            from_foreign_bytes::<char>(&0xD800u32.to_le_bytes()),
            '\u{100}'
        );
        // Still not a `char` with ones (0x0101_0101 is past char::MAX): all zeros.
        assert_eq!(
            from_foreign_bytes::<char>(&0xFFFF_FFFFu32.to_le_bytes()),
            '\0'
        );
        assert_eq!(
            from_foreign_bytes::<u32>(&0xFFFF_FFFFu32.to_le_bytes()),
            u32::MAX
        );
    }
}
