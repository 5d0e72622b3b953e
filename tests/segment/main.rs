//! Segments: header validation against hostile bytes, named segments, handles, relocation.
//!
//! Corruption tests create a named object, rewrite `/dev/shm/<name>` with plain file writes and
//! expect the exact `OpenError` from `open`. The creating object stays alive meanwhile (it
//! unlinks the name on drop) but is never used after its bytes were damaged.

#[path = "../common/mod.rs"]
mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::unique_name;
use multiproc::{
    Event, Handle, Lock, OpenError, RLock, Semaphore, SharedObject, TryLockError, Value,
};

/// Offsets of the header fields the tests rewrite (see src/segment/header.rs).
const STATE_OFFSET: u64 = 8;
const VERSION_OFFSET: u64 = 12;
const KIND_OFFSET: u64 = 16;
const HEADER_LEN: u64 = 64;

/// A short open timeout, so the "never initialised" cases finish quickly.
const SHORT: Duration = Duration::from_millis(50);

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name.trim_start_matches('/'))
}

fn write_at(name: &str, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .expect("open /dev/shm entry");
    f.write_all_at(bytes, offset).expect("write_at");
}

fn set_len(name: &str, len: u64) {
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .expect("open /dev/shm entry");
    f.set_len(len).expect("set_len");
}

fn file_len(name: &str) -> u64 {
    std::fs::metadata(shm_path(name)).expect("metadata").len()
}

/// Opens `name` as a `Lock` with the short timeout.
fn open_lock(name: &str) -> Result<Lock, OpenError> {
    Lock::builder().name(name).open_timeout(SHORT).open()
}

/// Removes a `/dev/shm` file this test created by hand (not through the crate).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Validation of hostile segment bytes
// ---------------------------------------------------------------------------------------------

#[test]
fn garbage_header_is_corrupted() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "garbage_header_is_corrupted");
    let name = unique_name("garbage");
    let _creator = Lock::builder().name(&name).create().unwrap();
    write_at(&name, 0, &[0xA5; HEADER_LEN as usize]);
    let r = open_lock(&name);
    assert!(matches!(r, Err(OpenError::Corrupted(_))), "{r:?}");
}

#[test]
fn bad_magic_is_corrupted() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "bad_magic_is_corrupted");
    let name = unique_name("magic");
    let _creator = Lock::builder().name(&name).create().unwrap();
    write_at(&name, 0, b"NOTMAGIC");
    let r = open_lock(&name);
    assert!(matches!(r, Err(OpenError::Corrupted(_))), "{r:?}");
}

#[test]
fn pseudo_random_headers_never_panic_or_hang() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "pseudo_random_headers");
    let name = unique_name("fuzz");
    let _creator = Lock::builder().name(&name).create().unwrap();
    let good = std::fs::read(shm_path(&name)).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..64 {
        let mut header = good[..HEADER_LEN as usize].to_vec();
        if round % 8 == 0 {
            // All 64 bytes random.
            header.iter_mut().for_each(|b| *b = next() as u8);
        } else {
            // A few random bytes changed.
            for _ in 0..1 + round % 6 {
                let i = (next() % HEADER_LEN) as usize;
                header[i] = next() as u8;
            }
        }
        write_at(&name, 0, &header);
        let start = Instant::now();
        let r = open_lock(&name);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "open took too long"
        );
        // A damaged header may still validate if only unchecked bytes (creator pid, reserved)
        // changed; otherwise it must be one of the validation errors, never a panic.
        match r {
            Ok(_)
            | Err(
                OpenError::Corrupted(_)
                | OpenError::Truncated { .. }
                | OpenError::WrongType { .. }
                | OpenError::VersionMismatch { .. }
                | OpenError::Uninitialized,
            ) => {}
            Err(e) => panic!("unexpected error for damaged header: {e:?}"),
        }
    }
}

#[test]
fn truncated_below_header_is_truncated() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "truncated_below_header");
    let name = unique_name("trunc10");
    let _creator = Lock::builder().name(&name).create().unwrap();
    set_len(&name, 10);
    let r = open_lock(&name);
    assert!(
        matches!(
            r,
            Err(OpenError::Truncated {
                found: 10,
                expected: HEADER_LEN
            })
        ),
        "{r:?}"
    );
}

