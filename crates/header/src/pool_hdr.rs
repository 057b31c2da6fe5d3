//! The 4096-byte pool header (`struct pool_hdr`, docs/format.md §2): codec and
//! validation.

use std::fmt;

use serde::Serialize;

use crate::arch::ArchFlags;
use crate::bytes::{
    array, first_nonzero, put, put_u16, put_u32, put_u64, u16_le, u32_le, u64_le, u8_at,
};
use crate::checksum::fletcher64;
use crate::features::{Feature, Features};
use crate::links::HeaderLinks;
use crate::raw_uuid::RawUuid;
use crate::sds::{Sds, SDS_SIZE};
use crate::Error;

/// Size of the pool header page.
pub const POOL_HDR_SIZE: usize = 4096;
/// Offset of the 8-byte signature.
pub const POOL_HDR_SIGNATURE_OFF: usize = 0;
/// Offset of the format major version (`u32`).
pub const POOL_HDR_MAJOR_OFF: usize = 8;
/// Offset of the compat feature mask (`u32`).
pub const POOL_HDR_COMPAT_OFF: usize = 12;
/// Offset of the incompat feature mask (`u32`).
pub const POOL_HDR_INCOMPAT_OFF: usize = 16;
/// Offset of the ro_compat feature mask (`u32`).
pub const POOL_HDR_RO_COMPAT_OFF: usize = 20;
/// Offset of the pool set UUID.
pub const POOL_HDR_POOLSET_UUID_OFF: usize = 24;
/// Offset of this part's UUID.
pub const POOL_HDR_UUID_OFF: usize = 40;
/// Offset of the previous part's UUID.
pub const POOL_HDR_PREV_PART_UUID_OFF: usize = 56;
/// Offset of the next part's UUID.
pub const POOL_HDR_NEXT_PART_UUID_OFF: usize = 72;
/// Offset of the previous replica's part-0 UUID.
pub const POOL_HDR_PREV_REPL_UUID_OFF: usize = 88;
/// Offset of the next replica's part-0 UUID.
pub const POOL_HDR_NEXT_REPL_UUID_OFF: usize = 104;
/// Offset of the creation time (`u64` seconds).
pub const POOL_HDR_CRTIME_OFF: usize = 120;
/// Offset of `arch_flags.alignment_desc` (`u64`).
pub const POOL_HDR_ALIGNMENT_DESC_OFF: usize = 128;
/// Offset of `arch_flags.machine_class`.
pub const POOL_HDR_MACHINE_CLASS_OFF: usize = 136;
/// Offset of `arch_flags.data`.
pub const POOL_HDR_DATA_OFF: usize = 137;
/// Offset of `arch_flags.reserved` (4 bytes).
pub const POOL_HDR_ARCH_RESERVED_OFF: usize = 138;
/// Offset of `arch_flags.machine` (`u16`).
pub const POOL_HDR_MACHINE_OFF: usize = 142;
/// Offset of the first unused area (covered by both checksum variants).
pub const POOL_HDR_UNUSED_OFF: usize = 144;
/// Length of the first unused area.
pub const POOL_HDR_UNUSED_LEN: usize = 1904;
/// Offset of the second unused area, where the 2K checksum range ends.
pub const POOL_HDR_UNUSED2_OFF: usize = 2048;
/// Length of the second unused area.
pub const POOL_HDR_UNUSED2_LEN: usize = 1976;
/// Offset of the shutdown state (SDS).
pub const POOL_HDR_SDS_OFF: usize = 4024;
/// Offset of the header checksum.
pub const POOL_HDR_CSUM_OFF: usize = 4088;
/// Length of both unused areas together, as held in [`PoolHdr::unused`].
pub const POOL_HDR_UNUSED_AREA_LEN: usize = POOL_HDR_SDS_OFF - POOL_HDR_UNUSED_OFF;
/// End of the checksummed range with `CKSUM_2K`.
pub const POOL_HDR_CSUM_2K_END: usize = POOL_HDR_UNUSED2_OFF;
/// End of the checksummed range without `CKSUM_2K`.
pub const POOL_HDR_CSUM_4K_END: usize = POOL_HDR_CSUM_OFF;

