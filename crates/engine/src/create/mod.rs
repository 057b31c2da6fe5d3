//! Creating obj pools and pool sets, byte-compatible with `pmempool create obj`.
//!
//! [`create`] accepts a pool set file or a single-file pool path, checks the
//! set the way libpmemobj 1.12 does (docs/format.md §13.9, §14, §16.4), and
//! then writes in the order the crash model asks for
//! (ARCHITECTURE.md, "Crash model"): all part files are created or opened and
//! locked, the obj metadata (descriptor, lanes, heap header) is written into
//! every replica at its logical offsets and made durable, and only then the
//! pool headers, which are made durable last. The requested mode is applied at
//! the very end. A failure removes every file this run created and never
//! touches a file that existed before (except with `force`, which removes the
//! old pool first, as `pmempool create -f` does).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use poolsync_header::{self as header, Features, PoolHdr, PoolType, RawUuid};
use poolsync_pmem::{Access, FileKind, Meta, PartFile, Storage};
use poolsync_poolset::{self as poolset, Extent, PartSize, PoolSet, Replica};
use serde::Serialize;

use crate::load;
use crate::Error;

mod journal;

use journal::Interrupted;

pub use journal::{
    is_journal, journal_path, parse as parse_journal, Cleared, CreateJournal, JournalPart,
    ParseError, CREATE_JOURNAL_MAX, CREATE_JOURNAL_SUFFIX, CREATE_JOURNAL_VERSION,
};

/// `pmempool create`'s default mode for new files (its umask is forced to 0).
pub const DEFAULT_MODE: u32 = 0o664;
/// `PMEMOBJ_MAX_LAYOUT`: the layout field's size, including its terminating NUL.
pub const MAX_LAYOUT: usize = 1024;

/// What to create and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// Layout name stored in the pool descriptor (empty: none).
    pub layout: String,
    /// Permission bits for the files this run creates (existing files that
    /// are reused keep theirs, as with PMDK).
    pub mode: u32,
    /// Size of a single-file pool (`-s`); `None` picks 8 MiB for a new file
    /// and the file's own size for an existing one (also with `force`). Not
    /// allowed with a pool set.
    pub size: Option<u64>,
    /// Remove the existing pool (or every part of the pool set) first (`-f`).
    pub force: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            layout: String::new(),
            mode: DEFAULT_MODE,
            size: None,
            force: false,
        }
    }
}

/// One part file of the new pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedPart {
    /// Replica index (0 is the master).
    pub replica: usize,
    /// Part index within the replica.
    pub part: usize,
    /// The file.
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
    /// `true` when an existing zeroed file of the right size was reused
    /// rather than created (docs/format.md §16.4).
    pub reused: bool,
}

/// What [`create`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Created {
    /// The path as given.
    pub path: PathBuf,
    /// `true` when `path` is a pool set file.
    pub is_poolset: bool,
    /// The pool size (the smallest replica's net size, docs/format.md §14.1).
    pub pool_size: u64,
    /// Every part of every replica, in pool set order.
    pub parts: Vec<CreatedPart>,
    /// Files removed first because of [`CreateOptions::force`].
    pub removed: Vec<PathBuf>,
    /// What an interrupted create of the same target had left, cleared
    /// first (its journal named it: see [`journal_path`]).
    pub cleared: Option<Cleared>,
    /// The journal of an interrupted create of the same pool that had
    /// written every header: this run took its pool and did its last steps.
    pub finished: Option<PathBuf>,
}

/// Creates an obj pool (a single file) or all replicas of an obj pool set at
/// `target`, as `pmempool create obj` does.
///
/// * `target` a pool set file: every part is created (or, when it exists with
///   exactly the configured size and a zeroed header page, reused), and
///   every replica receives the same pool.
/// * `target` missing: a single-file pool of `options.size` (default 8 MiB).
/// * `target` an existing non-pool-set file: reused as a single-file pool of
///   its own size when it is big enough and its header page is zero; refused
///   when a size is given (unless `force`).
pub fn create<S: Storage>(
    storage: &S,
    target: &Path,
    options: &CreateOptions,
) -> Result<Created, Error> {
    create_inner(storage, target, options, false)
}

/// [`create`] of the local replicas of a pool set that also names remote
/// replicas (`REPLICA host set`); `crate::remote::create` seeds those.
pub fn create_local<S: Storage>(
    storage: &S,
    target: &Path,
    options: &CreateOptions,
) -> Result<Created, Error> {
    create_inner(storage, target, options, true)
}

