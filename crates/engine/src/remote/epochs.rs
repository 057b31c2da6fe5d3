//! Epoch-based remote updates: the local source's changes tracked in the
//! pool's state file, as `export` tracks them (`docs/packet.md` section
//! 6), so that a remote replica whose sync mark proves an epoch receives
//! only the blocks changed since, without reading its whole pool to
//! compare digests (`docs/format.md` §26.5).
//!
//! [`Tracker::begin`] loads the state (or starts a new lineage, saying
//! why); [`Tracker::base`] judges one remote replica's mark against it;
//! [`Tracker::scan`] reads the source once, stamps the blocks that changed
//! with a new epoch, writes the new state (aside, then renamed) and gives,
//! per remote replica with a usable base, the ranges stamped after it.
//! The scan is the same one an export makes ([`crate::packets::scan`]).

use std::path::Path;

use poolsync_packet::State;
use poolsync_pmem::Storage;
use poolsync_wire::SyncMark;

use super::replica::RemoteView;
use crate::compare::LogicalRange;
use crate::endpoint::Endpoint;
use crate::exec::{Progress, Tuning};
use crate::packets::export::{start_state, Start};
use crate::packets::scan::{scan, Block, ScanPlan, ScanVisitor};
use crate::packets::state::{EntryCursor, OldEntries, StateWriter};
use crate::packets::{IdSource, Spans, BLOCK_SIZE};
use crate::ring::UuidSource;
use crate::Error;

/// The pool's state, loaded before the remote replicas are judged.
pub struct Tracker<F> {
    start: Start<F>,
    /// The end of the replicated range the remote updates cover.
    pool_size: u64,
}

impl<F> std::fmt::Debug for Tracker<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("epoch", &self.start.head.epoch)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// What a scan found: the source's epoch now, and per remote replica the
/// ranges it lacks.
#[derive(Debug)]
pub struct Tracked {
    /// The pool set UUID.
    pub poolset_uuid: [u8; 16],
    /// The lineage.
    pub lineage: [u8; 16],
    /// The timeline.
    pub timeline: u32,
    /// The epoch the source's data now is.
    pub epoch: u32,
    /// Per remote replica (in the order of the bases given), its base.
    pub bases: Vec<Option<u32>>,
    /// Per remote replica, the blocks changed after its base; `None`
    /// without a base.
    pub since: Vec<Option<Vec<LogicalRange>>>,
    /// Per remote replica without a base, why (the caller fills it in).
    pub refusals: Vec<Option<String>>,
    /// Why the state was started anew, when it was.
    pub note: Option<String>,
}

/// The fresh lineage ids of a run: derived in tests as the UUIDs are.
fn ids(uuids: &UuidSource) -> IdSource {
    match uuids {
        UuidSource::Random => IdSource::Random,
        UuidSource::Derived { seed } => IdSource::Derived { seed: *seed },
    }
}

impl<F: poolsync_pmem::PartFile> Tracker<F> {
    /// Loads the state of the pool set at `set_path` for a source of
    /// `pool_size` bytes with pool set UUID `uuid`; `None` when this site
    /// makes no epochs (it follows another, importing packets) or the pool
    /// is too small to track.
    pub fn begin<S: Storage<Aux = F>>(
        storage: &S,
        set_path: &Path,
        uuid: [u8; 16],
        (net_size, pool_size): (u64, u64),
        uuids: &UuidSource,
    ) -> Result<Option<Tracker<F>>, Error> {
        let bs = u64::from(BLOCK_SIZE);
        // The range is the export's: the local replicas' net size.
        let end = net_size / bs * bs;
        if end <= bs || pool_size > end {
            return Ok(None);
        }
        let start = start_state(storage, set_path, uuid, &(bs..end), &ids(uuids))?;
        if start.head.follower || start.head.epoch == u32::MAX {
            return Ok(None);
        }
        Ok(Some(Tracker { start, pool_size }))
    }

    /// The state as loaded.
    pub fn head(&self) -> &State {
        &self.start.head
    }

    /// The epoch a remote replica provably holds, from its sync mark
    /// (`docs/wire.md` section 9), or why there is none to use: the mark
    /// must be of this pool, lineage and timeline, not after this state,
    /// with the pool's `run_id` now, and every remote part there with a
    /// valid header.
    pub fn base(
        &self,
        mark: Option<&SyncMark>,
        run_id: Option<u64>,
        view: &RemoteView,
    ) -> Result<u32, String> {
        let head = &self.start.head;
        let Some(m) = mark else {
            return Err("the remote host keeps no sync mark (never synced, or changed by poolsync or an interrupted update since)".to_string());
        };
        if self.start.file.is_none() {
            return Err(self
                .start
                .note
                .as_ref()
                .map_or("the local state file is new".to_string(), |n| {
                    n.reason.clone()
                }));
        }
        if m.poolset_uuid != head.poolset_uuid
            || m.lineage != head.lineage
            || m.timeline != head.timeline
        {
            return Err(
                "its sync mark is of another lineage or timeline than the local state file"
                    .to_string(),
            );
        }
        if m.epoch > head.epoch {
            return Err(format!(
                "its sync mark says epoch {}, after the local state's {}",
                m.epoch, head.epoch
            ));
        }
        if head.range.end < self.pool_size {
            return Err("the local state file covers less than the pool".to_string());
        }
        if !view.opened.healthy
            || view
                .opened
                .parts
                .iter()
                .any(|p| p.status != poolsync_wire::PartStatus::Ok)
        {
            return Err("it is not healthy on its host".to_string());
        }
        match run_id {
            Some(now) if now == m.run_id => Ok(m.epoch),
            Some(now) => Err(format!(
                "its run_id is {now}, {} at its last sync: the pool was opened on its host",
                m.run_id
            )),
            None => Err("its run_id cannot be read".to_string()),
        }
    }

