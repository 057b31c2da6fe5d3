//! A simulated storage backend that can crash at any persistence event
//! and fail any call with the errors of a real disk.
//!
//! [`SimStorage`] implements [`Storage`] and [`PartFile`] in memory, so that
//! a writer (create, repair, sync) can be run against it and stopped at every
//! flush, fence and directory sync it makes. After such a stop,
//! [`SimStorage::after_crash`] "reboots" the storage: the new instance holds
//! only what the crash model says survived, and recovery can be run on it.
//! The idea is redb's `CrashBackend`.
//!
//! # The crash model
//!
//! Every file has a *written* image (what reads see) and a *persisted* image
//! (what survives a power failure). The model is the strictest one that
//! both real backends satisfy, so a writer that is correct here is correct
//! on the page cache (`fdatasync`) and on DAX (`clwb` + `sfence`):
//!
//! * **Data.** [`PartFile::write_at`] changes the written image only.
//!   [`PartFile::flush`] marks a range as pending on *that handle*, and
//!   [`PartFile::fence`] copies the handle's pending ranges, with the bytes
//!   they hold at the time of the fence, into the persisted image. A fence
//!   is per file, because [`crate::FsStorage`]'s fence is an `fdatasync` of
//!   its own file only: a fence of one part never persists another. Pending
//!   ranges die with their handle, because a fresh `FsStorage` handle starts
//!   with nothing to sync: data flushed through a handle that was dropped
//!   before a fence is not durable.
//! * **Size.** [`Storage::create`] gives a zero-filled file of the full size
//!   (allocated, as `posix_fallocate` does), but the allocation becomes
//!   durable only at the first fence of the file; before that, a crash
//!   leaves the file (if its entry survives) empty.
//! * **Directory entries.** A file created or removed becomes durable
//!   (appears or disappears after a crash) only at the next
//!   [`Storage::fsync_dir`] of its directory. A fence does not make the
//!   entry durable, and a directory sync does not make the data durable:
//!   a new part needs both.
//! * **Modes.** A [`Storage::set_mode`] becomes durable at the next
//!   [`Storage::fsync_dir`] of the file's directory. (On a real file system
//!   a mode change is inode metadata, which `fdatasync` need not persist;
//!   the trait has no `fsync` of a file, and a directory sync commits the
//!   journal on the journaling file systems poolsync runs on.)
//! * **Not modelled.** Directories themselves ([`SimStorage::add_dir`]) are
//!   fixtures and always durable; `ctime` comes from a logical clock that
//!   ticks at every create, write and mode change, and is not part of the
//!   crash model.
//!
//! What a crash leaves behind is chosen at reboot time with [`Survival`]:
//! only what was made durable (a power failure, the default), everything
//! written (a killed process whose page cache lives on), or a seeded random
//! mix of the two (a power failure after the cache wrote back some blocks
//! and the file system committed some entries on its own).
//!
//! # Persistence events and crash injection
//!
//! Every call of [`PartFile::flush`], [`PartFile::fence`] and
//! [`Storage::fsync_dir`] that passes its argument checks is one
//! *persistence event*, numbered from 0
//! across all files and handles of one storage. With
//! [`EventScope::EveryChange`] ([`SimStorage::set_event_scope`]) every call
//! that changes something is an event too, so that a writer can be stopped
//! between any two of its system calls, as `kill -9` stops a process:
//! [`Storage::create`] (two events: before the file exists, and once it
//! exists, empty and of mode 0, before it is allocated, as between
//! `open(O_CREAT)` and `posix_fallocate`), [`PartFile::write_at`],
//! [`Storage::remove`], [`Storage::set_mode`], [`Storage::rename`] and
//! [`PartFile::set_len`], each before it takes effect. Calls that fail their own
//! argument checks (a range past the end, a missing directory) are not
//! events. [`SimStorage::events`] counts the events that completed, so a
//! test runs the writer once to learn the count `n` and then, for every
//! `k` in `0..n`, runs it again with [`SimStorage::crash_after`]`(k)`: events
//! `0..k` complete, event `k` fails with [`Error::SimulatedCrash`] without
//! taking effect, and every later operation of the [`Storage`] and
//! [`PartFile`] traits on that storage fails the same way, so the writer
//! stops. The inspection helpers ([`SimStorage::image`] and friends) keep
//! working.
//!
//! # Fault injection
//!
//! A crash stops everything; a *fault* fails one call and lets the writer
//! go on, as a disk or a file system does. [`SimStorage::inject`] arms one
//! [`Fault`] at the `k`-th of the calls it applies to
//! ([`SimStorage::fault_ops`] counts them, failed or not, so a test learns
//! `n` from an uninterrupted run and sweeps `k` over `0..n`):
//!
//! * [`Fault::ReadEio`] and [`Fault::WriteEio`]: `EIO` from that one read
//!   or write;
//! * [`Fault::NoSpace`]: `ENOSPC` from that call and every later one that
//!   allocates (creates, growing `set_len`s, writes);
//! * [`Fault::SyncEio`]: `EIO` from that one fence or directory sync. The
//!   model is the page cache's after a failed `fdatasync`, taken at its
//!   worst: the failed call persists nothing, what the handle had flushed
//!   is forgotten (a later fence does not persist it), and the handle
//!   refuses every later fence with [`Error::SyncPoisoned`], as
//!   [`crate::FsStorage`]'s does. A fence with nothing to persist makes no
//!   `fdatasync` and cannot fail, as on the page cache;
//! * [`Fault::ReadOnly`]: `EROFS` from that call and every later one that
//!   changes something (opens for writing included), as after a remount
//!   read-only; reads go on.
//!
//! Each failed call returns the error [`crate::FsStorage`] returns for that
//! `errno` (`write "/pool/a.part" at offset 8192: Input/output error`), so
//! a writer's message is the one a user would read.
//! [`SimStorage::fault_hits`] lists the calls that failed. A fault is
//! not a crash: nothing is lost but what the fault itself loses, and
//! [`SimStorage::after_crash_with`] (a reboot, with the survival of the
//! test's choice) or [`SimStorage::clear_fault`] (the disk repaired) ends
//! it, so that a re-run can be checked.
//!
//! # Other behaviour
//!
//! * Paths are compared after lexical normalisation (`.` and `..` resolved,
//!   repeated slashes merged); there are no symbolic links. `/` always
//!   exists, and the empty path is the current directory for
//!   [`Storage::fsync_dir`] and the parent of bare file names. A file can be
//!   created only in a directory declared with [`SimStorage::add_dir`], and
//!   errors read like [`crate::FsStorage`]'s (`open "/x/a.part": No such file
//!   or directory`).
//! * [`Storage::open`] and [`Storage::create`] take an exclusive lock on the
//!   file (not the path, as `flock` locks the inode) until the handle is
//!   dropped; a second open fails with [`Error::Locked`].
//! * [`Storage::create`] is `O_EXCL`, makes mode 0 files, and refuses sizes
//!   over [`SimStorage::max_file_len`] (default [`DEFAULT_MAX_FILE_LEN`])
//!   with [`Error::Allocate`] before allocating anything.
//! * Files never grow: a write or flush past the end of a file is an error
//!   (a page-cache file would grow silently, but no writer of a fully
//!   allocated part may do that).
//! * Clones of a [`SimStorage`] share one file system, like two handles of
//!   one disk; [`SimStorage::after_crash`] makes an independent one.
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//! use poolsync_pmem::sim::SimStorage;
//! use poolsync_pmem::{Error, PartFile, Storage};
//!
//! // Data first, then a header that claims the data is there.
//! fn writer(s: &SimStorage) -> Result<(), Error> {
//!     let path = Path::new("/pool/a.part");
//!     let part = s.create(path, 8192)?;
//!     s.fsync_parent(path)?;
//!     part.write_at(4096, &[7; 4096])?;
//!     part.flush(4096, 4096)?;
//!     part.fence()?;
//!     part.write_at(0, b"HEADER")?;
//!     part.flush(0, 6)?;
//!     part.fence()
//! }
//!
//! let fresh = || {
//!     let s = SimStorage::new();
//!     s.add_dir(Path::new("/pool")).expect("directory");
//!     s
//! };
//! let full = fresh();
//! writer(&full).expect("complete run");
//! let events = full.events();
//! assert_eq!(events, 5);
//!
//! for k in 0..events {
//!     let s = fresh();
//!     s.crash_after(k);
//!     assert!(matches!(writer(&s), Err(Error::SimulatedCrash { event }) if event == k));
//!     let rebooted = s.after_crash();
//!     if let Some(bytes) = rebooted.written_bytes(Path::new("/pool/a.part")) {
//!         if bytes.starts_with(b"HEADER") {
//!             assert!(bytes[4096..].iter().all(|&b| b == 7), "header without data");
//!         }
//!     }
//! }
//! ```
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::{Access, Error, FileKind, Meta, Obstacle, PartFile, Storage};

