//! Peers: the processes attached to a ring and the handles each holds (see the state table
//! on [`Peer`]), reclaiming the slots of dead ones, and the slots a forking process fills for
//! its child.

use crate::primitive::{AtomicU32, Ordering};

use super::Ring;
use super::layout::{MAX_PEERS, PENDING, Peer, RECLAIMING};
use crate::error::OpenError;
use crate::sys::{self, Liveness, ThreadId};

/// Which kind of handle a process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Role {
    pub(crate) send: bool,
    pub(crate) recv: bool,
}

/// A peer slot that a forking process filled for its coming child (see [`Peer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildSlot {
    index: usize,
    parent: ThreadId,
}

impl Ring {
    /// Registers one handle of `role` for the calling process.
    pub(crate) fn attach(&self, role: Role) -> Result<u32, OpenError> {
        let me = sys::current_process();
        let st = self.st();
        let slot = st
            .peers
            .iter()
            .find(|p| {
                p.pid.load(Ordering::Acquire) == me.tid
                    && p.start.load(Ordering::Relaxed) == me.start
            })
            .or_else(|| {
                st.peers.iter().find(|p| {
                    p.pid
                        .compare_exchange(0, me.tid, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                        && {
                            p.start.store(me.start, Ordering::Release);
                            true
                        }
                })
            });
        let Some(peer) = slot else {
            // Maybe dead processes still hold slots: reclaim and try once more.
            if self.reclaim_dead_peers() {
                return self.attach(role);
            }
            return Err(OpenError::TooManyProcesses { max: MAX_PEERS });
        };
        self.count(peer, role);
        Ok(me.tid)
    }

    /// Unregisters one handle of `role` that process `pid` registered; wakes the other side if
    /// it was the last of its kind.
    pub(crate) fn detach(&self, role: Role, pid: u32) {
        if sys::current_process().tid != pid {
            return; // inherited across fork and never used here: nothing registered
        }
        self.detach_peer(role, pid);
    }

    /// Unregisters one handle of `role` counted for process `pid` (ourselves, or our parent
    /// when a forked child takes over the count its parent made for it).
    pub(crate) fn detach_peer(&self, role: Role, pid: u32) {
        let st = self.st();
        // Two threads attaching at once may have claimed two slots for this process: take the
        // handle out of one that counts it.
        let ours = |p: &&Peer| p.pid.load(Ordering::Acquire) == pid;
        let dec = |c: &AtomicU32| {
            c.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        };
        if role.send && st.peers.iter().filter(ours).any(|p| dec(&p.senders)) {
            dec(&st.config.senders);
        }
        if role.recv && st.peers.iter().filter(ours).any(|p| dec(&p.receivers)) {
            dec(&st.config.receivers);
        }
        // The slot stays ours (empty) until this process dies: freeing it here could race
        // with another thread of this process attaching to it. Dead processes' slots are
        // reclaimed by `reclaim_dead_peers`.
        // Someone may be waiting for exactly this: let them look.
        self.wake_all();
    }

    /// Frees the slot of a peer whose process died (`pid` as read from the slot), taking its
    /// handles out of the totals. The slot is first marked [`RECLAIMING`], so a process that
    /// takes the slot meanwhile (a child adopting its pending slot) keeps it and its counts.
    fn reclaim(&self, p: &Peer, pid: u32) -> bool {
        if p.pid
            .compare_exchange(pid, RECLAIMING, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let st = self.st();
        let senders = p.senders.swap(0, Ordering::SeqCst);
        let receivers = p.receivers.swap(0, Ordering::SeqCst);
        let sub = |total: &AtomicU32, n: u32| {
            let _ = total.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(n))
            });
        };
        sub(&st.config.senders, senders);
        sub(&st.config.receivers, receivers);
        p.start.store(0, Ordering::Relaxed);
        // Another reclaimer may have finished the same slot and someone taken it since.
        let _ = p
            .pid
            .compare_exchange(RECLAIMING, 0, Ordering::AcqRel, Ordering::Relaxed);
        true
    }

    /// Probes every attached process (but us) and reclaims the dead; returns whether any was.
    fn reclaim_dead_peers(&self) -> bool {
        let me = sys::current_process();
        self.probe_clock.mark();
        let mut freed = false;
        for p in &self.st().peers {
            let pid = p.pid.load(Ordering::Acquire);
            if pid == 0 || pid == me.tid || pid == PENDING | me.tid {
                continue;
            }
            // A pending slot lives as long as the process that is forking.
            let who = ThreadId {
                tid: pid & !PENDING,
                start: p.start.load(Ordering::Relaxed),
            };
            // `start` is either 0 (then the probe checks existence only) or the peer's real
            // start time, so `Reused` reliably means the peer died and its pid was reused.
            if sys::probe_thread(who) != Liveness::Alive {
                freed |= self.reclaim(p, pid);
            }
        }
        if freed {
            self.wake_all();
        }
        freed
    }

    /// Just before a `fork`: takes a free peer slot for the coming child, in the name of this
    /// process (see [`Peer`]). Counts go in with [`count_for_child`](Self::count_for_child).
    /// `None` if every slot is taken by a live process.
    pub(crate) fn reserve_for_child(&self) -> Option<ChildSlot> {
        let me = sys::current_process();
        for _ in 0..2 {
            for (i, p) in self.st().peers.iter().enumerate() {
                if p.pid
                    .compare_exchange(0, PENDING | me.tid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    p.start.store(me.start, Ordering::Release);
                    return Some(ChildSlot {
                        index: i,
                        parent: me,
                    });
                }
            }
            if !self.reclaim_dead_peers() {
                break;
            }
        }
        None
    }

    /// Counts one handle of `role` in the child's slot.
    pub(crate) fn count_for_child(&self, slot: ChildSlot, role: Role) {
        self.count(&self.st().peers[slot.index], role);
    }

    /// Counts one handle of `role` in `peer` and in the totals.
    fn count(&self, peer: &Peer, role: Role) {
        let totals = &self.st().config;
        if role.send {
            peer.senders.fetch_add(1, Ordering::SeqCst);
            totals.senders.fetch_add(1, Ordering::SeqCst);
        }
        if role.recv {
            peer.receivers.fetch_add(1, Ordering::SeqCst);
            totals.receivers.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// In the parent right after the `fork`: names the child in its slot, so that its death
    /// frees the counts (`Some(pid)`), or frees them now when the fork made no child or the
    /// child is gone already (`None`).
    pub(crate) fn settle_child_slot(&self, slot: ChildSlot, child: Option<u32>) {
        let peer = &self.st().peers[slot.index];
        let pending = PENDING | slot.parent.tid;
        match child {
            Some(pid) => {
                // The child may have claimed the slot already, with its own start time; if
                // not, the slot holds our start time, which must not be taken for the child's.
                let _ = peer.start.compare_exchange(
                    slot.parent.start,
                    0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                let _ =
                    peer.pid
                        .compare_exchange(pending, pid, Ordering::AcqRel, Ordering::Relaxed);
            }
            None => {
                if peer.pid.load(Ordering::Acquire) == pending && self.reclaim(peer, pending) {
                    self.wake_all();
                }
            }
        }
    }

    /// In the child right after the `fork`: takes over the slot its parent filled for it.
    /// `false` if the slot is no longer ours (the parent died and someone reclaimed it): then
    /// the inherited handles must attach anew.
    pub(crate) fn adopt_child_slot(&self, slot: ChildSlot) -> bool {
        let me = sys::current_process();
        let peer = &self.st().peers[slot.index];
        let pending = PENDING | slot.parent.tid;
        // While the slot names us, its start time must be 0 or ours, never the parent's: a
        // prober would take that for a reused pid and free our counts.
        let _ =
            peer.start
                .compare_exchange(slot.parent.start, 0, Ordering::AcqRel, Ordering::Relaxed);
        let ours = peer
            .pid
            .compare_exchange(pending, me.tid, Ordering::AcqRel, Ordering::Acquire)
            .map_or_else(|now| now == me.tid, |_| true);
        if ours {
            peer.start.store(me.start, Ordering::Release);
        }
        ours
    }

    /// Whether some handle that can send (or receive, for `send == false`) is attached. With
    /// `probe`, dead processes are reclaimed first, so their handles stop counting.
    #[inline]
    pub(super) fn any_alive(&self, send: bool, probe: bool) -> bool {
        if probe {
            self.reclaim_dead_peers();
        }
        let c = &self.st().config;
        let total = if send { &c.senders } else { &c.receivers };
        total.load(Ordering::SeqCst) > 0
    }

    /// For a wait that gives up: whether some handle that can send (or receive) is attached,
    /// after probing the peers if this process has not done so lately (see [`ProbeClock`]).
    /// Without it a caller polling with tries would never learn that the other side died.
    ///
    /// [`ProbeClock`]: crate::sync::wait::ProbeClock
    pub(super) fn any_alive_at_give_up(&self, send: bool) -> bool {
        self.any_alive(send, self.probe_clock.stale())
    }

    /// Whether any handle that can receive is attached (dead ones count until probed).
    #[inline]
    pub(crate) fn has_receivers(&self) -> bool {
        self.any_alive(false, false)
    }
}
