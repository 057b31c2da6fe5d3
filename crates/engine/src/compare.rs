//! Block-level comparison over logical ranges (ARCHITECTURE.md,
//! "Block-level repair").
//!
//! Replicas of one pool line up offset for offset in their logical address
//! space, so comparing them block by block tells which blocks a repair has
//! to copy. The comparer reads in large strides (1 MiB by default) with
//! fixed-size buffers, compares each stride with one `memcmp`, and only
//! where the bytes differ narrows down to [`BLOCK`] (4 KiB) blocks. Memory
//! stays bounded at two stride buffers per worker, whatever the pool size.
//! The buffers are page aligned in memory, which makes `pread`'s copy out
//! of the page cache up to three times faster on some CPUs than into a
//! plain heap allocation.
//!
//! Every comparison goes through one step, `diff_stride`: one stride of
//! the source, whose bytes the caller holds, against another
//! [`Endpoint`], over the stride's live pieces. In [`Mode::Bytes`] the
//! other side's bytes are read; in [`Mode::Digests`] only their digests
//! travel (block by block), so a comparison never needs both sides' bytes
//! in one process. The executor's compare-and-copy and [`compare_many`]
//! are both built on it.
//!
//! [`compare_many`] compares one endpoint with several others over a list
//! of logical ranges, in parallel, reading each stretch of the source once
//! for all the others (and ranges close together in one read), and returns
//! each one's differing ranges with counts; [`compare_replicas`] is the
//! case of two replicas of one set. Heap-aware verification passes them
//! the live ranges.
//!
//! Blocks are aligned to multiples of [`BLOCK`] in the logical address
//! space; a range that starts or ends inside a block compares (and reports)
//! only its own bytes of that block.

use std::sync::atomic::{AtomicU64, Ordering};

use poolsync_pmem::PartFile;
use poolsync_poolset::Extent;
use rayon::prelude::*;
use serde::Serialize;

use crate::endpoint::{digest, Digest, Endpoint};
use crate::open::OpenSet;
use crate::progress::{NoProgress, Progress};
pub use crate::range::LogicalRange;
use crate::Error;

/// The unit in which differences are reported and copied: one page.
pub const BLOCK: u64 = 4096;
/// Default bytes read from each side per comparison step.
pub const DEFAULT_STRIDE: usize = 1 << 20;
/// Largest stride accepted; larger requests are clamped to it.
pub const MAX_STRIDE: usize = 64 << 20;
/// Largest piece of a range one worker takes at a time in
/// [`compare_replicas`]; larger ranges are split so that workers share them.
pub const JOB_LEN: u64 = 16 << 20;

/// What a comparison counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CompareStats {
    /// Bytes of the compared ranges, on each side (bytes between ranges
    /// that [`compare_many`] reads only to save system calls are not
    /// counted).
    pub bytes_compared: u64,
    /// Bytes in differing blocks (a multiple of [`BLOCK`] except at range
    /// ends that are not block aligned).
    pub bytes_differing: u64,
    /// Runs of consecutive differing blocks.
    pub runs: u64,
}

impl std::ops::AddAssign for CompareStats {
    fn add_assign(&mut self, rhs: Self) {
        self.bytes_compared += rhs.bytes_compared;
        self.bytes_differing += rhs.bytes_differing;
        self.runs += rhs.runs;
    }
}

/// A stride clamped to `[BLOCK, MAX_STRIDE]` and rounded down to whole blocks.
pub fn effective_stride(stride: usize) -> usize {
    let block = BLOCK as usize;
    let clamped = stride.clamp(block, MAX_STRIDE);
    clamped - clamped % block
}

/// Calls `f(logical offset, start index, end index)` for each run of
/// differing blocks of two equally long buffers that start at logical
/// `base`. Blocks follow the logical [`BLOCK`] grid.
pub fn visit_runs<F>(base: u64, left: &[u8], right: &[u8], mut f: F) -> Result<(), Error>
where
    F: FnMut(u64, usize, usize) -> Result<(), Error>,
{
    let len = left.len().min(right.len());
    let mut run: Option<usize> = None;
    let mut i = 0usize;
    while i < len {
        let logical = base + i as u64;
        let block_end = align_down(logical + BLOCK);
        let j = usize::try_from(block_end - base).map_or(len, |e| e.min(len));
        let differs = left.get(i..j) != right.get(i..j);
        match (differs, run) {
            (true, None) => run = Some(i),
            (false, Some(start)) => {
                f(base + start as u64, start, i)?;
                run = None;
            }
            _ => {}
        }
        i = j;
    }
    if let Some(start) = run {
        f(base + start as u64, start, len)?;
    }
    Ok(())
}

