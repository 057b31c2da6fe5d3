//! Bringing one remote replica up to date from a local source replica,
//! through the one executor.
//!
//! [`plan_update`] decides everything before the first write, and a dry
//! run stops there:
//!
//! 1. Each remote part is classified from what the server reported:
//!    missing or of the wrong size (created anew), inaccessible (refused),
//!    or present, with a header that is intact (valid, or invalidated by an
//!    update that did not finish: its bytes are ours but for the checksum)
//!    or broken (it gets a new one).
//! 2. The remote ring gets its UUIDs by the same rules as a local sync
//!    ([`crate::ring`]), with the local pool's pool set UUID and the local
//!    master's attributes; intact parts keep theirs.
//! 3. The replicated range (`docs/format.md` §15.2) of every present part
//!    is compared with the source by digests, hierarchically (a digest
//!    per 64 KiB, then per 4 KiB block inside the pieces that differ:
//!    `compare::COARSE`), as the executor's survey does. No data crosses
//!    the wire for this, only digests.
//! 4. When nothing differs and every header is intact and valid, the
//!    remote replica is current and nothing is written. Otherwise the
//!    steps are, in the crash-safe order: invalidate every valid header
//!    (durably, on the remote host), create and chmod the missing parts,
//!    copy the differing runs (and whole new parts), fence, then write
//!    every header. An update interrupted anywhere (the connection
//!    dropped, either end killed) leaves the remote headers invalid, so
//!    libpmemobj refuses to open the standby until a later run completes
//!    it, and that run finds less to copy.
//!
//! The bytes a remote update overwrites are not saved to an undo file:
//! the remote replica is a copy of this pool, and what an update
//! overwrites there is an older version of the pool's own bytes or a
//! change made on the standby, which the update discards by definition
//! (ARCHITECTURE.md, "Remote replicas").

use std::path::{Path, PathBuf};

use poolsync_header::{PoolHdr, FEAT_SINGLEHDR};
use poolsync_pmem::{PartFile, Storage};
use poolsync_wire::PartStatus as WireStatus;
use serde::Serialize;

use super::replica::{RemoteReplica, RemoteView};
use crate::compare::LogicalRange;
use crate::endpoint::Endpoint;
use crate::exec::{
    data_steps, DataPurpose, Endpoints, ExecReport, HeaderAction, HeaderStep, Prepared, Progress,
    RunOptions, Step, Tuning,
};
use crate::open::{HeaderState, OpenSet};
use crate::ring::{assign, plan_headers, OnDisk, PartView, Rules, UuidSource};
use crate::sync::plan::is_invalidated;
use crate::Error;

/// What every remote update needs to know of the local pool.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    /// The local source replica (its endpoint number).
    pub source: usize,
    /// `heap_offset + heap_size` of the source: the end of the replicated
    /// range.
    pub pool_size: u64,
    /// The source's part-0 header: the attributes of new headers, and the
    /// pool set UUID.
    pub master: PoolHdr,
    /// Mode of new parts (the source part 0's).
    pub mode: u32,
}

impl SourceFacts {
    /// The facts of replica `source` of `set`, which must be healthy.
    pub fn of<F: PartFile>(
        set: &OpenSet<F>,
        health: &crate::inspect::Health,
        source: usize,
    ) -> Result<SourceFacts, Error> {
        let refuse = |reason: String| Error::InvalidRequest {
            path: set.path.clone(),
            reason,
        };
        let pool_size = health
            .replicas
            .get(source)
            .and_then(|r| r.pool_size)
            .ok_or_else(|| refuse(crate::inspect::no_pool_size(health, source)))?;
        let part0 = set.part(source, 0);
        let master = part0
            .and_then(|p| p.header())
            .ok_or_else(|| refuse(format!("replica {source} part 0: no pool header")))?
            .clone();
        let mode = part0
            .and_then(|p| p.meta)
            .map_or(crate::create::DEFAULT_MODE, |m| m.mode & 0o7777);
        Ok(SourceFacts {
            source,
            pool_size,
            master,
            mode,
        })
    }
}

