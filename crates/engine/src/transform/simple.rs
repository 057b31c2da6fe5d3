//! Transforms that only create and delete files, as `pmempool transform`
//! does: replicas added onto new files, replicas removed, or (beyond
//! pmempool) both at once while a source replica stays; and finishing such
//! a transform after a crash.
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
//! A crash while headers are being relinked leaves links that neither pool
//! set file's health check accepts. Running the same transform again
//! recognises that state ([`plan_finish`]) and finishes the relinking and
//! the deletions. A re-run after a completed transform finds nothing to do.
//!
//! *The journal*: a transform that creates parts first writes a journal
//! ([`super::journal`]) that names them, so that a re-run recognises the
//! files a crash left in any state of their creation (even empty, of mode
//! 0, before they carry a header) and deletes them before it starts again;
//! the journal is deleted last. A transform that only removes replicas
//! creates nothing and writes none.

use std::collections::BTreeSet;
use std::path::PathBuf;

use poolsync_header::{ring_links, PoolType, RawUuid};
use poolsync_pmem::{Access, PartFile, Storage};
use poolsync_poolset::PAGE;

use super::journal::{journal_path, stale_files, Found};
use super::request::{broken, refuse, Request};
use super::source::SourceInfo;
use super::target::{
    check_space, device_refusal, device_state, journal_file, new_files, prove_left_by_us,
    ring_header_steps,
};
use super::types::{
    assemble, JournalPlan, NewPart, Operation, Parts, TransformOptions, TransformPlan,
};
use crate::endpoint::Endpoint;
use crate::exec::{data_steps, DataPurpose, Step};
use crate::open::{open, HeaderState, OpenSet, PartStatus};
use crate::range::LogicalRange;
use crate::sync::plan::push_dir_syncs;
use crate::Error;

/// Plans a transform that creates and deletes files only.
pub(super) fn plan<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    journal: Option<Found>,
    options: &TransformOptions,
) -> Result<(TransformPlan, OpenSet<S::File>), Error> {
    let (src, dst) = (req.src, req.dst);
    let mut info = SourceInfo::survey(storage, src)?;
    if let Err(why) = &info.healthy {
        let Some(found) = &journal else {
            return plan_finish(storage, req, &info, why, None, options);
        };
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
        if !found.records(req) {
            return Err(found.changed_since(req));
        }
        return plan_finish(storage, req, &info, why, Some(found), options);
    }
    let (master, pool_size) = info.facts(req)?;
    let poolset_uuid = master.poolset_uuid;
    info.prove_headerless(storage, req, options)?;
    let discard = match &journal {
        Some(found) => stale_files(storage, req, found, poolset_uuid, &info.part_uuids())?,
        None => Vec::new(),
    };
    // Every file that will be deleted must carry this pool set's UUID.
    let remove = info.removed_parts(req, &BTreeSet::new(), poolset_uuid)?;
    let target = open(storage, dst, access(options))?;
    kept_parts_readable(req, &target)?;
    let create = new_parts(req, &info, &target, poolset_uuid, &discard)?;
    // The journal, written first, needs room too.
    let journal = journal_path(src);
    let mut files = new_files(&create);
    if !create.is_empty() {
        files.push(journal_file(storage, &journal)?);
    }
    check_space(storage, req, &files)?;

    // Data is read from the first source replica that stays.
    let data_from = req.s2d.iter().find_map(|m| *m).unwrap_or(0);
    let mut steps = Vec::new();
    if !req.added.is_empty() {
        // The parts are created by the run before these steps.
        push_dir_syncs(&mut steps, create.iter().map(|c| &c.path));
        let from = target
            .replica(data_from)
            .map(|r| (data_from, r as &dyn Endpoint));
        for &r in &req.added {
            let (Some(from), Some(to), true) = (from, target.replica(r), pool_size > PAGE) else {
                continue;
            };
            steps.extend(data_steps(
                DataPurpose::Rebuild,
                from,
                (r, to),
                LogicalRange::from_bounds(PAGE, pool_size),
            ));
        }
    }
    let headers = ring_header_steps(
        &target,
        &req.added,
        &Default::default(),
        &master,
        &options.uuids,
    )
    .map_err(|e| refuse(src, dst, e))?;
    let mut create = create;
    for c in &mut create {
        c.header = headers
            .iter()
            .find(|h| h.replica == c.replica && h.part == c.part)
            .map(|h| h.header.clone());
    }
    steps.extend(headers.into_iter().map(Step::WriteHeader));

    let operation = if req.added.is_empty() {
        Operation::RemoveReplicas {
            replicas: req.removed.clone(),
        }
    } else if req.removed.is_empty() {
        Operation::AddReplicas {
            replicas: req.added.clone(),
        }
    } else {
        Operation::Reshape {
            added: req.added.clone(),
            removed: req.removed.clone(),
        }
    };
    // The journal names the new parts before any is created.
    let journal = (!create.is_empty()).then(|| JournalPlan {
        path: journal_path(src),
        write: true,
        new_parts: create.iter().map(|c| c.path.clone()).collect(),
        master_header: master.encode_raw().to_vec(),
    });
    let mut plan = assemble(
        src,
        dst,
        Parts {
            operation,
            pool_size,
            poolset_uuid,
            mode: info.mode,
            data_from,
            create,
            steps,
            remove,
        },
    );
    plan.discard = discard;
    plan.journal = journal;
    Ok((plan, target))
}

