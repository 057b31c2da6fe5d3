//! Applying verified records to a destination: first proving that the
//! destination still holds the image its state records, then writing.
//!
//! Both steps take their records from any [`RecordSource`] (a packet's
//! files through [`super::files::RecordStream`], or a connection) and
//! write to any [`Endpoint`]s (the destination's replicas), so they know
//! nothing about files.
//!
//! [`check_destination`] reads every block of the replicated range of the
//! replicas it is given (the import gives the master: libpmemobj never
//! makes the others byte-identical to it) and compares each block's digest
//! with the state's entry. A block
//! that differs is *explained* when the packet carries it with exactly
//! these bytes (an import of this packet was interrupted after writing
//! it); otherwise it is a local change: *carried* when the packet would
//! overwrite it, *kept* when it would not. What that costs: one read of
//! the master replica's replicated range, hashed with XXH3 block by block
//! (about as long as reading it), and one read of the state file (0.4 %
//! of the pool); the packet's records are read alongside.
//!
//! [`write_records`] writes each record into every replica (a zero run as
//! zeros) and calls back with each block's new entry, so that the new
//! state is written in the same pass.

use std::ops::Range;

use poolsync_packet::{Entry, RecordBody};
use serde::Serialize;

use super::files::RecordStream;
use super::readahead::{read_ahead, Strides};
use super::scan::entry_of;
use super::state::OldEntries;
use super::Spans;
use crate::endpoint::Endpoint;
use crate::exec::Progress;
use crate::Error;

/// Verified records in ascending logical order.
pub trait RecordSource {
    /// The next record and its uncompressed bytes (empty for a zero run),
    /// or `None` after the last.
    fn next_record(&mut self) -> Result<Option<(RecordBody, &[u8])>, Error>;
}

impl<S: poolsync_pmem::Storage> RecordSource for RecordStream<'_, S> {
    fn next_record(&mut self) -> Result<Option<(RecordBody, &[u8])>, Error> {
        self.read_next()
    }
}

impl RecordSource for super::files::RecordsAhead {
    fn next_record(&mut self) -> Result<Option<(RecordBody, &[u8])>, Error> {
        super::files::RecordsAhead::next_record(self)
    }
}

/// A source without records: checking against it finds every block that
/// differs from the state.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRecords;

impl RecordSource for NoRecords {
    fn next_record(&mut self) -> Result<Option<(RecordBody, &[u8])>, Error> {
        Ok(None)
    }
}

/// The logical range and length of a record.
fn span_of(body: &RecordBody) -> (u64, u64) {
    match *body {
        RecordBody::Data { offset, len } => (offset, len as u64),
        RecordBody::Zero { offset, len } => (offset, len),
    }
}

/// What checking a destination against its state found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Bytes read from the destination (all replicas).
    pub bytes_read: u64,
    /// Blocks compared (per replica).
    pub blocks: u64,
    /// Blocks that differ from the state but hold the packet's bytes.
    pub explained: u64,
    /// Blocks whose state entry is unknown but which the packet
    /// overwrites.
    pub unknown_overwritten: u64,
    /// Local changes the packet does not overwrite (or blocks whose
    /// entry is unknown and that the packet does not carry).
    pub kept: Spans,
    /// Local changes the packet would overwrite with other bytes.
    pub carried: Spans,
}

impl CheckReport {
    /// Every local change, carried or not, merged in order.
    pub fn changed(&self) -> Spans {
        let mut all: Vec<super::Span> = self
            .kept
            .as_slice()
            .iter()
            .chain(self.carried.as_slice())
            .copied()
            .collect();
        all.sort_by_key(|s| s.offset);
        let mut out = Spans::default();
        for s in all {
            out.push(s.offset, s.len);
        }
        out
    }

    /// Whether the destination holds exactly its recorded image (apart
    /// from blocks the packet brings).
    pub fn clean(&self) -> bool {
        self.kept.is_empty() && self.carried.is_empty()
    }
}

