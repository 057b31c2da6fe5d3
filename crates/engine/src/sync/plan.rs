//! The sync plan: everything a sync will do, decided before the first
//! write, with exact byte counts (design note section 1).
//!
//! [`plan`] turns the health of an open set into a list of [`Step`]s in
//! execution order. A dry run prints the plan; a real run hands the same
//! plan to [`crate::sync::execute`], so the two cannot disagree. Every
//! refusal (an inconsistent set, no healthy replica, a bad `--source`, a
//! repeated UUID, bad blocks that no replica can repair) is found here.
//!
//! # What a target replica gets
//!
//! A replica with a broken part (or broken as a whole) is a *target*. Each
//! of its parts is:
//!
//! * **recreated** when it is missing, of the wrong size or cannot be
//!   opened read-write: unlinked, created anew (`O_EXCL`, fully allocated)
//!   and filled from the source ([`Step::CopyRange`]);
//! * **repaired** when it is broken but exists: compared with the source
//!   block by block, and only differing blocks are copied
//!   ([`Step::CompareAndCopy`]);
//! * **kept** when it is not broken (its data is not touched; PMDK does not
//!   copy it either). With SINGLEHDR every part of a target replica is
//!   repaired, because parts after the first have no header that could
//!   show a half-finished repair.
//!
//! Broken header-carrying parts get new headers as pmempool writes them
//! (spec 2.10): signature, major and features of the source's part 0, the
//! source's pool set UUID, a UUID by the rules of [`crate::sync::uuids`],
//! links from the pool set structure, the current machine's arch flags, a
//! clean shutdown state. Unbroken headers keep everything but their links,
//! which are recomputed and written only when their bytes change.
//!
//! # Order, for crash safety
//!
//! Target replicas are processed one after the other, nearest to the
//! source first. Within one, the steps are: invalidate the headers that
//! still look valid but cover data about to change (their checksum is
//! inverted, so the health check sees the part broken until the very end),
//! create parts and give rebuilt parts the source's mode (entries and modes
//! made durable), copy and compare data (made durable per part), then the
//! headers. A part repaired in place keeps its mode (pmempool, which
//! recreates it, gives it the source's); only a part left with mode 0 by a
//! creation that never finished gets the source's mode. A crash at any point leaves every part whose data is not final
//! visibly broken, and a new run plans the same repair again.
//!
//! An inverted header checksum is also how a later run recognises a
//! replica that an interrupted sync was rebuilding as a whole: such a
//! replica is treated as broken as a whole again ([`is_invalidated`]),
//! whatever the other headers say by then. Otherwise, once one header is
//! invalid, the health check would no longer look at the descriptor or the
//! other parts, and the second run would repair less than the first one
//! set out to.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use poolsync_header::{ring_links, HeaderLinks, PoolHdr, PoolType, RawUuid, Sds, FEAT_SINGLEHDR};
use poolsync_pmem::PartFile;
use poolsync_poolset::{map_range, Extent, PAGE};
use serde::Serialize;

use crate::compare::{split_at_boundaries, LogicalRange};
use crate::inspect::{Health, Inconsistency};
use crate::open::{OpenSet, PartStatus};
use crate::sync::badblocks::{BadBlockOrigin, BadBlockScan, RecoveryFilePlan};
use crate::sync::uuids::{assign, PartView, UuidOrigin};
use crate::sync::SyncOptions;
use crate::Error;

/// The smallest part `pmempool sync` accepts: a whole obj pool (8 MiB).
pub const SYNC_MIN_PART: u64 = poolsync_poolset::OBJ_MIN_POOL;
/// Mode given to rebuilt parts when the source's part 0 cannot be stat-ed.
pub const DEFAULT_PART_MODE: u32 = 0o660;

/// What a sync does with one part's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataAction {
    /// Not touched.
    Keep,
    /// Created anew and filled from the source.
    Recreate,
    /// Compared with the source; differing blocks copied.
    Repair,
}

/// What a sync does with one part's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderAction {
    /// The part carries no header (SINGLEHDR, part ≥ 1).
    None,
    /// Left as it is.
    Keep,
    /// Its links change: rewritten with everything else kept.
    Relink,
    /// A new header (the part is broken).
    New,
    /// Invalidated while its replica is repaired, then written back as it
    /// was (with current links).
    Restore,
}

/// Why a data step copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPurpose {
    /// Filling a recreated part.
    Rebuild,
    /// Repairing a broken part that exists.
    Repair,
    /// Replacing bad blocks listed in recovery files or found by the query.
    BadBlocks,
}

