//! Rewind requests (`docs/packet.md`, section 7).
//!
//! A destination whose pool was changed locally (or whose timeline left the
//! exporter's) sends the exporter a rewind request: the block ranges that
//! the next export must ship whatever their stamps say, so that the
//! destination converges again.

use crate::bytes::{
    array_at, check_magic, check_zero, need, put, put_u16, put_u32, put_u64, u16_at, u32_at,
    u64_at, u8_at, utf8, Reader,
};
use crate::packet::{check_key_flags, MAX_BLOCK_SIZE, MAX_NAME, MIN_BLOCK_SIZE};
use crate::tag::{tags_equal, Key, Tagger, DOMAIN_REWIND, TAG_LEN};
use crate::timeline::{check_history, fork_epoch, Fork, FORK_LEN, MAX_HISTORY};
use crate::Error;

/// The magic number of a rewind request.
pub const REWIND_MAGIC: &[u8; 8] = b"PSYNCRWD";
/// The format version this crate writes and reads.
pub const REWIND_VERSION: u16 = 1;
/// Flag bit: the tag is a keyed MAC.
pub const REWIND_FLAG_SIGNED: u8 = 0x01;
/// Offset of the magic number.
pub const RWD_MAGIC_OFF: usize = 0;
/// Offset of the version (u16).
pub const RWD_VERSION_OFF: usize = 8;
/// Offset of the flags (u8).
pub const RWD_FLAGS_OFF: usize = 10;
/// Offset of one reserved byte.
pub const RWD_RESERVED_OFF: usize = 11;
/// Offset of the total length (u32), tag included.
pub const RWD_LEN_OFF: usize = 12;
/// Offset of the pool set UUID.
pub const RWD_POOLSET_UUID_OFF: usize = 16;
/// Offset of the lineage.
pub const RWD_LINEAGE_OFF: usize = 32;
/// Offset of the destination's timeline (u32).
pub const RWD_TIMELINE_OFF: usize = 48;
/// Offset of the destination's epoch (u32).
pub const RWD_EPOCH_OFF: usize = 52;
/// Offset of the block size (u32).
pub const RWD_BLOCK_SIZE_OFF: usize = 56;
/// Offset of the range count (u32).
pub const RWD_RANGE_COUNT_OFF: usize = 60;
/// Offset of the creation time (u64 seconds).
pub const RWD_CREATED_OFF: usize = 64;
/// Offset of the history count (u16).
pub const RWD_HISTORY_COUNT_OFF: usize = 72;
/// Offset of the destination name length (u8).
pub const RWD_NAME_LEN_OFF: usize = 74;
/// Offset of five reserved bytes.
pub const RWD_RESERVED2_OFF: usize = 75;
/// Length of the fixed part; history, name and ranges follow, then the tag.
pub const RWD_FIXED_LEN: usize = 80;
/// Bytes of one encoded range: offset (u64), block count (u64).
pub const RANGE_LEN: usize = 16;
/// The most ranges a request may hold ([`coarsen_ranges`] fits a list).
pub const MAX_REWIND_RANGES: usize = 65_536;
/// The longest request the bounds allow.
pub const REWIND_MAX_LEN: usize =
    RWD_FIXED_LEN + MAX_HISTORY * FORK_LEN + MAX_NAME + MAX_REWIND_RANGES * RANGE_LEN + TAG_LEN;

