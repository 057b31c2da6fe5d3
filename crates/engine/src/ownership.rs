//! Proof that a file belongs to a pool set, before anything deletes,
//! replaces or overwrites it.
//!
//! poolsync never destroys a file that does not provably belong to the
//! pool set it works on. The proof is the file's pool header: it must carry
//! the pool set's UUID, with a valid checksum or with the inverted
//! checksum by which poolsync marks a header it is rewriting (see
//! `crate::sync::plan::is_invalidated`). A part without a header of its own
//! (SINGLEHDR, parts after the first) is judged by its replica's part 0.
//! Every command that removes or replaces files (`rm --verify-owner`,
//! `transform`, a transform's temporary copy) proves ownership here, with
//! [`Rules`] that say what else it accepts.
//!
//! A part without a header of its own carries no UUID, so part 0's word is
//! all its header page can give. Where that is not enough (`transform`
//! deletes or rewrites such a part only on proof), its bytes prove it
//! instead ([`prove_by_bytes`]): the part is the pool's when every byte of
//! it equals the byte at the same logical offset of another replica.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use poolsync_header::{PoolHdr, PoolType, RawUuid};
use poolsync_pmem::{Access, Storage};

use crate::compare::{compare_many, effective_stride, CompareOptions};
use crate::endpoint::Endpoint;
use crate::exec::NoProgress;
use crate::open::{open, HeaderState, OpenReplica, OpenSet};
use crate::range::LogicalRange;
use crate::sync::plan::is_invalidated;
use crate::Error;

/// What a header page says about the file's owner.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Claim<'a> {
    /// No header could be read (the file is short, or not open).
    Unreadable,
    /// The header page is all zero: created, never written.
    Zero,
    /// Not an obj pool's header (another signature, or none).
    Foreign,
    /// An obj pool header with a valid checksum.
    Valid(&'a PoolHdr),
    /// An obj pool header that poolsync invalidated on purpose.
    Invalidated(&'a PoolHdr),
    /// An obj pool header whose checksum is wrong.
    Damaged(&'a PoolHdr),
}

impl<'a> Claim<'a> {
    /// The claim of a decoded header (`None`: none could be read).
    pub(crate) fn of(hdr: Option<&'a PoolHdr>) -> Claim<'a> {
        match hdr {
            None => Claim::Unreadable,
            Some(h) if h.is_zero() => Claim::Zero,
            Some(h) if h.pool_type() != Some(PoolType::Obj) => Claim::Foreign,
            Some(h) if h.checksum_ok() => Claim::Valid(h),
            Some(h) if is_invalidated(h) => Claim::Invalidated(h),
            Some(h) => Claim::Damaged(h),
        }
    }

    /// The claim of a header page as opening read it.
    pub(crate) fn of_state(state: &'a HeaderState) -> Claim<'a> {
        match state {
            HeaderState::Read(read) => Claim::of(Some(&read.hdr)),
            _ => Claim::Unreadable,
        }
    }

    /// The pool set UUID the header proves: a valid or invalidated header's.
    pub(crate) fn poolset_uuid(&self) -> Option<RawUuid> {
        match self {
            Claim::Valid(h) | Claim::Invalidated(h) => Some(h.poolset_uuid),
            _ => None,
        }
    }

    /// The header, when it is a pool header.
    fn header(&self) -> Option<&'a PoolHdr> {
        match *self {
            Claim::Valid(h) | Claim::Invalidated(h) | Claim::Damaged(h) => Some(h),
            _ => None,
        }
    }

    /// What the file carries, in the words refusals use ("the file …").
    pub(crate) fn describe(&self) -> String {
        match self {
            Claim::Unreadable => "carries no valid pool header (none can be read)".to_string(),
            Claim::Zero => "carries no pool header (its header page is zero)".to_string(),
            Claim::Foreign => "carries no obj pool header".to_string(),
            Claim::Valid(h) | Claim::Invalidated(h) => {
                format!("carries pool set uuid {}", h.poolset_uuid.to_canonical())
            }
            Claim::Damaged(_) => "carries no valid pool header".to_string(),
        }
    }
}

/// What a proof accepts besides a header of the pool set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules<'a> {
    /// The pool set's UUID.
    pub poolset_uuid: RawUuid,
    /// The UUIDs of the source's parts: a file that carries one is a copy
    /// of a part (a backup), never something to replace.
    pub copies_of: Option<&'a BTreeSet<RawUuid>>,
}

impl<'a> Rules<'a> {
    /// Only a header of the pool set (valid or invalidated) proves it.
    pub(crate) fn strict(poolset_uuid: RawUuid) -> Rules<'a> {
        Rules {
            poolset_uuid,
            copies_of: None,
        }
    }
}

/// Proves that a file whose header page makes `claim` belongs to the pool
/// set; `Err` says what it carries instead.
pub(crate) fn prove(claim: Claim<'_>, rules: &Rules<'_>) -> Result<(), String> {
    if let (Some(copies), Some(h)) = (rules.copies_of, claim.header()) {
        if copies.contains(&h.uuid) {
            return Err(format!(
                "is a copy of a part of the source (it carries that part's uuid {}) and pool set uuid {}",
                h.uuid.to_canonical(),
                h.poolset_uuid.to_canonical()
            ));
        }
    }
    if claim.poolset_uuid() == Some(rules.poolset_uuid) {
        Ok(())
    } else {
        Err(claim.describe())
    }
}

/// Whether the part files of a pool set belong to it, for `rm
/// --verify-owner`: the pool set's UUID is the one the replicas' headers
/// agree on (`identity`), never simply the first part's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The pool set UUID, when the replicas' headers agree on one.
    pub poolset_uuid: Option<String>,
    /// Each existing part file: `Ok` when its header carries that UUID,
    /// otherwise what it carries instead. A part without a header of its
    /// own (SINGLEHDR, parts after the first) carries no proof: it is `Ok`
    /// only when `trust_headerless` was asked for and its replica's part 0
    /// carries the UUID.
    pub parts: BTreeMap<PathBuf, Result<(), String>>,
}

