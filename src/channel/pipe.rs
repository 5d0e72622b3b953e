//! `pipe()` and `Connection`: two rings, one per direction.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::codec::{Codec, DefaultCodec};
use super::queue::{Queue, Receiver, Sender};
use crate::error::{GetError, GetTimeoutError, OpenError, PutError, TryGetError, TryPutError};
use crate::segment::object::SharedObject;
use crate::segment::{Handle, ParseHandleError};
use crate::sys::Errno;

/// One end of a duplex pipe, like the `Connection` objects of Python's
/// `multiprocessing.Pipe()`: it sends `S` and receives `R` (by default the same type) with
/// codec `C`.
///
/// Each direction is a shared-memory ring with one sending and one receiving side. `recv`
/// returns [`GetError::Disconnected`] (Python's `EOFError`) once the other end is gone, dropped
/// or killed, and everything it sent has been read. The other end of a
/// `Connection<S, R, C>` is a `Connection<R, S, C>`; [`pipe`] makes a pair for one type,
/// [`duplex`] for a request type and a response type.
///
/// To wait for several connections (and queues, events, processes) at once, use
/// [`wait`](crate::wait()); there is no `fileno`, as no descriptor behind a connection ever
/// becomes readable (see the notes of [`wait`](crate::wait())).
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (a, b) = multiproc::pipe::<String>()?;
/// a.send("ping".into())?;
/// assert_eq!(b.recv()?, "ping");
/// b.send("pong".into())?;
/// assert_eq!(a.recv()?, "pong");
/// drop(a);
/// assert!(b.recv().is_err()); // EOF
/// # Ok(()) }
/// ```
pub struct Connection<S, R = S, C = DefaultCodec> {
    pub(super) tx: Sender<S, C>,
    pub(super) rx: Receiver<R, C>,
}

/// The handles of a [`Connection`]'s two directions; prints as `tx|rx` and parses back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConnectionHandle {
    tx: Handle,
    rx: Handle,
}

impl fmt::Display for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}", self.tx, self.rx)
    }
}

impl FromStr for ConnectionHandle {
    type Err = ParseHandleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tx, rx) = s.split_once('|').ok_or(ParseHandleError)?;
        Ok(Self {
            tx: tx.parse()?,
            rx: rx.parse()?,
        })
    }
}

/// A duplex pipe (Python's `Pipe()`): two connected ends, each sending and receiving `T`, with
/// the default codec. See [`duplex`] for different types each way and [`Connection::pair`] for
/// another codec.
///
/// # Errors
/// The system error if the segments cannot be created.
#[doc(alias = "Pipe")]
#[allow(clippy::type_complexity)]
pub fn pipe<T>() -> Result<(Connection<T>, Connection<T>), OpenError>
where
    DefaultCodec: Codec<T>,
{
    Connection::pair()
}

/// A duplex pipe that carries `A` from the first end to the second and `B` back, with the
/// default codec: a client end (sends requests `A`, receives responses `B`) and a server end.
///
/// # Errors
/// The system error if the segments cannot be created.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum Request { Square(u64) }
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Response(u64);
///
/// let (client, server) = multiproc::duplex::<Request, Response>()?;
/// client.send(Request::Square(7))?;
/// let Request::Square(n) = server.recv()?;
/// server.send(Response(n * n))?;
/// assert_eq!(client.recv()?, Response(49));
/// # Ok(()) }
/// ```
#[allow(clippy::type_complexity)]
pub fn duplex<A, B>() -> Result<(Connection<A, B>, Connection<B, A>), OpenError>
where
    DefaultCodec: Codec<A> + Codec<B>,
{
    Connection::pair()
}

/// A one-way pipe, Python's `Pipe(duplex=False)`: the receiving end first, then the sending
/// end, as in Python. They are the two halves of one [`Queue`]; the receiver sees
/// `Disconnected` once every sender is gone, the sender gets its value back once every
/// receiver is gone.
///
/// # Errors
/// The system error if the segment cannot be created.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (rx, tx) = multiproc::pipe_oneway::<u64>()?;
/// tx.put(5)?;
/// assert_eq!(rx.get()?, 5);
/// # Ok(()) }
/// ```
#[allow(clippy::type_complexity)]
pub fn pipe_oneway<T>() -> Result<(Receiver<T>, Sender<T>), OpenError>
where
    DefaultCodec: Codec<T>,
{
    let (tx, rx) = Queue::<T>::builder().create()?.split()?;
    Ok((rx, tx))
}

