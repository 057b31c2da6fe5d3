//! The state file an exporter and every destination keep beside their pool
//! set file (`docs/packet.md`, section 6).
//!
//! The file is a *head* ([`State`]: epoch, timeline and history, the
//! destination table, the applied-packet log, the lineage), then the
//! per-block entry array in *chunks* of [`CHUNK_ENTRIES`] fixed-size
//! [`Entry`]s, each chunk followed by its tag. The head length is stored at
//! a fixed offset and the entries start right after the head, so the engine
//! can compute where any entry lives ([`StateLayout::entry_offset`]) and
//! stream the array chunk by chunk without ever holding it whole.
//!
//! Every byte is covered by a tag: the head's over the head, each chunk's
//! over the head's tag, the chunk index and the chunk's entries. Reading the
//! file once from start to end (head, then each chunk in order, then
//! checking the length) verifies it entirely, and each chunk can be
//! verified just before its entries are used. The tags are unkeyed BLAKE3:
//! they catch damage and stale or misplaced chunks, not deliberate forgery
//! by someone who can write the file.

use std::ops::Range;

use crate::bytes::{
    align_up, array_at, at, check_magic, check_zero, need, put, put_u16, put_u32, put_u64, u16_at,
    u32_at, u64_at, utf8, Reader,
};
use crate::packet::{MAX_BLOCK_SIZE, MAX_NAME, MIN_BLOCK_SIZE};
use crate::tag::{tags_equal, Tagger, DOMAIN_STATE_CHUNK, DOMAIN_STATE_HEAD, TAG_LEN};
use crate::timeline::{check_history, fork_epoch, Fork, FORK_LEN, MAX_HISTORY};
use crate::Error;

/// The magic number of a state file.
pub const STATE_MAGIC: &[u8; 8] = b"PSYNCSTA";
/// The state file version this crate writes and reads.
pub const STATE_VERSION: u16 = 1;
/// Offset of the magic number.
pub const STATE_MAGIC_OFF: usize = 0;
/// Offset of the version (u16).
pub const STATE_VERSION_OFF: usize = 8;
/// Offset of the flags (u16): [`STATE_FLAG_FOLLOWER`], other bits zero.
pub const STATE_FLAGS_OFF: usize = 10;
/// State flag: this site follows the lineage's writer. It holds epochs
/// made elsewhere and may forward them, but makes none of its own until
/// it is promoted.
pub const STATE_FLAG_FOLLOWER: u16 = 0x0001;
/// Offset of the head length (u32), which is also the offset of the first chunk.
pub const STATE_HEAD_LEN_OFF: usize = 12;
/// Offset of the pool set UUID.
pub const STATE_POOLSET_UUID_OFF: usize = 16;
/// Offset of the lineage.
pub const STATE_LINEAGE_OFF: usize = 32;
/// Offset of the current timeline (u32).
pub const STATE_TIMELINE_OFF: usize = 48;
/// Offset of the current epoch (u32).
pub const STATE_EPOCH_OFF: usize = 52;
/// Offset of the generation (u64).
pub const STATE_GENERATION_OFF: usize = 56;
/// Offset of the start of the replicated range (u64).
pub const STATE_RANGE_START_OFF: usize = 64;
/// Offset of the end of the replicated range (u64).
pub const STATE_RANGE_END_OFF: usize = 72;
/// Offset of the block size (u32).
pub const STATE_BLOCK_SIZE_OFF: usize = 80;
/// Offset of the history count (u16).
pub const STATE_HISTORY_COUNT_OFF: usize = 84;
/// Offset of the destination count (u16).
pub const STATE_DEST_COUNT_OFF: usize = 86;
/// Offset of the applied-log count (u16).
pub const STATE_APPLIED_COUNT_OFF: usize = 88;
/// Offset of six reserved bytes.
pub const STATE_RESERVED_OFF: usize = 90;
/// Length of the reserved bytes.
pub const STATE_RESERVED_LEN: usize = 6;
/// Length of the fixed part of the head; history, destinations and the
/// applied log follow.
pub const STATE_FIXED_LEN: usize = 96;
/// The head length is a multiple of this (zero padding before the tag).
pub const STATE_HEAD_ALIGN: usize = 64;