const _: () = assert!(RWD_VERSION_OFF == RWD_MAGIC_OFF + 8);
const _: () = assert!(RWD_FLAGS_OFF == RWD_VERSION_OFF + 2);
const _: () = assert!(RWD_RESERVED_OFF == RWD_FLAGS_OFF + 1);
const _: () = assert!(RWD_LEN_OFF == RWD_RESERVED_OFF + 1);
const _: () = assert!(RWD_POOLSET_UUID_OFF == RWD_LEN_OFF + 4);
const _: () = assert!(RWD_LINEAGE_OFF == RWD_POOLSET_UUID_OFF + 16);
const _: () = assert!(RWD_TIMELINE_OFF == RWD_LINEAGE_OFF + 16);
const _: () = assert!(RWD_EPOCH_OFF == RWD_TIMELINE_OFF + 4);
const _: () = assert!(RWD_BLOCK_SIZE_OFF == RWD_EPOCH_OFF + 4);
const _: () = assert!(RWD_RANGE_COUNT_OFF == RWD_BLOCK_SIZE_OFF + 4);
const _: () = assert!(RWD_CREATED_OFF == RWD_RANGE_COUNT_OFF + 4);
const _: () = assert!(RWD_HISTORY_COUNT_OFF == RWD_CREATED_OFF + 8);
const _: () = assert!(RWD_NAME_LEN_OFF == RWD_HISTORY_COUNT_OFF + 2);
const _: () = assert!(RWD_RESERVED2_OFF == RWD_NAME_LEN_OFF + 1);
const _: () = assert!(RWD_FIXED_LEN == RWD_RESERVED2_OFF + 5);
const _: () = assert!(REWIND_MAX_LEN == 1_051_999);

const WHAT: &str = "rewind request";

/// A run of blocks: `blocks` blocks from logical byte `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRange {
    /// Logical byte offset of the first block, block aligned.
    pub offset: u64,
    /// Number of blocks, at least 1.
    pub blocks: u64,
}

impl BlockRange {
    /// The logical byte just past the range, if it does not overflow.
    pub fn end(&self, block_size: u32) -> Option<u64> {
        self.blocks
            .checked_mul(u64::from(block_size))
            .and_then(|len| self.offset.checked_add(len))
    }
}

/// A destination's request that the next export ship some blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewindRequest {
    /// The pool set UUID of the pool.
    pub poolset_uuid: [u8; 16],
    /// The lineage the destination belongs to.
    pub lineage: [u8; 16],
    /// The destination's timeline.
    pub timeline: u32,
    /// Its canonical history.
    pub history: Vec<Fork>,
    /// The destination's epoch.
    pub epoch: u32,
    /// Bytes per block.
    pub block_size: u32,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// The destination's name, 1 to [`MAX_NAME`] bytes.
    pub destination: String,
    /// The ranges to ship, ascending and not overlapping, at most
    /// [`MAX_REWIND_RANGES`] ([`normalize_ranges`], [`coarsen_ranges`]).
    pub ranges: Vec<BlockRange>,
}

/// Sorts `ranges` and merges the ones that overlap or touch.
pub fn normalize_ranges(ranges: &mut Vec<BlockRange>, block_size: u32) {
    ranges.retain(|r| r.blocks > 0);
    ranges.sort();
    let mut out: Vec<BlockRange> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        let end = r.end(block_size).unwrap_or(u64::MAX);
        match out.last_mut() {
            Some(last) if !matches!(last.end(block_size), Some(e) if e < r.offset) => {
                let last_end = last.end(block_size).unwrap_or(u64::MAX);
                if end > last_end {
                    last.blocks = (end - last.offset) / u64::from(block_size.max(1));
                }
            }
            _ => out.push(r),
        }
    }
    *ranges = out;
}

/// Merges the ranges separated by the smallest gaps until at most `max`
/// remain (at least one when any remain). The result covers every block of
/// the input, and some in between: shipping a few blocks more is always
/// safe. `ranges` must be normalized.
pub fn coarsen_ranges(ranges: &mut Vec<BlockRange>, block_size: u32, max: usize) {
    let max = max.max(1);
    if ranges.len() <= max {
        return;
    }
    let bs = u64::from(block_size.max(1));
    // Gap before range i (i >= 1), in blocks.
    let mut gaps: Vec<(u64, usize)> = (1..ranges.len())
        .map(|i| {
            let prev_end = ranges[i - 1].end(block_size).unwrap_or(u64::MAX);
            (ranges[i].offset.saturating_sub(prev_end) / bs, i)
        })
        .collect();
    gaps.sort();
    let mut merge = vec![false; ranges.len()];
    for &(_, i) in gaps.iter().take(ranges.len() - max) {
        merge[i] = true;
    }
    let mut out: Vec<BlockRange> = Vec::with_capacity(max);
    for (i, r) in ranges.iter().enumerate() {
        match out.last_mut() {
            Some(last) if merge[i] => {
                let end = r.end(block_size).unwrap_or(u64::MAX);
                last.blocks = (end - last.offset) / bs;
            }
            _ => out.push(*r),
        }
    }
    *ranges = out;
}