/// Reads `range` of every replica and compares it with the state entries
/// and the packet's records (see the module documentation). With
/// `after_fork`, a block the packet does not carry whose stamp is after
/// that epoch counts as kept too: the destination changed it on a
/// timeline the packet's history does not have.
///
/// The check reads the whole range in order, so reader threads (one more
/// than `threads` when that is several, at most four) read and hash it ahead
/// ([`super::readahead`]), while the calling thread reads and verifies
/// the records and judges every block.
#[allow(clippy::too_many_arguments)]
pub fn check_destination(
    replicas: &[&dyn Endpoint],
    range: Range<u64>,
    block_size: u32,
    after_fork: Option<u32>,
    old: &mut dyn OldEntries,
    records: &mut dyn RecordSource,
    threads: usize,
    progress: &dyn Progress,
) -> Result<CheckReport, Error> {
    let bs = u64::from(block_size).max(1);
    read_ahead(
        replicas,
        range.clone(),
        bs,
        CHECK_STRIDE,
        threads,
        |strides| {
            let mut c = Checker {
                after_fork,
                replicas,
                block: Vec::new(),
                bs,
                first_block: range.start / bs,
                old,
                report: CheckReport::default(),
                strides,
                progress,
            };
            let mut pos = range.start;
            while let Some((body, data)) = records.next_record()? {
                let (offset, len) = span_of(&body);
                c.uncarried(pos, offset)?;
                c.carried(offset, len, data)?;
                pos = offset + len;
            }
            c.uncarried(pos, range.end)?;
            Ok(c.report)
        },
    )
}

/// Bytes read from each replica at a time while checking.
const CHECK_STRIDE: u64 = 2 << 20;

struct Checker<'a> {
    after_fork: Option<u32>,
    replicas: &'a [&'a dyn Endpoint],
    /// A block read again to compare it with the packet's bytes.
    block: Vec<u8>,
    bs: u64,
    first_block: u64,
    old: &'a mut dyn OldEntries,
    report: CheckReport,
    strides: &'a mut Strides,
    progress: &'a dyn Progress,
}

impl Checker<'_> {
    /// Walks `[start, end)` of every replica; `judge` gets each block's
    /// offset, replica, entry (its digest now, stamp 0) and old entry.
    fn walk(
        &mut self,
        start: u64,
        end: u64,
        mut judge: impl FnMut(&mut Self, u64, usize, Entry, Option<Entry>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let bs = self.bs;
        let mut at = start;
        while at < end {
            let old = self.old.entry(at / bs - self.first_block)?;
            for r in 0..self.replicas.len() {
                // The stride at hand (judging may have read a block again,
                // never moved on).
                let stride = self.strides.holding(at)?;
                let i = ((at - stride.offset) / bs) as usize;
                let digest = stride
                    .digests(r)
                    .and_then(|d| d.get(i))
                    .copied()
                    .ok_or(Error::WriterStopped)?;
                self.report.blocks += 1;
                judge(self, at, r, Entry::from_xxh3_128(digest, 0), old)?;
            }
            at += bs;
        }
        self.report.bytes_read += (end.saturating_sub(start)) * self.replicas.len() as u64;
        self.progress.advance(end.saturating_sub(start));
        Ok(())
    }

    fn uncarried(&mut self, start: u64, end: u64) -> Result<(), Error> {
        let bs = self.bs;
        let fork = self.after_fork;
        self.walk(start, end, |c, at, _r, now, old| {
            match old {
                Some(e) if now.digest == e.digest && fork.is_none_or(|f| e.stamp <= f) => {}
                _ => c.report.kept.push(at, bs),
            }
            Ok(())
        })
    }

    fn carried(&mut self, offset: u64, len: u64, data: &[u8]) -> Result<(), Error> {
        let bs = self.bs;
        self.walk(offset, offset + len, |c, at, r, new, old| {
            match old {
                Some(e) if e.digest == new.digest => return Ok(()),
                None => {
                    c.report.unknown_overwritten += 1;
                    return Ok(());
                }
                Some(_) => {}
            }
            // It differs from the state: does it hold the packet's bytes
            // (an interrupted import wrote them)? The readers keep no
            // bytes, so it is read again.
            let n = usize::try_from(bs).map_err(|_| Error::WriterStopped)?;
            c.block.resize(n, 0);
            let replica = c.replicas.get(r).ok_or(Error::WriterStopped)?;
            replica.read(at, &mut c.block)?;
            let theirs = if data.is_empty() {
                None
            } else {
                data.get((at - offset) as usize..(at - offset + bs) as usize)
            };
            let same = match theirs {
                Some(t) => t == c.block.as_slice(),
                None => c.block.iter().all(|&b| b == 0),
            };
            if same {
                c.report.explained += 1;
            } else {
                c.report.carried.push(at, bs);
            }
            Ok(())
        })
    }
}

