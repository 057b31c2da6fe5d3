//! Which replica is right where replicas disagree (ARCHITECTURE.md,
//! "Choosing the source").
//!
//! Verification compares every replica with the source. Where a replica
//! differs, something has to say which copy is right before anything is
//! written, and guessing is not allowed:
//!
//! 1. **The heap.** Where the disputed bytes are heap metadata (the
//!    descriptor, the heap header, zone and chunk headers, run headers and
//!    bitmaps) and one replica's heap fails the heap walker's structural
//!    checks while the source's passes, the source is right
//!    ([`Verdict::Heap`]). A default source whose own heap fails is not
//!    used at all: the first replica whose heap passes takes its place
//!    ([`source_by_heap`]).
//! 2. **A majority.** Where more than half of the compared replicas,
//!    the source included, hold the source's bytes, the source is right
//!    ([`Verdict::Majority`]); where more than half agree with each other
//!    and not with the source, the source is outvoted
//!    ([`Verdict::Outvoted`]).
//! 3. Otherwise it is a **tie** ([`Verdict::Tie`]): two replicas, or no
//!    majority. `sync --verify` refuses before writing anything unless the
//!    administrator says which copy is right: `--source N` (copy from
//!    replica N) or `--force-source` (copy from the source anyway), which
//!    make every tie [`Verdict::Chosen`]; `--force-source` also overrides
//!    the majority.

use std::collections::BTreeMap;

use poolsync_header::heap::Owner;
use poolsync_pmem::PartFile;
use serde::Serialize;

use super::live::{walk_source, Owners};
use crate::compare::{compare_replicas, pieces_between, CompareOptions, LogicalRange};
use crate::open::OpenSet;
use crate::Error;

/// Why the source is right, or not, on a range where a replica differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// More than half of the replicas hold the source's bytes.
    Majority {
        /// The replicas that agree with the source (the source included).
        agree: Vec<usize>,
    },
    /// The range is heap metadata, and this replica's heap fails the
    /// structural checks where the source's passes.
    Heap {
        /// What the walk of this replica's heap found.
        problem: String,
    },
    /// More than half of the replicas agree with each other and not with
    /// the source.
    Outvoted {
        /// The replicas that agree with each other.
        majority: Vec<usize>,
    },
    /// Nothing tells which replica is right.
    Tie,
    /// `--source N` or `--force-source` said which copy is right.
    Chosen {
        /// With `--force-source` over the majority rule: the replicas that
        /// agree with each other and not with the source (else empty).
        outvoted_by: Vec<usize>,
    },
}

impl Verdict {
    /// Whether the source's bytes are written over the replica's.
    pub fn repairs(&self) -> bool {
        matches!(
            self,
            Verdict::Majority { .. } | Verdict::Heap { .. } | Verdict::Chosen { .. }
        )
    }
}

/// What the heap walker says of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeapCheck {
    /// Replica index.
    pub replica: usize,
    /// What is wrong with its heap; `None` when the walk passes.
    pub problem: Option<String>,
}

/// How the source was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceChoice {
    /// The lowest-index healthy replica, as pmempool chooses.
    Default,
    /// `--source N`.
    Requested,
    /// The lowest-index healthy replica's heap fails the structural checks,
    /// so the first replica whose heap passes is the source instead.
    Heap {
        /// The replica that would have been the source.
        instead_of: usize,
        /// What its heap walk found.
        problem: String,
    },
}

/// The heap walk of each of `replicas` (healthy ones) over `pool_size`.
pub(super) fn heap_checks<F: PartFile>(
    set: &OpenSet<F>,
    replicas: &[usize],
    pool_size: u64,
) -> Vec<HeapCheck> {
    replicas
        .iter()
        .map(|&r| HeapCheck {
            replica: r,
            problem: walk_source(set, r, pool_size, |_| {})
                .err()
                .map(|e| match e {
                    Error::SourceHeap { error: source, .. } => source.to_string(),
                    Error::SourceDescriptor { reason, .. } => reason,
                    other => other.to_string(),
                }),
        })
        .collect()
}

