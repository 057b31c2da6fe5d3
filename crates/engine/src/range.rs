//! Logical ranges: the address every data movement is expressed in
//! (ARCHITECTURE.md, "Logical ranges").

use serde::Serialize;

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
