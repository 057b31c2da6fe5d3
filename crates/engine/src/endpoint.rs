//! Endpoints: one side of a data movement, addressed by logical range.
//!
//! Every copy, comparison and repair moves the pool's logical bytes from
//! one [`Endpoint`] to another: a local replica, a transform's temporary
//! copy or its source, and (as they arrive) an update packet or a replica
//! at the other end of an ssh connection. An endpoint reads a range, gives
//! the digests of ranges (so that two sides can be compared without both
//! sides' bytes in one process), writes runs, flushes and fences, and
//! reads and writes the pool headers of its parts.
//!
//! The trait is shaped to carry over a stream: every argument and result
//! is a value (offsets, byte buffers the caller owns, [`HeaderState`]s,
//! [`HeaderWrite`]s, [`Location`]s), never a reference into someone's
//! mapped memory, and the header values serialize.
//!
//! [`OpenReplica`] is the local endpoint: it maps logical ranges onto its
//! part files with [`poolsync_poolset::map_range`], the one place that
//! arithmetic lives.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use poolsync_header::{PoolHdr, POOL_HDR_CSUM_OFF};
use poolsync_pmem::PartFile;
use serde::{Deserialize, Serialize};

use crate::durable;
use crate::open::{HeaderState, OpenReplica, OpenSet, ReadHeader};
use crate::range::LogicalRange;
use crate::Error;

/// The digest of a range of bytes: a 128-bit XXH3. It tells changed blocks
/// from unchanged ones (damage, or an application's writes); it is not a
/// defence against a forger.
pub type Digest = u128;

/// The [`Digest`] of `bytes`.
///
/// twox-hash picks the widest vector unit the machine has (AVX2 on most
/// x86-64) when it runs; a build for the baseline x86-64 would otherwise
/// hash with SSE2 only, at about half the speed. Every implementation of
/// XXH3 gives the same value (a test checks it against another one), so
/// digests kept in state files stay valid.
pub fn digest(bytes: &[u8]) -> Digest {
    twox_hash::XxHash3_128::oneshot(bytes)
}

/// Bytes a default [`Endpoint::digests`] reads at a time.
const DIGEST_CHUNK: u64 = 1 << 20;

/// A header write that an endpoint makes durable before it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderWrite {
    /// The whole header page. With `stamp_crtime`, its creation time is
    /// the part file's ctime at the moment of writing (as PMDK stamps a new
    /// header), and its checksum is computed again.
    Whole {
        /// The header.
        header: Box<PoolHdr>,
        /// Take the creation time from the file.
        stamp_crtime: bool,
    },
    /// Only the checksum field (header offset 4088): how a header that
    /// still looks valid is marked broken for a while (docs/format.md §2).
    Checksum {
        /// The value stored.
        value: u64,
    },
}

/// Where a piece of a logical range lies in one endpoint's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Replica index (the endpoint's number in its plan).
    pub replica: usize,
    /// Part index within the replica.
    pub part: usize,
    /// The part file.
    pub path: PathBuf,
    /// File offset of the piece's first byte.
    pub file_offset: u64,
    /// Length of the piece.
    pub len: u64,
}

/// One side of a data movement (see the module documentation).
///
/// Every method may be called from several threads at once; writes to
/// disjoint ranges do not interfere.
pub trait Endpoint: Send + Sync + fmt::Debug {
    /// How messages name it: `replica 1`, `the temporary copy …`.
    fn name(&self) -> String;

    /// One past the last logical byte it holds.
    fn end(&self) -> u64;

    /// Reads exactly `buf.len()` bytes at logical `offset`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error>;

    /// Appends the [`Digest`] of each of `ranges`, in order, to `out`.
    ///
    /// The default reads each range in bounded chunks; an endpoint across
    /// a connection computes them where the bytes are.
    fn digests(&self, ranges: &[LogicalRange], out: &mut Vec<Digest>) -> Result<(), Error> {
        let mut buf = Vec::new();
        for range in ranges {
            if range.len <= DIGEST_CHUNK {
                buf.resize(usize::try_from(range.len).unwrap_or(0), 0);
                self.read(range.offset, &mut buf)?;
                out.push(digest(&buf));
                continue;
            }
            let mut hasher = twox_hash::XxHash3_128::new();
            let mut pos = range.offset;
            while pos < range.end() {
                let n = (range.end() - pos).min(DIGEST_CHUNK);
                buf.resize(usize::try_from(n).unwrap_or(0), 0);
                self.read(pos, &mut buf)?;
                hasher.write(&buf);
                pos += n;
            }
            out.push(hasher.finish_128());
        }
        Ok(())
    }

    /// Whether comparing against this endpoint should exchange digests
    /// rather than bytes (its bytes are expensive to fetch).
    fn prefers_digests(&self) -> bool {
        false
    }

