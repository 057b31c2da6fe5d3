//! Timelines: which pool states two sites have in common.
//!
//! A lineage starts on timeline [`ROOT_TIMELINE`] at epoch 0 (the pool as
//! first exported). Epochs only grow. When a destination is promoted after
//! a failover it starts a new timeline that *forks* its parent timeline at
//! a fork epoch `e`: the new timeline holds exactly the parent's state at
//! `e`, and every epoch it creates afterwards is greater than `e`. This is
//! PostgreSQL's model, with epochs in place of LSNs.
//!
//! A *position* is a (timeline, epoch) pair. The state at position (T, x)
//! is the state at (P, x) whenever T forked from P at an epoch `e >= x`;
//! otherwise it is T's own.
//!
//! A *history* is the chain of forks that leads from the root timeline to
//! one timeline, oldest first: for timeline 1 it is empty, and for any other
//! timeline T it is `[f1, ..., fn]` with `f1.parent == 1`,
//! `f(i+1).parent == f(i).timeline`, `fn.timeline == T`, every fork's
//! timeline greater than its parent and fork epochs non-decreasing.
//! [`validate_history`] checks exactly this canonical form, and the
//! decoders refuse anything else.

use crate::Error;

/// The first timeline of every lineage.
pub const ROOT_TIMELINE: u32 = 1;

/// The most forks a history may hold.
pub const MAX_HISTORY: usize = 256;

/// Bytes of one encoded [`Fork`].
pub const FORK_LEN: usize = 12;

/// One fork: `timeline` was created from `parent` holding the parent's
/// state at `epoch`.
///
/// Encoded as three little-endian `u32`s: timeline, parent, epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fork {
    /// The new timeline.
    pub timeline: u32,
    /// The timeline it forked from.
    pub parent: u32,
    /// The last epoch it shares with its parent.
    pub epoch: u32,
}

impl Fork {
    /// The 12 bytes of this fork.
    pub fn encode(&self) -> [u8; FORK_LEN] {
        let mut b = [0u8; FORK_LEN];
        b[0..4].copy_from_slice(&self.timeline.to_le_bytes());
        b[4..8].copy_from_slice(&self.parent.to_le_bytes());
        b[8..12].copy_from_slice(&self.epoch.to_le_bytes());
        b
    }

    /// Reads a fork from its 12 bytes.
    pub fn decode(b: &[u8; FORK_LEN]) -> Fork {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Fork {
            timeline: word(0),
            parent: word(4),
            epoch: word(8),
        }
    }
}

/// A (timeline, epoch) pair: the state a site holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The timeline.
    pub timeline: u32,
    /// The epoch on it.
    pub epoch: u32,
}

/// Why a history is not in canonical form: the index of the offending fork
/// (or `None` for the history as a whole) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryProblem {
    /// The fork at fault, as an index into the history.
    pub index: Option<usize>,
    /// What is wrong, lowercase.
    pub problem: String,
}

/// Checks that `history` is the canonical history of `timeline` (see the
/// module documentation).
pub fn check_history(timeline: u32, history: &[Fork]) -> Result<(), HistoryProblem> {
    let whole = |problem: String| HistoryProblem {
        index: None,
        problem,
    };
    if timeline < ROOT_TIMELINE {
        return Err(whole(format!(
            "timeline {timeline} is invalid, timelines start at {ROOT_TIMELINE}"
        )));
    }
    if history.len() > MAX_HISTORY {
        return Err(whole(format!(
            "{} forks, at most {MAX_HISTORY} allowed",
            history.len()
        )));
    }
    let mut expected_parent = ROOT_TIMELINE;
    let mut min_epoch = 0;
    for (i, f) in history.iter().enumerate() {
        let at = |problem: String| HistoryProblem {
            index: Some(i),
            problem,
        };
        if f.parent != expected_parent {
            return Err(at(format!(
                "fork of timeline {} names parent {}, expected {expected_parent}",
                f.timeline, f.parent
            )));
        }
        if f.timeline <= f.parent {
            return Err(at(format!(
                "timeline {} is not newer than its parent {}",
                f.timeline, f.parent
            )));
        }
        if f.epoch < min_epoch {
            return Err(at(format!(
                "timeline {} forks at epoch {}, before its parent's own fork at {min_epoch}",
                f.timeline, f.epoch
            )));
        }
        expected_parent = f.timeline;
        min_epoch = f.epoch;
    }
    if expected_parent != timeline {
        return Err(whole(format!(
            "the history leads to timeline {expected_parent}, not {timeline}"
        )));
    }
    Ok(())
}

