//! Zero-copy loans: a producer writes a message in place in the ring and publishes it; a
//! consumer reads a message in place and releases it.
//!
//! [`WriteLoan`] comes from `loan_bytes` (any queue, raw bytes of a given length) or `loan`
//! (a [`Plain`] queue, one `T`); [`ReadLoan`] from `get_loan` (`recv_loan` on a
//! [`Connection`]). A write loan reserves room for one message and holds the queue's put side
//! until it is published or dropped; a dropped (or panicked-through) write loan leaves nothing
//! in the queue. A read loan holds the message at the head and the queue's get side; dropping
//! it, or [`release`](ReadLoan::release), consumes the message.
//!
//! # Trust boundary
//!
//! The loaned bytes live in shared memory that every process mapping the queue can write. A
//! cooperating process never touches them during the loan, but a hostile or buggy one can change
//! them at any moment, also while a reader holds the loan: two reads may differ, a checksum
//! computed over them may fail, a value read may be garbage. It can never make the safe API
//! read or write outside the loan, panic, or hang a timed call. So the safe API reaches the bytes
//! only through copies ([`read_at`](ReadLoan::read_at), [`write_at`](WriteLoan::write_at), the
//! chunked [`for_each_chunk`](ReadLoan::for_each_chunk) and [`fill_with`](WriteLoan::fill_with),
//! and, fastest, a cache line at a time by value: [`fill_blocks`](WriteLoan::fill_blocks) and
//! [`for_each_block`](ReadLoan::for_each_block)) or atomic words
//! ([`as_words`](ReadLoan::as_words)), never through `&[u8]`: a reference
//! promises bytes that do not change, which shared memory cannot keep. The raw pointers
//! ([`as_ptr`](ReadLoan::as_ptr), [`as_mut_ptr`](WriteLoan::as_mut_ptr)) are the escape hatch
//! for callers who trust every process that maps the queue: forming a reference over them is
//! sound only if no other process writes the range meanwhile.
//!
//! # Holding a loan
//!
//! A loan holds its side's lock, owned by the calling thread: loans are neither `Send` nor
//! `Sync`, and while one lives, the other producers (write loan) or consumers (read loan)
//! of the queue wait, in every process. Keep loans short. A put (or get) on the same queue from
//! the thread that holds a write (or read) loan waits for that loan: a blocking one never
//! returns, a timed one times out. A leaked loan (`mem::forget`) stalls its side like a peer that
//! hangs: the timed calls of others time out, and [`shutdown`](crate::Queue::shutdown) waits for
//! the put side. A process killed holding a loan hands its side to the next taker: an
//! unpublished write loan leaves nothing; a read loan leaves its message at the head, for the
//! next consumer.
#![allow(unsafe_code)]
//! # Safety
//! The only unsafe code here is the declaration of `as_ptr` and `as_mut_ptr`, whose callers
//! take on the trust argument above; they forward to the ring's loans, which keep the
//! pointers inside the mapping.

use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::codec::{Codec, DefaultCodec, Plain};
use super::pipe::Connection;
use super::queue::{
    Endpoint, Failed, JoinableQueue, Queue, Receiver, Sender, after, get_failed, now, put_failed,
};
use super::ring::{GetFail, GetLoan, PutFail, PutLoan, read_at};
use crate::error::{
    DecodeError, GetError, GetTimeoutError, OutOfBounds, PutError, PutTimeoutError, TryGetError,
    TryPutError,
};

/// Bytes per chunk of [`WriteLoan::fill_with`] and [`ReadLoan::for_each_chunk`]: small enough to
/// stay in the L1 cache next to the line being copied.
const CHUNK: usize = 8 << 10;
/// Loans up to this long get a chunk buffer of this size (cheaper to clear).
const SMALL_CHUNK: usize = 256;

