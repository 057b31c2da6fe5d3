//! libpmemobj pool metadata (docs/format.md §7 to §10): the pool descriptor,
//! lanes, heap header, and the image of a freshly created pool.

use crate::bytes::{array, first_nonzero, put, put_u64, u64_le};
use crate::checksum::fletcher64;
use crate::Error;

/// Page size on every platform this crate covers.
pub const PAGE_SIZE: u64 = 4096;
/// `PMEMOBJ_MIN_POOL`: the smallest obj pool (8 MiB).
pub const OBJ_MIN_POOL: u64 = 8 << 20;

/// Logical offset of the descriptor, right after the pool header.
pub const OBJ_DESC_OFF: u64 = 0x1000;
/// Bytes read to decode a descriptor: logical `0x1000..0x2000`.
pub const OBJ_DESC_LEN: usize = 0x1000;
/// Longest layout buffer, NUL included; a layout name has at most 1023 bytes.
pub const OBJ_LAYOUT_MAX: usize = 1024;

/// Descriptor-relative offset of the layout name.
pub const OBJ_DESC_LAYOUT_OFF: usize = 0x000;
/// Descriptor-relative offset of `lanes_offset`.
pub const OBJ_DESC_LANES_OFFSET_OFF: usize = 0x400;
/// Descriptor-relative offset of `nlanes`.
pub const OBJ_DESC_NLANES_OFF: usize = 0x408;
/// Descriptor-relative offset of `heap_offset`.
pub const OBJ_DESC_HEAP_OFFSET_OFF: usize = 0x410;
/// Descriptor-relative offset of `unused3`.
pub const OBJ_DESC_UNUSED3_OFF: usize = 0x418;
/// Descriptor-relative offset of the unused bytes inside the checksummed part.
pub const OBJ_DESC_UNUSED_OFF: usize = 0x420;
/// Length of those unused bytes.
pub const OBJ_DESC_UNUSED_LEN: usize = 984;
/// Descriptor-relative offset of the checksum.
pub const OBJ_DESC_CSUM_OFF: usize = 0x7F8;
/// Length of the checksummed part (logical `0x1000..0x1800`).
pub const OBJ_DESC_CSUM_LEN: usize = 0x800;
/// Descriptor-relative offset of `root_offset`.
pub const OBJ_DESC_ROOT_OFFSET_OFF: usize = 0x800;
/// Descriptor-relative offset of `run_id`.
pub const OBJ_DESC_RUN_ID_OFF: usize = 0x808;
/// Descriptor-relative offset of `root_size`.
pub const OBJ_DESC_ROOT_SIZE_OFF: usize = 0x810;
/// Descriptor-relative offset of `conversion_flags`.
pub const OBJ_DESC_CONVERSION_FLAGS_OFF: usize = 0x818;
/// Descriptor-relative offset of `heap_size`.
pub const OBJ_DESC_HEAP_SIZE_OFF: usize = 0x820;
/// Descriptor-relative offset of `stats.heap_curr_allocated`.
pub const OBJ_DESC_HEAP_CURR_ALLOCATED_OFF: usize = 0x828;
/// Descriptor-relative offset of `pmem_reserved`.
pub const OBJ_DESC_PMEM_RESERVED_OFF: usize = 0x830;
/// Length of `pmem_reserved`.
pub const OBJ_DESC_PMEM_RESERVED_LEN: usize = 496;
/// Length of the persistent descriptor (logical `0x1000..0x1A20`); the rest
/// up to `0x2000` is libpmemobj's volatile run-time area, which holds
/// process garbage and is never interpreted.
pub const OBJ_DESC_PERSISTENT_LEN: usize = 0xA20;

