//! Removing pools and the part files of pool sets, as `pmempool rm` does.
//!
//! [`rm`] removes a single-file pool, or every local part of a pool set (and,
//! on request, the pool set file itself). Each file is opened and locked
//! before it is unlinked, as the library call `pmempool_rm` does, so a pool
//! that a running program holds open is refused rather than pulled from
//! under it (the `pmempool rm` command itself takes no lock). Questions
//! ("remove write-protected file?") go to a [`RmObserver`] that the caller
//! supplies, which also hears about every file as it is handled.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use poolsync_pmem::{Access, FileKind, PartFile, Storage};
use poolsync_poolset::Replica;
use serde::Serialize;

use crate::load;
use crate::Error;

/// When to ask before removing a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum Ask {
    /// Only for write-protected files (pmempool's default).
    #[default]
    WriteProtected,
    /// For every file (`-i`).
    Always,
    /// Never (`-f`).
    Never,
}

/// How to remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RmOptions {
    /// Missing files are not an error (`-f`).
    pub force: bool,
    /// Also remove the pool set file once all its parts are gone (`-l`).
    pub remove_set_file: bool,
    /// Also remove the pool set files of remote replicas on their hosts,
    /// with their parts (`-r`; `-a` is `-l` and `-r`).
    pub remove_remote_set_files: bool,
    /// When to ask.
    pub ask: Ask,
    /// `--verify-owner`: remove only part files that provably belong to
    /// the pool set (see [`crate::transform::ownership`]).
    pub verify_owner: bool,
}

/// What a file is to the pool being removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Role {
    /// A single-file pool.
    Pool,
    /// A part of a local replica.
    Part {
        /// Replica index.
        replica: usize,
        /// Part index within the replica.
        part: usize,
        /// Line of the part in the pool set file.
        line: usize,
    },
    /// A remote replica (its "path" is `node:descriptor`).
    Remote {
        /// Replica index.
        replica: usize,
        /// Line of the REPLICA line.
        line: usize,
        /// Target node.
        node: String,
        /// Remote pool set descriptor.
        descriptor: String,
    },
    /// The pool set file itself.
    SetFile,
    /// The pool's update-packet state file (`<set>.poolsync-state`).
    StateFile,
    /// The record of remote syncs (`<set>.poolsync-remotes`, see
    /// [`crate::remote::record`]).
    RemoteRecord,
    /// The sync mark a remote replica's host keeps
    /// (`<set>.poolsync-synced`, see [`crate::remote::mark`]).
    SyncMark,
    /// The journal an interrupted create left (`<set>.poolsync-create`,
    /// see [`crate::create::journal_path`]).
    CreateJournal,
    /// The record of the packet files an interrupted import was deleting
    /// (`<set>.poolsync-deleting`, see [`crate::packets::deleting`]).
    DeletionRecord,
}

/// What happened to one file.
#[derive(Debug)]
pub enum Outcome {
    /// Unlinked.
    Removed,
    /// A Device DAX, which is never unlinked: its first bytes (the pool
    /// header and the obj metadata after it) were zeroed instead, as
    /// `pmempool rm` does (docs/format.md §25.4).
    Zeroed,
    /// The observer answered no; the file is kept.
    Declined,
    /// The file did not exist; ignored because of `force`.
    Missing,
    /// Not removed, and not asked to be (kept for documents that name
    /// this outcome).
    Skipped,
    /// `--verify-owner`: the file does not provably belong to the pool
    /// set, so it is kept.
    NotOwned {
        /// What the file carries instead.
        what: String,
        /// The pool set's UUID, when one is known.
        expected: Option<String>,
    },
    /// Not removed, on purpose: the file is not the pool's.
    Kept {
        /// Why it is not the pool's.
        why: String,
    },
    /// Not removed.
    Failed(Error),
}

/// One file and its outcome.
#[derive(Debug)]
pub struct RmFile {
    /// The file (for a remote replica: `node:descriptor`).
    pub path: PathBuf,
    /// What it is to the pool.
    pub role: Role,
    /// What happened.
    pub outcome: Outcome,
}

