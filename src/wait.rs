//! L5: [`wait`], Python's `multiprocessing.connection.wait`: one wait over any mix of
//! connections, queue receivers, events and process sentinels.
//!
//! # How it sleeps
//!
//! Every shared object here sleeps on a futex word in its shared memory: a ring's data word
//! (which a blocking `get` sleeps on), an event's word. Linux 5.16 added `futex_waitv`, which
//! sleeps on up to 128 words at once and returns when any is woken, so `wait` makes one system
//! call for all of them: no thread per object, and no polling.
//!
//! A process is not a futex word: its end shows as its pidfd becoming readable, which
//! `futex_waitv` cannot wait for. The choices were:
//!
//! - **an exit watcher thread** (chosen): one thread per process in all, started by the first
//!   `wait` that has a process in its list, sleeps in `epoll_wait` on the pidfds of every child
//!   any `wait` asked about (each registered once, one-shot: a process ends only once). When one
//!   becomes readable it advances a word in this process's private memory and wakes it; `wait`
//!   puts that word in its `futex_waitv`. Lists without processes never start it. A forked
//!   child inherits the watcher's epoll descriptor but not its thread; the watcher records the
//!   process that started it, so a child that waits for processes starts its own. While the
//!   watcher's word has not moved since a child was last seen running, `wait` does not ask
//!   the kernel about that child again: no system call per process and round.
//! - io_uring with `FUTEX_WAITV` and `POLL_ADD` in one submission (Linux 6.7+): no thread, but a
//!   ring per waiting thread (or a shared one and its locking), a far newer kernel, and
//!   io_uring is often disabled by container and seccomp policies.
//! - a pidfd per process plus an eventfd signalled by futex wakers: producers would have to
//!   write an eventfd on every wake, a system call on the hot path of every put.
//!
//! # Kernels without `futex_waitv`
//!
//! Whether the kernel has `futex_waitv` is found out once per process, by calling it (an old
//! kernel or a seccomp filter answers ENOSYS). Without it, and for lists of more words than one
//! call takes (127, one slot being the exit watcher's), and when no exit watcher can be started
//! for a process in the list, `wait` falls back to sleeping on one word for at most a
//! millisecond at a time and looking at every object again: correct, at the price of waking up
//! to a thousand times a second.
//!
//! # No lost wake-up
//!
//! `wait` follows the protocol of each object's own blocking call. It looks at every object
//! first, and spins a little while none is ready (with an adaptive budget, as a blocking get
//! does, looking only at loads). Before it first sleeps it counts itself as a sleeper of every
//! ring and event (so producers and setters make their wake call); from then on every round
//! reads each futex word, then looks at every object, and sleeps only while every word still
//! holds what it read: a put or set that its look missed has changed a word, or wakes it. It
//! withdraws its counts before returning. A put wakes one sleeper of its ring;
//! should that wake reach `wait` rather than a blocking `get` in another thread, `wait` passes
//! it on as it leaves.
//!
//! Senders that die without a trace are noticed as a blocking `get` notices them: by probing
//! the peers of each ring, first after 10 ms asleep, then at intervals growing to 200 ms. A
//! `wait` that gives up probes once more if none was made lately, as a `get` that times out
//! does.
//!
//! Nothing read from shared memory forms a pointer or an index here: futex words are values
//! handed to the kernel for comparison only.
//!
//! # No `fileno`
//!
//! Python's `Connection` has `fileno()` because it is a pipe or a socket, which `select` can
//! wait for. A `Connection` here is two rings in shared memory; the descriptors behind it are
//! those of its memory segments, which never become readable or writable in the sense `select`
//! means. So there is no `fileno`: `wait` is the way to wait for several connections.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::channel::ring::Ring;
#[cfg(feature = "serde")]
use crate::process::Child;
use crate::sync::event::EventState;
use crate::sync::wait::{Prober, Spinner, deadline_after};
use crate::sys::{self, Errno, WaitvEntry};

/// How long `wait` spins before it sleeps, learnt across the calls of this process (see
/// [`Spinner`]): a wait that is answered within microseconds answers sooner awake, at the
/// price of spinning in vain when it is not, which the budget then learns.
static SPINNER: Spinner = Spinner::new();

