//! Fuzz target: the packet file decoders and the whole reading procedure of
//! `poolsync-packet` on arbitrary files.
//!
//! The input is a flags byte (bit 0: the files are read with the fixed key
//! below, otherwise without a key; bit 1, when unsigned: every tag is
//! recomputed first, as a forger of unsigned packets would, so that the
//! checks behind the tags are reached), then up to eight files, each but
//! the last prefixed by its length as a little-endian u32
//! (`fuzz/seeds/README.md`).
//!
//! Nothing may panic; every refusal names an offset or a part problem; a
//! decoded part-0 header of the current format version re-encodes to the
//! same bytes; an accepted packet
//! hands over records in ascending logical order with the bytes they
//! declare.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_packet::{
    decode_file_header, decode_record_header, decode_trailer, file_header_len, open_record,
    verify_slices, Error, Key, PacketEncoder, RecordBody, FILE_HEADER_MAX_LEN, MAX_RECORD_DATA,
    PACKET_VERSION,
    RECORD_HEADER_LEN, REC_STORED_LEN_OFF, REC_TAG_OFF, TRAILER_LEN, TRL_TAG_OFF,
};

/// The key the signed seeds were made with (`crates/packet/tests/it`).
const KEY: Key = [0x5a; 32];

/// The first 16 bytes of the BLAKE3 hash of `parts`, concatenated.
fn tag(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&h.finalize().as_bytes()[..16]);
    t
}

/// Recomputes the unsigned tags of a packet file (`docs/packet.md`,
/// section 1), following its declared lengths as far as they stay inside.
/// Record tags follow the declared version: version 1 covers the payload,
/// version 2 its BLAKE3 hash (section 3).
fn reseal(f: &mut [u8]) {
    let Ok(len) = file_header_len(f) else { return };
    if len > f.len() {
        return;
    }
    let header_tag = tag(&[b"poolsync packet v1 header\0", &f[..len - 16]]);
    f[len - 16..len].copy_from_slice(&header_tag);
    let Some(end) = f.len().checked_sub(TRAILER_LEN).filter(|&e| e >= len) else {
        return;
    };
    let mut at = len;
    while at + RECORD_HEADER_LEN <= end {
        let s = at + REC_STORED_LEN_OFF;
        let stored = u32::from_le_bytes([f[s], f[s + 1], f[s + 2], f[s + 3]]) as usize;
        let Some(next) = (at + RECORD_HEADER_LEN)
            .checked_add(stored)
            .filter(|&n| n <= end)
        else {
            break;
        };
        let payload = &f[at + RECORD_HEADER_LEN..next];
        let t = if f[8..10] == [1, 0] {
            tag(&[
                b"poolsync packet v1 record\0",
                &header_tag,
                &f[at..at + REC_TAG_OFF],
                payload,
            ])
        } else {
            tag(&[
                b"poolsync packet v2 record\0",
                &header_tag,
                &f[at..at + REC_TAG_OFF],
                blake3::hash(payload).as_bytes(),
            ])
        };
        f[at + REC_TAG_OFF..at + RECORD_HEADER_LEN].copy_from_slice(&t);
        at = next;
    }
    let t = tag(&[
        b"poolsync packet v1 trailer\0",
        &header_tag,
        &f[end..end + TRL_TAG_OFF],
    ]);
    f[end + TRL_TAG_OFF..].copy_from_slice(&t);
}

fn unframe(input: &[u8]) -> (u8, Vec<&[u8]>) {
    let (flags, mut rest) = input.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
    let mut files = Vec::new();
    while files.len() < 7 && rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > rest.len() - 4 {
            break;
        }
        files.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    files.push(rest);
    (flags, files)
}

fuzz_target!(|data: &[u8]| {
    let (flags, files) = unframe(data);
    let signed = flags & 1 != 0;
    let key = signed.then_some(&KEY);
    let resealed: Vec<Vec<u8>> = if !signed && flags & 2 != 0 {
        let mut copies: Vec<Vec<u8>> = files.iter().map(|f| f.to_vec()).collect();
        copies.iter_mut().for_each(|f| reseal(f));
        copies
    } else {
        Vec::new()
    };
    let files: Vec<&[u8]> = if resealed.is_empty() {
        files
    } else {
        resealed.iter().map(Vec::as_slice).collect()
    };

    // Each structure where a reader would look for it.
    for f in &files {
        let _ = file_header_len(f);
        let Ok(h) = decode_file_header(f, key) else {
            continue;
        };
        assert!(h.len <= f.len() && h.len <= FILE_HEADER_MAX_LEN);
        // The encoder writes the current version; an older one decodes
        // (and is read) but does not re-encode byte for byte.
        if h.part_index == 0 && h.version == PACKET_VERSION {
            let again = PacketEncoder::new(h.meta.clone(), key)
                .and_then(|mut enc| enc.start_file())
                .expect("a decoded header re-encodes");
            assert_eq!(&again[..], &f[..h.len]);
        }
        let rest = &f[h.len..];
        if let Ok(r) = decode_record_header(rest, h.len as u64, &h) {
            assert!(r.payload_len() <= MAX_RECORD_DATA);
            if let Some(payload) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + r.payload_len())
            {
                let mut out = vec![0u8; r.logical_len(h.meta.block_size) as usize];
                let _ = open_record(&h, &r, payload, key, &mut out);
            }
        }
        if let Some(at) = f.len().checked_sub(TRAILER_LEN) {
            let _ = decode_trailer(&f[at..], at as u64, &h, key);
        }
    }

    // The whole procedure.
    let mut records = 0u64;
    let mut next_offset = 0u64;
    let result = verify_slices(&files, key, |body, bytes| {
        records += 1;
        let (offset, len) = match *body {
            RecordBody::Data { offset, len } => {
                assert_eq!(bytes.len(), len);
                (offset, len as u64)
            }
            RecordBody::Zero { offset, len } => {
                assert!(bytes.is_empty());
                (offset, len)
            }
        };
        assert!(offset >= next_offset && len > 0);
        next_offset = offset + len;
    });
    match result {
        Ok(summary) => assert_eq!(summary.records, records),
        Err((file, err)) => {
            assert!(file < files.len());
            assert!(
                err.offset().is_some() || matches!(err, Error::Part(_)),
                "no offset: {err}"
            );
            assert!(
                !matches!(err, Error::Misuse { .. } | Error::BufferTooSmall { .. }),
                "the reading procedure misused the API: {err}"
            );
            let _ = err.to_string();
        }
    }
});