/// What [`rm`] did with one target.
#[derive(Debug)]
pub struct RmReport {
    /// The path as given.
    pub target: PathBuf,
    /// `true` when `target` is a pool set file.
    pub is_poolset: bool,
    /// Every file considered, in pool set order (the set file last).
    pub files: Vec<RmFile>,
}

impl RmReport {
    /// `true` when no file failed (declined, missing-with-force and skipped
    /// files are not failures).
    pub fn ok(&self) -> bool {
        !self
            .files
            .iter()
            .any(|f| matches!(f.outcome, Outcome::Failed(_)))
    }

    /// `true` when `--verify-owner` kept a file that is not the pool set's
    /// (the command then fails).
    pub fn refused(&self) -> bool {
        self.files
            .iter()
            .any(|f| matches!(f.outcome, Outcome::NotOwned { .. }))
    }
}

/// The caller's side of a removal: answers questions, hears about progress.
pub trait RmObserver {
    /// The target turned out to be a pool set file (`true`) or a pool.
    fn classified(&mut self, target: &Path, is_poolset: bool) {
        let _ = (target, is_poolset);
    }
    /// `path` is about to be handled (before any question about it).
    fn visiting(&mut self, path: &Path, role: &Role) {
        let _ = (path, role);
    }
    /// Whether to remove `path`; asked only when [`RmOptions::ask`] says so.
    fn confirm(&mut self, path: &Path, write_protected: bool) -> bool;
    /// `file` has been handled.
    fn done(&mut self, file: &RmFile) {
        let _ = file;
    }
}

/// An observer that says yes to everything and listens to nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysYes;

impl RmObserver for AlwaysYes {
    fn confirm(&mut self, _path: &Path, _write_protected: bool) -> bool {
        true
    }
}

/// Removes the pool or pool set at `target` (`pmempool rm`).
///
/// Errors that concern the target as a whole (missing without `force`, a
/// directory, an unreadable or unparsable pool set file) are returned as
/// `Err`; the fate of every single file is in the report.
pub fn rm<S: Storage>(
    storage: &S,
    target: &Path,
    options: &RmOptions,
    observer: &mut dyn RmObserver,
) -> Result<RmReport, Error> {
    rm_with(
        storage,
        target,
        options,
        observer,
        &crate::remote::NoRemotes,
    )
}

