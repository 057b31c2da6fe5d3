//! Fuzz target: the libpmemobj heap walker on arbitrary metadata.
//!
//! The input is a sparse pool image, zero wherever it says nothing:
//!
//! * byte 0 picks the pool size (bits 0-1: 8 MiB, 24 MiB, 64 MiB or two
//!   zones of about 16 GiB) and options: bit 2 starts from the metadata of
//!   a fresh pool (descriptor, lanes, heap header), bit 3 repairs the
//!   descriptor checksum after the records are applied so that the walk
//!   gets past it, bit 4 makes record offsets relative to zone 0's header
//!   instead of logical 0;
//! * then records: a 5-byte little-endian offset (taken modulo the pool
//!   size), a length byte, and that many bytes written there.
//!
//! The walk must never panic and never read outside `[0, pool_size)` (the
//! read callback asserts it); when it succeeds its ranges must be sorted,
//! disjoint, inside the pool and resolvable by `owner_of`.
#![no_main]

use std::convert::Infallible;

use libfuzzer_sys::fuzz_target;
use poolsync_header::heap::{walk, zone_offset, Owner, ZONE_MAX_SIZE};
use poolsync_header::{
    obj_initial_image, ObjDescriptor, OBJ_DESC_LEN, OBJ_DESC_OFF, OBJ_HEAP_OFFSET,
    ZONE_METADATA_SIZE,
};

const SIZES: [u64; 4] = [
    8 << 20,
    24 << 20,
    64 << 20,
    OBJ_HEAP_OFFSET + 1024 + ZONE_MAX_SIZE + ZONE_METADATA_SIZE + 8 * (1 << 18) + 3072,
];

struct Image {
    size: u64,
    records: Vec<(u64, Vec<u8>)>,
}

impl Image {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        let end = offset
            .checked_add(buf.len() as u64)
            .expect("read range overflows");
        assert!(
            end <= self.size,
            "read {offset:#x}..{end:#x} outside the pool"
        );
        buf.fill(0);
        for (at, bytes) in &self.records {
            let rec_end = at + bytes.len() as u64;
            let from = offset.max(*at);
            let to = end.min(rec_end);
            if from < to {
                let dst = (from - offset) as usize;
                let src = (from - at) as usize;
                let n = (to - from) as usize;
                buf[dst..dst + n].copy_from_slice(&bytes[src..src + n]);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let size = SIZES[usize::from(head & 3)];
    let mut image = Image {
        size,
        records: Vec::new(),
    };
    if head & 4 != 0 {
        for w in obj_initial_image(size, "fuzz").expect("valid pool size") {
            image.records.push((w.offset, w.bytes));
        }
    }
    let base = if head & 16 != 0 {
        zone_offset(OBJ_HEAP_OFFSET, 0).expect("small offset")
    } else {
        0
    };
    while rest.len() >= 6 {
        let mut off = [0u8; 8];
        off[..5].copy_from_slice(&rest[..5]);
        let len = usize::from(rest[5]);
        rest = &rest[6..];
        let take = len.min(rest.len());
        let at = (base + u64::from_le_bytes(off)) % size;
        let bytes = rest[..take].to_vec();
        rest = &rest[take..];
        // Keep records inside the pool so that the image itself is sane.
        let keep = (size - at).min(bytes.len() as u64) as usize;
        image.records.push((at, bytes[..keep].to_vec()));
    }

    let mut raw = vec![0u8; OBJ_DESC_LEN];
    image.read(OBJ_DESC_OFF, &mut raw);
    let mut desc = ObjDescriptor::decode(&raw).expect("descriptor buffer is long enough");
    if head & 8 != 0 {
        desc.checksum = desc.compute_checksum();
    }

    let result = walk(&desc, size, |off, buf: &mut [u8]| {
        image.read(off, buf);
        Ok::<(), Infallible>(())
    });
    if let Ok(map) = result {
        let mut prev_end = 0;
        for r in map.ranges() {
            assert!(r.len > 0 && r.offset >= prev_end && r.end() <= size);
            assert!(map.owner_of(r.offset).is_some());
            assert!(map.owner_of(r.end() - 1).is_some());
            if let Owner::Object {
                offset, size: s, ..
            } = r.owner
            {
                assert_eq!(offset + s, r.end());
            }
            prev_end = r.end();
        }
        assert_eq!(map.objects().count() as u64, map.stats().objects);
    }
});
