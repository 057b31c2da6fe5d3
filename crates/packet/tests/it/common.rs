//! Shared builders: sample packets, states and requests.

use poolsync_packet::state::{Applied, Destination, State, MAX_APPLIED};
use poolsync_packet::*;

/// A record to put into a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    /// Data blocks at a logical offset.
    Data(u64, Vec<u8>),
    /// Zero blocks at a logical offset.
    Zero(u64, u32),
}

pub const KEY: Key = [0x5a; 32];

pub fn meta(block_size: u32, compression: Compression) -> PacketMeta {
    PacketMeta {
        packet_id: [0x11; 16],
        poolset_uuid: [0x22; 16],
        lineage: [0x33; 16],
        timeline: 3,
        history: vec![
            Fork {
                timeline: 2,
                parent: 1,
                epoch: 4,
            },
            Fork {
                timeline: 3,
                parent: 2,
                epoch: 6,
            },
        ],
        base_epoch: 5,
        new_epoch: 9,
        block_size,
        range: 0..u64::from(block_size) * 1024,
        created: 1_700_000_000,
        comment: "test packet".into(),
        destinations: vec!["site-b".into(), "site-c".into()],
        source: "/pools/site-a/pool.set".into(),
        rewind: None,
        compression,
    }
}

/// Bytes that compress well, poorly, or are zero, by `kind`.
pub fn block_bytes(len: usize, kind: u8, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| match kind % 3 {
            0 => 0,
            1 => (i / 16) as u8 ^ seed as u8,
            _ => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            }
        })
        .collect()
}

/// Encodes `records` into files of at most `max_size` bytes (a file may
/// exceed it only when one record alone does).
pub fn build(
    meta: &PacketMeta,
    key: Option<&Key>,
    records: &[Rec],
    max_size: u64,
) -> (Vec<Vec<u8>>, PacketSummary) {
    let mut enc = PacketEncoder::new(meta.clone(), key).unwrap();
    let mut files = Vec::new();
    let mut file = enc.start_file().unwrap();
    for r in records {
        let prepared = match r {
            Rec::Data(off, data) => enc.prepare_data(*off, data).unwrap(),
            Rec::Zero(off, blocks) => enc.prepare_zero(*off, *blocks).unwrap(),
        };
        if !enc.fits(&prepared, max_size) {
            file.extend_from_slice(&enc.end_file().unwrap());
            files.push(std::mem::take(&mut file));
            file = enc.start_file().unwrap();
        }
        enc.write_record(prepared, &mut file).unwrap();
    }
    let (trailer, summary) = enc.finish().unwrap();
    file.extend_from_slice(&trailer);
    files.push(file);
    (files, summary)
}

/// Reads a packet back: every record with its data.
pub fn read(
    files: &[Vec<u8>],
    key: Option<&Key>,
    block_size: u32,
) -> Result<(Vec<Rec>, PacketSummary), (usize, Error)> {
    let slices: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let mut out = Vec::new();
    let summary = verify_slices(&slices, key, |body, data| match *body {
        RecordBody::Data { offset, .. } => out.push(Rec::Data(offset, data.to_vec())),
        RecordBody::Zero { offset, len } => {
            out.push(Rec::Zero(offset, (len / u64::from(block_size)) as u32))
        }
    })?;
    Ok((out, summary))
}

/// A packet of three or four files with every kind of record, 512-byte
/// blocks so that the files stay small.
pub fn sample_packet(
    key: Option<&Key>,
    compression: Compression,
    packet_id: u8,
) -> (PacketMeta, Vec<Rec>, Vec<Vec<u8>>) {
    let mut m = meta(512, compression);
    m.packet_id = [packet_id; 16];
    let records = vec![
        Rec::Data(0, block_bytes(1024, 1, 1)),
        Rec::Zero(1024, 3),
        Rec::Data(4096, block_bytes(512, 2, 2)),
        Rec::Data(8192, block_bytes(2048, 1, 3)),
        Rec::Zero(16384, 100),
        Rec::Data(16384 + 51200, block_bytes(1536, 2, 4)),
        Rec::Data(100_000 - 100_000 % 512, block_bytes(512, 1, 5)),
    ];
    let (files, _) = build(&m, key, &records, 1200);
    (m, records, files)
}

/// Byte ranges of the records of one file, found through the public decoders.
pub fn record_spans(file: &[u8], key: Option<&Key>) -> Vec<std::ops::Range<usize>> {
    let header = decode_file_header(file, key).unwrap();
    let end = file.len() - TRAILER_LEN;
    let mut at = header.len;
    let mut spans = Vec::new();
    while at < end {
        let r = decode_record_header(&file[at..], at as u64, &header).unwrap();
        let len = r.encoded_len() as usize;
        spans.push(at..at + len);
        at += len;
    }
    spans
}

/// A state with a realistic destination table (8) and a full applied log.
pub fn full_state(block_size: u32, pool_size: u64) -> State {
    let destinations = (0..8)
        .map(|i| Destination {
            name: format!("replica-{i:02}.site{i}.example.org"),
            timeline: 2,
            epoch: 1000 + i,
            last_export: 1_700_000_000 + u64::from(i),
        })
        .collect();
    let applied = (0..MAX_APPLIED as u32)
        .map(|i| Applied {
            packet_id: [i as u8; 16],
            timeline: 2,
            base_epoch: 900 + i,
            new_epoch: 901 + i,
            applied_at: 1_700_000_000 + u64::from(i),
            content_digest: [i as u8 ^ 0xa5; 32],
        })
        .collect();
    State {
        poolset_uuid: [0x22; 16],
        lineage: [0x33; 16],
        timeline: 2,
        history: vec![Fork {
            timeline: 2,
            parent: 1,
            epoch: 500,
        }],
        epoch: 1010,
        generation: 77,
        block_size,
        range: 0..pool_size,
        destinations,
        applied,
        follower: false,
    }
}

/// Recomputes every unsigned tag of a packet file, as someone forging an
/// unsigned packet would, so that the checks behind the tags are reached.
/// Walks the file with its declared lengths and stops where they leave it.
/// Record tags follow the version the file declares: version 1 covers the
/// payload, later versions the payload's BLAKE3 hash.
pub fn reseal_unsigned(f: &mut [u8]) {
    let tag = |parts: &[&[u8]]| {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(p);
        }
        let mut t = [0u8; 16];
        t.copy_from_slice(&h.finalize().as_bytes()[..16]);
        t
    };
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
        let stored = u32::from_le_bytes(f[at + 4..at + 8].try_into().unwrap()) as usize;
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
