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

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
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

/// A running server.
pub struct Python {
    /// The `python3` process.
    child: Child,
    /// Its stdin: one command per line. `None` once closed.
    stdin: Option<ChildStdin>,
    /// Its stdout, line by line, read by a thread so that a reply can be awaited with a
    /// timeout. Disconnected at end of file.
    lines: Receiver<std::io::Result<String>>,
    /// The end of its stderr.
    stderr: Arc<Mutex<String>>,
    /// Set when stderr reached end of file.
    stderr_done: Arc<AtomicBool>,
    /// Why the server is no longer usable, once it is not.
    dead: Option<String>,
    /// The Python version, e.g. "3.11.7".
    pub version: String,
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
        let (Some(stdin), Some(stdout), Some(stderr_pipe)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{PYTHON}: pipes not set up"));
        };

        let (tx, lines) = channel();
        thread::spawn(move || {
            crate::sys::block_alarm_in_this_thread();
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        if tx.send(Ok(line)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_done = Arc::new(AtomicBool::new(false));
        {
            let stderr = Arc::clone(&stderr);
            let done = Arc::clone(&stderr_done);
            thread::spawn(move || {
                crate::sys::block_alarm_in_this_thread();
                let mut pipe = stderr_pipe;
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(got) => {
                            let mut tail = stderr.lock().unwrap_or_else(|e| e.into_inner());
                            tail.push_str(&String::from_utf8_lossy(&buf[..got]));
                            if tail.len() > 2 * STDERR_TAIL {
                                let mut cut = tail.len() - STDERR_TAIL;
                                while !tail.is_char_boundary(cut) {
                                    cut += 1;
                                }
                                tail.drain(..cut);
                            }
                        }
                    }
                }
                done.store(true, Ordering::Release);
            });
        }

        let mut python = Python {
            child,
            stdin: Some(stdin),
            lines,
            stderr,
            stderr_done,
            dead: None,
            version: String::new(),
        };
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
        match self.lines.recv_timeout(timeout) {
            Ok(Ok(line)) => match serde_json::from_str::<Value>(line.trim()) {
                Ok(value) if value.is_object() => Ok(value),
                _ => {
                    let mut shown: String = line.trim().chars().take(200).collect();
                    if shown.is_empty() {
                        shown = "an empty line".to_string();
                    }
                    Err(self.kill(&format!("the Python server printed garbage: {shown}")))
                }
            },
            Ok(Err(e)) => Err(self.kill(&format!("cannot read the Python server: {e}"))),
            Err(RecvTimeoutError::Timeout) => Err(self.kill(&format!(
                "the Python server did not answer within {} s",
                timeout.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(self.kill("the Python server exited")),
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

    /// The last lines of the server's stderr, waiting briefly for it to be written.
    fn stderr_tail(&self) -> String {
        let deadline = Instant::now() + Duration::from_millis(300);
        while !self.stderr_done.load(Ordering::Acquire) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let all = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let lines: Vec<&str> = all.trim_end().lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }
}

impl Drop for Python {
    /// Asks the server to quit, waits briefly, then kills it if needed, and reaps it.
    fn drop(&mut self) {
        if self.dead.is_none() && self.send(&json!({ "cmd": "quit" })).is_ok() {
            let _ = self.lines.recv_timeout(QUIT_TIMEOUT);
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