impl RewindRequest {
    fn var_offsets(&self) -> (usize, usize, usize, usize) {
        let history = RWD_FIXED_LEN;
        let name = history + self.history.len() * FORK_LEN;
        let ranges = name + self.destination.len();
        let tag = ranges + self.ranges.len() * RANGE_LEN;
        (history, name, ranges, tag)
    }

    fn problem(&self) -> Option<(&'static str, usize, String)> {
        let (hist_off, name_off, ranges_off, _) = self.var_offsets();
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return Some((
                "block size",
                RWD_BLOCK_SIZE_OFF,
                format!("{bs} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"),
            ));
        }
        if let Err(p) = check_history(self.timeline, &self.history) {
            return Some(match p.index {
                Some(i) => ("timeline history", hist_off + i * FORK_LEN, p.problem),
                None => ("timeline", RWD_TIMELINE_OFF, p.problem),
            });
        }
        if self.epoch < fork_epoch(&self.history) {
            return Some((
                "epoch",
                RWD_EPOCH_OFF,
                format!(
                    "{} is before the timeline's fork epoch {}",
                    self.epoch,
                    fork_epoch(&self.history)
                ),
            ));
        }
        if self.destination.is_empty() || self.destination.len() > MAX_NAME {
            return Some((
                "destination name",
                name_off,
                format!("{} bytes, expected 1 to {MAX_NAME}", self.destination.len()),
            ));
        }
        if self.ranges.len() > MAX_REWIND_RANGES {
            return Some((
                "range count",
                RWD_RANGE_COUNT_OFF,
                format!(
                    "{} ranges, at most {MAX_REWIND_RANGES} allowed",
                    self.ranges.len()
                ),
            ));
        }
        let mut prev_end = 0;
        for (i, r) in self.ranges.iter().enumerate() {
            let off = ranges_off + i * RANGE_LEN;
            if r.offset % u64::from(bs) != 0 {
                return Some((
                    "range offset",
                    off,
                    format!("{} is not a multiple of the block size", r.offset),
                ));
            }
            if r.offset < prev_end {
                return Some((
                    "range offset",
                    off,
                    format!(
                        "{} is below the end {prev_end} of the previous range; ranges ascend without overlap",
                        r.offset
                    ),
                ));
            }
            match r.end(bs) {
                Some(end) if r.blocks > 0 => prev_end = end,
                _ => {
                    return Some((
                        "range block count",
                        off + 8,
                        format!("{} blocks at {}", r.blocks, r.offset),
                    ))
                }
            }
        }
        None
    }

    /// Checks every rule of the format.
    pub fn validate(&self) -> Result<(), Error> {
        match self.problem() {
            None => Ok(()),
            Some((field, _, problem)) => Err(Error::encode(field, problem)),
        }
    }

    /// The request's bytes, signed with `key` when given.
    pub fn encode(&self, key: Option<&Key>) -> Result<Vec<u8>, Error> {
        self.validate()?;
        let (_, _, _, tag_off) = self.var_offsets();
        let len = tag_off + TAG_LEN;
        let mut b = vec![0u8; RWD_FIXED_LEN];
        put(&mut b, RWD_MAGIC_OFF, REWIND_MAGIC);
        put_u16(&mut b, RWD_VERSION_OFF, REWIND_VERSION);
        put(
            &mut b,
            RWD_FLAGS_OFF,
            &[if key.is_some() { REWIND_FLAG_SIGNED } else { 0 }],
        );
        // At most REWIND_MAX_LEN once validated.
        put_u32(&mut b, RWD_LEN_OFF, len as u32);
        put(&mut b, RWD_POOLSET_UUID_OFF, &self.poolset_uuid);
        put(&mut b, RWD_LINEAGE_OFF, &self.lineage);
        put_u32(&mut b, RWD_TIMELINE_OFF, self.timeline);
        put_u32(&mut b, RWD_EPOCH_OFF, self.epoch);
        put_u32(&mut b, RWD_BLOCK_SIZE_OFF, self.block_size);
        put_u32(&mut b, RWD_RANGE_COUNT_OFF, self.ranges.len() as u32);
        put_u64(&mut b, RWD_CREATED_OFF, self.created);
        put_u16(&mut b, RWD_HISTORY_COUNT_OFF, self.history.len() as u16);
        put(&mut b, RWD_NAME_LEN_OFF, &[self.destination.len() as u8]);
        for f in &self.history {
            b.extend_from_slice(&f.encode());
        }
        b.extend_from_slice(self.destination.as_bytes());
        for r in &self.ranges {
            b.extend_from_slice(&r.offset.to_le_bytes());
            b.extend_from_slice(&r.blocks.to_le_bytes());
        }
        let tag = Tagger::new(key, DOMAIN_REWIND).update(&b).tag();
        b.extend_from_slice(&tag);
        Ok(b)
    }

    /// The length a request declares, from its first [`RWD_FIXED_LEN`]
    /// bytes.
    pub fn declared_len(prefix: &[u8]) -> Result<usize, Error> {
        need(prefix, RWD_FIXED_LEN, WHAT, 0)?;
        check_magic(prefix, REWIND_MAGIC, WHAT, 0)?;
        let version = u16_at(prefix, RWD_VERSION_OFF);
        if version != REWIND_VERSION {
            return Err(Error::Version {
                what: WHAT,
                offset: RWD_VERSION_OFF as u64,
                found: version,
                supported: "version 1",
            });
        }
        let len = u32_at(prefix, RWD_LEN_OFF) as usize;
        if !(RWD_FIXED_LEN + TAG_LEN..=REWIND_MAX_LEN).contains(&len) {
            return Err(Error::field(
                "length",
                RWD_LEN_OFF as u64,
                format!(
                    "{len} bytes, expected {} to {REWIND_MAX_LEN}",
                    RWD_FIXED_LEN + TAG_LEN
                ),
            ));
        }
        Ok(len)
    }

    /// Decodes and verifies a whole request file (trailing bytes are
    /// refused). With a key only signed requests are accepted, without one
    /// only unsigned ones.
    pub fn decode(bytes: &[u8], key: Option<&Key>) -> Result<RewindRequest, Error> {
        let len = Self::declared_len(bytes)?;
        need(bytes, len, WHAT, 0)?;
        if bytes.len() > len {
            return Err(Error::field(
                "length",
                len as u64,
                format!("{} bytes follow the tag", bytes.len() - len),
            ));
        }
        let flags = u8_at(bytes, RWD_FLAGS_OFF);
        if flags & !REWIND_FLAG_SIGNED != 0 {
            return Err(Error::field(
                "flags",
                RWD_FLAGS_OFF as u64,
                format!("unknown bits {:#04x}", flags & !REWIND_FLAG_SIGNED),
            ));
        }
        let signed = flags & REWIND_FLAG_SIGNED != 0;
        check_key_flags(signed, key, WHAT, RWD_FLAGS_OFF as u64)?;
        let tag_off = len - TAG_LEN;
        let tag: [u8; TAG_LEN] = array_at(bytes, tag_off);
        let body = bytes.get(..tag_off).unwrap_or_default();
        if !tags_equal(&tag, &Tagger::new(key, DOMAIN_REWIND).update(body).tag()) {
            return Err(Error::BadTag {
                what: WHAT,
                offset: 0,
                signed,
            });
        }
        check_zero(bytes, RWD_RESERVED_OFF, 1, "reserved", 0)?;
        check_zero(bytes, RWD_RESERVED2_OFF, 5, "reserved", 0)?;
        let history_count = usize::from(u16_at(bytes, RWD_HISTORY_COUNT_OFF));
        if history_count > MAX_HISTORY {
            return Err(Error::field(
                "history count",
                RWD_HISTORY_COUNT_OFF as u64,
                format!("{history_count}, at most {MAX_HISTORY} allowed"),
            ));
        }
        let range_count = u32_at(bytes, RWD_RANGE_COUNT_OFF) as usize;
        if range_count > MAX_REWIND_RANGES {
            return Err(Error::field(
                "range count",
                RWD_RANGE_COUNT_OFF as u64,
                format!("{range_count}, at most {MAX_REWIND_RANGES} allowed"),
            ));
        }
        let name_len = usize::from(u8_at(bytes, RWD_NAME_LEN_OFF));
        let mut r =
            Reader::new(body, RWD_FIXED_LEN, 0, WHAT).declared_by("length", RWD_LEN_OFF as u64);
        let mut history = Vec::with_capacity(history_count);
        for _ in 0..history_count {
            history.push(Fork::decode(&r.array()?));
        }
        let name_at = r.offset();
        let destination = utf8(r.take(name_len)?, "destination name", name_at)?;
        // The count is bounded, and the bytes must be there before the
        // vector is sized by it.
        let range_bytes = r.take(range_count * RANGE_LEN)?;
        let ranges = range_bytes
            .chunks_exact(RANGE_LEN)
            .map(|c| BlockRange {
                offset: u64_at(c, 0),
                blocks: u64_at(c, 8),
            })
            .collect();
        if r.pos() != tag_off {
            return Err(Error::field(
                "length",
                RWD_LEN_OFF as u64,
                format!(
                    "declares {len} bytes but its fields end at {} and the tag takes {TAG_LEN}",
                    r.pos()
                ),
            ));
        }
        let request = RewindRequest {
            poolset_uuid: array_at(bytes, RWD_POOLSET_UUID_OFF),
            lineage: array_at(bytes, RWD_LINEAGE_OFF),
            timeline: u32_at(bytes, RWD_TIMELINE_OFF),
            history,
            epoch: u32_at(bytes, RWD_EPOCH_OFF),
            block_size: u32_at(bytes, RWD_BLOCK_SIZE_OFF),
            created: u64_at(bytes, RWD_CREATED_OFF),
            destination,
            ranges,
        };
        if let Some((field, off, problem)) = request.problem() {
            return Err(Error::field(field, off as u64, problem));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: u64, blocks: u64) -> BlockRange {
        BlockRange { offset, blocks }
    }

    #[test]
    fn normalizing_sorts_and_merges_touching_ranges() {
        let mut v = vec![
            r(8192, 1),
            r(0, 1),
            r(4096, 1),
            r(4096, 3),
            r(40960, 2),
            r(0, 0),
        ];
        normalize_ranges(&mut v, 4096);
        assert_eq!(v, vec![r(0, 4), r(40960, 2)]);
    }

    #[test]
    fn coarsening_merges_the_smallest_gaps_and_covers_everything() {
        let bs = 4096;
        let mut v = vec![r(0, 1), r(2 * bs, 1), r(100 * bs, 1), r(103 * bs, 2)];
        coarsen_ranges(&mut v, 4096, 2);
        assert_eq!(v, vec![r(0, 3), r(100 * bs, 5)]);
        coarsen_ranges(&mut v, 4096, 0);
        assert_eq!(v, vec![r(0, 105)]);
    }
}
