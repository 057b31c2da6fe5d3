//! Synthetic heaps written the way libpmemobj writes them, two zones wide
//! (a sparse 16 GiB pool), and what the walker does with them and with
//! every kind of damage.

use std::convert::Infallible;

use poolsync_header::heap::*;
use poolsync_header::{
    obj_initial_image, Error, ObjDescriptor, HEAP_CHUNKSIZE, HEAP_HDR_SIZE, OBJ_DESC_OFF,
    OBJ_DESC_PERSISTENT_LEN, ZONE_METADATA_SIZE,
};
use proptest::prelude::*;

use super::{check_map_invariants, Sparse};

/// A run being built: where its units are.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    zone: u64,
    chunk: u32,
    kind: AllocHeaderKind,
    block: u64,
    bitmap: RunBitmap,
    /// Logical offset of unit 0.
    data: u64,
}

/// A pool image plus the objects written into it.
#[derive(Clone, Debug)]
pub struct Synth {
    pub img: Sparse,
    pub heap_offset: u64,
    /// (user offset, usable size) of every object, in build order.
    pub objects: Vec<(u64, u64)>,
}

impl Synth {
    pub fn new(pool_size: u64) -> Synth {
        let mut img = Sparse::new(pool_size);
        for w in obj_initial_image(pool_size, "synthetic").unwrap() {
            img.write(w.offset, &w.bytes);
        }
        let heap_offset = img.descriptor().heap_offset;
        Synth {
            img,
            heap_offset,
            objects: Vec::new(),
        }
    }

    pub fn zone_start(&self, zone: u64) -> u64 {
        zone_offset(self.heap_offset, zone).unwrap()
    }

    pub fn header_at(&self, zone: u64, chunk: u32) -> u64 {
        self.zone_start(zone) + 64 + 8 * u64::from(chunk)
    }

    pub fn chunk_at(&self, zone: u64, chunk: u32) -> u64 {
        self.zone_start(zone) + ZONE_METADATA_SIZE + HEAP_CHUNKSIZE * u64::from(chunk)
    }

    pub fn zone(&mut self, zone: u64, size_idx: u32) {
        let h = ZoneHeader {
            magic: ZONE_MAGIC,
            size_idx,
            reserved: [0; 56],
        };
        self.img.write(self.zone_start(zone), &h.encode());
    }

    pub fn chunk(&mut self, zone: u64, chunk: u32, kind: u16, flags: u16, size_idx: u32) {
        let h = ChunkHeader {
            kind,
            flags,
            size_idx,
        };
        self.img.write(self.header_at(zone, chunk), &h.encode());
    }

    /// A free block, with the footer libpmemobj keeps only in memory.
    pub fn free(&mut self, zone: u64, chunk: u32, n: u32) {
        self.chunk(zone, chunk, CHUNK_TYPE_FREE, 0, n);
        if n > 1 {
            self.chunk(zone, chunk + n - 1, CHUNK_TYPE_FOOTER, 0, n);
        }
    }

    /// A used block holding one object.
    pub fn used(&mut self, zone: u64, chunk: u32, n: u32, flags: u16) -> (u64, u64) {
        self.chunk(zone, chunk, CHUNK_TYPE_USED, flags, n);
        let kind = AllocHeaderKind::from_flags(flags);
        let start = self.chunk_at(zone, chunk);
        let len = u64::from(n) * HEAP_CHUNKSIZE;
        self.img.write(start, &kind.encode(len, 0, 9));
        self.img.write(start + kind.size(), b"user data");
        let obj = (start + kind.size(), len - kind.size());
        self.objects.push(obj);
        obj
    }

