//! Update packets: a pool's changes shipped to offline copies at block
//! level, as ClearCase MultiSite's `syncreplica -export/-import` ships a
//! VOB's (`docs/packet.md` is the byte-level format).
//!
//! One site, the *writer*, advances a series of *epochs*. Every site keeps
//! a state file beside its pool set file ([`state`]): the digest and the
//! epoch stamp of every 4 KiB block of the replicated range, the epoch it
//! holds, its lineage and timeline, the destinations it exports to and the
//! packets it applied.
//!
//! The pieces, each usable without files (a remote replica over a
//! connection reuses them):
//!
//! * [`scan`]: change detection. One read of a source endpoint, a digest
//!   per block, compared with the old state's entries, gives every block
//!   its new entry and says whether it ships.
//! * [`stream`]: the packet stream. [`stream::RecordWriter`] turns shipped
//!   blocks into records (zero runs without bytes) and physical files of
//!   at most `--max-size` bytes, written to any [`stream::PacketSink`].
//! * [`apply`]: verifying a destination against its state and writing
//!   verified records into every replica of it, from any
//!   [`apply::RecordSource`].
//!
//! The commands are made of them: [`export`] (`poolsync export`),
//! [`import`] (`poolsync import`, with seeding, `--diagnose` and rewind
//! requests), [`epoch`] (`poolsync epoch`, with promotion) and
//! [`describe`] (`poolsync packet`). Physical packet files are read in
//! [`files`].

pub mod apply;
pub mod deleting;
pub mod describe;
pub mod destination;
pub mod epoch;
pub mod export;
pub mod files;
pub mod import;
pub mod readahead;
pub mod scan;
pub mod state;
pub mod stream;

use std::path::{Path, PathBuf};

use poolsync_pmem::Storage;
use serde::Serialize;

pub use poolsync_packet as codec;
pub use poolsync_packet::{Compression, Key};

use crate::Error;

/// Bytes per block: the unit of change detection, stamps and records.
pub const BLOCK_SIZE: u32 = 4096;

/// Appended to a pool set file's path to name its state file.
pub const STATE_SUFFIX: &str = ".poolsync-state";

/// The state file of the pool set (or single-file pool) at `set_path`:
/// `<set>.poolsync-state`, beside it.
pub fn state_path(set_path: &Path) -> PathBuf {
    crate::durable::beside(set_path, STATE_SUFFIX)
}

/// Where packet ids and lineages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdSource {
    /// Random bytes, as a real run makes them.
    #[default]
    Random,
    /// Bytes derived from a seed and what the id is for: the same inputs
    /// give the same id in every run. For tests, so that a run after a
    /// crash can be compared with an uninterrupted one byte for byte.
    Derived {
        /// The seed.
        seed: u64,
    },
}

impl IdSource {
    /// 16 bytes for `purpose` (`b"lineage"`, `b"packet"`), told apart by
    /// `salt` when derived.
    pub fn generate(&self, purpose: &[u8], salt: u64) -> [u8; 16] {
        match self {
            IdSource::Random => *uuid::Uuid::new_v4().as_bytes(),
            IdSource::Derived { seed } => {
                let mut h = twox_hash::XxHash3_128::new();
                h.write(&seed.to_le_bytes());
                h.write(purpose);
                h.write(&salt.to_le_bytes());
                h.finish_128().to_le_bytes()
            }
        }
    }
}

