//! The mechanisms compared, each behind one pair of traits: a sending end that owns the
//! buffer of the next message, and a receiving end that lends the last message it received.
//!
//! Ends are made in the parent before it forks; each process then uses its own copy of the
//! ends it needs and drops the others (see `run`).

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;

use multiproc::{Connection, Plain, Queue, Receiver, Sender, TryGetError};
use zerocopy::IntoBytes;

use crate::evshm::EventShm;
use crate::floor::{Floor, FloorBatch};

/// Sends messages of one size.
pub trait Tx {
    /// The buffer the next `send` sends (its length is the message size).
    fn buf(&mut self) -> &mut [u8];
    /// Sends the buffer as one message, waiting for room.
    fn send(&mut self) -> Result<(), String>;
    /// Whether a child must send a first message before the parent drops its copy of this
    /// end (a multiproc ring registers a sender in a forked child on its first use).
    fn needs_hello(&self) -> bool {
        false
    }
    /// Registers this end in the calling process (a ring end inherited across `fork`).
    fn attach(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Makes the other side fail instead of waiting for this one (called when this side
    /// gives up).
    fn abort(&self) {}
    /// Sends whatever `send` kept back (a batching end); a no-op for the others.
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Receives messages.
pub trait Rx {
    /// Receives the next message, waiting for it.
    fn recv(&mut self) -> Result<&[u8], String>;
    /// Registers this end in the calling process (a ring end inherited across `fork`).
    fn attach(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Makes the other side fail instead of waiting for this one.
    fn abort(&self) {}
}

/// A one-way channel: one sending end (used by every producer) and one receiving end.
pub struct Channel {
    /// The sending end.
    pub tx: RefCell<Box<dyn Tx>>,
    /// The receiving end.
    pub rx: RefCell<Box<dyn Rx>>,
}

impl Channel {
    fn new(tx: impl Tx + 'static, rx: impl Rx + 'static) -> Self {
        Self {
            tx: RefCell::new(Box::new(tx)),
            rx: RefCell::new(Box::new(rx)),
        }
    }
}

/// An end that has been let go: what a process puts in place of a channel end it must not
/// hold (so that the other side sees EOF or a disconnect when the real holders are gone).
pub struct Closed;

impl Tx for Closed {
    fn buf(&mut self) -> &mut [u8] {
        &mut []
    }
    fn send(&mut self) -> Result<(), String> {
        Err("this end was closed".into())
    }
}

impl Rx for Closed {
    fn recv(&mut self) -> Result<&[u8], String> {
        Err("this end was closed".into())
    }
}

/// One side of a duplex link: sends on one channel, receives on the other.
pub struct End {
    /// Sends to the other side.
    pub tx: RefCell<Box<dyn Tx>>,
    /// Receives from the other side.
    pub rx: RefCell<Box<dyn Rx>>,
}

/// Every mechanism the harness knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mech {
    /// `multiproc::Queue<Vec<u8>>` with the default (serde) codec.
    QueueSerde,
    /// `multiproc::Queue<[u64; N], Plain>`: a fixed-size value, one copy in, one out.
    QueuePlain,
    /// `multiproc::Queue<[u64; N], Plain>` with `put_many` / `get_many`, 32 messages at a time.
    QueuePlainBatch,
    /// `multiproc::Queue` with `put_bytes` / `get_bytes_into`.
    QueueBytes,
    /// `multiproc::Queue` with loans through their safe API: the producer writes each message
    /// in place (`loan_bytes`, `fill_blocks`), the consumer reads and checks it in place
    /// (`get_loan`, `for_each_block`).
    QueueLoan,
    /// As `QueueLoan`, through the loans' raw pointers (`as_mut_ptr`, `as_ptr`): what the
    /// ring itself costs, for callers who trust every process mapping the queue.
    QueueLoanUnsafe,
    /// `multiproc::pipe()` with `send_bytes` / `recv_bytes_into`.
    Pipe,
    /// An OS pipe with the default buffer.
    OsPipe,
    /// An OS pipe grown to 1 MiB with `F_SETPIPE_SZ`.
    OsPipeBig,
    /// A Unix stream socketpair.
    Socketpair,
    /// Fixed slots in shared memory, counted by two semaphore eventfds.
    EventfdShm,
    /// The minimal SPSC ring: the floor.
    Floor,
    /// The floor ring publishing its positions once per 32 messages: the floor of batching.
    FloorBatch,
    /// The floor ring with every record written and read in place: the floor of loans.
    FloorLoan,
    /// iceoryx2 publish-subscribe, every sample written and read in place (feature `iceoryx2`).
    #[cfg(feature = "iceoryx2")]
    Iceoryx2Loan,
    /// `memcpy` on one core: the copy ceiling (throughput only, no second process).
    Memcpy,
    /// A deliberately broken transport (the floor ring, breaking one message), to prove the
    /// checks catch it. Only with `--inject-fault`.
    Broken(Fault),
}

/// What the broken transport does to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// Never delivers one message.
    Drop,
    /// Delivers one message twice.
    Duplicate,
    /// Flips one bit in one message's payload.
    Corrupt,
}

/// The mechanisms of a normal run, in table order.
pub const ALL: [Mech; 12] = [
    Mech::QueueSerde,
    Mech::QueuePlain,
    Mech::QueuePlainBatch,
    Mech::QueueBytes,
    Mech::Pipe,
    Mech::OsPipe,
    Mech::OsPipeBig,
    Mech::Socketpair,
    Mech::EventfdShm,
    Mech::Floor,
    Mech::FloorBatch,
    Mech::Memcpy,
];

/// The mechanisms written and read in place (see `inplace`), measured one way only; they join
/// a normal run's throughput groups.
pub const IN_PLACE: &[Mech] = &[
    Mech::QueueLoan,
    Mech::QueueLoanUnsafe,
    Mech::FloorLoan,
    #[cfg(feature = "iceoryx2")]
    Mech::Iceoryx2Loan,
];

const IN_PLACE_NOT_CHANNEL: &str = "written and read in place: see `inplace::channel`";

/// The mechanisms of the pairs groups: those of the latency groups that make sense at 8 bytes
/// with many pairs at once (no serde codec, no second OS pipe, no memcpy).
pub const PAIRS: [Mech; 7] = [
    Mech::QueuePlain,
    Mech::QueueBytes,
    Mech::Pipe,
    Mech::OsPipe,
    Mech::Socketpair,
    Mech::EventfdShm,
    Mech::Floor,
];

impl Mech {
    /// The stable id used in the JSON and on the command line.
    pub fn id(self) -> &'static str {
        match self {
            Mech::QueueSerde => "mp-queue-serde",
            Mech::QueuePlain => "mp-queue-plain",
            Mech::QueuePlainBatch => "mp-queue-plain-batch",
            Mech::QueueBytes => "mp-queue-bytes",
            Mech::QueueLoan => "mp-queue-loan",
            Mech::QueueLoanUnsafe => "mp-queue-loan-unsafe",
            Mech::Pipe => "mp-pipe",
            Mech::OsPipe => "os-pipe",
            Mech::OsPipeBig => "os-pipe-1m",
            Mech::Socketpair => "socketpair",
            Mech::EventfdShm => "eventfd-shm",
            Mech::Floor => "floor-ring",
            Mech::FloorBatch => "floor-ring-batch",
            Mech::FloorLoan => "floor-loan",
            #[cfg(feature = "iceoryx2")]
            Mech::Iceoryx2Loan => "iceoryx2-loan",
            Mech::Memcpy => "memcpy",
            Mech::Broken(Fault::Drop) => "broken-drop",
            Mech::Broken(Fault::Duplicate) => "broken-duplicate",
            Mech::Broken(Fault::Corrupt) => "broken-corrupt",
        }
    }

    /// The readable name.
    pub fn label(self) -> &'static str {
        match self {
            Mech::QueueSerde => "multiproc Queue (serde)",
            Mech::QueuePlain => "multiproc Queue (Plain)",
            Mech::QueuePlainBatch => "multiproc Queue (Plain, 32/batch)",
            Mech::QueueBytes => "multiproc Queue (bytes)",
            Mech::QueueLoan => "multiproc Queue (loans, in place)",
            Mech::QueueLoanUnsafe => "multiproc Queue (loans, raw pointers)",
            Mech::Pipe => "multiproc pipe() (bytes)",
            Mech::OsPipe => "OS pipe",
            Mech::OsPipeBig => "OS pipe, 1 MiB buffer",
            Mech::Socketpair => "Unix socketpair",
            Mech::EventfdShm => "eventfd + shared memory",
            Mech::Floor => "minimal SPSC ring (floor)",
            Mech::FloorBatch => "minimal SPSC ring, 32/batch (floor)",
            Mech::FloorLoan => "minimal SPSC ring, in place (floor)",
            #[cfg(feature = "iceoryx2")]
            Mech::Iceoryx2Loan => "iceoryx2 publish-subscribe (loan)",
            Mech::Memcpy => "memcpy, one core (ceiling)",
            Mech::Broken(_) => "broken transport (test)",
        }
    }

