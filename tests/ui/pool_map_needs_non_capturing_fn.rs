// Pool tasks are function pointers: a closure that captures a local is refused at the user's
// call, by `cargo check`.
fn main() {
    let pool = multiproc::Pool::new(2).unwrap();
    let factor = 3u64;
    let _r = pool.map(|x: u64| x * factor, 0..10u64);
}
