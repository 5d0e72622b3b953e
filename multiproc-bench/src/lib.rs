//! The pipes benchmark: every IPC mechanism measured the same way, between two pinned
//! processes, with every message checked. `main.rs` is the command line; the modules here are
//! also used by the tests.

#![allow(unsafe_code)] // fork, mmap, futex, affinity, pthread: each block says why it is sound
#![warn(missing_docs)]

pub mod check;
pub mod evshm;
pub mod floor;
pub mod goals;
#[cfg(feature = "iceoryx2")]
pub mod iceoryx;
pub mod inplace;
pub mod locks;
pub mod machine;
pub mod mech;
pub mod method;
pub mod model;
pub mod plot;
pub mod python;
pub mod run;
pub mod sys;
pub mod table;
pub mod validate;
pub mod wait;

/// A byte count as "8 B", "4 KiB", "16 MiB".
pub fn fmt_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}
