//! [`EncodesAs`]: what a parent may pass where a child's function takes an owned argument.

use serde::Serialize;

/// A value the parent can pass for a child's argument of type `A`: `A` itself, or a borrowed
/// form whose encoding is the same as `A`'s, so the child decodes it as an owned `A`.
///
/// Implemented for `A`, `&A` (a clone where a forked child needs an `A`), `&str` for `String`
/// and `&[T]` for `Vec<T>`. So `Process::spawn(count_words, text.as_str())` works for
/// `fn count_words(text: String)`, and `&names[..]` or `&names` for `fn f(names: Vec<String>)`.
/// Sealed: only pairs whose encodings are the same are implemented.
pub trait EncodesAs<A>: Serialize + sealed::Sealed<A> {
    /// The owned argument (for a forked child, which gets the value itself).
    fn into_arg(self) -> A;
}

mod sealed {
    pub trait Sealed<A> {}
}

impl<A: Serialize> sealed::Sealed<A> for A {}
impl<A: Serialize> EncodesAs<A> for A {
    fn into_arg(self) -> A {
        self
    }
}

impl<A: Serialize + Clone> sealed::Sealed<A> for &A {}
impl<A: Serialize + Clone> EncodesAs<A> for &A {
    fn into_arg(self) -> A {
        self.clone()
    }
}

impl sealed::Sealed<String> for &str {}
impl EncodesAs<String> for &str {
    fn into_arg(self) -> String {
        self.to_owned()
    }
}

impl<T: Serialize + Clone> sealed::Sealed<Vec<T>> for &[T] {}
impl<T: Serialize + Clone> EncodesAs<Vec<T>> for &[T] {
    fn into_arg(self) -> Vec<T> {
        self.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        postcard::to_allocvec(v).unwrap()
    }

    /// The borrowed forms encode exactly as the owned types they stand for.
    #[test]
    fn borrowed_forms_encode_as_their_owned_types() {
        let s = String::from("grüße");
        assert_eq!(encoded(&s.as_str()), encoded(&s));
        let v = vec![String::from("a"), String::from("bc")];
        assert_eq!(encoded(&&v[..]), encoded(&v));
        assert_eq!(encoded(&&v), encoded(&v));
        let n: Vec<u64> = vec![1, 300, u64::MAX];
        assert_eq!(encoded(&n.as_slice()), encoded(&n));
        assert_eq!(EncodesAs::<Vec<u64>>::into_arg(n.as_slice()), n);
        assert_eq!(EncodesAs::<String>::into_arg(s.as_str()), s);
    }
}
