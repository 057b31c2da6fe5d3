//! Transforms that rewrite replicas onto their own files: adding or
//! removing `SINGLEHDR` (every part after the first changes layout) and
//! reshaping a replica whose new parts reuse its old files (split, merge,
//! resize). pmempool moves the data in place, and a crash in the middle
//! leaves a replica that neither pool set file describes; poolsync instead
//! rebuilds each rewritten replica from a copy that stays intact until the
//! end.
//!
//! # Where the data comes from
//!
//! When a source replica stays exactly as it is (same parts, same layout),
//! the rewritten replicas are rebuilt from it. When every replica moves
//! onto new files only, the source is not written until its files are
//! deleted at the end, and it is read directly. Otherwise the data is first
//! *staged* into a temporary copy: one file beside the source master's part
//! 0 holding the pool's whole address space `[0, pool_size)`, whose header
//! is written last (so a complete copy is recognisable) and makes it a
//! valid single-file pool that libpmemobj can open on its own.
//!
//! # Interrupted runs
//!
//! The journal ([`super::journal`]) tells a re-run what happened:
//!
//! * the source is fully healthy: nothing of it was rewritten yet, so a
//!   journal or temporary copy is stale and discarded, and the transform
//!   starts afresh ([`plan_fresh`]);
//! * the target is fully healthy: only the clean-up (deleting the
//!   temporary copy, unused old parts and the journal) is left
//!   ([`plan_cleanup`]);
//! * otherwise the rewritten replicas are rebuilt again, from the replica
//!   that stays or from the (complete) temporary copy ([`plan_resume`]).
//!
//! # Order, for crash safety
//!
//! 1. Journal written and made durable: it names the temporary copy and
//!    every part created at a path the source does not use.
//! 2. Temporary copy (when needed): created, filled, fenced; then its
//!    header, fenced. Until here the source is untouched.
//! 3. Source headers that would otherwise pass for a healthy replica's are
//!    invalidated; every part of each rewritten replica is recreated
//!    (unlinked and created anew, fully allocated; parts with a header of
//!    their own first), the directories synced, the data copied and
//!    fenced, the modes set, and the headers written; then the replicas
//!    that stay are relinked.
//! 4. The temporary copy, the old parts no replica uses any more and the
//!    journal are deleted, directories synced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use poolsync_header::{PoolHdr, RawUuid};
use poolsync_pmem::{PartFile, Storage};
use poolsync_poolset::PAGE;

use super::journal::{
    journal_path, judge_leftover, owner_in, prove_temp_ours, read_temp_header, set_crc,
    stale_files, temp_header, temp_path, unhex, Found, Journal, Start,
};
use super::request::{broken, header_paths, part_paths, part_paths_by_replica, refuse, Request};
use super::simple::access;
use super::source::SourceInfo;
use super::target::{
    check_space, device_refusal, device_state, journal_file, new_files, part_exists,
    prove_left_by_us, ring_header_steps,
};
use super::types::{
    assemble, DataFrom, JournalPlan, NewPart, Operation, Parts, Staging, TempCopy,
    TransformOptions, TransformPlan,
};
use crate::endpoint::Endpoint;
use crate::exec::{data_steps, DataPurpose, Step};
use crate::inspect::inspect;
use crate::open::{open, OpenReplica, OpenSet};
use crate::range::LogicalRange;
use crate::space::NewFile;
use crate::sync::plan::push_dir_syncs;
use crate::Error;

/// A plan and the target set it was made on.
type Planned<F> = (TransformPlan, OpenSet<F>);

/// The facts a staged plan is built from: from the healthy source on a
/// first run, from the journal on a resumed one.
struct Facts {
    master: PoolHdr,
    poolset_uuid: RawUuid,
    pool_size: u64,
    mode: u32,
    /// The header each rewritten target replica's part 0 keeps (SINGLEHDR
    /// changes keep part 0's UUID, as pmempool does), rewritten with new
    /// links and feature bits rather than created anew; empty for fresh
    /// UUIDs everywhere.
    kept_headers: BTreeMap<usize, PoolHdr>,
}