/// Where a stride that starts at `pos` ends: on a block boundary at most
/// `stride` bytes on (unless `pos` is too close to one), and never past
/// `end`.
pub(crate) fn stride_end(pos: u64, end: u64, stride: usize) -> u64 {
    let stop = align_down(pos.saturating_add(stride as u64)).min(end);
    if stop <= pos {
        end.min(pos.saturating_add(stride as u64))
    } else {
        stop
    }
}

fn align_down(x: u64) -> u64 {
    x - x % BLOCK
}

/// How [`compare_replicas`] works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompareOptions {
    /// Bytes read from each side per step ([`DEFAULT_STRIDE`]).
    pub stride: usize,
    /// Worker threads; 1 compares in order on the calling thread.
    pub threads: usize,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            stride: DEFAULT_STRIDE,
            threads: default_threads(),
        }
    }
}

/// The number of workers used by default: the machine's parallelism, at
/// most 8 (two stride buffers each keep memory small).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8)
}

/// The result of [`compare_replicas`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompareOutcome {
    /// The differing ranges, sorted, adjacent runs merged.
    pub differing: Vec<LogicalRange>,
    /// What was compared.
    pub stats: CompareStats,
}

/// Compares replicas `left` and `right` of `set` over `ranges` and returns
/// every differing range (4 KiB aligned, clipped to the given ranges).
///
/// The same as [`compare_many`] with `right` as the only other replica.
pub fn compare_replicas<F: PartFile>(
    set: &OpenSet<F>,
    left: usize,
    right: usize,
    ranges: &[LogicalRange],
    options: &CompareOptions,
) -> Result<CompareOutcome, Error> {
    let side = |r: usize| -> Result<&dyn Endpoint, Error> {
        set.replica(r)
            .map(|rep| rep as &dyn Endpoint)
            .ok_or_else(|| Error::LogicalRead {
                replica: r,
                offset: 0,
                end: 0,
                reason: "no such replica".to_string(),
            })
    };
    let mut outcomes = compare_many(side(left)?, &[side(right)?], ranges, options, &NoProgress)?;
    Ok(outcomes.pop().unwrap_or_default())
}

/// How two sides are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Both sides' bytes are read and compared.
    Bytes,
    /// The other side sends the digest of each block piece; only the
    /// source's bytes are read here.
    Digests,
}

impl Mode {
    /// Digests when either side prefers them (its bytes are far away),
    /// bytes otherwise.
    pub fn for_sides(a: &dyn Endpoint, b: &dyn Endpoint) -> Mode {
        if a.prefers_digests() || b.prefers_digests() {
            Mode::Digests
        } else {
            Mode::Bytes
        }
    }
}

/// One stride of the source: its first logical offset, its bytes, and the
/// pieces of it to compare as `(start, end)` indexes into the bytes
/// (sorted, disjoint).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stride<'a> {
    /// Logical offset of `bytes[0]`.
    pub pos: u64,
    /// The source's bytes.
    pub bytes: &'a [u8],
    /// The pieces compared.
    pub live: &'a [(usize, usize)],
}

/// What [`diff_stride`] learnt of the other side.
#[derive(Debug)]
pub(crate) enum Seen {
    /// Compared; the visitor was called for every differing run.
    Compared,
    /// Reading the other side failed with `EIO` (the error): nothing was
    /// visited.
    Unreadable(Error),
}

/// Scratch space [`diff_stride`] reuses from call to call.
pub(crate) struct Scratch {
    other: AlignedBuf,
    ranges: Vec<LogicalRange>,
    theirs: Vec<Digest>,
}

impl Scratch {
    /// Scratch for strides of at most `cap` bytes.
    pub(crate) fn new(cap: usize) -> Self {
        Scratch {
            other: AlignedBuf::new(cap),
            ranges: Vec::new(),
            theirs: Vec::new(),
        }
    }
}

