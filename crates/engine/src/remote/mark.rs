//! The sync mark a remote replica's host keeps beside its pool set file,
//! `<set>.poolsync-synced` (`docs/wire.md` section 9): which epoch of
//! which source's lineage the pool holds, and its `run_id` then.
//!
//! `poolsync serve` writes it at the end of an update and reports it when
//! a session opens; it removes it when a session opens for writing, before
//! anything can change. Every local writer that changes a pool's data
//! removes it too ([`forget`]), so a mark that is there was written after
//! the last change poolsync made to the pool.

use std::path::{Path, PathBuf};

use poolsync_pmem::Storage;
use poolsync_wire::{SyncMark, MARK_LEN};

use crate::Error;

/// What the mark's name adds to the pool set file's.
pub const MARK_SUFFIX: &str = ".poolsync-synced";

/// The mark of the pool set file `set_path`.
pub fn mark_path(set_path: &Path) -> PathBuf {
    crate::durable::beside(set_path, MARK_SUFFIX)
}

/// The mark and its temporary copy, as `rm` removes them.
pub fn mark_files(set_path: &Path) -> [PathBuf; 2] {
    let path = mark_path(set_path);
    let tmp = crate::durable::beside(&path, ".tmp");
    [path, tmp]
}

/// The mark of `set_path`, when there is one that verifies; a missing,
/// unreadable or damaged one is no mark (the update then compares every
/// block, which is always correct).
pub fn read<S: Storage>(storage: &S, set_path: &Path) -> Option<SyncMark> {
    let path = mark_path(set_path);
    let bytes = storage.read_all(&path, MARK_LEN as u64).ok()?;
    SyncMark::decode(&bytes).ok()
}

/// Whether `path` holds a mark: `rm` removes only such a file with the
/// pool.
pub fn is_mark<S: Storage>(storage: &S, path: &Path) -> bool {
    storage
        .read_all(path, MARK_LEN as u64)
        .is_ok_and(|b| SyncMark::decode(&b).is_ok())
}

/// Removes the mark of `set_path`, durably, if there is one: called before
/// the first change to the pool. `Ok(true)` when there was one.
pub fn forget<S: Storage>(storage: &S, set_path: &Path) -> Result<bool, Error> {
    let path = mark_path(set_path);
    if storage.stat(&path)?.is_none() {
        return Ok(false);
    }
    crate::durable::remove_if_exists(storage, &path)?;
    storage.fsync_parent(&path)?;
    Ok(true)
}

/// Writes `mark` as the mark of `set_path`, whole, aside then renamed.
pub fn write<S: Storage>(storage: &S, set_path: &Path, mark: &SyncMark) -> Result<(), Error> {
    crate::durable::replace_small_file(storage, &mark_path(set_path), &mark.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_pmem::sim::SimStorage;

    fn mark() -> SyncMark {
        SyncMark {
            poolset_uuid: [1; 16],
            lineage: [2; 16],
            timeline: 1,
            epoch: 3,
            run_id: 4,
        }
    }

    #[test]
    fn a_mark_is_written_read_and_forgotten() {
        let s = SimStorage::new();
        s.add_dir(Path::new("/p")).unwrap();
        let set = Path::new("/p/pool.set");
        assert_eq!(read(&s, set), None);
        assert!(!forget(&s, set).unwrap());
        write(&s, set, &mark()).unwrap();
        assert_eq!(read(&s, set), Some(mark()));
        assert!(is_mark(&s, &mark_path(set)));
        assert!(forget(&s, set).unwrap());
        assert_eq!(read(&s, set), None);
    }

    #[test]
    fn a_damaged_mark_is_no_mark() {
        let s = SimStorage::new();
        s.add_dir(Path::new("/p")).unwrap();
        let set = Path::new("/p/pool.set");
        let mut bytes = mark().encode();
        bytes[50] ^= 1;
        crate::durable::replace_small_file(&s, &mark_path(set), &bytes).unwrap();
        assert_eq!(read(&s, set), None);
        assert!(!is_mark(&s, &mark_path(set)));
    }
}
