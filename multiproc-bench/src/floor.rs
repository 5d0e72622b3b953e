//! The floor reference: the least a shared-memory channel between two processes can do. One
//! producer, one consumer, a byte ring of length-prefixed records, two positions on their own
//! cache lines, and a spin-then-futex wait. No lock, no registration, no codec, no checks
//! beyond keeping its own reads inside the mapping.
//!
//! This is what "how close to the hardware" is measured against: multiproc's rings do all of
//! this plus what makes them safe to share with processes that may die or lie.

use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use crate::inplace::{Loaned, Received};
use crate::sys::{Line, Mapping, futex_wait, futex_wake};

/// How long a waiter spins before it sleeps on the futex.
const SPIN: Duration = Duration::from_micros(50);
/// A sleeping waiter looks at the closed flag this often.
const NAP: Duration = Duration::from_millis(50);

#[repr(C)]
struct Header {
    /// Bytes ever published (wrapping).
    tail: Line<AtomicU32>,
    /// Bytes ever consumed (wrapping).
    head: Line<AtomicU32>,
    consumer_sleeping: Line<AtomicU32>,
    producer_sleeping: Line<AtomicU32>,
    closed: Line<AtomicU32>,
}

const HEADER_LEN: usize = 4096;
const _: () = assert!(size_of::<Header>() <= HEADER_LEN);

/// One end of the ring (both ends are the same type; a process uses one side).
pub struct Floor {
    base: NonNull<u8>,
    cap: usize,
    /// This side's own position (tail for the producer, head for the consumer).
    mine: u32,
    buf: Vec<u8>,
    /// Batching (see [`Floor::batched`]): records sent or taken since this side last stored
    /// its position, and the other side's position as last read.
    unpublished: u32,
    other: u32,
    /// The mapping, unmapped when the last end in this process drops.
    _map: Rc<Mapping>,
}

impl Floor {
    /// A ring with `cap` bytes of data (a power of two, at most 1 GiB) for messages of up to
    /// `msg_len` bytes; returns the producer's and the consumer's end.
    ///
    /// # Panics
    /// If `cap` is not a power of two up to 1 GiB with room for two messages.
    pub fn pair(cap: usize, msg_len: usize) -> (Floor, Floor) {
        assert!(cap.is_power_of_two() && cap <= 1 << 30 && msg_len + 8 <= cap / 2);
        let map = Rc::new(Mapping::new(HEADER_LEN + cap));
        let base = map.base();
        let end = || Floor {
            base,
            cap,
            mine: 0,
            buf: vec![0; msg_len],
            unpublished: 0,
            other: 0,
            _map: map.clone(),
        };
        (end(), end())
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a zero-initialised Header (all-zero bytes are valid
        // atomics) and stays mapped while `self` holds `_map`.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the data area starts HEADER_LEN bytes into a mapping of HEADER_LEN + cap.
        unsafe { self.base.as_ptr().add(HEADER_LEN) }
    }

    /// The buffer the next [`Floor::send`] sends.
    pub fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Tells the other side to give up waiting.
    pub fn close(&self) {
        self.header().closed.store(1, Ordering::SeqCst);
        futex_wake(&self.header().tail);
        futex_wake(&self.header().head);
    }

    /// Waits until `ready(word)` holds for the other side's position `word`.
    fn wait(
        &self,
        word: &AtomicU32,
        sleeping: &AtomicU32,
        ready: impl Fn(u32) -> bool,
    ) -> Result<u32, String> {
        let v = word.load(Ordering::Acquire);
        if ready(v) {
            return Ok(v);
        }
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            std::hint::spin_loop();
            let v = word.load(Ordering::Acquire);
            if ready(v) {
                return Ok(v);
            }
            spins += 1;
            if spins % 64 == 0 && start.elapsed() > SPIN {
                break;
            }
        }
        loop {
            sleeping.store(1, Ordering::SeqCst);
            let v = word.load(Ordering::SeqCst);
            if ready(v) {
                sleeping.store(0, Ordering::Relaxed);
                return Ok(v);
            }
            if self.header().closed.load(Ordering::Acquire) != 0 {
                sleeping.store(0, Ordering::Relaxed);
                return Err("the other end closed the floor ring".into());
            }
            if crate::sys::timed_out() {
                sleeping.store(0, Ordering::Relaxed);
                return Err("no message before the watchdog fired".into());
            }
            futex_wait(word, v, NAP);
            sleeping.store(0, Ordering::Relaxed);
            let v = word.load(Ordering::Acquire);
            if ready(v) {
                return Ok(v);
            }
        }
    }

