//! What the queue benches compare, and how they run it between processes.
//!
//! Each channel end implements [`Tx`]/[`Rx`] (fixed-size messages) or [`BytesTx`]/[`BytesRx`]
//! (byte messages): `multiproc` queues, and OS pipes and Unix socketpairs as `File`s. The
//! runners fork children pinned to [`CHILD_CORE`] (the bench runs on [`PARENT_CORE`]), and time
//! only the part of the exchange after warm-up messages. Every message is checked on arrival
//! (sequence numbers, per-producer order, counts, byte contents), so a bench that moved
//! nothing, or the wrong thing, fails instead of reporting a time.
//!
//! Start-up protocol: a child first says hello on its channel (which, for a ring inherited
//! across `fork`, registers the child as a sender; [`Rx::attach`] registers it as a receiver),
//! then reports ready. The parent then drops its copies of the children's ends, so that a child
//! that dies shows up as EOF (fds) or `Disconnected` (rings) instead of a hang.

#![allow(unsafe_code)] // fork, socketpair, pipe; see the SAFETY comments

use std::fmt::Debug;
use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Connection, GetError, JoinableQueue, Plain, Receiver, Sender};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::{CHILD_CORE, Line, Shm, pin_to};

/// Untimed messages (or round trips) before the clock starts: page faults, first-use
/// registration and cache warm-up stay out of the timing.
pub(crate) const WARM: u64 = 1000;
/// Untimed 1 MiB-class messages: enough to touch every page of a 4 MiB ring.
pub(crate) const WARM_BIG: u64 = 8;

/// A fixed-size message that carries who sent it and its sequence number.
pub(crate) trait Msg: Copy + FromBytes + IntoBytes + Immutable + PartialEq + Debug {
    /// The message number `seq` of producer `id`.
    fn stamp(id: usize, seq: u64) -> Self;
    /// Producer and sequence number, or a panic if the message is not one `stamp` made.
    fn unstamp(&self) -> (usize, u64);
}

/// Sequence numbers stay below this (and `u64` messages keep the producer id above it).
const SEQ_BITS: u32 = 56;
/// The sequence number of the hello message.
const HELLO_SEQ: u64 = (1 << SEQ_BITS) - 1;

/// 8 bytes: producer id in the top byte, sequence number below.
impl Msg for u64 {
    fn stamp(id: usize, seq: u64) -> Self {
        ((id as u64) << SEQ_BITS) | seq
    }

    fn unstamp(&self) -> (usize, u64) {
        ((self >> SEQ_BITS) as usize, self & HELLO_SEQ)
    }
}

/// 64 bytes: id, sequence number, six words derived from both (all checked).
impl Msg for [u64; 8] {
    fn stamp(id: usize, seq: u64) -> Self {
        let mut m = [0; 8];
        m[0] = id as u64;
        m[1] = seq;
        for (k, w) in m.iter_mut().enumerate().skip(2) {
            *w = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (id as u64 + k as u64);
        }
        m
    }

    fn unstamp(&self) -> (usize, u64) {
        let (id, seq) = (self[0] as usize, self[1]);
        assert_eq!(*self, Self::stamp(id, seq), "64-byte message garbled");
        (id, seq)
    }
}

/// The sending side of a channel of `M`.
pub(crate) trait Tx<M> {
    /// Sends one message, waiting for room; panics if the channel is broken.
    fn send(&self, m: &M);
}

/// The receiving side of a channel of `M`.
pub(crate) trait Rx<M> {
    /// Receives one message, waiting for it; panics on EOF or a broken channel.
    fn recv(&self) -> M;
    /// Registers this end in the calling process without taking anything (needed for a ring
    /// end inherited across `fork`: the parent is about to drop its own registration).
    fn attach(&self) {}
}

impl<M: Msg> Tx<M> for Sender<M, Plain> {
    fn send(&self, m: &M) {
        self.put(*m).expect("Sender::put");
    }
}

impl<M: Msg> Rx<M> for Receiver<M, Plain> {
    fn recv(&self) -> M {
        self.get().expect("Receiver::get")
    }

    fn attach(&self) {
        assert_eq!(self.try_get(), Err(GetError::Empty));
    }
}

impl<M: Msg> Tx<M> for Connection<M, Plain> {
    fn send(&self, m: &M) {
        Connection::send(self, *m).expect("Connection::send");
    }
}

