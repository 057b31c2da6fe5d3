//! The target of a transform: which files it may replace, the headers of
//! its rings, and the room it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use poolsync_header::{PoolHdr, RawUuid};
use poolsync_pmem::{PartFile, Storage};

use super::request::{refuse, Request};
use super::types::{NewPart, TransformPlan};
use crate::exec::{HeaderAction, HeaderStep};
use crate::obstacles::{self, Change};
use crate::open::{HeaderState, OpenPart, OpenSet, PartStatus};
use crate::ownership::{prove, Claim, Rules};
use crate::ring::{assign, plan_headers, OnDisk, PartView, Rules as UuidRules, UuidSource};
use crate::space::{self, NewFile};
use crate::Error;

/// A part of a replica the transform creates already exists, and no
/// journal names it: it may be replaced only if an interrupted run of this
/// transform left it, which its header proves (it carries the pool set
/// UUID, valid or invalidated, and it is not a copy of a source part,
/// whose UUID it would carry). Otherwise pmempool's refusal, naming the
/// file and what it carries.
pub(super) fn prove_left_by_us<F: PartFile>(
    dst: &Path,
    part: &OpenPart<F>,
    poolset_uuid: RawUuid,
    source_uuids: &BTreeSet<RawUuid>,
) -> Result<(), Error> {
    let rules = Rules {
        poolset_uuid,
        copies_of: Some(source_uuids),
    };
    let what = match prove(Claim::of_state(&part.header), &rules) {
        Ok(()) if part.status == PartStatus::Ok => return Ok(()),
        Ok(()) => part.status.to_string(),
        Err(what) => what,
    };
    Err(part_exists(dst, part, poolset_uuid, what))
}

/// pmempool's refusal of a part being added that exists, naming the file
/// and what it is (`what`).
pub(super) fn part_exists<F: PartFile>(
    dst: &Path,
    part: &OpenPart<F>,
    poolset_uuid: RawUuid,
    what: String,
) -> Error {
    Error::PartExists {
        set: dst.to_path_buf(),
        line: part.line,
        path: part.path.clone(),
        what,
        expected: poolset_uuid.to_canonical(),
    }
}

/// Whether a part being added is a Device DAX, and whether its header
/// page is blank. A device always exists: as for create, one whose
/// header page is zero is taken as it is (pmempool takes any); one with a
/// header must be proved left by an interrupted run, as a file must.
pub(super) fn device_state<F: PartFile>(part: &OpenPart<F>) -> (bool, bool) {
    let device = part.device.is_some();
    let blank = device && matches!(&part.header, HeaderState::Read(h) if h.hdr.is_zero());
    (device, blank)
}

/// A refusal of a part being added (`PartExists`), said of a Device DAX.
pub(super) fn device_refusal(e: Error) -> Error {
    match e {
        Error::PartExists {
            set,
            line,
            path,
            what,
            expected,
        } => Error::DeviceDaxPart {
            set,
            line,
            reason: format!(
                "some parts being added already exist: the Device DAX {what}, not this pool set's uuid {expected}; if the pool on it is not needed, zero its header with `poolsync rm {}` and run again",
                path.display()
            ),
            part: path,
        },
        other => other,
    }
}