fn create_inner<S: Storage>(
    storage: &S,
    target: &Path,
    options: &CreateOptions,
    local_only: bool,
) -> Result<Created, Error> {
    check_layout(target, &options.layout)?;
    // A run that was killed left its journal: what it named and provably
    // made goes first, so that this run starts where it did.
    let cleared = match journal::clear_interrupted(storage, target)? {
        Some(Interrupted::Complete(j)) if adoptable(&j, options) => {
            return adopt(storage, target, j)
        }
        // A whole pool made with other options is an existing pool like
        // any other: refused, or removed first with `force`.
        Some(Interrupted::Complete(_)) => {
            journal::remove(storage, target)?;
            None
        }
        Some(Interrupted::Cleared(c)) => Some(c),
        None => None,
    };
    let mut created = create_target(storage, target, options, local_only)?;
    created.cleared = cleared;
    Ok(created)
}

/// Whether this run asks for the pool an interrupted run made whole.
fn adoptable(j: &CreateJournal, options: &CreateOptions) -> bool {
    !options.force
        && j.layout == options.layout
        && j.mode == options.mode
        && options
            .size
            .is_none_or(|s| !j.is_poolset && j.parts.first().is_some_and(|p| p.size == s))
}

/// Finishes the run whose journal records a whole pool: its last steps
/// (the mode of the files it created, their directories synced, the
/// journal removed).
fn adopt<S: Storage>(storage: &S, target: &Path, j: CreateJournal) -> Result<Created, Error> {
    let created: Vec<&JournalPart> = j.parts.iter().filter(|p| p.created).collect();
    for p in &created {
        storage.set_mode(Path::new(&p.path), j.mode)?;
    }
    let dirs: BTreeSet<PathBuf> = created
        .iter()
        .map(|p| parent_of(Path::new(&p.path)))
        .collect();
    for dir in dirs {
        storage.fsync_dir(&dir)?;
    }
    journal::remove_last(storage, target)?;
    Ok(Created {
        path: target.to_path_buf(),
        is_poolset: j.is_poolset,
        pool_size: j.pool_size,
        parts: j
            .parts
            .iter()
            .map(|p| CreatedPart {
                replica: p.replica,
                part: p.part,
                path: PathBuf::from(&p.path),
                size: p.size,
                reused: !p.created,
            })
            .collect(),
        removed: Vec::new(),
        cleared: None,
        finished: Some(journal_path(target)),
    })
}

fn create_target<S: Storage>(
    storage: &S,
    target: &Path,
    options: &CreateOptions,
    local_only: bool,
) -> Result<Created, Error> {
    // pmempool refuses -s with a pool set before it looks at the value.
    let check_size = || match options.size {
        Some(size) if size < poolset::OBJ_MIN_POOL => Err(Error::SizeTooSmall {
            path: target.to_path_buf(),
            size,
            min: poolset::OBJ_MIN_POOL,
        }),
        _ => Ok(()),
    };
    let existing = storage.stat(target)?;
    match existing {
        Some(meta) if meta.kind == FileKind::Directory => Err(Error::IsDirectory {
            path: target.to_path_buf(),
        }),
        Some(_) => {
            let loaded = load::load(storage, target, Access::ReadOnly)?;
            if loaded.is_poolset {
                if options.size.is_some() {
                    return Err(Error::SizeWithPoolSet {
                        path: target.to_path_buf(),
                    });
                }
                // `loaded.file` keeps the pool set file locked until we are done.
                let set = if local_only {
                    loaded.set.split_remote().0
                } else {
                    loaded.set.clone()
                };
                let result = create_set(storage, target, &set, true, options);
                drop(loaded);
                result
            } else {
                // The single-file pool is locked again below, read-write.
                let device = loaded
                    .devices
                    .first()
                    .and_then(|d| d.first())
                    .copied()
                    .flatten();
                drop(loaded);
                if let (Some(dev), Some(_)) = (device, options.size) {
                    // PMDK: "size must be zero for device dax".
                    return Err(Error::DeviceDaxPart {
                        set: target.to_path_buf(),
                        line: 0,
                        part: target.to_path_buf(),
                        reason: format!(
                            "-s|--size cannot be used with a Device DAX, whose pool takes the whole device ({} bytes)",
                            dev.size
                        ),
                    });
                }
                check_size()?;
                let size = match options.size {
                    // With a size, an existing file is only ever replaced.
                    Some(_) if !options.force => {
                        return Err(Error::AlreadyExists {
                            path: target.to_path_buf(),
                        })
                    }
                    Some(size) => size,
                    // Without one, the pool takes the file's size, whether
                    // the file is reused in place or replaced (`force`).
                    None => {
                        let meta = storage.stat(target)?.ok_or_else(|| Error::NotFound {
                            path: target.to_path_buf(),
                        })?;
                        let len = device.map_or(meta.len, |d| d.size);
                        if len < poolset::OBJ_MIN_POOL {
                            return Err(Error::FileTooSmall {
                                path: target.to_path_buf(),
                                size: len,
                                min: poolset::OBJ_MIN_POOL,
                            });
                        }
                        len
                    }
                };
                let set = load::single_file_set(target, size);
                create_set(storage, target, &set, false, options)
            }
        }
        None => {
            check_size()?;
            let size = options.size.unwrap_or(poolset::OBJ_MIN_POOL);
            let set = load::single_file_set(target, size);
            create_set(storage, target, &set, false, options)
        }
    }
}

