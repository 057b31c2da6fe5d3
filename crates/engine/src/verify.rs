//! Heap-aware verification of replicas: `check --data` and `sync --verify`
//! (ARCHITECTURE.md, "Heap-aware verification"; ARCHITECTURE.md, "Choosing the source").
//!
//! Replicas of a healthy, used pool differ byte for byte where libpmemobj
//! never replicates (the descriptor's volatile area, free heap space, chunk
//! footers), so only *live* ranges are compared. The path:
//!
//! 1. [`walk_source`] walks the source replica's obj metadata with
//!    [`poolsync_header::heap::walk_visit`] into merged live spans (a second
//!    walk later keeps the owners of only the ranges that differ); a heap the walker refuses stops
//!    everything with [`Error::SourceHeap`], which names `--source`.
//! 2. [`find`] compares every other replica with the source over the live
//!    spans with the block comparer ([`compare_many`]: parallel, bounded
//!    buffers, each stretch of the source read once for all replicas, and
//!    spans close together read together), then narrows every differing
//!    block down to the differing bytes of each owner (object, chunk
//!    header, lane, ...), which it lists as [`Divergence`]s with their part
//!    files and file offsets.
//! 3. The majority rule: with three or more replicas, ranges where every
//!    other replica differs from the source and they all agree with each
//!    other are [`Outvoted`]. `sync --verify` then refuses before writing
//!    anything unless `--force-source`; `--source N` takes the majority's
//!    copy. Only live bytes take part in the vote.
//! 4. [`repair`] copies the source's bytes of every differing block over the
//!    replica (non-live bytes in those blocks are copied too, which is always
//!    safe), flushes, and fences each written file.
//!
//! Crash safety: a repair writes data only, never a header, and only bytes
//! the source holds. A run that stops half-way leaves some blocks repaired
//! and others not; the next run compares again and finds exactly the blocks
//! still differing, so re-running (with the same `--source` or
//! `--force-source`) converges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use poolsync_header::heap::{walk_visit, HeapStats, LiveRange, Owner, Place, WalkError};
use poolsync_header::{CHUNK_HEADER_SIZE, LANE_SIZE};
use poolsync_pmem::{Access, PartFile, Storage};
use serde::Serialize;

use crate::compare::{
    compare_many, compare_replicas, push_merged, CompareOptions, LogicalRange, BLOCK,
};
use crate::endpoint::Endpoint;
pub use crate::endpoint::Location;
use crate::exec::{data_steps, DataPurpose, Endpoints, RunOptions, Step, Tuning};
use crate::inspect::{choose_source, inspect, read_descriptor, SourceRefusal};
use crate::open::{open, OpenSet};
use crate::sync::{execute, open_for_sync, plan, survey, Progress, SyncOptions, SyncOutcome};
use crate::Error;

/// Divergences listed per replica; more are counted but not listed.
pub const MAX_LISTED: usize = 10_000;
/// Differing bytes of one owner closer than this are reported as one range.
const GAP: u64 = BLOCK;
/// Bytes read from each side at once when narrowing a differing range.
const NARROW_CHUNK: u64 = 1 << 20;

/// How verification runs.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// `--source N`: compare with (and repair from) replica N instead of the
    /// lowest-index healthy replica.
    pub source: Option<usize>,
    /// `--force-source`: repair from the source even where it is outvoted.
    pub force_source: bool,
    /// Stride and worker threads of the comparison.
    pub compare: CompareOptions,
}

/// A live range where a replica differs from the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// The replica that differs.
    pub replica: usize,
    /// Logical offset of the first differing byte.
    pub offset: u64,
    /// From the first to the last differing byte of one owner.
    pub len: u64,
    /// What the bytes belong to, as reports word it.
    pub owner: String,
    /// Where the range lies: the replica's pieces, then the source's.
    pub locations: Vec<Location>,
}

