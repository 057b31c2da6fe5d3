//! The real file system, through the page cache: `pread`/`pwrite` and
//! `fdatasync`, with part files locked the way libpmemobj locks them.
//!
//! A flush asks a background thread to `fdatasync` the file while the
//! caller goes on, so that the disk (and the write cache under it) has done
//! most of the work by the time the caller fences; the fence still makes
//! everything durable and reports every error (see `Persister`).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use nix::errno::Errno;

use crate::sync_state::SyncState;
use crate::{Access, Error, FileKind, Meta, PartFile, Storage};

/// The real file system, through the page cache (pread/pwrite, fdatasync).
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

impl Storage for FsStorage {
    type File = FsFile;
    type Aux = FsFile;

    fn stat(&self, path: &Path) -> Result<Option<Meta>, Error> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(meta_of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                op: "stat",
                path: path.to_path_buf(),
                os: source,
            }),
        }
    }

    fn open(&self, path: &Path, access: Access) -> Result<FsFile, Error> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; what is
        // not a regular file or a character device is refused right after.
        // (On those two the flag changes nothing.)
        let file = OpenOptions::new()
            .read(true)
            .write(access == Access::ReadWrite)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| Error::Io {
                op: "open",
                path: path.to_path_buf(),
                os: source,
            })?;
        let kind = file
            .metadata()
            .map(|m| meta_of(&m).kind)
            .map_err(|source| Error::Io {
                op: "fstat",
                path: path.to_path_buf(),
                os: source,
            })?;
        if !matches!(kind, FileKind::Regular | FileKind::CharDevice) {
            return Err(Error::NotAFile {
                path: path.to_path_buf(),
                kind: match kind {
                    FileKind::Directory => "a directory",
                    _ => "a FIFO, socket or block device",
                },
            });
        }
        let file = lock(path, file).map_err(|(_, err)| err)?;
        Ok(FsFile::new(path, file, SyncState::clean()))
    }

    fn create(&self, path: &Path, size: u64) -> Result<FsFile, Error> {
        // posix_fallocate takes an off_t; refuse before anything is created.
        let Ok(alloc_len) = i64::try_from(size) else {
            return Err(Error::Allocate {
                path: path.to_path_buf(),
                size,
                os: io::Error::from_raw_os_error(libc::EFBIG),
            });
        };
        // Mode 0 keeps anybody from opening the part before it is complete;
        // the caller chmods at the end, as PMDK does.
        let file = create_locked(path, 0o000)?;
        if size > 0 {
            if let Err(errno) = allocate(&file, alloc_len) {
                let err = Error::Allocate {
                    path: path.to_path_buf(),
                    size,
                    os: io::Error::from(errno),
                };
                return Err(remove_created(path, &file, err));
            }
        }
        // The new size and allocation reach the disk at the first fence.
        Ok(FsFile::new(path, file, SyncState::dirty()))
    }

    fn remove(&self, path: &Path) -> Result<(), Error> {
        // The engine zeroes a device's header instead; this is the guard
        // that no mistake of a caller unlinks a device node (or a file
        // standing in for one).
        if self.device_dax(path)?.is_some() {
            return Err(Error::DeviceDax {
                op: "unlink",
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(|source| Error::Io {
            op: "unlink",
            path: path.to_path_buf(),
            os: source,
        })
    }

    fn device_dax(&self, path: &Path) -> Result<Option<crate::DevDax>, Error> {
        crate::dax::env_probe()?.probe(path)
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), Error> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
            Error::Io {
                op: "chmod",
                path: path.to_path_buf(),
                os: source,
            }
        })
    }

    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>, Error> {
        let io_err = |op, source| Error::Io {
            op,
            path: path.to_path_buf(),
            os: source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => std::fs::read_link(path)
                .map(Some)
                .map_err(|e| io_err("readlink", e)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("lstat", e)),
        }
    }

    fn removal_obstacle(&self, path: &Path) -> Result<Option<crate::Obstacle>, Error> {
        crate::obstacle::removal(path)
    }

    fn creation_obstacle(&self, path: &Path) -> Result<Option<crate::Obstacle>, Error> {
        crate::obstacle::creation(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), Error> {
        std::fs::rename(from, to).map_err(|source| Error::Io {
            op: "rename",
            path: from.to_path_buf(),
            os: source,
        })
    }

    fn create_aux(&self, path: &Path, mode: u32) -> Result<FsFile, Error> {
        let file = create_locked(path, mode & 0o7777)?;
        Ok(FsFile::new(path, file, SyncState::dirty()))
    }

    fn open_aux(&self, path: &Path, access: Access) -> Result<FsFile, Error> {
        self.open(path, access)
    }

    fn clock(&self) -> &dyn crate::Clock {
        crate::clock::system_clock()
    }

    fn canonicalize(&self, path: &Path) -> Result<Option<PathBuf>, Error> {
        match std::fs::canonicalize(path) {
            Ok(p) => Ok(Some(p)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                op: "realpath",
                path: path.to_path_buf(),
                os: source,
            }),
        }
    }

    fn current_dir(&self) -> Result<PathBuf, Error> {
        std::env::current_dir().map_err(|source| Error::Io {
            op: "getcwd",
            path: PathBuf::from("."),
            os: source,
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
                os: source,
            })?;
        handle.sync_all().map_err(|source| Error::Io {
            op: "fsync",
            path: dir.to_path_buf(),
            os: source,
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
/// Creates `path` read-write with `O_CREAT|O_EXCL` (a file that already
/// exists is never opened, so it cannot be touched) and permission bits
/// `mode`, and locks it; a file that cannot be locked is removed again.
fn create_locked(path: &Path, mode: u32) -> Result<File, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
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
                    os: source,
                }
            }
        })?;
    lock(path, file).map_err(|(file, err)| remove_created(path, &file, err))
}

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
                os: io::Error::from(errno),
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
            os: source,
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
/// [`PartFile::flush`] records that there is something to persist and asks
/// for a background `fdatasync`, and [`PartFile::fence`] makes everything
/// durable with one `fdatasync`, skipped when the background syncs already
/// covered every flush.
#[derive(Debug)]
pub struct FsFile {
    path: PathBuf,
    shared: Arc<Shared>,
}

