//! A destination pool set as an import finds it, and the header writes
//! that bracket an import.
//!
//! [`open`] locks the set and judges it: either every part that carries a
//! header is missing or blank (its header page all zero: never written,
//! or left by an interrupted seed), and the set is *seeded*; or every part
//! is there with a header that is valid or that an interrupted import
//! marked broken (its checksum inverted), and the set is *existing*.
//! Anything else is refused before anything is written, naming the part:
//! a half-broken set is `poolsync sync`'s business.
//!
//! The crash rules of an import (ARCHITECTURE.md, "Crash model"): on an
//! existing destination every header is marked broken (checksum inverted,
//! durably) before the first data write, and restored only once the data
//! is durable, so libpmemobj never opens half an epoch; the state records
//! the new epoch last. A seeded destination gets its parts created whole
//! first, its data, and its headers (as `create` writes them, with the
//! source's pool set UUID) last.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use poolsync_header::{ring_links, Features, PoolHdr, PoolType, RawUuid, FEAT_SINGLEHDR};
use poolsync_pmem::{Access, PartFile, Storage};

use crate::endpoint::{Endpoint, HeaderWrite};
use crate::open::{open, HeaderState, OpenSet, PartStatus};
use crate::ring::UuidSource;
use crate::Error;

/// How long to wait between tries of a locked pool.
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// Opens `path` with `access`, retrying for `wait` while another process
/// holds a lock.
pub fn open_waiting<S: Storage>(
    storage: &S,
    path: &Path,
    access: Access,
    wait: Option<Duration>,
) -> Result<OpenSet<S::File>, Error> {
    let clock = storage.clock();
    let started = clock.elapsed();
    loop {
        match open(storage, path, access) {
            Err(Error::Storage(e @ poolsync_pmem::Error::Locked { .. })) => {
                let Some(wait) = wait else {
                    return Err(Error::Storage(e));
                };
                let waited = clock.elapsed().saturating_sub(started);
                if waited >= wait {
                    return Err(Error::LockTimeout {
                        seconds: wait.as_secs(),
                        error: e,
                    });
                }
                clock.sleep(LOCK_RETRY.min(wait.saturating_sub(waited)));
            }
            other => return other,
        }
    }
}

/// What a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// No part carries a header yet: the import creates what is missing.
    Seed,
    /// A pool: every part is there, every header valid or marked broken
    /// by an interrupted import.
    Existing,
}

/// A destination, open and locked.
#[derive(Debug)]
pub struct Destination<F> {
    /// The set.
    pub set: OpenSet<F>,
    /// Seed or existing.
    pub shape: Shape,
    /// Per replica, per header-carrying part: the header with its true
    /// checksum (existing destinations).
    pub headers: Vec<Vec<PoolHdr>>,
    /// Some header was marked broken by an interrupted import.
    pub interrupted: bool,
    /// The pool set UUID its headers carry (existing destinations).
    pub poolset_uuid: Option<[u8; 16]>,
}

