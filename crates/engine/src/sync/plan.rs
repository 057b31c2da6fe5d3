//! The sync plan: everything a sync will do, decided before the first
//! write, with exact byte counts (ARCHITECTURE.md, "Plans before writes").
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
//! (docs/format.md §16.3): signature, major and features of the source's part 0, the
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

use poolsync_header::PoolHdr;
use poolsync_pmem::PartFile;
use poolsync_poolset::{map_range, Extent, PAGE};
use serde::Serialize;

use crate::badblocks::{BadBlockOrigin, BadBlockScan};
use crate::compare::{split_at_boundaries, LogicalRange};
use crate::endpoint::Endpoint;
use crate::exec::{data_steps, ser_mode, totals};
pub use crate::exec::{DataPurpose, DataStep, HeaderAction, HeaderStep, Step, Totals};
use crate::inspect::{choose_source, Health, Inconsistency, ReplicaHealth, SourceRefusal};
use crate::open::{OpenSet, PartStatus};
use crate::ring::{assign, plan_headers, OnDisk, PartView, Planned, Rules, UuidSource};
use crate::sync::{Survey, SyncOptions};
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
    /// The undo file that will save the bytes the repair overwrites (filled
    /// in by [`crate::sync::prepare`]; `None` when nothing already on disk
    /// is overwritten, or with `--no-undo`).
    pub undo: Option<crate::undo::UndoSummary>,
}

