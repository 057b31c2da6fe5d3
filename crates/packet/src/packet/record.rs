//! Records: runs of data blocks or of zero blocks (`docs/packet.md`, section 3).

use super::compress::Codec;
use super::header::{check_key, FILE_HDR_FLAGS_OFF};
use super::{data_hash, Compression, FileHeader, MAX_RECORD_DATA};
use crate::bytes::{array_at, at, check_zero, need, put, put_u32, put_u64, u32_at, u64_at, u8_at};
use crate::tag::{tags_equal, Key, Tagger, DOMAIN_RECORD, DOMAIN_RECORD_V1, TAG_LEN};
use crate::Error;

/// Bytes of a record header; the payload follows.
pub const RECORD_HEADER_LEN: usize = 48;
/// Offset of the kind byte.
pub const REC_KIND_OFF: usize = 0;
/// Offset of the compression byte.
pub const REC_COMPRESSION_OFF: usize = 1;
/// Offset of two reserved bytes.
pub const REC_RESERVED_OFF: usize = 2;
/// Offset of the stored payload length (u32).
pub const REC_STORED_LEN_OFF: usize = 4;
/// Offset of the sequence number in the logical packet (u64).
pub const REC_SEQ_OFF: usize = 8;
/// Offset of the logical byte offset of the first block (u64).
pub const REC_OFFSET_OFF: usize = 16;
/// Offset of the block count (u32).
pub const REC_BLOCKS_OFF: usize = 24;
/// Offset of four reserved bytes.
pub const REC_RESERVED2_OFF: usize = 28;
/// Offset of the tag.
pub const REC_TAG_OFF: usize = 32;
/// Kind byte of a data record.
pub const REC_KIND_DATA: u8 = 1;
/// Kind byte of a zero-run record.
pub const REC_KIND_ZERO: u8 = 2;

const _: () = assert!(REC_COMPRESSION_OFF == REC_KIND_OFF + 1);
const _: () = assert!(REC_RESERVED_OFF == REC_COMPRESSION_OFF + 1);
const _: () = assert!(REC_STORED_LEN_OFF == REC_RESERVED_OFF + 2);
const _: () = assert!(REC_SEQ_OFF == REC_STORED_LEN_OFF + 4);
const _: () = assert!(REC_OFFSET_OFF == REC_SEQ_OFF + 8);
const _: () = assert!(REC_BLOCKS_OFF == REC_OFFSET_OFF + 8);
const _: () = assert!(REC_RESERVED2_OFF == REC_BLOCKS_OFF + 4);
const _: () = assert!(REC_TAG_OFF == REC_RESERVED2_OFF + 4);
const _: () = assert!(RECORD_HEADER_LEN == REC_TAG_OFF + TAG_LEN);
// A stored length always fits its u32 field.
const _: () = assert!(MAX_RECORD_DATA <= u32::MAX as usize);

const WHAT: &str = "record";

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Blocks with their bytes: `stored_len` payload bytes follow the
    /// header, compressed with `compression` (the file header's kind) or
    /// not at all.
    Data {
        /// How the payload is stored.
        compression: Compression,
        /// Payload bytes after the header.
        stored_len: u32,
    },
    /// Blocks that are all zero: no payload.
    Zero,
}

/// A decoded record header; its tag is verified with the payload by
/// [`open_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Data or zero run.
    pub kind: RecordKind,
    /// Position in the logical packet, from 0, across all its files.
    pub seq: u64,
    /// Logical byte offset of the first block.
    pub offset: u64,
    /// Number of blocks.
    pub blocks: u32,
    /// The stored tag.
    pub tag: [u8; TAG_LEN],
    /// File offset this header was read from (or written at).
    pub at: u64,
}

impl RecordHeader {
    /// Payload bytes after the header.
    pub fn payload_len(&self) -> usize {
        match self.kind {
            RecordKind::Data { stored_len, .. } => stored_len as usize,
            RecordKind::Zero => 0,
        }
    }

    /// File offset of the payload.
    pub fn payload_offset(&self) -> u64 {
        self.at.saturating_add(RECORD_HEADER_LEN as u64)
    }

