//! The 64-byte header at offset 0 of every segment.

use crate::primitive::{AtomicU32, AtomicU64, Ordering};

use crate::error::OpenError;

/// `b"MPROCSEG"` read as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MPROCSEG");
/// Init state once the creator has filled the segment (`"REDY"`).
pub(crate) const READY: u32 = u32::from_le_bytes(*b"REDY");
/// Bumped whenever any in-segment layout changes.
pub(crate) const LAYOUT_VERSION: u32 = 4;
/// Size of [`Header`]; the payload starts here.
pub(crate) const HEADER_LEN: usize = 64;

/// Type tags stored in the header, one per kind of object.
pub(crate) mod kind {
    pub(crate) const LOCK: u32 = 0x4c4b_0001;
    pub(crate) const RLOCK: u32 = 0x4c4b_0002;
    pub(crate) const SEMAPHORE: u32 = 0x5345_0001;
    pub(crate) const BOUNDED_SEMAPHORE: u32 = 0x5345_0002;
    pub(crate) const EVENT: u32 = 0x4556_0001;
    pub(crate) const CONDITION: u32 = 0x4356_0001;
    pub(crate) const BARRIER: u32 = 0x4252_0001;
    pub(crate) const VALUE: u32 = 0x5641_0001;
    pub(crate) const RAW_VALUE: u32 = 0x5641_0002;
    pub(crate) const ARRAY: u32 = 0x4152_0001;
    pub(crate) const RAW_ARRAY: u32 = 0x4152_0002;
    pub(crate) const QUEUE: u32 = 0x5155_0001;
    pub(crate) const JOINABLE_QUEUE: u32 = 0x5155_0002;

    /// The type a tag stands for, as errors print it; `None` for an unknown tag.
    pub(crate) fn name(kind: u32) -> Option<&'static str> {
        Some(match kind {
            LOCK => "Lock",
            RLOCK => "RLock",
            SEMAPHORE => "Semaphore",
            BOUNDED_SEMAPHORE => "BoundedSemaphore",
            EVENT => "Event",
            CONDITION => "Condition",
            BARRIER => "Barrier",
            VALUE => "Value",
            RAW_VALUE => "RawValue",
            ARRAY => "Array",
            RAW_ARRAY => "RawArray",
            QUEUE => "Queue",
            JOINABLE_QUEUE => "JoinableQueue",
            _ => return None,
        })
    }

    /// [`name`], or the tag in hex for an unknown one.
    pub(crate) fn describe(kind: u32) -> String {
        name(kind).map_or_else(
            || format!("unknown object (tag {kind:#010x})"),
            str::to_owned,
        )
    }
}

/// Segment header. All fields are atomics: any attached process can write them, so we only
/// ever read them through atomic loads and validate what we read.
///
/// `state` table:
///
/// | value   | meaning                                                        |
/// |---------|----------------------------------------------------------------|
/// | 0       | being created: the other fields may still be zero              |
/// | `READY` | created; every other field and the payload are initialised     |
/// | other   | corrupted                                                      |
#[repr(C)]
pub(crate) struct Header {
    magic: AtomicU64,
    state: AtomicU32,
    version: AtomicU32,
    kind: AtomicU32,
    payload_offset: AtomicU32,
    total_len: AtomicU64,
    payload_len: AtomicU64,
    creator_pid: AtomicU32,
    _reserved: [AtomicU32; 5],
}

const _: () = assert!(size_of::<Header>() == HEADER_LEN);
const _: () = assert!(std::mem::offset_of!(Header, state) == 8);
const _: () = assert!(std::mem::offset_of!(Header, version) == 12);
const _: () = assert!(std::mem::offset_of!(Header, kind) == 16);
const _: () = assert!(std::mem::offset_of!(Header, total_len) == 24);

impl Header {
    /// Fills every field but `state` (creator only, before [`publish`](Self::publish)).
    pub(crate) fn write_fields(&self, kind: u32, total_len: u64, payload_len: u64) {
        self.magic.store(MAGIC, Ordering::Relaxed);
        self.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        self.kind.store(kind, Ordering::Relaxed);
        self.payload_offset
            .store(HEADER_LEN as u32, Ordering::Relaxed);
        self.total_len.store(total_len, Ordering::Relaxed);
        self.payload_len.store(payload_len, Ordering::Relaxed);
        self.creator_pid
            .store(crate::sys::current_pid(), Ordering::Relaxed);
    }

    /// Marks the segment initialised. Everything written before becomes visible to an opener
    /// whose [`validate`](Self::validate) sees `READY`.
    pub(crate) fn publish(&self) {
        // SYNC(header-ready): pairs with the Acquire load in `validate`.
        self.state.store(READY, Ordering::Release);
    }

    /// Checks the header of a mapping of `file_len` bytes against the expected type tag.
    ///
    /// `Ok(None)`: still being created, try again later. `Ok(Some(n))`: valid, with `n` payload
    /// bytes that fit inside the file.
    pub(crate) fn validate(&self, kind: u32, file_len: u64) -> Result<Option<usize>, OpenError> {
        // SYNC(header-ready): pairs with the Release store in `publish`.
        let state = self.state.load(Ordering::Acquire);
        let magic = self.magic.load(Ordering::Relaxed);
        if state != READY {
            if state == 0 && (magic == 0 || magic == MAGIC) {
                return Ok(None);
            }
            return Err(OpenError::Corrupted("invalid init state"));
        }
        if magic != MAGIC {
            return Err(OpenError::Corrupted("bad magic"));
        }
        let version = self.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(OpenError::VersionMismatch {
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let found = self.kind.load(Ordering::Relaxed);
        if found != kind {
            return Err(OpenError::WrongType {
                name: None,
                found: self::kind::describe(found),
                expected: self::kind::describe(kind),
            });
        }
        let total = self.total_len.load(Ordering::Relaxed);
        if total > file_len {
            return Err(OpenError::Truncated {
                found: file_len,
                expected: total,
            });
        }
        if total != file_len {
            return Err(OpenError::Corrupted(
                "header size disagrees with the file size",
            ));
        }
        let offset = self.payload_offset.load(Ordering::Relaxed);
        let payload = self.payload_len.load(Ordering::Relaxed);
        if offset as usize != HEADER_LEN || payload.checked_add(HEADER_LEN as u64) != Some(total) {
            return Err(OpenError::Corrupted("payload bounds"));
        }
        usize::try_from(payload)
            .map(Some)
            .map_err(|_| OpenError::Corrupted("payload size"))
    }
}
