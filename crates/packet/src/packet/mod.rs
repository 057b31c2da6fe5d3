//! Physical packet files: file header, records and trailer.
//!
//! A logical packet is split into physical files `FILE`, `FILE_2`, ...
//! ([`part_file_name`]). Each file is a [`FileHeader`], then records (a run
//! of data blocks, possibly compressed, or a run of zero blocks), then a
//! [`Trailer`]. Every structure carries a tag; `docs/packet.md` gives the
//! bytes and the tag scheme.
//!
//! Writing goes through [`PacketEncoder`]; reading a logical packet goes
//! through [`check_parts`] (which files are there) and [`PacketReader`]
//! (every record, in order, verified), or through the single-structure
//! decoders that they are made of.

mod compress;
mod encode;
mod header;
mod parts;
mod read;
mod record;
mod trailer;

pub use encode::{zero_runs, PacketEncoder, PreparedRecord, Run, ZeroRuns};
pub(crate) use header::check_key as check_key_flags;
pub use header::{
    decode_file_header, file_header_len, FileHeader, FILE_HDR_BASE_EPOCH_OFF,
    FILE_HDR_BLOCK_SIZE_OFF, FILE_HDR_COMMENT_LEN_OFF, FILE_HDR_COMPRESSION_OFF,
    FILE_HDR_CREATED_OFF, FILE_HDR_DEST_COUNT_OFF, FILE_HDR_FLAGS_OFF, FILE_HDR_HISTORY_COUNT_OFF,
    FILE_HDR_LEN_OFF, FILE_HDR_LINEAGE_OFF, FILE_HDR_MAGIC_OFF, FILE_HDR_NEW_EPOCH_OFF,
    FILE_HDR_PACKET_ID_OFF, FILE_HDR_PART_INDEX_OFF, FILE_HDR_POOLSET_UUID_OFF,
    FILE_HDR_RANGE_END_OFF, FILE_HDR_RANGE_START_OFF, FILE_HDR_RESERVED_LEN, FILE_HDR_RESERVED_OFF,
    FILE_HDR_REWIND_EPOCH_OFF, FILE_HDR_REWIND_TIMELINE_OFF, FILE_HDR_SOURCE_LEN_OFF,
    FILE_HDR_TIMELINE_OFF, FILE_HDR_VERSION_OFF, FILE_HEADER_FIXED_LEN, FILE_HEADER_MAX_LEN,
    FLAG_REWIND, FLAG_SIGNED, OLDEST_PACKET_VERSION, PACKET_MAGIC, PACKET_VERSION,
};
pub use parts::{check_parts, Part, PartProblem, PartsReport};
pub use read::{verify_slices, PacketReader};
pub use record::{
    decode_record_header, open_record, RecordBody, RecordHeader, RecordKind, RECORD_HEADER_LEN,
    REC_BLOCKS_OFF, REC_COMPRESSION_OFF, REC_KIND_DATA, REC_KIND_OFF, REC_KIND_ZERO,
    REC_OFFSET_OFF, REC_RESERVED2_OFF, REC_RESERVED_OFF, REC_SEQ_OFF, REC_STORED_LEN_OFF,
    REC_TAG_OFF,
};
pub use trailer::{
    decode_trailer, Trailer, TRAILER_FLAG_LAST, TRAILER_LEN, TRAILER_MAGIC, TRL_DATA_BLOCKS_OFF,
    TRL_DIGEST_OFF, TRL_FIRST_SEQ_OFF, TRL_FLAGS_OFF, TRL_MAGIC_OFF, TRL_RECORD_COUNT_OFF,
    TRL_RESERVED_OFF, TRL_TAG_OFF, TRL_TOTAL_FILES_OFF, TRL_TOTAL_RECORDS_OFF, TRL_ZERO_BLOCKS_OFF,
};

use std::ops::Range;

use crate::tag::{Tagger, DOMAIN_CONTENT};
use crate::timeline::{Fork, Position};

/// The largest uncompressed payload of one data record: 1 MiB.
pub const MAX_RECORD_DATA: usize = 1 << 20;
/// The longest comment a packet may carry, in bytes of UTF-8.
pub const MAX_COMMENT: usize = 4096;
/// The most destination names a packet may carry.
pub const MAX_DESTINATIONS: usize = 64;
/// The longest destination name, in bytes of UTF-8.
pub const MAX_NAME: usize = 255;
/// The longest source (the exporter's pool set file), in bytes of UTF-8.
pub const MAX_SOURCE: usize = 4096;
/// The smallest block size.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// The largest block size.
pub const MAX_BLOCK_SIZE: u32 = 64 * 1024;
/// The zstd level the encoder uses.
pub const ZSTD_LEVEL: i32 = 3;

/// How record payloads are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Stored as is.
    #[default]
    None,
    /// A zstd frame.
    Zstd,
    /// An LZ4 block (no frame, no size prefix).
    Lz4,
}

impl Compression {
    /// The byte stored in file headers and records.
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
            Compression::Lz4 => 2,
        }
    }

    /// The compression a stored byte stands for.
    pub fn from_code(code: u8) -> Option<Compression> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            2 => Some(Compression::Lz4),
            _ => None,
        }
    }

    /// The name used in option values and messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        }
    }
}