/// What `wait` waits on in one object.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// A receiving side: ready when a get would return at once.
    Ring(&'a Ring),
    /// Ready when set, or set since the wait began.
    Event(&'a EventState),
    /// Ready once the child has ended.
    #[cfg(feature = "serde")]
    Process(&'a Child),
}

/// The object-to-target map behind [`Waitable`], sealed.
pub(crate) trait Sealed {
    fn target(&self) -> Target<'_>;
}

/// An object [`wait`] can wait for: [`Connection`](crate::Connection) (ready when a `recv`
/// would not block), [`Receiver`](crate::Receiver), [`Queue`](crate::Queue) and
/// [`JoinableQueue`](crate::JoinableQueue) (ready when a `get` would not block: a message is
/// there, the queue is closed, or every sender is gone), [`Event`](crate::Event) (ready when
/// set), and, with the `serde` feature, `Process` and its `Sentinel` (ready once the child has
/// ended). Implemented by this crate only.
pub trait Waitable: Sealed {}

impl<T: Sealed + ?Sized> Waitable for T {}

impl Sealed for crate::Event {
    fn target(&self) -> Target<'_> {
        Target::Event(self.state())
    }
}

#[cfg(feature = "serde")]
impl<R> Sealed for crate::Process<R> {
    fn target(&self) -> Target<'_> {
        Target::Process(self.child())
    }
}

#[cfg(feature = "serde")]
impl Sealed for crate::process::Sentinel {
    fn target(&self) -> Target<'_> {
        Target::Process(self.child())
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`: for as long as
/// it takes; `Some(Duration::ZERO)`: just looks), and returns the indices of the ready ones into
/// `objects`, ascending: Python's `multiprocessing.connection.wait`. Empty on timeout.
///
/// Ready means: for a [`Connection`](crate::Connection), [`Receiver`](crate::Receiver) or
/// queue, that a receive would not block (a message is there, or it would fail at once because
/// the queue is closed or every sender is gone, dropped or killed); for an
/// [`Event`](crate::Event), that it is set, or was set while `wait` waited (as
/// [`Event::wait_timeout`](crate::Event::wait_timeout) counts it); for a process or its
/// sentinel, that the child has ended. `wait` takes nothing: a ready queue may be emptied by
/// another consumer before the caller gets to it, so follow up with a `try_get` or a `get`
/// with a timeout where that can happen.
///
/// # How it waits
///
/// One `futex_waitv` system call (Linux 5.16+) sleeps on the futex words of every queue,
/// connection and event at once: no thread per object, and no polling. The ends of processes
/// reach it through one watcher thread per process (started by the first `wait` with a process
/// in its list), which sleeps in `epoll` on the pidfds of the children asked about and wakes a
/// futex word of its own when one ends. Dead senders are found by probing, as a blocking `get`
/// finds them (after 10 ms asleep, then at intervals growing to 200 ms). On a kernel without
/// `futex_waitv`, or for more than 127 objects, `wait` sleeps in slices of at most a
/// millisecond and looks at every object between them.
///
/// A [`Connection`](crate::Connection) has no `fileno`, unlike Python's: it is two rings in
/// shared memory, and no descriptor behind it ever becomes readable.
///
/// # Errors
/// [`Errno::INVAL`] for an empty list with no timeout, which would sleep for ever; otherwise
/// nothing else: should the system refuse the one-call sleep, `wait` sleeps in bounded slices.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// let (a, b) = multiproc::pipe::<u32>()?;
/// let (tx, rx) = multiproc::channel::<String>(8)?;
/// let stop = multiproc::Event::new()?;
///
/// assert!(multiproc::wait(&[&b, &rx, &stop], Some(Duration::ZERO))?.is_empty());
/// tx.put("job".into())?;
/// stop.set();
/// assert_eq!(multiproc::wait(&[&b, &rx, &stop], None)?, [1, 2]);
/// drop(a); // a closed connection is ready too: its recv fails at once
/// assert_eq!(multiproc::wait(&[&b], None)?, [0]);
/// # Ok(()) }
/// ```
#[doc(alias = "connection.wait")]
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>, Errno> {
    if objects.is_empty() {
        return match timeout {
            None => Err(Errno::INVAL),
            Some(t) => {
                std::thread::sleep(t);
                Ok(Vec::new())
            }
        };
    }
    let deadline = timeout.and_then(deadline_after);
    let targets: Vec<Target<'_>> = objects.iter().map(|o| o.target()).collect();
    // Dropping the waiter withdraws its sleeper counts.
    Waiter::new(&targets).run(deadline)
}

/// One call of [`wait`]: the targets, counted as a sleeper of each while it lives.
struct Waiter<'t, 'a> {
    targets: &'t [Target<'a>],
    /// Each event's word when the wait began (unused for other targets).
    since: Vec<u32>,
    /// Per target, whether it is counted as a sleeper (its `announce` is to be undone).
    announced: Vec<bool>,
    /// Whether [`count`](Self::count) ran: counted as a sleeper of every ring and event.
    counted: bool,
    /// The target whose futex word a sleep was woken through, last.
    woken: Option<usize>,
    has_rings: bool,
    /// Whether the sleep must be bounded (no `futex_waitv`, too many words, no exit watcher).
    bounded: bool,
    /// The words of a round: the target, its futex word, and the value read.
    entries: Vec<(usize, &'a AtomicU32, u32)>,
}

impl<'t, 'a> Waiter<'t, 'a> {
    fn new(targets: &'t [Target<'a>]) -> Self {
        #[cfg_attr(not(feature = "serde"), allow(unused_mut))]
        let mut bounded = !sys::waitv_supported() || targets.len() + 1 > sys::WAITV_MAX;
        let mut since = vec![0; targets.len()];
        let mut has_rings = false;
        for (i, t) in targets.iter().enumerate() {
            match *t {
                Target::Ring(_) => has_rings = true,
                Target::Event(e) => since[i] = e.word_now(),
                #[cfg(feature = "serde")]
                Target::Process(c) => {
                    // Registered before the first look at the child, so an end after that
                    // look advances the exit word.
                    bounded |= !c.watch_exit();
                }
            }
        }
        Self {
            targets,
            since,
            announced: vec![false; targets.len()],
            counted: false,
            woken: None,
            has_rings,
            bounded,
            entries: Vec::with_capacity(targets.len() + 1),
        }
    }

