//! The file header at offset 0 of every physical packet file (`docs/packet.md`, section 2).

use super::{
    Compression, PacketMeta, MAX_BLOCK_SIZE, MAX_COMMENT, MAX_DESTINATIONS, MAX_NAME, MAX_SOURCE,
    MIN_BLOCK_SIZE,
};
use crate::bytes::{
    array_at, at, check_magic, check_zero, need, put, put_u16, put_u32, put_u64, u16_at, u32_at,
    u64_at, u8_at, utf8, Reader,
};
use crate::tag::{tags_equal, Key, Tagger, DOMAIN_HEADER, TAG_LEN};
use crate::timeline::{check_history, fork_epoch, Fork, Position, FORK_LEN, MAX_HISTORY};
use crate::Error;

/// The magic number of a packet file.
pub const PACKET_MAGIC: &[u8; 8] = b"PSYNCPKT";
/// The format version this crate writes.
pub const PACKET_VERSION: u16 = 2;
/// The oldest format version this crate reads. Version 1 differs only in
/// what a record's tag covers: its payload, where version 2 covers the
/// payload's hash (`docs/packet.md`, section 3).
pub const OLDEST_PACKET_VERSION: u16 = 1;
/// Flag bit: every tag of the file is a keyed MAC.
pub const FLAG_SIGNED: u8 = 0x01;
/// Flag bit: the packet honours a rewind request; the rewind position
/// fields are set.
pub const FLAG_REWIND: u8 = 0x02;
/// Every flag bit this version defines.
const KNOWN_FLAGS: u8 = FLAG_SIGNED | FLAG_REWIND;

/// Offset of the magic number.
pub const FILE_HDR_MAGIC_OFF: usize = 0;
/// Offset of the version (u16).
pub const FILE_HDR_VERSION_OFF: usize = 8;
/// Offset of the flags (u8).
pub const FILE_HDR_FLAGS_OFF: usize = 10;
/// Offset of the compression kind (u8).
pub const FILE_HDR_COMPRESSION_OFF: usize = 11;
/// Offset of the header length (u32), tag included.
pub const FILE_HDR_LEN_OFF: usize = 12;
/// Offset of the packet id (16 bytes).
pub const FILE_HDR_PACKET_ID_OFF: usize = 16;
/// Offset of the pool set UUID (16 bytes).
pub const FILE_HDR_POOLSET_UUID_OFF: usize = 32;
/// Offset of the lineage (16 bytes).
pub const FILE_HDR_LINEAGE_OFF: usize = 48;
/// Offset of the timeline (u32).
pub const FILE_HDR_TIMELINE_OFF: usize = 64;
/// Offset of the part index (u32).
pub const FILE_HDR_PART_INDEX_OFF: usize = 68;
/// Offset of the base epoch (u32).
pub const FILE_HDR_BASE_EPOCH_OFF: usize = 72;
/// Offset of the new epoch (u32).
pub const FILE_HDR_NEW_EPOCH_OFF: usize = 76;
/// Offset of the start of the shipped logical range (u64).
pub const FILE_HDR_RANGE_START_OFF: usize = 80;
/// Offset of the end of the shipped logical range (u64).
pub const FILE_HDR_RANGE_END_OFF: usize = 88;
/// Offset of the creation time (u64 seconds).
pub const FILE_HDR_CREATED_OFF: usize = 96;
/// Offset of the block size (u32).
pub const FILE_HDR_BLOCK_SIZE_OFF: usize = 104;
/// Offset of the number of history entries (u16).
pub const FILE_HDR_HISTORY_COUNT_OFF: usize = 108;
/// Offset of the number of destination names (u16).
pub const FILE_HDR_DEST_COUNT_OFF: usize = 110;
/// Offset of the comment length (u16).
pub const FILE_HDR_COMMENT_LEN_OFF: usize = 112;
/// Offset of the source length (u16): the exporter's pool set file.
pub const FILE_HDR_SOURCE_LEN_OFF: usize = 114;
/// Offset of the timeline of the position a rewind packet brings back
/// (u32; zero without [`FLAG_REWIND`]).
pub const FILE_HDR_REWIND_TIMELINE_OFF: usize = 116;
/// Offset of the epoch of that position (u32; zero without
/// [`FLAG_REWIND`]).
pub const FILE_HDR_REWIND_EPOCH_OFF: usize = 120;
/// Offset of the reserved bytes.
pub const FILE_HDR_RESERVED_OFF: usize = 124;
/// Length of the reserved bytes.
pub const FILE_HDR_RESERVED_LEN: usize = 4;
/// Length of the fixed part; the variable part (history, comment,
/// destinations) follows, then the tag.
pub const FILE_HEADER_FIXED_LEN: usize = 128;
/// The longest header the bounds allow.
pub const FILE_HEADER_MAX_LEN: usize = FILE_HEADER_FIXED_LEN
    + MAX_HISTORY * FORK_LEN
    + MAX_COMMENT
    + MAX_DESTINATIONS * (1 + MAX_NAME)
    + MAX_SOURCE
    + TAG_LEN;

