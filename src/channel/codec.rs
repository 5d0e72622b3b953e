//! How a message of type `T` becomes bytes in the ring and back.

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::segment::{Foreign, ForeignMut, Slot};

pub use crate::error::{DecodeError, EncodeError};

pub(crate) mod sealed {
    use super::{DecodeError, EncodeError, Foreign, ForeignMut, Slot};

    /// How the ring moves a `T`: never through a reference into shared memory (see the
    /// policy in `segment::foreign`).
    pub trait Sealed<T> {
        /// Writes the encoding of `value` into `dst`, which is exactly `encoded_len(value)`
        /// bytes; an error if the value encodes to another length this time.
        fn encode_foreign(value: &T, dst: ForeignMut<'_>) -> Result<(), EncodeError>;
        /// Decodes a `T` from bytes another process wrote (untrusted).
        fn decode_foreign(src: Foreign<'_>) -> Result<T, DecodeError>;
        /// As `decode_foreign`, writing the value into `dst`; on `Ok`, `dst` is initialised.
        /// A get decodes into the caller's slot so that a large value is not moved through
        /// the ring's frames on its way out.
        #[inline]
        fn decode_into(src: Foreign<'_>, dst: &mut Slot<T>) -> Result<(), DecodeError> {
            dst.put(Self::decode_foreign(src)?);
            Ok(())
        }
        /// The length `put` reserves for `value`: one serialisation pass over it (the
        /// encoding into the ring is the second). In debug builds a codec that cannot carry
        /// every value also checks here that `value`'s encoding decodes back.
        fn put_len(value: &T) -> Result<usize, EncodeError>;
    }
}

/// A way to turn `T` into message bytes and back. Sealed: [`Plain`], [`Serde`] (the
/// [`DefaultCodec`]) and, with the `msgpack` feature, `MessagePack`.
#[diagnostic::on_unimplemented(
    message = "the codec `{Self}` cannot carry `{T}` through a queue or pipe",
    label = "`{T}` has no encoding with codec `{Self}`",
    note = "for the default codec (`Serde`), derive `serde::Serialize` and `serde::Deserialize` for `{T}` (multiproc's `serde` feature, on by default, must be enabled)",
    note = "for `Plain` (e.g. `Queue::<{T}, Plain>`), make `{T}` `#[repr(C)]` and derive zerocopy's `FromBytes`, `IntoBytes` and `Immutable`"
)]
pub trait Codec<T>: sealed::Sealed<T> {
    /// Encoded size of `value`.
    ///
    /// # Errors
    /// If the value cannot be encoded.
    fn encoded_len(value: &T) -> Result<usize, EncodeError>;
    /// Writes `value` into `buf`, which is exactly `encoded_len(value)` bytes.
    fn encode(value: &T, buf: &mut [u8]);
    /// Reads a `T` out of `buf`.
    ///
    /// # Errors
    /// If `buf` is not a valid encoding; another process wrote it, so it is untrusted. The
    /// error carries a copy of `buf`.
    fn decode(buf: &[u8]) -> Result<T, DecodeError>;
}

/// Plain data, copied as its bytes: one `memcpy` into the ring, one out, no serialisation.
/// For `#[repr(C)]` types deriving zerocopy's `FromBytes`, `IntoBytes` and `Immutable`
/// (integers, floats, arrays and structs of them).
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

fn plain_len_error<T>(len: usize) -> String {
    format!(
        "{len} bytes for a {}-byte plain `{}`",
        size_of::<T>(),
        std::any::type_name::<T>()
    )
}

impl<T: FromBytes + IntoBytes + Immutable> sealed::Sealed<T> for Plain {
    #[inline]
    fn put_len(_: &T) -> Result<usize, EncodeError> {
        Ok(size_of::<T>())
    }

    #[inline]
    fn encode_foreign(value: &T, mut dst: ForeignMut<'_>) -> Result<(), EncodeError> {
        if dst.write_at(0, value.as_bytes()) && dst.len() == size_of::<T>() {
            Ok(())
        } else {
            Err(EncodeError(format!(
                "{} bytes of room for a {}-byte plain value",
                dst.len(),
                size_of::<T>()
            )))
        }
    }

    #[inline]
    fn decode_foreign(src: Foreign<'_>) -> Result<T, DecodeError> {
        let mut slot = Slot::new();
        Self::decode_into(src, &mut slot)?;
        slot.take()
            .ok_or_else(|| DecodeError::new(plain_len_error::<T>(src.len()), src.to_vec()))
    }