const _: () = assert!(OBJ_DESC_LANES_OFFSET_OFF == OBJ_DESC_LAYOUT_OFF + OBJ_LAYOUT_MAX);
const _: () = assert!(OBJ_DESC_NLANES_OFF == OBJ_DESC_LANES_OFFSET_OFF + 8);
const _: () = assert!(OBJ_DESC_HEAP_OFFSET_OFF == OBJ_DESC_NLANES_OFF + 8);
const _: () = assert!(OBJ_DESC_UNUSED3_OFF == OBJ_DESC_HEAP_OFFSET_OFF + 8);
const _: () = assert!(OBJ_DESC_UNUSED_OFF == OBJ_DESC_UNUSED3_OFF + 8);
const _: () = assert!(OBJ_DESC_CSUM_OFF == OBJ_DESC_UNUSED_OFF + OBJ_DESC_UNUSED_LEN);
const _: () = assert!(OBJ_DESC_CSUM_LEN == OBJ_DESC_CSUM_OFF + 8);
const _: () = assert!(OBJ_DESC_ROOT_OFFSET_OFF == OBJ_DESC_CSUM_LEN);
const _: () = assert!(OBJ_DESC_RUN_ID_OFF == OBJ_DESC_ROOT_OFFSET_OFF + 8);
const _: () = assert!(OBJ_DESC_ROOT_SIZE_OFF == OBJ_DESC_RUN_ID_OFF + 8);
const _: () = assert!(OBJ_DESC_CONVERSION_FLAGS_OFF == OBJ_DESC_ROOT_SIZE_OFF + 8);
const _: () = assert!(OBJ_DESC_HEAP_SIZE_OFF == OBJ_DESC_CONVERSION_FLAGS_OFF + 8);
const _: () = assert!(OBJ_DESC_HEAP_CURR_ALLOCATED_OFF == OBJ_DESC_HEAP_SIZE_OFF + 8);
const _: () = assert!(OBJ_DESC_PMEM_RESERVED_OFF == OBJ_DESC_HEAP_CURR_ALLOCATED_OFF + 8);
const _: () =
    assert!(OBJ_DESC_PERSISTENT_LEN == OBJ_DESC_PMEM_RESERVED_OFF + OBJ_DESC_PMEM_RESERVED_LEN);
const _: () = assert!(OBJ_DESC_PERSISTENT_LEN <= OBJ_DESC_LEN);

/// `lanes_offset` of every pool libpmemobj 1.12 creates (= sizeof(struct pmemobjpool)).
pub const OBJ_LANES_OFFSET: u64 = 0x2000;
/// `nlanes` of every pool libpmemobj 1.12 creates.
pub const OBJ_NLANES: u64 = 1024;
/// Size of one lane: three unified logs, each a 64-byte header plus data.
pub const LANE_SIZE: u64 = 3072;
/// Size of a ulog header.
pub const ULOG_HEADER_SIZE: u64 = 64;
/// Offset of the `capacity` field inside a ulog header.
pub const ULOG_CAPACITY_OFF: u64 = 16;

/// Where one of a lane's unified logs starts and how much data it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneUlog {
    /// Offset of the ulog header inside the lane.
    pub offset: u64,
    /// Data bytes after the header: the value of its `capacity` field.
    pub capacity: u64,
}

/// The three ulogs of a lane: internal redo, external redo, undo.
pub const LANE_ULOGS: [LaneUlog; 3] = [
    LaneUlog {
        offset: 0,
        capacity: 192,
    },
    LaneUlog {
        offset: 256,
        capacity: 640,
    },
    LaneUlog {
        offset: 960,
        capacity: 2048,
    },
];

const _: () = assert!(
    LANE_ULOGS[1].offset == LANE_ULOGS[0].offset + ULOG_HEADER_SIZE + LANE_ULOGS[0].capacity
);
const _: () = assert!(
    LANE_ULOGS[2].offset == LANE_ULOGS[1].offset + ULOG_HEADER_SIZE + LANE_ULOGS[1].capacity
);
const _: () =
    assert!(LANE_SIZE == LANE_ULOGS[2].offset + ULOG_HEADER_SIZE + LANE_ULOGS[2].capacity);

/// `heap_offset` of every pool libpmemobj 1.12 creates: the lanes' end rounded up to a page.
pub const OBJ_HEAP_OFFSET: u64 =
    (OBJ_LANES_OFFSET + OBJ_NLANES * LANE_SIZE).div_ceil(PAGE_SIZE) * PAGE_SIZE;
const _: () = assert!(OBJ_HEAP_OFFSET == 0x30_2000);

