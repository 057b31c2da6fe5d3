//! Change detection: one read of a source endpoint, a digest per block,
//! compared with the old state.
//!
//! libpmemobj keeps no log of what it changed, so the exporter finds out
//! itself. [`scan`] reads the replicated range of a source [`Endpoint`] in
//! strides (reader threads read and hash the next strides while the
//! caller handles this one, [`super::readahead`]), computes each block's digest (the low 96
//! bits of its XXH3-128, as the state file keeps it) and compares it with
//! the block's old entry. A block whose digest differs, or whose old entry
//! is unknown, *changed*: it gets the new epoch as its stamp. A block
//! *ships* when its stamp is above the packet's base epoch or a rewind
//! request lists it. The caller sees every stride's verdicts
//! ([`ScanVisitor`]) in logical order and writes the new state and the
//! packet from them (reading the shipped blocks again); nothing here knows about files, so the same
//! scan serves a connection to a remote replica.

use std::ops::Range;

use poolsync_packet::{BlockRange, Entry};

use super::readahead::{read_ahead, Strides};
use super::state::OldEntries;
use super::Spans;
use crate::endpoint::Endpoint;
use crate::exec::Progress;
use crate::Error;

/// What a scan compares and ships.
#[derive(Debug, Clone)]
pub struct ScanPlan<'a> {
    /// The replicated logical range, block aligned.
    pub range: Range<u64>,
    /// Bytes per block.
    pub block_size: u32,
    /// The stamp a changed block gets.
    pub change_stamp: u32,
    /// Blocks whose stamp is above this ship.
    pub base: u32,
    /// Blocks that ship whatever their stamps (a rewind request's), in
    /// ascending order, not overlapping.
    pub extra: &'a [BlockRange],
    /// Bytes read at a time (a multiple of the block size).
    pub stride: usize,
    /// Worker threads that read and hash the strides (the read-ahead
    /// runs [`super::readahead::readers_for`] reader threads for them).
    pub threads: usize,
}

/// One block's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Its new entry: the digest now, and its stamp.
    pub entry: Entry,
    /// Its digest differs from the old entry, or the old entry is unknown.
    pub changed: bool,
    /// The old entry was unknown (no state, or a damaged chunk).
    pub unknown: bool,
    /// It goes into the packet.
    pub ships: bool,
}

