//! Finding where replicas differ: the source's heap walked into live
//! ranges, every compared replica compared with it over them, each
//! difference narrowed to the bytes of one owner.

use std::collections::BTreeMap;

use poolsync_header::heap::{LiveRange, Owner, Place};
use poolsync_header::{CHUNK_HEADER_SIZE, LANE_SIZE};
use poolsync_pmem::PartFile;

use super::decide::{decide, Decisions, HeapCheck, SourceChoice, Verdict, Votes};
use super::live::{walk_source, Owners};
use super::{Divergence, Findings, Outvoted, ReplicaFindings, Tie, VerifyOptions, MAX_LISTED};
use crate::compare::{compare_many, push_merged, LogicalRange, BLOCK};
use crate::endpoint::{Endpoint, Location};
use crate::inspect::read_descriptor;
use crate::open::OpenSet;
use crate::progress::Progress;
use crate::Error;

/// Differing bytes of one owner closer than this are reported as one range.
const GAP: u64 = BLOCK;
/// Bytes read from each side at once when narrowing a differing range.
const NARROW_CHUNK: u64 = 1 << 20;

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
pub(super) fn endpoint<F: PartFile>(set: &OpenSet<F>, r: usize) -> Result<&dyn Endpoint, Error> {
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

/// What [`find`] is asked to compare.
pub(super) struct Request<'a> {
    /// The replica compared with.
    pub source: usize,
    /// How it was chosen.
    pub choice: SourceChoice,
    /// The heap walk of the source and the compared replicas.
    pub heap: Vec<HeapCheck>,
    /// The replicas compared with it.
    pub compared: &'a [usize],
    /// Bytes of the pool.
    pub pool_size: u64,
    /// Why each replica neither the source nor compared was left out.
    pub skipped_note: &'a dyn Fn(usize) -> String,
    /// Told the bytes to compare, then each stretch compared.
    pub progress: &'a dyn Progress,
}

/// Compares the replicas `req.compared` of `set` with `req.source` over
/// the live ranges of the source's heap, lists every divergence, and
/// decides for each which replica is right ([`super::decide`]).
pub(super) fn find<F: PartFile>(
    set: &OpenSet<F>,
    req: Request<'_>,
    options: &VerifyOptions,
) -> Result<Findings, Error> {
    let (source, compared, pool_size) = (req.source, req.compared, req.pool_size);
    let mut spans: Vec<LogicalRange> = Vec::new();
    let stats = walk_source(set, source, pool_size, |lr| {
        push_merged(&mut spans, LogicalRange::new(lr.offset, lr.len));
    })?;
    let mut raw: BTreeMap<usize, Vec<LogicalRange>> = BTreeMap::new();
    let mut bytes_compared = 0;
    // Every replica at once: each stretch of the source is read only once.
    let others: Vec<usize> = (0..set.replicas.len())
        .filter(|&r| r != source && compared.contains(&r))
        .collect();
    let eps = endpoints(set, &others)?;
    let live_bytes: u64 = spans.iter().map(|r| r.len).sum();
    req.progress
        .start(live_bytes.saturating_mul(others.len() as u64));
    let outcomes = compare_many(
        endpoint(set, source)?,
        &eps,
        &spans,
        &options.compare,
        req.progress,
    )?;
    for (&r, outcome) in others.iter().zip(outcomes) {
        bytes_compared += outcome.stats.bytes_compared;
        raw.insert(r, outcome.differing);
    }
    drop(spans);
    let lists: Vec<&[LogicalRange]> = raw.values().map(Vec::as_slice).collect();
    let live = Owners::collect(set, source, pool_size, &union(&lists))?;
    // The bytes of libpmemobj's internal objects legitimately differ.
    let mut internal_cache = BTreeMap::new();
    // The root object is internal too, but it is the application's data.
    let root_offset = read_descriptor(set, source).map_or(0, |d| d.root_offset);
    let mut differing: BTreeMap<usize, Vec<LogicalRange>> = BTreeMap::new();
    for (r, blocks) in raw {
        let internal = internal_objects(
            set,
            &live,
            source,
            root_offset,
            &blocks,
            &mut internal_cache,
        )?;
        differing.insert(r, subtract(&blocks, &internal));
    }
    let decisions = decide(&Votes {
        set,
        live: &live,
        source,
        differing: &differing,
        heap: &req.heap,
        requested: matches!(req.choice, SourceChoice::Requested),
        force_source: options.force_source,
        compare: &options.compare,
    })?;
    let mut findings = Findings {
        path: set.path.clone(),
        source,
        source_choice: req.choice,
        heap: req.heap,
        pool_size,
        live_bytes: stats.live_bytes,
        objects: stats.objects,
        bytes_compared,
        replicas: Vec::new(),
        outvoted: None,
        tie: None,
    };
    for r in 0..set.replicas.len() {
        let mut rf = ReplicaFindings {
            replica: r,
            ..ReplicaFindings::default()
        };
        if r == source {
            rf.note = Some("source".to_string());
        } else if let Some(blocks) = differing.get(&r) {
            rf.compared = true;
            narrow(set, &live, source, r, blocks, |mut d| {
                d.verdict = decisions
                    .verdict_at(r, d.offset)
                    .cloned()
                    .unwrap_or(Verdict::Tie);
                rf.ranges += 1;
                rf.bytes += d.len;
                if d.verdict == Verdict::Tie {
                    rf.undecided_ranges += 1;
                    rf.undecided_bytes += d.len;
                }
                if rf.divergences.len() < MAX_LISTED {
                    rf.divergences.push(d);
                }
            })?;
            rf.blocks = blocks.clone();
            rf.repair = decisions.repairs(r);
        } else {
            rf.note = Some((req.skipped_note)(r));
        }
        findings.replicas.push(rf);
    }
    findings.outvoted = outvoted(set, &live, source, &decisions)?;
    findings.tie = tie(&findings);
    Ok(findings)
}