/// Offset of a destination's timeline (u32) in its entry.
pub const DEST_TIMELINE_OFF: usize = 0;
/// Offset of a destination's epoch (u32) in its entry.
pub const DEST_EPOCH_OFF: usize = 4;
/// Offset of a destination's last export time (u64) in its entry.
pub const DEST_LAST_EXPORT_OFF: usize = 8;
/// Offset of a destination's name length (u8) in its entry; the name follows.
pub const DEST_NAME_LEN_OFF: usize = 16;
/// Bytes of the fixed part of a destination entry (the name follows).
pub const DEST_FIXED_LEN: usize = 17;
/// Offset of the packet id in an applied-log entry.
pub const APPLIED_PACKET_ID_OFF: usize = 0;
/// Offset of the timeline (u32) in an applied-log entry.
pub const APPLIED_TIMELINE_OFF: usize = 16;
/// Offset of the base epoch (u32) in an applied-log entry.
pub const APPLIED_BASE_EPOCH_OFF: usize = 20;
/// Offset of the new epoch (u32) in an applied-log entry.
pub const APPLIED_NEW_EPOCH_OFF: usize = 24;
/// Offset of four reserved bytes in an applied-log entry.
pub const APPLIED_RESERVED_OFF: usize = 28;
/// Offset of the time applied (u64) in an applied-log entry.
pub const APPLIED_AT_OFF: usize = 32;
/// Offset of the content digest (32 bytes) in an applied-log entry.
pub const APPLIED_DIGEST_OFF: usize = 40;
/// Bytes of an applied-log entry.
pub const APPLIED_LEN: usize = 72;
/// The most destinations a state holds.
pub const MAX_STATE_DESTINATIONS: usize = 64;
/// The most applied packets the log keeps (the oldest are dropped).
pub const MAX_APPLIED: usize = 64;

/// The longest head the bounds allow.
pub const STATE_HEAD_MAX_LEN: usize = align_up(
    STATE_FIXED_LEN
        + MAX_HISTORY * FORK_LEN
        + MAX_STATE_DESTINATIONS * (DEST_FIXED_LEN + MAX_NAME)
        + MAX_APPLIED * APPLIED_LEN
        + TAG_LEN,
    STATE_HEAD_ALIGN,
);

/// Bytes of one block entry.
pub const ENTRY_LEN: usize = 16;
/// Bytes of an entry's digest.
pub const ENTRY_DIGEST_LEN: usize = 12;
/// Offset of the stamp (u32) in an entry.
pub const ENTRY_STAMP_OFF: usize = 12;
/// Entries per chunk (the last chunk may hold fewer).
pub const CHUNK_ENTRIES: usize = 4096;
/// Bytes from one chunk to the next: the entries and the chunk's tag.
pub const CHUNK_STRIDE: usize = CHUNK_ENTRIES * ENTRY_LEN + TAG_LEN;

const _: () = assert!(STATE_VERSION_OFF == STATE_MAGIC_OFF + 8);
const _: () = assert!(STATE_FLAGS_OFF == STATE_VERSION_OFF + 2);
const _: () = assert!(STATE_HEAD_LEN_OFF == STATE_FLAGS_OFF + 2);
const _: () = assert!(STATE_POOLSET_UUID_OFF == STATE_HEAD_LEN_OFF + 4);
const _: () = assert!(STATE_LINEAGE_OFF == STATE_POOLSET_UUID_OFF + 16);
const _: () = assert!(STATE_TIMELINE_OFF == STATE_LINEAGE_OFF + 16);
const _: () = assert!(STATE_EPOCH_OFF == STATE_TIMELINE_OFF + 4);
const _: () = assert!(STATE_GENERATION_OFF == STATE_EPOCH_OFF + 4);
const _: () = assert!(STATE_RANGE_START_OFF == STATE_GENERATION_OFF + 8);
const _: () = assert!(STATE_RANGE_END_OFF == STATE_RANGE_START_OFF + 8);
const _: () = assert!(STATE_BLOCK_SIZE_OFF == STATE_RANGE_END_OFF + 8);
const _: () = assert!(STATE_HISTORY_COUNT_OFF == STATE_BLOCK_SIZE_OFF + 4);
const _: () = assert!(STATE_DEST_COUNT_OFF == STATE_HISTORY_COUNT_OFF + 2);
const _: () = assert!(STATE_APPLIED_COUNT_OFF == STATE_DEST_COUNT_OFF + 2);
const _: () = assert!(STATE_RESERVED_OFF == STATE_APPLIED_COUNT_OFF + 2);
const _: () = assert!(STATE_FIXED_LEN == STATE_RESERVED_OFF + STATE_RESERVED_LEN);
const _: () = assert!(STATE_FIXED_LEN.is_multiple_of(16));
const _: () = assert!(DEST_EPOCH_OFF == DEST_TIMELINE_OFF + 4);
const _: () = assert!(DEST_LAST_EXPORT_OFF == DEST_EPOCH_OFF + 4);
const _: () = assert!(DEST_NAME_LEN_OFF == DEST_LAST_EXPORT_OFF + 8);
const _: () = assert!(DEST_FIXED_LEN == DEST_NAME_LEN_OFF + 1);
const _: () = assert!(APPLIED_TIMELINE_OFF == APPLIED_PACKET_ID_OFF + 16);
const _: () = assert!(APPLIED_BASE_EPOCH_OFF == APPLIED_TIMELINE_OFF + 4);
const _: () = assert!(APPLIED_NEW_EPOCH_OFF == APPLIED_BASE_EPOCH_OFF + 4);
const _: () = assert!(APPLIED_RESERVED_OFF == APPLIED_NEW_EPOCH_OFF + 4);
const _: () = assert!(APPLIED_AT_OFF == APPLIED_RESERVED_OFF + 4);
const _: () = assert!(APPLIED_DIGEST_OFF == APPLIED_AT_OFF + 8);
const _: () = assert!(APPLIED_LEN == APPLIED_DIGEST_OFF + 32);
const _: () = assert!(ENTRY_LEN == ENTRY_STAMP_OFF + 4);
const _: () = assert!(ENTRY_DIGEST_LEN == ENTRY_STAMP_OFF);
const _: () = assert!(STATE_HEAD_MAX_LEN == 25_216);
const _: () = assert!(CHUNK_STRIDE == 65_552);

