//! Undo files: the bytes a repair overwrites, saved before it overwrites
//! them, and put back by `poolsync undo` (docs/format.md §23).
//!
//! A repair that writes over data a replica already holds (`sync`'s
//! block-level repair of a part that exists, `sync --verify`) first learns
//! exactly which ranges it will overwrite ([`crate::exec::survey`]), then
//! `save` writes, for each range, the bytes there now and digests of the
//! old and the new bytes into `<set>.poolsync-undo-<time>`, makes the file
//! durable, and only then does the repair write anything. So a crash at
//! any point leaves either the old bytes in place, or the new bytes with a
//! complete undo file (as e2fsck's `-z` undo file does).
//!
//! [`undo`] checks every record against the pool before it writes: a range
//! that holds the new bytes is put back, one that holds the old bytes
//! already is left alone (an undo that was interrupted, or run twice), and
//! a range that holds anything else means the pool changed since, and
//! nothing is restored.

pub mod format;

use std::path::{Path, PathBuf};

use poolsync_header::RawUuid;
use poolsync_pmem::{Access, PartFile, Storage};
use serde::Serialize;

use crate::endpoint::{digest, Endpoint};
use crate::open::OpenSet;
use crate::range::LogicalRange;
use crate::space::{self, NewFile};
use crate::Error;
use format::{
    sector_digests, UndoHeader, UndoRecord, MAX_RECORD, RECORD_FIXED, SECTOR, TRAILER, UNREADABLE,
};

/// Appended to the pool set file's path, with the time, to name an undo
/// file.
pub const UNDO_INFIX: &str = ".poolsync-undo-";

/// Where an undo file goes and what it belongs to.
#[derive(Debug, Clone)]
pub struct UndoTarget {
    /// The pool set file, absolute.
    pub set_path: PathBuf,
    /// The pool set's UUID.
    pub poolset_uuid: RawUuid,
}

/// What an undo file holds (or, in a plan, will hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UndoSummary {
    /// The file (in a plan, the name it will get if written now).
    pub path: PathBuf,
    /// Ranges saved.
    pub records: u64,
    /// Bytes of the pool they hold.
    pub bytes: u64,
    /// The file's size.
    pub file_size: u64,
}

/// A range a run writes over bytes an endpoint already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overwrite {
    /// The endpoint written.
    pub target: usize,
    /// The endpoint its new bytes are read from.
    pub source: usize,
    /// The range.
    pub range: LogicalRange,
}

/// One record to write: a range of one part of one endpoint.
#[derive(Debug, Clone, Copy)]
struct Piece {
    target: usize,
    source: usize,
    part: u32,
    file_offset: u64,
    range: LogicalRange,
}

/// The records of `overwrites`: each range cut where the target's parts
/// change and into pieces of at most [`MAX_RECORD`] bytes.
fn pieces(table: &[&dyn Endpoint], overwrites: &[Overwrite]) -> Vec<Piece> {
    let mut out = Vec::new();
    for o in overwrites {
        let Some(target) = table.get(o.target) else {
            continue;
        };
        let mut at = o.range.offset;
        for loc in target.locate(o.range) {
            let mut done = 0u64;
            while done < loc.len {
                let len = (loc.len - done).min(MAX_RECORD);
                out.push(Piece {
                    target: o.target,
                    source: o.source,
                    part: u32::try_from(loc.part).unwrap_or(u32::MAX),
                    file_offset: loc.file_offset + done,
                    range: LogicalRange::new(at + done, len),
                });
                done += len;
            }
            at += loc.len;
        }
    }
    out
}