const _: () = assert!(POOL_HDR_MAJOR_OFF == POOL_HDR_SIGNATURE_OFF + 8);
const _: () = assert!(POOL_HDR_COMPAT_OFF == POOL_HDR_MAJOR_OFF + 4);
const _: () = assert!(POOL_HDR_INCOMPAT_OFF == POOL_HDR_COMPAT_OFF + 4);
const _: () = assert!(POOL_HDR_RO_COMPAT_OFF == POOL_HDR_INCOMPAT_OFF + 4);
const _: () = assert!(POOL_HDR_POOLSET_UUID_OFF == POOL_HDR_RO_COMPAT_OFF + 4);
const _: () = assert!(POOL_HDR_UUID_OFF == POOL_HDR_POOLSET_UUID_OFF + 16);
const _: () = assert!(POOL_HDR_PREV_PART_UUID_OFF == POOL_HDR_UUID_OFF + 16);
const _: () = assert!(POOL_HDR_NEXT_PART_UUID_OFF == POOL_HDR_PREV_PART_UUID_OFF + 16);
const _: () = assert!(POOL_HDR_PREV_REPL_UUID_OFF == POOL_HDR_NEXT_PART_UUID_OFF + 16);
const _: () = assert!(POOL_HDR_NEXT_REPL_UUID_OFF == POOL_HDR_PREV_REPL_UUID_OFF + 16);
const _: () = assert!(POOL_HDR_CRTIME_OFF == POOL_HDR_NEXT_REPL_UUID_OFF + 16);
const _: () = assert!(POOL_HDR_ALIGNMENT_DESC_OFF == POOL_HDR_CRTIME_OFF + 8);
const _: () = assert!(POOL_HDR_MACHINE_CLASS_OFF == POOL_HDR_ALIGNMENT_DESC_OFF + 8);
const _: () = assert!(POOL_HDR_DATA_OFF == POOL_HDR_MACHINE_CLASS_OFF + 1);
const _: () = assert!(POOL_HDR_ARCH_RESERVED_OFF == POOL_HDR_DATA_OFF + 1);
const _: () = assert!(POOL_HDR_MACHINE_OFF == POOL_HDR_ARCH_RESERVED_OFF + 4);
const _: () = assert!(POOL_HDR_UNUSED_OFF == POOL_HDR_MACHINE_OFF + 2);
const _: () = assert!(POOL_HDR_UNUSED2_OFF == POOL_HDR_UNUSED_OFF + POOL_HDR_UNUSED_LEN);
const _: () = assert!(POOL_HDR_SDS_OFF == POOL_HDR_UNUSED2_OFF + POOL_HDR_UNUSED2_LEN);
const _: () = assert!(POOL_HDR_CSUM_OFF == POOL_HDR_SDS_OFF + SDS_SIZE);
const _: () = assert!(POOL_HDR_SIZE == POOL_HDR_CSUM_OFF + 8);
const _: () = assert!(POOL_HDR_UNUSED_AREA_LEN == 3880);

/// Signature of obj pools.
pub const OBJ_SIGNATURE: [u8; 8] = *b"PMEMOBJ\0";
/// Signature of blk pools.
pub const BLK_SIGNATURE: [u8; 8] = *b"PMEMBLK\0";
/// Signature of log pools.
pub const LOG_SIGNATURE: [u8; 8] = *b"PMEMLOG\0";
/// Format major version of obj pools written by libpmemobj 1.7 and later.
pub const OBJ_MAJOR: u32 = 6;
/// Format major version of blk pools.
pub const BLK_MAJOR: u32 = 1;
/// Format major version of log pools.
pub const LOG_MAJOR: u32 = 1;

/// Pool type, recognised by exact signature match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PoolType {
    /// libpmemobj, `PMEMOBJ\0`.
    Obj,
    /// libpmemblk, `PMEMBLK\0`.
    Blk,
    /// libpmemlog, `PMEMLOG\0`.
    Log,
}

impl PoolType {
    /// The 8-byte signature.
    pub fn signature(self) -> [u8; 8] {
        match self {
            PoolType::Obj => OBJ_SIGNATURE,
            PoolType::Blk => BLK_SIGNATURE,
            PoolType::Log => LOG_SIGNATURE,
        }
    }

    /// The format major version PMDK 1.12.1 writes and expects.
    pub fn major(self) -> u32 {
        match self {
            PoolType::Obj => OBJ_MAJOR,
            PoolType::Blk => BLK_MAJOR,
            PoolType::Log => LOG_MAJOR,
        }
    }

    /// The type whose signature is exactly `sig`.
    pub fn from_signature(sig: &[u8; 8]) -> Option<PoolType> {
        [PoolType::Obj, PoolType::Blk, PoolType::Log]
            .into_iter()
            .find(|t| t.signature() == *sig)
    }

    /// The type's name on pmempool's command line: `obj`, `blk` or `log`.
    pub fn name(self) -> &'static str {
        match self {
            PoolType::Obj => "obj",
            PoolType::Blk => "blk",
            PoolType::Log => "log",
        }
    }
}

impl fmt::Display for PoolType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which bytes a header checksum covers, chosen by the header's own incompat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ChecksumRange {
    /// `CKSUM_2K` set: bytes 0..2048; the rest counts as zero.
    TwoK,
    /// `CKSUM_2K` clear: bytes 0..4088, SDS included.
    FourK,
}

impl ChecksumRange {
    /// The range a header with this incompat mask uses.
    pub fn for_incompat(incompat: u32) -> ChecksumRange {
        if incompat & crate::FEAT_CKSUM_2K != 0 {
            ChecksumRange::TwoK
        } else {
            ChecksumRange::FourK
        }
    }

    /// The first byte offset that no longer contributes.
    pub fn end(self) -> usize {
        match self {
            ChecksumRange::TwoK => POOL_HDR_CSUM_2K_END,
            ChecksumRange::FourK => POOL_HDR_CSUM_4K_END,
        }
    }
}

