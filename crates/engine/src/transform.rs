//! `pmempool transform`: change the structure of a pool set (spec 5.4) —
//! add replicas or remove replicas, and (beyond pmempool) replace replicas
//! by replicas of another part layout in one call — validated against the
//! media before anything is written, with a plan shared by the dry run and
//! the real run, and crash safety.
//!
//! The path from two pool set files to a transformed pool set:
//!
//! 1. [`plan()`] parses both files, matches their replicas (same part path
//!    strings and sizes, in order; replica order does not matter), decides
//!    the one operation the pair describes and refuses everything else as
//!    pmempool does. It opens the source, requires it to be fully healthy,
//!    and proves that every file the operation would overwrite or delete
//!    belongs to the pool set: its header carries the source's pool set
//!    UUID. Then it opens the target set and builds a [`TransformPlan`]
//!    whose data and header steps are a [`crate::sync::Plan`] on the
//!    target, carried out by [`crate::sync::execute`].
//! 2. [`execute`] carries the plan out; [`transform`] does both.
//!
//! # Order, for crash safety
//!
//! *Adding replicas*: each new part is created (fully allocated) and given
//! at once its future header with an *inverted* checksum (the mark
//! [`crate::sync::plan::is_invalidated`] recognises), so that a file left
//! by a crash is provably ours; then the data is copied and fenced, the new
//! replicas' headers are written, and only then are the existing replicas'
//! replica links rewritten. Until that last phase the source is untouched
//! and the old pool set file opens it.
//!
//! *Removing replicas*: the remaining replicas are relinked first, and the
//! files of the removed replicas are deleted last.
//!
//! *Reshaping* (replicas added and removed in one call, which pmempool
//! refuses): the added replicas are built as above from a replica that
//! stays, then the ring is relinked without the removed replicas, whose
//! files are deleted last. New replicas must use new files (a part file of
//! the source in a new replica would need a temporary copy, which is
//! refused), and at least one source replica must stay.
//!
//! A crash while headers are being relinked leaves links that neither pool
//! set file's health check accepts. Running the same transform again
//! recognises that state — every header of the target set valid, carrying
//! one pool set UUID, with only replica links out of step — and finishes
//! the relinking (and the deletions). A re-run after a completed transform
//! finds nothing to do and succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use poolsync_header::{ring_links, PoolHdr, PoolType, RawUuid, POOL_HDR_SIZE};
use poolsync_pmem::{Access, FileKind, PartFile, Storage};
use poolsync_poolset::{PartSize, PoolSet, Replica, PAGE};
use serde::Serialize;

use crate::compare::{default_threads, LogicalRange, DEFAULT_STRIDE};
use crate::inspect::inspect;
use crate::open::{open, HeaderState, OpenSet, PartStatus};
use crate::sync::plan::{
    is_invalidated, new_header, push_data_steps, push_dir_syncs, totals, DataPurpose, HeaderAction,
    HeaderStep, Plan, Step, DEFAULT_PART_MODE, SYNC_MIN_PART,
};
use crate::sync::uuids::UuidOrigin;
use crate::sync::{Progress, SyncOptions, SyncReport, UuidSource};
use crate::Error;

mod staging;

pub use staging::{
    interrupted, journal_path, DataFrom, Staging, TempCopy, JOURNAL_SUFFIX, TEMP_SUFFIX,
};

/// Options of a transform.
#[derive(Debug, Clone)]
pub struct TransformOptions {
    /// `-d`: plan only, nothing is written.
    pub dry_run: bool,
    /// Where fresh UUIDs come from.
    pub uuids: UuidSource,
    /// Bytes per copy step.
    pub stride: usize,
    /// Worker threads for copies.
    pub threads: usize,
}

impl Default for TransformOptions {
    fn default() -> Self {
        TransformOptions {
            dry_run: false,
            uuids: UuidSource::Random,
            stride: DEFAULT_STRIDE,
            threads: default_threads(),
        }
    }
}

/// The structural change a transform makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    /// Replicas of the target (by target index) are created.
    AddReplicas {
        /// Target replica indices.
        replicas: Vec<usize>,
    },
    /// Replicas of the source (by source index) are removed.
    RemoveReplicas {
        /// Source replica indices.
        replicas: Vec<usize>,
    },
    /// Beyond pmempool: replicas are replaced by replicas of another
    /// layout (new part files), in one call.
    Reshape {
        /// Target replica indices created.
        added: Vec<usize>,
        /// Source replica indices removed.
        removed: Vec<usize>,
    },
    /// `OPTION SINGLEHDR` is added: every replica is rewritten with one
    /// header, in part 0.
    AddSingleHdr,
    /// `OPTION SINGLEHDR` is removed: every replica is rewritten with a
    /// header in each part.
    RemoveSingleHdr,
    /// An interrupted transform is finished: links are completed and the
    /// files of removed replicas that are still there are deleted.
    Finish,
}