/// The largest file [`SimStorage::new`] agrees to create: 1 GiB.
pub const DEFAULT_MAX_FILE_LEN: u64 = 1 << 30;

/// The unit in which [`Survival::Torn`] decides what survived: a disk sector.
pub const TORN_BLOCK: usize = 512;

/// `st_dev` of every simulated file.
const SIM_DEV: u64 = 0x5349_4d00;
/// The logical clock's first value, a plausible `ctime` in seconds.
const CLOCK_START: u64 = 1_700_000_000;
/// Mode of directories made by [`SimStorage::add_dir`].
const DIR_MODE: u32 = 0o755;
/// `st_size` reported for a directory.
const DIR_LEN: u64 = 4096;

/// Which calls are crash points ([`SimStorage::set_event_scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventScope {
    /// Flushes, fences and directory syncs (the default).
    #[default]
    Persistence,
    /// Those, and every call that changes something: creates (twice: before
    /// the file exists, and before it is allocated), writes, removes, mode
    /// changes, renames and length changes.
    EveryChange,
}

/// A failure of the storage other than a crash, injected with
/// [`SimStorage::inject`] at one operation: the errors a disk or a file
/// system gives a writer in the middle of its work. Each fails its calls
/// with the error [`crate::FsStorage`] returns for the same `errno`, naming
/// the call and the path, so that a writer's message is the one a user
/// would see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// `EIO` from one [`PartFile::read_at`] (a sector that cannot be
    /// read). One-shot: the next read of the same range succeeds.
    ReadEio,
    /// `EIO` from one [`PartFile::write_at`]. One-shot; nothing of the
    /// failed write is written.
    WriteEio,
    /// `ENOSPC` from every call that allocates, from the faulted one on
    /// (sticky, as a full file system stays full): [`Storage::create`]
    /// (as `posix_fallocate` of a part, or `open` of an auxiliary file),
    /// [`Storage::create_aux`], [`PartFile::set_len`] growing a file, and
    /// [`PartFile::write_at`] (a part may be sparse when another tool made
    /// it, and auxiliary files always are).
    NoSpace,
    /// `EIO` from one [`PartFile::fence`] that has something to persist
    /// (an `fdatasync`), or one [`Storage::fsync_dir`]. One-shot, but as on
    /// the page cache after a failed `fdatasync` (whose dirty pages the
    /// kernel may have dropped and marked clean), the failed call persists
    /// nothing, the handle's flushed ranges are forgotten, and every later
    /// fence of that handle fails with [`Error::SyncPoisoned`].
    SyncEio,
    /// `EROFS` from every call that changes something, from the faulted
    /// one on (sticky, as a file system remounted read-only after an
    /// error): [`Storage::open`] for writing, [`Storage::create`],
    /// [`Storage::create_aux`], [`Storage::remove`], [`Storage::set_mode`],
    /// [`Storage::rename`], [`PartFile::write_at`], [`PartFile::set_len`],
    /// and the fences and directory syncs that have something to persist
    /// (which persist nothing, as [`Fault::SyncEio`]'s).
    ReadOnly,
}

impl Fault {
    /// Every fault, in a fixed order.
    pub const ALL: [Fault; 5] = [
        Fault::ReadEio,
        Fault::WriteEio,
        Fault::NoSpace,
        Fault::SyncEio,
        Fault::ReadOnly,
    ];

    /// The `errno` the faulted calls report.
    pub fn errno(self) -> i32 {
        match self {
            Fault::ReadEio | Fault::WriteEio | Fault::SyncEio => libc::EIO,
            Fault::NoSpace => libc::ENOSPC,
            Fault::ReadOnly => libc::EROFS,
        }
    }

    /// Whether every call the fault applies to fails from the faulted one
    /// on (`ENOSPC`, `EROFS`), rather than that one call only.
    pub fn is_sticky(self) -> bool {
        matches!(self, Fault::NoSpace | Fault::ReadOnly)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::ReadEio => "EIO on read",
            Fault::WriteEio => "EIO on write",
            Fault::NoSpace => "ENOSPC",
            Fault::SyncEio => "EIO on fsync",
            Fault::ReadOnly => "EROFS",
        })
    }
}

/// A call an injected [`Fault`] failed ([`SimStorage::fault_hit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultHit {
    /// The fault.
    pub fault: Fault,
    /// Its operation index, as [`SimStorage::fault_ops`] counts.
    pub index: u64,
    /// The system call as the error names it (`read`, `fdatasync`, …).
    pub op: &'static str,
    /// The file or directory it failed on, as the caller named it.
    pub path: PathBuf,
}

/// What survives a crash, chosen at reboot ([`SimStorage::after_crash_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Survival {
    /// A power failure: only what was made durable survives (fenced data,
    /// fenced allocations, directory entries and modes synced with
    /// `fsync_dir`).
    Durable,
    /// A killed process on a machine that keeps running: everything written,
    /// created, removed and chmodded survives, durable or not.
    Everything,
    /// A power failure after the system persisted some things on its own
    /// (page-cache write-back, cache eviction, a journal commit). Each
    /// [`TORN_BLOCK`]-sized block that differs between the written and the
    /// persisted image, each not yet durable allocation, directory entry
    /// and mode change survives or not independently, by a coin flip
    /// derived from `seed`; the same seed and the same run give the same
    /// outcome.
    Torn {
        /// Chooses the outcome.
        seed: u64,
    },
}

/// An in-memory file system with a crash model; see the [module
/// documentation](self).
#[derive(Clone)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
    /// Time as the engine sees it; shared by clones and kept across
    /// crashes (a reboot does not turn time back).
    clock: crate::LogicalClock,
}

/// One open, locked file of a [`SimStorage`]; the lock ends when it is
/// dropped, and so do its pending (flushed but not fenced) ranges.
pub struct SimFile {
    state: Arc<Mutex<State>>,
    handle: u64,
    ino: u64,
    path: PathBuf,
    access: Access,
}

/// A snapshot of the files of a [`SimStorage`], for end-state assertions.
///
/// Two images are equal when they hold the same paths (normalised) with the
/// same bytes and modes. Its `Debug` output shows lengths, modes and a
/// digest of the bytes rather than the bytes themselves.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SimImage {
    files: BTreeMap<PathBuf, SimImageFile>,
}

/// One file of a [`SimImage`].
#[derive(Clone, PartialEq, Eq)]
pub struct SimImageFile {
    /// The file's contents.
    pub bytes: Vec<u8>,
    /// Its permission bits.
    pub mode: u32,
}

#[derive(Clone)]
struct State {
    max_file_len: u64,
    /// Bytes the simulated file system holds; `None`: unlimited, and
    /// [`Storage::free_space`] says it cannot know.
    capacity: Option<u64>,
    clock: u64,
    /// The working directory [`Storage::current_dir`] reports.
    cwd: PathBuf,
    next_ino: u64,
    next_handle: u64,
    /// Persistence events completed.
    events: u64,
    /// Which calls count as events.
    scope: EventScope,
    /// The event index at which to crash.
    crash_at: Option<u64>,
    /// The event index at which the crash happened.
    crashed: Option<u64>,
    /// The fault armed with [`SimStorage::inject`], and where.
    fault: Option<(Fault, u64)>,
    /// Per [`Fault`] (by [`Fault::index`]), the operations it could have
    /// failed that went ahead.
    fault_ops: [u64; Fault::ALL.len()],
    /// The calls an injected fault failed, in order.
    fault_hits: Vec<FaultHit>,
    dirs: BTreeMap<PathBuf, Dir>,
    /// Directory entries as the running system sees them.
    live: BTreeMap<PathBuf, u64>,
    /// Directory entries as they would be found after a power failure.
    durable: BTreeMap<PathBuf, u64>,
    inodes: BTreeMap<u64, Inode>,
    handles: BTreeMap<u64, Handle>,
    /// Directories whose entries cannot be changed ([`SimStorage::guard_dir`]).
    guards: BTreeMap<PathBuf, Guard>,
}

