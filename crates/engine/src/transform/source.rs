//! The source of a transform as it is now: its health, its master header,
//! the header and existence of each of its parts, and which of its files a
//! transform may delete.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use poolsync_header::{PoolHdr, PoolType, RawUuid};
use poolsync_pmem::{Access, Storage};
use poolsync_poolset::{PartSize, PoolSet, Replica};

use super::request::{refuse, Request};
use super::types::{RemovedPart, TransformOptions};
use crate::compare::CompareOptions;
use crate::inspect::{inspect, Inconsistency};
use crate::open::open;
use crate::ownership::{prove, prove_by_bytes, Claim, Rules};
use crate::sync::plan::DEFAULT_PART_MODE;
use crate::Error;

/// What the source survey learnt.
#[derive(Debug, Clone)]
pub(super) struct SourceInfo {
    /// `Ok` when every replica is healthy; otherwise why not.
    pub healthy: Result<(), String>,
    /// `heap_offset + heap_size` of the health check's source.
    pub pool_size: Option<u64>,
    /// Replica 0 part 0's header.
    pub master: Option<PoolHdr>,
    /// Mode of new parts: replica 0 part 0's.
    pub mode: u32,
    /// Per replica and part: the file's header, when it has one that decodes.
    pub headers: Vec<Vec<Option<PoolHdr>>>,
    /// Per replica and part: whether the file exists.
    pub exists: Vec<Vec<bool>>,
    /// The source parts without a header of their own that the transform
    /// deletes or rewrites, by (replica, part), each proven by its bytes
    /// or not ([`SourceInfo::prove_headerless`]); empty when they are taken
    /// on their part 0's word (`--force`, or a run that resumes one whose
    /// journal says it proved them).
    pub headerless: BTreeMap<(usize, usize), Result<(), String>>,
}

impl SourceInfo {
    /// Opens the source read-only, judges it and remembers its parts.
    pub(super) fn survey<S: Storage>(storage: &S, src: &Path) -> Result<SourceInfo, Error> {
        let set = open(storage, src, Access::ReadOnly)?;
        let health = inspect(&set);
        let healthy = if health.is_healthy() {
            Ok(())
        } else if let Some(inc) = health.inconsistencies.first() {
            Err(match inc {
                // Why no replica is: each one's reason (a file that
                // could not be read, say).
                Inconsistency::NoReadablePart | Inconsistency::NoHealthyReplica => {
                    format!("{inc}: {}", crate::sync::plan::replica_reasons(&health))
                }
                _ => inc.to_string(),
            })
        } else {
            Err(health
                .replicas
                .iter()
                .filter(|r| !r.healthy)
                .map(|r| {
                    r.reason()
                        .unwrap_or_else(|| format!("replica {} is not healthy", r.replica))
                })
                .collect::<Vec<_>>()
                .join("; "))
        };
        let part0 = set.part(0, 0);
        Ok(SourceInfo {
            healthy,
            pool_size: health.pool_size,
            master: part0.and_then(|p| p.header()).cloned(),
            mode: part0
                .and_then(|p| p.meta)
                .map_or(DEFAULT_PART_MODE, |m| m.mode & 0o7777),
            headers: set
                .replicas
                .iter()
                .map(|r| r.parts.iter().map(|p| p.header().cloned()).collect())
                .collect(),
            exists: set
                .replicas
                .iter()
                .map(|r| r.parts.iter().map(|p| p.meta.is_some()).collect())
                .collect(),
            headerless: BTreeMap::new(),
        })
    }