/// The pool set UUID the headers of `replicas` agree on, or why none can
/// be told. Each replica votes for the UUID that most of its valid headers
/// carry (a replica whose headers are split evenly does not vote); the
/// UUID with most votes wins, and a tie decides nothing. A foreign pool's
/// part listed first thus never passes for the pool.
pub(crate) fn identity<'a>(
    replicas: impl IntoIterator<Item = Vec<Option<&'a PoolHdr>>>,
) -> Result<RawUuid, String> {
    let mut votes: BTreeMap<RawUuid, usize> = BTreeMap::new();
    for headers in replicas {
        let mut counts: BTreeMap<RawUuid, usize> = BTreeMap::new();
        for h in headers {
            if let Claim::Valid(h) = Claim::of(h) {
                *counts.entry(h.poolset_uuid).or_default() += 1;
            }
        }
        if let Some(uuid) = sole_max(&counts) {
            *votes.entry(uuid).or_default() += 1;
        }
    }
    if votes.is_empty() {
        return Err("no replica has valid pool headers that agree on a pool set uuid".to_string());
    }
    sole_max(&votes).ok_or_else(|| {
        let named: Vec<String> = votes.keys().map(|u| u.to_canonical()).collect();
        format!(
            "the replicas' headers do not agree on a pool set uuid ({} have as many replicas each)",
            named.join(" and ")
        )
    })
}

/// The key with the highest count, when no other key has as many.
fn sole_max(counts: &BTreeMap<RawUuid, usize>) -> Option<RawUuid> {
    let top = counts.values().copied().max()?;
    let mut at_top = counts.iter().filter(|(_, &n)| n == top);
    let first = at_top.next().map(|(u, _)| *u);
    match at_top.next() {
        Some(_) => None,
        None => first,
    }
}

/// The pool set UUID of the pool (set) at `path` as [`identity`] decides
/// it from every local replica's headers, or `None` when it cannot be
/// opened or its headers do not decide: what `rm` holds the update-packet
/// state file and the remote replicas to.
pub(crate) fn pool_identity<S: Storage>(storage: &S, path: &Path) -> Option<[u8; 16]> {
    let set = open(storage, path, Access::ReadOnly).ok()?;
    identity(set.replicas.iter().map(|rep| {
        rep.parts
            .iter()
            .take(rep.nhdrs)
            .map(|p| p.header())
            .collect::<Vec<_>>()
    }))
    .ok()
    .map(|u| u.0)
}