/// Room for one message in a queue, written in place and sent with [`publish`](Self::publish).
///
/// `T` is `[u8]` for a loan of bytes (`loan_bytes`), or the message type of a [`Plain`] queue
/// (`loan`), which adds [`write`](Self::write). The bytes start out holding whatever the ring held
/// there before; write every byte the receiver will read. Nothing is visible to receivers until
/// `publish`; a loan dropped unpublished (also by a panic) leaves nothing in the queue.
///
/// # Trust boundary
///
/// The loaned bytes live in shared memory that every process mapping the queue can write. A
/// cooperating process never touches them during the loan; a hostile or buggy one can change
/// them at any moment, before or after this loan writes them: the receiver may then read
/// garbage. It can never make the safe API write or read outside the loan, panic, or hang a
/// timed call. So the safe API reaches the bytes only through copies
/// ([`write_at`](Self::write_at), [`fill_with`](Self::fill_with),
/// [`fill_blocks`](Self::fill_blocks), [`write`](Self::write)) or
/// atomic words ([`as_words`](Self::as_words)), never through a `&mut [u8]`, which would
/// promise that nobody else writes them. [`as_mut_ptr`](Self::as_mut_ptr) is the unsafe escape
/// hatch for callers who trust every process that maps the queue.
///
/// # Holding a loan
///
/// The loan holds the queue's put side, owned by the calling thread: it is neither `Send` nor
/// `Sync`, and while it lives the other producers of the queue wait, in every process; keep it
/// short. A put or write loan on the same queue from the thread that holds it waits for it (a
/// blocking one never returns). A leaked loan (`mem::forget`) stalls the producers like a hung
/// peer: their timed calls time out, and [`shutdown`](crate::Queue::shutdown) waits. A
/// process killed holding a loan leaves nothing: the next producer takes the put side over.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc::{Plain, Queue};
/// let q = Queue::<u8, Plain>::with_codec(4)?;
/// let mut loan = q.loan_bytes(10_000)?;
/// loan.fill_with(|offset, chunk| {
///     for (i, b) in chunk.iter_mut().enumerate() {
///         *b = (offset + i) as u8;
///     }
/// });
/// loan.publish();
/// let msg = q.get_loan()?;
/// assert_eq!(msg.len(), 10_000);
/// let mut b = [0u8; 1];
/// msg.read_at(9_999, &mut b)?;
/// assert_eq!(b[0], 9_999u32 as u8);
/// msg.release();
/// # Ok(()) }
/// ```
#[must_use = "a write loan dropped unpublished sends nothing"]
pub struct WriteLoan<'a, T: ?Sized = [u8]> {
    inner: PutLoan<'a>,
    _type: PhantomData<fn(&T)>,
}

/// A message at the head of a queue, read in place; consumed when the loan is dropped or
/// [`release`](Self::release)d.
///
/// `T` and `C` are the queue's message type and codec: [`read`](Self::read) decodes the message
/// as a `get` would; the byte methods work for every codec.
///
/// # Trust boundary
///
/// The loaned bytes live in shared memory that every process mapping the queue can write. A
/// cooperating process never touches them during the loan; a hostile or buggy one can change
/// them at any moment, also while this loan reads them: two reads may differ, a checksum may
/// fail, a value read may be garbage. It can never make the safe API read outside the loan,
/// panic, or hang a timed call. So the safe API reaches the bytes only through copies into
/// private memory ([`read_at`](Self::read_at), [`for_each_chunk`](Self::for_each_chunk),
/// [`for_each_block`](Self::for_each_block),
/// [`to_vec`](Self::to_vec), [`read`](Self::read)) or atomic words
/// ([`as_words`](Self::as_words)), never through a `&[u8]`, which would promise bytes that do
/// not change (a checked index could then be read twice and differ). Check what you copied,
/// not the shared bytes. [`as_ptr`](Self::as_ptr) is the unsafe escape hatch for callers who
/// trust every process that maps the queue.
///
/// # Holding a loan
///
/// The loan holds the queue's get side, owned by the calling thread: it is neither `Send` nor
/// `Sync`, and while it lives the other consumers of the queue wait, in every process; keep it
/// short. A get or read loan on the same queue from the thread that holds it waits for it (a
/// blocking one never returns). A leaked loan (`mem::forget`) stalls the consumers like a hung
/// peer (their timed calls time out, and [`shutdown_immediate`](crate::Queue::shutdown_immediate)
/// waits) and its message is never consumed; a process killed
/// holding a loan leaves its message at the head for the next consumer.
#[must_use = "dropping a read loan consumes the message at once"]
pub struct ReadLoan<'a, T, C = DefaultCodec> {
    inner: GetLoan<'a>,
    _types: PhantomData<fn() -> (T, C)>,
}

