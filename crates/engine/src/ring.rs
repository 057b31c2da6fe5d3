//! The UUID rings of a pool set: which UUID each header-carrying part gets,
//! and which header it gets, when a sync rebuilds parts or a transform
//! builds new replicas (docs/format.md §5, §17.6).
//!
//! One mechanism serves both. [`assign`] gives every part its UUID under
//! [`Rules`]; `plan_headers` then gives every part its header: a new
//! one, made from the master's attributes (`new_header`), for a part
//! that is rebuilt, and its own header with the new links for a part that
//! is kept, written only when its bytes change.
//!
//! # The UUIDs of rebuilt parts
//!
//! Every header-carrying part that is not broken keeps its UUID. Under
//! [`Rules::Sync`] a broken one takes the first of these that applies, as
//! libpmempool 1.12's sync does:
//!
//! * (a) the previous part of the ring is not broken (and no SINGLEHDR):
//!   its `next_part_uuid`;
//! * (b) the next part is not broken (and no SINGLEHDR): its
//!   `prev_part_uuid`;
//! * (c) part 0, and part 0 of the previous replica is not broken: its
//!   `next_repl_uuid`;
//! * (d) part 0, and part 0 of the next replica is not broken: its
//!   `prev_repl_uuid`;
//! * (e) a fresh UUID.
//!
//! (c) and (d) refuse a UUID that an earlier replica's part 0 already has
//! ("repeated uuid").
//!
//! One extension, used only where PMDK would take a fresh UUID: before (e),
//! part 0 also takes the `next_repl_uuid` (or `prev_repl_uuid`) of *any*
//! unbroken header of the previous (or next) replica. Every unbroken header
//! of a replica names the same neighbours (the health check refuses the set
//! otherwise), so this is the UUID the surviving headers already point to.
//! Keeping it means no intact header ever has to be relinked, which is what
//! keeps a crash between header writes from leaving links that the health
//! check would call inconsistent (see `ARCHITECTURE.md`, crash model).
//!
//! Under [`Rules::Fresh`], as `pmempool transform` does for the replicas it
//! creates, every broken (new) part takes a fresh UUID.

use std::fmt;

use poolsync_header::{ring_links, HeaderLinks, PoolHdr, PoolType, RawUuid, Sds, FEAT_SINGLEHDR};
use serde::Serialize;

/// Where fresh UUIDs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UuidSource {
    /// Random version-4 UUIDs, as PMDK makes them.
    #[default]
    Random,
    /// UUIDs derived from a seed and the part's position: the same seed
    /// gives the same UUID for the same replica and part, in every run.
    /// For tests, so that a run after a crash can be compared with an
    /// uninterrupted one byte for byte.
    Derived {
        /// The seed.
        seed: u64,
    },
}

impl UuidSource {
    /// A fresh UUID for part `part` of replica `replica`.
    pub fn generate(&self, replica: usize, part: usize) -> RawUuid {
        match self {
            UuidSource::Random => RawUuid::from_uuid(uuid::Uuid::new_v4()),
            UuidSource::Derived { seed } => {
                let mut state = splitmix(*seed);
                state = splitmix(state ^ replica as u64);
                state = splitmix(state ^ part as u64);
                let mut bytes = [0u8; 16];
                for chunk in bytes.chunks_mut(8) {
                    state = splitmix(state);
                    chunk.copy_from_slice(&state.to_le_bytes());
                }
                // Version 4, RFC 4122 variant, in the on-media (GUID) order:
                // byte 7 holds the high byte of time_hi_and_version.
                bytes[7] = (bytes[7] & 0x0f) | 0x40;
                bytes[8] = (bytes[8] & 0x3f) | 0x80;
                RawUuid(bytes)
            }
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a sync does with one part's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderAction {
    /// The part carries no header (SINGLEHDR, part ≥ 1).
    None,
    /// Left as it is.
    Keep,
    /// Its links change: rewritten with everything else kept.
    Relink,
    /// A new header (the part is broken).
    New,
    /// Invalidated while its replica is repaired, then written back as it
    /// was (with current links).
    Restore,
}

/// Which rule gave a part its UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UuidOrigin {
    /// The part is not broken: its own header's UUID.
    Kept,
    /// (a) the previous part's `next_part_uuid`.
    PrevPart,
    /// (b) the next part's `prev_part_uuid`.
    NextPart,
    /// (c) the previous replica's part-0 `next_repl_uuid`.
    PrevReplica,
    /// (d) the next replica's part-0 `prev_repl_uuid`.
    NextReplica,
    /// Extension of (c): another unbroken header of the previous replica.
    PrevReplicaHeader,
    /// Extension of (d): another unbroken header of the next replica.
    NextReplicaHeader,
    /// (e) a fresh UUID.
    Fresh,
}

impl fmt::Display for UuidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UuidOrigin::Kept => "kept",
            UuidOrigin::PrevPart => "from the previous part's link",
            UuidOrigin::NextPart => "from the next part's link",
            UuidOrigin::PrevReplica | UuidOrigin::PrevReplicaHeader => {
                "from the previous replica's link"
            }
            UuidOrigin::NextReplica | UuidOrigin::NextReplicaHeader => {
                "from the next replica's link"
            }
            UuidOrigin::Fresh => "new",
        })
    }
}

