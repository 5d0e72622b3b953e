//! `Fixed<S>`: a segment whose payload is one `#[repr(C)]` state struct made of atomics.
#![allow(unsafe_code)]
//! # Safety
//! `AtomicState` types consist only of atomics (and arrays of them), so every bit pattern is a
//! valid value and a shared reference to one in memory that other processes write is sound.
//! `Fixed` checks the payload length before forming the reference, and keeps the segment (and so
//! the mapping) alive as long as the reference can be used.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::OpenError;
use crate::segment::Segment;
use crate::segment::object::{AtomicState, expect_payload};

/// A validated segment holding one `S`.
///
/// Clones share the segment (and its one mapping) through an `Arc`: the mapping lives until
/// the last clone goes, so `state` stays valid in every clone.
#[derive(Debug)]
pub(crate) struct Fixed<S> {
    seg: Arc<Segment>,
    state: NonNull<S>,
}

impl<S> Clone for Fixed<S> {
    fn clone(&self) -> Self {
        Self {
            seg: Arc::clone(&self.seg),
            state: self.state,
        }
    }
}

// SAFETY: `S` is Sync (atomics) and the segment is Send and Sync; the pointer is only dereferenced as &S.
unsafe impl<S: AtomicState> Send for Fixed<S> {}
// SAFETY: as above; all access is through &S, which is Sync.
unsafe impl<S: AtomicState> Sync for Fixed<S> {}

impl<S: AtomicState> Fixed<S> {
    pub(crate) fn new(seg: Segment) -> Result<Self, OpenError> {
        expect_payload(&seg, size_of::<S>())?;
        const { assert!(align_of::<S>() <= 64) };
        let state = seg.payload().cast::<S>();
        Ok(Self {
            seg: Arc::new(seg),
            state,
        })
    }

    #[inline]
    pub(crate) fn state(&self) -> &S {
        // SAFETY: payload length checked in `new`; the mapping lives as long as `self.seg`;
        // AtomicState makes a shared reference sound under concurrent writers (module note).
        unsafe { self.state.as_ref() }
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }
}

/// Implements `sealed::Object` for a `Fixed<State>` newtype.
macro_rules! fixed_object {
    ($ty:ty, $state:ty, $kind:expr, $config:ty, |$st:ident, $cfg:ident| $init:expr) => {
        impl $crate::segment::object::sealed::Object for $ty {
            type Config = $config;
            const KIND: u32 = $kind;

            fn payload_len(_: &Self::Config) -> usize {
                size_of::<$state>()
            }

            fn init(payload: $crate::segment::object::FreshPayload<'_>, $cfg: &Self::Config) {
                let $st: &$state = payload.state::<$state>();
                $init
            }

            fn from_segment(
                seg: $crate::segment::Segment,
            ) -> Result<Self, $crate::error::OpenError> {
                let inner = $crate::sync::fixed::Fixed::new(seg)?;
                Self::validate(inner)
            }

            fn segment(&self) -> &$crate::segment::Segment {
                self.inner.segment()
            }
        }
    };
}
pub(crate) use fixed_object;

/// `new()`, `builder()` and `open(name)` for an object without creation parameters.
macro_rules! unit_constructors {
    ($ty:ty, $what:literal) => {
        impl $ty {
            #[doc = concat!("Creates ", $what, " in a new memfd segment.")]
            ///
            /// # Errors
            /// The system error if the segment cannot be created.
            pub fn new() -> Result<Self, $crate::error::OpenError> {
                Self::builder().create()
            }

            /// A builder, to name the object or open an existing one.
            pub fn builder() -> $crate::segment::object::Builder<Self> {
                $crate::segment::object::Builder::with_config(())
            }

            /// Opens the existing object named `name`.
            ///
            /// # Errors
            /// As [`Builder::open`](crate::Builder::open).
            pub fn open(name: &str) -> Result<Self, $crate::error::OpenError> {
                Self::builder().name(name).open()
            }
        }
    };
}
pub(crate) use unit_constructors;
