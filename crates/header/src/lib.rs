//! Codec for the PMDK 1.12 pool header (`struct pool_hdr`) and libpmemobj pool metadata.
//!
//! CONTRACT SKELETON (to be replaced by the implementation): the public items
//! below are the API that the engine and the CLI build against. No I/O here:
//! everything takes `&[u8]` and returns bytes.
#![forbid(unsafe_code)]

use serde::Serialize;

/// Size of the pool header page.
pub const POOL_HDR_SIZE: usize = 4096;
/// Offset of the header checksum.
pub const POOL_HDR_CSUM_OFF: usize = 4088;
/// Offset of the shutdown state (SDS).
pub const POOL_HDR_SDS_OFF: usize = 4024;

pub const OBJ_SIGNATURE: [u8; 8] = *b"PMEMOBJ\0";
pub const BLK_SIGNATURE: [u8; 8] = *b"PMEMBLK\0";
pub const LOG_SIGNATURE: [u8; 8] = *b"PMEMLOG\0";
pub const OBJ_MAJOR: u32 = 6;

/// compat CHECK_BAD_BLOCKS.
pub const FEAT_CHECK_BAD_BLOCKS: u32 = 0x1;
/// incompat SINGLEHDR.
pub const FEAT_SINGLEHDR: u32 = 0x1;
/// incompat CKSUM_2K.
pub const FEAT_CKSUM_2K: u32 = 0x2;
/// incompat SDS (SHUTDOWN_STATE).
pub const FEAT_SDS: u32 = 0x4;

/// A UUID as the 16 raw bytes stored on media (GUID mixed-endian order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawUuid(pub [u8; 16]);
impl RawUuid {
    /// Canonical text form, as `pmempool info` prints it (spec 2.5).
    pub fn to_canonical(&self) -> String { unimplemented!() }
    pub fn is_nil(&self) -> bool { self.0 == [0; 16] }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Features { pub compat: u32, pub incompat: u32, pub ro_compat: u32 }

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArchFlags { pub alignment_desc: u64, pub machine_class: u8, pub data: u8, pub reserved: [u8; 4], pub machine: u16 }
impl ArchFlags {
    /// The flags of the running machine (spec 2.4).
    pub fn current() -> ArchFlags { unimplemented!() }
}

/// Shutdown state, 64 bytes at header offset 4024 (spec 2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sds { pub usc: u64, pub uuid: u64, pub dirty: u8, pub reserved: [u8; 39], pub checksum: u64 }

/// Every field of a 4096-byte pool header, decoded without judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHdr {
    pub signature: [u8; 8],
    pub major: u32,
    pub features: Features,
    pub poolset_uuid: RawUuid,
    pub uuid: RawUuid,
    pub prev_part_uuid: RawUuid,
    pub next_part_uuid: RawUuid,
    pub prev_repl_uuid: RawUuid,
    pub next_repl_uuid: RawUuid,
    pub crtime: u64,
    pub arch_flags: ArchFlags,
    /// Bytes 144..4024 (must be zero on media PMDK wrote).
    pub unused: Vec<u8>,
    pub sds: Sds,
    pub checksum: u64,
}

/// Why bytes are not a usable header / structure. Offsets are byte offsets in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("header is {len} bytes, expected {expected}")]
    Truncated { len: usize, expected: usize },
}

impl PoolHdr {
    /// Decodes any 4096 bytes (errors only on a short buffer).
    pub fn decode(bytes: &[u8]) -> Result<PoolHdr, Error> { let _ = bytes; unimplemented!() }
    /// Encodes with the stored `checksum` field as is.
    pub fn encode_raw(&self) -> [u8; POOL_HDR_SIZE] { unimplemented!() }
    /// Encodes with a freshly computed checksum (2K/4K per own incompat); updates `self.checksum`.
    pub fn encode(&mut self) -> [u8; POOL_HDR_SIZE] { unimplemented!() }
    /// Checksum the header should carry (2K/4K per own incompat).
    pub fn compute_checksum(&self) -> u64 { unimplemented!() }
    pub fn checksum_ok(&self) -> bool { unimplemented!() }
    /// Every byte zero (which has a *valid* checksum 0).
    pub fn is_zero(&self) -> bool { unimplemented!() }
    /// Pool type by exact signature.
    pub fn pool_type(&self) -> Option<PoolType> { unimplemented!() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PoolType { Obj, Blk, Log }

/// PMDK's Fletcher64 variant (spec 2.9). `csum_off` is the 8-byte checksum
/// field; words at or past `skip` (when `Some`) count as zero.
pub fn fletcher64(buf: &[u8], csum_off: usize, skip: Option<usize>) -> u64 { let _ = (buf, csum_off, skip); unimplemented!() }

/// Names of set feature bits, as pmempool prints them (e.g. "CKSUM_2K, SHUTDOWN_STATE").
pub fn incompat_names(mask: u32) -> Vec<&'static str> { let _ = mask; unimplemented!() }
pub fn compat_names(mask: u32) -> Vec<&'static str> { let _ = mask; unimplemented!() }

/// The obj pool descriptor: logical [4096, 8192) of replica 0.. (spec 4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjDescriptor {
    pub layout: [u8; 1024],
    pub lanes_offset: u64,
    pub nlanes: u64,
    pub heap_offset: u64,
    pub unused3: u64,
    pub checksum: u64,
    pub root_offset: u64,
    pub run_id: u64,
    pub root_size: u64,
    pub conversion_flags: u64,
    pub heap_size: u64,
    pub heap_curr_allocated: u64,
}
/// Descriptor bytes as read: logical offsets 0x1000..0x2000 (4096 bytes).
pub const OBJ_DESC_OFF: u64 = 0x1000;
pub const OBJ_DESC_LEN: usize = 0x1000;
impl ObjDescriptor {
    pub fn decode(bytes: &[u8]) -> Result<ObjDescriptor, Error> { let _ = bytes; unimplemented!() }
    /// Layout name up to the first NUL (lossy UTF-8).
    pub fn layout_name(&self) -> String { unimplemented!() }
    pub fn checksum_ok(&self) -> bool { unimplemented!() }
}

/// One non-zero write a fresh obj pool needs, at a replica logical offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write { pub offset: u64, pub bytes: Vec<u8> }

/// Everything a new obj pool of `pool_size` bytes with `layout` needs besides
/// headers and zeroes: descriptor, lane ulog capacities, heap header (spec 4.4).
pub fn obj_initial_image(pool_size: u64, layout: &str) -> Result<Vec<Write>, Error> { let _ = (pool_size, layout); unimplemented!() }