/// Reads the headers of the pool set at `path` (`None` when it is a
/// single-file pool, which has no set to belong to) and judges who owns
/// each part file. With `trust_headerless` (`rm --force`), a part without
/// a header of its own is taken on the word of its replica's part 0.
pub fn ownership<S: Storage>(
    storage: &S,
    path: &Path,
    trust_headerless: bool,
) -> Result<Option<Ownership>, Error> {
    let set = open(storage, path, Access::ReadOnly)?;
    if !set.is_poolset {
        return Ok(None);
    }
    let uuid = identity(set.replicas.iter().map(|rep| {
        rep.parts
            .iter()
            .take(rep.nhdrs)
            .map(|p| p.header())
            .collect::<Vec<_>>()
    }));
    let mut out = Ownership {
        poolset_uuid: uuid.as_ref().ok().map(|u| u.to_canonical()),
        parts: BTreeMap::new(),
    };
    for rep in &set.replicas {
        for part in &rep.parts {
            if part.meta.is_none() {
                continue;
            }
            let headerless = part.index >= rep.nhdrs;
            if headerless && !trust_headerless {
                out.parts.insert(
                    part.path.clone(),
                    Err(format!(
                        "{NO_HEADER_OF_ITS_OWN}, so nothing proves it is the pool's (--force removes it on the word of {})",
                        rep.parts.first().map_or(part.path.as_path(), |p| p.path.as_path()).display()
                    )),
                );
                continue;
            }
            let owner = if headerless {
                rep.parts.first().unwrap_or(part)
            } else {
                part
            };
            // A valid header only: an invalidated one is a run in progress,
            // which `rm` must not take for a finished pool's part.
            let claim = match Claim::of(owner.header()) {
                Claim::Invalidated(h) => Claim::Damaged(h),
                other => other,
            };
            let verdict = match &uuid {
                Ok(u) => prove(claim, &Rules::strict(*u)),
                Err(why) => Err(format!("{}; {why}", claim.describe())),
            };
            let verdict = verdict.map_err(|what| {
                if owner.index == part.index {
                    what
                } else {
                    format!("belongs with {}, which {what}", owner.path.display())
                }
            });
            out.parts.insert(part.path.clone(), verdict);
        }
    }
    Ok(Some(out))
}

/// The words that open every refusal of a part without a header of its
/// own: why its header page proves nothing.
pub(crate) const NO_HEADER_OF_ITS_OWN: &str =
    "carries no pool header of its own (OPTION SINGLEHDR)";