/// Reads a key file (16 bytes to 64 KiB of secret) through the storage and
/// derives the signing key from it (`docs/packet.md` section 1).
pub fn read_key<S: Storage>(storage: &S, path: &Path) -> Result<Key, Error> {
    let max = poolsync_packet::MAX_KEY_FILE_LEN as u64;
    let bytes = storage.read_all(path, max).map_err(|e| Error::KeyFile {
        path: path.to_path_buf(),
        reason: match e {
            poolsync_pmem::Error::TooLarge { len, .. } => format!(
                "{len} bytes, expected {} to {max}",
                poolsync_packet::MIN_KEY_FILE_LEN
            ),
            other => other.to_string(),
        },
    })?;
    poolsync_packet::key_from_file(&bytes).map_err(|e| Error::KeyFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A pool set UUID (on-media byte order) in its canonical text form.
pub fn uuid_text(bytes: &[u8; 16]) -> String {
    poolsync_header::RawUuid(*bytes).to_canonical()
}

/// A lineage as text: 32 hex digits.
pub fn lineage_text(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A run of blocks, by logical byte offset and length, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Logical offset of the first byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

impl Span {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.offset, self.end())
    }
}

/// At most this many spans are kept in a report (the rest are merged
/// into their neighbours, so the list only ever covers more, never less).
pub const MAX_REPORTED_SPANS: usize = 65_536;

/// A bounded list of spans in ascending order: adjacent spans merge, and
/// past [`MAX_REPORTED_SPANS`] the ones with the smallest gaps merge too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Spans(Vec<Span>);

impl Spans {
    /// Adds `[offset, offset + len)`, which must not start before the end
    /// of the last span added.
    pub fn push(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        match self.0.last_mut() {
            Some(last) if last.end() >= offset => {
                last.len = offset.saturating_add(len).max(last.end()) - last.offset;
            }
            _ => self.0.push(Span { offset, len }),
        }
        if self.0.len() > 2 * MAX_REPORTED_SPANS {
            self.coarsen(MAX_REPORTED_SPANS);
        }
    }

    /// Merges the spans with the smallest gaps until at most `max` remain.
    pub fn coarsen(&mut self, max: usize) {
        if self.0.len() <= max.max(1) {
            return;
        }
        let mut ranges: Vec<poolsync_packet::BlockRange> = self
            .0
            .iter()
            .map(|s| poolsync_packet::BlockRange {
                offset: s.offset,
                blocks: s.len.div_ceil(1),
            })
            .collect();
        // Bytes as blocks of one byte: coarsen_ranges only merges.
        poolsync_packet::coarsen_ranges(&mut ranges, 1, max.max(1));
        self.0 = ranges
            .into_iter()
            .map(|r| Span {
                offset: r.offset,
                len: r.blocks,
            })
            .collect();
    }

    /// The spans.
    pub fn as_slice(&self) -> &[Span] {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes covered.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|s| s.len).sum()
    }

    /// The first few spans as text, `[0x1000, 0x3000), [0x8000, 0x9000) and
    /// 12 more`.
    pub fn summary(&self, shown: usize) -> String {
        let mut text: Vec<String> = self.0.iter().take(shown).map(|s| s.to_string()).collect();
        if self.0.len() > shown {
            text.push(format!("{} more", self.0.len() - shown));
        }
        match text.len() {
            0 => "none".to_string(),
            1 => text.remove(0),
            n => {
                let last = text.remove(n - 1);
                format!("{} and {last}", text.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_sits_beside_the_set() {
        assert_eq!(
            state_path(Path::new("/p/pool.set")),
            Path::new("/p/pool.set.poolsync-state")
        );
        assert_eq!(
            state_path(Path::new("pool")),
            Path::new("pool.poolsync-state")
        );
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let d = IdSource::Derived { seed: 3 };
        assert_eq!(d.generate(b"packet", 1), d.generate(b"packet", 1));
        assert_ne!(d.generate(b"packet", 1), d.generate(b"packet", 2));
        assert_ne!(d.generate(b"packet", 1), d.generate(b"lineage", 1));
        assert_ne!(
            IdSource::Random.generate(b"x", 0),
            IdSource::Random.generate(b"x", 0)
        );
    }

    #[test]
    fn spans_merge_and_stay_bounded() {
        let mut s = Spans::default();
        s.push(0, 4096);
        s.push(4096, 4096);
        s.push(16384, 4096);
        assert_eq!(s.as_slice().len(), 2);
        assert_eq!(s.bytes(), 3 * 4096);
        assert_eq!(s.summary(1), "[0x0, 0x2000) and 1 more");
        let mut many = Spans::default();
        for i in 0..(3 * MAX_REPORTED_SPANS as u64) {
            many.push(i * 8192, 4096);
        }
        assert!(many.as_slice().len() <= 2 * MAX_REPORTED_SPANS);
        many.coarsen(10);
        assert_eq!(many.as_slice().len(), 10);
        assert_eq!(many.as_slice()[0].offset, 0);
        assert_eq!(
            many.as_slice().last().map(Span::end),
            Some((3 * MAX_REPORTED_SPANS as u64 - 1) * 8192 + 4096)
        );
    }
}
