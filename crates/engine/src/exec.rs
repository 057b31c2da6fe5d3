//! The one executor: carries out the steps of a plan (a sync's, a
//! transform's, a verify repair's) from endpoint to endpoint.
//!
//! [`run`] takes the steps in order. Steps that change the file system
//! (create a part, set a mode, sync a directory, save or remove recovery
//! files) act on the set being written; every data and header step acts on
//! [`Endpoint`]s, named by their number in the plan ([`Endpoints`]).
//!
//! Consecutive data steps form one batch: their ranges are cut into jobs of
//! at most [`JOB_LEN`] bytes, which run in parallel (rayon; one worker runs
//! them in order, which the crash-point tests rely on), each with stride
//! sized buffers, so memory stays bounded whatever the pool size. A copy
//! writes what it reads; a compare-and-copy compares each stride through
//! `diff_stride` (bytes, or digests when a side is far away) and hands
//! the differing runs to one writer thread through a bounded queue (see
//! `write_behind`). After a batch, once the writer is done, every endpoint
//! it wrote is fenced, so data is durable before any header that follows
//! in the plan.
//!
//! A read of the source that fails with an I/O error (`EIO`, what a bad
//! block of persistent memory or a failing disk returns) is retried block
//! by block, and each block the source cannot provide is read from the
//! run's alternates, in order; a block no endpoint can provide stops the
//! run. A read of the *target* that fails while comparing counts as a
//! difference: the source's bytes are written over it.

mod steps;
mod write_behind;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use poolsync_header::PoolHdr;
use poolsync_pmem::{PartFile, Storage};
use rayon::prelude::*;
use serde::Serialize;

use crate::badblocks::save_recovery_files;
use crate::compare::{
    diff_stride, effective_stride, AlignedBuf, Counter, LogicalRange, Mode, Scratch, Seen, Stride,
    BLOCK, JOB_LEN,
};
use crate::durable;
use crate::endpoint::{Endpoint, HeaderWrite};
use crate::open::{HeaderState, OpenSet, PartStatus};
use crate::Error;

pub use crate::progress::{NoProgress, Progress};
pub use crate::undo::Overwrite;
pub(crate) use steps::{data_steps, ser_mode};
pub use steps::{totals, DataPurpose, DataStep, HeaderAction, HeaderStep, Step, Totals};
use write_behind::{Queue, Repair};

/// A range read from another endpoint because reading the source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReadFallback {
    /// The endpoint whose read failed.
    pub replica: usize,
    /// Logical offset of the range.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// The endpoint it was read from instead.
    pub from_replica: usize,
}

/// A file moved out of a part's place ([`Step::DisplacePart`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Displaced {
    /// Where it was: the part's path.
    pub path: PathBuf,
    /// Where it is now.
    pub to: PathBuf,
}

/// What [`run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExecReport {
    /// Parts created anew.
    pub parts_created: u64,
    /// Files moved aside from a part's place (they did not carry the
    /// pool set's UUID), in the order they were moved.
    pub parts_displaced: Vec<Displaced>,
    /// Bytes copied in full (rebuilt parts and bad blocks).
    pub bytes_copied: u64,
    /// Bytes compared with the source.
    pub bytes_compared: u64,
    /// Bytes of differing blocks found while comparing (and written).
    pub bytes_differing: u64,
    /// All data bytes written: `bytes_copied + bytes_differing`.
    pub bytes_written: u64,
    /// Headers written.
    pub headers_written: u64,
    /// Headers invalidated before their replica was repaired.
    pub headers_invalidated: u64,
    /// Modes set.
    pub modes_set: u64,
    /// Recovery files saved.
    pub recovery_files_saved: u64,
    /// Recovery files removed.
    pub recovery_files_removed: u64,
    /// Ranges read from another endpoint after a read error.
    pub read_fallbacks: Vec<ReadFallback>,
    /// Wall time of the data steps' copies and comparisons (reading,
    /// comparing, writing), in microseconds: how fast the comparer ran.
    /// A sync that wrote an undo file adds its survey's comparing
    /// ([`Prepared::data_micros`]).
    pub data_micros: u64,
    /// Wall time of making the data steps durable (the fences that follow
    /// them), in microseconds.
    pub persist_micros: u64,
    /// The undo file that saved the bytes the run overwrote, if one was
    /// written.
    pub undo: Option<crate::undo::UndoSummary>,
}