#[derive(Clone, Copy)]
struct Dir {
    ino: u64,
    mode: u32,
    ctime: u64,
}

#[derive(Clone)]
struct Inode {
    /// The written image.
    data: Vec<u8>,
    /// The persisted image; shorter than `data` (empty) until the
    /// allocation is fenced.
    persisted: Vec<u8>,
    mode: u32,
    durable_mode: u32,
    ctime: u64,
    /// The shortest length `set_len` gave the file since its last fence:
    /// from there on, the next fence persists the written image whole
    /// (a cut and regrown file reads zeros there, durably).
    cut_at: Option<usize>,
}

#[derive(Clone)]
struct Handle {
    ino: u64,
    pending: RangeSet,
    /// A fence of this handle failed: as after a failed `fdatasync` of an
    /// [`crate::FsStorage`] file, every later fence fails too.
    poisoned: bool,
}

/// Appends zeros to `data` until it is `len` bytes long, a page at a time
/// (a byte-wise `resize` is slow in unoptimised test builds, and tests
/// create many multi-megabyte parts).
fn zero_fill(data: &mut Vec<u8>, len: usize) {
    const ZEROS: [u8; 4096] = [0; 4096];
    while data.len() < len {
        let n = (len - data.len()).min(ZEROS.len());
        data.extend_from_slice(&ZEROS[..n]);
    }
}

/// Disjoint, non-adjacent half-open ranges, keyed by start.
#[derive(Clone, Default)]
struct RangeSet(BTreeMap<u64, u64>);

/// What a normalised path names.
enum Node {
    Dir(Dir),
    File(u64),
    /// Nothing; `parent_ok` tells whether the parent directory exists.
    Missing {
        parent_ok: bool,
    },
}

impl RangeSet {
    fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Ranges are disjoint and sorted, so their ends are sorted too: the
        // ones that overlap or touch [start, end] are a suffix of those that
        // start at or before `end`.
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=end)
            .rev()
            .take_while(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }
}

impl Default for SimStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl SimStorage {
    /// An empty file system holding only `/`, refusing files over
    /// [`DEFAULT_MAX_FILE_LEN`].
    pub fn new() -> Self {
        Self::with_max_file_len(DEFAULT_MAX_FILE_LEN)
    }

    /// An empty file system whose [`Storage::create`] refuses files over
    /// `max` bytes.
    pub fn with_max_file_len(max: u64) -> Self {
        Self::from_state(State::new(max))
    }