/// The header writes that link `target` into its rings: the headers of the
/// parts of `rewritten` replicas first (new ones with fresh UUIDs, made
/// from `master`; a part 0 in `kept_part0` keeps that header, relinked),
/// then the relinked headers of the other replicas whose bytes change.
pub(super) fn ring_header_steps<F: PartFile>(
    target: &OpenSet<F>,
    rewritten: &[usize],
    kept_part0: &BTreeMap<usize, PoolHdr>,
    master: &PoolHdr,
    uuids: &UuidSource,
) -> Result<Vec<HeaderStep>, String> {
    let single_hdr = target.set.options.single_hdr;
    let views: Vec<Vec<PartView<'_>>> = target
        .replicas
        .iter()
        .map(|rep| {
            let new = rewritten.contains(&rep.index);
            rep.parts
                .iter()
                .take(rep.nhdrs)
                .map(|part| match (new, kept_part0.get(&rep.index)) {
                    (true, Some(kept)) if part.index == 0 => PartView {
                        broken: false,
                        header: Some(kept),
                    },
                    (true, _) => PartView {
                        broken: true,
                        header: None,
                    },
                    (false, _) => PartView {
                        broken: false,
                        header: part.header(),
                    },
                })
                .collect()
        })
        .collect();
    let assigned =
        assign(&views, single_hdr, UuidRules::Fresh, uuids).map_err(|e| e.to_string())?;
    let on_disk = |r: usize, p: usize| {
        let recreated = rewritten.contains(&r);
        OnDisk {
            bytes: if recreated {
                None
            } else {
                target.part(r, p).and_then(|x| x.header_bytes())
            },
            restore: false,
            recreated,
        }
    };
    let planned = plan_headers(
        &views,
        &assigned,
        &on_disk,
        master,
        master.poolset_uuid,
        single_hdr,
    )?;
    let mut first = Vec::new();
    let mut relinked = Vec::new();
    for (rep, headers) in target.replicas.iter().zip(planned) {
        let group = if rewritten.contains(&rep.index) {
            &mut first
        } else {
            &mut relinked
        };
        for (part, h) in rep.parts.iter().zip(headers) {
            if h.action == HeaderAction::Keep {
                continue;
            }
            group.push(HeaderStep {
                replica: rep.index,
                part: part.index,
                path: part.path.clone(),
                kind: h.action,
                uuid: h.assigned.uuid.to_canonical(),
                uuid_origin: h.assigned.origin,
                header: h.header,
            });
        }
    }
    first.extend(relinked);
    Ok(first)
}

/// Refuses to start when a file system lacks the space for `files`, so
/// that no run stops half-way for want of space.
pub(super) fn check_space<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    files: &[NewFile<'_>],
) -> Result<(), Error> {
    space::check(storage, files)?.map_err(|short| refuse(req.src, req.dst, short.to_string()))
}

/// The journal as a file the space check counts: written first, beside
/// the source pool set file, at `path` ([`super::journal::journal_path`]).
pub(super) fn journal_file<'a, S: Storage>(
    storage: &S,
    path: &'a Path,
) -> Result<NewFile<'a>, Error> {
    Ok(NewFile {
        path,
        size: super::journal::JOURNAL_RESERVE,
        replace: storage.stat(path)?.is_some(),
        what: "the journal",
    })
}

/// The new parts as files the space check counts.
pub(super) fn new_files(create: &[NewPart]) -> Vec<NewFile<'_>> {
    create
        .iter()
        .filter(|c| !c.device)
        .map(|c| NewFile {
            path: &c.path,
            size: c.size,
            replace: c.replace,
            what: "the new parts",
        })
        .collect()
}

/// Refuses the transform when a file its plan deletes, replaces or creates
/// could not be (a read-only mount, a directory not writable by this
/// user, an immutable file; see [`crate::obstacles`]), so that it stops
/// before its first write rather than half-way: the parts it deletes or
/// replaces, the stale files it discards, the new parts, and the journal
/// and temporary copy it creates and deletes again.
pub(super) fn check_entries<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
    plan: &TransformPlan,
) -> Result<(), Error> {
    let mut changes: Vec<Change<'_>> = plan.discard.iter().map(|p| Change::Delete(p)).collect();
    if let Some(journal) = &plan.journal {
        changes.push(if journal.write {
            Change::CreateAndDelete(&journal.path)
        } else {
            Change::Delete(&journal.path)
        });
    }
    if let Some(temp) = plan.staging.as_ref().and_then(|s| s.temporary.as_ref()) {
        changes.push(if temp.complete {
            Change::Delete(&temp.path)
        } else {
            Change::CreateAndDelete(&temp.path)
        });
    }
    for c in plan.create.iter().filter(|c| !c.device) {
        changes.push(if c.replace {
            Change::Replace(&c.path)
        } else {
            Change::Create(&c.path)
        });
    }
    changes.extend(plan.remove.iter().map(|r| Change::Delete(&r.path)));
    obstacles::check(storage, changes)?
        .map_err(|blocked| refuse(src, dst, format!("{blocked}; nothing was written")))
}