/// How the data steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Bytes read from each side per comparison or copy step.
    pub stride: usize,
    /// Worker threads (1: in order, on the calling thread).
    pub threads: usize,
}

/// The endpoints a plan's steps name, by number: the replicas of the set
/// being written first (`0..n`, where parts are created), then `extra`
/// (`n..`), such as a transform's temporary copy or its source.
#[derive(Debug)]
pub struct Endpoints<'a, F> {
    /// The set the plan writes.
    pub set: &'a mut OpenSet<F>,
    /// Further endpoints, numbered on from the set's replicas.
    pub extra: Vec<&'a dyn Endpoint>,
}

impl<'a, F: PartFile> Endpoints<'a, F> {
    /// The replicas of `set`, and no more.
    pub fn of(set: &'a mut OpenSet<F>) -> Self {
        Endpoints {
            set,
            extra: Vec::new(),
        }
    }

    /// Every endpoint, by number.
    fn table(&self) -> Vec<&dyn Endpoint> {
        self.set
            .replicas
            .iter()
            .map(|r| r as &dyn Endpoint)
            .chain(self.extra.iter().copied())
            .collect()
    }
}

/// How a run goes, besides its steps.
#[derive(Clone, Copy)]
pub struct RunOptions<'a> {
    /// Endpoints to read a block from, in this order, when the source of a
    /// data step cannot read it (`EIO`).
    pub alternates: &'a [usize],
    /// Stride and workers.
    pub tuning: Tuning,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
    /// What [`survey`] learnt before the run: its compare-and-copy steps
    /// then copy the differing runs found, without comparing again.
    pub prepared: Option<&'a Prepared>,
}

/// What a run will overwrite, learnt before it writes anything
/// ([`survey`]): an undo file saves the old bytes, and the run then copies
/// exactly these ranges.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The differing runs of each compare-and-copy step, by the endpoint
    /// it writes and its first logical offset.
    diffs: BTreeMap<(usize, u64), Vec<LogicalRange>>,
    /// Every range overwritten, sorted by endpoint and offset.
    pub overwrites: Vec<Overwrite>,
    /// Bytes compared to find them.
    pub bytes_compared: u64,
    /// Wall time of comparing them, in microseconds: the run, which then
    /// only copies, adds it to its `data_micros`.
    pub data_micros: u64,
    /// Where the undo file that saves the overwritten bytes goes.
    pub target: Option<crate::undo::UndoTarget>,
}

impl Prepared {
    /// Bytes overwritten, in all.
    pub fn bytes(&self) -> u64 {
        self.overwrites.iter().map(|o| o.range.len).sum()
    }

    /// What a survey of the compare-and-copy steps of `steps` would find
    /// when the ranges that differ are known already (`known`, ascending,
    /// not overlapping: the blocks changed since the epoch a remote
    /// replica's sync mark proves, `docs/format.md` §26.5): each step's
    /// share of them, nothing compared.
    pub fn from_known(steps: &[Step], known: &[LogicalRange]) -> Prepared {
        let mut prepared = Prepared::default();
        for step in steps {
            let Step::CompareAndCopy(d) = step else {
                continue;
            };
            let here = LogicalRange::new(d.logical, d.len);
            for range in known.iter().filter_map(|r| r.intersect(&here)) {
                let list = prepared.diffs.entry((d.replica, d.logical)).or_default();
                crate::compare::push_merged(list, range);
                prepared.overwrites.push(Overwrite {
                    target: d.replica,
                    source: d.from_replica,
                    range,
                });
            }
        }
        prepared
            .overwrites
            .sort_by_key(|o| (o.target, o.range.offset));
        prepared
    }

