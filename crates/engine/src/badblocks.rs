//! Bad blocks and PMDK's bad block recovery files (docs/format.md §18).
//!
//! libpmempool keeps the list of bad blocks it is about to clear in one
//! *recovery file* per part, `<pool set path>_r<R>_p<P>_badblocks.txt`:
//! one line `<offset> <length>\n` per bad block (decimal bytes relative to
//! the part file, sorted by offset, not overlapping), then the terminator
//! line `0 0\n`. A file without its terminator is *incomplete*. The files
//! outlive a crash, so that a sync run again knows which ranges it still
//! has to repair. poolsync reads, writes and removes them exactly so, and
//! a sync started by either tool finishes what the other left.
//!
//! The rules, in libpmempool's order ([`scan`]):
//!
//! 1. Only parts that exist have recovery files. If any exists and
//!    `--bad-blocks` is not given, sync refuses.
//! 2. Without `--bad-blocks` and without compat CHECK_BAD_BLOCKS nothing
//!    else happens.
//! 3. If every existing part has a complete file, the bad blocks are read
//!    from the files. If some are missing or incomplete, all of them are
//!    removed (a plan step) and the devices are queried afresh.
//! 4. A query that finds bad blocks without `--bad-blocks` is refused; with
//!    it, the blocks are saved in new recovery files (a plan step) before
//!    anything else is written.
//!
//! The device query is a [`BadBlockQuery`]. The one for ordinary files,
//! [`RegularFiles`], finds none: bad blocks of persistent memory are known
//! to the kernel's nvdimm driver (ndctl, sysfs `badblocks`), which regular
//! files on non-DAX file systems do not have. Read errors (`EIO`) met while
//! copying are handled where they happen: the range is read from another
//! healthy replica.

use std::fmt;
use std::path::{Path, PathBuf};

use poolsync_pmem::{PartFile, Storage};
use serde::Serialize;

use crate::inspect::Health;
use crate::open::{OpenSet, PartStatus};
use crate::Error;

/// The line that ends a complete recovery file.
pub const TERMINATOR: &[u8] = b"0 0\n";
/// Largest recovery file read (a million bad blocks is far beyond any device).
pub const MAX_RECOVERY_FILE: u64 = 64 << 20;
/// Permissions of a new recovery file, as PMDK creates them.
pub const RECOVERY_FILE_MODE: u32 = 0o600;

/// One bad block: a range of a part file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BadBlock {
    /// Byte offset in the part file.
    pub offset: u64,
    /// Length in bytes (never 0).
    pub len: u64,
}

/// The recovery file of part `part` of replica `replica` of the pool set at
/// `set_path` (the path as given, so a relative set path gives a relative
/// file name, as in PMDK).
pub fn recovery_file_path(set_path: &Path, replica: usize, part: usize) -> PathBuf {
    crate::durable::beside(set_path, &format!("_r{replica}_p{part}_badblocks.txt"))
}

/// What a recovery file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryFile {
    /// Entries and the terminator.
    Complete(Vec<BadBlock>),
    /// No terminator (or something unreadable before it): a save that did
    /// not finish.
    Incomplete,
}

/// Parses a recovery file the way libpmempool's `fscanf("%zu %zu\n")` loop
/// reads it: pairs of decimal numbers separated by white space, up to the
/// pair `0 0`. Anything that is not such a pair before the terminator makes
/// the file incomplete; entries that go backwards are an error.
pub fn parse_recovery_file(bytes: &[u8]) -> Result<RecoveryFile, String> {
    let mut tokens = bytes
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty());
    let mut blocks = Vec::new();
    let mut min_offset: u64 = 0;
    loop {
        let (Some(a), Some(b)) = (tokens.next(), tokens.next()) else {
            return Ok(RecoveryFile::Incomplete);
        };
        let (Some(offset), Some(len)) = (decimal(a), decimal(b)) else {
            return Ok(RecoveryFile::Incomplete);
        };
        if offset == 0 && len == 0 {
            return Ok(RecoveryFile::Complete(blocks));
        }
        if offset < min_offset {
            return Err(
                "wrong format of bad block recovery file (bad blocks are not sorted by the offset in ascending order)"
                    .to_string(),
            );
        }
        min_offset = offset.saturating_add(len);
        if len > 0 {
            blocks.push(BadBlock { offset, len });
        }
    }
}

fn decimal(token: &[u8]) -> Option<u64> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// The entry lines of a recovery file, without the terminator.
pub fn format_entries(blocks: &[BadBlock]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in blocks {
        out.extend_from_slice(format!("{} {}\n", b.offset, b.len).as_bytes());
    }
    out
}

/// The device query for bad blocks of one part file.
pub trait BadBlockQuery: Send + Sync + fmt::Debug {
    /// The bad blocks of the part file at `path`, sorted by offset.
    fn query(&self, path: &Path) -> Result<Vec<BadBlock>, Error>;
}

/// The query for part files on ordinary (non-DAX) storage: there is no
/// bad-block list for them, so it finds none, as PMDK's query does on such
/// files.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegularFiles;

