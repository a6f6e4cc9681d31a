//! A bounds-checked little-endian reader of the format's integers, varints and strings.

use super::*;

/// Reads little-endian values from a slice. Every read returns `None` instead of going out of
/// bounds, and leaves the position unchanged when it fails.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
    /// A variable-length integer was too long for its type (rather than cut off).
    pub(super) bad_varint: bool,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            bad_varint: false,
        }
    }

    #[inline]
    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    #[inline]
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    #[inline]
    pub(super) fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    #[inline]
    pub(super) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    #[inline]
    pub(super) fn u8(&mut self) -> Option<u8> {
        let byte = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(byte)
    }

    #[inline]
    pub(super) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    #[inline]
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    #[inline]
    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    #[inline]
    pub(super) fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_le_bytes)
    }

    #[inline]
    pub(super) fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    /// LEB128: 7 bits a byte, least significant first, high bit set on all but the last.
    #[inline]
    pub(super) fn varu64(&mut self) -> Option<u64> {
        let first = *self.buf.get(self.pos)?;
        if first < 0x80 {
            self.pos += 1;
            return Some(u64::from(first));
        }
        self.varu64_long()
    }

    pub(super) fn varu64_long(&mut self) -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0u32;
        let mut pos = self.pos;
        loop {
            let byte = *self.buf.get(pos)?;
            pos += 1;
            if shift == 63 && byte > 1 {
                self.bad_varint = true;
                return None;
            }
            value |= u64::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                self.pos = pos;
                return Some(value);
            }
            shift += 7;
        }
    }

    #[inline]
    pub(super) fn varu32(&mut self) -> Option<u32> {
        let start = self.pos;
        let value = self.varu64()?;
        match u32::try_from(value) {
            Ok(value) => Some(value),
            Err(_) => {
                self.pos = start;
                self.bad_varint = true;
                None
            }
        }
    }

    /// A V6 string: `varuint32` length, then that many UTF-8 bytes.
    pub(super) fn v6_string(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let length = self.varu32()?;
        let bytes = self.take(length as usize);
        if bytes.is_none() {
            self.pos = start;
        }
        bytes
    }

    /// A NUL-terminated UTF-16LE string, keeping at most [`MAX_NAME_CHARS`] code units.
    pub(super) fn utf16z(&mut self) -> Option<String> {
        let rest = self.buf.get(self.pos..)?;
        let mut units = Vec::new();
        for (index, pair) in rest.chunks_exact(2).enumerate() {
            let &[low, high] = pair else { return None };
            let unit = u16::from_le_bytes([low, high]);
            if unit == 0 {
                self.pos = self.pos.checked_add((index + 1) * 2)?;
                return Some(String::from_utf16_lossy(&units));
            }
            if units.len() < MAX_NAME_CHARS {
                units.push(unit);
            }
        }
        None
    }

    pub(super) fn skip_utf16z(&mut self) -> Option<()> {
        let rest = self.buf.get(self.pos..)?;
        let index = rest.chunks_exact(2).position(|pair| pair == [0, 0])?;
        self.pos = self.pos.checked_add((index + 1) * 2)?;
        Some(())
    }
}
