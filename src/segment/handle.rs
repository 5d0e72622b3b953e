//! Handles: the serialisable description another process uses to attach an object.

use std::fmt;
use std::str::FromStr;

pub use crate::error::ParseHandleError;

/// Where a segment can be found.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) enum Location {
    /// A POSIX shm name (`/name`).
    Named(String),
    /// A memfd descriptor number, valid in this process, a forked child, or an exec'd child
    /// that inherited it.
    Fd(i32),
    /// An anonymous mapping: only inheritance across `fork` reaches it.
    Anonymous,
}

/// The serialisable description of a shared object, from which another process re-attaches it
/// with the type's `from_handle`.
///
/// - A handle of a **named** object works in any process on the host (mode 0600 permitting).
/// - A handle of a **memfd** object names a descriptor: it works in this process, in a forked
///   child, and in an exec'd child after `set_inheritable(true)` was called on the object.
/// - A handle of an **anonymous** object cannot be re-opened: the object itself is inherited
///   across `fork`, ready to use.
///
/// Handles print as short strings (`mp1:4c4b0001:name:/jobs`, `mp1:4c4b0001:fd:7`) and parse back
/// with [`FromStr`], e.g. to travel in an environment variable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct Handle {
    kind: u32,
    location: Location,
}

/// What serialising something for another process involved: the descriptors of memfd
/// handles (the process must inherit them), and whether live objects were serialised (the
/// sender should keep them attached until the other process has attached its own).
#[cfg(feature = "serde")]
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) fds: Vec<i32>,
    pub(crate) objects: bool,
}

#[cfg(feature = "serde")]
std::thread_local! {
    /// How many [`collecting`] calls are running on this thread (nested ones count too).
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Whether a live object was serialised inside the innermost running [`collecting`].
    static OBJECTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Descriptors noted by the running [`collecting`] calls, innermost last, and their number
    /// (kept apart so the common case, no descriptor, never touches the vector).
    static FDS: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
    static FD_COUNT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f`, returning also what it serialised that matters to a receiving process. Cheap
/// enough to wrap every task argument: a few thread-local cell accesses unless a handle is
/// met.
#[cfg(feature = "serde")]
pub(crate) fn collecting<T>(f: impl FnOnce() -> T) -> (T, Collected) {
    let outer_objects = OBJECTS.replace(false);
    let fds_before = FD_COUNT.get();
    DEPTH.set(DEPTH.get() + 1);
    let out = f();
    let depth = DEPTH.get() - 1;
    DEPTH.set(depth);
    let objects = OBJECTS.get();
    // What the inner call met, the outer one (if any) met too.
    OBJECTS.set(outer_objects || objects);
    let mut fds = Vec::new();
    if FD_COUNT.get() != fds_before {
        FDS.with(|v| {
            let mut v = v.borrow_mut();
            fds = v[fds_before..].to_vec();
            if depth == 0 {
                v.clear();
                FD_COUNT.set(0);
            }
        });
    }
    (out, Collected { fds, objects })
}

/// Notes, inside [`collecting`], that the descriptor `fd` was serialised.
#[cfg(feature = "serde")]
fn note_fd(fd: i32) {
    if DEPTH.get() > 0 {
        FDS.with(|v| v.borrow_mut().push(fd));
        FD_COUNT.set(FD_COUNT.get() + 1);
    }
}

/// Notes, inside [`collecting`], that a live object (not just a handle) was serialised.
#[cfg(feature = "serde")]
pub(crate) fn note_object() {
    if DEPTH.get() > 0 {
        OBJECTS.set(true);
    }
}

/// A descriptor number a spawned child must inherit as it is: serialises as the number, and
/// tells [`collecting`] to hand the descriptor down.
#[cfg(feature = "serde")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct InheritFd(pub(crate) i32);

#[cfg(feature = "serde")]
impl serde::Serialize for InheritFd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        note_fd(self.0);
        serializer.serialize_i32(self.0)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Handle {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        #[serde(rename = "Handle")]
        struct Repr<'a> {
            kind: u32,
            location: &'a Location,
        }
        if let Location::Fd(fd) = self.location {
            note_fd(fd);
        }
        Repr {
            kind: self.kind,
            location: &self.location,
        }
        .serialize(serializer)
    }
}

impl Handle {
    pub(crate) fn new(kind: u32, location: Location) -> Self {
        Self { kind, location }
    }

    pub(crate) fn kind(&self) -> u32 {
        self.kind
    }

    pub(crate) fn location(&self) -> &Location {
        &self.location
    }

    /// The POSIX shm name, if the object is named.
    pub fn name(&self) -> Option<&str> {
        match &self.location {
            Location::Named(n) => Some(n),
            _ => None,
        }
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Named(n) => write!(f, "mp1:{:08x}:name:{n}", self.kind),
            Location::Fd(fd) => write!(f, "mp1:{:08x}:fd:{fd}", self.kind),
            Location::Anonymous => write!(f, "mp1:{:08x}:anon:", self.kind),
        }
    }
}

impl FromStr for Handle {
    type Err = ParseHandleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(4, ':');
        if parts.next() != Some("mp1") {
            return Err(ParseHandleError);
        }
        let kind = u32::from_str_radix(parts.next().ok_or(ParseHandleError)?, 16)
            .map_err(|_| ParseHandleError)?;
        let tag = parts.next().ok_or(ParseHandleError)?;
        let rest = parts.next().ok_or(ParseHandleError)?;
        let location = match tag {
            "name" if !rest.is_empty() => Location::Named(rest.to_owned()),
            "fd" => Location::Fd(rest.parse().map_err(|_| ParseHandleError)?),
            "anon" if rest.is_empty() => Location::Anonymous,
            _ => return Err(ParseHandleError),
        };
        Ok(Self { kind, location })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for h in [
            Handle::new(7, Location::Named("/a:b".into())),
            Handle::new(0x4c4b_0001, Location::Fd(12)),
            Handle::new(1, Location::Anonymous),
        ] {
            assert_eq!(h.to_string().parse::<Handle>().unwrap(), h);
        }
        assert!("mp2:1:fd:3".parse::<Handle>().is_err());
        assert!("mp1:zz:fd:3".parse::<Handle>().is_err());
        assert!("mp1:1:fd:x".parse::<Handle>().is_err());
    }
}
