//! L3: `Value<T>`, `Array<T>` (with a lock) and `RawValue<T>`, `RawArray<T>` (without).
#![allow(unsafe_code)]
//! # Safety
//! The payload is a 64-byte `CellsState` followed by `len` elements of `T`. `from_segment`
//! checks the element size and alignment recorded by the creator against `T` and the payload
//! length against `len`, caching `len` locally, so `data.add(i)` for `i < len` stays inside the
//! mapping, which lives as long as the object.
//!
//! `T: ShmSafe` (zerocopy's `FromZeros + IntoBytes`) means a `T` has no padding and a fresh,
//! zeroed segment holds valid `T`s; every load validates the bytes it copied before it makes a
//! `T` of them (`segment::atomic_copy`), so copying in either direction never produces an
//! invalid value (a `bool` of 2) or reads uninitialised memory. Copies go through atomic loads and stores of the widest unit the
//! alignment allows (`segment::atomic_copy`), so a racing writer (allowed for the `Raw*` types,
//! which have no lock) makes the result a mix of old and new bytes, never undefined behaviour.
//!
//! References (`&T`, `&[T]`) into the segment are handed out only by a `RawValue`/`RawArray`,
//! and only for `T: ShmAtomic`, whose every access is itself atomic. A `Value`/`Array` lock
//! guard hands out references to a private copy, copied in and out with atomics while the lock
//! is held, so a process that writes the segment without taking the lock can change the data
//! but cannot make a reference of ours alias its writes. The copies of `RawValue`/`RawArray`
//! use atomics of the element's own width, so they never race with a reference's accesses at
//! another size.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{self, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use zerocopy::IntoBytes;

use crate::error::OpenError;
use crate::segment::atomic_copy::{
    ShmSafe, atomic_load, atomic_load_for_update, atomic_store, bytes_of,
};
use crate::segment::object::{
    AtomicState, Builder, FreshPayload, describe, expect_payload, sealed, short_type_name,
};
use crate::segment::{Segment, kind};
use crate::sync::lock::{
    LockResult, NotSend, RecoverableGuard, TryLockResult, lock_result, private, try_lock_result,
};
use crate::sync::raw_lock::RawLock;
use crate::sync::wait::deadline_after;

/// Types whose every access through `&T` is atomic, so a shared reference into memory that other
/// processes write is sound: the `core::sync::atomic` integers and arrays of them.
///
/// [`RawValue<T>`] and [`RawArray<T>`] deref to `&T` / `&[T]` for these, so
/// `counter.fetch_add(1, Relaxed)` works directly, with no lock.
///
/// # Safety
/// - All of the type's state is in atomics (no plain fields), and it is [`ShmSafe`].
/// - Every atomic in it is as wide as the unit its copies use: the widest of 8, 4, 2 or 1
///   bytes that divides both its size and its alignment (so `RawValue::get`/`set`, which copy
///   with atomics of that width, never race with accesses of another width).
pub unsafe trait ShmAtomic: ShmSafe + Sync {}

macro_rules! shm_atomic {
    ($($t:ty),*) => { $(
        // SAFETY: a core atomic integer: every access through &Self is atomic.
        unsafe impl ShmAtomic for $t {}
    )* };
}
shm_atomic!(
    atomic::AtomicU8,
    atomic::AtomicU16,
    atomic::AtomicU32,
    atomic::AtomicU64,
    atomic::AtomicI8,
    atomic::AtomicI16,
    atomic::AtomicI32,
    atomic::AtomicI64,
    atomic::AtomicUsize,
    atomic::AtomicIsize
);
// SAFETY: an array of ShmAtomic elements is accessed element-wise, each access atomic.
unsafe impl<T: ShmAtomic, const N: usize> ShmAtomic for [T; N] {}

/// The 64-byte state in front of the elements.
#[repr(C)]
#[derive(Debug, Default)]
struct CellsState {
    lock: RawLock,
    elem_size: AtomicU32,
    elem_align: AtomicU32,
    len: AtomicU64,
    /// The creator's element type name ("u64", "Point"), UTF-8, zero-padded, cut at 32 bytes;
    /// all zeros if unknown. Only ever printed in an error, after validation.
    type_name: [AtomicU64; 4],
}
const STATE_LEN: usize = 64;
const _: () = assert!(size_of::<CellsState>() == STATE_LEN);