    /// A run initialised as libpmemobj does: RUN_DATA headers, run header,
    /// bitmap all ones, the values holding units cleared, the bits past the
    /// last unit set.
    pub fn run(
        &mut self,
        zone: u64,
        chunk: u32,
        n: u32,
        flags: u16,
        block: u64,
        alignment: u64,
    ) -> Run {
        self.chunk(zone, chunk, CHUNK_TYPE_RUN, flags, n);
        for j in 1..n {
            self.chunk(zone, chunk + j, CHUNK_TYPE_RUN_DATA, 0, j);
        }
        let start = self.chunk_at(zone, chunk);
        let rh = RunHeader {
            block_size: block,
            alignment,
        };
        self.img.write(start, &rh.encode());
        let bitmap = RunBitmap::compute(n, flags, block, alignment).unwrap();
        let mut bits = vec![0xFFu8; bitmap.size as usize];
        bits[..(bitmap.nvalues as usize - 1) * 8].fill(0);
        let last = u64::MAX << (bitmap.nbits % 64);
        let at = (bitmap.nvalues as usize - 1) * 8;
        bits[at..at + 8].copy_from_slice(&last.to_le_bytes());
        self.img.write(start + 16, &bits);
        let kind = AllocHeaderKind::from_flags(flags);
        let meta_end = start + 16 + bitmap.size;
        let data = if flags & CHUNK_FLAG_ALIGNED != 0 {
            (meta_end + kind.size()).div_ceil(alignment) * alignment - kind.size()
        } else {
            meta_end
        };
        Run {
            zone,
            chunk,
            kind,
            block,
            bitmap,
            data,
        }
    }

    /// Allocates `units` units at `unit` of a run.
    pub fn alloc(&mut self, run: &Run, unit: u64, units: u64) -> (u64, u64) {
        let word_at = self.chunk_at(run.zone, run.chunk) + 16 + unit / 64 * 8;
        let mut word = u64::from_le_bytes(self.img.read_vec(word_at, 8).try_into().unwrap());
        let mask = if units == 64 {
            u64::MAX
        } else {
            ((1u64 << units) - 1) << (unit % 64)
        };
        word |= mask;
        self.img.write(word_at, &word.to_le_bytes());
        let start = run.data + unit * run.block;
        let len = units * run.block;
        self.img.write(start, &run.kind.encode(len, 0, 3));
        let obj = (start + run.kind.size(), len - run.kind.size());
        self.objects.push(obj);
        obj
    }

    pub fn desc(&self) -> ObjDescriptor {
        self.img.descriptor()
    }

    pub fn set_desc(&mut self, d: &mut ObjDescriptor) {
        self.img.write(OBJ_DESC_OFF, &d.encode());
    }
}

/// Pool size with a full zone 0 and a zone 1 of 40 chunks (page aligned).
pub const TWO_ZONES: u64 =
    0x30_2000 + 1024 + ZONE_MAX_SIZE + ZONE_METADATA_SIZE + 40 * (1 << 18) + 3072;

/// A heap using every structure: zone 0 with runs of each header kind and
/// bitmap kind (one aligned), multi-unit and word-edge objects, used and
/// free blocks; zone 1 initialised with a run and a used block; both
/// tiling their zones exactly.
pub fn rich_heap() -> (Synth, Vec<Run>) {
    let mut s = Synth::new(TWO_ZONES);
    let mut runs = Vec::new();
    s.zone(0, HEAP_CHUNKS_PER_ZONE_U32);
    // Chunk 0: flexible bitmap, compact headers, 128-byte units.
    let r = s.run(0, 0, 1, 0x9, 128, 0);
    s.alloc(&r, 0, 1);
    s.alloc(&r, 1, 3);
    s.alloc(&r, 63, 1);
    s.alloc(&r, 64, 64);
    s.alloc(&r, 2044, 1);
    runs.push(r);
    // Chunks 1-2: fixed bitmap, legacy headers.
    let r = s.run(0, 1, 2, 0x0, 256, 0);
    s.alloc(&r, 5, 2);
    s.alloc(&r, r.bitmap.nbits - 1, 1);
    runs.push(r);
    // Chunks 3-4: aligned, no headers.
    let r = s.run(0, 3, 2, 0xE, 4096, 4096);
    s.alloc(&r, 0, 1);
    s.alloc(&r, 1, 1);
    s.alloc(&r, 125, 1);
    runs.push(r);
    s.used(0, 5, 3, 0x1);
    s.free(0, 8, 5);
    s.used(0, 13, 1, 0x0);
    // Chunks 14-19: an empty run of 5504-byte units.
    runs.push(s.run(0, 14, 6, 0x9, 5504, 0));
    s.free(0, 20, HEAP_CHUNKS_PER_ZONE_U32 - 20);

    s.zone(1, 40);
    let r = s.run(1, 0, 1, 0x9, 1024, 0);
    s.alloc(&r, 10, 2);
    runs.push(r);
    s.free(1, 1, 2);
    s.used(1, 3, 37, 0x1);
    (s, runs)
}

const HEAP_CHUNKS_PER_ZONE_U32: u32 = 65528;

