//! Progress of long runs: what the engine reports as it copies and
//! compares, for the command line to show.

/// Receives progress of a long run; every method may be called from
/// worker threads.
pub trait Progress: Send + Sync {
    /// A run (or a phase of one: comparing, then repairing) starts and will
    /// copy or compare `total` bytes; what was reported before is done.
    fn start(&self, total: u64) {
        let _ = total;
    }
    /// `bytes` more bytes were copied or compared.
    fn advance(&self, bytes: u64) {
        let _ = bytes;
    }
    /// The run is over.
    fn finish(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
