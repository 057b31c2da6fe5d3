//! Codec for the PMDK 1.12 pool header (`struct pool_hdr`) and libpmemobj pool
//! metadata, byte for byte as `pmempool` 1.12.1 writes them.
//!
//! This crate does no I/O: decoders take `&[u8]`, encoders return byte
//! arrays, and nothing here reads a file or a clock. `docs/format.md` holds
//! the byte tables; every offset there has a constant here, checked at
//! compile time.
//!
//! Decoding and judging are separate steps. [`PoolHdr::decode`],
//! [`ObjDescriptor::decode`], [`Sds::decode`] and [`HeapHeader::decode`] accept
//! any bytes of sufficient length and never fail otherwise; the `validate*`
//! and `check_*` methods then say what is wrong, naming the field and its
//! offset:
//!
//! * [`PoolHdr::validate_basic`]: what `pmempool sync`'s health check and
//!   `pmempool check` require of each header (not all zero, checksum,
//!   known signature);
//! * [`PoolHdr::validate`]: the per-header checks of opening a pool;
//! * [`PoolHdr::problems`]: everything at once, for reports;
//! * [`Sds::compare`]: the shutdown-state verdict;
//! * [`ObjDescriptor::validate`] and [`HeapHeader::validate`].
//!
//! [`ring_links`] computes the UUID links of all headers of a pool set, and
//! [`obj_initial_image`] the metadata of a new obj pool.
//!
//! The [`heap`] module walks a used pool's libpmemobj heap through a read
//! callback and tells which logical ranges are live, the ones that replicas
//! must agree on.
//!
//! # Example
//!
//! ```
//! use poolsync_header::{
//!     obj_initial_image, ring_links, Features, PoolHdr, PoolType, RawUuid, Sds, SdsVerdict,
//! };
//!
//! // A one-part, one-replica pool: the header links to itself.
//! let part = RawUuid([7; 16]);
//! let links = ring_links(&[[part]])?;
//! let hdr = PoolHdr::new(PoolType::Obj, Features::DEFAULT, RawUuid([1; 16]), part, &links[0][0], 0);
//! let page = hdr.encode_raw();
//!
//! // Decoding never judges; validation does.
//! let decoded = PoolHdr::decode(&page)?;
//! assert_eq!(decoded, hdr);
//! assert_eq!(decoded.validate_basic()?, PoolType::Obj);
//! decoded.validate(PoolType::Obj)?;
//! assert_eq!(Sds::compare(&decoded.sds, &Sds::current_non_pmem()), SdsVerdict::Ok);
//!
//! // A zero page has a valid checksum but is still rejected.
//! assert!(PoolHdr::decode(&[0; 4096])?.validate_basic().is_err());
//!
//! // The descriptor, lane and heap bytes of a new 8 MiB pool.
//! let writes = obj_initial_image(8 << 20, "mylayout")?;
//! assert_eq!(writes[0].offset, 0x1000);
//! # Ok::<(), poolsync_header::Error>(())
//! ```
#![forbid(unsafe_code)]

mod arch;
mod bytes;
mod checksum;
mod features;
pub mod heap;
mod links;
mod obj;
mod pool_hdr;
mod raw_uuid;
mod sds;

