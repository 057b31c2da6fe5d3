//! The trailer at the end of every physical packet file (`docs/packet.md`, section 4).

use super::header::{check_key, FILE_HDR_FLAGS_OFF};
use super::{FileHeader, PacketSummary};
use crate::bytes::{
    array_at, at, check_magic, check_zero, need, put, put_u32, put_u64, u32_at, u64_at,
};
use crate::tag::{tags_equal, Key, Tagger, DOMAIN_TRAILER, TAG_LEN};
use crate::Error;

/// The magic number of a trailer.
pub const TRAILER_MAGIC: &[u8; 8] = b"PSYNCEND";
/// Bytes of a trailer; it ends the file.
pub const TRAILER_LEN: usize = 112;
/// Flag bit: this file is the last of its logical packet.
pub const TRAILER_FLAG_LAST: u32 = 0x1;
/// Offset of the magic number.
pub const TRL_MAGIC_OFF: usize = 0;
/// Offset of the flags (u32).
pub const TRL_FLAGS_OFF: usize = 8;
/// Offset of the number of files of the logical packet (u32, last file only).
pub const TRL_TOTAL_FILES_OFF: usize = 12;
/// Offset of the sequence number of this file's first record (u64).
pub const TRL_FIRST_SEQ_OFF: usize = 16;
/// Offset of the number of records in this file (u64).
pub const TRL_RECORD_COUNT_OFF: usize = 24;
/// Offset of the number of records in the logical packet (u64, last file only).
pub const TRL_TOTAL_RECORDS_OFF: usize = 32;
/// Offset of the number of data blocks in the logical packet (u64, last file only).
pub const TRL_DATA_BLOCKS_OFF: usize = 40;
/// Offset of the number of zero blocks in the logical packet (u64, last file only).
pub const TRL_ZERO_BLOCKS_OFF: usize = 48;
/// Offset of the content digest (32 bytes, last file only).
pub const TRL_DIGEST_OFF: usize = 56;
/// Offset of eight reserved bytes.
pub const TRL_RESERVED_OFF: usize = 88;
/// Offset of the tag.
pub const TRL_TAG_OFF: usize = 96;

const _: () = assert!(TRL_FLAGS_OFF == TRL_MAGIC_OFF + 8);
const _: () = assert!(TRL_TOTAL_FILES_OFF == TRL_FLAGS_OFF + 4);
const _: () = assert!(TRL_FIRST_SEQ_OFF == TRL_TOTAL_FILES_OFF + 4);
const _: () = assert!(TRL_RECORD_COUNT_OFF == TRL_FIRST_SEQ_OFF + 8);
const _: () = assert!(TRL_TOTAL_RECORDS_OFF == TRL_RECORD_COUNT_OFF + 8);
const _: () = assert!(TRL_DATA_BLOCKS_OFF == TRL_TOTAL_RECORDS_OFF + 8);
const _: () = assert!(TRL_ZERO_BLOCKS_OFF == TRL_DATA_BLOCKS_OFF + 8);
const _: () = assert!(TRL_DIGEST_OFF == TRL_ZERO_BLOCKS_OFF + 8);
const _: () = assert!(TRL_RESERVED_OFF == TRL_DIGEST_OFF + 32);
const _: () = assert!(TRL_TAG_OFF == TRL_RESERVED_OFF + 8);
const _: () = assert!(TRAILER_LEN == TRL_TAG_OFF + TAG_LEN);

const WHAT: &str = "trailer";

/// A decoded and verified trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// Sequence number of the file's first record (of the next record when
    /// the file holds none).
    pub first_seq: u64,
    /// Records in this file.
    pub record_count: u64,
    /// In the last file of the logical packet: the totals of the packet.
    pub last: Option<PacketSummary>,
    /// The stored tag.
    pub tag: [u8; TAG_LEN],
}

fn fixed_bytes(trailer: &Trailer) -> [u8; TRL_TAG_OFF] {
    let mut b = [0u8; TRL_TAG_OFF];
    put(&mut b, TRL_MAGIC_OFF, TRAILER_MAGIC);
    put_u64(&mut b, TRL_FIRST_SEQ_OFF, trailer.first_seq);
    put_u64(&mut b, TRL_RECORD_COUNT_OFF, trailer.record_count);
    if let Some(s) = &trailer.last {
        put_u32(&mut b, TRL_FLAGS_OFF, TRAILER_FLAG_LAST);
        put_u32(&mut b, TRL_TOTAL_FILES_OFF, s.files);
        put_u64(&mut b, TRL_TOTAL_RECORDS_OFF, s.records);
        put_u64(&mut b, TRL_DATA_BLOCKS_OFF, s.data_blocks);
        put_u64(&mut b, TRL_ZERO_BLOCKS_OFF, s.zero_blocks);
        put(&mut b, TRL_DIGEST_OFF, &s.content_digest);
    }
    b
}