    /// Copies `len` bytes between `buf` and the ring at position `pos`, wrapping at the end.
    fn copy(&self, pos: u32, len: usize, buf: *mut u8, into_ring: bool) {
        let at = pos as usize & (self.cap - 1);
        let first = len.min(self.cap - at);
        let data = self.data();
        // SAFETY: `at + first <= cap` and `len - first <= cap`, so both copies stay inside the
        // data area; `buf` has `len` bytes (callers pass their own buffer of that size). The
        // ring protocol gives this side these bytes until it publishes (an honest peer does not
        // touch them; a dishonest one can only change the bytes copied, not where they go).
        unsafe {
            if into_ring {
                std::ptr::copy_nonoverlapping(buf, data.add(at), first);
                std::ptr::copy_nonoverlapping(buf.add(first), data, len - first);
            } else {
                std::ptr::copy_nonoverlapping(data.add(at), buf, first);
                std::ptr::copy_nonoverlapping(data, buf.add(first), len - first);
            }
        }
    }

    /// The ring's bytes of a record of `len` bytes at position `pos`: one piece, or two when
    /// the record wraps at the end of the ring.
    fn pieces(&self, pos: u32, len: usize) -> [(*mut u8, usize); 2] {
        let at = pos as usize & (self.cap - 1);
        let first = len.min(self.cap - at);
        let data = self.data();
        // SAFETY: `at < cap`, so the first piece starts inside the data area (and ends inside
        // it: `first <= cap - at`); the second starts at the data area's first byte.
        [(unsafe { data.add(at) }, first), (data, len - first)]
    }