impl fmt::Display for ChecksumRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChecksumRange::TwoK => "2k range",
            ChecksumRange::FourK => "4k range",
        })
    }
}

/// Every field of a 4096-byte pool header, decoded without judgement.
///
/// Decoding accepts any bytes; the `validate*` and `check_*` methods judge
/// them. Encoding writes every field at its offset, so
/// `PoolHdr::decode(&h.encode_raw())` gives `h` back and
/// `h.encode_raw()` of a decoded header is the original page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHdr {
    /// 7 ASCII characters and a NUL, e.g. `PMEMOBJ\0`.
    pub signature: [u8; 8],
    /// Format major version.
    pub major: u32,
    /// The three feature masks.
    pub features: Features,
    /// Identical in every header of the pool set.
    pub poolset_uuid: RawUuid,
    /// This part's UUID.
    pub uuid: RawUuid,
    /// UUID of the previous header-carrying part of this replica (ring).
    pub prev_part_uuid: RawUuid,
    /// UUID of the next header-carrying part of this replica (ring).
    pub next_part_uuid: RawUuid,
    /// UUID of part 0 of the previous replica (ring).
    pub prev_repl_uuid: RawUuid,
    /// UUID of part 0 of the next replica (ring).
    pub next_repl_uuid: RawUuid,
    /// Creation time: the part file's ctime in seconds when the header was written.
    pub crtime: u64,
    /// Architecture of the machine that wrote the header.
    pub arch_flags: ArchFlags,
    /// Bytes 144..4024, both unused areas ([`POOL_HDR_UNUSED_AREA_LEN`]
    /// bytes; must be zero on media PMDK wrote). Encoding zero-fills a
    /// shorter vector and ignores bytes past that length.
    pub unused: Vec<u8>,
    /// Shutdown state at offset 4024.
    pub sds: Sds,
    /// Stored checksum at offset 4088.
    pub checksum: u64,
}

impl PoolHdr {
    /// A new header as PMDK's create writes it (docs/format.md §16.3): the type's
    /// signature and major, the given features, UUIDs, links and creation
    /// time, the running machine's arch flags, zero unused bytes, a zero SDS
    /// and a fresh checksum.
    ///
    /// Create then initialises the SDS of part 0 (see [`Sds`]) and re-encodes
    /// with [`PoolHdr::encode`].
    pub fn new(
        pool_type: PoolType,
        features: Features,
        poolset_uuid: RawUuid,
        uuid: RawUuid,
        links: &HeaderLinks,
        crtime: u64,
    ) -> PoolHdr {
        let mut hdr = PoolHdr {
            signature: pool_type.signature(),
            major: pool_type.major(),
            features,
            poolset_uuid,
            uuid,
            prev_part_uuid: RawUuid::NIL,
            next_part_uuid: RawUuid::NIL,
            prev_repl_uuid: RawUuid::NIL,
            next_repl_uuid: RawUuid::NIL,
            crtime,
            arch_flags: ArchFlags::current(),
            unused: vec![0; POOL_HDR_UNUSED_AREA_LEN],
            sds: Sds::ZERO,
            checksum: 0,
        };
        hdr.set_links(links);
        hdr.checksum = hdr.compute_checksum();
        hdr
    }

    /// Decodes the first 4096 bytes of `bytes` (errors only on a short
    /// buffer; longer input, such as a whole mapped page, is accepted and the
    /// rest ignored).
    pub fn decode(bytes: &[u8]) -> Result<PoolHdr, Error> {
        let b = bytes.get(..POOL_HDR_SIZE).ok_or(Error::Truncated {
            len: bytes.len(),
            expected: POOL_HDR_SIZE,
        })?;
        let uuid_at = |off| RawUuid(array(b, off));
        Ok(PoolHdr {
            signature: array(b, POOL_HDR_SIGNATURE_OFF),
            major: u32_le(b, POOL_HDR_MAJOR_OFF),
            features: Features {
                compat: u32_le(b, POOL_HDR_COMPAT_OFF),
                incompat: u32_le(b, POOL_HDR_INCOMPAT_OFF),
                ro_compat: u32_le(b, POOL_HDR_RO_COMPAT_OFF),
            },
            poolset_uuid: uuid_at(POOL_HDR_POOLSET_UUID_OFF),
            uuid: uuid_at(POOL_HDR_UUID_OFF),
            prev_part_uuid: uuid_at(POOL_HDR_PREV_PART_UUID_OFF),
            next_part_uuid: uuid_at(POOL_HDR_NEXT_PART_UUID_OFF),
            prev_repl_uuid: uuid_at(POOL_HDR_PREV_REPL_UUID_OFF),
            next_repl_uuid: uuid_at(POOL_HDR_NEXT_REPL_UUID_OFF),
            crtime: u64_le(b, POOL_HDR_CRTIME_OFF),
            arch_flags: ArchFlags {
                alignment_desc: u64_le(b, POOL_HDR_ALIGNMENT_DESC_OFF),
                machine_class: u8_at(b, POOL_HDR_MACHINE_CLASS_OFF),
                data: u8_at(b, POOL_HDR_DATA_OFF),
                reserved: array(b, POOL_HDR_ARCH_RESERVED_OFF),
                machine: u16_le(b, POOL_HDR_MACHINE_OFF),
            },
            unused: b
                .get(POOL_HDR_UNUSED_OFF..POOL_HDR_SDS_OFF)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            sds: Sds::decode(b.get(POOL_HDR_SDS_OFF..).unwrap_or_default())?,
            checksum: u64_le(b, POOL_HDR_CSUM_OFF),
        })
    }

