//! The health of an open pool set, judged as `pmempool sync` judges it
//! (docs/format.md §17.2, `replica_check_poolset_health`, steps 1–14).
//!
//! [`inspect`] never writes. It produces per-part and per-replica verdicts,
//! each with its reason, the hard inconsistencies that make a sync
//! impossible, the source replica (the lowest-index healthy one) and the
//! pool size stored in the replicas' descriptors. `check`, `info` and the
//! sync planner share it.
//!
//! Bad blocks (step 3) are not examined yet: [`Health::check_bad_blocks`]
//! only records whether the pool asks for it (compat CHECK_BAD_BLOCKS). On
//! ordinary files the bad-block query finds none, which is what is assumed.
//! The shutdown state (step 8) is compared with a current state of zero
//! unsafe-shutdown count and zero device id, which is what PMDK computes on
//! storage without those counters (docs/format.md §6).

use std::fmt;
use std::path::PathBuf;

use poolsync_header::{
    ArchFlags, Feature, Features, ObjDescriptor, PoolHdr, PoolType, Sds, SdsVerdict,
    FEAT_CHECK_BAD_BLOCKS, FEAT_SDS, FEAT_SINGLEHDR, OBJ_DESC_LEN, OBJ_DESC_OFF,
};
use poolsync_pmem::PartFile;
use serde::Serialize;

use crate::open::{HeaderState, OpenSet, PartStatus};

/// Serializes a 64-bit checksum or mask as a `0x…` string: JSON numbers
/// above 2^53 lose precision in many readers.
pub(crate) fn ser_hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// Why one part is BROKEN (docs/format.md §17.2, steps 1, 5, 6, 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PartFault {
    /// Step 1: the part file does not exist.
    Missing,
    /// Step 1: the part cannot be stat-ed or opened, or is not a regular file.
    Inaccessible {
        /// What the system said.
        reason: String,
    },
    /// Step 1: the file's size differs from the configured size.
    SizeMismatch {
        /// The file's size.
        actual: u64,
        /// The configured size.
        configured: u64,
    },
    /// Step 5: the header page cannot be read.
    HeaderUnreadable {
        /// Why.
        reason: String,
    },
    /// Step 6: the header checksum is wrong.
    BadChecksum {
        /// The checksum stored at header offset 4088.
        #[serde(serialize_with = "ser_hex")]
        stored: u64,
        /// The checksum the header should carry.
        #[serde(serialize_with = "ser_hex")]
        computed: u64,
    },
    /// Step 6: the header is all zero (whose checksum, 0, is valid).
    ZeroHeader,
    /// Step 6: the signature is not PMEMOBJ, PMEMBLK or PMEMLOG.
    UnknownSignature {
        /// The 8 signature bytes, printable ASCII or `\xNN`.
        signature: String,
    },
    /// The header has a valid checksum, but libpmemobj refuses to open a
    /// pool with it (docs/format.md §16.2, checks 1 to 5): a major version
    /// other than obj's, another pool type, unknown incompat or ro_compat
    /// bits, another machine's architecture flags.
    Refused {
        /// What libpmemobj refuses, with the field's offset.
        problem: String,
    },
    /// Step 7: the header's SINGLEHDR bit disagrees with the pool set's option.
    SingleHdrMismatch {
        /// Whether the header has incompat SINGLEHDR.
        header: bool,
        /// Whether the pool set file has OPTION SINGLEHDR.
        poolset: bool,
    },
}

impl fmt::Display for PartFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartFault::Missing => f.write_str("the part file is missing"),
            PartFault::Inaccessible { reason } => write!(f, "the part file cannot be opened: {reason}"),
            PartFault::SizeMismatch { actual, configured } => {
                write!(f, "file size does not match config: {actual} != {configured}")
            }
            PartFault::HeaderUnreadable { reason } => write!(f, "the pool header cannot be read: {reason}"),
            PartFault::BadChecksum { stored, computed } => write!(
                f,
                "invalid checksum of pool header (offset 4088: stored {stored:#x}, should be {computed:#x})"
            ),
            PartFault::ZeroHeader => f.write_str("the pool header is all zero"),
            PartFault::UnknownSignature { signature } => {
                write!(f, "invalid signature \"{signature}\" in the pool header (offset 0)")
            }
            PartFault::Refused { problem } => {
                write!(f, "libpmemobj refuses to open the pool with this header: {problem}")
            }
            PartFault::SingleHdrMismatch { header, poolset } => write!(
                f,
                "the header's SINGLEHDR flag ({}) does not match the pool set option ({})",
                on_off(*header),
                on_off(*poolset)
            ),
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "set"
    } else {
        "not set"
    }
}

/// Why a whole replica is BROKEN (docs/format.md §17.2, steps 8, 13, 14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplicaFault {
    /// Step 8: part 0 could not be opened or its header read, so the shutdown
    /// state cannot be verified.
    ShutdownStateUnverifiable,
    /// Step 8: the shutdown state records an ADR failure.
    AdrFailure,
    /// Step 13: the pool descriptor cannot be read.
    DescriptorUnreadable {
        /// Why.
        reason: String,
    },
    /// Step 13: `heap_offset + heap_size` is below the pool type's minimum.
    PoolTooSmall {
        /// `heap_offset + heap_size` from the descriptor.
        size: u64,
        /// The type's minimum pool size.
        min: u64,
    },
    /// Step 14: the obj descriptor checksum is wrong.
    DescriptorChecksum {
        /// The checksum stored at logical 0x17f8.
        #[serde(serialize_with = "ser_hex")]
        stored: u64,
        /// The checksum the descriptor should carry.
        #[serde(serialize_with = "ser_hex")]
        computed: u64,
    },
}