    /// Proves by their bytes (`crate::ownership::prove_by_bytes`) the
    /// source parts without a header of their own that the transform
    /// deletes or rewrites: those of removed replicas, those whose files a
    /// new replica reuses, and, for a SINGLEHDR change, all of them.
    /// Nothing is proven with `--force`. Opens the source read-only, so it
    /// runs before the target is opened.
    pub(super) fn prove_headerless<S: Storage>(
        &mut self,
        storage: &S,
        req: &Request<'_>,
        options: &TransformOptions,
    ) -> Result<(), Error> {
        if options.force {
            return Ok(());
        }
        let reused: BTreeSet<PathBuf> = req
            .added
            .iter()
            .filter_map(|&r| req.d.replicas.get(r))
            .flat_map(|rep| match rep {
                Replica::Local { parts, .. } => {
                    parts.iter().map(|p| PathBuf::from(&p.path)).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        let paths = super::request::part_paths_by_replica(&req.s);
        let mut doomed = Vec::new();
        for (r, parts) in paths.iter().enumerate() {
            for (p, path) in parts.iter().enumerate().skip(req.s.nhdrs(r)) {
                let exists = self.exists.get(r).and_then(|e| e.get(p)) == Some(&true);
                if exists && (req.hdr_change || req.removed.contains(&r) || reused.contains(path)) {
                    doomed.push((r, p));
                }
            }
        }
        if doomed.is_empty() {
            return Ok(());
        }
        let set = open(storage, req.src, Access::ReadOnly)?;
        let compare = CompareOptions {
            stride: options.stride,
            threads: options.threads,
        };
        let pool_size = self.pool_size.unwrap_or(u64::MAX);
        for (r, p) in doomed {
            let verdict = prove_by_bytes(&set, r, p, pool_size, &compare)?;
            self.headerless.insert((r, p), verdict);
        }
        Ok(())
    }

    /// Refuses to `verb` ("delete", "overwrite") the source part at `path`
    /// when it has no header of its own and its bytes did not prove it the
    /// pool's ([`SourceInfo::prove_headerless`]).
    pub(super) fn check_headerless(
        &self,
        req: &Request<'_>,
        path: &Path,
        verb: &str,
    ) -> Result<(), Error> {
        let paths = super::request::part_paths_by_replica(&req.s);
        for ((r, p), verdict) in &self.headerless {
            let (Err(why), Some(parts)) = (verdict, paths.get(*r)) else {
                continue;
            };
            if parts.get(*p).map(PathBuf::as_path) != Some(path) {
                continue;
            }
            let part0 = parts.first().map_or(path, PathBuf::as_path);
            return Err(refuse(
                req.src,
                req.dst,
                format!(
                    "refusing to {verb} {} (replica {r} part {p}): the file {why}; if it is, --force takes it on the word of its replica's part 0, {}",
                    path.display(),
                    part0.display()
                ),
            ));
        }
        Ok(())
    }

    /// The UUIDs of every source part that has a header: a file that
    /// carries one of them is a copy of a source part, not something an
    /// interrupted run left.
    pub(super) fn part_uuids(&self) -> BTreeSet<RawUuid> {
        self.headers
            .iter()
            .flatten()
            .flatten()
            .map(|h| h.uuid)
            .collect()
    }

    /// The header of part `p` of replica `r`, if it decoded.
    pub(super) fn header(&self, r: usize, p: usize) -> Option<&PoolHdr> {
        self.headers.get(r)?.get(p)?.as_ref()
    }

    /// The healthy source's master header and pool size, checked as
    /// pmempool checks them: an obj pool, whose pool fits the smallest
    /// replica of the target.
    pub(super) fn facts(&self, req: &Request<'_>) -> Result<(PoolHdr, u64), Error> {
        let (src, dst) = (req.src, req.dst);
        let master = self.master.clone().ok_or_else(|| {
            refuse(
                src,
                dst,
                "replica 0 part 0 of the source has no readable pool header",
            )
        })?;
        if master.pool_type() != Some(PoolType::Obj) {
            return Err(refuse(src, dst, "the source is not an obj pool"));
        }
        let pool_size = self
            .pool_size
            .ok_or_else(|| refuse(src, dst, "the source pool size is not known"))?;
        let target_size = req.d.pool_size().unwrap_or(0);
        if pool_size > target_size {
            return Err(refuse(
                src,
                dst,
                format!(
                    "target poolset is too small: the pool holds {pool_size} bytes, the smallest target replica {target_size}"
                ),
            ));
        }
        Ok((master, pool_size))
    }

    /// The parts of source replica `r` as files to delete, each proven to
    /// belong to the pool set (header-less SINGLEHDR parts belong with
    /// their replica's part 0), except those in `keep` (reused by the
    /// target). Files that no longer exist are left out. They are listed
    /// last part first, the order they are deleted in: a part 0 goes after
    /// the parts whose proof it is.
    pub(super) fn removals(
        &self,
        req: &Request<'_>,
        r: usize,
        keep: &BTreeSet<PathBuf>,
        poolset_uuid: RawUuid,
    ) -> Result<Vec<RemovedPart>, Error> {
        let s: &PoolSet = &req.s;
        let Some(Replica::Local { parts, .. }) = s.replicas.get(r) else {
            return Ok(Vec::new());
        };
        let nhdrs = s.nhdrs(r);
        let mut out = Vec::new();
        for (p, part) in parts.iter().enumerate().rev() {
            let path = PathBuf::from(&part.path);
            let exists = self
                .exists
                .get(r)
                .and_then(|v| v.get(p))
                .copied()
                .unwrap_or(false);
            if !exists || keep.contains(&path) {
                continue;
            }
            self.check_headerless(req, &path, "delete")?;
            let hdr_part = if p < nhdrs { p } else { 0 };
            let claim = Claim::of(self.header(r, hdr_part));
            if let Err(what) = prove(claim, &Rules::strict(poolset_uuid)) {
                return Err(Error::NotOwned {
                    path,
                    what,
                    expected: poolset_uuid.to_canonical(),
                    hint: format!(
                        "it would be deleted by the transform of {} into {}",
                        req.src.display(),
                        req.dst.display()
                    ),
                });
            }
            out.push(RemovedPart {
                replica: r,
                part: p,
                path,
                size: match part.size {
                    PartSize::Bytes(b) => b,
                    PartSize::Auto => 0,
                },
            });
        }
        Ok(out)
    }

    /// [`SourceInfo::removals`] of every replica the transform removes.
    pub(super) fn removed_parts(
        &self,
        req: &Request<'_>,
        keep: &BTreeSet<PathBuf>,
        poolset_uuid: RawUuid,
    ) -> Result<Vec<RemovedPart>, Error> {
        let mut remove = Vec::new();
        for &r in &req.removed {
            remove.extend(self.removals(req, r, keep, poolset_uuid)?);
        }
        Ok(remove)
    }
}
