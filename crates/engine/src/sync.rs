//! `pmempool sync`: rebuild the broken replicas of a pool set from a
//! healthy one (docs/format.md §17), with block-level repair, an honest plan and
//! crash safety.
//!
//! The path from a pool set file to a repaired set:
//!
//! 1. [`open_for_sync`] opens the pool set file and every part, locks them
//!    all (as libpmemobj does, so a pool in use is refused) and keeps them
//!    locked for the whole run; parts that cannot be opened read-write are
//!    recorded as inaccessible, as libpmempool judges them. A dry run holds
//!    read-only handles. With [`SyncOptions::wait_lock`] a locked pool is
//!    retried until the time is up.
//! 2. [`survey`] makes the checks that refuse a sync before anything is
//!    judged (not a pool set, one replica, parts under 8 MiB, missing
//!    directories), runs [`crate::inspect::inspect`], and looks for bad
//!    block recovery files ([`badblocks::scan`]).
//! 3. [`plan()`] decides everything, refusals included, and returns a
//!    [`Plan`] with exact byte counts. A dry run stops here and prints it.
//! 4. [`execute`] carries the plan out and returns a [`SyncReport`].
//!
//! [`sync`] does all four. What the plan does and in which order (the
//! crash model) is described in [`plan`](mod@plan) and `ARCHITECTURE.md`.
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//! use poolsync_engine::create::{create, CreateOptions};
//! use poolsync_engine::sync::{sync, NoProgress, SyncOptions};
//! use poolsync_pmem::sim::SimStorage;
//! use poolsync_pmem::Storage;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = SimStorage::new();
//! let set = Path::new("/pool/pool.set");
//! storage.insert_file(set, b"PMEMPOOLSET\n8M /pool/a\nREPLICA\n8M /pool/b\n", 0o644)?;
//! create(&storage, set, &CreateOptions::default())?;
//!
//! // Lose the second replica, then sync it back.
//! storage.remove(Path::new("/pool/b"))?;
//! let options = SyncOptions { threads: 1, ..SyncOptions::default() };
//! let dry = sync(&storage, set, &SyncOptions { dry_run: true, ..options.clone() }, &NoProgress)?;
//! assert_eq!(dry.plan.totals.parts_to_create, 1);
//! assert!(dry.report.is_none());
//!
//! let done = sync(&storage, set, &options, &NoProgress)?;
//! let report = done.report.expect("a real run reports");
//! assert_eq!(report.parts_created, 1);
//! assert_eq!(report.bytes_copied, done.plan.totals.bytes_to_copy);
//! assert!(sync(&storage, set, &options, &NoProgress)?.plan.is_noop());
//! # Ok(())
//! # }
//! ```

pub use crate::badblocks;
pub mod plan;
/// The UUID rules, now shared with transform in [`crate::ring`].
pub mod uuids {
    pub use crate::ring::{assign, Assigned, PartView, Rules, UuidError, UuidOrigin, UuidSource};
}

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use poolsync_pmem::{Access, FileKind, PartFile, Storage};
use serde::Serialize;

use crate::compare::{default_threads, DEFAULT_STRIDE};
use crate::endpoint::Endpoint;
use crate::exec::{DataPurpose, Endpoints, Prepared, RunOptions, Tuning};
use crate::inspect::{inspect, Health};
use crate::open::{open, HeaderState, OpenSet, PartStatus};
use crate::undo::UndoTarget;
use crate::Error;

pub use crate::exec::{NoProgress, Progress, ReadFallback};
pub use badblocks::{BadBlock, BadBlockQuery, BadBlockScan, RegularFiles};
pub use plan::{check_shape, plan, Plan, Step};
pub use uuids::UuidSource;

/// What a sync did: the executor's report.
pub type SyncReport = crate::exec::ExecReport;

/// How often a locked pool is tried again while waiting.
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// Options of a sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// `-d`: plan only; nothing is written (parts are opened read-only).
    pub dry_run: bool,
    /// `-b`: repair bad blocks (and accept bad block recovery files).
    pub bad_blocks: bool,
    /// `--source N`: copy from replica N (it must be healthy) instead of the
    /// lowest-index healthy replica.
    pub source: Option<usize>,
    /// `--wait-lock`: how long to retry while another process holds a lock.
    pub wait_lock: Option<Duration>,
    /// Where fresh UUIDs come from.
    pub uuids: UuidSource,
    /// Bytes read from each side per comparison or copy step.
    pub stride: usize,
    /// Worker threads for copies and compares (1: in order, on the
    /// calling thread).
    pub threads: usize,
    /// The bad-block query of the part files' devices.
    pub bad_block_query: Arc<dyn BadBlockQuery>,
    /// Save the bytes a repair overwrites to an undo file first
    /// (`--no-undo` turns it off).
    pub undo: bool,
    /// Compare every remote replica with the source by digests, even one
    /// whose sync mark proves the epoch it holds (`sync --verify`): finds
    /// what changed there behind poolsync's and libpmemobj's back (a raw
    /// write, a damaged disk), which the changes since an epoch cannot.
    pub remote_digests: bool,
}

