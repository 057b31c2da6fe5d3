//! The undo file's bytes (docs/format.md §23), encoded and decoded without
//! any I/O, so that the reader can be fuzzed.
//!
//! ```text
//! header   "PSUNDO01" | version u32 | flags u32 | created u64 |
//!          poolset uuid [16] | records u64 | saved bytes u64 |
//!          path len u32 | reserved u32 | path bytes | checksum u64
//! record   replica u32 | part u32 | file offset u64 | logical u64 |
//!          len u64 | flags u32 | reserved u32 | old digest u128 |
//!          new digest u128 | old bytes (len) |
//!          new sector digests (u64 per 512 bytes) | checksum u64
//! trailer  "PSUNDEND" | records u64 | saved bytes u64 | checksum u64
//! ```
//!
//! Integers are little-endian. Every checksum is the XXH3-64 of the bytes
//! before it in its own structure; a record's is seeded with the header's
//! checksum, so that records cannot be moved between undo files.

use twox_hash::XxHash3_64;

/// The first eight bytes of an undo file.
pub const MAGIC: &[u8; 8] = b"PSUNDO01";
/// The first eight bytes of its trailer.
pub const END_MAGIC: &[u8; 8] = b"PSUNDEND";
/// The version this poolsync writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the header before the path.
pub const HEADER_FIXED: usize = 64;
/// The longest pool set path an undo file records.
pub const MAX_PATH: usize = 4096;
/// Bytes of a record before its data.
pub const RECORD_FIXED: usize = 72;
/// The most bytes one record saves.
pub const MAX_RECORD: u64 = 1 << 20;
/// Bytes of the trailer.
pub const TRAILER: usize = 32;
/// The unit a crash tears a write into: each sector of a range is either
/// old or new afterwards. A record keeps a digest of each new sector, so
/// that a half-written range is recognised as such.
pub const SECTOR: u64 = 512;
/// Record flag: the old bytes could not be read (a bad block); the record
/// holds zeros in their place, which are never restored.
pub const UNREADABLE: u32 = 1;

/// What the header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoHeader {
    /// Seconds since the epoch when the undo file was written.
    pub created: u64,
    /// The pool set UUID of the pool it belongs to.
    pub poolset_uuid: [u8; 16],
    /// How many records follow.
    pub records: u64,
    /// Bytes of the records' data, in all.
    pub saved_bytes: u64,
    /// The pool set file, absolute.
    pub set_path: Vec<u8>,
}

/// One saved range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UndoRecord {
    /// The replica written.
    pub replica: u32,
    /// The part file the range lies in (one part per record).
    pub part: u32,
    /// Its offset in that file.
    pub file_offset: u64,
    /// Its logical offset in the replica.
    pub logical: u64,
    /// Its length.
    pub len: u64,
    /// [`UNREADABLE`] or 0.
    pub flags: u32,
    /// XXH3-128 of the bytes the range held before (0 when unreadable).
    pub old_digest: u128,
    /// XXH3-128 of the bytes written over them.
    pub new_digest: u128,
}

impl UndoRecord {
    /// Whether the old bytes are saved (they could be read).
    pub fn has_data(&self) -> bool {
        self.flags & UNREADABLE == 0
    }
}

/// What is wrong with an undo file's bytes: the byte offset and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// Offset in the file of the field at fault.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

