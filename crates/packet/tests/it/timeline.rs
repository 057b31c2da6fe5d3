//! Timelines against a brute-force model of which states are shared.

use std::collections::BTreeMap;

use poolsync_packet::*;
use proptest::prelude::*;

/// A lineage: every timeline but the root with its parent and fork epoch.
#[derive(Debug, Clone)]
struct Tree {
    forks: BTreeMap<u32, (u32, u32)>,
}

impl Tree {
    /// Canonical history of `timeline`.
    fn history(&self, timeline: u32) -> Vec<Fork> {
        let mut out = Vec::new();
        let mut t = timeline;
        while let Some(&(parent, epoch)) = self.forks.get(&t) {
            out.push(Fork {
                timeline: t,
                parent,
                epoch,
            });
            t = parent;
        }
        out.reverse();
        out
    }

    /// The identity of the state at (timeline, epoch): the timeline that
    /// created it.
    fn owner(&self, timeline: u32, epoch: u32) -> u32 {
        match self.forks.get(&timeline) {
            Some(&(parent, fork)) if epoch <= fork => self.owner(parent, epoch),
            _ => timeline,
        }
    }
}

fn arb_tree() -> impl Strategy<Value = Tree> {
    prop::collection::vec((any::<prop::sample::Index>(), 0u32..6), 0..8).prop_map(|spec| {
        let mut forks = BTreeMap::new();
        for (i, (parent_pick, extra)) in spec.into_iter().enumerate() {
            let timeline = i as u32 + 2;
            let parent = parent_pick.index(timeline as usize - 1) as u32 + 1;
            let min = forks.get(&parent).map_or(0, |&(_, e)| e);
            forks.insert(timeline, (parent, min + extra));
        }
        Tree { forks }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fork_points_match_the_model(tree in arb_tree(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let n = tree.forks.len() + 1;
        let (ta, tb) = (a.index(n) as u32 + 1, b.index(n) as u32 + 1);
        let (ha, hb) = (tree.history(ta), tree.history(tb));
        prop_assert!(check_history(ta, &ha).is_ok());
        let point = fork_point(&ha, ta, &hb, tb).unwrap();
        prop_assert_eq!(point, fork_point(&hb, tb, &ha, ta).unwrap());
        if ta == tb {
            prop_assert_eq!(point, ForkPoint::SameTimeline);
        } else {
            // The model: the last epoch at which both hold the same state.
            let shared = (0..60u32).take_while(|&e| tree.owner(ta, e) == tree.owner(tb, e)).last();
            prop_assert_eq!(point, ForkPoint::At(shared.unwrap()));
        }
        for e in 0..40u32 {
            let same = tree.owner(ta, e) == tree.owner(tb, e);
            prop_assert_eq!(point.covers(e), same, "epoch {}", e);
            let anc = Position { timeline: ta, epoch: e };
            let desc = Position { timeline: tb, epoch: 30 };
            prop_assert_eq!(is_ancestor(&ha, anc, &hb, desc).unwrap(), same && e <= 30);
        }
    }

    #[test]
    fn applicability_matches_the_model(
        tree in arb_tree(),
        d in any::<prop::sample::Index>(),
        p in any::<prop::sample::Index>(),
        dest_epoch in 0u32..30,
        base in 0u32..25,
        len in 1u32..10,
    ) {
        let n = tree.forks.len() + 1;
        let (td, tp) = (d.index(n) as u32 + 1, p.index(n) as u32 + 1);
        let new = base + len;
        let verdict = applicability(&tree.history(td), Position { timeline: td, epoch: dest_epoch }, &tree.history(tp), tp, base, new).unwrap();
        let on_history = tree.owner(td, dest_epoch) == tree.owner(tp, dest_epoch);
        let expected = if !on_history {
            "diverged"
        } else if dest_epoch >= new {
            "held"
        } else if dest_epoch < base {
            "behind"
        } else {
            "apply"
        };
        let got = match verdict {
            Applicability::Apply => "apply",
            Applicability::AlreadyHeld => "held",
            Applicability::Behind { .. } => "behind",
            Applicability::Diverged { fork_epoch } => {
                prop_assert!(fork_epoch < dest_epoch);
                "diverged"
            }
        };
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn contradicting_histories_are_an_error() {
    let a = [Fork {
        timeline: 2,
        parent: 1,
        epoch: 3,
    }];
    let b = [
        Fork {
            timeline: 2,
            parent: 1,
            epoch: 4,
        },
        Fork {
            timeline: 3,
            parent: 2,
            epoch: 5,
        },
    ];
    let err = fork_point(&a, 2, &b, 3).unwrap_err();
    assert!(err.to_string().contains("contradict"), "{err}");
    assert!(fork_point(&[], 2, &[], 1).is_err());
}
