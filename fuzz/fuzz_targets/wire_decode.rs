//! Fuzz target: the receiving side of the remote protocol
//! (`poolsync-wire`) on an arbitrary byte stream from a peer.
//!
//! The input is a flags byte (bit 0: the stream comes from a client, else
//! from a server; bit 1: every CRC is recomputed before it is checked, as
//! a broken peer that computes them over garbage would, so that the
//! checks behind the CRC are reached), then the stream: a 32-byte greeting
//! and frames (`fuzz/seeds/README.md`).
//!
//! Nothing may panic; nothing is allocated beyond the frame limit; every
//! message that decodes encodes back to the same payload; every refusal of
//! a message names an offset inside its payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_wire::{
    decode_header, Codec, Error, Hello, Message, Role, FRAME_HEADER_LEN, HELLO_LEN, MAX_PAYLOAD,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, stream)) = data.split_first() else {
        return;
    };
    let role = if flags & 1 != 0 { Role::Client } else { Role::Server };
    let reseal = flags & 2 != 0;
    let mut stream = stream.to_vec();
    if reseal && stream.len() >= HELLO_LEN {
        let crc = crc32fast::hash(&stream[..24]);
        stream[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    let limit = match Hello::decode(&stream, role) {
        Ok(h) => h.max_payload,
        Err(Error::NotAGreeting { received }) => {
            assert!(received.len() <= HELLO_LEN);
            return;
        }
        Err(_) => MAX_PAYLOAD,
    };
    let mut at = HELLO_LEN.min(stream.len());
    let mut codec = Codec::new();
    while stream.len() - at >= FRAME_HEADER_LEN {
        if reseal {
            let len = u32::from_le_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
            if let Some(end) = (at + FRAME_HEADER_LEN)
                .checked_add(len)
                .filter(|&e| e <= stream.len())
            {
                let mut h = crc32fast::Hasher::new();
                h.update(&stream[at..at + 12]);
                h.update(&stream[at + FRAME_HEADER_LEN..end]);
                let crc = h.finalize();
                stream[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
            }
        }
        let head: [u8; FRAME_HEADER_LEN] = stream[at..at + FRAME_HEADER_LEN].try_into().unwrap();
        let Ok(header) = decode_header(&head, limit) else {
            return;
        };
        assert!(header.stored_len <= limit && header.raw_len <= limit);
        let start = at + FRAME_HEADER_LEN;
        let Some(stored) = stream.get(start..start + header.stored_len as usize) else {
            return;
        };
        match codec.payload(&head, &header, stored) {
            Ok(payload) => {
                assert_eq!(payload.len(), header.raw_len as usize);
                match Message::decode(header.kind, &payload) {
                    Ok(m) => {
                        assert_eq!(m.kind(), header.kind);
                        assert_eq!(m.encode().expect("a decoded message encodes"), payload);
                    }
                    Err(e) => {
                        if let Some(off) = e.offset() {
                            assert!(off <= payload.len(), "{e}");
                        }
                        let _ = e.to_string();
                    }
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        at = start + header.stored_len as usize;
    }
});