    /// Header and payload bytes.
    pub fn encoded_len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.payload_len()) as u64
    }

    /// The logical bytes the record covers.
    pub fn logical_len(&self, block_size: u32) -> u64 {
        u64::from(self.blocks) * u64::from(block_size)
    }

    /// The kind byte.
    pub(crate) fn kind_code(&self) -> u8 {
        match self.kind {
            RecordKind::Data { .. } => REC_KIND_DATA,
            RecordKind::Zero => REC_KIND_ZERO,
        }
    }

    /// The 32 bytes before the tag, as stored.
    pub(crate) fn fixed_bytes(&self) -> [u8; REC_TAG_OFF] {
        let mut b = [0u8; REC_TAG_OFF];
        let (compression, stored) = match self.kind {
            RecordKind::Data {
                compression,
                stored_len,
            } => (compression.code(), stored_len),
            RecordKind::Zero => (0, 0),
        };
        put(&mut b, REC_KIND_OFF, &[self.kind_code(), compression]);
        put_u32(&mut b, REC_STORED_LEN_OFF, stored);
        put_u64(&mut b, REC_SEQ_OFF, self.seq);
        put_u64(&mut b, REC_OFFSET_OFF, self.offset);
        put_u32(&mut b, REC_BLOCKS_OFF, self.blocks);
        b
    }

    /// The whole header, with `tag`.
    pub(crate) fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        put(&mut b, 0, &self.fixed_bytes());
        put(&mut b, REC_TAG_OFF, &self.tag);
        b
    }
}

/// The tag of a record of the file whose header tag is `header_tag`, in
/// the current format: over the plain BLAKE3 hash of its stored payload
/// ([`data_hash`] of the payload; for a payload stored as is, the data
/// hash of the content digest itself, so one pass serves both).
pub(crate) fn record_tag(
    key: Option<&Key>,
    header_tag: &[u8; TAG_LEN],
    record: &RecordHeader,
    payload_hash: &[u8; 32],
) -> [u8; TAG_LEN] {
    Tagger::new(key, DOMAIN_RECORD)
        .update(header_tag)
        .update(&record.fixed_bytes())
        .update(payload_hash)
        .tag()
}

/// The tag of a record in a version 1 file: over the payload itself.
fn record_tag_v1(
    key: Option<&Key>,
    header_tag: &[u8; TAG_LEN],
    record: &RecordHeader,
    payload: &[u8],
) -> [u8; TAG_LEN] {
    Tagger::new(key, DOMAIN_RECORD_V1)
        .update(header_tag)
        .update(&record.fixed_bytes())
        .update(payload)
        .tag()
}

/// Decodes the record header at file offset `at` of a file with `header`
/// and checks its fields against the header (kind, compression, sizes,
/// block alignment, the shipped range). The tag is checked later, with the
/// payload, by [`open_record`].
pub fn decode_record_header(
    bytes: &[u8],
    at_offset: u64,
    header: &FileHeader,
) -> Result<RecordHeader, Error> {
    need(bytes, RECORD_HEADER_LEN, WHAT, at_offset)?;
    let here = |off: usize| at(at_offset, off);
    let kind_code = u8_at(bytes, REC_KIND_OFF);
    let compression_code = u8_at(bytes, REC_COMPRESSION_OFF);
    let stored_len = u32_at(bytes, REC_STORED_LEN_OFF);
    let blocks = u32_at(bytes, REC_BLOCKS_OFF);
    let offset = u64_at(bytes, REC_OFFSET_OFF);
    check_zero(bytes, REC_RESERVED_OFF, 2, "reserved", at_offset)?;
    check_zero(bytes, REC_RESERVED2_OFF, 4, "reserved", at_offset)?;
    let meta = &header.meta;
    let bs = u64::from(meta.block_size);
    if blocks == 0 {
        return Err(Error::field(
            "block count",
            here(REC_BLOCKS_OFF),
            "a record covers at least one block",
        ));
    }
    let logical_len = u64::from(blocks) * bs;
    let kind = match kind_code {
        REC_KIND_DATA => {
            if logical_len > MAX_RECORD_DATA as u64 {
                return Err(Error::field(
                    "block count",
                    here(REC_BLOCKS_OFF),
                    format!(
                        "{blocks} blocks are {logical_len} bytes, a data record holds at most {MAX_RECORD_DATA}"
                    ),
                ));
            }
            let compression = Compression::from_code(compression_code)
                .filter(|c| *c == Compression::None || *c == meta.compression)
                .ok_or_else(|| {
                    Error::field(
                        "compression",
                        here(REC_COMPRESSION_OFF),
                        format!(
                            "kind {compression_code}, the packet uses {} or none",
                            meta.compression.name()
                        ),
                    )
                })?;
            let stored = u64::from(stored_len);
            let fits = match compression {
                Compression::None => stored == logical_len,
                _ => stored > 0 && stored < logical_len,
            };
            if !fits {
                return Err(Error::field(
                    "stored length",
                    here(REC_STORED_LEN_OFF),
                    format!(
                        "{stored_len} bytes for {logical_len} bytes of data stored as {}",
                        compression.name()
                    ),
                ));
            }
            RecordKind::Data {
                compression,
                stored_len,
            }
        }
        REC_KIND_ZERO => {
            if compression_code != 0 {
                return Err(Error::field(
                    "compression",
                    here(REC_COMPRESSION_OFF),
                    "a zero run is not compressed",
                ));
            }
            if stored_len != 0 {
                return Err(Error::field(
                    "stored length",
                    here(REC_STORED_LEN_OFF),
                    "a zero run has no payload",
                ));
            }
            RecordKind::Zero
        }
        other => {
            return Err(Error::field(
                "record kind",
                here(REC_KIND_OFF),
                format!("unknown kind {other}"),
            ))
        }
    };
    let end = offset.checked_add(logical_len);
    if !offset.is_multiple_of(bs) {
        return Err(Error::field(
            "logical offset",
            here(REC_OFFSET_OFF),
            format!("{offset} is not a multiple of the block size {bs}"),
        ));
    }
    if offset < meta.range.start || !matches!(end, Some(e) if e <= meta.range.end) {
        return Err(Error::field(
            "logical offset",
            here(REC_OFFSET_OFF),
            format!(
                "{blocks} blocks at {offset} leave the shipped range {}..{}",
                meta.range.start, meta.range.end
            ),
        ));
    }
    Ok(RecordHeader {
        kind,
        seq: u64_at(bytes, REC_SEQ_OFF),
        offset,
        blocks,
        tag: array_at(bytes, REC_TAG_OFF),
        at: at_offset,
    })
}