/// What happens to one remote part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemotePartAction {
    /// Created anew and filled from the source.
    Create,
    /// Replaced (it has the wrong size) and filled from the source.
    Recreate,
    /// Compared with the source by digests; the blocks that differ are
    /// sent.
    Compare,
}

/// One remote part in a plan.
#[derive(Debug, Clone, Serialize)]
pub struct RemotePart {
    /// Part index.
    pub part: usize,
    /// Its path on the remote host.
    pub path: PathBuf,
    /// Its data.
    pub action: RemotePartAction,
    /// Its header (`none` without one).
    pub header: HeaderAction,
    /// Its UUID, canonical (header-carrying parts).
    pub uuid: Option<String>,
    /// Bytes of it that differ from the source, found by comparing (or
    /// that a new part receives).
    pub bytes_differing: u64,
}

/// Exact counts of a remote update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RemoteTotals {
    /// Parts created.
    pub parts_to_create: u64,
    /// Bytes compared: read on this host and, hashed, on the remote one.
    pub bytes_compared: u64,
    /// Bytes of differing blocks sent to present parts (before
    /// compression).
    pub bytes_differing: u64,
    /// Bytes sent to new parts (before compression).
    pub bytes_to_copy: u64,
    /// Headers invalidated first.
    pub headers_to_invalidate: u64,
    /// Headers written last.
    pub headers_to_write: u64,
    /// Bytes the comparison exchanged on the wire (digests and their
    /// requests), both ways.
    pub wire_compare: u64,
}

impl RemoteTotals {
    /// Data bytes that cross the wire for the update, before compression.
    pub fn bytes_to_send(&self) -> u64 {
        self.bytes_differing + self.bytes_to_copy
    }
}

/// The plan of one remote update.
#[derive(Debug, Clone, Serialize)]
pub struct RemotePlan {
    /// `host:set`.
    pub remote: String,
    /// Line of the `REPLICA` line in the administrator's set file.
    pub line: usize,
    /// The transport's command.
    pub command: String,
    /// The server's software.
    pub server: String,
    /// Healthy before the update, judged on the remote host.
    pub healthy: bool,
    /// The remote health check's findings.
    pub verdicts: Vec<String>,
    /// Whether the remote replica is current already: nothing is written.
    pub current: bool,
    /// Whether the remote replica was changed on its host since it was
    /// last brought up to date (its `run_id` moved: see
    /// `remote::record`), so that the update rewinds it to the source. Not
    /// known from digests alone: the planner leaves it `false`, and the
    /// sync sets it from the record.
    pub rewind: bool,
    /// The epoch after which the source's changed blocks are sent, when
    /// the remote replica's sync mark proves it holds that epoch (see
    /// `super::epochs`): nothing is compared. `None`: compared by
    /// digests.
    pub since_epoch: Option<u32>,
    /// Why the update compares by digests rather than sending the changes
    /// since an epoch, when it does and the sync knows why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digests_because: Option<String>,
    /// Each part.
    pub parts: Vec<RemotePart>,
    /// The counts.
    pub totals: RemoteTotals,
    /// The first differing ranges found (at most 64), for messages.
    pub differing: Vec<LogicalRange>,
    /// The steps (endpoint numbers: the local replicas, then this remote).
    #[serde(skip)]
    pub steps: Vec<Step>,
    /// What the comparison found, which the run copies without comparing
    /// again.
    #[serde(skip)]
    pub prepared: Option<Prepared>,
}

/// Options of a remote update.
#[derive(Debug, Clone, Copy)]
pub struct UpdateOptions<'a> {
    /// Stride and workers.
    pub tuning: Tuning,
    /// Where fresh UUIDs come from.
    pub uuids: &'a UuidSource,
    /// Replace the parts that exist rather than compare them (`create
    /// -f`).
    pub recreate: bool,
    /// The ranges that differ, when known without comparing: the blocks
    /// the source changed after the epoch the remote replica's sync mark
    /// proves (`super::epochs`), with that epoch.
    pub known: Option<(u32, &'a [LogicalRange])>,
}