/// A part created by the transform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewPart {
    /// Target replica index.
    pub replica: usize,
    /// Part index.
    pub part: usize,
    /// The file.
    pub path: PathBuf,
    /// Its size (fully allocated).
    pub size: u64,
    /// A file left by an interrupted run of this transform is replaced.
    pub replace: bool,
    /// The header it gets (written with an inverted checksum at creation).
    #[serde(skip)]
    pub header: Option<PoolHdr>,
}

/// A part file deleted by the transform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedPart {
    /// Source replica index.
    pub replica: usize,
    /// Part index.
    pub part: usize,
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
}

/// Exact counts of what a transform does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TransformTotals {
    /// Parts created.
    pub parts_to_create: u64,
    /// Bytes allocated for them.
    pub bytes_to_allocate: u64,
    /// Bytes copied into them.
    pub bytes_to_copy: u64,
    /// Headers written (new ones and relinked ones).
    pub headers_to_write: u64,
    /// Part files deleted.
    pub parts_to_remove: u64,
    /// Bytes those files hold.
    pub bytes_to_free: u64,
    /// Bytes copied into a temporary copy first (transforms that rewrite
    /// every replica onto its own files).
    pub bytes_to_stage: u64,
}

/// Everything a transform will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransformPlan {
    /// The source pool set file.
    pub source: PathBuf,
    /// The target pool set file.
    pub target: PathBuf,
    /// The change.
    pub operation: Operation,
    /// Bytes of the pool (`heap_offset + heap_size`).
    pub pool_size: u64,
    /// The pool set UUID every header carries.
    pub poolset_uuid: String,
    /// Mode of new parts (the source master's part 0), octal string in JSON.
    #[serde(serialize_with = "ser_mode")]
    pub mode: u32,
    /// Parts created, in order.
    pub create: Vec<NewPart>,
    /// Data and header steps on the target set.
    pub steps: Plan,
    /// Part files deleted at the end.
    pub remove: Vec<RemovedPart>,
    /// Files a stale, interrupted run left (its journal and temporary
    /// copy), deleted first: the source is healthy, so they hold nothing
    /// it needs.
    pub discard: Vec<PathBuf>,
    /// How replicas that are rewritten onto their own files are rebuilt
    /// (`SINGLEHDR` changes, reshapes in place); `None` for transforms that
    /// only create and delete files.
    pub staging: Option<Staging>,
    /// Counts.
    pub totals: TransformTotals,
}

impl TransformPlan {
    /// Whether the plan does nothing (a finished transform run again).
    pub fn is_noop(&self) -> bool {
        self.create.is_empty()
            && self.steps.steps.is_empty()
            && self.remove.is_empty()
            && self.discard.is_empty()
            && self.staging.is_none()
    }
}

/// What [`execute`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransformReport {
    /// Parts created.
    pub parts_created: u64,
    /// Part files deleted.
    pub parts_removed: u64,
    /// What the data and header steps did.
    pub sync: SyncReport,
}

/// The plan and, for a real run, what was done.
#[derive(Debug, Clone, Serialize)]
pub struct TransformOutcome {
    /// The plan.
    pub plan: TransformPlan,
    /// `None` for a dry run.
    pub report: Option<TransformReport>,
}

fn ser_mode<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// Plans and (unless a dry run) carries out the transform of `src` into
/// `dst`.
pub fn transform<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
    options: &TransformOptions,
    progress: &dyn Progress,
) -> Result<TransformOutcome, Error> {
    let (plan, mut target) = plan(storage, src, dst, options)?;
    if options.dry_run {
        return Ok(TransformOutcome { plan, report: None });
    }
    let report = execute(storage, &mut target, &plan, options, progress)?;
    Ok(TransformOutcome {
        plan,
        report: Some(report),
    })
}

