//! The engine's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine. Every variant names the file
/// and the line, offset or field concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pool set file failed to parse.
    #[error("{path}:{line}: {reason}", path = path.display())]
    PoolSet { path: PathBuf, line: usize, reason: String },
    /// The path does not exist.
    #[error("{path}: no such file or directory", path = path.display())]
    NotFound { path: PathBuf },
    /// The path is a directory, not a pool or pool set file.
    #[error("{path}: is a directory, not a pool or pool set file", path = path.display())]
    IsDirectory { path: PathBuf },
    /// A file that starts like a pool set but is far too large to be one.
    #[error("{path}: pool set file is {len} bytes, larger than any pool set file can be", path = path.display())]
    SetTooLarge { path: PathBuf, len: u64 },
    /// Storage failed (open, lock, read, write, create, remove).
    #[error(transparent)]
    Storage(#[from] poolsync_pmem::Error),
    // Module owners: add new variants BELOW this line, each with path and
    // field/offset context.
}