/// What an [`FsFile`] shares with its background `fdatasync` thread.
#[derive(Debug)]
struct Shared {
    file: File,
    sync: SyncState,
    persister: Mutex<Persister>,
    /// Signalled when the background thread stops.
    idle: Condvar,
    /// [`PartFile::write_once`]: drop synced pages from the page cache.
    drop_behind: AtomicBool,
}

/// Background `fdatasync` of one file.
///
/// Through the page cache a flush need not do anything: the fence's one
/// `fdatasync` persists every range. But then the disk starts only at the
/// fence, and on a disk with a volatile write cache (a virtual machine's
/// disk, most SSDs) the `fdatasync` must also flush that cache, which for
/// thousands of scattered blocks takes about as long as comparing a GiB.
/// So every flush asks a background thread to `fdatasync` the file; while
/// flushes keep coming it syncs back to back, the write-out and the cache
/// flushes overlap with the caller's work, and the fence finds little or
/// nothing left to do. (`sync_file_range` starts the write-out too, but
/// not the cache flush, and in the caller's own thread.)
///
/// This leaves the crash model alone: it only makes writes durable sooner
/// than the fence promises, which the kernel may do at any time anyway.
/// What it must not do is lose an error. An `fdatasync` reports a
/// write-back error once per open file, so an error the background thread
/// sees is kept here and returned by the next fence, the file is poisoned
/// as after a failed fence, and a fence first waits for a background sync
/// in flight, so that it never runs beside one.
#[derive(Debug, Default)]
struct Persister {
    /// Another sync was asked for since the running one began.
    wanted: bool,
    /// A background thread is running (or about to).
    running: bool,
    handle: Option<JoinHandle<()>>,
    /// The error of a failed background sync, for the next fence.
    error: Option<io::Error>,
}

impl Shared {
    fn persister(&self) -> MutexGuard<'_, Persister> {
        self.persister
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The background thread: syncs until no more syncs are wanted.
    fn persist_in_background(&self) {
        loop {
            {
                let mut p = self.persister();
                if !p.wanted || self.sync.is_poisoned() {
                    p.running = false;
                    self.idle.notify_all();
                    return;
                }
                p.wanted = false;
            }
            let Some(target) = self.sync.begin_fence() else {
                continue;
            };
            match self.file.sync_data() {
                Ok(()) => {
                    self.sync.end_fence(target);
                    self.drop_synced();
                }
                Err(source) => {
                    self.sync.poison();
                    self.persister().error = Some(source);
                }
            }
        }
    }