/// What verification found in one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplicaFindings {
    /// Replica index.
    pub replica: usize,
    /// Whether its data was compared with the source.
    pub compared: bool,
    /// Why it was not compared.
    pub note: Option<String>,
    /// Divergent ranges found (all, also those not listed).
    pub ranges: u64,
    /// Bytes in divergent ranges.
    pub bytes: u64,
    /// The divergent ranges, at most [`MAX_LISTED`].
    pub divergences: Vec<Divergence>,
    /// Differing 4 KiB blocks within the live spans: what a repair copies.
    #[serde(skip)]
    pub blocks: Vec<LogicalRange>,
}

/// The majority rule's verdict: the source stands alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outvoted {
    /// The outvoted replica (the source).
    pub replica: usize,
    /// The replicas that agree with each other and not with it.
    pub majority: Vec<usize>,
    /// Outvoted ranges found (all, also those not listed).
    pub ranges: u64,
    /// Bytes in outvoted ranges.
    pub bytes: u64,
    /// The outvoted ranges, as the source differs from the majority's first
    /// replica (at most [`MAX_LISTED`]).
    pub divergences: Vec<Divergence>,
}

/// Everything [`find`] learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// The pool set file.
    pub path: PathBuf,
    /// The replica compared with.
    pub source: usize,
    /// Bytes of the pool walked.
    pub pool_size: u64,
    /// Live bytes of the source (what each comparison reads).
    pub live_bytes: u64,
    /// Allocated objects of the source.
    pub objects: u64,
    /// Bytes compared, over all replicas.
    pub bytes_compared: u64,
    /// One entry per replica, the source included (never compared).
    pub replicas: Vec<ReplicaFindings>,
    /// Set when the majority rule found the source outvoted.
    pub outvoted: Option<Outvoted>,
}

impl Findings {
    /// No divergence, every replica compared, the source not outvoted.
    pub fn is_clean(&self) -> bool {
        self.outvoted.is_none()
            && self
                .replicas
                .iter()
                .all(|r| r.ranges == 0 && (r.compared || r.replica == self.source))
    }

    /// Divergent ranges over all replicas.
    pub fn total_ranges(&self) -> u64 {
        self.replicas.iter().map(|r| r.ranges).sum()
    }
}

/// What [`repair`] did to one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplicaRepair {
    /// Replica index.
    pub replica: usize,
    /// Divergent live ranges repaired.
    pub ranges: u64,
    /// Bytes in those ranges.
    pub bytes: u64,
    /// Bytes written (whole differing blocks).
    pub bytes_written: u64,
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// The replica copied from.
    pub source: usize,
    /// One entry per repaired replica.
    pub replicas: Vec<ReplicaRepair>,
}

/// The outcome of [`sync_verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyOutcome {
    /// The sync's plan and (unless a dry run) report.
    pub sync: SyncOutcome,
    /// What verification found before anything was written.
    pub findings: Findings,
    /// What the repair did; `None` for a dry run.
    pub repair: Option<RepairReport>,
}

/// Walks the obj metadata of replica `source` of `set` (a pool of
/// `pool_size` bytes) and hands every live range, in ascending order, to
/// `visit`; memory does not grow with the number of objects. A heap the
/// walker refuses is [`Error::SourceHeap`].
pub fn walk_source<F: PartFile>(
    set: &OpenSet<F>,
    source: usize,
    pool_size: u64,
    mut visit: impl FnMut(&LiveRange),
) -> Result<HeapStats, Error> {
    let heap_error = |source_err: poolsync_header::Error| Error::SourceHeap {
        set: set.path.clone(),
        replica: source,
        others: others_text(set, source),
        source: Box::new(source_err),
    };
    let desc = read_descriptor(set, source).map_err(|reason| Error::SourceDescriptor {
        set: set.path.clone(),
        replica: source,
        reason,
        others: others_text(set, source),
    })?;
    walk_visit(
        &desc,
        pool_size,
        |off, buf: &mut [u8]| set.read_logical(source, off, buf),
        |r: &LiveRange| {
            visit(r);
            Ok(())
        },
    )
    .map_err(|e| match e {
        WalkError::Invalid(h) => heap_error(h),
        WalkError::Read { source, .. } | WalkError::Visit { source, .. } => source,
        other => Error::InvalidRequest {
            path: set.path.clone(),
            reason: other.to_string(),
        },
    })
}

