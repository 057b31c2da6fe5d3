//! Fuzz target: the readers of the create journal
//! (`poolsync_engine::create::parse_journal`) and of an import's record of
//! the packet files it deletes (`poolsync_engine::packets::deleting::parse`)
//! on arbitrary bytes. The first byte picks the reader.
//!
//! Reading must never panic; a create journal it accepts must render to
//! text that reads back as the same journal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_engine::create::parse_journal;
use poolsync_engine::packets::deleting;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(journal) = parse_journal(bytes) {
            let text = journal.render().expect("an accepted journal renders");
            assert_eq!(parse_journal(text.as_bytes()).ok(), Some(journal));
        }
    } else {
        let _ = deleting::parse(bytes);
    }
});
