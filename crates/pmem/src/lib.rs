//! Persistence primitives and part-file storage.
//!
//! The engine reaches storage only through the [`Storage`] and [`PartFile`]
//! traits: write into a range, flush a range, fence, and sync directories.
//! The traits promise one crash model (a flushed range is durable only
//! after the next fence; a new or removed file only after a sync of its
//! directory), and three backends implement them:
//!
//! * **Page cache** — [`FsStorage`], the real file system, available now;
//! * **Simulated** — [`sim::SimStorage`], available now: an in-memory file
//!   system that keeps a written and a persisted image of every file and can
//!   crash at any flush, fence or directory sync, so that every writer can
//!   be tested at every persistence point;
//! * **DAX** — [`DaxStorage`]: files mapped with `MAP_SYNC` in bounded
//!   windows, written with CPU stores (non-temporal ones for large writes),
//!   and persisted with CLWB, CLFLUSHOPT or CLFLUSH (chosen from CPUID) and
//!   SFENCE; it can be forced onto any file, as libpmem's
//!   `PMEM_IS_PMEM_FORCE=1` is, for tests and benchmarks.
//!
//! [`FsStorage`] works through the page cache:
//!
//! * every file it opens or creates is locked with
//!   `flock(LOCK_EX|LOCK_NB)` on its own open file description, as
//!   libpmemobj locks part files, so a pool in use elsewhere (or a part named
//!   twice in one pool set) is refused with [`Error::Locked`];
//! * [`Storage::create`] makes a new part the way PMDK does: `O_CREAT|O_EXCL`,
//!   mode 0, fully allocated with `posix_fallocate`, and removed again if any
//!   step fails;
//! * writes land in the page cache; [`PartFile::flush`] records that there
//!   is something to persist and asks a per-file background thread to
//!   `fdatasync` the file while the caller goes on, and
//!   [`PartFile::fence`] waits for that thread, reports any error it met,
//!   and `fdatasync`s whatever it did not cover, so everything flushed is
//!   durable when it returns.
//!
//! Every backend also hands the engine its [`Clock`] and working directory
//! ([`Storage::clock`], [`Storage::current_dir`]): the engine reads neither
//! from the system itself, so the simulated backend can drive both.
//!
//! [`persist_mode_from_env`] reads the environment overrides that choose
//! between persistence paths (`POOLSYNC_PERSIST`, PMDK's
//! `PMEM_IS_PMEM_FORCE`), and [`AnyStorage::from_env`] builds the storage
//! they select.
//!
//! # Example
//!
//! ```
//! use poolsync_pmem::{Access, FsStorage, PartFile, Storage};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("pool.part");
//! let storage = FsStorage;
//!
//! let part = storage.create(&path, 1 << 20)?;
//! part.write_at(4096, b"hello")?;
//! part.flush(4096, 5)?;
//! part.fence()?;
//! // Make the new directory entry durable too, then open the part for
//! // others (PMDK creates parts with mode 0 and chmods them at the end).
//! storage.fsync_parent(&path)?;
//! storage.set_mode(&path, 0o664)?;
//!
//! // While `part` is open, the file is locked.
//! assert!(storage.open(&path, Access::ReadOnly).is_err());
//! drop(part);
//!
//! let part = storage.open(&path, Access::ReadOnly)?;
//! let mut buf = [0u8; 5];
//! part.read_at(4096, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! assert_eq!(part.len()?, 1 << 20);
//! # Ok(())
//! # }
//! ```
#![allow(unsafe_code)] // This crate is the one place unsafe code may live; see ARCHITECTURE.md.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod any;
mod clock;
pub mod dax;
mod error;
mod fs;
mod obstacle;
mod persist;
pub mod sim;
mod sync_state;

use std::path::{Path, PathBuf};

pub use any::{AnyFile, AnyStorage};
pub use clock::{Clock, LogicalClock, SystemClock, LOGICAL_CLOCK_START};
pub use dax::{
    choose_flush, CpuFeatures, DaxFile, DaxOptions, DaxStorage, DevDax, DevDaxProbe, FlushKind,
    Mapping,
};
pub use error::Error;
pub use fs::{FsFile, FsStorage};
pub use obstacle::Obstacle;
pub use persist::{
    persist_mode_from_env, persist_override, PersistMode, PersistOverride, PERSIST_VAR,
    PMEM_IS_PMEM_FORCE_VAR,
};

/// How to open an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `O_RDONLY`.
    ReadOnly,
    /// `O_RDWR`.
    ReadWrite,
}

