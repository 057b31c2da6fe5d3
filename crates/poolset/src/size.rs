//! Size rules (docs/format.md §14): headers per replica, replica and pool net
//! sizes, and the minimum sizes libpmemobj enforces at create time.

use crate::{page_align_down, Error, PartSize, PoolSet, Replica, OBJ_MIN_PART, OBJ_MIN_POOL, PAGE};

impl PoolSet {
    /// Pool headers in replica `replica`: 1 with `SINGLEHDR` (even when
    /// `NOHDRS` is set too, as in PMDK), 0 with `NOHDRS`, else the number of
    /// parts. A remote replica counts as the one part PMDK gives it; a replica
    /// index out of range has 0.
    pub fn nhdrs(&self, replica: usize) -> usize {
        let Some(rep) = self.replicas.get(replica) else {
            return 0;
        };
        if self.options.single_hdr {
            1
        } else if self.options.no_hdrs {
            0
        } else {
            match rep {
                Replica::Local { parts, .. } => parts.len(),
                Replica::Remote { .. } => 1,
            }
        }
    }

    /// Net size of local replica `replica` (docs/format.md §14.1):
    /// `Σ A(size) − (nhdrs − 1) · 4096` when `nhdrs > 0`, else `Σ A(size)`.
    ///
    /// `None` for a remote replica, an index out of range, a replica with an
    /// `AUTO` part, and when the result does not fit in a `u64`: above
    /// `u64::MAX`, or below zero, which happens only when parts are smaller
    /// than a page (PMDK wraps around there; such parts fail the minimum part
    /// size anyway).
    pub fn replica_size(&self, replica: usize) -> Option<u64> {
        let Replica::Local { parts, .. } = self.replicas.get(replica)? else {
            return None;
        };
        let mut sum: u64 = 0;
        for part in parts {
            let PartSize::Bytes(bytes) = part.size else {
                return None;
            };
            sum = sum.checked_add(page_align_down(bytes))?;
        }
        match u64::try_from(self.nhdrs(replica)).ok()? {
            0 => Some(sum),
            nhdrs => sum.checked_sub((nhdrs - 1).checked_mul(PAGE)?),
        }
    }

    /// The pool size: the smallest net size over the local replicas (remote
    /// replicas are ignored, docs/format.md §14.1). `None` when there is no local
    /// replica or the size of any local replica is unknown (see
    /// [`PoolSet::replica_size`]).
    pub fn pool_size(&self) -> Option<u64> {
        let mut min: Option<u64> = None;
        for (index, replica) in self.replicas.iter().enumerate() {
            if replica.is_remote() {
                continue;
            }
            let size = self.replica_size(index)?;
            min = Some(min.map_or(size, |m| m.min(size)));
        }
        min
    }

