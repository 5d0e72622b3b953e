//! The Python companion: Python's `multiprocessing` measured the way the Rust mechanisms are.
//!
//! The script `python/mp_bench.py` is compiled into the binary ([`SCRIPT`]) and run as
//! `python3 -c <script> serve --cpus A,B`, so no file is needed at run time. It reads one JSON
//! command per line on stdin and answers each with one JSON line on stdout; [`Python`] is the
//! client. Every command forks fresh child processes (the 'fork' context), pins the parent to
//! CPU A and the children to CPU B, sends a few untimed warm-up messages and then times
//! exactly `n` units with every message checked (length, sequence number, checksum).
//!
//! The server is robust to its own failures: a failed measurement (a corrupted message, a
//! child that died or stalled) is answered with an error and the server goes on. If the
//! server itself dies, stops answering or prints something that is not a reply, the client
//! kills it and every later [`Python::measure`] fails at once.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::model::Bench;

/// The server script, `python/mp_bench.py`.
pub const SCRIPT: &str = include_str!("../python/mp_bench.py");

/// The Python mechanisms, as (id, label), in table order.
pub const MECHANISMS: [(&str, &str); 3] = [
    ("py-queue", "Python mp.Queue"),
    ("py-pipe", "Python mp.Pipe (pickle)"),
    ("py-pipe-bytes", "Python mp.Pipe send_bytes"),
];

/// The interpreter run.
const PYTHON: &str = "python3";
/// How long the server may take to start and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to answer `quit` or to exit after it, each.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes of the server's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;
/// How long a dead server's stderr may take to reach end of file.
const STDERR_GRACE: Duration = Duration::from_millis(300);

/// A running server.
///
/// The client uses no threads (the harness forks after starting it, and a child of a
/// multithreaded process may not allocate): its stdout and stderr are non-blocking and read
/// with `poll` only while a reply is awaited. The server writes to them only while it
/// handles a command, so nothing is lost or blocked in between.
pub struct Python {
    /// The `python3` process.
    child: Child,
    /// Its stdin: one command per line. `None` once closed.
    stdin: Option<ChildStdin>,
    /// Its stdout (non-blocking), one reply per line. `None` after end of file.
    stdout: Option<ChildStdout>,
    /// Bytes read from stdout and not yet returned as a line.
    pending: Vec<u8>,
    /// Its stderr (non-blocking). `None` after end of file or an error.
    stderr: Option<ChildStderr>,
    /// The end of its stderr, at most `2 * STDERR_TAIL` bytes.
    stderr_tail: Vec<u8>,
    /// Why the server is no longer usable, once it is not.
    dead: Option<String>,
    /// The Python version, e.g. "3.11.7".
    pub version: String,
}

/// Why no line came from the server's stdout.
enum NoLine {
    /// The deadline passed.
    Timeout,
    /// End of file, with nothing left over.
    Eof,
    /// Reading or polling failed.
    Io(std::io::Error),
}

