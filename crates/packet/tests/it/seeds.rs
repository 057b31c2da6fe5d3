//! The committed fuzz seeds of `packet_decode` and `state_decode`.
//!
//! `POOLSYNC_UPDATE_SEEDS=1 cargo test -p poolsync-packet --test it seeds`
//! rewrites them; otherwise this checks that every committed seed is still
//! accepted whole, so that the fuzzers start from valid inputs after a
//! format change. The framing of the inputs is described in
//! `fuzz/seeds/README.md` and parsed by the fuzz targets.

use std::path::PathBuf;

use poolsync_packet::state::{Entry, State};
use poolsync_packet::*;

use crate::common::{full_state, sample_packet, KEY};

fn seeds_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target)
}

/// `packet_decode` input: a flags byte (bit 0: signed with the test key;
/// bit 1: reseal unsigned files first), then files, each but the last
/// prefixed by its u32 little-endian length.
fn frame_packet(flags: u8, files: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![flags];
    for (i, f) in files.iter().enumerate() {
        if i + 1 < files.len() {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    out
}

fn unframe_packet(input: &[u8]) -> (bool, Vec<&[u8]>) {
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
    (flags & 1 != 0, files)
}

fn packet_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (_, _, zstd) = sample_packet(None, Compression::Zstd, 1);
    let (_, _, lz4) = sample_packet(Some(&KEY), Compression::Lz4, 2);
    let (_, _, none) = sample_packet(None, Compression::None, 3);
    // A packet that honours a rewind request.
    let (mut m, records, _) = sample_packet(None, Compression::Lz4, 4);
    m.rewind = Some(Position {
        timeline: 1,
        epoch: 7,
    });
    let (rewind, _) = crate::common::build(&m, None, &records, 1200);
    // The same zstd packet in format version 1, which is still read.
    let v1: Vec<Vec<u8>> = zstd
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f[FILE_HDR_VERSION_OFF..FILE_HDR_VERSION_OFF + 2].copy_from_slice(&[1, 0]);
            crate::common::reseal_unsigned(&mut f);
            f
        })
        .collect();
    vec![
        ("v1-unsigned-zstd.bin", frame_packet(0, &v1)),
        ("unsigned-zstd.bin", frame_packet(0, &zstd)),
        ("rewind-lz4.bin", frame_packet(0, &rewind)),
        ("signed-lz4.bin", frame_packet(1, &lz4)),
        ("unsigned-stored.bin", frame_packet(0, &none)),
        ("resealed-zstd.bin", frame_packet(2, &zstd)),
    ]
}

fn state_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut state: State = full_state(512, 40 * 512);
    state.destinations.truncate(3);
    state.applied.truncate(2);
    state.follower = true;
    let (mut file, layout) = state.encode_head().unwrap();
    let entries: Vec<Entry> = (0..40u32)
        .map(|i| Entry::from_xxh3_128(u128::from(i) * 0x0123_4567_89ab_cdef, i * 20))
        .collect();
    file.extend_from_slice(&layout.encode_chunk(0, &entries).unwrap());
    let request = crate::rewind::sample(vec![
        BlockRange {
            offset: 0,
            blocks: 2,
        },
        BlockRange {
            offset: 1 << 20,
            blocks: 9,
        },
    ]);
    let with = |selector: u8, bytes: &[u8]| [&[selector][..], bytes].concat();
    vec![
        ("state-40-blocks.bin", with(0, &file)),
        (
            "rewind-unsigned.bin",
            with(1, &request.encode(None).unwrap()),
        ),
        (
            "rewind-signed.bin",
            with(2, &request.encode(Some(&KEY)).unwrap()),
        ),
        ("state-resealed.bin", with(3, &file)),
        (
            "rewind-resealed.bin",
            with(4, &request.encode(None).unwrap()),
        ),
    ]
}

fn accepted_packet(input: &[u8]) -> Result<(), String> {
    let (signed, files) = unframe_packet(input);
    verify_slices(&files, signed.then_some(&KEY), |_, _| {})
        .map(|_| ())
        .map_err(|(f, e)| format!("file {f}: {e}"))
}

fn accepted_state(input: &[u8]) -> Result<(), Error> {
    let (selector, bytes) = input.split_first().ok_or(Error::Misuse {
        api: "seed",
        problem: "empty",
    })?;
    match selector % 5 {
        0 => {
            let (_, layout) = State::decode_head(bytes)?;
            layout.check_file_len(bytes.len() as u64)?;
            for c in 0..layout.chunk_count() {
                let at = layout.chunk_offset(c) as usize;
                layout.decode_chunk(c, &bytes[at..at + layout.chunk_len(c)])?;
            }
            Ok(())
        }
        3 => accepted_state(&[&[0][..], bytes].concat()),
        1 | 4 => RewindRequest::decode(bytes, None).map(|_| ()),
        _ => RewindRequest::decode(bytes, Some(&KEY)).map(|_| ()),
    }
}

#[test]
fn fuzz_seeds_are_current() {
    let update = std::env::var_os("POOLSYNC_UPDATE_SEEDS").is_some();
    for (target, seeds) in [
        ("packet_decode", packet_seeds()),
        ("packet_files", packet_seeds()),
        ("state_decode", state_seeds()),
    ] {
        let dir = seeds_dir(target);
        for (name, bytes) in seeds {
            let path = dir.join(name);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("fuzz/seeds/{target}/{name}: {e}; run with POOLSYNC_UPDATE_SEEDS=1")
            });
            let verdict = if target != "state_decode" {
                accepted_packet(&committed)
            } else {
                accepted_state(&committed).map_err(|e| e.to_string())
            };
            if let Err(e) = verdict {
                panic!("fuzz/seeds/{target}/{name} is no longer accepted ({e}); run with POOLSYNC_UPDATE_SEEDS=1");
            }
        }
    }
}

#[test]
fn the_framing_round_trips() {
    let files = vec![vec![1, 2, 3], vec![], vec![9; 10]];
    let framed = frame_packet(1, &files);
    let (signed, back) = unframe_packet(&framed);
    assert!(signed);
    assert_eq!(back, files.iter().map(Vec::as_slice).collect::<Vec<_>>());
}