/// [`check_history`] as an [`Error`].
pub fn validate_history(timeline: u32, history: &[Fork]) -> Result<(), Error> {
    check_history(timeline, history).map_err(|p| Error::History {
        problem: match p.index {
            Some(i) => format!("fork {i}: {}", p.problem),
            None => p.problem,
        },
    })
}

/// The epoch at which `timeline` (with `history`) was created: 0 for the
/// root timeline, else its fork epoch. Its own epochs are greater.
pub fn fork_epoch(history: &[Fork]) -> u32 {
    history.last().map_or(0, |f| f.epoch)
}

/// The history of a new timeline that forks `timeline` (with `history`) at
/// `epoch`, as a promotion creates it. `new_timeline` must be greater than
/// every timeline the lineage has used (the caller knows them; the highest
/// one in its own history is only a lower bound).
pub fn fork(
    history: &[Fork],
    timeline: u32,
    new_timeline: u32,
    epoch: u32,
) -> Result<Vec<Fork>, Error> {
    validate_history(timeline, history)?;
    let mut out = history.to_vec();
    out.push(Fork {
        timeline: new_timeline,
        parent: timeline,
        epoch,
    });
    validate_history(new_timeline, &out)?;
    Ok(out)
}

/// How far two timelines share their history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkPoint {
    /// Both are the same timeline: they agree at every epoch.
    SameTimeline,
    /// They hold the same state at every epoch up to and including this
    /// one, and different states after it.
    At(u32),
}

impl ForkPoint {
    /// Whether both timelines hold the same state at `epoch`.
    pub fn covers(self, epoch: u32) -> bool {
        match self {
            ForkPoint::SameTimeline => true,
            ForkPoint::At(e) => epoch <= e,
        }
    }
}

/// The timelines on the way to `timeline`, each with the last epoch at which
/// `timeline`'s state is that timeline's (`u32::MAX` for `timeline` itself).
fn chain(history: &[Fork], timeline: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(history.len() + 1);
    let mut current = ROOT_TIMELINE;
    for f in history {
        out.push((current, f.epoch));
        current = f.timeline;
    }
    out.push((timeline, u32::MAX));
    out
}

/// The last epoch up to which timeline `a` (with history `a_history`) and
/// timeline `b` (with `b_history`) hold the same states.
///
/// Two valid histories of one lineage always share epoch 0 at least. They
/// *contradict* each other when they say different things about the same
/// timeline (different parents or fork epochs), which happens only if they
/// come from different lineages or a site's state was damaged; that is an
/// error, as is a history that is not canonical.
///
/// ```
/// use poolsync_packet::{fork_point, Fork, ForkPoint};
/// // Timeline 2 forked from 1 at epoch 5; timeline 3 from 2 at epoch 9.
/// let h2 = [Fork { timeline: 2, parent: 1, epoch: 5 }];
/// let h3 = [h2[0], Fork { timeline: 3, parent: 2, epoch: 9 }];
/// assert_eq!(fork_point(&[], 1, &h3, 3)?, ForkPoint::At(5));
/// assert_eq!(fork_point(&h2, 2, &h3, 3)?, ForkPoint::At(9));
/// assert_eq!(fork_point(&h3, 3, &h3, 3)?, ForkPoint::SameTimeline);
/// # Ok::<(), poolsync_packet::Error>(())
/// ```
pub fn fork_point(
    a_history: &[Fork],
    a_timeline: u32,
    b_history: &[Fork],
    b_timeline: u32,
) -> Result<ForkPoint, Error> {
    validate_history(a_timeline, a_history)?;
    validate_history(b_timeline, b_history)?;
    // Forks of the same timeline must agree; canonical chains that agree on
    // every shared timeline share a prefix.
    for fa in a_history {
        if let Some(fb) = b_history.iter().find(|f| f.timeline == fa.timeline) {
            if fa != fb {
                return Err(Error::History {
                    problem: format!(
                        "the histories contradict each other: timeline {} forks from {} at epoch {} in one and from {} at epoch {} in the other",
                        fa.timeline, fa.parent, fa.epoch, fb.parent, fb.epoch
                    ),
                });
            }
        }
    }
    if a_timeline == b_timeline {
        return Ok(ForkPoint::SameTimeline);
    }
    let a = chain(a_history, a_timeline);
    let b = chain(b_history, b_timeline);
    // The deepest timeline both chains pass through; both start at the root.
    let shared = a
        .iter()
        .zip(&b)
        .take_while(|(x, y)| x.0 == y.0)
        .last()
        .map_or(0, |(x, y)| x.1.min(y.1));
    Ok(ForkPoint::At(shared))
}