/// Compares `stride` of the source with the same range of `other`, over
/// the stride's live pieces, and calls `visit(logical offset, start, end)`
/// (indexes into the stride's bytes) for each run of differing blocks, in
/// order. A block is judged on its live bytes only.
pub(crate) fn diff_stride(
    stride: Stride<'_>,
    other: &dyn Endpoint,
    mode: Mode,
    scratch: &mut Scratch,
    mut visit: impl FnMut(u64, usize, usize) -> Result<(), Error>,
) -> Result<Seen, Error> {
    let Stride { pos, bytes, live } = stride;
    match mode {
        Mode::Bytes => {
            let theirs = scratch.other.get_mut(bytes.len());
            match other.read(pos, theirs) {
                Ok(()) => {}
                Err(e) if e.is_eio() => return Ok(Seen::Unreadable(e)),
                Err(e) => return Err(e),
            }
            if *bytes == *theirs {
                return Ok(Seen::Compared);
            }
            for &(lo, hi) in live {
                let (Some(a), Some(b)) = (bytes.get(lo..hi), theirs.get(lo..hi)) else {
                    continue;
                };
                visit_runs(pos + lo as u64, a, b, |offset, x, y| {
                    visit(offset, lo + x, lo + y)
                })?;
            }
        }
        Mode::Digests => {
            // One digest per live piece of each block, of every block when
            // the stride is compared whole and small, else only of the
            // blocks of coarse pieces whose digests differ.
            let ranges = &mut scratch.ranges;
            ranges.clear();
            let whole = live == [(0, bytes.len())];
            if whole && bytes.len() as u64 > COARSE {
                match coarse_suspects(pos, bytes, other, ranges, &mut scratch.theirs) {
                    Ok(()) => {}
                    Err(e) if e.is_eio() => return Ok(Seen::Unreadable(e)),
                    Err(e) => return Err(e),
                }
                if ranges.is_empty() {
                    return Ok(Seen::Compared);
                }
            } else {
                for &(lo, hi) in live {
                    push_blocks(ranges, pos + lo as u64, pos + hi as u64);
                }
            }
            scratch.theirs.clear();
            match other.digests(ranges, &mut scratch.theirs) {
                Ok(()) => {}
                Err(e) if e.is_eio() => return Ok(Seen::Unreadable(e)),
                Err(e) => return Err(e),
            }
            let mut run: Option<(usize, usize)> = None;
            for (k, r) in ranges.iter().enumerate() {
                let lo = usize::try_from(r.offset - pos).unwrap_or(usize::MAX);
                let hi = usize::try_from(r.end() - pos).unwrap_or(usize::MAX);
                let ours = bytes.get(lo..hi).map(digest);
                let differs = ours != scratch.theirs.get(k).copied();
                match (differs, run) {
                    (true, Some((start, end))) if end == lo => run = Some((start, hi)),
                    (true, Some((start, end))) => {
                        visit(pos + start as u64, start, end)?;
                        run = Some((lo, hi));
                    }
                    (true, None) => run = Some((lo, hi)),
                    (false, Some((start, end))) => {
                        visit(pos + start as u64, start, end)?;
                        run = None;
                    }
                    (false, None) => {}
                }
            }
            if let Some((start, end)) = run {
                visit(pos + start as u64, start, end)?;
            }
        }
    }
    Ok(Seen::Compared)
}

/// The piece a first, coarse round of digests covers when a stride is
/// compared by digests: 16 blocks. Only the blocks of coarse pieces whose
/// digests differ are asked for one by one, so an unchanged stretch costs
/// one digest per 64 KiB on the wire instead of sixteen.
pub const COARSE: u64 = 16 * BLOCK;

/// Pushes the block pieces of `[start, end)`, cut at the block grid.
fn push_blocks(ranges: &mut Vec<LogicalRange>, start: u64, end: u64) {
    let mut at = start;
    while at < end {
        let stop = (align_down(at) + BLOCK).min(end);
        ranges.push(LogicalRange::from_bounds(at, stop));
        at = stop;
    }
}

/// The first round of a hierarchical comparison: the digests of the
/// [`COARSE`] pieces of a whole stride (on the coarse grid) from `other`,
/// compared with ours; pushes onto `suspects` the block pieces of every
/// coarse piece that differs.
fn coarse_suspects(
    pos: u64,
    bytes: &[u8],
    other: &dyn Endpoint,
    suspects: &mut Vec<LogicalRange>,
    theirs: &mut Vec<Digest>,
) -> Result<(), Error> {
    let end = pos + bytes.len() as u64;
    let mut coarse = Vec::with_capacity(bytes.len() / COARSE as usize + 2);
    let mut at = pos;
    while at < end {
        let stop = (at - at % COARSE + COARSE).min(end);
        coarse.push(LogicalRange::from_bounds(at, stop));
        at = stop;
    }
    theirs.clear();
    other.digests(&coarse, theirs)?;
    for (k, r) in coarse.iter().enumerate() {
        let lo = usize::try_from(r.offset - pos).unwrap_or(usize::MAX);
        let hi = usize::try_from(r.end() - pos).unwrap_or(usize::MAX);
        let ours = bytes.get(lo..hi).map(digest);
        if ours != theirs.get(k).copied() {
            push_blocks(suspects, r.offset, r.end());
        }
    }
    Ok(())
}

