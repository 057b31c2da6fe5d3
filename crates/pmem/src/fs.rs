//! The real file system, through the page cache: `pread`/`pwrite` and
//! `fdatasync`, with part files locked the way libpmemobj locks them.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::sync_state::SyncState;
use crate::{Access, Error, FileKind, Meta, PartFile, Storage};

/// The real file system, through the page cache (pread/pwrite, fdatasync).
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

impl Storage for FsStorage {
    type File = FsFile;

    fn stat(&self, path: &Path) -> Result<Option<Meta>, Error> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(meta_of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                op: "stat",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn open(&self, path: &Path, access: Access) -> Result<FsFile, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(access == Access::ReadWrite)
            .open(path)
            .map_err(|source| Error::Io {
                op: "open",
                path: path.to_path_buf(),
                source,
            })?;
        let file = lock(path, file).map_err(|(_, err)| err)?;
        Ok(FsFile::new(path, file, SyncState::clean()))
    }

    fn create(&self, path: &Path, size: u64) -> Result<FsFile, Error> {
        // posix_fallocate takes an off_t; refuse before anything is created.
        let Ok(alloc_len) = i64::try_from(size) else {
            return Err(Error::Allocate {
                path: path.to_path_buf(),
                size,
                source: io::Error::from_raw_os_error(libc::EFBIG),
            });
        };
        // O_CREAT|O_EXCL: a file that already exists is never opened, so it
        // cannot be touched. Mode 0 keeps anybody from opening the part
        // before it is complete; the caller chmods at the end, as PMDK does.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    Error::Exists {
                        path: path.to_path_buf(),
                    }
                } else {
                    Error::Io {
                        op: "open",
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
        let file = match lock(path, file) {
            Ok(file) => file,
            Err((file, err)) => return Err(remove_created(path, &file, err)),
        };
        if size > 0 {
            if let Err(errno) = allocate(&file, alloc_len) {
                let err = Error::Allocate {
                    path: path.to_path_buf(),
                    size,
                    source: io::Error::from(errno),
                };
                return Err(remove_created(path, &file, err));
            }
        }
        // The new size and allocation reach the disk at the first fence.
        Ok(FsFile::new(path, file, SyncState::dirty()))
    }

    fn remove(&self, path: &Path) -> Result<(), Error> {
        std::fs::remove_file(path).map_err(|source| Error::Io {
            op: "unlink",
            path: path.to_path_buf(),
            source,
        })
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), Error> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
            Error::Io {
                op: "chmod",
                path: path.to_path_buf(),
                source,
            }
        })
    }

    fn fsync_dir(&self, dir: &Path) -> Result<(), Error> {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map_err(|source| Error::Io {
                op: "open",
                path: dir.to_path_buf(),
                source,
            })?;
        handle.sync_all().map_err(|source| Error::Io {
            op: "fsync",
            path: dir.to_path_buf(),
            source,
        })
    }
}

/// Takes `flock(LOCK_EX|LOCK_NB)` on the open file description of `file`.
/// On failure the file comes back so that the caller can clean up.
///
/// The lock is never released explicitly: like PMDK's, it belongs to the
/// open file description and ends when the last descriptor of it (or a
/// mapping of it) goes away. nix's `Flock` wrapper is not used because it
/// unlocks in `Drop`, which would end the lock under a live mapping, and
/// panics there if the unlock fails.
fn lock(path: &Path, file: File) -> Result<File, (File, Error)> {
    loop {
        // SAFETY: `flock` only operates on the descriptor number it is given
        // and touches no memory of ours. The descriptor is valid for the
        // whole call because `file` owns it and outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        let errno = Errno::last();
        let err = match errno {
            Errno::EINTR => continue,
            Errno::EWOULDBLOCK => Error::Locked {
                path: path.to_path_buf(),
            },
            _ => Error::Io {
                op: "flock",
                path: path.to_path_buf(),
                source: io::Error::from(errno),
            },
        };
        return Err((file, err));
    }
}