/// The ranges where the source is outvoted, as the source differs from the
/// majority's first replica.
fn outvoted<F: PartFile>(
    set: &OpenSet<F>,
    live: &Owners,
    source: usize,
    decisions: &Decisions,
) -> Result<Option<Outvoted>, Error> {
    let mut majority: Option<Vec<usize>> = None;
    let mut ranges: Vec<LogicalRange> = Vec::new();
    for list in decisions.per_replica.values() {
        for (range, verdict) in list {
            let m = match verdict {
                Verdict::Outvoted { majority: m } => m,
                Verdict::Chosen { outvoted_by: m } if !m.is_empty() => m,
                _ => continue,
            };
            majority.get_or_insert_with(|| m.clone());
            ranges.push(*range);
        }
    }
    let Some(majority) = majority else {
        return Ok(None);
    };
    let ranges = union(&[&ranges]);
    let first = majority.first().copied().unwrap_or(source);
    let mut out = Outvoted {
        replica: source,
        majority,
        ranges: 0,
        bytes: 0,
        divergences: Vec::new(),
    };
    narrow(set, live, first, source, &ranges, |d| {
        out.ranges += 1;
        out.bytes += d.len;
        if out.divergences.len() < MAX_LISTED {
            out.divergences.push(d);
        }
    })?;
    Ok((out.ranges > 0).then_some(out))
}

/// The first replica with ranges nothing decides, and those ranges.
fn tie(findings: &Findings) -> Option<Tie> {
    findings.replicas.iter().find_map(|rf| {
        let first = rf.divergences.iter().find(|d| d.verdict == Verdict::Tie)?;
        Some(Tie {
            replicas: vec![findings.source, rf.replica],
            ranges: rf.undecided_ranges,
            bytes: rf.undecided_bytes,
            first: first.clone(),
        })
    })
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
pub(super) fn intersect(a: &[LogicalRange], b: &[LogicalRange]) -> Vec<LogicalRange> {
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
                verdict: Verdict::Tie,
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
