#!/usr/bin/env python3
"""Python's multiprocessing measured the way multiproc-bench measures the Rust mechanisms.

Two processes (or more, for the producers and consumers cases) are started with the 'fork'
context, pinned to two CPUs, and exchange messages that are all checked: length, sequence
number and a checksum of the payload, so a broken transport cannot look fast.

Server mode, driven by the Rust harness::

    python3 mp_bench.py serve --cpus A,B      (or --cpus none for unpinned)

reads one JSON command per line on stdin and writes exactly one JSON reply line per command on
stdout, after a hello line ``{"ok": true, "python": "3.11.7"}``. Commands::

    {"cmd": "measure", "mech": M, "bench": B, "n": N, "pause_us": P, "check": "full"|"pages"}
    {"cmd": "quit"}

M is "py-queue" (multiprocessing.Queue put/get of a bytes object), "py-pipe" (Pipe
Connection.send/recv of a bytes object, pickled) or "py-pipe-bytes" (Connection.send_bytes /
recv_bytes_into). B is the JSON of the Rust ``Bench`` enum, e.g.
``{"kind": "latency", "mode": "awake"}`` or ``{"kind": "throughput", "size": 4096}``.

Reply: ``{"ok": true, "ns_per_unit": F, "units": N, "verified": V, "cpu_s": C}`` or
``{"ok": false, "error": "..."}`` (plus ``"not_applicable": true`` when the mechanism cannot
carry the case). ``cpu_s`` is the CPU time (user + system) of the server and its children
during the command.

Standalone, for a human::

    python3 mp_bench.py --quick [--cpus A,B]

runs a small set and prints a table. Python 3.8+, standard library only, Linux.
"""

import argparse
import json
import os
import platform
import resource
import signal
import struct
import sys
import threading
import time
import zlib

try:
    import ctypes

    _LIBC = ctypes.CDLL(None, use_errno=True)
except Exception:  # pragma: no cover - ctypes is optional here
    _LIBC = None

MECHS = ("py-queue", "py-pipe", "py-pipe-bytes")
PAGE = 4096
PATTERN = bytes(range(251))
# No progress for this long while waiting for a message is a failure.
STALL_S = 30.0
# How often the watchdog looks at the children.
WATCH_PERIOD_S = 0.1

Q = struct.Struct("<Q")
QQ = struct.Struct("<QQ")
QQQ = struct.Struct("<QQQ")


class CheckError(Exception):
    """A message was lost, duplicated, reordered or corrupted, or a process died."""


class NotApplicable(Exception):
    """The mechanism cannot carry this case."""


def warmups(size):
    """Untimed messages sent before the timed ones."""
    if size >= 1 << 20:
        return 4
    if size >= 64 << 10:
        return 16
    return 100


# ---------------------------------------------------------------------------------------------
# Messages


