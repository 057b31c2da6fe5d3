//! Reading a pool set path: a `*.set` file or a single-file pool.

use std::path::{Path, PathBuf};

use poolsync_pmem::{Access, FileKind, PartFile, Storage};
use poolsync_poolset::{Options, Part, PartSize, PoolSet, Replica};

use crate::Error;

/// Largest pool set file we read; PMDK has no limit, but a text file this
/// big is certainly not a pool set.
pub const MAX_SET_FILE: u64 = 16 << 20;

/// What a user-given path turned out to be.
#[derive(Debug)]
pub struct Loaded<F> {
    /// The path as given.
    pub path: PathBuf,
    /// The set: parsed from a `*.set` file, or synthesised for a single-file
    /// pool (one replica, one part of the file's page-aligned size).
    pub set: PoolSet,
    /// `true` when `path` is a pool set file.
    pub is_poolset: bool,
    /// The open, flocked pool set file (kept open to hold the lock), or the
    /// single-file pool itself.
    pub file: F,
    /// The Device DAX of every part (`devices[r][p]`; docs/format.md §25).
    pub devices: crate::devdax::Devices,
}

/// Opens `path`, takes its lock and classifies it (docs/format.md §13.1,
/// §13.9).
///
/// A file whose first 11 bytes are `PMEMPOOLSET` is parsed as a pool set;
/// anything else is a single-file pool, and so is a Device DAX, whatever it
/// holds. The parts of a pool set are probed for Device DAX as PMDK's
/// parser does: `AUTO` sizes become the devices' sizes, and the rules of
/// docs/format.md §25.2 are checked ([`crate::devdax::resolve`]).
pub fn load<S: Storage>(
    storage: &S,
    path: &Path,
    access: Access,
) -> Result<Loaded<S::File>, Error> {
    let meta = storage.stat(path)?.ok_or_else(|| Error::NotFound {
        path: path.to_path_buf(),
    })?;
    if meta.kind == FileKind::Directory {
        return Err(Error::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    let device = storage.device_dax(path)?;
    let file = storage.open(path, access)?;
    let len = match device {
        Some(dev) => dev.size,
        None => file.len()?,
    };
    let mut head = [0u8; 11];
    let is_poolset = device.is_none() && len >= head.len() as u64 && {
        file.read_at(0, &mut head)?;
        poolsync_poolset::is_poolset(&head)
    };
    let set = if is_poolset {
        if len > MAX_SET_FILE {
            return Err(Error::SetTooLarge {
                path: path.to_path_buf(),
                len,
            });
        }
        let mut buf = vec![0u8; len as usize];
        file.read_at(0, &mut buf)?;
        let text = String::from_utf8(buf).map_err(|e| Error::PoolSet {
            path: path.to_path_buf(),
            line: line_of(e.as_bytes(), e.utf8_error().valid_up_to()),
            reason: "the pool set file is not valid UTF-8 text".to_string(),
        })?;
        poolsync_poolset::parse(&text).map_err(|e| Error::PoolSet {
            path: path.to_path_buf(),
            line: e.line(),
            reason: e.reason(),
        })?
    } else {
        single_file_set(path, len)
    };
    let (set, devices) = if is_poolset {
        crate::devdax::resolve(storage, path, &set)?
    } else {
        (set, vec![vec![device]])
    };
    Ok(Loaded {
        path: path.to_path_buf(),
        set,
        is_poolset,
        file,
        devices,
    })
}

/// The set PMDK synthesises for a single-file pool.
pub fn single_file_set(path: &Path, len: u64) -> PoolSet {
    PoolSet {
        options: Options::default(),
        replicas: vec![Replica::Local {
            parts: vec![Part {
                size: PartSize::Bytes(len),
                path: path.to_string_lossy().into_owned(),
                line: 0,
            }],
            line: 0,
        }],
    }
}

/// The text of `path` when it is a small regular file that [`load`] takes
/// for a single-file pool although it holds text (UTF-8 without NUL bytes;
/// a pool's binary header has them), else `None`. Lets a caller explain
/// why a file meant as a pool set is not read as one (see
/// `poolsync_poolset::signature_fix`); it changes no classification.
pub fn non_poolset_text<S: Storage>(storage: &S, path: &Path) -> Option<String> {
    let meta = storage.stat(path).ok()??;
    if meta.kind != FileKind::Regular || meta.len > MAX_SET_FILE {
        return None;
    }
    let file = storage.open(path, Access::ReadOnly).ok()?;
    let len = file.len().ok().filter(|&len| len <= MAX_SET_FILE)?;
    let mut bytes = vec![0u8; usize::try_from(len).ok()?];
    file.read_at(0, &mut bytes).ok()?;
    if poolsync_poolset::is_poolset(&bytes) || bytes.contains(&0) {
        return None;
    }
    String::from_utf8(bytes).ok()
}

fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes.iter().take(offset).filter(|&&b| b == b'\n').count()
}
/// `path` made absolute against the storage's working directory,
/// lexically (symbolic links are not followed; `.` components go, `..`
/// stay), as journals and undo files record it.
pub(crate) fn absolute<S: Storage>(storage: &S, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match storage.current_dir() {
            Ok(cwd) => cwd.join(path),
            Err(_) => path.to_path_buf(),
        }
    };
    joined.components().collect()
}