    fn from_state(state: State) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            clock: crate::LogicalClock::new(),
        }
    }

    /// The logical clock the engine reads through [`Storage::clock`]: it
    /// stands still unless advanced, and the engine's sleeps advance it.
    pub fn logical_clock(&self) -> &crate::LogicalClock {
        &self.clock
    }

    /// Sets the directory relative paths are resolved against
    /// ([`Storage::current_dir`]; `/` by default).
    pub fn set_current_dir(&self, dir: &Path) {
        self.lock().cwd = normalize(dir);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The state, locked and alive, and `path` normalised: the start of
    /// every call that names a file (`ENOENT` for the empty path, as for
    /// `op`).
    fn entry(
        &self,
        op: &'static str,
        path: &Path,
    ) -> Result<(MutexGuard<'_, State>, PathBuf), Error> {
        let st = self.lock();
        st.alive()?;
        let key = normalize(path);
        if key.as_os_str().is_empty() {
            return Err(io_err(op, path, libc::ENOENT));
        }
        Ok((st, key))
    }

    /// The largest size [`Storage::create`] accepts.
    pub fn max_file_len(&self) -> u64 {
        self.lock().max_file_len
    }

    /// [`Storage::create`], or with `aux` the file of
    /// [`Storage::create_aux`] (of size 0, and failing as an `open`, not
    /// an allocation, on a full file system).
    fn create_file(&self, path: &Path, size: u64, aux: bool) -> Result<SimFile, Error> {
        let (mut st, key) = self.entry("open", path)?;
        match st.lookup(&key) {
            Ok(Node::Dir(_) | Node::File(_)) => {
                return Err(Error::Exists {
                    path: path.to_path_buf(),
                })
            }
            Ok(Node::Missing { parent_ok: true }) => st.guard("open", path, &key, false)?,
            Ok(Node::Missing { parent_ok: false }) => {
                return Err(io_err("open", path, libc::ENOENT));
            }
            Err(errno) => return Err(io_err("open", path, errno)),
        }
        // `open(O_CREAT)` fails first on a read-only or full file system
        // (a full one may still have room for an entry and no block for
        // an auxiliary file's data: that fails at its first write).
        st.faults_io(&[Fault::ReadOnly], "open", path)?;
        if aux {
            st.faults_io(&[Fault::NoSpace], "open", path)?;
        }
        let refuse = |source: io::Error| Error::Allocate {
            path: path.to_path_buf(),
            size,
            os: source,
        };
        if !aux && size > 0 {
            st.faults(&[Fault::NoSpace], "posix_fallocate", path, refuse)?;
        }
        if size > st.max_file_len {
            return Err(refuse(io::Error::other(format!(
                "the simulated storage refuses files over {} bytes",
                st.max_file_len
            ))));
        }
        if st.free().is_some_and(|free| size > free) {
            return Err(refuse(io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        let len =
            usize::try_from(size).map_err(|_| refuse(io::Error::from_raw_os_error(libc::EFBIG)))?;
        let mut data = Vec::new();
        data.try_reserve_exact(len)
            .map_err(|_| refuse(io::Error::from_raw_os_error(libc::ENOMEM)))?;
        st.change()?;
        // The file exists, empty and of mode 0, before it is allocated.
        let ino = st.new_ino();
        let ctime = st.tick();
        st.inodes.insert(
            ino,
            Inode {
                data: Vec::new(),
                persisted: Vec::new(),
                mode: 0,
                durable_mode: 0,
                ctime,
                cut_at: None,
            },
        );
        st.live.insert(key, ino);
        st.change()?;
        zero_fill(&mut data, len);
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.data = data;
        }
        Ok(st.open_handle(ino, path, Access::ReadWrite, &self.state))
    }

    /// Limits the file system to `capacity` bytes (the sum of the sizes of
    /// the files it lists): [`Storage::create`] then fails with `ENOSPC`
    /// beyond it, and [`Storage::free_space`] reports what is left, for
    /// every directory. `None` (the default) means unlimited, with free
    /// space unknown.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.lock().capacity = capacity;
    }

    /// Declares the directory `path` and its ancestors (`mkdir -p`).
    /// Directories are always durable. Fails if a file is in the way.
    pub fn add_dir(&self, path: &Path) -> Result<(), Error> {
        let key = normalize(path);
        let mut st = self.lock();
        let missing: Vec<PathBuf> = key
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty() && !st.dirs.contains_key(*a))
            .map(Path::to_path_buf)
            .collect();
        for dir in &missing {
            if st.live.contains_key(dir) || st.durable.contains_key(dir) {
                let errno = if dir == &key {
                    libc::EEXIST
                } else {
                    libc::ENOTDIR
                };
                return Err(io_err("mkdir", path, errno));
            }
        }
        for dir in missing {
            let ino = st.new_ino();
            let ctime = st.tick();
            st.dirs.insert(
                dir,
                Dir {
                    ino,
                    mode: DIR_MODE,
                    ctime,
                },
            );
        }
        Ok(())
    }

    /// Seeds a durable file with `bytes` and `mode`, creating its parent
    /// directories. Fails with [`Error::Exists`] if the path is taken.
    pub fn insert_file(&self, path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
        let key = normalize(path);
        let Some(parent) = key.parent().filter(|_| key.file_name().is_some()) else {
            return Err(io_err("open", path, libc::ENOENT));
        };
        self.add_dir(parent)?;
        let mut st = self.lock();
        if st.dirs.contains_key(&key) || st.live.contains_key(&key) {
            return Err(Error::Exists {
                path: path.to_path_buf(),
            });
        }
        let ino = st.new_ino();
        let ctime = st.tick();
        let mode = mode & 0o7777;
        st.inodes.insert(
            ino,
            Inode {
                data: bytes.to_vec(),
                persisted: bytes.to_vec(),
                mode,
                durable_mode: mode,
                ctime,
                cut_at: None,
            },
        );
        st.live.insert(key.clone(), ino);
        st.durable.insert(key, ino);
        st.collect_garbage();
        Ok(())
    }

    /// The written image of the file at `path`: what reads see now.
    pub fn written_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let ino = st.live.get(&normalize(path))?;
        st.inodes.get(ino).map(|i| i.data.clone())
    }

    /// The persisted image of the file that a power failure now would leave
    /// at `path` ([`Survival::Durable`]); `None` if no durable entry.
    pub fn persisted_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let ino = st.durable.get(&normalize(path))?;
        st.inodes.get(ino).map(|i| i.persisted.clone())
    }

    /// The files that exist now (normalised, sorted).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().live.keys().cloned().collect()
    }

    /// Whether an open handle holds the lock of the file at `path`.
    pub fn is_locked(&self, path: &Path) -> bool {
        let st = self.lock();
        st.live
            .get(&normalize(path))
            .is_some_and(|&ino| st.is_locked(ino))
    }

    /// Every file as reads see it now.
    pub fn image(&self) -> SimImage {
        self.snapshot(|st| &st.live, |inode| (inode.data.clone(), inode.mode))
    }

    /// Every file as a power failure now would leave it: the image of
    /// [`SimStorage::after_crash`].
    pub fn durable_image(&self) -> SimImage {
        self.snapshot(
            |st| &st.durable,
            |inode| (inode.persisted.clone(), inode.durable_mode),
        )
    }

    /// The files of one directory view (`live` or `durable`), each with
    /// the bytes and mode `contents` picks.
    fn snapshot(
        &self,
        view: impl Fn(&State) -> &BTreeMap<PathBuf, u64>,
        contents: impl Fn(&Inode) -> (Vec<u8>, u32),
    ) -> SimImage {
        let st = self.lock();
        let files = view(&st)
            .iter()
            .filter_map(|(p, ino)| {
                let (bytes, mode) = contents(st.inodes.get(ino)?);
                Some((p.clone(), SimImageFile { bytes, mode }))
            })
            .collect();
        SimImage { files }
    }

    /// Makes every change a crash point ([`EventScope::EveryChange`]) or
    /// only the persistence calls (the default). A storage rebooted with
    /// [`SimStorage::after_crash_with`] keeps the scope.
    pub fn set_event_scope(&self, scope: EventScope) {
        self.lock().scope = scope;
    }

    /// Arms a crash at persistence event `n` (0-based): events `0..n`
    /// complete and the first event whose index is `n` or more fails with
    /// [`Error::SimulatedCrash`], as does every operation after it.
    pub fn crash_after(&self, n: u64) {
        self.lock().crash_at = Some(n);
    }

    /// Arms `fault` at operation `at` (0-based) of those it applies to,
    /// counted as [`SimStorage::fault_ops`] counts them: a one-shot fault
    /// fails that call only, a sticky one every call it applies to from
    /// there on. One fault is armed at a time; this replaces any other.
    /// A storage rebooted with [`SimStorage::after_crash_with`] has none.
    ///
    /// A test runs the writer once to learn `n = fault_ops(fault)` and
    /// then, for every `k` in `0..n`, runs it on a fresh copy with
    /// `inject(fault, k)`.
    pub fn inject(&self, fault: Fault, at: u64) {
        self.lock().fault = Some((fault, at));
    }

    /// Disarms the injected fault (the disk is replaced, space freed, the
    /// file system remounted writable); what it did stays done, and a
    /// poisoned handle stays poisoned.
    pub fn clear_fault(&self) {
        self.lock().fault = None;
    }

    /// The calls `fault` applies to that this storage has seen, whether
    /// they went ahead or the fault failed them.
    pub fn fault_ops(&self, fault: Fault) -> u64 {
        self.lock().fault_ops[fault.index()]
    }

    /// The first call the injected fault failed, if any.
    pub fn fault_hit(&self) -> Option<FaultHit> {
        self.lock().fault_hits.first().cloned()
    }

    /// Every call the injected fault failed (a sticky one fails many), in
    /// order.
    pub fn fault_hits(&self) -> Vec<FaultHit> {
        self.lock().fault_hits.clone()
    }

    /// The index of the event at which this storage crashed, if it did.
    pub fn crashed(&self) -> Option<u64> {
        self.lock().crashed
    }

    /// The number of persistence events that completed (a crashed event is
    /// not counted).
    pub fn events(&self) -> u64 {
        self.lock().events
    }

    /// Reboots after a power failure ([`Survival::Durable`]).
    pub fn after_crash(&self) -> SimStorage {
        self.after_crash_with(Survival::Durable)
    }

    /// Reboots: a new, independent storage holding what `survival` says
    /// outlived a crash at this moment, with every file durable, no lock
    /// held, no crash armed and the event count at zero. This storage is
    /// left as it is.
    pub fn after_crash_with(&self, survival: Survival) -> SimStorage {
        let st = self.lock();
        let mut new = State::new(st.max_file_len);
        new.capacity = st.capacity;
        new.scope = st.scope;
        new.cwd = st.cwd.clone();
        new.clock = st.clock;
        new.next_ino = st.next_ino;
        new.dirs = st.dirs.clone();
        new.guards = st.guards.clone();
        let paths: BTreeSet<&PathBuf> = st.live.keys().chain(st.durable.keys()).collect();
        for path in paths {
            let live = st.live.get(path).copied();
            let durable = st.durable.get(path).copied();
            let chosen = if live == durable {
                live
            } else {
                match survival {
                    Survival::Durable => durable,
                    Survival::Everything => live,
                    Survival::Torn { seed } => {
                        if coin(seed, &[TAG_ENTRY, path_hash(path)]) {
                            live
                        } else {
                            durable
                        }
                    }
                }
            };
            let Some(ino) = chosen else { continue };
            let Some(inode) = st.inodes.get(&ino) else {
                continue;
            };
            let (data, mode) = surviving_inode(inode, ino, survival);
            new.inodes.insert(
                ino,
                Inode {
                    persisted: data.clone(),
                    data,
                    mode,
                    durable_mode: mode,
                    ctime: inode.ctime,
                    cut_at: None,
                },
            );
            new.live.insert(path.clone(), ino);
            new.durable.insert(path.clone(), ino);
        }
        SimStorage {
            state: Arc::new(Mutex::new(new)),
            clock: self.clock.clone(),
        }
    }
}

/// The contents and mode of `inode` after a crash.
fn surviving_inode(inode: &Inode, ino: u64, survival: Survival) -> (Vec<u8>, u32) {
    match survival {
        Survival::Durable => (inode.persisted.clone(), inode.durable_mode),
        Survival::Everything => (inode.data.clone(), inode.mode),
        Survival::Torn { seed } => {
            let mode = if inode.mode != inode.durable_mode && coin(seed, &[TAG_MODE, ino]) {
                inode.mode
            } else {
                inode.durable_mode
            };
            let mut data = if inode.persisted.len() == inode.data.len() {
                inode.persisted.clone()
            } else if coin(seed, &[TAG_ALLOC, ino]) {
                // The new length (an allocation, or a set_len) made it.
                let mut resized = inode.persisted.clone();
                resized.resize(inode.data.len(), 0);
                resized
            } else {
                return (inode.persisted.clone(), mode);
            };
            let blocks = data
                .chunks_mut(TORN_BLOCK)
                .zip(inode.data.chunks(TORN_BLOCK));
            for (index, (old, new)) in (0u64..).zip(blocks) {
                if old != new && coin(seed, &[TAG_BLOCK, ino, index]) {
                    old.copy_from_slice(new);
                }
            }
            (data, mode)
        }
    }
}

