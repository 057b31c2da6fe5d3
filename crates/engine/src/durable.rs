//! The small durable writes every writer shares: bytes written, flushed
//! and fenced before the call returns; a pool header written that way; a
//! file removed if it is there; a small file created whole; a small file
//! replaced whole by one written aside.
//!
//! Each mechanism exists once, so that its crash behaviour (what a crash
//! between its steps leaves) is argued once, here.

use std::path::Path;

use poolsync_header::PoolHdr;
use poolsync_pmem::{PartFile, Storage};

use crate::Error;

/// Writes `bytes` at `offset` of `file`, then flushes and fences them: they
/// are durable when this returns. A crash before leaves each 512-byte
/// sector old or new.
pub(crate) fn write_at<F: PartFile>(file: &F, offset: u64, bytes: &[u8]) -> Result<(), Error> {
    file.write_at(offset, bytes)?;
    file.flush(offset, bytes.len() as u64)?;
    file.fence()?;
    Ok(())
}

/// Writes `hdr` whole (its stored checksum as is) over the header page of
/// `file`, durably.
pub(crate) fn write_header<F: PartFile>(file: &F, hdr: &PoolHdr) -> Result<(), Error> {
    write_at(file, 0, &hdr.encode_raw())
}

/// Removes `path` if it exists; `Ok(false)` when it was already gone (by
/// hand, or by an earlier run that stopped before its directory sync).
/// The removal is durable only after a sync of the directory.
pub(crate) fn remove_if_exists<S: Storage>(storage: &S, path: &Path) -> Result<bool, Error> {
    match storage.remove(path) {
        Ok(()) => Ok(true),
        // Gone only when a stat says so: a stat that fails too (the storage
        // itself is failing) leaves the removal's error standing.
        Err(e) if matches!(storage.stat(path), Ok(None)) => {
            drop(e);
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes the part file `path` if it exists, as [`remove_if_exists`]
/// does; a Device DAX, which is never unlinked, has its head zeroed
/// instead (`crate::devdax::zero_head`, durable when this returns).
/// `Ok(false)` when there was nothing to remove.
pub(crate) fn remove_part<S: Storage>(storage: &S, path: &Path) -> Result<bool, Error> {
    match storage.device_dax(path)? {
        Some(dev) => {
            let file = storage.open(path, poolsync_pmem::Access::ReadWrite)?;
            crate::devdax::zero_head(&file, dev.size)?;
            Ok(true)
        }
        None => remove_if_exists(storage, path),
    }
}

/// Creates `path` (which must not exist) holding `bytes`, with mode
/// `mode`, and makes the data, the mode and the directory entry durable.
/// A crash before the end leaves no file, or a file whose tail may be
/// zero: readers of such files must treat trailing NULs as unwritten.
pub(crate) fn create_file<S: Storage>(
    storage: &S,
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), Error> {
    let file = storage.create(path, bytes.len() as u64)?;
    write_at(&file, 0, bytes)?;
    drop(file);
    storage.set_mode(path, mode)?;
    storage.fsync_parent(path)?;
    Ok(())
}

/// Replaces the small file `path` with `bytes`, whole: they are written to
/// `<path>.tmp` (created anew, mode 0644), flushed and fenced, the
/// directory synced, the copy renamed over `path` and the directory synced
/// again. A crash leaves the old file or the new one, and perhaps a
/// `.tmp` that the next replacement removes first.
pub(crate) fn replace_small_file<S: Storage>(
    storage: &S,
    path: &Path,
    bytes: &[u8],
) -> Result<(), Error> {
    let tmp = beside(path, ".tmp");
    remove_if_exists(storage, &tmp)?;
    let file = storage.create_aux(&tmp, 0o644)?;
    file.set_len(bytes.len() as u64)?;
    file.write_at(0, bytes)?;
    file.flush(0, bytes.len() as u64)?;
    file.fence()?;
    drop(file);
    storage.fsync_parent(&tmp)?;
    storage.rename(&tmp, path)?;
    storage.fsync_parent(path)?;
    Ok(())
}

/// `path` with `suffix` appended to its file name: where poolsync keeps a
/// file that belongs with another (`<set>.poolsync-state`, a temporary
/// `<file>.tmp`, ...).
pub(crate) fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    std::path::PathBuf::from(name)
}

/// `path` made absolute against `cwd`, without touching the file system,
/// so that a record names a file whatever directory reads it later.
pub(crate) fn absolute(cwd: &Path, path: &Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.components().collect()
    } else {
        cwd.join(path).components().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_pmem::sim::SimStorage;

    #[test]
    fn a_created_file_is_durable_with_its_mode() {
        let s = SimStorage::new();
        s.add_dir(Path::new("/d")).unwrap();
        create_file(&s, Path::new("/d/f"), b"hello", 0o600).unwrap();
        let after = s.after_crash();
        assert_eq!(
            after.persisted_bytes(Path::new("/d/f")).as_deref(),
            Some(&b"hello"[..])
        );
        assert!(remove_if_exists(&s, Path::new("/d/f")).unwrap());
        assert!(!remove_if_exists(&s, Path::new("/d/f")).unwrap());
    }
}