/// [`rm`], reaching the hosts of remote replicas through `connector`:
/// their parts are removed there (and, with
/// [`RmOptions::remove_remote_set_files`], their pool set files), by
/// `poolsync serve`, which locks them first and refuses parts of another
/// pool.
pub fn rm_with<S: Storage>(
    storage: &S,
    target: &Path,
    options: &RmOptions,
    observer: &mut dyn RmObserver,
    connector: &dyn crate::remote::Connector,
) -> Result<RmReport, Error> {
    let mut report = RmReport {
        target: target.to_path_buf(),
        is_poolset: false,
        files: Vec::new(),
    };
    let Some(meta) = storage.stat(target)? else {
        if options.force {
            let file = RmFile {
                path: target.to_path_buf(),
                role: Role::Pool,
                outcome: Outcome::Missing,
            };
            observer.done(&file);
            report.files.push(file);
            return Ok(report);
        }
        return Err(Error::NotFound {
            path: target.to_path_buf(),
        });
    };
    if meta.kind == FileKind::Directory {
        return Err(Error::IsDirectory {
            path: target.to_path_buf(),
        });
    }
    let owners = if options.verify_owner {
        crate::ownership::ownership(storage, target, options.force)?
    } else {
        None
    };
    // The pool's identity, decided by every replica's headers before any
    // part goes: the state file and the remote replicas must carry it.
    let uuid = crate::ownership::pool_identity(storage, target);
    let loaded = load::load(storage, target, Access::ReadOnly)?;
    report.is_poolset = loaded.is_poolset;
    observer.classified(target, loaded.is_poolset);
    if !loaded.is_poolset {
        // Our lock on the pool would make the removal's own lock fail.
        drop(loaded);
        let file = remove_one(storage, target, Role::Pool, options, observer);
        let gone = matches!(file.outcome, Outcome::Removed | Outcome::Missing);
        report.files.push(file);
        if gone {
            report
                .files
                .extend(remove_state(storage, target, uuid, options, observer));
            report
                .files
                .extend(remove_interrupted(storage, target, options, observer));
        }
        return Ok(report);
    }

    check_entries(storage, target, &loaded.set, owners.as_ref(), options)?;
    for (r, replica) in loaded.set.replicas.iter().enumerate() {
        match replica {
            Replica::Local { parts, .. } => {
                for (p, part) in parts.iter().enumerate() {
                    let role = Role::Part {
                        replica: r,
                        part: p,
                        line: part.line,
                    };
                    let path = Path::new(&part.path);
                    let file = match owners.as_ref().and_then(|o| o.parts.get(path)) {
                        Some(Err(what)) => {
                            observer.visiting(path, &role);
                            let file = RmFile {
                                path: path.to_path_buf(),
                                role,
                                outcome: Outcome::NotOwned {
                                    what: what.clone(),
                                    expected: owners.as_ref().and_then(|o| o.poolset_uuid.clone()),
                                },
                            };
                            observer.done(&file);
                            file
                        }
                        _ => remove_one(storage, path, role, options, observer),
                    };
                    report.files.push(file);
                }
            }
            Replica::Remote {
                node,
                descriptor,
                line,
            } => {
                let at = crate::remote::replica::RemoteRef {
                    set: target.to_path_buf(),
                    line: *line,
                    node: node.clone(),
                    descriptor: descriptor.clone(),
                };
                let files = rm_remote(connector, at, r, uuid, options, observer);
                report.files.extend(files);
            }
        }
    }
    let dirs: std::collections::BTreeSet<PathBuf> = report
        .files
        .iter()
        .filter(|f| matches!(f.outcome, Outcome::Removed) && !matches!(f.role, Role::Remote { .. }))
        .map(|f| f.path.parent().map(Path::to_path_buf).unwrap_or_default())
        .collect();
    for dir in dirs {
        // A removal whose directory sync failed may come back after a
        // crash: the first part removed from that directory says so, and
        // the set file that names it stays (remove_leftovers).
        if let Err(e) = storage.fsync_dir(&dir) {
            let removed_here = report.files.iter_mut().find(|f| {
                matches!(f.outcome, Outcome::Removed)
                    && !matches!(f.role, Role::Remote { .. })
                    && f.path.parent().unwrap_or(Path::new("")) == dir
            });
            if let Some(file) = removed_here {
                file.outcome = Outcome::Failed(e.into());
                observer.done(file);
            }
        }
    }

    drop(loaded);
    let files = remove_leftovers(storage, target, &report.files, uuid, options, observer);
    report.files.extend(files);
    Ok(report)
}

/// Refuses to remove anything when a local part file that would be
/// removed (or, with `-l`, the pool set file) could not be (a read-only
/// mount, a directory not writable by this user, an immutable file; see
/// [`crate::obstacles`]): a pool set half removed is worse than one left
/// whole. Parts that are missing, or kept by `--verify-owner`, are not
/// removed and not asked about.
fn check_entries<S: Storage>(
    storage: &S,
    target: &Path,
    set: &poolsync_poolset::PoolSet,
    owners: Option<&crate::ownership::Ownership>,
    options: &RmOptions,
) -> Result<(), Error> {
    use crate::obstacles::{check, Change};
    let mut paths: Vec<&Path> = Vec::new();
    for replica in &set.replicas {
        let Replica::Local { parts, .. } = replica else {
            continue;
        };
        for part in parts {
            let path = Path::new(&part.path);
            let kept = owners.is_some_and(|o| matches!(o.parts.get(path), Some(Err(_))));
            if !kept && storage.stat(path)?.is_some() {
                paths.push(path);
            }
        }
    }
    if options.remove_set_file {
        paths.push(target);
    }
    check(storage, paths.into_iter().map(Change::Delete))?.map_err(|blocked| Error::CannotRemove {
        path: target.to_path_buf(),
        reason: blocked.to_string(),
    })
}