/// One header-carrying part as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct PartView<'a> {
    /// The part (or its whole replica) is broken and gets a new header.
    pub broken: bool,
    /// The part's header; only read when the part is not broken.
    pub header: Option<&'a PoolHdr>,
}

/// A UUID and the rule that chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    /// The UUID.
    pub uuid: RawUuid,
    /// The rule.
    pub origin: UuidOrigin,
}

/// Why no UUIDs could be assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UuidError {
    /// (c) or (d) found a UUID an earlier replica's part 0 already has.
    Repeated {
        /// The replica whose part 0 would get it.
        replica: usize,
        /// The UUID.
        uuid: RawUuid,
    },
    /// An unbroken part has no readable header (the health check marks
    /// such parts broken, so this means the inputs disagree).
    MissingHeader {
        /// The replica.
        replica: usize,
        /// The part.
        part: usize,
    },
}

impl fmt::Display for UuidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UuidError::Repeated { replica, uuid } => write!(
                f,
                "repeated uuid {} for part 0 of replica {replica} - some replicas were created with a different poolset file",
                uuid.to_canonical()
            ),
            UuidError::MissingHeader { replica, part } => {
                write!(f, "replica {replica} part {part}: unbroken part without a readable header")
            }
        }
    }
}

/// Which rules give a broken part its UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// libpmempool's sync rules, (a) to (e) (see the module documentation).
    Sync,
    /// A fresh UUID for every broken part, as `pmempool transform` gives
    /// the parts of the replicas it creates.
    Fresh,
}

