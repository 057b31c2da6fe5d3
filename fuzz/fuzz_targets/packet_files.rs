//! Fuzz target: the engine's reading of packet files, as `poolsync import`
//! and `poolsync packet` read them: through the storage (here the
//! simulated one), grouped into logical packets, every record verified
//! by `RecordStream`, and `describe` over the same files.
//!
//! The input is framed as for `packet_decode` (`fuzz/seeds/README.md`):
//! a flags byte (bit 0: read with the fixed test key), then up to eight
//! files, each but the last prefixed by its length as a little-endian u32.
//!
//! Nothing may panic; a file that is refused is refused as a packet file
//! naming its path; an accepted packet yields records in ascending logical
//! order with the bytes they declare, and `describe` agrees with it.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use poolsync_engine::packets::describe::describe;
use poolsync_engine::packets::files::{group, open_packet_file, RecordStream};
use poolsync_engine::Error;
use poolsync_packet::{Key, RecordBody};
use poolsync_pmem::sim::SimStorage;
use poolsync_pmem::Storage;

/// The key the signed seeds were made with (`crates/packet/tests/it`).
const KEY: Key = [0x5a; 32];

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
    let key = (flags & 1 != 0).then_some(&KEY);
    let storage = SimStorage::new();
    storage.add_dir(Path::new("/p")).expect("dir");
    let mut paths = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let path = PathBuf::from(format!("/p/f{i}"));
        storage.insert_file(&path, f, 0o644).expect("insert");
        paths.push(path);
    }
    let mut opened = Vec::new();
    for p in &paths {
        match open_packet_file(&storage, p, key) {
            Ok(f) => opened.push(f),
            Err(Error::PacketFile { path, .. }) => assert_eq!(&path, p),
            Err(e) => panic!("not a packet-file refusal: {e}"),
        }
    }
    let (packets, refusals) = group(opened);
    for r in &refusals {
        assert!(matches!(r.error, Error::PacketFile { .. }), "{}", r.error);
        assert!(paths.contains(&r.path));
    }
    let mut verified = 0;
    for packet in &packets {
        let mut stream = RecordStream::new(&storage, packet, key);
        let mut next = packet.meta().range.start;
        let mut ok = true;
        loop {
            match stream.read_next() {
                Ok(Some((body, bytes))) => {
                    let (offset, len) = match body {
                        RecordBody::Data { offset, len } => {
                            assert_eq!(bytes.len(), len);
                            (offset, len as u64)
                        }
                        RecordBody::Zero { offset, len } => {
                            assert!(bytes.is_empty());
                            (offset, len)
                        }
                    };
                    assert!(offset >= next && len > 0 && offset + len <= packet.meta().range.end);
                    next = offset + len;
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e, Error::PacketFile { .. }), "{e}");
                    ok = false;
                    break;
                }
            }
        }
        if ok && stream.finish().is_ok() {
            verified += 1;
        }
    }
    let described = describe(&storage, &paths, key).expect("describe reads through the storage");
    assert_eq!(described.packets.len(), packets.len());
    assert_eq!(
        described.packets.iter().filter(|p| p.verified).count(),
        verified
    );
});