    /// Sends one record of `len` bytes written in place: `fill` gets the record's bytes in
    /// the ring (not a buffer of this end), then the record is published as [`Floor::send`]
    /// publishes it. `len` must be a multiple of 8 up to this end's message length.
    pub fn send_in_place(
        &mut self,
        len: usize,
        fill: impl FnOnce(Loaned<'_>),
    ) -> Result<(), String> {
        if len % 8 != 0 || len > self.buf.len() {
            return Err(format!("floor ring: cannot lend {len} bytes"));
        }
        let need = (8 + len) as u32;
        let cap = self.cap as u32;
        let tail = self.mine;
        let h = self.header();
        self.wait(&h.head, &h.producer_sleeping, |head| {
            u64::from(tail.wrapping_sub(head)) + u64::from(need) <= u64::from(cap)
        })?;
        let mut len_word = (len as u64).to_le_bytes();
        self.copy(tail, 8, len_word.as_mut_ptr(), true);
        let [a, b] = self.pieces(tail.wrapping_add(8), len);
        // SAFETY: both pieces lie in the data area (see `pieces`), 8-aligned (records start at
        // multiples of 8 of a page-aligned area and `len` is a multiple of 8), and the ring
        // protocol gives them to this side until the record is published below: an honest
        // consumer does not touch them; a dishonest one can change the bytes, not where they are.
        fill(unsafe { Loaned::new(a, b) });
        let new = tail.wrapping_add(need);
        h.tail.store(new, Ordering::Release);
        fence(Ordering::SeqCst);
        if h.consumer_sleeping.load(Ordering::Relaxed) != 0 {
            futex_wake(&h.tail);
        }
        self.mine = new;
        Ok(())
    }

    /// Receives the next record in place: `read` gets the record's bytes in the ring (not a
    /// copy), and the record is released when it returns, as [`Floor::recv`] releases it.
    pub fn recv_in_place<T>(
        &mut self,
        read: impl FnOnce(Received<'_>) -> Result<T, String>,
    ) -> Result<T, String> {
        let head = self.mine;
        let max = self.buf.len() as u64;
        let h = self.header();
        let tail = self.wait(&h.tail, &h.consumer_sleeping, |tail| tail != head)?;
        let mut len_word = [0u8; 8];
        self.copy(head, 8, len_word.as_mut_ptr(), false);
        let len = u64::from_le_bytes(len_word);
        let avail = u64::from(tail.wrapping_sub(head));
        if len > max || len % 8 != 0 || 8 + len > avail {
            return Err(format!("floor ring: a record of {len} bytes does not fit"));
        }
        let len = len as usize;
        let [a, b] = self.pieces(head.wrapping_add(8), len);
        // SAFETY: both pieces lie in the data area (see `pieces`) and are 8-aligned (checked
        // length, records at multiples of 8); the producer published them (`tail` covers the
        // record, checked above) and an honest one does not write them until they are released
        // below; a dishonest one can change the bytes read, not where they are.
        let r = read(unsafe { Received::new((a.0.cast_const(), a.1), (b.0.cast_const(), b.1)) });
        let new = head.wrapping_add((8 + len) as u32);
        h.head.store(new, Ordering::Release);
        fence(Ordering::SeqCst);
        if h.producer_sleeping.load(Ordering::Relaxed) != 0 {
            futex_wake(&h.head);
        }
        self.mine = new;
        r
    }

    /// Sends the buffer as one record.
    pub fn send(&mut self) -> Result<(), String> {
        let len = self.buf.len();
        let need = (8 + len).next_multiple_of(8) as u32;
        let cap = self.cap as u32;
        let tail = self.mine;
        let buf = self.buf.as_mut_ptr();
        let h = self.header();
        // (In u64: a peer that published a head beyond our tail must not overflow this.)
        self.wait(&h.head, &h.producer_sleeping, |head| {
            u64::from(tail.wrapping_sub(head)) + u64::from(need) <= u64::from(cap)
        })?;
        let mut len_word = (len as u64).to_le_bytes();
        self.copy(tail, 8, len_word.as_mut_ptr(), true);
        self.copy(tail.wrapping_add(8), len, buf, true);
        let new = tail.wrapping_add(need);
        h.tail.store(new, Ordering::Release);
        fence(Ordering::SeqCst);
        if h.consumer_sleeping.load(Ordering::Relaxed) != 0 {
            futex_wake(&h.tail);
        }
        self.mine = new;
        Ok(())
    }

    /// Receives the next record into this end's buffer and returns it.
    pub fn recv(&mut self) -> Result<&[u8], String> {
        let head = self.mine;
        let buf = self.buf.as_mut_ptr();
        let max = self.buf.len() as u64;
        let h = self.header();
        let tail = self.wait(&h.tail, &h.consumer_sleeping, |tail| tail != head)?;
        let mut len_word = [0u8; 8];
        self.copy(head, 8, len_word.as_mut_ptr(), false);
        let len = u64::from_le_bytes(len_word);
        let avail = u64::from(tail.wrapping_sub(head));
        if len > max || 8 + len > avail {
            return Err(format!("floor ring: a record of {len} bytes does not fit"));
        }
        let len = len as usize;
        self.copy(head.wrapping_add(8), len, buf, false);
        let need = (8 + len).next_multiple_of(8) as u32;
        let new = head.wrapping_add(need);
        h.head.store(new, Ordering::Release);
        fence(Ordering::SeqCst);
        if h.producer_sleeping.load(Ordering::Relaxed) != 0 {
            futex_wake(&h.head);
        }
        self.mine = new;
        Ok(&self.buf[..len])
    }
}

/// The floor ring with positions published once per `batch` records, as `put_many` and
/// `get_many` do: the floor of batching. The producer stores `tail` after every `batch`
/// records (or when it must wait for room, or on `flush`); the consumer reads `tail` only when
/// it has taken every record it saw, and stores `head` after every `batch` records (or before it
/// waits). Each record is still copied in from the sender's buffer and out into the
/// receiver's, one at a time.
pub struct FloorBatch {
    ring: Floor,
    batch: u32,
}

impl FloorBatch {
    /// As [`Floor::pair`], publishing once per `batch` records.
    pub fn pair(cap: usize, msg_len: usize, batch: u32) -> (FloorBatch, FloorBatch) {
        let (tx, rx) = Floor::pair(cap, msg_len);
        (
            FloorBatch { ring: tx, batch },
            FloorBatch { ring: rx, batch },
        )
    }

    /// The buffer the next [`FloorBatch::send`] sends.
    pub fn buf(&mut self) -> &mut [u8] {
        &mut self.ring.buf
    }

    /// Tells the other side to give up waiting.
    pub fn close(&self) {
        self.ring.close();
    }

    /// Stores the producer's `tail` if records are waiting for it, and wakes the consumer.
    pub fn flush(&mut self) {
        let r = &mut self.ring;
        if r.unpublished == 0 {
            return;
        }
        r.unpublished = 0;
        let h = r.header();
        h.tail.store(r.mine, Ordering::Release);
        fence(Ordering::SeqCst);
        if h.consumer_sleeping.load(Ordering::Relaxed) != 0 {
            futex_wake(&h.tail);
        }
    }

    /// Stores the consumer's `head` if records were taken since, and wakes the producer.
    fn free(&mut self) {
        let r = &mut self.ring;
        if r.unpublished == 0 {
            return;
        }
        r.unpublished = 0;
        let h = r.header();
        h.head.store(r.mine, Ordering::Release);
        fence(Ordering::SeqCst);
        if h.producer_sleeping.load(Ordering::Relaxed) != 0 {
            futex_wake(&h.head);
        }
    }

    /// Writes the buffer as one record; publishes every `batch` records.
    pub fn send(&mut self) -> Result<(), String> {
        let len = self.ring.buf.len();
        let need = (8 + len).next_multiple_of(8) as u32;
        let cap = self.ring.cap as u32;
        let tail = self.ring.mine;
        let fits =
            |head: u32| u64::from(tail.wrapping_sub(head)) + u64::from(need) <= u64::from(cap);
        if !fits(self.ring.other) {
            self.flush();
            let r = &self.ring;
            let h = r.header();
            self.ring.other = r.wait(&h.head, &h.producer_sleeping, fits)?;
        }
        let r = &mut self.ring;
        let buf = r.buf.as_mut_ptr();
        let mut len_word = (len as u64).to_le_bytes();
        r.copy(tail, 8, len_word.as_mut_ptr(), true);
        r.copy(tail.wrapping_add(8), len, buf, true);
        r.mine = tail.wrapping_add(need);
        r.unpublished += 1;
        if r.unpublished >= self.batch {
            self.flush();
        }
        Ok(())
    }

    /// Takes the next record into this end's buffer and returns it; frees every `batch`.
    pub fn recv(&mut self) -> Result<&[u8], String> {
        let head = self.ring.mine;
        if self.ring.other == head {
            self.free();
            let r = &self.ring;
            let h = r.header();
            self.ring.other = r.wait(&h.tail, &h.consumer_sleeping, |tail| tail != head)?;
        }
        let r = &mut self.ring;
        let tail = r.other;
        let buf = r.buf.as_mut_ptr();
        let max = r.buf.len() as u64;
        let mut len_word = [0u8; 8];
        r.copy(head, 8, len_word.as_mut_ptr(), false);
        let len = u64::from_le_bytes(len_word);
        let avail = u64::from(tail.wrapping_sub(head));
        if len > max || 8 + len > avail {
            return Err(format!("floor ring: a record of {len} bytes does not fit"));
        }
        let len = len as usize;
        r.copy(head.wrapping_add(8), len, buf, false);
        let need = (8 + len).next_multiple_of(8) as u32;
        r.mine = head.wrapping_add(need);
        r.unpublished += 1;
        if r.unpublished >= self.batch {
            self.free();
        }
        Ok(&self.ring.buf[..len])
    }
}