/// Proves by its bytes that part `part` of replica `replica` of `set`, a
/// part without a header of its own, belongs to the pool: every byte of
/// its address space equals the byte at the same logical offset of
/// another replica whose parts are all there, and is zero past that
/// replica's end, where no replica holds anything. A file put in the
/// part's place (a copy of some other file) differs from the pool's bytes
/// in long runs; the pool's own part holds them, but for the few bytes of
/// heap bookkeeping libpmemobj writes into the master only (docs/format.md
/// §15.2), which the proof tolerates ([`STRAY_BYTES_PER_MIB`] per MiB, in
/// runs of at most [`MAX_STRAY_RUN`]). In a pool set of one replica no other
/// replica can vouch, and none can contradict: the replica's bytes are
/// the pool's as libpmemobj reads them, and a transform copies them into
/// the new layout before it rewrites or deletes the part, so the part is
/// taken as the pool's up to the pool's end (`pool_size`) and must be
/// zero past it. `Ok(Err(_))` says why it is not proven, in the words of
/// a refusal ("carries no pool header of its own ...").
pub(crate) fn prove_by_bytes<F: poolsync_pmem::PartFile>(
    set: &OpenSet<F>,
    replica: usize,
    part: usize,
    pool_size: u64,
    options: &CompareOptions,
) -> Result<Result<(), String>, Error> {
    let unproven = |why: String| {
        Ok(Err(format!(
            "{NO_HEADER_OF_ITS_OWN}, and {why}, so nothing proves it is the pool's"
        )))
    };
    let (Some(rep), Some(extent)) = (
        set.replica(replica),
        set.replica(replica).and_then(|r| r.extents.get(part)),
    ) else {
        return unproven("it is not in the pool set".to_string());
    };
    let range = LogicalRange::new(extent.logical, extent.len);
    if range.len == 0 {
        return Ok(Ok(()));
    }
    let others: Vec<&OpenReplica<F>> = set
        .replicas
        .iter()
        .filter(|o| o.index != replica && o.parts.iter().all(|p| p.is_ok()))
        .collect();
    if set.replicas.len() == 1 {
        let tail = LogicalRange::from_bounds(range.offset.max(pool_size), range.end());
        return match first_nonzero(rep, tail, options.stride)? {
            None => Ok(Ok(())),
            Some(at) => unproven(format!(
                "it holds bytes past the end of the pool (at logical offset {at:#x}), which no transform carries over"
            )),
        };
    }
    if others.is_empty() {
        return unproven("no other replica holds its bytes".to_string());
    }
    let sides: Vec<&dyn Endpoint> = others.iter().map(|o| *o as &dyn Endpoint).collect();
    let outcomes = compare_many(rep, &sides, &[range], options, &NoProgress)?;
    let mut first_why = None;
    for (other, outcome) in others.iter().zip(&outcomes) {
        let stray = strays_only(rep, *other, &outcome.differing, range.len)?;
        let why = match outcome.differing.first() {
            Some(d) if !stray => format!(
                "its bytes differ from those of replica {} at logical offset {:#x}",
                other.index, d.offset
            ),
            _ if other.end() >= range.end() => return Ok(Ok(())),
            _ => {
                let tail = LogicalRange::from_bounds(range.offset.max(other.end()), range.end());
                match first_nonzero(rep, tail, options.stride)? {
                    None => return Ok(Ok(())),
                    Some(at) => format!(
                        "it holds bytes past the end of replica {} (at logical offset {at:#x}), where no replica holds the pool's",
                        other.index
                    ),
                }
            }
        };
        first_why.get_or_insert(why);
    }
    unproven(first_why.unwrap_or_default())
}

/// Bytes per MiB of a part in which its replicas may differ and the part
/// still be proven the pool's: libpmemobj leaves a few bytes of heap
/// bookkeeping unreplicated (chunk headers and footers inside free chunks,
/// docs/format.md §15.2; a used 32 MiB pool was seen with 18 such bytes).
const STRAY_BYTES_PER_MIB: u64 = 64;
/// The longest run of differing bytes such bookkeeping makes.
const MAX_STRAY_RUN: usize = 16;

/// Whether `differing` (4 KiB aligned ranges where `part` and `other`
/// differ) holds no more than libpmemobj's unreplicated bookkeeping: short
/// runs of differing bytes, few in all. Any other file put in a part's
/// place differs in long runs, or everywhere.
fn strays_only(
    part: &dyn Endpoint,
    other: &dyn Endpoint,
    differing: &[LogicalRange],
    part_len: u64,
) -> Result<bool, Error> {
    let limit = STRAY_BYTES_PER_MIB.max(STRAY_BYTES_PER_MIB * (part_len >> 20));
    // Each stray byte makes at most one 4 KiB block differ.
    let blocks: u64 = differing.iter().map(|r| r.len.div_ceil(4096)).sum();
    if blocks > limit {
        return Ok(false);
    }
    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut strays = 0u64;
    for r in differing {
        let mut pos = r.offset;
        while pos < r.end() {
            let n = usize::try_from((r.end() - pos).min(4096)).unwrap_or(4096);
            part.read(pos, &mut a[..n])?;
            other.read(pos, &mut b[..n])?;
            let mut run = 0usize;
            for (x, y) in a[..n].iter().zip(&b[..n]) {
                if x == y {
                    run = 0;
                    continue;
                }
                run += 1;
                strays += 1;
                if run > MAX_STRAY_RUN || strays > limit {
                    return Ok(false);
                }
            }
            pos += n as u64;
        }
    }
    Ok(true)
}