/// The name an undo file written now gets: `<set>.poolsync-undo-<time>`,
/// with `-N` added when that name is taken.
fn fresh_path<S: Storage>(storage: &S, set_path: &Path) -> Result<PathBuf, Error> {
    let time = storage.clock().unix_seconds();
    let base = format!("{}{UNDO_INFIX}{time}", set_path.display());
    let mut path = PathBuf::from(&base);
    let mut n = 2;
    while storage.stat(&path)?.is_some() {
        path = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    Ok(path)
}

/// What the undo file is, in the words of a free-space refusal.
const UNDO_FILE: &str = "the undo file";

/// What the undo file for `overwrites` will hold, and the room it needs;
/// refuses (naming the file system and what would free it) when the room
/// is not there, before anything is written.
pub(crate) fn plan<S: Storage>(
    storage: &S,
    target: &UndoTarget,
    table: &[&dyn Endpoint],
    overwrites: &[Overwrite],
    also: &[NewFile<'_>],
) -> Result<UndoSummary, Error> {
    let pieces = pieces(table, overwrites);
    let header = header_for(target, &pieces, 0);
    let file_size = header.encoded_len() as u64
        + pieces
            .iter()
            .map(|p| RECORD_FIXED as u64 + p.range.len + 8 * p.range.len.div_ceil(SECTOR) + 8)
            .sum::<u64>()
        + TRAILER as u64;
    let path = fresh_path(storage, &target.set_path)?;
    // The undo file is counted with the run's other new files (`also`: a
    // sync's new parts) on the file systems they share.
    let mut files = vec![NewFile {
        path: &path,
        size: file_size,
        replace: false,
        what: UNDO_FILE,
    }];
    files.extend_from_slice(also);
    if let Err(short) = space::check(storage, &files)? {
        return Err(if short.what.contains(UNDO_FILE) {
            Error::UndoSpace {
                set: target.set_path.clone(),
                shortfall: short.to_string(),
            }
        } else {
            Error::CannotSync {
                set: target.set_path.clone(),
                reason: format!("{short}; nothing was written: free some space"),
            }
        });
    }
    Ok(UndoSummary {
        path,
        records: pieces.len() as u64,
        bytes: header.saved_bytes,
        file_size,
    })
}

fn header_for(target: &UndoTarget, pieces: &[Piece], created: u64) -> UndoHeader {
    UndoHeader {
        created,
        poolset_uuid: target.poolset_uuid.0,
        records: pieces.len() as u64,
        saved_bytes: pieces.iter().map(|p| p.range.len).sum(),
        set_path: target.set_path.as_os_str().as_encoded_bytes().to_vec(),
    }
}

/// Reads the bytes endpoint `source` will write at a logical offset.
pub(crate) type ReadNew<'a> = dyn Fn(usize, u64, &mut [u8]) -> Result<(), Error> + 'a;

/// Writes the undo file for `overwrites` and makes it durable: the bytes
/// each range holds now (read from its target) with digests of them and of
/// the bytes that will replace them (read through `read_new`, which falls
/// back to other replicas as the run will). Returns what it holds.
pub(crate) fn save<S: Storage>(
    storage: &S,
    target: &UndoTarget,
    table: &[&dyn Endpoint],
    overwrites: &[Overwrite],
    read_new: &ReadNew<'_>,
) -> Result<UndoSummary, Error> {
    let mut summary = plan(storage, target, table, overwrites, &[])?;
    let pieces = pieces(table, overwrites);
    let header = header_for(target, &pieces, storage.clock().unix_seconds());
    let head = header.encode();
    let header_sum = u64::from_le_bytes(
        head.get(head.len() - 8..)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default(),
    );
    let file = storage.create(&summary.path, summary.file_size)?;
    let written = (|| -> Result<(), Error> {
        // The mode first: a file a crash leaves is readable by its owner.
        storage.set_mode(&summary.path, 0o600)?;
        write_records(&file, (&head, header_sum), target, table, &pieces, read_new)?;
        Ok(file.fence()?)
    })();
    drop(file);
    if let Err(e) = written {
        // Nothing of the pool was written yet, and a file that is not a
        // whole undo file (a failed write, ENOSPC) puts nothing back:
        // `poolsync undo` would only refuse it. A removal that fails too
        // leaves it to be refused as incomplete.
        let _ = storage.remove(&summary.path);
        return Err(e);
    }
    storage.fsync_parent(&summary.path)?;
    summary.records = header.records;
    summary.bytes = header.saved_bytes;
    Ok(summary)
}

/// Writes the undo file's header `head` (whose checksum is `header_sum`),
/// a record of the old bytes of every piece, and the trailer, and flushes
/// them.
fn write_records<F: PartFile>(
    file: &F,
    (head, header_sum): (&[u8], u64),
    target: &UndoTarget,
    table: &[&dyn Endpoint],
    pieces: &[Piece],
    read_new: &ReadNew<'_>,
) -> Result<(), Error> {
    let mut out = Appender {
        file,
        at: 0,
        pending: Vec::new(),
    };
    let mut put = |bytes: &[u8]| out.put(bytes);
    put(head)?;
    let mut old = Vec::new();
    let mut new = Vec::new();
    for piece in pieces {
        let len = usize::try_from(piece.range.len).unwrap_or(0);
        old.resize(len, 0);
        new.resize(len, 0);
        let ep = table
            .get(piece.target)
            .ok_or_else(|| Error::InvalidRequest {
                path: target.set_path.clone(),
                reason: format!(
                    "an overwrite names endpoint {}, which the run was not given",
                    piece.target
                ),
            })?;
        let flags = match ep.read(piece.range.offset, &mut old) {
            Ok(()) => 0,
            // A bad block: nothing can be saved of it.
            Err(e) if e.is_eio() => {
                old.fill(0);
                UNREADABLE
            }
            Err(e) => return Err(e),
        };
        read_new(piece.source, piece.range.offset, &mut new)?;
        let rec = UndoRecord {
            replica: u32::try_from(piece.target).unwrap_or(u32::MAX),
            part: piece.part,
            file_offset: piece.file_offset,
            logical: piece.range.offset,
            len: piece.range.len,
            flags,
            old_digest: if flags == 0 { digest(&old) } else { 0 },
            new_digest: digest(&new),
        };
        let fixed = rec.encode_fixed();
        let mut body = std::mem::take(&mut old);
        body.extend(sector_digests(&new));
        put(&fixed)?;
        put(&body)?;
        put(&UndoRecord::checksum(&fixed, &body, header_sum).to_le_bytes())?;
        body.truncate(len);
        old = body;
    }
    // The trailer repeats the header's counts.
    let saved = pieces.iter().map(|p| p.range.len).sum();
    put(&format::encode_trailer(pieces.len() as u64, saved))?;
    let at = out.finish()?;
    Ok(file.flush(0, at)?)
}

/// Writes smaller than this are gathered before they reach the file: a
/// repair of scattered blocks saves thousands of 4 KiB records of three
/// pieces each, and one system call per piece would cost more than the
/// copying.
const WRITE_CHUNK: usize = 256 << 10;

/// Writes a new undo file from its start, in order.
struct Appender<'a, F> {
    file: &'a F,
    /// Where the pending bytes go.
    at: u64,
    /// Bytes not written yet: fewer than [`WRITE_CHUNK`].
    pending: Vec<u8>,
}

impl<F: PartFile> Appender<'_, F> {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.pending.len() + bytes.len() < WRITE_CHUNK {
            self.pending.extend_from_slice(bytes);
            return Ok(());
        }
        self.write_pending()?;
        if bytes.len() < WRITE_CHUNK {
            self.pending.extend_from_slice(bytes);
        } else {
            self.file.write_at(self.at, bytes)?;
            self.at += bytes.len() as u64;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), Error> {
        if !self.pending.is_empty() {
            self.file.write_at(self.at, &self.pending)?;
            self.at += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes what is pending; returns the length written.
    fn finish(mut self) -> Result<u64, Error> {
        self.write_pending()?;
        Ok(self.at)
    }
}

/// How `poolsync undo` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct UndoOptions {
    /// `-d`: check and say what would be restored; write nothing.
    pub dry_run: bool,
}

