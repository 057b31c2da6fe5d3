//! The journal of a create: what a run is about to create, written before
//! it creates anything, so that a run that was killed half-way is finished
//! by running the same `create` again (docs/format.md §27).
//!
//! A create makes its part files empty and of mode 0, allocates them,
//! writes the pool's metadata and then the headers, and gives the files
//! their mode last. Killed anywhere in between, it leaves files that
//! `create` would refuse: a part of the wrong size, or one whose header
//! page is not zero. The journal (`<target>.poolsync-create`, TOML, written
//! aside and renamed into place) names the pool set UUID the run writes
//! and every part it creates or reuses. A later create reads it first and
//! clears what it names, but only what is provably that run's: a file that
//! is empty, of mode 0, blank in its first sector, or whose header carries
//! the journal's pool set UUID (a part without a header of its own also
//! when its replica's header part is proven). Created files are removed,
//! reused ones get their header page zeroed again; the journal goes last.
//! Anything else at a named path is refused, and the error names it.
//! [`parse`] reads the journal's bytes without any I/O, so that it can be
//! fuzzed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use poolsync_header::{PoolHdr, PoolType, RawUuid, POOL_HDR_SIZE};
use poolsync_pmem::{Access, PartFile, Storage};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Appended to the target's path (the pool set file, or the single-file
/// pool) to name the journal.
pub const CREATE_JOURNAL_SUFFIX: &str = ".poolsync-create";
/// The journal format version.
pub const CREATE_JOURNAL_VERSION: u32 = 1;
/// A journal of this many bytes or more is not one (a part line takes
/// about a hundred bytes).
pub const CREATE_JOURNAL_MAX: u64 = 1 << 20;

/// What the journal records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJournal {
    /// Format version ([`CREATE_JOURNAL_VERSION`]).
    pub version: u32,
    /// The pool set file or single-file pool being created, absolute.
    pub target: String,
    /// The pool set UUID the run writes into every header.
    pub poolset_uuid: String,
    /// The target is a pool set file.
    pub is_poolset: bool,
    /// The pool size.
    pub pool_size: u64,
    /// The layout name.
    pub layout: String,
    /// The mode the created parts get last.
    pub mode: u32,
    /// Every part, in pool set order.
    pub parts: Vec<JournalPart>,
}

/// One part the journal names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalPart {
    /// The file, absolute.
    pub path: String,
    /// Its replica.
    pub replica: usize,
    /// Its index in the replica.
    pub part: usize,
    /// Its size.
    pub size: u64,
    /// It carries a pool header.
    pub header: bool,
    /// The run creates it (`false`: an existing file it reuses).
    pub created: bool,
}

/// Why a journal's bytes are not a create journal: the line (1-based) and
/// what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Reads a create journal from its bytes (no I/O).
pub fn parse(bytes: &[u8]) -> Result<CreateJournal, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError {
        line: bytes
            .get(..e.valid_up_to())
            .map_or(1, |b| b.iter().filter(|&&c| c == b'\n').count() + 1),
        reason: "not UTF-8 text".to_string(),
    })?;
    let journal = toml::from_str::<CreateJournal>(text).map_err(|e| ParseError {
        line: e.span().map_or(1, |s| {
            text.get(..s.start).map_or(1, |t| t.lines().count().max(1))
        }),
        reason: e.message().to_string(),
    })?;
    if journal.version != CREATE_JOURNAL_VERSION {
        return Err(ParseError {
            line: 1,
            reason: format!(
                "version {} is not known to this poolsync (it writes version {CREATE_JOURNAL_VERSION})",
                journal.version
            ),
        });
    }
    if RawUuid::from_canonical(&journal.poolset_uuid).is_err() {
        return Err(ParseError {
            line: 1,
            reason: format!("poolset_uuid {:?} is not a UUID", journal.poolset_uuid),
        });
    }
    Ok(journal)
}

impl CreateJournal {
    /// The journal's text: a comment that says what it is, then TOML.
    pub fn render(&self) -> Result<String, String> {
        let mut text = String::from(
            "# poolsync: a create of the pool below is under way (or was interrupted).\n\
             # Run the same `poolsync create` again to finish it; do not edit or remove this file.\n",
        );
        text.push_str(&toml::to_string(self).map_err(|e| e.to_string())?);
        Ok(text)
    }

    fn uuid(&self) -> Option<RawUuid> {
        RawUuid::from_canonical(&self.poolset_uuid).ok()
    }
}

/// The journal path of `target`.
pub fn journal_path(target: &Path) -> PathBuf {
    crate::durable::beside(target, CREATE_JOURNAL_SUFFIX)
}

/// Whether the file at `path` reads as a create journal.
pub fn is_journal<S: Storage>(storage: &S, path: &Path) -> bool {
    storage
        .read_all(path, CREATE_JOURNAL_MAX)
        .is_ok_and(|b| parse(&b).is_ok())
}

