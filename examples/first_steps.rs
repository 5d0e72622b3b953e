//! The README's first example: four child processes share a counter and report over a
//! channel.
//!
//! ```text
//! cargo run --example first_steps
//! ```

use multiproc::{Process, Sender, Value, channel};

// Runs in a child: this executable started again (Python's "spawn"), calling this function.
// Shared objects travel in the argument; here a counter and the sending end of a channel.
fn worker((id, counter, done): (u32, Value<u64>, Sender<String>)) -> u64 {
    let mut count = counter.lock().expect("no holder of the counter died");
    *count += 1;
    done.put(format!("worker {id} counted to {}", *count))
        .expect("the parent is listening");
    *count
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counter = Value::new(0u64)?;
    let (tx, rx) = channel::<String>(16)?;
    let children = (0..4)
        .map(|id| Process::spawn(worker, (id, counter.clone(), tx.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    drop(tx); // now only the children send: `get` fails once they are all gone
    while let Ok(line) = rx.get() {
        println!("{line}");
    }
    for child in children {
        child.join()?; // the child's return value, or the reason it failed
    }
    assert_eq!(counter.get(), 4);

    // A lock a killed process held is an error that names the object, not a panic or a hang:
    *counter.lock()? += 1;
    println!("counter = {}", counter.get());
    Ok(())
}
