//! The libpmemobj 1.12 heap, read-only: which logical ranges of an obj pool
//! are *live*.
//!
//! Replicas of a healthy, used pool are not byte-identical: libpmemobj never
//! replicates the descriptor's volatile area, free heap space, chunk footers
//! or anything written without a persist. Verification therefore compares
//! replicas only on live ranges: the persistent descriptor, the lanes, the
//! heap header, every zone header, the chunk headers libpmemobj reads, the
//! header and bitmap of every run, and every allocated object together with
//! its allocation header. [`walk`] computes them from the master's metadata;
//! [`walk_visit`] streams them for pools with very many objects.
//!
//! The walker does no I/O. It asks a read callback for the bytes at logical
//! offsets, never outside `[0, pool_size)`, and refuses metadata that
//! libpmemobj would not have written (an [`Error::HeapCorrupt`] naming the
//! zone, chunk, field and offset) instead of following it. Memory is bounded:
//! one zone's chunk headers (at most 512 KiB), a 64 KiB read window and a
//! 4 KiB bitmap buffer, plus the result in [`walk`], which holds one range per
//! object.
//!
//! `docs/format.md` ("libpmemobj heap (for verification)") describes the
//! layout; the constants below mirror it.

use std::fmt;

use crate::bytes::{array, put, put_u16, put_u32, put_u64, u16_le, u32_le, u64_le};
use crate::obj::{
    HeapHeader, ObjDescriptor, CHUNK_HEADER_SIZE, HEAP_CHUNKSIZE, HEAP_CHUNKS_PER_ZONE,
    HEAP_HDR_SIZE, HEAP_MIN_SIZE, LANE_SIZE, OBJ_DESC_LEN, OBJ_DESC_OFF, OBJ_DESC_PERSISTENT_LEN,
    ZONE_HEADER_SIZE, ZONE_METADATA_SIZE,
};
use crate::Error;

/// `magic` of an initialised zone header; 0 means the zone is unused.
pub const ZONE_MAGIC: u32 = 0xC3F0_A2D2;
/// Zone-header offset of `magic`.
pub const ZONE_HDR_MAGIC_OFF: usize = 0;
/// Zone-header offset of `size_idx`, the number of chunks in the zone.
pub const ZONE_HDR_SIZE_IDX_OFF: usize = 4;
/// Zone-header offset of the reserved bytes.
pub const ZONE_HDR_RESERVED_OFF: usize = 8;
/// Length of the reserved bytes.
pub const ZONE_HDR_RESERVED_LEN: usize = 56;
/// Size of a whole zone: metadata and the largest number of chunks.
pub const ZONE_MAX_SIZE: u64 = ZONE_METADATA_SIZE + HEAP_CHUNKS_PER_ZONE * HEAP_CHUNKSIZE;
/// Size of the smallest zone: metadata and one chunk.
pub const ZONE_MIN_SIZE: u64 = ZONE_METADATA_SIZE + HEAP_CHUNKSIZE;

const _: () = assert!(ZONE_HDR_SIZE_IDX_OFF == ZONE_HDR_MAGIC_OFF + 4);
const _: () = assert!(ZONE_HDR_RESERVED_OFF == ZONE_HDR_SIZE_IDX_OFF + 4);
const _: () = assert!(ZONE_HEADER_SIZE == (ZONE_HDR_RESERVED_OFF + ZONE_HDR_RESERVED_LEN) as u64);
const _: () = assert!(HEAP_MIN_SIZE == HEAP_HDR_SIZE as u64 + ZONE_METADATA_SIZE + ZONE_MIN_SIZE);
const _: () = assert!(ZONE_MAX_SIZE == 17_178_296_320);

/// Chunk-header offset of `type`.
pub const CHUNK_HDR_TYPE_OFF: usize = 0;
/// Chunk-header offset of `flags`.
pub const CHUNK_HDR_FLAGS_OFF: usize = 2;
/// Chunk-header offset of `size_idx`.
pub const CHUNK_HDR_SIZE_IDX_OFF: usize = 4;

const _: () = assert!(CHUNK_HDR_FLAGS_OFF == CHUNK_HDR_TYPE_OFF + 2);
const _: () = assert!(CHUNK_HDR_SIZE_IDX_OFF == CHUNK_HDR_FLAGS_OFF + 2);
const _: () = assert!(CHUNK_HEADER_SIZE == CHUNK_HDR_SIZE_IDX_OFF as u64 + 4);

/// Chunk type of a footer: the last header of a multi-chunk free or used
/// block, rebuilt at every start and never persisted.
pub const CHUNK_TYPE_FOOTER: u16 = 1;
/// Chunk type of the first chunk of a free block.
pub const CHUNK_TYPE_FREE: u16 = 2;
/// Chunk type of the first chunk of a used block (one "huge" object).
pub const CHUNK_TYPE_USED: u16 = 3;
/// Chunk type of the first chunk of a run (small objects).
pub const CHUNK_TYPE_RUN: u16 = 4;
/// Chunk type of every further chunk of a run; its `size_idx` is its
/// distance from the run's first chunk.
pub const CHUNK_TYPE_RUN_DATA: u16 = 5;

/// Objects carry a 16-byte compact allocation header.
pub const CHUNK_FLAG_COMPACT_HEADER: u16 = 0x0001;
/// Objects carry no allocation header (checked after the compact flag).
pub const CHUNK_FLAG_HEADER_NONE: u16 = 0x0002;
/// The run's objects are aligned to the run header's `alignment`.
pub const CHUNK_FLAG_ALIGNED: u16 = 0x0004;
/// The run's bitmap is sized to the run (else a fixed 304 bytes).
pub const CHUNK_FLAG_FLEX_BITMAP: u16 = 0x0008;
/// Every flag libpmemobj 1.12 knows; others make the heap invalid.
pub const CHUNK_FLAGS_ALL: u16 = CHUNK_FLAG_COMPACT_HEADER
    | CHUNK_FLAG_HEADER_NONE
    | CHUNK_FLAG_ALIGNED
    | CHUNK_FLAG_FLEX_BITMAP;

/// Size of a run header: `block_size` u64, `alignment` u64.
pub const RUN_HEADER_SIZE: u64 = 16;
/// Run-header offset of `block_size`.
pub const RUN_HDR_BLOCK_SIZE_OFF: usize = 0;
/// Run-header offset of `alignment`.
pub const RUN_HDR_ALIGNMENT_OFF: usize = 8;
/// Bits in one bitmap value.
pub const RUN_BITS_PER_VALUE: u64 = 64;
/// Size of the fixed bitmap of runs without [`CHUNK_FLAG_FLEX_BITMAP`]:
/// 40 eight-byte words of run metadata minus the 2 of the run header.
pub const RUN_DEFAULT_BITMAP_SIZE: u64 = 304;
/// Bits of the fixed bitmap.
pub const RUN_DEFAULT_BITMAP_NBITS: u64 = RUN_DEFAULT_BITMAP_SIZE * 8;
/// A flexible bitmap is padded so that the header and bitmap together fill
/// whole cache lines (64 bytes on x86-64, AArch64 and RISC-V 64).
pub const RUN_FLEX_ALIGN: u64 = 64;

const _: () = assert!(RUN_HDR_ALIGNMENT_OFF == RUN_HDR_BLOCK_SIZE_OFF + 8);
const _: () = assert!(RUN_HEADER_SIZE == RUN_HDR_ALIGNMENT_OFF as u64 + 8);
const _: () = assert!(RUN_HEADER_SIZE + RUN_DEFAULT_BITMAP_SIZE == 40 * 8);
const _: () = assert!(RUN_DEFAULT_BITMAP_NBITS == 38 * RUN_BITS_PER_VALUE);