fn trailer_tag(key: Option<&Key>, header: &FileHeader, fixed: &[u8]) -> [u8; TAG_LEN] {
    Tagger::new(key, DOMAIN_TRAILER)
        .update(&header.tag)
        .update(fixed)
        .tag()
}

/// Encodes a trailer for the file with `header`, filling in its tag.
pub(crate) fn encode_trailer(
    header: &FileHeader,
    trailer: &mut Trailer,
    key: Option<&Key>,
) -> [u8; TRAILER_LEN] {
    let fixed = fixed_bytes(trailer);
    trailer.tag = trailer_tag(key, header, &fixed);
    let mut b = [0u8; TRAILER_LEN];
    put(&mut b, 0, &fixed);
    put(&mut b, TRL_TAG_OFF, &trailer.tag);
    b
}

/// Decodes and verifies the trailer at file offset `at_offset` (the file's
/// length minus [`TRAILER_LEN`]) of the file with `header`.
pub fn decode_trailer(
    bytes: &[u8],
    at_offset: u64,
    header: &FileHeader,
    key: Option<&Key>,
) -> Result<Trailer, Error> {
    need(bytes, TRAILER_LEN, WHAT, at_offset)?;
    check_magic(bytes, TRAILER_MAGIC, WHAT, at_offset)?;
    check_key(
        header.signed,
        key,
        "packet file header",
        FILE_HDR_FLAGS_OFF as u64,
    )?;
    let here = |off: usize| at(at_offset, off);
    let tag: [u8; TAG_LEN] = array_at(bytes, TRL_TAG_OFF);
    let computed = trailer_tag(key, header, bytes.get(..TRL_TAG_OFF).unwrap_or_default());
    if !tags_equal(&tag, &computed) {
        return Err(Error::BadTag {
            what: WHAT,
            offset: at_offset,
            signed: header.signed,
        });
    }
    let flags = u32_at(bytes, TRL_FLAGS_OFF);
    if flags & !TRAILER_FLAG_LAST != 0 {
        return Err(Error::field(
            "trailer flags",
            here(TRL_FLAGS_OFF),
            format!("unknown bits {:#x}", flags & !TRAILER_FLAG_LAST),
        ));
    }
    check_zero(bytes, TRL_RESERVED_OFF, 8, "reserved", at_offset)?;
    let first_seq = u64_at(bytes, TRL_FIRST_SEQ_OFF);
    let record_count = u64_at(bytes, TRL_RECORD_COUNT_OFF);
    let Some(end_seq) = first_seq.checked_add(record_count) else {
        return Err(Error::field(
            "record count",
            here(TRL_RECORD_COUNT_OFF),
            "the sequence numbers overflow",
        ));
    };
    let last = if flags & TRAILER_FLAG_LAST == 0 {
        check_zero(
            bytes,
            TRL_TOTAL_FILES_OFF,
            4,
            "total file count of a file that is not the last",
            at_offset,
        )?;
        check_zero(
            bytes,
            TRL_TOTAL_RECORDS_OFF,
            TRL_RESERVED_OFF - TRL_TOTAL_RECORDS_OFF,
            "totals of a file that is not the last",
            at_offset,
        )?;
        None
    } else {
        let s = PacketSummary {
            files: u32_at(bytes, TRL_TOTAL_FILES_OFF),
            records: u64_at(bytes, TRL_TOTAL_RECORDS_OFF),
            data_blocks: u64_at(bytes, TRL_DATA_BLOCKS_OFF),
            zero_blocks: u64_at(bytes, TRL_ZERO_BLOCKS_OFF),
            content_digest: array_at(bytes, TRL_DIGEST_OFF),
        };
        if u64::from(s.files) != u64::from(header.part_index) + 1 {
            return Err(Error::field(
                "total file count",
                here(TRL_TOTAL_FILES_OFF),
                format!(
                    "{} files, but this last file is part {} (0-based)",
                    s.files, header.part_index
                ),
            ));
        }
        if s.records != end_seq {
            return Err(Error::field(
                "total record count",
                here(TRL_TOTAL_RECORDS_OFF),
                format!(
                    "{} records, but the last file's records end at sequence {end_seq}",
                    s.records
                ),
            ));
        }
        let meta = &header.meta;
        let range_blocks = (meta.range.end - meta.range.start) / u64::from(meta.block_size);
        if !matches!(s.data_blocks.checked_add(s.zero_blocks), Some(n) if n <= range_blocks) {
            return Err(Error::field(
                "block totals",
                here(TRL_DATA_BLOCKS_OFF),
                format!(
                    "{} data and {} zero blocks exceed the {range_blocks} blocks of the shipped range",
                    s.data_blocks, s.zero_blocks
                ),
            ));
        }
        Some(s)
    };
    Ok(Trailer {
        first_seq,
        record_count,
        last,
        tag,
    })
}