/// The live ranges that overlap the ranges verification looks at closely,
/// with their owners (a second walk collects only these, so memory follows
/// the damage, not the number of objects).
struct Owners {
    ranges: Vec<LiveRange>,
}

impl Owners {
    /// Walks the source again and keeps the live ranges overlapping
    /// `wanted` (sorted, non-overlapping).
    fn collect<F: PartFile>(
        set: &OpenSet<F>,
        source: usize,
        pool_size: u64,
        wanted: &[LogicalRange],
    ) -> Result<Owners, Error> {
        let mut ranges = Vec::new();
        if wanted.is_empty() {
            return Ok(Owners { ranges });
        }
        let mut i = 0usize;
        walk_source(set, source, pool_size, |lr| {
            while wanted.get(i).is_some_and(|w| w.end() <= lr.offset) {
                i += 1;
            }
            if wanted.get(i).is_some_and(|w| w.offset < lr.end()) {
                ranges.push(*lr);
            }
        })?;
        Ok(Owners { ranges })
    }

    /// The ranges overlapping `[offset, offset + len)`.
    fn overlapping(&self, offset: u64, len: u64) -> &[LiveRange] {
        let end = offset.saturating_add(len);
        let first = self.ranges.partition_point(|r| r.end() <= offset);
        let last = self.ranges.partition_point(|r| r.offset < end);
        self.ranges.get(first..last.max(first)).unwrap_or_default()
    }
}

/// Sorted union of sorted, non-overlapping lists.
fn union(lists: &[&[LogicalRange]]) -> Vec<LogicalRange> {
    let mut all: Vec<LogicalRange> = lists.iter().flat_map(|l| l.iter().copied()).collect();
    all.sort();
    let mut out = Vec::new();
    for r in all {
        push_merged(&mut out, r);
    }
    out
}

/// Replica `r` of `set` as an endpoint.
fn endpoint<F: PartFile>(set: &OpenSet<F>, r: usize) -> Result<&dyn Endpoint, Error> {
    set.replica(r)
        .map(|rep| rep as &dyn Endpoint)
        .ok_or_else(|| Error::InvalidRequest {
            path: set.path.clone(),
            reason: format!("replica {r}: not in the pool set"),
        })
}

/// Replicas `list` of `set` as endpoints.
fn endpoints<'s, F: PartFile>(
    set: &'s OpenSet<F>,
    list: &[usize],
) -> Result<Vec<&'s dyn Endpoint>, Error> {
    list.iter().map(|&r| endpoint(set, r)).collect()
}