/// Compares `source` with each of `others` over `ranges` and returns, for
/// each of `others` in order, every range where it differs from the source
/// (4 KiB aligned, clipped to the given ranges).
///
/// Each stretch of the source is read once and compared with every other
/// endpoint in turn, so comparing with two replicas reads three sides, not
/// four. Ranges at most [`COALESCE_GAP`] apart are read together, in one
/// read per stride, so that many small ranges cost few reads; the bytes
/// between them are read but neither compared nor reported. An endpoint
/// that prefers digests sends those instead of its bytes ([`Mode`]).
///
/// The stretches are cut at the end of every other endpoint and into
/// pieces of at most [`JOB_LEN`], which `options.threads` workers compare
/// in parallel, each with buffers of its own. Bytes beyond the source's
/// end are not compared, nor bytes beyond another endpoint's end with that
/// endpoint.
pub fn compare_many(
    source: &dyn Endpoint,
    others: &[&dyn Endpoint],
    ranges: &[LogicalRange],
    options: &CompareOptions,
    progress: &dyn Progress,
) -> Result<Vec<CompareOutcome>, Error> {
    let ends: Vec<u64> = others.iter().map(|o| o.end()).collect();
    let src_end = source.end();
    let exact = sorted_union(ranges);
    let mut jobs = Vec::new();
    for cover in coalesce(&exact, COALESCE_GAP) {
        let cover = LogicalRange::from_bounds(cover.offset, cover.end().min(src_end));
        let mut cuts = vec![cover.offset, cover.end()];
        cuts.extend(ends.iter().copied());
        for piece in pieces_between(cuts, cover.offset, cover.end()) {
            jobs.extend(split_len(piece, JOB_LEN));
        }
    }
    let stride = effective_stride(options.stride);
    let job_cap =
        |job: &LogicalRange| usize::try_from(job.len.min(stride as u64)).unwrap_or(stride);
    let cap = jobs.iter().map(job_cap).max().unwrap_or(0);
    let sides = Sides {
        source,
        others,
        ends: &ends,
        exact: &exact,
        stride,
    };
    let run = |buffers: &mut Buffers, job: &LogicalRange| {
        let found = sides.compare(*job, buffers)?;
        progress.advance(found.iter().map(|(n, _)| n).sum());
        Ok(found)
    };
    let results: Vec<Result<JobFound, Error>> = if options.threads <= 1 {
        let mut buffers = Buffers::new(cap);
        jobs.iter().map(|job| run(&mut buffers, job)).collect()
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .build()
            .map_err(|_| Error::InvalidOptions {
                reason: "cannot start the worker threads",
            })?;
        pool.install(|| {
            jobs.par_iter()
                .map_init(|| Buffers::new(cap), run)
                .collect()
        })
    };
    let mut compared = vec![0u64; others.len()];
    let mut all: Vec<Vec<LogicalRange>> = vec![Vec::new(); others.len()];
    for result in results {
        let found = result?;
        for (k, (n, list)) in found.into_iter().enumerate() {
            if let (Some(c), Some(a)) = (compared.get_mut(k), all.get_mut(k)) {
                *c += n;
                a.extend(list);
            }
        }
    }
    Ok(all
        .into_iter()
        .zip(compared)
        .map(|(mut list, bytes_compared)| {
            list.sort();
            let mut differing = Vec::new();
            for r in list {
                push_merged(&mut differing, r);
            }
            CompareOutcome {
                stats: CompareStats {
                    bytes_compared,
                    bytes_differing: differing.iter().map(|r| r.len).sum(),
                    runs: differing.len() as u64,
                },
                differing,
            }
        })
        .collect())
}

/// Ranges closer than this are read together by [`compare_many`] (the gap
/// costs less to read than another system call per side).
pub const COALESCE_GAP: u64 = 64 << 10;

/// What one job of [`compare_many`] found: per other replica, the bytes
/// compared and the differing ranges.
type JobFound = Vec<(u64, Vec<LogicalRange>)>;

/// A worker's stride buffer for the source's bytes, its scratch for the
/// other side, and the compared pieces of the current stride.
struct Buffers {
    source: AlignedBuf,
    scratch: Scratch,
    live: Vec<(usize, usize)>,
}

impl Buffers {
    fn new(cap: usize) -> Self {
        Buffers {
            source: AlignedBuf::new(cap),
            scratch: Scratch::new(cap),
            live: Vec::new(),
        }
    }
}

/// Memory alignment of [`AlignedBuf`]: one page.
const BUF_ALIGN: usize = 4096;