    #[inline]
    fn decode_into(src: Foreign<'_>, dst: &mut Slot<T>) -> Result<(), DecodeError> {
        if src.read_into(dst) {
            Ok(())
        } else {
            Err(DecodeError::new(
                plain_len_error::<T>(src.len()),
                src.to_vec(),
            ))
        }
    }
}

impl<T: FromBytes + IntoBytes + Immutable> Codec<T> for Plain {
    #[inline]
    fn encoded_len(_: &T) -> Result<usize, EncodeError> {
        Ok(size_of::<T>())
    }

    #[inline]
    fn encode(value: &T, buf: &mut [u8]) {
        buf.copy_from_slice(value.as_bytes());
    }

    #[inline]
    fn decode(buf: &[u8]) -> Result<T, DecodeError> {
        T::read_from_bytes(buf)
            .map_err(|_| DecodeError::new(plain_len_error::<T>(buf.len()), buf.to_vec()))
    }
}

/// Any serde type, encoded with postcard straight into the ring: the default codec.
///
/// This type exists in every build; it implements [`Codec<T>`] for
/// `T: Serialize + DeserializeOwned` when the `serde` feature is on (the default), so
/// enabling the feature only adds implementations.
///
/// postcard is compact and fast but not self-describing: types that serialise differently
/// from how they deserialise (`#[serde(untagged)]` enums, `skip_serializing_if`, `flatten`,
/// `serde_json::Value`) do not survive it; use `MessagePack` (feature `msgpack`) for those.
/// In debug builds a put checks that the value's encoding decodes back (running the type's
/// `Deserialize` once in the sending process, outside any lock) and fails with
/// [`PutError::Encode`](crate::PutError::Encode) if not. In every build, a get that cannot
/// decode a message hands its bytes back in the [`DecodeError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Serde;

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> sealed::Sealed<T> for Serde {
    fn encode_foreign(value: &T, dst: ForeignMut<'_>) -> Result<(), EncodeError> {
        postcard::serialize_with_flavor(value, RingWriter { dst, pos: 0 })
            .map_err(|e| EncodeError(e.to_string()))
    }

    fn decode_foreign(src: Foreign<'_>) -> Result<T, DecodeError> {
        // Decoders branch on what they read: they get a private copy (segment::foreign).
        src.with_copy(<Self as Codec<T>>::decode)
    }

    #[cfg(debug_assertions)]
    fn put_len(value: &T) -> Result<usize, EncodeError> {
        postcard_round_trip(value)
    }

    #[cfg(not(debug_assertions))]
    fn put_len(value: &T) -> Result<usize, EncodeError> {
        <Self as Codec<T>>::encoded_len(value)
    }
}

/// Debug builds: `value`'s postcard encoding must decode, using every byte, into a value whose
/// encoding is as long; returns that length. Types that serialise differently from how they
/// deserialise (`#[serde(untagged)]`, `skip_serializing_if`, `flatten`) fail here instead of
/// at the receiver. Lengths, not bytes, are compared, so maps that iterate in another order
/// pass. The value itself is serialised once, as when only its size is computed.
#[cfg(all(debug_assertions, feature = "serde"))]
fn postcard_round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(
    value: &T,
) -> Result<usize, EncodeError> {
    let name = std::any::type_name::<T>();
    let advice = "untagged enums, skip_serializing_if and flatten need a self-describing codec";
    let first = postcard::to_allocvec(value).map_err(|e| EncodeError(format!("`{name}`: {e}")))?;
    let back = match postcard::take_from_bytes::<T>(&first) {
        Ok((back, [])) => back,
        Ok((_, rest)) => {
            return Err(EncodeError(format!(
                "`{name}` does not decode from its own postcard encoding ({} bytes left over); \
                 {advice}",
                rest.len()
            )));
        }
        Err(e) => {
            return Err(EncodeError(format!(
                "`{name}` does not decode from its own postcard encoding ({e}); {advice}"
            )));
        }
    };
    match postcard::experimental::serialized_size(&back) {
        Ok(n) if n == first.len() => Ok(n),
        _ => Err(EncodeError(format!(
            "`{name}` decodes from its own postcard encoding as a different value; {advice}"
        ))),
    }
}

/// postcard output straight into reserved ring bytes, through copies (no reference into the
/// shared memory).
#[cfg(feature = "serde")]
struct RingWriter<'a> {
    dst: ForeignMut<'a>,
    pos: usize,
}

