//! A storage chosen at run time: the page cache or the DAX path, behind one
//! type, so that the engine stays generic over [`Storage`] while the
//! command line picks the backend from the environment.

use std::path::Path;

use crate::{
    persist_mode_from_env, Access, DaxFile, DaxStorage, Error, FsFile, FsStorage, Meta, PartFile,
    PersistMode, Storage,
};

/// [`FsStorage`] or [`DaxStorage`], chosen at run time.
#[derive(Debug, Clone)]
pub enum AnyStorage {
    /// Through the page cache.
    PageCache(FsStorage),
    /// Mapped and flushed from the CPU caches.
    Dax(DaxStorage),
}

impl AnyStorage {
    /// The storage for `mode`. [`PersistMode::Dax`] means the DAX code path
    /// on any file ([`DaxStorage::forced`]), because the environment asks
    /// for it only by forcing it, as `PMEM_IS_PMEM_FORCE=1` does.
    pub fn new(mode: PersistMode) -> Self {
        match mode {
            PersistMode::PageCache => AnyStorage::PageCache(FsStorage),
            PersistMode::Dax => AnyStorage::Dax(DaxStorage::forced()),
        }
    }

    /// The storage the environment selects ([`persist_mode_from_env`]).
    pub fn from_env() -> Result<Self, Error> {
        Ok(Self::new(persist_mode_from_env()?))
    }

    /// Which persistence path this is.
    pub fn mode(&self) -> PersistMode {
        match self {
            AnyStorage::PageCache(_) => PersistMode::PageCache,
            AnyStorage::Dax(_) => PersistMode::Dax,
        }
    }
}

/// Whether `path` is a character device that is a Device DAX (not a
/// regular file standing in for one).
fn is_device_node(s: &FsStorage, path: &Path) -> Result<bool, Error> {
    Ok(
        matches!(s.stat(path)?, Some(m) if m.kind == crate::FileKind::CharDevice)
            && s.device_dax(path)?.is_some(),
    )
}

/// A file of an [`AnyStorage`].
#[derive(Debug)]
pub enum AnyFile {
    /// A file of [`FsStorage`].
    PageCache(FsFile),
    /// A file of [`DaxStorage`].
    Dax(DaxFile),
}

impl Storage for AnyStorage {
    type File = AnyFile;
    type Aux = FsFile;

    fn stat(&self, path: &Path) -> Result<Option<Meta>, Error> {
        match self {
            AnyStorage::PageCache(s) => s.stat(path),
            AnyStorage::Dax(s) => s.stat(path),
        }
    }

    fn open(&self, path: &Path, access: Access) -> Result<AnyFile, Error> {
        match self {
            // A Device DAX has no page cache (read(2) and write(2) do not
            // work on it): it is always mapped, with MAP_SYNC, as PMDK maps
            // it. A regular file standing in for one in tests is not.
            AnyStorage::PageCache(s) if is_device_node(s, path)? => {
                DaxStorage::new().open(path, access).map(AnyFile::Dax)
            }
            AnyStorage::PageCache(s) => s.open(path, access).map(AnyFile::PageCache),
            AnyStorage::Dax(s) => s.open(path, access).map(AnyFile::Dax),
        }
    }

    fn create(&self, path: &Path, size: u64) -> Result<AnyFile, Error> {
        match self {
            AnyStorage::PageCache(s) => s.create(path, size).map(AnyFile::PageCache),
            AnyStorage::Dax(s) => s.create(path, size).map(AnyFile::Dax),
        }
    }

    fn remove(&self, path: &Path) -> Result<(), Error> {
        match self {
            AnyStorage::PageCache(s) => s.remove(path),
            AnyStorage::Dax(s) => s.remove(path),
        }
    }

