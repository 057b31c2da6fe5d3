//! Fuzz target: the state file and rewind request decoders of
//! `poolsync-packet` on arbitrary bytes.
//!
//! The first byte selects (modulo 3): a state file, an unsigned rewind
//! request, or a rewind request signed with the fixed key below; the rest
//! is the file (`fuzz/seeds/README.md`).
//!
//! Nothing may panic; a decoded head, chunk or request re-encodes to the
//! very bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_packet::state::{state_head_len, State};
use poolsync_packet::{Key, RewindRequest};

/// The key the signed seeds were made with (`crates/packet/tests/it`).
const KEY: Key = [0x5a; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            let _ = state_head_len(bytes);
            let Ok((state, layout)) = State::decode_head(bytes) else {
                return;
            };
            let (again, again_layout) = state.encode_head().expect("a decoded head re-encodes");
            assert_eq!(again_layout, layout);
            assert_eq!(&again[..], &bytes[..layout.head_len as usize]);
            let _ = layout.check_file_len(bytes.len() as u64);
            for c in 0..layout.chunk_count() {
                let at = layout.chunk_offset(c) as usize;
                let Some(chunk) = bytes.get(at..at + layout.chunk_len(c)) else {
                    break;
                };
                if let Ok(entries) = layout.decode_chunk(c, chunk) {
                    let again = layout
                        .encode_chunk(c, &entries)
                        .expect("a decoded chunk re-encodes");
                    assert_eq!(&again[..], chunk);
                }
            }
        }
        which => {
            let key = (which == 2).then_some(&KEY);
            let _ = RewindRequest::declared_len(bytes);
            if let Ok(request) = RewindRequest::decode(bytes, key) {
                let again = request.encode(key).expect("a decoded request re-encodes");
                assert_eq!(&again[..], bytes);
            }
        }
    }
});