/// `1, 2`: the replicas other than `source`, for hints.
fn others_text<F>(set: &OpenSet<F>, source: usize) -> String {
    let list: Vec<String> = (0..set.replicas.len())
        .filter(|&r| r != source)
        .map(|r| r.to_string())
        .collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

/// Compares replicas `compared` of `set` with `source` over the live ranges
/// of the source's heap (`pool_size` bytes), lists every divergence and
/// applies the majority rule. Replicas neither the source nor in `compared`
/// are listed as not compared with `skipped_note`.
pub fn find<F: PartFile>(
    set: &OpenSet<F>,
    source: usize,
    compared: &[usize],
    pool_size: u64,
    skipped_note: &dyn Fn(usize) -> String,
    options: &VerifyOptions,
) -> Result<Findings, Error> {
    let mut spans: Vec<LogicalRange> = Vec::new();
    let stats = walk_source(set, source, pool_size, |lr| {
        push_merged(&mut spans, LogicalRange::new(lr.offset, lr.len));
    })?;
    let mut findings = Findings {
        path: set.path.clone(),
        source,
        pool_size,
        live_bytes: stats.live_bytes,
        objects: stats.objects,
        bytes_compared: 0,
        replicas: Vec::new(),
        outvoted: None,
    };
    let mut raw: Vec<Vec<LogicalRange>> = vec![Vec::new(); set.replicas.len()];
    // Every replica at once: each stretch of the source is read only once.
    let others: Vec<usize> = (0..set.replicas.len())
        .filter(|&r| r != source && compared.contains(&r))
        .collect();
    let eps = endpoints(set, &others)?;
    let outcomes = compare_many(endpoint(set, source)?, &eps, &spans, &options.compare)?;
    for (r, outcome) in others.into_iter().zip(outcomes) {
        findings.bytes_compared += outcome.stats.bytes_compared;
        if let Some(blocks) = raw.get_mut(r) {
            *blocks = outcome.differing;
        }
    }
    drop(spans);
    let lists: Vec<&[LogicalRange]> = raw.iter().map(Vec::as_slice).collect();
    let live = Owners::collect(set, source, pool_size, &union(&lists))?;
    let mut internal_cache = BTreeMap::new();
    // The root object is internal too, but it is the application's data.
    let root_offset = read_descriptor(set, source).map_or(0, |d| d.root_offset);
    for (r, blocks) in raw.into_iter().enumerate() {
        let mut rf = ReplicaFindings {
            replica: r,
            ..ReplicaFindings::default()
        };
        if r == source {
            rf.note = Some("source".to_string());
        } else if compared.contains(&r) {
            rf.compared = true;
            let internal = internal_objects(
                set,
                &live,
                source,
                root_offset,
                &blocks,
                &mut internal_cache,
            )?;
            let differing = subtract(&blocks, &internal);
            narrow(set, &live, source, r, &differing, |d| {
                rf.ranges += 1;
                rf.bytes += d.len;
                if rf.divergences.len() < MAX_LISTED {
                    rf.divergences.push(d);
                }
            })?;
            rf.blocks = differing;
        } else {
            rf.note = Some(skipped_note(r));
        }
        findings.replicas.push(rf);
    }
    findings.outvoted = majority(set, &live, source, &findings, options)?;
    Ok(findings)
}

/// The majority rule (ARCHITECTURE.md, "Choosing the source"): with three or more replicas
/// and at least two compared, the blocks where every compared replica
/// differs from the source and all compared replicas agree.
fn majority<F: PartFile>(
    set: &OpenSet<F>,
    live: &Owners,
    source: usize,
    findings: &Findings,
    options: &VerifyOptions,
) -> Result<Option<Outvoted>, Error> {
    let voters: Vec<&ReplicaFindings> = findings.replicas.iter().filter(|r| r.compared).collect();
    let (Some(first), true) = (voters.first(), set.replicas.len() >= 3 && voters.len() >= 2) else {
        return Ok(None);
    };
    let mut common = first.blocks.clone();
    for v in voters.iter().skip(1) {
        common = intersect(&common, &v.blocks);
    }
    for v in voters.iter().skip(1) {
        if common.is_empty() {
            break;
        }
        let disagree = compare_replicas(set, first.replica, v.replica, &common, &options.compare)?;
        common = subtract(&common, &disagree.differing);
    }
    if common.is_empty() {
        return Ok(None);
    }
    let mut out = Outvoted {
        replica: source,
        majority: voters.iter().map(|v| v.replica).collect(),
        ranges: 0,
        bytes: 0,
        divergences: Vec::new(),
    };
    // Reported as the source differs from the majority: the source's
    // replica number, with the majority's first replica's locations.
    narrow(set, live, first.replica, source, &common, |d| {
        out.ranges += 1;
        out.bytes += d.len;
        if out.divergences.len() < MAX_LISTED {
            out.divergences.push(d);
        }
    })?;
    Ok((out.ranges > 0).then_some(out))
}

/// Flag of libpmemobj's internal objects (undo log extensions) in the top
/// 16 bits of a compact allocation header's `size` (`OBJ_INTERNAL_OBJECT_MASK`).
const INTERNAL_OBJECT_FLAG: u64 = 1 << 15;

/// The user data of the internal objects other than the root object (at
/// pool offset `root_offset`) overlapping `blocks`: undo log extensions, whose generation numbers libpmemobj bumps without
/// replicating them, so replicas of a healthy pool differ there. They are
/// neither reported nor repaired (copying an older generation number over
/// the master could revive stale log entries). `cache` remembers each
/// object's verdict across replicas.
fn internal_objects<F: PartFile>(
    set: &OpenSet<F>,
    live: &Owners,
    source: usize,
    root_offset: u64,
    blocks: &[LogicalRange],
    cache: &mut BTreeMap<u64, bool>,
) -> Result<Vec<LogicalRange>, Error> {
    let mut out = Vec::new();
    for block in blocks {
        for lr in live.overlapping(block.offset, block.len) {
            let Owner::Object { offset: user, .. } = lr.owner else {
                continue;
            };
            // Only compact headers (16 bytes) carry flags.
            if user == root_offset
                || user.saturating_sub(lr.offset) != poolsync_header::heap::ALLOC_HDR_COMPACT_SIZE
            {
                continue;
            }
            let internal = match cache.get(&lr.offset) {
                Some(&v) => v,
                None => {
                    let mut hdr = [0u8; 8];
                    set.read_logical(source, lr.offset, &mut hdr)?;
                    let v = (u64::from_le_bytes(hdr) >> 48) & INTERNAL_OBJECT_FLAG != 0;
                    cache.insert(lr.offset, v);
                    v
                }
            };
            if internal {
                let r = LogicalRange::from_bounds(user, lr.end());
                if out.last() != Some(&r) {
                    out.push(r);
                }
            }
        }
    }
    Ok(out)
}

/// Sorted, non-overlapping `a` ∩ `b`.
fn intersect(a: &[LogicalRange], b: &[LogicalRange]) -> Vec<LogicalRange> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        if let Some(both) = x.intersect(y) {
            out.push(both);
        }
        if x.end() <= y.end() {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Sorted, non-overlapping `a` minus `b`.
fn subtract(a: &[LogicalRange], b: &[LogicalRange]) -> Vec<LogicalRange> {
    let mut out = Vec::new();
    for x in a {
        let mut start = x.offset;
        for y in b.iter().filter(|y| y.intersect(x).is_some()) {
            if y.offset > start {
                out.push(LogicalRange::from_bounds(start, y.offset));
            }
            start = start.max(y.end());
        }
        if start < x.end() {
            out.push(LogicalRange::from_bounds(start, x.end()));
        }
    }
    out
}

/// The sub-range of a live range around `offset` whose bytes share one
/// owner in reports: a lane, a chunk header, a run header or bitmap, an
/// allocation header or an object's user data.
fn unit_of(range: &LiveRange, offset: u64) -> (u64, u64) {
    let rel = offset.saturating_sub(range.offset);
    let fixed = |size: u64| {
        let start = range.offset + rel - rel % size;
        (start, (start + size).min(range.end()))
    };
    match range.owner {
        Owner::Lanes => fixed(LANE_SIZE),
        Owner::ChunkHeaders { .. } => fixed(CHUNK_HEADER_SIZE),
        Owner::RunMetadata { .. } => {
            let head = (range.offset + poolsync_header::heap::RUN_HEADER_SIZE).min(range.end());
            if offset < head {
                (range.offset, head)
            } else {
                (head, range.end())
            }
        }
        Owner::Object { offset: user, .. } => {
            let user = user.clamp(range.offset, range.end());
            if offset < user {
                (range.offset, user)
            } else {
                (user, range.end())
            }
        }
        _ => (range.offset, range.end()),
    }
}

/// Reads `ranges` of `left` (the source) and `right` in bounded chunks and
/// calls `emit` with one [`Divergence`] of `right` per cluster of differing
/// live bytes of one owner (differences less than [`GAP`] apart join), from
/// its first to its last differing byte.
fn narrow<F: PartFile>(
    set: &OpenSet<F>,
    live: &Owners,
    left: usize,
    right: usize,
    ranges: &[LogicalRange],
    mut emit: impl FnMut(Divergence),
) -> Result<(), Error> {
    let mut pending: Option<(Place, u64, u64)> = None;
    let flush = |p: Option<(Place, u64, u64)>, emit: &mut dyn FnMut(Divergence)| {
        if let Some((place, start, end)) = p {
            emit(Divergence {
                replica: right,
                offset: start,
                len: end - start,
                owner: place.to_string(),
                locations: locations(set, &[right, left], start, end - start),
            });
        }
    };
    let mut lbuf = Vec::new();
    let mut rbuf = Vec::new();
    for range in ranges {
        let mut pos = range.offset;
        while pos < range.end() {
            let n = (range.end() - pos).min(NARROW_CHUNK);
            let len = usize::try_from(n).map_err(|_| Error::InvalidOptions {
                reason: "a comparison chunk does not fit in memory",
            })?;
            lbuf.resize(len, 0);
            rbuf.resize(len, 0);
            set.read_logical(left, pos, &mut lbuf)?;
            set.read_logical(right, pos, &mut rbuf)?;
            if lbuf != rbuf {
                for lr in live.overlapping(pos, n) {
                    let mut at = lr.offset.max(pos);
                    let stop = lr.end().min(pos + n);
                    while at < stop {
                        let (_, unit_end) = unit_of(lr, at);
                        let unit_end = unit_end.min(stop).max(at + 1);
                        let (lo, hi) = ((at - pos) as usize, (unit_end - pos) as usize);
                        // Block by block within the unit, so that scattered
                        // damage in a large object is reported where it is.
                        let mut b = lo;
                        while b < hi {
                            let logical = pos + b as u64;
                            let next = (logical - logical % BLOCK + BLOCK).min(unit_end);
                            let bend = (next - pos) as usize;
                            let (l, r) = (
                                lbuf.get(b..bend).unwrap_or_default(),
                                rbuf.get(b..bend).unwrap_or_default(),
                            );
                            let first = l.iter().zip(r).position(|(x, y)| x != y);
                            let last = l.iter().zip(r).rposition(|(x, y)| x != y);
                            if let (Some(f), Some(la), Some(place)) = (first, last, lr.place_of(at))
                            {
                                let (s, e) = (logical + f as u64, logical + la as u64 + 1);
                                match &mut pending {
                                    Some((p, _, end)) if *p == place && s <= *end + GAP => *end = e,
                                    _ => flush(pending.replace((place, s, e)), &mut emit),
                                }
                            }
                            b = bend;
                        }
                        at = unit_end;
                    }
                }
            }
            pos += n;
        }
    }
    flush(pending.take(), &mut emit);
    Ok(())
}

/// The pieces of `[offset, offset + len)` in each of `replicas`.
fn locations<F: PartFile>(
    set: &OpenSet<F>,
    replicas: &[usize],
    offset: u64,
    len: u64,
) -> Vec<Location> {
    replicas
        .iter()
        .filter_map(|&r| set.replica(r))
        .flat_map(|rep| rep.locate(LogicalRange::new(offset, len)))
        .collect()
}

/// `check --data`: opens the pool set read-only, judges its headers, picks
/// the source (`options.source` or the lowest-index healthy replica) and
/// compares every other healthy replica with it. Broken replicas are listed
/// as not compared (and make the findings unclean).
pub fn check_data<S: Storage>(
    storage: &S,
    path: &Path,
    options: &VerifyOptions,
) -> Result<Findings, Error> {
    let set = open(storage, path, Access::ReadOnly)?;
    let health = inspect(&set);
    let healthy = |r: usize| health.replicas.get(r).is_some_and(|h| h.healthy);
    let source = choose_source(set.replicas.len(), options.source, healthy).map_err(|why| {
        Error::InvalidRequest {
            path: set.path.clone(),
            reason: match why {
                SourceRefusal::NoSuchReplica { requested: n, last } => {
                    format!("--source {n}: the pool set has replicas 0 to {last}")
                }
                SourceRefusal::Unusable { requested: n } => {
                    format!("--source {n}: replica {n} is not healthy (see poolsync check)")
                }
                SourceRefusal::NoneUsable => {
                    "no healthy replica to compare with (see poolsync check)".to_string()
                }
            },
        }
    })?;
    let compared: Vec<usize> = (0..set.replicas.len())
        .filter(|&r| r != source && healthy(r))
        .collect();
    let note = |r: usize| {
        let why = health
            .replicas
            .get(r)
            .and_then(|h| {
                h.message
                    .clone()
                    .or_else(|| h.parts.iter().find_map(|p| p.message.clone()))
            })
            .unwrap_or_else(|| "its headers are not healthy".to_string());
        format!("not compared: replica {r} is broken ({why}); poolsync sync rebuilds it")
    };
    find(&set, source, &compared, set.set_pool_size(), &note, options)
}

/// Copies the source's bytes of every differing block that `findings`
/// lists over each compared replica, through the executor: flushed as
/// written, fenced per replica, with progress, and with a block the source
/// cannot read (`EIO`) taken from another replica that agrees with the
/// source there. `set` must be open read-write.
pub fn repair<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    findings: &Findings,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<RepairReport, Error> {
    if set.access != Access::ReadWrite {
        return Err(Error::InvalidRequest {
            path: set.path.clone(),
            reason: "the pool set is not open read-write".to_string(),
        });
    }
    let source = findings.source;
    let mut report = RepairReport {
        source,
        replicas: Vec::new(),
    };
    for rf in findings.replicas.iter().filter(|r| !r.blocks.is_empty()) {
        let steps = repair_steps(set, source, rf)?;
        // Replicas compared with the source that differ from it nowhere
        // this replica does can stand in for it.
        let alternates: Vec<usize> = findings
            .replicas
            .iter()
            .filter(|o| o.compared && o.replica != rf.replica)
            .filter(|o| intersect(&o.blocks, &rf.blocks).is_empty())
            .map(|o| o.replica)
            .collect();
        let done = crate::exec::run(
            storage,
            &set.path.clone(),
            &steps,
            &mut Endpoints::of(set),
            RunOptions {
                alternates: &alternates,
                tuning: Tuning {
                    stride: options.compare.stride,
                    threads: options.compare.threads,
                },
                progress,
            },
        )?;
        report.replicas.push(ReplicaRepair {
            replica: rf.replica,
            ranges: rf.ranges,
            bytes: rf.bytes,
            bytes_written: done.bytes_copied,
        });
    }
    Ok(report)
}

/// The copy steps that put the source's bytes over every differing block
/// of one replica.
fn repair_steps<F: PartFile>(
    set: &OpenSet<F>,
    source: usize,
    rf: &ReplicaFindings,
) -> Result<Vec<Step>, Error> {
    let from = (source, endpoint(set, source)?);
    let to = (rf.replica, endpoint(set, rf.replica)?);
    Ok(rf
        .blocks
        .iter()
        .flat_map(|block| data_steps(DataPurpose::Verify, from, to, *block))
        .collect())
}

/// Progress of a part of a longer run: advances go through, the start and
/// the end are the whole run's.
struct Within<'a>(&'a dyn Progress);

impl Progress for Within<'_> {
    fn advance(&self, bytes: u64) {
        self.0.advance(bytes);
    }
}