/// A copy or compare of one logical range that lies in one part of each
/// side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataStep {
    /// Why.
    pub purpose: DataPurpose,
    /// The replica written.
    pub replica: usize,
    /// Its part.
    pub part: usize,
    /// The part file.
    pub path: PathBuf,
    /// Offset in that file of the range's first byte.
    pub file_offset: u64,
    /// The replica read.
    pub from_replica: usize,
    /// Its part.
    pub from_part: usize,
    /// That part file.
    pub from_path: PathBuf,
    /// Offset in that file of the range's first byte.
    pub from_offset: u64,
    /// First logical offset of the range.
    pub logical: u64,
    /// Length in bytes: copied, or compared (then at most this many are
    /// written).
    pub len: u64,
}

/// A header write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderStep {
    /// Replica index.
    pub replica: usize,
    /// Part index.
    pub part: usize,
    /// The part file.
    pub path: PathBuf,
    /// New, relinked or restored.
    pub kind: HeaderAction,
    /// The part's UUID in canonical form.
    pub uuid: String,
    /// How the UUID was chosen.
    pub uuid_origin: UuidOrigin,
    /// The header to write (a new header's crtime is taken from the file
    /// when it is written).
    #[serde(skip)]
    pub header: PoolHdr,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// Remove bad block recovery files (stale ones first, all at the end).
    RemoveRecoveryFiles {
        /// The files.
        paths: Vec<PathBuf>,
    },
    /// Save the bad blocks the query found, before anything else is written.
    SaveRecoveryFiles {
        /// The files and their bad blocks.
        files: Vec<RecoveryFilePlan>,
    },
    /// Make a header that still looks valid look broken (its checksum is
    /// inverted) until its replica is repaired.
    InvalidateHeader {
        /// Replica index.
        replica: usize,
        /// Part index.
        part: usize,
        /// The part file.
        path: PathBuf,
    },
    /// Unlink the part (when it exists) and create it anew, fully allocated.
    CreatePart {
        /// Replica index.
        replica: usize,
        /// Part index.
        part: usize,
        /// The part file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// An existing file is unlinked first.
        replace: bool,
    },
    /// `chmod` a rebuilt part to the mode of the source's part 0.
    SetMode {
        /// Replica index.
        replica: usize,
        /// Part index.
        part: usize,
        /// The part file.
        path: PathBuf,
        /// The mode (JSON: an octal string such as `"0664"`).
        #[serde(serialize_with = "ser_mode")]
        mode: u32,
    },
    /// Make new or removed entries and changed modes in a directory durable.
    SyncDirectory {
        /// The directory (empty: the current one).
        path: PathBuf,
    },
    /// Copy a range.
    CopyRange(DataStep),
    /// Compare a range and copy the blocks that differ.
    CompareAndCopy(DataStep),
    /// Write a whole header, then make it durable.
    WriteHeader(HeaderStep),
}

/// The plan for one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartPlan {
    /// Part index.
    pub part: usize,
    /// The part file.
    pub path: PathBuf,
    /// Why the part is broken, if it is.
    pub fault: Option<String>,
    /// What happens to its data.
    pub data: DataAction,
    /// What happens to its header.
    pub header: HeaderAction,
    /// Its UUID after the sync (header-carrying parts).
    pub uuid: Option<String>,
}

/// The role of a replica in a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Data is read from it.
    Source,
    /// Healthy; not written (except bad blocks or changed links).
    Healthy,
    /// Broken: repaired.
    Target,
}

/// The plan for one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaPlan {
    /// Replica index.
    pub replica: usize,
    /// Its role.
    pub role: Role,
    /// Why the whole replica is broken, if it is.
    pub fault: Option<String>,
    /// Bytes in bad blocks (from recovery files or the query).
    pub bad_block_bytes: u64,
    /// Its parts.
    pub parts: Vec<PartPlan>,
}

/// Exact counts of what the plan does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Parts created anew.
    pub parts_to_create: u64,
    /// Bytes copied in full.
    pub bytes_to_copy: u64,
    /// Bytes compared; at most this many more are written.
    pub bytes_to_compare: u64,
    /// Headers written.
    pub headers_to_write: u64,
    /// Headers invalidated first.
    pub headers_to_invalidate: u64,
    /// Modes set.
    pub modes_to_set: u64,
    /// Recovery files saved.
    pub recovery_files_to_save: u64,
    /// Recovery files removed.
    pub recovery_files_to_remove: u64,
}

/// Everything a sync will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The pool set file.
    pub path: PathBuf,
    /// The replica data comes from.
    pub source: usize,
    /// Bytes of the pool (`heap_offset + heap_size` of the source).
    pub pool_size: u64,
    /// The pool set UUID every header will carry.
    pub poolset_uuid: String,
    /// Mode given to rebuilt parts (JSON: an octal string such as `"0664"`).
    #[serde(serialize_with = "ser_mode")]
    pub mode: u32,
    /// Where bad blocks came from.
    pub bad_blocks: BadBlockOrigin,
    /// Healthy replicas other than the source, in order: where a range is
    /// read instead when reading the source fails with an I/O error.
    pub alternates: Vec<usize>,
    /// Per replica.
    pub replicas: Vec<ReplicaPlan>,
    /// The steps, in execution order.
    pub steps: Vec<Step>,
    /// Counts.
    pub totals: Totals,
}

