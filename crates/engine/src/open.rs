//! Opening a pool set: load the path, then resolve, stat, open and lock
//! every part and read the pool header of every header-carrying part.
//!
//! Opening records *facts* (a part is missing, unreadable, of the wrong size,
//! its header is short) instead of failing, because [`crate::inspect`] and
//! [`crate::check`] must judge them. Three things are refused at once:
//! a part locked by another process (the pool is in use, as libpmemobj
//! refuses it), and pool set shapes poolsync does not handle yet (remote
//! replicas, directory pool sets). Device DAX parts (docs/format.md §25)
//! are opened like files; [`crate::load`] has resolved their `AUTO` sizes,
//! and a part's size is its device's.
//!
//! [`OpenSet::read_logical`] is the one place that maps a replica's logical
//! offsets onto part files (through [`poolsync_poolset::map_range`]).

use std::fmt;
use std::path::{Path, PathBuf};

use poolsync_header::{PoolHdr, POOL_HDR_SIZE};
use poolsync_pmem::{Access, FileKind, PartFile, Storage};
use poolsync_poolset::{Extent, PartSize, PoolSet, Replica};
use serde::Serialize;

use crate::load::{load, Loaded};
use crate::Error;

/// Size of the header page read from every header-carrying part.
const HDR_LEN: u64 = POOL_HDR_SIZE as u64;

/// A pool set with every local part opened (where possible) and locked.
#[derive(Debug)]
pub struct OpenSet<F> {
    /// The path the user gave.
    pub path: PathBuf,
    /// `true` for a `*.set` file, `false` for a single-file pool.
    pub is_poolset: bool,
    /// The parsed (or synthesised) pool set.
    pub set: PoolSet,
    /// How the parts were opened.
    pub access: Access,
    /// The local replicas, in set order (numbered among themselves: the
    /// set an application opens lists only them).
    pub replicas: Vec<OpenReplica<F>>,
    /// The remote replicas (`REPLICA host set`), which [`open`] does not
    /// reach: `set` holds only the local replicas, and these lines apart
    /// (see [`crate::remote`]).
    pub remotes: Vec<poolsync_poolset::RemoteLine>,
    /// The pool set file, kept open so that its lock is held (`None` for a
    /// single-file pool, whose one file is the part itself).
    set_file: Option<F>,
}

/// One local replica: also the local endpoint (`crate::endpoint`).
#[derive(Debug)]
pub struct OpenReplica<F> {
    /// Replica index (0 = master), or the endpoint's number in a plan.
    pub index: usize,
    /// How messages name it (`replica 1`, `the temporary copy …`).
    pub label: String,
    /// Header-carrying parts: all parts, 1 with SINGLEHDR, 0 with NOHDRS.
    pub nhdrs: usize,
    /// Where each part lies in the replica's logical address space.
    pub extents: Vec<Extent>,
    /// Net size of the replica from the configured part sizes (docs/format.md §14.1).
    pub net_size: u64,
    /// The parts, in set order.
    pub parts: Vec<OpenPart<F>>,
}

/// One part file and what opening it found.
#[derive(Debug)]
pub struct OpenPart<F> {
    /// Replica index.
    pub replica: usize,
    /// Part index within the replica.
    pub index: usize,
    /// The path as written in the pool set (or given for a single file).
    pub path: PathBuf,
    /// Line of the pool set file the part comes from (0 for a single file).
    pub line: usize,
    /// The size the pool set configures.
    pub configured_size: u64,
    /// `stat` of the path, when it exists and could be stat-ed.
    pub meta: Option<poolsync_pmem::Meta>,
    /// What opening the part found.
    pub status: PartStatus,
    /// The open, locked file, when `status` allowed opening it.
    pub file: Option<F>,
    /// The pool header of a header-carrying part.
    pub header: HeaderState,
    /// The Device DAX the part is, with the size and alignment sysfs
    /// reports (docs/format.md §25); `None` for a file.
    pub device: Option<poolsync_pmem::DevDax>,
    /// Something was flushed through this handle since its last fence.
    pub(crate) flushed: std::sync::atomic::AtomicBool,
    /// For a missing part whose path is a symbolic link to nothing: the
    /// file the link names (relative targets resolved against the link's
    /// directory), which is where the part is created.
    pub link_target: Option<PathBuf>,
}