const WHAT: &str = "state file head";

/// One block's entry: a digest of its content and the epoch that last
/// changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Entry {
    /// The low 96 bits of the block's xxh3-128 hash, little-endian (the
    /// engine computes it; [`Entry::from_xxh3_128`]).
    pub digest: [u8; ENTRY_DIGEST_LEN],
    /// The epoch in which the block last changed (0: never since the
    /// lineage began).
    pub stamp: u32,
}

impl Entry {
    /// An entry from a full 128-bit hash: its low 96 bits, little-endian.
    pub fn from_xxh3_128(hash: u128, stamp: u32) -> Entry {
        Entry {
            digest: array_at(&hash.to_le_bytes(), 0),
            stamp,
        }
    }

    /// The 16 bytes of this entry: digest, then stamp.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        put(&mut b, 0, &self.digest);
        put_u32(&mut b, ENTRY_STAMP_OFF, self.stamp);
        b
    }

    /// Reads an entry from its 16 bytes.
    pub fn decode(b: &[u8; ENTRY_LEN]) -> Entry {
        Entry {
            digest: array_at(b, 0),
            stamp: u32_at(b, ENTRY_STAMP_OFF),
        }
    }
}

/// A destination as the exporter knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Its name, 1 to [`MAX_NAME`] bytes, unique in the table.
    pub name: String,
    /// The timeline it is believed to hold.
    pub timeline: u32,
    /// The epoch it is believed to hold.
    pub epoch: u32,
    /// When a packet was last exported for it, seconds since the Unix epoch
    /// (0: never).
    pub last_export: u64,
}

/// A packet that was applied, kept so that a replay is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The packet's id, unique in the log.
    pub packet_id: [u8; 16],
    /// The packet's timeline.
    pub timeline: u32,
    /// Its base epoch.
    pub base_epoch: u32,
    /// Its new epoch.
    pub new_epoch: u32,
    /// When it was applied, seconds since the Unix epoch.
    pub applied_at: u64,
    /// Its content digest ([`crate::PacketSummary::content_digest`]).
    pub content_digest: [u8; 32],
}

/// What the applied log says about an incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// The packet id is not in the log.
    New,
    /// The same packet, with the same content, was applied before.
    AlreadyApplied,
    /// A packet with this id but other content was applied before: the
    /// packet was altered, or ids collide.
    Altered,
}

