//! The UUID rings that link the headers of a pool set (docs/format.md §5).

use serde::Serialize;

use crate::raw_uuid::RawUuid;
use crate::Error;

/// The four link fields of one header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct HeaderLinks {
    /// UUID of the previous header-carrying part of the same replica.
    pub prev_part: RawUuid,
    /// UUID of the next header-carrying part of the same replica.
    pub next_part: RawUuid,
    /// UUID of part 0 of the previous replica.
    pub prev_repl: RawUuid,
    /// UUID of part 0 of the next replica.
    pub next_repl: RawUuid,
}

/// Computes every header's links from the header UUIDs of each replica.
///
/// `replicas[r]` lists the UUIDs of replica `r`'s header-carrying parts in
/// order (all parts, or only part 0 with `SINGLEHDR`). The result has the same
/// shape. Parts form a ring within their replica; every header of replica `r`
/// points at part 0 of replicas `r - 1` and `r + 1`, wrapping around. A lone
/// part or replica links to itself.
///
/// ```
/// use poolsync_header::{ring_links, RawUuid};
/// let (a, b, c) = (RawUuid([1; 16]), RawUuid([2; 16]), RawUuid([3; 16]));
/// let links = ring_links(&[vec![a, b], vec![c]]).unwrap();
/// assert_eq!((links[0][1].prev_part, links[0][1].next_part), (a, a));
/// assert_eq!((links[0][1].prev_repl, links[0][1].next_repl), (c, c));
/// assert_eq!((links[1][0].prev_repl, links[1][0].next_part), (a, c));
/// ```
pub fn ring_links<R: AsRef<[RawUuid]>>(replicas: &[R]) -> Result<Vec<Vec<HeaderLinks>>, Error> {
    if replicas.is_empty() {
        return Err(Error::NoReplicas);
    }
    let mut first = Vec::with_capacity(replicas.len());
    for (replica, parts) in replicas.iter().enumerate() {
        match parts.as_ref().first() {
            Some(u) => first.push(*u),
            None => return Err(Error::ReplicaWithoutHeaders { replica }),
        }
    }
    let n = first.len();
    let at = |v: &[RawUuid], i: usize| v.get(i).copied().unwrap_or_default();
    Ok(replicas
        .iter()
        .enumerate()
        .map(|(r, parts)| {
            let parts = parts.as_ref();
            let m = parts.len();
            let prev_repl = at(&first, (r + n - 1) % n);
            let next_repl = at(&first, (r + 1) % n);
            (0..m)
                .map(|p| HeaderLinks {
                    prev_part: at(parts, (p + m - 1) % m),
                    next_part: at(parts, (p + 1) % m),
                    prev_repl,
                    next_repl,
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(n: u8) -> RawUuid {
        RawUuid([n; 16])
    }

    #[test]
    fn single_part_single_replica_links_to_itself() {
        let l = ring_links(&[[u(1)]]).unwrap();
        assert_eq!(
            l,
            vec![vec![HeaderLinks {
                prev_part: u(1),
                next_part: u(1),
                prev_repl: u(1),
                next_repl: u(1)
            }]]
        );
    }

    #[test]
    fn three_parts_three_replicas() {
        let reps = vec![vec![u(1), u(2), u(3)], vec![u(4), u(5)], vec![u(6)]];
        let l = ring_links(&reps).unwrap();
        assert_eq!(l[0][0].prev_part, u(3));
        assert_eq!(l[0][0].next_part, u(2));
        assert_eq!(l[0][2].next_part, u(1));
        assert_eq!(l[1][0].prev_part, u(5));
        assert_eq!(l[1][0].next_part, u(5));
        for p in &l[1] {
            assert_eq!((p.prev_repl, p.next_repl), (u(1), u(6)));
        }
        assert_eq!((l[0][1].prev_repl, l[0][1].next_repl), (u(6), u(4)));
        assert_eq!((l[2][0].prev_repl, l[2][0].next_repl), (u(4), u(1)));
        assert_eq!((l[2][0].prev_part, l[2][0].next_part), (u(6), u(6)));
    }

    #[test]
    fn empty_inputs_are_errors() {
        let none: [Vec<RawUuid>; 0] = [];
        assert_eq!(ring_links(&none), Err(Error::NoReplicas));
        assert_eq!(
            ring_links(&[vec![u(1)], vec![]]),
            Err(Error::ReplicaWithoutHeaders { replica: 1 })
        );
    }
}