/// Whether `ancestor` (with its history) lies on the history of
/// `descendant`: the state at `ancestor` is the state `descendant`'s
/// timeline had at `ancestor.epoch`, and `ancestor.epoch <=
/// descendant.epoch`. A position is its own ancestor.
pub fn is_ancestor(
    ancestor_history: &[Fork],
    ancestor: Position,
    descendant_history: &[Fork],
    descendant: Position,
) -> Result<bool, Error> {
    let point = fork_point(
        ancestor_history,
        ancestor.timeline,
        descendant_history,
        descendant.timeline,
    )?;
    Ok(ancestor.epoch <= descendant.epoch && point.covers(ancestor.epoch))
}

/// What a destination can do with a packet, from their positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applicability {
    /// The destination is on the packet's history at an epoch from the
    /// packet's base up to (not including) its new epoch: applying the
    /// packet brings it to the new epoch.
    Apply,
    /// The destination is on the packet's history at or after the packet's
    /// new epoch: it holds everything the packet carries.
    AlreadyHeld,
    /// The destination is on the packet's history but before its base
    /// epoch: it lacks changes the packet does not carry.
    Behind {
        /// The destination's epoch.
        dest_epoch: u32,
        /// The packet's base epoch.
        base_epoch: u32,
    },
    /// The destination's state is not on the packet's history: the two
    /// timelines part after `fork_epoch` and the destination is past it.
    /// The destination needs a rewind (its blocks changed since
    /// `fork_epoch` shipped again).
    Diverged {
        /// The last epoch both timelines share.
        fork_epoch: u32,
    },
}