/// A refusal naming both pool set files.
fn refuse(src: &Path, dst: &Path, reason: impl Into<String>) -> Error {
    Error::CannotTransform {
        source_set: src.to_path_buf(),
        target_set: dst.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads and parses a pool set file (no part is opened).
fn parse_set<S: Storage>(storage: &S, path: &Path) -> Result<PoolSet, Error> {
    let loaded = crate::load::load(storage, path, Access::ReadOnly)?;
    if !loaded.is_poolset {
        return Err(Error::NotPoolSet {
            path: path.to_path_buf(),
        });
    }
    Ok(loaded.set)
}

/// Every part path of `set`.
fn staging_paths(set: &PoolSet) -> BTreeSet<PathBuf> {
    set.replicas
        .iter()
        .filter_map(replica_key)
        .flatten()
        .map(|(p, _)| PathBuf::from(p))
        .collect()
}

/// A replica's identity for matching: part path strings and sizes.
fn replica_key(replica: &Replica) -> Option<Vec<(String, u64)>> {
    match replica {
        Replica::Local { parts, .. } => parts
            .iter()
            .map(|p| match p.size {
                PartSize::Bytes(b) => Some((p.path.clone(), b)),
                PartSize::Auto => None,
            })
            .collect(),
        Replica::Remote { .. } => None,
    }
}

/// Matches replicas: `src_to_dst[r]` is the target replica that source
/// replica `r` corresponds to, and the reverse.
type Matching = (Vec<Option<usize>>, Vec<Option<usize>>);

fn match_replicas(src: &Path, dst: &Path, s: &PoolSet, d: &PoolSet) -> Result<Matching, Error> {
    let skeys: Vec<_> = s.replicas.iter().map(replica_key).collect();
    let dkeys: Vec<_> = d.replicas.iter().map(replica_key).collect();
    let mut s2d = vec![None; skeys.len()];
    let mut d2s = vec![None; dkeys.len()];
    for (r, sk) in skeys.iter().enumerate() {
        let Some(sk) = sk else { continue };
        let hits: Vec<usize> = dkeys
            .iter()
            .enumerate()
            .filter(|(_, dk)| dk.as_ref() == Some(sk))
            .map(|(i, _)| i)
            .collect();
        if hits.len() > 1 {
            return Err(refuse(
                src,
                dst,
                format!("source replica {r} matches more than one target replica ({hits:?})"),
            ));
        }
        if let (Some(&t), Some(slot)) = (hits.first(), s2d.get_mut(r)) {
            *slot = Some(t);
            if let Some(back) = d2s.get_mut(t) {
                if back.is_some() {
                    return Err(refuse(
                        src,
                        dst,
                        format!("target replica {t} matches more than one source replica"),
                    ));
                }
                *back = Some(r);
            }
        }
    }
    Ok((s2d, d2s))
}

/// What the source survey learnt.
struct SourceInfo {
    healthy: Result<(), String>,
    pool_size: Option<u64>,
    master: Option<PoolHdr>,
    mode: u32,
    /// Per replica and part: the file's header, when it has one that decodes.
    headers: Vec<Vec<Option<PoolHdr>>>,
    /// Per replica and part: whether the file exists.
    exists: Vec<Vec<bool>>,
}

fn survey_source<S: Storage>(storage: &S, src: &Path) -> Result<SourceInfo, Error> {
    let set = open(storage, src, Access::ReadOnly)?;
    let health = inspect(&set);
    let healthy = if health.is_healthy() {
        Ok(())
    } else if let Some(inc) = health.inconsistencies.first() {
        Err(inc.to_string())
    } else {
        Err(health
            .replicas
            .iter()
            .filter(|r| !r.healthy)
            .map(|r| {
                r.message
                    .clone()
                    .or_else(|| r.parts.iter().find_map(|p| p.message.clone()))
                    .unwrap_or_else(|| format!("replica {} is not healthy", r.replica))
            })
            .collect::<Vec<_>>()
            .join("; "))
    };
    let master = set.part(0, 0).and_then(|p| p.header()).cloned();
    let mode = set
        .part(0, 0)
        .and_then(|p| p.meta)
        .map_or(DEFAULT_PART_MODE, |m| m.mode & 0o7777);
    let headers = set
        .replicas
        .iter()
        .map(|r| r.parts.iter().map(|p| p.header().cloned()).collect())
        .collect();
    let exists = set
        .replicas
        .iter()
        .map(|r| r.parts.iter().map(|p| p.meta.is_some()).collect())
        .collect();
    Ok(SourceInfo {
        healthy,
        pool_size: health.pool_size,
        master,
        mode,
        headers,
        exists,
    })
}

/// The healthy source's master header and pool size, checked as pmempool
/// checks them: an obj pool, whose pool fits the smallest replica of the
/// target set `d`.
fn source_facts(
    src: &Path,
    dst: &Path,
    info: &SourceInfo,
    d: &PoolSet,
) -> Result<(PoolHdr, u64), Error> {
    let master = info.master.clone().ok_or_else(|| {
        refuse(
            src,
            dst,
            "replica 0 part 0 of the source has no readable pool header",
        )
    })?;
    if master.pool_type() != Some(PoolType::Obj) {
        return Err(refuse(src, dst, "the source is not an obj pool"));
    }
    let pool_size = info
        .pool_size
        .ok_or_else(|| refuse(src, dst, "the source pool size is not known"))?;
    let target_size = d.pool_size().unwrap_or(0);
    if pool_size > target_size {
        return Err(refuse(
            src,
            dst,
            format!(
                "target poolset is too small: the pool holds {pool_size} bytes, the smallest target replica {target_size}"
            ),
        ));
    }
    Ok((master, pool_size))
}

/// Decides, validates and plans the transform of `src` into `dst`; returns
/// the plan and the target set, open read-write for a real run and
/// read-only for a dry run.
pub fn plan<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
    options: &TransformOptions,
) -> Result<(TransformPlan, OpenSet<S::File>), Error> {
    let s = parse_set(storage, src)?;
    let d = parse_set(storage, dst)?;
    for (set, path) in [(&s, src), (&d, dst)] {
        if set.options.no_hdrs {
            return Err(Error::NoHdrs {
                set: path.to_path_buf(),
            });
        }
    }
    check_target_parts(storage, dst, &d)?;

    let (s2d, d2s) = match_replicas(src, dst, &s, &d)?;
    let removed: Vec<usize> = (0..s2d.len())
        .filter(|&r| s2d.get(r).is_some_and(Option::is_none))
        .collect();
    let added: Vec<usize> = (0..d2s.len())
        .filter(|&r| d2s.get(r).is_some_and(Option::is_none))
        .collect();
    let hdr_change = s.options.single_hdr != d.options.single_hdr;
    if hdr_change && (!removed.is_empty() || !added.is_empty()) {
        return Err(refuse(
            src,
            dst,
            "changing SINGLEHDR together with adding or removing replicas is not allowed; change one thing at a time",
        ));
    }
    if !hdr_change && removed.is_empty() && added.is_empty() {
        return Err(refuse(
            src,
            dst,
            "both poolsets are equal: nothing to transform",
        ));
    }
    let journal = staging::find_journal(storage, src)?;
    // Beyond pmempool: replicas rewritten onto their own files (a
    // SINGLEHDR change, or new replicas that reuse source files), or
    // replaced while no source replica stays, go through a staged rebuild.
    let src_paths: BTreeSet<PathBuf> = staging_paths(&s);
    let reuses = added.iter().any(|&r| {
        d.replicas
            .get(r)
            .and_then(replica_key)
            .unwrap_or_default()
            .iter()
            .any(|(p, _)| src_paths.contains(Path::new(p)))
    });
    let none_stays = !removed.is_empty() && !added.is_empty() && s2d.iter().all(Option::is_none);
    if hdr_change || reuses || none_stays {
        let request = staging::Request {
            src,
            dst,
            s: &s,
            d: &d,
            d2s: &d2s,
            added: &added,
            removed: &removed,
            hdr_change,
            journal,
        };
        return staging::plan(storage, request, options);
    }

    let info = survey_source(storage, src)?;
    if let (Some(found), Err(_)) = (&journal, &info.healthy) {
        return Err(refuse(
            src,
            dst,
            format!(
                "an interrupted transform left {}; finish it first with `{}`",
                found.path().display(),
                found.command()
            ),
        ));
    }
    if let Err(why) = &info.healthy {
        return plan_finish(storage, src, dst, &s, &d, &removed, &info, why, options);
    }
    let (master, pool_size) = source_facts(src, dst, &info, &d)?;
    let poolset_uuid = master.poolset_uuid;

    let discard = match &journal {
        Some(found) => staging::stale_files(storage, src, dst, found, poolset_uuid)?,
        None => Vec::new(),
    };
    // Every file that will be deleted must carry this pool set's UUID.
    let mut remove = Vec::new();
    for &r in &removed {
        remove.extend(owned_parts(src, dst, &s, r, &info, poolset_uuid)?);
    }

    let access = if options.dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let target = open(storage, dst, access)?;
    // Data is read from the first source replica that stays.
    let master_dst = s2d.iter().find_map(|m| *m).unwrap_or(0);
    // A file that carries the UUID of a source part is a copy of it (a
    // backup, say), not something an interrupted run left behind.
    let source_uuids: BTreeSet<RawUuid> = info
        .headers
        .iter()
        .flatten()
        .flatten()
        .map(|h| h.uuid)
        .collect();
    let mut create = Vec::new();
    let mut uuids: Vec<Vec<RawUuid>> = Vec::with_capacity(target.replicas.len());
    for rep in &target.replicas {
        let new = added.contains(&rep.index);
        let mut v = Vec::with_capacity(rep.nhdrs);
        for part in &rep.parts {
            if new {
                let replace = part.meta.is_some();
                if replace {
                    prove_left_by_us(dst, part, poolset_uuid, &source_uuids)?;
                }
                create.push(NewPart {
                    replica: rep.index,
                    part: part.index,
                    path: part.path.clone(),
                    size: part.configured_size,
                    replace,
                    header: None,
                });
            }
            if part.index >= rep.nhdrs {
                continue;
            }
            if new {
                v.push(options.uuids.generate(rep.index, part.index));
            } else {
                let h = part.header().ok_or_else(|| {
                    refuse(src, dst, format!("{}: no pool header", part.path.display()))
                })?;
                v.push(h.uuid);
            }
        }
        uuids.push(v);
    }

    check_free_space(storage, src, dst, &create, "the new parts")?;

    let mut steps = Vec::new();
    if !added.is_empty() {
        // The parts are created by `execute` before these steps run.
        let dirs: Vec<PathBuf> = create.iter().map(|c| c.path.clone()).collect();
        push_dir_syncs(&mut steps, dirs.iter());
        for &r in &added {
            if pool_size > PAGE {
                push_data_steps(
                    &mut steps,
                    &target,
                    DataPurpose::Rebuild,
                    (master_dst, r),
                    LogicalRange::from_bounds(PAGE, pool_size),
                );
            }
        }
    }
    let headers = header_steps(&target, &uuids, &added, &master, poolset_uuid)
        .map_err(|e| refuse(src, dst, e))?;
    for c in &mut create {
        c.header = headers
            .iter()
            .find(|h| h.replica == c.replica && h.part == c.part)
            .map(|h| h.header.clone());
    }
    steps.extend(headers.into_iter().map(Step::WriteHeader));

    let operation = if added.is_empty() {
        Operation::RemoveReplicas { replicas: removed }
    } else if removed.is_empty() {
        Operation::AddReplicas { replicas: added }
    } else {
        Operation::Reshape { added, removed }
    };
    let mut plan = assemble(
        src,
        dst,
        operation,
        pool_size,
        poolset_uuid,
        info.mode,
        master_dst,
        create,
        steps,
        remove,
    );
    plan.discard = discard;
    Ok((plan, target))
}

/// The target's part checks that come before anything is opened: sizes,
/// directories and files named twice (by inode for files that exist, by
/// path otherwise).
fn check_target_parts<S: Storage>(storage: &S, dst: &Path, d: &PoolSet) -> Result<(), Error> {
    let mut seen: BTreeMap<(u64, u64), (usize, PathBuf)> = BTreeMap::new();
    let mut seen_paths: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for (r, replica) in d.replicas.iter().enumerate() {
        let Replica::Local { parts, .. } = replica else {
            return Err(Error::Unsupported {
                set: dst.to_path_buf(),
                line: 0,
                what: "remote replicas are".to_string(),
            });
        };
        for (p, part) in parts.iter().enumerate() {
            let size = match part.size {
                PartSize::Bytes(b) => b,
                PartSize::Auto => 0,
            };
            if size < SYNC_MIN_PART {
                return Err(Error::SyncPartTooSmall {
                    set: dst.to_path_buf(),
                    line: part.line,
                    replica: r,
                    part: p,
                    size,
                    min: SYNC_MIN_PART,
                });
            }
            let path = PathBuf::from(&part.path);
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let dir_ok = dir.as_os_str().is_empty()
                || storage
                    .stat(&dir)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.kind == FileKind::Directory);
            if !dir_ok {
                return Err(Error::PartDirectory {
                    set: dst.to_path_buf(),
                    line: part.line,
                    replica: r,
                    part: p,
                    dir,
                });
            }
            let dup = |other: &Path, other_line: usize| Error::DuplicatePart {
                set: dst.to_path_buf(),
                line: part.line,
                part: path.clone(),
                other: other.to_path_buf(),
                other_line,
            };
            if let Some(meta) = storage.stat(&path)? {
                if let Some((line, other)) = seen.get(&(meta.dev, meta.ino)) {
                    return Err(dup(other, *line));
                }
                seen.insert((meta.dev, meta.ino), (part.line, path.clone()));
            }
            if let Some(line) = seen_paths.get(&path) {
                return Err(dup(&path, *line));
            }
            seen_paths.insert(path, part.line);
        }
    }
    Ok(())
}

