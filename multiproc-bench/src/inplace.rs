//! Messages written and read in place: the loan rows. The producer writes every byte of each
//! message straight into the bytes the transport lends it (no buffer of its own, no copy), and
//! the consumer reads and checks every byte where the transport delivered it.
//!
//! Layout of a message of `len` bytes (a multiple of 8): word `w` (8 bytes, little-endian) is
//! `seq + w * G` (wrapping, `G` the golden-ratio constant), so word 0 is the sequence number and
//! every word of a message differs from the same word of every other message: a lost,
//! duplicated, reordered, stale, misplaced or corrupted word shows. Writing the pattern is a
//! plain vectorisable loop of stores, checking it a vectorisable loop of loads; every byte is
//! checked whatever `--check` says.
//!
//! Mechanisms: `floor-loan`, the floor ring ([`crate::floor`]) with its records written and
//! read in place (the hardware floor of "write in place, read in place" across two cores), and
//! with the cargo feature `iceoryx2`, `iceoryx2-loan` (module `iceoryx`).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::floor::Floor;
use crate::mech::Mech;
use crate::run::{Sample, run_delay_ns, warm};
use crate::sys::{Placement, Shm, Team, fail_with};

/// The step between consecutive words of a message's pattern.
const G: u64 = 0x9e37_79b9_7f4a_7c15;

/// Bytes a transport lends this process to write one message into: one piece, or two when the
/// message wraps at the end of a ring.
pub struct Loaned<'a> {
    pieces: [(*mut u8, usize); 2],
    _lent: PhantomData<&'a mut [u8]>,
}

impl Loaned<'_> {
    /// Lends the `a.1` bytes at `a.0` followed by the `b.1` bytes at `b.0`.
    ///
    /// # Safety
    /// Each piece must be valid for writes of its length for the lifetime of the value, its
    /// length a multiple of 8, and no other access to it may happen in this process meanwhile;
    /// another process may write it only if it is dishonest (that may change the bytes, never
    /// where they are).
    pub unsafe fn new(a: (*mut u8, usize), b: (*mut u8, usize)) -> Self {
        Self {
            pieces: [a, b],
            _lent: PhantomData,
        }
    }

    /// The message length in bytes.
    pub fn len(&self) -> usize {
        self.pieces[0].1 + self.pieces[1].1
    }

    /// Whether no byte is lent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes message `seq`: every word of every piece.
    pub fn fill(&self, seq: u64) {
        self.fill_from(seq, 0);
    }

    /// Writes words `first..` of message `seq` (the lent bytes are that part of the message).
    pub fn fill_from(&self, seq: u64, first: u64) {
        let mut w = first;
        for &(p, len) in &self.pieces {
            let words = len / 8;
            let mut line = Line::at(seq, w);
            for i in 0..words / LANES {
                // SAFETY: `(i + 1) * 64 <= len`, and the piece is valid for writes of `len`
                // bytes (the contract of `new`).
                unsafe { line.store(p.add(i * 64)) };
                line.advance();
            }
            let lanes = lanes(seq, w + (words / LANES * LANES) as u64);
            let p = p.cast::<u64>();
            for (k, &v) in lanes.iter().enumerate().take(words % LANES) {
                // SAFETY: word `words / LANES * LANES + k < words` lies in the piece (as above).
                unsafe { p.add(words / LANES * LANES + k).write_unaligned(v.to_le()) };
            }
            w += words as u64;
        }
    }
}

/// Words written or checked at once: a 64-byte cache line, in independent lanes the compiler
/// turns into vector operations.
const LANES: usize = 8;
/// How much each lane's word grows from one line to the next.
const STEP: u64 = G.wrapping_mul(LANES as u64);

/// The pattern's next 64-byte line to write or check, kept in vector registers. Every in-place
/// row writes and checks through it, one line at a time, so they all run the same code (left
/// to itself, the optimiser vectorises each row's loop its own way, and the rows' speeds then
/// differ by as much as 2x for the same memory traffic).
#[derive(Clone, Copy)]
struct Line(
    #[cfg(target_arch = "x86_64")] [std::arch::x86_64::__m128i; 4],
    #[cfg(not(target_arch = "x86_64"))] [u64; LANES],
);

/// Differences seen by [`Line::check`] (all zero: none).
#[derive(Clone, Copy)]
struct Diff(
    #[cfg(target_arch = "x86_64")] std::arch::x86_64::__m128i,
    #[cfg(not(target_arch = "x86_64"))] u64,
);

