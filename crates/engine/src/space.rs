//! The free-space check every writer that creates files makes before its
//! first write, so that no run stops half-way for want of space.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use poolsync_pmem::Storage;

use crate::Error;

/// A file a run is about to create.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewFile<'a> {
    /// Where.
    pub path: &'a Path,
    /// Its full size (files are allocated whole).
    pub size: u64,
    /// It replaces a file at the same path, whose space it takes over.
    pub replace: bool,
    /// What it is, in the words of the refusal ("the new parts").
    pub what: &'a str,
}

/// A file system without the room a run needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shortfall {
    /// A directory on that file system.
    pub dir: PathBuf,
    /// Bytes needed there.
    pub needed: u64,
    /// Bytes available there.
    pub free: u64,
    /// What needs it.
    pub what: String,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not enough free space for {} in {}: {} bytes needed, {} available",
            self.what,
            self.dir.display(),
            self.needed,
            self.free
        )
    }
}

/// Checks that every file system has room for the `files` created on it
/// (one that replaces a file needs only the difference). `Ok(Err(_))`
/// names the first file system that lacks it, what the room is for (only
/// the files that need some: a new part that takes the place of an equally
/// large file needs none) and a directory of the first of them; file
/// systems whose free space cannot be known are trusted.
pub(crate) fn check<S: Storage>(
    storage: &S,
    files: &[NewFile<'_>],
) -> Result<Result<(), Shortfall>, Error> {
    // Per file system (st_dev of the file's directory): the directory of
    // the first file that needs room there, the bytes needed, and what
    // needs them, in order of first mention.
    let mut needed: BTreeMap<u64, (PathBuf, u64, Vec<&str>)> = BTreeMap::new();
    for file in files {
        let dir = file
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let probe = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.clone()
        };
        let Some(meta) = storage.stat(&probe)? else {
            continue;
        };
        let existing = if file.replace {
            storage.stat(file.path)?.map_or(0, |m| m.len)
        } else {
            0
        };
        let bytes = file.size.saturating_sub(existing);
        if bytes == 0 {
            continue;
        }
        let entry = needed.entry(meta.dev).or_insert((dir, 0, Vec::new()));
        entry.1 = entry.1.saturating_add(bytes);
        if !entry.2.contains(&file.what) {
            entry.2.push(file.what);
        }
    }
    for (dir, bytes, what) in needed.values() {
        if let Some(free) = storage.free_space(dir)? {
            if free < *bytes {
                return Ok(Err(Shortfall {
                    dir: dir.clone(),
                    needed: *bytes,
                    free,
                    what: what.join(" and "),
                }));
            }
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_pmem::sim::SimStorage;

    #[test]
    fn a_full_file_system_is_named_with_what_needs_it() {
        let s = SimStorage::new();
        s.add_dir(Path::new("/d")).unwrap();
        s.set_capacity(Some(100 << 10));
        let part = NewFile {
            path: Path::new("/d/a"),
            size: 64 << 10,
            replace: false,
            what: "the new parts",
        };
        let journal = NewFile {
            path: Path::new("/d/j"),
            size: 64 << 10,
            replace: false,
            what: "the journal",
        };
        assert_eq!(check(&s, &[part]).unwrap(), Ok(()));
        let short = check(&s, &[part, journal]).unwrap().unwrap_err();
        assert_eq!(short.needed, 128 << 10);
        assert_eq!(short.what, "the new parts and the journal");
        assert!(short
            .to_string()
            .starts_with("not enough free space for the new parts and the journal in /d: "));
    }

    /// A new part that takes the place of an equally large file needs no
    /// room: the refusal names only what does (here the journal, in its
    /// own directory), not "the new parts".
    #[test]
    fn only_what_needs_room_is_named() {
        let s = SimStorage::new();
        s.insert_file(Path::new("/d/a"), &[0; 64 << 10], 0o644)
            .unwrap();
        s.add_dir(Path::new("/j")).unwrap();
        s.set_capacity(Some((64 << 10) + 4096));
        let part = NewFile {
            path: Path::new("/d/a"),
            size: 64 << 10,
            replace: true,
            what: "the new parts",
        };
        let journal = NewFile {
            path: Path::new("/j/journal"),
            size: 64 << 10,
            replace: false,
            what: "the journal",
        };
        let short = check(&s, &[part, journal]).unwrap().unwrap_err();
        assert_eq!(
            short.to_string(),
            "not enough free space for the journal in /j: 65536 bytes needed, 4096 available"
        );
        assert_eq!(check(&s, &[part]).unwrap(), Ok(()));
    }
}