    fn run(&mut self, deadline: Option<Instant>) -> Result<Vec<usize>, Errno> {
        let mut prober = Prober::new();
        let mut spun = false;
        loop {
            // Read every word first, then look: a change after the read shows in the sleep.
            let exits = sys::exit_word().load(Ordering::SeqCst);
            self.entries.clear();
            // Words are read only once counted, in the rounds that may end asleep.
            for (i, t) in self.targets.iter().enumerate().filter(|_| self.counted) {
                let entry = match *t {
                    Target::Ring(r) => (i, r.data_word(), r.data_seen()),
                    Target::Event(e) => (i, e.word(), e.word_now()),
                    #[cfg(feature = "serde")]
                    Target::Process(_) => continue,
                };
                self.entries.push(entry);
            }
            let give_up = deadline.is_some_and(|d| Instant::now() >= d);
            let probe = self.has_rings && !give_up && prober.due();
            let ready = self.look(exits, probe, give_up);
            if !ready.is_empty() || give_up {
                return Ok(ready);
            }
            if !std::mem::replace(&mut spun, true) && SPINNER.spin(deadline, || self.hint()) {
                continue; // something looks ready: look properly
            }
            if !self.counted {
                // Before the first sleep: count ourselves, then read the words and look again.
                self.count();
                continue;
            }
            let sleep_until = if self.has_rings {
                match prober.sleep_budget(deadline) {
                    Some(left) => Instant::now().checked_add(left),
                    None => continue, // the deadline passed: one last look, giving up
                }
            } else {
                deadline
            };
            let words: Vec<WaitvEntry<'_>> = self
                .entries
                .iter()
                .map(|&(_, word, seen)| WaitvEntry {
                    word,
                    expected: seen,
                    private: false,
                })
                .chain(std::iter::once(WaitvEntry {
                    word: sys::exit_word(),
                    expected: exits,
                    private: true,
                }))
                .collect();
            if self.bounded {
                sys::fallback_sleep(&words, sleep_until);
                continue;
            }
            match sys::futex_waitv(&words, sleep_until) {
                Ok(Some(k)) => {
                    if let Some(&(i, _, _)) = self.entries.get(k) {
                        self.woken = Some(i);
                    }
                }
                Ok(None) => {}
                // Not expected of a call whose words are all valid references; sleep bounded
                // from now on rather than fail a timed wait.
                Err(_) => self.bounded = true,
            }
        }
    }