/// Writes records into every replica of a destination.
#[derive(Debug)]
pub struct Writer<'a> {
    replicas: &'a [&'a dyn Endpoint],
    zeros: Vec<u8>,
    /// Zero runs need no writes: the destination's parts were created by
    /// this run and are zero.
    pub fresh: bool,
}

impl<'a> Writer<'a> {
    /// A writer into `replicas`.
    pub fn new(replicas: &'a [&'a dyn Endpoint], fresh: bool) -> Self {
        Writer {
            replicas,
            zeros: Vec::new(),
            fresh,
        }
    }

    /// Writes one record (not yet durable: see [`Writer::fence`]).
    pub fn write(&mut self, body: &RecordBody, data: &[u8]) -> Result<u64, Error> {
        let (offset, len) = span_of(body);
        match body {
            RecordBody::Data { .. } => {
                for rep in self.replicas {
                    rep.write(offset, data)?;
                    rep.flush(offset, len)?;
                }
            }
            RecordBody::Zero { .. } if self.fresh => {}
            RecordBody::Zero { .. } => {
                let mut pos = offset;
                while pos < offset + len {
                    let n = (offset + len - pos).min(CHECK_STRIDE);
                    self.zeros.resize(n as usize, 0);
                    for rep in self.replicas {
                        rep.write(pos, &self.zeros)?;
                        rep.flush(pos, n)?;
                    }
                    pos += n;
                }
            }
        }
        Ok(len)
    }

    /// Makes every write durable.
    pub fn fence(&self) -> Result<(), Error> {
        for rep in self.replicas {
            rep.fence()?;
        }
        Ok(())
    }
}

/// Writes every record of `records` into `writer`'s replicas and gives
/// `entry` the new entry of every block of `range` in order: a carried
/// block's digest from the packet's bytes with stamp `stamp`, any other
/// block's old entry.
#[allow(clippy::too_many_arguments)]
pub fn write_records(
    writer: &mut Writer<'_>,
    range: Range<u64>,
    block_size: u32,
    stamp: u32,
    old: &mut dyn OldEntries,
    records: &mut dyn RecordSource,
    progress: &dyn Progress,
    entry: &mut dyn FnMut(Entry) -> Result<(), Error>,
) -> Result<u64, Error> {
    let bs = u64::from(block_size);
    let first = range.start / bs;
    let zero_entry = entry_of(&vec![0u8; bs as usize], stamp);
    let mut pos = range.start;
    let mut written = 0;
    while let Some((body, data)) = records.next_record()? {
        let (offset, len) = span_of(&body);
        keep_old(pos, offset, bs, first, old, entry)?;
        written += writer.write(&body, data)?;
        let mut at = offset;
        if data.is_empty() {
            while at < offset + len {
                // The old entry is read in step, and replaced.
                let _ = old.entry(at / bs - first)?;
                entry(zero_entry)?;
                at += bs;
            }
        } else {
            for block in data.chunks(bs as usize) {
                let _ = old.entry(at / bs - first)?;
                entry(entry_of(block, stamp))?;
                at += bs;
            }
        }
        progress.advance(len);
        pos = offset + len;
    }
    keep_old(pos, range.end, bs, first, old, entry)?;
    Ok(written)
}