impl BadBlockQuery for RegularFiles {
    fn query(&self, _path: &Path) -> Result<Vec<BadBlock>, Error> {
        Ok(Vec::new())
    }
}

/// Where the bad blocks of a run come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BadBlockOrigin {
    /// Not examined (no `--bad-blocks` and no compat CHECK_BAD_BLOCKS).
    #[default]
    NotChecked,
    /// Read from complete recovery files.
    RecoveryFiles,
    /// Queried from the devices.
    Query,
}

/// A recovery file to write before anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryFilePlan {
    /// Replica index.
    pub replica: usize,
    /// Part index.
    pub part: usize,
    /// The file.
    pub path: PathBuf,
    /// The bad blocks it lists.
    pub blocks: Vec<BadBlock>,
}

/// What [`scan`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BadBlockScan {
    /// Where `blocks` came from.
    pub origin: BadBlockOrigin,
    /// Bad blocks per replica and part (part file offsets); empty lists
    /// when there are none.
    pub blocks: Vec<Vec<Vec<BadBlock>>>,
    /// Recovery files that exist and are to be removed first (some part
    /// lacked one, or one was incomplete).
    pub stale: Vec<PathBuf>,
    /// Complete recovery files that exist and are removed once the bad
    /// blocks are repaired.
    pub existing: Vec<PathBuf>,
    /// Recovery files to save before anything else (the query found bad
    /// blocks and `--bad-blocks` was given).
    pub to_save: Vec<RecoveryFilePlan>,
}

impl BadBlockScan {
    /// Whether any bad block is known.
    pub fn any(&self) -> bool {
        self.blocks.iter().flatten().any(|b| !b.is_empty())
    }

    /// The bad blocks of part `part` of replica `replica`.
    pub fn of(&self, replica: usize, part: usize) -> &[BadBlock] {
        self.blocks
            .get(replica)
            .and_then(|r| r.get(part))
            .map_or(&[], Vec::as_slice)
    }
}

/// What [`scan`] is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions<'a> {
    /// `--bad-blocks`: bad blocks are to be repaired (else finding any is
    /// an error).
    pub bad_blocks: bool,
    /// The bad-block query of the part files' devices.
    pub query: &'a dyn BadBlockQuery,
}

/// Looks for recovery files and bad blocks as libpmempool's health check
/// does (step 3). Writes nothing: removals and saves become plan steps.
pub fn scan<S: Storage>(
    storage: &S,
    set: &OpenSet<S::File>,
    health: &Health,
    options: ScanOptions<'_>,
) -> Result<BadBlockScan, Error> {
    let mut scan = BadBlockScan {
        blocks: set
            .replicas
            .iter()
            .map(|r| vec![Vec::new(); r.parts.len()])
            .collect(),
        ..BadBlockScan::default()
    };
    // Recovery files of the parts that exist.
    let mut files: Vec<(usize, usize, PathBuf, bool)> = Vec::new();
    for part in set.parts() {
        if part.status == PartStatus::Missing {
            continue;
        }
        let path = recovery_file_path(&set.path, part.replica, part.index);
        let exists = storage.stat(&path)?.is_some();
        files.push((part.replica, part.index, path, exists));
    }
    let any_exists = files.iter().any(|f| f.3);
    let all_exist = any_exists && files.iter().all(|f| f.3);
    if any_exists && !options.bad_blocks {
        let first = files
            .iter()
            .find(|f| f.3)
            .map(|f| f.2.clone())
            .unwrap_or_default();
        return Err(Error::RecoveryFile {
            path: first,
            reason: "a bad block recovery file exists, but the '--bad-blocks' option is not set \
                     (run 'poolsync sync --bad-blocks' to repair the bad blocks it lists)"
                .to_string(),
        });
    }
    if !options.bad_blocks && !health.check_bad_blocks {
        return Ok(scan);
    }
    if all_exist {
        let mut complete = true;
        let mut read: Vec<(usize, usize, Vec<BadBlock>)> = Vec::new();
        for (r, p, path, _) in &files {
            let bytes = storage.read_all(path, MAX_RECOVERY_FILE)?;
            match parse_recovery_file(&bytes) {
                Ok(RecoveryFile::Complete(blocks)) => read.push((*r, *p, blocks)),
                Ok(RecoveryFile::Incomplete) => {
                    complete = false;
                    break;
                }
                Err(reason) => {
                    return Err(Error::RecoveryFile {
                        path: path.clone(),
                        reason,
                    })
                }
            }
        }
        if complete {
            scan.origin = BadBlockOrigin::RecoveryFiles;
            for (r, p, blocks) in read {
                if let Some(slot) = scan.blocks.get_mut(r).and_then(|v| v.get_mut(p)) {
                    *slot = blocks;
                }
            }
            scan.existing = files.into_iter().map(|f| f.2).collect();
            return Ok(scan);
        }
    }
    // Some files missing or incomplete: all go, and the devices are asked.
    scan.stale = files.iter().filter(|f| f.3).map(|f| f.2.clone()).collect();
    scan.origin = BadBlockOrigin::Query;
    for (r, p, _, _) in &files {
        let Some(part) = set.part(*r, *p) else {
            continue;
        };
        let mut blocks = options.query.query(&part.path)?;
        blocks.sort();
        if let Some(slot) = scan.blocks.get_mut(*r).and_then(|v| v.get_mut(*p)) {
            *slot = blocks;
        }
    }
    if scan.any() {
        if !options.bad_blocks {
            let (r, p) = first_bad(&scan).unwrap_or((0, 0));
            let path = set.part(r, p).map(|p| p.path.clone()).unwrap_or_default();
            return Err(Error::RecoveryFile {
                path,
                reason: "bad blocks found, but the '--bad-blocks' option is not set \
                         (run 'poolsync sync --bad-blocks' to repair them)"
                    .to_string(),
            });
        }
        scan.to_save = files
            .into_iter()
            .map(|(r, p, path, _)| RecoveryFilePlan {
                replica: r,
                part: p,
                path,
                blocks: scan.of(r, p).to_vec(),
            })
            .collect();
    }
    Ok(scan)
}