    /// Counts this wait as a sleeper of every ring and event, so that their wakers wake it.
    fn count(&mut self) {
        for (i, t) in self.targets.iter().enumerate() {
            match *t {
                Target::Ring(r) => r.watch_data(),
                Target::Event(e) => e.announce(),
                #[cfg(feature = "serde")]
                Target::Process(_) => continue,
            }
            self.announced[i] = true;
        }
        self.counted = true;
    }

    /// Whether some ring or event seems ready, from loads alone: for spinning.
    fn hint(&self) -> bool {
        self.targets.iter().enumerate().any(|(i, t)| match *t {
            Target::Ring(r) => r.data_hint(),
            Target::Event(e) => EventState::released(e.word_now(), self.since[i]),
            #[cfg(feature = "serde")]
            Target::Process(_) => false,
        })
    }

    /// The indices of the targets ready now; `exits` is the exit word as read before.
    #[cfg_attr(not(feature = "serde"), allow(unused_variables))]
    fn look(&self, exits: u32, probe: bool, give_up: bool) -> Vec<usize> {
        let mut ready = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let is_ready = match *t {
                Target::Ring(r) => r.data_ready(probe, give_up),
                Target::Event(e) => EventState::released(e.word_now(), self.since[i]),
                #[cfg(feature = "serde")]
                Target::Process(c) if self.bounded => c.has_exited(),
                #[cfg(feature = "serde")]
                Target::Process(c) => c.has_exited_since(exits),
            };
            if is_ready {
                ready.push(i);
            }
        }
        ready
    }

    /// Withdraws the sleeper counts, passing on a ring's wake this wait took.
    fn leave(&mut self) {
        for (i, t) in self.targets.iter().enumerate() {
            if !std::mem::take(&mut self.announced[i]) {
                continue;
            }
            match *t {
                Target::Ring(r) => r.unwatch_data(self.woken == Some(i)),
                Target::Event(e) => e.withdraw(),
                #[cfg(feature = "serde")]
                Target::Process(_) => {}
            }
        }
    }
}

impl Drop for Waiter<'_, '_> {
    fn drop(&mut self) {
        // Should anything above panic, the counts still go.
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback of kernels without `futex_waitv`: bounded sleeps still see a set made by
    /// another thread, a message, and the timeout.
    #[test]
    fn bounded_sleeps_see_changes_and_time_out() {
        let ev = crate::Event::new().expect("event");
        let (tx, rx) = crate::channel::<u32>(4).expect("channel");
        let objects: [&dyn Waitable; 2] = [&rx, &ev];
        let targets: Vec<Target<'_>> = objects.iter().map(|o| o.target()).collect();
        let bounded = |deadline| {
            let mut w = Waiter::new(&targets);
            w.bounded = true;
            w.run(deadline).expect("wait")
        };
        let t0 = Instant::now();
        assert!(bounded(Some(t0 + Duration::from_millis(30))).is_empty());
        assert!(t0.elapsed() >= Duration::from_millis(30));
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                ev.set();
            });
            assert_eq!(bounded(deadline_after(Duration::from_secs(30))), [1]);
        });
        ev.clear();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                tx.put(5).expect("put");
            });
            assert_eq!(bounded(deadline_after(Duration::from_secs(30))), [0]);
        });
    }
}