/// Assigns a UUID to every header-carrying part: `replicas[r][p]` describes
/// part `p` of replica `r` (header-carrying parts only, in order). Returns
/// the same shape.
pub fn assign(
    replicas: &[Vec<PartView<'_>>],
    single_hdr: bool,
    rules: Rules,
    source: &UuidSource,
) -> Result<Vec<Vec<Assigned>>, UuidError> {
    let n = replicas.len();
    let mut out: Vec<Vec<Option<Assigned>>> =
        replicas.iter().map(|r| vec![None; r.len()]).collect();
    // Unbroken parts keep their UUIDs.
    for (r, parts) in replicas.iter().enumerate() {
        for (p, part) in parts.iter().enumerate() {
            if part.broken {
                continue;
            }
            let hdr = part.header.ok_or(UuidError::MissingHeader {
                replica: r,
                part: p,
            })?;
            if let Some(slot) = out.get_mut(r).and_then(|v| v.get_mut(p)) {
                *slot = Some(Assigned {
                    uuid: hdr.uuid,
                    origin: UuidOrigin::Kept,
                });
            }
        }
    }
    let view = |r: usize, p: usize| -> Option<&PartView<'_>> {
        let parts = replicas.get(r)?;
        parts.get(p % parts.len().max(1))
    };
    let unbroken_hdr = |r: usize, p: usize| -> Option<&PoolHdr> {
        view(r, p).filter(|v| !v.broken).and_then(|v| v.header)
    };
    for r in 0..n {
        let nhdrs = replicas.get(r).map_or(0, Vec::len);
        let prev_r = (r + n - 1) % n;
        let next_r = (r + 1) % n;
        for p in 0..nhdrs {
            if !view(r, p).is_some_and(|v| v.broken) {
                continue;
            }
            let prev_p = (p + nhdrs - 1) % nhdrs;
            let next_p = (p + 1) % nhdrs;
            let mut chosen: Option<Assigned> = None;
            let mut pick = |uuid: RawUuid, origin: UuidOrigin| {
                chosen = Some(Assigned { uuid, origin });
            };
            if rules == Rules::Fresh {
                pick(source.generate(r, p), UuidOrigin::Fresh);
            } else if let (false, Some(h)) = (single_hdr, unbroken_hdr(r, prev_p)) {
                pick(h.next_part_uuid, UuidOrigin::PrevPart);
            } else if let (false, Some(h)) = (single_hdr, unbroken_hdr(r, next_p)) {
                pick(h.prev_part_uuid, UuidOrigin::NextPart);
            } else if let (0, Some(h)) = (p, unbroken_hdr(prev_r, 0)) {
                pick(h.next_repl_uuid, UuidOrigin::PrevReplica);
            } else if let (0, Some(h)) = (p, unbroken_hdr(next_r, 0)) {
                pick(h.prev_repl_uuid, UuidOrigin::NextReplica);
            } else if let (0, Some(h)) = (p, any_unbroken(replicas, prev_r)) {
                pick(h.next_repl_uuid, UuidOrigin::PrevReplicaHeader);
            } else if let (0, Some(h)) = (p, any_unbroken(replicas, next_r)) {
                pick(h.prev_repl_uuid, UuidOrigin::NextReplicaHeader);
            } else {
                pick(source.generate(r, p), UuidOrigin::Fresh);
            }
            let Some(assigned) = chosen else { continue };
            if matches!(
                assigned.origin,
                UuidOrigin::PrevReplica
                    | UuidOrigin::NextReplica
                    | UuidOrigin::PrevReplicaHeader
                    | UuidOrigin::NextReplicaHeader
            ) {
                let used = out.iter().take(r).any(|parts| {
                    parts.first().copied().flatten().map(|a| a.uuid) == Some(assigned.uuid)
                });
                if used {
                    return Err(UuidError::Repeated {
                        replica: r,
                        uuid: assigned.uuid,
                    });
                }
            }
            if let Some(slot) = out.get_mut(r).and_then(|v| v.get_mut(p)) {
                *slot = Some(assigned);
            }
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(r, parts)| {
            parts
                .into_iter()
                .enumerate()
                .map(|(p, a)| {
                    a.ok_or(UuidError::MissingHeader {
                        replica: r,
                        part: p,
                    })
                })
                .collect()
        })
        .collect()
}

/// A new header as libpmempool's `util_header_create` writes it for a
/// rebuilt part (docs/format.md §16.3): attributes from the master's part 0
/// (signature, major, features), the SINGLEHDR flag as the pool set says,
/// the pool set UUID, the part's UUID and links, the running machine's
/// arch flags and a clean shutdown state (on storage without
/// unsafe-shutdown counters PMDK's initialised state is all zero once the
/// dirty flag it sets is cleared again on close). The crtime is filled in
/// when the header is written.
pub(crate) fn new_header(
    master: &PoolHdr,
    single_hdr: bool,
    poolset_uuid: RawUuid,
    uuid: RawUuid,
    links: &HeaderLinks,
) -> PoolHdr {
    let mut features = master.features;
    if single_hdr {
        features.incompat |= FEAT_SINGLEHDR;
    } else {
        features.incompat &= !FEAT_SINGLEHDR;
    }
    let ty = master.pool_type().unwrap_or(PoolType::Obj);
    let mut hdr = PoolHdr::new(ty, features, poolset_uuid, uuid, links, 0);
    hdr.signature = master.signature;
    hdr.major = master.major;
    hdr.sds = Sds::reinitialized(&Sds::current_non_pmem());
    hdr.checksum = hdr.compute_checksum();
    hdr
}

/// What [`plan_headers`] needs to know of one header-carrying part
/// besides its [`PartView`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OnDisk<'a> {
    /// The header page's bytes now, when the part keeps its file.
    pub bytes: Option<&'a [u8]>,
    /// The header is invalidated while its replica is repaired, so it is
    /// written back at the end ([`HeaderAction::Restore`]).
    pub restore: bool,
    /// The part's file is recreated: its header is written whatever it
    /// holds now.
    pub recreated: bool,
}

