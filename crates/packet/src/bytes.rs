//! Panic-free little-endian access to byte buffers, and a bounded cursor.
//!
//! Fixed-layout fields are read at the constant offsets of each format after
//! the caller checked that the buffer holds the whole fixed part; the
//! `*_at` helpers still never index out of bounds (a read outside the buffer
//! yields zeros), so the code is free of panics by construction. Variable
//! parts go through [`Reader`], which refuses to read past its end and names
//! the file offset where the data ran out.

use crate::Error;

/// Copies `N` bytes starting at `off`, or returns zeros if they are not all inside `buf`.
pub(crate) fn array_at<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = off.checked_add(N).and_then(|end| buf.get(off..end)) {
        out.copy_from_slice(src);
    }
    out
}

/// Reads one byte at `off`.
pub(crate) fn u8_at(buf: &[u8], off: usize) -> u8 {
    buf.get(off).copied().unwrap_or(0)
}

/// Reads a little-endian `u16` at `off`.
pub(crate) fn u16_at(buf: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(array_at(buf, off))
}

/// Reads a little-endian `u32` at `off`.
pub(crate) fn u32_at(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(array_at(buf, off))
}

/// Reads a little-endian `u64` at `off`.
pub(crate) fn u64_at(buf: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(array_at(buf, off))
}

/// Copies `src` into `buf` at `off`, clipped to the end of `buf`.
pub(crate) fn put(buf: &mut [u8], off: usize, src: &[u8]) {
    if let Some(dst) = buf.get_mut(off..) {
        let n = dst.len().min(src.len());
        if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
    }
}

/// Writes a little-endian `u16` at `off`.
pub(crate) fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    put(buf, off, &v.to_le_bytes());
}

/// Writes a little-endian `u32` at `off`.
pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    put(buf, off, &v.to_le_bytes());
}

/// Writes a little-endian `u64` at `off`.
pub(crate) fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    put(buf, off, &v.to_le_bytes());
}

/// Offset of the first non-zero byte of `buf`, if any.
pub(crate) fn first_nonzero(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b != 0)
}

/// `base + off` as a file offset (saturating: offsets never get near `u64::MAX`).
pub(crate) fn at(base: u64, off: usize) -> u64 {
    base.saturating_add(off as u64)
}

/// A cursor over the variable part of a structure: every read is checked
/// against the end of the buffer, and errors carry the file offset.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// File offset of `buf[0]`.
    base: u64,
    /// The structure being read, for error messages.
    what: &'static str,
    /// The length field that declared where `buf` ends, if running out
    /// means that field is wrong rather than that the input is cut short.
    declared_by: Option<(&'static str, u64)>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize, base: u64, what: &'static str) -> Self {
        Reader {
            buf,
            pos,
            base,
            what,
            declared_by: None,
        }
    }

    /// Makes running out an error of the length field at `offset` that
    /// declared the end of the buffer: its counts and its length disagree.
    pub(crate) fn declared_by(mut self, field: &'static str, offset: u64) -> Self {
        self.declared_by = Some((field, offset));
        self
    }

    /// File offset of the next byte to read.
    pub(crate) fn offset(&self) -> u64 {
        at(self.base, self.pos)
    }

    /// Position in the buffer.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(match self.declared_by {
                Some((field, offset)) => Error::Field {
                    field,
                    offset,
                    problem: format!(
                        "the {} ends at offset {} but its counts ask for {n} more bytes at offset {}",
                        self.what,
                        at(self.base, self.buf.len()),
                        self.offset()
                    ),
                },
                None => Error::Truncated {
                    what: self.what,
                    offset: self.offset(),
                    needed: n as u64,
                    available: self.buf.len().saturating_sub(self.pos) as u64,
                },
            }),
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(u8_at(self.take(1)?, 0))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32_at(self.take(4)?, 0))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64_at(self.take(8)?, 0))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        Ok(array_at(self.take(N)?, 0))
    }
}

/// Checks that `buf` holds at least `needed` bytes.
pub(crate) fn need(buf: &[u8], needed: usize, what: &'static str, base: u64) -> Result<(), Error> {
    if buf.len() < needed {
        return Err(Error::Truncated {
            what,
            offset: base,
            needed: needed as u64,
            available: buf.len() as u64,
        });
    }
    Ok(())
}

/// Checks a magic number at offset 0.
pub(crate) fn check_magic(
    buf: &[u8],
    expected: &'static [u8; 8],
    what: &'static str,
    base: u64,
) -> Result<(), Error> {
    let found: [u8; 8] = array_at(buf, 0);
    if &found != expected {
        return Err(Error::BadMagic {
            what,
            offset: base,
            found: found.escape_ascii().to_string(),
            expected: String::from_utf8_lossy(expected).into_owned(),
        });
    }
    Ok(())
}

/// Checks that reserved bytes are zero.
pub(crate) fn check_zero(
    buf: &[u8],
    off: usize,
    len: usize,
    field: &'static str,
    base: u64,
) -> Result<(), Error> {
    let area = off
        .checked_add(len)
        .and_then(|end| buf.get(off..end))
        .unwrap_or_default();
    if let Some(i) = first_nonzero(area) {
        return Err(Error::Field {
            field,
            offset: at(base, off + i),
            problem: "reserved byte is not zero".into(),
        });
    }
    Ok(())
}

/// Decodes a UTF-8 string field.
pub(crate) fn utf8(bytes: &[u8], field: &'static str, offset: u64) -> Result<String, Error> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => Err(Error::Field {
            field,
            offset: offset.saturating_add(e.valid_up_to() as u64),
            problem: "not valid UTF-8".into(),
        }),
    }
}

/// Rounds `n` up to a multiple of `align` (a power of two).
pub(crate) const fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_reads_are_zero_and_writes_are_clipped() {
        let mut buf = [1u8, 2, 3, 4];
        assert_eq!(u32_at(&buf, 0), 0x0403_0201);
        assert_eq!(u32_at(&buf, 1), 0);
        assert_eq!(u64_at(&buf, usize::MAX), 0);
        assert_eq!(u8_at(&buf, 4), 0);
        put(&mut buf, 2, &[9, 9, 9]);
        assert_eq!(buf, [1, 2, 9, 9]);
        put(&mut buf, 10, &[7]);
        assert_eq!(buf, [1, 2, 9, 9]);
    }

    #[test]
    fn the_reader_stops_at_the_end_and_names_the_offset() {
        let buf = [1u8, 0, 0, 0, 5];
        let mut r = Reader::new(&buf, 0, 100, "thing");
        assert_eq!(r.u32().unwrap(), 1);
        assert_eq!(r.offset(), 104);
        let err = r.u32().unwrap_err();
        assert_eq!(
            err,
            Error::Truncated {
                what: "thing",
                offset: 104,
                needed: 4,
                available: 1
            }
        );
        assert_eq!(r.u8().unwrap(), 5);
        assert!(r.take(usize::MAX).is_err());
    }

    #[test]
    fn alignment() {
        assert_eq!(align_up(0, 64), 0);
        assert_eq!(align_up(1, 64), 64);
        assert_eq!(align_up(64, 64), 64);
    }
}
