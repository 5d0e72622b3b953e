//! `SharedMemory`: raw named blocks, bounds checks, ownership of the name, Python interop.

#[path = "../common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::unique_name;
use multiproc::{OpenError, OutOfBounds, SharedMemory};

fn shm_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/dev/shm").join(name.trim_start_matches('/'))
}

#[test]
fn create_write_open_read() {
    let name = unique_name("basic");
    let shm = SharedMemory::create_named(&name, 100).unwrap();
    assert_eq!(shm.name(), name);
    assert_eq!(shm.len(), 100);
    assert!(!shm.is_empty());
    assert!(common::shm_exists(&name));
    assert_eq!(shm.to_vec(), vec![0; 100], "a new block is zeroed");

    shm.write(10, b"hello").unwrap();
    let other = SharedMemory::open(&name).unwrap();
    assert_eq!(other.len(), 100);
    assert_eq!(other.name(), name);
    let mut buf = [0u8; 5];
    other.read(10, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");

    // Writes through the opener show through the creator, to the last byte.
    other.write(95, b"12345").unwrap();
    let mut tail = [0u8; 5];
    shm.read(95, &mut tail).unwrap();
    assert_eq!(&tail, b"12345");
    let whole = shm.to_vec();
    assert_eq!(&whole[10..15], b"hello");
    assert_eq!(&whole[95..], b"12345");

    // Empty reads and writes at the end are in bounds.
    shm.read(100, &mut []).unwrap();
    shm.write(100, &[]).unwrap();

    // A leading slash is accepted too.
    let slashed = SharedMemory::open(&format!("/{name}")).unwrap();
    assert_eq!(slashed.name(), name);
}

#[test]
fn random_name_block() {
    let shm = SharedMemory::create(64).unwrap();
    let name = shm.name().to_owned();
    assert!(!name.starts_with('/'));
    assert!(common::shm_exists(&name));
    shm.write(0, b"abc").unwrap();
    let mut buf = [0u8; 3];
    SharedMemory::open(&name)
        .unwrap()
        .read(0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"abc");
    drop(shm);
    assert!(!common::shm_exists(&name));
}

#[test]
fn mode_is_0600() {
    let name = unique_name("mode");
    let _shm = SharedMemory::create_named(&name, 16).unwrap();
    let mode = std::fs::metadata(shm_path(&name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn out_of_bounds_copies_nothing() {
    let name = unique_name("oob");
    let shm = SharedMemory::create_named(&name, 16).unwrap();
    shm.write(0, &[7; 16]).unwrap();

    let mut buf = [0xEE_u8; 4];
    assert_eq!(
        shm.read(14, &mut buf),
        Err(OutOfBounds {
            offset: 14,
            end: 18,
            len: 16
        })
    );
    assert_eq!(buf, [0xEE; 4], "a failed read copies nothing");
    assert_eq!(
        shm.read(17, &mut []),
        Err(OutOfBounds {
            offset: 17,
            end: 17,
            len: 16
        })
    );

    assert_eq!(
        shm.write(13, &[1, 2, 3, 4]),
        Err(OutOfBounds {
            offset: 13,
            end: 17,
            len: 16
        })
    );
    assert_eq!(shm.to_vec(), vec![7; 16], "a failed write copies nothing");

    // Overflowing offset + length.
    assert_eq!(
        shm.write(usize::MAX, &[1]),
        Err(OutOfBounds {
            offset: usize::MAX,
            end: usize::MAX,
            len: 16
        })
    );
    let mut one = [0u8; 1];
    assert!(shm.read(usize::MAX, &mut one).is_err());
    assert_eq!(one, [0]);
    assert_eq!(shm.to_vec(), vec![7; 16]);
}

#[test]
fn create_errors() {
    let name = unique_name("exists");
    let _shm = SharedMemory::create_named(&name, 16).unwrap();
    let r = SharedMemory::create_named(&name, 16);
    assert!(matches!(r, Err(OpenError::AlreadyExists { .. })), "{r:?}");
    let r = SharedMemory::create_named(&format!("/{name}"), 32);
    assert!(matches!(r, Err(OpenError::AlreadyExists { .. })), "{r:?}");

    let zero = unique_name("zero");
    // Issue 12: a size of 0 says what is wrong (Python's `ValueError`), not just EINVAL.
    const ZERO: &str = "shared memory size must be at least 1 byte";
    let r = SharedMemory::create_named(&zero, 0);
    assert!(
        matches!(r, Err(OpenError::InvalidArgument(why)) if why == ZERO),
        "{r:?}"
    );
    assert!(!common::shm_exists(&zero), "a failed create leaves nothing");
    let r = SharedMemory::create(0);
    assert!(
        matches!(r, Err(OpenError::InvalidArgument(why)) if why == ZERO),
        "{r:?}"
    );

    for bad in ["", "/", "a/b", &"x".repeat(300)] {
        let r = SharedMemory::create_named(bad, 16);
        assert!(
            matches!(r, Err(OpenError::InvalidName { .. })),
            "{bad:?}: {r:?}"
        );
        let r = SharedMemory::open(bad);
        assert!(
            matches!(r, Err(OpenError::InvalidName { .. })),
            "{bad:?}: {r:?}"
        );
    }
}

#[test]
fn open_missing_or_empty() {
    let r = SharedMemory::open(&unique_name("missing"));
    assert!(matches!(r, Err(OpenError::NotFound { .. })), "{r:?}");

    let name = unique_name("empty");
    let path = shm_path(&name);
    std::fs::File::create_new(&path).unwrap();
    let r = SharedMemory::open(&name);
    let _ = std::fs::remove_file(&path);
    assert!(
        matches!(
            r,
            Err(OpenError::Truncated {
                found: 0,
                expected: 1
            })
        ),
        "{r:?}"
    );
}

#[test]
fn creator_drop_unlinks_opener_drop_does_not() {
    let name = unique_name("drop");
    let shm = SharedMemory::create_named(&name, 32).unwrap();
    let opened = SharedMemory::open(&name).unwrap();
    drop(opened);
    assert!(common::shm_exists(&name));
    shm.write(0, b"x").unwrap();
    // An opener that outlives the creator keeps its mapping.
    let opened = SharedMemory::open(&name).unwrap();
    drop(shm);
    assert!(!common::shm_exists(&name));
    let r = SharedMemory::open(&name);
    assert!(matches!(r, Err(OpenError::NotFound { .. })), "{r:?}");
    let mut b = [0u8; 1];
    opened.read(0, &mut b).unwrap();
    assert_eq!(&b, b"x");
}

#[test]
fn explicit_unlink() {
    let name = unique_name("unlink");
    let shm = SharedMemory::create_named(&name, 32).unwrap();
    assert!(shm.unlink().unwrap());
    assert!(!common::shm_exists(&name));
    assert!(!shm.unlink().unwrap());
    // The mapping stays usable.
    shm.write(0, b"still").unwrap();
    let mut b = [0u8; 5];
    shm.read(0, &mut b).unwrap();
    assert_eq!(&b, b"still");
    // A name removed by someone else: NotFound.
    let name = unique_name("unlink2");
    let shm = SharedMemory::create_named(&name, 32).unwrap();
    let opened = SharedMemory::open(&name).unwrap();
    assert!(opened.unlink().unwrap());
    let r = shm.unlink();
    assert!(matches!(r, Err(OpenError::NotFound { .. })), "{r:?}");
    drop(shm);
    assert!(!common::shm_exists(&name));
}

#[test]
fn persist_keeps_the_name() {
    let name = unique_name("persist");
    let shm = SharedMemory::create_named(&name, 32).unwrap().persist();
    shm.write(3, b"kept").unwrap();
    drop(shm);
    assert!(common::shm_exists(&name));
    let again = SharedMemory::open(&name).unwrap();
    let mut b = [0u8; 4];
    again.read(3, &mut b).unwrap();
    assert_eq!(&b, b"kept");
    assert!(again.unlink().unwrap());
    drop(again);
    assert!(!common::shm_exists(&name));
}

// ---------------------------------------------------------------------------------------------
// Python interop
// ---------------------------------------------------------------------------------------------

fn have_python3() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        // `.ci/run` installs python3 and sets this, so CI never skips silently.
        assert!(
            std::env::var_os("MULTIPROC_REQUIRE_PYTHON").is_none(),
            "python3 not found, and MULTIPROC_REQUIRE_PYTHON is set"
        );
        eprintln!("python3 not found: skipping interop");
    }
    ok
}

/// Python creates and fills a block, Rust reads it and answers, Python checks the answer.
const PY_CREATES: &str = r#"
import sys
from multiprocessing import shared_memory
s = shared_memory.SharedMemory(name=sys.argv[1], create=True, size=4096)
s.buf[0:9] = b"from-py!!"
s.buf[4090:4096] = bytes([1, 2, 3, 4, 5, 6])
print("ready", flush=True)
sys.stdin.readline()
reply = bytes(s.buf[100:110])
s.close()
s.unlink()
if reply != b"from-rust!":
    print("bad reply", reply, file=sys.stderr)
    sys.exit(3)
"#;

#[test]
fn python_creates_rust_opens() {
    if !have_python3() {
        return;
    }
    let _watchdog = common::watchdog(Duration::from_secs(60), "python_creates_rust_opens");
    let name = unique_name("py-creates");
    let mut py = Command::new("python3")
        .args(["-c", PY_CREATES, &name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut stdin = py.stdin.take().unwrap();
    let mut stdout = BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "python did not get ready");

    let shm = SharedMemory::open(&name).expect("open python's block");
    assert!(shm.len() >= 4096, "len {}", shm.len());
    assert_eq!(shm.name(), name);
    let mut head = [0u8; 9];
    shm.read(0, &mut head).unwrap();
    assert_eq!(&head, b"from-py!!");
    let mut tail = [0u8; 6];
    shm.read(4090, &mut tail).unwrap();
    assert_eq!(tail, [1, 2, 3, 4, 5, 6]);
    shm.write(100, b"from-rust!").unwrap();

    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let status = common::wait_for(&mut py, Duration::from_secs(30));
    assert!(status.success(), "python failed: {status}");
    // Python unlinked it; our opener's drop must not touch the (gone) name.
    assert!(!common::shm_exists(&name));
    drop(shm);
}

/// Python opens a block Rust created, checks it and writes an answer.
const PY_OPENS: &str = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
s = shared_memory.SharedMemory(name=sys.argv[1])
# Python < 3.13 registers opened blocks too and would unlink ours at exit.
resource_tracker.unregister(s._name, "shared_memory")
data = bytes(s.buf[0:10])
size = s.size
s.buf[200:208] = b"py-reply"
s.close()
if data != b"from-rust!" or size < 4096:
    print("bad data", data, size, file=sys.stderr)
    sys.exit(3)
"#;

#[test]
fn rust_creates_python_opens() {
    if !have_python3() {
        return;
    }
    let _watchdog = common::watchdog(Duration::from_secs(60), "rust_creates_python_opens");
    let shm = SharedMemory::create_named(&unique_name("rust-creates"), 4096).unwrap();
    shm.write(0, b"from-rust!").unwrap();
    let mut py = Command::new("python3")
        .args(["-c", PY_OPENS, shm.name()])
        .stdin(Stdio::null())
        .spawn()
        .expect("start python3");
    let status = common::wait_for(&mut py, Duration::from_secs(30));
    assert!(status.success(), "python failed: {status}");
    let mut reply = [0u8; 8];
    shm.read(200, &mut reply).unwrap();
    assert_eq!(&reply, b"py-reply");
    assert!(common::shm_exists(shm.name()), "python removed our block");
    let name = shm.name().to_owned();
    drop(shm);
    assert!(!common::shm_exists(&name));
}

/// A creator must not unlink a name that, meanwhile, was unlinked and taken by a new block.
#[test]
fn creator_drop_leaves_a_reused_name_alone() {
    let name = unique_name("reuse");
    let first = SharedMemory::create_named(&name, 64).unwrap();
    assert!(first.unlink().unwrap());
    let second = SharedMemory::create_named(&name, 64).unwrap();
    drop(first);
    assert!(
        common::shm_exists(&name),
        "the old creator removed the new block's name"
    );
    drop(second);
    assert!(!common::shm_exists(&name));
}