fn check_layout(target: &Path, layout: &str) -> Result<(), Error> {
    if layout.len() >= MAX_LAYOUT {
        return Err(Error::LayoutTooLong {
            path: target.to_path_buf(),
            len: layout.len(),
            max: MAX_LAYOUT,
        });
    }
    if layout.as_bytes().contains(&0) {
        return Err(Error::LayoutNul {
            path: target.to_path_buf(),
        });
    }
    Ok(())
}

/// One part as the plan sees it before anything is touched.
#[derive(Debug)]
struct PartPlan {
    replica: usize,
    part: usize,
    line: usize,
    path: PathBuf,
    size: u64,
    has_header: bool,
    /// `stat` of the file when it existed at planning time.
    existing: Option<Meta>,
    /// The Device DAX the part is (docs/format.md §25): reused, never
    /// created or removed.
    device: Option<poolsync_pmem::DevDax>,
}

/// A part during execution: its open, locked file and whether we made it.
#[derive(Debug)]
struct Slot<F> {
    plan: PartPlan,
    file: F,
    created: bool,
}

fn create_set<S: Storage>(
    storage: &S,
    target: &Path,
    set: &PoolSet,
    is_poolset: bool,
    options: &CreateOptions,
) -> Result<Created, Error> {
    let pool_size = check_set(target, set)?;
    let mut plans = plan_parts(storage, target, set)?;

    let mut removed = Vec::new();
    if options.force {
        removed = remove_existing(storage, target, &mut plans)?;
    }

    // Open and check every existing part before creating anything, so that
    // a refusal leaves the file system exactly as it was.
    let mut opened: Vec<(PartPlan, S::File)> = Vec::new();
    let mut fresh: Vec<PartPlan> = Vec::new();
    for plan in plans {
        if plan.existing.is_some() {
            let file = storage
                .open(&plan.path, Access::ReadWrite)
                .map_err(|e| part_error(target, &plan, e))?;
            check_reusable(target, &plan, &file)?;
            opened.push((plan, file));
        } else {
            fresh.push(plan);
        }
    }

    // What this run is about to create or write, durable before it does:
    // a run killed from here on is finished by running it again.
    let pool = NewPool {
        size: pool_size,
        layout: &options.layout,
        poolset_uuid: new_uuid(),
    };
    let record = journal_of(
        storage,
        target,
        &pool,
        (is_poolset, options.mode),
        &opened,
        &fresh,
    )?;
    journal::write(storage, target, &record)?;

    let mut slots: Vec<Slot<S::File>> = opened
        .into_iter()
        .map(|(plan, file)| Slot {
            plan,
            file,
            created: false,
        })
        .collect();
    let outcome = create_fresh(storage, target, fresh, &mut slots)
        // New directory entries are durable before any header claims a
        // pool, so a crash never leaves a header whose sibling parts vanish.
        .and_then(|()| sync_dirs(storage, &slots))
        .and_then(|()| {
            slots.sort_by_key(|s| (s.plan.replica, s.plan.part));
            write_pool::<S>(target, set, &pool, &slots)
        })
        .and_then(|()| finish(storage, &slots, options.mode))
        .and_then(|()| journal::remove_last(storage, target));
    if let Err(error) = outcome {
        return Err(roll_back(storage, target, slots, error));
    }

    let parts = slots
        .iter()
        .map(|s| CreatedPart {
            replica: s.plan.replica,
            part: s.plan.part,
            path: s.plan.path.clone(),
            size: s.plan.size,
            reused: !s.created,
        })
        .collect();
    Ok(Created {
        path: target.to_path_buf(),
        is_poolset,
        pool_size,
        parts,
        removed,
        cleared: None,
        finished: None,
    })
}