/// Hands on the old entries of the blocks in `[from, to)`, which the
/// packet does not carry (the check proved they are known).
fn keep_old(
    from: u64,
    to: u64,
    bs: u64,
    first: u64,
    old: &mut dyn OldEntries,
    entry: &mut dyn FnMut(Entry) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut at = from;
    while at < to {
        let e = old
            .entry(at / bs - first)?
            .ok_or_else(|| Error::InvalidRequest {
                path: std::path::PathBuf::new(),
                reason: format!(
                    "no state entry for the block at {at:#x}, which the packet does not carry"
                ),
            })?;
        entry(e)?;
        at += bs;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::NoProgress;

    const BS: u64 = 4096;

    use crate::test_endpoint::Mem;

    /// Old entries from a vector.
    struct Olds(Vec<Option<Entry>>);

    impl OldEntries for Olds {
        fn entry(&mut self, block: u64) -> Result<Option<Entry>, Error> {
            Ok(self.0.get(block as usize).copied().flatten())
        }
        fn bad_chunks(&self) -> &[(u64, String)] {
            &[]
        }
    }

    type RecordList = Vec<(RecordBody, Vec<u8>)>;

    /// Records from a list.
    struct Records(RecordList, usize);

    impl RecordSource for Records {
        fn next_record(&mut self) -> Result<Option<(RecordBody, &[u8])>, Error> {
            let Some((body, data)) = self.0.get(self.1) else {
                return Ok(None);
            };
            self.1 += 1;
            Ok(Some((*body, data.as_slice())))
        }
    }

    fn block(i: u64) -> Vec<u8> {
        (0..BS).map(|b| (i.wrapping_mul(31) ^ b) as u8).collect()
    }

    /// A destination of several strides whose state records another
    /// image at a few blocks, and a packet that explains, overwrites or
    /// leaves them.
    fn scenario() -> (Vec<u8>, Vec<Option<Entry>>, RecordList) {
        let blocks = 3 * CHECK_STRIDE / BS + 7;
        let mut bytes = Vec::new();
        for i in 0..blocks {
            bytes.extend(block(i));
        }
        let mut olds: Vec<Option<Entry>> = (0..blocks)
            .map(|i| Some(super::entry_of(&block(i), 1)))
            .collect();
        let other = |i: u64| Some(super::entry_of(&block(i + 100_000), 1));
        // Changed locally: one the packet brings with the bytes it holds
        // (explained), one it brings with others (carried), one it leaves
        // (kept) in a later stride, and one whose entry is unknown.
        for i in [5, 9, 600, blocks - 1] {
            olds[i as usize] = other(i);
        }
        olds[700] = None;
        let mut carried = block(9);
        carried[0] ^= 1;
        let records = vec![
            (
                RecordBody::Data {
                    offset: 4 * BS,
                    len: 2 * BS as usize,
                },
                [block(4), block(5)].concat(),
            ),
            (
                RecordBody::Data {
                    offset: 9 * BS,
                    len: BS as usize,
                },
                carried,
            ),
            (
                RecordBody::Zero {
                    offset: 700 * BS,
                    len: 3 * BS,
                },
                Vec::new(),
            ),
        ];
        (bytes, olds, records)
    }

    /// Checks all of `rep` against `olds` and `records` with `threads`.
    fn check(
        rep: &Mem,
        olds: &[Option<Entry>],
        records: &RecordList,
        threads: usize,
    ) -> Result<CheckReport, Error> {
        check_destination(
            &[rep],
            0..rep.end(),
            BS as u32,
            None,
            &mut Olds(olds.to_vec()),
            &mut Records(records.clone(), 0),
            threads,
            &NoProgress,
        )
    }

    #[test]
    fn every_number_of_readers_judges_alike() {
        let (bytes, olds, records) = scenario();
        let end = bytes.len() as u64;
        let rep = Mem::new(bytes);
        let reports: Vec<CheckReport> = (0..=6)
            .map(|threads| check(&rep, &olds, &records, threads).unwrap())
            .collect();
        let first = &reports[0];
        assert_eq!(first.blocks, end / BS);
        assert_eq!(first.bytes_read, end);
        assert_eq!(first.explained, 1);
        assert_eq!(first.unknown_overwritten, 1);
        assert_eq!(
            first.carried.as_slice(),
            &[super::super::Span {
                offset: 9 * BS,
                len: BS
            }]
        );
        let kept: Vec<u64> = first.kept.as_slice().iter().map(|s| s.offset).collect();
        assert_eq!(kept, vec![600 * BS, end - BS]);
        for r in &reports {
            assert_eq!(r, first);
        }
    }

    #[test]
    fn a_read_error_in_any_stride_is_returned() {
        let (bytes, olds, records) = scenario();
        let end = bytes.len() as u64;
        for fail_at in [0, CHECK_STRIDE + 5, end - 1] {
            let rep = Mem {
                fail_at: Some(fail_at),
                ..Mem::new(bytes.clone())
            };
            for threads in [1, 2, 4] {
                let e = check(&rep, &olds, &records, threads).unwrap_err();
                assert!(e.to_string().contains("injected read error"), "{e}");
            }
        }
    }

    #[test]
    fn a_record_error_stops_the_readers() {
        struct Failing;
        impl RecordSource for Failing {
            fn next_record(&mut self) -> Result<Option<(RecordBody, &[u8])>, Error> {
                Err(Error::WriterStopped)
            }
        }
        let (bytes, olds, _) = scenario();
        let end = bytes.len() as u64;
        let rep = Mem::new(bytes);
        let e = check_destination(
            &[&rep],
            0..end,
            BS as u32,
            None,
            &mut Olds(olds),
            &mut Failing,
            3,
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(e, Error::WriterStopped));
    }
}
