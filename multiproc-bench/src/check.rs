//! How every message is made and checked, so that a transport that drops, duplicates,
//! reorders, truncates or corrupts a message fails the run instead of looking fast.
//!
//! Layout of a message of `len` bytes:
//! - 8 bytes: the sequence number alone (`u64`, little-endian); the producer's id, if several
//!   send at once, is in the top byte.
//! - 16 bytes or more: sequence number, then a check word, then the body. The body is a fixed
//!   pattern, except that the first word of every 64-byte line of the body (`Check::Full`) or
//!   of every 4 KiB page (`Check::Pages`) carries a stamp derived from the sequence number and
//!   the line's position, so a stale line (a transport that left part of an old message in
//!   place) or a misplaced one shows. The check word is `mix(seq) ^ checksum`, where the
//!   checksum is the wrapping sum of the body's 8-byte words (`Full`) or of its stamps only
//!   (`Pages`, for measuring copies near memory bandwidth without a second pass over the data).

/// Sequence numbers stay below this; the producer id sits above it.
pub const SEQ_BITS: u32 = 56;
/// The largest sequence number.
pub const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// Stamps repeat every this many body bytes with `Check::Full`...
const LINE: usize = 64;
/// ...and with `Check::Pages`.
const PAGE: usize = 4096;

/// How much of the body the receiver checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// A checksum over every byte.
    Full,
    /// The header, the length, and every page's stamp.
    Pages,
}

impl Check {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Check::Full => "full",
            Check::Pages => "pages",
        }
    }
}