/// How one remote part's header stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// No header (SINGLEHDR, part ≥ 1).
    NoHeader,
    /// Valid and ours.
    Valid,
    /// Ours but invalidated by an update that did not finish.
    Invalidated,
    /// Anything else: it gets a new header.
    Broken,
}

fn standing(state: Option<&HeaderState>, has_header: bool, uuid: [u8; 16]) -> Standing {
    if !has_header {
        return Standing::NoHeader;
    }
    let Some(HeaderState::Read(h)) = state else {
        return Standing::Broken;
    };
    let hdr = &h.hdr;
    let zero = h.raw.iter().all(|&b| b == 0);
    if zero || hdr.poolset_uuid.0 != uuid || hdr.pool_type().is_none() {
        return Standing::Broken;
    }
    if hdr.checksum == hdr.compute_checksum() {
        Standing::Valid
    } else if is_invalidated(hdr) {
        Standing::Invalidated
    } else {
        Standing::Broken
    }
}

/// Plans the update of `remote` (endpoint number `local.replicas.len()`)
/// from `facts.source`, comparing without writing.
pub fn plan_update<S: Storage>(
    storage: &S,
    local: &OpenSet<S::File>,
    facts: &SourceFacts,
    remote: &RemoteReplica,
    options: UpdateOptions<'_>,
    progress: &dyn Progress,
) -> Result<RemotePlan, Error> {
    let view = remote.view();
    let id = local.replicas.len();
    if remote.index != id {
        return Err(Error::InvalidRequest {
            path: local.path.clone(),
            reason: format!(
                "{} is endpoint {}, the plan expects {id}",
                remote.name(),
                remote.index
            ),
        });
    }
    if view.net_size < facts.pool_size {
        return Err(remote.at.refuse(format!(
            "the remote pool set is too small: its net size is {} bytes, the pool needs {} (make its parts larger)",
            view.net_size, facts.pool_size
        )));
    }
    let single_hdr = view.set.options.single_hdr;
    let (actions, standings) = part_actions(&view, remote, facts, options.recreate)?;
    let ids = Sides {
        source: facts.source,
        remote: id,
    };
    let src = local
        .replica(facts.source)
        .ok_or_else(|| Error::InvalidRequest {
            path: local.path.clone(),
            reason: format!("replica {} does not exist", facts.source),
        })?;
    let (compare_steps, copy_steps) = data_plan(&view, &actions, facts, ids, src, remote);
    // Compare first, writing nothing: the digests decide what to send.
    // The changes since a proven epoch apply only to a remote replica
    // whose every part is compared and keeps its header.
    let known = options.known.filter(|_| {
        actions.iter().all(|a| *a == RemotePartAction::Compare)
            && standings
                .iter()
                .all(|s| matches!(s, Standing::Valid | Standing::NoHeader))
    });
    let prepared = if compare_steps.is_empty() {
        None
    } else if let Some((_, ranges)) = known {
        Some((Prepared::from_known(&compare_steps, ranges), 0))
    } else {
        let table: Vec<&dyn Endpoint> = local
            .replicas
            .iter()
            .map(|r| r as &dyn Endpoint)
            .chain(std::iter::once(remote as &dyn Endpoint))
            .collect();
        let before = remote.stats();
        let run = RunOptions {
            alternates: &[],
            tuning: options.tuning,
            progress,
            prepared: None,
        };
        let mut p = crate::exec::survey(storage, &local.path, &compare_steps, &table, run)?;
        let after = remote.stats();
        p.target = None;
        Some((
            p,
            (after.bytes_sent + after.bytes_received)
                .saturating_sub(before.bytes_sent + before.bytes_received),
        ))
    };
    let (prepared, wire_compare) = match prepared {
        Some((p, w)) => (Some(p), w),
        None => (None, 0),
    };
    let differing: Vec<LogicalRange> = prepared
        .as_ref()
        .map(|p| p.overwrites.iter().map(|o| o.range).collect())
        .unwrap_or_default();
    let bytes_differing: u64 = differing.iter().map(|r| r.len).sum();
    let data_work = bytes_differing > 0 || !copy_steps.is_empty();
    // Headers: every valid one is invalidated while data changes, and
    // written back after; broken ones get new headers.
    let invalidate: Vec<usize> = standings
        .iter()
        .enumerate()
        .filter(|(_, s)| data_work && **s == Standing::Valid)
        .map(|(p, _)| p)
        .collect();
    let headers = header_plan(
        &view,
        &standings,
        &invalidate,
        facts,
        (id, single_hdr),
        options.uuids,
    )
    .map_err(|e| remote.at.refuse(e))?;
    let writes: Vec<&HeaderStep> = headers
        .iter()
        .filter(|h| h.kind != HeaderAction::Keep)
        .collect();
    let mode_fix = facts.mode != 0
        && actions
            .iter()
            .zip(&view.opened.parts)
            .any(|(a, r)| *a == RemotePartAction::Compare && r.mode == 0);
    let current = !data_work && writes.is_empty() && !mode_fix;
    let steps = if current {
        Vec::new()
    } else {
        update_steps(
            &view,
            id,
            facts.mode,
            &actions,
            &invalidate,
            &copy_steps,
            (bytes_differing > 0).then_some(&compare_steps[..]),
            &writes,
        )
    };
    let parts = parts_summary(&view, &actions, &headers, &copy_steps, &differing);
    let totals = RemoteTotals {
        parts_to_create: actions
            .iter()
            .filter(|a| **a != RemotePartAction::Compare)
            .count() as u64,
        bytes_compared: prepared.as_ref().map_or(0, |p| p.bytes_compared),
        bytes_differing,
        bytes_to_copy: copy_steps.iter().map(step_len).sum(),
        headers_to_invalidate: if current { 0 } else { invalidate.len() as u64 },
        headers_to_write: if current { 0 } else { writes.len() as u64 },
        wire_compare,
    };
    Ok(RemotePlan {
        remote: remote.at.name(),
        line: remote.at.line,
        command: remote.command().to_string(),
        server: view.opened.server.clone(),
        healthy: view.opened.healthy,
        verdicts: view.opened.verdicts.clone(),
        current,
        rewind: false,
        since_epoch: known.map(|(e, _)| e),
        digests_because: None,
        parts,
        totals,
        differing: differing.iter().take(64).copied().collect(),
        steps,
        prepared,
    })
}

