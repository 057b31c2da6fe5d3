//! Block-level comparison of two replicas over logical ranges (design note
//! section 3).
//!
//! Replicas of one pool line up offset for offset in their logical address
//! space, so comparing them block by block tells which blocks a repair has
//! to copy. The comparer reads both sides in large strides (1 MiB by
//! default) with fixed-size buffers, compares each stride with one
//! `memcmp`, and only where the bytes differ narrows down to [`BLOCK`]
//! (4 KiB) blocks. Memory stays bounded at two stride buffers per worker,
//! whatever the pool size.
//!
//! Two layers:
//!
//! * [`compare_with`] streams one logical range through two reader
//!   callbacks and hands every run of differing blocks, with both sides'
//!   bytes, to a visitor. `sync` uses it to copy exactly those blocks.
//! * [`compare_replicas`] compares two replicas of an [`OpenSet`] over a
//!   list of logical ranges, in parallel, and returns the differing ranges
//!   with counts. Heap-aware verification passes it the live ranges.
//!
//! Blocks are aligned to multiples of [`BLOCK`] in the logical address
//! space; a range that starts or ends inside a block compares (and reports)
//! only its own bytes of that block.

use std::sync::atomic::{AtomicU64, Ordering};

use poolsync_pmem::PartFile;
use poolsync_poolset::Extent;
use rayon::prelude::*;
use serde::Serialize;

use crate::open::OpenSet;
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

/// A half-open range `[offset, offset + len)` of a replica's logical
/// address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LogicalRange {
    /// First logical offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl LogicalRange {
    /// `[offset, offset + len)`.
    pub const fn new(offset: u64, len: u64) -> Self {
        LogicalRange { offset, len }
    }

    /// `[start, end)`; empty when `end <= start`.
    pub fn from_bounds(start: u64, end: u64) -> Self {
        LogicalRange {
            offset: start,
            len: end.saturating_sub(start),
        }
    }

    /// One past the last byte (saturating at `u64::MAX`).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The overlap of two ranges, if any.
    pub fn intersect(&self, other: &LogicalRange) -> Option<LogicalRange> {
        let start = self.offset.max(other.offset);
        let end = self.end().min(other.end());
        (start < end).then(|| LogicalRange::from_bounds(start, end))
    }
}

/// What a comparison counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CompareStats {
    /// Bytes read and compared on each side.
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

/// A run of consecutive differing blocks with both sides' bytes.
#[derive(Debug, Clone, Copy)]
pub struct Difference<'a> {
    /// Logical offset of the run's first byte.
    pub offset: u64,
    /// The left side's bytes of the run.
    pub left: &'a [u8],
    /// The right side's bytes of the run (same length as `left`).
    pub right: &'a [u8],
}

impl Difference<'_> {
    /// The run as a range.
    pub fn range(&self) -> LogicalRange {
        LogicalRange::new(self.offset, self.left.len() as u64)
    }
}

/// A stride clamped to `[BLOCK, MAX_STRIDE]` and rounded down to whole blocks.
pub fn effective_stride(stride: usize) -> usize {
    let block = BLOCK as usize;
    let clamped = stride.clamp(block, MAX_STRIDE);
    clamped - clamped % block
}

