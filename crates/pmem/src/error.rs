//! The crate's one error type.

use std::io;
use std::path::{Path, PathBuf};

/// Errors of storage operations, each naming the path and the operation.
///
/// Messages of failed system calls follow the form PMDK prints,
/// `<call> "<path>": <strerror text>`, so that a user who knows `pmempool`
/// recognises them (for example `open "/pool/a.part": No such file or
/// directory`).
///
/// The system's text is part of the message, so the [`io::Error`] it came
/// from is kept in a field (`os`, see [`Error::os_error`]) and not returned
/// by [`std::error::Error::source`]: a caller that prints an error with
/// its chain of sources then shows that text once, not twice (`No space
/// left on device: No space left on device (os error 28)`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed.
    #[error("{op} \"{path}\": {}", os_message(.os))]
    Io {
        /// The system call, as PMDK names it (`open`, `unlink`, `chmod`, …).
        op: &'static str,
        /// The file or directory it was called on.
        path: PathBuf,
        /// What the system reported.
        os: io::Error,
    },
    /// `flock(LOCK_EX|LOCK_NB)` found the file locked by another open file description.
    #[error("flock \"{path}\": resource temporarily unavailable (the pool is in use)")]
    Locked {
        /// The locked file.
        path: PathBuf,
    },
    /// A positioned I/O call (`pread`, `pwrite`) failed.
    #[error("{op} \"{path}\" at offset {offset}: {}", os_message(.os))]
    IoAt {
        /// `read`, `write` or `flush`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Byte offset in the file where the failing call started.
        offset: u64,
        /// What the system reported.
        os: io::Error,
    },
    /// A read reached the end of the file before filling the buffer.
    #[error(
        "read \"{path}\": {len} bytes at offset {offset} reach past the end of the file \
         (only {got} could be read)"
    )]
    ShortRead {
        /// The file.
        path: PathBuf,
        /// Where the read started.
        offset: u64,
        /// How many bytes were asked for.
        len: u64,
        /// How many bytes the file held from `offset` on.
        got: u64,
    },
    /// A byte range whose end does not fit in a 64-bit offset.
    #[error("{op} \"{path}\": range of {len} bytes at offset {offset} overflows the file offset")]
    InvalidRange {
        /// `read`, `write` or `flush`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
    },
    /// `open` of something that is neither a regular file nor a character
    /// device (a FIFO would block the open; a directory cannot be read).
    #[error("open \"{path}\": {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// `create` found a file at the path; existing files are never overwritten.
    #[error("create \"{path}\": file already exists (an existing file is never overwritten)")]
    Exists {
        /// The existing file, left untouched.
        path: PathBuf,
    },
    /// `posix_fallocate` could not allocate a new part file to its full size.
    #[error("posix_fallocate \"{path}\", {size}: {}", os_message(.os))]
    Allocate {
        /// The new file (already removed again when this is returned).
        path: PathBuf,
        /// The requested size in bytes.
        size: u64,
        /// What the system reported.
        os: io::Error,
    },
    /// Removing a half-created file after a failure failed too, so the file
    /// is still there.
    #[error("{cause}; removing the half-created \"{path}\" failed as well: {}", os_message(.os))]
    Cleanup {
        /// The file left behind.
        path: PathBuf,
        /// The failure that made the file half-created.
        cause: Box<Error>,
        /// Why `unlink` failed.
        os: io::Error,
    },
    /// An earlier `fdatasync` of this file failed; written data may have been
    /// dropped by the kernel, so no later fence can promise durability.
    #[error(
        "fdatasync \"{path}\": an earlier fdatasync of this file failed, \
         so data written since it was opened may be lost"
    )]
    SyncPoisoned {
        /// The file.
        path: PathBuf,
    },
    /// A file is larger than the caller is willing to read into memory.
    #[error("read \"{path}\": file is {len} bytes, more than the {max} bytes allowed")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The limit the caller gave.
        max: u64,
    },
    /// The simulated storage ([`crate::sim::SimStorage`]) crashed at this
    /// persistence event (0-based); every operation after it fails too.
    #[error("simulated crash at persistence event {event}")]
    SimulatedCrash {
        /// Index of the flush, fence or directory sync that crashed.
        event: u64,
    },
    /// An environment variable holds a value this crate does not understand.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value (lossily converted to UTF-8).
        value: String,
        /// What was expected instead.
        reason: &'static str,
    },
    /// The kernel refused to map a file with `MAP_SYNC`: it is not on a
    /// DAX file system, and the DAX path was not forced.
    #[error(
        "mmap \"{path}\" with MAP_SYNC: {} (the file is not on a DAX file system); \
         use the page-cache path (POOLSYNC_PERSIST=pagecache), or force the DAX code \
         path with PMEM_IS_PMEM_FORCE=1, which does not make data durable on such a file",
        os_message(.os)
    )]
    NotDax {
        /// The file.
        path: PathBuf,
        /// What `mmap` reported (`EOPNOTSUPP`, or `EINVAL` on old kernels).
        os: io::Error,
    },
    /// An access through a mapping reaches past the end of the file (a
    /// mapped file cannot grow by writing past its end).
    #[error(
        "{op} \"{path}\": {len} bytes at offset {offset} reach past the end of the \
         {file_len}-byte file"
    )]
    PastEnd {
        /// `write` or `flush`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Length of the file as mapped.
        file_len: u64,
    },
    /// A character device that is not a Device DAX was to be mapped.
    #[error("mmap \"{path}\": a character device that is not a Device DAX (/dev/daxX.Y)")]
    NotDevDax {
        /// The device.
        path: PathBuf,
    },
    /// An operation no Device DAX takes: it is never unlinked, truncated or
    /// allocated (its header is zeroed or overwritten instead).
    #[error("{op} \"{path}\": refused on a Device DAX, which is never unlinked, truncated or allocated (its pool header is zeroed or overwritten instead)")]
    DeviceDax {
        /// `unlink`, `ftruncate` or `posix_fallocate`.
        op: &'static str,
        /// The device.
        path: PathBuf,
    },
    /// A sysfs attribute of a Device DAX holds something unexpected.
    #[error("sysfs \"{path}\": {value:?}: {reason}")]
    Sysfs {
        /// The attribute file.
        path: PathBuf,
        /// What it holds.
        value: String,
        /// What was expected instead.
        reason: &'static str,
    },
}