impl fmt::Display for ReplicaFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaFault::ShutdownStateUnverifiable => {
                f.write_str("part 0 is broken (not opened or its header unreadable), so the shutdown state cannot be verified")
            }
            ReplicaFault::AdrFailure => {
                f.write_str("an ADR failure was detected (shutdown state at header offset 4024), the pool might be corrupted")
            }
            ReplicaFault::DescriptorUnreadable { reason } => write!(f, "the pool descriptor cannot be read: {reason}"),
            ReplicaFault::PoolTooSmall { size, min } => write!(
                f,
                "pool size {size} from the descriptor (heap_offset + heap_size) is smaller than the minimum {min}"
            ),
            ReplicaFault::DescriptorChecksum { stored, computed } => write!(
                f,
                "invalid checksum of pool descriptor (logical offset 0x17f8: stored {stored:#x}, should be {computed:#x})"
            ),
        }
    }
}

/// A hard error of steps 2 and 9–13: the set cannot be synchronized at all.
/// Messages carry PMDK's wording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Inconsistency {
    /// Step 2: no header-carrying part of any replica could be opened.
    NoReadablePart,
    /// Step 9: two unbroken parts of one replica carry different poolset UUIDs.
    PartsPoolsetUuid {
        /// The replica.
        replica: usize,
        /// The first unbroken part.
        first_part: usize,
        /// The part that differs from it.
        part: usize,
    },
    /// Step 9: two unbroken parts of one replica name different neighbour replicas.
    PartsReplicaUuids {
        /// The replica.
        replica: usize,
        /// The first unbroken part.
        first_part: usize,
        /// The part that differs from it.
        part: usize,
    },
    /// Step 9: consecutive unbroken parts do not link to each other.
    PartsNotLinked {
        /// The replica.
        replica: usize,
        /// The part.
        part: usize,
        /// The next part in the ring.
        next_part: usize,
    },
    /// poolsync's step 9a: unbroken headers carry different feature masks,
    /// as an interrupted `feature -e|-d` leaves them (docs/format.md §24.3).
    /// libpmemobj refuses a replica whose parts disagree, and a sync would
    /// give rebuilt parts the source's masks, mixing them further.
    FeaturesDiffer {
        /// The first unbroken header-carrying part of the pool.
        first_replica: usize,
        /// Its part index.
        first_part: usize,
        /// The part whose masks differ from it.
        replica: usize,
        /// Its part index.
        part: usize,
        /// The one feature whose bit differs, when only one does.
        feature: Option<Feature>,
    },
    /// poolsync's step 9a: a header whose checksum is wrong only because a
    /// change of `feature` was interrupted while it was written (its
    /// checksum is right with the feature's bit changed, docs/format.md
    /// §24.3). Rebuilding it would undo half a change.
    FeatureChangeTorn {
        /// The replica.
        replica: usize,
        /// The part.
        part: usize,
        /// The feature being changed.
        feature: Feature,
    },
    /// Step 10: no replica has a healthy header.
    NoHealthyReplica,
    /// Step 10: a replica carries another poolset UUID than the first healthy one.
    ReplicasPoolsetUuid {
        /// The first replica with a healthy header.
        healthy_replica: usize,
        /// The replica that differs.
        replica: usize,
    },
    /// Step 11: adjacent replicas do not link to each other.
    ReplicaUuids {
        /// The replica.
        replica: usize,
        /// The next replica in the ring.
        next_replica: usize,
    },
    /// Step 11: the replicas on both sides of a broken replica do not link across it.
    BorderUuids {
        /// The replica before the broken one.
        replica: usize,
    },
    /// Step 12: healthy replicas form a ring shorter than the set.
    AlienReplica {
        /// The replica closing the short ring.
        replica: usize,
    },
    /// Step 13: a healthy replica holds a pool larger than the pool set's pool size.
    ReplicasTooSmall {
        /// The replica.
        replica: usize,
        /// Its `heap_offset + heap_size`.
        pool_size: u64,
        /// The pool set's pool size (smallest replica net size).
        set_pool_size: u64,
    },
    /// Step 13: healthy replicas store different pool sizes.
    PoolSizesDiffer {
        /// The first healthy replica.
        first_replica: usize,
        /// Its pool size.
        first_size: u64,
        /// The replica that differs.
        replica: usize,
        /// Its pool size.
        size: u64,
    },
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inconsistency::NoReadablePart => {
                f.write_str("reading features failed: no pool header of any replica could be read")
            }
            Inconsistency::PartsPoolsetUuid { replica, first_part, part } => write!(
                f,
                "different poolset uuids in parts from the same replica (repn {replica}, parts {first_part} and {part}) - cannot synchronize"
            ),
            Inconsistency::PartsReplicaUuids { replica, first_part, part } => write!(
                f,
                "different adjacent replica UUID between parts (repn {replica}, parts {first_part} and {part}) - cannot synchronize"
            ),
            Inconsistency::PartsNotLinked { replica, part, next_part } => write!(
                f,
                "two consecutive unbroken parts are not linked to each other (repn {replica}, parts {part} and {next_part}) - cannot synchronize"
            ),
            Inconsistency::FeaturesDiffer { first_replica, first_part, replica, part, feature: Some(feature) } => write!(
                f,
                "replica {replica} part {part} and replica {first_replica} part {first_part} disagree on {feature} (pool header offsets 12..24), as an interrupted feature change leaves them - cannot synchronize"
            ),
            Inconsistency::FeaturesDiffer { first_replica, first_part, replica, part, feature: None } => write!(
                f,
                "features mismatch detected between replica {first_replica} part {first_part} and replica {replica} part {part} (pool header offsets 12..24) - cannot synchronize"
            ),
            Inconsistency::FeatureChangeTorn { replica, part, feature } => write!(
                f,
                "the pool header of replica {replica} part {part} was torn while a change of {feature} was written (its checksum is right with {feature} changed back) - cannot synchronize"
            ),
            Inconsistency::NoHealthyReplica => f.write_str("no healthy replica found"),
            Inconsistency::ReplicasPoolsetUuid { healthy_replica, replica } => write!(
                f,
                "inconsistent poolset uuids between replicas {healthy_replica} and {replica} - cannot synchronize"
            ),
            Inconsistency::ReplicaUuids { replica, next_replica } => {
                write!(f, "inconsistent replica uuids between replicas {replica} and {next_replica}")
            }
            Inconsistency::BorderUuids { replica } => {
                write!(f, "inconsistent replica uuids on borders of replica {replica}")
            }
            Inconsistency::AlienReplica { replica } => write!(
                f,
                "alien replica found (probably coming from a different poolset): healthy replicas up to replica {replica} form a ring of their own"
            ),
            Inconsistency::ReplicasTooSmall { replica, pool_size, set_pool_size } => write!(
                f,
                "some replicas are too small to hold synchronized data (replica {replica} holds a pool of {pool_size} bytes, the pool set's pool size is {set_pool_size})"
            ),
            Inconsistency::PoolSizesDiffer { first_replica, first_size, replica, size } => write!(
                f,
                "pool sizes from different replicas differ (replica {first_replica}: {first_size}, replica {replica}: {size})"
            ),
        }
    }
}