/// Compares `range` as read through `read_left` and `read_right` (each
/// called with a logical offset and a buffer to fill), in strides of
/// `stride` bytes, and calls `visit` for every run of differing blocks, in
/// logical order. A run that crosses a stride boundary is visited as two
/// runs ([`push_merged`] joins them).
///
/// Only two buffers of at most `stride` bytes are allocated. The first
/// error of a reader or of `visit` ends the comparison and is returned.
pub fn compare_with<L, R, V>(
    range: LogicalRange,
    stride: usize,
    mut read_left: L,
    mut read_right: R,
    mut visit: V,
) -> Result<CompareStats, Error>
where
    L: FnMut(u64, &mut [u8]) -> Result<(), Error>,
    R: FnMut(u64, &mut [u8]) -> Result<(), Error>,
    V: FnMut(Difference<'_>) -> Result<(), Error>,
{
    let stride = effective_stride(stride);
    let mut stats = CompareStats::default();
    if range.is_empty() {
        return Ok(stats);
    }
    let first = usize::try_from(range.len.min(stride as u64)).unwrap_or(stride);
    let mut left = vec![0u8; first];
    let mut right = vec![0u8; first];
    let end = range.end();
    let mut pos = range.offset;
    while pos < end {
        // Stride ends fall on block boundaries, so runs never straddle strides
        // in the middle of a block.
        let stop = (align_down(pos.saturating_add(stride as u64))).min(end);
        let stop = if stop <= pos {
            end.min(pos + stride as u64)
        } else {
            stop
        };
        let n = usize::try_from(stop - pos)
            .unwrap_or(stride)
            .min(left.len());
        let stop = pos + n as u64;
        let (l, r) = (&mut left[..n], &mut right[..n]);
        read_left(pos, l)?;
        read_right(pos, r)?;
        stats.bytes_compared += n as u64;
        if l != r {
            visit_runs(pos, l, r, |offset, lo, hi| {
                let (ls, rs) = (&l[lo..hi], &r[lo..hi]);
                stats.bytes_differing += ls.len() as u64;
                stats.runs += 1;
                visit(Difference {
                    offset,
                    left: ls,
                    right: rs,
                })
            })?;
        }
        pos = stop;
    }
    Ok(stats)
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
/// Ranges are split at the part boundaries of both replicas (each piece
/// lies in one part of each side) and into pieces of at most [`JOB_LEN`],
/// which `options.threads` workers compare in parallel. Reading a part that
/// is not open, or a range beyond either replica's parts, is an error.
pub fn compare_replicas<F: PartFile>(
    set: &OpenSet<F>,
    left: usize,
    right: usize,
    ranges: &[LogicalRange],
    options: &CompareOptions,
) -> Result<CompareOutcome, Error> {
    let extents = |r: usize| set.replica(r).map(|rep| rep.extents.as_slice());
    let (Some(le), Some(re)) = (extents(left), extents(right)) else {
        return Err(Error::LogicalRead {
            replica: if set.replica(left).is_none() {
                left
            } else {
                right
            },
            offset: 0,
            end: 0,
            reason: "no such replica".to_string(),
        });
    };
    let mut jobs = Vec::new();
    for range in ranges {
        for piece in split_at_boundaries(&[le, re], *range) {
            jobs.extend(split_len(piece, JOB_LEN));
        }
    }
    let run = |job: &LogicalRange| -> Result<(Vec<LogicalRange>, CompareStats), Error> {
        let mut found: Vec<LogicalRange> = Vec::new();
        let stats = compare_with(
            *job,
            options.stride,
            |off, buf| set.read_logical(left, off, buf),
            |off, buf| set.read_logical(right, off, buf),
            |d| {
                push_merged(&mut found, d.range());
                Ok(())
            },
        )?;
        Ok((found, stats))
    };
    let results: Vec<Result<(Vec<LogicalRange>, CompareStats), Error>> = if options.threads <= 1 {
        jobs.iter().map(run).collect()
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .build()
            .map_err(|_| Error::InvalidOptions {
                reason: "cannot start the worker threads",
            })?;
        pool.install(|| jobs.par_iter().map(run).collect())
    };
    let mut outcome = CompareOutcome::default();
    let mut all: Vec<LogicalRange> = Vec::new();
    for result in results {
        let (found, stats) = result?;
        outcome.stats += stats;
        all.extend(found);
    }
    all.sort();
    for r in all {
        push_merged(&mut outcome.differing, r);
    }
    Ok(outcome)
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
    cuts.retain(|&c| c <= covered_end);
    cuts.push(covered_end);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .filter_map(|w| match w {
            [a, b] if a < b => Some(LogicalRange::from_bounds(*a, *b)),
            _ => None,
        })
        .collect()
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
    use proptest::prelude::*;

    fn runs(range: LogicalRange, stride: usize, left: &[u8], right: &[u8]) -> Vec<LogicalRange> {
        let mut found = Vec::new();
        let base = range.offset;
        compare_with(
            range,
            stride,
            |off, buf| {
                let s = (off - base) as usize;
                buf.copy_from_slice(&left[s..s + buf.len()]);
                Ok(())
            },
            |off, buf| {
                let s = (off - base) as usize;
                buf.copy_from_slice(&right[s..s + buf.len()]);
                Ok(())
            },
            |d| {
                assert_eq!(d.left.len(), d.right.len());
                assert_ne!(d.left, d.right);
                push_merged(&mut found, d.range());
                Ok(())
            },
        )
        .unwrap();
        found
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
        // 20M + 20M + 21M against 40M + 21M (design note section 2).
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
