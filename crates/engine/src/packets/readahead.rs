//! Reading a logical range ahead of the code that judges it.
//!
//! The exporter's scan ([`super::scan`]) and the importer's check
//! ([`super::apply::check_destination`]) both read a whole range once, in
//! order, and need every block's digest (and the bytes of a few blocks,
//! which they read again). [`read_ahead`] starts reader threads that take
//! the range's strides in turn (reader `k` of `n` reads strides `k`,
//! `k + n`, ...), read each stride from every endpoint given and hash each
//! block; the caller takes the strides' digests in logical order from
//! [`Strides`], and each goes back to its reader when the caller moves
//! past it, so a reader holds at most two strides.
//!
//! The readers keep no bytes: each reads 128 KiB at a time into one
//! buffer of its own and hashes it while it is still in the core's cache.
//! Keeping every stride's bytes for the caller wrote the whole range to
//! memory once more only for the caller to look at a tenth of it: the
//! exporter now reads the blocks it ships again (a tenth of the range at
//! most in the benchmark, from the page cache), the checker the rare block
//! it must compare byte by byte.
//!
//! Why several readers: one core copies from the page cache at a few GB/s,
//! well below what the memory gives, so two readers read a warm range
//! about twice as fast as one (1 GiB read and hashed: 0.115 s on two
//! threads, 0.17 s on one, on the 2-CPU machine of docs/performance.md).
//!
//! Why one reader more than the worker threads asked for (when more than
//! one is): a reader whose stride is done waits until the consumer takes
//! it, and the consumer waits for the stride of the reader whose turn it
//! is; with as many readers as CPUs, a CPU often sits idle through such a
//! wait. One more keeps them busy: on the 2-CPU machine of
//! docs/performance.md, three readers took the 10 % import from 0.33 s to
//! 0.27 s and the export from 0.26 s to 0.24 s (medians of 5 alternating
//! runs each).

use std::ops::Range;
use std::sync::mpsc;

use crate::endpoint::{digest, Digest, Endpoint};
use crate::Error;

/// Reader threads at most: reads from the page cache or a disk gain
/// nothing from more, and each holds two strides.
pub const MAX_READERS: usize = 4;

/// Strides per reader in flight: one being read, one queued or judged.
const BUFFERS_PER_READER: usize = 2;

/// Bytes read and hashed at a time: small enough that the hash finds them
/// still in the core's cache where the read left them (after a read of
/// megabytes it would fetch them from memory again).
const PIECE: usize = 128 << 10;

/// One stride of every endpoint, read and hashed.
#[derive(Debug, Default)]
pub struct Stride {
    /// Its first logical byte.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Per endpoint, in the order given: the digest of each block.
    digests: Vec<Vec<Digest>>,
}

impl Stride {
    /// Endpoint `i`'s digest of each block of the stride.
    pub fn digests(&self, i: usize) -> Option<&[Digest]> {
        self.digests.get(i).map(Vec::as_slice)
    }
}

/// Reads `len` bytes of `source` at `pos`, 128 KiB at a time
/// through `piece`, and appends the digest of each `bs`-byte block to
/// `digests`.
fn read_and_hash(
    source: &dyn Endpoint,
    pos: u64,
    len: u64,
    bs: usize,
    piece: &mut Vec<u8>,
    digests: &mut Vec<Digest>,
) -> Result<(), Error> {
    let bs = bs.max(1);
    let step = (PIECE / bs).max(1) * bs;
    digests.reserve(usize::try_from(len).unwrap_or(0).div_ceil(bs));
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(step as u64)).unwrap_or(step);
        piece.resize(n.max(piece.len()), 0);
        let buf = piece.get_mut(..n).ok_or(Error::WriterStopped)?;
        source.read(pos + done, buf)?;
        digests.extend(buf.chunks(bs).map(digest));
        done += n as u64;
    }
    Ok(())
}

/// The reader threads for `threads` worker threads: one more when there
/// are several (see the module documentation), at most [`MAX_READERS`].
pub fn readers_for(threads: usize) -> usize {
    match threads {
        0 | 1 => 1,
        n => n.saturating_add(1).min(MAX_READERS),
    }
}

