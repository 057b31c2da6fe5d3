//! What `poolsync serve` may touch: paths under its root, and nothing the
//! remote pool set file does not list (docs/wire.md, section 6).
//!
//! The pool set file a client names must be relative, without `.` or `..`
//! components; it and every part it lists must resolve, symbolic links
//! followed, to a path under the root (for a part that does not exist yet,
//! its directory must). rpmemd resolved pool set files against its
//! configured directory the same way.

use std::path::{Component, Path, PathBuf};

use poolsync_pmem::Storage;

use crate::Error;

/// Why a path is refused, for [`Error::RemoteRefused`].
fn refuse(path: &str, reason: String) -> Error {
    Error::ServeRefused {
        path: path.to_string(),
        reason,
    }
}

/// Checks the form of the pool set path a client sent: relative, not
/// empty, only normal components.
pub fn check_form(path: &str) -> Result<PathBuf, Error> {
    if path.is_empty() {
        return Err(refuse(path, "the path is empty".to_string()));
    }
    if path.as_bytes().contains(&0) {
        return Err(refuse(path, "the path contains a NUL byte".to_string()));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(refuse(
            path,
            "absolute paths are refused: name the pool set file relative to the server's root (serve.root)".to_string(),
        ));
    }
    for component in p.components() {
        match component {
            Component::Normal(_) => {}
            Component::ParentDir => {
                return Err(refuse(
                    path,
                    "\"..\" is refused: the pool set file must lie under the server's root"
                        .to_string(),
                ))
            }
            Component::CurDir => {
                return Err(refuse(path, "\".\" components are refused".to_string()))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(path, "absolute paths are refused".to_string()))
            }
        }
    }
    Ok(p.to_path_buf())
}

/// The server's root, resolved.
pub fn resolve_root<S: Storage>(storage: &S, root: &Path) -> Result<PathBuf, Error> {
    storage
        .canonicalize(root)?
        .ok_or_else(|| Error::ServeRefused {
            path: root.display().to_string(),
            reason: "the server's root (serve.root) does not exist".to_string(),
        })
}

/// Resolves `path` (checked by [`check_form`]) under `root` (resolved by
/// [`resolve_root`]): the pool set file, which must exist and lie under
/// the root once its symbolic links are followed.
pub fn resolve_set<S: Storage>(storage: &S, root: &Path, path: &str) -> Result<PathBuf, Error> {
    let relative = check_form(path)?;
    let joined = root.join(&relative);
    let resolved = storage
        .canonicalize(&joined)?
        .ok_or_else(|| Error::ServeNotFound {
            path: path.to_string(),
            resolved: joined.clone(),
        })?;
    if !resolved.starts_with(root) {
        return Err(refuse(
            path,
            format!(
                "it resolves to {}, outside the server's root {} (a symbolic link leaves it)",
                resolved.display(),
                root.display()
            ),
        ));
    }
    Ok(resolved)
}

/// Checks that a part the remote pool set lists lies under `root`: the
/// file itself when it exists, otherwise its directory (which must exist).
pub fn check_part<S: Storage>(
    storage: &S,
    root: &Path,
    set_path: &str,
    line: usize,
    part: &Path,
) -> Result<(), Error> {
    let at = |reason: String| Error::ServeRefused {
        path: format!("{set_path}:{line}"),
        reason,
    };
    let resolved = match storage.canonicalize(part)? {
        Some(p) => p,
        None => {
            let (Some(dir), Some(name)) = (part.parent(), part.file_name()) else {
                return Err(at(format!("{} is not a file path", part.display())));
            };
            let dir = storage.canonicalize(dir)?.ok_or_else(|| {
                at(format!(
                    "the directory of {} does not exist",
                    part.display()
                ))
            })?;
            dir.join(name)
        }
    };
    if !resolved.starts_with(root) {
        return Err(at(format!(
            "the part {} resolves to {}, outside the server's root {}",
            part.display(),
            resolved.display(),
            root.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_pmem::sim::SimStorage;

    #[test]
    fn only_plain_relative_paths_pass() {
        assert!(check_form("pools/a.set").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x.set",
            "a/../../x.set",
            "./a.set",
            "a\0b",
        ] {
            let e = check_form(bad).unwrap_err().to_string();
            assert!(e.contains("refused"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn sets_and_parts_resolve_under_the_root() {
        let s = SimStorage::new();
        s.add_dir(Path::new("/srv/root/pools")).unwrap();
        s.add_dir(Path::new("/srv/other")).unwrap();
        s.insert_file(Path::new("/srv/root/pools/a.set"), b"x", 0o644)
            .unwrap();
        let root = resolve_root(&s, Path::new("/srv/root")).unwrap();
        assert_eq!(
            resolve_set(&s, &root, "pools/a.set").unwrap(),
            PathBuf::from("/srv/root/pools/a.set")
        );
        let missing = resolve_set(&s, &root, "pools/b.set").unwrap_err();
        assert!(matches!(missing, Error::ServeNotFound { .. }), "{missing}");
        check_part(&s, &root, "pools/a.set", 2, Path::new("/srv/root/pools/p0")).unwrap();
        let out = check_part(&s, &root, "pools/a.set", 3, Path::new("/srv/other/p1"))
            .unwrap_err()
            .to_string();
        assert!(
            out.contains("pools/a.set:3") && out.contains("outside"),
            "{out}"
        );
        let nodir = check_part(&s, &root, "pools/a.set", 4, Path::new("/srv/root/x/p"))
            .unwrap_err()
            .to_string();
        assert!(nodir.contains("does not exist"), "{nodir}");
    }
}