impl SyncOptions {
    /// The stride and workers of the data steps.
    pub fn tuning(&self) -> Tuning {
        Tuning {
            stride: self.stride,
            threads: self.threads,
        }
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            dry_run: false,
            bad_blocks: false,
            source: None,
            wait_lock: None,
            uuids: UuidSource::Random,
            stride: DEFAULT_STRIDE,
            threads: default_threads(),
            bad_block_query: Arc::new(RegularFiles),
            undo: true,
            remote_digests: false,
        }
    }
}

/// What [`survey`] found: the health and the bad blocks.
#[derive(Debug, Clone)]
pub struct Survey {
    /// The health check's verdicts.
    pub health: Health,
    /// Recovery files and bad blocks.
    pub bad_blocks: BadBlockScan,
    /// The storage clock's time of the survey (Unix seconds): the
    /// `<time>` of the names a sync gives files it moves aside, formatted
    /// as undo files' are.
    pub now: u64,
}

/// The plan and, for a real run, what was done.
#[derive(Debug, Clone, Serialize)]
pub struct SyncOutcome {
    /// The plan.
    pub plan: Plan,
    /// `None` for a dry run.
    pub report: Option<SyncReport>,
}

/// Opens, plans and (unless a dry run) executes a sync of the pool set at
/// `path`.
pub fn sync<S: Storage>(
    storage: &S,
    path: &Path,
    options: &SyncOptions,
    progress: &dyn Progress,
) -> Result<SyncOutcome, Error> {
    let mut set = open_for_sync(storage, path, options)?;
    let survey = survey(storage, &set, options)?;
    let mut plan = plan(&set, &survey, options)?;
    if options.dry_run {
        prepare(storage, &set, &mut plan, &[], options, &NoProgress)?;
        return Ok(SyncOutcome { plan, report: None });
    }
    progress.start(plan.totals.bytes_to_copy + plan.totals.bytes_to_compare);
    let prepared = prepare(storage, &set, &mut plan, &[], options, progress)?;
    let report = execute(
        storage,
        &mut set,
        &plan,
        prepared.as_ref(),
        options,
        &Within(progress),
    )
    .map_err(|e| unfinished(e, path, options, ""))?;
    progress.finish();
    Ok(SyncOutcome {
        plan,
        report: Some(report),
    })
}

/// `error`, which stopped a sync of `path` after its first write, with the
/// command that finishes the job: the same sync run again (`extra` adds
/// options such as `--verify`), which recognises what this run left (its
/// invalidated headers, the parts it created) and repeats the same plan.
pub(crate) fn unfinished(error: Error, path: &Path, options: &SyncOptions, extra: &str) -> Error {
    if matches!(error, Error::Unfinished { .. }) {
        return error;
    }
    let mut command = String::from("poolsync sync");
    if options.bad_blocks {
        command.push_str(" -b");
    }
    if let Some(n) = options.source {
        command.push_str(&format!(" --source {n}"));
    }
    command.push_str(extra);
    command.push_str(&format!(" {}", path.display()));
    Error::Unfinished {
        command,
        error: Box::new(error),
    }
}

/// Progress of a part of a longer run: advances go through, the start and
/// the end are the whole run's.
pub(crate) struct Within<'a>(pub &'a dyn Progress);

impl Progress for Within<'_> {
    fn advance(&self, bytes: u64) {
        self.0.advance(bytes);
    }
}

/// Before anything is written: learns exactly what `plan` (and `more`,
/// further steps of the same run on the same set, such as a verify
/// repair) will overwrite of data the replicas already hold, and, unless
/// `--no-undo`, plans the undo file that will save it ([`Plan::undo`]),
/// refusing when the file system lacks the room. A dry run learns the same
/// and writes nothing.
pub fn prepare<S: Storage>(
    storage: &S,
    set: &OpenSet<S::File>,
    plan: &mut Plan,
    more: &[Step],
    options: &SyncOptions,
    progress: &dyn Progress,
) -> Result<Option<Prepared>, Error> {
    settle_displaced_names(storage, plan)?;
    check_entries(storage, &set.path, plan.steps.iter().chain(more))?;
    let parts = new_parts(plan.steps.iter().chain(more));
    if let Err(short) = crate::space::check(storage, &parts)? {
        return Err(Error::CannotSync {
            set: set.path.clone(),
            reason: format!("{short}; nothing was written: free some space"),
        });
    }
    let overwrites = |s: &Step| {
        matches!(s, Step::CompareAndCopy(_))
            || matches!(s, Step::CopyRange(d) if d.purpose == DataPurpose::Verify)
    };
    if !options.undo || !plan.steps.iter().chain(more).any(overwrites) {
        return Ok(None);
    }
    let table: Vec<&dyn Endpoint> = set.replicas.iter().map(|r| r as &dyn Endpoint).collect();
    let mut alternates = plan.alternates.clone();
    alternates.push(plan.source);
    let run = RunOptions {
        alternates: &alternates,
        tuning: options.tuning(),
        progress,
        prepared: None,
    };
    let mut prepared = crate::exec::survey(storage, &set.path, &plan.steps, &table, run)?;
    if !more.is_empty() {
        prepared.extend(crate::exec::survey(storage, &set.path, more, &table, run)?);
    }
    let target = undo_target(storage, set, plan)?;
    plan.undo = Some(crate::undo::plan(
        storage,
        &target,
        &table,
        &prepared.overwrites,
        &parts,
    )?);
    prepared.target = Some(target);
    Ok(Some(prepared))
}

