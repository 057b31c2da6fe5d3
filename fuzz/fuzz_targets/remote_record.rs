//! Fuzz target: the reader of the record of remote syncs
//! (`<set>.poolsync-remotes`) on arbitrary bytes.
//!
//! Reading must never panic; a record it accepts must render to text that
//! reads back as the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_engine::remote::record::{parse, render};

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = parse(data) {
        if let Ok(text) = render(&entries) {
            assert_eq!(parse(text.as_bytes()).ok(), Some(entries));
        }
    }
});
