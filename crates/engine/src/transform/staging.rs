//! Transforms that rewrite replicas onto their own files: adding or
//! removing `SINGLEHDR` (every part after the first changes layout) and
//! reshaping a replica whose new parts reuse its old files (split, merge,
//! resize). pmempool moves the data in place, and a crash in the middle
//! leaves a replica that neither pool set file describes; poolsync instead
//! rebuilds each rewritten replica from a copy that stays intact until the
//! end.
//!
//! # Where the data comes from
//!
//! When a source replica stays exactly as it is (same parts, same layout),
//! the rewritten replicas are rebuilt from it. Otherwise every replica is
//! rewritten, and the data is first *staged* into a temporary copy: one
//! file beside the source master's part 0 holding the pool's whole address
//! space `[0, pool_size)`, whose header is written last (so a complete copy
//! is recognisable) and makes it a valid single-file pool that libpmemobj
//! can open on its own.
//!
//! # The journal
//!
//! Before the first write, a journal is written next to the source pool
//! set file (`<source>.poolsync-journal`, TOML). It names both pool set
//! files (with checksums of their parsed text), the pool set UUID, the
//! pool size, the master header and the temporary copy. It is what lets a
//! re-run tell an interrupted transform from a broken pool:
//!
//! * the source is fully healthy: nothing of it was rewritten yet, so a
//!   journal or temporary copy is stale and discarded, and the transform
//!   starts afresh;
//! * the target is fully healthy: only the clean-up (deleting the
//!   temporary copy, unused old parts and the journal) is left;
//! * otherwise the rewritten replicas are rebuilt again, from the replica
//!   that stays or from the (complete) temporary copy.
//!
//! # Order, for crash safety
//!
//! 1. Journal written and made durable.
//! 2. Temporary copy (when needed): created, filled, fenced; then its
//!    header, fenced. Until here the source is untouched.
//! 3. Every part of each rewritten replica is recreated (unlinked and
//!    created anew, fully allocated), the directories synced, the data
//!    copied and fenced, the modes set, and the headers written; then the
//!    replicas that stay are relinked.
//! 4. The temporary copy, the old parts no replica uses any more and the
//!    journal are deleted, directories synced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use poolsync_header::{
    PoolHdr, PoolType, RawUuid, FEAT_SINGLEHDR, POOL_HDR_CSUM_OFF, POOL_HDR_SIZE,
};
use poolsync_pmem::{Access, PartFile, Storage};
use poolsync_poolset::{Extent, PoolSet, Replica, PAGE};
use serde::{Deserialize, Serialize};

use super::{
    assemble, check_free_space, header_steps, owned_parts, refuse, survey_source, NewPart,
    Operation, RemovedPart, SourceInfo, TransformOptions, TransformPlan, TransformReport,
};
use crate::compare::LogicalRange;
use crate::inspect::inspect;
use crate::open::{open, HeaderState, OpenPart, OpenReplica, OpenSet, PartStatus};
use crate::sync::plan::{
    push_data_steps, push_dir_syncs, DataPurpose, HeaderAction, HeaderStep, Plan, Step,
};
use crate::sync::uuids::UuidOrigin;
use crate::sync::{Progress, SyncOptions};
use crate::Error;

/// Appended to the source pool set file's path to name the journal.
pub const JOURNAL_SUFFIX: &str = ".poolsync-journal";
/// Appended to the source master part 0's file name (with a leading dot)
/// to name the temporary copy.
pub const TEMP_SUFFIX: &str = ".poolsync-tmp";
/// Journal format version.
const JOURNAL_VERSION: u32 = 1;
/// A journal is a few kilobytes; anything much larger is not one.
const JOURNAL_MAX: u64 = 1 << 20;
/// Free space a journal is granted in the plan's space check (it takes
/// about 9 KiB; the rest is slack for file system overhead).
const JOURNAL_RESERVE: u64 = 64 << 10;

/// A plan and the target set it was made on.
type Planned<F> = (TransformPlan, OpenSet<F>);

/// How a transform that rewrites replicas onto their own files proceeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Staging {
    /// The journal file.
    pub journal: PathBuf,
    /// The temporary copy, when no replica stays as it is.
    pub temporary: Option<TempCopy>,
    /// Where the rewritten replicas' data is read.
    pub data_from: DataFrom,
    /// Target replicas rebuilt onto recreated parts.
    pub rewritten: Vec<usize>,
    /// `true` when this run finishes an interrupted one (the journal
    /// exists and the source is no longer healthy).
    pub resumed: bool,
    /// The source master's header page, recorded in the journal.
    #[serde(skip)]
    pub master_header: Vec<u8>,
    /// The source part 0 header page that each rewritten replica keeps
    /// (by target replica index), recorded in the journal so that a
    /// resumed run keeps their UUIDs too.
    #[serde(skip)]
    pub kept_headers: BTreeMap<usize, Vec<u8>>,
    /// Headers of source parts that are not recreated but belong to a
    /// source replica that loses files to a rewritten one: invalidated
    /// (inverted checksum) before anything is recreated, so that the old
    /// pool set file cannot take that half-rewritten replica for healthy.
    /// Those files are deleted at the end.
    pub invalidate: Vec<PathBuf>,
}

/// The temporary copy of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TempCopy {
    /// The file.
    pub path: PathBuf,
    /// Its size: the pool size rounded up to a page.
    pub size: u64,
    /// An interrupted run already completed it; it is reused.
    pub complete: bool,
}

/// Where the data of rewritten replicas comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataFrom {
    /// A replica that stays as it is (target index).
    Replica {
        /// Target replica index.
        replica: usize,
    },
    /// The temporary copy.
    Temporary,
    /// Replica 0 of the source, read through the source pool set file:
    /// when every replica moves onto new files, the source is not written
    /// until its files are deleted at the end, so it needs no copy.
    Source,
}