/// What happened to one saved range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeFate {
    /// It held the repaired bytes; the saved ones are (or would be) back.
    Restored,
    /// It holds the saved bytes already.
    AlreadyOld,
    /// Its old bytes could not be read when they were saved: nothing to
    /// put back.
    Unreadable,
}

/// One saved range and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RangeOutcome {
    /// The replica.
    pub replica: usize,
    /// Its part.
    pub part: usize,
    /// Offset in the part file.
    pub file_offset: u64,
    /// Logical offset.
    pub logical: u64,
    /// Length.
    pub len: u64,
    /// What happened.
    pub fate: RangeFate,
}

/// What [`undo`] did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UndoReport {
    /// The undo file.
    pub path: PathBuf,
    /// The pool set it belongs to.
    pub set: PathBuf,
    /// When it was written, seconds since the epoch.
    pub created: u64,
    /// Nothing was written.
    pub dry_run: bool,
    /// Every range, in file order.
    pub ranges: Vec<RangeOutcome>,
    /// Bytes put back (or that would be).
    pub bytes_restored: u64,
}

/// Streams the records of an undo file, checking each one's checksum as it
/// is read (memory holds one record at a time).
struct Reader<'a, F> {
    file: &'a F,
    path: &'a Path,
    header: UndoHeader,
    header_sum: u64,
    at: u64,
    len: u64,
    left: u64,
}

