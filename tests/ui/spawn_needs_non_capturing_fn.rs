// A spawned child runs a function pointer: a closure that captures a local is refused at the
// user's call, by `cargo check`.
fn main() {
    let offset = 10u64;
    let _p = multiproc::Process::spawn(move |x: u64| x + offset, 5);
}