    /// Reads `source` once, stamps its changed blocks with a new epoch,
    /// writes the new state (unless `dry_run`) and gives, for each of
    /// `bases`, the ranges stamped after it.
    pub fn scan<S: Storage<Aux = F>>(
        self,
        storage: &S,
        set_path: &Path,
        source: &dyn Endpoint,
        bases: &[Option<u32>],
        (tuning, dry_run): (Tuning, bool),
        progress: &dyn Progress,
    ) -> Result<Tracked, Error> {
        let head = &self.start.head;
        let new_epoch = head.epoch.saturating_add(1);
        let plan = ScanPlan {
            range: head.range.clone(),
            block_size: BLOCK_SIZE,
            change_stamp: new_epoch,
            // Nothing ships by the scan's own rule: each remote replica's
            // ranges are picked by its base below.
            base: u32::MAX,
            extra: &[],
            stride: tuning.stride,
            threads: tuning.threads,
        };
        let mut new_head = head.clone();
        new_head.generation = head.generation.wrapping_add(1);
        new_head.epoch = new_epoch;
        let writer = if dry_run {
            None
        } else {
            Some(StateWriter::create(storage, set_path, &new_head)?)
        };
        let mut visitor = Visitor {
            state: writer,
            bases,
            since: bases.iter().map(|_| Spans::default()).collect(),
            end: self.pool_size,
        };
        let mut cursor = match &self.start.file {
            Some(f) => f.cursor(),
            None => EntryCursor::none(),
        };
        progress.start(plan.range.end - plan.range.start);
        let scanned = scan(source, &plan, &mut cursor, &mut visitor, progress);
        progress.finish();
        let Visitor { state, since, .. } = visitor;
        let totals = match scanned {
            Ok(t) => t,
            Err(e) => {
                if let Some(w) = state {
                    let _ = w.abandon(storage);
                }
                return Err(e);
            }
        };
        let mut note = self.start.note.as_ref().map(|n| n.reason.clone());
        if let Some((chunk, reason)) = cursor.bad_chunks().first() {
            note = Some(format!(
                "chunk {chunk} of the state file fails its checksum ({reason}): its blocks count as changed"
            ));
        }
        let epoch = if totals.changed == 0 && self.start.file.is_some() {
            if let Some(w) = state {
                w.abandon(storage)?;
            }
            head.epoch
        } else {
            if let Some(w) = state {
                w.finish(storage)?;
            }
            new_epoch
        };
        Ok(Tracked {
            poolset_uuid: head.poolset_uuid,
            lineage: head.lineage,
            timeline: head.timeline,
            epoch,
            bases: bases.to_vec(),
            refusals: Vec::new(),
            since: bases
                .iter()
                .zip(since)
                .map(|(b, s)| {
                    b.map(|_| {
                        s.as_slice()
                            .iter()
                            .map(|x| LogicalRange::new(x.offset, x.len))
                            .collect()
                    })
                })
                .collect(),
            note,
        })
    }
}

impl Tracked {
    /// The base of remote replica `i`, if it has one.
    pub fn base_of(&self, i: usize) -> Option<u32> {
        self.bases.get(i).copied().flatten()
    }
}

/// Writes the new state's entries and gathers each base's ranges.
struct Visitor<'b, F> {
    state: Option<StateWriter<F>>,
    bases: &'b [Option<u32>],
    since: Vec<Spans>,
    /// Ranges end here (the pool's end).
    end: u64,
}

impl<F: poolsync_pmem::PartFile> ScanVisitor for Visitor<'_, F> {
    fn stride(&mut self, offset: u64, blocks: &[Block]) -> Result<(), Error> {
        let bs = u64::from(BLOCK_SIZE);
        for (i, b) in blocks.iter().enumerate() {
            if let Some(w) = &mut self.state {
                w.push(b.entry)?;
            }
            let at = offset + i as u64 * bs;
            if at >= self.end {
                continue;
            }
            let len = bs.min(self.end - at);
            for (base, spans) in self.bases.iter().zip(&mut self.since) {
                if base.is_some_and(|e| b.entry.stamp > e) {
                    spans.push(at, len);
                }
            }
        }
        Ok(())
    }
}