    /// Adds what another survey found (of other steps).
    pub fn extend(&mut self, other: Prepared) {
        self.diffs.extend(other.diffs);
        self.overwrites.extend(other.overwrites);
        self.overwrites.sort_by_key(|o| (o.target, o.range.offset));
        self.bytes_compared += other.bytes_compared;
        self.data_micros += other.data_micros;
        self.target = self.target.take().or(other.target);
    }
}

impl std::fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("alternates", &self.alternates)
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

/// Carries out `steps` in order on `endpoints`; `plan_path` names the plan
/// in errors. Returns what was done.
pub fn run<S: Storage>(
    storage: &S,
    plan_path: &Path,
    steps: &[Step],
    endpoints: &mut Endpoints<'_, S::File>,
    options: RunOptions<'_>,
) -> Result<ExecReport, Error> {
    // The pool may change: a sync mark of its set file, which a remote
    // host keeps to prove what the pool holds, no longer does
    // (docs/wire.md section 9).
    if !steps.is_empty() {
        crate::remote::mark::forget(storage, plan_path)?;
    }
    let mut report = ExecReport::default();
    let mut i = 0;
    while let Some(step) = steps.get(i) {
        if step.is_data() {
            let end = steps[i..]
                .iter()
                .position(|s| !s.is_data())
                .map_or(steps.len(), |n| i + n);
            let batch = steps.get(i..end).unwrap_or_default();
            let table = endpoints.table();
            run_batch_with(
                storage,
                plan_path,
                &table,
                batch,
                options,
                &mut report,
                None,
            )?;
            i = end;
            continue;
        }
        run_step(storage, plan_path, step, endpoints, &mut report)?;
        i += 1;
    }
    report.bytes_written = report.bytes_copied + report.bytes_differing;
    Ok(report)
}

/// Learns, without writing anything, what the data steps of `steps` will
/// write over bytes their endpoints already hold: the differing runs of
/// every compare-and-copy step (compared exactly as the run compares, read
/// errors included) and the whole range of every verify copy. Copies into
/// parts a plan creates overwrite nothing and are left out.
pub fn survey<S: Storage>(
    storage: &S,
    plan_path: &Path,
    steps: &[Step],
    table: &[&dyn Endpoint],
    options: RunOptions<'_>,
) -> Result<Prepared, Error> {
    let data: Vec<Step> = steps
        .iter()
        .filter(|s| match s {
            Step::CompareAndCopy(_) => true,
            Step::CopyRange(d) => d.purpose == DataPurpose::Verify,
            _ => false,
        })
        .cloned()
        .collect();
    let found = Mutex::new(Vec::new());
    let mut report = ExecReport::default();
    let options = RunOptions {
        prepared: None,
        ..options
    };
    run_batch_with(
        storage,
        plan_path,
        table,
        &data,
        options,
        &mut report,
        Some(&found),
    )?;
    let mut found = found
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    found.sort_by_key(|f: &Found| (f.target, f.step, f.range.offset));
    let mut prepared = Prepared {
        bytes_compared: report.bytes_compared,
        data_micros: report.data_micros,
        ..Prepared::default()
    };
    for f in found {
        let list = prepared.diffs.entry((f.target, f.step)).or_default();
        crate::compare::push_merged(list, f.range);
        match prepared.overwrites.last_mut() {
            Some(last)
                if last.target == f.target
                    && last.source == f.source
                    && last.range.end() == f.range.offset =>
            {
                last.range = LogicalRange::from_bounds(last.range.offset, f.range.end());
            }
            _ => prepared.overwrites.push(Overwrite {
                target: f.target,
                source: f.source,
                range: f.range,
            }),
        }
    }
    Ok(prepared)
}