/// Which target replicas are rewritten and where their data comes from.
struct Shape {
    rewritten: Vec<usize>,
    stable: Option<usize>,
}

impl Shape {
    fn of(req: &Request<'_>) -> Shape {
        if req.hdr_change {
            return Shape {
                rewritten: (0..req.d.replicas.len()).collect(),
                stable: None,
            };
        }
        Shape {
            rewritten: req.added.clone(),
            stable: req.d2s.iter().position(Option::is_some),
        }
    }
}

/// Plans a staged transform: afresh when the source is healthy (a stale
/// journal is discarded), or as the continuation of an interrupted run
/// when the journal says one was under way.
pub(super) fn plan<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    journal: Option<Found>,
    options: &TransformOptions,
) -> Result<Planned<S::File>, Error> {
    let (src, dst) = (req.src, req.dst);
    let info = SourceInfo::survey(storage, src)?;
    let shape = Shape::of(req);
    match (&info.healthy, &journal) {
        (Ok(()), _) => plan_fresh(storage, req, journal.as_ref(), &info, &shape, options),
        (Err(why), None) => {
            plan_done(storage, req, &info, options)?.ok_or_else(|| broken(src, dst, why))
        }
        (Err(why), Some(found)) => {
            if !found.is_for(src, dst) {
                return Err(refuse(
                    src,
                    dst,
                    format!(
                        "an interrupted transform left {}; finish it first with `{}`",
                        found.path.display(),
                        found.command()
                    ),
                ));
            }
            plan_resume(storage, req, found, &info, &shape, why, options)
        }
    }
}

/// A re-run after a completed staged transform: the source no longer
/// opens (its parts now have the target's layout, or are all gone), the
/// target is fully healthy and carries the pool set UUID the source's
/// headers carry (if any is left), and there is no journal. Nothing is
/// left to do.
fn plan_done<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    info: &SourceInfo,
    options: &TransformOptions,
) -> Result<Option<Planned<S::File>>, Error> {
    let target = open(storage, req.dst, access(options))?;
    let Some(master) = target.part(0, 0).and_then(|p| p.header()).cloned() else {
        return Ok(None);
    };
    let ours = info
        .headers
        .iter()
        .flatten()
        .flatten()
        .any(|h| h.checksum_ok() && h.poolset_uuid == master.poolset_uuid);
    // Every source file still there is a part of the target (replicas
    // replaced by new files leave none; a reshape leaves the files it
    // reused): none is left to carry the UUID, and no journal says a
    // transform is under way.
    let target_paths: BTreeSet<PathBuf> = part_paths(&req.d).into_iter().collect();
    let gone = info
        .exists
        .iter()
        .zip(part_paths_by_replica(&req.s))
        .all(|(exists, paths)| {
            exists
                .iter()
                .zip(paths)
                .all(|(&e, p)| !e || target_paths.contains(&p))
        });
    let health = inspect(&target);
    if !((ours || gone) && health.is_healthy()) {
        return Ok(None);
    }
    let plan = assemble(
        req.src,
        req.dst,
        Parts::deletions(
            health.pool_size.unwrap_or(0),
            master.poolset_uuid,
            info.mode,
            Vec::new(),
        ),
    );
    Ok(Some((plan, target)))
}