/// Size of a compact allocation header: `size` u64 (flags in the top 16
/// bits), `extra` u64 (the type number).
pub const ALLOC_HDR_COMPACT_SIZE: u64 = 16;
/// Size of a legacy allocation header.
pub const ALLOC_HDR_LEGACY_SIZE: u64 = 64;
/// Offset of `size` in a legacy allocation header.
pub const ALLOC_HDR_LEGACY_SIZE_OFF: usize = 8;
/// Offset of `type_num` in a legacy allocation header.
pub const ALLOC_HDR_LEGACY_TYPE_OFF: usize = 56;
/// Mask of the size bits of an allocation header's `size` field.
pub const ALLOC_HDR_SIZE_MASK: u64 = (1 << 48) - 1;

/// Bytes the walker reads ahead when it looks at allocation headers.
const WINDOW: usize = 64 * 1024;
/// Bitmap bytes read at once.
const BITMAP_BLOCK: usize = 4096;

// ---------------------------------------------------------------------------
// Codecs of the fixed-size structures.

/// A zone header (64 bytes at the start of each zone), decoded without
/// judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneHeader {
    /// [`ZONE_MAGIC`] once libpmemobj has initialised the zone, else 0.
    pub magic: u32,
    /// Number of chunks in the zone.
    pub size_idx: u32,
    /// Zero.
    pub reserved: [u8; ZONE_HDR_RESERVED_LEN],
}

impl ZoneHeader {
    /// Decodes the first 64 bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<ZoneHeader, Error> {
        let b = bytes
            .get(..ZONE_HEADER_SIZE as usize)
            .ok_or(Error::ShortBuffer {
                what: "zone header",
                len: bytes.len(),
                expected: ZONE_HEADER_SIZE as usize,
            })?;
        Ok(ZoneHeader {
            magic: u32_le(b, ZONE_HDR_MAGIC_OFF),
            size_idx: u32_le(b, ZONE_HDR_SIZE_IDX_OFF),
            reserved: array(b, ZONE_HDR_RESERVED_OFF),
        })
    }

    /// Encodes the 64 bytes.
    pub fn encode(&self) -> [u8; ZONE_HEADER_SIZE as usize] {
        let mut b = [0u8; ZONE_HEADER_SIZE as usize];
        put_u32(&mut b, ZONE_HDR_MAGIC_OFF, self.magic);
        put_u32(&mut b, ZONE_HDR_SIZE_IDX_OFF, self.size_idx);
        put(&mut b, ZONE_HDR_RESERVED_OFF, &self.reserved);
        b
    }
}

/// A chunk header (8 bytes in the zone's header array), decoded without
/// judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// One of the `CHUNK_TYPE_*` values.
    pub kind: u16,
    /// `CHUNK_FLAG_*` bits.
    pub flags: u16,
    /// Chunks in the block (for `RUN_DATA`: distance from the run's start).
    pub size_idx: u32,
}

impl ChunkHeader {
    /// Decodes the first 8 bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<ChunkHeader, Error> {
        let b = bytes
            .get(..CHUNK_HEADER_SIZE as usize)
            .ok_or(Error::ShortBuffer {
                what: "chunk header",
                len: bytes.len(),
                expected: CHUNK_HEADER_SIZE as usize,
            })?;
        Ok(ChunkHeader::from_bytes(b))
    }

    /// Decodes from a slice known to hold 8 bytes (zeros otherwise).
    fn from_bytes(b: &[u8]) -> ChunkHeader {
        ChunkHeader {
            kind: u16_le(b, CHUNK_HDR_TYPE_OFF),
            flags: u16_le(b, CHUNK_HDR_FLAGS_OFF),
            size_idx: u32_le(b, CHUNK_HDR_SIZE_IDX_OFF),
        }
    }

    /// Encodes the 8 bytes.
    pub fn encode(&self) -> [u8; CHUNK_HEADER_SIZE as usize] {
        let mut b = [0u8; CHUNK_HEADER_SIZE as usize];
        put_u16(&mut b, CHUNK_HDR_TYPE_OFF, self.kind);
        put_u16(&mut b, CHUNK_HDR_FLAGS_OFF, self.flags);
        put_u32(&mut b, CHUNK_HDR_SIZE_IDX_OFF, self.size_idx);
        b
    }

    /// The allocation header of the objects in this chunk, from its flags.
    pub fn alloc_header(&self) -> AllocHeaderKind {
        AllocHeaderKind::from_flags(self.flags)
    }
}

/// A run header (16 bytes at the start of a run's first chunk), followed by
/// the run's bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunHeader {
    /// Size of one unit of the run.
    pub block_size: u64,
    /// Alignment of the objects' user data, 0 for none.
    pub alignment: u64,
}

impl RunHeader {
    /// Decodes the first 16 bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<RunHeader, Error> {
        let b = bytes
            .get(..RUN_HEADER_SIZE as usize)
            .ok_or(Error::ShortBuffer {
                what: "run header",
                len: bytes.len(),
                expected: RUN_HEADER_SIZE as usize,
            })?;
        Ok(RunHeader {
            block_size: u64_le(b, RUN_HDR_BLOCK_SIZE_OFF),
            alignment: u64_le(b, RUN_HDR_ALIGNMENT_OFF),
        })
    }

    /// Encodes the 16 bytes.
    pub fn encode(&self) -> [u8; RUN_HEADER_SIZE as usize] {
        let mut b = [0u8; RUN_HEADER_SIZE as usize];
        put_u64(&mut b, RUN_HDR_BLOCK_SIZE_OFF, self.block_size);
        put_u64(&mut b, RUN_HDR_ALIGNMENT_OFF, self.alignment);
        b
    }
}

/// Which allocation header precedes every object of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocHeaderKind {
    /// 64 bytes: unused 8, `size` u64, unused 32, `root_size` u64 (flags in
    /// the top 16 bits), `type_num` u64.
    Legacy,
    /// 16 bytes: `size` u64 (flags in the top 16 bits), `extra` u64.
    Compact,
    /// No header; every object is one unit.
    None,
}

impl AllocHeaderKind {
    /// The kind selected by chunk flags: compact wins over none, neither
    /// means legacy.
    pub fn from_flags(flags: u16) -> AllocHeaderKind {
        if flags & CHUNK_FLAG_COMPACT_HEADER != 0 {
            AllocHeaderKind::Compact
        } else if flags & CHUNK_FLAG_HEADER_NONE != 0 {
            AllocHeaderKind::None
        } else {
            AllocHeaderKind::Legacy
        }
    }

    /// Size of the header in bytes.
    pub fn size(self) -> u64 {
        match self {
            AllocHeaderKind::Legacy => ALLOC_HDR_LEGACY_SIZE,
            AllocHeaderKind::Compact => ALLOC_HDR_COMPACT_SIZE,
            AllocHeaderKind::None => 0,
        }
    }

    /// Encodes a header recording `size` bytes (header included), `flags`
    /// and a type number, as libpmemobj writes it.
    pub fn encode(self, size: u64, flags: u16, type_num: u64) -> Vec<u8> {
        let mut b = vec![0u8; self.size() as usize];
        let tagged = (size & ALLOC_HDR_SIZE_MASK) | (u64::from(flags) << 48);
        match self {
            AllocHeaderKind::Compact => {
                put_u64(&mut b, 0, tagged);
                put_u64(&mut b, 8, type_num);
            }
            AllocHeaderKind::Legacy => {
                put_u64(&mut b, ALLOC_HDR_LEGACY_SIZE_OFF, size);
                put_u64(&mut b, 48, u64::from(flags) << 48);
                put_u64(&mut b, ALLOC_HDR_LEGACY_TYPE_OFF, type_num);
            }
            AllocHeaderKind::None => {}
        }
        b
    }

    /// The size recorded in a header's bytes (header included), as
    /// libpmemobj reads it; `None` for headerless objects.
    pub fn decode_size(self, bytes: &[u8]) -> Option<u64> {
        match self {
            AllocHeaderKind::Compact => Some(u64_le(bytes, 0) & ALLOC_HDR_SIZE_MASK),
            AllocHeaderKind::Legacy => Some(u64_le(bytes, ALLOC_HDR_LEGACY_SIZE_OFF)),
            AllocHeaderKind::None => None,
        }
    }
}