impl<M: Msg> Rx<M> for Connection<M, Plain> {
    fn recv(&self) -> M {
        Connection::recv(self).expect("Connection::recv")
    }

    fn attach(&self) {
        assert_eq!(self.try_recv(), Err(GetError::Empty));
    }
}

impl<M: Msg> Tx<M> for JoinableQueue<M, Plain> {
    fn send(&self, m: &M) {
        self.put(*m).expect("JoinableQueue::put");
    }
}

/// A `Connection` end whose receives busy-poll `try_recv` and never sleep: what a round trip
/// costs when the receiver is certainly awake (the default `recv` spins only briefly).
pub(crate) struct BusyPoll<M>(pub(crate) Connection<M, Plain>);

impl<M: Msg> Tx<M> for BusyPoll<M> {
    fn send(&self, m: &M) {
        Tx::send(&self.0, m);
    }
}

impl<M: Msg> Rx<M> for BusyPoll<M> {
    fn recv(&self) -> M {
        let mut polls = 0u64;
        let since = Instant::now();
        loop {
            match self.0.try_recv() {
                Ok(m) => return m,
                Err(GetError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("Connection::try_recv: {e}"),
            }
            polls += 1;
            // `try_recv` never probes for a dead peer: give up after a while instead.
            if polls % (1 << 20) == 0 {
                assert!(
                    since.elapsed() < Duration::from_secs(10),
                    "peer silent for 10 s"
                );
            }
        }
    }

    fn attach(&self) {
        self.0.attach();
    }
}

/// A JoinableQueue consumer marks every message done as it takes it.
impl<M: Msg> Rx<M> for JoinableQueue<M, Plain> {
    fn recv(&self) -> M {
        let m = self.get().expect("JoinableQueue::get");
        self.task_done().expect("task_done");
        m
    }
}

/// A pipe end or a socket: one `write` per message.
impl<M: Msg> Tx<M> for File {
    fn send(&self, m: &M) {
        (&*self).write_all(m.as_bytes()).expect("write");
    }
}

/// A pipe end or a socket: one `read` per message (a short read is completed).
impl<M: Msg> Rx<M> for File {
    fn recv(&self) -> M {
        let mut m = M::new_zeroed();
        (&*self)
            .read_exact(m.as_mut_bytes())
            .expect("read (EOF: the peer died?)");
        m
    }
}

/// A duplex end made of a sending and a receiving half.
impl<M, T: Tx<M>, R> Tx<M> for (T, R) {
    fn send(&self, m: &M) {
        self.0.send(m);
    }
}

impl<M, T, R: Rx<M>> Rx<M> for (T, R) {
    fn recv(&self) -> M {
        self.1.recv()
    }

    fn attach(&self) {
        self.1.attach();
    }
}

/// Sends whole byte messages.
pub(crate) trait BytesTx {
    /// Sends `bytes` as one message.
    fn send_bytes(&self, bytes: &[u8]);
}

/// Receives whole byte messages.
pub(crate) trait BytesRx {
    /// Receives the next message into `buf` and returns its length. Stream channels (fds) read
    /// exactly `buf.len()` bytes: the caller knows the message size.
    fn recv_bytes(&self, buf: &mut [u8]) -> usize;
}

impl BytesTx for Sender<u8, Plain> {
    fn send_bytes(&self, bytes: &[u8]) {
        self.put_bytes(bytes).expect("Sender::put_bytes");
    }
}

impl BytesRx for Receiver<u8, Plain> {
    fn recv_bytes(&self, buf: &mut [u8]) -> usize {
        self.get_bytes_into(buf).expect("Receiver::get_bytes_into")
    }
}

impl BytesTx for File {
    fn send_bytes(&self, bytes: &[u8]) {
        (&*self).write_all(bytes).expect("write");
    }
}

impl BytesRx for File {
    fn recv_bytes(&self, buf: &mut [u8]) -> usize {
        (&*self)
            .read_exact(buf)
            .expect("read (EOF: the peer died?)");
        buf.len()
    }
}

/// An OS pipe, `(read end, write end)`.
pub(crate) fn os_pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (owned(fds[0]), owned(fds[1]))
}

/// A connected `AF_UNIX`, `SOCK_STREAM` socketpair.
pub(crate) fn socketpair() -> (File, File) {
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
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    (owned(fds[0]), owned(fds[1]))
}

