//! What every shared object has in common: a typed segment, a builder, a handle.
#![allow(unsafe_code)]
//! # Safety
//! [`FreshPayload`] hands an object's `init` the payload of a segment being created. Its
//! constructor is the one place that vouches for that payload (zeroed, 64-byte aligned, `len`
//! bytes, alive and private to this thread for `'a`), and it is called only in
//! [`Builder::create`], on what `Segment::create` passes its `init` closure. Its methods check
//! every length and offset against `len` before touching the bytes.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use crate::error::OpenError;
use crate::segment::{Backing, DEFAULT_OPEN_TIMEOUT, Handle, Location, Segment, kind};
use crate::sys::Errno;

/// A `#[repr(C)]` struct of atomics, valid for every bit pattern including all zeros.
///
/// # Safety
/// - The type is `#[repr(C)]`, contains only `core::sync::atomic` integers (or arrays/structs of
///   them), has no padding that matters, and alignment at most 64.
pub(crate) unsafe trait AtomicState: Sync {}

pub(crate) mod sealed {
    use super::*;

    /// The creation and attach steps each object type implements.
    pub trait Object: Sized {
        /// Type-specific creation parameters (initial count, number of parties, ...).
        type Config: Clone;
        /// Header type tag.
        const KIND: u32;
        /// Rejects a configuration no object can be created from (a zero capacity, a size
        /// that overflows); [`Builder::create`] calls it before anything else, so
        /// `payload_len` and `init` only see configurations it accepted.
        fn check(_config: &Self::Config) -> Result<(), OpenError> {
            Ok(())
        }
        /// Payload size for `config`.
        fn payload_len(config: &Self::Config) -> usize;
        /// Fills the zeroed payload of a new segment; `payload.len()` is `payload_len(config)`.
        fn init(payload: FreshPayload<'_>, config: &Self::Config);
        /// Wraps a segment whose header was validated; must validate the payload itself.
        fn from_segment(seg: Segment) -> Result<Self, OpenError>;
        /// The segment behind the object.
        fn segment(&self) -> &Segment;
        /// The type as errors print it: "Lock", `Value<u64>`.
        fn type_name() -> String {
            super::kind::describe(Self::KIND)
        }
    }
}

/// A shared object: something that lives in a segment and can be re-attached from a [`Handle`].
///
/// Implemented by every primitive in this crate; not implementable outside it.
pub trait SharedObject: sealed::Object {
    /// The handle another process uses to attach this object (see [`Handle`]).
    fn handle(&self) -> Handle {
        self.segment().handle()
    }

    /// Attaches the object a handle describes, validating the segment.
    ///
    /// # Errors
    /// [`OpenError::WrongType`] if the handle is for another kind of object, and any error of
    /// opening and validating the segment.
    fn from_handle(handle: &Handle) -> Result<Self, OpenError> {
        if handle.kind() != Self::KIND {
            return Err(OpenError::WrongType {
                name: handle.name().map(str::to_owned),
                found: kind::describe(handle.kind()),
                expected: Self::type_name(),
            });
        }
        let seg = Segment::open(handle.location(), Self::KIND, DEFAULT_OPEN_TIMEOUT)
            .map_err(in_context::<Self>)?;
        let name = seg.name().map(str::to_owned);
        Self::from_segment(seg).map_err(|e| match name {
            Some(name) => e.with_name(&name),
            None => e,
        })
    }

    /// Lets a memfd-backed object's descriptor survive `exec`, so that an exec'd child can use
    /// [`from_handle`](Self::from_handle). Named and anonymous objects need nothing.
    ///
    /// # Errors
    /// The `fcntl` error, if any.
    fn set_inheritable(&self, inheritable: bool) -> Result<(), Errno> {
        self.segment().set_inheritable(inheritable)
    }

    /// The POSIX shm name of a named object.
    fn name(&self) -> Option<&str> {
        self.segment().name()
    }

