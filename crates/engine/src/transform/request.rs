//! What a transform is asked to do: the two pool set files, parsed, their
//! replicas matched, and the change they describe.
//!
//! Everything here reads only the two pool set files (and `stat`s the
//! target's part paths); the source's parts are surveyed in
//! [`super::source`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use poolsync_pmem::{Access, FileKind, Storage};
use poolsync_poolset::{PartSize, PoolSet, Replica};

use crate::sync::plan::SYNC_MIN_PART;
use crate::Error;

/// The transform of `src` into `dst`, as the two files describe it.
#[derive(Debug)]
pub(super) struct Request<'a> {
    pub src: &'a Path,
    pub dst: &'a Path,
    pub s: PoolSet,
    pub d: PoolSet,
    /// `s2d[r]`: the target replica source replica `r` is (`None`: removed).
    pub s2d: Vec<Option<usize>>,
    /// `d2s[r]`: the source replica target replica `r` is (`None`: added).
    pub d2s: Vec<Option<usize>>,
    /// Source replicas removed.
    pub removed: Vec<usize>,
    /// Target replicas added.
    pub added: Vec<usize>,
    /// `OPTION SINGLEHDR` is added or removed.
    pub hdr_change: bool,
}

impl<'a> Request<'a> {
    /// Reads both pool set files, matches their replicas and decides the
    /// one change they describe, refusing what pmempool refuses.
    pub(super) fn read<S: Storage>(
        storage: &S,
        src: &'a Path,
        dst: &'a Path,
    ) -> Result<Request<'a>, Error> {
        let s = parse_set(storage, src)?;
        let d = parse_set(storage, dst)?;
        for (set, path) in [(&s, src), (&d, dst)] {
            if set.options.no_hdrs {
                return Err(Error::NoHdrs {
                    set: path.to_path_buf(),
                });
            }
        }
        check_target_parts(storage, dst, &d)?;
        let (s2d, d2s) = match_replicas(src, dst, &s, &d)?;
        let removed: Vec<usize> = (0..s2d.len())
            .filter(|&r| s2d.get(r).is_some_and(Option::is_none))
            .collect();
        let added: Vec<usize> = (0..d2s.len())
            .filter(|&r| d2s.get(r).is_some_and(Option::is_none))
            .collect();
        let hdr_change = s.options.single_hdr != d.options.single_hdr;
        if hdr_change && (!removed.is_empty() || !added.is_empty()) {
            return Err(refuse(
                src,
                dst,
                "changing SINGLEHDR together with adding or removing replicas is not allowed; change one thing at a time",
            ));
        }
        if !hdr_change && removed.is_empty() && added.is_empty() {
            return Err(refuse(
                src,
                dst,
                "both poolsets are equal: nothing to transform",
            ));
        }
        Ok(Request {
            src,
            dst,
            s,
            d,
            s2d,
            d2s,
            removed,
            added,
            hdr_change,
        })
    }

    /// Whether the transform rewrites replicas onto their own files
    /// (beyond pmempool): a SINGLEHDR change, new replicas that reuse
    /// source files, or replicas replaced while no source replica stays.
    /// Those go through a staged rebuild ([`super::staged`]).
    pub(super) fn is_staged(&self) -> bool {
        let src_paths: BTreeSet<PathBuf> = part_paths(&self.s).into_iter().collect();
        let reuses = self.added.iter().any(|&r| {
            self.d
                .replicas
                .get(r)
                .and_then(replica_key)
                .unwrap_or_default()
                .iter()
                .any(|(p, _)| src_paths.contains(Path::new(p)))
        });
        let none_stays = !self.removed.is_empty()
            && !self.added.is_empty()
            && self.s2d.iter().all(Option::is_none);
        self.hdr_change || reuses || none_stays
    }
}

/// A refusal naming both pool set files.
pub(super) fn refuse(src: &Path, dst: &Path, reason: impl Into<String>) -> Error {
    Error::CannotTransform {
        source_set: src.to_path_buf(),
        target_set: dst.to_path_buf(),
        reason: reason.into(),
    }
}

/// The source is broken: `sync` repairs it first.
pub(super) fn broken(src: &Path, dst: &Path, why: &str) -> Error {
    refuse(
        src,
        dst,
        format!(
            "source poolset is broken: {why}; repair it with `poolsync sync {}` and run the transform again",
            src.display()
        ),
    )
}

/// Reads and parses a pool set file (no part is opened): its local
/// replicas, which this transform changes; remote replicas are added and
/// removed by `crate::remote::transform`.
pub(super) fn parse_set<S: Storage>(storage: &S, path: &Path) -> Result<PoolSet, Error> {
    let loaded = crate::load::load(storage, path, Access::ReadOnly)?;
    if !loaded.is_poolset {
        return Err(Error::NotPoolSet {
            path: path.to_path_buf(),
        });
    }
    Ok(loaded.set.split_remote().0)
}