#[test]
fn truncated_below_total_len_is_truncated() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "truncated_below_total");
    let name = unique_name("trunc64");
    let _creator = Lock::builder().name(&name).create().unwrap();
    let total = file_len(&name);
    assert!(total > HEADER_LEN, "a lock has a payload");
    set_len(&name, HEADER_LEN);
    let r = open_lock(&name);
    match r {
        Err(OpenError::Truncated { found, expected }) => {
            assert_eq!(found, HEADER_LEN);
            assert_eq!(expected, total);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn grown_file_is_corrupted() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "grown_file_is_corrupted");
    let name = unique_name("grown");
    let _creator = Lock::builder().name(&name).create().unwrap();
    set_len(&name, file_len(&name) + 4096);
    let r = open_lock(&name);
    assert!(matches!(r, Err(OpenError::Corrupted(_))), "{r:?}");
}

#[test]
fn changed_type_tag_is_wrong_type() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "changed_type_tag");
    let name = unique_name("tag");
    let _creator = Lock::builder().name(&name).create().unwrap();
    write_at(&name, KIND_OFFSET, &0xDEAD_BEEF_u32.to_le_bytes());
    let r = open_lock(&name);
    match r {
        Err(e @ OpenError::WrongType { .. }) => assert_eq!(
            e.to_string(),
            format!("shared object /{name} holds an unknown object (tag 0xdeadbeef), not a Lock")
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn changed_version_is_version_mismatch() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "changed_version");
    let name = unique_name("version");
    let _creator = Lock::builder().name(&name).create().unwrap();
    write_at(&name, VERSION_OFFSET, &77_u32.to_le_bytes());
    let r = open_lock(&name);
    assert!(
        matches!(
            r,
            Err(OpenError::VersionMismatch {
                found: 77,
                expected: 4
            })
        ),
        "{r:?}"
    );
}

#[test]
fn empty_file_is_uninitialized_after_timeout() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "empty_file_is_uninitialized");
    let name = unique_name("empty");
    let path = shm_path(&name);
    let _guard = RemoveOnDrop(path.clone());
    std::fs::File::create_new(&path).expect("create empty /dev/shm entry");
    let start = Instant::now();
    let r = open_lock(&name);
    let took = start.elapsed();
    assert!(matches!(r, Err(OpenError::Uninitialized)), "{r:?}");
    assert!(took >= SHORT, "gave up after {took:?}, before the timeout");
    assert!(took <= Duration::from_millis(1050), "took {took:?}");
}

#[test]
fn zero_state_word_is_uninitialized() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "zero_state_word");
    let name = unique_name("state0");
    let _creator = Lock::builder().name(&name).create().unwrap();
    write_at(&name, STATE_OFFSET, &0_u32.to_le_bytes());
    let start = Instant::now();
    let r = open_lock(&name);
    assert!(matches!(r, Err(OpenError::Uninitialized)), "{r:?}");
    assert!(start.elapsed() >= SHORT);
}

#[test]
fn lock_opened_as_event_is_wrong_type() {
    let name = unique_name("lock-as-event");
    let _creator = Lock::builder().name(&name).create().unwrap();
    let r = Event::open(&name);
    assert!(matches!(r, Err(OpenError::WrongType { .. })), "{r:?}");
    // And the other way round, between two lock types.
    let r = RLock::open(&name);
    assert!(matches!(r, Err(OpenError::WrongType { .. })), "{r:?}");
}

#[test]
fn value_u64_opened_as_u32_is_an_element_mismatch() {
    let name = unique_name("value-width");
    let _creator = Value::<u64>::builder()
        .name(&name)
        .value(7)
        .create()
        .unwrap();
    let r = Value::<u32>::open(&name);
    assert!(
        matches!(
            &r,
            Err(OpenError::ElementMismatch { found, expected, found_size: 8, expected_size: 4, .. })
                if found == "Value<u64>" && expected == "Value<u32>"
        ),
        "{r:?}"
    );
    // The right width opens and sees the value.
    assert_eq!(Value::<u64>::open(&name).unwrap().get(), 7);
}

