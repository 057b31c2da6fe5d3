//! The real file system, through the page cache: `pread`/`pwrite` and
//! `fdatasync`, with part files locked the way libpmemobj locks them.
//!
//! Flushed ranges are handed to the kernel early, with
//! `sync_file_range(SYNC_FILE_RANGE_WRITE)`, so that the disk writes them
//! back while the caller goes on; the fence's `fdatasync` still makes them
//! durable (see `Writeback`).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

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

/// Flushed ranges closer than this to a pending range join it.
const WRITEBACK_GAP: u64 = 1 << 20;
/// A pending range is handed to the kernel once it spans this many bytes.
const WRITEBACK_CHUNK: u64 = 4 << 20;
/// Pending ranges kept per file (about one per worker writing the file);
/// beyond that the least recently extended one is handed over.
const WRITEBACK_SLOTS: usize = 8;

/// Early writeback of one file: flushed ranges not yet handed to the kernel.
///
/// Through the page cache a flush need not do anything (the fence's one
/// `fdatasync` persists every range), but then the disk starts writing only
/// at the fence. Handing flushed ranges to
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` starts the write-out at once and
/// lets it overlap with whatever the caller does until its fence. Nearby
/// flushes are gathered into ranges of about [`WRITEBACK_CHUNK`] first, so
/// that many small scattered flushes cost one system call per few MiB
/// rather than one each (the kernel writes only the dirty pages of a range).
///
/// This does not change the crash model: the kernel may write a dirty page
/// back at any time anyway, so a flushed range reaching the disk before the
/// fence is something every caller already allows for; what a fence
/// promises still comes from its `fdatasync`. The call is only a hint, and
/// its errors are ignored: it neither waits for the write-out nor consumes
/// the file's write-back error state, so a write that fails is still
/// reported by the next `fdatasync`. A file system or kernel that refuses
/// the call (`ENOSYS`, `EINVAL`, `ESPIPE`) is not asked again.
#[derive(Debug, Default)]
struct Writeback {
    /// `[start, end)` ranges, least recently extended first.
    pending: Mutex<Vec<(u64, u64)>>,
    unsupported: AtomicBool,
}

impl Writeback {
    /// Records the flushed range `[start, end)` and returns the ranges to
    /// hand to the kernel now: one that grew to [`WRITEBACK_CHUNK`], and one
    /// pushed out of the slots.
    fn add(&self, start: u64, end: u64) -> [Option<(u64, u64)>; 2] {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let near = pending.iter().position(|&(a, b)| {
            start <= b.saturating_add(WRITEBACK_GAP) && a <= end.saturating_add(WRITEBACK_GAP)
        });
        let mut evicted = None;
        let (a, b) = match near {
            Some(i) => {
                let (a, b) = pending.remove(i);
                (a.min(start), b.max(end))
            }
            None => {
                if pending.len() >= WRITEBACK_SLOTS {
                    evicted = Some(pending.remove(0));
                }
                (start, end)
            }
        };
        if b - a >= WRITEBACK_CHUNK {
            [Some((a, b)), evicted]
        } else {
            pending.push((a, b));
            [None, evicted]
        }
    }

    /// Forgets the pending ranges (a fence writes them all).
    fn clear(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// One open, flocked file of an [`FsStorage`].
///
/// The lock is held until the value is dropped. Writes go to the page cache;
/// [`PartFile::flush`] records that there is something to persist and
/// starts writing flushed ranges back in the background, a few MiB at a
/// time, and [`PartFile::fence`] makes everything durable with one
/// `fdatasync`, skipped when nothing was flushed since the last one.
#[derive(Debug)]
pub struct FsFile {
    path: PathBuf,
    file: File,
    sync: SyncState,
    writeback: Writeback,
}

impl FsFile {
    fn new(path: &Path, file: File, sync: SyncState) -> Self {
        Self {
            path: path.to_path_buf(),
            file,
            sync,
            writeback: Writeback::default(),
        }
    }

    /// Asks the kernel to start writing `[start, end)` back; see
    /// [`Writeback`] for why failures are ignored.
    fn start_writeback(&self, start: u64, end: u64) {
        let (Ok(offset), Ok(len)) = (i64::try_from(start), i64::try_from(end - start)) else {
            return;
        };
        // SAFETY: `sync_file_range` only acts on the descriptor and the
        // integers it is given and touches no memory of ours. The
        // descriptor is valid for the whole call because `self.file` owns
        // it. SYNC_FILE_RANGE_WRITE alone starts write-out without waiting
        // for it and without consuming write-back errors, which the fence's
        // `fdatasync` still reports.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc != 0 && matches!(Errno::last(), Errno::ENOSYS | Errno::EINVAL | Errno::ESPIPE) {
            self.writeback.unsupported.store(true, Ordering::Relaxed);
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
        // Through the page cache one fdatasync persists every range, so
        // durability needs no record of the range itself; it is kept only
        // to start the write-out early.
        self.sync.note_flush();
        if len > 0 && !self.writeback.unsupported.load(Ordering::Relaxed) {
            // Cannot overflow: offset + len was checked above.
            for (start, end) in self
                .writeback
                .add(offset, offset + len)
                .into_iter()
                .flatten()
            {
                self.start_writeback(start, end);
            }
        }
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
        // The fdatasync writes every dirty page, pending ranges included.
        self.writeback.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn nearby_flushes_gather_until_a_chunk() {
        let wb = Writeback::default();
        // Scattered 4 KiB flushes 80 KiB apart, in order.
        let mut handed = Vec::new();
        let mut at = 0;
        while at < 10 * MIB {
            handed.extend(wb.add(at, at + 4096).into_iter().flatten());
            at += 80 << 10;
        }
        assert_eq!(handed.len(), 2, "{handed:?}");
        for (a, b) in &handed {
            assert!(b - a >= WRITEBACK_CHUNK && b - a < WRITEBACK_CHUNK + (80 << 10));
        }
        // The rest stays pending until a fence forgets it.
        assert_eq!(wb.pending.lock().unwrap().len(), 1);
        wb.clear();
        assert!(wb.pending.lock().unwrap().is_empty());
    }

    #[test]
    fn large_flushes_are_handed_over_at_once() {
        let wb = Writeback::default();
        assert_eq!(wb.add(0, 8 * MIB), [Some((0, 8 * MIB)), None]);
        assert!(wb.pending.lock().unwrap().is_empty());
    }

    #[test]
    fn distant_writers_keep_their_own_ranges_and_the_oldest_is_evicted() {
        let wb = Writeback::default();
        for w in 0..WRITEBACK_SLOTS as u64 {
            assert_eq!(wb.add(w * 64 * MIB, w * 64 * MIB + 4096), [None, None]);
        }
        // Each writer extends its own range.
        for w in 0..WRITEBACK_SLOTS as u64 {
            let at = w * 64 * MIB + 8192;
            assert_eq!(wb.add(at, at + 4096), [None, None]);
        }
        assert_eq!(wb.pending.lock().unwrap().len(), WRITEBACK_SLOTS);
        // One more writer pushes out the least recently extended range.
        let far = 1 << 40;
        assert_eq!(wb.add(far, far + 4096), [None, Some((0, 12288))]);
    }

    #[test]
    fn flushed_files_start_writeback_and_still_fence() {
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
        // sync_file_range accepts any regular file: the hint stays on.
        assert!(!part.writeback.unsupported.load(Ordering::Relaxed));
        part.fence().unwrap();
        assert!(part.writeback.pending.lock().unwrap().is_empty());
        let mut back = vec![0u8; 4096];
        part.read_at(15 * MIB + (960 << 10), &mut back).unwrap();
        assert_eq!(back, data);
    }
}