/// Receives the scan's strides in logical order.
pub trait ScanVisitor {
    /// The stride at logical `offset`: one verdict per block. The scan
    /// keeps no bytes ([`super::readahead`]): a visitor that needs the
    /// shipped blocks' bytes reads them again, and checks them against
    /// their entries' digests.
    fn stride(&mut self, offset: u64, blocks: &[Block]) -> Result<(), Error>;
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanTotals {
    /// Blocks read.
    pub blocks: u64,
    /// Blocks that changed (unknown ones included).
    pub changed: u64,
    /// Blocks whose old entry was unknown.
    pub unknown: u64,
    /// Blocks that ship.
    pub shipped: u64,
    /// Where the changed blocks are.
    pub changed_spans: Spans,
}

/// The entry of a block's bytes with `stamp`.
pub fn entry_of(bytes: &[u8], stamp: u32) -> Entry {
    Entry::from_xxh3_128(crate::endpoint::digest(bytes), stamp)
}

/// Reads `plan.range` of `source` once and hands every stride to `visit`
/// (see the module documentation).
pub fn scan(
    source: &dyn Endpoint,
    plan: &ScanPlan<'_>,
    old: &mut dyn OldEntries,
    visit: &mut dyn ScanVisitor,
    progress: &dyn Progress,
) -> Result<ScanTotals, Error> {
    read_ahead(
        &[source],
        plan.range.clone(),
        u64::from(plan.block_size),
        plan.stride as u64,
        plan.threads,
        |strides| consume(plan, old, visit, progress, strides),
    )
}

/// The caller's side: judges every block of each stride read and hands
/// the stride to `visit`.
fn consume(
    plan: &ScanPlan<'_>,
    old: &mut dyn OldEntries,
    visit: &mut dyn ScanVisitor,
    progress: &dyn Progress,
    strides: &mut Strides,
) -> Result<ScanTotals, Error> {
    let bs = u64::from(plan.block_size);
    let mut totals = ScanTotals::default();
    let mut extra = plan.extra.iter().peekable();
    let mut verdicts = Vec::new();
    let first_block = plan.range.start / bs;
    while let Some(stride) = strides.next_stride()? {
        let digests = stride.digests(0).ok_or(Error::WriterStopped)?;
        verdicts.clear();
        for (i, digest) in digests.iter().enumerate() {
            let at = stride.offset + i as u64 * bs;
            let new = Entry::from_xxh3_128(*digest, 0);
            let prior = old.entry(at / bs - first_block)?;
            let (changed, unknown, stamp) = match prior {
                Some(e) if e.digest == new.digest => (false, false, e.stamp),
                Some(_) => (true, false, plan.change_stamp),
                None => (true, true, plan.change_stamp),
            };
            while extra
                .peek()
                .is_some_and(|r| r.end(plan.block_size).is_some_and(|e| e <= at))
            {
                extra.next();
            }
            let requested = extra.peek().is_some_and(|r| r.offset <= at);
            let ships = stamp > plan.base || requested;
            totals.blocks += 1;
            if changed {
                totals.changed += 1;
                totals.changed_spans.push(at, bs);
            }
            totals.unknown += u64::from(unknown);
            totals.shipped += u64::from(ships);
            verdicts.push(Block {
                entry: Entry {
                    digest: new.digest,
                    stamp,
                },
                changed,
                unknown,
                ships,
            });
        }
        visit.stride(stride.offset, &verdicts)?;
        progress.advance(stride.len);
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::NoProgress;
    use crate::open::OpenReplica;
    use crate::packets::state::EntryCursor;

    /// Old entries from a vector.
    struct Fixed(Vec<Option<Entry>>, Vec<(u64, String)>);

    impl OldEntries for Fixed {
        fn entry(&mut self, block: u64) -> Result<Option<Entry>, Error> {
            Ok(self.0.get(block as usize).copied().flatten())
        }
        fn bad_chunks(&self) -> &[(u64, String)] {
            &self.1
        }
    }

    #[derive(Default)]
    struct Collect(Vec<(u64, Block)>);

    impl ScanVisitor for Collect {
        fn stride(&mut self, offset: u64, blocks: &[Block]) -> Result<(), Error> {
            for (i, b) in blocks.iter().enumerate() {
                self.0.push((offset + i as u64 * 4096, *b));
            }
            Ok(())
        }
    }

    fn source() -> (
        poolsync_pmem::sim::SimStorage,
        OpenReplica<poolsync_pmem::sim::SimFile>,
    ) {
        use poolsync_pmem::Storage;
        let s = poolsync_pmem::sim::SimStorage::new();
        s.add_dir(std::path::Path::new("/p")).unwrap();
        let bytes: Vec<u8> = (0..64 * 4096).map(|i| (i / 4096) as u8).collect();
        s.insert_file(std::path::Path::new("/p/f"), &bytes, 0o644)
            .unwrap();
        let f = s
            .open(
                std::path::Path::new("/p/f"),
                poolsync_pmem::Access::ReadOnly,
            )
            .unwrap();
        let rep = OpenReplica::single_file(0, "src".into(), "/p/f".into(), 64 * 4096, Some(f));
        (s, rep)
    }

    #[test]
    fn changed_blocks_get_the_new_stamp_and_ship_with_the_old_ones_above_the_base() {
        let (_s, rep) = source();
        let mut buf = vec![0u8; 4096];
        let mut old: Vec<Option<Entry>> = (1..64u64)
            .map(|b| {
                rep.read(b * 4096, &mut buf).unwrap();
                Some(entry_of(&buf, (b % 5) as u32))
            })
            .collect();
        old[3] = Some(Entry {
            digest: [9; 12],
            stamp: 1,
        });
        old[7] = None;
        let extra = [BlockRange {
            offset: 20 * 4096,
            blocks: 2,
        }];
        let plan = ScanPlan {
            range: 4096..64 * 4096,
            block_size: 4096,
            change_stamp: 6,
            base: 3,
            extra: &extra,
            stride: 3 * 4096,
            threads: 1,
        };
        let mut seen = Collect::default();
        let totals = scan(
            &rep,
            &plan,
            &mut Fixed(old.clone(), vec![]),
            &mut seen,
            &NoProgress,
        )
        .unwrap();
        assert_eq!(totals.blocks, 63);
        assert_eq!((totals.changed, totals.unknown), (2, 1));
        for (at, b) in &seen.0 {
            let i = (at / 4096 - 1) as usize;
            let old_stamp = old[i].map_or(0, |e| e.stamp);
            let changed = i == 3 || i == 7;
            assert_eq!(b.changed, changed, "block {i}");
            let stamp = if changed { 6 } else { old_stamp };
            assert_eq!(b.entry.stamp, stamp);
            let requested = (20..22).contains(&(at / 4096));
            assert_eq!(b.ships, stamp > 3 || requested, "block {i}");
        }
        // Without a state everything changed.
        let mut none = EntryCursor::none();
        let totals = scan(&rep, &plan, &mut none, &mut Collect::default(), &NoProgress).unwrap();
        assert_eq!(totals.changed, 63);
        assert_eq!(totals.shipped, 63);
    }
}