/// A zeroed byte buffer whose first byte is page aligned in memory.
///
/// The kernel copies a `pread` out of the page cache with `rep movsb`,
/// which on some CPUs (AMD EPYC, measured) runs about three times slower
/// when the destination sits a few bytes past a cache-line boundary
/// relative to the source, as a plain heap allocation does (16 bytes in)
/// for page-aligned file offsets. A page-aligned destination is fast for
/// every file offset.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` zero bytes.
    pub(crate) fn new(len: usize) -> Self {
        let raw = vec![0u8; len.saturating_add(BUF_ALIGN)];
        // `align_offset` may give up (usize::MAX); the buffer then simply
        // starts unaligned.
        let start = raw.as_ptr().align_offset(BUF_ALIGN).min(BUF_ALIGN);
        AlignedBuf { raw, start, len }
    }

    /// Its length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first `n` bytes (fewer if the buffer is shorter).
    pub(crate) fn get_mut(&mut self, n: usize) -> &mut [u8] {
        let end = self.start + n.min(self.len);
        self.raw.get_mut(self.start..end).unwrap_or_default()
    }
}

/// What every job of one [`compare_many`] call shares.
struct Sides<'a> {
    source: &'a dyn Endpoint,
    others: &'a [&'a dyn Endpoint],
    /// One past the last logical byte of each of `others`.
    ends: &'a [u64],
    /// The ranges to compare: sorted, disjoint, not touching.
    exact: &'a [LogicalRange],
    stride: usize,
}

impl Sides<'_> {
    /// Compares `job` (wholly inside or wholly beyond each other
    /// endpoint's end) of the source with each other endpoint, over the
    /// parts of the ranges that lie in it.
    fn compare(&self, job: LogicalRange, buffers: &mut Buffers) -> Result<JobFound, Error> {
        let Sides {
            source,
            others,
            ends,
            exact,
            stride,
        } = *self;
        let mut found: JobFound = vec![(0, Vec::new()); others.len()];
        let first = exact.partition_point(|r| r.end() <= job.offset);
        let last = exact.partition_point(|r| r.offset < job.end());
        let inside = exact.get(first..last.max(first)).unwrap_or_default();
        let end = job.end();
        let mut pos = job.offset;
        while pos < end {
            // Stride ends fall on block boundaries, so that a block is never
            // judged in two halves.
            let stop = stride_end(pos, end, stride);
            let n = usize::try_from(stop - pos)
                .unwrap_or(stride)
                .min(buffers.source.len());
            let stop = pos + n as u64;
            // The ranges' own bytes in this stride, as buffer indexes.
            let here = LogicalRange::from_bounds(pos, stop);
            let from = inside.partition_point(|r| r.end() <= pos);
            let to = inside.partition_point(|r| r.offset < stop);
            let live = &mut buffers.live;
            live.clear();
            live.extend(
                inside
                    .get(from..to.max(from))
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| r.intersect(&here))
                    .map(|r| ((r.offset - pos) as usize, (r.end() - pos) as usize)),
            );
            let live_bytes: u64 = live.iter().map(|&(lo, hi)| (hi - lo) as u64).sum();
            if live_bytes > 0 {
                let src = buffers.source.get_mut(n);
                source.read(pos, src)?;
                let stride = Stride {
                    pos,
                    bytes: src,
                    live,
                };
                for ((&other, &other_end), (compared, list)) in
                    others.iter().zip(ends.iter()).zip(found.iter_mut())
                {
                    if stop > other_end {
                        continue;
                    }
                    *compared += live_bytes;
                    let mode = Mode::for_sides(source, other);
                    let seen =
                        diff_stride(stride, other, mode, &mut buffers.scratch, |o, x, y| {
                            push_merged(list, LogicalRange::new(o, (y - x) as u64));
                            Ok(())
                        })?;
                    if let Seen::Unreadable(e) = seen {
                        return Err(e);
                    }
                }
            }
            pos = stop;
        }
        Ok(found)
    }
}

/// The sorted union of `ranges` (touching ranges merged).
fn sorted_union(ranges: &[LogicalRange]) -> Vec<LogicalRange> {
    let mut all = ranges.to_vec();
    all.sort();
    let mut out: Vec<LogicalRange> = Vec::with_capacity(all.len());
    for r in all {
        match out.last_mut() {
            Some(last) if r.offset <= last.end() => {
                *last = LogicalRange::from_bounds(last.offset, last.end().max(r.end()));
            }
            _ if r.is_empty() => {}
            _ => out.push(r),
        }
    }
    out
}

/// Stretches that cover sorted, disjoint `ranges`, joining ranges at most
/// `gap` bytes apart.
fn coalesce(ranges: &[LogicalRange], gap: u64) -> Vec<LogicalRange> {
    let mut out: Vec<LogicalRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.offset <= last.end().saturating_add(gap) => {
                *last = LogicalRange::from_bounds(last.offset, r.end());
            }
            _ => out.push(*r),
        }
    }
    out
}