const _: () = assert!(FILE_HDR_VERSION_OFF == FILE_HDR_MAGIC_OFF + 8);
const _: () = assert!(FILE_HDR_FLAGS_OFF == FILE_HDR_VERSION_OFF + 2);
const _: () = assert!(FILE_HDR_COMPRESSION_OFF == FILE_HDR_FLAGS_OFF + 1);
const _: () = assert!(FILE_HDR_LEN_OFF == FILE_HDR_COMPRESSION_OFF + 1);
const _: () = assert!(FILE_HDR_PACKET_ID_OFF == FILE_HDR_LEN_OFF + 4);
const _: () = assert!(FILE_HDR_POOLSET_UUID_OFF == FILE_HDR_PACKET_ID_OFF + 16);
const _: () = assert!(FILE_HDR_LINEAGE_OFF == FILE_HDR_POOLSET_UUID_OFF + 16);
const _: () = assert!(FILE_HDR_TIMELINE_OFF == FILE_HDR_LINEAGE_OFF + 16);
const _: () = assert!(FILE_HDR_PART_INDEX_OFF == FILE_HDR_TIMELINE_OFF + 4);
const _: () = assert!(FILE_HDR_BASE_EPOCH_OFF == FILE_HDR_PART_INDEX_OFF + 4);
const _: () = assert!(FILE_HDR_NEW_EPOCH_OFF == FILE_HDR_BASE_EPOCH_OFF + 4);
const _: () = assert!(FILE_HDR_RANGE_START_OFF == FILE_HDR_NEW_EPOCH_OFF + 4);
const _: () = assert!(FILE_HDR_RANGE_END_OFF == FILE_HDR_RANGE_START_OFF + 8);
const _: () = assert!(FILE_HDR_CREATED_OFF == FILE_HDR_RANGE_END_OFF + 8);
const _: () = assert!(FILE_HDR_BLOCK_SIZE_OFF == FILE_HDR_CREATED_OFF + 8);
const _: () = assert!(FILE_HDR_HISTORY_COUNT_OFF == FILE_HDR_BLOCK_SIZE_OFF + 4);
const _: () = assert!(FILE_HDR_DEST_COUNT_OFF == FILE_HDR_HISTORY_COUNT_OFF + 2);
const _: () = assert!(FILE_HDR_COMMENT_LEN_OFF == FILE_HDR_DEST_COUNT_OFF + 2);
const _: () = assert!(FILE_HDR_SOURCE_LEN_OFF == FILE_HDR_COMMENT_LEN_OFF + 2);
const _: () = assert!(FILE_HDR_REWIND_TIMELINE_OFF == FILE_HDR_SOURCE_LEN_OFF + 2);
const _: () = assert!(FILE_HDR_REWIND_EPOCH_OFF == FILE_HDR_REWIND_TIMELINE_OFF + 4);
const _: () = assert!(FILE_HDR_RESERVED_OFF == FILE_HDR_REWIND_EPOCH_OFF + 4);
const _: () = assert!(FILE_HEADER_FIXED_LEN == FILE_HDR_RESERVED_OFF + FILE_HDR_RESERVED_LEN);
const _: () = assert!(FILE_HEADER_MAX_LEN == 27_792);
const _: () = assert!(MAX_SOURCE <= u16::MAX as usize);
// The counts are u16 fields.
const _: () = assert!(MAX_HISTORY <= u16::MAX as usize);
const _: () = assert!(MAX_DESTINATIONS <= u16::MAX as usize);
const _: () = assert!(MAX_COMMENT <= u16::MAX as usize);