/// Bytes [`repair`] writes for `findings`.
fn repair_bytes(findings: &Findings) -> u64 {
    findings
        .replicas
        .iter()
        .flat_map(|r| r.blocks.iter())
        .map(|b| b.len)
        .sum()
}

/// `sync --verify`: plans the sync, verifies the replicas the sync leaves
/// alone against its source, applies the majority rule (refusing before
/// anything is written unless `--force-source`), then executes the sync and
/// repairs every divergent block. A dry run stops after verification and
/// returns the plan and the findings.
pub fn sync_verify<S: Storage>(
    storage: &S,
    path: &Path,
    sync_options: &SyncOptions,
    verify: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyOutcome, Error> {
    let mut set = open_for_sync(storage, path, sync_options)?;
    let survey = survey(storage, &set, sync_options)?;
    let plan = plan(&set, &survey, sync_options)?;
    let health = &survey.health;
    let healthy = |r: usize| health.replicas.get(r).is_some_and(|h| h.healthy);
    let compared: Vec<usize> = (0..set.replicas.len())
        .filter(|&r| r != plan.source && healthy(r))
        .collect();
    let note = |r: usize| format!("not compared: sync rebuilds replica {r} from the source");
    let findings = find(&set, plan.source, &compared, plan.pool_size, &note, verify)?;
    if let (Some(o), false) = (&findings.outvoted, verify.force_source) {
        return Err(outvoted_error(&set.path, o));
    }
    if sync_options.dry_run {
        return Ok(VerifyOutcome {
            sync: SyncOutcome { plan, report: None },
            findings,
            repair: None,
        });
    }
    progress
        .start(plan.totals.bytes_to_copy + plan.totals.bytes_to_compare + repair_bytes(&findings));
    let report = execute(storage, &mut set, &plan, sync_options, &Within(progress))?;
    let repaired = repair(storage, &mut set, &findings, verify, progress)?;
    progress.finish();
    Ok(VerifyOutcome {
        sync: SyncOutcome {
            plan,
            report: Some(report),
        },
        findings,
        repair: Some(repaired),
    })
}

/// The refusal of the majority rule.
fn outvoted_error(set: &Path, o: &Outvoted) -> Error {
    let first = o.divergences.first();
    Error::Outvoted {
        set: set.to_path_buf(),
        replica: o.replica,
        majority: o
            .majority
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        take: o.majority.first().copied().unwrap_or(0),
        offset: first.map_or(0, |d| d.offset),
        end: first.map_or(0, |d| d.offset + d.len),
        what: format!(
            "({}){}",
            first.map_or("", |d| d.owner.as_str()),
            match o.ranges.saturating_sub(1) {
                0 => String::new(),
                n => format!(" and {n} more range(s)"),
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(o: u64, l: u64) -> LogicalRange {
        LogicalRange::new(o, l)
    }

    #[test]
    fn intersect_and_subtract_of_sorted_lists() {
        let a = [r(0, 10), r(20, 10), r(40, 10)];
        let b = [r(5, 20), r(45, 100)];
        assert_eq!(intersect(&a, &b), vec![r(5, 5), r(20, 5), r(45, 5)]);
        assert_eq!(subtract(&a, &b), vec![r(0, 5), r(25, 5), r(40, 5)]);
        assert_eq!(subtract(&a, &[]), a.to_vec());
        assert!(intersect(&a, &[]).is_empty());
    }

    #[test]
    fn units_follow_owners() {
        let lanes = LiveRange {
            offset: 0x2000,
            len: 3 * LANE_SIZE,
            owner: Owner::Lanes,
        };
        assert_eq!(
            unit_of(&lanes, 0x2000 + LANE_SIZE + 5),
            (0x2000 + LANE_SIZE, 0x2000 + 2 * LANE_SIZE)
        );
        let obj = LiveRange {
            offset: 1000,
            len: 116,
            owner: Owner::Object {
                zone: 0,
                chunk: 1,
                offset: 1016,
                size: 100,
            },
        };
        assert_eq!(unit_of(&obj, 1003), (1000, 1016));
        assert_eq!(unit_of(&obj, 1050), (1016, 1116));
    }
}