/// The ranges between consecutive `cuts` within `[lo, hi]` (the cuts need
/// not be sorted or distinct).
pub(crate) fn pieces_between(mut cuts: Vec<u64>, lo: u64, hi: u64) -> Vec<LogicalRange> {
    cuts.retain(|&c| c >= lo && c <= hi);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .filter_map(|w| match w {
            [a, b] if a < b => Some(LogicalRange::from_bounds(*a, *b)),
            _ => None,
        })
        .collect()
}

/// Appends `r` to a sorted list, merging it with the last range when they
/// touch.
pub fn push_merged(list: &mut Vec<LogicalRange>, r: LogicalRange) {
    if r.is_empty() {
        return;
    }
    if let Some(last) = list.last_mut() {
        if last.end() >= r.offset && r.offset >= last.offset {
            let end = last.end().max(r.end());
            *last = LogicalRange::from_bounds(last.offset, end);
            return;
        }
    }
    list.push(r);
}

/// Splits `range` at every part boundary of every replica in `replicas`
/// (their extents, as [`poolsync_poolset::PoolSet::extents`] returns them),
/// so that each piece lies within one part of each replica. Parts are found
/// with [`poolsync_poolset::map_range`]; bytes beyond a replica's parts end
/// the pieces there.
pub fn split_at_boundaries(replicas: &[&[Extent]], range: LogicalRange) -> Vec<LogicalRange> {
    let mut cuts: Vec<u64> = vec![range.offset, range.end()];
    let mut covered_end = range.end();
    for extents in replicas {
        let pieces = poolsync_poolset::map_range(extents, range.offset, range.len);
        let end = pieces.last().map_or(range.offset, |p| p.logical + p.len);
        covered_end = covered_end.min(end);
        cuts.extend(pieces.iter().map(|p| p.logical));
    }
    cuts.push(covered_end);
    pieces_between(cuts, range.offset, covered_end)
}

/// Splits `range` into pieces of at most `max` bytes (block aligned cuts
/// where the range is).
pub fn split_len(range: LogicalRange, max: u64) -> Vec<LogicalRange> {
    let max = max.max(BLOCK);
    let mut out = Vec::new();
    let mut pos = range.offset;
    let end = range.end();
    while pos < end {
        let stop = align_down(pos.saturating_add(max)).min(end);
        let stop = if stop <= pos {
            end.min(pos + max)
        } else {
            stop
        };
        out.push(LogicalRange::from_bounds(pos, stop));
        pos = stop;
    }
    out
}