/// Refuses to start when a file system lacks the space for the new parts
/// (those replacing a file left by an interrupted run need only the
/// difference), so that no run stops half-way for want of space.
fn check_free_space<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
    create: &[NewPart],
    what: &str,
) -> Result<(), Error> {
    // Needed bytes per file system (st_dev of the part's directory).
    let mut needed: BTreeMap<u64, (PathBuf, u64)> = BTreeMap::new();
    for c in create {
        let dir = c.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let probe = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.clone()
        };
        let Some(meta) = storage.stat(&probe)? else {
            continue;
        };
        let existing = if c.replace {
            storage.stat(&c.path)?.map_or(0, |m| m.len)
        } else {
            0
        };
        let entry = needed.entry(meta.dev).or_insert((dir, 0));
        entry.1 = entry.1.saturating_add(c.size.saturating_sub(existing));
    }
    for (dir, bytes) in needed.values() {
        if let Some(free) = storage.free_space(dir)? {
            if free < *bytes {
                return Err(refuse(
                    src,
                    dst,
                    format!(
                        "not enough free space for {what} in {}: {bytes} bytes needed, {free} available",
                        dir.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The parts of source replica `r` as files to delete, each proven to
/// belong to the pool set (header-less SINGLEHDR parts belong with their
/// replica's part 0). Files that no longer exist are left out.
fn owned_parts(
    src: &Path,
    dst: &Path,
    s: &PoolSet,
    r: usize,
    info: &SourceInfo,
    poolset_uuid: RawUuid,
) -> Result<Vec<RemovedPart>, Error> {
    let Some(Replica::Local { parts, .. }) = s.replicas.get(r) else {
        return Ok(Vec::new());
    };
    let nhdrs = s.nhdrs(r);
    let mut out = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        let exists = info
            .exists
            .get(r)
            .and_then(|v| v.get(p))
            .copied()
            .unwrap_or(false);
        if !exists {
            continue;
        }
        let hdr_part = if p < nhdrs { p } else { 0 };
        let hdr = info
            .headers
            .get(r)
            .and_then(|v| v.get(hdr_part))
            .cloned()
            .flatten();
        let carried = hdr.as_ref().map(|h| h.poolset_uuid);
        let valid = hdr
            .as_ref()
            .is_some_and(|h| h.checksum_ok() || is_invalidated(h));
        if !(valid && carried == Some(poolset_uuid)) {
            let what = match (&hdr, valid) {
                (Some(h), true) => {
                    format!("carries pool set uuid {}", h.poolset_uuid.to_canonical())
                }
                _ => "carries no valid pool header".to_string(),
            };
            return Err(Error::NotOwned {
                path: PathBuf::from(&part.path),
                what,
                expected: poolset_uuid.to_canonical(),
                hint: format!(
                    "it would be deleted by the transform of {} into {}",
                    src.display(),
                    dst.display()
                ),
            });
        }
        out.push(RemovedPart {
            replica: r,
            part: p,
            path: PathBuf::from(&part.path),
            size: match part.size {
                PartSize::Bytes(b) => b,
                PartSize::Auto => 0,
            },
        });
    }
    Ok(out)
}

/// A part being added exists: it may be replaced only if an interrupted
/// run of this transform left it (its header carries the pool set UUID,
/// valid or invalidated); otherwise pmempool's refusal, naming the file and
/// what it carries. A copy of a source part (same part UUID) is never
/// replaced.
fn prove_left_by_us<F: PartFile>(
    dst: &Path,
    part: &crate::open::OpenPart<F>,
    poolset_uuid: RawUuid,
    source_uuids: &BTreeSet<RawUuid>,
) -> Result<(), Error> {
    let hdr = part.header();
    let copy = hdr.is_some_and(|h| source_uuids.contains(&h.uuid));
    let ok = !copy
        && hdr.is_some_and(|h| {
            (h.checksum_ok() || is_invalidated(h)) && h.poolset_uuid == poolset_uuid
        });
    if ok && part.status == PartStatus::Ok {
        return Ok(());
    }
    let what = match hdr {
        Some(h) if copy => format!(
            "is a copy of a part of the source (it carries that part's uuid {}) and pool set uuid {}",
            h.uuid.to_canonical(),
            h.poolset_uuid.to_canonical()
        ),
        Some(h) if h.is_zero() => "carries no pool header (its header page is zero)".to_string(),
        Some(h) if h.checksum_ok() => {
            format!("carries pool set uuid {}", h.poolset_uuid.to_canonical())
        }
        _ => "carries no valid pool header".to_string(),
    };
    Err(Error::PartExists {
        set: dst.to_path_buf(),
        line: part.line,
        path: part.path.clone(),
        what,
        expected: poolset_uuid.to_canonical(),
    })
}

/// The header writes that link `target` into rings of `uuids`: new headers
/// for the parts of `added` replicas (first), then relinked headers of the
/// others whose bytes change.
fn header_steps<F: PartFile>(
    target: &OpenSet<F>,
    uuids: &[Vec<RawUuid>],
    added: &[usize],
    master: &PoolHdr,
    poolset_uuid: RawUuid,
) -> Result<Vec<HeaderStep>, String> {
    let links = ring_links(uuids).map_err(|e| e.to_string())?;
    let single_hdr = target.set.options.single_hdr;
    let mut new = Vec::new();
    let mut relinked = Vec::new();
    for rep in &target.replicas {
        let r = rep.index;
        for part in rep.parts.iter().take(rep.nhdrs) {
            let p = part.index;
            let (Some(uuid), Some(l)) = (
                uuids.get(r).and_then(|v| v.get(p)),
                links.get(r).and_then(|v| v.get(p)),
            ) else {
                return Err(format!("replica {r} part {p}: no uuid"));
            };
            if added.contains(&r) {
                new.push(HeaderStep {
                    replica: r,
                    part: p,
                    path: part.path.clone(),
                    kind: HeaderAction::New,
                    uuid: uuid.to_canonical(),
                    uuid_origin: UuidOrigin::Fresh,
                    header: new_header(master, single_hdr, poolset_uuid, *uuid, l),
                });
                continue;
            }
            let Some(current) = part.header() else {
                return Err(format!("{}: no pool header", part.path.display()));
            };
            let mut kept = current.clone();
            kept.set_links(l);
            kept.checksum = kept.compute_checksum();
            if part.header_bytes() != Some(&kept.encode_raw()[..]) {
                relinked.push(HeaderStep {
                    replica: r,
                    part: p,
                    path: part.path.clone(),
                    kind: HeaderAction::Relink,
                    uuid: uuid.to_canonical(),
                    uuid_origin: UuidOrigin::Kept,
                    header: kept,
                });
            }
        }
    }
    new.extend(relinked);
    Ok(new)
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    src: &Path,
    dst: &Path,
    operation: Operation,
    pool_size: u64,
    poolset_uuid: RawUuid,
    mode: u32,
    master_dst: usize,
    create: Vec<NewPart>,
    steps: Vec<Step>,
    remove: Vec<RemovedPart>,
) -> TransformPlan {
    let sync_totals = totals(&steps);
    let plan_totals = TransformTotals {
        parts_to_create: create.len() as u64,
        bytes_to_allocate: create.iter().map(|c| c.size).sum(),
        bytes_to_copy: sync_totals.bytes_to_copy,
        headers_to_write: sync_totals.headers_to_write,
        parts_to_remove: remove.len() as u64,
        bytes_to_free: remove.iter().map(|r| r.size).sum(),
        bytes_to_stage: 0,
    };
    TransformPlan {
        source: src.to_path_buf(),
        target: dst.to_path_buf(),
        operation,
        pool_size,
        poolset_uuid: poolset_uuid.to_canonical(),
        mode,
        create,
        steps: Plan {
            path: dst.to_path_buf(),
            source: master_dst,
            pool_size,
            poolset_uuid: poolset_uuid.to_canonical(),
            mode,
            bad_blocks: Default::default(),
            alternates: Vec::new(),
            replicas: Vec::new(),
            steps,
            totals: sync_totals,
        },
        remove,
        discard: Vec::new(),
        staging: None,
        totals: plan_totals,
    }
}

/// The source is not healthy: this may be a transform that was
/// interrupted while relinking or deleting. It is finished when every
/// header of the target set is valid and carries the source master's pool
/// set UUID, each replica's part ring is intact, and the removed replicas'
/// files that remain are provably ours; otherwise the source is broken, as
/// pmempool says, and `sync` is the way out.
#[allow(clippy::too_many_arguments)]
fn plan_finish<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
    s: &PoolSet,
    d: &PoolSet,
    removed: &[usize],
    info: &SourceInfo,
    why: &str,
    options: &TransformOptions,
) -> Result<(TransformPlan, OpenSet<S::File>), Error> {
    let broken = || {
        refuse(
            src,
            dst,
            format!(
                "source poolset is broken: {why}; repair it with `poolsync sync {}` and run the transform again",
                src.display()
            ),
        )
    };
    let access = if options.dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let target = open(storage, dst, access)?;
    // The target's master header names the pool set (the source's master
    // may be among the files already deleted).
    let Some(master) = target
        .part(0, 0)
        .and_then(|p| p.header())
        .filter(|h| h.pool_type() == Some(PoolType::Obj))
        .cloned()
    else {
        return Err(broken());
    };
    let poolset_uuid = master.poolset_uuid;
    let mut uuids: Vec<Vec<RawUuid>> = Vec::with_capacity(target.replicas.len());
    for rep in &target.replicas {
        let mut v = Vec::with_capacity(rep.nhdrs);
        for part in &rep.parts {
            if part.status != PartStatus::Ok {
                return Err(broken());
            }
            if part.index >= rep.nhdrs {
                continue;
            }
            let Some(h) = part.header() else {
                return Err(broken());
            };
            if h.poolset_uuid != poolset_uuid {
                return Err(broken());
            }
            v.push(h.uuid);
        }
        // The part ring must already be intact: only replica links may lag.
        let n = v.len();
        for (p, part) in rep.parts.iter().take(rep.nhdrs).enumerate() {
            let Some(h) = part.header() else {
                return Err(broken());
            };
            let prev = v.get((p + n - 1) % n.max(1)).copied();
            let next = v.get((p + 1) % n.max(1)).copied();
            if Some(h.prev_part_uuid) != prev || Some(h.next_part_uuid) != next {
                return Err(broken());
            }
        }
        uuids.push(v);
    }
    // Every header must be valid, or be a relink that a crash tore: its
    // checksum is right for its fields with the replica links of the old
    // ring or of the new one (links and checksum lie in different blocks).
    let src_uuids: Vec<Vec<RawUuid>> = s
        .replicas
        .iter()
        .enumerate()
        .map(|(r, _)| {
            (0..s.nhdrs(r))
                .map(|p| {
                    info.headers
                        .get(r)
                        .and_then(|v| v.get(p))
                        .cloned()
                        .flatten()
                        .map(|h| h.uuid)
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let old_links = ring_links(&src_uuids).ok();
    let new_links = ring_links(&uuids).map_err(|e| refuse(src, dst, e.to_string()))?;
    let (_, d2s) = match_replicas(src, dst, s, d)?;
    for rep in &target.replicas {
        for part in rep.parts.iter().take(rep.nhdrs) {
            let Some(h) = part.header() else {
                return Err(broken());
            };
            let mut candidates = vec![new_links.get(rep.index).and_then(|v| v.get(part.index))];
            if let Some(sr) = d2s.get(rep.index).copied().flatten() {
                candidates.push(
                    old_links
                        .as_ref()
                        .and_then(|l| l.get(sr))
                        .and_then(|v| v.get(part.index)),
                );
            }
            let torn_relink = candidates.into_iter().flatten().any(|l| {
                let mut x = h.clone();
                x.set_links(l);
                x.compute_checksum() == h.checksum
            });
            if !(h.checksum_ok() || torn_relink) {
                return Err(broken());
            }
        }
    }
    // The replicas' data must be sound: no ADR failure, a readable
    // descriptor with a valid checksum (a torn header of part 0 leaves the
    // shutdown state unverifiable, which the header check above covers).
    let health = inspect(&target);
    for rh in &health.replicas {
        if let Some(fault) = &rh.fault {
            if *fault != crate::inspect::ReplicaFault::ShutdownStateUnverifiable {
                return Err(broken());
            }
        }
    }
    let mut remove = Vec::new();
    for &r in removed {
        remove.extend(owned_parts(src, dst, s, r, info, poolset_uuid)?);
    }
    let headers = header_steps(&target, &uuids, &[], &master, poolset_uuid)
        .map_err(|e| refuse(src, dst, e))?;
    let pool_size = info.pool_size.or(health.pool_size).unwrap_or(0);
    let mode = info.mode;
    let steps = headers.into_iter().map(Step::WriteHeader).collect();
    let plan = assemble(
        src,
        dst,
        Operation::Finish,
        pool_size,
        poolset_uuid,
        mode,
        0,
        Vec::new(),
        steps,
        remove,
    );
    Ok((plan, target))
}

/// Carries out `plan` on `target` (the set [`plan()`] returned, open
/// read-write): creates the new parts, runs the data and header steps, and
/// deletes the removed replicas' files.
pub fn execute<S: Storage>(
    storage: &S,
    target: &mut OpenSet<S::File>,
    plan: &TransformPlan,
    options: &TransformOptions,
    progress: &dyn Progress,
) -> Result<TransformReport, Error> {
    let mut dirs = BTreeSet::new();
    for path in &plan.discard {
        match storage.remove(path) {
            Ok(()) => {}
            Err(e) if storage.stat(path).ok().flatten().is_none() => drop(e),
            Err(e) => return Err(e.into()),
        }
        dirs.insert(path.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    for dir in &dirs {
        storage.fsync_dir(dir)?;
    }
    if let Some(staging) = &plan.staging {
        return staging::execute(storage, target, plan, staging, options, progress);
    }
    let mut report = TransformReport::default();
    for c in &plan.create {
        let slot = target
            .replicas
            .get_mut(c.replica)
            .and_then(|r| r.parts.get_mut(c.part))
            .ok_or_else(|| Error::InvalidRequest {
                path: plan.target.clone(),
                reason: format!("replica {} part {}: not in the pool set", c.replica, c.part),
            })?;
        if c.replace {
            storage.remove(&c.path)?;
        }
        slot.file = None;
        let file = storage.create(&c.path, c.size)?;
        file.fence()?;
        if let Some(hdr) = &c.header {
            // The future header, marked as unfinished: proof that the file
            // is ours if this run is interrupted.
            let mut mark = hdr.clone();
            mark.crtime = file.ctime()?;
            mark.checksum = !mark.compute_checksum();
            file.write_at(0, &mark.encode_raw())?;
            file.flush(0, POOL_HDR_SIZE as u64)?;
            file.fence()?;
        }
        storage.set_mode(&c.path, plan.mode)?;
        slot.file = Some(file);
        slot.status = PartStatus::Ok;
        if !matches!(slot.header, HeaderState::None) {
            slot.header = HeaderState::NotRead;
        }
        report.parts_created += 1;
    }
    let sync_options = SyncOptions {
        threads: options.threads,
        stride: options.stride,
        uuids: options.uuids,
        ..SyncOptions::default()
    };
    report.sync = crate::sync::execute(storage, target, &plan.steps, &sync_options, progress)?;
    let mut dirs = BTreeSet::new();
    for r in &plan.remove {
        match storage.remove(&r.path) {
            Ok(()) => report.parts_removed += 1,
            Err(e) if storage.stat(&r.path).ok().flatten().is_none() => drop(e),
            Err(e) => return Err(e.into()),
        }
        dirs.insert(r.path.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    for dir in dirs {
        storage.fsync_dir(&dir)?;
    }
    Ok(report)
}

/// Whether the part files of a pool set belong to it, for `rm
/// --verify-owner`: the pool set's UUID is the one in the first valid
/// header in set order (replica 0 part 0 unless it is damaged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The pool set UUID, when any header is valid.
    pub poolset_uuid: Option<String>,
    /// Each existing part file: `Ok` when its header (for a SINGLEHDR part
    /// after the first, its replica's part 0) carries that UUID, otherwise
    /// what it carries instead.
    pub parts: BTreeMap<PathBuf, Result<(), String>>,
}

/// Reads the headers of the pool set at `path` (`None` when it is a
/// single-file pool, which has no set to belong to) and judges who owns
/// each part file.
pub fn ownership<S: Storage>(storage: &S, path: &Path) -> Result<Option<Ownership>, Error> {
    let set = open(storage, path, Access::ReadOnly)?;
    if !set.is_poolset {
        return Ok(None);
    }
    let valid = |h: &&PoolHdr| h.checksum_ok() && !h.is_zero();
    let uuid = set
        .parts()
        .find_map(|p| p.header().filter(valid).map(|h| h.poolset_uuid));
    let mut out = Ownership {
        poolset_uuid: uuid.map(|u| u.to_canonical()),
        parts: BTreeMap::new(),
    };
    for rep in &set.replicas {
        for part in &rep.parts {
            if part.meta.is_none() {
                continue;
            }
            let owner = if part.index < rep.nhdrs {
                part
            } else {
                rep.parts.first().unwrap_or(part)
            };
            let verdict = match (owner.header().filter(valid), uuid) {
                (Some(h), Some(u)) if h.poolset_uuid == u => Ok(()),
                (Some(h), _) => Err(format!(
                    "carries pool set uuid {}",
                    h.poolset_uuid.to_canonical()
                )),
                (None, _) => Err("carries no valid pool header".to_string()),
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