#[test]
fn rich_heap_walks_to_exactly_its_objects() {
    let (s, _) = rich_heap();
    let map = s.img.walk().unwrap();
    check_map_invariants(&map, s.img.size);
    let mut expected = s.objects.clone();
    expected.sort();
    assert_eq!(map.objects().collect::<Vec<_>>(), expected);
    let stats = map.stats();
    assert_eq!((stats.zones, stats.initialised_zones), (2, 2));
    assert_eq!(stats.runs, 5);
    assert_eq!(stats.used_chunks, 3 + 1 + 37);
    assert_eq!(stats.run_chunks, 1 + 2 + 2 + 6 + 1);
    assert_eq!(stats.free_chunks, 5 + (65528 - 20) + 2);
    assert_eq!(stats.objects, expected.len() as u64);

    // The fixed layout pieces, in order.
    let r = map.ranges();
    assert_eq!(
        (r[0].offset, r[0].len, r[0].owner),
        (
            OBJ_DESC_OFF,
            OBJ_DESC_PERSISTENT_LEN as u64,
            Owner::Descriptor
        )
    );
    assert_eq!(
        (r[1].offset, r[1].len, r[1].owner),
        (0x2000, 1024 * 3072, Owner::Lanes)
    );
    assert_eq!((r[2].offset, r[2].owner), (0x30_2000, Owner::HeapHeader));
    assert_eq!(r[3].owner, Owner::ZoneHeader { zone: 0 });
    // Chunk headers 0..=14 are read (runs in full, first headers of blocks),
    // then 20; the free block's footer and the used block's tail are not.
    let hdr = |c: u32| s.header_at(0, c);
    assert_eq!(
        (r[4].offset, r[4].len, r[4].owner),
        (hdr(0), 6 * 8, Owner::ChunkHeaders { zone: 0, first: 0 })
    );
    assert!(!map.is_live(hdr(6)) && !map.is_live(hdr(12)));
    assert_eq!(
        map.owner_of(hdr(8)),
        Some(Place::ChunkHeader { zone: 0, chunk: 8 })
    );
    assert_eq!(
        map.owner_of(hdr(19) + 7).map(|p| p.to_string()).as_deref(),
        Some("zone 0 chunk 19 header")
    );
    assert!(!map.is_live(hdr(65527)));

    // Places read as reports want them.
    let chunk0 = s.chunk_at(0, 0);
    assert_eq!(
        map.owner_of(chunk0 + 3).unwrap().to_string(),
        "zone 0 chunk 0 run header"
    );
    assert_eq!(
        map.owner_of(chunk0 + 16).unwrap().to_string(),
        "zone 0 chunk 0 run bitmap"
    );
    let (first, _) = s.objects[0];
    assert_eq!(first, chunk0 + 16 + 304 + 16);
    assert!(
        matches!(map.owner_of(first - 1), Some(Place::AllocationHeader { offset, .. }) if offset == first)
    );
    assert_eq!(
        map.owner_of(first).unwrap().to_string(),
        format!("object at offset {first:#x} of size 112 (zone 0 chunk 0)")
    );
    assert_eq!(
        map.owner_of(0x2000 + 3072 * 1023 + 5),
        Some(Place::Lane(1023))
    );
    assert_eq!(map.owner_of(0x1A20), None);
    assert_eq!(map.owner_of(0), None);
    // Free units and the padding before aligned data are not live.
    assert!(!map.is_live(first + 112 + 3 * 128 + 16));
    let aligned = s.chunk_at(0, 3);
    assert!(!map.is_live(aligned + 16 + 48));
    // Chunks start 1 KiB past a page, so aligned data starts 3 KiB in.
    assert_eq!(s.objects[7], (aligned + 3072, 4096));
    assert_eq!(
        map.owner_of(s.zone_start(1)),
        Some(Place::ZoneHeader { zone: 1 })
    );
}