fn out_of_bounds(offset: usize, n: usize, len: usize) -> OutOfBounds {
    OutOfBounds {
        offset,
        end: offset.saturating_add(n),
        len,
    }
}

/// Runs `f` over `len` bytes in chunks of `buf.len()`, each chunk then passed to `each`.
fn chunked(
    len: usize,
    buf: &mut [u8],
    mut f: impl FnMut(usize, &mut [u8]),
    mut each: impl FnMut(usize, &mut [u8]),
) {
    let mut at = 0;
    while at < len {
        let n = buf.len().min(len - at);
        let chunk = &mut buf[..n];
        f(at, chunk);
        each(at, chunk);
        at += n;
    }
}

/// Runs `f` with a zeroed buffer of at most [`CHUNK`] bytes for a loan of `len` bytes.
fn with_chunk_buffer<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    if len <= SMALL_CHUNK {
        f(&mut [0u8; SMALL_CHUNK])
    } else {
        f(&mut [0u8; CHUNK])
    }
}

impl<T: ?Sized> WriteLoan<'_, T> {
    /// The message's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the message is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `bytes` into the message from `offset` on.
    ///
    /// # Errors
    /// [`OutOfBounds`] if they do not fit; nothing is written then.
    #[inline]
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Result<(), OutOfBounds> {
        let len = self.len();
        if self.inner.room().write_at(offset, bytes) {
            Ok(())
        } else {
            Err(out_of_bounds(offset, bytes.len(), len))
        }
    }

    /// Copies bytes of the message from `offset` on into `buf` (what this loan wrote, unless
    /// another process wrote there meanwhile).
    ///
    /// # Errors
    /// [`OutOfBounds`] if the range does not fit; nothing is copied then.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        if read_at(self.inner.view(), offset, buf) {
            Ok(())
        } else {
            Err(out_of_bounds(offset, buf.len(), self.len()))
        }
    }

    /// Writes the whole message, a chunk at a time: `f(offset, chunk)` fills a private buffer
    /// of a few KiB standing for the bytes from `offset` on, which is then copied into place.
    /// The buffer stays in the cache, so this is the fast safe way to produce every byte. A
    /// chunk holds what `f` left in the previous chunk (zeros at first).
    pub fn fill_with(&mut self, mut f: impl FnMut(usize, &mut [u8])) {
        let len = self.len();
        let mut room = self.inner.room();
        with_chunk_buffer(len, |buf| {
            chunked(len, buf, &mut f, |at, chunk| {
                let fits = room.write_at(at, chunk);
                debug_assert!(fits, "a chunk lies inside the loan");
            });
        });
    }

    /// Writes the whole message a 64-byte block (a cache line) at a time, in order: `f(offset)`
    /// returns the block that goes at byte `offset` (eight words, in this machine's byte
    /// order), and it is stored in place with no buffer in between. The fastest safe way to
    /// produce every byte: as fast as writing through [`as_mut_ptr`](Self::as_mut_ptr). If the
    /// length is not a multiple of 64, the last block's first bytes fill the rest.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multiproc::{Plain, Queue};
    /// let q = Queue::<u8, Plain>::with_codec(4)?;
    /// let mut loan = q.loan_bytes(1 << 16)?;
    /// let mut next = 0u64;
    /// loan.fill_blocks(|_offset| {
    ///     let block = std::array::from_fn(|k| next + k as u64);
    ///     next += 8;
    ///     block
    /// });
    /// loan.publish();
    /// let mut sum = 0u64;
    /// q.get_loan()?.for_each_block(|_offset, block| sum += block.iter().sum::<u64>());
    /// assert_eq!(sum, (0..8192u64).sum());
    /// # Ok(()) }
    /// ```
    pub fn fill_blocks(&mut self, f: impl FnMut(usize) -> [u64; 8]) {
        self.inner.room().write_blocks(f);
    }

    /// The message's whole 8-byte words (the first `len / 8 * 8` bytes; the payload is
    /// 8-aligned), as atomics: the other way to work in place without a copy. A `Relaxed` store
    /// is a plain store; the loan's `publish` orders them before the receiver's loads.
    #[inline]
    pub fn as_words(&self) -> &[AtomicU64] {
        self.inner.words()
    }

    /// The start of the message's bytes, valid for [`len`](Self::len) bytes while the loan
    /// lives, 8-aligned.
    ///
    /// # Safety
    /// Writing through the pointer is sound only while no other process writes the same range
    /// (the loan keeps cooperating processes out; a hostile one that maps the queue could
    /// still write). Forming a `&mut [u8]` or `&[u8]` over it asserts exactly that. Stay within
    /// `len` bytes, and stop using the pointer when the loan ends.
    #[inline]
    pub unsafe fn as_mut_ptr(&mut self) -> *mut u8 {
        self.inner.as_mut_ptr()
    }

    /// Sends the message: receivers see it from now on. For a [`JoinableQueue`] it is a task,
    /// as any put.
    #[inline]
    pub fn publish(self) {
        self.inner.publish();
    }
}