// SAFETY: #[repr(C)] struct of atomics (RawLock is one too), alignment 8.
unsafe impl AtomicState for CellsState {}

/// Creation parameters: the element count and, optionally, the initial bytes.
#[derive(Clone, Debug, Default)]
// `pub` only because the sealed `Object` trait's `Config` must be; no path outside the crate
// reaches it, so it is not part of the public API.
#[allow(unreachable_pub)]
pub struct CellsConfig {
    len: usize,
    init: Option<Vec<u8>>,
}

/// The segment and validated geometry shared by the four types.
///
/// Clones share the segment and its one mapping through an `Arc`, so `state` and `data` stay
/// valid in every clone until the last one goes.
struct Cells<T> {
    seg: Arc<Segment>,
    state: NonNull<CellsState>,
    data: NonNull<T>,
    len: usize,
}

// SAFETY: elements are only reached via atomic copies, lock guards or ShmAtomic refs (module
// note); T: Send makes moving values between threads fine.
unsafe impl<T: Send> Send for Cells<T> {}
// SAFETY: as above; `&Cells` gives no unsynchronised access to T.
unsafe impl<T: Send> Sync for Cells<T> {}

impl<T: ShmSafe> Cells<T> {
    /// The payload for `len` elements, `None` if its size is above `isize::MAX` bytes (the
    /// most any Rust object or mapping can span).
    fn checked_payload_len(len: usize) -> Option<usize> {
        const {
            assert!(
                align_of::<T>() <= 64,
                "element alignment above 64 is not supported"
            )
        };
        len.checked_mul(size_of::<T>())
            .and_then(|n| n.checked_add(STATE_LEN))
            .filter(|&n| isize::try_from(n).is_ok())
    }

    fn check(config: &CellsConfig) -> Result<(), OpenError> {
        match Self::checked_payload_len(config.len) {
            Some(_) => Ok(()),
            None => Err(OpenError::InvalidArgument(
                "array length times element size must be at most isize::MAX bytes",
            )),
        }
    }

    fn payload_len(len: usize) -> usize {
        // `check` accepted `len` before any segment is created.
        Self::checked_payload_len(len).unwrap_or(usize::MAX)
    }

    fn init(mut payload: FreshPayload<'_>, config: &CellsConfig) {
        let st = payload.state::<CellsState>();
        st.elem_size.store(size_of::<T>() as u32, Ordering::Relaxed);
        st.elem_align
            .store(align_of::<T>() as u32, Ordering::Relaxed);
        st.len.store(config.len as u64, Ordering::Relaxed);
        let name = short_type_name::<T>();
        let mut bytes = [0u8; 32];
        let mut n = name.len().min(bytes.len());
        while !name.is_char_boundary(n) {
            n -= 1;
        }
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        for (word, chunk) in st.type_name.iter().zip(bytes.chunks_exact(8)) {
            let chunk: [u8; 8] = chunk.try_into().expect("chunks of 8");
            word.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
        }
        if let Some(bytes) = &config.init {
            let n = bytes.len().min(payload.len() - STATE_LEN);
            payload.write(STATE_LEN, &bytes[..n]);
        }
    }

