// A client end of `duplex::<Request, Response>()` sends `Request`s: sending a `Response` on it
// is refused at the call.
#[derive(serde::Serialize, serde::Deserialize)]
struct Request(u32);
#[derive(serde::Serialize, serde::Deserialize)]
struct Response(u32);

fn main() {
    let (client, _server) = multiproc::duplex::<Request, Response>().unwrap();
    let _ = client.send(Response(1));
}