/// Per remote part, what the update does with its data, and how its
/// header stands; refused when a part cannot be opened on its host.
fn part_actions(
    view: &RemoteView,
    remote: &RemoteReplica,
    facts: &SourceFacts,
    recreate: bool,
) -> Result<(Vec<RemotePartAction>, Vec<Standing>), Error> {
    let uuid = facts.master.poolset_uuid.0;
    let mut actions = Vec::with_capacity(view.opened.parts.len());
    let mut standings = Vec::with_capacity(view.opened.parts.len());
    for (p, report) in view.opened.parts.iter().enumerate() {
        let action = match report.status {
            WireStatus::Missing => RemotePartAction::Create,
            WireStatus::SizeMismatch => RemotePartAction::Recreate,
            WireStatus::Ok if recreate => RemotePartAction::Recreate,
            WireStatus::Ok => RemotePartAction::Compare,
            WireStatus::Inaccessible => {
                return Err(remote.at.refuse(format!(
                    "part {p} ({}) cannot be opened on the remote host: {}",
                    view.paths
                        .get(p)
                        .map_or(String::new(), |x| x.display().to_string()),
                    report.reason
                )))
            }
        };
        let st = if action == RemotePartAction::Compare {
            match standing(view.headers.get(p), p < view.nhdrs, uuid) {
                // Valid, yet the remote host finds the part broken: its
                // replica is (an ADR failure in its shutdown state, say),
                // so it gets a new header.
                Standing::Valid if report.broken => Standing::Broken,
                other => other,
            }
        } else if p < view.nhdrs {
            Standing::Broken
        } else {
            Standing::NoHeader
        };
        actions.push(action);
        standings.push(st);
    }
    Ok((actions, standings))
}

