//! Which physical files make up a logical packet, from their headers and
//! trailers alone (before any record is read).

use std::fmt;

use super::header::{
    var_offsets, FILE_HDR_BASE_EPOCH_OFF, FILE_HDR_BLOCK_SIZE_OFF, FILE_HDR_COMPRESSION_OFF,
    FILE_HDR_CREATED_OFF, FILE_HDR_DEST_COUNT_OFF, FILE_HDR_FLAGS_OFF, FILE_HDR_HISTORY_COUNT_OFF,
    FILE_HDR_LINEAGE_OFF, FILE_HDR_NEW_EPOCH_OFF, FILE_HDR_PACKET_ID_OFF, FILE_HDR_PART_INDEX_OFF,
    FILE_HDR_POOLSET_UUID_OFF, FILE_HDR_RANGE_END_OFF, FILE_HDR_RANGE_START_OFF,
    FILE_HDR_REWIND_TIMELINE_OFF, FILE_HDR_TIMELINE_OFF, FILE_HDR_VERSION_OFF,
};
use super::trailer::{TRAILER_LEN, TRL_FIRST_SEQ_OFF};
use super::{FileHeader, Trailer};
use crate::timeline::FORK_LEN;
use crate::Error;

/// One physical file as the checker sees it.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// Its decoded header.
    pub header: &'a FileHeader,
    /// Its decoded trailer.
    pub trailer: &'a Trailer,
    /// Its length in bytes.
    pub file_len: u64,
}

/// Something wrong with the set of files of a logical packet. `file` is an
/// index into the list given to [`check_parts`] (or, from
/// [`PacketReader`](super::PacketReader), the count of files begun before
/// it), which the caller turns into a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartProblem {
    /// The file belongs to another logical packet (its packet id differs).
    Foreign {
        /// The file.
        file: usize,
        /// The first field that differs.
        field: &'static str,
        /// Its offset in the file.
        offset: u64,
    },
    /// The file has the packet's id but disagrees with its first part.
    Inconsistent {
        /// The file.
        file: usize,
        /// The first field that differs.
        field: &'static str,
        /// Its offset in the file.
        offset: u64,
    },
    /// Two files claim the same part index.
    Duplicate {
        /// The part index.
        part: u32,
        /// The file kept.
        first: usize,
        /// The file refused.
        second: usize,
    },
    /// Parts `first .. first + count` are absent.
    Missing {
        /// The first part index missing.
        first: u32,
        /// How many consecutive parts are missing.
        count: u64,
    },
    /// No file says it is the last one: the end of the packet is missing.
    NoLast {
        /// The highest part index present, if any file is.
        highest: Option<u32>,
    },
    /// A file's part index is at or beyond the count the last file gives.
    BeyondLast {
        /// The file.
        file: usize,
        /// Its part index.
        part: u32,
        /// The number of files the last one declares.
        files: u32,
    },
    /// A file's first sequence number does not continue the previous part:
    /// either that file's trailer or the previous part's is wrong.
    SequenceGap {
        /// The file.
        file: usize,
        /// The previous part's file, if this is not part 0.
        previous: Option<usize>,
        /// Offset of the trailer's first-sequence field.
        offset: u64,
        /// The sequence number expected.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// The files were given out of order.
    OutOfOrder {
        /// The file.
        file: usize,
        /// The part index expected next.
        expected: u32,
        /// The part index found.
        found: u32,
    },
}

impl PartProblem {
    /// The file the problem is about, if it is about one file.
    pub fn file(&self) -> Option<usize> {
        match self {
            PartProblem::Foreign { file, .. }
            | PartProblem::Inconsistent { file, .. }
            | PartProblem::BeyondLast { file, .. }
            | PartProblem::SequenceGap { file, .. }
            | PartProblem::OutOfOrder { file, .. } => Some(*file),
            PartProblem::Duplicate { second, .. } => Some(*second),
            PartProblem::Missing { .. } | PartProblem::NoLast { .. } => None,
        }
    }

    /// The offset in that file, if there is one to name.
    pub fn offset(&self) -> Option<u64> {
        match self {
            PartProblem::Foreign { offset, .. }
            | PartProblem::Inconsistent { offset, .. }
            | PartProblem::SequenceGap { offset, .. } => Some(*offset),
            PartProblem::Duplicate { .. }
            | PartProblem::BeyondLast { .. }
            | PartProblem::OutOfOrder { .. } => Some(FILE_HDR_PART_INDEX_OFF as u64),
            PartProblem::Missing { .. } | PartProblem::NoLast { .. } => None,
        }
    }
}

