//! The live ranges of a replica: its heap walked with the header crate's
//! walker (ARCHITECTURE.md, "Heap-aware verification"), what both finding
//! differences and deciding them need.

use poolsync_header::heap::{walk_visit, HeapStats, LiveRange, WalkError};
use poolsync_pmem::PartFile;

use crate::inspect::read_descriptor;
use crate::open::OpenSet;
use crate::range::LogicalRange;
use crate::Error;

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
        error: Box::new(source_err),
    };
    let desc = read_descriptor(set, source).map_err(|reason| Error::SourceDescriptor {
        set: set.path.clone(),
        replica: source,
        reason,
        others: others_text(set, source),
    })?;
    // A pool that fits in some replica as listed but not in the smallest:
    // the pool set file lists a replica too small (edited by hand, say),
    // which is no damage in the heap.
    let pool_end = desc.heap_offset.saturating_add(desc.heap_size);
    if pool_end > pool_size && set.replicas.iter().any(|r| r.net_size >= pool_end) {
        if let Some(small) = set.replicas.iter().find(|r| r.net_size < pool_end) {
            return Err(Error::ReplicaTooSmall {
                set: set.path.clone(),
                replica: small.index,
                listed: small.net_size,
                pool: pool_end,
            });
        }
    }
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
        WalkError::Read { error, .. } | WalkError::Visit { error, .. } => error,
        other => Error::InvalidRequest {
            path: set.path.clone(),
            reason: other.to_string(),
        },
    })
}

/// The live ranges that overlap the ranges verification looks at closely,
/// with their owners (a second walk collects only these, so memory follows
/// the damage, not the number of objects).
pub(super) struct Owners {
    ranges: Vec<LiveRange>,
}

impl Owners {
    /// Walks the source again and keeps the live ranges overlapping
    /// `wanted` (sorted, non-overlapping).
    pub(super) fn collect<F: PartFile>(
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
    pub(super) fn overlapping(&self, offset: u64, len: u64) -> &[LiveRange] {
        let end = offset.saturating_add(len);
        let first = self.ranges.partition_point(|r| r.end() <= offset);
        let last = self.ranges.partition_point(|r| r.offset < end);
        self.ranges.get(first..last.max(first)).unwrap_or_default()
    }
}

/// `1, 2`: the replicas other than `source`, for hints.
pub(super) fn others_text<F>(set: &OpenSet<F>, source: usize) -> String {
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
