//! `poolsync epoch`: show a site's state (MultiSite's `lsepoch`), roll a
//! destination's estimate back after a lost packet (`chepoch`), and
//! promote a follower to the writer of a new timeline after a failover.
//!
//! A promotion forks the lineage at the site's current epoch: the new
//! timeline holds exactly what the old one held at that epoch, and every
//! epoch it makes is greater. Its number is greater than every timeline
//! the site knows of (its history, its destination table, the packets it
//! applied), as PostgreSQL numbers its timelines. Packets then carry the
//! new history, so that a site on the old timeline can tell the two
//! epochs 9 apart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use poolsync_packet::{fork, Destination, State};
use poolsync_pmem::{Access, Storage};
use serde::Serialize;

use super::destination::open_waiting;
use super::state::{self, Loaded, StateFile};
use super::{lineage_text, uuid_text};
use crate::open::HeaderState;
use crate::Error;

/// What to change.
#[derive(Debug, Clone, Default)]
pub struct EpochOptions {
    /// `--set DEST=EPOCH`, in order.
    pub set: Vec<(String, u32)>,
    /// `--promote`.
    pub promote: bool,
    /// `--wait-lock`.
    pub wait_lock: Option<Duration>,
}

/// One destination of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationRow {
    /// Its name.
    pub name: String,
    /// The timeline it is believed to hold.
    pub timeline: u32,
    /// The epoch it is believed to hold.
    pub epoch: u32,
    /// When it was last exported to, seconds since the Unix epoch (0:
    /// never).
    pub last_export: u64,
}

/// One fork of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForkRow {
    /// The timeline created.
    pub timeline: u32,
    /// The timeline it forked from.
    pub parent: u32,
    /// The last epoch they share.
    pub epoch: u32,
}

/// One packet of the applied log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedRow {
    /// Its id, hex.
    pub packet_id: String,
    /// Its timeline.
    pub timeline: u32,
    /// Its base epoch.
    pub base_epoch: u32,
    /// Its new epoch.
    pub new_epoch: u32,
    /// When it was applied, seconds since the Unix epoch.
    pub applied_at: u64,
}

/// A site's state, as `poolsync epoch` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// The pool set.
    pub set: PathBuf,
    /// Its state file.
    pub state_file: PathBuf,
    /// The pool set UUID.
    pub poolset_uuid: String,
    /// The lineage.
    pub lineage: String,
    /// The timeline.
    pub timeline: u32,
    /// Its history, oldest fork first.
    pub history: Vec<ForkRow>,
    /// The epoch the site holds.
    pub epoch: u32,
    /// `writer` or `follower`.
    pub role: &'static str,
    /// How many times the state was written.
    pub generation: u64,
    /// Blocks the state covers.
    pub blocks: u64,
    /// The destination table.
    pub destinations: Vec<DestinationRow>,
    /// The packets applied, oldest first.
    pub applied: Vec<AppliedRow>,
    /// What this run changed, in words.
    pub changes: Vec<String>,
}

/// Shows (and with `options`, changes) the state of the pool set at
/// `path`.
pub fn epoch<S: Storage>(
    storage: &S,
    path: &Path,
    options: &EpochOptions,
) -> Result<EpochReport, Error> {
    let refuse = |reason: String| Error::CannotChangeEpoch {
        set: path.to_path_buf(),
        reason,
    };
    let changing = options.promote || !options.set.is_empty();
    // The pool is locked while its state changes, as export and import
    // lock it.
    let set = if changing {
        Some(open_waiting(
            storage,
            path,
            Access::ReadOnly,
            options.wait_lock,
        )?)
    } else {
        None
    };
    let file = match state::load(storage, path)? {
        Loaded::Ready(f) => f,
        Loaded::Missing => {
            return Err(refuse(format!(
                "no state file ({}): the pool was never exported from or imported into",
                super::state_path(path).display()
            )))
        }
        Loaded::Unusable { path: p, reason } => {
            return Err(refuse(format!("{}: {reason}", p.display())))
        }
    };
    let mut head = file.head.clone();
    let mut changes = Vec::new();
    for (name, epoch) in &options.set {
        changes.push(set_destination(&mut head, name, *epoch).map_err(&refuse)?);
    }
    if options.promote {
        if let Some(set) = &set {
            let interrupted = set.parts().any(|p| {
                matches!(&p.header, HeaderState::Read(h) if !h.hdr.is_zero() && h.hdr.checksum == !h.hdr.compute_checksum())
            });
            if interrupted {
                return Err(refuse(
                    "an import into this pool was interrupted (its headers are marked broken): run it again to completion before promoting".to_string(),
                ));
            }
        }
        changes.push(promote(&mut head).map_err(&refuse)?);
    }
    if changing {
        head.generation = head.generation.wrapping_add(1);
        state::rewrite_head(storage, path, &file, &head)?;
    }
    drop(set);
    Ok(report(path, &file, &head, changes))
}