/// A remote replica's files, removed on its host by `poolsync serve`, as
/// `rm` reports them.
fn rm_remote(
    connector: &dyn crate::remote::Connector,
    at: crate::remote::replica::RemoteRef,
    replica: usize,
    uuid: Option<[u8; 16]>,
    options: &RmOptions,
    observer: &mut dyn RmObserver,
) -> Vec<RmFile> {
    let (node, descriptor) = (at.node.clone(), at.descriptor.clone());
    let role = Role::Remote {
        replica,
        line: at.line,
        node: node.clone(),
        descriptor: descriptor.clone(),
    };
    let name = PathBuf::from(format!("{node}:{descriptor}"));
    observer.visiting(&name, &role);
    // `-i` asks once for the remote replica, whose parts the server removes
    // in one request (their names are known only on its host).
    if options.ask == Ask::Always && !observer.confirm(&name, false) {
        let file = RmFile {
            path: name,
            role,
            outcome: Outcome::Declined,
        };
        observer.done(&file);
        return vec![file];
    }
    let removed = remove_remote(connector, at, options.remove_remote_set_files, uuid);
    let files: Vec<RmFile> = match removed {
        Ok(files) => files
            .into_iter()
            .map(|(path, existed)| RmFile {
                path: PathBuf::from(format!("{node}:{path}")),
                role: role.clone(),
                outcome: if existed {
                    Outcome::Removed
                } else if options.force {
                    Outcome::Missing
                } else {
                    Outcome::Failed(Error::NotFound {
                        path: PathBuf::from(format!("{node}:{path}")),
                    })
                },
            })
            .collect(),
        Err(e) => vec![RmFile {
            path: name,
            role,
            outcome: Outcome::Failed(e),
        }],
    };
    for file in &files {
        observer.done(file);
    }
    files
}

/// After the parts of the pool set at `target` (whose outcomes are
/// `parts`): the state file, the record of remote syncs, the sync mark and, when asked,
/// the set file itself, each only when every part is gone.
fn remove_leftovers<S: Storage>(
    storage: &S,
    target: &Path,
    parts: &[RmFile],
    uuid: Option<[u8; 16]>,
    options: &RmOptions,
    observer: &mut dyn RmObserver,
) -> Vec<RmFile> {
    let mut out = Vec::new();
    // The set file goes only when its parts are gone: after a failure, or a
    // part the user chose to keep, it still describes files that exist.
    // (Zeroed devices count as gone: they no longer hold a pool.)
    let parts_gone = parts.iter().all(|f| {
        !matches!(
            f.outcome,
            Outcome::Failed(_) | Outcome::Declined | Outcome::NotOwned { .. }
        )
    });
    if !parts_gone {
        return out;
    }
    out.extend(remove_state(storage, target, uuid, options, observer));
    // Only a file that reads as a record: any other file of that name is
    // not poolsync's to remove.
    for path in crate::remote::record::record_files(target) {
        if crate::remote::record::is_record(storage, &path) {
            out.push(remove_one(
                storage,
                &path,
                Role::RemoteRecord,
                options,
                observer,
            ));
            let _ = storage.fsync_parent(&path);
        }
    }
    for path in crate::remote::mark::mark_files(target) {
        if crate::remote::mark::is_mark(storage, &path) {
            out.push(remove_one(
                storage,
                &path,
                Role::SyncMark,
                options,
                observer,
            ));
            let _ = storage.fsync_parent(&path);
        }
    }
    out.extend(remove_interrupted(storage, target, options, observer));
    if options.remove_set_file {
        let mut file = remove_one(storage, target, Role::SetFile, options, observer);
        // Durably gone, or said not to be: a crash could bring it back.
        if matches!(file.outcome, Outcome::Removed) {
            if let Err(e) = storage.fsync_parent(target) {
                file.outcome = Outcome::Failed(e.into());
                observer.done(&file);
            }
        }
        out.push(file);
    }
    out
}