pub use arch::{
    alignment_desc_from, alignment_of_type, data_name, format_alignment_desc, machine_class_name,
    machine_name, ArchFlags, ALIGNMENT_TYPES, ALIGNMENT_TYPE_COUNT, DATA_BE, DATA_LE,
    MACHINE_AARCH64, MACHINE_CLASS_64, MACHINE_PPC64, MACHINE_RISCV64, MACHINE_X86_64,
};
pub use checksum::fletcher64;
pub use features::{
    compat_names, format_compat, format_features, format_incompat, format_ro_compat,
    incompat_names, Feature, Features, FEAT_CHECK_BAD_BLOCKS, FEAT_CKSUM_2K, FEAT_SDS,
    FEAT_SINGLEHDR, KNOWN_COMPAT, KNOWN_INCOMPAT, KNOWN_RO_COMPAT,
};
pub use links::{ring_links, HeaderLinks};
pub use obj::{
    obj_initial_image, HeapHeader, LaneUlog, ObjDescriptor, Write, CHUNK_HEADER_SIZE,
    HEAP_CHUNKSIZE, HEAP_CHUNKS_PER_ZONE, HEAP_HDR_CHUNKSIZE_OFF, HEAP_HDR_CHUNKS_PER_ZONE_OFF,
    HEAP_HDR_CSUM_OFF, HEAP_HDR_MAJOR_OFF, HEAP_HDR_MINOR_OFF, HEAP_HDR_RESERVED_LEN,
    HEAP_HDR_RESERVED_OFF, HEAP_HDR_SIGNATURE_OFF, HEAP_HDR_SIZE, HEAP_HDR_UNUSED_OFF, HEAP_MAJOR,
    HEAP_MINOR, HEAP_MIN_SIZE, HEAP_SIGNATURE, LANE_SIZE, LANE_ULOGS,
    OBJ_DESC_CONVERSION_FLAGS_OFF, OBJ_DESC_CSUM_LEN, OBJ_DESC_CSUM_OFF,
    OBJ_DESC_HEAP_CURR_ALLOCATED_OFF, OBJ_DESC_HEAP_OFFSET_OFF, OBJ_DESC_HEAP_SIZE_OFF,
    OBJ_DESC_LANES_OFFSET_OFF, OBJ_DESC_LAYOUT_OFF, OBJ_DESC_LEN, OBJ_DESC_NLANES_OFF,
    OBJ_DESC_OFF, OBJ_DESC_PERSISTENT_LEN, OBJ_DESC_PMEM_RESERVED_LEN, OBJ_DESC_PMEM_RESERVED_OFF,
    OBJ_DESC_ROOT_OFFSET_OFF, OBJ_DESC_ROOT_SIZE_OFF, OBJ_DESC_RUN_ID_OFF, OBJ_DESC_UNUSED3_OFF,
    OBJ_DESC_UNUSED_LEN, OBJ_DESC_UNUSED_OFF, OBJ_HEAP_OFFSET, OBJ_LANES_OFFSET, OBJ_LAYOUT_MAX,
    OBJ_MIN_POOL, OBJ_NLANES, PAGE_SIZE, ULOG_CAPACITY_OFF, ULOG_HEADER_SIZE, ZONE_HEADER_SIZE,
    ZONE_METADATA_SIZE,
};
pub use pool_hdr::{
    ChecksumRange, PoolHdr, PoolType, BLK_MAJOR, BLK_SIGNATURE, LOG_MAJOR, LOG_SIGNATURE,
    OBJ_MAJOR, OBJ_SIGNATURE, POOL_HDR_ALIGNMENT_DESC_OFF, POOL_HDR_ARCH_RESERVED_OFF,
    POOL_HDR_COMPAT_OFF, POOL_HDR_CRTIME_OFF, POOL_HDR_CSUM_2K_END, POOL_HDR_CSUM_4K_END,
    POOL_HDR_CSUM_OFF, POOL_HDR_DATA_OFF, POOL_HDR_INCOMPAT_OFF, POOL_HDR_MACHINE_CLASS_OFF,
    POOL_HDR_MACHINE_OFF, POOL_HDR_MAJOR_OFF, POOL_HDR_NEXT_PART_UUID_OFF,
    POOL_HDR_NEXT_REPL_UUID_OFF, POOL_HDR_POOLSET_UUID_OFF, POOL_HDR_PREV_PART_UUID_OFF,
    POOL_HDR_PREV_REPL_UUID_OFF, POOL_HDR_RO_COMPAT_OFF, POOL_HDR_SDS_OFF, POOL_HDR_SIGNATURE_OFF,
    POOL_HDR_SIZE, POOL_HDR_UNUSED2_LEN, POOL_HDR_UNUSED2_OFF, POOL_HDR_UNUSED_AREA_LEN,
    POOL_HDR_UNUSED_LEN, POOL_HDR_UNUSED_OFF, POOL_HDR_UUID_OFF,
};
pub use raw_uuid::RawUuid;
pub use sds::{
    Sds, SdsReinit, SdsVerdict, SDS_CSUM_OFF, SDS_DIRTY_OFF, SDS_RESERVED_LEN, SDS_RESERVED_OFF,
    SDS_SIZE, SDS_USC_OFF, SDS_UUID_OFF,
};

