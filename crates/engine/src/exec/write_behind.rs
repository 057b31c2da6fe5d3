//! Write-behind for block repair: the comparing workers hand the differing
//! runs they find to one writer thread and go on comparing.
//!
//! Writing a repaired block through the page cache costs far more than
//! copying it: the file system takes the inode's lock (so two workers
//! writing one part wait for each other), and a block whose page is being
//! written back waits for that. On the scattered benchmark the workers
//! spent more time in `pwrite` than in comparing. One writer thread, fed
//! through a bounded queue, takes those waits off the workers.
//!
//! Order and durability: the writer writes and flushes the runs of each
//! stride in the order the worker found them, and the batch's fences come
//! only after the writer has finished, so no header that follows the batch
//! can become durable before its data. Whole copies in the same batch are
//! written by the workers themselves, so the copies' writes interleave
//! with the writer's; nothing in the crash model depends on the order of
//! writes within a batch, only on the fences after it. With one worker
//! there is no writer thread ([`Queue::inline`]): repairs are written as
//! they are found, so a run's persistence events come in the same order
//! every time (which the crash-point tests rely on).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::endpoint::Endpoint;
use crate::Error;

/// Bytes of repairs the queue may hold (besides the one being written).
pub(crate) const QUEUE_BYTES: usize = 32 << 20;

/// The differing runs of one stride of one endpoint.
#[derive(Debug)]
pub(crate) struct Repair {
    /// The endpoint written (its number in the plan).
    endpoint: usize,
    /// The source's bytes of every run, one after the other.
    bytes: Vec<u8>,
    /// `(logical offset, length)` of each run, in the order of `bytes`.
    runs: Vec<(u64, usize)>,
}

impl Repair {
    pub(crate) fn new(endpoint: usize) -> Self {
        Repair {
            endpoint,
            bytes: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// Adds a run: `data` goes to logical `offset`.
    pub(crate) fn push(&mut self, offset: u64, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.runs.push((offset, data.len()));
    }

    /// The ranges of its runs.
    pub(crate) fn ranges(&self) -> impl Iterator<Item = crate::compare::LogicalRange> + '_ {
        self.runs
            .iter()
            .map(|&(at, len)| crate::compare::LogicalRange::new(at, len as u64))
    }

    /// Bytes to write.
    pub(crate) fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// Where workers send their repairs: a queue to the writer thread, or
/// straight to the endpoints.
pub(crate) enum Queue<'a> {
    /// To the writer thread.
    Thread(SyncSender<Repair>),
    /// Written at once, by the caller.
    Inline(&'a [&'a dyn Endpoint]),
}

impl<'a> Queue<'a> {
    /// A queue for repairs of at most `stride` bytes each, and its receiving
    /// end for [`write_all`].
    pub(crate) fn new(stride: usize) -> (Queue<'a>, Receiver<Repair>) {
        let depth = (QUEUE_BYTES / stride.max(1)).max(1);
        let (tx, rx) = sync_channel(depth);
        (Queue::Thread(tx), rx)
    }

    /// No writer thread: every repair is written when it is sent.
    pub(crate) fn inline(table: &'a [&'a dyn Endpoint]) -> Queue<'a> {
        Queue::Inline(table)
    }

    /// Hands `repair` to the writer, waiting while the queue is full, or
    /// writes it. A queue fails only when the writer has stopped, after an
    /// error of its own, which the caller reports instead.
    pub(crate) fn send(&self, repair: Repair) -> Result<(), Error> {
        if repair.is_empty() {
            return Ok(());
        }
        match self {
            Queue::Thread(tx) => tx.send(repair).map_err(|_| Error::WriterStopped),
            Queue::Inline(table) => write_one(table, repair),
        }
    }
}

/// The writer thread: writes and flushes every run it receives, in order,
/// until every [`Queue`] is dropped. Stops at the first error (dropping the
/// receiver, so that workers stop too) and returns it.
pub(crate) fn write_all(table: &[&dyn Endpoint], rx: Receiver<Repair>) -> Result<(), Error> {
    for repair in rx {
        write_one(table, repair)?;
    }
    Ok(())
}

/// Writes and flushes the runs of one repair, in order.
fn write_one(table: &[&dyn Endpoint], repair: Repair) -> Result<(), Error> {
    let ep = table
        .get(repair.endpoint)
        .copied()
        .ok_or(Error::WriterStopped)?;
    let mut start = 0usize;
    for (at, len) in repair.runs {
        let end = start + len;
        let data = repair.bytes.get(start..end).unwrap_or_default();
        ep.write(at, data)?;
        ep.flush(at, len as u64)?;
        start = end;
    }
    Ok(())
}
