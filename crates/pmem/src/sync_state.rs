//! Lock-free bookkeeping that lets a fence skip `fdatasync` when nothing was
//! flushed since the last completed one.
//!
//! Every flush bumps a counter. A fence reads the counter *before* it syncs
//! and, once the sync has completed, records that value as synced. A fence
//! may skip the sync only if a completed sync already covers every flush
//! that happened before the fence began; two fences racing each other may
//! both sync, which costs time but never durability.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Flush and sync counters of one open file.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    /// Number of flushes so far (plus one for a freshly created file, whose
    /// allocation itself must reach the disk).
    flushed: AtomicU64,
    /// The `flushed` value covered by the last completed sync.
    synced: AtomicU64,
    /// Set once a sync failed; see `Error::SyncPoisoned`.
    poisoned: AtomicBool,
}

impl SyncState {
    /// State for a file that starts with nothing to persist.
    pub(crate) fn clean() -> Self {
        Self::default()
    }

    /// State for a file whose creation (size, allocation) is not durable yet.
    pub(crate) fn dirty() -> Self {
        let state = Self::default();
        state.note_flush();
        state
    }

    /// Records that some written range must be persisted by the next fence.
    pub(crate) fn note_flush(&self) {
        self.flushed.fetch_add(1, Ordering::AcqRel);
    }

    /// Starts a fence: `Some(target)` when a sync is needed, to be passed to
    /// [`SyncState::end_fence`] once it succeeded; `None` when every flush
    /// made so far is already durable.
    pub(crate) fn begin_fence(&self) -> Option<u64> {
        let target = self.flushed.load(Ordering::Acquire);
        (self.synced.load(Ordering::Acquire) < target).then_some(target)
    }

    /// Records that a sync begun at `target` completed.
    pub(crate) fn end_fence(&self, target: u64) {
        self.synced.fetch_max(target, Ordering::AcqRel);
    }

    /// Records that a sync failed; every later fence must fail too.
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_state_needs_no_sync_until_a_flush() {
        let s = SyncState::clean();
        assert_eq!(s.begin_fence(), None);
        s.note_flush();
        let t = s.begin_fence().expect("a flush needs a sync");
        s.end_fence(t);
        assert_eq!(s.begin_fence(), None);
    }

    #[test]
    fn created_file_needs_one_sync() {
        let s = SyncState::dirty();
        let t = s.begin_fence().expect("creation needs a sync");
        s.end_fence(t);
        assert_eq!(s.begin_fence(), None);
    }

    #[test]
    fn flush_during_a_sync_is_not_covered_by_it() {
        let s = SyncState::clean();
        s.note_flush();
        let t = s.begin_fence().expect("sync needed");
        // A flush lands while the sync is running: the sync may not cover it.
        s.note_flush();
        s.end_fence(t);
        assert!(s.begin_fence().is_some());
    }

    #[test]
    fn a_fence_waits_for_a_racing_sync_instead_of_skipping() {
        let s = SyncState::clean();
        s.note_flush();
        let first = s.begin_fence().expect("sync needed");
        // A second fence starts before the first sync completed: it must not
        // skip, because the first sync is not known to be done.
        let second = s.begin_fence();
        assert_eq!(second, Some(first));
        s.end_fence(first);
        assert_eq!(s.begin_fence(), None);
    }

    #[test]
    fn older_completion_does_not_move_synced_backwards() {
        let s = SyncState::clean();
        s.note_flush();
        let old = s.begin_fence().expect("sync needed");
        s.note_flush();
        let new = s.begin_fence().expect("sync needed");
        s.end_fence(new);
        s.end_fence(old);
        assert_eq!(s.begin_fence(), None);
    }

    #[test]
    fn poison_sticks() {
        let s = SyncState::clean();
        assert!(!s.is_poisoned());
        s.poison();
        assert!(s.is_poisoned());
    }
}