fn plan_fresh<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    journal: Option<&Found>,
    info: &SourceInfo,
    shape: &Shape,
    options: &TransformOptions,
) -> Result<Planned<S::File>, Error> {
    let (master, pool_size) = info.facts(req)?;
    let poolset_uuid = master.poolset_uuid;
    let mut kept_headers = BTreeMap::new();
    if req.hdr_change {
        for (t, s) in req.d2s.iter().enumerate() {
            if let Some(h) = s.and_then(|s| info.header(s, 0)) {
                kept_headers.insert(t, h.clone());
            }
        }
    }
    let facts = Facts {
        master,
        poolset_uuid,
        pool_size,
        mode: info.mode,
        kept_headers,
    };
    let discard = match journal {
        Some(found) => stale_files(storage, req, found, poolset_uuid, &info.part_uuids())?,
        None => Vec::new(),
    };
    // A first run proves the parts without a header of their own that it
    // rewrites or deletes; a resumed one relies on that (their bytes have
    // moved since).
    let mut info = info.clone();
    info.prove_headerless(storage, req, options)?;
    build(
        storage, req, journal, &info, shape, &facts, false, discard, options,
    )
}

fn plan_resume<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    found: &Found,
    info: &SourceInfo,
    shape: &Shape,
    why: &str,
    options: &TransformOptions,
) -> Result<Planned<S::File>, Error> {
    let (src, dst) = (req.src, req.dst);
    let jerr = |reason: String| Error::Journal {
        path: found.path.clone(),
        line: 0,
        reason,
    };
    let j = found
        .journal
        .as_ref()
        .ok_or_else(|| jerr("it does not parse".to_string()))?;
    if j.source_crc != set_crc(&req.s) || j.target_crc != set_crc(&req.d) {
        return Err(found.changed_since(req));
    }
    let master = j
        .master()
        .ok_or_else(|| jerr("master_header is not a valid pool header".to_string()))?;
    let poolset_uuid = master.poolset_uuid;
    if poolset_uuid.to_canonical() != j.poolset_uuid {
        return Err(jerr(
            "poolset_uuid differs from the master header's".to_string(),
        ));
    }
    // The target may already be complete: only the clean-up is left.
    let target = open(storage, dst, poolsync_pmem::Access::ReadOnly)?;
    let health = inspect(&target);
    let target_master = target.part(0, 0).and_then(|p| p.header());
    if health.is_healthy() && target_master.is_some_and(|h| h.poolset_uuid == poolset_uuid) {
        drop(target);
        return plan_cleanup(storage, req, found, info, poolset_uuid, j, options);
    }
    drop(target);
    // Otherwise the data source must be intact.
    if let Some(temp) = found.temporary() {
        let complete = read_temp_header(storage, &temp)
            .is_ok_and(|state| state.is_complete_copy_of(poolset_uuid));
        if !complete {
            return Err(refuse(
                src,
                dst,
                format!(
                    "source poolset is broken ({why}) and the temporary copy {} of the interrupted transform is not complete, so the transform cannot be resumed; repair the source with `poolsync sync {}` and run the transform again",
                    temp.display(),
                    src.display()
                ),
            ));
        }
    }
    // The part 0 headers kept by the first run are kept again.
    let mut kept_headers = BTreeMap::new();
    for (r, text) in &j.kept_headers {
        let (r, hdr) = r
            .parse::<usize>()
            .ok()
            .zip(unhex(text).and_then(|b| PoolHdr::decode(&b).ok()))
            .filter(|(_, h)| h.checksum_ok() && h.poolset_uuid == poolset_uuid)
            .ok_or_else(|| jerr(format!("kept_headers.{r} is not a valid pool header")))?;
        kept_headers.insert(r, hdr);
    }
    let facts = Facts {
        master,
        poolset_uuid,
        pool_size: j.pool_size,
        mode: j.mode,
        kept_headers,
    };
    build(
        storage,
        req,
        Some(found),
        info,
        shape,
        &facts,
        true,
        Vec::new(),
        options,
    )
}