/// The journal of a run that reuses the parts `opened` and creates the
/// parts `fresh`.
fn journal_of<S: Storage>(
    storage: &S,
    target: &Path,
    pool: &NewPool<'_>,
    (is_poolset, mode): (bool, u32),
    opened: &[(PartPlan, S::File)],
    fresh: &[PartPlan],
) -> Result<CreateJournal, Error> {
    let cwd = storage.current_dir()?;
    let mut parts: Vec<(&PartPlan, bool)> = opened
        .iter()
        .map(|(p, _)| (p, false))
        .chain(fresh.iter().map(|p| (p, true)))
        .collect();
    parts.sort_by_key(|(p, _)| (p.replica, p.part));
    let text = |p: &Path| {
        crate::durable::absolute(&cwd, p)
            .to_string_lossy()
            .into_owned()
    };
    Ok(CreateJournal {
        version: CREATE_JOURNAL_VERSION,
        target: text(target),
        poolset_uuid: pool.poolset_uuid.to_canonical(),
        is_poolset,
        pool_size: pool.size,
        layout: pool.layout.to_string(),
        mode,
        parts: parts
            .into_iter()
            .map(|(p, created)| JournalPart {
                path: text(&p.path),
                replica: p.replica,
                part: p.part,
                size: p.size,
                header: p.has_header,
                created,
            })
            .collect(),
    })
}

/// The pool [`write_pool`] writes.
struct NewPool<'a> {
    size: u64,
    layout: &'a str,
    poolset_uuid: RawUuid,
}

/// Resolves every part, and refuses what libpmemobj refuses (or what we do
/// not support yet) before any file is touched.
fn plan_parts<S: Storage>(
    storage: &S,
    target: &Path,
    set: &PoolSet,
) -> Result<Vec<PartPlan>, Error> {
    let mut plans: Vec<PartPlan> = Vec::new();
    for (r, replica) in set.replicas.iter().enumerate() {
        let nhdrs = set.nhdrs(r);
        for (p, part) in replica.parts().iter().enumerate() {
            let path = PathBuf::from(&part.path);
            // `check_set` refused AUTO sizes.
            let PartSize::Bytes(size) = part.size else {
                return Err(Error::InvalidRequest {
                    path: target.to_path_buf(),
                    reason: format!("line {}: the part size is not known", part.line),
                });
            };
            let existing = storage.stat(&path)?;
            let device = storage
                .device_dax(&path)
                .map_err(|source| Error::PartStorage {
                    set: target.to_path_buf(),
                    line: part.line,
                    error: source,
                })?;
            if let Some(meta) = existing {
                match meta.kind {
                    FileKind::Regular => {}
                    FileKind::CharDevice if device.is_some() => {}
                    FileKind::Directory => {
                        return Err(Error::Unsupported {
                            set: target.to_path_buf(),
                            line: part.line,
                            what: format!(
                                "{} is a directory: directory pool sets are",
                                path.display()
                            ),
                        })
                    }
                    FileKind::CharDevice => {
                        return Err(Error::DeviceDaxPart {
                            set: target.to_path_buf(),
                            line: part.line,
                            part: path.clone(),
                            reason: "a character device that is not a Device DAX cannot be a part"
                                .to_string(),
                        })
                    }
                    FileKind::Other => {
                        return Err(Error::Unsupported {
                            set: target.to_path_buf(),
                            line: part.line,
                            what: format!(
                                "{} is not a regular file: such parts are",
                                path.display()
                            ),
                        })
                    }
                }
            }
            let plan = PartPlan {
                replica: r,
                part: p,
                line: part.line,
                path,
                size,
                has_header: p < nhdrs,
                existing,
                device,
            };
            if let Some(other) = plans.iter().find(|o| same_file(o, &plan)) {
                return Err(Error::DuplicatePart {
                    set: target.to_path_buf(),
                    line: plan.line,
                    part: plan.path.clone(),
                    other_line: other.line,
                    other: other.path.clone(),
                });
            }
            plans.push(plan);
        }
    }
    Ok(plans)
}

/// Whether two parts name the same file: the same path, or (for files that
/// exist) the same inode through a link.
fn same_file(a: &PartPlan, b: &PartPlan) -> bool {
    if a.path == b.path {
        return true;
    }
    match (&a.existing, &b.existing) {
        (Some(x), Some(y)) => x.dev == y.dev && x.ino == y.ino,
        _ => false,
    }
}