    /// Whether several producers (or consumers) may share the channel.
    pub fn many_to_many(self) -> bool {
        matches!(
            self,
            Mech::QueueSerde | Mech::QueuePlain | Mech::QueueBytes | Mech::OsPipe | Mech::OsPipeBig
        )
    }

    /// Whether this mechanism is one of multiproc's own.
    pub fn is_multiproc(self) -> bool {
        matches!(
            self,
            Mech::QueueSerde
                | Mech::QueuePlain
                | Mech::QueuePlainBatch
                | Mech::QueueBytes
                | Mech::QueueLoan
                | Mech::QueueLoanUnsafe
                | Mech::Pipe
        )
    }

    /// Why this mechanism cannot carry messages of `size` bytes, if it cannot.
    pub fn unsupported(self, size: usize) -> Option<String> {
        match self {
            Mech::QueuePlain | Mech::QueuePlainBatch if plain_words(size).is_none() => {
                Some(format!(
                    "Plain values are fixed-size arrays passed by value; sizes measured: {}",
                    PLAIN_SIZES.map(|s| crate::fmt_size(s as u64)).join(", ")
                ))
            }
            _ if IN_PLACE.contains(&self) => crate::inplace::unsupported(size),
            _ => None,
        }
    }

    /// A one-way channel for messages of `size` bytes.
    pub fn channel(self, size: usize) -> Result<Channel, String> {
        let ring = ring_bytes(size);
        Ok(match self {
            Mech::QueueSerde => {
                let (tx, rx) = Queue::<Vec<u8>>::builder()
                    .max_bytes(ring)
                    .create()
                    .and_then(Queue::split)
                    .map_err(|e| e.to_string())?;
                Channel::new(
                    SerdeTx {
                        tx,
                        buf: vec![0; size],
                    },
                    SerdeRx {
                        rx,
                        last: Vec::new(),
                    },
                )
            }
            Mech::QueuePlain => plain_channel(size, ring, false)?,
            Mech::QueuePlainBatch => plain_channel(size, ring, true)?,
            Mech::QueueBytes => {
                let (tx, rx) = Queue::<u8>::builder()
                    .codec::<Plain>()
                    .max_bytes(ring)
                    .create()
                    .and_then(Queue::split)
                    .map_err(|e| e.to_string())?;
                Channel::new(
                    BytesTx {
                        tx,
                        buf: vec![0; size],
                    },
                    BytesRx {
                        rx,
                        buf: vec![0; size],
                    },
                )
            }
            Mech::Pipe => {
                let (a, b) = multiproc::pipe::<Vec<u8>>().map_err(|e| e.to_string())?;
                Channel::new(
                    ConnTx {
                        c: Rc::new(a),
                        buf: vec![0; size],
                    },
                    ConnRx {
                        c: Rc::new(b),
                        buf: vec![0; size],
                    },
                )
            }
            Mech::OsPipe | Mech::OsPipeBig => {
                let (r, w) = os_pipe(self == Mech::OsPipeBig)?;
                Channel::new(FdTx::new(w, size), FdRx::new(r, size))
            }
            Mech::Socketpair => {
                let (a, b) = socketpair()?;
                Channel::new(FdTx::new(a, size), FdRx::new(b, size))
            }
            Mech::EventfdShm => {
                // As many slots as the ring holds messages, like the rings.
                let slots = (ring / size.max(1)).max(2);
                let (tx, rx) = EventShm::pair(slots, size)?;
                Channel::new(tx, rx)
            }
            Mech::Floor => {
                let (tx, rx) = Floor::pair(ring, size);
                Channel::new(tx, rx)
            }
            Mech::FloorBatch => {
                let (tx, rx) = FloorBatch::pair(ring, size, BATCH as u32);
                Channel::new(tx, rx)
            }
            Mech::Broken(fault) => {
                let (tx, rx) = Floor::pair(ring, size);
                Channel::new(
                    BrokenTx {
                        inner: tx,
                        fault,
                        sent: 0,
                    },
                    rx,
                )
            }
            Mech::Memcpy => return Err("memcpy is not a channel".into()),
            Mech::QueueLoan | Mech::QueueLoanUnsafe | Mech::FloorLoan => {
                return Err(IN_PLACE_NOT_CHANNEL.into());
            }
            #[cfg(feature = "iceoryx2")]
            Mech::Iceoryx2Loan => return Err(IN_PLACE_NOT_CHANNEL.into()),
        })
    }