/// Reads `range` of every one of `endpoints` with [`readers_for`]`(threads)`
/// reader threads in strides of `stride` bytes (rounded to whole
/// blocks of `block_size`) and gives `consume` the strides in order (see
/// the module documentation). Returns what `consume` returns; the readers
/// stop as soon as it does.
pub fn read_ahead<T>(
    endpoints: &[&dyn Endpoint],
    range: Range<u64>,
    block_size: u64,
    stride: u64,
    threads: usize,
    consume: impl FnOnce(&mut Strides) -> Result<T, Error>,
) -> Result<T, Error> {
    let bs = block_size.max(1);
    let stride = (stride / bs).max(1) * bs;
    let readers = readers_for(threads);
    std::thread::scope(|scope| {
        // Created here, so that returning early drops the consumer's ends
        // and the readers stop instead of waiting for ever.
        let mut fulls = Vec::with_capacity(readers);
        let mut empties = Vec::with_capacity(readers);
        for k in 0..readers {
            let (full_tx, full_rx) = mpsc::sync_channel::<Result<Stride, Error>>(1);
            let (empty_tx, empty_rx) = mpsc::channel::<Stride>();
            for _ in 0..BUFFERS_PER_READER {
                let _ = empty_tx.send(Stride::default());
            }
            fulls.push(full_rx);
            empties.push(empty_tx);
            let turn = Turn {
                range: range.clone(),
                stride,
                first: k as u64,
                every: readers as u64,
            };
            scope.spawn(move || read_strides(endpoints, &turn, bs, &full_tx, &empty_rx));
        }
        let mut strides = Strides {
            current: None,
            next: 0,
            end: range.end,
            pos: range.start,
            fulls,
            empties,
        };
        consume(&mut strides)
    })
}

/// The strides of a range one reader takes: number `first`, then every
/// `every`th.
struct Turn {
    range: Range<u64>,
    stride: u64,
    first: u64,
    every: u64,
}

/// A reader thread: reads and hashes its strides of every endpoint in
/// turn.
fn read_strides(
    endpoints: &[&dyn Endpoint],
    turn: &Turn,
    bs: u64,
    full: &mpsc::SyncSender<Result<Stride, Error>>,
    empty: &mpsc::Receiver<Stride>,
) {
    let range = &turn.range;
    let mut pos = range
        .start
        .saturating_add(turn.first.saturating_mul(turn.stride));
    let mut piece = Vec::new();
    while pos < range.end {
        let Ok(mut s) = empty.recv() else {
            return;
        };
        let n = (range.end - pos).min(turn.stride);
        s.offset = pos;
        s.len = n;
        s.digests.resize_with(endpoints.len(), Default::default);
        let read = endpoints
            .iter()
            .zip(&mut s.digests)
            .try_for_each(|(source, digests)| {
                digests.clear();
                read_and_hash(*source, pos, n, bs as usize, &mut piece, digests)
            });
        let failed = read.is_err();
        if full.send(read.map(|()| s)).is_err() || failed {
            return;
        }
        pos = pos.saturating_add(turn.stride.saturating_mul(turn.every));
    }
}

/// The consumer's side of the readers: the strides in logical order.
#[derive(Debug)]
pub struct Strides {
    current: Option<Stride>,
    /// The reader whose stride comes next.
    next: usize,
    /// The end of the range, and of the strides taken so far.
    end: u64,
    pos: u64,
    fulls: Vec<mpsc::Receiver<Result<Stride, Error>>>,
    empties: Vec<mpsc::Sender<Stride>>,
}

impl Strides {
    /// The next stride, or `None` after the last; the one before goes back
    /// to its reader.
    pub fn next_stride(&mut self) -> Result<Option<&Stride>, Error> {
        if self.pos >= self.end {
            self.give_back();
            return Ok(None);
        }
        self.advance()?;
        Ok(self.current.as_ref())
    }

    /// The stride holding logical byte `at`; bytes are asked for in
    /// ascending order.
    pub fn holding(&mut self, at: u64) -> Result<&Stride, Error> {
        while !self
            .current
            .as_ref()
            .is_some_and(|s| at >= s.offset && at < s.offset + s.len)
        {
            if self.pos >= self.end {
                // Past the range, or behind the stride at hand.
                return Err(Error::WriterStopped);
            }
            self.advance()?;
        }
        self.current.as_ref().ok_or(Error::WriterStopped)
    }

