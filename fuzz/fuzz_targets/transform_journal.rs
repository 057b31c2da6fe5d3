//! Fuzz target: the transform journal reader on arbitrary bytes.
//!
//! Reading must never panic; a journal it accepts must render to text that
//! reads back as the same journal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_engine::transform::parse_journal;

fuzz_target!(|data: &[u8]| {
    if let Ok(journal) = parse_journal(data) {
        let text = journal.render().expect("an accepted journal renders");
        assert_eq!(parse_journal(text.as_bytes()).ok(), Some(journal));
    }
});