fn err(offset: u64, reason: impl Into<String>) -> FormatError {
    FormatError {
        offset,
        reason: reason.into(),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn u128_at(b: &[u8], at: usize) -> u128 {
    b.get(at..at + 16)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u128::from_le_bytes)
}

impl UndoHeader {
    /// The header's bytes, checksum last.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.encoded_len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&self.created.to_le_bytes());
        b.extend_from_slice(&self.poolset_uuid);
        b.extend_from_slice(&self.records.to_le_bytes());
        b.extend_from_slice(&self.saved_bytes.to_le_bytes());
        b.extend_from_slice(&(self.set_path.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&self.set_path);
        let sum = XxHash3_64::oneshot(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    /// Bytes [`UndoHeader::encode`] gives.
    pub fn encoded_len(&self) -> usize {
        HEADER_FIXED + self.set_path.len() + 8
    }

    /// The length of the header that `prefix` (its first
    /// [`HEADER_FIXED`] bytes, at least) begins.
    pub fn len_of(prefix: &[u8]) -> Result<usize, FormatError> {
        if prefix.len() < HEADER_FIXED {
            return Err(err(
                prefix.len() as u64,
                format!(
                    "the file is {} bytes, shorter than an undo file header",
                    prefix.len()
                ),
            ));
        }
        if prefix.get(..8) != Some(&MAGIC[..]) {
            return Err(err(0, "not a poolsync undo file (no PSUNDO01 magic)"));
        }
        let version = u32_at(prefix, 8);
        if version != VERSION {
            return Err(err(
                8,
                format!("version {version} is not known to this poolsync (it reads {VERSION})"),
            ));
        }
        let path_len = u32_at(prefix, 56) as usize;
        if path_len == 0 || path_len > MAX_PATH {
            return Err(err(
                56,
                format!("pool set path length {path_len} is not between 1 and {MAX_PATH}"),
            ));
        }
        Ok(HEADER_FIXED + path_len + 8)
    }

    /// Decodes a header whose bytes are exactly `b` ([`UndoHeader::len_of`]).
    pub fn decode(b: &[u8]) -> Result<(UndoHeader, u64), FormatError> {
        let len = Self::len_of(b)?;
        if b.len() != len {
            return Err(err(b.len() as u64, "the header is cut short"));
        }
        let body = &b[..len - 8];
        let stored = u64_at(b, len - 8);
        let sum = XxHash3_64::oneshot(body);
        if stored != sum {
            return Err(err(
                (len - 8) as u64,
                format!("header checksum {stored:#x} should be {sum:#x}"),
            ));
        }
        let mut poolset_uuid = [0u8; 16];
        poolset_uuid.copy_from_slice(&b[24..40]);
        Ok((
            UndoHeader {
                created: u64_at(b, 16),
                poolset_uuid,
                records: u64_at(b, 40),
                saved_bytes: u64_at(b, 48),
                set_path: b[HEADER_FIXED..len - 8].to_vec(),
            },
            sum,
        ))
    }
}

impl UndoRecord {
    /// The record's fixed part.
    pub fn encode_fixed(&self) -> [u8; RECORD_FIXED] {
        let mut b = [0u8; RECORD_FIXED];
        b[0..4].copy_from_slice(&self.replica.to_le_bytes());
        b[4..8].copy_from_slice(&self.part.to_le_bytes());
        b[8..16].copy_from_slice(&self.file_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.logical.to_le_bytes());
        b[24..32].copy_from_slice(&self.len.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[40..56].copy_from_slice(&self.old_digest.to_le_bytes());
        b[56..72].copy_from_slice(&self.new_digest.to_le_bytes());
        b
    }

    /// The checksum that follows the record's body: XXH3-64, seeded with
    /// the header's checksum, of the fixed part and the body.
    pub fn checksum(fixed: &[u8; RECORD_FIXED], data: &[u8], header_sum: u64) -> u64 {
        let mut all = Vec::with_capacity(RECORD_FIXED + data.len());
        all.extend_from_slice(fixed);
        all.extend_from_slice(data);
        XxHash3_64::oneshot_with_seed(header_sum, &all)
    }

    /// New-sector digests that follow the old bytes.
    pub fn sectors(&self) -> u64 {
        self.len.div_ceil(SECTOR)
    }

    /// Bytes that follow the fixed part, before the checksum: the old bytes
    /// and the sector digests.
    pub fn body_len(&self) -> u64 {
        self.len + 8 * self.sectors()
    }

    /// Bytes the whole record takes.
    pub fn encoded_len(&self) -> u64 {
        RECORD_FIXED as u64 + self.body_len() + 8
    }

    /// Decodes a record's fixed part, found at file offset `at`.
    pub fn decode_fixed(b: &[u8], at: u64) -> Result<UndoRecord, FormatError> {
        if b.len() < RECORD_FIXED {
            return Err(err(at, "the file ends inside a record"));
        }
        let rec = UndoRecord {
            replica: u32_at(b, 0),
            part: u32_at(b, 4),
            file_offset: u64_at(b, 8),
            logical: u64_at(b, 16),
            len: u64_at(b, 24),
            flags: u32_at(b, 32),
            old_digest: u128_at(b, 40),
            new_digest: u128_at(b, 56),
        };
        if rec.len == 0 || rec.len > MAX_RECORD {
            return Err(err(
                at + 24,
                format!(
                    "record length {} is not between 1 and {MAX_RECORD}",
                    rec.len
                ),
            ));
        }
        if rec.flags & !UNREADABLE != 0 {
            return Err(err(
                at + 32,
                format!("unknown record flags {:#x}", rec.flags),
            ));
        }
        if rec.logical.checked_add(rec.len).is_none()
            || rec.file_offset.checked_add(rec.len).is_none()
        {
            return Err(err(at + 8, "the range overflows a 64-bit offset"));
        }
        Ok(rec)
    }
}

/// The trailer's bytes.
pub fn encode_trailer(records: u64, saved_bytes: u64) -> [u8; TRAILER] {
    let mut b = [0u8; TRAILER];
    b[0..8].copy_from_slice(END_MAGIC);
    b[8..16].copy_from_slice(&records.to_le_bytes());
    b[16..24].copy_from_slice(&saved_bytes.to_le_bytes());
    let sum = XxHash3_64::oneshot(&b[..24]);
    b[24..32].copy_from_slice(&sum.to_le_bytes());
    b
}

/// Checks a trailer at file offset `at` against the header's counts.
pub fn check_trailer(b: &[u8], at: u64, header: &UndoHeader) -> Result<(), FormatError> {
    if b.len() < TRAILER || b.get(..8) != Some(&END_MAGIC[..]) {
        return Err(err(
            at,
            "no trailer: the undo file is incomplete (the run that wrote it stopped before it overwrote anything)",
        ));
    }
    let sum = XxHash3_64::oneshot(&b[..24]);
    if u64_at(b, 24) != sum {
        return Err(err(at + 24, "trailer checksum does not match"));
    }
    if u64_at(b, 8) != header.records || u64_at(b, 16) != header.saved_bytes {
        return Err(err(at + 8, "the trailer's counts differ from the header's"));
    }
    Ok(())
}

/// A record and its body, as [`parse`] returns them.
pub type Saved = (UndoRecord, Vec<u8>);

/// The digest of each [`SECTOR`] of `new`, as records keep them.
pub fn sector_digests(new: &[u8]) -> Vec<u8> {
    new.chunks(SECTOR as usize)
        .flat_map(|s| XxHash3_64::oneshot(s).to_le_bytes())
        .collect()
}

/// Reads a whole undo file held in `bytes` (tests and fuzzing; the engine
/// streams): the header and every record with its body (old bytes, then
/// sector digests).
pub fn parse(bytes: &[u8]) -> Result<(UndoHeader, Vec<Saved>), FormatError> {
    let prefix = bytes
        .get(..HEADER_FIXED.min(bytes.len()))
        .unwrap_or_default();
    let hlen = UndoHeader::len_of(prefix)?;
    let (header, sum) = UndoHeader::decode(bytes.get(..hlen).unwrap_or(prefix))?;
    let mut at = hlen as u64;
    let mut out = Vec::new();
    let mut saved = 0u64;
    for _ in 0..header.records {
        let start = usize::try_from(at).map_err(|_| err(at, "offset too large"))?;
        let fixed_bytes = bytes.get(start..).unwrap_or_default();
        let rec = UndoRecord::decode_fixed(fixed_bytes, at)?;
        let data_start = start + RECORD_FIXED;
        let body_len = usize::try_from(rec.body_len()).map_err(|_| err(at, "record too large"))?;
        let data = bytes
            .get(data_start..data_start + body_len)
            .ok_or_else(|| err(at, "the file ends inside a record"))?;
        let sum_at = data_start + body_len;
        let stored = bytes
            .get(sum_at..sum_at + 8)
            .map(|s| u64_at(s, 0))
            .ok_or_else(|| err(sum_at as u64, "the file ends inside a record"))?;
        let mut fixed = [0u8; RECORD_FIXED];
        fixed.copy_from_slice(&fixed_bytes[..RECORD_FIXED]);
        if UndoRecord::checksum(&fixed, data, sum) != stored {
            return Err(err(sum_at as u64, "record checksum does not match"));
        }
        let old = data.get(..rec.len as usize).unwrap_or_default();
        if rec.has_data() && crate::endpoint::digest(old) != rec.old_digest {
            return Err(err(
                data_start as u64,
                "the saved bytes do not match their digest",
            ));
        }
        saved = saved.saturating_add(rec.len);
        out.push((rec, data.to_vec()));
        at = (sum_at + 8) as u64;
    }
    if saved != header.saved_bytes {
        return Err(err(48, "the saved byte count differs from the records'"));
    }
    let start = usize::try_from(at).map_err(|_| err(at, "offset too large"))?;
    check_trailer(bytes.get(start..).unwrap_or_default(), at, &header)?;
    Ok((header, out))
}

/// The bytes of a whole undo file (tests): `records` with their bodies.
pub fn encode(header: &UndoHeader, records: &[(UndoRecord, Vec<u8>)]) -> Vec<u8> {
    let head = header.encode();
    let sum = u64_at(&head, head.len() - 8);
    let mut out = head;
    for (rec, data) in records {
        let fixed = rec.encode_fixed();
        out.extend_from_slice(&fixed);
        out.extend_from_slice(data);
        out.extend_from_slice(&UndoRecord::checksum(&fixed, data, sum).to_le_bytes());
    }
    out.extend_from_slice(&encode_trailer(header.records, header.saved_bytes));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(records: &[(u64, Vec<u8>, bool)]) -> (UndoHeader, Vec<(UndoRecord, Vec<u8>)>) {
        let recs: Vec<(UndoRecord, Vec<u8>)> = records
            .iter()
            .enumerate()
            .map(|(i, (logical, data, unreadable))| {
                let rec = UndoRecord {
                    replica: i as u32 % 3,
                    part: 1,
                    file_offset: logical + 4096,
                    logical: *logical,
                    len: data.len() as u64,
                    flags: if *unreadable { UNREADABLE } else { 0 },
                    old_digest: if *unreadable {
                        0
                    } else {
                        crate::endpoint::digest(data)
                    },
                    new_digest: 7,
                };
                let mut body = if *unreadable {
                    vec![0; data.len()]
                } else {
                    data.clone()
                };
                body.extend(sector_digests(&vec![7; data.len()]));
                (rec, body)
            })
            .collect();
        let header = UndoHeader {
            created: 1_700_000_000,
            poolset_uuid: [9; 16],
            records: recs.len() as u64,
            saved_bytes: recs.iter().map(|(r, _)| r.len).sum(),
            set_path: b"/pool/pool.set".to_vec(),
        };
        (header, recs)
    }

    proptest! {
        #[test]
        fn undo_files_round_trip(
            records in proptest::collection::vec(
                (0u64..1 << 40, proptest::collection::vec(any::<u8>(), 1..300), any::<bool>()),
                0..6,
            )
        ) {
            let (header, recs) = sample(&records);
            let bytes = encode(&header, &recs);
            let (h, r) = parse(&bytes).unwrap();
            prop_assert_eq!(h, header);
            prop_assert_eq!(r, recs);
        }
    }

    #[test]
    fn every_damage_is_caught_with_its_offset() {
        let (header, recs) = sample(&[(4096, vec![1; 100], false), (8192, vec![2; 10], true)]);
        let bytes = encode(&header, &recs);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            let e = parse(&bad).expect_err("damage accepted");
            assert!(e.offset <= bytes.len() as u64, "{e:?}");
        }
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut} accepted");
        }
        // A file allocated whole but never finished: zero tail.
        let mut torn = bytes[..bytes.len() - TRAILER].to_vec();
        torn.extend_from_slice(&[0; TRAILER]);
        assert!(parse(&torn).unwrap_err().reason.contains("incomplete"));
    }
}
