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
//! [`diff_stride`] (bytes, or digests when a side is far away) and hands
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

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use poolsync_header::PoolHdr;
use poolsync_pmem::{PartFile, Storage};
use rayon::prelude::*;
use serde::Serialize;

use crate::compare::{
    diff_stride, effective_stride, AlignedBuf, Counter, Mode, Scratch, Seen, Stride, BLOCK, JOB_LEN,
};
use crate::durable;
use crate::endpoint::{Endpoint, HeaderWrite};
use crate::open::{HeaderState, OpenSet, PartStatus};
use crate::sync::badblocks::save_recovery_files;
use crate::Error;

pub(crate) use steps::{data_steps, ser_mode};
pub use steps::{totals, DataPurpose, DataStep, HeaderAction, HeaderStep, Step, Totals};
use write_behind::{Queue, Repair};

/// Receives progress of a long run; every method may be called from
/// worker threads.
pub trait Progress: Send + Sync {
    /// The run starts and will copy or compare `total` bytes.
    fn start(&self, total: u64) {
        let _ = total;
    }
    /// `bytes` more bytes were copied or compared.
    fn advance(&self, bytes: u64) {
        let _ = bytes;
    }
    /// The run is over.
    fn finish(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

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

/// What [`run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExecReport {
    /// Parts created anew.
    pub parts_created: u64,
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
    pub data_micros: u64,
    /// Wall time of making the data steps durable (the fences that follow
    /// them), in microseconds.
    pub persist_micros: u64,
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
    let mut report = ExecReport::default();
    let mut i = 0;
    while let Some(step) = steps.get(i) {
        if step.is_data() {
            let end = steps[i..]
                .iter()
                .position(|s| !s.is_data())
                .map_or(steps.len(), |n| i + n);
            let batch = steps.get(i..end).unwrap_or_default();
            run_batch(storage, plan_path, endpoints, batch, options, &mut report)?;
            i = end;
            continue;
        }
        run_step(storage, plan_path, step, endpoints, &mut report)?;
        i += 1;
    }
    report.bytes_written = report.bytes_copied + report.bytes_differing;
    Ok(report)
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
            if *replace {
                // Unlinked while our lock is held, as libpmempool does (a
                // transform may have deleted it already, as a stale
                // leftover of an interrupted run).
                durable::remove_if_exists(storage, path)?;
            }
            slot.file = None;
            let file = storage.create(path, *size)?;
            // The first fence makes the allocation durable.
            file.fence()?;
            slot.file = Some(file);
            slot.status = PartStatus::Ok;
            // A new file's header page is zero until its header is written.
            if !matches!(slot.header, HeaderState::None) {
                slot.header = HeaderState::NotRead;
            }
            report.parts_created += 1;
        }
        Step::SetMode { path, mode, .. } => {
            storage.set_mode(path, *mode)?;
            report.modes_set += 1;
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
    plan_path: &'a Path,
    table: &'a [&'a dyn Endpoint],
    options: RunOptions<'a>,
    stride: usize,
    tally: &'a Tally,
    queue: &'a Queue,
}

fn run_batch<S: Storage>(
    storage: &S,
    plan_path: &Path,
    endpoints: &Endpoints<'_, S::File>,
    batch: &[Step],
    options: RunOptions<'_>,
    report: &mut ExecReport,
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
    let table = endpoints.table();
    let tally = Tally::default();
    let stride = effective_stride(options.tuning.stride);
    let clock = storage.clock();
    let started = clock.elapsed();
    // Repairs found by comparing go to a writer thread (see
    // `write_behind`); whole copies are written by the workers themselves.
    let (queue, repairs) = Queue::new(stride);
    let (worked, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_behind::write_all(&table, repairs));
        let worked = {
            let queue = queue;
            let shared = Batch {
                plan_path,
                table: &table,
                options,
                stride,
                tally: &tally,
                queue: &queue,
            };
            let work = |job: &Job<'_>| shared.run_job(job);
            if options.tuning.threads <= 1 {
                jobs.iter().try_for_each(work)
            } else {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(options.tuning.threads)
                    .build()
                    .map_err(|_| Error::InvalidOptions {
                        reason: "cannot start the worker threads",
                    })
                    .and_then(|pool| pool.install(|| jobs.par_iter().try_for_each(work)))
            }
            // The queue closes here: the writer finishes what it holds.
        };
        let written = writer.join().unwrap_or(Err(Error::WriterStopped));
        (worked, written)
    });
    // The writer's own error explains a worker's `WriterStopped`.
    written?;
    worked?;
    let fencing = clock.elapsed();
    report.data_micros += micros(fencing.saturating_sub(started));
    // Every endpoint written is fenced before anything later in the plan.
    let written: BTreeSet<usize> = jobs.iter().map(|j| j.step.replica).collect();
    for id in written {
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
        let dst = self.endpoint(d.replica)?;
        let src = self.endpoint(d.from_replica)?;
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
                self.queue.send(repair).map_err(|_| Error::WriterStopped)?;
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

    /// Reads `buf.len()` bytes of the step's source at `logical`; on `EIO`
    /// goes block by block and reads each block the source cannot provide
    /// from the first alternate that can.
    fn read_source(&self, d: &DataStep, logical: u64, buf: &mut [u8]) -> Result<(), Error> {
        let src = self.endpoint(d.from_replica)?;
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
            .filter(|&r| r != d.from_replica && r != d.replica)
            .collect();
        let note = |offset: u64, len: u64, from: usize| {
            if let Ok(mut list) = self.tally.fallbacks.lock() {
                list.push(ReadFallback {
                    replica: d.from_replica,
                    offset,
                    len,
                    from_replica: from,
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
                    replica: d.from_replica,
                    offset: l,
                    end: l + chunk.len() as u64,
                });
            }
            at = block_end;
        }
        Ok(())
    }
}