/// The steps of an update that has work: headers invalidated first,
/// parts created and modes set, data copied and (when blocks differ)
/// repaired, headers written last.
#[allow(clippy::too_many_arguments)]
fn update_steps(
    view: &RemoteView,
    id: usize,
    mode: u32,
    actions: &[RemotePartAction],
    invalidate: &[usize],
    copy_steps: &[Step],
    compare_steps: Option<&[Step]>,
    writes: &[&HeaderStep],
) -> Vec<Step> {
    let mut steps = Vec::new();
    for &p in invalidate {
        steps.push(Step::InvalidateHeader {
            replica: id,
            part: p,
            path: view.paths.get(p).cloned().unwrap_or_default(),
        });
    }
    for (p, action) in actions.iter().enumerate() {
        let path = view.paths.get(p).cloned().unwrap_or_default();
        if *action == RemotePartAction::Compare {
            // Mode 0 is what a creation that never finished leaves behind
            // (PMDK's, or an interrupted seeding's).
            if view.opened.parts.get(p).is_some_and(|r| r.mode == 0) && mode != 0 {
                steps.push(Step::SetMode {
                    replica: id,
                    part: p,
                    path,
                    mode,
                });
            }
            continue;
        }
        steps.push(Step::CreatePart {
            replica: id,
            part: p,
            path: path.clone(),
            size: view_part_size(view, p),
            replace: *action == RemotePartAction::Recreate,
        });
        steps.push(Step::SetMode {
            replica: id,
            part: p,
            path,
            mode,
        });
    }
    steps.extend(copy_steps.iter().cloned());
    steps.extend(compare_steps.into_iter().flatten().cloned());
    steps.extend(writes.iter().map(|h| Step::WriteHeader((*h).clone())));
    steps
}

/// The endpoint numbers of a remote update.
#[derive(Debug, Clone, Copy)]
struct Sides {
    source: usize,
    remote: usize,
}

fn step_len(step: &Step) -> u64 {
    match step {
        Step::CopyRange(d) | Step::CompareAndCopy(d) => d.len,
        _ => 0,
    }
}

fn view_part_size(view: &RemoteView, p: usize) -> u64 {
    view.set
        .replicas
        .first()
        .and_then(|r| r.parts().get(p))
        .map_or(0, |part| match part.size {
            poolsync_poolset::PartSize::Bytes(b) => b,
            poolsync_poolset::PartSize::Auto => 0,
        })
}

/// The compare steps of present parts and the copy steps of new ones:
/// each part's share of the replicated range `[4096, pool size)`.
fn data_plan(
    view: &RemoteView,
    actions: &[RemotePartAction],
    facts: &SourceFacts,
    ids: Sides,
    src: &dyn Endpoint,
    remote: &dyn Endpoint,
) -> (Vec<Step>, Vec<Step>) {
    let mut compare = Vec::new();
    let mut copy = Vec::new();
    for (p, action) in actions.iter().enumerate() {
        let Some(extent) = view.extents.get(p) else {
            continue;
        };
        let start = extent.logical.max(poolsync_poolset::PAGE);
        let end = extent
            .logical
            .saturating_add(extent.len)
            .min(facts.pool_size);
        if start >= end {
            continue;
        }
        let range = LogicalRange::from_bounds(start, end);
        let purpose = if *action == RemotePartAction::Compare {
            DataPurpose::Repair
        } else {
            DataPurpose::Rebuild
        };
        let steps = data_steps(purpose, (ids.source, src), (ids.remote, remote), range);
        if *action == RemotePartAction::Compare {
            compare.extend(steps);
        } else {
            copy.extend(steps);
        }
    }
    (compare, copy)
}