#[cfg(target_arch = "x86_64")]
impl Line {
    /// Words `w .. w + LANES` of message `seq`.
    fn at(seq: u64, w: u64) -> Self {
        let l = lanes(seq, w);
        // SAFETY: `[u64; 8]` and `[__m128i; 4]` have the same size, and every bit pattern is
        // valid for both (x86_64 is little-endian: the words are as stored).
        Self(unsafe { std::mem::transmute::<[u64; LANES], [std::arch::x86_64::__m128i; 4]>(l) })
    }

    /// Moves on to the next line.
    #[inline(always)]
    fn advance(&mut self) {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of every x86_64 CPU (the target's baseline).
        let step = unsafe { _mm_set1_epi64x(STEP as i64) };
        for v in &mut self.0 {
            // SAFETY: as above.
            *v = unsafe { _mm_add_epi64(*v, step) };
        }
    }

    /// The line's words, as stored.
    #[inline(always)]
    fn words(&self) -> [u64; LANES] {
        // SAFETY: as in `at`.
        unsafe { std::mem::transmute::<[std::arch::x86_64::__m128i; 4], [u64; LANES]>(self.0) }
    }

    /// Stores the line at `p`.
    ///
    /// # Safety
    /// `p` is valid for writes of 64 bytes.
    #[inline(always)]
    unsafe fn store(&self, p: *mut u8) {
        use std::arch::x86_64::*;
        for (k, v) in self.0.iter().enumerate() {
            // SAFETY: bytes `16 k .. 16 k + 16 <= 64` of the caller's range; unaligned store.
            unsafe { _mm_storeu_si128(p.add(16 * k).cast(), *v) };
        }
    }

    /// Adds how the 64 bytes at `p` differ from the line to `diff`.
    ///
    /// # Safety
    /// `p` is valid for reads of 64 bytes.
    #[inline(always)]
    unsafe fn check(&self, p: *const u8, diff: &mut Diff) {
        use std::arch::x86_64::*;
        for (k, v) in self.0.iter().enumerate() {
            // SAFETY: bytes `16 k .. 16 k + 16 <= 64` of the caller's range; unaligned load.
            let got = unsafe { _mm_loadu_si128(p.add(16 * k).cast()) };
            // SAFETY: SSE2 is part of every x86_64 CPU (the target's baseline).
            let x = unsafe { _mm_xor_si128(got, *v) };
            // SAFETY: as above.
            diff.0 = unsafe { _mm_or_si128(diff.0, x) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Diff {
    fn none() -> Self {
        // SAFETY: SSE2 is part of every x86_64 CPU (the target's baseline).
        Self(unsafe { std::arch::x86_64::_mm_setzero_si128() })
    }

    /// The differences folded into one word (0: none).
    fn folded(self) -> u64 {
        // SAFETY: as in `Line::at`, for one vector and two words.
        let [a, b] = unsafe { std::mem::transmute::<std::arch::x86_64::__m128i, [u64; 2]>(self.0) };
        a | b
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Line {
    fn at(seq: u64, w: u64) -> Self {
        Self(lanes(seq, w).map(u64::to_le))
    }

    #[inline(always)]
    fn advance(&mut self) {
        self.0 = self
            .0
            .map(|x| u64::to_le(u64::from_le(x).wrapping_add(STEP)));
    }

    #[inline(always)]
    fn words(&self) -> [u64; LANES] {
        self.0
    }

    /// # Safety
    /// `p` is valid for writes of 64 bytes.
    #[inline(always)]
    unsafe fn store(&self, p: *mut u8) {
        // SAFETY: the caller's 64 bytes; unaligned write.
        unsafe { p.cast::<[u64; LANES]>().write_unaligned(self.0) };
    }

    /// # Safety
    /// `p` is valid for reads of 64 bytes.
    #[inline(always)]
    unsafe fn check(&self, p: *const u8, diff: &mut Diff) {
        for k in 0..LANES {
            // SAFETY: word `k` of the caller's 64 bytes; unaligned read.
            diff.0 |= unsafe { p.cast::<u64>().add(k).read_unaligned() } ^ self.0[k];
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Diff {
    fn none() -> Self {
        Self(0)
    }

    fn folded(self) -> u64 {
        self.0
    }
}

/// Words `w .. w + LANES` of message `seq`.
fn lanes(seq: u64, w: u64) -> [u64; LANES] {
    std::array::from_fn(|k| seq.wrapping_add(w.wrapping_add(k as u64).wrapping_mul(G)))
}

/// Bytes a transport delivered one message in, lent to this process to read in place.
pub struct Received<'a> {
    pieces: [(*const u8, usize); 2],
    _lent: PhantomData<&'a [u8]>,
}

impl Received<'_> {
    /// Lends the `a.1` bytes at `a.0` followed by the `b.1` bytes at `b.0`, for reading.
    ///
    /// # Safety
    /// Each piece must be valid for reads of its length for the lifetime of the value, its
    /// length a multiple of 8; no process may write it meanwhile unless it is dishonest (that
    /// may change the bytes read, never where they are).
    pub unsafe fn new(a: (*const u8, usize), b: (*const u8, usize)) -> Self {
        Self {
            pieces: [a, b],
            _lent: PhantomData,
        }
    }

    /// The message length in bytes.
    pub fn len(&self) -> usize {
        self.pieces[0].1 + self.pieces[1].1
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn word(&self, mut w: usize) -> Option<u64> {
        for &(p, len) in &self.pieces {
            if w < len / 8 {
                // SAFETY: `w * 8 + 8 <= len`, inside a piece valid for reads (see `new`).
                return Some(u64::from_le(unsafe {
                    p.cast::<u64>().add(w).read_unaligned()
                }));
            }
            w -= len / 8;
        }
        None
    }

    /// Checks that this is message `seq` of `len` bytes, reading every byte in place.
    pub fn check(&self, len: usize, seq: u64) -> Result<(), String> {
        if self.len() != len {
            return Err(format!(
                "a message of {} bytes arrived where {len} were sent",
                self.len()
            ));
        }
        let head = self.word(0).unwrap_or(0);
        if head != seq {
            return Err(format!(
                "message {head} arrived where {seq} was expected (lost, duplicated or reordered)"
            ));
        }
        let bad = self.mismatch_from(seq, 0);
        if bad != 0 {
            let at = (0..len / 8)
                .find(|&w| self.word(w) != Some(seq.wrapping_add((w as u64).wrapping_mul(G))))
                .unwrap_or(0);
            return Err(format!(
                "message {seq}: bytes {}.. are stale, misplaced or corrupt",
                at * 8
            ));
        }
        Ok(())
    }
    /// Reads every word in place against words `first..` of message `seq` (the lent bytes
    /// are that part of the message): the OR of the differences, 0 if every word is right.
    pub fn mismatch_from(&self, seq: u64, first: u64) -> u64 {
        let mut diff = Diff::none();
        let mut bad = 0;
        let mut w = first;
        for &(p, len) in &self.pieces {
            let words = len / 8;
            let mut line = Line::at(seq, w);
            for i in 0..words / LANES {
                // SAFETY: `(i + 1) * 64 <= len`, in a piece valid for reads (see `new`).
                unsafe { line.check(p.add(i * 64), &mut diff) };
                line.advance();
            }
            let rest = lanes(seq, w + (words / LANES * LANES) as u64);
            let p = p.cast::<u64>();
            for (k, &v) in rest.iter().enumerate().take(words % LANES) {
                // SAFETY: word `words / LANES * LANES + k < words` lies in the piece (as above).
                bad |=
                    u64::from_le(unsafe { p.add(words / LANES * LANES + k).read_unaligned() }) ^ v;
            }
            w += words as u64;
        }
        bad | diff.folded()
    }
}

/// Sends messages written in place.
pub trait LoanTx {
    /// Registers this end in the calling process (the producer's child, after `fork`).
    fn attach(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Borrows room for a message of `len` bytes, lets `fill` write it, and sends it.
    fn send_with(&mut self, len: usize, fill: &mut dyn FnMut(Loaned<'_>)) -> Result<(), String>;
    /// Sends message `seq` of `len` bytes, written in place ([`Loaned::fill`] unless the end
    /// writes it its own way).
    fn send_seq(&mut self, len: usize, seq: u64) -> Result<(), String> {
        self.send_with(len, &mut |lent| lent.fill(seq))
    }
    /// Called in the producer's child after its last message, before it exits (without
    /// running destructors): tears down what [`LoanTx::attach`] set up, leaving every message
    /// sent for the consumer.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Makes the other side fail instead of waiting for this one.
    fn abort(&self) {}
}

/// Receives messages read in place.
pub trait LoanRx {
    /// Waits for the next message, lends it to `read`, and releases it.
    fn recv_with(
        &mut self,
        read: &mut dyn FnMut(Received<'_>) -> Result<(), String>,
    ) -> Result<(), String>;
    /// Waits for the next message, checks that it is message `seq` of `len` bytes, reading
    /// every byte in place ([`Received::check`] unless the end reads it its own way), and
    /// releases it.
    fn recv_checked(&mut self, len: usize, seq: u64) -> Result<(), String> {
        self.recv_with(&mut |msg| msg.check(len, seq))
    }
    /// Makes the other side fail instead of waiting for this one.
    fn abort(&self) {}
}

impl LoanTx for Floor {
    fn send_with(&mut self, len: usize, fill: &mut dyn FnMut(Loaned<'_>)) -> Result<(), String> {
        self.send_in_place(len, fill)
    }
    fn abort(&self) {
        self.close();
    }
}

impl LoanRx for Floor {
    fn recv_with(
        &mut self,
        read: &mut dyn FnMut(Received<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        self.recv_in_place(read)
    }
    fn abort(&self) {
        self.close();
    }
}

/// A multiproc queue's producer end, writing each message in place through a loan: through
/// the safe API (`fill_blocks`, a cache line at a time) or, with `raw`, through the loan's
/// raw pointer.
pub struct QueueLoanTx {
    tx: multiproc::Sender<u8, multiproc::Plain>,
    raw: bool,
}

/// A multiproc queue's consumer end, checking each message in place through a loan (the
/// safe API's `for_each_block`, a cache line at a time, or with `raw` the loan's raw
/// pointer).
pub struct QueueLoanRx {
    rx: multiproc::Receiver<u8, multiproc::Plain>,
    raw: bool,
}

impl LoanTx for QueueLoanTx {
    fn send_with(&mut self, len: usize, fill: &mut dyn FnMut(Loaned<'_>)) -> Result<(), String> {
        let mut loan = self
            .tx
            .loan_bytes(len)
            .map_err(|e| format!("Sender::loan_bytes: {e}"))?;
        // SAFETY: the loan lends `len` bytes at this pointer until it is published, and the
        // queue is this benchmark's own: no other process writes them meanwhile.
        let p = unsafe { loan.as_mut_ptr() };
        // SAFETY: as above; `len` is a multiple of 8 (see `unsupported`).
        fill(unsafe { Loaned::new((p, len), (std::ptr::null_mut(), 0)) });
        loan.publish();
        Ok(())
    }

    fn send_seq(&mut self, len: usize, seq: u64) -> Result<(), String> {
        if self.raw {
            return self.send_with(len, &mut |lent| lent.fill(seq));
        }
        let mut loan = self
            .tx
            .loan_bytes(len)
            .map_err(|e| format!("Sender::loan_bytes: {e}"))?;
        // Blocks come in order: each is the one before plus a step per lane.
        let mut line = Line::at(seq, 0);
        loan.fill_blocks(|_| {
            let words = line.words();
            line.advance();
            words
        });
        loan.publish();
        Ok(())
    }
}

impl LoanRx for QueueLoanRx {
    fn recv_with(
        &mut self,
        read: &mut dyn FnMut(Received<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        let loan = self
            .rx
            .get_loan()
            .map_err(|e| format!("Receiver::get_loan: {e}"))?;
        let len = loan.len();
        // SAFETY: the loan lends its `len` bytes at this pointer until it is released, and the
        // queue is this benchmark's own: no other process writes them meanwhile.
        let p = unsafe { loan.as_ptr() };
        // SAFETY: as above; only whole words are read (`check` compares the length first).
        read(unsafe { Received::new((p, len / 8 * 8), (std::ptr::null(), 0)) })?;
        loan.release();
        Ok(())
    }

    fn recv_checked(&mut self, len: usize, seq: u64) -> Result<(), String> {
        if self.raw {
            return self.recv_with(&mut |msg| msg.check(len, seq));
        }
        let loan = self
            .rx
            .get_loan()
            .map_err(|e| format!("Receiver::get_loan: {e}"))?;
        if loan.len() != len {
            return Err(format!(
                "a message of {} bytes arrived where {len} were sent",
                loan.len()
            ));
        }
        // Blocks come in order: each is the one before plus a step per lane.
        let mut line = Line::at(seq, 0);
        let mut diff = Diff::none();
        let mut tail = 0;
        loan.for_each_block(|offset, block| {
            if len - offset >= 64 {
                // SAFETY: `block` is 64 bytes of this process's own memory.
                unsafe { line.check(block.as_ptr().cast(), &mut diff) };
            } else {
                // The last, partial line: only its whole words are the message's (the rest of
                // the block is padding).
                for (got, want) in block.iter().zip(line.words()).take((len - offset) / 8) {
                    tail |= got ^ want;
                }
            }
            line.advance();
        });
        let bad = diff.folded() | tail;
        if bad != 0 {
            return Err(format!(
                "message {seq}: lost, duplicated, reordered, or bytes stale, misplaced or corrupt"
            ));
        }
        loan.release();
        Ok(())
    }
}

/// Why `mech` cannot carry in-place messages of `size` bytes, if it cannot.
pub fn unsupported(size: usize) -> Option<String> {
    (size % 8 != 0 || size == 0)
        .then(|| format!("in-place messages are whole 8-byte words, not {size} bytes"))
}

/// The two ends of an in-place channel for messages of `size` bytes, if `mech` is written and
/// read in place: (the producer's, the consumer's). The consumer's end is made here, in the
/// parent; the producer's may finish its set-up in the child ([`LoanTx::attach`]).
#[allow(clippy::type_complexity)]
pub fn channel(
    mech: Mech,
    size: usize,
) -> Option<Result<(Box<dyn LoanTx>, Box<dyn LoanRx>), String>> {
    match mech {
        Mech::QueueLoan | Mech::QueueLoanUnsafe => {
            Some(queue_loans(size, mech == Mech::QueueLoanUnsafe))
        }
        Mech::FloorLoan => {
            let (tx, rx) = Floor::pair(crate::mech::ring_bytes(size), size);
            Some(Ok((Box::new(tx), Box::new(rx))))
        }
        #[cfg(feature = "iceoryx2")]
        Mech::Iceoryx2Loan => Some(crate::iceoryx::pair(size).map(
            |(tx, rx)| -> (Box<dyn LoanTx>, Box<dyn LoanRx>) { (Box::new(tx), Box::new(rx)) },
        )),
        _ => None,
    }
}

/// A multiproc queue of the ring size the other rows get, split into loaning ends.
#[allow(clippy::type_complexity)]
fn queue_loans(size: usize, raw: bool) -> Result<(Box<dyn LoanTx>, Box<dyn LoanRx>), String> {
    let (tx, rx) = multiproc::Queue::<u8>::builder()
        .codec::<multiproc::Plain>()
        .max_bytes(crate::mech::ring_bytes(size))
        .create()
        .and_then(multiproc::Queue::split)
        .map_err(|e| e.to_string())?;
    Ok((
        Box::new(QueueLoanTx { tx, raw }),
        Box::new(QueueLoanRx { rx, raw }),
    ))
}

/// One producer child sends `total` messages of `size` bytes (after the warm-up) written in
/// place; this process receives and checks every byte of each in place. `None` if `mech` is
/// not an in-place mechanism.
pub fn one_way(
    mech: Mech,
    size: usize,
    total: u64,
    placement: Placement,
) -> Option<Result<Sample, String>> {
    let ends = channel(mech, size)?;
    Some(ends.and_then(|(tx, rx)| measure(tx, rx, size, total, placement)))
}

fn measure(
    tx: Box<dyn LoanTx>,
    rx: Box<dyn LoanRx>,
    size: usize,
    total: u64,
    placement: Placement,
) -> Result<Sample, String> {
    if let Some(why) = unsupported(size) {
        return Err(why);
    }
    let started = Instant::now();
    // Four laps of the ring before the clock starts: a transport whose pool holds more
    // messages than the ring (iceoryx2's holds the subscriber's buffer, the loans and more)
    // also runs its timed messages on memory already touched.
    let warm = 4 * warm(size);
    let done = Shm::new(AtomicU32::new(0));
    let tx = std::cell::RefCell::new(Some(tx));
    let rx = std::cell::RefCell::new(Some(rx));
    let team = Team::spawn(1, placement, |_, start| {
        // The consumer's end belongs to the parent: let go of this copy (an end inherited
        // across `fork` knows not to tear down what the parent still uses).
        drop(rx.borrow_mut().take());
        let mut tx = tx.borrow_mut();
        let Some(tx) = tx.as_mut() else {
            return Err("no producer end".into());
        };
        tx.attach()?;
        start.ready_and_wait()?;
        let delay0 = run_delay_ns();
        let r = (|| -> Result<(), String> {
            for seq in 0..warm + total {
                tx.send_seq(size, seq)?;
            }
            Ok(())
        })();
        start.report_waited(run_delay_ns().saturating_sub(delay0));
        if r.is_err() {
            tx.abort();
        }
        r?;
        // Some transports drop what is still queued when the producer leaves: stay until the
        // consumer has taken every message.
        let since = Instant::now();
        while done.load(Ordering::Acquire) == 0 {
            if crate::sys::timed_out() || since.elapsed() > Duration::from_secs(60) {
                return Err("the consumer never finished".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        tx.finish()
    });
    let mut team = team?;
    let ready = team.wait_ready();
    drop(tx.borrow_mut().take());
    if let Err(e) = ready {
        return Err(fail_with(team, e));
    }
    let Some(mut rx) = rx.borrow_mut().take() else {
        return Err(fail_with(team, "no consumer end".into()));
    };
    let parent = |rx: &mut dyn LoanRx| -> Result<(Duration, u64), String> {
        team.go();
        let mut take = |seq: u64| rx.recv_checked(size, seq);
        for seq in 0..warm {
            take(seq)?;
        }
        let delay0 = run_delay_ns();
        let t = Instant::now();
        for seq in warm..warm + total {
            take(seq)?;
        }
        let elapsed = t.elapsed();
        let waited = run_delay_ns().saturating_sub(delay0);
        done.store(1, Ordering::Release);
        Ok((elapsed, waited))
    };
    let (elapsed, waited) = match parent(&mut *rx) {
        Ok(e) => e,
        Err(e) => {
            rx.abort();
            return Err(fail_with(team, e));
        }
    };
    let child_waited = team.join()?;
    Ok(Sample {
        ns_per_unit: elapsed.as_nanos() as f64 / total as f64,
        wall_per_unit: started.elapsed().as_nanos() as f64 / total as f64,
        verified: warm + total,
        waited_ns: waited.max(child_waited) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize, seq: u64, cut: usize) -> Vec<u64> {
        let mut words = vec![0u64; len / 8];
        let p = words.as_mut_ptr().cast::<u8>();
        // SAFETY: both pieces lie in `words` (cut <= len), which nothing else touches.
        let lent = unsafe { Loaned::new((p, cut), (p.add(cut), len - cut)) };
        lent.fill(seq);
        words
    }

    fn check(words: &[u64], len: usize, seq: u64, cut: usize) -> Result<(), String> {
        let p = words.as_ptr().cast::<u8>();
        // SAFETY: both pieces lie in `words` (cut <= len), read only.
        let got = unsafe { Received::new((p, cut), (p.add(cut), len - cut)) };
        got.check(len, seq)
    }

    #[test]
    fn in_place_messages_pass_whole_or_wrapped() {
        for (len, cut) in [(8, 8), (64, 64), (64, 16), (1 << 20, 4096), (1 << 20, 0)] {
            let w = message(len, 7, cut);
            check(&w, len, 7, cut).unwrap();
            // A message split elsewhere has the same bytes.
            check(&w, len, 7, len / 2 / 8 * 8).unwrap();
            assert_eq!(w[0], 7);
        }
    }

    #[test]
    fn in_place_checks_catch_every_fault() {
        let len = 4096;
        let w = message(len, 3, 1024);
        assert!(
            check(&w, len, 4, 1024)
                .unwrap_err()
                .contains("arrived where")
        );
        let p = w.as_ptr().cast::<u8>();
        // SAFETY: both pieces lie in `w`, read only.
        let short = unsafe { Received::new((p, 1024), (p.add(1024), len - 8 - 1024)) };
        assert!(short.check(len, 3).unwrap_err().contains("4088 bytes"));
        let mut bad = w.clone();
        bad[300] ^= 1 << 40;
        assert!(
            check(&bad, len, 3, 1024)
                .unwrap_err()
                .contains("bytes 2400..")
        );
        // Half of the previous message left in place.
        let mut stale = w.clone();
        stale[256..].copy_from_slice(&message(len, 2, 1024)[256..]);
        assert!(
            check(&stale, len, 3, 1024)
                .unwrap_err()
                .contains("bytes 2048..")
        );
        // Two words swapped.
        let mut swapped = w;
        swapped.swap(10, 11);
        assert!(check(&swapped, len, 3, 0).is_err());
    }
}