/// The verdict on one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartHealth {
    /// Replica index.
    pub replica: usize,
    /// Part index.
    pub part: usize,
    /// The part's path.
    pub path: PathBuf,
    /// Whether the part carries a pool header (part < nhdrs).
    pub has_header: bool,
    /// Why the part is BROKEN; `None` when its own checks passed.
    pub fault: Option<PartFault>,
    /// The fault as text naming the part.
    pub message: Option<String>,
}

/// The verdict on one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaHealth {
    /// Replica index.
    pub replica: usize,
    /// Why the whole replica is BROKEN (every part must be rebuilt).
    pub fault: Option<ReplicaFault>,
    /// The replica fault as text naming the replica.
    pub message: Option<String>,
    /// `true` when the replica or any of its parts is BROKEN.
    pub broken: bool,
    /// `true` when nothing is broken (and, once bad blocks are examined, none were found).
    pub healthy: bool,
    /// `heap_offset + heap_size` from the replica's descriptor, when its
    /// header and descriptor are healthy (step 14).
    pub pool_size: Option<u64>,
    /// The parts.
    pub parts: Vec<PartHealth>,
}

impl ReplicaHealth {
    /// Why the replica is not healthy, as text naming it: its own fault,
    /// or its first faulty part's. A shutdown state that cannot be
    /// verified only follows from part 0's fault, whose message says what
    /// happened and to which file (a read that failed with EIO, say), so
    /// that one is given instead. `None` when nothing is wrong.
    pub fn reason(&self) -> Option<String> {
        let part = || self.parts.iter().find_map(|p| p.message.clone());
        match self.fault {
            Some(ReplicaFault::ShutdownStateUnverifiable) => {
                part().or_else(|| self.message.clone())
            }
            _ => self.message.clone().or_else(part),
        }
    }
}

/// Why replica `source` has no pool size to copy: the reason it is not
/// healthy (headers read again before a remote update may fail where the
/// first read did not), or, when it is, that the size is not known.
pub(crate) fn no_pool_size(health: &Health, source: usize) -> String {
    match health.replicas.get(source).and_then(ReplicaHealth::reason) {
        Some(why) => format!("replica {source} cannot be the source: {why}"),
        None => format!("replica {source}: the pool size is not known"),
    }
}

/// The health of a whole pool set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Per-replica verdicts.
    pub replicas: Vec<ReplicaHealth>,
    /// Feature masks of the first readable header (step 2, not validated).
    pub features: Option<Features>,
    /// compat CHECK_BAD_BLOCKS: the pool asks for bad-block checks, which
    /// poolsync does not perform yet.
    pub check_bad_blocks: bool,
    /// incompat SDS: the shutdown state was considered (step 4).
    pub sds_active: bool,
    /// The pool set's pool size from the configured part sizes.
    pub set_pool_size: u64,
    /// Hard errors: while any is present, the set cannot be synchronized.
    pub inconsistencies: Vec<Inconsistency>,
    /// The lowest-index healthy replica: the source of a sync.
    pub source: Option<usize>,
    /// `heap_offset + heap_size` of the source replica: the bytes a sync copies.
    pub pool_size: Option<u64>,
}

impl Health {
    /// `true` when every replica is healthy and nothing is inconsistent:
    /// a sync has nothing to do.
    pub fn is_healthy(&self) -> bool {
        self.inconsistencies.is_empty() && self.replicas.iter().all(|r| r.healthy)
    }

