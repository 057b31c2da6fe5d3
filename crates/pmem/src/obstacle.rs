//! What stands in the way of changing a directory entry: the questions a
//! writer asks before its first write ([`crate::Storage::removal_obstacle`],
//! [`crate::Storage::creation_obstacle`]), so that a run that could not
//! delete, replace, move aside or create a file is refused before it has
//! changed anything, rather than failing half-way.
//!
//! On a real file system the answer comes from the kernel's own rules for
//! `unlink(2)`, `rename(2)` and `open(O_CREAT)`: a file system mounted
//! read-only (`statvfs`: `ST_RDONLY`), a directory the user may not write
//! or search (`faccessat(W_OK|X_OK, AT_EACCESS)`, which also answers for
//! root), a sticky directory (`+t`) whose entry is not the user's, and the
//! immutable and append-only attributes of the file or its directory
//! (`FS_IOC_GETFLAGS`, `chattr +i` / `+a`). Anything else (a disk that
//! fails, a race with another process) can still fail the call later.

use std::fmt;
use std::fs::{Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{faccessat, geteuid, AccessFlags};

use crate::Error;

/// Why a directory entry cannot be changed now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Obstacle {
    /// The file system that holds the directory is mounted read-only.
    ReadOnly {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory is not writable (or not searchable) by this user.
    NotWritable {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory is sticky (`+t`), and neither it nor the entry
    /// belongs to this user.
    Sticky {
        /// The directory.
        dir: PathBuf,
    },
    /// The file or the directory is immutable (`chattr +i`).
    Immutable {
        /// The file or directory that carries the attribute.
        path: PathBuf,
    },
    /// The file or the directory is append-only (`chattr +a`): no entry
    /// of it can be removed or renamed.
    AppendOnly {
        /// The file or directory that carries the attribute.
        path: PathBuf,
    },
    /// The directory does not exist (or is not a directory).
    NoDirectory {
        /// The directory.
        dir: PathBuf,
    },
}

impl fmt::Display for Obstacle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Obstacle::ReadOnly { dir } => {
                write!(f, "{} is on a read-only file system", shown(dir))
            }
            Obstacle::NotWritable { dir } => write!(
                f,
                "the directory {} is not writable by this user",
                shown(dir)
            ),
            Obstacle::Sticky { dir } => write!(
                f,
                "the directory {} is sticky (mode +t) and neither it nor the file belongs to this user",
                shown(dir)
            ),
            Obstacle::Immutable { path } => write!(
                f,
                "{} is immutable (chattr +i; `chattr -i` clears it)",
                path.display()
            ),
            Obstacle::AppendOnly { path } => write!(
                f,
                "{} is append-only, so nothing in it can be removed or renamed (chattr +a; `chattr -a` clears it)",
                path.display()
            ),
            Obstacle::NoDirectory { dir } => {
                write!(f, "the directory {} does not exist", shown(dir))
            }
        }
    }
}

/// A directory for messages: the current one is `.`, not an empty string.
fn shown(dir: &Path) -> std::path::Display<'_> {
    if dir.as_os_str().is_empty() {
        Path::new(".").display()
    } else {
        dir.display()
    }
}

/// The directory that holds the entry `path` (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `FS_IMMUTABLE_FL` of `linux/fs.h`.
const FS_IMMUTABLE_FL: libc::c_int = 0x10;
/// `FS_APPEND_FL` of `linux/fs.h`.
const FS_APPEND_FL: libc::c_int = 0x20;

/// The real file system's answer to [`crate::Storage::removal_obstacle`].
pub(crate) fn removal(path: &Path) -> Result<Option<Obstacle>, Error> {
    let dir = parent_dir(path);
    if let Some(obstacle) = dir_obstacle(&dir, true)? {
        return Ok(Some(obstacle));
    }
    let entry = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        // Not there (yet): its directory is all there is to judge.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("lstat", path, e)),
    };
    if let Some(obstacle) = sticky(&dir, &entry)? {
        return Ok(Some(obstacle));
    }
    // Only a regular file is asked for its attributes: the ioctl of a
    // device node would go to its driver, and a symbolic link has none.
    if entry.file_type().is_file() {
        let flags = attributes(path, false);
        if flags & FS_IMMUTABLE_FL != 0 {
            return Ok(Some(Obstacle::Immutable {
                path: path.to_path_buf(),
            }));
        }
        if flags & FS_APPEND_FL != 0 {
            return Ok(Some(Obstacle::AppendOnly {
                path: path.to_path_buf(),
            }));
        }
    }
    Ok(None)
}

/// The real file system's answer to [`crate::Storage::creation_obstacle`].
pub(crate) fn creation(path: &Path) -> Result<Option<Obstacle>, Error> {
    dir_obstacle(&parent_dir(path), false)
}

