//! The journal of a transform, and the files it names: the parts the
//! transform creates and the temporary copy (the format is in
//! docs/format.md §20).
//!
//! Before it creates anything, a transform writes a journal next to the
//! source pool set file (`<source>.poolsync-journal`, TOML). It names both
//! pool set files (with checksums of their parsed text), the pool set UUID,
//! the pool size, the master header, the temporary copy and every part file
//! the run is about to create. It is what lets a re-run tell an interrupted
//! transform from a broken pool (see [`super::staged`] and
//! [`super::simple`]) and recognise the files the interrupted run left,
//! whatever state their creation reached ([`judge_leftover`]).
//! [`parse_journal`] reads its bytes without any I/O, so that it can be
//! fuzzed; the rest of this module finds, writes and judges the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use poolsync_header::{HeaderLinks, PoolHdr, PoolType, RawUuid, FEAT_SINGLEHDR, POOL_HDR_SIZE};
use poolsync_pmem::{Access, PartFile, Storage};
use poolsync_poolset::{PoolSet, Replica};
use serde::{Deserialize, Serialize};

use super::request::{part_paths, refuse, Request};
use super::source::SourceInfo;
use super::types::{JournalPlan, TransformPlan};
use crate::open::OpenPart;
use crate::ownership::{prove, Claim, Rules};
use crate::Error;

/// Appended to the source pool set file's path to name the journal.
pub const JOURNAL_SUFFIX: &str = ".poolsync-journal";
/// Appended to the source master part 0's file name (with a leading dot)
/// to name the temporary copy.
pub const TEMP_SUFFIX: &str = ".poolsync-tmp";
/// Journal format version: 2 names the new parts (`new_parts`).
pub const JOURNAL_VERSION: u32 = 2;
/// The oldest version still read: 1, written by staged transforms only,
/// which named no new parts.
const JOURNAL_OLDEST: u32 = 1;
/// A journal is a few kilobytes; anything much larger is not one.
pub const JOURNAL_MAX: u64 = 1 << 20;
/// Free space a journal is granted in the plan's space check (it takes
/// about 9 KiB; the rest is slack for file system overhead).
pub(super) const JOURNAL_RESERVE: u64 = 64 << 10;

/// What the journal records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// Format version ([`JOURNAL_VERSION`]).
    pub version: u32,
    /// The source pool set file, absolute.
    pub source: String,
    /// The target pool set file, absolute.
    pub target: String,
    /// CRC-32 of the source set's canonical text.
    pub source_crc: u32,
    /// CRC-32 of the target set's canonical text.
    pub target_crc: u32,
    /// The pool set UUID.
    pub poolset_uuid: String,
    /// `heap_offset + heap_size`.
    pub pool_size: u64,
    /// Mode of the parts.
    pub mode: u32,
    /// The temporary copy, if one is used.
    pub temporary: Option<String>,
    /// The part files the transform creates at paths that are not parts
    /// of the source, in the order it creates them (`None`: a version 1
    /// journal, which did not record them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_parts: Option<Vec<String>>,
    /// The source master's part 0 header, hex.
    pub master_header: String,
    /// The part 0 header each rewritten replica keeps, hex, by target
    /// replica index.
    #[serde(default)]
    pub kept_headers: BTreeMap<String, String>,
}

/// Why a journal's bytes are not a journal: the line (1-based) and what is
/// wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalError {
    /// The line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Reads a journal from its bytes (no I/O). Trailing NUL bytes are slack