/// What the journal records (TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Journal {
    /// Format version.
    version: u32,
    /// The source pool set file, as given.
    source: String,
    /// The target pool set file, as given.
    target: String,
    /// CRC-32 of the source set's canonical text.
    source_crc: u32,
    /// CRC-32 of the target set's canonical text.
    target_crc: u32,
    /// The pool set UUID.
    poolset_uuid: String,
    /// `heap_offset + heap_size`.
    pool_size: u64,
    /// Mode of the parts.
    mode: u32,
    /// The temporary copy, if one is used.
    temporary: Option<String>,
    /// The source master's part 0 header, hex.
    master_header: String,
    /// The part 0 header each rewritten replica keeps, hex, by target
    /// replica index.
    #[serde(default)]
    kept_headers: BTreeMap<String, String>,
}

/// The journal path of the source pool set file `src`.
pub fn journal_path(src: &Path) -> PathBuf {
    let mut name = src.as_os_str().to_os_string();
    name.push(JOURNAL_SUFFIX);
    PathBuf::from(name)
}

/// The temporary copy's path: beside `master_part0`, hidden.
fn temp_path(master_part0: &Path) -> PathBuf {
    let name = master_part0
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pool".to_string());
    master_part0.with_file_name(format!(".{name}{TEMP_SUFFIX}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
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

/// `path` made absolute against the working directory (lexically, as the
/// journal records it), or as it is when that fails.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn set_crc(set: &PoolSet) -> u32 {
    crc32fast::hash(set.to_text().as_bytes())
}

/// A journal found beside the source pool set file.
#[derive(Debug)]
pub(super) struct Found {
    path: PathBuf,
    /// `None` when the file does not parse while the source is healthy: a
    /// run was interrupted while writing it, before it changed anything.
    journal: Option<Journal>,
}

/// Reads the journal of `src`, when there is one.
pub(super) fn find_journal<S: Storage>(storage: &S, src: &Path) -> Result<Option<Found>, Error> {
    let path = journal_path(src);
    if storage.stat(&path)?.is_none() {
        return Ok(None);
    }
    let bytes = storage.read_all(&path, JOURNAL_MAX)?;
    let bad = |line: usize, reason: String| Error::Journal {
        path: path.clone(),
        line,
        reason,
    };
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|e| {
            let line = bytes
                .get(..e.valid_up_to())
                .map_or(1, |b| b.iter().filter(|&&c| c == b'\n').count() + 1);
            bad(line, "not UTF-8 text".to_string())
        })
        .and_then(|text| {
            // The file is allocated before it is written: trailing NULs are slack.
            let text = text.trim_end_matches('\0');
            toml::from_str::<Journal>(text).map_err(|e| {
                let line = e.span().map_or(1, |s| {
                    text.get(..s.start).map_or(1, |t| t.lines().count().max(1))
                });
                bad(line, e.message().to_string())
            })
        });
    let journal = match parsed {
        Ok(journal) => journal,
        // The journal is made durable before anything else is written, so
        // one that does not parse was torn by a crash while it was being
        // written: with a healthy source it is stale like any other.
        Err(_) if super::survey_source(storage, src)?.healthy.is_ok() => {
            return Ok(Some(Found {
                path,
                journal: None,
            }))
        }
        Err(e) => return Err(e),
    };
    if journal.version != JOURNAL_VERSION {
        return Err(bad(
            1,
            format!(
                "version {} is not known to this poolsync (it writes version {JOURNAL_VERSION})",
                journal.version
            ),
        ));
    }
    Ok(Some(Found {
        path,
        journal: Some(journal),
    }))
}

impl Found {
    /// The journal's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it records the transform of `src` into `dst`.
    pub(super) fn is_for(&self, src: &Path, dst: &Path) -> bool {
        self.journal.as_ref().is_some_and(|j| {
            absolute(Path::new(&j.source)) == absolute(src)
                && absolute(Path::new(&j.target)) == absolute(dst)
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
    fn records(&self, req: &Request<'_>) -> bool {
        self.is_for(req.src, req.dst)
            && self
                .journal
                .as_ref()
                .is_some_and(|j| j.source_crc == set_crc(req.s) && j.target_crc == set_crc(req.d))
    }

    /// The temporary copy it names.
    fn temporary(&self) -> Option<PathBuf> {
        self.journal.as_ref()?.temporary.as_ref().map(PathBuf::from)
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
/// hold nothing it needs) that a run deletes before it starts: the journal
/// and its temporary copy, the latter only if it is provably ours.
pub(super) fn stale_files<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
    found: &Found,
    poolset_uuid: RawUuid,
) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    if let Some(temp) = found.temporary() {
        if storage.stat(&temp)?.is_some() {
            let expected = found
                .journal
                .as_ref()
                .and_then(|j| unhex(&j.master_header))
                .and_then(|b| PoolHdr::decode(&b).ok())
                .map(|master| temp_header(&master));
            prove_temp_ours(storage, src, dst, &temp, poolset_uuid, expected.as_ref())?;
            out.push(temp);
        }
    }
    out.push(found.path.clone());
    Ok(out)
}

/// A temporary copy may be deleted or replaced only when its header page
/// is zero (created, never completed), carries this pool set's UUID, or is
/// a torn write of `expected`, the header that completes it.
fn prove_temp_ours<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
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
        TempState::Ours { hdr, .. } if hdr.poolset_uuid == poolset_uuid => return Ok(()),
        TempState::Ours { hdr, .. } => {
            format!("carries pool set uuid {}", hdr.poolset_uuid.to_canonical())
        }
        TempState::Foreign(what) => what,
    };
    Err(refuse(
        src,
        dst,
        format!(
            "{} is where the temporary copy goes, but the file there {what}, not pool set uuid {}; move it away and run again",
            temp.display(),
            poolset_uuid.to_canonical()
        ),
    ))
}

/// The header that completes a temporary copy: the source master's, as a
/// single-file pool.
fn temp_header(master: &PoolHdr) -> PoolHdr {
    let mut hdr = master.clone();
    hdr.features.incompat &= !FEAT_SINGLEHDR;
    let me = hdr.uuid;
    hdr.set_links(&poolsync_header::HeaderLinks {
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

/// Whether the header page of `temp` is what a crash while `hdr` was
/// written over the zero page leaves: every sector zero or `hdr`'s (the
/// header is the only write the page ever gets).
fn torn_write_of<S: Storage>(storage: &S, temp: &Path, hdr: &PoolHdr) -> Result<bool, Error> {
    let file = storage.open(temp, Access::ReadOnly)?;
    if file.len()? < POOL_HDR_SIZE as u64 {
        return Ok(false);
    }
    let mut page = vec![0u8; POOL_HDR_SIZE];
    file.read_at(0, &mut page)?;
    let want = hdr.encode_raw();
    Ok(page
        .chunks(SECTOR)
        .zip(want.chunks(SECTOR))
        .all(|(got, want)| got == want || got.iter().all(|&b| b == 0)))
}

/// What a temporary copy's header page says.
enum TempState {
    /// All zero: created, never completed.
    Zero,
    /// A pool header (valid when `complete`).
    Ours { hdr: Box<PoolHdr>, complete: bool },
    /// Something else.
    Foreign(String),
}

fn read_temp_header<S: Storage>(storage: &S, temp: &Path) -> Result<TempState, Error> {
    let file = storage.open(temp, Access::ReadOnly)?;
    let len = file.len()?;
    if len < POOL_HDR_SIZE as u64 {
        return Ok(TempState::Foreign(format!("is only {len} bytes long")));
    }
    let mut page = vec![0u8; POOL_HDR_SIZE];
    file.read_at(0, &mut page)?;
    if page.iter().all(|&b| b == 0) {
        return Ok(TempState::Zero);
    }
    match PoolHdr::decode(&page) {
        Ok(hdr) if hdr.pool_type() == Some(PoolType::Obj) => {
            let complete = hdr.checksum_ok();
            Ok(TempState::Ours {
                hdr: Box::new(hdr),
                complete,
            })
        }
        _ => Ok(TempState::Foreign("carries no obj pool header".to_string())),
    }
}

/// The facts a staged plan is built from: from the healthy source on a
/// first run, from the journal on a resumed one.
struct Facts {
    master: PoolHdr,
    poolset_uuid: RawUuid,
    pool_size: u64,
    mode: u32,
    /// The UUID kept by each target replica's part 0 (`SINGLEHDR` changes
    /// keep them, as pmempool does); empty for fresh UUIDs everywhere.
    kept_part0: BTreeMap<usize, RawUuid>,
    /// The source header of each kept part 0, which is rewritten with new
    /// links and feature bits rather than created anew.
    kept_headers: BTreeMap<usize, PoolHdr>,
}

/// Which target replicas are rewritten and where their data comes from.
struct Shape {
    rewritten: Vec<usize>,
    stable: Option<usize>,
}

fn shape(d: &PoolSet, d2s: &[Option<usize>], added: &[usize], hdr_change: bool) -> Shape {
    if hdr_change {
        return Shape {
            rewritten: (0..d.replicas.len()).collect(),
            stable: None,
        };
    }
    Shape {
        rewritten: added.to_vec(),
        stable: d2s.iter().position(Option::is_some),
    }
}

/// Everything [`plan`] needs from the caller.
pub(super) struct Request<'a> {
    pub src: &'a Path,
    pub dst: &'a Path,
    pub s: &'a PoolSet,
    pub d: &'a PoolSet,
    pub d2s: &'a [Option<usize>],
    pub added: &'a [usize],
    pub removed: &'a [usize],
    pub hdr_change: bool,
    pub journal: Option<Found>,
}

/// Plans a staged transform: afresh when the source is healthy (a stale
/// journal is discarded), or as the continuation of an interrupted run
/// when the journal says one was under way.
pub(super) fn plan<S: Storage>(
    storage: &S,
    req: Request<'_>,
    options: &TransformOptions,
) -> Result<(TransformPlan, OpenSet<S::File>), Error> {
    let (src, dst) = (req.src, req.dst);
    let info = survey_source(storage, src)?;
    let shape = shape(req.d, req.d2s, req.added, req.hdr_change);
    match (&info.healthy, &req.journal) {
        (Ok(()), _) => plan_fresh(storage, &req, &info, &shape, options),
        (Err(why), None) => plan_done(storage, &req, &info, options).and_then(|done| match done {
            Some(done) => Ok(done),
            None => Err(broken(src, dst, why)),
        }),
        (Err(why), Some(found)) => {
            if !found.is_for(src, dst) {
                return Err(refuse(
                    src,
                    dst,
                    format!(
                        "an interrupted transform left {}; finish it first with `{}`",
                        found.path.display(),
                        found.command()
                    ),
                ));
            }
            plan_resume(storage, &req, found, &info, &shape, why, options)
        }
    }
}

/// A re-run after a completed staged transform: the source no longer
/// opens (its parts now have the target's layout, or are all gone), the
/// target is fully healthy and carries the pool set UUID the source's
/// headers carry (if any is left), and there is no journal. Nothing is
/// left to do.
fn plan_done<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    info: &SourceInfo,
    options: &TransformOptions,
) -> Result<Option<Planned<S::File>>, Error> {
    let access = if options.dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let target = open(storage, req.dst, access)?;
    let Some(master) = target.part(0, 0).and_then(|p| p.header()).cloned() else {
        return Ok(None);
    };
    let ours = info
        .headers
        .iter()
        .flatten()
        .flatten()
        .any(|h| h.checksum_ok() && h.poolset_uuid == master.poolset_uuid);
    // Every source file still there is a part of the target (replicas
    // replaced by new files leave none; a reshape leaves the files it
    // reused): none is left to carry the UUID, and no journal says a
    // transform is under way.
    let target_paths: BTreeSet<PathBuf> = part_paths(req.d).into_iter().collect();
    let gone = info
        .exists
        .iter()
        .zip(part_paths_by_replica(req.s))
        .all(|(exists, paths)| {
            exists
                .iter()
                .zip(paths)
                .all(|(&e, p)| !e || target_paths.contains(&p))
        });
    let health = inspect(&target);
    if !((ours || gone) && health.is_healthy()) {
        return Ok(None);
    }
    let plan = assemble(
        req.src,
        req.dst,
        Operation::Finish,
        health.pool_size.unwrap_or(0),
        master.poolset_uuid,
        info.mode,
        0,
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    Ok(Some((plan, target)))
}

fn broken(src: &Path, dst: &Path, why: &str) -> Error {
    refuse(
        src,
        dst,
        format!(
            "source poolset is broken: {why}; repair it with `poolsync sync {}` and run the transform again",
            src.display()
        ),
    )
}

fn plan_fresh<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    info: &SourceInfo,
    shape: &Shape,
    options: &TransformOptions,
) -> Result<(TransformPlan, OpenSet<S::File>), Error> {
    let (src, dst) = (req.src, req.dst);
    let (master, pool_size) = super::source_facts(src, dst, info, req.d)?;
    let poolset_uuid = master.poolset_uuid;
    let mut kept_part0 = BTreeMap::new();
    let mut kept_headers = BTreeMap::new();
    if req.hdr_change {
        for (t, s) in req.d2s.iter().enumerate() {
            let Some(s) = s else { continue };
            if let Some(h) = info
                .headers
                .get(*s)
                .and_then(|v| v.first())
                .cloned()
                .flatten()
            {
                kept_part0.insert(t, h.uuid);
                kept_headers.insert(t, h);
            }
        }
    }
    let facts = Facts {
        master,
        poolset_uuid,
        pool_size,
        mode: info.mode,
        kept_part0,
        kept_headers,
    };
    let mut discard = Vec::new();
    if let Some(found) = &req.journal {
        discard = stale_files(storage, src, dst, found, poolset_uuid)?;
    }
    build(storage, req, info, shape, &facts, false, discard, options)
}

fn plan_resume<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    found: &Found,
    info: &SourceInfo,
    shape: &Shape,
    why: &str,
    options: &TransformOptions,
) -> Result<(TransformPlan, OpenSet<S::File>), Error> {
    let (src, dst) = (req.src, req.dst);
    let jerr = |reason: String| Error::Journal {
        path: found.path.clone(),
        line: 0,
        reason,
    };
    let j = found
        .journal
        .as_ref()
        .ok_or_else(|| jerr("it does not parse".to_string()))?;
    if j.source_crc != set_crc(req.s) || j.target_crc != set_crc(req.d) {
        return Err(refuse(
            src,
            dst,
            format!(
                "{} records an interrupted transform of these pool set files, but they have changed since it began; put back the pool set files it was started with and run the same transform again",
                found.path.display()
            ),
        ));
    }
    let master = unhex(&j.master_header)
        .and_then(|b| PoolHdr::decode(&b).ok())
        .filter(|h| h.checksum_ok())
        .ok_or_else(|| jerr("master_header is not a valid pool header".to_string()))?;
    let poolset_uuid = master.poolset_uuid;
    if poolset_uuid.to_canonical() != j.poolset_uuid {
        return Err(jerr(
            "poolset_uuid differs from the master header's".to_string(),
        ));
    }
    // The target may already be complete: only the clean-up is left.
    let target = open(storage, dst, Access::ReadOnly)?;
    let health = inspect(&target);
    let target_master = target.part(0, 0).and_then(|p| p.header());
    if health.is_healthy() && target_master.is_some_and(|h| h.poolset_uuid == poolset_uuid) {
        drop(target);
        return plan_cleanup(storage, req, found, info, poolset_uuid, j, options);
    }
    drop(target);
    // Otherwise the data source must be intact.
    if let Some(temp) = found.temporary() {
        match read_temp_header(storage, &temp) {
            Ok(TempState::Ours {
                hdr,
                complete: true,
            }) if hdr.poolset_uuid == poolset_uuid => {}
            _ => {
                return Err(refuse(
                    src,
                    dst,
                    format!(
                        "source poolset is broken ({why}) and the temporary copy {} of the interrupted transform is not complete, so the transform cannot be resumed; repair the source with `poolsync sync {}` and run the transform again",
                        temp.display(),
                        src.display()
                    ),
                ))
            }
        }
    }
    // The part 0 headers kept by the first run are kept again.
    let mut kept_part0 = BTreeMap::new();
    let mut kept_headers = BTreeMap::new();
    for (r, text) in &j.kept_headers {
        let hdr = r
            .parse::<usize>()
            .ok()
            .zip(unhex(text).and_then(|b| PoolHdr::decode(&b).ok()))
            .filter(|(_, h)| h.checksum_ok() && h.poolset_uuid == poolset_uuid)
            .ok_or_else(|| jerr(format!("kept_headers.{r} is not a valid pool header")))?;
        kept_part0.insert(hdr.0, hdr.1.uuid);
        kept_headers.insert(hdr.0, hdr.1);
    }
    let facts = Facts {
        master,
        poolset_uuid,
        pool_size: j.pool_size,
        mode: j.mode,
        kept_part0,
        kept_headers,
    };
    build(storage, req, info, shape, &facts, true, Vec::new(), options)
}

/// Only deletions are left: the temporary copy, old parts no replica uses
/// and the journal.
fn plan_cleanup<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    found: &Found,
    info: &SourceInfo,
    poolset_uuid: RawUuid,
    j: &Journal,
    options: &TransformOptions,
) -> Result<(TransformPlan, OpenSet<S::File>), Error> {
    let (src, dst) = (req.src, req.dst);
    let remove = unused_old_parts(req, info, poolset_uuid)?;
    let access = if options.dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let target = open(storage, dst, access)?;
    let master = target
        .part(0, 0)
        .and_then(|p| p.header())
        .cloned()
        .ok_or_else(|| refuse(src, dst, "the target's master has no pool header"))?;
    let mut plan = assemble(
        src,
        dst,
        Operation::Finish,
        j.pool_size,
        poolset_uuid,
        j.mode,
        0,
        Vec::new(),
        Vec::new(),
        remove,
    );
    let temp = found
        .temporary()
        .filter(|t| storage.stat(t).ok().flatten().is_some());
    plan.staging = Some(Staging {
        journal: found.path.clone(),
        temporary: temp.map(|path| TempCopy {
            path,
            size: 0,
            complete: true,
        }),
        data_from: DataFrom::Temporary,
        rewritten: Vec::new(),
        resumed: true,
        master_header: master.encode_raw().to_vec(),
        kept_headers: BTreeMap::new(),
        invalidate: Vec::new(),
    });
    Ok((plan, target))
}

/// The source parts that no target replica uses, each proven to carry the
/// pool set UUID (they are never written before the clean-up).
fn unused_old_parts(
    req: &Request<'_>,
    info: &SourceInfo,
    poolset_uuid: RawUuid,
) -> Result<Vec<RemovedPart>, Error> {
    let target_paths: BTreeSet<PathBuf> = part_paths(req.d).into_iter().collect();
    // A part the target reuses is not deleted, and once it is recreated it
    // no longer carries the pool set UUID: leave it out of the proof.
    let deleted = SourceInfo {
        healthy: Ok(()),
        pool_size: info.pool_size,
        master: None,
        mode: info.mode,
        headers: info.headers.clone(),
        exists: info
            .exists
            .iter()
            .zip(part_paths_by_replica(req.s))
            .map(|(exists, paths)| {
                exists
                    .iter()
                    .zip(paths)
                    .map(|(&e, p)| e && !target_paths.contains(&p))
                    .collect()
            })
            .collect(),
    };
    let mut remove = Vec::new();
    for &r in req.removed {
        remove.extend(owned_parts(
            req.src,
            req.dst,
            req.s,
            r,
            &deleted,
            poolset_uuid,
        )?);
    }
    Ok(remove)
}

/// The part paths of each replica of `set` (none for a remote one).
fn part_paths_by_replica(set: &PoolSet) -> Vec<Vec<PathBuf>> {
    set.replicas
        .iter()
        .map(|r| match r {
            Replica::Local { parts, .. } => parts.iter().map(|p| PathBuf::from(&p.path)).collect(),
            Replica::Remote { .. } => Vec::new(),
        })
        .collect()
}

/// The part paths of `set` whose files carry a header of their own.
fn source_header_paths(set: &PoolSet) -> BTreeSet<PathBuf> {
    part_paths_by_replica(set)
        .into_iter()
        .enumerate()
        .flat_map(|(r, paths)| paths.into_iter().take(set.nhdrs(r)))
        .collect()
}

fn part_paths(set: &PoolSet) -> Vec<PathBuf> {
    set.replicas
        .iter()
        .filter_map(super::replica_key)
        .flatten()
        .map(|(p, _)| PathBuf::from(p))
        .collect()
}

/// The plan of the rewrite, shared by a first run and a resumed one.
#[allow(clippy::too_many_arguments)]
fn build<S: Storage>(
    storage: &S,
    req: &Request<'_>,
    info: &SourceInfo,
    shape: &Shape,
    facts: &Facts,
    resumed: bool,
    discard: Vec<PathBuf>,
    options: &TransformOptions,
) -> Result<(TransformPlan, OpenSet<S::File>), Error> {
    let (src, dst) = (req.src, req.dst);
    let source_paths: BTreeSet<PathBuf> = part_paths(req.s).into_iter().collect();
    let source_uuids: BTreeSet<RawUuid> = info
        .headers
        .iter()
        .flatten()
        .flatten()
        .map(|h| h.uuid)
        .collect();
    let remove = unused_old_parts(req, info, facts.poolset_uuid)?;
    // A journal of this very transform (of these pool set files) proves
    // which files it was creating, whether this run resumes it or, the
    // source being healthy, starts afresh.
    let journaled = resumed || req.journal.as_ref().is_some_and(|f| f.records(req));

    // Planned read-only: the parts are shared with the source, which the
    // execution opens (and locks) on its own first.
    let mut target = open(storage, dst, Access::ReadOnly)?;
    let mut create = Vec::new();
    let mut uuids: Vec<Vec<RawUuid>> = Vec::with_capacity(target.replicas.len());
    for rep in &target.replicas {
        let rewritten = shape.rewritten.contains(&rep.index);
        let mut v = Vec::with_capacity(rep.nhdrs);
        for part in &rep.parts {
            if rewritten {
                let exists = part.meta.is_some();
                if exists && !source_paths.contains(&part.path) {
                    prove_ours(dst, part, facts.poolset_uuid, &source_uuids, journaled)?;
                }
                create.push(NewPart {
                    replica: rep.index,
                    part: part.index,
                    path: part.path.clone(),
                    size: part.configured_size,
                    replace: exists,
                    header: None,
                });
            }
            if part.index >= rep.nhdrs {
                continue;
            }
            if rewritten {
                let kept = (part.index == 0)
                    .then(|| facts.kept_part0.get(&rep.index).copied())
                    .flatten();
                v.push(kept.unwrap_or_else(|| options.uuids.generate(rep.index, part.index)));
            } else {
                let h = part.header().ok_or_else(|| {
                    refuse(src, dst, format!("{}: no pool header", part.path.display()))
                })?;
                v.push(h.uuid);
            }
        }
        uuids.push(v);
    }
    if let Some(stable) = shape.stable {
        let ok = target
            .replica(stable)
            .is_some_and(|r| r.parts.iter().all(|p| p.status == PartStatus::Ok));
        if !ok {
            return Err(broken(
                src,
                dst,
                &format!("target replica {stable}, which the data is read from, is not intact"),
            ));
        }
    }

    let n = target.replicas.len();
    // Every replica moves onto new files: the source stays intact until
    // the clean-up and is read directly.
    let direct = shape.stable.is_none()
        && !req.hdr_change
        && create.iter().all(|c| !source_paths.contains(&c.path));
    if direct && resumed {
        return Err(broken(
            src,
            dst,
            "the interrupted transform reads its data from the source, which is no longer healthy",
        ));
    }
    let temp = if shape.stable.is_none() && !direct {
        let master_part0 = req
            .s
            .replicas
            .first()
            .and_then(super::replica_key)
            .and_then(|k| k.first().map(|(p, _)| PathBuf::from(p)))
            .ok_or_else(|| refuse(src, dst, "the source has no master part"))?;
        let path = req
            .journal
            .as_ref()
            .and_then(Found::temporary)
            .filter(|_| resumed)
            .unwrap_or_else(|| temp_path(&master_part0));
        if source_paths.contains(&path) || part_paths(req.d).contains(&path) {
            return Err(refuse(
                src,
                dst,
                format!(
                    "{} is a part of a pool set; it cannot hold the temporary copy",
                    path.display()
                ),
            ));
        }
        let exists = storage.stat(&path)?.is_some();
        if exists && !resumed && !discard.contains(&path) {
            let expected = temp_header(&facts.master);
            prove_temp_ours(
                storage,
                src,
                dst,
                &path,
                facts.poolset_uuid,
                Some(&expected),
            )?;
        }
        let size = facts.pool_size.div_ceil(PAGE) * PAGE;
        Some(TempCopy {
            path,
            size,
            complete: resumed,
        })
    } else {
        None
    };

    let headers = staged_headers(&target, &uuids, shape, facts).map_err(|e| refuse(src, dst, e))?;

    // The temporary copy joins the target as one more replica, read only.
    let data_index = match (&temp, shape.stable) {
        (Some(t), _) => {
            push_temp_replica(&mut target, n, t, None);
            n
        }
        (None, Some(stable)) => stable,
        (None, None) => {
            push_source_replica(&mut target, n, req.s);
            n
        }
    };
    // The source parts that have a header of their own are recreated, and
    // the directories synced, before the others: a recreated part without
    // a header (SINGLEHDR) is then never found beside its replica's old
    // part 0, where it would pass for a part of a healthy source (whose
    // journal and temporary copy would be discarded as stale).
    let with_header = source_header_paths(req.s);
    let (first, rest): (Vec<&NewPart>, Vec<&NewPart>) =
        create.iter().partition(|c| with_header.contains(&c.path));
    let mut steps = Vec::new();
    for group in [first, rest] {
        for c in &group {
            steps.push(Step::CreatePart {
                replica: c.replica,
                part: c.part,
                path: c.path.clone(),
                size: c.size,
                replace: c.replace,
            });
        }
        push_dir_syncs(&mut steps, group.iter().map(|c| &c.path));
    }
    let paths: Vec<PathBuf> = create.iter().map(|c| c.path.clone()).collect();
    if facts.pool_size > PAGE {
        for &r in &shape.rewritten {
            push_data_steps(
                &mut steps,
                &target,
                DataPurpose::Rebuild,
                (data_index, r),
                LogicalRange::from_bounds(PAGE, facts.pool_size),
            );
        }
    }
    for c in &create {
        steps.push(Step::SetMode {
            replica: c.replica,
            part: c.part,
            path: c.path.clone(),
            mode: facts.mode,
        });
    }
    push_dir_syncs(&mut steps, paths.iter());
    steps.extend(headers.into_iter().map(Step::WriteHeader));

    check_space(storage, src, dst, &create, temp.as_ref(), &discard)?;

    let operation = if req.hdr_change {
        if req.d.options.single_hdr {
            Operation::AddSingleHdr
        } else {
            Operation::RemoveSingleHdr
        }
    } else {
        Operation::Reshape {
            added: req.added.to_vec(),
            removed: req.removed.to_vec(),
        }
    };
    let bytes_to_stage = temp
        .as_ref()
        .filter(|t| !t.complete)
        .map_or(0, |_| facts.pool_size.saturating_sub(PAGE));
    let mut plan = assemble(
        src,
        dst,
        operation,
        facts.pool_size,
        facts.poolset_uuid,
        facts.mode,
        data_index,
        Vec::new(),
        steps,
        remove,
    );
    plan.totals.parts_to_create = create.len() as u64;
    plan.totals.bytes_to_allocate = create.iter().map(|c| c.size).sum::<u64>()
        + temp.as_ref().filter(|t| !t.complete).map_or(0, |t| t.size);
    plan.totals.bytes_to_stage = bytes_to_stage;
    plan.totals.parts_to_remove = plan.remove.len() as u64;
    plan.discard = discard;
    let recreated: BTreeSet<PathBuf> = create.iter().map(|c| c.path.clone()).collect();
    let mut invalidate = Vec::new();
    for (r, paths) in part_paths_by_replica(req.s).iter().enumerate() {
        if !paths.iter().any(|p| recreated.contains(p)) {
            continue;
        }
        for (p, path) in paths.iter().enumerate().take(req.s.nhdrs(r)) {
            let valid = info
                .headers
                .get(r)
                .and_then(|v| v.get(p))
                .cloned()
                .flatten()
                .is_some_and(|h| h.checksum_ok());
            if valid && !recreated.contains(path) {
                invalidate.push(path.clone());
            }
        }
    }
    plan.staging = Some(Staging {
        journal: journal_path(src),
        temporary: temp,
        data_from: match shape.stable {
            Some(replica) => DataFrom::Replica { replica },
            None if direct => DataFrom::Source,
            None => DataFrom::Temporary,
        },
        rewritten: shape.rewritten.clone(),
        resumed,
        master_header: facts.master.encode_raw().to_vec(),
        kept_headers: facts
            .kept_headers
            .iter()
            .map(|(&r, h)| (r, h.encode_raw().to_vec()))
            .collect(),
        invalidate,
    });
    Ok((plan, target))
}

/// A file at a path of a rewritten replica that is not a source part must
/// be ours. Without a journal that is a file an earlier, interrupted run
/// left (see [`super::prove_left_by_us`]). When the journal of this
/// transform is there (a resumed run, or a stale journal while the source
/// is healthy) it proves that the transform was creating these very files,
/// so a file whose header page is zero or unreadable (its allocation or
/// first write did not survive) is accepted too; one that carries another
/// pool set's UUID, or a source part's UUID, never is.
fn prove_ours<F: PartFile>(
    dst: &Path,
    part: &OpenPart<F>,
    poolset_uuid: RawUuid,
    source_uuids: &BTreeSet<RawUuid>,
    journaled: bool,
) -> Result<(), Error> {
    if journaled {
        let blank = match &part.header {
            HeaderState::Read(read) => read.hdr.is_zero(),
            HeaderState::Unreadable { .. } | HeaderState::NotRead | HeaderState::None => true,
        };
        let ours = part
            .header()
            .is_some_and(|h| h.poolset_uuid == poolset_uuid && !source_uuids.contains(&h.uuid));
        if blank || ours {
            return Ok(());
        }
    }
    super::prove_left_by_us(dst, part, poolset_uuid, source_uuids)
}

/// The headers of a staged transform: new ones for the parts of rewritten
/// replicas (a kept part 0 is its old header with new links and the new
/// `SINGLEHDR` bit), then the relinked headers of the replicas that stay.
fn staged_headers<F: PartFile>(
    target: &OpenSet<F>,
    uuids: &[Vec<RawUuid>],
    shape: &Shape,
    facts: &Facts,
) -> Result<Vec<HeaderStep>, String> {
    let single_hdr = target.set.options.single_hdr;
    // New headers take the source master's attributes, with the target's
    // SINGLEHDR setting (new_header only adds the bit).
    let mut master = facts.master.clone();
    master.features.incompat &= !FEAT_SINGLEHDR;
    let mut steps = header_steps(target, uuids, &shape.rewritten, &master, facts.poolset_uuid)?;
    for step in &mut steps {
        if step.part != 0 || step.kind != HeaderAction::New {
            continue;
        }
        let Some(old) = facts.kept_headers.get(&step.replica) else {
            continue;
        };
        let mut kept = old.clone();
        kept.set_links(&step.header.links());
        if single_hdr {
            kept.features.incompat |= FEAT_SINGLEHDR;
        } else {
            kept.features.incompat &= !FEAT_SINGLEHDR;
        }
        kept.checksum = kept.compute_checksum();
        step.header = kept;
        step.kind = HeaderAction::Relink;
        step.uuid_origin = UuidOrigin::Kept;
    }
    Ok(steps)
}

/// Appends the temporary copy to `set` as replica `index`: one part that
/// maps the address space one to one.
fn push_temp_replica<F>(set: &mut OpenSet<F>, index: usize, temp: &TempCopy, file: Option<F>) {
    set.replicas.push(OpenReplica {
        index,
        nhdrs: 1,
        extents: vec![Extent {
            part: 0,
            logical: 0,
            file_offset: 0,
            len: temp.size,
        }],
        net_size: temp.size,
        parts: vec![OpenPart {
            replica: index,
            index: 0,
            path: temp.path.clone(),
            line: 0,
            configured_size: temp.size,
            meta: None,
            status: PartStatus::Ok,
            file,
            header: HeaderState::NotRead,
        }],
    });
}

/// Appends replica 0 of the source set `s` to `set` as replica `index`,
/// without files (for planning; [`execute`] opens them).
fn push_source_replica<F>(set: &mut OpenSet<F>, index: usize, s: &PoolSet) {
    let extents = s.extents(0).unwrap_or_default();
    let parts: Vec<OpenPart<F>> = match s.replicas.first() {
        Some(Replica::Local { parts, .. }) => parts
            .iter()
            .enumerate()
            .map(|(p, part)| OpenPart {
                replica: index,
                index: p,
                path: PathBuf::from(&part.path),
                line: part.line,
                configured_size: match part.size {
                    poolsync_poolset::PartSize::Bytes(b) => b,
                    poolsync_poolset::PartSize::Auto => 0,
                },
                meta: None,
                status: PartStatus::Ok,
                file: None,
                header: HeaderState::NotRead,
            })
            .collect(),
        _ => Vec::new(),
    };
    set.replicas.push(OpenReplica {
        index,
        nhdrs: s.nhdrs(0),
        extents,
        net_size: s.replica_size(0).unwrap_or(0),
        parts,
    });
}

/// Free space for the recreated parts (less what the files they replace
/// hold) and the temporary copy.
fn check_space<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
    create: &[NewPart],
    temp: Option<&TempCopy>,
    discard: &[PathBuf],
) -> Result<(), Error> {
    let mut all = create.to_vec();
    // The journal is written first, beside the source pool set file.
    let journal = journal_path(src);
    all.push(NewPart {
        replica: usize::MAX,
        part: 0,
        replace: storage.stat(&journal)?.is_some(),
        path: journal,
        size: JOURNAL_RESERVE,
        header: None,
    });
    let staged = temp.is_some_and(|t| !t.complete);
    if let Some(t) = temp.filter(|t| !t.complete) {
        all.push(NewPart {
            replica: usize::MAX,
            part: 0,
            path: t.path.clone(),
            size: t.size,
            replace: discard.contains(&t.path) || storage.stat(&t.path)?.is_some(),
            header: None,
        });
    }
    let what = if staged {
        "the new parts and the temporary copy"
    } else {
        "the new parts"
    };
    check_free_space(storage, src, dst, &all, what)
}

