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

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::OnceLock;

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

/// The image's page size: records are at most 255 bytes, so each touches
/// one or two pages.
const PAGE: u64 = 4096;

type Pages = BTreeMap<u64, Box<[u8; PAGE as usize]>>;

/// The metadata of a fresh pool of each size, built once: 3,074 small
/// writes that every input with bit 2 would otherwise rebuild.
static FRESH: [OnceLock<Pages>; 4] = [
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
];

fn write_pages(pages: &mut Pages, under: Option<&Pages>, at: u64, bytes: &[u8]) {
    let mut done = 0usize;
    while done < bytes.len() {
        let pos = at + done as u64;
        let page = pos / PAGE;
        let within = (pos % PAGE) as usize;
        let n = (PAGE as usize - within).min(bytes.len() - done);
        let dst = pages.entry(page).or_insert_with(|| {
            under
                .and_then(|u| u.get(&page))
                .cloned()
                .unwrap_or_else(|| Box::new([0; PAGE as usize]))
        });
        dst[within..within + n].copy_from_slice(&bytes[done..done + n]);
        done += n;
    }
}

/// A sparse pool image: the input's records over (when asked for) a fresh
/// pool's metadata, zero elsewhere. Later records overwrite earlier ones.
struct Image {
    size: u64,
    fresh: Option<&'static Pages>,
    records: Pages,
}

impl Image {
    fn write(&mut self, at: u64, bytes: &[u8]) {
        write_pages(&mut self.records, self.fresh, at, bytes);
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let end = offset
            .checked_add(buf.len() as u64)
            .expect("read range overflows");
        assert!(
            end <= self.size,
            "read {offset:#x}..{end:#x} outside the pool"
        );
        let mut pos = offset;
        while pos < end {
            let page = pos / PAGE;
            let within = (pos % PAGE) as usize;
            let n = (PAGE - pos % PAGE).min(end - pos) as usize;
            let dst = (pos - offset) as usize;
            let src = self
                .records
                .get(&page)
                .or_else(|| self.fresh.and_then(|f| f.get(&page)));
            match src {
                Some(p) => buf[dst..dst + n].copy_from_slice(&p[within..within + n]),
                None => buf[dst..dst + n].fill(0),
            }
            pos += n as u64;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let which = usize::from(head & 3);
    let size = SIZES[which];
    let fresh = (head & 4 != 0).then(|| {
        FRESH[which].get_or_init(|| {
            let mut pages = Pages::new();
            for w in obj_initial_image(size, "fuzz").expect("valid pool size") {
                write_pages(&mut pages, None, w.offset, &w.bytes);
            }
            pages
        })
    });
    let mut image = Image {
        size,
        fresh,
        records: Pages::new(),
    };
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
        let bytes = &rest[..take];
        rest = &rest[take..];
        // Keep records inside the pool so that the image itself is sane.
        let keep = (size - at).min(bytes.len() as u64) as usize;
        image.write(at, &bytes[..keep]);
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
