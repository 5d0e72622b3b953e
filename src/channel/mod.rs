//! L4: messaging on shared-memory rings: `Queue`, `JoinableQueue`, `Sender`/`Receiver`, and
//! `Pipe` connections.

mod codec;
mod pipe;
mod queue;
pub(crate) mod ring;

#[cfg(feature = "serde")]
pub use codec::Serde;
pub use codec::{Codec, DecodeError, DefaultCodec, EncodeError, Plain};
pub use pipe::{Connection, ConnectionHandle, pipe, pipe_oneway};
pub use queue::{JoinableQueue, Queue, Receiver, Sender};