    /// With [`PartFile::write_once`], drops the file's clean pages from
    /// the page cache after a sync. A packet written through the page
    /// cache would otherwise take as many pages as it has bytes: they push
    /// the pool's own pages out, and on a machine whose free memory is
    /// handed back to a hypervisor every fresh page costs a fault there.
    /// Dropped, the pages are free again for the next writes. Dirty pages
    /// and pages under write-back stay; the advice never fails the write
    /// (it changes no data), so its error is ignored.
    fn drop_synced(&self) {
        if self.drop_behind.load(Ordering::Relaxed) {
            let _ = nix::fcntl::posix_fadvise(
                self.file.as_raw_fd(),
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
    }
}

impl FsFile {
    fn new(path: &Path, file: File, sync: SyncState) -> Self {
        Self {
            path: path.to_path_buf(),
            shared: Arc::new(Shared {
                file,
                sync,
                persister: Mutex::default(),
                idle: Condvar::new(),
                drop_behind: AtomicBool::new(false),
            }),
        }
    }

    /// Asks for a background `fdatasync` (see [`Persister`]), starting the
    /// thread if none runs. A thread that cannot be started costs only the
    /// overlap: the fence syncs anyway.
    fn persist_soon(&self) {
        let mut p = self.shared.persister();
        p.wanted = true;
        if p.running {
            return;
        }
        if let Some(done) = p.handle.take() {
            // It has set `running` to false and only returns now.
            let _ = done.join();
        }
        let shared = Arc::clone(&self.shared);
        match std::thread::Builder::new()
            .name("fdatasync".into())
            .spawn(move || shared.persist_in_background())
        {
            Ok(handle) => {
                p.running = true;
                p.handle = Some(handle);
            }
            Err(_) => p.wanted = false,
        }
    }

    /// Waits until no background sync runs, and returns the error of one
    /// that failed since the last call.
    fn settle(&self) -> Option<io::Error> {
        let mut p = self.shared.persister();
        p.wanted = false;
        while p.running {
            p = self
                .shared
                .idle
                .wait(p)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if let Some(done) = p.handle.take() {
            let _ = done.join();
        }
        p.error.take()
    }

    /// The open file, for backends that build on this one (DAX maps it).
    pub(crate) fn file(&self) -> &File {
        &self.shared.file
    }

    pub(crate) fn fstat(&self) -> Result<Metadata, Error> {
        self.shared.file.metadata().map_err(|source| Error::Io {
            op: "fstat",
            path: self.path.clone(),
            os: source,
        })
    }

    fn check_range(&self, op: &'static str, offset: u64, len: u64) -> Result<(), Error> {
        crate::error::check_range(op, &self.path, offset, len).map(drop)
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
            match self.shared.file.read_at(rest, at) {
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
                        os: source,
                    })
                }
            }
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check_range("write", offset, data.len() as u64)?;
        self.shared
            .file
            .write_all_at(data, offset)
            .map_err(|source| Error::IoAt {
                op: "write",
                path: self.path.clone(),
                offset,
                os: source,
            })
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.check_range("flush", offset, len)?;
        // Through the page cache one fdatasync persists every range, so
        // durability needs no record of the range itself.
        self.shared.sync.note_flush();
        if len > 0 {
            self.persist_soon();
        }
        Ok(())
    }

    fn fence(&self) -> Result<(), Error> {
        if let Some(source) = self.settle() {
            return Err(Error::Io {
                op: "fdatasync",
                path: self.path.clone(),
                os: source,
            });
        }
        let sync = &self.shared.sync;
        if sync.is_poisoned() {
            return Err(Error::SyncPoisoned {
                path: self.path.clone(),
            });
        }
        let Some(target) = sync.begin_fence() else {
            // The background syncs already covered every flush.
            return Ok(());
        };
        match self.shared.file.sync_data() {
            Ok(()) => {
                sync.end_fence(target);
                self.shared.drop_synced();
                Ok(())
            }
            Err(source) => {
                // After a failed fdatasync the kernel may have dropped the
                // dirty pages and cleared the error, so a retry could report
                // success without the data being on disk. Refuse from now on.
                sync.poison();
                Err(Error::Io {
                    op: "fdatasync",
                    path: self.path.clone(),
                    os: source,
                })
            }
        }
    }

    fn ctime(&self) -> Result<u64, Error> {
        Ok(ctime_of(&self.fstat()?))
    }