/// Gives every file the plan moves aside a name nothing has yet:
/// `<name>.poolsync-displaced-<time>`, with `-2`, `-3`, … added when that
/// is taken (as undo files' names are).
fn settle_displaced_names<S: Storage>(storage: &S, plan: &mut Plan) -> Result<(), Error> {
    for step in &mut plan.steps {
        if let Step::DisplacePart { to, .. } = step {
            let base = to.as_os_str().to_owned();
            let mut n = 2;
            while storage.stat(to)?.is_some() {
                let mut name = base.clone();
                name.push(format!("-{n}"));
                *to = name.into();
                n += 1;
            }
        }
    }
    Ok(())
}

/// The parts `steps` create, as files the free-space check counts: each
/// is allocated whole, so that no write into it can fail for want of
/// space later (one that replaces a file needs only the difference).
fn new_parts<'a>(steps: impl Iterator<Item = &'a Step>) -> Vec<crate::space::NewFile<'a>> {
    steps
        .filter_map(|step| match step {
            Step::CreatePart {
                path,
                size,
                replace,
                ..
            } => Some(crate::space::NewFile {
                path,
                size: *size,
                replace: *replace,
                what: "the new parts",
            }),
            _ => None,
        })
        .collect()
}

/// Refuses the sync when a file its steps replace, move aside, create or
/// delete could not be (a read-only mount, a directory not writable by
/// this user, an immutable file; see [`crate::obstacles`]), before
/// anything is written: otherwise a sync could invalidate a replica's
/// headers and then fail to recreate its part.
fn check_entries<'a, S: Storage>(
    storage: &S,
    set: &Path,
    steps: impl Iterator<Item = &'a Step>,
) -> Result<(), Error> {
    use crate::obstacles::{check, Change};
    let mut changes = Vec::new();
    for step in steps {
        match step {
            Step::DisplacePart { path, .. } => changes.push(Change::MoveAside(path)),
            Step::CreatePart { path, replace, .. } => changes.push(if *replace {
                Change::Replace(path)
            } else {
                Change::Create(path)
            }),
            Step::RemoveRecoveryFiles { paths } => {
                changes.extend(paths.iter().map(|p| Change::Delete(p)));
            }
            Step::SaveRecoveryFiles { files } => {
                changes.extend(files.iter().map(|f| Change::CreateAndDelete(&f.path)));
            }
            _ => {}
        }
    }
    check(storage, changes)?.map_err(|blocked| Error::CannotSync {
        set: set.to_path_buf(),
        reason: format!("{blocked}; nothing was written"),
    })
}

/// Where the undo file of a sync of `set` goes, and the pool it belongs to.
fn undo_target<S: Storage>(
    storage: &S,
    set: &OpenSet<S::File>,
    plan: &Plan,
) -> Result<UndoTarget, Error> {
    let uuid = set
        .part(plan.source, 0)
        .and_then(|p| p.header())
        .map(|h| h.poolset_uuid)
        .ok_or_else(|| Error::InvalidRequest {
            path: set.path.clone(),
            reason: format!("replica {} part 0: no pool header", plan.source),
        })?;
    Ok(UndoTarget {
        set_path: crate::load::absolute(storage, &set.path),
        poolset_uuid: uuid,
    })
}