    /// The source replica, when a sync is possible (no inconsistency).
    pub fn sync_source(&self) -> Option<usize> {
        if self.inconsistencies.is_empty() {
            self.source
        } else {
            None
        }
    }

    /// Replicas the pool does not have yet: none of their parts exists,
    /// and the UUID ring of the others does not close through them (one of
    /// the ring inconsistencies), as when REPLICA lines are added to a pool
    /// set file by hand. Sync cannot rebuild them; transform adds them.
    pub fn new_replicas(&self) -> Vec<usize> {
        let ring = self.inconsistencies.iter().any(|i| {
            matches!(
                i,
                Inconsistency::AlienReplica { .. }
                    | Inconsistency::BorderUuids { .. }
                    | Inconsistency::ReplicaUuids { .. }
            )
        });
        if !ring {
            return Vec::new();
        }
        self.replicas
            .iter()
            .filter(|r| {
                !r.parts.is_empty()
                    && r.parts
                        .iter()
                        .all(|p| matches!(p.fault, Some(PartFault::Missing)))
            })
            .map(|r| r.replica)
            .collect()
    }

    /// `true` when part `part` of replica `replica` must be rebuilt: its own
    /// fault or its replica's (PMDK's `replica_is_part_broken`).
    pub fn part_broken(&self, replica: usize, part: usize) -> bool {
        self.replicas.get(replica).is_some_and(|r| {
            r.fault.is_some() || r.parts.get(part).is_some_and(|p| p.fault.is_some())
        })
    }
}

/// Why [`choose_source`] chose no replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRefusal {
    /// `--source N` names a replica the pool set does not have.
    NoSuchReplica {
        /// The replica asked for.
        requested: usize,
        /// The highest replica index.
        last: usize,
    },
    /// `--source N` names a replica that may not be the source.
    Unusable {
        /// The replica asked for.
        requested: usize,
    },
    /// No replica may be the source.
    NoneUsable,
}

/// The replica data is read from: `requested` when given (it must exist
/// and be usable), otherwise the lowest-index usable replica, as
/// libpmempool chooses (docs/format.md §17.4). Sync, verification and the
/// health check all choose here; what "usable" means is theirs to say.
pub fn choose_source(
    replicas: usize,
    requested: Option<usize>,
    usable: impl Fn(usize) -> bool,
) -> Result<usize, SourceRefusal> {
    match requested {
        Some(n) if n >= replicas => Err(SourceRefusal::NoSuchReplica {
            requested: n,
            last: replicas.saturating_sub(1),
        }),
        Some(n) if !usable(n) => Err(SourceRefusal::Unusable { requested: n }),
        Some(n) => Ok(n),
        None => (0..replicas)
            .find(|&r| usable(r))
            .ok_or(SourceRefusal::NoneUsable),
    }
}

/// `true` when a stored shutdown state records an ADR failure against the
/// current state of storage without unsafe-shutdown counters
/// (docs/format.md §6).
pub fn sds_adr_failure(stored: &Sds) -> bool {
    Sds::compare(stored, &Sds::current_non_pmem()) == SdsVerdict::AdrFailure
}

/// Printable form of a signature: ASCII as is, other bytes as `\xNN`, trailing NULs dropped.
pub fn signature_text(sig: &[u8]) -> String {
    let trimmed = match sig.iter().rposition(|&b| b != 0) {
        Some(i) => &sig[..=i],
        None => &[][..],
    };
    let mut out = String::new();
    for &b in trimmed {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Minimum pool size of a pool type (docs/format.md §14.2).
pub fn min_pool_size(ty: PoolType) -> u64 {
    match ty {
        PoolType::Obj => poolsync_poolset::OBJ_MIN_POOL,
        PoolType::Blk => (16 << 20) + (8 << 10),
        PoolType::Log => 2 << 20,
    }
}

/// Reads and decodes the obj descriptor (logical 0x1000..0x2000) of a replica.
pub fn read_descriptor<F: PartFile>(
    set: &OpenSet<F>,
    replica: usize,
) -> Result<ObjDescriptor, String> {
    let mut bytes = vec![0u8; OBJ_DESC_LEN];
    set.read_logical(replica, OBJ_DESC_OFF, &mut bytes)
        .map_err(|e| e.to_string())?;
    ObjDescriptor::decode(&bytes).map_err(|e| e.to_string())
}

/// Working state of the health check: one flag set per part and replica.
struct Judge<'a, F> {
    set: &'a OpenSet<F>,
    part_faults: Vec<Vec<Option<PartFault>>>,
    replica_faults: Vec<Option<ReplicaFault>>,
}

impl<F: PartFile> Judge<'_, F> {
    /// `replica_is_part_broken`: the part's own flag or its replica's.
    fn part_broken(&self, r: usize, p: usize) -> bool {
        let Some(faults) = self.part_faults.get(r) else {
            return true;
        };
        let n = faults.len().max(1);
        self.replica_faults.get(r).is_some_and(Option::is_some)
            || faults.get(p % n).is_some_and(Option::is_some)
    }

    /// `replica_is_replica_broken`.
    fn replica_broken(&self, r: usize) -> bool {
        self.replica_faults.get(r).is_some_and(Option::is_some)
            || self
                .part_faults
                .get(r)
                .is_some_and(|f| f.iter().any(Option::is_some))
    }

    fn nhdrs(&self, r: usize) -> usize {
        self.set.replicas.get(r).map_or(0, |rep| rep.nhdrs)
    }

    /// The header of part `p` of replica `r` (index taken modulo nhdrs).
    fn hdr(&self, r: usize, p: usize) -> Option<&PoolHdr> {
        let rep = self.set.replicas.get(r)?;
        if rep.nhdrs == 0 {
            return None;
        }
        rep.parts.get(p % rep.nhdrs)?.header()
    }

    /// `replica_find_unbroken_part`: the first unbroken header-carrying part.
    fn first_unbroken(&self, r: usize) -> Option<usize> {
        (0..self.nhdrs(r)).find(|&p| !self.part_broken(r, p))
    }

    fn set_part_fault(&mut self, r: usize, p: usize, fault: PartFault) {
        if let Some(slot) = self.part_faults.get_mut(r).and_then(|v| v.get_mut(p)) {
            if slot.is_none() {
                *slot = Some(fault);
            }
        }
    }

    fn set_replica_fault(&mut self, r: usize, fault: ReplicaFault) {
        if let Some(slot) = self.replica_faults.get_mut(r) {
            if slot.is_none() {
                *slot = Some(fault);
            }
        }
    }
}