fn first_bad(scan: &BadBlockScan) -> Option<(usize, usize)> {
    scan.blocks
        .iter()
        .enumerate()
        .find_map(|(r, parts)| parts.iter().position(|b| !b.is_empty()).map(|p| (r, p)))
}

/// Saves recovery files with libpmempool's protocol: every file is created
/// (`O_EXCL`) and its directory synced first; then each gets its entries,
/// made durable, and only then the terminator, made durable too. A crash
/// before the end leaves files without a terminator, which any later run
/// treats as incomplete and removes.
pub fn save_recovery_files<S: Storage>(
    storage: &S,
    files: &[RecoveryFilePlan],
) -> Result<usize, Error> {
    let mut handles = Vec::with_capacity(files.len());
    for file in files {
        let entries = format_entries(&file.blocks);
        let len = (entries.len() + TERMINATOR.len()) as u64;
        // The file is created at its final length (storage never grows a
        // file); the zero bytes before the terminator read as incomplete.
        let handle = storage.create(&file.path, len)?;
        storage.set_mode(&file.path, RECOVERY_FILE_MODE)?;
        storage.fsync_parent(&file.path)?;
        handles.push((handle, entries));
    }
    for (handle, entries) in &handles {
        if !entries.is_empty() {
            handle.write_at(0, entries)?;
            handle.flush(0, entries.len() as u64)?;
            handle.fence()?;
        }
        let at = entries.len() as u64;
        handle.write_at(at, TERMINATOR)?;
        handle.flush(at, TERMINATOR.len() as u64)?;
        handle.fence()?;
    }
    Ok(handles.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_follow_pmdk() {
        assert_eq!(
            recovery_file_path(Path::new("/p/pool.set"), 1, 2),
            PathBuf::from("/p/pool.set_r1_p2_badblocks.txt")
        );
        assert_eq!(
            recovery_file_path(Path::new("pool.set"), 0, 0),
            PathBuf::from("pool.set_r0_p0_badblocks.txt")
        );
    }

    #[test]
    fn complete_incomplete_and_unsorted_files() {
        assert_eq!(
            parse_recovery_file(b"0 0\n"),
            Ok(RecoveryFile::Complete(vec![]))
        );
        assert_eq!(
            parse_recovery_file(b"4096 512\n8192 4096\n0 0\n"),
            Ok(RecoveryFile::Complete(vec![
                BadBlock {
                    offset: 4096,
                    len: 512
                },
                BadBlock {
                    offset: 8192,
                    len: 4096
                }
            ]))
        );
        assert_eq!(parse_recovery_file(b""), Ok(RecoveryFile::Incomplete));
        assert_eq!(
            parse_recovery_file(b"4096 512\n"),
            Ok(RecoveryFile::Incomplete)
        );
        assert_eq!(
            parse_recovery_file(b"4096 512\n\0\0\0\0"),
            Ok(RecoveryFile::Incomplete)
        );
        assert_eq!(
            parse_recovery_file(b"x y\n0 0\n"),
            Ok(RecoveryFile::Incomplete)
        );
        assert!(parse_recovery_file(b"8192 10\n4096 10\n0 0\n").is_err());
        assert!(parse_recovery_file(b"4096 8192\n8192 10\n0 0\n").is_err());
    }

    proptest! {
        #[test]
        fn entries_round_trip(gaps in proptest::collection::vec((0u64..1 << 20, 1u64..1 << 16), 0..20)) {
            let mut blocks = Vec::new();
            let mut pos = 1u64;
            for (gap, len) in gaps {
                pos += gap;
                blocks.push(BadBlock { offset: pos, len });
                pos += len;
            }
            let mut bytes = format_entries(&blocks);
            // Without the terminator: incomplete; with it: the same blocks.
            prop_assert_eq!(parse_recovery_file(&bytes), Ok(RecoveryFile::Incomplete));
            bytes.extend_from_slice(TERMINATOR);
            prop_assert_eq!(parse_recovery_file(&bytes), Ok(RecoveryFile::Complete(blocks)));
        }
    }
}
