//! A `Pool` working through a list of tasks with a progress bar: `Pool::imap` hands the
//! results back lazily and in order, and its iterator knows its length, so the bar is sized
//! from it and ticks once per result.
//!
//! ```text
//! cargo run --release --example pool_progress -- [tasks]
//! ```
//!
//! The bar draws on stderr when it is a terminal and hides itself otherwise (indicatif does
//! that); the summary line always prints.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use multiproc::Pool;

/// The bound task `i` sieves up to: 100,000 to about 1,100,000, shuffled, so task durations
/// vary from a fraction of a millisecond to a few milliseconds.
fn bound(i: u32) -> u32 {
    100_000 + (i.wrapping_mul(7_919) % 1_000) * 1_000
}

/// The task, run in a worker: the number of primes below `limit` (sieve of Eratosthenes).
/// Returns `limit` too, so the reader can check results come back in item order.
fn count_primes(limit: u32) -> (u32, u32) {
    let n = limit as usize;
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if composite[i] {
            continue;
        }
        count += 1;
        for multiple in (i * i..n).step_by(i) {
            composite[multiple] = true;
        }
    }
    (limit, count)
}

fn run(tasks: u32) -> Result<bool, Box<dyn std::error::Error>> {
    let workers = multiproc::cpu_count();
    let pool = Pool::new(workers)?;
    let start = Instant::now();
    let results = pool.imap(count_primes, (0..tasks).map(bound));
    // `Imap` is an `ExactSizeIterator` when its items are: the bar knows the total up front.
    let bar = ProgressBar::new(results.len() as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tasks ({per_sec}, {eta} left)",
        )?
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));

    let mut counts = Vec::with_capacity(tasks as usize);
    let mut out_of_order = 0;
    for (i, result) in (0..tasks).zip(results) {
        let (limit, primes) = result?; // a TaskError if a task panicked or its worker died
        if limit != bound(i) {
            out_of_order += 1;
        }
        counts.push(primes);
        bar.inc(1);
    }
    bar.finish();
    let took = start.elapsed();
    pool.join();

    // Check every 50th result (and the well-known first ones) against this process.
    let wrong = (0..tasks)
        .step_by(50)
        .filter(|&i| count_primes(bound(i)).1 != counts[i as usize])
        .count();
    let known = count_primes(100_000).1 == 9_592 && count_primes(1_000_000).1 == 78_498;
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let secs = took.as_secs_f64();
    println!(
        "{} tasks on {workers} worker processes in {secs:.2} s ({:.0} tasks/s): {total} primes counted",
        counts.len(),
        counts.len() as f64 / secs,
    );
    let ok = counts.len() == tasks as usize && out_of_order == 0 && wrong == 0 && known;
    println!(
        "  {}",
        if ok {
            "results came back in order; spot checks match this process"
        } else {
            "FAILED: results out of order or wrong"
        }
    );
    Ok(ok)
}

fn main() -> ExitCode {
    // Pool workers never get here: the start-up hook runs them before `main`. This call
    // documents that, and does nothing.
    multiproc::init();
    let tasks: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000);
    match run(tasks) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