#[test]
fn the_visitor_sees_the_same_ranges_and_can_stop() {
    let (s, _) = rich_heap();
    let map = s.img.walk().unwrap();
    let read = |off: u64, buf: &mut [u8]| {
        s.img.read(off, buf);
        Ok::<(), String>(())
    };
    let mut seen = Vec::new();
    let stats = walk_visit(&s.desc(), s.img.size, read, |r: &LiveRange| {
        seen.push(*r);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, map.ranges());
    assert_eq!(&stats, map.stats());

    let mut n = 0;
    let err = walk_visit(&s.desc(), s.img.size, read, |_: &LiveRange| {
        n += 1;
        if n == 6 {
            Err("enough".to_owned())
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert!(
        matches!(&err, WalkError::Visit { offset, error } if *offset == map.ranges()[5].offset && error == "enough"),
        "{err}"
    );
}

#[test]
fn read_failures_name_the_offset() {
    let (s, _) = rich_heap();
    let target = s.chunk_at(0, 3);
    let err = walk(&s.desc(), s.img.size, |off: u64, buf: &mut [u8]| {
        if off == target {
            return Err(std::io::Error::other("bad block"));
        }
        s.img.read(off, buf);
        Ok(())
    })
    .unwrap_err();
    assert!(matches!(err, WalkError::Read { offset, len: 16, .. } if offset == target));
    assert_eq!(
        err.to_string(),
        format!("reading 16 bytes at logical offset {target:#x}: bad block")
    );
}

#[test]
fn a_fresh_pool_has_only_fixed_metadata_and_unused_zone_headers() {
    let s = Synth::new(TWO_ZONES);
    let map = s.img.walk().unwrap();
    check_map_invariants(&map, s.img.size);
    let owners: Vec<Owner> = map.ranges().iter().map(|r| r.owner).collect();
    assert_eq!(
        owners,
        [
            Owner::Descriptor,
            Owner::Lanes,
            Owner::HeapHeader,
            Owner::ZoneHeader { zone: 0 },
            Owner::ZoneHeader { zone: 1 }
        ]
    );
    assert_eq!(map.stats().initialised_zones, 0);
}

/// Returns the error of walking `s` after `damage`.
fn broken(damage: impl FnOnce(&mut Synth)) -> Error {
    let (mut s, _) = rich_heap();
    damage(&mut s);
    match s.img.walk() {
        Err(WalkError::Invalid(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn corrupt_at(e: &Error) -> (u64, HeapSite, &'static str) {
    match e {
        Error::HeapCorrupt {
            offset,
            site,
            field,
            ..
        } => (*offset, *site, *field),
        other => panic!("expected HeapCorrupt, got {other:?}"),
    }
}

#[test]
fn damaged_heaps_are_refused_naming_site_field_and_offset() {
    let (s, runs) = rich_heap();
    let chunk = |c: u32| HeapSite::Chunk { zone: 0, chunk: c };

    // Zone header.
    let e = broken(|s| s.img.write(s.zone_start(1), &7u32.to_le_bytes()));
    assert_eq!(
        corrupt_at(&e),
        (s.zone_start(1), HeapSite::Zone { zone: 1 }, "magic")
    );
    assert_eq!(
        e.to_string(),
        format!(
            "corrupted heap metadata at offset {:#x}: zone 1 magic is 0x7, is neither 0 (unused) nor 0xc3f0a2d2",
            s.zone_start(1)
        )
    );
    let e = broken(|s| s.zone(1, 41));
    assert_eq!(
        corrupt_at(&e),
        (s.zone_start(1) + 4, HeapSite::Zone { zone: 1 }, "size_idx")
    );
    let e = broken(|s| s.zone(0, 0));
    assert_eq!(corrupt_at(&e).2, "size_idx");
    // The chunk headers no longer tile the zone.
    let e = broken(|s| s.zone(1, 39));
    assert_eq!(
        corrupt_at(&e),
        (
            s.header_at(1, 3) + 4,
            HeapSite::Chunk { zone: 1, chunk: 3 },
            "size_idx"
        )
    );

    // Chunk headers.
    let e = broken(|s| s.chunk(0, 5, 0, 1, 3));
    assert_eq!(corrupt_at(&e), (s.header_at(0, 5), chunk(5), "type"));
    let e = broken(|s| s.chunk(0, 8, CHUNK_TYPE_FOOTER, 0, 5));
    assert_eq!(corrupt_at(&e), (s.header_at(0, 8), chunk(8), "type"));
    let e = broken(|s| s.chunk(0, 13, CHUNK_TYPE_RUN_DATA, 0, 1));
    assert_eq!(corrupt_at(&e).1, chunk(13));
    let e = broken(|s| s.chunk(0, 8, 6, 0, 5));
    assert_eq!(corrupt_at(&e).2, "type");
    let e = broken(|s| s.chunk(0, 5, CHUNK_TYPE_USED, 0x11, 3));
    assert_eq!(corrupt_at(&e), (s.header_at(0, 5) + 2, chunk(5), "flags"));
    let e = broken(|s| s.chunk(0, 8, CHUNK_TYPE_FREE, 0, 0));
    assert_eq!(
        corrupt_at(&e),
        (s.header_at(0, 8) + 4, chunk(8), "size_idx")
    );
    let e = broken(|s| s.chunk(0, 20, CHUNK_TYPE_FREE, 0, 65528 - 19));
    assert_eq!(
        corrupt_at(&e),
        (s.header_at(0, 20) + 4, chunk(20), "size_idx")
    );
    let e = broken(|s| s.chunk(0, 2, CHUNK_TYPE_RUN_DATA, 0, 2));
    assert_eq!(
        corrupt_at(&e),
        (s.header_at(0, 2), chunk(2), "type and size_idx")
    );
    let e = broken(|s| s.chunk(0, 15, CHUNK_TYPE_FREE, 0, 1));
    assert_eq!(corrupt_at(&e).1, chunk(15));

    // Run headers.
    let e = broken(|s| s.img.write(s.chunk_at(0, 0), &0u64.to_le_bytes()));
    assert_eq!(corrupt_at(&e), (s.chunk_at(0, 0), chunk(0), "block_size"));
    let e = broken(|s| s.img.write(s.chunk_at(0, 0), &(1u64 << 40).to_le_bytes()));
    assert_eq!(corrupt_at(&e).2, "block_size");
    let e = broken(|s| s.img.write(s.chunk_at(0, 3) + 8, &0u64.to_le_bytes()));
    assert_eq!(
        corrupt_at(&e),
        (s.chunk_at(0, 3) + 8, chunk(3), "alignment")
    );
    let e = broken(|s| s.img.write(s.chunk_at(0, 3) + 8, &3000u64.to_le_bytes()));
    assert_eq!(
        corrupt_at(&e),
        (s.chunk_at(0, 3) + 8, chunk(3), "alignment")
    );

    // Allocation headers in runs.
    let run0 = runs[0];
    let unit = |r: &Run, u: u64| r.data + u * r.block;
    let e = broken(|s| s.img.write(unit(&run0, 1), &0u64.to_le_bytes()));
    assert_eq!(
        corrupt_at(&e),
        (
            unit(&run0, 1),
            HeapSite::Unit {
                zone: 0,
                chunk: 0,
                unit: 1
            },
            "allocation header size"
        )
    );
    // Spanning past the bitmap word.
    let e = broken(|s| s.img.write(unit(&run0, 63), &(2 * 128u64).to_le_bytes()));
    assert_eq!(
        corrupt_at(&e).1,
        HeapSite::Unit {
            zone: 0,
            chunk: 0,
            unit: 63
        }
    );
    // Covering units that are free.
    let e = broken(|s| s.img.write(unit(&run0, 1), &(4 * 128u64).to_le_bytes()));
    assert!(
        e.to_string().contains("not all of them are allocated"),
        "{e}"
    );
    // A set bit in a legacy run whose header is garbage.
    let legacy = runs[1];
    let e = broken(|s| s.img.write(unit(&legacy, 5) + 8, &u64::MAX.to_le_bytes()));
    assert_eq!(
        corrupt_at(&e).1,
        HeapSite::Unit {
            zone: 0,
            chunk: 1,
            unit: 5
        }
    );

    // Used blocks.
    let e = broken(|s| s.img.write(s.chunk_at(0, 5), &HEAP_CHUNKSIZE.to_le_bytes()));
    assert_eq!(
        corrupt_at(&e),
        (s.chunk_at(0, 5), chunk(5), "allocation header size")
    );

    // Descriptor and heap header.
    let e = broken(|s| {
        let mut d = s.desc();
        d.nlanes = 1 << 60;
        s.set_desc(&mut d);
    });
    assert_eq!(corrupt_at(&e), (0x1408, HeapSite::Descriptor, "nlanes"));
    let e = broken(|s| {
        let mut d = s.desc();
        d.lanes_offset = 0x1000;
        s.set_desc(&mut d);
    });
    assert_eq!(corrupt_at(&e).2, "lanes_offset");
    let e = broken(|s| {
        let mut d = s.desc();
        d.heap_offset = TWO_ZONES - 0x1000;
        s.set_desc(&mut d);
    });
    assert_eq!(
        corrupt_at(&e),
        (0x1410, HeapSite::Descriptor, "heap_offset")
    );
    let e = broken(|s| {
        let mut d = s.desc();
        d.heap_size += 1;
        s.set_desc(&mut d);
    });
    assert_eq!(corrupt_at(&e), (0x1820, HeapSite::Descriptor, "heap_size"));
    let e = broken(|s| {
        let mut d = s.desc();
        d.root_offset = 0xffff_ffff_ffff_fff0;
        s.set_desc(&mut d);
    });
    assert_eq!(
        corrupt_at(&e),
        (0x1800, HeapSite::Descriptor, "root_offset")
    );
    // A heap header with a valid checksum but a chunk size that would put
    // chunks outside the pool.
    let e = broken(|s| {
        let mut raw = [0u8; poolsync_header::HEAP_HDR_SIZE];
        s.img.read(s.heap_offset, &mut raw);
        let mut h = poolsync_header::HeapHeader::decode(&raw).unwrap();
        h.chunksize = 1 << 63;
        h.checksum = h.compute_checksum();
        s.img.write(s.heap_offset, &h.encode_raw());
    });
    assert_eq!(
        corrupt_at(&e),
        (s.heap_offset + 40, HeapSite::HeapHeader, "chunksize")
    );
    let e = broken(|s| s.img.write(0x1410, &[0x30]));
    assert!(matches!(e, Error::DescriptorChecksum { .. }), "{e}");
    let e = broken(|s| s.img.write(s.heap_offset + 100, &[1]));
    assert!(matches!(e, Error::HeapChecksum { .. }), "{e}");
    let e = broken(|s| s.img.write(s.heap_offset, b"X"));
    assert!(matches!(e, Error::HeapSignature { .. }), "{e}");
}

#[test]
fn a_pool_smaller_than_its_descriptor_claims_is_refused_without_reading_past_it() {
    let (s, _) = rich_heap();
    // The same bytes seen as a shorter replica: the heap no longer fits.
    let mut short = s.img.clone();
    short.size = TWO_ZONES - HEAP_CHUNKSIZE;
    let e = match short.walk() {
        Err(WalkError::Invalid(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(corrupt_at(&e).2, "heap_size");
    // With heap_size 0 (not yet recorded) the mapping decides: zone 1 now
    // holds fewer chunks than its header claims.
    let mut d = s.desc();
    d.heap_size = 0;
    short.write(OBJ_DESC_OFF, &d.encode());
    let e = match short.walk() {
        Err(WalkError::Invalid(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        corrupt_at(&e),
        (s.zone_start(1) + 4, HeapSite::Zone { zone: 1 }, "size_idx")
    );
}

#[test]
fn units_ending_on_a_value_boundary_follow_libpmemobjs_initialisation() {
    // 2047-byte units in one chunk: exactly 128 units, so libpmemobj marks
    // the whole last bitmap value allocated when it creates the run.
    let mut s = Synth::new(8 << 20);
    let chunks = ((8u64 << 20) - 0x30_2000 - 1024 - ZONE_METADATA_SIZE) / HEAP_CHUNKSIZE;
    s.zone(0, chunks as u32);
    let r = s.run(0, 0, 1, 0x9, 2047, 0);
    assert_eq!(r.bitmap.nbits, 128);
    let obj = s.alloc(&r, 3, 1);
    s.free(0, 1, chunks as u32 - 1);
    let map = s.img.walk().unwrap();
    assert_eq!(map.objects().collect::<Vec<_>>(), [obj]);
    // A real object in that last value is still found.
    let last = s.alloc(&r, 100, 1);
    let map = s.img.walk().unwrap();
    assert_eq!(map.objects().collect::<Vec<_>>(), [obj, last]);
}

/// Offsets of the metadata of [`rich_heap`] worth mutating: zone headers,
/// chunk headers, run headers and bitmaps, allocation headers.
fn mutation_targets(s: &Synth, runs: &[Run]) -> Vec<(u64, u64)> {
    let mut t = vec![
        (0x1400, 0x30),
        (0x1800, 0x30),
        (s.heap_offset, HEAP_HDR_SIZE as u64),
        (s.zone_start(0), 64 + 8 * 24),
        (s.header_at(0, 65520), 64),
        (s.zone_start(1), 64 + 8 * 40),
        (s.chunk_at(0, 5), 64),
        (s.chunk_at(0, 13), 64),
        (s.chunk_at(1, 3), 64),
    ];
    for r in runs {
        let start = s.chunk_at(r.zone, r.chunk);
        t.push((start, 16 + r.bitmap.size));
        t.push((r.data, 4 * r.block.min(4096)));
    }
    for &(off, _) in &s.objects {
        t.push((off.saturating_sub(64), 80));
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random damage to a valid heap never makes the walker panic or read
    /// outside the pool (the image panics on such reads); it either walks,
    /// with all invariants kept, or refuses.
    #[test]
    fn mutated_heaps_walk_or_are_refused(
        picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..12),
        fix_checksum in any::<bool>(),
    ) {
        let (mut s, runs) = rich_heap();
        let targets = mutation_targets(&s, &runs);
        for (which, at, byte, mode) in picks {
            let (start, len) = targets[which.index(targets.len())];
            let off = start + at.index(len as usize) as u64;
            let value = match mode {
                0 => byte,
                1 => s.img.read_vec(off, 1)[0] ^ (1 << (byte % 8)),
                2 => 0,
                _ => 0xFF,
            };
            s.img.write(off, &[value]);
        }
        if fix_checksum {
            let mut d = s.desc();
            s.set_desc(&mut d);
        }
        match s.img.walk() {
            Ok(map) => check_map_invariants(&map, s.img.size),
            Err(WalkError::Invalid(e)) => prop_assert!(!e.to_string().is_empty()),
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }

    #[test]
    fn heap_codecs_round_trip(
        magic in any::<u32>(),
        size_idx in any::<u32>(),
        reserved in proptest::array::uniform::<_, 56>(any::<u8>()),
        (kind, flags) in any::<(u16, u16)>(),
        (block_size, alignment) in any::<(u64, u64)>(),
        size in 0u64..(1 << 48),
        hflags in any::<u16>(),
        type_num in any::<u64>(),
    ) {
        let z = ZoneHeader { magic, size_idx, reserved };
        prop_assert_eq!(ZoneHeader::decode(&z.encode()).unwrap(), z);
        let c = ChunkHeader { kind, flags, size_idx };
        prop_assert_eq!(ChunkHeader::decode(&c.encode()).unwrap(), c);
        let r = RunHeader { block_size, alignment };
        prop_assert_eq!(RunHeader::decode(&r.encode()).unwrap(), r);
        for k in [AllocHeaderKind::Compact, AllocHeaderKind::Legacy] {
            prop_assert_eq!(k.decode_size(&k.encode(size, hflags, type_num)), Some(size));
        }
        prop_assert_eq!(AllocHeaderKind::None.encode(size, hflags, type_num).len(), 0);
    }

    /// The bitmap always fits its run and holds its units.
    #[test]
    fn run_bitmaps_fit_their_runs(
        size_idx in 1u32..70,
        flags in 0u16..16,
        block in 1u64..400_000,
        alignment in prop_oneof![Just(0u64), 1u64..4096],
    ) {
        if let Some(b) = RunBitmap::compute(size_idx, flags, block, alignment) {
            let run = u64::from(size_idx) * HEAP_CHUNKSIZE;
            prop_assert!(16 + b.size <= run);
            prop_assert!(b.nvalues * 8 <= b.size);
            prop_assert!(b.nbits <= b.nvalues * 64 && b.nbits > (b.nvalues - 1) * 64);
            prop_assert!(16 + b.size + b.nbits * block <= run);
        }
    }
}

/// Reads and visits never need more than the walk: an infallible walk of a
/// big, fully used run stays within the pool and finds every unit.
#[test]
fn a_full_run_of_the_smallest_units_is_walked() {
    let mut s = Synth::new(8 << 20);
    let chunks = ((8u64 << 20) - 0x30_2000 - 1024 - ZONE_METADATA_SIZE) / HEAP_CHUNKSIZE;
    s.zone(0, chunks as u32);
    let r = s.run(0, 0, 4, 0xA, 16, 0);
    for u in 0..r.bitmap.nbits {
        s.alloc(&r, u, 1);
    }
    s.free(0, 4, chunks as u32 - 4);
    let map = walk(&s.desc(), s.img.size, |off: u64, buf: &mut [u8]| {
        s.img.read(off, buf);
        Ok::<(), Infallible>(())
    })
    .unwrap();
    assert_eq!(map.stats().objects, r.bitmap.nbits);
    check_map_invariants(&map, s.img.size);
}