// ---------------------------------------------------------------------------------------------
// Named segments
// ---------------------------------------------------------------------------------------------

#[test]
fn named_segment_has_mode_0600() {
    let name = unique_name("mode");
    let lock = Lock::builder().name(&name).create().unwrap();
    let mode = std::fs::metadata(shm_path(&name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(lock.name(), Some(format!("/{name}").as_str()));
}

#[test]
fn random_named_segment_is_named_and_unlinked() {
    let lock = Lock::builder().named().create().unwrap();
    let name = lock.name().expect("named").to_owned();
    assert!(name.starts_with('/'));
    assert!(common::shm_exists(&name));
    let other = Lock::open(&name).unwrap();
    let _g = lock.lock().unwrap();
    assert!(other.is_locked());
    drop(_g);
    drop(lock);
    assert!(!common::shm_exists(&name));
}

#[test]
fn leading_slash_is_optional() {
    let name = unique_name("slash");
    let _creator = Event::builder().name(format!("/{name}")).create().unwrap();
    assert!(common::shm_exists(&name));
    let opened = Event::open(&name).unwrap();
    opened.set();
    assert!(Event::open(&format!("/{name}")).unwrap().is_set());
}

#[test]
fn create_existing_name_is_already_exists() {
    let name = unique_name("exists");
    let _first = Lock::builder().name(&name).create().unwrap();
    let r = Lock::builder().name(&name).create();
    assert!(matches!(r, Err(OpenError::AlreadyExists { .. })), "{r:?}");
    // Another type under the same name is refused the same way.
    let r = Event::builder().name(&name).create();
    assert!(matches!(r, Err(OpenError::AlreadyExists { .. })), "{r:?}");
}

#[test]
fn open_missing_or_invalid_name() {
    let r = Lock::open(&unique_name("missing"));
    assert!(matches!(r, Err(OpenError::NotFound { .. })), "{r:?}");
    for bad in ["", "/", "a/b", "/a/b", &"x".repeat(300)] {
        let r = Lock::open(bad);
        assert!(
            matches!(r, Err(OpenError::InvalidName { .. })),
            "{bad:?}: {r:?}"
        );
        let r = Lock::builder().name(bad).create();
        assert!(
            matches!(r, Err(OpenError::InvalidName { .. })),
            "{bad:?}: {r:?}"
        );
    }
    // open() without a name cannot work.
    let r = Lock::builder().open();
    assert!(matches!(r, Err(OpenError::NameRequired)), "{r:?}");
}

#[test]
fn drop_by_creator_unlinks() {
    let name = unique_name("drop");
    let lock = Lock::builder().name(&name).create().unwrap();
    let opened = Lock::open(&name).unwrap();
    assert!(common::shm_exists(&name));
    // Dropping an opener leaves the name.
    drop(opened);
    assert!(common::shm_exists(&name));
    drop(lock);
    assert!(!common::shm_exists(&name));
    let r = Lock::open(&name);
    assert!(matches!(r, Err(OpenError::NotFound { .. })), "{r:?}");
}

#[test]
fn explicit_unlink_removes_name() {
    let name = unique_name("unlink");
    let lock = Lock::builder().name(&name).create().unwrap();
    let opened = Lock::open(&name).unwrap();
    assert!(matches!(lock.unlink(), Ok(true)));
    assert!(!common::shm_exists(&name));
    assert!(matches!(lock.unlink(), Ok(false)));
    let r = Lock::open(&name);
    assert!(matches!(r, Err(OpenError::NotFound { .. })), "{r:?}");
    // Existing mappings stay valid and shared.
    let _g = lock.lock().unwrap();
    assert!(matches!(opened.try_lock(), Err(TryLockError::WouldBlock)));
    drop(_g);
    assert!(opened.try_lock().is_ok());
    // A memfd object has no name to unlink.
    assert!(matches!(Lock::new().unwrap().unlink(), Ok(false)));
}

#[test]
fn unlink_by_opener_then_creator_drop() {
    let name = unique_name("unlink-opener");
    let lock = Lock::builder().name(&name).create().unwrap();
    let opened = Lock::open(&name).unwrap();
    assert!(matches!(opened.unlink(), Ok(true)));
    assert!(!common::shm_exists(&name));
    // The creator's drop must not fail or panic when the name is already gone.
    drop(lock);
    drop(opened);
    assert!(!common::shm_exists(&name));
}

#[test]
fn child_drop_does_not_unlink() {
    if let Some(role) = common::role() {
        assert_eq!(role, "opener");
        let name = common::arg("NAME");
        let ev = Event::open(&name).expect("child opens by name");
        ev.set();
        drop(ev);
        assert!(common::shm_exists(&name));
        return;
    }
    let _watchdog = common::watchdog(Duration::from_secs(60), "child_drop_does_not_unlink");
    let name = unique_name("child");
    let ev = Event::builder().name(&name).create().unwrap();
    let child = common::spawn(
        &this_test!(child_drop_does_not_unlink),
        "opener",
        &[("NAME", name.clone())],
    );
    common::join_all(vec![child], Duration::from_secs(30));
    assert!(ev.is_set(), "the child did not run");
    assert!(common::shm_exists(&name));
    let again = Event::open(&name).expect("still there after the child dropped it");
    assert!(again.is_set());
    drop(again);
    drop(ev);
    assert!(!common::shm_exists(&name));
}

#[test]
fn open_or_create_creates_then_opens() {
    let name = unique_name("ooc");
    let first = Event::builder().name(&name).open_or_create().unwrap();
    assert!(common::shm_exists(&name));
    assert!(!first.is_set());
    let second = Event::builder().name(&name).open_or_create().unwrap();
    second.set();
    assert!(first.is_set());
    first.clear();
    assert!(!second.is_set());
    // The opener does not own the name; the creator does.
    drop(second);
    assert!(common::shm_exists(&name));
    drop(first);
    assert!(!common::shm_exists(&name));
}

#[test]
fn open_or_create_of_other_type_is_wrong_type() {
    let name = unique_name("ooc-type");
    let _lock = Lock::builder().name(&name).create().unwrap();
    let r = Event::builder().name(&name).open_or_create();
    assert!(matches!(r, Err(OpenError::WrongType { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Handles
// ---------------------------------------------------------------------------------------------

#[test]
fn handle_text_round_trips() {
    let memfd = Lock::new().unwrap();
    let named = Event::builder().name(unique_name("h")).create().unwrap();
    let anon = Semaphore::builder().value(2).anonymous().create().unwrap();
    for h in [memfd.handle(), named.handle(), anon.handle()] {
        let s = h.to_string();
        let back: Handle = s.parse().expect("parses");
        assert_eq!(back, h, "{s}");
    }
    assert_eq!(named.handle().name(), named.name());
    assert_eq!(memfd.handle().name(), None);
    for bad in [
        "",
        "mp1",
        "mp1:4c4b0001",
        "mp1:4c4b0001:fd:",
        "mp1:xyz:fd:3",
        "mp2:1:fd:3",
    ] {
        assert!(bad.parse::<Handle>().is_err(), "{bad:?}");
    }
}

#[test]
fn memfd_handle_reopens_in_process() {
    let lock = Lock::new().unwrap();
    let h: Handle = lock.handle().to_string().parse().unwrap();
    let again = Lock::from_handle(&h).unwrap();
    let g = lock.lock().unwrap();
    assert!(matches!(again.try_lock(), Err(TryLockError::WouldBlock)));
    drop(g);
    let g = again.try_lock().expect("free again");
    assert!(lock.is_locked());
    drop(g);
    // The re-opened object has its own descriptor: it outlives the original.
    drop(lock);
    assert!(again.try_lock().is_ok());
}

#[test]
fn named_handle_reopens() {
    let name = unique_name("named-handle");
    let ev = Event::builder().name(&name).create().unwrap();
    let h: Handle = ev.handle().to_string().parse().unwrap();
    let again = Event::from_handle(&h).unwrap();
    again.set();
    assert!(ev.is_set());
}

#[test]
fn handle_of_other_type_is_wrong_type() {
    let lock = Lock::new().unwrap();
    let r = Event::from_handle(&lock.handle());
    assert!(matches!(r, Err(OpenError::WrongType { .. })), "{r:?}");
    let named = Lock::builder()
        .name(unique_name("h-type"))
        .create()
        .unwrap();
    let r = Semaphore::from_handle(&named.handle());
    assert!(matches!(r, Err(OpenError::WrongType { .. })), "{r:?}");
}

#[test]
fn anonymous_handle_is_not_inheritable() {
    let anon = Lock::builder().anonymous().create().unwrap();
    let r = Lock::from_handle(&anon.handle());
    assert!(matches!(r, Err(OpenError::NotInheritable(_))), "{r:?}");
}

#[test]
fn handle_of_closed_fd_is_not_found() {
    let lock = Lock::new().unwrap();
    let kind = lock.handle().to_string();
    let kind = kind.split(':').nth(1).unwrap();
    // Far above any descriptor this process has open.
    let h: Handle = format!("mp1:{kind}:fd:1000000").parse().unwrap();
    let r = Lock::from_handle(&h);
    assert!(matches!(r, Err(OpenError::NotFound { .. })), "{r:?}");
    let h: Handle = format!("mp1:{kind}:fd:-1").parse().unwrap();
    let r = Lock::from_handle(&h);
    assert!(matches!(r, Err(OpenError::NotFound { .. })), "{r:?}");
}

#[test]
fn inheritable_memfd_handle_crosses_exec() {
    if let Some(role) = common::role() {
        assert_eq!(role, "setter");
        let h: Handle = common::arg("HANDLE").parse().expect("handle parses");
        let ev = Event::from_handle(&h).expect("exec'd child opens the inherited memfd");
        ev.set();
        return;
    }
    let _watchdog = common::watchdog(
        Duration::from_secs(60),
        "inheritable_memfd_handle_crosses_exec",
    );
    let ev = Event::new().unwrap();
    ev.set_inheritable(true).unwrap();
    let child = common::spawn(
        &this_test!(inheritable_memfd_handle_crosses_exec),
        "setter",
        &[("HANDLE", ev.handle().to_string())],
    );
    common::join_all(vec![child], Duration::from_secs(30));
    assert!(ev.is_set());
    ev.set_inheritable(false).unwrap();
}

#[test]
fn memfd_handle_without_inheritable_fails_after_exec() {
    if let Some(role) = common::role() {
        assert_eq!(role, "opener");
        let h: Handle = common::arg("HANDLE").parse().expect("handle parses");
        // The descriptor was close-on-exec: whatever that number is here, it is not our event.
        let r = Event::from_handle(&h);
        assert!(r.is_err(), "opened a close-on-exec memfd after exec");
        Event::open(&common::arg("DONE")).unwrap().set();
        return;
    }
    let _watchdog = common::watchdog(Duration::from_secs(60), "memfd_handle_without_inheritable");
    let ev = Event::new().unwrap();
    let done = Event::builder().name(unique_name("done")).create().unwrap();
    let child = common::spawn(
        &this_test!(memfd_handle_without_inheritable_fails_after_exec),
        "opener",
        &[
            ("HANDLE", ev.handle().to_string()),
            ("DONE", done.name().unwrap().to_owned()),
        ],
    );
    common::join_all(vec![child], Duration::from_secs(30));
    assert!(done.is_set(), "the child did not run");
    assert!(!ev.is_set());
}

// ---------------------------------------------------------------------------------------------
// Relocation: one segment mapped at several addresses in one process
// ---------------------------------------------------------------------------------------------

#[test]
fn same_segment_mapped_twice() {
    let _watchdog = common::watchdog(Duration::from_secs(60), "same_segment_mapped_twice");
    let name = unique_name("reloc");
    let creator = Semaphore::builder().name(&name).value(3).create().unwrap();
    let a = Semaphore::open(&name).unwrap();
    let b = Semaphore::open(&name).unwrap();
    a.acquire();
    assert_eq!(b.get_value(), 2);
    assert_eq!(creator.get_value(), 2);
    assert!(b.try_acquire());
    assert!(creator.try_acquire());
    assert_eq!(a.get_value(), 0);
    assert!(!a.try_acquire());
    b.release();
    assert_eq!(a.get_value(), 1);
    // A waiter on one mapping is woken through another.
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            a.acquire();
            a.acquire();
        });
        b.release();
        t.join().unwrap();
    });
    assert_eq!(creator.get_value(), 0);

    let lname = unique_name("reloc-lock");
    let _l = Lock::builder().name(&lname).create().unwrap();
    let l1 = Lock::open(&lname).unwrap();
    let l2 = Lock::open(&lname).unwrap();
    let g = l1.lock().unwrap();
    assert!(matches!(l2.try_lock(), Err(TryLockError::WouldBlock)));
    drop(g);
    assert!(l2.try_lock().is_ok());

    let vname = unique_name("reloc-value");
    let _v = Value::<u64>::builder().name(&vname).create().unwrap();
    let v1 = Value::<u64>::open(&vname).unwrap();
    let v2 = Value::<u64>::open(&vname).unwrap();
    v1.set(0x0123_4567_89ab_cdef);
    assert_eq!(v2.get(), 0x0123_4567_89ab_cdef);
    *v2.lock().unwrap() += 1;
    assert_eq!(v1.get(), 0x0123_4567_89ab_cdf0);
}

/// A creator must not unlink a name that, meanwhile, was unlinked and taken by a new object.
#[test]
fn creator_drop_leaves_a_reused_name_alone() {
    let name = unique_name("reuse");
    let first = Event::builder().name(&name).create().unwrap();
    assert!(first.unlink().unwrap());
    let second = Event::builder().name(&name).create().unwrap();
    drop(first);
    assert!(
        common::shm_exists(&name),
        "the old creator removed the new object's name"
    );
    let again = Event::open(&name).unwrap();
    second.set();
    assert!(again.is_set());
    drop(second);
    assert!(!common::shm_exists(&name));
}

/// Review of issue 8: a handle's descriptor was mapped whatever it was, so a peer could hand
/// over a file it can shrink (or a reused number could name a plain file), and our next access
/// to the mapping would fault with SIGBUS. Only sealed memory files are opened by descriptor.
#[test]
fn a_handle_naming_an_unsealed_file_is_refused() {
    use std::os::fd::AsRawFd;
    let lock = Lock::new().unwrap();
    let file = tempfile_with_bytes(4096);
    let text = lock.handle().to_string();
    let (prefix, _) = text.rsplit_once(':').unwrap();
    let forged: Handle = format!("{prefix}:{}", file.as_raw_fd()).parse().unwrap();
    assert!(matches!(
        Lock::from_handle(&forged),
        Err(OpenError::Corrupted(_))
    ));
    // Our own handle still opens.
    assert!(Lock::from_handle(&lock.handle()).is_ok());
}

/// A plain file of `len` zero bytes, deleted from its directory at once.
fn tempfile_with_bytes(len: u64) -> std::fs::File {
    let path = std::env::temp_dir().join(unique_name("plain"));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    f.set_len(len).unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

/// Issue 12: an open timeout too long to add to `Instant` (`Duration::MAX`) waits for good
/// instead of panicking on the overflow.
#[test]
fn issue_12_an_open_timeout_of_duration_max_opens() {
    let name = unique_name("forever");
    let lock = Lock::builder().name(&name).create().unwrap();
    let opened = Lock::builder()
        .name(&name)
        .open_timeout(Duration::MAX)
        .open()
        .unwrap();
    assert_eq!(opened.name(), lock.name());
    drop(opened.lock().unwrap());
    let r = Lock::builder()
        .name(unique_name("absent"))
        .open_timeout(Duration::MAX)
        .open();
    assert!(matches!(r, Err(OpenError::NotFound { .. })), "{r:?}");
}