/// Size of the heap header.
pub const HEAP_HDR_SIZE: usize = 1024;
/// Signature of the heap header.
pub const HEAP_SIGNATURE: [u8; 16] = *b"MEMORY_HEAP_HDR\0";
/// Heap format major version.
pub const HEAP_MAJOR: u64 = 1;
/// Heap format minor version.
pub const HEAP_MINOR: u64 = 0;
/// Size of a heap chunk (256 KiB).
pub const HEAP_CHUNKSIZE: u64 = 262_144;
/// Chunks per zone (`MAX_CHUNK`).
pub const HEAP_CHUNKS_PER_ZONE: u64 = 65_528;
/// Heap-header offset of the signature.
pub const HEAP_HDR_SIGNATURE_OFF: usize = 0;
/// Heap-header offset of `major`.
pub const HEAP_HDR_MAJOR_OFF: usize = 16;
/// Heap-header offset of `minor`.
pub const HEAP_HDR_MINOR_OFF: usize = 24;
/// Heap-header offset of `unused`.
pub const HEAP_HDR_UNUSED_OFF: usize = 32;
/// Heap-header offset of `chunksize`.
pub const HEAP_HDR_CHUNKSIZE_OFF: usize = 40;
/// Heap-header offset of `chunks_per_zone`.
pub const HEAP_HDR_CHUNKS_PER_ZONE_OFF: usize = 48;
/// Heap-header offset of the reserved bytes.
pub const HEAP_HDR_RESERVED_OFF: usize = 56;
/// Length of the reserved bytes.
pub const HEAP_HDR_RESERVED_LEN: usize = 960;
/// Heap-header offset of the checksum.
pub const HEAP_HDR_CSUM_OFF: usize = 1016;
/// Size of a zone header.
pub const ZONE_HEADER_SIZE: u64 = 64;
/// Size of a chunk header.
pub const CHUNK_HEADER_SIZE: u64 = 8;
/// Size of a zone's metadata: its header and all its chunk headers (512 KiB).
pub const ZONE_METADATA_SIZE: u64 = ZONE_HEADER_SIZE + HEAP_CHUNKS_PER_ZONE * CHUNK_HEADER_SIZE;
/// The smallest heap libpmemobj accepts (`HEAP_MIN_SIZE`).
///
/// PMDK computes it from C struct sizes as `sizeof(struct heap_layout)`
/// (heap header plus one zone's metadata) plus `ZONE_MIN_SIZE` (zone metadata
/// plus one chunk), so the zone metadata is counted twice.
pub const HEAP_MIN_SIZE: u64 =
    HEAP_HDR_SIZE as u64 + ZONE_METADATA_SIZE + ZONE_METADATA_SIZE + HEAP_CHUNKSIZE;

const _: () = assert!(HEAP_HDR_MAJOR_OFF == HEAP_HDR_SIGNATURE_OFF + 16);
const _: () = assert!(HEAP_HDR_MINOR_OFF == HEAP_HDR_MAJOR_OFF + 8);
const _: () = assert!(HEAP_HDR_UNUSED_OFF == HEAP_HDR_MINOR_OFF + 8);
const _: () = assert!(HEAP_HDR_CHUNKSIZE_OFF == HEAP_HDR_UNUSED_OFF + 8);
const _: () = assert!(HEAP_HDR_CHUNKS_PER_ZONE_OFF == HEAP_HDR_CHUNKSIZE_OFF + 8);
const _: () = assert!(HEAP_HDR_RESERVED_OFF == HEAP_HDR_CHUNKS_PER_ZONE_OFF + 8);
const _: () = assert!(HEAP_HDR_CSUM_OFF == HEAP_HDR_RESERVED_OFF + HEAP_HDR_RESERVED_LEN);
const _: () = assert!(HEAP_HDR_SIZE == HEAP_HDR_CSUM_OFF + 8);
const _: () = assert!(ZONE_METADATA_SIZE == 512 * 1024);
const _: () = assert!(HEAP_MIN_SIZE == 1_311_744);

/// The persistent obj pool descriptor (`struct pmemobjpool` after the pool
/// header), decoded without judgement.
///
/// Only the first 2048 bytes (layout through `checksum`) are checksummed;
/// `root_offset`, `run_id`, `heap_size` and the rest are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjDescriptor {
    /// NUL-terminated layout name, zero padded.
    pub layout: [u8; OBJ_LAYOUT_MAX],
    /// Logical offset of the lanes.
    pub lanes_offset: u64,
    /// Number of lanes.
    pub nlanes: u64,
    /// Logical offset of the heap; must be page aligned.
    pub heap_offset: u64,
    /// Must be zero.
    pub unused3: u64,
    /// Bytes `0x420..0x7F8` of the descriptor; must be zero, checksummed.
    pub unused: [u8; OBJ_DESC_UNUSED_LEN],
    /// Fletcher64 over the first 2048 bytes with this field as zero.
    pub checksum: u64,
    /// Offset of the root object, 0 if none.
    pub root_offset: u64,
    /// Incremented by 2 on every open; must be even.
    pub run_id: u64,
    /// Size of the root object.
    pub root_size: u64,
    /// Set by conversion tools for the first recovery.
    pub conversion_flags: u64,
    /// Size of the heap; `heap_offset + heap_size` is the pool size.
    pub heap_size: u64,
    /// Persistent statistics: bytes currently allocated.
    pub heap_curr_allocated: u64,
    /// Must be zero.
    pub pmem_reserved: [u8; OBJ_DESC_PMEM_RESERVED_LEN],
}

impl Default for ObjDescriptor {
    /// All fields zero.
    fn default() -> Self {
        ObjDescriptor {
            layout: [0; OBJ_LAYOUT_MAX],
            lanes_offset: 0,
            nlanes: 0,
            heap_offset: 0,
            unused3: 0,
            unused: [0; OBJ_DESC_UNUSED_LEN],
            checksum: 0,
            root_offset: 0,
            run_id: 0,
            root_size: 0,
            conversion_flags: 0,
            heap_size: 0,
            heap_curr_allocated: 0,
            pmem_reserved: [0; OBJ_DESC_PMEM_RESERVED_LEN],
        }
    }
}

