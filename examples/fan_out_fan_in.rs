//! Fan-out, fan-in: one producer process fills a job queue, N worker processes pull from it
//! (each job goes to whichever worker takes it first), and every result comes back on one
//! result queue, which this process reads. Checks that every job's result arrived exactly once
//! and is right, and shows how the jobs spread over the workers.
//!
//! ```text
//! cargo run --release --example fan_out_fan_in -- [workers (default: CPUs, at least 2)] [jobs]
//! ```
//!
//! ```text
//!                      +--> worker-0 --+
//! producer --jobs--> --+--> worker-1 --+--results--> this process
//!                      +--> worker-2 --+
//! ```
//!
//! Nobody sends "stop" messages. The producer's `Sender` goes when it returns, so once the
//! job queue is drained the workers' `get` says `Disconnected` and they return; when the last
//! one has, the result queue has no senders left and our `get` says `Disconnected` too.

use std::process::ExitCode;
use std::time::Instant;

use multiproc::{GetError, Process, Receiver, Sender, channel};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Job {
    id: u32,
    n: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Done {
    id: u32,
    worker: u32,
    /// How many prime factors (with multiplicity) `n` has.
    factors: u32,
}

/// The number job `id` works on.
fn job_number(id: u32) -> u64 {
    1_000_000_007 + u64::from(id) * 7_919
}

/// Prime factors of `n` with multiplicity, by trial division: a few microseconds.
fn count_prime_factors(mut n: u64) -> u32 {
    let mut count = 0;
    let mut d = 2;
    while d * d <= n {
        while n % d == 0 {
            n /= d;
            count += 1;
        }
        d += if d == 2 { 1 } else { 2 };
    }
    count + u32::from(n > 1)
}

fn produce((jobs, n): (Sender<Job>, u32)) {
    for id in 0..n {
        let job = Job {
            id,
            n: job_number(id),
        };
        jobs.put(job).expect("every worker is gone");
    }
}

/// Works until the job queue is drained and its producer gone; returns how many jobs it did.
fn work((worker, jobs, results): (u32, Receiver<Job>, Sender<Done>)) -> u32 {
    let mut done = 0;
    loop {
        let job = match jobs.get() {
            Ok(job) => job,
            Err(GetError::Disconnected) => return done,
            Err(e) => panic!("worker {worker}: {e}"),
        };
        let factors = count_prime_factors(job.n);
        let done_msg = Done {
            id: job.id,
            worker,
            factors,
        };
        results.put(done_msg).expect("nobody reads the results");
        done += 1;
    }
}

fn run(workers: u32, n: u32) -> Result<bool, Box<dyn std::error::Error>> {
    let (jobs_tx, jobs_rx) = channel::<Job>(256)?;
    let (results_tx, results_rx) = channel::<Done>(256)?;

    let start = Instant::now();
    let mut children = Vec::new();
    for w in 0..workers {
        // Each worker gets its own handles on the two queues (clones are cheap).
        let arg = (w, jobs_rx.clone(), results_tx.clone());
        children.push(
            Process::builder()
                .name(format!("worker-{w}"))
                .spawn(work, arg)?,
        );
    }
    // Our own ends must go, or the workers and we would wait for senders that never leave.
    drop((jobs_rx, results_tx));
    let producer = Process::builder()
        .name("producer")
        .spawn(produce, (jobs_tx, n))?;

    // Fan in: read until every worker has returned and the queue is drained.
    let mut seen = vec![0u32; n as usize];
    let mut factors = vec![0u32; n as usize];
    let mut by_worker = vec![0u32; workers as usize];
    loop {
        match results_rx.get() {
            Ok(d) => {
                seen[d.id as usize] += 1;
                factors[d.id as usize] = d.factors;
                by_worker[d.worker as usize] += 1;
            }
            Err(GetError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let took = start.elapsed();
    producer.join()?;
    let reported = children
        .into_iter()
        .map(Process::join)
        .collect::<Result<Vec<u32>, _>>()?;

    println!("1 producer, {workers} workers, {n} jobs");
    for (w, (&got, &said)) in by_worker.iter().zip(&reported).enumerate() {
        let share = 100.0 * f64::from(got) / f64::from(n.max(1));
        println!("  worker-{w}: {got:>7} jobs ({share:4.1}%)");
        if got != said {
            println!("    but it says it did {said}");
        }
    }
    // The same work in this process (after the clock stopped).
    let wrong = (0..n)
        .filter(|&id| factors[id as usize] != count_prime_factors(job_number(id)))
        .count();
    let missing = seen.iter().filter(|&&c| c == 0).count();
    let repeated = seen.iter().filter(|&&c| c > 1).count();
    let received: u32 = by_worker.iter().sum();
    let secs = took.as_secs_f64();
    println!(
        "  {received} results in {secs:.3} s ({:.0} jobs/s): {missing} missing, {repeated} twice or more, {wrong} wrong",
        f64::from(received) / secs,
    );
    let ok = missing == 0 && repeated == 0 && wrong == 0 && by_worker == reported;
    println!(
        "  {}",
        if ok {
            "every job's result arrived exactly once, and is right"
        } else {
            "FAILED"
        }
    );
    Ok(ok)
}

fn main() -> ExitCode {
    // Spawned workers and the producer never get here: the start-up hook runs their function
    // before `main`. This call documents that, and does nothing.
    multiproc::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workers: u32 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(multiproc::cpu_count().max(2) as u32);
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    match run(workers.max(1), n) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