/// Only deletions are left: the temporary copy, old parts no replica uses
/// and the journal.
fn plan_cleanup<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    found: &Found,
    info: &SourceInfo,
    poolset_uuid: RawUuid,
    j: &Journal,
    options: &TransformOptions,
) -> Result<Planned<S::File>, Error> {
    let (src, dst) = (req.src, req.dst);
    let remove = info.removed_parts(req, &reused(req), poolset_uuid)?;
    let target = open(storage, dst, access(options))?;
    let master = target
        .part(0, 0)
        .and_then(|p| p.header())
        .cloned()
        .ok_or_else(|| refuse(src, dst, "the target's master has no pool header"))?;
    let mut plan = assemble(
        src,
        dst,
        Parts::deletions(j.pool_size, poolset_uuid, j.mode, remove),
    );
    let temp = found
        .temporary()
        .filter(|t| storage.stat(t).ok().flatten().is_some());
    plan.staging = Some(Staging {
        journal: found.path.clone(),
        temporary: temp.map(|path| TempCopy {
            path,
            size: 0,
            complete: true,
        }),
        data_from: DataFrom::Temporary,
        rewritten: Vec::new(),
        resumed: true,
        kept_headers: BTreeMap::new(),
        invalidate: Vec::new(),
    });
    plan.journal = Some(JournalPlan {
        path: found.path.clone(),
        write: false,
        new_parts: Vec::new(),
        master_header: master.encode_raw().to_vec(),
    });
    Ok((plan, target))
}

/// The source part paths the target reuses: never deleted, and left out
/// of the ownership proof (once recreated they no longer carry the pool
/// set UUID).
fn reused(req: &Request<'_>) -> BTreeSet<PathBuf> {
    part_paths(&req.d).into_iter().collect()
}

/// The plan of the rewrite, shared by a first run and a resumed one.
#[allow(clippy::too_many_arguments)]
fn build<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    journal: Option<&Found>,
    info: &SourceInfo,
    shape: &Shape,
    facts: &Facts,
    resumed: bool,
    discard: Vec<PathBuf>,
    options: &TransformOptions,
) -> Result<Planned<S::File>, Error> {
    let (src, dst) = (req.src, req.dst);
    let remove = info.removed_parts(req, &reused(req), facts.poolset_uuid)?;
    // Planned read-only: the parts are shared with the source, which the
    // execution opens (and locks) on its own first.
    let target = open(storage, dst, poolsync_pmem::Access::ReadOnly)?;
    let leftovers = Leftovers {
        journal: journal.filter(|_| resumed),
        discard: &discard,
        poolset_uuid: facts.poolset_uuid,
    };
    let create = recreated_parts(req, info, shape, &target, &leftovers)?;
    if let Some(stable) = shape.stable {
        let intact = target
            .replica(stable)
            .is_some_and(|r| r.parts.iter().all(|p| p.is_ok()));
        if !intact {
            return Err(broken(
                src,
                dst,
                &format!("target replica {stable}, which the data is read from, is not intact"),
            ));
        }
    }
    let (temp, data_from) = data_source(
        storage, req, journal, shape, facts, &create, resumed, &discard,
    )?;
    let n = target.replicas.len();
    let headers = ring_header_steps(
        &target,
        &shape.rewritten,
        &facts.kept_headers,
        &facts.master,
        &options.uuids,
    )
    .map_err(|e| refuse(src, dst, e))?;
    // Where the data is read: a target replica that stays, or one more
    // endpoint numbered after the target's replicas.
    let (data_index, extra): (usize, Option<OpenReplica<S::File>>) = match (&temp, data_from) {
        (Some(t), _) => (
            n,
            Some(OpenReplica::single_file(
                n,
                format!("the temporary copy {}", t.path.display()),
                t.path.clone(),
                t.size,
                None,
            )),
        ),
        (None, DataFrom::Replica { replica }) => (replica, None),
        (None, _) => (
            n,
            Some(OpenReplica::unopened(
                &req.s,
                0,
                n,
                format!("replica 0 of {}", src.display()),
            )),
        ),
    };
    let from = match &extra {
        Some(rep) => Some(rep as &dyn Endpoint),
        None => target.replica(data_index).map(|r| r as &dyn Endpoint),
    };
    let steps = rewrite_steps(
        req,
        &target,
        shape,
        facts,
        (data_index, from),
        &create,
        headers,
    );
    drop(extra);

    check_staged_space(storage, req, &create, temp.as_ref(), &discard)?;
    let staged = temp.as_ref().filter(|t| !t.complete);

    let operation = if req.hdr_change {
        if req.d.options.single_hdr {
            Operation::AddSingleHdr
        } else {
            Operation::RemoveSingleHdr
        }
    } else {
        Operation::Reshape {
            added: req.added.clone(),
            removed: req.removed.clone(),
        }
    };
    let mut plan = assemble(
        src,
        dst,
        Parts {
            operation,
            pool_size: facts.pool_size,
            poolset_uuid: facts.poolset_uuid,
            mode: facts.mode,
            data_from: data_index,
            create: Vec::new(),
            steps,
            remove,
        },
    );
    plan.totals.parts_to_create = create.len() as u64;
    plan.totals.bytes_to_allocate =
        create.iter().map(|c| c.size).sum::<u64>() + staged.map_or(0, |t| t.size);
    plan.totals.bytes_to_stage = staged.map_or(0, |_| facts.pool_size.saturating_sub(PAGE));
    plan.totals.parts_to_remove = plan.remove.len() as u64;
    plan.discard = discard;
    plan.staging = Some(Staging {
        journal: journal_path(src),
        temporary: temp,
        data_from,
        rewritten: shape.rewritten.clone(),
        resumed,
        kept_headers: facts
            .kept_headers
            .iter()
            .map(|(&r, h)| (r, h.encode_raw().to_vec()))
            .collect(),
        invalidate: to_invalidate(req, info, &create),
    });
    let source_paths: BTreeSet<PathBuf> = part_paths(&req.s).into_iter().collect();
    plan.journal = Some(JournalPlan {
        path: journal_path(src),
        write: !resumed,
        new_parts: create
            .iter()
            .filter(|c| !source_paths.contains(&c.path))
            .map(|c| c.path.clone())
            .collect(),
        master_header: facts.master.encode_raw().to_vec(),
    });
    Ok((plan, target))
}