/// Writes the journal of a run durably, before it creates anything.
pub(super) fn write<S: Storage>(
    storage: &S,
    target: &Path,
    journal: &CreateJournal,
) -> Result<(), Error> {
    let path = journal_path(target);
    let text = journal.render().map_err(|reason| Error::InvalidRequest {
        path: path.clone(),
        reason,
    })?;
    crate::durable::replace_small_file(storage, &path, text.as_bytes())
}

/// Removes the journal durably: the last step of the clearing of an
/// interrupted run, and of a run that failed.
pub(super) fn remove<S: Storage>(storage: &S, target: &Path) -> Result<(), Error> {
    let path = journal_path(target);
    if crate::durable::remove_if_exists(storage, &path)? {
        storage.fsync_parent(&path)?;
    }
    Ok(())
}

/// Removes the journal of a run whose pool is whole and durable: its very
/// last step, with no directory sync after it, so that a run stopped a
/// moment before its end still has its journal (and is finished by running
/// it again). Should a power failure bring the journal back, it records a
/// whole pool, which a later create adopts or refuses but never clears.
pub(super) fn remove_last<S: Storage>(storage: &S, target: &Path) -> Result<(), Error> {
    crate::durable::remove_if_exists(storage, &journal_path(target))?;
    Ok(())
}

/// What an earlier, interrupted create left and this run cleared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cleared {
    /// The journal that named them.
    pub journal: PathBuf,
    /// Parts it had created, removed.
    pub removed: Vec<PathBuf>,
    /// Existing files it had reused, whose header page is zero again.
    pub zeroed: Vec<PathBuf>,
}

/// What the start of a named file says.
enum Start {
    /// Nothing there.
    Gone,
    /// Provably the interrupted run's: blank, or never completed.
    Blank,
    /// A header of the journal's pool set.
    Ours,
    /// A header of the journal's pool set whose checksum does not match
    /// (written in part).
    OursTorn,
    /// Anything else, in the words of a refusal.
    Other(String),
}

/// What the journal of an interrupted create found.
pub(super) enum Interrupted {
    /// The run had not finished its pool: what it made is cleared.
    Cleared(Cleared),
    /// The run had written every header (it was stopped while it gave the
    /// files their mode, or removed its journal): the pool it records is
    /// whole.
    Complete(CreateJournal),
}

/// When the journal of an interrupted create of `target` exists: clears
/// what it names (see the module documentation) and removes it, or says
/// that the pool it records is whole. `None` when there is no journal.
/// Nothing is touched unless every named file that is there is provably
/// the interrupted run's.
pub(super) fn clear_interrupted<S: Storage>(
    storage: &S,
    target: &Path,
) -> Result<Option<Interrupted>, Error> {
    let path = journal_path(target);
    if storage.stat(&path)?.is_none() {
        return Ok(None);
    }
    let journal =
        parse(&storage.read_all(&path, CREATE_JOURNAL_MAX)?).map_err(|e| Error::CreateJournal {
            path: path.clone(),
            line: e.line,
            reason: e.reason,
        })?;
    let uuid = journal.uuid();
    // Judge every file first (each opened, which locks it: a create still
    // running holds its parts), then change anything.
    let mut judged = Vec::with_capacity(journal.parts.len());
    for part in &journal.parts {
        let file = PathBuf::from(&part.path);
        let (start, handle) = judge(storage, &file, uuid)?;
        judged.push((part, file, start, handle));
    }
    let whole = judged.iter().all(|(part, _, start, handle)| {
        let sized = handle
            .as_ref()
            .is_some_and(|f| f.len().is_ok_and(|n| n == part.size));
        sized && (!part.header || matches!(start, Start::Ours))
    });
    if whole && !judged.is_empty() {
        return Ok(Some(Interrupted::Complete(journal)));
    }
    let proven: BTreeSet<usize> = judged
        .iter()
        .filter(|(p, _, s, _)| p.header && matches!(s, Start::Ours | Start::OursTorn))
        .map(|(p, ..)| p.replica)
        .collect();
    for (part, file, start, _) in &judged {
        let what = match start {
            Start::Other(what) => what,
            _ => continue,
        };
        // A part without a header of its own holds pool data at its start:
        // one the run reused is kept as it is, one it created is the run's
        // when the header of its replica is.
        if !part.header && (!part.created || proven.contains(&part.replica)) {
            continue;
        }
        return Err(Error::CreateLeftover {
            journal: path.clone(),
            path: file.clone(),
            what: what.clone(),
        });
    }
    let mut cleared = Cleared {
        journal: path.clone(),
        ..Cleared::default()
    };
    let mut dirs = BTreeSet::new();
    for (part, file, start, handle) in judged {
        if matches!(start, Start::Gone) {
            continue;
        }
        if part.created {
            drop(handle);
            if crate::durable::remove_part(storage, &file)? {
                cleared.removed.push(file.clone());
            }
            dirs.insert(file.parent().map(Path::to_path_buf).unwrap_or_default());
        } else if let Some(f) = handle.filter(|_| part.header) {
            let page = [0u8; POOL_HDR_SIZE];
            crate::durable::write_at(&f, 0, &page)?;
            f.fence()?;
            cleared.zeroed.push(file);
        }
    }
    for dir in dirs {
        storage.fsync_dir(&dir)?;
    }
    remove(storage, target)?;
    Ok(Some(Interrupted::Cleared(cleared)))
}

