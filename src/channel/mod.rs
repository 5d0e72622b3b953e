//! L4: messaging on shared-memory rings: `Queue`, `JoinableQueue`, `Sender`/`Receiver`, and
//! `Pipe` connections.

mod codec;
mod loan;
mod pipe;
mod queue;
pub(crate) mod ring;

#[cfg(feature = "msgpack")]
pub use codec::MessagePack;
pub use codec::{Codec, DecodeError, DefaultCodec, EncodeError, Plain, Serde};
pub use loan::{ReadLoan, WriteLoan};
pub use pipe::{Connection, ConnectionHandle, duplex, pipe, pipe_oneway};
pub use queue::{JoinableQueue, Queue, Receiver, Sender, channel};