    /// The element type name the creator recorded, if it is readable text.
    fn recorded_type_name(st: &CellsState) -> Option<String> {
        let mut bytes = Vec::with_capacity(32);
        for word in &st.type_name {
            bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let name = std::str::from_utf8(&bytes[..end]).ok()?;
        let plain = |c: char| c.is_alphanumeric() || "_<>[]; ,()&'".contains(c);
        (!name.is_empty() && name.chars().all(plain)).then(|| name.to_owned())
    }

    /// Attaches the cells of a `what` ("Value", "Array", ...) segment, checking them against
    /// `T`.
    fn open(seg: Segment, single: bool, what: &str) -> Result<Self, OpenError> {
        if seg.payload_len() < STATE_LEN {
            return Err(OpenError::Truncated {
                found: seg.payload_len() as u64,
                expected: STATE_LEN as u64,
            });
        }
        let state = seg.payload().cast::<CellsState>();
        // SAFETY: the payload holds a CellsState (checked above), all atomics.
        let st = unsafe { state.as_ref() };
        let found_size = st.elem_size.load(Ordering::Relaxed);
        let found_align = st.elem_align.load(Ordering::Relaxed);
        if found_size as usize != size_of::<T>() || found_align as usize != align_of::<T>() {
            let found = match Self::recorded_type_name(st) {
                Some(elem) => format!("{what}<{elem}>"),
                None => format!("{what} of another element type"),
            };
            return Err(OpenError::ElementMismatch {
                name: seg.name().map(str::to_owned),
                found,
                expected: format!("{what}<{}>", short_type_name::<T>()),
                found_size,
                found_align,
                expected_size: size_of::<T>() as u32,
                expected_align: align_of::<T>() as u32,
            });
        }
        let len = usize::try_from(st.len.load(Ordering::Relaxed))
            .map_err(|_| OpenError::Corrupted("length"))?;
        if single && len != 1 {
            return Err(OpenError::Corrupted(
                "a value segment must hold one element",
            ));
        }
        let needed = len
            .checked_mul(size_of::<T>())
            .and_then(|n| n.checked_add(STATE_LEN))
            .ok_or(OpenError::Corrupted("length"))?;
        expect_payload(&seg, needed)?;
        // Checked here too, not only on create: an opener may name any `T`.
        const {
            assert!(
                align_of::<T>() <= 64,
                "shared values are at most 64-byte aligned"
            )
        };
        // SAFETY: STATE_LEN is within the payload (checked) and 64-aligned, which is enough for
        // T (asserted at compile time just above).
        let data = unsafe { seg.payload().add(STATE_LEN) }.cast::<T>();
        Ok(Self {
            seg: Arc::new(seg),
            state,
            data,
            len,
        })
    }

    fn lock(&self) -> &RawLock {
        // SAFETY: validated in `open`; the segment lives as long as self.
        &unsafe { self.state.as_ref() }.lock
    }

    #[inline]
    fn ptr(&self, i: usize) -> NonNull<T> {
        assert!(
            i < self.len,
            "index {i} out of range for length {}",
            self.len
        );
        // SAFETY: i < len and the payload holds len elements (module note).
        unsafe { self.data.add(i) }
    }

    #[inline]
    fn load(&self, i: usize) -> T {
        // SAFETY: `ptr` checked the index; the element is aligned and in bounds.
        unsafe { atomic_load(self.ptr(i)) }
    }

    /// As `load`, for a guard's copy that goes back with `store`.
    #[inline]
    fn load_for_update(&self, i: usize) -> T {
        // SAFETY: as in `load`; the element is writable memory of the mapping.
        unsafe { atomic_load_for_update(self.ptr(i)) }
    }

    #[inline]
    fn store(&self, i: usize, v: T) {
        // SAFETY: as in `load`.
        unsafe { atomic_store(self.ptr(i), v) }
    }

    fn atomics(&self) -> &[T]
    where
        T: ShmAtomic,
    {
        // SAFETY: len elements in bounds (module note); T: ShmAtomic makes &[T] sound with
        // concurrent writers.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl<T> Clone for Cells<T> {
    fn clone(&self) -> Self {
        Self {
            seg: Arc::clone(&self.seg),
            state: self.state,
            data: self.data,
            len: self.len,
        }
    }
}

impl<T> fmt::Debug for Cells<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cells")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

macro_rules! cells_object {
    ($ty:ident, $kind:expr, $single:expr) => {
        impl<T: ShmSafe + Send> sealed::Object for $ty<T> {
            type Config = CellsConfig;
            const KIND: u32 = $kind;

            fn check(config: &CellsConfig) -> Result<(), OpenError> {
                Cells::<T>::check(config)
            }

            fn payload_len(config: &CellsConfig) -> usize {
                Cells::<T>::payload_len(config.len)
            }

            fn init(payload: FreshPayload<'_>, config: &CellsConfig) {
                Cells::<T>::init(payload, config)
            }

            fn from_segment(seg: Segment) -> Result<Self, OpenError> {
                Ok(Self {
                    cells: Cells::open(seg, $single, stringify!($ty))?,
                })
            }

            fn segment(&self) -> &Segment {
                &self.cells.seg
            }

            fn type_name() -> String {
                format!("{}<{}>", stringify!($ty), short_type_name::<T>())
            }
        }

        impl<T> Clone for $ty<T> {
            /// Another handle on the same shared object (it shares this handle's mapping).
            fn clone(&self) -> Self {
                Self {
                    cells: self.cells.clone(),
                }
            }
        }

        impl<T: ShmSafe + Send> $ty<T> {
            /// Opens the existing object named `name`.
            ///
            /// # Errors
            /// As [`Builder::open`]; [`OpenError::ElementMismatch`] if the element type's size
            /// or alignment differs from the creator's.
            pub fn open(name: &str) -> Result<Self, OpenError> {
                Self::builder().name(name).open()
            }
        }
    };
}

macro_rules! value_common {
    ($ty:ident) => {
        impl<T: ShmSafe + Send> $ty<T> {
            /// Creates the object holding `value`, in a new memfd segment.
            ///
            /// # Errors
            /// The system error if the segment cannot be created.
            pub fn new(value: T) -> Result<Self, OpenError> {
                Self::builder().value(value).create()
            }

            /// A builder; the initial value is all zeros unless set.
            pub fn builder() -> Builder<Self> {
                Builder::with_config(CellsConfig { len: 1, init: None })
            }
        }

        impl<T: ShmSafe + Send> Builder<$ty<T>> {
            /// The initial value.
            pub fn value(mut self, value: T) -> Self {
                self.config.init = Some(bytes_of(value));
                self
            }
        }
    };
}

macro_rules! array_common {
    ($ty:ident) => {
        impl<T: ShmSafe + Send> $ty<T> {
            /// Creates an array of `len` zeroed elements in a new memfd segment.
            ///
            /// # Errors
            /// [`OpenError::InvalidArgument`] if `len` elements take more than
            /// `isize::MAX` bytes; the system error if the segment cannot be created
            /// (`ENOMEM`, or `EFBIG` for a size the system cannot map).
            pub fn zeroed(len: usize) -> Result<Self, OpenError> {
                Self::builder().len(len).create()
            }

            /// Creates an array holding a copy of `values`.
            ///
            /// # Errors
            /// The system error if the segment cannot be created.
            pub fn from_slice(values: &[T]) -> Result<Self, OpenError>
            where
                T: zerocopy::Immutable,
            {
                Self::builder().values(values).create()
            }

            /// A builder; set [`len`](Builder::len) or [`values`](Builder::values).
            pub fn builder() -> Builder<Self> {
                Builder::with_config(CellsConfig::default())
            }

            /// Number of elements.
            pub fn len(&self) -> usize {
                self.cells.len
            }

            /// Whether the array has no elements.
            pub fn is_empty(&self) -> bool {
                self.cells.len == 0
            }
        }

        impl<T: ShmSafe + Send> Builder<$ty<T>> {
            /// Number of elements (zero-initialised unless [`values`](Self::values) is set). A
            /// length whose size in bytes is above `isize::MAX` makes
            /// [`create`](Builder::create) fail with [`OpenError::InvalidArgument`].
            pub fn len(mut self, len: usize) -> Self {
                self.config.len = len;
                self
            }

            /// Initial elements; also sets the length.
            pub fn values(mut self, values: &[T]) -> Self
            where
                T: zerocopy::Immutable,
            {
                self.config.len = values.len();
                self.config.init = Some(values.as_bytes().to_vec());
                self
            }
        }
    };
}

/// A value of plain data `T` in shared memory with a lock, like Python's
/// `multiprocessing.Value(typecode, v, lock=True)`.
///
/// [`get`](Self::get) and [`set`](Self::set) take the lock for the copy; [`lock`](Self::lock)
/// (Python's `get_lock()`) returns a guard that derefs to `T` for read-modify-write. Every
/// access goes through the lock, so the guard's `&mut T` is the only reference to the value
/// while it lives. For atomics used without a lock, use [`RawValue`], which derefs to `&T`.
///
/// `Value<bool>` (and `Array<bool>`) work as for any other type. The guard's `&mut bool` points
/// to this process's copy, never into the segment, and the copy is made from bytes checked on
/// the way in: a byte that is neither 0 nor 1, which only a process that bypasses this crate
/// can write, reads as `true` (see [`ShmSafe`](crate::ShmSafe)).
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let counter = multiproc::Value::new(0u64)?;
/// *counter.lock()? += 1; // a holder that died is an error (see `OwnerDied`)
/// counter.set(counter.get() + 1);
/// assert_eq!(counter.get(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Value<T> {
    cells: Cells<T>,
}

cells_object!(Value, kind::VALUE, true);
value_common!(Value);

impl<T: ShmSafe + Send> Value<T> {
    /// A copy of the value (taken under the lock).
    ///
    /// A holder that died mid-update is ignored here: the copy may show its partial write. Use
    /// [`lock`](Self::lock) to see and handle that case.
    pub fn get(&self) -> T {
        let _held = self.lock_ignoring_death();
        self.cells.load(0)
    }