    fn set_len(&self, len: u64) -> Result<(), Error> {
        self.shared.file.set_len(len).map_err(|source| Error::Io {
            op: "ftruncate",
            path: self.path.clone(),
            os: source,
        })?;
        // The new length reaches the disk with the next fence.
        self.shared.sync.note_flush();
        Ok(())
    }

    fn write_once(&self) {
        self.shared.drop_behind.store(true, Ordering::Relaxed);
    }
}

impl Drop for FsFile {
    /// The background thread holds the file (and so its lock) open: wait
    /// for it, so that the lock ends with the value. An error it met is
    /// dropped with the file, as one that no fence was asked to report.
    fn drop(&mut self) {
        let _ = self.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn scattered_flushes_are_persisted_by_the_fence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let part = FsStorage.create(&path, 16 * MIB).unwrap();
        part.fence().unwrap();
        let data = vec![0xa5u8; 4096];
        let mut at = 0;
        while at < 16 * MIB {
            part.write_at(at, &data).unwrap();
            part.flush(at, 4096).unwrap();
            at += 64 << 10;
        }
        part.fence().unwrap();
        assert_eq!(part.shared.sync.begin_fence(), None);
        let mut back = vec![0u8; 4096];
        part.read_at(15 * MIB + (960 << 10), &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn a_write_once_file_keeps_every_byte_it_dropped_from_the_cache() {
        // Dropping synced pages from the page cache is only advice: what
        // was written, extended and fenced reads back whole, through this
        // handle and a new one, while later writes go on beside the drops.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("packet");
        let file = FsStorage.create_aux(&path, 0o644).unwrap();
        file.write_once();
        let chunk = |i: u64| vec![(i as u8).wrapping_mul(37) | 1; (1 << 20) + 13];
        let mut at = 0u64;
        for i in 0..12u64 {
            let data = chunk(i);
            file.set_len(at + data.len() as u64).unwrap();
            file.write_at(at, &data).unwrap();
            file.flush(at, data.len() as u64).unwrap();
            at += data.len() as u64;
        }
        file.fence().unwrap();
        let check = |f: &FsFile, how: &str| {
            let mut at = 0u64;
            for i in 0..12u64 {
                let want = chunk(i);
                let mut back = vec![0u8; want.len()];
                f.read_at(at, &mut back).unwrap();
                assert_eq!(back, want, "chunk {i}, {how}");
                at += want.len() as u64;
            }
            assert_eq!(f.len().unwrap(), at, "{how}");
        };
        check(&file, "the writing handle");
        drop(file);
        check(
            &FsStorage.open_aux(&path, Access::ReadOnly).unwrap(),
            "a new handle",
        );
    }

    #[test]
    fn handed_ranges_are_synced_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let part = FsStorage.create(&path, 16 * MIB).unwrap();
        part.fence().unwrap();
        let data = vec![0x5au8; 1 << 20];
        for at in (0..8 * MIB).step_by(1 << 20) {
            part.write_at(at, &data).unwrap();
            part.flush(at, 1 << 20).unwrap();
        }
        // A background sync was asked for.
        assert!(part.shared.persister().handle.is_some());
        assert!(part.settle().is_none());
        // It covered every flush made before it began; the last flushes
        // (not handed over yet) may be left for the fence.
        part.fence().unwrap();
        assert_eq!(part.shared.sync.begin_fence(), None);
        assert!(part.shared.persister().handle.is_none());
    }

    #[test]
    fn dropping_a_file_ends_its_background_sync_and_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        for _ in 0..3 {
            let part = match FsStorage.stat(&path).unwrap() {
                None => FsStorage.create(&path, 8 * MIB).unwrap(),
                Some(_) => FsStorage.open(&path, Access::ReadWrite).unwrap(),
            };
            part.write_at(0, &vec![1u8; 8 << 20]).unwrap();
            part.flush(0, 8 * MIB).unwrap();
            // No fence: the drop must still wait for the thread, which
            // holds the file, so the next open finds the lock free.
        }
    }

    #[test]
    fn a_failed_background_sync_is_reported_by_the_next_fence_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let part = FsStorage.create(&path, MIB).unwrap();
        // What the background thread leaves after its fdatasync failed.
        part.shared.sync.poison();
        part.shared.persister().error = Some(io::Error::from_raw_os_error(libc::EIO));
        match part.fence() {
            Err(Error::Io {
                op: "fdatasync",
                os: source,
                ..
            }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EIO))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(part.fence(), Err(Error::SyncPoisoned { .. })));
    }
}