/// Opens and judges the destination at `path` (see the module
/// documentation); read-only for a dry run.
pub fn open_destination<S: Storage>(
    storage: &S,
    path: &Path,
    dry_run: bool,
    wait: Option<Duration>,
) -> Result<Destination<S::File>, Error> {
    let access = if dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let set = open_waiting(storage, path, access, wait)?;
    let refuse = |reason: String| Error::CannotImport {
        set: path.to_path_buf(),
        reason,
    };
    let mut blank_or_missing = 0usize;
    let mut headed = 0usize;
    let mut valid = 0usize;
    let mut garbage: Option<String> = None;
    let mut headers = Vec::new();
    let mut interrupted = false;
    let mut uuid: Option<RawUuid> = None;
    for rep in &set.replicas {
        let mut rep_headers = Vec::new();
        for part in &rep.parts {
            let has_header = part.index < rep.nhdrs;
            match (&part.status, &part.header) {
                (PartStatus::Missing, _) => {
                    blank_or_missing += 1;
                    continue;
                }
                // Created by a seed that was stopped before it allocated
                // the file: `create_parts` makes it anew.
                _ if unfinished(part) => {
                    blank_or_missing += 1;
                    continue;
                }
                (PartStatus::Ok, _) if !has_header => continue,
                (PartStatus::Ok, HeaderState::Read(h)) if h.hdr.is_zero() => {
                    blank_or_missing += 1;
                    continue;
                }
                (PartStatus::Ok, HeaderState::Read(h)) => {
                    let mut hdr = h.hdr.clone();
                    let good = hdr.compute_checksum();
                    if hdr.checksum == !good {
                        interrupted = true;
                        hdr.checksum = good;
                    } else if hdr.checksum == good {
                        valid += 1;
                    } else {
                        // A header torn while a seed wrote it, or damage:
                        // which one, the other parts tell.
                        garbage.get_or_insert_with(|| part.name());
                        continue;
                    }
                    if *uuid.get_or_insert(hdr.poolset_uuid) != hdr.poolset_uuid {
                        return Err(refuse(format!(
                            "{}: its pool set UUID {} differs from the other parts'; repair the set with `poolsync sync` first",
                            part.name(),
                            hdr.poolset_uuid
                        )));
                    }
                    headed += 1;
                    rep_headers.push(hdr);
                }
                (status, header) => {
                    let why = match (status, header) {
                        (PartStatus::Ok, HeaderState::Unreadable { reason }) => reason.clone(),
                        (PartStatus::Ok, _) => "its header was not read".to_string(),
                        (other, _) => other.to_string(),
                    };
                    return Err(refuse(format!(
                        "{}: {why}; repair the set with `poolsync sync` first, or remove the pool to seed it anew",
                        part.name()
                    )));
                }
            }
        }
        headers.push(rep_headers);
    }
    if let (Some(name), true) = (&garbage, valid > 0) {
        return Err(refuse(format!(
            "{name}: the pool header's checksum (offset 4088) is wrong; repair the set with `poolsync sync` first, or remove the pool to seed it anew"
        )));
    }
    let shape = match (headed, blank_or_missing) {
        (0, _) => Shape::Seed,
        // No header verifies, and some part has none, or one that does
        // not even verify inverted: a seed that stopped while it wrote its
        // headers (they are all written marked broken first).
        (_, _) if valid == 0 && (blank_or_missing > 0 || garbage.is_some()) => Shape::Seed,
        (_, 0) => Shape::Existing,
        _ => {
            let first = set
                .parts()
                .find(|p| {
                    p.status == PartStatus::Missing
                        || matches!(&p.header, HeaderState::Read(h) if h.hdr.is_zero())
                })
                .map_or_else(String::new, |p| p.name());
            return Err(refuse(format!(
                "{first} is missing or has no pool header while other parts hold a pool; repair the set with `poolsync sync`, or remove every part to seed it anew"
            )));
        }
    };
    Ok(Destination {
        shape,
        headers,
        interrupted,
        poolset_uuid: uuid.map(|u| u.0),
        set,
    })
}

impl<F: PartFile> Destination<F> {
    /// The replicas as endpoints.
    pub fn endpoints(&self) -> Vec<&dyn Endpoint> {
        self.set
            .replicas
            .iter()
            .map(|r| r as &dyn Endpoint)
            .collect()
    }

    /// The master replica (replica 0) as the one endpoint checked against
    /// the state. libpmemobj reads only the master, and it never makes the
    /// other replicas byte-identical to it (the descriptor's volatile area,
    /// free heap space and chunk footers differ, docs/format.md §15.2), so
    /// they are not compared; an application that opened the pool shows
    /// in the master (its `run_id`, at least).
    pub fn master(&self) -> Vec<&dyn Endpoint> {
        self.set
            .replicas
            .first()
            .map(|r| r as &dyn Endpoint)
            .into_iter()
            .collect()
    }

    /// The pool size the set's parts give (the smallest replica's).
    pub fn pool_size(&self) -> u64 {
        self.set.set_pool_size()
    }

    /// Marks every header broken (checksum inverted) and makes that
    /// durable; headers already marked stay as they are.
    pub fn mark_broken(&self) -> Result<u64, Error> {
        let mut written = 0;
        for (rep, hdrs) in self.set.replicas.iter().zip(&self.headers) {
            for (p, hdr) in hdrs.iter().enumerate() {
                let stored = match rep.parts.get(p).map(|x| &x.header) {
                    Some(HeaderState::Read(h)) => h.hdr.checksum,
                    _ => continue,
                };
                if stored == hdr.checksum {
                    rep.write_header(p, &HeaderWrite::Checksum { value: !stored })?;
                    written += 1;
                }
            }
        }
        Ok(written)
    }

    /// Writes every header's true checksum back, durably.
    pub fn restore_headers(&self) -> Result<u64, Error> {
        let mut written = 0;
        for (rep, hdrs) in self.set.replicas.iter().zip(&self.headers) {
            for (p, hdr) in hdrs.iter().enumerate() {
                rep.write_header(
                    p,
                    &HeaderWrite::Checksum {
                        value: hdr.checksum,
                    },
                )?;
                written += 1;
            }
        }
        Ok(written)
    }
}

/// What seeding created.
#[derive(Debug, Clone, Default)]
pub struct Created {
    /// Parts created by this run.
    pub parts: Vec<PathBuf>,
    /// Every part existed already (blank, from an interrupted seed) or was
    /// created by this run: `true` when all were created now, so that
    /// they are known to be zero.
    pub all_fresh: bool,
}

