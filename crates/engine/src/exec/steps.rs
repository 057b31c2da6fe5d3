//! The executor's vocabulary: the steps of a plan, each naming endpoints
//! (by their number in the plan) and logical ranges, and the counts a plan
//! and a run report.
//!
//! A sync plan, a transform plan and a verify repair are all lists of these
//! steps, carried out by the one executor, [`crate::exec::run`].

use std::path::PathBuf;

use poolsync_header::PoolHdr;
use serde::Serialize;

use crate::badblocks::RecoveryFilePlan;
use crate::endpoint::{Endpoint, Location};
use crate::range::LogicalRange;
pub use crate::ring::HeaderAction;
use crate::ring::UuidOrigin;

/// Why a data step copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPurpose {
    /// Filling a recreated part.
    Rebuild,
    /// Repairing a broken part that exists.
    Repair,
    /// Replacing bad blocks listed in recovery files or found by the query.
    BadBlocks,
    /// Replacing live blocks that verification found divergent.
    Verify,
}

/// A copy or compare of one logical range that lies in one part of each
/// side. Both sides are endpoints, named by their number in the plan: the
/// replicas of the set being written first, then any further endpoint (a
/// transform's temporary copy or source); the part fields say where the
/// range lies, for the plan's reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataStep {
    /// Why.
    pub purpose: DataPurpose,
    /// The endpoint (replica) written.
    pub replica: usize,
    /// Its part.
    pub part: usize,
    /// The part file.
    pub path: PathBuf,
    /// Offset in that file of the range's first byte.
    pub file_offset: u64,
    /// The endpoint (replica) read.
    pub from_replica: usize,
    /// Its part.
    pub from_part: usize,
    /// That part file.
    pub from_path: PathBuf,
    /// Offset in that file of the range's first byte.
    pub from_offset: u64,
    /// First logical offset of the range.
    pub logical: u64,
    /// Length in bytes: copied, or compared (then at most this many are
    /// written).
    pub len: u64,
}

/// A header write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderStep {
    /// Replica index.
    pub replica: usize,
    /// Part index.
    pub part: usize,
    /// The part file.
    pub path: PathBuf,
    /// New, relinked or restored.
    pub kind: HeaderAction,
    /// The part's UUID in canonical form.
    pub uuid: String,
    /// How the UUID was chosen.
    pub uuid_origin: UuidOrigin,
    /// The header to write (a new header's crtime is taken from the file
    /// when it is written).
    #[serde(skip)]
    pub header: PoolHdr,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// Remove bad block recovery files (stale ones first, all at the end).
    RemoveRecoveryFiles {
        /// The files.
        paths: Vec<PathBuf>,
    },
    /// Save the bad blocks the query found, before anything else is written.
    SaveRecoveryFiles {
        /// The files and their bad blocks.
        files: Vec<RecoveryFilePlan>,
    },
    /// Make a header that still looks valid look broken (its checksum is
    /// inverted) until its replica is repaired.
    InvalidateHeader {
        /// Replica index.
        replica: usize,
        /// Part index.
        part: usize,
        /// The part file.
        path: PathBuf,
    },
    /// Unlink the part (when it exists) and create it anew, fully allocated.
    CreatePart {
        /// Replica index.
        replica: usize,
        /// Part index.
        part: usize,
        /// The part file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// An existing file is unlinked first.
        replace: bool,
    },
    /// `chmod` a rebuilt part to the mode of the source's part 0.
    SetMode {
        /// Replica index.
        replica: usize,
        /// Part index.
        part: usize,
        /// The part file.
        path: PathBuf,
        /// The mode (JSON: an octal string such as `"0664"`).
        #[serde(serialize_with = "ser_mode")]
        mode: u32,
    },
    /// Make new or removed entries and changed modes in a directory durable.
    SyncDirectory {
        /// The directory (empty: the current one).
        path: PathBuf,
    },
    /// Copy a range.
    CopyRange(DataStep),
    /// Compare a range and copy the blocks that differ.
    CompareAndCopy(DataStep),
    /// Write a whole header, then make it durable.
    WriteHeader(HeaderStep),
}