    /// Replaces the value (under the lock; see [`get`](Self::get) on dead holders).
    pub fn set(&self, value: T) {
        let _held = self.lock_ignoring_death();
        self.cells.store(0, value);
    }

    /// Locks the value (Python's `get_lock()`), waiting as long as it takes.
    #[doc(alias = "get_lock")]
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        let how = self.cells.lock().acquire(None).expect("no deadline");
        // SAFETY: this thread acquired the lock just above.
        lock_result(how, unsafe { self.guard() }, || describe(self))
    }

    /// Locks the value if it is free.
    pub fn try_lock(&self) -> TryLockResult<ValueGuard<'_, T>> {
        try_lock_result(
            self.cells.lock().try_acquire(),
            // SAFETY: `try_lock_result` makes the guard only when the acquire succeeded.
            || unsafe { self.guard() },
            || describe(self),
        )
    }

    /// Locks the value, waiting at most `timeout`.
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<ValueGuard<'_, T>> {
        let how = self.cells.lock().acquire(deadline_after(timeout));
        // SAFETY: `try_lock_result` makes the guard only when the acquire succeeded.
        try_lock_result(how, || unsafe { self.guard() }, || describe(self))
    }

    /// Locks, ignoring a dead holder; the guard releases the lock even if the caller panics.
    fn lock_ignoring_death(&self) -> Hold<'_> {
        Hold::new(self.cells.lock())
    }

    /// A guard for the lock this thread holds.
    ///
    /// # Safety
    /// - The calling thread holds the value's lock, and the guard takes over that hold: its drop
    ///   releases it.
    unsafe fn guard(&self) -> ValueGuard<'_, T> {
        ValueGuard {
            cells: &self.cells,
            copy: std::mem::ManuallyDrop::new(self.cells.load_for_update(0)),
            _marker: PhantomData,
        }
    }
}