class Codec:
    """Builds and checks the messages of one size.

    8 bytes: the sequence number only; 9 to 15 bytes: the sequence number then a fixed
    pattern. 16 bytes and more: ``<QQ`` (seq, check word) then a body, or with ``tagged``
    ``<QQQ`` (tag, seq, check word) then a body. The body is a fixed pattern with the sequence
    number written at the start of every 4096-byte page (its stamps), so a stale page is
    detected. The check word is the CRC-32 of the stamps, XORed with "full" with the CRC-32 of
    the pattern (the body with its stamps zeroed), a constant.

    Like the Rust side, the sender keeps one buffer and only rewrites the header and the stamps
    of each message (``make`` returns that buffer, valid until the next call), and the receiver
    does one pass over the payload: with "full" it stamps its own expected buffer the same way
    and compares the whole message with it (one memcmp); with "pages" it checks the header and
    the stamps only, so a copy near memory bandwidth is not slowed by a second pass.
    """

    def __init__(self, size, check, tagged=False):
        if check not in ("full", "pages"):
            raise ValueError("check must be 'full' or 'pages', not %r" % (check,))
        if size < (24 if tagged else 8):
            raise NotApplicable("message size %d is too small" % size)
        self.size = size
        self.tagged = tagged
        self.full = check == "full"
        if tagged:
            self.hdr = 24
        elif size >= 16:
            self.hdr = 16
        else:
            self.hdr = 8
        hdr = self.hdr
        body_len = size - hdr
        template = bytearray(size)
        template[hdr:] = (PATTERN * (body_len // len(PATTERN) + 1))[:body_len]
        self.stamps = tuple(range(hdr, size - 7, PAGE))
        for o in self.stamps:
            template[o : o + 8] = bytes(8)
        self.template = bytes(template)
        self.base = zlib.crc32(memoryview(template)[hdr:]) if self.full else 0
        # The sender's buffer and the receiver's expected message, each stamped in place.
        self.out = bytearray(template)
        self.exp = bytearray(template)
        self._out_stamps = self._stamp_view(self.out)
        self._exp_stamps = self._stamp_view(self.exp)
        self.make = self._maker()
        self.check = self._checker()
        self.check_tagged = self._tagged_checker()

    def _stamp_view(self, buf):
        """The stamps of `buf` as one strided view of 8-byte words (several stamps only)."""
        if len(self.stamps) < 2:
            return None
        words = memoryview(buf)[: self.size // 8 * 8].cast("Q")
        return words[self.hdr // 8 :: PAGE // 8]

    def _stamper(self, buf, view):
        """A function that writes message `seq` (with `tag`) into `buf` and returns `buf`.
        Flat closures: this runs once per message on both sides."""
        pack, crc32, base = Q.pack, zlib.crc32, self.base
        stamps = self.stamps
        n = len(stamps)
        if self.hdr == 8:
            pack_seq = Q.pack_into

            def stamp(seq, tag=0):
                pack_seq(buf, 0, seq)
                return buf

            return stamp
        if self.tagged:
            pack_into = QQQ.pack_into
            if n == 1:
                o = stamps[0]

                def stamp(seq, tag=0):
                    sb = pack(seq)
                    buf[o : o + 8] = sb
                    pack_into(buf, 0, tag, seq, crc32(sb) ^ base)
                    return buf

            elif n:

                def stamp(seq, tag=0):
                    rep = pack(seq) * n
                    view[:] = memoryview(rep).cast("Q")
                    pack_into(buf, 0, tag, seq, crc32(rep) ^ base)
                    return buf

            else:

                def stamp(seq, tag=0):
                    pack_into(buf, 0, tag, seq, base)
                    return buf

            return stamp
        pack_into = QQ.pack_into
        if n == 1:
            o = stamps[0]

            def stamp(seq, tag=0):
                sb = pack(seq)
                buf[o : o + 8] = sb
                pack_into(buf, 0, seq, crc32(sb) ^ base)
                return buf

        elif n:

            def stamp(seq, tag=0):
                rep = pack(seq) * n
                view[:] = memoryview(rep).cast("Q")
                pack_into(buf, 0, seq, crc32(rep) ^ base)
                return buf

        else:

            def stamp(seq, tag=0):
                pack_into(buf, 0, seq, base)
                return buf

        return stamp

    def _maker(self):
        """make(seq, tag=0): the message `seq`, the sender's buffer (valid until the next
        call) or, for 8 bytes, a bytes object."""
        if self.size == 8:
            return lambda seq, tag=0: Q.pack(seq)  # noqa: E731
        return self._stamper(self.out, self._out_stamps)

    def _stamps_of(self, m):
        """The bytes of the stamps of message `m` (of the right length), one after the other."""
        stamps = self.stamps
        if len(stamps) == 0:
            return b""
        if len(stamps) == 1:
            o = stamps[0]
            return m[o : o + 8]
        words = memoryview(m)[: self.size // 8 * 8].cast("Q")
        return words[self.hdr // 8 :: PAGE // 8].tobytes()

    def _checker(self):
        size, hdr, full = self.size, self.hdr, self.full
        stamp = self._stamper(self.exp, self._exp_stamps)
        unpack_from = QQ.unpack_from
        crc32, base = zlib.crc32, self.base
        stamps_of = self._stamps_of
        diagnose = self._diagnose
        pack, n = Q.pack, len(self.stamps)

        if full or hdr == 8:

            def check(m, k, expected):
                """Checks message number `k`, which must carry sequence `expected`."""
                # The bytearray first: its comparison is one memcmp (a memoryview's is not).
                if stamp(expected) != m:
                    raise diagnose(m, k, expected)

        else:

            def check(m, k, expected):
                """Checks message number `k`, which must carry sequence `expected`."""
                if len(m) != size:
                    raise diagnose(m, k, expected)
                seq, cs = unpack_from(m)
                if seq != expected:
                    raise diagnose(m, k, expected)
                rep = stamps_of(m)
                if rep != pack(seq) * n or cs != crc32(rep) ^ base:
                    raise CheckError("message %d: checksum mismatch" % k)

        return check

    def _tagged_checker(self):
        if not self.tagged:
            return None
        size, full = self.size, self.full
        exp = self.exp
        stamp = self._stamper(exp, self._exp_stamps)
        unpack_from = QQQ.unpack_from
        crc32, base, pack = zlib.crc32, self.base, Q.pack
        stamps_of = self._stamps_of
        n = len(self.stamps)

        def check_tagged(m, k):
            """Checks length and checksum of tagged message number `k`; returns (tag, seq)."""
            if len(m) != size:
                raise CheckError("message %d: length %d expected %d" % (k, len(m), size))
            tag, seq, cs = unpack_from(m)
            if full:
                if stamp(seq, tag) != m:
                    raise CheckError(
                        "message %d: checksum mismatch (byte %d differs)"
                        % (k, _first_difference(exp, m))
                    )
            else:
                rep = stamps_of(m)
                if rep != pack(seq) * n or cs != crc32(rep) ^ base:
                    raise CheckError("message %d: checksum mismatch" % k)
            return tag, seq

        return check_tagged

    def _diagnose(self, m, k, expected):
        """The error for message number `k` that is not message `expected`."""
        if len(m) != self.size:
            return CheckError("message %d: length %d expected %d" % (k, len(m), self.size))
        seq = Q.unpack_from(m, 8 if self.tagged else 0)[0]
        if seq != expected:
            return CheckError("message %d: sequence %d expected %d" % (k, seq, expected))
        if self.hdr == 8:
            return CheckError("message %d: payload mismatch" % k)
        exp = bytearray(self.template)
        self._stamper(exp, self._stamp_view(exp))(expected)
        return CheckError(
            "message %d: checksum mismatch (byte %d differs)" % (k, _first_difference(exp, m))
        )


def _first_difference(a, b):
    """The first offset where `a` and `b` (of the same length) differ, or -1."""
    for i in range(0, len(a), PAGE):
        if a[i : i + PAGE] != b[i : i + PAGE]:
            for j in range(i, min(i + PAGE, len(a))):
                if a[j] != b[j]:
                    return j
    return -1


def faulty(codec, k, fault, tag=0):
    """Message `k` damaged as `fault` asks (for testing the checks), or None to send nothing."""
    what = fault["what"]
    if what == "die":
        os._exit(3)
    if what == "stall":
        time.sleep(3600)
    if what == "skip":
        return codec.make(k + 1, tag)
    m = bytearray(codec.make(k, tag))
    if what == "corrupt":
        m[-1] ^= 0xFF
    elif what == "short":
        del m[-1]
    elif what == "drop":
        return None
    return m


def echo_error(m, k):
    if not isinstance(m, (bytes, bytearray)) or len(m) != 8:
        n = len(m) if isinstance(m, (bytes, bytearray)) else -1
        return CheckError("message %d: length %d expected 8" % (k, n))
    return CheckError("message %d: echo %d expected %d" % (k, Q.unpack(m)[0], k + 1))


def xor_upto(m):
    """0 ^ 1 ^ ... ^ m."""
    return (m, 1, m + 1, 0)[m % 4]


# ---------------------------------------------------------------------------------------------
# Processes


def _pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _child_main(fn, cpu, err_w, parent_pid, name, args):
    """Runs in every child: quiet stdout, die with the parent, pin, run, report errors."""
    os.dup2(2, 1)  # stdout belongs to the protocol
    if _LIBC is not None:
        try:
            _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:
            pass
    if os.getppid() != parent_pid:
        os._exit(1)
    try:
        _pin(cpu)
        fn(*args)
    except BaseException as e:  # noqa: B036 - every failure must reach the parent
        try:
            err_w.send("%s: %s" % (name, e if isinstance(e, CheckError) else repr(e)))
        except Exception:
            pass
        os._exit(1)


class Run:
    """The children, queues and pipes of one command, and the watchdog that turns a dead or
    stuck child into an error instead of a hang."""

    def __init__(self, ctx, stall_s):
        self.ctx = ctx
        self.stall_s = stall_s
        self.procs = []
        self.queues = []
        self.conns = []
        self.wake = []
        self.err_r, self.err_w = ctx.Pipe(duplex=False)
        self.k = 0  # the message the parent is waiting for, for the watchdog
        self.reason = None
        self.fired = False
        self.culprit = None
        self._stop = threading.Event()
        self._thread = None

    def gate(self):
        """(ready, go): a child that reached the start releases `ready` and waits for `go`."""
        return self.ctx.Semaphore(0), self.ctx.Event()

    def release(self, ready, go, children, k):
        """Waits until `children` children wait at the gate, then opens it; returns the time
        it opened, where timing starts. `k` is the next message, for errors."""
        for _ in range(children):
            while not ready.acquire(timeout=WATCH_PERIOD_S):
                if self.fired:
                    raise self.lost(k)
        t0 = time.perf_counter_ns()
        go.set()
        return t0

    def queue(self):
        q = self.ctx.Queue()
        self.queues.append(q)
        return q

    def pipe(self, duplex):
        a, b = self.ctx.Pipe(duplex=duplex)
        self.conns += [a, b]
        return a, b

    def spawn(self, name, fn, cpu, *args):
        p = self.ctx.Process(
            target=_child_main,
            args=(fn, cpu, self.err_w, os.getpid(), name, args),
            name=name,
            daemon=True,
        )
        p.start()
        self.procs.append(p)
        return p

    def watch(self, wake_queue=None):
        """Starts the watchdog (after every child is started). On failure it kills the
        children, which ends a pipe read with EOF, and puts None into `wake_queue`."""
        if wake_queue is not None:
            self.wake.append(wake_queue)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        last_k, last_t = self.k, time.monotonic()
        while not self._stop.wait(WATCH_PERIOD_S):
            for p in self.procs:
                code = p.exitcode
                if code is not None and code != 0:
                    # The parent may still be reading what the child sent before it died;
                    # lost() names the message it was really waiting for.
                    self.culprit = p
                    self._fire(self.child_error(0.5))
                    return
            now = time.monotonic()
            if self.k != last_k:
                last_k, last_t = self.k, now
            elif now - last_t > self.stall_s:
                self._fire("timed out waiting for message %d" % self.k)
                return

    def _fire(self, reason):
        self.fired = True
        self.reason = reason
        for p in self.procs:
            if p.exitcode is None:
                p.kill()
        for q in self.wake:
            try:
                q.put(None)
            except Exception:
                pass

    def stop_watch(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def child_error(self, timeout):
        try:
            if self.err_r.poll(timeout):
                return self.err_r.recv()
        except Exception:
            pass
        return None

    def lost(self, k):
        """The error for a message that will not come (EOF, or the watchdog's None)."""
        self.stop_watch()
        if self.reason is not None:
            return CheckError(self.reason)
        if not self.fired:
            for p in self.procs:
                p.join(1.0)
        err = self.child_error(0.5)
        if err:
            return CheckError(err)
        for p in ([self.culprit] if self.culprit else []) + self.procs:
            if p.exitcode is not None and p.exitcode != 0:
                return CheckError(
                    "%s exited with code %d while waiting for message %d"
                    % (p.name, p.exitcode, k)
                )
        return CheckError("a child exited while waiting for message %d" % k)

    def close(self, ok):
        """Joins every child (killing them after an error) and closes queues and pipes.
        Returns an error message if a child misbehaved at the end."""
        self.stop_watch()
        problem = None
        if not ok:
            for p in self.procs:
                if p.exitcode is None:
                    p.kill()
        for p in self.procs:
            p.join(10.0 if ok else 2.0)
            if p.exitcode is None:
                p.kill()
                p.join(2.0)
                problem = problem or "%s did not exit" % p.name
            elif ok and p.exitcode != 0:
                problem = problem or (
                    self.child_error(0.2)
                    or "%s exited with code %d" % (p.name, p.exitcode)
                )
        for q in self.queues:
            if not ok or problem:
                q.cancel_join_thread()
            q.close()
            if ok and not problem:
                q.join_thread()
        for c in self.conns + [self.err_r, self.err_w]:
            c.close()
        for p in self.procs:
            try:
                p.close()
            except Exception:
                pass
        return problem


# ---------------------------------------------------------------------------------------------
# Latency


def _lat_child(mech, chan, total):
    pack = Q.pack
    if mech == "py-queue":
        recv, send = chan[0].get, chan[1].put
    elif mech == "py-pipe":
        recv, send = chan.recv, chan.send
    else:
        recv, send = chan.recv_bytes, chan.send_bytes
    for k in range(total):
        m = recv()
        if m != pack(k):
            if not isinstance(m, bytes) or len(m) != 8:
                raise CheckError("message %d: not an 8-byte message" % k)
            raise CheckError("message %d: sequence %d expected %d" % (k, Q.unpack(m)[0], k))
        send(pack(k + 1))


def latency(run, mech, mode, n, pause_us, cpus):
    if mode not in ("awake", "asleep", "one-core"):
        raise ValueError("unknown latency mode %r" % (mode,))
    a, b = cpus if cpus else (None, None)
    child_cpu = a if mode == "one-core" else b
    w = 100
    total = w + n
    if mech == "py-queue":
        req, rep = run.queue(), run.queue()
        run.spawn("echo child", _lat_child, child_cpu, mech, (req, rep), total)
        send, recv = req.put, rep.get
        run.watch(rep)
    else:
        mine, theirs = run.pipe(True)
        run.spawn("echo child", _lat_child, child_cpu, mech, theirs, total)
        theirs.close()
        if mech == "py-pipe":
            send, recv = mine.send, mine.recv
        else:
            send, recv = mine.send_bytes, mine.recv_bytes
        run.watch()
    pack = Q.pack
    perf = time.perf_counter_ns
    k = 0
    try:
        for k in range(w):
            send(pack(k))
            m = recv()
            if m != pack(k + 1):
                if m is None:
                    raise run.lost(k)
                raise echo_error(m, k)
        elapsed = 0
        if mode == "asleep":
            pause = pause_us / 1e6
            sleep = time.sleep
            for k in range(w, total):
                run.k = k
                sleep(pause)
                t0 = perf()
                send(pack(k))
                m = recv()
                elapsed += perf() - t0
                if m != pack(k + 1):
                    if m is None:
                        raise run.lost(k)
                    raise echo_error(m, k)
        else:
            t0 = perf()
            for k in range(w, total):
                run.k = k
                send(pack(k))
                m = recv()
                if m != pack(k + 1):
                    if m is None:
                        raise run.lost(k)
                    raise echo_error(m, k)
            elapsed = perf() - t0
    except (EOFError, OSError):
        raise run.lost(k)
    return elapsed, n


# ---------------------------------------------------------------------------------------------
# Throughput


def _tp_child(mech, chan, ready, go, codec, w, n, fault):
    make = codec.make
    if mech == "py-queue":
        # put() pickles later, in the queue's feeder thread: it needs a message of its own.
        put = chan.put
        send = lambda m: put(bytes(m))  # noqa: E731
    elif mech == "py-pipe":
        # send() pickles at once, but a bytearray pickles (protocol 4) through a bytes copy
        # anyway and unpickles into another copy: a bytes object is cheaper on both sides.
        snd = chan.send
        send = lambda m: snd(bytes(m))  # noqa: E731
    else:
        send = chan.send_bytes  # writes the buffer before returning
    bad = fault["at"] if fault else -1
    for k in range(w + n):
        if k == w:
            ready.release()
            go.wait()
        if k == bad:
            m = faulty(codec, k, fault)
            if m is not None:
                send(m)
            continue
        send(make(k))


def throughput(run, mech, size, n, check, cpus, fault):
    codec = Codec(size, check)
    b = cpus[1] if cpus else None
    w = warmups(size)
    ready, go = run.gate()
    if mech == "py-queue":
        q = run.queue()
        run.spawn("sender", _tp_child, b, mech, q, ready, go, codec, w, n, fault)
        run.watch(q)
        get = q.get

        def recv(k):
            m = get()
            if m is None:
                raise run.lost(k)
            return m

    else:
        mine, theirs = run.pipe(False)
        run.spawn("sender", _tp_child, b, mech, theirs, ready, go, codec, w, n, fault)
        theirs.close()
        run.watch()
        if mech == "py-pipe":
            recv = lambda k: mine.recv()  # noqa: E731
        else:
            buf = bytearray(size)
            rbi = mine.recv_bytes_into
            import multiprocessing

            too_short = multiprocessing.BufferTooShort

            def recv(k):
                try:
                    got = rbi(buf)
                except too_short as e:
                    raise CheckError(
                        "message %d: length %d expected %d" % (k, len(e.args[0]), size)
                    )
                if got != size:
                    raise CheckError("message %d: length %d expected %d" % (k, got, size))
                return buf

    check = codec.check
    perf = time.perf_counter_ns
    k = 0
    try:
        for k in range(w):
            check(recv(k), k, k)
        k = w
        t0 = run.release(ready, go, 1, k)
        for k in range(w, w + n):
            run.k = k
            check(recv(k), k, k)
        elapsed = perf() - t0
    except (EOFError, OSError):
        raise run.lost(k)
    return elapsed, n


# ---------------------------------------------------------------------------------------------
# Producers and consumers (py-queue only)


def _producer(q, ready, go, codec, pid, w, count, fault):
    put = q.put  # pickles later: every message must be an object of its own
    make = codec.make
    bad = fault["at"] if fault and pid == 0 else -1
    for s in range(w + count):
        if s == w:
            ready.release()
            go.wait()
        if s == bad:
            m = faulty(codec, s, fault, pid)
            if m is not None:
                put(bytes(m))
            continue
        put(bytes(make(s, pid)))


def producers(run, mech, k_prod, n, check, cpus, fault):
    if mech != "py-queue":
        raise NotApplicable("%s connects two processes only" % mech)
    if k_prod < 1:
        raise ValueError("producers must be at least 1")
    codec = Codec(64, check, tagged=True)
    b = cpus[1] if cpus else None
    w = max(1, 100 // k_prod)
    counts = [n // k_prod + (1 if i < n % k_prod else 0) for i in range(k_prod)]
    q = run.queue()
    ready, go = run.gate()
    for i in range(k_prod):
        run.spawn("producer %d" % i, _producer, b, q, ready, go, codec, i, w, counts[i], fault)
    run.watch(q)
    get = q.get
    check_tagged = codec.check_tagged
    expected = [0] * k_prod
    perf = time.perf_counter_ns

    def take(k):
        m = get()
        if m is None:
            raise run.lost(k)
        tag, seq = check_tagged(m, k)
        if tag >= k_prod:
            raise CheckError("message %d: producer %d of %d" % (k, tag, k_prod))
        if seq != expected[tag]:
            raise CheckError(
                "message %d: producer %d sequence %d expected %d" % (k, tag, seq, expected[tag])
            )
        expected[tag] = seq + 1

    for k in range(w * k_prod):
        take(k)
    t0 = run.release(ready, go, k_prod, w * k_prod)
    for k in range(w * k_prod, w * k_prod + n):
        run.k = k
        take(k)
    elapsed = perf() - t0
    for i in range(k_prod):
        if expected[i] != w + counts[i]:
            raise CheckError(
                "producer %d: %d messages expected %d" % (i, expected[i] - w, counts[i])
            )
    return elapsed, n


def _cons_producer(q, ready, go, codec, w, n, k_cons, fault):
    put = q.put  # pickles later: every message must be an object of its own
    make = codec.make
    for s in range(w):
        put(bytes(make(s, 0)))
    ready.release()
    go.wait()
    bad = fault["at"] if fault else -1
    for s in range(n):
        if s == bad:
            m = faulty(codec, s, fault, 1)
            if m is not None:
                put(bytes(m))
            continue
        put(bytes(make(s, 1)))
    for _ in range(k_cons):
        put(None)


def _consumer(q, res, codec, cid):
    get = q.get
    check_tagged = codec.check_tagged
    count = total = xor = violations = 0
    last = -1
    j = 0
    while True:
        m = get()
        if m is None:
            break
        try:
            tag, seq = check_tagged(m, j)
        except CheckError as e:
            seq = QQQ.unpack_from(m)[1] if len(m) >= 24 else -1
            raise CheckError("its message %d (sequence %d): %s" % (j, seq, str(e).split(": ", 1)[1]))
        j += 1
        if tag == 0:
            res.put(("warm",))
            continue
        if seq <= last:
            violations += 1
        last = seq
        count += 1
        total += seq
        xor ^= seq
    t_end = time.perf_counter_ns()
    res.put(("done", cid, count, total, xor, violations, t_end))


def consumers(run, mech, k_cons, n, check, cpus, fault):
    if mech != "py-queue":
        raise NotApplicable("%s connects two processes only" % mech)
    if k_cons < 1:
        raise ValueError("consumers must be at least 1")
    codec = Codec(64, check, tagged=True)
    a, b = cpus if cpus else (None, None)
    w = 100
    q, res = run.queue(), run.queue()
    ready, go = run.gate()
    for i in range(k_cons):
        run.spawn("consumer %d" % i, _consumer, a if i % 2 == 0 else b, q, res, codec, i)
    run.spawn("producer", _cons_producer, b, q, ready, go, codec, w, n, k_cons, fault)
    # The parent sees no data messages; stall detection covers the whole run.
    run.stall_s = run.stall_s + n * 1e-4
    run.watch(res)
    # The warm-up is untimed: every consumer has checked its messages and waits for more,
    # and the producer waits at the gate, before timing starts.
    for k in range(w):
        r = res.get()
        if r is None:
            raise run.lost(k)
    t0 = run.release(ready, go, 1, w)
    done = []
    while len(done) < k_cons:
        r = res.get()
        if r is None:
            raise run.lost(w)
        if r[0] == "done":
            done.append(r)
    elapsed = max(r[6] for r in done) - t0
    count = sum(r[2] for r in done)
    if count != n:
        raise CheckError("consumers took %d messages expected %d" % (count, n))
    for r in done:
        if r[5]:
            raise CheckError("consumer %d: %d messages out of order or repeated" % (r[1], r[5]))
    if sum(r[3] for r in done) != n * (n - 1) // 2:
        raise CheckError("sum of sequence numbers mismatch (lost or duplicated messages)")
    x = 0
    for r in done:
        x ^= r[4]
    if x != xor_upto(n - 1):
        raise CheckError("xor of sequence numbers mismatch (lost or duplicated messages)")
    return elapsed, n


# ---------------------------------------------------------------------------------------------
# Commands


def _cpu_now():
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def measure(ctx, cmd, cpus):
    """Runs one measure command; returns the reply as a dict."""
    try:
        mech = cmd["mech"]
        bench = cmd["bench"]
        n = int(cmd["n"])
        pause_us = float(cmd.get("pause_us", 0))
        check = cmd.get("check", "full")
        fault = cmd.get("inject")  # testing only: {"at": k, "what": "corrupt" | ...}
        stall_s = float(cmd.get("stall_s", STALL_S))
        if mech not in MECHS:
            raise ValueError("unknown mechanism %r" % (mech,))
        if n < 1:
            raise ValueError("n must be at least 1")
        if check not in ("full", "pages"):
            raise ValueError("check must be 'full' or 'pages', not %r" % (check,))
        kind = bench["kind"]
        if kind in ("producers", "consumers") and mech != "py-queue":
            raise NotApplicable("%s connects two processes only" % mech)
    except NotApplicable as e:
        return {"ok": False, "error": "not applicable: %s" % e, "not_applicable": True}
    except Exception as e:
        return {"ok": False, "error": "bad command: %s" % (e,)}

    c0 = _cpu_now()
    run = Run(ctx, stall_s)
    ok = False
    reply = None
    try:
        if cpus:
            _pin(cpus[0])
        if kind == "latency":
            elapsed, verified = latency(run, mech, bench["mode"], n, pause_us, cpus)
        elif kind == "throughput":
            elapsed, verified = throughput(run, mech, int(bench["size"]), n, check, cpus, fault)
        elif kind == "producers":
            elapsed, verified = producers(
                run, mech, int(bench["producers"]), n, check, cpus, fault
            )
        elif kind == "consumers":
            elapsed, verified = consumers(
                run, mech, int(bench["consumers"]), n, check, cpus, fault
            )
        else:
            raise ValueError("unknown bench kind %r" % (kind,))
        ok = True
    except NotApplicable as e:
        reply = {"ok": False, "error": "not applicable: %s" % e, "not_applicable": True}
    except CheckError as e:
        reply = {"ok": False, "error": str(e)}
    except Exception as e:
        reply = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    finally:
        problem = run.close(ok)
    if reply is not None:
        return reply
    if problem:
        return {"ok": False, "error": problem}
    return {
        "ok": True,
        "ns_per_unit": elapsed / n,
        "units": n,
        "verified": verified,
        "cpu_s": round(_cpu_now() - c0, 6),
    }


def parse_cpus(text):
    if text is None or text == "none":
        return None
    parts = [int(x) for x in text.split(",")]
    if len(parts) != 2:
        raise ValueError("--cpus wants A,B or none")
    return (parts[0], parts[1])


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(cpus):
    try:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
    except Exception as e:
        reply({"ok": False, "error": "multiprocessing unavailable: %s" % e, "no_multiprocessing": True})
        return 1
    # Interrupted with the harness: leave quietly (children die with their parent).
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    reply({"ok": True, "python": platform.python_version()})
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict):
                raise ValueError("not an object")
        except ValueError as e:
            reply({"ok": False, "error": "bad command: %s" % e})
            continue
        what = cmd.get("cmd")
        if what == "quit":
            reply({"ok": True})
            return 0
        if what == "measure":
            reply(measure(ctx, cmd, cpus))
        else:
            reply({"ok": False, "error": "unknown command %r" % (what,)})


def quick(cpus):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    cases = [(m, {"kind": "latency", "mode": "awake"}, 2000) for m in MECHS]
    for size, n in ((8, 20000), (4096, 5000), (1 << 20, 50)):
        cases += [(m, {"kind": "throughput", "size": size}, n) for m in MECHS]
    print("Python %s, CPUs %s" % (platform.python_version(), cpus or "not pinned"))
    print("%-14s %-24s %12s %14s %12s" % ("mechanism", "case", "ns/unit", "per second", "MB/s"))
    for mech, bench, n in cases:
        cmd = {"cmd": "measure", "mech": mech, "bench": bench, "n": n, "pause_us": 0, "check": "full"}
        r = measure(ctx, cmd, cpus)
        if bench["kind"] == "latency":
            case = "round trip, 8 B"
        else:
            size = bench["size"]
            case = "one way, " + (
                "%d MiB" % (size >> 20) if size >= 1 << 20 else
                "%d KiB" % (size >> 10) if size >= 1 << 10 else "%d B" % size
            )
        if not r["ok"]:
            print("%-14s %-24s %s" % (mech, case, r["error"]))
            continue
        ns = r["ns_per_unit"]
        mbs = "%12.1f" % (bench["size"] * 1e3 / ns) if bench["kind"] == "throughput" else ""
        print("%-14s %-24s %12.0f %14.0f %s" % (mech, case, ns, 1e9 / ns, mbs))
    return 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", nargs="?", choices=["serve"], help="serve JSON commands on stdin")
    ap.add_argument("--cpus", help="A,B: parent on A, children on B; or none")
    ap.add_argument("--quick", action="store_true", help="run a small set and print a table")
    args = ap.parse_args(argv)
    if args.mode == "serve":
        return serve(parse_cpus(args.cpus))
    if args.quick:
        if args.cpus is None:
            allowed = sorted(os.sched_getaffinity(0))
            cpus = (allowed[0], allowed[1]) if len(allowed) >= 2 else None
        else:
            cpus = parse_cpus(args.cpus)
        return quick(cpus)
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