    /// Removes a named object's name now (mappings stay valid); `Ok(false)` if it was already
    /// removed or the object has no name. The creating process also does this when it drops
    /// the object (unless it was made [`persistent`](Builder::persistent)), and the name
    /// tracker does it once every process that used the name is gone, however they ended
    /// (see [`Builder::name`]).
    ///
    /// # Errors
    /// The `shm_unlink` error, if any.
    fn unlink(&self) -> Result<bool, OpenError> {
        self.segment().unlink()
    }
}

impl<T: sealed::Object> SharedObject for T {}

/// With the `serde` feature, a shared object serialises as its [`Handle`] and deserialises by
/// attaching the object the handle names (validating it like `from_handle`). So objects can
/// travel inside a spawned child's argument, or a `Serde` message, like any other value.
macro_rules! serde_via_handle {
    ([$($gen:tt)*] $ty:ty) => {
        #[cfg(feature = "serde")]
        impl<$($gen)*> serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::segment::note_object();
                serde::Serialize::serialize(
                    &$crate::segment::object::SharedObject::handle(self),
                    s,
                )
            }
        }

        #[cfg(feature = "serde")]
        impl<'de, $($gen)*> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let h = <$crate::segment::Handle as serde::Deserialize>::deserialize(d)?;
                <Self as $crate::segment::object::SharedObject>::from_handle(&h)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_via_handle;

/// Creates or opens a shared object of type `T`.
///
/// ```
/// # fn main() -> Result<(), multiproc::OpenError> {
/// use multiproc::{Semaphore, SharedObject};
/// let sem = Semaphore::builder().value(3).create()?; // memfd, inherited by children
/// assert_eq!(sem.get_value(), 3);
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until create() or open()"]
pub struct Builder<T: sealed::Object> {
    backing: Backing,
    persistent: bool,
    open_timeout: Duration,
    pub(crate) config: T::Config,
    _type: PhantomData<fn() -> T>,
}

impl<T: sealed::Object> Builder<T> {
    pub(crate) fn with_config(config: T::Config) -> Self {
        Self {
            backing: Backing::Memfd,
            persistent: false,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            config,
            _type: PhantomData,
        }
    }

    /// The same settings for another object type with the same configuration (a queue with
    /// another codec).
    pub(crate) fn retype<U: sealed::Object<Config = T::Config>>(self) -> Builder<U> {
        Builder {
            backing: self.backing,
            persistent: self.persistent,
            open_timeout: self.open_timeout,
            config: self.config,
            _type: PhantomData,
        }
    }