    /// Encodes every field, with the stored `checksum` as is.
    pub fn encode_raw(&self) -> [u8; POOL_HDR_SIZE] {
        let mut b = [0u8; POOL_HDR_SIZE];
        put(&mut b, POOL_HDR_SIGNATURE_OFF, &self.signature);
        put_u32(&mut b, POOL_HDR_MAJOR_OFF, self.major);
        put_u32(&mut b, POOL_HDR_COMPAT_OFF, self.features.compat);
        put_u32(&mut b, POOL_HDR_INCOMPAT_OFF, self.features.incompat);
        put_u32(&mut b, POOL_HDR_RO_COMPAT_OFF, self.features.ro_compat);
        put(&mut b, POOL_HDR_POOLSET_UUID_OFF, &self.poolset_uuid.0);
        put(&mut b, POOL_HDR_UUID_OFF, &self.uuid.0);
        put(&mut b, POOL_HDR_PREV_PART_UUID_OFF, &self.prev_part_uuid.0);
        put(&mut b, POOL_HDR_NEXT_PART_UUID_OFF, &self.next_part_uuid.0);
        put(&mut b, POOL_HDR_PREV_REPL_UUID_OFF, &self.prev_repl_uuid.0);
        put(&mut b, POOL_HDR_NEXT_REPL_UUID_OFF, &self.next_repl_uuid.0);
        put_u64(&mut b, POOL_HDR_CRTIME_OFF, self.crtime);
        let a = &self.arch_flags;
        put_u64(&mut b, POOL_HDR_ALIGNMENT_DESC_OFF, a.alignment_desc);
        put(
            &mut b,
            POOL_HDR_MACHINE_CLASS_OFF,
            &[a.machine_class, a.data],
        );
        put(&mut b, POOL_HDR_ARCH_RESERVED_OFF, &a.reserved);
        put_u16(&mut b, POOL_HDR_MACHINE_OFF, a.machine);
        let unused = self
            .unused
            .get(..POOL_HDR_UNUSED_AREA_LEN)
            .unwrap_or(&self.unused);
        put(&mut b, POOL_HDR_UNUSED_OFF, unused);
        put(&mut b, POOL_HDR_SDS_OFF, &self.sds.encode_raw());
        put_u64(&mut b, POOL_HDR_CSUM_OFF, self.checksum);
        b
    }

    /// Stores a freshly computed checksum (2K/4K per the header's own
    /// incompat) in `self.checksum` and encodes.
    pub fn encode(&mut self) -> [u8; POOL_HDR_SIZE] {
        self.checksum = self.compute_checksum();
        self.encode_raw()
    }

    /// Which bytes this header's checksum covers.
    pub fn checksum_range(&self) -> ChecksumRange {
        ChecksumRange::for_incompat(self.features.incompat)
    }

    /// The checksum the header should carry (2K/4K per its own incompat).
    pub fn compute_checksum(&self) -> u64 {
        fletcher64(
            &self.encode_raw(),
            POOL_HDR_CSUM_OFF,
            Some(self.checksum_range().end()),
        )
    }