/// The source verification compares with: `requested` when given;
/// otherwise `default`, unless its heap fails the structural checks and
/// another healthy replica's passes, which then takes its place.
pub(super) fn source_by_heap(
    default: usize,
    requested: Option<usize>,
    checks: &[HeapCheck],
) -> (usize, SourceChoice) {
    if let Some(n) = requested {
        return (n, SourceChoice::Requested);
    }
    let problem = |r: usize| {
        checks
            .iter()
            .find(|c| c.replica == r)
            .and_then(|c| c.problem.clone())
    };
    let Some(broken) = problem(default) else {
        return (default, SourceChoice::Default);
    };
    match checks.iter().find(|c| c.problem.is_none()) {
        Some(good) => (
            good.replica,
            SourceChoice::Heap {
                instead_of: default,
                problem: broken,
            },
        ),
        None => (default, SourceChoice::Default),
    }
}

/// The verdict on each range where a compared replica differs.
#[derive(Debug, Clone, Default)]
pub(super) struct Decisions {
    /// Per replica: its differing ranges, each with its verdict, sorted.
    pub per_replica: BTreeMap<usize, Vec<(LogicalRange, Verdict)>>,
}

impl Decisions {
    /// The verdict on the range of replica `r` that holds `offset`.
    pub(super) fn verdict_at(&self, r: usize, offset: u64) -> Option<&Verdict> {
        let list = self.per_replica.get(&r)?;
        let i = list.partition_point(|(range, _)| range.end() <= offset);
        list.get(i)
            .filter(|(range, _)| range.offset <= offset)
            .map(|(_, v)| v)
    }

    /// The ranges of replica `r` that the source's bytes are written over.
    pub(super) fn repairs(&self, r: usize) -> Vec<LogicalRange> {
        self.per_replica
            .get(&r)
            .map(|list| {
                let mut out = Vec::new();
                for (range, _) in list.iter().filter(|(_, v)| v.repairs()) {
                    crate::compare::push_merged(&mut out, *range);
                }
                out
            })
            .unwrap_or_default()
    }
}

/// What [`decide`] needs to know.
pub(super) struct Votes<'a, F> {
    pub set: &'a OpenSet<F>,
    /// The source's live ranges over the differing blocks.
    pub live: &'a Owners,
    pub source: usize,
    /// Each compared replica's differing blocks (sorted).
    pub differing: &'a BTreeMap<usize, Vec<LogicalRange>>,
    /// The heap walk of the source and the compared replicas.
    pub heap: &'a [HeapCheck],
    /// `--source N` was given.
    pub requested: bool,
    /// `--force-source` was given.
    pub force_source: bool,
    pub compare: &'a CompareOptions,
}

/// The verdict on every range where a compared replica differs from the
/// source (see the module documentation).
pub(super) fn decide<F: PartFile>(votes: &Votes<'_, F>) -> Result<Decisions, Error> {
    let voters: Vec<usize> = votes.differing.keys().copied().collect();
    let total = voters.len() + 1;
    let heap_fails = |r: usize| {
        votes
            .heap
            .iter()
            .find(|c| c.replica == r)
            .and_then(|c| c.problem.clone())
    };
    let source_ok = heap_fails(votes.source).is_none();
    // Elementary segments: cut wherever any replica's differing blocks
    // start or end.
    let mut cuts: Vec<u64> = Vec::new();
    for blocks in votes.differing.values() {
        for b in blocks {
            cuts.push(b.offset);
            cuts.push(b.end());
        }
    }
    let (lo, hi) = (
        cuts.iter().copied().min().unwrap_or(0),
        cuts.iter().copied().max().unwrap_or(0),
    );
    let segments: Vec<(LogicalRange, Vec<usize>)> = pieces_between(cuts, lo, hi)
        .into_iter()
        .filter_map(|seg| {
            let differ: Vec<usize> = voters
                .iter()
                .copied()
                .filter(|r| covers(&votes.differing[r], &seg))
                .collect();
            (!differ.is_empty()).then_some((seg, differ))
        })
        .collect();
    let agreement = pairwise_agreement(votes, &segments)?;
    let mut out = Decisions::default();
    for (seg, differ) in &segments {
        let structural = is_structural(votes.live, seg);
        let mut verdicts: Vec<(usize, Verdict)> = Vec::new();
        let mut rest: Vec<usize> = Vec::new();
        for &r in differ {
            match heap_fails(r) {
                Some(problem) if structural && source_ok => {
                    verdicts.push((r, Verdict::Heap { problem }));
                }
                _ => rest.push(r),
            }
        }
        if !rest.is_empty() {
            let agree_src = total - differ.len();
            let verdict = if 2 * agree_src > total {
                let mut agree: Vec<usize> = std::iter::once(votes.source)
                    .chain(voters.iter().copied().filter(|r| !differ.contains(r)))
                    .collect();
                agree.sort_unstable();
                Verdict::Majority { agree }
            } else {
                match largest_group(&rest, seg, &agreement) {
                    Some(group) if 2 * group.len() > total => Verdict::Outvoted { majority: group },
                    _ => Verdict::Tie,
                }
            };
            let verdict = match verdict {
                Verdict::Tie if votes.requested || votes.force_source => Verdict::Chosen {
                    outvoted_by: Vec::new(),
                },
                Verdict::Outvoted { majority } if votes.force_source => Verdict::Chosen {
                    outvoted_by: majority,
                },
                v => v,
            };
            verdicts.extend(rest.iter().map(|&r| (r, verdict.clone())));
        }
        for (r, v) in verdicts {
            out.per_replica.entry(r).or_default().push((*seg, v));
        }
    }
    Ok(out)
}