    /// Backs the object with the POSIX shm object `name` (`/dev/shm/<name>`; a leading `/` is
    /// optional, as in Python). Created exclusively with mode 0600.
    ///
    /// # When the name goes
    ///
    /// - When the creating process drops the object, or anyone calls
    ///   [`unlink`](SharedObject::unlink). Mappings stay valid after.
    /// - When the creating process died without dropping it (a crash, SIGKILL), once no
    ///   process that created or opened the name is left, and never while one still maps it:
    ///   each program that creates or opens a name has a *tracker* process that removes it
    ///   then. (Python's `multiprocessing` has a resource tracker for the same purpose.)
    /// - Never, for a [`persistent`](Self::persistent) object.
    ///
    /// How the tracker works and what it costs (one small idle process per program that uses
    /// names) is described under
    /// [Names and the tracker](crate::SharedMemory#names-and-the-tracker).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.backing = Backing::Named {
            name: Some(name.into()),
            persistent: false,
        };
        self
    }

    /// Backs the object with a named POSIX shm object whose name is random and unguessable
    /// (removed as for [`name`](Self::name)).
    pub fn named(mut self) -> Self {
        self.backing = Backing::Named {
            name: None,
            persistent: false,
        };
        self
    }

    /// Makes a named object's name outlive every process, as a Python `SharedMemory` does:
    /// neither the creator's drop nor the name tracker removes it, only an explicit
    /// [`unlink`](SharedObject::unlink) (from any process) or a reboot. For use with
    /// [`name`](Self::name) or [`named`](Self::named) (in any order); `create` fails with
    /// [`OpenError::InvalidArgument`] on any other backing.
    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }

    /// Backs the object with an anonymous shared mapping, reachable only by children forked
    /// after creation (no handle can re-open it).
    pub fn anonymous(mut self) -> Self {
        self.backing = Backing::Anonymous;
        self
    }

    /// How long [`open`](Self::open) waits for a creator that is still initialising
    /// (default 1 s).
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Creates the object.
    ///
    /// # Errors
    /// [`OpenError::InvalidArgument`] if a setting is out of range (each setter says what
    /// it allows), [`OpenError::AlreadyExists`] if the name is taken,
    /// [`OpenError::InvalidName`], or the system error.
    pub fn create(self) -> Result<T, OpenError> {
        let config = self.config;
        T::check(&config)?;
        let backing = match self.backing {
            Backing::Named { name, .. } => Backing::Named {
                name,
                persistent: self.persistent,
            },
            _ if self.persistent => {
                return Err(OpenError::InvalidArgument(
                    "persistent() applies to named objects only",
                ));
            }
            other => other,
        };
        let len = T::payload_len(&config);
        let seg = Segment::create(&backing, T::KIND, len, |payload| {
            // SAFETY: `Segment::create` calls this closure once, before it publishes the header,
            // with the start of the payload of the segment it just created and mapped: `len`
            // bytes (the length we passed), zero-filled by the fresh mapping, valid until it
            // returns. No other thread of this process can reach the segment before `create`
            // returns it; the 64-byte alignment is checked by `FreshPayload::new`.
            let payload = unsafe { FreshPayload::new(payload, len) };
            T::init(payload, &config)
        })?;
        T::from_segment(seg)
    }

    /// Opens the existing object of the name given with [`name`](Self::name).
    ///
    /// # Errors
    /// [`OpenError::NotFound`], a validation error if the segment is not a valid object of this
    /// type, or [`OpenError::NameRequired`] if no name was given.
    pub fn open(self) -> Result<T, OpenError> {
        match self.backing {
            Backing::Named {
                name: Some(name), ..
            } => open_named(name, self.open_timeout),
            _ => Err(OpenError::NameRequired),
        }
    }

    /// Opens the named object, creating it if it does not exist yet.
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(self) -> Result<T, OpenError> {
        let Backing::Named {
            name: Some(name), ..
        } = &self.backing
        else {
            return self.create();
        };
        let name = name.clone();
        let timeout = self.open_timeout;
        match self.create() {
            Err(OpenError::AlreadyExists { .. }) => open_named(name, timeout),
            other => other,
        }
    }
}

/// Opens the named object `name` of type `T`; errors name it.
fn open_named<T: sealed::Object>(name: String, timeout: Duration) -> Result<T, OpenError> {
    let seg = Segment::open(&Location::Named(name), T::KIND, timeout).map_err(in_context::<T>)?;
    let name = seg.name().map(str::to_owned).unwrap_or_default();
    T::from_segment(seg).map_err(|e| e.with_name(&name))
}

/// An error of opening a segment for a `T`, naming the type opened in full (`Value<u64>`
/// rather than the header's "Value").
fn in_context<T: sealed::Object>(mut e: OpenError) -> OpenError {
    if let OpenError::WrongType { expected, .. } = &mut e {
        *expected = T::type_name();
    }
    e
}

/// The payload of a segment being created, lent to [`sealed::Object::init`] to fill.
///
/// It stands for `len` bytes at a 64-byte aligned address that were zero when the segment was
/// mapped and that stay mapped, and untouched by other threads of this process, for `'a`. Its
/// constructor is the only place that has to be trusted for that; everything else goes through
/// the bounds-checked methods below. (Another process that opens a named segment early could
/// write into the bytes meanwhile, as into any segment: the methods only hand out atomics and
/// write, they never read the bytes as plain data.)
pub(crate) struct FreshPayload<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _bytes: PhantomData<&'a mut [u8]>,
}

