// A `Value` holds plain data only: a `String` is refused where the user names the type.
fn main() {
    let _v = multiproc::Value::<String>::new(String::new());
}