fn owned(fd: libc::c_int) -> File {
    // SAFETY: `fd` was just returned by pipe2/socketpair and is owned by nobody else.
    File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Two pipes as duplex ends `(parent, child)`: each end writes one pipe and reads the other.
pub(crate) fn pipe_duplex() -> ((File, File), (File, File)) {
    let (down_r, down_w) = os_pipe();
    let (up_r, up_w) = os_pipe();
    ((down_w, up_r), (up_w, down_r))
}

/// A socketpair as duplex ends `(parent, child)`, each a (write, read) pair of one socket.
pub(crate) fn socket_duplex() -> ((File, File), (File, File)) {
    let (a, b) = socketpair();
    let (a2, b2) = (a.try_clone().expect("dup"), b.try_clone().expect("dup"));
    ((a, a2), (b, b2))
}

// ----------------------------------------------------------------------------------------
// Children

/// Where the parent and its children meet: a count of ready children and a start flag.
#[repr(C)]
#[derive(Default)]
struct Meet {
    ready: Line<AtomicU32>,
    go: Line<AtomicU32>,
}

/// What a child's body uses to report ready and wait for the start.
pub(crate) struct Start<'a>(&'a Meet);

impl Start<'_> {
    /// Reports this child ready and waits until the parent says go.
    pub(crate) fn ready_and_wait(&self) {
        self.0.ready.fetch_add(1, Ordering::Release);
        let mut spins = 0u32;
        while self.0.go.load(Ordering::Acquire) == 0 {
            // Siblings may share this core: spin a little, then let them run.
            if spins < 1000 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Forked children, pinned to [`CHILD_CORE`]. Dropping a team that was not joined (the parent
/// panicked) kills and reaps its children.
pub(crate) struct Team {
    pids: Vec<libc::pid_t>,
    meet: Shm<Meet>,
}

impl Team {
    /// Forks `n` children; child `i` runs `body(i, start)` and leaves with `_exit` (status 1 if
    /// the body panicked).
    ///
    /// # Panics
    /// If fork fails (children forked so far are killed).
    pub(crate) fn spawn(n: usize, body: impl Fn(usize, &Start<'_>)) -> Self {
        let mut team = Self {
            pids: Vec::with_capacity(n),
            meet: Shm::new(Meet::default()),
        };
        for i in 0..n {
            // SAFETY: the bench is single-threaded here; the child only runs `body` on memory
            // it inherited and leaves with `_exit`, never returning into the caller.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid == 0 {
                let ok = catch_unwind(AssertUnwindSafe(|| {
                    pin_to(CHILD_CORE);
                    body(i, &Start(&team.meet));
                }))
                .is_ok();
                // SAFETY: ends the child at once: no destructors, no return into the bench.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            team.pids.push(pid);
        }
        team
    }

    /// Waits until every child reported ready.
    ///
    /// # Panics
    /// If a child exited first.
    pub(crate) fn wait_ready(&mut self) {
        while (self.meet.ready.load(Ordering::Acquire) as usize) < self.pids.len() {
            for k in 0..self.pids.len() {
                let pid = self.pids[k];
                let mut status = 0;
                // SAFETY: `pid` is our unreaped child; `status` is a valid out-pointer.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    self.pids.remove(k);
                    panic!("bench child {pid} exited before it was ready (status {status:#x})");
                }
            }
            std::thread::yield_now();
        }
    }

    /// Lets every child past [`Start::ready_and_wait`].
    pub(crate) fn go(&self) {
        self.meet.go.store(1, Ordering::Release);
    }

    /// Waits for every child to exit.
    ///
    /// # Panics
    /// If one failed (its body panicked, or it was killed).
    pub(crate) fn join(mut self) {
        while let Some(pid) = self.pids.pop() {
            let mut status = 0;
            // SAFETY: `pid` is our unreaped child; `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "bench child {pid} failed (status {status:#x})"
            );
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        for &pid in &self.pids {
            // SAFETY: `pid` is our own unreaped child, so the id cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let mut status = 0;
            // SAFETY: as above; reaps it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}

// ----------------------------------------------------------------------------------------
// Runners

/// `n` timed round trips of a `u64` (after [`WARM`] untimed ones): the parent sends `c` on
/// `mine`, a child echoes `c + 1` on `theirs`. With `pause`, the parent sleeps that long before
/// each round trip, so the child has gone to sleep waiting; only the round trips are timed.
pub(crate) fn round_trips<E: Tx<u64> + Rx<u64>>(
    mine: E,
    theirs: E,
    n: u64,
    pause: Option<Duration>,
) -> Duration {
    const HELLO: u64 = u64::MAX - 1;
    const STOP: u64 = u64::MAX;
    let mut team = Team::spawn(1, |_, start| {
        theirs.attach();
        theirs.send(&HELLO);
        start.ready_and_wait();
        let mut expect = 0;
        loop {
            let m = theirs.recv();
            if m == STOP {
                break;
            }
            assert_eq!(m, expect, "echo child: message out of sequence");
            expect += 1;
            theirs.send(&(m + 1));
        }
        assert_eq!(expect, WARM + n, "echo child: wrong number of messages");
    });
    team.wait_ready();
    drop(theirs);
    assert_eq!(mine.recv(), HELLO);
    team.go();
    let exchange = |c: u64| {
        mine.send(&c);
        assert_eq!(mine.recv(), c + 1, "wrong echo");
    };
    for c in 0..WARM {
        exchange(c);
    }
    let elapsed = match pause {
        None => {
            let t = Instant::now();
            for c in WARM..WARM + n {
                exchange(c);
            }
            t.elapsed()
        }
        Some(pause) => {
            let mut total = Duration::ZERO;
            for c in WARM..WARM + n {
                std::thread::sleep(pause);
                let t = Instant::now();
                exchange(c);
                total += t.elapsed();
            }
            total
        }
    };
    mine.send(&STOP);
    team.join();
    elapsed
}

/// `producers` children send `total` messages between them (after [`WARM`] untimed ones
/// each) on `tx`; the parent receives them all on `rx`, checking per-producer order and counts.
/// Returns the time to receive the `total` timed messages.
pub(crate) fn one_way<M: Msg, T: Tx<M>, R: Rx<M>>(
    tx: T,
    rx: &R,
    producers: usize,
    total: u64,
) -> Duration {
    let share =
        |i: usize| total / producers as u64 + u64::from((i as u64) < total % producers as u64);
    let mut team = Team::spawn(producers, |i, start| {
        tx.send(&M::stamp(i, HELLO_SEQ));
        start.ready_and_wait();
        for seq in 0..WARM + share(i) {
            tx.send(&M::stamp(i, seq));
        }
    });
    team.wait_ready();
    drop(tx);
    let mut next = vec![0u64; producers];
    for _ in 0..producers {
        let (id, seq) = rx.recv().unstamp();
        assert_eq!(seq, HELLO_SEQ, "expected hello from every producer first");
        assert_eq!(next[id], 0, "two hellos from producer {id}");
        next[id] = 1;
    }
    next.fill(0);
    team.go();
    let mut take = || {
        let (id, seq) = rx.recv().unstamp();
        assert_eq!(seq, next[id], "producer {id}: message lost or out of order");
        next[id] += 1;
    };
    for _ in 0..WARM * producers as u64 {
        take();
    }
    let t = Instant::now();
    for _ in 0..total {
        take();
    }
    let elapsed = t.elapsed();
    for (i, &got) in next.iter().enumerate() {
        assert_eq!(got, WARM + share(i), "producer {i}: wrong message count");
    }
    team.join();
    elapsed
}

/// Stamps message `seq` into the first and last 8 bytes of `buf`.
fn stamp_bytes(buf: &mut [u8], seq: u64) {
    let n = buf.len();
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[n - 8..].copy_from_slice(&seq.to_le_bytes());
}

/// A buffer of `len` bytes with a position-dependent pattern.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A child sends `n` messages of `len` bytes (after [`WARM_BIG`] untimed ones) on `tx`; the
/// parent receives them into one buffer on `rx`, checking lengths, sequence stamps and the
/// pattern in the middle. Returns the time to receive the `n` timed messages.
pub(crate) fn one_way_bytes<T: BytesTx, R: BytesRx>(tx: T, rx: R, len: usize, n: u64) -> Duration {
    assert!(len >= 16);
    let mut team = Team::spawn(1, |_, start| {
        tx.send_bytes(&HELLO_SEQ.to_le_bytes());
        let mut buf = pattern(len);
        start.ready_and_wait();
        for seq in 0..WARM_BIG + n {
            stamp_bytes(&mut buf, seq);
            tx.send_bytes(&buf);
        }
    });
    team.wait_ready();
    drop(tx);
    let mut buf = vec![0u8; len];
    assert_eq!(rx.recv_bytes(&mut buf[..8]), 8);
    assert_eq!(buf[..8], HELLO_SEQ.to_le_bytes());
    team.go();
    let mid = len / 2;
    let mut take = |seq: u64| {
        assert_eq!(rx.recv_bytes(&mut buf), len, "message length");
        assert_eq!(buf[..8], seq.to_le_bytes(), "message {seq}: head stamp");
        assert_eq!(
            buf[len - 8..],
            seq.to_le_bytes(),
            "message {seq}: tail stamp"
        );
        assert_eq!(buf[mid], (mid % 251) as u8, "message {seq}: body");
    };
    for seq in 0..WARM_BIG {
        take(seq);
    }
    let t = Instant::now();
    for seq in WARM_BIG..WARM_BIG + n {
        take(seq);
    }
    let elapsed = t.elapsed();
    team.join();
    elapsed
}

/// `n` copies of `len` bytes between two warm buffers on this core (`memcpy`).
pub(crate) fn memcpy(len: usize, n: u64) -> Duration {
    let src = pattern(len);
    let mut dst = vec![0u8; len];
    for _ in 0..WARM_BIG {
        dst.copy_from_slice(black_box(&src));
    }
    let t = Instant::now();
    for _ in 0..n {
        black_box(&mut dst).copy_from_slice(black_box(&src));
    }
    let elapsed = t.elapsed();
    assert_eq!(dst, src);
    elapsed
}

// ----------------------------------------------------------------------------------------
// Python

/// Python's `multiprocessing.Queue` between a parent pinned to core 0 and a child pinned to
/// core 1, measured the way the runners above measure ours: round trips of an 8-byte message
/// (echoed by the child) and one-way throughput of 8-byte messages, each checked.
const PYTHON: &str = r#"
import multiprocessing as mp, os, struct, sys, time
WARM = 1000
def pack(i): return struct.pack('<Q', i)
def echo(down, up):
    os.sched_setaffinity(0, {1})
    while True:
        m = down.get()
        if m is None: break
        up.put(m)
def produce(q, n):
    os.sched_setaffinity(0, {1})
    for i in range(n): q.put(pack(i))
def main():
    rt_n, tp_n = int(sys.argv[1]), int(sys.argv[2])
    os.sched_setaffinity(0, {0})
    ctx = mp.get_context('fork')
    down, up = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=echo, args=(down, up)); p.start()
    for i in range(WARM):
        m = pack(i); down.put(m); assert up.get() == m
    t = time.perf_counter_ns()
    for i in range(WARM, WARM + rt_n):
        m = pack(i); down.put(m); assert up.get() == m
    rt_ns = (time.perf_counter_ns() - t) / rt_n
    down.put(None); p.join(); assert p.exitcode == 0
    q = ctx.Queue()
    p = ctx.Process(target=produce, args=(q, WARM + tp_n)); p.start()
    for i in range(WARM): assert struct.unpack('<Q', q.get())[0] == i
    t = time.perf_counter_ns()
    for i in range(WARM, WARM + tp_n): assert struct.unpack('<Q', q.get())[0] == i
    tp_ns = (time.perf_counter_ns() - t) / tp_n
    p.join(); assert p.exitcode == 0
    print(f"PYRESULT rt_ns={rt_ns:.1f} tp_ns={tp_ns:.1f}", flush=True)
main()
"#;

/// Python's numbers: ns per round trip and ns per message one way.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PythonQueue {
    pub(crate) round_trip_ns: f64,
    pub(crate) one_way_ns: f64,
}

/// Whether `python3` runs here.
pub(crate) fn have_python() -> bool {
    Command::new("python3")
        .arg("-c")
        .arg("import multiprocessing")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the Python script for `round_trips` round trips and `messages` one-way messages.
///
/// # Panics
/// If the script fails or prints no result line.
pub(crate) fn python_queue(round_trips: u64, messages: u64) -> PythonQueue {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYTHON)
        .arg(round_trips.to_string())
        .arg(messages.to_string())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python3 failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PYRESULT "))
        .unwrap_or_else(|| panic!("no PYRESULT line in python3 output: {stdout}"));
    let field = |key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    PythonQueue {
        round_trip_ns: field("rt_ns"),
        one_way_ns: field("tp_ns"),
    }
}