/// Makes `fd` non-blocking.
fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: `fd` is an open descriptor owned by the caller for the whole call; F_GETFL
    // reads its status flags and touches no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFL only changes the status flags of the open file description,
    // which only this process reads from (the server has the other end of the pipe).
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads what `pipe` (non-blocking) has into `out`. `Ok(true)` at end of file.
fn drain(pipe: &mut impl Read, out: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(got) => out.extend_from_slice(&buf[..got]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Waits until one of `fds` is readable (or hung up) or `deadline` passes, retrying on
/// EINTR. `Ok(false)` when the deadline passed.
fn wait_readable(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> std::io::Result<bool> {
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                // Rounded up, so the wait does not end just before the deadline.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd
        // structures, which poll reads and whose `revents` it writes, and nothing else.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r > 0 {
            return Ok(true);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
        // r == 0 (timed out) or EINTR: the loop looks at the deadline again.
    }
}

/// The figures of one successful measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct PyMeasurement {
    /// Nanoseconds per round trip (latency) or per message (one way).
    pub ns_per_unit: f64,
    /// Units timed (the `n` asked for).
    pub units: u64,
    /// Messages (or round trips) received and checked among the timed ones.
    pub verified: u64,
    /// CPU seconds (user + system) used by the server and its children for the command.
    pub cpu_s: f64,
}

/// What one [`Python::measure`] call gave.
#[derive(Clone, Debug, PartialEq)]
pub enum PyOutcome {
    /// Measured, every message verified.
    Measured(PyMeasurement),
    /// The mechanism cannot carry this case; the reason.
    NotApplicable(String),
    /// The measurement failed (a message lost, duplicated or corrupted, a child process
    /// died, the server died...); the reason.
    Failed(String),
}

impl Python {
    /// Starts the server, the parent pinned to `cpus[0]` and the children to `cpus[1]`
    /// (unpinned with `None`), and waits for its hello.
    ///
    /// `Ok(None)` when `python3` is not on `PATH` or cannot use `multiprocessing` with the
    /// 'fork' start method (the caller notes it); `Err` when it is there but the server does
    /// not start.
    pub fn start(cpus: Option<[usize; 2]>) -> Result<Option<Python>, String> {
        let cpus_arg = match cpus {
            Some([a, b]) => format!("{a},{b}"),
            None => "none".to_string(),
        };
        let spawned = Command::new(PYTHON)
            .arg("-c")
            .arg(SCRIPT)
            .arg("serve")
            .arg("--cpus")
            .arg(&cpus_arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot run {PYTHON}: {e}")),
        };
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{PYTHON}: pipes not set up"));
        };

        let nonblocking =
            set_nonblocking(stdout.as_raw_fd()).and(set_nonblocking(stderr.as_raw_fd()));
        let mut python = Python {
            child,
            stdin: Some(stdin),
            stdout: Some(stdout),
            pending: Vec::new(),
            stderr: Some(stderr),
            stderr_tail: Vec::new(),
            dead: None,
            version: String::new(),
        };
        if let Err(e) = nonblocking {
            return Err(python.kill(&format!("{PYTHON}: cannot set up its pipes: {e}")));
        }
        let hello = match python.read_reply(HELLO_TIMEOUT) {
            Ok(hello) => hello,
            Err(e) => return Err(format!("the Python server did not start: {e}")),
        };
        if hello.get("ok").and_then(Value::as_bool) == Some(true) {
            python.version = hello
                .get("python")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string();
            Ok(Some(python))
        } else if hello.get("no_multiprocessing").and_then(Value::as_bool) == Some(true) {
            Ok(None)
        } else {
            let error = hello.get("error").and_then(Value::as_str).unwrap_or("");
            Err(format!(
                "the Python server did not start: {error} ({hello})"
            ))
        }
    }

    /// Measures `mech` (one of [`MECHANISMS`]) on `bench`: `n` timed units, a `pause_us`
    /// microsecond pause before each round trip in the "asleep" latency mode, payloads
    /// checked as `check` says ("full" or "pages").
    pub fn measure(
        &mut self,
        mech: &str,
        bench: &Bench,
        n: u64,
        pause_us: u64,
        check: &str,
    ) -> PyOutcome {
        let command = json!({
            "cmd": "measure",
            "mech": mech,
            "bench": bench,
            "n": n,
            "pause_us": pause_us,
            "check": check,
        });
        // A stalled child is caught by the server after 30 s without progress; this only
        // guards against a server that hangs itself, so it is generous.
        let per_unit_ns = 1_000_000
            + pause_us.saturating_mul(1000)
            + match bench {
                Bench::Throughput { size } => size.saturating_mul(100),
                _ => 0,
            };
        let timeout = Duration::from_secs(120)
            + Duration::from_nanos(n.saturating_mul(per_unit_ns).min(u64::MAX / 2));
        self.request(&command, timeout)
    }

    /// Sends one command and turns the reply into an outcome.
    fn request(&mut self, command: &Value, timeout: Duration) -> PyOutcome {
        if let Some(reason) = &self.dead {
            return PyOutcome::Failed(format!("the Python server is not running: {reason}"));
        }
        if let Err(e) = self.send(command) {
            return PyOutcome::Failed(self.kill(&format!("cannot send a command: {e}")));
        }
        let reply = match self.read_reply(timeout) {
            Ok(reply) => reply,
            Err(e) => return PyOutcome::Failed(e),
        };
        let text = |key: &str| reply.get(key).and_then(Value::as_str).map(str::to_string);
        match reply.get("ok").and_then(Value::as_bool) {
            Some(true) => {
                let number = |key: &str| reply.get(key).and_then(Value::as_f64);
                let count = |key: &str| reply.get(key).and_then(Value::as_u64);
                match (
                    number("ns_per_unit"),
                    count("units"),
                    count("verified"),
                    number("cpu_s"),
                ) {
                    (Some(ns_per_unit), Some(units), Some(verified), Some(cpu_s)) => {
                        PyOutcome::Measured(PyMeasurement {
                            ns_per_unit,
                            units,
                            verified,
                            cpu_s,
                        })
                    }
                    _ => PyOutcome::Failed(format!("malformed reply from Python: {reply}")),
                }
            }
            Some(false) => {
                let error = text("error").unwrap_or_else(|| format!("failed: {reply}"));
                if reply.get("not_applicable").and_then(Value::as_bool) == Some(true) {
                    PyOutcome::NotApplicable(error)
                } else {
                    PyOutcome::Failed(error)
                }
            }
            None => PyOutcome::Failed(format!("malformed reply from Python: {reply}")),
        }
    }

    /// Writes one command line.
    fn send(&mut self, command: &Value) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::new(ErrorKind::BrokenPipe, "stdin closed"))?;
        let mut line = command.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes())?;
        stdin.flush()
    }

    /// Reads one reply line as a JSON object. On any failure the server is killed and the
    /// error (with the end of its stderr) returned.
    fn read_reply(&mut self, timeout: Duration) -> Result<Value, String> {
        match self.read_line(timeout) {
            Ok(line) => {
                let line = String::from_utf8_lossy(&line);
                match serde_json::from_str::<Value>(line.trim()) {
                    Ok(value) if value.is_object() => Ok(value),
                    _ => {
                        let mut shown: String = line.trim().chars().take(200).collect();
                        if shown.is_empty() {
                            shown = "an empty line".to_string();
                        }
                        Err(self.kill(&format!("the Python server printed garbage: {shown}")))
                    }
                }
            }
            Err(NoLine::Io(e)) => Err(self.kill(&format!("cannot read the Python server: {e}"))),
            Err(NoLine::Timeout) => Err(self.kill(&format!(
                "the Python server did not answer within {} s",
                timeout.as_secs()
            ))),
            Err(NoLine::Eof) => Err(self.kill("the Python server exited")),
        }
    }

    /// The next line of the server's stdout (with its newline; a last line without one at
    /// end of file), waiting at most `timeout`. Bytes after the line are kept for the next
    /// call, and stderr is read meanwhile so that the server never blocks on it.
    fn read_line(&mut self, timeout: Duration) -> Result<Vec<u8>, NoLine> {
        let deadline = Instant::now().checked_add(timeout);
        let mut searched = 0;
        loop {
            if let Some(at) = self.pending[searched..].iter().position(|&b| b == b'\n') {
                let rest = self.pending.split_off(searched + at + 1);
                return Ok(std::mem::replace(&mut self.pending, rest));
            }
            searched = self.pending.len();
            let Some(stdout) = &self.stdout else {
                return if self.pending.is_empty() {
                    Err(NoLine::Eof)
                } else {
                    Ok(std::mem::take(&mut self.pending))
                };
            };
            let mut fds = vec![libc::pollfd {
                fd: stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if let Some(stderr) = &self.stderr {
                fds.push(libc::pollfd {
                    fd: stderr.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            if !wait_readable(&mut fds, deadline).map_err(NoLine::Io)? {
                return Err(NoLine::Timeout);
            }
            if fds.get(1).is_some_and(|fd| fd.revents != 0) {
                self.read_stderr();
            }
            if fds[0].revents != 0 {
                let stdout = self.stdout.as_mut().expect("polled");
                match drain(stdout, &mut self.pending) {
                    Ok(false) => {}
                    Ok(true) => self.stdout = None,
                    Err(e) => {
                        self.stdout = None;
                        return Err(NoLine::Io(e));
                    }
                }
            }
        }
    }

    /// Reads what the server's stderr has, keeping its end. Stops reading it at end of file
    /// or on an error.
    fn read_stderr(&mut self) {
        let Some(stderr) = self.stderr.as_mut() else {
            return;
        };
        if !matches!(drain(stderr, &mut self.stderr_tail), Ok(false)) {
            self.stderr = None;
        }
        if self.stderr_tail.len() > 2 * STDERR_TAIL {
            let cut = self.stderr_tail.len() - STDERR_TAIL;
            self.stderr_tail.drain(..cut);
        }
    }

    /// Kills and reaps the server, marks it dead and returns `what` with its exit status and
    /// the end of its stderr.
    fn kill(&mut self, what: &str) -> String {
        self.stdin = None;
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                // It may be exiting on its own (end of file seen); give it a moment.
                let deadline = Instant::now() + Duration::from_millis(200);
                loop {
                    match self.child.try_wait() {
                        Ok(Some(status)) => break Some(status),
                        Ok(None) if Instant::now() < deadline => {
                            thread::sleep(Duration::from_millis(10))
                        }
                        _ => {
                            let _ = self.child.kill();
                            let _ = self.child.wait();
                            break None;
                        }
                    }
                }
            }
        };
        let mut message = what.to_string();
        if let Some(status) = status {
            message.push_str(&format!(" ({status})"));
        }
        let tail = self.stderr_tail();
        if !tail.is_empty() {
            message.push_str("; stderr: ");
            message.push_str(&tail);
        }
        self.dead = Some(message.clone());
        message
    }

    /// The last lines of the server's stderr, waiting briefly for it to reach end of file.
    fn stderr_tail(&mut self) -> String {
        let deadline = Instant::now() + STDERR_GRACE;
        while let Some(stderr) = &self.stderr {
            let mut fds = [libc::pollfd {
                fd: stderr.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            match wait_readable(&mut fds, Some(deadline)) {
                Ok(true) => self.read_stderr(),
                Ok(false) => break,
                Err(_) => self.stderr = None,
            }
        }
        let all = String::from_utf8_lossy(&self.stderr_tail);
        let lines: Vec<&str> = all.trim_end().lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }
}

impl Drop for Python {
    /// Asks the server to quit, waits briefly, then kills it if needed, and reaps it.
    fn drop(&mut self) {
        if self.dead.is_none() && self.send(&json!({ "cmd": "quit" })).is_ok() {
            let _ = self.read_line(QUIT_TIMEOUT);
        }
        self.stdin = None;
        let deadline = Instant::now() + QUIT_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LatencyMode;

    fn start() -> Option<Python> {
        match Python::start(None) {
            Ok(Some(python)) => Some(python),
            Ok(None) => {
                eprintln!("python3 with multiprocessing not found; skipping");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn expect_ok(outcome: PyOutcome, n: u64, what: &str) {
        match outcome {
            PyOutcome::Measured(m) => {
                assert_eq!(m.units, n, "{what}");
                assert_eq!(m.verified, n, "{what}");
                assert!(
                    m.ns_per_unit > 0.0 && m.ns_per_unit.is_finite(),
                    "{what}: {m:?}"
                );
                assert!(m.cpu_s >= 0.0, "{what}: {m:?}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }

    #[test]
    fn python_every_bench_kind() {
        let Some(mut py) = start() else { return };
        assert!(!py.version.is_empty());
        let modes = [
            LatencyMode::Awake,
            LatencyMode::Asleep,
            LatencyMode::OneCore,
        ];
        for (mech, _) in MECHANISMS {
            for mode in modes {
                let bench = Bench::Latency { mode };
                expect_ok(
                    py.measure(mech, &bench, 20, 50, "full"),
                    20,
                    &format!("{mech} {mode:?}"),
                );
            }
            for (size, check) in [
                (8, "full"),
                (64, "pages"),
                (4096, "full"),
                (100_000, "pages"),
            ] {
                let bench = Bench::Throughput { size };
                expect_ok(
                    py.measure(mech, &bench, 10, 0, check),
                    10,
                    &format!("{mech} {size}"),
                );
            }
        }
        let n = 300;
        let bench = Bench::Producers { producers: 3 };
        expect_ok(py.measure("py-queue", &bench, n, 0, "full"), n, "producers");
        let bench = Bench::Consumers { consumers: 3 };
        expect_ok(py.measure("py-queue", &bench, n, 0, "full"), n, "consumers");
        for bench in [
            Bench::Producers { producers: 2 },
            Bench::Consumers { consumers: 2 },
        ] {
            let outcome = py.measure("py-pipe", &bench, n, 0, "full");
            assert!(
                matches!(outcome, PyOutcome::NotApplicable(_)),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn python_failures_are_reported() {
        let Some(mut py) = start() else { return };
        let bench = Bench::Throughput { size: 4096 };
        for (mech, what, expected) in [
            ("py-queue", "corrupt", "message 110: checksum mismatch"),
            ("py-pipe", "skip", "message 110: sequence 111 expected 110"),
            (
                "py-pipe-bytes",
                "short",
                "message 110: length 4095 expected 4096",
            ),
            ("py-pipe-bytes", "die", "sender exited with code 3"),
        ] {
            let command = json!({
                "cmd": "measure", "mech": mech, "bench": bench, "n": 20, "pause_us": 0,
                "check": "full", "inject": { "at": 110, "what": what },
            });
            match py.request(&command, Duration::from_secs(60)) {
                PyOutcome::Failed(e) => assert!(e.contains(expected), "{what}: {e}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        // The server survives failed measurements.
        expect_ok(
            py.measure("py-pipe", &bench, 10, 0, "full"),
            10,
            "after failures",
        );

        // A dead server makes every later call fail at once.
        let _ = py.child.kill();
        let first = py.measure("py-pipe", &bench, 10, 0, "full");
        assert!(matches!(first, PyOutcome::Failed(_)), "{first:?}");
        let started = Instant::now();
        let second = py.measure("py-pipe", &bench, 10, 0, "full");
        assert!(matches!(second, PyOutcome::Failed(_)), "{second:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