/// The header of one header-carrying part after the change, and what
/// writing it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    /// New, relinked, restored, or kept as it is.
    pub action: HeaderAction,
    /// The header (a new header's crtime is stamped when it is written).
    pub header: PoolHdr,
    /// Its UUID and the rule that chose it.
    pub assigned: Assigned,
}

/// The header every header-carrying part gets: broken parts a
/// [`new_header`] from `master`; kept parts their own header (as
/// [`PartView::header`] gives it) with the pool set UUID, the pool set's
/// SINGLEHDR flag and the links of the ring `assigned` describes, written
/// when its bytes change, it is restored, or its file is recreated.
pub(crate) fn plan_headers<'d>(
    views: &[Vec<PartView<'_>>],
    assigned: &[Vec<Assigned>],
    on_disk: &dyn Fn(usize, usize) -> OnDisk<'d>,
    master: &PoolHdr,
    poolset_uuid: RawUuid,
    single_hdr: bool,
) -> Result<Vec<Vec<Planned>>, String> {
    let uuids: Vec<Vec<RawUuid>> = assigned
        .iter()
        .map(|r| r.iter().map(|a| a.uuid).collect())
        .collect();
    let links = ring_links(&uuids).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(views.len());
    for (r, parts) in views.iter().enumerate() {
        let mut planned = Vec::with_capacity(parts.len());
        for (p, view) in parts.iter().enumerate() {
            let (Some(a), Some(l)) = (
                assigned.get(r).and_then(|v| v.get(p)),
                links.get(r).and_then(|v| v.get(p)),
            ) else {
                return Err(format!("replica {r} part {p}: no UUID was assigned"));
            };
            if view.broken {
                planned.push(Planned {
                    action: HeaderAction::New,
                    header: new_header(master, single_hdr, poolset_uuid, a.uuid, l),
                    assigned: *a,
                });
                continue;
            }
            let current = view
                .header
                .ok_or_else(|| format!("replica {r} part {p}: no pool header to keep"))?;
            let mut kept = current.clone();
            kept.poolset_uuid = poolset_uuid;
            if single_hdr {
                kept.features.incompat |= FEAT_SINGLEHDR;
            } else {
                kept.features.incompat &= !FEAT_SINGLEHDR;
            }
            kept.set_links(l);
            kept.checksum = kept.compute_checksum();
            let disk = on_disk(r, p);
            let action = if disk.restore {
                HeaderAction::Restore
            } else if disk.recreated || disk.bytes != Some(&kept.encode_raw()[..]) {
                HeaderAction::Relink
            } else {
                HeaderAction::Keep
            };
            planned.push(Planned {
                action,
                header: kept,
                assigned: *a,
            });
        }
        out.push(planned);
    }
    Ok(out)
}