/// Free space for the recreated parts (less what the files they replace
/// hold), the temporary copy and the journal.
fn check_staged_space<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    create: &[NewPart],
    temp: Option<&TempCopy>,
    discard: &[PathBuf],
) -> Result<(), Error> {
    let mut files = new_files(create);
    let staged = temp.filter(|t| !t.complete);
    let temp_replace = match staged {
        Some(t) => discard.contains(&t.path) || storage.stat(&t.path)?.is_some(),
        None => false,
    };
    if let Some(t) = staged {
        files.push(NewFile {
            path: &t.path,
            size: t.size,
            replace: temp_replace,
            what: "the temporary copy",
        });
    }
    let journal = journal_path(req.src);
    files.push(journal_file(storage, &journal)?);
    check_space(storage, req, &files)
}

/// The steps of the rewrite: recreate the parts, copy the data into the
/// rewritten replicas from endpoint `from`, give the parts their mode,
/// make the entries durable, write the headers.
fn rewrite_steps<F: PartFile>(
    req: &Request<'_>,
    target: &OpenSet<F>,
    shape: &Shape,
    facts: &Facts,
    (data_index, from): (usize, Option<&dyn Endpoint>),
    create: &[NewPart],
    headers: Vec<crate::exec::HeaderStep>,
) -> Vec<Step> {
    let mut steps = creation_steps(req, create);
    if let (Some(from), true) = (from, facts.pool_size > PAGE) {
        for &r in &shape.rewritten {
            let Some(to) = target.replica(r) else {
                continue;
            };
            steps.extend(data_steps(
                DataPurpose::Rebuild,
                (data_index, from),
                (r, to),
                LogicalRange::from_bounds(PAGE, facts.pool_size),
            ));
        }
    }
    for c in create {
        steps.push(Step::SetMode {
            replica: c.replica,
            part: c.part,
            path: c.path.clone(),
            mode: facts.mode,
        });
    }
    push_dir_syncs(&mut steps, create.iter().map(|c| &c.path));
    steps.extend(headers.into_iter().map(Step::WriteHeader));
    steps
}