/// Writes the undo file of `prepared` (`crate::undo::save`) before the
/// run writes anything: the new bytes are read as the run will read them,
/// falling back to the run's alternates.
pub fn save_undo<S: Storage>(
    storage: &S,
    plan_path: &Path,
    endpoints: &Endpoints<'_, S::File>,
    prepared: &Prepared,
    options: RunOptions<'_>,
) -> Result<crate::undo::UndoSummary, Error> {
    let target = prepared
        .target
        .as_ref()
        .ok_or_else(|| Error::InvalidRequest {
            path: plan_path.to_path_buf(),
            reason: "the survey names no undo file".to_string(),
        })?;
    let table = endpoints.table();
    let tally = Tally::default();
    let queue = Queue::inline(&table);
    let batch = Batch {
        survey: None,
        plan_path,
        table: &table,
        options,
        stride: effective_stride(options.tuning.stride),
        tally: &tally,
        queue: &queue,
    };
    let read_new = |source: usize, logical: u64, buf: &mut [u8]| {
        batch.read_from(source, usize::MAX, logical, buf)
    };
    crate::undo::save(storage, target, &table, &prepared.overwrites, &read_new)
}

/// A range a survey found the run will overwrite.
#[derive(Debug, Clone, Copy)]
struct Found {
    target: usize,
    source: usize,
    /// The step's first logical offset (with `target`, its key).
    step: u64,
    range: LogicalRange,
}

impl Step {
    /// A copy or a compare.
    fn is_data(&self) -> bool {
        matches!(self, Step::CopyRange(_) | Step::CompareAndCopy(_))
    }
}

/// One step that is not a data step.
fn run_step<S: Storage>(
    storage: &S,
    plan_path: &Path,
    step: &Step,
    endpoints: &mut Endpoints<'_, S::File>,
    report: &mut ExecReport,
) -> Result<(), Error> {
    match step {
        Step::RemoveRecoveryFiles { paths } => {
            for path in paths {
                if durable::remove_if_exists(storage, path)? {
                    report.recovery_files_removed += 1;
                }
            }
        }
        Step::SaveRecoveryFiles { files } => {
            report.recovery_files_saved += save_recovery_files(storage, files)? as u64;
        }
        Step::InvalidateHeader { replica, part, .. } => {
            let table = endpoints.table();
            let ep = endpoint(&table, plan_path, *replica)?;
            let stored = match ep.headers().get(*part) {
                Some(HeaderState::Read(h)) => h.hdr.checksum,
                _ => {
                    return Err(Error::InvalidRequest {
                        path: plan_path.to_path_buf(),
                        reason: format!("{} part {part}: no header to invalidate", ep.name()),
                    })
                }
            };
            ep.write_header(*part, &HeaderWrite::Checksum { value: !stored })?;
            report.headers_invalidated += 1;
        }
        Step::CreatePart { replica, part, .. } if *replica >= endpoints.set.replicas.len() => {
            // An endpoint with files of its own (a remote replica).
            let Step::CreatePart { replace, .. } = step else {
                return Ok(());
            };
            let table = endpoints.table();
            endpoint(&table, plan_path, *replica)?.create_part(*part, *replace)?;
            report.parts_created += 1;
        }
        Step::SetMode {
            replica,
            part,
            mode,
            ..
        } if *replica >= endpoints.set.replicas.len() => {
            let table = endpoints.table();
            endpoint(&table, plan_path, *replica)?.set_mode(*part, *mode)?;
            report.modes_set += 1;
        }
        Step::DisplacePart {
            replica,
            part,
            path,
            to,
            ..
        } => {
            let slot = endpoints
                .set
                .replicas
                .get_mut(*replica)
                .and_then(|r| r.parts.get_mut(*part))
                .ok_or_else(|| no_part(plan_path, *replica, *part))?;
            // rename(2) would replace a file at `to`: never.
            if storage.stat(to)?.is_some() {
                return Err(Error::InvalidRequest {
                    path: plan_path.to_path_buf(),
                    reason: format!(
                        "cannot move {} aside: {} exists (it appeared after the plan was made); run the sync again",
                        path.display(),
                        to.display()
                    ),
                });
            }
            slot.file = None;
            storage.rename(path, to)?;
            storage.fsync_parent(path)?;
            report.parts_displaced.push(Displaced {
                path: path.clone(),
                to: to.clone(),
            });
        }
        Step::CreatePart {
            replica,
            part,
            path,
            size,
            replace,
        } => {
            let slot = endpoints
                .set
                .replicas
                .get_mut(*replica)
                .and_then(|r| r.parts.get_mut(*part))
                .ok_or_else(|| no_part(plan_path, *replica, *part))?;
            slot.file = None;
            let file = if storage.device_dax(path)?.is_some() {
                // A Device DAX is never unlinked or allocated: it is
                // overwritten in place (docs/format.md §25.3).
                storage.open(path, poolsync_pmem::Access::ReadWrite)?
            } else {
                if *replace {
                    // Unlinked while our lock is held, as libpmempool does (a
                    // transform may have deleted it already, as a stale
                    // leftover of an interrupted run).
                    durable::remove_if_exists(storage, path)?;
                }
                let file = storage.create(path, *size)?;
                // The first fence makes the allocation durable.
                file.fence()?;
                file
            };
            slot.file = Some(file);
            slot.status = PartStatus::Ok;
            // A new file's header page is zero until its header is written.
            if !matches!(slot.header, HeaderState::None) {
                slot.header = HeaderState::NotRead;
            }
            report.parts_created += 1;
        }
        Step::SetMode { path, mode, .. } => {
            // A device node keeps its mode: it was not created here.
            if storage.device_dax(path)?.is_none() {
                storage.set_mode(path, *mode)?;
                report.modes_set += 1;
            }
        }
        Step::SyncDirectory { path } => storage.fsync_dir(path)?,
        Step::WriteHeader(h) => {
            let table = endpoints.table();
            write_header(endpoint(&table, plan_path, h.replica)?, h)?;
            report.headers_written += 1;
        }
        Step::CopyRange(_) | Step::CompareAndCopy(_) => {}
    }
    Ok(())
}