/// What an opened record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordBody {
    /// `len` bytes at the start of the output buffer belong at logical
    /// `offset`.
    Data {
        /// Logical offset.
        offset: u64,
        /// Bytes written to the buffer.
        len: usize,
    },
    /// `len` bytes at logical `offset` are zero.
    Zero {
        /// Logical offset.
        offset: u64,
        /// Zero bytes.
        len: u64,
    },
}

/// Verifies a record's tag over its header and `payload`, then decompresses
/// a data record into the start of `out` (which must hold the record's
/// logical length, at most [`MAX_RECORD_DATA`]).
///
/// This checks the record alone; its place in the packet (sequence number,
/// order, position in the file) is [`PacketReader`](super::PacketReader)'s
/// business.
pub fn open_record(
    header: &FileHeader,
    record: &RecordHeader,
    payload: &[u8],
    key: Option<&Key>,
    out: &mut [u8],
) -> Result<RecordBody, Error> {
    open_record_with(
        &mut Codec::default(),
        header,
        record,
        payload,
        key,
        Some(out),
    )
    .map(|(body, _)| body)
}

/// [`open_record`] with a kept decompressor; also returns the hash of the
/// payload when the record was verified through it (a version 2 file), so
/// that a payload stored as is need not be hashed again for the content
/// digest. Without `out`, a payload stored as is is not copied (its data
/// is the payload) and a compressed one is refused as
/// [`Error::BufferTooSmall`].
pub(crate) fn open_record_with(
    codec: &mut Codec,
    header: &FileHeader,
    record: &RecordHeader,
    payload: &[u8],
    key: Option<&Key>,
    out: Option<&mut [u8]>,
) -> Result<(RecordBody, Option<[u8; 32]>), Error> {
    check_key(
        header.signed,
        key,
        "packet file header",
        FILE_HDR_FLAGS_OFF as u64,
    )?;
    if payload.len() != record.payload_len() {
        return Err(Error::Truncated {
            what: "record payload",
            offset: record.payload_offset(),
            needed: record.payload_len() as u64,
            available: payload.len() as u64,
        });
    }
    let (computed, hash) = if header.version == 1 {
        (record_tag_v1(key, &header.tag, record, payload), None)
    } else {
        let hash = data_hash(payload);
        (record_tag(key, &header.tag, record, &hash), Some(hash))
    };
    if !tags_equal(&computed, &record.tag) {
        return Err(Error::BadTag {
            what: WHAT,
            offset: record.at,
            signed: header.signed,
        });
    }
    let len = record.logical_len(header.meta.block_size);
    match record.kind {
        RecordKind::Zero => Ok((
            RecordBody::Zero {
                offset: record.offset,
                len,
            },
            hash,
        )),
        RecordKind::Data { compression, .. } => {
            // At most MAX_RECORD_DATA, checked when the header was decoded.
            let len = len as usize;
            match out {
                None if compression == Compression::None => {}
                None => {
                    return Err(Error::BufferTooSmall {
                        needed: len,
                        len: 0,
                    })
                }
                Some(out) => {
                    let out_len = out.len();
                    let dst = out.get_mut(..len).ok_or(Error::BufferTooSmall {
                        needed: len,
                        len: out_len,
                    })?;
                    codec.decompress(compression, payload, dst, record.payload_offset())?;
                }
            }
            Ok((
                RecordBody::Data {
                    offset: record.offset,
                    len,
                },
                hash,
            ))
        }
    }
}
