//! How a message of type `T` becomes bytes in the ring and back.

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Why bytes from the ring did not decode into a `T`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message does not decode: {0}")]
pub struct DecodeError(pub(crate) String);

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value does not encode: {0}")]
pub struct EncodeError(pub(crate) String);

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// A way to turn `T` into message bytes and back. Sealed: [`Plain`] and [`Serde`].
pub trait Codec<T>: sealed::Sealed {
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

impl sealed::Sealed for Plain {}

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
impl sealed::Sealed for Serde {}

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