/// Removes what an interrupted `create` or `import` left beside the pool
/// set file or single-file pool `target`: its create journal and its
/// record of packet files being deleted, each only if it reads as one.
fn remove_interrupted<S: Storage>(
    storage: &S,
    target: &Path,
    options: &RmOptions,
    observer: &mut dyn RmObserver,
) -> Vec<RmFile> {
    let journal = crate::create::journal_path(target);
    let record = crate::packets::deleting::deleting_path(target);
    let mut out = Vec::new();
    for (path, role, ours) in [
        (
            &journal,
            Role::CreateJournal,
            crate::create::is_journal(storage, &journal),
        ),
        (
            &record,
            Role::DeletionRecord,
            crate::packets::deleting::is_record(storage, &record),
        ),
    ] {
        if ours {
            out.push(remove_one(storage, path, role, options, observer));
            let _ = storage.fsync_parent(path);
        }
    }
    out
}

/// Removes a remote replica's parts (and its set file) on its host.
fn remove_remote(
    connector: &dyn crate::remote::Connector,
    at: crate::remote::replica::RemoteRef,
    set_file: bool,
    uuid: Option<[u8; 16]>,
) -> Result<Vec<(String, bool)>, Error> {
    let transport = connector.connect(&at.node)?;
    let session = crate::remote::Session::start(&at.node, transport)?;
    let remote = crate::remote::RemoteReplica::open(session, at, 0, true, uuid)?;
    let files = remote.remove(set_file)?;
    let _ = remote.close();
    Ok(files)
}

/// Removes the pool's update-packet state file (and a temporary one left
/// by an interrupted write) once the pool is gone, unless it is not the
/// pool's: a file that is not a state file, or one of another pool, is
/// kept and said so.
fn remove_state<S: Storage>(
    storage: &S,
    target: &Path,
    uuid: Option<[u8; 16]>,
    options: &RmOptions,
    observer: &mut dyn RmObserver,
) -> Vec<RmFile> {
    use crate::packets::state::{self, Loaded};
    let path = crate::packets::state_path(target);
    let mut out = Vec::new();
    let verdict = match state::load(storage, target) {
        Ok(Loaded::Missing) => return out,
        Ok(Loaded::Ready(f)) => match uuid {
            Some(u) if u != f.head.poolset_uuid => Some(format!(
                "it is the state of pool set UUID {}, not this pool's {}",
                crate::packets::uuid_text(&f.head.poolset_uuid),
                crate::packets::uuid_text(&u)
            )),
            _ => None,
        },
        Ok(Loaded::Unusable { .. }) | Err(_) if is_state_file(storage, &path) => None,
        Ok(Loaded::Unusable { .. }) | Err(_) => {
            Some("it is not a poolsync state file (no PSYNCSTA magic)".to_string())
        }
    };
    match verdict {
        Some(why) => {
            observer.visiting(&path, &Role::StateFile);
            let file = RmFile {
                path,
                role: Role::StateFile,
                outcome: Outcome::Kept { why },
            };
            observer.done(&file);
            out.push(file);
        }
        None => {
            out.push(remove_one(
                storage,
                &path,
                Role::StateFile,
                options,
                observer,
            ));
            let tmp = state::tmp_path(&path);
            if is_state_file(storage, &tmp) {
                out.push(remove_one(
                    storage,
                    &tmp,
                    Role::StateFile,
                    options,
                    observer,
                ));
            }
            let _ = storage.fsync_parent(&path);
        }
    }
    out
}

/// Whether `path` starts with a state file's magic number.
fn is_state_file<S: Storage>(storage: &S, path: &Path) -> bool {
    let Ok(file) = storage.open_aux(path, Access::ReadOnly) else {
        return false;
    };
    let mut magic = [0u8; 8];
    file.read_at(0, &mut magic).is_ok() && &magic == poolsync_packet::state::STATE_MAGIC
}

