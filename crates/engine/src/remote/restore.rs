//! Restoring the local replicas from a healthy remote replica when none of
//! them is healthy, as `pmempool sync` restored from a remote replica.
//!
//! The remote replica is the source endpoint of an ordinary plan of the
//! one executor: every local part that is missing or of the wrong size is
//! created and filled from it (the data crosses the wire, compressed);
//! every part that exists is compared with it by digests (its bytes are
//! read here, the remote host sends only digests, hierarchically) and only
//! the blocks that differ are fetched. The local ring is rebuilt by the
//! sync rules (intact headers keep their UUIDs), with the remote pool's
//! pool set UUID and its master's attributes. The crash rules are the
//! local sync's: valid headers are invalidated before their data changes,
//! headers come last, and the bytes overwritten in parts that exist are
//! saved to an undo file first (unless `--no-undo`).

use std::path::PathBuf;

use poolsync_header::PoolHdr;
use poolsync_pmem::Storage;
use serde::Serialize;

use super::replica::RemoteReplica;
use crate::compare::LogicalRange;
use crate::endpoint::Endpoint;
use crate::exec::{
    data_steps, DataPurpose, Endpoints, ExecReport, HeaderAction, HeaderStep, Prepared, Progress,
    RunOptions, Step, Tuning,
};
use crate::inspect::Health;
use crate::open::{OpenSet, PartStatus};
use crate::ring::{assign, plan_headers, OnDisk, PartView, Rules, UuidSource};
use crate::sync::plan::push_dir_syncs;
use crate::undo::{UndoSummary, UndoTarget};
use crate::Error;

/// The plan of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    /// The remote replica restored from, `host:set`.
    pub remote: String,
    /// `heap_offset + heap_size` of the remote pool.
    pub pool_size: u64,
    /// The pool set UUID every local header will carry.
    pub poolset_uuid: String,
    /// Local parts created anew.
    pub parts_to_create: u64,
    /// Bytes copied whole into new parts (over the wire).
    pub bytes_to_copy: u64,
    /// Bytes compared by digests in parts that exist.
    pub bytes_compared: u64,
    /// Bytes that differ and are fetched.
    pub bytes_differing: u64,
    /// Local headers written.
    pub headers_to_write: u64,
    /// The undo file that saves what is overwritten.
    pub undo: Option<UndoSummary>,
    /// The steps (endpoint numbers: the local replicas, then the remote).
    pub steps: Vec<Step>,
    /// What the comparison found.
    #[serde(skip)]
    pub prepared: Option<Prepared>,
}

/// Options of a restore.
#[derive(Debug, Clone, Copy)]
pub struct RestoreOptions<'a> {
    /// Stride and workers.
    pub tuning: Tuning,
    /// Where fresh UUIDs come from.
    pub uuids: &'a UuidSource,
    /// Save what is overwritten to an undo file first.
    pub undo: bool,
}

