//! `pipe()` and `Connection`: two rings, one per direction.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::codec::{Codec, DefaultCodec};
use super::queue::{Queue, Receiver, Sender};
use crate::error::{GetError, OpenError, PutError};
use crate::segment::object::SharedObject;
use crate::segment::{Handle, ParseHandleError};
use crate::sys::Errno;

/// One end of a pipe, like the `Connection` objects of Python's `multiprocessing.Pipe()`.
///
/// Each direction is a shared-memory ring with one sending and one receiving side. `recv`
/// returns [`GetError::Disconnected`] (Python's `EOFError`) once the other end is gone, dropped
/// or killed, and everything it sent has been read.
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
pub struct Connection<T, C = DefaultCodec> {
    tx: Option<Sender<T, C>>,
    rx: Option<Receiver<T, C>>,
}

/// The handles of a [`Connection`]'s two directions; prints as `tx|rx` (empty for a missing
/// direction) and parses back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConnectionHandle {
    tx: Option<Handle>,
    rx: Option<Handle>,
}

impl fmt::Display for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |h: &Option<Handle>| h.as_ref().map(Handle::to_string).unwrap_or_default();
        write!(f, "{}|{}", show(&self.tx), show(&self.rx))
    }
}

impl FromStr for ConnectionHandle {
    type Err = ParseHandleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tx, rx) = s.split_once('|').ok_or(ParseHandleError)?;
        let parse = |p: &str| -> Result<Option<Handle>, ParseHandleError> {
            if p.is_empty() {
                Ok(None)
            } else {
                p.parse().map(Some)
            }
        };
        Ok(Self {
            tx: parse(tx)?,
            rx: parse(rx)?,
        })
    }
}

/// A duplex pipe: two connected ends, each able to send and receive, with the default codec
/// (see [`Connection::pair`] for another).
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

/// A one-way pipe, Python's `Pipe(duplex=False)`: the first end only sends, the second only
/// receives.
///
/// # Errors
/// The system error if the segment cannot be created.
#[allow(clippy::type_complexity)]
pub fn pipe_oneway<T>() -> Result<(Connection<T>, Connection<T>), OpenError>
where
    DefaultCodec: Codec<T>,
{
    Connection::pair_oneway()
}

impl<T, C: Codec<T>> Connection<T, C> {
    /// A duplex pipe with codec `C`, e.g. `Connection::<Point, Plain>::pair()`.
    ///
    /// # Errors
    /// The system error if the segments cannot be created.
    pub fn pair() -> Result<(Self, Self), OpenError> {
        let (a_tx, a_rx) = Queue::<T, C>::builder().create()?.split()?;
        let (b_tx, b_rx) = Queue::<T, C>::builder().create()?.split()?;
        Ok((
            Connection {
                tx: Some(a_tx),
                rx: Some(b_rx),
            },
            Connection {
                tx: Some(b_tx),
                rx: Some(a_rx),
            },
        ))
    }

    /// A one-way pipe with codec `C`: the first end only sends, the second only receives.
    ///
    /// # Errors
    /// The system error if the segment cannot be created.
    pub fn pair_oneway() -> Result<(Self, Self), OpenError> {
        let (tx, rx) = Queue::<T, C>::builder().create()?.split()?;
        Ok((
            Connection {
                tx: Some(tx),
                rx: None,
            },
            Connection {
                tx: None,
                rx: Some(rx),
            },
        ))
    }

    fn tx(&self) -> &Sender<T, C> {
        self.tx
            .as_ref()
            .expect("this end of a one-way pipe can only receive")
    }

    fn rx(&self) -> &Receiver<T, C> {
        self.rx
            .as_ref()
            .expect("this end of a one-way pipe can only send")
    }