impl<S, R, C> Connection<S, R, C>
where
    C: Codec<S> + Codec<R>,
{
    /// A duplex pipe with codec `C`, e.g. `Connection::<Point, Point, Plain>::pair()`: this end
    /// sends `S` and receives `R`, the other end the reverse.
    ///
    /// # Errors
    /// The system error if the segments cannot be created.
    #[allow(clippy::type_complexity)]
    pub fn pair() -> Result<(Self, Connection<R, S, C>), OpenError> {
        let (a_tx, a_rx) = Queue::<S>::builder().codec::<C>().create()?.split()?;
        let (b_tx, b_rx) = Queue::<R>::builder().codec::<C>().create()?.split()?;
        Ok((
            Connection { tx: a_tx, rx: b_rx },
            Connection { tx: b_tx, rx: a_rx },
        ))
    }

    /// Sends `value`, waiting for room as long as it takes.
    ///
    /// # Errors
    /// [`PutError`] with the value: `Disconnected` once the other end is gone; `TooLarge`;
    /// `Encode`; `Corrupted`.
    pub fn send(&self, value: S) -> Result<(), PutError<S>> {
        self.tx.put(value)
    }

    /// Sends `value` if there is room right now.
    ///
    /// # Errors
    /// [`TryPutError`] with the value: `Full`, or as [`send`](Self::send).
    pub fn try_send(&self, value: S) -> Result<(), TryPutError<S>> {
        self.tx.try_put(value)
    }

    /// Receives the next message, waiting as long as it takes.
    ///
    /// # Errors
    /// [`GetError`]: `Disconnected` once the other end is gone and everything it sent was read
    /// (Python's `EOFError`); `Decode` or `Corrupted` for bad bytes.
    pub fn recv(&self) -> Result<R, GetError> {
        self.rx.get()
    }

    /// Receives a message if one is there.
    ///
    /// # Errors
    /// [`TryGetError`]: `Empty`, or as [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<R, TryGetError> {
        self.rx.try_get()
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetTimeoutError`]: `Timeout`, or as [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<R, GetTimeoutError> {
        self.rx.get_timeout(timeout)
    }

    /// Waits at most `timeout` for something to read; `true` if a `recv` would return at once
    /// (with a message, or with `Disconnected`).
    pub fn poll(&self, timeout: Duration) -> bool {
        self.rx
            .ring_poll(crate::sync::wait::deadline_after(timeout))
    }

    /// Sends raw bytes (Python's `send_bytes`).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), PutError<()>> {
        self.tx.put_bytes(bytes)
    }

    /// Receives a message as raw bytes.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_bytes(&self) -> Result<Vec<u8>, GetError> {
        self.rx.get_bytes()
    }

    /// Receives a message into `buf`, returning its length; a longer message stays and gives
    /// `BufferTooSmall(len)`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and `BufferTooSmall`.
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, GetError> {
        self.rx.get_bytes_into(buf)
    }

    /// The handles another process uses to attach this end (see [`Handle`]).
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle {
            tx: self.tx.handle(),
            rx: self.rx.handle(),
        }
    }

    /// Attaches the end a handle describes.
    ///
    /// # Errors
    /// Any error of opening the segments.
    pub fn from_handle(handle: &ConnectionHandle) -> Result<Self, OpenError> {
        Ok(Self {
            tx: Sender::from_handle(&handle.tx)?,
            rx: Receiver::from_handle(&handle.rx)?,
        })
    }

    /// Lets this end's descriptors survive `exec` (see [`SharedObject::set_inheritable`]).
    ///
    /// # Errors
    /// The `fcntl` error, if any.
    pub fn set_inheritable(&self, inheritable: bool) -> Result<(), Errno> {
        self.tx.set_inheritable(inheritable)?;
        self.rx.set_inheritable(inheritable)
    }
}

/// `wait` waits for what [`recv`](Connection::recv) would get.
impl<S, R, C> crate::wait::Sealed for Connection<S, R, C> {
    fn target(&self) -> crate::wait::Target<'_> {
        crate::wait::Sealed::target(&self.rx)
    }
}

impl<S, R, C> fmt::Debug for Connection<S, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("send", &self.tx)
            .field("recv", &self.rx)
            .finish()
    }
}

/// With the `serde` feature, a connection end serialises as its [`ConnectionHandle`] and
/// deserialises by attaching that end, like the other shared objects.
#[cfg(feature = "serde")]
impl<S, R, C: Codec<S> + Codec<R>> serde::Serialize for Connection<S, R, C> {
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        crate::segment::note_object();
        serde::Serialize::serialize(&self.handle(), s)
    }
}

#[cfg(feature = "serde")]
impl<'de, S, R, C: Codec<S> + Codec<R>> serde::Deserialize<'de> for Connection<S, R, C> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let h = <ConnectionHandle as serde::Deserialize>::deserialize(d)?;
        Self::from_handle(&h).map_err(serde::de::Error::custom)
    }
}
