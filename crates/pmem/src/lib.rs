//! Persistence primitives and part-file storage.
//!
//! CONTRACT SKELETON (to be replaced by the implementation): the public items
//! below are the API that the engine builds against. The engine reaches
//! storage only through [`Storage`] and [`PartFile`], so tests can substitute
//! a simulated backend.
#![allow(unsafe_code)] // This crate is the one place unsafe code may live; see ARCHITECTURE.md.

use std::path::{Path, PathBuf};

/// Errors of storage operations, each naming the path and the operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed.
    #[error("{op} \"{path}\": {source}")]
    Io { op: &'static str, path: PathBuf, #[source] source: std::io::Error },
    /// `flock(LOCK_EX|LOCK_NB)` found the file locked by another open file description.
    #[error("flock \"{path}\": resource temporarily unavailable (the pool is in use)")]
    Locked { path: PathBuf },
}

/// How to open an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access { ReadOnly, ReadWrite }

/// What `stat` tells about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub len: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub kind: FileKind,
    pub dev: u64,
    pub ino: u64,
    /// `st_ctime` seconds.
    pub ctime: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind { Regular, Directory, CharDevice, Other }

/// One open (and flocked) file.
pub trait PartFile: Send + Sync + std::fmt::Debug {
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
}

/// A file system as the engine sees it.
pub trait Storage: Send + Sync + std::fmt::Debug {
    type File: PartFile;
    /// `stat` following symlinks; `Ok(None)` when the path does not exist.
    fn stat(&self, path: &Path) -> Result<Option<Meta>, Error>;
    /// Opens an existing file and takes `flock(LOCK_EX|LOCK_NB)` on it.
    fn open(&self, path: &Path, access: Access) -> Result<Self::File, Error>;
    /// Creates a new part as PMDK does: `O_CREAT|O_EXCL`, mode 0, fully
    /// allocated with `posix_fallocate` to `size`, flocked. Read-write.
    fn create(&self, path: &Path, size: u64) -> Result<Self::File, Error>;
    /// Unlinks a file.
    fn remove(&self, path: &Path) -> Result<(), Error>;
    /// `chmod`.
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), Error>;
}

/// The real file system, through the page cache (pread/pwrite, fdatasync).
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;