/// The head of a state file: everything but the per-block entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The pool set UUID of the pool.
    pub poolset_uuid: [u8; 16],
    /// The lineage.
    pub lineage: [u8; 16],
    /// The current timeline.
    pub timeline: u32,
    /// Its canonical history.
    pub history: Vec<Fork>,
    /// The current epoch: no stamp is greater.
    pub epoch: u32,
    /// Incremented by the engine on every write of the file, so that two
    /// versions can be told apart.
    pub generation: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// The replicated logical range; one entry per block of it.
    pub range: Range<u64>,
    /// The destination table (exporters), at most [`MAX_STATE_DESTINATIONS`].
    pub destinations: Vec<Destination>,
    /// The applied-packet log, oldest first, at most [`MAX_APPLIED`].
    pub applied: Vec<Applied>,
    /// The site follows the writer ([`STATE_FLAG_FOLLOWER`]): it imports
    /// epochs and may forward them, but makes none of its own.
    pub follower: bool,
}

/// Where the parts of a state file lie, and the head tag that binds its
/// chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLayout {
    /// Bytes of the head: the offset of the first chunk.
    pub head_len: u64,
    /// Entries in the file: one per block of the range.
    pub block_count: u64,
    /// The head's tag.
    pub head_tag: [u8; TAG_LEN],
    /// The state's epoch: entries with a greater stamp are refused.
    pub epoch: u32,
}

impl StateLayout {
    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        self.block_count.div_ceil(CHUNK_ENTRIES as u64)
    }

    /// Entries in chunk `chunk`.
    pub fn chunk_entries(&self, chunk: u64) -> usize {
        let first = chunk.saturating_mul(CHUNK_ENTRIES as u64);
        self.block_count
            .saturating_sub(first)
            .min(CHUNK_ENTRIES as u64) as usize
    }

    /// File offset of chunk `chunk`.
    pub fn chunk_offset(&self, chunk: u64) -> u64 {
        self.head_len
            .saturating_add(chunk.saturating_mul(CHUNK_STRIDE as u64))
    }

    /// Bytes of chunk `chunk`: its entries and its tag.
    pub fn chunk_len(&self, chunk: u64) -> usize {
        self.chunk_entries(chunk) * ENTRY_LEN + TAG_LEN
    }

    /// The chunk holding block `block`'s entry, and the entry's index in it.
    pub fn chunk_of(&self, block: u64) -> (u64, usize) {
        (
            block / CHUNK_ENTRIES as u64,
            (block % CHUNK_ENTRIES as u64) as usize,
        )
    }

    /// File offset of block `block`'s entry.
    pub fn entry_offset(&self, block: u64) -> u64 {
        let (chunk, index) = self.chunk_of(block);
        self.chunk_offset(chunk)
            .saturating_add((index * ENTRY_LEN) as u64)
    }

    /// The length the whole file must have.
    pub fn file_len(&self) -> u64 {
        self.head_len
            .saturating_add(self.block_count.saturating_mul(ENTRY_LEN as u64))
            .saturating_add(self.chunk_count().saturating_mul(TAG_LEN as u64))
    }

    /// Checks the file's length: a shorter file was truncated, a longer one
    /// has trailing bytes.
    pub fn check_file_len(&self, len: u64) -> Result<(), Error> {
        let want = self.file_len();
        if len < want {
            return Err(Error::Truncated {
                what: "state file",
                offset: len,
                needed: want - len,
                available: 0,
            });
        }
        if len > want {
            return Err(Error::field(
                "file length",
                want,
                format!("{} bytes follow the last chunk", len - want),
            ));
        }
        Ok(())
    }

    fn chunk_tag(&self, chunk: u64, entries: &[u8]) -> [u8; TAG_LEN] {
        Tagger::new(None, DOMAIN_STATE_CHUNK)
            .update(&self.head_tag)
            .update(&chunk.to_le_bytes())
            .update(entries)
            .tag()
    }

    fn check_chunk_index(&self, chunk: u64) -> Result<(), Error> {
        if chunk >= self.chunk_count() {
            return Err(Error::Misuse {
                api: "StateLayout chunk",
                problem: "chunk index beyond the chunk count",
            });
        }
        Ok(())
    }

    /// Encodes chunk `chunk` from exactly [`chunk_entries`](Self::chunk_entries) entries.
    pub fn encode_chunk(&self, chunk: u64, entries: &[Entry]) -> Result<Vec<u8>, Error> {
        self.check_chunk_index(chunk)?;
        if entries.len() != self.chunk_entries(chunk) {
            return Err(Error::encode(
                "state chunk",
                format!(
                    "{} entries given, chunk {chunk} holds {}",
                    entries.len(),
                    self.chunk_entries(chunk)
                ),
            ));
        }
        if let Some(e) = entries.iter().find(|e| e.stamp > self.epoch) {
            return Err(Error::encode(
                "block stamp",
                format!("{} is after the state's epoch {}", e.stamp, self.epoch),
            ));
        }
        let mut b = Vec::with_capacity(self.chunk_len(chunk));
        for e in entries {
            b.extend_from_slice(&e.encode());
        }
        let tag = self.chunk_tag(chunk, &b);
        b.extend_from_slice(&tag);
        Ok(b)
    }

    /// Verifies chunk `chunk` (`bytes` is exactly
    /// [`chunk_len`](Self::chunk_len) bytes read at
    /// [`chunk_offset`](Self::chunk_offset)) without decoding it.
    pub fn verify_chunk(&self, chunk: u64, bytes: &[u8]) -> Result<(), Error> {
        self.check_chunk_index(chunk)?;
        let base = self.chunk_offset(chunk);
        let len = self.chunk_len(chunk);
        need(bytes, len, "state chunk", base)?;
        if bytes.len() > len {
            return Err(Error::Misuse {
                api: "StateLayout::verify_chunk",
                problem: "more bytes than the chunk holds",
            });
        }
        let entries_len = len - TAG_LEN;
        let entries = bytes.get(..entries_len).unwrap_or_default();
        let tag: [u8; TAG_LEN] = array_at(bytes, entries_len);
        if !tags_equal(&tag, &self.chunk_tag(chunk, entries)) {
            return Err(Error::BadTag {
                what: "state chunk",
                offset: base,
                signed: false,
            });
        }
        for (i, e) in entries.chunks_exact(ENTRY_LEN).enumerate() {
            let stamp = u32_at(e, ENTRY_STAMP_OFF);
            if stamp > self.epoch {
                return Err(Error::field(
                    "block stamp",
                    at(base, i * ENTRY_LEN + ENTRY_STAMP_OFF),
                    format!("{stamp} is after the state's epoch {}", self.epoch),
                ));
            }
        }
        Ok(())
    }

    /// Verifies chunk `chunk` and decodes its entries.
    pub fn decode_chunk(&self, chunk: u64, bytes: &[u8]) -> Result<Vec<Entry>, Error> {
        self.verify_chunk(chunk, bytes)?;
        Ok(bytes
            .chunks_exact(ENTRY_LEN)
            .take(self.chunk_entries(chunk))
            .map(|e| Entry::decode(&array_at(e, 0)))
            .collect())
    }
}