/// What opening one part found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartStatus {
    /// Open, locked and of exactly the configured size.
    Ok,
    /// The path does not exist.
    Missing,
    /// The path exists but cannot be stat-ed or opened, or is not a regular file.
    Inaccessible {
        /// What the system said.
        reason: String,
    },
    /// Open and locked, but its size differs from the configured size.
    SizeMismatch {
        /// The file's size.
        actual: u64,
        /// The size the pool set configures.
        configured: u64,
    },
}

impl fmt::Display for PartStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartStatus::Ok => f.write_str("ok"),
            PartStatus::Missing => f.write_str("no such file or directory"),
            PartStatus::Inaccessible { reason } => write!(f, "cannot be opened: {reason}"),
            PartStatus::SizeMismatch { actual, configured } => {
                write!(
                    f,
                    "file size does not match config: {actual} != {configured}"
                )
            }
        }
    }
}

/// The header page of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderState {
    /// The part carries no header (SINGLEHDR or NOHDRS, part ≥ 1).
    None,
    /// The part should carry a header but was not opened.
    NotRead,
    /// Reading the header page failed (for example a file shorter than 4096 bytes).
    Unreadable {
        /// Why.
        reason: String,
    },
    /// The 4096 header bytes, decoded without judgement.
    Read(Box<ReadHeader>),
}

/// A header page as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadHeader {
    /// The raw 4096 bytes.
    pub raw: Vec<u8>,
    /// The decoded fields.
    pub hdr: PoolHdr,
}

impl<F> OpenPart<F> {
    /// `true` when the part is open with the configured size.
    pub fn is_ok(&self) -> bool {
        self.status == PartStatus::Ok
    }

    /// The part's size on storage: the device's for a Device DAX (whose
    /// `st_size` is 0), else the file's, when it could be stat-ed.
    pub fn actual_size(&self) -> Option<u64> {
        match self.device {
            Some(dev) => Some(dev.size),
            None => self.meta.map(|m| m.len),
        }
    }

    /// The decoded header, when it could be read.
    pub fn header(&self) -> Option<&PoolHdr> {
        match &self.header {
            HeaderState::Read(h) => Some(&h.hdr),
            _ => None,
        }
    }

    /// The header page as read, or why there is none to judge: the
    /// reason a command that needs every header refuses the part.
    pub(crate) fn read_header(&self) -> Result<&ReadHeader, String> {
        match &self.header {
            HeaderState::Read(h) => Ok(h),
            HeaderState::Unreadable { reason } => Err(reason.clone()),
            HeaderState::NotRead | HeaderState::None => Err("the part is not open".to_string()),
        }
    }

    /// The raw header bytes, when they could be read.
    pub fn header_bytes(&self) -> Option<&[u8]> {
        match &self.header {
            HeaderState::Read(h) => Some(&h.raw),
            _ => None,
        }
    }

    /// `replica R part P (PATH)`, the way messages name a part.
    pub fn name(&self) -> String {
        format!(
            "replica {} part {} ({})",
            self.replica,
            self.index,
            self.path.display()
        )
    }
}