/// Judges the health of `set` (docs/format.md §17.2, steps 1–14). Never writes.
pub fn inspect<F: PartFile>(set: &OpenSet<F>) -> Health {
    let nrep = set.replicas.len();
    let mut j = Judge {
        set,
        part_faults: set
            .replicas
            .iter()
            .map(|r| vec![None; r.parts.len()])
            .collect(),
        replica_faults: vec![None; nrep],
    };
    let mut inconsistencies = Vec::new();
    j.part_status();
    // Step 2: feature masks of the first header that can be read.
    let features = set
        .replicas
        .iter()
        .flat_map(|r| r.parts.iter())
        .find(|p| p.is_ok() && p.header().is_some())
        .and_then(|p| p.header())
        .map(|h| h.features);
    if features.is_none() {
        inconsistencies.push(Inconsistency::NoReadablePart);
    }
    let check_bad_blocks = features.is_some_and(|f| f.compat & FEAT_CHECK_BAD_BLOCKS != 0);
    // Step 4.
    let sds_active = features.is_some_and(|f| f.incompat & FEAT_SDS != 0);
    j.header_pages();
    if sds_active {
        j.shutdown_states();
    }
    // Step 9: UUIDs within each replica.
    for r in 0..nrep {
        check_uuids_between_parts(&j, r, &mut inconsistencies);
    }
    // Step 9a (poolsync's): feature masks, and headers torn by a feature change.
    check_features(&j, &mut inconsistencies);
    j.poolset_uuids(&mut inconsistencies);
    // Step 11: links between adjacent replicas.
    check_uuids_between_replicas(&j, &mut inconsistencies);
    // Step 12: healthy replicas forming a ring of their own.
    check_replica_cycles(&j, &mut inconsistencies);
    let descriptors = j.descriptors(&mut inconsistencies);
    let pool_sizes = j.descriptor_checksums(&descriptors);
    let replicas = j.verdicts(&pool_sizes);
    let source = choose_source(replicas.len(), None, |r| {
        replicas.get(r).is_some_and(|h| h.healthy)
    })
    .ok();
    let pool_size = source
        .and_then(|s| replicas.get(s))
        .and_then(|r| r.pool_size);
    Health {
        replicas,
        features,
        check_bad_blocks,
        sds_active,
        set_pool_size: set.set_pool_size(),
        inconsistencies,
        source,
        pool_size,
    }
}