/// The geometry of a run's bitmap, computed as libpmemobj does from the
/// chunk header and the run header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunBitmap {
    /// Units in the run: bit `i` set means unit `i` is allocated.
    pub nbits: u64,
    /// 64-bit values that hold those bits.
    pub nvalues: u64,
    /// Bytes reserved for the bitmap after the run header, padding included.
    pub size: u64,
}

impl RunBitmap {
    /// The bitmap of a run of `size_idx` chunks with these chunk `flags`,
    /// unit size and run-header alignment; `None` when libpmemobj could not
    /// have built such a run (zero chunks or unit size, no unit at all, or
    /// more units than its 32-bit counters hold).
    ///
    /// libpmemobj reserves one unit when the run header's `alignment` is
    /// non-zero, whatever the chunk flags say.
    pub fn compute(
        size_idx: u32,
        flags: u16,
        block_size: u64,
        alignment: u64,
    ) -> Option<RunBitmap> {
        if size_idx == 0 || block_size == 0 {
            return None;
        }
        let reserve = u64::from(alignment != 0);
        let chunks = u64::from(size_idx);
        let (nbits, nvalues, size) = if flags & CHUNK_FLAG_FLEX_BITMAP != 0 {
            let content = (HEAP_CHUNKSIZE - RUN_HEADER_SIZE) + (chunks - 1) * HEAP_CHUNKSIZE;
            let first_guess = content / block_size;
            let values = first_guess.div_ceil(RUN_BITS_PER_VALUE);
            let per_line = RUN_FLEX_ALIGN / 8;
            let header_values = RUN_HEADER_SIZE / 8;
            let padded = (values + header_values).div_ceil(per_line) * per_line - header_values;
            let size = padded * 8;
            let nbits = content.checked_sub(size)? / block_size;
            let nbits = nbits.checked_sub(reserve)?;
            let unused_values =
                (padded * RUN_BITS_PER_VALUE).checked_sub(nbits)? / RUN_BITS_PER_VALUE;
            (nbits, padded - unused_values, size)
        } else {
            let default_size = HEAP_CHUNKSIZE - RUN_HEADER_SIZE - RUN_DEFAULT_BITMAP_SIZE;
            let run_bytes = |chunks: u64| default_size + (chunks - 1) * HEAP_CHUNKSIZE;
            let mut nallocs = run_bytes(chunks) / block_size;
            if nallocs > RUN_DEFAULT_BITMAP_NBITS {
                // libpmemobj drops chunks one by one until the units fit the
                // fixed bitmap, and caps a single chunk at its bit count:
                // take the largest run whose bytes stay below one more unit.
                let limit = (RUN_DEFAULT_BITMAP_NBITS + 1) * block_size - 1;
                nallocs = match limit.checked_sub(default_size) {
                    Some(extra) => run_bytes(extra / HEAP_CHUNKSIZE + 1) / block_size,
                    None => RUN_DEFAULT_BITMAP_NBITS,
                };
            }
            let nbits = nallocs.checked_sub(reserve)?;
            let unused_values = (RUN_DEFAULT_BITMAP_NBITS - nbits) / RUN_BITS_PER_VALUE;
            (
                nbits,
                RUN_DEFAULT_BITMAP_SIZE / 8 - unused_values,
                RUN_DEFAULT_BITMAP_SIZE,
            )
        };
        if nbits == 0 || nbits > u64::from(u32::MAX) {
            return None;
        }
        Some(RunBitmap {
            nbits,
            nvalues,
            size,
        })
    }
}

/// Number of zones libpmemobj lays out in a mapped heap of `heap_len` bytes
/// (heap header included).
pub fn zone_count(heap_len: u64) -> u64 {
    let Some(mut rest) = heap_len.checked_sub(HEAP_HDR_SIZE as u64) else {
        return 0;
    };
    // Every zone but the last is full-sized, so this is a division.
    let full = rest / ZONE_MAX_SIZE;
    rest -= full * ZONE_MAX_SIZE;
    if rest >= ZONE_MIN_SIZE {
        full + 1
    } else {
        full
    }
}

/// Logical offset of zone `zone` of a heap at `heap_offset` (`None` on overflow).
pub fn zone_offset(heap_offset: u64, zone: u64) -> Option<u64> {
    zone.checked_mul(ZONE_MAX_SIZE)?
        .checked_add(heap_offset)?
        .checked_add(HEAP_HDR_SIZE as u64)
}

// ---------------------------------------------------------------------------
// Results.

/// Where in the heap a problem lies, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeapSite {
    /// The pool descriptor's lane, heap and root fields.
    Descriptor,
    /// The heap header.
    HeapHeader,
    /// A zone header.
    Zone {
        /// Zone index.
        zone: u32,
    },
    /// A chunk header or a chunk's contents.
    Chunk {
        /// Zone index.
        zone: u32,
        /// Chunk index in the zone.
        chunk: u32,
    },
    /// A unit of a run.
    Unit {
        /// Zone index.
        zone: u32,
        /// Chunk index of the run's first chunk.
        chunk: u32,
        /// Unit index in the run.
        unit: u64,
    },
}

impl fmt::Display for HeapSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeapSite::Descriptor => f.write_str("pool descriptor"),
            HeapSite::HeapHeader => f.write_str("heap header"),
            HeapSite::Zone { zone } => write!(f, "zone {zone}"),
            HeapSite::Chunk { zone, chunk } => write!(f, "zone {zone} chunk {chunk}"),
            HeapSite::Unit { zone, chunk, unit } => {
                write!(f, "zone {zone} chunk {chunk} unit {unit}")
            }
        }
    }
}

/// What a live range is, as [`walk`] reports it. Adjacent ranges merge only
/// for lanes (one range) and chunk headers (one range per contiguous group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The persistent pool descriptor, logical `0x1000..0x1A20`.
    Descriptor,
    /// All lanes; lane `n` starts at the range's offset plus `n × 3072`.
    Lanes,
    /// The 1024-byte heap header.
    HeapHeader,
    /// A zone header (64 bytes), initialised or not.
    ZoneHeader {
        /// Zone index.
        zone: u32,
    },
    /// Consecutive chunk headers of a zone that libpmemobj reads: the first
    /// header of every block and all headers of every run.
    ChunkHeaders {
        /// Zone index.
        zone: u32,
        /// Chunk whose header starts the range.
        first: u32,
    },
    /// A run's header and bitmap (padding included).
    RunMetadata {
        /// Zone index.
        zone: u32,
        /// First chunk of the run.
        chunk: u32,
    },
    /// An allocated object: its allocation header and usable bytes.
    Object {
        /// Zone index.
        zone: u32,
        /// First chunk of the run or used block holding it.
        chunk: u32,
        /// Pool offset of the user data (what a `PMEMoid` holds).
        offset: u64,
        /// Usable size, as `pmemobj_alloc_usable_size` reports it.
        size: u64,
    },
}

impl Owner {
    /// Whether a range of `next` that starts where a range of `self` ends
    /// belongs to the same merged range.
    fn absorbs(&self, next: &Owner) -> bool {
        matches!(
            (self, next),
            (Owner::ChunkHeaders { zone: a, .. }, Owner::ChunkHeaders { zone: b, .. }) if a == b
        )
    }
}

/// A live range of logical offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LiveRange {
    /// First logical offset.
    pub offset: u64,
    /// Length in bytes (never 0).
    pub len: u64,
    /// What the bytes are.
    pub owner: Owner,
}

impl LiveRange {
    /// One past the last offset.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    /// Whether `offset` lies inside.
    pub fn contains(&self, offset: u64) -> bool {
        offset >= self.offset && offset < self.end()
    }