/// A replica's identity for matching: part path strings and sizes.
pub(super) fn replica_key(replica: &Replica) -> Option<Vec<(String, u64)>> {
    match replica {
        Replica::Local { parts, .. } => parts
            .iter()
            .map(|p| match p.size {
                PartSize::Bytes(b) => Some((p.path.clone(), b)),
                PartSize::Auto => None,
            })
            .collect(),
        Replica::Remote { .. } => None,
    }
}

/// The part paths of each replica of `set` (none for a remote one).
pub(super) fn part_paths_by_replica(set: &PoolSet) -> Vec<Vec<PathBuf>> {
    set.replicas
        .iter()
        .map(|r| match r {
            Replica::Local { parts, .. } => parts.iter().map(|p| PathBuf::from(&p.path)).collect(),
            Replica::Remote { .. } => Vec::new(),
        })
        .collect()
}

/// Every part path of `set`.
pub(super) fn part_paths(set: &PoolSet) -> Vec<PathBuf> {
    part_paths_by_replica(set).into_iter().flatten().collect()
}

/// The part paths of `set` whose files carry a header of their own.
pub(super) fn header_paths(set: &PoolSet) -> BTreeSet<PathBuf> {
    part_paths_by_replica(set)
        .into_iter()
        .enumerate()
        .flat_map(|(r, paths)| paths.into_iter().take(set.nhdrs(r)))
        .collect()
}

/// Matches replicas: `s2d[r]` is the target replica that source replica `r`
/// corresponds to (same part paths and sizes), and the reverse.
type Matching = (Vec<Option<usize>>, Vec<Option<usize>>);

fn match_replicas(src: &Path, dst: &Path, s: &PoolSet, d: &PoolSet) -> Result<Matching, Error> {
    let skeys: Vec<_> = s.replicas.iter().map(replica_key).collect();
    let dkeys: Vec<_> = d.replicas.iter().map(replica_key).collect();
    let mut s2d = vec![None; skeys.len()];
    let mut d2s = vec![None; dkeys.len()];
    for (r, sk) in skeys.iter().enumerate() {
        let Some(sk) = sk else { continue };
        let hits: Vec<usize> = dkeys
            .iter()
            .enumerate()
            .filter(|(_, dk)| dk.as_ref() == Some(sk))
            .map(|(i, _)| i)
            .collect();
        if hits.len() > 1 {
            return Err(refuse(
                src,
                dst,
                format!("source replica {r} matches more than one target replica ({hits:?})"),
            ));
        }
        if let (Some(&t), Some(slot)) = (hits.first(), s2d.get_mut(r)) {
            *slot = Some(t);
            if let Some(back) = d2s.get_mut(t) {
                if back.is_some() {
                    return Err(refuse(
                        src,
                        dst,
                        format!("target replica {t} matches more than one source replica"),
                    ));
                }
                *back = Some(r);
            }
        }
    }
    Ok((s2d, d2s))
}

/// The target's part checks that come before anything is opened: sizes,
/// directories and files named twice (by inode for files that exist, by
/// path otherwise).
fn check_target_parts<S: Storage>(storage: &S, dst: &Path, d: &PoolSet) -> Result<(), Error> {
    let mut seen: BTreeMap<(u64, u64), (usize, PathBuf)> = BTreeMap::new();
    let mut seen_paths: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for (r, replica) in d.replicas.iter().enumerate() {
        let Replica::Local { parts, .. } = replica else {
            return Err(Error::Unsupported {
                set: dst.to_path_buf(),
                line: 0,
                what: "remote replicas are".to_string(),
            });
        };
        for (p, part) in parts.iter().enumerate() {
            let size = match part.size {
                PartSize::Bytes(b) => b,
                PartSize::Auto => 0,
            };
            if size < SYNC_MIN_PART {
                return Err(Error::SyncPartTooSmall {
                    set: dst.to_path_buf(),
                    line: part.line,
                    replica: r,
                    part: p,
                    size,
                    min: SYNC_MIN_PART,
                });
            }
            let path = PathBuf::from(&part.path);
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let dir_ok = dir.as_os_str().is_empty()
                || storage
                    .stat(&dir)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.kind == FileKind::Directory);
            if !dir_ok {
                return Err(Error::PartDirectory {
                    set: dst.to_path_buf(),
                    line: part.line,
                    replica: r,
                    part: p,
                    dir,
                });
            }
            let dup = |other: &Path, other_line: usize| Error::DuplicatePart {
                set: dst.to_path_buf(),
                line: part.line,
                part: path.clone(),
                other: other.to_path_buf(),
                other_line,
            };
            if let Some(meta) = storage.stat(&path)? {
                if let Some((line, other)) = seen.get(&(meta.dev, meta.ino)) {
                    return Err(dup(other, *line));
                }
                seen.insert((meta.dev, meta.ino), (part.line, path.clone()));
            }
            if let Some(line) = seen_paths.get(&path) {
                return Err(dup(&path, *line));
            }
            seen_paths.insert(path, part.line);
        }
    }
    Ok(())
}