/// Every part of a replica the target keeps opened, and its header read:
/// the source survey read them, so one that fails now (`EROFS` or `EACCES`
/// when opened for writing, `EIO`) is refused with what the system said,
/// rather than later as a part without a header.
fn kept_parts_readable<F: PartFile>(req: &Request<'_>, target: &OpenSet<F>) -> Result<(), Error> {
    let kept = target
        .replicas
        .iter()
        .filter(|r| !req.added.contains(&r.index));
    for part in kept.flat_map(|r| &r.parts) {
        let why = match (&part.status, &part.header) {
            (PartStatus::Inaccessible { .. }, _) => format!("the part file {}", part.status),
            (_, HeaderState::Unreadable { reason }) => {
                format!("the pool header cannot be read: {reason}")
            }
            _ => continue,
        };
        return Err(refuse(
            req.src,
            req.dst,
            format!(
                "replica {} part {} ({}): {why}",
                part.replica,
                part.index,
                part.path.display()
            ),
        ));
    }
    Ok(())
}

/// How the target is opened: read-only for a dry run.
pub(super) fn access(options: &TransformOptions) -> Access {
    if options.dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    }
}

/// The parts of the added replicas; a file already there must be one an
/// interrupted run of this transform left: one its journal names, proven
/// and deleted first (in `discard`), or one that carries its marks.
fn new_parts<F: PartFile>(
    req: &Request<'_>,
    info: &SourceInfo,
    target: &OpenSet<F>,
    poolset_uuid: RawUuid,
    discard: &[PathBuf],
) -> Result<Vec<NewPart>, Error> {
    let source_uuids = info.part_uuids();
    let mut create = Vec::new();
    for rep in target
        .replicas
        .iter()
        .filter(|r| req.added.contains(&r.index))
    {
        for part in &rep.parts {
            let (device, blank) = device_state(part);
            let exists = part.meta.is_some() && !blank;
            if exists && !discard.contains(&part.path) {
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

/// The source is not healthy: this may be a transform that was
/// interrupted while relinking or deleting. It is finished when every
/// header of the target set is valid and carries the target master's pool
/// set UUID, each replica's part ring is intact, and the removed replicas'
/// files that remain are provably ours; otherwise the source is broken, as
/// pmempool says, and `sync` is the way out. The journal of the
/// interrupted run, `found`, is deleted at the end.
fn plan_finish<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    info: &SourceInfo,
    why: &str,
    found: Option<&Found>,
    options: &TransformOptions,
) -> Result<(TransformPlan, OpenSet<S::File>), Error> {
    let (src, dst) = (req.src, req.dst);
    // The parts without a header of their own still to delete are proven
    // again: the first run may have stopped before it proved them.
    let mut info = info.clone();
    info.prove_headerless(storage, req, options)?;
    let info = &info;
    let target = open(storage, dst, access(options))?;
    // The target's master header names the pool set (the source's master
    // may be among the files already deleted).
    let Some(master) = target
        .part(0, 0)
        .and_then(|p| p.header())
        .filter(|h| h.pool_type() == Some(PoolType::Obj))
        .cloned()
    else {
        return Err(broken(src, dst, why));
    };
    let poolset_uuid = master.poolset_uuid;
    let uuids = intact_rings(&target, poolset_uuid).ok_or_else(|| broken(src, dst, why))?;
    if !headers_valid_or_torn_relinks(req, info, &target, &uuids)
        .map_err(|e| refuse(src, dst, e))?
    {
        return Err(broken(src, dst, why));
    }
    // The replicas' data must be sound: no ADR failure, a readable
    // descriptor with a valid checksum (a torn header of part 0 leaves the
    // shutdown state unverifiable, which the header check above covers).
    let health = crate::inspect::inspect(&target);
    for rh in &health.replicas {
        if let Some(fault) = &rh.fault {
            if *fault != crate::inspect::ReplicaFault::ShutdownStateUnverifiable {
                return Err(broken(src, dst, why));
            }
        }
    }
    let remove = info.removed_parts(req, &BTreeSet::new(), poolset_uuid)?;
    let headers = ring_header_steps(&target, &[], &Default::default(), &master, &options.uuids)
        .map_err(|e| refuse(src, dst, e))?;
    let mut plan = assemble(
        src,
        dst,
        Parts {
            operation: Operation::Finish,
            pool_size: info.pool_size.or(health.pool_size).unwrap_or(0),
            poolset_uuid,
            mode: info.mode,
            data_from: 0,
            create: Vec::new(),
            steps: headers.into_iter().map(Step::WriteHeader).collect(),
            remove,
        },
    );
    plan.journal = found.map(|f| JournalPlan {
        path: f.path.clone(),
        write: false,
        new_parts: Vec::new(),
        master_header: Vec::new(),
    });
    Ok((plan, target))
}

/// The part UUIDs of every replica of `target` when every part is there,
/// every header carries `poolset_uuid` and every part ring is intact (only
/// replica links may lag).
fn intact_rings<F: PartFile>(
    target: &OpenSet<F>,
    poolset_uuid: RawUuid,
) -> Option<Vec<Vec<RawUuid>>> {
    let mut uuids: Vec<Vec<RawUuid>> = Vec::with_capacity(target.replicas.len());
    for rep in &target.replicas {
        if rep.parts.iter().any(|p| p.status != PartStatus::Ok) {
            return None;
        }
        let hdrs: Vec<_> = rep
            .parts
            .iter()
            .take(rep.nhdrs)
            .map(|p| p.header().filter(|h| h.poolset_uuid == poolset_uuid))
            .collect::<Option<_>>()?;
        let v: Vec<RawUuid> = hdrs.iter().map(|h| h.uuid).collect();
        let n = v.len().max(1);
        for (p, h) in hdrs.iter().enumerate() {
            let prev = v.get((p + n - 1) % n).copied();
            let next = v.get((p + 1) % n).copied();
            if Some(h.prev_part_uuid) != prev || Some(h.next_part_uuid) != next {
                return None;
            }
        }
        uuids.push(v);
    }
    Some(uuids)
}

/// Whether every header of `target` is valid, or is a relink that a crash
/// tore: its checksum is right for its fields with the replica links of
/// the old ring or of the new one (links and checksum lie in different
/// blocks).
fn headers_valid_or_torn_relinks<F: PartFile>(
    req: &Request<'_>,
    info: &SourceInfo,
    target: &OpenSet<F>,
    uuids: &[Vec<RawUuid>],
) -> Result<bool, String> {
    let src_uuids: Vec<Vec<RawUuid>> = (0..req.s.replicas.len())
        .map(|r| {
            (0..req.s.nhdrs(r))
                .map(|p| info.header(r, p).map(|h| h.uuid).unwrap_or_default())
                .collect()
        })
        .collect();
    let old_links = ring_links(&src_uuids).ok();
    let new_links = ring_links(uuids).map_err(|e| e.to_string())?;
    for rep in &target.replicas {
        for part in rep.parts.iter().take(rep.nhdrs) {
            let Some(h) = part.header() else {
                return Ok(false);
            };
            let mut candidates = vec![new_links.get(rep.index).and_then(|v| v.get(part.index))];
            if let Some(sr) = req.d2s.get(rep.index).copied().flatten() {
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
                return Ok(false);
            }
        }
    }
    Ok(true)
}