    /// What the byte at `offset` belongs to, `None` if it lies outside.
    pub fn place_of(&self, offset: u64) -> Option<Place> {
        if !self.contains(offset) {
            return None;
        }
        let rel = offset - self.offset;
        Some(match self.owner {
            Owner::Descriptor => Place::Descriptor,
            Owner::Lanes => Place::Lane(rel / LANE_SIZE),
            Owner::HeapHeader => Place::HeapHeader,
            Owner::ZoneHeader { zone } => Place::ZoneHeader { zone },
            Owner::ChunkHeaders { zone, first } => Place::ChunkHeader {
                zone,
                chunk: u32::try_from(u64::from(first) + rel / CHUNK_HEADER_SIZE)
                    .unwrap_or(u32::MAX),
            },
            Owner::RunMetadata { zone, chunk } if rel < RUN_HEADER_SIZE => {
                Place::RunHeader { zone, chunk }
            }
            Owner::RunMetadata { zone, chunk } => Place::RunBitmap { zone, chunk },
            Owner::Object {
                zone,
                chunk,
                offset: user,
                size,
            } => {
                if offset < user {
                    Place::AllocationHeader {
                        zone,
                        chunk,
                        offset: user,
                        size,
                    }
                } else {
                    Place::Object {
                        zone,
                        chunk,
                        offset: user,
                        size,
                    }
                }
            }
        })
    }
}

/// What one live byte belongs to ([`LiveMap::owner_of`]); its `Display` is
/// the wording of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// The persistent pool descriptor.
    Descriptor,
    /// Lane `n`.
    Lane(u64),
    /// The heap header.
    HeapHeader,
    /// A zone header.
    ZoneHeader {
        /// Zone index.
        zone: u32,
    },
    /// A chunk header.
    ChunkHeader {
        /// Zone index.
        zone: u32,
        /// Chunk index.
        chunk: u32,
    },
    /// The 16-byte header of a run.
    RunHeader {
        /// Zone index.
        zone: u32,
        /// First chunk of the run.
        chunk: u32,
    },
    /// A run's bitmap.
    RunBitmap {
        /// Zone index.
        zone: u32,
        /// First chunk of the run.
        chunk: u32,
    },
    /// The allocation header in front of an object.
    AllocationHeader {
        /// Zone index.
        zone: u32,
        /// First chunk of the run or used block.
        chunk: u32,
        /// Pool offset of the object's user data.
        offset: u64,
        /// Usable size of the object.
        size: u64,
    },
    /// The user data of an object.
    Object {
        /// Zone index.
        zone: u32,
        /// First chunk of the run or used block.
        chunk: u32,
        /// Pool offset of the object's user data.
        offset: u64,
        /// Usable size of the object.
        size: u64,
    },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Descriptor => f.write_str("pool descriptor"),
            Place::Lane(n) => write!(f, "lane {n}"),
            Place::HeapHeader => f.write_str("heap header"),
            Place::ZoneHeader { zone } => write!(f, "zone {zone} header"),
            Place::ChunkHeader { zone, chunk } => write!(f, "zone {zone} chunk {chunk} header"),
            Place::RunHeader { zone, chunk } => write!(f, "zone {zone} chunk {chunk} run header"),
            Place::RunBitmap { zone, chunk } => write!(f, "zone {zone} chunk {chunk} run bitmap"),
            Place::AllocationHeader {
                zone,
                chunk,
                offset,
                size,
            } => write!(
                f,
                "allocation header of the object at offset {offset:#x} of size {size} (zone {zone} chunk {chunk})"
            ),
            Place::Object {
                zone,
                chunk,
                offset,
                size,
            } => write!(
                f,
                "object at offset {offset:#x} of size {size} (zone {zone} chunk {chunk})"
            ),
        }
    }
}

/// Counts gathered during a walk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Zones laid out in the heap.
    pub zones: u64,
    /// Zones with a valid magic.
    pub initialised_zones: u64,
    /// Chunks in free blocks.
    pub free_chunks: u64,
    /// Chunks in used blocks.
    pub used_chunks: u64,
    /// Chunks in runs.
    pub run_chunks: u64,
    /// Runs.
    pub runs: u64,
    /// Allocated objects, in runs and used blocks.
    pub objects: u64,
    /// Sum of the objects' usable sizes.
    pub object_bytes: u64,
    /// Sum of all live range lengths.
    pub live_bytes: u64,
}

/// The live ranges of a pool: sorted, non-overlapping, adjacent ranges of
/// the same lanes or chunk-header group merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMap {
    ranges: Vec<LiveRange>,
    stats: HeapStats,
}

impl LiveMap {
    /// The ranges in ascending order.
    pub fn ranges(&self) -> &[LiveRange] {
        &self.ranges
    }

    /// Counts of the walk.
    pub fn stats(&self) -> &HeapStats {
        &self.stats
    }

    /// The range holding `offset`.
    pub fn range_at(&self, offset: u64) -> Option<&LiveRange> {
        let i = self.ranges.partition_point(|r| r.end() <= offset);
        self.ranges.get(i).filter(|r| r.contains(offset))
    }

    /// Whether the byte at `offset` is live.
    pub fn is_live(&self, offset: u64) -> bool {
        self.range_at(offset).is_some()
    }

    /// What the byte at `offset` belongs to, `None` if it is not live.
    pub fn owner_of(&self, offset: u64) -> Option<Place> {
        self.range_at(offset).and_then(|r| r.place_of(offset))
    }

    /// The ranges overlapping `[offset, offset + len)`.
    pub fn overlapping(&self, offset: u64, len: u64) -> &[LiveRange] {
        let end = offset.saturating_add(len);
        let first = self.ranges.partition_point(|r| r.end() <= offset);
        let last = self.ranges.partition_point(|r| r.offset < end);
        self.ranges.get(first..last.max(first)).unwrap_or_default()
    }

    /// Maximal runs of live bytes as `(offset, end)`, ignoring owners: what a
    /// byte comparison needs.
    pub fn spans(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut iter = self.ranges.iter().peekable();
        std::iter::from_fn(move || {
            let first = iter.next()?;
            let (start, mut end) = (first.offset, first.end());
            while let Some(next) = iter.next_if(|r| r.offset == end) {
                end = next.end();
            }
            Some((start, end))
        })
    }

    /// The allocated objects as `(offset, usable size)`, ascending.
    pub fn objects(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().filter_map(|r| match r.owner {
            Owner::Object { offset, size, .. } => Some((offset, size)),
            _ => None,
        })
    }
}

/// Why a walk stopped. The callback's error is quoted in the message, so
/// it is kept in a field (`error`) rather than returned as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError<E> {
    /// The read callback failed.
    #[error("reading {len} bytes at logical offset {offset:#x}: {error}")]
    Read {
        /// Logical offset of the read.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// The callback's error.
        error: E,
    },
    /// The visitor of [`walk_visit`] asked to stop.
    #[error("stopped at the live range at logical offset {offset:#x}: {error}")]
    Visit {
        /// Offset of the range the visitor refused.
        offset: u64,
        /// The visitor's error.
        error: E,
    },
    /// The metadata is not what libpmemobj writes.
    #[error(transparent)]
    Invalid(#[from] Error),
}

// ---------------------------------------------------------------------------
// The walk.