/// Writes a whole header and makes it durable. A new header's crtime is
/// the file's ctime now, as PMDK takes it.
fn write_header(ep: &dyn Endpoint, h: &HeaderStep) -> Result<(), Error> {
    let mut header: PoolHdr = h.header.clone();
    let stamp_crtime = h.kind == HeaderAction::New;
    if !stamp_crtime {
        header.checksum = header.compute_checksum();
    }
    ep.write_header(
        h.part,
        &HeaderWrite::Whole {
            header: Box::new(header),
            stamp_crtime,
        },
    )
}

fn no_part(plan_path: &Path, replica: usize, part: usize) -> Error {
    Error::InvalidRequest {
        path: plan_path.to_path_buf(),
        reason: format!("replica {replica} part {part}: not in the pool set"),
    }
}

fn endpoint<'t>(
    table: &[&'t dyn Endpoint],
    plan_path: &Path,
    id: usize,
) -> Result<&'t dyn Endpoint, Error> {
    table.get(id).copied().ok_or_else(|| Error::InvalidRequest {
        path: plan_path.to_path_buf(),
        reason: format!("the plan names endpoint {id}, which it was not given"),
    })
}

/// Whole microseconds of `d` (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One piece of a data step, small enough to share among workers.
struct Job<'a> {
    step: &'a DataStep,
    compare: bool,
    /// Offset of the piece within the step.
    at: u64,
    len: u64,
}

/// Counters a batch's workers share.
#[derive(Default)]
struct Tally {
    copied: Counter,
    compared: Counter,
    differing: Counter,
    fallbacks: Mutex<Vec<ReadFallback>>,
}

/// What every job of a batch shares.
struct Batch<'a> {
    /// A survey: differing runs are noted here instead of written.
    survey: Option<&'a Mutex<Vec<Found>>>,
    plan_path: &'a Path,
    table: &'a [&'a dyn Endpoint],
    options: RunOptions<'a>,
    stride: usize,
    tally: &'a Tally,
    queue: &'a Queue<'a>,
}