const TAG_ENTRY: u64 = 1;
const TAG_MODE: u64 = 2;
const TAG_ALLOC: u64 = 3;
const TAG_BLOCK: u64 = 4;

/// A fair, deterministic coin for one decision named by `key`.
fn coin(seed: u64, key: &[u64]) -> bool {
    let mut h = splitmix(seed);
    for &k in key {
        h = splitmix(h ^ k);
    }
    h & 1 == 1
}

/// The SplitMix64 output function: a bijective mix of all 64 bits.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over a path's bytes.
fn path_hash(path: &Path) -> u64 {
    fnv1a(path.as_os_str().as_encoded_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl State {
    /// Bytes left under the capacity, if there is one: the capacity less
    /// the sizes of the files the directory entries name.
    fn free(&self) -> Option<u64> {
        let used: u64 = self
            .live
            .values()
            .filter_map(|ino| self.inodes.get(ino))
            .map(|inode| inode.data.len() as u64)
            .sum();
        self.capacity.map(|c| c.saturating_sub(used))
    }

    fn new(max_file_len: u64) -> Self {
        let mut dirs = BTreeMap::new();
        let root = Dir {
            ino: 2,
            mode: DIR_MODE,
            ctime: CLOCK_START,
        };
        dirs.insert(PathBuf::from("/"), root);
        Self {
            max_file_len,
            capacity: None,
            clock: CLOCK_START,
            cwd: PathBuf::from("/"),
            next_ino: 3,
            next_handle: 0,
            events: 0,
            scope: EventScope::Persistence,
            crash_at: None,
            crashed: None,
            fault: None,
            fault_ops: [0; Fault::ALL.len()],
            fault_hits: Vec::new(),
            dirs,
            live: BTreeMap::new(),
            durable: BTreeMap::new(),
            inodes: BTreeMap::new(),
            handles: BTreeMap::new(),
            guards: BTreeMap::new(),
        }
    }

    fn new_ino(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    /// Advances the logical clock and returns its new value.
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Fails once the storage has crashed.
    fn alive(&self) -> Result<(), Error> {
        match self.crashed {
            Some(event) => Err(Error::SimulatedCrash { event }),
            None => Ok(()),
        }
    }

    /// Counts one event of a call that changes something, when the scope
    /// makes those crash points.
    fn change(&mut self) -> Result<(), Error> {
        match self.scope {
            EventScope::Persistence => Ok(()),
            EventScope::EveryChange => self.event(),
        }
    }

    /// Counts one persistence event, or crashes at it.
    fn event(&mut self) -> Result<(), Error> {
        self.alive()?;
        let index = self.events;
        if self.crash_at.is_some_and(|at| index >= at) {
            self.crashed = Some(index);
            return Err(Error::SimulatedCrash { event: index });
        }
        self.events += 1;
        Ok(())
    }

    /// One call that `kinds` apply to, counted for each of them: fails with
    /// the armed fault's error (`err` of its `errno`) when the fault is one
    /// of `kinds` and this call is at or (sticky) after its index.
    fn faults(
        &mut self,
        kinds: &[Fault],
        op: &'static str,
        path: &Path,
        err: impl Fn(io::Error) -> Error,
    ) -> Result<(), Error> {
        let mut failed = None;
        for &kind in kinds {
            let index = self.fault_ops[kind.index()];
            self.fault_ops[kind.index()] += 1;
            let fires = match self.fault {
                Some((armed, at)) if armed == kind => {
                    index == at || (kind.is_sticky() && index > at)
                }
                _ => false,
            };
            if fires && failed.is_none() {
                failed = Some((kind, index));
            }
        }
        let Some((fault, index)) = failed else {
            return Ok(());
        };
        self.fault_hits.push(FaultHit {
            fault,
            index,
            op,
            path: path.to_path_buf(),
        });
        Err(err(io::Error::from_raw_os_error(fault.errno())))
    }

    /// Fails a call of `op` on `path` that `kinds` apply to with
    /// [`Error::Io`], as [`crate::FsStorage`] reports a failed system call.
    fn faults_io(&mut self, kinds: &[Fault], op: &'static str, path: &Path) -> Result<(), Error> {
        self.faults(kinds, op, path, |source| Error::Io {
            op,
            path: path.to_path_buf(),
            os: source,
        })
    }

    fn is_dir(&self, key: &Path) -> bool {
        key.as_os_str().is_empty() || self.dirs.contains_key(key)
    }

    fn is_locked(&self, ino: u64) -> bool {
        self.handles.values().any(|h| h.ino == ino)
    }

    /// Resolves a normalised path; `Err(errno)` when an ancestor is a file.
    fn lookup(&self, key: &Path) -> Result<Node, i32> {
        if let Some(dir) = self.dirs.get(key) {
            return Ok(Node::Dir(*dir));
        }
        if let Some(&ino) = self.live.get(key) {
            return Ok(Node::File(ino));
        }
        for ancestor in key.ancestors().skip(1) {
            if self.is_dir(ancestor) {
                let parent_ok = key.parent() == Some(ancestor);
                return Ok(Node::Missing { parent_ok });
            }
            if self.live.contains_key(ancestor) {
                return Err(libc::ENOTDIR);
            }
        }
        Ok(Node::Missing { parent_ok: false })
    }

    fn inode(&self, ino: u64) -> &Inode {
        // Every inode named by a handle or an entry is kept by
        // `collect_garbage`; an empty stand-in keeps this total.
        static EMPTY: Inode = Inode {
            data: Vec::new(),
            persisted: Vec::new(),
            mode: 0,
            durable_mode: 0,
            ctime: 0,
            cut_at: None,
        };
        self.inodes.get(&ino).unwrap_or(&EMPTY)
    }

    /// Drops inodes that no entry and no handle names any more.
    fn collect_garbage(&mut self) {
        let used: BTreeSet<u64> = self
            .live
            .values()
            .chain(self.durable.values())
            .copied()
            .chain(self.handles.values().map(|h| h.ino))
            .collect();
        self.inodes.retain(|ino, _| used.contains(ino));
    }

    fn open_handle(
        &mut self,
        ino: u64,
        path: &Path,
        access: Access,
        state: &Arc<Mutex<State>>,
    ) -> SimFile {
        let handle = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(
            handle,
            Handle {
                ino,
                pending: RangeSet::default(),
                poisoned: false,
            },
        );
        SimFile {
            state: Arc::clone(state),
            handle,
            ino,
            path: path.to_path_buf(),
            access,
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // No code path panics while holding the lock, and the state is
    // consistent between statements, so a poisoned lock is still usable.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_err(op: &'static str, path: &Path, errno: i32) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        os: io::Error::from_raw_os_error(errno),
    }
}

/// Lexical normalisation: `.` dropped, `..` removes the previous component
/// (there are no symbolic links), repeated and trailing slashes merged.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::Normal(_) => {
                out.push(component.as_os_str());
            }
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                Some(Component::CurDir | Component::ParentDir) | None => out.push(".."),
            },
        }
    }
    out
}

/// `[offset, offset + len)` as indices into a file of `file_len` bytes, if
/// it lies inside the file.
fn span(offset: u64, len: u64, file_len: usize) -> Option<Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= file_len).then_some(start..end)
}

impl Storage for SimStorage {
    type File = SimFile;
    type Aux = SimFile;

    fn stat(&self, path: &Path) -> Result<Option<Meta>, Error> {
        let st = self.lock();
        st.alive()?;
        let key = normalize(path);
        if key.as_os_str().is_empty() {
            return Ok(None);
        }
        match st.lookup(&key) {
            Ok(Node::Dir(dir)) => Ok(Some(Meta {
                len: DIR_LEN,
                mode: dir.mode,
                kind: FileKind::Directory,
                dev: SIM_DEV,
                ino: dir.ino,
                ctime: dir.ctime,
            })),
            Ok(Node::File(ino)) => {
                let inode = st.inode(ino);
                Ok(Some(Meta {
                    len: inode.data.len() as u64,
                    mode: inode.mode,
                    kind: FileKind::Regular,
                    dev: SIM_DEV,
                    ino,
                    ctime: inode.ctime,
                }))
            }
            Ok(Node::Missing { .. }) => Ok(None),
            Err(errno) => Err(io_err("stat", path, errno)),
        }
    }