impl fmt::Display for PartProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartProblem::Foreign { file, field, offset } => write!(
                f,
                "file {file} belongs to another packet: its {field} at offset {offset} differs from the first part's"
            ),
            PartProblem::Inconsistent { file, field, offset } => write!(
                f,
                "file {file} has this packet's id but its {field} at offset {offset} differs from the first part's"
            ),
            PartProblem::Duplicate { part, first, second } => write!(
                f,
                "files {first} and {second} both claim part index {part} (offset {FILE_HDR_PART_INDEX_OFF})"
            ),
            PartProblem::Missing { first, count: 1 } => {
                write!(f, "part index {first} of the packet is missing")
            }
            PartProblem::Missing { first, count } => write!(
                f,
                "part indexes {first} to {} of the packet are missing",
                u64::from(*first) + count - 1
            ),
            PartProblem::NoLast { highest: None } => write!(f, "no packet file was given"),
            PartProblem::NoLast {
                highest: Some(highest),
            } => write!(
                f,
                "no file is the last part of the packet (the highest part index present is {highest}): the end of the packet is missing"
            ),
            PartProblem::BeyondLast { file, part, files } => write!(
                f,
                "file {file} is part index {part} (offset {FILE_HDR_PART_INDEX_OFF}), but the last file says the packet has {files} files"
            ),
            PartProblem::SequenceGap {
                file,
                previous: Some(previous),
                offset,
                expected,
                found,
            } => write!(
                f,
                "file {file} starts at record {found} (offset {offset}), but the records of file {previous} end at {expected}"
            ),
            PartProblem::SequenceGap {
                file,
                previous: None,
                offset,
                found,
                ..
            } => write!(
                f,
                "file {file} is the first part but starts at record {found} (offset {offset}), expected 0"
            ),
            PartProblem::OutOfOrder {
                file,
                expected,
                found,
            } => write!(
                f,
                "file {file} is part index {found} (offset {FILE_HDR_PART_INDEX_OFF}), expected {expected}"
            ),
        }
    }
}

/// The first field in which `b` differs from `a` as parts of one packet
/// (everything but the part index and the tag), with its offset in `b`.
pub(crate) fn first_difference(a: &FileHeader, b: &FileHeader) -> Option<(&'static str, u64)> {
    let (ma, mb) = (&a.meta, &b.meta);
    let fixed: [(bool, &'static str, usize); 14] = [
        (
            ma.packet_id != mb.packet_id,
            "packet id",
            FILE_HDR_PACKET_ID_OFF,
        ),
        // The writer's version: files of one packet never mix them.
        (a.version != b.version, "version", FILE_HDR_VERSION_OFF),
        (a.signed != b.signed, "flags", FILE_HDR_FLAGS_OFF),
        (
            ma.compression != mb.compression,
            "compression",
            FILE_HDR_COMPRESSION_OFF,
        ),
        (
            ma.poolset_uuid != mb.poolset_uuid,
            "pool set uuid",
            FILE_HDR_POOLSET_UUID_OFF,
        ),
        (ma.lineage != mb.lineage, "lineage", FILE_HDR_LINEAGE_OFF),
        (
            ma.timeline != mb.timeline,
            "timeline",
            FILE_HDR_TIMELINE_OFF,
        ),
        (
            ma.base_epoch != mb.base_epoch,
            "base epoch",
            FILE_HDR_BASE_EPOCH_OFF,
        ),
        (
            ma.new_epoch != mb.new_epoch,
            "new epoch",
            FILE_HDR_NEW_EPOCH_OFF,
        ),
        (
            ma.range.start != mb.range.start,
            "range start",
            FILE_HDR_RANGE_START_OFF,
        ),
        (
            ma.range.end != mb.range.end,
            "range end",
            FILE_HDR_RANGE_END_OFF,
        ),
        (
            ma.created != mb.created,
            "creation time",
            FILE_HDR_CREATED_OFF,
        ),
        (
            ma.block_size != mb.block_size,
            "block size",
            FILE_HDR_BLOCK_SIZE_OFF,
        ),
        (
            ma.history.len() != mb.history.len(),
            "history count",
            FILE_HDR_HISTORY_COUNT_OFF,
        ),
    ];
    if let Some((_, field, off)) = fixed.iter().find(|(differs, _, _)| *differs) {
        return Some((field, *off as u64));
    }
    if ma.rewind != mb.rewind {
        return Some(("rewind position", FILE_HDR_REWIND_TIMELINE_OFF as u64));
    }
    let offsets = var_offsets(mb);
    let (hist_off, comment_off, dest_off) =
        (offsets.history, offsets.comment, offsets.destinations);
    if let Some(i) = ma.history.iter().zip(&mb.history).position(|(x, y)| x != y) {
        return Some(("timeline history", (hist_off + i * FORK_LEN) as u64));
    }
    if ma.comment != mb.comment {
        return Some(("comment", comment_off as u64));
    }
    if ma.source != mb.source {
        return Some(("source", offsets.source as u64));
    }
    if ma.destinations != mb.destinations {
        let field = if ma.destinations.len() != mb.destinations.len() {
            ("destination count", FILE_HDR_DEST_COUNT_OFF)
        } else {
            ("destination names", dest_off)
        };
        return Some((field.0, field.1 as u64));
    }
    None
}

/// What [`check_parts`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsReport {
    /// The usable files in part order, as indexes into the list given
    /// (foreign, inconsistent and duplicate files left out).
    pub order: Vec<usize>,
    /// Everything wrong, in the order found; empty when the files make a
    /// whole packet.
    pub problems: Vec<PartProblem>,
}