impl ObjDescriptor {
    /// The descriptor of a pool freshly created by `pmempool create` with
    /// this pool size and layout (docs/format.md §7): standard lanes and heap
    /// offset, `heap_size = pool_size - heap_offset`, `run_id = 2` (create
    /// writes 0 and the runtime adds 2 before closing), a fresh checksum.
    ///
    /// Errors when the pool size is not page aligned, below 8 MiB or leaves
    /// less than the minimum heap, and when the layout has 1024 bytes or
    /// more or contains a NUL byte.
    pub fn new(pool_size: u64, layout: &str) -> Result<ObjDescriptor, Error> {
        if !pool_size.is_multiple_of(PAGE_SIZE) {
            return Err(Error::PoolSizeUnaligned { pool_size });
        }
        if pool_size < OBJ_MIN_POOL {
            return Err(Error::PoolTooSmall {
                pool_size,
                min: OBJ_MIN_POOL,
            });
        }
        let heap_size = pool_size - OBJ_HEAP_OFFSET;
        if heap_size < HEAP_MIN_SIZE {
            return Err(Error::HeapTooSmall {
                heap_size,
                min: HEAP_MIN_SIZE,
            });
        }
        if layout.len() >= OBJ_LAYOUT_MAX {
            return Err(Error::LayoutTooLong {
                len: layout.len(),
                max: OBJ_LAYOUT_MAX - 1,
            });
        }
        if let Some(at) = layout.bytes().position(|b| b == 0) {
            return Err(Error::LayoutNul { at });
        }
        let mut d = ObjDescriptor {
            lanes_offset: OBJ_LANES_OFFSET,
            nlanes: OBJ_NLANES,
            heap_offset: OBJ_HEAP_OFFSET,
            run_id: 2,
            heap_size,
            ..ObjDescriptor::default()
        };
        put(&mut d.layout, 0, layout.as_bytes());
        d.checksum = d.compute_checksum();
        Ok(d)
    }

    /// Decodes the persistent descriptor from bytes starting at logical
    /// `0x1000`. At least [`OBJ_DESC_PERSISTENT_LEN`] bytes are needed;
    /// callers usually pass the [`OBJ_DESC_LEN`] bytes up to `0x2000`, and
    /// the volatile area past the persistent part is ignored.
    pub fn decode(bytes: &[u8]) -> Result<ObjDescriptor, Error> {
        let b = bytes
            .get(..OBJ_DESC_PERSISTENT_LEN)
            .ok_or(Error::ShortBuffer {
                what: "obj pool descriptor",
                len: bytes.len(),
                expected: OBJ_DESC_PERSISTENT_LEN,
            })?;
        Ok(ObjDescriptor {
            layout: array(b, OBJ_DESC_LAYOUT_OFF),
            lanes_offset: u64_le(b, OBJ_DESC_LANES_OFFSET_OFF),
            nlanes: u64_le(b, OBJ_DESC_NLANES_OFF),
            heap_offset: u64_le(b, OBJ_DESC_HEAP_OFFSET_OFF),
            unused3: u64_le(b, OBJ_DESC_UNUSED3_OFF),
            unused: array(b, OBJ_DESC_UNUSED_OFF),
            checksum: u64_le(b, OBJ_DESC_CSUM_OFF),
            root_offset: u64_le(b, OBJ_DESC_ROOT_OFFSET_OFF),
            run_id: u64_le(b, OBJ_DESC_RUN_ID_OFF),
            root_size: u64_le(b, OBJ_DESC_ROOT_SIZE_OFF),
            conversion_flags: u64_le(b, OBJ_DESC_CONVERSION_FLAGS_OFF),
            heap_size: u64_le(b, OBJ_DESC_HEAP_SIZE_OFF),
            heap_curr_allocated: u64_le(b, OBJ_DESC_HEAP_CURR_ALLOCATED_OFF),
            pmem_reserved: array(b, OBJ_DESC_PMEM_RESERVED_OFF),
        })
    }