impl<F: PartFile> Judge<'_, F> {
    /// Step 1: parts that cannot be opened, or have the wrong size.
    fn part_status(&mut self) {
        let set = self.set;
        for rep in &set.replicas {
            for part in &rep.parts {
                let fault = match &part.status {
                    PartStatus::Ok => None,
                    PartStatus::Missing => Some(PartFault::Missing),
                    PartStatus::Inaccessible { reason } => Some(PartFault::Inaccessible {
                        reason: reason.clone(),
                    }),
                    PartStatus::SizeMismatch { actual, configured } => {
                        Some(PartFault::SizeMismatch {
                            actual: *actual,
                            configured: *configured,
                        })
                    }
                };
                if let Some(fault) = fault {
                    self.set_part_fault(rep.index, part.index, fault);
                }
            }
        }
    }

    /// Steps 5–7: header pages of unbroken header-carrying parts.
    fn header_pages(&mut self) {
        let set = self.set;
        let single_hdr = set.set.options.single_hdr;
        for rep in &set.replicas {
            for part in rep.parts.iter().take(rep.nhdrs) {
                if self.part_broken(rep.index, part.index) {
                    continue;
                }
                let fault = match &part.header {
                    HeaderState::Read(h) => header_fault(&h.hdr, single_hdr),
                    HeaderState::Unreadable { reason } => Some(PartFault::HeaderUnreadable {
                        reason: reason.clone(),
                    }),
                    HeaderState::NotRead | HeaderState::None => Some(PartFault::HeaderUnreadable {
                        reason: "the part is not open".to_string(),
                    }),
                };
                if let Some(fault) = fault {
                    self.set_part_fault(rep.index, part.index, fault);
                }
            }
        }
    }

    /// Step 8: shutdown state, per replica, from part 0's header.
    fn shutdown_states(&mut self) {
        let set = self.set;
        for rep in &set.replicas {
            // PMDK maps the headers of parts that survived steps 1 and 5;
            // parts failing steps 6 and 7 are still mapped and read here.
            let part0 = rep.parts.first();
            let mapped = part0.is_some_and(|p| {
                p.is_ok()
                    && !matches!(
                        self.part_faults.get(rep.index).and_then(|f| f.first()),
                        Some(Some(PartFault::HeaderUnreadable { .. }))
                    )
            });
            match (mapped, part0.and_then(|p| p.header())) {
                (true, Some(hdr)) => {
                    if sds_adr_failure(&hdr.sds) {
                        self.set_replica_fault(rep.index, ReplicaFault::AdrFailure);
                    }
                }
                _ => self.set_replica_fault(rep.index, ReplicaFault::ShutdownStateUnverifiable),
            }
        }
    }

    /// Step 10: a replica with a healthy header, and pool set UUIDs across
    /// replicas.
    fn poolset_uuids(&self, out: &mut Vec<Inconsistency>) {
        let nrep = self.set.replicas.len();
        let Some(r_h) = (0..nrep).find(|&r| !self.replica_broken(r)) else {
            out.push(Inconsistency::NoHealthyReplica);
            return;
        };
        let Some(puuid) = self.hdr(r_h, 0).map(|h| h.poolset_uuid) else {
            return;
        };
        for r in (0..nrep).filter(|&r| r != r_h) {
            if let Some(p) = self.first_unbroken(r) {
                if self.hdr(r, p).is_some_and(|h| h.poolset_uuid != puuid) {
                    out.push(Inconsistency::ReplicasPoolsetUuid {
                        healthy_replica: r_h,
                        replica: r,
                    });
                }
            }
        }
    }

    /// Step 13: pool sizes stored in the healthy replicas' descriptors.
    fn descriptors(&mut self, out: &mut Vec<Inconsistency>) -> Vec<Option<ObjDescriptor>> {
        let set = self.set;
        let nrep = set.replicas.len();
        let set_pool_size = set.set_pool_size();
        let mut descriptors: Vec<Option<ObjDescriptor>> = vec![None; nrep];
        let mut first_size: Option<(usize, u64)> = None;
        for r in 0..nrep {
            if self.replica_broken(r) {
                continue;
            }
            let desc = match read_descriptor(set, r) {
                Ok(d) => d,
                Err(reason) => {
                    self.set_replica_fault(r, ReplicaFault::DescriptorUnreadable { reason });
                    continue;
                }
            };
            let Some(size) = desc.pool_size() else {
                self.set_replica_fault(
                    r,
                    ReplicaFault::DescriptorUnreadable {
                        reason: format!(
                            "heap_offset {:#x} + heap_size {:#x} overflows",
                            desc.heap_offset, desc.heap_size
                        ),
                    },
                );
                continue;
            };
            let ty = self
                .hdr(r, 0)
                .and_then(PoolHdr::pool_type)
                .unwrap_or(PoolType::Obj);
            let min = min_pool_size(ty);
            if size < min {
                self.set_replica_fault(r, ReplicaFault::PoolTooSmall { size, min });
                continue;
            }
            if set_pool_size < size
                && !out
                    .iter()
                    .any(|i| matches!(i, Inconsistency::ReplicasTooSmall { .. }))
            {
                out.push(Inconsistency::ReplicasTooSmall {
                    replica: r,
                    pool_size: size,
                    set_pool_size,
                });
            }
            match first_size {
                None => first_size = Some((r, size)),
                Some((first_replica, fsize)) if fsize != size => {
                    out.push(Inconsistency::PoolSizesDiffer {
                        first_replica,
                        first_size: fsize,
                        replica: r,
                        size,
                    });
                }
                Some(_) => {}
            }
            if let Some(slot) = descriptors.get_mut(r) {
                *slot = Some(desc);
            }
        }
        descriptors
    }

    /// Step 14: descriptor checksums of replicas with healthy headers; the
    /// pool size of each replica that passes.
    fn descriptor_checksums(&mut self, descriptors: &[Option<ObjDescriptor>]) -> Vec<Option<u64>> {
        let nrep = self.set.replicas.len();
        let mut pool_sizes = vec![None; nrep];
        for r in 0..nrep {
            if self.replica_broken(r) {
                continue;
            }
            let Some(Some(desc)) = descriptors.get(r) else {
                continue;
            };
            let computed = desc.compute_checksum();
            if computed != desc.checksum {
                self.set_replica_fault(
                    r,
                    ReplicaFault::DescriptorChecksum {
                        stored: desc.checksum,
                        computed,
                    },
                );
                continue;
            }
            if let Some(slot) = pool_sizes.get_mut(r) {
                *slot = desc.pool_size();
            }
        }
        pool_sizes
    }

    /// The verdicts, per replica and part, with their messages.
    fn verdicts(&self, pool_sizes: &[Option<u64>]) -> Vec<ReplicaHealth> {
        self.set
            .replicas
            .iter()
            .map(|rep| {
                let r = rep.index;
                let fault = self.replica_faults.get(r).cloned().flatten();
                let broken = self.replica_broken(r);
                let parts = rep
                    .parts
                    .iter()
                    .map(|part| {
                        let fault = self
                            .part_faults
                            .get(r)
                            .and_then(|f| f.get(part.index))
                            .cloned()
                            .flatten();
                        PartHealth {
                            replica: r,
                            part: part.index,
                            path: part.path.clone(),
                            has_header: part.index < rep.nhdrs,
                            message: fault.as_ref().map(|f| format!("{}: {f}", part.name())),
                            fault,
                        }
                    })
                    .collect();
                ReplicaHealth {
                    replica: r,
                    message: fault.as_ref().map(|f| format!("replica {r}: {f}")),
                    fault,
                    broken,
                    healthy: !broken,
                    pool_size: pool_sizes.get(r).copied().flatten(),
                    parts,
                }
            })
            .collect()
    }
}