impl Error {
    /// The system's report behind a failed call ([`Error::Io`],
    /// [`Error::IoAt`], [`Error::Allocate`], [`Error::Cleanup`],
    /// [`Error::NotDax`]), for callers that decide by its kind or errno.
    /// Its text is already part of this error's message.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { os, .. }
            | Error::IoAt { os, .. }
            | Error::Allocate { os, .. }
            | Error::Cleanup { os, .. }
            | Error::NotDax { os, .. } => Some(os),
            _ => None,
        }
    }
}

/// The text of an I/O error without the ` (os error N)` suffix that Rust
/// appends, so that messages read like PMDK's `strerror` output.
fn os_message(err: &io::Error) -> String {
    let text = err.to_string();
    match err.raw_os_error() {
        Some(code) => {
            let suffix = format!(" (os error {code})");
            match text.strip_suffix(&suffix) {
                Some(stripped) => stripped.to_owned(),
                None => text,
            }
        }
        None => text,
    }
}

/// `[offset, offset + len)` as a range of `path` for `op`, or
/// [`Error::InvalidRange`] when its end does not fit in 64 bits.
pub(crate) fn check_range(
    op: &'static str,
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<u64, Error> {
    offset.checked_add(len).ok_or_else(|| Error::InvalidRange {
        op,
        path: path.to_path_buf(),
        offset,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_print_like_strerror() {
        let err = Error::Io {
            op: "open",
            path: PathBuf::from("/x/y"),
            os: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(err.to_string(), "open \"/x/y\": No such file or directory");
    }

    #[test]
    fn custom_errors_keep_their_text() {
        let err = Error::IoAt {
            op: "write",
            path: PathBuf::from("p"),
            offset: 7,
            os: io::Error::new(io::ErrorKind::WriteZero, "failed to write whole buffer"),
        };
        assert_eq!(
            err.to_string(),
            "write \"p\" at offset 7: failed to write whole buffer"
        );
    }

    /// The message and every source after it, joined as a chain printer
    /// (`anyhow`'s `{:#}`) joins them.
    fn chain_text(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut next = err.source();
        while let Some(cause) = next {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            next = cause.source();
        }
        text
    }

    #[test]
    fn the_system_text_appears_once_in_the_chain() {
        let enospc = || io::Error::from_raw_os_error(libc::ENOSPC);
        let errors = [
            Error::Io {
                op: "write",
                path: PathBuf::from("/p/a"),
                os: enospc(),
            },
            Error::IoAt {
                op: "write",
                path: PathBuf::from("/p/a"),
                offset: 4096,
                os: enospc(),
            },
            Error::Allocate {
                path: PathBuf::from("/p/a"),
                size: 1 << 20,
                os: enospc(),
            },
            Error::Cleanup {
                path: PathBuf::from("/p/a"),
                cause: Box::new(Error::Exists {
                    path: PathBuf::from("/p/a"),
                }),
                os: enospc(),
            },
        ];
        for err in &errors {
            let text = chain_text(err);
            assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
            assert!(!text.contains("os error"), "{text}");
            assert_eq!(
                err.os_error().and_then(io::Error::raw_os_error),
                Some(libc::ENOSPC)
            );
        }
    }
}