    fn open(&self, path: &Path, access: Access) -> Result<SimFile, Error> {
        let (mut st, key) = self.entry("open", path)?;
        match st.lookup(&key) {
            Ok(Node::File(ino)) => {
                if access == Access::ReadWrite {
                    st.faults_io(&[Fault::ReadOnly], "open", path)?;
                }
                if st.is_locked(ino) {
                    return Err(Error::Locked {
                        path: path.to_path_buf(),
                    });
                }
                Ok(st.open_handle(ino, path, access, &self.state))
            }
            Ok(Node::Dir(_)) => Err(io_err("open", path, libc::EISDIR)),
            Ok(Node::Missing { .. }) => Err(io_err("open", path, libc::ENOENT)),
            Err(errno) => Err(io_err("open", path, errno)),
        }
    }

    fn create(&self, path: &Path, size: u64) -> Result<SimFile, Error> {
        self.create_file(path, size, false)
    }

    fn remove(&self, path: &Path) -> Result<(), Error> {
        let (mut st, key) = self.entry("unlink", path)?;
        match st.lookup(&key) {
            Ok(Node::File(_)) => {
                st.faults_io(&[Fault::ReadOnly], "unlink", path)?;
                st.guard("unlink", path, &key, true)?;
                st.change()?;
                st.live.remove(&key);
                st.collect_garbage();
                Ok(())
            }
            Ok(Node::Dir(_)) => Err(io_err("unlink", path, libc::EISDIR)),
            Ok(Node::Missing { .. }) => Err(io_err("unlink", path, libc::ENOENT)),
            Err(errno) => Err(io_err("unlink", path, errno)),
        }
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), Error> {
        let (mut st, key) = self.entry("chmod", path)?;
        let mode = mode & 0o7777;
        match st.lookup(&key) {
            Ok(Node::File(ino)) => {
                st.faults_io(&[Fault::ReadOnly], "chmod", path)?;
                st.change()?;
                let ctime = st.tick();
                if let Some(inode) = st.inodes.get_mut(&ino) {
                    inode.mode = mode;
                    inode.ctime = ctime;
                }
                Ok(())
            }
            Ok(Node::Dir(_)) => {
                st.faults_io(&[Fault::ReadOnly], "chmod", path)?;
                let ctime = st.tick();
                if let Some(dir) = st.dirs.get_mut(&key) {
                    dir.mode = mode;
                    dir.ctime = ctime;
                }
                Ok(())
            }
            Ok(Node::Missing { .. }) => Err(io_err("chmod", path, libc::ENOENT)),
            Err(errno) => Err(io_err("chmod", path, errno)),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), Error> {
        let (mut st, src) = self.entry("rename", from)?;
        let dst = normalize(to);
        if dst.as_os_str().is_empty() {
            return Err(io_err("rename", to, libc::ENOENT));
        }
        let ino = match st.lookup(&src) {
            Ok(Node::File(ino)) => ino,
            Ok(Node::Dir(_)) => return Err(io_err("rename", from, libc::EISDIR)),
            Ok(Node::Missing { .. }) => return Err(io_err("rename", from, libc::ENOENT)),
            Err(errno) => return Err(io_err("rename", from, errno)),
        };
        match st.lookup(&dst) {
            Ok(Node::File(_) | Node::Missing { parent_ok: true }) => {}
            Ok(Node::Dir(_)) => return Err(io_err("rename", to, libc::EISDIR)),
            Ok(Node::Missing { parent_ok: false }) => {
                return Err(io_err("rename", to, libc::ENOENT))
            }
            Err(errno) => return Err(io_err("rename", to, errno)),
        }
        if src == dst {
            return Ok(());
        }
        st.faults_io(&[Fault::ReadOnly], "rename", from)?;
        st.guard("rename", from, &src, true)?;
        st.guard("rename", to, &dst, false)?;
        st.change()?;
        st.live.remove(&src);
        st.live.insert(dst, ino);
        st.tick();
        st.collect_garbage();
        Ok(())
    }

    fn create_aux(&self, path: &Path, mode: u32) -> Result<SimFile, Error> {
        let file = self.create_file(path, 0, true)?;
        let (mut st, _) = self.entry("chmod", path)?;
        if let Some(inode) = st.inodes.get_mut(&file.ino) {
            inode.mode = mode & 0o7777;
        }
        drop(st);
        Ok(file)
    }

    fn open_aux(&self, path: &Path, access: Access) -> Result<SimFile, Error> {
        self.open(path, access)
    }

    fn removal_obstacle(&self, path: &Path) -> Result<Option<Obstacle>, Error> {
        self.obstacle(path, true)
    }

    fn creation_obstacle(&self, path: &Path) -> Result<Option<Obstacle>, Error> {
        self.obstacle(path, false)
    }

    fn free_space(&self, dir: &Path) -> Result<Option<u64>, Error> {
        let st = self.lock();
        st.alive()?;
        let _ = dir;
        Ok(st.free())
    }

    fn clock(&self) -> &dyn crate::Clock {
        &self.clock
    }

    fn current_dir(&self) -> Result<PathBuf, Error> {
        Ok(self.lock().cwd.clone())
    }

    fn fsync_dir(&self, dir: &Path) -> Result<(), Error> {
        let mut st = self.lock();
        st.alive()?;
        let key = normalize(dir);
        if !st.is_dir(&key) {
            let errno = match st.lookup(&key) {
                Ok(Node::File(_)) => libc::ENOTDIR,
                Ok(_) => libc::ENOENT,
                Err(errno) => errno,
            };
            return Err(io_err("open", dir, errno));
        }
        // A failed directory sync persists no entry.
        st.faults_io(&[Fault::SyncEio, Fault::ReadOnly], "fsync", dir)?;
        st.event()?;
        let in_dir = |p: &Path| p.parent() == Some(key.as_path());
        let entries: Vec<(PathBuf, u64)> = st
            .live
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, &ino)| (p.clone(), ino))
            .collect();
        st.durable.retain(|p, _| !in_dir(p));
        for (path, ino) in entries {
            if let Some(inode) = st.inodes.get_mut(&ino) {
                inode.durable_mode = inode.mode;
            }
            st.durable.insert(path, ino);
        }
        st.collect_garbage();
        Ok(())
    }
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn check_range(&self, op: &'static str, offset: u64, len: u64) -> Result<(), Error> {
        crate::error::check_range(op, &self.path, offset, len).map(drop)
    }

    /// A failed positioned call, as [`crate::FsStorage`] reports it.
    fn io_at(&self, op: &'static str, offset: u64, source: io::Error) -> Error {
        Error::IoAt {
            op,
            path: self.path.clone(),
            offset,
            os: source,
        }
    }

    fn past_end(&self, op: &'static str, offset: u64, len: u64, file_len: usize) -> Error {
        Error::IoAt {
            op,
            path: self.path.clone(),
            offset,
            os: io::Error::other(format!(
                "{len} bytes reach past the end of the {file_len}-byte file \
                 (simulated files never grow)"
            )),
        }
    }
}

