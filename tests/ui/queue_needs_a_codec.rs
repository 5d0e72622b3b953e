// A type without serde's traits cannot travel in a default `Queue`: the message says what to
// derive (or which codec to pick instead).
struct Job {
    id: u32,
}

fn main() {
    let q = multiproc::Queue::new(8).unwrap();
    let _ = q.put(Job { id: 1 });
}