    /// Whether the stored checksum matches. Note that an all-zero header
    /// passes (its checksum is 0); see [`PoolHdr::is_zero`].
    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.compute_checksum()
    }

    /// Whether every byte of the header is zero.
    pub fn is_zero(&self) -> bool {
        self.encode_raw().iter().all(|&b| b == 0)
    }

    /// The pool type by exact signature, `None` for anything else.
    pub fn pool_type(&self) -> Option<PoolType> {
        PoolType::from_signature(&self.signature)
    }

    /// The four link fields.
    pub fn links(&self) -> HeaderLinks {
        HeaderLinks {
            prev_part: self.prev_part_uuid,
            next_part: self.next_part_uuid,
            prev_repl: self.prev_repl_uuid,
            next_repl: self.next_repl_uuid,
        }
    }

    /// Overwrites the four link fields (the checksum is not touched).
    pub fn set_links(&mut self, links: &HeaderLinks) {
        self.prev_part_uuid = links.prev_part;
        self.next_part_uuid = links.next_part;
        self.prev_repl_uuid = links.prev_repl;
        self.next_repl_uuid = links.next_repl;
    }

    /// The per-header judgement of `pmempool sync`'s health check
    /// (docs/format.md §17.2, step 6) and of `pmempool check`'s header step
    /// (docs/format.md §21, step 4): the header is not all zero, its checksum
    /// is valid and its signature is one of obj/blk/log. Returns the recognised
    /// type.
    ///
    /// Errors: [`Error::ZeroHeader`], [`Error::BadChecksum`],
    /// [`Error::UnknownSignature`].
    pub fn validate_basic(&self) -> Result<PoolType, Error> {
        if self.is_zero() {
            return Err(Error::ZeroHeader);
        }
        self.check_checksum()?;
        self.pool_type().ok_or_else(|| self.unknown_signature())
    }

    /// The per-header open-time checks of `util_header_check`
    /// (docs/format.md §16.2) for a pool of type `expected` on the running
    /// machine, in PMDK's order: not all zero, major non-zero, signature,
    /// major, feature bits, checksum, arch flags. Cross-header checks (UUIDs,
    /// links, equal features) are the caller's. Unused bytes are not judged
    /// here, as PMDK does not judge them; see [`PoolHdr::check_unused_zero`].
    pub fn validate(&self, expected: PoolType) -> Result<(), Error> {
        self.validate_with_arch(expected, &ArchFlags::current())
    }

    /// [`PoolHdr::validate`] against the given machine's flags instead of the
    /// running one's.
    pub fn validate_with_arch(&self, expected: PoolType, arch: &ArchFlags) -> Result<(), Error> {
        if self.is_zero() {
            return Err(Error::ZeroHeader);
        }
        self.check_major_nonzero()?;
        self.check_signature(expected)?;
        self.check_major(expected)?;
        self.check_features()?;
        self.check_checksum()?;
        self.check_arch(arch)
    }

    /// Every problem of the header at once, for reports: the checks of
    /// [`PoolHdr::validate_with_arch`] (each arch field separately) plus
    /// non-zero unused bytes. An all-zero header yields only
    /// [`Error::ZeroHeader`].
    pub fn problems(&self, expected: PoolType, arch: &ArchFlags) -> Vec<Error> {
        if self.is_zero() {
            return vec![Error::ZeroHeader];
        }
        let mut out = Vec::new();
        let mut push = |r: Result<(), Error>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        push(self.check_major_nonzero());
        push(self.check_signature(expected));
        if self.major != 0 {
            push(self.check_major(expected));
        }
        push(self.check_incompat());
        push(self.check_ro_compat());
        push(self.check_checksum());
        for e in self.arch_mismatches(arch) {
            out.push(e);
        }
        if let Err(e) = self.check_unused_zero() {
            out.push(e);
        }
        out
    }

    /// The stored checksum matches (2K/4K per own incompat).
    pub fn check_checksum(&self) -> Result<(), Error> {
        let computed = self.compute_checksum();
        if self.checksum == computed {
            Ok(())
        } else {
            Err(Error::BadChecksum {
                offset: POOL_HDR_CSUM_OFF,
                stored: self.checksum,
                computed,
                range: self.checksum_range(),
            })
        }
    }

    /// The major version is at least 1.
    pub fn check_major_nonzero(&self) -> Result<(), Error> {
        if self.major == 0 {
            Err(Error::ZeroMajor {
                offset: POOL_HDR_MAJOR_OFF,
            })
        } else {
            Ok(())
        }
    }

    /// The signature is `expected`'s.
    pub fn check_signature(&self, expected: PoolType) -> Result<(), Error> {
        match self.pool_type() {
            Some(t) if t == expected => Ok(()),
            Some(found) => Err(Error::WrongPoolType {
                offset: POOL_HDR_SIGNATURE_OFF,
                expected,
                found,
            }),
            None => Err(self.unknown_signature()),
        }
    }

    /// The major version is the one PMDK 1.12.1 uses for `expected`.
    pub fn check_major(&self, expected: PoolType) -> Result<(), Error> {
        if self.major == expected.major() {
            Ok(())
        } else {
            Err(Error::WrongMajor {
                offset: POOL_HDR_MAJOR_OFF,
                found: self.major,
                expected: expected.major(),
            })
        }
    }

    /// No unknown incompat bits (refuse), then no unknown ro_compat bits
    /// (read-only, which libpmemobj refuses). Unknown compat bits are fine.
    pub fn check_features(&self) -> Result<(), Error> {
        self.check_incompat()?;
        self.check_ro_compat()
    }

    fn check_incompat(&self) -> Result<(), Error> {
        match self.features.unknown().incompat {
            0 => Ok(()),
            bits => Err(Error::UnknownIncompat {
                offset: POOL_HDR_INCOMPAT_OFF,
                bits,
            }),
        }
    }

    fn check_ro_compat(&self) -> Result<(), Error> {
        match self.features.unknown().ro_compat {
            0 => Ok(()),
            bits => Err(Error::UnknownRoCompat {
                offset: POOL_HDR_RO_COMPAT_OFF,
                bits,
            }),
        }
    }

    /// The arch flags equal `arch` (the first differing field is reported,
    /// in PMDK's order: reserved, machine, data, class, alignment).
    pub fn check_arch(&self, arch: &ArchFlags) -> Result<(), Error> {
        match self.arch_mismatches(arch).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn arch_mismatches(&self, arch: &ArchFlags) -> Vec<Error> {
        let a = &self.arch_flags;
        let fields: [(&'static str, usize, u64, u64); 5] = [
            (
                "arch_flags.reserved",
                POOL_HDR_ARCH_RESERVED_OFF,
                u64::from(u32::from_le_bytes(a.reserved)),
                0,
            ),
            (
                "arch_flags.machine",
                POOL_HDR_MACHINE_OFF,
                a.machine.into(),
                arch.machine.into(),
            ),
            (
                "arch_flags.data",
                POOL_HDR_DATA_OFF,
                a.data.into(),
                arch.data.into(),
            ),
            (
                "arch_flags.machine_class",
                POOL_HDR_MACHINE_CLASS_OFF,
                a.machine_class.into(),
                arch.machine_class.into(),
            ),
            (
                "arch_flags.alignment_desc",
                POOL_HDR_ALIGNMENT_DESC_OFF,
                a.alignment_desc,
                arch.alignment_desc,
            ),
        ];
        fields
            .into_iter()
            .filter(|(_, _, found, expected)| found != expected)
            .map(|(field, offset, found, expected)| Error::ArchMismatch {
                field,
                offset,
                found,
                expected,
            })
            .collect()
    }

    /// Bytes 144..4024 are zero, as in every header PMDK writes. PMDK itself
    /// never checks this (with `CKSUM_2K`, bytes 2048.. are not even
    /// checksummed), so treat a failure as a warning unless strictness is wanted.
    pub fn check_unused_zero(&self) -> Result<(), Error> {
        match first_nonzero(&self.unused) {
            None => Ok(()),
            Some(i) => Err(Error::NonZeroUnused {
                offset: POOL_HDR_UNUSED_OFF + i,
            }),
        }
    }

    /// The header as `pmempool feature` leaves it after setting `feature`
    /// to `on` (docs/format.md §24.2): the feature's bit changed, every other
    /// field as it is, and a fresh checksum over the range the new incompat
    /// selects. Disabling `SHUTDOWN_STATE` also zeroes the shutdown state,
    /// as libpmempool does; enabling it leaves the shutdown state as it is.
    pub fn with_feature(&self, feature: Feature, on: bool) -> PoolHdr {
        let mut hdr = self.clone();
        hdr.features = feature.apply(hdr.features, on);
        if feature == Feature::ShutdownState && !on {
            hdr.sds = Sds::ZERO;
        }
        hdr.checksum = hdr.compute_checksum();
        hdr
    }

    /// For a header whose checksum is wrong: the feature whose interrupted
    /// change explains it (docs/format.md §24.3), and the value of the
    /// feature under which the checksum is right.
    ///
    /// `pmempool feature` and `poolsync feature` rewrite a header's
    /// feature masks (bytes 12..24) and its checksum (4088..4096) with one
    /// write; a crash can persist one of the two ends and not the other.
    /// Such a header is right again with the feature's bit changed back
    /// (or forward); nothing else is changed for the test, so a header
    /// damaged in any other way is not taken for one. `None` when the
    /// checksum is right, or no single feature's bit explains it.
    pub fn torn_feature_change(&self) -> Option<(Feature, bool)> {
        if self.checksum_ok() || self.is_zero() {
            return None;
        }
        Feature::ALL
            .into_iter()
            .filter(|f| f.is_changeable())
            .find_map(|f| {
                let on = !f.is_set(&self.features);
                let mut candidate = self.clone();
                candidate.features = f.apply(candidate.features, on);
                candidate.checksum_ok().then_some((f, on))
            })
    }

    fn unknown_signature(&self) -> Error {
        Error::UnknownSignature {
            offset: POOL_HDR_SIGNATURE_OFF,
            found: self.signature.escape_ascii().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchFlags;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The reference header of docs/format.md §2: first 144 bytes, then zeros,
    /// then the checksum.
    fn reference_vector() -> Vec<u8> {
        let mut page = hex("504d454d4f424a00 06000000 01000000 06000000 00000000
             1b3b487370f89b42b5946b552da67746 c1dbfe485bc4c54384a9cba50f3803f3
             e1c246252219134dba8641169c77c118 e1c246252219134dba8641169c77c118
             5f96facce7e16548967be07404735644 5f96facce7e16548967be07404735644
             c0b9036b00000000 10737737f7070000 02 01 00000000 3e00");
        assert_eq!(page.len(), 144);
        page.resize(POOL_HDR_SIZE, 0);
        page[POOL_HDR_CSUM_OFF..].copy_from_slice(&hex("03388c4768ea03b5"));
        page
    }

    #[test]
    fn reference_vector_decodes_and_verifies() {
        let page = reference_vector();
        let h = PoolHdr::decode(&page).unwrap();
        assert_eq!(h.pool_type(), Some(PoolType::Obj));
        assert_eq!(h.major, 6);
        assert_eq!(
            h.features,
            Features {
                compat: 1,
                incompat: 6,
                ro_compat: 0
            }
        );
        assert_eq!(
            h.poolset_uuid.to_canonical(),
            "73483b1b-f870-429b-b594-6b552da67746"
        );
        assert_eq!(h.prev_part_uuid, h.next_part_uuid);
        assert_eq!(h.crtime, 0x6b03_b9c0);
        assert_eq!(h.arch_flags, ArchFlags::x86_64());
        assert_eq!(h.checksum, 0xb503_ea68_478c_3803);
        assert_eq!(h.checksum_range(), ChecksumRange::TwoK);
        assert!(h.checksum_ok());
        assert_eq!(h.encode_raw().as_slice(), page.as_slice());
        assert_eq!(h.validate_basic(), Ok(PoolType::Obj));
        assert_eq!(
            h.validate_with_arch(PoolType::Obj, &ArchFlags::x86_64()),
            Ok(())
        );
        assert!(h.problems(PoolType::Obj, &ArchFlags::x86_64()).is_empty());
        assert_eq!(h.check_unused_zero(), Ok(()));
    }

    #[test]
    fn two_k_checksum_ignores_the_upper_half_but_four_k_does_not() {
        let mut h = PoolHdr::decode(&reference_vector()).unwrap();
        h.unused[3000] = 0xAA;
        h.sds.set_dirty();
        assert!(h.checksum_ok());
        assert_eq!(
            h.problems(PoolType::Obj, &ArchFlags::x86_64()),
            vec![Error::NonZeroUnused { offset: 3144 }]
        );
        h.features.incompat &= !crate::FEAT_CKSUM_2K;
        assert!(!h.checksum_ok());
        let stored = h.checksum;
        let fresh = h.encode();
        assert!(h.checksum_ok());
        assert_ne!(h.checksum, stored);
        assert_eq!(PoolHdr::decode(&fresh).unwrap(), h);
        assert_eq!(
            fletcher64(&fresh, POOL_HDR_CSUM_OFF, None),
            fletcher64(&fresh, POOL_HDR_CSUM_OFF, Some(POOL_HDR_CSUM_4K_END))
        );
    }

    #[test]
    fn zero_header_is_rejected_despite_a_valid_checksum() {
        let h = PoolHdr::decode(&[0u8; POOL_HDR_SIZE]).unwrap();
        assert!(h.checksum_ok());
        assert!(h.is_zero());
        assert_eq!(h.validate_basic(), Err(Error::ZeroHeader));
        assert_eq!(h.validate(PoolType::Obj), Err(Error::ZeroHeader));
        assert_eq!(
            h.problems(PoolType::Obj, &ArchFlags::current()),
            vec![Error::ZeroHeader]
        );
    }

    #[test]
    fn validation_reports_field_and_offset() {
        let x86 = ArchFlags::x86_64();
        let base = PoolHdr::decode(&reference_vector()).unwrap();

        let mut h = base.clone();
        h.checksum ^= 1;
        assert!(matches!(
            h.validate_basic(),
            Err(Error::BadChecksum {
                offset: 4088,
                range: ChecksumRange::TwoK,
                ..
            })
        ));

        let mut h = base.clone();
        h.signature = *b"PMEMXYZ\0";
        h.encode();
        let e = h.validate_basic().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown pool signature \"PMEMXYZ\\x00\" at offset 0"
        );

        let mut h = base.clone();
        h.signature = BLK_SIGNATURE;
        h.encode();
        assert_eq!(h.validate_basic(), Ok(PoolType::Blk));
        assert_eq!(
            h.validate_with_arch(PoolType::Obj, &x86),
            Err(Error::WrongPoolType {
                offset: 0,
                expected: PoolType::Obj,
                found: PoolType::Blk
            })
        );

        let mut h = base.clone();
        h.major = 0;
        h.encode();
        assert_eq!(
            h.validate_with_arch(PoolType::Obj, &x86),
            Err(Error::ZeroMajor { offset: 8 })
        );
        h.major = 5;
        h.encode();
        assert_eq!(
            h.validate_with_arch(PoolType::Obj, &x86),
            Err(Error::WrongMajor {
                offset: 8,
                found: 5,
                expected: 6
            })
        );

        let mut h = base.clone();
        h.features.incompat |= 0x10;
        h.features.compat |= 0x80;
        h.encode();
        assert_eq!(
            h.validate_with_arch(PoolType::Obj, &x86),
            Err(Error::UnknownIncompat {
                offset: 16,
                bits: 0x10
            })
        );
        let mut h = base.clone();
        h.features.compat |= 0x80;
        h.features.ro_compat = 0x3;
        h.encode();
        assert_eq!(
            h.validate_with_arch(PoolType::Obj, &x86),
            Err(Error::UnknownRoCompat {
                offset: 20,
                bits: 0x3
            })
        );

        let mut h = base.clone();
        h.arch_flags.machine = crate::arch::MACHINE_AARCH64;
        h.arch_flags.alignment_desc = 0;
        h.encode();
        assert_eq!(
            h.validate_with_arch(PoolType::Obj, &x86),
            Err(Error::ArchMismatch {
                field: "arch_flags.machine",
                offset: 142,
                found: 183,
                expected: 62
            })
        );
        let all = h.problems(PoolType::Obj, &x86);
        assert_eq!(all.len(), 2);
        assert!(matches!(
            all[1],
            Error::ArchMismatch {
                field: "arch_flags.alignment_desc",
                offset: 128,
                ..
            }
        ));

        // Wrong signature, zero major and a bad checksum all at once.
        let mut h = base;
        h.signature = *b"PMEMLOG\0";
        h.major = 0;
        assert_eq!(h.problems(PoolType::Obj, &x86).len(), 3);
    }

    #[test]
    fn new_header_is_valid_on_this_machine() {
        let links = HeaderLinks {
            prev_part: RawUuid([1; 16]),
            next_part: RawUuid([2; 16]),
            prev_repl: RawUuid([3; 16]),
            next_repl: RawUuid([4; 16]),
        };
        let h = PoolHdr::new(
            PoolType::Obj,
            Features::DEFAULT,
            RawUuid([9; 16]),
            RawUuid([5; 16]),
            &links,
            1_700_000_000,
        );
        assert_eq!(h.links(), links);
        assert!(h.checksum_ok());
        assert_eq!(h.validate(PoolType::Obj), Ok(()));
        assert_eq!(h.check_unused_zero(), Ok(()));
        assert_eq!(PoolHdr::decode(&h.encode_raw()), Ok(h));
    }

    #[test]
    fn a_feature_change_rewrites_the_masks_and_the_checksum_only() {
        let base = PoolHdr::decode(&reference_vector()).unwrap();
        let off = base.with_feature(Feature::ShutdownState, false);
        assert!(off.checksum_ok());
        assert_eq!(off.features.incompat, crate::FEAT_CKSUM_2K);
        let (a, b) = (base.encode_raw(), off.encode_raw());
        let differ: Vec<usize> = (0..POOL_HDR_SIZE).filter(|&i| a[i] != b[i]).collect();
        assert!(
            differ
                .iter()
                .all(|&i| i == POOL_HDR_INCOMPAT_OFF || i >= POOL_HDR_CSUM_OFF),
            "{differ:?}"
        );
        // Back on: the very bytes of the original (its SDS was zero).
        assert_eq!(off.with_feature(Feature::ShutdownState, true), base);

        // Disabling SHUTDOWN_STATE zeroes a dirty shutdown state.
        let mut dirty = base.clone();
        dirty.sds.set_dirty();
        dirty.encode();
        assert_eq!(
            dirty.with_feature(Feature::ShutdownState, false).sds,
            Sds::ZERO
        );
        // CKSUM_2K off: the checksum covers 4K from then on.
        let four_k = off.with_feature(Feature::Cksum2k, false);
        assert_eq!(four_k.checksum_range(), ChecksumRange::FourK);
        assert!(four_k.checksum_ok());
        assert_eq!(
            four_k.with_feature(Feature::CheckBadBlocks, false).features,
            Features::default()
        );
    }

    #[test]
    fn a_torn_feature_change_is_recognised_from_either_end() {
        let base = PoolHdr::decode(&reference_vector()).unwrap();
        assert_eq!(base.torn_feature_change(), None);
        for (feature, on, from) in [
            (Feature::ShutdownState, false, base.clone()),
            (Feature::CheckBadBlocks, false, base.clone()),
            (
                Feature::Cksum2k,
                false,
                base.with_feature(Feature::ShutdownState, false),
            ),
            (
                Feature::Cksum2k,
                true,
                base.with_feature(Feature::ShutdownState, false)
                    .with_feature(Feature::Cksum2k, false),
            ),
        ] {
            let new = from.with_feature(feature, on);
            let (old_b, new_b) = (from.encode_raw(), new.encode_raw());
            // The first 512-byte sector of one, the rest of the other.
            for (head, tail) in [(&new_b, &old_b), (&old_b, &new_b)] {
                let mut torn = tail.to_vec();
                torn[..512].copy_from_slice(&head[..512]);
                let h = PoolHdr::decode(&torn).unwrap();
                assert!(!h.checksum_ok(), "{feature} {on}");
                let (f, value) = h.torn_feature_change().expect("recognised");
                assert_eq!(f, feature);
                // The value under which the checksum is right is that of
                // the half holding the checksum.
                let tail_hdr = PoolHdr::decode(tail.as_slice()).unwrap();
                assert_eq!(value, feature.is_set(&tail_hdr.features));
            }
        }
        // Other damage is not taken for a torn feature change.
        let mut h = base.clone();
        h.uuid.0[0] ^= 1;
        assert_eq!(h.torn_feature_change(), None);
        let mut h = base;
        h.features.incompat ^= 0x8;
        assert_eq!(h.torn_feature_change(), None);
    }

    #[test]
    fn short_input_is_an_error_and_long_input_is_cut() {
        assert_eq!(
            PoolHdr::decode(&[0u8; 100]),
            Err(Error::Truncated {
                len: 100,
                expected: 4096
            })
        );
        let mut long = reference_vector();
        long.extend_from_slice(&[0xFF; 10]);
        assert!(PoolHdr::decode(&long).unwrap().checksum_ok());
    }
}