/// Runs one batch of data steps; with `survey`, only notes what they would
/// overwrite.
fn run_batch_with<S: Storage>(
    storage: &S,
    plan_path: &Path,
    table: &[&dyn Endpoint],
    batch: &[Step],
    options: RunOptions<'_>,
    report: &mut ExecReport,
    survey: Option<&Mutex<Vec<Found>>>,
) -> Result<(), Error> {
    let mut jobs = Vec::new();
    for step in batch {
        let (d, compare) = match step {
            Step::CopyRange(d) => (d, false),
            Step::CompareAndCopy(d) => (d, true),
            _ => continue,
        };
        let mut at = 0;
        while at < d.len {
            let len = (d.len - at).min(JOB_LEN);
            jobs.push(Job {
                step: d,
                compare,
                at,
                len,
            });
            at += len;
        }
    }
    let tally = Tally::default();
    let stride = effective_stride(options.tuning.stride);
    let clock = storage.clock();
    let started = clock.elapsed();
    let work = |queue: &Queue<'_>| {
        let shared = Batch {
            survey,
            plan_path,
            table,
            options,
            stride,
            tally: &tally,
            queue,
        };
        let job = |job: &Job<'_>| shared.run_job(job);
        if options.tuning.threads <= 1 {
            jobs.iter().try_for_each(job)
        } else {
            rayon::ThreadPoolBuilder::new()
                .num_threads(options.tuning.threads)
                .build()
                .map_err(|_| Error::InvalidOptions {
                    reason: "cannot start the worker threads",
                })
                .and_then(|pool| pool.install(|| jobs.par_iter().try_for_each(job)))
        }
    };
    // Repairs found by comparing go to a writer thread (see `write_behind`)
    // when several workers compare; whole copies are written by the workers
    // themselves.
    let (worked, written) = if options.tuning.threads <= 1 {
        (work(&Queue::inline(table)), Ok(()))
    } else {
        let (queue, repairs) = Queue::new(stride);
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| write_behind::write_all(table, repairs));
            let worked = work(&queue);
            // The queue closes here: the writer finishes what it holds.
            drop(queue);
            let written = writer.join().unwrap_or(Err(Error::WriterStopped));
            (worked, written)
        })
    };
    // The writer's own error explains a worker's `WriterStopped`.
    written?;
    worked?;
    let fencing = clock.elapsed();
    report.data_micros += micros(fencing.saturating_sub(started));
    // Every endpoint written is fenced before anything later in the plan.
    let written: BTreeSet<usize> = jobs.iter().map(|j| j.step.replica).collect();
    for id in written.into_iter().filter(|_| survey.is_none()) {
        if let Some(ep) = table.get(id) {
            ep.fence()?;
        }
    }
    report.persist_micros += micros(clock.elapsed().saturating_sub(fencing));
    report.bytes_copied += tally.copied.get();
    report.bytes_compared += tally.compared.get();
    report.bytes_differing += tally.differing.get();
    let mut fallbacks = tally
        .fallbacks
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    fallbacks.sort_by_key(|f| (f.replica, f.offset));
    report.read_fallbacks.extend(fallbacks);
    Ok(())
}