impl<'a, F: PartFile> Reader<'a, F> {
    fn open(file: &'a F, path: &'a Path) -> Result<Self, Error> {
        let len = file.len()?;
        let bad = |e: format::FormatError| undo_error(path, e);
        let mut prefix =
            vec![0u8; usize::try_from(len.min(format::HEADER_FIXED as u64)).unwrap_or(0)];
        file.read_at(0, &mut prefix)?;
        let hlen = UndoHeader::len_of(&prefix).map_err(bad)?;
        if (hlen as u64) > len {
            return Err(bad(format::FormatError {
                offset: len,
                reason: "the file ends inside its header".to_string(),
            }));
        }
        let mut head = vec![0u8; hlen];
        file.read_at(0, &mut head)?;
        let (header, header_sum) = UndoHeader::decode(&head).map_err(bad)?;
        Ok(Reader {
            file,
            path,
            left: header.records,
            header,
            header_sum,
            at: hlen as u64,
            len,
        })
    }

    /// The next record and its body (in `data`: the saved bytes, then the
    /// new-sector digests), or `None` after the last one, whose trailer is
    /// then checked.
    fn next(&mut self, data: &mut Vec<u8>) -> Result<Option<UndoRecord>, Error> {
        let bad = |offset: u64, reason: &str| {
            undo_error(
                self.path,
                format::FormatError {
                    offset,
                    reason: reason.to_string(),
                },
            )
        };
        if self.left == 0 {
            if self.len < self.at.saturating_add(TRAILER as u64) {
                return Err(bad(self.at, "no trailer: the undo file is incomplete (the run that wrote it stopped before it overwrote anything)"));
            }
            let mut trailer = [0u8; TRAILER];
            self.file.read_at(self.at, &mut trailer)?;
            format::check_trailer(&trailer, self.at, &self.header)
                .map_err(|e| undo_error(self.path, e))?;
            return Ok(None);
        }
        if self.len < self.at.saturating_add(RECORD_FIXED as u64) {
            return Err(bad(self.at, "the file ends inside a record"));
        }
        let mut fixed = [0u8; RECORD_FIXED];
        self.file.read_at(self.at, &mut fixed)?;
        let rec =
            UndoRecord::decode_fixed(&fixed, self.at).map_err(|e| undo_error(self.path, e))?;
        let end = self.at.saturating_add(rec.encoded_len());
        if end > self.len {
            return Err(bad(self.at, "the file ends inside a record"));
        }
        data.resize(usize::try_from(rec.body_len()).unwrap_or(0), 0);
        self.file.read_at(self.at + RECORD_FIXED as u64, data)?;
        let mut sum = [0u8; 8];
        self.file.read_at(end - 8, &mut sum)?;
        if UndoRecord::checksum(&fixed, data, self.header_sum) != u64::from_le_bytes(sum) {
            return Err(bad(end - 8, "record checksum does not match"));
        }
        let old = data
            .get(..usize::try_from(rec.len).unwrap_or(0))
            .unwrap_or_default();
        if rec.has_data() && digest(old) != rec.old_digest {
            return Err(bad(
                self.at + RECORD_FIXED as u64,
                "the saved bytes do not match their digest",
            ));
        }
        self.at = end;
        self.left -= 1;
        Ok(Some(rec))
    }
}

fn undo_error(path: &Path, e: format::FormatError) -> Error {
    Error::UndoFile {
        path: path.to_path_buf(),
        offset: e.offset,
        reason: e.reason,
    }
}

/// Puts back the bytes the undo file at `path` saved, after checking every
/// record against the pool (see the module documentation).
pub fn undo<S: Storage>(
    storage: &S,
    path: &Path,
    options: &UndoOptions,
) -> Result<UndoReport, Error> {
    let file = storage.open(path, Access::ReadOnly)?;
    let mut reader = Reader::open(&file, path)?;
    let set_path = PathBuf::from(String::from_utf8_lossy(&reader.header.set_path).into_owned());
    let access = if options.dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let mut set = crate::open::open(storage, &set_path, access)?;
    check_pool(&set, &reader.header, path)?;
    let mut report = UndoReport {
        path: path.to_path_buf(),
        set: set_path,
        created: reader.header.created,
        dry_run: options.dry_run,
        ranges: Vec::new(),
        bytes_restored: 0,
    };
    // First pass: every record against the pool, nothing written.
    let mut data = Vec::new();
    let mut now = Vec::new();
    while let Some(rec) = reader.next(&mut data)? {
        let fate = judge(&set, &rec, &data, &mut now, path)?;
        if fate == RangeFate::Restored {
            report.bytes_restored += rec.len;
        }
        report.ranges.push(RangeOutcome {
            replica: rec.replica as usize,
            part: rec.part as usize,
            file_offset: rec.file_offset,
            logical: rec.logical,
            len: rec.len,
            fate,
        });
    }
    if options.dry_run || report.bytes_restored == 0 {
        return Ok(report);
    }
    // Second pass: write the saved bytes back, then fence every replica.
    let mut reader = Reader::open(&file, path)?;
    let mut i = 0;
    while let Some(rec) = reader.next(&mut data)? {
        let restore = report
            .ranges
            .get(i)
            .is_some_and(|r| r.fate == RangeFate::Restored);
        i += 1;
        if !restore {
            continue;
        }
        let rep = replica(&set, &rec, path)?;
        let old = data
            .get(..usize::try_from(rec.len).unwrap_or(0))
            .unwrap_or_default();
        rep.write(rec.logical, old)?;
        rep.flush(rec.logical, rec.len)?;
    }
    for rep in &set.replicas {
        rep.fence()?;
    }
    set.release();
    Ok(report)
}