/// A byte counter that workers share (for progress and reports).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_pmem::sim::SimStorage;
    use poolsync_pmem::Access;
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};

    use crate::test_endpoint::Mem;

    /// The differing runs `compare_many` finds between two buffers that
    /// start at `range.offset`, in bytes mode and in digest mode (which
    /// must agree).
    fn runs(range: LogicalRange, stride: usize, left: &[u8], right: &[u8]) -> Vec<LogicalRange> {
        let l = Mem {
            base: range.offset,
            bytes: left.to_vec(),
            ..Mem::default()
        };
        let options = CompareOptions { stride, threads: 1 };
        let mut found = Vec::new();
        for digests in [false, true] {
            let r = Mem {
                base: range.offset,
                bytes: right.to_vec(),
                digests,
                ..Mem::default()
            };
            let mut out = compare_many(&l, &[&r], &[range], &options, &NoProgress).unwrap();
            found.push(out.pop().unwrap().differing);
        }
        assert_eq!(found[0], found[1], "bytes and digests disagree");
        found.swap_remove(0)
    }

    /// The model: every block (clipped to the range) whose bytes differ,
    /// merged into runs.
    fn model(range: LogicalRange, left: &[u8], right: &[u8]) -> Vec<LogicalRange> {
        let mut out: Vec<LogicalRange> = Vec::new();
        let mut pos = range.offset;
        while pos < range.end() {
            let stop = (align_down(pos) + BLOCK).min(range.end());
            let (s, e) = (
                (pos - range.offset) as usize,
                (stop - range.offset) as usize,
            );
            if left[s..e] != right[s..e] {
                match out.last_mut() {
                    Some(last) if last.end() == pos => last.len += stop - pos,
                    _ => out.push(LogicalRange::from_bounds(pos, stop)),
                }
            }
            pos = stop;
        }
        out
    }

    #[test]
    fn identical_ranges_have_no_runs() {
        let data = vec![7u8; 3 * 4096];
        let r = LogicalRange::new(4096, data.len() as u64);
        assert!(runs(r, 4096, &data, &data).is_empty());
    }

    #[test]
    fn runs_are_block_aligned_and_merged() {
        let left = vec![0u8; 10 * 4096];
        let mut right = left.clone();
        right[4096 + 5] = 1; // block 1
        right[2 * 4096] = 1; // block 2, adjacent
        right[7 * 4096 + 4095] = 1; // block 7
        let r = LogicalRange::new(0, left.len() as u64);
        for stride in [4096, 8192, 3 * 4096, 1 << 20] {
            assert_eq!(
                runs(r, stride, &left, &right),
                [
                    LogicalRange::new(4096, 2 * 4096),
                    LogicalRange::new(7 * 4096, 4096)
                ],
                "stride {stride}"
            );
        }
    }

    #[test]
    fn unaligned_ranges_clip_their_blocks() {
        let left = vec![0u8; 3 * 4096];
        let mut right = left.clone();
        right[0] = 1;
        right[3 * 4096 - 1] = 1;
        let r = LogicalRange::new(4096 - 100, 3 * 4096);
        let found = runs(r, 4096, &left, &right);
        assert_eq!(found[0], LogicalRange::new(4096 - 100, 100));
        assert_eq!(found.last().unwrap().end(), r.end());
    }

    #[test]
    fn strides_are_clamped_to_blocks() {
        assert_eq!(effective_stride(1), 4096);
        assert_eq!(effective_stride(5000), 4096);
        assert_eq!(effective_stride(usize::MAX), MAX_STRIDE);
        assert_eq!(effective_stride(1 << 20), 1 << 20);
    }

    #[test]
    fn splitting_at_two_replicas_boundaries() {
        let m = 1u64 << 20;
        // 20M + 20M + 21M against 40M + 21M (ARCHITECTURE.md, "Logical ranges").
        let a = [
            Extent {
                part: 0,
                logical: 0,
                file_offset: 0,
                len: 20 * m,
            },
            Extent {
                part: 1,
                logical: 20 * m,
                file_offset: 4096,
                len: 20 * m - 4096,
            },
            Extent {
                part: 2,
                logical: 40 * m - 4096,
                file_offset: 4096,
                len: 21 * m - 4096,
            },
        ];
        let b = [
            Extent {
                part: 0,
                logical: 0,
                file_offset: 0,
                len: 40 * m,
            },
            Extent {
                part: 1,
                logical: 40 * m,
                file_offset: 4096,
                len: 21 * m - 4096,
            },
        ];
        let pieces = split_at_boundaries(&[&a, &b], LogicalRange::new(4096, 50 * m));
        let starts: Vec<u64> = pieces.iter().map(|p| p.offset).collect();
        assert_eq!(starts, [4096, 20 * m, 40 * m - 4096, 40 * m]);
        assert_eq!(pieces.last().unwrap().end(), 4096 + 50 * m);
        // Beyond the smaller replica, pieces stop.
        let total_a = 61 * m - 8192;
        let pieces = split_at_boundaries(&[&a, &b], LogicalRange::new(60 * m, 10 * m));
        assert_eq!(pieces.last().unwrap().end(), total_a);
    }

    #[test]
    fn splitting_by_length_keeps_blocks_whole() {
        let pieces = split_len(LogicalRange::new(100, 3 * BLOCK), BLOCK);
        assert_eq!(pieces[0], LogicalRange::from_bounds(100, BLOCK));
        assert_eq!(pieces.last().unwrap().end(), 100 + 3 * BLOCK);
        let total: u64 = pieces.iter().map(|p| p.len).sum();
        assert_eq!(total, 3 * BLOCK);
    }

    #[test]
    fn merging_touching_ranges() {
        let mut list = Vec::new();
        push_merged(&mut list, LogicalRange::new(0, 10));
        push_merged(&mut list, LogicalRange::new(10, 5));
        push_merged(&mut list, LogicalRange::new(20, 5));
        push_merged(&mut list, LogicalRange::new(0, 0));
        assert_eq!(list, [LogicalRange::new(0, 15), LogicalRange::new(20, 5)]);
    }

    /// Three replicas with different part layouts on the simulated storage,
    /// replicas 1 and 2 differing from replica 0 in scattered bytes, and
    /// the logical bytes of each.
    fn three_replicas(seed: u64) -> (SimStorage, PathBuf, Vec<Vec<u8>>) {
        let mib = 1usize << 20;
        let s = SimStorage::new();
        s.add_dir(Path::new("/p")).unwrap();
        // Replica 0 is the longest, so that the others end inside ranges.
        let layouts: [&[usize]; 3] = [&[3, 3], &[4], &[3, 2]];
        let mut text = String::from("PMEMPOOLSET\n");
        let mut rng = seed;
        let mut next = move || {
            rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let master: Vec<u8> = (0..6 * mib).map(|i| (i / 3 % 251) as u8).collect();
        let mut logical = Vec::new();
        for (r, parts) in layouts.iter().enumerate() {
            if r > 0 {
                text.push_str("REPLICA\n");
            }
            let mut data = master.clone();
            if r > 0 {
                for _ in 0..40 {
                    let at = (next() % data.len() as u64) as usize;
                    data[at] ^= 0x5a;
                }
            }
            // Every part but the first starts with a 4 KiB header, which is
            // not in the logical address space.
            let mut pos = 0usize;
            for (p, size) in parts.iter().enumerate() {
                let path = format!("/p/r{r}p{p}");
                text.push_str(&format!("{size}M {path}\n"));
                let mut file = vec![0u8; size * mib];
                let skip = if p == 0 { 0 } else { 4096 };
                let n = (size * mib - skip).min(data.len() - pos);
                file[skip..skip + n].copy_from_slice(&data[pos..pos + n]);
                pos += n;
                s.insert_file(Path::new(&path), &file, 0o644).unwrap();
            }
            data.truncate(pos);
            logical.push(data);
        }
        let set = PathBuf::from("/p/pool.set");
        s.insert_file(&set, text.as_bytes(), 0o644).unwrap();
        (s, set, logical)
    }

    #[test]
    fn many_replicas_match_pairwise_block_models() {
        let mut found = 0;
        for seed in 0..4u64 {
            let (s, path, logical) = three_replicas(seed);
            let set = crate::open::open(&s, &path, Access::ReadOnly).unwrap();
            // Small ranges close together (coalesced), far apart, unaligned,
            // crossing part boundaries, overlapping and out of order.
            let mut ranges = vec![LogicalRange::new(4 << 20, 3 << 20)];
            let mut at = 100u64 + seed * 7;
            while at < (5 << 20) {
                ranges.push(LogicalRange::new(at, 1 + at % 9000));
                at += 3000 + (at * 31 + seed) % 200_000;
            }
            ranges.push(LogicalRange::new(2 << 20, 300_000));
            ranges.reverse();
            let union = sorted_union(&ranges);
            for threads in [1, 2] {
                for stride in [4096, 3 * 4096, 1 << 20] {
                    let options = CompareOptions { stride, threads };
                    let r0: &dyn Endpoint = &set.replicas[0];
                    let others: [&dyn Endpoint; 2] = [&set.replicas[1], &set.replicas[2]];
                    let got = compare_many(r0, &others, &ranges, &options, &NoProgress).unwrap();
                    assert_eq!(got.len(), 2);
                    for (k, r) in [1usize, 2].into_iter().enumerate() {
                        let end = logical[0].len().min(logical[r].len()) as u64;
                        let mut want = Vec::new();
                        let mut compared = 0;
                        for range in &union {
                            let range =
                                LogicalRange::from_bounds(range.offset, range.end().min(end));
                            if range.is_empty() {
                                continue;
                            }
                            compared += range.len;
                            let (lo, hi) = (range.offset as usize, range.end() as usize);
                            for d in model(range, &logical[0][lo..hi], &logical[r][lo..hi]) {
                                push_merged(&mut want, d);
                            }
                        }
                        assert_eq!(got[k].differing, want, "seed {seed} replica {r}");
                        found += want.len();
                        assert_eq!(got[k].stats.bytes_compared, compared);
                        let pair = compare_replicas(&set, 0, r, &ranges, &options).unwrap();
                        assert_eq!(pair, got[k]);
                    }
                }
            }
        }
        // The model found differences, in ranges and outside them.
        assert!(found > 0);
    }

    #[test]
    fn aligned_buffers_are_aligned_and_sized() {
        for len in [0, 1, 4096, 5000, 1 << 20] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.len(), len);
            let s = b.get_mut(len);
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % BUF_ALIGN, 0);
            assert_eq!(b.get_mut(len + 10).len(), len);
        }
    }

    proptest! {
        #[test]
        fn runs_match_the_block_model(
            blocks in 1usize..12,
            start in 0u64..8192,
            flips in proptest::collection::vec((0usize..12 * 4096, any::<u8>()), 0..12),
            stride_blocks in 1usize..5,
        ) {
            let len = blocks * 4096;
            let left = vec![0u8; len];
            let mut right = left.clone();
            for (at, v) in flips {
                let at = at % len;
                right[at] = v;
            }
            let r = LogicalRange::new(start, len as u64);
            prop_assert_eq!(runs(r, stride_blocks * 4096, &left, &right), model(r, &left, &right));
        }
    }
}