/// What can be refused without touching the file system: options, remote
/// replicas, `AUTO` sizes, and the size rules (docs/format.md §14.1, §14.2,
/// in PMDK's order: the pool, then every part). Returns the pool size.
fn check_set(target: &Path, set: &PoolSet) -> Result<u64, Error> {
    if set.options.no_hdrs {
        return Err(Error::NoHdrs {
            set: target.to_path_buf(),
        });
    }
    for replica in &set.replicas {
        if let Replica::Remote { line, .. } = replica {
            return Err(Error::Unsupported {
                set: target.to_path_buf(),
                line: *line,
                what: "remote replicas are".to_string(),
            });
        }
        // Loading the pool set file resolved AUTO sizes (docs/format.md §25.1).
        if let Some(part) = replica.parts().iter().find(|p| p.size == PartSize::Auto) {
            return Err(Error::PoolSet {
                path: target.to_path_buf(),
                line: part.line,
                reason: "cannot determine size of a part".to_string(),
            });
        }
    }
    set.validate_obj_sizes().map_err(|e| match e {
        poolset::Error::PoolTooSmall { size, min } => {
            let replica = (0..set.replicas.len())
                .find(|&r| set.replica_size(r) == Some(size))
                .unwrap_or(0);
            let line = set.replicas.get(replica).map_or(0, Replica::line);
            Error::NetPoolTooSmall {
                set: target.to_path_buf(),
                line,
                replica,
                size,
                min,
            }
        }
        poolset::Error::PartTooSmall {
            line,
            replica,
            part,
            size,
            min,
        } => {
            let path = set
                .replicas
                .get(replica)
                .and_then(|r| r.parts().get(part))
                .map_or_else(PathBuf::new, |p| PathBuf::from(&p.path));
            Error::PartTooSmall {
                set: target.to_path_buf(),
                line,
                part: path,
                size,
                min,
            }
        }
        other => Error::InvalidRequest {
            path: target.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    set.pool_size().ok_or_else(|| Error::InvalidRequest {
        path: target.to_path_buf(),
        reason: "the pool size is not known".to_string(),
    })
}

/// `-f`: removes every existing part (or the single-file pool), after
/// locking all of them, so that a pool in use is refused before anything is
/// removed.
fn remove_existing<S: Storage>(
    storage: &S,
    target: &Path,
    plans: &mut [PartPlan],
) -> Result<Vec<PathBuf>, Error> {
    let mut locks = Vec::new();
    for plan in plans.iter().filter(|p| p.existing.is_some()) {
        // A device is written through its lock (a second lock from this
        // process would fail), so it is opened read-write.
        let access = match plan.device {
            Some(_) => Access::ReadWrite,
            None => Access::ReadOnly,
        };
        let lock = storage
            .open(&plan.path, access)
            .map_err(|e| part_error(target, plan, e))?;
        locks.push((plan, lock));
    }
    let mut removed = Vec::new();
    let mut unlinked = Vec::new();
    for (plan, lock) in &locks {
        match plan.device {
            // A device is zeroed, as pmempool rm leaves it, and then reused.
            Some(dev) => crate::devdax::zero_head(lock, dev.size)?,
            None => {
                storage
                    .remove(&plan.path)
                    .map_err(|e| part_error(target, plan, e))?;
                unlinked.push(plan.path.clone());
            }
        }
        removed.push(plan.path.clone());
    }
    drop(locks);
    let dirs: BTreeSet<PathBuf> = unlinked.iter().map(|p| parent_of(p)).collect();
    for dir in dirs {
        storage.fsync_dir(&dir)?;
    }
    for plan in plans.iter_mut().filter(|p| p.device.is_none()) {
        plan.existing = None;
    }
    Ok(removed)
}

/// A storage error on a part, with the part's line in the pool set file.
fn part_error(target: &Path, plan: &PartPlan, source: poolsync_pmem::Error) -> Error {
    Error::PartStorage {
        set: target.to_path_buf(),
        line: plan.line,
        error: source,
    }
}

/// An existing part is reused only when it has exactly the configured size
/// and (for a header-carrying part) a zeroed header page
/// (docs/format.md §16.4).
fn check_reusable<F: PartFile>(target: &Path, plan: &PartPlan, file: &F) -> Result<(), Error> {
    let actual = match plan.device {
        Some(dev) => dev.size,
        None => file.len().map_err(|e| part_error(target, plan, e))?,
    };
    if actual != plan.size {
        return Err(Error::PartSizeMismatch {
            set: target.to_path_buf(),
            line: plan.line,
            part: plan.path.clone(),
            actual,
            configured: plan.size,
        });
    }
    if plan.has_header {
        let mut page = vec![0u8; header::POOL_HDR_SIZE];
        file.read_at(0, &mut page)
            .map_err(|e| part_error(target, plan, e))?;
        if page.iter().any(|&b| b != 0) && plan.device.is_some() {
            return Err(Error::DeviceDaxPart {
                set: target.to_path_buf(),
                line: plan.line,
                part: plan.path.clone(),
                reason: format!(
                    "non-empty Device DAX detected: its pool header area (bytes 0..4096) is not zero; if the pool on it is not needed, zero it with `poolsync rm {}`, or use -f",
                    plan.path.display()
                ),
            });
        }
        if page.iter().any(|&b| b != 0) {
            return Err(Error::NonEmpty {
                set: target.to_path_buf(),
                line: plan.line,
                part: plan.path.clone(),
            });
        }
    }
    Ok(())
}

/// Creates the missing parts one by one; each new file joins `slots` at
/// once, so that a later failure removes it.
fn create_fresh<S: Storage>(
    storage: &S,
    target: &Path,
    fresh: Vec<PartPlan>,
    slots: &mut Vec<Slot<S::File>>,
) -> Result<(), Error> {
    for plan in fresh {
        // Two spellings of one new file (for example through a symlinked
        // directory) show up only now: the file exists, and it is ours.
        if let Some(meta) = storage.stat(&plan.path)? {
            for slot in slots.iter() {
                let theirs = storage.stat(&slot.plan.path)?;
                if theirs.is_some_and(|t| t.dev == meta.dev && t.ino == meta.ino) {
                    return Err(Error::DuplicatePart {
                        set: target.to_path_buf(),
                        line: plan.line,
                        part: plan.path.clone(),
                        other_line: slot.plan.line,
                        other: slot.plan.path.clone(),
                    });
                }
            }
        }
        let file = storage
            .create(&plan.path, plan.size)
            .map_err(|e| part_error(target, &plan, e))?;
        slots.push(Slot {
            plan,
            file,
            created: true,
        });
    }
    Ok(())
}

/// Writes the obj metadata into every replica, then the headers (data first,
/// header last: ARCHITECTURE.md, "Crash model", rule 1).
fn write_pool<S: Storage>(
    target: &Path,
    set: &PoolSet,
    pool: &NewPool<'_>,
    slots: &[Slot<S::File>],
) -> Result<(), Error> {
    let (pool_size, layout) = (pool.size, pool.layout);
    let image = header::obj_initial_image(pool_size, layout).map_err(|e| Error::Unsupported {
        set: target.to_path_buf(),
        line: 0,
        what: format!("an obj pool of {pool_size} bytes ({e}) is"),
    })?;
    let nreplicas = set.replicas.len();
    let mut replicas: Vec<ReplicaView<'_, S::File>> = Vec::with_capacity(nreplicas);
    for r in 0..nreplicas {
        let extents = set.extents(r).ok_or(Error::AddressSpace {
            set: target.to_path_buf(),
            replica: r,
            offset: 0,
        })?;
        let parts: Vec<&Slot<S::File>> = slots.iter().filter(|s| s.plan.replica == r).collect();
        replicas.push(ReplicaView { extents, parts });
    }

    // Data (ARCHITECTURE.md, "Crash model", rule 1: before any header). The
    // metadata area, from the descriptor to the end of the heap header, is
    // written whole: the image over zeroes, exactly what libpmemobj leaves
    // there, whatever the file held before. Each zone's header and first chunk
    // header are zeroed as libpmemobj does (they matter only in a reused file).
    let block_start = header::OBJ_DESC_OFF;
    let block_end = header::OBJ_HEAP_OFFSET + header::HEAP_HDR_SIZE as u64;
    let mut block = vec![0u8; (block_end - block_start) as usize];
    let mut outside = Vec::new();
    for write in &image {
        let start = write
            .offset
            .checked_sub(block_start)
            .and_then(|o| usize::try_from(o).ok());
        match start.and_then(|o| block.get_mut(o..o + write.bytes.len())) {
            Some(dst) => dst.copy_from_slice(&write.bytes),
            None => outside.push(write),
        }
    }
    let zones = zone_init_ranges(pool_size);
    for (r, view) in replicas.iter().enumerate() {
        write_logical(target, r, &view.extents, &view.parts, block_start, &block)?;
        for write in &outside {
            write_logical(
                target,
                r,
                &view.extents,
                &view.parts,
                write.offset,
                &write.bytes,
            )?;
        }
        for &(offset, len) in &zones {
            let zeroes = vec![0u8; len as usize];
            write_logical(target, r, &view.extents, &view.parts, offset, &zeroes)?;
        }
    }
    for slot in slots {
        slot.file.fence()?;
    }

    // Headers: one fresh UUID per header-carrying part, linked in rings
    // (docs/format.md §5); SDS all zero, which is clean on non-pmem storage
    // (docs/format.md §6).
    let uuids: Vec<Vec<RawUuid>> = (0..nreplicas)
        .map(|r| (0..set.nhdrs(r)).map(|_| new_uuid()).collect())
        .collect();
    let links = header::ring_links(&uuids).map_err(|e| Error::InvalidRequest {
        path: target.to_path_buf(),
        reason: e.to_string(),
    })?;
    let poolset_uuid = pool.poolset_uuid;
    let mut features = Features::DEFAULT;
    if set.options.single_hdr {
        features.incompat |= header::FEAT_SINGLEHDR;
    }
    for (r, view) in replicas.iter().enumerate() {
        for slot in view.parts.iter().filter(|s| s.plan.has_header) {
            let p = slot.plan.part;
            let (Some(uuid), Some(links)) = (
                uuids.get(r).and_then(|u| u.get(p)),
                links.get(r).and_then(|l| l.get(p)),
            ) else {
                return Err(Error::InvalidRequest {
                    path: target.to_path_buf(),
                    reason: format!("replica {r} part {p}: no header UUID"),
                });
            };
            // crtime is the part's st_ctime when its header is written (2.7).
            let crtime = slot.file.ctime()?;
            let hdr = PoolHdr::new(PoolType::Obj, features, poolset_uuid, *uuid, links, crtime);
            let bytes = hdr.encode_raw();
            slot.file.write_at(0, &bytes)?;
            slot.file.flush(0, bytes.len() as u64)?;
        }
    }
    for slot in slots {
        slot.file.fence()?;
    }
    Ok(())
}

/// One replica during writing: its address-space map and its parts.
struct ReplicaView<'a, F> {
    extents: Vec<Extent>,
    parts: Vec<&'a Slot<F>>,
}

/// A fresh random UUID in the on-media (GUID) byte order (docs/format.md §5).
fn new_uuid() -> RawUuid {
    RawUuid::from_uuid(uuid::Uuid::new_v4())
}

/// Writes `bytes` at logical `offset` of replica `replica`, split at part
/// boundaries, and schedules each piece for persistence.
fn write_logical<F: PartFile>(
    target: &Path,
    replica: usize,
    extents: &[Extent],
    parts: &[&Slot<F>],
    offset: u64,
    bytes: &[u8],
) -> Result<(), Error> {
    let uncovered = || Error::AddressSpace {
        set: target.to_path_buf(),
        replica,
        offset,
    };
    let pieces = poolset::map_range(extents, offset, bytes.len() as u64);
    if pieces.iter().map(|p| p.len).sum::<u64>() != bytes.len() as u64 {
        return Err(uncovered());
    }
    for piece in pieces {
        let start = usize::try_from(piece.logical - offset).map_err(|_| uncovered())?;
        let len = usize::try_from(piece.len).map_err(|_| uncovered())?;
        let chunk = bytes.get(start..start + len).ok_or_else(uncovered)?;
        let slot = parts
            .iter()
            .find(|s| s.plan.part == piece.part)
            .ok_or_else(uncovered)?;
        slot.file.write_at(piece.file_offset, chunk)?;
        slot.file.flush(piece.file_offset, piece.len)?;
    }
    Ok(())
}

/// Each zone's header and first chunk header (docs/format.md §10), which
/// libpmemobj zeroes at create; zones are counted as libpmemobj counts them.
fn zone_init_ranges(pool_size: u64) -> Vec<(u64, u64)> {
    let heap_header = header::HEAP_HDR_SIZE as u64;
    let zone_max =
        header::ZONE_METADATA_SIZE + header::HEAP_CHUNKS_PER_ZONE * header::HEAP_CHUNKSIZE;
    let zone_min = header::ZONE_METADATA_SIZE + header::HEAP_CHUNKSIZE;
    let zone_init = header::ZONE_HEADER_SIZE + header::CHUNK_HEADER_SIZE;
    let mut ranges = Vec::new();
    let mut remaining = pool_size
        .saturating_sub(header::OBJ_HEAP_OFFSET)
        .saturating_sub(heap_header);
    let mut zone_start = header::OBJ_HEAP_OFFSET + heap_header;
    while remaining >= zone_min {
        ranges.push((zone_start, zone_init));
        let take = remaining.min(zone_max);
        remaining -= take;
        zone_start += take;
    }
    ranges
}

/// `fsync` of every directory that holds a part this run created.
fn sync_dirs<S: Storage>(storage: &S, slots: &[Slot<S::File>]) -> Result<(), Error> {
    let dirs: BTreeSet<PathBuf> = slots
        .iter()
        .filter(|s| s.created)
        .map(|s| parent_of(&s.plan.path))
        .collect();
    for dir in dirs {
        storage.fsync_dir(&dir)?;
    }
    Ok(())
}

/// The last step, once everything is durable: give the new files their
/// mode (PMDK chmods at the very end, too), and make that durable.
fn finish<S: Storage>(storage: &S, slots: &[Slot<S::File>], mode: u32) -> Result<(), Error> {
    for slot in slots.iter().filter(|s| s.created) {
        storage.set_mode(&slot.plan.path, mode)?;
    }
    sync_dirs(storage, slots)
}

/// The directory that holds `path` (empty: the current directory).
fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Removes every file this run created; files that existed before are left
/// as they are (their header page is still zero: headers are written last,
/// and a header written before the failure is zeroed again). The journal
/// goes last, and only when every created file is gone: otherwise it names
/// them for the next run.
fn roll_back<S: Storage>(
    storage: &S,
    target: &Path,
    slots: Vec<Slot<S::File>>,
    error: Error,
) -> Error {
    let mut leftovers = Vec::new();
    let mut dirs = BTreeSet::new();
    for slot in slots {
        if slot.created {
            if storage.remove(&slot.plan.path).is_err() {
                leftovers.push(slot.plan.path.clone());
            }
            dirs.insert(parent_of(&slot.plan.path));
        } else if slot.plan.has_header {
            let page = [0u8; header::POOL_HDR_SIZE];
            let _ = slot
                .file
                .write_at(0, &page)
                .and_then(|()| slot.file.flush(0, page.len() as u64))
                .and_then(|()| slot.file.fence());
        }
        drop(slot.file);
    }
    if leftovers.is_empty() {
        // The removals are durable before the journal that names them goes.
        let _ = dirs
            .iter()
            .try_for_each(|d| storage.fsync_dir(d))
            .map_err(Error::from)
            .and_then(|()| journal::remove(storage, target));
        error
    } else {
        Error::Leftovers {
            error: Box::new(error),
            leftovers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE_MAX: u64 = 524_288 + 65_528 * 262_144;
    const FIRST_ZONE: u64 = 0x30_2000 + 1024;

    #[test]
    fn zones_are_counted_as_libpmemobj_counts_them() {
        // The smallest pool has one zone, right after the heap header.
        assert_eq!(zone_init_ranges(8 << 20), [(FIRST_ZONE, 72)]);
        // A heap that fills one zone exactly, and one with a remainder too
        // small for a second zone (zone metadata plus one chunk).
        let one_full = 0x30_2000 + 1024 + ZONE_MAX;
        assert_eq!(zone_init_ranges(one_full).len(), 1);
        assert_eq!(zone_init_ranges(one_full + 786_432 - 4096).len(), 1);
        // Room for the second zone's metadata and one chunk.
        let two = zone_init_ranges(one_full + 786_432);
        assert_eq!(two, [(FIRST_ZONE, 72), (FIRST_ZONE + ZONE_MAX, 72)]);
        // No heap at all: no zone.
        assert!(zone_init_ranges(0x30_2000).is_empty());
    }

    #[test]
    fn layout_names_must_fit_the_descriptor() {
        let p = Path::new("pool");
        assert!(check_layout(p, "").is_ok());
        assert!(check_layout(p, &"a".repeat(1023)).is_ok());
        assert!(matches!(
            check_layout(p, &"a".repeat(1024)),
            Err(Error::LayoutTooLong {
                len: 1024,
                max: 1024,
                ..
            })
        ));
        assert!(matches!(
            check_layout(p, "a\0b"),
            Err(Error::LayoutNul { .. })
        ));
    }
}
