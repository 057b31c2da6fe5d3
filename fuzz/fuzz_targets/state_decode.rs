//! Fuzz target: the state file and rewind request decoders of
//! `poolsync-packet` on arbitrary bytes.
//!
//! The first byte selects (modulo 5): 0 a state file, 1 an unsigned rewind
//! request, 2 a rewind request signed with the fixed key below, 3 a state
//! file and 4 an unsigned rewind request whose tags the target recomputes
//! first (as someone who can write the file would), so that mutations
//! reach the checks behind the tags. The rest is the file
//! (`fuzz/seeds/README.md`).
//!
//! Nothing may panic; a decoded head, chunk or request re-encodes to the
//! very bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_packet::state::{state_head_len, State, STATE_FIXED_LEN};
use poolsync_packet::{Key, RewindRequest, TAG_LEN};

/// The key the signed seeds were made with (`crates/packet/tests/it`).
const KEY: Key = [0x5a; 32];

/// The first 16 bytes of the BLAKE3 hash of `parts`, concatenated.
fn tag(parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
    t
}

/// Recomputes the tags of a state file (`docs/packet.md`, section 6).
fn reseal_state(b: &mut [u8]) {
    let Ok(len) = state_head_len(&b[..b.len().min(STATE_FIXED_LEN)]) else {
        return;
    };
    if len > b.len() {
        return;
    }
    let head_tag = tag(&[b"poolsync state v1 head\0", &b[..len - TAG_LEN]]);
    b[len - TAG_LEN..len].copy_from_slice(&head_tag);
    let Ok((_, layout)) = State::decode_head(b) else {
        return;
    };
    for c in 0..layout.chunk_count() {
        let at = layout.chunk_offset(c) as usize;
        let entries = layout.chunk_len(c) - TAG_LEN;
        if at + entries + TAG_LEN > b.len() {
            break;
        }
        let t = tag(&[
            b"poolsync state v1 chunk\0",
            &head_tag,
            &c.to_le_bytes(),
            &b[at..at + entries],
        ]);
        b[at + entries..at + entries + TAG_LEN].copy_from_slice(&t);
    }
}

/// Recomputes the tag of an unsigned rewind request (section 7).
fn reseal_rewind(b: &mut [u8]) {
    if let Ok(len) = RewindRequest::declared_len(b) {
        if len <= b.len() {
            let t = tag(&[b"poolsync rewind v1\0", &b[..len - TAG_LEN]]);
            b[len - TAG_LEN..len].copy_from_slice(&t);
        }
    }
}

fn check_state(bytes: &[u8]) {
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

fn check_rewind(bytes: &[u8], key: Option<&Key>) {
    let _ = RewindRequest::declared_len(bytes);
    if let Ok(request) = RewindRequest::decode(bytes, key) {
        let again = request.encode(key).expect("a decoded request re-encodes");
        assert_eq!(&again[..], bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => check_state(bytes),
        1 => check_rewind(bytes, None),
        2 => check_rewind(bytes, Some(&KEY)),
        3 => {
            let mut copy = bytes.to_vec();
            reseal_state(&mut copy);
            check_state(&copy);
        }
        _ => {
            let mut copy = bytes.to_vec();
            reseal_rewind(&mut copy);
            check_rewind(&copy, None);
        }
    }
});