/// Removes one local file: lock it, ask if asked to, unlink it (or, for a
/// Device DAX, zero its head).
fn remove_one<S: Storage>(
    storage: &S,
    path: &Path,
    role: Role,
    options: &RmOptions,
    observer: &mut dyn RmObserver,
) -> RmFile {
    observer.visiting(path, &role);
    let outcome = remove_outcome(storage, path, options, observer);
    let file = RmFile {
        path: path.to_path_buf(),
        role,
        outcome,
    };
    observer.done(&file);
    file
}

fn remove_outcome<S: Storage>(
    storage: &S,
    path: &Path,
    options: &RmOptions,
    observer: &mut dyn RmObserver,
) -> Outcome {
    let missing = || {
        if options.force {
            Outcome::Missing
        } else {
            Outcome::Failed(Error::NotFound {
                path: path.to_path_buf(),
            })
        }
    };
    let meta = match storage.stat(path) {
        Ok(Some(meta)) => meta,
        Ok(None) => return missing(),
        Err(e) => return Outcome::Failed(e.into()),
    };
    match meta.kind {
        FileKind::Regular | FileKind::Other => {}
        FileKind::Directory => {
            return Outcome::Failed(Error::IsDirectory {
                path: path.to_path_buf(),
            })
        }
        FileKind::CharDevice => {}
    }
    let device = match storage.device_dax(path) {
        Ok(device) => device,
        Err(e) => return Outcome::Failed(e.into()),
    };
    if meta.kind == FileKind::CharDevice && device.is_none() {
        return Outcome::Failed(Error::DeviceDaxPart {
            set: path.to_path_buf(),
            line: 0,
            part: path.to_path_buf(),
            reason: "a character device that is not a Device DAX is not removed".to_string(),
        });
    }
    // Opening read-write both takes the lock and tells whether the file is
    // write-protected for us (as access(W_OK) would); a write-protected
    // file is locked through a read-only descriptor instead.
    let (lock, write_protected) = match storage.open(path, Access::ReadWrite) {
        Ok(file) => (file, false),
        Err(e) if is_not_found(&e) => return missing(),
        Err(e) if is_write_protection(&e) => match storage.open(path, Access::ReadOnly) {
            Ok(file) => (file, true),
            Err(e) if is_not_found(&e) => return missing(),
            Err(e) => return Outcome::Failed(e.into()),
        },
        Err(e) => return Outcome::Failed(e.into()),
    };
    let ask = match options.ask {
        Ask::Always => true,
        Ask::WriteProtected => write_protected,
        Ask::Never => false,
    };
    if ask && !observer.confirm(path, write_protected) {
        return Outcome::Declined;
    }
    if let Some(dev) = device {
        // Never unlinked: the header and what follows are zeroed, through
        // the lock (docs/format.md §25.4).
        if write_protected {
            return Outcome::Failed(Error::DeviceDaxPart {
                set: path.to_path_buf(),
                line: 0,
                part: path.to_path_buf(),
                reason: "the Device DAX is write-protected, so its pool header cannot be zeroed"
                    .to_string(),
            });
        }
        return match crate::devdax::zero_head(&lock, dev.size) {
            Ok(()) => Outcome::Zeroed,
            Err(e) => Outcome::Failed(e),
        };
    }
    let outcome = match storage.remove(path) {
        Ok(()) => Outcome::Removed,
        Err(e) if is_not_found(&e) => missing(),
        Err(e) => Outcome::Failed(e.into()),
    };
    drop(lock);
    outcome
}

fn io_kind(e: &poolsync_pmem::Error) -> Option<ErrorKind> {
    match e {
        poolsync_pmem::Error::Io { os, .. } => Some(os.kind()),
        _ => None,
    }
}

fn is_not_found(e: &poolsync_pmem::Error) -> bool {
    io_kind(e) == Some(ErrorKind::NotFound)
}

fn is_write_protection(e: &poolsync_pmem::Error) -> bool {
    matches!(
        io_kind(e),
        Some(ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem)
    )
}