    /// Encodes the persistent descriptor (logical `0x1000..0x1A20`) with the
    /// stored checksum as is.
    pub fn encode_raw(&self) -> [u8; OBJ_DESC_PERSISTENT_LEN] {
        let mut b = [0u8; OBJ_DESC_PERSISTENT_LEN];
        put(&mut b, OBJ_DESC_LAYOUT_OFF, &self.layout);
        put_u64(&mut b, OBJ_DESC_LANES_OFFSET_OFF, self.lanes_offset);
        put_u64(&mut b, OBJ_DESC_NLANES_OFF, self.nlanes);
        put_u64(&mut b, OBJ_DESC_HEAP_OFFSET_OFF, self.heap_offset);
        put_u64(&mut b, OBJ_DESC_UNUSED3_OFF, self.unused3);
        put(&mut b, OBJ_DESC_UNUSED_OFF, &self.unused);
        put_u64(&mut b, OBJ_DESC_CSUM_OFF, self.checksum);
        put_u64(&mut b, OBJ_DESC_ROOT_OFFSET_OFF, self.root_offset);
        put_u64(&mut b, OBJ_DESC_RUN_ID_OFF, self.run_id);
        put_u64(&mut b, OBJ_DESC_ROOT_SIZE_OFF, self.root_size);
        put_u64(&mut b, OBJ_DESC_CONVERSION_FLAGS_OFF, self.conversion_flags);
        put_u64(&mut b, OBJ_DESC_HEAP_SIZE_OFF, self.heap_size);
        put_u64(
            &mut b,
            OBJ_DESC_HEAP_CURR_ALLOCATED_OFF,
            self.heap_curr_allocated,
        );
        put(&mut b, OBJ_DESC_PMEM_RESERVED_OFF, &self.pmem_reserved);
        b
    }

    /// Stores a freshly computed checksum in `self.checksum` and encodes.
    pub fn encode(&mut self) -> [u8; OBJ_DESC_PERSISTENT_LEN] {
        self.checksum = self.compute_checksum();
        self.encode_raw()
    }

    /// The checksum of the first 2048 bytes.
    pub fn compute_checksum(&self) -> u64 {
        let b = self.encode_raw();
        fletcher64(
            b.get(..OBJ_DESC_CSUM_LEN).unwrap_or_default(),
            OBJ_DESC_CSUM_OFF,
            None,
        )
    }

    /// Whether the stored checksum matches.
    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.compute_checksum()
    }

    /// Length of the layout name, `None` if the 1024 bytes hold no NUL.
    pub fn layout_len(&self) -> Option<usize> {
        self.layout.iter().position(|&b| b == 0)
    }

    /// Layout name up to the first NUL (all 1024 bytes if there is none),
    /// as lossy UTF-8.
    pub fn layout_name(&self) -> String {
        let end = self.layout_len().unwrap_or(OBJ_LAYOUT_MAX);
        String::from_utf8_lossy(self.layout.get(..end).unwrap_or_default()).into_owned()
    }

    /// `heap_offset + heap_size`: the pool size sync copies (`None` on overflow).
    pub fn pool_size(&self) -> Option<u64> {
        self.heap_offset.checked_add(self.heap_size)
    }

    /// What libpmemobj checks about the descriptor of every replica at open,
    /// plus the run_id parity of its basic check and a terminated layout:
    /// checksum, layout length, page-aligned heap offset, even run_id.
    pub fn validate(&self) -> Result<(), Error> {
        self.check_checksum()?;
        self.check_layout_terminated()?;
        self.check_heap_offset_aligned()?;
        self.check_run_id_even()
    }

    /// The stored checksum matches ("invalid checksum of pool descriptor").
    pub fn check_checksum(&self) -> Result<(), Error> {
        let computed = self.compute_checksum();
        if computed == self.checksum {
            Ok(())
        } else {
            Err(Error::DescriptorChecksum {
                offset: OBJ_DESC_OFF + OBJ_DESC_CSUM_OFF as u64,
                stored: self.checksum,
                computed,
            })
        }
    }

    /// The layout name ends with a NUL inside its 1024 bytes.
    pub fn check_layout_terminated(&self) -> Result<(), Error> {
        match self.layout_len() {
            Some(_) => Ok(()),
            None => Err(Error::LayoutUnterminated {
                offset: OBJ_DESC_OFF + OBJ_DESC_LAYOUT_OFF as u64,
            }),
        }
    }

    /// The layout equals `expected`, compared as libpmemobj does (up to the
    /// first NUL, at most 1024 bytes).
    pub fn check_layout(&self, expected: &str) -> Result<(), Error> {
        let end = self.layout_len().unwrap_or(OBJ_LAYOUT_MAX);
        if self.layout.get(..end) == Some(expected.as_bytes()) {
            Ok(())
        } else {
            Err(Error::WrongLayout {
                expected: expected.to_owned(),
                found: self.layout_name(),
            })
        }
    }

    /// `heap_offset` is a multiple of the page size ("unaligned heap").
    pub fn check_heap_offset_aligned(&self) -> Result<(), Error> {
        if self.heap_offset.is_multiple_of(PAGE_SIZE) {
            Ok(())
        } else {
            Err(Error::HeapUnaligned {
                offset: OBJ_DESC_OFF + OBJ_DESC_HEAP_OFFSET_OFF as u64,
                heap_offset: self.heap_offset,
            })
        }
    }

    /// `run_id` is even.
    pub fn check_run_id_even(&self) -> Result<(), Error> {
        if self.run_id.is_multiple_of(2) {
            Ok(())
        } else {
            Err(Error::OddRunId {
                offset: OBJ_DESC_OFF + OBJ_DESC_RUN_ID_OFF as u64,
                run_id: self.run_id,
            })
        }
    }

    /// `unused3`, the unused bytes and `pmem_reserved` are zero (libpmemobj
    /// never checks this; the first two are covered by the checksum).
    pub fn check_unused_zero(&self) -> Result<(), Error> {
        let zero_off = |rel: usize| OBJ_DESC_OFF + rel as u64;
        if self.unused3 != 0 {
            let byte = self
                .unused3
                .to_le_bytes()
                .iter()
                .position(|&b| b != 0)
                .unwrap_or(0);
            return Err(Error::DescriptorNonZeroUnused {
                offset: zero_off(OBJ_DESC_UNUSED3_OFF + byte),
            });
        }
        if let Some(i) = first_nonzero(&self.unused) {
            return Err(Error::DescriptorNonZeroUnused {
                offset: zero_off(OBJ_DESC_UNUSED_OFF + i),
            });
        }
        if let Some(i) = first_nonzero(&self.pmem_reserved) {
            return Err(Error::DescriptorNonZeroUnused {
                offset: zero_off(OBJ_DESC_PMEM_RESERVED_OFF + i),
            });
        }
        Ok(())
    }
}