impl Plan {
    /// Whether the plan does nothing: the set is healthy.
    pub fn is_noop(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Serializes permission bits as an octal string, `"0664"`.
fn ser_mode<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// Refusals that need no I/O: not a pool set, a single replica, parts below
/// the sync minimum (spec 5.2 preconditions, in PMDK's order).
pub fn check_shape<F: PartFile>(set: &OpenSet<F>) -> Result<(), Error> {
    if !set.is_poolset {
        return Err(Error::NotPoolSet {
            path: set.path.clone(),
        });
    }
    if set.replicas.len() < 2 {
        return Err(Error::NoReplicas {
            path: set.path.clone(),
        });
    }
    for part in set.parts() {
        if part.configured_size < SYNC_MIN_PART {
            return Err(Error::SyncPartTooSmall {
                set: set.path.clone(),
                line: part.line,
                replica: part.replica,
                part: part.index,
                size: part.configured_size,
                min: SYNC_MIN_PART,
            });
        }
    }
    Ok(())
}

/// Plans a sync of `set` whose health is `health` and bad blocks `bad`.
pub fn plan<F: PartFile>(
    set: &OpenSet<F>,
    health: &Health,
    bad: &BadBlockScan,
    options: &SyncOptions,
) -> Result<Plan, Error> {
    check_shape(set)?;
    let refuse = |reason: String| Error::CannotSync {
        set: set.path.clone(),
        reason,
    };
    if let Some(first) = health.inconsistencies.first() {
        return Err(refuse(describe_inconsistency(set, health, first)));
    }
    let nrep = set.replicas.len();

    // Broken parts: the health check's verdicts, plus header pages that
    // bad blocks cover (libpmempool's HAS_CORRUPTED_HEADER).
    // A replica with a header that an interrupted sync invalidated is
    // broken as a whole, as it was when that sync planned it.
    let mut broken: Vec<Vec<bool>> = Vec::with_capacity(nrep);
    let mut bad_header: Vec<Vec<bool>> = Vec::with_capacity(nrep);
    let mut interrupted: Vec<bool> = Vec::with_capacity(nrep);
    for rep in &set.replicas {
        let r = rep.index;
        let resumed =
            rep.parts.iter().take(rep.nhdrs).any(|part| {
                part.status == PartStatus::Ok && part.header().is_some_and(is_invalidated)
            });
        let mut b = Vec::with_capacity(rep.parts.len());
        let mut bh = Vec::with_capacity(rep.parts.len());
        for part in &rep.parts {
            let p = part.index;
            let header_hit = p < rep.nhdrs && bad.of(r, p).iter().any(|bb| bb.offset < PAGE);
            bh.push(header_hit);
            b.push(resumed || health.part_broken(r, p) || header_hit);
        }
        broken.push(b);
        bad_header.push(bh);
        interrupted.push(resumed);
    }
    let is_broken = |r: usize, p: usize| {
        broken
            .get(r)
            .and_then(|v| v.get(p))
            .copied()
            .unwrap_or(true)
    };
    let usable = |r: usize| {
        health.replicas.get(r).is_some_and(|rh| rh.healthy)
            && broken.get(r).is_some_and(|v| v.iter().all(|&b| !b))
    };
    let source = match options.source {
        Some(n) => {
            let rep = health.replicas.get(n).ok_or_else(|| {
                refuse(format!(
                    "--source {n}: the pool set has replicas 0 to {}",
                    nrep - 1
                ))
            })?;
            if !usable(n) {
                let why = rep
                    .message
                    .clone()
                    .or_else(|| rep.parts.iter().find_map(|p| p.message.clone()))
                    .unwrap_or_else(|| format!("a bad block covers a pool header of replica {n}"));
                return Err(refuse(format!(
                    "--source {n}: replica {n} is not healthy: {why}"
                )));
            }
            n
        }
        None => (0..nrep).find(|&r| usable(r)).ok_or_else(|| {
            refuse(format!(
                "no healthy replica found: {}",
                replica_reasons(health)
            ))
        })?,
    };
    let pool_size = health
        .replicas
        .get(source)
        .and_then(|r| r.pool_size)
        .ok_or_else(|| refuse(format!("replica {source}: the pool size is not known")))?;
    let src_hdr = set
        .part(source, 0)
        .and_then(|p| p.header())
        .ok_or_else(|| refuse(format!("replica {source} part 0: no pool header")))?
        .clone();
    let single_hdr = set.set.options.single_hdr;
    let h = header_gap(single_hdr);

    let targets: Vec<usize> = (0..nrep)
        .filter(|&r| broken.get(r).is_some_and(|v| v.iter().any(|&b| b)))
        .collect();

    // UUIDs and links of every header.
    let views: Vec<Vec<PartView<'_>>> = set
        .replicas
        .iter()
        .map(|rep| {
            rep.parts
                .iter()
                .take(rep.nhdrs)
                .map(|part| PartView {
                    broken: is_broken(rep.index, part.index),
                    header: part.header(),
                })
                .collect()
        })
        .collect();
    let assigned = assign(&views, single_hdr, &options.uuids).map_err(|e| refuse(e.to_string()))?;
    let uuids: Vec<Vec<RawUuid>> = assigned
        .iter()
        .map(|r| r.iter().map(|a| a.uuid).collect())
        .collect();
    let links = ring_links(&uuids).map_err(|e| refuse(e.to_string()))?;
    let poolset_uuid = src_hdr.poolset_uuid;

    let mode = set
        .part(source, 0)
        .and_then(|p| p.meta)
        .map_or(DEFAULT_PART_MODE, |m| m.mode & 0o7777);

    // Per part: data action, header action and the header to write.
    let mut data: Vec<Vec<DataAction>> = Vec::with_capacity(nrep);
    let mut headers: Vec<Vec<(HeaderAction, Option<PoolHdr>)>> = Vec::with_capacity(nrep);
    let mut invalidate: Vec<Vec<bool>> = Vec::with_capacity(nrep);
    for rep in &set.replicas {
        let r = rep.index;
        let is_target = targets.contains(&r);
        let whole = is_target && single_hdr;
        let mut d = Vec::with_capacity(rep.parts.len());
        for part in &rep.parts {
            let needs = is_target && (whole || is_broken(r, part.index));
            d.push(if !needs {
                DataAction::Keep
            } else if part.status != PartStatus::Ok || part.file.is_none() {
                DataAction::Recreate
            } else {
                DataAction::Repair
            });
        }
        let any_work = d.iter().any(|a| *a != DataAction::Keep);
        let mut hs = Vec::with_capacity(rep.parts.len());
        let mut inv = Vec::with_capacity(rep.parts.len());
        for part in &rep.parts {
            let p = part.index;
            let action = d.get(p).copied().unwrap_or(DataAction::Keep);
            if p >= rep.nhdrs {
                hs.push((HeaderAction::None, None));
                inv.push(false);
                continue;
            }
            let (Some(uuid), Some(l)) = (
                uuids.get(r).and_then(|v| v.get(p)),
                links.get(r).and_then(|v| v.get(p)),
            ) else {
                return Err(refuse(format!(
                    "replica {r} part {p}: no UUID was assigned"
                )));
            };
            let valid_now = part.status == PartStatus::Ok
                && part.file.is_some()
                && health
                    .replicas
                    .get(r)
                    .and_then(|rh| rh.parts.get(p))
                    .is_some_and(|ph| ph.fault.is_none())
                && !bad_header
                    .get(r)
                    .and_then(|v| v.get(p))
                    .copied()
                    .unwrap_or(false)
                && part.header().is_some();
            let must_invalidate = is_target
                && valid_now
                && action != DataAction::Recreate
                && (action == DataAction::Repair || (single_hdr && p == 0 && any_work));
            inv.push(must_invalidate);
            if is_broken(r, p) {
                let hdr = new_header(&src_hdr, single_hdr, poolset_uuid, *uuid, l);
                hs.push((HeaderAction::New, Some(hdr)));
            } else {
                let Some(current) = part.header() else {
                    return Err(refuse(format!(
                        "replica {r} part {p}: no pool header to keep"
                    )));
                };
                let mut kept = current.clone();
                kept.poolset_uuid = poolset_uuid;
                kept.set_links(l);
                kept.checksum = kept.compute_checksum();
                let changed = part.header_bytes() != Some(&kept.encode_raw()[..]);
                let kind = if must_invalidate {
                    HeaderAction::Restore
                } else if changed {
                    HeaderAction::Relink
                } else {
                    HeaderAction::Keep
                };
                hs.push((kind, Some(kept)));
            }
        }
        data.push(d);
        headers.push(hs);
        invalidate.push(inv);
    }

    let extents =
        |r: usize| -> &[Extent] { set.replica(r).map_or(&[], |rep| rep.extents.as_slice()) };
    let alternates: Vec<usize> = (0..nrep).filter(|&r| r != source && usable(r)).collect();

    let mut steps: Vec<Step> = Vec::new();

    // Recovery files: stale ones go first, new ones are saved next.
    if !bad.stale.is_empty() {
        steps.push(Step::RemoveRecoveryFiles {
            paths: bad.stale.clone(),
        });
        push_dir_syncs(&mut steps, bad.stale.iter());
    }
    if !bad.to_save.is_empty() {
        steps.push(Step::SaveRecoveryFiles {
            files: bad.to_save.clone(),
        });
    }

    // Bad blocks of parts that are not rebuilt anyway, from a replica
    // whose same range is good; the source's come first of all.
    if bad.any() {
        let bad_logical: Vec<Vec<LogicalRange>> = (0..nrep)
            .map(|r| bad_ranges(bad, r, extents(r), h, pool_size))
            .collect();
        let mut order: Vec<usize> = vec![source];
        order.extend((0..nrep).filter(|&r| r != source));
        for r in order {
            for range in bad_logical.get(r).map_or(&[][..], Vec::as_slice) {
                for piece in split_at_boundaries(&[extents(r)], *range) {
                    let Some(p) = map_range(extents(r), piece.offset, piece.len)
                        .first()
                        .map(|x| x.part)
                    else {
                        continue;
                    };
                    if data.get(r).and_then(|v| v.get(p)).copied() != Some(DataAction::Keep) {
                        continue;
                    }
                    for (good, sub) in choose_good(&set.path, r, piece, &bad_logical, &usable)? {
                        push_data_steps(&mut steps, set, DataPurpose::BadBlocks, (good, r), sub);
                    }
                }
            }
        }
        // An uncorrectable range (bad everywhere) is refused by choose_good.
    }

    // Target replicas, nearest to the source first.
    let mut ordered = targets.clone();
    ordered.sort_by_key(|&r| (ring_distance(source, r, nrep), r));
    for &r in &ordered {
        let Some(rep) = set.replica(r) else { continue };
        for part in &rep.parts {
            if invalidate
                .get(r)
                .and_then(|v| v.get(part.index))
                .copied()
                .unwrap_or(false)
            {
                steps.push(Step::InvalidateHeader {
                    replica: r,
                    part: part.index,
                    path: part.path.clone(),
                });
            }
        }
        let mut touched_dirs: Vec<PathBuf> = Vec::new();
        for part in &rep.parts {
            let p = part.index;
            match data.get(r).and_then(|v| v.get(p)).copied() {
                Some(DataAction::Recreate) => {
                    steps.push(Step::CreatePart {
                        replica: r,
                        part: p,
                        path: part.path.clone(),
                        size: part.configured_size,
                        replace: part.status != PartStatus::Missing,
                    });
                    steps.push(Step::SetMode {
                        replica: r,
                        part: p,
                        path: part.path.clone(),
                        mode,
                    });
                    touched_dirs.push(part.path.clone());
                }
                // A part repaired in place keeps its mode, unless it has
                // none: mode 0 is what a creation that never finished
                // (PMDK's or an interrupted sync's) leaves behind.
                Some(DataAction::Repair)
                    if mode != 0 && part.meta.is_some_and(|m| m.mode & 0o7777 == 0) =>
                {
                    steps.push(Step::SetMode {
                        replica: r,
                        part: p,
                        path: part.path.clone(),
                        mode,
                    });
                    touched_dirs.push(part.path.clone());
                }
                _ => {}
            }
        }
        push_dir_syncs(&mut steps, touched_dirs.iter());
        for part in &rep.parts {
            let p = part.index;
            let purpose = match data.get(r).and_then(|v| v.get(p)).copied() {
                Some(DataAction::Recreate) => DataPurpose::Rebuild,
                Some(DataAction::Repair) => DataPurpose::Repair,
                _ => continue,
            };
            let Some(extent) = extents(r).get(p) else {
                continue;
            };
            let start = extent.logical.max(PAGE);
            let end = extent.logical.saturating_add(extent.len).min(pool_size);
            if start < end {
                push_data_steps(
                    &mut steps,
                    set,
                    purpose,
                    (source, r),
                    LogicalRange::from_bounds(start, end),
                );
            }
        }
        push_header_steps(&mut steps, set, r, &headers, &assigned);
    }

    // Links of replicas that are not repaired but whose headers change.
    for r in (0..nrep).filter(|r| !targets.contains(r)) {
        push_header_steps(&mut steps, set, r, &headers, &assigned);
    }

    // Recovery files are removed once every bad block is repaired.
    let mut finished: Vec<PathBuf> = bad.existing.clone();
    finished.extend(bad.to_save.iter().map(|f| f.path.clone()));
    if !finished.is_empty() {
        steps.push(Step::RemoveRecoveryFiles {
            paths: finished.clone(),
        });
        push_dir_syncs(&mut steps, finished.iter());
    }

    let totals = totals(&steps);
    let replicas = set
        .replicas
        .iter()
        .map(|rep| {
            let r = rep.index;
            let rh = health.replicas.get(r);
            ReplicaPlan {
                replica: r,
                role: if r == source {
                    Role::Source
                } else if targets.contains(&r) {
                    Role::Target
                } else {
                    Role::Healthy
                },
                fault: rh.and_then(|x| x.message.clone()).or_else(|| {
                    interrupted.get(r).copied().unwrap_or(false).then(|| {
                        format!("replica {r}: an interrupted sync was rebuilding it (a header checksum is inverted)")
                    })
                }),
                bad_block_bytes: (0..rep.parts.len())
                    .flat_map(|p| bad.of(r, p).iter())
                    .map(|b| b.len)
                    .sum(),
                parts: rep
                    .parts
                    .iter()
                    .map(|part| {
                        let p = part.index;
                        let own = rh
                            .and_then(|x| x.parts.get(p))
                            .and_then(|ph| ph.fault.as_ref().map(ToString::to_string));
                        let fault = own.or_else(|| {
                            bad_header
                                .get(r)
                                .and_then(|v| v.get(p))
                                .copied()
                                .unwrap_or(false)
                                .then(|| "a bad block covers the pool header".to_string())
                        });
                        PartPlan {
                            part: p,
                            path: part.path.clone(),
                            fault,
                            data: data
                                .get(r)
                                .and_then(|v| v.get(p))
                                .copied()
                                .unwrap_or(DataAction::Keep),
                            header: headers
                                .get(r)
                                .and_then(|v| v.get(p))
                                .map_or(HeaderAction::None, |x| x.0),
                            uuid: uuids
                                .get(r)
                                .and_then(|v| v.get(p))
                                .map(RawUuid::to_canonical),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Plan {
        path: set.path.clone(),
        source,
        pool_size,
        poolset_uuid: poolset_uuid.to_canonical(),
        mode,
        bad_blocks: bad.origin,
        alternates,
        replicas,
        steps,
        totals,
    })
}

/// A hard error of the health check as one line that names the replicas
/// and parts concerned (with their files), after PMDK's wording.
fn describe_inconsistency<F: PartFile>(
    set: &OpenSet<F>,
    health: &Health,
    inc: &Inconsistency,
) -> String {
    let part = |r: usize, p: usize| crate::sync::part_name(set, r, p);
    let replica = |r: usize| match set.part(r, 0) {
        Some(p) => format!("replica {r} ({})", p.path.display()),
        None => format!("replica {r}"),
    };
    let detail = match inc {
        Inconsistency::NoReadablePart | Inconsistency::NoHealthyReplica => replica_reasons(health),
        Inconsistency::PartsPoolsetUuid { replica: r, first_part, part: p } => format!(
            "{} and {} carry different pool set uuids",
            part(*r, *first_part),
            part(*r, *p)
        ),
        Inconsistency::PartsReplicaUuids { replica: r, first_part, part: p } => format!(
            "{} and {} name different neighbouring replicas",
            part(*r, *first_part),
            part(*r, *p)
        ),
        Inconsistency::PartsNotLinked { replica: r, part: p, next_part } => format!(
            "{} and {} do not link to each other",
            part(*r, *p),
            part(*r, *next_part)
        ),
        Inconsistency::ReplicasPoolsetUuid { healthy_replica, replica: r } => format!(
            "{} carries another pool set uuid than replica {healthy_replica}; it may belong to another pool set",
            replica(*r)
        ),
        Inconsistency::ReplicaUuids { replica: r, next_replica } => format!(
            "{} and {} do not link to each other",
            replica(*r),
            replica(*next_replica)
        ),
        Inconsistency::BorderUuids { replica: r } => {
            let n = set.replicas.len().max(1);
            format!(
                "{} and {} do not link across the broken replica between them",
                replica(*r),
                replica((*r + 2) % n)
            )
        }
        Inconsistency::AlienReplica { replica: r } => replica(*r),
        Inconsistency::ReplicasTooSmall { replica: r, .. }
        | Inconsistency::PoolSizesDiffer { replica: r, .. } => replica(*r),
    };
    format!("{inc}: {detail}")
}

/// Why each replica is not healthy: `replica R: reason; ...`.
fn replica_reasons(health: &Health) -> String {
    health
        .replicas
        .iter()
        .map(|r| {
            r.message
                .clone()
                .or_else(|| r.parts.iter().find_map(|p| p.message.clone()))
                .unwrap_or_else(|| format!("replica {}: healthy", r.replica))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether a header was invalidated by a sync ([`Step::InvalidateHeader`]):
/// its stored checksum is the bitwise complement of the right one. Random
/// damage does this with a chance of 2^-64.
pub fn is_invalidated(hdr: &PoolHdr) -> bool {
    hdr.checksum == !hdr.compute_checksum()
}

/// Bytes of header page that parts after the first keep out of the
/// address space.
fn header_gap(single_hdr: bool) -> u64 {
    if single_hdr {
        0
    } else {
        PAGE
    }
}

/// A new header as libpmempool's `util_header_create` writes it for a
/// rebuilt part (spec 2.10): attributes from the source's part 0, the
/// SINGLEHDR flag from the pool set, the pool set UUID, the part's UUID and
/// links, the running machine's arch flags and a clean shutdown state (on
/// storage without unsafe-shutdown counters PMDK's initialised state is all
/// zero once the dirty flag it sets is cleared again on close). The crtime
/// is filled in when the header is written.
pub(crate) fn new_header(
    src: &PoolHdr,
    single_hdr: bool,
    poolset_uuid: RawUuid,
    uuid: RawUuid,
    links: &HeaderLinks,
) -> PoolHdr {
    let mut features = src.features;
    if single_hdr {
        features.incompat |= FEAT_SINGLEHDR;
    }
    let ty = src.pool_type().unwrap_or(PoolType::Obj);
    let mut hdr = PoolHdr::new(ty, features, poolset_uuid, uuid, links, 0);
    hdr.signature = src.signature;
    hdr.major = src.major;
    hdr.sds = Sds::reinitialized(&Sds::current_non_pmem());
    hdr.checksum = hdr.compute_checksum();
    hdr
}

/// Pushes copy or compare steps for `range`, copied from `from` into `to`
/// (`(from, to)`), split at both replicas' part boundaries.
pub(crate) fn push_data_steps<F: PartFile>(
    steps: &mut Vec<Step>,
    set: &OpenSet<F>,
    purpose: DataPurpose,
    (from, to): (usize, usize),
    range: LogicalRange,
) {
    let (Some(src), Some(dst)) = (set.replica(from), set.replica(to)) else {
        return;
    };
    for piece in split_at_boundaries(&[&src.extents, &dst.extents], range) {
        let (Some(s), Some(d)) = (
            map_range(&src.extents, piece.offset, piece.len)
                .first()
                .copied(),
            map_range(&dst.extents, piece.offset, piece.len)
                .first()
                .copied(),
        ) else {
            continue;
        };
        let path_of = |rep: &crate::open::OpenReplica<F>, p: usize| {
            rep.parts.get(p).map(|x| x.path.clone()).unwrap_or_default()
        };
        let step = DataStep {
            purpose,
            replica: to,
            part: d.part,
            path: path_of(dst, d.part),
            file_offset: d.file_offset,
            from_replica: from,
            from_part: s.part,
            from_path: path_of(src, s.part),
            from_offset: s.file_offset,
            logical: piece.offset,
            len: piece.len,
        };
        steps.push(match purpose {
            DataPurpose::Repair => Step::CompareAndCopy(step),
            DataPurpose::Rebuild | DataPurpose::BadBlocks => Step::CopyRange(step),
        });
    }
}

/// Pushes the header writes of replica `r` (new, restored, relinked).
fn push_header_steps<F: PartFile>(
    steps: &mut Vec<Step>,
    set: &OpenSet<F>,
    r: usize,
    headers: &[Vec<(HeaderAction, Option<PoolHdr>)>],
    assigned: &[Vec<crate::sync::uuids::Assigned>],
) {
    let Some(rep) = set.replica(r) else { return };
    for part in &rep.parts {
        let p = part.index;
        let Some((kind, Some(hdr))) = headers.get(r).and_then(|v| v.get(p)) else {
            continue;
        };
        if matches!(kind, HeaderAction::None | HeaderAction::Keep) {
            continue;
        }
        let Some(a) = assigned.get(r).and_then(|v| v.get(p)) else {
            continue;
        };
        steps.push(Step::WriteHeader(HeaderStep {
            replica: r,
            part: p,
            path: part.path.clone(),
            kind: *kind,
            uuid: a.uuid.to_canonical(),
            uuid_origin: a.origin,
            header: hdr.clone(),
        }));
    }
}

/// One `SyncDirectory` per distinct parent directory of `paths`.
pub(crate) fn push_dir_syncs<'a>(steps: &mut Vec<Step>, paths: impl Iterator<Item = &'a PathBuf>) {
    let dirs: BTreeSet<PathBuf> = paths
        .map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default())
        .collect();
    for dir in dirs {
        steps.push(Step::SyncDirectory { path: dir });
    }
}

/// Steps from `source` to `r` around the replica ring, the shorter way.
fn ring_distance(source: usize, r: usize, n: usize) -> usize {
    let fwd = (r + n - source) % n;
    fwd.min(n - fwd)
}

/// The bad blocks of replica `r` as logical ranges (libpmempool's
/// `sync_recalc_badblocks`): ranges inside a header page are dropped, the
/// header page of later parts is cut off, ends are aligned to pages, and
/// the result is clipped to `[4096, pool_size)`.
fn bad_ranges(
    bad: &BadBlockScan,
    r: usize,
    extents: &[Extent],
    h: u64,
    pool_size: u64,
) -> Vec<LogicalRange> {
    let mut out: Vec<LogicalRange> = Vec::new();
    for extent in extents {
        for bb in bad.of(r, extent.part) {
            let (mut off, mut len) = (bb.offset, bb.len);
            if off.saturating_add(len) <= h {
                continue;
            }
            if extent.part > 0 && h > 0 {
                if off >= h {
                    off -= h;
                } else {
                    len -= h - off;
                    off = 0;
                }
            }
            let start = off - off % PAGE;
            let end = off.saturating_add(len).div_ceil(PAGE).saturating_mul(PAGE);
            let lo = extent
                .logical
                .saturating_add(start)
                .max(PAGE)
                .max(extent.logical);
            let hi = extent
                .logical
                .saturating_add(end)
                .min(extent.logical.saturating_add(extent.len))
                .min(pool_size);
            if lo < hi {
                out.push(LogicalRange::from_bounds(lo, hi));
            }
        }
    }
    out.sort();
    let mut merged = Vec::new();
    for r in out {
        crate::compare::push_merged(&mut merged, r);
    }
    merged
}

/// Splits `range` of replica `r` into sub-ranges, each with the
/// lowest-index replica that is not broken and has no bad block there.
fn choose_good(
    set_path: &Path,
    r: usize,
    range: LogicalRange,
    bad_logical: &[Vec<LogicalRange>],
    usable: &dyn Fn(usize) -> bool,
) -> Result<Vec<(usize, LogicalRange)>, Error> {
    let mut cuts = vec![range.offset, range.end()];
    for ranges in bad_logical {
        for b in ranges {
            for c in [b.offset, b.end()] {
                if c > range.offset && c < range.end() {
                    cuts.push(c);
                }
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<(usize, LogicalRange)> = Vec::new();
    for w in cuts.windows(2) {
        let [a, b] = w else { continue };
        let sub = LogicalRange::from_bounds(*a, *b);
        let good = (0..bad_logical.len()).find(|&g| {
            g != r
                && usable(g)
                && !bad_logical
                    .get(g)
                    .is_some_and(|v| v.iter().any(|x| x.intersect(&sub).is_some()))
        });
        let Some(g) = good else {
            return Err(Error::Uncorrectable {
                set: set_path.to_path_buf(),
                replica: r,
                offset: sub.offset,
                end: sub.end(),
            });
        };
        match out.last_mut() {
            Some((lg, lr)) if *lg == g && lr.end() == sub.offset => {
                *lr = LogicalRange::from_bounds(lr.offset, sub.end());
            }
            _ => out.push((g, sub)),
        }
    }
    Ok(out)
}

/// Counts what `steps` do.
pub(crate) fn totals(steps: &[Step]) -> Totals {
    let mut t = Totals::default();
    for step in steps {
        match step {
            Step::RemoveRecoveryFiles { paths } => t.recovery_files_to_remove += paths.len() as u64,
            Step::SaveRecoveryFiles { files } => t.recovery_files_to_save += files.len() as u64,
            Step::InvalidateHeader { .. } => t.headers_to_invalidate += 1,
            Step::CreatePart { .. } => t.parts_to_create += 1,
            Step::SetMode { .. } => t.modes_to_set += 1,
            Step::SyncDirectory { .. } => {}
            Step::CopyRange(d) => t.bytes_to_copy += d.len,
            Step::CompareAndCopy(d) => t.bytes_to_compare += d.len,
            Step::WriteHeader(_) => t.headers_to_write += 1,
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::badblocks::BadBlock;

    #[test]
    fn ring_distance_goes_the_short_way() {
        assert_eq!(ring_distance(0, 1, 4), 1);
        assert_eq!(ring_distance(0, 3, 4), 1);
        assert_eq!(ring_distance(0, 2, 4), 2);
        assert_eq!(ring_distance(2, 0, 3), 1);
    }

    #[test]
    fn bad_blocks_become_page_aligned_logical_ranges() {
        let m = 1u64 << 20;
        let extents = [
            Extent {
                part: 0,
                logical: 0,
                file_offset: 0,
                len: 8 * m,
            },
            Extent {
                part: 1,
                logical: 8 * m,
                file_offset: 4096,
                len: 8 * m - 4096,
            },
        ];
        let scan = BadBlockScan {
            blocks: vec![vec![
                vec![
                    BadBlock {
                        offset: 100,
                        len: 10,
                    }, // header only: dropped
                    BadBlock {
                        offset: 5000,
                        len: 10,
                    }, // one page
                ],
                vec![
                    BadBlock {
                        offset: 0,
                        len: 8192,
                    }, // header cut off
                    BadBlock {
                        offset: 8 * m - 10,
                        len: 100,
                    }, // clipped to the part
                ],
            ]],
            ..BadBlockScan::default()
        };
        let ranges = bad_ranges(&scan, 0, &extents, 4096, 16 * m);
        assert_eq!(
            ranges,
            [
                LogicalRange::new(4096, 4096),
                LogicalRange::new(8 * m, 4096),
                LogicalRange::from_bounds(16 * m - 8192, 16 * m - 4096),
            ]
        );
    }
}