fn mix(x: u64) -> u64 {
    // splitmix64's finaliser.
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stamp of line `k` of message `head`: distinct for every message and every line, and
/// cheap enough to write on every line of a 16 MiB message.
fn stamp(head: u64, k: usize) -> u64 {
    head.wrapping_add((k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The wrapping sum of `bytes` as little-endian 8-byte words (a short tail zero-padded).
pub fn word_sum(bytes: &[u8]) -> u64 {
    let mut lanes = [0u64; 4];
    let mut chunks = bytes.chunks_exact(32);
    for c in &mut chunks {
        for (k, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
            *lane = lane.wrapping_add(w);
        }
    }
    let mut sum = lanes.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    let mut words = chunks.remainder().chunks(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        sum = sum.wrapping_add(u64::from_le_bytes(b));
    }
    sum
}

impl Check {
    fn stride(self) -> usize {
        match self {
            Check::Full => LINE,
            Check::Pages => PAGE,
        }
    }
}

/// Stamp positions of a body of `body_len` bytes: the start of each line (or page) with room
/// for a word.
fn stamp_offsets(body_len: usize, check: Check) -> impl Iterator<Item = usize> {
    (0..body_len)
        .step_by(check.stride())
        .filter(move |&o| o + 8 <= body_len)
}

/// Makes the messages of one producer: a buffer with the fixed body, stamped per message.
pub struct Maker {
    /// The checksum of the body without its stamps.
    base_sum: u64,
    check: Check,
}

impl Maker {
    /// Prepares `buf` (the message buffer, `buf.len()` being the message length, at least 8)
    /// with the fixed body pattern.
    pub fn new(buf: &mut [u8], check: Check) -> Self {
        let mut base_sum = 0;
        if buf.len() >= 16 {
            let body = &mut buf[16..];
            for (i, b) in body.iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            for o in stamp_offsets(body.len(), check) {
                body[o..o + 8].fill(0);
            }
            base_sum = word_sum(body);
        }
        Self { base_sum, check }
    }

    /// Writes message `seq` of producer `id` into `buf` (prepared by [`Maker::new`]).
    pub fn stamp(&self, buf: &mut [u8], id: u8, seq: u64) {
        let head = (u64::from(id) << SEQ_BITS) | (seq & SEQ_MASK);
        buf[..8].copy_from_slice(&head.to_le_bytes());
        if buf.len() < 16 {
            return;
        }
        let body = &mut buf[16..];
        let mut stamps = 0u64;
        for (k, o) in stamp_offsets(body.len(), self.check).enumerate() {
            let s = stamp(head, k);
            body[o..o + 8].copy_from_slice(&s.to_le_bytes());
            stamps = stamps.wrapping_add(s);
        }
        let sum = match self.check {
            Check::Full => self.base_sum.wrapping_add(stamps),
            Check::Pages => stamps,
        };
        buf[8..16].copy_from_slice(&(mix(head) ^ sum).to_le_bytes());
    }
}

/// Checks messages as they arrive: per-producer sequence, length and checksum.
pub struct Verifier {
    len: usize,
    check: Check,
    next: Vec<u64>,
    /// Messages that passed.
    pub verified: u64,
}

impl Verifier {
    /// Expects messages of `len` bytes from `producers` producers, each numbering from 0.
    pub fn new(len: usize, producers: usize, check: Check) -> Self {
        Self {
            len,
            check,
            next: vec![0; producers],
            verified: 0,
        }
    }

    /// Checks one message; its producer must have sent every earlier one, in order.
    pub fn take(&mut self, msg: &[u8]) -> Result<(), String> {
        let (id, seq) = self.inspect(msg)?;
        let next = &mut self.next[id];
        if seq != *next {
            return Err(format!(
                "producer {id}: message {seq} arrived where {next} was expected (lost, duplicated or reordered)",
                next = *next
            ));
        }
        *next += 1;
        self.verified += 1;
        Ok(())
    }

    /// Checks one message's length, header and checksum; returns (producer, sequence) without
    /// judging the order.
    pub fn inspect(&self, msg: &[u8]) -> Result<(usize, u64), String> {
        if msg.len() != self.len {
            return Err(format!(
                "a message of {} bytes arrived where {} were sent",
                msg.len(),
                self.len
            ));
        }
        let head = u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
        let id = (head >> SEQ_BITS) as usize;
        let seq = head & SEQ_MASK;
        if id >= self.next.len() {
            return Err(format!(
                "message from unknown producer {id} (garbled header)"
            ));
        }
        if msg.len() >= 16 {
            let word = u64::from_le_bytes(msg[8..16].try_into().expect("8 bytes"));
            let body = &msg[16..];
            let mut stamps = 0u64;
            for (k, o) in stamp_offsets(body.len(), self.check).enumerate() {
                let want = stamp(head, k);
                let got = u64::from_le_bytes(body[o..o + 8].try_into().expect("8 bytes"));
                if got != want {
                    return Err(format!(
                        "producer {id}, message {seq}: bytes {o}.. of the body are stale, misplaced or corrupt"
                    ));
                }
                stamps = stamps.wrapping_add(want);
            }
            let sum = match self.check {
                Check::Full => word_sum(body),
                Check::Pages => stamps,
            };
            if word != mix(head) ^ sum {
                return Err(format!(
                    "producer {id}, message {seq}: checksum mismatch (payload corrupted)"
                ));
            }
        }
        Ok((id, seq))
    }

    /// Whether every producer sent exactly `counts(id)` messages.
    pub fn finish(&self, count: impl Fn(usize) -> u64) -> Result<(), String> {
        for (id, &got) in self.next.iter().enumerate() {
            if got != count(id) {
                return Err(format!(
                    "producer {id}: {got} messages arrived, {} were sent",
                    count(id)
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize, seq: u64) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        let m = Maker::new(&mut buf, Check::Full);
        m.stamp(&mut buf, 0, seq);
        buf
    }

    #[test]
    fn good_messages_pass_in_order() {
        for len in [8, 16, 64, 4096, 4097, 70_000] {
            let mut v = Verifier::new(len, 1, Check::Full);
            for seq in 0..3 {
                v.take(&message(len, seq)).unwrap();
            }
            v.finish(|_| 3).unwrap();
        }
    }

    #[test]
    fn corruption_loss_duplicates_and_truncation_fail() {
        let len = 10_000;
        let mut v = Verifier::new(len, 1, Check::Full);
        let mut bad = message(len, 0);
        bad[5000] ^= 1;
        assert!(v.take(&bad).unwrap_err().contains("checksum"));
        let mut v = Verifier::new(len, 1, Check::Full);
        v.take(&message(len, 0)).unwrap();
        assert!(v.take(&message(len, 0)).is_err(), "duplicate");
        assert!(v.take(&message(len, 2)).is_err(), "loss");
        assert!(v.take(&message(len, 1)[..len - 1]).is_err(), "truncation");
        let mut stale = message(len, 1);
        stale[16 + 4096..16 + 4104].copy_from_slice(&message(len, 0)[16 + 4096..16 + 4104]);
        assert!(v.take(&stale).unwrap_err().contains("stale"));
        // A copy that left the second half of the previous message in place.
        let mut v = Verifier::new(len, 1, Check::Full);
        v.take(&message(len, 0)).unwrap();
        let mut half = message(len, 1);
        half[len / 2..].copy_from_slice(&message(len, 0)[len / 2..]);
        assert!(v.take(&half).unwrap_err().contains("stale"));
        // Two lines swapped.
        let mut v = Verifier::new(len, 1, Check::Full);
        let mut swapped = message(len, 0);
        let (a, b) = swapped[16..16 + 128].split_at_mut(64);
        a.swap_with_slice(b);
        assert!(v.take(&swapped).is_err());
        let mut v = Verifier::new(8, 1, Check::Full);
        v.take(&message(8, 0)).unwrap();
        assert!(v.take(&message(8, 0)).is_err());
        assert!(v.finish(|_| 2).is_err());
    }

    #[test]
    fn pages_mode_checks_stamps() {
        let len = 9000;
        let mut buf = vec![0u8; len];
        let m = Maker::new(&mut buf, Check::Pages);
        m.stamp(&mut buf, 3, 7);
        let v = Verifier::new(len, 4, Check::Pages);
        assert_eq!(v.inspect(&buf).unwrap(), (3, 7));
        buf[16] ^= 1;
        assert!(v.inspect(&buf).is_err());
    }
}