/// The 1024-byte heap header at `heap_offset`, decoded without judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapHeader {
    /// `MEMORY_HEAP_HDR\0`.
    pub signature: [u8; 16],
    /// Heap format major version (1).
    pub major: u64,
    /// Heap format minor version (0).
    pub minor: u64,
    /// Zero.
    pub unused: u64,
    /// Chunk size (262144).
    pub chunksize: u64,
    /// Chunks per zone (65528).
    pub chunks_per_zone: u64,
    /// Zero.
    pub reserved: [u8; HEAP_HDR_RESERVED_LEN],
    /// Fletcher64 over the 1024 bytes with this field as zero.
    pub checksum: u64,
}

impl HeapHeader {
    /// The header libpmemobj 1.12 writes into every heap; its checksum is
    /// `0x4BF97CA8F7542425`.
    pub fn standard() -> HeapHeader {
        let mut h = HeapHeader {
            signature: HEAP_SIGNATURE,
            major: HEAP_MAJOR,
            minor: HEAP_MINOR,
            unused: 0,
            chunksize: HEAP_CHUNKSIZE,
            chunks_per_zone: HEAP_CHUNKS_PER_ZONE,
            reserved: [0; HEAP_HDR_RESERVED_LEN],
            checksum: 0,
        };
        h.checksum = h.compute_checksum();
        h
    }

    /// Decodes the first 1024 bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<HeapHeader, Error> {
        let b = bytes.get(..HEAP_HDR_SIZE).ok_or(Error::ShortBuffer {
            what: "heap header",
            len: bytes.len(),
            expected: HEAP_HDR_SIZE,
        })?;
        Ok(HeapHeader {
            signature: array(b, HEAP_HDR_SIGNATURE_OFF),
            major: u64_le(b, HEAP_HDR_MAJOR_OFF),
            minor: u64_le(b, HEAP_HDR_MINOR_OFF),
            unused: u64_le(b, HEAP_HDR_UNUSED_OFF),
            chunksize: u64_le(b, HEAP_HDR_CHUNKSIZE_OFF),
            chunks_per_zone: u64_le(b, HEAP_HDR_CHUNKS_PER_ZONE_OFF),
            reserved: array(b, HEAP_HDR_RESERVED_OFF),
            checksum: u64_le(b, HEAP_HDR_CSUM_OFF),
        })
    }

    /// Encodes with the stored checksum as is.
    pub fn encode_raw(&self) -> [u8; HEAP_HDR_SIZE] {
        let mut b = [0u8; HEAP_HDR_SIZE];
        put(&mut b, HEAP_HDR_SIGNATURE_OFF, &self.signature);
        put_u64(&mut b, HEAP_HDR_MAJOR_OFF, self.major);
        put_u64(&mut b, HEAP_HDR_MINOR_OFF, self.minor);
        put_u64(&mut b, HEAP_HDR_UNUSED_OFF, self.unused);
        put_u64(&mut b, HEAP_HDR_CHUNKSIZE_OFF, self.chunksize);
        put_u64(&mut b, HEAP_HDR_CHUNKS_PER_ZONE_OFF, self.chunks_per_zone);
        put(&mut b, HEAP_HDR_RESERVED_OFF, &self.reserved);
        put_u64(&mut b, HEAP_HDR_CSUM_OFF, self.checksum);
        b
    }

    /// Stores a freshly computed checksum in `self.checksum` and encodes.
    pub fn encode(&mut self) -> [u8; HEAP_HDR_SIZE] {
        self.checksum = self.compute_checksum();
        self.encode_raw()
    }

    /// The checksum these fields should carry.
    pub fn compute_checksum(&self) -> u64 {
        fletcher64(&self.encode_raw(), HEAP_HDR_CSUM_OFF, None)
    }

    /// Whether the stored checksum matches.
    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.compute_checksum()
    }

    /// The signature and checksum libpmemobj's heap check requires.
    /// `heap_offset` is the header's logical offset, used in the error.
    pub fn validate(&self, heap_offset: u64) -> Result<(), Error> {
        if self.signature != HEAP_SIGNATURE {
            return Err(Error::HeapSignature {
                offset: heap_offset,
                found: self.signature.escape_ascii().to_string(),
            });
        }
        let computed = self.compute_checksum();
        if computed != self.checksum {
            return Err(Error::HeapChecksum {
                offset: heap_offset.saturating_add(HEAP_HDR_CSUM_OFF as u64),
                stored: self.checksum,
                computed,
            });
        }
        Ok(())
    }
}