/// The first unbroken header of replica `r`.
fn any_unbroken<'a>(replicas: &'a [Vec<PartView<'a>>], r: usize) -> Option<&'a PoolHdr> {
    replicas
        .get(r)?
        .iter()
        .find(|v| !v.broken)
        .and_then(|v| v.header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_header::{ring_links, Features, PoolType};

    fn u(n: u8) -> RawUuid {
        RawUuid([n; 16])
    }

    /// Linked headers for replicas whose part UUIDs are given.
    fn headers(uuids: &[Vec<RawUuid>]) -> Vec<Vec<PoolHdr>> {
        let links = ring_links(uuids).unwrap();
        uuids
            .iter()
            .zip(links)
            .map(|(parts, links)| {
                parts
                    .iter()
                    .zip(links)
                    .map(|(uuid, l)| {
                        PoolHdr::new(PoolType::Obj, Features::DEFAULT, u(99), *uuid, &l, 0)
                    })
                    .collect()
            })
            .collect()
    }

    fn run(
        hdrs: &[Vec<PoolHdr>],
        broken: &[&[bool]],
        single: bool,
    ) -> Result<Vec<Vec<Assigned>>, UuidError> {
        let views: Vec<Vec<PartView<'_>>> = hdrs
            .iter()
            .zip(broken)
            .map(|(parts, b)| {
                parts
                    .iter()
                    .zip(b.iter())
                    .map(|(h, &broken)| PartView {
                        broken,
                        header: Some(h),
                    })
                    .collect()
            })
            .collect();
        assign(
            &views,
            single,
            Rules::Sync,
            &UuidSource::Derived { seed: 1 },
        )
    }

    fn origins(a: &[Vec<Assigned>]) -> Vec<Vec<UuidOrigin>> {
        a.iter()
            .map(|r| r.iter().map(|x| x.origin).collect())
            .collect()
    }

    #[test]
    fn a_lost_part_keeps_its_uuid_through_its_neighbour() {
        let h = headers(&[vec![u(1), u(2), u(3)], vec![u(4)]]);
        let a = run(&h, &[&[false, true, false], &[false]], false).unwrap();
        assert_eq!(a[0][1].uuid, u(2));
        assert_eq!(a[0][1].origin, UuidOrigin::PrevPart);
        // Part 0 lost: the last part (its ring predecessor) names it.
        let a = run(&h, &[&[true, false, false], &[false]], false).unwrap();
        assert_eq!((a[0][0].uuid, a[0][0].origin), (u(1), UuidOrigin::PrevPart));
    }

    #[test]
    fn a_rebuilt_replica_keeps_part_0_and_gets_fresh_others() {
        let h = headers(&[vec![u(1)], vec![u(4), u(5), u(6)]]);
        let a = run(&h, &[&[false], &[true, true, true]], false).unwrap();
        assert_eq!(
            origins(&a)[1],
            [
                UuidOrigin::PrevReplica,
                UuidOrigin::Fresh,
                UuidOrigin::Fresh
            ]
        );
        assert_eq!(a[1][0].uuid, u(4));
        assert_ne!(a[1][1].uuid, u(5));
        assert_ne!(a[1][1].uuid, a[1][2].uuid);
        // Derived UUIDs are stable.
        let again = run(&h, &[&[false], &[true, true, true]], false).unwrap();
        assert_eq!(a, again);
    }

    #[test]
    fn singlehdr_skips_part_links() {
        let h = headers(&[vec![u(1)], vec![u(2)], vec![u(3)]]);
        let a = run(&h, &[&[false], &[true], &[true]], true).unwrap();
        assert_eq!(origins(&a)[1], [UuidOrigin::PrevReplica]);
        assert_eq!(a[1][0].uuid, u(2));
        // Replica 2: its previous replica is broken, the next (0) is not.
        assert_eq!(
            (a[2][0].uuid, a[2][0].origin),
            (u(3), UuidOrigin::NextReplica)
        );
    }

    #[test]
    fn fresh_only_when_nothing_names_the_part() {
        // Four replicas, 1 and 3 fully broken around a broken 2.
        let h = headers(&[vec![u(1)], vec![u(2)], vec![u(3)], vec![u(4)]]);
        let a = run(&h, &[&[false], &[true], &[true], &[true]], false).unwrap();
        assert_eq!(a[2][0].origin, UuidOrigin::Fresh);
        // With an intact second part in replica 1, its links name replica 2.
        let h = headers(&[vec![u(1)], vec![u(2), u(7)], vec![u(3)], vec![u(4)]]);
        let a = run(&h, &[&[false], &[true, false], &[true], &[true]], false).unwrap();
        assert_eq!(
            (a[2][0].uuid, a[2][0].origin),
            (u(3), UuidOrigin::PrevReplicaHeader)
        );
    }

    #[test]
    fn repeated_uuids_are_refused() {
        let mut h = headers(&[vec![u(1)], vec![u(2)]]);
        // Replica 0 claims its next replica is itself.
        h[0][0].next_repl_uuid = u(1);
        let err = run(&h, &[&[false], &[true]], false).unwrap_err();
        assert_eq!(
            err,
            UuidError::Repeated {
                replica: 1,
                uuid: u(1)
            }
        );
        assert!(err.to_string().contains("repeated uuid"));
    }

    #[test]
    fn derived_uuids_differ_by_position_and_seed() {
        let s = UuidSource::Derived { seed: 7 };
        assert_eq!(s.generate(1, 2), s.generate(1, 2));
        assert_ne!(s.generate(1, 2), s.generate(2, 1));
        assert_ne!(
            s.generate(1, 2),
            UuidSource::Derived { seed: 8 }.generate(1, 2)
        );
        assert_ne!(
            UuidSource::Random.generate(0, 0),
            UuidSource::Random.generate(0, 0)
        );
    }
}
