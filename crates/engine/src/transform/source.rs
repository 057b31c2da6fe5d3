//! The source of a transform as it is now: its health, its master header,
//! the header and existence of each of its parts, and which of its files a
//! transform may delete.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use poolsync_header::{PoolHdr, PoolType, RawUuid};
use poolsync_pmem::{Access, Storage};
use poolsync_poolset::{PartSize, PoolSet, Replica};

use super::request::{refuse, Request};
use super::types::RemovedPart;
use crate::inspect::{inspect, Inconsistency};
use crate::open::open;
use crate::ownership::{prove, Claim, Rules};
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
        })
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