/// Allocates `[0, len)` of `file`. EINTR is retried: blocks allocated before
/// the interruption stay allocated, so every retry makes progress.
pub(crate) fn allocate(file: &File, len: i64) -> Result<(), Errno> {
    loop {
        match nix::fcntl::posix_fallocate(file.as_raw_fd(), 0, len) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Unlinks the file `create` made at `path` after `cause` stopped it, but
/// only if `path` still names that very file (same device and inode), so a
/// file that somebody else put there meanwhile is never removed.
pub(crate) fn remove_created(path: &Path, ours: &File, cause: Error) -> Error {
    let same = match (ours.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if !same {
        return cause;
    }
    match std::fs::remove_file(path) {
        Ok(()) => cause,
        Err(e) if e.kind() == io::ErrorKind::NotFound => cause,
        Err(source) => Error::Cleanup {
            path: path.to_path_buf(),
            cause: Box::new(cause),
            source,
        },
    }
}

fn meta_of(m: &Metadata) -> Meta {
    let ft = m.file_type();
    let kind = if ft.is_file() {
        FileKind::Regular
    } else if ft.is_dir() {
        FileKind::Directory
    } else if ft.is_char_device() {
        FileKind::CharDevice
    } else {
        FileKind::Other
    };
    Meta {
        len: m.len(),
        mode: m.mode() & 0o7777,
        kind,
        dev: m.dev(),
        ino: m.ino(),
        ctime: ctime_of(m),
    }
}

/// `st_ctime` seconds, converted as PMDK converts it into `crtime`
/// (`(uint64_t)st.st_ctime`).
fn ctime_of(m: &Metadata) -> u64 {
    m.ctime() as u64
}

/// One open, flocked file of an [`FsStorage`].
///
/// The lock is held until the value is dropped. Writes go to the page cache;
/// [`PartFile::flush`] only records that there is something to persist and
/// [`PartFile::fence`] makes it durable with one `fdatasync`, skipped when
/// nothing was flushed since the last one.
#[derive(Debug)]
pub struct FsFile {
    path: PathBuf,
    file: File,
    sync: SyncState,
}

impl FsFile {
    fn new(path: &Path, file: File, sync: SyncState) -> Self {
        Self {
            path: path.to_path_buf(),
            file,
            sync,
        }
    }

    /// The open file, for backends that build on this one (DAX maps it).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn fstat(&self) -> Result<Metadata, Error> {
        self.file.metadata().map_err(|source| Error::Io {
            op: "fstat",
            path: self.path.clone(),
            source,
        })
    }

    fn check_range(&self, op: &'static str, offset: u64, len: u64) -> Result<(), Error> {
        match offset.checked_add(len) {
            Some(_) => Ok(()),
            None => Err(Error::InvalidRange {
                op,
                path: self.path.clone(),
                offset,
                len,
            }),
        }
    }
}

impl PartFile for FsFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> Result<u64, Error> {
        Ok(self.fstat()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let len = buf.len() as u64;
        self.check_range("read", offset, len)?;
        let mut done = 0usize;
        while let Some(rest) = buf.get_mut(done..).filter(|rest| !rest.is_empty()) {
            // Cannot overflow: offset + buf.len() was checked above.
            let at = offset + done as u64;
            match self.file.read_at(rest, at) {
                Ok(0) => {
                    return Err(Error::ShortRead {
                        path: self.path.clone(),
                        offset,
                        len,
                        got: done as u64,
                    });
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::IoAt {
                        op: "read",
                        path: self.path.clone(),
                        offset: at,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check_range("write", offset, data.len() as u64)?;
        self.file
            .write_all_at(data, offset)
            .map_err(|source| Error::IoAt {
                op: "write",
                path: self.path.clone(),
                offset,
                source,
            })
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.check_range("flush", offset, len)?;
        // Through the page cache one fdatasync persists every range, so the
        // range itself need not be remembered.
        self.sync.note_flush();
        Ok(())
    }

    fn fence(&self) -> Result<(), Error> {
        if self.sync.is_poisoned() {
            return Err(Error::SyncPoisoned {
                path: self.path.clone(),
            });
        }
        let Some(target) = self.sync.begin_fence() else {
            return Ok(());
        };
        match self.file.sync_data() {
            Ok(()) => {
                self.sync.end_fence(target);
                Ok(())
            }
            Err(source) => {
                // After a failed fdatasync the kernel may have dropped the
                // dirty pages and cleared the error, so a retry could report
                // success without the data being on disk. Refuse from now on.
                self.sync.poison();
                Err(Error::Io {
                    op: "fdatasync",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    fn ctime(&self) -> Result<u64, Error> {
        Ok(ctime_of(&self.fstat()?))
    }
}