#[cfg(feature = "serde")]
impl postcard::ser_flavors::Flavor for RingWriter<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if !self.dst.write_at(self.pos, data) {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.pos += data.len();
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if !self.dst.write_byte(self.pos, data) {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.pos += 1;
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        // A value that encodes shorter the second time would leave stale bytes behind.
        if self.pos == self.dst.len() {
            Ok(())
        } else {
            Err(postcard::Error::SerializeBufferFull)
        }
    }
}

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Codec<T> for Serde {
    fn encoded_len(value: &T) -> Result<usize, EncodeError> {
        postcard::experimental::serialized_size(value).map_err(|e| EncodeError(e.to_string()))
    }

    fn encode(value: &T, buf: &mut [u8]) {
        // The buffer is exactly the size postcard just computed for this value.
        postcard::to_slice(value, buf).expect("postcard encodes into its own computed size");
    }

    fn decode(buf: &[u8]) -> Result<T, DecodeError> {
        postcard::from_bytes(buf).map_err(|e| DecodeError::new(e.to_string(), buf.to_vec()))
    }
}

/// Any serde type, encoded as MessagePack (rmp-serde, structs as maps with field names)
/// straight into the ring. Needs the `msgpack` feature.
///
/// Unlike postcard ([`Serde`]), MessagePack is self-describing: the bytes say what they hold,
/// so `#[serde(untagged)]` enums, `skip_serializing_if`, `flatten` and `serde_json::Value`
/// arrive as they were sent. It costs about twice postcard's time and bytes.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc::{MessagePack, Queue};
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// #[serde(untagged)]
/// enum Field {
///     Number(i64),
///     Text(String),
/// }
///
/// let q = Queue::<Field, MessagePack>::with_codec(8)?;
/// q.put(Field::Text("seven".into()))?;
/// assert_eq!(q.get()?, Field::Text("seven".into()));
/// # Ok(()) }
/// ```
#[cfg(feature = "msgpack")]
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePack;

/// `io::Write` into reserved ring bytes, through copies; fails rather than overrun them.
#[cfg(feature = "msgpack")]
struct RingIo<'a> {
    dst: ForeignMut<'a>,
    pos: usize,
}

#[cfg(feature = "msgpack")]
impl std::io::Write for RingIo<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if !self.dst.write_at(self.pos, data) {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.pos += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `io::Write` that only counts, for [`MessagePack`]'s `encoded_len`.
#[cfg(feature = "msgpack")]
struct Count(usize);

#[cfg(feature = "msgpack")]
impl std::io::Write for Count {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0 += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(feature = "msgpack")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> sealed::Sealed<T> for MessagePack {
    fn put_len(value: &T) -> Result<usize, EncodeError> {
        <Self as Codec<T>>::encoded_len(value)
    }

    fn encode_foreign(value: &T, dst: ForeignMut<'_>) -> Result<(), EncodeError> {
        let mut w = RingIo { dst, pos: 0 };
        rmp_serde::encode::write_named(&mut w, value).map_err(|e| EncodeError(e.to_string()))?;
        // A value that encodes shorter the second time would leave stale bytes behind.
        if w.pos == w.dst.len() {
            Ok(())
        } else {
            Err(EncodeError(format!(
                "encoded to {} bytes, {} reserved",
                w.pos,
                w.dst.len()
            )))
        }
    }

    fn decode_foreign(src: Foreign<'_>) -> Result<T, DecodeError> {
        // Decoders branch on what they read: they get a private copy (segment::foreign).
        src.with_copy(<Self as Codec<T>>::decode)
    }
}

#[cfg(feature = "msgpack")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Codec<T> for MessagePack {
    fn encoded_len(value: &T) -> Result<usize, EncodeError> {
        let mut n = Count(0);
        rmp_serde::encode::write_named(&mut n, value).map_err(|e| EncodeError(e.to_string()))?;
        Ok(n.0)
    }

    fn encode(value: &T, mut buf: &mut [u8]) {
        // The buffer is exactly the size just counted for this value.
        rmp_serde::encode::write_named(&mut buf, value)
            .expect("MessagePack encodes into its own counted size");
    }

    fn decode(buf: &[u8]) -> Result<T, DecodeError> {
        let mut rest = buf;
        match rmp_serde::decode::from_read::<_, T>(&mut rest) {
            Ok(v) if rest.is_empty() => Ok(v),
            Ok(_) => Err(DecodeError::new(
                format!("{} bytes after the value", rest.len()),
                buf.to_vec(),
            )),
            Err(e) => Err(DecodeError::new(e.to_string(), buf.to_vec())),
        }
    }
}

/// The codec `Queue<T>`, `Connection<T>` and the other channel types use unless told
/// otherwise: [`Serde`] in every build (it carries serde types when the `serde` feature is
/// on). Plain data can use [`Plain`] instead, with or without the feature.
pub type DefaultCodec = Serde;