const WHAT: &str = "packet file header";

/// A decoded and verified file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// What the whole logical packet is.
    pub meta: PacketMeta,
    /// This file's place in the logical packet: 0 for `FILE`, 1 for
    /// `FILE_2`, ...
    pub part_index: u32,
    /// Whether the file's tags are keyed MACs.
    pub signed: bool,
    /// Encoded length in bytes, tag included: the first record starts here.
    pub len: usize,
    /// The header's tag; record and trailer tags cover it, which binds them
    /// to this file.
    pub tag: [u8; TAG_LEN],
    /// The format version ([`OLDEST_PACKET_VERSION`] to
    /// [`PACKET_VERSION`]): it says what record tags cover.
    pub version: u16,
}

/// Offsets of the variable fields of a header for `meta`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VarOffsets {
    pub history: usize,
    pub comment: usize,
    pub destinations: usize,
    pub source: usize,
    pub tag: usize,
}

/// Where the variable fields of a header for `meta` lie: history, comment,
/// destinations, source, and the tag.
pub(crate) fn var_offsets(meta: &PacketMeta) -> VarOffsets {
    let history = FILE_HEADER_FIXED_LEN;
    let comment = history + meta.history.len() * FORK_LEN;
    let destinations = comment + meta.comment.len();
    let source = destinations + meta.destinations.iter().map(|d| 1 + d.len()).sum::<usize>();
    let tag = source + meta.source.len();
    VarOffsets {
        history,
        comment,
        destinations,
        source,
        tag,
    }
}

/// The first rule of the format that `meta` breaks: the field, its offset in
/// the header and the problem.
pub(crate) fn meta_problem(meta: &PacketMeta) -> Option<(&'static str, usize, String)> {
    let VarOffsets {
        history: hist_off,
        comment: comment_off,
        destinations: dest_off,
        source: source_off,
        ..
    } = var_offsets(meta);
    let bs = meta.block_size;
    if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
        return Some((
            "block size",
            FILE_HDR_BLOCK_SIZE_OFF,
            format!("{bs} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"),
        ));
    }
    let bs = u64::from(bs);
    if !meta.range.start.is_multiple_of(bs) {
        return Some((
            "range start",
            FILE_HDR_RANGE_START_OFF,
            format!("{} is not a multiple of the block size", meta.range.start),
        ));
    }
    if !meta.range.end.is_multiple_of(bs) || meta.range.end <= meta.range.start {
        return Some((
            "range end",
            FILE_HDR_RANGE_END_OFF,
            format!(
                "{} is not a multiple of the block size after the range start {}",
                meta.range.end, meta.range.start
            ),
        ));
    }
    if let Err(p) = check_history(meta.timeline, &meta.history) {
        return Some(match p.index {
            Some(i) => ("timeline history", hist_off + i * FORK_LEN, p.problem),
            None => ("timeline", FILE_HDR_TIMELINE_OFF, p.problem),
        });
    }
    if meta.base_epoch >= meta.new_epoch {
        return Some((
            "new epoch",
            FILE_HDR_NEW_EPOCH_OFF,
            format!(
                "{} is not after the base epoch {}",
                meta.new_epoch, meta.base_epoch
            ),
        ));
    }
    if meta.new_epoch <= fork_epoch(&meta.history) {
        return Some((
            "new epoch",
            FILE_HDR_NEW_EPOCH_OFF,
            format!(
                "{} is not after the timeline's fork epoch {}",
                meta.new_epoch,
                fork_epoch(&meta.history)
            ),
        ));
    }
    if meta.comment.len() > MAX_COMMENT {
        return Some((
            "comment",
            comment_off,
            format!(
                "{} bytes, at most {MAX_COMMENT} allowed",
                meta.comment.len()
            ),
        ));
    }
    if meta.destinations.len() > MAX_DESTINATIONS {
        return Some((
            "destination count",
            FILE_HDR_DEST_COUNT_OFF,
            format!(
                "{} destinations, at most {MAX_DESTINATIONS} allowed",
                meta.destinations.len()
            ),
        ));
    }
    let mut off = dest_off;
    for d in &meta.destinations {
        if d.is_empty() || d.len() > MAX_NAME {
            return Some((
                "destination name",
                off,
                format!("{} bytes, expected 1 to {MAX_NAME}", d.len()),
            ));
        }
        off += 1 + d.len();
    }
    if meta.source.len() > MAX_SOURCE {
        return Some((
            "source",
            source_off,
            format!("{} bytes, at most {MAX_SOURCE} allowed", meta.source.len()),
        ));
    }
    if let Some(p) = meta.rewind {
        if p.timeline == 0 {
            return Some((
                "rewind timeline",
                FILE_HDR_REWIND_TIMELINE_OFF,
                "timeline 0".into(),
            ));
        }
    }
    None
}