    /// Writes `data` at logical `offset` (not yet durable).
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error>;

    /// Schedules `[offset, offset + len)` for persistence.
    fn flush(&self, offset: u64, len: u64) -> Result<(), Error>;

    /// Makes every range flushed so far durable.
    fn fence(&self) -> Result<(), Error>;

    /// The header page of each part, in part order.
    fn headers(&self) -> Vec<HeaderState>;

    /// Writes into the header page of part `part` and makes it durable.
    fn write_header(&self, part: usize, write: &HeaderWrite) -> Result<(), Error>;

    /// Where `range` lies, piece by piece, for messages.
    fn locate(&self, range: LogicalRange) -> Vec<Location>;

    /// Creates part `part` anew, fully allocated, with mode 0, durably
    /// (file and directory entry); with `replace` an existing file is
    /// removed first. Local replicas have their parts created by the
    /// executor through the storage; an endpoint that holds its own files
    /// (a remote replica) does it here.
    fn create_part(&self, part: usize, replace: bool) -> Result<(), Error> {
        let _ = replace;
        Err(Error::InvalidRequest {
            path: PathBuf::from(self.name()),
            reason: format!("part {part}: this endpoint does not create parts"),
        })
    }

    /// Sets the permission bits of part `part`, durably (see
    /// [`Endpoint::create_part`]).
    fn set_mode(&self, part: usize, mode: u32) -> Result<(), Error> {
        let _ = mode;
        Err(Error::InvalidRequest {
            path: PathBuf::from(self.name()),
            reason: format!("part {part}: this endpoint does not set modes"),
        })
    }
}

/// A piece of a logical range with the part it lies in and its file.
type PartPiece<'a, F> = (poolsync_poolset::Piece, &'a crate::open::OpenPart<F>, &'a F);

impl<F: PartFile> OpenReplica<F> {
    /// The pieces of `[offset, offset + len)` in this replica's parts,
    /// each with its open file; fails when the range reaches beyond the
    /// parts or a part it touches is not open.
    fn pieces(&self, offset: u64, len: u64) -> Result<Vec<PartPiece<'_, F>>, Error> {
        let end = offset.saturating_add(len);
        let err = |reason: String| Error::LogicalRead {
            replica: self.index,
            offset,
            end,
            reason,
        };
        if offset.checked_add(len).is_none() {
            return Err(err("the range overflows a 64-bit offset".to_string()));
        }
        let pieces = poolsync_poolset::map_range(&self.extents, offset, len);
        let covered: u64 = pieces.iter().map(|p| p.len).sum();
        if covered != len {
            return Err(err(
                "the range reaches beyond the replica's parts".to_string()
            ));
        }
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces {
            let part = self
                .parts
                .get(piece.part)
                .ok_or_else(|| err(format!("part {} does not exist", piece.part)))?;
            let file = part
                .file
                .as_ref()
                .ok_or_else(|| err(format!("{} is not open ({})", part.name(), part.status)))?;
            out.push((piece, part, file));
        }
        Ok(out)
    }

    /// The open file of part `part`.
    pub(crate) fn part_file(&self, part: usize) -> Result<&F, Error> {
        let p = self.parts.get(part).ok_or_else(|| Error::LogicalRead {
            replica: self.index,
            offset: 0,
            end: 0,
            reason: format!("part {part} does not exist"),
        })?;
        p.file.as_ref().ok_or_else(|| Error::PartUnusable {
            set: p.path.clone(),
            replica: self.index,
            part_index: part,
            part: p.path.clone(),
            reason: format!("not open ({})", p.status),
        })
    }
}

/// Splits a buffer that starts at logical `base` by the pieces of a range.
fn piece_slice(base: u64, piece: &poolsync_poolset::Piece, len: usize) -> Option<(usize, usize)> {
    let start = usize::try_from(piece.logical.checked_sub(base)?).ok()?;
    let n = usize::try_from(piece.len).ok()?;
    let end = start.checked_add(n)?;
    (end <= len).then_some((start, end))
}

impl<F: PartFile> OpenSet<F> {
    /// Reads `buf.len()` bytes of replica `replica` starting at logical
    /// `offset`, splitting the range at part boundaries (docs/format.md §15.1).
    ///
    /// Fails when the range reaches beyond the replica's address space or a
    /// part it touches is not open.
    pub fn read_logical(&self, replica: usize, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let rep = self
            .replicas
            .get(replica)
            .ok_or_else(|| Error::LogicalRead {
                replica,
                offset,
                end: offset.saturating_add(buf.len() as u64),
                reason: "no such replica".to_string(),
            })?;
        Endpoint::read(rep, offset, buf)
    }
}

