//! The check every writer makes before its first write that each file it
//! will delete, replace, move aside or create can be: a run that could not
//! finish is refused while nothing has changed, instead of stopping
//! half-way (a transform that relinked the master and then could not
//! delete a replica on a read-only mount). It is the sibling of the
//! free-space check (`crate::space`); the storage answers the question
//! ([`poolsync_pmem::Storage::removal_obstacle`],
//! [`poolsync_pmem::Storage::creation_obstacle`]).
//!
//! A Device DAX is never unlinked or created (`crate::devdax`): deleting
//! or replacing one writes into it, so it is not asked about here.

use std::fmt;
use std::path::{Path, PathBuf};

use poolsync_pmem::{Obstacle, Storage};

use crate::Error;

/// A change a run will make to a directory entry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// The file is deleted.
    Delete(&'a Path),
    /// The file is deleted and created anew at the same path.
    Replace(&'a Path),
    /// The file is renamed beside itself (`sync`'s move aside).
    MoveAside(&'a Path),
    /// A new file is created.
    Create(&'a Path),
    /// A new file is created, and deleted again by the same run (a
    /// transform's journal or temporary copy).
    CreateAndDelete(&'a Path),
}

/// A change that cannot be made, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// The file.
    pub path: PathBuf,
    /// What the run would do to it ("delete", "replace", ...).
    pub verb: &'static str,
    /// What stands in the way.
    pub obstacle: Obstacle,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.verb,
            self.path.display(),
            self.obstacle
        )
    }
}

/// Asks the storage about every one of `changes`; `Ok(Err(_))` names the
/// first that cannot be made and why.
pub(crate) fn check<'a, S: Storage>(
    storage: &S,
    changes: impl IntoIterator<Item = Change<'a>>,
) -> Result<Result<(), Blocked>, Error> {
    for change in changes {
        let (path, asks): (&Path, &[(&'static str, bool)]) = match change {
            Change::Delete(p) => (p, &[("delete", true)]),
            Change::Replace(p) => (p, &[("replace", true)]),
            Change::MoveAside(p) => (p, &[("move aside", true)]),
            Change::Create(p) => (p, &[("create", false)]),
            Change::CreateAndDelete(p) => (p, &[("create", false), ("delete at the end", true)]),
        };
        if asks.iter().any(|&(_, removal)| removal) && storage.device_dax(path)?.is_some() {
            continue;
        }
        for &(verb, removal) in asks {
            let found = if removal {
                storage.removal_obstacle(path)?
            } else {
                storage.creation_obstacle(path)?
            };
            if let Some(obstacle) = found {
                return Ok(Err(Blocked {
                    path: path.to_path_buf(),
                    verb,
                    obstacle,
                }));
            }
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_pmem::sim::{Guard, SimStorage};

    #[test]
    fn the_first_change_that_cannot_be_made_is_named() {
        let s = SimStorage::new();
        s.insert_file(Path::new("/a/f"), b"x", 0o644).unwrap();
        s.add_dir(Path::new("/b")).unwrap();
        let changes = [
            Change::Create(Path::new("/b/new")),
            Change::Delete(Path::new("/a/f")),
            Change::CreateAndDelete(Path::new("/b/journal")),
        ];
        assert_eq!(check(&s, changes).unwrap(), Ok(()));
        s.guard_dir(Path::new("/b"), Some(Guard::AppendOnly));
        let blocked = check(&s, changes).unwrap().unwrap_err();
        assert_eq!(blocked.path, Path::new("/b/journal"));
        assert_eq!(blocked.verb, "delete at the end");
        s.guard_dir(Path::new("/a"), Some(Guard::ReadOnly));
        let blocked = check(&s, changes).unwrap().unwrap_err();
        assert_eq!(
            blocked.to_string(),
            "cannot delete /a/f: /a is on a read-only file system"
        );
    }
}