/// The header length a file declares, from its first
/// [`FILE_HEADER_FIXED_LEN`] bytes: how many bytes to read for
/// [`decode_file_header`].
pub fn file_header_len(prefix: &[u8]) -> Result<usize, Error> {
    need(prefix, FILE_HEADER_FIXED_LEN, WHAT, 0)?;
    check_magic(prefix, PACKET_MAGIC, WHAT, 0)?;
    let version = u16_at(prefix, FILE_HDR_VERSION_OFF);
    if !(OLDEST_PACKET_VERSION..=PACKET_VERSION).contains(&version) {
        return Err(Error::Version {
            what: WHAT,
            offset: FILE_HDR_VERSION_OFF as u64,
            found: version,
            supported: "versions 1 and 2",
        });
    }
    let len = u32_at(prefix, FILE_HDR_LEN_OFF) as usize;
    if !(FILE_HEADER_FIXED_LEN + TAG_LEN..=FILE_HEADER_MAX_LEN).contains(&len) {
        return Err(Error::field(
            "header length",
            FILE_HDR_LEN_OFF as u64,
            format!(
                "{len} bytes, expected {} to {FILE_HEADER_MAX_LEN}",
                FILE_HEADER_FIXED_LEN + TAG_LEN
            ),
        ));
    }
    Ok(len)
}

/// Checks that the caller's key matches a structure's signed flag.
pub(crate) fn check_key(
    signed: bool,
    key: Option<&Key>,
    what: &'static str,
    flags_offset: u64,
) -> Result<(), Error> {
    match (signed, key.is_some()) {
        (true, false) => Err(Error::KeyRequired {
            what,
            offset: flags_offset,
        }),
        (false, true) => Err(Error::NotSigned {
            what,
            offset: flags_offset,
        }),
        _ => Ok(()),
    }
}