impl<F: PartFile> Endpoint for OpenReplica<F> {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn end(&self) -> u64 {
        self.extents
            .iter()
            .map(|e| e.logical.saturating_add(e.len))
            .max()
            .unwrap_or(0)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let len = buf.len();
        for (piece, _, file) in self.pieces(offset, len as u64)? {
            let (lo, hi) = piece_slice(offset, &piece, len).ok_or_else(|| outside(self, offset))?;
            let dst = buf.get_mut(lo..hi).ok_or_else(|| outside(self, offset))?;
            file.read_at(piece.file_offset, dst)?;
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let len = data.len();
        for (piece, _, file) in self.pieces(offset, len as u64)? {
            let (lo, hi) = piece_slice(offset, &piece, len).ok_or_else(|| outside(self, offset))?;
            let src = data.get(lo..hi).ok_or_else(|| outside(self, offset))?;
            file.write_at(piece.file_offset, src)?;
        }
        Ok(())
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), Error> {
        for (piece, part, file) in self.pieces(offset, len)? {
            file.flush(piece.file_offset, piece.len)?;
            part.flushed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn fence(&self) -> Result<(), Error> {
        for part in &self.parts {
            if part.flushed.swap(false, Ordering::Relaxed) {
                if let Some(file) = &part.file {
                    file.fence()?;
                }
            }
        }
        Ok(())
    }

    fn headers(&self) -> Vec<HeaderState> {
        self.parts.iter().map(|p| p.header.clone()).collect()
    }

    fn write_header(&self, part: usize, write: &HeaderWrite) -> Result<(), Error> {
        let file = self.part_file(part)?;
        match write {
            HeaderWrite::Whole {
                header,
                stamp_crtime,
            } => {
                let mut hdr = (**header).clone();
                if *stamp_crtime {
                    hdr.crtime = file.ctime()?;
                    hdr.checksum = hdr.compute_checksum();
                }
                durable::write_header(file, &hdr)?;
            }
            HeaderWrite::Checksum { value } => {
                durable::write_at(file, POOL_HDR_CSUM_OFF as u64, &value.to_le_bytes())?;
            }
        }
        Ok(())
    }

    fn locate(&self, range: LogicalRange) -> Vec<Location> {
        poolsync_poolset::map_range(&self.extents, range.offset, range.len)
            .into_iter()
            .map(|piece| Location {
                replica: self.index,
                part: piece.part,
                path: self
                    .parts
                    .get(piece.part)
                    .map(|p| p.path.clone())
                    .unwrap_or_default(),
                file_offset: piece.file_offset,
                len: piece.len,
            })
            .collect()
    }
}

fn outside<F>(rep: &OpenReplica<F>, offset: u64) -> Error {
    Error::LogicalRead {
        replica: rep.index,
        offset,
        end: offset,
        reason: "the part map returned a piece outside the range".to_string(),
    }
}

/// A header page as it travels: its bytes, which the receiver decodes
/// again (the decoded fields are derived, so they are never trusted from
/// the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeaderPage {
    /// The part carries no header.
    None,
    /// The part should carry a header but was not opened.
    NotRead,
    /// The header page could not be read.
    Unreadable {
        /// Why.
        reason: String,
    },
    /// The header page's bytes.
    Read {
        /// The 4096 bytes.
        bytes: Vec<u8>,
    },
}

impl From<&HeaderState> for HeaderPage {
    fn from(state: &HeaderState) -> Self {
        match state {
            HeaderState::None => HeaderPage::None,
            HeaderState::NotRead => HeaderPage::NotRead,
            HeaderState::Unreadable { reason } => HeaderPage::Unreadable {
                reason: reason.clone(),
            },
            HeaderState::Read(read) => HeaderPage::Read {
                bytes: read.raw.clone(),
            },
        }
    }
}

impl From<HeaderPage> for HeaderState {
    fn from(page: HeaderPage) -> Self {
        match page {
            HeaderPage::None => HeaderState::None,
            HeaderPage::NotRead => HeaderState::NotRead,
            HeaderPage::Unreadable { reason } => HeaderState::Unreadable { reason },
            HeaderPage::Read { bytes } => match PoolHdr::decode(&bytes) {
                Ok(hdr) => HeaderState::Read(Box::new(ReadHeader { raw: bytes, hdr })),
                Err(e) => HeaderState::Unreadable {
                    reason: e.to_string(),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_pmem::sim::SimStorage;
    use poolsync_pmem::Access;
    use std::path::Path;

    fn set() -> (
        SimStorage,
        crate::open::OpenSet<poolsync_pmem::sim::SimFile>,
    ) {
        let s = SimStorage::new();
        s.add_dir(Path::new("/p")).unwrap();
        let mib = 1usize << 20;
        let text = "PMEMPOOLSET\n8M /p/a\n9M /p/b\n";
        s.insert_file(Path::new("/p/pool.set"), text.as_bytes(), 0o644)
            .unwrap();
        let a: Vec<u8> = (0..8 * mib).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..9 * mib).map(|i| (i % 241) as u8).collect();
        s.insert_file(Path::new("/p/a"), &a, 0o644).unwrap();
        s.insert_file(Path::new("/p/b"), &b, 0o644).unwrap();
        let set = crate::open::open(&s, Path::new("/p/pool.set"), Access::ReadWrite).unwrap();
        (s, set)
    }

    #[test]
    fn a_replica_reads_and_writes_across_its_parts() {
        let (s, set) = set();
        let rep = &set.replicas[0];
        let m = 8u64 << 20;
        assert_eq!(rep.end(), 17 * (1 << 20) - 4096);
        let mut buf = vec![0u8; 8192];
        rep.read(m - 4096, &mut buf).unwrap();
        // The second half comes from part 1, after its header page.
        assert_eq!(buf[4096], (4096 % 241) as u8);
        rep.write(m - 10, &[9; 20]).unwrap();
        rep.flush(m - 10, 20).unwrap();
        let before = s.events();
        rep.fence().unwrap();
        // Both parts were flushed, so both are fenced; a second fence has
        // nothing to do.
        assert_eq!(s.events(), before + 2);
        rep.fence().unwrap();
        assert_eq!(s.events(), before + 2);
        let a = s.persisted_bytes(Path::new("/p/a")).unwrap();
        let b = s.persisted_bytes(Path::new("/p/b")).unwrap();
        assert_eq!(&a[8 * (1 << 20) - 10..], &[9; 10]);
        assert_eq!(&b[4096..4106], &[9; 10]);
        let locs = rep.locate(LogicalRange::new(m - 10, 20));
        assert_eq!(locs.len(), 2);
        assert_eq!(locs[1].file_offset, 4096);
        assert!(rep.read(rep.end() - 1, &mut [0; 2]).is_err());
    }

    #[test]
    fn default_digests_hash_each_range() {
        let (_s, set) = set();
        let rep = &set.replicas[0];
        let ranges = [
            LogicalRange::new(100, 4096),
            LogicalRange::new(0, 3 << 20),
            LogicalRange::new(5, 0),
        ];
        let mut got = Vec::new();
        rep.digests(&ranges, &mut got).unwrap();
        for (r, d) in ranges.iter().zip(&got) {
            let mut buf = vec![0u8; r.len as usize];
            rep.read(r.offset, &mut buf).unwrap();
            assert_eq!(*d, digest(&buf));
        }
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn header_pages_travel_as_bytes() {
        let hdr = PoolHdr::decode(&[0u8; 4096]).unwrap();
        let state = HeaderState::Read(Box::new(ReadHeader {
            raw: vec![0; 4096],
            hdr,
        }));
        let page = HeaderPage::from(&state);
        let json = serde_json::to_string(&page).unwrap();
        let back: HeaderPage = serde_json::from_str(&json).unwrap();
        assert_eq!(HeaderState::from(back), state);
        let short = HeaderState::from(HeaderPage::Read { bytes: vec![1, 2] });
        assert!(matches!(short, HeaderState::Unreadable { .. }));
    }

    proptest::proptest! {
        /// The digests kept in state files, undo logs and sync marks were
        /// made by another XXH3 implementation (xxhash-rust) before; both
        /// must agree on every length, whole and streamed, with and
        /// without a seed.
        #[test]
        fn xxh3_agrees_with_another_implementation(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..9000),
            cut in 0usize..9000,
            seed in proptest::prelude::any::<u64>(),
        ) {
            use xxhash_rust::xxh3;
            proptest::prop_assert_eq!(digest(&bytes), xxh3::xxh3_128(&bytes));
            proptest::prop_assert_eq!(
                twox_hash::XxHash3_64::oneshot(&bytes),
                xxh3::xxh3_64(&bytes)
            );
            proptest::prop_assert_eq!(
                twox_hash::XxHash3_64::oneshot_with_seed(seed, &bytes),
                xxh3::xxh3_64_with_seed(&bytes, seed)
            );
            let (a, b) = bytes.split_at(cut.min(bytes.len()));
            let mut h = twox_hash::XxHash3_128::new();
            h.write(a);
            h.write(b);
            proptest::prop_assert_eq!(h.finish_128(), xxh3::xxh3_128(&bytes));
        }
    }

    #[test]
    fn the_digest_of_a_block_is_the_published_xxh3_128() {
        // XXH3-128 of the empty input, as the reference implementation's
        // test vectors give it.
        assert_eq!(digest(&[]), 0x99aa06d3014798d86001c324468d497f);
    }
}
