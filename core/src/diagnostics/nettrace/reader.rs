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
    ///
    /// One- and two-byte values, most of a trace's (a timestamp delta of a few microseconds
    /// takes two), are decoded inline; longer ones by [`Reader::varu64_long`].
    #[inline]
    pub(super) fn varu64(&mut self) -> Option<u64> {
        let first = *self.buf.get(self.pos)?;
        if first < 0x80 {
            self.pos += 1;
            return Some(u64::from(first));
        }
        if let Some(&second) = self.buf.get(self.pos + 1)
            && second < 0x80
        {
            self.pos += 2;
            return Some(u64::from(first & 0x7F) | (u64::from(second) << 7));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// LEB128 encoding of `value`.
    fn leb128(mut value: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        loop {
            let low = (value & 0x7F) as u8;
            value >>= 7;
            if value == 0 {
                bytes.push(low);
                return bytes;
            }
            bytes.push(low | 0x80);
        }
    }

    #[test]
    fn varints_of_every_length_decode_alike_inline_and_in_the_loop() {
        for value in [
            0,
            1,
            0x7F,
            0x80,
            1_000,
            0x3FFF,
            0x4000,
            0x1F_FFFF,
            1 << 35,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut bytes = leb128(value);
            bytes.push(0xAA); // what follows is left alone
            let mut inline = Reader::new(&bytes);
            let mut looped = Reader::new(&bytes);
            assert_eq!(inline.varu64(), Some(value), "{value:#x}");
            assert_eq!(looped.varu64_long(), Some(value), "{value:#x}");
            assert_eq!(inline.pos, bytes.len() - 1, "{value:#x}");
            assert_eq!(looped.pos, inline.pos);
        }
    }

    #[test]
    fn a_varint_cut_short_reads_nothing_and_keeps_the_position() {
        for bytes in [&[0x80u8][..], &[0xE8, 0x87][..], &[0xFF, 0xFF, 0xFF][..]] {
            let mut reader = Reader::new(bytes);
            assert_eq!(reader.varu64(), None, "{bytes:?}");
            assert_eq!(reader.pos, 0);
            assert!(!reader.bad_varint);
        }
    }

    #[test]
    fn varu32_takes_a_two_byte_value_and_refuses_one_too_large_for_it() {
        let mut reader = Reader::new(&[0xE8, 0x07]);
        assert_eq!(reader.varu32(), Some(1_000));
        let mut too_large = leb128(u64::from(u32::MAX) + 1);
        too_large.push(0);
        let mut reader = Reader::new(&too_large);
        assert_eq!(reader.varu32(), None);
        assert!(reader.bad_varint);
        assert_eq!(reader.pos, 0);
    }
}