/// from a torn write and are ignored; anything else that is not a journal
/// of a version this poolsync knows is an error naming the line.
pub fn parse_journal(bytes: &[u8]) -> Result<Journal, JournalError> {
    let text = std::str::from_utf8(bytes).map_err(|e| JournalError {
        line: bytes
            .get(..e.valid_up_to())
            .map_or(1, |b| b.iter().filter(|&&c| c == b'\n').count() + 1),
        reason: "not UTF-8 text".to_string(),
    })?;
    // The file is allocated before it is written: trailing NULs are slack.
    let text = text.trim_end_matches('\0');
    let journal = toml::from_str::<Journal>(text).map_err(|e| JournalError {
        line: e.span().map_or(1, |s| {
            text.get(..s.start).map_or(1, |t| t.lines().count().max(1))
        }),
        reason: e.message().to_string(),
    })?;
    if !(JOURNAL_OLDEST..=JOURNAL_VERSION).contains(&journal.version) {
        return Err(JournalError {
            line: 1,
            reason: format!(
                "version {} is not known to this poolsync (it writes version {JOURNAL_VERSION})",
                journal.version
            ),
        });
    }
    Ok(journal)
}

impl Journal {
    /// The journal's text: a comment that says what it is, then TOML.
    pub fn render(&self) -> Result<String, String> {
        let mut text = String::from(
            "# poolsync: a transform of the pool set below is under way (or was interrupted).\n\
             # Run the same `poolsync transform` again to finish it; do not edit or remove this file.\n",
        );
        text.push_str(&toml::to_string(self).map_err(|e| e.to_string())?);
        Ok(text)
    }

    /// The master header it records, when that is a valid pool header.
    pub(super) fn master(&self) -> Option<PoolHdr> {
        unhex(&self.master_header)
            .and_then(|b| PoolHdr::decode(&b).ok())
            .filter(PoolHdr::checksum_ok)
    }
}

/// The journal path of the source pool set file `src`.
pub fn journal_path(src: &Path) -> PathBuf {
    crate::durable::beside(src, JOURNAL_SUFFIX)
}