/// Opens `path` (a pool set file or a single-file pool) with `access` and
/// every local part of every replica (docs/format.md §16.1, §16.2).
///
/// Missing, unreadable or wrongly sized parts are recorded in
/// [`OpenPart::status`]; a part locked by another process is an error
/// ([`poolsync_pmem::Error::Locked`] names it), as libpmemobj refuses a pool
/// in use.
pub fn open<S: Storage>(
    storage: &S,
    path: &Path,
    access: Access,
) -> Result<OpenSet<S::File>, Error> {
    let Loaded {
        path,
        set,
        is_poolset,
        file,
        devices,
    } = load(storage, path, access)?;
    let (set, remotes) = set.split_remote();
    refuse_unsupported(&path, &set)?;
    if is_poolset {
        refuse_aliases(storage, &path, &set)?;
    }
    let mut set_file = Some(file);
    let mut replicas = Vec::with_capacity(set.replicas.len());
    for (r, replica) in set.replicas.iter().enumerate() {
        let Replica::Local { parts, .. } = replica else {
            // `split_remote` took every remote replica out.
            continue;
        };
        let nhdrs = set.nhdrs(r);
        // `None` only for parts too small to map (k ≥ 1 below one page):
        // such a replica has no address space to read, which inspect reports.
        let extents = set.extents(r).unwrap_or_default();
        let net_size = set.replica_size(r).unwrap_or(0);
        let mut open_parts = Vec::with_capacity(parts.len());
        for (p, part) in parts.iter().enumerate() {
            let PartSize::Bytes(configured_size) = part.size else {
                return Err(auto_unsupported(&path, part.line));
            };
            let part_path = PathBuf::from(&part.path);
            let device = devices.get(r).and_then(|d| d.get(p)).copied().flatten();
            let mut open_part = if is_poolset {
                open_part(storage, &path, part.line, &part_path, device, access)?
            } else {
                // The single file is already open and locked by `load`; a
                // second flock on it from this process would fail.
                let meta = storage.stat(&part_path).ok().flatten();
                Opened {
                    meta,
                    status: PartStatus::Ok,
                    file: set_file.take(),
                    link_target: None,
                }
            };
            if let (PartStatus::Ok, Some(meta)) = (&open_part.status, &open_part.meta) {
                let actual = device.map_or(meta.len, |d| d.size);
                if actual != configured_size {
                    open_part.status = PartStatus::SizeMismatch {
                        actual,
                        configured: configured_size,
                    };
                }
            }
            let header = if p >= nhdrs {
                HeaderState::None
            } else {
                match &open_part.file {
                    Some(f) => read_header(f),
                    None => HeaderState::NotRead,
                }
            };
            open_parts.push(OpenPart {
                replica: r,
                index: p,
                path: part_path,
                line: part.line,
                configured_size,
                meta: open_part.meta,
                status: open_part.status,
                file: open_part.file,
                header,
                device,
                flushed: Default::default(),
                link_target: open_part.link_target,
            });
        }
        replicas.push(OpenReplica {
            index: r,
            label: format!("replica {r}"),
            nhdrs,
            extents,
            net_size,
            parts: open_parts,
        });
    }
    Ok(OpenSet {
        path,
        is_poolset,
        set,
        access,
        replicas,
        remotes,
        set_file,
    })
}

/// Refuses a pool set that names one file twice: a part listed twice, a
/// hard or symbolic link to another part, or the pool set file itself
/// (each would otherwise fail as "in use", its own lock held by us).
fn refuse_aliases<S: Storage>(storage: &S, path: &Path, set: &PoolSet) -> Result<(), Error> {
    let mut seen: Vec<((u64, u64), usize, PathBuf)> = Vec::new();
    if let Ok(Some(meta)) = storage.stat(path) {
        seen.push(((meta.dev, meta.ino), 0, path.to_path_buf()));
    }
    for replica in &set.replicas {
        let Replica::Local { parts, .. } = replica else {
            continue;
        };
        for part in parts {
            let part_path = PathBuf::from(&part.path);
            let Ok(Some(meta)) = storage.stat(&part_path) else {
                continue;
            };
            let id = (meta.dev, meta.ino);
            if let Some((_, line, first)) = seen.iter().find(|(other, _, _)| *other == id) {
                return Err(Error::SameFileTwice {
                    set: path.to_path_buf(),
                    line: part.line,
                    path: part_path,
                    first_line: *line,
                    first: first.clone(),
                });
            }
            seen.push((id, part.line, part_path));
        }
    }
    Ok(())
}

/// What opening one part produced, before the size check.
struct Opened<F> {
    meta: Option<poolsync_pmem::Meta>,
    status: PartStatus,
    file: Option<F>,
    link_target: Option<PathBuf>,
}