impl Batch<'_> {
    fn endpoint(&self, id: usize) -> Result<&dyn Endpoint, Error> {
        self.table
            .get(id)
            .copied()
            .ok_or_else(|| Error::InvalidRequest {
                path: self.plan_path.to_path_buf(),
                reason: format!("a data step names endpoint {id}, which the run was not given"),
            })
    }

    fn run_job(&self, job: &Job<'_>) -> Result<(), Error> {
        let d = job.step;
        if let Some(diffs) = self.prepared_diffs(d) {
            return self.copy_prepared(job, diffs);
        }
        if self.survey.is_some() && !job.compare {
            // A verify copy overwrites its whole range.
            self.note(d, LogicalRange::new(d.logical + job.at, job.len));
            return Ok(());
        }
        let dst = self.endpoint(d.replica)?;
        let src = self.endpoint(d.from_replica)?;
        if job.compare && src.prefers_digests() && !dst.prefers_digests() {
            return self.pull(job, src, dst);
        }
        let mode = Mode::for_sides(src, dst);
        let cap = usize::try_from(job.len.min(self.stride as u64)).unwrap_or(self.stride);
        // Page-aligned buffers: `pread` copies into them much faster on some
        // CPUs (see `AlignedBuf`).
        let mut src_buf = AlignedBuf::new(cap);
        let mut scratch = Scratch::new(if job.compare { cap } else { 0 });
        let mut pos = job.at;
        let end = job.at + job.len;
        while pos < end {
            let n = usize::try_from((end - pos).min(cap as u64)).unwrap_or(cap);
            let logical = d.logical + pos;
            let bytes = src_buf.get_mut(n);
            self.read_source(d, logical, bytes)?;
            if job.compare {
                self.tally.compared.add(n as u64);
                let mut repair = Repair::new(d.replica);
                let stride = Stride {
                    pos: logical,
                    bytes,
                    live: &[(0, n)],
                };
                let seen = diff_stride(stride, dst, mode, &mut scratch, |at, lo, hi| {
                    repair.push(at, bytes.get(lo..hi).unwrap_or_default());
                    Ok(())
                })?;
                if let Seen::Unreadable(_) = seen {
                    // An unreadable target range is replaced whole.
                    repair = Repair::new(d.replica);
                    repair.push(logical, bytes);
                }
                self.tally.differing.add(repair.len());
                if self.survey.is_some() {
                    for range in repair.ranges() {
                        self.note(d, range);
                    }
                } else {
                    self.queue.send(repair)?;
                }
            } else {
                dst.write(logical, bytes)?;
                dst.flush(logical, n as u64)?;
                self.tally.copied.add(n as u64);
            }
            self.options.progress.advance(n as u64);
            pos += n as u64;
        }
        Ok(())
    }

    /// A compare-and-copy job whose source is far away (a remote replica
    /// restoring a local one): the target's own bytes are read here and
    /// compared with the source's digests, and only the runs that differ
    /// are read from the source. A target range that cannot be read is
    /// replaced whole.
    fn pull(&self, job: &Job<'_>, src: &dyn Endpoint, dst: &dyn Endpoint) -> Result<(), Error> {
        let d = job.step;
        let cap = usize::try_from(job.len.min(self.stride as u64)).unwrap_or(self.stride);
        let mut ours = AlignedBuf::new(cap);
        let mut theirs = AlignedBuf::new(cap);
        let mut scratch = Scratch::new(0);
        let mut pos = job.at;
        let end = job.at + job.len;
        while pos < end {
            let n = usize::try_from((end - pos).min(cap as u64)).unwrap_or(cap);
            let logical = d.logical + pos;
            let bytes = ours.get_mut(n);
            let mut runs: Vec<LogicalRange> = Vec::new();
            match dst.read(logical, bytes) {
                Ok(()) => {
                    let stride = Stride {
                        pos: logical,
                        bytes,
                        live: &[(0, n)],
                    };
                    let seen =
                        diff_stride(stride, src, Mode::Digests, &mut scratch, |at, lo, hi| {
                            runs.push(LogicalRange::new(at, (hi - lo) as u64));
                            Ok(())
                        })?;
                    if let Seen::Unreadable(e) = seen {
                        return Err(e);
                    }
                }
                Err(e) if e.is_eio() => runs.push(LogicalRange::new(logical, n as u64)),
                Err(e) => return Err(e),
            }
            self.tally.compared.add(n as u64);
            let mut repair = Repair::new(d.replica);
            for run in runs {
                if self.survey.is_some() {
                    self.note(d, run);
                    self.tally.differing.add(run.len);
                    continue;
                }
                let len = usize::try_from(run.len).unwrap_or(0);
                let buf = theirs.get_mut(len);
                self.read_source(d, run.offset, buf)?;
                repair.push(run.offset, buf);
            }
            self.tally.differing.add(repair.len());
            self.queue.send(repair)?;
            self.options.progress.advance(n as u64);
            pos += n as u64;
        }
        Ok(())
    }

    /// Notes, in a survey, that `range` of the step's target is overwritten.
    fn note(&self, d: &DataStep, range: LogicalRange) {
        if let Some(found) = self.survey {
            if let Ok(mut list) = found.lock() {
                list.push(Found {
                    target: d.replica,
                    source: d.from_replica,
                    step: d.logical,
                    range,
                });
            }
        }
    }

    /// The differing runs a survey found for compare-and-copy step `d`.
    fn prepared_diffs(&self, d: &DataStep) -> Option<&[LogicalRange]> {
        if d.purpose != DataPurpose::Repair {
            return None;
        }
        let prepared = self.options.prepared?;
        Some(
            prepared
                .diffs
                .get(&(d.replica, d.logical))
                .map_or(&[][..], Vec::as_slice),
        )
    }

    /// A compare-and-copy job whose differing runs a survey found: copies
    /// those runs (the comparing was counted by the survey).
    fn copy_prepared(&self, job: &Job<'_>, diffs: &[LogicalRange]) -> Result<(), Error> {
        let d = job.step;
        let dst = self.endpoint(d.replica)?;
        let here = LogicalRange::new(d.logical + job.at, job.len);
        let mut buf = AlignedBuf::new(self.stride);
        for run in diffs.iter().filter_map(|r| r.intersect(&here)) {
            let mut pos = run.offset;
            while pos < run.end() {
                let n = usize::try_from((run.end() - pos).min(self.stride as u64))
                    .unwrap_or(self.stride);
                let bytes = buf.get_mut(n);
                self.read_source(d, pos, bytes)?;
                dst.write(pos, bytes)?;
                dst.flush(pos, n as u64)?;
                self.tally.differing.add(n as u64);
                pos += n as u64;
            }
        }
        self.tally.compared.add(job.len);
        Ok(())
    }

    /// Reads `buf.len()` bytes of the step's source at `logical`; on `EIO`
    /// goes block by block and reads each block the source cannot provide
    /// from the first alternate that can.
    fn read_source(&self, d: &DataStep, logical: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.read_from(d.from_replica, d.replica, logical, buf)
    }

    /// Reads `buf.len()` bytes of endpoint `from` at `logical`, for a write
    /// to endpoint `to`, with [`Batch::read_source`]'s fallback.
    fn read_from(&self, from: usize, to: usize, logical: u64, buf: &mut [u8]) -> Result<(), Error> {
        let src = self.endpoint(from)?;
        match src.read(logical, buf) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_eio() => {}
            Err(e) => return Err(e),
        }
        let alternates: Vec<usize> = self
            .options
            .alternates
            .iter()
            .copied()
            .filter(|&r| r != from && r != to)
            .collect();
        let note = |offset: u64, len: u64, instead: usize| {
            if let Ok(mut list) = self.tally.fallbacks.lock() {
                list.push(ReadFallback {
                    replica: from,
                    offset,
                    len,
                    from_replica: instead,
                });
            }
        };
        // Block by block: the source where it reads, an alternate elsewhere.
        let mut at = 0usize;
        while at < buf.len() {
            let l = logical + at as u64;
            let block_end = usize::try_from(l - l % BLOCK + BLOCK - logical)
                .map_or(buf.len(), |e| e.min(buf.len()));
            let chunk = buf.get_mut(at..block_end).unwrap_or_default();
            let mut ok = src.read(l, chunk).is_ok();
            if !ok {
                for &alt in &alternates {
                    let Some(other) = self.table.get(alt) else {
                        continue;
                    };
                    if other.read(l, chunk).is_ok() {
                        note(l, chunk.len() as u64, alt);
                        ok = true;
                        break;
                    }
                }
            }
            if !ok {
                return Err(Error::Uncorrectable {
                    set: self.plan_path.to_path_buf(),
                    replica: from,
                    offset: l,
                    end: l + chunk.len() as u64,
                });
            }
            at = block_end;
        }
        Ok(())
    }
}