impl DataStep {
    /// The logical range the step covers.
    pub fn range(&self) -> LogicalRange {
        LogicalRange::new(self.logical, self.len)
    }
}

/// The copy (or, for [`DataPurpose::Repair`], compare) steps that move
/// `range` from endpoint `from` to endpoint `to` (each with its number in
/// the plan), cut wherever either side's parts change, so that each step
/// lies in one part of each side. Bytes beyond either side's parts are
/// left out.
pub(crate) fn data_steps(
    purpose: DataPurpose,
    (from_id, from): (usize, &dyn Endpoint),
    (to_id, to): (usize, &dyn Endpoint),
    range: LogicalRange,
) -> Vec<Step> {
    // Each side's pieces run on from `range.offset`, one after the other.
    let starts = |locs: Vec<Location>| {
        let mut at = range.offset;
        locs.into_iter()
            .map(|l| {
                let start = at;
                at = at.saturating_add(l.len);
                (start, l)
            })
            .collect::<Vec<_>>()
    };
    let (src, dst) = (starts(from.locate(range)), starts(to.locate(range)));
    let end = |side: &[(u64, Location)]| side.last().map_or(range.offset, |(at, l)| at + l.len);
    let covered = end(&src).min(end(&dst));
    let mut cuts: Vec<u64> = vec![range.offset, covered];
    cuts.extend(src.iter().map(|(at, _)| *at));
    cuts.extend(dst.iter().map(|(at, _)| *at));
    let find = |side: &[(u64, Location)], at: u64| {
        side.iter()
            .rev()
            .find(|(start, _)| *start <= at)
            .map(|(start, l)| (l.part, l.path.clone(), l.file_offset + (at - start)))
    };
    let mut steps = Vec::new();
    for piece in crate::compare::pieces_between(cuts, range.offset, covered) {
        let (Some((from_part, from_path, from_offset)), Some((part, path, file_offset))) =
            (find(&src, piece.offset), find(&dst, piece.offset))
        else {
            continue;
        };
        let step = DataStep {
            purpose,
            replica: to_id,
            part,
            path,
            file_offset,
            from_replica: from_id,
            from_part,
            from_path,
            from_offset,
            logical: piece.offset,
            len: piece.len,
        };
        steps.push(match purpose {
            DataPurpose::Repair => Step::CompareAndCopy(step),
            DataPurpose::Rebuild | DataPurpose::BadBlocks | DataPurpose::Verify => {
                Step::CopyRange(step)
            }
        });
    }
    steps
}

/// Exact counts of what the plan does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Parts created anew.
    pub parts_to_create: u64,
    /// Bytes copied in full.
    pub bytes_to_copy: u64,
    /// Bytes compared; at most this many more are written.
    pub bytes_to_compare: u64,
    /// Headers written.
    pub headers_to_write: u64,
    /// Headers invalidated first.
    pub headers_to_invalidate: u64,
    /// Modes set.
    pub modes_to_set: u64,
    /// Recovery files saved.
    pub recovery_files_to_save: u64,
    /// Recovery files removed.
    pub recovery_files_to_remove: u64,
}

/// Serializes permission bits as an octal string, `"0664"`.
pub(crate) fn ser_mode<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// Counts what `steps` do.
pub fn totals(steps: &[Step]) -> Totals {
    let mut t = Totals::default();
    for step in steps {
        match step {
            Step::RemoveRecoveryFiles { paths } => t.recovery_files_to_remove += paths.len() as u64,
            Step::SaveRecoveryFiles { files } => t.recovery_files_to_save += files.len() as u64,
            Step::InvalidateHeader { .. } => t.headers_to_invalidate += 1,
            Step::CreatePart { .. } => t.parts_to_create += 1,
            Step::SetMode { .. } => t.modes_to_set += 1,
            Step::SyncDirectory { .. } => {}
            Step::CopyRange(d) => t.bytes_to_copy += d.len,
            Step::CompareAndCopy(d) => t.bytes_to_compare += d.len,
            Step::WriteHeader(_) => t.headers_to_write += 1,
        }
    }
    t
}