/// Applies `--set NAME=EPOCH`.
fn set_destination(head: &mut State, name: &str, epoch: u32) -> Result<String, String> {
    if name.is_empty() || name.len() > poolsync_packet::MAX_NAME {
        return Err(format!(
            "destination name \"{name}\" is {} bytes, expected 1 to {}",
            name.len(),
            poolsync_packet::MAX_NAME
        ));
    }
    if epoch > head.epoch {
        return Err(format!(
            "--set {name}={epoch}: this site holds epoch {}, a destination cannot hold a later one",
            head.epoch
        ));
    }
    let timeline = head.timeline;
    match head.destinations.iter_mut().find(|d| d.name == name) {
        Some(d) => {
            let was = format!("{}:{}", d.timeline, d.epoch);
            d.epoch = epoch;
            if epoch <= poolsync_packet::fork_epoch(&head.history) || d.timeline == timeline {
                d.timeline = timeline;
            }
            Ok(format!(
                "{name}: believed to hold epoch {epoch} (was {was}); its next packet starts there"
            ))
        }
        None => {
            if head.destinations.len() >= poolsync_packet::state::MAX_STATE_DESTINATIONS {
                return Err(format!(
                    "the destination table is full ({} destinations)",
                    head.destinations.len()
                ));
            }
            head.destinations.push(Destination {
                name: name.to_string(),
                timeline,
                epoch,
                last_export: 0,
            });
            Ok(format!(
                "{name}: added, believed to hold epoch {epoch}; its next packet starts there"
            ))
        }
    }
}

/// Applies `--promote`.
fn promote(head: &mut State) -> Result<String, String> {
    if !head.follower {
        return Err(format!(
            "this site is already the writer of timeline {} (it makes epochs of its own): there is nothing to promote",
            head.timeline
        ));
    }
    let known = head
        .history
        .iter()
        .flat_map(|f| [f.timeline, f.parent])
        .chain(head.destinations.iter().map(|d| d.timeline))
        .chain(head.applied.iter().map(|a| a.timeline))
        .chain([head.timeline])
        .max()
        .unwrap_or(head.timeline);
    let new = known
        .checked_add(1)
        .ok_or_else(|| "no timeline number is left".to_string())?;
    let history = fork(&head.history, head.timeline, new, head.epoch).map_err(|e| e.to_string())?;
    let old = head.timeline;
    head.history = history;
    head.timeline = new;
    head.follower = false;
    Ok(format!(
        "promoted: timeline {new} forks timeline {old} at epoch {}; this site is now the writer, and its next export makes epoch {}",
        head.epoch,
        head.epoch + 1
    ))
}

fn report<F>(path: &Path, file: &StateFile<F>, head: &State, changes: Vec<String>) -> EpochReport {
    EpochReport {
        set: path.to_path_buf(),
        state_file: file.path.clone(),
        poolset_uuid: uuid_text(&head.poolset_uuid),
        lineage: lineage_text(&head.lineage),
        timeline: head.timeline,
        history: head
            .history
            .iter()
            .map(|f| ForkRow {
                timeline: f.timeline,
                parent: f.parent,
                epoch: f.epoch,
            })
            .collect(),
        epoch: head.epoch,
        role: if head.follower { "follower" } else { "writer" },
        generation: head.generation,
        blocks: head.block_count(),
        destinations: head
            .destinations
            .iter()
            .map(|d| DestinationRow {
                name: d.name.clone(),
                timeline: d.timeline,
                epoch: d.epoch,
                last_export: d.last_export,
            })
            .collect(),
        applied: head
            .applied
            .iter()
            .map(|a| AppliedRow {
                packet_id: lineage_text(&a.packet_id),
                timeline: a.timeline,
                base_epoch: a.base_epoch,
                new_epoch: a.new_epoch,
                applied_at: a.applied_at,
            })
            .collect(),
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> State {
        State {
            poolset_uuid: [1; 16],
            lineage: [2; 16],
            timeline: 1,
            history: vec![],
            epoch: 9,
            generation: 4,
            block_size: 4096,
            range: 4096..8192,
            destinations: vec![Destination {
                name: "b".into(),
                timeline: 1,
                epoch: 9,
                last_export: 3,
            }],
            applied: vec![],
            follower: true,
        }
    }

    #[test]
    fn set_rolls_back_and_adds() {
        let mut h = head();
        assert!(set_destination(&mut h, "b", 7).unwrap().contains("was 1:9"));
        assert_eq!(h.destinations[0].epoch, 7);
        assert!(set_destination(&mut h, "c", 2).unwrap().contains("added"));
        assert!(set_destination(&mut h, "c", 10).is_err());
    }

    #[test]
    fn promotion_forks_a_new_timeline_above_every_known_one() {
        let mut h = head();
        h.destinations[0].timeline = 3;
        promote(&mut h).unwrap();
        assert_eq!(h.timeline, 4);
        assert_eq!(h.history.last().map(|f| (f.parent, f.epoch)), Some((1, 9)));
        assert!(!h.follower);
        assert!(promote(&mut h).unwrap_err().contains("already the writer"));
    }
}
