//! The replica address-space map (docs/format.md §15.1;
//! ARCHITECTURE.md, "Logical ranges"): where each logical offset of a replica
//! lives in its part files.

use serde::Serialize;

use crate::{page_align_down, PartSize, PoolSet, Replica};

/// Where one part of a replica sits in the replica's logical address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// Part index within the replica.
    pub part: usize,
    /// First logical offset the part covers.
    pub logical: u64,
    /// File offset of that first logical byte: 0 for part 0, and for every
    /// part with `SINGLEHDR`/`NOHDRS`; else 4096, past the part's header page.
    pub file_offset: u64,
    /// Bytes of address space the part covers (0 is possible for a part 0
    /// smaller than a page).
    pub len: u64,
}

/// A piece of a logical range that falls in one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Piece {
    /// Part index within the replica.
    pub part: usize,
    /// Offset in the part file of the piece's first byte.
    pub file_offset: u64,
    /// Logical offset of the piece's first byte.
    pub logical: u64,
    /// Length in bytes (never 0).
    pub len: u64,
}

impl PoolSet {
    /// The address-space map of local replica `replica`: one extent per part,
    /// back to back from logical 0.
    ///
    /// Part 0 covers logical `[0, U0)` at file offset 0 (its header page is
    /// inside the address space); part `k ≥ 1` covers
    /// `[S_k, S_k + U_k − H)` at file offset `H`, where `U = A(size)` and `H`
    /// is [`PoolSet::header_gap`]. The extents' lengths add up to
    /// [`PoolSet::replica_size`].
    ///
    /// `None` for a remote replica, an index out of range, an `AUTO` part, a
    /// part `k ≥ 1` smaller than its header gap (PMDK cannot map it either),
    /// and an address space that does not fit in a `u64`.
    pub fn extents(&self, replica: usize) -> Option<Vec<Extent>> {
        let Replica::Local { parts, .. } = self.replicas.get(replica)? else {
            return None;
        };
        let gap = self.header_gap();
        let mut extents = Vec::with_capacity(parts.len());
        let mut logical: u64 = 0;
        for (index, part) in parts.iter().enumerate() {
            let PartSize::Bytes(bytes) = part.size else {
                return None;
            };
            let usable = page_align_down(bytes);
            let (file_offset, len) = if index == 0 {
                (0, usable)
            } else {
                (gap, usable.checked_sub(gap)?)
            };
            extents.push(Extent {
                part: index,
                logical,
                file_offset,
                len,
            });
            logical = logical.checked_add(len)?;
        }
        Some(extents)
    }
}

/// Splits the logical range `[offset, offset + len)` at part boundaries.
///
/// The pieces come in logical order, each inside one extent, and together
/// cover exactly the part of the range that lies inside the extents; the
/// rest of the range (beyond the last extent) is dropped. A range that would
/// end past `u64::MAX` ends there. Pure, and the one mapping every copy and
/// compare uses.
///
/// `extents` is expected as [`PoolSet::extents`] returns it (sorted,
/// back to back); any other slice gives one piece per overlapping extent, in
/// the slice's order, without panicking.
pub fn map_range(extents: &[Extent], offset: u64, len: u64) -> Vec<Piece> {
    let end = offset.saturating_add(len);
    let mut pieces = Vec::new();
    for extent in extents {
        let extent_end = extent.logical.saturating_add(extent.len);
        let start = offset.max(extent.logical);
        let stop = end.min(extent_end);
        if start >= stop {
            continue;
        }
        pieces.push(Piece {
            part: extent.part,
            file_offset: extent.file_offset.saturating_add(start - extent.logical),
            logical: start,
            len: stop - start,
        });
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    #[test]
    fn default_headers_shift_later_parts() {
        let set = parse("PMEMPOOLSET\n20M /a\n20M /b\n21M /c\n").unwrap();
        let extents = set.extents(0).unwrap();
        let m = 1u64 << 20;
        assert_eq!(
            extents,
            [
                Extent {
                    part: 0,
                    logical: 0,
                    file_offset: 0,
                    len: 20 * m
                },
                Extent {
                    part: 1,
                    logical: 20 * m,
                    file_offset: 4096,
                    len: 20 * m - 4096
                },
                Extent {
                    part: 2,
                    logical: 40 * m - 4096,
                    file_offset: 4096,
                    len: 21 * m - 4096
                },
            ]
        );
        // A range across the first boundary.
        assert_eq!(
            map_range(&extents, 20 * m - 10, 20),
            [
                Piece {
                    part: 0,
                    file_offset: 20 * m - 10,
                    logical: 20 * m - 10,
                    len: 10
                },
                Piece {
                    part: 1,
                    file_offset: 4096,
                    logical: 20 * m,
                    len: 10
                },
            ]
        );
        // Beyond the end: clipped, then nothing.
        let total = set.replica_size(0).unwrap();
        assert_eq!(map_range(&extents, total - 5, 100).len(), 1);
        assert!(map_range(&extents, total, 100).is_empty());
        assert!(map_range(&extents, 0, 0).is_empty());
    }

    #[test]
    fn single_header_maps_whole_parts() {
        let set = parse("PMEMPOOLSET\nOPTION SINGLEHDR\n8M /a\n8M /b\n").unwrap();
        let extents = set.extents(0).unwrap();
        assert_eq!(extents[1].file_offset, 0);
        assert_eq!(extents[1].logical, 8 << 20);
        assert_eq!(extents[1].len, 8 << 20);
    }

    #[test]
    fn unmappable_replicas() {
        let set = parse("PMEMPOOLSET\n8M /a\n100 /b\nREPLICA\nAUTO /c\nREPLICA h d\n").unwrap();
        assert_eq!(set.extents(0), None);
        assert_eq!(set.extents(1), None);
        assert_eq!(set.extents(2), None);
        assert_eq!(set.extents(3), None);
        let tiny_first = parse("PMEMPOOLSET\n100 /a\n8M /b\n").unwrap();
        let extents = tiny_first.extents(0).unwrap();
        assert_eq!(extents[0].len, 0);
        assert_eq!(map_range(&extents, 0, 10)[0].part, 1);
    }
}