impl Plan {
    /// Whether the plan does nothing: the set is healthy.
    pub fn is_noop(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Refusals that need no I/O: not a pool set, a single replica, parts below
/// the sync minimum (the preconditions of `pmempool sync`, in PMDK's
/// order). [`crate::sync::open_for_sync`] makes them, once.
pub fn check_shape<F: PartFile>(set: &OpenSet<F>) -> Result<(), Error> {
    if !set.is_poolset {
        return Err(Error::NotPoolSet {
            path: set.path.clone(),
        });
    }
    // One local replica is enough when remote replicas are to be synced.
    if set.replicas.len() < 2 && set.remotes.is_empty() {
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

/// Plans a sync of `set` (opened by [`crate::sync::open_for_sync`], whose
/// shape it checked) from what [`crate::sync::survey`] found.
///
/// The planner works in phases, each on the result of the one before:
/// `classify` which parts are broken, choose the source once, learn the
/// facts every header needs, `decide` each part's data and header from
/// one table (UUIDs assigned once), `emit` the steps in crash-safe order,
/// and `summarise` them.
pub fn plan<F: PartFile>(
    set: &OpenSet<F>,
    survey: &Survey,
    options: &SyncOptions,
) -> Result<Plan, Error> {
    let (health, bad) = (&survey.health, &survey.bad_blocks);
    if let Some(first) = health.inconsistencies.first() {
        return Err(refuse(set, describe_inconsistency(set, health, first)));
    }
    let mut table = classify(set, health, bad);
    let source = choose(set, health, &table, options.source)?;
    let mut facts = Facts::of(set, health, source)?;
    facts.now = survey.now;
    decide(set, health, &mut table, &facts, &options.uuids)?;
    let steps = emit(set, health, bad, &table, &facts)?;
    Ok(summarise(set, health, bad, &table, &facts, steps))
}

/// `sync` cannot go on: the reason names the replica, part or field.
fn refuse<F>(set: &OpenSet<F>, reason: String) -> Error {
    Error::CannotSync {
        set: set.path.clone(),
        reason,
    }
}

/// The planner's table: one row per replica, one cell per part.
struct Table {
    replicas: Vec<Row>,
}

/// One replica in the planner's table.
struct Row {
    /// A header an interrupted sync invalidated marks the whole replica as
    /// being rebuilt (see the module documentation).
    interrupted: bool,
    /// Any part broken: the replica is a target.
    target: bool,
    parts: Vec<Cell>,
}

/// One part in the planner's table.
#[derive(Default)]
struct Cell {
    /// Rebuilt: the health check's verdict, a bad block over its header
    /// page, or an interrupted rebuild of its replica.
    broken: bool,
    /// A bad block covers its header page (libpmempool's
    /// `HAS_CORRUPTED_HEADER`).
    bad_header: bool,
    /// What happens to its data.
    data: Option<DataAction>,
    /// Its header is invalidated first and restored at the end.
    invalidate: bool,
    /// Its header after the sync (header-carrying parts).
    header: Option<Planned>,
}

impl Table {
    fn cell(&self, r: usize, p: usize) -> Option<&Cell> {
        self.replicas.get(r).and_then(|row| row.parts.get(p))
    }

    /// Replica `r` may be the source or an alternate: healthy, nothing of
    /// it broken.
    fn usable(&self, health: &Health, r: usize) -> bool {
        health.replicas.get(r).is_some_and(|h| h.healthy)
            && self.replicas.get(r).is_some_and(|row| !row.target)
    }
}

/// Phase 1: which parts are broken, and so which replicas are targets.
fn classify<F: PartFile>(set: &OpenSet<F>, health: &Health, bad: &BadBlockScan) -> Table {
    let replicas = set
        .replicas
        .iter()
        .map(|rep| {
            let r = rep.index;
            let interrupted = rep.parts.iter().take(rep.nhdrs).any(|part| {
                part.status == PartStatus::Ok && part.header().is_some_and(is_invalidated)
            });
            let parts: Vec<Cell> = rep
                .parts
                .iter()
                .map(|part| {
                    let p = part.index;
                    let bad_header =
                        p < rep.nhdrs && bad.of(r, p).iter().any(|bb| bb.offset < PAGE);
                    Cell {
                        broken: interrupted || health.part_broken(r, p) || bad_header,
                        bad_header,
                        ..Cell::default()
                    }
                })
                .collect();
            Row {
                interrupted,
                target: parts.iter().any(|c| c.broken),
                parts,
            }
        })
        .collect();
    Table { replicas }
}

/// Phase 2: the replica data is read from (`--source N`, or the first
/// usable one).
fn choose<F: PartFile>(
    set: &OpenSet<F>,
    health: &Health,
    table: &Table,
    requested: Option<usize>,
) -> Result<usize, Error> {
    let nrep = set.replicas.len();
    choose_source(nrep, requested, |r| table.usable(health, r)).map_err(|why| {
        refuse(
            set,
            match why {
                SourceRefusal::NoSuchReplica { requested: n, last } => {
                    format!("--source {n}: the pool set has replicas 0 to {last}")
                }
                SourceRefusal::Unusable { requested: n } => {
                    let reason = health
                        .replicas
                        .get(n)
                        .and_then(ReplicaHealth::reason)
                        .unwrap_or_else(|| {
                            format!("a bad block covers a pool header of replica {n}")
                        });
                    format!("--source {n}: replica {n} is not healthy: {reason}")
                }
                SourceRefusal::NoneUsable => {
                    format!("no healthy replica found: {}", replica_reasons(health))
                }
            },
        )
    })
}

/// What every new header and every copy needs to know of the source.
struct Facts {
    source: usize,
    /// `heap_offset + heap_size` of the source.
    pool_size: u64,
    /// The source's part-0 header: the attributes of new headers.
    master: PoolHdr,
    /// Mode of rebuilt parts (the source part 0's).
    mode: u32,
    single_hdr: bool,
    /// The survey's time: names files moved aside.
    now: u64,
}

impl Facts {
    fn of<F: PartFile>(set: &OpenSet<F>, health: &Health, source: usize) -> Result<Facts, Error> {
        let pool_size = health
            .replicas
            .get(source)
            .and_then(|r| r.pool_size)
            .ok_or_else(|| refuse(set, crate::inspect::no_pool_size(health, source)))?;
        let part0 = set.part(source, 0);
        let master = part0
            .and_then(|p| p.header())
            .ok_or_else(|| refuse(set, format!("replica {source} part 0: no pool header")))?
            .clone();
        let mode = part0
            .and_then(|p| p.meta)
            .map_or(DEFAULT_PART_MODE, |m| m.mode & 0o7777);
        Ok(Facts {
            source,
            pool_size,
            master,
            mode,
            single_hdr: set.set.options.single_hdr,
            now: 0,
        })
    }
}

/// What the name of a file moved aside from a part's place adds to the
/// part's: `<name>.poolsync-displaced-<time>`, the time as undo files'
/// names have it (Unix seconds of the storage clock).
pub const DISPLACED_INFIX: &str = ".poolsync-displaced-";

/// The name a file moved aside from `path` at `now` gets (a sync that
/// finds it taken adds `-2`, `-3`, …: see [`crate::sync::prepare`]).
pub fn displaced_name(path: &Path, now: u64) -> PathBuf {
    PathBuf::from(format!("{}{DISPLACED_INFIX}{now}", path.display()))
}

/// Why an existing file in the place of a part that is to be created anew
/// may not be deleted: `None` when it provably belongs to the pool set
/// (its own header carries the pool set's UUID, valid or invalidated by an
/// interrupted sync) or holds no byte at all; otherwise what it carries
/// instead. A part without a header of its own (SINGLEHDR, parts after
/// the first) proves nothing.
fn not_provably_ours<F: PartFile>(
    nhdrs: usize,
    part: &crate::open::OpenPart<F>,
    facts: &Facts,
) -> Option<String> {
    if part.meta.is_some_and(|m| m.len == 0) {
        return None;
    }
    if part.index >= nhdrs {
        return Some(
            "carries no pool header of its own (OPTION SINGLEHDR), so nothing proves it is the pool's"
                .to_string(),
        );
    }
    let rules = crate::ownership::Rules::strict(facts.master.poolset_uuid);
    crate::ownership::prove(crate::ownership::Claim::of_state(&part.header), &rules).err()
}

/// Phase 3: per part, what happens to its data and to its header, with
/// UUIDs assigned once for the whole ring.
fn decide<F: PartFile>(
    set: &OpenSet<F>,
    health: &Health,
    table: &mut Table,
    facts: &Facts,
    uuids: &UuidSource,
) -> Result<(), Error> {
    // Data: broken parts of targets are recreated or repaired (every part
    // of a SINGLEHDR target, whose later parts have no header that could
    // show a half-finished repair).
    for (rep, row) in set.replicas.iter().zip(&mut table.replicas) {
        for (part, cell) in rep.parts.iter().zip(&mut row.parts) {
            let needs = row.target && (facts.single_hdr || cell.broken);
            cell.data = Some(if !needs {
                DataAction::Keep
            } else if part.status != PartStatus::Ok || part.file.is_none() {
                DataAction::Recreate
            } else {
                DataAction::Repair
            });
            // A Device DAX is never recreated (docs/format.md §25.3): its
            // size is the device's, and it cannot be unlinked or allocated.
            if let (Some(DataAction::Recreate), Some(dev)) = (cell.data, part.device) {
                return Err(refuse(
                    set,
                    format!(
                        "{}: a Device DAX cannot be recreated ({}); fix the part's size in the pool set file (the device holds {} bytes, or write AUTO), then run the sync again",
                        crate::sync::part_name(set, rep.index, part.index),
                        part.status,
                        dev.size
                    ),
                ));
            }
        }
        // A header that still looks valid but covers data about to change
        // is invalidated until its replica is finished.
        let any_work = row.parts.iter().any(|c| c.data != Some(DataAction::Keep));
        for (part, cell) in rep.parts.iter().zip(&mut row.parts).take(rep.nhdrs) {
            let p = part.index;
            let valid_now = part.status == PartStatus::Ok
                && part.file.is_some()
                && health
                    .replicas
                    .get(rep.index)
                    .and_then(|rh| rh.parts.get(p))
                    .is_some_and(|ph| ph.fault.is_none())
                && !cell.bad_header
                && part.header().is_some();
            let action = cell.data.unwrap_or(DataAction::Keep);
            cell.invalidate = row.target
                && valid_now
                && action != DataAction::Recreate
                && (action == DataAction::Repair || (facts.single_hdr && p == 0 && any_work));
        }
    }
    // Headers: UUIDs by libpmempool's rules, then each part's header.
    let views: Vec<Vec<PartView<'_>>> = set
        .replicas
        .iter()
        .zip(&table.replicas)
        .map(|(rep, row)| {
            rep.parts
                .iter()
                .zip(&row.parts)
                .take(rep.nhdrs)
                .map(|(part, cell)| PartView {
                    broken: cell.broken,
                    header: part.header(),
                })
                .collect()
        })
        .collect();
    let assigned = assign(&views, facts.single_hdr, Rules::Sync, uuids)
        .map_err(|e| refuse(set, e.to_string()))?;
    let on_disk = |r: usize, p: usize| OnDisk {
        bytes: set.part(r, p).and_then(|x| x.header_bytes()),
        restore: table.cell(r, p).is_some_and(|c| c.invalidate),
        recreated: false,
    };
    let planned = plan_headers(
        &views,
        &assigned,
        &on_disk,
        &facts.master,
        facts.master.poolset_uuid,
        facts.single_hdr,
    )
    .map_err(|e| refuse(set, e))?;
    for (row, headers) in table.replicas.iter_mut().zip(planned) {
        for (cell, header) in row.parts.iter_mut().zip(headers) {
            cell.header = Some(header);
        }
    }
    Ok(())
}

/// Phase 4: the steps, in the order that keeps every crash recoverable
/// (see the module documentation).
fn emit<F: PartFile>(
    set: &OpenSet<F>,
    health: &Health,
    bad: &BadBlockScan,
    table: &Table,
    facts: &Facts,
) -> Result<Vec<Step>, Error> {
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
    if bad.any() {
        emit_bad_blocks(set, health, bad, table, facts, &mut steps)?;
    }
    // Target replicas, nearest to the source first.
    let nrep = set.replicas.len();
    let mut targets: Vec<usize> = (0..nrep)
        .filter(|&r| table.replicas.get(r).is_some_and(|row| row.target))
        .collect();
    targets.sort_by_key(|&r| (ring_distance(facts.source, r, nrep), r));
    for &r in &targets {
        emit_target(set, table, facts, r, &mut steps);
    }
    // Links of replicas that are not repaired but whose headers change.
    for r in (0..nrep).filter(|r| !targets.contains(r)) {
        push_header_steps(&mut steps, set, table, r);
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
    Ok(steps)
}

/// Bad blocks of parts that are not rebuilt anyway, each copied from a
/// replica whose same range is good; the source's come first of all. A
/// range bad everywhere is refused.
fn emit_bad_blocks<F: PartFile>(
    set: &OpenSet<F>,
    health: &Health,
    bad: &BadBlockScan,
    table: &Table,
    facts: &Facts,
    steps: &mut Vec<Step>,
) -> Result<(), Error> {
    let nrep = set.replicas.len();
    let h = header_gap(facts.single_hdr);
    let extents =
        |r: usize| -> &[Extent] { set.replica(r).map_or(&[], |rep| rep.extents.as_slice()) };
    let bad_logical: Vec<Vec<LogicalRange>> = (0..nrep)
        .map(|r| bad_ranges(bad, r, extents(r), h, facts.pool_size))
        .collect();
    let usable = |r: usize| table.usable(health, r);
    let mut order: Vec<usize> = vec![facts.source];
    order.extend((0..nrep).filter(|&r| r != facts.source));
    for r in order {
        for range in bad_logical.get(r).map_or(&[][..], Vec::as_slice) {
            for piece in split_at_boundaries(&[extents(r)], *range) {
                let Some(p) = map_range(extents(r), piece.offset, piece.len)
                    .first()
                    .map(|x| x.part)
                else {
                    continue;
                };
                if table.cell(r, p).and_then(|c| c.data) != Some(DataAction::Keep) {
                    continue;
                }
                for (good, sub) in choose_good(&set.path, r, piece, &bad_logical, &usable)? {
                    push_data_steps(steps, set, DataPurpose::BadBlocks, (good, r), sub);
                }
            }
        }
    }
    Ok(())
}

/// The steps of one target replica: invalidate, create and chmod (entries
/// and modes made durable), copy and compare, then the headers.
fn emit_target<F: PartFile>(
    set: &OpenSet<F>,
    table: &Table,
    facts: &Facts,
    r: usize,
    steps: &mut Vec<Step>,
) {
    let (Some(rep), Some(row)) = (set.replica(r), table.replicas.get(r)) else {
        return;
    };
    let cells = || rep.parts.iter().zip(&row.parts);
    for (part, _) in cells().filter(|(_, c)| c.invalidate) {
        steps.push(Step::InvalidateHeader {
            replica: r,
            part: part.index,
            path: part.path.clone(),
        });
    }
    let mut touched_dirs: Vec<PathBuf> = Vec::new();
    for (part, cell) in cells() {
        let set_mode = Step::SetMode {
            replica: r,
            part: part.index,
            path: part.path.clone(),
            mode: facts.mode,
        };
        match cell.data {
            Some(DataAction::Recreate) => {
                // Through a symbolic link to nothing: the file it names.
                let path = part.link_target.as_ref().unwrap_or(&part.path);
                let exists = part.status != PartStatus::Missing;
                let foreign = if exists {
                    not_provably_ours(rep.nhdrs, part, facts)
                } else {
                    None
                };
                if let Some(reason) = &foreign {
                    steps.push(Step::DisplacePart {
                        replica: r,
                        part: part.index,
                        path: path.clone(),
                        to: displaced_name(path, facts.now),
                        reason: reason.clone(),
                    });
                }
                steps.push(Step::CreatePart {
                    replica: r,
                    part: part.index,
                    path: path.clone(),
                    size: part.configured_size,
                    replace: exists && foreign.is_none(),
                });
                steps.push(set_mode);
                touched_dirs.push(path.clone());
            }
            // A part repaired in place keeps its mode, unless it has
            // none: mode 0 is what a creation that never finished
            // (PMDK's or an interrupted sync's) leaves behind.
            Some(DataAction::Repair)
                if facts.mode != 0 && part.meta.is_some_and(|m| m.mode & 0o7777 == 0) =>
            {
                steps.push(set_mode);
                touched_dirs.push(part.path.clone());
            }
            _ => {}
        }
    }
    push_dir_syncs(steps, touched_dirs.iter());
    for (part, cell) in cells() {
        let purpose = match cell.data {
            Some(DataAction::Recreate) => DataPurpose::Rebuild,
            Some(DataAction::Repair) => DataPurpose::Repair,
            _ => continue,
        };
        let Some(extent) = rep.extents.get(part.index) else {
            continue;
        };
        let start = extent.logical.max(PAGE);
        let end = extent
            .logical
            .saturating_add(extent.len)
            .min(facts.pool_size);
        if start < end {
            push_data_steps(
                steps,
                set,
                purpose,
                (facts.source, r),
                LogicalRange::from_bounds(start, end),
            );
        }
    }
    push_header_steps(steps, set, table, r);
}

/// Phase 5: the plan as the dry run prints it: roles, faults, per-part
/// decisions, exact counts.
fn summarise<F: PartFile>(
    set: &OpenSet<F>,
    health: &Health,
    bad: &BadBlockScan,
    table: &Table,
    facts: &Facts,
    steps: Vec<Step>,
) -> Plan {
    let nrep = set.replicas.len();
    let alternates: Vec<usize> = (0..nrep)
        .filter(|&r| r != facts.source && table.usable(health, r))
        .collect();
    let replicas = set
        .replicas
        .iter()
        .zip(&table.replicas)
        .map(|(rep, row)| {
            let r = rep.index;
            let rh = health.replicas.get(r);
            ReplicaPlan {
                replica: r,
                role: if r == facts.source {
                    Role::Source
                } else if row.target {
                    Role::Target
                } else {
                    Role::Healthy
                },
                fault: rh.and_then(|x| x.message.clone()).or_else(|| {
                    row.interrupted.then(|| {
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
                    .zip(&row.parts)
                    .map(|(part, cell)| {
                        let own = rh
                            .and_then(|x| x.parts.get(part.index))
                            .and_then(|ph| ph.fault.as_ref().map(ToString::to_string));
                        PartPlan {
                            part: part.index,
                            path: part.path.clone(),
                            fault: own.or_else(|| {
                                cell.bad_header
                                    .then(|| "a bad block covers the pool header".to_string())
                            }),
                            data: cell.data.unwrap_or(DataAction::Keep),
                            header: cell.header.as_ref().map_or(HeaderAction::None, |h| h.action),
                            uuid: cell.header.as_ref().map(|h| h.assigned.uuid.to_canonical()),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    Plan {
        path: set.path.clone(),
        source: facts.source,
        pool_size: facts.pool_size,
        poolset_uuid: facts.master.poolset_uuid.to_canonical(),
        mode: facts.mode,
        bad_blocks: bad.origin,
        alternates,
        replicas,
        totals: totals(&steps),
        steps,
        undo: None,
    }
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
        Inconsistency::FeaturesDiffer {
            first_replica,
            first_part,
            replica: r,
            part: p,
            feature,
        } => {
            let parts = format!("{} and {}", part(*r, *p), part(*first_replica, *first_part));
            match feature {
                Some(f) => format!(
                    "{parts}; {}, then run the sync again",
                    crate::feature::finish_hint(&set.path, *f)
                ),
                None => parts,
            }
        }
        Inconsistency::FeatureChangeTorn {
            replica: r,
            part: p,
            feature,
        } => format!(
            "{}; {}, then run the sync again",
            part(*r, *p),
            crate::feature::finish_hint(&set.path, *feature)
        ),
        Inconsistency::ReplicasTooSmall { replica: r, .. }
        | Inconsistency::PoolSizesDiffer { replica: r, .. } => replica(*r),
    };
    match health.new_replicas() {
        fresh if !fresh.is_empty() => {
            format!("{inc}: {detail}; {}", new_replica_hint(&set.path, &fresh))
        }
        _ => format!("{inc}: {detail}"),
    }
}

/// What to do about replicas that are new to the pool: sync rebuilds only
/// replicas the pool's headers already name (docs/format.md §17), and
/// transform adds replicas (§19).
pub fn new_replica_hint(set: &std::path::Path, fresh: &[usize]) -> String {
    let list = fresh
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "replica(s) {list} look new: none of their parts exists and the pool's headers name \
         a ring without them, as when REPLICA lines are added to a pool set file by hand; \
         sync rebuilds only the replicas a pool already has. To add replicas, put the pool \
         set file back as it was (say as OLD.set) and run `poolsync transform OLD.set {}`",
        set.display()
    )
}

/// Why each replica is not healthy: `replica R: reason; ...`.
pub(crate) fn replica_reasons(health: &Health) -> String {
    health
        .replicas
        .iter()
        .map(|r| {
            r.reason()
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

/// Pushes copy or compare steps for `range`, copied from replica `from`
/// into replica `to` (`(from, to)`) of `set`, split at both replicas' part
/// boundaries.
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
    steps.extend(data_steps(
        purpose,
        (from, src as &dyn Endpoint),
        (to, dst as &dyn Endpoint),
        range,
    ));
}

/// Pushes the header writes of replica `r` (new, restored, relinked).
fn push_header_steps<F: PartFile>(
    steps: &mut Vec<Step>,
    set: &OpenSet<F>,
    table: &Table,
    r: usize,
) {
    let (Some(rep), Some(row)) = (set.replica(r), table.replicas.get(r)) else {
        return;
    };
    for (part, cell) in rep.parts.iter().zip(&row.parts) {
        let Some(h) = &cell.header else { continue };
        if h.action == HeaderAction::Keep {
            continue;
        }
        steps.push(Step::WriteHeader(HeaderStep {
            replica: r,
            part: part.index,
            path: part.path.clone(),
            kind: h.action,
            uuid: h.assigned.uuid.to_canonical(),
            uuid_origin: h.assigned.origin,
            header: h.header.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::badblocks::BadBlock;

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
