//! Fuzz target: the reader of PMDK's bad block recovery files on arbitrary
//! bytes.
//!
//! Reading must never panic; the bad blocks of a complete file it accepts
//! must be sorted, non-empty, and written back as entries that read the
//! same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_engine::sync::badblocks::{format_entries, parse_recovery_file, RecoveryFile};

fuzz_target!(|data: &[u8]| {
    if let Ok(RecoveryFile::Complete(blocks)) = parse_recovery_file(data) {
        assert!(blocks.iter().all(|b| b.len > 0));
        assert!(blocks
            .windows(2)
            .all(|w| w[0].offset.saturating_add(w[0].len) <= w[1].offset));
        let mut text = format_entries(&blocks);
        text.extend_from_slice(b"0 0\n");
        assert_eq!(
            parse_recovery_file(&text).ok(),
            Some(RecoveryFile::Complete(blocks))
        );
    }
});
