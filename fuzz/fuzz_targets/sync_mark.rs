//! Fuzz target: the decoder of the sync mark a remote replica's host
//! keeps beside its pool set file (`<set>.poolsync-synced`,
//! docs/wire.md section 9) on arbitrary bytes.
//!
//! Decoding must never panic; a mark it accepts must encode back to the
//! same 72 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_wire::SyncMark;

fuzz_target!(|data: &[u8]| {
    if let Ok(mark) = SyncMark::decode(data) {
        assert_eq!(&mark.encode()[..], data);
    }
});