/// Why libpmemobj 1.12 would refuse to open an obj pool with `hdr` on
/// this machine, beyond a zero header and a bad checksum (docs/format.md
/// §16.2, checks 1 to 5, in libpmemobj's order): the one judgement `check`
/// and `sync` share, so that a header libpmemobj refuses is never called
/// healthy.
pub fn open_refusal(hdr: &PoolHdr) -> Option<poolsync_header::Error> {
    hdr.check_major_nonzero()
        .and_then(|()| hdr.check_signature(PoolType::Obj))
        .and_then(|()| hdr.check_major(PoolType::Obj))
        .and_then(|()| hdr.check_features())
        .and_then(|()| hdr.check_arch(&ArchFlags::current()))
        .err()
}

/// Steps 6 and 7 for one readable header.
fn header_fault(hdr: &PoolHdr, single_hdr: bool) -> Option<PartFault> {
    if !hdr.checksum_ok() {
        return Some(PartFault::BadChecksum {
            stored: hdr.checksum,
            computed: hdr.compute_checksum(),
        });
    }
    if hdr.is_zero() {
        return Some(PartFault::ZeroHeader);
    }
    if hdr.pool_type().is_none() {
        return Some(PartFault::UnknownSignature {
            signature: signature_text(&hdr.signature),
        });
    }
    if let Some(problem) = open_refusal(hdr) {
        return Some(PartFault::Refused {
            problem: problem.to_string(),
        });
    }
    let header = hdr.features.incompat & FEAT_SINGLEHDR != 0;
    if header != single_hdr {
        return Some(PartFault::SingleHdrMismatch {
            header,
            poolset: single_hdr,
        });
    }
    None
}

/// Step 9a, poolsync's own (docs/format.md §24.3): every unbroken header
/// carries the masks of the first one, and no header is broken only by an
/// interrupted feature change.
fn check_features<F: PartFile>(j: &Judge<'_, F>, out: &mut Vec<Inconsistency>) {
    let mut first: Option<(usize, usize, Features)> = None;
    for r in 0..j.set.replicas.len() {
        for p in 0..j.nhdrs(r) {
            let Some(hdr) = j.hdr(r, p) else {
                continue;
            };
            if j.part_broken(r, p) {
                let torn = matches!(
                    j.part_faults.get(r).and_then(|f| f.get(p)),
                    Some(Some(PartFault::BadChecksum { .. }))
                );
                if let (true, Some((feature, _))) = (torn, hdr.torn_feature_change()) {
                    out.push(Inconsistency::FeatureChangeTorn {
                        replica: r,
                        part: p,
                        feature,
                    });
                }
                continue;
            }
            match first {
                None => first = Some((r, p, hdr.features)),
                Some((fr, fp, base)) if base != hdr.features => {
                    let diff = Features {
                        compat: base.compat ^ hdr.features.compat,
                        incompat: base.incompat ^ hdr.features.incompat,
                        ro_compat: base.ro_compat ^ hdr.features.ro_compat,
                    };
                    out.push(Inconsistency::FeaturesDiffer {
                        first_replica: fr,
                        first_part: fp,
                        replica: r,
                        part: p,
                        feature: Feature::ALL
                            .into_iter()
                            .find(|f| f.is_changeable() && f.mask() == diff),
                    });
                }
                Some(_) => {}
            }
        }
    }
}

/// Step 9 for replica `r` (`check_uuids_between_parts`).
fn check_uuids_between_parts<F: PartFile>(
    j: &Judge<'_, F>,
    r: usize,
    out: &mut Vec<Inconsistency>,
) {
    let nhdrs = j.nhdrs(r);
    let unbroken: Vec<usize> = (0..nhdrs).filter(|&p| !j.part_broken(r, p)).collect();
    let Some(&first) = unbroken.first() else {
        return;
    };
    let Some(first_hdr) = j.hdr(r, first) else {
        return;
    };
    if let Some(&p) = unbroken.iter().skip(1).find(|&&p| {
        j.hdr(r, p)
            .is_some_and(|h| h.poolset_uuid != first_hdr.poolset_uuid)
    }) {
        out.push(Inconsistency::PartsPoolsetUuid {
            replica: r,
            first_part: first,
            part: p,
        });
    }
    if let Some(&p) = unbroken.iter().skip(1).find(|&&p| {
        j.hdr(r, p).is_some_and(|h| {
            h.prev_repl_uuid != first_hdr.prev_repl_uuid
                || h.next_repl_uuid != first_hdr.next_repl_uuid
        })
    }) {
        out.push(Inconsistency::PartsReplicaUuids {
            replica: r,
            first_part: first,
            part: p,
        });
    }
    for &p in &unbroken {
        let next = (p + 1) % nhdrs;
        if j.part_broken(r, next) {
            continue;
        }
        let (Some(h), Some(n)) = (j.hdr(r, p), j.hdr(r, next)) else {
            continue;
        };
        if n.prev_part_uuid != h.uuid || h.next_part_uuid != n.uuid {
            out.push(Inconsistency::PartsNotLinked {
                replica: r,
                part: p,
                next_part: next,
            });
            break;
        }
    }
}