/// Creates the missing parts of a seeded destination, fully allocated, and
/// makes their directory entries durable.
pub fn create_parts<S: Storage>(
    storage: &S,
    dest: &mut Destination<S::File>,
) -> Result<Created, Error> {
    let mut created = Created {
        parts: Vec::new(),
        all_fresh: true,
    };
    for rep in &mut dest.set.replicas {
        for part in &mut rep.parts {
            if unfinished(part) {
                part.file = None;
                storage.remove(&part.path).map_err(|e| Error::PartStorage {
                    set: dest.set.path.clone(),
                    line: part.line,
                    error: e,
                })?;
            } else if part.status != PartStatus::Missing {
                created.all_fresh = false;
                continue;
            }
            let file = storage
                .create(&part.path, part.configured_size)
                .map_err(|e| Error::PartStorage {
                    set: dest.set.path.clone(),
                    line: part.line,
                    error: e,
                })?;
            // The first fence makes the allocation durable.
            file.fence()?;
            part.file = Some(file);
            part.status = PartStatus::Ok;
            created.parts.push(part.path.clone());
        }
    }
    sync_dirs(storage, dest.set.parts().map(|p| p.path.as_path()))?;
    Ok(created)
}

/// A part that a seed created and was stopped before it allocated: empty,
/// and with no permission bits (parts are created with mode 0 and get
/// their mode once the pool is whole). Nobody else makes such a file, and
/// it holds nothing.
fn unfinished<F>(part: &crate::open::OpenPart<F>) -> bool {
    matches!(part.status, PartStatus::SizeMismatch { actual: 0, .. })
        && part.meta.is_some_and(|m| m.mode & 0o777 == 0 && m.len == 0)
}

/// Syncs the directories that hold `paths`.
fn sync_dirs<'p, S: Storage>(
    storage: &S,
    paths: impl Iterator<Item = &'p Path>,
) -> Result<(), Error> {
    let dirs: BTreeSet<PathBuf> = paths
        .map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default())
        .collect();
    for dir in dirs {
        storage.fsync_dir(&dir)?;
    }
    Ok(())
}

/// The mode `create` gives new parts.
pub const PART_MODE: u32 = crate::create::DEFAULT_MODE;

/// Writes the headers of a seeded destination, as `create` writes them
/// but with the source's pool set UUID: one UUID per header-carrying part
/// from `uuids`, linked in rings, default features (SINGLEHDR as the set
/// says), a clean shutdown state. All are written with their checksums
/// inverted, the parts get their mode ([`finish_modes`]), and only then
/// are the checksums made valid.
pub fn write_seed_headers<S: Storage>(
    storage: &S,
    dest: &Destination<S::File>,
    poolset_uuid: [u8; 16],
    uuids: &UuidSource,
) -> Result<(), Error> {
    let set = &dest.set;
    let ring: Vec<Vec<RawUuid>> = set
        .replicas
        .iter()
        .enumerate()
        .map(|(r, rep)| (0..rep.nhdrs).map(|p| uuids.generate(r, p)).collect())
        .collect();
    let links = ring_links(&ring).map_err(|e| Error::InvalidRequest {
        path: set.path.clone(),
        reason: e.to_string(),
    })?;
    let mut features = Features::DEFAULT;
    if set.set.options.single_hdr {
        features.incompat |= FEAT_SINGLEHDR;
    }
    // All headers first with their checksums inverted, then all made
    // valid: a crash in between leaves no valid header next to a part
    // without one, which the next run takes for the seed it is.
    let mut written: Vec<(usize, usize, u64)> = Vec::new();
    for (r, rep) in set.replicas.iter().enumerate() {
        for p in 0..rep.nhdrs {
            let (Some(uuid), Some(l)) = (
                ring.get(r).and_then(|x| x.get(p)),
                links.get(r).and_then(|x| x.get(p)),
            ) else {
                continue;
            };
            // crtime is the part's ctime when its header is written, as
            // PMDK takes it (docs/format.md §16.3).
            let crtime = rep.part_file(p)?.ctime()?;
            let mut hdr = PoolHdr::new(
                PoolType::Obj,
                features,
                RawUuid(poolset_uuid),
                *uuid,
                l,
                crtime,
            );
            let good = hdr.compute_checksum();
            hdr.checksum = !good;
            rep.write_header(
                p,
                &HeaderWrite::Whole {
                    header: Box::new(hdr),
                    stamp_crtime: false,
                },
            )?;
            written.push((r, p, good));
        }
    }
    finish_modes(storage, set)?;
    for (r, p, good) in written {
        if let Some(rep) = set.replicas.get(r) {
            rep.write_header(p, &HeaderWrite::Checksum { value: good })?;
        }
    }
    Ok(())
}

/// Gives the parts left without permissions (created by this run, or by
/// an interrupted one, with mode 0 as PMDK creates them) the mode
/// `create` gives, durably; called before any header of the set
/// verifies.
pub fn finish_modes<S: Storage>(storage: &S, set: &OpenSet<S::File>) -> Result<(), Error> {
    let mut any = false;
    for part in set.parts() {
        if storage.stat(&part.path)?.is_some_and(|m| m.mode == 0) {
            storage.set_mode(&part.path, PART_MODE)?;
            any = true;
        }
    }
    if any {
        sync_dirs(storage, set.parts().map(|p| p.path.as_path()))?;
    }
    Ok(())
}