impl FreshPayload<'_> {
    /// Vouches for a new segment's payload.
    ///
    /// # Safety
    /// - `ptr` is valid for reads and writes of `len` bytes for the lifetime of the result, and
    ///   those bytes were zero-filled when they were mapped.
    /// - No other thread of this process accesses them during that lifetime except through the
    ///   result.
    ///
    /// # Panics
    /// If `ptr` is not 64-byte aligned.
    unsafe fn new(ptr: NonNull<u8>, len: usize) -> Self {
        assert!(
            ptr.as_ptr().addr() % 64 == 0,
            "a segment payload must be 64-byte aligned"
        );
        Self {
            ptr,
            len,
            _bytes: PhantomData,
        }
    }

    /// Payload size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Start of the payload: 64-byte aligned, valid for [`len`](Self::len) zero-filled bytes
    /// while `self` lives, and not accessed by other threads of this process meanwhile.
    pub(crate) fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The state struct at the start of the payload.
    ///
    /// # Panics
    /// If the payload is shorter than `S`.
    pub(crate) fn state<S: AtomicState>(&self) -> &S {
        self.at(0)
    }

    /// The `S` at byte `offset` of the payload.
    ///
    /// # Panics
    /// If `offset` is not a multiple of `S`'s alignment or `S` does not fit there.
    pub(crate) fn at<S: AtomicState>(&self, offset: usize) -> &S {
        const { assert!(align_of::<S>() <= 64) };
        assert!(
            offset % align_of::<S>() == 0
                && offset
                    .checked_add(size_of::<S>())
                    .is_some_and(|end| end <= self.len),
            "a {}-byte state at {offset} does not fit a {}-byte payload",
            size_of::<S>(),
            self.len
        );
        let at = self.ptr.as_ptr().wrapping_add(offset).cast::<S>();
        // SAFETY: `offset..offset + size_of::<S>()` lies inside the payload (asserted), which is
        // valid while `self` is borrowed (type invariant, vouched for in `new`); the payload is
        // 64-byte aligned and `offset` a multiple of S's alignment (at most 64), so `at` is
        // aligned. S is all atomics (AtomicState), so the zeroed bytes are a valid S and a shared
        // reference is sound even if another process writes them.
        unsafe { &*at }
    }

    /// Copies `bytes` into the payload at `offset`.
    ///
    /// # Panics
    /// If `offset + bytes.len()` exceeds the payload.
    pub(crate) fn write(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset.checked_add(bytes.len());
        assert!(
            end.is_some_and(|end| end <= self.len),
            "write of {} bytes at {offset} past a {}-byte payload",
            bytes.len(),
            self.len
        );
        let dst = self.ptr.as_ptr().wrapping_add(offset);
        // SAFETY: `offset..offset + bytes.len()` lies inside the payload (asserted), which is
        // valid for writes (type invariant). `bytes` cannot overlap it: `&mut self` ends every
        // reference `at` handed out, and no other safe code can form a reference into a payload
        // being created (`as_ptr` gives a raw pointer).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
    }
}

/// Checks that a validated segment's payload is exactly `expected` bytes.
pub(crate) fn expect_payload(seg: &Segment, expected: usize) -> Result<(), OpenError> {
    let found = seg.payload_len();
    if found < expected {
        return Err(OpenError::Truncated {
            found: found as u64,
            expected: expected as u64,
        });
    }
    if found != expected {
        return Err(OpenError::Corrupted(
            "payload size does not match the object",
        ));
    }
    Ok(())
}

/// How errors name an object: its type, then its name if it has one ("Lock", `Value<u64>`,
/// "Lock /jobs-lock").
pub(crate) fn describe<T: sealed::Object>(object: &T) -> String {
    let ty = T::type_name();
    match object.segment().name() {
        Some(name) => format!("{ty} {name}"),
        None => ty,
    }
}

/// `std::any::type_name::<T>()` without module paths: "u64", "Point", "[u8; 4]",
/// `Pair<u32>`.
pub(crate) fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(""));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(""));
    out
}

#[cfg(test)]
mod tests {
    use super::short_type_name;

    #[test]
    fn short_type_names_drop_module_paths() {
        assert_eq!(short_type_name::<u64>(), "u64");
        assert_eq!(short_type_name::<[u8; 4]>(), "[u8; 4]");
        // Newer standard libraries name `AtomicU32` as an alias of `Atomic<u32>`.
        let atomic = short_type_name::<std::sync::atomic::AtomicU32>();
        assert!(atomic == "AtomicU32" || atomic == "Atomic<u32>", "{atomic}");
        assert_eq!(
            short_type_name::<Option<std::num::Wrapping<u8>>>(),
            "Option<Wrapping<u8>>"
        );
    }
}