/// Decides whether a destination at `dest` (with `dest_history`) can apply a
/// packet of timeline `packet_timeline` (with `packet_history`) that takes
/// its base epoch to its new epoch.
///
/// The packet carries every block changed after `base_epoch` on its
/// timeline's history, so any destination whose state lies on that history
/// at an epoch in `[base_epoch, new_epoch)` can apply it (blocks it already
/// has are rewritten with the same content).
///
/// ```
/// use poolsync_packet::{applicability, Applicability, Fork, Position};
/// let promoted = [Fork { timeline: 2, parent: 1, epoch: 5 }];
/// // A destination at (1, 5) can take timeline 2's packet from 4 to 7...
/// let dest = Position { timeline: 1, epoch: 5 };
/// assert_eq!(applicability(&[], dest, &promoted, 2, 4, 7)?, Applicability::Apply);
/// // ...but not once it holds timeline 1's epoch 6.
/// let dest = Position { timeline: 1, epoch: 6 };
/// assert_eq!(
///     applicability(&[], dest, &promoted, 2, 4, 7)?,
///     Applicability::Diverged { fork_epoch: 5 }
/// );
/// # Ok::<(), poolsync_packet::Error>(())
/// ```
pub fn applicability(
    dest_history: &[Fork],
    dest: Position,
    packet_history: &[Fork],
    packet_timeline: u32,
    base_epoch: u32,
    new_epoch: u32,
) -> Result<Applicability, Error> {
    let point = fork_point(dest_history, dest.timeline, packet_history, packet_timeline)?;
    if !point.covers(dest.epoch) {
        let fork_epoch = match point {
            ForkPoint::At(e) => e,
            ForkPoint::SameTimeline => u32::MAX,
        };
        return Ok(Applicability::Diverged { fork_epoch });
    }
    Ok(if dest.epoch >= new_epoch {
        Applicability::AlreadyHeld
    } else if dest.epoch < base_epoch {
        Applicability::Behind {
            dest_epoch: dest.epoch,
            base_epoch,
        }
    } else {
        Applicability::Apply
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(timeline: u32, parent: u32, epoch: u32) -> Fork {
        Fork {
            timeline,
            parent,
            epoch,
        }
    }

    #[test]
    fn canonical_histories() {
        assert!(check_history(1, &[]).is_ok());
        assert!(check_history(2, &[f(2, 1, 0)]).is_ok());
        assert!(check_history(5, &[f(2, 1, 3), f(5, 2, 3)]).is_ok());
        let bad: [(u32, Vec<Fork>, &str); 7] = [
            (0, vec![], "timelines start at 1"),
            (2, vec![], "leads to timeline 1, not 2"),
            (3, vec![f(3, 2, 1)], "names parent 2, expected 1"),
            (1, vec![f(1, 1, 1)], "not newer"),
            (
                3,
                vec![f(2, 1, 5), f(3, 2, 4)],
                "before its parent's own fork",
            ),
            (
                2,
                vec![f(2, 1, 5), f(3, 2, 6)],
                "leads to timeline 3, not 2",
            ),
            (
                300,
                (2..=258).map(|t| f(t, t - 1, 0)).collect(),
                "at most 256",
            ),
        ];
        for (tl, h, why) in bad {
            let p = check_history(tl, &h).unwrap_err();
            assert!(p.problem.contains(why), "{why}: {p:?}");
        }
    }

    #[test]
    fn forks_round_trip() {
        let x = f(7, 3, 0xdead_beef);
        assert_eq!(Fork::decode(&x.encode()), x);
        assert_eq!(x.encode()[..4], [7, 0, 0, 0]);
    }

    #[test]
    fn promotion_appends_a_fork() {
        let h = fork(&[], 1, 2, 10).unwrap();
        assert_eq!(h, vec![f(2, 1, 10)]);
        assert_eq!(fork_epoch(&h), 10);
        assert!(fork(&h, 2, 2, 11).is_err());
        assert!(fork(&h, 2, 3, 9).is_err());
        assert_eq!(fork(&h, 2, 3, 10).unwrap().len(), 2);
    }

    #[test]
    fn fork_points_of_siblings_and_descendants() {
        let h2 = [f(2, 1, 5)];
        let h3 = [f(3, 1, 8)];
        let h4 = [f(2, 1, 5), f(4, 2, 7)];
        assert_eq!(fork_point(&h2, 2, &h3, 3).unwrap(), ForkPoint::At(5));
        assert_eq!(fork_point(&h3, 3, &h2, 2).unwrap(), ForkPoint::At(5));
        assert_eq!(fork_point(&h4, 4, &h3, 3).unwrap(), ForkPoint::At(5));
        assert_eq!(fork_point(&h4, 4, &h2, 2).unwrap(), ForkPoint::At(7));
        assert_eq!(fork_point(&[], 1, &h4, 4).unwrap(), ForkPoint::At(5));
        assert_eq!(fork_point(&h4, 4, &h4, 4).unwrap(), ForkPoint::SameTimeline);
        // Timeline 2 told two ways.
        assert!(fork_point(&h2, 2, &[f(2, 1, 6)], 2).is_err());
        assert!(fork_point(&h4, 4, &[f(2, 1, 6)], 2).is_err());
    }

    #[test]
    fn ancestry() {
        let h2 = [f(2, 1, 5)];
        let p = |timeline, epoch| Position { timeline, epoch };
        assert!(is_ancestor(&[], p(1, 5), &h2, p(2, 9)).unwrap());
        assert!(!is_ancestor(&[], p(1, 6), &h2, p(2, 9)).unwrap());
        assert!(!is_ancestor(&h2, p(2, 9), &[], p(1, 20)).unwrap());
        assert!(is_ancestor(&h2, p(2, 4), &[], p(1, 20)).unwrap());
        assert!(is_ancestor(&[], p(1, 3), &[], p(1, 3)).unwrap());
        assert!(!is_ancestor(&[], p(1, 4), &[], p(1, 3)).unwrap());
    }

    #[test]
    fn applicability_cases() {
        let h2 = [f(2, 1, 5)];
        let p = |timeline, epoch| Position { timeline, epoch };
        let a = |dh: &[Fork], d, base, new| applicability(dh, d, &h2, 2, base, new).unwrap();
        assert_eq!(a(&[], p(1, 3), 3, 8), Applicability::Apply);
        assert_eq!(a(&[], p(1, 5), 3, 8), Applicability::Apply);
        assert_eq!(a(&h2, p(2, 7), 3, 8), Applicability::Apply);
        assert_eq!(a(&h2, p(2, 8), 3, 8), Applicability::AlreadyHeld);
        assert_eq!(
            a(&[], p(1, 2), 3, 8),
            Applicability::Behind {
                dest_epoch: 2,
                base_epoch: 3
            }
        );
        assert_eq!(
            a(&[], p(1, 6), 3, 8),
            Applicability::Diverged { fork_epoch: 5 }
        );
        let h3 = [f(3, 1, 4)];
        assert_eq!(
            a(&h3, p(3, 5), 3, 8),
            Applicability::Diverged { fork_epoch: 4 }
        );
        assert_eq!(a(&h3, p(3, 4), 3, 8), Applicability::Apply);
    }
}
