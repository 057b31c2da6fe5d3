//! PMDK's Fletcher64 variant (`util_checksum`), used by every checksummed structure.

use crate::bytes::u32_le;

/// Computes PMDK's Fletcher64 variant over `buf` (docs/format.md §1).
///
/// The buffer is read as little-endian 32-bit words. Two wrapping 32-bit sums
/// run over them: `lo` adds each word and `hi` adds `lo` after every word. The
/// result is `hi << 32 | lo`.
///
/// `csum_off` is the byte offset of the 8-byte checksum field inside `buf`;
/// when the scan reaches exactly that offset, both words of the field count
/// as zero. When `skip` is `Some(s)`, every word at an offset `>= s` counts as
/// zero too. Excluded words still advance `hi`, so checksumming a 4096-byte
/// header with `skip = Some(2048)` differs from checksumming its first 2048
/// bytes. PMDK encodes "no skip" as offset 0; here that is `None`, and
/// `Some(0)` treats the whole buffer as zero.
///
/// Excluded words are consumed in pairs, as PMDK does. The input length should
/// be a multiple of 4 (PMDK aborts otherwise); trailing bytes that do not form
/// a whole word are ignored rather than read.
///
/// ```
/// use poolsync_header::fletcher64;
/// let words: Vec<u8> = [1u32, 2, 3, 4].iter().flat_map(|w| w.to_le_bytes()).collect();
/// assert_eq!(fletcher64(&words, words.len(), None), 0x0000_0014_0000_000A);
/// ```
pub fn fletcher64(buf: &[u8], csum_off: usize, skip: Option<usize>) -> u64 {
    let end = buf.len() - buf.len() % 4;
    let mut lo: u32 = 0;
    let mut hi: u32 = 0;
    let mut off = 0usize;
    while off < end {
        let excluded = off == csum_off || skip.is_some_and(|s| off >= s);
        if excluded {
            hi = hi.wrapping_add(lo);
            hi = hi.wrapping_add(lo);
            off = off.saturating_add(8);
        } else {
            lo = lo.wrapping_add(u32_le(buf, off));
            hi = hi.wrapping_add(lo);
            off += 4;
        }
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn reference_vector_words_1_to_4() {
        let b = words(&[1, 2, 3, 4]);
        assert_eq!(fletcher64(&b, 16, None), 0x0000_0014_0000_000A);
    }

    #[test]
    fn checksum_field_counts_as_zero() {
        // Words 1, 2, [field], 5: the field must not contribute but still advance hi.
        let mut b = words(&[1, 2, 0xDEAD, 0xBEEF, 5, 0]);
        let with_garbage = fletcher64(&b, 8, None);
        b[8..16].fill(0);
        assert_eq!(with_garbage, fletcher64(&b, 8, None));
        // lo = 1+2+5 = 8; hi = 1 + 3 + 3 + 3 + 8 + 8 = 26.
        assert_eq!(with_garbage, (26u64 << 32) | 8);
    }

    #[test]
    fn skip_region_still_advances_hi() {
        let b = words(&[1, 2, 3, 4]);
        // Skip from byte 8: lo = 3, hi = 1 + 3 + 3 + 3.
        assert_eq!(fletcher64(&b, 16, Some(8)), (10u64 << 32) | 3);
        // That is not the checksum of the first 8 bytes alone.
        assert_ne!(fletcher64(&b, 16, Some(8)), fletcher64(&b[..8], 16, None));
        assert_eq!(fletcher64(&b, 16, Some(0)), 0);
    }

    #[test]
    fn zero_buffer_and_odd_length() {
        assert_eq!(fletcher64(&[0u8; 4096], 4088, Some(2048)), 0);
        assert_eq!(fletcher64(&[], 0, None), 0);
        // A trailing partial word is ignored.
        assert_eq!(fletcher64(&[1, 0, 0, 0, 7, 7], 99, None), (1u64 << 32) | 1);
    }
}