/// Opens (and so locks) the named file and judges its start.
fn judge<S: Storage>(
    storage: &S,
    path: &Path,
    uuid: Option<RawUuid>,
) -> Result<(Start, Option<S::File>), Error> {
    let Some(meta) = storage.stat(path)? else {
        return Ok((Start::Gone, None));
    };
    let file = match storage.open(path, Access::ReadWrite) {
        Ok(f) => f,
        // Created with mode 0 and killed before it got its mode: a user
        // other than root cannot even open it. Nothing was written into it
        // that anybody else could have.
        Err(e) if meta.mode & 0o777 == 0 && !matches!(e, poolsync_pmem::Error::Locked { .. }) => {
            return Ok((Start::Blank, None))
        }
        Err(e) => return Err(e.into()),
    };
    let len = match storage.device_dax(path)? {
        Some(dev) => dev.size,
        None => file.len()?,
    };
    let mut page = vec![0u8; POOL_HDR_SIZE.min(usize::try_from(len).unwrap_or(POOL_HDR_SIZE))];
    file.read_at(0, &mut page)?;
    const FIRST_SECTOR: usize = 512;
    if page.iter().take(FIRST_SECTOR).all(|&b| b == 0) {
        return Ok((Start::Blank, Some(file)));
    }
    let start = match PoolHdr::decode(&page) {
        Ok(h) if h.pool_type() == Some(PoolType::Obj) && Some(h.poolset_uuid) == uuid => {
            if h.checksum_ok() {
                Start::Ours
            } else {
                Start::OursTorn
            }
        }
        Ok(h) if h.pool_type().is_some() => Start::Other(format!(
            "holds a pool header of pool set UUID {}",
            h.poolset_uuid.to_canonical()
        )),
        _ if page.len() < POOL_HDR_SIZE => {
            Start::Other(format!("is {len} bytes long and not blank"))
        }
        _ => Start::Other("holds data that is not a pool header".to_string()),
    };
    Ok((start, Some(file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> CreateJournal {
        CreateJournal {
            version: CREATE_JOURNAL_VERSION,
            target: "/p/pool.set".into(),
            poolset_uuid: "6b0a3e1c-58b1-4ad3-9d0b-0d6f00f0a8c1".into(),
            is_poolset: true,
            pool_size: 8 << 20,
            layout: "x".into(),
            mode: 0o664,
            parts: vec![
                JournalPart {
                    path: "/p/a0".into(),
                    replica: 0,
                    part: 0,
                    size: 8 << 20,
                    header: true,
                    created: true,
                },
                JournalPart {
                    path: "/p/b0".into(),
                    replica: 1,
                    part: 0,
                    size: 8 << 20,
                    header: true,
                    created: false,
                },
            ],
        }
    }

    #[test]
    fn a_journal_reads_back_as_written() {
        let j = journal();
        let text = j.render().unwrap();
        assert!(text.starts_with("# poolsync: a create"));
        assert_eq!(parse(text.as_bytes()).unwrap(), j);
    }

    #[test]
    fn the_fuzz_seeds_read() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/journals");
        let create = std::fs::read(dir.join("create.toml")).unwrap();
        assert_eq!(create[0] % 2, 0);
        parse(&create[1..]).unwrap();
        let deleting = std::fs::read(dir.join("deleting.toml")).unwrap();
        assert_eq!(deleting[0] % 2, 1);
        crate::packets::deleting::parse(&deleting[1..]).unwrap();
    }

    #[test]
    fn a_bad_journal_names_its_line() {
        let mut text = journal().render().unwrap();
        text.push_str("surprise = 1\n");
        let e = parse(text.as_bytes()).unwrap_err();
        assert!(e.line > 3, "{e:?}");
        let mut other = journal();
        other.version = 9;
        let e = parse(other.render().unwrap().as_bytes()).unwrap_err();
        assert!(e.reason.contains("version 9"), "{e:?}");
        let mut other = journal();
        other.poolset_uuid = "nope".into();
        let e = parse(other.render().unwrap().as_bytes()).unwrap_err();
        assert!(e.reason.contains("not a UUID"), "{e:?}");
        assert!(parse(&[0xff, 0xfe]).is_err());
    }
}