impl<T: IntoBytes + Immutable> WriteLoan<'_, T> {
    /// Copies `value` into the message (which is exactly `size_of::<T>()` bytes).
    #[inline]
    pub fn write(&mut self, value: &T) {
        let fits = self.inner.room().write_at(0, value.as_bytes());
        debug_assert!(fits, "a typed loan is as long as its type");
    }
}

impl<T: ?Sized> std::fmt::Debug for WriteLoan<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteLoan")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<T, C> ReadLoan<'_, T, C> {
    /// The message's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the message is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies bytes of the message from `offset` on into `buf`.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the range does not fit; nothing is copied then.
    #[inline]
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        if read_at(self.inner.view(), offset, buf) {
            Ok(())
        } else {
            Err(out_of_bounds(offset, buf.len(), self.len()))
        }
    }

    /// Reads the whole message, a chunk at a time: each chunk is copied into a private buffer
    /// of a few KiB, which stays in the cache, and passed to `f(offset, chunk)`. The fast safe
    /// way to look at every byte: `f` sees private bytes that cannot change under it.
    pub fn for_each_chunk(&self, mut f: impl FnMut(usize, &[u8])) {
        let len = self.len();
        let view = self.inner.view();
        with_chunk_buffer(len, |buf| {
            chunked(
                len,
                buf,
                |at, chunk| {
                    let fits = read_at(view, at, chunk);
                    debug_assert!(fits, "a chunk lies inside the loan");
                },
                |at, chunk| f(at, chunk),
            );
        });
    }

    /// Reads the whole message a 64-byte block (a cache line) at a time, in order: `f(offset,
    /// block)` gets a copy of the block at byte `offset` (eight words, in this machine's byte
    /// order), loaded straight from the ring with no buffer in between. The fastest safe way to
    /// look at every byte: as fast as reading through [`as_ptr`](Self::as_ptr), and `f` still
    /// sees private values that cannot change under it. If the length is not a multiple of
    /// 64, the last block comes zero-padded.
    pub fn for_each_block(&self, f: impl FnMut(usize, [u64; 8])) {
        self.inner.view().read_blocks(f);
    }

    /// The message's whole 8-byte words (the first `len / 8 * 8` bytes; the payload is
    /// 8-aligned), as atomics: reading in place without a copy. Each load is a fresh read of
    /// shared memory (see the module notes).
    #[inline]
    pub fn as_words(&self) -> &[AtomicU64] {
        self.inner.words()
    }

    /// The message's bytes, copied into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.inner.view().to_vec()
    }

    /// The start of the message's bytes, valid for [`len`](Self::len) bytes while the loan
    /// lives, 8-aligned.
    ///
    /// # Safety
    /// Reading through the pointer is sound only while no other process writes the range (no
    /// cooperating one does during the loan; a hostile one that maps the queue could). Forming
    /// a `&[u8]` over it asserts exactly that. Stay within `len` bytes, and stop using the
    /// pointer when the loan ends.
    #[inline]
    pub unsafe fn as_ptr(&self) -> *const u8 {
        self.inner.as_ptr()
    }

    /// Consumes the message (as dropping the loan does) and lets the next consumer in.
    #[inline]
    pub fn release(self) {
        self.inner.release();
    }
}