/// `get_replica_uuid`: part 0's uuid, else what part 1 or the last part says it is.
fn replica_uuid<F: PartFile>(j: &Judge<'_, F>, r: usize) -> Option<poolsync_header::RawUuid> {
    let nhdrs = j.nhdrs(r);
    if !j.part_broken(r, 0) {
        j.hdr(r, 0).map(|h| h.uuid)
    } else if nhdrs > 1 && !j.part_broken(r, 1) {
        j.hdr(r, 1).map(|h| h.prev_part_uuid)
    } else if nhdrs > 1 && !j.part_broken(r, nhdrs - 1) {
        j.hdr(r, nhdrs - 1).map(|h| h.next_part_uuid)
    } else {
        None
    }
}

/// Step 11 (`check_uuids_between_replicas`).
fn check_uuids_between_replicas<F: PartFile>(j: &Judge<'_, F>, out: &mut Vec<Inconsistency>) {
    let nrep = j.set.replicas.len();
    for r in 0..nrep {
        let r_n = (r + 1) % nrep;
        let rep_uuid = replica_uuid(j, r);
        let rep_n_uuid = replica_uuid(j, r_n);
        let p = j.first_unbroken(r);
        let p_n = j.first_unbroken(r_n);
        let mismatch_n = match (p_n, rep_uuid) {
            (Some(p_n), Some(u)) => j.hdr(r_n, p_n).is_some_and(|h| h.prev_repl_uuid != u),
            _ => false,
        };
        let mismatch = match (p, rep_n_uuid) {
            (Some(p), Some(u)) => j.hdr(r, p).is_some_and(|h| h.next_repl_uuid != u),
            _ => false,
        };
        if mismatch_n || mismatch {
            out.push(Inconsistency::ReplicaUuids {
                replica: r,
                next_replica: r_n,
            });
            continue;
        }
        // Across a broken replica, the replicas on both sides must link.
        let r_nn = (r_n + 1) % nrep;
        if nrep > 1 && j.replica_broken(r_n) {
            let (Some(p), Some(p_nn)) = (p, j.first_unbroken(r_nn)) else {
                continue;
            };
            if let (Some(h), Some(h_nn)) = (j.hdr(r, p), j.hdr(r_nn, p_nn)) {
                if h.next_repl_uuid != h_nn.prev_repl_uuid {
                    out.push(Inconsistency::BorderUuids { replica: r });
                }
            }
        }
    }
}

/// Step 12 (`check_replica_cycles`).
fn check_replica_cycles<F: PartFile>(j: &Judge<'_, F>, out: &mut Vec<Inconsistency>) {
    let nrep = j.set.replicas.len();
    let mut first_healthy = 0;
    let mut count = 0;
    for r in 0..nrep {
        if j.replica_broken(r) {
            count = 0;
            continue;
        }
        if count == 0 {
            first_healthy = r;
        }
        count += 1;
        let (Some(first), Some(h)) = (j.hdr(first_healthy, 0), j.hdr(r, 0)) else {
            continue;
        };
        if first.uuid == h.next_repl_uuid && count < nrep {
            out.push(Inconsistency::AlienReplica { replica: r });
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_print_escaped_without_trailing_nuls() {
        assert_eq!(signature_text(b"PMEMOBJ\0"), "PMEMOBJ");
        assert_eq!(signature_text(&[0; 8]), "");
        assert_eq!(signature_text(b"AB\x01\xffC\0\0\0"), "AB\\x01\\xffC");
    }

    #[test]
    fn only_a_dirty_state_with_changed_counters_is_an_adr_failure() {
        assert!(!sds_adr_failure(&Sds::ZERO));
        let mut crashed = Sds::ZERO;
        crashed.set_dirty();
        assert!(!sds_adr_failure(&crashed), "not closed, but no ADR failure");
        let mut adr = Sds {
            usc: 3,
            ..Sds::ZERO
        };
        adr.set_dirty();
        assert!(sds_adr_failure(&adr));
        adr.clear_dirty();
        assert!(!sds_adr_failure(&adr), "closed after the failure");
        let mut torn = Sds {
            usc: 3,
            ..Sds::ZERO
        };
        torn.set_dirty();
        torn.checksum ^= 1;
        assert!(
            !sds_adr_failure(&torn),
            "a bad SDS checksum is re-initialised"
        );
    }

    #[test]
    fn messages_name_their_field_and_use_pmdk_wording() {
        let fault = PartFault::BadChecksum {
            stored: 1,
            computed: 2,
        };
        assert_eq!(
            fault.to_string(),
            "invalid checksum of pool header (offset 4088: stored 0x1, should be 0x2)"
        );
        let inc = Inconsistency::PartsNotLinked {
            replica: 2,
            part: 1,
            next_part: 2,
        };
        assert_eq!(
            inc.to_string(),
            "two consecutive unbroken parts are not linked to each other (repn 2, parts 1 and 2) - cannot synchronize"
        );
        assert_eq!(min_pool_size(PoolType::Obj), 8 << 20);
    }
}