/// Walks the obj metadata of a pool of `pool_size` bytes (the replica's
/// usable size) whose decoded descriptor is `desc`, reading through `read`,
/// and returns its live ranges.
///
/// `read(offset, buf)` must fill `buf` with the bytes at logical `offset`;
/// the walker never asks for bytes outside `[0, pool_size)`. It reads the
/// heap header, zone headers, chunk headers, run headers and bitmaps and
/// allocation headers, each once, in ascending order.
///
/// The descriptor must have a valid checksum and a page-aligned heap offset,
/// its lanes must lie between the descriptor and the heap, and the heap must
/// fit the pool; the heap header must be valid. Every zone header, chunk
/// header, run header and allocation header is checked against the pool
/// and against what libpmemobj writes before the walker uses it.
///
/// # Example
///
/// ```
/// use poolsync_header::heap::{walk, Owner};
/// use poolsync_header::{obj_initial_image, ObjDescriptor, OBJ_DESC_OFF, OBJ_DESC_LEN};
///
/// // The metadata of a new 8 MiB pool, in memory.
/// let size = 8u64 << 20;
/// let mut image = vec![0u8; size as usize];
/// for w in obj_initial_image(size, "demo")? {
///     image[w.offset as usize..][..w.bytes.len()].copy_from_slice(&w.bytes);
/// }
/// let desc = ObjDescriptor::decode(&image[OBJ_DESC_OFF as usize..][..OBJ_DESC_LEN])?;
/// let live = walk(&desc, size, |off, buf: &mut [u8]| {
///     buf.copy_from_slice(&image[off as usize..][..buf.len()]);
///     Ok::<(), std::convert::Infallible>(())
/// })?;
/// // Descriptor, lanes, heap header and the header of the unused zone 0.
/// assert_eq!(live.ranges().len(), 4);
/// assert_eq!(live.ranges()[3].owner, Owner::ZoneHeader { zone: 0 });
/// assert_eq!(live.owner_of(0x2000 + 3072 * 5).unwrap().to_string(), "lane 5");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn walk<E, R>(desc: &ObjDescriptor, pool_size: u64, read: R) -> Result<LiveMap, WalkError<E>>
where
    R: FnMut(u64, &mut [u8]) -> Result<(), E>,
{
    let mut ranges = Vec::new();
    let stats = walk_visit(desc, pool_size, read, |r: &LiveRange| {
        ranges.push(*r);
        Ok(())
    })?;
    Ok(LiveMap { ranges, stats })
}

/// [`walk`] as a stream: `visit` receives every live range in ascending
/// order (merged as in [`LiveMap`]) as soon as it is known, so memory does
/// not grow with the number of objects. An error from `visit` stops the walk
/// with [`WalkError::Visit`]. On a corrupted heap, ranges before the damage
/// have already been visited when the error is returned.
pub fn walk_visit<E, R, V>(
    desc: &ObjDescriptor,
    pool_size: u64,
    read: R,
    visit: V,
) -> Result<HeapStats, WalkError<E>>
where
    R: FnMut(u64, &mut [u8]) -> Result<(), E>,
    V: FnMut(&LiveRange) -> Result<(), E>,
{
    let mut w = Walker {
        reader: Reader::new(read, pool_size),
        out: Emitter {
            pending: None,
            visit,
            stats: HeapStats::default(),
        },
    };
    w.run(desc, pool_size)?;
    w.out.finish()?;
    Ok(w.out.stats)
}

fn corrupt(offset: u64, site: HeapSite, field: &'static str, value: u64, problem: String) -> Error {
    Error::HeapCorrupt {
        offset,
        site,
        field,
        value,
        problem,
    }
}

/// Reads through the callback, bounded by the pool, with a read-ahead window
/// for the many small allocation-header reads of a run.
struct Reader<R> {
    read: R,
    pool_size: u64,
    window: Vec<u8>,
    window_off: u64,
}

impl<R> Reader<R> {
    fn new(read: R, pool_size: u64) -> Self {
        Reader {
            read,
            pool_size,
            window: Vec::new(),
            window_off: 0,
        }
    }

    fn check_bounds(&self, offset: u64, len: usize) -> Result<(), Error> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.pool_size => Ok(()),
            _ => Err(corrupt(
                offset,
                HeapSite::Descriptor,
                "read length",
                len as u64,
                format!("reaches past the end of the {}-byte pool", self.pool_size),
            )),
        }
    }

    /// Fills `buf` from logical `offset`.
    fn exact<E>(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), WalkError<E>>
    where
        R: FnMut(u64, &mut [u8]) -> Result<(), E>,
    {
        self.check_bounds(offset, buf.len())?;
        (self.read)(offset, buf).map_err(|error| WalkError::Read {
            offset,
            len: buf.len(),
            error,
        })
    }

    /// `len` bytes at `offset`, through the window; the window never reads
    /// past `limit`, which must be at least `offset + len`.
    fn windowed<E>(&mut self, offset: u64, len: usize, limit: u64) -> Result<&[u8], WalkError<E>>
    where
        R: FnMut(u64, &mut [u8]) -> Result<(), E>,
    {
        let end = offset.saturating_add(len as u64);
        let cached_end = self.window_off.saturating_add(self.window.len() as u64);
        if offset < self.window_off || end > cached_end {
            let fill = limit
                .min(self.pool_size)
                .saturating_sub(offset)
                .min(WINDOW as u64)
                .max(len as u64);
            let mut window = std::mem::take(&mut self.window);
            window.clear();
            window.resize(fill as usize, 0);
            let result = self.exact(offset, &mut window);
            self.window = window;
            self.window_off = offset;
            if let Err(e) = result {
                self.window.clear();
                return Err(e);
            }
        }
        let start = (offset - self.window_off) as usize;
        self.window.get(start..start + len).ok_or_else(|| {
            WalkError::Invalid(corrupt(
                offset,
                HeapSite::Descriptor,
                "read length",
                len as u64,
                "is outside the read window".to_owned(),
            ))
        })
    }
}

/// Merges ranges and hands them to the visitor in order.
struct Emitter<V> {
    pending: Option<LiveRange>,
    visit: V,
    stats: HeapStats,
}

impl<V> Emitter<V> {
    fn push<E>(&mut self, offset: u64, len: u64, owner: Owner) -> Result<(), WalkError<E>>
    where
        V: FnMut(&LiveRange) -> Result<(), E>,
    {
        if len == 0 {
            return Ok(());
        }
        self.stats.live_bytes = self.stats.live_bytes.saturating_add(len);
        // Ranges arrive in ascending order by construction of the walk.
        if let Some(p) = self.pending.as_mut() {
            if p.end() == offset && p.owner.absorbs(&owner) {
                p.len += len;
                return Ok(());
            }
        }
        let next = LiveRange { offset, len, owner };
        if let Some(done) = self.pending.replace(next) {
            (self.visit)(&done).map_err(|error| WalkError::Visit {
                offset: done.offset,
                error,
            })?;
        }
        Ok(())
    }

    fn finish<E>(&mut self) -> Result<(), WalkError<E>>
    where
        V: FnMut(&LiveRange) -> Result<(), E>,
    {
        if let Some(done) = self.pending.take() {
            (self.visit)(&done).map_err(|error| WalkError::Visit {
                offset: done.offset,
                error,
            })?;
        }
        Ok(())
    }
}

/// Where a run's units are, for [`Walker::bitmap_value`].
#[derive(Clone, Copy)]
struct RunGeometry {
    chunk: u32,
    block_size: u64,
    bitmap: RunBitmap,
    kind: AllocHeaderKind,
    /// Logical offset of unit 0.
    data: u64,
    /// Logical offset of the end of the run.
    end: u64,
}

struct Walker<R, V> {
    reader: Reader<R>,
    out: Emitter<V>,
}

/// A zone's geometry.
struct Zone {
    index: u32,
    /// Logical offset of the zone header.
    start: u64,
    /// Logical offset of chunk 0.
    chunks: u64,
}

impl Zone {
    fn header_offset(&self, chunk: u32) -> u64 {
        self.start + ZONE_HEADER_SIZE + u64::from(chunk) * CHUNK_HEADER_SIZE
    }

    fn chunk_offset(&self, chunk: u32) -> u64 {
        self.chunks + u64::from(chunk) * HEAP_CHUNKSIZE
    }
}