/// Bytes to store at a replica's logical offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Logical offset in the replica address space.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Everything a new obj pool of `pool_size` bytes with `layout` needs besides
/// its pool headers and zeroes (docs/format.md §10), as writes at logical
/// offsets.
///
/// The writes are, in ascending offset order and without overlap:
/// * the persistent descriptor ([`OBJ_DESC_PERSISTENT_LEN`] bytes at
///   `0x1000`, from [`ObjDescriptor::new`]; the volatile area up to `0x2000`
///   is left alone);
/// * one 8-byte write per ulog `capacity` field: 3 per lane at lane offsets
///   16, 272 and 976, for all 1024 lanes (3072 writes of 0xC0, 0x280, 0x800);
/// * the standard heap header (1024 bytes at `heap_offset`).
///
/// Applied to a zero-filled replica this reproduces what `pmempool create`
/// leaves in logical `[0x1000, heap_offset + 1024)`, except for the volatile
/// area `[0x1A20, 0x2000)` where libpmemobj leaves run-time garbage.
///
/// Errors as [`ObjDescriptor::new`].
pub fn obj_initial_image(pool_size: u64, layout: &str) -> Result<Vec<Write>, Error> {
    let desc = ObjDescriptor::new(pool_size, layout)?;
    let mut writes = Vec::with_capacity(2 + (OBJ_NLANES as usize) * LANE_ULOGS.len());
    writes.push(Write {
        offset: OBJ_DESC_OFF,
        bytes: desc.encode_raw().to_vec(),
    });
    for lane in 0..desc.nlanes {
        let lane_off = desc.lanes_offset + lane * LANE_SIZE;
        for ulog in LANE_ULOGS {
            writes.push(Write {
                offset: lane_off + ulog.offset + ULOG_CAPACITY_OFF,
                bytes: ulog.capacity.to_le_bytes().to_vec(),
            });
        }
    }
    writes.push(Write {
        offset: desc.heap_offset,
        bytes: HeapHeader::standard().encode_raw().to_vec(),
    });
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_header_vector() {
        let h = HeapHeader::standard();
        assert_eq!(h.checksum, 0x4BF9_7CA8_F754_2425);
        let bytes = h.encode_raw();
        assert_eq!(&bytes[..16], b"MEMORY_HEAP_HDR\0");
        assert_eq!(HeapHeader::decode(&bytes), Ok(h.clone()));
        assert_eq!(h.validate(OBJ_HEAP_OFFSET), Ok(()));
        let mut bad = h;
        bad.reserved[5] = 1;
        assert!(matches!(
            bad.validate(0x30_2000),
            Err(Error::HeapChecksum {
                offset: 0x30_23F8,
                ..
            })
        ));
        assert!(matches!(
            bad.validate(u64::MAX),
            Err(Error::HeapChecksum {
                offset: u64::MAX,
                ..
            })
        ));
        bad.signature[0] = b'X';
        assert!(matches!(bad.validate(0), Err(Error::HeapSignature { .. })));
    }

    #[test]
    fn descriptor_vectors() {
        for (layout, sum) in [
            ("mylayout", 0x7EDF_D487_D612_2CE6u64),
            ("x", 0x2F84_6800_0030_4478),
            ("", 0x2F83_7800_0030_4400),
        ] {
            let d = ObjDescriptor::new(8 << 20, layout).unwrap();
            assert_eq!(d.checksum, sum, "layout {layout:?}");
            assert_eq!(d.layout_name(), layout);
            assert_eq!(d.validate(), Ok(()));
            assert_eq!(d.check_layout(layout), Ok(()));
            assert_eq!(d.check_unused_zero(), Ok(()));
        }
        // heap_size and run_id are outside the checksummed range.
        let a = ObjDescriptor::new(8 << 20, "x").unwrap();
        let b = ObjDescriptor::new(64 << 20, "x").unwrap();
        assert_eq!(a.checksum, b.checksum);
        assert_eq!(b.heap_size, (64 << 20) - 0x30_2000);
        assert_eq!(b.pool_size(), Some(64 << 20));
    }

    #[test]
    fn descriptor_checks() {
        let mut d = ObjDescriptor::new(8 << 20, "lay").unwrap();
        d.run_id = 3;
        assert_eq!(
            d.validate(),
            Err(Error::OddRunId {
                offset: 0x1808,
                run_id: 3
            })
        );
        d.run_id = 4;
        d.heap_offset += 8;
        assert!(matches!(
            d.validate(),
            Err(Error::DescriptorChecksum { offset: 0x17F8, .. })
        ));
        d.encode();
        assert_eq!(
            d.validate(),
            Err(Error::HeapUnaligned {
                offset: 0x1410,
                heap_offset: 0x30_2008
            })
        );
        d.heap_offset -= 8;
        d.layout = [b'a'; OBJ_LAYOUT_MAX];
        d.encode();
        assert_eq!(
            d.validate(),
            Err(Error::LayoutUnterminated { offset: 0x1000 })
        );
        assert_eq!(d.layout_name().len(), 1024);
        assert!(d.check_layout("a").is_err());
        d.unused[2] = 1;
        assert_eq!(
            d.check_unused_zero(),
            Err(Error::DescriptorNonZeroUnused { offset: 0x1422 })
        );
        d.unused[2] = 0;
        d.pmem_reserved[1] = 1;
        assert_eq!(
            d.check_unused_zero(),
            Err(Error::DescriptorNonZeroUnused { offset: 0x1831 })
        );
        d.unused3 = 0x100;
        assert_eq!(
            d.check_unused_zero(),
            Err(Error::DescriptorNonZeroUnused { offset: 0x1419 })
        );
    }

    #[test]
    fn creation_limits() {
        assert_eq!(
            ObjDescriptor::new((8 << 20) - 4096, ""),
            Err(Error::PoolTooSmall {
                pool_size: (8 << 20) - 4096,
                min: 8 << 20
            })
        );
        assert_eq!(
            obj_initial_image((8 << 20) + 1, ""),
            Err(Error::PoolSizeUnaligned {
                pool_size: (8 << 20) + 1
            })
        );
        let long = "l".repeat(1024);
        assert_eq!(
            obj_initial_image(8 << 20, &long),
            Err(Error::LayoutTooLong {
                len: 1024,
                max: 1023
            })
        );
        assert!(obj_initial_image(8 << 20, &long[..1023]).is_ok());
        assert_eq!(
            obj_initial_image(8 << 20, "a\0b"),
            Err(Error::LayoutNul { at: 1 })
        );
        assert!(obj_initial_image(u64::MAX - 4095, "big").is_ok());
    }

    #[test]
    fn initial_image_shape() {
        let w = obj_initial_image(8 << 20, "mylayout").unwrap();
        assert_eq!(w.len(), 2 + 3 * 1024);
        assert!(w
            .windows(2)
            .all(|p| p[0].offset + p[0].bytes.len() as u64 <= p[1].offset));
        assert_eq!(w[0].offset, 0x1000);
        assert_eq!(w[0].bytes.len(), OBJ_DESC_PERSISTENT_LEN);
        assert_eq!(
            (w[1].offset, w[1].bytes.as_slice()),
            (0x2010, &0xC0u64.to_le_bytes()[..])
        );
        assert_eq!(
            (w[2].offset, w[2].bytes.as_slice()),
            (0x2110, &0x280u64.to_le_bytes()[..])
        );
        assert_eq!(
            (w[3].offset, w[3].bytes.as_slice()),
            (0x23D0, &0x800u64.to_le_bytes()[..])
        );
        let last_lane = &w[w.len() - 2];
        assert_eq!(last_lane.offset, 0x2000 + 1023 * 3072 + 976);
        let heap = w.last().unwrap();
        assert_eq!(heap.offset, 0x30_2000);
        assert_eq!(HeapHeader::decode(&heap.bytes), Ok(HeapHeader::standard()));
    }
}