/// The logical offset of the first byte of `range` of `side` that is not
/// zero, read a stride at a time.
fn first_nonzero(
    side: &dyn Endpoint,
    range: LogicalRange,
    stride: usize,
) -> Result<Option<u64>, Error> {
    let stride = effective_stride(stride) as u64;
    let mut buf = Vec::new();
    let mut pos = range.offset;
    while pos < range.end() {
        let len = stride.min(range.end() - pos);
        buf.resize(usize::try_from(len).unwrap_or(0), 0);
        side.read(pos, &mut buf)?;
        if let Some(i) = buf.iter().position(|&b| b != 0) {
            return Ok(Some(pos + i as u64));
        }
        pos += len;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_header::{Features, HeaderLinks};

    fn hdr(poolset: u8, uuid: u8) -> PoolHdr {
        let u = RawUuid([uuid; 16]);
        let links = HeaderLinks {
            prev_part: u,
            next_part: u,
            prev_repl: u,
            next_repl: u,
        };
        PoolHdr::new(
            PoolType::Obj,
            Features::DEFAULT,
            RawUuid([poolset; 16]),
            u,
            &links,
            0,
        )
    }

    #[test]
    fn a_header_of_the_pool_set_proves_ownership() {
        let ours = hdr(1, 2);
        let rules = Rules::strict(RawUuid([1; 16]));
        assert!(prove(Claim::of(Some(&ours)), &rules).is_ok());
        let mut invalidated = ours.clone();
        invalidated.checksum = !invalidated.checksum;
        assert!(prove(Claim::of(Some(&invalidated)), &rules).is_ok());
        let mut damaged = ours.clone();
        damaged.checksum ^= 1;
        assert_eq!(
            prove(Claim::of(Some(&damaged)), &rules).unwrap_err(),
            "carries no valid pool header"
        );
        let theirs = hdr(3, 4);
        assert!(prove(Claim::of(Some(&theirs)), &rules)
            .unwrap_err()
            .starts_with("carries pool set uuid 03030303"));
        let zero = PoolHdr::decode(&[0; 4096]).unwrap();
        assert!(prove(Claim::of(Some(&zero)), &rules).is_err());
        assert!(prove(Claim::Unreadable, &rules).is_err());
    }

    #[test]
    fn copies_follow_the_rules() {
        let copies: BTreeSet<RawUuid> = [RawUuid([2; 16])].into();
        let rules = Rules {
            poolset_uuid: RawUuid([1; 16]),
            copies_of: Some(&copies),
        };
        let zero = PoolHdr::decode(&[0; 4096]).unwrap();
        assert!(prove(Claim::of(Some(&zero)), &rules).is_err());
        assert!(prove(Claim::Unreadable, &rules).is_err());
        let copy = hdr(1, 2);
        assert!(prove(Claim::of(Some(&copy)), &rules)
            .unwrap_err()
            .starts_with("is a copy of a part of the source"));
        assert!(prove(Claim::of(Some(&hdr(1, 5))), &rules).is_ok());
    }

    #[test]
    fn the_replicas_decide_the_identity_not_the_first_part() {
        let (foreign, ours_a, ours_b) = (hdr(9, 9), hdr(1, 2), hdr(1, 3));
        // A foreign part first in replica 0 (split evenly: no vote),
        // replica 1 all ours.
        let id = identity([vec![Some(&foreign), Some(&ours_a)], vec![Some(&ours_b)]]);
        assert_eq!(id, Ok(RawUuid([1; 16])));
        // Two replicas that disagree decide nothing.
        assert!(identity([vec![Some(&foreign)], vec![Some(&ours_a)]]).is_err());
        // A damaged header does not vote.
        let mut damaged = foreign.clone();
        damaged.checksum ^= 1;
        assert_eq!(
            identity([vec![Some(&damaged)], vec![Some(&ours_a)]]),
            Ok(RawUuid([1; 16]))
        );
        assert!(identity([vec![None], vec![]]).is_err());
    }
}