    /// A duplex link for 8-byte round trips: (the parent's end, the child's end).
    pub fn duplex(self) -> Result<(End, End), String> {
        match self {
            Mech::Pipe => {
                let (a, b) = multiproc::pipe::<Vec<u8>>().map_err(|e| e.to_string())?;
                let end = |c: Connection<Vec<u8>>| -> Result<End, String> {
                    let c = Rc::new(c);
                    Ok(End {
                        tx: RefCell::new(Box::new(ConnTx {
                            c: c.clone(),
                            buf: vec![0; 8],
                        })),
                        rx: RefCell::new(Box::new(ConnRx { c, buf: vec![0; 8] })),
                    })
                };
                Ok((end(a)?, end(b)?))
            }
            Mech::Socketpair => {
                let (a, b) = socketpair()?;
                let end = |f: File| -> Result<End, String> {
                    let g = f.try_clone().map_err(|e| e.to_string())?;
                    Ok(End {
                        tx: RefCell::new(Box::new(FdTx::new(f, 8))),
                        rx: RefCell::new(Box::new(FdRx::new(g, 8))),
                    })
                };
                Ok((end(a)?, end(b)?))
            }
            _ => {
                let down = self.channel(8)?;
                let up = self.channel(8)?;
                Ok((
                    End {
                        tx: down.tx,
                        rx: up.rx,
                    },
                    End {
                        tx: up.tx,
                        rx: down.rx,
                    },
                ))
            }
        }
    }
}