    /// Takes the next stride from its reader and gives the current one
    /// back.
    fn advance(&mut self) -> Result<(), Error> {
        let from = self.next;
        let next = self
            .fulls
            .get(from)
            .ok_or(Error::WriterStopped)?
            .recv()
            .map_err(|_| Error::WriterStopped)??;
        self.give_back();
        self.next = (from + 1) % self.fulls.len();
        self.pos = next.offset + next.len;
        self.current = Some(next);
        Ok(())
    }

    /// Gives the current stride back to the reader that read it.
    fn give_back(&mut self) {
        if let Some(done) = self.current.take() {
            // The reader before `next` read it.
            let owner = (self.next + self.fulls.len() - 1) % self.fulls.len();
            if let Some(tx) = self.empties.get(owner) {
                let _ = tx.send(done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open::OpenReplica;
    use poolsync_pmem::sim::{SimFile, SimStorage};
    use poolsync_pmem::{Access, Storage};
    use std::path::Path;

    const BS: u64 = 4096;

    /// A one-part replica of `blocks` blocks, block `b` filled with `b`.
    fn source(blocks: u64) -> (SimStorage, OpenReplica<SimFile>) {
        let s = SimStorage::new();
        s.add_dir(Path::new("/p")).unwrap();
        let bytes: Vec<u8> = (0..blocks * BS).map(|i| (i / BS) as u8).collect();
        s.insert_file(Path::new("/p/f"), &bytes, 0o644).unwrap();
        let f = s.open(Path::new("/p/f"), Access::ReadOnly).unwrap();
        let rep = OpenReplica::single_file(0, "src".into(), "/p/f".into(), blocks * BS, Some(f));
        (s, rep)
    }

    #[test]
    fn every_number_of_readers_hands_the_strides_over_in_order() {
        let (_s, rep) = source(67);
        for threads in 0..=6 {
            // Strides of 5 blocks (the last one 2), from block 1.
            let seen = read_ahead(&[&rep, &rep], BS..67 * BS, BS, 5 * BS, threads, |strides| {
                let mut seen = Vec::new();
                while let Some(s) = strides.next_stride()? {
                    let all: Vec<_> = (0..3).filter_map(|i| s.digests(i)).collect();
                    assert_eq!(all.len(), 2);
                    for digests in all {
                        assert_eq!(digests.len() as u64, s.len / BS);
                        for (i, d) in digests.iter().enumerate() {
                            let b = s.offset / BS + i as u64;
                            assert_eq!(*d, digest(&vec![b as u8; BS as usize]));
                        }
                    }
                    seen.push((s.offset, s.len));
                }
                // After the end, still the end.
                assert!(strides.next_stride()?.is_none());
                Ok(seen)
            })
            .unwrap();
            let want: Vec<(u64, u64)> = (0..14)
                .map(|k| (BS + k * 5 * BS, if k == 13 { 1 } else { 5 } * BS))
                .collect();
            assert_eq!(seen, want, "{threads} threads");
        }
    }

    #[test]
    fn one_reader_more_than_several_workers_and_never_more_than_four() {
        let readers: Vec<usize> = (0..=6).map(readers_for).collect();
        assert_eq!(readers, vec![1, 1, 3, 4, 4, 4, 4]);
    }

    #[test]
    fn holding_finds_each_block_and_refuses_one_behind_or_past_the_end() {
        let (_s, rep) = source(40);
        read_ahead(&[&rep], 0..40 * BS, BS, 3 * BS, 2, |strides| {
            for b in [0u64, 1, 2, 3, 7, 8, 30, 39] {
                let s = strides.holding(b * BS + 17)?;
                assert!(s.offset <= b * BS && b * BS < s.offset + s.len);
            }
            assert!(strides.holding(5 * BS).is_err());
            Ok(())
        })
        .unwrap();
        read_ahead(&[&rep], 0..40 * BS, BS, 3 * BS, 3, |strides| {
            assert!(strides.holding(40 * BS).is_err());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn the_consumer_stopping_early_stops_the_readers() {
        let (_s, rep) = source(200);
        for threads in [1, 2, 4] {
            let e = read_ahead(&[&rep], 0..200 * BS, BS, BS, threads, |strides| {
                strides.next_stride()?;
                Err::<(), _>(Error::WriterStopped)
            })
            .unwrap_err();
            assert!(matches!(e, Error::WriterStopped));
        }
    }
}