/// The header of every header-carrying remote part after the update.
fn header_plan(
    view: &RemoteView,
    standings: &[Standing],
    invalidate: &[usize],
    facts: &SourceFacts,
    (id, single_hdr): (usize, bool),
    uuids: &UuidSource,
) -> Result<Vec<HeaderStep>, String> {
    let headers: Vec<Option<PoolHdr>> = (0..view.nhdrs)
        .map(|p| match view.headers.get(p) {
            Some(HeaderState::Read(h)) => {
                // An invalidated header is ours but for its checksum.
                let mut hdr = h.hdr.clone();
                hdr.checksum = hdr.compute_checksum();
                Some(hdr)
            }
            _ => None,
        })
        .collect();
    let views: Vec<PartView<'_>> = (0..view.nhdrs)
        .map(|p| PartView {
            broken: !matches!(
                standings.get(p),
                Some(Standing::Valid | Standing::Invalidated)
            ),
            header: headers.get(p).and_then(Option::as_ref),
        })
        .collect();
    let assigned = assign(std::slice::from_ref(&views), single_hdr, Rules::Sync, uuids)
        .map_err(|e| e.to_string())?;
    let on_disk = |_: usize, p: usize| OnDisk {
        bytes: match view.headers.get(p) {
            Some(HeaderState::Read(h)) => Some(h.raw.as_slice()),
            _ => None,
        },
        restore: invalidate.contains(&p),
        recreated: false,
    };
    let mut master = facts.master.clone();
    if single_hdr {
        master.features.incompat |= FEAT_SINGLEHDR;
    }
    let planned = plan_headers(
        std::slice::from_ref(&views),
        &assigned,
        &on_disk,
        &master,
        facts.master.poolset_uuid,
        single_hdr,
    )?;
    Ok(planned
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(p, h)| HeaderStep {
            replica: id,
            part: p,
            path: view.paths.get(p).cloned().unwrap_or_default(),
            kind: h.action,
            uuid: h.assigned.uuid.to_canonical(),
            uuid_origin: h.assigned.origin,
            header: h.header,
        })
        .collect())
}

fn parts_summary(
    view: &RemoteView,
    actions: &[RemotePartAction],
    headers: &[HeaderStep],
    copy: &[Step],
    differing: &[LogicalRange],
) -> Vec<RemotePart> {
    actions
        .iter()
        .enumerate()
        .map(|(p, action)| {
            let extent = view.extents.get(p);
            let within = |r: &LogicalRange| {
                extent.map_or(0, |e| {
                    r.intersect(&LogicalRange::new(e.logical, e.len))
                        .map_or(0, |x| x.len)
                })
            };
            let bytes_differing = if *action == RemotePartAction::Compare {
                differing.iter().map(within).sum()
            } else {
                copy.iter()
                    .filter_map(|s| match s {
                        Step::CopyRange(d) if d.part == p => Some(d.len),
                        _ => None,
                    })
                    .sum()
            };
            let header = headers.get(p);
            RemotePart {
                part: p,
                path: view.paths.get(p).cloned().unwrap_or_default(),
                action: *action,
                header: header.map_or(HeaderAction::None, |h| h.kind),
                uuid: header.map(|h| h.uuid.clone()),
                bytes_differing,
            }
        })
        .collect()
}

/// Carries out `plan` on `remote` from the local set `local` (the set the
/// plan was made from), then asks the server for the remote replica's
/// health, which must now be good.
pub fn run_update<S: Storage>(
    storage: &S,
    local: &mut OpenSet<S::File>,
    plan: &RemotePlan,
    remote: &RemoteReplica,
    tuning: Tuning,
    progress: &dyn Progress,
) -> Result<ExecReport, Error> {
    let path: PathBuf = local.path.clone();
    let alternates: Vec<usize> = Vec::new();
    let run = RunOptions {
        alternates: &alternates,
        tuning,
        progress,
        prepared: plan.prepared.as_ref(),
    };
    let mut endpoints = Endpoints {
        set: local,
        extra: vec![remote as &dyn Endpoint],
    };
    let report = crate::exec::run(storage, Path::new(&path), &plan.steps, &mut endpoints, run)?;
    let view = remote.refresh()?;
    if !view.opened.healthy {
        return Err(remote.at.refuse(format!(
            "after the update the remote host still finds it unhealthy: {}",
            view.opened.verdicts.join("; ")
        )));
    }
    Ok(report)
}