/// The lock of a `Value` or `Array`, held for one copy in or out (`get`, `set`, `to_vec`)
/// whatever a dead holder left; released when dropped, also on unwind.
struct Hold<'a> {
    lock: &'a RawLock,
}

impl<'a> Hold<'a> {
    fn new(lock: &'a RawLock) -> Self {
        let _ = lock.acquire(None);
        Self { lock }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        // SAFETY: a `Hold` is made only by `new`, once the lock is ours, and releases it once.
        unsafe { self.lock.release() }
    }
}

/// Exclusive access to a [`Value`]'s data; unlocks when dropped.
///
/// The guard works on a copy of the value in this process's memory: it is copied out of the
/// segment (with atomic loads) when the lock is taken, and back (with atomic stores) when the
/// guard is dropped. So a change is published when the guard goes, all at once, and a process that
/// dies (or forgets the guard) before that publishes none of it. A process that breaks the locking protocol by writing the
/// segment meanwhile can change what gets read or written, but never what a reference of
/// ours points to.
#[must_use = "dropping the guard unlocks at once"]
pub struct ValueGuard<'a, T: ShmSafe> {
    cells: &'a Cells<T>,
    copy: std::mem::ManuallyDrop<T>,
    _marker: PhantomData<NotSend>,
}

impl<T: ShmSafe> Deref for ValueGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.copy
    }
}

impl<T: ShmSafe> DerefMut for ValueGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.copy
    }
}