impl<E, R, V> Walker<R, V>
where
    R: FnMut(u64, &mut [u8]) -> Result<(), E>,
    V: FnMut(&LiveRange) -> Result<(), E>,
{
    fn run(&mut self, desc: &ObjDescriptor, pool_size: u64) -> Result<(), WalkError<E>> {
        let heap_offset = check_descriptor(desc, pool_size)?;
        let lanes_len = desc.nlanes * LANE_SIZE;

        self.out.push(
            OBJ_DESC_OFF,
            OBJ_DESC_PERSISTENT_LEN as u64,
            Owner::Descriptor,
        )?;
        self.out.push(desc.lanes_offset, lanes_len, Owner::Lanes)?;

        let mut hdr = [0u8; HEAP_HDR_SIZE];
        self.reader.exact(heap_offset, &mut hdr)?;
        check_heap_header(&HeapHeader::decode(&hdr)?, heap_offset)?;
        self.out
            .push(heap_offset, HEAP_HDR_SIZE as u64, Owner::HeapHeader)?;

        let heap_len = pool_size - heap_offset;
        let zones = zone_count(heap_len);
        self.out.stats.zones = zones;
        let mut chunk_headers = Vec::new();
        for z in 0..zones {
            let index = u32::try_from(z).map_err(|_| {
                corrupt(
                    heap_offset,
                    HeapSite::Descriptor,
                    "heap size",
                    heap_len,
                    "holds more zones than libpmemobj can number".to_owned(),
                )
            })?;
            // zone_count() keeps every zone's metadata and first chunk inside the pool.
            let start = heap_offset + HEAP_HDR_SIZE as u64 + z * ZONE_MAX_SIZE;
            let zone = Zone {
                index,
                start,
                chunks: start + ZONE_METADATA_SIZE,
            };
            let capacity = ((pool_size - zone.chunks) / HEAP_CHUNKSIZE).min(HEAP_CHUNKS_PER_ZONE);
            self.zone(&zone, capacity as u32, &mut chunk_headers)?;
        }
        Ok(())
    }

    fn zone(
        &mut self,
        zone: &Zone,
        capacity: u32,
        headers: &mut Vec<u8>,
    ) -> Result<(), WalkError<E>> {
        let site = HeapSite::Zone { zone: zone.index };
        let mut raw = [0u8; ZONE_HEADER_SIZE as usize];
        self.reader.exact(zone.start, &mut raw)?;
        let zh = ZoneHeader::decode(&raw)?;
        self.out.push(
            zone.start,
            ZONE_HEADER_SIZE,
            Owner::ZoneHeader { zone: zone.index },
        )?;
        if zh.magic == 0 {
            return Ok(());
        }
        if zh.magic != ZONE_MAGIC {
            return Err(corrupt(
                zone.start,
                site,
                "magic",
                zh.magic.into(),
                format!("is neither 0 (unused) nor {ZONE_MAGIC:#x}"),
            )
            .into());
        }
        if zh.size_idx == 0 || zh.size_idx > capacity {
            return Err(corrupt(
                zone.start + ZONE_HDR_SIZE_IDX_OFF as u64,
                site,
                "size_idx",
                zh.size_idx.into(),
                format!("must be between 1 and the {capacity} chunks that fit in the pool"),
            )
            .into());
        }
        self.out.stats.initialised_zones += 1;

        // At most 65528 headers of 8 bytes: bounded by the check above.
        headers.clear();
        headers.resize(zh.size_idx as usize * CHUNK_HEADER_SIZE as usize, 0);
        self.reader.exact(zone.header_offset(0), headers)?;
        let header = |i: u32| -> ChunkHeader {
            let at = i as usize * CHUNK_HEADER_SIZE as usize;
            ChunkHeader::from_bytes(headers.get(at..at + 8).unwrap_or_default())
        };

        // First pass: the headers must tile the zone exactly; emit the ones
        // libpmemobj reads.
        let mut i = 0u32;
        while i < zh.size_idx {
            let h = header(i);
            let at = zone.header_offset(i);
            let site = HeapSite::Chunk {
                zone: zone.index,
                chunk: i,
            };
            if !matches!(h.kind, CHUNK_TYPE_FREE | CHUNK_TYPE_USED | CHUNK_TYPE_RUN) {
                return Err(corrupt(
                    at + CHUNK_HDR_TYPE_OFF as u64,
                    site,
                    "type",
                    h.kind.into(),
                    "does not start a block: expected free (2), used (3) or run (4)".to_owned(),
                )
                .into());
            }
            if h.flags & !CHUNK_FLAGS_ALL != 0 {
                return Err(corrupt(
                    at + CHUNK_HDR_FLAGS_OFF as u64,
                    site,
                    "flags",
                    h.flags.into(),
                    format!("has bits outside the known {CHUNK_FLAGS_ALL:#x}"),
                )
                .into());
            }
            if h.size_idx == 0 || h.size_idx > zh.size_idx - i {
                return Err(corrupt(
                    at + CHUNK_HDR_SIZE_IDX_OFF as u64,
                    site,
                    "size_idx",
                    h.size_idx.into(),
                    format!(
                        "must be between 1 and the {} chunks left in the zone's {}",
                        zh.size_idx - i,
                        zh.size_idx
                    ),
                )
                .into());
            }
            let mut live_headers = 1;
            if h.kind == CHUNK_TYPE_RUN {
                for j in 1..h.size_idx {
                    let d = header(i + j);
                    if d.kind != CHUNK_TYPE_RUN_DATA || d.size_idx != j {
                        return Err(corrupt(
                            zone.header_offset(i + j),
                            HeapSite::Chunk {
                                zone: zone.index,
                                chunk: i + j,
                            },
                            "type and size_idx",
                            u64::from(d.kind) << 32 | u64::from(d.size_idx),
                            format!(
                                "must be run data (5) at distance {j} from the run at chunk {i}"
                            ),
                        )
                        .into());
                    }
                }
                live_headers = h.size_idx;
            }
            self.out.push(
                at,
                u64::from(live_headers) * CHUNK_HEADER_SIZE,
                Owner::ChunkHeaders {
                    zone: zone.index,
                    first: i,
                },
            )?;
            i += h.size_idx;
        }

        // Second pass: the chunks' contents.
        let mut i = 0u32;
        while i < zh.size_idx {
            let h = header(i);
            let n = u64::from(h.size_idx);
            match h.kind {
                CHUNK_TYPE_USED => {
                    self.out.stats.used_chunks += n;
                    self.used(zone, i, h)?;
                }
                CHUNK_TYPE_RUN => {
                    self.out.stats.run_chunks += n;
                    self.out.stats.runs += 1;
                    self.run_chunk(zone, i, h)?;
                }
                _ => self.out.stats.free_chunks += n,
            }
            i += h.size_idx;
        }
        Ok(())
    }

    /// A used block: one object filling its chunks.
    fn used(&mut self, zone: &Zone, chunk: u32, h: ChunkHeader) -> Result<(), WalkError<E>> {
        let start = zone.chunk_offset(chunk);
        let len = u64::from(h.size_idx) * HEAP_CHUNKSIZE;
        let kind = h.alloc_header();
        let hsize = kind.size();
        if hsize > 0 {
            let bytes = self.reader.windowed(start, hsize as usize, start + hsize)?;
            let recorded = kind.decode_size(bytes).unwrap_or(0);
            if recorded == 0 || recorded.div_ceil(HEAP_CHUNKSIZE) != u64::from(h.size_idx) {
                return Err(corrupt(
                    start,
                    HeapSite::Chunk {
                        zone: zone.index,
                        chunk,
                    },
                    "allocation header size",
                    recorded,
                    format!("does not match the {} chunks of the used block", h.size_idx),
                )
                .into());
            }
        }
        self.object(zone, chunk, start, len, hsize)
    }

    fn object(
        &mut self,
        zone: &Zone,
        chunk: u32,
        start: u64,
        len: u64,
        hsize: u64,
    ) -> Result<(), WalkError<E>> {
        let size = len - hsize;
        self.out.stats.objects += 1;
        self.out.stats.object_bytes = self.out.stats.object_bytes.saturating_add(size);
        self.out.push(
            start,
            len,
            Owner::Object {
                zone: zone.index,
                chunk,
                offset: start + hsize,
                size,
            },
        )
    }

    /// A run: header, bitmap, and an object at every allocated unit.
    fn run_chunk(&mut self, zone: &Zone, chunk: u32, h: ChunkHeader) -> Result<(), WalkError<E>> {
        let site = HeapSite::Chunk {
            zone: zone.index,
            chunk,
        };
        let start = zone.chunk_offset(chunk);
        let end = start + u64::from(h.size_idx) * HEAP_CHUNKSIZE;
        let mut raw = [0u8; RUN_HEADER_SIZE as usize];
        self.reader.exact(start, &mut raw)?;
        let rh = RunHeader::decode(&raw)?;
        let block_size = rh.block_size;
        let bitmap =
            RunBitmap::compute(h.size_idx, h.flags, block_size, rh.alignment).ok_or_else(|| {
                corrupt(
                    start + RUN_HDR_BLOCK_SIZE_OFF as u64,
                    site,
                    "block_size",
                    block_size,
                    format!(
                        "leaves no usable unit in a run of {} chunks (alignment {})",
                        h.size_idx, rh.alignment
                    ),
                )
            })?;
        let bitmap_off = start + RUN_HEADER_SIZE;
        let meta_end = bitmap_off + bitmap.size;
        let kind = h.alloc_header();
        let hsize = kind.size();
        let data = if h.flags & CHUNK_FLAG_ALIGNED != 0 {
            // libpmemobj aligns the user data, after the header, to the
            // alignment as an address; pools are mapped at addresses aligned
            // to at least 2 MiB, the largest alignment it accepts, so the
            // logical offset has the same remainder.
            let a = rh.alignment;
            if a == 0 || !a.is_power_of_two() {
                return Err(corrupt(
                    start + RUN_HDR_ALIGNMENT_OFF as u64,
                    site,
                    "alignment",
                    a,
                    "must be a power of two in an aligned run".to_owned(),
                )
                .into());
            }
            (meta_end + hsize).div_ceil(a) * a - hsize
        } else {
            meta_end
        };
        if meta_end > end || data > end {
            return Err(corrupt(
                bitmap_off,
                site,
                "bitmap size",
                bitmap.size,
                "reaches past the end of the run".to_owned(),
            )
            .into());
        }
        self.out.push(
            start,
            RUN_HEADER_SIZE + bitmap.size,
            Owner::RunMetadata {
                zone: zone.index,
                chunk,
            },
        )?;

        let run = RunGeometry {
            chunk,
            block_size,
            bitmap,
            kind,
            data,
            end,
        };
        let mut block = vec![0u8; BITMAP_BLOCK];
        let words_per_block = (BITMAP_BLOCK / 8) as u64;
        let mut w = 0u64;
        while w < bitmap.nvalues {
            let count = (bitmap.nvalues - w).min(words_per_block);
            let buf = block.get_mut(..(count * 8) as usize).unwrap_or_default();
            self.reader.exact(bitmap_off + w * 8, buf)?;
            for k in 0..count {
                let value = u64_le(buf, (k * 8) as usize);
                self.bitmap_value(zone, &run, w + k, value)?;
            }
            w += count;
        }
        Ok(())
    }

    /// The objects whose units start in bitmap value `index`.
    fn bitmap_value(
        &mut self,
        zone: &Zone,
        run: &RunGeometry,
        index: u64,
        value: u64,
    ) -> Result<(), WalkError<E>> {
        let RunGeometry {
            chunk,
            block_size,
            bitmap,
            kind,
            data,
            end: run_end,
        } = *run;
        let base = index * RUN_BITS_PER_VALUE;
        let valid = bitmap.nbits.saturating_sub(base).min(RUN_BITS_PER_VALUE);
        let mut value = if valid == RUN_BITS_PER_VALUE {
            value
        } else {
            value & ((1u64 << valid) - 1)
        };
        let hsize = kind.size();
        while value != 0 {
            let bit = u64::from(value.trailing_zeros());
            let unit = base + bit;
            let site = HeapSite::Unit {
                zone: zone.index,
                chunk,
                unit,
            };
            let start = unit.saturating_mul(block_size).saturating_add(data);
            if start.checked_add(hsize.max(1)).is_none_or(|e| e > run_end) {
                return Err(corrupt(
                    start,
                    site,
                    "unit offset",
                    start,
                    "lies past the end of the run".to_owned(),
                )
                .into());
            }
            let units = match kind {
                AllocHeaderKind::None => 1,
                _ => {
                    let bytes = self.reader.windowed(start, hsize as usize, run_end)?;
                    let recorded = kind.decode_size(bytes).unwrap_or(0);
                    if recorded == 0 && index + 1 == bitmap.nvalues && valid == RUN_BITS_PER_VALUE {
                        // When the units end exactly at a value boundary,
                        // libpmemobj initialises the whole last value as
                        // allocated; those units never held an object.
                        value &= !(1u64 << bit);
                        continue;
                    }
                    let units = recorded.div_ceil(block_size);
                    if units == 0 || bit + units > RUN_BITS_PER_VALUE {
                        return Err(corrupt(
                            start,
                            site,
                            "allocation header size",
                            recorded,
                            format!(
                                "must cover 1 to {} units of {} bytes",
                                RUN_BITS_PER_VALUE - bit,
                                block_size
                            ),
                        )
                        .into());
                    }
                    units
                }
            };
            let mask = if units == RUN_BITS_PER_VALUE {
                u64::MAX
            } else {
                ((1u64 << units) - 1) << bit
            };
            if value & mask != mask {
                return Err(corrupt(
                    start,
                    site,
                    "allocation header size",
                    units * block_size,
                    format!("covers {units} units but not all of them are allocated in the bitmap"),
                )
                .into());
            }
            let len = units * block_size;
            if start + len > run_end {
                return Err(corrupt(
                    start,
                    site,
                    "allocation header size",
                    len,
                    "reaches past the end of the run".to_owned(),
                )
                .into());
            }
            value &= !mask;
            self.object(zone, chunk, start, len, hsize)?;
        }
        Ok(())
    }
}