/// Whether sorted, disjoint `blocks` cover `seg` (segments never straddle
/// a block's edge).
fn covers(blocks: &[LogicalRange], seg: &LogicalRange) -> bool {
    let i = blocks.partition_point(|b| b.end() <= seg.offset);
    blocks
        .get(i)
        .is_some_and(|b| b.offset <= seg.offset && seg.end() <= b.end())
}

/// Whether every live range over `seg` is heap metadata the walker checks
/// (not lanes, not objects, whose bytes any value may hold).
fn is_structural(live: &Owners, seg: &LogicalRange) -> bool {
    let over = live.overlapping(seg.offset, seg.len);
    !over.is_empty()
        && over.iter().all(|lr| {
            matches!(
                lr.owner,
                Owner::Descriptor
                    | Owner::HeapHeader
                    | Owner::ZoneHeader { .. }
                    | Owner::ChunkHeaders { .. }
                    | Owner::RunMetadata { .. }
            )
        })
}

/// For each pair of replicas that both differ from the source somewhere,
/// where they differ from each other (only segments both differ on are
/// compared).
type Agreement = BTreeMap<(usize, usize), Vec<LogicalRange>>;

fn pairwise_agreement<F: PartFile>(
    votes: &Votes<'_, F>,
    segments: &[(LogicalRange, Vec<usize>)],
) -> Result<Agreement, Error> {
    let mut wanted: BTreeMap<(usize, usize), Vec<LogicalRange>> = BTreeMap::new();
    for (seg, differ) in segments.iter().filter(|(_, d)| d.len() >= 2) {
        for (i, &a) in differ.iter().enumerate() {
            for &b in differ.iter().skip(i + 1) {
                wanted.entry((a, b)).or_default().push(*seg);
            }
        }
    }
    let mut out = Agreement::new();
    for ((a, b), ranges) in wanted {
        let outcome = compare_replicas(votes.set, a, b, &ranges, votes.compare)?;
        out.insert((a, b), outcome.differing);
    }
    Ok(out)
}

/// The largest group of `replicas` that hold the same bytes over `seg`.
fn largest_group(
    replicas: &[usize],
    seg: &LogicalRange,
    agreement: &Agreement,
) -> Option<Vec<usize>> {
    let same = |a: usize, b: usize| {
        let key = if a < b { (a, b) } else { (b, a) };
        agreement
            .get(&key)
            .is_some_and(|differ| differ.iter().all(|d| d.intersect(seg).is_none()))
    };
    replicas
        .iter()
        .map(|&a| {
            replicas
                .iter()
                .copied()
                .filter(|&b| b == a || same(a, b))
                .collect::<Vec<_>>()
        })
        .max_by_key(Vec::len)
}
