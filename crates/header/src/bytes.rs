//! Panic-free little-endian field access on byte buffers.
//!
//! Every decoder first checks that its input holds the whole structure, then
//! reads fields at the constant offsets from `layout`. These helpers never
//! index out of bounds: a read outside the buffer yields zeros and a write
//! outside it is dropped. Callers check lengths up front, so neither case
//! happens on the paths the codec uses; the fallback only keeps the code free
//! of panics by construction.

/// Copies `N` bytes starting at `off`, or returns zeros if they are not all inside `buf`.
pub(crate) fn array<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = off.checked_add(N).and_then(|end| buf.get(off..end)) {
        out.copy_from_slice(src);
    }
    out
}

/// Reads a little-endian `u16` at `off`.
pub(crate) fn u16_le(buf: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(array(buf, off))
}

/// Reads a little-endian `u32` at `off`.
pub(crate) fn u32_le(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(array(buf, off))
}

/// Reads a little-endian `u64` at `off`.
pub(crate) fn u64_le(buf: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(array(buf, off))
}

/// Reads one byte at `off`.
pub(crate) fn u8_at(buf: &[u8], off: usize) -> u8 {
    buf.get(off).copied().unwrap_or(0)
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

/// Writes a little-endian `u64` at `off`.
pub(crate) fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    put(buf, off, &v.to_le_bytes());
}

/// Writes a little-endian `u32` at `off`.
pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    put(buf, off, &v.to_le_bytes());
}

/// Writes a little-endian `u16` at `off`.
pub(crate) fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    put(buf, off, &v.to_le_bytes());
}

/// Offset of the first non-zero byte of `buf`, if any.
pub(crate) fn first_nonzero(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_reads_are_zero_and_writes_are_clipped() {
        let mut buf = [1u8, 2, 3, 4];
        assert_eq!(u32_le(&buf, 0), 0x0403_0201);
        assert_eq!(u32_le(&buf, 1), 0);
        assert_eq!(u64_le(&buf, usize::MAX), 0);
        assert_eq!(u8_at(&buf, 4), 0);
        put(&mut buf, 2, &[9, 9, 9]);
        assert_eq!(buf, [1, 2, 9, 9]);
        put(&mut buf, 10, &[7]);
        assert_eq!(buf, [1, 2, 9, 9]);
        assert_eq!(first_nonzero(&[0, 0, 5]), Some(2));
        assert_eq!(first_nonzero(&[0, 0]), None);
    }
}
