//! `Event`: a flag that processes wait for.
#![allow(unsafe_code)]
//! # Safety
//! The only unsafe code here is the `AtomicState` impl for `EventState`, a `#[repr(C)]` struct of
//! atomics.

use std::time::Instant;

#[cfg(not(multiproc_loom))]
pub use public::Event;

use super::wait::{Spinner, remaining, sleep_unless, wake_sleepers};
use crate::primitive::{AtomicU32, Ordering};

/// `word` bit 0: the flag is set.
const SET: u32 = 1;
/// `word` bits 1..32 count the sets that found the flag clear, in steps of this unit (wrapping).
const GENERATION: u32 = 2;

/// Shared state of an event.
///
/// `word` is the futex word:
///
/// | bits  | field                                                               |
/// |-------|---------------------------------------------------------------------|
/// | 0     | `SET`: the flag                                                     |
/// | 1..32 | generation: bumped (wrapping) by every `set` that finds `SET` clear |
///
/// | operation | word before | word after   | then                                    |
/// |-----------|-------------|--------------|-----------------------------------------|
/// | `set`     | `(0, g)`    | `(1, g + 1)` | wakes every sleeper if `sleepers > 0`   |
/// | `set`     | `(1, g)`    | unchanged    | (its waiters were released by that set) |
/// | `clear`   | `(1, g)`    | `(0, g)`     |                                         |
/// | `clear`   | `(0, g)`    | unchanged    |                                         |
///
/// So the word changes only when a set happens (a clear changes it only after a set did): a
/// waiter that saw `(0, g)` on entry returns `true` as soon as the word differs from that, even
/// if a `clear` followed the `set` before it woke, as Python's `Event.wait` does. It sleeps with
/// `(0, g)` as the expected futex value, so a set between its look and its sleep makes the
/// sleep return at once. (A waiter that stays off the CPU through exactly 2^31 set/clear pairs
/// between its look and its sleep would miss them: the futex ABA every sequence word has.)
///
/// `sleepers` counts waiters asleep or about to sleep, so that `set` makes a wake call only when
/// someone may sleep. Both sides use SeqCst: the waiter bumps `sleepers` then reads `word`, the
/// setter changes `word` then reads `sleepers`, so either the waiter sees the set or the setter
/// sees the waiter.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct EventState {
    word: AtomicU32,
    sleepers: AtomicU32,
}

#[cfg(not(multiproc_loom))]
const _: () = assert!(size_of::<EventState>() == 8);

impl EventState {
    pub(crate) fn is_set(&self) -> bool {
        self.word.load(Ordering::Acquire) & SET != 0
    }

    pub(crate) fn set(&self) {
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            if w & SET != 0 {
                return;
            }
            let new = w.wrapping_add(GENERATION) | SET;
            // SeqCst: pairs with the waiter's SeqCst `sleepers` bump and `word` load.
            match self
                .word
                .compare_exchange_weak(w, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        wake_sleepers(&self.word, &self.sleepers, i32::MAX as u32);
    }

    pub(crate) fn clear(&self) {
        self.word.fetch_and(!SET, Ordering::SeqCst);
    }

    /// For a wait over many objects (`crate::wait`): counts the caller as a sleeper (undo with
    /// [`withdraw`](Self::withdraw)). After this, the caller reads
    /// the word, takes its look, and sleeps while the word holds what it read: a `set` changes
    /// the word and then sees the caller counted, so it wakes it.
    #[cfg(not(multiproc_loom))]
    pub(crate) fn announce(&self) {
        // SeqCst: pairs with the setter's SeqCst change of `word` and its RMW of `sleepers`.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
    }

    /// The futex word (to sleep on; see [`announce`](Self::announce)).
    #[cfg(not(multiproc_loom))]
    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.word
    }

    /// The futex word's value now.
    #[cfg(not(multiproc_loom))]
    pub(crate) fn word_now(&self) -> u32 {
        self.word.load(Ordering::SeqCst)
    }

