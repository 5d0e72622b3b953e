//! How a message of type `T` becomes bytes in the ring and back.

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::segment::{Foreign, ForeignMut};

pub use crate::error::{DecodeError, EncodeError};

pub(crate) mod sealed {
    use super::{DecodeError, EncodeError, Foreign, ForeignMut};

    /// How the ring moves a `T`: never through a reference into shared memory (see the
    /// policy in `segment::foreign`).
    pub trait Sealed<T> {
        /// Writes the encoding of `value` into `dst`, which is exactly `encoded_len(value)`
        /// bytes; an error if the value encodes to another length this time.
        fn encode_foreign(value: &T, dst: ForeignMut<'_>) -> Result<(), EncodeError>;
        /// Decodes a `T` from bytes another process wrote (untrusted).
        fn decode_foreign(src: Foreign<'_>) -> Result<T, DecodeError>;
    }
}

/// A way to turn `T` into message bytes and back. Sealed: [`Plain`] and [`Serde`].
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
    /// If `buf` is not a valid encoding; another process wrote it, so it is untrusted.
    fn decode(buf: &[u8]) -> Result<T, DecodeError>;
}

/// Plain data, copied as its bytes: one `memcpy` into the ring, one out, no serialisation.
/// For `#[repr(C)]` types deriving zerocopy's `FromBytes`, `IntoBytes` and `Immutable`
/// (integers, floats, arrays and structs of them).
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl<T: FromBytes + IntoBytes + Immutable> sealed::Sealed<T> for Plain {
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
        src.read().ok_or_else(|| {
            DecodeError(format!(
                "{} bytes for a {}-byte plain value",
                src.len(),
                size_of::<T>()
            ))
        })
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
        T::read_from_bytes(buf).map_err(|_| {
            DecodeError(format!(
                "{} bytes for a {}-byte plain value",
                buf.len(),
                size_of::<T>()
            ))
        })
    }
}

/// Any serde type, encoded with postcard straight into the ring.
#[cfg(feature = "serde")]
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
        src.with_copy(|bytes| postcard::from_bytes(bytes).map_err(|e| DecodeError(e.to_string())))
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

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if !self.dst.write_at(self.pos, data) {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.pos += data.len();
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
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
        postcard::from_bytes(buf).map_err(|e| DecodeError(e.to_string()))
    }
}

/// The codec `Queue<T>` uses unless told otherwise: [`Serde`] with the `serde` feature,
/// else [`Plain`].
#[cfg(feature = "serde")]
pub type DefaultCodec = Serde;
/// The codec `Queue<T>` uses unless told otherwise: [`Serde`] with the `serde` feature,
/// else [`Plain`].
#[cfg(not(feature = "serde"))]
pub type DefaultCodec = Plain;
