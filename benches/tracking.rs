//! What the name tracker costs (see `segment::tracker`): the first tracked create, which
//! starts the tracker; creates and opens of 2,000 named objects with and without tracking
//! (`Builder::persistent`), alternating; and the tracker's resident memory.
//!
//! `cargo bench --bench tracking`. A measurement, printed, not a check.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use multiproc::{SharedObject, Value};

fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mpt-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

fn main() {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    let first = unique_name("cost-first");
    let mut keep = Vec::new();
    let t_first =
        time(&mut || keep.push(Value::builder().name(&first).value(0u64).create().unwrap()));
    println!("first tracked create (starts the tracker): {t_first:?}");
    const N: usize = 2000;
    for (label, persistent) in [
        ("persistent", true),
        ("tracked", false),
        ("persistent", true),
        ("tracked", false),
    ] {
        let names: Vec<String> = (0..N).map(|i| unique_name(&format!("cost{i}"))).collect();
        let mut objs = Vec::with_capacity(N);
        let t_create = time(&mut || {
            for n in &names {
                let b = Value::builder().name(n).value(0u64);
                let b = if persistent { b.persistent() } else { b };
                objs.push(b.create().unwrap());
            }
        });
        let mut opened = Vec::with_capacity(N);
        let t_open = time(&mut || {
            for n in &names {
                opened.push(Value::<u64>::open(n).unwrap());
            }
        });
        println!(
            "{label}: create {:?}/object, open {:?}/object",
            t_create / N as u32,
            t_open / N as u32
        );
        drop(opened);
        for o in objs {
            let _ = o.unlink();
        }
    }
    let tracker = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|p| p == b"--multiproc-tracker"))
        });
    if let Some(pid) = tracker {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        for l in status
            .lines()
            .filter(|l| l.starts_with("VmRSS") || l.starts_with("RssAnon"))
        {
            println!("a tracker: {l}");
        }
    }
    drop(keep);
}