impl PartFile for SimFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> Result<u64, Error> {
        let st = self.lock();
        st.alive()?;
        Ok(st.inode(self.ino).data.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let mut st = self.lock();
        st.alive()?;
        let len = buf.len() as u64;
        self.check_range("read", offset, len)?;
        let file_len = st.inode(self.ino).data.len();
        if span(offset, len, file_len).is_some() {
            st.faults(&[Fault::ReadEio], "read", &self.path, |source| {
                self.io_at("read", offset, source)
            })?;
        }
        let data = &st.inode(self.ino).data;
        match span(offset, len, data.len()).and_then(|r| data.get(r)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(Error::ShortRead {
                path: self.path.clone(),
                offset,
                len,
                got: (data.len() as u64).saturating_sub(offset).min(len),
            }),
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let mut st = self.lock();
        st.alive()?;
        if self.access == Access::ReadOnly {
            return Err(Error::IoAt {
                op: "write",
                path: self.path.clone(),
                offset,
                os: io::Error::from_raw_os_error(libc::EBADF),
            });
        }
        let len = data.len() as u64;
        self.check_range("write", offset, len)?;
        let file_len = st.inode(self.ino).data.len();
        let Some(range) = span(offset, len, file_len) else {
            return Err(self.past_end("write", offset, len, file_len));
        };
        let faults = [Fault::WriteEio, Fault::NoSpace, Fault::ReadOnly];
        st.faults(&faults, "write", &self.path, |source| {
            self.io_at("write", offset, source)
        })?;
        st.change()?;
        let ctime = st.tick();
        if let Some(inode) = st.inodes.get_mut(&self.ino) {
            if let Some(dst) = inode.data.get_mut(range) {
                dst.copy_from_slice(data);
            }
            inode.ctime = ctime;
        }
        Ok(())
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), Error> {
        let mut st = self.lock();
        st.alive()?;
        self.check_range("flush", offset, len)?;
        let file_len = st.inode(self.ino).data.len();
        if span(offset, len, file_len).is_none() {
            return Err(self.past_end("flush", offset, len, file_len));
        }
        st.event()?;
        if let Some(handle) = st.handles.get_mut(&self.handle) {
            // Cannot overflow: checked above.
            handle.pending.insert(offset, offset + len);
        }
        Ok(())
    }

    fn fence(&self) -> Result<(), Error> {
        let mut st = self.lock();
        st.alive()?;
        let (poisoned, flushed) = st
            .handles
            .get(&self.handle)
            .map_or((false, false), |h| (h.poisoned, !h.pending.0.is_empty()));
        if poisoned {
            return Err(Error::SyncPoisoned {
                path: self.path.clone(),
            });
        }
        let inode = st.inode(self.ino);
        let dirty = flushed || inode.persisted.len() != inode.data.len() || inode.cut_at.is_some();
        if dirty {
            // As `FsStorage`'s fence, which calls `fdatasync` only when
            // something is left to persist. A failed one persists nothing
            // and forgets what was flushed: the kernel may have dropped
            // those pages, or marked them clean, so no later fence could
            // promise them, and the handle refuses every later fence.
            let failed = st.faults_io(&[Fault::SyncEio, Fault::ReadOnly], "fdatasync", &self.path);
            if let Err(err) = failed {
                if let Some(handle) = st.handles.get_mut(&self.handle) {
                    handle.pending = RangeSet::default();
                    handle.poisoned = true;
                }
                return Err(err);
            }
        }
        st.event()?;
        let pending = match st.handles.get_mut(&self.handle) {
            Some(handle) => std::mem::take(&mut handle.pending),
            None => RangeSet::default(),
        };
        let Some(inode) = st.inodes.get_mut(&self.ino) else {
            return Ok(());
        };
        if inode.persisted.len() != inode.data.len() {
            // The first fence makes the allocation durable, and so does a
            // fence after set_len make the new length (the bytes kept are
            // kept, new ones read as zeros until their flush is fenced).
            inode.persisted.resize(inode.data.len(), 0);
        }
        if let Some(cut) = inode.cut_at.take() {
            if let (Some(dst), Some(src)) = (inode.persisted.get_mut(cut..), inode.data.get(cut..))
            {
                dst.copy_from_slice(src);
            }
        }
        for (start, end) in pending.0 {
            let Some(range) = span(start, end - start, inode.data.len()) else {
                continue;
            };
            if let (Some(dst), Some(src)) = (
                inode.persisted.get_mut(range.clone()),
                inode.data.get(range),
            ) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn ctime(&self) -> Result<u64, Error> {
        let st = self.lock();
        st.alive()?;
        Ok(st.inode(self.ino).ctime)
    }

    fn set_len(&self, len: u64) -> Result<(), Error> {
        let mut st = self.lock();
        st.alive()?;
        if self.access == Access::ReadOnly {
            return Err(Error::Io {
                op: "ftruncate",
                path: self.path.clone(),
                os: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let refuse = |errno| Error::Io {
            op: "ftruncate",
            path: self.path.clone(),
            os: io::Error::from_raw_os_error(errno),
        };
        if len > st.max_file_len {
            return Err(refuse(libc::EFBIG));
        }
        let old = st.inode(self.ino).data.len() as u64;
        if len > old && st.free().is_some_and(|free| len - old > free) {
            return Err(refuse(libc::ENOSPC));
        }
        st.faults_io(&[Fault::ReadOnly], "ftruncate", &self.path)?;
        if len > old {
            st.faults_io(&[Fault::NoSpace], "ftruncate", &self.path)?;
        }
        let new_len = usize::try_from(len).map_err(|_| refuse(libc::EFBIG))?;
        st.change()?;
        let ctime = st.tick();
        if let Some(inode) = st.inodes.get_mut(&self.ino) {
            let cut = new_len.min(inode.data.len());
            inode.cut_at = Some(inode.cut_at.map_or(cut, |c| c.min(cut)));
            if new_len < inode.data.len() {
                inode.data.truncate(new_len);
            } else {
                zero_fill(&mut inode.data, new_len);
            }
            inode.ctime = ctime;
        }
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.lock();
        st.handles.remove(&self.handle);
        st.collect_garbage();
    }
}

impl SimImage {
    /// The files, by normalised path.
    pub fn files(&self) -> &BTreeMap<PathBuf, SimImageFile> {
        &self.files
    }

    /// The file at `path`, if any.
    pub fn get(&self, path: &Path) -> Option<&SimImageFile> {
        self.files.get(&normalize(path))
    }

    /// Keeps only the files whose paths `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Path) -> bool) {
        self.files.retain(|p, _| keep(p));
    }

    /// Adds or replaces a file, for building an expected image.
    pub fn insert(&mut self, path: &Path, bytes: Vec<u8>, mode: u32) {
        self.files.insert(
            normalize(path),
            SimImageFile {
                bytes,
                mode: mode & 0o7777,
            },
        );
    }
}

// --- Guarded directories: what stands in the way of changing an entry ---

/// A mark on a directory of a [`SimStorage`] that makes changes of its
/// entries fail as the kernel's rules make them fail on a real file
/// system, so that tests can show that a writer checks before its first
/// write ([`Storage::removal_obstacle`], [`Storage::creation_obstacle`]).
/// Only entries are guarded (create, unlink, rename): data written into a
/// file that is already open still goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Guard {
    /// The directory and everything below it are on a file system mounted
    /// read-only: no entry is created, removed or renamed (`EROFS`).
    ReadOnly,
    /// The directory is not writable by this user (`EACCES`).
    NotWritable,
    /// The directory is immutable (`chattr +i`): no entry is created,
    /// removed or renamed (`EPERM`).
    Immutable,
    /// The directory is append-only (`chattr +a`): entries are created,
    /// but none is removed or renamed (`EPERM`).
    AppendOnly,
}

impl SimStorage {
    /// Puts `guard` on the directory `dir`, or takes its mark away
    /// (`None`). The mark outlives a simulated crash, as a mount option or
    /// an inode attribute does.
    pub fn guard_dir(&self, dir: &Path, guard: Option<Guard>) {
        let key = normalize(dir);
        let mut st = self.lock();
        match guard {
            Some(g) => st.guards.insert(key, g),
            None => st.guards.remove(&key),
        };
    }

    /// [`Storage::removal_obstacle`] (`removal`) or
    /// [`Storage::creation_obstacle`] of the simulated file system.
    fn obstacle(&self, path: &Path, removal: bool) -> Result<Option<Obstacle>, Error> {
        let st = self.lock();
        st.alive()?;
        Ok(st.guarded(&normalize(path), removal).map(|(o, _)| o))
    }
}

impl State {
    /// What stands in the way of removing or renaming the entry `key`
    /// (`removal`) or of creating it, with the errno the call fails with.
    fn guarded(&self, key: &Path, removal: bool) -> Option<(Obstacle, i32)> {
        let dir = key.parent().filter(|d| !d.as_os_str().is_empty())?;
        // A read-only mount covers its whole subtree.
        if dir
            .ancestors()
            .any(|a| self.guards.get(a) == Some(&Guard::ReadOnly))
        {
            let obstacle = Obstacle::ReadOnly {
                dir: dir.to_path_buf(),
            };
            return Some((obstacle, libc::EROFS));
        }
        let dir = dir.to_path_buf();
        match self.guards.get(&dir)? {
            Guard::NotWritable => Some((Obstacle::NotWritable { dir }, libc::EACCES)),
            Guard::Immutable => Some((Obstacle::Immutable { path: dir }, libc::EPERM)),
            Guard::AppendOnly if removal => Some((Obstacle::AppendOnly { path: dir }, libc::EPERM)),
            Guard::AppendOnly | Guard::ReadOnly => None,
        }
    }

    /// Fails `op` on `path` (normalised: `key`) as a guarded directory
    /// makes it fail.
    fn guard(&self, op: &'static str, path: &Path, key: &Path, removal: bool) -> Result<(), Error> {
        match self.guarded(key, removal) {
            Some((_, errno)) => Err(io_err(op, path, errno)),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SimStorage")
            .field("files", &st.live.len())
            .field("durable_files", &st.durable.len())
            .field("open_handles", &st.handles.len())
            .field("events", &st.events)
            .field("crash_at", &st.crash_at)
            .field("crashed", &st.crashed)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SimImageFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes, mode {:#o}, fnv1a {:#018x}",
            self.bytes.len(),
            self.mode,
            fnv1a(&self.bytes)
        )
    }
}

impl fmt::Debug for SimImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.files.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(set: &RangeSet) -> Vec<(u64, u64)> {
        set.0.iter().map(|(&s, &e)| (s, e)).collect()
    }

    fn one_file() -> (SimStorage, SimFile) {
        let s = SimStorage::new();
        s.add_dir(Path::new("/d")).expect("dir");
        let f = s.create(Path::new("/d/f"), 8192).expect("create");
        f.fence().expect("fence");
        s.fsync_dir(Path::new("/d")).expect("dir sync");
        (s, f)
    }

    #[test]
    fn faults_fail_with_the_file_systems_errors() {
        let (s, f) = one_file();
        let mut buf = [0u8; 4];
        s.inject(Fault::ReadEio, s.fault_ops(Fault::ReadEio) + 1);
        f.read_at(0, &mut buf).expect("the read before the fault");
        let err = f.read_at(4, &mut buf).expect_err("EIO");
        assert_eq!(
            err.to_string(),
            "read \"/d/f\" at offset 4: Input/output error"
        );
        f.read_at(4, &mut buf).expect("one-shot");
        let hit = s.fault_hit().expect("hit");
        assert_eq!((hit.fault, hit.op), (Fault::ReadEio, "read"));
        assert_eq!(hit.path, Path::new("/d/f"));

        s.inject(Fault::NoSpace, s.fault_ops(Fault::NoSpace));
        let err = s.create(Path::new("/d/g"), 4096).expect_err("ENOSPC");
        assert_eq!(
            err.to_string(),
            "posix_fallocate \"/d/g\", 4096: No space left on device"
        );
        assert!(s.stat(Path::new("/d/g")).expect("stat").is_none());
        let err = f.write_at(0, b"x").expect_err("sticky");
        assert!(
            err.to_string().ends_with("No space left on device"),
            "{err}"
        );
        let err = s.create_aux(Path::new("/d/a"), 0o600).expect_err("aux");
        assert_eq!(err.to_string(), "open \"/d/a\": No space left on device");

        s.inject(Fault::ReadOnly, s.fault_ops(Fault::ReadOnly));
        f.read_at(0, &mut buf).expect("reads go on");
        let err = s.set_mode(Path::new("/d/f"), 0o600).expect_err("EROFS");
        assert_eq!(err.to_string(), "chmod \"/d/f\": Read-only file system");
        assert!(s.remove(Path::new("/d/f")).is_err());
        drop(f);
        assert!(s.open(Path::new("/d/f"), Access::ReadWrite).is_err());
        s.open(Path::new("/d/f"), Access::ReadOnly)
            .expect("read-only open");
        s.clear_fault();
        s.open(Path::new("/d/f"), Access::ReadWrite)
            .expect("writable again");
    }

    #[test]
    fn a_failed_fence_persists_nothing_and_poisons_its_handle() {
        let (s, f) = one_file();
        f.write_at(0, b"new").expect("write");
        f.flush(0, 3).expect("flush");
        s.inject(Fault::SyncEio, s.fault_ops(Fault::SyncEio));
        let err = f.fence().expect_err("EIO");
        assert_eq!(err.to_string(), "fdatasync \"/d/f\": Input/output error");
        assert_eq!(
            s.persisted_bytes(Path::new("/d/f")).expect("file")[..3],
            [0, 0, 0]
        );
        f.write_at(0, b"new").expect("write");
        f.flush(0, 3).expect("flush");
        assert!(matches!(f.fence(), Err(Error::SyncPoisoned { .. })));
        drop(f);
        // A new handle starts clean, with nothing pending.
        let g = s.open(Path::new("/d/f"), Access::ReadWrite).expect("open");
        g.flush(0, 3).expect("flush");
        g.fence().expect("fence");
        assert_eq!(
            &s.persisted_bytes(Path::new("/d/f")).expect("file")[..3],
            b"new"
        );
        // A fence with nothing to persist calls no fdatasync.
        s.inject(Fault::SyncEio, s.fault_ops(Fault::SyncEio));
        g.fence().expect("nothing to persist");
        s.create(Path::new("/d/h"), 4096).expect("create");
        let err = s.fsync_dir(Path::new("/d")).expect_err("EIO");
        assert_eq!(err.to_string(), "fsync \"/d\": Input/output error");
        assert!(s
            .after_crash()
            .stat(Path::new("/d/h"))
            .expect("stat")
            .is_none());
    }

    #[test]
    fn range_set_merges_overlapping_and_touching_ranges() {
        let mut set = RangeSet::default();
        set.insert(10, 20);
        set.insert(30, 40);
        set.insert(5, 5);
        assert_eq!(ranges(&set), [(10, 20), (30, 40)]);
        set.insert(20, 25);
        assert_eq!(ranges(&set), [(10, 25), (30, 40)]);
        set.insert(0, 2);
        set.insert(50, 60);
        set.insert(24, 55);
        assert_eq!(ranges(&set), [(0, 2), (10, 60)]);
        set.insert(1, 70);
        assert_eq!(ranges(&set), [(0, 70)]);
    }

    #[test]
    fn normalisation_is_lexical() {
        let n = |s: &str| normalize(Path::new(s));
        assert_eq!(n("/a//b/./c/"), PathBuf::from("/a/b/c"));
        assert_eq!(n("/a/../b"), PathBuf::from("/b"));
        assert_eq!(n("/.."), PathBuf::from("/"));
        assert_eq!(n("a/../../b"), PathBuf::from("../b"));
        assert_eq!(n("./x"), PathBuf::from("x"));
        assert_eq!(n(""), PathBuf::new());
    }

    #[test]
    fn span_stays_inside_the_file() {
        assert_eq!(span(0, 10, 10), Some(0..10));
        assert_eq!(span(10, 0, 10), Some(10..10));
        assert_eq!(span(5, 6, 10), None);
        assert_eq!(span(11, 0, 10), None);
        assert_eq!(span(u64::MAX, 1, 10), None);
    }

    #[test]
    fn coins_are_deterministic_and_roughly_fair() {
        let heads = (0..1000u64)
            .filter(|&i| coin(7, &[TAG_BLOCK, 1, i]))
            .count();
        assert!((400..600).contains(&heads), "{heads} heads of 1000");
        assert_eq!(coin(7, &[1, 2]), coin(7, &[1, 2]));
        let differs = (0..64u64).any(|seed| coin(seed, &[1, 2]) != coin(seed + 1, &[1, 2]));
        assert!(differs);
    }
}