/// The ring (or buffer) bytes every shared-memory mechanism gets for messages of `size`: a
/// queue's default 1 MiB, or room for at least two messages with their headers (rounded up to a
/// power of two: four messages of a power-of-two size).
pub fn ring_bytes(size: usize) -> usize {
    (2 * (size + 64)).next_power_of_two().max(1 << 20)
}

/// The longest message the default `pipe()`'s ring holds as one record: longer ones go in
/// fragments, and a whole one no longer fits before the reader starts.
pub fn pipe_record_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        Queue::<u8>::builder()
            .codec::<Plain>()
            .create()
            .map(|q| q.max_loan_len())
            .unwrap_or(0)
    })
}

// ----------------------------------------------------------------------------------------
// multiproc

fn ring_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn attach_rx<T, C: multiproc::Codec<T>>(rx: &Receiver<T, C>) -> Result<(), String> {
    match rx.try_get() {
        Err(TryGetError::Empty) => Ok(()),
        Ok(_) => Err("a message arrived before the start".into()),
        Err(e) => Err(ring_err("attach", e)),
    }
}

struct SerdeTx {
    tx: Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Tx for SerdeTx {
    fn needs_hello(&self) -> bool {
        true
    }
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    fn send(&mut self) -> Result<(), String> {
        self.tx
            .put(self.buf.clone())
            .map_err(|e| ring_err("Sender::put", e))
    }
}

struct SerdeRx {
    rx: Receiver<Vec<u8>>,
    last: Vec<u8>,
}

impl Rx for SerdeRx {
    fn recv(&mut self) -> Result<&[u8], String> {
        self.last = self.rx.get().map_err(|e| ring_err("Receiver::get", e))?;
        Ok(&self.last)
    }
    fn attach(&mut self) -> Result<(), String> {
        attach_rx(&self.rx)
    }
}

struct BytesTx {
    tx: Sender<u8, Plain>,
    buf: Vec<u8>,
}

impl Tx for BytesTx {
    fn needs_hello(&self) -> bool {
        true
    }
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    fn send(&mut self) -> Result<(), String> {
        self.tx
            .put_bytes(&self.buf)
            .map_err(|e| ring_err("Sender::put_bytes", e))
    }
}

struct BytesRx {
    rx: Receiver<u8, Plain>,
    buf: Vec<u8>,
}

impl Rx for BytesRx {
    fn recv(&mut self) -> Result<&[u8], String> {
        let n = self
            .rx
            .get_bytes_into(&mut self.buf)
            .map_err(|e| ring_err("Receiver::get_bytes_into", e))?;
        Ok(&self.buf[..n])
    }
    fn attach(&mut self) -> Result<(), String> {
        attach_rx(&self.rx)
    }
}

const PLAIN_SIZES: [usize; 8] = [8, 16, 64, 256, 1024, 4096, 16384, 65536];

fn plain_words(size: usize) -> Option<usize> {
    PLAIN_SIZES.contains(&size).then_some(size / 8)
}

struct PlainTx<const W: usize> {
    tx: Sender<[u64; W], Plain>,
    value: Box<[u64; W]>,
}

impl<const W: usize> Tx for PlainTx<W> {
    fn needs_hello(&self) -> bool {
        true
    }
    fn buf(&mut self) -> &mut [u8] {
        self.value.as_mut_bytes()
    }
    fn send(&mut self) -> Result<(), String> {
        self.tx
            .put(*self.value)
            .map_err(|e| ring_err("Sender::put", e))
    }
}

struct PlainRx<const W: usize> {
    rx: Receiver<[u64; W], Plain>,
    value: Box<[u64; W]>,
}

impl<const W: usize> Rx for PlainRx<W> {
    fn recv(&mut self) -> Result<&[u8], String> {
        *self.value = self.rx.get().map_err(|e| ring_err("Receiver::get", e))?;
        Ok(self.value.as_bytes())
    }
    fn attach(&mut self) -> Result<(), String> {
        attach_rx(&self.rx)
    }
}

fn plain_of<const W: usize>(ring: usize, batch: bool) -> Result<Channel, String> {
    let (tx, rx) = Queue::<[u64; W]>::builder()
        .codec::<Plain>()
        .max_bytes(ring)
        .create()
        .and_then(Queue::split)
        .map_err(|e| e.to_string())?;
    if batch {
        return Ok(Channel::new(
            PlainBatchTx {
                tx,
                value: Box::new([0; W]),
                pending: Vec::with_capacity(BATCH),
            },
            PlainBatchRx {
                rx,
                value: Box::new([0; W]),
                got: Vec::with_capacity(BATCH),
                next: 0,
            },
        ));
    }
    Ok(Channel::new(
        PlainTx {
            tx,
            value: Box::new([0; W]),
        },
        PlainRx {
            rx,
            value: Box::new([0; W]),
        },
    ))
}

/// Messages per `put_many` / `get_many` of the batching mechanism.
const BATCH: usize = 32;

struct PlainBatchTx<const W: usize> {
    tx: Sender<[u64; W], Plain>,
    value: Box<[u64; W]>,
    pending: Vec<[u64; W]>,
}

impl<const W: usize> Tx for PlainBatchTx<W> {
    fn needs_hello(&self) -> bool {
        true
    }
    fn buf(&mut self) -> &mut [u8] {
        self.value.as_mut_bytes()
    }
    fn send(&mut self) -> Result<(), String> {
        self.pending.push(*self.value);
        if self.pending.len() == BATCH {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), String> {
        if !self.pending.is_empty() {
            self.tx
                .put_many(&self.pending)
                .map_err(|e| ring_err("Sender::put_many", e))?;
            self.pending.clear();
        }
        Ok(())
    }
}

struct PlainBatchRx<const W: usize> {
    rx: Receiver<[u64; W], Plain>,
    value: Box<[u64; W]>,
    got: Vec<[u64; W]>,
    next: usize,
}

impl<const W: usize> Rx for PlainBatchRx<W> {
    fn recv(&mut self) -> Result<&[u8], String> {
        if self.next == self.got.len() {
            self.got.clear();
            self.next = 0;
            self.rx
                .get_many(&mut self.got, BATCH)
                .map_err(|e| ring_err("Receiver::get_many", e))?;
        }
        *self.value = self.got[self.next];
        self.next += 1;
        Ok(self.value.as_bytes())
    }
    fn attach(&mut self) -> Result<(), String> {
        attach_rx(&self.rx)
    }
}

fn plain_channel(size: usize, ring: usize, batch: bool) -> Result<Channel, String> {
    match plain_words(size) {
        Some(1) => plain_of::<1>(ring, batch),
        Some(2) => plain_of::<2>(ring, batch),
        Some(8) => plain_of::<8>(ring, batch),
        Some(32) => plain_of::<32>(ring, batch),
        Some(128) => plain_of::<128>(ring, batch),
        Some(512) => plain_of::<512>(ring, batch),
        Some(2048) => plain_of::<2048>(ring, batch),
        Some(8192) => plain_of::<8192>(ring, batch),
        _ => Err(format!("no Plain type for {size} bytes")),
    }
}

struct ConnTx {
    c: Rc<Connection<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Tx for ConnTx {
    fn needs_hello(&self) -> bool {
        // The parent reads nothing before every child is ready: a hello longer than the ring
        // would wait for good. (A forked child's inherited handles are registered at the fork
        // anyway; the hello is a second guard.)
        self.buf.len() <= pipe_record_limit()
    }
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    fn send(&mut self) -> Result<(), String> {
        self.c
            .send_bytes(&self.buf)
            .map_err(|e| ring_err("Connection::send_bytes", e))
    }
}

struct ConnRx {
    c: Rc<Connection<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Rx for ConnRx {
    fn recv(&mut self) -> Result<&[u8], String> {
        let n = self
            .c
            .recv_bytes_into(&mut self.buf)
            .map_err(|e| ring_err("Connection::recv_bytes_into", e))?;
        Ok(&self.buf[..n])
    }
    fn attach(&mut self) -> Result<(), String> {
        match self.c.try_recv() {
            Err(TryGetError::Empty) => Ok(()),
            Ok(_) => Err("a message arrived before the start".into()),
            Err(e) => Err(ring_err("attach", e)),
        }
    }
}

// ----------------------------------------------------------------------------------------
// File descriptors

fn owned(fd: libc::c_int) -> File {
    // SAFETY: `fd` was just returned by pipe2/socketpair and is owned by nobody else.
    File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An OS pipe, `(read end, write end)`, optionally grown to 1 MiB.
fn os_pipe(big: bool) -> Result<(File, File), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    let (r, w) = (owned(fds[0]), owned(fds[1]));
    if big {
        // SAFETY: `w` is an open pipe; F_SETPIPE_SZ takes an int.
        let rc = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        if rc < 0 {
            return Err(format!(
                "F_SETPIPE_SZ 1 MiB: {} (see /proc/sys/fs/pipe-max-size)",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok((r, w))
}

/// A connected `AF_UNIX`, `SOCK_STREAM` socketpair.
fn socketpair() -> Result<(File, File), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(format!("socketpair: {}", std::io::Error::last_os_error()));
    }
    Ok((owned(fds[0]), owned(fds[1])))
}

/// A pipe or socket end: one `write` per message (completed if short).
struct FdTx {
    f: File,
    buf: Vec<u8>,
}

impl FdTx {
    fn new(f: File, size: usize) -> Self {
        Self {
            f,
            buf: vec![0; size],
        }
    }
}

impl Tx for FdTx {
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    fn send(&mut self) -> Result<(), String> {
        self.f
            .write_all(&self.buf)
            .map_err(|e| format!("write: {e}"))
    }
}

/// A pipe or socket end: reads exactly one message's size (the stream has no boundaries).
struct FdRx {
    f: File,
    buf: Vec<u8>,
}

impl FdRx {
    fn new(f: File, size: usize) -> Self {
        Self {
            f,
            buf: vec![0; size],
        }
    }
}

impl Rx for FdRx {
    fn recv(&mut self) -> Result<&[u8], String> {
        self.f
            .read_exact(&mut self.buf)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => "EOF: every writer is gone".to_string(),
                _ => format!("read: {e}"),
            })?;
        Ok(&self.buf)
    }
}

// ----------------------------------------------------------------------------------------
// Shared-memory references

impl Tx for EventShm {
    fn buf(&mut self) -> &mut [u8] {
        EventShm::buf(self)
    }
    fn send(&mut self) -> Result<(), String> {
        EventShm::send(self)
    }
    fn abort(&self) {
        self.close();
    }
}

impl Rx for EventShm {
    fn recv(&mut self) -> Result<&[u8], String> {
        EventShm::recv(self)
    }
    fn abort(&self) {
        self.close();
    }
}

impl Tx for Floor {
    fn buf(&mut self) -> &mut [u8] {
        Floor::buf(self)
    }
    fn send(&mut self) -> Result<(), String> {
        Floor::send(self)
    }
    fn abort(&self) {
        self.close();
    }
}

impl Tx for FloorBatch {
    fn buf(&mut self) -> &mut [u8] {
        FloorBatch::buf(self)
    }
    fn send(&mut self) -> Result<(), String> {
        FloorBatch::send(self)
    }
    fn flush(&mut self) -> Result<(), String> {
        FloorBatch::flush(self);
        Ok(())
    }
    fn abort(&self) {
        self.close();
    }
}

impl Rx for FloorBatch {
    fn recv(&mut self) -> Result<&[u8], String> {
        FloorBatch::recv(self)
    }
    fn abort(&self) {
        self.close();
    }
}

impl Rx for Floor {
    fn recv(&mut self) -> Result<&[u8], String> {
        Floor::recv(self)
    }
    fn abort(&self) {
        self.close();
    }
}

/// Which send the broken transport breaks (counting the hello).
const BREAK_AT: u64 = 50;

/// Breaks the 50th message it is asked to send (after the warm-up).
struct BrokenTx {
    inner: Floor,
    fault: Fault,
    sent: u64,
}

impl Tx for BrokenTx {
    fn buf(&mut self) -> &mut [u8] {
        self.inner.buf()
    }
    fn send(&mut self) -> Result<(), String> {
        self.sent += 1;
        if self.sent != BREAK_AT {
            return self.inner.send();
        }
        match self.fault {
            Fault::Drop => Ok(()),
            Fault::Duplicate => {
                self.inner.send()?;
                self.inner.send()
            }
            Fault::Corrupt => {
                let buf = self.inner.buf();
                // The sequence number of an 8-byte message, the first stamp of a longer one:
                // both are checked in every check mode.
                let at = if buf.len() >= 24 { 16 } else { 0 };
                buf[at] ^= 0x10;
                let r = self.inner.send();
                self.inner.buf()[at] ^= 0x10;
                r
            }
        }
    }
    fn abort(&self) {
        self.inner.close();
    }
}