/// Decodes and verifies the header at the start of a packet file.
///
/// `bytes` must hold at least the header ([`file_header_len`] says how
/// long it is); more is ignored. With a key, only signed files are
/// accepted; without one, only unsigned files. The tag is verified before
/// any field is judged, then every field is checked against the format's
/// rules (`docs/packet.md`).
pub fn decode_file_header(bytes: &[u8], key: Option<&Key>) -> Result<FileHeader, Error> {
    let len = file_header_len(bytes)?;
    need(bytes, len, WHAT, 0)?;
    let flags = u8_at(bytes, FILE_HDR_FLAGS_OFF);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::field(
            "flags",
            FILE_HDR_FLAGS_OFF as u64,
            format!("unknown bits {:#04x}", flags & !KNOWN_FLAGS),
        ));
    }
    let signed = flags & FLAG_SIGNED != 0;
    check_key(signed, key, WHAT, FILE_HDR_FLAGS_OFF as u64)?;
    let tag_off = len - TAG_LEN;
    let tag: [u8; TAG_LEN] = array_at(bytes, tag_off);
    let computed = Tagger::new(key, DOMAIN_HEADER)
        .update(bytes.get(..tag_off).unwrap_or_default())
        .tag();
    if !tags_equal(&tag, &computed) {
        return Err(Error::BadTag {
            what: WHAT,
            offset: 0,
            signed,
        });
    }

    let compression_code = u8_at(bytes, FILE_HDR_COMPRESSION_OFF);
    let compression = Compression::from_code(compression_code).ok_or_else(|| {
        Error::field(
            "compression",
            FILE_HDR_COMPRESSION_OFF as u64,
            format!("unknown kind {compression_code}"),
        )
    })?;
    check_zero(
        bytes,
        FILE_HDR_RESERVED_OFF,
        FILE_HDR_RESERVED_LEN,
        "reserved",
        0,
    )?;
    let history_count = usize::from(u16_at(bytes, FILE_HDR_HISTORY_COUNT_OFF));
    let dest_count = usize::from(u16_at(bytes, FILE_HDR_DEST_COUNT_OFF));
    let comment_len = usize::from(u16_at(bytes, FILE_HDR_COMMENT_LEN_OFF));
    let source_len = usize::from(u16_at(bytes, FILE_HDR_SOURCE_LEN_OFF));
    let rewind = if flags & FLAG_REWIND != 0 {
        Some(Position {
            timeline: u32_at(bytes, FILE_HDR_REWIND_TIMELINE_OFF),
            epoch: u32_at(bytes, FILE_HDR_REWIND_EPOCH_OFF),
        })
    } else {
        check_zero(
            bytes,
            FILE_HDR_REWIND_TIMELINE_OFF,
            8,
            "rewind position (no rewind flag)",
            0,
        )?;
        None
    };
    let bound = |n: usize, max: usize, field: &'static str, off: usize| {
        if n > max {
            Err(Error::field(
                field,
                off as u64,
                format!("{n}, at most {max} allowed"),
            ))
        } else {
            Ok(())
        }
    };
    bound(
        history_count,
        MAX_HISTORY,
        "history count",
        FILE_HDR_HISTORY_COUNT_OFF,
    )?;
    bound(
        dest_count,
        MAX_DESTINATIONS,
        "destination count",
        FILE_HDR_DEST_COUNT_OFF,
    )?;
    bound(
        comment_len,
        MAX_COMMENT,
        "comment length",
        FILE_HDR_COMMENT_LEN_OFF,
    )?;
    bound(
        source_len,
        MAX_SOURCE,
        "source length",
        FILE_HDR_SOURCE_LEN_OFF,
    )?;

    // The variable part lies between the fixed part and the tag.
    let body = bytes.get(..tag_off).unwrap_or_default();
    let mut r = Reader::new(body, FILE_HEADER_FIXED_LEN, 0, WHAT)
        .declared_by("header length", FILE_HDR_LEN_OFF as u64);
    let mut history = Vec::with_capacity(history_count);
    for _ in 0..history_count {
        history.push(Fork::decode(&r.array()?));
    }
    let comment_at = r.offset();
    let comment = utf8(r.take(comment_len)?, "comment", comment_at)?;
    let mut destinations = Vec::with_capacity(dest_count);
    for _ in 0..dest_count {
        let name_at = r.offset();
        let n = usize::from(r.u8()?);
        if n == 0 {
            return Err(Error::field("destination name", name_at, "empty"));
        }
        destinations.push(utf8(r.take(n)?, "destination name", name_at + 1)?);
    }
    let source_at = r.offset();
    let source = utf8(r.take(source_len)?, "source", source_at)?;
    if r.pos() != tag_off {
        return Err(Error::field(
            "header length",
            FILE_HDR_LEN_OFF as u64,
            format!(
                "declares {len} bytes but its fields end at {} and the tag takes {TAG_LEN}",
                r.pos()
            ),
        ));
    }

    let meta = PacketMeta {
        packet_id: array_at(bytes, FILE_HDR_PACKET_ID_OFF),
        poolset_uuid: array_at(bytes, FILE_HDR_POOLSET_UUID_OFF),
        lineage: array_at(bytes, FILE_HDR_LINEAGE_OFF),
        timeline: u32_at(bytes, FILE_HDR_TIMELINE_OFF),
        history,
        base_epoch: u32_at(bytes, FILE_HDR_BASE_EPOCH_OFF),
        new_epoch: u32_at(bytes, FILE_HDR_NEW_EPOCH_OFF),
        block_size: u32_at(bytes, FILE_HDR_BLOCK_SIZE_OFF),
        range: u64_at(bytes, FILE_HDR_RANGE_START_OFF)..u64_at(bytes, FILE_HDR_RANGE_END_OFF),
        created: u64_at(bytes, FILE_HDR_CREATED_OFF),
        comment,
        destinations,
        source,
        rewind,
        compression,
    };
    if let Some((field, off, problem)) = meta_problem(&meta) {
        return Err(Error::field(field, at(0, off), problem));
    }
    Ok(FileHeader {
        meta,
        part_index: u32_at(bytes, FILE_HDR_PART_INDEX_OFF),
        signed,
        len,
        tag,
        version: u16_at(bytes, FILE_HDR_VERSION_OFF),
    })
}

