//! N processes increment two shared counters: a `Value<u64>` under its lock and a
//! `RawValue<AtomicU64>` with `fetch_add`. Prints both totals (checked) and how long each took.
//!
//! ```text
//! cargo run --release --example shared_counter -- [processes] [increments per process]
//! ```
//!
//! The workers are this same program started again with `--worker`; they find the counters by
//! the names the parent gives them.

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Barrier, RawValue, SharedObject, Value};

fn worker(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [kind, value, barrier, n] = args else {
        return Err("usage: --worker <locked|atomic> <value> <barrier> <n>".into());
    };
    let n: u64 = n.parse()?;
    let barrier = Barrier::open(barrier)?;
    match kind.as_str() {
        "locked" => {
            let v = Value::<u64>::open(value)?;
            barrier.wait()?;
            for _ in 0..n {
                *v.lock().unwrap_or_else(|died| died.recover()) += 1;
            }
        }
        _ => {
            let v = RawValue::<AtomicU64>::open(value)?;
            barrier.wait()?;
            for _ in 0..n {
                v.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    barrier.wait()?;
    Ok(())
}

/// Starts `procs` workers on the counter named `value`, and returns the time from the moment
/// all were ready until all were done.
fn run(
    kind: &str,
    value: &str,
    procs: u32,
    n: u64,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let barrier = Barrier::builder().named().parties(procs + 1).create()?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..procs {
        children.push(
            Command::new(&exe)
                .args([
                    "--worker",
                    kind,
                    value,
                    barrier.name().unwrap(),
                    &n.to_string(),
                ])
                .spawn()?,
        );
    }
    barrier.wait()?; // everyone attached: start the clock
    let start = Instant::now();
    barrier.wait()?; // everyone done
    let took = start.elapsed();
    for mut c in children {
        if !c.wait()?.success() {
            return Err("a worker failed".into());
        }
    }
    Ok(took)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return match worker(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let procs: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(4);
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let expected = u64::from(procs) * n;
    let result = (|| -> Result<bool, Box<dyn std::error::Error>> {
        let locked = Value::<u64>::builder().named().create()?;
        let t_locked = run("locked", locked.name().unwrap(), procs, n)?;
        let atomic = RawValue::<AtomicU64>::builder().named().create()?;
        let t_atomic = run("atomic", atomic.name().unwrap(), procs, n)?;
        let (a, b) = (locked.get(), atomic.load(Ordering::SeqCst));
        println!("{procs} processes x {n} increments (expected {expected})");
        for (what, total, took) in [
            ("Value<u64> under its lock", a, t_locked),
            ("RawValue<AtomicU64> fetch_add", b, t_atomic),
        ] {
            let ns = took.as_nanos() as f64 / expected as f64;
            let ok = if total == expected { "ok" } else { "WRONG" };
            println!("  {what:<32} total {total:>10} {ok:<5} {took:>10.2?}  {ns:6.1} ns/increment");
        }
        Ok(a == expected && b == expected)
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