/// What tells a file an interrupted run left at a recreated part's path
/// from one in the way.
struct Leftovers<'a> {
    /// The journal of the interrupted run this one resumes.
    journal: Option<&'a Found>,
    /// Stale leftovers this run deletes first (already proven).
    discard: &'a [PathBuf],
    poolset_uuid: RawUuid,
}

/// Every part of every rewritten replica, recreated. A file at such a
/// path that is not a source part must be one a run of this transform
/// left: discarded as stale, named by the journal of the run this one
/// resumes (and provably its, see [`judge_leftover`]), or carrying its
/// header (see [`prove_left_by_us`]).
fn recreated_parts<F: PartFile>(
    req: &Request<'_>,
    info: &SourceInfo,
    shape: &Shape,
    target: &OpenSet<F>,
    leftovers: &Leftovers<'_>,
) -> Result<Vec<NewPart>, Error> {
    let source_paths: BTreeSet<PathBuf> = part_paths(&req.s).into_iter().collect();
    let source_uuids = info.part_uuids();
    let poolset_uuid = leftovers.poolset_uuid;
    let mut create = Vec::new();
    for rep in target
        .replicas
        .iter()
        .filter(|r| shape.rewritten.contains(&r.index))
    {
        for part in &rep.parts {
            let (device, blank) = device_state(part);
            let exists = part.meta.is_some() && !blank;
            let named = leftovers
                .journal
                .is_some_and(|found| found.names(req, &part.path));
            if source_paths.contains(&part.path) {
                // A part of the source: proven by its header, or (without
                // one of its own) by its bytes.
                info.check_headerless(req, &part.path, "overwrite")?;
            } else if !exists || leftovers.discard.contains(&part.path) {
                // Nothing there, or proven already.
            } else if named {
                let start = Start::of_part(part)?.unwrap_or(Start::Blank);
                let owner = match owner_in(&req.d, &part.path) {
                    Some(path) => {
                        let owner = rep.parts.first().map(Start::of_part).transpose()?.flatten();
                        Some((path, owner))
                    }
                    None => None,
                };
                let owner = owner.as_ref().map(|(p, s)| (p.as_path(), s.as_ref()));
                judge_leftover(&start, owner, poolset_uuid, Some(&source_uuids))
                    .map_err(|what| part_exists(req.dst, part, poolset_uuid, what))
                    .map_err(|e| if device { device_refusal(e) } else { e })?;
            } else {
                prove_left_by_us(req.dst, part, poolset_uuid, &source_uuids).map_err(|e| {
                    if device {
                        device_refusal(e)
                    } else {
                        e
                    }
                })?;
            }
            create.push(NewPart {
                replica: rep.index,
                part: part.index,
                path: part.path.clone(),
                size: part.configured_size,
                // A device is overwritten in place, never replaced.
                replace: exists && !device,
                device,
                header: None,
            });
        }
    }
    Ok(create)
}