/// Decodes one entry from the 16 bytes at [`StateLayout::entry_offset`]
/// (unverified: verify its chunk first when it comes from disk).
pub fn decode_entry(bytes: &[u8; ENTRY_LEN]) -> Entry {
    Entry::decode(bytes)
}

/// The head length a state file declares, from its first
/// [`STATE_FIXED_LEN`] bytes: how many bytes to read for
/// [`State::decode_head`].
pub fn state_head_len(prefix: &[u8]) -> Result<usize, Error> {
    need(prefix, STATE_FIXED_LEN, WHAT, 0)?;
    check_magic(prefix, STATE_MAGIC, WHAT, 0)?;
    let version = u16_at(prefix, STATE_VERSION_OFF);
    if version != STATE_VERSION {
        return Err(Error::Version {
            what: WHAT,
            offset: STATE_VERSION_OFF as u64,
            found: version,
            supported: "version 1",
        });
    }
    let len = u32_at(prefix, STATE_HEAD_LEN_OFF) as usize;
    let min = align_up(STATE_FIXED_LEN + TAG_LEN, STATE_HEAD_ALIGN);
    if len < min || len > STATE_HEAD_MAX_LEN || !len.is_multiple_of(STATE_HEAD_ALIGN) {
        return Err(Error::field(
            "head length",
            STATE_HEAD_LEN_OFF as u64,
            format!("{len} bytes, expected a multiple of {STATE_HEAD_ALIGN} from {min} to {STATE_HEAD_MAX_LEN}"),
        ));
    }
    Ok(len)
}

impl State {
    /// Entries in the file: one per block of the range (0 if the range is
    /// invalid).
    pub fn block_count(&self) -> u64 {
        if self.block_size == 0 {
            return 0;
        }
        self.range.end.saturating_sub(self.range.start) / u64::from(self.block_size)
    }