/// The pool must be the one the undo file was written for.
fn check_pool<F: PartFile>(
    set: &OpenSet<F>,
    header: &UndoHeader,
    path: &Path,
) -> Result<(), Error> {
    let uuid = set.parts().find_map(|p| {
        p.header()
            .filter(|h| h.checksum_ok())
            .map(|h| h.poolset_uuid)
    });
    if uuid.map(|u| u.0) != Some(header.poolset_uuid) {
        return Err(Error::UndoFile {
            path: path.to_path_buf(),
            offset: 24,
            reason: format!(
                "it belongs to pool set uuid {}, but {} holds {}",
                RawUuid(header.poolset_uuid).to_canonical(),
                set.path.display(),
                uuid.map_or_else(
                    || "no valid pool header".to_string(),
                    |u| format!("pool set uuid {}", u.to_canonical())
                )
            ),
        });
    }
    Ok(())
}

/// The replica a record names, checked to lie where the record says.
fn replica<'s, F: PartFile>(
    set: &'s OpenSet<F>,
    rec: &UndoRecord,
    path: &Path,
) -> Result<&'s crate::open::OpenReplica<F>, Error> {
    let changed = |what: String| Error::UndoFile {
        path: path.to_path_buf(),
        offset: 0,
        reason: what,
    };
    let rep = set.replica(rec.replica as usize).ok_or_else(|| {
        changed(format!(
            "it names replica {}, which {} does not have",
            rec.replica,
            set.path.display()
        ))
    })?;
    let here = rep.locate(LogicalRange::new(rec.logical, rec.len));
    let same = matches!(here.as_slice(), [loc] if loc.part == rec.part as usize
        && loc.file_offset == rec.file_offset && loc.len == rec.len);
    if !same {
        return Err(changed(format!(
            "replica {} logical [{:#x}, {:#x}) no longer lies in part {} at offset {:#x}: the pool set's layout changed",
            rec.replica,
            rec.logical,
            rec.logical + rec.len,
            rec.part,
            rec.file_offset
        )));
    }
    Ok(rep)
}

/// What to do with one record: each sector of its range must hold the
/// repaired bytes or the saved ones (a crash may have left a mix).
fn judge<F: PartFile>(
    set: &OpenSet<F>,
    rec: &UndoRecord,
    body: &[u8],
    now: &mut Vec<u8>,
    path: &Path,
) -> Result<RangeFate, Error> {
    if !rec.has_data() {
        return Ok(RangeFate::Unreadable);
    }
    let rep = replica(set, rec, path)?;
    let len = usize::try_from(rec.len).unwrap_or(0);
    now.resize(len, 0);
    rep.read(rec.logical, now)?;
    let d = digest(now);
    if d == rec.new_digest {
        return Ok(RangeFate::Restored);
    }
    if d == rec.old_digest {
        return Ok(RangeFate::AlreadyOld);
    }
    let (old, digests) = body.split_at(len.min(body.len()));
    let sector = SECTOR as usize;
    let mixed = now
        .chunks(sector)
        .zip(old.chunks(sector))
        .zip(digests.chunks(8))
        .all(|((cur, was), want)| {
            cur == was
                || want.try_into().map(u64::from_le_bytes).ok()
                    == Some(twox_hash::XxHash3_64::oneshot(cur))
        });
    if mixed {
        return Ok(RangeFate::Restored);
    }
    Err(Error::PoolChanged {
        path: path.to_path_buf(),
        replica: rec.replica as usize,
        part: rec.part as usize,
        file_offset: rec.file_offset,
        offset: rec.logical,
        end: rec.logical + rec.len,
    })
}