impl<T: ShmSafe> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        // Written back whatever was done with it: a `T` with interior mutability (an atomic)
        // may have changed through a shared reference.
        // SAFETY: `copy` is taken once, here, and the guard is not used after its drop.
        let v = unsafe { std::mem::ManuallyDrop::take(&mut self.copy) };
        self.cells.store(0, v);
        // SAFETY: the guard exists only while the lock is held (see `Value::guard`).
        unsafe { self.cells.lock().release() }
    }
}

impl<T: ShmSafe> private::Sealed for ValueGuard<'_, T> {}
impl<T: ShmSafe> RecoverableGuard for ValueGuard<'_, T> {
    fn mark_consistent(&self) {
        self.cells.lock().mark_consistent();
    }
}

/// A value of plain data `T` in shared memory without a lock, like Python's `RawValue`.
///
/// For atomics (`T: ShmAtomic`) it derefs to `&T`:
/// ```
/// # fn main() -> Result<(), multiproc::OpenError> {
/// use std::sync::atomic::{AtomicU64, Ordering};
/// let hits = multiproc::RawValue::new(AtomicU64::new(0))?;
/// hits.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(hits.load(Ordering::Relaxed), 1);
/// # Ok(()) }
/// ```
/// For other types, [`get`](Self::get) and [`set`](Self::set) copy with relaxed atomic loads and
/// stores: a racing `set` in another process can make `get` return a mix of old and new bytes.
#[derive(Debug)]
pub struct RawValue<T> {
    cells: Cells<T>,
}

cells_object!(RawValue, kind::RAW_VALUE, true);
value_common!(RawValue);

impl<T: ShmSafe + Send> RawValue<T> {
    /// A copy of the value (not synchronised with writers; see the type docs).
    pub fn get(&self) -> T {
        self.cells.load(0)
    }

    /// Replaces the value (not synchronised with other writers).
    pub fn set(&self, value: T) {
        self.cells.store(0, value)
    }
}

impl<T: ShmAtomic + Send> Deref for RawValue<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.cells.atomics()[0]
    }
}

/// A fixed-length array of plain data in shared memory with one lock, like Python's
/// `multiprocessing.Array(typecode, n, lock=True)`.
///
/// [`get`](Self::get), [`set`](Self::set) and [`to_vec`](Self::to_vec) take the lock for the
/// copy; [`lock`](Self::lock) returns a guard that derefs to `[T]`. As for [`Value`], no
/// reference to the elements exists without the lock (use [`RawArray`] for lock-free atomics).
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let arr = multiproc::Array::<u32>::zeroed(4)?;
/// arr.set(2, 7);
/// arr.lock()?[3] = 9;
/// assert_eq!(arr.to_vec(), [0, 0, 7, 9]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Array<T> {
    cells: Cells<T>,
}

cells_object!(Array, kind::ARRAY, false);
array_common!(Array);

impl<T: ShmSafe + Send> Array<T> {
    /// A copy of element `i` (under the lock), or `None` if out of range.
    ///
    /// As for [`Value::get`], a holder that died mid-update is ignored here (the copy may show
    /// its partial write); use [`lock`](Self::lock) to see and handle that case. The same holds
    /// for [`set`](Self::set) and [`to_vec`](Self::to_vec).
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.cells.len {
            return None;
        }
        let _held = self.lock_ignoring_death();
        Some(self.cells.load(i))
    }

    /// Sets element `i` (under the lock).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn set(&self, i: usize, value: T) {
        assert!(
            i < self.cells.len,
            "index {i} out of range for length {}",
            self.cells.len
        );
        let _held = self.lock_ignoring_death();
        self.cells.store(i, value);
    }

    /// A copy of all elements (under the lock).
    pub fn to_vec(&self) -> Vec<T> {
        let _held = self.lock_ignoring_death();
        (0..self.cells.len).map(|i| self.cells.load(i)).collect()
    }

    /// Locks the array (Python's `get_lock()`); the guard derefs to `[T]`.
    #[doc(alias = "get_lock")]
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        let how = self.cells.lock().acquire(None).expect("no deadline");
        // SAFETY: this thread acquired the lock just above.
        lock_result(how, unsafe { self.guard() }, || describe(self))
    }

    /// Locks the array if it is free.
    pub fn try_lock(&self) -> TryLockResult<ArrayGuard<'_, T>> {
        try_lock_result(
            self.cells.lock().try_acquire(),
            // SAFETY: `try_lock_result` makes the guard only when the acquire succeeded.
            || unsafe { self.guard() },
            || describe(self),
        )
    }

    /// Locks the array, waiting at most `timeout`.
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<ArrayGuard<'_, T>> {
        let how = self.cells.lock().acquire(deadline_after(timeout));
        // SAFETY: `try_lock_result` makes the guard only when the acquire succeeded.
        try_lock_result(how, || unsafe { self.guard() }, || describe(self))
    }

    /// Locks, ignoring a dead holder; the guard releases the lock even if the caller panics.
    fn lock_ignoring_death(&self) -> Hold<'_> {
        Hold::new(self.cells.lock())
    }

    /// A guard for the lock this thread holds.
    ///
    /// # Safety
    /// - The calling thread holds the array's lock, and the guard takes over that hold: its drop
    ///   releases it.
    unsafe fn guard(&self) -> ArrayGuard<'_, T> {
        ArrayGuard {
            cells: &self.cells,
            copy: std::cell::OnceCell::new(),
            _marker: PhantomData,
        }
    }
}