/// The descriptor checks of [`walk`]; returns the heap offset.
/// The heap header as libpmemobj checks it (signature, checksum), and its
/// geometry as libpmemobj writes it: a chunk size or zone size of any other
/// value would place chunks outside the pool.
fn check_heap_header(hdr: &HeapHeader, heap_offset: u64) -> Result<(), Error> {
    hdr.validate(heap_offset)?;
    let field = |rel: usize| heap_offset + rel as u64;
    for (name, rel, value, want) in [
        (
            "chunksize",
            crate::obj::HEAP_HDR_CHUNKSIZE_OFF,
            hdr.chunksize,
            HEAP_CHUNKSIZE,
        ),
        (
            "chunks_per_zone",
            crate::obj::HEAP_HDR_CHUNKS_PER_ZONE_OFF,
            hdr.chunks_per_zone,
            HEAP_CHUNKS_PER_ZONE,
        ),
    ] {
        if value != want {
            return Err(corrupt(
                field(rel),
                HeapSite::HeapHeader,
                name,
                value,
                format!("must be {want}, the value libpmemobj writes"),
            ));
        }
    }
    Ok(())
}

fn check_descriptor(desc: &ObjDescriptor, pool_size: u64) -> Result<u64, Error> {
    desc.check_checksum()?;
    desc.check_heap_offset_aligned()?;
    let field = |rel: usize| OBJ_DESC_OFF + rel as u64;
    let heap_offset = desc.heap_offset;
    let desc_end = OBJ_DESC_OFF + OBJ_DESC_LEN as u64;
    let lanes_end = desc
        .nlanes
        .checked_mul(LANE_SIZE)
        .and_then(|len| len.checked_add(desc.lanes_offset));
    if desc.lanes_offset < desc_end {
        return Err(corrupt(
            field(crate::obj::OBJ_DESC_LANES_OFFSET_OFF),
            HeapSite::Descriptor,
            "lanes_offset",
            desc.lanes_offset,
            format!("lies before the end of the descriptor at {desc_end:#x}"),
        ));
    }
    if lanes_end.is_none_or(|end| end > heap_offset) {
        return Err(corrupt(
            field(crate::obj::OBJ_DESC_NLANES_OFF),
            HeapSite::Descriptor,
            "nlanes",
            desc.nlanes,
            format!(
                "lanes from {:#x} reach past the heap at {heap_offset:#x}",
                desc.lanes_offset
            ),
        ));
    }
    if heap_offset
        .checked_add(HEAP_MIN_SIZE)
        .is_none_or(|end| end > pool_size)
    {
        return Err(corrupt(
            field(crate::obj::OBJ_DESC_HEAP_OFFSET_OFF),
            HeapSite::Descriptor,
            "heap_offset",
            heap_offset,
            format!(
                "leaves less than the minimum heap of {HEAP_MIN_SIZE} bytes in a pool of {pool_size} bytes"
            ),
        ));
    }
    // The root object, when there is one, lies in the heap.
    let heap_data = heap_offset.saturating_add(HEAP_HDR_SIZE as u64);
    if desc.root_offset != 0 && !(heap_data..pool_size).contains(&desc.root_offset) {
        return Err(corrupt(
            field(crate::obj::OBJ_DESC_ROOT_OFFSET_OFF),
            HeapSite::Descriptor,
            "root_offset",
            desc.root_offset,
            format!("points outside the heap [{heap_data:#x}, {pool_size:#x})"),
        ));
    }
    // libpmemobj refuses a mapping smaller than the recorded heap; 0 means
    // "not recorded yet" and stands for the mapping.
    if desc.heap_size != 0 && desc.heap_size > pool_size - heap_offset {
        return Err(corrupt(
            field(crate::obj::OBJ_DESC_HEAP_SIZE_OFF),
            HeapSite::Descriptor,
            "heap_size",
            desc.heap_size,
            format!(
                "exceeds the {} bytes from the heap offset to the end of the pool",
                pool_size - heap_offset
            ),
        ));
    }
    Ok(heap_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_counts_follow_libpmemobj() {
        assert_eq!(zone_count(0), 0);
        assert_eq!(zone_count(HEAP_MIN_SIZE), 1);
        assert_eq!(zone_count(1024 + ZONE_MIN_SIZE - 1), 0);
        assert_eq!(zone_count(1024 + ZONE_MAX_SIZE), 1);
        assert_eq!(zone_count(1024 + ZONE_MAX_SIZE + ZONE_MIN_SIZE - 1), 1);
        assert_eq!(zone_count(1024 + ZONE_MAX_SIZE + ZONE_MIN_SIZE), 2);
        assert_eq!(zone_count(u64::MAX), (u64::MAX - 1024) / ZONE_MAX_SIZE + 1);
        assert_eq!(zone_offset(0x30_2000, 1), Some(0x30_2400 + ZONE_MAX_SIZE));
        assert_eq!(zone_offset(u64::MAX, 1), None);
    }

    /// Bitmaps of runs seen in pools written by libpmemobj 1.12.1.
    #[test]
    fn bitmap_vectors() {
        // A 5-chunk run of 5504-byte units: 48 bitmap bytes, units at +64.
        let b = RunBitmap::compute(5, 0x9, 5504, 0).unwrap();
        assert_eq!((b.nbits, b.nvalues, b.size), (238, 4, 48));
        // A 2-chunk run of 4096-byte units aligned to 4096: one unit reserved.
        let b = RunBitmap::compute(2, 0xD, 4096, 4096).unwrap();
        assert_eq!((b.nbits, b.nvalues, b.size), (126, 2, 48));
        // 128-byte units in one chunk: the bitmap is padded to 304 bytes.
        let b = RunBitmap::compute(1, 0x9, 128, 0).unwrap();
        assert_eq!((b.nbits, b.nvalues, b.size), (2045, 32, 304));
        // The fixed bitmap of older pools.
        let b = RunBitmap::compute(1, 0x1, 128, 0).unwrap();
        assert_eq!((b.nbits, b.nvalues, b.size), (2045, 32, 304));
        let b = RunBitmap::compute(4, 0x0, 64, 0).unwrap();
        assert_eq!((b.nbits, b.nvalues, b.size), (2432, 38, 304));
        assert_eq!(RunBitmap::compute(0, 0x9, 128, 0), None);
        assert_eq!(RunBitmap::compute(1, 0x9, 0, 0), None);
        assert_eq!(RunBitmap::compute(1, 0x9, 1 << 20, 0), None);
        assert_eq!(RunBitmap::compute(1, 0x0, 1 << 20, 0), None);
        assert!(RunBitmap::compute(u32::MAX, 0x9, 1, 0).is_none());
    }

    #[test]
    fn codecs_round_trip() {
        let z = ZoneHeader {
            magic: ZONE_MAGIC,
            size_idx: 113,
            reserved: [0; 56],
        };
        assert_eq!(ZoneHeader::decode(&z.encode()), Ok(z));
        assert_eq!(&z.encode()[..8], &[0xD2, 0xA2, 0xF0, 0xC3, 113, 0, 0, 0]);
        let c = ChunkHeader {
            kind: CHUNK_TYPE_RUN,
            flags: 0x9,
            size_idx: 5,
        };
        assert_eq!(c.encode(), [4, 0, 9, 0, 5, 0, 0, 0]);
        assert_eq!(ChunkHeader::decode(&c.encode()), Ok(c));
        assert_eq!(c.alloc_header(), AllocHeaderKind::Compact);
        let r = RunHeader {
            block_size: 128,
            alignment: 0,
        };
        assert_eq!(RunHeader::decode(&r.encode()), Ok(r));
        assert!(ZoneHeader::decode(&[0; 63]).is_err());
        assert!(ChunkHeader::decode(&[0; 7]).is_err());
        assert!(RunHeader::decode(&[0; 15]).is_err());
        for kind in [AllocHeaderKind::Compact, AllocHeaderKind::Legacy] {
            let b = kind.encode(640, 0x8000, 7);
            assert_eq!(b.len() as u64, kind.size());
            assert_eq!(kind.decode_size(&b), Some(640));
        }
        assert_eq!(AllocHeaderKind::from_flags(0x3), AllocHeaderKind::Compact);
        assert_eq!(AllocHeaderKind::from_flags(0x2), AllocHeaderKind::None);
        assert_eq!(AllocHeaderKind::from_flags(0x8), AllocHeaderKind::Legacy);
    }

    #[test]
    fn places_read_well() {
        let r = LiveRange {
            offset: 100,
            len: 80,
            owner: Owner::Object {
                zone: 0,
                chunk: 3,
                offset: 116,
                size: 64,
            },
        };
        assert_eq!(r.place_of(99), None);
        assert_eq!(r.place_of(180), None);
        assert!(matches!(
            r.place_of(100),
            Some(Place::AllocationHeader { .. })
        ));
        assert_eq!(
            r.place_of(116).unwrap().to_string(),
            "object at offset 0x74 of size 64 (zone 0 chunk 3)"
        );
        let h = LiveRange {
            offset: 1000,
            len: 24,
            owner: Owner::ChunkHeaders { zone: 2, first: 7 },
        };
        assert_eq!(
            h.place_of(1017).unwrap().to_string(),
            "zone 2 chunk 9 header"
        );
        assert_eq!(
            HeapSite::Unit {
                zone: 1,
                chunk: 2,
                unit: 3
            }
            .to_string(),
            "zone 1 chunk 2 unit 3"
        );
    }
}