    /// Offsets of the history, destinations, applied log and the end of the
    /// variable part.
    fn var_offsets(&self) -> (usize, usize, usize, usize) {
        let history = STATE_FIXED_LEN;
        let dests = history + self.history.len() * FORK_LEN;
        let applied = dests
            + self
                .destinations
                .iter()
                .map(|d| DEST_FIXED_LEN + d.name.len())
                .sum::<usize>();
        let end = applied + self.applied.len() * APPLIED_LEN;
        (history, dests, applied, end)
    }

    /// The first rule this state breaks: field, offset in the head, problem.
    fn problem(&self) -> Option<(&'static str, usize, String)> {
        let (hist_off, dest_off, applied_off, _) = self.var_offsets();
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return Some((
                "block size",
                STATE_BLOCK_SIZE_OFF,
                format!("{bs} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"),
            ));
        }
        let bs = u64::from(bs);
        if !self.range.start.is_multiple_of(bs) {
            return Some((
                "range start",
                STATE_RANGE_START_OFF,
                format!("{} is not a multiple of the block size", self.range.start),
            ));
        }
        if !self.range.end.is_multiple_of(bs) || self.range.end <= self.range.start {
            return Some((
                "range end",
                STATE_RANGE_END_OFF,
                format!(
                    "{} is not a multiple of the block size after the range start {}",
                    self.range.end, self.range.start
                ),
            ));
        }
        if let Err(p) = check_history(self.timeline, &self.history) {
            return Some(match p.index {
                Some(i) => ("timeline history", hist_off + i * FORK_LEN, p.problem),
                None => ("timeline", STATE_TIMELINE_OFF, p.problem),
            });
        }
        if self.epoch < fork_epoch(&self.history) {
            return Some((
                "epoch",
                STATE_EPOCH_OFF,
                format!(
                    "{} is before the timeline's fork epoch {}",
                    self.epoch,
                    fork_epoch(&self.history)
                ),
            ));
        }
        if self.destinations.len() > MAX_STATE_DESTINATIONS {
            return Some((
                "destination count",
                STATE_DEST_COUNT_OFF,
                format!(
                    "{} destinations, at most {MAX_STATE_DESTINATIONS} allowed",
                    self.destinations.len()
                ),
            ));
        }
        let mut off = dest_off;
        for (i, d) in self.destinations.iter().enumerate() {
            if d.name.is_empty() || d.name.len() > MAX_NAME {
                return Some((
                    "destination name",
                    off + DEST_NAME_LEN_OFF,
                    format!("{} bytes, expected 1 to {MAX_NAME}", d.name.len()),
                ));
            }
            if self.destinations[..i].iter().any(|e| e.name == d.name) {
                return Some((
                    "destination name",
                    off + DEST_FIXED_LEN,
                    format!("\"{}\" appears twice", d.name),
                ));
            }
            if d.timeline == 0 {
                return Some((
                    "destination timeline",
                    off + DEST_TIMELINE_OFF,
                    "timeline 0".into(),
                ));
            }
            off += DEST_FIXED_LEN + d.name.len();
        }
        if self.applied.len() > MAX_APPLIED {
            return Some((
                "applied count",
                STATE_APPLIED_COUNT_OFF,
                format!(
                    "{} entries, at most {MAX_APPLIED} allowed",
                    self.applied.len()
                ),
            ));
        }
        for (i, a) in self.applied.iter().enumerate() {
            let off = applied_off + i * APPLIED_LEN;
            if self.applied[..i].iter().any(|b| b.packet_id == a.packet_id) {
                return Some((
                    "applied packet id",
                    off + APPLIED_PACKET_ID_OFF,
                    "appears twice".into(),
                ));
            }
            if a.base_epoch >= a.new_epoch {
                return Some((
                    "applied new epoch",
                    off + APPLIED_NEW_EPOCH_OFF,
                    format!(
                        "{} is not after the base epoch {}",
                        a.new_epoch, a.base_epoch
                    ),
                ));
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

    /// Encodes the head; the layout it returns encodes the chunks that
    /// follow it.
    pub fn encode_head(&self) -> Result<(Vec<u8>, StateLayout), Error> {
        self.validate()?;
        let (_, _, _, end) = self.var_offsets();
        let head_len = align_up(end + TAG_LEN, STATE_HEAD_ALIGN);
        let mut b = vec![0u8; STATE_FIXED_LEN];
        put(&mut b, STATE_MAGIC_OFF, STATE_MAGIC);
        put_u16(&mut b, STATE_VERSION_OFF, STATE_VERSION);
        if self.follower {
            put_u16(&mut b, STATE_FLAGS_OFF, STATE_FLAG_FOLLOWER);
        }
        // Bounded by STATE_HEAD_MAX_LEN once validated.
        put_u32(&mut b, STATE_HEAD_LEN_OFF, head_len as u32);
        put(&mut b, STATE_POOLSET_UUID_OFF, &self.poolset_uuid);
        put(&mut b, STATE_LINEAGE_OFF, &self.lineage);
        put_u32(&mut b, STATE_TIMELINE_OFF, self.timeline);
        put_u32(&mut b, STATE_EPOCH_OFF, self.epoch);
        put_u64(&mut b, STATE_GENERATION_OFF, self.generation);
        put_u64(&mut b, STATE_RANGE_START_OFF, self.range.start);
        put_u64(&mut b, STATE_RANGE_END_OFF, self.range.end);
        put_u32(&mut b, STATE_BLOCK_SIZE_OFF, self.block_size);
        put_u16(&mut b, STATE_HISTORY_COUNT_OFF, self.history.len() as u16);
        put_u16(&mut b, STATE_DEST_COUNT_OFF, self.destinations.len() as u16);
        put_u16(&mut b, STATE_APPLIED_COUNT_OFF, self.applied.len() as u16);
        for f in &self.history {
            b.extend_from_slice(&f.encode());
        }
        for d in &self.destinations {
            b.extend_from_slice(&d.timeline.to_le_bytes());
            b.extend_from_slice(&d.epoch.to_le_bytes());
            b.extend_from_slice(&d.last_export.to_le_bytes());
            b.push(d.name.len() as u8);
            b.extend_from_slice(d.name.as_bytes());
        }
        for a in &self.applied {
            let mut e = [0u8; APPLIED_LEN];
            put(&mut e, APPLIED_PACKET_ID_OFF, &a.packet_id);
            put_u32(&mut e, APPLIED_TIMELINE_OFF, a.timeline);
            put_u32(&mut e, APPLIED_BASE_EPOCH_OFF, a.base_epoch);
            put_u32(&mut e, APPLIED_NEW_EPOCH_OFF, a.new_epoch);
            put_u64(&mut e, APPLIED_AT_OFF, a.applied_at);
            put(&mut e, APPLIED_DIGEST_OFF, &a.content_digest);
            b.extend_from_slice(&e);
        }
        debug_assert_eq!(b.len(), end);
        b.resize(head_len - TAG_LEN, 0);
        let tag = Tagger::new(None, DOMAIN_STATE_HEAD).update(&b).tag();
        b.extend_from_slice(&tag);
        let layout = StateLayout {
            head_len: head_len as u64,
            block_count: self.block_count(),
            head_tag: tag,
            epoch: self.epoch,
        };
        Ok((b, layout))
    }

    /// Decodes and verifies a head: `bytes` holds at least the head
    /// ([`state_head_len`] says how long it is); more is ignored.
    pub fn decode_head(bytes: &[u8]) -> Result<(State, StateLayout), Error> {
        let len = state_head_len(bytes)?;
        need(bytes, len, WHAT, 0)?;
        let tag_off = len - TAG_LEN;
        let tag: [u8; TAG_LEN] = array_at(bytes, tag_off);
        let computed = Tagger::new(None, DOMAIN_STATE_HEAD)
            .update(bytes.get(..tag_off).unwrap_or_default())
            .tag();
        if !tags_equal(&tag, &computed) {
            return Err(Error::BadTag {
                what: WHAT,
                offset: 0,
                signed: false,
            });
        }
        let flags = u16_at(bytes, STATE_FLAGS_OFF);
        if flags & !STATE_FLAG_FOLLOWER != 0 {
            return Err(Error::field(
                "flags",
                STATE_FLAGS_OFF as u64,
                format!("unknown bits {:#06x}", flags & !STATE_FLAG_FOLLOWER),
            ));
        }
        check_zero(bytes, STATE_RESERVED_OFF, STATE_RESERVED_LEN, "reserved", 0)?;
        let count = |off: usize, max: usize, field: &'static str| {
            let n = usize::from(u16_at(bytes, off));
            if n > max {
                Err(Error::field(
                    field,
                    off as u64,
                    format!("{n}, at most {max} allowed"),
                ))
            } else {
                Ok(n)
            }
        };
        let history_count = count(STATE_HISTORY_COUNT_OFF, MAX_HISTORY, "history count")?;
        let dest_count = count(
            STATE_DEST_COUNT_OFF,
            MAX_STATE_DESTINATIONS,
            "destination count",
        )?;
        let applied_count = count(STATE_APPLIED_COUNT_OFF, MAX_APPLIED, "applied count")?;

        let body = bytes.get(..tag_off).unwrap_or_default();
        let mut r = Reader::new(body, STATE_FIXED_LEN, 0, WHAT)
            .declared_by("head length", STATE_HEAD_LEN_OFF as u64);
        let mut history = Vec::with_capacity(history_count);
        for _ in 0..history_count {
            history.push(Fork::decode(&r.array()?));
        }
        let mut destinations = Vec::with_capacity(dest_count);
        for _ in 0..dest_count {
            let timeline = r.u32()?;
            let epoch = r.u32()?;
            let last_export = r.u64()?;
            let name_at = r.offset();
            let n = usize::from(r.u8()?);
            let name = utf8(r.take(n)?, "destination name", name_at + 1)?;
            destinations.push(Destination {
                name,
                timeline,
                epoch,
                last_export,
            });
        }
        let mut applied = Vec::with_capacity(applied_count);
        for _ in 0..applied_count {
            let entry_at = r.offset();
            let e: [u8; APPLIED_LEN] = r.array()?;
            check_zero(&e, APPLIED_RESERVED_OFF, 4, "reserved", entry_at)?;
            applied.push(Applied {
                packet_id: array_at(&e, APPLIED_PACKET_ID_OFF),
                timeline: u32_at(&e, APPLIED_TIMELINE_OFF),
                base_epoch: u32_at(&e, APPLIED_BASE_EPOCH_OFF),
                new_epoch: u32_at(&e, APPLIED_NEW_EPOCH_OFF),
                applied_at: u64_at(&e, APPLIED_AT_OFF),
                content_digest: array_at(&e, APPLIED_DIGEST_OFF),
            });
        }
        let end = r.pos();
        if align_up(end + TAG_LEN, STATE_HEAD_ALIGN) != len {
            return Err(Error::field(
                "head length",
                STATE_HEAD_LEN_OFF as u64,
                format!("declares {len} bytes but its fields end at {end}"),
            ));
        }
        check_zero(body, end, tag_off - end, "padding", 0)?;
        let state = State {
            poolset_uuid: array_at(bytes, STATE_POOLSET_UUID_OFF),
            lineage: array_at(bytes, STATE_LINEAGE_OFF),
            timeline: u32_at(bytes, STATE_TIMELINE_OFF),
            history,
            epoch: u32_at(bytes, STATE_EPOCH_OFF),
            generation: u64_at(bytes, STATE_GENERATION_OFF),
            block_size: u32_at(bytes, STATE_BLOCK_SIZE_OFF),
            range: u64_at(bytes, STATE_RANGE_START_OFF)..u64_at(bytes, STATE_RANGE_END_OFF),
            destinations,
            applied,
            follower: flags & STATE_FLAG_FOLLOWER != 0,
        };
        if let Some((field, off, problem)) = state.problem() {
            return Err(Error::field(field, off as u64, problem));
        }
        let layout = StateLayout {
            head_len: len as u64,
            block_count: state.block_count(),
            head_tag: tag,
            epoch: state.epoch,
        };
        Ok((state, layout))
    }

    /// Adds a packet to the applied log, dropping the oldest entries beyond
    /// [`MAX_APPLIED`] (and an older entry with the same packet id).
    pub fn record_applied(&mut self, applied: Applied) {
        self.applied.retain(|a| a.packet_id != applied.packet_id);
        self.applied.push(applied);
        let excess = self.applied.len().saturating_sub(MAX_APPLIED);
        self.applied.drain(..excess);
    }

    /// What the applied log says about a packet with this id and content
    /// digest.
    pub fn replay(&self, packet_id: &[u8; 16], content_digest: &[u8; 32]) -> Replay {
        match self.applied.iter().find(|a| &a.packet_id == packet_id) {
            None => Replay::New,
            Some(a) if &a.content_digest == content_digest => Replay::AlreadyApplied,
            Some(_) => Replay::Altered,
        }
    }

    /// The destination named `name`, if the table has it.
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

/// The size of a state file for `block_count` blocks and a head of
/// `head_len` bytes.
pub fn state_file_len(head_len: u64, block_count: u64) -> u64 {
    StateLayout {
        head_len,
        block_count,
        head_tag: [0; TAG_LEN],
        epoch: 0,
    }
    .file_len()
}