/// What keeps entries of `dir` from being created (or, with `removal`,
/// removed and renamed).
fn dir_obstacle(dir: &Path, removal: bool) -> Result<Option<Obstacle>, Error> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Ok(Some(Obstacle::NoDirectory {
                dir: dir.to_path_buf(),
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Some(Obstacle::NoDirectory {
                dir: dir.to_path_buf(),
            }))
        }
        Err(e) => return Err(io_error("stat", dir, e)),
    }
    let read_only = || Obstacle::ReadOnly {
        dir: dir.to_path_buf(),
    };
    if statvfs(dir).is_ok_and(|st| st.flags().contains(FsFlags::ST_RDONLY)) {
        return Ok(Some(read_only()));
    }
    // The attributes first: access(2) also refuses an immutable
    // directory, but would only say "permission denied".
    let flags = attributes(dir, true);
    if flags & FS_IMMUTABLE_FL != 0 {
        return Ok(Some(Obstacle::Immutable {
            path: dir.to_path_buf(),
        }));
    }
    if removal && flags & FS_APPEND_FL != 0 {
        return Ok(Some(Obstacle::AppendOnly {
            path: dir.to_path_buf(),
        }));
    }
    match faccessat(
        None,
        dir,
        AccessFlags::W_OK | AccessFlags::X_OK,
        AtFlags::AT_EACCESS,
    ) {
        Err(nix::errno::Errno::EROFS) => return Ok(Some(read_only())),
        Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => {
            return Ok(Some(Obstacle::NotWritable {
                dir: dir.to_path_buf(),
            }))
        }
        // Whatever else it says, the call itself will say it better.
        _ => {}
    }
    Ok(None)
}

/// In a sticky directory only the owner of an entry, the owner of the
/// directory and a privileged user may remove or rename the entry.
fn sticky(dir: &Path, entry: &Metadata) -> Result<Option<Obstacle>, Error> {
    let meta = std::fs::metadata(dir).map_err(|e| io_error("stat", dir, e))?;
    if meta.mode() & libc::S_ISVTX == 0 {
        return Ok(None);
    }
    let me = geteuid();
    // Root stands for CAP_FOWNER here, which it normally holds.
    if me.is_root() || me.as_raw() == meta.uid() || me.as_raw() == entry.uid() {
        return Ok(None);
    }
    Ok(Some(Obstacle::Sticky {
        dir: dir.to_path_buf(),
    }))
}

/// The inode attributes of `path` (`FS_IOC_GETFLAGS`), or 0 when they
/// cannot be read (a file system without them, a file this user cannot
/// open): then nothing is known to stand in the way.
fn attributes(path: &Path, dir: bool) -> libc::c_int {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    let Ok(file) = OpenOptions::new().read(true).custom_flags(flags).open(path) else {
        return 0;
    };
    // The kernel stores an int (the request's `long` is historical), so
    // two ints leave room for either.
    let mut out: [libc::c_int; 2] = [0; 2];
    // SAFETY: the descriptor is valid for the whole call (`file` owns it
    // and outlives it), FS_IOC_GETFLAGS writes at most the size of a
    // `long` through the pointer, and `out` is that large, aligned for an
    // int, and not otherwise borrowed during the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, out.as_mut_ptr()) };
    if rc == 0 {
        out[0]
    } else {
        0
    }
}

fn io_error(op: &'static str, path: &Path, os: io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        os,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_has_no_obstacle() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(removal(&file).unwrap(), None);
        assert_eq!(removal(&dir.path().join("not yet")).unwrap(), None);
        assert_eq!(creation(&dir.path().join("g")).unwrap(), None);
        let missing = dir.path().join("no/such/f");
        assert_eq!(
            creation(&missing).unwrap(),
            Some(Obstacle::NoDirectory {
                dir: dir.path().join("no/such")
            })
        );
    }

    /// As an ordinary user a directory without write permission is an
    /// obstacle; root may write anyway, and then nothing is reported.
    #[test]
    fn a_directory_without_write_permission_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("ro");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o555)).unwrap();
        let found = removal(&file).unwrap();
        let unlinkable = std::fs::remove_file(&file).is_ok();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        if unlinkable {
            assert_eq!(found, None, "the kernel let us unlink it");
        } else {
            assert_eq!(found, Some(Obstacle::NotWritable { dir: sub.clone() }));
            assert!(found
                .unwrap()
                .to_string()
                .ends_with("/ro is not writable by this user"));
        }
    }

    #[test]
    fn obstacles_read_as_reasons() {
        let o = Obstacle::ReadOnly {
            dir: PathBuf::from("/mnt/ro"),
        };
        assert_eq!(o.to_string(), "/mnt/ro is on a read-only file system");
        let o = Obstacle::Immutable {
            path: PathBuf::from("/p/a"),
        };
        assert_eq!(
            o.to_string(),
            "/p/a is immutable (chattr +i; `chattr -i` clears it)"
        );
        assert_eq!(parent_dir(Path::new("a")), PathBuf::from("."));
    }
}