/// The `Checksum` value of `pmempool info`: `0x… [OK]` when `stored` equals
/// `computed`, else `0x… [wrong! should be: 0x…]`.
pub fn format_checksum(stored: u64, computed: u64) -> String {
    if stored == computed {
        format!("{stored:#x} [OK]")
    } else {
        format!("{stored:#x} [wrong! should be: {computed:#x}]")
    }
}

/// The `Last shutdown` value of `pmempool info` for an SDS dirty byte.
pub fn last_shutdown_name(dirty: u8) -> &'static str {
    if dirty != 0 {
        "dirty"
    } else {
        "clean"
    }
}

/// Why bytes are not a usable header or structure.
///
/// Offsets are byte offsets in the pool header for header errors and logical
/// replica offsets for obj metadata errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is shorter than a pool header.
    #[error("pool header is {len} bytes, expected at least {expected}")]
    Truncated { len: usize, expected: usize },
    /// The input is shorter than another structure.
    #[error("{what} is {len} bytes, expected at least {expected}")]
    ShortBuffer {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    /// Every byte of the header is zero (its checksum 0 would be valid).
    #[error("pool header is all zero")]
    ZeroHeader,
    /// The stored header checksum does not match.
    #[error("invalid pool header checksum at offset {offset}: stored {stored:#018x}, computed {computed:#018x} over the {range}")]
    BadChecksum {
        offset: usize,
        stored: u64,
        computed: u64,
        range: ChecksumRange,
    },
    /// The signature is none of obj, blk and log.
    #[error("unknown pool signature \"{found}\" at offset {offset}")]
    UnknownSignature { offset: usize, found: String },
    /// The signature is another pool type's.
    #[error("wrong pool type {found} at offset {offset}, expected {expected}")]
    WrongPoolType {
        offset: usize,
        expected: PoolType,
        found: PoolType,
    },
    /// The major version is 0.
    #[error("invalid major version 0 at offset {offset}")]
    ZeroMajor { offset: usize },
    /// The major version is not the one PMDK 1.12.1 uses.
    #[error("pool version {found} at offset {offset}, expected {expected}")]
    WrongMajor {
        offset: usize,
        found: u32,
        expected: u32,
    },
    /// incompat has bits PMDK 1.12.1 does not know.
    #[error("unknown incompat feature bits {bits:#x} at offset {offset}")]
    UnknownIncompat { offset: usize, bits: u32 },
    /// ro_compat has bits PMDK 1.12.1 does not know (read-only is unsupported).
    #[error("unknown ro_compat feature bits {bits:#x} at offset {offset}, read-only mode is not supported")]
    UnknownRoCompat { offset: usize, bits: u32 },
    /// An arch flags field differs from the expected machine's.
    #[error("wrong architecture flags: {field} at offset {offset} is {found:#x}, expected {expected:#x}")]
    ArchMismatch {
        field: &'static str,
        offset: usize,
        found: u64,
        expected: u64,
    },
    /// An unused header byte is not zero.
    #[error("non-zero unused pool header byte at offset {offset}")]
    NonZeroUnused { offset: usize },
    /// Text is not a canonical UUID.
    #[error("invalid uuid \"{text}\", expected the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")]
    InvalidUuid { text: String },
    /// No replica was given.
    #[error("no replicas to link")]
    NoReplicas,
    /// A replica has no header-carrying part.
    #[error("replica {replica} has no header-carrying part")]
    ReplicaWithoutHeaders { replica: usize },
    /// The obj descriptor checksum does not match.
    #[error("invalid checksum of pool descriptor at offset {offset:#x}: stored {stored:#018x}, computed {computed:#018x}")]
    DescriptorChecksum {
        offset: u64,
        stored: u64,
        computed: u64,
    },
    /// The layout field holds no NUL.
    #[error("layout name at offset {offset:#x} is not terminated within 1024 bytes")]
    LayoutUnterminated { offset: u64 },
    /// The layout differs from the expected one.
    #[error("wrong layout \"{expected}\", pool created with layout \"{found}\"")]
    WrongLayout { expected: String, found: String },
    /// `heap_offset` is not page aligned.
    #[error("unaligned heap offset {heap_offset:#x} at offset {offset:#x}")]
    HeapUnaligned { offset: u64, heap_offset: u64 },
    /// `run_id` is odd.
    #[error("odd run_id {run_id} at offset {offset:#x}")]
    OddRunId { offset: u64, run_id: u64 },
    /// An unused descriptor byte is not zero.
    #[error("non-zero unused pool descriptor byte at offset {offset:#x}")]
    DescriptorNonZeroUnused { offset: u64 },
    /// The pool size is not a multiple of the page size.
    #[error("pool size {pool_size} is not a multiple of 4096")]
    PoolSizeUnaligned { pool_size: u64 },
    /// The pool is smaller than an obj pool can be.
    #[error("pool size {pool_size} is below the minimum obj pool size {min}")]
    PoolTooSmall { pool_size: u64, min: u64 },
    /// The heap would be smaller than libpmemobj accepts.
    #[error("heap size {heap_size} is below the minimum {min}")]
    HeapTooSmall { heap_size: u64, min: u64 },
    /// The layout name does not fit.
    #[error("layout name is {len} bytes, at most {max} allowed")]
    LayoutTooLong { len: usize, max: usize },
    /// The layout name contains a NUL byte.
    #[error("layout name contains a nul byte at index {at}")]
    LayoutNul { at: usize },
    /// The heap header signature is wrong.
    #[error("invalid heap signature \"{found}\" at offset {offset:#x}")]
    HeapSignature { offset: u64, found: String },
    /// The heap header checksum does not match.
    #[error("invalid heap header checksum at offset {offset:#x}: stored {stored:#018x}, computed {computed:#018x}")]
    HeapChecksum {
        offset: u64,
        stored: u64,
        computed: u64,
    },
    /// Heap metadata (or the descriptor fields that locate it) is not what
    /// libpmemobj writes; `offset` is the logical offset of the field.
    #[error(
        "corrupted heap metadata at offset {offset:#x}: {site} {field} is {value:#x}, {problem}"
    )]
    HeapCorrupt {
        offset: u64,
        site: heap::HeapSite,
        field: &'static str,
        value: u64,
        problem: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_checksum_and_shutdown_wording() {
        assert_eq!(
            format_checksum(0x5121afb00baae3fe, 0x5121afb00baae3fe),
            "0x5121afb00baae3fe [OK]"
        );
        assert_eq!(format_checksum(0x1, 0x2), "0x1 [wrong! should be: 0x2]");
        assert_eq!(last_shutdown_name(0), "clean");
        assert_eq!(last_shutdown_name(1), "dirty");
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let errors = [
            Error::Truncated {
                len: 1,
                expected: 4096,
            },
            Error::ZeroHeader,
            Error::NoReplicas,
            Error::UnknownRoCompat {
                offset: 20,
                bits: 1,
            },
            Error::LayoutNul { at: 0 },
        ];
        for e in errors {
            let m = e.to_string();
            assert!(!m.ends_with('.'), "{m}");
            assert!(m.chars().next().is_some_and(|c| c.is_lowercase()), "{m}");
        }
    }
}