/// Carries out a staged plan. `target` is the set [`plan`] returned; its
/// handles are released while the source is read into the temporary copy,
/// then it is opened again read-write.
pub(super) fn execute<S: Storage>(
    storage: &S,
    target: &mut OpenSet<S::File>,
    plan: &TransformPlan,
    staging: &Staging,
    options: &TransformOptions,
    progress: &dyn Progress,
) -> Result<TransformReport, Error> {
    let mut report = TransformReport::default();
    let sync_options = SyncOptions {
        threads: options.threads,
        stride: options.stride,
        uuids: options.uuids,
        ..SyncOptions::default()
    };
    let finishing = matches!(plan.operation, Operation::Finish);
    if !finishing {
        // Let go of the target: the source opens some of its parts, and
        // the journal reads both pool set files.
        target.release();
        if !staging.resumed {
            write_journal(storage, plan, staging)?;
        }
        if let Some(temp) = staging.temporary.as_ref().filter(|t| !t.complete) {
            stage(storage, plan, temp, &sync_options, progress)?;
        }
        for path in &staging.invalidate {
            invalidate_header(storage, path)?;
        }
        let mut reopened = open(storage, &plan.target, Access::ReadWrite)?;
        let n = reopened.replicas.len();
        if let Some(temp) = &staging.temporary {
            let file = storage.open(&temp.path, Access::ReadOnly)?;
            push_temp_replica(&mut reopened, n, temp, Some(file));
        }
        let reads_source = matches!(staging.data_from, DataFrom::Source);
        if reads_source {
            // Its parts are not the target's, so both sets can be open.
            let mut source = open(storage, &plan.source, Access::ReadOnly)?;
            let mut replica = source.replicas.swap_remove(0);
            replica.index = n;
            for part in &mut replica.parts {
                part.replica = n;
            }
            reopened.replicas.push(replica);
        }
        *target = reopened;
        report.parts_created = plan.totals.parts_to_create;
        report.sync = crate::sync::execute(storage, target, &plan.steps, &sync_options, progress)?;
        // The temporary copy's or the source's handles go before the files
        // are deleted.
        if staging.temporary.is_some() || reads_source {
            target.replicas.pop();
        }
    }
    let mut dirs = BTreeSet::new();
    let mut doomed: Vec<&Path> = plan.remove.iter().map(|r| r.path.as_path()).collect();
    if let Some(t) = &staging.temporary {
        doomed.push(&t.path);
    }
    for path in doomed {
        match storage.remove(path) {
            Ok(()) => {
                if plan.remove.iter().any(|r| r.path == path) {
                    report.parts_removed += 1;
                }
            }
            Err(e) if storage.stat(path).ok().flatten().is_none() => drop(e),
            Err(e) => return Err(e.into()),
        }
        dirs.insert(path.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    for dir in &dirs {
        storage.fsync_dir(dir)?;
    }
    // The journal goes last: until it is gone a re-run knows what to do.
    match storage.remove(&staging.journal) {
        Ok(()) => {}
        Err(e) if storage.stat(&staging.journal).ok().flatten().is_none() => drop(e),
        Err(e) => return Err(e.into()),
    }
    storage.fsync_parent(&staging.journal)?;
    Ok(report)
}

/// Inverts the checksum of the header of `path` and makes that durable,
/// unless the header is already not valid (a resumed run).
fn invalidate_header<S: Storage>(storage: &S, path: &Path) -> Result<(), Error> {
    let file = storage.open(path, Access::ReadWrite)?;
    let mut page = vec![0u8; POOL_HDR_SIZE];
    file.read_at(0, &mut page)?;
    let Ok(hdr) = PoolHdr::decode(&page) else {
        return Ok(());
    };
    if !hdr.checksum_ok() {
        return Ok(());
    }
    let off = POOL_HDR_CSUM_OFF as u64;
    file.write_at(off, &(!hdr.checksum).to_le_bytes())?;
    file.flush(off, 8)?;
    file.fence()?;
    Ok(())
}

/// Writes the journal and makes it durable.
fn write_journal<S: Storage>(
    storage: &S,
    plan: &TransformPlan,
    staging: &Staging,
) -> Result<(), Error> {
    // Both set files are read again here: what the journal records must be
    // what the run is carrying out.
    let s = super::parse_set(storage, &plan.source)?;
    let d = super::parse_set(storage, &plan.target)?;
    let master = &staging.master_header;
    let journal = Journal {
        version: JOURNAL_VERSION,
        source: absolute(&plan.source).to_string_lossy().into_owned(),
        target: absolute(&plan.target).to_string_lossy().into_owned(),
        source_crc: set_crc(&s),
        target_crc: set_crc(&d),
        poolset_uuid: plan.poolset_uuid.clone(),
        pool_size: plan.pool_size,
        mode: plan.mode,
        temporary: staging
            .temporary
            .as_ref()
            .map(|t| t.path.to_string_lossy().into_owned()),
        master_header: hex(master),
        kept_headers: staging
            .kept_headers
            .iter()
            .map(|(r, bytes)| (r.to_string(), hex(bytes)))
            .collect(),
    };
    let mut text = String::from(
        "# poolsync: a transform of the pool set below is under way (or was interrupted).\n\
         # Run the same `poolsync transform` again to finish it; do not edit or remove this file.\n",
    );
    text.push_str(&toml::to_string(&journal).map_err(|e| Error::Journal {
        path: staging.journal.clone(),
        line: 0,
        reason: e.to_string(),
    })?);
    let bytes = text.into_bytes();
    let file = storage.create(&staging.journal, bytes.len() as u64)?;
    file.write_at(0, &bytes)?;
    file.flush(0, bytes.len() as u64)?;
    file.fence()?;
    drop(file);
    storage.set_mode(&staging.journal, 0o600)?;
    storage.fsync_parent(&staging.journal)?;
    Ok(())
}

/// Copies the source's address space into the temporary copy, then writes
/// its header: the source master's attributes as a single-file pool.
fn stage<S: Storage>(
    storage: &S,
    plan: &TransformPlan,
    temp: &TempCopy,
    sync_options: &SyncOptions,
    progress: &dyn Progress,
) -> Result<(), Error> {
    if storage.stat(&temp.path)?.is_some() {
        storage.remove(&temp.path)?;
    }
    let file = storage.create(&temp.path, temp.size)?;
    file.fence()?;
    storage.fsync_parent(&temp.path)?;
    let mut source = open(storage, &plan.source, Access::ReadWrite)?;
    let master = source
        .part(0, 0)
        .and_then(|p| p.header())
        .cloned()
        .ok_or_else(|| Error::InvalidRequest {
            path: plan.source.clone(),
            reason: "replica 0 part 0 has no readable pool header".to_string(),
        })?;
    let n = source.replicas.len();
    push_temp_replica(&mut source, n, temp, Some(file));
    let mut steps = Vec::new();
    if plan.pool_size > PAGE {
        push_data_steps(
            &mut steps,
            &source,
            DataPurpose::Rebuild,
            (0, n),
            LogicalRange::from_bounds(PAGE, plan.pool_size),
        );
    }
    let copy = Plan {
        path: plan.source.clone(),
        source: 0,
        pool_size: plan.pool_size,
        poolset_uuid: plan.poolset_uuid.clone(),
        mode: plan.mode,
        bad_blocks: Default::default(),
        alternates: Vec::new(),
        replicas: Vec::new(),
        totals: crate::sync::plan::totals(&steps),
        steps,
    };
    crate::sync::execute(storage, &mut source, &copy, sync_options, progress)?;
    // Complete: the header makes the copy a single-file pool of its own.
    let hdr = temp_header(&master);
    let file = source
        .replicas
        .last()
        .and_then(|r| r.parts.first())
        .and_then(|p| p.file.as_ref())
        .ok_or_else(|| Error::InvalidRequest {
            path: temp.path.clone(),
            reason: "the temporary copy is not open".to_string(),
        })?;
    file.write_at(0, &hdr.encode_raw())?;
    file.flush(0, POOL_HDR_SIZE as u64)?;
    file.fence()?;
    storage.set_mode(&temp.path, 0o600)?;
    storage.fsync_parent(&temp.path)?;
    Ok(())
}