/// Runs `plan` on `set`, which must be the set the plan was made from,
/// opened read-write, using what [`prepare`] learnt (when it ran: the undo
/// file is written first). Returns what was done.
pub fn execute<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    plan: &Plan,
    prepared: Option<&Prepared>,
    options: &SyncOptions,
    progress: &dyn Progress,
) -> Result<SyncReport, Error> {
    if set.path != plan.path || set.access != Access::ReadWrite {
        return Err(Error::InvalidRequest {
            path: set.path.clone(),
            reason: "the plan belongs to another pool set, or the set is not open read-write"
                .to_string(),
        });
    }
    progress.start(plan.totals.bytes_to_copy + plan.totals.bytes_to_compare);
    // A block the source cannot read comes from another healthy replica.
    let mut alternates = plan.alternates.clone();
    alternates.push(plan.source);
    let options = RunOptions {
        alternates: &alternates,
        tuning: options.tuning(),
        progress,
        prepared,
    };
    let mut endpoints = Endpoints::of(set);
    let undo = match prepared {
        Some(p) => Some(crate::exec::save_undo(
            storage, &plan.path, &endpoints, p, options,
        )?),
        None => None,
    };
    let mut report = crate::exec::run(storage, &plan.path, &plan.steps, &mut endpoints, options)?;
    // The comparing was done before the undo file was written.
    report.data_micros += prepared.map_or(0, |p| p.data_micros);
    report.undo = undo;
    progress.finish();
    Ok(report)
}

/// Opens the pool set for a sync, retrying for [`SyncOptions::wait_lock`]
/// while another process holds a lock.
pub fn open_for_sync<S: Storage>(
    storage: &S,
    path: &Path,
    options: &SyncOptions,
) -> Result<OpenSet<S::File>, Error> {
    let clock = storage.clock();
    let started = clock.elapsed();
    loop {
        match open_once(storage, path, options.dry_run) {
            Err(Error::Storage(e @ poolsync_pmem::Error::Locked { .. })) => {
                let Some(wait) = options.wait_lock else {
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

/// One attempt: open everything read-only (which reads the headers), then
/// reopen each part read-write. A part that cannot be opened read-write is
/// inaccessible (libpmempool's `access(R_OK|W_OK)` check), in a dry run as
/// in a real one; a dry run then goes back to a read-only handle, so that
/// it never holds a file open for writing.
fn open_once<S: Storage>(
    storage: &S,
    path: &Path,
    dry_run: bool,
) -> Result<OpenSet<S::File>, Error> {
    let mut set = open(storage, path, Access::ReadOnly)?;
    check_shape(&set)?;
    for replica in &mut set.replicas {
        for part in &mut replica.parts {
            if part.file.is_none() {
                continue;
            }
            // Release our read-only lock, then take a read-write one.
            part.file = None;
            match storage.open(&part.path, Access::ReadWrite) {
                Ok(file) if dry_run => {
                    drop(file);
                    part.file = Some(storage.open(&part.path, Access::ReadOnly)?);
                }
                Ok(file) => part.file = Some(file),
                Err(e @ poolsync_pmem::Error::Locked { .. }) => return Err(Error::Storage(e)),
                Err(e) => {
                    part.status = PartStatus::Inaccessible {
                        reason: format!("not writable: {e}"),
                    };
                    if !matches!(part.header, HeaderState::None) {
                        part.header = HeaderState::NotRead;
                    }
                }
            }
        }
    }
    set.access = if dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    Ok(set)
}

/// The checks before planning, on a set [`open_for_sync`] opened (which
/// checked its shape): the directories of all parts, the health check,
/// and bad blocks.
pub fn survey<S: Storage>(
    storage: &S,
    set: &OpenSet<S::File>,
    options: &SyncOptions,
) -> Result<Survey, Error> {
    for part in set.parts() {
        // The directory of the part, and of the file a symbolic link to
        // nothing names, which is where a missing part is created.
        let paths = std::iter::once(&part.path).chain(part.link_target.as_ref());
        for path in paths {
            let dir: PathBuf = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let ok = dir.as_os_str().is_empty()
                || storage
                    .stat(&dir)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.kind == FileKind::Directory);
            if ok {
                continue;
            }
            if path == &part.path {
                return Err(Error::PartDirectory {
                    set: set.path.clone(),
                    line: part.line,
                    replica: part.replica,
                    part: part.index,
                    dir,
                });
            }
            return Err(Error::LinkDirectory {
                set: set.path.clone(),
                line: part.line,
                replica: part.replica,
                part: part.index,
                link: part.path.clone(),
                target: path.clone(),
            });
        }
    }
    let health = inspect(set);
    let bad_blocks = badblocks::scan(
        storage,
        set,
        &health,
        badblocks::ScanOptions {
            bad_blocks: options.bad_blocks,
            query: options.bad_block_query.as_ref(),
        },
    )?;
    Ok(Survey {
        health,
        bad_blocks,
        now: storage.clock().unix_seconds(),
    })
}

/// Pool size and parts of `set` in one line, for messages: `replica R part
/// P (path)`.
pub fn part_name<F: PartFile>(set: &OpenSet<F>, replica: usize, part: usize) -> String {
    set.part(replica, part)
        .map_or_else(|| format!("replica {replica} part {part}"), |p| p.name())
}