/// Where the rewritten replicas' data is read, and the temporary copy
/// when one is needed.
#[allow(clippy::too_many_arguments)]
fn data_source<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    journal: Option<&Found>,
    shape: &Shape,
    facts: &Facts,
    create: &[NewPart],
    resumed: bool,
    discard: &[PathBuf],
) -> Result<(Option<TempCopy>, DataFrom), Error> {
    let (src, dst) = (req.src, req.dst);
    if let Some(replica) = shape.stable {
        return Ok((None, DataFrom::Replica { replica }));
    }
    // Every replica moves onto new files: the source stays intact until
    // the clean-up and is read directly.
    let source_paths: BTreeSet<PathBuf> = part_paths(&req.s).into_iter().collect();
    let direct = !req.hdr_change && create.iter().all(|c| !source_paths.contains(&c.path));
    if direct {
        if resumed {
            return Err(broken(
                src,
                dst,
                "the interrupted transform reads its data from the source, which is no longer healthy",
            ));
        }
        return Ok((None, DataFrom::Source));
    }
    let master_part0 = part_paths_by_replica(&req.s)
        .into_iter()
        .next()
        .and_then(|parts| parts.into_iter().next())
        .ok_or_else(|| refuse(src, dst, "the source has no master part"))?;
    if storage.device_dax(&master_part0)?.is_some() {
        // The copy would be a pool-sized file in the device's directory.
        return Err(refuse(
            src,
            dst,
            format!(
                "this transform needs a temporary copy of the pool beside replica 0's part 0, which is a Device DAX ({}); add a replica on files first and make it the master, or transform in two steps that each keep a replica as it is",
                master_part0.display()
            ),
        ));
    }
    let path = journal
        .and_then(Found::temporary)
        .filter(|_| resumed)
        .unwrap_or_else(|| temp_path(&master_part0));
    if source_paths.contains(&path) || part_paths(&req.d).contains(&path) {
        return Err(refuse(
            src,
            dst,
            format!(
                "{} is a part of a pool set; it cannot hold the temporary copy",
                path.display()
            ),
        ));
    }
    let exists = storage.stat(&path)?.is_some();
    if exists && !resumed && !discard.contains(&path) {
        let expected = temp_header(&facts.master);
        prove_temp_ours(storage, req, &path, facts.poolset_uuid, Some(&expected))?;
    }
    let size = facts.pool_size.div_ceil(PAGE) * PAGE;
    Ok((
        Some(TempCopy {
            path,
            size,
            complete: resumed,
        }),
        DataFrom::Temporary,
    ))
}

/// The parts are recreated, with a directory sync after each group: the
/// source parts that have a header of their own before the others, so
/// that a recreated part without a header (SINGLEHDR) is never found
/// beside its replica's old part 0, where it would pass for a part of a
/// healthy source (whose journal and temporary copy would be discarded as
/// stale).
fn creation_steps(req: &Request<'_>, create: &[NewPart]) -> Vec<Step> {
    let with_header = header_paths(&req.s);
    let (first, rest): (Vec<&NewPart>, Vec<&NewPart>) =
        create.iter().partition(|c| with_header.contains(&c.path));
    let mut steps = Vec::new();
    for group in [first, rest] {
        for c in &group {
            steps.push(Step::CreatePart {
                replica: c.replica,
                part: c.part,
                path: c.path.clone(),
                size: c.size,
                replace: c.replace,
            });
        }
        push_dir_syncs(&mut steps, group.iter().map(|c| &c.path));
    }
    steps
}

/// Headers of source parts that are not recreated but belong to a source
/// replica that loses files to a rewritten one: invalidated before
/// anything is recreated, so that the old pool set file cannot take that
/// half-rewritten replica for healthy. Those files are deleted at the end.
fn to_invalidate(req: &Request<'_>, info: &SourceInfo, create: &[NewPart]) -> Vec<PathBuf> {
    let recreated: BTreeSet<&PathBuf> = create.iter().map(|c| &c.path).collect();
    let mut invalidate = Vec::new();
    for (r, paths) in part_paths_by_replica(&req.s).iter().enumerate() {
        if !paths.iter().any(|p| recreated.contains(p)) {
            continue;
        }
        for (p, path) in paths.iter().enumerate().take(req.s.nhdrs(r)) {
            let valid = info.header(r, p).is_some_and(PoolHdr::checksum_ok);
            if valid && !recreated.contains(path) {
                invalidate.push(path.clone());
            }
        }
    }
    invalidate
}