impl<T, C: Codec<T>> ReadLoan<'_, T, C> {
    /// Decodes the message with the queue's codec (a copy, as in `get`); the message stays
    /// loaned. For a [`Plain`] queue the message must be `size_of::<T>()` bytes.
    ///
    /// # Errors
    /// [`DecodeError`] if the bytes do not decode (another process wrote them: untrusted).
    pub fn read(&self) -> Result<T, DecodeError> {
        C::decode_foreign(self.inner.view())
    }
}

impl<T, C> std::fmt::Debug for ReadLoan<'_, T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadLoan")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// The endpoints' side

impl Endpoint {
    fn loan_put(
        &self,
        len: usize,
        deadline: Option<std::time::Instant>,
    ) -> Result<PutLoan<'_>, PutFail> {
        self.ensure_attached();
        self.ring().loan_put(len, deadline)
    }

    fn loan_get(&self, deadline: Option<std::time::Instant>) -> Result<GetLoan<'_>, GetFail> {
        self.ensure_attached();
        self.ring().loan_get(deadline, self.resume())
    }

    /// A write loan, waiting for room as long as it takes.
    fn loan_blocking(&self, len: usize) -> Result<PutLoan<'_>, PutError<()>> {
        loop {
            match self.loan_put(len, None) {
                Ok(loan) => return Ok(loan),
                Err(PutFail::Full) => {}
                Err(f) => {
                    return Err(match put_failed(f, ()) {
                        Failed::Error(e) => e,
                        Failed::OutOfTime(()) => unreachable!("`Full` is handled above"),
                    });
                }
            }
        }
    }

    fn try_loan(&self, len: usize) -> Result<PutLoan<'_>, TryPutError<()>> {
        self.loan_put(len, now())
            .map_err(|f| put_failed(f, ()).try_put())
    }

    fn loan_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<PutLoan<'_>, PutTimeoutError<()>> {
        self.loan_put(len, after(timeout))
            .map_err(|f| put_failed(f, ()).put_timeout())
    }

    /// A read loan, waiting for a message as long as it takes.
    fn get_loan_blocking(&self) -> Result<GetLoan<'_>, GetError> {
        loop {
            match self.loan_get(None) {
                Ok(loan) => return Ok(loan),
                Err(GetFail::Empty) => {}
                Err(f) => {
                    return Err(match get_failed(f) {
                        Failed::Error(e) => e,
                        Failed::OutOfTime(()) => unreachable!("`Empty` is handled above"),
                    });
                }
            }
        }
    }
}

