//! Bounds-checked reads from untrusted bytes, in the file's byte order.

/// A byte slice with checked reads in one byte order (true: big-endian, as on s390x); every
/// accessor returns None when out of bounds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bytes<'a>(pub &'a [u8], pub bool);

impl Bytes<'_> {
    pub fn u8(self, at: usize) -> Option<u8> {
        self.0.get(at).copied()
    }

    pub fn u32(self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.0.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.1 {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    pub fn i32(self, at: usize) -> Option<i32> {
        self.u32(at).map(|v| v as i32)
    }

    pub fn u64(self, at: usize) -> Option<u64> {
        let b: [u8; 8] = self.0.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(if self.1 {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }

    /// A pointer-sized word.
    pub fn word(self, at: usize, ptr_size: usize) -> Option<u64> {
        match ptr_size {
            4 => self.u32(at).map(u64::from),
            8 => self.u64(at),
            _ => None,
        }
    }
}

/// A NUL-terminated UTF-8 string starting at `start`, which must end before `limit` and be at
/// most `max` bytes long.
pub(super) fn cstr(data: &[u8], start: usize, limit: usize, max: usize) -> Option<&str> {
    let limit = limit.min(data.len()).min(start.checked_add(max)?);
    let bytes = data.get(start..limit)?;
    let len = bytes.iter().position(|&c| c == 0)?;
    std::str::from_utf8(&bytes[..len]).ok()
}

/// An unsigned LEB128 varint at `at`, not reading at or past `end`. Returns (value, length).
pub(super) fn uvarint(data: &[u8], at: usize, end: usize) -> Option<(u64, usize)> {
    varint_prefix(data.get(at..end.min(data.len()))?)
}

/// An unsigned LEB128 varint at the start of `bytes` (at most 10 bytes long). Returns (value,
/// length).
#[inline]
pub(super) fn varint_prefix(bytes: &[u8]) -> Option<(u64, usize)> {
    // Most deltas fit one byte.
    match bytes.first() {
        Some(&b) if b < 0x80 => return Some((u64::from(b), 1)),
        None => return None,
        _ => {}
    }
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(10).enumerate() {
        // i ≤ 9, so the shift stays below 64; bits shifted out of a 10th byte are dropped.
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_decodes_and_bounds() {
        assert_eq!(uvarint(&[0x05], 0, 1), Some((5, 1)));
        assert_eq!(uvarint(&[0x80, 0x01], 0, 2), Some((128, 2)));
        assert_eq!(uvarint(&[0x80, 0x01], 0, 1), None, "end cuts it");
        assert_eq!(uvarint(&[0xff; 12], 0, 12), None, "too long");
        assert_eq!(uvarint(&[], 0, 5), None);
    }

    #[test]
    fn cstr_needs_a_terminator_within_limits() {
        let d = b"abc\0def";
        assert_eq!(cstr(d, 0, d.len(), 100), Some("abc"));
        assert_eq!(cstr(d, 4, d.len(), 100), None, "no NUL before the end");
        assert_eq!(cstr(d, 0, 2, 100), None, "limit before the NUL");
        assert_eq!(cstr(d, 0, d.len(), 2), None, "longer than max");
        assert_eq!(cstr(d, 100, 200, 10), None);
    }

    #[test]
    fn reads_are_checked() {
        let b = Bytes(&[1, 0, 0, 0, 2, 0, 0, 0], false);
        assert_eq!(b.u32(0), Some(1));
        assert_eq!(b.u64(0), Some(0x2_0000_0001));
        assert_eq!(b.u32(5), None);
        assert_eq!(b.u32(usize::MAX), None);
        assert_eq!(b.word(0, 3), None);
        let be = Bytes(&[0, 0, 0, 1, 0, 0, 0, 2], true);
        assert_eq!(be.u32(0), Some(1));
        assert_eq!(be.word(0, 4), Some(1));
        assert_eq!(be.u64(0), Some(0x1_0000_0002));
    }
}