fn open_part<S: Storage>(
    storage: &S,
    set_path: &Path,
    line: usize,
    path: &Path,
    device: Option<poolsync_pmem::DevDax>,
    access: Access,
) -> Result<Opened<S::File>, Error> {
    let meta = match storage.stat(path) {
        Ok(Some(meta)) => meta,
        Ok(None) => {
            // A symbolic link to nothing is missing too; the part is
            // created where the link points.
            let link_target = storage
                .read_link(path)
                .ok()
                .flatten()
                .map(|t| path.parent().map_or_else(|| t.clone(), |dir| dir.join(&t)));
            return Ok(Opened {
                meta: None,
                status: PartStatus::Missing,
                file: None,
                link_target,
            });
        }
        Err(e) => {
            return Ok(Opened {
                meta: None,
                status: PartStatus::Inaccessible {
                    reason: storage_reason(&e),
                },
                file: None,
                link_target: None,
            })
        }
    };
    match meta.kind {
        FileKind::Regular => {}
        FileKind::Directory => {
            return Err(Error::Unsupported {
                set: set_path.to_path_buf(),
                line,
                what: format!("{} is a directory: directory pool sets are", path.display()),
            })
        }
        FileKind::CharDevice if device.is_some() => {}
        FileKind::CharDevice => {
            return Err(Error::DeviceDaxPart {
                set: set_path.to_path_buf(),
                line,
                part: path.to_path_buf(),
                reason: "a character device that is not a Device DAX cannot be a part".to_string(),
            })
        }
        FileKind::Other => {
            return Ok(Opened {
                meta: Some(meta),
                status: PartStatus::Inaccessible {
                    reason: "not a regular file".to_string(),
                },
                file: None,
                link_target: None,
            })
        }
    }
    match storage.open(path, access) {
        Ok(file) => Ok(Opened {
            meta: Some(meta),
            status: PartStatus::Ok,
            file: Some(file),
            link_target: None,
        }),
        Err(e @ poolsync_pmem::Error::Locked { .. }) => Err(Error::Storage(e)),
        Err(e) => Ok(Opened {
            meta: Some(meta),
            status: PartStatus::Inaccessible {
                reason: storage_reason(&e),
            },
            file: None,
            link_target: None,
        }),
    }
}