fn write_loan<T: ?Sized>(inner: PutLoan<'_>) -> WriteLoan<'_, T> {
    WriteLoan {
        inner,
        _type: PhantomData,
    }
}

fn read_loan<T, C>(inner: GetLoan<'_>) -> ReadLoan<'_, T, C> {
    ReadLoan {
        inner,
        _types: PhantomData,
    }
}

/// Write loans on a sending handle type.
macro_rules! sending_loans {
    ($ty:ident) => {
        impl<T, C: Codec<T>> $ty<T, C> {
            /// Reserves room for a message of `len` raw bytes (read back with `get_bytes` or a
            /// read loan), waiting for room as long as it takes; fill it in place, then
            /// [`publish`](WriteLoan::publish) it. The loan holds the put side of the queue
            /// until then (see [`WriteLoan`]).
            ///
            /// # Errors
            /// [`PutError`]: `TooLarge` above [`max_loan_len`](Self::max_loan_len),
            /// `Disconnected`, `Closed`, `ShutDown` or `Corrupted`.
            pub fn loan_bytes(&self, len: usize) -> Result<WriteLoan<'_>, PutError<()>> {
                self.ep.loan_blocking(len).map(write_loan)
            }

            /// Reserves room for `len` raw bytes if there is room right now.
            ///
            /// # Errors
            /// [`TryPutError`]: `Full`, or as [`loan_bytes`](Self::loan_bytes).
            pub fn try_loan_bytes(&self, len: usize) -> Result<WriteLoan<'_>, TryPutError<()>> {
                self.ep.try_loan(len).map(write_loan)
            }

            /// Reserves room for `len` raw bytes, waiting at most `timeout` for it.
            ///
            /// # Errors
            /// [`PutTimeoutError`]: `Timeout`, or as [`loan_bytes`](Self::loan_bytes).
            pub fn loan_bytes_timeout(
                &self,
                len: usize,
                timeout: Duration,
            ) -> Result<WriteLoan<'_>, PutTimeoutError<()>> {
                self.ep.loan_timeout(len, timeout).map(write_loan)
            }
        }

        impl<T: FromBytes + IntoBytes + Immutable> $ty<T, Plain> {
            /// Reserves room for one `T`, waiting for room as long as it takes; write it in
            /// place ([`write`](WriteLoan::write), [`as_words`](WriteLoan::as_words), ...),
            /// then [`publish`](WriteLoan::publish) it.
            ///
            /// # Errors
            /// As [`loan_bytes`](Self::loan_bytes).
            pub fn loan(&self) -> Result<WriteLoan<'_, T>, PutError<()>> {
                self.ep.loan_blocking(size_of::<T>()).map(write_loan)
            }

            /// Reserves room for one `T` if there is room right now.
            ///
            /// # Errors
            /// As [`try_loan_bytes`](Self::try_loan_bytes).
            pub fn try_loan(&self) -> Result<WriteLoan<'_, T>, TryPutError<()>> {
                self.ep.try_loan(size_of::<T>()).map(write_loan)
            }

            /// Reserves room for one `T`, waiting at most `timeout` for it.
            ///
            /// # Errors
            /// As [`loan_bytes_timeout`](Self::loan_bytes_timeout).
            pub fn loan_timeout(
                &self,
                timeout: Duration,
            ) -> Result<WriteLoan<'_, T>, PutTimeoutError<()>> {
                self.ep
                    .loan_timeout(size_of::<T>(), timeout)
                    .map(write_loan)
            }
        }
    };
}

