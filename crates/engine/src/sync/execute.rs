//! Carrying out a sync plan.
//!
//! [`execute`] runs the steps of a [`Plan`] in order. Consecutive data
//! steps form one batch: their ranges are cut into jobs of at most
//! [`JOB_LEN`] bytes, which run in parallel (rayon; one worker runs them in
//! order, which the crash-point tests rely on), each with two stride-sized
//! buffers, so memory stays bounded whatever the pool size. The differing
//! blocks that comparing finds are written by one writer thread, fed
//! through a bounded queue (see `write_behind`). After a batch, once the
//! writer is done, every file it wrote is fenced, so data is durable before
//! any header that follows in the plan.
//!
//! A read of the source that fails with an I/O error (`EIO`, what a bad
//! block of persistent memory or a failing disk returns) is retried block
//! by block, and each block the source cannot provide is read from the
//! plan's alternates, the other healthy replicas, in order; a block no
//! replica can provide stops the sync. A read of the *target* that fails while comparing counts as a
//! difference: the source's bytes are written over it.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use poolsync_header::{POOL_HDR_CSUM_OFF, POOL_HDR_SIZE};
use poolsync_pmem::{Access, PartFile, Storage};
use rayon::prelude::*;
use serde::Serialize;

use crate::compare::{effective_stride, visit_runs, AlignedBuf, Counter, BLOCK, JOB_LEN};
use crate::open::{HeaderState, OpenSet, PartStatus};
use crate::sync::badblocks::save_recovery_files;
use crate::sync::plan::{DataStep, HeaderAction, HeaderStep, Plan, Step};
use crate::sync::write_behind::{self, Queue, Repair};
use crate::sync::{Progress, SyncOptions};
use crate::Error;

/// Linux's `EIO`: the error a read of a bad block returns.
const EIO: i32 = 5;

/// A range read from another replica because reading the source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReadFallback {
    /// The replica whose read failed.
    pub replica: usize,
    /// Logical offset of the range.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// The replica it was read from instead.
    pub from_replica: usize,
}

/// What [`execute`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
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
    /// Ranges read from another replica after a read error.
    pub read_fallbacks: Vec<ReadFallback>,
    /// Wall time of the data steps' copies and comparisons (reading,
    /// comparing, writing), in microseconds: how fast the comparer ran.
    pub data_micros: u64,
    /// Wall time of making the data steps durable (the fences that follow
    /// them), in microseconds.
    pub persist_micros: u64,
}