/// Exclusive access to an [`Array`]'s elements; unlocks when dropped.
///
/// As [`ValueGuard`], the guard works on a copy in this process's memory: all elements are
/// copied out when it is first read and back when it is dropped. That is a copy of the whole
/// array each way: for a single element of a large array, prefer
/// [`Array::get`] and [`Array::set`].
#[must_use = "dropping the guard unlocks at once"]
pub struct ArrayGuard<'a, T: ShmSafe> {
    cells: &'a Cells<T>,
    copy: std::cell::OnceCell<Vec<T>>,
    _marker: PhantomData<NotSend>,
}

impl<T: ShmSafe> ArrayGuard<'_, T> {
    fn load_all(&self) -> Vec<T> {
        (0..self.cells.len)
            .map(|i| self.cells.load_for_update(i))
            .collect()
    }
}

impl<T: ShmSafe> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.copy.get_or_init(|| self.load_all())
    }
}

impl<T: ShmSafe> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let _ = self.copy.get_or_init(|| self.load_all());
        self.copy.get_mut().expect("filled just above")
    }
}

impl<T: ShmSafe> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        // Written back whenever it was read (see `ValueGuard`'s drop).
        if let Some(all) = self.copy.take() {
            for (i, v) in all.into_iter().enumerate() {
                self.cells.store(i, v);
            }
        }
        // SAFETY: the guard exists only while the lock is held (see `Array::guard`).
        unsafe { self.cells.lock().release() }
    }
}

impl<T: ShmSafe> private::Sealed for ArrayGuard<'_, T> {}
impl<T: ShmSafe> RecoverableGuard for ArrayGuard<'_, T> {
    fn mark_consistent(&self) {
        self.cells.lock().mark_consistent();
    }
}

/// A fixed-length array of plain data in shared memory without a lock, like Python's
/// `RawArray`. Derefs to `&[T]` for atomics; otherwise element copies are unsynchronised, as
/// for [`RawValue`].
#[derive(Debug)]
pub struct RawArray<T> {
    cells: Cells<T>,
}

cells_object!(RawArray, kind::RAW_ARRAY, false);
array_common!(RawArray);

impl<T: ShmSafe + Send> RawArray<T> {
    /// A copy of element `i`, or `None` if out of range.
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.cells.len).then(|| self.cells.load(i))
    }

    /// Sets element `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn set(&self, i: usize, value: T) {
        self.cells.store(i, value)
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.cells.len)
            .map(|i| self.cells.load_for_update(i))
            .collect()
    }
}

impl<T: ShmAtomic + Send> Deref for RawArray<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.cells.atomics()
    }
}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&**self).finish()
    }
}

crate::segment::object::serde_via_handle!([T: ShmSafe + Send] Value<T>);
crate::segment::object::serde_via_handle!([T: ShmSafe + Send] RawValue<T>);
crate::segment::object::serde_via_handle!([T: ShmSafe + Send] Array<T>);
crate::segment::object::serde_via_handle!([T: ShmSafe + Send] RawArray<T>);