impl PartsReport {
    /// The order of the files, or the first problem as an error.
    pub fn into_result(self) -> Result<Vec<usize>, Error> {
        match self.problems.into_iter().next() {
            None => Ok(self.order),
            Some(p) => Err(Error::Part(p)),
        }
    }
}

/// Decides, from each file's header and trailer, whether `files` are
/// exactly the physical files of one logical packet, and in which order
/// they are read.
///
/// The first part (part index 0, or the first file if none is) is the
/// reference: a file with another packet id is foreign; one with the same
/// id but another value in any other header field is inconsistent. Among
/// the rest it finds duplicated part indexes, missing parts, files beyond
/// the count the last file declares, and first sequence numbers that do not
/// continue the previous part's records.
pub fn check_parts(files: &[Part<'_>]) -> PartsReport {
    let mut problems = Vec::new();
    let Some(reference) = files
        .iter()
        .position(|p| p.header.part_index == 0)
        .or(if files.is_empty() { None } else { Some(0) })
    else {
        return PartsReport {
            order: Vec::new(),
            problems: vec![PartProblem::NoLast { highest: None }],
        };
    };
    let ref_header = files[reference].header;
    let mut kept: Vec<usize> = Vec::with_capacity(files.len());
    for (i, p) in files.iter().enumerate() {
        match first_difference(ref_header, p.header) {
            None => kept.push(i),
            Some((field, offset)) if field == "packet id" => problems.push(PartProblem::Foreign {
                file: i,
                field,
                offset,
            }),
            Some((field, offset)) => problems.push(PartProblem::Inconsistent {
                file: i,
                field,
                offset,
            }),
        }
    }
    // Stable sort: of two files with one part index, the earlier one is kept.
    kept.sort_by_key(|&i| files[i].header.part_index);
    let mut order: Vec<usize> = Vec::with_capacity(kept.len());
    for i in kept {
        let part = files[i].header.part_index;
        match order.last() {
            Some(&prev) if files[prev].header.part_index == part => {
                problems.push(PartProblem::Duplicate {
                    part,
                    first: prev,
                    second: i,
                });
            }
            _ => order.push(i),
        }
    }
    let total = order
        .iter()
        .filter_map(|&i| files[i].trailer.last.map(|s| s.files))
        .min();
    if let Some(total) = total {
        order.retain(|&i| {
            let part = files[i].header.part_index;
            if part >= total {
                problems.push(PartProblem::BeyondLast {
                    file: i,
                    part,
                    files: total,
                });
                false
            } else {
                true
            }
        });
    }
    // Gaps, up to the declared end or the highest part present.
    let mut expected: u64 = 0;
    let mut prev: Option<usize> = None;
    for &i in &order {
        let part = u64::from(files[i].header.part_index);
        if part > expected {
            problems.push(PartProblem::Missing {
                first: expected as u32,
                count: part - expected,
            });
        }
        let trailer = files[i].trailer;
        let want_seq = match prev {
            None if part == 0 => Some(0),
            Some(p) if u64::from(files[p].header.part_index) + 1 == part => {
                let t = files[p].trailer;
                Some(t.first_seq.saturating_add(t.record_count))
            }
            _ => None,
        };
        if let Some(want) = want_seq {
            if trailer.first_seq != want {
                problems.push(PartProblem::SequenceGap {
                    file: i,
                    previous: prev,
                    offset: files[i]
                        .file_len
                        .saturating_sub(TRAILER_LEN as u64)
                        .saturating_add(TRL_FIRST_SEQ_OFF as u64),
                    expected: want,
                    found: trailer.first_seq,
                });
            }
        }
        expected = part + 1;
        prev = Some(i);
    }
    match total {
        Some(total) if u64::from(total) > expected => problems.push(PartProblem::Missing {
            first: expected as u32,
            count: u64::from(total) - expected,
        }),
        Some(_) => {}
        None => problems.push(PartProblem::NoLast {
            highest: prev.map(|p| files[p].header.part_index),
        }),
    }
    PartsReport { order, problems }
}