/// Runs `plan` on `set`, which must be the set the plan was made from,
/// opened read-write. Returns what was done.
pub fn execute<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    plan: &Plan,
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
    let mut report = SyncReport::default();
    let mut i = 0;
    while let Some(step) = plan.steps.get(i) {
        if matches!(step, Step::CopyRange(_) | Step::CompareAndCopy(_)) {
            let end = plan.steps[i..]
                .iter()
                .position(|s| !matches!(s, Step::CopyRange(_) | Step::CompareAndCopy(_)))
                .map_or(plan.steps.len(), |n| i + n);
            let batch = plan.steps.get(i..end).unwrap_or_default();
            run_batch(set, plan, batch, options, progress, &mut report)?;
            i = end;
            continue;
        }
        match step {
            Step::RemoveRecoveryFiles { paths } => {
                for path in paths {
                    match storage.remove(path) {
                        Ok(()) => report.recovery_files_removed += 1,
                        // Already gone (removed by hand or by an earlier run
                        // that stopped before syncing the directory).
                        Err(e) if storage.stat(path).ok().flatten().is_none() => drop(e),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Step::SaveRecoveryFiles { files } => {
                report.recovery_files_saved += save_recovery_files(storage, files)? as u64;
            }
            Step::InvalidateHeader { replica, part, .. } => {
                let p = part_of(set, *replica, *part)?;
                let stored =
                    p.header()
                        .map(|h| h.checksum)
                        .ok_or_else(|| Error::InvalidRequest {
                            path: p.path.clone(),
                            reason: "no header to invalidate".to_string(),
                        })?;
                let file = file_of(set, *replica, *part)?;
                let off = POOL_HDR_CSUM_OFF as u64;
                file.write_at(off, &(!stored).to_le_bytes())?;
                file.flush(off, 8)?;
                file.fence()?;
                report.headers_invalidated += 1;
            }
            Step::CreatePart {
                replica,
                part,
                path,
                size,
                replace,
            } => {
                let slot = set
                    .replicas
                    .get_mut(*replica)
                    .and_then(|r| r.parts.get_mut(*part))
                    .ok_or_else(|| no_part(plan, *replica, *part))?;
                if *replace {
                    // Unlinked while our lock is held, as libpmempool does.
                    storage.remove(path)?;
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
                write_header(set, h)?;
                report.headers_written += 1;
            }
            Step::CopyRange(_) | Step::CompareAndCopy(_) => {}
        }
        i += 1;
    }
    report.bytes_written = report.bytes_copied + report.bytes_differing;
    progress.finish();
    Ok(report)
}

/// Whole microseconds of `d` (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn no_part(plan: &Plan, replica: usize, part: usize) -> Error {
    Error::InvalidRequest {
        path: plan.path.clone(),
        reason: format!("replica {replica} part {part}: not in the pool set"),
    }
}

fn part_of<F: PartFile>(
    set: &OpenSet<F>,
    replica: usize,
    part: usize,
) -> Result<&crate::open::OpenPart<F>, Error> {
    set.part(replica, part)
        .ok_or_else(|| Error::InvalidRequest {
            path: set.path.clone(),
            reason: format!("replica {replica} part {part}: not in the pool set"),
        })
}

pub(super) fn file_of<F: PartFile>(
    set: &OpenSet<F>,
    replica: usize,
    part: usize,
) -> Result<&F, Error> {
    let p = part_of(set, replica, part)?;
    p.file.as_ref().ok_or_else(|| Error::PartUnusable {
        set: set.path.clone(),
        replica,
        part_index: part,
        part: p.path.clone(),
        reason: format!("not open ({})", p.status),
    })
}

/// Writes a whole header and makes it durable. A new header's crtime is
/// the file's ctime now, as PMDK takes it.
fn write_header<F: PartFile>(set: &OpenSet<F>, h: &HeaderStep) -> Result<(), Error> {
    let file = file_of(set, h.replica, h.part)?;
    let mut hdr = h.header.clone();
    if h.kind == HeaderAction::New {
        hdr.crtime = file.ctime()?;
    }
    let bytes = hdr.encode();
    file.write_at(0, &bytes)?;
    file.flush(0, POOL_HDR_SIZE as u64)?;
    file.fence()?;
    Ok(())
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

fn run_batch<F: PartFile>(
    set: &OpenSet<F>,
    plan: &Plan,
    batch: &[Step],
    options: &SyncOptions,
    progress: &dyn Progress,
    report: &mut SyncReport,
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
    let stride = effective_stride(options.stride);
    let started = Instant::now();
    // Repairs found by comparing go to a writer thread (see
    // `write_behind`); whole copies are written by the workers themselves.
    let (queue, repairs) = Queue::new(stride);
    let (worked, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_behind::write_all(set, repairs));
        let worked = {
            let queue = queue;
            let work = |job: &Job<'_>| run_job(set, plan, job, stride, &tally, &queue, progress);
            if options.threads <= 1 {
                jobs.iter().try_for_each(work)
            } else {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(options.threads)
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
    let fencing = Instant::now();
    report.data_micros += micros(fencing.duration_since(started));
    // Every written file is fenced before anything later in the plan.
    let written: BTreeSet<(usize, usize)> =
        jobs.iter().map(|j| (j.step.replica, j.step.part)).collect();
    for (r, p) in written {
        file_of(set, r, p)?.fence()?;
    }
    report.persist_micros += micros(fencing.elapsed());
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

fn run_job<F: PartFile>(
    set: &OpenSet<F>,
    plan: &Plan,
    job: &Job<'_>,
    stride: usize,
    tally: &Tally,
    queue: &Queue,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let d = job.step;
    let dst = file_of(set, d.replica, d.part)?;
    let cap = usize::try_from(job.len.min(stride as u64)).unwrap_or(stride);
    // Page-aligned buffers: `pread` copies into them much faster on some
    // CPUs (see `AlignedBuf`).
    let mut src_buf = AlignedBuf::new(cap);
    let mut dst_buf = AlignedBuf::new(if job.compare { cap } else { 0 });
    let mut pos = job.at;
    let end = job.at + job.len;
    while pos < end {
        let n = usize::try_from((end - pos).min(cap as u64)).unwrap_or(cap);
        let src = src_buf.get_mut(n);
        read_source(set, plan, d, pos, src, tally)?;
        let file_off = d.file_offset + pos;
        if job.compare {
            let tgt = dst_buf.get_mut(n);
            let readable = match dst.read_at(file_off, tgt) {
                Ok(()) => true,
                Err(e) if is_eio(&e) => false,
                Err(e) => return Err(e.into()),
            };
            tally.compared.add(n as u64);
            let mut repair = Repair::new(d.replica, d.part);
            if !readable {
                // An unreadable target range is replaced whole.
                repair.push(file_off, src);
            } else if src != tgt {
                let logical = d.logical + pos;
                visit_runs(logical, src, tgt, |run_logical, lo, hi| {
                    repair.push(
                        d.file_offset + (run_logical - d.logical),
                        src.get(lo..hi).unwrap_or_default(),
                    );
                    Ok(())
                })?;
            }
            tally.differing.add(repair.len());
            queue.send(repair).map_err(|_| Error::WriterStopped)?;
        } else {
            dst.write_at(file_off, src)?;
            dst.flush(file_off, n as u64)?;
            tally.copied.add(n as u64);
        }
        progress.advance(n as u64);
        pos += n as u64;
    }
    Ok(())
}

fn is_eio(e: &poolsync_pmem::Error) -> bool {
    match e {
        poolsync_pmem::Error::Io { source, .. } | poolsync_pmem::Error::IoAt { source, .. } => {
            source.raw_os_error() == Some(EIO)
        }
        _ => false,
    }
}

/// Reads `buf.len()` bytes of the step's source at `pos` within the step;
/// on `EIO` goes block by block and reads each block the source cannot
/// provide from the first alternate replica that can.
fn read_source<F: PartFile>(
    set: &OpenSet<F>,
    plan: &Plan,
    d: &DataStep,
    pos: u64,
    buf: &mut [u8],
    tally: &Tally,
) -> Result<(), Error> {
    let src = file_of(set, d.from_replica, d.from_part)?;
    match src.read_at(d.from_offset + pos, buf) {
        Ok(()) => return Ok(()),
        Err(e) if is_eio(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let logical = d.logical + pos;
    let alternates: Vec<usize> = plan
        .alternates
        .iter()
        .copied()
        .chain(std::iter::once(plan.source))
        .filter(|&r| r != d.from_replica && r != d.replica)
        .collect();
    let note = |offset: u64, len: u64, from: usize| {
        if let Ok(mut list) = tally.fallbacks.lock() {
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
        let block_end = {
            let l = logical + at as u64;
            let next = l - l % BLOCK + BLOCK;
            usize::try_from(next - logical).map_or(buf.len(), |e| e.min(buf.len()))
        };
        let chunk = buf.get_mut(at..block_end).unwrap_or_default();
        let l = logical + at as u64;
        let mut ok = src.read_at(d.from_offset + pos + at as u64, chunk).is_ok();
        if !ok {
            for &alt in &alternates {
                if set.read_logical(alt, l, chunk).is_ok() {
                    note(l, chunk.len() as u64, alt);
                    ok = true;
                    break;
                }
            }
        }
        if !ok {
            return Err(Error::Uncorrectable {
                set: set.path.clone(),
                replica: d.from_replica,
                offset: l,
                end: l + chunk.len() as u64,
            });
        }
        at = block_end;
    }
    Ok(())
}
