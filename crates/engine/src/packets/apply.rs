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
/// timeline the packet's history does not have. `threads` workers read
/// and hash each stride.
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
    // The calling thread walks the records and judges every block while
    // the workers read: one thread of `threads` is taken already.
    let pool = super::scan::workers(threads.saturating_sub(1))?;
    let mut c = Checker {
        pool: pool.as_ref(),
        after_fork,
        replicas,
        bs: u64::from(block_size),
        first_block: range.start / u64::from(block_size),
        old,
        report: CheckReport::default(),
        buf: Vec::new(),
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
}

/// Bytes read from a replica at a time while checking.
const CHECK_STRIDE: u64 = 1 << 20;

struct Checker<'a> {
    pool: Option<&'a rayon::ThreadPool>,
    after_fork: Option<u32>,
    replicas: &'a [&'a dyn Endpoint],
    bs: u64,
    first_block: u64,
    old: &'a mut dyn OldEntries,
    report: CheckReport,
    buf: Vec<u8>,
    progress: &'a dyn Progress,
}

impl Checker<'_> {
    /// Reads `[offset, offset + len)` of every replica; `judge` gets each
    /// block's offset, bytes, entry (its digest now, stamp 0) and old
    /// entry and says whether it is a local change.
    fn walk(
        &mut self,
        start: u64,
        end: u64,
        mut judge: impl FnMut(u64, &[u8], Entry, Option<Entry>, &mut CheckReport),
    ) -> Result<(), Error> {
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(CHECK_STRIDE);
            let blocks = n / self.bs;
            let mut olds = Vec::with_capacity(blocks as usize);
            for b in 0..blocks {
                olds.push(
                    self.old
                        .entry((pos + b * self.bs) / self.bs - self.first_block)?,
                );
            }
            // The buffer only grows: a walk of one block after one of a
            // stride would zero a megabyte again for nothing.
            if self.buf.len() < n as usize {
                self.buf.resize(n as usize, 0);
            }
            for rep in self.replicas {
                let buf = &mut self.buf[..n as usize];
                let digests =
                    super::scan::read_and_hash(*rep, pos, buf, self.bs as usize, self.pool)?;
                self.report.bytes_read += n;
                for (b, (bytes, digest)) in buf.chunks(self.bs as usize).zip(digests).enumerate() {
                    self.report.blocks += 1;
                    let now = Entry::from_xxh3_128(digest, 0);
                    judge(
                        pos + b as u64 * self.bs,
                        bytes,
                        now,
                        olds[b],
                        &mut self.report,
                    );
                }
            }
            self.progress.advance(n);
            pos += n;
        }
        Ok(())
    }

    fn uncarried(&mut self, start: u64, end: u64) -> Result<(), Error> {
        let bs = self.bs;
        let fork = self.after_fork;
        self.walk(start, end, |at, _bytes, now, old, report| match old {
            Some(e) if now.digest == e.digest && fork.is_none_or(|f| e.stamp <= f) => {}
            _ => report.kept.push(at, bs),
        })
    }

    fn carried(&mut self, offset: u64, len: u64, data: &[u8]) -> Result<(), Error> {
        let bs = self.bs;
        self.walk(offset, offset + len, |at, bytes, new, old, report| {
            match old {
                Some(e) if e.digest == new.digest => return,
                None => {
                    report.unknown_overwritten += 1;
                    return;
                }
                Some(_) => {}
            }
            let theirs = if data.is_empty() {
                None
            } else {
                data.get((at - offset) as usize..(at - offset + bs) as usize)
            };
            let same = match theirs {
                Some(t) => t == bytes,
                None => bytes.iter().all(|&b| b == 0),
            };
            if same {
                report.explained += 1;
            } else {
                report.carried.push(at, bs);
            }
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
