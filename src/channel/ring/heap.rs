//! Rings in this process's heap, for the loom build (`--cfg multiproc_loom`).
#![allow(unsafe_code)]
//! # Safety
//! A `HeapRing` owns the boxes behind its two pointers, and frees them once, on drop.

use std::ptr::NonNull;

use super::layout::{ConfigLine, PosLine, RingState, SideLine, TaskLine, WaitLine};
use crate::primitive::Ordering;

/// Owns a `RingState` made with loom's atomics and `capacity` data bytes (8-aligned).
#[derive(Debug)]
pub(super) struct HeapRing {
    pub(super) state: NonNull<RingState>,
    pub(super) data: NonNull<u8>,
    words: usize,
}

impl HeapRing {
    pub(super) fn new(capacity: u32, max_messages: u32) -> Self {
        let state = RingState {
            config: ConfigLine::default(),
            put_side: SideLine::default(),
            tail: PosLine::default(),
            get_side: SideLine::default(),
            head: PosLine::default(),
            data_wait: WaitLine::default(),
            space_wait: WaitLine::default(),
            tasks: TaskLine::default(),
            peers: std::array::from_fn(|_| Default::default()),
        };
        state.config.capacity.store(capacity, Ordering::Relaxed);
        state
            .config
            .max_messages
            .store(max_messages, Ordering::Relaxed);
        let words = capacity as usize / 8;
        let data = Box::into_raw(vec![0u64; words].into_boxed_slice());
        Self {
            state: NonNull::from(Box::leak(Box::new(state))),
            // SAFETY: `Box::into_raw` never returns null.
            data: unsafe { NonNull::new_unchecked(data.cast::<u8>()) },
            words,
        }
    }
}

impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: `state` came from `Box::leak` in `new` and is freed once, here.
        drop(unsafe { Box::from_raw(self.state.as_ptr()) });
        let data = std::ptr::slice_from_raw_parts_mut(self.data.as_ptr().cast::<u64>(), self.words);
        // SAFETY: `data` is the boxed slice of `words` words made in `new`, freed once, here.
        drop(unsafe { Box::from_raw(data) });
    }
}