/// What `stat` tells about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// `st_size` (0 for a Device DAX character device).
    pub len: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// The file type.
    pub kind: FileKind,
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_ctime` seconds.
    pub ctime: u64,
}

/// The type of a file, as far as pool sets care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A character device, such as a Device DAX (`/dev/daxX.Y`).
    CharDevice,
    /// Anything else (block device, FIFO, socket).
    Other,
}

/// One open (and flocked) file.
// Emptiness is not a question callers ask of a part file, and an
// `is_empty` would only be `len()? == 0` behind another fallible call.
#[allow(clippy::len_without_is_empty)]
pub trait PartFile: Send + Sync + std::fmt::Debug {
    /// The path the file was opened by.
    fn path(&self) -> &Path;
    /// Current length in bytes.
    fn len(&self) -> Result<u64, Error>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error>;
    /// Writes `data` at `offset` (not yet durable).
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error>;
    /// Schedules `[offset, offset+len)` for persistence.
    fn flush(&self, offset: u64, len: u64) -> Result<(), Error>;
    /// Makes every flushed range durable before returning.
    fn fence(&self) -> Result<(), Error>;
    /// `st_ctime` seconds now (PMDK writes it as crtime).
    fn ctime(&self) -> Result<u64, Error>;
    /// Sets the length (`ftruncate`): cuts the file, or extends it with
    /// zeros. The new length is durable after the next
    /// [`PartFile::fence`]. Meant for auxiliary files
    /// ([`Storage::create_aux`]); the engine never changes the length of a
    /// part, and a mapped part (the DAX backend's) refuses.
    fn set_len(&self, len: u64) -> Result<(), Error>;
    /// Says that this file is written once, front to back, and not read
    /// back through this handle (an update packet as it is exported): a
    /// backend may then drop from its cache what it has made durable. A
    /// hint only; by default it does nothing.
    fn write_once(&self) {}
}

/// A file system as the engine sees it.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The open-file type.
    type File: PartFile;
    /// The type of auxiliary files ([`Storage::create_aux`]).
    type Aux: PartFile;
    /// `stat` following symlinks; `Ok(None)` when the path does not exist.
    fn stat(&self, path: &Path) -> Result<Option<Meta>, Error>;
    /// Opens an existing file and takes `flock(LOCK_EX|LOCK_NB)` on it.
    fn open(&self, path: &Path, access: Access) -> Result<Self::File, Error>;
    /// Creates a new part as PMDK does: `O_CREAT|O_EXCL`, mode 0, fully
    /// allocated with `posix_fallocate` to `size`, flocked. Read-write.
    ///
    /// An existing file is never touched ([`Error::Exists`]); if a later
    /// step fails, the new file is removed before the error is returned. The
    /// new directory entry is durable only after
    /// [`Storage::fsync_dir`] of its directory.
    fn create(&self, path: &Path, size: u64) -> Result<Self::File, Error>;
    /// Unlinks a file. The removal is durable only after
    /// [`Storage::fsync_dir`] of its directory.
    fn remove(&self, path: &Path) -> Result<(), Error>;
    /// `chmod`.
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), Error>;
    /// The target of the symbolic link at `path` as stored in the link
    /// (`readlink`), or `None` when `path` is not a symbolic link or does
    /// not exist. The default says `None`: storage without symbolic links
    /// (the simulated backend).
    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>, Error> {
        let _ = path;
        Ok(None)
    }
    /// What would keep the directory entry `path` from being removed now:
    /// unlinked, renamed (moved aside), or replaced (unlinked and created
    /// anew); `Ok(None)` when nothing known stands in the way. A path that
    /// does not exist (yet) is judged by its directory alone: that is the
    /// question for a file a run creates and deletes again.
    ///
    /// Writers ask it for every file they will delete, replace or move
    /// before their first write, so that a run that could not finish is
    /// refused instead of stopping half-way. Backends of real files answer
    /// from the kernel's rules (see [`Obstacle`]); the simulated one from
    /// the marks [`sim::SimStorage::guard_dir`] sets.
    fn removal_obstacle(&self, path: &Path) -> Result<Option<Obstacle>, Error>;
    /// What would keep a new file from being created at `path` now (its
    /// directory missing, on a read-only file system, not writable by this
    /// user, or immutable); `Ok(None)` when nothing known stands in the way.
    fn creation_obstacle(&self, path: &Path) -> Result<Option<Obstacle>, Error>;
    /// Renames `from` to `to`, atomically replacing a file at `to`
    /// (`rename(2)`). Both entries are durable only after
    /// [`Storage::fsync_dir`] of their directories.
    fn rename(&self, from: &Path, to: &Path) -> Result<(), Error>;

    /// Creates an *auxiliary* file: one that lives beside a pool but holds
    /// none of its data (a state file, an update packet, a rewind request).
    /// `O_CREAT|O_EXCL`, empty, with permission bits `mode`, flocked,
    /// read-write. It grows with [`PartFile::set_len`], and it goes through
    /// the page cache on every backend, since it is neither mapped nor
    /// fallocated. An existing file is never touched ([`Error::Exists`]);
    /// the new entry is durable only after [`Storage::fsync_dir`].
    fn create_aux(&self, path: &Path, mode: u32) -> Result<Self::Aux, Error>;
    /// Opens an existing auxiliary file and takes its lock, as
    /// [`Storage::open`] does for parts.
    fn open_aux(&self, path: &Path, access: Access) -> Result<Self::Aux, Error>;

    /// `Some` with the size and mapping alignment of the Device DAX that
    /// `path` names, `None` when it names none (a regular file, a
    /// directory, nothing). Every backend that stores real files answers
    /// through the one probe, [`dax::DevDaxProbe`], so that tests can say
    /// "this path is a Device DAX" with a fake sysfs tree
    /// (`POOLSYNC_SYSFS`). The default, for storage that holds no devices
    /// (the simulated one), is `None`; a wrapper may answer otherwise to
    /// test the engine with Device DAX parts.
    fn device_dax(&self, path: &Path) -> Result<Option<DevDax>, Error> {
        let _ = path;
        Ok(None)
    }

    /// The clock the engine measures and waits with: the real one for
    /// real file systems, a logical one for the simulated backend (see
    /// [`Clock`]).
    fn clock(&self) -> &dyn Clock;

    /// The directory relative paths are resolved against (the process's
    /// working directory for real file systems).
    fn current_dir(&self) -> Result<PathBuf, Error>;

    /// Makes the entries of directory `dir` durable (files created, removed
    /// or renamed in it); an empty path means the current directory.
    ///
    /// The default does nothing, which is right for storage whose directory
    /// entries are durable as soon as they change (such as in-memory test
    /// backends); [`FsStorage`] opens the directory and `fsync`s it.
    fn fsync_dir(&self, dir: &Path) -> Result<(), Error> {
        let _ = dir;
        Ok(())
    }

    /// [`Storage::fsync_dir`] of the directory that holds `path`.
    fn fsync_parent(&self, path: &Path) -> Result<(), Error> {
        match path.parent() {
            Some(parent) => self.fsync_dir(parent),
            // `path` is a root or empty: it is its own directory.
            None => self.fsync_dir(path),
        }
    }

    /// Bytes an unprivileged user may still allocate in the file system
    /// that holds directory `dir` (`statvfs`: `f_bavail × f_frsize`);
    /// `Ok(None)` when that cannot be known.
    ///
    /// The default asks the real file system, which is right for every
    /// backend that stores real files; for a path the real file system does
    /// not have (an in-memory backend's) the answer is `None`.
    fn free_space(&self, dir: &Path) -> Result<Option<u64>, Error> {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Ok(nix::sys::statvfs::statvfs(dir)
            .ok()
            .map(|st| st.blocks_available().saturating_mul(st.fragment_size())))
    }

    /// `path` with every symbolic link resolved and every `.` and `..`
    /// component removed, relative paths taken from
    /// [`Storage::current_dir`] (`realpath(3)`); `Ok(None)` when it does not
    /// exist. `poolsync serve` checks with it that what it touches lies
    /// under its root.
    ///
    /// The default, right for storage without symbolic links (such as
    /// in-memory test backends), removes `.` and `..` lexically and checks
    /// that the result exists; [`FsStorage`] asks the real file system.
    fn canonicalize(&self, path: &Path) -> Result<Option<PathBuf>, Error> {
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.current_dir()?.join(path)
        };
        let mut out = PathBuf::new();
        for component in full.components() {
            match component {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                other => out.push(other.as_os_str()),
            }
        }
        Ok(self.stat(&out)?.map(|_| out))
    }

    /// Opens `path` read-only (taking and releasing its lock) and reads the
    /// whole file, refusing ([`Error::TooLarge`]) one longer than `max_len`
    /// before allocating anything.
    fn read_all(&self, path: &Path, max_len: u64) -> Result<Vec<u8>, Error> {
        let file = self.open(path, Access::ReadOnly)?;
        let len = file.len()?;
        let too_large = || Error::TooLarge {
            path: path.to_path_buf(),
            len,
            max: max_len,
        };
        if len > max_len {
            return Err(too_large());
        }
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| too_large())?];
        file.read_at(0, &mut buf)?;
        Ok(buf)
    }
}
