//! Write-behind for block repair: the comparing workers hand the differing
//! runs they find to one writer thread and go on comparing.
//!
//! Writing a repaired block through the page cache costs far more than
//! copying it: the file system takes the inode's lock (so two workers
//! writing one part wait for each other), and a block whose page is being
//! written back waits for that. On the scattered benchmark the workers
//! spent more time in `pwrite` and `sync_file_range` than in comparing. One
//! writer thread, fed through a bounded queue, takes those waits off the
//! workers.
//!
//! Order and durability are unchanged: the writer writes and flushes each
//! run in the order one worker found them, exactly the calls the worker
//! made before, and the batch's fences come only after the writer has
//! finished. With one worker the sequence of writes and flushes is the same
//! as without write-behind, which the crash-point tests rely on.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use poolsync_pmem::PartFile;

use crate::open::OpenSet;
use crate::Error;

/// Bytes of repairs the queue may hold (besides the one being written).
pub(crate) const QUEUE_BYTES: usize = 32 << 20;

/// The differing runs of one stride of one part.
#[derive(Debug)]
pub(crate) struct Repair {
    replica: usize,
    part: usize,
    /// The source's bytes of every run, one after the other.
    bytes: Vec<u8>,
    /// `(file offset, length)` of each run, in the order of `bytes`.
    runs: Vec<(u64, usize)>,
}

impl Repair {
    pub(crate) fn new(replica: usize, part: usize) -> Self {
        Repair {
            replica,
            part,
            bytes: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// Adds a run: `data` goes to `file_offset` of the part.
    pub(crate) fn push(&mut self, file_offset: u64, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.runs.push((file_offset, data.len()));
    }

    /// Bytes to write.
    pub(crate) fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// Where workers send their repairs: a queue to the writer thread.
pub(crate) struct Queue {
    tx: SyncSender<Repair>,
}

impl Queue {
    /// A queue for repairs of at most `stride` bytes each, and its receiving
    /// end for [`write_all`].
    pub(crate) fn new(stride: usize) -> (Queue, Receiver<Repair>) {
        let depth = (QUEUE_BYTES / stride.max(1)).max(1);
        let (tx, rx) = sync_channel(depth);
        (Queue { tx }, rx)
    }

    /// Hands `repair` to the writer, waiting while the queue is full.
    /// Fails only when the writer has stopped, after an error of its own,
    /// which the caller reports instead.
    pub(crate) fn send(&self, repair: Repair) -> Result<(), Stopped> {
        if repair.is_empty() {
            return Ok(());
        }
        self.tx.send(repair).map_err(|_| Stopped)
    }
}

/// The writer stopped before the queue was closed.
#[derive(Debug)]
pub(crate) struct Stopped;

/// The writer thread: writes and flushes every run it receives, in order,
/// until every [`Queue`] is dropped. Stops at the first error (dropping the
/// receiver, so that workers stop too) and returns it.
pub(crate) fn write_all<F: PartFile>(set: &OpenSet<F>, rx: Receiver<Repair>) -> Result<(), Error> {
    for repair in rx {
        let file = super::execute::file_of(set, repair.replica, repair.part)?;
        let mut start = 0usize;
        for (at, len) in repair.runs {
            let end = start + len;
            let data = repair.bytes.get(start..end).unwrap_or_default();
            file.write_at(at, data)?;
            file.flush(at, len as u64)?;
            start = end;
        }
    }
    Ok(())
}