    /// Whether this end can send.
    pub fn can_send(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether this end can receive.
    pub fn can_recv(&self) -> bool {
        self.rx.is_some()
    }

    /// Sends `value`, waiting for room as long as it takes.
    ///
    /// # Errors
    /// `Disconnected` (with the value) once the other end is gone; `TooLarge`.
    ///
    /// # Panics
    /// On the receive-only end of a one-way pipe.
    pub fn send(&self, value: T) -> Result<(), PutError<T>> {
        self.tx().put(value)
    }

    /// Sends `value` if there is room right now.
    ///
    /// # Errors
    /// As [`send`](Self::send), and `Full`.
    ///
    /// # Panics
    /// On the receive-only end of a one-way pipe.
    pub fn try_send(&self, value: T) -> Result<(), PutError<T>> {
        self.tx().try_put(value)
    }

    /// Receives the next message, waiting as long as it takes.
    ///
    /// # Errors
    /// `Disconnected` once the other end is gone and everything it sent was read (Python's
    /// `EOFError`); `Decode` or `Corrupted` for bad bytes.
    ///
    /// # Panics
    /// On the send-only end of a one-way pipe.
    pub fn recv(&self) -> Result<T, GetError> {
        self.rx().get()
    }

    /// Receives a message if one is there.
    ///
    /// # Errors
    /// `Empty`, or as [`recv`](Self::recv).
    ///
    /// # Panics
    /// On the send-only end of a one-way pipe.
    pub fn try_recv(&self) -> Result<T, GetError> {
        self.rx().try_get()
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Empty` on timeout, or as [`recv`](Self::recv).
    ///
    /// # Panics
    /// On the send-only end of a one-way pipe.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.rx().get_timeout(timeout)
    }

    /// Waits at most `timeout` for something to read; `true` if a `recv` would return at once
    /// (with a message, or with `Disconnected`).
    ///
    /// # Panics
    /// On the send-only end of a one-way pipe.
    pub fn poll(&self, timeout: Duration) -> bool {
        self.rx()
            .ring_poll(crate::sync::wait::deadline_after(timeout))
    }

    /// Sends raw bytes (Python's `send_bytes`).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Panics
    /// On the receive-only end of a one-way pipe.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), PutError<()>> {
        self.tx().put_bytes(bytes)
    }

    /// Receives a message as raw bytes.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    ///
    /// # Panics
    /// On the send-only end of a one-way pipe.
    pub fn recv_bytes(&self) -> Result<Vec<u8>, GetError> {
        self.rx().get_bytes()
    }

    /// Receives a message into `buf`, returning its length; a longer message stays and gives
    /// `BufferTooSmall(len)`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and `BufferTooSmall`.
    ///
    /// # Panics
    /// On the send-only end of a one-way pipe.
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, GetError> {
        self.rx().get_bytes_into(buf)
    }

    /// The handles another process uses to attach this end (see [`Handle`]).
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle {
            tx: self.tx.as_ref().map(SharedObject::handle),
            rx: self.rx.as_ref().map(SharedObject::handle),
        }
    }

    /// Attaches the end a handle describes.
    ///
    /// # Errors
    /// Any error of opening the segments.
    pub fn from_handle(handle: &ConnectionHandle) -> Result<Self, OpenError> {
        Ok(Self {
            tx: handle.tx.as_ref().map(Sender::from_handle).transpose()?,
            rx: handle.rx.as_ref().map(Receiver::from_handle).transpose()?,
        })
    }

    /// Lets this end's descriptors survive `exec` (see [`SharedObject::set_inheritable`]).
    ///
    /// # Errors
    /// The `fcntl` error, if any.
    pub fn set_inheritable(&self, inheritable: bool) -> Result<(), Errno> {
        if let Some(tx) = &self.tx {
            tx.set_inheritable(inheritable)?;
        }
        if let Some(rx) = &self.rx {
            rx.set_inheritable(inheritable)?;
        }
        Ok(())
    }
}

impl<T, C> fmt::Debug for Connection<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("send", &self.tx.is_some())
            .field("recv", &self.rx.is_some())
            .finish()
    }
}

/// With the `serde` feature, a connection end serialises as its [`ConnectionHandle`] and
/// deserialises by attaching that end, like the other shared objects.
#[cfg(feature = "serde")]
impl<T, C: Codec<T>> serde::Serialize for Connection<T, C> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::segment::note_object();
        serde::Serialize::serialize(&self.handle(), s)
    }
}

#[cfg(feature = "serde")]
impl<'de, T, C: Codec<T>> serde::Deserialize<'de> for Connection<T, C> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let h = <ConnectionHandle as serde::Deserialize>::deserialize(d)?;
        Self::from_handle(&h).map_err(serde::de::Error::custom)
    }
}