    fn device_dax(&self, path: &Path) -> Result<Option<crate::DevDax>, Error> {
        match self {
            AnyStorage::PageCache(s) => s.device_dax(path),
            AnyStorage::Dax(s) => s.device_dax(path),
        }
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), Error> {
        match self {
            AnyStorage::PageCache(s) => s.set_mode(path, mode),
            AnyStorage::Dax(s) => s.set_mode(path, mode),
        }
    }

    fn read_link(&self, path: &Path) -> Result<Option<std::path::PathBuf>, Error> {
        FsStorage.read_link(path)
    }

    fn removal_obstacle(&self, path: &Path) -> Result<Option<crate::Obstacle>, Error> {
        match self {
            AnyStorage::PageCache(s) => s.removal_obstacle(path),
            AnyStorage::Dax(s) => s.removal_obstacle(path),
        }
    }

    fn creation_obstacle(&self, path: &Path) -> Result<Option<crate::Obstacle>, Error> {
        match self {
            AnyStorage::PageCache(s) => s.creation_obstacle(path),
            AnyStorage::Dax(s) => s.creation_obstacle(path),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), Error> {
        // Entries are the file system's, whichever path persists data.
        FsStorage.rename(from, to)
    }

    fn create_aux(&self, path: &Path, mode: u32) -> Result<FsFile, Error> {
        FsStorage.create_aux(path, mode)
    }

    fn open_aux(&self, path: &Path, access: Access) -> Result<FsFile, Error> {
        FsStorage.open_aux(path, access)
    }

    fn fsync_dir(&self, dir: &Path) -> Result<(), Error> {
        match self {
            AnyStorage::PageCache(s) => s.fsync_dir(dir),
            AnyStorage::Dax(s) => s.fsync_dir(dir),
        }
    }

    fn clock(&self) -> &dyn crate::Clock {
        match self {
            AnyStorage::PageCache(s) => s.clock(),
            AnyStorage::Dax(s) => s.clock(),
        }
    }

    fn current_dir(&self) -> Result<std::path::PathBuf, Error> {
        match self {
            AnyStorage::PageCache(s) => s.current_dir(),
            AnyStorage::Dax(s) => s.current_dir(),
        }
    }

    fn canonicalize(&self, path: &Path) -> Result<Option<std::path::PathBuf>, Error> {
        match self {
            AnyStorage::PageCache(s) => s.canonicalize(path),
            AnyStorage::Dax(s) => s.canonicalize(path),
        }
    }
}

impl PartFile for AnyFile {
    fn path(&self) -> &Path {
        match self {
            AnyFile::PageCache(f) => f.path(),
            AnyFile::Dax(f) => f.path(),
        }
    }

    fn len(&self) -> Result<u64, Error> {
        match self {
            AnyFile::PageCache(f) => f.len(),
            AnyFile::Dax(f) => f.len(),
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        match self {
            AnyFile::PageCache(f) => f.read_at(offset, buf),
            AnyFile::Dax(f) => f.read_at(offset, buf),
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        match self {
            AnyFile::PageCache(f) => f.write_at(offset, data),
            AnyFile::Dax(f) => f.write_at(offset, data),
        }
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), Error> {
        match self {
            AnyFile::PageCache(f) => f.flush(offset, len),
            AnyFile::Dax(f) => f.flush(offset, len),
        }
    }

    fn fence(&self) -> Result<(), Error> {
        match self {
            AnyFile::PageCache(f) => f.fence(),
            AnyFile::Dax(f) => f.fence(),
        }
    }

    fn ctime(&self) -> Result<u64, Error> {
        match self {
            AnyFile::PageCache(f) => f.ctime(),
            AnyFile::Dax(f) => f.ctime(),
        }
    }

    fn set_len(&self, len: u64) -> Result<(), Error> {
        match self {
            AnyFile::PageCache(f) => f.set_len(len),
            AnyFile::Dax(f) => f.set_len(len),
        }
    }

    fn write_once(&self) {
        match self {
            AnyFile::PageCache(f) => f.write_once(),
            AnyFile::Dax(f) => f.write_once(),
        }
    }
}