/// What every file of one logical packet says about the packet: the same in
/// all its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketMeta {
    /// 16 random bytes chosen by the exporter for this logical packet.
    pub packet_id: [u8; 16],
    /// The pool set UUID of the pool.
    pub poolset_uuid: [u8; 16],
    /// The lineage: a random id of the pool's replication history.
    pub lineage: [u8; 16],
    /// The exporter's timeline.
    pub timeline: u32,
    /// The canonical history of `timeline` (see [`crate::timeline`]).
    pub history: Vec<Fork>,
    /// Destinations at this epoch (on this history) can apply the packet.
    pub base_epoch: u32,
    /// The epoch the packet brings them to.
    pub new_epoch: u32,
    /// Bytes per block, a power of two from [`MIN_BLOCK_SIZE`] to [`MAX_BLOCK_SIZE`].
    pub block_size: u32,
    /// The replicated logical byte range, block aligned and not empty.
    pub range: Range<u64>,
    /// Creation time, seconds since the Unix epoch (supplied by the caller).
    pub created: u64,
    /// Free text, at most [`MAX_COMMENT`] bytes.
    pub comment: String,
    /// Names of the destinations the packet is meant for, at most
    /// [`MAX_DESTINATIONS`], each 1 to [`MAX_NAME`] bytes.
    pub destinations: Vec<String>,
    /// The exporter's pool set file as the exporter named it (at most
    /// [`MAX_SOURCE`] bytes), so that an importer can print the command
    /// that fills a gap; informational, never trusted for anything else.
    pub source: String,
    /// For a packet that honours a rewind request: the position (timeline
    /// and epoch) of the destination that asked, which may apply it over
    /// the blocks it changed locally or after a fork, since the packet
    /// carries them all.
    pub rewind: Option<Position>,
    /// The compression the exporter used; a record is stored either this
    /// way or uncompressed.
    pub compression: Compression,
}

/// What a whole logical packet amounts to: written by [`PacketEncoder::finish`]
/// into the last trailer and recomputed by [`PacketReader::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketSummary {
    /// Physical files.
    pub files: u32,
    /// Records in all files.
    pub records: u64,
    /// Blocks carried with their bytes.
    pub data_blocks: u64,
    /// Blocks recorded as zero runs.
    pub zero_blocks: u64,
    /// The content digest: what the applied-packet log of a state file
    /// keeps, so that a replay of a packet id with other content is noticed.
    pub content_digest: [u8; 32],
}

/// The name of physical file `part_index` (0-based) of a packet named
/// `base`: `base` itself, then `base_2`, `base_3`, ... as MultiSite names
/// the parts of a split packet.
///
/// ```
/// use poolsync_packet::part_file_name;
/// assert_eq!(part_file_name("pkt", 0), "pkt");
/// assert_eq!(part_file_name("pkt", 1), "pkt_2");
/// ```
pub fn part_file_name(base: &str, part_index: u32) -> String {
    if part_index == 0 {
        base.to_owned()
    } else {
        format!("{base}_{}", u64::from(part_index) + 1)
    }
}

/// The running content digest of a logical packet.
///
/// BLAKE3 (never keyed, so that the digest does not depend on the key) over
/// the domain string, the packet's identity (packet id, pool set UUID,
/// lineage, timeline, base and new epoch, block size, range), then for each
/// record in sequence order its kind byte, logical offset and block count
/// and, for a data record, the BLAKE3 hash of its uncompressed bytes. It
/// depends neither on how the packet was split into files nor on
/// compression.
#[derive(Debug)]
pub(crate) struct ContentDigest(Tagger);

/// Plain BLAKE3 of `data`: a data record's uncompressed bytes in the
/// content digest, and a record's stored payload under its tag.
pub(crate) fn data_hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

impl ContentDigest {
    pub(crate) fn new(meta: &PacketMeta) -> Self {
        let mut t = Tagger::new(None, DOMAIN_CONTENT);
        t.update(&meta.packet_id)
            .update(&meta.poolset_uuid)
            .update(&meta.lineage)
            .update(&meta.timeline.to_le_bytes())
            .update(&meta.base_epoch.to_le_bytes())
            .update(&meta.new_epoch.to_le_bytes())
            .update(&meta.block_size.to_le_bytes())
            .update(&meta.range.start.to_le_bytes())
            .update(&meta.range.end.to_le_bytes());
        ContentDigest(t)
    }

    /// Adds a record; `data_hash` is the BLAKE3 hash of a data record's
    /// uncompressed bytes ([`data_hash`]).
    pub(crate) fn add(&mut self, kind: u8, offset: u64, blocks: u32, data_hash: Option<&[u8; 32]>) {
        self.0
            .update(&[kind])
            .update(&offset.to_le_bytes())
            .update(&blocks.to_le_bytes());
        if let Some(h) = data_hash {
            self.0.update(h);
        }
    }

    pub(crate) fn finish(&self) -> [u8; 32] {
        self.0.digest()
    }
}
