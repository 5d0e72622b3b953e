// A queue's second type parameter is its codec, not a second message type: anything else there
// is refused at the user's line with a note on what a codec needs.
#[derive(serde::Serialize, serde::Deserialize)]
struct Response(u32);

fn main() {
    let _q = multiproc::Queue::<u64, Response>::with_codec(8);
}