/// Plans the restore of every local replica of `set` (judged by `health`)
/// from `remote` (endpoint number `set.replicas.len()`), comparing but
/// writing nothing.
pub fn plan_restore<S: Storage>(
    storage: &S,
    set: &OpenSet<S::File>,
    health: &Health,
    remote: &RemoteReplica,
    options: RestoreOptions<'_>,
    progress: &dyn Progress,
) -> Result<RestorePlan, Error> {
    let view = remote.view();
    let pool_size = view.opened.pool_size;
    let master: PoolHdr = match view.headers.first() {
        Some(crate::open::HeaderState::Read(h)) if view.opened.healthy && pool_size > 0 => {
            h.hdr.clone()
        }
        _ => {
            return Err(remote.at.refuse(
                "it is not healthy on its host, so it cannot restore the local replicas"
                    .to_string(),
            ))
        }
    };
    let mode = view
        .opened
        .parts
        .first()
        .map_or(crate::create::DEFAULT_MODE, |p| p.mode);
    refuse_unopened(set, remote)?;
    let work = part_work(set, health, remote, &master, mode, pool_size);
    let (header_steps, headers_to_write) = header_steps(set, &work, &master, options.uuids)
        .map_err(|reason| remote.at.refuse(reason))?;
    let mut steps: Vec<Step> = work
        .invalidate
        .iter()
        .map(|(r, p, path)| Step::InvalidateHeader {
            replica: *r,
            part: *p,
            path: path.clone(),
        })
        .collect();
    let touched: Vec<PathBuf> = work
        .creates
        .iter()
        .filter_map(|s| match s {
            Step::CreatePart { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    steps.extend(work.creates.iter().cloned());
    push_dir_syncs(&mut steps, touched.iter());
    steps.extend(work.data.iter().cloned());
    steps.extend(header_steps);
    // Compare now, writing nothing: what differs is fetched, and saved.
    let table: Vec<&dyn Endpoint> = set
        .replicas
        .iter()
        .map(|r| r as &dyn Endpoint)
        .chain(std::iter::once(remote as &dyn Endpoint))
        .collect();
    let run = RunOptions {
        alternates: &[],
        tuning: options.tuning,
        progress,
        prepared: None,
    };
    let mut prepared = crate::exec::survey(storage, &set.path, &steps, &table, run)?;
    let undo = if options.undo && !prepared.overwrites.is_empty() {
        let target = UndoTarget {
            set_path: crate::load::absolute(storage, &set.path),
            poolset_uuid: master.poolset_uuid,
        };
        let summary = crate::undo::plan(storage, &target, &table, &prepared.overwrites, &[])?;
        prepared.target = Some(target);
        Some(summary)
    } else {
        None
    };
    let step_len = |s: &Step| match s {
        Step::CopyRange(d) => d.len,
        _ => 0,
    };
    Ok(RestorePlan {
        remote: remote.at.name(),
        pool_size,
        poolset_uuid: master.poolset_uuid.to_canonical(),
        parts_to_create: steps
            .iter()
            .filter(|s| matches!(s, Step::CreatePart { .. }))
            .count() as u64,
        bytes_to_copy: steps.iter().map(step_len).sum(),
        bytes_compared: prepared.bytes_compared,
        bytes_differing: prepared.bytes(),
        headers_to_write,
        undo,
        steps,
        prepared: Some(prepared),
    })
}

/// Refuses a restore while a local part exists but could not be opened for
/// writing (`EACCES`, `EROFS`): it was never read, nothing says it is
/// damaged, and it may hold newer data than the standby, so a restore,
/// which replaces what it recreates, must not touch it. (A local sync
/// moves such a file aside; here the administrator decides.)
fn refuse_unopened<F>(set: &OpenSet<F>, remote: &RemoteReplica) -> Result<(), Error> {
    let unopened = set
        .replicas
        .iter()
        .flat_map(|r| &r.parts)
        .find(|p| matches!(p.status, PartStatus::Inaccessible { .. }));
    match unopened {
        Some(part) => Err(remote.at.refuse(format!(
            "replica {} part {} ({}): the part file {}; a restore replaces only missing \
             and damaged parts, never one it could not read: make it writable (or move \
             it away) and run again",
            part.replica,
            part.index,
            part.path.display(),
            part.status
        ))),
        None => Ok(()),
    }
}

/// What a restore does to each local part, before its headers.
struct PartWork<'a> {
    /// Parts created anew, with their modes.
    creates: Vec<Step>,
    /// Data copied or repaired from the remote.
    data: Vec<Step>,
    /// Healthy headers invalidated while the data changes.
    invalidate: Vec<(usize, usize, PathBuf)>,
    /// Per replica, each header-carrying part: broken, and its header.
    views: Vec<Vec<(bool, Option<&'a PoolHdr>)>>,
}

/// Decides, part by part, what a restore from `remote` creates, copies
/// and invalidates.
fn part_work<'a, F: poolsync_pmem::PartFile>(
    set: &'a OpenSet<F>,
    health: &Health,
    remote: &RemoteReplica,
    master: &PoolHdr,
    mode: u32,
    pool_size: u64,
) -> PartWork<'a> {
    let id = set.replicas.len();
    let mut work = PartWork {
        creates: Vec::new(),
        data: Vec::new(),
        invalidate: Vec::new(),
        views: Vec::new(),
    };
    for rep in &set.replicas {
        let mut row = Vec::new();
        for part in &rep.parts {
            let recreate = part.status != PartStatus::Ok || part.file.is_none();
            if recreate {
                work.creates.push(Step::CreatePart {
                    replica: rep.index,
                    part: part.index,
                    path: part.path.clone(),
                    size: part.configured_size,
                    replace: part.status != PartStatus::Missing,
                });
                work.creates.push(Step::SetMode {
                    replica: rep.index,
                    part: part.index,
                    path: part.path.clone(),
                    mode,
                });
            }
            if part.index < rep.nhdrs {
                let hdr = part.header();
                let broken = recreate
                    || health.part_broken(rep.index, part.index)
                    || hdr.is_none_or(|h| h.poolset_uuid != master.poolset_uuid);
                if !broken && !recreate {
                    work.invalidate
                        .push((rep.index, part.index, part.path.clone()));
                }
                row.push((broken, hdr));
            }
            let Some(extent) = rep.extents.get(part.index) else {
                continue;
            };
            let start = extent.logical.max(poolsync_poolset::PAGE);
            let end = extent.logical.saturating_add(extent.len).min(pool_size);
            if start < end {
                let purpose = if recreate {
                    DataPurpose::Rebuild
                } else {
                    DataPurpose::Repair
                };
                work.data.extend(data_steps(
                    purpose,
                    (id, remote as &dyn Endpoint),
                    (rep.index, rep as &dyn Endpoint),
                    LogicalRange::from_bounds(start, end),
                ));
            }
        }
        work.views.push(row);
    }
    work
}

/// The header writes of a restore (UUIDs assigned as a sync assigns
/// them), and how many.
fn header_steps<F: poolsync_pmem::PartFile>(
    set: &OpenSet<F>,
    work: &PartWork<'_>,
    master: &PoolHdr,
    uuids: &UuidSource,
) -> Result<(Vec<Step>, u64), String> {
    let part_views: Vec<Vec<PartView<'_>>> = work
        .views
        .iter()
        .map(|row| {
            row.iter()
                .map(|(broken, header)| PartView {
                    broken: *broken,
                    header: *header,
                })
                .collect()
        })
        .collect();
    let assigned = assign(&part_views, set.set.options.single_hdr, Rules::Sync, uuids)
        .map_err(|e| e.to_string())?;
    let on_disk = |r: usize, p: usize| OnDisk {
        bytes: set.part(r, p).and_then(|x| x.header_bytes()),
        restore: work
            .invalidate
            .iter()
            .any(|(ir, ip, _)| *ir == r && *ip == p),
        recreated: false,
    };
    let planned = plan_headers(
        &part_views,
        &assigned,
        &on_disk,
        master,
        master.poolset_uuid,
        set.set.options.single_hdr,
    )?;
    let mut steps = Vec::new();
    for (rep, row) in set.replicas.iter().zip(&planned) {
        for (p, h) in row.iter().enumerate() {
            if h.action == HeaderAction::Keep {
                continue;
            }
            steps.push(Step::WriteHeader(HeaderStep {
                replica: rep.index,
                part: p,
                path: rep.parts.get(p).map(|x| x.path.clone()).unwrap_or_default(),
                kind: h.action,
                uuid: h.assigned.uuid.to_canonical(),
                uuid_origin: h.assigned.origin,
                header: h.header.clone(),
            }));
        }
    }
    let n = steps.len() as u64;
    Ok((steps, n))
}

/// Carries out a restore plan on `set` from `remote`.
pub fn run_restore<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    plan: &RestorePlan,
    remote: &RemoteReplica,
    tuning: Tuning,
    progress: &dyn Progress,
) -> Result<ExecReport, Error> {
    let path = set.path.clone();
    let alternates: Vec<usize> = Vec::new();
    let run = RunOptions {
        alternates: &alternates,
        tuning,
        progress,
        prepared: plan.prepared.as_ref(),
    };
    let mut endpoints = Endpoints {
        set,
        extra: vec![remote as &dyn Endpoint],
    };
    let undo = match plan.prepared.as_ref().filter(|p| p.target.is_some()) {
        Some(p) => Some(crate::exec::save_undo(storage, &path, &endpoints, p, run)?),
        None => None,
    };
    let mut report = crate::exec::run(storage, &path, &plan.steps, &mut endpoints, run)?;
    report.undo = undo;
    Ok(report)
}