    /// The minimum-size checks libpmemobj makes when it creates an obj pool
    /// (docs/format.md §14.2), in PMDK's order: first the net pool size against
    /// [`OBJ_MIN_POOL`], then every local part's configured size against
    /// [`OBJ_MIN_PART`], replica by replica.
    ///
    /// Sizes that are not known yet are skipped: `AUTO` parts (the engine
    /// resolves them and checks again), and replicas whose net size is
    /// unknown. The pool check uses the smallest known replica size, which is
    /// enough to prove the pool too small; PMDK's wrap-around for replicas of
    /// sub-page parts likewise lets those reach the part check.
    pub fn validate_obj_sizes(&self) -> Result<(), Error> {
        let smallest = (0..self.replicas.len())
            .filter_map(|index| self.replica_size(index))
            .min();
        if let Some(size) = smallest {
            if size < OBJ_MIN_POOL {
                return Err(Error::PoolTooSmall {
                    size,
                    min: OBJ_MIN_POOL,
                });
            }
        }
        for (replica, rep) in self.replicas.iter().enumerate() {
            for (part, p) in rep.parts().iter().enumerate() {
                if let PartSize::Bytes(size) = p.size {
                    if size < OBJ_MIN_PART {
                        return Err(Error::PartTooSmall {
                            line: p.line,
                            replica,
                            part,
                            size,
                            min: OBJ_MIN_PART,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse, Error};

    #[test]
    fn documented_example_pool_size() {
        // docs/format.md §14.1: replica 0 = 16 MiB + 8 MiB, replica 1 = 24 MiB.
        let set = parse("PMEMPOOLSET\n16M /a\n8M /b\nREPLICA\n24M /c\n").unwrap();
        assert_eq!(set.nhdrs(0), 2);
        assert_eq!(set.nhdrs(1), 1);
        assert_eq!(set.replica_size(0), Some(25_161_728));
        assert_eq!(set.replica_size(1), Some(25_165_824));
        assert_eq!(set.pool_size(), Some(25_161_728));
    }

    #[test]
    fn options_change_the_header_count() {
        let single = parse("PMEMPOOLSET\nOPTION SINGLEHDR\n4M /a\n4M /b\n").unwrap();
        assert_eq!(single.nhdrs(0), 1);
        assert_eq!(single.replica_size(0), Some(8 << 20));
        let none = parse("PMEMPOOLSET\nOPTION NOHDRS\n4M /a\n4M /b\n").unwrap();
        assert_eq!(none.nhdrs(0), 0);
        assert_eq!(none.replica_size(0), Some(8 << 20));
        let both = parse("PMEMPOOLSET\nOPTION NOHDRS SINGLEHDR\n4M /a\n4M /b\n").unwrap();
        assert_eq!(both.nhdrs(0), 1);
        assert_eq!(both.nhdrs(7), 0);
    }

    #[test]
    fn unknown_sizes() {
        let auto = parse("PMEMPOOLSET\nAUTO /dev/dax0.0\nREPLICA\n8M /b\nREPLICA h d\n").unwrap();
        assert_eq!(auto.replica_size(0), None);
        assert_eq!(auto.replica_size(1), Some(8 << 20));
        assert_eq!(auto.replica_size(2), None);
        assert_eq!(auto.replica_size(3), None);
        assert_eq!(auto.nhdrs(2), 1);
        assert_eq!(auto.pool_size(), None);
        assert_eq!(auto.validate_obj_sizes(), Ok(()));

        let huge = parse("PMEMPOOLSET\n16383P /a\n16383P /b\n").unwrap();
        assert_eq!(huge.replica_size(0), None);
        let tiny = parse("PMEMPOOLSET\n100 /a\n100 /b\n").unwrap();
        assert_eq!(tiny.replica_size(0), None);
        let sub_page = parse("PMEMPOOLSET\n4M /a\n4M /b\n100 /c\n").unwrap();
        assert_eq!(sub_page.replica_size(0), Some((8 << 20) - 8192));
    }

    /// Each case was checked with `pmempool create obj` 1.12.1: the pool
    /// check comes first (PMDK calls it "reservation pool size"), then parts.
    #[test]
    fn minimum_sizes_in_pmdk_order() {
        let check = |text: &str| parse(text).unwrap().validate_obj_sizes();
        assert_eq!(check("PMEMPOOLSET\n8M /a\n"), Ok(()));
        assert_eq!(
            check("PMEMPOOLSET\nOPTION SINGLEHDR\n4M /a\n4M /b\n"),
            Ok(())
        );
        assert_eq!(
            check("PMEMPOOLSET\n4M /a\n4M /b\n"),
            Err(Error::PoolTooSmall {
                size: 8_384_512,
                min: 8 << 20
            })
        );
        assert_eq!(
            check("PMEMPOOLSET\n1M /a\n4M /b\n"),
            Err(Error::PoolTooSmall {
                size: 5_238_784,
                min: 8 << 20
            })
        );
        assert_eq!(
            check("PMEMPOOLSET\n16M /a\nREPLICA\n1M /b\n16M /c\n"),
            Err(Error::PartTooSmall {
                line: 4,
                replica: 1,
                part: 0,
                size: 1 << 20,
                min: 2 << 20
            })
        );
        // PMDK's net size wraps around below zero and passes; the part fails.
        assert_eq!(
            check("PMEMPOOLSET\n100 /a\n100 /b\n").map_err(|e| e.to_string()),
            Err("line 2: size 100 smaller than 2097152".to_owned())
        );
        // A replica too small is found even when another one is unknown.
        assert_eq!(
            check("PMEMPOOLSET\nAUTO /dev/dax0.0\nREPLICA\n4M /b\n").map_err(|e| e.line()),
            Err(0)
        );
    }
}