/// The system's reason without the path (the part is named by the caller).
fn storage_reason(e: &poolsync_pmem::Error) -> String {
    match e {
        poolsync_pmem::Error::Io { os: source, .. }
        | poolsync_pmem::Error::IoAt { os: source, .. } => {
            let text = source.to_string();
            // "Permission denied (os error 13)" reads better without the number.
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
        other => other.to_string(),
    }
}

fn read_header<F: PartFile>(file: &F) -> HeaderState {
    let len = match file.len() {
        Ok(len) => len,
        Err(e) => {
            return HeaderState::Unreadable {
                reason: storage_reason(&e),
            }
        }
    };
    if len < HDR_LEN {
        return HeaderState::Unreadable {
            reason: format!(
                "the file is {len} bytes, too short to hold a {HDR_LEN}-byte pool header"
            ),
        };
    }
    let mut raw = vec![0u8; POOL_HDR_SIZE];
    if let Err(e) = file.read_at(0, &mut raw) {
        return HeaderState::Unreadable {
            reason: storage_reason(&e),
        };
    }
    match PoolHdr::decode(&raw) {
        Ok(hdr) => HeaderState::Read(Box::new(ReadHeader { raw, hdr })),
        Err(e) => HeaderState::Unreadable {
            reason: e.to_string(),
        },
    }
}

fn auto_unsupported(path: &Path, line: usize) -> Error {
    Error::Unsupported {
        set: path.to_path_buf(),
        line,
        what: "AUTO part sizes (Device DAX) are".to_string(),
    }
}

/// Refuses NOHDRS before any part is opened.
fn refuse_unsupported(path: &Path, set: &PoolSet) -> Result<(), Error> {
    if set.options.no_hdrs {
        return Err(Error::NoHdrs {
            set: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Reads the header page of every open header-carrying part again (after
/// header writes).
pub(crate) fn reread_headers<F: PartFile>(set: &mut OpenSet<F>) {
    for part in set.replicas.iter_mut().flat_map(|r| r.parts.iter_mut()) {
        if matches!(part.header, HeaderState::None) {
            continue;
        }
        part.header = match &part.file {
            Some(f) => read_header(f),
            None => HeaderState::NotRead,
        };
    }
}

impl<F> OpenReplica<F> {
    /// A replica of one file that maps the logical address space
    /// `[0, size)` one to one (a temporary copy of a pool), numbered
    /// `index` and named `label` in messages; `file` is `None` while it is
    /// only planned.
    pub fn single_file(
        index: usize,
        label: String,
        path: PathBuf,
        size: u64,
        file: Option<F>,
    ) -> Self {
        OpenReplica {
            index,
            label,
            nhdrs: 1,
            extents: vec![Extent {
                part: 0,
                logical: 0,
                file_offset: 0,
                len: size,
            }],
            net_size: size,
            parts: vec![OpenPart {
                replica: index,
                index: 0,
                path,
                line: 0,
                configured_size: size,
                meta: None,
                status: PartStatus::Ok,
                file,
                header: HeaderState::NotRead,
                device: None,
                flushed: Default::default(),
                link_target: None,
            }],
        }
    }

    /// Replica `r` of the parsed pool set `set`, without opening anything
    /// (for planning: where its ranges lie), numbered `index` and named
    /// `label`.
    pub fn unopened(set: &PoolSet, r: usize, index: usize, label: String) -> Self {
        let parts = match set.replicas.get(r) {
            Some(Replica::Local { parts, .. }) => parts
                .iter()
                .enumerate()
                .map(|(p, part)| OpenPart {
                    replica: index,
                    index: p,
                    path: PathBuf::from(&part.path),
                    line: part.line,
                    configured_size: match part.size {
                        PartSize::Bytes(b) => b,
                        PartSize::Auto => 0,
                    },
                    meta: None,
                    status: PartStatus::Ok,
                    file: None,
                    header: HeaderState::NotRead,
                    device: None,
                    flushed: Default::default(),
                    link_target: None,
                })
                .collect(),
            _ => Vec::new(),
        };
        OpenReplica {
            index,
            label,
            nhdrs: set.nhdrs(r),
            extents: set.extents(r).unwrap_or_default(),
            net_size: set.replica_size(r).unwrap_or(0),
            parts,
        }
    }
}

impl<F: PartFile> OpenSet<F> {
    /// The replica with index `replica`.
    pub fn replica(&self, replica: usize) -> Option<&OpenReplica<F>> {
        self.replicas.get(replica)
    }

    /// The part `part` of replica `replica`.
    pub fn part(&self, replica: usize, part: usize) -> Option<&OpenPart<F>> {
        self.replicas.get(replica).and_then(|r| r.parts.get(part))
    }

    /// Every part of every replica.
    pub fn parts(&self) -> impl Iterator<Item = &OpenPart<F>> {
        self.replicas.iter().flat_map(|r| r.parts.iter())
    }

    /// Total number of part files (PMDK prefixes check messages with
    /// `replica R part P: ` only when this exceeds 1).
    pub fn nfiles(&self) -> usize {
        self.replicas.iter().map(|r| r.parts.len()).sum()
    }

    /// Pool size from the configured sizes: the minimum net size over the
    /// local replicas (docs/format.md §14.1).
    pub fn set_pool_size(&self) -> u64 {
        self.replicas.iter().map(|r| r.net_size).min().unwrap_or(0)
    }

    /// Closes every part and the pool set file, releasing their locks (the
    /// structure stays, every part without a file).
    pub fn release(&mut self) {
        for part in self.replicas.iter_mut().flat_map(|r| r.parts.iter_mut()) {
            part.file = None;
        }
        self.set_file = None;
    }

    /// The pool set file handle (kept for its lock), if any.
    pub fn set_file(&self) -> Option<&F> {
        self.set_file.as_ref()
    }
}

/// The error of a part of `set` that a command cannot use, and why.
pub(crate) fn unusable<F>(
    set: &OpenSet<F>,
    replica: usize,
    part_index: usize,
    part: &Path,
    reason: String,
) -> Error {
    Error::PartUnusable {
        set: set.path.clone(),
        replica,
        part_index,
        part: part.to_path_buf(),
        reason,
    }
}