/// Read loans on a receiving handle type.
macro_rules! receiving_loans {
    ($ty:ident) => {
        impl<T, C: Codec<T>> $ty<T, C> {
            /// Takes the next message in place, waiting as long as it takes: read it through the
            /// loan, then drop or [`release`](ReadLoan::release) it to consume it. The loan
            /// holds the get side of the queue until then (see [`ReadLoan`]).
            ///
            /// # Errors
            /// As [`get`](Self::get). A message longer than
            /// [`max_loan_len`](Self::max_loan_len), which came in fragments, cannot be held
            /// in place: it is `BufferTooSmall(len)` and stays in the queue, for a `get`. A
            /// malformed message at the head is `Corrupted`.
            pub fn get_loan(&self) -> Result<ReadLoan<'_, T, C>, GetError> {
                self.ep.get_loan_blocking().map(read_loan)
            }

            /// Takes the next message in place if there is one.
            ///
            /// # Errors
            /// [`TryGetError`]: `Empty`, or as [`get_loan`](Self::get_loan).
            pub fn try_get_loan(&self) -> Result<ReadLoan<'_, T, C>, TryGetError> {
                self.ep
                    .loan_get(now())
                    .map(read_loan)
                    .map_err(|f| get_failed(f).try_get())
            }

            /// Takes the next message in place, waiting at most `timeout`.
            ///
            /// # Errors
            /// [`GetTimeoutError`]: `Timeout`, or as [`get_loan`](Self::get_loan).
            pub fn get_loan_timeout(
                &self,
                timeout: Duration,
            ) -> Result<ReadLoan<'_, T, C>, GetTimeoutError> {
                self.ep
                    .loan_get(after(timeout))
                    .map(read_loan)
                    .map_err(|f| get_failed(f).get_timeout())
            }
        }
    };
}

sending_loans!(Queue);
sending_loans!(Sender);
sending_loans!(JoinableQueue);
receiving_loans!(Queue);
receiving_loans!(Receiver);
receiving_loans!(JoinableQueue);

impl<S, R, C> Connection<S, R, C>
where
    C: Codec<S> + Codec<R>,
{
    /// Reserves room for a message of `len` raw bytes to send, as
    /// [`Sender::loan_bytes`].
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn loan_bytes(&self, len: usize) -> Result<WriteLoan<'_>, PutError<()>> {
        self.tx.ep.loan_blocking(len).map(write_loan)
    }

    /// Reserves room for `len` raw bytes to send if there is room right now.
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send).
    pub fn try_loan_bytes(&self, len: usize) -> Result<WriteLoan<'_>, TryPutError<()>> {
        self.tx.ep.try_loan(len).map(write_loan)
    }

    /// Reserves room for `len` raw bytes to send, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, or as [`send`](Self::send).
    pub fn loan_bytes_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<WriteLoan<'_>, PutTimeoutError<()>> {
        self.tx.ep.loan_timeout(len, timeout).map(write_loan)
    }

    /// Receives the next message in place, as [`Receiver::get_loan`].
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_loan(&self) -> Result<ReadLoan<'_, R, C>, GetError> {
        self.rx.ep.get_loan_blocking().map(read_loan)
    }

    /// Receives the next message in place if there is one.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_loan(&self) -> Result<ReadLoan<'_, R, C>, TryGetError> {
        self.rx
            .ep
            .loan_get(now())
            .map(read_loan)
            .map_err(|f| get_failed(f).try_get())
    }

    /// Receives the next message in place, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_loan_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ReadLoan<'_, R, C>, GetTimeoutError> {
        self.rx
            .ep
            .loan_get(after(timeout))
            .map(read_loan)
            .map_err(|f| get_failed(f).get_timeout())
    }
}

impl<S: FromBytes + IntoBytes + Immutable, R> Connection<S, R, Plain>
where
    Plain: Codec<R>,
{
    /// Reserves room for one `S` to send, as [`Sender::loan`].
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn loan(&self) -> Result<WriteLoan<'_, S>, PutError<()>> {
        self.tx.ep.loan_blocking(size_of::<S>()).map(write_loan)
    }

    /// Reserves room for one `S` to send if there is room right now.
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send).
    pub fn try_loan(&self) -> Result<WriteLoan<'_, S>, TryPutError<()>> {
        self.tx.ep.try_loan(size_of::<S>()).map(write_loan)
    }

    /// Reserves room for one `S` to send, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, or as [`send`](Self::send).
    pub fn loan_timeout(&self, timeout: Duration) -> Result<WriteLoan<'_, S>, PutTimeoutError<()>> {
        self.tx
            .ep
            .loan_timeout(size_of::<S>(), timeout)
            .map(write_loan)
    }
}