/// Encodes the header of file `part_index` of the packet `meta`, tagged
/// with `key` (signed) or as a checksum (unsigned).
pub(crate) fn encode_file_header(
    meta: &PacketMeta,
    part_index: u32,
    key: Option<&Key>,
) -> Result<(Vec<u8>, FileHeader), Error> {
    if let Some((field, _, problem)) = meta_problem(meta) {
        return Err(Error::encode(field, problem));
    }
    let tag_off = var_offsets(meta).tag;
    let len = tag_off + TAG_LEN;
    let mut b = vec![0u8; FILE_HEADER_FIXED_LEN];
    put(&mut b, FILE_HDR_MAGIC_OFF, PACKET_MAGIC);
    put_u16(&mut b, FILE_HDR_VERSION_OFF, PACKET_VERSION);
    let mut flags = if key.is_some() { FLAG_SIGNED } else { 0 };
    if let Some(p) = meta.rewind {
        flags |= FLAG_REWIND;
        put_u32(&mut b, FILE_HDR_REWIND_TIMELINE_OFF, p.timeline);
        put_u32(&mut b, FILE_HDR_REWIND_EPOCH_OFF, p.epoch);
    }
    put(&mut b, FILE_HDR_FLAGS_OFF, &[flags]);
    put(&mut b, FILE_HDR_COMPRESSION_OFF, &[meta.compression.code()]);
    // `len` is at most FILE_HEADER_MAX_LEN once meta_problem passed.
    put_u32(&mut b, FILE_HDR_LEN_OFF, len as u32);
    put(&mut b, FILE_HDR_PACKET_ID_OFF, &meta.packet_id);
    put(&mut b, FILE_HDR_POOLSET_UUID_OFF, &meta.poolset_uuid);
    put(&mut b, FILE_HDR_LINEAGE_OFF, &meta.lineage);
    put_u32(&mut b, FILE_HDR_TIMELINE_OFF, meta.timeline);
    put_u32(&mut b, FILE_HDR_PART_INDEX_OFF, part_index);
    put_u32(&mut b, FILE_HDR_BASE_EPOCH_OFF, meta.base_epoch);
    put_u32(&mut b, FILE_HDR_NEW_EPOCH_OFF, meta.new_epoch);
    put_u64(&mut b, FILE_HDR_RANGE_START_OFF, meta.range.start);
    put_u64(&mut b, FILE_HDR_RANGE_END_OFF, meta.range.end);
    put_u64(&mut b, FILE_HDR_CREATED_OFF, meta.created);
    put_u32(&mut b, FILE_HDR_BLOCK_SIZE_OFF, meta.block_size);
    put_u16(
        &mut b,
        FILE_HDR_HISTORY_COUNT_OFF,
        meta.history.len() as u16,
    );
    put_u16(
        &mut b,
        FILE_HDR_DEST_COUNT_OFF,
        meta.destinations.len() as u16,
    );
    put_u16(&mut b, FILE_HDR_COMMENT_LEN_OFF, meta.comment.len() as u16);
    put_u16(&mut b, FILE_HDR_SOURCE_LEN_OFF, meta.source.len() as u16);
    for f in &meta.history {
        b.extend_from_slice(&f.encode());
    }
    b.extend_from_slice(meta.comment.as_bytes());
    for d in &meta.destinations {
        b.push(d.len() as u8);
        b.extend_from_slice(d.as_bytes());
    }
    b.extend_from_slice(meta.source.as_bytes());
    debug_assert_eq!(b.len(), tag_off);
    let tag = Tagger::new(key, DOMAIN_HEADER).update(&b).tag();
    b.extend_from_slice(&tag);
    let header = FileHeader {
        meta: meta.clone(),
        part_index,
        signed: key.is_some(),
        len,
        tag,
        version: PACKET_VERSION,
    };
    Ok((b, header))
}