/// The temporary copy's path: beside `master_part0`, hidden.
pub(super) fn temp_path(master_part0: &Path) -> PathBuf {
    let name = master_part0
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pool".to_string());
    master_part0.with_file_name(format!(".{name}{TEMP_SUFFIX}"))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

pub(super) fn set_crc(set: &PoolSet) -> u32 {
    crc32fast::hash(set.to_text().as_bytes())
}

/// A journal found beside the source pool set file.
#[derive(Debug)]
pub(super) struct Found {
    pub path: PathBuf,
    /// `None` when the file does not parse while the source is healthy: a
    /// run was interrupted while writing it, before it changed anything.
    pub journal: Option<Journal>,
    /// The working directory it is read against.
    cwd: PathBuf,
}

/// Reads the journal of `src`, when there is one.
pub(super) fn find_journal<S: Storage>(storage: &S, src: &Path) -> Result<Option<Found>, Error> {
    let path = journal_path(src);
    let Some(meta) = storage.stat(&path)? else {
        return Ok(None);
    };
    // A journal gets its mode only once it is written and durable: one of
    // mode 0 was interrupted while it was being written (and may not even
    // be readable), so it is treated like one that does not parse.
    let parsed = if meta.mode & 0o777 == 0 {
        Err(JournalError {
            line: 1,
            reason: "it was never completed (its mode is 0)".to_string(),
        })
    } else {
        parse_journal(&storage.read_all(&path, JOURNAL_MAX)?)
    };
    let journal = match parsed {
        Ok(journal) => Some(journal),
        // The journal is made durable before anything else is written, so
        // one that does not parse was torn by a crash while it was being
        // written: with a healthy source it is stale like any other. A
        // journal of an unknown version is never taken for a torn one.
        Err(e)
            if !e.reason.starts_with("version ")
                && SourceInfo::survey(storage, src)?.healthy.is_ok() =>
        {
            None
        }
        Err(e) => {
            return Err(Error::Journal {
                path,
                line: e.line,
                reason: e.reason,
            })
        }
    };
    Ok(Some(Found {
        path,
        journal,
        cwd: storage.current_dir().unwrap_or_default(),
    }))
}

impl Found {
    /// Whether it records the transform of `src` into `dst`.
    pub(super) fn is_for(&self, src: &Path, dst: &Path) -> bool {
        let abs = |p: &Path| crate::durable::absolute(&self.cwd, p);
        self.journal.as_ref().is_some_and(|j| {
            abs(Path::new(&j.source)) == abs(src) && abs(Path::new(&j.target)) == abs(dst)
        })
    }

    /// The command that finishes the transform it records (a torn
    /// journal records none and is only in the way).
    pub(super) fn command(&self) -> String {
        match &self.journal {
            Some(j) => format!("poolsync transform {} {}", j.source, j.target),
            None => format!("rm {}", self.path.display()),
        }
    }

    /// Whether it records the transform `req` asks for, of pool set files
    /// with the same contents.
    pub(super) fn records(&self, req: &Request<'_>) -> bool {
        self.is_for(req.src, req.dst)
            && self
                .journal
                .as_ref()
                .is_some_and(|j| j.source_crc == set_crc(&req.s) && j.target_crc == set_crc(&req.d))
    }

    /// The temporary copy it names.
    pub(super) fn temporary(&self) -> Option<PathBuf> {
        self.journal.as_ref()?.temporary.as_ref().map(PathBuf::from)
    }

    /// The new parts it names. A version 1 journal named none; it is taken
    /// to name every part of the target of `req` that is not a part of the
    /// source when it records that very transform (what version 1 relied
    /// on), and nothing otherwise.
    pub(super) fn new_parts(&self, req: &Request<'_>) -> Vec<PathBuf> {
        let Some(j) = &self.journal else {
            return Vec::new();
        };
        match &j.new_parts {
            Some(parts) => parts.iter().map(PathBuf::from).collect(),
            None if self.records(req) => {
                let source: BTreeSet<PathBuf> = part_paths(&req.s).into_iter().collect();
                part_paths(&req.d)
                    .into_iter()
                    .filter(|p| !source.contains(p))
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// The refusal when it records this transform but the pool set files
    /// have changed since it began.
    pub(super) fn changed_since(&self, req: &Request<'_>) -> Error {
        refuse(
            req.src,
            req.dst,
            format!(
                "{} records an interrupted transform of these pool set files, but they have changed since it began; put back the pool set files it was started with and run the same transform again",
                self.path.display()
            ),
        )
    }

    /// Whether it names `path` as a part it creates.
    pub(super) fn names(&self, req: &Request<'_>, path: &Path) -> bool {
        self.new_parts(req).iter().any(|p| p == path)
    }
}

/// An interrupted staged transform of the pool set at `set`, as its
/// journal records it: the journal's path and the command that finishes
/// it. `None` when there is no journal; an unreadable journal is an error
/// that names it.
pub fn interrupted<S: Storage>(
    storage: &S,
    set: &Path,
) -> Result<Option<(PathBuf, String)>, Error> {
    Ok(find_journal(storage, set)?
        .filter(|found| found.journal.is_some())
        .map(|found| (found.path.clone(), found.command())))
}

/// Files of an earlier, stale run (the source is healthy again, so they
/// hold nothing it needs) that a run deletes before it starts, in this
/// order: the new parts its journal names that are provably its leftovers
/// (those without a header of their own before the others, so that each
/// stays provable until it goes), its temporary copy, and the journal
/// last, so that a crash in between leaves nothing that no journal names.
/// A named part that is not provably a leftover is left alone (should the
/// transform need its path, it refuses as for any file in the way); a file
/// at the temporary copy's path must be provably one.
pub(super) fn stale_files<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    found: &Found,
    poolset_uuid: RawUuid,
    source_uuids: &BTreeSet<RawUuid>,
) -> Result<Vec<PathBuf>, Error> {
    let source_paths: BTreeSet<PathBuf> = part_paths(&req.s).into_iter().collect();
    // The structure of the target is known only for a journal of this
    // very transform.
    let target = found.records(req).then_some(&req.d);
    let (mut headerless, mut with_header) = (Vec::new(), Vec::new());
    for path in found.new_parts(req) {
        if source_paths.contains(&path) {
            continue;
        }
        let Some(start) = read_start(storage, &path)? else {
            continue;
        };
        let owner = match target.and_then(|d| owner_in(d, &path)) {
            Some(owner) => Some((owner.clone(), read_start(storage, &owner)?)),
            None => None,
        };
        let owner = owner.as_ref().map(|(p, s)| (p.as_path(), s.as_ref()));
        if judge_leftover(&start, owner, poolset_uuid, Some(source_uuids)).is_ok() {
            if owner.is_some() {
                headerless.push(path);
            } else {
                with_header.push(path);
            }
        }
    }
    let mut out = headerless;
    out.append(&mut with_header);
    if let Some(temp) = found.temporary() {
        if let Some(start) = read_start(storage, &temp)? {
            if let Err(what) = judge_leftover(&start, None, poolset_uuid, None) {
                return Err(temp_refusal(req, &temp, &what, poolset_uuid));
            }
            out.push(temp);
        }
    }
    out.push(found.path.clone());
    Ok(out)
}

/// For a part of `set` without a header of its own, the part 0 of its
/// replica, whose header it goes with.
pub(super) fn owner_in(set: &PoolSet, path: &Path) -> Option<PathBuf> {
    set.replicas.iter().enumerate().find_map(|(r, replica)| {
        let Replica::Local { parts, .. } = replica else {
            return None;
        };
        let p = parts
            .iter()
            .position(|part| Path::new(&part.path) == path)?;
        (p >= set.nhdrs(r)).then(|| parts.first().map(|part| PathBuf::from(&part.path)))?
    })
}

/// What the start of a file that a journal names says about its owner.
#[derive(Debug)]
pub(super) enum Start {
    /// Nothing: the file is empty, or the first sector of its header page
    /// (signature, UUIDs, links) is zero, or it cannot be read and has mode
    /// 0. poolsync creates files empty and of mode 0, allocates them zero
    /// and gives them their mode last: such a file was created and never
    /// completed (or a header write did not reach its first sector).
    Blank,
    /// An obj pool header, whatever its checksum.
    Header(Box<PoolHdr>),
    /// Anything else, in the words of a refusal ("the file …").
    Other(String),
}

/// The first sector of a header page: what identifies a pool header.
const FIRST_SECTOR: usize = 512;

impl Start {
    /// Judges the first bytes of a file of `len` bytes (`page` holds up to
    /// a header page of them).
    fn of(page: &[u8], len: u64) -> Start {
        if page.iter().take(FIRST_SECTOR).all(|&b| b == 0) {
            return Start::Blank;
        }
        if page.len() < POOL_HDR_SIZE {
            return Start::Other(format!("is only {len} bytes long"));
        }
        match PoolHdr::decode(page) {
            Ok(hdr) if hdr.pool_type() == Some(PoolType::Obj) => Start::Header(Box::new(hdr)),
            _ => Start::Other(Claim::Foreign.describe()),
        }
    }

    /// Reads the start of an open file.
    fn read<F: PartFile>(file: &F) -> Result<Start, Error> {
        let len = file.len()?;
        let mut page = vec![0u8; usize::try_from(len.min(POOL_HDR_SIZE as u64)).unwrap_or(0)];
        file.read_at(0, &mut page)?;
        Ok(Start::of(&page, len))
    }

    /// The start of a part of an open set: read through its handle (it
    /// holds the part's lock); `None` when the file does not exist.
    pub(super) fn of_part<F: PartFile>(part: &OpenPart<F>) -> Result<Option<Start>, Error> {
        let Some(meta) = part.meta else {
            return Ok(None);
        };
        match &part.file {
            Some(file) => Start::read(file).map(Some),
            None if meta.mode & 0o777 == 0 => Ok(Some(Start::Blank)),
            None => Ok(Some(Start::Other(part.status.to_string()))),
        }
    }
}

/// Reads the start of the file at `path`; `None` when there is none.
fn read_start<S: Storage>(storage: &S, path: &Path) -> Result<Option<Start>, Error> {
    let Some(meta) = storage.stat(path)? else {
        return Ok(None);
    };
    match storage.open(path, Access::ReadOnly) {
        Ok(file) => Start::read(&file).map(Some),
        // Created with mode 0 and never completed: only root may read it.
        Err(_) if meta.mode & 0o777 == 0 => Ok(Some(Start::Blank)),
        Err(e) => Err(e.into()),
    }
}

/// Whether a file that a journal names is what the transform that wrote
/// the journal left there (docs/format.md §20.3): it is blank, or it
/// carries a header of the pool set `poolset_uuid` (valid, invalidated or
/// torn) that is not a copy of a source part (one of `copies_of`). A part
/// without a header of its own (`owner`: its replica's part 0 and what
/// starts that) goes with its replica's part 0, which must be missing,
/// blank or carry the pool set UUID. `Err` says what the file is instead.
pub(super) fn judge_leftover(
    start: &Start,
    owner: Option<(&Path, Option<&Start>)>,
    poolset_uuid: RawUuid,
    copies_of: Option<&BTreeSet<RawUuid>>,
) -> Result<(), String> {
    if let Start::Blank = start {
        return Ok(());
    }
    if let Some((path, owner)) = owner {
        return match owner {
            None | Some(Start::Blank) => Ok(()),
            Some(Start::Header(h)) if h.poolset_uuid == poolset_uuid => Ok(()),
            Some(Start::Header(h)) => Err(format!(
                "belongs with {}, which carries pool set uuid {}",
                path.display(),
                h.poolset_uuid.to_canonical()
            )),
            Some(Start::Other(what)) => {
                Err(format!("belongs with {}, which {what}", path.display()))
            }
        };
    }
    match start {
        Start::Header(h) if copies_of.is_some_and(|c| c.contains(&h.uuid)) => Err(format!(
            "is a copy of a part of the source (it carries that part's uuid {}) and pool set uuid {}",
            h.uuid.to_canonical(),
            h.poolset_uuid.to_canonical()
        )),
        Start::Header(h) if h.poolset_uuid == poolset_uuid => Ok(()),
        Start::Header(h) => Err(format!(
            "carries pool set uuid {}",
            h.poolset_uuid.to_canonical()
        )),
        Start::Other(what) => Err(what.clone()),
        Start::Blank => Ok(()),
    }
}

/// The refusal for a file in the temporary copy's way.
fn temp_refusal(req: &Request<'_>, temp: &Path, what: &str, poolset_uuid: RawUuid) -> Error {
    refuse(
        req.src,
        req.dst,
        format!(
            "{} is where the temporary copy goes, but the file there {what}, not pool set uuid {}; move it away and run again",
            temp.display(),
            poolset_uuid.to_canonical()
        ),
    )
}

/// A temporary copy may be deleted or replaced only when its header page
/// is zero (created, never completed), carries this pool set's UUID, or is
/// a torn write of `expected`, the header that completes it.
pub(super) fn prove_temp_ours<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    temp: &Path,
    poolset_uuid: RawUuid,
    expected: Option<&PoolHdr>,
) -> Result<(), Error> {
    if let Some(hdr) = expected {
        if torn_write_of(storage, temp, hdr)? {
            return Ok(());
        }
    }
    let what = match read_temp_header(storage, temp)? {
        TempState::Zero => return Ok(()),
        TempState::Header(hdr) => {
            // A header of this pool set, complete or not, is ours.
            let claim = match Claim::of(Some(&hdr)) {
                Claim::Damaged(h) => Claim::Valid(h),
                other => other,
            };
            match prove(claim, &Rules::strict(poolset_uuid)) {
                Ok(()) => return Ok(()),
                Err(what) => what,
            }
        }
        TempState::Short(len) => format!("is only {len} bytes long"),
        TempState::Undecodable => Claim::Foreign.describe(),
    };
    Err(temp_refusal(req, temp, &what, poolset_uuid))
}

/// The header that completes a temporary copy: the source master's, as a
/// single-file pool.
pub(super) fn temp_header(master: &PoolHdr) -> PoolHdr {
    let mut hdr = master.clone();
    hdr.features.incompat &= !FEAT_SINGLEHDR;
    let me = hdr.uuid;
    hdr.set_links(&HeaderLinks {
        prev_part: me,
        next_part: me,
        prev_repl: me,
        next_repl: me,
    });
    hdr.checksum = hdr.compute_checksum();
    hdr
}

/// The unit a device writes atomically: a crash while a page is written
/// leaves each sector old or new.
const SECTOR: usize = 512;

/// Reads the header page of a file, or says how short the file is.
fn read_page<S: Storage>(storage: &S, path: &Path) -> Result<Result<Vec<u8>, u64>, Error> {
    let file = storage.open(path, Access::ReadOnly)?;
    let len = file.len()?;
    if len < POOL_HDR_SIZE as u64 {
        return Ok(Err(len));
    }
    let mut page = vec![0u8; POOL_HDR_SIZE];
    file.read_at(0, &mut page)?;
    Ok(Ok(page))
}

/// Whether the header page of `temp` is what a crash while `hdr` was
/// written over the zero page leaves: every sector zero or `hdr`'s (the
/// header is the only write the page ever gets).
fn torn_write_of<S: Storage>(storage: &S, temp: &Path, hdr: &PoolHdr) -> Result<bool, Error> {
    let Ok(page) = read_page(storage, temp)? else {
        return Ok(false);
    };
    let want = hdr.encode_raw();
    Ok(page
        .chunks(SECTOR)
        .zip(want.chunks(SECTOR))
        .all(|(got, want)| got == want || got.iter().all(|&b| b == 0)))
}

/// What a temporary copy's header page says.
pub(super) enum TempState {
    /// All zero: created, never completed.
    Zero,
    /// A decoded header (complete when its checksum is valid and it is an
    /// obj pool's).
    Header(Box<PoolHdr>),
    /// The file is shorter than a header page.
    Short(u64),
    /// The page does not decode as a pool header.
    Undecodable,
}

impl TempState {
    /// A complete copy of the pool set `poolset_uuid`.
    pub(super) fn is_complete_copy_of(&self, poolset_uuid: RawUuid) -> bool {
        matches!(self, TempState::Header(h)
            if h.pool_type() == Some(PoolType::Obj)
                && h.checksum_ok()
                && h.poolset_uuid == poolset_uuid)
    }
}

pub(super) fn read_temp_header<S: Storage>(storage: &S, temp: &Path) -> Result<TempState, Error> {
    let page = match read_page(storage, temp)? {
        Ok(page) => page,
        Err(len) => return Ok(TempState::Short(len)),
    };
    if page.iter().all(|&b| b == 0) {
        return Ok(TempState::Zero);
    }
    Ok(match PoolHdr::decode(&page) {
        Ok(hdr) => TempState::Header(Box::new(hdr)),
        Err(_) => TempState::Undecodable,
    })
}

/// Writes the journal of `plan` (its [`JournalPlan`] `journal`, and its
/// staging if it has one) and makes it durable.
pub(super) fn write_journal<S: Storage>(
    storage: &S,
    plan: &TransformPlan,
    journal: &JournalPlan,
    target: &PoolSet,
) -> Result<(), Error> {
    // The source set file is read again here, and the target's is the one
    // the run has open (and locked): what the journal records must be what
    // the run is carrying out.
    let s = super::request::parse_set(storage, &plan.source)?;
    let d = target;
    let staging = plan.staging.as_ref();
    let record = Journal {
        version: JOURNAL_VERSION,
        source: crate::load::absolute(storage, &plan.source)
            .to_string_lossy()
            .into_owned(),
        target: crate::load::absolute(storage, &plan.target)
            .to_string_lossy()
            .into_owned(),
        source_crc: set_crc(&s),
        target_crc: set_crc(d),
        poolset_uuid: plan.poolset_uuid.clone(),
        pool_size: plan.pool_size,
        mode: plan.mode,
        temporary: staging
            .and_then(|st| st.temporary.as_ref())
            .map(|t| t.path.to_string_lossy().into_owned()),
        new_parts: Some(
            journal
                .new_parts
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        ),
        master_header: hex(&journal.master_header),
        kept_headers: staging
            .map(|st| {
                st.kept_headers
                    .iter()
                    .map(|(r, bytes)| (r.to_string(), hex(bytes)))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let text = record.render().map_err(|reason| Error::Journal {
        path: journal.path.clone(),
        line: 0,
        reason,
    })?;
    crate::durable::create_file(storage, &journal.path, text.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Journal {
        Journal {
            version: JOURNAL_VERSION,
            source: "/p/a.set".into(),
            target: "/p/b.set".into(),
            source_crc: 1,
            target_crc: 2,
            poolset_uuid: "u".into(),
            pool_size: 3,
            mode: 0o664,
            temporary: Some("/p/.x.poolsync-tmp".into()),
            new_parts: Some(vec!["/p/n0".into(), "/p/n1".into()]),
            master_header: hex(&[1, 2, 255]),
            kept_headers: [("1".to_string(), "00".to_string())].into(),
        }
    }

    #[test]
    fn a_journal_reads_back_what_was_written() {
        let j = sample();
        let text = j.render().unwrap();
        assert_eq!(parse_journal(text.as_bytes()).unwrap(), j);
        let mut torn = text.into_bytes();
        torn.extend_from_slice(&[0; 100]);
        assert_eq!(parse_journal(&torn).unwrap(), j);
        assert_eq!(unhex(&j.master_header).unwrap(), [1, 2, 255]);
        assert!(unhex("abc").is_none());
    }

    #[test]
    fn a_version_1_journal_is_read_and_names_no_parts() {
        let mut v1 = sample();
        v1.version = 1;
        v1.new_parts = None;
        let text = v1.render().unwrap();
        assert!(!text.contains("new_parts"), "{text}");
        assert_eq!(parse_journal(text.as_bytes()).unwrap(), v1);
        let v3 = text.replace("version = 1", "version = 3");
        let e = parse_journal(v3.as_bytes()).unwrap_err();
        assert!(e.reason.starts_with("version 3 is not known"), "{e:?}");
    }

    #[test]
    fn the_start_of_a_file_says_whether_it_is_blank() {
        assert!(matches!(Start::of(&[], 0), Start::Blank));
        assert!(matches!(Start::of(&[0; 100], 100), Start::Blank));
        // A torn header write that reached only the last sector.
        let mut page = vec![0u8; POOL_HDR_SIZE];
        page[4090] = 7;
        assert!(matches!(Start::of(&page, 1 << 20), Start::Blank));
        page[3] = 1;
        assert!(matches!(Start::of(&page, 1 << 20), Start::Other(_)));
        assert!(matches!(Start::of(&page[..100], 100), Start::Other(w) if w.contains("100 bytes")));
    }

    #[test]
    fn bad_journals_name_the_line() {
        let text = sample().render().unwrap();
        let bad = text.replace("pool_size = 3", "pool_size = \"three\"");
        let e = parse_journal(bad.as_bytes()).unwrap_err();
        let want = bad
            .lines()
            .position(|l| l.starts_with("pool_size"))
            .unwrap()
            + 1;
        assert_eq!(e.line, want, "{e:?}");
        let e = parse_journal(b"version = 3\n").unwrap_err();
        assert!(
            e.reason.contains("missing field") || e.reason.contains("version"),
            "{e:?}"
        );
        let e = parse_journal(&[b'a', 0xff]).unwrap_err();
        assert_eq!(e.reason, "not UTF-8 text");
    }
}