    /// Undoes one [`announce`](Self::announce).
    #[cfg(not(multiproc_loom))]
    pub(crate) fn withdraw(&self) {
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether `word` (a value of the futex word) has the flag set; `since` (the word when a
    /// wait began) tells whether a set happened since, as [`wait_deadline`](Self::wait_deadline)
    /// counts it: any change from a clear word is a set.
    #[cfg(not(multiproc_loom))]
    pub(crate) fn released(word: u32, since: u32) -> bool {
        word & SET != 0 || (since & SET == 0 && word != since)
    }

    /// Waiters counted as asleep or about to sleep (for the loom models).
    #[cfg(all(test, multiproc_loom))]
    pub(crate) fn sleepers(&self) -> u32 {
        self.sleepers.load(Ordering::SeqCst)
    }

    /// Waits until the flag is set or a set happened since the call; `false` at `deadline`.
    /// Waits until the event is set, spinning first as `spinner` says.
    pub(crate) fn wait_deadline(&self, deadline: Option<Instant>, spinner: &Spinner) -> bool {
        let seen = self.word.load(Ordering::Acquire);
        if seen & SET != 0 {
            return true;
        }
        // Any change from `seen` (flag clear, generation g) means a set happened since.
        let released = || self.word.load(Ordering::SeqCst) != seen;
        if spinner.spin(deadline, released) {
            return true;
        }
        loop {
            if released() {
                return true;
            }
            let Some(left) = remaining(deadline) else {
                return false;
            };
            if sleep_unless(&self.word, seen, &self.sleepers, 1, left, released) {
                return true;
            }
        }
    }
}

/// The public type over a segment (not in the loom build, which runs `EventState` itself).
#[cfg(not(multiproc_loom))]
mod public {
    use std::time::{Duration, Instant};

    use super::EventState;
    use crate::error::OpenError;
    use crate::segment::kind;
    use crate::segment::object::AtomicState;
    use crate::sync::fixed::{Fixed, fixed_object, unit_constructors};
    use crate::sync::wait::{Spinner, deadline_after};

    // SAFETY: #[repr(C)] struct of atomics.
    unsafe impl AtomicState for EventState {}

    /// A process-shared event, like Python's `multiprocessing.Event`: `set` wakes every waiter,
    /// `clear` resets the flag.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), multiproc::OpenError> {
    /// let ev = multiproc::Event::new()?;
    /// assert!(!ev.wait_timeout(std::time::Duration::from_millis(1)));
    /// ev.set();
    /// ev.wait(); // returns at once
    /// assert!(ev.is_set());
    /// # Ok(()) }
    /// ```
    #[derive(Debug)]
    pub struct Event {
        inner: Fixed<EventState>,
        spinner: Spinner,
    }

    fixed_object!(Event, EventState, kind::EVENT, (), |_st, _cfg| ());

    impl Clone for Event {
        /// Another handle on the same event (it shares this handle's mapping).
        fn clone(&self) -> Self {
            Self {
                inner: self.inner.clone(),
                spinner: Spinner::new(),
            }
        }
    }
    unit_constructors!(Event, "a cleared event");

    impl Event {
        fn validate(inner: Fixed<EventState>) -> Result<Self, OpenError> {
            Ok(Self {
                inner,
                spinner: Spinner::new(),
            })
        }

        pub(crate) fn state(&self) -> &EventState {
            self.inner.state()
        }

        /// Whether the flag is set.
        pub fn is_set(&self) -> bool {
            self.inner.state().is_set()
        }

        /// Sets the flag and wakes every waiter, in every process. Every thread waiting when it
        /// happens returns `true`, even if the flag is cleared again before it wakes.
        pub fn set(&self) {
            self.inner.state().set();
        }

        /// Clears the flag. Waiters released by an earlier [`set`](Self::set) still return `true`.
        pub fn clear(&self) {
            self.inner.state().clear();
        }

        /// Waits until the flag is set.
        pub fn wait(&self) {
            self.wait_deadline(None);
        }

        /// Waits at most `timeout`; returns whether the flag was set on entry or a
        /// [`set`](Self::set) happened meanwhile (`false`: timed out).
        #[doc(alias = "wait")]
        pub fn wait_timeout(&self, timeout: Duration) -> bool {
            self.wait_deadline(deadline_after(timeout))
        }

        /// Waits until `deadline` at the latest; returns as [`wait_timeout`](Self::wait_timeout).
        pub fn wait_until(&self, deadline: Instant) -> bool {
            self.wait_deadline(Some(deadline))
        }

        fn wait_deadline(&self, deadline: Option<Instant>) -> bool {
            self.inner.state().wait_deadline(deadline, &self.spinner)
        }
    }

    crate::segment::object::serde_via_handle!([] Event);
}
